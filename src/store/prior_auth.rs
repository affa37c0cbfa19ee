//! Prior-authorization packets (`prior_auth_packets`) and their versions
//! (`prior_auth_events`): SQL only. Every change writes the new state and a version row
//! naming who did what, in the caller's transaction (with its audit row).

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{Store, StoreError, TenantTx};
use crate::tenant::TenantId;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PacketRow {
    pub id: Uuid,
    pub patient_id: String,
    pub order_ref: String,
    pub rule_set: String,
    pub status: String,
    pub response: Value,
    pub claim: Option<Value>,
    pub submission: Option<Value>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i32,
}

/// One version of a packet: who did what.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PacketEvent {
    pub version: i32,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub link_id: Option<String>,
    pub detail: Option<String>,
    pub status: String,
}

/// A change to a packet, recorded as its next version.
pub struct PacketChange<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    pub link_id: Option<&'a str>,
    pub detail: Option<&'a str>,
    pub status: &'a str,
    pub response: &'a Value,
    pub claim: Option<&'a Value>,
    pub submission: Option<&'a Value>,
}

const COLUMNS: &str = "id, patient_id, order_ref, rule_set, status, response, claim, submission,
     created_by, created_at, updated_at, version";

impl TenantTx {
    /// A new packet (a draft) and its first version.
    pub async fn insert_prior_auth_packet(
        &mut self,
        id: Uuid,
        patient_id: &str,
        order_ref: &str,
        rule_set: &str,
        change: &PacketChange<'_>,
    ) -> Result<(), StoreError> {
        let tenant = self.tenant().as_str().to_owned();
        sqlx::query(
            "INSERT INTO prior_auth_packets (tenant_id, id, patient_id, order_ref, rule_set, status,
                 response, created_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&tenant)
        .bind(id)
        .bind(patient_id)
        .bind(order_ref)
        .bind(rule_set)
        .bind(change.status)
        .bind(change.response)
        .bind(change.actor)
        .execute(self.conn())
        .await?;
        self.insert_packet_event(id, 1, change).await
    }

    async fn insert_packet_event(
        &mut self,
        id: Uuid,
        version: i32,
        change: &PacketChange<'_>,
    ) -> Result<(), StoreError> {
        let tenant = self.tenant().as_str().to_owned();
        sqlx::query(
            "INSERT INTO prior_auth_events (tenant_id, packet_id, version, actor, action, link_id,
                 detail, status, response)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&tenant)
        .bind(id)
        .bind(version)
        .bind(change.actor)
        .bind(change.action)
        .bind(change.link_id)
        .bind(change.detail)
        .bind(change.status)
        .bind(change.response)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// The packet, locked for a change in this transaction.
    pub async fn prior_auth_packet_for_update(
        &mut self,
        id: Uuid,
    ) -> Result<Option<PacketRow>, StoreError> {
        let tenant = self.tenant().as_str().to_owned();
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM prior_auth_packets WHERE tenant_id = $1 AND id = $2 FOR UPDATE"
        )))
        .bind(tenant)
        .bind(id)
        .fetch_optional(self.conn())
        .await?)
    }

    pub async fn prior_auth_packet(&mut self, id: Uuid) -> Result<Option<PacketRow>, StoreError> {
        let tenant = self.tenant().as_str().to_owned();
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM prior_auth_packets WHERE tenant_id = $1 AND id = $2"
        )))
        .bind(tenant)
        .bind(id)
        .fetch_optional(self.conn())
        .await?)
    }

    /// A patient's packets, newest first.
    pub async fn prior_auth_packets_of(
        &mut self,
        patient_id: &str,
    ) -> Result<Vec<PacketRow>, StoreError> {
        let tenant = self.tenant().as_str().to_owned();
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM prior_auth_packets WHERE tenant_id = $1 AND patient_id = $2
              ORDER BY created_at DESC"
        )))
        .bind(tenant)
        .bind(patient_id)
        .fetch_all(self.conn())
        .await?)
    }

    /// A packet's versions, oldest first.
    pub async fn prior_auth_events(&mut self, id: Uuid) -> Result<Vec<PacketEvent>, StoreError> {
        let tenant = self.tenant().as_str().to_owned();
        Ok(sqlx::query_as(
            "SELECT version, at, actor, action, link_id, detail, status FROM prior_auth_events
              WHERE tenant_id = $1 AND packet_id = $2 ORDER BY version",
        )
        .bind(tenant)
        .bind(id)
        .fetch_all(self.conn())
        .await?)
    }

    /// Write the packet's next version (the row was read `for_update` at `version`).
    pub async fn update_prior_auth_packet(
        &mut self,
        id: Uuid,
        version: i32,
        change: &PacketChange<'_>,
    ) -> Result<(), StoreError> {
        let tenant = self.tenant().as_str().to_owned();
        let next = version + 1;
        let updated = sqlx::query(
            "UPDATE prior_auth_packets SET status = $4, response = $5,
                    claim = coalesce($6, claim), submission = coalesce($7, submission),
                    updated_at = now(), version = $3
              WHERE tenant_id = $1 AND id = $2 AND version = $3 - 1",
        )
        .bind(&tenant)
        .bind(id)
        .bind(next)
        .bind(change.status)
        .bind(change.response)
        .bind(change.claim)
        .bind(change.submission)
        .execute(self.conn())
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(StoreError::ConcurrentChange);
        }
        self.insert_packet_event(id, next, change).await
    }
}

impl Store {
    /// The tenant's prior-authorization settings (a JSON object, maybe empty).
    pub async fn prior_auth_settings(&self, tenant: &TenantId) -> Result<Value, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let row: Option<(Value,)> =
            sqlx::query_as("SELECT prior_auth_settings FROM tenants WHERE id = $1")
                .bind(tenant.as_str())
                .fetch_optional(tx.conn())
                .await?;
        tx.commit().await?;
        Ok(row.ok_or(StoreError::UnknownTenant)?.0)
    }
}

/// Set a tenant's prior-authorization settings (owner role).
pub async fn set_tenant_prior_auth_settings(
    owner_pool: &sqlx::PgPool,
    tenant: &TenantId,
    settings: &Value,
) -> Result<(), StoreError> {
    let updated = sqlx::query("UPDATE tenants SET prior_auth_settings = $2 WHERE id = $1")
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
