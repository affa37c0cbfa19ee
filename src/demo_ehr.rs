//! The demo EHR (demo mode only; `Config::validate` refuses it elsewhere): Hearth's demo
//! tenant plays an EHR so a first-time user can go through a real SMART EHR launch into the
//! app. `/demo-ehr` is the "chart" (pick a patient and a practitioner), `/demo-ehr/launch`
//! opens the app with a launch id, `/demo-ehr/authorize` asks the user to allow the app and
//! issues a code; the tenant's token endpoint exchanges it (PKCE S256) for a Hearth token
//! with the launch context and an ID token. Codes and launches live in memory: a restart
//! only forgets launches in flight.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::app::error::AppError;
use crate::app::http::{PagePolicy, see_other};
use crate::app::pages::{Chrome, DemoChoice, demo_authorize_page, demo_chart_page};
use crate::auth::TokenContext;
use crate::auth::seal::random_token;
use crate::oauth::OAuthError;
use crate::state::AppState;
use crate::tenant::TenantId;

/// The app's client id at the demo EHR (registered by `scripts/demo.sh`).
pub const DEMO_CLIENT_ID: &str = "hearth-demo-app";
const LAUNCH_TTL: Duration = Duration::from_secs(600);
const CODE_TTL: Duration = Duration::from_secs(60);
const ACCESS_TTL_SECS: u64 = 3600;

/// A launch the chart started: who opened whose chart.
#[derive(Debug, Clone)]
struct LaunchContext {
    patient: String,
    practitioner: String,
}

/// An issued authorization code.
#[derive(Debug, Clone)]
struct IssuedCode {
    context: LaunchContext,
    redirect_uri: String,
    code_challenge: String,
    nonce: Option<String>,
    scope: String,
}

/// In-memory launches and codes (single use, short-lived).
#[derive(Default)]
pub struct DemoEhr {
    launches: Mutex<HashMap<String, (LaunchContext, Instant)>>,
    codes: Mutex<HashMap<String, (IssuedCode, Instant)>>,
}

impl DemoEhr {
    fn put_launch(&self, context: LaunchContext) -> String {
        let id = random_token();
        if let Ok(mut launches) = self.launches.lock() {
            launches.retain(|_, (_, at)| at.elapsed() < LAUNCH_TTL);
            launches.insert(id.clone(), (context, Instant::now()));
        }
        id
    }

    fn launch(&self, id: &str) -> Option<LaunchContext> {
        let launches = self.launches.lock().ok()?;
        launches
            .get(id)
            .filter(|(_, at)| at.elapsed() < LAUNCH_TTL)
            .map(|(c, _)| c.clone())
    }

    fn put_code(&self, code: IssuedCode) -> String {
        let id = random_token();
        if let Ok(mut codes) = self.codes.lock() {
            codes.retain(|_, (_, at)| at.elapsed() < CODE_TTL);
            codes.insert(id.clone(), (code, Instant::now()));
        }
        id
    }

    fn take_code(&self, code: &str) -> Option<IssuedCode> {
        let mut codes = self.codes.lock().ok()?;
        codes
            .remove(code)
            .filter(|(_, at)| at.elapsed() < CODE_TTL)
            .map(|(c, _)| c)
    }
}

/// Is the demo EHR on, and is `tenant` the one playing it?
pub fn plays_ehr(state: &AppState, tenant: &TenantId) -> bool {
    state.config.app.demo_ehr && tenant.as_str() == state.config.app.demo_ehr_tenant
}

fn ehr_tenant(state: &AppState) -> Result<TenantId, AppError> {
    if !state.config.app.demo_ehr {
        return Err(AppError::NotFound);
    }
    TenantId::parse(&state.config.app.demo_ehr_tenant).map_err(|_| AppError::NotFound)
}

/// What the demo tenant adds to its SMART configuration: an authorize endpoint, the
/// `authorization_code` grant for public clients, the launch capabilities.
pub fn extend_discovery(document: &mut Value, public_base: &str) {
    document["authorization_endpoint"] = json!(format!("{public_base}/demo-ehr/authorize"));
    document["grant_types_supported"] = json!(["client_credentials", "authorization_code"]);
    document["token_endpoint_auth_methods_supported"] = json!(["private_key_jwt", "none"]);
    document["response_types_supported"] = json!(["code"]);
    if let Some(capabilities) = document["capabilities"].as_array_mut() {
        for extra in [
            "launch-ehr",
            "client-public",
            "context-ehr-patient",
            "context-banner",
            "sso-openid-connect",
        ] {
            capabilities.push(json!(extra));
        }
    }
}

/// `GET /demo-ehr`: the chart with its patient and practitioner pickers.
pub async fn chart(state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let tenant = ehr_tenant(&state)?;
    let base = state.fhir_base(&tenant);
    let choices = |resource_type: &'static str| {
        let state = state.clone();
        let tenant = tenant.clone();
        let base = base.clone();
        async move {
            let params = vec![("_count".to_owned(), "50".to_owned())];
            let query = crate::search::query::parse_search(resource_type, &params, false, &base)
                .map_err(|_| AppError::NotFound)?;
            let page = state.store.search(&tenant, &query).await?;
            Ok::<_, AppError>(
                page.matches
                    .iter()
                    .filter_map(|v| {
                        let value: Value = serde_json::from_str(v.content.as_deref()?).ok()?;
                        Some(DemoChoice {
                            id: v.id.clone(),
                            label: crate::app::render::resource_label(&value),
                        })
                    })
                    .collect::<Vec<_>>(),
            )
        }
    };
    let patients = choices("Patient").await?;
    let practitioners = choices("Practitioner").await?;
    let policy = PagePolicy::new(&[]);
    let chrome = Chrome {
        title: "Demo EHR",
        nonce: &policy.nonce,
        style: None,
        session: None,
    };
    let html = demo_chart_page(&chrome, "/demo-ehr/launch", &patients, &practitioners);
    Ok(policy.page(StatusCode::OK, html))
}

#[derive(Deserialize)]
pub struct LaunchForm {
    patient: String,
    practitioner: String,
}

/// `GET /demo-ehr/launch?patient=…&practitioner=…`: open the app as the EHR would.
pub async fn launch(
    state: web::Data<AppState>,
    form: web::Query<LaunchForm>,
) -> Result<HttpResponse, AppError> {
    let tenant = ehr_tenant(&state)?;
    for (resource_type, id) in [
        ("Patient", &form.patient),
        ("Practitioner", &form.practitioner),
    ] {
        if !crate::ehr::sync::is_fhir_id(id) {
            return Err(AppError::NotFound);
        }
        match state.store.read(&tenant, resource_type, id).await {
            Ok(_) => {}
            Err(crate::store::StoreError::NotFound | crate::store::StoreError::Gone(_)) => {
                return Err(AppError::NotFound);
            }
            Err(e) => return Err(e.into()),
        }
    }
    let id = state.demo_ehr.put_launch(LaunchContext {
        patient: form.patient.clone(),
        practitioner: form.practitioner.clone(),
    });
    let iss = state.fhir_base(&tenant);
    let mut url = reqwest::Url::parse(&format!(
        "{}/app/launch",
        state.config.server.public_base_url
    ))
    .map_err(|_| AppError::NotFound)?;
    url.query_pairs_mut()
        .append_pair("iss", &iss)
        .append_pair("launch", &id);
    Ok(see_other(url.as_str()).finish())
}

#[derive(Deserialize)]
pub struct AuthorizeParams {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    aud: Option<String>,
    launch: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    nonce: Option<String>,
    decision: Option<String>,
}

/// The request's checks: the demo app, Hearth's own callback (no open redirect), `aud` the
/// demo tenant's FHIR base, PKCE S256, a known launch.
fn check_authorize(
    state: &AppState,
    tenant: &TenantId,
    p: &AuthorizeParams,
) -> Result<(LaunchContext, String), &'static str> {
    if p.response_type.as_deref() != Some("code") {
        return Err("response_type must be code");
    }
    if p.client_id.as_deref() != Some(DEMO_CLIENT_ID) {
        return Err("unknown client_id");
    }
    let redirect = crate::app::launch::redirect_uri(state);
    if p.redirect_uri.as_deref() != Some(redirect.as_str()) {
        return Err("redirect_uri is not the app's callback");
    }
    if p.aud.as_deref() != Some(state.fhir_base(tenant).as_str()) {
        return Err("aud is not this EHR's FHIR base");
    }
    if p.code_challenge_method.as_deref() != Some("S256") || p.code_challenge.is_none() {
        return Err("PKCE S256 is required");
    }
    let context = p
        .launch
        .as_deref()
        .and_then(|l| state.demo_ehr.launch(l))
        .ok_or("unknown or expired launch")?;
    Ok((context, redirect))
}

/// `GET /demo-ehr/authorize`: the consent page (the demo user is already "signed in").
pub async fn authorize(
    state: web::Data<AppState>,
    params: web::Query<AuthorizeParams>,
) -> Result<HttpResponse, AppError> {
    let tenant = ehr_tenant(&state)?;
    let (_, _) = check_authorize(&state, &tenant, &params).map_err(|_| AppError::BadState)?;
    let fields: Vec<(String, String)> = [
        ("response_type", &params.response_type),
        ("client_id", &params.client_id),
        ("redirect_uri", &params.redirect_uri),
        ("scope", &params.scope),
        ("state", &params.state),
        ("aud", &params.aud),
        ("launch", &params.launch),
        ("code_challenge", &params.code_challenge),
        ("code_challenge_method", &params.code_challenge_method),
        ("nonce", &params.nonce),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_owned(), v.clone())))
    .collect();
    let scopes: Vec<String> = params
        .scope
        .as_deref()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let policy = PagePolicy::new(&[]);
    let chrome = Chrome {
        title: "Allow Hearth?",
        nonce: &policy.nonce,
        style: None,
        session: None,
    };
    let html = demo_authorize_page(&chrome, "/demo-ehr/authorize", "Hearth", &scopes, &fields);
    Ok(policy.page(StatusCode::OK, html))
}

/// `POST /demo-ehr/authorize`: allow (a code) or deny (`access_denied`), back to the app.
pub async fn decide(
    state: web::Data<AppState>,
    params: web::Form<AuthorizeParams>,
) -> Result<HttpResponse, AppError> {
    let tenant = ehr_tenant(&state)?;
    let (context, redirect) =
        check_authorize(&state, &tenant, &params).map_err(|_| AppError::BadState)?;
    let mut url = reqwest::Url::parse(&redirect).map_err(|_| AppError::BadState)?;
    if params.decision.as_deref() == Some("allow") {
        let code = state.demo_ehr.put_code(IssuedCode {
            context,
            redirect_uri: redirect.clone(),
            code_challenge: params.code_challenge.clone().unwrap_or_default(),
            nonce: params.nonce.clone(),
            scope: params.scope.clone().unwrap_or_default(),
        });
        url.query_pairs_mut().append_pair("code", &code);
    } else {
        url.query_pairs_mut().append_pair("error", "access_denied");
    }
    if let Some(s) = &params.state {
        url.query_pairs_mut().append_pair("state", s);
    }
    Ok(see_other(url.as_str()).finish())
}

/// The `authorization_code` grant at the demo tenant's token endpoint (public client,
/// PKCE): a Hearth access token in the launch's patient context and an ID token.
pub async fn exchange_code(
    state: &AppState,
    tenant: &TenantId,
    form: &[(String, String)],
) -> Result<HttpResponse, OAuthError> {
    let param = |name: &str| {
        form.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let code = param("code").ok_or_else(|| OAuthError::invalid_request("code is required"))?;
    let issued = state
        .demo_ehr
        .take_code(code)
        .ok_or_else(|| OAuthError::invalid_grant("the code is unknown, used or expired"))?;
    if param("client_id") != Some(DEMO_CLIENT_ID) {
        return Err(OAuthError::invalid_client("unknown client"));
    }
    if param("redirect_uri") != Some(issued.redirect_uri.as_str()) {
        return Err(OAuthError::invalid_grant(
            "redirect_uri differs from the authorize request's",
        ));
    }
    let verifier = param("code_verifier")
        .ok_or_else(|| OAuthError::invalid_grant("code_verifier is required"))?;
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    if challenge != issued.code_challenge {
        return Err(OAuthError::invalid_grant(
            "the PKCE verifier does not match",
        ));
    }
    let base = state.fhir_base(tenant);
    // Only SMART resource scopes go into the access token.
    let scope: Vec<&str> = issued
        .scope
        .split_whitespace()
        .filter(|s| s.starts_with("patient/") || s.starts_with("user/"))
        .collect();
    let scope = scope.join(" ");
    let fhir_user = format!("Practitioner/{}", issued.context.practitioner);
    let access_token = state
        .tokens
        .mint_with(
            tenant,
            &base,
            &fhir_user,
            &scope,
            ACCESS_TTL_SECS,
            TokenContext {
                fhir_user: Some(fhir_user.clone()),
                patient: Some(issued.context.patient.clone()),
            },
        )
        .await
        .map_err(|_| OAuthError::server_error())?;
    // The EHR vouches for the launch: the practitioner who opened this chart may see it
    // while the token lives (its own access decision would refuse them otherwise).
    let until = chrono::Utc::now() + chrono::Duration::seconds(ACCESS_TTL_SECS as i64);
    let mut tx = state
        .store
        .begin(tenant)
        .await
        .map_err(|_| OAuthError::server_error())?;
    tx.insert_launch_relationship(
        &issued.context.practitioner,
        &issued.context.patient,
        &format!("demo-ehr-launch:{}", uuid::Uuid::new_v4()),
        until,
    )
    .await
    .map_err(|_| OAuthError::server_error())?;
    let mut rec = crate::audit::AuditRecord::new(
        "app-launch",
        crate::audit::AuditAction::Execute,
        crate::audit::AuditOutcome::Success,
    );
    rec.agent = Some(crate::audit::AuditAgent {
        who: Some(fhir_user.clone()),
        client_id: Some(DEMO_CLIENT_ID.to_owned()),
        subject: fhir_user.clone(),
        issuer: "hearth-demo-ehr".to_owned(),
        on_behalf_of: None,
    });
    rec.patients = vec![issued.context.patient.clone()];
    rec.reasons = vec![format!(
        "demo EHR launch: ehr-launch care relationship until {}",
        until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )];
    crate::audit::record(&mut tx, &rec)
        .await
        .map_err(|_| OAuthError::server_error())?;
    tx.commit().await.map_err(|_| OAuthError::server_error())?;
    let now = chrono::Utc::now().timestamp();
    let mut id_claims = json!({
        "iss": base, "sub": fhir_user, "aud": DEMO_CLIENT_ID, "iat": now, "exp": now + 300,
        "fhirUser": format!("{base}/{fhir_user}"),
    });
    if let Some(nonce) = &issued.nonce {
        id_claims["nonce"] = json!(nonce);
    }
    let id_token = state
        .tokens
        .sign_id_token(tenant, &id_claims)
        .await
        .map_err(|_| OAuthError::server_error())?;
    let granted: Vec<&str> = issued.scope.split_whitespace().collect();
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(json!({
            "access_token": access_token,
            "token_type": "bearer",
            "expires_in": ACCESS_TTL_SECS,
            "scope": granted.join(" "),
            "id_token": id_token,
            "patient": issued.context.patient,
            "need_patient_banner": true,
        })))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/demo-ehr", web::get().to(chart))
        .route("/demo-ehr/launch", web::get().to(launch))
        .route("/demo-ehr/authorize", web::get().to(authorize))
        .route("/demo-ehr/authorize", web::post().to(decide));
}
