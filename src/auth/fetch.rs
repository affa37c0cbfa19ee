//! Key material fetched over HTTP — client JWKS URLs, OIDC discovery documents, identity
//! providers' JWKS — cached as long as the publisher's `Cache-Control` allows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::CACHE_CONTROL;

/// Freshness when the response says nothing (`Cache-Control` absent).
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);
/// Never trust a document longer than this, whatever the header says.
const MAX_AGE_CAP: Duration = Duration::from_secs(24 * 3600);
/// A document is refetched for an unknown key id at most this often (a flood of tokens with
/// made-up kids must not become a flood of fetches).
const REFETCH_MIN_INTERVAL: Duration = Duration::from_secs(10);
/// Documents bigger than this are refused.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0} is not an https URL")]
    NotHttps(String),
    #[error("fetching {url} failed: {reason}")]
    Http { url: String, reason: String },
    #[error("{url} did not return a JSON document")]
    NotJson { url: String },
}

struct Cached {
    document: Arc<serde_json::Value>,
    fetched: Instant,
    fresh_for: Duration,
}

/// A cache of JSON documents by URL.
pub struct DocumentFetcher {
    http: reqwest::Client,
    allow_http: bool,
    cache: Mutex<HashMap<String, Cached>>,
}

impl DocumentFetcher {
    pub fn new(allow_http: bool) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        DocumentFetcher {
            http,
            allow_http,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Is `url` acceptable as a source of keys?
    pub fn check_url(&self, url: &str) -> Result<(), FetchError> {
        if url.starts_with("https://") || (self.allow_http && url.starts_with("http://")) {
            Ok(())
        } else {
            Err(FetchError::NotHttps(url.to_owned()))
        }
    }

    /// The document at `url`, from the cache while fresh.
    pub async fn get(&self, url: &str) -> Result<Arc<serde_json::Value>, FetchError> {
        if let Some(doc) = self.cached(url, |c| c.fetched.elapsed() < c.fresh_for) {
            return Ok(doc);
        }
        self.fetch(url).await
    }

    /// Refetch `url` because it lacked something (a key id) — unless it was fetched within
    /// [`REFETCH_MIN_INTERVAL`], in which case the cached copy is the answer.
    pub async fn refresh(&self, url: &str) -> Result<Arc<serde_json::Value>, FetchError> {
        if let Some(doc) = self.cached(url, |c| c.fetched.elapsed() < REFETCH_MIN_INTERVAL) {
            return Ok(doc);
        }
        self.fetch(url).await
    }

    /// The key with `kid` suiting `alg` in the JWKS at `url`: from the cached copy, else
    /// from a refetch (the publisher may have rotated; refetches are rate-limited).
    pub async fn key(
        &self,
        url: &str,
        kid: Option<&str>,
        alg: jsonwebtoken::Algorithm,
        alg_name: &str,
    ) -> Result<Option<serde_json::Value>, FetchError> {
        let cached = self.get(url).await?;
        if let Some(key) = super::jwt::suitable_key(&cached, kid, alg, alg_name) {
            return Ok(Some(key));
        }
        let fresh = self.refresh(url).await?;
        Ok(super::jwt::suitable_key(&fresh, kid, alg, alg_name))
    }

    fn cached(
        &self,
        url: &str,
        usable: impl Fn(&Cached) -> bool,
    ) -> Option<Arc<serde_json::Value>> {
        let cache = self.cache.lock().ok()?;
        cache
            .get(url)
            .filter(|c| usable(c))
            .map(|c| c.document.clone())
    }

    async fn fetch(&self, url: &str) -> Result<Arc<serde_json::Value>, FetchError> {
        self.check_url(url)?;
        let http_error = |reason: String| FetchError::Http {
            url: url.to_owned(),
            reason,
        };
        let response = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| http_error(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(http_error(format!("status {}", response.status())));
        }
        let fresh_for = response
            .headers()
            .get(CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .map_or(DEFAULT_MAX_AGE, freshness);
        let bytes = response
            .bytes()
            .await
            .map_err(|e| http_error(e.without_url().to_string()))?;
        if bytes.len() > MAX_DOCUMENT_BYTES {
            return Err(http_error("document too large".into()));
        }
        let document: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|_| FetchError::NotJson {
                url: url.to_owned(),
            })?;
        let document = Arc::new(document);
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(
                url.to_owned(),
                Cached {
                    document: document.clone(),
                    fetched: Instant::now(),
                    fresh_for,
                },
            );
        }
        Ok(document)
    }
}

/// How long a response may be reused, from its `Cache-Control` header: `no-store` and
/// `no-cache` mean not at all, `max-age` (capped) otherwise.
pub fn freshness(cache_control: &str) -> Duration {
    let mut max_age = None;
    for directive in cache_control.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Duration::ZERO;
        }
        if let Some(value) = lower.strip_prefix("max-age=") {
            max_age = value.trim_matches('"').parse::<u64>().ok();
        }
    }
    max_age.map_or(DEFAULT_MAX_AGE, |s| Duration::from_secs(s).min(MAX_AGE_CAP))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_is_honoured() {
        assert_eq!(freshness("max-age=60"), Duration::from_secs(60));
        assert_eq!(freshness("public, max-age=5"), Duration::from_secs(5));
        assert_eq!(freshness("no-store"), Duration::ZERO);
        assert_eq!(freshness("max-age=60, no-cache"), Duration::ZERO);
        assert_eq!(freshness("max-age=999999999"), MAX_AGE_CAP);
        assert_eq!(freshness("public"), DEFAULT_MAX_AGE);
    }
}
