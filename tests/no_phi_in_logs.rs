//! Runs the real `hearth serve` binary at debug log level, pushes distinctive PHI through
//! create, read, update, search-like and error paths, stops it with SIGTERM, and checks that
//! none of the PHI reached its output.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{env, unique_tenant};
use hearth::auth::TokenService;
use hearth::store::Store;
use serde_json::json;

const NAME: &str = "Zebulonia";
const GIVEN: &str = "Quixwell";
const IDENTIFIER: &str = "MRN-PHI-7730419";
const BIRTH_DATE: &str = "1937-11-29";
const PHONE: &str = "555-0199-4242";

#[tokio::test]
async fn no_phi_reaches_the_log() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let origin = format!("http://127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .arg("serve")
        .env("HEARTH_LISTEN", format!("127.0.0.1:{port}"))
        .env("HEARTH_PUBLIC_BASE_URL", &origin)
        .env("HEARTH_LOG", "debug")
        .env("HEARTH_WORKERS", "1")
        .env("DATABASE_URL", env("DATABASE_URL"))
        .env(
            "HEARTH_MIGRATION_DATABASE_URL",
            env("HEARTH_MIGRATION_DATABASE_URL"),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hearth");
    // Drain both pipes while the server runs: background tasks (indexer, sweeper) log at
    // debug level too, and a full pipe would block the server.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout_reader = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    let stderr_reader = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );

    let client = reqwest::Client::new();
    let started = Instant::now();
    while client
        .get(format!("{origin}/readyz"))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "hearth did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let store = Store::new(common::app_pool().await, 1000);
    let tenant = unique_tenant();
    store
        .create_tenant(&tenant, "phi test")
        .await
        .expect("tenant");
    let base = format!("{origin}/fhir/{tenant}");
    let token = TokenService::new(store.clone())
        .mint(&tenant, &base, "phi-test", "system/*.cruds", 300)
        .await
        .expect("token");

    let patient = json!({
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.19.5", "value": IDENTIFIER}],
        "name": [{"family": NAME, "given": [GIVEN]}],
        "telecom": [{"system": "phone", "value": PHONE}],
        "birthDate": BIRTH_DATE
    });
    let created: serde_json::Value = client
        .post(format!("{base}/Patient"))
        .bearer_auth(&token)
        .header("content-type", "application/fhir+json")
        .body(patient.to_string())
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(
        client
            .get(format!("{base}/Patient/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("read")
            .status(),
        200
    );
    let mut updated = created.clone();
    updated["name"][0]["given"] = json!([GIVEN, "Second"]);
    assert_eq!(
        client
            .put(format!("{base}/Patient/{id}"))
            .bearer_auth(&token)
            .header("content-type", "application/fhir+json")
            .body(updated.to_string())
            .send()
            .await
            .expect("update")
            .status(),
        200
    );
    // Error paths that carry PHI in the body, the URL and the query string.
    let mut invalid = patient.clone();
    invalid["gender"] = json!(NAME);
    invalid["nickname"] = json!(GIVEN);
    assert_eq!(
        client
            .post(format!("{base}/Patient"))
            .bearer_auth(&token)
            .header("content-type", "application/fhir+json")
            .body(invalid.to_string())
            .send()
            .await
            .expect("invalid")
            .status(),
        400
    );
    let mut bad_date = patient.clone();
    bad_date["birthDate"] = json!(format!("{BIRTH_DATE}x"));
    assert_eq!(
        client
            .post(format!("{base}/Patient"))
            .bearer_auth(&token)
            .header("content-type", "application/fhir+json")
            .body(bad_date.to_string())
            .send()
            .await
            .expect("422")
            .status(),
        422
    );
    assert_eq!(
        client
            .get(format!(
                "{base}/Patient/{IDENTIFIER}?name={NAME}&birthdate={BIRTH_DATE}"
            ))
            .bearer_auth(&token)
            .send()
            .await
            .expect("404")
            .status(),
        404
    );
    assert_eq!(
        client
            .get(format!("{base}/Patient/{id}?family={NAME}"))
            .send()
            .await
            .expect("401")
            .status(),
        401
    );
    let mut wrong_id = created.clone();
    wrong_id["id"] = json!(IDENTIFIER);
    assert_eq!(
        client
            .put(format!("{base}/Patient/{id}"))
            .bearer_auth(&token)
            .header("content-type", "application/fhir+json")
            .body(wrong_id.to_string())
            .send()
            .await
            .expect("400")
            .status(),
        400
    );
    assert_eq!(
        client
            .delete(format!("{base}/Patient/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("delete")
            .status(),
        204
    );

    // Credentials: a token in the URL (refused), a client assertion at the token endpoint
    // (refused: unknown client) and in its URL. Neither may reach the log.
    assert_eq!(
        client
            .get(format!("{base}/Patient?access_token={token}"))
            .send()
            .await
            .expect("token in url")
            .status(),
        401
    );
    for url in [
        format!("{base}/auth/token"),
        format!("{base}/auth/token?client_assertion={token}"),
    ] {
        let status = client
            .post(url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", "system/*.rs"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", token.as_str()),
            ])
            .send()
            .await
            .expect("token request")
            .status();
        assert!(status == 400 || status == 401, "{status}");
    }
    let signature = token.rsplit('.').next().expect("signature").to_owned();

    // Graceful stop: SIGTERM, and the process exits by itself.
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        assert!(Instant::now() < deadline, "hearth did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "clean exit after SIGTERM: {exit:?}");

    let mut output = stdout_reader.join().expect("stdout reader");
    output.push_str(&stderr_reader.join().expect("stderr reader"));
    assert!(
        output.lines().count() > 10,
        "the server logged its requests:\n{output}"
    );
    assert!(
        output.contains("\"route\":\"/fhir/{tenant}/{type}/{id}\""),
        "request lines are logged"
    );
    assert!(
        !output.contains(&signature),
        "a token reached the log:\n{output}"
    );
    for phi in [NAME, GIVEN, IDENTIFIER, BIRTH_DATE, PHONE] {
        assert!(
            !output.contains(phi),
            "PHI {phi:?} reached the log:\n{output}"
        );
    }
}
