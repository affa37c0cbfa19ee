//! ABAC: a practitioner sees the patients they have a care relationship with — built through
//! the REST API and through ADT messages — security labels need an extra grant, purposes
//! narrow, break-glass is explicit, and the data layer never leaks counts or pages.
//! Users' tokens come from a real OpenID Connect provider (`oidc-provider`).

mod common;

use common::smart::{Idp, hearth};
use common::{Ctx, ctx, expect_outcome};
use serde_json::{Value, json};

const HOSPITALIST: &str = "208M00000X";
const PSYCHIATRY: &str = "2084P0800X";
const DERMATOLOGY: &str = "207N00000X";
const NUCC: &str = "http://nucc.org/provider-taxonomy";

/// A tenant with practitioners who each get user tokens from the provider.
struct Clinic {
    ctx: Ctx,
    idp: Idp,
}

fn base(ctx: &Ctx) -> String {
    format!("{}/fhir/{}", ctx.origin, ctx.tenant)
}

async fn clinic(practitioners: &[&str]) -> Clinic {
    let ctx = ctx().await;
    clinic_in(ctx, practitioners, true).await
}

/// Practitioners (created when `create`) with user tokens from a provider the tenant trusts.
async fn clinic_in(ctx: Ctx, practitioners: &[&str], create: bool) -> Clinic {
    for p in practitioners.iter().filter(|_| create) {
        let r = ctx
            .put(
                &format!("Practitioner/{p}"),
                &json!({"resourceType": "Practitioner", "id": p}),
            )
            .send()
            .await
            .expect("put practitioner");
        assert!(r.status().is_success());
    }
    let clients: Vec<Value> = practitioners
        .iter()
        .map(|p| {
            json!({
                "client_id": p, "client_secret": "s", "grant_types": ["client_credentials"],
                "response_types": [], "redirect_uris": [], "token_endpoint_auth_method": "client_secret_basic",
                "scope": "user/*.rs user/*.cruds patient/*.rs hearth.break-glass",
                "hearth_claims": {"fhirUser": format!("Practitioner/{p}")},
            })
        })
        .collect();
    let idp = Idp::start(
        &json!({"port": 0, "resource": [base(&ctx)], "clients": clients, "accounts": {}}),
    );
    hearth(
        &[
            "idp",
            "add",
            "--tenant",
            ctx.tenant.as_str(),
            "--discovery-url",
            &idp.discovery_url(),
        ],
        &[("HEARTH_ALLOW_HTTP_KEY_URLS", "true")],
    );
    Clinic { ctx, idp }
}

impl Clinic {
    async fn token(&self, practitioner: &str, scope: &str) -> String {
        let t = self
            .idp
            .client_token(practitioner, "s", scope, &base(&self.ctx))
            .await;
        t["access_token"].as_str().expect("token").to_owned()
    }

    async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        self.ctx
            .client
            .get(self.ctx.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("get")
    }

    async fn ids(&self, token: &str, path: &str) -> (Vec<String>, Value) {
        let r = self.get(token, path).await;
        assert_eq!(r.status(), 200, "{path}");
        let bundle: Value = r.json().await.expect("bundle");
        let ids = bundle["entry"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|e| {
                let t = e["resource"]["resourceType"].as_str()?;
                (t != "OperationOutcome")
                    .then(|| format!("{t}/{}", e["resource"]["id"].as_str().unwrap_or_default()))
            })
            .collect();
        (ids, bundle)
    }

    async fn patient(&self, id: &str) {
        let r = self
            .ctx
            .put(
                &format!("Patient/{id}"),
                &json!({"resourceType": "Patient", "id": id,
                "identifier": [{"system": "urn:mrn", "value": format!("mrn-{id}")}]}),
            )
            .send()
            .await
            .expect("put patient");
        assert!(r.status().is_success());
    }

    async fn observation(&self, patient: &str, label: Option<&str>) -> String {
        let mut obs = json!({
            "resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
            "subject": {"reference": format!("Patient/{patient}")},
        });
        if let Some(label) = label {
            obs["meta"] = json!({"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": label}]});
        }
        self.ctx.create(&obs).await["id"]
            .as_str()
            .expect("id")
            .to_owned()
    }

    async fn encounter(
        &self,
        patient: &str,
        practitioner: Option<&str>,
        status: &str,
        end: Option<String>,
    ) -> String {
        let mut enc = json!({
            "resourceType": "Encounter", "status": status,
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
            "subject": {"reference": format!("Patient/{patient}")},
            "period": {"start": "2026-01-01T00:00:00Z"},
            "location": [{"location": {"reference": "Location/ward-4"}}],
        });
        if let Some(p) = practitioner {
            enc["participant"] =
                json!([{"individual": {"reference": format!("Practitioner/{p}")}}]);
        }
        if let Some(end) = end {
            enc["period"]["end"] = json!(end);
        }
        self.ctx.create(&enc).await["id"]
            .as_str()
            .expect("id")
            .to_owned()
    }

    async fn role(&self, practitioner: &str, specialty: &str) {
        self.ctx
            .create(&json!({
                "resourceType": "PractitionerRole", "active": true,
                "practitioner": {"reference": format!("Practitioner/{practitioner}")},
                "location": [{"reference": "Location/ward-4"}],
                "specialty": [{"coding": [{"system": NUCC, "code": specialty}]}],
            }))
            .await;
    }
}

fn hours_ago(h: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::hours(h))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[tokio::test]
async fn an_encounter_participant_sees_that_patient_only_and_counts_do_not_leak() {
    let c = clinic(&["dr-a"]).await;
    for p in ["p1", "p2"] {
        c.patient(p).await;
    }
    let mut p1_obs = Vec::new();
    for _ in 0..3 {
        p1_obs.push(c.observation("p1", None).await);
    }
    for _ in 0..4 {
        c.observation("p2", None).await;
    }
    c.encounter("p1", Some("dr-a"), "in-progress", None).await;
    let token = c.token("dr-a", "user/*.rs").await;

    assert_eq!(c.get(&token, "Patient/p1").await.status(), 200);
    let outcome = expect_outcome(c.get(&token, "Patient/p2").await, 403).await;
    assert!(outcome.to_string().contains("outside"), "{outcome}");
    // A search by identifier for a patient outside the care team finds nothing.
    let (found, _) = c.ids(&token, "Patient?identifier=urn:mrn|mrn-p2").await;
    assert!(found.is_empty(), "{found:?}");
    // Counts and pages see only the permitted patient's data.
    let (page1, bundle) = c
        .ids(
            &token,
            "Observation?category=laboratory&_count=2&_total=accurate",
        )
        .await;
    assert_eq!(bundle["total"], 3, "{bundle}");
    assert_eq!(page1.len(), 2);
    let next = bundle["link"]
        .as_array()
        .expect("links")
        .iter()
        .find(|l| l["relation"] == "next")
        .expect("next")["url"]
        .as_str()
        .expect("url")
        .to_owned();
    let r = c
        .ctx
        .client
        .get(next)
        .bearer_auth(&token)
        .send()
        .await
        .expect("next");
    let page2: Value = r.json().await.expect("json");
    let ids2: Vec<&str> = page2["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["resource"]["id"].as_str())
        .collect();
    assert_eq!(ids2.len(), 1);
    assert!(
        page2["link"]
            .as_array()
            .expect("links")
            .iter()
            .all(|l| l["relation"] != "next")
    );
    let mut all: Vec<String> = page1
        .iter()
        .map(|s| s.trim_start_matches("Observation/").to_owned())
        .collect();
    all.extend(ids2.iter().map(|s| s.to_string()));
    all.sort();
    p1_obs.sort();
    assert_eq!(all, p1_obs);
    // An explicit search for the other patient is empty.
    let (other, bundle) = c
        .ids(&token, "Observation?patient=p2&_total=accurate")
        .await;
    assert!(other.is_empty());
    assert_eq!(bundle["total"], 0);
}

#[tokio::test]
async fn relationships_end_with_the_encounter_and_its_window() {
    let c = clinic(&["dr-a"]).await;
    for p in ["recent", "old", "cancelled"] {
        c.patient(p).await;
    }
    c.encounter("recent", Some("dr-a"), "finished", Some(hours_ago(2)))
        .await;
    c.encounter("old", Some("dr-a"), "finished", Some(hours_ago(24 * 10)))
        .await;
    c.encounter("cancelled", Some("dr-a"), "cancelled", None)
        .await;
    let token = c.token("dr-a", "user/*.rs").await;
    assert_eq!(c.get(&token, "Patient/recent").await.status(), 200);
    expect_outcome(c.get(&token, "Patient/old").await, 403).await;
    expect_outcome(c.get(&token, "Patient/cancelled").await, 403).await;
}

#[tokio::test]
async fn care_team_membership_and_facility_roles_grant_access() {
    let c = clinic(&["dr-team", "dr-ward", "dr-skin"]).await;
    for p in ["teamed", "on-ward"] {
        c.patient(p).await;
    }
    let team = c
        .ctx
        .create(&json!({
            "resourceType": "CareTeam", "status": "active",
            "subject": {"reference": "Patient/teamed"},
            "participant": [{"member": {"reference": "Practitioner/dr-team"}}],
        }))
        .await;
    // On the ward with no named clinician: the ward's hospitalist may read, a dermatologist
    // with a role on the same ward may not (not an allowed facility specialty).
    c.encounter("on-ward", None, "in-progress", None).await;
    c.role("dr-ward", HOSPITALIST).await;
    c.role("dr-skin", DERMATOLOGY).await;

    let team_token = c.token("dr-team", "user/*.rs").await;
    assert_eq!(c.get(&team_token, "Patient/teamed").await.status(), 200);
    expect_outcome(c.get(&team_token, "Patient/on-ward").await, 403).await;
    let ward = c.token("dr-ward", "user/*.rs").await;
    assert_eq!(c.get(&ward, "Patient/on-ward").await.status(), 200);
    expect_outcome(c.get(&ward, "Patient/teamed").await, 403).await;
    let skin = c.token("dr-skin", "user/*.rs").await;
    expect_outcome(c.get(&skin, "Patient/on-ward").await, 403).await;

    // The care team becomes inactive: access ends.
    let mut ended = team.clone();
    ended["status"] = json!("inactive");
    let id = team["id"].as_str().expect("id");
    assert_eq!(
        c.ctx
            .put(&format!("CareTeam/{id}"), &ended)
            .send()
            .await
            .expect("put")
            .status(),
        200
    );
    expect_outcome(c.get(&team_token, "Patient/teamed").await, 403).await;
}

#[tokio::test]
async fn labelled_data_needs_a_grant_even_through_include() {
    let c = clinic(&["dr-gp", "dr-psych"]).await;
    c.patient("p1").await;
    let plain = c.observation("p1", None).await;
    let psy = c.observation("p1", Some("PSY")).await;
    c.encounter("p1", Some("dr-gp"), "in-progress", None).await;
    c.encounter("p1", Some("dr-psych"), "in-progress", None)
        .await;
    c.role("dr-psych", PSYCHIATRY).await;

    let gp = c.token("dr-gp", "user/*.rs").await;
    assert_eq!(
        c.get(&gp, &format!("Observation/{plain}")).await.status(),
        200
    );
    expect_outcome(c.get(&gp, &format!("Observation/{psy}")).await, 403).await;
    let (found, bundle) = c.ids(&gp, "Observation?patient=p1&_total=accurate").await;
    assert_eq!(found, vec![format!("Observation/{plain}")]);
    assert_eq!(bundle["total"], 1);
    let (revinc, _) = c
        .ids(&gp, "Patient?_id=p1&_revinclude=Observation:subject")
        .await;
    assert!(revinc.contains(&format!("Observation/{plain}")));
    assert!(
        !revinc.contains(&format!("Observation/{psy}")),
        "{revinc:?}"
    );

    let psych = c.token("dr-psych", "user/*.rs").await;
    assert_eq!(
        c.get(&psych, &format!("Observation/{psy}")).await.status(),
        200
    );
    let (found, _) = c.ids(&psych, "Observation?patient=p1").await;
    assert_eq!(found.len(), 2);
}

#[tokio::test]
async fn break_glass_is_explicit_time_limited_and_needs_the_grant() {
    let c = clinic(&["dr-er"]).await;
    c.patient("stranger").await;
    let plain = c.token("dr-er", "user/*.rs").await;
    expect_outcome(c.get(&plain, "Patient/stranger").await, 403).await;
    // A purpose header without the break-glass grant is refused.
    let forged = c
        .ctx
        .client
        .get(c.ctx.url("Patient/stranger"))
        .bearer_auth(&plain)
        .header("x-purpose-of-use", "ETREAT")
        .send()
        .await
        .expect("get");
    let outcome = expect_outcome(forged, 403).await;
    assert!(
        outcome.to_string().contains("hearth.break-glass"),
        "{outcome}"
    );
    let bg = |token: String| {
        c.ctx
            .client
            .post(c.ctx.url("Patient/stranger/$break-glass"))
            .bearer_auth(token)
            .header("content-type", "application/fhir+json")
            .body(json!({"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "unconscious in ED, no records"}]}).to_string())
            .send()
    };
    expect_outcome(bg(plain.clone()).await.expect("post"), 403).await;

    let glass = c.token("dr-er", "user/*.rs hearth.break-glass").await;
    let granted = bg(glass.clone()).await.expect("post");
    assert_eq!(granted.status(), 200);
    let body: Value = granted.json().await.expect("json");
    assert_eq!(body["parameter"][1]["name"], "expires");
    // Time-limited: the policy's 60 minutes.
    let expires = chrono::DateTime::parse_from_rfc3339(
        body["parameter"][1]["valueInstant"]
            .as_str()
            .expect("instant"),
    )
    .expect("rfc3339")
    .with_timezone(&chrono::Utc);
    let left = expires - chrono::Utc::now();
    assert!(
        left > chrono::Duration::minutes(58) && left <= chrono::Duration::minutes(60),
        "{left}"
    );
    assert_eq!(c.get(&glass, "Patient/stranger").await.status(), 200);
    // The grant is the practitioner's, whatever token they use next.
    assert_eq!(c.get(&plain, "Patient/stranger").await.status(), 200);
    // The alert report lists the break-glass and the refused attempts.
    let report = hearth(&["audit", "alerts", "--tenant", c.ctx.tenant.as_str()], &[]);
    let lines: Vec<&str> = report.lines().collect();
    assert!(
        lines.iter().any(|l| l.contains("break-glass")
            && l.contains("stranger")
            && l.contains("Practitioner/dr-er")
            && l.contains("outcome 0")),
        "{report}"
    );
    assert!(
        lines.iter().any(|l| l.contains("access-denied")),
        "{report}"
    );
}

#[tokio::test]
async fn writes_follow_the_same_decision() {
    let c = clinic(&["dr-a"]).await;
    for p in ["mine", "theirs"] {
        c.patient(p).await;
    }
    c.encounter("mine", Some("dr-a"), "in-progress", None).await;
    let theirs_obs = c.observation("theirs", None).await;
    let token = c.token("dr-a", "user/*.cruds").await;
    let obs = |patient: &str| {
        json!({
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": format!("Patient/{patient}")},
        })
    };
    let post = |body: Value| {
        c.ctx
            .client
            .post(c.ctx.url("Observation"))
            .bearer_auth(&token)
            .header("content-type", "application/fhir+json")
            .body(body.to_string())
            .send()
    };
    assert_eq!(post(obs("mine")).await.expect("post").status(), 201);
    let refused = post(obs("theirs")).await.expect("post");
    expect_outcome(refused, 403).await;
    let (theirs, _) = c.ids(&c.ctx.token, "Observation?patient=theirs").await;
    assert_eq!(
        theirs,
        vec![format!("Observation/{theirs_obs}")],
        "nothing was written for them"
    );
    // Nor may an existing resource of theirs be changed or moved into my patient's record.
    let mut moved = obs("mine");
    moved["id"] = json!(theirs_obs);
    let r = c
        .ctx
        .client
        .put(c.ctx.url(&format!("Observation/{theirs_obs}")))
        .bearer_auth(&token)
        .header("content-type", "application/fhir+json")
        .body(moved.to_string())
        .send()
        .await
        .expect("put");
    expect_outcome(r, 403).await;
    let d = c
        .ctx
        .client
        .delete(c.ctx.url(&format!("Observation/{theirs_obs}")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("delete");
    expect_outcome(d, 403).await;
}

#[tokio::test]
async fn payment_purpose_narrows_types_and_policy_can_hide_existence() {
    let c = clinic(&["dr-a"]).await;
    c.patient("p1").await;
    c.patient("p2").await;
    c.encounter("p1", Some("dr-a"), "in-progress", None).await;
    let token = c.token("dr-a", "user/*.rs").await;
    let with_purpose = |path: &str, purpose: &str| {
        c.ctx
            .client
            .get(c.ctx.url(path))
            .bearer_auth(&token)
            .header("x-purpose-of-use", purpose)
            .send()
    };
    assert_eq!(
        with_purpose("Observation?patient=p1", "HPAYMT")
            .await
            .expect("get")
            .status(),
        200
    );
    let r = with_purpose("AllergyIntolerance?patient=p1", "HPAYMT")
        .await
        .expect("get");
    let outcome = expect_outcome(r, 403).await;
    assert!(outcome.to_string().contains("HPAYMT"), "{outcome}");
    expect_outcome(with_purpose("Patient/p1", "NOPE").await.expect("get"), 403).await;

    // A tenant that must not reveal existence answers 404 instead of 403.
    let file = common::smart::scratch().join("policy.json");
    std::fs::write(&file, r#"{"denyAs": "not-found"}"#).expect("write");
    hearth(
        &[
            "tenant",
            "access-policy",
            c.ctx.tenant.as_str(),
            "--file",
            &file.to_string_lossy(),
        ],
        &[(
            "HEARTH_MIGRATION_DATABASE_URL",
            &common::env("HEARTH_MIGRATION_DATABASE_URL"),
        )],
    );
    // The policy is cached for up to 30 s per server; this test server is shared, so the
    // cache is cleared by waiting only in this test.
    tokio::time::sleep(std::time::Duration::from_secs(31)).await;
    expect_outcome(c.get(&token, "Patient/p2").await, 404).await;
}

#[tokio::test]
async fn an_adt_admit_grants_access_and_the_discharge_ends_it() {
    let ctx = ctx().await;
    let (service, port) = common::peer::synth_adt_listener(&ctx);
    // The third-party MLLP client sends the admit; Dr Welby (NPI 1234) attends.
    let acks = common::peer::send_with(port, &[], &["adt_a01.hl7"]);
    common::peer::assert_ack(&acks[0], "adt_a01.hl7", "AA");
    let found = common::search_resources(
        &ctx,
        "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|1234",
    )
    .await;
    let welby = found[0]["id"].as_str().expect("practitioner id").to_owned();
    let patient = common::search_resources(&ctx, "Patient?identifier=MRN10002").await;
    let patient = patient[0]["id"].as_str().expect("patient id").to_owned();
    let outsider = ctx.create(&json!({"resourceType": "Patient"})).await;
    let outsider = outsider["id"].as_str().expect("id").to_owned();

    let c = clinic_in(ctx, &[welby.as_str()], false).await;
    let token = c.token(&welby, "user/*.rs").await;
    assert_eq!(
        c.get(&token, &format!("Patient/{patient}")).await.status(),
        200
    );
    let (conditions, _) = c
        .ids(&token, "Condition?category=encounter-diagnosis")
        .await;
    assert_eq!(
        conditions.len(),
        2,
        "the admitted patient's diagnoses, without a patient parameter"
    );
    expect_outcome(c.get(&token, &format!("Patient/{outsider}")).await, 403).await;

    // The discharge (March 2024) ended the encounter long before the 72 h window.
    let acks = common::peer::send_with(port, &[], &["adt_a03.hl7"]);
    common::peer::assert_ack(&acks[0], "adt_a03.hl7", "AA");
    expect_outcome(c.get(&token, &format!("Patient/{patient}")).await, 403).await;
    let (conditions, _) = c
        .ids(&token, "Condition?category=encounter-diagnosis")
        .await;
    assert!(conditions.is_empty());
    service.stop();
}

#[tokio::test]
async fn conditional_operations_only_match_what_the_clinician_may_see() {
    let c = clinic(&["dr-a"]).await;
    for p in ["mine", "theirs"] {
        c.patient(p).await;
    }
    c.encounter("mine", Some("dr-a"), "in-progress", None).await;
    let token = c.token("dr-a", "user/*.cruds").await;
    let obs = |patient: &str, value: &str| {
        json!({
            "resourceType": "Observation", "status": "final",
            "identifier": [{"system": "urn:lab", "value": value}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
            "subject": {"reference": format!("Patient/{patient}")},
        })
    };
    // Someone else's lab result with the identifier the clinician will ask about.
    let hidden = c.ctx.create(&obs("theirs", "L-1")).await;
    let hidden = hidden["id"].as_str().expect("id").to_owned();
    let post = |body: Value, if_none_exist: &str| {
        c.ctx
            .client
            .post(c.ctx.url("Observation"))
            .bearer_auth(&token)
            .header("content-type", "application/fhir+json")
            .header("if-none-exist", if_none_exist)
            .body(body.to_string())
            .send()
    };
    // Conditional create for my patient: the hidden match is not seen, a new one is made.
    let r = post(obs("mine", "L-1"), "identifier=urn:lab|L-1&patient=mine")
        .await
        .expect("post");
    assert_eq!(r.status(), 201);
    // The same for their patient: no match visible, and the create itself is refused.
    let r = post(
        obs("theirs", "L-1"),
        "identifier=urn:lab|L-1&patient=theirs",
    )
    .await
    .expect("post");
    expect_outcome(r, 403).await;
    // Conditional delete by identifier deletes only what I may see.
    let d = c
        .ctx
        .client
        .delete(
            c.ctx
                .url("Observation?identifier=urn:lab|L-1&patient=theirs"),
        )
        .bearer_auth(&token)
        .send()
        .await
        .expect("delete");
    assert_eq!(d.status(), 204);
    assert_eq!(
        c.get(&c.ctx.token, &format!("Observation/{hidden}"))
            .await
            .status(),
        200,
        "still there"
    );
}

#[tokio::test]
async fn bundles_apply_the_same_decision_entry_by_entry() {
    let c = clinic(&["dr-a"]).await;
    for p in ["mine", "theirs"] {
        c.patient(p).await;
    }
    c.encounter("mine", Some("dr-a"), "in-progress", None).await;
    let theirs_obs = c.observation("theirs", None).await;
    let mine_obs = c.observation("mine", None).await;
    let token = c.token("dr-a", "user/*.cruds").await;
    let post = |bundle: Value| {
        c.ctx
            .client
            .post(c.ctx.url(""))
            .bearer_auth(&token)
            .header("content-type", "application/fhir+json")
            .body(bundle.to_string())
            .send()
    };
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient/mine"}},
        {"request": {"method": "GET", "url": "Patient/theirs"}},
        {"request": {"method": "GET", "url": "Observation?category=laboratory"}},
        {"request": {"method": "DELETE", "url": format!("Observation/{theirs_obs}")}},
        {"request": {"method": "GET", "url": "Observation?patient=theirs"}},
    ]});
    let r = post(batch).await.expect("batch");
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.expect("json");
    let status = |i: usize| {
        answer["entry"][i]["response"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(status(0).starts_with("200"), "{answer}");
    assert!(status(1).starts_with("403"), "{answer}");
    assert!(status(2).starts_with("200"), "{answer}");
    let found: Vec<&str> = answer["entry"][2]["resource"]["entry"]
        .as_array()
        .expect("searchset")
        .iter()
        .filter_map(|e| e["resource"]["id"].as_str())
        .collect();
    assert_eq!(found, vec![mine_obs.as_str()]);
    assert!(status(3).starts_with("403"), "{answer}");
    assert!(status(4).starts_with("200"), "{answer}");
    assert!(
        answer["entry"][4]["resource"]["entry"]
            .as_array()
            .is_none_or(|e| e.is_empty()),
        "{answer}"
    );
    assert_eq!(
        c.get(&c.ctx.token, &format!("Observation/{theirs_obs}"))
            .await
            .status(),
        200
    );

    let obs = |patient: &str| {
        json!({"resourceType": "Observation", "status": "final",
               "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
               "subject": {"reference": format!("Patient/{patient}")}})
    };
    let ok = post(
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": obs("mine"), "request": {"method": "POST", "url": "Observation"}}]}),
    )
    .await
    .expect("transaction");
    assert_eq!(ok.status(), 200);
    let refused = post(
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": obs("mine"), "request": {"method": "POST", "url": "Observation"}},
        {"resource": obs("theirs"), "request": {"method": "POST", "url": "Observation"}}]}),
    )
    .await
    .expect("transaction");
    expect_outcome(refused, 403).await;
    let (theirs, _) = c.ids(&c.ctx.token, "Observation?patient=theirs").await;
    assert_eq!(theirs.len(), 1, "the refused transaction wrote nothing");
}
