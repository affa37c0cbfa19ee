//! Group commit for the audit rows of reads: requests hand their record to one writer task
//! and wait for its commit. Whatever queued while the previous batch was being written goes
//! into the next one — one INSERT and one commit (one WAL flush) per tenant per batch instead
//! of one per request — and every waiter learns whether its row is durable before its
//! response is sent.

use tokio::sync::{mpsc, oneshot};

use super::{AuditRecord, record_all};
use crate::store::{Store, StoreError, sqlstate};
use crate::tenant::TenantId;

/// Largest batch written at once.
const MAX_BATCH: usize = 256;

/// Why a queued audit row was not written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit write failed (SQLSTATE {})", sqlstate.as_deref().unwrap_or("none"))]
pub struct AuditWriteError {
    pub sqlstate: Option<String>,
}

struct Job {
    tenant: TenantId,
    record: AuditRecord,
    done: oneshot::Sender<Result<(), AuditWriteError>>,
}

/// Writer tasks sharing one queue: while some wait for their WAL flush, an idle one takes
/// whatever has queued meanwhile.
const WRITERS: usize = 4;

#[derive(Clone)]
pub struct AuditWriter {
    jobs: mpsc::Sender<Job>,
}

impl AuditWriter {
    /// Start the writer tasks on the current runtime.
    pub fn start(store: Store) -> AuditWriter {
        let (jobs, rx) = mpsc::channel(4096);
        let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..WRITERS {
            tokio::spawn(run(store.clone(), rx.clone()));
        }
        AuditWriter { jobs }
    }

    /// Write `record` and wait until it is committed.
    pub async fn write(
        &self,
        tenant: &TenantId,
        record: AuditRecord,
    ) -> Result<(), AuditWriteError> {
        let (done, wait) = oneshot::channel();
        let job = Job {
            tenant: tenant.clone(),
            record,
            done,
        };
        let lost = || AuditWriteError { sqlstate: None };
        self.jobs.send(job).await.map_err(|_| lost())?;
        wait.await.map_err(|_| lost())?
    }
}

async fn run(store: Store, rx: std::sync::Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    loop {
        // Hold the queue only while taking a batch, not while writing it.
        let taken = rx.lock().await.recv_many(&mut batch, MAX_BATCH).await;
        if taken == 0 {
            return;
        }
        // One transaction per tenant (each sets its tenant for row-level security).
        batch.sort_by(|a, b| a.tenant.as_str().cmp(b.tenant.as_str()));
        let mut rest = std::mem::take(&mut batch);
        while !rest.is_empty() {
            let tenant = rest[0].tenant.clone();
            let split = rest
                .iter()
                .position(|j| j.tenant != tenant)
                .unwrap_or(rest.len());
            let tail = rest.split_off(split);
            let group = std::mem::replace(&mut rest, tail);
            let records: Vec<AuditRecord> = group.iter().map(|j| j.record.clone()).collect();
            let result = write_group(&store, &tenant, &records).await.map_err(|e| {
                let sqlstate = match &e {
                    StoreError::Database(db) => sqlstate(db),
                    _ => None,
                };
                tracing::error!(error = %e, "audit batch write failed");
                AuditWriteError { sqlstate }
            });
            for job in group {
                let _ = job.done.send(result.clone());
            }
        }
    }
}

async fn write_group(
    store: &Store,
    tenant: &TenantId,
    records: &[AuditRecord],
) -> Result<(), StoreError> {
    let mut tx = store.begin(tenant).await?;
    record_all(&mut tx, records).await?;
    tx.commit().await
}
