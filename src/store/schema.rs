//! Migrations (run as the owner role) and the readiness check of the schema.

use sqlx::PgPool;
use sqlx::migrate::Migrator;

use super::StoreError;

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Apply pending migrations. Takes an advisory lock, so concurrent starts are safe.
pub async fn migrate(owner_pool: &PgPool) -> Result<(), StoreError> {
    MIGRATOR.run(owner_pool).await?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaStatus {
    Current,
    /// The database lacks migrations this binary has (or a migration failed half-way).
    Behind {
        applied: i64,
        expected: i64,
    },
}

/// Compare the applied migrations with the embedded ones.
pub async fn schema_status(pool: &PgPool) -> Result<SchemaStatus, StoreError> {
    let expected = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let applied: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await
            .or_else(|e| match &e {
                // undefined_table: nothing was ever migrated.
                sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01") => Ok(None),
                _ => Err(e),
            })?;
    let applied = applied.unwrap_or(0);
    Ok(if applied >= expected {
        SchemaStatus::Current
    } else {
        SchemaStatus::Behind { applied, expected }
    })
}
