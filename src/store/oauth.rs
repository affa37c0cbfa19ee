//! SMART authorization rows: Backend Services clients, assertion jtis, revoked tokens,
//! trusted identity providers.

use chrono::{DateTime, Utc};

use super::{Store, StoreError};
use crate::tenant::TenantId;

/// A registered Backend Services client.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClientRow {
    pub client_id: String,
    pub name: String,
    /// Inline public keys (a JWKS document), or
    pub jwks: Option<serde_json::Value>,
    /// where to fetch them.
    pub jwks_url: Option<String>,
    /// The most the client may be granted, space-separated.
    pub scopes: String,
    pub disabled: bool,
    /// The Group whose member patients confine the client (`None`: every patient).
    pub patient_group: Option<String>,
}

/// An identity provider a tenant trusts for user-facing apps.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TrustedIssuerRow {
    pub issuer: String,
    pub discovery_url: String,
    /// `None`: the tenant's FHIR base URL.
    pub audience: Option<String>,
    pub fhir_user_claim: String,
}

impl Store {
    /// Register a client, or replace the keys and scopes of one already registered (key
    /// rotation is a re-registration).
    pub async fn upsert_client(&self, tenant: &TenantId, c: &ClientRow) -> Result<(), StoreError> {
        let mut tx = self.begin(tenant).await?;
        sqlx::query(
            "INSERT INTO oauth_clients (tenant_id, client_id, name, jwks, jwks_url, scopes, disabled, patient_group)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (tenant_id, client_id) DO UPDATE SET name = EXCLUDED.name,
                 jwks = EXCLUDED.jwks, jwks_url = EXCLUDED.jwks_url, scopes = EXCLUDED.scopes,
                 disabled = EXCLUDED.disabled, patient_group = EXCLUDED.patient_group,
                 updated_at = now()",
        )
        .bind(tenant.as_str())
        .bind(&c.client_id)
        .bind(&c.name)
        .bind(&c.jwks)
        .bind(&c.jwks_url)
        .bind(&c.scopes)
        .bind(c.disabled)
        .bind(&c.patient_group)
        .execute(tx.conn())
        .await?;
        tx.commit().await
    }

    pub async fn client(
        &self,
        tenant: &TenantId,
        client_id: &str,
    ) -> Result<Option<ClientRow>, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let row = sqlx::query_as(
            "SELECT client_id, name, jwks, jwks_url, scopes, disabled, patient_group FROM oauth_clients
             WHERE tenant_id = $1 AND client_id = $2",
        )
        .bind(tenant.as_str())
        .bind(client_id)
        .fetch_optional(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    pub async fn clients(&self, tenant: &TenantId) -> Result<Vec<ClientRow>, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let rows = sqlx::query_as(
            "SELECT client_id, name, jwks, jwks_url, scopes, disabled, patient_group FROM oauth_clients
             WHERE tenant_id = $1 ORDER BY client_id",
        )
        .bind(tenant.as_str())
        .fetch_all(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// Record a client assertion's jti. `false` if it was already used (a replay). Expired
    /// jtis of the tenant are swept in the same transaction.
    pub async fn use_assertion_jti(
        &self,
        tenant: &TenantId,
        client_id: &str,
        jti: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin(tenant).await?;
        sqlx::query("DELETE FROM oauth_assertion_jtis WHERE tenant_id = $1 AND expires_at < now()")
            .bind(tenant.as_str())
            .execute(tx.conn())
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO oauth_assertion_jtis (tenant_id, client_id, jti, expires_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(client_id)
        .bind(jti)
        .bind(expires_at)
        .execute(tx.conn())
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(inserted == 1)
    }

    pub async fn revoke_token(
        &self,
        tenant: &TenantId,
        jti: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin(tenant).await?;
        sqlx::query(
            "INSERT INTO oauth_revoked_tokens (tenant_id, jti, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(jti)
        .bind(expires_at)
        .execute(tx.conn())
        .await?;
        tx.commit().await
    }

    pub async fn is_token_revoked(&self, tenant: &TenantId, jti: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let found: Option<(i32,)> =
            sqlx::query_as("SELECT 1 FROM oauth_revoked_tokens WHERE tenant_id = $1 AND jti = $2")
                .bind(tenant.as_str())
                .bind(jti)
                .fetch_optional(tx.conn())
                .await?;
        tx.commit().await?;
        Ok(found.is_some())
    }

    pub async fn upsert_trusted_issuer(
        &self,
        tenant: &TenantId,
        row: &TrustedIssuerRow,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin(tenant).await?;
        sqlx::query(
            "INSERT INTO trusted_issuers (tenant_id, issuer, discovery_url, audience, fhir_user_claim)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (tenant_id, issuer) DO UPDATE SET discovery_url = EXCLUDED.discovery_url,
                 audience = EXCLUDED.audience, fhir_user_claim = EXCLUDED.fhir_user_claim",
        )
        .bind(tenant.as_str())
        .bind(&row.issuer)
        .bind(&row.discovery_url)
        .bind(&row.audience)
        .bind(&row.fhir_user_claim)
        .execute(tx.conn())
        .await?;
        tx.commit().await
    }

    pub async fn trusted_issuers(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<TrustedIssuerRow>, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let rows = sqlx::query_as(
            "SELECT issuer, discovery_url, audience, fhir_user_claim FROM trusted_issuers
             WHERE tenant_id = $1 ORDER BY issuer",
        )
        .bind(tenant.as_str())
        .fetch_all(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(rows)
    }
}
