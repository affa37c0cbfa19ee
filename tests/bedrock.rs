//! The Bedrock client (issue #9) against `tests/peers/bedrock/standin.py`, a local stand-in
//! that speaks the Bedrock Runtime wire format and verifies SigV4 signatures. No AWS, no
//! database.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hearth::clinical::bedrock::{Bedrock, BedrockError, BedrockSettings};
use serde_json::{Value, json};

const ACCESS_KEY: &str = "AKIDTEST";
const SECRET_KEY: &str = "test-secret";
/// Has a `:` that the SDK sends as `%3A` and SigV4 signs as `%253A`.
const CLAUDE: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";
const TITAN: &str = "amazon.titan-embed-text-v2:0";

/// A running stand-in; stopped (stdin closed, then killed) on drop.
struct Standin {
    child: Child,
    url: String,
}

impl Standin {
    fn start(script: Value) -> Standin {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "bedrock-script-{}-{}.json",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, serde_json::to_vec(&script).unwrap()).unwrap();
        let standin = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/peers/bedrock/standin.py"
        );
        let mut child = Command::new("python3")
            .arg(standin)
            .arg("--script")
            .arg(&path)
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .args(["--region", "us-east-1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs the stand-in");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("READY ")
            .unwrap_or_else(|| panic!("stand-in did not start: {line:?}"))
            .to_owned();
        Standin { child, url }
    }

    fn settings(&self, secret: &str) -> BedrockSettings {
        BedrockSettings {
            region: "us-east-1".into(),
            endpoint_url: Some(self.url.clone()),
            static_credentials: Some((ACCESS_KEY.into(), secret.into())),
            timeout: Duration::from_secs(10),
        }
    }

    fn client(&self) -> Bedrock {
        Bedrock::new(&self.settings(SECRET_KEY)).unwrap()
    }

    async fn log(&self) -> Vec<Value> {
        reqwest::get(format!("{}/_standin/log", self.url))
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.flush();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn converse_returns_the_scripted_reply_signed_and_logged() {
    let standin = Standin::start(json!({"converse": [
        {"match": "allergies", "reply": "Penicillin allergy [AllergyIntolerance/a1].", "model": CLAUDE},
        {"reply": "Hypertension since 2019 [Condition/c1]."},
    ]}));
    let bedrock = standin.client();
    let system = "You summarise patient records. Cite every statement.";
    let user = "Record:\n- AllergyIntolerance/a1 penicillin\nList the allergies.";
    let out = bedrock.converse(CLAUDE, system, user, 512).await.unwrap();
    assert_eq!(out.text, "Penicillin allergy [AllergyIntolerance/a1].");
    assert_eq!(out.model_id, CLAUDE);
    assert_eq!(out.stop_reason, "end_turn");
    // The stand-in counts one token per whitespace-separated word.
    let words = |s: &str| u32::try_from(s.split_whitespace().count()).unwrap();
    assert_eq!(out.input_tokens, words(system) + words(user));
    assert_eq!(out.output_tokens, words(&out.text));

    // The entry without `match` answers anything, once; then nothing is left.
    let second = bedrock
        .converse(CLAUDE, system, "Problems?", 512)
        .await
        .unwrap();
    assert_eq!(second.text, "Hypertension since 2019 [Condition/c1].");
    let third = bedrock
        .converse(CLAUDE, system, "List the allergies.", 512)
        .await
        .unwrap();
    assert_eq!(third.text, "NOT FOUND IN THE RECORD");

    let log = standin.log().await;
    assert_eq!(log.len(), 3, "{log:#?}");
    let first = &log[0];
    assert_eq!(first["signed_ok"], json!(true), "{first:#?}");
    assert_eq!(first["authorization_present"], json!(true));
    assert_eq!(first["model_id"], json!(CLAUDE));
    assert_eq!(
        first["path"],
        json!("/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse")
    );
    assert_eq!(first["region"], json!("us-east-1"));
    let signed = first["signed_headers"].as_array().unwrap();
    for header in ["host", "x-amz-date", "content-type", "content-length"] {
        assert!(
            signed.contains(&json!(header)),
            "{header} unsigned: {signed:?}"
        );
    }
    let body = &first["body"];
    assert_eq!(body["system"], json!([{"text": system}]));
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": [{"text": user}]}])
    );
    assert_eq!(body["inferenceConfig"]["maxTokens"], json!(512));
    assert_eq!(body["inferenceConfig"]["temperature"].as_f64(), Some(0.0));
    assert!(log.iter().all(|e| e["signed_ok"] == json!(true)));
}

#[tokio::test]
async fn max_tokens_truncates_the_reply() {
    let standin = Standin::start(json!({"converse": [{"reply": "one two three four five"}]}));
    let out = standin
        .client()
        .converse(CLAUDE, "", "Summarise.", 3)
        .await
        .unwrap();
    assert_eq!(out.text, "one two three");
    assert_eq!(out.stop_reason, "max_tokens");
    assert_eq!(out.output_tokens, 3);
    // An empty system prompt is left out of the request.
    let log = standin.log().await;
    assert!(log[0]["body"].get("system").is_none(), "{:#?}", log[0]);
}

#[tokio::test]
async fn a_wrong_secret_is_refused_by_the_signature_check() {
    let standin = Standin::start(json!({"converse": [{"reply": "never sent"}]}));
    let wrong = Bedrock::new(&standin.settings("not-the-secret")).unwrap();
    let err = wrong
        .converse(CLAUDE, "system", "user text", 100)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BedrockError::AccessDenied { code } if code == "InvalidSignatureException"),
        "{err:?}"
    );
    assert!(!err.to_string().contains("user text"));

    let embed_err = wrong.embed_titan(TITAN, "hello", 256).await.unwrap_err();
    assert!(
        matches!(&embed_err, BedrockError::AccessDenied { .. }),
        "{embed_err:?}"
    );

    // An unknown access key id is a different refusal.
    let stranger = Bedrock::new(&BedrockSettings {
        static_credentials: Some(("AKIDOTHER".into(), SECRET_KEY.into())),
        ..standin.settings(SECRET_KEY)
    })
    .unwrap();
    let err = stranger
        .converse(CLAUDE, "system", "user", 100)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BedrockError::AccessDenied { code } if code == "UnrecognizedClientException"),
        "{err:?}"
    );

    let log = standin.log().await;
    assert_eq!(log.len(), 3);
    assert!(
        log.iter().all(|e| e["signed_ok"] == json!(false)),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .all(|e| e["authorization_present"] == json!(true))
    );
    assert_eq!(log[0]["signature_problem"], json!("signature mismatch"));

    // The right secret still works: the scripted reply was not used up.
    let out = standin
        .client()
        .converse(CLAUDE, "system", "user", 100)
        .await
        .unwrap();
    assert_eq!(out.text, "never sent");
}

#[tokio::test]
async fn titan_embeddings_have_the_requested_dimension_and_are_deterministic() {
    let standin = Standin::start(json!({}));
    let bedrock = standin.client();
    let text = "Metformin 500 mg twice daily for type 2 diabetes";
    let (a, tokens) = bedrock.embed_titan(TITAN, text, 256).await.unwrap();
    assert_eq!(a.len(), 256);
    assert_eq!(tokens, 9);
    let norm: f32 = a.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "{norm}");

    let (again, _) = bedrock.embed_titan(TITAN, text, 256).await.unwrap();
    assert_eq!(a, again);
    let (other, _) = bedrock
        .embed_titan(TITAN, "Lisinopril for hypertension", 256)
        .await
        .unwrap();
    assert_ne!(a, other);
    let (wide, _) = bedrock.embed_titan(TITAN, text, 1024).await.unwrap();
    assert_eq!(wide.len(), 1024);

    // Rejected before any call.
    let err = bedrock.embed_titan(TITAN, text, 300).await.unwrap_err();
    assert!(matches!(err, BedrockError::Validation(_)), "{err:?}");
    let err = bedrock.embed_titan(TITAN, "", 256).await.unwrap_err();
    assert!(matches!(err, BedrockError::Validation(_)), "{err:?}");

    let log = standin.log().await;
    assert_eq!(log.len(), 4);
    let first = &log[0];
    assert_eq!(first["signed_ok"], json!(true), "{first:#?}");
    assert_eq!(first["operation"], json!("invoke"));
    assert_eq!(first["model_id"], json!(TITAN));
    assert_eq!(
        first["body"],
        json!({"inputText": text, "dimensions": 256, "normalize": true})
    );
}

#[tokio::test]
async fn throttling_is_reported_after_a_single_attempt() {
    let standin = Standin::start(json!({"throttle": 1, "converse": [{"reply": "ok"}]}));
    let bedrock = standin.client();
    let err = bedrock
        .converse(CLAUDE, "system", "user", 100)
        .await
        .unwrap_err();
    assert!(matches!(err, BedrockError::Throttled), "{err:?}");
    // One attempt only: the SDK did not retry behind our back.
    assert_eq!(standin.log().await.len(), 1);
    let out = bedrock
        .converse(CLAUDE, "system", "user", 100)
        .await
        .unwrap();
    assert_eq!(out.text, "ok");
}

#[tokio::test]
async fn an_unknown_model_is_a_validation_error() {
    let standin = Standin::start(json!({}));
    let bedrock = standin.client();
    let err = bedrock
        .converse("anthropic.claude-9-imaginary-v1:0", "s", "u", 10)
        .await
        .unwrap_err();
    match err {
        BedrockError::Validation(message) => {
            assert_eq!(message, "The provided model identifier is invalid.")
        }
        other => panic!("{other:?}"),
    }
    // Titan is known, but Converse does not serve an embedding model.
    let err = bedrock.converse(TITAN, "s", "u", 10).await.unwrap_err();
    assert!(matches!(err, BedrockError::Validation(_)), "{err:?}");
}

#[tokio::test]
async fn a_slow_model_times_out() {
    let standin = Standin::start(json!({"converse": [{"reply": "late", "delay_ms": 3000}]}));
    let bedrock = Bedrock::new(&BedrockSettings {
        timeout: Duration::from_millis(500),
        ..standin.settings(SECRET_KEY)
    })
    .unwrap();
    let err = bedrock.converse(CLAUDE, "s", "u", 10).await.unwrap_err();
    assert!(matches!(err, BedrockError::Timeout), "{err:?}");
}

#[tokio::test]
async fn an_unreachable_endpoint_is_a_transport_error() {
    // Bind then drop a listener: the port is free and nothing listens on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bedrock = Bedrock::new(&BedrockSettings {
        region: "us-east-1".into(),
        endpoint_url: Some(format!("http://127.0.0.1:{port}")),
        static_credentials: Some((ACCESS_KEY.into(), SECRET_KEY.into())),
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    let err = bedrock.converse(CLAUDE, "s", "u", 10).await.unwrap_err();
    assert!(matches!(err, BedrockError::Transport(_)), "{err:?}");
}

#[test]
fn the_standin_verifier_reproduces_aws_published_signatures() {
    let standin = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/peers/bedrock/standin.py"
    );
    let out = Command::new("python3")
        .arg(standin)
        .arg("--self-test")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
