//! Prior-authorization extraction: the accuracy evaluation over our synthetic cases
//! (`tests/fixtures/prior-auth/`: records planted through the REST write path and HL7 v2
//! ORU messages sent over MLLP by the PyPI `hl7` client, with near-misses that must not
//! count), and `Questionnaire/$populate`'s refusals.
//!
//! Rerun the evaluation with its report:
//! `cargo test --test prior_auth accuracy_evaluation -- --nocapture`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{Ctx, ctx, expect_outcome};
use serde_json::{Value, json};

const EVIDENCE: &str = "http://hearth.health/fhir/StructureDefinition/evidence";
const NOT_FOUND: &str = "http://hearth.health/fhir/StructureDefinition/not-found";

fn cases() -> Vec<(String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/prior-auth");
    let mut cases: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let name = p.file_stem().expect("name").to_string_lossy().into_owned();
            let case: Value = serde_json::from_str(&std::fs::read_to_string(&p).expect("read"))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, case)
        })
        .collect();
    cases.sort_by(|a, b| a.0.cmp(&b.0));
    cases
}

/// An MLLP listener for the context's tenant, for the cases' lab feed (MSH-3 LAB, MSH-4
/// HEARTH).
fn lab_listener(ctx: &Ctx) -> (hearth::hl7v2::service::MllpService, u16) {
    common::peer::listener_for(
        ctx,
        hearth::config::FeedConfig {
            name: "lab".into(),
            sending_application: Some("LAB".into()),
            sending_facility: Some("HEARTH".into()),
            time_zone: Some("America/New_York".into()),
            ..hearth::config::FeedConfig::default()
        },
    )
}

/// Write the case's record: resources in order (PUT with their ids), then its HL7 v2
/// messages over MLLP (each must be acknowledged AA).
async fn plant(ctx: &Ctx, name: &str, case: &Value) {
    for r in case["resources"].as_array().expect("resources") {
        let path = format!(
            "{}/{}",
            r["resourceType"].as_str().expect("type"),
            r["id"].as_str().expect("id")
        );
        let response = ctx.put(&path, r).send().await.expect("put");
        let status = response.status().as_u16();
        assert!(
            status == 200 || status == 201,
            "{name}: PUT {path}: {status} {}",
            response.text().await.unwrap_or_default()
        );
    }
    let messages = case["hl7v2"].as_array().cloned().unwrap_or_default();
    if messages.is_empty() {
        return;
    }
    let dir = common::smart::scratch();
    let files: Vec<String> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let path = dir.join(format!("{name}-{i}.hl7"));
            std::fs::write(&path, m.as_str().expect("message text")).expect("write message");
            path.to_string_lossy().into_owned()
        })
        .collect();
    let (service, port) = lab_listener(ctx);
    let results = tokio::task::spawn_blocking(move || {
        let names: Vec<&str> = files.iter().map(String::as_str).collect();
        common::peer::send_with(port, &[], &names)
    })
    .await
    .expect("send");
    service.stop();
    for r in &results {
        assert_eq!(r["ack_code"], "AA", "{name}: {r}");
    }
}

async fn populate(
    ctx: &Ctx,
    patient: &str,
    order: &str,
    purpose: Option<&str>,
) -> reqwest::Response {
    let mut request = ctx.post(
        "Questionnaire/$populate",
        &json!({"resourceType": "Parameters", "parameter": [
            {"name": "subject", "valueReference": {"reference": format!("Patient/{patient}")}},
            {"name": "context", "part": [
                {"name": "name", "valueString": "order"},
                {"name": "content", "valueReference": {"reference": order}},
            ]},
        ]}),
    );
    if let Some(p) = purpose {
        request = request.header("x-purpose-of-use", p);
    }
    request.send().await.expect("populate")
}

fn answer_of(item: &Value) -> Option<&Value> {
    item["answer"].as_array()?.first()
}

fn citations(item: &Value) -> Vec<String> {
    answer_of(item)
        .and_then(|a| a["extension"].as_array())
        .into_iter()
        .flatten()
        .filter(|x| x["url"] == EVIDENCE)
        .filter_map(|x| {
            x["extension"]
                .as_array()?
                .iter()
                .find(|p| p["url"] == "reference")?["valueReference"]["reference"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

/// The answer matches the expected value.
fn matches_value(answer: &Value, expected: &Value, contains: Option<&str>) -> bool {
    if let Some(part) = contains {
        return answer["valueString"]
            .as_str()
            .is_some_and(|s| s.to_lowercase().contains(&part.to_lowercase()));
    }
    match expected {
        Value::Bool(b) => answer["valueBoolean"].as_bool() == Some(*b),
        Value::Number(n) => {
            let want = n.as_f64().unwrap_or(f64::NAN);
            let got = answer["valueInteger"]
                .as_f64()
                .or_else(|| answer["valueDecimal"].as_f64())
                .or_else(|| answer["valueQuantity"]["value"].as_f64());
            got.is_some_and(|g| (g - want).abs() < 1e-6)
        }
        Value::String(s) => {
            answer["valueDate"].as_str() == Some(s.as_str())
                || answer["valueString"]
                    .as_str()
                    .is_some_and(|v| v.trim() == s.trim())
        }
        Value::Object(o) => {
            answer["valueCoding"]["system"] == o["system"]
                && answer["valueCoding"]["code"] == o["code"]
        }
        _ => false,
    }
}

#[derive(Default, Debug)]
struct Tally {
    fields: usize,
    correct: usize,
    answered: usize,
    answered_correctly: usize,
    expected_values: usize,
    expected_missing: usize,
    missing_reported: usize,
    guessed: usize,
    citations: usize,
    valid_citations: usize,
}

/// Is the cited resource real, this patient's, and readable by the caller?
async fn citation_valid(ctx: &Ctx, token: &str, reference: &str, patient: &str) -> bool {
    let response = ctx
        .client
        .get(ctx.url(reference))
        .bearer_auth(token)
        .header("x-purpose-of-use", "HPAYMT")
        .send()
        .await
        .expect("read");
    if response.status() != 200 {
        return false;
    }
    let r: Value = response.json().await.expect("json");
    let me = format!("Patient/{patient}");
    reference == me
        || ["subject", "patient", "beneficiary"]
            .iter()
            .any(|k| r[*k]["reference"].as_str() == Some(me.as_str()))
}

async fn cites_hl7(ctx: &Ctx, cited: &[String], spec: &Value) -> bool {
    let (t, code) = (
        spec["type"].as_str().unwrap_or(""),
        spec["code"].as_str().unwrap_or(""),
    );
    for reference in cited.iter().filter(|r| r.starts_with(&format!("{t}/"))) {
        let r: Value = ctx
            .get(reference)
            .send()
            .await
            .expect("read")
            .json()
            .await
            .expect("json");
        if r["code"]["coding"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["code"] == code)
        {
            return true;
        }
    }
    false
}

#[tokio::test]
async fn accuracy_evaluation() {
    let cases = cases();
    assert!(cases.len() >= 20, "the evaluation has its cases");
    let mut by_set: BTreeMap<String, Tally> = BTreeMap::new();
    let mut structured = Tally::default();
    let mut misses = Vec::new();
    for (name, case) in &cases {
        let ctx = ctx().await;
        let token = ctx.token_with("system/*.rs").await;
        plant(&ctx, name, case).await;
        let order = case["order"].as_str().expect("order");
        let response = populate(&ctx, "pa-patient", order, Some("HPAYMT")).await;
        assert_eq!(response.status(), 200, "{name}: populate");
        let parameters: Value = response.json().await.expect("json");
        let qr = &parameters["parameter"][0]["resource"];
        assert_eq!(qr["resourceType"], "QuestionnaireResponse");
        assert_eq!(qr["subject"]["reference"], "Patient/pa-patient");
        assert!(
            qr["questionnaire"]
                .as_str()
                .is_some_and(|q| q.contains(case["ruleset"].as_str().unwrap_or("?"))),
            "{name}: {}",
            qr["questionnaire"]
        );
        let set = case["ruleset"].as_str().expect("ruleset").to_owned();
        let rule_set = hearth::clinical::prior_auth::rules::by_id(&set).expect("rule set");
        let tally = by_set.entry(set.clone()).or_default();
        for (link, expected) in case["expected"].as_object().expect("expected") {
            let item = qr["item"]
                .as_array()
                .and_then(|items| items.iter().find(|i| i["linkId"] == link.as_str()))
                .unwrap_or_else(|| panic!("{name}: no item {link}"));
            let is_note = rule_set
                .evidence
                .get(link)
                .is_some_and(|r| r.kind == hearth::clinical::prior_auth::rules::RuleKind::Note);
            let answer = answer_of(item);
            let cited = citations(item);
            let mut valid = 0;
            for c in &cited {
                if citation_valid(&ctx, &token, c, "pa-patient").await {
                    valid += 1;
                }
            }
            let correct = if expected["notFound"] == true {
                let reported = answer.is_none()
                    && item["extension"]
                        .as_array()
                        .is_some_and(|l| l.iter().any(|x| x["url"] == NOT_FOUND));
                if answer.is_some() {
                    misses.push(format!(
                        "{name} {link}: guessed {}",
                        answer.map(Value::to_string).unwrap_or_default()
                    ));
                }
                reported
            } else {
                let value_ok = answer.is_some_and(|a| {
                    matches_value(a, &expected["value"], expected["contains"].as_str())
                });
                let cites_ok = if let Some(ids) = expected["cites"].as_array() {
                    ids.iter()
                        .any(|id| cited.iter().any(|c| Some(c.as_str()) == id.as_str()))
                } else if expected.get("citesHl7").is_some() {
                    cites_hl7(&ctx, &cited, &expected["citesHl7"]).await
                } else {
                    !cited.is_empty()
                };
                if !(value_ok && cites_ok) {
                    misses.push(format!(
                        "{name} {link}: expected {} (cites {}), got {} citing {cited:?}",
                        if expected["contains"].is_string() {
                            &expected["contains"]
                        } else {
                            &expected["value"]
                        },
                        expected
                            .get("cites")
                            .or(expected.get("citesHl7"))
                            .unwrap_or(&Value::Null),
                        answer
                            .map(Value::to_string)
                            .unwrap_or_else(|| "not found".into()),
                    ));
                }
                value_ok && cites_ok
            };
            let missing_expected = expected["notFound"] == true;
            let add = |t: &mut Tally| {
                t.fields += 1;
                t.correct += usize::from(correct);
                t.citations += cited.len();
                t.valid_citations += valid;
                t.answered += usize::from(answer.is_some());
                if missing_expected {
                    t.expected_missing += 1;
                    t.missing_reported += usize::from(correct);
                    t.guessed += usize::from(answer.is_some());
                } else {
                    t.expected_values += 1;
                    t.answered_correctly += usize::from(correct);
                }
            };
            add(tally);
            if !is_note {
                add(&mut structured);
            }
        }
    }
    let pct = |a: usize, b: usize| {
        if b == 0 {
            100.0
        } else {
            100.0 * a as f64 / b as f64
        }
    };
    println!(
        "prior-authorization accuracy evaluation: {} cases",
        cases.len()
    );
    println!(
        "{:<22} {:>6} {:>9} {:>10} {:>7} {:>9} {:>9}",
        "rule set", "fields", "accuracy", "precision", "recall", "missing", "citations"
    );
    let mut total = Tally::default();
    for (set, t) in &by_set {
        println!(
            "{set:<22} {:>6} {:>8.1}% {:>9.1}% {:>6.1}% {:>4}/{:<4} {:>4}/{:<4}",
            t.fields,
            pct(t.correct, t.fields),
            pct(t.answered_correctly, t.answered),
            pct(t.answered_correctly, t.expected_values),
            t.missing_reported,
            t.expected_missing,
            t.valid_citations,
            t.citations
        );
        total.fields += t.fields;
        total.correct += t.correct;
        total.answered += t.answered;
        total.answered_correctly += t.answered_correctly;
        total.expected_values += t.expected_values;
        total.expected_missing += t.expected_missing;
        total.missing_reported += t.missing_reported;
        total.guessed += t.guessed;
        total.citations += t.citations;
        total.valid_citations += t.valid_citations;
    }
    println!(
        "all: field accuracy {:.1}% ({}/{}), structured {:.1}% ({}/{}), citation validity {:.1}% ({}/{}), missing reported {}/{}, guessed {}",
        pct(total.correct, total.fields),
        total.correct,
        total.fields,
        pct(structured.correct, structured.fields),
        structured.correct,
        structured.fields,
        pct(total.valid_citations, total.citations),
        total.valid_citations,
        total.citations,
        total.missing_reported,
        total.expected_missing,
        total.guessed
    );
    for m in &misses {
        println!("  miss: {m}");
    }
    assert_eq!(
        total.valid_citations, total.citations,
        "every citation valid"
    );
    assert_eq!(
        total.guessed, 0,
        "a missing item is reported missing, never guessed: {misses:?}"
    );
    assert_eq!(total.missing_reported, total.expected_missing, "{misses:?}");
    assert!(
        pct(structured.correct, structured.fields) >= 95.0,
        "structured field accuracy below 95%: {misses:?}"
    );
}

#[tokio::test]
async fn populate_refuses_without_the_payment_purpose_or_a_covered_order() {
    let ctx = ctx().await;
    let (_, case) = cases().into_iter().next().expect("a case");
    plant(&ctx, "refusals", &case).await;
    let order = case["order"].as_str().expect("order");
    // The audit row must say why the record was read.
    expect_outcome(populate(&ctx, "pa-patient", order, None).await, 403).await;
    // An order no rule set covers.
    let other = ctx
        .create(&json!({"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                        "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "99999"}]},
                        "subject": {"reference": "Patient/pa-patient"}}))
        .await;
    let other = format!("ServiceRequest/{}", other["id"].as_str().expect("id"));
    expect_outcome(
        populate(&ctx, "pa-patient", &other, Some("HPAYMT")).await,
        422,
    )
    .await;
    // The order of another patient.
    let someone = ctx.create(&common::patient("Elsewhere")).await;
    let someone = someone["id"].as_str().expect("id");
    expect_outcome(populate(&ctx, someone, order, Some("HPAYMT")).await, 400).await;
    // A caller without the evidence types in its scopes: 403, nothing extracted.
    let narrow = ctx
        .token_with("system/Patient.rs system/ServiceRequest.rs system/MedicationRequest.rs")
        .await;
    let response = ctx
        .client
        .post(ctx.url("Questionnaire/$populate"))
        .bearer_auth(&narrow)
        .header("content-type", "application/fhir+json")
        .header("x-purpose-of-use", "HPAYMT")
        .body(
            json!({"resourceType": "Parameters", "parameter": [
                {"name": "subject", "valueReference": {"reference": "Patient/pa-patient"}},
                {"name": "order", "valueReference": {"reference": order}}]})
            .to_string(),
        )
        .send()
        .await
        .expect("populate");
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("json");
    if status == 200 {
        // Then no answer may rest on what the caller cannot read.
        for item in body["parameter"][0]["resource"]["item"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for c in citations(item) {
                assert!(
                    c.starts_with("Patient/")
                        || c.starts_with("ServiceRequest/")
                        || c.starts_with("MedicationRequest/"),
                    "cites {c} the caller cannot read"
                );
            }
        }
    } else {
        assert_eq!(status, 403, "{body}");
    }
}
