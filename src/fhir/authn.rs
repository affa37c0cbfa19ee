//! The bearer-token extractor: every FHIR handler but `metadata` takes a [`Principal`].

use std::future::Future;
use std::pin::Pin;

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};

use super::outcome::FhirError;
use crate::auth::{Interaction, Principal, TokenError};
use crate::state::AppState;
use crate::tenant::TenantId;

/// The caller, authenticated for the tenant named in the URL.
pub struct Authenticated(pub Principal);

impl Authenticated {
    /// 403 unless the token's scopes grant `interaction` on `resource_type`.
    pub fn require(&self, resource_type: &str, interaction: Interaction) -> Result<(), FhirError> {
        if self.0.scopes.permits(resource_type, interaction) {
            Ok(())
        } else {
            Err(FhirError::forbidden(format!(
                "the token's scopes do not allow {interaction:?} on {resource_type}"
            )))
        }
    }
}

fn bearer_token(req: &HttpRequest) -> Result<String, FhirError> {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| FhirError::unauthorized("invalid_request", "a bearer token is required"))?;
    let text = value.to_str().map_err(|_| {
        FhirError::unauthorized("invalid_request", "malformed Authorization header")
    })?;
    match text.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim().to_owned())
        }
        _ => Err(FhirError::unauthorized(
            "invalid_request",
            "the Authorization header must be 'Bearer <token>'",
        )),
    }
}

impl FromRequest for Authenticated {
    type Error = FhirError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, FhirError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = req
                .app_data::<web::Data<AppState>>()
                .ok_or_else(FhirError::internal)?
                .clone();
            let tenant = req
                .match_info()
                .get("tenant")
                .and_then(|t| TenantId::parse(t).ok())
                .ok_or_else(|| FhirError::not_found("unknown tenant"))?;
            let token = bearer_token(&req)?;
            let claims = state
                .tokens
                .verify(&token, &tenant, |t| state.fhir_base(t))
                .await
                .map_err(|e| match e {
                    TokenError::WrongTenant => {
                        FhirError::forbidden("the token was issued for another tenant")
                    }
                    TokenError::Expired => {
                        FhirError::unauthorized("invalid_token", "the token has expired")
                    }
                    TokenError::Store(store) => FhirError::from(store),
                    _ => FhirError::unauthorized("invalid_token", "the token is not valid"),
                })?;
            Ok(Authenticated(Principal::from_claims(tenant, claims)))
        })
    }
}
