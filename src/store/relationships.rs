//! Care relationships for the access decision: the rows `access::relationships::derive`
//! computes from Encounter, CareTeam and PractitionerRole, replaced in the transaction that
//! writes the version they come from (one statement), and read back by practitioner or
//! patient. Tables: `care_relationships`, `practitioner_sites`, `patient_sites`.

use chrono::{DateTime, Utc};

use super::{Store, StoreError, TenantTx};
use crate::tenant::TenantId;

/// The resource types whose versions state relationships. Writing any other type touches
/// none of these tables (no extra statement).
pub const RELATIONSHIP_SOURCES: [&str; 3] = ["Encounter", "CareTeam", "PractitionerRole"];

/// Does a version of `resource_type` replace relationship rows?
pub fn is_relationship_source(resource_type: &str) -> bool {
    RELATIONSHIP_SOURCES.contains(&resource_type)
}

/// How a practitioner came to be linked to a patient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CareKind {
    /// A participant of an Encounter of the patient.
    Encounter,
    /// A member of a CareTeam of the patient.
    CareTeam,
    /// The user of an app session the EHR launched in the patient's context.
    EhrLaunch,
}

impl CareKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CareKind::Encounter => "encounter",
            CareKind::CareTeam => "care-team",
            CareKind::EhrLaunch => "ehr-launch",
        }
    }

    pub fn parse(text: &str) -> Option<CareKind> {
        match text {
            "encounter" => Some(CareKind::Encounter),
            "care-team" => Some(CareKind::CareTeam),
            "ehr-launch" => Some(CareKind::EhrLaunch),
            _ => None,
        }
    }
}

/// What kind of place a site is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SiteType {
    Location,
    Organization,
}

impl SiteType {
    pub fn as_str(self) -> &'static str {
        match self {
            SiteType::Location => "Location",
            SiteType::Organization => "Organization",
        }
    }

    pub fn parse(text: &str) -> Option<SiteType> {
        match text {
            "Location" => Some(SiteType::Location),
            "Organization" => Some(SiteType::Organization),
            _ => None,
        }
    }
}

/// A practitioner linked to a patient by the source resource. `None` bounds are open;
/// `ended_at` is exclusive (the first instant the link no longer holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CareRelationship {
    pub practitioner_id: String,
    pub patient_id: String,
    pub kind: CareKind,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// A place a practitioner works, from a PractitionerRole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PractitionerSite {
    pub practitioner_id: String,
    pub site_type: SiteType,
    pub site_id: String,
    /// Every `specialty[].coding[]` as `system|code` (`|code` without a system).
    pub specialties: Vec<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// A place a patient currently is, from an Encounter under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientSite {
    pub patient_id: String,
    pub site_type: SiteType,
    pub site_id: String,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// Every relationship row one version of a source resource states. Empty vectors are a
/// real answer: the source states nothing (any more), so its old rows go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelationshipRows {
    pub care: Vec<CareRelationship>,
    pub practitioner_sites: Vec<PractitionerSite>,
    pub patient_sites: Vec<PatientSite>,
}

impl RelationshipRows {
    pub fn is_empty(&self) -> bool {
        self.care.is_empty() && self.practitioner_sites.is_empty() && self.patient_sites.is_empty()
    }
}

/// A stored care relationship, with the resource that states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CareLink {
    pub relationship: CareRelationship,
    pub source_type: String,
    pub source_id: String,
}

/// A stored practitioner site, with the PractitionerRole that states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PractitionerSiteLink {
    pub site: PractitionerSite,
    pub source_id: String,
}

/// A stored patient site, with the Encounter that states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientSiteLink {
    pub site: PatientSite,
    pub source_id: String,
}

/// Delete every row the source states and insert the new ones, in one statement (arrays +
/// unnest). The deletes see the table as it was before the statement, so they never remove
/// what the same statement inserts.
const REPLACE: &str = "
    WITH
    d1 AS (DELETE FROM care_relationships
            WHERE tenant_id = $1 AND source_type = $2 AND source_id = $3),
    d2 AS (DELETE FROM patient_sites
            WHERE tenant_id = $1 AND $2 = 'Encounter' AND source_id = $3),
    d3 AS (DELETE FROM practitioner_sites
            WHERE tenant_id = $1 AND $2 = 'PractitionerRole' AND source_id = $3),
    i1 AS (INSERT INTO care_relationships
               (tenant_id, practitioner_id, patient_id, kind, source_type, source_id,
                started_at, ended_at)
           SELECT $1, pr, pa, k, $2, $3, s, e
             FROM unnest($4::text[], $5::text[], $6::text[], $7::timestamptz[], $8::timestamptz[])
                  AS x(pr, pa, k, s, e)),
    i2 AS (INSERT INTO practitioner_sites
               (tenant_id, practitioner_id, site_type, site_id, specialties, source_id,
                started_at, ended_at)
           SELECT $1, pr, st, si, ARRAY(SELECT jsonb_array_elements_text(sp::jsonb)), $3, s, e
             FROM unnest($9::text[], $10::text[], $11::text[], $12::text[],
                         $13::timestamptz[], $14::timestamptz[])
                  AS x(pr, st, si, sp, s, e)),
    i3 AS (INSERT INTO patient_sites
               (tenant_id, patient_id, site_type, site_id, source_id, started_at, ended_at)
           SELECT $1, pa, st, si, $3, s, e
             FROM unnest($15::text[], $16::text[], $17::text[], $18::timestamptz[],
                         $19::timestamptz[])
                  AS x(pa, st, si, s, e))
    SELECT 1";

/// One column of rows, as the array `unnest` reads.
fn column<'a, R, T>(rows: &'a [R], f: impl Fn(&'a R) -> T) -> Vec<T> {
    rows.iter().map(f).collect()
}

/// Replace the relationship rows `source_type/source_id` states with `rows`; `None` (a
/// delete version) removes them all. One round trip.
pub async fn replace_relationships(
    tx: &mut TenantTx,
    source_type: &str,
    source_id: &str,
    rows: Option<&RelationshipRows>,
) -> Result<(), StoreError> {
    let empty = RelationshipRows::default();
    let rows = rows.unwrap_or(&empty);
    let tenant = tx.tenant().as_str().to_owned();
    let (care, practitioner, patient) = (
        rows.care.as_slice(),
        rows.practitioner_sites.as_slice(),
        rows.patient_sites.as_slice(),
    );
    sqlx::query(REPLACE)
        .bind(tenant)
        .bind(source_type)
        .bind(source_id)
        .bind(column(care, |r| r.practitioner_id.as_str()))
        .bind(column(care, |r| r.patient_id.as_str()))
        .bind(column(care, |r| r.kind.as_str()))
        .bind(column(care, |r| r.started_at))
        .bind(column(care, |r| r.ended_at))
        .bind(column(practitioner, |s| s.practitioner_id.as_str()))
        .bind(column(practitioner, |s| s.site_type.as_str()))
        .bind(column(practitioner, |s| s.site_id.as_str()))
        // text[][] cannot hold rows of different lengths: each row's specialties go as a
        // JSON array, unpacked by the statement.
        .bind(column(practitioner, |s| {
            serde_json::Value::from(s.specialties.clone()).to_string()
        }))
        .bind(column(practitioner, |s| s.started_at))
        .bind(column(practitioner, |s| s.ended_at))
        .bind(column(patient, |s| s.patient_id.as_str()))
        .bind(column(patient, |s| s.site_type.as_str()))
        .bind(column(patient, |s| s.site_id.as_str()))
        .bind(column(patient, |s| s.started_at))
        .bind(column(patient, |s| s.ended_at))
        .execute(tx.conn())
        .await?;
    Ok(())
}

type CareRow = (
    String,
    String,
    String,
    String,
    String,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

type PractitionerSiteRow = (
    String,
    String,
    String,
    Vec<String>,
    String,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

type PatientSiteRow = (
    String,
    String,
    String,
    String,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

fn site_type(text: &str) -> Result<SiteType, StoreError> {
    SiteType::parse(text).ok_or(StoreError::Corrupt("unknown site type"))
}

impl Store {
    /// Every care relationship of a practitioner, in any state (past, current, future),
    /// ordered by patient, source and start.
    pub async fn care_relationships_of(
        &self,
        tenant: &TenantId,
        practitioner_id: &str,
    ) -> Result<Vec<CareLink>, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let rows: Vec<CareRow> = sqlx::query_as(
            "SELECT practitioner_id, patient_id, kind, source_type, source_id, started_at, ended_at
               FROM care_relationships
              WHERE tenant_id = $1 AND practitioner_id = $2
              ORDER BY patient_id, source_type, source_id, started_at NULLS FIRST, kind",
        )
        .bind(tenant.as_str())
        .bind(practitioner_id)
        .fetch_all(tx.conn())
        .await?;
        tx.commit().await?;
        rows.into_iter()
            .map(
                |(practitioner_id, patient_id, kind, source_type, source_id, s, e)| {
                    Ok(CareLink {
                        relationship: CareRelationship {
                            practitioner_id,
                            patient_id,
                            kind: CareKind::parse(&kind)
                                .ok_or(StoreError::Corrupt("unknown care relationship kind"))?,
                            started_at: s,
                            ended_at: e,
                        },
                        source_type,
                        source_id,
                    })
                },
            )
            .collect()
    }

    /// Every site of a practitioner (from PractitionerRoles), in any state.
    pub async fn practitioner_sites_of(
        &self,
        tenant: &TenantId,
        practitioner_id: &str,
    ) -> Result<Vec<PractitionerSiteLink>, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let rows: Vec<PractitionerSiteRow> = sqlx::query_as(
            "SELECT practitioner_id, site_type, site_id, specialties, source_id, started_at,
                    ended_at
               FROM practitioner_sites
              WHERE tenant_id = $1 AND practitioner_id = $2
              ORDER BY source_id, site_type, site_id",
        )
        .bind(tenant.as_str())
        .bind(practitioner_id)
        .fetch_all(tx.conn())
        .await?;
        tx.commit().await?;
        rows.into_iter()
            .map(
                |(practitioner_id, st, site_id, specialties, source_id, s, e)| {
                    Ok(PractitionerSiteLink {
                        site: PractitionerSite {
                            practitioner_id,
                            site_type: site_type(&st)?,
                            site_id,
                            specialties,
                            started_at: s,
                            ended_at: e,
                        },
                        source_id,
                    })
                },
            )
            .collect()
    }

    /// Every site a patient is recorded at (from Encounters under way).
    pub async fn patient_sites_of(
        &self,
        tenant: &TenantId,
        patient_id: &str,
    ) -> Result<Vec<PatientSiteLink>, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let rows: Vec<PatientSiteRow> = sqlx::query_as(
            "SELECT patient_id, site_type, site_id, source_id, started_at, ended_at
               FROM patient_sites
              WHERE tenant_id = $1 AND patient_id = $2
              ORDER BY source_id, site_type, site_id",
        )
        .bind(tenant.as_str())
        .bind(patient_id)
        .fetch_all(tx.conn())
        .await?;
        tx.commit().await?;
        rows.into_iter()
            .map(|(patient_id, st, site_id, source_id, s, e)| {
                Ok(PatientSiteLink {
                    site: PatientSite {
                        patient_id,
                        site_type: site_type(&st)?,
                        site_id,
                        started_at: s,
                        ended_at: e,
                    },
                    source_id,
                })
            })
            .collect()
    }
}
