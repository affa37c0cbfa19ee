//! Every US Core 6.1.0 SHALL search (single parameters and combinations, per resource type)
//! finds exactly the resource it describes and not its look-alike. The list comes from
//! Hearth's registry (`profiles/search/parameters.json`); when `../shared/us-core-6.1.0` is
//! present, its server CapabilityStatement is counted against it.

mod common;

use std::collections::BTreeSet;

use common::{Ctx, ctx};
use hearth::search::extract::{IndexValue, extract};
use hearth::search::{ParamType, SearchRegistry};
use serde_json::{Value, json};

fn cc(system: &str, code: &str) -> Value {
    json!({"coding": [{"system": system, "code": code}], "text": code})
}

fn reference(r: &str) -> Value {
    json!({"reference": r})
}

/// A resource of `ty` for variant `a` (true) or its look-alike `b`, differing in every
/// searchable value US Core names.
fn fixture(ty: &str, a: bool) -> Option<Value> {
    let pick = |x: &str, y: &str| if a { x.to_owned() } else { y.to_owned() };
    let v = pick("a", "b");
    let patient = reference(&pick("Patient/pat-a", "Patient/pat-b"));
    let date = pick("2024-03-05", "2001-01-01");
    let instant = pick("2024-03-05T10:00:00Z", "2001-01-01T10:00:00Z");
    let id = format!("{}-{v}", ty.to_lowercase());
    let snomed = "http://snomed.info/sct";
    let loinc = "http://loinc.org";
    let mut r = match ty {
        "Patient" => json!({"identifier": [{"system": "urn:mrn", "value": pick("A-100", "B-200")}],
            "name": [{"family": pick("Alpha", "Beta"), "given": [pick("Ann", "Bob")]}],
            "gender": pick("female", "male"), "birthDate": pick("1970-05-06", "1980-01-01")}),
        "Practitioner" => {
            json!({"identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": pick("1111111111", "2222222222")}],
            "name": [{"family": pick("Alder", "Birch")}]})
        }
        "Organization" => {
            json!({"name": pick("Alpha Health", "Beta Care"), "address": [{"city": pick("Springfield", "Shelbyville"), "state": "MA"}]})
        }
        "Location" => {
            json!({"name": pick("Alpha Clinic", "Beta Hospital"), "address": {"city": pick("Springfield", "Shelbyville"), "state": "MA"}})
        }
        "PractitionerRole" => {
            json!({"practitioner": reference(&pick("Practitioner/practitioner-a", "Practitioner/practitioner-b")),
            "specialty": [cc("http://nucc.org/provider-taxonomy", &pick("207Q00000X", "208D00000X"))]})
        }
        "AllergyIntolerance" => {
            json!({"patient": patient, "code": cc(snomed, &pick("91936005", "300916003")),
            "clinicalStatus": cc("http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "active")})
        }
        "CarePlan" => json!({"status": "active", "intent": "plan", "subject": patient,
            "category": [cc("http://hl7.org/fhir/us/core/CodeSystem/careplan-category", &pick("assess-plan", "other-plan"))]}),
        "CareTeam" => json!({"status": pick("active", "inactive"), "subject": patient}),
        "Condition" => {
            json!({"subject": patient, "code": cc(snomed, &pick("44054006", "38341003")),
            "category": [cc("http://terminology.hl7.org/CodeSystem/condition-category", &pick("problem-list-item", "encounter-diagnosis"))]})
        }
        "Coverage" => {
            json!({"status": "active", "beneficiary": patient, "payor": [reference("Organization/organization-a")]})
        }
        "Device" => json!({"patient": patient, "type": cc(snomed, &pick("14106009", "72506001"))}),
        "DiagnosticReport" => {
            json!({"status": "final", "subject": patient, "effectiveDateTime": date,
            "category": [cc("http://terminology.hl7.org/CodeSystem/v2-0074", &pick("LAB", "RAD"))], "code": cc(loinc, &pick("24323-8", "58410-2"))})
        }
        "DocumentReference" => json!({"status": "current", "subject": patient, "date": instant,
            "type": cc(loinc, &pick("11506-3", "18842-5")),
            "category": [cc("http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category", &pick("clinical-note", "other-note"))],
            "content": [{"attachment": {"contentType": "text/plain", "data": "aGk="}}]}),
        "Encounter" => json!({"status": "finished", "subject": patient,
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "period": {"start": instant, "end": instant}}),
        "Goal" => {
            json!({"lifecycleStatus": "active", "description": {"text": "walk"}, "subject": patient})
        }
        "Immunization" => {
            json!({"status": "completed", "vaccineCode": cc("http://hl7.org/fhir/sid/cvx", "207"), "patient": patient, "occurrenceDateTime": date})
        }
        "MedicationDispense" => {
            json!({"status": "completed", "subject": patient, "medicationCodeableConcept": cc("http://www.nlm.nih.gov/research/umls/rxnorm", "860975")})
        }
        "MedicationRequest" => {
            json!({"status": pick("active", "stopped"), "intent": pick("order", "plan"), "subject": patient,
            "medicationCodeableConcept": cc("http://www.nlm.nih.gov/research/umls/rxnorm", "860975")})
        }
        "Observation" => {
            json!({"status": "final", "subject": patient, "effectiveDateTime": instant,
            "category": [cc("http://terminology.hl7.org/CodeSystem/observation-category", &pick("laboratory", "vital-signs"))], "code": cc(loinc, &pick("4548-4", "8867-4"))})
        }
        "Procedure" => {
            json!({"status": "completed", "subject": patient, "code": cc(snomed, "80146002"), "performedDateTime": date})
        }
        "QuestionnaireResponse" => json!({"status": "completed", "subject": patient}),
        "RelatedPerson" => json!({"patient": patient}),
        "ServiceRequest" => {
            json!({"status": "active", "intent": "order", "subject": patient, "authoredOn": instant,
            "category": [cc(snomed, &pick("108252007", "363679005"))], "code": cc(loinc, &pick("24323-8", "58410-2"))})
        }
        "Specimen" => json!({"subject": patient}),
        _ => return None,
    };
    r["resourceType"] = json!(ty);
    r["id"] = json!(id);
    Some(r)
}

/// A search value for `param` that the resource satisfies, derived from its own index rows.
fn value_for(ty: &str, resource: &Value, param: &str) -> String {
    if param == "_id" {
        return resource["id"].as_str().unwrap_or_default().to_owned();
    }
    let p = SearchRegistry::global()
        .param(ty, param)
        .unwrap_or_else(|| panic!("{ty}.{param} in registry"));
    let values: Vec<IndexValue> = extract(ty, resource, "https://x/fhir/t/")
        .into_iter()
        .filter(|e| e.param == param)
        .map(|e| e.value)
        .collect();
    let first = values
        .first()
        .unwrap_or_else(|| panic!("{ty}.{param}: the fixture has no value"));
    match (p.param_type, first) {
        (ParamType::Reference, IndexValue::Reference(r)) => format!(
            "{}/{}",
            r.target_type.clone().unwrap_or_default(),
            r.target_id.clone().unwrap_or_default()
        ),
        (ParamType::Token, _) => values
            .iter()
            .find_map(|v| match v {
                IndexValue::Token(t) => t.code.as_ref().map(|c| match &t.system {
                    Some(s) => format!("{s}|{c}"),
                    None => c.clone(),
                }),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{ty}.{param}: no coded token")),
        (ParamType::String, IndexValue::String(s)) => s.normalized.chars().take(4).collect(),
        (ParamType::Date, IndexValue::Date(d)) => format!(
            "ge{}",
            d.lo.map(|l| l.format("%Y-%m-%d").to_string())
                .unwrap_or_default()
        ),
        other => panic!("{ty}.{param}: no value rule for {other:?}"),
    }
}

async fn put(ctx: &Ctx, resource: &Value) {
    let path = format!(
        "{}/{}",
        resource["resourceType"].as_str().unwrap_or_default(),
        resource["id"].as_str().unwrap_or_default()
    );
    let r = ctx.put(&path, resource).send().await.expect("put");
    let status = r.status();
    assert!(
        status.is_success(),
        "{path}: {}",
        r.text().await.unwrap_or_default()
    );
}

#[tokio::test]
async fn every_us_core_shall_search_finds_exactly_its_resource() {
    let ctx = ctx().await;
    let registry = SearchRegistry::global();
    let types: Vec<&str> = ["Patient", "Practitioner", "Organization"]
        .into_iter()
        .chain(
            registry
                .searchable_types()
                .filter(|t| !matches!(*t, "Patient" | "Practitioner" | "Organization")),
        )
        .collect();
    for ty in &types {
        if registry.us_core(ty).is_some_and(|u| !u.shall.is_empty()) {
            for a in [true, false] {
                let r = fixture(ty, a).unwrap_or_else(|| panic!("a fixture for {ty}"));
                put(&ctx, &r).await;
            }
        }
    }
    let mut checked = 0;
    let mut sorted_types = types.clone();
    sorted_types.sort_unstable();
    for ty in sorted_types {
        let Some(us_core) = registry.us_core(ty) else {
            continue;
        };
        for combo in &us_core.shall {
            let a = fixture(ty, true).expect("fixture");
            let query: Vec<(String, String)> = combo
                .iter()
                .map(|p| (p.clone(), value_for(ty, &a, p)))
                .collect();
            let qs = serde_urlencoded::to_string(&query).expect("query string");
            let bundle: Value = ctx
                .get(&format!("{ty}?{qs}"))
                .send()
                .await
                .expect("search")
                .json()
                .await
                .expect("json");
            let found: BTreeSet<String> = bundle["entry"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["search"]["mode"] == "match")
                .filter_map(|e| e["resource"]["id"].as_str().map(str::to_owned))
                .collect();
            let expected: BTreeSet<String> =
                [a["id"].as_str().unwrap_or_default().to_owned()].into();
            assert_eq!(found, expected, "{ty}?{qs}: {bundle}");
            checked += 1;
        }
    }
    assert_eq!(checked, shall_count_in_registry());
    assert!(checked >= 50, "{checked} SHALL searches checked");
    if let Some(official) = official_shall_count() {
        assert_eq!(
            checked, official,
            "the registry's SHALL searches match US Core's CapabilityStatement"
        );
    }
}

fn shall_count_in_registry() -> usize {
    let registry = SearchRegistry::global();
    registry
        .searchable_types()
        .filter_map(|t| registry.us_core(t))
        .map(|u| u.shall.len())
        .sum()
}

/// SHALL single-parameter searches and SHALL combinations in the official US Core server
/// CapabilityStatement, when the reference copy is present.
fn official_shall_count() -> Option<usize> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/us-core-6.1.0/resources/CapabilityStatement-us-core-server.json");
    let cs: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let expectation = |v: &Value| {
        v["extension"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| {
                e["url"]
                    == "http://hl7.org/fhir/StructureDefinition/capabilitystatement-expectation"
            })
            .and_then(|e| e["valueCode"].as_str())
            .map(str::to_owned)
    };
    let mut count = 0;
    for resource in cs["rest"][0]["resource"].as_array()? {
        count += resource["searchParam"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| expectation(p).as_deref() == Some("SHALL"))
            .count();
        count += resource["extension"].as_array().into_iter().flatten()
            .filter(|e| e["url"] == "http://hl7.org/fhir/StructureDefinition/capabilitystatement-search-parameter-combination")
            .filter(|e| expectation(e).as_deref() == Some("SHALL"))
            .count();
    }
    Some(count)
}
