//! The demo EHR (demo mode): Hearth's demo tenant plays the EHR for a first-time user's
//! SMART launch, end to end in a headless browser; refused outside demo mode.

mod common;

use std::sync::OnceLock;

use common::app::{PATIENT_FAMILY, browser, seed_chart};
use common::{Ctx, TestServer, ctx_on, start_server, unique_tenant};
use hearth::config::RunMode;
use hearth::store::EhrRegistrationRow;
use hearth::tenant::TenantId;
use serde_json::{Value, json};

/// The demo-mode server, the tenant playing its EHR and the app's tenant (an EHR's `iss`
/// belongs to one tenant).
fn demo() -> &'static (TestServer, TenantId, TenantId) {
    static DEMO: OnceLock<(TestServer, TenantId, TenantId)> = OnceLock::new();
    DEMO.get_or_init(|| {
        let ehr_tenant = unique_tenant();
        let name = ehr_tenant.as_str().to_owned();
        let server = start_server(|config| {
            config.server.mode = RunMode::Demo;
            config.app.demo_ehr = true;
            config.app.demo_ehr_tenant = name;
        });
        (server, ehr_tenant, unique_tenant())
    })
}

async fn setup() -> (Ctx, Ctx, common::app::Chart) {
    let (server, ehr_tenant, app_tenant) = demo();
    let ehr = ctx_on(server, ehr_tenant.clone()).await;
    let chart = seed_chart(&ehr, 2).await;
    let app = ctx_on(server, app_tenant.clone()).await;
    let row = EhrRegistrationRow {
        id: "demo-ehr".into(),
        name: "Demo EHR".into(),
        iss: format!("{}/fhir/{}", ehr.origin, ehr.tenant),
        client_id: hearth::demo_ehr::DEMO_CLIENT_ID.into(),
        client_auth: "public".into(),
        scopes: "launch openid fhirUser patient/*.rs".into(),
        standalone_scopes: "launch/patient openid fhirUser patient/*.rs".into(),
        frame_ancestors: vec![],
    };
    let register = || app.store.put_ehr_registration(&app.tenant, &row);
    // The tests of this binary share the registration: two first writes may race.
    if register().await.is_err() {
        register().await.expect("register");
    }
    (ehr, app, chart)
}

#[tokio::test]
async fn a_first_time_user_launches_the_app_from_the_demo_ehr_in_a_browser() {
    let (ehr, _app, chart) = setup().await;
    let discovery: Value = reqwest::get(format!(
        "{}/.well-known/smart-configuration",
        ehr.url("").trim_end_matches('/')
    ))
    .await
    .expect("discovery")
    .json()
    .await
    .expect("json");
    assert_eq!(
        discovery["authorization_endpoint"],
        format!("{}/demo-ehr/authorize", ehr.origin).as_str()
    );
    // A practitioner with no encounter or care team with the patient: the demo EHR's launch
    // itself vouches for the relationship (its own FHIR API would refuse them otherwise).
    let covering = ehr
        .create(&json!({"resourceType": "Practitioner", "name": [{"family": "Covering"}]}))
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let result = browser(json!([
        {"name": "chart", "goto": format!("{}/demo-ehr", ehr.origin)},
        {"name": "picker", "expect_text": PATIENT_FAMILY},
        {"name": "launch", "goto": format!("{}/demo-ehr/launch?patient={}&practitioner={}", ehr.origin, chart.patient, covering)},
        {"name": "consent", "expect_text": "Allow"},
        {"name": "allow", "click_text": "Allow"},
        {"name": "summary", "expect_text": PATIENT_FAMILY},
        {"name": "labs", "expect_text": "Hemoglobin A1c"},
        {"name": "complete", "expect_text": "Sync complete"},
    ]));
    assert_eq!(result["ok"], true, "browser scenario failed: {result}");
    let summary = result["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "summary"))
        .expect("summary");
    assert!(
        summary["url"]
            .as_str()
            .unwrap_or_default()
            .ends_with(&format!("/app/patient/{}", chart.patient))
    );
}

#[tokio::test]
async fn denying_at_the_demo_ehr_shows_a_clear_page_and_opens_no_session() {
    let (ehr, _app, chart) = setup().await;
    let result = browser(json!([
        {"name": "launch", "goto": format!("{}/demo-ehr/launch?patient={}&practitioner={}", ehr.origin, chart.patient, chart.practitioner)},
        {"name": "deny", "click_text": "Deny"},
        {"name": "denied", "expect_text": "Access not granted"},
    ]));
    assert_eq!(result["ok"], true, "browser scenario failed: {result}");
    let deny = result["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "deny"))
        .expect("deny");
    assert_eq!(deny["status"], 403, "{deny}");
    let denied = result["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "denied"))
        .expect("denied");
    assert!(
        !denied["cookies"]
            .as_array()
            .expect("cookies")
            .iter()
            .any(|c| c["name"] == "hearth_session")
    );
}

#[tokio::test]
async fn the_demo_ehrs_token_endpoint_wants_the_pkce_verifier_and_the_apps_callback() {
    let (ehr, _app, _chart) = setup().await;
    let response = reqwest::Client::new()
        .post(format!("{}/auth/token", ehr.url("").trim_end_matches('/')))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", "made-up"),
            ("client_id", "hearth-demo-app"),
            ("code_verifier", "x"),
        ])
        .send()
        .await
        .expect("token");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"], "invalid_grant");
    // On the ordinary test server (production mode) the grant does not exist at all.
    let ordinary = common::ctx().await;
    let response = reqwest::Client::new()
        .post(format!(
            "{}/auth/token",
            ordinary.url("").trim_end_matches('/')
        ))
        .form(&[("grant_type", "authorization_code"), ("code", "x")])
        .send()
        .await
        .expect("token");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"], "unsupported_grant_type");
    let chart = reqwest::get(format!("{}/demo-ehr", ordinary.origin))
        .await
        .expect("chart");
    assert_eq!(chart.status(), 404);
}
