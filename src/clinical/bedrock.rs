//! Amazon Bedrock Runtime client: Claude through the Converse API, and Amazon Titan Text
//! Embeddings V2 through InvokeModel (issue #9).
//!
//! A thin layer over `aws-sdk-bedrockruntime` that fixes the few choices Hearth makes:
//!
//! - **Credentials** are static: given in [`BedrockSettings::static_credentials`], or read
//!   once by [`Bedrock::new`] from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
//!   (optional) `AWS_SESSION_TOKEN`. The SDK's default credential chain (profiles, SSO,
//!   IMDS, ECS, web identity) lives in `aws-config`, which Hearth does not depend on.
//!   Credentials read from the environment are not refreshed: a rotated session token
//!   needs a new [`Bedrock`].
//! - **One attempt per call**: the SDK's retries are off (max attempts 1). A throttled call
//!   surfaces at once as [`BedrockError::Throttled`], so the caller decides (fall back to
//!   the extractive engine, retry later) and every attempt that reached AWS is a call the
//!   caller knows about (quota accounting).
//! - **One deadline** per call: [`BedrockSettings::timeout`] bounds the whole operation
//!   (connect, send, model latency, read).
//! - **Errors never carry prompt or completion text**: only error codes, HTTP statuses,
//!   and the service's own validation message (which describes the request's shape).
//!
//! Tests point [`BedrockSettings::endpoint_url`] at `tests/peers/bedrock/standin.py`, which
//! speaks the Bedrock Runtime wire format and verifies the SigV4 signature.

use std::fmt;
use std::time::{Duration, Instant};

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::config::retry::RetryConfig;
use aws_sdk_bedrockruntime::config::timeout::TimeoutConfig;
use aws_sdk_bedrockruntime::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_bedrockruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, ConverseOutput as SdkConverseOutput, InferenceConfiguration,
    Message, SystemContentBlock,
};
use serde::Deserialize;

/// The output dimensions Titan Text Embeddings V2 supports.
pub const TITAN_V2_DIMENSIONS: [u32; 3] = [256, 512, 1024];

/// Longest service message kept in [`BedrockError::Validation`].
const MAX_SERVICE_MESSAGE: usize = 300;

/// Where and as whom to call Bedrock.
#[derive(Clone)]
pub struct BedrockSettings {
    /// AWS region, e.g. `us-east-1` (also the SigV4 signing region).
    pub region: String,
    /// Overrides the regional endpoint: a VPC interface endpoint
    /// (`https://vpce-...bedrock-runtime.us-east-1.vpce.amazonaws.com`) or, in tests, the
    /// local stand-in (`http://127.0.0.1:PORT`). `None`: `bedrock-runtime.{region}.amazonaws.com`.
    pub endpoint_url: Option<String>,
    /// `(access key id, secret access key)`. `None`: read `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` and optional `AWS_SESSION_TOKEN` from the environment in
    /// [`Bedrock::new`] (the SDK's default credential chain is not available here).
    pub static_credentials: Option<(String, String)>,
    /// Deadline of one call, from its start to the end of the response.
    pub timeout: Duration,
}

impl fmt::Debug for BedrockSettings {
    /// The secret access key is redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BedrockSettings")
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field(
                "static_credentials",
                &self
                    .static_credentials
                    .as_ref()
                    .map(|(id, _)| (id.as_str(), "** redacted **")),
            )
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Why a Bedrock call failed. Messages never contain prompt or completion text.
#[derive(Debug, thiserror::Error)]
pub enum BedrockError {
    /// The settings cannot work (empty region, malformed endpoint URL, zero timeout).
    #[error("Bedrock settings are invalid: {0}")]
    Config(String),
    /// No static credentials and no `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
    #[error("no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")]
    NoCredentials,
    /// Too many requests or tokens (HTTP 429, `ThrottlingException`,
    /// `ServiceQuotaExceededException`). Not retried here.
    #[error("Bedrock throttled the request")]
    Throttled,
    /// The credentials were refused: `AccessDeniedException` (no model access or IAM
    /// permission), `InvalidSignatureException` (wrong secret), `UnrecognizedClientException`
    /// (unknown access key id), `ExpiredTokenException`, ...
    #[error("Bedrock refused the credentials or the access ({code})")]
    AccessDenied {
        /// The error code AWS returned.
        code: String,
    },
    /// The request was rejected as invalid (unknown model id, too long an input, bad
    /// parameter), by us before sending or by the service (its message, shortened).
    #[error("Bedrock rejected the request: {0}")]
    Validation(String),
    /// The call exceeded [`BedrockSettings::timeout`], or the model timed out
    /// (`ModelTimeoutException`).
    #[error("the Bedrock call timed out")]
    Timeout,
    /// The service failed otherwise (model error, not ready, unavailable, internal error):
    /// error code and HTTP status.
    #[error("Bedrock service error: {0}")]
    Service(String),
    /// The endpoint could not be reached (connection refused, DNS, TLS).
    #[error("could not reach Bedrock: {0}")]
    Transport(String),
    /// The service answered something we cannot use (no output message, malformed
    /// embedding, wrong dimension).
    #[error("unexpected Bedrock response: {0}")]
    BadResponse(String),
}

/// The result of one Converse call.
#[derive(Debug, Clone, PartialEq)]
pub struct ConverseOutput {
    /// The text blocks of the assistant's message, concatenated (empty when the model
    /// returned none, e.g. `stop_reason` `content_filtered`).
    pub text: String,
    pub input_tokens: u32,
    pub output_tokens: u32,
    /// Bedrock's own `metrics.latencyMs`; the measured round trip when it is absent.
    pub latency_ms: u64,
    /// The model id the call was made with.
    pub model_id: String,
    /// `end_turn`, `max_tokens`, `stop_sequence`, `guardrail_intervened`,
    /// `content_filtered`, ...
    pub stop_reason: String,
}

/// A Bedrock Runtime client. Cheap to clone; share one per settings.
#[derive(Debug, Clone)]
pub struct Bedrock {
    client: Client,
}

impl Bedrock {
    /// Builds the client; no network I/O. Fails on invalid settings or missing credentials.
    pub fn new(settings: &BedrockSettings) -> Result<Bedrock, BedrockError> {
        validate_region(&settings.region)?;
        if settings.timeout.is_zero() {
            return Err(BedrockError::Config("timeout must be positive".into()));
        }
        let credentials = match &settings.static_credentials {
            Some((id, secret)) => static_credentials(id, secret)?,
            None => credentials_from(|name| std::env::var(name).ok())?,
        };
        let mut config = aws_sdk_bedrockruntime::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .credentials_provider(credentials)
            .retry_config(RetryConfig::standard().with_max_attempts(1))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(settings.timeout)
                    .operation_timeout(settings.timeout)
                    .build(),
            );
        if let Some(url) = &settings.endpoint_url {
            validate_endpoint(url)?;
            config = config.endpoint_url(url.clone());
        }
        Ok(Bedrock {
            client: Client::from_conf(config.build()),
        })
    }

    /// One Converse call: system prompt, one user message, maxTokens, temperature 0.
    pub async fn converse(
        &self,
        model_id: &str,
        system: &str,
        user: &str,
        max_tokens: u32,
    ) -> Result<ConverseOutput, BedrockError> {
        validate_model_id(model_id)?;
        if user.is_empty() {
            return Err(BedrockError::Validation("the user message is empty".into()));
        }
        let max_tokens = i32::try_from(max_tokens)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| BedrockError::Validation("max_tokens must be 1..=i32::MAX".into()))?;
        let message = Message::builder()
            .role(ConversationRole::User)
            .content(ContentBlock::Text(user.to_owned()))
            .build()
            .map_err(|e| BedrockError::Validation(format!("cannot build the message: {e}")))?;
        let mut request = self
            .client
            .converse()
            .model_id(model_id)
            .messages(message)
            .inference_config(
                InferenceConfiguration::builder()
                    .max_tokens(max_tokens)
                    .temperature(0.0)
                    .build(),
            );
        if !system.is_empty() {
            request = request.system(SystemContentBlock::Text(system.to_owned()));
        }
        let started = Instant::now();
        let response = request.send().await.map_err(map_sdk_error)?;
        let measured = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);

        let text = match response.output() {
            Some(SdkConverseOutput::Message(message)) => message
                .content()
                .iter()
                .filter_map(|block| block.as_text().ok())
                .map(String::as_str)
                .collect::<String>(),
            _ => {
                return Err(BedrockError::BadResponse(
                    "Converse returned no output message".into(),
                ));
            }
        };
        let (input_tokens, output_tokens) = response
            .usage()
            .map(|u| (clamp_u32(u.input_tokens()), clamp_u32(u.output_tokens())))
            .unwrap_or((0, 0));
        let latency_ms = response
            .metrics()
            .and_then(|m| u64::try_from(m.latency_ms()).ok())
            .unwrap_or(measured);
        Ok(ConverseOutput {
            text,
            input_tokens,
            output_tokens,
            latency_ms,
            model_id: model_id.to_owned(),
            stop_reason: response.stop_reason().as_str().to_owned(),
        })
    }

    /// Titan Text Embeddings V2 through InvokeModel: body {"inputText": text, "dimensions": dim, "normalize": true}; response {"embedding": [...], "inputTextTokenCount": n}. One call per text.
    ///
    /// Returns the embedding (exactly `dimensions` finite values) and the input token count.
    /// `dimensions` must be one of [`TITAN_V2_DIMENSIONS`].
    pub async fn embed_titan(
        &self,
        model_id: &str,
        text: &str,
        dimensions: u32,
    ) -> Result<(Vec<f32>, u32), BedrockError> {
        validate_model_id(model_id)?;
        if text.is_empty() {
            return Err(BedrockError::Validation(
                "the text to embed is empty".into(),
            ));
        }
        if !TITAN_V2_DIMENSIONS.contains(&dimensions) {
            return Err(BedrockError::Validation(format!(
                "Titan Text Embeddings V2 dimensions must be 256, 512 or 1024, not {dimensions}"
            )));
        }
        let body = serde_json::to_vec(&serde_json::json!({
            "inputText": text,
            "dimensions": dimensions,
            "normalize": true,
        }))
        .map_err(|_| BedrockError::Validation("cannot serialise the request body".into()))?;
        let response = self
            .client
            .invoke_model()
            .model_id(model_id)
            .content_type("application/json")
            .accept("application/json")
            .body(Blob::new(body))
            .send()
            .await
            .map_err(map_sdk_error)?;
        let parsed: TitanResponse =
            serde_json::from_slice(response.body().as_ref()).map_err(|e| {
                BedrockError::BadResponse(format!(
                    "Titan response is not the expected JSON ({:?} at line {}, column {})",
                    e.classify(),
                    e.line(),
                    e.column()
                ))
            })?;
        let expected = usize::try_from(dimensions).unwrap_or(usize::MAX);
        if parsed.embedding.len() != expected {
            return Err(BedrockError::BadResponse(format!(
                "Titan returned {} dimensions, {dimensions} requested",
                parsed.embedding.len()
            )));
        }
        if parsed.embedding.iter().any(|v| !v.is_finite()) {
            return Err(BedrockError::BadResponse(
                "Titan returned a non-finite value".into(),
            ));
        }
        Ok((parsed.embedding, parsed.input_text_token_count))
    }
}

#[derive(Deserialize)]
struct TitanResponse {
    embedding: Vec<f32>,
    #[serde(rename = "inputTextTokenCount")]
    input_text_token_count: u32,
}

fn clamp_u32(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

fn validate_region(region: &str) -> Result<(), BedrockError> {
    let ok = !region.is_empty()
        && region.len() <= 64
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(BedrockError::Config(
            "region must be an AWS region name such as us-east-1".into(),
        ))
    }
}

fn validate_endpoint(url: &str) -> Result<(), BedrockError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(host)
            if !host.is_empty() && !host.starts_with('/') && !url.contains(char::is_whitespace) =>
        {
            Ok(())
        }
        _ => Err(BedrockError::Config(
            "endpoint_url must be an http:// or https:// URL with a host".into(),
        )),
    }
}

fn validate_model_id(model_id: &str) -> Result<(), BedrockError> {
    if model_id.is_empty() || model_id.len() > 2048 || model_id.chars().any(char::is_control) {
        return Err(BedrockError::Validation("invalid model id".into()));
    }
    Ok(())
}

fn static_credentials(id: &str, secret: &str) -> Result<Credentials, BedrockError> {
    if id.is_empty() || secret.is_empty() {
        return Err(BedrockError::NoCredentials);
    }
    Ok(Credentials::new(id, secret, None, None, "hearth-static"))
}

/// Credentials from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and optional
/// `AWS_SESSION_TOKEN`, looked up through `lookup` (empty values count as absent).
fn credentials_from(lookup: impl Fn(&str) -> Option<String>) -> Result<Credentials, BedrockError> {
    let get = |name: &str| lookup(name).filter(|v| !v.is_empty());
    match (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")) {
        (Some(id), Some(secret)) => Ok(Credentials::new(
            id,
            secret,
            get("AWS_SESSION_TOKEN"),
            None,
            "hearth-environment",
        )),
        _ => Err(BedrockError::NoCredentials),
    }
}

/// Maps an SDK failure to a [`BedrockError`] by error code and HTTP status (the same for
/// every operation).
fn map_sdk_error<E>(err: SdkError<E>) -> BedrockError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match &err {
        SdkError::TimeoutError(_) => BedrockError::Timeout,
        SdkError::DispatchFailure(failure) => {
            if failure.is_timeout() {
                BedrockError::Timeout
            } else {
                let kind = if failure.is_io() {
                    "I/O error"
                } else if failure.is_user() {
                    "request error"
                } else {
                    "connection error"
                };
                BedrockError::Transport(format!(
                    "{kind}: {}",
                    aws_sdk_bedrockruntime::error::DisplayErrorContext(&err)
                ))
            }
        }
        SdkError::ResponseError(response) => BedrockError::BadResponse(format!(
            "unreadable response (HTTP {})",
            response.raw().status().as_u16()
        )),
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let e = service.err();
            classify_service_error(status, e.code(), e.message())
        }
        SdkError::ConstructionFailure(_) => {
            BedrockError::Validation("the request could not be built".into())
        }
        _ => BedrockError::Service("unknown SDK failure".into()),
    }
}

fn classify_service_error(status: u16, code: Option<&str>, message: Option<&str>) -> BedrockError {
    let code = code.unwrap_or("");
    match code {
        "ThrottlingException" | "TooManyRequestsException" | "ServiceQuotaExceededException" => {
            BedrockError::Throttled
        }
        "AccessDeniedException"
        | "InvalidSignatureException"
        | "IncompleteSignatureException"
        | "UnrecognizedClientException"
        | "ExpiredTokenException"
        | "InvalidClientTokenId"
        | "MissingAuthenticationTokenException" => BedrockError::AccessDenied {
            code: code.to_owned(),
        },
        "ValidationException" => BedrockError::Validation(shorten(message.unwrap_or(code))),
        "ModelTimeoutException" => BedrockError::Timeout,
        "" => match status {
            429 => BedrockError::Throttled,
            401 | 403 => BedrockError::AccessDenied {
                code: format!("HTTP {status}"),
            },
            408 => BedrockError::Timeout,
            400 => BedrockError::Validation(format!("HTTP {status}")),
            _ => BedrockError::Service(format!("HTTP {status}")),
        },
        other => BedrockError::Service(format!("{other} (HTTP {status})")),
    }
}

/// At most [`MAX_SERVICE_MESSAGE`] characters, control characters replaced.
fn shorten(message: &str) -> String {
    let mut out: String = message
        .chars()
        .take(MAX_SERVICE_MESSAGE)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if message.chars().count() > MAX_SERVICE_MESSAGE {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_bedrockruntime::config::ProvideCredentials;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[tokio::test]
    async fn environment_credentials() {
        let creds = credentials_from(env(&[
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_SESSION_TOKEN", "token"),
        ]))
        .unwrap();
        let creds = creds.provide_credentials().await.unwrap();
        assert_eq!(creds.access_key_id(), "AKID");
        assert_eq!(creds.secret_access_key(), "secret");
        assert_eq!(creds.session_token(), Some("token"));

        let creds = credentials_from(env(&[
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_SESSION_TOKEN", ""),
        ]))
        .unwrap();
        assert_eq!(creds.session_token(), None);

        for missing in [
            env(&[("AWS_ACCESS_KEY_ID", "AKID")]),
            env(&[("AWS_SECRET_ACCESS_KEY", "secret")]),
            env(&[("AWS_ACCESS_KEY_ID", ""), ("AWS_SECRET_ACCESS_KEY", "s")]),
        ] {
            assert!(matches!(
                credentials_from(missing),
                Err(BedrockError::NoCredentials)
            ));
        }
    }

    #[test]
    fn settings_debug_redacts_the_secret() {
        let settings = BedrockSettings {
            region: "us-east-1".into(),
            endpoint_url: None,
            static_credentials: Some(("AKIDTEST".into(), "very-secret".into())),
            timeout: Duration::from_secs(5),
        };
        let shown = format!("{settings:?}");
        assert!(shown.contains("AKIDTEST"));
        assert!(!shown.contains("very-secret"));
    }

    #[test]
    fn invalid_settings() {
        let ok = BedrockSettings {
            region: "us-east-1".into(),
            endpoint_url: Some("http://127.0.0.1:9".into()),
            static_credentials: Some(("AKIDTEST".into(), "s".into())),
            timeout: Duration::from_secs(5),
        };
        assert!(Bedrock::new(&ok).is_ok());
        let bad = [
            BedrockSettings {
                region: "".into(),
                ..ok.clone()
            },
            BedrockSettings {
                region: "US East".into(),
                ..ok.clone()
            },
            BedrockSettings {
                endpoint_url: Some("127.0.0.1:9".into()),
                ..ok.clone()
            },
            BedrockSettings {
                timeout: Duration::ZERO,
                ..ok.clone()
            },
        ];
        for settings in bad {
            assert!(
                matches!(Bedrock::new(&settings), Err(BedrockError::Config(_))),
                "{settings:?}"
            );
        }
        let no_secret = BedrockSettings {
            static_credentials: Some(("AKIDTEST".into(), "".into())),
            ..ok
        };
        assert!(matches!(
            Bedrock::new(&no_secret),
            Err(BedrockError::NoCredentials)
        ));
    }

    #[test]
    fn service_errors_by_code_and_status() {
        assert!(matches!(
            classify_service_error(429, Some("ThrottlingException"), None),
            BedrockError::Throttled
        ));
        assert!(matches!(
            classify_service_error(429, None, None),
            BedrockError::Throttled
        ));
        assert!(matches!(
            classify_service_error(403, Some("InvalidSignatureException"), Some("x")),
            BedrockError::AccessDenied { code } if code == "InvalidSignatureException"
        ));
        assert!(matches!(
            classify_service_error(408, Some("ModelTimeoutException"), None),
            BedrockError::Timeout
        ));
        assert!(matches!(
            classify_service_error(400, Some("ValidationException"), Some("bad model")),
            BedrockError::Validation(m) if m == "bad model"
        ));
        assert!(matches!(
            classify_service_error(424, Some("ModelErrorException"), Some("model said: secret")),
            BedrockError::Service(m) if m == "ModelErrorException (HTTP 424)"
        ));
        let long = "x".repeat(1000);
        match classify_service_error(400, Some("ValidationException"), Some(&long)) {
            BedrockError::Validation(m) => assert_eq!(m.chars().count(), MAX_SERVICE_MESSAGE + 1),
            other => panic!("{other:?}"),
        }
    }
}
