//! Reading a compact JWT's header and payload before its signature is checked — only to
//! choose how to check it (which issuer, key and algorithm). Nothing read here is trusted.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::Deserialize;

/// The JOSE header fields Hearth looks at.
#[derive(Debug, Clone, Deserialize)]
pub struct JoseHeader {
    pub alg: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub typ: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtShapeError {
    #[error("not a compact JWS (header.payload.signature)")]
    NotCompact,
    #[error("the JOSE header is not base64url JSON with an alg")]
    Header,
    #[error("the payload is not base64url JSON")]
    Payload,
}

fn parts(token: &str) -> Result<[&str; 3], JwtShapeError> {
    let mut it = token.split('.');
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some(h), Some(p), Some(s), None) if !h.is_empty() && !p.is_empty() => Ok([h, p, s]),
        _ => Err(JwtShapeError::NotCompact),
    }
}

pub fn header(token: &str) -> Result<JoseHeader, JwtShapeError> {
    let [h, _, _] = parts(token)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| JwtShapeError::Header)?;
    serde_json::from_slice(&bytes).map_err(|_| JwtShapeError::Header)
}

/// The claims, unverified.
pub fn payload<T: serde::de::DeserializeOwned>(token: &str) -> Result<T, JwtShapeError> {
    let [_, p, _] = parts(token)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(p)
        .map_err(|_| JwtShapeError::Payload)?;
    serde_json::from_slice(&bytes).map_err(|_| JwtShapeError::Payload)
}

/// An asymmetric algorithm from the allow-list, or `None`. `none` and the HMAC family are
/// never accepted: a verifier that takes HS256 can be fed a token "signed" with its own
/// public key.
pub fn allowed_algorithm(alg: &str, allow: &[Algorithm]) -> Option<Algorithm> {
    let parsed = match alg {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        _ => return None,
    };
    allow.contains(&parsed).then_some(parsed)
}

/// Does the JWK suit the algorithm (key type and curve, and its own `alg` if it names one)?
pub fn key_suits(jwk: &serde_json::Value, alg: Algorithm, alg_name: &str) -> bool {
    let field = |k: &str| jwk.get(k).and_then(|v| v.as_str());
    if field("alg").is_some_and(|a| a != alg_name) {
        return false;
    }
    if field("use").is_some_and(|u| u != "sig") {
        return false;
    }
    match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => field("kty") == Some("RSA"),
        Algorithm::ES256 => field("kty") == Some("EC") && field("crv") == Some("P-256"),
        Algorithm::ES384 => field("kty") == Some("EC") && field("crv") == Some("P-384"),
        _ => false,
    }
}

/// The key with `kid` in a JWKS document (or its only key when the token names none).
pub fn find_key<'a>(
    jwks: &'a serde_json::Value,
    kid: Option<&str>,
) -> Option<&'a serde_json::Value> {
    let keys = jwks.get("keys")?.as_array()?;
    match kid {
        Some(kid) => keys
            .iter()
            .find(|k| k.get("kid").and_then(|v| v.as_str()) == Some(kid)),
        None if keys.len() == 1 => keys.first(),
        None => None,
    }
}

/// The key with `kid` in `jwks` that suits `alg` (type, curve, its own `alg`).
pub fn suitable_key(
    jwks: &serde_json::Value,
    kid: Option<&str>,
    alg: Algorithm,
    alg_name: &str,
) -> Option<serde_json::Value> {
    find_key(jwks, kid)
        .filter(|k| key_suits(k, alg, alg_name))
        .cloned()
}

/// A verification key from a JWK, or `None` when it is not one.
pub fn decoding_key(jwk: serde_json::Value) -> Option<jsonwebtoken::DecodingKey> {
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk).ok()?;
    jsonwebtoken::DecodingKey::from_jwk(&jwk).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_and_hmac_are_never_allowed() {
        let all = [Algorithm::RS384, Algorithm::ES384, Algorithm::HS256];
        assert_eq!(allowed_algorithm("none", &all), None);
        assert_eq!(allowed_algorithm("HS256", &all), None);
        assert_eq!(allowed_algorithm("RS384", &all), Some(Algorithm::RS384));
        assert_eq!(allowed_algorithm("RS256", &all), None);
    }

    #[test]
    fn shapes() {
        assert_eq!(header("a.b").err(), Some(JwtShapeError::NotCompact));
        assert_eq!(header("!.b.c").err(), Some(JwtShapeError::Header));
        let h = URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#);
        assert_eq!(
            header(&format!("{h}.e30.")).map(|h| h.alg),
            Ok("none".to_owned())
        );
    }
}
