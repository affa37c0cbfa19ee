//! `hearth bench-export`: a system-level Bulk Data export of a tenant's whole record (one
//! filled by `hearth demo-data`), through the job runner every server uses, against the
//! raw-SQL ceiling: the same current resources streamed by one query into one file.
//! Memory is sampled while the job runs (resident set at each quarter of the export, and
//! the process's peak), to show it stays flat as the export grows.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use tokio::io::AsyncWriteExt;

use crate::access::OwnedSubject;
use crate::auth::{Principal, ScopeSet, TokenIssuer};
use crate::bulk::{self, ExportLevel, ExportRequest};
use crate::cli::CliError;
use crate::config::Config;
use crate::server;
use crate::store::StoreError;
use crate::tenant::TenantId;

#[derive(clap::Args, Clone)]
pub struct BenchExportArgs {
    /// A tenant with a record, e.g. filled by `hearth demo-data`.
    #[arg(long)]
    pub tenant: String,
    /// Rounds; medians are reported.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
}

/// Resident and peak resident memory of this process, in MiB (Linux; 0 elsewhere).
fn memory_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

pub async fn run(mut config: Config, args: BenchExportArgs) -> Result<(), CliError> {
    let tenant = TenantId::parse(&args.tenant)?;
    if args.rounds == 0 {
        return Err(CliError::Usage("--rounds must be at least 1".into()));
    }
    let scratch = std::env::temp_dir().join(format!(
        "hearth-bench-export-{}",
        uuid::Uuid::new_v4().simple()
    ));
    config.bulk.dir = scratch.join("jobs");
    config.bulk.poll_interval_ms = 50;
    let state = Arc::new(server::prepare(config).await?);
    if !state.store.tenant_exists(&tenant).await? {
        return Err(CliError::Usage(format!(
            "no tenant {tenant}; fill it with `hearth demo-data --tenant {tenant} --patients N`"
        )));
    }
    let subject = OwnedSubject {
        principal: Principal {
            tenant: tenant.clone(),
            subject: "bench-export".into(),
            scopes: ScopeSet::parse("system/*.rs"),
            token_id: String::new(),
            issuer: TokenIssuer::Hearth,
            client_id: Some("bench-export".into()),
            patient: None,
            fhir_user: None,
            patient_group: None,
        },
        policy: state.access_policy(&tenant).await?,
        specialties: Vec::new(),
        purpose: "TREAT".into(),
        local_base: format!("{}/", state.fhir_base(&tenant)),
    };
    let exporter = tokio::spawn(bulk::run_exporter(state.clone()));
    let mut out = std::io::stdout();
    let (rss_start, _) = memory_mib();
    writeln!(
        out,
        "tenant {tenant}; resident memory before: {rss_start:.0} MiB"
    )?;

    let mut exports = Vec::new();
    let mut ceilings = Vec::new();
    for round in 1..=args.rounds {
        // The export, as a client's kick-off would queue it.
        let request = ExportRequest::parse(ExportLevel::System, &[], &subject.local_base)
            .map_err(|e| CliError::Usage(e.to_string()))?;
        let started = Instant::now();
        let job = bulk::kick_off(&state, &tenant, &request, &subject, "bench-export")
            .await
            .map_err(|e| CliError::Usage(e.to_string()))?;
        let mut quarters: Vec<(i64, f64)> = Vec::new();
        let mut total = None;
        let (exported, bytes) = loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let Some((row, files)) = state.store.bulk_job(&tenant, job).await? else {
                return Err(CliError::Usage("the export job vanished".into()));
            };
            if total.is_none() {
                total = Some(count_current(&state, &tenant).await?);
            }
            let (rss, _) = memory_mib();
            let quarter = total.map_or(0, |t| (row.exported * 4 / t.max(1)).min(4));
            if quarters.len() as i64 <= quarter {
                quarters.push((row.exported, rss));
            }
            match row.status.as_str() {
                "completed" => break (row.exported, files.iter().map(|f| f.bytes).sum::<i64>()),
                "failed" => {
                    return Err(CliError::Usage(format!(
                        "the export failed: {}",
                        row.error.unwrap_or_default()
                    )));
                }
                _ => {}
            }
        };
        let secs = started.elapsed().as_secs_f64();
        let (_, peak) = memory_mib();
        writeln!(
            out,
            "round {round}: export {exported} resources, {:.0} MiB in {secs:.1} s: {:.0} resources/s",
            bytes as f64 / 1048576.0,
            exported as f64 / secs
        )?;
        let samples: Vec<String> = quarters
            .iter()
            .map(|(n, rss)| format!("{n} -> {rss:.0} MiB"))
            .collect();
        writeln!(
            out,
            "  resident memory as the export grew: {}; peak {peak:.0} MiB",
            samples.join(", ")
        )?;
        exports.push(exported as f64 / secs);
        state.store.cancel_bulk_job(&tenant, job).await?;

        // The ceiling: one query streaming every current resource into one file.
        let started = Instant::now();
        let (lines, bytes) = raw_sql_dump(&state, &tenant, &scratch.join("ceiling.ndjson")).await?;
        let secs = started.elapsed().as_secs_f64();
        writeln!(
            out,
            "round {round}: raw SQL dump {lines} resources, {:.0} MiB in {secs:.1} s: {:.0} resources/s",
            bytes as f64 / 1048576.0,
            lines as f64 / secs
        )?;
        ceilings.push(lines as f64 / secs);
    }
    exporter.abort();
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (export, ceiling) = (median(exports), median(ceilings));
    writeln!(
        out,
        "median: export {export:.0} resources/s, raw SQL ceiling {ceiling:.0} resources/s, export/ceiling {:.2}",
        export / ceiling
    )?;
    let _ = tokio::fs::remove_dir_all(&scratch).await;
    Ok(())
}

async fn count_current(state: &crate::state::AppState, tenant: &TenantId) -> Result<i64, CliError> {
    crate::bench_retrieval::tenant_count(
        &state.store,
        tenant,
        "SELECT count(*) FROM resources WHERE tenant_id = $1 AND NOT deleted",
    )
    .await
}

/// Every current resource's JSON, one per line, streamed by one query.
async fn raw_sql_dump(
    state: &crate::state::AppState,
    tenant: &TenantId,
    path: &std::path::Path,
) -> Result<(u64, u64), CliError> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let mut file = tokio::io::BufWriter::new(tokio::fs::File::create(path).await?);
    let mut tx = state.store.begin(tenant).await?;
    let (mut lines, mut bytes) = (0u64, 0u64);
    {
        let mut rows = sqlx::query_scalar::<_, String>(
            "SELECT v.content FROM resources r JOIN resource_versions v
                 ON v.tenant_id = r.tenant_id AND v.resource_type = r.resource_type
                AND v.id = r.id AND v.version_id = r.version_id
              WHERE r.tenant_id = $1 AND NOT r.deleted",
        )
        .bind(tenant.as_str())
        .fetch(tx.conn());
        while let Some(content) = rows.try_next().await.map_err(StoreError::from)? {
            file.write_all(content.as_bytes()).await?;
            file.write_all(b"\n").await?;
            lines += 1;
            bytes += content.len() as u64 + 1;
        }
    }
    file.flush().await?;
    file.get_ref().sync_data().await?;
    tx.commit().await?;
    Ok((lines, bytes))
}
