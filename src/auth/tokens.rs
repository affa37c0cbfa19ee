//! Hearth's own access tokens: ES256 JWTs signed with a per-tenant key kept in the database.

use std::collections::HashMap;
use std::sync::RwLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use p256::elliptic_curve::rand_core::OsRng;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::{SigningKeyRow, Store, StoreError};
use crate::tenant::TenantId;

const ALG: &str = "ES256";

/// The claims of a Hearth access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub scope: String,
    /// The tenant the token is for; must equal the tenant in the URL.
    pub hearth_tenant: String,
    /// The OAuth client the token was issued to (Backend Services).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The user as a FHIR reference (tokens minted by an operator with `--fhir-user`).
    #[serde(default, rename = "fhirUser", skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
    /// Launch context: the patient `patient/` scopes are confined to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    /// The Group whose members confine a Backend Services client (from its registration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hearth_patient_group: Option<String>,
}

impl AccessClaims {
    /// A token of `tenant` for `subject`, issued and audienced by the tenant's FHIR base,
    /// valid `ttl_secs` from now, with a fresh jti.
    fn new(tenant: &TenantId, fhir_base: &str, subject: &str, scope: &str, ttl_secs: u64) -> Self {
        let now = chrono::Utc::now().timestamp();
        AccessClaims {
            iss: fhir_base.to_owned(),
            sub: subject.to_owned(),
            aud: fhir_base.to_owned(),
            exp: now.saturating_add(i64::try_from(ttl_secs).unwrap_or(i64::MAX / 2)),
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
            scope: scope.to_owned(),
            hearth_tenant: tenant.to_string(),
            client_id: None,
            fhir_user: None,
            patient: None,
            hearth_patient_group: None,
        }
    }
}

/// Who a minted token speaks for, beyond its subject.
#[derive(Debug, Clone, Default)]
pub struct TokenContext {
    pub fhir_user: Option<String>,
    pub patient: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token's signing key is unknown")]
    UnknownKey,
    #[error("the token is invalid: {0}")]
    Invalid(String),
    #[error("the token has expired")]
    Expired,
    #[error("the token was issued for another tenant")]
    WrongTenant,
    #[error("the token has been revoked")]
    Revoked,
    #[error("the token's issuer is not trusted by this tenant")]
    UntrustedIssuer,
    #[error("the token's algorithm {0} is not accepted")]
    Algorithm(String),
    #[error("the token is not yet valid")]
    NotYetValid,
    #[error("the identity provider's keys are unavailable: {0}")]
    Keys(String),
    #[error("key error: {0}")]
    Key(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Generate a P-256 key; the kid is its RFC 7638 JWK thumbprint.
pub fn generate_signing_key() -> Result<SigningKeyRow, TokenError> {
    let secret = p256::SecretKey::random(&mut OsRng);
    let pem = secret
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| TokenError::Key(e.to_string()))?;
    let (kid, public_jwk) = ec_public_jwk(&secret.public_key().to_jwk_string(), ALG)?;
    Ok(SigningKeyRow {
        kid,
        alg: ALG.to_owned(),
        private_key_pem: pem.to_string(),
        public_jwk,
    })
}

/// An EC public key's JWK as published (`kid` = its RFC 7638 thumbprint, `alg`, `use`),
/// from the JWK text the curve crate writes.
pub fn ec_public_jwk(jwk_text: &str, alg: &str) -> Result<(String, serde_json::Value), TokenError> {
    let jwk: serde_json::Value =
        serde_json::from_str(jwk_text).map_err(|e| TokenError::Key(e.to_string()))?;
    let field = |name: &str| {
        jwk.get(name)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let thumbprint_input = format!(
        r#"{{"crv":"{}","kty":"{}","x":"{}","y":"{}"}}"#,
        field("crv"),
        field("kty"),
        field("x"),
        field("y")
    );
    let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(thumbprint_input.as_bytes()));
    let public_jwk = serde_json::json!({
        "kty": field("kty"), "crv": field("crv"), "x": field("x"), "y": field("y"),
        "kid": kid, "alg": alg, "use": "sig",
    });
    Ok((kid, public_jwk))
}

/// How long a verified token is remembered, at most (never past its `exp`). A revocation on
/// another server reaches this one within this time; on this server, at once.
const VERIFIED_TTL_SECS: i64 = 15;
/// Bound on remembered tokens; the cache is cleared when full.
const VERIFIED_MAX: usize = 10_000;

/// Signs and verifies Hearth tokens; caches verification keys per tenant and kid, and
/// recently verified tokens (an ES256 verification costs more than the database read it
/// guards).
pub struct TokenService {
    store: Store,
    verifying_keys: RwLock<HashMap<(TenantId, String), DecodingKey>>,
    verified: RwLock<HashMap<String, (AccessClaims, i64)>>,
    clock_skew_secs: u64,
}

impl TokenService {
    pub fn new(store: Store) -> Self {
        TokenService {
            store,
            verifying_keys: RwLock::new(HashMap::new()),
            verified: RwLock::new(HashMap::new()),
            clock_skew_secs: 30,
        }
    }

    /// Leeway on `exp` when verifying (default 30 s).
    pub fn with_clock_skew(mut self, secs: u64) -> Self {
        self.clock_skew_secs = secs;
        self
    }

    /// The tenant's newest signing key, generated and stored on first use.
    async fn signing_key(&self, tenant: &TenantId) -> Result<SigningKeyRow, TokenError> {
        if let Some(key) = self.store.signing_keys(tenant).await?.into_iter().next() {
            return Ok(key);
        }
        let key = generate_signing_key()?;
        self.store.insert_signing_key(tenant, &key).await?;
        Ok(key)
    }

    /// Mint a token for `tenant`, for `audience` (the tenant's FHIR base, also the issuer).
    pub async fn mint(
        &self,
        tenant: &TenantId,
        fhir_base: &str,
        subject: &str,
        scope: &str,
        ttl_secs: u64,
    ) -> Result<String, TokenError> {
        self.mint_with(
            tenant,
            fhir_base,
            subject,
            scope,
            ttl_secs,
            TokenContext::default(),
        )
        .await
    }

    /// [`TokenService::mint`] for a user and/or a patient in context.
    pub async fn mint_with(
        &self,
        tenant: &TenantId,
        fhir_base: &str,
        subject: &str,
        scope: &str,
        ttl_secs: u64,
        context: TokenContext,
    ) -> Result<String, TokenError> {
        let mut claims = AccessClaims::new(tenant, fhir_base, subject, scope, ttl_secs);
        claims.fhir_user = context.fhir_user;
        claims.patient = context.patient;
        self.sign(tenant, &claims).await
    }

    /// Mint a Backend Services access token for a client (confined to `patient_group`'s
    /// members when the registration says so).
    pub async fn mint_for_client(
        &self,
        tenant: &TenantId,
        fhir_base: &str,
        client_id: &str,
        scope: &str,
        ttl_secs: u64,
        patient_group: Option<&str>,
    ) -> Result<(String, AccessClaims), TokenError> {
        let mut claims = AccessClaims::new(tenant, fhir_base, client_id, scope, ttl_secs);
        claims.client_id = Some(client_id.to_owned());
        claims.hearth_patient_group = patient_group.map(str::to_owned);
        let token = self.sign(tenant, &claims).await?;
        Ok((token, claims))
    }

    async fn sign(&self, tenant: &TenantId, claims: &AccessClaims) -> Result<String, TokenError> {
        self.sign_jwt(tenant, claims, "at+jwt").await
    }

    /// An OpenID Connect ID token signed with the tenant's key (the demo EHR's logins).
    pub async fn sign_id_token(
        &self,
        tenant: &TenantId,
        claims: &serde_json::Value,
    ) -> Result<String, TokenError> {
        self.sign_jwt(tenant, claims, "JWT").await
    }

    async fn sign_jwt<T: serde::Serialize>(
        &self,
        tenant: &TenantId,
        claims: &T,
        typ: &str,
    ) -> Result<String, TokenError> {
        let key = self.signing_key(tenant).await?;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(key.kid.clone());
        header.typ = Some(typ.to_owned());
        let encoding = EncodingKey::from_ec_pem(key.private_key_pem.as_bytes())
            .map_err(|e| TokenError::Key(e.to_string()))?;
        jsonwebtoken::encode(&header, claims, &encoding).map_err(|e| TokenError::Key(e.to_string()))
    }

    /// The tenant's public keys as a JWKS document (what `jwks_uri` serves).
    pub async fn jwks(&self, tenant: &TenantId) -> Result<serde_json::Value, TokenError> {
        // Make sure there is a key to publish before the first token is minted.
        self.signing_key(tenant).await?;
        let keys: Vec<serde_json::Value> = self
            .store
            .signing_keys(tenant)
            .await?
            .into_iter()
            .map(|k| k.public_jwk)
            .collect();
        Ok(serde_json::json!({ "keys": keys }))
    }

    async fn verifying_key(&self, tenant: &TenantId, kid: &str) -> Result<DecodingKey, TokenError> {
        let cache_key = (tenant.clone(), kid.to_owned());
        if let Ok(cache) = self.verifying_keys.read()
            && let Some(key) = cache.get(&cache_key)
        {
            return Ok(key.clone());
        }
        let row = self
            .store
            .signing_keys(tenant)
            .await?
            .into_iter()
            .find(|k| k.kid == kid)
            .ok_or(TokenError::UnknownKey)?;
        let key = public_decoding_key(&row).map_err(|e| TokenError::Key(e.to_string()))?;
        if let Ok(mut cache) = self.verifying_keys.write() {
            cache.insert(cache_key, key.clone());
        }
        Ok(key)
    }

    /// Verify a bearer token presented to `url_tenant`, whose FHIR base is `fhir_base`.
    pub async fn verify(
        &self,
        token: &str,
        url_tenant: &TenantId,
        fhir_base_of: impl Fn(&TenantId) -> String,
    ) -> Result<AccessClaims, TokenError> {
        let now = chrono::Utc::now().timestamp();
        let remembered = self
            .verified
            .read()
            .ok()
            .and_then(|cache| cache.get(token).cloned());
        let claims = match remembered {
            Some((claims, until)) if now < until => claims,
            _ => {
                let claims = self.verify_signature(token, &fhir_base_of).await?;
                let tenant = TenantId::parse(&claims.hearth_tenant)
                    .map_err(|_| TokenError::Invalid("bad tenant claim".into()))?;
                if self.store.is_token_revoked(&tenant, &claims.jti).await? {
                    return Err(TokenError::Revoked);
                }
                let until = (now + VERIFIED_TTL_SECS).min(claims.exp);
                if let Ok(mut cache) = self.verified.write() {
                    if cache.len() >= VERIFIED_MAX {
                        cache.clear();
                    }
                    cache.insert(token.to_owned(), (claims.clone(), until));
                }
                claims
            }
        };
        if claims.hearth_tenant != url_tenant.as_str() {
            return Err(TokenError::WrongTenant);
        }
        Ok(claims)
    }

    /// Revoke a Hearth token (RFC 7009): recorded until it would have expired, and
    /// forgotten by this server's verified-token cache at once.
    pub async fn revoke(&self, token: &str, claims: &AccessClaims) -> Result<(), TokenError> {
        let tenant = TenantId::parse(&claims.hearth_tenant)
            .map_err(|_| TokenError::Invalid("bad tenant claim".into()))?;
        let expires = chrono::DateTime::from_timestamp(claims.exp, 0).unwrap_or_default();
        self.store
            .revoke_token(&tenant, &claims.jti, expires)
            .await?;
        if let Ok(mut cache) = self.verified.write() {
            cache.remove(token);
        }
        Ok(())
    }

    async fn verify_signature(
        &self,
        token: &str,
        fhir_base_of: &impl Fn(&TenantId) -> String,
    ) -> Result<AccessClaims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::ES256 {
            return Err(TokenError::Invalid("unsupported alg".into()));
        }
        let kid = header.kid.ok_or(TokenError::Invalid("no kid".into()))?;
        // The key is looked up in the tenant the token claims; the signature then proves the
        // claim, and a verified token for another tenant is a 403, not a 401.
        let claimed = unverified_tenant(token)?;
        let key = self.verifying_key(&claimed, &kid).await?;
        let base = fhir_base_of(&claimed);
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[&base]);
        validation.set_audience(&[&base]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = self.clock_skew_secs;
        let data =
            jsonwebtoken::decode::<AccessClaims>(token, &key, &validation).map_err(|e| match e
                .kind()
            {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            })?;
        Ok(data.claims)
    }
}

fn public_decoding_key(row: &SigningKeyRow) -> Result<DecodingKey, jsonwebtoken::errors::Error> {
    let x = row
        .public_jwk
        .get("x")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    let y = row
        .public_jwk
        .get("y")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    DecodingKey::from_ec_components(x, y)
}

/// Does the token claim to be one of Hearth's own (rather than an identity provider's)?
pub fn claims_hearth_issuer(token: &str) -> bool {
    #[derive(Deserialize)]
    struct TenantClaim {
        #[serde(default)]
        hearth_tenant: Option<String>,
    }
    super::jwt::payload::<TenantClaim>(token).is_ok_and(|c| c.hearth_tenant.is_some())
}

fn unverified_tenant(token: &str) -> Result<TenantId, TokenError> {
    #[derive(Deserialize)]
    struct TenantClaim {
        hearth_tenant: String,
    }
    let payload = token.split('.').nth(1).ok_or(TokenError::Malformed)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::Malformed)?;
    let claim: TenantClaim = serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    TenantId::parse(&claim.hearth_tenant)
        .map_err(|_| TokenError::Invalid("bad tenant claim".into()))
}
