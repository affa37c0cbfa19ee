//! `hearth bench`: FHIR create and read-by-id over HTTP against the raw-SQL ceiling (the same
//! inserts and primary-key reads issued directly with sqlx), same concurrency, one run.
//!
//! It starts its own server on an ephemeral port, in this process, against the configured
//! database, in a fresh tenant; reports each round and the medians.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Semaphore;

use crate::cli::CliError;
use crate::config::Config;
use crate::server;
use crate::tenant::TenantId;

#[derive(clap::Args, Clone)]
pub struct BenchArgs {
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Operations per measurement.
    #[arg(long, default_value_t = 2000)]
    pub operations: usize,
    /// Rounds; medians are reported.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
}

#[derive(Debug, Clone, Copy)]
struct Measurement {
    ops_per_sec: f64,
    p50_ms: f64,
}

fn measure(latencies: &mut [Duration], wall: Duration) -> Measurement {
    latencies.sort_unstable();
    let p50 = latencies
        .get(latencies.len() / 2)
        .copied()
        .unwrap_or_default();
    Measurement {
        ops_per_sec: latencies.len() as f64 / wall.as_secs_f64(),
        p50_ms: p50.as_secs_f64() * 1000.0,
    }
}

/// Run `ops` operations with at most `concurrency` in flight; every outcome, and the wall
/// time. Shared by the benchmarks.
pub(crate) async fn drive_all<T, F, Fut>(
    ops: usize,
    concurrency: usize,
    op: F,
) -> Result<(Vec<T>, Duration), CliError>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(concurrency.max(1)));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(ops);
    for i in 0..ops {
        let permit = limit
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| CliError::Usage(e.to_string()))?;
        let fut = op(i);
        tasks.push(tokio::spawn(async move {
            let result = fut.await;
            drop(permit);
            result
        }));
    }
    let mut results = Vec::with_capacity(ops);
    for task in tasks {
        results.push(task.await.map_err(|e| CliError::Usage(e.to_string()))?);
    }
    Ok((results, started.elapsed()))
}

/// [`drive_all`] for operations that succeed or fail: per-op latency, or the first error.
async fn drive<F, Fut>(
    ops: usize,
    concurrency: usize,
    op: F,
) -> Result<(Vec<Duration>, Duration), CliError>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let (results, wall) = drive_all(ops, concurrency, |i| {
        let fut = op(i);
        async move {
            let t = Instant::now();
            fut.await.map(|()| t.elapsed())
        }
    })
    .await?;
    let latencies = results
        .into_iter()
        .collect::<Result<Vec<_>, String>>()
        .map_err(CliError::Usage)?;
    Ok((latencies, wall))
}

fn patient(i: usize) -> serde_json::Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.19.5", "value": format!("BENCH-{i}")}],
        "active": true,
        "name": [{"use": "official", "family": "Benchmark", "given": ["Synthetic", format!("N{i}")]}],
        "telecom": [{"system": "phone", "value": "555-0100", "use": "home"}],
        "gender": "unknown",
        "birthDate": "1980-01-01",
        "address": [{"line": ["1 Test Way"], "city": "Springfield", "state": "MA", "postalCode": "01101"}]
    })
}

const RAW_INSERT: &str = "
    WITH v AS (
        INSERT INTO resource_versions
               (tenant_id, resource_type, id, version_id, last_updated, deleted, content)
        VALUES ($1, 'Patient', $2, 1, now(), false, $3)
        RETURNING tenant_id, resource_type, id, version_id, last_updated, deleted)
    INSERT INTO resources (tenant_id, resource_type, id, version_id, last_updated, deleted)
    SELECT tenant_id, resource_type, id, version_id, last_updated, deleted FROM v";

const RAW_READ: &str = "
    SELECT v.content FROM resources r
      JOIN resource_versions v USING (tenant_id, resource_type, id, version_id)
     WHERE r.tenant_id = $1 AND r.resource_type = 'Patient' AND r.id = $2";

/// The cheapest way to open a tenant-scoped transaction: one round trip, as the store does.
fn begin_statement(tenant: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(format!("BEGIN; SET LOCAL hearth.tenant = '{tenant}'"))
}

pub async fn run(config: Config, args: BenchArgs) -> Result<(), CliError> {
    let mut config = config;
    config.database.max_connections = config
        .database
        .max_connections
        .max(args.concurrency as u32 + 4);
    let state = actix_web::web::Data::new(server::prepare(config.clone()).await?);
    let tenant = TenantId::parse(&format!(
        "bench-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    ))?;
    state.store.create_tenant(&tenant, "benchmark").await?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let base = format!("http://{addr}/fhir/{tenant}");
    // The token's iss/aud is the configured public base; the server checks it, not the socket.
    let token = state
        .tokens
        .mint(
            &tenant,
            &state.fhir_base(&tenant),
            "hearth-bench",
            "system/*.cruds",
            3600,
        )
        .await?;
    let pool = state.store.pool().clone();
    let http_state = state.clone();
    std::thread::spawn(move || {
        let system = actix_web::rt::System::new();
        system.block_on(async move {
            if let Ok(server) = server::http_server(http_state, listener) {
                let _ = server.await;
            }
        });
    });
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let auth = format!("Bearer {token}");
    let (n, c) = (args.operations, args.concurrency);
    let mut rows: Vec<[Measurement; 4]> = Vec::new();
    for round in 0..args.rounds {
        // HTTP create
        let ids = Arc::new(std::sync::Mutex::new(Vec::with_capacity(n)));
        let (mut lat, wall) = drive(n, c, |i| {
            let (client, url, auth, ids) = (
                client.clone(),
                format!("{base}/Patient"),
                auth.clone(),
                ids.clone(),
            );
            let body = patient(i).to_string();
            async move {
                let resp = client
                    .post(url)
                    .header("authorization", auth)
                    .header("content-type", "application/fhir+json")
                    .header("prefer", "return=minimal")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if resp.status() != 201 {
                    return Err(format!("create answered {}", resp.status()));
                }
                let location = resp
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let id = location
                    .split("/Patient/")
                    .nth(1)
                    .and_then(|s| s.split('/').next())
                    .unwrap_or_default()
                    .to_owned();
                ids.lock().map_err(|e| e.to_string())?.push(id);
                Ok(())
            }
        })
        .await?;
        let http_create = measure(&mut lat, wall);
        let ids: Arc<Vec<String>> = Arc::new(std::mem::take(
            &mut *ids.lock().map_err(|e| CliError::Usage(e.to_string()))?,
        ));
        // HTTP read
        let (mut lat, wall) = drive(n, c, |i| {
            let url = format!("{base}/Patient/{}", ids[i % ids.len()]);
            let (client, auth) = (client.clone(), auth.clone());
            async move {
                let resp = client
                    .get(url)
                    .header("authorization", auth)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if resp.status() != 200 {
                    return Err(format!("read answered {}", resp.status()));
                }
                resp.bytes().await.map_err(|e| e.to_string())?;
                Ok(())
            }
        })
        .await?;
        let http_read = measure(&mut lat, wall);
        // Raw SQL create: same statement shape, same transaction with the tenant set.
        let raw_ids: Arc<Vec<String>> =
            Arc::new((0..n).map(|_| uuid::Uuid::new_v4().to_string()).collect());
        let (mut lat, wall) = drive(n, c, |i| {
            let (pool, tenant, id) = (pool.clone(), tenant.to_string(), raw_ids[i].clone());
            let content = patient(i).to_string();
            async move {
                let mut tx = pool
                    .begin_with(begin_statement(&tenant))
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(RAW_INSERT)
                    .bind(&tenant)
                    .bind(&id)
                    .bind(&content)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| e.to_string())?;
                tx.commit().await.map_err(|e| e.to_string())
            }
        })
        .await?;
        let raw_create = measure(&mut lat, wall);
        let (mut lat, wall) = drive(n, c, |i| {
            let (pool, tenant, id) = (pool.clone(), tenant.to_string(), raw_ids[i].clone());
            async move {
                let mut tx = pool
                    .begin_with(begin_statement(&tenant))
                    .await
                    .map_err(|e| e.to_string())?;
                let row: Option<(String,)> = sqlx::query_as(RAW_READ)
                    .bind(&tenant)
                    .bind(&id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(|e| e.to_string())?;
                tx.commit().await.map_err(|e| e.to_string())?;
                row.map(drop)
                    .ok_or_else(|| "raw read found nothing".to_owned())
            }
        })
        .await?;
        let raw_read = measure(&mut lat, wall);
        tracing::info!(round, "bench round done");
        print_row(
            &format!("round {}", round + 1),
            &[http_create, raw_create, http_read, raw_read],
        );
        rows.push([http_create, raw_create, http_read, raw_read]);
    }
    let median = |k: usize| {
        let mut v: Vec<f64> = rows.iter().map(|r| r[k].ops_per_sec).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let median_p50 = |k: usize| {
        let mut v: Vec<f64> = rows.iter().map(|r| r[k].p50_ms).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let summary: Vec<Measurement> = (0..4)
        .map(|k| Measurement {
            ops_per_sec: median(k),
            p50_ms: median_p50(k),
        })
        .collect();
    print_row("median", &summary);
    let mut out = std::io::stdout().lock();
    use std::io::Write;
    writeln!(
        out,
        "ratio create (HTTP/raw SQL): {:.2}",
        summary[0].ops_per_sec / summary[1].ops_per_sec
    )?;
    writeln!(
        out,
        "ratio read   (HTTP/raw SQL): {:.2}",
        summary[2].ops_per_sec / summary[3].ops_per_sec
    )?;
    writeln!(
        out,
        "(ops={n} concurrency={c} rounds={}; tenant {tenant} left in place)",
        args.rounds
    )?;
    Ok(())
}

fn print_row(label: &str, m: &[Measurement]) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let cell = |x: &Measurement| format!("{:>8.0}/s p50 {:>6.2} ms", x.ops_per_sec, x.p50_ms);
    let _ = writeln!(
        out,
        "{label:<8} create HTTP {} | raw {} || read HTTP {} | raw {}",
        cell(&m[0]),
        cell(&m[1]),
        cell(&m[2]),
        cell(&m[3])
    );
}
