//! Reading and checking a resource sent by a client.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, web};
use futures_util::StreamExt;
use serde_json::{Map, Value};

use super::outcome::{FhirError, IssueType};
use crate::conformance::R4Structure;
use crate::store::{Rendered, VersionStamp};

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

/// A resource that passed the structural checks, as the client's JSON object.
pub struct IncomingResource {
    pub object: Map<String, Value>,
}

/// Parse and check a resource body for `resource_type`. 400 for unreadable content,
/// 422 for content that reads but breaks R4 rules.
pub fn parse_resource(bytes: &[u8], resource_type: &str) -> Result<IncomingResource, FhirError> {
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
    let value = Value::Object(object);
    let issues = R4Structure::global().validate_resource(&value);
    if !issues.is_empty() {
        return Err(FhirError::from_structure(issues));
    }
    // Second opinion from fhirbolt's strict typed model; it catches what a table cannot
    // (e.g. two `value[x]` variants at once).
    if let Err(e) = hearth_model::check_strict(text) {
        return Err(FhirError::new(
            StatusCode::BAD_REQUEST,
            IssueType::Structure,
            format!("not a valid R4 {resource_type}: {e}"),
        ));
    }
    let Value::Object(object) = value else {
        return Err(FhirError::internal());
    };
    Ok(IncomingResource { object })
}

impl IncomingResource {
    /// The JSON to store: `resourceType`, `id`, `meta` first (with the server's versionId
    /// and lastUpdated, keeping the client's profiles, tags and labels), then the rest as sent;
    /// and its search index rows. `local_base` is the tenant's FHIR base with a trailing `/`.
    pub fn render(mut self, id: &str, stamp: &VersionStamp, local_base: &str) -> Rendered {
        let resource_type = self
            .object
            .shift_remove("resourceType")
            .unwrap_or(Value::Null);
        let type_name = resource_type.as_str().unwrap_or_default().to_owned();
        self.object.shift_remove("id");
        let mut meta = match self.object.shift_remove("meta") {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        meta.shift_remove("versionId");
        meta.shift_remove("lastUpdated");
        let mut stamped = Map::new();
        stamped.insert("versionId".into(), stamp.version_id.to_string().into());
        stamped.insert(
            "lastUpdated".into(),
            stamp
                .last_updated
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                .into(),
        );
        stamped.extend(meta);
        let mut out = Map::with_capacity(self.object.len() + 3);
        out.insert("resourceType".into(), resource_type);
        out.insert("id".into(), id.into());
        out.insert("meta".into(), Value::Object(stamped));
        out.extend(self.object);
        let resource = Value::Object(out);
        let index = crate::search::extract(&type_name, &resource, local_base);
        Rendered {
            content: resource.to_string(),
            index,
        }
    }

    pub fn id(&self) -> Option<&Value> {
        self.object.get("id")
    }
}

/// Is `id` a valid FHIR id (`[A-Za-z0-9\-\.]{1,64}`)?
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}
