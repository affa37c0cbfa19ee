//! An HTTP client for the launching EHR's FHIR R4 API: reads, paged searches and attachment
//! downloads with the access token the EHR granted at launch.
//!
//! The EHR's answers carry PHI, and so do the URLs (patient ids in query strings): nothing
//! here logs or puts into an error a URL, a query string, an id or a response body. Links the
//! EHR hands back (paging, attachments) are followed only under the configured FHIR base, so
//! a hostile or confused answer cannot make Hearth send the token elsewhere.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use base64::Engine as _;
use rand::Rng as _;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde_json::Value;

/// The media type of every FHIR request and of the answers Hearth parses.
const FHIR_JSON: &str = "application/fhir+json";
/// Cap for a single read's body (a resource, not a page of them).
const MAX_READ_BYTES: usize = 16 * 1024 * 1024;
/// How much of an error answer is read to find its OperationOutcome issue codes.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// Longest id accepted for a read. FHIR says 64; some EHRs' ids are longer.
const MAX_ID_LEN: usize = 256;
/// OperationOutcome text kept per warning (EHR diagnostics can be stack traces).
const MAX_WARNING_CHARS: usize = 500;
/// OperationOutcome issue codes kept in a [`EhrError::Status`].
const MAX_ISSUE_CODES: usize = 8;
/// Connection set-up limit of [`http_client`]; the total limit is the caller's.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How hard to try when the EHR is busy.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts per request in total, the first included (0 counts as 1).
    pub max_attempts: u32,
    /// Backoff ceiling of the first retry; it doubles per retry.
    pub base_delay: Duration,
    /// Backoff ceiling never exceeds this.
    pub max_delay: Duration,
    /// A `Retry-After` longer than this gives up instead of stalling the launch.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

/// Why talking to the EHR failed. The texts are for clinicians and operators and carry no
/// PHI: no patient ids, query strings or response bodies.
#[derive(Debug, thiserror::Error)]
pub enum EhrError {
    #[error("the EHR no longer accepts this session's access token (401): launch the app again")]
    Unauthorized,
    #[error(
        "the EHR refused access to {resource_type} (403): the app's scopes or the user's rights do not cover it"
    )]
    Forbidden { resource_type: String },
    /// 404, and 410 (deleted).
    #[error("the EHR has no such {resource_type} (not found)")]
    NotFound { resource_type: String },
    #[error(
        "the EHR asked Hearth to slow down (429) and Hearth gave up after {attempts} attempt(s): try again in a few minutes"
    )]
    RateLimited { attempts: u32 },
    #[error("the EHR is unavailable ({status}) after {attempts} attempt(s): try again later")]
    Unavailable { status: u16, attempts: u32 },
    /// Any other non-2xx answer, 3xx included (redirects are not followed). `issues` are the
    /// answer's OperationOutcome `issue[].code` values (a fixed FHIR code set, no free text).
    #[error("the EHR answered {status} to a request for {resource_type}{}", issue_suffix(.issues))]
    Status {
        status: u16,
        resource_type: String,
        issues: Vec<String>,
    },
    #[error(
        "the EHR sent a link or attachment URL outside its FHIR base: Hearth did not follow it"
    )]
    OffBase,
    #[error(
        "the EHR's search results ran past {pages} pages: Hearth stopped rather than keep a partial record"
    )]
    TooManyPages { pages: u32 },
    #[error("the EHR's answer is not the expected FHIR: {0}")]
    NotFhir(String),
    #[error("the EHR's answer is larger than Hearth's limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("could not reach the EHR: {0}")]
    Transport(String),
    /// Refused before sending: a malformed base URL, token, resource type, id or content type.
    #[error("Hearth did not send the request to the EHR: {0}")]
    Invalid(&'static str),
}

fn issue_suffix(issues: &[String]) -> String {
    if issues.is_empty() {
        String::new()
    } else {
        format!(" (OperationOutcome issue codes: {})", issues.join(", "))
    }
}

/// Limits of one [`EhrClient::search_all`].
#[derive(Clone, Copy, Debug)]
pub struct SearchLimits {
    /// Pages fetched at most (at least one always is); more pages is an error.
    pub max_pages: u32,
    /// Cap of each page's body.
    pub max_page_bytes: usize,
}

impl Default for SearchLimits {
    fn default() -> Self {
        SearchLimits {
            max_pages: 200,
            max_page_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Everything a search matched, over all its pages.
#[derive(Clone, Debug, Default)]
pub struct SearchResult {
    /// The matched resources (`search.mode` "match" or absent), in the EHR's order.
    pub resources: Vec<Value>,
    pub pages: u32,
    /// The EHR's OperationOutcome messages (deduplicated; EHR-authored text: show it, don't
    /// log it), and a note when paging stopped at a repeated link.
    pub warnings: Vec<String>,
}

/// Counters of one client (shared by its clones).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// HTTP requests sent, retries included.
    pub requests: u32,
    pub retries: u32,
    /// Search pages received.
    pub pages: u32,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU32,
    retries: AtomicU32,
    pages: AtomicU32,
}

/// The HTTP client for EHR calls: rustls, redirects never followed (a redirect could carry
/// the bearer token elsewhere), connect timeout 5 s, total `timeout` per request (body
/// included), User-Agent `Hearth/<version>`.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    let built = reqwest::Client::builder()
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .timeout(timeout)
        .user_agent(concat!("Hearth/", env!("CARGO_PKG_VERSION")))
        .build();
    match built {
        Ok(client) => client,
        Err(e) => {
            // Only a TLS back-end failure gets here. EhrClient refuses followed redirects
            // itself, so the fallback's defaults stay safe.
            tracing::error!(error = %e.without_url(), "EHR HTTP client set-up failed; using defaults");
            reqwest::Client::default()
        }
    }
}

/// A session's view of the EHR's FHIR API. Cheap to clone; clones share [`ClientStats`].
#[derive(Clone)]
pub struct EhrClient {
    http: reqwest::Client,
    /// Scheme, host and port of the base; its path is `base_path`.
    base: Url,
    /// The base's path without a trailing slash: "" for a base at the root.
    base_path: String,
    /// `Authorization: Bearer …`, marked sensitive.
    auth: HeaderValue,
    retry: RetryPolicy,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for EhrClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EhrClient")
            .field("base", &self.base_dir().as_str())
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl EhrClient {
    /// A client for the FHIR base `fhir_base` (http or https, no query, fragment or
    /// credentials; a trailing slash is tolerated) using `access_token`.
    pub fn new(
        http: reqwest::Client,
        fhir_base: &str,
        access_token: &str,
        retry: RetryPolicy,
    ) -> Result<EhrClient, EhrError> {
        let (base, base_path) = normalise_base(fhir_base)?;
        if access_token.trim().is_empty() {
            return Err(EhrError::Invalid("the access token is empty"));
        }
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", access_token.trim()))
            .map_err(|_| EhrError::Invalid("the access token is not a valid header value"))?;
        auth.set_sensitive(true);
        Ok(EhrClient {
            http,
            base,
            base_path,
            auth,
            retry,
            counters: Arc::new(Counters::default()),
        })
    }

    /// GET {base}/{type}/{id}; checks resourceType and id of the answer, since the record
    /// is filed under what was asked for.
    pub async fn read(&self, resource_type: &str, id: &str) -> Result<Value, EhrError> {
        check_resource_type(resource_type)?;
        check_id(id)?;
        let url = self.url_for(&format!("{resource_type}/{id}"));
        let response = self
            .send(&url, &HeaderValue::from_static(FHIR_JSON), resource_type)
            .await?;
        let body = read_capped(response, MAX_READ_BYTES).await?;
        let resource: Value = serde_json::from_slice(&body).map_err(|_| {
            EhrError::NotFhir(format!("the answer to a {resource_type} read is not JSON"))
        })?;
        if resource.get("resourceType").and_then(Value::as_str) != Some(resource_type) {
            return Err(EhrError::NotFhir(format!(
                "the answer to a {resource_type} read is not a {resource_type}"
            )));
        }
        if resource.get("id").and_then(Value::as_str) != Some(id) {
            return Err(EhrError::NotFhir(format!(
                "the answer to a {resource_type} read has another id than the one asked for"
            )));
        }
        Ok(resource)
    }

    /// GET {base}/{type}?params and every next page (only under the base, else
    /// [`EhrError::OffBase`]; a repeated next link ends paging with a warning; a next link
    /// after `max_pages` pages is [`EhrError::TooManyPages`], not a silently partial record).
    /// Collects entries whose `search.mode` is "match" (or absent and of the searched
    /// type); "include" entries are dropped; OperationOutcome entries become warnings.
    pub async fn search_all(
        &self,
        resource_type: &str,
        params: &[(&str, &str)],
        limits: SearchLimits,
    ) -> Result<SearchResult, EhrError> {
        check_resource_type(resource_type)?;
        let mut url = self.url_for(resource_type);
        if !params.is_empty() {
            url.query_pairs_mut().extend_pairs(params);
        }
        let max_pages = limits.max_pages.max(1);
        let accept = HeaderValue::from_static(FHIR_JSON);
        let mut seen = HashSet::from([url.as_str().to_owned()]);
        let mut result = SearchResult::default();
        loop {
            let response = self.send(&url, &accept, resource_type).await?;
            let body = read_capped(response, limits.max_page_bytes).await?;
            result.pages += 1;
            self.counters.pages.fetch_add(1, Ordering::Relaxed);
            let page: Value = serde_json::from_slice(&body).map_err(|_| {
                EhrError::NotFhir(format!("a page of a {resource_type} search is not JSON"))
            })?;
            drop(body);
            let Some(next) = collect_page(
                page,
                resource_type,
                &mut result.resources,
                &mut result.warnings,
            )?
            else {
                break;
            };
            let next = self.resolve_under_base(&next)?;
            if !seen.insert(next.as_str().to_owned()) {
                tracing::warn!(
                    resource_type,
                    pages = result.pages,
                    "EHR search paging repeated a link; paging stopped"
                );
                push_unique(
                    &mut result.warnings,
                    "the EHR's paging repeated a page; Hearth stopped paging there".to_owned(),
                );
                break;
            }
            if result.pages >= max_pages {
                return Err(EhrError::TooManyPages {
                    pages: result.pages,
                });
            }
            url = next;
        }
        tracing::debug!(
            resource_type,
            pages = result.pages,
            resources = result.resources.len(),
            "EHR search done"
        );
        Ok(result)
    }

    /// An attachment's bytes and content type. A relative `url` ("Binary/123") is resolved
    /// against the base; an absolute one must be under it (else [`EhrError::OffBase`]). An
    /// answer that is a FHIR Binary resource is unwrapped (base64 `data`, `contentType`).
    pub async fn fetch_attachment(
        &self,
        url: &str,
        content_type: Option<&str>,
        max_bytes: usize,
    ) -> Result<(Option<String>, Vec<u8>), EhrError> {
        let url = self.resolve_under_base(url)?;
        let label = self.type_label(&url);
        let accept = match content_type.map(str::trim).filter(|t| !t.is_empty()) {
            Some(t) => HeaderValue::from_str(t).map_err(|_| {
                EhrError::Invalid("the attachment's content type is not a valid header value")
            })?,
            None => HeaderValue::from_static("*/*"),
        };
        let response = self.send(&url, &accept, &label).await?;
        let answered_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty());
        let json_answer = answered_type.as_deref().is_some_and(is_json_media_type);
        // A Binary wrapper is base64 (4/3 the size) plus a little JSON around it.
        let read_limit = if json_answer {
            (max_bytes / 3).saturating_mul(4).saturating_add(64 * 1024)
        } else {
            max_bytes
        };
        let body = read_capped(response, read_limit).await?;
        if json_answer
            && let Ok(value) = serde_json::from_slice::<Value>(&body)
            && value.get("resourceType").and_then(Value::as_str) == Some("Binary")
        {
            return unwrap_binary(&value, max_bytes);
        }
        if body.len() > max_bytes {
            return Err(EhrError::TooLarge { limit: max_bytes });
        }
        Ok((answered_type, body))
    }

    /// Counters since the client was made.
    pub fn stats(&self) -> ClientStats {
        ClientStats {
            requests: self.counters.requests.load(Ordering::Relaxed),
            retries: self.counters.retries.load(Ordering::Relaxed),
            pages: self.counters.pages.load(Ordering::Relaxed),
        }
    }

    /// The base with a trailing slash: what relative references resolve against.
    fn base_dir(&self) -> Url {
        let mut dir = self.base.clone();
        dir.set_path(&format!("{}/", self.base_path));
        dir
    }

    /// {base}/{rest}; `rest` is made of checked types and ids only.
    fn url_for(&self, rest: &str) -> Url {
        let mut url = self.base.clone();
        url.set_path(&format!("{}/{rest}", self.base_path));
        url
    }

    /// `link` (absolute or relative to the base) if it is under the base.
    fn resolve_under_base(&self, link: &str) -> Result<Url, EhrError> {
        let mut url = self.base_dir().join(link).map_err(|_| EhrError::OffBase)?;
        url.set_fragment(None);
        if self.is_under_base(&url) {
            Ok(url)
        } else {
            Err(EhrError::OffBase)
        }
    }

    /// Same scheme, host and port as the base, no credentials, and a path that is the
    /// base's or below it segment-wise (`/fhir2` is not under `/fhir`). Dot segments were
    /// resolved by the URL parser; encoded slashes and backslashes are refused because a
    /// server may decode them into an escape.
    fn is_under_base(&self, url: &Url) -> bool {
        if url.scheme() != self.base.scheme()
            || url.host_str() != self.base.host_str()
            || url.port_or_known_default() != self.base.port_or_known_default()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return false;
        }
        let path = url.path();
        let Some(rest) = path.strip_prefix(self.base_path.as_str()) else {
            return false;
        };
        if !(rest.is_empty() || rest.starts_with('/')) {
            return false;
        }
        let lower = rest.to_ascii_lowercase();
        !(lower.contains("%2f") || lower.contains("%5c") || lower.contains('\\'))
    }

    /// What an attachment URL names, for error texts: its resource type when it has the
    /// shape {base}/{Type}/…, else "attachment".
    fn type_label(&self, url: &Url) -> String {
        url.path()
            .strip_prefix(self.base_path.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .and_then(|rest| rest.split('/').next())
            .filter(|segment| check_resource_type(segment).is_ok())
            .unwrap_or("attachment")
            .to_owned()
    }

    /// One GET with retries: 429, 502, 503 and 504 (honouring `Retry-After`, else backoff
    /// with full jitter) and failures to connect. A timeout once connected is not retried:
    /// the EHR may be working on it, and repeating heavy searches would add to its load and
    /// multiply the wait. 2xx is returned; anything else is an error.
    async fn send(
        &self,
        url: &Url,
        accept: &HeaderValue,
        label: &str,
    ) -> Result<reqwest::Response, EhrError> {
        let max_attempts = self.retry.max_attempts.max(1);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            let sent = self
                .http
                .get(url.clone())
                .header(AUTHORIZATION, self.auth.clone())
                .header(ACCEPT, accept.clone())
                .send()
                .await;
            let delay = match sent {
                Err(e) => {
                    let e = e.without_url();
                    if e.is_connect() && attempt < max_attempts {
                        tracing::debug!(
                            resource_type = label,
                            attempt,
                            "EHR connect failed; retrying"
                        );
                        backoff(&self.retry, attempt)
                    } else {
                        return Err(transport_error(&e, attempt));
                    }
                }
                Ok(response) => {
                    let status = response.status();
                    tracing::debug!(
                        resource_type = label,
                        status = status.as_u16(),
                        attempt,
                        "EHR answered"
                    );
                    if status.is_success() {
                        if response.url() != url && !self.is_under_base(response.url()) {
                            // Only a caller-supplied client that follows redirects gets here.
                            return Err(EhrError::OffBase);
                        }
                        return Ok(response);
                    }
                    if !is_retryable(status) {
                        return Err(status_error(response, label).await);
                    }
                    let give_up = || {
                        if status == StatusCode::TOO_MANY_REQUESTS {
                            EhrError::RateLimited { attempts: attempt }
                        } else {
                            EhrError::Unavailable {
                                status: status.as_u16(),
                                attempts: attempt,
                            }
                        }
                    };
                    let retry_after = response
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
                    match retry_after {
                        Some(wait) if wait > self.retry.max_retry_after => {
                            tracing::warn!(
                                resource_type = label,
                                status = status.as_u16(),
                                wait_s = wait.as_secs(),
                                "EHR asked for a longer wait than allowed; giving up"
                            );
                            return Err(give_up());
                        }
                        _ if attempt >= max_attempts => return Err(give_up()),
                        Some(wait) => wait,
                        None => backoff(&self.retry, attempt),
                    }
                }
            };
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(delay).await;
        }
    }
}

fn is_retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

/// The error for a non-2xx, non-retried answer. Only OperationOutcome issue codes are taken
/// from the body: its text may carry PHI.
async fn status_error(response: reqwest::Response, label: &str) -> EhrError {
    let resource_type = label.to_owned();
    match response.status().as_u16() {
        401 => EhrError::Unauthorized,
        403 => EhrError::Forbidden { resource_type },
        404 | 410 => EhrError::NotFound { resource_type },
        status => {
            let issues = match read_capped(response, MAX_ERROR_BODY_BYTES).await {
                Ok(body) => serde_json::from_slice::<Value>(&body)
                    .map(|v| issue_codes(&v))
                    .unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            EhrError::Status {
                status,
                resource_type,
                issues,
            }
        }
    }
}

/// The distinct `issue[].code` values of an OperationOutcome, keeping only code-shaped
/// strings (a misbehaving server could put anything there).
fn issue_codes(outcome: &Value) -> Vec<String> {
    if outcome.get("resourceType").and_then(Value::as_str) != Some("OperationOutcome") {
        return Vec::new();
    }
    let mut codes: Vec<String> = Vec::new();
    let issues = outcome.get("issue").and_then(Value::as_array);
    for code in issues
        .into_iter()
        .flatten()
        .filter_map(|issue| issue.get("code").and_then(Value::as_str))
    {
        let code_shaped = (1..=40).contains(&code.len())
            && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'-');
        if code_shaped && !codes.iter().any(|c| c == code) && codes.len() < MAX_ISSUE_CODES {
            codes.push(code.to_owned());
        }
    }
    codes
}

/// A transport failure's text: the error chain without URLs.
fn transport_error(e: &reqwest::Error, attempts: u32) -> EhrError {
    let what = if e.is_connect() {
        "could not connect"
    } else if e.is_timeout() {
        "the request timed out"
    } else {
        "the connection failed"
    };
    let mut chain: Vec<String> = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        let text = redact_urls(&err.to_string());
        if !text.is_empty() && !chain.iter().any(|c| c.contains(&text)) {
            chain.push(text);
        }
        source = err.source();
    }
    let mut message = what.to_owned();
    if !chain.is_empty() {
        message.push_str(" (");
        message.push_str(&chain.join(": "));
        message.push(')');
    }
    if attempts > 1 {
        message.push_str(&format!(" after {attempts} attempts"));
    }
    EhrError::Transport(message)
}

/// `text` with every word that looks like a URL or carries a query replaced.
fn redact_urls(text: &str) -> String {
    text.split_whitespace()
        .map(|word| {
            if word.contains("://") || word.contains('?') {
                "<url>"
            } else {
                word
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Reads at most `limit` bytes of body, refusing more.
async fn read_capped(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, EhrError> {
    if let Some(length) = response.content_length()
        && length > u64::try_from(limit).unwrap_or(u64::MAX)
    {
        return Err(EhrError::TooLarge { limit });
    }
    let mut body = Vec::new();
    loop {
        let chunk = response
            .chunk()
            .await
            .map_err(|e| transport_error(&e.without_url(), 1))?;
        let Some(chunk) = chunk else {
            return Ok(body);
        };
        if body.len().saturating_add(chunk.len()) > limit {
            return Err(EhrError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
}

/// Parses and checks a FHIR base: (URL with the path cleared, path without trailing slash).
fn normalise_base(fhir_base: &str) -> Result<(Url, String), EhrError> {
    let mut url = Url::parse(fhir_base.trim())
        .map_err(|_| EhrError::Invalid("the EHR's FHIR base is not a URL"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(EhrError::Invalid(
            "the EHR's FHIR base is not an http(s) URL",
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(EhrError::Invalid("the EHR's FHIR base has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(EhrError::Invalid("the EHR's FHIR base carries credentials"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(EhrError::Invalid(
            "the EHR's FHIR base has a query or fragment",
        ));
    }
    let path = url.path().trim_end_matches('/').to_owned();
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") {
        return Err(EhrError::Invalid(
            "the EHR's FHIR base has an encoded slash in its path",
        ));
    }
    url.set_path("/");
    Ok((url, path))
}

/// A FHIR resource type's shape: a capitalised ASCII name.
fn check_resource_type(resource_type: &str) -> Result<(), EhrError> {
    let mut bytes = resource_type.bytes();
    let shaped = resource_type.len() <= 64
        && bytes.next().is_some_and(|b| b.is_ascii_uppercase())
        && bytes.all(|b| b.is_ascii_alphabetic());
    if shaped {
        Ok(())
    } else {
        Err(EhrError::Invalid(
            "the resource type is not a FHIR resource type",
        ))
    }
}

/// A FHIR id's characters (length up to [`MAX_ID_LEN`]); "." and ".." are path tricks.
fn check_id(id: &str) -> Result<(), EhrError> {
    let shaped = (1..=MAX_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && id != "."
        && id != "..";
    if shaped {
        Ok(())
    } else {
        Err(EhrError::Invalid("the resource id is not a FHIR id"))
    }
}

/// `Retry-After` as a wait from `now`: delta-seconds or an HTTP-date (IMF-fixdate, RFC 850
/// or asctime); a date in the past is no wait; anything else is `None` (back off instead).
fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        // Digits that overflow are a very long wait (and give up), not garbage.
        return Some(
            value
                .parse::<u64>()
                .map_or(Duration::MAX, Duration::from_secs),
        );
    }
    let date = chrono::DateTime::parse_from_rfc2822(value)
        .map(|d| d.with_timezone(&chrono::Utc))
        .ok()
        .or_else(|| {
            ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
                .iter()
                .find_map(|format| chrono::NaiveDateTime::parse_from_str(value, format).ok())
                .map(|naive| naive.and_utc())
        })?;
    Some((date - now).to_std().unwrap_or(Duration::ZERO))
}

/// The backoff ceiling before retry `retry` (1-based): `base_delay` doubled per retry,
/// capped at `max_delay`.
fn backoff_ceiling(policy: &RetryPolicy, retry: u32) -> Duration {
    let doublings = retry.saturating_sub(1).min(31);
    policy
        .base_delay
        .saturating_mul(1u32 << doublings)
        .min(policy.max_delay)
}

/// Full jitter: uniform between zero and [`backoff_ceiling`], so retrying clients spread out.
fn backoff(policy: &RetryPolicy, retry: u32) -> Duration {
    let ceiling = u64::try_from(backoff_ceiling(policy, retry).as_micros()).unwrap_or(u64::MAX);
    Duration::from_micros(rand::thread_rng().gen_range(0..=ceiling))
}

/// Takes one searchset page apart: matched resources into `resources`, OperationOutcome
/// messages into `warnings`; returns the raw `next` link.
fn collect_page(
    page: Value,
    resource_type: &str,
    resources: &mut Vec<Value>,
    warnings: &mut Vec<String>,
) -> Result<Option<String>, EhrError> {
    let Value::Object(mut bundle) = page else {
        return Err(EhrError::NotFhir(format!(
            "a page of a {resource_type} search is not a FHIR resource"
        )));
    };
    match bundle.get("resourceType").and_then(Value::as_str) {
        Some("Bundle") => {}
        Some("OperationOutcome") => {
            return Err(EhrError::NotFhir(format!(
                "the EHR answered a {resource_type} search with an OperationOutcome instead of a Bundle"
            )));
        }
        _ => {
            return Err(EhrError::NotFhir(format!(
                "a page of a {resource_type} search is not a Bundle"
            )));
        }
    }
    match bundle.get("type") {
        None => {}
        Some(Value::String(t)) if t == "searchset" => {}
        Some(_) => {
            return Err(EhrError::NotFhir(format!(
                "a page of a {resource_type} search is not a searchset Bundle"
            )));
        }
    }
    let next = bundle
        .get("link")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|link| link.get("relation").and_then(Value::as_str) == Some("next"))
        .and_then(|link| link.get("url").and_then(Value::as_str))
        .map(str::to_owned);
    let entries = match bundle.remove("entry") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(entries)) => entries,
        Some(_) => {
            return Err(EhrError::NotFhir(format!(
                "a page of a {resource_type} search has a malformed entry list"
            )));
        }
    };
    for entry in entries {
        let Value::Object(mut entry) = entry else {
            return Err(EhrError::NotFhir(format!(
                "a page of a {resource_type} search has a malformed entry"
            )));
        };
        let mode = entry
            .get("search")
            .and_then(|s| s.get("mode"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let Some(resource) = entry.remove("resource") else {
            continue;
        };
        let Some(entry_type) = resource.get("resourceType").and_then(Value::as_str) else {
            return Err(EhrError::NotFhir(format!(
                "a page of a {resource_type} search has an entry that is not a FHIR resource"
            )));
        };
        let is_outcome = entry_type == "OperationOutcome" && resource_type != "OperationOutcome";
        match mode.as_deref() {
            Some("outcome") => {
                for warning in outcome_warnings(&resource) {
                    push_unique(warnings, warning);
                }
            }
            None | Some("match") if is_outcome => {
                for warning in outcome_warnings(&resource) {
                    push_unique(warnings, warning);
                }
            }
            None | Some("match") if entry_type == resource_type => resources.push(resource),
            Some("match") => {
                return Err(EhrError::NotFhir(format!(
                    "a {resource_type} search matched a resource of another type"
                )));
            }
            // An untagged resource of another type is an include in all but name; "include"
            // and unknown modes are not matches.
            _ => {}
        }
    }
    Ok(next)
}

fn push_unique(warnings: &mut Vec<String>, warning: String) {
    if !warnings.contains(&warning) {
        warnings.push(warning);
    }
}

/// One line per OperationOutcome issue: "severity (code): text", the text being
/// `details.text` or else `diagnostics`, whitespace-trimmed and cut to a sane length.
fn outcome_warnings(outcome: &Value) -> Vec<String> {
    let issues = outcome.get("issue").and_then(Value::as_array);
    issues
        .into_iter()
        .flatten()
        .map(|issue| {
            let severity = issue
                .get("severity")
                .and_then(Value::as_str)
                .unwrap_or("issue");
            let code = issue
                .get("code")
                .and_then(Value::as_str)
                .unwrap_or("unknown");
            let text = issue
                .get("details")
                .and_then(|d| d.get("text"))
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .or_else(|| {
                    issue
                        .get("diagnostics")
                        .and_then(Value::as_str)
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                });
            match text {
                Some(text) => format!("{severity} ({code}): {}", cut(text, MAX_WARNING_CHARS)),
                None => format!("{severity} ({code})"),
            }
        })
        .collect()
}

/// `text` cut to `max` characters, whitespace runs collapsed, "…" marking a cut.
fn cut(text: &str, max: usize) -> String {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.chars().count() <= max {
        collapsed
    } else {
        let mut kept: String = collapsed.chars().take(max).collect();
        kept.push('…');
        kept
    }
}

fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    matches!(
        essence.as_str(),
        "application/fhir+json" | "application/json" | "application/json+fhir"
    )
}

/// The content of a FHIR Binary resource: (contentType, decoded data).
fn unwrap_binary(binary: &Value, max_bytes: usize) -> Result<(Option<String>, Vec<u8>), EhrError> {
    let content_type = binary
        .get("contentType")
        .and_then(Value::as_str)
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    let data: String = match binary.get("data") {
        None | Some(Value::Null) => return Ok((content_type, Vec::new())),
        Some(Value::String(data)) => data.chars().filter(|c| !c.is_ascii_whitespace()).collect(),
        Some(_) => {
            return Err(EhrError::NotFhir(
                "a Binary's data is not base64 text".into(),
            ));
        }
    };
    // Decoded size is at most 3/4 of the text: refuse before decoding.
    if data.len() / 4 * 3 > max_bytes.saturating_add(3) {
        return Err(EhrError::TooLarge { limit: max_bytes });
    }
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let bytes = engine
        .decode(data.as_bytes())
        .map_err(|_| EhrError::NotFhir("a Binary's data is not valid base64".into()))?;
    if bytes.len() > max_bytes {
        return Err(EhrError::TooLarge { limit: max_bytes });
    }
    Ok((content_type, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn client(base: &str) -> EhrClient {
        match EhrClient::new(
            reqwest::Client::new(),
            base,
            "token",
            RetryPolicy::default(),
        ) {
            Ok(c) => c,
            Err(e) => panic!("client for {base}: {e}"),
        }
    }

    fn now() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339("2024-03-01T12:00:00Z")
            .map(|d| d.with_timezone(&chrono::Utc))
            .unwrap_or_default()
    }

    #[test]
    fn retry_after_seconds() {
        assert_eq!(parse_retry_after("5", now()), Some(Duration::from_secs(5)));
        assert_eq!(parse_retry_after(" 0 ", now()), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("120", now()),
            Some(Duration::from_secs(120))
        );
        // Overflow is a very long wait, which gives up.
        assert_eq!(
            parse_retry_after("99999999999999999999999", now()),
            Some(Duration::MAX)
        );
    }

    #[test]
    fn retry_after_http_dates() {
        assert_eq!(
            parse_retry_after("Fri, 01 Mar 2024 12:00:10 GMT", now()),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Friday, 01-Mar-24 12:01:00 GMT", now()),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Fri Mar  1 12:00:03 2024", now()),
            Some(Duration::from_secs(3))
        );
        // In the past: retry now.
        assert_eq!(
            parse_retry_after("Thu, 29 Feb 2024 12:00:00 GMT", now()),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn retry_after_garbage_is_none() {
        for value in [
            "",
            "soon",
            "-5",
            "1.5",
            "5s",
            "Fri, 99 Mar 2024 12:00:00 GMT",
        ] {
            assert_eq!(parse_retry_after(value, now()), None, "{value:?}");
        }
    }

    #[test]
    fn retry_after_too_long_exceeds_policy() {
        let policy = RetryPolicy::default();
        let long = parse_retry_after("3600", now());
        assert!(long.is_some_and(|d| d > policy.max_retry_after));
        let long_date = parse_retry_after("Fri, 01 Mar 2024 13:00:00 GMT", now());
        assert!(long_date.is_some_and(|d| d > policy.max_retry_after));
        let short = parse_retry_after("30", now());
        assert!(short.is_some_and(|d| d <= policy.max_retry_after));
    }

    #[test]
    fn backoff_grows_and_caps() {
        let policy = RetryPolicy::default();
        let ms = |n| backoff_ceiling(&policy, n).as_millis();
        assert_eq!(ms(1), 250);
        assert_eq!(ms(2), 500);
        assert_eq!(ms(3), 1000);
        assert_eq!(ms(5), 4000);
        assert_eq!(ms(6), 8000);
        assert_eq!(ms(7), 8000);
        assert_eq!(ms(100), 8000);
        assert_eq!(ms(u32::MAX), 8000);
        for retry in 1..10 {
            for _ in 0..50 {
                assert!(backoff(&policy, retry) <= backoff_ceiling(&policy, retry));
            }
        }
        let spread: HashSet<Duration> = (0..50).map(|_| backoff(&policy, 4)).collect();
        assert!(spread.len() > 1, "jitter varies the delay");
    }

    #[test]
    fn base_normalisation() {
        let plain = client("https://ehr.example/api/FHIR/R4");
        let slash = client("https://EHR.example/api/FHIR/R4/");
        assert_eq!(plain.base_path, "/api/FHIR/R4");
        assert_eq!(slash.base_path, "/api/FHIR/R4");
        assert_eq!(
            slash.url_for("Patient/abc").as_str(),
            "https://ehr.example/api/FHIR/R4/Patient/abc"
        );
        assert_eq!(
            slash.base_dir().as_str(),
            "https://ehr.example/api/FHIR/R4/"
        );
        let root = client("http://localhost:8080/");
        assert_eq!(root.base_path, "");
        assert_eq!(
            root.url_for("Patient").as_str(),
            "http://localhost:8080/Patient"
        );
        for bad in [
            "",
            "not a url",
            "ftp://ehr.example/fhir",
            "https://user:pw@ehr.example/fhir",
            "https://ehr.example/fhir?tenant=1",
            "https://ehr.example/fhir#x",
            "file:///etc/passwd",
        ] {
            assert!(
                matches!(
                    EhrClient::new(reqwest::Client::new(), bad, "t", RetryPolicy::default()),
                    Err(EhrError::Invalid(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            EhrClient::new(
                reqwest::Client::new(),
                "https://ehr.example/fhir",
                "bad\ntoken",
                RetryPolicy::default()
            ),
            Err(EhrError::Invalid(_))
        ));
    }

    #[test]
    fn debug_hides_the_token() {
        let c = match EhrClient::new(
            reqwest::Client::new(),
            "https://ehr.example/fhir",
            "s3cr3t-token",
            RetryPolicy::default(),
        ) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    #[test]
    fn next_links_under_the_base_are_followed() {
        let c = client("https://ehr.example/fhir/");
        let ok = |link: &str| match c.resolve_under_base(link) {
            Ok(url) => url.to_string(),
            Err(e) => panic!("{link:?}: {e}"),
        };
        assert_eq!(
            ok("https://ehr.example/fhir/Observation?patient=1&page=2"),
            "https://ehr.example/fhir/Observation?patient=1&page=2"
        );
        assert_eq!(
            ok("https://ehr.example:443/fhir/Observation?page=2"),
            "https://ehr.example/fhir/Observation?page=2"
        );
        assert_eq!(
            ok("HTTPS://EHR.EXAMPLE/fhir/Observation"),
            "https://ehr.example/fhir/Observation"
        );
        assert_eq!(
            ok("Observation?page=2"),
            "https://ehr.example/fhir/Observation?page=2"
        );
        assert_eq!(ok("Binary/123"), "https://ehr.example/fhir/Binary/123");
        assert_eq!(
            ok("/fhir/Binary/123"),
            "https://ehr.example/fhir/Binary/123"
        );
        assert_eq!(ok("?page=3"), "https://ehr.example/fhir/?page=3");
        assert_eq!(
            ok("https://ehr.example/fhir?_getpages=x"),
            "https://ehr.example/fhir?_getpages=x"
        );
        // A dot segment that stays under the base is fine once resolved.
        assert_eq!(
            ok("https://ehr.example/fhir/a/../Observation"),
            "https://ehr.example/fhir/Observation"
        );
        assert_eq!(
            ok("Observation#frag"),
            "https://ehr.example/fhir/Observation"
        );
    }

    #[test]
    fn links_off_the_base_are_refused() {
        let c = client("https://ehr.example/fhir");
        for link in [
            "https://evil.example/fhir/Observation",
            "https://ehr.example.evil/fhir/Observation",
            "http://ehr.example/fhir/Observation",
            "https://ehr.example:8443/fhir/Observation",
            "https://user@ehr.example/fhir/Observation",
            "https://ehr.example/fhir2/Observation",
            "https://ehr.example/fhir2",
            "https://ehr.example/fhi",
            "https://ehr.example/",
            "https://ehr.example/other/fhir/Observation",
            "https://ehr.example/fhir/../admin",
            "https://ehr.example/fhir/%2e%2e/admin",
            "https://ehr.example/fhir/.%2E/admin",
            "https://ehr.example/fhir/..%2fadmin",
            "https://ehr.example/fhir/..%5Cadmin",
            "https://ehr.example/fhir/..\\admin",
            "../admin",
            "../../fhir2/Patient",
            "/admin",
            "//evil.example/fhir/Observation",
            "file:///etc/passwd",
            "data:text/plain,hi",
            "javascript:alert(1)",
        ] {
            assert!(
                matches!(c.resolve_under_base(link), Err(EhrError::OffBase)),
                "{link:?} should be off base"
            );
        }
        let root = client("http://127.0.0.1:8080");
        assert!(root.resolve_under_base("/Patient?page=2").is_ok());
        assert!(matches!(
            root.resolve_under_base("http://127.0.0.1:8081/Patient"),
            Err(EhrError::OffBase)
        ));
        assert!(matches!(
            root.resolve_under_base("http://localhost:8080/Patient"),
            Err(EhrError::OffBase)
        ));
    }

    #[test]
    fn entries_are_collected_by_search_mode() {
        let page = json!({
            "resourceType": "Bundle",
            "type": "searchset",
            "link": [
                {"relation": "self", "url": "https://ehr.example/fhir/Observation?patient=1"},
                {"relation": "next", "url": "https://ehr.example/fhir/Observation?page=2"}
            ],
            "entry": [
                {"resource": {"resourceType": "Observation", "id": "a"}, "search": {"mode": "match"}},
                {"resource": {"resourceType": "Observation", "id": "b"}},
                {"resource": {"resourceType": "Patient", "id": "p"}, "search": {"mode": "include"}},
                {"resource": {"resourceType": "Practitioner", "id": "q"}},
                {"resource": {"resourceType": "OperationOutcome", "issue": [
                    {"severity": "warning", "code": "processing",
                     "details": {"text": "  Some results were\n filtered.  "}},
                    {"severity": "information", "code": "informational", "diagnostics": " No notes "}
                ]}, "search": {"mode": "outcome"}},
                {"resource": {"resourceType": "OperationOutcome", "issue": [
                    {"severity": "warning", "code": "processing",
                     "details": {"text": "Some results were filtered."}}
                ]}},
                {"fullUrl": "https://ehr.example/fhir/Observation/c"}
            ]
        });
        let mut resources = Vec::new();
        let mut warnings = Vec::new();
        let next = match collect_page(page, "Observation", &mut resources, &mut warnings) {
            Ok(next) => next,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            next.as_deref(),
            Some("https://ehr.example/fhir/Observation?page=2")
        );
        let ids: Vec<&str> = resources
            .iter()
            .filter_map(|r| r.get("id").and_then(Value::as_str))
            .collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(
            warnings,
            [
                "warning (processing): Some results were filtered.",
                "information (informational): No notes",
            ]
        );
    }

    #[test]
    fn malformed_pages_are_not_fhir() {
        let mut r = Vec::new();
        let mut w = Vec::new();
        for page in [
            json!([]),
            json!({"resourceType": "Patient"}),
            json!({"resourceType": "OperationOutcome", "issue": []}),
            json!({"resourceType": "Bundle", "type": "transaction"}),
            json!({"resourceType": "Bundle", "entry": {}}),
            json!({"resourceType": "Bundle", "entry": [{"resource": {"id": "x"}}]}),
            json!({"resourceType": "Bundle", "entry": [
                {"resource": {"resourceType": "Patient"}, "search": {"mode": "match"}}
            ]}),
        ] {
            assert!(
                matches!(
                    collect_page(page.clone(), "Observation", &mut r, &mut w),
                    Err(EhrError::NotFhir(_))
                ),
                "{page}"
            );
        }
        // An empty searchset is fine.
        let empty = json!({"resourceType": "Bundle", "type": "searchset", "total": 0});
        assert!(matches!(
            collect_page(empty, "Observation", &mut r, &mut w),
            Ok(None)
        ));
    }

    #[test]
    fn long_diagnostics_are_cut() {
        let long = "x".repeat(2000);
        let outcome = json!({"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "exception", "diagnostics": long}]});
        let warnings = outcome_warnings(&outcome);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].chars().count() < MAX_WARNING_CHARS + 30);
        assert!(warnings[0].ends_with('…'));
    }

    #[test]
    fn issue_codes_only_keep_codes() {
        let outcome = json!({"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "invalid", "diagnostics": "patient 12345 unknown"},
            {"severity": "error", "code": "invalid"},
            {"severity": "error", "code": "not-supported"},
            {"severity": "error", "code": "Patient 12345?"}
        ]});
        assert_eq!(issue_codes(&outcome), ["invalid", "not-supported"]);
        assert!(issue_codes(&json!({"resourceType": "Patient"})).is_empty());
    }

    #[test]
    fn ids_and_types_are_checked() {
        assert!(check_resource_type("Observation").is_ok());
        for bad in [
            "",
            "observation",
            "Observation/1",
            "Obs?x",
            "Obs ervation",
            "../x",
        ] {
            assert!(check_resource_type(bad).is_err(), "{bad:?}");
        }
        assert!(check_id("eq081-VQEgP8drUUqCWzHfw3").is_ok());
        assert!(check_id("12724066.1").is_ok());
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a?b",
            "a b",
            "a%2fb",
            &"x".repeat(300),
        ] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn binary_resources_are_unwrapped() {
        let binary = json!({"resourceType": "Binary", "contentType": "application/pdf",
            "data": "JVBE\nRi0x"});
        let (ct, bytes) = match unwrap_binary(&binary, 1024) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(ct.as_deref(), Some("application/pdf"));
        assert_eq!(bytes, b"%PDF-1");
        assert!(matches!(
            unwrap_binary(&binary, 3),
            Err(EhrError::TooLarge { limit: 3 })
        ));
        let bad = json!({"resourceType": "Binary", "data": "***"});
        assert!(matches!(
            unwrap_binary(&bad, 1024),
            Err(EhrError::NotFhir(_))
        ));
        assert!(is_json_media_type("application/fhir+json; charset=utf-8"));
        assert!(is_json_media_type("Application/JSON"));
        assert!(!is_json_media_type("application/pdf"));
    }

    #[test]
    fn error_texts_carry_no_phi() {
        let c = client("https://ehr.example/fhir");
        let attachment = c
            .resolve_under_base("Binary/abc123?patient=98765")
            .map(|u| c.type_label(&u))
            .unwrap_or_default();
        assert_eq!(attachment, "Binary");
        let document = c
            .resolve_under_base("documents/98765")
            .map(|u| c.type_label(&u))
            .unwrap_or_default();
        assert_eq!(document, "attachment");
        let errors = [
            EhrError::Unauthorized,
            EhrError::Forbidden {
                resource_type: attachment.clone(),
            },
            EhrError::NotFound {
                resource_type: "Patient".into(),
            },
            EhrError::RateLimited { attempts: 5 },
            EhrError::Unavailable {
                status: 503,
                attempts: 5,
            },
            EhrError::Status {
                status: 400,
                resource_type: "Observation".into(),
                issues: issue_codes(&json!({"resourceType": "OperationOutcome", "issue": [
                    {"code": "invalid", "diagnostics": "bad patient=98765"},
                    {"code": "patient=98765"}
                ]})),
            },
            EhrError::OffBase,
            EhrError::TooManyPages { pages: 200 },
            EhrError::NotFhir("x".into()),
            EhrError::TooLarge { limit: 10 },
            EhrError::Transport(redact_urls(
                "error sending request for url (https://ehr.example/fhir/Patient?identifier=98765)",
            )),
            EhrError::Transport(redact_urls("dns error: x /fhir/Observation?patient=98765")),
            EhrError::Invalid("the resource id is not a FHIR id"),
        ];
        for e in errors {
            let text = e.to_string();
            assert!(!text.contains('?'), "{text}");
            assert!(!text.contains("98765"), "{text}");
            assert!(!text.contains("patient="), "{text}");
            assert!(!text.contains("://"), "{text}");
        }
        let status = EhrError::Status {
            status: 400,
            resource_type: "Observation".into(),
            issues: vec!["invalid".into()],
        };
        assert_eq!(
            status.to_string(),
            "the EHR answered 400 to a request for Observation (OperationOutcome issue codes: invalid)"
        );
    }

    #[test]
    fn query_parameters_are_encoded() {
        let c = client("https://ehr.example/fhir");
        let mut url = c.url_for("Observation");
        url.query_pairs_mut().extend_pairs([
            ("patient", "a&b=c"),
            ("code", "http://loinc.org|1234-5"),
            ("date", "ge2024-01-01T00:00:00+01:00"),
        ]);
        assert_eq!(
            url.query(),
            Some(
                "patient=a%26b%3Dc&code=http%3A%2F%2Floinc.org%7C1234-5&date=ge2024-01-01T00%3A00%3A00%2B01%3A00"
            )
        );
    }

    #[test]
    fn stats_start_at_zero() {
        assert_eq!(
            client("https://ehr.example/fhir").stats(),
            ClientStats::default()
        );
    }
}
