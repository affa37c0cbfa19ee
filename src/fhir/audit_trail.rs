//! The audit trail of the FHIR API, and the write guard: every request under
//! `/fhir/{tenant}` that touches data leaves an audit record. A commit hook installed around
//! the handler checks every version a transaction wrote against the caller's decision and
//! records the changes, inside that transaction (they commit or roll back together); a read
//! or search records itself in its own transaction; other reads, refusals and failures are
//! recorded after the handler and before the response leaves — if that write fails, the
//! client gets a 500 instead of the data.

use std::sync::{Arc, Mutex};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest, ResponseError, web};

use super::outcome::FhirError;
use crate::access::{OwnedSubject, Visibility};
use crate::audit::{self, AuditAction, AuditAgent, AuditOutcome, AuditRecord};
use crate::auth::{Interaction, Principal, TokenIssuer};
use crate::ops::RequestId;
use crate::state::AppState;
use crate::store::{CommitHook, HookFuture, StoreError, TenantTx, WrittenVersion};
use crate::tenant::TenantId;

/// Who is calling and why, for the records of this request (set by the extractor).
#[derive(Debug, Clone, Default)]
pub struct CallerContext {
    pub agent: Option<AuditAgent>,
    pub purpose: Option<String>,
    pub reasons: Vec<String>,
    pub high_severity: bool,
}

/// What a handler says its request touched.
#[derive(Debug, Clone, Default)]
pub struct AuditNote {
    /// The event, when the route alone does not say it (transaction vs batch, operations).
    pub event: Option<&'static str>,
    pub patients: Vec<String>,
    pub entities: Vec<String>,
    pub query: Option<String>,
}

/// Per-request state shared by the extractor, the handler, the commit hook and the trail.
#[derive(Default)]
pub struct AuditScope {
    caller: Mutex<CallerContext>,
    note: Mutex<AuditNote>,
    /// Changes already recorded in their transaction.
    recorded_changes: Mutex<bool>,
    /// The read's record already written in the read's own transaction.
    recorded_read: Mutex<bool>,
    /// Request facts every record carries (id, source address, user agent).
    base: Mutex<Option<AuditRecord>>,
    /// The caller, for the write guard (set by the extractor).
    subject: Mutex<Option<Arc<OwnedSubject>>>,
    /// False only in `hearth bench-access`'s unaudited server: the write guard still runs,
    /// nothing is recorded.
    recording: bool,
}

impl AuditScope {
    pub fn set_caller(&self, caller: CallerContext) {
        if let Ok(mut c) = self.caller.lock() {
            *c = caller;
        }
    }

    pub fn set_subject(&self, subject: OwnedSubject) {
        if let Ok(mut s) = self.subject.lock() {
            *s = Some(Arc::new(subject));
        }
    }

    fn subject(&self) -> Option<Arc<OwnedSubject>> {
        self.subject.lock().ok().and_then(|s| s.clone())
    }

    pub fn flag_high_severity(&self) {
        if let Ok(mut c) = self.caller.lock() {
            c.high_severity = true;
        }
    }

    pub fn add_reasons(&self, reasons: &[String]) {
        if let Ok(mut c) = self.caller.lock() {
            for r in reasons {
                if !c.reasons.contains(r) {
                    c.reasons.push(r.clone());
                }
            }
        }
    }

    pub fn note(&self, f: impl FnOnce(&mut AuditNote)) {
        if let Ok(mut n) = self.note.lock() {
            f(&mut n);
        }
    }

    /// The record of this request's successful access, from what the handler noted.
    fn record_of(&self, event: &'static str, action: AuditAction) -> AuditRecord {
        let mut rec = self
            .base
            .lock()
            .ok()
            .and_then(|b| b.clone())
            .unwrap_or_else(|| AuditRecord::new(event, action, AuditOutcome::Success));
        let caller = self.caller();
        let note = self.note.lock().map(|n| n.clone()).unwrap_or_default();
        rec.event = note.event.unwrap_or(event);
        rec.action = action;
        rec.high_severity = caller.high_severity;
        rec.agent = caller.agent;
        rec.purpose = caller.purpose;
        rec.reasons = caller.reasons;
        rec.patients = note.patients;
        rec.query = note.query;
        rec.entities = note.entities;
        rec
    }

    /// Write this request's read record inside `tx` (the read's own transaction), so the
    /// read and its audit row commit together; the trail then writes nothing more.
    pub async fn record_read_in(
        &self,
        tx: &mut TenantTx,
        event: &'static str,
        action: AuditAction,
    ) -> Result<(), StoreError> {
        if !self.recording {
            return Ok(());
        }
        audit::record(tx, &self.record_of(event, action)).await?;
        if let Ok(mut done) = self.recorded_read.lock() {
            *done = true;
        }
        Ok(())
    }

    fn caller(&self) -> CallerContext {
        self.caller.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

/// The scope of the current request (the extractor and handlers add to it).
pub fn scope_of(req: &HttpRequest) -> Option<Arc<AuditScope>> {
    req.extensions().get::<Arc<AuditScope>>().cloned()
}

pub fn agent_of(principal: &Principal) -> AuditAgent {
    AuditAgent {
        who: principal.fhir_user.clone(),
        client_id: principal.client_id.clone(),
        subject: principal.subject.clone(),
        issuer: match &principal.issuer {
            TokenIssuer::Hearth => "hearth".to_owned(),
            TokenIssuer::IdentityProvider(iss) => iss.clone(),
        },
        on_behalf_of: None,
    }
}

/// Applies the access decision to every version a transaction wrote (the new state must be
/// something the caller may see), then records the changes — both inside the transaction.
struct ChangeRecorder {
    scope: Arc<AuditScope>,
    base: AuditRecord,
}

impl CommitHook for ChangeRecorder {
    fn before_commit<'a>(
        &'a self,
        tx: &'a mut TenantTx,
        written: &'a [WrittenVersion],
    ) -> HookFuture<'a> {
        Box::pin(async move {
            if let Some(subject) = self.scope.subject() {
                guard(&subject, tx, written).await?;
            }
            if !self.scope.recording {
                return Ok(());
            }
            let caller = self.scope.caller();
            let context_event = self.scope.note.lock().ok().and_then(|n| n.event);
            let records: Vec<AuditRecord> = written
                .iter()
                .map(|w| {
                    let (event, action) = if w.deleted {
                        ("delete", AuditAction::Delete)
                    } else if w.version_id == 1 {
                        ("create", AuditAction::Create)
                    } else {
                        ("update", AuditAction::Update)
                    };
                    let mut rec = self.base.clone();
                    rec.event = match context_event {
                        Some(e @ ("patch" | "transaction" | "batch"))
                            if e != "patch" || !w.deleted =>
                        {
                            e
                        }
                        _ => event,
                    };
                    rec.action = action;
                    rec.agent = caller.agent.clone();
                    rec.purpose = caller.purpose.clone();
                    rec.reasons = caller.reasons.clone();
                    rec.high_severity = caller.high_severity;
                    rec.patients = w.patients.clone();
                    rec.entities = vec![format!(
                        "{}/{}/_history/{}",
                        w.resource_type, w.id, w.version_id
                    )];
                    rec
                })
                .collect();
            audit::record_all(tx, &records).await?;
            if let Ok(mut done) = self.scope.recorded_changes.lock() {
                *done = true;
            }
            Ok(())
        })
    }
}

/// The write guard: each written version must be allowed, and (under a filtered decision)
/// its new state visible to the caller — a clinician cannot write into the record of a
/// patient outside their care, nor move a resource there.
async fn guard(
    subject: &OwnedSubject,
    tx: &mut TenantTx,
    written: &[WrittenVersion],
) -> Result<(), StoreError> {
    for w in written {
        let interaction = if w.deleted {
            Interaction::Delete
        } else if w.version_id == 1 {
            Interaction::Create
        } else {
            Interaction::Update
        };
        let decision = subject
            .decide(&w.resource_type, interaction)
            .map_err(|denied| StoreError::Forbidden(denied.0))?;
        if let (Visibility::Filtered(filter), false) = (&decision.visibility, w.deleted) {
            let ids = [w.id.clone()];
            let visible = tx.visible_ids(&w.resource_type, &ids, filter).await?;
            if !visible.contains(&w.id) {
                return Err(StoreError::Forbidden(format!(
                    "the written {} would be outside what this caller may see (patient compartment, care relationships, security labels or granular criteria)",
                    w.resource_type
                )));
            }
        }
    }
    Ok(())
}

/// The event a route and method stand for, when the handler named none.
fn route_event(pattern: &str, method: &Method) -> Option<(&'static str, AuditAction)> {
    let rest = pattern.strip_prefix("/fhir/{tenant}")?;
    Some(match (rest, method.as_str()) {
        ("" | "/", "POST") => ("transaction", AuditAction::Execute),
        ("/metadata", _) => return None,
        ("/{type}", "GET") | ("/{type}/_search", "POST") => ("search-type", AuditAction::Execute),
        ("/{type}", "POST") => ("create", AuditAction::Create),
        ("/{type}", "PUT") => ("update", AuditAction::Update),
        ("/{type}", "DELETE") => ("delete", AuditAction::Delete),
        ("/{type}/{id}", "GET") => ("read", AuditAction::Read),
        ("/{type}/{id}", "PUT") => ("update", AuditAction::Update),
        ("/{type}/{id}", "PATCH") => ("patch", AuditAction::Update),
        ("/{type}/{id}", "DELETE") => ("delete", AuditAction::Delete),
        ("/{type}/_history", _) => ("history-type", AuditAction::Read),
        ("/{type}/{id}/_history", _) => ("history-instance", AuditAction::Read),
        ("/{type}/{id}/_history/{vid}", _) => ("vread", AuditAction::Read),
        (r, _) if r.contains('$') => ("operation", AuditAction::Execute),
        (r, _) if r.starts_with("/AuditEvent") => return None,
        _ => ("operation", AuditAction::Execute),
    })
}

fn outcome_of(status: StatusCode) -> AuditOutcome {
    if status.is_success() || status.is_redirection() || status == StatusCode::NOT_MODIFIED {
        AuditOutcome::Success
    } else if status.is_client_error() {
        AuditOutcome::MinorFailure
    } else {
        AuditOutcome::SeriousFailure
    }
}

fn header(req: &ServiceRequest, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(256).collect())
}

/// The middleware around the FHIR scope.
pub async fn audit_trail(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let tenant = req
        .match_info()
        .get("tenant")
        .and_then(|t| TenantId::parse(t).ok());
    let (Some(state), Some(tenant)) = (state, tenant) else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let scope = Arc::new(AuditScope {
        recording: state.config.audit.trail,
        ..AuditScope::default()
    });
    req.extensions_mut().insert(scope.clone());
    let mut base = AuditRecord::new("read", AuditAction::Read, AuditOutcome::Success);
    base.source_ip = req.peer_addr().map(|a| a.ip().to_string());
    base.user_agent = header(&req, "user-agent");
    base.request_id = req.extensions().get::<RequestId>().map(|r| r.0.clone());
    if let Ok(mut b) = scope.base.lock() {
        *b = Some(base.clone());
    }
    let recorder: Arc<dyn CommitHook> = Arc::new(ChangeRecorder {
        scope: scope.clone(),
        base: base.clone(),
    });
    let response = crate::store::with_commit_hook(recorder, next.call(req)).await?;
    if !scope.recording {
        return Ok(response.map_into_boxed_body());
    }
    let changes_recorded = scope.recorded_changes.lock().map(|d| *d).unwrap_or(false)
        || scope.recorded_read.lock().map(|d| *d).unwrap_or(false);
    let status = response.status();
    let pattern = response.request().match_pattern().unwrap_or_default();
    let Some((route_event, route_action)) = route_event(&pattern, response.request().method())
    else {
        return Ok(response.map_into_boxed_body());
    };
    if changes_recorded && status.is_success() {
        return Ok(response.map_into_boxed_body());
    }
    let caller = scope.caller();
    let note = scope.note.lock().map(|n| n.clone()).unwrap_or_default();
    let mut rec = base;
    let (event, action) = match status {
        StatusCode::UNAUTHORIZED => ("auth-failure", AuditAction::Execute),
        StatusCode::FORBIDDEN => ("access-denied", route_action),
        _ => (note.event.unwrap_or(route_event), route_action),
    };
    rec.event = event;
    rec.action = action;
    rec.outcome = outcome_of(status);
    if !status.is_success() {
        rec.outcome_text = Some(format!("{route_event}: HTTP {}", status.as_u16()));
    }
    rec.high_severity = caller.high_severity || status == StatusCode::FORBIDDEN;
    rec.agent = caller.agent;
    rec.purpose = caller.purpose;
    rec.reasons = caller.reasons;
    rec.patients = note.patients;
    rec.query = note.query;
    rec.entities = if note.entities.is_empty() {
        let info = response.request().match_info();
        match (info.get("type"), info.get("id")) {
            (Some(t), Some(id)) => vec![format!("{t}/{id}")],
            _ => Vec::new(),
        }
    } else {
        note.entities
    };
    match state.audit_writer.write(&tenant, rec).await {
        Ok(()) => Ok(response.map_into_boxed_body()),
        // No such tenant: nothing to record against (and nothing was served).
        Err(e) if e.sqlstate.as_deref() == Some("23503") => Ok(response.map_into_boxed_body()),
        Err(e) => {
            tracing::error!(error = %e, "audit write failed; the response is withheld");
            let (request, _) = response.into_parts();
            let failed = FhirError::internal().error_response();
            Ok(ServiceResponse::new(request, failed).map_into_boxed_body())
        }
    }
}
