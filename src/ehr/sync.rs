//! Record sync at launch: the launched patient's US Core data from the EHR's FHIR API into
//! the tenant's store, in one transaction with a Provenance and an audit event.
//!
//! Choices: resources keep the EHR's ids (citations and references then match the EHR);
//! references to the EHR's base become relative; `meta.source` is the EHR's FHIR base. A
//! stored resource with the same id from another source is never overwritten (reported).
//! Each query asks only for what changed since the last sync of this patient from this EHR
//! (`_lastUpdated=ge`, five minutes early for clock drift). One type the EHR refuses (403)
//! or fails on does not stop the others; a 401 stops the sync.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Duration as ChronoDuration, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::client::{EhrClient, EhrError, SearchLimits};
use crate::audit::{AuditAction, AuditAgent, AuditOutcome, AuditRecord};
use crate::resource::check;
use crate::store::{CommitHook, HookFuture, Store, StoreError, TenantTx, WrittenVersion};
use crate::tenant::TenantId;

/// The queries of a sync, in order: (resource type, fixed parameters besides `patient`).
pub const SYNC_QUERIES: &[(&str, &[(&str, &str)])] = &[
    ("Encounter", &[]),
    ("Condition", &[]),
    ("Observation", &[("category", "laboratory")]),
    ("Observation", &[("category", "vital-signs")]),
    ("MedicationRequest", &[]),
    ("AllergyIntolerance", &[]),
    ("Procedure", &[]),
    ("Immunization", &[]),
    ("DiagnosticReport", &[]),
    ("DocumentReference", &[]),
    ("CareTeam", &[]),
    // Orders and insurance: what a prior authorization is drafted for, and to whom.
    ("ServiceRequest", &[]),
    ("Coverage", &[]),
];

/// Attachments larger than this stay at the EHR (linked, not copied).
const MAX_ATTACHMENT_BYTES: usize = 2 * 1024 * 1024;
/// How far before the previous sync's start the next one looks (clock drift between us
/// and the EHR).
const DRIFT_MARGIN_MINUTES: i64 = 5;

/// Who the sync runs for.
pub struct SyncRequest<'a> {
    pub tenant: &'a TenantId,
    pub registration_id: &'a str,
    pub ehr_name: &'a str,
    /// The EHR's FHIR base (`meta.source` of what is stored).
    pub iss: &'a str,
    pub patient_id: &'a str,
    /// The user as a local reference (`Practitioner/123`), if known.
    pub fhir_user: Option<&'a str>,
    /// The audit agent (the clinician's session).
    pub agent: AuditAgent,
    /// Stable per session: the Provenance's id.
    pub session_id: uuid::Uuid,
}

/// What a sync did, for the summary page and the audit.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SyncReport {
    pub outcome: SyncOutcome,
    pub finished_at: String,
    pub fetched: usize,
    pub stored: usize,
    pub unchanged: usize,
    pub incremental: bool,
    /// Human messages, no PHI ("Immunization: the EHR refused access (403)").
    pub problems: Vec<String>,
    pub requests: u32,
    pub retries: u32,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SyncOutcome {
    Complete,
    Partial,
    Failed,
    #[default]
    NotRun,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Fetch and store. EHR trouble is reported in the result (a failed sync still lets the
/// clinician see what is already stored); a database failure is an error.
pub async fn sync_patient(
    store: &Store,
    client: &EhrClient,
    request: &SyncRequest<'_>,
    local_base: &str,
) -> Result<SyncReport, SyncError> {
    let started = Utc::now();
    let since = store
        .sync_mark(request.tenant, request.registration_id, request.patient_id)
        .await?;
    let mut report = SyncReport {
        incremental: since.is_some(),
        ..SyncReport::default()
    };
    let mut fetched: Vec<Value> = Vec::new();
    let mut fatal = false;

    match client.read("Patient", request.patient_id).await {
        Ok(patient) => fetched.push(patient),
        Err(e) => {
            fatal = matches!(e, EhrError::Unauthorized);
            report.problems.push(format!("Patient: {e}"));
        }
    }
    if !fatal
        && let Some(practitioner) = request
            .fhir_user
            .and_then(|u| u.strip_prefix("Practitioner/"))
    {
        match client.read("Practitioner", practitioner).await {
            Ok(p) => fetched.push(p),
            Err(e) => report
                .problems
                .push(format!("Practitioner (the user): {e}")),
        }
    }
    let since_text = since.map(|s| {
        format!(
            "ge{}",
            (s - ChronoDuration::minutes(DRIFT_MARGIN_MINUTES))
                .to_rfc3339_opts(SecondsFormat::Secs, true)
        )
    });
    for (resource_type, fixed) in SYNC_QUERIES {
        if fatal {
            break;
        }
        let mut params: Vec<(&str, &str)> = vec![("patient", request.patient_id)];
        params.extend_from_slice(fixed);
        if let Some(since) = &since_text {
            params.push(("_lastUpdated", since));
        }
        match client
            .search_all(resource_type, &params, SearchLimits::default())
            .await
        {
            Ok(result) => {
                for warning in result.warnings {
                    report.problems.push(format!("{resource_type}: {warning}"));
                }
                fetched.extend(result.resources);
            }
            Err(e) => {
                fatal = matches!(e, EhrError::Unauthorized);
                report.problems.push(format!("{resource_type}: {e}"));
            }
        }
    }
    // The payers a coverage names (a prior-authorization request is addressed to them):
    // plain references to an Organization under the EHR's base, each read once.
    let mut payers: Vec<String> = fetched
        .iter()
        .filter(|r| r["resourceType"] == "Coverage")
        .flat_map(|r| r["payor"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| {
            let id = p["reference"].as_str()?.strip_prefix("Organization/")?;
            is_fhir_id(id).then(|| id.to_owned())
        })
        .collect();
    payers.sort();
    payers.dedup();
    for id in payers {
        if fatal {
            break;
        }
        match client.read("Organization", &id).await {
            Ok(org) => fetched.push(org),
            Err(e) => report.problems.push(format!("Organization (payer): {e}")),
        }
    }
    // Notes: copy text attachments so the source view and summaries have them locally.
    for resource in fetched.iter_mut() {
        if resource.get("resourceType").and_then(Value::as_str) == Some("DocumentReference") {
            inline_attachments(client, resource, &mut report.problems).await;
        }
    }
    report.fetched = fetched.len();

    let hook = Arc::new(SyncAudit {
        agent: request.agent.clone(),
        registration: request.registration_id.to_owned(),
    });
    let written = crate::store::with_commit_hook(
        hook,
        store_fetched(
            store,
            request,
            fetched,
            local_base,
            started,
            fatal,
            &mut report,
        ),
    )
    .await?;
    report.stored = written;
    let stats = client.stats();
    report.requests = stats.requests;
    report.retries = stats.retries;
    report.outcome = if fatal || (report.fetched == 0 && !report.problems.is_empty()) {
        SyncOutcome::Failed
    } else if report.problems.is_empty() {
        SyncOutcome::Complete
    } else {
        SyncOutcome::Partial
    };
    report.finished_at = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    Ok(report)
}

/// One transaction: every fetched resource that changed, a Provenance naming them, the
/// sync mark (unless the sync was cut short), and the audit event (commit hook).
async fn store_fetched(
    store: &Store,
    request: &SyncRequest<'_>,
    fetched: Vec<Value>,
    local_base: &str,
    started: DateTime<Utc>,
    cut_short: bool,
    report: &mut SyncReport,
) -> Result<usize, StoreError> {
    let mut tx = store.begin(request.tenant).await?;
    tx.advisory_lock(&format!(
        "{}/ehr-sync/{}/{}",
        request.tenant, request.registration_id, request.patient_id
    ))
    .await?;
    let mut targets = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for resource in fetched {
        let Some((resource_type, id)) = type_and_id(&resource) else {
            report
                .problems
                .push("a resource without a type or id was skipped".to_owned());
            continue;
        };
        if !seen.insert((resource_type.clone(), id.clone())) {
            continue;
        }
        match store_one(
            &mut tx,
            request.iss,
            &resource_type,
            &id,
            resource,
            local_base,
        )
        .await?
        {
            Stored::Written(version) => targets.push(json!({
                "reference": format!("{resource_type}/{id}/_history/{version}")
            })),
            Stored::Unchanged => report.unchanged += 1,
            Stored::Refused(why) => report.problems.push(format!("{resource_type}/{id}: {why}")),
        }
    }
    let written = targets.len();
    if !targets.is_empty() {
        let provenance = provenance(request, targets);
        let id = format!("ehr-sync-{}", request.session_id.simple());
        let checked = check(provenance).map_err(|_| StoreError::Corrupt("sync Provenance"))?;
        tx.put("Provenance", &id, None, |stamp| {
            checked.render(&id, stamp, local_base)
        })
        .await?;
    }
    if !cut_short {
        tx.set_sync_mark(request.registration_id, request.patient_id, started)
            .await?;
    }
    tx.commit().await?;
    Ok(written)
}

enum Stored {
    Written(i64),
    Unchanged,
    Refused(String),
}

async fn store_one(
    tx: &mut TenantTx,
    iss: &str,
    resource_type: &str,
    id: &str,
    mut resource: Value,
    local_base: &str,
) -> Result<Stored, StoreError> {
    relativize_references(&mut resource, iss);
    set_source(&mut resource, iss);
    let current = tx.current_for_update(resource_type, id).await?;
    let existing: Option<Value> = current
        .as_ref()
        .filter(|v| !v.deleted)
        .and_then(|v| v.content.as_deref())
        .and_then(|c| serde_json::from_str(c).ok());
    if let Some(old) = &existing {
        let old_source = old.pointer("/meta/source").and_then(Value::as_str);
        if old_source != Some(iss) {
            return Ok(Stored::Refused(
                "a stored resource with this id came from another source; not overwritten".into(),
            ));
        }
        if without_meta(old) == without_meta(&resource) {
            return Ok(Stored::Unchanged);
        }
    }
    let checked = match check(resource) {
        Ok(c) => c,
        Err(e) => {
            return Ok(Stored::Refused(format!(
                "not stored: {}",
                invalid_reason(&e)
            )));
        }
    };
    let (stored, _) = tx
        .put(resource_type, id, None, |stamp| {
            checked.render(id, stamp, local_base)
        })
        .await?;
    Ok(Stored::Written(stored.version_id))
}

fn invalid_reason(e: &crate::resource::InvalidResource) -> String {
    use crate::resource::InvalidResource;
    match e {
        InvalidResource::Structure(issues) => issues
            .first()
            .map(|i| format!("not valid R4 at {}", i.expression))
            .unwrap_or_else(|| "not valid R4".to_owned()),
        InvalidResource::Profile(issues) => issues
            .first()
            .map(|i| format!("does not meet its profile at {}", i.expression))
            .unwrap_or_else(|| "does not meet its profile".to_owned()),
        InvalidResource::Model(_) => "not valid R4".to_owned(),
    }
}

fn type_and_id(resource: &Value) -> Option<(String, String)> {
    let resource_type = resource.get("resourceType")?.as_str()?;
    let id = resource.get("id")?.as_str()?;
    let id_ok = is_fhir_id(id);
    let type_ok =
        !resource_type.is_empty() && resource_type.bytes().all(|b| b.is_ascii_alphabetic());
    (id_ok && type_ok).then(|| (resource_type.to_owned(), id.to_owned()))
}

/// A FHIR id: `[A-Za-z0-9\-\.]{1,64}`.
pub fn is_fhir_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn without_meta(value: &Value) -> Value {
    let mut v = value.clone();
    if let Some(o) = v.as_object_mut() {
        o.shift_remove("meta");
    }
    v
}

/// `meta.source` names the EHR; the EHR's version stamps make way for Hearth's.
fn set_source(resource: &mut Value, iss: &str) {
    let Some(object) = resource.as_object_mut() else {
        return;
    };
    let meta = object
        .entry("meta")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(meta) = meta.as_object_mut() {
        meta.shift_remove("versionId");
        meta.shift_remove("lastUpdated");
        meta.insert("source".into(), Value::String(iss.to_owned()));
    } else {
        object.insert("meta".into(), json!({"source": iss}));
    }
}

/// `{iss}/Type/id` → `Type/id` in every `reference`, so references resolve locally.
pub fn relativize_references(value: &mut Value, iss: &str) {
    let prefix = format!("{}/", iss.trim_end_matches('/'));
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if key == "reference"
                    && let Value::String(reference) = child
                    && let Some(relative) = reference.strip_prefix(&prefix)
                {
                    *reference = relative.to_owned();
                } else {
                    relativize_references(child, iss);
                }
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| relativize_references(item, iss)),
        _ => {}
    }
}

/// Fetch each text attachment given by URL and keep its bytes in `data` (the URL stays).
async fn inline_attachments(client: &EhrClient, resource: &mut Value, problems: &mut Vec<String>) {
    let Some(contents) = resource.get_mut("content").and_then(Value::as_array_mut) else {
        return;
    };
    for content in contents {
        let Some(attachment) = content.get_mut("attachment").and_then(Value::as_object_mut) else {
            continue;
        };
        if attachment.contains_key("data") {
            continue;
        }
        let Some(url) = attachment
            .get("url")
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            continue;
        };
        let declared = attachment
            .get("contentType")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if declared.as_deref().is_some_and(|t| !is_text(t)) {
            continue;
        }
        // FHIR servers may answer a Binary as FHIR JSON instead of its raw content type.
        let accept = declared
            .as_deref()
            .map(|t| format!("{t}, application/fhir+json;q=0.9"));
        match client
            .fetch_attachment(&url, accept.as_deref(), MAX_ATTACHMENT_BYTES)
            .await
        {
            Ok((content_type, bytes)) => {
                let content_type = content_type.or(declared);
                if content_type.as_deref().is_none_or(is_text) {
                    attachment.insert("data".into(), Value::String(STANDARD.encode(&bytes)));
                    if let Some(t) = content_type {
                        attachment.insert("contentType".into(), Value::String(t));
                    }
                }
            }
            Err(e) => problems.push(format!("DocumentReference attachment: {e}")),
        }
    }
}

fn is_text(content_type: &str) -> bool {
    let t = content_type.trim().to_ascii_lowercase();
    t.starts_with("text/") || t.starts_with("application/xhtml")
}

fn provenance(request: &SyncRequest<'_>, targets: Vec<Value>) -> Value {
    let mut agents = vec![json!({
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "author"}]},
        "who": {"display": request.ehr_name}
    })];
    if let Some(user) = request.fhir_user {
        agents.push(json!({
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "enterer"}]},
            "who": {"reference": user}
        }));
    }
    json!({
        "resourceType": "Provenance",
        "target": targets,
        "recorded": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "UPDATE", "display": "revise"}]},
        "agent": agents,
        "entity": [{
            "role": "source",
            "what": {
                "identifier": {"system": "urn:ietf:rfc:3986", "value": request.iss},
                "display": format!("{} FHIR API", request.ehr_name)
            }
        }]
    })
}

/// The audit event of a sync, in its transaction: the session's user as agent, every
/// version written, the patients they belong to.
struct SyncAudit {
    agent: AuditAgent,
    registration: String,
}

impl CommitHook for SyncAudit {
    fn before_commit<'a>(
        &'a self,
        tx: &'a mut TenantTx,
        written: &'a [WrittenVersion],
    ) -> HookFuture<'a> {
        Box::pin(async move {
            let mut rec = AuditRecord::new("ehr-sync", AuditAction::Create, AuditOutcome::Success);
            rec.agent = Some(self.agent.clone());
            rec.purpose = Some("TREAT".to_owned());
            rec.outcome_text = Some(format!(
                "record sync from EHR registration {}",
                self.registration
            ));
            rec.add_written(written);
            crate::audit::record(tx, &rec).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_to_the_ehr_become_relative_and_others_stay() {
        let mut v = json!({
            "subject": {"reference": "https://ehr.example.org/R4/Patient/p1"},
            "performer": [{"reference": "Practitioner/d1"}, {"reference": "https://other.example.org/R4/Organization/o"}],
            "note": [{"text": "https://ehr.example.org/R4/Patient/p1"}]
        });
        relativize_references(&mut v, "https://ehr.example.org/R4");
        assert_eq!(v["subject"]["reference"], "Patient/p1");
        assert_eq!(v["performer"][0]["reference"], "Practitioner/d1");
        assert_eq!(
            v["performer"][1]["reference"],
            "https://other.example.org/R4/Organization/o"
        );
        assert_eq!(
            v["note"][0]["text"],
            "https://ehr.example.org/R4/Patient/p1"
        );
    }

    #[test]
    fn the_source_is_the_ehr_and_its_version_stamps_go() {
        let mut v = json!({"resourceType": "Condition", "id": "c", "meta": {"versionId": "7", "lastUpdated": "2026-01-01T00:00:00Z", "profile": ["x"]}});
        set_source(&mut v, "https://ehr/R4");
        assert_eq!(
            v["meta"],
            json!({"profile": ["x"], "source": "https://ehr/R4"})
        );
    }

    #[test]
    fn ids_must_be_fhir_ids() {
        assert!(
            type_and_id(&json!({"resourceType": "Patient", "id": "eAB3mDIBBcyUKviyzrxsnAw3"}))
                .is_some()
        );
        assert!(type_and_id(&json!({"resourceType": "Patient", "id": "../x"})).is_none());
        assert!(type_and_id(&json!({"resourceType": "Pat ient", "id": "x"})).is_none());
        assert!(type_and_id(&json!({"id": "x"})).is_none());
    }
}
