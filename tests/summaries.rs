//! Cited summaries: the retrieval index follows every change (outbox → chunks), retrieval is
//! filtered by the access decision before ranking, the extractive summary cites its
//! sources, questions answer or say "not found", and the API audits what it cited.

mod common;

use common::app::{PATIENT_FAMILY, seed_chart};
use common::ctx;
use hearth::clinical::embed::{Embedder, HASHING_MODEL, hashing_embedding, to_pgvector};
use hearth::store::RetrievalQuery;
use serde_json::{Value, json};

async fn summary(
    ctx: &common::Ctx,
    token: &str,
    patient: &str,
    question: Option<&str>,
) -> (u16, Value) {
    let mut url = ctx.url(&format!("Patient/{patient}/$summary"));
    if let Some(q) = question {
        url = format!("{url}?question={}", q.replace(' ', "+"));
    }
    let response = ctx
        .client
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("summary");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

fn statements(body: &Value) -> Vec<&Value> {
    body["summary"]["sections"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["statements"].as_array().into_iter().flatten())
        .collect()
}

#[tokio::test]
async fn the_extractive_summary_cites_every_statement_and_the_api_audits_it() {
    let ctx = ctx().await;
    let chart = seed_chart(&ctx, 3).await;
    let (status, body) = summary(&ctx, &ctx.token, &chart.patient, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["summary"]["engine"], "extractive");
    let all = statements(&body);
    assert!(!all.is_empty(), "{body}");
    for statement in &all {
        let citations = statement["citations"].as_array().expect("citations");
        assert!(!citations.is_empty(), "uncited: {statement}");
        for c in citations {
            let reference = c["reference"].as_str().expect("reference");
            let read = ctx.get(reference).send().await.expect("read");
            assert_eq!(read.status(), 200, "cited {reference} exists");
        }
    }
    let text: Vec<&str> = all.iter().filter_map(|s| s["text"].as_str()).collect();
    assert!(
        text.iter()
            .any(|t| t.contains("E11.9") || t.contains("Type 2 diabetes")),
        "{text:?}"
    );
    assert!(text.iter().any(|t| t.contains("Penicillin")), "{text:?}");
    assert!(text.iter().any(|t| t.contains("Metformin")), "{text:?}");

    // Questions: an answer with a citation, or an explicit not-found.
    let (_, answer) = summary(
        &ctx,
        &ctx.token,
        &chart.patient,
        Some("when was the last A1c"),
    )
    .await;
    assert_eq!(answer["answer"]["not_found"], false, "{answer}");
    assert!(
        answer["answer"]["statements"][0]["citations"][0]["reference"]
            .as_str()
            .is_some_and(|r| r.starts_with("Observation/"))
    );
    let (_, answer) = summary(
        &ctx,
        &ctx.token,
        &chart.patient,
        Some("what is the patient's shoe size"),
    )
    .await;
    assert_eq!(answer["answer"]["not_found"], true, "{answer}");
    assert_eq!(answer["answer"]["statements"], json!([]));

    // Audited with the patient and what it cited.
    let mut tx = ctx.store.begin(&ctx.tenant).await.expect("tx");
    let rows: Vec<(Vec<String>, Vec<String>)> = sqlx::query_as(
        "SELECT patients, entities FROM audit_events WHERE tenant_id = $1 AND event = 'summary' ORDER BY seq",
    )
    .bind(ctx.tenant.as_str())
    .fetch_all(tx.conn())
    .await
    .expect("audit");
    tx.commit().await.expect("commit");
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].0, vec![chart.patient.clone()]);
    assert!(
        rows[0].1.iter().any(|e| e.starts_with("Condition/")),
        "{:?}",
        rows[0].1
    );
}

#[tokio::test]
async fn chunks_follow_every_change_and_retrieval_never_ranks_what_the_caller_may_not_see() {
    let ctx = ctx().await;
    let chart = seed_chart(&ctx, 1).await;
    // A note labelled restricted (hidden by the default access policy to clients without the grant).
    let secret = ctx
        .create(&json!({
            "resourceType": "DocumentReference", "status": "current",
            "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]},
            "type": {"text": "Psychotherapy note"},
            "subject": {"reference": format!("Patient/{}", chart.patient)},
            "content": [{"attachment": {"contentType": "text/plain", "data": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "Assessment: panic disorder, discussed coping strategies.")}}]
        }))
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    hearth::clinical::index::index_pending(
        &ctx.store,
        &ctx.tenant,
        &ctx.origin,
        &Embedder::Hashing,
    )
    .await
    .expect("index");
    let chunks = ctx
        .store
        .chunks_of(&ctx.tenant, "DocumentReference", &secret)
        .await
        .expect("chunks");
    assert!(
        chunks.iter().any(|c| c.text.contains("panic disorder")),
        "{chunks:?}"
    );

    // An update replaces the chunks; a delete removes them.
    let mut note: Value = ctx
        .get(&format!("DocumentReference/{secret}"))
        .send()
        .await
        .expect("read")
        .json()
        .await
        .expect("json");
    note["content"][0]["attachment"]["data"] = json!(base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        "Assessment: generalized anxiety, improving."
    ));
    assert_eq!(
        ctx.put(&format!("DocumentReference/{secret}"), &note)
            .send()
            .await
            .expect("put")
            .status(),
        200
    );
    hearth::clinical::index::index_pending(
        &ctx.store,
        &ctx.tenant,
        &ctx.origin,
        &Embedder::Hashing,
    )
    .await
    .expect("index");
    let chunks = ctx
        .store
        .chunks_of(&ctx.tenant, "DocumentReference", &secret)
        .await
        .expect("chunks");
    assert!(
        chunks.iter().all(|c| !c.text.contains("panic")),
        "old text gone: {chunks:?}"
    );
    assert!(
        chunks
            .iter()
            .any(|c| c.text.contains("generalized anxiety"))
    );

    // Retrieval over the patient's chunks: with the note visible it ranks first for its
    // words; with the note outside the visible set it is never returned.
    let everything: Vec<String> = ctx
        .store
        .chunked_resources(&ctx.tenant, &chart.patient)
        .await
        .expect("refs")
        .into_iter()
        .map(|(t, id)| format!("{t}/{id}"))
        .collect();
    let query = "anxiety assessment";
    let embedding = to_pgvector(&hashing_embedding(query));
    let found = ctx
        .store
        .retrieve(
            &ctx.tenant,
            &chart.patient,
            &everything,
            &RetrievalQuery {
                text: query,
                embedding: &embedding,
                model: HASHING_MODEL,
                k: 5,
            },
        )
        .await
        .expect("retrieve");
    assert_eq!(found[0].resource_id, secret, "{found:?}");
    let without: Vec<String> = everything
        .iter()
        .filter(|r| !r.ends_with(&secret))
        .cloned()
        .collect();
    let found = ctx
        .store
        .retrieve(
            &ctx.tenant,
            &chart.patient,
            &without,
            &RetrievalQuery {
                text: query,
                embedding: &embedding,
                model: HASHING_MODEL,
                k: 50,
            },
        )
        .await
        .expect("retrieve");
    assert!(found.iter().all(|c| c.resource_id != secret));

    // Through the API: a caller whose scopes do not cover DocumentReference gets no citation
    // of the note; the summary of a patient/ token of another patient is refused.
    let narrow = ctx
        .token_with("system/Patient.rs system/Condition.rs system/Observation.rs")
        .await;
    let (status, body) = summary(&ctx, &narrow, &chart.patient, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.to_string().contains("DocumentReference/"), "{body}");
    assert!(
        !body.to_string().contains("Penicillin"),
        "AllergyIntolerance is outside the scopes: {body}"
    );

    assert_eq!(
        ctx.delete(&format!("DocumentReference/{secret}"))
            .send()
            .await
            .expect("delete")
            .status(),
        204
    );
    hearth::clinical::index::index_pending(
        &ctx.store,
        &ctx.tenant,
        &ctx.origin,
        &Embedder::Hashing,
    )
    .await
    .expect("index");
    assert!(
        ctx.store
            .chunks_of(&ctx.tenant, "DocumentReference", &secret)
            .await
            .expect("chunks")
            .is_empty()
    );
    let _ = PATIENT_FAMILY;
}

/// The faithfulness evaluation (rerunnable: `cargo test --test summaries faithfulness --
/// --nocapture` prints the figures). Synthetic patients from Hearth's generator, written
/// through the REST write path (transaction Bundles), and one admitted through an HL7 v2
/// ADT^A01 over MLLP (the third-party client); the planted facts are read back from the
/// generated data: active diagnoses, the latest value of every lab and vital sign, active
/// medications, allergies, admission dates.
#[tokio::test]
async fn faithfulness_of_the_extractive_summary() {
    use std::collections::HashMap;
    let ctx = ctx().await;
    let seed = 7;
    let patients = 12;
    let put = |s: &hearth::synth::Synth| json!({"resource": s.body, "request": {"method": "PUT", "url": format!("{}/{}", s.resource_type, s.id)}});
    let shared: Vec<Value> = hearth::synth::shared_resources(seed)
        .iter()
        .map(put)
        .collect();
    let post_bundle = |entries: Vec<Value>| {
        let body = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
        let request = ctx
            .client
            .post(format!("{}/fhir/{}", ctx.origin, ctx.tenant))
            .bearer_auth(&ctx.token)
            .json(&body);
        async move {
            let response = request.send().await.expect("bundle");
            assert_eq!(
                response.status(),
                200,
                "{}",
                response.text().await.unwrap_or_default()
            );
        }
    };
    post_bundle(shared).await;
    let (mut citations, mut valid, mut statements_n, mut supported) =
        (0usize, 0usize, 0usize, 0usize);
    let (mut facts, mut recalled) = (0usize, 0usize);
    let mut cache: HashMap<String, Option<Value>> = HashMap::new();
    for n in 1..=patients {
        let record = hearth::synth::patient_record(seed, n);
        post_bundle(record.iter().map(put).collect()).await;
        let pid = hearth::synth::patient_id(n);
        let (status, body) = summary(&ctx, &ctx.token, &pid, None).await;
        assert_eq!(status, 200, "{body}");
        let all: Vec<Value> = statements(&body).into_iter().cloned().collect();
        for statement in &all {
            statements_n += 1;
            let text = statement["text"].as_str().unwrap_or_default().to_owned();
            let mut sources_text = String::new();
            for c in statement["citations"].as_array().into_iter().flatten() {
                citations += 1;
                let reference = c["reference"].as_str().unwrap_or_default().to_owned();
                if !cache.contains_key(&reference) {
                    let response = ctx.get(&reference).send().await.expect("read");
                    let value = if response.status() == 200 {
                        response.json::<Value>().await.ok()
                    } else {
                        None
                    };
                    cache.insert(reference.clone(), value);
                }
                let Some(resource) = cache.get(&reference).cloned().flatten() else {
                    continue;
                };
                let own = resource["id"] == pid.as_str()
                    || resource.to_string().contains(&format!("\"Patient/{pid}\""))
                    || !reference.starts_with("Condition")
                        && !reference.starts_with("Observation")
                        && !reference.starts_with("Encounter")
                        && !reference.starts_with("AllergyIntolerance")
                        && !reference.starts_with("MedicationRequest")
                        && !reference.starts_with("Procedure")
                        && !reference.starts_with("Immunization")
                        && !reference.starts_with("DocumentReference")
                        && !reference.starts_with("DiagnosticReport");
                if own {
                    valid += 1;
                }
                sources_text.push_str(&resource.to_string());
                if let Some(note) = hearth::clinical::chunk::note_text(&resource) {
                    sources_text.push_str(&note);
                }
            }
            // Support: every number and date of the sentence is in what it cites.
            let tokens: Vec<String> = text
                .split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
                .map(|t| t.trim_matches(|c| c == '.' || c == '-').to_owned())
                .filter(|t| t.chars().any(|c| c.is_ascii_digit()))
                .collect();
            if tokens.iter().all(|t| sources_text.contains(t.as_str())) {
                supported += 1;
            } else {
                eprintln!("unsupported: {text} (tokens {tokens:?})");
            }
        }
        // Recall of the planted facts.
        let joined: Vec<(String, Vec<String>)> = all
            .iter()
            .map(|s| {
                (
                    s["text"].as_str().unwrap_or_default().to_owned(),
                    s["citations"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|c| c["reference"].as_str().map(str::to_owned))
                        .collect(),
                )
            })
            .collect();
        let mentioned = |reference: &str, needle: &str| {
            joined
                .iter()
                .any(|(t, refs)| refs.iter().any(|r| r == reference) && t.contains(needle))
        };
        let mut latest: HashMap<String, (String, String, String)> = HashMap::new();
        let mut medications: HashMap<String, Vec<String>> = HashMap::new();
        for s in &record {
            let b = &s.body;
            let reference = format!("{}/{}", s.resource_type, s.id);
            match s.resource_type {
                "Condition" if b["clinicalStatus"]["coding"][0]["code"] == "active" => {
                    facts += 1;
                    let code = b["code"]["coding"][0]["code"].as_str().unwrap_or_default();
                    if mentioned(&reference, code) {
                        recalled += 1
                    } else {
                        eprintln!("missed condition {code}")
                    }
                }
                "AllergyIntolerance" => {
                    facts += 1;
                    let label = b["code"]["text"]
                        .as_str()
                        .or(b["code"]["coding"][0]["display"].as_str())
                        .unwrap_or_default();
                    if mentioned(&reference, label) {
                        recalled += 1
                    } else {
                        eprintln!("missed allergy {label}")
                    }
                }
                "MedicationRequest" if b["status"] == "active" => {
                    // A drug ordered twice is one fact: either order may be cited.
                    let name = b["medicationCodeableConcept"]["text"]
                        .as_str()
                        .or(b["medicationCodeableConcept"]["coding"][0]["display"].as_str())
                        .unwrap_or_default();
                    medications
                        .entry(name.to_owned())
                        .or_default()
                        .push(reference);
                }
                "Encounter" if b["class"]["code"] == "IMP" => {
                    facts += 1;
                    let start = b["period"]["start"].as_str().unwrap_or_default();
                    let day = start.get(..10).unwrap_or(start);
                    if mentioned(&reference, day) {
                        recalled += 1
                    } else {
                        eprintln!("missed admission {day}")
                    }
                }
                "Observation" if b["valueQuantity"]["value"].is_number() => {
                    let code = b["code"]["coding"][0]["code"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    let when = b["effectiveDateTime"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    let value = b["valueQuantity"]["value"].to_string();
                    let newer = latest.get(&code).is_none_or(|(w, _, _)| when > *w);
                    if newer {
                        latest.insert(code, (when, value, reference));
                    }
                }
                _ => {}
            }
        }
        for (name, references) in medications {
            facts += 1;
            if references.iter().any(|r| mentioned(r, &name)) {
                recalled += 1
            } else {
                eprintln!("missed medication {name}")
            }
        }
        for (code, (_, value, reference)) in latest {
            facts += 1;
            if mentioned(&reference, &value) {
                recalled += 1
            } else {
                eprintln!("missed latest {code} {value}")
            }
        }
    }
    // One more patient arrives over MLLP: the third-party client sends an ADT^A01 admit
    // (with its diagnoses); the admission date must be in the summary, cited to the Encounter.
    {
        let (service, port) = common::peer::synth_adt_listener(&ctx);
        let acks = common::peer::send_with(port, &[], &["adt_a01.hl7"]);
        common::peer::assert_ack(&acks[0], "adt_a01.hl7", "AA");
        service.stop();
        let found = common::search_resources(&ctx, "Patient?identifier=MRN10002").await;
        let pid = found[0]["id"].as_str().expect("patient id").to_owned();
        let encounters = common::search_resources(&ctx, &format!("Encounter?patient={pid}")).await;
        let encounter = format!("Encounter/{}", encounters[0]["id"].as_str().expect("id"));
        let (status, body) = summary(&ctx, &ctx.token, &pid, None).await;
        assert_eq!(status, 200, "{body}");
        facts += 1;
        let admitted = statements(&body).iter().any(|s| {
            s["text"]
                .as_str()
                .unwrap_or_default()
                .contains("2024-03-11")
                && s["citations"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["reference"] == encounter.as_str())
        });
        if admitted {
            recalled += 1;
        } else {
            eprintln!("missed the ADT admission: {body}");
        }
    }
    let pct = |a: usize, b: usize| {
        if b == 0 {
            100.0
        } else {
            100.0 * a as f64 / b as f64
        }
    };
    eprintln!(
        "faithfulness: {patients} patients, {statements_n} statements, {citations} citations: validity {:.1}% ({valid}/{citations}), support precision {:.1}% ({supported}/{statements_n}), fact recall {:.1}% ({recalled}/{facts})",
        pct(valid, citations),
        pct(supported, statements_n),
        pct(recalled, facts)
    );
    assert!(statements_n > 0 && facts > 0);
    assert_eq!(
        valid, citations,
        "every citation exists, is readable and belongs to the patient"
    );
    assert_eq!(
        supported, statements_n,
        "every number and date is in the cited source"
    );
    assert!(
        recalled * 100 >= facts * 95,
        "fact recall {recalled}/{facts}"
    );
}

/// Summary latency (p50/p99, cold and cached) against one US Core search on the same
/// patient, and indexing throughput, printed; as a test it checks that a large record
/// indexes and summarises. The note's figures come from the full size:
/// `HEARTH_BENCH_RESOURCES=2000 HEARTH_BENCH_ROUNDS=30 cargo test --test summaries --
/// --nocapture summary_benchmark` (after `eval "$(scripts/db.sh env hearth_test)"`).
#[tokio::test]
async fn summary_benchmark() {
    let ctx = ctx().await;
    let chart = seed_chart(&ctx, 0).await;
    const CODES: [(&str, &str); 5] = [
        ("4548-4", "Hemoglobin A1c"),
        ("2345-7", "Glucose"),
        ("2823-3", "Potassium"),
        ("2160-0", "Creatinine"),
        ("8867-4", "Heart rate"),
    ];
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let total = env("HEARTH_BENCH_RESOURCES", 200).div_ceil(100) * 100;
    let rounds = env("HEARTH_BENCH_ROUNDS", 3);
    for batch in 0..(total / 100) {
        let entries: Vec<Value> = (0..100)
            .map(|i| {
                let n = batch * 100 + i;
                json!({"resource": {
                    "resourceType": "Observation", "status": "final",
                    "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": if n % 3 == 0 { "vital-signs" } else { "laboratory" }}]}],
                    "code": {"coding": [{"system": "http://loinc.org", "code": CODES[n % 5].0, "display": CODES[n % 5].1}]},
                    "subject": {"reference": format!("Patient/{}", chart.patient)},
                    "effectiveDateTime": format!("20{:02}-{:02}-{:02}", 10 + n % 16, 1 + n % 12, 1 + n % 28),
                    "valueQuantity": {"value": 5 + n % 50, "unit": "u"}
                }, "request": {"method": "POST", "url": "Observation"}})
            })
            .collect();
        let response = ctx
            .client
            .post(format!("{}/fhir/{}", ctx.origin, ctx.tenant))
            .bearer_auth(&ctx.token)
            .json(&json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}))
            .send()
            .await
            .expect("bundle");
        assert_eq!(response.status(), 200);
    }
    let started = std::time::Instant::now();
    hearth::clinical::index::index_pending(
        &ctx.store,
        &ctx.tenant,
        &ctx.origin,
        &Embedder::Hashing,
    )
    .await
    .expect("index");
    let index_secs = started.elapsed().as_secs_f64();
    let chunks = ctx
        .store
        .chunked_resources(&ctx.tenant, &chart.patient)
        .await
        .expect("refs")
        .len();
    let pct = |mut v: Vec<f64>, p: f64| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[((v.len() - 1) as f64 * p).round() as usize]
    };
    let (mut cold, mut cached, mut search) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let mut tx = ctx.store.begin(&ctx.tenant).await.expect("tx");
        sqlx::query("DELETE FROM clinical_summaries WHERE tenant_id = $1")
            .bind(ctx.tenant.as_str())
            .execute(tx.conn())
            .await
            .expect("clear cache");
        tx.commit().await.expect("commit");
        let t = std::time::Instant::now();
        assert_eq!(summary(&ctx, &ctx.token, &chart.patient, None).await.0, 200);
        cold.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = std::time::Instant::now();
        assert_eq!(summary(&ctx, &ctx.token, &chart.patient, None).await.0, 200);
        cached.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = std::time::Instant::now();
        let r = ctx
            .get(&format!(
                "Observation?patient={}&category=laboratory",
                chart.patient
            ))
            .send()
            .await
            .expect("search");
        assert_eq!(r.status(), 200);
        let _ = r.bytes().await;
        search.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let s50 = pct(search.clone(), 0.5);
    println!(
        "summary_benchmark: {} resources; indexing {chunks} resources in {:.2} s ({:.0} resources/s); \
         summary cold p50 {:.0} ms p99 {:.0} ms ({:.1}x one US Core search, p50 {s50:.1} ms); cached p50 {:.1} ms p99 {:.1} ms",
        total + 12,
        index_secs,
        chunks as f64 / index_secs,
        pct(cold.clone(), 0.5),
        pct(cold.clone(), 0.99),
        pct(cold, 0.5) / s50,
        pct(cached.clone(), 0.5),
        pct(cached, 0.99),
    );
}
