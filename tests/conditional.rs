//! Conditional create, update, delete and read over real HTTP against real PostgreSQL.

mod common;

use common::{Ctx, ctx, expect_outcome, patient};
use serde_json::{Value, json};

const SYSTEM: &str = "http://example.org/mrn";

fn with_mrn(family: &str, mrn: &str) -> Value {
    let mut body = patient(family);
    body["identifier"] = json!([{"system": SYSTEM, "value": mrn}]);
    body
}

fn criteria(mrn: &str) -> String {
    format!("identifier={SYSTEM}|{mrn}")
}

/// Ids of the Patients with this MRN, by search.
async fn ids_with_mrn(ctx: &Ctx, mrn: &str) -> Vec<String> {
    let bundle: Value = ctx
        .get(&format!("Patient?{}", criteria(mrn)))
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("json");
    bundle["entry"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter_map(|e| e["resource"]["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn history_len(ctx: &Ctx, path: &str) -> usize {
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

#[tokio::test]
async fn if_none_exist_creates_once_then_returns_the_match() {
    let ctx = ctx().await;
    let first = ctx
        .post("Patient", &with_mrn("Cond", "c-1"))
        .header("if-none-exist", criteria("c-1"))
        .send()
        .await
        .expect("post");
    assert_eq!(first.status(), 201);
    let created: Value = first.json().await.expect("json");
    let id = created["id"].as_str().expect("id").to_owned();

    let second = ctx
        .post("Patient", &with_mrn("Cond Again", "c-1"))
        .header("if-none-exist", criteria("c-1"))
        .send()
        .await
        .expect("post");
    assert_eq!(second.status(), 200, "a match: no new resource");
    assert_eq!(second.headers()["etag"], "W/\"1\"");
    assert_eq!(
        second.headers()["location"],
        ctx.url(&format!("Patient/{id}/_history/1")).as_str()
    );
    let existing: Value = second.json().await.expect("json");
    assert_eq!(existing["id"], id.as_str());
    assert_eq!(
        existing["name"][0]["family"], "Cond",
        "the stored one, unchanged"
    );
    assert_eq!(ids_with_mrn(&ctx, "c-1").await, vec![id.clone()]);
    assert_eq!(history_len(&ctx, &format!("Patient/{id}")).await, 1);

    // The full search URL form is accepted too.
    let full_form = ctx
        .post("Patient", &with_mrn("Cond", "c-1"))
        .header("if-none-exist", format!("Patient?{}", criteria("c-1")))
        .send()
        .await
        .expect("post");
    assert_eq!(full_form.status(), 200);

    // Two matches: 412, nothing created.
    ctx.create(&with_mrn("Twin", "c-1")).await;
    let ambiguous = ctx
        .post("Patient", &with_mrn("Cond", "c-1"))
        .header("if-none-exist", criteria("c-1"))
        .send()
        .await
        .expect("post");
    expect_outcome(ambiguous, 412).await;
    assert_eq!(ids_with_mrn(&ctx, "c-1").await.len(), 2);
}

/// Concurrent conditional creates with the same criteria make exactly one resource: the
/// advisory lock serialises them, and each later one finds the first one's commit.
#[tokio::test]
async fn concurrent_conditional_creates_make_one_resource() {
    let ctx = ctx().await;
    let requests = (0..8).map(|_| {
        ctx.post("Patient", &with_mrn("Race", "race-1"))
            .header("if-none-exist", criteria("race-1"))
            .send()
    });
    let responses = futures_util::future::join_all(requests).await;
    let mut statuses = Vec::new();
    let mut ids = Vec::new();
    for response in responses {
        let response = response.expect("post");
        statuses.push(response.status().as_u16());
        let body: Value = response.json().await.expect("json");
        ids.push(body["id"].as_str().expect("id").to_owned());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, vec![200, 200, 200, 200, 200, 200, 200, 201]);
    ids.dedup();
    assert_eq!(ids.len(), 1, "every answer names the same resource");
    assert_eq!(ids_with_mrn(&ctx, "race-1").await, ids);
}

#[tokio::test]
async fn conditional_update() {
    let ctx = ctx().await;
    // No match, no id: created with a server id.
    let created = ctx
        .put(
            &format!("Patient?{}", criteria("u-1")),
            &with_mrn("Upd", "u-1"),
        )
        .send()
        .await
        .expect("put");
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let body: Value = created.json().await.expect("json");
    let id = body["id"].as_str().expect("id").to_owned();
    assert_eq!(location, ctx.url(&format!("Patient/{id}/_history/1")));

    // One match: updates it.
    let mut changed = with_mrn("Updated", "u-1");
    let updated = ctx
        .put(&format!("Patient?{}", criteria("u-1")), &changed)
        .send()
        .await
        .expect("put");
    assert_eq!(updated.status(), 200);
    assert_eq!(updated.headers()["etag"], "W/\"2\"");
    let body: Value = updated.json().await.expect("json");
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["name"][0]["family"], "Updated");

    // One match, the body names the same id: fine; another id: 400.
    changed["id"] = json!(id);
    let same = ctx
        .put(&format!("Patient?{}", criteria("u-1")), &changed)
        .send()
        .await
        .expect("put");
    assert_eq!(same.status(), 200);
    assert_eq!(same.headers()["etag"], "W/\"3\"");
    changed["id"] = json!("someone-else");
    let wrong = ctx
        .put(&format!("Patient?{}", criteria("u-1")), &changed)
        .send()
        .await
        .expect("put");
    expect_outcome(wrong, 400).await;

    // No match, id given and free: update-as-create with that id.
    let mut chosen = with_mrn("Chosen", "u-2");
    chosen["id"] = json!("chosen-id");
    let response = ctx
        .put(&format!("Patient?{}", criteria("u-2")), &chosen)
        .send()
        .await
        .expect("put");
    assert_eq!(response.status(), 201);
    assert_eq!(
        response.headers()["location"],
        ctx.url("Patient/chosen-id/_history/1").as_str()
    );

    // No match, but the id belongs to a resource that does not match: 409.
    let mut clash = with_mrn("Clash", "u-3");
    clash["id"] = json!("chosen-id");
    let response = ctx
        .put(&format!("Patient?{}", criteria("u-3")), &clash)
        .send()
        .await
        .expect("put");
    expect_outcome(response, 409).await;

    // Several matches: 412, nothing written.
    ctx.create(&with_mrn("Twin", "u-1")).await;
    let ambiguous = ctx
        .put(
            &format!("Patient?{}", criteria("u-1")),
            &with_mrn("X", "u-1"),
        )
        .send()
        .await
        .expect("put");
    expect_outcome(ambiguous, 412).await;
    assert_eq!(history_len(&ctx, &format!("Patient/{id}")).await, 3);
}

#[tokio::test]
async fn conditional_delete() {
    let ctx = ctx().await;
    // No match: 204, nothing to delete.
    let none = ctx
        .delete(&format!("Patient?{}", criteria("d-0")))
        .send()
        .await
        .expect("delete");
    assert_eq!(none.status(), 204);
    assert!(none.headers().get("etag").is_none());

    let created = ctx.create(&with_mrn("Del", "d-1")).await;
    let id = created["id"].as_str().expect("id");
    let one = ctx
        .delete(&format!("Patient?{}", criteria("d-1")))
        .send()
        .await
        .expect("delete");
    assert_eq!(one.status(), 204);
    assert_eq!(one.headers()["etag"], "W/\"2\"");
    let gone = ctx
        .get(&format!("Patient/{id}"))
        .send()
        .await
        .expect("read");
    expect_outcome(gone, 410).await;

    // Several matches: 412 (Hearth deletes a single match only), nothing deleted.
    let a = ctx.create(&with_mrn("A", "d-2")).await;
    ctx.create(&with_mrn("B", "d-2")).await;
    let many = ctx
        .delete(&format!("Patient?{}", criteria("d-2")))
        .send()
        .await
        .expect("delete");
    expect_outcome(many, 412).await;
    assert_eq!(ids_with_mrn(&ctx, "d-2").await.len(), 2);
    let a_id = a["id"].as_str().expect("id");
    assert_eq!(history_len(&ctx, &format!("Patient/{a_id}")).await, 1);
}

#[tokio::test]
async fn conditional_read() {
    let ctx = ctx().await;
    let created = ctx.create(&with_mrn("Read", "r-1")).await;
    let path = format!("Patient/{}", created["id"].as_str().expect("id"));

    let current = ctx
        .get(&path)
        .header("if-none-match", "W/\"1\"")
        .send()
        .await
        .expect("get");
    assert_eq!(current.status(), 304);
    assert_eq!(current.headers()["etag"], "W/\"1\"");
    assert_eq!(current.text().await.expect("body"), "");

    let any = ctx
        .get(&path)
        .header("if-none-match", "*")
        .send()
        .await
        .expect("get");
    assert_eq!(any.status(), 304);

    let other = ctx
        .get(&path)
        .header("if-none-match", "W/\"7\", W/\"8\"")
        .send()
        .await
        .expect("get");
    assert_eq!(other.status(), 200);

    let last_modified = current_last_modified(&ctx, &path).await;
    let same_time = ctx
        .get(&path)
        .header("if-modified-since", last_modified.as_str())
        .send()
        .await
        .expect("get");
    assert_eq!(same_time.status(), 304);
    let long_ago = ctx
        .get(&path)
        .header("if-modified-since", "Mon, 01 Jan 2001 00:00:00 GMT")
        .send()
        .await
        .expect("get");
    assert_eq!(long_ago.status(), 200);

    // After an update the old ETag no longer matches.
    let mut body = created.clone();
    body["gender"] = json!("male");
    assert_eq!(
        ctx.put(&path, &body).send().await.expect("put").status(),
        200
    );
    let stale = ctx
        .get(&path)
        .header("if-none-match", "W/\"1\"")
        .send()
        .await
        .expect("get");
    assert_eq!(stale.status(), 200);
    assert_eq!(stale.headers()["etag"], "W/\"2\"");
}

async fn current_last_modified(ctx: &Ctx, path: &str) -> String {
    ctx.get(path).send().await.expect("get").headers()["last-modified"]
        .to_str()
        .expect("last-modified")
        .to_owned()
}

#[tokio::test]
async fn criteria_are_strict_and_required() {
    let ctx = ctx().await;
    let unknown = ctx
        .post("Patient", &patient("Strict"))
        .header("if-none-exist", "frobnicate=1")
        .send()
        .await
        .expect("post");
    expect_outcome(unknown, 400).await;
    let paging = ctx
        .delete(&format!("Patient?{}&_count=1", criteria("x")))
        .send()
        .await
        .expect("delete");
    expect_outcome(paging, 400).await;
    let only_format = ctx
        .put("Patient?_format=json", &patient("NoCriteria"))
        .send()
        .await
        .expect("put");
    expect_outcome(only_format, 400).await;
    let bare = ctx
        .put("Patient", &patient("Bare"))
        .send()
        .await
        .expect("put");
    assert!(bare.headers().contains_key("allow"));
    expect_outcome(bare, 405).await;
    let bare_delete = ctx.delete("Patient").send().await.expect("delete");
    expect_outcome(bare_delete, 405).await;
    // Nothing was created by any of these.
    let all: Value = ctx
        .get("Patient")
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("json");
    assert_eq!(all["entry"].as_array().map_or(0, Vec::len), 0);
}

#[tokio::test]
async fn conditional_interactions_need_the_search_scope() {
    let ctx = ctx().await;
    let token = ctx.token_with("system/Patient.cud").await;
    let create = ctx
        .client
        .post(ctx.url("Patient"))
        .bearer_auth(&token)
        .header("content-type", "application/fhir+json")
        .header("if-none-exist", criteria("s-1"))
        .body(with_mrn("Scoped", "s-1").to_string())
        .send()
        .await
        .expect("post");
    expect_outcome(create, 403).await;
    let delete = ctx
        .client
        .delete(ctx.url(&format!("Patient?{}", criteria("s-1"))))
        .bearer_auth(&token)
        .send()
        .await
        .expect("delete");
    expect_outcome(delete, 403).await;
    assert!(ids_with_mrn(&ctx, "s-1").await.is_empty());
}

#[tokio::test]
async fn capability_statement_advertises_conditionals() {
    let ctx = ctx().await;
    let cs: Value = ctx
        .client
        .get(ctx.url("metadata"))
        .send()
        .await
        .expect("metadata")
        .json()
        .await
        .expect("json");
    let patient = cs["rest"][0]["resource"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["type"] == "Patient"))
        .expect("Patient")
        .clone();
    assert_eq!(patient["conditionalCreate"], true);
    assert_eq!(patient["conditionalUpdate"], true);
    assert_eq!(patient["conditionalDelete"], "single");
    assert_eq!(patient["conditionalRead"], "full-support");
    let system: Vec<&str> = cs["rest"][0]["interaction"]
        .as_array()
        .expect("interactions")
        .iter()
        .filter_map(|i| i["code"].as_str())
        .collect();
    assert_eq!(system, vec!["transaction", "batch"]);
}
