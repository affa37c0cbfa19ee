//! HL7 v2 over MLLP over TLS with client-certificate authentication, through Hearth's MLLP
//! service and a real third-party client (the PyPI `hl7` package, driven by
//! tests/peers/mllp_send.py). The PKI is made at test time: a CA, a server certificate for
//! 127.0.0.1/localhost and two client certificates it signed, `CN=synth-engine` (the feed's
//! identity) and `CN=rogue-engine` (valid, but nobody's feed).

mod common;

use std::ffi::OsString;
use std::path::PathBuf;

use std::sync::Arc;
use std::time::Duration;

use common::peer::{assert_ack, control_id, fixture, send_with};
use common::{Ctx, ctx};
use hearth::config::{Config, FeedConfig, MllpListenerConfig, MllpTlsConfig};
use hearth::hl7v2::service::{self, MllpService};
use hearth::ops::Metrics;
use mllp::MllpClient;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::Value;

const FEED_IDENTITY: &str = "synth-engine";
const ROGUE_IDENTITY: &str = "rogue-engine";

// ---------------------------------------------------------------------------------------
// The PKI, as PEM files in a temporary directory.

struct Pki {
    dir: PathBuf,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// (certificate, key) of a client.
    fn client(&self, cn: &str) -> (PathBuf, PathBuf) {
        (
            self.path(&format!("{cn}.pem")),
            self.path(&format!("{cn}.key")),
        )
    }
}

fn client_cert(issuer: &Issuer<'_, KeyPair>, cn: &str) -> (String, String) {
    let key = KeyPair::generate().expect("client key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, issuer).expect("sign client");
    (cert.pem(), key.serialize_pem())
}

/// A CA; a server leaf for 127.0.0.1/localhost; client leaves for the feed's identity and a
/// rogue one, all signed by the CA.
fn pki() -> Pki {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Hearth Test Engines CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign CA");
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().expect("server key");
    let mut server_params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("server params");
    server_params
        .distinguished_name
        .push(DnType::CommonName, "hearth-mllp-test");
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server_params
        .signed_by(&server_key, &issuer)
        .expect("sign server");

    let dir =
        std::env::temp_dir().join(format!("hearth-mllp-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("create PKI dir");
    let pki = Pki { dir };
    let write = |name: &str, text: &str| std::fs::write(pki.path(name), text).expect("write PEM");
    write("ca.pem", &ca_cert.pem());
    write(
        "server.pem",
        &format!("{}{}", server_cert.pem(), ca_cert.pem()),
    );
    write("server.key", &server_key.serialize_pem());
    for cn in [FEED_IDENTITY, ROGUE_IDENTITY] {
        let (cert, key) = client_cert(&issuer, cn);
        write(&format!("{cn}.pem"), &cert);
        write(&format!("{cn}.key"), &key);
    }
    pki
}

// ---------------------------------------------------------------------------------------
// Hearth's MLLP service on a TLS listener that requires client certificates.

struct Harness {
    ctx: Ctx,
    port: u16,
    service: Option<MllpService>,
    pki: Pki,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(s) = self.service.take() {
            s.stop();
        }
    }
}

async fn harness() -> Harness {
    let ctx = ctx().await;
    let pki = pki();
    let mut config = Config::default();
    config.database.url = Some(common::env("DATABASE_URL"));
    config.database.max_connections = 4;
    config.server.public_base_url = ctx.origin.clone();
    config.mllp.listeners.push(MllpListenerConfig {
        name: "adt-feed-tls".into(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        tenant: ctx.tenant.to_string(),
        tls: Some(MllpTlsConfig {
            cert: pki.path("server.pem"),
            key: pki.path("server.key"),
            client_ca: Some(pki.ca()),
        }),
        max_frame_bytes: 1024 * 1024,
        idle_timeout_secs: 30,
        feeds: vec![FeedConfig {
            name: "synth".into(),
            sending_application: Some("SYNTH_EHR".into()),
            sending_facility: Some("SYNTH_HOSP".into()),
            client_identity: Some(FEED_IDENTITY.into()),
            time_zone: Some("America/New_York".into()),
            ..FeedConfig::default()
        }],
    });
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let service = service::start(&config, metrics)
        .expect("start mllp")
        .expect("a listener");
    let port = service.addresses[0].1.port();
    Harness {
        ctx,
        port,
        service: Some(service),
        pki,
    }
}

/// How the driver connects.
enum Peer<'a> {
    /// Plain TCP, no TLS at all.
    Plain,
    /// TLS, verifying the server, without a client certificate.
    Anonymous,
    /// TLS with the client certificate of this CN.
    Client(&'a str),
}

/// Send files in order on one connection with the third-party client, as `peer`.
fn send(h: &Harness, peer: Peer<'_>, files: &[&str]) -> Vec<Value> {
    let mut extra: Vec<OsString> = Vec::new();
    match peer {
        Peer::Plain => {}
        Peer::Anonymous => {
            extra.extend(["--tls-ca".into(), h.pki.ca().into()]);
        }
        Peer::Client(cn) => {
            let (cert, key) = h.pki.client(cn);
            extra.extend([
                "--tls-ca".into(),
                h.pki.ca().into(),
                "--tls-cert".into(),
                cert.into(),
                "--tls-key".into(),
                key.into(),
            ]);
        }
    }
    send_with(h.port, &extra, files)
}

/// The driver reported a failure of this kind (its error text starts with `kind`) and no
/// acknowledgement.
fn assert_no_ack(result: &Value, kind: &str, what: &str) {
    assert!(
        result["error"]
            .as_str()
            .is_some_and(|e| e.starts_with(kind)),
        "{what}: the driver reports \"{kind}...\": {result}"
    );
    assert!(
        result.get("ack_code").is_none() && result.get("raw").is_none(),
        "{what}: no ACK: {result}"
    );
}

/// (status, control id) of every hl7_messages row of the tenant.
async fn stored_messages(ctx: &Ctx) -> Vec<(String, Option<String>)> {
    let mut tx = ctx.store.begin(&ctx.tenant).await.expect("tenant tx");
    let rows = sqlx::query_as(
        "SELECT status, control_id FROM hl7_messages WHERE tenant_id = $1 ORDER BY received_at",
    )
    .bind(ctx.tenant.as_str())
    .fetch_all(tx.conn())
    .await
    .expect("hl7_messages");
    tx.commit().await.expect("commit");
    rows
}

async fn patients_with_mrn(ctx: &Ctx, mrn: &str) -> Vec<Value> {
    common::search_resources(ctx, &format!("Patient?identifier={mrn}")).await
}

// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_feeds_client_certificate_gets_aa_and_the_message_is_stored() {
    let h = harness().await;
    let results = send(&h, Peer::Client(FEED_IDENTITY), &["adt_a01.hl7"]);
    assert_ack(&results[0], "adt_a01.hl7", "AA");
    assert_eq!(
        stored_messages(&h.ctx).await,
        vec![("accepted".to_owned(), Some(control_id("adt_a01.hl7")))]
    );
    let patients = patients_with_mrn(&h.ctx, "MRN10002").await;
    assert_eq!(patients.len(), 1, "{patients:?}");
    assert_eq!(patients[0]["name"][0]["family"], "Ñúñez");
}

#[tokio::test]
async fn another_valid_certificate_is_an_unknown_sender_refused_with_ar_and_kept() {
    let h = harness().await;
    let results = send(&h, Peer::Client(ROGUE_IDENTITY), &["adt_a01.hl7"]);
    assert_ack(&results[0], "adt_a01.hl7", "AR");
    assert!(
        results[0]["err"][0]
            .as_str()
            .and_then(|e| e.split('|').nth(3))
            .is_some_and(|c| c.starts_with("207")),
        "ERR-3 207 (application internal error: unknown sender): {}",
        results[0]
    );
    let failed = h
        .ctx
        .store
        .failed_messages(&h.ctx.tenant, 10)
        .await
        .expect("failed messages");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].status, "rejected");
    assert_eq!(failed[0].ack_code.as_deref(), Some("AR"));
    assert_eq!(
        failed[0].control_id.as_deref(),
        Some(control_id("adt_a01.hl7").as_str())
    );
    assert!(
        failed[0]
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("unknown sending")),
        "{failed:?}"
    );
    assert!(
        patients_with_mrn(&h.ctx, "MRN10002").await.is_empty(),
        "nothing of a refused message is mapped"
    );
    // The refusal was about who sent it: the same message from the feed's engine is
    // accepted (a rejected message does not make it a duplicate).
    let results = send(&h, Peer::Client(FEED_IDENTITY), &["adt_a01.hl7"]);
    assert_ack(&results[0], "adt_a01.hl7", "AA");
    assert_eq!(patients_with_mrn(&h.ctx, "MRN10002").await.len(), 1);
}

#[tokio::test]
async fn without_a_client_certificate_the_connection_fails_and_nothing_is_stored() {
    let h = harness().await;
    let results = send(&h, Peer::Anonymous, &["adt_a01.hl7"]);
    // TLS 1.3: the client finishes its side of the handshake and the server refuses it with a
    // certificate_required alert before any frame is read. Depending on timing the client
    // sees that alert ("tls: ...") or only the connection being closed; either way: no ACK.
    let error = results[0]["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("tls:") || error.contains("Connection lost") || error.contains("closed"),
        "no client certificate: the connection fails: {}",
        results[0]
    );
    assert!(
        results[0].get("ack_code").is_none(),
        "no ACK: {}",
        results[0]
    );
    assert_eq!(stored_messages(&h.ctx).await, vec![], "nothing stored");
    assert!(patients_with_mrn(&h.ctx, "MRN10002").await.is_empty());
}

#[tokio::test]
async fn plain_tcp_on_the_tls_port_gets_no_ack() {
    let h = harness().await;
    // The third-party client without TLS.
    let results = send(&h, Peer::Plain, &["adt_a01.hl7"]);
    // The server answers the frame's bytes with a TLS alert and closes: no MLLP reply.
    assert_no_ack(
        &results[0],
        "connection closed by peer",
        "plain TCP (hl7 package)",
    );
    // Our own client without TLS: a MLLP frame is not a TLS ClientHello.
    let payload = std::fs::read(fixture("adt_a01.hl7")).expect("fixture");
    let mut client = MllpClient::connect(("127.0.0.1", h.port), Duration::from_secs(10))
        .await
        .expect("TCP connect");
    let reply = client.send(&payload).await;
    assert!(reply.is_err(), "plain TCP got a reply frame: {reply:?}");
    assert_eq!(stored_messages(&h.ctx).await, vec![], "nothing stored");
}
