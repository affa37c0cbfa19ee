//! `GET /fhir/{tenant}/.well-known/smart-configuration` (SMART App Launch 2.2).

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use serde_json::{Value, json};

use super::{Endpoints, OAuthError};
use crate::auth::client_auth::ASSERTION_ALGORITHMS;
use crate::state::AppState;
use crate::tenant::TenantId;

/// The SMART capabilities Hearth advertises, each true of every tenant:
/// - `client-confidential-asymmetric`: the token endpoint authenticates clients with
///   `private_key_jwt` assertions (RS384, ES384) against their registered JWKS.
/// - `permission-v1`: v1 scopes (`.read`, `.write`, `.*`) are enforced.
/// - `permission-v2`: v2 scopes (`.cruds` letters) are enforced, granular criteria too.
/// - `permission-patient`: `patient/` scopes confine every interaction to the patient in
///   the token's launch context (identity-provider tokens).
/// - `permission-user`: `user/` scopes are honoured on identity-provider tokens.
///
/// Not advertised: launch and SSO capabilities (Hearth's own server has no authorization
/// endpoint; user-facing apps get tokens from the tenant's identity provider), public and
/// symmetric clients, offline access.
pub const SMART_CAPABILITIES: &[&str] = &[
    "client-confidential-asymmetric",
    "permission-v1",
    "permission-v2",
    "permission-patient",
    "permission-user",
];

/// The scopes Hearth's token endpoint issues (clients may ask for narrower ones, per type
/// and with granular criteria).
const SCOPES_SUPPORTED: &[&str] = &[
    "system/*.cruds",
    "system/*.rs",
    "system/*.read",
    "system/*.write",
    "system/*.*",
];

pub fn smart_configuration(fhir_base: &str) -> Value {
    let endpoints = Endpoints::for_base(fhir_base);
    let algs: Vec<String> = ASSERTION_ALGORITHMS
        .iter()
        .map(|a| format!("{a:?}"))
        .collect();
    json!({
        "issuer": fhir_base,
        "jwks_uri": endpoints.jwks,
        "token_endpoint": endpoints.token,
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": algs,
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": SCOPES_SUPPORTED,
        "introspection_endpoint": endpoints.introspect,
        "revocation_endpoint": endpoints.revoke,
        "code_challenge_methods_supported": ["S256"],
        "capabilities": SMART_CAPABILITIES,
    })
}

fn cors(builder: &mut actix_web::HttpResponseBuilder) {
    builder.insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"));
    builder.insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "GET, OPTIONS"));
    builder.insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, "Accept, Content-Type"));
    builder.insert_header((header::ACCESS_CONTROL_MAX_AGE, "86400"));
}

/// Served as JSON whatever the Accept header says (clients send all sorts), with CORS so
/// browser apps can discover it.
pub async fn smart_configuration_endpoint(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, OAuthError> {
    let tenant = TenantId::parse(&path.into_inner())
        .map_err(|_| OAuthError::invalid_request("unknown tenant"))?;
    let mut builder = HttpResponse::Ok();
    cors(&mut builder);
    builder.insert_header((header::CACHE_CONTROL, "public, max-age=300"));
    let mut document = smart_configuration(&state.fhir_base(&tenant));
    if crate::demo_ehr::plays_ehr(&state, &tenant) {
        crate::demo_ehr::extend_discovery(&mut document, &state.config.server.public_base_url);
    }
    Ok(builder
        .content_type("application/json")
        .body(document.to_string()))
}

pub async fn preflight() -> HttpResponse {
    let mut builder = HttpResponse::NoContent();
    cors(&mut builder);
    builder.finish()
}
