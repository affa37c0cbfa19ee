//! The third-party HL7 v2 client (PyPI `hl7`, driven by tests/peers/mllp_send.py) and the
//! fixtures it sends.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hl7v2")
        .join(name)
}

/// Send `files` in order on one connection to 127.0.0.1:`port`, with `extra` driver
/// arguments (TLS options); one JSON result per file (`ack_code`, `control_id`, `err`,
/// `raw`, or `error`).
pub fn send_with(port: u16, extra: &[OsString], files: &[&str]) -> Vec<Value> {
    let python = std::env::var("HEARTH_PEER_PYTHON").unwrap_or_else(|_| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(".hearth/venv/bin/python")
            .to_string_lossy()
            .into_owned()
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/mllp_send.py");
    let output = Command::new(&python)
        .arg(script)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--timeout",
            "20",
        ])
        .args(extra)
        .args(files.iter().map(|f| fixture(f)))
        .output()
        .unwrap_or_else(|e| panic!("run {python} (scripts/peers.sh installs it): {e}"));
    assert!(
        output.status.success(),
        "driver failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), files.len(), "one result per file: {lines:?}");
    lines
}

/// MSH-10 of a fixture.
pub fn control_id(file: &str) -> String {
    let bytes = std::fs::read(fixture(file)).expect("fixture");
    let text = String::from_utf8_lossy(&bytes);
    let msh = text
        .trim_start_matches('\u{feff}')
        .split(['\r', '\n'])
        .next()
        .unwrap_or_default()
        .to_owned();
    msh.split('|').nth(9).unwrap_or_default().to_owned()
}

/// MSA-1 is `code` and MSA-2 echoes the fixture's MSH-10.
pub fn assert_ack(result: &Value, file: &str, code: &str) {
    assert_eq!(result["ack_code"], code, "{file}: {result}");
    assert_eq!(
        result["control_id"].as_str().unwrap_or_default(),
        control_id(file),
        "{file}: MSA-2 echoes MSH-10"
    );
}

/// An MLLP listener for `ctx`'s tenant accepting the synthetic fixtures' sender
/// (SYNTH_EHR / SYNTH_HOSP, America/New_York); stop it with `stop()`.
pub fn synth_adt_listener(ctx: &super::Ctx) -> (hearth::hl7v2::service::MllpService, u16) {
    listener_for(
        ctx,
        hearth::config::FeedConfig {
            name: "synth".into(),
            sending_application: Some("SYNTH_EHR".into()),
            sending_facility: Some("SYNTH_HOSP".into()),
            time_zone: Some("America/New_York".into()),
            ..hearth::config::FeedConfig::default()
        },
    )
}

/// An MLLP listener for `ctx`'s tenant accepting `feed`; stop it with `stop()`.
pub fn listener_for(
    ctx: &super::Ctx,
    feed: hearth::config::FeedConfig,
) -> (hearth::hl7v2::service::MllpService, u16) {
    use hearth::config::MllpListenerConfig;
    let mut config = hearth::config::Config::default();
    config.database.url = Some(super::env("DATABASE_URL"));
    config.database.max_connections = 4;
    config.server.public_base_url = ctx.origin.clone();
    config.mllp.listeners.push(MllpListenerConfig {
        name: "adt".into(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        tenant: ctx.tenant.to_string(),
        tls: None,
        max_frame_bytes: 1024 * 1024,
        idle_timeout_secs: 30,
        feeds: vec![feed],
    });
    let metrics = std::sync::Arc::new(hearth::ops::Metrics::new().expect("metrics"));
    let service = hearth::hl7v2::service::start(&config, metrics)
        .expect("start mllp")
        .expect("a listener");
    let port = service.addresses[0].1.port();
    (service, port)
}
