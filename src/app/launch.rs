//! The launch sequence: `/app/launch` (EHR launch) and `/app/start` (standalone) send the
//! browser to the EHR's authorize endpoint; `/app/callback` checks `state` (single use,
//! bound to this browser by a cookie), exchanges the code, validates the ID token, opens
//! the session (with the care relationship the launch vouches for), syncs the record and
//! lands on the patient's summary. `/app/{tenant}/jwks` publishes Hearth's client key.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Utc;
use serde::Deserialize;

use super::error::AppError;
use super::http::{
    AppCookie, LAUNCH_COOKIE, PagePolicy, SESSION_COOKIE, cookie_value, see_other, tenant_token,
};
use super::pages::{Chrome, authorize_post_page};
use super::session::{ActiveSession, SessionSecrets, registration_from_row, seal_context};
use crate::audit::{AuditAction, AuditAgent, AuditOutcome, AuditRecord};
use crate::auth::launch::{
    self, ClientKey, EhrRegistration, GrantedTokens, LaunchSecrets, TokenEndpoint,
};
use crate::auth::seal::{random_token, token_hash};
use crate::ehr::client::{EhrClient, RetryPolicy};
use crate::ehr::sync::{SyncReport, SyncRequest, sync_patient};
use crate::state::AppState;
use crate::store::{LaunchRow, NewSession};
use crate::tenant::TenantId;

#[derive(Deserialize)]
pub struct LaunchQuery {
    iss: Option<String>,
    launch: Option<String>,
}

/// `GET /app/launch?iss=…&launch=…` (EHR launch).
pub async fn ehr_launch(
    state: web::Data<AppState>,
    query: web::Query<LaunchQuery>,
) -> Result<HttpResponse, AppError> {
    let launch = query
        .launch
        .as_deref()
        .filter(|l| !l.is_empty() && l.len() <= 2000)
        .ok_or(AppError::MissingIss)?;
    begin(&state, query.iss.as_deref(), Some(launch)).await
}

/// `GET /app/start?iss=…` (standalone launch: the EHR asks the user for the patient).
pub async fn standalone(
    state: web::Data<AppState>,
    query: web::Query<LaunchQuery>,
) -> Result<HttpResponse, AppError> {
    begin(&state, query.iss.as_deref(), None).await
}

/// The redirect URI registered with every EHR.
pub fn redirect_uri(state: &AppState) -> String {
    format!("{}/app/callback", state.config.server.public_base_url)
}

async fn begin(
    state: &AppState,
    iss: Option<&str>,
    launch: Option<&str>,
) -> Result<HttpResponse, AppError> {
    let iss = iss.filter(|i| !i.is_empty()).ok_or(AppError::MissingIss)?;
    // Only a registered iss is ever fetched or redirected to.
    let (tenant, row) = state
        .store
        .registration_for_iss(iss)
        .await?
        .ok_or(AppError::UnknownIss)?;
    let registration = registration_from_row(row)?;
    let endpoints = launch::discover(&state.ehr_documents, &registration.iss).await?;
    let state_token = format!("{tenant}.{}", random_token());
    let browser = random_token();
    let (request, secrets) = launch::authorize_request(
        &registration,
        &endpoints,
        &redirect_uri(state),
        launch,
        &state_token,
    )?;
    let ttl = state.config.app.launch_ttl_secs as i64;
    state
        .store
        .insert_launch(
            &tenant,
            &LaunchRow {
                state_hash: token_hash(&state_token),
                browser_hash: token_hash(&browser),
                registration_id: registration.id.clone(),
                standalone: launch.is_none(),
                secrets: state
                    .app_sealer
                    .seal_json(&secrets, &launch_context(&tenant, &state_token))?,
                expires_at: Utc::now() + chrono::Duration::seconds(ttl),
            },
        )
        .await?;
    let cookie = AppCookie::new(LAUNCH_COOKIE, &browser, ttl);
    if request.fits_in_url() {
        let mut response = see_other(&request.url).finish();
        cookie.set_on(&mut response);
        return Ok(response);
    }
    // Too long for a URL: an auto-submitting POST form (SMART allows POST to authorize).
    let mut policy = PagePolicy::new(&registration.frame_ancestors);
    policy.form_target = Some(request.endpoint.clone());
    let chrome = Chrome {
        title: "Continue to sign in",
        nonce: &policy.nonce,
        style: None,
        session: None,
    };
    let html = authorize_post_page(&chrome, &request.endpoint, &request.params);
    let mut response = policy.page(StatusCode::OK, html);
    cookie.set_on(&mut response);
    Ok(response)
}

/// What a launch's sealed secrets are bound to.
fn launch_context(tenant: &TenantId, state_token: &str) -> String {
    format!(
        "app-launch:{tenant}:{}",
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            token_hash(state_token)
        )
    )
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// `GET /app/callback?code=…&state=…` (or `error=…`).
pub async fn callback(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<CallbackQuery>,
) -> Result<HttpResponse, AppError> {
    let state_token = query.state.as_deref().ok_or(AppError::BadState)?;
    let (tenant, _) = tenant_token(state_token).ok_or(AppError::BadState)?;
    // Single use: taken (deleted) whatever happens next.
    let launch_row = match state
        .store
        .take_launch(&tenant, &token_hash(state_token))
        .await
    {
        Ok(Some(row)) => row,
        Ok(None) | Err(crate::store::StoreError::UnknownTenant) => return Err(AppError::BadState),
        Err(e) => return Err(e.into()),
    };
    let browser = cookie_value(&req, LAUNCH_COOKIE).ok_or(AppError::OtherBrowser)?;
    if token_hash(&browser) != launch_row.browser_hash {
        return Err(AppError::OtherBrowser);
    }
    if let Some(error) = &query.error {
        audit_refusal(&state, &tenant, &format!("the EHR answered {error}")).await?;
        return Err(AppError::Refused(error.clone()));
    }
    let code = query.code.as_deref().ok_or(AppError::BadState)?;
    let secrets: LaunchSecrets = state
        .app_sealer
        .open_json(&launch_row.secrets, &launch_context(&tenant, state_token))?;
    let registration = state
        .store
        .ehr_registration(&tenant, &launch_row.registration_id)
        .await?
        .ok_or(AppError::BadState)?;
    let registration = registration_from_row(registration)?;
    let endpoints = launch::discover(&state.ehr_documents, &registration.iss).await?;
    let client_key = client_key_for(&state, &tenant, &registration).await?;
    let token_endpoint = TokenEndpoint {
        http: &state.ehr_http,
        registration: &registration,
        endpoints: &endpoints,
        redirect_uri: &redirect_uri(&state),
        client_key: client_key.as_ref(),
    };
    let granted = match token_endpoint.exchange(code, &secrets.pkce_verifier).await {
        Ok(g) => g,
        Err(e) => {
            audit_refusal(&state, &tenant, &format!("code exchange failed: {e}")).await?;
            return Err(e.into());
        }
    };
    let asked_openid = scope_list(&registration, launch_row.standalone).any(|s| s == "openid");
    let identity = match (&granted.id_token, asked_openid) {
        (Some(id_token), _) => Some(
            match launch::verify_id_token(
                &state.ehr_documents,
                &endpoints,
                &registration.client_id,
                id_token,
                &secrets.nonce,
            )
            .await
            {
                Ok(identity) => identity,
                Err(e) => {
                    audit_refusal(&state, &tenant, &format!("ID token refused: {e}")).await?;
                    return Err(e.into());
                }
            },
        ),
        (None, true) => return Err(launch::LaunchError::Missing("id_token").into()),
        (None, false) => None,
    };
    let patient = granted
        .context
        .patient
        .clone()
        .filter(|p| crate::ehr::sync::is_fhir_id(p))
        .ok_or(AppError::NoPatient)?;
    let fhir_user = identity
        .as_ref()
        .and_then(|i| i.fhir_user.as_deref())
        .and_then(|u| local_reference(u, &registration.iss));
    let user_display = identity.as_ref().and_then(|i| i.name.clone());

    let session_token = random_token();
    let session_id = uuid::Uuid::new_v4();
    let csrf = random_token();
    let lifetime = state.config.app.session_lifetime_secs as i64;
    let expires_at = Utc::now() + chrono::Duration::seconds(lifetime);
    let scopes = granted.scope.clone().unwrap_or_else(|| {
        scope_list(&registration, launch_row.standalone)
            .collect::<Vec<_>>()
            .join(" ")
    });
    let sealed = state.app_sealer.seal_json(
        &SessionSecrets {
            tokens: granted.clone(),
        },
        &seal_context(&tenant, session_id),
    )?;
    let style = match &granted.context.smart_style_url {
        Some(url) => fetch_style(&state, &registration, url).await,
        None => None,
    };
    let mut tx = state.store.begin(&tenant).await?;
    tx.insert_session(&NewSession {
        id: session_id,
        token_hash: &token_hash(&session_token),
        registration_id: &registration.id,
        patient_id: &patient,
        encounter_id: granted.context.encounter.as_deref(),
        fhir_user: fhir_user.as_deref(),
        user_display: user_display.as_deref(),
        scopes: &scopes,
        // A standalone launch has no EHR screen around it: the app shows the banner.
        need_patient_banner: granted.context.need_patient_banner || launch_row.standalone,
        smart_style: style.as_ref(),
        csrf: &csrf,
        secrets: &sealed,
        idle_timeout_secs: i32::try_from(state.config.app.idle_timeout_secs).unwrap_or(i32::MAX),
        expires_at,
    })
    .await?;
    let mut rec = AuditRecord::new("app-launch", AuditAction::Execute, AuditOutcome::Success);
    rec.agent = Some(AuditAgent {
        who: fhir_user.clone(),
        client_id: Some(registration.client_id.clone()),
        subject: identity
            .as_ref()
            .map(|i| i.subject.clone())
            .unwrap_or_else(|| format!("app-session:{session_id}")),
        issuer: registration.iss.clone(),
        on_behalf_of: None,
    });
    rec.purpose = Some("TREAT".to_owned());
    rec.patients = vec![patient.clone()];
    rec.outcome_text = Some(format!(
        "{} launch from EHR registration {}",
        if launch_row.standalone {
            "standalone"
        } else {
            "EHR"
        },
        registration.id
    ));
    if fhir_user
        .as_deref()
        .is_some_and(|u| u.starts_with("Practitioner/"))
    {
        rec.reasons.push(format!(
            "ehr-launch care relationship (session {session_id}) until {}",
            expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    crate::audit::record(&mut tx, &rec).await?;
    tx.commit().await?;

    let session = ActiveSession {
        tenant: tenant.clone(),
        row: state
            .store
            .session_by_token(&tenant, &token_hash(&session_token))
            .await?
            .ok_or(AppError::NoSession)?,
        registration,
    };
    run_sync(&state, &session, &granted).await?;
    // The sync's time is not the clinician's inactivity.
    state.store.touch_session(&tenant, session.row.id).await?;

    let mut response = see_other(&format!("/app/patient/{patient}")).finish();
    AppCookie::new(
        SESSION_COOKIE,
        &format!("{tenant}.{session_token}"),
        lifetime,
    )
    .set_on(&mut response);
    AppCookie::removal(LAUNCH_COOKIE).set_on(&mut response);
    Ok(response)
}

fn scope_list(registration: &EhrRegistration, standalone: bool) -> std::str::SplitWhitespace<'_> {
    if standalone {
        registration.standalone_scopes.split_whitespace()
    } else {
        registration.scopes.split_whitespace()
    }
}

/// `fhirUser` as a local reference: relative as given, or absolute under the EHR's base.
/// A user somewhere else is not one of this record's resources.
fn local_reference(fhir_user: &str, iss: &str) -> Option<String> {
    let relative = fhir_user
        .strip_prefix(&format!("{}/", iss.trim_end_matches('/')))
        .unwrap_or(fhir_user);
    let (resource_type, id) = relative.split_once('/')?;
    ([
        "Practitioner",
        "PractitionerRole",
        "Patient",
        "RelatedPerson",
        "Person",
    ]
    .contains(&resource_type)
        && crate::ehr::sync::is_fhir_id(id))
    .then(|| format!("{resource_type}/{id}"))
}

/// The SMART style document, only from the EHR's own origin (no fetch of arbitrary URLs).
async fn fetch_style(
    state: &AppState,
    registration: &EhrRegistration,
    url: &str,
) -> Option<serde_json::Value> {
    let same_origin = super::http::origin_of(url)? == super::http::origin_of(&registration.iss)?;
    if !same_origin {
        tracing::info!("smart_style_url is not on the EHR's origin; ignored");
        return None;
    }
    match state.ehr_documents.get(url).await {
        Ok(doc) => Some((*doc).clone()),
        Err(e) => {
            tracing::info!(error = %e, "smart_style_url could not be read; default style");
            None
        }
    }
}

/// Audit a launch that did not produce a session (no PHI was read).
async fn audit_refusal(state: &AppState, tenant: &TenantId, why: &str) -> Result<(), AppError> {
    let mut rec = AuditRecord::new(
        "app-launch",
        AuditAction::Execute,
        AuditOutcome::MinorFailure,
    );
    rec.outcome_text = Some(why.chars().take(500).collect());
    rec.high_severity = true;
    crate::audit::record_now(&state.store, tenant, &rec).await?;
    Ok(())
}

/// Sync the session's patient with the tokens given; the report is kept on the session.
pub async fn run_sync(
    state: &AppState,
    session: &ActiveSession,
    tokens: &GrantedTokens,
) -> Result<SyncReport, AppError> {
    let client = EhrClient::new(
        state.ehr_http.clone(),
        &session.registration.iss,
        &tokens.access_token,
        RetryPolicy::default(),
    );
    let report = match client {
        Ok(client) => {
            let request = SyncRequest {
                tenant: &session.tenant,
                registration_id: &session.registration.id,
                ehr_name: &session.registration.name,
                iss: &session.registration.iss,
                patient_id: &session.row.patient_id,
                fhir_user: session.row.fhir_user.as_deref(),
                agent: session.agent(),
                session_id: session.row.id,
            };
            sync_patient(
                &state.store,
                &client,
                &request,
                &state.fhir_base(&session.tenant),
            )
            .await
            .map_err(|crate::ehr::sync::SyncError::Store(e)| AppError::Store(e))?
        }
        Err(e) => SyncReport {
            outcome: crate::ehr::sync::SyncOutcome::Failed,
            problems: vec![e.to_string()],
            finished_at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ..SyncReport::default()
        },
    };
    let value = serde_json::to_value(&report).unwrap_or_default();
    state
        .store
        .set_sync_report(&session.tenant, session.row.id, &value)
        .await?;
    Ok(report)
}

/// `POST /app/patient/{pid}/sync`: sync again (refreshing the EHR access token first when
/// it has expired and the EHR granted a refresh token).
pub async fn resync(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    form: web::Form<super::session::CsrfForm>,
) -> Result<HttpResponse, AppError> {
    let session = super::session::for_patient(&req, &state, &path).await?;
    form.check(&session)?;
    let mut secrets = session.secrets(&state)?;
    let expired = secrets
        .tokens
        .access_expires_at
        .is_some_and(|at| at <= Utc::now().timestamp() + 30);
    if expired && let Some(refresh_token) = secrets.tokens.refresh_token.clone() {
        let endpoints = launch::discover(&state.ehr_documents, &session.registration.iss).await?;
        let client_key = client_key_for(&state, &session.tenant, &session.registration).await?;
        let refreshed = TokenEndpoint {
            http: &state.ehr_http,
            registration: &session.registration,
            endpoints: &endpoints,
            redirect_uri: &redirect_uri(&state),
            client_key: client_key.as_ref(),
        }
        .refresh(&refresh_token)
        .await?;
        secrets.tokens.access_token = refreshed.access_token;
        secrets.tokens.refresh_token = refreshed.refresh_token;
        secrets.tokens.access_expires_at = refreshed.access_expires_at;
        let sealed = state
            .app_sealer
            .seal_json(&secrets, &seal_context(&session.tenant, session.row.id))?;
        state
            .store
            .set_session_secrets(&session.tenant, session.row.id, &sealed)
            .await?;
    }
    run_sync(&state, &session, &secrets.tokens).await?;
    Ok(see_other(&format!("/app/patient/{}", session.row.patient_id)).finish())
}

/// Hearth's client-assertion key for the tenant (made on first use), when the registration
/// authenticates with `private_key_jwt`.
async fn client_key_for(
    state: &AppState,
    tenant: &TenantId,
    registration: &EhrRegistration,
) -> Result<Option<ClientKey>, AppError> {
    if registration.client_auth != launch::ClientAuth::PrivateKeyJwt {
        return Ok(None);
    }
    Ok(Some(client_key(state, tenant).await?))
}

async fn client_key(state: &AppState, tenant: &TenantId) -> Result<ClientKey, AppError> {
    if let Some((kid, private_key_pem)) = state.store.app_client_key(tenant).await? {
        return Ok(ClientKey {
            kid,
            private_key_pem,
        });
    }
    let (kid, private_key_pem, jwk) = launch::generate_client_key()?;
    state
        .store
        .insert_app_client_key(
            tenant,
            &kid,
            launch::CLIENT_ASSERTION_ALG,
            &private_key_pem,
            &jwk,
        )
        .await?;
    // Two first uses at once may both insert: the newest key wins, both stay published.
    let (kid, private_key_pem) =
        state
            .store
            .app_client_key(tenant)
            .await?
            .ok_or(AppError::Store(crate::store::StoreError::Corrupt(
                "app client key",
            )))?;
    Ok(ClientKey {
        kid,
        private_key_pem,
    })
}

/// `GET /app/{tenant}/jwks`: the JWKS URL to register with the tenant's EHRs.
pub async fn jwks(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let tenant = TenantId::parse(&path).map_err(|_| AppError::NotFound)?;
    if !state.store.tenant_exists(&tenant).await? {
        return Err(AppError::NotFound);
    }
    client_key(&state, &tenant).await?;
    let keys = state.store.app_client_jwks(&tenant).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .json(serde_json::json!({ "keys": keys })))
}
