//! Profile validation on write (per-tenant off / warn / enforce) and `$validate`.

mod common;

use common::{Ctx, ctx, expect_outcome, owner_pool};
use hearth::store::{ValidationMode, set_tenant_validation};
use serde_json::{Value, json};

const US_CORE_PATIENT: &str = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient";

async fn tenant_with(mode: ValidationMode, implied: bool) -> Ctx {
    let ctx = ctx().await;
    // Before the server has seen this tenant, so its settings cache reads these.
    set_tenant_validation(&owner_pool().await, &ctx.tenant, mode, implied)
        .await
        .expect("set validation");
    ctx
}

/// Valid R4, claims US Core Patient, but has no identifier (US Core: 1..*).
fn claimed_patient_without_identifier() -> Value {
    json!({"resourceType": "Patient", "meta": {"profile": [US_CORE_PATIENT]},
           "name": [{"family": "Profiled"}], "gender": "female"})
}

fn us_core_patient() -> Value {
    json!({"resourceType": "Patient", "meta": {"profile": [US_CORE_PATIENT]},
           "identifier": [{"system": "urn:mrn", "value": "V-1"}],
           "name": [{"family": "Profiled"}], "gender": "female"})
}

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
async fn enforce_rejects_profile_errors_with_the_element() {
    let ctx = tenant_with(ValidationMode::Enforce, false).await;
    let r = ctx
        .post("Patient", &claimed_patient_without_identifier())
        .send()
        .await
        .expect("post");
    let outcome = expect_outcome(r, 422).await;
    assert_eq!(expressions(&outcome), vec!["Patient.identifier"]);
    assert_eq!(outcome["issue"][0]["code"], "required");
    assert_eq!(
        ctx.post("Patient", &us_core_patient())
            .send()
            .await
            .expect("post")
            .status(),
        201
    );
    // Updates and transactions are held to the same rules.
    let created: Value = ctx
        .post("Patient", &us_core_patient())
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    let id = created["id"].as_str().expect("id");
    let mut broken = claimed_patient_without_identifier();
    broken["id"] = json!(id);
    expect_outcome(
        ctx.put(&format!("Patient/{id}"), &broken)
            .send()
            .await
            .expect("put"),
        422,
    )
    .await;
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:6c1d3d5e-0000-4000-8000-000000000001", "resource": claimed_patient_without_identifier(),
         "request": {"method": "POST", "url": "Patient"}}]});
    let r = ctx
        .client
        .post(ctx.url(""))
        .bearer_auth(&ctx.token)
        .header("content-type", "application/fhir+json")
        .body(bundle.to_string())
        .send()
        .await
        .expect("post");
    let outcome = expect_outcome(r, 422).await;
    assert!(
        expressions(&outcome)
            .iter()
            .any(|e| e.contains("identifier")),
        "{outcome}"
    );
}

#[tokio::test]
async fn implied_profiles_apply_to_resources_that_claim_none() {
    let ctx = tenant_with(ValidationMode::Enforce, true).await;
    let mut unclaimed = claimed_patient_without_identifier();
    unclaimed.as_object_mut().expect("object").remove("meta");
    let outcome = expect_outcome(
        ctx.post("Patient", &unclaimed).send().await.expect("post"),
        422,
    )
    .await;
    assert_eq!(expressions(&outcome), vec!["Patient.identifier"]);
    let lenient = tenant_with(ValidationMode::Enforce, false).await;
    assert_eq!(
        lenient
            .post("Patient", &unclaimed)
            .send()
            .await
            .expect("post")
            .status(),
        201,
        "without implied profiles an unclaimed resource is only checked against R4"
    );
}

#[tokio::test]
async fn warn_accepts_and_reports() {
    let ctx = tenant_with(ValidationMode::Warn, false).await;
    let r = ctx
        .post("Patient", &claimed_patient_without_identifier())
        .header("prefer", "return=OperationOutcome")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 201);
    let outcome: Value = r.json().await.expect("json");
    assert!(
        outcome["issue"].as_array().is_some_and(|i| i
            .iter()
            .any(|x| x["severity"] == "warning" && x["expression"][0] == "Patient.identifier")),
        "{outcome}"
    );
    let off = tenant_with(ValidationMode::Off, true).await;
    assert_eq!(
        off.post("Patient", &claimed_patient_without_identifier())
            .send()
            .await
            .expect("post")
            .status(),
        201
    );
    // Base R4 is enforced whatever the mode.
    expect_outcome(
        off.post(
            "Patient",
            &json!({"resourceType": "Patient", "gender": "robot"}),
        )
        .send()
        .await
        .expect("post"),
        422,
    )
    .await;
}

#[tokio::test]
async fn validate_operation_type_and_instance_level() {
    let ctx = tenant_with(ValidationMode::Warn, false).await;
    let r = ctx
        .post("Patient/$validate", &claimed_patient_without_identifier())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    let outcome: Value = r.json().await.expect("json");
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    assert_eq!(expressions(&outcome), vec!["Patient.identifier"]);
    assert_eq!(outcome["issue"][0]["severity"], "error");
    // `profile` parameter, in Parameters, against a resource claiming nothing.
    let mut plain = us_core_patient();
    plain.as_object_mut().expect("object").remove("meta");
    plain.as_object_mut().expect("object").remove("identifier");
    let params = json!({"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": plain},
        {"name": "profile", "valueUri": US_CORE_PATIENT}]});
    let outcome: Value = ctx
        .post("Patient/$validate", &params)
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert_eq!(expressions(&outcome), vec!["Patient.identifier"]);
    // A good one: one informational issue.
    let ok: Value = ctx
        .post("Patient/$validate", &us_core_patient())
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert_eq!(ok["issue"][0]["severity"], "information");
    // Base structure errors come first, with their paths.
    let bad: Value = ctx
        .post(
            "Patient/$validate",
            &json!({"resourceType": "Patient", "birthDate": "soon"}),
        )
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert_eq!(expressions(&bad), vec!["Patient.birthDate"]);
    // Instance level: the stored resource, against a profile given in the query.
    let created: Value = ctx
        .post("Patient", &plain)
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    let id = created["id"].as_str().expect("id");
    let outcome: Value = ctx
        .get(&format!("Patient/{id}/$validate?profile={US_CORE_PATIENT}"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(expressions(&outcome), vec!["Patient.identifier"]);
    let unknown: Value = ctx
        .get(&format!(
            "Patient/{id}/$validate?profile=http://example.org/nope"
        ))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(
        unknown["issue"][0]["severity"], "warning",
        "an unknown profile is reported, not silently passed: {unknown}"
    );
    expect_outcome(
        ctx.get("Patient/missing/$validate")
            .send()
            .await
            .expect("get"),
        404,
    )
    .await;
    expect_outcome(
        ctx.client
            .post(ctx.url("Patient/$validate"))
            .body("{}")
            .send()
            .await
            .expect("post"),
        401,
    )
    .await;
}
