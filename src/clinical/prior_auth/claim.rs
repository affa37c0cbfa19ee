//! The PAS Claim draft: a `collection` Bundle whose first entry is a `Claim` with
//! `use = preauthorization` (patient, insurer and coverage, provider, diagnoses, the
//! requested item) and `supportingInfo` pointing at the approved QuestionnaireResponse and
//! every evidence resource; every referenced resource follows once.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::response::citations_of;
use crate::clinical::RecordEntry;

/// What the claim is built from: the approved response and the resources it may include
/// (read under the same decision as the extraction).
pub struct ClaimParts<'a> {
    pub claim_id: &'a str,
    pub response: &'a Value,
    pub order: &'a RecordEntry,
    /// Patient, Coverage, payer Organization, requester, evidence resources.
    pub resources: &'a [RecordEntry],
    pub created: &'a str,
    pub base: &'a str,
}

fn find<'a>(resources: &'a [RecordEntry], reference: &str) -> Option<&'a RecordEntry> {
    resources.iter().find(|e| e.reference() == reference)
}

pub fn pas_bundle(parts: &ClaimParts<'_>) -> Value {
    let order = &parts.order.resource;
    let patient = parts.response["subject"]["reference"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let coverage = parts
        .resources
        .iter()
        .find(|e| e.resource_type == "Coverage" && e.resource["status"] == "active");
    let insurer = coverage
        .and_then(|c| c.resource["payor"][0]["reference"].as_str())
        .map(str::to_owned);
    let provider = order["requester"]["reference"].as_str().map(str::to_owned);
    let (item_code, claim_type) = if parts.order.resource_type == "MedicationRequest" {
        (order["medicationCodeableConcept"].clone(), "pharmacy")
    } else {
        (order["code"].clone(), "professional")
    };

    // Evidence: every resource an answer cites, in order of first citation.
    let mut evidence: Vec<String> = Vec::new();
    for item in parts.response["item"].as_array().into_iter().flatten() {
        for c in citations_of(item) {
            if !evidence.contains(&c.reference) && c.reference != parts.order.reference() {
                evidence.push(c.reference);
            }
        }
    }
    // Diagnoses: the cited conditions, else the order's reasons.
    let mut diagnoses: Vec<Value> = evidence
        .iter()
        .filter_map(|r| find(parts.resources, r))
        .filter(|e| e.resource_type == "Condition")
        .map(|e| e.resource["code"].clone())
        .collect();
    if diagnoses.is_empty() {
        diagnoses = order["reasonCode"].as_array().cloned().unwrap_or_default();
    }
    let category = |code: &str| json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claiminformationcategory", "code": code}]});
    let response_ref = format!(
        "QuestionnaireResponse/{}",
        parts.response["id"].as_str().unwrap_or_default()
    );
    let mut supporting = vec![json!({
        "sequence": 1,
        "category": category("attachment"),
        "valueReference": {"reference": response_ref},
    })];
    for (i, r) in evidence.iter().enumerate() {
        supporting.push(json!({"sequence": i + 2, "category": category("info"), "valueReference": {"reference": r}}));
    }
    let mut claim = json!({
        "resourceType": "Claim",
        "id": parts.claim_id,
        "status": "active",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": claim_type}]},
        "use": "preauthorization",
        "patient": {"reference": patient},
        "created": parts.created,
        "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal"}]},
        "diagnosis": diagnoses.iter().enumerate().map(|(i, d)| json!({"sequence": i + 1, "diagnosisCodeableConcept": d})).collect::<Vec<_>>(),
        "supportingInfo": supporting,
        "item": [{
            "sequence": 1,
            "productOrService": item_code,
            "quantity": {"value": order["quantityQuantity"]["value"].as_f64().or_else(|| order["dispenseRequest"]["quantity"]["value"].as_f64()).unwrap_or(1.0)},
        }],
    });
    if let Some(day) = order["occurrenceDateTime"]
        .as_str()
        .or_else(|| order["authoredOn"].as_str())
    {
        claim["item"][0]["servicedDate"] = json!(day.get(..10).unwrap_or(day));
    }
    if let Some(insurer) = &insurer {
        claim["insurer"] = json!({"reference": insurer});
    }
    if let Some(provider) = &provider {
        claim["provider"] = json!({"reference": provider});
    }
    if let Some(c) = coverage {
        claim["insurance"] =
            json!([{"sequence": 1, "focal": true, "coverage": {"reference": c.reference()}}]);
    }

    // Every referenced resource once, the Claim first.
    let mut entries = vec![entry(parts.base, "Claim", parts.claim_id, &claim)];
    let id = parts.response["id"].as_str().unwrap_or_default();
    entries.push(entry(
        parts.base,
        "QuestionnaireResponse",
        id,
        parts.response,
    ));
    let mut included: BTreeSet<String> = BTreeSet::from([response_ref]);
    let mut include = |reference: &str, entries: &mut Vec<Value>| {
        if included.insert(reference.to_owned())
            && let Some(e) = find(parts.resources, reference)
                .or_else(|| (parts.order.reference() == reference).then_some(parts.order))
        {
            entries.push(entry(parts.base, &e.resource_type, &e.id, &e.resource));
        }
    };
    for reference in [
        Some(patient.as_str()),
        insurer.as_deref(),
        provider.as_deref(),
    ]
    .into_iter()
    .flatten()
    {
        include(reference, &mut entries);
    }
    if let Some(c) = coverage {
        include(&c.reference(), &mut entries);
    }
    include(&parts.order.reference(), &mut entries);
    for r in &evidence {
        include(r, &mut entries);
    }
    json!({
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": parts.created,
        "entry": entries,
    })
}

fn entry(base: &str, resource_type: &str, id: &str, resource: &Value) -> Value {
    json!({"fullUrl": format!("{base}/{resource_type}/{id}"), "resource": resource})
}
