//! `GET /fhir/{tenant}/AuditEvent` (search, also `POST .../_search`) and
//! `GET /fhir/{tenant}/AuditEvent/{id}` (read), served from the audit log (`crate::audit`);
//! writes are 405. Reading the audit log needs a scope that names AuditEvent
//! (`system/AuditEvent.rs`; a wildcard such as `system/*.rs` given for clinical data does
//! not include who-saw-what) and the access decision's approval; every access — refused or
//! not — is itself audited, before the response leaves.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use super::authn::Authenticated;
use super::body::read_limited;
use super::negotiate::{self, FHIR_JSON};
use super::outcome::{FhirError, IssueType};
use crate::audit::{self, AuditAction, AuditAgent, AuditOutcome, AuditQuery, AuditRecord};
use crate::auth::Interaction;
use crate::state::AppState;
use crate::tenant::TenantId;

const AUDIT_EVENT: &str = "AuditEvent";

fn tenant_of(req: &HttpRequest) -> Result<TenantId, FhirError> {
    req.match_info()
        .get("tenant")
        .and_then(|t| TenantId::parse(t).ok())
        .ok_or_else(|| FhirError::not_found("unknown tenant"))
}

/// A record of this request: where it came from and its id. Exposed for handlers that
/// record their own events.
pub fn request_record(req: &HttpRequest, event: &'static str, action: AuditAction) -> AuditRecord {
    let mut rec = AuditRecord::new(event, action, AuditOutcome::Success);
    rec.source_ip = req.peer_addr().map(|a| a.ip().to_string());
    rec.user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(256).collect());
    rec.request_id = req
        .extensions()
        .get::<crate::ops::RequestId>()
        .map(|r| r.0.clone());
    rec
}

/// Record `rec` with the outcome of `result`, then answer. A success is only answered if
/// its record is written; a refusal is answered even if its record cannot be (e.g. the
/// tenant does not exist).
async fn finish(
    state: &AppState,
    tenant: &TenantId,
    mut rec: AuditRecord,
    result: Result<HttpResponse, FhirError>,
) -> Result<HttpResponse, FhirError> {
    if let Err(e) = &result {
        let diagnostics = e
            .issues
            .first()
            .map(|i| i.diagnostics.clone())
            .unwrap_or_default();
        rec.outcome = if e.status.is_server_error() {
            AuditOutcome::SeriousFailure
        } else {
            AuditOutcome::MinorFailure
        };
        if e.status == StatusCode::UNAUTHORIZED {
            rec.event = "auth-failure";
            rec.action = AuditAction::Execute;
        } else if e.status == StatusCode::FORBIDDEN {
            rec.event = "access-denied";
            rec.high_severity = true;
            rec.reasons.push(diagnostics.clone());
        }
        rec.outcome_text = Some(format!("HTTP {}: {diagnostics}", e.status.as_u16()));
    }
    match audit::record_now(&state.store, tenant, &rec).await {
        Ok(()) => result,
        Err(e) if result.is_err() => {
            tracing::warn!(error = %e, "audit write of a refused AuditEvent request failed");
            result
        }
        Err(e) => {
            tracing::error!(error = %e, "audit write failed; the response is withheld");
            Err(FhirError::from(e))
        }
    }
}

/// 403 unless a scope names AuditEvent for `interaction` and the access decision allows it
/// on every AuditEvent.
fn require_audit_scope(auth: &Authenticated, interaction: Interaction) -> Result<(), FhirError> {
    let named = auth
        .principal
        .scopes
        .granting(AUDIT_EVENT, interaction)
        .any(|s| s.resource_type.as_deref() == Some(AUDIT_EVENT));
    if !named {
        return Err(FhirError::forbidden(
            "the audit log needs a scope naming AuditEvent (e.g. system/AuditEvent.rs); wildcard scopes do not include it",
        ));
    }
    auth.require(AUDIT_EVENT, interaction)
}

/// `GET /AuditEvent?...`
pub async fn search_get(
    req: HttpRequest,
    auth: Result<Authenticated, FhirError>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    negotiate::require_json_response(&req)?;
    let params = negotiate::query_params(&req)?;
    let raw = req.query_string().to_owned();
    search(req, params, raw, auth, state).await
}

/// `POST /AuditEvent/_search` with a form body.
pub async fn search_post(
    req: HttpRequest,
    payload: web::Payload,
    auth: Result<Authenticated, FhirError>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    negotiate::require_json_response(&req)?;
    let form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form {
        return Err(FhirError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IssueType::NotSupported,
            "POST _search takes application/x-www-form-urlencoded",
        ));
    }
    let body = read_limited(&req, payload, state.config.server.max_body_bytes).await?;
    let mut params = negotiate::query_params(&req)?;
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body)
        .map_err(|_| FhirError::bad_request("the form body is not valid form-urlencoded text"))?;
    params.extend(form);
    let mut raw = req.query_string().to_owned();
    let body_text = String::from_utf8_lossy(&body);
    if !body_text.is_empty() {
        if !raw.is_empty() {
            raw.push('&');
        }
        raw.push_str(&body_text);
    }
    search(req, params, raw, auth, state).await
}

async fn search(
    req: HttpRequest,
    params: Vec<(String, String)>,
    raw_query: String,
    auth: Result<Authenticated, FhirError>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    let tenant = tenant_of(&req)?;
    let mut rec = request_record(&req, "search-type", AuditAction::Execute);
    rec.query = Some(raw_query).filter(|q| !q.is_empty());
    let auth = match auth {
        Ok(auth) => auth,
        Err(e) => return finish(&state, &tenant, rec, Err(e)).await,
    };
    rec.agent = Some(AuditAgent::from_principal(&auth.principal));
    rec.purpose = Some(auth.purpose.clone());
    let result = search_inner(&params, &auth, &state, &mut rec).await;
    finish(&state, &tenant, rec, result).await
}

async fn search_inner(
    params: &[(String, String)],
    auth: &Authenticated,
    state: &AppState,
    rec: &mut AuditRecord,
) -> Result<HttpResponse, FhirError> {
    require_audit_scope(auth, Interaction::Search)?;
    let tenant = auth.tenant();
    let base = state.fhir_base(tenant);
    let query = AuditQuery::parse(params, &format!("{base}/")).map_err(FhirError::bad_request)?;
    rec.patients = query.named_patients();
    let page = audit::search(&state.store, tenant, &query).await?;
    rec.entities = page
        .events
        .iter()
        .map(|e| format!("{AUDIT_EVENT}/{}", e.id))
        .collect();

    let used = serde_urlencoded::to_string(&query.used).unwrap_or_default();
    let link = |relation: &str, page_token: Option<&str>| {
        let mut url = format!("{base}/{AUDIT_EVENT}?{used}");
        if let Some(token) = page_token {
            if !used.is_empty() {
                url.push('&');
            }
            url.push_str("_page=");
            url.push_str(token);
        }
        json!({ "relation": relation, "url": url })
    };
    let this_page = params
        .iter()
        .rev()
        .find(|(name, _)| name == "_page")
        .map(|(_, v)| v.as_str());
    let mut links = vec![link("self", this_page)];
    if let Some(next) = &page.next {
        links.push(link("next", Some(next)));
    }
    let entries: Vec<Value> = page
        .events
        .iter()
        .map(|e| {
            json!({
                "fullUrl": format!("{base}/{AUDIT_EVENT}/{}", e.id),
                "resource": audit::fhir::render(e, &base),
                "search": { "mode": "match" },
            })
        })
        .collect();
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": entries,
    });
    Ok(HttpResponse::Ok()
        .content_type(FHIR_JSON)
        .body(bundle.to_string()))
}

/// `GET /AuditEvent/{id}`
pub async fn read(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    auth: Result<Authenticated, FhirError>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    negotiate::require_json_response(&req)?;
    let tenant = tenant_of(&req)?;
    let (_, id) = path.into_inner();
    let mut rec = request_record(&req, "read", AuditAction::Read);
    if super::body::is_valid_id(&id) {
        rec.entities = vec![format!("{AUDIT_EVENT}/{id}")];
    }
    let auth = match auth {
        Ok(auth) => auth,
        Err(e) => return finish(&state, &tenant, rec, Err(e)).await,
    };
    rec.agent = Some(AuditAgent::from_principal(&auth.principal));
    rec.purpose = Some(auth.purpose.clone());
    let result = read_inner(&id, &auth, &state).await;
    finish(&state, &tenant, rec, result).await
}

async fn read_inner(
    id: &str,
    auth: &Authenticated,
    state: &AppState,
) -> Result<HttpResponse, FhirError> {
    require_audit_scope(auth, Interaction::Read)?;
    let not_found = || FhirError::not_found(format!("no {AUDIT_EVENT} with this id"));
    let uuid = uuid::Uuid::parse_str(id).map_err(|_| not_found())?;
    let tenant = auth.tenant();
    let event = audit::get(&state.store, tenant, uuid)
        .await?
        .ok_or_else(not_found)?;
    let body = audit::fhir::render(&event, &state.fhir_base(tenant));
    Ok(HttpResponse::Ok()
        .content_type(FHIR_JSON)
        .insert_header((header::ETAG, negotiate::etag(1)))
        .body(body.to_string()))
}
