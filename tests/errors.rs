//! Every error is an OperationOutcome with the right HTTP status.

mod common;

use common::{MAX_BODY_BYTES, ctx, expect_outcome, owner_pool, patient};
use serde_json::{Value, json};

fn expressions(outcome: &Value) -> Vec<String> {
    outcome["issue"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|i| i["expression"].as_array().into_iter().flatten())
        .filter_map(|e| e.as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn status_400_for_unreadable_content() {
    let ctx = ctx().await;
    let not_json = ctx
        .client
        .post(ctx.url("Patient"))
        .bearer_auth(&ctx.token)
        .header("content-type", "application/fhir+json")
        .body("{\"resourceType\": \"Patient\",")
        .send()
        .await
        .expect("post");
    expect_outcome(not_json, 400).await;

    let wrong_type = ctx
        .post("Patient", &json!({"resourceType": "Observation"}))
        .send()
        .await
        .expect("post");
    let outcome = expect_outcome(wrong_type, 400).await;
    assert_eq!(expressions(&outcome), vec!["Patient.resourceType"]);

    let unknown = ctx.post("Patient", &json!({"resourceType": "Patient", "favouriteColour": "blue", "name": [{"famly": "X"}]})).send().await.expect("post");
    let outcome = expect_outcome(unknown, 400).await;
    let mut found = expressions(&outcome);
    found.sort();
    assert_eq!(
        found,
        vec!["Patient.favouriteColour", "Patient.name[0].famly"]
    );
    assert!(
        outcome["issue"]
            .as_array()
            .expect("issues")
            .iter()
            .all(|i| i["code"] == "structure")
    );

    let wrong_shape = ctx
        .post(
            "Patient",
            &json!({"resourceType": "Patient", "name": {"family": "X"}, "active": "yes"}),
        )
        .send()
        .await
        .expect("post");
    let outcome = expect_outcome(wrong_shape, 400).await;
    let mut found = expressions(&outcome);
    found.sort();
    assert_eq!(found, vec!["Patient.active", "Patient.name"]);

    let created = ctx.create(&patient("Mismatch")).await;
    let id = created["id"].as_str().expect("id");
    let mut other = created.clone();
    other["id"] = json!("someone-else");
    let mismatch = ctx
        .put(&format!("Patient/{id}"), &other)
        .send()
        .await
        .expect("put");
    let outcome = expect_outcome(mismatch, 400).await;
    assert_eq!(expressions(&outcome), vec!["Patient.id"]);
    let mut no_id = created.clone();
    no_id.as_object_mut().expect("object").remove("id");
    expect_outcome(
        ctx.put(&format!("Patient/{id}"), &no_id)
            .send()
            .await
            .expect("put"),
        400,
    )
    .await;

    let bad_count = ctx
        .get("Patient/_history?_count=many")
        .send()
        .await
        .expect("get");
    expect_outcome(bad_count, 400).await;
}

#[tokio::test]
async fn status_422_for_content_that_breaks_r4_rules() {
    let ctx = ctx().await;
    let bad_values = ctx
        .post(
            "Patient",
            &json!({"resourceType": "Patient", "gender": "robot", "birthDate": "not-a-date"}),
        )
        .send()
        .await
        .expect("post");
    let outcome = expect_outcome(bad_values, 422).await;
    let mut found = expressions(&outcome);
    found.sort();
    assert_eq!(found, vec!["Patient.birthDate", "Patient.gender"]);

    let missing = ctx
        .post(
            "Observation",
            &json!({"resourceType": "Observation", "code": {"text": "x"}}),
        )
        .send()
        .await
        .expect("post");
    let outcome = expect_outcome(missing, 422).await;
    assert_eq!(expressions(&outcome), vec!["Observation.status"]);
    assert_eq!(outcome["issue"][0]["code"], "required");
}

#[tokio::test]
async fn status_401_without_a_valid_token() {
    let ctx = ctx().await;
    let created = ctx.create(&patient("Secret")).await;
    let path = format!("Patient/{}", created["id"].as_str().expect("id"));
    let none = ctx.client.get(ctx.url(&path)).send().await.expect("get");
    assert!(
        none.headers()["www-authenticate"]
            .to_str()
            .unwrap_or_default()
            .starts_with("Bearer")
    );
    expect_outcome(none, 401).await;
    let garbage = ctx
        .client
        .get(ctx.url(&path))
        .bearer_auth("not.a.jwt")
        .send()
        .await
        .expect("get");
    expect_outcome(garbage, 401).await;
    let basic = ctx
        .client
        .get(ctx.url(&path))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .expect("get");
    expect_outcome(basic, 401).await;
    // A token whose signature does not verify.
    let mut tampered = ctx.token.clone();
    tampered.pop();
    tampered.push(if ctx.token.ends_with('A') { 'B' } else { 'A' });
    let bad_sig = ctx
        .client
        .get(ctx.url(&path))
        .bearer_auth(&tampered)
        .send()
        .await
        .expect("get");
    expect_outcome(bad_sig, 401).await;
    // Writes and history need a token too.
    expect_outcome(
        ctx.client
            .post(ctx.url("Patient"))
            .body(patient("X").to_string())
            .send()
            .await
            .expect("post"),
        401,
    )
    .await;
    expect_outcome(
        ctx.client
            .get(ctx.url("Patient/_history"))
            .send()
            .await
            .expect("get"),
        401,
    )
    .await;
    expect_outcome(
        ctx.client
            .delete(ctx.url(&path))
            .send()
            .await
            .expect("delete"),
        401,
    )
    .await;
}

#[tokio::test]
async fn status_401_for_an_expired_token() {
    let ctx = ctx().await;
    let tokens = hearth::auth::TokenService::new(ctx.store.clone());
    let base = format!("{}/fhir/{}", ctx.origin, ctx.tenant);
    // Issued with a 0 s lifetime; the test server allows 2 s of clock skew, so wait past it.
    let expired = tokens
        .mint(&ctx.tenant, &base, "test", "system/*.cruds", 0)
        .await
        .expect("mint");
    let claims: Value = common::jwt_part(&expired, 1);
    assert_eq!(claims["exp"], claims["iat"]);
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let r = ctx
        .client
        .get(ctx.url("Patient/_history"))
        .bearer_auth(&expired)
        .send()
        .await
        .expect("get");
    let outcome = expect_outcome(r, 401).await;
    assert!(
        outcome["issue"][0]["diagnostics"]
            .as_str()
            .unwrap_or_default()
            .contains("expired")
    );
}

#[tokio::test]
async fn status_403_for_scopes_and_other_tenants() {
    let ctx = ctx().await;
    let created = ctx.create(&patient("Scoped")).await;
    let path = format!("Patient/{}", created["id"].as_str().expect("id"));
    let read_only = ctx.token_with("system/Patient.rs").await;
    assert_eq!(
        ctx.client
            .get(ctx.url(&path))
            .bearer_auth(&read_only)
            .send()
            .await
            .expect("get")
            .status(),
        200
    );
    let write = ctx
        .client
        .post(ctx.url("Patient"))
        .bearer_auth(&read_only)
        .body(patient("X").to_string())
        .send()
        .await
        .expect("post");
    expect_outcome(write, 403).await;
    let observation_only = ctx.token_with("system/Observation.rs").await;
    expect_outcome(
        ctx.client
            .get(ctx.url(&path))
            .bearer_auth(&observation_only)
            .send()
            .await
            .expect("get"),
        403,
    )
    .await;
    let patient_scope = ctx.token_with("patient/Patient.rs").await;
    expect_outcome(
        ctx.client
            .get(ctx.url(&path))
            .bearer_auth(&patient_scope)
            .send()
            .await
            .expect("get"),
        403,
    )
    .await;

    // A valid token of another tenant is refused here, and cannot see this tenant's data.
    let other = common::ctx().await;
    let cross = ctx
        .client
        .get(ctx.url(&path))
        .bearer_auth(&other.token)
        .send()
        .await
        .expect("get");
    let outcome = expect_outcome(cross, 403).await;
    assert!(
        outcome["issue"][0]["diagnostics"]
            .as_str()
            .unwrap_or_default()
            .contains("another tenant")
    );
    let via_own_tenant = other.get(&path).send().await.expect("get");
    expect_outcome(via_own_tenant, 404).await;
}

#[tokio::test]
async fn status_404_for_unknown_things() {
    let ctx = ctx().await;
    expect_outcome(
        ctx.get("Patient/does-not-exist").send().await.expect("get"),
        404,
    )
    .await;
    expect_outcome(
        ctx.get("Patient/does-not-exist/_history")
            .send()
            .await
            .expect("get"),
        404,
    )
    .await;
    expect_outcome(
        ctx.get("Patient/does-not-exist/_history/1")
            .send()
            .await
            .expect("get"),
        404,
    )
    .await;
    expect_outcome(ctx.get("Unicorn/1").send().await.expect("get"), 404).await;
    expect_outcome(
        ctx.delete("Patient/does-not-exist")
            .send()
            .await
            .expect("delete"),
        404,
    )
    .await;
    expect_outcome(
        ctx.client
            .get(format!("{}/nothing/here", ctx.origin))
            .send()
            .await
            .expect("get"),
        404,
    )
    .await;
}

#[tokio::test]
async fn status_405_406_415() {
    let ctx = ctx().await;
    let created = ctx.create(&patient("Methods")).await;
    let path = format!("Patient/{}", created["id"].as_str().expect("id"));
    let patch = ctx
        .client
        .post(ctx.url(&path))
        .bearer_auth(&ctx.token)
        .body("[]")
        .send()
        .await
        .expect("patch");
    assert!(patch.headers().contains_key("allow"));
    expect_outcome(patch, 405).await;
    expect_outcome(
        ctx.client
            .delete(ctx.url("metadata"))
            .send()
            .await
            .expect("delete"),
        405,
    )
    .await;

    let xml = ctx
        .get(&path)
        .header("accept", "application/fhir+xml")
        .send()
        .await
        .expect("get");
    expect_outcome(xml, 406).await;
    expect_outcome(
        ctx.get(&format!("{path}?_format=xml"))
            .send()
            .await
            .expect("get"),
        406,
    )
    .await;
    expect_outcome(
        ctx.client
            .get(ctx.url("metadata?_format=xml"))
            .send()
            .await
            .expect("get"),
        406,
    )
    .await;

    let xml_body = ctx
        .client
        .post(ctx.url("Patient"))
        .bearer_auth(&ctx.token)
        .header("content-type", "application/fhir+xml")
        .body("<Patient xmlns=\"http://hl7.org/fhir\"/>")
        .send()
        .await
        .expect("post");
    expect_outcome(xml_body, 415).await;
    let form = ctx
        .client
        .put(ctx.url(&path))
        .bearer_auth(&ctx.token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("a=b")
        .send()
        .await
        .expect("put");
    expect_outcome(form, 415).await;
}

#[tokio::test]
async fn status_409_when_another_writer_holds_the_resource() {
    let ctx = ctx().await;
    let created = ctx.create(&patient("Contended")).await;
    let id = created["id"].as_str().expect("id").to_owned();
    // Another transaction holds the row lock longer than the server's lock timeout (1 s).
    let pool = common::app_pool().await;
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("SELECT set_config('hearth.tenant', $1, true)")
        .bind(ctx.tenant.as_str())
        .execute(&mut *tx)
        .await
        .expect("set tenant");
    sqlx::query("SELECT 1 FROM resources WHERE resource_type = 'Patient' AND id = $1 FOR UPDATE")
        .bind(&id)
        .execute(&mut *tx)
        .await
        .expect("lock");
    let response = ctx
        .put(&format!("Patient/{id}"), &created)
        .send()
        .await
        .expect("put");
    let outcome = expect_outcome(response, 409).await;
    assert_eq!(outcome["issue"][0]["code"], "conflict");
    tx.rollback().await.expect("rollback");
    assert_eq!(
        ctx.put(&format!("Patient/{id}"), &created)
            .send()
            .await
            .expect("put")
            .status(),
        200
    );
}

#[tokio::test]
async fn status_413_for_large_bodies() {
    let ctx = ctx().await;
    let mut body = patient("Large");
    body["name"][0]["text"] = json!("x".repeat(MAX_BODY_BYTES + 1));
    let response = ctx.post("Patient", &body).send().await.expect("post");
    expect_outcome(response, 413).await;
}

#[tokio::test]
async fn status_500_is_an_operation_outcome_without_internals() {
    let ctx = ctx().await;
    let created = ctx.create(&patient("Corrupted")).await;
    let id = created["id"].as_str().expect("id");
    // Damage the stored JSON behind the server's back (as the owner role, in this tenant).
    let owner = owner_pool().await;
    let mut tx = owner.begin().await.expect("begin");
    sqlx::query("SELECT set_config('hearth.tenant', $1, true)")
        .bind(ctx.tenant.as_str())
        .execute(&mut *tx)
        .await
        .expect("set tenant");
    let updated = sqlx::query("UPDATE resource_versions SET content = '{not json' WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .expect("corrupt")
        .rows_affected();
    assert_eq!(updated, 1);
    tx.commit().await.expect("commit");
    let response = ctx
        .get(&format!("Patient/{id}/_history"))
        .send()
        .await
        .expect("get");
    let request_id = response.headers().get("x-request-id").cloned();
    let outcome = expect_outcome(response, 500).await;
    assert!(request_id.is_some());
    let text = outcome.to_string();
    assert!(
        !text.contains("not json") && !text.contains("SQLSTATE"),
        "{text}"
    );
}
