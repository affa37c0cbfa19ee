//! Checks on what operators register: a Backend Services client's keys and scopes, an
//! identity provider's discovery document.

use super::fetch::DocumentFetcher;
use super::scopes::{ResourceScope, ScopeContext};
use super::tokens::TokenError;

#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("the JWKS must be an object with a non-empty \"keys\" array")]
    NotJwks,
    #[error("key {0}: every key needs a kid")]
    NoKid(usize),
    #[error("key {0}: only RSA and EC (P-384/P-256) signature keys are accepted")]
    KeyType(usize),
    #[error("key {0} contains private key material; register the public key only")]
    PrivateKey(usize),
    #[error("scope {0} is not a system/ scope (Backend Services clients get system/ scopes)")]
    Scope(String),
    #[error("at least one scope is required")]
    NoScopes,
    #[error(transparent)]
    Url(#[from] super::fetch::FetchError),
    #[error(transparent)]
    Discovery(#[from] TokenError),
}

/// A client's inline JWKS: public signature keys with kids.
pub fn check_client_jwks(jwks: &serde_json::Value) -> Result<(), RegistrationError> {
    let keys = jwks
        .get("keys")
        .and_then(|k| k.as_array())
        .filter(|k| !k.is_empty())
        .ok_or(RegistrationError::NotJwks)?;
    for (i, key) in keys.iter().enumerate() {
        let field = |k: &str| key.get(k).and_then(|v| v.as_str());
        if field("kid").is_none_or(str::is_empty) {
            return Err(RegistrationError::NoKid(i));
        }
        if ["d", "p", "q", "dp", "dq", "qi", "k"]
            .iter()
            .any(|private| key.get(private).is_some())
        {
            return Err(RegistrationError::PrivateKey(i));
        }
        let ok = match field("kty") {
            Some("RSA") => field("n").is_some() && field("e").is_some(),
            Some("EC") => matches!(field("crv"), Some("P-384" | "P-256")),
            _ => false,
        };
        if !ok {
            return Err(RegistrationError::KeyType(i));
        }
    }
    Ok(())
}

/// The scopes a client may be granted, normalised to single spaces.
pub fn check_client_scopes(scopes: &str) -> Result<String, RegistrationError> {
    let mut out = Vec::new();
    for s in scopes.split_whitespace() {
        match ResourceScope::parse(s) {
            Some(r) if r.context == ScopeContext::System => out.push(s),
            _ => return Err(RegistrationError::Scope(s.to_owned())),
        }
    }
    if out.is_empty() {
        return Err(RegistrationError::NoScopes);
    }
    Ok(out.join(" "))
}

/// Fetch an identity provider's discovery document and return its issuer.
pub async fn discover_issuer(
    fetcher: &DocumentFetcher,
    discovery_url: &str,
) -> Result<String, RegistrationError> {
    let document = fetcher.get(discovery_url).await?;
    let (issuer, jwks_uri) = super::idp::read_discovery(&document)?;
    fetcher.check_url(&jwks_uri)?;
    Ok(issuer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn private_keys_and_keyless_sets_are_refused() {
        assert!(check_client_jwks(&json!({"keys": []})).is_err());
        assert!(matches!(
            check_client_jwks(
                &json!({"keys": [{"kty": "EC", "crv": "P-384", "x": "a", "y": "b", "d": "secret", "kid": "k"}]})
            ),
            Err(RegistrationError::PrivateKey(0))
        ));
        assert!(
            check_client_jwks(
                &json!({"keys": [{"kty": "EC", "crv": "P-384", "x": "a", "y": "b", "kid": "k"}]})
            )
            .is_ok()
        );
        assert!(matches!(
            check_client_jwks(&json!({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "k"}]})),
            Err(RegistrationError::PrivateKey(0))
        ));
    }

    #[test]
    fn clients_get_system_scopes_only() {
        assert_eq!(
            check_client_scopes(" system/*.rs  system/Observation.c ")
                .ok()
                .as_deref(),
            Some("system/*.rs system/Observation.c")
        );
        assert!(check_client_scopes("patient/*.rs").is_err());
        assert!(check_client_scopes("").is_err());
    }
}
