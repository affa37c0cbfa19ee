//! The HL7 v2 message log: raw messages with their outcome and acknowledgement.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Store, StoreError, TenantTx};
use crate::tenant::TenantId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageStatus {
    Accepted,
    Error,
    Rejected,
}

impl MessageStatus {
    pub fn code(self) -> &'static str {
        match self {
            MessageStatus::Accepted => "accepted",
            MessageStatus::Error => "error",
            MessageStatus::Rejected => "rejected",
        }
    }
}

/// A message as received, with what Hearth made of it.
#[derive(Debug, Clone)]
pub struct MessageRecord {
    pub id: Uuid,
    pub received_at: DateTime<Utc>,
    pub listener: String,
    pub sending_application: Option<String>,
    pub sending_facility: Option<String>,
    pub control_id: Option<String>,
    pub message_type: Option<String>,
    pub trigger_event: Option<String>,
    pub status: MessageStatus,
    pub ack_code: Option<String>,
    pub ack: Option<Vec<u8>>,
    pub reason: Option<String>,
    pub raw: Vec<u8>,
}

/// One row of `hearth mllp failed`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MessageSummary {
    pub id: Uuid,
    pub received_at: DateTime<Utc>,
    pub listener: String,
    pub sending_application: Option<String>,
    pub sending_facility: Option<String>,
    pub control_id: Option<String>,
    pub message_type: Option<String>,
    pub trigger_event: Option<String>,
    pub status: String,
    pub ack_code: Option<String>,
    pub reason: Option<String>,
    pub attempts: i32,
}

impl TenantTx {
    /// The Patients holding each identifier (system, value), where exactly one does (an
    /// identifier two Patients share names neither).
    pub async fn patients_with_identifiers(
        &mut self,
        identifiers: &[(String, String)],
    ) -> Result<std::collections::BTreeMap<(String, String), String>, StoreError> {
        if identifiers.is_empty() {
            return Ok(Default::default());
        }
        let tenant = self.tenant().as_str().to_owned();
        let (systems, values): (Vec<String>, Vec<String>) = identifiers.iter().cloned().unzip();
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT t.system, t.code, min(t.resource_id) FROM search_token t
               JOIN unnest($2::text[], $3::text[]) AS i(system, code)
                 ON t.system = i.system AND t.code = i.code
              WHERE t.tenant_id = $1 AND t.resource_type = 'Patient' AND t.param = 'identifier'
              GROUP BY t.system, t.code HAVING count(DISTINCT t.resource_id) = 1",
        )
        .bind(&tenant)
        .bind(&systems)
        .bind(&values)
        .fetch_all(self.conn())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(system, code, id)| ((system, code), id))
            .collect())
    }

    /// The acknowledgement already given to this sender's message `control_id`, if any.
    pub async fn previous_ack(
        &mut self,
        sending_application: Option<&str>,
        sending_facility: Option<&str>,
        control_id: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let tenant = self.tenant().as_str().to_owned();
        let row: Option<(Option<Vec<u8>>,)> = sqlx::query_as(
            "SELECT ack FROM hl7_messages
              WHERE tenant_id = $1 AND coalesce(sending_application, '') = coalesce($2, '')
                AND coalesce(sending_facility, '') = coalesce($3, '') AND control_id = $4
                AND status <> 'rejected'",
        )
        .bind(tenant)
        .bind(sending_application)
        .bind(sending_facility)
        .bind(control_id)
        .fetch_optional(self.conn())
        .await?;
        Ok(row.and_then(|(ack,)| ack))
    }

    pub async fn insert_message(&mut self, m: &MessageRecord) -> Result<(), StoreError> {
        let tenant = self.tenant().as_str().to_owned();
        sqlx::query(
            "INSERT INTO hl7_messages (tenant_id, id, received_at, listener, sending_application,
                 sending_facility, control_id, message_type, trigger_event, status, ack_code, ack,
                 reason, raw, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, now())",
        )
        .bind(tenant)
        .bind(m.id)
        .bind(m.received_at)
        .bind(&m.listener)
        .bind(&m.sending_application)
        .bind(&m.sending_facility)
        .bind(&m.control_id)
        .bind(&m.message_type)
        .bind(&m.trigger_event)
        .bind(m.status.code())
        .bind(&m.ack_code)
        .bind(&m.ack)
        .bind(&m.reason)
        .bind(&m.raw)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Record the outcome of a replay on the original row.
    pub async fn record_replay(
        &mut self,
        id: Uuid,
        status: MessageStatus,
        ack_code: Option<&str>,
        ack: Option<&[u8]>,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let tenant = self.tenant().as_str().to_owned();
        sqlx::query(
            "UPDATE hl7_messages SET status = $3, ack_code = $4, ack = $5, reason = $6,
                    attempts = attempts + 1, updated_at = now()
              WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant)
        .bind(id)
        .bind(status.code())
        .bind(ack_code)
        .bind(ack)
        .bind(reason)
        .execute(self.conn())
        .await?;
        Ok(())
    }
}

impl Store {
    /// Messages that were not accepted (AE/AR), oldest first.
    pub async fn failed_messages(
        &self,
        tenant: &TenantId,
        limit: i64,
    ) -> Result<Vec<MessageSummary>, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let rows = sqlx::query_as(
            "SELECT id, received_at, listener, sending_application, sending_facility, control_id,
                    message_type, trigger_event, status, ack_code, reason, attempts
               FROM hl7_messages WHERE tenant_id = $1 AND status <> 'accepted'
              ORDER BY received_at LIMIT $2",
        )
        .bind(tenant.as_str())
        .bind(limit)
        .fetch_all(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// The raw bytes and listener of a stored message.
    pub async fn message_raw(
        &self,
        tenant: &TenantId,
        id: Uuid,
    ) -> Result<(Vec<u8>, String), StoreError> {
        let mut tx = self.begin(tenant).await?;
        let row: Option<(Vec<u8>, String)> = sqlx::query_as(
            "SELECT raw, listener FROM hl7_messages WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.as_str())
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
        tx.commit().await?;
        row.ok_or(StoreError::NotFound)
    }

    /// Counts by status, for `hearth mllp failed` and metrics.
    pub async fn message_counts(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let rows = sqlx::query_as("SELECT status, count(*) FROM hl7_messages WHERE tenant_id = $1 GROUP BY status ORDER BY status")
            .bind(tenant.as_str())
            .fetch_all(tx.conn())
            .await?;
        tx.commit().await?;
        Ok(rows)
    }
}
