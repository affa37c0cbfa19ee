//! The indexer: queued resource changes (the outbox, written by a trigger in the
//! transaction of every change) become text chunks with full-text vectors and embeddings.
//! A change replaces the resource's chunks; a delete removes them. Only resources in a
//! patient's compartment are indexed: retrieval is always per patient.

use std::collections::HashMap;
use std::time::Duration;

use super::RecordEntry;
use super::chunk::chunks_of;
use super::embed::{DIM, HASHING_MODEL, hashing_embedding, to_pgvector};
use crate::store::{ChunkOwner, NewChunk, Store, StoreError};
use crate::tenant::TenantId;

/// Changes taken per transaction.
const BATCH: i64 = 200;

/// Index every queued change of `tenant`; how many resources were (re)indexed or removed.
pub async fn index_pending(
    store: &Store,
    tenant: &TenantId,
    public_base: &str,
) -> Result<usize, StoreError> {
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
                Err(e) => return Err(e),
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
                    model: HASHING_MODEL,
                    dim: DIM as i32,
                };
                tx.replace_chunks(owner, &[]).await?;
                total += 1;
                continue;
            };
            let patient = crate::access::patients_of(&resource_type, &entry.resource, &local_base)
                .into_iter()
                .next();
            let chunks: Vec<NewChunk> = match &patient {
                None => Vec::new(),
                Some(_) => chunks_of(&entry)
                    .into_iter()
                    .map(|c| NewChunk {
                        embedding: to_pgvector(&hashing_embedding(&c.text)),
                        section: c.section,
                        element: c.element,
                        span: c.span.and_then(|(s, e)| {
                            Some((i32::try_from(s).ok()?, i32::try_from(e).ok()?))
                        }),
                        text: c.text,
                    })
                    .collect(),
            };
            let owner = ChunkOwner {
                resource_type: &resource_type,
                resource_id: &id,
                version_id: entry.version_id,
                patient_id: patient.as_deref(),
                model: HASHING_MODEL,
                dim: DIM as i32,
            };
            tx.replace_chunks(owner, &chunks).await?;
            total += 1;
        }
        tx.commit().await?;
    }
}

/// The background indexer of `hearth serve`: every `interval`, index every tenant with
/// queued changes. Runs until dropped.
pub async fn run_indexer(store: Store, public_base: String, interval: Duration) {
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
            if let Err(e) = index_pending(&store, &tenant, &public_base).await {
                tracing::warn!(tenant = %tenant, error = %e, "indexer failed");
            }
        }
    }
}
