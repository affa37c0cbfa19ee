//! Care relationships as data: which practitioners a resource links to which patients, where
//! practitioners work and where patients are. Pure: JSON in, rows out; `store` writes them in
//! the transaction of the version they come from, and the access decision reads them.
//!
//! - Encounter: each `participant[].individual` that is a Practitioner is linked to the
//!   `subject` Patient (kind `encounter`), unless the Encounter is `entered-in-error` or
//!   `cancelled`. Bounds: the participant's `period` where it has one, else the Encounter's
//!   `period`; a `finished` Encounter without an end ends at its `meta.lastUpdated`. While
//!   the Encounter is planned or under way, the patient is at each of its `location[]`s (but
//!   those marked `completed`) and at its `serviceProvider`.
//! - CareTeam (`active` or `proposed`): each `participant[].member` that is a Practitioner is
//!   linked to the `subject` Patient (kind `care-team`); bounds from the participant's
//!   `period`, else the CareTeam's.
//! - PractitionerRole (unless `active` is false): the `practitioner` works at each
//!   `location[]` and at the `organization`, with every `specialty[].coding[]`.
//!
//! Times: a start is the first instant of what the dateTime names (`2024-03` → March 1st,
//! 00:00 UTC); an end is exclusive, the first instant after it (`2024-03-14` as a Period end
//! includes that whole day, FHIR's Period semantics, so it becomes March 15th 00:00 UTC).
//! Unreadable dates are open bounds; no input panics.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::search::values::date_range;
use crate::store::{
    CareKind, CareRelationship, PatientSite, PractitionerSite, RelationshipRows, SiteType,
};

/// The relationship rows a version of `resource` states: `None` for every type but
/// Encounter, CareTeam and PractitionerRole; for those `Some`, possibly empty (so rows an
/// earlier version stated are removed).
pub fn derive(resource_type: &str, resource: &Value) -> Option<RelationshipRows> {
    match resource_type {
        "Encounter" => Some(encounter(resource)),
        "CareTeam" => Some(care_team(resource)),
        "PractitionerRole" => Some(practitioner_role(resource)),
        _ => None,
    }
}

/// Encounter statuses that state no relationship at all.
const ENCOUNTER_VOID: [&str; 2] = ["entered-in-error", "cancelled"];
/// Encounter statuses in which the patient is at the Encounter's locations.
const ENCOUNTER_PRESENT: [&str; 5] = ["planned", "arrived", "triaged", "in-progress", "onleave"];
/// CareTeam statuses whose members are linked to the patient.
const CARE_TEAM_LIVE: [&str; 2] = ["active", "proposed"];

fn encounter(resource: &Value) -> RelationshipRows {
    let mut rows = RelationshipRows::default();
    let status = str_at(resource, "status").unwrap_or_default();
    if ENCOUNTER_VOID.contains(&status) {
        return rows;
    }
    let Some(patient) = reference_id(resource.get("subject"), "Patient") else {
        return rows;
    };
    let period = resource.get("period");
    let started_at = period_start(period);
    let ended_at = period_end(period).or_else(|| {
        (status == "finished")
            .then(|| {
                resource
                    .get("meta")
                    .and_then(|m| str_at(m, "lastUpdated"))
                    .and_then(instant_start)
            })
            .flatten()
    });
    for participant in array_at(resource, "participant") {
        let Some(practitioner) = reference_id(participant.get("individual"), "Practitioner") else {
            continue;
        };
        let own = participant.get("period");
        push_unique(
            &mut rows.care,
            CareRelationship {
                practitioner_id: practitioner,
                patient_id: patient.clone(),
                kind: CareKind::Encounter,
                started_at: period_start(own).or(started_at),
                ended_at: period_end(own).or(ended_at),
            },
        );
    }
    if ENCOUNTER_PRESENT.contains(&status) {
        for location in array_at(resource, "location") {
            if str_at(location, "status") == Some("completed") {
                continue;
            }
            if let Some(site) = reference_id(location.get("location"), "Location") {
                push_unique(
                    &mut rows.patient_sites,
                    PatientSite {
                        patient_id: patient.clone(),
                        site_type: SiteType::Location,
                        site_id: site,
                        started_at: period_start(location.get("period")).or(started_at),
                        ended_at: None,
                    },
                );
            }
        }
        if let Some(site) = reference_id(resource.get("serviceProvider"), "Organization") {
            push_unique(
                &mut rows.patient_sites,
                PatientSite {
                    patient_id: patient,
                    site_type: SiteType::Organization,
                    site_id: site,
                    started_at,
                    ended_at: None,
                },
            );
        }
    }
    rows
}

fn care_team(resource: &Value) -> RelationshipRows {
    let mut rows = RelationshipRows::default();
    let status = str_at(resource, "status").unwrap_or_default();
    if !CARE_TEAM_LIVE.contains(&status) {
        return rows;
    }
    let Some(patient) = reference_id(resource.get("subject"), "Patient") else {
        return rows;
    };
    let period = resource.get("period");
    for participant in array_at(resource, "participant") {
        let Some(practitioner) = reference_id(participant.get("member"), "Practitioner") else {
            continue;
        };
        let own = participant.get("period");
        push_unique(
            &mut rows.care,
            CareRelationship {
                practitioner_id: practitioner,
                patient_id: patient.clone(),
                kind: CareKind::CareTeam,
                started_at: period_start(own).or_else(|| period_start(period)),
                ended_at: period_end(own).or_else(|| period_end(period)),
            },
        );
    }
    rows
}

fn practitioner_role(resource: &Value) -> RelationshipRows {
    let mut rows = RelationshipRows::default();
    if resource.get("active") == Some(&Value::Bool(false)) {
        return rows;
    }
    let Some(practitioner) = reference_id(resource.get("practitioner"), "Practitioner") else {
        return rows;
    };
    let mut specialties: Vec<String> = Vec::new();
    for specialty in array_at(resource, "specialty") {
        for coding in array_at(specialty, "coding") {
            let Some(code) = str_at(coding, "code").filter(|c| !c.is_empty()) else {
                continue;
            };
            let token = format!("{}|{code}", str_at(coding, "system").unwrap_or_default());
            if !specialties.contains(&token) {
                specialties.push(token);
            }
        }
    }
    let period = resource.get("period");
    let sites = array_at(resource, "location")
        .filter_map(|l| reference_id(Some(l), "Location").map(|id| (SiteType::Location, id)))
        .chain(
            reference_id(resource.get("organization"), "Organization")
                .map(|id| (SiteType::Organization, id)),
        );
    for (site_type, site_id) in sites {
        push_unique(
            &mut rows.practitioner_sites,
            PractitionerSite {
                practitioner_id: practitioner.clone(),
                site_type,
                site_id,
                specialties: specialties.clone(),
                started_at: period_start(period),
                ended_at: period_end(period),
            },
        );
    }
    rows
}

fn push_unique<T: PartialEq>(rows: &mut Vec<T>, row: T) {
    if !rows.contains(&row) {
        rows.push(row);
    }
}

fn str_at<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

fn array_at<'a>(value: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    value
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// The id a Reference names when it points at `expected_type`: relative (`Patient/9`),
/// versioned (`Patient/9/_history/2`) or absolute (`https://…/Patient/9`). Contained (`#x`),
/// identifier-only and other types: `None`.
fn reference_id(reference: Option<&Value>, expected_type: &str) -> Option<String> {
    let text = reference?.get("reference")?.as_str()?.trim();
    let text = text.split(['?', '#']).next().unwrap_or_default();
    let mut segments: Vec<&str> = text.split('/').filter(|s| !s.is_empty()).collect();
    if segments.len() >= 4 && segments[segments.len() - 2] == "_history" {
        segments.truncate(segments.len() - 2);
    }
    let [.., resource_type, id] = segments.as_slice() else {
        return None;
    };
    (*resource_type == expected_type && is_fhir_id(id)).then(|| (*id).to_owned())
}

/// FHIR's id: `[A-Za-z0-9\-\.]{1,64}`.
fn is_fhir_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// The first instant a FHIR date/dateTime/instant names, or `None` when unreadable.
fn instant_start(text: &str) -> Option<DateTime<Utc>> {
    date_range(text).and_then(|r| r.lo)
}

/// The first instant after what a FHIR date/dateTime/instant names (a Period end is
/// inclusive of its whole precision), or `None` when unreadable.
fn instant_after(text: &str) -> Option<DateTime<Utc>> {
    date_range(text).and_then(|r| r.hi)
}

fn period_start(period: Option<&Value>) -> Option<DateTime<Utc>> {
    period
        .and_then(|p| str_at(p, "start"))
        .and_then(instant_start)
}

fn period_end(period: Option<&Value>) -> Option<DateTime<Utc>> {
    period
        .and_then(|p| str_at(p, "end"))
        .and_then(instant_after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn at(y: i32, m: u32, d: u32, h: u32, mi: u32, s: u32) -> Option<DateTime<Utc>> {
        Utc.with_ymd_and_hms(y, m, d, h, mi, s).single()
    }

    fn encounter_json(status: &str) -> Value {
        json!({
            "resourceType": "Encounter",
            "id": "e1",
            "meta": {"versionId": "3", "lastUpdated": "2024-03-14T09:30:00.000Z"},
            "status": status,
            "class": {"code": "IMP"},
            "subject": {"reference": "Patient/p1"},
            "period": {"start": "2024-03-11T08:30:00-05:00"},
            "participant": [
                {"individual": {"reference": "Practitioner/dr-a"}},
                {"individual": {"reference": "Practitioner/dr-b"}},
                {"individual": {"reference": "PractitionerRole/role-1"}},
                {"individual": {"reference": "RelatedPerson/rp"}},
                {"type": [{"text": "no individual"}]}
            ],
            "location": [
                {"location": {"reference": "Location/ward-4"}, "status": "active"},
                {"location": {"reference": "Location/er"}, "status": "completed"}
            ],
            "serviceProvider": {"reference": "Organization/hosp"}
        })
    }

    fn practitioners(rows: &RelationshipRows) -> Vec<&str> {
        rows.care
            .iter()
            .map(|r| r.practitioner_id.as_str())
            .collect()
    }

    #[test]
    fn only_the_three_source_types_state_relationships() {
        let obs = json!({"resourceType": "Observation", "subject": {"reference": "Patient/p1"}});
        assert_eq!(derive("Observation", &obs), None);
        assert_eq!(derive("Patient", &json!({})), None);
        for t in ["Encounter", "CareTeam", "PractitionerRole"] {
            assert_eq!(
                derive(t, &json!({})),
                Some(RelationshipRows::default()),
                "{t}"
            );
        }
    }

    #[test]
    fn encounter_links_practitioner_participants_only() {
        let rows = derive("Encounter", &encounter_json("in-progress")).expect("Some");
        assert_eq!(practitioners(&rows), ["dr-a", "dr-b"]);
        for r in &rows.care {
            assert_eq!(r.patient_id, "p1");
            assert_eq!(r.kind, CareKind::Encounter);
            assert_eq!(r.started_at, at(2024, 3, 11, 13, 30, 0));
            assert_eq!(r.ended_at, None);
        }
    }

    #[test]
    fn encounter_in_progress_places_the_patient_at_active_locations_and_provider() {
        let rows = derive("Encounter", &encounter_json("in-progress")).expect("Some");
        let sites: Vec<(SiteType, &str)> = rows
            .patient_sites
            .iter()
            .map(|s| (s.site_type, s.site_id.as_str()))
            .collect();
        assert_eq!(
            sites,
            [
                (SiteType::Location, "ward-4"),
                (SiteType::Organization, "hosp")
            ]
        );
        assert!(rows.patient_sites.iter().all(|s| s.patient_id == "p1"
            && s.ended_at.is_none()
            && s.started_at == at(2024, 3, 11, 13, 30, 0)));
    }

    #[test]
    fn encounter_present_statuses_have_sites_others_do_not() {
        for status in ["planned", "arrived", "triaged", "in-progress", "onleave"] {
            let rows = derive("Encounter", &encounter_json(status)).expect("Some");
            assert_eq!(rows.patient_sites.len(), 2, "{status}");
            assert_eq!(rows.care.len(), 2, "{status}");
        }
        for status in ["finished", "unknown"] {
            let rows = derive("Encounter", &encounter_json(status)).expect("Some");
            assert!(rows.patient_sites.is_empty(), "{status}");
            assert_eq!(rows.care.len(), 2, "{status}");
        }
    }

    #[test]
    fn void_encounters_state_nothing() {
        for status in ["entered-in-error", "cancelled"] {
            let rows = derive("Encounter", &encounter_json(status)).expect("Some");
            assert!(rows.is_empty(), "{status}");
        }
    }

    #[test]
    fn finished_encounter_without_end_ends_at_last_updated() {
        let rows = derive("Encounter", &encounter_json("finished")).expect("Some");
        assert!(
            rows.care
                .iter()
                .all(|r| r.ended_at == at(2024, 3, 14, 9, 30, 0))
        );
    }

    #[test]
    fn encounter_period_end_wins_and_is_exclusive_at_its_precision() {
        let mut e = encounter_json("finished");
        e["period"]["end"] = json!("2024-03-13");
        let rows = derive("Encounter", &e).expect("Some");
        assert!(
            rows.care
                .iter()
                .all(|r| r.ended_at == at(2024, 3, 14, 0, 0, 0))
        );
        e["period"]["end"] = json!("2024-03-13T17:00:00Z");
        let rows = derive("Encounter", &e).expect("Some");
        assert!(
            rows.care
                .iter()
                .all(|r| r.ended_at == at(2024, 3, 13, 17, 0, 1))
        );
    }

    #[test]
    fn encounter_participant_period_narrows_the_link() {
        let mut e = encounter_json("in-progress");
        e["participant"][1]["period"] =
            json!({"start": "2024-03-12", "end": "2024-03-12T12:00:00Z"});
        let rows = derive("Encounter", &e).expect("Some");
        assert_eq!(rows.care[0].started_at, at(2024, 3, 11, 13, 30, 0));
        assert_eq!(rows.care[0].ended_at, None);
        assert_eq!(rows.care[1].started_at, at(2024, 3, 12, 0, 0, 0));
        assert_eq!(rows.care[1].ended_at, at(2024, 3, 12, 12, 0, 1));
    }

    #[test]
    fn encounter_without_a_patient_subject_links_nobody() {
        let mut e = encounter_json("in-progress");
        e["subject"] = json!({"reference": "Group/g1"});
        assert!(derive("Encounter", &e).expect("Some").is_empty());
        e["subject"] = json!({"identifier": {"value": "MRN1"}});
        assert!(derive("Encounter", &e).expect("Some").is_empty());
        e.as_object_mut().expect("object").remove("subject");
        assert!(derive("Encounter", &e).expect("Some").is_empty());
    }

    #[test]
    fn the_same_practitioner_twice_is_one_link() {
        let mut e = encounter_json("in-progress");
        e["participant"] = json!([
            {"type": [{"text": "attender"}], "individual": {"reference": "Practitioner/dr-a"}},
            {"type": [{"text": "admitter"}], "individual": {"reference": "Practitioner/dr-a"}}
        ]);
        assert_eq!(
            practitioners(&derive("Encounter", &e).expect("Some")),
            ["dr-a"]
        );
    }

    #[test]
    fn absolute_and_versioned_references_are_read() {
        let mut e = encounter_json("in-progress");
        e["subject"] = json!({"reference": "https://ehr.example.org/fhir/Patient/p9"});
        e["participant"] = json!([
            {"individual": {"reference": "http://other.example/base/Practitioner/x1"}},
            {"individual": {"reference": "Practitioner/x2/_history/4"}},
            {"individual": {"reference": "#contained"}},
            {"individual": {"reference": "Practitioner/"}},
            {"individual": {"reference": "Practitioner/bad id"}},
            {"individual": {"reference": "Practitioner"}}
        ]);
        let rows = derive("Encounter", &e).expect("Some");
        assert_eq!(practitioners(&rows), ["x1", "x2"]);
        assert!(rows.care.iter().all(|r| r.patient_id == "p9"));
    }

    fn care_team_json(status: &str) -> Value {
        json!({
            "resourceType": "CareTeam",
            "status": status,
            "subject": {"reference": "Patient/p1"},
            "period": {"start": "2024-01", "end": "2024"},
            "participant": [
                {"member": {"reference": "Practitioner/dr-a"}},
                {"member": {"reference": "Practitioner/dr-b"},
                 "period": {"start": "2024-02-01T10:00:00+01:00", "end": "2024-02-29"}},
                {"member": {"reference": "Organization/org"}},
                {"member": {"reference": "PractitionerRole/role"}},
                {"member": {"reference": "Patient/p1"}},
                {"role": [{"text": "no member"}]}
            ]
        })
    }

    #[test]
    fn care_team_links_practitioner_members_with_their_periods() {
        let rows = derive("CareTeam", &care_team_json("active")).expect("Some");
        assert_eq!(practitioners(&rows), ["dr-a", "dr-b"]);
        assert!(rows.care.iter().all(|r| r.kind == CareKind::CareTeam));
        assert!(rows.practitioner_sites.is_empty() && rows.patient_sites.is_empty());
        assert_eq!(rows.care[0].started_at, at(2024, 1, 1, 0, 0, 0));
        assert_eq!(rows.care[0].ended_at, at(2025, 1, 1, 0, 0, 0));
        assert_eq!(rows.care[1].started_at, at(2024, 2, 1, 9, 0, 0));
        assert_eq!(rows.care[1].ended_at, at(2024, 3, 1, 0, 0, 0));
    }

    #[test]
    fn care_team_statuses() {
        for status in ["active", "proposed"] {
            let rows = derive("CareTeam", &care_team_json(status)).expect("Some");
            assert_eq!(rows.care.len(), 2, "{status}");
        }
        for status in ["suspended", "inactive", "entered-in-error", "whatever"] {
            let rows = derive("CareTeam", &care_team_json(status)).expect("Some");
            assert!(rows.is_empty(), "{status}");
        }
        let mut no_status = care_team_json("active");
        no_status.as_object_mut().expect("object").remove("status");
        assert!(derive("CareTeam", &no_status).expect("Some").is_empty());
    }

    fn role_json() -> Value {
        json!({
            "resourceType": "PractitionerRole",
            "active": true,
            "practitioner": {"reference": "Practitioner/dr-a"},
            "organization": {"reference": "Organization/hosp"},
            "location": [{"reference": "Location/ward-4"}, {"reference": "Location/clinic"},
                         {"reference": "Organization/not-a-location"}],
            "specialty": [
                {"coding": [{"system": "http://nucc.org/provider-taxonomy", "code": "207R00000X"},
                            {"system": "http://snomed.info/sct", "code": "394579002"}]},
                {"coding": [{"code": "local"}, {"system": "http://x", "display": "no code"}]},
                {"text": "no coding"}
            ],
            "period": {"start": "2023-06-01", "end": "2025-05-31"}
        })
    }

    #[test]
    fn practitioner_role_sites_and_specialties() {
        let rows = derive("PractitionerRole", &role_json()).expect("Some");
        assert!(rows.care.is_empty() && rows.patient_sites.is_empty());
        let sites: Vec<(SiteType, &str)> = rows
            .practitioner_sites
            .iter()
            .map(|s| (s.site_type, s.site_id.as_str()))
            .collect();
        assert_eq!(
            sites,
            [
                (SiteType::Location, "ward-4"),
                (SiteType::Location, "clinic"),
                (SiteType::Organization, "hosp")
            ]
        );
        for s in &rows.practitioner_sites {
            assert_eq!(s.practitioner_id, "dr-a");
            assert_eq!(
                s.specialties,
                [
                    "http://nucc.org/provider-taxonomy|207R00000X",
                    "http://snomed.info/sct|394579002",
                    "|local"
                ]
            );
            assert_eq!(s.started_at, at(2023, 6, 1, 0, 0, 0));
            assert_eq!(s.ended_at, at(2025, 6, 1, 0, 0, 0));
        }
    }

    #[test]
    fn inactive_or_practitionerless_roles_state_nothing() {
        let mut role = role_json();
        role["active"] = json!(false);
        assert!(derive("PractitionerRole", &role).expect("Some").is_empty());
        let mut role = role_json();
        role.as_object_mut().expect("object").remove("active");
        assert_eq!(
            derive("PractitionerRole", &role)
                .expect("Some")
                .practitioner_sites
                .len(),
            3,
            "absent active is not false"
        );
        let mut role = role_json();
        role.as_object_mut().expect("object").remove("practitioner");
        assert!(derive("PractitionerRole", &role).expect("Some").is_empty());
    }

    #[test]
    fn unreadable_dates_are_open_bounds() {
        let mut e = encounter_json("finished");
        e["period"] = json!({"start": "yesterday", "end": "2024-13-45"});
        e["meta"]["lastUpdated"] = json!(17);
        let rows = derive("Encounter", &e).expect("Some");
        assert_eq!(rows.care.len(), 2);
        assert!(
            rows.care
                .iter()
                .all(|r| r.started_at.is_none() && r.ended_at.is_none())
        );
    }

    #[test]
    fn garbage_never_panics() {
        let garbage = [
            json!(null),
            json!(42),
            json!("Encounter"),
            json!([1, 2, 3]),
            json!({"status": 7, "subject": "Patient/p1", "participant": {"individual": 1}}),
            json!({"status": "in-progress", "subject": {"reference": 5},
                   "participant": [null, 1, "x", {"individual": null},
                                   {"individual": {"reference": ["Practitioner/a"]}},
                                   {"individual": {"reference": "Practitioner/a"}, "period": 3}],
                   "period": "2024", "location": [null, {"location": 3}, {"status": 1}],
                   "serviceProvider": []}),
            json!({"status": "active", "subject": {"reference": "Patient/p"},
                   "participant": [{"member": {"reference": "Practitioner/a"},
                                    "period": {"start": 2024, "end": {"x": 1}}}],
                   "period": {"start": "2024-02-30", "end": "9999999-01-01"}}),
            json!({"active": "false", "practitioner": {"reference": "Practitioner/a"},
                   "location": [1, null, {"reference": null}], "organization": "Organization/o",
                   "specialty": [{"coding": [null, {"code": 5}, {"system": 1, "code": "c"}]}],
                   "period": {"start": "\u{0}\u{fffd}", "end": "T"}}),
        ];
        for value in &garbage {
            for t in ["Encounter", "CareTeam", "PractitionerRole"] {
                assert!(derive(t, value).is_some(), "{t}: {value}");
            }
        }
        let tricky = json!({"status": "active", "subject": {"reference": "Patient/p"},
                            "participant": [{"member": {"reference": "Practitioner/a"},
                                             "period": {"start": 2024, "end": {"x": 1}}}],
                            "period": {"start": "2024-02-30", "end": "9999999-01-01"}});
        let rows = derive("CareTeam", &tricky).expect("Some");
        assert_eq!(rows.care.len(), 1);
        assert_eq!(rows.care[0].started_at, None);
        assert_eq!(rows.care[0].ended_at, None);
        for text in [
            "",
            "T",
            "2024-",
            "2024-1-1",
            "24",
            "2024-01-01T",
            "2024-01-01T25:00:00Z",
            "2024-01-01T10:00:00+99:00",
            "+2024",
            "é",
            "2024-01-01T10:00:00.Z",
        ] {
            assert_eq!(instant_start(text), None, "{text:?}");
        }
    }
}
