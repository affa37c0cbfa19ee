//! `$validate` at type and instance level: base R4 structure, then every profile the
//! resource declares, the `profile` parameter's, and (per the tenant's setting) the US Core
//! profile its type implies. Always 200 with an OperationOutcome listing every issue.

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::Value;

use super::authn::Authenticated;
use super::body::read_limited;
use super::negotiate::{self, FHIR_JSON};
use super::outcome::{FhirError, Issue, IssueType, Severity, operation_outcome};
use super::resource::known_type;
use crate::auth::Interaction;
use crate::conformance::{IssueClass, R4Structure};
use crate::resource::{profile_issues, profiles_to_check};
use crate::state::AppState;

/// `POST /{type}/$validate`: the resource (or a Parameters with `resource` and `profile`).
pub async fn type_level(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    let (_, resource_type) = path.into_inner();
    negotiate::require_json_response(&req)?;
    known_type(&resource_type)?;
    // Checks a resource in the body against profiles: no stored data is read.
    auth.visibility(&resource_type, Interaction::Read)?;
    negotiate::require_json_body(&req)?;
    let body = read_limited(&req, payload, state.config.server.max_body_bytes).await?;
    let (resource, mut profiles) = unwrap_parameters(&body)?;
    profiles.extend(profile_params(&req)?);
    validate(&state, &auth, &resource_type, &resource, &profiles).await
}

/// `GET|POST /{type}/{id}/$validate`: the stored resource, or the one in the body.
pub async fn instance_level(
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    payload: web::Payload,
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    let (_, resource_type, id) = path.into_inner();
    negotiate::require_json_response(&req)?;
    known_type(&resource_type)?;
    let visibility = auth.visibility(&resource_type, Interaction::Read)?;
    let body = read_limited(&req, payload, state.config.server.max_body_bytes).await?;
    let mut profiles = profile_params(&req)?;
    let resource = if body.iter().all(u8::is_ascii_whitespace) {
        let stored = state
            .store
            .read(&auth.principal.tenant, &resource_type, &id)
            .await?;
        auth.check_visible(&state.store, &visibility, &resource_type, &id)
            .await?;
        auth.note_served([&stored]);
        serde_json::from_str(stored.content.as_deref().unwrap_or("{}"))
            .map_err(|_| FhirError::internal())?
    } else {
        negotiate::require_json_body(&req)?;
        let (resource, extra) = unwrap_parameters(&body)?;
        profiles.extend(extra);
        resource
    };
    validate(&state, &auth, &resource_type, &resource, &profiles).await
}

fn profile_params(req: &HttpRequest) -> Result<Vec<String>, FhirError> {
    Ok(negotiate::query_params(req)?
        .into_iter()
        .filter(|(k, _)| k == "profile")
        .map(|(_, v)| v)
        .collect())
}

/// The resource to validate and any `profile` parameters from a Parameters body.
fn unwrap_parameters(body: &[u8]) -> Result<(Value, Vec<String>), FhirError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| FhirError::bad_request(format!("the body is not valid JSON: {e}")))?;
    if value.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Ok((value, Vec::new()));
    }
    let mut resource = None;
    let mut profiles = Vec::new();
    for p in value
        .get("parameter")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match p.get("name").and_then(Value::as_str) {
            Some("resource") => resource = p.get("resource").cloned(),
            Some("profile") => {
                if let Some(url) = p
                    .get("valueUri")
                    .or_else(|| p.get("valueCanonical"))
                    .and_then(Value::as_str)
                {
                    profiles.push(url.to_owned());
                }
            }
            _ => {}
        }
    }
    let resource = resource
        .ok_or_else(|| FhirError::bad_request("Parameters needs a 'resource' parameter"))?;
    Ok((resource, profiles))
}

async fn validate(
    state: &AppState,
    auth: &Authenticated,
    resource_type: &str,
    resource: &Value,
    extra_profiles: &[String],
) -> Result<HttpResponse, FhirError> {
    if resource.get("resourceType").and_then(Value::as_str) != Some(resource_type) {
        return Err(FhirError::bad_request(format!(
            "the resource is not a {resource_type}"
        )));
    }
    let policy = state.validation_policy(&auth.principal.tenant).await?;
    let mut issues: Vec<Issue> = R4Structure::global()
        .validate_resource(resource)
        .into_iter()
        .map(|i| Issue {
            severity: Severity::Error,
            code: match i.class {
                IssueClass::Structure => IssueType::Structure,
                IssueClass::Required => IssueType::Required,
                IssueClass::Value => IssueType::Value,
            },
            diagnostics: i.message,
            expression: vec![i.expression],
        })
        .collect();
    if issues.is_empty() {
        if let Err(e) = hearth_model::check_strict(&resource.to_string()) {
            issues.push(Issue::error(
                IssueType::Structure,
                format!("not a valid R4 {resource_type}: {e}"),
            ));
        }
        // Profiles are checked on a structurally sound resource only.
        let profiles = profiles_to_check(resource, policy.implied, extra_profiles);
        issues.extend(
            profile_issues(resource, &profiles)
                .iter()
                .map(Issue::from_profile),
        );
    }
    if issues.is_empty() {
        issues.push(Issue {
            severity: Severity::Information,
            code: IssueType::Informational,
            diagnostics: "no issues found".into(),
            expression: Vec::new(),
        });
    }
    Ok(HttpResponse::Ok()
        .content_type(FHIR_JSON)
        .body(operation_outcome(&issues).to_string()))
}
