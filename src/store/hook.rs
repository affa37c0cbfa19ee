//! A hook run inside every writing transaction just before it commits, with the versions
//! the transaction wrote. The request layer installs one per request (a task-local around
//! the handler) to write the audit rows of a change in the same transaction as the change;
//! `store` knows nothing of what the hook does.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::{StoreError, TenantTx};

/// One version a transaction wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenVersion {
    pub resource_type: String,
    pub id: String,
    pub version_id: i64,
    pub deleted: bool,
    /// Patients the version references (by id), and the id itself for a Patient.
    pub patients: Vec<String>,
}

pub type HookFuture<'a> = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>>;

pub trait CommitHook: Send + Sync {
    /// Called with the transaction (still open) and what it wrote; an error rolls it back.
    fn before_commit<'a>(
        &'a self,
        tx: &'a mut TenantTx,
        written: &'a [WrittenVersion],
    ) -> HookFuture<'a>;
}

tokio::task_local! {
    static COMMIT_HOOK: Arc<dyn CommitHook>;
}

/// Run `f` with `hook` installed for every transaction it commits.
pub async fn with_commit_hook<F: Future>(hook: Arc<dyn CommitHook>, f: F) -> F::Output {
    COMMIT_HOOK.scope(hook, f).await
}

pub(super) fn current() -> Option<Arc<dyn CommitHook>> {
    COMMIT_HOOK.try_with(Arc::clone).ok()
}
