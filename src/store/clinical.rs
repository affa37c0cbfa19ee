//! The retrieval index and AI governance rows (migration 0012): outbox, chunks, hybrid
//! retrieval (vector + full text, fused), cached summaries, AI invocations and usage.

use chrono::{DateTime, Datelike, Utc};

use super::{Store, StoreError, TenantTx};
use crate::tenant::TenantId;

/// A queued change of a resource.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    pub resource_type: String,
    pub resource_id: String,
    pub version_id: i64,
    pub deleted: bool,
}

/// A chunk to store.
#[derive(Debug, Clone)]
pub struct NewChunk {
    pub section: String,
    pub element: Option<String>,
    pub span: Option<(i32, i32)>,
    pub text: String,
    /// pgvector text form (`[..]`).
    pub embedding: String,
}

/// Whose chunks they are: the resource version, its patient, the embedding model.
#[derive(Debug, Clone, Copy)]
pub struct ChunkOwner<'a> {
    pub resource_type: &'a str,
    pub resource_id: &'a str,
    pub version_id: i64,
    pub patient_id: Option<&'a str>,
    pub model: &'a str,
    pub dim: i32,
}

/// What retrieval looks for: the words, their embedding by `model` (only chunks of that
/// model are compared), how many chunks.
#[derive(Debug, Clone, Copy)]
pub struct RetrievalQuery<'a> {
    pub text: &'a str,
    pub embedding: &'a str,
    pub model: &'a str,
    pub k: i64,
}

/// A chunk found by retrieval.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RetrievedChunk {
    pub id: i64,
    pub resource_type: String,
    pub resource_id: String,
    pub version_id: i64,
    pub patient_id: Option<String>,
    pub section: String,
    pub element: Option<String>,
    pub span_start: Option<i32>,
    pub span_end: Option<i32>,
    pub text: String,
    pub score: f64,
}

/// An AI invocation as recorded before the call.
#[derive(Debug, Clone)]
pub struct NewInvocation<'a> {
    pub id: uuid::Uuid,
    pub purpose: &'a str,
    pub patient_id: Option<&'a str>,
    pub agent: Option<&'a str>,
    pub model_id: &'a str,
    pub system_prompt: &'a str,
    pub prompt: &'a str,
    pub chunk_ids: &'a [i64],
}

/// What the call gave.
#[derive(Debug, Clone)]
pub struct InvocationResult<'a> {
    pub outcome: &'a str,
    pub raw_output: Option<&'a str>,
    pub verified_output: Option<&'a serde_json::Value>,
    pub removed: Option<i32>,
    pub input_tokens: Option<i32>,
    pub output_tokens: Option<i32>,
    pub latency_ms: Option<i32>,
}

impl TenantTx {
    /// Take (delete) up to `limit` queued changes, oldest first. Two indexers may pick the
    /// same rows; only one deletes (and so returns) each. (`FOR UPDATE SKIP LOCKED` would
    /// need UPDATE on the outbox, which the app role does not have.)
    pub async fn take_outbox(&mut self, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
        let tenant = self.tenant().as_str().to_owned();
        Ok(sqlx::query_as(
            "DELETE FROM clinical_outbox WHERE tenant_id = $1 AND seq IN (
                 SELECT seq FROM clinical_outbox WHERE tenant_id = $1
                  ORDER BY seq LIMIT $2)
             RETURNING resource_type, resource_id, version_id, deleted",
        )
        .bind(&tenant)
        .bind(limit)
        .fetch_all(self.conn())
        .await?)
    }

    /// Replace a resource's chunks (none: only remove them).
    pub async fn replace_chunks(
        &mut self,
        owner: ChunkOwner<'_>,
        chunks: &[NewChunk],
    ) -> Result<(), StoreError> {
        let ChunkOwner {
            resource_type,
            resource_id,
            version_id,
            patient_id,
            model,
            dim,
        } = owner;
        let tenant = self.tenant().as_str().to_owned();
        sqlx::query(
            "DELETE FROM clinical_chunks WHERE tenant_id = $1 AND resource_type = $2 AND resource_id = $3",
        )
        .bind(&tenant)
        .bind(resource_type)
        .bind(resource_id)
        .execute(self.conn())
        .await?;
        if chunks.is_empty() {
            return Ok(());
        }
        let ordinals: Vec<i32> = (0..chunks.len() as i32).collect();
        let sections: Vec<&str> = chunks.iter().map(|c| c.section.as_str()).collect();
        let elements: Vec<Option<&str>> = chunks.iter().map(|c| c.element.as_deref()).collect();
        let starts: Vec<Option<i32>> = chunks.iter().map(|c| c.span.map(|s| s.0)).collect();
        let ends: Vec<Option<i32>> = chunks.iter().map(|c| c.span.map(|s| s.1)).collect();
        let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
        let embeddings: Vec<&str> = chunks.iter().map(|c| c.embedding.as_str()).collect();
        sqlx::query(
            "INSERT INTO clinical_chunks (tenant_id, resource_type, resource_id, version_id, patient_id,
                 ordinal, section, element, span_start, span_end, text, model, dim, embedding)
             SELECT $1, $2, $3, $4, $5, o, s, e, ss, se, t, $6, $7, v::vector
               FROM unnest($8::int[], $9::text[], $10::text[], $11::int[], $12::int[], $13::text[], $14::text[])
                 AS u(o, s, e, ss, se, t, v)",
        )
        .bind(&tenant)
        .bind(resource_type)
        .bind(resource_id)
        .bind(version_id)
        .bind(patient_id)
        .bind(model)
        .bind(dim)
        .bind(&ordinals)
        .bind(&sections)
        .bind(&elements)
        .bind(&starts)
        .bind(&ends)
        .bind(&texts)
        .bind(&embeddings)
        .execute(self.conn())
        .await?;
        Ok(())
    }
}

impl Store {
    /// Queue every current resource of the tenant for (re)indexing: for data written before
    /// the index existed, or to rebuild it. How many were queued.
    pub async fn queue_reindex(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let queued = sqlx::query(
            "INSERT INTO clinical_outbox (tenant_id, resource_type, resource_id, version_id, deleted)
             SELECT tenant_id, resource_type, id, version_id, deleted FROM resources
              WHERE tenant_id = $1 AND NOT deleted",
        )
        .bind(tenant.as_str())
        .execute(tx.conn())
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(queued)
    }

    /// Tenants with queued changes (the background indexer's list).
    pub async fn tenants_with_outbox(&self) -> Result<Vec<TenantId>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar("SELECT clinical_tenants_with_outbox()")
            .fetch_all(self.pool())
            .await?;
        Ok(ids
            .into_iter()
            .filter_map(|id| TenantId::parse(&id).ok())
            .collect())
    }

    /// Queue again the patient's resources whose chunks another model embedded.
    pub async fn requeue_other_model(
        &self,
        tenant: &TenantId,
        patient_id: &str,
        model: &str,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let queued = sqlx::query(
            "INSERT INTO clinical_outbox (tenant_id, resource_type, resource_id, version_id, deleted)
             SELECT DISTINCT tenant_id, resource_type, resource_id, version_id, false
               FROM clinical_chunks WHERE tenant_id = $1 AND patient_id = $2 AND model <> $3",
        )
        .bind(tenant.as_str())
        .bind(patient_id)
        .bind(model)
        .execute(tx.conn())
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(queued)
    }

    /// The resources (`Type`, `id`) a patient has chunks of.
    pub async fn chunked_resources(
        &self,
        tenant: &TenantId,
        patient_id: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let rows = sqlx::query_as(
            "SELECT DISTINCT resource_type, resource_id FROM clinical_chunks
              WHERE tenant_id = $1 AND patient_id = $2",
        )
        .bind(tenant.as_str())
        .bind(patient_id)
        .fetch_all(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// Chunks of one resource (for tests and the source view).
    pub async fn chunks_of(
        &self,
        tenant: &TenantId,
        resource_type: &str,
        resource_id: &str,
    ) -> Result<Vec<RetrievedChunk>, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let rows = sqlx::query_as(
            "SELECT id, resource_type, resource_id, version_id, patient_id, section, element,
                    span_start, span_end, text, 0::float8 AS score
               FROM clinical_chunks WHERE tenant_id = $1 AND resource_type = $2 AND resource_id = $3
              ORDER BY ordinal",
        )
        .bind(tenant.as_str())
        .bind(resource_type)
        .bind(resource_id)
        .fetch_all(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// Hybrid retrieval among the patient's chunks of `visible` resources (`Type/id`) only:
    /// the `k` nearest by cosine distance and the `k` best by full-text rank, fused by
    /// reciprocal rank (k = 60). What is not visible is never ranked.
    pub async fn retrieve(
        &self,
        tenant: &TenantId,
        patient_id: &str,
        visible: &[String],
        query: &RetrievalQuery<'_>,
    ) -> Result<Vec<RetrievedChunk>, StoreError> {
        let RetrievalQuery {
            text: query_text,
            embedding: query_embedding,
            model,
            k,
        } = *query;
        let terms: Vec<String> = query_text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.len() > 1)
            .map(str::to_lowercase)
            .collect();
        let tsquery = terms.join(" | ");
        let mut tx = self.begin(tenant).await?;
        let rows = sqlx::query_as(
            "WITH candidates AS (
                 SELECT id, resource_type, resource_id, version_id, patient_id, section, element,
                        span_start, span_end, text, tsv, embedding
                   FROM clinical_chunks
                  WHERE tenant_id = $1 AND patient_id = $2 AND model = $7
                    AND (resource_type || '/' || resource_id) = ANY($3)),
             by_vector AS (
                 SELECT id, row_number() OVER (ORDER BY embedding <=> $4::vector) AS r
                   FROM candidates ORDER BY embedding <=> $4::vector LIMIT $6),
             by_text AS (
                 SELECT c.id, row_number() OVER (ORDER BY ts_rank(c.tsv, q) DESC) AS r
                   FROM candidates c, to_tsquery('english', $5) q
                  WHERE $5 <> '' AND c.tsv @@ q
                  ORDER BY ts_rank(c.tsv, q) DESC LIMIT $6)
             SELECT c.id, c.resource_type, c.resource_id, c.version_id, c.patient_id, c.section,
                    c.element, c.span_start, c.span_end, c.text,
                    (coalesce(1.0 / (60 + v.r), 0) + coalesce(1.0 / (60 + t.r), 0))::float8 AS score
               FROM candidates c
               LEFT JOIN by_vector v ON v.id = c.id
               LEFT JOIN by_text t ON t.id = c.id
              WHERE v.id IS NOT NULL OR t.id IS NOT NULL
              ORDER BY score DESC, c.id
              LIMIT $6",
        )
        .bind(tenant.as_str())
        .bind(patient_id)
        .bind(visible)
        .bind(query_embedding)
        .bind(&tsquery)
        .bind(k)
        .bind(model)
        .fetch_all(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// A cached summary for this data version, if any.
    pub async fn cached_summary(
        &self,
        tenant: &TenantId,
        patient_id: &str,
        engine: &str,
        viewer_key: &str,
        data_version: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let row: Option<(serde_json::Value,)> = sqlx::query_as(
            "SELECT summary FROM clinical_summaries
              WHERE tenant_id = $1 AND patient_id = $2 AND engine = $3 AND viewer_key = $4
                AND data_version = $5",
        )
        .bind(tenant.as_str())
        .bind(patient_id)
        .bind(engine)
        .bind(viewer_key)
        .bind(data_version)
        .fetch_optional(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(row.map(|r| r.0))
    }

    pub async fn cache_summary(
        &self,
        tenant: &TenantId,
        patient_id: &str,
        engine: &str,
        viewer_key: &str,
        data_version: &str,
        summary: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin(tenant).await?;
        sqlx::query(
            "INSERT INTO clinical_summaries (tenant_id, patient_id, engine, viewer_key, data_version, summary)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (tenant_id, patient_id, engine, viewer_key)
             DO UPDATE SET data_version = EXCLUDED.data_version, summary = EXCLUDED.summary, created_at = now()",
        )
        .bind(tenant.as_str())
        .bind(patient_id)
        .bind(engine)
        .bind(viewer_key)
        .bind(data_version)
        .bind(summary)
        .execute(tx.conn())
        .await?;
        tx.commit().await
    }

    /// The tenant's AI settings (a JSON object, maybe empty).
    pub async fn ai_settings(&self, tenant: &TenantId) -> Result<serde_json::Value, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let row: Option<(serde_json::Value,)> =
            sqlx::query_as("SELECT ai_settings FROM tenants WHERE id = $1")
                .bind(tenant.as_str())
                .fetch_optional(tx.conn())
                .await?;
        tx.commit().await?;
        Ok(row.ok_or(StoreError::UnknownTenant)?.0)
    }

    /// Tokens used this month.
    pub async fn ai_tokens_this_month(&self, tenant: &TenantId) -> Result<i64, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT tokens FROM ai_usage WHERE tenant_id = $1 AND month = $2")
                .bind(tenant.as_str())
                .bind(month_of(Utc::now()))
                .fetch_optional(tx.conn())
                .await?;
        tx.commit().await?;
        Ok(row.map_or(0, |r| r.0))
    }

    /// Record an invocation before the call (so a crash mid-call still leaves its prompt).
    pub async fn begin_invocation(
        &self,
        tenant: &TenantId,
        inv: &NewInvocation<'_>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin(tenant).await?;
        sqlx::query(
            "INSERT INTO ai_invocations (tenant_id, id, purpose, patient_id, agent, model_id,
                 system_prompt, prompt, chunk_ids, outcome)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'started')",
        )
        .bind(tenant.as_str())
        .bind(inv.id)
        .bind(inv.purpose)
        .bind(inv.patient_id)
        .bind(inv.agent)
        .bind(inv.model_id)
        .bind(inv.system_prompt)
        .bind(inv.prompt)
        .bind(inv.chunk_ids)
        .execute(tx.conn())
        .await?;
        tx.commit().await
    }

    /// Complete an invocation's record and count its tokens against the month.
    pub async fn finish_invocation(
        &self,
        tenant: &TenantId,
        id: uuid::Uuid,
        result: &InvocationResult<'_>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin(tenant).await?;
        sqlx::query(
            "UPDATE ai_invocations SET outcome = $3, raw_output = $4, verified_output = $5,
                    removed = $6, input_tokens = $7, output_tokens = $8, latency_ms = $9
              WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.as_str())
        .bind(id)
        .bind(result.outcome)
        .bind(result.raw_output)
        .bind(result.verified_output)
        .bind(result.removed)
        .bind(result.input_tokens)
        .bind(result.output_tokens)
        .bind(result.latency_ms)
        .execute(tx.conn())
        .await?;
        let tokens = i64::from(result.input_tokens.unwrap_or(0))
            + i64::from(result.output_tokens.unwrap_or(0));
        sqlx::query(
            "INSERT INTO ai_usage (tenant_id, month, invocations, tokens) VALUES ($1, $2, 1, $3)
             ON CONFLICT (tenant_id, month) DO UPDATE
                 SET invocations = ai_usage.invocations + 1, tokens = ai_usage.tokens + EXCLUDED.tokens",
        )
        .bind(tenant.as_str())
        .bind(month_of(Utc::now()))
        .bind(tokens)
        .execute(tx.conn())
        .await?;
        tx.commit().await
    }
}

fn month_of(at: DateTime<Utc>) -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(at.year(), at.month(), 1).unwrap_or_default()
}

/// Set a tenant's AI settings (owner role, like the access policy).
pub async fn set_tenant_ai_settings(
    owner_pool: &sqlx::PgPool,
    tenant: &TenantId,
    settings: &serde_json::Value,
) -> Result<(), StoreError> {
    let updated = sqlx::query("UPDATE tenants SET ai_settings = $2 WHERE id = $1")
        .bind(tenant.as_str())
        .bind(settings)
        .execute(owner_pool)
        .await?
        .rows_affected();
    if updated == 0 {
        return Err(StoreError::UnknownTenant);
    }
    Ok(())
}
