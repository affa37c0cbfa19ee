//! The token, introspection, revocation and JWKS endpoints.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use super::{Endpoints, OAuthError, no_store};
use crate::auth::client_auth::{self, ClientAuthError, JWT_BEARER_ASSERTION};
use crate::auth::{ResourceScope, ScopeContext, TokenError, claims_hearth_issuer};
use crate::search::query::parse_criteria;
use crate::state::AppState;
use crate::store::ClientRow;
use crate::tenant::TenantId;

/// Form bodies of these endpoints are small; anything bigger is refused unread.
const MAX_FORM_BYTES: usize = 64 * 1024;

fn tenant_of(path: &str) -> Result<TenantId, OAuthError> {
    TenantId::parse(path).map_err(|_| OAuthError::invalid_request("unknown tenant"))
}

/// The form parameters, each at most once (RFC 6749 3.2). Credentials in the URL are
/// refused: URLs end up in logs and browser histories.
async fn form(
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<Vec<(String, String)>, OAuthError> {
    if !req.query_string().is_empty() {
        return Err(OAuthError::invalid_request(
            "parameters go in the form body, never in the URL",
        ));
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return Err(OAuthError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let body = payload
        .to_bytes_limited(MAX_FORM_BYTES)
        .await
        .map_err(|_| OAuthError::invalid_request("the form body is too large"))?
        .map_err(|_| OAuthError::invalid_request("the form body could not be read"))?;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body)
        .map_err(|_| OAuthError::invalid_request("the body is not valid form-urlencoded text"))?;
    for (i, (name, _)) in pairs.iter().enumerate() {
        if pairs[..i].iter().any(|(n, _)| n == name) {
            return Err(OAuthError::invalid_request(format!(
                "parameter {name} is repeated"
            )));
        }
    }
    Ok(pairs)
}

fn param<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

fn client_failure_reason(e: &ClientAuthError) -> &'static str {
    match e {
        ClientAuthError::Malformed(_) => "malformed",
        ClientAuthError::Algorithm(_) => "algorithm",
        ClientAuthError::NoKid => "no_kid",
        ClientAuthError::Typ => "typ",
        ClientAuthError::IssuerSubject | ClientAuthError::ClientIdMismatch => "issuer",
        ClientAuthError::UnknownClient => "unknown_client",
        ClientAuthError::Disabled => "disabled",
        ClientAuthError::Keys(_) => "keys_unavailable",
        ClientAuthError::UnknownKid(_) => "unknown_kid",
        ClientAuthError::Signature => "signature",
        ClientAuthError::Audience => "audience",
        ClientAuthError::Expired => "expired",
        ClientAuthError::ExpTooFar => "exp_too_far",
        ClientAuthError::MissingClaims => "missing_claims",
        ClientAuthError::NotYetValid => "not_yet_valid",
        ClientAuthError::Replayed => "replayed_jti",
        ClientAuthError::Store(_) => "server_error",
    }
}

/// Authenticate the calling client by its `private_key_jwt` assertion. A refusal is
/// counted and audited (an `auth-failure` event naming the endpoint and the check).
async fn client(
    state: &AppState,
    tenant: &TenantId,
    endpoint: &'static str,
    audiences: &[&str],
    form: &[(String, String)],
) -> Result<ClientRow, OAuthError> {
    let result = authenticate_client(state, tenant, endpoint, audiences, form).await;
    if let Err(e) = &result
        && e.code == "invalid_client"
    {
        use crate::audit::{AuditAction, AuditAgent, AuditOutcome, AuditRecord};
        let mut rec = AuditRecord::new(
            "auth-failure",
            AuditAction::Execute,
            AuditOutcome::MinorFailure,
        );
        // The client the assertion claims to be (unverified: that is what failed).
        #[derive(serde::Deserialize)]
        struct Claimed {
            iss: Option<String>,
        }
        let claimed = param(form, "client_assertion")
            .and_then(|a| crate::auth::jwt::payload::<Claimed>(a).ok())
            .and_then(|c| c.iss)
            .map(|iss| iss.chars().take(128).collect::<String>());
        rec.outcome_text = Some(match &claimed {
            Some(iss) => format!(
                "{endpoint}: {} (the assertion claims client {iss})",
                e.description
            ),
            None => format!("{endpoint}: {}", e.description),
        });
        // A failed client assertion is a forged, replayed or misconfigured credential.
        rec.high_severity = true;
        rec.agent = param(form, "client_id").map(|c| AuditAgent {
            client_id: Some(c.to_owned()),
            subject: c.to_owned(),
            issuer: "hearth".to_owned(),
            ..AuditAgent::default()
        });
        // An unknown tenant has no log to write to; anything else must be recorded.
        if let Err(err) = state.audit_writer.write(tenant, rec).await
            && err.sqlstate.as_deref() != Some("23503")
        {
            tracing::error!(error = %err, "auditing a refused client failed");
            return Err(OAuthError::server_error());
        }
    }
    result
}

async fn authenticate_client(
    state: &AppState,
    tenant: &TenantId,
    endpoint: &'static str,
    audiences: &[&str],
    form: &[(String, String)],
) -> Result<ClientRow, OAuthError> {
    let fail = |reason: &str, e: OAuthError| {
        state
            .metrics
            .auth_failures
            .with_label_values(&[endpoint, reason])
            .inc();
        e
    };
    match param(form, "client_assertion_type") {
        Some(JWT_BEARER_ASSERTION) => {}
        Some(_) => {
            return Err(fail(
                "assertion_type",
                OAuthError::invalid_client(format!(
                    "client_assertion_type must be {JWT_BEARER_ASSERTION}"
                )),
            ));
        }
        None => {
            return Err(fail(
                "no_client_auth",
                OAuthError::invalid_client(
                    "client authentication is required: client_assertion_type and client_assertion (private_key_jwt)",
                ),
            ));
        }
    }
    let assertion = param(form, "client_assertion").ok_or_else(|| {
        fail(
            "no_client_auth",
            OAuthError::invalid_client("client_assertion is required"),
        )
    })?;
    let skew = i64::try_from(state.config.auth.clock_skew_secs).unwrap_or(30);
    client_auth::authenticate_client(
        &state.store,
        &state.key_documents,
        tenant,
        audiences,
        assertion,
        param(form, "client_id"),
        skew,
    )
    .await
    .map_err(|e| match e {
        ClientAuthError::Store(store) => {
            tracing::error!(error = %store, "client authentication: store failed");
            OAuthError::server_error()
        }
        other => fail(
            client_failure_reason(&other),
            OAuthError::invalid_client(other.to_string()),
        ),
    })
}

/// The scopes to grant: every requested scope must be a well-formed `system/` scope that
/// one of the client's registered scopes covers; otherwise `invalid_scope`, naming it.
fn granted_scopes(
    requested: &str,
    client: &ClientRow,
    local_base: &str,
) -> Result<String, OAuthError> {
    let registered: Vec<ResourceScope> = client
        .scopes
        .split_whitespace()
        .filter_map(ResourceScope::parse)
        .collect();
    let mut granted = Vec::new();
    for scope in requested.split_whitespace() {
        let parsed = ResourceScope::parse(scope).ok_or_else(|| {
            OAuthError::invalid_scope(format!("{scope} is not a SMART clinical scope"))
        })?;
        if parsed.context != ScopeContext::System {
            return Err(OAuthError::invalid_scope(format!(
                "{scope}: Backend Services tokens carry system/ scopes only"
            )));
        }
        if let (Some(t), false) = (&parsed.resource_type, parsed.criteria.is_empty()) {
            parse_criteria(t, &parsed.criteria, local_base)
                .map_err(|e| OAuthError::invalid_scope(format!("{scope}: {e}")))?;
        }
        if !registered.iter().any(|r| r.covers(&parsed)) {
            return Err(OAuthError::invalid_scope(format!(
                "{scope} was not granted to this client"
            )));
        }
        if !granted.contains(&scope) {
            granted.push(scope);
        }
    }
    if granted.is_empty() {
        return Err(OAuthError::invalid_scope("scope is required"));
    }
    Ok(granted.join(" "))
}

/// `POST /fhir/{tenant}/auth/token`: SMART Backend Services (`client_credentials` with a
/// `private_key_jwt` assertion).
pub async fn token(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, OAuthError> {
    let tenant = tenant_of(&path.into_inner())?;
    let form = form(&req, payload).await?;
    match param(&form, "grant_type") {
        Some("client_credentials") => {}
        // The demo tenant playing an EHR (demo mode only) also logs users in.
        Some("authorization_code") if crate::demo_ehr::plays_ehr(&state, &tenant) => {
            return crate::demo_ehr::exchange_code(&state, &tenant, &form).await;
        }
        Some(other) => {
            return Err(OAuthError::unsupported_grant_type(format!(
                "grant_type {other} is not supported; use client_credentials"
            )));
        }
        None => return Err(OAuthError::invalid_request("grant_type is required")),
    }
    let base = state.fhir_base(&tenant);
    let endpoints = Endpoints::for_base(&base);
    let client = client(&state, &tenant, "token", &[&endpoints.token], &form).await?;
    let scope = granted_scopes(
        param(&form, "scope").unwrap_or_default(),
        &client,
        &format!("{base}/"),
    )?;
    let ttl = state.config.auth.backend_token_ttl_secs;
    let (access_token, _) = state
        .tokens
        .mint_for_client(
            &tenant,
            &base,
            &client.client_id,
            &scope,
            ttl,
            client.patient_group.as_deref(),
        )
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "minting a token failed");
            OAuthError::server_error()
        })?;
    tracing::info!(client_id = %client.client_id, "access token issued");
    let mut builder = HttpResponse::Ok();
    no_store(&mut builder);
    Ok(builder.content_type("application/json").body(
        json!({
            "access_token": access_token,
            "token_type": "bearer",
            "expires_in": ttl,
            "scope": scope,
        })
        .to_string(),
    ))
}

/// `POST /fhir/{tenant}/auth/introspect` (RFC 7662), for Hearth-issued tokens. The caller
/// authenticates with a client assertion or a bearer token of the tenant.
pub async fn introspect(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, OAuthError> {
    let tenant = tenant_of(&path.into_inner())?;
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_owned());
    let form = form(&req, payload).await?;
    let base = state.fhir_base(&tenant);
    let endpoints = Endpoints::for_base(&base);
    match bearer {
        Some(token) => {
            crate::fhir::authenticate(&state, &tenant, &token)
                .await
                .map_err(|e| {
                    state
                        .metrics
                        .auth_failures
                        .with_label_values(&["introspect", crate::fhir::auth_failure_reason(&e)])
                        .inc();
                    OAuthError::invalid_client("the bearer token is not valid for this tenant")
                })?;
        }
        None => {
            client(
                &state,
                &tenant,
                "introspect",
                &[&endpoints.introspect, &endpoints.token],
                &form,
            )
            .await?;
        }
    }
    let token =
        param(&form, "token").ok_or_else(|| OAuthError::invalid_request("token is required"))?;
    let inactive = || json!({"active": false});
    let body = if claims_hearth_issuer(token) {
        match state
            .tokens
            .verify(token, &tenant, |t| state.fhir_base(t))
            .await
        {
            Ok(claims) => {
                let mut body = json!({
                    "active": true,
                    "scope": claims.scope,
                    "sub": claims.sub,
                    "iss": claims.iss,
                    "aud": claims.aud,
                    "exp": claims.exp,
                    "iat": claims.iat,
                    "jti": claims.jti,
                    "token_type": "Bearer",
                });
                if let Some(client_id) = claims.client_id {
                    body["client_id"] = json!(client_id);
                }
                body
            }
            Err(TokenError::Store(e)) => {
                tracing::error!(error = %e, "introspection: store failed");
                return Err(OAuthError::server_error());
            }
            Err(_) => inactive(),
        }
    } else {
        inactive()
    };
    let mut builder = HttpResponse::Ok();
    no_store(&mut builder);
    Ok(builder
        .content_type("application/json")
        .body(body.to_string()))
}

/// `POST /fhir/{tenant}/auth/revoke` (RFC 7009): a client revokes a token issued to it.
/// Unknown, invalid and expired tokens are answered 200 (nothing to revoke).
pub async fn revoke(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, OAuthError> {
    let tenant = tenant_of(&path.into_inner())?;
    let form = form(&req, payload).await?;
    let base = state.fhir_base(&tenant);
    let endpoints = Endpoints::for_base(&base);
    let client = client(
        &state,
        &tenant,
        "revoke",
        &[&endpoints.revoke, &endpoints.token],
        &form,
    )
    .await?;
    let token =
        param(&form, "token").ok_or_else(|| OAuthError::invalid_request("token is required"))?;
    if claims_hearth_issuer(token) {
        match state
            .tokens
            .verify(token, &tenant, |t| state.fhir_base(t))
            .await
        {
            Ok(claims) => {
                if claims.client_id.as_deref() != Some(client.client_id.as_str()) {
                    return Err(OAuthError::unauthorized_client(
                        "the token was not issued to this client",
                    ));
                }
                state.tokens.revoke(token, &claims).await.map_err(|e| {
                    tracing::error!(error = %e, "revocation: store failed");
                    OAuthError::server_error()
                })?;
                tracing::info!(client_id = %client.client_id, "access token revoked");
            }
            Err(TokenError::Store(e)) => {
                tracing::error!(error = %e, "revocation: store failed");
                return Err(OAuthError::server_error());
            }
            Err(_) => {}
        }
    }
    let mut builder = HttpResponse::Ok();
    no_store(&mut builder);
    Ok(builder.finish())
}

/// `GET /fhir/{tenant}/auth/jwks`: the public keys of Hearth's token signatures.
pub async fn jwks(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, OAuthError> {
    let tenant = tenant_of(&path.into_inner())?;
    if !state.store.tenant_exists(&tenant).await.map_err(|e| {
        tracing::error!(error = %e, "jwks: store failed");
        OAuthError::server_error()
    })? {
        return Err(OAuthError::new(
            actix_web::http::StatusCode::NOT_FOUND,
            "invalid_request",
            "unknown tenant",
        ));
    }
    let jwks = state.tokens.jwks(&tenant).await.map_err(|e| {
        tracing::error!(error = %e, "jwks failed");
        OAuthError::server_error()
    })?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .content_type("application/json")
        .body(jwks.to_string()))
}
