//! The SMART app's test parts: the EHR peer (`ehr.mjs`: oidc-provider + a FHIR API in
//! front of a second Hearth tenant), the headless browser (`browser.mjs`: playwright-core +
//! Debian chromium), synthetic chart data, and a small HTTP driver for launches that keeps
//! Hearth's cookies by hand (they are `Secure`; a cookie store would not send them over
//! loopback http) and the EHR's in a cookie store.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use hearth::store::EhrRegistrationRow;
use serde_json::{Value, json};

use super::Ctx;
use super::smart::scratch;

fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/smart")
}

/// A running `ehr.mjs`, stopped on drop.
pub struct Ehr {
    child: Child,
    pub issuer: String,
    pub fhir_base: String,
}

impl Ehr {
    pub fn start(config: &Value) -> Ehr {
        let path = scratch().join("ehr.json");
        std::fs::write(&path, config.to_string()).expect("write ehr config");
        let mut child = Command::new("node")
            .arg(peers_dir().join("ehr.mjs"))
            .arg(&path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start ehr.mjs (scripts/peers.sh installs it)");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("READY line");
        let ready: Value = serde_json::from_str(
            line.trim()
                .strip_prefix("READY ")
                .unwrap_or_else(|| panic!("ehr.mjs did not start: {line:?}")),
        )
        .expect("READY json");
        Ehr {
            child,
            issuer: ready["issuer"].as_str().expect("issuer").to_owned(),
            fhir_base: ready["fhir_base"].as_str().expect("fhir_base").to_owned(),
        }
    }

    pub async fn log(&self) -> Value {
        reqwest::get(format!("{}/_peer/log", self.issuer))
            .await
            .expect("peer log")
            .json()
            .await
            .expect("peer log json")
    }

    pub async fn set_faults(&self, faults: Value) {
        let status = reqwest::Client::new()
            .post(format!("{}/_peer/faults", self.issuer))
            .json(&faults)
            .send()
            .await
            .expect("set faults")
            .status();
        assert!(status.is_success());
    }
}

impl Drop for Ehr {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A payer's PAS endpoint stand-in (`tests/peers/payer/payer.py`), stopped on drop.
pub struct Payer {
    child: Child,
    /// Its FHIR base (`Claim/$submit` below it).
    pub base: String,
}

impl Payer {
    pub fn start() -> Payer {
        let python = std::env::var("HEARTH_PEER_PYTHON").unwrap_or_else(|_| "python3".into());
        let mut child = Command::new(python)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/payer/payer.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start payer.py");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("READY line");
        let base = line
            .trim()
            .strip_prefix("READY ")
            .unwrap_or_else(|| panic!("payer.py did not start: {line:?}"))
            .to_owned();
        Payer { child, base }
    }

    /// Every request it received.
    pub async fn log(&self) -> Value {
        let origin = self.base.trim_end_matches("/fhir");
        reqwest::get(format!("{origin}/_log"))
            .await
            .expect("payer log")
            .json()
            .await
            .expect("payer log json")
    }
}

impl Drop for Payer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `seed_chart` wrote in the EHR's tenant.
pub struct Chart {
    pub patient: String,
    pub other_patient: String,
    pub practitioner: String,
    pub encounter: String,
    pub note: String,
    pub labs: usize,
    /// A lab of the other patient.
    pub other_lab: String,
}

pub const PATIENT_FAMILY: &str = "Quillfeather";
pub const NOTE_TEXT: &str = "HPI: 58 y/o with type 2 diabetes. Assessment: HbA1c improved to 7.2%. Plan: continue metformin 1000 mg twice daily.";

/// Synthetic chart data in the EHR's tenant: a patient with encounters, problems, labs
/// (more than one page), vitals, a medication, an allergy, a note whose text is a Binary,
/// a care team; and a second patient with one lab.
pub async fn seed_chart(ehr: &Ctx, labs: usize) -> Chart {
    let practitioner = ehr
        .create(&json!({"resourceType": "Practitioner", "name": [{"family": "Smith", "given": ["Dana"]}]}))
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let patient_body = json!({
        "resourceType": "Patient",
        "identifier": [{"type": {"text": "MRN"}, "system": "urn:example:mrn", "value": "MRN-4471"}],
        "name": [{"use": "official", "family": PATIENT_FAMILY, "given": ["Avery"]}],
        "gender": "female", "birthDate": "1968-03-14"
    });
    let patient = ehr.create(&patient_body).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let other_patient = ehr
        .create(&json!({"resourceType": "Patient", "name": [{"family": "Otherperson"}], "gender": "male"}))
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let subject = json!({"reference": format!("Patient/{patient}")});
    let encounter = ehr
        .create(&json!({
            "resourceType": "Encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "type": [{"text": "Diabetes follow-up"}],
            "subject": subject,
            "participant": [{"individual": {"reference": format!("Practitioner/{practitioner}")}}],
            "period": {"start": "2026-10-01T09:00:00Z", "end": "2026-10-01T09:30:00Z"}
        }))
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    ehr.create(&json!({
        "resourceType": "Condition",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "problem-list-item"}]}],
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "E11.9", "display": "Type 2 diabetes mellitus without complications"}]},
        "subject": subject, "onsetDateTime": "2019-05-02"
    }))
    .await;
    for i in 0..labs {
        ehr.create(&json!({
            "resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4", "display": "Hemoglobin A1c"}]},
            "subject": subject,
            "effectiveDateTime": format!("2026-{:02}-{:02}", 1 + i % 12, 1 + i % 28),
            "valueQuantity": {"value": 7.0 + (i as f64) / 100.0, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}
        }))
        .await;
    }
    ehr.create(&json!({
        "resourceType": "Observation", "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
        "subject": subject, "effectiveDateTime": "2026-10-01T09:05:00Z",
        "valueQuantity": {"value": 72, "unit": "beats/minute", "system": "http://unitsofmeasure.org", "code": "/min"}
    }))
    .await;
    ehr.create(&json!({
        "resourceType": "MedicationRequest", "status": "active", "intent": "order",
        "medicationCodeableConcept": {"text": "Metformin 1000 mg tablet"},
        "subject": subject, "authoredOn": "2025-01-10",
        "dosageInstruction": [{"text": "1000 mg by mouth twice daily"}]
    }))
    .await;
    ehr.create(&json!({
        "resourceType": "AllergyIntolerance",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}]},
        "code": {"text": "Penicillin"}, "criticality": "high", "patient": subject
    }))
    .await;
    let binary = ehr
        .create(&json!({
            "resourceType": "Binary", "contentType": "text/plain",
            "data": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, NOTE_TEXT)
        }))
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let note = ehr
        .create(&json!({
            "resourceType": "DocumentReference", "status": "current",
            "type": {"coding": [{"system": "http://loinc.org", "code": "11506-3", "display": "Progress note"}]},
            "category": [{"coding": [{"system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category", "code": "clinical-note"}]}],
            "subject": subject, "date": "2026-10-01T09:30:00Z",
            "content": [{"attachment": {"contentType": "text/plain", "url": format!("Binary/{binary}"), "title": "Progress note"}}]
        }))
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    ehr.create(&json!({
        "resourceType": "CareTeam", "status": "active", "name": "Diabetes care team",
        "subject": subject,
        "participant": [{"member": {"reference": format!("Practitioner/{practitioner}")}}]
    }))
    .await;
    let other_lab = ehr
        .create(&json!({
            "resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7", "display": "Glucose"}]},
            "subject": {"reference": format!("Patient/{other_patient}")},
            "effectiveDateTime": "2026-09-01", "valueQuantity": {"value": 101, "unit": "mg/dL"}
        }))
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    Chart {
        patient,
        other_patient,
        practitioner,
        encounter,
        note,
        labs,
        other_lab,
    }
}

pub const LAUNCH_SCOPES: &str = "launch openid fhirUser offline_access patient/*.rs";
pub const STANDALONE_SCOPES: &str = "launch/patient openid fhirUser offline_access patient/*.rs";

/// An EHR peer in front of the `ehr` tenant, with a public and a confidential client for
/// Hearth, the account `dr-smith` (the chart's practitioner, as Epic's absolute URL) and
/// the launches `launch-a` (the patient) and `launch-b` (the other patient).
pub fn ehr_for(app: &Ctx, ehr: &Ctx, chart: &Chart, faults: Value) -> Ehr {
    let callback = format!("{}/app/callback", app.origin);
    let client_scope = "launch launch/patient openid fhirUser offline_access patient/*.rs";
    Ehr::start(&json!({
        "port": 0,
        "signing_alg": "RS256",
        "access_token_ttl": 3600,
        "upstream_fhir": format!("{}/fhir/{}", ehr.origin, ehr.tenant),
        "upstream_token": ehr.token,
        "clients": [
            {"client_id": "hearth-public", "token_endpoint_auth_method": "none",
             "redirect_uris": [callback], "grant_types": ["authorization_code", "refresh_token"],
             "response_types": ["code"], "scope": client_scope},
            {"client_id": "hearth-confidential", "token_endpoint_auth_method": "private_key_jwt",
             "token_endpoint_auth_signing_alg": "ES384",
             "jwks_uri": format!("{}/app/{}/jwks", app.origin, app.tenant),
             "redirect_uris": [callback], "grant_types": ["authorization_code", "refresh_token"],
             "response_types": ["code"], "scope": client_scope}
        ],
        "accounts": {"dr-smith": {"fhirUser": format!("{{fhir_base}}/Practitioner/{}", chart.practitioner), "name": "Dana Smith"}},
        "launches": {
            "launch-a": {"user": "dr-smith", "patient": chart.patient, "encounter": chart.encounter,
                         "need_patient_banner": true, "smart_style_url": "{issuer}/style.json"},
            "launch-b": {"user": "dr-smith", "patient": chart.other_patient, "need_patient_banner": false}
        },
        "standalone_patient": {"dr-smith": chart.patient},
        "faults": faults
    }))
}

/// Register the EHR with the app's tenant.
pub async fn register(
    app: &Ctx,
    ehr: &Ehr,
    client_id: &str,
    client_auth: &str,
    frame_ancestors: &[String],
) {
    app.store
        .put_ehr_registration(
            &app.tenant,
            &EhrRegistrationRow {
                id: "test-ehr".into(),
                name: "Test EHR".into(),
                iss: ehr.fhir_base.clone(),
                client_id: client_id.into(),
                client_auth: client_auth.into(),
                scopes: LAUNCH_SCOPES.into(),
                standalone_scopes: STANDALONE_SCOPES.into(),
                frame_ancestors: frame_ancestors.to_vec(),
            },
        )
        .await
        .expect("register the EHR");
}

/// A browser-like HTTP driver: no automatic redirects; Hearth's cookies by hand.
pub struct Driver {
    pub origin: String,
    pub hearth_cookies: HashMap<String, String>,
    pub set_cookie_headers: Vec<String>,
    ehr_client: reqwest::Client,
    hearth_client: reqwest::Client,
}

impl Driver {
    pub fn new(origin: &str) -> Driver {
        Driver {
            origin: origin.to_owned(),
            hearth_cookies: HashMap::new(),
            set_cookie_headers: Vec::new(),
            ehr_client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .cookie_store(true)
                .build()
                .expect("client"),
            hearth_client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
        }
    }

    /// A GET of Hearth (absolute URL or path) with its cookies; remembers Set-Cookie.
    pub async fn hearth_get(&mut self, url: &str) -> reqwest::Response {
        let url = if url.starts_with("http") {
            url.to_owned()
        } else {
            format!("{}{url}", self.origin)
        };
        let response = self
            .hearth_client
            .get(&url)
            .header("Cookie", self.cookie_header())
            .send()
            .await
            .expect("hearth GET");
        self.remember(&response);
        response
    }

    pub async fn hearth_post(&mut self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let response = self
            .hearth_client
            .post(format!("{}{path}", self.origin))
            .header("Cookie", self.cookie_header())
            .form(form)
            .send()
            .await
            .expect("hearth POST");
        self.remember(&response);
        response
    }

    fn cookie_header(&self) -> String {
        self.hearth_cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn remember(&mut self, response: &reqwest::Response) {
        for header in response.headers().get_all("set-cookie") {
            let text = header.to_str().unwrap_or_default().to_owned();
            let pair = text.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                let removed = value.is_empty() || text.contains("Max-Age=0");
                if removed {
                    self.hearth_cookies.remove(name.trim());
                } else {
                    self.hearth_cookies
                        .insert(name.trim().to_owned(), value.to_owned());
                }
            }
            self.set_cookie_headers.push(text);
        }
    }

    /// Start a launch at Hearth; the authorize URL it redirects to.
    pub async fn start_launch(&mut self, iss: &str, launch: Option<&str>) -> String {
        let mut url = reqwest::Url::parse(&format!(
            "{}/app/{}",
            self.origin,
            if launch.is_some() { "launch" } else { "start" }
        ))
        .expect("url");
        url.query_pairs_mut().append_pair("iss", iss);
        if let Some(launch) = launch {
            url.query_pairs_mut().append_pair("launch", launch);
        }
        let response = self.hearth_get(url.as_str()).await;
        assert_eq!(
            response.status(),
            303,
            "launch: {}",
            response.text().await.unwrap_or_default()
        );
        location(&response)
    }

    /// Follow the EHR's redirects from the authorize URL until they come back to Hearth:
    /// the callback URL (not yet requested).
    pub async fn authorize(&mut self, authorize_url: &str) -> String {
        let mut url = authorize_url.to_owned();
        for _ in 0..10 {
            if url.starts_with(&self.origin) {
                return url;
            }
            let response = self.ehr_client.get(&url).send().await.expect("EHR GET");
            assert!(
                response.status().is_redirection(),
                "the EHR answered {} at {url}",
                response.status()
            );
            let next = location(&response);
            url = if next.starts_with("http") {
                next
            } else {
                let base = reqwest::Url::parse(&url).expect("url");
                base.join(&next).expect("join").to_string()
            };
        }
        panic!("too many redirects from {authorize_url}");
    }

    /// A whole EHR launch: the response of the callback.
    pub async fn launch(&mut self, iss: &str, launch: &str) -> reqwest::Response {
        let authorize = self.start_launch(iss, Some(launch)).await;
        let callback = self.authorize(&authorize).await;
        self.hearth_get(&callback).await
    }
}

pub fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("Location header")
        .to_owned()
}

/// Run a browser scenario (see tests/peers/smart/README.md); its result.
pub fn browser(steps: Value) -> Value {
    let dir = scratch();
    let path = dir.join("scenario.json");
    std::fs::write(
        &path,
        json!({"steps": steps, "timeout_ms": 90000}).to_string(),
    )
    .expect("write scenario");
    let output = Command::new("node")
        .arg(peers_dir().join("browser.mjs"))
        .arg(&path)
        .output()
        .expect("run browser.mjs (scripts/peers.sh installs it)");
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "browser.mjs printed no result ({e}): {text} {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}
