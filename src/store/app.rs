//! The SMART app's rows: EHR registrations, Hearth's client keys for them, launches in
//! flight, browser sessions and sync marks (tables of migration 0010). Secrets arrive
//! sealed (`auth::seal`); browser-held tokens arrive as hashes.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{Store, StoreError, TenantTx};
use crate::tenant::TenantId;

/// An `ehr_registrations` row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EhrRegistrationRow {
    pub id: String,
    pub name: String,
    pub iss: String,
    pub client_id: String,
    pub client_auth: String,
    pub scopes: String,
    pub standalone_scopes: String,
    pub frame_ancestors: Vec<String>,
}

const REGISTRATION_COLUMNS: &str =
    "id, name, iss, client_id, client_auth, scopes, standalone_scopes, frame_ancestors";

/// A launch between the redirect to the EHR and the callback.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LaunchRow {
    pub state_hash: Vec<u8>,
    pub browser_hash: Vec<u8>,
    pub registration_id: String,
    pub standalone: bool,
    pub secrets: Vec<u8>,
    pub expires_at: DateTime<Utc>,
}

/// An `app_sessions` row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub id: uuid::Uuid,
    pub registration_id: String,
    pub patient_id: String,
    pub encounter_id: Option<String>,
    pub fhir_user: Option<String>,
    pub user_display: Option<String>,
    pub scopes: String,
    pub need_patient_banner: bool,
    pub smart_style: Option<serde_json::Value>,
    pub csrf: String,
    pub secrets: Vec<u8>,
    pub sync_report: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub idle_timeout_secs: i32,
    pub expires_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub end_reason: Option<String>,
}

const SESSION_COLUMNS: &str = "id, registration_id, patient_id, encounter_id, fhir_user, \
     user_display, scopes, need_patient_banner, smart_style, csrf, secrets, sync_report, \
     created_at, last_seen_at, idle_timeout_secs, expires_at, ended_at, end_reason";

/// A new session: the row, and its hashed browser token.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    pub id: uuid::Uuid,
    pub token_hash: &'a [u8],
    pub registration_id: &'a str,
    pub patient_id: &'a str,
    pub encounter_id: Option<&'a str>,
    pub fhir_user: Option<&'a str>,
    pub user_display: Option<&'a str>,
    pub scopes: &'a str,
    pub need_patient_banner: bool,
    pub smart_style: Option<&'a serde_json::Value>,
    pub csrf: &'a str,
    pub secrets: &'a [u8],
    pub idle_timeout_secs: i32,
    pub expires_at: DateTime<Utc>,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    Logout,
    Inactive,
    Expired,
}

impl SessionEnd {
    pub fn code(self) -> &'static str {
        match self {
            SessionEnd::Logout => "logout",
            SessionEnd::Inactive => "inactive",
            SessionEnd::Expired => "expired",
        }
    }
}

impl Store {
    /// The tenant and registration of a launch's `iss` (exact match), through the policy
    /// that shows one registration to a transaction stating its `iss`.
    pub async fn registration_for_iss(
        &self,
        iss: &str,
    ) -> Result<Option<(TenantId, EhrRegistrationRow)>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT set_config('hearth.launch_iss', $1, true)")
            .bind(iss)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT tenant_id, {REGISTRATION_COLUMNS} FROM ehr_registrations WHERE iss = $1"
        )))
        .bind(iss)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        let Some(row) = row else { return Ok(None) };
        let tenant: String = row.try_get("tenant_id")?;
        let tenant = TenantId::parse(&tenant).map_err(|_| StoreError::Corrupt("tenant id"))?;
        let registration = <EhrRegistrationRow as sqlx::FromRow<_>>::from_row(&row)?;
        Ok(Some((tenant, registration)))
    }

    pub async fn ehr_registration(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<Option<EhrRegistrationRow>, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {REGISTRATION_COLUMNS} FROM ehr_registrations WHERE tenant_id = $1 AND id = $2"
        )))
        .bind(tenant.as_str())
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    pub async fn ehr_registrations(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<EhrRegistrationRow>, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {REGISTRATION_COLUMNS} FROM ehr_registrations WHERE tenant_id = $1 ORDER BY id"
        )))
        .bind(tenant.as_str())
        .fetch_all(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// Create or replace a registration. `Conflict` when another tenant has this `iss`.
    pub async fn put_ehr_registration(
        &self,
        tenant: &TenantId,
        row: &EhrRegistrationRow,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin(tenant).await?;
        let result = sqlx::query(
            "INSERT INTO ehr_registrations
                 (tenant_id, id, name, iss, client_id, client_auth, scopes, standalone_scopes, frame_ancestors)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (tenant_id, id) DO UPDATE SET
                 name = EXCLUDED.name, iss = EXCLUDED.iss, client_id = EXCLUDED.client_id,
                 client_auth = EXCLUDED.client_auth, scopes = EXCLUDED.scopes,
                 standalone_scopes = EXCLUDED.standalone_scopes,
                 frame_ancestors = EXCLUDED.frame_ancestors, updated_at = now()",
        )
        .bind(tenant.as_str())
        .bind(&row.id)
        .bind(&row.name)
        .bind(&row.iss)
        .bind(&row.client_id)
        .bind(&row.client_auth)
        .bind(&row.scopes)
        .bind(&row.standalone_scopes)
        .bind(&row.frame_ancestors)
        .execute(tx.conn())
        .await;
        match result {
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23505") => Err(
                StoreError::Refused("this EHR (iss) is registered for another tenant"),
            ),
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23503") => {
                Err(StoreError::UnknownTenant)
            }
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23514") => Err(
                StoreError::Refused("the registration's id, iss or scopes are not acceptable"),
            ),
            other => {
                other?;
                tx.commit().await
            }
        }
    }

    /// Hearth's newest client-assertion key for this tenant's EHRs: (kid, private PEM).
    pub async fn app_client_key(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<(String, String)>, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let row = sqlx::query_as(
            "SELECT kid, private_key_pem FROM app_client_keys WHERE tenant_id = $1
              ORDER BY created_at DESC LIMIT 1",
        )
        .bind(tenant.as_str())
        .fetch_optional(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    pub async fn insert_app_client_key(
        &self,
        tenant: &TenantId,
        kid: &str,
        alg: &str,
        private_key_pem: &str,
        public_jwk: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin(tenant).await?;
        sqlx::query(
            "INSERT INTO app_client_keys (tenant_id, kid, alg, private_key_pem, public_jwk)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(tenant.as_str())
        .bind(kid)
        .bind(alg)
        .bind(private_key_pem)
        .bind(public_jwk)
        .execute(tx.conn())
        .await?;
        tx.commit().await
    }

    /// The public halves of the tenant's client keys.
    pub async fn app_client_jwks(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let rows: Vec<(serde_json::Value,)> = sqlx::query_as(
            "SELECT public_jwk FROM app_client_keys WHERE tenant_id = $1 ORDER BY created_at DESC",
        )
        .bind(tenant.as_str())
        .fetch_all(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(rows.into_iter().map(|(k,)| k).collect())
    }

    pub async fn insert_launch(
        &self,
        tenant: &TenantId,
        row: &LaunchRow,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin(tenant).await?;
        // Launches nobody finished are dropped as new ones arrive.
        sqlx::query("DELETE FROM app_launches WHERE tenant_id = $1 AND expires_at < now()")
            .bind(tenant.as_str())
            .execute(tx.conn())
            .await?;
        sqlx::query(
            "INSERT INTO app_launches
                 (tenant_id, state_hash, browser_hash, registration_id, standalone, secrets, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(tenant.as_str())
        .bind(&row.state_hash)
        .bind(&row.browser_hash)
        .bind(&row.registration_id)
        .bind(row.standalone)
        .bind(&row.secrets)
        .bind(row.expires_at)
        .execute(tx.conn())
        .await?;
        tx.commit().await
    }

    /// Take a launch by its state (once: the row is deleted), if it has not expired.
    pub async fn take_launch(
        &self,
        tenant: &TenantId,
        state_hash: &[u8],
    ) -> Result<Option<LaunchRow>, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let row: Option<LaunchRow> = sqlx::query_as(
            "DELETE FROM app_launches WHERE tenant_id = $1 AND state_hash = $2
             RETURNING state_hash, browser_hash, registration_id, standalone, secrets, expires_at",
        )
        .bind(tenant.as_str())
        .bind(state_hash)
        .fetch_optional(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(row.filter(|r| r.expires_at > Utc::now()))
    }

    /// A session by the hash of its browser token (ended or not: the caller decides).
    pub async fn session_by_token(
        &self,
        tenant: &TenantId,
        token_hash: &[u8],
    ) -> Result<Option<SessionRow>, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM app_sessions WHERE tenant_id = $1 AND token_hash = $2"
        )))
        .bind(tenant.as_str())
        .bind(token_hash)
        .fetch_optional(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Tenants with open sessions past their idle timeout or lifetime (the sweeper's list).
    pub async fn tenants_with_stale_sessions(&self) -> Result<Vec<TenantId>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar("SELECT app_tenants_with_stale_sessions()")
            .fetch_all(&self.pool)
            .await?;
        Ok(ids
            .into_iter()
            .filter_map(|id| TenantId::parse(&id).ok())
            .collect())
    }

    /// The tenant's open sessions past their idle timeout or lifetime.
    pub async fn stale_sessions(&self, tenant: &TenantId) -> Result<Vec<SessionRow>, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM app_sessions
              WHERE tenant_id = $1 AND ended_at IS NULL
                AND (expires_at <= now() OR last_seen_at + make_interval(secs => idle_timeout_secs) <= now())"
        )))
        .bind(tenant.as_str())
        .fetch_all(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// Note activity now.
    pub async fn touch_session(&self, tenant: &TenantId, id: uuid::Uuid) -> Result<(), StoreError> {
        let mut tx = self.begin(tenant).await?;
        sqlx::query(
            "UPDATE app_sessions SET last_seen_at = now()
              WHERE tenant_id = $1 AND id = $2 AND ended_at IS NULL",
        )
        .bind(tenant.as_str())
        .bind(id)
        .execute(tx.conn())
        .await?;
        tx.commit().await
    }

    pub async fn set_session_secrets(
        &self,
        tenant: &TenantId,
        id: uuid::Uuid,
        secrets: &[u8],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin(tenant).await?;
        sqlx::query("UPDATE app_sessions SET secrets = $3 WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id)
            .bind(secrets)
            .execute(tx.conn())
            .await?;
        tx.commit().await
    }

    pub async fn set_sync_report(
        &self,
        tenant: &TenantId,
        id: uuid::Uuid,
        report: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin(tenant).await?;
        sqlx::query("UPDATE app_sessions SET sync_report = $3 WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id)
            .bind(report)
            .execute(tx.conn())
            .await?;
        tx.commit().await
    }

    /// When the patient's record was last synced from this EHR.
    pub async fn sync_mark(
        &self,
        tenant: &TenantId,
        registration_id: &str,
        patient_id: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let row: Option<(DateTime<Utc>,)> = sqlx::query_as(
            "SELECT synced_through FROM ehr_sync_marks
              WHERE tenant_id = $1 AND registration_id = $2 AND patient_id = $3",
        )
        .bind(tenant.as_str())
        .bind(registration_id)
        .bind(patient_id)
        .fetch_optional(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(row.map(|r| r.0))
    }
}

impl TenantTx {
    /// Insert a session and the care relationship its launch vouches for (practitioner ↔
    /// patient until the session's end), in the caller's transaction.
    pub async fn insert_session(&mut self, session: &NewSession<'_>) -> Result<(), StoreError> {
        let tenant = self.tenant().as_str().to_owned();
        sqlx::query(
            "INSERT INTO app_sessions
                 (tenant_id, id, token_hash, registration_id, patient_id, encounter_id, fhir_user,
                  user_display, scopes, need_patient_banner, smart_style, csrf, secrets,
                  idle_timeout_secs, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(&tenant)
        .bind(session.id)
        .bind(session.token_hash)
        .bind(session.registration_id)
        .bind(session.patient_id)
        .bind(session.encounter_id)
        .bind(session.fhir_user)
        .bind(session.user_display)
        .bind(session.scopes)
        .bind(session.need_patient_banner)
        .bind(session.smart_style)
        .bind(session.csrf)
        .bind(session.secrets)
        .bind(session.idle_timeout_secs)
        .bind(session.expires_at)
        .execute(self.conn())
        .await?;
        if let Some(practitioner) = session
            .fhir_user
            .and_then(|u| u.strip_prefix("Practitioner/"))
        {
            self.insert_launch_relationship(
                practitioner,
                session.patient_id,
                &session.id.to_string(),
                session.expires_at,
            )
            .await?;
        }
        Ok(())
    }

    /// An EHR launch's care relationship: the practitioner who opened the patient's chart,
    /// until `ended_at` (source `AppSession`, id `source_id`).
    pub async fn insert_launch_relationship(
        &mut self,
        practitioner_id: &str,
        patient_id: &str,
        source_id: &str,
        ended_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let tenant = self.tenant().as_str().to_owned();
        sqlx::query(
            "INSERT INTO care_relationships
                 (tenant_id, practitioner_id, patient_id, kind, source_type, source_id, started_at, ended_at)
             VALUES ($1, $2, $3, 'ehr-launch', 'AppSession', $4, now(), $5)",
        )
        .bind(&tenant)
        .bind(practitioner_id)
        .bind(patient_id)
        .bind(source_id)
        .bind(ended_at)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// End a session (if still open) and the care relationship of its launch; true if it
    /// was open.
    pub async fn end_session(
        &mut self,
        id: uuid::Uuid,
        end: SessionEnd,
    ) -> Result<bool, StoreError> {
        let tenant = self.tenant().as_str().to_owned();
        let ended = sqlx::query(
            "UPDATE app_sessions SET ended_at = now(), end_reason = $3, secrets = '\\x'::bytea
              WHERE tenant_id = $1 AND id = $2 AND ended_at IS NULL",
        )
        .bind(&tenant)
        .bind(id)
        .bind(end.code())
        .execute(self.conn())
        .await?
        .rows_affected()
            > 0;
        sqlx::query(
            "UPDATE care_relationships SET ended_at = now()
              WHERE tenant_id = $1 AND source_type = 'AppSession' AND source_id = $2
                AND (ended_at IS NULL OR ended_at > now())",
        )
        .bind(&tenant)
        .bind(id.to_string())
        .execute(self.conn())
        .await?;
        Ok(ended)
    }

    pub async fn set_sync_mark(
        &mut self,
        registration_id: &str,
        patient_id: &str,
        synced_through: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let tenant = self.tenant().as_str().to_owned();
        sqlx::query(
            "INSERT INTO ehr_sync_marks (tenant_id, registration_id, patient_id, synced_through)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id, registration_id, patient_id)
             DO UPDATE SET synced_through = EXCLUDED.synced_through",
        )
        .bind(&tenant)
        .bind(registration_id)
        .bind(patient_id)
        .bind(synced_through)
        .execute(self.conn())
        .await?;
        Ok(())
    }
}
