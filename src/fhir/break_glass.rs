//! `POST /fhir/{tenant}/Patient/{id}/$break-glass`: a practitioner holding the policy's
//! break-glass grant asserts emergency access to one patient, with a reason. Access lasts the
//! policy's minutes, and the assertion is a high-severity audit event.

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use super::authn::Authenticated;
use super::body::read_limited;
use super::negotiate::{self, FHIR_JSON};
use super::outcome::FhirError;
use crate::state::AppState;

pub async fn break_glass(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    let (_, patient_id) = path.into_inner();
    negotiate::require_json_response(&req)?;
    auth.note(|n| {
        n.event = Some("break-glass");
        n.patients = vec![patient_id.clone()];
        n.entities = vec![format!("Patient/{patient_id}")];
    });
    auth.flag_high_severity();
    let practitioner = auth
        .principal
        .fhir_user
        .as_deref()
        .and_then(|u| u.strip_prefix("Practitioner/"))
        .ok_or_else(|| FhirError::forbidden("break-glass is for practitioners (fhirUser)"))?
        .to_owned();
    let policy = &auth.policy;
    if !auth.principal.scopes.contains(&policy.break_glass.scope) {
        return Err(FhirError::forbidden(format!(
            "break-glass needs the {} grant",
            policy.break_glass.scope
        )));
    }
    negotiate::require_json_body(&req)?;
    let body = read_limited(&req, payload, 64 * 1024).await?;
    let parameters: Value = serde_json::from_slice(&body)
        .map_err(|_| FhirError::bad_request("the body must be a Parameters resource"))?;
    let reason = parameters["parameter"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "reason"))
        .and_then(|p| p["valueString"].as_str())
        .map(str::trim)
        .filter(|r| !r.is_empty() && r.len() <= 1000)
        .ok_or_else(|| {
            FhirError::bad_request(
                "a reason (parameter reason, valueString, 1-1000 characters) is required",
            )
        })?;
    // The patient must exist (a grant for a typo would be a silent failure in an emergency).
    state
        .store
        .read(auth.tenant(), "Patient", &patient_id)
        .await?;
    let expires =
        chrono::Utc::now() + chrono::Duration::minutes(i64::from(policy.break_glass.minutes));
    state
        .store
        .grant_break_glass(auth.tenant(), &practitioner, &patient_id, reason, expires)
        .await?;
    tracing::warn!(practitioner = %practitioner, "break-glass access granted");
    let response = json!({
        "resourceType": "Parameters",
        "parameter": [
            {"name": "patient", "valueReference": {"reference": format!("Patient/{patient_id}")}},
            {"name": "expires", "valueInstant": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)},
        ],
    });
    Ok(HttpResponse::Ok()
        .content_type(FHIR_JSON)
        .body(response.to_string()))
}
