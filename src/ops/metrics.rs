//! Prometheus metrics: request counts and latency by route pattern (never by raw path, which
//! carries ids) and status.

use actix_web::{HttpResponse, web};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

use crate::state::AppState;

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    /// HL7 v2 messages by listener, message type and acknowledgement code.
    pub hl7_messages: IntCounterVec,
    /// Time from a complete frame to its acknowledgement being ready.
    pub hl7_ack_latency: HistogramVec,
    /// Refused authentications: bearer tokens at the FHIR API (`endpoint="api"`) and client
    /// assertions at the token, introspection and revocation endpoints, by reason.
    pub auth_failures: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("hearth".into()), None)?;
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency").buckets(
                vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ],
            ),
            &["route", "method", "status"],
        )?;
        let hl7_messages = IntCounterVec::new(
            Opts::new(
                "hl7_messages_total",
                "HL7 v2 messages by listener, type and acknowledgement",
            ),
            &["listener", "type", "ack"],
        )?;
        let hl7_ack_latency = HistogramVec::new(
            HistogramOpts::new("hl7_ack_seconds", "HL7 v2 frame to acknowledgement").buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["listener"],
        )?;
        let auth_failures = IntCounterVec::new(
            Opts::new(
                "auth_failures_total",
                "Refused authentications by endpoint and reason",
            ),
            &["endpoint", "reason"],
        )?;
        registry.register(Box::new(auth_failures.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(hl7_messages.clone()))?;
        registry.register(Box::new(hl7_ack_latency.clone()))?;
        Ok(Metrics {
            registry,
            requests,
            latency,
            hl7_messages,
            hl7_ack_latency,
            auth_failures,
        })
    }

    /// Count a refused bearer token at the FHIR API.
    pub fn auth_failure(&self, reason: &str) {
        self.auth_failures.with_label_values(&["api", reason]).inc();
    }

    pub fn observe(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let status = status.to_string();
        let labels = [route, method, status.as_str()];
        self.requests.with_label_values(&labels).inc();
        self.latency.with_label_values(&labels).observe(seconds);
    }

    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        Ok(String::from_utf8_lossy(&buffer).into_owned())
    }
}

pub async fn metrics_endpoint(state: web::Data<AppState>) -> HttpResponse {
    match state.metrics.render() {
        Ok(text) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4")
            .body(text),
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}
