//! US Core 6.1.0 profile validation, without a database: the published examples are valid,
//! and our own invalid variants fail where and how they should.

use std::path::{Path, PathBuf};

use hearth::conformance::{
    ProfileIssue, ProfileIssueCode, R4Structure, Severity, known_profiles, profiles_for,
    validate_profile,
};
use serde_json::{Value, json};

const US_CORE: &str = "http://hl7.org/fhir/us/core/StructureDefinition/";
const LOINC: &str = "http://loinc.org";
const UCUM: &str = "http://unitsofmeasure.org";
const OBS_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
const CDCREC: &str = "urn:oid:2.16.840.1.113883.6.238";
const NPI: &str = "http://hl7.org/fhir/sid/us-npi";
/// Offending values carry this marker so the tests can check no message repeats them.
const SECRET: &str = "zz-secret";

/// Base R4 findings in the published examples that are defects of the example, not of
/// `structure.rs`: (file, expression). `diagnosticreport-cbc.json` has
/// `text: {"status": "generated"}` without `div`, which R4 requires (Narrative.div 1..1);
/// the IG publisher fills narrative in when it builds the guide, and this copy is the
/// source form.
const KNOWN_EXAMPLE_DEFECTS: &[(&str, &str)] =
    &[("diagnosticreport-cbc.json", "DiagnosticReport.text.div")];

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/us-core-6.1.0/examples")
}

fn url(name: &str) -> String {
    format!("{US_CORE}{name}")
}

fn errors(issues: &[ProfileIssue]) -> Vec<&ProfileIssue> {
    issues
        .iter()
        .filter(|i| i.severity == Severity::Error)
        .collect()
}

/// The resources of an example file with the profiles they claim: the resource itself,
/// and for a Bundle each entry's resource.
fn claims(resource: &Value) -> Vec<(&Value, Vec<&str>)> {
    fn profiles(r: &Value) -> Vec<&str> {
        r.pointer("/meta/profile")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }
    let mut out = vec![(resource, profiles(resource))];
    if let Some(entries) = resource.get("entry").and_then(Value::as_array) {
        for r in entries.iter().filter_map(|e| e.get("resource")) {
            out.push((r, profiles(r)));
        }
    }
    out
}

#[test]
fn every_published_example_is_valid() {
    let dir = examples_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!(
            "note: {} is absent; the published US Core examples are not checked",
            dir.display()
        );
        return;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let structure = R4Structure::global();
    let mut failures = Vec::new();
    let (mut validations, mut warnings) = (0usize, 0usize);
    for file in &files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{name}: {e}"));
        let resource: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        for issue in structure.validate_resource(&resource) {
            if KNOWN_EXAMPLE_DEFECTS.contains(&(name.as_str(), issue.expression.as_str())) {
                continue;
            }
            failures.push(format!(
                "{name}: R4 structure: {} {:?}: {}",
                issue.expression, issue.class, issue.message
            ));
        }
        for (r, profiles) in claims(&resource) {
            for profile in profiles.into_iter().filter(|p| p.starts_with(US_CORE)) {
                let issues = validate_profile(r, profile).unwrap_or_else(|e| panic!("{name}: {e}"));
                validations += 1;
                warnings += issues.len() - errors(&issues).len();
                for i in errors(&issues) {
                    failures.push(format!(
                        "{name}: {profile}: {} {}: {}",
                        i.expression,
                        i.code.as_str(),
                        i.message
                    ));
                }
            }
        }
    }
    println!(
        "{} example files, {validations} profile validations, {warnings} warnings",
        files.len()
    );
    assert!(files.len() >= 150, "only {} examples", files.len());
    assert!(validations >= 150, "only {validations} validations");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A resource that claims no profile gets the ones `profiles_for` picks; for the published
/// examples, that is the profile they claim.
#[test]
fn implied_profiles_agree_with_the_examples() {
    let Ok(entries) = std::fs::read_dir(examples_dir()) else {
        eprintln!("note: the published US Core examples are absent; not checked");
        return;
    };
    let mut disagreements = Vec::new();
    for path in entries.filter_map(Result::ok).map(|e| e.path()) {
        let Some(resource) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        else {
            continue;
        };
        for (r, claimed) in claims(&resource) {
            let claimed: Vec<&str> = claimed
                .into_iter()
                .filter(|p| p.starts_with(US_CORE))
                .collect();
            if claimed.is_empty() {
                continue;
            }
            let implied = profiles_for(r);
            if implied.is_empty() {
                continue; // e.g. Device: US Core profiles only implantable ones
            }
            if implied != claimed {
                disagreements.push(format!("{}: {implied:?} vs {claimed:?}", path.display()));
            }
        }
    }
    disagreements.sort();
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}

#[test]
fn counts() {
    assert_eq!(known_profiles().count(), 49);
    let observation = known_profiles()
        .filter(|(_, t)| *t == "Observation")
        .count();
    assert_eq!(observation, 22);
    assert!(known_profiles().all(|(u, _)| u.starts_with(US_CORE)));
}

// ---------------------------------------------------------------------------------------
// Synthetic resources (not the published examples) and invalid variants of them
// ---------------------------------------------------------------------------------------

fn patient() -> Value {
    json!({
        "resourceType": "Patient", "id": "p1",
        "identifier": [{"system": "http://hospital.example.org/mrn", "value": "A-1"}],
        "name": [{"family": "Testperson", "given": ["Alex"]}],
        "gender": "unknown",
        "extension": [{
            "url": url("us-core-race"),
            "extension": [
                {"url": "ombCategory", "valueCoding": {"system": CDCREC, "code": "2106-3"}},
                {"url": "text", "valueString": "White"}
            ]
        }]
    })
}

fn vital_sign_category() -> Value {
    json!([{"coding": [{"system": OBS_CATEGORY, "code": "vital-signs"}]}])
}

fn body_weight() -> Value {
    json!({
        "resourceType": "Observation", "id": "w1", "status": "final",
        "category": vital_sign_category(),
        "code": {"coding": [{"system": LOINC, "code": "29463-7"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2024-03-04",
        "valueQuantity": {"value": 70.5, "unit": "kg", "system": UCUM, "code": "kg"}
    })
}

fn blood_pressure() -> Value {
    let component = |code: &str, value: u32| {
        json!({
            "code": {"coding": [{"system": LOINC, "code": code}]},
            "valueQuantity": {"value": value, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}
        })
    };
    json!({
        "resourceType": "Observation", "id": "bp1", "status": "final",
        "category": vital_sign_category(),
        "code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2024-03-04T10:00:00Z",
        "component": [component("8480-6", 120), component("8462-4", 80)]
    })
}

fn lab_result() -> Value {
    json!({
        "resourceType": "Observation", "id": "l1", "status": "final",
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": "laboratory"}]}],
        "code": {"coding": [{"system": LOINC, "code": "2345-7"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2024-03-04",
        "valueQuantity": {"value": 5.4, "unit": "mmol/L", "system": UCUM, "code": "mmol/L"}
    })
}

fn problem() -> Value {
    json!({
        "resourceType": "Condition", "id": "c1",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "problem-list-item"}]}],
        "code": {"text": "Something"},
        "subject": {"reference": "Patient/p1"}
    })
}

fn allergy() -> Value {
    json!({
        "resourceType": "AllergyIntolerance", "id": "a1",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}]},
        "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "code": "confirmed"}]},
        "code": {"text": "Peanut"},
        "patient": {"reference": "Patient/p1"}
    })
}

fn medication_request() -> Value {
    json!({
        "resourceType": "MedicationRequest", "id": "m1", "status": "active", "intent": "order",
        "medicationCodeableConcept": {"text": "Something"},
        "subject": {"reference": "Patient/p1"},
        "requester": {"reference": "Practitioner/d1"}
    })
}

fn practitioner_role() -> Value {
    json!({
        "resourceType": "PractitionerRole", "id": "r1",
        "practitioner": {"reference": "Practitioner/d1"},
        "telecom": [{"system": "phone", "value": "555-0100"}]
    })
}

fn practitioner() -> Value {
    json!({
        "resourceType": "Practitioner", "id": "d1",
        "identifier": [{"system": NPI, "value": "1234567893"}],
        "name": [{"family": "Doctor"}]
    })
}

fn document_reference() -> Value {
    json!({
        "resourceType": "DocumentReference", "id": "doc1", "status": "current",
        "type": {"coding": [{"system": LOINC, "code": "18842-5"}]},
        "category": [{"coding": [{"system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category", "code": "clinical-note"}]}],
        "subject": {"reference": "Patient/p1"},
        "content": [{"attachment": {"contentType": "text/plain", "url": "Binary/b1"}}]
    })
}

type Mutation = fn(&mut Value);
type Make = fn() -> Value;

struct Variant {
    name: &'static str,
    profile: &'static str,
    valid: Make,
    change: Mutation,
    /// The error findings expected, exactly: (expression, code).
    expected: &'static [(&'static str, ProfileIssueCode)],
}

fn remove(v: &mut Value, key: &str) {
    if let Some(o) = v.as_object_mut() {
        o.shift_remove(key);
    }
}

fn set(v: &mut Value, pointer: &str, value: Value) {
    match v.pointer_mut(pointer) {
        Some(slot) => *slot = value,
        None => panic!("no {pointer}"),
    }
}

use ProfileIssueCode::{CodeInvalid, Invariant, Required, Structure, Value as ValueCode};

const VARIANTS: &[Variant] = &[
    Variant {
        name: "Patient without identifier",
        profile: "us-core-patient",
        valid: patient,
        change: |p| remove(p, "identifier"),
        expected: &[("Patient.identifier", Required)],
    },
    Variant {
        name: "Patient without name",
        profile: "us-core-patient",
        valid: patient,
        change: |p| remove(p, "name"),
        expected: &[("Patient.name", Required)],
    },
    Variant {
        name: "Patient identifier without system (required inside a present element)",
        profile: "us-core-patient",
        valid: patient,
        change: |p| {
            if let Some(id) = p.pointer_mut("/identifier/0") {
                remove(id, "system");
            }
        },
        expected: &[("Patient.identifier[0].system", Required)],
    },
    Variant {
        name: "vital sign without the vital-signs category",
        profile: "us-core-body-weight",
        valid: body_weight,
        change: |o| {
            set(o, "/category/0/coding/0/code", json!("social-history"));
        },
        expected: &[("Observation.category", Required)],
    },
    Variant {
        name: "vital sign without any category",
        profile: "us-core-body-weight",
        valid: body_weight,
        change: |o| remove(o, "category"),
        expected: &[
            ("Observation.category", Required),
            ("Observation.category", Required),
        ],
    },
    Variant {
        name: "vital sign with a misspelt category code",
        profile: "us-core-vital-signs",
        valid: body_weight,
        change: |o| set(o, "/category/0/coding/0/code", json!(SECRET)),
        expected: &[("Observation.category", Required)],
    },
    Variant {
        name: "blood pressure with another LOINC code",
        profile: "us-core-blood-pressure",
        valid: blood_pressure,
        change: |o| set(o, "/code/coding/0/code", json!("1234-5")),
        expected: &[("Observation.code", ValueCode)],
    },
    Variant {
        name: "blood pressure without a diastolic component",
        profile: "us-core-blood-pressure",
        valid: blood_pressure,
        change: |o| {
            if let Some(c) = o.get_mut("component").and_then(Value::as_array_mut) {
                c.truncate(1);
            }
        },
        expected: &[
            ("Observation.component", Required),
            ("Observation.component", Required),
        ],
    },
    Variant {
        name: "blood pressure systolic in the wrong unit",
        profile: "us-core-blood-pressure",
        valid: blood_pressure,
        change: |o| set(o, "/component/0/valueQuantity/code", json!("kPa")),
        expected: &[("Observation.component[0].valueQuantity.code", ValueCode)],
    },
    Variant {
        name: "vital sign with a type the profile does not allow",
        profile: "us-core-body-weight",
        valid: body_weight,
        change: |o| {
            remove(o, "effectiveDateTime");
            if let Some(m) = o.as_object_mut() {
                m.insert("effectiveInstant".into(), json!("2024-03-04T10:00:00Z"));
            }
        },
        expected: &[("Observation.effectiveInstant", Structure)],
    },
    Variant {
        name: "body weight in a unit outside its value set",
        profile: "us-core-body-weight",
        valid: body_weight,
        change: |o| set(o, "/valueQuantity/code", json!(SECRET)),
        expected: &[("Observation.valueQuantity.code", CodeInvalid)],
    },
    Variant {
        name: "Condition clinicalStatus outside the required value set",
        profile: "us-core-condition-problems-health-concerns",
        valid: problem,
        change: |c| set(c, "/clinicalStatus/coding/0/code", json!(SECRET)),
        expected: &[("Condition.clinicalStatus", CodeInvalid)],
    },
    Variant {
        name: "AllergyIntolerance verificationStatus outside the required value set",
        profile: "us-core-allergyintolerance",
        valid: allergy,
        change: |a| set(a, "/verificationStatus/coding/0/code", json!(SECRET)),
        expected: &[("AllergyIntolerance.verificationStatus", CodeInvalid)],
    },
    Variant {
        name: "Condition without a problem or health-concern category",
        profile: "us-core-condition-problems-health-concerns",
        valid: problem,
        change: |c| set(c, "/category/0/coding/0/code", json!("encounter-diagnosis")),
        expected: &[("Condition.category", Required)],
    },
    Variant {
        name: "Condition about a Group (reference to the wrong target type)",
        profile: "us-core-condition-problems-health-concerns",
        valid: problem,
        change: |c| set(c, "/subject/reference", json!("Group/g1")),
        expected: &[("Condition.subject", Structure)],
    },
    Variant {
        name: "us-core-2: lab result without value, data absent reason or component",
        profile: "us-core-observation-lab",
        valid: lab_result,
        change: |o| remove(o, "valueQuantity"),
        expected: &[("Observation", Invariant)],
    },
    Variant {
        name: "us-core-21: medication order without requester",
        profile: "us-core-medicationrequest",
        valid: medication_request,
        change: |m| remove(m, "requester"),
        expected: &[("MedicationRequest", Invariant)],
    },
    Variant {
        name: "pd-1: PractitionerRole without telecom or endpoint",
        profile: "us-core-practitionerrole",
        valid: practitioner_role,
        change: |r| remove(r, "telecom"),
        expected: &[("PractitionerRole", Invariant)],
    },
    Variant {
        name: "us-core-6: DocumentReference attachment without url or data",
        profile: "us-core-documentreference",
        valid: document_reference,
        change: |d| {
            if let Some(a) = d.pointer_mut("/content/0/attachment") {
                remove(a, "url");
            }
        },
        expected: &[("DocumentReference.content[0].attachment", Invariant)],
    },
    Variant {
        name: "us-core-16: NPI not 10 digits",
        profile: "us-core-practitioner",
        valid: practitioner,
        change: |p| set(p, "/identifier/0/value", json!("12345")),
        expected: &[("Practitioner.identifier[0]", Invariant)],
    },
    Variant {
        name: "us-core-17: NPI with a wrong check digit",
        profile: "us-core-practitioner",
        valid: practitioner,
        change: |p| set(p, "/identifier/0/value", json!("1234567894")),
        expected: &[("Practitioner.identifier[0]", Invariant)],
    },
    Variant {
        name: "unknown US Core extension on Patient",
        profile: "us-core-patient",
        valid: patient,
        change: |p| {
            if let Some(e) = p.get_mut("extension").and_then(Value::as_array_mut) {
                e.push(json!({"url": url("us-core-shoe-size"), "valueString": SECRET}));
            }
        },
        expected: &[("Patient.extension[1]", Structure)],
    },
    Variant {
        name: "race extension without its text sub-extension",
        profile: "us-core-patient",
        valid: patient,
        change: |p| {
            if let Some(e) = p
                .pointer_mut("/extension/0/extension")
                .and_then(Value::as_array_mut)
            {
                e.truncate(1);
            }
        },
        expected: &[("Patient.extension[0]", Required)],
    },
    Variant {
        name: "race ombCategory outside the OMB categories",
        profile: "us-core-patient",
        valid: patient,
        change: |p| {
            set(
                p,
                "/extension/0/extension/0/valueCoding/code",
                json!(SECRET),
            )
        },
        expected: &[("Patient.extension[0].extension[0].valueCoding", CodeInvalid)],
    },
    Variant {
        name: "birth sex with a code outside its value set",
        profile: "us-core-patient",
        valid: patient,
        change: |p| {
            if let Some(e) = p.get_mut("extension").and_then(Value::as_array_mut) {
                e.push(json!({"url": url("us-core-birthsex"), "valueCode": SECRET}));
            }
        },
        expected: &[("Patient.extension[1].valueCode", CodeInvalid)],
    },
    Variant {
        name: "birth sex with a value of the wrong type",
        profile: "us-core-patient",
        valid: patient,
        change: |p| {
            if let Some(e) = p.get_mut("extension").and_then(Value::as_array_mut) {
                e.push(json!({"url": url("us-core-birthsex"), "valueString": SECRET}));
            }
        },
        expected: &[("Patient.extension[1].valueString", Structure)],
    },
    Variant {
        name: "two race extensions (slice maximum)",
        profile: "us-core-patient",
        valid: patient,
        change: |p| {
            if let Some(e) = p.get_mut("extension").and_then(Value::as_array_mut)
                && let Some(first) = e.first().cloned()
            {
                e.push(first);
            }
        },
        expected: &[("Patient.extension", Structure)],
    },
    Variant {
        name: "race extension on an Organization (outside its context)",
        profile: "us-core-organization",
        valid: || {
            json!({
                "resourceType": "Organization", "id": "o1", "active": true, "name": "Clinic"
            })
        },
        change: |o| {
            if let Some(m) = o.as_object_mut() {
                m.insert("extension".into(), patient()["extension"].clone());
            }
        },
        expected: &[("Organization.extension[0]", Structure)],
    },
];

#[test]
fn valid_synthetic_resources_pass() {
    let structure = R4Structure::global();
    let valid: &[(Make, &str)] = &[
        (patient, "us-core-patient"),
        (body_weight, "us-core-body-weight"),
        (blood_pressure, "us-core-blood-pressure"),
        (lab_result, "us-core-observation-lab"),
        (problem, "us-core-condition-problems-health-concerns"),
        (allergy, "us-core-allergyintolerance"),
        (medication_request, "us-core-medicationrequest"),
        (practitioner_role, "us-core-practitionerrole"),
        (practitioner, "us-core-practitioner"),
        (document_reference, "us-core-documentreference"),
    ];
    for (make, profile) in valid {
        let r = make();
        assert_eq!(structure.validate_resource(&r), vec![], "{profile}");
        let issues = validate_profile(&r, &url(profile)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(issues, vec![], "{profile}");
        assert_eq!(profiles_for(&r), vec![url(profile).as_str()], "{profile}");
    }
}

#[test]
fn invalid_variants_fail_where_expected() {
    let structure = R4Structure::global();
    let mut failures = Vec::new();
    for v in VARIANTS {
        let mut r = (v.valid)();
        (v.change)(&mut r);
        // Every variant is still valid base R4: what fails is the profile.
        let base = structure.validate_resource(&r);
        if !base.is_empty() {
            failures.push(format!("{}: not valid R4: {base:?}", v.name));
            continue;
        }
        let issues = match validate_profile(&r, &url(v.profile)) {
            Ok(i) => i,
            Err(e) => {
                failures.push(format!("{}: {e}", v.name));
                continue;
            }
        };
        let mut got: Vec<(&str, ProfileIssueCode)> = errors(&issues)
            .iter()
            .map(|i| (i.expression.as_str(), i.code))
            .collect();
        got.sort_by_key(|(e, c)| (e.to_string(), c.as_str()));
        let mut want = v.expected.to_vec();
        want.sort_by_key(|(e, c)| (e.to_string(), c.as_str()));
        if got != want {
            failures.push(format!("{}: got {issues:#?}, want {want:?}", v.name));
        }
        for i in &issues {
            if i.message.contains(SECRET) || i.expression.contains(SECRET) {
                failures.push(format!(
                    "{}: an issue repeats the offending value: {i:?}",
                    v.name
                ));
            }
            if i.profile != url(v.profile) {
                failures.push(format!("{}: issue names profile {}", v.name, i.profile));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_resource_of_another_type_is_a_structure_issue() {
    let issues = validate_profile(&patient(), &url("us-core-encounter")).unwrap_or_default();
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].code, Structure);
    assert_eq!(issues[0].expression, "Patient");
}
