//! The FHIR REST core over real HTTP against real PostgreSQL.

mod common;

use common::{ctx, expect_outcome, patient};
use serde_json::{Value, json};

#[tokio::test]
async fn metadata_is_public_and_describes_the_server() {
    let ctx = ctx().await;
    let response = ctx
        .client
        .get(ctx.url("metadata"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let cs: Value = response.json().await.expect("json");
    assert_eq!(cs["resourceType"], "CapabilityStatement");
    assert_eq!(cs["fhirVersion"], "4.0.1");
    assert_eq!(cs["kind"], "instance");
    let resources = cs["rest"][0]["resource"].as_array().expect("resources");
    let patient = resources
        .iter()
        .find(|r| r["type"] == "Patient")
        .expect("Patient listed");
    let codes: Vec<&str> = patient["interaction"]
        .as_array()
        .expect("interactions")
        .iter()
        .filter_map(|i| i["code"].as_str())
        .collect();
    assert_eq!(codes, hearth::fhir::RESOURCE_INTERACTIONS);
    assert_eq!(patient["versioning"], "versioned-update");
    // Search parameters come from the registry, with their definitions.
    let params: Vec<&str> = patient["searchParam"]
        .as_array()
        .expect("searchParam")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for expected in [
        "_id",
        "_lastUpdated",
        "name",
        "birthdate",
        "identifier",
        "gender",
        "race",
    ] {
        assert!(params.contains(&expected), "Patient searchParam {expected}");
    }
    let revincludes = patient["searchRevInclude"].as_array().expect("revincludes");
    assert!(revincludes.iter().any(|r| r == "Provenance:target"));
    let observation = resources
        .iter()
        .find(|r| r["type"] == "Observation")
        .expect("Observation listed");
    assert!(
        observation["searchInclude"]
            .as_array()
            .is_some_and(|i| i.iter().any(|r| r == "Observation:patient"))
    );
}

/// The CapabilityStatement must not promise what the router does not serve.
#[tokio::test]
async fn every_advertised_interaction_is_routed() {
    let ctx = ctx().await;
    let created = ctx.create(&patient("Routed")).await;
    let id = created["id"].as_str().expect("id");
    for code in hearth::fhir::RESOURCE_INTERACTIONS {
        let request = match *code {
            "read" => ctx.get(&format!("Patient/{id}")),
            "vread" => ctx.get(&format!("Patient/{id}/_history/1")),
            "update" => ctx.put(
                &format!("Patient/{id}"),
                &json!({"resourceType": "Patient", "id": id}),
            ),
            "patch" => ctx
                .client
                .patch(ctx.url(&format!("Patient/{id}")))
                .bearer_auth(&ctx.token)
                .header("content-type", "application/json-patch+json")
                .body(r#"[{"op": "add", "path": "/gender", "value": "male"}]"#),
            "delete" => ctx.delete(&format!("Patient/{id}")),
            "history-instance" => ctx.get(&format!("Patient/{id}/_history")),
            "history-type" => ctx.get("Patient/_history"),
            "create" => ctx.post("Patient", &patient("Routed")),
            "search-type" => ctx.get("Patient?name=Routed"),
            other => panic!("no probe for advertised interaction {other}"),
        };
        let status = request.send().await.expect("request").status().as_u16();
        assert!((200..300).contains(&status), "{code} answered {status}");
    }
    for (name, _) in hearth::fhir::OPERATIONS {
        let request = match *name {
            "validate" => ctx.post("Patient/$validate", &patient("Routed")),
            other => panic!("no probe for advertised operation {other}"),
        };
        let status = request.send().await.expect("request").status().as_u16();
        assert_eq!(status, 200, "${name}");
    }
    // The probes above deleted the first patient.
    let created = ctx.create(&patient("Routed")).await;
    let id = created["id"].as_str().expect("id");
    let group = ctx
        .create(
            &json!({"resourceType": "Group", "type": "person", "actual": true,
                        "member": [{"entity": {"reference": format!("Patient/{id}")}}]}),
        )
        .await;
    let group = group["id"].as_str().expect("id");
    let kick_off = |path: String| ctx.get(&path).header("prefer", "respond-async");
    for (resource_type, name, _) in hearth::fhir::TYPE_OPERATIONS {
        let (request, expected) = match (*resource_type, *name) {
            ("Patient", "everything") => (ctx.get(&format!("Patient/{id}/$everything")), 200),
            ("Patient", "export") => (kick_off("Patient/$export".into()), 202),
            ("Group", "export") => (kick_off(format!("Group/{group}/$export")), 202),
            ("Questionnaire", "populate") => {
                let order = ctx
                    .create(&json!({"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                                    "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "72148"}]},
                                    "subject": {"reference": format!("Patient/{id}")}}))
                    .await;
                let body = json!({"resourceType": "Parameters", "parameter": [
                    {"name": "subject", "valueReference": {"reference": format!("Patient/{id}")}},
                    {"name": "order", "valueReference": {"reference": format!("ServiceRequest/{}", order["id"].as_str().unwrap_or(""))}}]});
                (
                    ctx.post("Questionnaire/$populate", &body)
                        .header("x-purpose-of-use", "HPAYMT"),
                    200,
                )
            }
            other => panic!("no probe for advertised operation {other:?}"),
        };
        let status = request.send().await.expect("request").status().as_u16();
        assert_eq!(status, expected, "{resource_type}/${name}");
    }
    for (name, _) in hearth::fhir::SYSTEM_OPERATIONS {
        let request = match *name {
            "export" => kick_off("$export".into()),
            other => panic!("no probe for advertised operation {other}"),
        };
        let status = request.send().await.expect("request").status().as_u16();
        assert_eq!(status, 202, "${name}");
    }
}

#[tokio::test]
async fn create_read_update_vread_delete() {
    let ctx = ctx().await;
    let mut body = patient("Lifecycle");
    body["id"] = json!("client-chosen");
    let response = ctx.post("Patient", &body).send().await.expect("request");
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    assert_eq!(response.headers()["etag"], "W/\"1\"");
    assert!(response.headers().contains_key("last-modified"));
    let created: Value = response.json().await.expect("json");
    let id = created["id"].as_str().expect("id").to_owned();
    assert_ne!(id, "client-chosen", "the server assigns ids on create");
    assert_eq!(location, ctx.url(&format!("Patient/{id}/_history/1")));
    assert_eq!(created["meta"]["versionId"], "1");
    assert!(
        created["meta"]["lastUpdated"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z'))
    );
    assert_eq!(created["name"][0]["family"], "Lifecycle");

    let read: Value = ctx
        .get(&format!("Patient/{id}"))
        .send()
        .await
        .expect("read")
        .json()
        .await
        .expect("json");
    assert_eq!(read, created);

    let mut changed = created.clone();
    changed["gender"] = json!("male");
    let response = ctx
        .put(&format!("Patient/{id}"), &changed)
        .send()
        .await
        .expect("update");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], "W/\"2\"");
    let updated: Value = response.json().await.expect("json");
    assert_eq!(updated["meta"]["versionId"], "2");
    assert_eq!(updated["gender"], "male");

    let v1: Value = ctx
        .get(&format!("Patient/{id}/_history/1"))
        .send()
        .await
        .expect("vread")
        .json()
        .await
        .expect("json");
    assert_eq!(v1["gender"], "female");
    let v2: Value = ctx
        .get(&format!("Patient/{id}/_history/2"))
        .send()
        .await
        .expect("vread")
        .json()
        .await
        .expect("json");
    assert_eq!(v2["gender"], "male");

    let response = ctx
        .delete(&format!("Patient/{id}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status(), 204);
    assert_eq!(response.headers()["etag"], "W/\"3\"");
    let gone = ctx
        .get(&format!("Patient/{id}"))
        .send()
        .await
        .expect("read");
    expect_outcome(gone, 410).await;
    let deleted_version = ctx
        .get(&format!("Patient/{id}/_history/3"))
        .send()
        .await
        .expect("vread");
    expect_outcome(deleted_version, 410).await;
    let v1_again = ctx
        .get(&format!("Patient/{id}/_history/1"))
        .send()
        .await
        .expect("vread");
    assert_eq!(
        v1_again.status(),
        200,
        "old versions stay readable after delete"
    );
    // Deleting again is idempotent and adds no version.
    assert_eq!(
        ctx.delete(&format!("Patient/{id}"))
            .send()
            .await
            .expect("delete")
            .status(),
        204
    );

    let history: Value = ctx
        .get(&format!("Patient/{id}/_history"))
        .send()
        .await
        .expect("history")
        .json()
        .await
        .expect("json");
    assert_eq!(history["type"], "history");
    let methods: Vec<&str> = history["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["request"]["method"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(methods, vec!["DELETE", "PUT", "POST"]);
    assert!(history["entry"][0].get("resource").is_none());

    // Update after delete revives the resource as a new version (update-as-create).
    let revived = ctx
        .put(&format!("Patient/{id}"), &changed)
        .send()
        .await
        .expect("update");
    assert_eq!(revived.status(), 201);
    assert_eq!(revived.headers()["etag"], "W/\"4\"");
}

#[tokio::test]
async fn update_as_create_uses_the_client_id() {
    let ctx = ctx().await;
    let mut body = patient("Upsert");
    body["id"] = json!("mrn-123.A");
    let response = ctx
        .put("Patient/mrn-123.A", &body)
        .send()
        .await
        .expect("put");
    assert_eq!(response.status(), 201);
    assert_eq!(
        response.headers()["location"],
        ctx.url("Patient/mrn-123.A/_history/1").as_str()
    );
    let read: Value = ctx
        .get("Patient/mrn-123.A")
        .send()
        .await
        .expect("read")
        .json()
        .await
        .expect("json");
    assert_eq!(read["id"], "mrn-123.A");
}

#[tokio::test]
async fn the_stored_json_is_what_was_sent() {
    let ctx = ctx().await;
    let body = json!({
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "valueQuantity": {"value": 1.50, "unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL"},
        "meta": {"profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-observation-lab"], "versionId": "99"},
        "_status": {"extension": [{"url": "http://example.org/x", "valueString": "kept"}]}
    });
    // Send the exact text so the decimal's trailing zero is on the wire.
    let text = body.to_string().replace("1.5,", "1.50,");
    assert!(text.contains("1.50"));
    let response = ctx
        .client
        .post(ctx.url("Observation"))
        .bearer_auth(&ctx.token)
        .header("content-type", "application/fhir+json")
        .body(text)
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 201);
    let stored = response.text().await.expect("text");
    assert!(
        stored.contains("\"value\":1.50"),
        "decimal precision kept: {stored}"
    );
    assert!(
        stored.starts_with("{\"resourceType\":\"Observation\",\"id\":"),
        "resourceType, id first: {stored}"
    );
    let stored: Value = serde_json::from_str(&stored).expect("json");
    assert_eq!(
        stored["meta"]["versionId"], "1",
        "the server owns versionId"
    );
    assert_eq!(
        stored["meta"]["profile"][0],
        "http://hl7.org/fhir/us/core/StructureDefinition/us-core-observation-lab"
    );
    assert_eq!(stored["_status"]["extension"][0]["valueString"], "kept");
}

#[tokio::test]
async fn history_pages_with_next_links() {
    let ctx = ctx().await;
    let created = ctx.create(&patient("Paged")).await;
    let id = created["id"].as_str().expect("id");
    for i in 0..6 {
        let mut body = created.clone();
        body["name"][0]["given"] = json!([format!("G{i}")]);
        assert_eq!(
            ctx.put(&format!("Patient/{id}"), &body)
                .send()
                .await
                .expect("put")
                .status(),
            200
        );
    }
    let mut url = ctx.url(&format!("Patient/{id}/_history?_count=3"));
    let mut versions = Vec::new();
    let mut pages = 0;
    loop {
        let page: Value = ctx
            .client
            .get(&url)
            .bearer_auth(&ctx.token)
            .send()
            .await
            .expect("page")
            .json()
            .await
            .expect("json");
        pages += 1;
        for entry in page["entry"].as_array().expect("entries") {
            versions.push(
                entry["resource"]["meta"]["versionId"]
                    .as_str()
                    .expect("versionId")
                    .to_owned(),
            );
        }
        let next = page["link"]
            .as_array()
            .expect("links")
            .iter()
            .find(|l| l["relation"] == "next");
        match next {
            Some(link) => url = link["url"].as_str().expect("url").to_owned(),
            None => break,
        }
    }
    assert_eq!(versions, vec!["7", "6", "5", "4", "3", "2", "1"]);
    assert_eq!(pages, 3);

    // Type-level history holds this tenant's Patient versions, and only those.
    let other = ctx.create(&patient("Other")).await;
    let type_history: Value = ctx
        .get("Patient/_history?_count=100")
        .send()
        .await
        .expect("history")
        .json()
        .await
        .expect("json");
    let entries = type_history["entry"].as_array().expect("entries");
    assert_eq!(entries.len(), 8);
    assert_eq!(entries[0]["resource"]["id"], other["id"], "newest first");
}

#[tokio::test]
async fn if_match_guards_updates_and_deletes() {
    let ctx = ctx().await;
    let created = ctx.create(&patient("Guarded")).await;
    let id = created["id"].as_str().expect("id");
    let stale = ctx
        .put(&format!("Patient/{id}"), &created)
        .header("if-match", "W/\"7\"")
        .send()
        .await
        .expect("put");
    let outcome = expect_outcome(stale, 412).await;
    assert_eq!(outcome["issue"][0]["code"], "conflict");
    let fresh = ctx
        .put(&format!("Patient/{id}"), &created)
        .header("if-match", "W/\"1\"")
        .send()
        .await
        .expect("put");
    assert_eq!(fresh.status(), 200);
    let stale_delete = ctx
        .delete(&format!("Patient/{id}"))
        .header("if-match", "W/\"1\"")
        .send()
        .await
        .expect("delete");
    expect_outcome(stale_delete, 412).await;
}

#[tokio::test]
async fn prefer_return() {
    let ctx = ctx().await;
    let minimal = ctx
        .post("Patient", &patient("Minimal"))
        .header("prefer", "return=minimal")
        .send()
        .await
        .expect("post");
    assert_eq!(minimal.status(), 201);
    assert!(minimal.headers().contains_key("location"));
    assert_eq!(minimal.text().await.expect("body"), "");
    let outcome = ctx
        .post("Patient", &patient("Outcome"))
        .header("prefer", "return=OperationOutcome")
        .send()
        .await
        .expect("post");
    assert_eq!(outcome.status(), 201);
    let body: Value = outcome.json().await.expect("json");
    assert_eq!(body["resourceType"], "OperationOutcome");
    assert_eq!(body["issue"][0]["severity"], "information");
}

#[tokio::test]
async fn content_negotiation() {
    let ctx = ctx().await;
    let created = ctx.create(&patient("Negotiated")).await;
    let id = created["id"].as_str().expect("id");
    for accept in ["application/fhir+json", "application/json", "*/*"] {
        let r = ctx
            .get(&format!("Patient/{id}"))
            .header("accept", accept)
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 200, "{accept}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap_or_default()
                .starts_with("application/fhir+json")
        );
    }
    let json_format = ctx
        .get(&format!("Patient/{id}?_format=json"))
        .send()
        .await
        .expect("get");
    assert_eq!(json_format.status(), 200);
    let plain_json_body = ctx
        .client
        .post(ctx.url("Patient"))
        .bearer_auth(&ctx.token)
        .header("content-type", "application/json")
        .body(patient("Plain").to_string())
        .send()
        .await
        .expect("post");
    assert_eq!(plain_json_body.status(), 201);
}
