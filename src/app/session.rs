//! The clinician's session: found by the cookie's token hash, ended after inactivity or at
//! its absolute lifetime (automatic logoff), or by logout. Ending a session also ends the
//! care relationship its launch vouched for, and is audited.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::error::AppError;
use super::http::{AppCookie, SESSION_COOKIE, cookie_value, see_other, tenant_token};
use crate::audit::{AuditAction, AuditAgent, AuditOutcome, AuditRecord};
use crate::auth::launch::{ClientAuth, EhrRegistration, GrantedTokens};
use crate::auth::{Principal, ScopeSet, TokenIssuer};
use crate::state::AppState;
use crate::store::{EhrRegistrationRow, SessionEnd, SessionRow, Store};
use crate::tenant::TenantId;

/// Header app.js sends its CSRF token in (the activity ping).
pub const CSRF_HEADER: &str = "X-Hearth-CSRF";

/// What is sealed in a session row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionSecrets {
    pub tokens: GrantedTokens,
}

/// A live session of this request.
pub struct ActiveSession {
    pub tenant: TenantId,
    pub row: SessionRow,
    pub registration: EhrRegistration,
}

impl ActiveSession {
    /// The session as the caller of the access decision: the EHR-granted scopes, confined
    /// to the launch patient, the user's fhirUser.
    pub fn principal(&self) -> Principal {
        Principal {
            tenant: self.tenant.clone(),
            subject: self
                .row
                .fhir_user
                .clone()
                .unwrap_or_else(|| format!("app-session:{}", self.row.id)),
            scopes: ScopeSet::parse(&self.row.scopes),
            token_id: self.row.id.to_string(),
            issuer: TokenIssuer::IdentityProvider(self.registration.iss.clone()),
            client_id: Some(self.registration.client_id.clone()),
            patient: Some(self.row.patient_id.clone()),
            fhir_user: self.row.fhir_user.clone(),
            patient_group: None,
        }
    }

    pub fn agent(&self) -> AuditAgent {
        AuditAgent::from_principal(&self.principal())
    }

    /// Pages of another patient than the launch's are refused before any read.
    pub fn require_patient(&self, patient_id: &str) -> Result<(), AppError> {
        if self.row.patient_id == patient_id {
            Ok(())
        } else {
            Err(AppError::OtherPatient)
        }
    }

    pub fn secrets(&self, state: &AppState) -> Result<SessionSecrets, AppError> {
        Ok(state
            .app_sealer
            .open_json(&self.row.secrets, &seal_context(&self.tenant, self.row.id))?)
    }
}

/// What a sealed session secret is bound to.
pub fn seal_context(tenant: &TenantId, id: uuid::Uuid) -> String {
    format!("app-session:{tenant}:{id}")
}

pub fn registration_from_row(row: EhrRegistrationRow) -> Result<EhrRegistration, AppError> {
    let client_auth = ClientAuth::parse(&row.client_auth).ok_or(AppError::Store(
        crate::store::StoreError::Corrupt("client_auth"),
    ))?;
    Ok(EhrRegistration {
        id: row.id,
        name: row.name,
        iss: row.iss,
        client_id: row.client_id,
        client_auth,
        scopes: row.scopes,
        standalone_scopes: row.standalone_scopes,
        frame_ancestors: row.frame_ancestors,
    })
}

/// Why a session is over now, if it is: its lifetime ran out, or it was idle too long.
fn due_end(row: &SessionRow) -> Option<SessionEnd> {
    let now = Utc::now();
    if now >= row.expires_at {
        Some(SessionEnd::Expired)
    } else if (now - row.last_seen_at).num_seconds() >= i64::from(row.idle_timeout_secs) {
        Some(SessionEnd::Inactive)
    } else {
        None
    }
}

/// The request's live session, its activity noted; an idle or expired one is ended here.
pub async fn current(req: &HttpRequest, state: &AppState) -> Result<ActiveSession, AppError> {
    let (tenant, row) = lookup(req, state).await?.ok_or(AppError::NoSession)?;
    if let Some(reason) = &row.end_reason {
        return Err(AppError::Ended(match reason.as_str() {
            "inactive" => SessionEnd::Inactive,
            "expired" => SessionEnd::Expired,
            _ => SessionEnd::Logout,
        }));
    }
    let session = with_registration(&state.store, tenant, row).await?;
    if let Some(end) = due_end(&session.row) {
        end_session(&state.store, &session, end).await?;
        return Err(AppError::Ended(end));
    }
    state
        .store
        .touch_session(&session.tenant, session.row.id)
        .await?;
    Ok(session)
}

/// The live session, for a page of `patient_id`: another patient's page is refused before
/// anything is read.
pub async fn for_patient(
    req: &HttpRequest,
    state: &AppState,
    patient_id: &str,
) -> Result<ActiveSession, AppError> {
    let session = current(req, state).await?;
    session.require_patient(patient_id)?;
    Ok(session)
}

async fn with_registration(
    store: &Store,
    tenant: TenantId,
    row: SessionRow,
) -> Result<ActiveSession, AppError> {
    let registration = store
        .ehr_registration(&tenant, &row.registration_id)
        .await?
        .ok_or(AppError::NoSession)?;
    Ok(ActiveSession {
        tenant,
        row,
        registration: registration_from_row(registration)?,
    })
}

/// The background sweeper of `hearth serve`: every `interval`, end the sessions nobody
/// came back to (idle or past their lifetime), so their EHR tokens are wiped and the care
/// relationship of their launch ends on time. Runs until dropped.
pub async fn run_session_sweeper(store: Store, interval: std::time::Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let tenants = match store.tenants_with_stale_sessions().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "app session sweeper: cannot list tenants");
                continue;
            }
        };
        for tenant in tenants {
            if let Err(e) = sweep_tenant(&store, &tenant).await {
                tracing::warn!(tenant = %tenant, error = %e, "app session sweeper failed");
            }
        }
    }
}

async fn sweep_tenant(store: &Store, tenant: &TenantId) -> Result<(), AppError> {
    for row in store.stale_sessions(tenant).await? {
        let Some(end) = due_end(&row) else { continue };
        let session = with_registration(store, tenant.clone(), row).await?;
        end_session(store, &session, end).await?;
    }
    Ok(())
}

async fn lookup(
    req: &HttpRequest,
    state: &AppState,
) -> Result<Option<(TenantId, SessionRow)>, AppError> {
    let Some(value) = cookie_value(req, SESSION_COOKIE) else {
        return Ok(None);
    };
    let Some((tenant, token)) = tenant_token(&value) else {
        return Ok(None);
    };
    let hash = crate::auth::seal::token_hash(token);
    let row = match state.store.session_by_token(&tenant, &hash).await {
        Ok(row) => row,
        // A cookie naming a tenant that no longer exists is no session.
        Err(crate::store::StoreError::UnknownTenant) => None,
        Err(e) => return Err(e.into()),
    };
    Ok(row.map(|r| (tenant, r)))
}

/// End the session (and its launch relationship) and audit it.
pub async fn end_session(
    store: &Store,
    session: &ActiveSession,
    end: SessionEnd,
) -> Result<(), AppError> {
    let mut tx = store.begin(&session.tenant).await?;
    if tx.end_session(session.row.id, end).await? {
        let mut rec = AuditRecord::new("app-logout", AuditAction::Execute, AuditOutcome::Success);
        rec.agent = Some(session.agent());
        rec.patients = vec![session.row.patient_id.clone()];
        rec.outcome_text = Some(format!("app session ended: {}", end.code()));
        rec.reasons = vec![format!(
            "ehr-launch care relationship of session {} ended",
            session.row.id
        )];
        crate::audit::record(&mut tx, &rec).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// A form carrying the session's CSRF token (logout, sync again).
#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

impl CsrfForm {
    pub fn check(&self, session: &ActiveSession) -> Result<(), AppError> {
        check_csrf(session, &self.csrf)
    }
}

/// A form's CSRF token must be the session's.
pub fn check_csrf(session: &ActiveSession, csrf: &str) -> Result<(), AppError> {
    constant_time_eq(csrf.as_bytes(), session.row.csrf.as_bytes())
        .then_some(())
        .ok_or(AppError::BadForm)
}

/// `POST /app/logout` (the page's form, with its CSRF token).
pub async fn logout(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, AppError> {
    let session = match current(&req, &state).await {
        Ok(s) => s,
        Err(AppError::NoSession | AppError::Ended(_)) => {
            return Ok(ended_redirect("logout"));
        }
        Err(e) => return Err(e),
    };
    form.check(&session)?;
    end_session(&state.store, &session, SessionEnd::Logout).await?;
    Ok(ended_redirect("logout"))
}

fn ended_redirect(reason: &str) -> HttpResponse {
    let mut response = see_other(&format!("/app/ended?reason={reason}")).finish();
    AppCookie::removal(SESSION_COOKIE).set_on(&mut response);
    response
}

/// `POST /app/activity`: app.js saw the clinician reading (204), or the session is over
/// (401, and app.js clears the screen).
pub async fn activity(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let session = current(&req, &state).await?;
    let sent = req
        .headers()
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !constant_time_eq(sent.as_bytes(), session.row.csrf.as_bytes()) {
        return Err(AppError::BadForm);
    }
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
pub struct EndedQuery {
    reason: Option<String>,
}

/// `GET /app/ended?reason=…`: the page app.js shows after inactivity, and where logout
/// lands. For `inactive` it also ends the session server-side (it only takes rights away).
pub async fn ended(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<EndedQuery>,
) -> Result<HttpResponse, AppError> {
    let reason = query.reason.as_deref().unwrap_or("logout");
    if reason == "inactive"
        && let Ok(session) = current(&req, &state).await
    {
        end_session(&state.store, &session, SessionEnd::Inactive).await?;
    }
    let (heading, message) = match reason {
        "inactive" => (
            "Signed out after inactivity",
            "Hearth signed you out because this window was idle. Open Hearth again from the patient's chart.",
        ),
        "expired" => (
            "Session expired",
            "Your Hearth session reached its time limit. Open Hearth again from the patient's chart.",
        ),
        _ => (
            "Signed out",
            "You have signed out of Hearth. Open Hearth again from the patient's chart.",
        ),
    };
    let policy = super::http::PagePolicy::new(&["*".to_owned()]);
    let chrome = super::pages::Chrome {
        title: heading,
        nonce: &policy.nonce,
        style: None,
        session: None,
    };
    let mut response = policy.page(
        actix_web::http::StatusCode::OK,
        super::pages::ended_page(&chrome, heading, message),
    );
    AppCookie::removal(SESSION_COOKIE).set_on(&mut response);
    Ok(response)
}

/// Compares secrets (CSRF tokens) without leaking where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
