//! Access tokens from a tenant's identity providers (user-facing apps). A provider is
//! trusted per tenant by its OIDC discovery URL; its tokens are JWTs checked against the
//! JWKS its discovery document names: signature, `iss`, `aud`, `exp`, `nbf`, and an
//! asymmetric-only algorithm allow-list.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, Validation};
use openidconnect::core::CoreProviderMetadata;
use serde::Deserialize;

use super::fetch::DocumentFetcher;
use super::jwt;
use super::tokens::TokenError;
use crate::store::{Store, TrustedIssuerRow};
use crate::tenant::TenantId;

/// Signature algorithms accepted from identity providers.
pub const IDP_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// How long a tenant's list of trusted issuers is cached.
const ISSUERS_TTL: Duration = Duration::from_secs(30);

/// The claims Hearth uses from an identity provider's access token.
#[derive(Debug, Clone, Deserialize)]
pub struct ExternalClaims {
    pub iss: String,
    pub sub: String,
    pub exp: i64,
    #[serde(default)]
    pub jti: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    /// Space-separated (RFC 9068 `scope`), or
    #[serde(default)]
    pub scope: Option<String>,
    /// a list (`scp`, as some providers send).
    #[serde(default)]
    pub scp: Option<Vec<String>>,
    /// SMART launch context: the patient in context.
    #[serde(default)]
    pub patient: Option<String>,
    /// Every other claim, for the configured fhirUser claim name.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

impl ExternalClaims {
    pub fn scope_text(&self) -> String {
        match (&self.scope, &self.scp) {
            (Some(s), _) => s.clone(),
            (None, Some(list)) => list.join(" "),
            (None, None) => String::new(),
        }
    }
}

/// A verified identity-provider token.
#[derive(Debug, Clone)]
pub struct ExternalToken {
    pub claims: ExternalClaims,
    /// The user as a FHIR reference (`Practitioner/123`), from the configured claim.
    pub fhir_user: Option<String>,
}

pub struct IdentityProviders {
    store: Store,
    issuers: RwLock<HashMap<TenantId, (Vec<TrustedIssuerRow>, Instant)>>,
}

/// The issuer and JWKS URL from a provider's discovery document, checked against the
/// OpenID Connect Discovery rules by `openidconnect`'s metadata type.
pub fn read_discovery(document: &serde_json::Value) -> Result<(String, String), TokenError> {
    let metadata: CoreProviderMetadata = serde_json::from_value(document.clone())
        .map_err(|e| TokenError::Keys(format!("discovery document: {e}")))?;
    Ok((
        metadata.issuer().as_str().to_owned(),
        metadata.jwks_uri().url().as_str().to_owned(),
    ))
}

impl IdentityProviders {
    pub fn new(store: Store) -> Self {
        IdentityProviders {
            store,
            issuers: RwLock::new(HashMap::new()),
        }
    }

    async fn trusted(
        &self,
        tenant: &TenantId,
        iss: &str,
    ) -> Result<Option<TrustedIssuerRow>, TokenError> {
        let cached = self.issuers.read().ok().and_then(|c| {
            c.get(tenant)
                .filter(|(_, at)| at.elapsed() < ISSUERS_TTL)
                .map(|(rows, _)| rows.clone())
        });
        let rows = match cached {
            Some(rows) => rows,
            None => {
                let rows = self.store.trusted_issuers(tenant).await?;
                if let Ok(mut c) = self.issuers.write() {
                    c.insert(tenant.clone(), (rows.clone(), Instant::now()));
                }
                rows
            }
        };
        Ok(rows.into_iter().find(|r| r.issuer == iss))
    }

    /// Verify an identity provider's access token presented to `tenant`.
    pub async fn verify(
        &self,
        fetcher: &DocumentFetcher,
        token: &str,
        tenant: &TenantId,
        fhir_base: &str,
        clock_skew_secs: u64,
    ) -> Result<ExternalToken, TokenError> {
        let header = jwt::header(token).map_err(|_| TokenError::Malformed)?;
        let alg = jwt::allowed_algorithm(&header.alg, IDP_ALGORITHMS)
            .ok_or_else(|| TokenError::Algorithm(header.alg.clone()))?;
        #[derive(Deserialize)]
        struct Iss {
            iss: String,
        }
        let iss = jwt::payload::<Iss>(token)
            .map_err(|_| TokenError::Malformed)?
            .iss;
        let trusted = self
            .trusted(tenant, &iss)
            .await?
            .ok_or(TokenError::UntrustedIssuer)?;
        let discovery = fetcher
            .get(&trusted.discovery_url)
            .await
            .map_err(|e| TokenError::Keys(e.to_string()))?;
        let (issuer, jwks_uri) = read_discovery(&discovery)?;
        if issuer != trusted.issuer {
            return Err(TokenError::Keys(
                "the discovery document names another issuer".into(),
            ));
        }
        let jwk = fetcher
            .key(&jwks_uri, header.kid.as_deref(), alg, &header.alg)
            .await
            .map_err(|e| TokenError::Keys(e.to_string()))?
            .ok_or(TokenError::UnknownKey)?;
        let key = jwt::decoding_key(jwk).ok_or(TokenError::UnknownKey)?;
        let audience = trusted.audience.as_deref().unwrap_or(fhir_base);
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[&trusted.issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = clock_skew_secs;
        let claims = jsonwebtoken::decode::<ExternalClaims>(token, &key, &validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::ExpiredSignature => TokenError::Expired,
                    ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                    _ => TokenError::Invalid(e.to_string()),
                }
            })?
            .claims;
        let fhir_user = claims
            .other
            .get(&trusted.fhir_user_claim)
            .and_then(|v| v.as_str())
            .and_then(|v| local_user_reference(v, fhir_base));
        Ok(ExternalToken { claims, fhir_user })
    }
}

/// The user types a `fhirUser` claim may name (SMART App Launch).
const USER_TYPES: &[&str] = &[
    "Practitioner",
    "PractitionerRole",
    "Patient",
    "RelatedPerson",
    "Person",
];

/// `Practitioner/123` from a `fhirUser` value that is relative or on this tenant's base;
/// `None` for anything else (a user on another server is not one of ours).
pub fn local_user_reference(value: &str, fhir_base: &str) -> Option<String> {
    let relative = match value.strip_prefix(fhir_base) {
        Some(rest) => rest.strip_prefix('/')?,
        None if value.contains("://") => return None,
        None => value,
    };
    let (resource_type, id) = relative.split_once('/')?;
    let valid_id = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    (USER_TYPES.contains(&resource_type) && valid_id).then(|| format!("{resource_type}/{id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fhir_user_must_be_local() {
        let base = "https://h.example/fhir/t1";
        assert_eq!(
            local_user_reference("Practitioner/p1", base).as_deref(),
            Some("Practitioner/p1")
        );
        assert_eq!(
            local_user_reference("https://h.example/fhir/t1/Patient/x", base).as_deref(),
            Some("Patient/x")
        );
        assert_eq!(
            local_user_reference("https://other/fhir/Patient/x", base),
            None
        );
        assert_eq!(
            local_user_reference("https://h.example/fhir/t10/Patient/x", base),
            None
        );
        assert_eq!(local_user_reference("Observation/1", base), None);
        assert_eq!(local_user_reference("Patient/a b", base), None);
    }
}
