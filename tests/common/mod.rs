//! Shared test harness: one Hearth server per test binary (on its own thread and actix
//! system), a fresh tenant per test, real PostgreSQL from `scripts/test.sh`.
#![allow(dead_code)]

pub mod app;
pub mod peer;
pub mod smart;

use std::net::TcpListener;
use std::sync::OnceLock;
use std::sync::mpsc;

use hearth::auth::TokenService;
use hearth::config::Config;
use hearth::store::{self, Store};
use hearth::tenant::TenantId;
use serde_json::Value;
use sqlx::PgPool;

pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// The app's inactivity timeout in the test server.
pub const APP_IDLE_SECS: u64 = 6;

pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with scripts/test.sh, which provisions PostgreSQL")
    })
}

pub struct TestServer {
    /// `http://127.0.0.1:PORT`
    pub origin: String,
    pub config: Config,
}

/// The server of this test binary, started on first use.
pub fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| start_server(|_| {}))
}

/// A server's configuration in the tests, at `origin`.
pub fn test_config(origin: &str) -> Config {
    let mut config = Config::default();
    config.database.url = Some(env("DATABASE_URL"));
    config.database.migration_url = Some(env("HEARTH_MIGRATION_DATABASE_URL"));
    config.database.max_connections = 16;
    config.server.public_base_url = origin.to_owned();
    config.server.max_body_bytes = MAX_BODY_BYTES;
    config.server.workers = 2;
    // The SMART tests' identity provider and JWKS servers are plain-http loopback peers,
    // and a short leeway keeps expiry tests quick.
    config.auth.allow_http_key_urls = true;
    config.auth.clock_skew_secs = 2;
    // The SMART app tests' EHR is a plain-http loopback peer, and a short inactivity
    // timeout keeps the automatic-logoff tests quick.
    config.app.allow_http_ehr = true;
    config.app.idle_timeout_secs = APP_IDLE_SECS;
    // Every server of every test binary runs export jobs: one shared export directory (as
    // production's servers must share one), small pages with a pause, so a test can catch
    // a job running.
    config.bulk.dir = std::env::temp_dir().join("hearth-test-bulk");
    config.bulk.page_size = 25;
    config.bulk.pause_between_pages_ms = 40;
    config.bulk.poll_interval_ms = 100;
    config
}

/// A server with the test configuration, changed by `adjust`, on an ephemeral port.
pub fn start_server(adjust: impl FnOnce(&mut Config)) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    let origin = format!("http://{}", listener.local_addr().expect("local addr"));
    let mut config = test_config(&origin);
    adjust(&mut config);
    // `adjust` may name the server differently (say, `localhost` for another site).
    let origin = config.server.public_base_url.clone();
    let server_config = config.clone();
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let state = match hearth::server::prepare(server_config).await {
                Ok(state) => actix_web::web::Data::new(state),
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            match hearth::server::http_server(state, listener) {
                Ok(server) => {
                    let _ = ready_tx.send(Ok(()));
                    let _ = server.await;
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                }
            }
        });
    });
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("hearth did not start: {e}"),
        Err(e) => panic!("hearth server thread died: {e}"),
    }
    TestServer { origin, config }
}

/// A fresh tenant with a token that may do everything in it.
pub struct Ctx {
    pub origin: String,
    pub tenant: TenantId,
    pub token: String,
    pub client: reqwest::Client,
    pub store: Store,
    config: Config,
}

pub fn unique_tenant() -> TenantId {
    let id = format!("t-{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    TenantId::parse(&id).expect("valid tenant id")
}

pub async fn app_pool() -> PgPool {
    store::connect(&env("DATABASE_URL"), 4)
        .await
        .expect("connect as the app role")
}

pub async fn owner_pool() -> PgPool {
    store::connect(&env("HEARTH_MIGRATION_DATABASE_URL"), 2)
        .await
        .expect("connect as the owner role")
}

pub async fn ctx() -> Ctx {
    ctx_on(server(), unique_tenant()).await
}

/// A new tenant `tenant` on `server`, with a token that may do everything in it.
pub async fn ctx_on(server: &TestServer, tenant: TenantId) -> Ctx {
    let store = Store::new(app_pool().await, 1000);
    match store.create_tenant(&tenant, "test tenant").await {
        // Tests sharing a named tenant (the demo EHR's) create it once.
        Ok(()) | Err(store::StoreError::TenantExists) => {}
        Err(e) => panic!("create tenant: {e}"),
    }
    let mut ctx = Ctx {
        origin: server.origin.clone(),
        tenant,
        token: String::new(),
        client: reqwest::Client::new(),
        store,
        config: server.config.clone(),
    };
    ctx.token = ctx.token_with("system/*.cruds").await;
    ctx
}

impl Ctx {
    pub fn url(&self, path: &str) -> String {
        format!("{}/fhir/{}/{}", self.origin, self.tenant, path)
    }

    pub async fn token_with(&self, scope: &str) -> String {
        TokenService::new(self.store.clone())
            .mint(
                &self.tenant,
                &self.config.fhir_base(&self.tenant),
                "test-client",
                scope,
                300,
            )
            .await
            .expect("mint token")
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path)).bearer_auth(&self.token)
    }

    pub fn post(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        self.client
            .post(self.url(path))
            .bearer_auth(&self.token)
            .header("content-type", "application/fhir+json")
            .body(body.to_string())
    }

    pub fn put(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        self.client
            .put(self.url(path))
            .bearer_auth(&self.token)
            .header("content-type", "application/fhir+json")
            .body(body.to_string())
    }

    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.delete(self.url(path)).bearer_auth(&self.token)
    }

    /// Create a resource and return its JSON as stored.
    pub async fn create(&self, body: &Value) -> Value {
        let resource_type = body["resourceType"].as_str().expect("resourceType");
        let response = self
            .post(resource_type, body)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 201, "create {resource_type}");
        response.json().await.expect("json body")
    }
}

/// Part `index` of a compact JWT (0: header, 1: claims), decoded, unverified.
pub fn jwt_part(token: &str, index: usize) -> Value {
    use base64::Engine;
    let part = token.split('.').nth(index).expect("JWT part");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .expect("base64url"),
    )
    .expect("JSON")
}

/// Assert an error response: the status, a FHIR JSON OperationOutcome body, and return it.
pub async fn expect_outcome(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/fhir+json"),
        "content-type {content_type}"
    );
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
    let issues = body["issue"].as_array().expect("issue array");
    assert!(!issues.is_empty(), "at least one issue");
    assert!(
        issues
            .iter()
            .all(|i| i["severity"].is_string() && i["code"].is_string())
    );
    body
}

pub fn patient(family: &str) -> Value {
    serde_json::json!({
        "resourceType": "Patient",
        "name": [{"family": family, "given": ["Test"]}],
        "gender": "female",
        "birthDate": "1971-05-06"
    })
}

/// The resources of a search, after checking the answer is a Bundle.
pub async fn search_resources(ctx: &Ctx, query: &str) -> Vec<Value> {
    let bundle: Value = ctx
        .get(query)
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("json");
    assert_eq!(bundle["resourceType"], "Bundle", "{query}: {bundle}");
    bundle["entry"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e["resource"].clone())
        .collect()
}

/// Kick off a Bulk Data export at `path` with `token` (and more headers); the status URL.
pub async fn export_kick_off(
    ctx: &Ctx,
    token: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> String {
    let mut request = ctx
        .client
        .get(ctx.url(path))
        .bearer_auth(token)
        .header("accept", "application/fhir+json")
        .header("prefer", "respond-async");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.expect("kick-off");
    assert_eq!(response.status(), 202, "kick-off {path}");
    response.headers()["content-location"]
        .to_str()
        .expect("content-location")
        .to_owned()
}

/// Poll an export's status URL until the manifest; the manifest and whether a 202 with
/// `X-Progress` and `Retry-After` was seen first.
pub async fn export_manifest(ctx: &Ctx, token: &str, status_url: &str) -> (Value, bool) {
    let started = std::time::Instant::now();
    let mut saw_progress = false;
    loop {
        let response = ctx
            .client
            .get(status_url)
            .bearer_auth(token)
            .send()
            .await
            .expect("status");
        match response.status().as_u16() {
            202 => {
                saw_progress |= response.headers().contains_key("x-progress")
                    && response.headers().contains_key("retry-after");
            }
            200 => return (response.json().await.expect("manifest"), saw_progress),
            other => panic!(
                "status answered {other}: {}",
                response.text().await.unwrap_or_default()
            ),
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "the export did not finish"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
