//! The bearer-token extractor: every FHIR handler but `metadata` takes an
//! [`Authenticated`] caller, and asks it (through `access`) what it may do and see.

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::pin::Pin;

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};

use super::outcome::FhirError;
use crate::access::{self, Visibility};
use crate::auth::{Interaction, Principal, TokenError, claims_hearth_issuer};
use crate::state::AppState;
use crate::store::{Store, StoredVersion};
use crate::tenant::TenantId;

/// The caller, authenticated for the tenant named in the URL.
pub struct Authenticated {
    pub principal: Principal,
    /// The tenant's FHIR base with a trailing slash.
    local_base: String,
}

impl Authenticated {
    pub fn tenant(&self) -> &TenantId {
        &self.principal.tenant
    }

    /// What of `resource_type` the caller may see for `interaction`; 403 if nothing.
    pub fn visibility(
        &self,
        resource_type: &str,
        interaction: Interaction,
    ) -> Result<Visibility, FhirError> {
        access::decide(
            &self.principal,
            resource_type,
            interaction,
            &self.local_base,
        )
        .map_err(|denied| FhirError::forbidden(denied.0))
    }

    /// 403 unless the token allows `interaction` on every resource of `resource_type`. The
    /// interactions that do not (yet) apply a compartment or granular filter — writes,
    /// conditional operations, Bundle entries — use this, so a filtered scope is refused
    /// there rather than silently widened.
    pub fn require(&self, resource_type: &str, interaction: Interaction) -> Result<(), FhirError> {
        match self.visibility(resource_type, interaction)? {
            Visibility::All => Ok(()),
            Visibility::Filtered(_) => Err(FhirError::forbidden(format!(
                "the token's scopes allow {interaction:?} on {resource_type} only within a patient compartment or granular criteria, which this interaction does not support"
            ))),
        }
    }
}

impl Authenticated {
    /// 403 unless the caller may see `resource_type/id` (judged on its current version).
    pub async fn check_visible(
        &self,
        store: &Store,
        visibility: &Visibility,
        resource_type: &str,
        id: &str,
    ) -> Result<(), FhirError> {
        let Visibility::Filtered(filter) = visibility else {
            return Ok(());
        };
        let ids = [id.to_owned()];
        let visible = store
            .visible_ids(self.tenant(), resource_type, &ids, filter)
            .await?;
        if visible.contains(id) {
            Ok(())
        } else {
            Err(FhirError::forbidden(format!(
                "{resource_type}/{id} is outside what the token's scopes allow (patient compartment or granular criteria)"
            )))
        }
    }

    /// Keep only the versions the caller may read, type by type.
    pub async fn retain_readable(
        &self,
        store: &Store,
        versions: &mut Vec<StoredVersion>,
    ) -> Result<(), FhirError> {
        let types: BTreeSet<String> = versions.iter().map(|v| v.resource_type.clone()).collect();
        let mut hidden: HashSet<(String, String)> = HashSet::new();
        for t in types {
            let of_type = versions.iter().filter(|v| v.resource_type == t);
            match access::decide(&self.principal, &t, Interaction::Read, &self.local_base) {
                Ok(Visibility::All) => {}
                Ok(Visibility::Filtered(filter)) => {
                    let ids: Vec<String> = of_type.map(|v| v.id.clone()).collect();
                    let visible = store.visible_ids(self.tenant(), &t, &ids, &filter).await?;
                    hidden.extend(
                        ids.into_iter()
                            .filter(|id| !visible.contains(id))
                            .map(|id| (t.clone(), id)),
                    );
                }
                Err(_) => hidden.extend(of_type.map(|v| (t.clone(), v.id.clone()))),
            }
        }
        versions.retain(|v| !hidden.contains(&(v.resource_type.clone(), v.id.clone())));
        Ok(())
    }
}

fn bearer_token(req: &HttpRequest) -> Result<String, FhirError> {
    // RFC 6750 allows a token in the query; Hearth does not: URLs are logged and cached.
    if req
        .query_string()
        .split('&')
        .any(|p| p.split('=').next() == Some("access_token"))
    {
        return Err(FhirError::unauthorized(
            "invalid_request",
            "send the token in the Authorization header; tokens in URLs are refused",
        ));
    }
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

/// The 401/403 for a token that did not verify. The description names the check, never
/// the token.
pub fn token_rejection(e: TokenError) -> FhirError {
    match e {
        TokenError::WrongTenant => FhirError::forbidden("the token was issued for another tenant"),
        TokenError::Expired => FhirError::unauthorized("invalid_token", "the token has expired"),
        TokenError::Revoked => {
            FhirError::unauthorized("invalid_token", "the token has been revoked")
        }
        TokenError::NotYetValid => {
            FhirError::unauthorized("invalid_token", "the token is not yet valid")
        }
        TokenError::UntrustedIssuer => FhirError::unauthorized(
            "invalid_token",
            "the token's issuer is not trusted by this tenant",
        ),
        TokenError::Algorithm(alg) => FhirError::unauthorized(
            "invalid_token",
            format!("the token's algorithm {alg} is not accepted"),
        ),
        TokenError::Store(store) => FhirError::from(store),
        TokenError::Keys(_) => FhirError::unauthorized(
            "invalid_token",
            "the identity provider's keys could not be obtained",
        ),
        _ => FhirError::unauthorized("invalid_token", "the token is not valid"),
    }
}

/// Verify a bearer token for `tenant`: Hearth's own, or a trusted identity provider's.
pub async fn authenticate(
    state: &AppState,
    tenant: &TenantId,
    token: &str,
) -> Result<Principal, TokenError> {
    let base = state.fhir_base(tenant);
    if claims_hearth_issuer(token) {
        let claims = state
            .tokens
            .verify(token, tenant, |t| state.fhir_base(t))
            .await?;
        Ok(Principal::from_claims(tenant.clone(), claims))
    } else {
        let skew = state.config.auth.clock_skew_secs;
        let external = state
            .identity_providers
            .verify(&state.key_documents, token, tenant, &base, skew)
            .await?;
        Ok(Principal::from_external(tenant.clone(), external))
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
            let principal = match authenticate(&state, &tenant, &token).await {
                Ok(p) => p,
                Err(e) => {
                    state.metrics.auth_failure(auth_failure_reason(&e));
                    return Err(token_rejection(e));
                }
            };
            let local_base = format!("{}/", state.fhir_base(&tenant));
            Ok(Authenticated {
                principal,
                local_base,
            })
        })
    }
}

/// A metrics label for a failed authentication (bounded set, no token content).
pub fn auth_failure_reason(e: &TokenError) -> &'static str {
    match e {
        TokenError::Malformed => "malformed",
        TokenError::UnknownKey => "unknown_key",
        TokenError::Invalid(_) => "invalid",
        TokenError::Expired => "expired",
        TokenError::WrongTenant => "wrong_tenant",
        TokenError::Revoked => "revoked",
        TokenError::UntrustedIssuer => "untrusted_issuer",
        TokenError::Algorithm(_) => "algorithm",
        TokenError::NotYetValid => "not_yet_valid",
        TokenError::Keys(_) => "keys_unavailable",
        TokenError::Key(_) | TokenError::Store(_) => "server_error",
    }
}
