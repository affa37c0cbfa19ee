//! The `hearth` command line: serve, migrate, tenant, token, load, bench.

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::auth::TokenService;
use crate::config::Config;
use crate::fhir::FhirError;
use crate::server::{self, StartupError};
use crate::store::{self, Store, StoreError};
use crate::tenant::{InvalidTenantId, TenantId};

#[derive(Parser)]
#[command(name = "hearth", version, about = "FHIR-native integration server")]
pub struct Cli {
    /// Config file (TOML). Default: $HEARTH_CONFIG, else ./hearth.toml when present.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the server (migrates first when HEARTH_MIGRATION_DATABASE_URL is set).
    Serve {
        /// Listen address, overriding the config (e.g. 0.0.0.0:8080).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Apply database migrations with the owner role (HEARTH_MIGRATION_DATABASE_URL).
    Migrate,
    /// Manage tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// SMART Backend Services clients of a tenant.
    Client {
        #[command(subcommand)]
        command: ClientCommand,
    },
    /// Identity providers a tenant trusts for user-facing apps' tokens.
    Idp {
        #[command(subcommand)]
        command: IdpCommand,
    },
    /// EHRs (Epic, Oracle Health, ...) that launch Hearth's SMART app for a tenant.
    Ehr {
        #[command(subcommand)]
        command: EhrCommand,
    },
    /// Mint an access token for a tenant's FHIR API.
    Token {
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value = "system/*.cruds")]
        scope: String,
        /// The token's subject (client id).
        #[arg(long, default_value = "hearth-cli")]
        subject: String,
        /// Lifetime in seconds (default: auth.token_ttl_secs).
        #[arg(long)]
        ttl: Option<u64>,
        /// The user the token speaks for (e.g. Practitioner/123): access then follows
        /// that user's care relationships.
        #[arg(long)]
        fhir_user: Option<String>,
        /// The patient in context, for patient/ scopes.
        #[arg(long)]
        patient: Option<String>,
    },
    /// Load FHIR JSON files (resources with ids, or Bundles of them) into a tenant.
    Load {
        #[arg(long)]
        tenant: String,
        files: Vec<PathBuf>,
    },
    /// The audit log's hash chain: seal, verify, purge.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// HL7 v2 messages: list failed ones, replay them.
    Mllp {
        #[command(subcommand)]
        command: MllpCommand,
    },
    /// Benchmark FHIR create/read over HTTP against the raw-SQL ceiling.
    Bench(crate::bench::BenchArgs),
    /// Write deterministic synthetic US Core records (about 100 resources per patient).
    DemoData(crate::synth::DemoDataArgs),
    /// Benchmark read-by-id, US Core searches and paging against a demo-data tenant.
    BenchSearch(crate::bench_search::BenchSearchArgs),
    /// Benchmark the access decision + audit trail: read and search with vs without.
    BenchAccess(crate::bench_access::BenchAccessArgs),
    /// Benchmark HL7 v2 over MLLP (ACKs/s, ACK latency) and time the ingest stages.
    BenchMllp(crate::bench_mllp::BenchMllpArgs),
    /// Time the write-path checks (R4 table, fhirbolt strict, US Core profiles) on one core.
    BenchValidate(crate::bench_conformance::BenchValidateArgs),
    /// Benchmark transaction Bundles of whole synthetic records against one-by-one PUTs.
    BenchTransaction(crate::bench_conformance::BenchTransactionArgs),
    /// Benchmark the retrieval index: indexing throughput and hybrid retrieval latency.
    BenchRetrieval(crate::bench_retrieval::BenchRetrievalArgs),
    /// Benchmark Bulk Data export against a raw-SQL dump of the same resources.
    BenchExport(crate::bench_export::BenchExportArgs),
}

#[derive(Subcommand)]
pub enum MllpCommand {
    /// Messages answered AE or AR, oldest first, with the reason.
    Failed {
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Process stored messages again with the current configuration of their listener.
    Replay {
        #[arg(long)]
        tenant: String,
        /// Message ids (from `failed`); `--all-failed` for every failed one.
        ids: Vec<uuid::Uuid>,
        #[arg(long)]
        all_failed: bool,
    },
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Hash-chain the tenant's unsealed audit events now.
    Seal {
        #[arg(long)]
        tenant: String,
    },
    /// Seal, then recompute the tenant's chain; exit 1 and name the first broken link if
    /// it does not verify.
    Verify {
        #[arg(long)]
        tenant: String,
    },
    /// The alert report: high-severity events (break-glass, refusals), newest first.
    Alerts {
        #[arg(long)]
        tenant: String,
        /// How far back (default 24 hours).
        #[arg(long, default_value_t = 24)]
        since_hours: u32,
    },
    /// Remove sealed audit events older than the retention period (owner role, which must
    /// be a member of hearth_audit_maintainer); the chain is re-anchored at the cut.
    Purge {
        #[arg(long)]
        tenant: String,
        /// Keep this many days (default: audit.retention_days).
        #[arg(long)]
        older_than_days: Option<u32>,
    },
}

#[derive(Subcommand)]
pub enum TenantCommand {
    /// Create a tenant (idempotent with --if-missing).
    Create {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        if_missing: bool,
    },
    /// List tenants (needs the owner role: HEARTH_MIGRATION_DATABASE_URL).
    List,
    /// Override keys of the access policy (profiles/access/policy.json) for a tenant, from
    /// a JSON object file (owner role). `{}` restores the default.
    AccessPolicy {
        id: String,
        #[arg(long)]
        file: PathBuf,
    },
    /// AI settings of a tenant from a JSON object file (owner role): `engine`
    /// (extractive|bedrock), `bedrock_baa` (the Bedrock account is covered by a BAA),
    /// `model_id`, `monthly_token_quota`, `unsupported` (remove|flag).
    AiSettings {
        id: String,
        #[arg(long)]
        file: PathBuf,
    },
    /// Where approved prior-authorization requests are submitted: the payer's FHIR base
    /// (`Claim/$submit` below it), https only; `--payer-url ""` removes it (owner role).
    PriorAuth {
        id: String,
        #[arg(long)]
        payer_url: String,
    },
    /// Queue every current resource of a tenant for the retrieval index (data written
    /// before the index existed, or a rebuild); `hearth serve`'s indexer works through it.
    Reindex { id: String },
    /// Set how writes are checked against profiles: off, warn or enforce (owner role).
    Validation {
        id: String,
        #[arg(long)]
        mode: String,
        /// Also check the US Core profile implied by the resource type when none is declared.
        #[arg(long)]
        implied: bool,
    },
}

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Register a client (or replace its keys and scopes): it then gets tokens from
    /// `/fhir/{tenant}/auth/token` with a private_key_jwt assertion.
    Register {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        client_id: String,
        #[arg(long, default_value = "")]
        name: String,
        /// Where the client publishes its public keys (https).
        #[arg(
            long,
            conflicts_with = "jwks_file",
            required_unless_present = "jwks_file"
        )]
        jwks_url: Option<String>,
        /// A file with the client's public keys (a JWKS document).
        #[arg(long)]
        jwks_file: Option<PathBuf>,
        /// The most the client may ask for, e.g. "system/*.rs system/Observation.c".
        #[arg(long)]
        scopes: String,
        /// Confine the client to the patients who are members of this Group (its id).
        #[arg(long)]
        patient_group: Option<String>,
    },
    /// List a tenant's clients.
    List {
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Subcommand)]
pub enum IdpCommand {
    /// Trust an OpenID Connect provider: its discovery document is fetched now (the
    /// issuer it names is recorded) and its keys whenever tokens need them.
    Add {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        discovery_url: String,
        /// The `aud` its tokens must carry (default: the tenant's FHIR base URL).
        #[arg(long)]
        audience: Option<String>,
        /// The claim naming the user as a FHIR reference.
        #[arg(long, default_value = "fhirUser")]
        fhir_user_claim: String,
    },
    /// List a tenant's trusted identity providers.
    List {
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Subcommand)]
pub enum EhrCommand {
    /// Register (or update) an EHR: launches from its `iss` open the tenant's app.
    Register {
        #[arg(long)]
        tenant: String,
        /// A short name for this registration, e.g. `epic-prod`.
        #[arg(long)]
        id: String,
        /// What clinicians see, e.g. "Epic".
        #[arg(long)]
        name: String,
        /// The EHR's FHIR base URL, exactly as its launches send `iss`.
        #[arg(long)]
        iss: String,
        /// Hearth's client id at the EHR.
        #[arg(long)]
        client_id: String,
        /// `public` (PKCE only) or `private-key-jwt` (Hearth's key, JWKS at /app/{tenant}/jwks).
        #[arg(long, default_value = "public")]
        client_auth: String,
        /// Scopes of an EHR launch.
        #[arg(long, default_value = "launch openid fhirUser patient/*.rs")]
        scopes: String,
        /// Scopes of a standalone launch.
        #[arg(long, default_value = "launch/patient openid fhirUser patient/*.rs")]
        standalone_scopes: String,
        /// An origin allowed to frame the app (repeat for several).
        #[arg(long = "frame-ancestor")]
        frame_ancestors: Vec<String>,
    },
    /// List a tenant's EHR registrations and what to register at each EHR.
    List {
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tenant(#[from] InvalidTenantId),
    #[error(transparent)]
    Token(#[from] crate::auth::TokenError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Registration(#[from] crate::auth::registration::RegistrationError),
    #[error("{path}: {reason}")]
    Load { path: String, reason: String },
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("mllp: {0}")]
    Mllp(#[from] crate::hl7v2::service::ServiceError),
    #[error("the audit chain of tenant {tenant} is broken at {link}")]
    AuditBroken {
        tenant: TenantId,
        link: crate::audit::BrokenLink,
    },
}

pub fn load_config(cli: &Cli) -> Result<Config, CliError> {
    Ok(Config::load(cli.config.as_deref())?)
}

async fn app_store(config: &Config) -> Result<Store, CliError> {
    let pool = store::connect(config.database_url()?, 4).await?;
    Ok(Store::new(pool, config.database.lock_timeout_ms))
}

async fn require_tenant(store: &Store, tenant: &TenantId) -> Result<(), CliError> {
    if store.tenant_exists(tenant).await? {
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "no tenant {tenant} in this database; run `hearth tenant create {tenant}`"
        )))
    }
}

fn owner_url(config: &Config) -> Result<&str, CliError> {
    config
        .database
        .migration_url
        .as_deref()
        .ok_or_else(|| CliError::Usage("set HEARTH_MIGRATION_DATABASE_URL (the owner role)".into()))
}

pub async fn run(cli: Cli, mut config: Config) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Serve { listen } => {
            if let Some(listen) = listen {
                config.server.listen = listen;
            }
            let listener = TcpListener::bind(config.server.listen).map_err(StartupError::Listen)?;
            drop(out);
            let state = actix_web::web::Data::new(server::prepare(config).await?);
            let mllp = crate::hl7v2::service::start(&state.config, state.metrics.clone())?;
            if let Some(service) = &mllp {
                for (name, addr) in &service.addresses {
                    tracing::info!(listener = %name, %addr, "mllp serving");
                }
            }
            let sealer = server::spawn_audit_sealer(&state);
            let sweeper = server::spawn_session_sweeper(&state);
            let indexer = tokio::spawn(crate::clinical::index::run_indexer(
                state.store.clone(),
                state.config.server.public_base_url.clone(),
                state.bedrock.clone(),
                std::time::Duration::from_secs(2),
            ));
            tracing::info!(listen = %state.config.server.listen, "hearth serving");
            // SIGINT/SIGTERM end the HTTP server after its in-flight requests; then the MLLP
            // listeners stop accepting and finish the message each connection has in hand.
            let served = server::http_server(state, listener)?.await;
            if let Some(service) = mllp {
                service.stop();
            }
            if let Some(sealer) = sealer {
                sealer.abort();
            }
            sweeper.abort();
            indexer.abort();
            served?;
            tracing::info!("hearth stopped");
        }
        Command::Migrate => {
            let owner = store::connect(owner_url(&config)?, 2).await?;
            store::migrate(&owner).await?;
            writeln!(out, "migrations applied")?;
        }
        Command::Tenant {
            command:
                TenantCommand::Create {
                    id,
                    name,
                    if_missing,
                },
        } => {
            let tenant = TenantId::parse(&id)?;
            let store = app_store(&config).await?;
            match store
                .create_tenant(&tenant, name.as_deref().unwrap_or(&id))
                .await
            {
                Ok(()) => writeln!(out, "tenant {tenant} created")?,
                Err(StoreError::TenantExists) if if_missing => {
                    writeln!(out, "tenant {tenant} exists")?
                }
                Err(e) => return Err(e.into()),
            }
        }
        Command::Tenant {
            command: TenantCommand::Reindex { id },
        } => {
            let tenant = TenantId::parse(&id)?;
            let store = app_store(&config).await?;
            require_tenant(&store, &tenant).await?;
            let queued = store.queue_reindex(&tenant).await?;
            writeln!(
                out,
                "tenant {tenant}: {queued} resources queued for the retrieval index"
            )?;
        }
        Command::Tenant {
            command: TenantCommand::Validation { id, mode, implied },
        } => {
            let tenant = TenantId::parse(&id)?;
            let mode = store::ValidationMode::parse(&mode)
                .ok_or_else(|| CliError::Usage("--mode is off, warn or enforce".into()))?;
            let owner = store::connect(owner_url(&config)?, 2).await?;
            store::set_tenant_validation(&owner, &tenant, mode, implied).await?;
            writeln!(
                out,
                "tenant {tenant}: validation {} (implied US Core profiles: {implied})",
                mode.code()
            )?;
        }
        Command::Tenant {
            command: TenantCommand::AccessPolicy { id, file },
        } => {
            let tenant = TenantId::parse(&id)?;
            let text = std::fs::read_to_string(&file)?;
            let overrides: Value = serde_json::from_str(&text).map_err(|e| CliError::Load {
                path: file.display().to_string(),
                reason: e.to_string(),
            })?;
            // Refuse an override that does not make a valid policy, before storing it.
            crate::access::AccessPolicy::with_overrides(&overrides).map_err(|e| {
                CliError::Load {
                    path: file.display().to_string(),
                    reason: e.to_string(),
                }
            })?;
            let owner = store::connect(owner_url(&config)?, 2).await?;
            store::set_tenant_access_policy(&owner, &tenant, &overrides).await?;
            writeln!(out, "tenant {tenant}: access policy overrides set")?;
        }
        Command::Tenant {
            command: TenantCommand::AiSettings { id, file },
        } => {
            let tenant = TenantId::parse(&id)?;
            let text = std::fs::read_to_string(&file)?;
            let load_error = |reason: String| CliError::Load {
                path: file.display().to_string(),
                reason,
            };
            let settings: Value =
                serde_json::from_str(&text).map_err(|e| load_error(e.to_string()))?;
            // Refuse unknown keys and wrong types before storing.
            serde_json::from_value::<crate::clinical::summary::AiSettings>(settings.clone())
                .map_err(|e| load_error(e.to_string()))?;
            let owner = store::connect(owner_url(&config)?, 2).await?;
            store::set_tenant_ai_settings(&owner, &tenant, &settings).await?;
            writeln!(out, "tenant {tenant}: AI settings set")?;
        }
        Command::Tenant {
            command: TenantCommand::PriorAuth { id, payer_url },
        } => {
            let tenant = TenantId::parse(&id)?;
            let url = payer_url.trim().trim_end_matches('/');
            // Claims carry PHI: TLS only, except a loopback test endpoint.
            let loopback =
                url.starts_with("http://127.0.0.1:") || url.starts_with("http://localhost:");
            if !url.is_empty() && !url.starts_with("https://") && !loopback {
                return Err(CliError::Usage("--payer-url must be an https URL".into()));
            }
            let owner = store::connect(owner_url(&config)?, 2).await?;
            store::set_tenant_prior_auth_settings(
                &owner,
                &tenant,
                &serde_json::json!({"payerSubmitUrl": url}),
            )
            .await?;
            writeln!(
                out,
                "tenant {tenant}: prior-authorization payer endpoint set"
            )?;
        }
        Command::Tenant {
            command: TenantCommand::List,
        } => {
            let owner = store::connect(owner_url(&config)?, 2).await?;
            for t in store::list_tenants(&owner).await? {
                writeln!(out, "{}\t{}\t{}", t.id, t.name, t.created_at.to_rfc3339())?;
            }
        }
        Command::Audit { command } => audit_command(&config, command, &mut out).await?,
        Command::Client { command } => client_command(&config, command, &mut out).await?,
        Command::Idp { command } => idp_command(&config, command, &mut out).await?,
        Command::Ehr { command } => ehr_command(&config, command, &mut out).await?,
        Command::Token {
            tenant,
            scope,
            subject,
            ttl,
            fhir_user,
            patient,
        } => {
            let tenant = TenantId::parse(&tenant)?;
            let store = app_store(&config).await?;
            require_tenant(&store, &tenant).await?;
            let tokens = TokenService::new(store);
            let ttl = ttl.unwrap_or(config.auth.token_ttl_secs);
            let token = tokens
                .mint_with(
                    &tenant,
                    &config.fhir_base(&tenant),
                    &subject,
                    &scope,
                    ttl,
                    crate::auth::TokenContext { fhir_user, patient },
                )
                .await?;
            writeln!(out, "{token}")?;
        }
        Command::Load { tenant, files } => {
            let tenant = TenantId::parse(&tenant)?;
            let store = app_store(&config).await?;
            require_tenant(&store, &tenant).await?;
            let mut loaded = 0usize;
            for file in files {
                loaded += load_file(
                    &store,
                    &tenant,
                    &format!("{}/", config.fhir_base(&tenant)),
                    &file,
                )
                .await?;
            }
            writeln!(out, "loaded {loaded} resources into {tenant}")?;
        }
        Command::Mllp {
            command: MllpCommand::Failed { tenant, limit },
        } => {
            let tenant = TenantId::parse(&tenant)?;
            let store = app_store(&config).await?;
            for (status, count) in store.message_counts(&tenant).await? {
                writeln!(out, "# {status}: {count}")?;
            }
            for m in store.failed_messages(&tenant, limit).await? {
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}^{}\t{}^{}\t{}\t{}\t{}\tattempts={}",
                    m.id,
                    m.received_at.to_rfc3339(),
                    m.listener,
                    m.sending_application.unwrap_or_default(),
                    m.sending_facility.unwrap_or_default(),
                    m.message_type.unwrap_or_default(),
                    m.trigger_event.unwrap_or_default(),
                    m.control_id.unwrap_or_default(),
                    m.ack_code.unwrap_or_default(),
                    m.reason.unwrap_or_default(),
                    m.attempts
                )?;
            }
        }
        Command::Mllp {
            command:
                MllpCommand::Replay {
                    tenant,
                    ids,
                    all_failed,
                },
        } => {
            let tenant = TenantId::parse(&tenant)?;
            let store = app_store(&config).await?;
            let mut ids = ids;
            if all_failed {
                ids.extend(
                    store
                        .failed_messages(&tenant, i64::MAX)
                        .await?
                        .into_iter()
                        .map(|m| m.id),
                );
            }
            for id in ids {
                let (_, listener_name) = store.message_raw(&tenant, id).await?;
                let listener = config
                    .mllp
                    .listeners
                    .iter()
                    .find(|l| l.name == listener_name && l.tenant == tenant.as_str())
                    .ok_or_else(|| CliError::Usage(format!("message {id}: listener {listener_name} of tenant {tenant} is not configured")))?;
                let settings = crate::hl7v2::feed::ListenerSettings::from_config(listener)
                    .map_err(|e| CliError::Usage(e.to_string()))?;
                let ingestor = crate::hl7v2::ingest::Ingestor {
                    store: store.clone(),
                    local_base: format!("{}/", config.fhir_base(&tenant)),
                    listener: settings,
                };
                for (id, p) in ingestor.replay(&[id]).await? {
                    writeln!(out, "{id}\t{}", p.ack_code.map_or("none", |c| c.code()))?;
                }
            }
        }
        Command::Bench(args) => {
            drop(out);
            crate::bench::run(config, args).await?;
        }
        Command::DemoData(args) => {
            drop(out);
            crate::synth::run(config, args).await?;
        }
        Command::BenchAccess(args) => {
            drop(out);
            crate::bench_access::run(config, args).await?;
        }
        Command::BenchSearch(args) => {
            drop(out);
            crate::bench_search::run(config, args).await?;
        }
        Command::BenchMllp(args) => {
            drop(out);
            crate::bench_mllp::run(config, args).await?;
        }
        Command::BenchValidate(args) => {
            drop(out);
            crate::bench_conformance::run_validate(args)?;
        }
        Command::BenchTransaction(args) => {
            drop(out);
            crate::bench_conformance::run_transaction(config, args).await?;
        }
        Command::BenchRetrieval(args) => {
            drop(out);
            crate::bench_retrieval::run(config, args).await?;
        }
        Command::BenchExport(args) => {
            drop(out);
            crate::bench_export::run(config, args).await?;
        }
    }
    Ok(())
}

/// Store each resource of a file (a resource or a Bundle's entries) under its own id, through
/// the same checks as the REST API. Re-loading a file adds versions, never duplicates.
async fn load_file(
    store: &Store,
    tenant: &TenantId,
    local_base: &str,
    path: &std::path::Path,
) -> Result<usize, CliError> {
    let fail = |reason: String| CliError::Load {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let value: Value = serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?;
    let resources: Vec<Value> = match value.get("resourceType").and_then(Value::as_str) {
        Some("Bundle") => value
            .get("entry")
            .and_then(Value::as_array)
            .map(|entries| {
                entries
                    .iter()
                    .filter_map(|e| e.get("resource").cloned())
                    .collect()
            })
            .unwrap_or_default(),
        _ => vec![value],
    };
    let local_base = local_base.to_owned();
    let settings = store.tenant_settings(tenant).await?;
    let policy = crate::resource::ValidationPolicy {
        mode: settings.validation,
        implied: settings.validate_implied,
    };
    for resource in &resources {
        let resource_type = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let id = resource
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| fail("every resource needs an id".into()))?;
        let describe = |e: FhirError| {
            let issues: Vec<String> = e
                .issues
                .iter()
                .map(|i| format!("{} {}", i.expression.join(","), i.diagnostics))
                .collect();
            fail(format!("{resource_type}/{id}: {}", issues.join("; ")))
        };
        let incoming =
            crate::fhir::parse_resource(resource.to_string().as_bytes(), &resource_type, policy)
                .map_err(describe)?;
        store
            .update(tenant, &resource_type, &id, None, |stamp| {
                incoming.render(&id, stamp, &local_base)
            })
            .await?;
    }
    Ok(resources.len())
}

async fn audit_command(
    config: &Config,
    command: AuditCommand,
    out: &mut impl Write,
) -> Result<(), CliError> {
    use crate::audit;
    match command {
        AuditCommand::Seal { tenant } => {
            let tenant = TenantId::parse(&tenant)?;
            let store = app_store(config).await?;
            require_tenant(&store, &tenant).await?;
            let sealed = audit::seal(&store, &tenant).await?;
            writeln!(out, "tenant {tenant}: {sealed} audit events sealed")?;
        }
        AuditCommand::Alerts {
            tenant,
            since_hours,
        } => {
            let tenant = TenantId::parse(&tenant)?;
            let store = app_store(config).await?;
            require_tenant(&store, &tenant).await?;
            let since = chrono::Utc::now() - chrono::Duration::hours(i64::from(since_hours));
            let mut query = audit::AuditQuery {
                high_severity_only: true,
                count: 1000,
                ..Default::default()
            };
            query.dates.push(vec![audit::DateClause::after(since)]);
            let page = audit::search(&store, &tenant, &query).await?;
            for e in page.events {
                writeln!(out, "{}", audit::alert_line(&e))?;
            }
        }
        AuditCommand::Verify { tenant } => {
            let tenant = TenantId::parse(&tenant)?;
            let store = app_store(config).await?;
            require_tenant(&store, &tenant).await?;
            audit::seal(&store, &tenant).await?;
            let report = audit::verify(&store, &tenant).await?;
            if let Some(link) = report.broken {
                writeln!(
                    out,
                    "tenant {tenant}: audit chain BROKEN at {link} ({} links verified before it)",
                    report.sealed
                )?;
                return Err(CliError::AuditBroken { tenant, link });
            }
            writeln!(
                out,
                "tenant {tenant}: audit chain verified: {} sealed, {} unsealed, head position {} hash {}{}",
                report.sealed,
                report.unsealed,
                report.head_position,
                report.head_hash,
                if report.anchor_position > 0 {
                    format!(
                        " (anchored at position {} by a purge)",
                        report.anchor_position
                    )
                } else {
                    String::new()
                }
            )?;
        }
        AuditCommand::Purge {
            tenant,
            older_than_days,
        } => {
            let tenant = TenantId::parse(&tenant)?;
            let days = older_than_days.unwrap_or(config.audit.retention_days);
            let before = chrono::Utc::now() - chrono::Duration::days(i64::from(days));
            let store = app_store(config).await?;
            require_tenant(&store, &tenant).await?;
            // Purge only a chain that verifies: a purge must not erase the evidence of a
            // break.
            audit::seal(&store, &tenant).await?;
            let report = audit::verify(&store, &tenant).await?;
            if let Some(link) = report.broken {
                return Err(CliError::AuditBroken { tenant, link });
            }
            let owner = store::connect(owner_url(config)?, 2).await?;
            let purged = match audit::purge(&owner, &tenant, before).await {
                Err(StoreError::Database(e)) if store::sqlstate(&e).as_deref() == Some("42501") => {
                    return Err(CliError::Usage(
                        "the audit log refused the purge: the role of HEARTH_MIGRATION_DATABASE_URL must be a member of hearth_audit_maintainer (a DBA: GRANT hearth_audit_maintainer TO <that role>)".into(),
                    ));
                }
                other => other?,
            };
            writeln!(
                out,
                "tenant {tenant}: {} audit events recorded before {} purged; chain anchored at position {}",
                purged.purged,
                before.to_rfc3339(),
                purged.anchor_position
            )?;
        }
    }
    Ok(())
}

async fn client_command(
    config: &Config,
    command: ClientCommand,
    out: &mut impl Write,
) -> Result<(), CliError> {
    use crate::auth::registration::{check_client_jwks, check_client_scopes};
    match command {
        ClientCommand::Register {
            tenant,
            client_id,
            name,
            jwks_url,
            jwks_file,
            scopes,
            patient_group,
        } => {
            let tenant = TenantId::parse(&tenant)?;
            let scopes = check_client_scopes(&scopes)?;
            let jwks = match &jwks_file {
                Some(path) => {
                    let text = std::fs::read_to_string(path)?;
                    let jwks: Value = serde_json::from_str(&text).map_err(|e| CliError::Load {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })?;
                    check_client_jwks(&jwks)?;
                    Some(jwks)
                }
                None => None,
            };
            if let Some(url) = &jwks_url {
                crate::auth::fetch::DocumentFetcher::new(config.auth.allow_http_key_urls)
                    .check_url(url)
                    .map_err(crate::auth::registration::RegistrationError::from)?;
            }
            let store = app_store(config).await?;
            require_tenant(&store, &tenant).await?;
            store
                .upsert_client(
                    &tenant,
                    &store::ClientRow {
                        client_id: client_id.clone(),
                        name,
                        jwks,
                        jwks_url,
                        scopes: scopes.clone(),
                        disabled: false,
                        patient_group: patient_group.clone(),
                    },
                )
                .await?;
            writeln!(
                out,
                "client {client_id} registered for tenant {tenant} (scopes: {scopes}); token endpoint: {}/auth/token",
                config.fhir_base(&tenant)
            )?;
        }
        ClientCommand::List { tenant } => {
            let tenant = TenantId::parse(&tenant)?;
            let store = app_store(config).await?;
            for c in store.clients(&tenant).await? {
                let keys = c.jwks_url.as_deref().unwrap_or("inline JWKS");
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}{}",
                    c.client_id,
                    c.scopes,
                    keys,
                    c.name,
                    if c.disabled { "\tdisabled" } else { "" }
                )?;
            }
        }
    }
    Ok(())
}

async fn ehr_command(
    config: &Config,
    command: EhrCommand,
    out: &mut impl Write,
) -> Result<(), CliError> {
    match command {
        EhrCommand::Register {
            tenant,
            id,
            name,
            iss,
            client_id,
            client_auth,
            scopes,
            standalone_scopes,
            frame_ancestors,
        } => {
            let tenant = TenantId::parse(&tenant)?;
            crate::auth::launch::ClientAuth::parse(&client_auth)
                .ok_or(crate::auth::registration::RegistrationError::ClientAuth)?;
            crate::auth::registration::check_ehr_registration(
                &iss,
                &frame_ancestors,
                &scopes,
                &standalone_scopes,
                config.app.allow_http_ehr,
            )?;
            let store = app_store(config).await?;
            require_tenant(&store, &tenant).await?;
            store
                .put_ehr_registration(
                    &tenant,
                    &store::EhrRegistrationRow {
                        id: id.clone(),
                        name,
                        iss: iss.clone(),
                        client_id,
                        client_auth,
                        scopes,
                        standalone_scopes,
                        frame_ancestors,
                    },
                )
                .await?;
            writeln!(
                out,
                "tenant {tenant}: launches from {iss} open the app (registration {id})"
            )?;
            ehr_instructions(config, &tenant, out)?;
        }
        EhrCommand::List { tenant } => {
            let tenant = TenantId::parse(&tenant)?;
            let store = app_store(config).await?;
            for r in store.ehr_registrations(&tenant).await? {
                writeln!(
                    out,
                    "{}\t{}\t{}\tclient={}\t{}\tscopes={}\tframe-ancestors={}",
                    r.id,
                    r.name,
                    r.iss,
                    r.client_id,
                    r.client_auth,
                    r.scopes,
                    r.frame_ancestors.join(" ")
                )?;
            }
            ehr_instructions(config, &tenant, out)?;
        }
    }
    Ok(())
}

/// What an operator enters at the EHR (Epic App Orchard/Showroom, Oracle Health code console).
fn ehr_instructions(
    config: &Config,
    tenant: &TenantId,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let base = &config.server.public_base_url;
    writeln!(out, "register at the EHR:")?;
    writeln!(out, "  launch URL    {base}/app/launch")?;
    writeln!(out, "  redirect URI  {base}/app/callback")?;
    writeln!(
        out,
        "  JWKS URL      {base}/app/{tenant}/jwks   (private-key-jwt clients)"
    )?;
    Ok(())
}

async fn idp_command(
    config: &Config,
    command: IdpCommand,
    out: &mut impl Write,
) -> Result<(), CliError> {
    match command {
        IdpCommand::Add {
            tenant,
            discovery_url,
            audience,
            fhir_user_claim,
        } => {
            let tenant = TenantId::parse(&tenant)?;
            let fetcher = crate::auth::fetch::DocumentFetcher::new(config.auth.allow_http_key_urls);
            let issuer =
                crate::auth::registration::discover_issuer(&fetcher, &discovery_url).await?;
            let store = app_store(config).await?;
            require_tenant(&store, &tenant).await?;
            store
                .upsert_trusted_issuer(
                    &tenant,
                    &store::TrustedIssuerRow {
                        issuer: issuer.clone(),
                        discovery_url,
                        audience,
                        fhir_user_claim,
                    },
                )
                .await?;
            writeln!(out, "tenant {tenant} trusts tokens from {issuer}")?;
        }
        IdpCommand::List { tenant } => {
            let tenant = TenantId::parse(&tenant)?;
            let store = app_store(config).await?;
            for i in store.trusted_issuers(&tenant).await? {
                writeln!(
                    out,
                    "{}\t{}\taud={}\tuser claim={}",
                    i.issuer,
                    i.discovery_url,
                    i.audience.as_deref().unwrap_or("(FHIR base)"),
                    i.fhir_user_claim
                )?;
            }
        }
    }
    Ok(())
}
