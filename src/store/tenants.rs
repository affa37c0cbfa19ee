//! Tenants and the keys Hearth signs its own tokens with.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::{Store, StoreError};
use crate::tenant::TenantId;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// How strictly a tenant's writes are checked against profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValidationMode {
    Off,
    Warn,
    Enforce,
}

impl ValidationMode {
    pub fn parse(s: &str) -> Option<ValidationMode> {
        Some(match s {
            "off" => ValidationMode::Off,
            "warn" => ValidationMode::Warn,
            "enforce" => ValidationMode::Enforce,
            _ => return None,
        })
    }

    pub fn code(self) -> &'static str {
        match self {
            ValidationMode::Off => "off",
            ValidationMode::Warn => "warn",
            ValidationMode::Enforce => "enforce",
        }
    }
}

/// A tenant's settings that shape request handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantSettings {
    pub validation: ValidationMode,
    pub validate_implied: bool,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SigningKeyRow {
    pub kid: String,
    pub alg: String,
    pub private_key_pem: String,
    pub public_jwk: serde_json::Value,
}

impl Store {
    /// Create a tenant as the app role: the transaction is set to the new tenant, which is
    /// the only row the tenants policy lets it insert.
    pub async fn create_tenant(&self, tenant: &TenantId, name: &str) -> Result<(), StoreError> {
        let mut tx = self.begin(tenant).await?;
        let inserted = sqlx::query(
            "INSERT INTO tenants (id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(name)
        .execute(tx.conn())
        .await?
        .rows_affected();
        tx.commit().await?;
        if inserted == 0 {
            return Err(StoreError::TenantExists);
        }
        Ok(())
    }

    pub async fn tenant_exists(&self, tenant: &TenantId) -> Result<bool, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let found: Option<(String,)> = sqlx::query_as("SELECT id FROM tenants WHERE id = $1")
            .bind(tenant.as_str())
            .fetch_optional(tx.conn())
            .await?;
        tx.commit().await?;
        Ok(found.is_some())
    }

    pub async fn tenant_settings(&self, tenant: &TenantId) -> Result<TenantSettings, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let row: Option<(String, bool)> =
            sqlx::query_as("SELECT validation, validate_implied FROM tenants WHERE id = $1")
                .bind(tenant.as_str())
                .fetch_optional(tx.conn())
                .await?;
        tx.commit().await?;
        let (validation, validate_implied) = row.ok_or(StoreError::UnknownTenant)?;
        Ok(TenantSettings {
            validation: ValidationMode::parse(&validation).unwrap_or(ValidationMode::Warn),
            validate_implied,
        })
    }

    pub async fn signing_keys(&self, tenant: &TenantId) -> Result<Vec<SigningKeyRow>, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let rows = sqlx::query_as(
            "SELECT kid, alg, private_key_pem, public_jwk FROM tenant_signing_keys
              WHERE tenant_id = $1 ORDER BY created_at DESC",
        )
        .bind(tenant.as_str())
        .fetch_all(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(rows)
    }

    pub async fn insert_signing_key(
        &self,
        tenant: &TenantId,
        key: &SigningKeyRow,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin(tenant).await?;
        let result = sqlx::query(
            "INSERT INTO tenant_signing_keys (tenant_id, kid, alg, private_key_pem, public_jwk)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(tenant.as_str())
        .bind(&key.kid)
        .bind(&key.alg)
        .bind(&key.private_key_pem)
        .bind(&key.public_jwk)
        .execute(tx.conn())
        .await;
        match result {
            // tenant_signing_keys.tenant_id references tenants: the tenant does not exist.
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23503") => {
                Err(StoreError::UnknownTenant)
            }
            other => {
                other?;
                tx.commit().await
            }
        }
    }
}

/// Every tenant; needs the owner (migration) role, which the tenants policy lets see all.
pub async fn list_tenants(owner_pool: &PgPool) -> Result<Vec<Tenant>, StoreError> {
    Ok(
        sqlx::query_as("SELECT id, name, created_at FROM tenants ORDER BY id")
            .fetch_all(owner_pool)
            .await?,
    )
}

/// Change a tenant's validation settings; needs the owner role (the app role cannot update
/// tenants).
pub async fn set_tenant_validation(
    owner_pool: &PgPool,
    tenant: &TenantId,
    mode: ValidationMode,
    implied: bool,
) -> Result<(), StoreError> {
    let updated =
        sqlx::query("UPDATE tenants SET validation = $2, validate_implied = $3 WHERE id = $1")
            .bind(tenant.as_str())
            .bind(mode.code())
            .bind(implied)
            .execute(owner_pool)
            .await?
            .rows_affected();
    if updated == 0 {
        return Err(StoreError::UnknownTenant);
    }
    Ok(())
}
