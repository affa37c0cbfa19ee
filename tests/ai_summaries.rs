//! The Bedrock summary engine against a local stand-in that speaks the Bedrock Runtime
//! wire format and checks SigV4 signatures: scripted outputs with a fabricated number, an
//! uncited sentence and a citation to a source that does not exist are removed by the
//! verifier; every invocation is recorded with its prompt and output; no BAA or no quota
//! left means the extractive engine, said on the result, and nothing sent.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use common::app::seed_chart;
use common::{Ctx, TestServer, ctx_on, owner_pool, start_server, unique_tenant};
use serde_json::{Value, json};

const MODEL: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";

struct Standin {
    _child: Mutex<Child>,
    url: String,
}

/// One stand-in and one server pointed at it, for this binary.
fn parts() -> &'static (Standin, TestServer) {
    static PARTS: OnceLock<(Standin, TestServer)> = OnceLock::new();
    PARTS.get_or_init(|| {
        let dir = common::smart::scratch();
        let script = dir.join("script.json");
        std::fs::write(
            &script,
            json!({
                "converse": [
                    {"match": "Summarise", "model": MODEL, "reply":
                        "The record documents this patient's diabetes care [1]. Hemoglobin A1c was 9.9 % on 2026-02-14 [1]. The patient is doing well overall. Follow-up is documented [99]."},
                    {"match": "Summarise", "model": MODEL, "reply":
                        "The record documents this patient's diabetes care [1]. Hemoglobin A1c was 9.9 % on 2026-02-14 [1]. The patient is doing well overall. Follow-up is documented [99]."},
                    {"match": "A1c", "model": MODEL, "reply": "NOT FOUND IN THE RECORD"},
                    {"match": "conservative care", "model": MODEL, "reply":
                        "The note documents a supervised course of rehabilitation exercises for the low back as conservative care [1]. The patient attended 24 sessions [1]."}
                ]
            })
            .to_string(),
        )
        .expect("script");
        let mut child = Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/bedrock/standin.py"))
            .arg("--script")
            .arg(&script)
            .args(["--access-key", "AKIDTEST", "--secret-key", "test-secret", "--region", "us-east-1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs the stand-in");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("READY");
        let url = line.trim().strip_prefix("READY ").expect("READY line").to_owned();
        let server = start_server(|config| {
            config.ai.bedrock_region = Some("us-east-1".into());
            config.ai.bedrock_endpoint_url = Some(url.clone());
            config.ai.stand_in_credentials = Some(("AKIDTEST".into(), "test-secret".into()));
        });
        (Standin { _child: Mutex::new(child), url }, server)
    })
}

async fn set_ai(ctx: &Ctx, settings: Value) {
    hearth::store::set_tenant_ai_settings(&owner_pool().await, &ctx.tenant, &settings)
        .await
        .expect("ai settings");
}

async fn summary(ctx: &Ctx, patient: &str, question: Option<&str>) -> Value {
    let mut url = ctx.url(&format!("Patient/{patient}/$summary"));
    if let Some(q) = question {
        url = format!("{url}?question={}", q.replace(' ', "+"));
    }
    let response = ctx
        .client
        .get(url)
        .bearer_auth(&ctx.token)
        .send()
        .await
        .expect("summary");
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

async fn standin_log() -> Vec<Value> {
    reqwest::get(format!("{}/_standin/log", parts().0.url))
        .await
        .expect("log")
        .json()
        .await
        .expect("json")
}

/// The tests of this binary share the stand-in and count its requests: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn the_verifier_removes_what_the_sources_do_not_support_and_every_call_is_recorded() {
    let _serial = SERIAL.lock().await;
    let (_, server) = parts();
    let ctx = ctx_on(server, unique_tenant()).await;
    let chart = seed_chart(&ctx, 2).await;

    // Without a BAA nothing is sent: extractive, and the result says why.
    set_ai(&ctx, json!({"engine": "bedrock", "model_id": MODEL})).await;
    let before = standin_log().await.len();
    let body = summary(&ctx, &chart.patient, None).await;
    assert_eq!(body["summary"]["engine"], "extractive");
    assert!(
        body["summary"]["notice"]
            .as_str()
            .unwrap_or_default()
            .contains("BAA"),
        "{body}"
    );
    assert_eq!(
        standin_log().await.len(),
        before,
        "no request reached Bedrock"
    );

    // With a BAA: the model's output, verified.
    set_ai(
        &ctx,
        json!({"engine": "bedrock", "bedrock_baa": true, "model_id": MODEL}),
    )
    .await;
    let body = summary(&ctx, &chart.patient, None).await;
    assert_eq!(body["summary"]["engine"], "bedrock", "{body}");
    let statements = body["summary"]["sections"][0]["statements"]
        .as_array()
        .expect("statements");
    assert_eq!(statements.len(), 1, "{body}");
    assert!(
        statements[0]["text"]
            .as_str()
            .unwrap_or_default()
            .contains("diabetes care")
    );
    assert_eq!(
        body["summary"]["removed"], 3,
        "fabricated number, uncited, unknown source: {body}"
    );
    assert!(
        body["summary"]["notice"]
            .as_str()
            .unwrap_or_default()
            .contains("3 sentence")
    );

    // The request was SigV4-signed, for the model, with numbered sources.
    let log = standin_log().await;
    let call = log.last().expect("a call");
    assert_eq!(call["signed_ok"], true, "{call}");
    assert_eq!(call["model_id"], MODEL);
    let prompt = call["body"]["messages"][0]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(prompt.contains("[1] "), "{prompt}");

    // The invocation is on record: prompt, chunks, raw and verified output, tokens.
    let mut tx = ctx.store.begin(&ctx.tenant).await.expect("tx");
    let (model, raw, removed, chunks, input_tokens, prompt_row): (String, Option<String>, Option<i32>, Vec<i64>, Option<i32>, String) = sqlx::query_as(
        "SELECT model_id, raw_output, removed, chunk_ids, input_tokens, prompt FROM ai_invocations WHERE tenant_id = $1",
    )
    .bind(ctx.tenant.as_str())
    .fetch_one(tx.conn())
    .await
    .expect("invocation");
    let (tokens,): (i64,) = sqlx::query_as("SELECT tokens FROM ai_usage WHERE tenant_id = $1")
        .bind(ctx.tenant.as_str())
        .fetch_one(tx.conn())
        .await
        .expect("usage");
    tx.commit().await.expect("commit");
    assert_eq!(model, MODEL);
    assert!(raw.unwrap_or_default().contains("9.9 %"));
    assert_eq!(removed, Some(3));
    assert!(!chunks.is_empty());
    assert!(input_tokens.unwrap_or(0) > 0 && tokens > 0);
    assert_eq!(prompt_row, prompt);

    // A question the record cannot answer through the model: an explicit not-found.
    let body = summary(&ctx, &chart.patient, Some("when was the last A1c")).await;
    assert_eq!(body["answer"]["not_found"], true, "{body}");

    // Over the monthly quota: extractive again, and said so.
    set_ai(&ctx, json!({"engine": "bedrock", "bedrock_baa": true, "model_id": MODEL, "monthly_token_quota": 1})).await;
    let count = standin_log().await.len();
    let body = summary(&ctx, &chart.patient, None).await;
    assert_eq!(body["summary"]["engine"], "extractive");
    assert!(
        body["summary"]["notice"]
            .as_str()
            .unwrap_or_default()
            .contains("quota"),
        "{body}"
    );
    assert_eq!(standin_log().await.len(), count);
}

/// The models of the patient's chunks (a change of model reindexes per patient, on demand).
async fn models(ctx: &Ctx, patient: &str) -> Vec<String> {
    let mut tx = ctx.store.begin(&ctx.tenant).await.expect("tx");
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT model FROM clinical_chunks WHERE tenant_id = $1 AND patient_id = $2 ORDER BY 1",
    )
    .bind(ctx.tenant.as_str())
    .bind(patient)
    .fetch_all(tx.conn())
    .await
    .expect("models");
    tx.commit().await.expect("commit");
    rows.into_iter().map(|r| r.0).collect()
}

#[tokio::test]
async fn titan_embeds_the_index_with_a_baa_and_a_change_of_model_reindexes() {
    let _serial = SERIAL.lock().await;
    let (_, server) = parts();
    let ctx = ctx_on(server, unique_tenant()).await;
    let chart = seed_chart(&ctx, 2).await;
    set_ai(
        &ctx,
        json!({"engine": "bedrock", "bedrock_baa": true, "model_id": MODEL, "embedding": "titan"}),
    )
    .await;
    let body = summary(&ctx, &chart.patient, None).await;
    assert_eq!(body["summary"]["engine"], "bedrock", "{body}");
    assert_eq!(
        models(&ctx, &chart.patient).await,
        vec!["amazon.titan-embed-text-v2:0".to_owned()]
    );
    let log = standin_log().await;
    let embeds: Vec<&Value> = log
        .iter()
        .filter(|r| r["model_id"] == "amazon.titan-embed-text-v2:0")
        .collect();
    assert!(!embeds.is_empty());
    assert!(
        embeds
            .iter()
            .all(|r| r["signed_ok"] == true && r["body"]["dimensions"] == 512),
        "{embeds:?}"
    );

    // Back to the local embedder: the next retrieval re-embeds the patient's chunks.
    set_ai(&ctx, json!({"engine": "bedrock", "bedrock_baa": true, "model_id": MODEL, "embedding": "hashing"})).await;
    let _ = summary(&ctx, &chart.patient, Some("when was the last A1c")).await;
    assert_eq!(
        models(&ctx, &chart.patient).await,
        vec!["hearth-hashing-v1".to_owned()]
    );
}

/// A prior-authorization note item the phrase rules miss is answered by the model over the
/// retrieved notes, verified: the supported sentence stands, cited to the note; the
/// fabricated count is removed.
#[tokio::test]
async fn prior_auth_free_text_evidence_comes_from_the_model_verified() {
    let _serial = SERIAL.lock().await;
    let (_, server) = parts();
    let ctx = ctx_on(server, unique_tenant()).await;
    set_ai(
        &ctx,
        json!({"engine": "bedrock", "bedrock_baa": true, "model_id": MODEL}),
    )
    .await;
    let patient = ctx.create(&common::patient("Lumbar")).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let subject = json!({"reference": format!("Patient/{patient}")});
    ctx.create(&json!({"resourceType": "Condition",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "M54.50"}]},
        "subject": subject, "onsetDateTime": "2026-08-01"})).await;
    let note_text = "Assessment: chronic low back pain.\nPlan: completed a supervised course of rehabilitation exercises for the low back as conservative care; no lasting relief.\n";
    let note = ctx.create(&json!({"resourceType": "DocumentReference", "status": "current",
        "type": {"coding": [{"system": "http://loinc.org", "code": "11506-3"}]},
        "subject": subject, "date": "2026-11-01T10:00:00Z",
        "content": [{"attachment": {"contentType": "text/plain",
            "data": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, note_text)}}]})).await;
    let note = format!("DocumentReference/{}", note["id"].as_str().expect("id"));
    let order = ctx
        .create(
            &json!({"resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "72148"}]},
        "subject": subject, "authoredOn": "2026-11-20"}),
        )
        .await;
    let order = format!("ServiceRequest/{}", order["id"].as_str().expect("id"));
    let before = standin_log().await.len();
    let response = ctx
        .post(
            "Questionnaire/$populate",
            &json!({"resourceType": "Parameters", "parameter": [
            {"name": "subject", "valueReference": {"reference": format!("Patient/{patient}")}},
            {"name": "order", "valueReference": {"reference": order}}]}),
        )
        .header("x-purpose-of-use", "HPAYMT")
        .send()
        .await
        .expect("populate");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    let items = body["parameter"][0]["resource"]["item"]
        .as_array()
        .expect("items")
        .clone();
    let item = |link: &str| {
        items
            .iter()
            .find(|i| i["linkId"] == link)
            .cloned()
            .expect("item")
    };
    let care = item("conservative-care-note");
    let text = care["answer"][0]["valueString"]
        .as_str()
        .unwrap_or_default();
    assert!(text.contains("rehabilitation exercises"), "{care}");
    assert!(
        !text.contains("24 sessions"),
        "the fabricated count was removed: {care}"
    );
    let care_text = care.to_string();
    assert!(care_text.contains("\"valueCode\":\"model\""), "{care}");
    assert!(care_text.contains(&note), "cites the note: {care}");
    // The phrase rules found nothing for red flags and the model had no answer: not found.
    assert!(item("red-flags")["answer"].is_null());
    // The calls reached Bedrock signed, and are recorded.
    let log = standin_log().await;
    assert!(
        log[before..]
            .iter()
            .any(|r| r.to_string().contains("conservative care")),
        "the model was asked"
    );
    let mut tx = ctx.store.begin(&ctx.tenant).await.expect("tx");
    let removed: Vec<Option<i32>> = sqlx::query_scalar(
        "SELECT removed FROM ai_invocations WHERE tenant_id = $1 AND prompt LIKE '%Documentation of conservative care tried%'",
    )
    .bind(ctx.tenant.as_str())
    .fetch_all(tx.conn())
    .await
    .expect("invocations");
    tx.commit().await.expect("commit");
    assert_eq!(
        removed,
        vec![Some(1)],
        "one recorded call, one sentence removed"
    );
}
