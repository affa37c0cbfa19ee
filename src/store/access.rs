//! What the access decision reads and records: tenant policy overrides, a practitioner's
//! current specialties, break-glass grants.

use chrono::{DateTime, Utc};

use super::{Store, StoreError};
use crate::tenant::TenantId;

impl Store {
    /// The tenant's overrides of the default access policy (a JSON object, maybe empty).
    pub async fn tenant_access_policy(
        &self,
        tenant: &TenantId,
    ) -> Result<serde_json::Value, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let row: Option<(serde_json::Value,)> =
            sqlx::query_as("SELECT access_policy FROM tenants WHERE id = $1")
                .bind(tenant.as_str())
                .fetch_optional(tx.conn())
                .await?;
        tx.commit().await?;
        Ok(row.ok_or(StoreError::UnknownTenant)?.0)
    }

    /// The specialties (`system|code`) of the practitioner's current PractitionerRoles.
    pub async fn practitioner_specialties(
        &self,
        tenant: &TenantId,
        practitioner_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT DISTINCT s FROM practitioner_sites, unnest(specialties) AS s
              WHERE tenant_id = $1 AND practitioner_id = $2
                AND (ended_at IS NULL OR ended_at > now())",
        )
        .bind(tenant.as_str())
        .bind(practitioner_id)
        .fetch_all(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(rows.into_iter().map(|(s,)| s).collect())
    }

    /// Record a break-glass grant; returns its id.
    pub async fn grant_break_glass(
        &self,
        tenant: &TenantId,
        practitioner_id: &str,
        patient_id: &str,
        reason: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<uuid::Uuid, StoreError> {
        let id = uuid::Uuid::new_v4();
        let mut tx = self.begin(tenant).await?;
        sqlx::query(
            "INSERT INTO break_glass_grants (tenant_id, id, practitioner_id, patient_id, reason, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(tenant.as_str())
        .bind(id)
        .bind(practitioner_id)
        .bind(patient_id)
        .bind(reason)
        .bind(expires_at)
        .execute(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(id)
    }
}

/// Set a tenant's access-policy overrides (owner role, like the other tenant settings).
pub async fn set_tenant_access_policy(
    owner: &sqlx::PgPool,
    tenant: &TenantId,
    overrides: &serde_json::Value,
) -> Result<(), StoreError> {
    let updated = sqlx::query("UPDATE tenants SET access_policy = $2 WHERE id = $1")
        .bind(tenant.as_str())
        .bind(overrides)
        .execute(owner)
        .await?
        .rows_affected();
    if updated == 0 {
        return Err(StoreError::UnknownTenant);
    }
    Ok(())
}
