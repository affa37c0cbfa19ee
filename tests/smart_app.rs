//! The SMART app, launched from a real EHR authorization server (npm `oidc-provider` in
//! `ehr.mjs`) whose FHIR API is a second Hearth tenant, driven by a real headless browser
//! (playwright-core + Debian chromium) and by an HTTP driver for the negative cases.

mod common;

use common::app::{
    Chart, Driver, NOTE_TEXT, PATIENT_FAMILY, browser, ehr_for, location, register, seed_chart,
};
use common::{APP_IDLE_SECS, Ctx, TestServer, ctx, ctx_on, start_server, unique_tenant};
use serde_json::{Value, json};

struct Setup {
    app: Ctx,
    ehr_tenant: Ctx,
    chart: Chart,
}

async fn setup(labs: usize) -> Setup {
    let app = ctx().await;
    let ehr_tenant = ctx().await;
    let chart = seed_chart(&ehr_tenant, labs).await;
    Setup {
        app,
        ehr_tenant,
        chart,
    }
}

/// An EHR in front of the setup's chart, registered with the app's tenant (public client).
async fn registered(s: &Setup, faults: Value) -> common::app::Ehr {
    let ehr = ehr_for(&s.app, &s.ehr_tenant, &s.chart, faults);
    register(&s.app, &ehr, "hearth-public", "public", &[]).await;
    ehr
}

/// An EHR in front of the setup's chart (public client registered) and a browser-like
/// driver that has launched the app for the patient (`launch-a`).
async fn launched(s: &Setup, faults: Value) -> (common::app::Ehr, Driver) {
    let ehr = registered(s, faults).await;
    let mut driver = Driver::new(&s.app.origin);
    assert_eq!(
        driver.launch(&ehr.fhir_base, "launch-a").await.status(),
        303
    );
    (ehr, driver)
}

async fn summary_html(driver: &mut Driver, s: &Setup) -> String {
    driver
        .hearth_get(&format!("/app/patient/{}", s.chart.patient))
        .await
        .text()
        .await
        .expect("html")
}

/// The CSRF token of a page's forms.
fn csrf_of(html: &str) -> String {
    html.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("csrf field")
        .to_owned()
}

fn step<'a>(result: &'a Value, name: &str) -> &'a Value {
    result["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no step {name}: {result}"))
}

async fn audit_events(
    app: &Ctx,
    event: &str,
) -> Vec<(String, Vec<String>, Vec<String>, Option<String>, bool)> {
    let mut tx = app.store.begin(&app.tenant).await.expect("tx");
    let rows = sqlx::query_as(
        "SELECT outcome::text, patients, reasons, outcome_text, high_severity FROM audit_events
          WHERE tenant_id = $1 AND event = $2 ORDER BY seq",
    )
    .bind(app.tenant.as_str())
    .bind(event)
    .fetch_all(tx.conn())
    .await
    .expect("audit rows");
    tx.commit().await.expect("commit");
    rows
}

#[tokio::test]
async fn an_ehr_launch_in_a_headless_browser_shows_the_patient_and_cites_sources_then_logs_off() {
    let s = setup(3).await;
    let ehr = ehr_for(&s.app, &s.ehr_tenant, &s.chart, json!({}));
    register(
        &s.app,
        &ehr,
        "hearth-public",
        "public",
        std::slice::from_ref(&ehr.issuer),
    )
    .await;
    let launch_url = format!(
        "{}/app/launch?iss={}&launch=launch-a",
        s.app.origin,
        urlencode(&ehr.fhir_base)
    );
    let result = browser(json!([
        {"name": "launch", "goto": launch_url},
        {"name": "summary", "expect_text": PATIENT_FAMILY},
        {"name": "labs", "expect_text": "Hemoglobin A1c"},
        {"name": "cited", "expect_text": "Clinical summary"},
        {"name": "note-link", "click": "a.source[href*='passage=']"},
        {"name": "source", "expect_text": "metformin 1000 mg twice daily"},
        {"name": "idle", "wait_ms": (APP_IDLE_SECS + 3) * 1000},
        {"name": "ended", "expect_text": "Signed out after inactivity"},
    ]));
    assert_eq!(result["ok"], true, "browser scenario failed: {result}");

    let summary = step(&result, "summary");
    assert!(
        summary["url"]
            .as_str()
            .unwrap_or_default()
            .ends_with(&format!("/app/patient/{}", s.chart.patient))
    );
    let text = summary["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("MRN-4471"),
        "the banner shows the MRN (need_patient_banner): {text}"
    );
    assert!(
        text.contains("Penicillin") && text.contains("Metformin"),
        "{text}"
    );
    // The session cookie: HttpOnly, Secure, SameSite=None (the EHR's iframe), on /app.
    let cookies = summary["cookies"].as_array().expect("cookies");
    let session = cookies
        .iter()
        .find(|c| c["name"] == "hearth_session")
        .expect("session cookie");
    assert_eq!(session["httpOnly"], true);
    assert_eq!(session["secure"], true);
    assert_eq!(session["sameSite"], "None");
    assert!(
        !cookies.iter().any(|c| c["name"] == "hearth_launch"),
        "the launch cookie is gone"
    );
    // Tokens never reach the browser: not in storage, not in a URL Hearth sent it to.
    assert_eq!(summary["storage"]["local"], json!({}));
    assert_eq!(summary["storage"]["session"], json!({}));
    for s in result["steps"].as_array().expect("steps") {
        for r in s["requests"].as_array().into_iter().flatten() {
            let url = r["url"].as_str().unwrap_or_default();
            assert!(
                !url.contains("access_token") && !url.contains("id_token"),
                "{url}"
            );
        }
    }
    let csp = summary["headers"]["content-security-policy"]
        .as_str()
        .unwrap_or_default();
    assert!(
        csp.contains(&format!("frame-ancestors {}", ehr.issuer)),
        "{csp}"
    );
    assert_eq!(summary["headers"]["cache-control"], "no-store");

    // The summary's statements cite their sources; the note's highlight opened the note
    // with the cited passage marked.
    let cited = step(&result, "cited")["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        cited.contains("Type 2 diabetes") && cited.contains("E11.9"),
        "{cited}"
    );
    assert!(
        cited.contains("[Progress note]"),
        "the note highlight cites the note: {cited}"
    );
    let source = step(&result, "source");
    assert!(
        source["url"]
            .as_str()
            .unwrap_or_default()
            .contains("passage=")
    );
    assert!(
        source["url"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("/source/DocumentReference/{}", s.chart.note))
    );
    assert!(
        source["text"]
            .as_str()
            .unwrap_or_default()
            .contains(NOTE_TEXT)
    );

    // The authorize request, byte for byte what SMART asks.
    let log = ehr.log().await;
    let authorize = &log["authorize"][0]["params"];
    assert_eq!(authorize["aud"], ehr.fhir_base.as_str());
    assert_eq!(authorize["response_type"], "code");
    assert_eq!(authorize["launch"], "launch-a");
    assert_eq!(authorize["code_challenge_method"], "S256");
    assert_eq!(
        authorize["redirect_uri"],
        format!("{}/app/callback", s.app.origin).as_str()
    );
    let state = authorize["state"].as_str().expect("state");
    let random = state.split_once('.').expect("tenant.random").1;
    assert!(random.len() >= 43, "state carries 256 random bits: {state}");
    assert!(authorize["nonce"].as_str().is_some_and(|n| n.len() >= 43));
    assert_eq!(log["token"][0]["code_verifier"], true);

    // Inactivity ended the session on the server too, with its relationship; all audited.
    let logouts = audit_events(&s.app, "app-logout").await;
    assert_eq!(logouts.len(), 1, "{logouts:?}");
    assert!(
        logouts[0]
            .3
            .as_deref()
            .unwrap_or_default()
            .contains("inactive")
    );
    let launches = audit_events(&s.app, "app-launch").await;
    assert_eq!(launches.len(), 1);
    assert_eq!(launches[0].1, vec![s.chart.patient.clone()]);
    assert!(
        launches[0]
            .2
            .iter()
            .any(|r| r.contains("ehr-launch care relationship")),
        "{:?}",
        launches[0].2
    );
    let views = audit_events(&s.app, "app-view").await;
    assert!(
        views.len() >= 2,
        "summary and source views are audited: {views:?}"
    );
    assert!(views.iter().all(|v| v.1 == vec![s.chart.patient.clone()]));
}

fn urlencode(text: &str) -> String {
    let mut url = reqwest::Url::parse("http://x/").expect("url");
    url.query_pairs_mut().append_pair("v", text);
    url.query()
        .unwrap_or_default()
        .trim_start_matches("v=")
        .to_owned()
}

#[tokio::test]
async fn the_sync_stores_every_page_with_its_source_and_a_provenance_and_relaunches_incrementally()
{
    let s = setup(55).await; // more than one page of the EHR's default 50
    let ehr = registered(&s, json!({"fhir_429": 2})).await;
    let mut driver = Driver::new(&s.app.origin);
    let callback = driver.launch(&ehr.fhir_base, "launch-a").await;
    assert_eq!(callback.status(), 303);
    assert_eq!(
        location(&callback),
        format!("/app/patient/{}", s.chart.patient)
    );

    // Every lab came over (paging followed), each naming the EHR as its source.
    let labs = common::search_resources(
        &s.app,
        &format!(
            "Observation?patient={}&category=laboratory&_count=200",
            s.chart.patient
        ),
    )
    .await;
    assert_eq!(labs.len(), s.chart.labs);
    assert!(
        labs.iter()
            .all(|o| o["meta"]["source"] == ehr.fhir_base.as_str())
    );
    // The note's text was fetched (Binary) and kept with the note.
    let note = s
        .app
        .get(&format!("DocumentReference/{}", s.chart.note))
        .send()
        .await
        .expect("read");
    let note: Value = note.json().await.expect("json");
    assert!(
        note["content"][0]["attachment"]["data"].is_string(),
        "{note}"
    );
    // The user's Practitioner came too, and the launch's relationship is recorded.
    let practitioner = s
        .app
        .get(&format!("Practitioner/{}", s.chart.practitioner))
        .send()
        .await
        .expect("read");
    assert_eq!(practitioner.status(), 200);
    // One Provenance names what was written, with the EHR as the source entity.
    let provenances = common::search_resources(&s.app, "Provenance?_count=10").await;
    assert_eq!(provenances.len(), 1);
    let targets = provenances[0]["target"].as_array().expect("targets");
    assert!(targets.len() > s.chart.labs, "{} targets", targets.len());
    assert_eq!(
        provenances[0]["entity"][0]["what"]["identifier"]["value"],
        ehr.fhir_base.as_str()
    );

    let log = ehr.log().await;
    let fhir = log["fhir"].as_array().expect("fhir log");
    assert_eq!(
        fhir.iter().filter(|r| r["status"] == 429).count(),
        2,
        "the 429s were retried"
    );
    let lab_pages = fhir
        .iter()
        .filter(|r| {
            r["status"] == 200
                && r["path"].as_str().is_some_and(|p| {
                    p.contains("Observation") && p.contains("laboratory") || p.contains("_page")
                })
        })
        .count();
    assert!(lab_pages >= 2, "the next link was followed: {fhir:?}");
    // The sync report is on the summary page.
    let summary = driver
        .hearth_get(&format!("/app/patient/{}", s.chart.patient))
        .await;
    assert_eq!(summary.status(), 200);
    let html = summary.text().await.expect("html");
    assert!(html.contains("Hemoglobin A1c"));
    // The EHR's smart_style_url colours the page (its background, in the nonce'd style).
    let style: Value = reqwest::get(format!("{}/style.json", ehr.issuer))
        .await
        .expect("style")
        .json()
        .await
        .expect("json");
    let background = style["color_background"]
        .as_str()
        .expect("background")
        .to_ascii_lowercase();
    assert!(
        html.contains("<style nonce=") && html.to_ascii_lowercase().contains(&background),
        "{html}"
    );

    // A relaunch asks only for what changed since.
    let before = fhir.len();
    let mut again = Driver::new(&s.app.origin);
    assert_eq!(again.launch(&ehr.fhir_base, "launch-a").await.status(), 303);
    let log = ehr.log().await;
    let later: Vec<&Value> = log["fhir"].as_array().expect("log")[before..]
        .iter()
        .collect();
    let searches: Vec<&&Value> = later
        .iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.contains("patient=")))
        .collect();
    assert!(!searches.is_empty());
    assert!(
        searches.iter().all(|r| r["path"]
            .as_str()
            .is_some_and(|p| p.contains("_lastUpdated=ge"))),
        "{searches:?}"
    );
}

#[tokio::test]
async fn a_type_the_ehr_refuses_is_reported_and_the_rest_is_synced() {
    let s = setup(1).await;
    let ehr = ehr_for(
        &s.app,
        &s.ehr_tenant,
        &s.chart,
        json!({"fhir_status": {"AllergyIntolerance": 403}}),
    );
    register(&s.app, &ehr, "hearth-public", "public", &[]).await;
    let mut driver = Driver::new(&s.app.origin);
    assert_eq!(
        driver.launch(&ehr.fhir_base, "launch-a").await.status(),
        303
    );
    let html = summary_html(&mut driver, &s).await;
    assert!(
        html.contains("AllergyIntolerance: the EHR refused access to AllergyIntolerance (403)"),
        "{html}"
    );
    assert!(html.contains("Metformin"), "the other types were synced");
}

#[tokio::test]
async fn launches_from_an_unregistered_iss_are_refused_without_contacting_it() {
    let s = setup(0).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let foreign = format!("http://{}/fhir", listener.local_addr().expect("addr"));
    let mut driver = Driver::new(&s.app.origin);
    let response = driver
        .hearth_get(&format!("/app/launch?iss={}&launch=x", urlencode(&foreign)))
        .await;
    assert_eq!(response.status(), 400);
    assert!(response.headers().get("location").is_none(), "no redirect");
    let html = response.text().await.expect("html");
    assert!(html.contains("Unknown EHR"), "{html}");
    assert!(
        listener.accept().is_err(),
        "Hearth fetched nothing from the unregistered iss"
    );
}

#[tokio::test]
async fn a_tampered_replayed_or_foreign_state_opens_no_session() {
    let s = setup(0).await;
    let ehr = registered(&s, json!({})).await;

    // Tampered: one character of the state changed.
    let mut driver = Driver::new(&s.app.origin);
    let authorize = driver.start_launch(&ehr.fhir_base, Some("launch-a")).await;
    let callback = driver.authorize(&authorize).await;
    let state = reqwest::Url::parse(&callback)
        .expect("url")
        .query_pairs()
        .find(|(k, _)| k == "state")
        .expect("state")
        .1
        .into_owned();
    let mut tampered = state.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered_url = callback.replace(&state, std::str::from_utf8(&tampered).expect("utf8"));
    let response = driver.hearth_get(&tampered_url).await;
    assert_eq!(response.status(), 400);
    assert!(!driver.hearth_cookies.contains_key("hearth_session"));

    // Another browser (no launch cookie) with the genuine state.
    let mut other = Driver::new(&s.app.origin);
    let response = other.hearth_get(&callback).await;
    assert_eq!(response.status(), 400);
    assert!(
        response
            .text()
            .await
            .expect("html")
            .contains("Sign-in started elsewhere")
    );
    // The state was used up by that attempt: the genuine browser cannot use it either.
    let response = driver.hearth_get(&callback).await;
    assert_eq!(response.status(), 400);
    assert!(!driver.hearth_cookies.contains_key("hearth_session"));

    // A fresh launch works, once; its callback replayed is refused.
    let mut driver = Driver::new(&s.app.origin);
    let authorize = driver.start_launch(&ehr.fhir_base, Some("launch-a")).await;
    let callback = driver.authorize(&authorize).await;
    assert_eq!(driver.hearth_get(&callback).await.status(), 303);
    assert!(driver.hearth_cookies.contains_key("hearth_session"));
    let mut replay = Driver::new(&s.app.origin);
    replay.hearth_cookies = driver.hearth_cookies.clone();
    replay
        .hearth_cookies
        .insert("hearth_launch".into(), "x".into());
    assert_eq!(replay.hearth_get(&callback).await.status(), 400);
}

#[tokio::test]
async fn a_code_exchanged_with_another_launchs_pkce_verifier_is_refused() {
    let s = setup(0).await;
    let ehr = registered(&s, json!({})).await;
    let mut victim = Driver::new(&s.app.origin);
    let victim_authorize = victim.start_launch(&ehr.fhir_base, Some("launch-a")).await;
    let victim_callback = victim.authorize(&victim_authorize).await;
    let mut attacker = Driver::new(&s.app.origin);
    let attacker_authorize = attacker
        .start_launch(&ehr.fhir_base, Some("launch-b"))
        .await;
    let attacker_callback = attacker.authorize(&attacker_authorize).await;
    // The attacker's code injected into the victim's callback (the victim's state and cookie):
    // Hearth sends the victim's verifier, which does not match the attacker's challenge.
    let code = |url: &str| {
        reqwest::Url::parse(url)
            .expect("url")
            .query_pairs()
            .find(|(k, _)| k == "code")
            .expect("code")
            .1
            .into_owned()
    };
    let injected = victim_callback.replace(&code(&victim_callback), &code(&attacker_callback));
    let response = victim.hearth_get(&injected).await;
    assert_eq!(response.status(), 502);
    assert!(
        response
            .text()
            .await
            .expect("html")
            .contains("refused the sign-in")
    );
    assert!(!victim.hearth_cookies.contains_key("hearth_session"));
    let log = ehr.log().await;
    assert!(
        log["token"]
            .as_array()
            .expect("token log")
            .iter()
            .any(|t| t["error"] == "invalid_grant"),
        "{log}"
    );
}

#[tokio::test]
async fn id_tokens_for_another_audience_or_signed_by_another_key_are_refused() {
    for fault in [
        json!({"id_token_aud": "someone-else"}),
        json!({"id_token_foreign_key": true}),
    ] {
        let s = setup(0).await;
        let ehr = registered(&s, fault.clone()).await;
        let mut driver = Driver::new(&s.app.origin);
        let response = driver.launch(&ehr.fhir_base, "launch-a").await;
        assert_eq!(response.status(), 502, "{fault}");
        assert!(
            response
                .text()
                .await
                .expect("html")
                .contains("could not be verified"),
            "{fault}"
        );
        assert!(
            !driver.hearth_cookies.contains_key("hearth_session"),
            "{fault}"
        );
        // Nothing was read from the EHR's FHIR API, nothing stored.
        let log = ehr.log().await;
        assert_eq!(log["fhir"].as_array().map_or(0, Vec::len), 0, "{fault}");
        let refusals = audit_events(&s.app, "app-launch").await;
        assert_eq!(refusals.len(), 1, "{fault}");
        assert!(refusals[0].4, "high severity: {fault}");
        assert!(
            refusals[0]
                .3
                .as_deref()
                .unwrap_or_default()
                .contains("ID token"),
            "{fault}"
        );
    }
}

#[tokio::test]
async fn a_session_for_one_patient_shows_no_other_patient() {
    let s = setup(1).await;
    let ehr = registered(&s, json!({})).await;
    // The other patient's lab is in the app tenant too (say, from an earlier launch).
    let mut other = Driver::new(&s.app.origin);
    assert_eq!(other.launch(&ehr.fhir_base, "launch-b").await.status(), 303);
    let mut driver = Driver::new(&s.app.origin);
    assert_eq!(
        driver.launch(&ehr.fhir_base, "launch-a").await.status(),
        303
    );
    let page = driver
        .hearth_get(&format!("/app/patient/{}", s.chart.other_patient))
        .await;
    assert_eq!(page.status(), 403);
    let source = driver
        .hearth_get(&format!(
            "/app/patient/{}/source/Observation/{}",
            s.chart.patient, s.chart.other_lab
        ))
        .await;
    assert_eq!(source.status(), 403);
    let text = source.text().await.expect("html");
    assert!(
        !text.contains("Glucose") && !text.contains("Otherperson"),
        "{text}"
    );
    // The own patient's pages work.
    assert_eq!(
        driver
            .hearth_get(&format!("/app/patient/{}", s.chart.patient))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn an_idle_session_is_ended_by_the_server_and_logout_ends_it_at_once() {
    let s = setup(0).await;
    let (ehr, mut driver) = launched(&s, json!({})).await;
    let cookies = driver.hearth_cookies.clone();
    let summary = format!("/app/patient/{}", s.chart.patient);
    assert_eq!(driver.hearth_get(&summary).await.status(), 200);
    // Nobody comes back: the sweeper (as `hearth serve` runs it) ends the session on time.
    let sweeper = tokio::spawn(hearth::app::session::run_session_sweeper(
        s.app.store.clone(),
        std::time::Duration::from_secs(1),
    ));
    tokio::time::sleep(std::time::Duration::from_secs(APP_IDLE_SECS + 2)).await;
    sweeper.abort();
    let logouts = audit_events(&s.app, "app-logout").await;
    assert_eq!(logouts.len(), 1, "{logouts:?}");
    assert!(
        logouts[0]
            .3
            .as_deref()
            .unwrap_or_default()
            .contains("inactive")
    );
    let response = driver.hearth_get(&summary).await;
    assert_eq!(response.status(), 401);
    assert!(
        response
            .text()
            .await
            .expect("html")
            .contains("session has ended")
    );
    // The launch's care relationship ended with it.
    let mut tx = s.app.store.begin(&s.app.tenant).await.expect("tx");
    let (open,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM care_relationships WHERE tenant_id = $1 AND kind = 'ehr-launch' AND (ended_at IS NULL OR ended_at > now())",
    )
    .bind(s.app.tenant.as_str())
    .fetch_one(tx.conn())
    .await
    .expect("count");
    tx.commit().await.expect("commit");
    assert_eq!(open, 0);
    // The same cookie stays dead.
    let mut replay = Driver::new(&s.app.origin);
    replay.hearth_cookies = cookies;
    assert_eq!(replay.hearth_get(&summary).await.status(), 401);

    // Logout: needs the page's CSRF token; then the session is over.
    let mut driver = Driver::new(&s.app.origin);
    assert_eq!(
        driver.launch(&ehr.fhir_base, "launch-a").await.status(),
        303
    );
    let html = driver
        .hearth_get(&summary)
        .await
        .text()
        .await
        .expect("html");
    let csrf = csrf_of(&html);
    assert_eq!(
        driver
            .hearth_post("/app/logout", &[("csrf", "wrong")])
            .await
            .status(),
        400
    );
    let cookies = driver.hearth_cookies.clone();
    let response = driver.hearth_post("/app/logout", &[("csrf", &csrf)]).await;
    assert_eq!(response.status(), 303);
    let mut after = Driver::new(&s.app.origin);
    after.hearth_cookies = cookies;
    assert_eq!(after.hearth_get(&summary).await.status(), 401);
}

#[tokio::test]
async fn a_confidential_registration_authenticates_with_hearths_published_key() {
    let s = setup(0).await;
    let ehr = ehr_for(&s.app, &s.ehr_tenant, &s.chart, json!({}));
    register(&s.app, &ehr, "hearth-confidential", "private-key-jwt", &[]).await;
    let mut driver = Driver::new(&s.app.origin);
    let response = driver.launch(&ehr.fhir_base, "launch-a").await;
    assert_eq!(
        response.status(),
        303,
        "{}",
        response.text().await.unwrap_or_default()
    );
    let log = ehr.log().await;
    let token = &log["token"][0];
    assert_eq!(token["client_auth_method"], "private_key_jwt");
    assert_eq!(token["client_assertion_header"]["alg"], "ES384");
    let jwks: Value = reqwest::get(format!("{}/app/{}/jwks", s.app.origin, s.app.tenant))
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    assert_eq!(
        jwks["keys"][0]["kid"],
        token["client_assertion_header"]["kid"]
    );
    assert!(jwks["keys"][0].get("d").is_none(), "public key only");
}

#[tokio::test]
async fn a_resync_refreshes_the_access_token_and_keeps_the_refresh_token_when_none_comes_back() {
    let s = setup(0).await;
    // Access tokens of this EHR live 2 seconds; the session outlives them.
    let ehr = ehr_for_short_tokens(&s);
    register(&s.app, &ehr, "hearth-public", "public", &[]).await;
    let mut driver = Driver::new(&s.app.origin);
    assert_eq!(
        driver.launch(&ehr.fhir_base, "launch-a").await.status(),
        303
    );
    let html = summary_html(&mut driver, &s).await;
    let csrf = csrf_of(&html);
    for round in 0..2 {
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        let response = driver
            .hearth_post(
                &format!("/app/patient/{}/sync", s.chart.patient),
                &[("csrf", &csrf)],
            )
            .await;
        assert_eq!(
            response.status(),
            303,
            "round {round}: {}",
            response.text().await.unwrap_or_default()
        );
    }
    let log = ehr.log().await;
    let refreshes: Vec<&Value> = log["token"]
        .as_array()
        .expect("log")
        .iter()
        .filter(|t| t["grant_type"] == "refresh_token")
        .collect();
    assert_eq!(refreshes.len(), 2, "{log}");
    assert!(
        refreshes.iter().all(|r| r["status"] == 200),
        "the original refresh token kept working: {refreshes:?}"
    );
    let unauthorized = log["fhir"]
        .as_array()
        .expect("log")
        .iter()
        .filter(|r| r["status"] == 401)
        .count();
    assert_eq!(unauthorized, 0, "every sync used a fresh access token");
}

fn ehr_for_short_tokens(s: &Setup) -> common::app::Ehr {
    let callback = format!("{}/app/callback", s.app.origin);
    common::app::Ehr::start(&json!({
        "port": 0,
        "access_token_ttl": 2,
        "upstream_fhir": format!("{}/fhir/{}", s.ehr_tenant.origin, s.ehr_tenant.tenant),
        "upstream_token": s.ehr_tenant.token,
        "clients": [{"client_id": "hearth-public", "token_endpoint_auth_method": "none",
             "redirect_uris": [callback], "grant_types": ["authorization_code", "refresh_token"],
             "response_types": ["code"], "scope": "launch launch/patient openid fhirUser offline_access patient/*.rs"}],
        "accounts": {"dr-smith": {"fhirUser": format!("Practitioner/{}", s.chart.practitioner), "name": "Dana Smith"}},
        "launches": {"launch-a": {"user": "dr-smith", "patient": s.chart.patient}},
        "faults": {"refresh_without_refresh_token": true}
    }))
}

/// A second server named `localhost`: another site than the EHR's `127.0.0.1`, so the app
/// in the EHR's iframe is a third-party context.
fn other_site_server() -> &'static TestServer {
    static SERVER: std::sync::OnceLock<TestServer> = std::sync::OnceLock::new();
    SERVER.get_or_init(|| {
        start_server(|config| {
            config.server.public_base_url = config
                .server
                .public_base_url
                .replace("127.0.0.1", "localhost");
        })
    })
}

#[tokio::test]
async fn the_app_works_inside_the_ehrs_iframe_on_another_site_and_only_there() {
    let app = ctx_on(other_site_server(), unique_tenant()).await;
    let ehr_tenant = ctx().await;
    let chart = seed_chart(&ehr_tenant, 1).await;
    let ehr = ehr_for(&app, &ehr_tenant, &chart, json!({}));
    register(
        &app,
        &ehr,
        "hearth-public",
        "public",
        std::slice::from_ref(&ehr.issuer),
    )
    .await;
    let chart_url = format!(
        "{}/chart?launch=launch-a&app={}",
        ehr.issuer,
        urlencode(&format!("{}/app/launch", app.origin))
    );
    let result = browser(json!([
        {"name": "chart", "goto": chart_url},
        {"name": "in-frame", "frame": "iframe#app"},
        {"name": "summary", "expect_text": PATIENT_FAMILY},
        {"name": "note-link", "click_text": "Progress note"},
        {"name": "source", "expect_text": "metformin 1000 mg twice daily"},
    ]));
    assert_eq!(result["ok"], true, "browser scenario failed: {result}");
    let summary = step(&result, "summary");
    assert!(
        summary["url"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&format!("{}/app/patient/", app.origin))
    );

    // The same chart, once the registration no longer names the EHR as a framer: the
    // browser refuses to show the app's pages in the frame.
    register(&app, &ehr, "hearth-public", "public", &[]).await;
    let result = browser(json!([
        {"name": "chart", "goto": chart_url},
        {"name": "wait", "wait_ms": 3000},
        {"name": "in-frame", "frame": "iframe#app"},
        {"name": "framed", "observe": true},
    ]));
    let shown: Vec<&str> = result["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["text"].as_str())
        .collect();
    assert!(
        !shown.iter().any(|t| t.contains(PATIENT_FAMILY)),
        "{result}"
    );
    let framed = result["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "chart"))
        .expect("chart");
    let requested: Vec<&str> = framed["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .filter_map(|r| r["url"].as_str())
        .collect();
    assert!(
        requested.iter().any(|u| u.contains("/app/patient/")),
        "the frame did get as far as the summary, which the browser then blocked: {requested:?}"
    );
}

#[tokio::test]
async fn a_scope_string_too_long_for_a_url_goes_to_the_ehr_as_a_post_form() {
    let s = setup(1).await;
    let ehr = ehr_for(&s.app, &s.ehr_tenant, &s.chart, json!({}));
    // Granular v2 scopes, one per category and type, as a cautious health system asks for.
    let mut scopes = String::from("launch openid fhirUser patient/*.rs");
    for i in 0..30 {
        scopes.push_str(&format!(" patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|cat-{i}"));
    }
    s.app
        .store
        .put_ehr_registration(
            &s.app.tenant,
            &hearth::store::EhrRegistrationRow {
                id: "test-ehr".into(),
                name: "Test EHR".into(),
                iss: ehr.fhir_base.clone(),
                client_id: "hearth-public".into(),
                client_auth: "public".into(),
                scopes,
                standalone_scopes: common::app::STANDALONE_SCOPES.into(),
                frame_ancestors: vec![],
            },
        )
        .await
        .expect("register");
    let mut driver = Driver::new(&s.app.origin);
    let response = driver
        .hearth_get(&format!(
            "/app/launch?iss={}&launch=launch-a",
            urlencode(&ehr.fhir_base)
        ))
        .await;
    assert_eq!(response.status(), 200, "a page with a form, not a redirect");
    let csp = response
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        csp.contains(&format!("form-action 'self' {};", ehr.issuer)),
        "{csp}"
    );
    let html = response.text().await.expect("html");
    assert!(
        html.contains(&format!("action=\"{}/auth\"", ehr.issuer)),
        "{html}"
    );
    assert!(html.contains("method=\"post\""), "{html}");

    // In a browser the form submits itself and the launch completes.
    let result = browser(json!([
        {"name": "launch", "goto": format!("{}/app/launch?iss={}&launch=launch-a", s.app.origin, urlencode(&ehr.fhir_base))},
        {"name": "summary", "expect_text": PATIENT_FAMILY},
    ]));
    assert_eq!(result["ok"], true, "browser scenario failed: {result}");
    let log = ehr.log().await;
    assert!(
        log["authorize"]
            .as_array()
            .expect("log")
            .iter()
            .any(|a| a["method"] == "POST"),
        "{log}"
    );
}

#[tokio::test]
async fn a_standalone_launch_signs_in_at_the_ehr_and_opens_the_chosen_patient() {
    let s = setup(1).await;
    let ehr = registered(&s, json!({})).await;
    let result = browser(json!([
        {"name": "start", "goto": format!("{}/app/start?iss={}", s.app.origin, urlencode(&ehr.fhir_base))},
        {"name": "login-page", "expect_text": "Sign-in"},
        {"name": "login", "fill": "input[name=login]", "value": "dr-smith"},
        {"name": "password", "fill": "input[name=password]", "value": "any"},
        {"name": "submit", "press": "Enter"},
        {"name": "summary", "expect_text": PATIENT_FAMILY},
    ]));
    assert_eq!(result["ok"], true, "browser scenario failed: {result}");
    let log = ehr.log().await;
    let authorize = &log["authorize"][0]["params"];
    assert!(
        authorize.get("launch").is_none() || authorize["launch"].is_null(),
        "{authorize}"
    );
    assert!(
        authorize["scope"]
            .as_str()
            .is_some_and(|s| s.split(' ').any(|s| s == "launch/patient"))
    );
    assert_eq!(authorize["aud"], ehr.fhir_base.as_str());
}

#[tokio::test]
async fn an_ehr_that_is_down_gets_a_clear_page() {
    let s = setup(0).await;
    let ehr = registered(&s, json!({})).await;
    let iss = ehr.fhir_base.clone();
    drop(ehr); // the EHR goes away
    let mut driver = Driver::new(&s.app.origin);
    let response = driver
        .hearth_get(&format!(
            "/app/launch?iss={}&launch=launch-a",
            urlencode(&iss)
        ))
        .await;
    assert_eq!(response.status(), 502);
    let html = response.text().await.expect("html");
    assert!(html.contains("The EHR is not reachable"), "{html}");
    assert!(
        !html.contains("error sending request") && !html.contains("Connection refused"),
        "no internals: {html}"
    );
}

/// Launch-to-summary times, printed; as a test it checks that repeated launches (a full
/// sync, then incremental ones) work. The figures of the note come from the full size:
/// `HEARTH_BENCH_LABS=200 HEARTH_BENCH_ROUNDS=15 cargo test --test smart_app -- --nocapture
/// launch_benchmark` (after `eval "$(scripts/db.sh env hearth_test)"`).
#[tokio::test]
async fn launch_benchmark() {
    let labs: usize = std::env::var("HEARTH_BENCH_LABS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let rounds: usize = std::env::var("HEARTH_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let s = setup(labs).await;
    let ehr = registered(&s, json!({})).await;
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let mut callbacks = Vec::new();
    let mut summaries = Vec::new();
    let mut first = None;
    for round in 0..rounds {
        let mut driver = Driver::new(&s.app.origin);
        let authorize = driver.start_launch(&ehr.fhir_base, Some("launch-a")).await;
        let callback = driver.authorize(&authorize).await;
        let started = std::time::Instant::now();
        assert_eq!(driver.hearth_get(&callback).await.status(), 303);
        let callback_ms = started.elapsed().as_secs_f64() * 1000.0;
        let started = std::time::Instant::now();
        assert_eq!(
            driver
                .hearth_get(&format!("/app/patient/{}", s.chart.patient))
                .await
                .status(),
            200
        );
        let summary_ms = started.elapsed().as_secs_f64() * 1000.0;
        if round == 0 {
            first = Some((callback_ms, summary_ms));
        } else {
            callbacks.push(callback_ms);
            summaries.push(summary_ms);
        }
    }
    let log = ehr.log().await;
    let fhir = log["fhir"].as_array().expect("log");
    let ehr_ms: f64 = fhir.iter().filter_map(|r| r["ms"].as_f64()).sum();
    let (first_callback, first_summary) = first.expect("first round");
    println!(
        "launch_benchmark: {} resources ({labs} labs); first launch (full sync): callback {first_callback:.0} ms, summary {first_summary:.0} ms; \
         relaunch (incremental, median of {}): callback {:.0} ms, summary {:.0} ms; EHR FHIR requests {} taking {ehr_ms:.0} ms in all (peer side)",
        labs + 12,
        rounds - 1,
        median(callbacks),
        median(summaries),
        fhir.len(),
    );
}

/// The GLP-1 request's evidence in the EHR's chart (besides `seed_chart`'s diabetes and
/// older HbA1c): a recent HbA1c, a coded metformin order with a 90-day supply, coverage
/// with its payer, and the semaglutide order itself. No BMI (the draft says not found).
async fn seed_glp1_request(ehr: &Ctx, chart: &Chart) -> String {
    let subject = json!({"reference": format!("Patient/{}", chart.patient)});
    ehr.create(&json!({
        "resourceType": "Observation", "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4", "display": "Hemoglobin A1c"}]},
        "subject": subject, "effectiveDateTime": "2026-11-05",
        "valueQuantity": {"value": 7.9, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}
    }))
    .await;
    ehr.create(&json!({
        "resourceType": "MedicationRequest", "status": "active", "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "861004", "display": "metformin hydrochloride 1000 MG Oral Tablet"}]},
        "subject": subject, "authoredOn": "2026-03-02",
        "dispenseRequest": {"expectedSupplyDuration": {"value": 90, "unit": "days", "system": "http://unitsofmeasure.org", "code": "d"}}
    }))
    .await;
    let payer = ehr
        .create(&json!({"resourceType": "Organization", "name": "Synthetic Health Plan", "active": true}))
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    ehr.create(&json!({
        "resourceType": "Coverage", "status": "active", "subscriberId": "SHP-20931",
        "beneficiary": subject, "payor": [{"reference": format!("Organization/{payer}")}]
    }))
    .await;
    let order = ehr
        .create(&json!({
            "resourceType": "MedicationRequest", "status": "draft", "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1991302", "display": "semaglutide"}]},
            "subject": subject, "authoredOn": "2026-11-20",
            "requester": {"reference": format!("Practitioner/{}", chart.practitioner)}
        }))
        .await;
    order["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn a_clinician_reviews_approves_and_submits_a_prior_authorization_in_a_browser() {
    let s = setup(3).await;
    let order = seed_glp1_request(&s.ehr_tenant, &s.chart).await;
    let payer = common::app::Payer::start();
    hearth::store::set_tenant_prior_auth_settings(
        &common::owner_pool().await,
        &s.app.tenant,
        &json!({"payerSubmitUrl": payer.base}),
    )
    .await
    .expect("payer setting");
    let ehr = registered(&s, json!({})).await;
    let launch_url = format!(
        "{}/app/launch?iss={}&launch=launch-a",
        s.app.origin,
        urlencode(&ehr.fhir_base)
    );
    let items = hearth::clinical::prior_auth::rules::by_id("glp1-type2-diabetes")
        .expect("rule set")
        .items()
        .len();
    let mut steps = vec![
        json!({"name": "launch", "goto": launch_url}),
        json!({"name": "summary", "expect_text": PATIENT_FAMILY}),
        json!({"name": "nav", "click_text": "Prior authorization"}),
        json!({"name": "orders", "expect_text": "Draft prior authorization"}),
        json!({"name": "draft", "click_text": "Draft prior authorization"}),
        json!({"name": "drafted", "expect_text": "Not found in the record"}),
        // The reviewer corrects the first answer (the diagnosis) ...
        json!({"name": "edit-value", "fill": "li.answer[data-review=pending] input[name=value]",
               "value": "http://hl7.org/fhir/sid/icd-10-cm|E11.65"}),
        json!({"name": "edit", "click": "li.answer[data-review=pending] form.edit button"}),
    ];
    // ... then takes each remaining one in turn: Accept where Hearth found an answer,
    // Reject (leave unanswered) where it did not.
    for i in 1..items {
        steps.push(json!({"name": format!("review-{i}"), "click": "li.answer[data-review=pending] form.review button"}));
    }
    steps.extend([
        json!({"name": "reviewed", "expect_text": "Approve request"}),
        json!({"name": "approve", "click_text": "Approve request"}),
        json!({"name": "approved", "expect_text": "Download the PAS request"}),
        json!({"name": "submit", "click_text": "Submit to the payer"}),
        json!({"name": "submitted", "expect_text": "Submitted to the payer: HTTP 200"}),
    ]);
    let result = browser(Value::Array(steps));
    assert_eq!(result["ok"], true, "browser scenario failed: {result}");

    // The draft showed cited evidence and an honest "not found" (no BMI on record).
    let drafted = step(&result, "drafted")["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(drafted.contains("Not found in the record"), "{drafted}");
    assert!(drafted.contains("7.9"), "the latest HbA1c: {drafted}");
    assert!(drafted.contains("Evidence:"), "{drafted}");

    // The payer received one PAS Bundle: the Claim first, the approved response with the
    // reviewer's override, every referenced resource once.
    let log = payer.log().await;
    let requests = log.as_array().expect("log");
    assert_eq!(requests.len(), 1, "{log}");
    assert_eq!(requests[0]["path"], "/fhir/Claim/$submit");
    let bundle = &requests[0]["body"];
    assert_eq!(bundle["type"], "collection");
    let entries = bundle["entry"].as_array().expect("entries");
    let claim = &entries[0]["resource"];
    assert_eq!(claim["resourceType"], "Claim");
    assert_eq!(claim["use"], "preauthorization");
    assert_eq!(
        claim["patient"]["reference"],
        format!("Patient/{}", s.chart.patient)
    );
    assert_eq!(
        claim["item"][0]["productOrService"]["coding"][0]["code"],
        "1991302"
    );
    assert!(
        claim["insurer"]["reference"]
            .as_str()
            .is_some_and(|r| r.starts_with("Organization/"))
    );
    assert!(
        claim["insurance"][0]["coverage"]["reference"]
            .as_str()
            .is_some_and(|r| r.starts_with("Coverage/"))
    );
    let full_urls: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["fullUrl"].as_str())
        .collect();
    let unique: std::collections::HashSet<&&str> = full_urls.iter().collect();
    assert_eq!(
        unique.len(),
        full_urls.len(),
        "each resource once: {full_urls:?}"
    );
    let present = |reference: &str| {
        full_urls
            .iter()
            .any(|u| u.ends_with(&format!("/{reference}")))
    };
    for info in claim["supportingInfo"].as_array().expect("supportingInfo") {
        let reference = info["valueReference"]["reference"]
            .as_str()
            .expect("reference");
        assert!(present(reference), "{reference} is included");
    }
    for reference in [
        &claim["insurer"],
        &claim["provider"],
        &claim["insurance"][0]["coverage"],
    ] {
        assert!(
            present(reference["reference"].as_str().expect("reference")),
            "{reference}"
        );
    }
    assert!(
        present(&format!("MedicationRequest/{order}")),
        "the order is included"
    );
    let qr = entries
        .iter()
        .map(|e| &e["resource"])
        .find(|r| r["resourceType"] == "QuestionnaireResponse")
        .expect("the response");
    assert_eq!(qr["status"], "completed");
    let diagnosis = qr["item"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["linkId"] == "t2d-diagnosis"))
        .expect("diagnosis item");
    assert_eq!(diagnosis["answer"][0]["valueCoding"]["code"], "E11.65");
    assert!(
        diagnosis.to_string().contains("\"override\""),
        "{diagnosis}"
    );

    // Every step is a version of the packet, and audited.
    let mut tx = s.app.store.begin(&s.app.tenant).await.expect("tx");
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT e.action FROM prior_auth_events e WHERE e.tenant_id = $1 ORDER BY e.version",
    )
    .bind(s.app.tenant.as_str())
    .fetch_all(tx.conn())
    .await
    .expect("versions");
    tx.commit().await.expect("commit");
    assert_eq!(actions.first().map(String::as_str), Some("drafted"));
    assert_eq!(actions.get(1).map(String::as_str), Some("edited"));
    assert!(
        actions.contains(&"accepted".to_owned()) && actions.contains(&"rejected-answer".to_owned()),
        "{actions:?}"
    );
    assert_eq!(&actions[actions.len() - 2..], ["approved", "submitted"]);
    for event in [
        "prior-auth-draft",
        "prior-auth-review",
        "prior-auth-decision",
        "prior-auth-submit",
    ] {
        assert!(
            !audit_events(&s.app, event).await.is_empty(),
            "{event} audited"
        );
    }
}

#[tokio::test]
async fn a_prior_authorization_is_approved_only_when_reviewed_and_exported_only_when_approved() {
    let s = setup(3).await;
    let order = seed_glp1_request(&s.ehr_tenant, &s.chart).await;
    let (_ehr, mut driver) = launched(&s, json!({})).await;
    let base = format!("/app/patient/{}/prior-auth", s.chart.patient);
    let page = driver.hearth_get(&base).await.text().await.expect("html");
    let csrf = csrf_of(&page);
    let drafted = driver
        .hearth_post(
            &format!("{base}/draft"),
            &[
                ("csrf", &csrf),
                ("order", &format!("MedicationRequest/{order}")),
            ],
        )
        .await;
    assert_eq!(drafted.status(), 303);
    let packet = location(&drafted);
    // Nothing reviewed yet: approval refused, no export.
    let refused = driver
        .hearth_post(
            &format!("{packet}/decision"),
            &[("csrf", &csrf), ("decision", "approve")],
        )
        .await;
    assert_eq!(refused.status(), 409);
    assert_eq!(
        driver
            .hearth_get(&format!("{packet}/bundle"))
            .await
            .status(),
        409
    );
    // A forged form is refused.
    let forged = driver
        .hearth_post(
            &format!("{packet}/review"),
            &[
                ("csrf", "not-the-token"),
                ("link_id", "bmi-latest"),
                ("action", "reject"),
            ],
        )
        .await;
    assert_eq!(forged.status(), 400);
    // An edit that is not of the item's type is refused with the reason.
    let bad = driver
        .hearth_post(
            &format!("{packet}/review"),
            &[
                ("csrf", &csrf),
                ("link_id", "hba1c-latest"),
                ("action", "edit"),
                ("value", "high"),
            ],
        )
        .await;
    assert_eq!(bad.status(), 400);
    assert!(
        bad.text()
            .await
            .unwrap_or_default()
            .contains("answer a number")
    );
}
