//! A stored event as an R4 AuditEvent, in the shapes of IHE Basic Audit Log Patterns
//! (BALP): RESTful events are `type` audit-event-type#rest with the restful-interaction as
//! `subtype`; other events with patients are DICOM 110110 "Patient Record" and the rest a
//! Hearth code, in both cases with the Hearth event code as `subtype`. Agents: the user
//! (information recipient, requestor), the client (DICOM Source Role ID, with the network
//! address) and this server (Destination Role ID). Entities: each patient (Person /
//! Patient), each resource (System Object / Domain Resource), the query (base64, role
//! Query), the request (BALP XrequestId, with the request id and user agent in `detail`) and
//! the access decision's reasons.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::SecondsFormat;
use serde_json::{Map, Value, json};

use super::StoredEvent;

/// Hearth's own codes: event types that are not FHIR REST interactions.
pub const HEARTH_EVENT_SYSTEM: &str = "urn:hearth:audit-event-type";
/// Hearth's own entity types (the access decision).
pub const HEARTH_ENTITY_SYSTEM: &str = "urn:hearth:audit-entity-type";

const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const AUDIT_EVENT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-event-type";
const RESTFUL_INTERACTION: &str = "http://hl7.org/fhir/restful-interaction";
const ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
const OBJECT_ROLE: &str = "http://terminology.hl7.org/CodeSystem/object-role";
const PARTICIPATION: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
const PURPOSE_OF_USE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
const SOURCE_TYPE: &str = "http://terminology.hl7.org/CodeSystem/security-source-type";
const BALP_ENTITY_TYPE: &str = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType";
const NETWORK_TYPE_IP: &str = "2";
const NETWORK_TYPE_URI: &str = "5";
/// R5's AuditEvent.severity carried into R4 (cross-version extension).
const SEVERITY_EXTENSION: &str =
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-AuditEvent.severity";

/// FHIR RESTful interactions (the restful-interaction code system) among Hearth's events.
const REST_EVENTS: &[&str] = &[
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history",
    "history-instance",
    "history-type",
    "history-system",
    "create",
    "search",
    "search-type",
    "search-system",
    "capabilities",
    "transaction",
    "batch",
    "operation",
];

fn coding(system: &str, code: &str, display: Option<&str>) -> Value {
    let mut c = Map::new();
    c.insert("system".into(), system.into());
    c.insert("code".into(), code.into());
    if let Some(d) = display {
        c.insert("display".into(), d.into());
    }
    Value::Object(c)
}

fn hearth_display(event: &str) -> Option<&'static str> {
    Some(match event {
        "hl7v2-ingest" => "HL7 v2 message ingested",
        "break-glass" => "Break-glass access",
        "auth-failure" => "Authentication failure",
        "access-denied" => "Access denied",
        "export" => "Bulk export",
        "summary" => "Clinical summary",
        "prior-auth" => "Prior-authorization extraction",
        _ => return None,
    })
}

/// FHIR strings are never empty: an empty stored value is rendered as absent.
fn present(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.trim().is_empty())
}

fn is_valid_ip(text: &str) -> bool {
    text.parse::<std::net::IpAddr>().is_ok()
}

/// The AuditEvent of `e`. `fhir_base` is the tenant's FHIR base URL (no trailing slash):
/// this server as the observer and the destination.
pub fn render(e: &StoredEvent, fhir_base: &str) -> Value {
    let rest = REST_EVENTS.contains(&e.event.as_str());
    let (event_type, subtype) = if rest {
        (
            coding(AUDIT_EVENT_TYPE, "rest", Some("Restful Operation")),
            coding(RESTFUL_INTERACTION, &e.event, Some(&e.event)),
        )
    } else {
        let sub = coding(HEARTH_EVENT_SYSTEM, &e.event, hearth_display(&e.event));
        let ty = if e.patients.is_empty() {
            sub.clone()
        } else {
            coding(DCM, "110110", Some("Patient Record"))
        };
        (ty, sub)
    };
    let mut ae = Map::new();
    ae.insert("resourceType".into(), "AuditEvent".into());
    ae.insert("id".into(), e.id.to_string().into());
    let recorded = e.recorded.to_rfc3339_opts(SecondsFormat::Micros, true);
    ae.insert("meta".into(), json!({ "lastUpdated": recorded }));
    let severity = if e.high_severity {
        "alert"
    } else if e.outcome != 0 {
        "warning"
    } else {
        "informational"
    };
    ae.insert(
        "extension".into(),
        json!([{ "url": SEVERITY_EXTENSION, "valueCode": severity }]),
    );
    ae.insert("type".into(), event_type);
    ae.insert("subtype".into(), json!([subtype]));
    ae.insert("action".into(), e.action.clone().into());
    ae.insert("recorded".into(), recorded.into());
    ae.insert("outcome".into(), e.outcome.to_string().into());
    if let Some(text) = present(&e.outcome_text) {
        ae.insert("outcomeDesc".into(), text.into());
    }
    if let Some(purpose) = present(&e.purpose) {
        ae.insert(
            "purposeOfEvent".into(),
            json!([{ "coding": [coding(PURPOSE_OF_USE, purpose, None)] }]),
        );
    }
    ae.insert("agent".into(), Value::Array(agents(e, fhir_base)));
    ae.insert(
        "source".into(),
        json!({
            "site": e.tenant_id,
            "observer": { "display": format!("Hearth {fhir_base}") },
            "type": [coding(SOURCE_TYPE, "4", Some("Application Server"))],
        }),
    );
    let entities = entities(e);
    if !entities.is_empty() {
        ae.insert("entity".into(), Value::Array(entities));
    }
    Value::Object(ae)
}

fn network(address: &Option<String>) -> Option<Value> {
    let address = present(address)?;
    let kind = if is_valid_ip(address) {
        NETWORK_TYPE_IP
    } else {
        NETWORK_TYPE_URI
    };
    Some(json!({ "address": address, "type": kind }))
}

fn agents(e: &StoredEvent, fhir_base: &str) -> Vec<Value> {
    let mut agents = Vec::new();
    // The token's subject under its issuer ("hearth" is this tenant's own token service).
    let issuer = match present(&e.agent_issuer) {
        Some("hearth") | None => fhir_base,
        Some(iss) => iss,
    };
    let subject_identifier =
        present(&e.agent_subject).map(|sub| json!({ "system": issuer, "value": sub }));
    let client_who = present(&e.agent_client_id).map(
        |client| json!({ "identifier": { "system": issuer, "value": client }, "display": client }),
    );
    let has_user = present(&e.agent_who).is_some();
    if let Some(who) = present(&e.agent_who) {
        let mut user = Map::new();
        user.insert(
            "type".into(),
            json!({ "coding": [coding(PARTICIPATION, "IRCP", Some("information recipient"))] }),
        );
        let mut reference = Map::new();
        reference.insert("reference".into(), who.into());
        if let Some(id) = &subject_identifier {
            reference.insert("identifier".into(), id.clone());
        }
        user.insert("who".into(), Value::Object(reference));
        user.insert("requestor".into(), true.into());
        if let Some(purpose) = present(&e.purpose) {
            user.insert(
                "purposeOfUse".into(),
                json!([{ "coding": [coding(PURPOSE_OF_USE, purpose, None)] }]),
            );
        }
        agents.push(Value::Object(user));
    }
    // The client (BALP: Source Role ID): the requestor itself when no user is named.
    let mut client = Map::new();
    client.insert(
        "type".into(),
        json!({ "coding": [coding(DCM, "110153", Some("Source Role ID"))] }),
    );
    let who = match (&client_who, &subject_identifier) {
        (Some(c), _) => Some(c.clone()),
        (None, Some(id)) if !has_user => Some(json!({ "identifier": id })),
        _ => None,
    };
    if let Some(who) = who {
        client.insert("who".into(), who);
    }
    client.insert("requestor".into(), (!has_user).into());
    if let Some(net) = network(&e.source_ip) {
        client.insert("network".into(), net);
    }
    agents.push(Value::Object(client));
    if let Some(principal) = present(&e.agent_on_behalf_of) {
        agents.push(json!({
            "type": { "coding": [coding(PARTICIPATION, "RESP", Some("responsible party"))] },
            "who": { "reference": principal },
            "requestor": false,
        }));
    }
    // This server (BALP: Destination Role ID).
    agents.push(json!({
        "type": { "coding": [coding(DCM, "110152", Some("Destination Role ID"))] },
        "who": { "display": fhir_base },
        "requestor": false,
        "network": { "address": fhir_base, "type": NETWORK_TYPE_URI },
    }));
    agents
}

fn entities(e: &StoredEvent) -> Vec<Value> {
    let mut out = Vec::new();
    let nonempty = |v: &&String| !v.trim().is_empty();
    for patient in e.patients.iter().filter(nonempty) {
        out.push(json!({
            "what": { "reference": format!("Patient/{patient}") },
            "type": coding(ENTITY_TYPE, "1", Some("Person")),
            "role": coding(OBJECT_ROLE, "1", Some("Patient")),
        }));
    }
    for entity in e.entities.iter().filter(nonempty) {
        // A patient already listed as such is not listed again as a resource.
        if let Some(id) = entity.strip_prefix("Patient/")
            && e.patients.iter().any(|p| p == id)
        {
            continue;
        }
        out.push(json!({
            "what": { "reference": entity },
            "type": coding(ENTITY_TYPE, "2", Some("System Object")),
            "role": coding(OBJECT_ROLE, "4", Some("Domain Resource")),
        }));
    }
    if let Some(query) = present(&e.query) {
        out.push(json!({
            "type": coding(ENTITY_TYPE, "2", Some("System Object")),
            "role": coding(OBJECT_ROLE, "24", Some("Query")),
            "query": STANDARD.encode(query.as_bytes()),
        }));
    }
    let (request_id, user_agent) = (present(&e.request_id), present(&e.user_agent));
    if request_id.is_some() || user_agent.is_some() {
        let mut request = Map::new();
        if let Some(id) = request_id {
            request.insert("what".into(), json!({ "identifier": { "value": id } }));
        }
        request.insert(
            "type".into(),
            coding(
                BALP_ENTITY_TYPE,
                "XrequestId",
                Some("transport specific unique identifier where http X-Request-Id is used"),
            ),
        );
        let mut detail = Vec::new();
        if let Some(id) = request_id {
            detail.push(json!({ "type": "X-Request-Id", "valueString": id }));
        }
        if let Some(agent) = user_agent {
            detail.push(json!({ "type": "User-Agent", "valueString": agent }));
        }
        request.insert("detail".into(), Value::Array(detail));
        out.push(Value::Object(request));
    }
    let reasons: Vec<Value> = e
        .reasons
        .iter()
        .filter(nonempty)
        .map(|r| json!({ "type": "reason", "valueString": r }))
        .collect();
    if !reasons.is_empty() {
        out.push(json!({
            "type": coding(HEARTH_ENTITY_SYSTEM, "access-decision", Some("Access decision")),
            "description": "the reasons of the access decision",
            "detail": reasons,
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use uuid::Uuid;

    fn event() -> StoredEvent {
        StoredEvent {
            seq: 7,
            tenant_id: "t1".into(),
            id: Uuid::from_u128(7),
            recorded: DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("time"),
            event: "search-type".into(),
            action: "E".into(),
            outcome: 0,
            outcome_text: None,
            purpose: Some("TREAT".into()),
            agent_who: Some("Practitioner/p1".into()),
            agent_client_id: Some("app".into()),
            agent_subject: Some("u1".into()),
            agent_issuer: Some("https://idp.example".into()),
            agent_on_behalf_of: Some("Practitioner/p2".into()),
            source_ip: Some("10.1.2.3".into()),
            user_agent: Some("curl/8".into()),
            request_id: Some("req-1".into()),
            patients: vec!["pat1".into()],
            entities: vec!["Patient/pat1".into(), "Observation/o1/_history/2".into()],
            query: Some("patient=pat1&code=1234-5".into()),
            reasons: vec!["care-team".into()],
            high_severity: true,
        }
    }

    #[test]
    fn renders_balp_shapes_that_pass_the_r4_checks() {
        let ae = render(&event(), "http://h/fhir/t1");
        assert_eq!(ae["type"]["code"], "rest");
        assert_eq!(ae["subtype"][0]["code"], "search-type");
        assert_eq!(ae["recorded"], "2023-11-14T22:13:20.123456Z");
        assert_eq!(ae["agent"][0]["requestor"], true);
        assert_eq!(ae["agent"][0]["who"]["reference"], "Practitioner/p1");
        assert_eq!(ae["agent"][1]["network"]["address"], "10.1.2.3");
        assert_eq!(ae["agent"][1]["requestor"], false);
        let entities = ae["entity"].as_array().expect("entities");
        assert_eq!(entities[0]["what"]["reference"], "Patient/pat1");
        assert_eq!(entities[0]["role"]["code"], "1");
        assert_eq!(
            entities[1]["what"]["reference"],
            "Observation/o1/_history/2"
        );
        assert_eq!(
            entities[2]["query"],
            STANDARD.encode("patient=pat1&code=1234-5")
        );
        crate::resource::check(ae).expect("a valid R4 AuditEvent");
    }

    #[test]
    fn unauthenticated_and_non_rest_events_are_valid_too() {
        let mut e = event();
        e.event = "auth-failure".into();
        e.agent_who = None;
        e.agent_client_id = None;
        e.agent_subject = None;
        e.agent_issuer = None;
        e.agent_on_behalf_of = None;
        e.patients.clear();
        e.entities.clear();
        e.query = None;
        e.request_id = None;
        e.user_agent = None;
        e.reasons.clear();
        e.purpose = None;
        e.outcome = 4;
        e.outcome_text = Some("HTTP 401".into());
        let ae = render(&e, "http://h/fhir/t1");
        assert_eq!(ae["type"]["system"], HEARTH_EVENT_SYSTEM);
        assert_eq!(ae["agent"][0]["requestor"], true);
        assert!(ae.get("entity").is_none());
        crate::resource::check(ae).expect("a valid R4 AuditEvent");

        // Empty stored strings are absent in FHIR, not "".
        let mut e = event();
        e.query = Some(String::new());
        e.outcome_text = Some(String::new());
        e.user_agent = Some(String::new());
        e.reasons = vec![String::new()];
        e.patients = vec![String::new()];
        e.agent_who = Some(String::new());
        let ae = render(&e, "http://h/fhir/t1");
        crate::resource::check(ae).expect("a valid R4 AuditEvent");

        let mut e = event();
        e.event = "summary".into();
        let ae = render(&e, "http://h/fhir/t1");
        assert_eq!(ae["type"]["code"], "110110");
        crate::resource::check(ae).expect("a valid R4 AuditEvent");
    }
}
