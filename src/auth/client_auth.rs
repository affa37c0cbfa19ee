//! SMART Backend Services client authentication: a `private_key_jwt` client assertion
//! (RFC 7523), checked against the keys the client registered (inline JWKS or a JWKS URL).

use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

use super::fetch::DocumentFetcher;
use super::jwt;
use crate::store::{ClientRow, Store, StoreError};
use crate::tenant::TenantId;

/// The assertion type SMART requires.
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// SMART Backend Services: signatures Hearth must accept.
pub const ASSERTION_ALGORITHMS: &[Algorithm] = &[Algorithm::RS384, Algorithm::ES384];
/// An assertion may live at most five minutes.
pub const MAX_ASSERTION_LIFETIME_SECS: i64 = 300;

/// Why a client assertion was refused. Every case is `invalid_client` on the wire
/// (RFC 7523 3.2); the description says which check failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientAuthError {
    #[error("client_assertion is not a JWT: {0}")]
    Malformed(#[from] jwt::JwtShapeError),
    #[error("the assertion's alg {0} is not accepted (use RS384 or ES384)")]
    Algorithm(String),
    #[error("the assertion header must carry a kid")]
    NoKid,
    #[error("the assertion header must carry typ JWT")]
    Typ,
    #[error("the assertion's iss and sub must both be the client id")]
    IssuerSubject,
    #[error("client_id does not match the assertion's iss")]
    ClientIdMismatch,
    #[error("no such client is registered for this tenant")]
    UnknownClient,
    #[error("the client is disabled")]
    Disabled,
    #[error("the client's keys could not be fetched: {0}")]
    Keys(String),
    #[error("no registered key of the client has kid {0} and suits the algorithm")]
    UnknownKid(String),
    #[error("the assertion's signature does not verify")]
    Signature,
    #[error("the assertion's aud must be the token endpoint URL")]
    Audience,
    #[error("the assertion has expired")]
    Expired,
    #[error("the assertion's exp is more than five minutes away")]
    ExpTooFar,
    #[error("the assertion must carry exp and jti")]
    MissingClaims,
    #[error("the assertion is not yet valid")]
    NotYetValid,
    #[error("the assertion's jti has been used before")]
    Replayed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default)]
    jti: Option<String>,
}

/// Authenticate a client by its assertion, for the token (or introspection/revocation)
/// endpoint at `endpoint_url`. `client_id` is the form parameter, if sent.
pub async fn authenticate_client(
    store: &Store,
    fetcher: &DocumentFetcher,
    tenant: &TenantId,
    endpoint_urls: &[&str],
    assertion: &str,
    client_id: Option<&str>,
    clock_skew_secs: i64,
) -> Result<ClientRow, ClientAuthError> {
    let header = jwt::header(assertion)?;
    let alg = jwt::allowed_algorithm(&header.alg, ASSERTION_ALGORITHMS)
        .ok_or_else(|| ClientAuthError::Algorithm(header.alg.clone()))?;
    let kid = header.kid.clone().ok_or(ClientAuthError::NoKid)?;
    if !header
        .typ
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("JWT"))
    {
        return Err(ClientAuthError::Typ);
    }
    let unverified: AssertionClaims = jwt::payload(assertion)?;
    if unverified.iss != unverified.sub {
        return Err(ClientAuthError::IssuerSubject);
    }
    if client_id.is_some_and(|c| c != unverified.iss) {
        return Err(ClientAuthError::ClientIdMismatch);
    }
    let client = store
        .client(tenant, &unverified.iss)
        .await?
        .ok_or(ClientAuthError::UnknownClient)?;
    if client.disabled {
        return Err(ClientAuthError::Disabled);
    }
    let jwk = client_key(fetcher, &client, &kid, alg, &header.alg).await?;
    let key = jwt::decoding_key(jwk).ok_or_else(|| ClientAuthError::UnknownKid(kid.clone()))?;

    let mut validation = Validation::new(alg);
    validation.set_issuer(&[&client.client_id]);
    validation.sub = Some(client.client_id.clone());
    validation.set_audience(endpoint_urls);
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    validation.leeway = u64::try_from(clock_skew_secs).unwrap_or(0);
    validation.validate_nbf = true;
    let verified = jsonwebtoken::decode::<AssertionClaims>(assertion, &key, &validation)
        .map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::InvalidSignature => ClientAuthError::Signature,
                ErrorKind::ExpiredSignature => ClientAuthError::Expired,
                ErrorKind::ImmatureSignature => ClientAuthError::NotYetValid,
                ErrorKind::InvalidAudience => ClientAuthError::Audience,
                ErrorKind::InvalidIssuer | ErrorKind::InvalidSubject => {
                    ClientAuthError::IssuerSubject
                }
                ErrorKind::MissingRequiredClaim(_) => ClientAuthError::MissingClaims,
                _ => ClientAuthError::Signature,
            }
        })?
        .claims;
    let now = chrono::Utc::now().timestamp();
    let exp = verified.exp.ok_or(ClientAuthError::MissingClaims)?;
    if exp > now + MAX_ASSERTION_LIFETIME_SECS + clock_skew_secs {
        return Err(ClientAuthError::ExpTooFar);
    }
    let jti = verified
        .jti
        .filter(|j| !j.is_empty())
        .ok_or(ClientAuthError::MissingClaims)?;
    // Remembered until the assertion expires (plus the leeway it was judged with).
    let keep_until = chrono::DateTime::from_timestamp(exp + clock_skew_secs, 0).unwrap_or_default();
    if !store
        .use_assertion_jti(tenant, &client.client_id, &jti, keep_until)
        .await?
    {
        return Err(ClientAuthError::Replayed);
    }
    Ok(client)
}

/// The client's key for `kid`: from its inline JWKS, or from its JWKS URL (refetched once,
/// rate-limited, when the kid is not in the cached copy: the client may have rotated).
async fn client_key(
    fetcher: &DocumentFetcher,
    client: &ClientRow,
    kid: &str,
    alg: Algorithm,
    alg_name: &str,
) -> Result<serde_json::Value, ClientAuthError> {
    let key = match (&client.jwks, client.jwks_url.as_deref()) {
        (Some(jwks), _) => jwt::suitable_key(jwks, Some(kid), alg, alg_name),
        (None, Some(url)) => fetcher
            .key(url, Some(kid), alg, alg_name)
            .await
            .map_err(|e| ClientAuthError::Keys(e.to_string()))?,
        (None, None) => return Err(ClientAuthError::Keys("no keys registered".into())),
    };
    key.ok_or_else(|| ClientAuthError::UnknownKid(kid.to_owned()))
}
