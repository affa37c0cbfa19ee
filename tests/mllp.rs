//! HL7 v2 over MLLP with a real third-party client (the PyPI `hl7` package's MLLP client,
//! driven by tests/peers/mllp_send.py), checking every ACK's MSA-1/MSA-2 and then the FHIR
//! resources through the REST API.

mod common;

use std::sync::Arc;

use common::peer::{assert_ack, control_id, fixture, send_with};
use common::{Ctx, ctx};
use hearth::config::{Config, FeedConfig, MllpListenerConfig};
use hearth::hl7v2::service::{self, MllpService};
use hearth::ops::Metrics;
use serde_json::Value;

struct Harness {
    ctx: Ctx,
    port: u16,
    service: Option<MllpService>,
    config: Config,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(s) = self.service.take() {
            s.stop();
        }
    }
}

fn synth_feed(time_zone: Option<&str>) -> FeedConfig {
    FeedConfig {
        name: "synth".into(),
        sending_application: Some("SYNTH_EHR".into()),
        sending_facility: Some("SYNTH_HOSP".into()),
        time_zone: time_zone.map(str::to_owned),
        ..FeedConfig::default()
    }
}

fn config_for(ctx: &Ctx, feed: FeedConfig) -> Config {
    let mut config = Config::default();
    config.database.url = Some(common::env("DATABASE_URL"));
    config.database.max_connections = 4;
    config.server.public_base_url = ctx.origin.clone();
    config.mllp.listeners.push(MllpListenerConfig {
        name: "adt-feed".into(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        tenant: ctx.tenant.to_string(),
        tls: None,
        max_frame_bytes: 1024 * 1024,
        idle_timeout_secs: 30,
        feeds: vec![feed],
    });
    config
}

async fn harness_with(feed: FeedConfig) -> Harness {
    let ctx = ctx().await;
    let config = config_for(&ctx, feed);
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let service = service::start(&config, metrics)
        .expect("start mllp")
        .expect("a listener");
    let port = service.addresses[0].1.port();
    Harness {
        ctx,
        port,
        service: Some(service),
        config,
    }
}

async fn harness() -> Harness {
    harness_with(synth_feed(Some("America/New_York"))).await
}

/// Send files in order on one connection with the third-party client; one result each.
fn send(port: u16, files: &[&str]) -> Vec<Value> {
    send_with(port, &[], files)
}

async fn search(ctx: &Ctx, query: &str) -> Vec<Value> {
    common::search_resources(ctx, query).await
}

async fn patient_by_mrn(ctx: &Ctx, mrn: &str) -> Value {
    let found = search(ctx, &format!("Patient?identifier={mrn}")).await;
    assert_eq!(found.len(), 1, "one patient with MRN {mrn}: {found:?}");
    found[0].clone()
}

#[tokio::test]
async fn admit_maps_to_us_core_resources_with_provenance() {
    let h = harness().await;
    let results = send(h.port, &["adt_a01.hl7"]);
    assert_ack(&results[0], "adt_a01.hl7", "AA");
    assert_eq!(results[0]["ack_msh9"], "ACK^A01^ACK");
    let p = patient_by_mrn(&h.ctx, "MRN10002").await;
    assert_eq!(p["name"][0]["family"], "Ñúñez");
    assert_eq!(p["gender"], "male");
    assert_eq!(p["birthDate"], "1975-11-03");
    assert!(
        p["contact"].as_array().is_some_and(|c| c.len() == 2),
        "NK1 × 2 → contacts"
    );
    let id = p["id"].as_str().expect("id");
    let encounters = search(&h.ctx, &format!("Encounter?patient={id}")).await;
    assert_eq!(encounters.len(), 1);
    assert_eq!(encounters[0]["status"], "in-progress");
    assert_eq!(encounters[0]["class"]["code"], "IMP");
    assert!(
        encounters[0]["participant"]
            .as_array()
            .is_some_and(|p| !p.is_empty()),
        "PV1-7/8/17 participants"
    );
    assert_eq!(
        search(&h.ctx, &format!("Condition?patient={id}"))
            .await
            .len(),
        2,
        "DG1 × 2"
    );
    assert_eq!(
        search(&h.ctx, &format!("AllergyIntolerance?patient={id}"))
            .await
            .len(),
        2,
        "AL1 × 2"
    );
    assert_eq!(
        search(&h.ctx, &format!("Coverage?patient={id}"))
            .await
            .len(),
        1,
        "IN1"
    );
    let with_provenance: Value = h
        .ctx
        .get(&format!("Patient?_id={id}&_revinclude=Provenance:target"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let provenance = with_provenance["entry"]
        .as_array()
        .and_then(|e| {
            e.iter()
                .find(|e| e["resource"]["resourceType"] == "Provenance")
        })
        .expect("Provenance of the message");
    assert_eq!(
        provenance["resource"]["entity"][0]["what"]["identifier"]["system"],
        "urn:hearth:hl7v2-message"
    );
}

#[tokio::test]
async fn duplicates_get_the_original_ack_and_change_nothing() {
    let h = harness().await;
    let results = send(h.port, &["adt_a01.hl7"]);
    assert_ack(&results[0], "adt_a01.hl7", "AA");
    let before = patient_by_mrn(&h.ctx, "MRN10002").await;
    let again = send(h.port, &["adt_a01_dup.hl7", "adt_a01.hl7"]);
    assert_ack(&again[0], "adt_a01_dup.hl7", "AA");
    assert_eq!(
        again[0]["raw"], results[0]["raw"],
        "the original ACK, byte for byte"
    );
    assert_eq!(again[1]["raw"], results[0]["raw"]);
    let after = patient_by_mrn(&h.ctx, "MRN10002").await;
    assert_eq!(
        after["meta"]["versionId"], before["meta"]["versionId"],
        "no new version"
    );
}

#[tokio::test]
async fn production_variants_are_accepted() {
    let h = harness().await;
    let files = [
        "adt_a01_lf.hl7",
        "adt_a01_crlf.hl7",
        "adt_a01_bom.hl7",
        "adt_a01_v27.hl7",
        "adt_a01_latin1.hl7",
        "adt_a01_zseg.hl7",
        "adt_a01_notz.hl7",
        "bad_zstorm.hl7",
    ];
    for (file, result) in files.iter().zip(send(h.port, &files)) {
        assert_ack(&result, file, "AA");
    }
    let p = patient_by_mrn(&h.ctx, "MRN10002").await;
    assert_eq!(
        p["name"][0]["family"], "Ñúñez",
        "Latin-1 and UTF-8 decode to the same name"
    );
    let enhanced = send(h.port, &["adt_a01_enhanced.hl7"]);
    assert_ack(&enhanced[0], "adt_a01_enhanced.hl7", "CA");
}

#[tokio::test]
async fn sparse_updates_keep_what_they_do_not_carry() {
    let h = harness().await;
    send(h.port, &["adt_a01.hl7"]);
    let before = patient_by_mrn(&h.ctx, "MRN10002").await;
    let results = send(h.port, &["adt_a08.hl7"]);
    assert_ack(&results[0], "adt_a08.hl7", "AA");
    let after = patient_by_mrn(&h.ctx, "MRN10002").await;
    assert_eq!(
        after["birthDate"], before["birthDate"],
        "A08 without PID-7 keeps the birth date"
    );
    assert_eq!(after["gender"], before["gender"]);
    assert_ne!(
        after["address"], before["address"],
        "the new address is applied"
    );
    assert_ne!(after["telecom"], before["telecom"]);
    let cleared = send(h.port, &["adt_a08_clear.hl7"]);
    assert_ack(&cleared[0], "adt_a08_clear.hl7", "AA");
    let after_clear = patient_by_mrn(&h.ctx, "MRN10002").await;
    assert!(
        after_clear.get("telecom").is_none(),
        "PID-13 \"\" clears the phone: {after_clear}"
    );
    assert_eq!(after_clear["birthDate"], before["birthDate"]);
}

async fn status(h: &Harness) -> Value {
    let p = patient_by_mrn(&h.ctx, "MRN10002").await;
    let e = search(
        &h.ctx,
        &format!("Encounter?patient={}", p["id"].as_str().unwrap_or_default()),
    )
    .await;
    assert_eq!(e.len(), 1, "one encounter (visit V2001): {e:?}");
    e[0].clone()
}

#[tokio::test]
async fn an_update_for_an_unseen_visit_creates_it_with_unknown_status() {
    let h = harness().await;
    let results = send(h.port, &["adt_a08.hl7"]);
    assert_ack(&results[0], "adt_a08.hl7", "AA");
    let e = status(&h).await;
    assert_eq!(e["status"], "unknown", "A08 does not invent a status");
    assert_eq!(e["class"]["code"], "IMP");
    // The admit that follows sets what it carries.
    send(h.port, &["adt_a01.hl7"]);
    assert_eq!(status(&h).await["status"], "in-progress");
}

#[tokio::test]
async fn encounter_lifecycle_follows_the_events() {
    let h = harness().await;
    send(h.port, &["adt_a01.hl7"]);
    let transferred = send(h.port, &["adt_a02.hl7"]);
    assert_ack(&transferred[0], "adt_a02.hl7", "AA");
    let discharged = send(h.port, &["adt_a03.hl7"]);
    assert_ack(&discharged[0], "adt_a03.hl7", "AA");
    let e = status(&h).await;
    assert_eq!(e["status"], "finished");
    assert!(e["period"]["end"].is_string());
    send(h.port, &["adt_a13.hl7"]);
    let e = status(&h).await;
    assert_eq!(e["status"], "in-progress", "A13 reopens");
    assert!(
        e["period"].get("end").is_none(),
        "and clears the discharge time"
    );
    send(h.port, &["adt_a11.hl7"]);
    assert_eq!(status(&h).await["status"], "cancelled");
}

#[tokio::test]
async fn merge_folds_the_old_record_into_the_survivor() {
    let h = harness().await;
    for (file, r) in ["adt_a05.hl7", "adt_a04.hl7", "adt_a28.hl7"]
        .iter()
        .zip(send(h.port, &["adt_a05.hl7", "adt_a04.hl7", "adt_a28.hl7"]))
    {
        assert_ack(&r, file, "AA");
    }
    let merged_before = patient_by_mrn(&h.ctx, "MRN10003").await;
    let merged_id = merged_before["id"].as_str().expect("id").to_owned();
    assert_eq!(
        search(&h.ctx, &format!("Encounter?patient={merged_id}"))
            .await
            .len(),
        1,
        "A04 gave MRN10003 an encounter"
    );
    let results = send(h.port, &["adt_a40.hl7"]);
    assert_ack(&results[0], "adt_a40.hl7", "AA");
    let merged: Value = h
        .ctx
        .get(&format!("Patient/{merged_id}"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(merged["active"], false);
    assert_eq!(merged["link"][0]["type"], "replaced-by");
    let survivor_ref = merged["link"][0]["other"]["reference"]
        .as_str()
        .expect("reference")
        .to_owned();
    let survivor_id = survivor_ref.trim_start_matches("Patient/");
    let survivor: Value = h
        .ctx
        .get(&survivor_ref)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert!(
        survivor["link"]
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x["type"] == "replaces"))
    );
    assert!(
        survivor["identifier"].as_array().is_some_and(|ids| ids
            .iter()
            .any(|i| i["value"] == "MRN10003" && i["use"] == "old")),
        "the survivor keeps the merged MRN"
    );
    assert_eq!(
        search(&h.ctx, &format!("Encounter?patient={merged_id}"))
            .await
            .len(),
        0,
        "references re-pointed"
    );
    assert!(
        !search(&h.ctx, &format!("Encounter?patient={survivor_id}"))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn lab_results_map_by_value_type() {
    let h = harness().await;
    let results = send(h.port, &["oru_r01.hl7", "oru_r01_text.hl7"]);
    assert_ack(&results[0], "oru_r01.hl7", "AA");
    assert_ack(&results[1], "oru_r01_text.hl7", "AA");
    assert_eq!(results[0]["ack_msh9"], "ACK^R01^ACK");
    let reports = search(
        &h.ctx,
        "DiagnosticReport?code=http://loinc.org|58410-2&_count=10&patient.identifier=MRN10001",
    )
    .await;
    assert_eq!(reports.len(), 1, "{reports:?}");
    let report = &reports[0];
    assert_eq!(report["status"], "final");
    assert_eq!(
        report["presentedForm"][0]["contentType"], "application/pdf",
        "ED OBX → presentedForm"
    );
    let results_refs = report["result"].as_array().expect("results");
    assert_eq!(results_refs.len(), 8, "9 OBX, one of them ED");
    let patient = patient_by_mrn(&h.ctx, "MRN10001").await;
    let observations = search(
        &h.ctx,
        &format!(
            "Observation?patient={}&_count=50",
            patient["id"].as_str().unwrap_or_default()
        ),
    )
    .await;
    let by_code = |code: &str| {
        observations
            .iter()
            .find(|o| o["code"]["coding"][0]["code"] == code)
            .cloned()
    };
    let hgb = by_code("718-7").expect("hemoglobin");
    assert_eq!(hgb["valueQuantity"]["code"], "g/dL");
    assert_eq!(hgb["valueQuantity"]["system"], "http://unitsofmeasure.org");
    assert!(hgb["referenceRange"][0]["low"]["value"].is_number());
    assert!(
        observations
            .iter()
            .any(|o| o["interpretation"][0]["coding"][0]["code"] == "H"),
        "abnormal flag → interpretation"
    );
    assert!(
        observations
            .iter()
            .any(|o| o["valueQuantity"]["comparator"] == ">"),
        "SN >^200"
    );
    assert!(
        observations
            .iter()
            .any(|o| o["valueRange"]["low"]["value"].is_number()),
        "SN range"
    );
    assert!(
        observations
            .iter()
            .any(|o| o["valueRatio"]["denominator"]["value"].is_number()),
        "SN ratio"
    );
    assert!(
        observations
            .iter()
            .any(|o| o["valueCodeableConcept"]["coding"][0]["system"] == "http://snomed.info/sct"),
        "CWE"
    );
    assert!(
        observations
            .iter()
            .any(|o| o["note"][0]["text"].is_string()),
        "NTE → note"
    );
    let expected =
        std::fs::read_to_string(fixture("oru_r01_text.expected.txt")).expect("expected text");
    assert!(
        observations
            .iter()
            .chain(
                search(&h.ctx, "Observation?patient.identifier=MRN10002")
                    .await
                    .iter()
            )
            .any(|o| o["valueString"].as_str() == Some(expected.trim_end_matches('\n'))),
        "FT escapes decoded"
    );
}

#[tokio::test]
async fn bad_messages_get_the_right_ack_and_are_kept() {
    let h = harness().await;
    let files = [
        "bad_no_msh10.hl7",
        "bad_no_msh9.hl7",
        "bad_unsupported_type.hl7",
        "bad_date.hl7",
        "bad_unknown_sender.hl7",
    ];
    let results = send(h.port, &files);
    let code_of = |r: &Value| {
        r["err"][0]
            .as_str()
            .and_then(|e| e.split('|').nth(3))
            .and_then(|c| c.split('^').next())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(results[0]["ack_code"], "AR");
    assert_eq!(code_of(&results[0]), "101");
    assert_eq!(results[1]["ack_code"], "AR");
    assert_eq!(code_of(&results[1]), "101");
    assert_ack(&results[2], "bad_unsupported_type.hl7", "AR");
    assert_eq!(code_of(&results[2]), "200");
    assert_ack(&results[3], "bad_date.hl7", "AE");
    assert_eq!(code_of(&results[3]), "102");
    // MSH, EVN, PID: PID is the third segment.
    assert!(
        results[3]["err"][0]
            .as_str()
            .is_some_and(|e| e.starts_with("ERR||PID^3^7")),
        "ERR-2 locates PID-7: {}",
        results[3]
    );
    assert_ack(&results[4], "bad_unknown_sender.hl7", "AR");
    let noise = send(h.port, &["bad_not_hl7.bin"]);
    assert!(
        noise[0].get("error").is_some(),
        "non-HL7 noise closes the connection: {}",
        noise[0]
    );
    // Everything refused is kept, with its reason.
    let failed = h
        .ctx
        .store
        .failed_messages(&h.ctx.tenant, 100)
        .await
        .expect("failed");
    assert_eq!(failed.len(), 6, "{failed:?}");
    assert!(
        failed
            .iter()
            .all(|m| m.reason.as_deref().is_some_and(|r| !r.is_empty()))
    );
    assert!(failed.iter().any(|m| m.status == "error"
        && m.control_id.as_deref() == Some(control_id("bad_date.hl7").as_str())));
}

#[tokio::test]
async fn a_failed_message_is_replayed_after_the_feed_is_fixed() {
    // The feed has no time zone: timestamps without an offset cannot be placed in time.
    let h = harness_with(synth_feed(None)).await;
    let results = send(h.port, &["adt_a01_notz.hl7"]);
    assert_ack(&results[0], "adt_a01_notz.hl7", "AE");
    let failed = h
        .ctx
        .store
        .failed_messages(&h.ctx.tenant, 10)
        .await
        .expect("failed");
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0]
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("time zone")),
        "{failed:?}"
    );
    assert!(
        search(&h.ctx, "Patient?identifier=MRN10002")
            .await
            .is_empty(),
        "nothing of a failed message is stored"
    );
    // Fix the feed, replay.
    let mut config = h.config.clone();
    config.mllp.listeners[0].feeds = vec![synth_feed(Some("America/Chicago"))];
    let ingestor = hearth::hl7v2::ingest::Ingestor {
        store: h.ctx.store.clone(),
        local_base: format!("{}/", config.fhir_base(&h.ctx.tenant)),
        listener: hearth::hl7v2::feed::ListenerSettings::from_config(&config.mllp.listeners[0])
            .expect("settings"),
    };
    let replayed = ingestor.replay(&[failed[0].id]).await.expect("replay");
    assert_eq!(replayed[0].1.ack_code.map(|c| c.code()), Some("AA"));
    assert!(
        h.ctx
            .store
            .failed_messages(&h.ctx.tenant, 10)
            .await
            .expect("failed")
            .is_empty()
    );
    let p = patient_by_mrn(&h.ctx, "MRN10002").await;
    let e = search(
        &h.ctx,
        &format!("Encounter?patient={}", p["id"].as_str().unwrap_or_default()),
    )
    .await;
    assert!(
        e[0]["period"]["start"]
            .as_str()
            .is_some_and(|s| s.ends_with("-05:00") || s.ends_with("-06:00")),
        "Chicago time: {}",
        e[0]["period"]
    );
}

/// A lab feed's results for a patient registered another way (REST here) attach to that
/// Patient: no second patient with the same MRN.
#[tokio::test]
async fn results_attach_to_the_patient_already_registered_with_the_identifier() {
    let h = harness().await;
    let registered = h
        .ctx
        .create(&serde_json::json!({"resourceType": "Patient", "name": [{"family": "Registered"}],
            "identifier": [{"system": "urn:hearth:hl7v2:assigning-authority:SYNTH_HOSP", "value": "MRN10001"}]}))
        .await;
    let id = registered["id"].as_str().expect("id").to_owned();
    let results = send(h.port, &["oru_r01.hl7"]);
    assert_ack(&results[0], "oru_r01.hl7", "AA");
    let patient = patient_by_mrn(&h.ctx, "MRN10001").await;
    assert_eq!(
        patient["id"],
        id.as_str(),
        "the same Patient, not a second one"
    );
    let observations = search(&h.ctx, &format!("Observation?patient={id}&_count=50")).await;
    assert!(
        observations.len() >= 8,
        "the results are the registered patient's: {}",
        observations.len()
    );
}
