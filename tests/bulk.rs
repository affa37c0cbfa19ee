//! Bulk Data export ($export) and Patient/$everything over real HTTP, with Backend Services
//! tokens: client assertions signed by the `jose` library, exchanged at Hearth's token
//! endpoint, clients registered with the `hearth` CLI.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use common::smart::{ClientKey, backend_services_token, register_client};
use common::{Ctx, ctx_on, expect_outcome, patient};
use serde_json::{Value, json};

const LAB: &str = "laboratory";
const VITALS: &str = "vital-signs";

async fn bulk_ctx() -> Ctx {
    common::ctx().await
}

fn bulk_dir() -> std::path::PathBuf {
    common::server().config.bulk.dir.clone()
}

fn observation(patient: &str, category: &str, value: f64) -> Value {
    json!({"resourceType": "Observation", "status": "final",
           "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category}]}],
           "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}], "text": "Glucose"},
           "subject": {"reference": format!("Patient/{patient}")},
           "effectiveDateTime": "2026-11-01T08:00:00Z",
           "valueQuantity": {"value": value, "unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL"}})
}

/// POST a transaction Bundle creating `resources`; their ids, in order.
async fn create_all(ctx: &Ctx, resources: Vec<Value>) -> Vec<String> {
    let mut ids = Vec::new();
    for chunk in resources.chunks(500) {
        let entries: Vec<Value> = chunk
            .iter()
            .map(
                |r| json!({"resource": r, "request": {"method": "POST", "url": r["resourceType"]}}),
            )
            .collect();
        let response = ctx
            .post(
                "",
                &json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
            )
            .send()
            .await
            .expect("transaction");
        assert_eq!(response.status(), 200, "transaction");
        let bundle: Value = response.json().await.expect("bundle");
        for e in bundle["entry"].as_array().expect("entries") {
            let location = e["response"]["location"].as_str().expect("location");
            let id = location.split('/').nth_back(2).expect("id").to_owned();
            ids.push(id);
        }
    }
    ids
}

struct Data {
    patients: Vec<String>,
    labs: Vec<String>,
    vitals: Vec<String>,
}

/// Three patients; each with labs and vital signs.
async fn seed(ctx: &Ctx, labs_each: usize, vitals_each: usize) -> Data {
    let patients = create_all(
        ctx,
        ["Export-A", "Export-B", "Export-C"]
            .iter()
            .map(|f| patient(f))
            .collect(),
    )
    .await;
    let mut data = Data {
        patients: patients.clone(),
        labs: Vec::new(),
        vitals: Vec::new(),
    };
    for p in &patients {
        let labs = (0..labs_each)
            .map(|i| observation(p, LAB, 90.0 + i as f64))
            .collect();
        data.labs.extend(create_all(ctx, labs).await);
        let vitals = (0..vitals_each)
            .map(|i| observation(p, VITALS, 60.0 + i as f64))
            .collect();
        data.vitals.extend(create_all(ctx, vitals).await);
    }
    data
}

struct Client {
    token: String,
}

async fn client(ctx: &Ctx, id: &str, scopes: &str, extra: &[&str]) -> Client {
    let key = ClientKey::generate("ES384");
    register_client(ctx, id, &key, scopes, extra);
    Client {
        token: backend_services_token(ctx, id, &key, scopes).await,
    }
}

/// Kick off an export at `path` (e.g. `$export?_type=Patient`); the status URL.
async fn kick_off(ctx: &Ctx, client: &Client, path: &str, headers: &[(&str, &str)]) -> String {
    common::export_kick_off(ctx, &client.token, path, headers).await
}

async fn wait_manifest(ctx: &Ctx, client: &Client, status_url: &str) -> (Value, bool) {
    common::export_manifest(ctx, &client.token, status_url).await
}

/// Every output file downloaded and parsed: resources by type (each line must parse).
async fn download(ctx: &Ctx, client: &Client, manifest: &Value) -> BTreeMap<String, Vec<Value>> {
    let mut by_type: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for file in manifest["output"].as_array().expect("output") {
        let url = file["url"].as_str().expect("url");
        let response = ctx
            .client
            .get(url)
            .bearer_auth(&client.token)
            .send()
            .await
            .expect("file");
        assert_eq!(response.status(), 200, "file {url}");
        assert_eq!(
            response.headers()["content-type"],
            "application/fhir+ndjson"
        );
        let text = response.text().await.expect("ndjson");
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is a JSON resource"))
            .collect();
        assert_eq!(
            lines.len() as u64,
            file["count"].as_u64().expect("count"),
            "count of {url}"
        );
        let t = file["type"].as_str().expect("type");
        assert!(
            lines.iter().all(|r| r["resourceType"] == t),
            "{url} holds only {t}"
        );
        by_type.entry(t.to_owned()).or_default().extend(lines);
    }
    by_type
}

fn ids(resources: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = resources
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect();
    ids.sort();
    ids
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn system_export_round_trip_with_manifest_and_files() {
    let ctx = bulk_ctx().await;
    let data = seed(&ctx, 40, 20).await;
    let partner = client(&ctx, "partner-export", "system/*.rs", &[]).await;

    // Synchronous kick-off is refused, as is an unknown output format.
    let response = ctx
        .client
        .get(ctx.url("$export"))
        .bearer_auth(&partner.token)
        .send()
        .await
        .expect("kick-off");
    let outcome = expect_outcome(response, 400).await;
    assert!(outcome.to_string().contains("respond-async"), "{outcome}");
    let response = ctx
        .client
        .get(ctx.url("$export?_outputFormat=text/csv"))
        .bearer_auth(&partner.token)
        .header("prefer", "respond-async")
        .send()
        .await
        .expect("kick-off");
    expect_outcome(response, 400).await;

    let status_url = kick_off(&ctx, &partner, "$export", &[]).await;
    assert!(
        status_url.starts_with(&ctx.url("$export-status/")),
        "{status_url}"
    );
    let (manifest, saw_progress) = wait_manifest(&ctx, &partner, &status_url).await;
    assert!(
        saw_progress,
        "a running job answers 202 with X-Progress and Retry-After"
    );
    assert_eq!(manifest["requiresAccessToken"], true);
    assert_eq!(manifest["request"], ctx.url("$export"));
    assert!(
        manifest["transactionTime"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    let exported = download(&ctx, &partner, &manifest).await;
    assert_eq!(ids(&exported["Patient"]), sorted(data.patients.clone()));
    let mut observations = data.labs.clone();
    observations.extend(data.vitals.clone());
    assert_eq!(ids(&exported["Observation"]), sorted(observations));
    assert_eq!(
        exported.len(),
        2,
        "only the types the tenant holds: {:?}",
        exported.keys()
    );

    // Files need a token, and only the client that started the job gets them.
    let file_url = manifest["output"][0]["url"].as_str().expect("url");
    assert_eq!(
        ctx.client.get(file_url).send().await.expect("get").status(),
        401
    );
    let other = client(&ctx, "other-partner", "system/*.rs", &[]).await;
    for url in [file_url, status_url.as_str()] {
        let response = ctx
            .client
            .get(url)
            .bearer_auth(&other.token)
            .send()
            .await
            .expect("get");
        expect_outcome(response, 404).await;
    }

    // The kick-off and each download are in the audit log, naming the job.
    let job = status_url.rsplit('/').next().expect("job id");
    let mut tx = ctx.store.begin(&ctx.tenant).await.expect("tx");
    let events: Vec<(String, Vec<String>)> = sqlx::query_as(
        "SELECT event, entities FROM audit_events WHERE tenant_id = $1 AND event LIKE 'export%'",
    )
    .bind(ctx.tenant.as_str())
    .fetch_all(tx.conn())
    .await
    .expect("audit rows");
    tx.commit().await.expect("commit");
    assert!(
        events
            .iter()
            .any(|(e, ent)| e == "export" && ent.contains(&format!("bulk-export/{job}"))),
        "{events:?}"
    );
    assert!(
        events.iter().filter(|(e, _)| e == "export-file").count() >= 2,
        "{events:?}"
    );
}

#[tokio::test]
async fn type_since_and_type_filter_select_what_is_exported() {
    let ctx = bulk_ctx().await;
    let data = seed(&ctx, 10, 10).await;
    let partner = client(&ctx, "partner-filters", "system/*.rs", &[]).await;

    let status = kick_off(
        &ctx,
        &partner,
        "$export?_type=Observation&_typeFilter=Observation%3Fcategory%3Dlaboratory",
        &[],
    )
    .await;
    let (manifest, _) = wait_manifest(&ctx, &partner, &status).await;
    let exported = download(&ctx, &partner, &manifest).await;
    assert_eq!(exported.keys().collect::<Vec<_>>(), vec!["Observation"]);
    assert_eq!(ids(&exported["Observation"]), sorted(data.labs.clone()));

    // _since: only what changed after it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let since = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let newer = create_all(&ctx, vec![observation(&data.patients[0], VITALS, 77.0)]).await;
    let status = kick_off(
        &ctx,
        &partner,
        &format!(
            "$export?_type=Observation,Patient&_since={}",
            urlencode(&since)
        ),
        &[],
    )
    .await;
    let (manifest, _) = wait_manifest(&ctx, &partner, &status).await;
    let exported = download(&ctx, &partner, &manifest).await;
    assert_eq!(exported.keys().collect::<Vec<_>>(), vec!["Observation"]);
    assert_eq!(ids(&exported["Observation"]), newer);

    // A filter that does not parse is a 400 at kick-off, not a failed job.
    let response = ctx
        .client
        .get(ctx.url("$export?_typeFilter=Observation%3Fnot-a-param%3Dx"))
        .bearer_auth(&partner.token)
        .header("prefer", "respond-async")
        .send()
        .await
        .expect("kick-off");
    expect_outcome(response, 400).await;
}

fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("v", s)])
        .expect("encode")
        .trim_start_matches("v=")
        .to_owned()
}

#[tokio::test]
async fn a_payer_client_confined_to_a_group_exports_only_its_members() {
    let ctx = bulk_ctx().await;
    let data = seed(&ctx, 5, 5).await;
    let member = &data.patients[0];
    let group = ctx
        .create(
            &json!({"resourceType": "Group", "type": "person", "actual": true,
                        "member": [{"entity": {"reference": format!("Patient/{member}")}}]}),
        )
        .await;
    let group_id = group["id"].as_str().expect("id").to_owned();
    let payer = client(
        &ctx,
        "payer-export",
        "system/*.rs",
        &["--patient-group", &group_id],
    )
    .await;

    // Patient-level export under the payment purpose: the Group's members only, and only
    // the types the purpose covers.
    let status = kick_off(
        &ctx,
        &payer,
        "Patient/$export",
        &[("x-purpose-of-use", "HPAYMT")],
    )
    .await;
    let (manifest, _) = wait_manifest(&ctx, &payer, &status).await;
    let exported = download(&ctx, &payer, &manifest).await;
    assert_eq!(ids(&exported["Patient"]), vec![member.clone()]);
    let observations = &exported["Observation"];
    assert_eq!(observations.len(), 10);
    assert!(
        observations
            .iter()
            .all(|o| o["subject"]["reference"] == format!("Patient/{member}")),
        "only the member's observations"
    );
    assert!(!exported.contains_key("Group"), "Group is not payment data");

    // A type the purpose does not cover, asked for by name: 403 at kick-off.
    let response = ctx
        .client
        .get(ctx.url("Patient/$export?_type=AllergyIntolerance"))
        .bearer_auth(&payer.token)
        .header("prefer", "respond-async")
        .header("x-purpose-of-use", "HPAYMT")
        .send()
        .await
        .expect("kick-off");
    expect_outcome(response, 403).await;

    // Group-level export by an unconfined client: that Group's members' data.
    let partner = client(&ctx, "partner-group", "system/*.rs", &[]).await;
    let status = kick_off(&ctx, &partner, &format!("Group/{group_id}/$export"), &[]).await;
    let (manifest, _) = wait_manifest(&ctx, &partner, &status).await;
    let exported = download(&ctx, &partner, &manifest).await;
    assert_eq!(ids(&exported["Patient"]), vec![member.clone()]);
    assert_eq!(exported["Observation"].len(), 10);
    let response = ctx
        .client
        .get(ctx.url("Group/no-such-group/$export"))
        .bearer_auth(&partner.token)
        .header("prefer", "respond-async")
        .send()
        .await
        .expect("kick-off");
    expect_outcome(response, 403).await;
}

/// The job's count of exported resources; `None` once its row is gone.
async fn job_exported(ctx: &Ctx, job: &str) -> Option<i64> {
    let mut tx = ctx.store.begin(&ctx.tenant).await.expect("tx");
    let exported =
        sqlx::query_scalar("SELECT exported FROM bulk_jobs WHERE tenant_id = $1 AND id = $2::uuid")
            .bind(ctx.tenant.as_str())
            .bind(job)
            .fetch_optional(tx.conn())
            .await
            .expect("job row");
    tx.commit().await.expect("commit");
    exported
}

#[tokio::test]
async fn delete_cancels_a_running_job_and_its_files_go() {
    let ctx = bulk_ctx().await;
    seed(&ctx, 150, 50).await;
    let partner = client(&ctx, "partner-cancel", "system/*.rs", &[]).await;
    let status = kick_off(&ctx, &partner, "$export", &[]).await;
    let job = status.rsplit('/').next().expect("job").to_owned();
    // Wait until it has written something, then cancel.
    let started = Instant::now();
    loop {
        let exported = job_exported(&ctx, &job).await.expect("job row");
        if exported > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the job never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let response = ctx
        .client
        .delete(&status)
        .bearer_auth(&partner.token)
        .send()
        .await
        .expect("cancel");
    assert_eq!(response.status(), 202);
    let response = ctx
        .client
        .get(&status)
        .bearer_auth(&partner.token)
        .send()
        .await
        .expect("status");
    expect_outcome(response, 404).await;
    // The worker stops at its next page, and the clean-up removes the job and its files.
    let dir = bulk_dir().join(ctx.tenant.as_str()).join(&job);
    let started = Instant::now();
    loop {
        if job_exported(&ctx, &job).await.is_none() && !dir.exists() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "cancelled job not cleaned up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A patient with `n` observations, a referenced practitioner and organization, and
/// another patient whose data must never appear.
#[tokio::test]
async fn everything_pages_a_5000_resource_record_exactly_once_while_it_is_written() {
    let n: usize = std::env::var("HEARTH_EVERYTHING_RESOURCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let ctx = bulk_ctx().await;
    let practitioner = ctx
        .create(&json!({"resourceType": "Practitioner", "name": [{"family": "Everything"}]}))
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let unrelated_practitioner = ctx
        .create(&json!({"resourceType": "Practitioner", "name": [{"family": "Elsewhere"}]}))
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let pats = create_all(&ctx, vec![patient("Everything"), patient("Other")]).await;
    let (me, other) = (pats[0].clone(), pats[1].clone());
    let mut mine: Vec<Value> = (0..n)
        .map(|i| observation(&me, if i % 2 == 0 { LAB } else { VITALS }, i as f64))
        .collect();
    // On the last one: the writer below updates the first ones (without a performer).
    mine[n - 1]["performer"] = json!([{"reference": format!("Practitioner/{practitioner}")}]);
    let mut original = create_all(&ctx, mine).await;
    original.push(me.clone());
    let mut others = vec![observation(&other, LAB, 1.0)];
    others[0]["performer"] =
        json!([{"reference": format!("Practitioner/{unrelated_practitioner}")}]);
    let others = create_all(&ctx, others).await;

    // Writers: new observations of the patient and updates of existing ones, while paging.
    let writer_ctx = ctx_on(common::server(), ctx.tenant.clone()).await;
    let me_w = me.clone();
    let to_update: Vec<String> = original.iter().take(50).cloned().collect();
    let writer = tokio::spawn(async move {
        let mut added = Vec::new();
        for (i, id) in to_update.iter().enumerate().take(25) {
            added.extend(
                create_all(
                    &writer_ctx,
                    vec![observation(&me_w, LAB, 1000.0 + i as f64)],
                )
                .await,
            );
            let mut body = observation(&me_w, LAB, 2000.0 + i as f64);
            body["id"] = json!(id);
            let response = writer_ctx
                .put(&format!("Observation/{id}"), &body)
                .send()
                .await
                .expect("update");
            assert_eq!(response.status(), 200, "update while paging");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        added
    });

    let mut seen: Vec<String> = Vec::new();
    let mut included: Vec<String> = Vec::new();
    let mut url = ctx.url(&format!("Patient/{me}/$everything?_count=500"));
    let mut pages = 0;
    loop {
        let response = ctx
            .client
            .get(&url)
            .bearer_auth(&ctx.token)
            .send()
            .await
            .expect("page");
        assert_eq!(response.status(), 200, "{url}");
        let bundle: Value = response.json().await.expect("bundle");
        for e in bundle["entry"].as_array().into_iter().flatten() {
            let r = &e["resource"];
            let key = format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap_or(""),
                r["id"].as_str().unwrap_or("")
            );
            match e["search"]["mode"].as_str() {
                Some("match") => seen.push(key),
                _ => included.push(key),
            }
        }
        pages += 1;
        let next = bundle["link"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["relation"] == "next")
            .and_then(|l| l["url"].as_str())
            .map(str::to_owned);
        match next {
            Some(next) => url = next,
            None => break,
        }
        assert!(pages < 100, "paging does not end");
    }
    let added = writer.await.expect("writer");
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for k in &seen {
        *counts.entry(k.as_str()).or_default() += 1;
    }
    let duplicates: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
    assert!(duplicates.is_empty(), "returned twice: {duplicates:?}");
    let seen_set: HashSet<&str> = seen.iter().map(String::as_str).collect();
    for id in &original {
        let key = if *id == me {
            format!("Patient/{id}")
        } else {
            format!("Observation/{id}")
        };
        assert!(seen_set.contains(key.as_str()), "{key} missing");
    }
    // New resources may or may not be in this walk (they land before or after the cursor);
    // nothing else is.
    let added: HashSet<String> = added
        .into_iter()
        .map(|id| format!("Observation/{id}"))
        .collect();
    for k in &seen {
        let original_key = k
            .split('/')
            .nth(1)
            .is_some_and(|id| original.iter().any(|o| o == id));
        assert!(
            original_key || added.contains(k),
            "{k} is not this patient's"
        );
    }
    for id in &others {
        assert!(
            !seen_set.contains(format!("Observation/{id}").as_str()),
            "another patient's data"
        );
    }
    assert_eq!(
        included,
        vec![format!("Practitioner/{practitioner}")],
        "referenced resources, once"
    );
    assert!(pages >= n / 500, "paged: {pages} pages");
}

#[tokio::test]
async fn everything_applies_the_access_decision() {
    let ctx = bulk_ctx().await;
    let data = seed(&ctx, 3, 3).await;
    let (a, b) = (&data.patients[0], &data.patients[1]);
    // A patient/ token for A: A's record via Patient/$everything; B's is refused.
    let token = common::smart::hearth(
        &[
            "token",
            "--tenant",
            ctx.tenant.as_str(),
            "--scope",
            "patient/*.rs",
            "--patient",
            a,
        ],
        &[],
    );
    let token = token.trim();
    let response = ctx
        .client
        .get(ctx.url("Patient/$everything"))
        .bearer_auth(token)
        .send()
        .await
        .expect("everything");
    assert_eq!(response.status(), 200);
    let bundle: Value = response.json().await.expect("bundle");
    let subjects: HashSet<String> = bundle["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["resource"]["resourceType"] == "Observation")
        .map(|e| {
            e["resource"]["subject"]["reference"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(subjects, HashSet::from([format!("Patient/{a}")]));
    assert_eq!(bundle["entry"].as_array().expect("entries").len(), 7);
    let response = ctx
        .client
        .get(ctx.url(&format!("Patient/{b}/$everything")))
        .bearer_auth(token)
        .send()
        .await
        .expect("everything");
    assert!(
        matches!(response.status().as_u16(), 403 | 404),
        "another patient's record: {}",
        response.status()
    );
    // _type narrows.
    let response = ctx
        .get(&format!("Patient/{a}/$everything?_type=Patient"))
        .send()
        .await
        .expect("everything");
    let bundle: Value = response.json().await.expect("bundle");
    assert_eq!(bundle["entry"].as_array().expect("entries").len(), 1);
}
