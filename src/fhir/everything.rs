//! `GET /Patient/{id}/$everything` (and `/Patient/$everything` for the patient in a
//! `patient/` token's context): every resource in the patient's compartment, then the
//! practitioners, organizations, locations and medications they reference. `_since`,
//! `_type`, `_count`; no cap on the total.
//!
//! Paging walks the types in a fixed order and, within a type, the same keyset pages the
//! search API uses (by id), so a page token is (phase, type, the type's page token): each
//! resource comes once even while the record is being written to, and every page is
//! filtered by the caller's access decision in its SQL.

use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::authn::Authenticated;
use super::negotiate::{self, FHIR_JSON};
use super::outcome::FhirError;
use super::search::{SearchBundle, entry};
use crate::access::{self, Visibility};
use crate::auth::Interaction;
use crate::search::query::{AccessFilter, Clause, Predicate, SearchQuery, parse_criteria};
use crate::state::AppState;
use crate::store::StoreError;

/// Outside the compartment, the types `$everything` adds when the record references them.
const REFERENCED_TYPES: &[&str] = &["Location", "Medication", "Organization", "Practitioner"];
const DEFAULT_COUNT: u32 = 100;
const MAX_COUNT: u32 = 1000;

#[derive(Serialize, Deserialize, Default, Clone)]
struct Position {
    /// 0: the compartment's types; 1: the referenced types.
    phase: u8,
    /// Index into the phase's type list.
    t: usize,
    /// The type's own page token.
    p: Option<String>,
}

impl Position {
    fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    fn decode(token: &str) -> Option<Position> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

pub async fn instance(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    let (_, patient) = path.into_inner();
    everything(req, patient, auth, state).await
}

/// `Patient/$everything`: the patient a `patient/` token is confined to.
pub async fn type_level(
    req: HttpRequest,
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    let patient = access::patient_in_context(&auth.principal)
        .map(str::to_owned)
        .ok_or_else(|| {
            FhirError::bad_request(
                "Patient/$everything needs a patient in the token's context; use Patient/{id}/$everything",
            )
        })?;
    everything(req, patient, auth, state).await
}

async fn everything(
    req: HttpRequest,
    patient: String,
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    negotiate::require_json_response(&req)?;
    if !crate::ehr::sync::is_fhir_id(&patient) {
        return Err(FhirError::not_found("resource not found"));
    }
    let tenant = auth.tenant().clone();
    let base = state.fhir_base(&tenant);
    let local_base = format!("{base}/");
    let params = negotiate::query_params(&req)?;
    let mut count = DEFAULT_COUNT;
    let mut since: Option<String> = None;
    let mut wanted: Option<Vec<String>> = None;
    let mut position = Position::default();
    for (name, value) in &params {
        match name.as_str() {
            "_count" => {
                count = value
                    .parse::<u32>()
                    .map_err(|_| FhirError::bad_request("_count must be a whole number"))?
                    .clamp(1, MAX_COUNT);
            }
            "_since" => {
                chrono::DateTime::parse_from_rfc3339(value).map_err(|_| {
                    FhirError::bad_request("_since must be an instant with a time zone")
                })?;
                since = Some(value.clone());
            }
            "_type" => {
                wanted = Some(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned)
                        .collect(),
                );
            }
            "_page" => {
                position = Position::decode(value).ok_or_else(|| {
                    FhirError::bad_request("_page is not a page token Hearth issued")
                })?;
            }
            "_format" => {}
            other => {
                return Err(FhirError::bad_request(format!(
                    "parameter {other} is not supported by $everything"
                )));
            }
        }
    }
    // The patient must be readable: 403 (or 404, per policy) before anything else.
    let patient_visibility = auth.visibility("Patient", Interaction::Read)?;
    let filter = match &patient_visibility {
        Visibility::All => None,
        Visibility::Filtered(f) => Some(f),
    };
    let patient_seen = match state
        .store
        .read_visible(&tenant, "Patient", &patient, filter)
        .await
    {
        Ok((_, visible)) => visible,
        Err(StoreError::NotFound | StoreError::Gone(_)) => false,
        Err(e) => return Err(e.into()),
    };
    if !patient_seen {
        return Err(FhirError::not_found("resource not found"));
    }
    let keep = |t: &&str| wanted.as_ref().is_none_or(|w| w.iter().any(|x| x == t));
    let phases: [Vec<&str>; 2] = [
        access::compartment::compartment_types()
            .into_iter()
            .filter(|t| *t != "AuditEvent")
            .filter(keep)
            .collect(),
        REFERENCED_TYPES.iter().copied().filter(keep).collect(),
    ];

    // One decision per type, asked of the caller directly: the audit row records the
    // operation, the patient and what was served, not ~70 per-type grounds.
    let subject = auth.owned_subject();
    let mut matches = Vec::new();
    let mut includes = Vec::new();
    let mut next: Option<Position> = None;
    let mut tx = state.store.begin(&tenant).await?;
    let mut pos = position.clone();
    'walk: while (pos.phase as usize) < phases.len() {
        let types = &phases[pos.phase as usize];
        while let Some(resource_type) = types.get(pos.t) {
            let remaining = count as usize - matches.len() - includes.len();
            if remaining == 0 {
                next = Some(pos.clone());
                break 'walk;
            }
            let Some(query) = type_query(
                resource_type,
                pos.phase,
                &patient,
                since.as_deref(),
                pos.p.clone(),
                remaining as u32,
                &subject,
                &local_base,
            )?
            else {
                pos.t += 1;
                pos.p = None;
                continue;
            };
            let page = tx.search(&query).await.map_err(|e| match e {
                StoreError::InvalidPageToken => {
                    FhirError::bad_request("_page is not a page token Hearth issued")
                }
                other => other.into(),
            })?;
            if pos.phase == 0 {
                matches.extend(page.matches);
            } else {
                includes.extend(page.matches);
            }
            match page.next {
                Some(token) => {
                    pos.p = Some(token);
                    next = Some(pos.clone());
                    break 'walk;
                }
                None => {
                    pos.t += 1;
                    pos.p = None;
                }
            }
        }
        pos.phase += 1;
        pos.t = 0;
        pos.p = None;
    }
    auth.note(|n| n.event = Some("everything"));
    auth.note_served(matches.iter().chain(&includes));
    auth.note(|n| {
        if !n.patients.contains(&patient) {
            n.patients.push(patient.clone());
        }
    });
    auth.record_read_in(&mut tx, "everything", crate::audit::AuditAction::Read)
        .await?;
    tx.commit().await?;

    let mut self_params: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "_page")
        .cloned()
        .collect();
    if !self_params.iter().any(|(k, _)| k == "_count") {
        self_params.push(("_count".into(), count.to_string()));
    }
    let url = |page: Option<&Position>| {
        let mut p = self_params.clone();
        if let Some(page) = page {
            p.push(("_page".into(), page.encode()));
        }
        format!(
            "{base}/Patient/{patient}/$everything?{}",
            serde_urlencoded::to_string(&p).unwrap_or_default()
        )
    };
    let mut links = vec![json!({"relation": "self", "url": url(
        params.iter().any(|(k, _)| k == "_page").then_some(&position)
    )})];
    if let Some(next) = &next {
        links.push(json!({"relation": "next", "url": url(Some(next))}));
    }
    let plain = plain_query();
    let mut entries = Vec::with_capacity(matches.len() + includes.len());
    for v in &matches {
        entries.push(entry(&base, v, "match", &plain)?);
    }
    for v in &includes {
        entries.push(entry(&base, v, "include", &plain)?);
    }
    let bundle = SearchBundle {
        resource_type: "Bundle",
        bundle_type: "searchset",
        total: None,
        link: links,
        entry: entries,
    };
    let body = serde_json::to_string(&bundle).map_err(|_| FhirError::internal())?;
    Ok(HttpResponse::Ok().content_type(FHIR_JSON).body(body))
}

/// One type's page: its membership in the patient's record (compartment, or referenced by
/// it), `_since`, and the caller's decision. `None`: the caller may not read the type, or
/// it cannot be tied to the patient here.
#[allow(clippy::too_many_arguments)]
fn type_query(
    resource_type: &str,
    phase: u8,
    patient: &str,
    since: Option<&str>,
    page: Option<String>,
    count: u32,
    subject: &access::OwnedSubject,
    local_base: &str,
) -> Result<Option<SearchQuery>, FhirError> {
    let Ok(decision) = subject.decide(resource_type, Interaction::Search) else {
        return Ok(None);
    };
    let membership = if phase == 0 {
        match access::compartment_clause(resource_type, patient, local_base) {
            Ok(Some(clause)) => clause,
            _ => return Ok(None),
        }
    } else {
        Clause {
            any_of: vec![Predicate::ReferencedBy {
                patient: patient.to_owned(),
            }],
            negated: false,
        }
    };
    let mut clauses = vec![membership];
    if let Some(since) = since {
        clauses.extend(
            parse_criteria(
                resource_type,
                &[("_lastUpdated".into(), format!("ge{since}"))],
                local_base,
            )
            .map_err(|e| FhirError::bad_request(e.to_string()))?,
        );
    }
    let access = match decision.visibility {
        Visibility::All => None,
        Visibility::Filtered(f) => Some(AccessFilter { grants: f.grants }),
    };
    Ok(Some(SearchQuery {
        access,
        page,
        count,
        ..SearchQuery::for_type(resource_type, clauses)
    }))
}

fn plain_query() -> SearchQuery {
    SearchQuery::for_type("Patient", Vec::new())
}
