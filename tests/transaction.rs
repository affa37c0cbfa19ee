//! Transaction and batch Bundles at the base URL, over real HTTP against real PostgreSQL.

mod common;

use base64::Engine;
use common::{Ctx, ctx, expect_outcome, patient};
use serde_json::{Value, json};

const SYSTEM: &str = "http://example.org/mrn";

fn base(ctx: &Ctx) -> String {
    format!("{}/fhir/{}", ctx.origin, ctx.tenant)
}

fn urn() -> String {
    format!("urn:uuid:{}", uuid::Uuid::new_v4())
}

fn bundle(kind: &str, entries: Vec<Value>) -> Value {
    json!({"resourceType": "Bundle", "type": kind, "entry": entries})
}

fn post_entry(full_url: Option<&str>, resource: Value) -> Value {
    let t = resource["resourceType"].as_str().expect("type").to_owned();
    let mut entry = json!({"resource": resource, "request": {"method": "POST", "url": t}});
    if let Some(url) = full_url {
        entry["fullUrl"] = json!(url);
    }
    entry
}

fn with_mrn(family: &str, mrn: &str) -> Value {
    let mut body = patient(family);
    body["identifier"] = json!([{"system": SYSTEM, "value": mrn}]);
    body
}

fn encounter(subject: &str) -> Value {
    json!({"resourceType": "Encounter", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": subject}})
}

fn observation(subject: &str) -> Value {
    json!({"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": subject},
        "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}})
}

async fn send(ctx: &Ctx, body: &Value) -> reqwest::Response {
    send_with(ctx, &ctx.token, body).await
}

async fn send_with(ctx: &Ctx, token: &str, body: &Value) -> reqwest::Response {
    ctx.client
        .post(base(ctx))
        .bearer_auth(token)
        .header("content-type", "application/fhir+json")
        .body(body.to_string())
        .send()
        .await
        .expect("post bundle")
}

async fn ok(ctx: &Ctx, body: &Value) -> Value {
    let response = send(ctx, body).await;
    let status = response.status();
    let answer: Value = response.json().await.expect("json");
    assert_eq!(status, 200, "{answer}");
    answer
}

fn statuses(answer: &Value) -> Vec<String> {
    answer["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            e["response"]["status"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// `Type/id` from a response entry's location `Type/id/_history/n`.
fn id_of(entry: &Value) -> String {
    let location = entry["response"]["location"].as_str().expect("location");
    location.split('/').nth(1).expect("id").to_owned()
}

async fn read(ctx: &Ctx, path: &str) -> reqwest::Response {
    ctx.get(path).send().await.expect("read")
}

async fn search_ids(ctx: &Ctx, query: &str) -> Vec<String> {
    let found: Value = ctx
        .get(query)
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("json");
    found["entry"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|e| e["resource"]["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Rows of this tenant: (resources, versions, index rows).
async fn stored_rows(ctx: &Ctx) -> (i64, i64, i64) {
    let mut tx = ctx.store.begin(&ctx.tenant).await.expect("begin");
    let tenant = ctx.tenant.as_str().to_owned();
    let mut counts = Vec::new();
    for table in [
        "resources",
        "resource_versions",
        "search_token",
        "search_string",
        "search_date",
        "search_reference",
        "search_quantity",
        "search_uri",
    ] {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {table} WHERE tenant_id = $1"
        )))
        .bind(&tenant)
        .fetch_one(tx.conn())
        .await
        .expect("count");
        counts.push(n);
    }
    tx.commit().await.expect("commit");
    (counts[0], counts[1], counts[2..].iter().sum())
}

async fn outcome_at(response: reqwest::Response, status: u16, expression: &str) -> Value {
    let outcome = expect_outcome(response, status).await;
    let expressions: Vec<&str> = outcome["issue"]
        .as_array()
        .expect("issues")
        .iter()
        .flat_map(|i| i["expression"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    assert!(
        expressions.contains(&expression),
        "expected {expression} in {outcome}"
    );
    outcome
}

#[tokio::test]
async fn placeholders_are_resolved_and_everything_is_stored() {
    let ctx = ctx().await;
    let (p, e, o) = (urn(), urn(), urn());
    let mut obs = observation(&p);
    obs["encounter"] = json!({"reference": e});
    // The Observation comes first: references do not depend on entry order.
    let answer = ok(
        &ctx,
        &bundle(
            "transaction",
            vec![
                post_entry(Some(&o), obs),
                post_entry(Some(&e), encounter(&p)),
                post_entry(Some(&p), patient("Tx")),
            ],
        ),
    )
    .await;
    assert_eq!(answer["resourceType"], "Bundle");
    assert_eq!(answer["type"], "transaction-response");
    assert_eq!(
        statuses(&answer),
        vec!["201 Created", "201 Created", "201 Created"]
    );
    let entries = answer["entry"].as_array().expect("entries");
    let (obs_id, enc_id, pat_id) = (id_of(&entries[0]), id_of(&entries[1]), id_of(&entries[2]));
    for (entry, t, id) in [
        (&entries[0], "Observation", &obs_id),
        (&entries[1], "Encounter", &enc_id),
        (&entries[2], "Patient", &pat_id),
    ] {
        assert_eq!(
            entry["response"]["location"],
            format!("{t}/{id}/_history/1")
        );
        assert_eq!(entry["response"]["etag"], "W/\"1\"");
        assert!(entry["response"]["lastModified"].is_string());
        assert_eq!(entry["fullUrl"], format!("{}/{t}/{id}", base(&ctx)));
        assert_eq!(entry["resource"]["id"], id.as_str());
        assert_eq!(entry["resource"]["meta"]["versionId"], "1");
    }
    let stored: Value = read(&ctx, &format!("Observation/{obs_id}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(stored["subject"]["reference"], format!("Patient/{pat_id}"));
    assert_eq!(
        stored["encounter"]["reference"],
        format!("Encounter/{enc_id}")
    );
    let enc: Value = read(&ctx, &format!("Encounter/{enc_id}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(enc["subject"]["reference"], format!("Patient/{pat_id}"));
    // The index rows hold the rewritten references.
    assert_eq!(
        search_ids(&ctx, &format!("Observation?subject=Patient/{pat_id}")).await,
        vec![obs_id.clone()]
    );
    assert_eq!(
        search_ids(&ctx, &format!("Observation?encounter=Encounter/{enc_id}")).await,
        vec![obs_id]
    );
}

#[tokio::test]
async fn a_transaction_whose_last_entry_is_invalid_stores_nothing() {
    let ctx = ctx().await;
    let p = urn();
    let mut invalid = with_mrn("Broken", "atom-2");
    invalid["birthDate"] = json!("not-a-date");
    let response = send(
        &ctx,
        &bundle(
            "transaction",
            vec![
                post_entry(Some(&p), with_mrn("Atomic", "atom-1")),
                post_entry(None, observation(&p)),
                post_entry(None, invalid),
            ],
        ),
    )
    .await;
    let outcome = outcome_at(response, 422, "Bundle.entry[2].resource.birthDate").await;
    assert!(
        outcome["issue"][0]["diagnostics"]
            .as_str()
            .is_some_and(|d| d.starts_with("Bundle.entry[2]")),
        "{outcome}"
    );
    assert!(
        search_ids(&ctx, &format!("Patient?identifier={SYSTEM}|atom-1"))
            .await
            .is_empty()
    );
    for history in ["Patient/_history", "Observation/_history"] {
        let page: Value = ctx
            .get(history)
            .send()
            .await
            .expect("history")
            .json()
            .await
            .expect("json");
        assert_eq!(page["entry"].as_array().map_or(0, Vec::len), 0, "{history}");
    }
    assert_eq!(stored_rows(&ctx).await, (0, 0, 0));
}

/// A failure after the writes (a GET of a missing resource runs last) rolls them all back:
/// the new resource, the update and the delete.
#[tokio::test]
async fn a_failure_after_the_writes_rolls_them_back() {
    let ctx = ctx().await;
    let updated = ctx.create(&with_mrn("Kept", "rb-1")).await;
    let updated_id = updated["id"].as_str().expect("id").to_owned();
    let deleted = ctx.create(&with_mrn("Also Kept", "rb-2")).await;
    let deleted_id = deleted["id"].as_str().expect("id").to_owned();
    let before = stored_rows(&ctx).await;
    let mut change = updated.clone();
    change["gender"] = json!("male");
    let response = send(
        &ctx,
        &bundle(
            "transaction",
            vec![
                post_entry(None, with_mrn("New", "rb-3")),
                json!({"resource": change, "request": {"method": "PUT", "url": format!("Patient/{updated_id}")}}),
                json!({"request": {"method": "DELETE", "url": format!("Patient/{deleted_id}")}}),
                json!({"request": {"method": "GET", "url": "Patient/no-such-patient"}}),
            ],
        ),
    )
    .await;
    outcome_at(response, 404, "Bundle.entry[3]").await;
    assert_eq!(stored_rows(&ctx).await, before);
    let kept: Value = read(&ctx, &format!("Patient/{updated_id}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(kept["meta"]["versionId"], "1");
    assert_eq!(kept["gender"], "female");
    assert_eq!(
        read(&ctx, &format!("Patient/{deleted_id}")).await.status(),
        200
    );
    assert!(
        search_ids(&ctx, &format!("Patient?identifier={SYSTEM}|rb-3"))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn if_none_exist_in_a_bundle_reuses_the_match() {
    let ctx = ctx().await;
    let existing = ctx.create(&with_mrn("Existing", "cc-1")).await;
    let existing_id = existing["id"].as_str().expect("id").to_owned();
    let p = urn();
    let mut conditional = post_entry(Some(&p), with_mrn("Duplicate", "cc-1"));
    conditional["request"]["ifNoneExist"] = json!(format!("identifier={SYSTEM}|cc-1"));
    let answer = ok(
        &ctx,
        &bundle(
            "transaction",
            vec![conditional, post_entry(None, observation(&p))],
        ),
    )
    .await;
    assert_eq!(statuses(&answer), vec!["200 OK", "201 Created"]);
    assert_eq!(
        answer["entry"][0]["response"]["location"],
        format!("Patient/{existing_id}/_history/1")
    );
    assert_eq!(
        answer["entry"][0]["resource"]["name"][0]["family"],
        "Existing"
    );
    assert_eq!(
        answer["entry"][1]["resource"]["subject"]["reference"],
        format!("Patient/{existing_id}")
    );
    assert_eq!(
        search_ids(&ctx, &format!("Patient?identifier={SYSTEM}|cc-1")).await,
        vec![existing_id.clone()]
    );
    let history: Value = ctx
        .get(&format!("Patient/{existing_id}/_history"))
        .send()
        .await
        .expect("history")
        .json()
        .await
        .expect("json");
    assert_eq!(history["entry"].as_array().map_or(0, Vec::len), 1);

    // Without a match the same entry creates.
    let mut fresh = post_entry(None, with_mrn("Fresh", "cc-2"));
    fresh["request"]["ifNoneExist"] = json!(format!("identifier={SYSTEM}|cc-2"));
    let answer = ok(&ctx, &bundle("transaction", vec![fresh])).await;
    assert_eq!(statuses(&answer), vec!["201 Created"]);
}

#[tokio::test]
async fn conditional_references_need_exactly_one_match() {
    let ctx = ctx().await;
    let existing = ctx.create(&with_mrn("Referenced", "cr-1")).await;
    let existing_id = existing["id"].as_str().expect("id");
    let answer = ok(
        &ctx,
        &bundle(
            "transaction",
            vec![post_entry(
                None,
                observation(&format!("Patient?identifier={SYSTEM}|cr-1")),
            )],
        ),
    )
    .await;
    assert_eq!(
        answer["entry"][0]["resource"]["subject"]["reference"],
        format!("Patient/{existing_id}")
    );
    let obs_id = id_of(&answer["entry"][0]);
    assert_eq!(
        search_ids(&ctx, &format!("Observation?subject=Patient/{existing_id}")).await,
        vec![obs_id]
    );

    let before = stored_rows(&ctx).await;
    let none = send(
        &ctx,
        &bundle(
            "transaction",
            vec![
                post_entry(None, patient("Unrelated")),
                post_entry(
                    None,
                    observation(&format!("Patient?identifier={SYSTEM}|cr-none")),
                ),
            ],
        ),
    )
    .await;
    outcome_at(none, 412, "Bundle.entry[1].resource.subject.reference").await;
    ctx.create(&with_mrn("Twin A", "cr-dup")).await;
    ctx.create(&with_mrn("Twin B", "cr-dup")).await;
    let before_dup = stored_rows(&ctx).await;
    assert_ne!(before, before_dup);
    let many = send(
        &ctx,
        &bundle(
            "transaction",
            vec![post_entry(
                None,
                observation(&format!("Patient?identifier={SYSTEM}|cr-dup")),
            )],
        ),
    )
    .await;
    outcome_at(many, 412, "Bundle.entry[0].resource.subject.reference").await;
    assert_eq!(stored_rows(&ctx).await, before_dup);
}

#[tokio::test]
async fn bad_bundles_are_400_naming_the_entry() {
    let ctx = ctx().await;
    let other_base = format!("{}/fhir/t-someone-else", ctx.origin);

    // A urn:uuid reference that no entry's fullUrl declares.
    let dangling = send(
        &ctx,
        &bundle(
            "transaction",
            vec![
                post_entry(Some(&urn()), patient("A")),
                post_entry(None, observation(&urn())),
            ],
        ),
    )
    .await;
    outcome_at(dangling, 400, "Bundle.entry[1].resource.subject.reference").await;

    // Two entries with one fullUrl.
    let same = urn();
    let duplicate = send(
        &ctx,
        &bundle(
            "transaction",
            vec![
                post_entry(Some(&same), patient("A")),
                post_entry(Some(&same), patient("B")),
            ],
        ),
    )
    .await;
    outcome_at(duplicate, 400, "Bundle.entry[1].fullUrl").await;

    // A conditional reference that the bundle's own Patient could satisfy.
    let circular = send(
        &ctx,
        &bundle(
            "transaction",
            vec![
                post_entry(None, with_mrn("Circle", "circ-1")),
                post_entry(
                    None,
                    observation(&format!("Patient?identifier={SYSTEM}|circ-1")),
                ),
            ],
        ),
    )
    .await;
    let outcome = outcome_at(circular, 400, "Bundle.entry[1].resource.subject.reference").await;
    assert!(outcome.to_string().contains("entry 0"), "{outcome}");

    // fullUrl and request.url under another tenant's base, or another server's.
    let mut foreign = json!({"fullUrl": format!("{other_base}/Patient/x"),
        "resource": {"resourceType": "Patient", "id": "x"},
        "request": {"method": "PUT", "url": "Patient/x"}});
    let response = send(&ctx, &bundle("transaction", vec![foreign.clone()])).await;
    outcome_at(response, 400, "Bundle.entry[0].fullUrl").await;
    foreign["fullUrl"] = json!(format!("{}/Patient/x", base(&ctx)));
    foreign["request"]["url"] = json!(format!("{other_base}/Patient/x"));
    let response = send(&ctx, &bundle("transaction", vec![foreign.clone()])).await;
    outcome_at(response, 400, "Bundle.entry[0].request.url").await;
    foreign["request"]["url"] = json!("https://elsewhere.example/fhir/Patient/x");
    let response = send(&ctx, &bundle("transaction", vec![foreign])).await;
    outcome_at(response, 400, "Bundle.entry[0].request.url").await;

    // No request; an unknown method.
    let response = send(
        &ctx,
        &bundle(
            "transaction",
            vec![
                post_entry(None, patient("A")),
                json!({"resource": patient("B")}),
            ],
        ),
    )
    .await;
    outcome_at(response, 400, "Bundle.entry[1].request").await;
    let response = send(
        &ctx,
        &bundle(
            "batch",
            vec![json!({"request": {"method": "FROB", "url": "Patient"}})],
        ),
    )
    .await;
    let answer: Value = response.json().await.expect("json");
    assert_eq!(statuses(&answer), vec!["400 Bad Request"]);
    assert_eq!(
        answer["entry"][0]["response"]["outcome"]["issue"][0]["expression"][0],
        "Bundle.entry[0].request.method"
    );
    let response = send(
        &ctx,
        &bundle(
            "transaction",
            vec![json!({"request": {"method": "FROB", "url": "Patient"}})],
        ),
    )
    .await;
    outcome_at(response, 400, "Bundle.entry[0].request.method").await;

    // Not a transaction or batch.
    let response = send(&ctx, &bundle("collection", vec![])).await;
    outcome_at(response, 400, "Bundle.type").await;
    let response = send(&ctx, &patient("Not a bundle")).await;
    expect_outcome(response, 400).await;

    // More entries than max_bundle_entries (1000 by default): 413.
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({"request": {"method": "DELETE", "url": format!("Patient/p{i}")}}))
        .collect();
    let response = send(&ctx, &bundle("transaction", many)).await;
    outcome_at(response, 413, "Bundle.entry").await;

    assert_eq!(
        stored_rows(&ctx).await,
        (0, 0, 0),
        "no failed bundle left a trace"
    );

    // This tenant's own absolute base is fine, in fullUrl and request.url alike.
    let own = json!({"fullUrl": format!("{}/Patient/own-1", base(&ctx)),
        "resource": {"resourceType": "Patient", "id": "own-1"},
        "request": {"method": "PUT", "url": format!("{}/Patient/own-1", base(&ctx))}});
    let answer = ok(&ctx, &bundle("transaction", vec![own])).await;
    assert_eq!(statuses(&answer), vec!["201 Created"]);
}

#[tokio::test]
async fn batch_entries_succeed_or_fail_alone() {
    let ctx = ctx().await;
    let first = urn();
    let mut invalid = patient("Invalid");
    invalid["birthDate"] = json!("not-a-date");
    let answer = ok(
        &ctx,
        &bundle(
            "batch",
            vec![
                post_entry(Some(&first), with_mrn("Batch", "b-1")),
                post_entry(None, invalid),
                json!({"request": {"method": "GET", "url": "Patient/no-such-patient"}}),
                post_entry(None, observation(&first)),
                json!({"resource": {"resourceType": "Patient", "id": "b-put"},
                       "request": {"method": "PUT", "url": "Patient/b-put"}}),
            ],
        ),
    )
    .await;
    assert_eq!(answer["type"], "batch-response");
    assert_eq!(
        statuses(&answer),
        vec![
            "201 Created",
            "422 Unprocessable Entity",
            "404 Not Found",
            "400 Bad Request",
            "201 Created"
        ]
    );
    let entries = answer["entry"].as_array().expect("entries");
    assert_eq!(
        entries[1]["response"]["outcome"]["issue"][0]["expression"][0],
        "Bundle.entry[1].resource.birthDate"
    );
    assert_eq!(
        entries[2]["response"]["outcome"]["resourceType"],
        "OperationOutcome"
    );
    assert_eq!(
        entries[3]["response"]["outcome"]["issue"][0]["expression"][0],
        "Bundle.entry[3].resource.subject.reference"
    );
    assert!(entries[1].get("resource").is_none());
    let created = id_of(&entries[0]);
    assert_eq!(
        search_ids(&ctx, &format!("Patient?identifier={SYSTEM}|b-1")).await,
        vec![created]
    );
    assert_eq!(read(&ctx, "Patient/b-put").await.status(), 200);
    let (resources, versions, _) = stored_rows(&ctx).await;
    assert_eq!((resources, versions), (2, 2));
}

#[tokio::test]
async fn scopes_are_checked_per_entry() {
    let ctx = ctx().await;
    let token = ctx.token_with("system/Patient.cruds").await;
    let entries = vec![
        post_entry(None, patient("Scoped")),
        post_entry(None, observation("Patient/whoever")),
    ];
    let response = send_with(&ctx, &token, &bundle("transaction", entries.clone())).await;
    outcome_at(response, 403, "Bundle.entry[1]").await;
    assert_eq!(stored_rows(&ctx).await, (0, 0, 0));

    let response = send_with(&ctx, &token, &bundle("batch", entries)).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(statuses(&answer), vec!["201 Created", "403 Forbidden"]);
}

#[tokio::test]
async fn get_entries_see_the_writes() {
    let ctx = ctx().await;
    let existing = ctx.create(&with_mrn("Before", "g-1")).await;
    let id = existing["id"].as_str().expect("id").to_owned();
    let mut change = existing.clone();
    change["gender"] = json!("male");
    let answer = ok(
        &ctx,
        &bundle(
            "transaction",
            vec![
                json!({"request": {"method": "GET", "url": format!("Patient/{id}")}}),
                json!({"request": {"method": "GET", "url": format!("Patient?identifier={SYSTEM}|g-2")}}),
                json!({"resource": change, "request": {"method": "PUT", "url": format!("Patient/{id}")}}),
                post_entry(None, with_mrn("Created", "g-2")),
            ],
        ),
    )
    .await;
    assert_eq!(
        statuses(&answer),
        vec!["200 OK", "200 OK", "200 OK", "201 Created"]
    );
    let entries = answer["entry"].as_array().expect("entries");
    assert_eq!(entries[0]["resource"]["gender"], "male");
    assert_eq!(entries[0]["resource"]["meta"]["versionId"], "2");
    assert_eq!(entries[0]["response"]["etag"], "W/\"2\"");
    let searchset = &entries[1]["resource"];
    assert_eq!(searchset["type"], "searchset");
    let found: Vec<&str> = searchset["entry"]
        .as_array()
        .expect("matches")
        .iter()
        .filter_map(|e| e["resource"]["id"].as_str())
        .collect();
    assert_eq!(found, vec![id_of(&entries[3]).as_str()]);
}

/// DELETE runs before POST: a bundle that deletes the match of its own conditional create
/// gets a new resource.
#[tokio::test]
async fn deletes_run_before_creates() {
    let ctx = ctx().await;
    let old = ctx.create(&with_mrn("Old", "ord-1")).await;
    let old_id = old["id"].as_str().expect("id").to_owned();
    let mut create = post_entry(None, with_mrn("New", "ord-1"));
    create["request"]["ifNoneExist"] = json!(format!("identifier={SYSTEM}|ord-1"));
    let answer = ok(
        &ctx,
        &bundle(
            "transaction",
            vec![
                create,
                json!({"request": {"method": "DELETE", "url": format!("Patient?identifier={SYSTEM}|ord-1")}}),
            ],
        ),
    )
    .await;
    assert_eq!(statuses(&answer), vec!["201 Created", "204 No Content"]);
    assert_eq!(answer["entry"][1]["response"]["etag"], "W/\"2\"");
    let new_id = id_of(&answer["entry"][0]);
    assert_ne!(new_id, old_id);
    expect_outcome(read(&ctx, &format!("Patient/{old_id}")).await, 410).await;
    assert_eq!(
        search_ids(&ctx, &format!("Patient?identifier={SYSTEM}|ord-1")).await,
        vec![new_id]
    );
}

#[tokio::test]
async fn conditional_update_delete_and_patch_entries() {
    let ctx = ctx().await;
    let a = ctx.create(&with_mrn("A", "cu-a")).await;
    let b = ctx.create(&with_mrn("B", "cu-b")).await;
    let c = ctx.create(&with_mrn("C", "cu-c")).await;
    let d = ctx.create(&with_mrn("D", "cu-d")).await;
    let id = |v: &Value| v["id"].as_str().expect("id").to_owned();
    let json_patch = base64::engine::general_purpose::STANDARD
        .encode(json!([{"op": "replace", "path": "/gender", "value": "male"}]).to_string());
    let fhirpath_patch = json!({"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "replace"},
        {"name": "path", "valueString": "Patient.birthDate"},
        {"name": "value", "valueDate": "2000-01-01"}]}]});
    let answer = ok(
        &ctx,
        &bundle(
            "transaction",
            vec![
                json!({"resource": with_mrn("A2", "cu-a"),
                       "request": {"method": "PUT", "url": format!("Patient?identifier={SYSTEM}|cu-a")}}),
                json!({"request": {"method": "DELETE", "url": format!("Patient?identifier={SYSTEM}|cu-b")}}),
                json!({"resource": fhirpath_patch,
                       "request": {"method": "PATCH", "url": format!("Patient/{}", id(&c)), "ifMatch": "W/\"1\""}}),
                json!({"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": json_patch},
                       "request": {"method": "PATCH", "url": format!("Patient/{}", id(&d))}}),
                json!({"resource": with_mrn("New", "cu-new"),
                       "request": {"method": "PUT", "url": format!("Patient?identifier={SYSTEM}|cu-new")}}),
            ],
        ),
    )
    .await;
    assert_eq!(
        statuses(&answer),
        vec![
            "200 OK",
            "204 No Content",
            "200 OK",
            "200 OK",
            "201 Created"
        ]
    );
    let entries = answer["entry"].as_array().expect("entries");
    assert_eq!(
        entries[0]["response"]["location"],
        format!("Patient/{}/_history/2", id(&a))
    );
    assert_eq!(entries[0]["resource"]["name"][0]["family"], "A2");
    expect_outcome(read(&ctx, &format!("Patient/{}", id(&b))).await, 410).await;
    assert_eq!(entries[2]["resource"]["birthDate"], "2000-01-01");
    assert_eq!(entries[2]["response"]["etag"], "W/\"2\"");
    assert_eq!(entries[3]["resource"]["gender"], "male");

    // One resource changed by two entries: refused, nothing stored.
    let before = stored_rows(&ctx).await;
    let response = send(
        &ctx,
        &bundle(
            "transaction",
            vec![
                json!({"resource": {"resourceType": "Patient", "id": id(&a)},
                       "request": {"method": "PUT", "url": format!("Patient/{}", id(&a))}}),
                json!({"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": json_patch},
                       "request": {"method": "PATCH", "url": format!("Patient/{}", id(&a))}}),
            ],
        ),
    )
    .await;
    outcome_at(response, 400, "Bundle.entry[1].request").await;
    // A failed If-Match inside a transaction fails it.
    let response = send(
        &ctx,
        &bundle(
            "transaction",
            vec![
                post_entry(None, patient("Extra")),
                json!({"resource": {"resourceType": "Patient", "id": id(&c)},
                       "request": {"method": "PUT", "url": format!("Patient/{}", id(&c)), "ifMatch": "W/\"1\""}}),
            ],
        ),
    )
    .await;
    outcome_at(response, 412, "Bundle.entry[1]").await;
    assert_eq!(stored_rows(&ctx).await, before);
}

#[tokio::test]
async fn prefer_minimal_leaves_resources_out() {
    let ctx = ctx().await;
    let response = ctx
        .client
        .post(base(&ctx))
        .bearer_auth(&ctx.token)
        .header("content-type", "application/fhir+json")
        .header("prefer", "return=minimal")
        .body(bundle("transaction", vec![post_entry(None, patient("Min"))]).to_string())
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(statuses(&answer), vec!["201 Created"]);
    assert!(answer["entry"][0].get("resource").is_none());
    assert!(answer["entry"][0]["response"]["location"].is_string());
    // The base URL takes only POST.
    let get = ctx
        .client
        .get(base(&ctx))
        .bearer_auth(&ctx.token)
        .send()
        .await
        .expect("get");
    assert!(get.headers().contains_key("allow"));
    expect_outcome(get, 405).await;
}

/// A POST's absolute fullUrl under this base is a placeholder too: the server picks the id
/// and references to the fullUrl follow it.
#[tokio::test]
async fn a_posts_absolute_full_url_is_rewritten_to_the_new_id() {
    let ctx = ctx().await;
    let temporary = format!("{}/Patient/temporary-1", base(&ctx));
    let answer = ok(
        &ctx,
        &bundle(
            "transaction",
            vec![
                post_entry(Some(&temporary), patient("Absolute")),
                post_entry(None, observation(&temporary)),
            ],
        ),
    )
    .await;
    let patient_id = id_of(&answer["entry"][0]);
    assert_ne!(patient_id, "temporary-1");
    assert_eq!(
        answer["entry"][1]["resource"]["subject"]["reference"],
        format!("Patient/{patient_id}")
    );
}
