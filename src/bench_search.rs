//! `hearth bench-search`: latency of read-by-id, the US Core SHALL searches and deep paging
//! over HTTP, against a tenant filled by `hearth demo-data` with the same `--seed`.
//!
//! Like `hearth bench`, it starts its own server on an ephemeral port in this process. Each
//! measurement issues `--iterations` requests, `--concurrency` in flight, each about a random
//! patient (seeded); every response must be 200 and the expected resource, else the run fails.

use std::io::Write;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cli::CliError;
use crate::config::Config;
use crate::server;
use crate::synth::{self, PatientFacts, Rng};
use crate::tenant::TenantId;

#[derive(clap::Args, Clone)]
pub struct BenchSearchArgs {
    /// A tenant filled by `hearth demo-data`.
    #[arg(long)]
    pub tenant: String,
    /// The `--patients` it was filled with.
    #[arg(long)]
    pub patients: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Requests per measurement.
    #[arg(long, default_value_t = 200)]
    pub iterations: usize,
    /// Rounds; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// The page compared with page 1 when walking `Patient?_count=...` next links.
    #[arg(long, default_value_t = 50)]
    pub page_depth: usize,
    /// The `--seed` demo-data used (names and birth dates are recomputed from it).
    #[arg(long, default_value_t = synth::DEFAULT_SEED)]
    pub seed: u64,
}

/// A request about one patient: the path under the tenant's base, and query parameters.
type Request = (String, Vec<(&'static str, String)>);

/// What a probe asks for.
enum Target {
    /// A read or search about one random patient: path and query parameters.
    PerPatient(fn(&PatientFacts) -> Request),
    /// The same URL every time (paging).
    Fixed(String),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    /// A US Core SHALL search naming `patient`.
    PatientScoped,
    OtherSearch,
    FirstPage,
    DeepPage,
}

struct Probe {
    label: String,
    kind: Kind,
    target: Target,
}

fn patient_param(f: &PatientFacts) -> (&'static str, String) {
    ("patient", synth::patient_id(f.number))
}

fn scoped(label: &str, make: fn(&PatientFacts) -> Request) -> Probe {
    Probe {
        label: label.to_owned(),
        kind: Kind::PatientScoped,
        target: Target::PerPatient(make),
    }
}

/// A name prefix: the first three characters of the family name (characters, not bytes:
/// names can be accented).
fn name_prefix(f: &PatientFacts) -> String {
    f.family.chars().take(3).collect()
}

fn probes(first_page: String, deep_page: String, depth: usize, count: usize) -> Vec<Probe> {
    vec![
        Probe {
            label: "Patient/{id}".into(),
            kind: Kind::Read,
            target: Target::PerPatient(|f| {
                (format!("Patient/{}", synth::patient_id(f.number)), vec![])
            }),
        },
        scoped("Observation?patient&category=laboratory", |f| {
            (
                "Observation".into(),
                vec![patient_param(f), ("category", "laboratory".into())],
            )
        }),
        scoped("Observation?patient&code=loinc|4548-4", |f| {
            (
                "Observation".into(),
                vec![patient_param(f), ("code", "http://loinc.org|4548-4".into())],
            )
        }),
        scoped(
            "Observation?patient&category=vital-signs&date=ge2022-01-01",
            |f| {
                (
                    "Observation".into(),
                    vec![
                        patient_param(f),
                        ("category", "vital-signs".into()),
                        ("date", "ge2022-01-01".into()),
                    ],
                )
            },
        ),
        scoped("Condition?patient", |f| {
            ("Condition".into(), vec![patient_param(f)])
        }),
        scoped("Encounter?patient", |f| {
            ("Encounter".into(), vec![patient_param(f)])
        }),
        scoped("MedicationRequest?patient&intent=order", |f| {
            (
                "MedicationRequest".into(),
                vec![patient_param(f), ("intent", "order".into())],
            )
        }),
        scoped("DiagnosticReport?patient&category=LAB", |f| {
            (
                "DiagnosticReport".into(),
                vec![patient_param(f), ("category", "LAB".into())],
            )
        }),
        scoped("DocumentReference?patient", |f| {
            ("DocumentReference".into(), vec![patient_param(f)])
        }),
        scoped("Procedure?patient", |f| {
            ("Procedure".into(), vec![patient_param(f)])
        }),
        scoped("AllergyIntolerance?patient", |f| {
            ("AllergyIntolerance".into(), vec![patient_param(f)])
        }),
        scoped("Immunization?patient", |f| {
            ("Immunization".into(), vec![patient_param(f)])
        }),
        Probe {
            label: "Patient?identifier=mrn-system|SYN-n".into(),
            kind: Kind::OtherSearch,
            target: Target::PerPatient(|f| {
                (
                    "Patient".into(),
                    vec![(
                        "identifier",
                        format!("urn:oid:2.16.840.1.113883.19.5.99|{}", synth::mrn(f.number)),
                    )],
                )
            }),
        },
        Probe {
            label: "Patient?name=<3-char family prefix>".into(),
            kind: Kind::OtherSearch,
            target: Target::PerPatient(|f| ("Patient".into(), vec![("name", name_prefix(f))])),
        },
        Probe {
            label: "Patient?birthdate=<date>&name=<family>".into(),
            kind: Kind::OtherSearch,
            target: Target::PerPatient(|f| {
                (
                    "Patient".into(),
                    vec![
                        ("birthdate", f.birth_date.format("%Y-%m-%d").to_string()),
                        ("name", f.family.clone()),
                    ],
                )
            }),
        },
        Probe {
            label: format!("Patient?_count={count} page 1"),
            kind: Kind::FirstPage,
            target: Target::Fixed(first_page),
        },
        Probe {
            label: format!("Patient?_count={count} page {depth}"),
            kind: Kind::DeepPage,
            target: Target::Fixed(deep_page),
        },
    ]
}

/// One response: its latency and how many `match` entries it carried.
struct Sample {
    latency: Duration,
    matches: usize,
}

#[derive(Clone, Default)]
struct Stats {
    p50_ms: f64,
    p99_ms: f64,
    per_sec: f64,
    mean_matches: f64,
    errors: usize,
    first_error: Option<String>,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    // Nearest rank.
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted
        .get(rank - 1)
        .copied()
        .unwrap_or_default()
        .as_secs_f64()
        * 1000.0
}

fn stats(results: Vec<Result<Sample, String>>, wall: Duration) -> Stats {
    let total = results.len();
    let mut latencies = Vec::with_capacity(total);
    let mut matches = 0usize;
    let mut errors = 0usize;
    let mut first_error = None;
    for r in results {
        match r {
            Ok(s) => {
                latencies.push(s.latency);
                matches += s.matches;
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    latencies.sort_unstable();
    Stats {
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        per_sec: total as f64 / wall.as_secs_f64().max(1e-9),
        mean_matches: matches as f64 / latencies.len().max(1) as f64,
        errors,
        first_error,
    }
}

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    auth: String,
}

impl Client {
    /// GET `url`; 200 and a resource of `expect` type, else an error naming what came back.
    async fn get(&self, url: String, expect: &str) -> Result<(Sample, Value), String> {
        let t = Instant::now();
        let resp = self
            .http
            .get(&url)
            .header("authorization", &self.auth)
            .header("accept", "application/fhir+json")
            // Unknown parameters must fail, not be silently ignored.
            .header("prefer", "handling=strict")
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| format!("GET {url}: {e}"))?;
        let latency = t.elapsed();
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| format!("GET {url}: {status}, body is not JSON: {e}"))?;
        if status != reqwest::StatusCode::OK {
            return Err(format!("GET {url}: {status}: {}", diagnostics(&value)));
        }
        let got = value.get("resourceType").and_then(Value::as_str);
        if got != Some(expect) {
            return Err(format!("GET {url}: expected a {expect}, got {got:?}"));
        }
        let entries = value
            .get("entry")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mode = |e: &Value| {
            e.pointer("/search/mode")
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        if let Some(outcome) = entries
            .iter()
            .find(|e| mode(e).as_deref() == Some("outcome"))
        {
            let resource = outcome.get("resource").cloned().unwrap_or_default();
            return Err(format!(
                "GET {url}: outcome entry: {}",
                diagnostics(&resource)
            ));
        }
        let matches = if expect == "Bundle" {
            entries
                .iter()
                .filter(|e| mode(e).as_deref() == Some("match"))
                .count()
        } else {
            1
        };
        Ok((Sample { latency, matches }, value))
    }
}

/// The diagnostics of an OperationOutcome (our own synthetic data: safe to print).
fn diagnostics(outcome: &Value) -> String {
    outcome
        .get("issue")
        .and_then(Value::as_array)
        .map(|issues| {
            issues
                .iter()
                .filter_map(|i| i.get("diagnostics").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}

fn next_link(bundle: &Value) -> Option<String> {
    bundle
        .get("link")?
        .as_array()?
        .iter()
        .find(|l| l.get("relation").and_then(Value::as_str) == Some("next"))?
        .get("url")?
        .as_str()
        .map(str::to_owned)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn print_table(
    out: &mut impl Write,
    title: &str,
    probes: &[Probe],
    rows: &[Stats],
) -> std::io::Result<()> {
    writeln!(out, "{title}")?;
    writeln!(
        out,
        "  {:<62} {:>8} {:>8} {:>8} {:>8} {:>6}",
        "request", "p50 ms", "p99 ms", "req/s", "matches", "errors"
    )?;
    for (probe, s) in probes.iter().zip(rows) {
        writeln!(
            out,
            "  {:<62} {:>8.2} {:>8.2} {:>8.0} {:>8.1} {:>6}",
            probe.label, s.p50_ms, s.p99_ms, s.per_sec, s.mean_matches, s.errors
        )?;
    }
    Ok(())
}

pub async fn run(mut config: Config, args: BenchSearchArgs) -> Result<(), CliError> {
    let tenant = TenantId::parse(&args.tenant)?;
    if args.patients == 0 || args.iterations == 0 {
        return Err(CliError::Usage(
            "--patients and --iterations must be at least 1".into(),
        ));
    }
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    // Links (next pages) and token audiences follow the public base: make it this server.
    config.server.public_base_url = format!("http://{addr}");
    config.database.max_connections = config
        .database
        .max_connections
        .max(args.concurrency as u32 + 4);
    let state = actix_web::web::Data::new(server::prepare(config).await?);
    if !state.store.tenant_exists(&tenant).await? {
        return Err(CliError::Usage(format!(
            "no tenant {tenant}; fill it with `hearth demo-data --tenant {tenant} --patients N`"
        )));
    }
    let base = state.fhir_base(&tenant);
    let token = state
        .tokens
        .mint(&tenant, &base, "hearth-bench-search", "system/*.rs", 3600)
        .await?;
    let http_state = state.clone();
    std::thread::spawn(move || {
        let system = actix_web::rt::System::new();
        system.block_on(async move {
            if let Ok(server) = server::http_server(http_state, listener) {
                let _ = server.await;
            }
        });
    });
    let client = Client {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(args.concurrency)
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| CliError::Usage(e.to_string()))?,
        auth: format!("Bearer {token}"),
    };
    let fail = CliError::Usage;

    // The tenant must hold what this seed generates: compare the first and last patient.
    for n in [1, args.patients] {
        let facts = synth::patient_facts(args.seed, n);
        let url = format!("{base}/Patient/{}", synth::patient_id(n));
        let (_, patient) = client.get(url, "Patient").await.map_err(fail)?;
        let family = patient.pointer("/name/0/family").and_then(Value::as_str);
        if family != Some(facts.family.as_str()) {
            return Err(fail(format!(
                "Patient/{} is not what demo-data --seed {} generates; was the tenant filled with another seed?",
                synth::patient_id(n),
                args.seed
            )));
        }
    }

    // Paging: small enough pages that `page_depth` pages exist.
    let depth = args.page_depth.max(2);
    let count = (args.patients / depth).clamp(1, 10);
    let first_page = format!("{base}/Patient?_count={count}");
    let mut deep_page = first_page.clone();
    let mut reached = 1;
    let (_, mut bundle) = client
        .get(first_page.clone(), "Bundle")
        .await
        .map_err(fail)?;
    while reached < depth {
        let Some(next) = next_link(&bundle) else {
            break;
        };
        deep_page = next.clone();
        reached += 1;
        bundle = client.get(next, "Bundle").await.map_err(fail)?.1;
    }
    if reached < depth {
        let _ = writeln!(
            std::io::stderr().lock(),
            "bench-search: only {reached} pages of Patient?_count={count}; measuring page {reached}"
        );
    }

    let probes = probes(first_page, deep_page, reached, count);
    let (n, c) = (args.iterations, args.concurrency);
    let mut rounds: Vec<Vec<Stats>> = Vec::new();
    for round in 0..args.rounds {
        let mut rows = Vec::with_capacity(probes.len());
        for (p, probe) in probes.iter().enumerate() {
            let expect = if probe.kind == Kind::Read {
                "Patient"
            } else {
                "Bundle"
            };
            // Patients drawn per (round, probe), reproducibly.
            let mut rng = Rng::stream(args.seed, round * 1000 + p, 0xBE7C);
            let urls: Vec<String> = (0..n)
                .map(|_| match &probe.target {
                    Target::Fixed(url) => url.clone(),
                    Target::PerPatient(make) => {
                        let number = 1 + rng.below(args.patients);
                        let (path, query) = make(&synth::patient_facts(args.seed, number));
                        if query.is_empty() {
                            format!("{base}/{path}")
                        } else {
                            let q = serde_urlencoded::to_string(&query).unwrap_or_default();
                            format!("{base}/{path}?{q}")
                        }
                    }
                })
                .collect();
            let urls = Arc::new(urls);
            let (results, wall) = crate::bench::drive_all(n, c, |i| {
                let (client, urls) = (client.clone(), urls.clone());
                async move {
                    let url = urls.get(i).cloned().unwrap_or_default();
                    client.get(url, expect).await.map(|(sample, _)| sample)
                }
            })
            .await?;
            rows.push(stats(results, wall));
        }
        tracing::info!(round, "bench-search round done");
        print_table(
            &mut std::io::stdout().lock(),
            &format!("round {}", round + 1),
            &probes,
            &rows,
        )?;
        rounds.push(rows);
    }

    let summary: Vec<Stats> = (0..probes.len())
        .map(|p| {
            let col = |f: fn(&Stats) -> f64| median(rounds.iter().map(|r| f(&r[p])).collect());
            Stats {
                p50_ms: col(|s| s.p50_ms),
                p99_ms: col(|s| s.p99_ms),
                per_sec: col(|s| s.per_sec),
                mean_matches: col(|s| s.mean_matches),
                errors: rounds.iter().map(|r| r[p].errors).sum(),
                first_error: rounds.iter().find_map(|r| r[p].first_error.clone()),
            }
        })
        .collect();
    let mut out = std::io::stdout().lock();
    print_table(
        &mut out,
        "median of rounds (errors: total)",
        &probes,
        &summary,
    )?;
    let of = |kind: Kind| -> Vec<&Stats> {
        probes
            .iter()
            .zip(&summary)
            .filter(|(p, _)| p.kind == kind)
            .map(|(_, s)| s)
            .collect()
    };
    let read_p99 = of(Kind::Read).first().map_or(0.0, |s| s.p99_ms);
    let scoped_p99 = median(of(Kind::PatientScoped).iter().map(|s| s.p99_ms).collect());
    let first_p50 = of(Kind::FirstPage).first().map_or(0.0, |s| s.p50_ms);
    let deep_p50 = of(Kind::DeepPage).first().map_or(0.0, |s| s.p50_ms);
    writeln!(
        out,
        "ratio p99 (median of the {} patient-scoped US Core searches / read-by-id): {scoped_p99:.2} / {read_p99:.2} = {:.2}",
        of(Kind::PatientScoped).len(),
        scoped_p99 / read_p99.max(1e-9)
    )?;
    writeln!(
        out,
        "ratio p50 (page {reached} / page 1 of Patient?_count={count}): {deep_p50:.2} / {first_p50:.2} = {:.2}",
        deep_p50 / first_p50.max(1e-9)
    )?;
    writeln!(
        out,
        "(iterations={n} concurrency={c} rounds={} patients={} seed={}; tenant {tenant})",
        args.rounds, args.patients, args.seed
    )?;
    let errors: usize = summary.iter().map(|s| s.errors).sum();
    if errors > 0 {
        let firsts: Vec<String> = probes
            .iter()
            .zip(&summary)
            .filter_map(|(p, s)| s.first_error.as_ref().map(|e| format!("{}: {e}", p.label)))
            .collect();
        return Err(CliError::Usage(format!(
            "{errors} requests failed:\n  {}",
            firsts.join("\n  ")
        )));
    }
    Ok(())
}
