//! What operators rely on: health, readiness, metrics, request ids.

mod common;

use common::{ctx, patient};

#[tokio::test]
async fn health_readiness_and_metrics() {
    let ctx = ctx().await;
    let health = ctx
        .client
        .get(format!("{}/healthz", ctx.origin))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let ready = ctx
        .client
        .get(format!("{}/readyz", ctx.origin))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(body["status"], "ready");

    let created = ctx.create(&patient("Metered")).await;
    let id = created["id"].as_str().expect("id");
    assert_eq!(
        ctx.get(&format!("Patient/{id}"))
            .send()
            .await
            .expect("read")
            .status(),
        200
    );
    let metrics = ctx
        .client
        .get(format!("{}/metrics", ctx.origin))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let read_line = metrics.lines().find(|l| {
        l.starts_with("hearth_http_requests_total")
            && l.contains("route=\"/fhir/{tenant}/{type}/{id}\"")
            && l.contains("method=\"GET\"")
            && l.contains("status=\"200\"")
    });
    assert!(
        read_line.is_some(),
        "request counter by route pattern:\n{metrics}"
    );
    assert!(metrics.contains("hearth_http_request_duration_seconds_bucket"));
    assert!(
        !metrics.contains(id),
        "metrics are labelled by pattern, never by id"
    );
}

#[tokio::test]
async fn request_ids_are_returned_and_caller_ids_kept() {
    let ctx = ctx().await;
    let generated = ctx
        .client
        .get(format!("{}/healthz", ctx.origin))
        .send()
        .await
        .expect("get");
    assert!(
        generated
            .headers()
            .get("x-request-id")
            .is_some_and(|v| v.len() >= 16)
    );
    let kept = ctx
        .client
        .get(format!("{}/healthz", ctx.origin))
        .header("x-request-id", "engine-42")
        .send()
        .await
        .expect("get");
    assert_eq!(kept.headers()["x-request-id"], "engine-42");
    let unsafe_id = ctx
        .client
        .get(format!("{}/healthz", ctx.origin))
        .header("x-request-id", "a b\"c")
        .send()
        .await
        .expect("get");
    assert_ne!(unsafe_id.headers()["x-request-id"], "a b\"c");
}
