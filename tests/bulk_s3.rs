//! Bulk export files in S3: a local S3 server (PyPI `moto`, started per test binary) as the
//! bucket; finished parts are uploaded with SSE-KMS under the configured key, local copies
//! removed when the job completes, and downloads stream from S3 through Hearth.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ctx_on, start_server, unique_tenant};
use serde_json::{Value, json};

const BUCKET: &str = "hearth-exports";
const KMS_KEY: &str = "alias/hearth-exports";

/// `moto_server` on a free port, stopped on drop.
struct S3Server {
    child: Child,
    url: String,
}

impl S3Server {
    fn start() -> S3Server {
        let python = std::env::var("HEARTH_PEER_PYTHON").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/.hearth/venv/bin/python").to_owned()
        });
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("port")
            .local_addr()
            .expect("addr")
            .port();
        let mut child = Command::new(python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start moto (scripts/peers.sh installs it)");
        let url = format!("http://127.0.0.1:{port}");
        let stderr = child.stderr.take().expect("stderr");
        // moto prints its address when it listens.
        let mut lines = BufReader::new(stderr).lines();
        let started = Instant::now();
        while let Some(Ok(line)) = lines.next() {
            if line.contains("Running on") {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "moto did not start"
            );
        }
        std::thread::spawn(move || for _ in lines {});
        S3Server { child, url }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn export_files_go_to_s3_encrypted_with_the_key_and_are_served_from_there() {
    let s3 = S3Server::start();
    let http = reqwest::Client::new();
    let created = http
        .put(format!("{}/{BUCKET}", s3.url))
        .send()
        .await
        .expect("bucket");
    assert!(created.status().is_success(), "create the bucket");
    let dir = common::smart::scratch().join("bulk");
    let server = start_server(|c| {
        c.bulk.dir = dir.clone();
        c.bulk.s3_bucket = Some(BUCKET.into());
        c.bulk.s3_region = Some("us-east-1".into());
        c.bulk.s3_endpoint_url = Some(s3.url.clone());
        c.bulk.s3_kms_key_id = Some(KMS_KEY.into());
        c.bulk.s3_prefix = "exports/".into();
        c.bulk.s3_stand_in_credentials = Some(("AKIDTEST".into(), "test-secret".into()));
    });
    let ctx = ctx_on(&server, unique_tenant()).await;
    let patient = ctx.create(&common::patient("Bucket")).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let entries: Vec<Value> = (0..60)
        .map(|i| json!({"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "Glucose"},
            "subject": {"reference": format!("Patient/{patient}")}, "valueQuantity": {"value": i, "unit": "mg/dL"}},
            "request": {"method": "POST", "url": "Observation"}}))
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

    let status_url = common::export_kick_off(&ctx, &ctx.token, "$export", &[]).await;
    let job = status_url.rsplit('/').next().expect("job").to_owned();
    let (manifest, _) = common::export_manifest(&ctx, &ctx.token, &status_url).await;

    // The objects are in the bucket, under the tenant and job, encrypted with the key.
    let state: Value = http
        .get(format!("{}/moto-api/data.json", s3.url))
        .send()
        .await
        .expect("moto state")
        .json()
        .await
        .expect("json");
    let keys: Vec<&Value> = state["s3"]["FakeKey"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|k| k["bucket_name"] == BUCKET)
        .collect();
    let prefix = format!("exports/{}/{job}/", ctx.tenant);
    let ours: Vec<&&Value> = keys
        .iter()
        .filter(|k| k["name"].as_str().is_some_and(|n| n.starts_with(&prefix)))
        .collect();
    assert_eq!(
        ours.len(),
        manifest["output"].as_array().expect("output").len(),
        "{keys:?}"
    );
    for k in &ours {
        assert_eq!(k["encryption"], "aws:kms", "{k}");
        assert_eq!(k["kms_key_id"], KMS_KEY, "{k}");
    }
    // No local copy is left once the job completed.
    assert!(
        !dir.join(ctx.tenant.as_str()).join(&job).exists(),
        "local copies removed"
    );

    // Downloads come from S3, whole.
    let mut lines = 0;
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
            assert_eq!(r["resourceType"], file["type"]);
            lines += 1;
        }
        assert_eq!(
            text.lines().count() as u64,
            file["count"].as_u64().expect("count")
        );
    }
    assert_eq!(lines, 61, "60 observations and the patient");
}
