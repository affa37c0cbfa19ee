//! Configuration: one struct, one precedence.
//!
//! Precedence, lowest to highest: built-in defaults < config file (TOML; `--config PATH`, or
//! `HEARTH_CONFIG`, or `./hearth.toml` when present) < environment variables < command-line
//! flags. Every key and its variable are listed in `hearth.example.toml`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub log: LogConfig,
    pub mllp: MllpConfig,
    pub audit: AuditConfig,
    pub app: AppConfig,
    pub ai: AiConfig,
    pub bulk: BulkConfig,
}

/// Bulk Data export (`crate::bulk`): where files go, how many jobs run, how long they stay.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BulkConfig {
    /// HEARTH_BULK_DIR: the directory export files are written to (one folder per tenant
    /// and job). Holds PHI: put it on an encrypted volume.
    pub dir: PathBuf,
    /// HEARTH_BULK_JOBS_PER_TENANT: export jobs of one tenant running at once (others wait).
    pub jobs_per_tenant: i64,
    /// HEARTH_BULK_MAX_FILE_BYTES: a type's NDJSON is split into parts of about this size.
    pub max_file_bytes: u64,
    /// HEARTH_BULK_RETENTION_SECS: an ended job's files and status stay this long.
    pub retention_secs: i64,
    /// HEARTH_BULK_PAGE_SIZE: resources read per page (one query, then one progress save).
    pub page_size: u32,
    /// A running job's lease: a job whose worker stopped (crash, restart) is resumed by any
    /// server after this long.
    pub lease_secs: i64,
    /// HEARTH_BULK_PAUSE_MS: a pause between pages, to spare the database during the day.
    pub pause_between_pages_ms: u64,
    /// How often the exporter looks for work.
    pub poll_interval_ms: u64,
    /// HEARTH_BULK_S3_BUCKET: finished files go to this bucket (SSE-KMS) instead of
    /// staying in `dir`; credentials from the AWS_* environment variables.
    pub s3_bucket: Option<String>,
    /// HEARTH_BULK_S3_REGION.
    pub s3_region: Option<String>,
    /// HEARTH_BULK_S3_ENDPOINT_URL: a VPC endpoint (or a local stand-in in tests).
    pub s3_endpoint_url: Option<String>,
    /// HEARTH_BULK_S3_KMS_KEY_ID: the customer-managed key (else the bucket's default).
    pub s3_kms_key_id: Option<String>,
    /// HEARTH_BULK_S3_PREFIX: key prefix (e.g. `exports/`).
    pub s3_prefix: String,
    /// Fixed credentials for a stand-in; not settable from a file or the environment.
    #[serde(skip)]
    pub s3_stand_in_credentials: Option<(String, String)>,
}

impl Default for BulkConfig {
    fn default() -> Self {
        BulkConfig {
            dir: PathBuf::from(".hearth/bulk"),
            jobs_per_tenant: 2,
            max_file_bytes: 256 * 1024 * 1024,
            retention_secs: 24 * 3600,
            page_size: 1000,
            lease_secs: 60,
            pause_between_pages_ms: 0,
            poll_interval_ms: 1000,
            s3_bucket: None,
            s3_region: None,
            s3_endpoint_url: None,
            s3_kms_key_id: None,
            s3_prefix: String::new(),
            s3_stand_in_credentials: None,
        }
    }
}

/// Amazon Bedrock for AI summaries (`crate::clinical`). Tenants choose the engine and
/// declare their BAA with `hearth tenant ai-settings`; this only says how to reach Bedrock.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AiConfig {
    /// HEARTH_BEDROCK_REGION: e.g. us-east-1; unset = no Bedrock (extractive only).
    pub bedrock_region: Option<String>,
    /// HEARTH_BEDROCK_ENDPOINT_URL: a VPC endpoint, or a local stand-in in tests.
    pub bedrock_endpoint_url: Option<String>,
    /// Fixed credentials for a stand-in. Not settable from a file or the environment
    /// (production reads the AWS environment variables): tests set it in code.
    #[serde(skip)]
    pub stand_in_credentials: Option<(String, String)>,
}

impl AiConfig {
    /// Connection settings; credentials come from the AWS environment variables.
    pub fn bedrock_settings(&self) -> Option<crate::clinical::bedrock::BedrockSettings> {
        let region = self.bedrock_region.clone()?;
        Some(crate::clinical::bedrock::BedrockSettings {
            region,
            endpoint_url: self.bedrock_endpoint_url.clone(),
            static_credentials: self.stand_in_credentials.clone(),
            timeout: std::time::Duration::from_secs(60),
        })
    }
}

/// The SMART app (`crate::app`): sessions of clinicians who launched Hearth from an EHR.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppConfig {
    /// HEARTH_APP_IDLE_TIMEOUT_SECS: a session with no activity for this long is ended
    /// (automatic logoff on shared workstations).
    pub idle_timeout_secs: u64,
    /// HEARTH_APP_SESSION_LIFETIME_SECS: a session ends this long after launch, active or not.
    pub session_lifetime_secs: u64,
    /// HEARTH_APP_SESSION_KEY: 32 bytes, base64, sealing the EHR tokens kept for a session.
    /// Without it a random key is made at start (sessions do not survive a restart and are
    /// not shared between instances).
    pub session_key: Option<String>,
    /// How long a launch may take between the redirect to the EHR and the callback.
    pub launch_ttl_secs: u64,
    /// HEARTH_APP_DEMO_EHR: Hearth's `demo` tenant plays an EHR (authorize endpoint with a
    /// patient/practitioner picker). Only with HEARTH_MODE=demo: refused otherwise.
    pub demo_ehr: bool,
    /// HEARTH_APP_ALLOW_HTTP_EHR: EHRs on plain http (loopback tests and the demo only).
    pub allow_http_ehr: bool,
    /// HEARTH_APP_DEMO_EHR_TENANT: the tenant that plays the demo EHR.
    pub demo_ehr_tenant: String,
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig {
            idle_timeout_secs: 15 * 60,
            session_lifetime_secs: 12 * 3600,
            session_key: None,
            launch_ttl_secs: 600,
            demo_ehr: false,
            allow_http_ehr: false,
            demo_ehr_tenant: "demo".into(),
        }
    }
}

/// What Hearth runs as: a production server, or a demo with extra demo-only features.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunMode {
    #[default]
    Production,
    Demo,
}

impl std::str::FromStr for RunMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "production" => Ok(RunMode::Production),
            "demo" => Ok(RunMode::Demo),
            other => Err(format!("{other:?} is not production or demo")),
        }
    }
}

/// The audit log (`crate::audit`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// HEARTH_AUDIT_RETENTION_DAYS: how long audit events are kept. Purging older ones is
    /// an operator's act through the maintenance role (`hearth audit purge`), never automatic.
    pub retention_days: u32,
    /// HEARTH_AUDIT_SEAL_INTERVAL_MS: how often `hearth serve` seals new events into the
    /// hash chain; 0 turns the background sealer off (`hearth audit seal` still works).
    pub seal_interval_ms: u64,
    /// Record the FHIR API's audit trail. Not settable from a file or the environment: only
    /// `hearth bench-access` turns it off, in its own in-process server, to measure its cost.
    #[serde(skip)]
    pub trail: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            // Six years: HIPAA's documentation retention (45 CFR 164.316(b)(2)).
            retention_days: 2190,
            seal_interval_ms: 1000,
            trail: true,
        }
    }
}

/// HL7 v2 over MLLP. Listeners are configured in the file only (they are structured).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MllpConfig {
    pub listeners: Vec<MllpListenerConfig>,
}

/// One MLLP port. It belongs to one tenant: every message it receives, accepted or not, is
/// stored in that tenant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MllpListenerConfig {
    pub name: String,
    pub listen: SocketAddr,
    pub tenant: String,
    #[serde(default)]
    pub tls: Option<MllpTlsConfig>,
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: usize,
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// Senders allowed on this port; a message from anyone else is refused with AR.
    #[serde(default)]
    pub feeds: Vec<FeedConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MllpTlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// A sending system and the site conventions of its messages.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeedConfig {
    pub name: String,
    /// MSH-3.1; absent matches any.
    pub sending_application: Option<String>,
    /// MSH-4.1; absent matches any.
    pub sending_facility: Option<String>,
    /// Required TLS client identity: certificate subject CN or a DNS SAN.
    pub client_identity: Option<String>,
    /// IANA zone for timestamps without an offset (e.g. "America/New_York"). Without it
    /// such timestamps are an error (AE): guessing a zone silently shifts clinical times.
    pub time_zone: Option<String>,
    /// Overrides MSH-18: "ASCII", "8859/1" or "UTF-8".
    pub charset: Option<String>,
    /// Identifier system for PID-3 values whose assigning authority is not mapped below.
    pub default_identifier_system: Option<String>,
    /// Assigning authority (CX-4.1 namespace) to identifier system URI.
    pub assigning_authorities: BTreeMap<String, String>,
    /// What to do with Z-segments: ignore them (default) or refuse the message.
    pub reject_z_segments: bool,
}

fn default_max_frame_bytes() -> usize {
    16 * 1024 * 1024
}

fn default_idle_timeout_secs() -> u64 {
    300
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// HEARTH_LISTEN
    pub listen: SocketAddr,
    /// HEARTH_PUBLIC_BASE_URL: the URL clients reach Hearth at (no trailing slash); the FHIR
    /// base of tenant T is `{public_base_url}/fhir/T`, which is also the token `iss`/`aud`.
    pub public_base_url: String,
    /// HEARTH_MAX_BODY_BYTES: larger request bodies get 413.
    pub max_body_bytes: usize,
    /// HEARTH_WORKERS: HTTP worker threads; 0 = one per core.
    pub workers: usize,
    /// HEARTH_SHUTDOWN_TIMEOUT_SECS: how long in-flight requests may take to finish on SIGTERM.
    pub shutdown_timeout_secs: u64,
    /// HEARTH_MAX_BUNDLE_ENTRIES: transaction and batch Bundles with more entries get 413.
    pub max_bundle_entries: usize,
    /// HEARTH_MODE: `production` (default) or `demo`.
    pub mode: RunMode,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// DATABASE_URL (or HEARTH_DATABASE_URL): the app role; owns nothing, cannot bypass RLS.
    pub url: Option<String>,
    /// HEARTH_MIGRATION_DATABASE_URL: the owner role, used by `hearth migrate`, by `serve` at
    /// start-up, and by `hearth tenant list`. Without it `serve` does not migrate.
    pub migration_url: Option<String>,
    /// HEARTH_DB_MAX_CONNECTIONS
    pub max_connections: u32,
    /// HEARTH_DB_LOCK_TIMEOUT_MS: how long an update waits for a resource another request is
    /// changing before answering 409.
    pub lock_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HEARTH_TOKEN_TTL_SECS: lifetime of tokens minted by `hearth token`.
    pub token_ttl_secs: u64,
    /// Lifetime of Backend Services access tokens (SMART caps it at 300 s).
    pub backend_token_ttl_secs: u64,
    /// HEARTH_CLOCK_SKEW_SECS: leeway for `exp`/`nbf`/`iat` of tokens and assertions.
    pub clock_skew_secs: u64,
    /// HEARTH_ALLOW_HTTP_KEY_URLS: let JWKS URLs and OIDC discovery use plain http (for
    /// loopback development and tests; production keys come over https only).
    pub allow_http_key_urls: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// HEARTH_LOG (or RUST_LOG): a tracing filter such as `info` or `hearth=debug`.
    pub filter: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_base_url: "http://127.0.0.1:8080".into(),
            max_body_bytes: 16 * 1024 * 1024,
            workers: 0,
            shutdown_timeout_secs: 30,
            max_bundle_entries: 1000,
            mode: RunMode::Production,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: None,
            migration_url: None,
            max_connections: 32,
            lock_timeout_ms: 1000,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            token_ttl_secs: 3600,
            backend_token_ttl_secs: 300,
            clock_skew_secs: 30,
            allow_http_key_urls: false,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            filter: "info,sqlx=warn".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("environment variable {name} is invalid: {reason}")]
    Env { name: &'static str, reason: String },
    #[error("no database configured: set DATABASE_URL or [database] url")]
    NoDatabase,
    #[error("invalid configuration: {0}")]
    Invalid(&'static str),
}

impl Config {
    /// Defaults, then the file (explicit path, `HEARTH_CONFIG`, or `./hearth.toml`), then
    /// the environment. Flags are applied by the caller on the returned value.
    pub fn load(explicit_file: Option<&Path>) -> Result<Config, ConfigError> {
        let env_file = std::env::var_os("HEARTH_CONFIG").map(PathBuf::from);
        let file = explicit_file
            .map(Path::to_path_buf)
            .or(env_file)
            .or_else(|| {
                let local = PathBuf::from("hearth.toml");
                local.exists().then_some(local)
            });
        let mut config = match file {
            Some(path) => Self::from_file(&path)?,
            None => Config::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })
    }

    /// Overlay environment variables (read through `var`, so tests need not touch the process
    /// environment).
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn parsed<T: std::str::FromStr>(name: &'static str, value: String) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            value.parse().map_err(|e: T::Err| ConfigError::Env {
                name,
                reason: e.to_string(),
            })
        }
        if let Some(v) = var("HEARTH_LISTEN") {
            self.server.listen = parsed("HEARTH_LISTEN", v)?;
        }
        if let Some(v) = var("HEARTH_PUBLIC_BASE_URL") {
            self.server.public_base_url = v;
        }
        if let Some(v) = var("HEARTH_MAX_BODY_BYTES") {
            self.server.max_body_bytes = parsed("HEARTH_MAX_BODY_BYTES", v)?;
        }
        if let Some(v) = var("HEARTH_WORKERS") {
            self.server.workers = parsed("HEARTH_WORKERS", v)?;
        }
        if let Some(v) = var("HEARTH_SHUTDOWN_TIMEOUT_SECS") {
            self.server.shutdown_timeout_secs = parsed("HEARTH_SHUTDOWN_TIMEOUT_SECS", v)?;
        }
        if let Some(v) = var("HEARTH_MAX_BUNDLE_ENTRIES") {
            self.server.max_bundle_entries = parsed("HEARTH_MAX_BUNDLE_ENTRIES", v)?;
        }
        if let Some(v) = var("HEARTH_DATABASE_URL").or_else(|| var("DATABASE_URL")) {
            self.database.url = Some(v);
        }
        if let Some(v) = var("HEARTH_MIGRATION_DATABASE_URL") {
            self.database.migration_url = Some(v);
        }
        if let Some(v) = var("HEARTH_DB_MAX_CONNECTIONS") {
            self.database.max_connections = parsed("HEARTH_DB_MAX_CONNECTIONS", v)?;
        }
        if let Some(v) = var("HEARTH_DB_LOCK_TIMEOUT_MS") {
            self.database.lock_timeout_ms = parsed("HEARTH_DB_LOCK_TIMEOUT_MS", v)?;
        }
        if let Some(v) = var("HEARTH_TOKEN_TTL_SECS") {
            self.auth.token_ttl_secs = parsed("HEARTH_TOKEN_TTL_SECS", v)?;
        }
        if let Some(v) = var("HEARTH_CLOCK_SKEW_SECS") {
            self.auth.clock_skew_secs = parsed("HEARTH_CLOCK_SKEW_SECS", v)?;
        }
        if let Some(v) = var("HEARTH_ALLOW_HTTP_KEY_URLS") {
            self.auth.allow_http_key_urls = parsed("HEARTH_ALLOW_HTTP_KEY_URLS", v)?;
        }
        if let Some(v) = var("HEARTH_AUDIT_RETENTION_DAYS") {
            self.audit.retention_days = parsed("HEARTH_AUDIT_RETENTION_DAYS", v)?;
        }
        if let Some(v) = var("HEARTH_AUDIT_SEAL_INTERVAL_MS") {
            self.audit.seal_interval_ms = parsed("HEARTH_AUDIT_SEAL_INTERVAL_MS", v)?;
        }
        if let Some(v) = var("HEARTH_MODE") {
            self.server.mode = parsed("HEARTH_MODE", v)?;
        }
        if let Some(v) = var("HEARTH_APP_IDLE_TIMEOUT_SECS") {
            self.app.idle_timeout_secs = parsed("HEARTH_APP_IDLE_TIMEOUT_SECS", v)?;
        }
        if let Some(v) = var("HEARTH_APP_SESSION_LIFETIME_SECS") {
            self.app.session_lifetime_secs = parsed("HEARTH_APP_SESSION_LIFETIME_SECS", v)?;
        }
        if let Some(v) = var("HEARTH_APP_SESSION_KEY") {
            self.app.session_key = Some(v);
        }
        if let Some(v) = var("HEARTH_APP_DEMO_EHR") {
            self.app.demo_ehr = parsed("HEARTH_APP_DEMO_EHR", v)?;
        }
        if let Some(v) = var("HEARTH_APP_DEMO_EHR_TENANT") {
            self.app.demo_ehr_tenant = v;
        }
        if let Some(v) = var("HEARTH_APP_ALLOW_HTTP_EHR") {
            self.app.allow_http_ehr = parsed("HEARTH_APP_ALLOW_HTTP_EHR", v)?;
        }
        if let Some(v) = var("HEARTH_BEDROCK_REGION") {
            self.ai.bedrock_region = Some(v);
        }
        if let Some(v) = var("HEARTH_BEDROCK_ENDPOINT_URL") {
            self.ai.bedrock_endpoint_url = Some(v);
        }
        if let Some(v) = var("HEARTH_BULK_DIR") {
            self.bulk.dir = PathBuf::from(v);
        }
        if let Some(v) = var("HEARTH_BULK_JOBS_PER_TENANT") {
            self.bulk.jobs_per_tenant = parsed("HEARTH_BULK_JOBS_PER_TENANT", v)?;
        }
        if let Some(v) = var("HEARTH_BULK_MAX_FILE_BYTES") {
            self.bulk.max_file_bytes = parsed("HEARTH_BULK_MAX_FILE_BYTES", v)?;
        }
        if let Some(v) = var("HEARTH_BULK_RETENTION_SECS") {
            self.bulk.retention_secs = parsed("HEARTH_BULK_RETENTION_SECS", v)?;
        }
        if let Some(v) = var("HEARTH_BULK_LEASE_SECS") {
            self.bulk.lease_secs = parsed("HEARTH_BULK_LEASE_SECS", v)?;
        }
        if let Some(v) = var("HEARTH_BULK_PAGE_SIZE") {
            self.bulk.page_size = parsed("HEARTH_BULK_PAGE_SIZE", v)?;
        }
        if let Some(v) = var("HEARTH_BULK_S3_BUCKET") {
            self.bulk.s3_bucket = Some(v);
        }
        if let Some(v) = var("HEARTH_BULK_S3_REGION") {
            self.bulk.s3_region = Some(v);
        }
        if let Some(v) = var("HEARTH_BULK_S3_ENDPOINT_URL") {
            self.bulk.s3_endpoint_url = Some(v);
        }
        if let Some(v) = var("HEARTH_BULK_S3_KMS_KEY_ID") {
            self.bulk.s3_kms_key_id = Some(v);
        }
        if let Some(v) = var("HEARTH_BULK_S3_PREFIX") {
            self.bulk.s3_prefix = v;
        }
        if let Some(v) = var("HEARTH_BULK_PAUSE_MS") {
            self.bulk.pause_between_pages_ms = parsed("HEARTH_BULK_PAUSE_MS", v)?;
        }
        if let Some(v) = var("HEARTH_LOG").or_else(|| var("RUST_LOG")) {
            self.log.filter = v;
        }
        self.server.public_base_url = self.server.public_base_url.trim_end_matches('/').into();
        // SMART Backend Services: access tokens live at most five minutes.
        self.auth.backend_token_ttl_secs = self.auth.backend_token_ttl_secs.clamp(1, 300);
        self.validate()
    }

    /// Combinations that must never run.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.app.demo_ehr && self.server.mode != RunMode::Demo {
            return Err(ConfigError::Invalid(
                "app.demo_ehr (HEARTH_APP_DEMO_EHR) is a demo feature: it needs HEARTH_MODE=demo",
            ));
        }
        if self.bulk.jobs_per_tenant < 1 || self.bulk.page_size == 0 || self.bulk.lease_secs < 1 {
            return Err(ConfigError::Invalid(
                "bulk.jobs_per_tenant, bulk.page_size and bulk.lease_secs must be positive",
            ));
        }
        if self.app.idle_timeout_secs == 0 || self.app.session_lifetime_secs == 0 {
            return Err(ConfigError::Invalid(
                "app.idle_timeout_secs and app.session_lifetime_secs must be positive",
            ));
        }
        Ok(())
    }

    pub fn database_url(&self) -> Result<&str, ConfigError> {
        self.database.url.as_deref().ok_or(ConfigError::NoDatabase)
    }

    /// The FHIR base URL of a tenant, as clients see it.
    pub fn fhir_base(&self, tenant: &crate::tenant::TenantId) -> String {
        format!("{}/fhir/{}", self.server.public_base_url, tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_ehr_is_refused_outside_demo_mode() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let mut config = Config::default();
        let refused = config.apply_env(env(&[("HEARTH_APP_DEMO_EHR", "true")]));
        assert!(matches!(refused, Err(ConfigError::Invalid(_))));
        let mut config = Config::default();
        config
            .apply_env(env(&[
                ("HEARTH_APP_DEMO_EHR", "true"),
                ("HEARTH_MODE", "demo"),
            ]))
            .expect("demo mode allows it");
        assert!(config.app.demo_ehr);
    }

    #[test]
    fn environment_overrides_file_which_overrides_defaults() {
        let mut config: Config = toml::from_str(
            "[server]\nlisten = \"0.0.0.0:9000\"\npublic_base_url = \"https://a.example/\"\n\
             [database]\nmax_connections = 5\n",
        )
        .expect("valid toml");
        assert_eq!(config.database.lock_timeout_ms, 1000, "default kept");
        config
            .apply_env(|name| match name {
                "HEARTH_LISTEN" => Some("127.0.0.1:9001".into()),
                "DATABASE_URL" => Some("postgres://app@h/db".into()),
                _ => None,
            })
            .expect("valid env");
        assert_eq!(config.server.listen.port(), 9001);
        assert_eq!(config.server.public_base_url, "https://a.example");
        assert_eq!(config.database.max_connections, 5);
        assert_eq!(config.database_url().ok(), Some("postgres://app@h/db"));
    }

    #[test]
    fn max_bundle_entries_defaults_and_overrides() {
        let mut config = Config::default();
        assert_eq!(config.server.max_bundle_entries, 1000);
        config
            .apply_env(|n| (n == "HEARTH_MAX_BUNDLE_ENTRIES").then(|| "25".into()))
            .expect("valid env");
        assert_eq!(config.server.max_bundle_entries, 25);
        let from_file: Config =
            toml::from_str("[server]\nmax_bundle_entries = 7\n").expect("valid toml");
        assert_eq!(from_file.server.max_bundle_entries, 7);
    }

    #[test]
    fn audit_defaults_and_overrides() {
        let mut config = Config::default();
        assert_eq!(config.audit.retention_days, 2190);
        assert_eq!(config.audit.seal_interval_ms, 1000);
        config
            .apply_env(|n| (n == "HEARTH_AUDIT_SEAL_INTERVAL_MS").then(|| "250".into()))
            .expect("valid env");
        assert_eq!(config.audit.seal_interval_ms, 250);
        let from_file: Config =
            toml::from_str("[audit]\nretention_days = 3650\n").expect("valid toml");
        assert_eq!(from_file.audit.retention_days, 3650);
        assert_eq!(from_file.audit.seal_interval_ms, 1000);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(toml::from_str::<Config>("[server]\nlistne = \"x\"\n").is_err());
        let mut config = Config::default();
        let err = config.apply_env(|n| (n == "HEARTH_WORKERS").then(|| "many".into()));
        assert!(matches!(
            err,
            Err(ConfigError::Env {
                name: "HEARTH_WORKERS",
                ..
            })
        ));
    }
}
