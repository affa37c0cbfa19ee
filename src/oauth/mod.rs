//! Hearth's authorization-server endpoints, per tenant under `/fhir/{tenant}`: SMART
//! discovery, the Backend Services token endpoint, introspection (RFC 7662), revocation
//! (RFC 7009) and the JWKS of Hearth's token-signing keys. HTTP only: the checks live in
//! `auth`. Errors are RFC 6749 JSON (`error`, `error_description`), not OperationOutcome.

mod discovery;
mod token;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, web};
use serde_json::json;

pub use discovery::{SMART_CAPABILITIES, smart_configuration};

/// Register the endpoints. They must come before the FHIR scope, whose `/{type}/{id}`
/// pattern would otherwise take `/.well-known/smart-configuration`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/fhir/{tenant}/.well-known/smart-configuration")
            .route(web::get().to(discovery::smart_configuration_endpoint))
            .route(web::method(actix_web::http::Method::OPTIONS).to(discovery::preflight))
            .default_service(web::to(|| async {
                oauth_error_response(OAuthError::method())
            })),
    )
    .service(
        web::resource("/fhir/{tenant}/auth/token")
            .route(web::post().to(token::token))
            .default_service(web::to(|| async {
                oauth_error_response(OAuthError::method())
            })),
    )
    .service(
        web::resource("/fhir/{tenant}/auth/introspect")
            .route(web::post().to(token::introspect))
            .default_service(web::to(|| async {
                oauth_error_response(OAuthError::method())
            })),
    )
    .service(
        web::resource("/fhir/{tenant}/auth/revoke")
            .route(web::post().to(token::revoke))
            .default_service(web::to(|| async {
                oauth_error_response(OAuthError::method())
            })),
    )
    .service(
        web::resource("/fhir/{tenant}/auth/jwks")
            .route(web::get().to(token::jwks))
            .default_service(web::to(|| async {
                oauth_error_response(OAuthError::method())
            })),
    );
}

/// The URLs of a tenant's authorization endpoints.
pub struct Endpoints {
    pub token: String,
    pub introspect: String,
    pub revoke: String,
    pub jwks: String,
}

impl Endpoints {
    pub fn for_base(fhir_base: &str) -> Endpoints {
        Endpoints {
            token: format!("{fhir_base}/auth/token"),
            introspect: format!("{fhir_base}/auth/introspect"),
            revoke: format!("{fhir_base}/auth/revoke"),
            jwks: format!("{fhir_base}/auth/jwks"),
        }
    }
}

/// An RFC 6749 section 5.2 error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub status: StatusCode,
    pub code: &'static str,
    pub description: String,
}

impl OAuthError {
    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }
    pub fn invalid_client(description: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", description)
    }
    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
    }
    pub fn invalid_scope(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_scope", description)
    }
    pub fn unsupported_grant_type(description: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            description,
        )
    }
    pub fn unauthorized_client(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "unauthorized_client", description)
    }
    pub fn server_error() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal error; the request id in X-Request-Id identifies it in the server log",
        )
    }
    fn method() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            "method not allowed",
        )
    }
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        description: impl Into<String>,
    ) -> Self {
        OAuthError {
            status,
            code,
            description: description.into(),
        }
    }
}

/// Responses carrying tokens or token state are never cached (RFC 6749 5.1).
pub fn no_store(builder: &mut actix_web::HttpResponseBuilder) {
    builder.insert_header((header::CACHE_CONTROL, "no-store"));
    builder.insert_header((header::PRAGMA, "no-cache"));
}

pub fn oauth_error_response(e: OAuthError) -> HttpResponse {
    let mut builder = HttpResponse::build(e.status);
    no_store(&mut builder);
    if e.status == StatusCode::UNAUTHORIZED {
        builder.insert_header((header::WWW_AUTHENTICATE, "private_key_jwt"));
    }
    builder
        .content_type("application/json")
        .body(json!({"error": e.code, "error_description": e.description}).to_string())
}

impl std::fmt::Display for OAuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.description)
    }
}

impl actix_web::ResponseError for OAuthError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        oauth_error_response(self.clone())
    }
}
