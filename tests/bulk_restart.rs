//! An export job survives its server: `hearth serve` (the real binary) is killed with
//! SIGKILL in the middle of a job, started again, and the job resumes from its saved page
//! — not from zero — and ends with every resource exactly once. This binary starts no
//! in-process server, so the only exporters are the two processes.

mod common;

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestServer, ctx_on, env, patient, test_config, unique_tenant};
use serde_json::{Value, json};

/// A `hearth serve` process, killed (SIGKILL) and reaped on drop.
struct Serving(Child);

impl Serving {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `hearth serve` on `addr`, exporting slowly (small pages, a pause between them) into
/// `dir`, with a short lease so a killed server's job is taken over quickly.
fn serve(addr: &str, origin: &str, dir: &Path) -> Serving {
    let child = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["serve", "--listen", addr])
        .env("DATABASE_URL", env("DATABASE_URL"))
        .env_remove("HEARTH_MIGRATION_DATABASE_URL")
        .env("HEARTH_PUBLIC_BASE_URL", origin)
        .env("HEARTH_BULK_DIR", dir)
        .env("HEARTH_BULK_PAGE_SIZE", "20")
        .env("HEARTH_BULK_PAUSE_MS", "150")
        .env("HEARTH_BULK_LEASE_SECS", "2")
        .env("HEARTH_AUDIT_SEAL_INTERVAL_MS", "0")
        .env("HEARTH_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start hearth serve");
    let child = Serving(child);
    let started = Instant::now();
    loop {
        let _ = origin;
        let up = std::net::TcpStream::connect(addr).is_ok();
        if up {
            return child;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "hearth serve did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn job_progress(ctx: &common::Ctx, job: &str) -> (String, i64, i32, Option<i64>) {
    let mut tx = ctx.store.begin(&ctx.tenant).await.expect("tx");
    let row = sqlx::query_as(
        "SELECT status, exported, attempts, resumed_from FROM bulk_jobs WHERE tenant_id = $1 AND id = $2::uuid",
    )
    .bind(ctx.tenant.as_str())
    .bind(job)
    .fetch_one(tx.conn())
    .await
    .expect("job row");
    tx.commit().await.expect("commit");
    row
}

#[tokio::test]
async fn a_job_interrupted_by_a_crash_resumes_where_it_was() {
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let origin = format!("http://{addr}");
    let dir = std::env::temp_dir().join(format!(
        "hearth-bulk-restart-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let mut server = serve(&addr, &origin, &dir);
    let ctx = ctx_on(
        &TestServer {
            origin: origin.clone(),
            config: test_config(&origin),
        },
        unique_tenant(),
    )
    .await;

    // One patient and 400 observations: 21 pages of 20, about 3 s of exporting.
    let me = ctx.create(&patient("Restart")).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let entries: Vec<Value> = (0..400)
        .map(|i| {
            json!({"resource": {"resourceType": "Observation", "status": "final",
                   "code": {"text": "Glucose"}, "subject": {"reference": format!("Patient/{me}")},
                   "valueQuantity": {"value": i, "unit": "mg/dL"}},
                   "request": {"method": "POST", "url": "Observation"}})
        })
        .collect();
    let response = ctx
        .post(
            "",
            &json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
        )
        .send()
        .await
        .expect("transaction");
    assert_eq!(response.status(), 200);

    let response = ctx
        .get("$export")
        .header("prefer", "respond-async")
        .send()
        .await
        .expect("kick-off");
    assert_eq!(response.status(), 202);
    let status_url = response.headers()["content-location"]
        .to_str()
        .expect("location")
        .to_owned();
    let job = status_url.rsplit('/').next().expect("job").to_owned();

    // Kill the server once a good part is written.
    let started = Instant::now();
    loop {
        let (_, exported, _, _) = job_progress(&ctx, &job).await;
        if exported >= 100 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the job did not progress"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill();
    let (status, at_kill, attempts, _) = job_progress(&ctx, &job).await;
    assert_eq!((status.as_str(), attempts), ("running", 1));
    assert!(at_kill < 401, "killed mid-job ({at_kill} exported)");

    // A new server takes the job over once its lease runs out, and finishes it.
    let mut server = serve(&addr, &origin, &dir);
    let started = Instant::now();
    // The count of exported resources never goes back (a job restarted from zero would
    // count again from 0).
    let mut lowest_after_restart = i64::MAX;
    let manifest: Value = loop {
        let (_, exported, _, _) = job_progress(&ctx, &job).await;
        lowest_after_restart = lowest_after_restart.min(exported);
        let response = ctx
            .client
            .get(&status_url)
            .bearer_auth(&ctx.token)
            .send()
            .await
            .expect("poll");
        match response.status().as_u16() {
            200 => break response.json().await.expect("manifest"),
            202 => {}
            other => panic!(
                "status {other}: {}",
                response.text().await.unwrap_or_default()
            ),
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the job was not resumed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (status, exported, attempts, resumed_from) = job_progress(&ctx, &job).await;
    assert_eq!((status.as_str(), attempts), ("completed", 2));
    let resumed_from = resumed_from.expect("resumed_from");
    assert!(
        resumed_from >= 80 && resumed_from <= at_kill,
        "resumed from the saved page ({resumed_from}), not from zero (killed at {at_kill})"
    );
    assert_eq!(exported, 401);
    assert!(
        lowest_after_restart >= resumed_from,
        "progress went back to {lowest_after_restart} after resuming from {resumed_from}"
    );

    let mut seen: Vec<String> = Vec::new();
    for file in manifest["output"].as_array().expect("output") {
        let text = ctx
            .client
            .get(file["url"].as_str().expect("url"))
            .bearer_auth(&ctx.token)
            .send()
            .await
            .expect("file")
            .text()
            .await
            .expect("text");
        for line in text.lines() {
            let r: Value = serde_json::from_str(line).expect("every line parses");
            seen.push(format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap_or(""),
                r["id"].as_str().unwrap_or("")
            ));
        }
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(seen.len(), 401, "every resource once");
    assert_eq!(unique.len(), 401, "no resource twice");
    server.kill();
    let _ = std::fs::remove_dir_all(&dir);
}
