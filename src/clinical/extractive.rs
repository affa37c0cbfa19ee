//! The extractive engine, the default (no model): every statement of a summary or an answer
//! is written from structured data and cites the resource, version and element it came
//! from. Values, dates and codes are written exactly as stored (numbers keep their source
//! text, dates are the source value or its date part), so each can be found in the cited
//! resource; the only words added are fixed phrases ("since", "up from", "flagged high").
//! What the record does not hold is "not found", never guessed. Pure functions.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::chunk::{
    concept_code, concept_label, concept_name, date_key, date_part, first_date,
    interpretation_text, list_marker_len, manifestations, note_attachment, note_sections,
    number_text, one_line, preferred_coding, quantity_unit, sentences, str_of, trim_range,
    value_text,
};
use super::{Answer, Citation, RecordEntry, Section, Statement, Summary};

/// The engine's name in [`Summary::engine`].
pub const ENGINE: &str = "extractive";

/// Encounters, procedures and immunizations listed (most recent first).
const RECENT: usize = 5;
/// Inpatient stays listed beyond the most recent encounters, when older than them.
const EXTRA_ADMISSIONS: usize = 3;
/// Notes quoted in the highlights.
const NOTES: usize = 3;
/// A quoted sentence longer than this (bytes) is cut between words.
const MAX_QUOTE_BYTES: usize = 400;
/// Statements an answer by name lists at most.
const MAX_MATCHED: usize = 5;

/// The summary of a patient's record: problems, medications, allergies, recent encounters,
/// vital signs, labs, recent procedures, immunizations and note highlights, in that order.
/// `now` is the time of the request; statements never depend on it (records may be dated
/// after the server's clock), it is part of the engines' common signature.
pub fn summarize(record: &[RecordEntry], now: DateTime<Utc>) -> Summary {
    let _ = now;
    let record = current(record);
    let sections = vec![
        section(
            "problems",
            "Active problems",
            problems(&record),
            "No active problems recorded.",
        ),
        section(
            "medications",
            "Medications",
            medications(&record),
            "No active medications recorded.",
        ),
        section(
            "allergies",
            "Allergies",
            allergies(&record),
            "No allergies recorded.",
        ),
        section(
            "encounters",
            "Recent encounters",
            encounters(&record),
            "No encounters recorded.",
        ),
        section(
            "vitals",
            "Vital signs",
            observations(&record, Kind::Vital),
            "No vital signs recorded.",
        ),
        section(
            "labs",
            "Labs",
            observations(&record, Kind::Lab),
            "No lab results recorded.",
        ),
        section(
            "procedures",
            "Recent procedures",
            procedures(&record),
            "No procedures recorded.",
        ),
        section(
            "immunizations",
            "Immunizations",
            immunizations(&record),
            "No immunizations recorded.",
        ),
        section(
            "notes",
            "Note highlights",
            notes(&record),
            "No notes recorded.",
        ),
    ];
    Summary {
        engine: ENGINE.to_owned(),
        sections,
        removed: 0,
        notice: None,
    }
}

/// The answer to a question, routed by its words: a lab ("last A1c", "latest potassium"),
/// allergies, medications, problems, the last admission, or a test named by words of its
/// code. `not_found` when the question is not understood or the record holds no answer.
pub fn answer(record: &[RecordEntry], question: &str) -> Answer {
    let record = current(record);
    let words = words_of(question);
    let statements = route(&record, &words);
    Answer {
        question: question.to_owned(),
        not_found: statements.is_empty(),
        statements,
    }
}

// ---------------------------------------------------------------------------------------
// Common helpers.

type Record<'a> = [&'a RecordEntry];

/// The record with one entry per resource (its highest version), in a stable order.
fn current(record: &[RecordEntry]) -> Vec<&RecordEntry> {
    let mut latest: BTreeMap<(&str, &str), &RecordEntry> = BTreeMap::new();
    for entry in record {
        let key = (entry.resource_type.as_str(), entry.id.as_str());
        match latest.get(&key) {
            Some(seen) if seen.version_id >= entry.version_id => {}
            _ => {
                latest.insert(key, entry);
            }
        }
    }
    latest.into_values().collect()
}

fn of_type<'a, 'b>(
    record: &'b Record<'a>,
    resource_type: &'b str,
) -> impl Iterator<Item = &'a RecordEntry> + 'b {
    record
        .iter()
        .copied()
        .filter(move |e| e.resource_type == resource_type)
}

fn section(code: &str, title: &str, statements: Vec<Statement>, empty: &str) -> Section {
    Section {
        code: code.to_owned(),
        title: title.to_owned(),
        empty_text: statements.is_empty().then(|| empty.to_owned()),
        statements,
    }
}

fn cite(entry: &RecordEntry, element: &str) -> Citation {
    Citation {
        reference: entry.reference(),
        version_id: Some(entry.version_id),
        element: Some(element.to_owned()),
        span: None,
    }
}

fn statement(text: String, citations: Vec<Citation>) -> Statement {
    Statement {
        text,
        citations,
        flagged: None,
    }
}

fn status(resource: &Value) -> Option<&str> {
    str_of(&resource["status"])
}

/// Most recent first; undated last; then by `tie`.
fn recent_first(a: Option<i64>, b: Option<i64>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => b.cmp(&a),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// The words of a text, lowercased, padded with spaces: " last hba1c ".
fn words_of(text: &str) -> String {
    let mapped: String = text
        .chars()
        .map(|c| {
            if c.is_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                ' '
            }
        })
        .collect::<String>()
        .to_lowercase();
    format!(
        " {} ",
        mapped.split_whitespace().collect::<Vec<_>>().join(" ")
    )
}

fn has_phrase(words: &str, phrase: &str) -> bool {
    words.contains(&format!(" {phrase} "))
}

fn has_any(words: &str, phrases: &[&str]) -> bool {
    phrases.iter().any(|p| has_phrase(words, p))
}

// ---------------------------------------------------------------------------------------
// Problems.

fn problems(record: &Record) -> Vec<Statement> {
    struct Problem {
        name: String,
        onset: Option<i64>,
        statement: Statement,
    }
    let mut by_code: BTreeMap<String, Problem> = BTreeMap::new();
    for entry in of_type(record, "Condition") {
        let r = &entry.resource;
        let clinical = concept_code(&r["clinicalStatus"]);
        let clinical = clinical.as_deref();
        let abated = [
            "abatementDateTime",
            "abatementPeriod",
            "abatementString",
            "abatementAge",
        ]
        .iter()
        .any(|k| !r[*k].is_null());
        match clinical {
            Some("active" | "recurrence" | "relapse") => {}
            None if !abated => {}
            _ => continue,
        }
        let verification = concept_code(&r["verificationStatus"]);
        let verification = verification.as_deref();
        if matches!(verification, Some("entered-in-error" | "refuted")) {
            continue;
        }
        let (Some(name), Some(label)) = (
            concept_name(&r["code"]),
            concept_label(&r["code"], &["ICD-10-CM", "SNOMED CT"]),
        ) else {
            continue;
        };
        let mut text = label;
        let mut citations = vec![cite(entry, "code")];
        let onset = first_date(r, &["onsetDateTime", "onsetPeriod.start"]);
        if let Some((date, path)) = onset {
            text.push_str(&format!(", since {}", date_part(date)));
            citations.push(cite(entry, path));
        } else if let Some(onset) = str_of(&r["onsetString"]) {
            text.push_str(&format!(", onset {}", one_line(onset)));
            citations.push(cite(entry, "onsetString"));
        } else if let Some(recorded) = str_of(&r["recordedDate"]) {
            text.push_str(&format!(", recorded {}", date_part(recorded)));
            citations.push(cite(entry, "recordedDate"));
        }
        let mut notes: Vec<&str> = Vec::new();
        match clinical {
            Some(c @ ("recurrence" | "relapse")) => notes.push(c),
            None => notes.push("clinical status not recorded"),
            _ => {}
        }
        if let Some(v @ ("provisional" | "differential" | "unconfirmed")) = verification {
            notes.push(v);
        }
        if !notes.is_empty() {
            text.push_str(&format!(" ({})", notes.join(", ")));
        }
        text.push('.');
        let key = preferred_coding(&r["code"], &["ICD-10-CM", "SNOMED CT"])
            .map(|(system, code)| format!("{system}|{code}"))
            .or_else(|| preferred_key(&r["code"]))
            .unwrap_or_else(|| name.to_lowercase());
        let onset_key = onset.and_then(|(d, _)| date_key(d));
        let problem = Problem {
            name,
            onset: onset_key,
            statement: statement(text, citations),
        };
        match by_code.get(&key) {
            // The same problem recorded twice: keep the earliest onset.
            Some(seen) if recent_first(seen.onset, problem.onset) != Ordering::Less => {}
            _ => {
                by_code.insert(key, problem);
            }
        }
    }
    let mut list: Vec<Problem> = by_code.into_values().collect();
    list.sort_by(|a, b| {
        recent_first(a.onset, b.onset)
            .then_with(|| a.name.to_lowercase().cmp(&b.name.to_lowercase()))
    });
    list.into_iter().map(|p| p.statement).collect()
}

/// `system|code` of a concept's first coding that has both.
fn preferred_key(concept: &Value) -> Option<String> {
    concept["coding"]
        .as_array()?
        .iter()
        .find_map(|c| Some(format!("{}|{}", str_of(&c["system"])?, str_of(&c["code"])?)))
}

// ---------------------------------------------------------------------------------------
// Medications.

fn medications(record: &Record) -> Vec<Statement> {
    let mut list: Vec<(String, Statement)> = Vec::new();
    for &entry in record {
        let r = &entry.resource;
        let dosage_path = match (entry.resource_type.as_str(), status(r)) {
            ("MedicationRequest", Some("active" | "on-hold")) => "dosageInstruction[0].text",
            ("MedicationStatement", Some("active")) => "dosage[0].text",
            _ => continue,
        };
        let Some((name, mut citations)) = medication_name(entry, record) else {
            continue;
        };
        let mut text = name.clone();
        let dosage = if entry.resource_type == "MedicationRequest" {
            str_of(&r["dosageInstruction"][0]["text"])
        } else {
            str_of(&r["dosage"][0]["text"])
        };
        if let Some(dosage) = dosage {
            text.push_str(" — ");
            text.push_str(&one_line(dosage));
            citations.push(cite(entry, dosage_path));
        }
        if status(r) == Some("on-hold") {
            text.push_str(" (on hold)");
        }
        text.push('.');
        if list.iter().any(|(_, s)| s.text.eq_ignore_ascii_case(&text)) {
            continue;
        }
        list.push((name.to_lowercase(), statement(text, citations)));
    }
    list.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.text.cmp(&b.1.text)));
    list.into_iter().map(|(_, s)| s).collect()
}

/// A medication's name: `medicationCodeableConcept`, `medicationReference.display`, or the
/// code of the referenced Medication (contained, or in the record), with its citations.
fn medication_name(entry: &RecordEntry, record: &Record) -> Option<(String, Vec<Citation>)> {
    let r = &entry.resource;
    if let Some(name) = concept_name(&r["medicationCodeableConcept"]) {
        return Some((name, vec![cite(entry, "medicationCodeableConcept")]));
    }
    let reference = &r["medicationReference"];
    if let Some(display) = str_of(&reference["display"]) {
        return Some((one_line(display), vec![cite(entry, "medicationReference")]));
    }
    let target = str_of(&reference["reference"])?;
    if let Some(local) = target.strip_prefix('#') {
        let contained = r["contained"].as_array()?;
        let (i, medication) = contained
            .iter()
            .enumerate()
            .find(|(_, c)| c["resourceType"] == "Medication" && c["id"].as_str() == Some(local))?;
        let name = concept_name(&medication["code"])?;
        return Some((name, vec![cite(entry, &format!("contained[{i}].code"))]));
    }
    let (_, rest) = target.rsplit_once("Medication/")?;
    let id = rest.split('/').next()?;
    let medication = of_type(record, "Medication").find(|m| m.id == id)?;
    let name = concept_name(&medication.resource["code"])?;
    Some((
        name,
        vec![cite(entry, "medicationReference"), cite(medication, "code")],
    ))
}

// ---------------------------------------------------------------------------------------
// Allergies.

fn allergies(record: &Record) -> Vec<Statement> {
    let mut list: Vec<(u8, String, Statement)> = Vec::new();
    for entry in of_type(record, "AllergyIntolerance") {
        let r = &entry.resource;
        if matches!(
            concept_code(&r["clinicalStatus"]).as_deref(),
            Some("resolved" | "inactive")
        ) {
            continue;
        }
        let verification = concept_code(&r["verificationStatus"]);
        let verification = verification.as_deref();
        if matches!(verification, Some("entered-in-error" | "refuted")) {
            continue;
        }
        let Some(name) = concept_name(&r["code"]) else {
            continue;
        };
        let mut citations = vec![cite(entry, "code")];
        let mut notes: Vec<&str> = Vec::new();
        let criticality = str_of(&r["criticality"]);
        match criticality {
            Some("high") => notes.push("high criticality"),
            Some("low") => notes.push("low criticality"),
            Some("unable-to-assess") => notes.push("criticality unable to assess"),
            _ => {}
        }
        if !notes.is_empty() {
            citations.push(cite(entry, "criticality"));
        }
        if str_of(&r["type"]) == Some("intolerance") {
            notes.push("intolerance");
        }
        if let Some(v @ ("unconfirmed" | "presumed")) = verification {
            notes.push(v);
        }
        let mut text = name.clone();
        if !notes.is_empty() {
            text.push_str(&format!(" ({})", notes.join(", ")));
        }
        let reactions = manifestations(r);
        if !reactions.is_empty() {
            text.push_str(&format!(": {}", reactions.join(", ")));
            citations.push(cite(entry, "reaction"));
        }
        text.push('.');
        if list
            .iter()
            .any(|(_, _, s)| s.text.eq_ignore_ascii_case(&text))
        {
            continue;
        }
        let rank = match criticality {
            Some("high") => 0,
            _ => 1,
        };
        list.push((rank, name.to_lowercase(), statement(text, citations)));
    }
    list.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    list.into_iter().map(|(_, _, s)| s).collect()
}

// ---------------------------------------------------------------------------------------
// Encounters.

struct Visit<'a> {
    entry: &'a RecordEntry,
    start: i64,
}

/// Dated encounters that took place (or take place), most recent first.
fn visits<'a>(record: &Record<'a>) -> Vec<Visit<'a>> {
    let mut list: Vec<Visit> = of_type(record, "Encounter")
        .filter(|e| !matches!(status(&e.resource), Some("entered-in-error" | "cancelled")))
        .filter_map(|entry| {
            let start = date_key(str_of(&entry.resource["period"]["start"])?)?;
            Some(Visit { entry, start })
        })
        .collect();
    list.sort_by(|a, b| {
        b.start
            .cmp(&a.start)
            .then_with(|| a.entry.id.cmp(&b.entry.id))
    });
    list
}

fn is_inpatient(encounter: &Value) -> bool {
    let class = &encounter["class"];
    let code = str_of(&class["code"]).map(str::to_ascii_uppercase);
    matches!(
        code.as_deref(),
        Some("IMP" | "ACUTE" | "NONAC" | "INPATIENT")
    ) || str_of(&class["display"]).is_some_and(|d| d.to_lowercase().contains("inpatient"))
}

/// The most recent encounters, plus older inpatient stays (admissions matter more than
/// visits), most recent first.
fn encounters(record: &Record) -> Vec<Statement> {
    let all = visits(record);
    let mut extra = 0;
    all.iter()
        .enumerate()
        .filter(|(i, visit)| {
            if *i < RECENT {
                return true;
            }
            if extra < EXTRA_ADMISSIONS && is_inpatient(&visit.entry.resource) {
                extra += 1;
                return true;
            }
            false
        })
        .filter_map(|(_, visit)| encounter_statement(visit.entry))
        .collect()
}

fn encounter_statement(entry: &RecordEntry) -> Option<Statement> {
    let r = &entry.resource;
    let start = date_part(str_of(&r["period"]["start"])?);
    let end = str_of(&r["period"]["end"]).map(date_part);
    let class_code = str_of(&r["class"]["code"]).map(str::to_ascii_uppercase);
    let class = match class_code.as_deref() {
        Some("IMP" | "ACUTE" | "NONAC" | "INPATIENT") => Some("inpatient".to_owned()),
        Some("EMER") => Some("emergency".to_owned()),
        Some("AMB") => Some("ambulatory".to_owned()),
        Some("OBSENC") => Some("observation".to_owned()),
        Some("SS") => Some("short stay".to_owned()),
        Some("VR") => Some("virtual".to_owned()),
        Some("HH") => Some("home health".to_owned()),
        Some("FLD") => Some("field".to_owned()),
        Some("PRENC") => Some("pre-admission".to_owned()),
        _ => str_of(&r["class"]["display"]).map(one_line),
    };
    let kind = r["type"].get(0).and_then(concept_name);
    let has_kind = kind.is_some();
    let reason = r["reasonCode"].get(0).and_then(concept_name);
    let state = status(r);
    let ongoing = matches!(
        state,
        Some("in-progress" | "arrived" | "triaged" | "onleave")
    );
    let planned = state == Some("planned");
    let mut citations = vec![cite(entry, "period")];
    if class.is_some() {
        citations.push(cite(entry, "class"));
    }
    let mut text = if is_inpatient(r) {
        let mut detail = vec!["inpatient".to_owned()];
        detail.extend(kind.filter(|k| !k.eq_ignore_ascii_case("inpatient")));
        let detail = detail.join("; ");
        if ongoing {
            format!("Currently admitted since {start} ({detail})")
        } else if planned {
            format!("Planned admission {start} ({detail})")
        } else if let Some(end) = end {
            format!("Admitted {start}, discharged {end} ({detail})")
        } else {
            format!("Admitted {start} ({detail})")
        }
    } else {
        let label = match &class {
            Some(c) => format!("{} encounter", capitalized(c)),
            None => "Encounter".to_owned(),
        };
        let mut text = if planned {
            format!("Planned {} on {start}", lowercase_first(&label))
        } else {
            format!("{label} on {start}")
        };
        if let Some(end) = end.filter(|e| *e != start) {
            text.push_str(&format!(" to {end}"));
        }
        if ongoing {
            text.push_str(" (in progress)");
        }
        if let Some(kind) = kind {
            text.push_str(&format!(" ({kind})"));
        }
        text
    };
    if has_kind {
        citations.push(cite(entry, "type[0]"));
    }
    if let Some(reason) = reason {
        text.push_str(&format!(" for {reason}"));
        citations.push(cite(entry, "reasonCode[0]"));
    }
    text.push('.');
    Some(statement(text, citations))
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn last_admission(record: &Record, year: Option<&str>) -> Vec<Statement> {
    visits(record)
        .into_iter()
        .filter(|v| {
            let r = &v.entry.resource;
            is_inpatient(r)
                && status(r) != Some("planned")
                && in_year(str_of(&r["period"]["start"]), year)
        })
        .find_map(|v| encounter_statement(v.entry))
        .into_iter()
        .collect()
}

// ---------------------------------------------------------------------------------------
// Observations: vital signs and labs.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Vital,
    Lab,
}

const LOINC: &str = "http://loinc.org";
const SYSTOLIC: &str = "8480-6";
const DIASTOLIC: &str = "8462-4";
/// Vital signs in the order a clinician reads them (after blood pressure).
const VITAL_ORDER: &[&str] = &[
    "8867-4",  // heart rate
    "9279-1",  // respiratory rate
    "8310-5",  // body temperature
    "59408-5", // oxygen saturation by pulse oximetry
    "2708-6",  // oxygen saturation in arterial blood
    "29463-7", // body weight
    "8302-2",  // body height
    "39156-5", // body mass index
];

/// The LOINC codes of an Observation's `code` (codings of LOINC, or of no system).
fn loinc_codes(concept: &Value) -> Vec<&str> {
    concept["coding"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| matches!(c["system"].as_str(), Some(LOINC) | None))
        .filter_map(|c| str_of(&c["code"]))
        .collect()
}

fn kind_of(resource: &Value) -> Option<Kind> {
    let categories: Vec<&str> = resource["category"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["coding"].as_array().into_iter().flatten())
        .filter_map(|c| str_of(&c["code"]))
        .collect();
    if categories.contains(&"vital-signs") {
        return Some(Kind::Vital);
    }
    if categories.contains(&"laboratory") {
        return Some(Kind::Lab);
    }
    if !categories.is_empty() {
        return None;
    }
    // No category: known vital-sign codes are vitals, other measurements labs.
    let codes = loinc_codes(&resource["code"]);
    if is_blood_pressure(resource)
        || codes
            .iter()
            .any(|c| VITAL_ORDER.contains(c) || *c == SYSTOLIC || *c == DIASTOLIC)
    {
        return Some(Kind::Vital);
    }
    resource["valueQuantity"].is_object().then_some(Kind::Lab)
}

fn component_with<'a>(resource: &'a Value, code: &str) -> Option<&'a Value> {
    resource["component"]
        .as_array()?
        .iter()
        .find(|c| loinc_codes(&c["code"]).contains(&code))
}

fn is_blood_pressure(resource: &Value) -> bool {
    component_with(resource, SYSTOLIC).is_some() && component_with(resource, DIASTOLIC).is_some()
}

/// When an Observation was made (effective[x], else issued).
fn observation_date(resource: &Value) -> Option<&str> {
    first_date(
        resource,
        &[
            "effectiveDateTime",
            "effectiveInstant",
            "effectivePeriod.start",
            "issued",
        ],
    )
    .map(|(d, _)| d)
}

/// One dated value of an Observation.
struct Reading<'a> {
    entry: &'a RecordEntry,
    date: Option<&'a str>,
    key: Option<i64>,
    /// The value as written: "7.2 %", "120/80 mmHg", "Systolic 120 mmHg, Diastolic 80 mmHg".
    value: String,
    element: &'static str,
    /// A plain numeric value and its unit, for trends.
    number: Option<(f64, String)>,
}

fn reading(entry: &RecordEntry) -> Option<Reading<'_>> {
    let r = &entry.resource;
    if matches!(status(r), Some("entered-in-error" | "cancelled")) {
        return None;
    }
    let date = observation_date(r);
    let key = date.and_then(date_key);
    if is_blood_pressure(r) {
        let value = blood_pressure_text(r)?;
        return Some(Reading {
            entry,
            date,
            key,
            value,
            element: "component",
            number: None,
        });
    }
    if let Some((value, element)) = value_text(r) {
        let number = match element {
            "valueQuantity" if r["valueQuantity"]["comparator"].is_null() => {
                let n = number_text(&r["valueQuantity"]["value"])?
                    .parse::<f64>()
                    .ok();
                let unit = quantity_unit(&r["valueQuantity"]).unwrap_or("").to_owned();
                n.map(|n| (n, unit))
            }
            "valueInteger" => number_text(&r["valueInteger"])?
                .parse::<f64>()
                .ok()
                .map(|n| (n, String::new())),
            _ => None,
        };
        return Some(Reading {
            entry,
            date,
            key,
            value,
            element,
            number,
        });
    }
    let components: Vec<String> = r["component"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let (value, _) = value_text(c)?;
            Some(format!("{} {value}", concept_name(&c["code"])?))
        })
        .collect();
    (!components.is_empty()).then(|| Reading {
        entry,
        date,
        key,
        value: components.join(", "),
        element: "component",
        number: None,
    })
}

fn blood_pressure_text(resource: &Value) -> Option<String> {
    let part = |code: &str| {
        let q = &component_with(resource, code)?["valueQuantity"];
        Some((
            number_text(&q["value"])?,
            quantity_unit(q).map(str::to_owned),
        ))
    };
    let (systolic, su) = part(SYSTOLIC)?;
    let (diastolic, du) = part(DIASTOLIC)?;
    Some(match (su, du) {
        (Some(su), Some(du)) if su != du => format!("{systolic} {su}/{diastolic} {du}"),
        (Some(u), _) | (None, Some(u)) => format!("{systolic}/{diastolic} {u}"),
        (None, None) => format!("{systolic}/{diastolic}"),
    })
}

/// The group an Observation's values are compared in: blood pressure, its LOINC code, its
/// first coded code, else its name.
fn group_key(resource: &Value) -> Option<String> {
    if is_blood_pressure(resource) {
        return Some("bp".to_owned());
    }
    if let Some(code) = loinc_codes(&resource["code"]).first() {
        return Some(format!("{LOINC}|{code}"));
    }
    preferred_key(&resource["code"])
        .or_else(|| concept_name(&resource["code"]).map(|n| format!("text|{}", n.to_lowercase())))
}

/// Readings grouped by code, each group most recent first.
fn grouped<'a>(
    entries: impl Iterator<Item = &'a RecordEntry>,
) -> BTreeMap<String, Vec<Reading<'a>>> {
    let mut groups: BTreeMap<String, Vec<Reading>> = BTreeMap::new();
    for entry in entries {
        let (Some(key), Some(reading)) = (group_key(&entry.resource), reading(entry)) else {
            continue;
        };
        groups.entry(key).or_default().push(reading);
    }
    for readings in groups.values_mut() {
        readings
            .sort_by(|a, b| recent_first(a.key, b.key).then_with(|| a.entry.id.cmp(&b.entry.id)));
    }
    groups
}

fn observations(record: &Record, kind: Kind) -> Vec<Statement> {
    let entries = of_type(record, "Observation").filter(|e| kind_of(&e.resource) == Some(kind));
    let mut rows: Vec<(usize, Option<i64>, String, Statement)> = grouped(entries)
        .into_iter()
        .filter_map(|(key, readings)| {
            let latest = readings.first()?;
            let name = reading_name(latest)?;
            let rank = match kind {
                Kind::Vital if key == "bp" => 0,
                Kind::Vital => VITAL_ORDER
                    .iter()
                    .position(|c| key == format!("{LOINC}|{c}"))
                    .map_or(VITAL_ORDER.len() + 1, |p| p + 1),
                Kind::Lab => 0,
            };
            let statement = reading_statement(&name, latest, readings.get(1));
            Some((rank, latest.key, name.to_lowercase(), statement))
        })
        .collect();
    rows.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| match kind {
                Kind::Lab => recent_first(a.1, b.1),
                Kind::Vital => Ordering::Equal,
            })
            .then_with(|| a.2.cmp(&b.2))
    });
    rows.into_iter().map(|(_, _, _, s)| s).collect()
}

fn reading_name(reading: &Reading) -> Option<String> {
    if reading.element == "component" && is_blood_pressure(&reading.entry.resource) {
        return Some("Blood pressure".to_owned());
    }
    concept_name(&reading.entry.resource["code"])
}

/// "Hemoglobin A1c 7.2 % on 2026-03-01 (flagged high), up from 6.9 % on 2025-11-02."
fn reading_statement(name: &str, latest: &Reading, previous: Option<&Reading>) -> Statement {
    let mut text = format!("{name} {}", latest.value);
    if let Some(date) = latest.date {
        text.push_str(&format!(" on {}", date_part(date)));
    }
    let mut citations = vec![cite(latest.entry, latest.element)];
    if let Some((flag, element)) = abnormal_flag(latest) {
        text.push_str(&format!(" ({flag})"));
        citations.push(cite(latest.entry, element));
    }
    if status(&latest.entry.resource) == Some("preliminary") {
        text.push_str(" (preliminary)");
    }
    if let Some(previous) = previous {
        let direction = match (&latest.number, &previous.number) {
            (Some((now, unit)), Some((before, before_unit))) if unit == before_unit => {
                match now.partial_cmp(before) {
                    Some(Ordering::Greater) => "up from",
                    Some(Ordering::Less) => "down from",
                    _ => "unchanged from",
                }
            }
            _ => "previously",
        };
        text.push_str(&format!(", {direction} {}", previous.value));
        if let Some(date) = previous.date {
            text.push_str(&format!(" on {}", date_part(date)));
        }
        citations.push(cite(previous.entry, previous.element));
    }
    text.push('.');
    statement(text, citations)
}

/// Why a value is abnormal: its interpretation ("flagged high"), a component's
/// interpretation ("systolic flagged high"), else its reference range ("above the reference
/// range 4.0–5.6 %"); with the element that says so.
fn abnormal_flag(reading: &Reading) -> Option<(String, &'static str)> {
    let r = &reading.entry.resource;
    if let Some(word) = interpretation_text(r) {
        return Some((format!("flagged {word}"), "interpretation"));
    }
    if reading.element == "component" {
        let flags: Vec<String> = r["component"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| {
                let word = interpretation_text(c)?;
                let codes = loinc_codes(&c["code"]);
                let name = if codes.contains(&SYSTOLIC) {
                    "systolic".to_owned()
                } else if codes.contains(&DIASTOLIC) {
                    "diastolic".to_owned()
                } else {
                    concept_name(&c["code"])?
                };
                Some(format!("{name} flagged {word}"))
            })
            .collect();
        return (!flags.is_empty()).then(|| (flags.join(", "), "component"));
    }
    let (value, unit) = reading.number.as_ref()?;
    if reading.element != "valueQuantity" {
        return None;
    }
    let range = &r["referenceRange"][0];
    let bound = |key: &str| {
        let q = &range[key];
        let text = number_text(&q["value"])?;
        let number = text.parse::<f64>().ok()?;
        match quantity_unit(q) {
            Some(u) if !unit.is_empty() && u != unit.as_str() => None,
            u => Some((text, number, u.unwrap_or(unit).to_owned())),
        }
    };
    let (low, high) = (bound("low"), bound("high"));
    let with_unit = |text: &str, unit: &str| {
        if unit.is_empty() {
            text.to_owned()
        } else {
            format!("{text} {unit}")
        }
    };
    let range_text = match (&low, &high) {
        (Some((l, _, _)), Some((h, _, u))) => Some(with_unit(&format!("{l}–{h}"), u)),
        _ => None,
    };
    if let Some((h, hn, u)) = &high
        && value > hn
    {
        let text = match &range_text {
            Some(range) => format!("above the reference range {range}"),
            None => format!("above the reference range, upper limit {}", with_unit(h, u)),
        };
        return Some((text, "referenceRange[0]"));
    }
    if let Some((l, ln, u)) = &low
        && value < ln
    {
        let text = match &range_text {
            Some(range) => format!("below the reference range {range}"),
            None => format!("below the reference range, lower limit {}", with_unit(l, u)),
        };
        return Some((text, "referenceRange[0]"));
    }
    None
}

// ---------------------------------------------------------------------------------------
// Procedures and immunizations.

/// The most recent dated events of a type: `(name, statement)` by date, most recent first.
fn events(
    record: &Record,
    resource_type: &str,
    concept: &str,
    excluded: &[&str],
    dates: &[&'static str],
    free_text_date: &str,
) -> Vec<Statement> {
    let mut list: Vec<(Option<i64>, String, Statement)> = Vec::new();
    for entry in of_type(record, resource_type) {
        let r = &entry.resource;
        if status(r).is_some_and(|s| excluded.contains(&s)) {
            continue;
        }
        let Some(name) = concept_name(&r[concept]) else {
            continue;
        };
        let mut citations = vec![cite(entry, concept)];
        let date = first_date(r, dates);
        let text = if let Some((date, path)) = date {
            citations.push(cite(entry, path));
            format!("{name} on {}.", date_part(date))
        } else if let Some(when) = str_of(&r[free_text_date]) {
            citations.push(cite(entry, free_text_date));
            format!("{name} ({}).", one_line(when))
        } else {
            format!("{name}, date not recorded.")
        };
        list.push((
            date.and_then(|(d, _)| date_key(d)),
            name.to_lowercase(),
            statement(text, citations),
        ));
    }
    list.sort_by(|a, b| recent_first(a.0, b.0).then_with(|| a.1.cmp(&b.1)));
    list.into_iter().take(RECENT).map(|(_, _, s)| s).collect()
}

fn procedures(record: &Record) -> Vec<Statement> {
    events(
        record,
        "Procedure",
        "code",
        &["entered-in-error", "not-done", "preparation"],
        &["performedDateTime", "performedPeriod.start"],
        "performedString",
    )
}

fn immunizations(record: &Record) -> Vec<Statement> {
    events(
        record,
        "Immunization",
        "vaccineCode",
        &["entered-in-error", "not-done"],
        &["occurrenceDateTime"],
        "occurrenceString",
    )
}

// ---------------------------------------------------------------------------------------
// Notes.

fn notes(record: &Record) -> Vec<Statement> {
    let mut list: Vec<(Option<i64>, &RecordEntry, Option<&str>)> = Vec::new();
    for &entry in record {
        let r = &entry.resource;
        let (excluded, dates): (&[&str], &[&'static str]) = match entry.resource_type.as_str() {
            "DocumentReference" => (
                &["entered-in-error", "superseded"],
                &["date", "context.period.start"],
            ),
            "DiagnosticReport" => (
                &["entered-in-error", "cancelled"],
                &["effectiveDateTime", "effectivePeriod.start", "issued"],
            ),
            _ => continue,
        };
        if status(r).is_some_and(|s| excluded.contains(&s))
            || str_of(&r["docStatus"]) == Some("entered-in-error")
        {
            continue;
        }
        let date = first_date(r, dates).map(|(d, _)| d);
        list.push((date.and_then(date_key), entry, date));
    }
    list.sort_by(|a, b| recent_first(a.0, b.0).then_with(|| a.1.id.cmp(&b.1.id)));
    list.into_iter()
        .filter_map(|(_, entry, date)| note_statement(entry, date))
        .take(NOTES)
        .collect()
}

fn note_statement(entry: &RecordEntry, date: Option<&str>) -> Option<Statement> {
    let r = &entry.resource;
    let note = note_attachment(r)?;
    let (start, end, cut) = highlight(&note.text)?;
    let quote = note.text.get(start..end)?;
    let title = if entry.resource_type == "DocumentReference" {
        concept_name(&r["type"])
            .or_else(|| str_of(&r["description"]).map(one_line))
            .or_else(|| r["category"].get(0).and_then(concept_name))
            .unwrap_or_else(|| "Note".to_owned())
    } else {
        concept_name(&r["code"]).unwrap_or_else(|| "Report".to_owned())
    };
    let mut text = match date {
        Some(date) => format!("{title} ({}): \"{quote}\"", date_part(date)),
        None => format!("{title}: \"{quote}\""),
    };
    if cut {
        text.push_str(" …");
    }
    let mut citation = cite(entry, &note.element);
    citation.span = Some((start, end));
    Some(statement(text, vec![citation]))
}

/// The sentence a note is summed up by: the first of its Assessment, else Impression, else
/// Plan section, else its first; without a list marker; cut between words when long.
/// `(start, end, cut)` in the note's text.
fn highlight(text: &str) -> Option<(usize, usize, bool)> {
    let sections = note_sections(text);
    let chosen = ["assessment", "impression", "plan"]
        .iter()
        .find_map(|want| {
            sections
                .iter()
                .find(|s| s.name.to_lowercase().contains(want))
        })
        .or_else(|| sections.first())?;
    let (mut start, end) = *sentences(text, chosen.start, chosen.end).first()?;
    start += list_marker_len(text.get(start..end)?);
    let (start, mut end) = trim_range(text, start, end)?;
    let mut cut = false;
    if end - start > MAX_QUOTE_BYTES {
        let mut limit = start + MAX_QUOTE_BYTES;
        while !text.is_char_boundary(limit) {
            limit -= 1;
        }
        end = match text.get(start..limit)?.rfind(char::is_whitespace) {
            Some(space) if space > 0 => start + space,
            _ => limit,
        };
        end = trim_range(text, start, end)?.1;
        cut = true;
    }
    Some((start, end, cut))
}

// ---------------------------------------------------------------------------------------
// Questions.

/// A lab test a question may name: its words, LOINC codes, and words that, in an
/// Observation's name, mean another test.
struct LabConcept {
    synonyms: &'static [&'static str],
    loinc: &'static [&'static str],
    excluded: &'static [&'static str],
}

/// Most specific first: "hemoglobin a1c" must not read as "hemoglobin".
const LAB_CONCEPTS: &[LabConcept] = &[
    LabConcept {
        synonyms: &[
            "a1c",
            "hba1c",
            "hgba1c",
            "hemoglobin a1c",
            "haemoglobin a1c",
            "hgb a1c",
            "glycated hemoglobin",
            "glycosylated hemoglobin",
            "glycohemoglobin",
        ],
        loinc: &["4548-4", "17856-6"],
        excluded: &[],
    },
    LabConcept {
        synonyms: &["ldl", "ldl c", "ldl cholesterol", "low density lipoprotein"],
        loinc: &["13457-7", "18262-6", "2089-1"],
        excluded: &[],
    },
    LabConcept {
        synonyms: &[
            "egfr",
            "gfr",
            "glomerular filtration rate",
            "glomerular filtration",
        ],
        loinc: &["33914-3", "62238-1", "98979-8"],
        excluded: &[],
    },
    LabConcept {
        synonyms: &["potassium", "k"],
        loinc: &["2823-3", "6298-4"],
        excluded: &["urine"],
    },
    LabConcept {
        synonyms: &["creatinine", "creat", "cr"],
        loinc: &["2160-0", "38483-4"],
        excluded: &["urine", "clearance", "ratio", "albumin", "microalbumin"],
    },
    LabConcept {
        synonyms: &["glucose", "blood sugar", "sugar"],
        loinc: &["2345-7", "2339-0"],
        excluded: &["urine", "tolerance"],
    },
    LabConcept {
        synonyms: &["sodium", "na"],
        loinc: &["2951-2", "2947-0"],
        excluded: &["urine"],
    },
    LabConcept {
        synonyms: &["tsh", "thyrotropin", "thyroid stimulating hormone"],
        loinc: &["3016-3"],
        excluded: &[],
    },
    LabConcept {
        synonyms: &["hemoglobin", "haemoglobin", "hgb", "hb"],
        loinc: &["718-7"],
        excluded: &[
            "a1c",
            "hba1c",
            "glycated",
            "glycosylated",
            "corpuscular",
            "urine",
            "mch",
            "mchc",
        ],
    },
];

/// Words of a question that are not the name of what it asks about.
#[rustfmt::skip]
const QUESTION_WORDS: &[&str] = &[
    "what", "whats", "when", "where", "which", "who", "how", "was", "were", "is",
    "are", "be", "been", "the", "a", "an", "of", "for", "to", "in",
    "on", "at", "by", "and", "or", "her", "his", "their", "its", "it",
    "he", "she", "they", "them", "him", "this", "that", "patient", "patients", "pt",
    "s", "last", "latest", "most", "recent", "recently", "newest", "current", "currently", "value",
    "values", "level", "levels", "result", "results", "lab", "labs", "test", "tests", "tested",
    "reading", "readings", "measurement", "measured", "did", "does", "do", "have", "has", "had",
    "show", "me", "tell", "about", "my", "your", "our", "much", "many", "check",
    "checked", "done", "get", "got", "give", "please", "there", "any", "date", "time",
    "ago", "previous", "prior", "recorded", "record", "taken", "drawn", "can", "you", "find",
    "see", "look", "up", "ever", "with", "from", "history", "known", "list", "all",
    "active", "now", "still", "right", "no", "not", "if", "so", "should", "would",
    "could", "we", "i", "us", "these", "those", "some", "whether", "being", "since",
    "anything", "something", "today", "yesterday", "year", "years", "month", "months", "during",
];

const ALLERGY_WORDS: &[&str] = &[
    "allergy",
    "allergies",
    "allergic",
    "allergen",
    "allergens",
    "intolerance",
    "intolerances",
    "intolerant",
    "reaction",
    "reactions",
];
const ADMISSION_WORDS: &[&str] = &[
    "admission",
    "admissions",
    "admitted",
    "admit",
    "discharged",
    "discharge",
    "hospitalized",
    "hospitalised",
    "hospitalization",
    "hospitalisation",
    "hospital stay",
    "inpatient",
];
const MEDICATION_WORDS: &[&str] = &[
    "medication",
    "medications",
    "medicine",
    "medicines",
    "meds",
    "med",
    "taking",
    "take",
    "takes",
    "drug",
    "drugs",
    "prescription",
    "prescriptions",
    "prescribed",
];
const PROBLEM_WORDS: &[&str] = &[
    "problem",
    "problems",
    "diagnosis",
    "diagnoses",
    "diagnosed",
    "condition",
    "conditions",
    "problem list",
];

fn route(record: &Record, words: &str) -> Vec<Statement> {
    let year = year_of(words);
    if has_any(words, ALLERGY_WORDS) {
        return narrowed(allergies(record), &content_words(words, ALLERGY_WORDS));
    }
    if has_any(words, ADMISSION_WORDS) {
        return last_admission(record, year);
    }
    // One- and two-letter synonyms ("k", "na", "cr", "hb") only count next to a word that
    // makes the question about a test.
    let about_a_test = has_any(
        words,
        &[
            "last", "latest", "recent", "level", "value", "result", "lab", "labs", "test",
        ],
    );
    if let Some(concept) = LAB_CONCEPTS.iter().find(|c| {
        c.synonyms
            .iter()
            .any(|s| has_phrase(words, s) && (s.len() > 2 || about_a_test))
    }) {
        return latest_lab(record, concept, year);
    }
    if has_any(words, MEDICATION_WORDS) {
        return narrowed(medications(record), &content_words(words, MEDICATION_WORDS));
    }
    if has_any(words, PROBLEM_WORDS) {
        return narrowed(problems(record), &content_words(words, PROBLEM_WORDS));
    }
    // A name: an active problem, a medication, an allergy, a test.
    let wanted = content_words(words, &[]);
    if wanted.is_empty() {
        return Vec::new();
    }
    let mut found: Vec<Statement> = [problems(record), medications(record), allergies(record)]
        .into_iter()
        .flatten()
        .filter(|s| holds_all(&words_of(&s.text), &wanted))
        .collect();
    found.extend(named_tests(record, &wanted, year));
    found.truncate(MAX_MATCHED);
    found
}

/// The words of a question that are not question words (nor `also_ignored`, nor a year).
fn content_words<'w>(words: &'w str, also_ignored: &[&str]) -> Vec<&'w str> {
    words
        .split_whitespace()
        .filter(|w| {
            w.len() > 1 && !QUESTION_WORDS.contains(w) && !also_ignored.contains(w) && !is_year(w)
        })
        .collect()
}

fn holds_all(text_words: &str, wanted: &[&str]) -> bool {
    wanted.iter().all(|w| has_phrase(text_words, w))
}

/// The statements naming every wanted word ("allergic to penicillin"), or all of them when
/// none does (the list is the answer then).
fn narrowed(statements: Vec<Statement>, wanted: &[&str]) -> Vec<Statement> {
    if wanted.is_empty() {
        return statements;
    }
    let matching: Vec<Statement> = statements
        .iter()
        .filter(|s| holds_all(&words_of(&s.text), wanted))
        .cloned()
        .collect();
    if matching.is_empty() {
        statements
    } else {
        matching
    }
}

fn is_year(word: &str) -> bool {
    word.len() == 4
        && word.chars().all(|c| c.is_ascii_digit())
        && (word.starts_with("19") || word.starts_with("20"))
}

/// A year the question names ("A1c in 2024"): answers are then about that year.
fn year_of(words: &str) -> Option<&str> {
    words.split_whitespace().find(|w| is_year(w))
}

fn in_year(date: Option<&str>, year: Option<&str>) -> bool {
    match year {
        Some(year) => date.is_some_and(|d| d.trim_start().starts_with(year)),
        None => true,
    }
}

/// The words of an Observation's name (text and every coding's display).
fn observation_words(resource: &Value) -> String {
    let code = &resource["code"];
    let mut names: Vec<&str> = str_of(&code["text"]).into_iter().collect();
    names.extend(
        code["coding"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| str_of(&c["display"])),
    );
    words_of(&names.join(" "))
}

fn latest_lab(record: &Record, concept: &LabConcept, year: Option<&str>) -> Vec<Statement> {
    let observations: Vec<&RecordEntry> = of_type(record, "Observation")
        .filter(|e| in_year(observation_date(&e.resource), year))
        .collect();
    let by_code: Vec<&RecordEntry> = observations
        .iter()
        .copied()
        .filter(|e| {
            loinc_codes(&e.resource["code"])
                .iter()
                .any(|c| concept.loinc.contains(c))
        })
        .collect();
    let candidates = if by_code.iter().any(|e| reading(e).is_some()) {
        by_code
    } else {
        observations
            .into_iter()
            .filter(|e| {
                let name = observation_words(&e.resource);
                concept.synonyms.iter().any(|s| has_phrase(&name, s))
                    && !concept.excluded.iter().any(|x| has_phrase(&name, x))
            })
            .collect()
    };
    latest_per_test(candidates.into_iter(), 1)
}

/// The latest value of each test among `entries` (with its trend), most recent tests first.
fn latest_per_test<'a>(
    entries: impl Iterator<Item = &'a RecordEntry>,
    limit: usize,
) -> Vec<Statement> {
    let mut rows: Vec<(Option<i64>, String, Statement)> = grouped(entries)
        .into_values()
        .filter_map(|readings| {
            let latest = readings.first()?;
            let name = reading_name(latest)?;
            let statement = reading_statement(&name, latest, readings.get(1));
            Some((latest.key, latest.entry.id.clone(), statement))
        })
        .collect();
    rows.sort_by(|a, b| recent_first(a.0, b.0).then_with(|| a.1.cmp(&b.1)));
    rows.into_iter().take(limit).map(|(_, _, s)| s).collect()
}

/// The latest value of each test whose name holds every wanted word ("last ferritin").
fn named_tests(record: &Record, wanted: &[&str], year: Option<&str>) -> Vec<Statement> {
    let matching = of_type(record, "Observation").filter(|e| {
        in_year(observation_date(&e.resource), year)
            && holds_all(&observation_words(&e.resource), wanted)
    });
    latest_per_test(matching, MAX_MATCHED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use chrono::TimeZone;
    use serde_json::json;

    use crate::clinical::chunk::note_text;

    fn entry(resource: Value) -> RecordEntry {
        RecordEntry {
            resource_type: resource["resourceType"].as_str().unwrap().to_owned(),
            id: resource["id"].as_str().unwrap().to_owned(),
            version_id: 3,
            resource,
        }
    }

    /// JSON parsed from text, so numbers keep their written form (7.20 stays 7.20).
    fn parse(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0).unwrap()
    }

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    fn section_of<'a>(summary: &'a Summary, code: &str) -> &'a Section {
        summary.sections.iter().find(|s| s.code == code).unwrap()
    }

    fn texts(section: &Section) -> Vec<&str> {
        section.statements.iter().map(|s| s.text.as_str()).collect()
    }

    /// Resolves a FHIRPath-like element path (`dosageInstruction[0].text`).
    fn element_at<'a>(resource: &'a Value, path: &str) -> &'a Value {
        path.split('.')
            .fold(resource, |value, step| match step.split_once('[') {
                Some((name, index)) => {
                    let i: usize = index.trim_end_matches(']').parse().unwrap();
                    &value[name][i]
                }
                None => &value[step],
            })
    }

    /// Numbers, dates and codes of a statement: "2026-03-01", "7.20", "E11.9", "4548-4".
    fn tokens(text: &str) -> Vec<String> {
        let re = regex::Regex::new(r"[A-Za-z]*\d+(?:[.\-:]\d+)*").unwrap();
        re.find_iter(text)
            .map(|m| m.as_str().to_owned())
            .filter(|t| t.chars().any(|c| c.is_ascii_digit()))
            .collect()
    }

    /// Citation validity (resource, version, element and span exist) and support precision
    /// (every number, date and code of the statement appears in what it cites: the cited
    /// resources' JSON, and the note text when a span is cited).
    fn assert_supported(record: &[RecordEntry], statement: &Statement) {
        assert!(
            !statement.citations.is_empty(),
            "uncited: {}",
            statement.text
        );
        let mut support = String::new();
        for citation in &statement.citations {
            let cited = record
                .iter()
                .find(|e| e.reference() == citation.reference)
                .unwrap_or_else(|| panic!("{} cites a missing resource", statement.text));
            assert_eq!(citation.version_id, Some(cited.version_id));
            let element = citation.element.as_deref().unwrap();
            assert!(
                !element_at(&cited.resource, element).is_null(),
                "{}: element {element} absent",
                statement.text
            );
            support.push_str(&serde_json::to_string(&cited.resource).unwrap());
            if let Some((s, e)) = citation.span {
                let note = note_text(&cited.resource).unwrap();
                assert!(note.get(s..e).is_some(), "bad span in {}", statement.text);
                support.push_str(&note);
            }
        }
        for token in tokens(&statement.text) {
            assert!(
                support.contains(&token),
                "{:?} of {:?} is not in the cited resources",
                token,
                statement.text
            );
        }
    }

    fn assert_all_supported(record: &[RecordEntry], summary: &Summary) {
        for section in &summary.sections {
            assert_eq!(section.statements.is_empty(), section.empty_text.is_some());
            for statement in &section.statements {
                assert_supported(record, statement);
            }
        }
    }

    fn condition(
        id: &str,
        status: &str,
        verification: &str,
        code: &str,
        display: &str,
        onset: &str,
    ) -> Value {
        json!({
            "resourceType": "Condition", "id": id,
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": status}]},
            "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": verification}]},
            "code": {"coding": [
                {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": code, "display": display}
            ], "text": display},
            "onsetDateTime": onset
        })
    }

    fn lab(
        id: &str,
        loinc: &str,
        name: &str,
        value: &str,
        unit: &str,
        date: &str,
        extra: &str,
    ) -> Value {
        parse(&format!(
            r#"{{"resourceType": "Observation", "id": "{id}", "status": "final",
                "category": [{{"coding": [{{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}}]}}],
                "code": {{"coding": [{{"system": "http://loinc.org", "code": "{loinc}", "display": "{name}"}}], "text": "{name}"}},
                "valueQuantity": {{"value": {value}, "unit": "{unit}", "system": "http://unitsofmeasure.org"}},
                "effectiveDateTime": "{date}"{extra}}}"#
        ))
    }

    fn vital(id: &str, loinc: &str, name: &str, value: &str, unit: &str, date: &str) -> Value {
        parse(&format!(
            r#"{{"resourceType": "Observation", "id": "{id}", "status": "final",
                "category": [{{"coding": [{{"code": "vital-signs"}}]}}],
                "code": {{"coding": [{{"system": "http://loinc.org", "code": "{loinc}", "display": "{name}"}}]}},
                "valueQuantity": {{"value": {value}, "unit": "{unit}"}},
                "effectiveDateTime": "{date}"}}"#
        ))
    }

    fn blood_pressure(id: &str, systolic: &str, diastolic: &str, date: &str) -> Value {
        parse(&format!(
            r#"{{"resourceType": "Observation", "id": "{id}", "status": "final",
                "category": [{{"coding": [{{"code": "vital-signs"}}]}}],
                "code": {{"coding": [{{"system": "http://loinc.org", "code": "85354-9", "display": "Blood pressure panel with all children optional"}}]}},
                "component": [
                  {{"code": {{"coding": [{{"system": "http://loinc.org", "code": "8480-6", "display": "Systolic blood pressure"}}]}},
                   "valueQuantity": {{"value": {systolic}, "unit": "mmHg", "code": "mm[Hg]"}},
                   "interpretation": [{{"coding": [{{"code": "H"}}]}}]}},
                  {{"code": {{"coding": [{{"system": "http://loinc.org", "code": "8462-4", "display": "Diastolic blood pressure"}}]}},
                   "valueQuantity": {{"value": {diastolic}, "unit": "mmHg", "code": "mm[Hg]"}}}}
                ],
                "effectiveDateTime": "{date}"}}"#
        ))
    }

    fn note(id: &str, date: &str, text: &str) -> Value {
        json!({
            "resourceType": "DocumentReference", "id": id, "status": "current",
            "type": {"coding": [{"system": "http://loinc.org", "code": "11506-3", "display": "Progress note"}]},
            "date": date,
            "content": [{"attachment": {"contentType": "text/plain", "data": b64(text)}}]
        })
    }

    fn full_record() -> Vec<RecordEntry> {
        let resources = vec![
            condition(
                "dm",
                "active",
                "confirmed",
                "E11.9",
                "Type 2 diabetes mellitus",
                "2019-05-02",
            ),
            condition(
                "htn",
                "active",
                "confirmed",
                "I10",
                "Essential hypertension",
                "2021-01-15T00:00:00Z",
            ),
            condition(
                "old",
                "resolved",
                "confirmed",
                "J02.9",
                "Acute pharyngitis",
                "2024-02-01",
            ),
            condition(
                "err",
                "active",
                "entered-in-error",
                "C34.90",
                "Lung cancer",
                "2025-01-01",
            ),
            condition(
                "ref",
                "active",
                "refuted",
                "I21.9",
                "Myocardial infarction",
                "2025-02-01",
            ),
            json!({"resourceType": "MedicationRequest", "id": "met", "status": "active", "intent": "order",
                "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "860975", "display": "metformin hydrochloride 500 MG Oral Tablet"}]},
                "dosageInstruction": [{"text": "1 tablet by mouth twice daily"}], "authoredOn": "2024-01-10"}),
            json!({"resourceType": "MedicationRequest", "id": "lis", "status": "on-hold", "intent": "order",
                "medicationReference": {"reference": "Medication/lisinopril"}}),
            json!({"resourceType": "Medication", "id": "lisinopril", "code": {"text": "Lisinopril 10 mg tablet"}}),
            json!({"resourceType": "MedicationRequest", "id": "amox", "status": "completed", "intent": "order",
                "medicationCodeableConcept": {"text": "Amoxicillin 500 mg capsule"}}),
            json!({"resourceType": "MedicationRequest", "id": "bad", "status": "entered-in-error", "intent": "order",
                "medicationCodeableConcept": {"text": "Warfarin 5 mg tablet"}}),
            json!({"resourceType": "MedicationStatement", "id": "asp", "status": "active",
                "medicationReference": {"reference": "#m1"},
                "contained": [{"resourceType": "Medication", "id": "m1", "code": {"text": "Aspirin 81 mg tablet"}}],
                "dosage": [{"text": "daily"}]}),
            json!({"resourceType": "AllergyIntolerance", "id": "pcn",
                "clinicalStatus": {"coding": [{"code": "active"}]},
                "verificationStatus": {"coding": [{"code": "confirmed"}]},
                "criticality": "high",
                "code": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "7980", "display": "Penicillin G"}]},
                "reaction": [{"manifestation": [{"text": "Hives"}, {"coding": [{"display": "Anaphylaxis"}]}]}]}),
            json!({"resourceType": "AllergyIntolerance", "id": "latex",
                "clinicalStatus": {"coding": [{"code": "active"}]}, "code": {"text": "Latex"}}),
            json!({"resourceType": "AllergyIntolerance", "id": "gone",
                "clinicalStatus": {"coding": [{"code": "resolved"}]}, "code": {"text": "Eggs"}}),
            json!({"resourceType": "AllergyIntolerance", "id": "oops",
                "clinicalStatus": {"coding": [{"code": "active"}]},
                "verificationStatus": {"coding": [{"code": "entered-in-error"}]}, "code": {"text": "Sulfa"}}),
            json!({"resourceType": "Encounter", "id": "adm", "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP", "display": "inpatient encounter"},
                "type": [{"text": "Hospital admission"}],
                "period": {"start": "2026-10-01T14:30:00Z", "end": "2026-10-04T10:00:00Z"}}),
            json!({"resourceType": "Encounter", "id": "amb", "status": "finished",
                "class": {"code": "AMB"}, "type": [{"text": "Office visit"}],
                "reasonCode": [{"text": "Diabetes follow-up"}],
                "period": {"start": "2026-03-01T09:00:00-05:00", "end": "2026-03-01T09:30:00-05:00"}}),
            lab(
                "a1c-1",
                "4548-4",
                "Hemoglobin A1c",
                "6.9",
                "%",
                "2025-11-02",
                "",
            ),
            lab(
                "a1c-2",
                "4548-4",
                "Hemoglobin A1c",
                "7.20",
                "%",
                "2026-03-01T08:00:00Z",
                r#", "interpretation": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": "H"}]}]"#,
            ),
            lab(
                "ldl-1",
                "13457-7",
                "LDL Cholesterol",
                "131",
                "mg/dL",
                "2025-06-01",
                "",
            ),
            lab(
                "ldl-2",
                "13457-7",
                "LDL Cholesterol",
                "98",
                "mg/dL",
                "2026-03-01",
                "",
            ),
            lab(
                "k-1",
                "2823-3",
                "Potassium",
                "5.9",
                "mmol/L",
                "2026-03-01",
                r#", "referenceRange": [{"low": {"value": 3.5, "unit": "mmol/L"}, "high": {"value": 5.1, "unit": "mmol/L"}}]"#,
            ),
            lab(
                "na-1",
                "2951-2",
                "Sodium",
                "130",
                "mmol/L",
                "2026-02-01",
                r#", "referenceRange": [{"low": {"value": 135}}]"#,
            ),
            lab(
                "cr-err",
                "2160-0",
                "Creatinine",
                "9.9",
                "mg/dL",
                "2026-03-05",
                r#", "status": "entered-in-error""#,
            ),
            blood_pressure("bp-1", "128", "82", "2025-11-02"),
            blood_pressure("bp-2", "142", "91", "2026-03-01"),
            vital("hr-1", "8867-4", "Heart rate", "72", "/min", "2026-03-01"),
            json!({"resourceType": "Procedure", "id": "colo", "status": "completed",
                "code": {"text": "Colonoscopy"}, "performedDateTime": "2024-05-20"}),
            json!({"resourceType": "Procedure", "id": "nd", "status": "not-done",
                "code": {"text": "Appendectomy"}, "performedDateTime": "2025-05-20"}),
            json!({"resourceType": "Immunization", "id": "flu", "status": "completed",
                "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140", "display": "Influenza, seasonal, injectable, preservative free"}]},
                "occurrenceDateTime": "2025-10-15"}),
            note(
                "n1",
                "2026-03-01T10:00:00Z",
                "Follow-up for diabetes.\nHPI: Doing well on metformin 500 mg.\n\nASSESSMENT:\n1. Type 2 diabetes, A1c 7.20, above goal. Will intensify.\nPlan: Recheck in 3 months.\n",
            ),
        ];
        resources.into_iter().map(entry).collect()
    }

    #[test]
    fn summary_has_every_section_in_order_and_every_statement_is_supported() {
        let record = full_record();
        let summary = summarize(&record, now());
        assert_eq!(summary.engine, ENGINE);
        let codes: Vec<&str> = summary.sections.iter().map(|s| s.code.as_str()).collect();
        assert_eq!(
            codes,
            [
                "problems",
                "medications",
                "allergies",
                "encounters",
                "vitals",
                "labs",
                "procedures",
                "immunizations",
                "notes"
            ]
        );
        assert_all_supported(&record, &summary);
        // Deterministic whatever the record's order.
        let mut reversed = record.clone();
        reversed.reverse();
        assert_eq!(summarize(&reversed, now()), summary);
    }

    #[test]
    fn problems_are_active_with_code_and_onset_and_skip_errors() {
        let record = full_record();
        let summary = summarize(&record, now());
        let problems = section_of(&summary, "problems");
        assert_eq!(problems.title, "Active problems");
        assert_eq!(
            texts(problems),
            [
                "Essential hypertension (ICD-10-CM I10), since 2021-01-15.",
                "Type 2 diabetes mellitus (ICD-10-CM E11.9), since 2019-05-02.",
            ]
        );
        let citations = &problems.statements[1].citations;
        assert_eq!(citations[0].reference, "Condition/dm");
        assert_eq!(citations[0].version_id, Some(3));
        assert_eq!(citations[0].element.as_deref(), Some("code"));
        assert_eq!(citations[1].element.as_deref(), Some("onsetDateTime"));
    }

    #[test]
    fn medications_are_active_or_on_hold_with_dosage() {
        let record = full_record();
        let summary = summarize(&record, now());
        let meds = section_of(&summary, "medications");
        assert_eq!(
            texts(meds),
            [
                "Aspirin 81 mg tablet — daily.",
                "Lisinopril 10 mg tablet (on hold).",
                "metformin hydrochloride 500 MG Oral Tablet — 1 tablet by mouth twice daily.",
            ]
        );
        let metformin = &meds.statements[2].citations;
        assert_eq!(
            metformin[0].element.as_deref(),
            Some("medicationCodeableConcept")
        );
        assert_eq!(
            metformin[1].element.as_deref(),
            Some("dosageInstruction[0].text")
        );
        assert_eq!(
            meds.statements[1].citations[1].reference,
            "Medication/lisinopril"
        );
        assert_eq!(
            meds.statements[0].citations[0].element.as_deref(),
            Some("contained[0].code")
        );
    }

    #[test]
    fn allergies_skip_resolved_and_errors() {
        let record = full_record();
        let summary = summarize(&record, now());
        assert_eq!(
            texts(section_of(&summary, "allergies")),
            [
                "Penicillin G (high criticality): Hives, Anaphylaxis.",
                "Latex."
            ]
        );
    }

    #[test]
    fn encounters_show_admissions_and_visits_most_recent_first() {
        let record = full_record();
        let summary = summarize(&record, now());
        assert_eq!(
            texts(section_of(&summary, "encounters")),
            [
                "Admitted 2026-10-01, discharged 2026-10-04 (inpatient; Hospital admission).",
                "Ambulatory encounter on 2026-03-01 (Office visit) for Diabetes follow-up.",
            ]
        );
    }

    #[test]
    fn current_admission_and_older_admissions_beyond_the_recent_visits() {
        let mut resources = vec![
            json!({"resourceType": "Encounter", "id": "now", "status": "in-progress",
                "class": {"code": "IMP"}, "period": {"start": "2026-11-20T08:00:00Z"}}),
            json!({"resourceType": "Encounter", "id": "old-adm", "status": "finished",
                "class": {"code": "IMP"}, "period": {"start": "2020-01-02", "end": "2020-01-05"}}),
        ];
        for day in 10..17 {
            resources.push(
                json!({"resourceType": "Encounter", "id": format!("v{day}"), "status": "finished",
                "class": {"code": "AMB"}, "period": {"start": format!("2025-06-{day}")}}),
            );
        }
        let record: Vec<RecordEntry> = resources.into_iter().map(entry).collect();
        let summary = summarize(&record, now());
        let encounters = texts(section_of(&summary, "encounters"));
        assert_eq!(encounters.len(), RECENT + 1);
        assert_eq!(
            encounters[0],
            "Currently admitted since 2026-11-20 (inpatient)."
        );
        assert_eq!(encounters[1], "Ambulatory encounter on 2025-06-16.");
        assert_eq!(
            encounters[RECENT],
            "Admitted 2020-01-02, discharged 2020-01-05 (inpatient)."
        );
        assert_all_supported(&record, &summary);
    }

    #[test]
    fn vitals_show_blood_pressure_components_trend_and_flags() {
        let record = full_record();
        let summary = summarize(&record, now());
        let vitals = section_of(&summary, "vitals");
        assert_eq!(
            texts(vitals),
            [
                "Blood pressure 142/91 mmHg on 2026-03-01 (systolic flagged high), previously 128/82 mmHg on 2025-11-02.",
                "Heart rate 72 /min on 2026-03-01.",
            ]
        );
        let bp = &vitals.statements[0].citations;
        assert_eq!(bp[0].reference, "Observation/bp-2");
        assert_eq!(bp[0].element.as_deref(), Some("component"));
        assert_eq!(bp[2].reference, "Observation/bp-1");
    }

    #[test]
    fn labs_show_latest_value_as_written_with_trend_and_abnormal_flags() {
        let record = full_record();
        let summary = summarize(&record, now());
        let labs = section_of(&summary, "labs");
        assert_eq!(
            texts(labs),
            [
                "Hemoglobin A1c 7.20 % on 2026-03-01 (flagged high), up from 6.9 % on 2025-11-02.",
                "LDL Cholesterol 98 mg/dL on 2026-03-01, down from 131 mg/dL on 2025-06-01.",
                "Potassium 5.9 mmol/L on 2026-03-01 (above the reference range 3.5–5.1 mmol/L).",
                "Sodium 130 mmol/L on 2026-02-01 (below the reference range, lower limit 135 mmol/L).",
            ]
        );
        let a1c = &labs.statements[0].citations;
        assert_eq!(a1c[0].reference, "Observation/a1c-2");
        assert_eq!(a1c[0].element.as_deref(), Some("valueQuantity"));
        assert_eq!(a1c[1].element.as_deref(), Some("interpretation"));
        assert_eq!(a1c[2].reference, "Observation/a1c-1");
        assert_eq!(
            labs.statements[2].citations[1].element.as_deref(),
            Some("referenceRange[0]")
        );
    }

    #[test]
    fn unchanged_values_and_interpretation_text() {
        let record: Vec<RecordEntry> = vec![
            lab("t1", "3016-3", "TSH", "2.1", "mIU/L", "2025-01-01", ""),
            lab(
                "t2",
                "3016-3",
                "TSH",
                "2.10",
                "mIU/L",
                "2026-01-01",
                r#", "interpretation": [{"text": "Borderline"}]"#,
            ),
        ]
        .into_iter()
        .map(entry)
        .collect();
        let summary = summarize(&record, now());
        assert_eq!(
            texts(section_of(&summary, "labs")),
            [
                "TSH 2.10 mIU/L on 2026-01-01 (flagged Borderline), unchanged from 2.1 mIU/L on 2025-01-01."
            ]
        );
        assert_all_supported(&record, &summary);
    }

    #[test]
    fn procedures_and_immunizations_are_recent_events() {
        let record = full_record();
        let summary = summarize(&record, now());
        assert_eq!(
            texts(section_of(&summary, "procedures")),
            ["Colonoscopy on 2024-05-20."]
        );
        assert_eq!(
            texts(section_of(&summary, "immunizations")),
            ["Influenza, seasonal, injectable, preservative free on 2025-10-15."]
        );
    }

    #[test]
    fn note_highlight_quotes_the_assessment_with_its_span() {
        let record = full_record();
        let summary = summarize(&record, now());
        let notes = section_of(&summary, "notes");
        assert_eq!(
            texts(notes),
            ["Progress note (2026-03-01): \"Type 2 diabetes, A1c 7.20, above goal.\""]
        );
        let citation = &notes.statements[0].citations[0];
        assert_eq!(citation.element.as_deref(), Some("content[0].attachment"));
        let doc = record.iter().find(|e| e.id == "n1").unwrap();
        let text = note_text(&doc.resource).unwrap();
        let (s, e) = citation.span.unwrap();
        assert_eq!(&text[s..e], "Type 2 diabetes, A1c 7.20, above goal.");
    }

    #[test]
    fn notes_without_assessment_quote_their_first_sentence_three_most_recent() {
        let record: Vec<RecordEntry> = vec![
            note("a", "2026-01-01", "Seen for cough. Lungs clear."),
            note(
                "b",
                "2026-02-01",
                "## Impression\n- Viral URI, resolving. Supportive care.",
            ),
            note("c", "2026-03-01", "Plan: Return in 2 weeks."),
            note("d", "2025-01-01", "Oldest note."),
        ]
        .into_iter()
        .map(entry)
        .collect();
        let summary = summarize(&record, now());
        let notes = section_of(&summary, "notes");
        assert_eq!(
            texts(notes),
            [
                "Progress note (2026-03-01): \"Return in 2 weeks.\"",
                "Progress note (2026-02-01): \"Viral URI, resolving.\"",
                "Progress note (2026-01-01): \"Seen for cough.\"",
            ]
        );
        for statement in &notes.statements {
            let citation = &statement.citations[0];
            let doc = record
                .iter()
                .find(|e| e.reference() == citation.reference)
                .unwrap();
            let text = note_text(&doc.resource).unwrap();
            let (s, e) = citation.span.unwrap();
            assert!(statement.text.contains(&format!("\"{}\"", &text[s..e])));
        }
        assert_all_supported(&record, &summary);
    }

    #[test]
    fn empty_record_has_every_section_empty_with_its_text() {
        let summary = summarize(&[], now());
        assert_eq!(summary.sections.len(), 9);
        for section in &summary.sections {
            assert!(section.statements.is_empty());
        }
        assert_eq!(
            section_of(&summary, "problems").empty_text.as_deref(),
            Some("No active problems recorded.")
        );
        assert_eq!(
            section_of(&summary, "allergies").empty_text.as_deref(),
            Some("No allergies recorded.")
        );
        assert_eq!(
            section_of(&summary, "labs").empty_text.as_deref(),
            Some("No lab results recorded.")
        );
        assert_eq!(
            section_of(&summary, "notes").empty_text.as_deref(),
            Some("No notes recorded.")
        );
    }

    #[test]
    fn only_the_highest_version_of_a_resource_counts() {
        let mut old = entry(condition(
            "dm",
            "active",
            "confirmed",
            "E11.9",
            "Type 2 diabetes mellitus",
            "2019-05-02",
        ));
        old.version_id = 1;
        let new = entry(condition(
            "dm",
            "resolved",
            "confirmed",
            "E11.9",
            "Type 2 diabetes mellitus",
            "2019-05-02",
        ));
        let summary = summarize(&[old, new], now());
        assert!(section_of(&summary, "problems").statements.is_empty());
    }

    #[test]
    fn lab_questions_find_the_latest_value() {
        let record = full_record();
        for question in [
            "What was the last A1c?",
            "when was the last HbA1c",
            "latest hemoglobin a1c",
        ] {
            let answer = answer(&record, question);
            assert!(!answer.not_found, "{question}");
            assert_eq!(
                answer.statements[0].text,
                "Hemoglobin A1c 7.20 % on 2026-03-01 (flagged high), up from 6.9 % on 2025-11-02.",
            );
            assert_supported(&record, &answer.statements[0]);
        }
        let ldl = answer(&record, "most recent LDL");
        assert_eq!(ldl.statements.len(), 1);
        assert!(
            ldl.statements[0]
                .text
                .starts_with("LDL Cholesterol 98 mg/dL on 2026-03-01")
        );
        let k = answer(&record, "latest potassium?");
        assert!(k.statements[0].text.starts_with("Potassium 5.9 mmol/L"));
        let hr = answer(&record, "what is the heart rate");
        assert_eq!(hr.statements[0].text, "Heart rate 72 /min on 2026-03-01.");
        assert_eq!(hr.question, "what is the heart rate");
    }

    #[test]
    fn lab_questions_match_by_name_when_the_code_is_local() {
        let local = json!({"resourceType": "Observation", "id": "x", "status": "final",
            "code": {"coding": [{"system": "urn:lab:local", "code": "GLU", "display": "Glucose, fasting"}]},
            "valueQuantity": {"value": 104, "unit": "mg/dL"}, "effectiveDateTime": "2026-04-01"});
        let urine = json!({"resourceType": "Observation", "id": "y", "status": "final",
            "code": {"text": "Glucose in urine"},
            "valueString": "negative", "effectiveDateTime": "2026-05-01"});
        let record = vec![entry(local), entry(urine)];
        let answer = answer(&record, "last glucose");
        assert_eq!(answer.statements.len(), 1);
        assert_eq!(
            answer.statements[0].text,
            "Glucose, fasting 104 mg/dL on 2026-04-01."
        );
        assert_supported(&record, &answer.statements[0]);
    }

    #[test]
    fn section_questions_and_admissions() {
        let record = full_record();
        let allergies = answer(&record, "Is she allergic to anything?");
        assert_eq!(allergies.statements.len(), 2);
        let meds = answer(&record, "What meds is he taking?");
        assert_eq!(meds.statements.len(), 3);
        let problems = answer(&record, "diagnoses");
        assert_eq!(problems.statements.len(), 2);
        let admission = answer(&record, "When was the last admission?");
        assert_eq!(
            admission.statements[0].text,
            "Admitted 2026-10-01, discharged 2026-10-04 (inpatient; Hospital admission)."
        );
        for a in [allergies, meds, problems, admission] {
            assert!(!a.not_found);
            for statement in &a.statements {
                assert_supported(&record, statement);
            }
        }
    }

    #[test]
    fn questions_naming_something_answer_about_it() {
        let record = full_record();
        let penicillin = answer(&record, "Is she allergic to penicillin?");
        assert_eq!(
            penicillin
                .statements
                .iter()
                .map(|s| s.text.as_str())
                .collect::<Vec<_>>(),
            ["Penicillin G (high criticality): Hives, Anaphylaxis."]
        );
        let metformin = answer(&record, "Is he taking metformin?");
        assert_eq!(metformin.statements.len(), 1);
        assert!(
            metformin.statements[0]
                .text
                .starts_with("metformin hydrochloride")
        );
        let htn = answer(&record, "Does she have hypertension?");
        assert_eq!(
            htn.statements[0].text,
            "Essential hypertension (ICD-10-CM I10), since 2021-01-15."
        );
        let bp = answer(&record, "latest blood pressure");
        assert!(
            bp.statements[0]
                .text
                .starts_with("Blood pressure 142/91 mmHg")
        );
        // Nothing named so: the whole list answers a list question.
        let all = answer(&record, "Any drug allergies to sulfa?");
        assert_eq!(all.statements.len(), 2);
        for a in [penicillin, metformin, htn, bp, all] {
            for statement in &a.statements {
                assert_supported(&record, statement);
            }
        }
    }

    #[test]
    fn a_year_in_the_question_limits_the_answer_to_it() {
        let record = full_record();
        let a1c = answer(&record, "What was the A1c in 2025?");
        assert_eq!(
            a1c.statements[0].text,
            "Hemoglobin A1c 6.9 % on 2025-11-02."
        );
        assert_supported(&record, &a1c.statements[0]);
        assert!(answer(&record, "A1c in 2024").not_found);
        assert!(!answer(&record, "was she admitted in 2026").not_found);
        assert!(answer(&record, "was she admitted in 2020").not_found);
    }

    #[test]
    fn unanswerable_questions_are_not_found() {
        let record = full_record();
        for question in [
            "",
            "what is the meaning of life",
            "last creatinine",
            "latest ferritin",
            "when was the last TSH",
        ] {
            let answer = answer(&record, question);
            assert!(answer.not_found, "{question}");
            assert!(answer.statements.is_empty(), "{question}");
        }
        let empty = answer(&[], "allergies");
        assert!(empty.not_found);
        let none = answer(&[], "when was she admitted");
        assert!(none.not_found);
    }
}
