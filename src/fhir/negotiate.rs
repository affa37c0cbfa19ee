//! Content negotiation, `Prefer`, `If-Match`: the HTTP conventions of the FHIR REST API.

use actix_web::HttpRequest;
use actix_web::http::StatusCode;
use actix_web::http::header;

use super::outcome::{FhirError, IssueType};

pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// Query parameters, decoded. Repeated names are kept in order.
pub fn query_params(req: &HttpRequest) -> Result<Vec<(String, String)>, FhirError> {
    serde_urlencoded::from_str(req.query_string())
        .map_err(|_| FhirError::bad_request("the query string is not valid form-urlencoded text"))
}

fn is_json_media_type(essence: &str) -> bool {
    matches!(
        essence,
        "application/fhir+json" | "application/json" | "application/json+fhir" | "json"
    )
}

fn essence(media_type: &str) -> String {
    media_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Check that the client accepts JSON: `_format` wins over `Accept`. Hearth speaks JSON only.
pub fn require_json_response(req: &HttpRequest) -> Result<(), FhirError> {
    let not_acceptable = || {
        FhirError::new(
            StatusCode::NOT_ACCEPTABLE,
            IssueType::NotSupported,
            "Hearth serves FHIR JSON only (application/fhir+json); XML is not supported",
        )
    };
    if let Some((_, format)) = query_params(req)?.into_iter().find(|(k, _)| k == "_format") {
        return if is_json_media_type(&essence(&format)) {
            Ok(())
        } else {
            Err(not_acceptable())
        };
    }
    let Some(accept) = req.headers().get(header::ACCEPT) else {
        return Ok(());
    };
    let accept = accept.to_str().map_err(|_| not_acceptable())?;
    let acceptable = accept
        .split(',')
        .map(essence)
        .any(|m| m.is_empty() || m == "*/*" || m == "application/*" || is_json_media_type(&m));
    if acceptable {
        Ok(())
    } else {
        Err(not_acceptable())
    }
}

/// Check the request body's Content-Type. A missing header is read as JSON.
pub fn require_json_body(req: &HttpRequest) -> Result<(), FhirError> {
    let Some(content_type) = req.headers().get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let m = essence(content_type.to_str().unwrap_or_default());
    if is_json_media_type(&m) {
        Ok(())
    } else {
        Err(FhirError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IssueType::NotSupported,
            "request bodies must be application/fhir+json",
        ))
    }
}

/// What the client wants back from a write (`Prefer: return=...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnPreference {
    Minimal,
    Representation,
    OperationOutcome,
}

pub fn return_preference(req: &HttpRequest) -> ReturnPreference {
    let prefer = req
        .headers()
        .get_all("prefer")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|p| p.trim().strip_prefix("return="))
        .map(|v| v.trim_matches('"'))
        .next_back();
    match prefer {
        Some("minimal") => ReturnPreference::Minimal,
        Some("OperationOutcome") => ReturnPreference::OperationOutcome,
        _ => ReturnPreference::Representation,
    }
}

/// `If-Match: W/"3"` (or `"3"`) as a version number.
pub fn if_match(req: &HttpRequest) -> Result<Option<i64>, FhirError> {
    let Some(value) = req.headers().get(header::IF_MATCH) else {
        return Ok(None);
    };
    let invalid = || FhirError::bad_request("If-Match must be an ETag such as W/\"3\"");
    let text = value.to_str().map_err(|_| invalid())?.trim();
    let text = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    text.parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .map(Some)
        .ok_or_else(invalid)
}

pub fn etag(version_id: i64) -> String {
    format!("W/\"{version_id}\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn accept_and_format() {
        let ok = |r: TestRequest| require_json_response(&r.to_http_request()).is_ok();
        assert!(ok(TestRequest::default()));
        assert!(ok(
            TestRequest::default().insert_header(("accept", "application/fhir+json"))
        ));
        assert!(ok(
            TestRequest::default().insert_header(("accept", "text/html, */*;q=0.8"))
        ));
        assert!(!ok(
            TestRequest::default().insert_header(("accept", "application/fhir+xml"))
        ));
        assert!(!ok(TestRequest::with_uri("/x?_format=xml")));
        assert!(ok(TestRequest::with_uri("/x?_format=json")
            .insert_header(("accept", "application/fhir+xml"))));
    }

    #[test]
    fn prefer_and_if_match() {
        let req = TestRequest::default()
            .insert_header(("prefer", "return=minimal"))
            .insert_header(("if-match", "W/\"7\""))
            .to_http_request();
        assert_eq!(return_preference(&req), ReturnPreference::Minimal);
        assert_eq!(if_match(&req).ok(), Some(Some(7)));
        let bad = TestRequest::default()
            .insert_header(("if-match", "abc"))
            .to_http_request();
        assert!(if_match(&bad).is_err());
    }
}
