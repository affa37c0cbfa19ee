//! PostgreSQL repository: versions, history, tenants, keys. Knows SQL, not HTTP.
//!
//! Every query runs inside a [`TenantTx`]: a transaction whose first statement sets
//! `hearth.tenant` (SET LOCAL semantics), so row-level security scopes it to one tenant.
//! Queries also name `tenant_id` explicitly, for the planner; RLS is the last line, not the
//! only one.

mod access;
mod app;
mod bulk;
mod clinical;
mod hl7;
mod hook;
mod index;
mod oauth;
mod prior_auth;
mod relationships;
mod resources;
mod schema;
mod search;
mod tenants;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use crate::tenant::TenantId;

pub use access::set_tenant_access_policy;
pub use app::{EhrRegistrationRow, LaunchRow, NewSession, SessionEnd, SessionRow};
pub use bulk::{BulkFileRow, BulkJobRow, BulkProgress, NewBulkJob};
pub use clinical::{
    ChunkOwner, InvocationResult, NewChunk, NewInvocation, OutboxRow, RetrievalQuery,
    RetrievedChunk, set_tenant_ai_settings,
};
pub use hl7::{MessageRecord, MessageStatus, MessageSummary};
pub use hook::{CommitHook, HookFuture, WrittenVersion, with_commit_hook};
pub use oauth::{ClientRow, TrustedIssuerRow};
pub use prior_auth::{PacketChange, PacketEvent, PacketRow, set_tenant_prior_auth_settings};
pub use relationships::{
    CareKind, CareLink, CareRelationship, PatientSite, PatientSiteLink, PractitionerSite,
    PractitionerSiteLink, RELATIONSHIP_SOURCES, RelationshipRows, SiteType, is_relationship_source,
    replace_relationships,
};
pub use resources::{HistoryCursor, HistoryPage, Rendered, StoredVersion, VersionStamp};
pub use schema::{SchemaStatus, migrate, schema_status};
pub use search::SearchPage;
pub use tenants::{
    SigningKeyRow, Tenant, TenantSettings, ValidationMode, list_tenants, set_tenant_validation,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("resource not found")]
    NotFound,
    #[error("resource was deleted")]
    Gone(VersionStamp),
    #[error("version {expected} was expected but the current version is {current}")]
    VersionConflict { expected: i64, current: i64 },
    #[error("the resource is being changed by another request")]
    Busy,
    #[error("a concurrent change to the same resource won")]
    ConcurrentChange,
    #[error("the page token is not one this server issued for this search")]
    InvalidPageToken,
    #[error("unknown tenant")]
    UnknownTenant,
    /// A write the caller may not make (the access decision, applied inside the transaction).
    #[error("not permitted: {0}")]
    Forbidden(String),
    #[error("tenant already exists")]
    TenantExists,
    /// A configuration row the database refuses (duplicate, out of range); the text says
    /// which rule, never the row's values.
    #[error("{0}")]
    Refused(&'static str),
    #[error("stored data is unreadable: {0}")]
    Corrupt(&'static str),
    #[error("database error (SQLSTATE {})", sqlstate(.0).as_deref().unwrap_or("none"))]
    Database(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// The SQLSTATE of a database error, the only part of it safe to log: Postgres messages and
/// details can quote row values, which may be PHI.
pub fn sqlstate(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match sqlstate(&err).as_deref() {
            // lock_not_available: lock_timeout expired waiting for another writer.
            Some("55P03") => StoreError::Busy,
            // unique_violation on a version row, serialization_failure, deadlock_detected.
            Some("23505") | Some("40001") | Some("40P01") => StoreError::ConcurrentChange,
            _ => StoreError::Database(err),
        }
    }
}

/// Connection pool of the app role plus the settings every transaction applies.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    lock_timeout_ms: u64,
}

pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, StoreError> {
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect(url)
        .await?)
}

impl Store {
    pub fn new(pool: PgPool, lock_timeout_ms: u64) -> Self {
        Store {
            pool,
            lock_timeout_ms,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Start a transaction scoped to `tenant`, in one round trip: BEGIN and the SET LOCALs go
    /// as one simple-protocol batch. Inlining is safe because a `TenantId` is `[a-z0-9-]` only
    /// (checked at parse time) and the timeout is a number.
    pub async fn begin(&self, tenant: &TenantId) -> Result<TenantTx, StoreError> {
        let statement = format!(
            "BEGIN; SET LOCAL hearth.tenant = '{}'; SET LOCAL lock_timeout = '{}ms'",
            tenant.as_str(),
            self.lock_timeout_ms
        );
        let tx = self.pool.begin_with(sqlx::AssertSqlSafe(statement)).await?;
        Ok(TenantTx {
            tx,
            tenant: tenant.clone(),
            written: Vec::new(),
        })
    }

    /// Is the pool's role safe to serve with? It must not be a superuser, must not bypass RLS
    /// and must own none of Hearth's tables (owners could disable RLS).
    pub async fn check_app_role(&self) -> Result<Vec<String>, StoreError> {
        let (superuser, bypass): (bool, bool) = sqlx::query_as(
            "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user",
        )
        .fetch_one(&self.pool)
        .await?;
        let owned: Vec<(String,)> = sqlx::query_as(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
                AND pg_get_userbyid(c.relowner) = current_user",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut problems = Vec::new();
        if superuser {
            problems.push("the database role is a superuser".to_owned());
        }
        if bypass {
            problems.push("the database role has BYPASSRLS".to_owned());
        }
        for (table,) in owned {
            problems.push(format!("the database role owns table {table}"));
        }
        Ok(problems)
    }
}

/// A transaction with the tenant set. Dropping it without `commit` rolls back.
pub struct TenantTx {
    tx: Transaction<'static, Postgres>,
    tenant: TenantId,
    /// Versions written so far, for the commit hook.
    written: Vec<WrittenVersion>,
}

impl TenantTx {
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// Commit; when versions were written and a commit hook is installed, the hook runs
    /// first, in this transaction.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        if !self.written.is_empty()
            && let Some(hook) = hook::current()
        {
            let written = std::mem::take(&mut self.written);
            hook.before_commit(&mut self, &written).await?;
        }
        Ok(self.tx.commit().await?)
    }

    /// Note a version this transaction wrote.
    pub(crate) fn wrote(&mut self, version: WrittenVersion) {
        self.written.push(version);
    }

    pub fn conn(&mut self) -> &mut sqlx::PgConnection {
        &mut self.tx
    }
}
