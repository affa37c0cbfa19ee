//! `hearth bench-retrieval`: the retrieval index at scale, over a tenant's real record (one
//! filled by `hearth demo-data`, written through the write path).
//!
//! With `--index`, what is queued is indexed first by `--indexers` concurrent indexers (the
//! code `hearth serve` runs): resources/s and chunks/s; `--reindex` queues every current
//! resource of the tenant before.
//! Then, for `--queries` seeded (patient, question) pairs per round, it times:
//! - **hybrid**: `Store::retrieve`, what a summary or question runs: the patient's chunks of
//!   visible resources only, vector and full-text ranks fused;
//! - **patient-knn**: the ceiling: raw SQL, exact cosine k-NN over the patient's chunks, no
//!   visibility filter, no full text;
//! - **tenant-ann**: the HNSW index alone: approximate k-NN over the whole tenant. Not usable
//!   for retrieval (it ranks before filtering by patient and visibility); it shows what the
//!   index costs at this size.
//!
//! The query's embedding is computed once per pair, outside the timings (reported apart).

use std::io::Write;
use std::time::{Duration, Instant};

use crate::cli::CliError;
use crate::clinical::embed::{Embedder, to_pgvector};
use crate::clinical::index::index_pending;
use crate::config::Config;
use crate::server;
use crate::store::{RetrievalQuery, Store};
use crate::synth::{self, Rng};
use crate::tenant::TenantId;

#[derive(clap::Args, Clone)]
pub struct BenchRetrievalArgs {
    /// A tenant with a record, e.g. filled by `hearth demo-data`.
    #[arg(long)]
    pub tenant: String,
    /// Queue every current resource of the tenant and index it first (timed).
    #[arg(long)]
    pub reindex: bool,
    /// Index what is already queued first (timed): a tenant just filled through the write
    /// path has every resource queued by the outbox trigger.
    #[arg(long)]
    pub index: bool,
    /// Concurrent indexers for `--reindex`.
    #[arg(long, default_value_t = 2)]
    pub indexers: usize,
    /// (patient, question) pairs per round.
    #[arg(long, default_value_t = 200)]
    pub queries: usize,
    /// Rounds; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Chunks returned per query.
    #[arg(long, default_value_t = 12)]
    pub k: i64,
    #[arg(long, default_value_t = synth::DEFAULT_SEED)]
    pub seed: u64,
    /// Skip the tenant-wide approximate k-NN (without the HNSW index it is a full scan).
    #[arg(long)]
    pub no_ann: bool,
}

/// What clinicians ask of a record (the words of `$summary?question=`).
const QUESTIONS: &[&str] = &[
    "when was the last hemoglobin A1c",
    "is the patient on metformin",
    "any allergy to penicillin",
    "latest blood pressure",
    "potassium level",
    "kidney function creatinine",
    "influenza vaccine",
    "why was the patient admitted",
    "shortness of breath",
    "chest pain",
    "current medications",
    "discharge plan",
];

const PATIENT_KNN: &str = "SELECT id FROM clinical_chunks
     WHERE tenant_id = $1 AND patient_id = $2 AND model = $3
     ORDER BY embedding <=> $4::vector LIMIT $5";
const TENANT_ANN: &str = "SELECT id FROM clinical_chunks
     WHERE tenant_id = $1
     ORDER BY embedding <=> $2::vector LIMIT $3";

struct Pair {
    patient: String,
    visible: Vec<String>,
    question: &'static str,
    embedding: String,
}

#[derive(Default)]
struct Round {
    hybrid: Vec<Duration>,
    patient_knn: Vec<Duration>,
    tenant_ann: Vec<Duration>,
    returned: usize,
}

pub async fn run(config: Config, args: BenchRetrievalArgs) -> Result<(), CliError> {
    let tenant = TenantId::parse(&args.tenant)?;
    if args.queries == 0 || args.rounds == 0 || args.indexers == 0 {
        return Err(CliError::Usage(
            "--queries, --rounds and --indexers must be at least 1".into(),
        ));
    }
    let public_base = config.server.public_base_url.clone();
    let state = server::prepare(config).await?;
    let store = state.store.clone();
    if !store.tenant_exists(&tenant).await? {
        return Err(CliError::Usage(format!(
            "no tenant {tenant}; fill it with `hearth demo-data --tenant {tenant} --patients N`"
        )));
    }
    let mut out = std::io::stdout();
    let embedder = Embedder::Hashing;

    if args.reindex || args.index {
        if args.reindex {
            store.queue_reindex(&tenant).await?;
        }
        writeln!(
            out,
            "indexing {} queued changes with {} indexers ...",
            outbox_count(&store, &tenant).await?,
            args.indexers
        )?;
        let before = chunk_count(&store, &tenant).await?;
        let started = Instant::now();
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..args.indexers {
            let (store, tenant, base) = (store.clone(), tenant.clone(), public_base.clone());
            workers.spawn(async move {
                index_pending(&store, &tenant, &base, &Embedder::Hashing).await
            });
        }
        let mut indexed = 0;
        while let Some(done) = workers.join_next().await {
            indexed += done
                .map_err(|e| CliError::Usage(format!("indexer stopped: {e}")))?
                .map_err(|e| CliError::Usage(format!("indexer failed: {e}")))?;
        }
        let secs = started.elapsed().as_secs_f64();
        let after = chunk_count(&store, &tenant).await?;
        let written = after.saturating_sub(before).max(0);
        writeln!(
            out,
            "indexed {indexed} resources in {secs:.1} s: {:.0} resources/s; chunks {before} -> {after} ({:.0} chunks/s written)",
            indexed as f64 / secs,
            written as f64 / secs
        )?;
    }

    let chunks = chunk_count(&store, &tenant).await?;
    let patients = chunk_patients(&store, &tenant).await?;
    if patients.is_empty() {
        return Err(CliError::Usage(format!(
            "tenant {tenant} has no chunks; run with --reindex"
        )));
    }
    writeln!(
        out,
        "tenant {tenant}: {chunks} chunks of {} patients (model {})",
        patients.len(),
        embedder.model()
    )?;

    // The pairs: seeded, the same every run over the same data.
    let mut rng = Rng::new(args.seed);
    let mut pairs = Vec::with_capacity(args.queries);
    let mut embed_time = Vec::with_capacity(args.queries);
    let mut visible_sizes = Vec::with_capacity(args.queries);
    for _ in 0..args.queries {
        let patient = patients[rng.below(patients.len())].clone();
        let question = QUESTIONS[rng.below(QUESTIONS.len())];
        let visible: Vec<String> = store
            .chunked_resources(&tenant, &patient)
            .await?
            .into_iter()
            .map(|(t, id)| format!("{t}/{id}"))
            .collect();
        let started = Instant::now();
        let vector = embedder
            .embed(question)
            .await
            .map_err(|e| CliError::Usage(e.to_string()))?;
        embed_time.push(started.elapsed());
        visible_sizes.push(visible.len() as f64);
        pairs.push(Pair {
            patient,
            visible,
            question,
            embedding: to_pgvector(&vector),
        });
    }

    let mut rounds = Vec::with_capacity(args.rounds);
    for _ in 0..args.rounds {
        rounds.push(
            measure_round(
                &store,
                &tenant,
                &pairs,
                embedder.model(),
                args.k,
                !args.no_ann,
            )
            .await?,
        );
    }

    embed_time.sort();
    writeln!(
        out,
        "query embedding (local, in process): p50 {:.2} ms; visible resources per patient: median {:.0}",
        percentile_ms(&embed_time, 0.5),
        median(visible_sizes)
    )?;
    writeln!(
        out,
        "{} pairs x {} rounds, k = {}; medians over rounds:",
        args.queries, args.rounds, args.k
    )?;
    let summary = |pick: fn(&Round) -> &Vec<Duration>, p: f64| {
        median(
            rounds
                .iter()
                .map(|r| {
                    let mut v = pick(r).clone();
                    v.sort();
                    percentile_ms(&v, p)
                })
                .collect(),
        )
    };
    let hybrid = (summary(|r| &r.hybrid, 0.5), summary(|r| &r.hybrid, 0.99));
    let knn = (
        summary(|r| &r.patient_knn, 0.5),
        summary(|r| &r.patient_knn, 0.99),
    );
    let ann = (
        summary(|r| &r.tenant_ann, 0.5),
        summary(|r| &r.tenant_ann, 0.99),
    );
    writeln!(
        out,
        "  hybrid (Store::retrieve)      p50 {:>8.2} ms  p99 {:>8.2} ms",
        hybrid.0, hybrid.1
    )?;
    writeln!(
        out,
        "  patient-knn (raw SQL ceiling) p50 {:>8.2} ms  p99 {:>8.2} ms   hybrid/ceiling p50 {:.2}x",
        knn.0,
        knn.1,
        hybrid.0 / knn.0.max(f64::EPSILON)
    )?;
    writeln!(
        out,
        "  tenant-ann (HNSW, unfiltered) p50 {:>8.2} ms  p99 {:>8.2} ms",
        ann.0, ann.1
    )?;
    let returned: usize = rounds.iter().map(|r| r.returned).sum();
    writeln!(
        out,
        "  chunks returned per hybrid query: {:.1} on average",
        returned as f64 / (args.rounds * args.queries) as f64
    )?;
    Ok(())
}

async fn measure_round(
    store: &Store,
    tenant: &TenantId,
    pairs: &[Pair],
    model: &str,
    k: i64,
    ann: bool,
) -> Result<Round, CliError> {
    let mut round = Round::default();
    for pair in pairs {
        let started = Instant::now();
        let found = store
            .retrieve(
                tenant,
                &pair.patient,
                &pair.visible,
                &RetrievalQuery {
                    text: pair.question,
                    embedding: &pair.embedding,
                    model,
                    k,
                },
            )
            .await?;
        round.hybrid.push(started.elapsed());
        round.returned += found.len();
        if found.is_empty() {
            return Err(CliError::Usage(format!(
                "no chunk retrieved for a patient with {} visible resources",
                pair.visible.len()
            )));
        }

        let mut tx = store.begin(tenant).await?;
        let started = Instant::now();
        let ids: Vec<i64> = sqlx::query_scalar(PATIENT_KNN)
            .bind(tenant.as_str())
            .bind(&pair.patient)
            .bind(model)
            .bind(&pair.embedding)
            .bind(k)
            .fetch_all(tx.conn())
            .await
            .map_err(crate::store::StoreError::from)?;
        round.patient_knn.push(started.elapsed());
        let started = Instant::now();
        let nearest: Vec<i64> = if ann {
            sqlx::query_scalar(TENANT_ANN)
                .bind(tenant.as_str())
                .bind(&pair.embedding)
                .bind(k)
                .fetch_all(tx.conn())
                .await
                .map_err(crate::store::StoreError::from)?
        } else {
            vec![0]
        };
        round.tenant_ann.push(started.elapsed());
        tx.commit().await?;
        if ids.is_empty() || nearest.is_empty() {
            return Err(CliError::Usage("a ceiling query found nothing".into()));
        }
    }
    Ok(round)
}

/// A `SELECT count(*) ... WHERE tenant_id = $1` of the tenant's rows.
pub(crate) async fn tenant_count(
    store: &Store,
    tenant: &TenantId,
    sql: &'static str,
) -> Result<i64, CliError> {
    let mut tx = store.begin(tenant).await?;
    let n: i64 = sqlx::query_scalar(sql)
        .bind(tenant.as_str())
        .fetch_one(tx.conn())
        .await
        .map_err(crate::store::StoreError::from)?;
    tx.commit().await?;
    Ok(n)
}

async fn outbox_count(store: &Store, tenant: &TenantId) -> Result<i64, CliError> {
    tenant_count(
        store,
        tenant,
        "SELECT count(*) FROM clinical_outbox WHERE tenant_id = $1",
    )
    .await
}

async fn chunk_count(store: &Store, tenant: &TenantId) -> Result<i64, CliError> {
    tenant_count(
        store,
        tenant,
        "SELECT count(*) FROM clinical_chunks WHERE tenant_id = $1",
    )
    .await
}

async fn chunk_patients(store: &Store, tenant: &TenantId) -> Result<Vec<String>, CliError> {
    let mut tx = store.begin(tenant).await?;
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT patient_id FROM clinical_chunks
          WHERE tenant_id = $1 AND patient_id IS NOT NULL ORDER BY 1",
    )
    .bind(tenant.as_str())
    .fetch_all(tx.conn())
    .await
    .map_err(crate::store::StoreError::from)?;
    tx.commit().await?;
    Ok(ids)
}

fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    // Nearest rank.
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted
        .get(rank - 1)
        .copied()
        .unwrap_or_default()
        .as_secs_f64()
        * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}
