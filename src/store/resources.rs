//! Resource versions: create, read, vread, update, delete and history.

use chrono::{DateTime, SubsecRound, Utc};

use super::index::{IndexColumns, WRITE_VERSION};
use super::relationships::{RelationshipRows, is_relationship_source, replace_relationships};
use super::{Store, StoreError, TenantTx};
use crate::search::IndexEntry;
use crate::tenant::TenantId;

/// The server-assigned identity of one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionStamp {
    pub version_id: i64,
    /// Millisecond precision: what `meta.lastUpdated` carries.
    pub last_updated: DateTime<Utc>,
}

/// One stored version. `content` is `None` for a delete version.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredVersion {
    pub resource_type: String,
    pub id: String,
    pub version_id: i64,
    pub last_updated: DateTime<Utc>,
    pub deleted: bool,
    pub content: Option<String>,
}

impl StoredVersion {
    pub fn stamp(&self) -> VersionStamp {
        VersionStamp {
            version_id: self.version_id,
            last_updated: self.last_updated,
        }
    }
}

/// What a write stores: the JSON, its search index rows and, for the types that state
/// them (Encounter, CareTeam, PractitionerRole), its care relationship rows.
#[derive(Default)]
pub struct Rendered {
    pub content: String,
    pub index: Vec<IndexEntry>,
    /// `None` for every other type; for a relationship source, `None` clears its rows.
    pub relationships: Option<RelationshipRows>,
}

impl Rendered {
    /// A version with no relationship rows (for writers that do not derive them).
    pub fn new(content: String, index: Vec<IndexEntry>) -> Self {
        Rendered {
            content,
            index,
            relationships: None,
        }
    }
}

/// Where a history page starts: strictly older than this point, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryCursor {
    pub last_updated: DateTime<Utc>,
    pub id: String,
    pub version_id: i64,
}

#[derive(Debug)]
pub struct HistoryPage {
    pub versions: Vec<StoredVersion>,
    /// Present when more versions follow.
    pub next: Option<HistoryCursor>,
}

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

const SELECT_VERSION_COLUMNS: &str =
    "SELECT v.resource_type, v.id, v.version_id, v.last_updated, v.deleted, v.content";

/// Write one version with its index rows (none for a delete) in one statement; for a
/// relationship source (Encounter, CareTeam, PractitionerRole) a second statement replaces
/// its care relationship rows (`None`, as for a delete, clears them). Other types: one.
async fn insert_version(
    tx: &mut TenantTx,
    resource_type: &str,
    id: &str,
    stamp: &VersionStamp,
    content: Option<&str>,
    index: &[IndexEntry],
    relationships: Option<&RelationshipRows>,
) -> Result<(), StoreError> {
    let tenant = tx.tenant().as_str().to_owned();
    let c = IndexColumns::from_entries(index);
    sqlx::query(WRITE_VERSION)
        .bind(tenant)
        .bind(resource_type)
        .bind(id)
        .bind(stamp.version_id)
        .bind(stamp.last_updated)
        .bind(content.is_none())
        .bind(content)
        .bind(c.token.0)
        .bind(c.token.1)
        .bind(c.token.2)
        .bind(c.token.3)
        .bind(c.token.4)
        .bind(c.token.5)
        .bind(c.string.0)
        .bind(c.string.1)
        .bind(c.string.2)
        .bind(c.date.0)
        .bind(c.date.1)
        .bind(c.date.2)
        .bind(c.reference.0)
        .bind(c.reference.1)
        .bind(c.reference.2)
        .bind(c.reference.3)
        .bind(c.quantity.0)
        .bind(c.quantity.1)
        .bind(c.quantity.2)
        .bind(c.quantity.3)
        .bind(c.quantity.4)
        .bind(c.number.0)
        .bind(c.number.1)
        .bind(c.uri.0)
        .bind(c.uri.1)
        .bind(c.composite.0)
        .bind(c.composite.1)
        .bind(c.composite.2)
        .bind(c.composite.3)
        .bind(c.composite.4)
        .bind(c.composite.5)
        .bind(c.composite.6)
        .bind(c.composite.7)
        .bind(c.composite.8)
        .execute(tx.conn())
        .await?;
    if is_relationship_source(resource_type) {
        replace_relationships(tx, resource_type, id, relationships).await?;
    }
    // What the commit hook (audit, write guard) needs to know of this version.
    let mut patients: Vec<String> = index
        .iter()
        .filter_map(|e| match &e.value {
            crate::search::IndexValue::Reference(r)
                if r.target_type.as_deref() == Some("Patient") =>
            {
                r.target_id.clone()
            }
            _ => None,
        })
        .collect();
    if resource_type == "Patient" {
        patients.push(id.to_owned());
    }
    patients.sort();
    patients.dedup();
    tx.wrote(super::WrittenVersion {
        resource_type: resource_type.to_owned(),
        id: id.to_owned(),
        version_id: stamp.version_id,
        deleted: content.is_none(),
        patients,
    });
    Ok(())
}

/// The current version's number and deleted flag, locked until the transaction ends.
async fn lock_current(
    tx: &mut TenantTx,
    resource_type: &str,
    id: &str,
) -> Result<Option<(i64, bool)>, StoreError> {
    let tenant = tx.tenant().as_str().to_owned();
    Ok(sqlx::query_as(
        "SELECT version_id, deleted FROM resources
          WHERE tenant_id = $1 AND resource_type = $2 AND id = $3 FOR UPDATE",
    )
    .bind(tenant)
    .bind(resource_type)
    .bind(id)
    .fetch_optional(tx.conn())
    .await?)
}

fn check_if_match(if_match: Option<i64>, current: Option<(i64, bool)>) -> Result<(), StoreError> {
    match (if_match, current) {
        (None, _) => Ok(()),
        (Some(expected), Some((current, false))) if expected == current => Ok(()),
        (Some(expected), Some((current, _))) => {
            Err(StoreError::VersionConflict { expected, current })
        }
        (Some(expected), None) => Err(StoreError::VersionConflict {
            expected,
            current: 0,
        }),
    }
}

impl Store {
    /// Store version 1 of a new resource. `render` receives the stamp and returns the JSON to
    /// store (the caller writes `id` and `meta` into it).
    pub async fn create(
        &self,
        tenant: &TenantId,
        resource_type: &str,
        id: &str,
        render: impl FnOnce(&VersionStamp) -> Rendered,
    ) -> Result<StoredVersion, StoreError> {
        let stamp = VersionStamp {
            version_id: 1,
            last_updated: now(),
        };
        let Rendered {
            content,
            index,
            relationships,
        } = render(&stamp);
        let mut tx = self.begin(tenant).await?;
        insert_version(
            &mut tx,
            resource_type,
            id,
            &stamp,
            Some(&content),
            &index,
            relationships.as_ref(),
        )
        .await?;
        tx.commit().await?;
        Ok(StoredVersion {
            resource_type: resource_type.to_owned(),
            id: id.to_owned(),
            version_id: stamp.version_id,
            last_updated: stamp.last_updated,
            deleted: false,
            content: Some(content),
        })
    }

    /// Store the next version (or version 1: update-as-create). Returns the new version and
    /// whether it created the resource (no live version existed).
    pub async fn update(
        &self,
        tenant: &TenantId,
        resource_type: &str,
        id: &str,
        if_match: Option<i64>,
        render: impl FnOnce(&VersionStamp) -> Rendered,
    ) -> Result<(StoredVersion, bool), StoreError> {
        let mut tx = self.begin(tenant).await?;
        let written = tx.put(resource_type, id, if_match, render).await?;
        tx.commit().await?;
        Ok(written)
    }

    /// Record a delete version. `Ok(None)` when the resource was already deleted (deletes are
    /// idempotent); `NotFound` when it never existed.
    pub async fn delete(
        &self,
        tenant: &TenantId,
        resource_type: &str,
        id: &str,
        if_match: Option<i64>,
    ) -> Result<Option<VersionStamp>, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let deleted = tx.delete(resource_type, id, if_match).await?;
        tx.commit().await?;
        Ok(deleted)
    }

    /// The current version; `Gone` if it is a delete.
    pub async fn read(
        &self,
        tenant: &TenantId,
        resource_type: &str,
        id: &str,
    ) -> Result<StoredVersion, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let row = tx.read(resource_type, id).await;
        tx.commit().await?;
        row
    }

    /// One version; `Gone` if that version is a delete.
    pub async fn read_version(
        &self,
        tenant: &TenantId,
        resource_type: &str,
        id: &str,
        version_id: i64,
    ) -> Result<StoredVersion, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let row = tx.read_version(resource_type, id, version_id).await;
        tx.commit().await?;
        row
    }

    /// Versions of one resource (`id` given) or of a whole type, newest first.
    pub async fn history(
        &self,
        tenant: &TenantId,
        resource_type: &str,
        id: Option<&str>,
        since: Option<DateTime<Utc>>,
        after: Option<&HistoryCursor>,
        count: u32,
    ) -> Result<HistoryPage, StoreError> {
        let mut query = sqlx::QueryBuilder::new(SELECT_VERSION_COLUMNS);
        query.push(" FROM resource_versions v WHERE v.tenant_id = ");
        query.push_bind(tenant.as_str());
        query.push(" AND v.resource_type = ");
        query.push_bind(resource_type);
        if let Some(id) = id {
            query.push(" AND v.id = ").push_bind(id);
        }
        if let Some(since) = since {
            query.push(" AND v.last_updated >= ").push_bind(since);
        }
        if let Some(c) = after {
            query.push(" AND (v.last_updated, v.id, v.version_id) < (");
            query.push_bind(c.last_updated).push(", ");
            query.push_bind(c.id.as_str()).push(", ");
            query.push_bind(c.version_id).push(")");
        }
        query.push(" ORDER BY v.last_updated DESC, v.id DESC, v.version_id DESC LIMIT ");
        query.push_bind(i64::from(count) + 1);

        let mut tx = self.begin(tenant).await?;
        let mut versions: Vec<StoredVersion> = query.build_query_as().fetch_all(tx.conn()).await?;
        tx.commit().await?;
        let next = if versions.len() > count as usize {
            versions.truncate(count as usize);
            versions.last().map(|v| HistoryCursor {
                last_updated: v.last_updated,
                id: v.id.clone(),
                version_id: v.version_id,
            })
        } else {
            None
        };
        Ok(HistoryPage { versions, next })
    }
}

impl TenantTx {
    /// The current version (live or a delete), locked until this transaction ends.
    pub async fn current_for_update(
        &mut self,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<StoredVersion>, StoreError> {
        let tenant = self.tenant().as_str().to_owned();
        Ok(sqlx::query_as(
            "SELECT v.resource_type, v.id, v.version_id, v.last_updated, v.deleted, v.content
               FROM resources r
               JOIN resource_versions v USING (tenant_id, resource_type, id, version_id)
              WHERE r.tenant_id = $1 AND r.resource_type = $2 AND r.id = $3
                FOR UPDATE OF r",
        )
        .bind(tenant)
        .bind(resource_type)
        .bind(id)
        .fetch_optional(self.conn())
        .await?)
    }

    /// Write the next version of a resource in this transaction (see [`Store::update`]).
    pub async fn put(
        &mut self,
        resource_type: &str,
        id: &str,
        if_match: Option<i64>,
        render: impl FnOnce(&VersionStamp) -> Rendered,
    ) -> Result<(StoredVersion, bool), StoreError> {
        let current = lock_current(self, resource_type, id).await?;
        check_if_match(if_match, current)?;
        let stamp = VersionStamp {
            version_id: current.map_or(1, |(v, _)| v + 1),
            last_updated: now(),
        };
        let created = !matches!(current, Some((_, false)));
        let Rendered {
            content,
            index,
            relationships,
        } = render(&stamp);
        insert_version(
            self,
            resource_type,
            id,
            &stamp,
            Some(&content),
            &index,
            relationships.as_ref(),
        )
        .await?;
        let stored = StoredVersion {
            resource_type: resource_type.to_owned(),
            id: id.to_owned(),
            version_id: stamp.version_id,
            last_updated: stamp.last_updated,
            deleted: false,
            content: Some(content),
        };
        Ok((stored, created))
    }
}

impl TenantTx {
    /// The current version in this transaction (its own writes included); `Gone` if it is a
    /// delete. Takes no lock: for reads, not read-modify-write (see `current_for_update`).
    pub async fn read(
        &mut self,
        resource_type: &str,
        id: &str,
    ) -> Result<StoredVersion, StoreError> {
        let tenant = self.tenant().as_str().to_owned();
        let row: Option<StoredVersion> = sqlx::query_as(
            "SELECT v.resource_type, v.id, v.version_id, v.last_updated, v.deleted, v.content
               FROM resources r
               JOIN resource_versions v USING (tenant_id, resource_type, id, version_id)
              WHERE r.tenant_id = $1 AND r.resource_type = $2 AND r.id = $3",
        )
        .bind(tenant)
        .bind(resource_type)
        .bind(id)
        .fetch_optional(self.conn())
        .await?;
        live(row)
    }

    /// One version in this transaction; `Gone` if that version is a delete.
    pub async fn read_version(
        &mut self,
        resource_type: &str,
        id: &str,
        version_id: i64,
    ) -> Result<StoredVersion, StoreError> {
        let tenant = self.tenant().as_str().to_owned();
        let row: Option<StoredVersion> = sqlx::query_as(
            "SELECT v.resource_type, v.id, v.version_id, v.last_updated, v.deleted, v.content
               FROM resource_versions v
              WHERE v.tenant_id = $1 AND v.resource_type = $2 AND v.id = $3 AND v.version_id = $4",
        )
        .bind(tenant)
        .bind(resource_type)
        .bind(id)
        .bind(version_id)
        .fetch_optional(self.conn())
        .await?;
        live(row)
    }

    /// Record a delete version in this transaction (see [`Store::delete`]).
    pub async fn delete(
        &mut self,
        resource_type: &str,
        id: &str,
        if_match: Option<i64>,
    ) -> Result<Option<VersionStamp>, StoreError> {
        let current = lock_current(self, resource_type, id).await?;
        check_if_match(if_match, current)?;
        let version_id = match current {
            None => return Err(StoreError::NotFound),
            Some((_, true)) => return Ok(None),
            Some((v, false)) => v + 1,
        };
        let stamp = VersionStamp {
            version_id,
            last_updated: now(),
        };
        insert_version(self, resource_type, id, &stamp, None, &[], None).await?;
        Ok(Some(stamp))
    }

    /// Serialise this transaction with every other one that takes the same `key`, until it
    /// ends. Conditional creates take one per (type, criteria): a row lock cannot stop two
    /// requests that both found no match from both creating. Advisory locks are database-wide,
    /// so the caller puts the tenant into the key. Waits at most the lock timeout (then Busy).
    pub async fn advisory_lock(&mut self, key: &str) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(key)
            .execute(self.conn())
            .await?;
        Ok(())
    }
}

impl TenantTx {
    /// Take several transaction-scoped advisory locks in one statement, in sorted key
    /// order (so two transactions locking overlapping sets cannot deadlock).
    pub async fn advisory_locks(&mut self, keys: &[String]) -> Result<(), StoreError> {
        let mut keys = keys.to_vec();
        keys.sort_unstable();
        keys.dedup();
        sqlx::query(
            "SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0)))
               FROM (SELECT k FROM unnest($1::text[]) AS k ORDER BY k) ordered",
        )
        .bind(keys)
        .execute(self.conn())
        .await?;
        Ok(())
    }
}

fn live(row: Option<StoredVersion>) -> Result<StoredVersion, StoreError> {
    match row {
        None => Err(StoreError::NotFound),
        Some(v) if v.deleted => Err(StoreError::Gone(v.stamp())),
        Some(v) => Ok(v),
    }
}

impl TenantTx {
    /// Resources whose reference index points at `target_type/target_id`.
    pub async fn referrers(
        &mut self,
        target_type: &str,
        target_id: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let tenant = self.tenant().as_str().to_owned();
        Ok(sqlx::query_as(
            "SELECT DISTINCT resource_type, resource_id FROM search_reference
              WHERE tenant_id = $1 AND target_type = $2 AND target_id = $3 ORDER BY 1, 2",
        )
        .bind(tenant)
        .bind(target_type)
        .bind(target_id)
        .fetch_all(self.conn())
        .await?)
    }
}
