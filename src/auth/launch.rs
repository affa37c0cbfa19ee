//! Hearth as a SMART App Launch client of an EHR (no HTTP server code here): discovery of
//! the EHR's endpoints, the authorize request (PKCE S256, `state`, `nonce`, `aud`,
//! `launch`), the code exchange and refresh (`oauth2`), ID-token validation
//! (`openidconnect`: signature by the EHR's JWKS, `iss`, `aud`, `nonce`, expiry) and the
//! `private_key_jwt` assertion signed with Hearth's key for that tenant.

use std::time::Duration;

use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, CsrfToken, EndpointNotSet, EndpointSet,
    ExtraTokenFields, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken,
    RequestTokenError, Scope, StandardRevocableToken, StandardTokenResponse, TokenResponse,
    TokenUrl,
};
use openidconnect::core::{
    CoreGenderClaim, CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
};
use openidconnect::{AdditionalClaims, IdToken, IdTokenVerifier, IssuerUrl, Nonce};
use p384::elliptic_curve::rand_core::OsRng;
use p384::pkcs8::{EncodePrivateKey, LineEnding};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::fetch::{DocumentFetcher, FetchError};
use super::tokens::{TokenError, ec_public_jwk};

/// The algorithm of Hearth's client-assertion keys (SMART asks EHRs to support it).
pub const CLIENT_ASSERTION_ALG: &str = "ES384";
/// Longer authorize URLs go as a POST form (browsers and EHR gateways cut long URLs).
pub const MAX_AUTHORIZE_URL: usize = 2000;

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("the EHR's SMART configuration could not be read: {0}")]
    Discovery(#[from] FetchError),
    #[error("the EHR's SMART configuration is unusable: {0}")]
    BadConfiguration(String),
    #[error("the EHR refused the token request: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    TokenRefused {
        error: String,
        description: Option<String>,
    },
    #[error("the EHR's token endpoint could not be used: {0}")]
    TokenEndpoint(String),
    #[error("the EHR's ID token is not valid: {0}")]
    IdToken(String),
    #[error("the EHR's token response has no {0}")]
    Missing(&'static str),
    #[error("Hearth's client key: {0}")]
    Key(#[from] TokenError),
}

/// How Hearth authenticates at an EHR's token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// A public client: PKCE only.
    Public,
    /// A confidential asymmetric client: `private_key_jwt` with Hearth's ES384 key.
    PrivateKeyJwt,
}

impl ClientAuth {
    pub fn code(self) -> &'static str {
        match self {
            ClientAuth::Public => "public",
            ClientAuth::PrivateKeyJwt => "private-key-jwt",
        }
    }

    pub fn parse(text: &str) -> Option<ClientAuth> {
        match text {
            "public" => Some(ClientAuth::Public),
            "private-key-jwt" => Some(ClientAuth::PrivateKeyJwt),
            _ => None,
        }
    }
}

/// Hearth's registration with one EHR, as an operator entered it.
#[derive(Debug, Clone)]
pub struct EhrRegistration {
    pub id: String,
    pub name: String,
    /// The EHR's FHIR base: the `iss` of its launches, the `aud` of authorize requests.
    pub iss: String,
    pub client_id: String,
    pub client_auth: ClientAuth,
    /// Scopes asked for in an EHR launch (`launch openid fhirUser patient/*.rs ...`).
    pub scopes: String,
    /// Scopes asked for in a standalone launch (`launch/patient openid fhirUser ...`).
    pub standalone_scopes: String,
    /// Origins allowed to frame the app (CSP `frame-ancestors`).
    pub frame_ancestors: Vec<String>,
}

/// The EHR's endpoints from `{iss}/.well-known/smart-configuration`.
#[derive(Debug, Clone)]
pub struct EhrEndpoints {
    pub authorize: String,
    pub token: String,
    /// The OpenID issuer of its ID tokens and where its keys are (needed for `openid`).
    pub issuer: Option<String>,
    pub jwks_uri: Option<String>,
    pub capabilities: Vec<String>,
}

/// Read (cached per Cache-Control) and check the EHR's SMART configuration: the endpoints
/// must be absolute URLs (https unless the fetcher allows http), PKCE S256 offered.
pub async fn discover(fetcher: &DocumentFetcher, iss: &str) -> Result<EhrEndpoints, LaunchError> {
    let url = format!(
        "{}/.well-known/smart-configuration",
        iss.trim_end_matches('/')
    );
    let document = fetcher.get(&url).await?;
    endpoints_from(&document, fetcher)
}

fn endpoints_from(
    document: &Value,
    fetcher: &DocumentFetcher,
) -> Result<EhrEndpoints, LaunchError> {
    let absolute = |name: &'static str| -> Result<Option<String>, LaunchError> {
        match document.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(url)) => {
                fetcher.check_url(url).map_err(|_| {
                    LaunchError::BadConfiguration(format!("{name} is not an absolute https URL"))
                })?;
                Ok(Some(url.clone()))
            }
            Some(_) => Err(LaunchError::BadConfiguration(format!(
                "{name} is not a string"
            ))),
        }
    };
    let authorize = absolute("authorization_endpoint")?
        .ok_or_else(|| LaunchError::BadConfiguration("no authorization_endpoint".into()))?;
    let token = absolute("token_endpoint")?
        .ok_or_else(|| LaunchError::BadConfiguration("no token_endpoint".into()))?;
    if let Some(methods) = document
        .get("code_challenge_methods_supported")
        .and_then(Value::as_array)
        && !methods.iter().any(|m| m == "S256")
    {
        return Err(LaunchError::BadConfiguration(
            "the EHR does not offer PKCE S256".into(),
        ));
    }
    let capabilities = document
        .get("capabilities")
        .and_then(Value::as_array)
        .map(|c| {
            c.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Ok(EhrEndpoints {
        authorize,
        token,
        issuer: absolute("issuer")?,
        jwks_uri: absolute("jwks_uri")?,
        capabilities,
    })
}

/// What only Hearth may know until the callback: sealed in the launch's row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LaunchSecrets {
    pub pkce_verifier: String,
    pub nonce: String,
}

/// The authorize request: sent as a redirect, or as a POST form when the URL is too long.
#[derive(Debug, Clone)]
pub struct AuthorizeRequest {
    pub url: String,
    pub endpoint: String,
    pub params: Vec<(String, String)>,
}

impl AuthorizeRequest {
    pub fn fits_in_url(&self) -> bool {
        self.url.len() <= MAX_AUTHORIZE_URL
    }
}

/// SMART's fields of a token response, beside the OAuth ones.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SmartTokenFields {
    pub id_token: Option<String>,
    pub patient: Option<String>,
    pub encounter: Option<String>,
    #[serde(rename = "fhirContext")]
    pub fhir_context: Option<Value>,
    /// Some EHRs send `"true"`: read leniently.
    pub need_patient_banner: Option<Value>,
    pub smart_style_url: Option<String>,
    pub tenant: Option<String>,
}

impl ExtraTokenFields for SmartTokenFields {}

type SmartTokenResponse = StandardTokenResponse<SmartTokenFields, BasicTokenType>;

type SmartClient = oauth2::Client<
    BasicErrorResponse,
    SmartTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

fn client(
    registration: &EhrRegistration,
    endpoints: &EhrEndpoints,
    redirect_uri: &str,
) -> Result<SmartClient, LaunchError> {
    let bad = |what: &str| LaunchError::BadConfiguration(format!("{what} is not a valid URL"));
    Ok(
        oauth2::Client::new(ClientId::new(registration.client_id.clone()))
            .set_auth_uri(
                AuthUrl::new(endpoints.authorize.clone())
                    .map_err(|_| bad("authorization_endpoint"))?,
            )
            .set_token_uri(
                TokenUrl::new(endpoints.token.clone()).map_err(|_| bad("token_endpoint"))?,
            )
            .set_redirect_uri(
                RedirectUrl::new(redirect_uri.to_owned()).map_err(|_| bad("the redirect URI"))?,
            )
            // Public clients name themselves in the body; confidential ones add an assertion.
            .set_auth_type(AuthType::RequestBody),
    )
}

/// The authorize request of a launch: `response_type=code`, `client_id`, `redirect_uri`,
/// `scope`, `state`, `aud` (the registered `iss`, byte for byte), `launch` (EHR launch),
/// PKCE S256 and an OIDC `nonce`.
pub fn authorize_request(
    registration: &EhrRegistration,
    endpoints: &EhrEndpoints,
    redirect_uri: &str,
    launch: Option<&str>,
    state: &str,
) -> Result<(AuthorizeRequest, LaunchSecrets), LaunchError> {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let nonce = super::seal::random_token();
    let scopes = match launch {
        Some(_) => &registration.scopes,
        None => &registration.standalone_scopes,
    };
    let state = state.to_owned();
    let client = client(registration, endpoints, redirect_uri)?;
    let mut request = client
        .authorize_url(move || CsrfToken::new(state))
        .add_scopes(scopes.split_whitespace().map(|s| Scope::new(s.to_owned())))
        .set_pkce_challenge(challenge)
        .add_extra_param("aud", registration.iss.clone())
        .add_extra_param("nonce", nonce.clone());
    if let Some(launch) = launch {
        request = request.add_extra_param("launch", launch.to_owned());
    }
    let (url, _) = request.url();
    let endpoint = {
        let mut bare = url.clone();
        bare.set_query(None);
        bare.to_string()
    };
    let params = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    Ok((
        AuthorizeRequest {
            url: url.to_string(),
            endpoint,
            params,
        },
        LaunchSecrets {
            pkce_verifier: verifier.secret().clone(),
            nonce,
        },
    ))
}

/// What a token response granted, SMART context included.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrantedTokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub id_token: Option<String>,
    /// Seconds since the epoch; None when the EHR did not say.
    pub access_expires_at: Option<i64>,
    pub scope: Option<String>,
    pub context: LaunchContext,
}

/// SMART launch context from the token response.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LaunchContext {
    pub patient: Option<String>,
    pub encounter: Option<String>,
    pub fhir_context: Option<Value>,
    pub need_patient_banner: bool,
    pub smart_style_url: Option<String>,
    pub tenant: Option<String>,
}

fn granted(response: &SmartTokenResponse, previous_refresh: Option<&str>) -> GrantedTokens {
    let extra = response.extra_fields();
    let banner = match &extra.need_patient_banner {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    };
    GrantedTokens {
        access_token: response.access_token().secret().clone(),
        // Oracle Health answers a refresh without a new refresh token: keep the old one.
        refresh_token: response
            .refresh_token()
            .map(|t| t.secret().clone())
            .or_else(|| previous_refresh.map(str::to_owned)),
        id_token: extra.id_token.clone(),
        access_expires_at: response
            .expires_in()
            .map(|d| chrono::Utc::now().timestamp() + d.as_secs() as i64),
        scope: response
            .scopes()
            .map(|s| s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")),
        context: LaunchContext {
            patient: extra.patient.clone(),
            encounter: extra.encounter.clone(),
            fhir_context: extra.fhir_context.clone(),
            need_patient_banner: banner,
            smart_style_url: extra.smart_style_url.clone(),
            tenant: extra.tenant.clone(),
        },
    }
}

/// Hearth's key for `private_key_jwt` at a tenant's EHRs.
#[derive(Debug, Clone)]
pub struct ClientKey {
    pub kid: String,
    pub private_key_pem: String,
}

/// Generate an ES384 client-assertion key: (kid, private PKCS#8 PEM, public JWK).
pub fn generate_client_key() -> Result<(String, String, Value), LaunchError> {
    let secret = p384::SecretKey::random(&mut OsRng);
    let pem = secret
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| TokenError::Key(e.to_string()))?;
    let (kid, jwk) = ec_public_jwk(&secret.public_key().to_jwk_string(), CLIENT_ASSERTION_ALG)?;
    Ok((kid, pem.to_string(), jwk))
}

/// A client assertion (RFC 7523) for the EHR's token endpoint: iss = sub = client id,
/// aud = the token endpoint, a fresh jti, five minutes at most.
pub fn client_assertion(
    key: &ClientKey,
    client_id: &str,
    token_endpoint: &str,
) -> Result<String, LaunchError> {
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({
        "iss": client_id, "sub": client_id, "aud": token_endpoint,
        "jti": uuid::Uuid::new_v4().to_string(), "iat": now, "exp": now + 300,
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES384);
    header.kid = Some(key.kid.clone());
    header.typ = Some("JWT".to_owned());
    let encoding = jsonwebtoken::EncodingKey::from_ec_pem(key.private_key_pem.as_bytes())
        .map_err(|e| TokenError::Key(e.to_string()))?;
    jsonwebtoken::encode(&header, &claims, &encoding)
        .map_err(|e| LaunchError::Key(TokenError::Key(e.to_string())))
}

/// The token endpoint, its HTTP client and Hearth's credentials there.
pub struct TokenEndpoint<'a> {
    pub http: &'a reqwest::Client,
    pub registration: &'a EhrRegistration,
    pub endpoints: &'a EhrEndpoints,
    pub redirect_uri: &'a str,
    /// Required when the registration is `private_key_jwt`.
    pub client_key: Option<&'a ClientKey>,
}

impl TokenEndpoint<'_> {
    /// The extra form parameters of a token request: the client assertion, if any.
    fn client_params(&self) -> Result<Vec<(&'static str, String)>, LaunchError> {
        match self.registration.client_auth {
            ClientAuth::Public => Ok(Vec::new()),
            ClientAuth::PrivateKeyJwt => {
                let key = self.client_key.ok_or(LaunchError::Missing("client key"))?;
                let assertion =
                    client_assertion(key, &self.registration.client_id, &self.endpoints.token)?;
                Ok(vec![
                    ("client_assertion_type", ASSERTION_TYPE.to_owned()),
                    ("client_assertion", assertion),
                ])
            }
        }
    }

    /// Exchange the authorization code (with the launch's PKCE verifier).
    pub async fn exchange(&self, code: &str, verifier: &str) -> Result<GrantedTokens, LaunchError> {
        let client = client(self.registration, self.endpoints, self.redirect_uri)?;
        let mut request = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_owned()));
        for (name, value) in self.client_params()? {
            request = request.add_extra_param(name, value);
        }
        let response = request
            .request_async(self.http)
            .await
            .map_err(token_error)?;
        Ok(granted(&response, None))
    }

    /// Use the refresh token; keeps it when the answer carries none.
    pub async fn refresh(&self, refresh_token: &str) -> Result<GrantedTokens, LaunchError> {
        let client = client(self.registration, self.endpoints, self.redirect_uri)?;
        let token = RefreshToken::new(refresh_token.to_owned());
        let mut request = client.exchange_refresh_token(&token);
        for (name, value) in self.client_params()? {
            request = request.add_extra_param(name, value);
        }
        let response = request
            .request_async(self.http)
            .await
            .map_err(token_error)?;
        Ok(granted(&response, Some(refresh_token)))
    }
}

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn token_error<E: std::error::Error>(
    error: RequestTokenError<E, BasicErrorResponse>,
) -> LaunchError {
    match error {
        RequestTokenError::ServerResponse(response) => LaunchError::TokenRefused {
            error: response.error().as_ref().to_owned(),
            description: response.error_description().cloned(),
        },
        RequestTokenError::Request(e) => LaunchError::TokenEndpoint(e.to_string()),
        RequestTokenError::Parse(e, _) => {
            LaunchError::TokenEndpoint(format!("the token response is not valid: {e}"))
        }
        RequestTokenError::Other(e) => LaunchError::TokenEndpoint(e),
    }
}

/// The HTTP client for token requests: no redirects (a token endpoint that redirects is
/// misconfigured or hijacked), short timeouts.
pub fn token_http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap_or_default()
}

/// SMART's claims beyond OpenID's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SmartIdClaims {
    #[serde(rename = "fhirUser", default, skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
}

impl AdditionalClaims for SmartIdClaims {}

type SmartIdToken = IdToken<
    SmartIdClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;

/// Who signed in, from a valid ID token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub subject: String,
    /// `fhirUser` as given (absolute or relative URL of a Practitioner/Patient/...).
    pub fhir_user: Option<String>,
    pub name: Option<String>,
}

/// Validate the ID token: signature with a key of the EHR's JWKS (asymmetric algorithms
/// only; one refetch when its `kid` is new), `iss` = the EHR's issuer, `aud` = Hearth's
/// client id (and no other audience), `nonce` = the launch's, not expired.
pub async fn verify_id_token(
    fetcher: &DocumentFetcher,
    endpoints: &EhrEndpoints,
    client_id: &str,
    id_token: &str,
    nonce: &str,
) -> Result<Identity, LaunchError> {
    let issuer = endpoints
        .issuer
        .as_deref()
        .ok_or_else(|| LaunchError::BadConfiguration("no issuer for ID tokens".into()))?;
    let jwks_uri = endpoints
        .jwks_uri
        .as_deref()
        .ok_or_else(|| LaunchError::BadConfiguration("no jwks_uri for ID tokens".into()))?;
    let token: SmartIdToken = id_token
        .parse()
        .map_err(|e: serde_json::Error| LaunchError::IdToken(format!("not a JWT: {e}")))?;
    let keys = fetcher.get(jwks_uri).await?;
    match check_id_token(&token, &keys, issuer, client_id, nonce) {
        Ok(identity) => Ok(identity),
        // The EHR may have rotated its keys since we cached them: refetch once.
        Err(LaunchError::IdToken(reason)) if reason.contains("key") => {
            let keys = fetcher.refresh(jwks_uri).await?;
            check_id_token(&token, &keys, issuer, client_id, nonce)
        }
        Err(e) => Err(e),
    }
}

fn check_id_token(
    token: &SmartIdToken,
    keys: &Value,
    issuer: &str,
    client_id: &str,
    nonce: &str,
) -> Result<Identity, LaunchError> {
    let keys: CoreJsonWebKeySet = serde_json::from_value(keys.clone())
        .map_err(|e| LaunchError::BadConfiguration(format!("the EHR's JWKS is not valid: {e}")))?;
    let issuer = IssuerUrl::new(issuer.to_owned())
        .map_err(|_| LaunchError::BadConfiguration("the issuer is not a URL".into()))?;
    let verifier =
        IdTokenVerifier::new_public_client(ClientId::new(client_id.to_owned()), issuer, keys)
            .set_allowed_algs([
                CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
                CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
                CoreJwsSigningAlgorithm::EcdsaP256Sha256,
                CoreJwsSigningAlgorithm::EcdsaP384Sha384,
            ]);
    let claims = token
        .claims(&verifier, &Nonce::new(nonce.to_owned()))
        .map_err(|e| LaunchError::IdToken(e.to_string()))?;
    let name = claims
        .name()
        .and_then(|n| n.get(None))
        .map(|n| n.as_str().to_owned());
    Ok(Identity {
        subject: claims.subject().as_str().to_owned(),
        fhir_user: claims.additional_claims().fhir_user.clone(),
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration() -> EhrRegistration {
        EhrRegistration {
            id: "epic".into(),
            name: "Epic".into(),
            iss: "https://ehr.example.org/api/FHIR/R4".into(),
            client_id: "hearth-app".into(),
            client_auth: ClientAuth::Public,
            scopes: "launch openid fhirUser patient/*.rs".into(),
            standalone_scopes: "launch/patient openid fhirUser patient/*.rs".into(),
            frame_ancestors: vec![],
        }
    }

    fn endpoints() -> EhrEndpoints {
        let fetcher = DocumentFetcher::new(false);
        endpoints_from(
            &serde_json::json!({
                "authorization_endpoint": "https://ehr.example.org/oauth2/authorize",
                "token_endpoint": "https://ehr.example.org/oauth2/token",
                "issuer": "https://ehr.example.org",
                "jwks_uri": "https://ehr.example.org/jwks",
                "code_challenge_methods_supported": ["S256"],
            }),
            &fetcher,
        )
        .expect("endpoints")
    }

    #[test]
    fn authorize_request_carries_every_smart_parameter() {
        let (request, secrets) = authorize_request(
            &registration(),
            &endpoints(),
            "https://hearth.example.org/app/callback",
            Some("launch-xyz"),
            "t1.state-value",
        )
        .expect("request");
        let get = |name: &str| {
            request
                .params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(request.endpoint, "https://ehr.example.org/oauth2/authorize");
        assert_eq!(get("response_type").as_deref(), Some("code"));
        assert_eq!(get("client_id").as_deref(), Some("hearth-app"));
        assert_eq!(
            get("aud").as_deref(),
            Some("https://ehr.example.org/api/FHIR/R4")
        );
        assert_eq!(get("launch").as_deref(), Some("launch-xyz"));
        assert_eq!(get("state").as_deref(), Some("t1.state-value"));
        assert_eq!(get("code_challenge_method").as_deref(), Some("S256"));
        assert_eq!(
            get("scope").as_deref(),
            Some("launch openid fhirUser patient/*.rs")
        );
        assert_eq!(get("nonce").as_deref(), Some(secrets.nonce.as_str()));
        assert!(secrets.pkce_verifier.len() >= 43);
        assert!(request.fits_in_url());
    }

    #[test]
    fn standalone_requests_use_the_standalone_scopes_and_no_launch() {
        let (request, _) = authorize_request(
            &registration(),
            &endpoints(),
            "https://hearth.example.org/app/callback",
            None,
            "t1.s",
        )
        .expect("request");
        assert!(!request.params.iter().any(|(k, _)| k == "launch"));
        assert!(request.url.contains("launch%2Fpatient"));
    }

    #[test]
    fn configurations_without_absolute_https_endpoints_or_s256_are_refused() {
        let fetcher = DocumentFetcher::new(false);
        for document in [
            serde_json::json!({"authorization_endpoint": "/authorize", "token_endpoint": "https://x/token"}),
            serde_json::json!({"authorization_endpoint": "http://x/authorize", "token_endpoint": "https://x/token"}),
            serde_json::json!({"token_endpoint": "https://x/token"}),
            serde_json::json!({"authorization_endpoint": "https://x/a", "token_endpoint": "https://x/t", "code_challenge_methods_supported": ["plain"]}),
        ] {
            assert!(endpoints_from(&document, &fetcher).is_err(), "{document}");
        }
    }

    #[test]
    fn client_assertions_are_es384_with_the_key_id() {
        let (kid, pem, jwk) = generate_client_key().expect("key");
        assert_eq!(jwk["alg"], "ES384");
        assert_eq!(jwk["crv"], "P-384");
        assert!(jwk.get("d").is_none(), "public JWK only");
        let key = ClientKey {
            kid: kid.clone(),
            private_key_pem: pem,
        };
        let jwt = client_assertion(&key, "hearth-app", "https://ehr/token").expect("sign");
        let header = jsonwebtoken::decode_header(&jwt).expect("header");
        assert_eq!(header.alg, jsonwebtoken::Algorithm::ES384);
        assert_eq!(header.kid.as_deref(), Some(kid.as_str()));
    }
}
