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
    #[error("the EHR's FHIR base (iss) must be an absolute https URL without query or fragment")]
    Iss,
    #[error("frame ancestor {0} is not an origin (https://host[:port])")]
    FrameAncestor(String),
    #[error("client auth must be public or private-key-jwt")]
    ClientAuth,
    #[error("the EHR launch scopes must include launch, the standalone scopes launch/patient")]
    LaunchScope,
}

/// An EHR registration's URLs and scopes: `iss` absolute (https unless `allow_http`),
/// frame ancestors origins only (they go into a CSP header verbatim), launch scopes present.
pub fn check_ehr_registration(
    iss: &str,
    frame_ancestors: &[String],
    scopes: &str,
    standalone_scopes: &str,
    allow_http: bool,
) -> Result<(), RegistrationError> {
    let scheme_ok =
        |url: &str| url.starts_with("https://") || (allow_http && url.starts_with("http://"));
    let parsed = reqwest::Url::parse(iss).map_err(|_| RegistrationError::Iss)?;
    if !scheme_ok(iss)
        || parsed.query().is_some()
        || parsed.fragment().is_some()
        || !parsed.username().is_empty()
        || iss.chars().any(char::is_whitespace)
    {
        return Err(RegistrationError::Iss);
    }
    for ancestor in frame_ancestors {
        let is_origin = reqwest::Url::parse(ancestor).is_ok_and(|u| {
            scheme_ok(ancestor)
                && u.path() == "/"
                && !ancestor.ends_with('/')
                && u.query().is_none()
                && u.username().is_empty()
        });
        if !is_origin {
            return Err(RegistrationError::FrameAncestor(ancestor.clone()));
        }
    }
    let has = |list: &str, scope: &str| list.split_whitespace().any(|s| s == scope);
    if !has(scopes, "launch") || !has(standalone_scopes, "launch/patient") {
        return Err(RegistrationError::LaunchScope);
    }
    Ok(())
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

#[cfg(test)]
mod ehr_registration_tests {
    use super::*;

    #[test]
    fn ehr_registrations_need_https_bases_origin_ancestors_and_launch_scopes() {
        let ok = |iss: &str, anc: &[&str]| {
            let anc: Vec<String> = anc.iter().map(|s| s.to_string()).collect();
            check_ehr_registration(iss, &anc, "launch openid", "launch/patient openid", false)
        };
        assert!(
            ok(
                "https://ehr.example.org/api/FHIR/R4",
                &["https://ehr.example.org"]
            )
            .is_ok()
        );
        assert!(ok("http://ehr.example.org/R4", &[]).is_err());
        assert!(ok("https://ehr.example.org/R4?x=1", &[]).is_err());
        assert!(
            ok(
                "https://ehr.example.org/R4",
                &["https://ehr.example.org/path"]
            )
            .is_err()
        );
        assert!(
            ok(
                "https://ehr.example.org/R4",
                &["https://a.org; script-src *"]
            )
            .is_err()
        );
        assert!(ok("https://ehr.example.org/R4", &["*"]).is_err());
        assert!(
            check_ehr_registration("https://e/R4", &[], "openid", "launch/patient", false).is_err()
        );
    }
}
