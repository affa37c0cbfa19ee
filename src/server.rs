//! Assemble the HTTP server: state, middleware, routes, graceful shutdown.

use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};

use crate::auth::TokenService;
use crate::config::{Config, ConfigError};
use crate::ops::{self, Metrics};
use crate::state::AppState;
use crate::store::{self, SchemaStatus, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("refusing to serve: {0}")]
    UnsafeRole(String),
    #[error("app session key: {0}")]
    SessionKey(#[from] crate::auth::seal::SealError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
}

/// Connect, migrate when an owner URL is configured, check the app role, build the state.
pub async fn prepare(config: Config) -> Result<AppState, StartupError> {
    if let Some(owner_url) = &config.database.migration_url {
        let owner = store::connect(owner_url, 2).await?;
        store::migrate(&owner).await?;
        owner.close().await;
    }
    let pool = store::connect(config.database_url()?, config.database.max_connections).await?;
    let store = Store::new(pool, config.database.lock_timeout_ms);
    let problems = store.check_app_role().await?;
    if !problems.is_empty() {
        return Err(StartupError::UnsafeRole(problems.join("; ")));
    }
    if let SchemaStatus::Behind { applied, expected } = store::schema_status(store.pool()).await? {
        tracing::warn!(
            applied,
            expected,
            "database schema is behind; run `hearth migrate`"
        );
    }
    let app_sealer = match &config.app.session_key {
        Some(key) => crate::auth::seal::Sealer::from_base64(key)?,
        None => {
            tracing::warn!(
                "no app.session_key (HEARTH_APP_SESSION_KEY): app sessions end when this process does"
            );
            crate::auth::seal::Sealer::random()
        }
    };
    Ok(AppState {
        app_sealer,
        demo_ehr: Default::default(),
        bedrock: config.ai.bedrock_settings(),
        ehr_documents: crate::auth::fetch::DocumentFetcher::new(config.app.allow_http_ehr),
        ehr_http: crate::ehr::client::http_client(std::time::Duration::from_secs(30)),
        tokens: TokenService::new(store.clone()).with_clock_skew(config.auth.clock_skew_secs),
        key_documents: crate::auth::fetch::DocumentFetcher::new(config.auth.allow_http_key_urls),
        identity_providers: crate::auth::idp::IdentityProviders::new(store.clone()),
        audit_writer: crate::audit::batch::AuditWriter::start(store.clone()),
        store,
        metrics: std::sync::Arc::new(Metrics::new()?),
        started_at: chrono::Utc::now(),
        tenant_settings: Default::default(),
        access_policies: Default::default(),
        specialties: Default::default(),
        config,
    })
}

/// The HTTP server on `listener`. Run it by awaiting it; SIGINT/SIGTERM stop it gracefully.
pub fn http_server(
    state: web::Data<AppState>,
    listener: TcpListener,
) -> Result<Server, StartupError> {
    let workers = match state.config.server.workers {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let shutdown = state.config.server.shutdown_timeout_secs;
    // Every server that accepts $export runs export jobs (its own and any whose server
    // stopped), so an accepted job always has a worker.
    tokio::spawn(crate::bulk::run_exporter(state.clone().into_inner()));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(from_fn(ops::request_log))
            .route("/healthz", web::get().to(ops::healthz))
            .route("/readyz", web::get().to(ops::readyz))
            .route("/metrics", web::get().to(ops::metrics_endpoint))
            .configure(crate::app::configure)
            .configure(crate::demo_ehr::configure)
            .configure(crate::oauth::configure)
            .configure(crate::fhir::configure)
            .default_service(web::to(crate::fhir::not_found))
    })
    .workers(workers)
    .shutdown_timeout(shutdown)
    .client_request_timeout(Duration::from_secs(30))
    .listen(listener)?
    .run();
    Ok(server)
}

/// The background app-session sweeper: ends sessions nobody came back to, a quarter of
/// the idle timeout after they went idle at most.
pub fn spawn_session_sweeper(state: &AppState) -> tokio::task::JoinHandle<()> {
    let every = (state.config.app.idle_timeout_secs / 4).clamp(1, 60);
    tokio::spawn(crate::app::session::run_session_sweeper(
        state.store.clone(),
        Duration::from_secs(every),
    ))
}

/// The background audit sealer (`audit.seal_interval_ms`; 0 = none): it hash-chains every
/// tenant's new audit events, off the request path. Stops when the handle is aborted or the
/// runtime ends.
pub fn spawn_audit_sealer(state: &AppState) -> Option<tokio::task::JoinHandle<()>> {
    let interval = state.config.audit.seal_interval_ms;
    (interval > 0).then(|| {
        tokio::spawn(crate::audit::run_sealer(
            state.store.clone(),
            Duration::from_millis(interval),
        ))
    })
}
