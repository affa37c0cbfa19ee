//! Care relationships (the ABAC decision's data) follow Encounter, CareTeam and
//! PractitionerRole writes in the same transaction: REST create/update/delete, transaction
//! Bundles, and HL7 v2 ADT over MLLP.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use common::{Ctx, ctx, patient};
use hearth::config::{Config, FeedConfig, MllpListenerConfig};
use hearth::hl7v2::service::{self, MllpService};
use hearth::ops::Metrics;
use hearth::store::{CareKind, CareLink, CareRelationship, SiteType};
use serde_json::{Value, json};

async fn links(ctx: &Ctx, practitioner: &str) -> Vec<CareLink> {
    ctx.store
        .care_relationships_of(&ctx.tenant, practitioner)
        .await
        .expect("care relationships")
}

async fn patient_sites(ctx: &Ctx, patient: &str) -> Vec<(SiteType, String)> {
    ctx.store
        .patient_sites_of(&ctx.tenant, patient)
        .await
        .expect("patient sites")
        .into_iter()
        .map(|l| (l.site.site_type, l.site.site_id))
        .collect()
}

fn id_of(resource: &Value) -> String {
    resource["id"].as_str().expect("id").to_owned()
}

async fn put(ctx: &Ctx, resource: &Value) {
    let path = format!(
        "{}/{}",
        resource["resourceType"].as_str().expect("type"),
        id_of(resource)
    );
    let response = ctx.put(&path, resource).send().await.expect("put");
    assert!(
        [200, 201].contains(&response.status().as_u16()),
        "PUT {path}: {}",
        response.status()
    );
}

async fn delete(ctx: &Ctx, path: &str) {
    let response = ctx.delete(path).send().await.expect("delete");
    assert!(response.status().is_success(), "DELETE {path}");
}

fn encounter(patient: &str, status: &str) -> Value {
    json!({
        "resourceType": "Encounter",
        "status": status,
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": {"reference": format!("Patient/{patient}")},
        "period": {"start": "2024-03-11T08:30:00-05:00"},
        "participant": [
            {"individual": {"reference": "Practitioner/dr-a"}},
            {"individual": {"reference": "Practitioner/dr-b"}},
            {"individual": {"reference": "PractitionerRole/role-x"}}
        ],
        "location": [{"location": {"reference": "Location/ward-4"}, "status": "active"}],
        "serviceProvider": {"reference": "Organization/hosp"}
    })
}

#[tokio::test]
async fn encounter_participants_are_linked_until_the_encounter_is_voided_or_deleted() {
    let ctx = ctx().await;
    let p = id_of(&ctx.create(&patient("Linked")).await);
    let mut enc = ctx.create(&encounter(&p, "in-progress")).await;
    let enc_id = id_of(&enc);

    for dr in ["dr-a", "dr-b"] {
        let found = links(&ctx, dr).await;
        assert_eq!(
            found,
            vec![CareLink {
                relationship: CareRelationship {
                    practitioner_id: dr.to_owned(),
                    patient_id: p.clone(),
                    kind: CareKind::Encounter,
                    started_at: Utc.with_ymd_and_hms(2024, 3, 11, 13, 30, 0).single(),
                    ended_at: None,
                },
                source_type: "Encounter".to_owned(),
                source_id: enc_id.clone(),
            }],
            "{dr}"
        );
    }
    assert!(
        links(&ctx, "role-x").await.is_empty(),
        "PractitionerRole refs are not links"
    );
    assert_eq!(
        patient_sites(&ctx, &p).await,
        vec![
            (SiteType::Location, "ward-4".to_owned()),
            (SiteType::Organization, "hosp".to_owned())
        ]
    );
    // Another tenant sees none of it.
    let other = common::ctx().await;
    assert!(links(&other, "dr-a").await.is_empty());

    // Finished: the links end at lastUpdated, the patient is no longer there; and the
    // participant list is replaced, not added to.
    enc["status"] = json!("finished");
    enc["participant"] = json!([{"individual": {"reference": "Practitioner/dr-a"}}]);
    put(&ctx, &enc).await;
    let finished = links(&ctx, "dr-a").await;
    assert_eq!(finished.len(), 1);
    assert!(finished[0].relationship.ended_at.is_some(), "{finished:?}");
    assert!(
        links(&ctx, "dr-b").await.is_empty(),
        "dr-b left the encounter"
    );
    assert!(patient_sites(&ctx, &p).await.is_empty());

    enc["status"] = json!("entered-in-error");
    put(&ctx, &enc).await;
    assert!(links(&ctx, "dr-a").await.is_empty(), "entered-in-error");

    enc["status"] = json!("in-progress");
    put(&ctx, &enc).await;
    assert_eq!(links(&ctx, "dr-a").await.len(), 1, "back in progress");
    assert_eq!(patient_sites(&ctx, &p).await.len(), 2);

    delete(&ctx, &format!("Encounter/{enc_id}")).await;
    assert!(links(&ctx, "dr-a").await.is_empty(), "deleted");
    assert!(patient_sites(&ctx, &p).await.is_empty(), "deleted");

    // Update-as-create after the delete states them again.
    put(&ctx, &enc).await;
    assert_eq!(links(&ctx, "dr-a").await.len(), 1, "recreated");
}

#[tokio::test]
async fn two_encounters_keep_their_own_rows() {
    let ctx = ctx().await;
    let p = id_of(&ctx.create(&patient("Twice")).await);
    let first = ctx.create(&encounter(&p, "in-progress")).await;
    let second = ctx.create(&encounter(&p, "planned")).await;
    assert_eq!(links(&ctx, "dr-a").await.len(), 2);
    delete(&ctx, &format!("Encounter/{}", id_of(&first))).await;
    let left = links(&ctx, "dr-a").await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].source_id, id_of(&second));
}

#[tokio::test]
async fn care_team_members_are_linked_while_the_team_is_active() {
    let ctx = ctx().await;
    let p = id_of(&ctx.create(&patient("Team")).await);
    let mut team = ctx
        .create(&json!({
            "resourceType": "CareTeam",
            "status": "active",
            "subject": {"reference": format!("Patient/{p}")},
            "period": {"start": "2024-01-01"},
            "participant": [
                {"member": {"reference": "Practitioner/dr-a"}},
                {"member": {"reference": "Practitioner/dr-c"},
                 "period": {"start": "2024-02-01", "end": "2024-02-29"}},
                {"member": {"reference": "Organization/hosp"}}
            ]
        }))
        .await;
    let team_id = id_of(&team);
    let a = links(&ctx, "dr-a").await;
    assert_eq!(a.len(), 1);
    assert_eq!(
        (
            a[0].relationship.kind,
            a[0].source_type.as_str(),
            a[0].source_id.as_str()
        ),
        (CareKind::CareTeam, "CareTeam", team_id.as_str())
    );
    assert_eq!(a[0].relationship.patient_id, p);
    assert_eq!(
        a[0].relationship.started_at,
        Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).single()
    );
    let c = links(&ctx, "dr-c").await;
    assert_eq!(c.len(), 1);
    assert_eq!(
        (c[0].relationship.started_at, c[0].relationship.ended_at),
        (
            Utc.with_ymd_and_hms(2024, 2, 1, 0, 0, 0).single(),
            Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).single()
        ),
        "a period end covers its whole day"
    );

    team["status"] = json!("inactive");
    put(&ctx, &team).await;
    assert!(links(&ctx, "dr-a").await.is_empty(), "inactive");
    assert!(links(&ctx, "dr-c").await.is_empty(), "inactive");

    team["status"] = json!("active");
    put(&ctx, &team).await;
    assert_eq!(links(&ctx, "dr-a").await.len(), 1, "active again");

    delete(&ctx, &format!("CareTeam/{team_id}")).await;
    assert!(links(&ctx, "dr-a").await.is_empty(), "deleted");
    assert!(links(&ctx, "dr-c").await.is_empty(), "deleted");
}

#[tokio::test]
async fn practitioner_role_places_the_practitioner_at_its_sites() {
    let ctx = ctx().await;
    let mut role = ctx
        .create(&json!({
            "resourceType": "PractitionerRole",
            "active": true,
            "practitioner": {"reference": "Practitioner/dr-a"},
            "organization": {"reference": "Organization/hosp"},
            "location": [{"reference": "Location/ward-4"}],
            "specialty": [{"coding": [
                {"system": "http://nucc.org/provider-taxonomy", "code": "207RC0000X"}
            ]}]
        }))
        .await;
    let role_id = id_of(&role);
    let sites = || async {
        ctx.store
            .practitioner_sites_of(&ctx.tenant, "dr-a")
            .await
            .expect("sites")
    };
    let found = sites().await;
    let summary: Vec<(SiteType, &str, &str)> = found
        .iter()
        .map(|l| {
            (
                l.site.site_type,
                l.site.site_id.as_str(),
                l.source_id.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (SiteType::Location, "ward-4", role_id.as_str()),
            (SiteType::Organization, "hosp", role_id.as_str())
        ]
    );
    assert!(found.iter().all(|l| l.site.specialties
        == ["http://nucc.org/provider-taxonomy|207RC0000X"]
        && l.site.started_at.is_none()
        && l.site.ended_at.is_none()));

    role["active"] = json!(false);
    put(&ctx, &role).await;
    assert!(sites().await.is_empty(), "inactive");

    role["active"] = json!(true);
    put(&ctx, &role).await;
    assert_eq!(sites().await.len(), 2, "active again");

    delete(&ctx, &format!("PractitionerRole/{role_id}")).await;
    assert!(sites().await.is_empty(), "deleted");
}

fn urn() -> String {
    format!("urn:uuid:{}", uuid::Uuid::new_v4())
}

async fn transaction(ctx: &Ctx, entries: Vec<Value>) -> reqwest::Response {
    let body = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
    ctx.post("", &body).send().await.expect("post bundle")
}

fn post_entry(full_url: &str, resource: Value) -> Value {
    let t = resource["resourceType"].as_str().expect("type").to_owned();
    json!({"fullUrl": full_url, "resource": resource, "request": {"method": "POST", "url": t}})
}

#[tokio::test]
async fn a_transaction_bundle_writes_the_rows_with_its_resources() {
    let ctx = ctx().await;
    let (p, e) = (urn(), urn());
    let mut enc = encounter("placeholder", "in-progress");
    enc["subject"] = json!({"reference": p});
    let response = transaction(
        &ctx,
        vec![
            post_entry(&e, enc.clone()),
            post_entry(&p, patient("Bundled")),
        ],
    )
    .await;
    let status = response.status();
    let answer: Value = response.json().await.expect("json");
    assert_eq!(status, 200, "{answer}");
    let enc_id = id_of(&answer["entry"][0]["resource"]);
    let patient_id = id_of(&answer["entry"][1]["resource"]);
    let found = links(&ctx, "dr-a").await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        found[0].relationship.patient_id, patient_id,
        "the placeholder was resolved"
    );
    assert_eq!(found[0].source_id, enc_id);

    // A transaction that fails after the Encounter was written leaves no rows behind.
    let mut invalid = patient("Broken");
    invalid["birthDate"] = json!("not-a-date");
    let mut other = encounter(&patient_id, "in-progress");
    other["participant"] = json!([{"individual": {"reference": "Practitioner/dr-z"}}]);
    let response = transaction(
        &ctx,
        vec![post_entry(&urn(), other), post_entry(&urn(), invalid)],
    )
    .await;
    assert!(response.status().is_client_error(), "{}", response.status());
    assert!(links(&ctx, "dr-z").await.is_empty(), "rolled back");
}

struct Mllp {
    ctx: Ctx,
    port: u16,
    service: Option<MllpService>,
}

impl Drop for Mllp {
    fn drop(&mut self) {
        if let Some(s) = self.service.take() {
            s.stop();
        }
    }
}

async fn mllp() -> Mllp {
    let ctx = ctx().await;
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
        feeds: vec![FeedConfig {
            name: "synth".into(),
            sending_application: Some("SYNTH_EHR".into()),
            sending_facility: Some("SYNTH_HOSP".into()),
            time_zone: Some("America/New_York".into()),
            ..FeedConfig::default()
        }],
    });
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let service = service::start(&config, metrics)
        .expect("start mllp")
        .expect("a listener");
    let port = service.addresses[0].1.port();
    Mllp {
        ctx,
        port,
        service: Some(service),
    }
}

#[tokio::test]
async fn an_hl7_admit_links_the_visit_practitioners() {
    let h = mllp().await;
    let payload = std::fs::read(common::peer::fixture("adt_a01.hl7")).expect("fixture");
    let mut client = mllp::MllpClient::connect(("127.0.0.1", h.port), Duration::from_secs(20))
        .await
        .expect("connect");
    let ack = client.send(&payload).await.expect("ACK");
    let ack = String::from_utf8_lossy(&ack);
    assert!(ack.contains("MSA|AA|"), "{ack}");
    let _ = client.close().await;

    let patients = common::search_resources(&h.ctx, "Patient?identifier=MRN10002").await;
    assert_eq!(patients.len(), 1);
    let patient_id = id_of(&patients[0]);
    let encounters =
        common::search_resources(&h.ctx, &format!("Encounter?patient={patient_id}")).await;
    assert_eq!(encounters.len(), 1);
    let enc = &encounters[0];
    let practitioners: Vec<String> = enc["participant"]
        .as_array()
        .expect("participants")
        .iter()
        .filter_map(|p| p["individual"]["reference"].as_str())
        .filter_map(|r| r.strip_prefix("Practitioner/"))
        .map(str::to_owned)
        .collect();
    assert!(practitioners.len() >= 2, "{enc}");
    for dr in &practitioners {
        let found = links(&h.ctx, dr).await;
        assert_eq!(found.len(), 1, "{dr}: {found:?}");
        assert_eq!(found[0].relationship.patient_id, patient_id);
        assert_eq!(found[0].source_id, id_of(enc));
        assert_eq!(found[0].relationship.kind, CareKind::Encounter);
        assert!(
            found[0].relationship.started_at.is_some() && found[0].relationship.ended_at.is_none()
        );
    }
    assert!(
        patient_sites(&h.ctx, &patient_id)
            .await
            .iter()
            .any(|(t, _)| *t == SiteType::Location),
        "an in-progress inpatient is at the PV1-3 location"
    );
}
