//! Reading and checking a resource sent by a client.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, web};
use futures_util::StreamExt;
use serde_json::Value;

use super::outcome::{FhirError, IssueType};
use crate::resource::{CheckedResource, ValidationPolicy};

/// Read the request body, refusing more than `limit` bytes with 413.
pub async fn read_limited(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, FhirError> {
    let too_large = || {
        FhirError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            IssueType::TooLong,
            format!("the request body exceeds the limit of {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|_| FhirError::bad_request("the request body could not be read"))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Parse and check a resource body for `resource_type`. 400 for unreadable content,
/// 422 for content that reads but breaks R4 rules.
pub fn parse_resource(
    bytes: &[u8],
    resource_type: &str,
    policy: ValidationPolicy,
) -> Result<CheckedResource, FhirError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| FhirError::bad_request("the request body is not UTF-8"))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // serde_json's message names a line and column, never the content.
    let value: Value = serde_json::from_str(text).map_err(|e| {
        FhirError::new(
            StatusCode::BAD_REQUEST,
            IssueType::Structure,
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    check_value(value, resource_type, policy)
}

/// [`parse_resource`] for a resource already parsed (a Bundle entry, a patched resource):
/// the same checks without serialising and re-reading it.
pub fn check_value(
    value: Value,
    resource_type: &str,
    policy: ValidationPolicy,
) -> Result<CheckedResource, FhirError> {
    let Value::Object(object) = value else {
        return Err(FhirError::new(
            StatusCode::BAD_REQUEST,
            IssueType::Structure,
            "the body must be a JSON object",
        ));
    };
    match object.get("resourceType").and_then(Value::as_str) {
        Some(t) if t == resource_type => {}
        Some(_) => {
            return Err(FhirError::bad_request(format!(
                "resourceType does not match the URL, which names {resource_type}"
            ))
            .at(format!("{resource_type}.resourceType")));
        }
        None => {
            return Err(FhirError::bad_request("resourceType is missing").at("resourceType"));
        }
    }
    crate::resource::check_with(Value::Object(object), policy)
        .map_err(|e| FhirError::from_invalid(e, resource_type))
}

/// Is `id` a valid FHIR id (`[A-Za-z0-9\-\.]{1,64}`)?
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}
