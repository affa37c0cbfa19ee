//! Cited summaries: the retrieval index follows every change (outbox → chunks), retrieval is
//! filtered by the access decision before ranking, the extractive summary cites its
//! sources, questions answer or say "not found", and the API audits what it cited.

mod common;

use common::app::{PATIENT_FAMILY, seed_chart};
use common::ctx;
use hearth::clinical::embed::{hashing_embedding, to_pgvector};
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
    hearth::clinical::index::index_pending(&ctx.store, &ctx.tenant, &ctx.origin)
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
    hearth::clinical::index::index_pending(&ctx.store, &ctx.tenant, &ctx.origin)
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
            query,
            &embedding,
            5,
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
        .retrieve(&ctx.tenant, &chart.patient, &without, query, &embedding, 50)
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
    hearth::clinical::index::index_pending(&ctx.store, &ctx.tenant, &ctx.origin)
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
