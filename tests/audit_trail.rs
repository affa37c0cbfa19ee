//! Audit completeness: every FHIR interaction that touches data — and every refusal — leaves
//! an audit event naming the request, the agent, the entities and the patients. Table-driven
//! over the routes; events are read back through the AuditEvent API.

mod common;

use common::{Ctx, ctx};
use serde_json::{Value, json};

/// A request of the table: what it is, and the audit event it must leave.
struct Case {
    name: &'static str,
    method: reqwest::Method,
    path: String,
    body: Option<(&'static str, Value)>,
    token: Option<String>,
    event: &'static str,
    /// The HTTP status the request gets.
    status: u16,
    /// An entity (Type/id) the event must name, if any.
    entity: Option<String>,
    /// A patient the event must name, if any.
    patient: Option<String>,
}

async fn send(ctx: &Ctx, case: &Case, request_id: &str) -> u16 {
    let mut r = ctx
        .client
        .request(case.method.clone(), ctx.url(&case.path))
        .header("x-request-id", request_id);
    if let Some(token) = &case.token {
        r = r.bearer_auth(token);
    }
    if let Some((content_type, body)) = &case.body {
        let text = match body {
            Value::String(form) => form.clone(),
            json => json.to_string(),
        };
        r = r.header("content-type", *content_type).body(text);
    }
    r.send().await.expect("request").status().as_u16()
}

/// Every audit event of the tenant, as AuditEvent JSON.
async fn audit_events(ctx: &Ctx, auditor: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut url = ctx.url("AuditEvent?_count=500");
    loop {
        let bundle: Value = ctx
            .client
            .get(&url)
            .bearer_auth(auditor)
            .send()
            .await
            .expect("audit search")
            .json()
            .await
            .expect("json");
        out.extend(
            bundle["entry"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|e| e["resource"].clone()),
        );
        match bundle["link"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["relation"] == "next"))
        {
            Some(next) => url = next["url"].as_str().expect("url").to_owned(),
            None => return out,
        }
    }
}

#[tokio::test]
async fn every_data_route_leaves_an_audit_event() {
    let ctx = ctx().await;
    let auditor = ctx.token_with("system/AuditEvent.rs").await;
    let patient = ctx
        .create(&json!({"resourceType": "Patient", "gender": "other"}))
        .await;
    let pid = patient["id"].as_str().expect("id").to_owned();
    let obs = |status: &str| {
        json!({"resourceType": "Observation", "status": status,
               "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
               "subject": {"reference": format!("Patient/{pid}")}})
    };
    let o = ctx.create(&obs("final")).await;
    let oid = o["id"].as_str().expect("id").to_owned();
    let doomed = ctx.create(&obs("preliminary")).await;
    let doomed = doomed["id"].as_str().expect("id").to_owned();
    let t = Some(ctx.token.clone());
    let fhir = "application/fhir+json";
    let mut updated = o.clone();
    updated["status"] = json!("amended");
    let cases = vec![
        Case {
            name: "read",
            method: reqwest::Method::GET,
            path: format!("Patient/{pid}"),
            body: None,
            token: t.clone(),
            event: "read",
            status: 200,
            entity: Some(format!("Patient/{pid}")),
            patient: Some(pid.clone()),
        },
        Case {
            name: "read of a clinical resource",
            method: reqwest::Method::GET,
            path: format!("Observation/{oid}"),
            body: None,
            token: t.clone(),
            event: "read",
            status: 200,
            entity: Some(format!("Observation/{oid}")),
            patient: Some(pid.clone()),
        },
        Case {
            name: "vread",
            method: reqwest::Method::GET,
            path: format!("Observation/{oid}/_history/1"),
            body: None,
            token: t.clone(),
            event: "vread",
            status: 200,
            entity: Some(format!("Observation/{oid}")),
            patient: Some(pid.clone()),
        },
        Case {
            name: "search",
            method: reqwest::Method::GET,
            path: format!("Observation?patient={pid}"),
            body: None,
            token: t.clone(),
            event: "search-type",
            status: 200,
            entity: Some(format!("Observation/{oid}")),
            patient: Some(pid.clone()),
        },
        Case {
            name: "POST _search",
            method: reqwest::Method::POST,
            path: "Observation/_search".into(),
            body: Some((
                "application/x-www-form-urlencoded",
                Value::String(format!("patient={pid}")),
            )),
            token: t.clone(),
            event: "search-type",
            status: 200,
            entity: Some(format!("Observation/{oid}")),
            patient: Some(pid.clone()),
        },
        Case {
            name: "history-instance",
            method: reqwest::Method::GET,
            path: format!("Patient/{pid}/_history"),
            body: None,
            token: t.clone(),
            event: "history-instance",
            status: 200,
            entity: Some(format!("Patient/{pid}")),
            patient: Some(pid.clone()),
        },
        Case {
            name: "history-type",
            method: reqwest::Method::GET,
            path: "Observation/_history".into(),
            body: None,
            token: t.clone(),
            event: "history-type",
            status: 200,
            entity: Some(format!("Observation/{oid}")),
            patient: Some(pid.clone()),
        },
        Case {
            name: "create",
            method: reqwest::Method::POST,
            path: "Observation".into(),
            body: Some((fhir, obs("final"))),
            token: t.clone(),
            event: "create",
            status: 201,
            entity: None,
            patient: Some(pid.clone()),
        },
        Case {
            name: "update",
            method: reqwest::Method::PUT,
            path: format!("Observation/{oid}"),
            body: Some((fhir, updated)),
            token: t.clone(),
            event: "update",
            status: 200,
            entity: Some(format!("Observation/{oid}")),
            patient: Some(pid.clone()),
        },
        Case {
            name: "patch",
            method: reqwest::Method::PATCH,
            path: format!("Observation/{oid}"),
            body: Some((
                "application/json-patch+json",
                json!([{"op": "replace", "path": "/status", "value": "corrected"}]),
            )),
            token: t.clone(),
            event: "patch",
            status: 200,
            entity: Some(format!("Observation/{oid}")),
            patient: Some(pid.clone()),
        },
        Case {
            name: "delete",
            method: reqwest::Method::DELETE,
            path: format!("Observation/{doomed}"),
            body: None,
            token: t.clone(),
            event: "delete",
            status: 204,
            entity: Some(format!("Observation/{doomed}")),
            patient: None,
        },
        Case {
            name: "transaction",
            method: reqwest::Method::POST,
            path: String::new(),
            body: Some((
                fhir,
                json!({"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": obs("final"), "request": {"method": "POST", "url": "Observation"}}]}),
            )),
            token: t.clone(),
            event: "transaction",
            status: 200,
            entity: None,
            patient: Some(pid.clone()),
        },
        Case {
            name: "batch read",
            method: reqwest::Method::POST,
            path: String::new(),
            body: Some((
                fhir,
                json!({"resourceType": "Bundle", "type": "batch", "entry": [{"request": {"method": "GET", "url": format!("Patient/{pid}")}}]}),
            )),
            token: t.clone(),
            event: "batch",
            status: 200,
            entity: Some(format!("Patient/{pid}")),
            patient: Some(pid.clone()),
        },
        Case {
            name: "$validate",
            method: reqwest::Method::GET,
            path: format!("Observation/{oid}/$validate"),
            body: None,
            token: t.clone(),
            event: "operation",
            status: 200,
            entity: Some(format!("Observation/{oid}")),
            patient: Some(pid.clone()),
        },
        Case {
            name: "read of a missing resource",
            method: reqwest::Method::GET,
            path: "Observation/no-such-thing".into(),
            body: None,
            token: t.clone(),
            event: "read",
            status: 404,
            entity: Some("Observation/no-such-thing".into()),
            patient: None,
        },
        Case {
            name: "no token",
            method: reqwest::Method::GET,
            path: format!("Patient/{pid}"),
            body: None,
            token: None,
            event: "auth-failure",
            status: 401,
            entity: Some(format!("Patient/{pid}")),
            patient: None,
        },
        Case {
            name: "insufficient scope",
            method: reqwest::Method::GET,
            path: format!("Patient/{pid}"),
            body: None,
            token: Some(ctx.token_with("system/Observation.rs").await),
            event: "access-denied",
            status: 403,
            entity: Some(format!("Patient/{pid}")),
            patient: None,
        },
    ];
    let mut expected = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let request_id = format!(
            "audit-case-{i}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let status = send(&ctx, case, &request_id).await;
        assert_eq!(status, case.status, "{}", case.name);
        expected.push((case, request_id));
    }
    let events = audit_events(&ctx, &auditor).await;
    for (case, request_id) in expected {
        let found: Vec<&Value> = events
            .iter()
            .filter(|e| e.to_string().contains(&request_id))
            .collect();
        assert!(
            !found.is_empty(),
            "{}: no audit event with request id {request_id}",
            case.name
        );
        let text = found
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            found.iter().any(|e| e["subtype"]
                .as_array()
                .is_some_and(|s| s.iter().any(|c| c["code"] == case.event))),
            "{}: expected event {}, got {text}",
            case.name,
            case.event
        );
        if let Some(entity) = &case.entity {
            assert!(
                text.contains(entity.as_str()),
                "{}: entity {entity} in {text}",
                case.name
            );
        }
        if let Some(p) = &case.patient {
            assert!(
                text.contains(&format!("Patient/{p}")),
                "{}: patient {p} in {text}",
                case.name
            );
        }
        if case.token.is_some() {
            assert!(
                text.contains("test-client"),
                "{}: the agent (token sub) in {text}",
                case.name
            );
        }
    }
}

#[tokio::test]
async fn a_read_is_audited_before_its_response() {
    let ctx = ctx().await;
    let auditor = ctx.token_with("system/AuditEvent.rs").await;
    let p = ctx.create(&json!({"resourceType": "Patient"})).await;
    let pid = p["id"].as_str().expect("id");
    let r = ctx
        .get(&format!("Patient/{pid}"))
        .header("x-request-id", "before-response-check")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    // No waiting: the row was committed before the response was sent.
    let events = audit_events(&ctx, &auditor).await;
    assert!(
        events
            .iter()
            .any(|e| e.to_string().contains("before-response-check"))
    );
}

#[tokio::test]
async fn when_the_audit_write_fails_the_data_is_not_served() {
    let ctx = ctx().await;
    let p = ctx
        .create(&json!({"resourceType": "Patient", "gender": "female"}))
        .await;
    let pid = p["id"].as_str().expect("id").to_owned();
    // Make audit inserts of this tenant fail (as the superuser; other tenants unaffected).
    let admin = hearth::store::connect(&common::env("HEARTH_ADMIN_DATABASE_URL"), 1)
        .await
        .expect("admin");
    let function = format!("audit_fail_{}", ctx.tenant.as_str().replace('-', "_"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
           IF NEW.tenant_id = '{tenant}' THEN RAISE EXCEPTION 'audit store unavailable'; END IF;
           RETURN NEW; END $$;
         CREATE TRIGGER {function} BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION {function}();",
        tenant = ctx.tenant.as_str()
    )))
    .execute(&admin)
    .await
    .expect("install failing trigger");
    let read = ctx
        .get(&format!("Patient/{pid}"))
        .send()
        .await
        .expect("get");
    let read_status = read.status().as_u16();
    let read_body = read.text().await.expect("body");
    let write = ctx
        .put(
            &format!("Patient/{pid}"),
            &json!({"resourceType": "Patient", "id": pid, "gender": "male"}),
        )
        .send()
        .await
        .expect("put");
    let write_status = write.status().as_u16();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP TRIGGER {function} ON audit_events; DROP FUNCTION {function}();"
    )))
    .execute(&admin)
    .await
    .expect("remove trigger");
    assert_eq!(read_status, 500);
    assert!(
        !read_body.contains("female"),
        "no data without its audit row: {read_body}"
    );
    assert_eq!(write_status, 500);
    // The change rolled back with its audit row.
    let now: Value = ctx
        .get(&format!("Patient/{pid}"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(now["gender"], "female");
    assert_eq!(now["meta"]["versionId"], "1");
}
