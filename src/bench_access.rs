//! `hearth bench-access`: what the access decision and the audit trail cost per request.
//!
//! Two servers run in this process on the same database: one as deployed (ABAC decision +
//! audit trail) answering a clinician's token whose care team covers `--cared` patients, and
//! one with the audit trail off answering a `system/*.rs` token (no care filter). Each round
//! measures read-by-id and a US Core search (`Observation?patient=..&category=laboratory`)
//! on both, interleaved, over the same random patients; medians of the rounds are printed
//! with the with/without ratios.

use std::io::Write;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::auth::TokenContext;
use crate::cli::CliError;
use crate::config::Config;
use crate::server;
use crate::state::AppState;
use crate::synth::{self, Rng};
use crate::tenant::TenantId;

#[derive(clap::Args, Clone)]
pub struct BenchAccessArgs {
    /// A tenant filled by `hearth demo-data`.
    #[arg(long)]
    pub tenant: String,
    /// The `--patients` it was filled with.
    #[arg(long)]
    pub patients: usize,
    /// Patients put on the benchmark clinician's care team (the rest are outside it).
    #[arg(long, default_value_t = 200)]
    pub cared: usize,
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 400)]
    pub iterations: usize,
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    #[arg(long, default_value_t = synth::DEFAULT_SEED)]
    pub seed: u64,
}

const CLINICIAN: &str = "bench-clinician";

fn start(state: actix_web::web::Data<AppState>, listener: TcpListener) {
    std::thread::spawn(move || {
        let system = actix_web::rt::System::new();
        system.block_on(async move {
            if let Ok(server) = server::http_server(state, listener) {
                let _ = server.await;
            }
        });
    });
}

async fn prepared(
    mut config: Config,
    trail: bool,
    concurrency: usize,
) -> Result<(actix_web::web::Data<AppState>, TcpListener), CliError> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    config.server.public_base_url = format!("http://{}", listener.local_addr()?);
    config.database.max_connections = config.database.max_connections.max(concurrency as u32 + 4);
    config.audit.trail = trail;
    // One sealer is enough (the audited server's).
    if !trail {
        config.audit.seal_interval_ms = 0;
    }
    Ok((
        actix_web::web::Data::new(server::prepare(config).await?),
        listener,
    ))
}

/// Latencies (ms) of `urls`, `concurrency` in flight; every answer must be 200.
async fn measure(
    http: &reqwest::Client,
    auth: &str,
    urls: &[String],
    concurrency: usize,
) -> Result<(Vec<f64>, f64), CliError> {
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(urls.len());
    for chunk in urls.chunks(concurrency.max(1)) {
        let requests = chunk.iter().map(|url| {
            let http = http.clone();
            let auth = auth.to_owned();
            let url = url.clone();
            async move {
                let t = Instant::now();
                let r = http.get(&url).header("authorization", auth).send().await;
                let status = r.as_ref().map(|r| r.status().as_u16()).unwrap_or(0);
                if let Ok(r) = r {
                    let _ = r.bytes().await;
                }
                (status, t.elapsed())
            }
        });
        for (status, elapsed) in futures_util::future::join_all(requests).await {
            if status != 200 {
                return Err(CliError::Usage(format!(
                    "bench-access: a request answered {status}"
                )));
            }
            latencies.push(elapsed.as_secs_f64() * 1000.0);
        }
    }
    let rate = urls.len() as f64 / started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    Ok((latencies, rate))
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

pub async fn run(config: Config, args: BenchAccessArgs) -> Result<(), CliError> {
    let tenant = TenantId::parse(&args.tenant)?;
    let cared = args.cared.clamp(1, args.patients.max(1));
    let (with_state, with_listener) = prepared(config.clone(), true, args.concurrency).await?;
    let (without_state, without_listener) = prepared(config, false, args.concurrency).await?;
    if !with_state.store.tenant_exists(&tenant).await? {
        return Err(CliError::Usage(format!(
            "no tenant {tenant}; fill it with `hearth demo-data --tenant {tenant} --patients N`"
        )));
    }
    let with_base = with_state.fhir_base(&tenant);
    let without_base = without_state.fhir_base(&tenant);
    // Tokens name their server's base (aud), so one of each kind per server.
    let mut tokens = Vec::new();
    for (state, base) in [(&with_state, &with_base), (&without_state, &without_base)] {
        let system = state
            .tokens
            .mint(&tenant, base, "hearth-bench-access", "system/*.cruds", 3600)
            .await?;
        let clinician = state
            .tokens
            .mint_with(
                &tenant,
                base,
                "hearth-bench-access",
                "user/*.rs",
                3600,
                TokenContext {
                    fhir_user: Some(format!("Practitioner/{CLINICIAN}")),
                    patient: None,
                },
            )
            .await?;
        tokens.push((format!("Bearer {system}"), format!("Bearer {clinician}")));
    }
    start(with_state.clone(), with_listener);
    start(without_state.clone(), without_listener);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency * 2)
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let system_auth = tokens[1].0.clone();

    // The clinician and one care team per cared-for patient (idempotent ids).
    let put = |path: String, body: serde_json::Value| {
        http.put(format!("{without_base}/{path}"))
            .header("authorization", &system_auth)
            .header("content-type", "application/fhir+json")
            .body(body.to_string())
            .send()
    };
    put(
        format!("Practitioner/{CLINICIAN}"),
        json!({"resourceType": "Practitioner", "id": CLINICIAN}),
    )
    .await
    .map_err(|e| CliError::Usage(e.to_string()))?;
    for n in 1..=cared {
        let id = format!("bench-care-{n}");
        let r = put(
            format!("CareTeam/{id}"),
            json!({"resourceType": "CareTeam", "id": id, "status": "active",
                   "subject": {"reference": format!("Patient/{}", synth::patient_id(n))},
                   "participant": [{"member": {"reference": format!("Practitioner/{CLINICIAN}")}}]}),
        )
        .await
        .map_err(|e| CliError::Usage(e.to_string()))?;
        if !r.status().is_success() {
            return Err(CliError::Usage(format!(
                "bench-access: care team setup answered {}",
                r.status()
            )));
        }
    }

    // Per probe: p50 and p99 of (ABAC + audit, ABAC only, audit only, neither).
    let mut p50: Vec<[Vec<f64>; 4]> = vec![Default::default(); 2];
    let mut p99: Vec<[Vec<f64>; 4]> = vec![Default::default(); 2];
    for round in 0..args.rounds {
        let mut rng = Rng::stream(args.seed, round, 0xACCE);
        let patients: Vec<String> = (0..args.iterations)
            .map(|_| synth::patient_id(1 + rng.below(cared)))
            .collect();
        for (kind, path) in [
            (0, "Patient/{id}"),
            (1, "Observation?patient={id}&category=laboratory"),
        ] {
            let urls = |base: &str| -> Vec<String> {
                patients
                    .iter()
                    .map(|id| format!("{base}/{}", path.replace("{id}", id)))
                    .collect()
            };
            let variants = [
                (&with_base, &tokens[0].1),
                (&without_base, &tokens[1].1),
                (&with_base, &tokens[0].0),
                (&without_base, &tokens[1].0),
            ];
            for (v, (base, auth)) in variants.into_iter().enumerate() {
                let (lat, _) = measure(&http, auth, &urls(base), args.concurrency).await?;
                p50[kind][v].push(pct(&lat, 0.5));
                p99[kind][v].push(pct(&lat, 0.99));
            }
        }
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "bench-access: tenant {tenant}, {cared} cared-for patients, {} requests x {} rounds, concurrency {}; medians of rounds",
        args.iterations, args.rounds, args.concurrency
    )?;
    writeln!(
        out,
        "{:<42} {:>5} {:>11} {:>11} {:>11} {:>11} {:>7}",
        "probe", "", "ABAC+audit", "ABAC only", "audit only", "neither", "ratio"
    )?;
    for (kind, label) in [
        (0, "read Patient/{id}"),
        (1, "Observation?patient&category=laboratory"),
    ] {
        for (name, table) in [("p50", &p50), ("p99", &p99)] {
            let [both, abac, audit, neither] = table[kind].clone().map(median);
            writeln!(
                out,
                "{label:<42} {name:>5} {both:>9.2}ms {abac:>9.2}ms {audit:>9.2}ms {neither:>9.2}ms {:>6.2}x",
                both / neither.max(f64::EPSILON)
            )?;
        }
    }
    Ok(())
}
