//! Bulk Data export jobs and their files (`bulk_jobs`, `bulk_files`): SQL only. What a job
//! means and how it runs is `crate::bulk`'s.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Store, StoreError, TenantTx};
use crate::tenant::TenantId;

/// A job as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BulkJobRow {
    pub id: Uuid,
    pub owner: String,
    pub caller: serde_json::Value,
    pub request_url: String,
    pub level: String,
    pub group_id: Option<String>,
    pub types: Vec<String>,
    pub since: Option<DateTime<Utc>>,
    pub type_filters: serde_json::Value,
    pub output_format: String,
    pub transaction_time: DateTime<Utc>,
    pub status: String,
    pub type_index: i32,
    pub page_token: Option<String>,
    pub exported: i64,
    pub attempts: i32,
    pub resumed_from: Option<i64>,
    pub error: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A new job, queued.
pub struct NewBulkJob<'a> {
    pub id: Uuid,
    pub owner: &'a str,
    pub caller: serde_json::Value,
    pub request_url: &'a str,
    pub level: &'a str,
    pub group_id: Option<&'a str>,
    pub types: &'a [String],
    pub since: Option<DateTime<Utc>>,
    pub type_filters: serde_json::Value,
    pub output_format: &'a str,
    pub transaction_time: DateTime<Utc>,
}

/// One output file (a part of a type's NDJSON).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BulkFileRow {
    pub seq: i32,
    pub resource_type: String,
    pub part: i32,
    pub location: String,
    pub lines: i64,
    pub bytes: i64,
}

const JOB_COLUMNS: &str =
    "id, owner, caller, request_url, level, group_id, types, since, type_filters,
     output_format, transaction_time, status, type_index, page_token, exported, attempts,
     resumed_from, error, expires_at";

impl Store {
    pub async fn insert_bulk_job(
        &self,
        tenant: &TenantId,
        job: NewBulkJob<'_>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin(tenant).await?;
        sqlx::query(
            "INSERT INTO bulk_jobs (tenant_id, id, owner, caller, request_url, level, group_id,
                 types, since, type_filters, output_format, transaction_time, status)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'queued')",
        )
        .bind(tenant.as_str())
        .bind(job.id)
        .bind(job.owner)
        .bind(&job.caller)
        .bind(job.request_url)
        .bind(job.level)
        .bind(job.group_id)
        .bind(job.types)
        .bind(job.since)
        .bind(&job.type_filters)
        .bind(job.output_format)
        .bind(job.transaction_time)
        .execute(tx.conn())
        .await?;
        tx.commit().await
    }

    /// The job, if it exists and has not expired.
    pub async fn bulk_job(
        &self,
        tenant: &TenantId,
        id: Uuid,
    ) -> Result<Option<(BulkJobRow, Vec<BulkFileRow>)>, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let job: Option<BulkJobRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM bulk_jobs WHERE tenant_id = $1 AND id = $2
               AND (expires_at IS NULL OR expires_at > now())"
        )))
        .bind(tenant.as_str())
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
        let Some(job) = job else {
            tx.commit().await?;
            return Ok(None);
        };
        let files = tx.bulk_files(id).await?;
        tx.commit().await?;
        Ok(Some((job, files)))
    }

    /// Cancel a job that has not ended (true), or remove an ended one at once: either way
    /// its files go with the next clean-up.
    pub async fn cancel_bulk_job(&self, tenant: &TenantId, id: Uuid) -> Result<bool, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let n = sqlx::query(
            "UPDATE bulk_jobs SET status = 'cancelled', finished_at = now(), expires_at = now()
              WHERE tenant_id = $1 AND id = $2 AND (expires_at IS NULL OR expires_at > now())",
        )
        .bind(tenant.as_str())
        .bind(id)
        .execute(tx.conn())
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }

    /// The resource types the tenant holds current resources of, sorted: a skip scan of
    /// the primary key (one probe per type), not a scan of the table.
    pub async fn resource_types_present(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let types: Vec<String> = sqlx::query_scalar(
            "WITH RECURSIVE t(resource_type) AS (
                 (SELECT resource_type FROM resources WHERE tenant_id = $1 ORDER BY resource_type LIMIT 1)
                 UNION ALL
                 SELECT (SELECT r.resource_type FROM resources r WHERE r.tenant_id = $1
                            AND r.resource_type > t.resource_type ORDER BY r.resource_type LIMIT 1)
                   FROM t WHERE t.resource_type IS NOT NULL)
             SELECT resource_type FROM t WHERE resource_type IS NOT NULL",
        )
        .bind(tenant.as_str())
        .fetch_all(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(types)
    }

    /// Tenants with a job to start, resume or clean up.
    pub async fn bulk_tenants_with_work(&self) -> Result<Vec<TenantId>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar("SELECT bulk_tenants_with_work()")
            .fetch_all(self.pool())
            .await?;
        Ok(ids
            .into_iter()
            .filter_map(|id| TenantId::parse(&id).ok())
            .collect())
    }

    /// Take the tenant's next job to run: a queued one, or a running one whose worker's
    /// lease ran out (a crash or restart: it resumes), unless `max_running` of the
    /// tenant's jobs already run. The job is leased for `lease_secs`.
    pub async fn claim_bulk_job(
        &self,
        tenant: &TenantId,
        max_running: i64,
        lease_secs: i64,
    ) -> Result<Option<BulkJobRow>, StoreError> {
        let mut tx = self.begin(tenant).await?;
        // One claimer per tenant at a time, so the running count holds.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('bulk:' || $1))")
            .bind(tenant.as_str())
            .execute(tx.conn())
            .await?;
        let running: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM bulk_jobs WHERE tenant_id = $1 AND status = 'running'
               AND lease_until >= now()",
        )
        .bind(tenant.as_str())
        .fetch_one(tx.conn())
        .await?;
        if running >= max_running {
            tx.commit().await?;
            return Ok(None);
        }
        let job: Option<BulkJobRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE bulk_jobs SET status = 'running', attempts = attempts + 1,
                    resumed_from = CASE WHEN attempts > 0 THEN exported END,
                    lease_until = now() + make_interval(secs => $2)
              WHERE tenant_id = $1 AND id = (
                    SELECT id FROM bulk_jobs WHERE tenant_id = $1
                       AND (status = 'queued' OR (status = 'running'
                            AND (lease_until IS NULL OR lease_until < now())))
                     ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED)
              RETURNING {JOB_COLUMNS}"
        )))
        .bind(tenant.as_str())
        .bind(lease_secs as f64)
        .fetch_optional(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(job)
    }

    /// Ended jobs past their expiry: their rows (and their files' rows) are deleted; the
    /// ids and file locations are returned for the caller to remove the files.
    pub async fn take_expired_bulk_jobs(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<(Uuid, Vec<String>)>, StoreError> {
        let mut tx = self.begin(tenant).await?;
        // The outer query reads the files as they were before the delete cascaded.
        let rows: Vec<(Uuid, Vec<String>)> = sqlx::query_as(
            "WITH gone AS (DELETE FROM bulk_jobs WHERE tenant_id = $1 AND expires_at < now() RETURNING id)
             SELECT g.id, coalesce(array_agg(f.location) FILTER (WHERE f.location IS NOT NULL), '{}')
               FROM gone g LEFT JOIN bulk_files f ON f.tenant_id = $1 AND f.job_id = g.id
              GROUP BY g.id",
        )
        .bind(tenant.as_str())
        .fetch_all(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(rows)
    }
}

impl TenantTx {
    pub async fn bulk_files(&mut self, job: Uuid) -> Result<Vec<BulkFileRow>, StoreError> {
        let tenant = self.tenant().as_str().to_owned();
        Ok(sqlx::query_as(
            "SELECT seq, resource_type, part, location, lines, bytes FROM bulk_files
              WHERE tenant_id = $1 AND job_id = $2 ORDER BY seq",
        )
        .bind(tenant)
        .bind(job)
        .fetch_all(self.conn())
        .await?)
    }

    /// The job's status now (another request may have cancelled it).
    pub async fn bulk_job_status(&mut self, job: Uuid) -> Result<Option<String>, StoreError> {
        let tenant = self.tenant().as_str().to_owned();
        Ok(
            sqlx::query_scalar("SELECT status FROM bulk_jobs WHERE tenant_id = $1 AND id = $2")
                .bind(tenant)
                .bind(job)
                .fetch_optional(self.conn())
                .await?,
        )
    }

    /// Save a job's progress (its files first) and extend its lease; false when the job is
    /// no longer this worker's to run (cancelled, or expired and removed).
    pub async fn save_bulk_progress(
        &mut self,
        job: Uuid,
        progress: &BulkProgress<'_>,
        files: &[BulkFileRow],
        lease_secs: i64,
    ) -> Result<bool, StoreError> {
        let tenant = self.tenant().as_str().to_owned();
        for f in files {
            sqlx::query(
                "INSERT INTO bulk_files (tenant_id, job_id, seq, resource_type, part, location, lines, bytes)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (tenant_id, job_id, seq) DO UPDATE SET lines = EXCLUDED.lines, bytes = EXCLUDED.bytes",
            )
            .bind(&tenant)
            .bind(job)
            .bind(f.seq)
            .bind(&f.resource_type)
            .bind(f.part)
            .bind(&f.location)
            .bind(f.lines)
            .bind(f.bytes)
            .execute(self.conn())
            .await?;
        }
        let n = sqlx::query(
            "UPDATE bulk_jobs SET type_index = $3, page_token = $4, exported = $5,
                    lease_until = now() + make_interval(secs => $6)
              WHERE tenant_id = $1 AND id = $2 AND status = 'running'",
        )
        .bind(&tenant)
        .bind(job)
        .bind(progress.type_index)
        .bind(progress.page_token)
        .bind(progress.exported)
        .bind(lease_secs as f64)
        .execute(self.conn())
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    /// End a running job: `completed` or `failed` (with the reason), kept until `expires`.
    pub async fn finish_bulk_job(
        &mut self,
        job: Uuid,
        status: &str,
        error: Option<&str>,
        retention_secs: i64,
    ) -> Result<bool, StoreError> {
        let tenant = self.tenant().as_str().to_owned();
        let n = sqlx::query(
            "UPDATE bulk_jobs SET status = $3, error = $4, finished_at = now(), lease_until = NULL,
                    expires_at = now() + make_interval(secs => $5)
              WHERE tenant_id = $1 AND id = $2 AND status = 'running'",
        )
        .bind(&tenant)
        .bind(job)
        .bind(status)
        .bind(error)
        .bind(retention_secs as f64)
        .execute(self.conn())
        .await?
        .rows_affected();
        Ok(n > 0)
    }
}

/// Where a job is: `types[type_index]`, from `page_token`; `exported` resources so far.
pub struct BulkProgress<'a> {
    pub type_index: i32,
    pub page_token: Option<&'a str>,
    pub exported: i64,
}
