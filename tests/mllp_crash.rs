//! Crash safety of HL7 v2 ingestion, against the real `hearth serve` binary: kill -9 it in
//! the middle of a multi-connection load, restart it, let the senders resend what was not
//! acknowledged, and prove that every acknowledged message is stored exactly once and every
//! resource it produced is there, once, as the message carried it.
//!
//! An ACK is sent only after the message and its resources are committed, so a message in
//! flight at the kill is either not stored (the resend stores it) or stored but not
//! acknowledged (the resend is a duplicate: it gets the original ACK and changes nothing).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{env, unique_tenant};
use hearth::store::Store;
use hearth::tenant::TenantId;
use mllp::MllpClient;
use serde_json::Value;
use tokio::sync::Notify;

/// Messages, one patient each.
const N: usize = 400;
/// Concurrent sender connections.
const CONNECTIONS: usize = 8;
/// Kill the server once this many messages have been acknowledged.
const KILL_AFTER_ACKS: usize = N / 3;
const APP: &str = "CRASH_EHR";
const FACILITY: &str = "CRASH_HOSP";
/// Attending doctors shared by the messages (so concurrent messages write the same
/// Practitioners).
const DOCTORS: [(&str, &str, &str); 6] = [
    ("3101", "Welby", "Marcus"),
    ("3102", "Brightwater", "Elena"),
    ("3103", "Okafor-Lind", "Samuel"),
    ("3104", "Haddad", "Noor"),
    ("3105", "Lindqvist", "Ingrid"),
    ("3106", "Mbeki", "Thabo"),
];
/// Rooms of the ward, shared the same way (Locations).
const ROOMS: usize = 20;
/// Per-exchange client timeout: a backstop only (a killed server's sockets close at once).
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(15);
const START_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// The synthetic messages.

fn control_id(i: usize) -> String {
    format!("CRASH-{i:04}")
}

fn mrn(i: usize) -> String {
    format!("MRN-CRASH-{i}")
}

fn visit(i: usize) -> String {
    format!("V-CRASH-{i}")
}

/// A pronounceable word from the three decimal digits of `n` (distinct for n < 1000).
fn word(n: usize) -> String {
    const SYLLABLES: [&str; 10] = ["ka", "lo", "mi", "nu", "pe", "ra", "si", "to", "vu", "xe"];
    let text: String = [n / 100 % 10, n / 10 % 10, n % 10]
        .iter()
        .map(|d| SYLLABLES[*d])
        .collect();
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

/// (family, given) of patient `i`.
fn name(i: usize) -> (String, String) {
    (word(i), word((i * 7 + 3) % 1000))
}

fn doctor(i: usize) -> (&'static str, &'static str, &'static str) {
    DOCTORS[i % DOCTORS.len()]
}

/// Admission time of patient `i` as (HL7 TS with offset, the FHIR dateTime it must become).
/// Even patients in winter (EST, -0500), odd ones in summer (EDT, -0400).
fn admitted(i: usize) -> (String, String) {
    let (month, offset, fhir_offset) = if i.is_multiple_of(2) {
        (1, "-0500", "-05:00")
    } else {
        (7, "-0400", "-04:00")
    };
    let day = 1 + i % 28;
    let (hour, minute) = (i % 24, (i * 13) % 60);
    (
        format!("2024{month:02}{day:02}{hour:02}{minute:02}00{offset}"),
        format!("2024-{month:02}-{day:02}T{hour:02}:{minute:02}:00{fhir_offset}"),
    )
}

/// ADT^A01 for patient `i`: MSH, EVN, PID, PV1 (location, attending doctor, visit number,
/// admit time).
fn adt_a01(i: usize) -> Vec<u8> {
    let (family, given) = name(i);
    let (admit, _) = admitted(i);
    let (npi, doc_family, doc_given) = doctor(i);
    let gender = if i.is_multiple_of(3) { "F" } else { "M" };
    let birth = format!("19{:02}{:02}{:02}", 40 + i % 60, 1 + i % 12, 1 + i % 28);
    let mut pv1 = vec![String::new(); 45];
    pv1[0] = "PV1".into();
    pv1[1] = "1".into();
    pv1[2] = "I".into();
    pv1[3] = format!("4W^{}^A^{FACILITY}", 400 + i % ROOMS);
    pv1[4] = "E".into();
    pv1[7] = format!("{npi}^{doc_family}^{doc_given}^^^Dr^^^NPI");
    pv1[10] = "MED".into();
    pv1[19] = format!("{}^^^{FACILITY}^VN", visit(i));
    pv1[44] = admit.clone();
    let segments = [
        format!(
            "MSH|^~\\&|{APP}|{FACILITY}|HEARTH|HEARTH|{admit}||ADT^A01^ADT_A01|{}|P|2.5.1",
            control_id(i)
        ),
        format!("EVN|A01|{admit}"),
        format!(
            "PID|1||{}^^^{FACILITY}^MR||{family}^{given}^^^^^L||{birth}|{gender}",
            mrn(i)
        ),
        pv1.join("|"),
    ];
    segments.join("\r").into_bytes()
}

/// MSA-1 and MSA-2 of an ACK.
fn msa(ack: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(ack);
    let segment = text
        .split(['\r', '\n'])
        .find(|s| s.starts_with("MSA|"))
        .unwrap_or_else(|| panic!("no MSA segment in the reply {text:?}"));
    let fields: Vec<&str> = segment.split('|').collect();
    let field = |n: usize| fields.get(n).copied().unwrap_or_default().to_owned();
    (field(1), field(2))
}

fn assert_aa(ack: &[u8], i: usize) {
    let (code, echoed) = msa(ack);
    assert_eq!(
        (code.as_str(), echoed.as_str()),
        ("AA", control_id(i).as_str()),
        "message {i}: AA with MSA-2 = MSH-10, got {}",
        String::from_utf8_lossy(ack)
    );
}

// ---------------------------------------------------------------------------------------
// The server process.

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .expect("local addr")
        .port()
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "hearth-mllp-crash-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `hearth serve`; killed (SIGKILL) and reaped on drop, whatever happened.
struct Server {
    child: Child,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn spawn(config: &Path, dir: &Path, generation: usize) -> Server {
        let http = free_port();
        let log = dir.join(format!("hearth-{generation}.log"));
        let out = File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_hearth"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .env("DATABASE_URL", env("DATABASE_URL"))
            .env(
                "HEARTH_MIGRATION_DATABASE_URL",
                env("HEARTH_MIGRATION_DATABASE_URL"),
            )
            .env("HEARTH_LISTEN", format!("127.0.0.1:{http}"))
            .env("HEARTH_PUBLIC_BASE_URL", format!("http://127.0.0.1:{http}"))
            .env("HEARTH_LOG", "warn")
            .env("HEARTH_WORKERS", "1")
            .env("HEARTH_DB_MAX_CONNECTIONS", "16")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start hearth");
        Server { child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Poll until the MLLP port accepts connections (the listener is bound after the
    /// database pool is up, so it is ready to store).
    async fn wait_for_mllp(&mut self, addr: SocketAddr) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "hearth exited with {status} while starting:\n{}",
                    self.log_text()
                );
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return;
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "the MLLP port {addr} did not open:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, and wait until the process is gone.
    fn kill_9(&mut self) {
        self.child.kill().expect("SIGKILL hearth");
        let status = self.child.wait().expect("reap hearth");
        assert!(!status.success(), "killed, not exited: {status}");
    }
}

fn write_config(dir: &Path, tenant: &TenantId, mllp: SocketAddr) -> PathBuf {
    let path = dir.join("hearth.toml");
    let text = format!(
        r#"[[mllp.listeners]]
name = "crash-adt"
listen = "{mllp}"
tenant = "{tenant}"
idle_timeout_secs = 120

[[mllp.listeners.feeds]]
name = "crash-ehr"
sending_application = "{APP}"
sending_facility = "{FACILITY}"
time_zone = "America/New_York"
"#
    );
    std::fs::write(&path, text).expect("write config");
    path
}

// ---------------------------------------------------------------------------------------
// The senders.

/// What the load shared between the senders and the test.
struct Load {
    addr: SocketAddr,
    acked: AtomicUsize,
    /// Set before the SIGKILL: from then on a failed exchange is the crash.
    killed: AtomicBool,
    kill_now: Notify,
    /// Connections the server closed without an ACK while it was up (it could not store a
    /// message); the sender reconnects and resends, as MLLP senders do.
    reconnects: AtomicUsize,
}

#[derive(Default)]
struct Sent {
    /// Message index → the ACK received for it.
    acks: BTreeMap<usize, Vec<u8>>,
    /// Not acknowledged when the server died, the one in flight first.
    unacked: Vec<usize>,
}

async fn connect(addr: SocketAddr) -> std::io::Result<MllpClient> {
    MllpClient::connect(addr, EXCHANGE_TIMEOUT)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// Phase 1: send one by one, each waiting for its ACK, until done or the server is killed.
async fn send_until_killed(load: Arc<Load>, indices: Vec<usize>) -> Sent {
    let mut sent = Sent::default();
    let mut client = connect(load.addr).await.expect("connect before the kill");
    for (pos, &i) in indices.iter().enumerate() {
        let message = adt_a01(i);
        let mut attempts = 0;
        loop {
            match client.send(&message).await {
                Ok(ack) => {
                    assert_aa(&ack, i);
                    sent.acks.insert(i, ack.to_vec());
                    if load.acked.fetch_add(1, Ordering::SeqCst) + 1 == KILL_AFTER_ACKS {
                        load.kill_now.notify_one();
                    }
                    break;
                }
                Err(_) if load.killed.load(Ordering::SeqCst) => {
                    sent.unacked = indices[pos..].to_vec();
                    return sent;
                }
                Err(e) => {
                    attempts += 1;
                    assert!(
                        attempts <= 3,
                        "message {i}: no ACK {attempts} times from a live server: {e}"
                    );
                    load.reconnects.fetch_add(1, Ordering::SeqCst);
                    client = match connect(load.addr).await {
                        Ok(c) => c,
                        Err(_) if load.killed.load(Ordering::SeqCst) => {
                            sent.unacked = indices[pos..].to_vec();
                            return sent;
                        }
                        Err(e) => panic!("reconnect to a live server: {e}"),
                    };
                }
            }
        }
    }
    sent
}

/// Phase 2: resend everything not acknowledged; each must now get AA.
async fn resend(load: Arc<Load>, indices: Vec<usize>) -> BTreeMap<usize, Vec<u8>> {
    let mut acks = BTreeMap::new();
    if indices.is_empty() {
        return acks;
    }
    let mut client = connect(load.addr).await.expect("connect after the restart");
    for i in indices {
        let message = adt_a01(i);
        let mut attempts = 0;
        loop {
            match client.send(&message).await {
                Ok(ack) => {
                    assert_aa(&ack, i);
                    acks.insert(i, ack.to_vec());
                    break;
                }
                Err(e) => {
                    attempts += 1;
                    assert!(
                        attempts <= 3,
                        "resend of message {i}: no ACK {attempts} times: {e}"
                    );
                    load.reconnects.fetch_add(1, Ordering::SeqCst);
                    client = connect(load.addr)
                        .await
                        .expect("reconnect after the restart");
                }
            }
        }
    }
    acks
}

// ---------------------------------------------------------------------------------------
// What is stored.

#[derive(sqlx::FromRow)]
struct MessageRow {
    control_id: Option<String>,
    status: String,
    received_at: DateTime<Utc>,
    ack: Option<Vec<u8>>,
}

#[derive(sqlx::FromRow)]
struct ResourceRow {
    resource_type: String,
    id: String,
    version_id: i64,
    deleted: bool,
    content: Option<String>,
}

/// A resource with more than one version: (type, id, versions, distinct contents apart from
/// `meta`).
type Reversioned = (String, String, i64, i64);

async fn stored(
    store: &Store,
    tenant: &TenantId,
) -> (Vec<MessageRow>, Vec<ResourceRow>, Vec<Reversioned>) {
    let mut tx = store.begin(tenant).await.expect("tenant transaction");
    let messages: Vec<MessageRow> = sqlx::query_as(
        "SELECT control_id, status, received_at, ack FROM hl7_messages WHERE tenant_id = $1",
    )
    .bind(tenant.as_str())
    .fetch_all(tx.conn())
    .await
    .expect("hl7_messages");
    let resources: Vec<ResourceRow> = sqlx::query_as(
        "SELECT r.resource_type, r.id, r.version_id, r.deleted, v.content
           FROM resources r
           JOIN resource_versions v USING (tenant_id, resource_type, id, version_id)
          WHERE r.tenant_id = $1",
    )
    .bind(tenant.as_str())
    .fetch_all(tx.conn())
    .await
    .expect("resources");
    let reversioned: Vec<Reversioned> = sqlx::query_as(
        "SELECT resource_type, id, count(*), count(DISTINCT content::jsonb - 'meta')
           FROM resource_versions
          WHERE tenant_id = $1
          GROUP BY resource_type, id
         HAVING count(*) > 1
          ORDER BY resource_type, id",
    )
    .bind(tenant.as_str())
    .fetch_all(tx.conn())
    .await
    .expect("resource_versions");
    tx.commit().await.expect("commit");
    (messages, resources, reversioned)
}

fn identifier_values(resource: &Value) -> Vec<String> {
    resource["identifier"]
        .as_array()
        .map(|ids| {
            ids.iter()
                .filter_map(|i| i["value"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_load_loses_no_acknowledged_message_and_duplicates_nothing() {
    let started = Instant::now();
    hearth::store::migrate(&common::owner_pool().await)
        .await
        .expect("migrate");
    let store = Store::new(common::app_pool().await, 1000);
    let tenant = unique_tenant();
    store
        .create_tenant(&tenant, "mllp crash test")
        .await
        .expect("create tenant");
    let dir = TempDir::new();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let config = write_config(&dir.0, &tenant, addr);

    // Phase 1: load on 8 connections, SIGKILL after a third has been acknowledged.
    let mut server = Server::spawn(&config, &dir.0, 1);
    server.wait_for_mllp(addr).await;
    let load = Arc::new(Load {
        addr,
        acked: AtomicUsize::new(0),
        killed: AtomicBool::new(false),
        kill_now: Notify::new(),
        reconnects: AtomicUsize::new(0),
    });
    let shares: Vec<Vec<usize>> = (0..CONNECTIONS)
        .map(|c| (c..N).step_by(CONNECTIONS).collect())
        .collect();
    let senders: Vec<_> = shares
        .into_iter()
        .map(|share| tokio::spawn(send_until_killed(load.clone(), share)))
        .collect();
    tokio::time::timeout(Duration::from_secs(30), load.kill_now.notified())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{} of {KILL_AFTER_ACKS} ACKs before the kill deadline:\n{}",
                load.acked.load(Ordering::SeqCst),
                server.log_text()
            )
        });
    load.killed.store(true, Ordering::SeqCst);
    server.kill_9();
    let first_log = server.log.clone();
    // Every row committed by the first process has received_at before this instant; every
    // row of the second one after it.
    let cut = Utc::now();
    let mut acked_before_kill: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
    let mut unacked: Vec<Vec<usize>> = Vec::new();
    for sender in senders {
        let sent = sender.await.expect("sender task");
        acked_before_kill.extend(sent.acks);
        unacked.push(sent.unacked);
    }
    let in_flight = unacked.iter().filter(|u| !u.is_empty()).count();
    let resent: usize = unacked.iter().map(Vec::len).sum();
    assert!(
        acked_before_kill.len() >= KILL_AFTER_ACKS,
        "{} acknowledged before the kill",
        acked_before_kill.len()
    );
    assert!(
        in_flight > 0 && acked_before_kill.len() < N,
        "the kill landed in the middle of the load"
    );
    assert_eq!(acked_before_kill.len() + resent, N, "acked + unacked = all");

    // Phase 2: restart with the same config; the senders resend what was not acknowledged.
    let mut server = Server::spawn(&config, &dir.0, 2);
    server.wait_for_mllp(addr).await;
    let resenders: Vec<_> = unacked
        .into_iter()
        .map(|u| tokio::spawn(resend(load.clone(), u)))
        .collect();
    let mut acks = acked_before_kill.clone();
    for r in resenders {
        let got = r.await.expect("resend task");
        for (i, ack) in got {
            assert!(
                acks.insert(i, ack).is_none(),
                "message {i} was acknowledged before the kill: not to be resent"
            );
        }
    }
    assert_eq!(
        acks.keys().copied().collect::<Vec<_>>(),
        (0..N).collect::<Vec<_>>(),
        "every message acknowledged once in the end"
    );

    // What is stored.
    let (messages, resources, reversioned) = stored(&store, &tenant).await;
    let by_control: HashMap<String, &MessageRow> = messages
        .iter()
        .map(|m| (m.control_id.clone().expect("control id"), m))
        .collect();
    assert_eq!(messages.len(), N, "one hl7_messages row per message");
    assert_eq!(by_control.len(), N, "no control id twice");
    assert!(
        messages.iter().all(|m| m.status == "accepted"),
        "all accepted: {:?}",
        messages
            .iter()
            .filter(|m| m.status != "accepted")
            .map(|m| (&m.control_id, &m.status))
            .collect::<Vec<_>>()
    );
    let mut duplicates = 0;
    for (i, ack) in &acks {
        let row = by_control
            .get(&control_id(*i))
            .unwrap_or_else(|| panic!("message {i} is stored"));
        assert_eq!(
            row.ack.as_deref(),
            Some(ack.as_slice()),
            "message {i}: the ACK the sender holds is the stored one"
        );
        if acked_before_kill.contains_key(i) {
            assert!(
                row.received_at < cut,
                "message {i}, acknowledged before the kill, is the row stored then"
            );
        } else if row.received_at < cut {
            // Committed by the first process but not acknowledged: the resend was answered
            // as a duplicate, with the original ACK (checked above).
            duplicates += 1;
        }
    }
    // Why the server closed connections without an ACK while it was up, if it did.
    let unstored: Vec<String> = [&first_log, &server.log]
        .iter()
        .flat_map(|log| {
            std::fs::read_to_string(log)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|l| {
                    l["fields"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("could not store"))
                })
                .map(|l| l["fields"]["error"].as_str().unwrap_or_default().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    eprintln!(
        "mllp crash: {N} messages on {CONNECTIONS} connections; {} acknowledged before the \
         kill, {resent} resent after the restart ({in_flight} in flight at the kill), \
         {duplicates} of the resends were duplicates (stored before the kill, unacknowledged); \
         {} reconnects after a close without ACK from a live server {unstored:?}; {:.1}s",
        acked_before_kill.len(),
        load.reconnects.load(Ordering::SeqCst),
        started.elapsed().as_secs_f64()
    );
    assert!(
        duplicates <= in_flight,
        "only messages in flight at the kill can be stored but unacknowledged: {duplicates} > {in_flight}"
    );

    // Every resource once, with the content of its message.
    let mut by_type: BTreeMap<&str, Vec<(&ResourceRow, Value)>> = BTreeMap::new();
    for r in &resources {
        assert!(!r.deleted, "{}/{} deleted", r.resource_type, r.id);
        let content: Value =
            serde_json::from_str(r.content.as_deref().expect("content")).expect("stored JSON");
        by_type
            .entry(r.resource_type.as_str())
            .or_default()
            .push((r, content));
    }
    let counts: BTreeMap<&str, usize> = by_type.iter().map(|(t, v)| (*t, v.len())).collect();
    assert_eq!(
        counts,
        BTreeMap::from([
            ("Encounter", N),
            ("Location", ROOMS),
            ("Patient", N),
            ("Practitioner", DOCTORS.len()),
            ("Provenance", N),
        ]),
        "one Patient, Encounter and Provenance per message; shared doctors and rooms once"
    );
    let mut patient_of: HashMap<usize, String> = HashMap::new();
    for (row, p) in &by_type["Patient"] {
        let values = identifier_values(p);
        let i: usize = values
            .iter()
            .find_map(|v| v.strip_prefix("MRN-CRASH-"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("Patient {} has an MRN-CRASH identifier: {p}", row.id));
        let (family, given) = name(i);
        assert_eq!(p["name"][0]["family"], family.as_str(), "patient {i}: {p}");
        assert_eq!(p["name"][0]["given"][0], given.as_str(), "patient {i}: {p}");
        assert!(
            patient_of.insert(i, row.id.clone()).is_none(),
            "MRN {} on two patients",
            mrn(i)
        );
    }
    assert_eq!(patient_of.len(), N, "every MRN-CRASH-i has its Patient");
    let mut encounters = BTreeSet::new();
    for (row, e) in &by_type["Encounter"] {
        let i: usize = identifier_values(e)
            .iter()
            .find_map(|v| v.strip_prefix("V-CRASH-"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("Encounter {} has its visit number: {e}", row.id));
        assert_eq!(
            e["subject"]["reference"].as_str(),
            Some(format!("Patient/{}", patient_of[&i]).as_str()),
            "encounter {i} is its patient's: {e}"
        );
        assert_eq!(e["status"], "in-progress", "encounter {i}");
        assert_eq!(
            e["period"]["start"].as_str(),
            Some(admitted(i).1.as_str()),
            "encounter {i}: PV1-44 with its offset"
        );
        assert!(encounters.insert(i), "visit {} twice", visit(i));
    }
    assert_eq!(encounters.len(), N);
    let doctors: BTreeSet<String> = by_type["Practitioner"]
        .iter()
        .flat_map(|(_, p)| identifier_values(p))
        .collect();
    assert_eq!(
        doctors,
        DOCTORS
            .iter()
            .map(|d| d.0.to_owned())
            .collect::<BTreeSet<_>>()
    );

    // One version each: a resent duplicate writes nothing, and neither does a message whose
    // shared resources (doctor, room) are already stored as it carries them.
    for resource_type in ["Patient", "Encounter", "Provenance"] {
        for (row, content) in &by_type[resource_type] {
            assert_eq!(
                (row.version_id, content["meta"]["versionId"].as_str()),
                (1, Some("1")),
                "{resource_type}/{}: one version, a resend created none",
                row.id
            );
        }
    }
    assert!(
        reversioned.is_empty(),
        "resources written again although no message changed them \
         (type, id, versions, distinct contents apart from meta): {reversioned:?}"
    );
    drop(server);
}
