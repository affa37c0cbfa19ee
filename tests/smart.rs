//! SMART on FHIR authorization against real peers: Backend Services assertions signed by
//! the `jose` library, user tokens from a real OpenID Connect provider (`oidc-provider`),
//! clients and providers registered with the `hearth` CLI.

mod common;

use common::smart::{ClientKey, Idp, JWT_BEARER, hearth, node};
use common::{Ctx, ctx, expect_outcome};
use serde_json::{Value, json};

const LAB: &str = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory";

fn base(ctx: &Ctx) -> String {
    format!("{}/fhir/{}", ctx.origin, ctx.tenant)
}

fn token_url(ctx: &Ctx) -> String {
    format!("{}/auth/token", base(ctx))
}

/// Register a Backend Services client with an inline JWKS, through the CLI.
fn register(ctx: &Ctx, client_id: &str, key: &ClientKey, scopes: &str) {
    let out = hearth(
        &[
            "client",
            "register",
            "--tenant",
            ctx.tenant.as_str(),
            "--client-id",
            client_id,
            "--jwks-file",
            &key.jwks_file().to_string_lossy(),
            "--scopes",
            scopes,
        ],
        &[],
    );
    assert!(out.contains("registered"), "{out}");
}

/// Make the tenant trust the identity provider, through the CLI; its output.
fn trust(ctx: &Ctx, idp: &Idp) -> String {
    hearth(
        &[
            "idp",
            "add",
            "--tenant",
            ctx.tenant.as_str(),
            "--discovery-url",
            &idp.discovery_url(),
        ],
        &[("HEARTH_ALLOW_HTTP_KEY_URLS", "true")],
    )
}

fn assertion_claims(client_id: &str, aud: &str) -> Value {
    json!({"iss": client_id, "sub": client_id, "aud": aud, "exp": "$now+240", "jti": "$uuid"})
}

async fn token_request(
    ctx: &Ctx,
    form: &[(&str, &str)],
) -> (u16, Value, reqwest::header::HeaderMap) {
    let response = ctx
        .client
        .post(token_url(ctx))
        .form(form)
        .send()
        .await
        .expect("token request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, body, headers)
}

async fn backend_token(
    ctx: &Ctx,
    assertion: &str,
    scope: &str,
) -> (u16, Value, reqwest::header::HeaderMap) {
    token_request(
        ctx,
        &[
            ("grant_type", "client_credentials"),
            ("scope", scope),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion),
        ],
    )
    .await
}

/// A token for `client_id`, whose assertion is signed by `key`.
async fn backend_access_token(ctx: &Ctx, client_id: &str, key: &ClientKey, scope: &str) -> String {
    common::smart::backend_services_token(ctx, client_id, key, scope).await
}

/// The first issue's diagnostics of an OperationOutcome.
fn diagnostics(outcome: &Value) -> &str {
    outcome["issue"][0]["diagnostics"]
        .as_str()
        .unwrap_or_default()
}

/// A GET of `url` with `token` that must fail with `status`; its diagnostics.
async fn refused_url(ctx: &Ctx, url: String, token: Option<&str>, status: u16) -> String {
    let mut request = ctx.client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let outcome = expect_outcome(request.send().await.expect("get"), status).await;
    diagnostics(&outcome).to_owned()
}

/// [`refused_url`] at a path of the context's tenant.
async fn refused(ctx: &Ctx, token: &str, path: &str, status: u16) -> String {
    refused_url(ctx, ctx.url(path), Some(token), status).await
}

async fn get_as(ctx: &Ctx, token: &str, path: &str) -> reqwest::Response {
    ctx.client
        .get(ctx.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("get")
}

async fn bundle_ids(response: reqwest::Response) -> Vec<String> {
    assert_eq!(response.status(), 200, "search status");
    let bundle: Value = response.json().await.expect("bundle");
    bundle["entry"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|e| {
            let r = &e["resource"];
            let t = r["resourceType"].as_str()?;
            (t != "OperationOutcome")
                .then(|| format!("{t}/{}", r["id"].as_str().unwrap_or_default()))
        })
        .collect()
}

#[tokio::test]
async fn smart_configuration_is_json_with_cors_and_every_field() {
    let ctx = ctx().await;
    let url = format!("{}/.well-known/smart-configuration", base(&ctx));
    let response = ctx
        .client
        .get(&url)
        .header("accept", "text/html")
        .header("origin", "https://app.example")
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("application/json")
    );
    let config: Value = response.json().await.expect("json");
    let b = base(&ctx);
    assert_eq!(config["issuer"], b.as_str());
    assert_eq!(config["jwks_uri"], format!("{b}/auth/jwks"));
    assert_eq!(config["token_endpoint"], format!("{b}/auth/token"));
    assert_eq!(
        config["introspection_endpoint"],
        format!("{b}/auth/introspect")
    );
    assert_eq!(config["revocation_endpoint"], format!("{b}/auth/revoke"));
    assert_eq!(
        config["grant_types_supported"],
        json!(["client_credentials"])
    );
    assert_eq!(
        config["token_endpoint_auth_methods_supported"],
        json!(["private_key_jwt"])
    );
    assert_eq!(
        config["token_endpoint_auth_signing_alg_values_supported"],
        json!(["RS384", "ES384"])
    );
    assert_eq!(config["code_challenge_methods_supported"], json!(["S256"]));
    assert!(
        config["scopes_supported"]
            .as_array()
            .is_some_and(|s| s.contains(&json!("system/*.rs")))
    );
    assert_eq!(
        config["capabilities"],
        json!([
            "client-confidential-asymmetric",
            "permission-v1",
            "permission-v2",
            "permission-patient",
            "permission-user"
        ])
    );

    let preflight = ctx
        .client
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://app.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .expect("options");
    assert!(preflight.status().is_success());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");

    // The JWKS it names publishes the key Hearth's tokens are signed with.
    let jwks: Value = ctx
        .client
        .get(format!("{b}/auth/jwks"))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    let kid = {
        let header = common::smart::node("jose.mjs", &["pem", "--jwks", &format!("{b}/auth/jwks")]);
        assert!(header.contains("BEGIN PUBLIC KEY"));
        jwks["keys"][0]["kid"].as_str().expect("kid").to_owned()
    };
    let token_kid: Value = common::jwt_part(&ctx.token, 0);
    assert_eq!(token_kid["kid"], kid.as_str());

    // The legacy oauth-uris extension in the CapabilityStatement.
    let cs: Value = ctx
        .client
        .get(ctx.url("metadata"))
        .send()
        .await
        .expect("metadata")
        .json()
        .await
        .expect("json");
    let security = &cs["rest"][0]["security"];
    assert_eq!(security["service"][0]["coding"][0]["code"], "SMART-on-FHIR");
    let uris = &security["extension"][0];
    assert_eq!(
        uris["url"],
        "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    );
    let token = uris["extension"]
        .as_array()
        .expect("uris")
        .iter()
        .find(|e| e["url"] == "token")
        .expect("token uri");
    assert_eq!(token["valueUri"], format!("{b}/auth/token"));
}

#[tokio::test]
async fn backend_services_rs384_client_gets_a_short_no_store_token_limited_to_its_scopes() {
    let ctx = ctx().await;
    let key = ClientKey::generate("RS384");
    register(
        &ctx,
        "partner-rs",
        &key,
        "system/Patient.rs system/Observation.rs",
    );
    let patient = ctx
        .create(&json!({"resourceType": "Patient", "gender": "female"}))
        .await;
    let pid = patient["id"].as_str().expect("id");

    let assertion = key.sign(&assertion_claims("partner-rs", &token_url(&ctx)), &[]);
    let (status, body, headers) = backend_token(&ctx, &assertion, "system/Patient.rs").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["pragma"], "no-cache");
    assert_eq!(
        body["token_type"]
            .as_str()
            .map(str::to_lowercase)
            .as_deref(),
        Some("bearer")
    );
    let expires_in = body["expires_in"].as_u64().expect("expires_in");
    assert!(expires_in > 0 && expires_in <= 300, "{expires_in}");
    assert_eq!(body["scope"], "system/Patient.rs");
    let token = body["access_token"].as_str().expect("token");

    assert_eq!(
        get_as(&ctx, token, &format!("Patient/{pid}"))
            .await
            .status(),
        200
    );
    // Granted Patient only, though the client could have asked for Observation too.
    let why = refused(&ctx, token, &format!("Observation?patient={pid}"), 403).await;
    assert!(why.contains("Observation"), "{why}");
    let write = ctx
        .client
        .post(ctx.url("Patient"))
        .bearer_auth(token)
        .header("content-type", "application/fhir+json")
        .body(json!({"resourceType": "Patient"}).to_string())
        .send()
        .await
        .expect("post");
    expect_outcome(write, 403).await;
}

/// A JWKS served over loopback http, counting how often it is fetched.
async fn serve_jwks(
    jwks: Value,
    cache_control: &'static str,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/jwks.json", listener.local_addr().expect("addr"));
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let body = jwks.to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: {cache_control}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        }
    });
    (url, hits)
}

#[tokio::test]
async fn backend_services_es384_client_with_a_jwks_url_is_fetched_once_while_fresh() {
    use std::sync::atomic::Ordering;
    let ctx = ctx().await;
    let key = ClientKey::generate("ES384");
    let (url, hits) = serve_jwks(key.jwks(), "public, max-age=600").await;
    let out = hearth(
        &[
            "client",
            "register",
            "--tenant",
            ctx.tenant.as_str(),
            "--client-id",
            "partner-ec",
            "--jwks-url",
            &url,
            "--scopes",
            "system/*.rs",
        ],
        &[("HEARTH_ALLOW_HTTP_KEY_URLS", "true")],
    );
    assert!(out.contains("registered"), "{out}");
    for _ in 0..3 {
        backend_access_token(&ctx, "partner-ec", &key, "system/*.rs").await;
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "max-age=600: one fetch for three tokens"
    );

    // Without an explicit permission, a JWKS URL must be https.
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args([
            "client",
            "register",
            "--tenant",
            ctx.tenant.as_str(),
            "--client-id",
            "x",
            "--jwks-url",
            &url,
            "--scopes",
            "system/*.rs",
        ])
        .env("DATABASE_URL", common::env("DATABASE_URL"))
        .output()
        .expect("run hearth");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not an https URL"));
}

#[tokio::test]
async fn a_no_store_jwks_is_fetched_for_every_assertion() {
    use std::sync::atomic::Ordering;
    let ctx = ctx().await;
    let key = ClientKey::generate("ES384");
    let (url, hits) = serve_jwks(key.jwks(), "no-store").await;
    hearth(
        &[
            "client",
            "register",
            "--tenant",
            ctx.tenant.as_str(),
            "--client-id",
            "nostore",
            "--jwks-url",
            &url,
            "--scopes",
            "system/*.rs",
        ],
        &[("HEARTH_ALLOW_HTTP_KEY_URLS", "true")],
    );
    for _ in 0..2 {
        backend_access_token(&ctx, "nostore", &key, "system/*.rs").await;
    }
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

/// Each broken assertion or request, and the exact RFC 6749 error it gets.
#[tokio::test]
async fn every_bad_assertion_gets_its_exact_error() {
    let ctx = ctx().await;
    let other = common::ctx().await;
    let key = ClientKey::generate("RS384");
    let stranger = ClientKey::generate("RS384");
    register(&ctx, "partner", &key, "system/*.rs");
    register(&other, "elsewhere", &key, "system/*.rs");
    let aud = token_url(&ctx);
    let good = |extra: &[&str]| key.sign(&assertion_claims("partner", &aud), extra);
    let with = |patch: Value| {
        let mut claims = assertion_claims("partner", &aud);
        for (k, v) in patch.as_object().expect("object") {
            claims[k] = v.clone();
        }
        key.sign(&claims, &[])
    };
    // The HS256 confusion attack: the client's public key, as PEM, used as an HMAC secret.
    let pem_file = common::smart::scratch().join("public.pem");
    std::fs::write(
        &pem_file,
        node(
            "jose.mjs",
            &["pem", "--jwks", &key.jwks_file().to_string_lossy()],
        ),
    )
    .expect("pem");
    let replayed = good(&[]);
    let (first, _, _) = backend_token(&ctx, &replayed, "system/*.rs").await;
    assert_eq!(first, 200);

    let cases: Vec<(&str, String, &str, u16, &str, &str)> = vec![
        (
            "wrong aud",
            with(json!({"aud": format!("{}/auth/token", base(&other))})),
            "system/*.rs",
            401,
            "invalid_client",
            "aud",
        ),
        (
            "expired",
            with(json!({"exp": "$now-60"})),
            "system/*.rs",
            401,
            "invalid_client",
            "expired",
        ),
        (
            "exp too far",
            with(json!({"exp": "$now+900"})),
            "system/*.rs",
            401,
            "invalid_client",
            "five minutes",
        ),
        (
            "replayed jti",
            replayed.clone(),
            "system/*.rs",
            401,
            "invalid_client",
            "used before",
        ),
        (
            "no jti",
            key.sign(
                &json!({"iss": "partner", "sub": "partner", "aud": aud, "exp": "$now+60"}),
                &[],
            ),
            "system/*.rs",
            401,
            "invalid_client",
            "jti",
        ),
        (
            "unknown kid",
            good(&["--kid", "not-registered"]),
            "system/*.rs",
            401,
            "invalid_client",
            "kid not-registered",
        ),
        (
            "no kid",
            good(&["--no-kid"]),
            "system/*.rs",
            401,
            "invalid_client",
            "kid",
        ),
        (
            "no typ",
            good(&["--no-typ"]),
            "system/*.rs",
            401,
            "invalid_client",
            "typ",
        ),
        (
            "wrong algorithm (RS256)",
            good(&["--alg", "RS256"]),
            "system/*.rs",
            401,
            "invalid_client",
            "RS256",
        ),
        (
            "alg none",
            good(&["--alg", "none"]),
            "system/*.rs",
            401,
            "invalid_client",
            "none",
        ),
        (
            "HS256 keyed with the public key",
            good(&[
                "--alg",
                "HS256",
                "--hmac-secret-file",
                &pem_file.to_string_lossy(),
            ]),
            "system/*.rs",
            401,
            "invalid_client",
            "HS256",
        ),
        (
            "signed by another key with the registered kid",
            stranger.sign(&assertion_claims("partner", &aud), &["--kid", &key.kid]),
            "system/*.rs",
            401,
            "invalid_client",
            "signature",
        ),
        (
            "iss is not sub",
            with(json!({"sub": "someone-else"})),
            "system/*.rs",
            401,
            "invalid_client",
            "iss and sub",
        ),
        (
            "client of another tenant",
            key.sign(&assertion_claims("elsewhere", &aud), &[]),
            "system/*.rs",
            401,
            "invalid_client",
            "no such client",
        ),
        (
            "a scope the client was not granted",
            good(&[]),
            "system/*.cruds",
            400,
            "invalid_scope",
            "not granted",
        ),
        (
            "a patient/ scope",
            good(&[]),
            "patient/*.rs",
            400,
            "invalid_scope",
            "system/ scopes only",
        ),
        (
            "granular criteria the type does not have",
            good(&[]),
            "system/Observation.rs?colour=red",
            400,
            "invalid_scope",
            "colour",
        ),
        ("no scope", good(&[]), "", 400, "invalid_scope", "required"),
    ];
    for (name, assertion, scope, status, error, description) in cases {
        let (got, body, headers) = backend_token(&ctx, &assertion, scope).await;
        assert_eq!(got, status, "{name}: {body}");
        assert_eq!(body["error"], error, "{name}: {body}");
        let text = body["error_description"].as_str().unwrap_or_default();
        assert!(
            text.contains(description),
            "{name}: {text:?} should mention {description:?}"
        );
        assert_eq!(headers["cache-control"], "no-store", "{name}");
        assert!(body.get("access_token").is_none(), "{name}");
    }

    // Request-level errors.
    let (status, body, _) =
        token_request(&ctx, &[("grant_type", "password"), ("username", "u")]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    let (status, body, _) = token_request(
        &ctx,
        &[
            ("grant_type", "client_credentials"),
            ("scope", "system/*.rs"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let (status, body, _) = token_request(&ctx, &[("scope", "system/*.rs")]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let in_url = ctx
        .client
        .post(format!(
            "{}?client_assertion={}",
            token_url(&ctx),
            good(&[])
        ))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("post");
    assert_eq!(in_url.status(), 400);

    // Every refusal is audited (as an auth failure of the token endpoint) ...
    let report = hearth(&["audit", "alerts", "--tenant", ctx.tenant.as_str()], &[]);
    assert!(report.contains("auth-failure"), "{report}");
    assert!(report.contains("used before"), "the replayed jti: {report}");
    // ... and counted by reason.
    let metrics = ctx
        .client
        .get(format!("{}/metrics", ctx.origin))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for reason in [
        "replayed_jti",
        "algorithm",
        "unknown_kid",
        "audience",
        "exp_too_far",
        "expired",
    ] {
        assert!(
            metrics.contains(&format!(
                "hearth_auth_failures_total{{endpoint=\"token\",reason=\"{reason}\"}}"
            )),
            "metric for {reason}"
        );
    }
}

/// `POST {base}/auth/{endpoint}` with `token`, the client authenticated by an assertion
/// whose `aud` is that endpoint.
fn client_post(
    ctx: &Ctx,
    endpoint: &str,
    client_id: &str,
    key: &ClientKey,
    token: String,
) -> impl std::future::Future<Output = reqwest::Response> + use<> {
    let url = format!("{}/auth/{endpoint}", base(ctx));
    let assertion = key.sign(&assertion_claims(client_id, &url), &[]);
    let request = ctx.client.post(url).form(&[
        ("token", token.as_str()),
        ("client_assertion_type", JWT_BEARER),
        ("client_assertion", assertion.as_str()),
    ]);
    async move { request.send().await.expect("post") }
}

#[tokio::test]
async fn introspection_and_revocation_of_hearth_tokens() {
    let ctx = ctx().await;
    let key = ClientKey::generate("ES384");
    register(&ctx, "intro", &key, "system/*.rs");
    let token = backend_access_token(&ctx, "intro", &key, "system/Patient.rs").await;
    let b = base(&ctx);
    let introspect = |token: String| {
        let response = client_post(&ctx, "introspect", "intro", &key, token);
        async move {
            let response = response.await;
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["cache-control"], "no-store");
            response.json::<Value>().await.expect("json")
        }
    };
    let active = introspect(token.clone()).await;
    assert_eq!(active["active"], true, "{active}");
    assert_eq!(active["scope"], "system/Patient.rs");
    assert_eq!(active["client_id"], "intro");
    assert!(active["exp"].as_i64().is_some());

    // Introspection needs a caller: no credentials, no answer.
    let anonymous = ctx
        .client
        .post(format!("{b}/auth/introspect"))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .expect("post");
    assert_eq!(anonymous.status(), 401);

    assert_eq!(get_as(&ctx, &token, "Patient").await.status(), 200);
    let revoked = client_post(&ctx, "revoke", "intro", &key, token.clone()).await;
    assert_eq!(revoked.status(), 200);
    let inactive = introspect(token.clone()).await;
    assert_eq!(inactive, json!({"active": false}));
    let why = refused(&ctx, &token, "Patient", 401).await;
    assert!(why.contains("revoked"), "{why}");

    // A token in the URL is refused, even a valid one.
    let fresh = backend_access_token(&ctx, "intro", &key, "system/Patient.rs").await;
    let why = refused_url(
        &ctx,
        format!("{}?access_token={fresh}", ctx.url("Patient")),
        None,
        401,
    )
    .await;
    assert!(why.contains("URL"), "{why}");
}

#[tokio::test]
async fn a_granular_system_scope_sees_only_its_category() {
    let ctx = ctx().await;
    let key = ClientKey::generate("RS384");
    register(
        &ctx,
        "labs-only",
        &key,
        "system/Observation.rs system/Patient.rs",
    );
    let patient = ctx.create(&json!({"resourceType": "Patient"})).await;
    let pid = patient["id"].as_str().expect("id").to_owned();
    let (lab, vital) = seed_observations(&ctx, &pid).await;
    let token = backend_access_token(
        &ctx,
        "labs-only",
        &key,
        &format!("system/Observation.rs?category={LAB}"),
    )
    .await;
    assert_eq!(
        get_as(&ctx, &token, &format!("Observation/{lab}"))
            .await
            .status(),
        200
    );
    let why = refused(&ctx, &token, &format!("Observation/{vital}"), 403).await;
    assert!(why.contains("outside"), "{why}");
    let found = bundle_ids(
        get_as(
            &ctx,
            &token,
            &format!("Observation?patient={pid}&_total=accurate"),
        )
        .await,
    )
    .await;
    assert_eq!(found, vec![format!("Observation/{lab}")]);
    // Writing is not in the scope at all.
    let write = ctx
        .client
        .delete(ctx.url(&format!("Observation/{lab}")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("delete");
    expect_outcome(write, 403).await;
}

/// A lab and a vital-signs Observation of the patient; their ids.
async fn seed_observations(ctx: &Ctx, pid: &str) -> (String, String) {
    let obs = |category: &str, code: &str| {
        json!({
            "resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": format!("Patient/{pid}")},
        })
    };
    let lab = ctx.create(&obs("laboratory", "2345-7")).await;
    let vital = ctx.create(&obs("vital-signs", "8867-4")).await;
    (
        lab["id"].as_str().expect("id").to_owned(),
        vital["id"].as_str().expect("id").to_owned(),
    )
}

fn idp_config(resources: &[String]) -> Value {
    json!({
        "port": 0,
        "resource": resources,
        "signing_alg": "RS256",
        "clients": [
            {"client_id": "chart-app", "client_secret": "chart-secret", "grant_types": ["authorization_code"],
             "response_types": ["code"], "redirect_uris": ["http://127.0.0.1:9/cb"],
             "token_endpoint_auth_method": "client_secret_basic",
             "scope": format!("openid fhirUser launch/patient patient/*.rs patient/*.read patient/Observation.rs?category={LAB} patient/Observation.cu user/*.rs")},
            {"client_id": "short-lived", "client_secret": "s", "grant_types": ["client_credentials"],
             "response_types": [], "redirect_uris": [], "token_endpoint_auth_method": "client_secret_basic",
             "scope": "user/*.rs", "hearth_access_token_ttl": 1, "hearth_claims": {"fhirUser": "Practitioner/doc-1"}},
        ],
        "accounts": {},
    })
}

struct TwoPatients {
    a: String,
    b: String,
    a_lab: String,
    a_vital: String,
    b_lab: String,
    /// A's lab result, performed by patient B (self-reported by a relative, say): in A's
    /// compartment, but `_include=Observation:performer` would reach B.
    a_obs_performed_by_b: String,
    practitioner: String,
}

async fn two_patients(ctx: &Ctx) -> TwoPatients {
    let practitioner = ctx
        .create(&json!({"resourceType": "Practitioner", "name": [{"family": "Doe"}]}))
        .await;
    let practitioner = practitioner["id"].as_str().expect("id").to_owned();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let p = ctx
            .create(&json!({"resourceType": "Patient", "generalPractitioner": [{"reference": format!("Practitioner/{practitioner}")}]}))
            .await;
        ids.push(p["id"].as_str().expect("id").to_owned());
    }
    let (a, b) = (ids[0].clone(), ids[1].clone());
    let (a_lab, a_vital) = seed_observations(ctx, &a).await;
    let (b_lab, _) = seed_observations(ctx, &b).await;
    let performed = ctx
        .create(&json!({
            "resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]},
            "subject": {"reference": format!("Patient/{a}")},
            "performer": [{"reference": format!("Patient/{b}")}],
        }))
        .await;
    TwoPatients {
        a,
        b,
        a_lab,
        a_vital,
        b_lab,
        a_obs_performed_by_b: performed["id"].as_str().expect("id").to_owned(),
        practitioner,
    }
}

#[tokio::test]
async fn a_patient_token_from_the_identity_provider_is_confined_to_its_patient() {
    let ctx = ctx().await;
    let data = two_patients(&ctx).await;
    let mut config = idp_config(&[base(&ctx)]);
    config["accounts"] =
        json!({"pat-a": {"patient": data.a, "fhirUser": format!("Patient/{}", data.a)}});
    let idp = Idp::start(&config);
    let out = trust(&ctx, &idp);
    assert!(out.contains(&idp.issuer), "{out}");
    let response = idp.login(
        "chart-app",
        "chart-secret",
        "openid fhirUser launch/patient patient/*.rs",
        &base(&ctx),
        "pat-a",
    );
    let token = response["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();

    // Reads: own record yes, the other patient's no.
    assert_eq!(
        get_as(&ctx, &token, &format!("Patient/{}", data.a))
            .await
            .status(),
        200
    );
    refused(&ctx, &token, &format!("Patient/{}", data.b), 403).await;
    refused(&ctx, &token, &format!("Observation/{}", data.b_lab), 403).await;
    refused(&ctx, &token, &format!("Patient/{}/_history", data.b), 403).await;
    expect_outcome(
        get_as(
            &ctx,
            &token,
            &format!("Observation/{}/_history/1", data.b_lab),
        )
        .await,
        403,
    )
    .await;
    // Not patient data: readable.
    assert_eq!(
        get_as(&ctx, &token, &format!("Practitioner/{}", data.practitioner))
            .await
            .status(),
        200
    );

    // Searches are confined, with or without a patient parameter.
    let mut mine = bundle_ids(get_as(&ctx, &token, "Observation?category=laboratory").await).await;
    mine.sort();
    let mut expected = vec![
        format!("Observation/{}", data.a_lab),
        format!("Observation/{}", data.a_obs_performed_by_b),
    ];
    expected.sort();
    assert_eq!(mine, expected);
    assert!(
        bundle_ids(get_as(&ctx, &token, &format!("Observation?patient={}", data.b)).await)
            .await
            .is_empty()
    );
    let patients = bundle_ids(get_as(&ctx, &token, "Patient").await).await;
    assert_eq!(patients, vec![format!("Patient/{}", data.a)]);

    // _include and _revinclude never bring in the other patient.
    let included = bundle_ids(
        get_as(&ctx, &token, &format!("Observation?patient={}&_include=Observation:performer&_include=Observation:subject", data.a)).await,
    )
    .await;
    assert!(
        included.contains(&format!("Patient/{}", data.a)),
        "{included:?}"
    );
    assert!(
        !included.contains(&format!("Patient/{}", data.b)),
        "{included:?}"
    );
    let revincluded = bundle_ids(
        get_as(
            &ctx,
            &token,
            &format!(
                "Practitioner?_id={}&_revinclude=Patient:general-practitioner",
                data.practitioner
            ),
        )
        .await,
    )
    .await;
    assert!(
        revincluded.contains(&format!("Patient/{}", data.a)),
        "{revincluded:?}"
    );
    assert!(
        !revincluded.contains(&format!("Patient/{}", data.b)),
        "{revincluded:?}"
    );

    // Type history shows only the patient's own resources.
    let history: Value = get_as(&ctx, &token, "Patient/_history")
        .await
        .json()
        .await
        .expect("json");
    let ids: Vec<&str> = history["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["resource"]["id"].as_str())
        .collect();
    assert_eq!(ids, vec![data.a.as_str()]);

    // Writes under a patient-confined scope are refused, as are Bundles.
    let write = ctx
        .client
        .put(ctx.url(&format!("Patient/{}", data.a)))
        .bearer_auth(&token)
        .header("content-type", "application/fhir+json")
        .body(json!({"resourceType": "Patient", "id": data.a}).to_string())
        .send()
        .await
        .expect("put");
    expect_outcome(write, 403).await;

    // The same provider's token is no good at another tenant, which does not trust it.
    let other = common::ctx().await;
    let why = refused_url(
        &ctx,
        other.url(&format!("Patient/{}", data.a)),
        Some(&token),
        401,
    )
    .await;
    assert!(why.contains("not trusted"), "{why}");
}

#[tokio::test]
async fn granular_and_v1_patient_scopes_from_the_identity_provider() {
    let ctx = ctx().await;
    let data = two_patients(&ctx).await;
    let mut config = idp_config(&[base(&ctx)]);
    config["accounts"] = json!({"pat-a": {"patient": data.a}});
    let idp = Idp::start(&config);
    trust(&ctx, &idp);

    let labs_scope = format!("openid launch/patient patient/Observation.rs?category={LAB}");
    let labs = idp.login(
        "chart-app",
        "chart-secret",
        &labs_scope,
        &base(&ctx),
        "pat-a",
    );
    let token = labs["access_token"].as_str().expect("token");
    assert_eq!(
        get_as(&ctx, token, &format!("Observation/{}", data.a_lab))
            .await
            .status(),
        200
    );
    let why = refused(&ctx, token, &format!("Observation/{}", data.a_vital), 403).await;
    assert!(why.contains("outside"), "{why}");
    refused(&ctx, token, &format!("Observation/{}", data.b_lab), 403).await;
    let found =
        bundle_ids(get_as(&ctx, token, &format!("Observation?patient={}", data.a)).await).await;
    assert!(found.contains(&format!("Observation/{}", data.a_lab)));
    assert!(
        !found.contains(&format!("Observation/{}", data.a_vital)),
        "{found:?}"
    );
    // No scope for Patient at all.
    refused(&ctx, token, &format!("Patient/{}", data.a), 403).await;

    let v1 = idp.login(
        "chart-app",
        "chart-secret",
        "openid launch/patient patient/*.read",
        &base(&ctx),
        "pat-a",
    );
    let token = v1["access_token"].as_str().expect("token");
    assert_eq!(
        get_as(&ctx, token, &format!("Observation/{}", data.a_vital))
            .await
            .status(),
        200
    );
    refused(&ctx, token, &format!("Patient/{}", data.b), 403).await;
}

#[tokio::test]
async fn identity_provider_tokens_are_checked_for_audience_expiry_and_forgery() {
    let ctx = ctx().await;
    let other = common::ctx().await;
    let idp = Idp::start(&idp_config(&[base(&ctx), base(&other)]));
    trust(&ctx, &idp);
    let practitioner = ctx.create(&json!({"resourceType": "Practitioner"})).await;
    let path = format!("Practitioner/{}", practitioner["id"].as_str().expect("id"));

    // A good user/ token (fhirUser mapped) works.
    let good = idp
        .client_token("short-lived", "s", "user/*.rs", &base(&ctx))
        .await;
    let good = good["access_token"].as_str().expect("token").to_owned();
    assert_eq!(get_as(&ctx, &good, &path).await.status(), 200);

    // Issued for another tenant's base: wrong aud.
    let elsewhere = idp
        .client_token("short-lived", "s", "user/*.rs", &base(&other))
        .await;
    let r = get_as(
        &ctx,
        elsewhere["access_token"].as_str().expect("token"),
        &path,
    )
    .await;
    let outcome = expect_outcome(r, 401).await;
    assert!(diagnostics(&outcome).contains("not valid"), "{outcome}");
    assert!(
        r_www_authenticate_mentions_invalid_token(
            &ctx,
            elsewhere["access_token"].as_str().expect("t"),
            &path
        )
        .await
    );

    // Forged: the provider's claims re-signed with alg none, and with HS256 keyed by the
    // provider's public key.
    let claims: Value = common::jwt_part(&good, 1);
    let forge_key = ClientKey::generate("RS256");
    let none = forge_key.sign(&claims, &["--alg", "none"]);
    let why = refused(&ctx, &none, &path, 401).await;
    assert!(why.contains("none"), "{why}");
    let pem_file = common::smart::scratch().join("idp.pem");
    std::fs::write(
        &pem_file,
        node(
            "jose.mjs",
            &["pem", "--jwks", &format!("{}/jwks", idp.issuer)],
        ),
    )
    .expect("pem");
    let hs = forge_key.sign(
        &claims,
        &[
            "--alg",
            "HS256",
            "--hmac-secret-file",
            &pem_file.to_string_lossy(),
        ],
    );
    let why = refused(&ctx, &hs, &path, 401).await;
    assert!(why.contains("HS256"), "{why}");
    // Signed by a key the provider never published, under the provider's name.
    let foreign = forge_key.sign(&claims, &[]);
    refused(&ctx, &foreign, &path, 401).await;

    // Expired: a one-second token, past the test server's two-second leeway.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let why = refused(&ctx, &good, &path, 401).await;
    assert!(why.contains("expired"), "{why}");
}

async fn r_www_authenticate_mentions_invalid_token(ctx: &Ctx, token: &str, path: &str) -> bool {
    let r = get_as(ctx, token, path).await;
    r.headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer") && v.contains("invalid_token"))
}

#[tokio::test]
async fn a_client_registered_for_a_group_sees_its_members_only() {
    let ctx = ctx().await;
    let a = ctx.create(&json!({"resourceType": "Patient"})).await;
    let b = ctx.create(&json!({"resourceType": "Patient"})).await;
    let (a, b) = (a["id"].as_str().expect("id"), b["id"].as_str().expect("id"));
    let (a_lab, _) = seed_observations(&ctx, a).await;
    let (b_lab, _) = seed_observations(&ctx, b).await;
    let group = ctx
        .create(
            &json!({"resourceType": "Group", "type": "person", "actual": true,
                        "member": [{"entity": {"reference": format!("Patient/{a}")}}]}),
        )
        .await;
    let key = ClientKey::generate("ES384");
    let out = hearth(
        &[
            "client",
            "register",
            "--tenant",
            ctx.tenant.as_str(),
            "--client-id",
            "panel",
            "--jwks-file",
            &key.jwks_file().to_string_lossy(),
            "--scopes",
            "system/*.rs",
            "--patient-group",
            group["id"].as_str().expect("id"),
        ],
        &[],
    );
    assert!(out.contains("registered"), "{out}");
    let token = backend_access_token(&ctx, "panel", &key, "system/*.rs").await;
    assert_eq!(
        get_as(&ctx, &token, &format!("Patient/{a}")).await.status(),
        200
    );
    assert_eq!(
        get_as(&ctx, &token, &format!("Observation/{a_lab}"))
            .await
            .status(),
        200
    );
    refused(&ctx, &token, &format!("Patient/{b}"), 403).await;
    refused(&ctx, &token, &format!("Observation/{b_lab}"), 403).await;
    let found = bundle_ids(get_as(&ctx, &token, &format!("Observation?patient={b}")).await).await;
    assert!(found.is_empty(), "{found:?}");
    let patients = bundle_ids(get_as(&ctx, &token, "Patient").await).await;
    assert_eq!(patients, vec![format!("Patient/{a}")]);
}

#[tokio::test]
async fn a_patient_app_writes_only_into_its_patients_record() {
    let ctx = ctx().await;
    let data = two_patients(&ctx).await;
    let mut config = idp_config(&[base(&ctx)]);
    config["accounts"] = json!({"pat-a": {"patient": data.a}});
    let idp = Idp::start(&config);
    trust(&ctx, &idp);
    let login = idp.login(
        "chart-app",
        "chart-secret",
        "openid launch/patient patient/Observation.cu",
        &base(&ctx),
        "pat-a",
    );
    let token = login["access_token"].as_str().expect("token");
    let obs = |patient: &str| {
        json!({"resourceType": "Observation", "status": "final",
               "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
               "subject": {"reference": format!("Patient/{patient}")}})
    };
    let post = |body: Value| {
        ctx.client
            .post(ctx.url("Observation"))
            .bearer_auth(token)
            .header("content-type", "application/fhir+json")
            .body(body.to_string())
            .send()
    };
    assert_eq!(post(obs(&data.a)).await.expect("post").status(), 201);
    let refused = post(obs(&data.b)).await.expect("post");
    expect_outcome(refused, 403).await;
    // Nor may it rewrite the other patient's lab into its own record.
    let mut moved = obs(&data.a);
    moved["id"] = json!(data.b_lab);
    let r = ctx
        .client
        .put(ctx.url(&format!("Observation/{}", data.b_lab)))
        .bearer_auth(token)
        .header("content-type", "application/fhir+json")
        .body(moved.to_string())
        .send()
        .await
        .expect("put");
    expect_outcome(r, 403).await;
    let b_obs =
        bundle_ids(get_as(&ctx, &ctx.token, &format!("Observation?patient={}", data.b)).await)
            .await;
    assert_eq!(
        b_obs.len(),
        2,
        "the other patient's record is unchanged: {b_obs:?}"
    );
}
