//! SMART test peers: the `oidc-provider` identity provider, the `jose` signer and the
//! browser-like login driver (tests/peers/smart, installed by scripts/peers.sh), and the
//! `hearth client|idp` commands.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use super::env;

fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/smart")
}

/// Run a peer script; its stdout, trimmed. Panics with stderr on failure.
pub fn node(script: &str, args: &[&str]) -> String {
    let output = Command::new("node")
        .arg(peers_dir().join(script))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run node {script} (scripts/peers.sh installs the peers): {e}"));
    assert!(
        output.status.success(),
        "node {script} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A scratch directory for keys and configs.
pub fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hearth-smart-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A client key pair made by `jose`: `dir/private.jwk.json`, `dir/jwks.json`.
pub struct ClientKey {
    pub dir: PathBuf,
    pub kid: String,
}

impl ClientKey {
    pub fn generate(alg: &str) -> ClientKey {
        let dir = scratch();
        let kid = format!(
            "{}-{}",
            alg.to_lowercase(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        node(
            "jose.mjs",
            &[
                "keygen",
                "--alg",
                alg,
                "--kid",
                &kid,
                "--out",
                &dir.to_string_lossy(),
            ],
        );
        ClientKey { dir, kid }
    }

    pub fn jwks_file(&self) -> PathBuf {
        self.dir.join("jwks.json")
    }

    pub fn jwks(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.jwks_file()).expect("jwks"))
            .expect("json")
    }

    /// Sign `claims` with this key; `extra` are more `jose.mjs sign` flags.
    pub fn sign(&self, claims: &Value, extra: &[&str]) -> String {
        let key = self.dir.join("private.jwk.json");
        let claims = claims.to_string();
        let mut args = vec![
            "sign",
            "--key",
            key.to_str().expect("utf-8 path"),
            "--claims",
            &claims,
        ];
        args.extend_from_slice(extra);
        node("jose.mjs", &args)
    }
}

/// Run `hearth` with the test database; panics unless it succeeds. Returns stdout.
pub fn hearth(args: &[&str], extra_env: &[(&str, &str)]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(args)
        .env("DATABASE_URL", env("DATABASE_URL"))
        .env("HEARTH_PUBLIC_BASE_URL", &super::server().origin)
        .env("HEARTH_LOG", "warn")
        .envs(extra_env.iter().copied())
        .output()
        .expect("run hearth");
    assert!(
        output.status.success(),
        "hearth {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A running `oidc-provider`, stopped on drop.
pub struct Idp {
    child: Child,
    pub issuer: String,
}

impl Idp {
    pub fn start(config: &Value) -> Idp {
        let path = scratch().join("idp.json");
        std::fs::write(&path, config.to_string()).expect("write idp config");
        let mut child = Command::new("node")
            .arg(peers_dir().join("idp.mjs"))
            .arg(&path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start idp.mjs (scripts/peers.sh installs it)");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("READY line");
        let issuer = line
            .trim()
            .strip_prefix("READY ")
            .unwrap_or_else(|| panic!("idp.mjs did not start: {line:?}"))
            .to_owned();
        Idp { child, issuer }
    }

    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer)
    }

    /// A client_credentials token from the provider (HTTP Basic client auth).
    pub async fn client_token(
        &self,
        client_id: &str,
        secret: &str,
        scope: &str,
        resource: &str,
    ) -> Value {
        let response = reqwest::Client::new()
            .post(format!("{}/token", self.issuer))
            .basic_auth(client_id, Some(secret))
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", scope),
                ("resource", resource),
            ])
            .send()
            .await
            .expect("idp token request");
        let status = response.status();
        let body: Value = response.json().await.expect("idp token json");
        assert_eq!(status, 200, "idp token: {body}");
        body
    }

    /// Sign in as `account` with the authorization code flow (PKCE); the token response.
    pub fn login(
        &self,
        client_id: &str,
        secret: &str,
        scope: &str,
        resource: &str,
        account: &str,
    ) -> Value {
        let out = node(
            "login.mjs",
            &[
                "--issuer",
                &self.issuer,
                "--client-id",
                client_id,
                "--client-secret",
                secret,
                "--redirect-uri",
                "http://127.0.0.1:9/cb",
                "--scope",
                scope,
                "--resource",
                resource,
                "--login",
                account,
            ],
        );
        serde_json::from_str(&out).expect("login.mjs json")
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Register a Backend Services client of the context's tenant through the CLI, with the
/// public half of `key` and `scopes`; `extra` are more `hearth client register` flags.
pub fn register_client(
    ctx: &super::Ctx,
    client_id: &str,
    key: &ClientKey,
    scopes: &str,
    extra: &[&str],
) {
    let jwks = key.jwks_file();
    let mut args = vec![
        "client",
        "register",
        "--tenant",
        ctx.tenant.as_str(),
        "--client-id",
        client_id,
        "--jwks-file",
        jwks.to_str().expect("utf-8 path"),
        "--scopes",
        scopes,
    ];
    args.extend_from_slice(extra);
    let out = hearth(&args, &[]);
    assert!(out.contains("registered"), "{out}");
}

/// A Backend Services access token for `client_id`: a client assertion signed by `key`
/// (with `jose`) exchanged at the tenant's token endpoint.
pub async fn backend_services_token(
    ctx: &super::Ctx,
    client_id: &str,
    key: &ClientKey,
    scope: &str,
) -> String {
    let token_url = ctx.url("auth/token");
    let claims = serde_json::json!({"iss": client_id, "sub": client_id, "aud": token_url,
                                    "exp": "$now+240", "jti": "$uuid"});
    let assertion = key.sign(&claims, &[]);
    let response = ctx
        .client
        .post(&token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", scope),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion.as_str()),
        ])
        .send()
        .await
        .expect("token request");
    assert_eq!(response.status(), 200, "token endpoint");
    let body: Value = response.json().await.expect("token json");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}
