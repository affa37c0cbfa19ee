//! Instance and type interactions: create, read, vread, update, delete.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::Value;

use super::authn::Authenticated;
use super::body::{self, is_valid_id};
use super::conditional;
use super::negotiate::{self, FHIR_JSON, ReturnPreference};
use super::outcome::{FhirError, Issue, IssueType, Severity, operation_outcome};
use crate::access::{self, Visibility};
use crate::auth::Interaction;
use crate::conformance::R4Structure;
use crate::state::AppState;
use crate::store::StoredVersion;
use crate::tenant::TenantId;

/// The resource type in the URL, if R4 knows it.
pub fn known_type(resource_type: &str) -> Result<(), FhirError> {
    if R4Structure::global().is_resource_type(resource_type) {
        Ok(())
    } else {
        Err(FhirError::not_found("unknown resource type"))
    }
}

fn valid_id(id: &str) -> Result<(), FhirError> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(FhirError::bad_request(
            "the id in the URL is not a valid FHIR id",
        ))
    }
}

/// Common request checks, in the order clients expect their errors (406, 404 for an
/// unknown type, 403), and what of the type the caller may see or change.
pub(super) fn preflight_visible(
    req: &HttpRequest,
    auth: &Authenticated,
    resource_type: &str,
    interaction: Interaction,
) -> Result<Visibility, FhirError> {
    negotiate::require_json_response(req)?;
    known_type(resource_type)?;
    auth.visibility(resource_type, interaction)
}

pub(super) fn version_headers(builder: &mut actix_web::HttpResponseBuilder, v: &StoredVersion) {
    builder.insert_header((header::ETAG, negotiate::etag(v.version_id)));
    builder.insert_header((
        header::LAST_MODIFIED,
        v.last_updated
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string(),
    ));
}

/// Answer a write according to `Prefer: return=...`.
pub(super) fn write_response(
    req: &HttpRequest,
    status: StatusCode,
    stored: &StoredVersion,
    location: Option<String>,
) -> HttpResponse {
    write_response_with(req, status, stored, location, &[])
}

/// [`write_response`], reporting the profile issues a `warn` tenant accepted the write with
/// (as warnings) when the client asks for an OperationOutcome.
pub(super) fn write_response_with(
    req: &HttpRequest,
    status: StatusCode,
    stored: &StoredVersion,
    location: Option<String>,
    accepted_issues: &[crate::conformance::ProfileIssue],
) -> HttpResponse {
    let mut builder = HttpResponse::build(status);
    version_headers(&mut builder, stored);
    if let Some(location) = location {
        builder.insert_header((header::LOCATION, location));
    }
    match negotiate::return_preference(req) {
        ReturnPreference::Minimal => builder.finish(),
        ReturnPreference::OperationOutcome => {
            let mut issues = vec![Issue {
                severity: Severity::Information,
                code: IssueType::Informational,
                diagnostics: format!(
                    "{} {}/{} version {}",
                    status, stored.resource_type, stored.id, stored.version_id
                ),
                expression: Vec::new(),
            }];
            issues.extend(accepted_issues.iter().map(|p| Issue {
                severity: Severity::Warning,
                ..Issue::from_profile(p)
            }));
            let outcome = operation_outcome(&issues);
            builder.content_type(FHIR_JSON).body(outcome.to_string())
        }
        ReturnPreference::Representation => builder
            .content_type(FHIR_JSON)
            .body(stored.content.clone().unwrap_or_default()),
    }
}

fn tenant_of(auth: &Authenticated) -> &TenantId {
    &auth.principal.tenant
}

pub async fn create(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    let (_, resource_type) = path.into_inner();
    // A filtered decision is applied to the new resource inside the transaction.
    preflight_visible(&req, &auth, &resource_type, Interaction::Create)?;
    negotiate::require_json_body(&req)?;
    let if_none_exist = conditional_create_criteria(&req, &auth, &resource_type)?;
    let bytes = body::read_limited(&req, payload, state.config.server.max_body_bytes).await?;
    let policy = state.validation_policy(tenant_of(&auth)).await?;
    let incoming = body::parse_resource(&bytes, &resource_type, policy)?;
    let accepted_issues = incoming.warnings().to_vec();
    // The server assigns the id; one sent by the client is ignored (FHIR R4 create).
    let id = uuid::Uuid::new_v4().to_string();
    let tenant = tenant_of(&auth);
    let local_base = format!("{}/", state.fhir_base(tenant));
    let stored = match if_none_exist {
        None => {
            state
                .store
                .create(tenant, &resource_type, &id, |stamp| {
                    incoming.render(&id, stamp, &local_base)
                })
                .await?
        }
        Some((criteria, visibility)) => {
            let render = |stamp: &_| incoming.render(&id, stamp, &local_base);
            let access = match visibility {
                Visibility::All => None,
                Visibility::Filtered(f) => Some(f),
            };
            match conditional::create(
                &state,
                tenant,
                &resource_type,
                &criteria,
                &id,
                access,
                render,
            )
            .await?
            {
                Ok(created) => created,
                // A match: 200 with it, nothing written.
                Err(existing) => {
                    let location = format!(
                        "{}/{}/{}/_history/{}",
                        state.fhir_base(tenant),
                        resource_type,
                        existing.id,
                        existing.version_id
                    );
                    return Ok(write_response(
                        &req,
                        StatusCode::OK,
                        &existing,
                        Some(location),
                    ));
                }
            }
        }
    };
    let location = format!(
        "{}/{}/{}/_history/{}",
        state.fhir_base(tenant),
        resource_type,
        id,
        stored.version_id
    );
    Ok(write_response_with(
        &req,
        StatusCode::CREATED,
        &stored,
        Some(location),
        &accepted_issues,
    ))
}

pub async fn read(
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    let (_, resource_type, id) = path.into_inner();
    let visibility = preflight_visible(&req, &auth, &resource_type, Interaction::Read)?;
    valid_id(&id)?;
    // The resource and the decision on it in one statement.
    let filter = match &visibility {
        Visibility::All => None,
        Visibility::Filtered(f) => Some(f),
    };
    let (patient_params, patient_itself) = access::compartment_params(&resource_type);
    let mut tx = state.store.begin(tenant_of(&auth)).await?;
    let (stored, visible, mut patients) = tx
        .read_visible(&resource_type, &id, filter, patient_params)
        .await?;
    if !visible {
        return Err(auth.outside(&resource_type, &id));
    }
    // The read and its audit row commit together: one transaction per read. Its patients
    // come from the index rows, not from parsing the resource again.
    if patient_itself {
        patients.push(stored.id.clone());
    }
    auth.note(|n| {
        n.entities.push(format!(
            "{}/{}/_history/{}",
            stored.resource_type, stored.id, stored.version_id
        ));
        n.patients = patients;
    });
    auth.record_read_in(&mut tx, "read", crate::audit::AuditAction::Read)
        .await?;
    tx.commit().await?;
    if conditional::not_modified(&req, &stored) {
        return Ok(conditional::not_modified_response(&stored));
    }
    Ok(resource_response(&stored))
}

/// The `If-None-Exist` criteria of a create, if any. Matching is a search: the token must
/// allow searching the type as well.
fn conditional_create_criteria(
    req: &HttpRequest,
    auth: &Authenticated,
    resource_type: &str,
) -> Result<Option<(String, Visibility)>, FhirError> {
    let Some(value) = req.headers().get("if-none-exist") else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| FhirError::bad_request("If-None-Exist must be search parameters as text"))?;
    // The match is a search of what the caller may see: a resource hidden from them is
    // neither revealed nor matched.
    let visibility = auth.visibility(resource_type, Interaction::Search)?;
    Ok(Some((
        conditional::if_none_exist_criteria(resource_type, text.trim()).to_owned(),
        visibility,
    )))
}

pub async fn vread(
    req: HttpRequest,
    path: web::Path<(String, String, String, String)>,
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    let (_, resource_type, id, version) = path.into_inner();
    let visibility = preflight_visible(&req, &auth, &resource_type, Interaction::Read)?;
    valid_id(&id)?;
    let version_id = version
        .parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| FhirError::not_found("no such version"))?;
    let stored = state
        .store
        .read_version(tenant_of(&auth), &resource_type, &id, version_id)
        .await?;
    // An older version is judged by the resource's current one.
    auth.check_visible(&state.store, &visibility, &resource_type, &id)
        .await?;
    auth.note_served([&stored]);
    Ok(resource_response(&stored))
}

fn resource_response(stored: &StoredVersion) -> HttpResponse {
    let mut builder = HttpResponse::Ok();
    version_headers(&mut builder, stored);
    builder
        .content_type(FHIR_JSON)
        .body(stored.content.clone().unwrap_or_default())
}

pub async fn update(
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    payload: web::Payload,
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    let (_, resource_type, id) = path.into_inner();
    let visibility = preflight_visible(&req, &auth, &resource_type, Interaction::Update)?;
    valid_id(&id)?;
    auth.check_existing_visible(&state.store, &visibility, &resource_type, &id)
        .await?;
    negotiate::require_json_body(&req)?;
    let if_match = negotiate::if_match(&req)?;
    let bytes = body::read_limited(&req, payload, state.config.server.max_body_bytes).await?;
    let policy = state.validation_policy(tenant_of(&auth)).await?;
    let incoming = body::parse_resource(&bytes, &resource_type, policy)?;
    match incoming.id() {
        Some(Value::String(body_id)) if *body_id == id => {}
        Some(_) => {
            return Err(
                FhirError::bad_request("the id in the body does not match the URL")
                    .at(format!("{resource_type}.id")),
            );
        }
        None => {
            return Err(
                FhirError::bad_request("an update must carry the resource id in the body")
                    .at(format!("{resource_type}.id")),
            );
        }
    }
    let accepted_issues = incoming.warnings().to_vec();
    let tenant = tenant_of(&auth);
    let local_base = format!("{}/", state.fhir_base(tenant));
    let (stored, created) = state
        .store
        .update(tenant, &resource_type, &id, if_match, |stamp| {
            incoming.render(&id, stamp, &local_base)
        })
        .await?;
    let (status, location) = if created {
        let location = format!(
            "{}/{}/{}/_history/{}",
            state.fhir_base(tenant),
            resource_type,
            id,
            stored.version_id
        );
        (StatusCode::CREATED, Some(location))
    } else {
        (StatusCode::OK, None)
    };
    Ok(write_response_with(
        &req,
        status,
        &stored,
        location,
        &accepted_issues,
    ))
}

pub async fn delete(
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    let (_, resource_type, id) = path.into_inner();
    let visibility = preflight_visible(&req, &auth, &resource_type, Interaction::Delete)?;
    valid_id(&id)?;
    auth.check_existing_visible(&state.store, &visibility, &resource_type, &id)
        .await?;
    let if_match = negotiate::if_match(&req)?;
    let deleted = state
        .store
        .delete(tenant_of(&auth), &resource_type, &id, if_match)
        .await?;
    let mut builder = HttpResponse::NoContent();
    if let Some(stamp) = deleted {
        builder.insert_header((header::ETAG, negotiate::etag(stamp.version_id)));
    }
    Ok(builder.finish())
}
