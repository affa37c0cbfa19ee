//! The invariants of US Core 6.1.0 (and of the base profile `vitalsigns` it builds on),
//! each written in Rust.
//!
//! Why not evaluate the FHIRPath in `profiles/us-core/profiles.json`? Several use functions
//! our FHIRPath subset (`search::fhirpath`) does not have (`implies`, `matches`, `iif`,
//! `select`, `toInteger`, `mod`), and a few published expressions do not say what their
//! human text says (noted below). The expressions stay in the data as documentation; an
//! implementation is keyed by the profile that defines the constraint and its key, and a
//! test checks that every constraint in the data has one.
//!
//! Every check answers "does the context satisfy the invariant?". An absent value that
//! the expression would turn into an empty result counts as satisfied, as FHIRPath
//! invariants do.

use serde_json::{Map, Value};

/// What an invariant sees: the element it is defined on, its FHIR type when the element
/// is a choice (`valueQuantity` → `Quantity`), and the whole resource (for `resolve()`).
pub(crate) struct Ctx<'v> {
    pub value: &'v Value,
    pub type_name: Option<&'v str>,
    pub resource: &'v Value,
}

pub(crate) type Check = fn(&Ctx<'_>) -> bool;

const UCUM: &str = "http://unitsofmeasure.org";
const SNOMED: &str = "http://snomed.info/sct";
const NDC: &str = "http://hl7.org/fhir/sid/ndc";
const DATA_ABSENT_REASON: &str = "http://hl7.org/fhir/StructureDefinition/data-absent-reason";
const V2_0203: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";

/// (profile that defines the constraint, constraint key, check).
pub(crate) const IMPLEMENTED: &[(&str, &str, Check)] = &[
    ("us-core-coverage", "us-core-15", coverage_member_id),
    (
        "us-core-diagnosticreport-lab",
        "us-core-8",
        report_effective,
    ),
    ("us-core-diagnosticreport-lab", "us-core-9", report_issued),
    (
        "us-core-diagnosticreport-note",
        "us-core-10",
        report_effective,
    ),
    (
        "us-core-documentreference",
        "us-core-6",
        attachment_url_or_data,
    ),
    ("us-core-immunization", "us-core-5", vaccine_has_ndc),
    (
        "us-core-medicationdispense",
        "us-core-20",
        dispense_handed_over,
    ),
    (
        "us-core-medicationrequest",
        "us-core-21",
        order_has_requester,
    ),
    (
        "us-core-observation-clinical-result",
        "us-core-1",
        date_time_to_day,
    ),
    (
        "us-core-observation-clinical-result",
        "us-core-2",
        value_or_absent_reason,
    ),
    (
        "us-core-observation-clinical-result",
        "us-core-3",
        quantity_is_ucum,
    ),
    (
        "us-core-observation-lab",
        "us-core-4",
        coded_result_is_snomed,
    ),
    (
        "us-core-observation-screening-assessment",
        "us-core-1",
        date_time_to_day,
    ),
    (
        "us-core-observation-screening-assessment",
        "us-core-2",
        value_or_absent_reason,
    ),
    (
        "us-core-observation-screening-assessment",
        "us-core-3",
        root_quantity_is_ucum,
    ),
    (
        "us-core-observation-sexual-orientation",
        "us-core-2",
        value_or_absent_reason,
    ),
    ("us-core-organization", "us-core-16", npi_ten_digits),
    ("us-core-organization", "us-core-17", npi_check_digit),
    ("us-core-organization", "us-core-18", clia_format),
    ("us-core-organization", "us-core-19", naic_format),
    ("us-core-patient", "us-core-6", name_or_absent_reason),
    ("us-core-practitioner", "us-core-16", npi_ten_digits),
    ("us-core-practitioner", "us-core-17", npi_check_digit),
    ("us-core-practitionerrole", "pd-1", contact_or_endpoint),
    ("us-core-practitionerrole", "us-core-13", role_has_anchor),
    ("us-core-procedure", "us-core-7", procedure_performed),
    ("us-core-provenance", "provenance-1", agent_on_behalf_of),
    ("us-core-relatedperson", "us-core-14", name_or_relationship),
    ("us-core-smokingstatus", "us-core-3", quantity_is_ucum),
    ("vitalsigns", "vs-1", date_time_to_month),
    ("vitalsigns", "vs-2", value_or_absent_reason),
    ("vitalsigns", "vs-3", component_value_or_absent_reason),
];

pub(crate) fn lookup(source: &str, key: &str) -> Option<Check> {
    IMPLEMENTED
        .iter()
        .find(|(s, k, _)| *s == source && *k == key)
        .map(|(_, _, check)| *check)
}

// ---------------------------------------------------------------------------------------
// Helpers over FHIR JSON
// ---------------------------------------------------------------------------------------

/// `name.exists()`: the element or its primitive extension companion `_name`.
fn exists(obj: &Map<String, Value>, name: &str) -> bool {
    obj.get(name).is_some_and(|v| !v.is_null())
        || obj
            .iter()
            .any(|(k, v)| !v.is_null() && k.strip_prefix('_') == Some(name))
}

/// `stem.exists()` for a choice element `stem[x]`: any key `stemType`.
fn choice_exists(obj: &Map<String, Value>, stem: &str) -> bool {
    obj.iter().any(|(k, v)| {
        let k = k.strip_prefix('_').unwrap_or(k);
        !v.is_null()
            && k.strip_prefix(stem)
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_uppercase()))
    })
}

fn str_field<'v>(obj: &'v Map<String, Value>, name: &str) -> Option<&'v str> {
    obj.get(name).and_then(Value::as_str)
}

/// The items of an element whether it repeats or not.
fn items(v: Option<&Value>) -> impl Iterator<Item = &Value> {
    let (single, many) = match v {
        Some(Value::Array(a)) => (None, a.as_slice()),
        Some(other) => (Some(other), &[][..]),
        None => (None, &[][..]),
    };
    single.into_iter().chain(many.iter())
}

fn codings(cc: &Value) -> impl Iterator<Item = &Value> {
    items(cc.get("coding"))
}

/// `status = 'a' or status = 'b' ...`
fn status_in(obj: &Map<String, Value>, field: &str, set: &[&str]) -> bool {
    str_field(obj, field).is_some_and(|s| set.contains(&s))
}

/// The resource type a reference points to, as `resolve() is T` would see it: a relative
/// or absolute RESTful URL (`Type/id`, `.../Type/id/_history/n`) or a contained `#id`.
pub(crate) fn reference_type<'v>(resource: &'v Value, reference: &'v str) -> Option<&'v str> {
    if let Some(local) = reference.strip_prefix('#') {
        return items(resource.get("contained"))
            .find(|r| r.get("id").and_then(Value::as_str) == Some(local))
            .and_then(|r| r.get("resourceType"))
            .and_then(Value::as_str);
    }
    let path = reference.split(['?', '#']).next().unwrap_or(reference);
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // [.., Type, id] or [.., Type, id, _history, version]
    let type_index = match segments.as_slice() {
        [.., _, _, "_history", _] => segments.len().checked_sub(4)?,
        [.., _, _] => segments.len() - 2,
        _ => return None,
    };
    let candidate = *segments.get(type_index)?;
    let looks_like_type = candidate.starts_with(|c: char| c.is_ascii_uppercase())
        && candidate.chars().all(|c| c.is_ascii_alphabetic());
    looks_like_type.then_some(candidate)
}

/// Ten ASCII digits, as an array of their values.
fn ten_digits(s: &str) -> Option<[u32; 10]> {
    let bytes = s.as_bytes();
    if bytes.len() != 10 {
        return None;
    }
    let mut out = [0u32; 10];
    for (slot, b) in out.iter_mut().zip(bytes) {
        *slot = char::from(*b).to_digit(10)?;
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------
// The invariants
// ---------------------------------------------------------------------------------------

/// us-core-2, vs-2: `(component.empty() and hasMember.empty()) implies
/// (dataAbsentReason.exists() or value.exists())`. Context: Observation.
fn value_or_absent_reason(c: &Ctx<'_>) -> bool {
    let Some(o) = c.value.as_object() else {
        return true;
    };
    exists(o, "component")
        || exists(o, "hasMember")
        || exists(o, "dataAbsentReason")
        || choice_exists(o, "value")
}

/// vs-3: `value.exists() or dataAbsentReason.exists()`. Context: Observation.component.
fn component_value_or_absent_reason(c: &Ctx<'_>) -> bool {
    let Some(o) = c.value.as_object() else {
        return true;
    };
    exists(o, "dataAbsentReason") || choice_exists(o, "value")
}

/// us-core-1: `$this is DateTime implies $this.toString().length() >= 10`: a dateTime
/// is given at least to the day. Context: Observation.effective[x].
fn date_time_to_day(c: &Ctx<'_>) -> bool {
    match (c.type_name, c.value.as_str()) {
        (Some("dateTime"), Some(s)) => s.len() >= 10,
        _ => true,
    }
}

/// vs-1: `($this as dateTime).toString().length() >= 8`. A year-month is 7 characters,
/// so in effect the date is given to the day. Context: Observation.effective[x].
fn date_time_to_month(c: &Ctx<'_>) -> bool {
    match (c.type_name, c.value.as_str()) {
        (Some("dateTime"), Some(s)) => s.len() >= 8,
        _ => true,
    }
}

/// us-core-3 with Observation.value[x] as context: a Quantity's system, if any, is UCUM.
/// (The published expression, `value.ofType(Quantity).system...`, would look for a child
/// `value` of the value and so never fail; its human text is what this checks.)
fn quantity_is_ucum(c: &Ctx<'_>) -> bool {
    if c.type_name != Some("Quantity") {
        return true;
    }
    c.value
        .get("system")
        .is_none_or(|s| s.as_str() == Some(UCUM))
}

/// us-core-3 with the Observation as context: `value.ofType(Quantity).system.empty() or
/// value.ofType(Quantity).system = 'http://unitsofmeasure.org'`.
fn root_quantity_is_ucum(c: &Ctx<'_>) -> bool {
    c.value
        .get("valueQuantity")
        .and_then(|q| q.get("system"))
        .is_none_or(|s| s.as_str() == Some(UCUM))
}

/// us-core-4 (warning): a coded result uses SNOMED CT: every coding system of a
/// valueCodeableConcept is SNOMED CT. Context: Observation.value[x].
fn coded_result_is_snomed(c: &Ctx<'_>) -> bool {
    if c.type_name != Some("CodeableConcept") {
        return true;
    }
    codings(c.value)
        .filter_map(|coding| coding.get("system"))
        .all(|s| s.as_str() == Some(SNOMED))
}

/// us-core-5 (warning): "SHOULD have a translation to the NDC value set". The published
/// expression, `vaccineCode.coding.where(system='http://hl7.org/fhir/sid/ndc').empty()`,
/// says the opposite of its human text; the human text is the requirement, so this
/// checks that an NDC coding is present. Context: Immunization.
fn vaccine_has_ndc(c: &Ctx<'_>) -> bool {
    c.value.get("vaccineCode").is_some_and(|vc| {
        codings(vc).any(|coding| coding.get("system").and_then(Value::as_str) == Some(NDC))
    })
}

/// us-core-6 (Patient): `(family.exists() or given.exists()) xor
/// extension.where(url='...data-absent-reason').exists()`. Context: Patient.name.
fn name_or_absent_reason(c: &Ctx<'_>) -> bool {
    let Some(o) = c.value.as_object() else {
        return true;
    };
    let named = exists(o, "family") || exists(o, "given");
    let absent = items(o.get("extension"))
        .any(|e| e.get("url").and_then(Value::as_str) == Some(DATA_ABSENT_REASON));
    named != absent
}

/// us-core-6 (DocumentReference): `url.exists() or data.exists()`. Context:
/// DocumentReference.content.attachment.
fn attachment_url_or_data(c: &Ctx<'_>) -> bool {
    let Some(o) = c.value.as_object() else {
        return true;
    };
    exists(o, "url") || exists(o, "data")
}

/// us-core-7: `(status='completed' or status='in-progress') implies performed.exists()`.
fn procedure_performed(c: &Ctx<'_>) -> bool {
    let Some(o) = c.value.as_object() else {
        return true;
    };
    !status_in(o, "status", &["completed", "in-progress"]) || choice_exists(o, "performed")
}

const REPORTED: &[&str] = &[
    "partial",
    "preliminary",
    "final",
    "amended",
    "corrected",
    "appended",
];

/// us-core-8, us-core-10: a reported DiagnosticReport has effective[x].
fn report_effective(c: &Ctx<'_>) -> bool {
    let Some(o) = c.value.as_object() else {
        return true;
    };
    !status_in(o, "status", REPORTED) || choice_exists(o, "effective")
}

/// us-core-9: a reported DiagnosticReport has issued.
fn report_issued(c: &Ctx<'_>) -> bool {
    let Some(o) = c.value.as_object() else {
        return true;
    };
    !status_in(o, "status", REPORTED) || exists(o, "issued")
}

/// us-core-13: `practitioner or organization or healthcareService or location`.
fn role_has_anchor(c: &Ctx<'_>) -> bool {
    let Some(o) = c.value.as_object() else {
        return true;
    };
    [
        "practitioner",
        "organization",
        "healthcareService",
        "location",
    ]
    .iter()
    .any(|n| exists(o, n))
}

/// pd-1: `telecom or endpoint`.
fn contact_or_endpoint(c: &Ctx<'_>) -> bool {
    let Some(o) = c.value.as_object() else {
        return true;
    };
    exists(o, "telecom") || exists(o, "endpoint")
}

/// us-core-14: `name.exists() or relationship.exists()`.
fn name_or_relationship(c: &Ctx<'_>) -> bool {
    let Some(o) = c.value.as_object() else {
        return true;
    };
    exists(o, "name") || exists(o, "relationship")
}

/// us-core-15: a member id in `identifier` (type v2-0203#MB) or `subscriberId`.
fn coverage_member_id(c: &Ctx<'_>) -> bool {
    let Some(o) = c.value.as_object() else {
        return true;
    };
    let member_identifier = items(o.get("identifier")).any(|id| {
        id.get("type").is_some_and(|t| {
            codings(t).any(|coding| {
                coding.get("system").and_then(Value::as_str) == Some(V2_0203)
                    && coding.get("code").and_then(Value::as_str) == Some("MB")
            })
        })
    });
    member_identifier || exists(o, "subscriberId")
}

/// us-core-16: `value.matches('^[0-9]{10}$')`. Context: an NPI identifier.
fn npi_ten_digits(c: &Ctx<'_>) -> bool {
    c.value
        .get("value")
        .and_then(Value::as_str)
        .is_none_or(|v| ten_digits(v).is_some())
}

/// us-core-17: the NPI check digit (Luhn over the digits prefixed with 80840, which is
/// where the expression's `+ 24` comes from). A value that is not ten digits is
/// us-core-16's finding, not this one's (`toInteger()` yields empty there).
fn npi_check_digit(c: &Ctx<'_>) -> bool {
    let Some(digits) = c
        .value
        .get("value")
        .and_then(Value::as_str)
        .and_then(ten_digits)
    else {
        return true;
    };
    let sum: u32 = digits
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 0 {
                if d < 5 { d * 2 } else { d * 2 - 9 }
            } else {
                d
            }
        })
        .sum();
    (sum + 24).is_multiple_of(10)
}

/// us-core-18: `value.matches('^[0-9]{2}D[0-9]{7}$')`. Context: a CLIA identifier.
fn clia_format(c: &Ctx<'_>) -> bool {
    let Some(v) = c.value.get("value").and_then(Value::as_str) else {
        return true;
    };
    let b = v.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, ch)| {
            if i == 2 {
                *ch == b'D'
            } else {
                ch.is_ascii_digit()
            }
        })
}

/// us-core-19: `value.matches('^[0-9]{5}$')`. Context: a NAIC identifier.
fn naic_format(c: &Ctx<'_>) -> bool {
    c.value
        .get("value")
        .and_then(Value::as_str)
        .is_none_or(|v| v.len() == 5 && v.bytes().all(|b| b.is_ascii_digit()))
}

/// us-core-20: `status='completed' implies whenHandedOver.exists()`.
fn dispense_handed_over(c: &Ctx<'_>) -> bool {
    let Some(o) = c.value.as_object() else {
        return true;
    };
    !status_in(o, "status", &["completed"]) || exists(o, "whenHandedOver")
}

/// us-core-21: an order (any of the order intents) has a requester.
fn order_has_requester(c: &Ctx<'_>) -> bool {
    let Some(o) = c.value.as_object() else {
        return true;
    };
    let orders = [
        "order",
        "original-order",
        "reflex-order",
        "filler-order",
        "instance-order",
    ];
    !status_in(o, "intent", &orders) || exists(o, "requester")
}

/// provenance-1: `who.exists((resolve() is Practitioner) or (resolve() is Device))
/// implies onBehalfOf.exists()`. Context: Provenance.agent.
fn agent_on_behalf_of(c: &Ctx<'_>) -> bool {
    let Some(o) = c.value.as_object() else {
        return true;
    };
    let who_type = o
        .get("who")
        .and_then(|w| w.get("reference"))
        .and_then(Value::as_str)
        .and_then(|r| reference_type(c.resource, r));
    !matches!(who_type, Some("Practitioner" | "Device")) || exists(o, "onBehalfOf")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// (source, key, context type, passing context, failing context, resource or Null
    /// to use the context as the resource). One positive and one negative case for every
    /// implemented invariant.
    type Case = (
        &'static str,
        &'static str,
        Option<&'static str>,
        Value,
        Value,
        Value,
    );

    fn cases() -> Vec<Case> {
        let no = Value::Null;
        vec![
            (
                "us-core-coverage",
                "us-core-15",
                None,
                json!({"identifier": [{"type": {"coding": [{"system": V2_0203, "code": "MB"}]}, "value": "1"}]}),
                json!({"identifier": [{"type": {"coding": [{"system": V2_0203, "code": "XX"}]}, "value": "1"}]}),
                no.clone(),
            ),
            (
                "us-core-diagnosticreport-lab",
                "us-core-8",
                None,
                json!({"status": "final", "effectiveDateTime": "2024-01-01"}),
                json!({"status": "final", "issued": "2024-01-01T00:00:00Z"}),
                no.clone(),
            ),
            (
                "us-core-diagnosticreport-lab",
                "us-core-9",
                None,
                json!({"status": "amended", "issued": "2024-01-01T00:00:00Z"}),
                json!({"status": "amended"}),
                no.clone(),
            ),
            (
                "us-core-diagnosticreport-note",
                "us-core-10",
                None,
                json!({"status": "registered"}),
                json!({"status": "preliminary"}),
                no.clone(),
            ),
            (
                "us-core-documentreference",
                "us-core-6",
                None,
                json!({"contentType": "text/plain", "data": "aGk="}),
                json!({"contentType": "text/plain"}),
                no.clone(),
            ),
            (
                "us-core-immunization",
                "us-core-5",
                None,
                json!({"vaccineCode": {"coding": [{"system": NDC, "code": "49281-0400-10"}]}}),
                json!({"vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]}}),
                no.clone(),
            ),
            (
                "us-core-medicationdispense",
                "us-core-20",
                None,
                json!({"status": "completed", "whenHandedOver": "2024-01-01"}),
                json!({"status": "completed"}),
                no.clone(),
            ),
            (
                "us-core-medicationrequest",
                "us-core-21",
                None,
                json!({"intent": "plan"}),
                json!({"intent": "original-order"}),
                no.clone(),
            ),
            (
                "us-core-observation-clinical-result",
                "us-core-1",
                Some("dateTime"),
                json!("2024-05-06"),
                json!("2024-05"),
                no.clone(),
            ),
            (
                "us-core-observation-clinical-result",
                "us-core-2",
                None,
                json!({"hasMember": [{"reference": "Observation/1"}]}),
                json!({"status": "final"}),
                no.clone(),
            ),
            (
                "us-core-observation-clinical-result",
                "us-core-3",
                Some("Quantity"),
                json!({"value": 1, "system": UCUM, "code": "mg"}),
                json!({"value": 1, "system": "http://example.org/units", "code": "mg"}),
                no.clone(),
            ),
            (
                "us-core-observation-lab",
                "us-core-4",
                Some("CodeableConcept"),
                json!({"coding": [{"system": SNOMED, "code": "260385009"}]}),
                json!({"coding": [{"system": "http://loinc.org", "code": "LA6577-6"}]}),
                no.clone(),
            ),
            (
                "us-core-observation-screening-assessment",
                "us-core-1",
                Some("dateTime"),
                json!("2024-05-06T10:00:00Z"),
                json!("2024"),
                no.clone(),
            ),
            (
                "us-core-observation-screening-assessment",
                "us-core-2",
                None,
                json!({"valueBoolean": true}),
                json!({}),
                no.clone(),
            ),
            (
                "us-core-observation-screening-assessment",
                "us-core-3",
                None,
                json!({"valueQuantity": {"value": 3, "system": UCUM, "code": "{score}"}}),
                json!({"valueQuantity": {"value": 3, "system": "urn:x"}}),
                no.clone(),
            ),
            (
                "us-core-observation-sexual-orientation",
                "us-core-2",
                None,
                json!({"dataAbsentReason": {"text": "asked, declined"}}),
                json!({"code": {"text": "x"}}),
                no.clone(),
            ),
            (
                "us-core-organization",
                "us-core-16",
                None,
                json!({"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"}),
                json!({"system": "http://hl7.org/fhir/sid/us-npi", "value": "12345"}),
                no.clone(),
            ),
            (
                "us-core-organization",
                "us-core-17",
                None,
                json!({"value": "1234567893"}),
                json!({"value": "1234567890"}),
                no.clone(),
            ),
            (
                "us-core-organization",
                "us-core-18",
                None,
                json!({"value": "12D4567890"}),
                json!({"value": "1234567890"}),
                no.clone(),
            ),
            (
                "us-core-organization",
                "us-core-19",
                None,
                json!({"value": "12345"}),
                json!({"value": "1234a"}),
                no.clone(),
            ),
            (
                "us-core-patient",
                "us-core-6",
                None,
                json!({"family": "Doe"}),
                json!({"family": "Doe", "extension": [{"url": DATA_ABSENT_REASON, "valueCode": "unknown"}]}),
                no.clone(),
            ),
            (
                "us-core-practitioner",
                "us-core-16",
                None,
                json!({"value": "1234567893"}),
                json!({"value": "123456789"}),
                no.clone(),
            ),
            (
                "us-core-practitioner",
                "us-core-17",
                None,
                json!({"value": "1234567893"}),
                json!({"value": "1234567894"}),
                no.clone(),
            ),
            (
                "us-core-practitionerrole",
                "pd-1",
                None,
                json!({"endpoint": [{"reference": "Endpoint/1"}]}),
                json!({"practitioner": {"reference": "Practitioner/1"}}),
                no.clone(),
            ),
            (
                "us-core-practitionerrole",
                "us-core-13",
                None,
                json!({"location": [{"reference": "Location/1"}]}),
                json!({"telecom": [{"system": "phone", "value": "1"}]}),
                no.clone(),
            ),
            (
                "us-core-procedure",
                "us-core-7",
                None,
                json!({"status": "in-progress", "performedDateTime": "2024"}),
                json!({"status": "completed"}),
                no.clone(),
            ),
            (
                "us-core-provenance",
                "provenance-1",
                None,
                json!({"who": {"reference": "Practitioner/1"}, "onBehalfOf": {"reference": "Organization/1"}}),
                json!({"who": {"reference": "#dev"}}),
                json!({"resourceType": "Provenance", "contained": [{"resourceType": "Device", "id": "dev"}]}),
            ),
            (
                "us-core-relatedperson",
                "us-core-14",
                None,
                json!({"relationship": [{"text": "niece"}]}),
                json!({"active": true}),
                no.clone(),
            ),
            (
                "us-core-smokingstatus",
                "us-core-3",
                Some("Quantity"),
                json!({"value": 1}),
                json!({"value": 1, "system": "urn:x"}),
                no.clone(),
            ),
            (
                "vitalsigns",
                "vs-1",
                Some("dateTime"),
                json!("2024-05-06"),
                json!("2024-05"),
                no.clone(),
            ),
            (
                "vitalsigns",
                "vs-2",
                None,
                json!({"component": [{"code": {"text": "x"}}]}),
                json!({"code": {"text": "x"}}),
                no.clone(),
            ),
            (
                "vitalsigns",
                "vs-3",
                None,
                json!({"code": {"text": "x"}, "valueQuantity": {"value": 1}}),
                json!({"code": {"text": "x"}}),
                no,
            ),
        ]
    }

    #[test]
    fn every_invariant_has_a_passing_and_a_failing_case() {
        let cases = cases();
        for (source, key, _) in IMPLEMENTED {
            assert!(
                cases.iter().any(|c| c.0 == *source && c.1 == *key),
                "no test case for {source}#{key}"
            );
        }
        for (source, key, type_name, good, bad, resource) in &cases {
            let check = lookup(source, key).unwrap_or_else(|| panic!("{source}#{key}"));
            let res_of = |v: &Value| {
                if resource.is_null() {
                    v.clone()
                } else {
                    resource.clone()
                }
            };
            let good_res = res_of(good);
            let bad_res = res_of(bad);
            let ok = Ctx {
                value: good,
                type_name: *type_name,
                resource: &good_res,
            };
            assert!(check(&ok), "{source}#{key} should pass on {good}");
            let not_ok = Ctx {
                value: bad,
                type_name: *type_name,
                resource: &bad_res,
            };
            assert!(!check(&not_ok), "{source}#{key} should fail on {bad}");
        }
    }

    #[test]
    fn references_resolve_to_their_type() {
        let r = json!({"contained": [{"resourceType": "Device", "id": "d1"}]});
        assert_eq!(reference_type(&r, "Practitioner/1"), Some("Practitioner"));
        assert_eq!(
            reference_type(&r, "https://x.org/fhir/Device/7/_history/2"),
            Some("Device")
        );
        assert_eq!(reference_type(&r, "#d1"), Some("Device"));
        assert_eq!(reference_type(&r, "#nope"), None);
        assert_eq!(reference_type(&r, "urn:uuid:1234"), None);
    }
}
