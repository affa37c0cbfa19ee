//! Readable text of FHIR R4 resources for the clinician's pages: one-line labels, the
//! clinically relevant date and status, and a generic definition-list rendering of a
//! resource's elements. Pure functions of the JSON; every string reaches HTML through maud,
//! so it is escaped by construction.

use maud::{Markup, html};
use serde_json::{Map, Value};

/// Labels longer than this are cut (with "…"): a summary row is one line, the full text is
/// one click away on the source page.
const MAX_LABEL_CHARS: usize = 160;
/// Nesting deeper than this is left to the raw JSON block (contained resources of contained
/// resources, deep extensions).
const MAX_DEPTH: usize = 8;
/// Array items shown per element; the rest are counted.
const MAX_ITEMS: usize = 100;
/// Longer strings (base64 attachment data, huge notes) are cut in the readable rendering.
const MAX_STRING_CHARS: usize = 2000;

/// A one-line label a clinician recognises, e.g. "Blood pressure: 120/80 mmHg" or
/// "Amoxicillin 500 mg capsule — 1 capsule three times a day". Never empty: falls back to
/// "{Type}/{id}".
pub fn resource_label(resource: &Value) -> String {
    let label = match str_at(resource, "resourceType").unwrap_or("") {
        "Condition" => codeable_at(resource, "code").map(|code| {
            match status_code(&resource["clinicalStatus"]) {
                Some(status) => format!("{code} ({status})"),
                None => code,
            }
        }),
        "Observation" => observation_label(resource),
        "MedicationRequest" | "MedicationDispense" => {
            medication_label(resource, &resource["dosageInstruction"][0])
        }
        "MedicationStatement" => medication_label(resource, &resource["dosage"][0]),
        "MedicationAdministration" => medication_label(resource, &resource["dosage"]),
        "AllergyIntolerance" => {
            codeable_at(resource, "code").map(|code| match str_at(resource, "criticality") {
                Some("high") => format!("{code} (high criticality)"),
                Some("low") => format!("{code} (low criticality)"),
                Some("unable-to-assess") => format!("{code} (criticality unable to assess)"),
                _ => code,
            })
        }
        "Immunization" => codeable_at(resource, "vaccineCode"),
        "DocumentReference" => document_label(resource),
        "Encounter" => encounter_label(resource),
        "CareTeam" => str_at(resource, "name")
            .map(str::to_owned)
            .or_else(|| codeable_at(&resource["category"], 0)),
        "Patient" | "Practitioner" | "RelatedPerson" => human_name(&resource["name"]),
        _ => None,
    };
    // Procedure, DiagnosticReport, ServiceRequest … carry their meaning in `code`; others
    // (Organization, Location, CarePlan) in a name or title.
    let label = label
        .or_else(|| codeable_at(resource, "code"))
        .or_else(|| str_at(resource, "name").map(str::to_owned))
        .or_else(|| str_at(resource, "title").map(str::to_owned))
        .or_else(|| str_at(resource, "description").map(str::to_owned));
    match label.map(|l| one_line(&l, MAX_LABEL_CHARS)) {
        Some(l) if !l.is_empty() => l,
        _ => fallback_label(resource),
    }
}

/// The clinically relevant date as the EHR gave it (FHIR date/dateTime text):
/// effective[x], onset[x] or recordedDate, authoredOn, occurrence[x], performed[x],
/// period.start, date, issued — the first one present.
pub fn resource_date(resource: &Value) -> Option<String> {
    const PATHS: &[&[&str]] = &[
        &["effectiveDateTime"],
        &["effectiveInstant"],
        &["effectivePeriod", "start"],
        &["onsetDateTime"],
        &["onsetPeriod", "start"],
        &["recordedDate"],
        &["authoredOn"],
        &["occurrenceDateTime"],
        &["occurrencePeriod", "start"],
        &["performedDateTime"],
        &["performedPeriod", "start"],
        &["effectivePeriod", "end"],
        &["period", "start"],
        &["date"],
        &["issued"],
    ];
    PATHS.iter().find_map(|path| {
        let value = path.iter().fold(resource, |v, key| &v[*key]);
        value
            .as_str()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| one_line(s, 64))
    })
}

/// The resource's `status`, else its `clinicalStatus` code. A verification status that
/// changes the meaning (unconfirmed, refuted, entered-in-error …) is appended, e.g.
/// "active, unconfirmed": a clinician must not read a provisional diagnosis as confirmed.
pub fn resource_status(resource: &Value) -> Option<String> {
    let status = str_at(resource, "status")
        .map(str::to_owned)
        .or_else(|| status_code(&resource["clinicalStatus"]));
    let verification =
        status_code(&resource["verificationStatus"]).filter(|v| v != "confirmed" && !v.is_empty());
    let joined = match (status, verification) {
        (Some(s), Some(v)) => Some(format!("{s}, {v}")),
        (s, v) => s.or(v),
    };
    joined.map(|s| one_line(&s, 64)).filter(|s| !s.is_empty())
}

/// The summary heading for a resource type, e.g. "Conditions"; "Other records" for types
/// without one.
pub fn group_heading(resource_type: &str) -> &'static str {
    match resource_type {
        "Condition" => "Conditions",
        "Observation" => "Vital signs & labs",
        "MedicationRequest" => "Medications",
        "MedicationStatement" => "Medication statements",
        "MedicationAdministration" => "Medication administrations",
        "MedicationDispense" => "Medication dispenses",
        "AllergyIntolerance" => "Allergies & intolerances",
        "Procedure" => "Procedures",
        "Immunization" => "Immunizations",
        "DiagnosticReport" => "Reports",
        "DocumentReference" => "Documents",
        "Encounter" => "Encounters",
        "CareTeam" => "Care teams",
        "CarePlan" => "Care plans",
        "Goal" => "Goals",
        "ServiceRequest" => "Orders",
        "Coverage" => "Coverage",
        "Device" => "Devices",
        "Patient" => "Patient",
        "Practitioner" => "Practitioners",
        _ => "Other records",
    }
}

/// A generic, recursive definition-list rendering of the resource's elements. Skips what
/// a clinician cannot use here (resourceType/id/meta, shown in the page heading; the HTML
/// narrative, never rendered as HTML; primitive extensions `_x`). Depth- and size-limited;
/// the raw JSON block on the same page has everything.
pub fn resource_details(resource: &Value) -> Markup {
    match resource {
        Value::Object(map) => render_object(map, 0),
        _ => html! { p { "This resource has no elements to show." } },
    }
}

/// A CodeableConcept's (or a Coding's) text: `text`, else the first coding's display,
/// else the first coding as `system|code`.
pub fn codeable_text(value: &Value) -> Option<String> {
    if let Some(text) = str_at(value, "text") {
        return Some(text.to_owned());
    }
    if let Some(codings) = value.get("coding").and_then(Value::as_array) {
        return codings
            .iter()
            .find_map(|c| str_at(c, "display").map(str::to_owned))
            .or_else(|| codings.iter().find_map(coding_code));
    }
    // A bare Coding (Encounter.class, a Coding-typed element).
    str_at(value, "display")
        .map(str::to_owned)
        .or_else(|| coding_code(value))
}

/// The preferred name from a list of HumanNames (official, then usual, then any not marked
/// old): its `text`, else prefix given family suffix.
pub(crate) fn human_name(names: &Value) -> Option<String> {
    let list: Vec<&Value> = match names {
        Value::Array(items) => items.iter().collect(),
        Value::Object(_) => vec![names],
        _ => return None,
    };
    let by_use = |wanted: &str| {
        list.iter()
            .copied()
            .find(|n| str_at(n, "use") == Some(wanted))
    };
    let chosen = by_use("official")
        .or_else(|| by_use("usual"))
        .or_else(|| {
            list.iter()
                .copied()
                .find(|n| !matches!(str_at(n, "use"), Some("old" | "anonymous")))
        })
        .or_else(|| list.first().copied())?;
    if let Some(text) = str_at(chosen, "text") {
        return Some(one_line(text, MAX_LABEL_CHARS));
    }
    let mut parts: Vec<&str> = Vec::new();
    for key in ["prefix", "given"] {
        parts.extend(strings_at(chosen, key));
    }
    parts.extend(str_at(chosen, "family"));
    parts.extend(strings_at(chosen, "suffix"));
    let name = one_line(&parts.join(" "), MAX_LABEL_CHARS);
    (!name.is_empty()).then_some(name)
}

fn fallback_label(resource: &Value) -> String {
    let kind = str_at(resource, "resourceType").unwrap_or("Resource");
    let kind = one_line(kind, 64);
    match str_at(resource, "id") {
        Some(id) => format!("{kind}/{}", one_line(id, 64)),
        None => kind,
    }
}

fn observation_label(resource: &Value) -> Option<String> {
    let name = codeable_at(resource, "code");
    let value = value_text(resource)
        .or_else(|| components_text(resource))
        .or_else(|| {
            codeable_at(resource, "dataAbsentReason").map(|reason| format!("no value ({reason})"))
        });
    let interpretation = codeable_at(&resource["interpretation"], 0);
    let mut label = match (name, value) {
        (Some(n), Some(v)) => format!("{n}: {v}"),
        (Some(n), None) => n,
        (None, Some(v)) => format!("Observation: {v}"),
        (None, None) => return None,
    };
    if let Some(interpretation) = interpretation {
        label.push_str(&format!(" ({interpretation})"));
    }
    Some(label)
}

/// Component values as one reading: "120/80 mmHg" when every component is a quantity in the
/// same unit (blood pressure, systolic first), else "Systolic: 120 mmHg; Diastolic: 80 mmHg".
fn components_text(resource: &Value) -> Option<String> {
    const SYSTOLIC: &str = "8480-6";
    let components = resource.get("component")?.as_array()?;
    let mut readings: Vec<(&Value, Option<String>)> = components
        .iter()
        .map(|c| (c, value_text(c)))
        .filter(|(_, v)| v.is_some())
        .collect();
    if readings.is_empty() {
        return None;
    }
    // Systolic before diastolic whatever order the EHR sent.
    readings.sort_by_key(|(c, _)| !has_code(&c["code"], SYSTOLIC));
    let quantities: Vec<(String, String)> = readings
        .iter()
        .filter_map(|(c, _)| {
            let q = &c["valueQuantity"];
            Some((quantity_number(q)?, quantity_unit(q).unwrap_or_default()))
        })
        .collect();
    if quantities.len() == readings.len()
        && quantities.len() > 1
        && quantities.iter().all(|(_, unit)| *unit == quantities[0].1)
    {
        let numbers: Vec<&str> = quantities.iter().map(|(n, _)| n.as_str()).collect();
        let unit = &quantities[0].1;
        let joined = numbers.join("/");
        return Some(if unit.is_empty() {
            joined
        } else {
            format!("{joined} {unit}")
        });
    }
    let parts: Vec<String> = readings
        .into_iter()
        .filter_map(|(c, v)| {
            let v = v?;
            Some(match codeable_at(c, "code") {
                Some(name) => format!("{name}: {v}"),
                None => v,
            })
        })
        .collect();
    Some(parts.join("; "))
}

/// An element's value[x] as text.
fn value_text(element: &Value) -> Option<String> {
    let obj = element.as_object()?;
    let (key, value) = obj.iter().find(|(k, _)| {
        k.strip_prefix("value")
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_uppercase()))
    })?;
    match key.as_str() {
        "valueQuantity" => quantity_text(value),
        "valueCodeableConcept" => codeable_text(value),
        "valueBoolean" => value
            .as_bool()
            .map(|b| if b { "Yes" } else { "No" }.to_owned()),
        "valueRange" => {
            let low = quantity_text(&value["low"]);
            let high = quantity_text(&value["high"]);
            match (low, high) {
                (Some(l), Some(h)) => Some(format!("{l} – {h}")),
                (Some(l), None) => Some(format!("≥ {l}")),
                (None, Some(h)) => Some(format!("≤ {h}")),
                (None, None) => None,
            }
        }
        "valueRatio" => {
            let n = quantity_text(&value["numerator"])?;
            let d = quantity_text(&value["denominator"])?;
            Some(format!("{n} / {d}"))
        }
        "valuePeriod" => period_text(value),
        "valueSampledData" => Some("sampled data (see the source)".to_owned()),
        "valueAttachment" => Some(
            str_at(value, "title")
                .unwrap_or("attachment (see the source)")
                .to_owned(),
        ),
        _ => scalar_text(value),
    }
}

fn medication_label(resource: &Value, dosage: &Value) -> Option<String> {
    let medication = codeable_at(resource, "medicationCodeableConcept")
        .or_else(|| str_at(&resource["medicationReference"], "display").map(str::to_owned))?;
    Some(match str_at(dosage, "text") {
        Some(instructions) => format!("{medication} — {instructions}"),
        None => medication,
    })
}

fn document_label(resource: &Value) -> Option<String> {
    let kind = codeable_at(resource, "type");
    let description = str_at(resource, "description")
        .or_else(|| str_at(&resource["content"][0]["attachment"], "title"));
    match (kind, description) {
        (Some(k), Some(d)) if k != d => Some(format!("{k}: {d}")),
        (Some(k), _) => Some(k),
        (None, d) => d.map(str::to_owned),
    }
}

fn encounter_label(resource: &Value) -> Option<String> {
    let kind = codeable_at(&resource["type"], 0)
        .or_else(|| {
            let class = &resource["class"];
            str_at(class, "display")
                .map(str::to_owned)
                .or_else(|| str_at(class, "code").map(encounter_class_name))
        })
        .or_else(|| codeable_at(resource, "serviceType"))?;
    Some(match period_text(&resource["period"]) {
        Some(period) => format!("{kind} ({period})"),
        None => kind,
    })
}

/// The v3 ActCode encounter classes EHRs send without a display.
fn encounter_class_name(code: &str) -> String {
    match code {
        "AMB" => "Ambulatory visit",
        "EMER" => "Emergency visit",
        "IMP" => "Inpatient stay",
        "ACUTE" => "Inpatient acute stay",
        "NONAC" => "Inpatient non-acute stay",
        "OBSENC" => "Observation stay",
        "SS" => "Short stay",
        "VR" => "Virtual visit",
        "HH" => "Home health visit",
        "FLD" => "Field visit",
        "PRENC" => "Pre-admission",
        other => return format!("Encounter ({other})"),
    }
    .to_owned()
}

fn period_text(period: &Value) -> Option<String> {
    let start = str_at(period, "start");
    let end = str_at(period, "end");
    match (start, end) {
        (Some(s), Some(e)) if s == e => Some(s.to_owned()),
        (Some(s), Some(e)) => Some(format!("{s} – {e}")),
        (Some(s), None) => Some(format!("from {s}")),
        (None, Some(e)) => Some(format!("until {e}")),
        (None, None) => None,
    }
}

fn quantity_text(quantity: &Value) -> Option<String> {
    let number = quantity_number(quantity)?;
    Some(match quantity_unit(quantity) {
        Some(unit) => format!("{number} {unit}"),
        None => number,
    })
}

/// Comparator and value as given ("<5"); the number keeps the EHR's digits.
fn quantity_number(quantity: &Value) -> Option<String> {
    let value = match quantity.get("value")? {
        Value::Number(n) => n.to_string(),
        Value::String(s) if !s.trim().is_empty() => s.trim().to_owned(),
        _ => return None,
    };
    Some(format!(
        "{}{value}",
        str_at(quantity, "comparator").unwrap_or("")
    ))
}

fn quantity_unit(quantity: &Value) -> Option<String> {
    str_at(quantity, "unit")
        .or_else(|| str_at(quantity, "code"))
        .map(str::to_owned)
}

fn has_code(concept: &Value, code: &str) -> bool {
    concept
        .get("coding")
        .and_then(Value::as_array)
        .is_some_and(|codings| codings.iter().any(|c| str_at(c, "code") == Some(code)))
}

/// A status CodeableConcept's code (what FHIR defines the values by), else its text.
fn status_code(concept: &Value) -> Option<String> {
    concept
        .get("coding")
        .and_then(Value::as_array)
        .and_then(|codings| codings.iter().find_map(|c| str_at(c, "code")))
        .or_else(|| str_at(concept, "text"))
        .map(str::to_owned)
}

fn coding_code(coding: &Value) -> Option<String> {
    let code = str_at(coding, "code")?;
    Some(match str_at(coding, "system") {
        Some(system) => format!("{system}|{code}"),
        None => code.to_owned(),
    })
}

/// `codeable_text` of `value[key]`; `key` may be an array index.
fn codeable_at<I: serde_json::value::Index>(value: &Value, key: I) -> Option<String> {
    value.get(key).and_then(codeable_text)
}

/// A non-blank string member.
fn str_at<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value
        .get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// The non-blank strings of an array member.
fn strings_at<'a>(value: &'a Value, key: &str) -> impl Iterator<Item = &'a str> {
    value
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "Yes" } else { "No" }.to_owned()),
        _ => None,
    }
}

/// Whitespace (newlines, tabs, control characters) collapsed to single spaces and cut to
/// `max` characters, so a label stays one line.
fn one_line(text: &str, max: usize) -> String {
    let mut out = String::new();
    let mut count = 0;
    for word in text.split(|c: char| c.is_whitespace() || c.is_control()) {
        if word.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
            count += 1;
        }
        for c in word.chars() {
            if count >= max {
                out.push('…');
                return out;
            }
            out.push(c);
            count += 1;
        }
    }
    out
}

/// Cut a long string for the readable rendering, on a character boundary.
fn cut(text: &str) -> String {
    match text.char_indices().nth(MAX_STRING_CHARS) {
        Some((at, _)) => format!(
            "{}… ({} characters in all; see the FHIR JSON)",
            &text[..at],
            text.chars().count()
        ),
        None => text.to_owned(),
    }
}

/// Elements a reader of the details gets nothing from.
fn skipped(object: &Map<String, Value>, key: &str, value: &Value) -> bool {
    let is_resource = object.contains_key("resourceType");
    key.starts_with('_')
        || (is_resource && matches!(key, "resourceType" | "id" | "meta"))
        // The narrative is XHTML from the EHR: never rendered as HTML here.
        || (key == "text" && value.get("div").is_some())
        || matches!(value, Value::Null)
        || matches!(value, Value::Array(items) if items.is_empty())
}

fn render_object(object: &Map<String, Value>, depth: usize) -> Markup {
    if depth > MAX_DEPTH {
        return html! { span.more { "(more detail in the FHIR JSON below)" } };
    }
    let entries: Vec<(&String, &Value)> = object
        .iter()
        .filter(|(k, v)| !skipped(object, k, v))
        .collect();
    if entries.is_empty() {
        return html! { span { "(no details)" } };
    }
    html! {
        dl.details {
            @for (key, value) in entries {
                dt { (element_name(key)) }
                dd { (render_value(value, depth + 1)) }
            }
        }
    }
}

fn render_value(value: &Value, depth: usize) -> Markup {
    if let Some(text) = compact_text(value) {
        return html! { (cut(&text)) };
    }
    match value {
        Value::Object(map) => render_object(map, depth),
        Value::Array(items) if items.len() == 1 => render_value(&items[0], depth),
        Value::Array(items) => {
            let all_compact = items.iter().all(|i| compact_text(i).is_some());
            let shown = items.iter().take(MAX_ITEMS);
            let more = items.len().saturating_sub(MAX_ITEMS);
            html! {
                @if all_compact {
                    ul.values {
                        @for item in shown { li { (render_value(item, depth)) } }
                        @if more > 0 { li.more { "… and " (more) " more (see the FHIR JSON)" } }
                    }
                } @else {
                    ol.values {
                        @for item in shown { li { (render_value(item, depth)) } }
                        @if more > 0 { li.more { "… and " (more) " more (see the FHIR JSON)" } }
                    }
                }
            }
        }
        _ => html! {},
    }
}

/// One line for the common small datatypes (CodeableConcept, Coding, Reference, Quantity,
/// Period, HumanName) and for primitives; None for anything to show as a nested list.
fn compact_text(value: &Value) -> Option<String> {
    let object = match value {
        Value::Object(object) => object,
        Value::Array(_) | Value::Null => return None,
        scalar => return scalar_text(scalar),
    };
    let only = |allowed: &[&str]| {
        !object.is_empty() && object.keys().all(|k| allowed.contains(&k.as_str()))
    };
    if only(&["coding", "text"]) {
        let text = codeable_text(value)?;
        let codes: Vec<String> = value["coding"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(coded_as)
            .collect();
        return Some(match codes.is_empty() {
            true => text,
            false => format!("{text} ({})", codes.join("; ")),
        });
    }
    if only(&["system", "version", "code", "display", "userSelected"]) {
        let code = coded_as(value);
        return match (str_at(value, "display"), code) {
            (Some(d), Some(c)) => Some(format!("{d} ({c})")),
            (Some(d), None) => Some(d.to_owned()),
            (None, c) => c,
        };
    }
    if only(&["reference", "display", "type", "identifier"]) {
        return str_at(value, "display")
            .or_else(|| str_at(value, "reference"))
            .map(str::to_owned);
    }
    if only(&["value", "unit", "system", "code", "comparator"]) {
        return quantity_text(value);
    }
    if only(&["start", "end"]) {
        return period_text(value);
    }
    if only(&["use", "text", "family", "given", "prefix", "suffix"]) {
        return human_name(value);
    }
    None
}

/// A coding as "SNOMED CT 38341003", naming the common code systems.
fn coded_as(coding: &Value) -> Option<String> {
    let code = str_at(coding, "code")?;
    let system = match str_at(coding, "system") {
        Some("http://snomed.info/sct") => "SNOMED CT",
        Some("http://loinc.org") => "LOINC",
        Some("http://www.nlm.nih.gov/research/umls/rxnorm") => "RxNorm",
        Some("http://hl7.org/fhir/sid/icd-10-cm") => "ICD-10-CM",
        Some("http://hl7.org/fhir/sid/icd-10") => "ICD-10",
        Some("http://hl7.org/fhir/sid/cvx") => "CVX",
        Some("http://hl7.org/fhir/sid/ndc") => "NDC",
        Some("http://unitsofmeasure.org") => "UCUM",
        Some(other) => other,
        None => return Some(code.to_owned()),
    };
    Some(format!("{system} {code}"))
}

/// "clinicalStatus" → "Clinical status".
fn element_name(key: &str) -> String {
    if key.eq_ignore_ascii_case("url") {
        return "URL".to_owned();
    }
    let mut out = String::with_capacity(key.len() + 4);
    for (i, c) in key.chars().enumerate() {
        if i == 0 {
            out.extend(c.to_uppercase());
        } else if c.is_ascii_uppercase() {
            out.push(' ');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn blood_pressure_components_read_as_one_value() {
        let bp = json!({
            "resourceType": "Observation", "id": "bp", "status": "final",
            "code": {"text": "Blood pressure"},
            "component": [
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                 "valueQuantity": {"value": 80, "unit": "mmHg"}},
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                 "valueQuantity": {"value": 120, "unit": "mmHg"}}
            ],
            "effectiveDateTime": "2024-03-01T09:30:00Z"
        });
        assert_eq!(resource_label(&bp), "Blood pressure: 120/80 mmHg");
        assert_eq!(resource_date(&bp).as_deref(), Some("2024-03-01T09:30:00Z"));
        assert_eq!(resource_status(&bp).as_deref(), Some("final"));
    }

    #[test]
    fn labels_by_type() {
        let condition = json!({"resourceType": "Condition", "id": "c1",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003", "display": "Hypertension"}]},
            "clinicalStatus": {"coding": [{"code": "active"}]},
            "verificationStatus": {"coding": [{"code": "provisional"}]}});
        assert_eq!(resource_label(&condition), "Hypertension (active)");
        assert_eq!(
            resource_status(&condition).as_deref(),
            Some("active, provisional")
        );
        // Parsed, not json!: the EHR's digits ("7.20") are kept as sent.
        let glucose: Value = serde_json::from_str(
            r#"{"resourceType": "Observation", "code": {"text": "Glucose"},
                "valueQuantity": {"value": 7.20, "unit": "mmol/L"},
                "interpretation": [{"text": "High"}]}"#,
        )
        .unwrap_or_default();
        assert_eq!(resource_label(&glucose), "Glucose: 7.20 mmol/L (High)");
        let med = json!({"resourceType": "MedicationRequest",
            "medicationReference": {"reference": "Medication/1", "display": "Amoxicillin 500 mg"},
            "dosageInstruction": [{"text": "three times a day"}], "authoredOn": "2024-01-02"});
        assert_eq!(
            resource_label(&med),
            "Amoxicillin 500 mg — three times a day"
        );
        assert_eq!(resource_date(&med).as_deref(), Some("2024-01-02"));
        let allergy = json!({"resourceType": "AllergyIntolerance",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "91936005"}]},
            "criticality": "high"});
        assert_eq!(
            resource_label(&allergy),
            "http://snomed.info/sct|91936005 (high criticality)"
        );
        let encounter = json!({"resourceType": "Encounter", "class": {"code": "AMB"},
            "period": {"start": "2024-01-01", "end": "2024-01-01"}});
        assert_eq!(resource_label(&encounter), "Ambulatory visit (2024-01-01)");
        let patient = json!({"resourceType": "Patient", "name": [
            {"use": "old", "family": "Old"},
            {"use": "official", "given": ["Ana", "María"], "family": "López"}]});
        assert_eq!(resource_label(&patient), "Ana María López");
    }

    #[test]
    fn label_is_never_empty_and_stays_one_line() {
        assert_eq!(
            resource_label(&json!({"resourceType": "Basic", "id": "b1"})),
            "Basic/b1"
        );
        assert_eq!(resource_label(&json!({})), "Resource");
        assert_eq!(
            resource_label(
                &json!({"resourceType": "Condition", "id": "x", "code": {"text": "  \n "}})
            ),
            "Condition/x"
        );
        let long = "a".repeat(500);
        let label = resource_label(&json!({"resourceType": "Procedure",
            "code": {"text": format!("Line one\nline\ttwo {long}")}}));
        assert!(label.starts_with("Line one line two a"));
        assert!(label.ends_with('…'));
        assert_eq!(label.chars().count(), MAX_LABEL_CHARS + 1);
    }

    #[test]
    fn codeable_text_falls_back_to_system_and_code() {
        assert_eq!(
            codeable_text(&json!({"coding": [{"code": "x"}, {"display": "Second"}]})).as_deref(),
            Some("Second")
        );
        assert_eq!(
            codeable_text(&json!({"coding": [{"system": "http://loinc.org", "code": "1-8"}]}))
                .as_deref(),
            Some("http://loinc.org|1-8")
        );
        assert_eq!(codeable_text(&json!({"coding": []})), None);
    }

    #[test]
    fn details_escape_everything_and_skip_the_narrative() {
        let resource = json!({
            "resourceType": "Condition", "id": "c1", "meta": {"versionId": "3"},
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><script>alert(1)</script></div>"},
            "note": [{"text": "<script>alert(2)</script>"}],
            "code": {"text": "<img src=x onerror=alert(3)>"},
            "<b>key</b>": "v"
        });
        let html = resource_details(&resource).into_string();
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<b>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(2)"), "{html}");
        assert!(!html.contains("alert(1)"), "narrative is skipped: {html}");
        assert!(!html.contains("versionId"), "meta is skipped: {html}");
        assert!(html.contains("<dt>Note</dt>"), "{html}");
    }

    #[test]
    fn details_are_depth_limited() {
        let mut deep = json!({"leaf": "bottom"});
        for _ in 0..50 {
            deep = json!({"nested": deep, "other": 1});
        }
        let html = resource_details(&deep).into_string();
        assert!(html.contains("more detail in the FHIR JSON"));
        assert!(!html.contains("bottom"));
    }
}
