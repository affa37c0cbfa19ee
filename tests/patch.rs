//! PATCH: JSON Patch and FHIRPath Patch over real HTTP against real PostgreSQL.

mod common;

use common::{Ctx, ctx, expect_outcome, patient};
use serde_json::{Value, json};

const JSON_PATCH: &str = "application/json-patch+json";

fn patch(ctx: &Ctx, path: &str, content_type: &str, body: &Value) -> reqwest::RequestBuilder {
    ctx.client
        .patch(ctx.url(path))
        .bearer_auth(&ctx.token)
        .header("content-type", content_type)
        .body(body.to_string())
}

async fn read(ctx: &Ctx, path: &str) -> Value {
    ctx.get(path)
        .send()
        .await
        .expect("read")
        .json()
        .await
        .expect("json")
}

async fn versions(ctx: &Ctx, path: &str) -> usize {
    let history: Value = ctx
        .get(&format!("{path}/_history"))
        .send()
        .await
        .expect("history")
        .json()
        .await
        .expect("json");
    history["entry"].as_array().map_or(0, Vec::len)
}

async fn new_patient(ctx: &Ctx) -> String {
    let mut body = patient("Patchy");
    body["telecom"] = json!([
        {"system": "phone", "value": "555-0100"},
        {"system": "email", "value": "p@example.org"}
    ]);
    let created = ctx.create(&body).await;
    format!("Patient/{}", created["id"].as_str().expect("id"))
}

fn operation(parts: Value) -> Value {
    json!({"name": "operation", "part": parts})
}

fn parameters(operations: Vec<Value>) -> Value {
    json!({"resourceType": "Parameters", "parameter": operations})
}

#[tokio::test]
async fn json_patch_makes_a_new_version() {
    let ctx = ctx().await;
    let path = new_patient(&ctx).await;
    let response = patch(
        &ctx,
        &path,
        JSON_PATCH,
        &json!([
            {"op": "test", "path": "/gender", "value": "female"},
            {"op": "replace", "path": "/gender", "value": "male"},
            {"op": "add", "path": "/name/0/given/-", "value": "Second"},
            {"op": "remove", "path": "/telecom/1"},
            {"op": "copy", "from": "/birthDate", "path": "/deceasedDateTime"},
            {"op": "move", "from": "/deceasedDateTime", "path": "/deceasedDateTime"}
        ]),
    )
    .send()
    .await
    .expect("patch");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], "W/\"2\"");
    let patched: Value = response.json().await.expect("json");
    assert_eq!(patched["meta"]["versionId"], "2");
    assert_eq!(patched["gender"], "male");
    assert_eq!(patched["name"][0]["given"], json!(["Test", "Second"]));
    assert_eq!(
        patched["telecom"],
        json!([{"system": "phone", "value": "555-0100"}])
    );
    assert_eq!(patched["deceasedDateTime"], "1971-05-06");
    assert_eq!(read(&ctx, &path).await, patched);
    assert_eq!(versions(&ctx, &path).await, 2);
    // The index follows the new version.
    let by_gender: Value = ctx
        .get("Patient?gender=male")
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("json");
    assert_eq!(by_gender["entry"].as_array().map_or(0, Vec::len), 1);

    let again = patch(
        &ctx,
        &path,
        JSON_PATCH,
        &json!([{"op": "replace", "path": "/gender", "value": "female"}]),
    )
    .send()
    .await
    .expect("patch");
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["etag"], "W/\"3\"");
}

#[tokio::test]
async fn failed_test_operation_is_422_and_changes_nothing() {
    let ctx = ctx().await;
    let path = new_patient(&ctx).await;
    let response = patch(
        &ctx,
        &path,
        JSON_PATCH,
        &json!([
            {"op": "replace", "path": "/gender", "value": "male"},
            {"op": "test", "path": "/birthDate", "value": "1999-01-01"}
        ]),
    )
    .send()
    .await
    .expect("patch");
    let outcome = expect_outcome(response, 422).await;
    assert_eq!(outcome["issue"][0]["expression"][0], "/1");
    assert!(
        !outcome.to_string().contains("1999-01-01"),
        "values are not quoted back"
    );
    let current = read(&ctx, &path).await;
    assert_eq!(current["meta"]["versionId"], "1");
    assert_eq!(current["gender"], "female");

    let missing = patch(
        &ctx,
        &path,
        JSON_PATCH,
        &json!([{"op": "remove", "path": "/photo"}]),
    )
    .send()
    .await
    .expect("patch");
    expect_outcome(missing, 422).await;
    let malformed = patch(
        &ctx,
        &path,
        JSON_PATCH,
        &json!([{"op": "frob", "path": "/a"}]),
    )
    .send()
    .await
    .expect("patch");
    expect_outcome(malformed, 400).await;
    assert_eq!(versions(&ctx, &path).await, 1);
}

#[tokio::test]
async fn patched_resources_are_validated() {
    let ctx = ctx().await;
    let path = new_patient(&ctx).await;
    let bad_date = patch(
        &ctx,
        &path,
        JSON_PATCH,
        &json!([{"op": "replace", "path": "/birthDate", "value": "not-a-date"}]),
    )
    .send()
    .await
    .expect("patch");
    let outcome = expect_outcome(bad_date, 422).await;
    assert_eq!(outcome["issue"][0]["expression"][0], "Patient.birthDate");
    let unknown = patch(
        &ctx,
        &path,
        JSON_PATCH,
        &json!([{"op": "add", "path": "/frobnicate", "value": true}]),
    )
    .send()
    .await
    .expect("patch");
    let outcome = expect_outcome(unknown, 400).await;
    assert_eq!(outcome["issue"][0]["expression"][0], "Patient.frobnicate");
    let id_change = patch(
        &ctx,
        &path,
        JSON_PATCH,
        &json!([{"op": "replace", "path": "/id", "value": "other"}]),
    )
    .send()
    .await
    .expect("patch");
    expect_outcome(id_change, 422).await;
    let type_change = patch(
        &ctx,
        &path,
        JSON_PATCH,
        &json!([{"op": "replace", "path": "/resourceType", "value": "Group"}]),
    )
    .send()
    .await
    .expect("patch");
    expect_outcome(type_change, 422).await;
    assert_eq!(versions(&ctx, &path).await, 1);
}

#[tokio::test]
async fn if_match_guards_patches() {
    let ctx = ctx().await;
    let path = new_patient(&ctx).await;
    let body = json!([{"op": "replace", "path": "/gender", "value": "male"}]);
    let stale = patch(&ctx, &path, JSON_PATCH, &body)
        .header("if-match", "W/\"2\"")
        .send()
        .await
        .expect("patch");
    expect_outcome(stale, 412).await;
    let fresh = patch(&ctx, &path, JSON_PATCH, &body)
        .header("if-match", "W/\"1\"")
        .send()
        .await
        .expect("patch");
    assert_eq!(fresh.status(), 200);
    assert_eq!(fresh.headers()["etag"], "W/\"2\"");
    let again = patch(&ctx, &path, JSON_PATCH, &body)
        .header("if-match", "W/\"1\"")
        .send()
        .await
        .expect("patch");
    expect_outcome(again, 412).await;
    assert_eq!(versions(&ctx, &path).await, 2);
}

#[tokio::test]
async fn content_types_missing_and_deleted() {
    let ctx = ctx().await;
    let path = new_patient(&ctx).await;
    let body = json!([{"op": "replace", "path": "/gender", "value": "male"}]);
    let text = patch(&ctx, &path, "text/plain", &body)
        .send()
        .await
        .expect("patch");
    expect_outcome(text, 415).await;
    let untyped = ctx
        .client
        .patch(ctx.url(&path))
        .bearer_auth(&ctx.token)
        .body(body.to_string())
        .send()
        .await
        .expect("patch");
    expect_outcome(untyped, 415).await;
    // A JSON Patch array sent as FHIR JSON is not a Parameters resource.
    let wrong_format = patch(&ctx, &path, "application/fhir+json", &body)
        .send()
        .await
        .expect("patch");
    expect_outcome(wrong_format, 400).await;
    assert_eq!(versions(&ctx, &path).await, 1);

    let nothing = patch(&ctx, "Patient/no-such-patient", JSON_PATCH, &body)
        .send()
        .await
        .expect("patch");
    expect_outcome(nothing, 404).await;
    assert_eq!(
        ctx.delete(&path).send().await.expect("delete").status(),
        204
    );
    let deleted = patch(&ctx, &path, JSON_PATCH, &body)
        .send()
        .await
        .expect("patch");
    expect_outcome(deleted, 410).await;

    let read_only = ctx.token_with("system/Patient.rs").await;
    let forbidden = ctx
        .client
        .patch(ctx.url("Patient/whatever"))
        .bearer_auth(&read_only)
        .header("content-type", JSON_PATCH)
        .body(body.to_string())
        .send()
        .await
        .expect("patch");
    expect_outcome(forbidden, 403).await;
}

#[tokio::test]
async fn fhirpath_patch() {
    let ctx = ctx().await;
    let path = new_patient(&ctx).await;
    let body = parameters(vec![
        operation(json!([
            {"name": "type", "valueCode": "replace"},
            {"name": "path", "valueString": "Patient.birthDate"},
            {"name": "value", "valueDate": "1980-02-03"}
        ])),
        operation(json!([
            {"name": "type", "valueCode": "insert"},
            {"name": "path", "valueString": "Patient.name[0].given"},
            {"name": "index", "valueInteger": 0},
            {"name": "value", "valueString": "First"}
        ])),
        operation(json!([
            {"name": "type", "valueCode": "delete"},
            {"name": "path", "valueString": "Patient.telecom.where(system='email')"}
        ])),
        operation(json!([
            {"name": "type", "valueCode": "replace"},
            {"name": "path", "valueString": "Patient.telecom.where(system='phone').value"},
            {"name": "value", "valueString": "555-0199"}
        ])),
        operation(json!([
            {"name": "type", "valueCode": "add"},
            {"name": "path", "valueString": "Patient"},
            {"name": "name", "valueString": "deceased"},
            {"name": "value", "valueBoolean": false}
        ])),
        operation(json!([
            {"name": "type", "valueCode": "add"},
            {"name": "path", "valueString": "Patient"},
            {"name": "name", "valueString": "identifier"},
            {"name": "value", "valueIdentifier": {"system": "http://example.org/mrn", "value": "fp-1"}}
        ])),
    ]);
    let response = patch(&ctx, &path, "application/fhir+json", &body)
        .send()
        .await
        .expect("patch");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], "W/\"2\"");
    let patched: Value = response.json().await.expect("json");
    assert_eq!(patched["birthDate"], "1980-02-03");
    assert_eq!(patched["name"][0]["given"], json!(["First", "Test"]));
    assert_eq!(
        patched["telecom"],
        json!([{"system": "phone", "value": "555-0199"}])
    );
    assert_eq!(patched["deceasedBoolean"], false);
    assert_eq!(
        patched["identifier"],
        json!([{"system": "http://example.org/mrn", "value": "fp-1"}]),
        "a repeating element is added as a list"
    );
    assert_eq!(read(&ctx, &path).await, patched);

    // Replace of a path that selects two elements: 422; malformed operation: 400.
    let many = parameters(vec![operation(json!([
        {"name": "type", "valueCode": "replace"},
        {"name": "path", "valueString": "Patient.name.given"},
        {"name": "value", "valueString": "X"}
    ]))]);
    let response = patch(&ctx, &path, "application/fhir+json", &many)
        .send()
        .await
        .expect("patch");
    let outcome = expect_outcome(response, 422).await;
    assert_eq!(
        outcome["issue"][0]["expression"][0],
        "Parameters.parameter[0]"
    );
    let malformed = parameters(vec![operation(json!([
        {"name": "type", "valueCode": "replace"},
        {"name": "path", "valueString": "Patient.birthDate"}
    ]))]);
    let response = patch(&ctx, &path, "application/fhir+json", &malformed)
        .send()
        .await
        .expect("patch");
    expect_outcome(response, 400).await;
    // A patch whose result breaks R4 (a code outside its required binding): 422.
    let invalid = parameters(vec![operation(json!([
        {"name": "type", "valueCode": "replace"},
        {"name": "path", "valueString": "Patient.gender"},
        {"name": "value", "valueCode": "robot"}
    ]))]);
    let response = patch(&ctx, &path, "application/fhir+json", &invalid)
        .send()
        .await
        .expect("patch");
    expect_outcome(response, 422).await;
    assert_eq!(versions(&ctx, &path).await, 2);
}
