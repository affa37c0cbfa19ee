//! The indexer: queued resource changes (the outbox, written by a trigger in the
//! transaction of every change) become text chunks with full-text vectors and embeddings.
//! A change replaces the resource's chunks; a delete removes them. Only resources in a
//! patient's compartment are indexed: retrieval is always per patient.

use std::collections::HashMap;
use std::time::Duration;

use super::RecordEntry;
use super::chunk::chunks_of;
use super::embed::{DIM, Embedder, to_pgvector};
use crate::store::{ChunkOwner, NewChunk, Store, StoreError};
use crate::tenant::TenantId;

/// Changes taken per transaction.
const BATCH: i64 = 200;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The embedder failed; the batch's changes stay queued (the transaction rolled back).
    #[error("embedding: {0}")]
    Embed(#[from] super::bedrock::BedrockError),
}

/// Index every queued change of `tenant` with `embedder`; how many resources were
/// (re)indexed or removed.
pub async fn index_pending(
    store: &Store,
    tenant: &TenantId,
    public_base: &str,
    embedder: &Embedder,
) -> Result<usize, IndexError> {
    let local_base = format!("{public_base}/fhir/{tenant}");
    let mut total = 0;
    loop {
        let mut tx = store.begin(tenant).await?;
        let rows = tx.take_outbox(BATCH).await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(total);
        }
        // Several changes of one resource: its current state is what counts.
        let mut latest: HashMap<(String, String), bool> = HashMap::new();
        for row in &rows {
            latest.insert(
                (row.resource_type.clone(), row.resource_id.clone()),
                row.deleted,
            );
        }
        for ((resource_type, id), _) in latest {
            let current = match tx.read(&resource_type, &id).await {
                Ok(v) => Some(v),
                Err(StoreError::Gone(_) | StoreError::NotFound) => None,
                Err(e) => return Err(e.into()),
            };
            let entry = current.and_then(|v| {
                let resource = serde_json::from_str(v.content.as_deref()?).ok()?;
                Some(RecordEntry {
                    resource_type: resource_type.clone(),
                    id: id.clone(),
                    version_id: v.version_id,
                    resource,
                })
            });
            let Some(entry) = entry else {
                let owner = ChunkOwner {
                    resource_type: &resource_type,
                    resource_id: &id,
                    version_id: 0,
                    patient_id: None,
                    model: embedder.model(),
                    dim: DIM as i32,
                };
                tx.replace_chunks(owner, &[]).await?;
                total += 1;
                continue;
            };
            let patient = crate::access::patients_of(&resource_type, &entry.resource, &local_base)
                .into_iter()
                .next();
            let mut chunks: Vec<NewChunk> = Vec::new();
            if patient.is_some() {
                for c in chunks_of(&entry) {
                    let vector = embedder.embed(&c.text).await?;
                    chunks.push(NewChunk {
                        embedding: to_pgvector(&vector),
                        section: c.section,
                        element: c.element,
                        span: c.span.and_then(|(s, e)| {
                            Some((i32::try_from(s).ok()?, i32::try_from(e).ok()?))
                        }),
                        text: c.text,
                    });
                }
            }
            let owner = ChunkOwner {
                resource_type: &resource_type,
                resource_id: &id,
                version_id: entry.version_id,
                patient_id: patient.as_deref(),
                model: embedder.model(),
                dim: DIM as i32,
            };
            tx.replace_chunks(owner, &chunks).await?;
            total += 1;
        }
        tx.commit().await?;
    }
}

/// The background indexer of `hearth serve`: every `interval`, index every tenant with
/// queued changes, each with its embedder. Runs until dropped.
pub async fn run_indexer(
    store: Store,
    public_base: String,
    bedrock: Option<super::bedrock::BedrockSettings>,
    interval: Duration,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let tenants = match store.tenants_with_outbox().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "indexer: cannot list tenants");
                continue;
            }
        };
        for tenant in tenants {
            let embedder = match embedder_for(&store, &tenant, bedrock.as_ref()).await {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(tenant = %tenant, error = %e, "indexer: no embedder");
                    continue;
                }
            };
            if let Err(e) = index_pending(&store, &tenant, &public_base, &embedder).await {
                tracing::warn!(tenant = %tenant, error = %e, "indexer failed");
            }
        }
    }
}

/// The tenant's embedder: Titan when its AI settings ask for it (`"embedding": "titan"`),
/// declare the BAA, and Bedrock is configured; the local one otherwise.
pub async fn embedder_for(
    store: &Store,
    tenant: &TenantId,
    bedrock: Option<&super::bedrock::BedrockSettings>,
) -> Result<Embedder, IndexError> {
    let settings: super::summary::AiSettings =
        serde_json::from_value(store.ai_settings(tenant).await?).unwrap_or_default();
    match (settings.embedding.as_deref(), settings.bedrock_baa, bedrock) {
        (Some("titan"), true, Some(bedrock)) => {
            Ok(Embedder::Titan(super::bedrock::Bedrock::new(bedrock)?))
        }
        _ => Ok(Embedder::Hashing),
    }
}
