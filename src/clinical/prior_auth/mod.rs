//! Prior-authorization drafts: the rule set chosen by the order's code
//! (`profiles/prior-auth/`), rule-based extraction over the record read under the payment
//! purpose (HPAYMT) and only the types the rule set asks for, a DTR-shaped
//! QuestionnaireResponse with cited answers, the reviewer's decisions on each answer, and
//! the PAS Claim Bundle of an approved packet. No HTTP and no SQL here: `fhir::populate`
//! and `app::prior_auth` serve it, `store::prior_auth` keeps packets.

pub mod claim;
pub mod evidence;
pub mod response;
pub mod rules;

use chrono::Utc;
use serde_json::Value;

use super::RecordEntry;
use super::summary::{Context, SummaryError, patient_record_of};
use crate::access::{OwnedSubject, Visibility};
use crate::auth::Interaction;
use crate::store::StoreError;
use evidence::{AnswerValue, Chart, fhir_day};
use response::{
    CONFIDENCE, NOT_FOUND, NOT_FOUND_TEXT, REVIEW, extension_text, origin_extension, set_extension,
};
use rules::{Code, RuleSet};

/// The purpose every prior-authorization read asserts.
pub const PAYMENT_PURPOSE: &str = "HPAYMT";

#[derive(Debug, thiserror::Error)]
pub enum PriorAuthError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("not permitted: {0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The order's code names no rule set (or not the one asked for).
    #[error("{0}")]
    NoRuleSet(String),
    #[error("{0}")]
    BadRequest(String),
    /// The packet is not in a state that allows this (approving an unreviewed draft).
    #[error("{0}")]
    Conflict(String),
}

impl From<SummaryError> for PriorAuthError {
    fn from(e: SummaryError) -> Self {
        match e {
            SummaryError::Store(e) => PriorAuthError::Store(e),
            SummaryError::Forbidden(r) => PriorAuthError::Forbidden(r),
            SummaryError::Index(e) => PriorAuthError::BadRequest(e.to_string()),
        }
    }
}

/// The caller, asserting the payment purpose (the policy narrows what it reads to the
/// types a prior authorization needs).
pub fn payment_subject(subject: &OwnedSubject) -> OwnedSubject {
    OwnedSubject {
        purpose: PAYMENT_PURPOSE.to_owned(),
        ..subject.clone()
    }
}

/// An extraction: its rule set, the order and the response.
pub struct Draft {
    pub rule_set: &'static RuleSet,
    pub order: RecordEntry,
    pub response: Value,
}

/// The order's codings (ServiceRequest.code, MedicationRequest.medicationCodeableConcept).
fn order_codes(order: &RecordEntry) -> Vec<Code> {
    let concept = if order.resource_type == "MedicationRequest" {
        &order.resource["medicationCodeableConcept"]
    } else {
        &order.resource["code"]
    };
    concept["coding"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            Some(Code {
                system: c["system"].as_str()?.to_owned(),
                code: c["code"].as_str()?.to_owned(),
                display: None,
            })
        })
        .collect()
}

/// Read one resource if `subject` may: `Ok(None)` when it does not exist, `Forbidden`
/// when it is outside the caller's access (decided in the reading statement).
pub async fn read_as(
    cx: &Context<'_>,
    subject: &OwnedSubject,
    resource_type: &str,
    id: &str,
) -> Result<Option<RecordEntry>, PriorAuthError> {
    let decision = subject
        .decide(resource_type, Interaction::Read)
        .map_err(|d| PriorAuthError::Forbidden(d.0))?;
    let filter = match &decision.visibility {
        Visibility::All => None,
        Visibility::Filtered(f) => Some(f),
    };
    let stored = match cx
        .store
        .read_visible(cx.tenant, resource_type, id, filter)
        .await
    {
        Ok((v, true)) => v,
        Ok((_, false)) => {
            return Err(PriorAuthError::Forbidden(format!(
                "{resource_type}/{id} is outside the caller's access"
            )));
        }
        Err(StoreError::NotFound | StoreError::Gone(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let resource = serde_json::from_str(stored.content.as_deref().unwrap_or("{}"))
        .map_err(|_| StoreError::Corrupt("resource content is not JSON"))?;
    Ok(Some(RecordEntry {
        resource_type: stored.resource_type,
        id: stored.id,
        version_id: stored.version_id,
        resource,
    }))
}

/// `Type/id` of an order Hearth can draft for.
pub fn parse_order_reference(reference: &str) -> Result<(&str, &str), PriorAuthError> {
    match reference.split_once('/') {
        Some((t @ ("ServiceRequest" | "MedicationRequest"), id))
            if crate::ehr::sync::is_fhir_id(id) =>
        {
            Ok((t, id))
        }
        _ => Err(PriorAuthError::BadRequest(
            "the order must be a ServiceRequest/{id} or MedicationRequest/{id} reference".into(),
        )),
    }
}

/// The rule set an order's code selects.
pub fn rule_set_for(order: &RecordEntry) -> Option<&'static RuleSet> {
    rules::for_order_codes(&order_codes(order))
}

/// Extract a draft for `order_reference` of `patient_id` (optionally with a given rule set,
/// which must then be the one the order's code selects).
pub async fn populate(
    cx: &Context<'_>,
    patient_id: &str,
    order_reference: &str,
    rule_set_id: Option<&str>,
) -> Result<Draft, PriorAuthError> {
    let subject = payment_subject(cx.subject);
    let paying = Context {
        subject: &subject,
        ..*cx
    };
    let (order_type, order_id) = parse_order_reference(order_reference)?;
    let order = read_as(&paying, &subject, order_type, order_id)
        .await?
        .ok_or_else(|| PriorAuthError::NotFound(format!("{order_reference} not found")))?;
    let subject_ref = order.resource["subject"]["reference"]
        .as_str()
        .unwrap_or_default();
    if subject_ref != format!("Patient/{patient_id}") {
        return Err(PriorAuthError::BadRequest(format!(
            "{order_reference} is not an order of Patient/{patient_id}"
        )));
    }
    let rule_set = rule_set_for(&order).ok_or_else(|| {
        PriorAuthError::NoRuleSet(format!(
            "no prior-authorization rule set covers the code of {order_reference}"
        ))
    })?;
    if let Some(asked) = rule_set_id
        && asked != rule_set.id
    {
        return Err(PriorAuthError::NoRuleSet(format!(
            "Questionnaire/{asked} does not cover the code of {order_reference} (it is {})",
            rule_set.id
        )));
    }
    let record = patient_record_of(&paying, patient_id, &rule_set.resource_types()).await?;
    let mut organizations = Vec::new();
    for coverage in record.iter().filter(|e| e.resource_type == "Coverage") {
        for payor in coverage.resource["payor"].as_array().into_iter().flatten() {
            if let Some(id) = payor["reference"]
                .as_str()
                .and_then(|r| r.strip_prefix("Organization/"))
                && let Ok(Some(org)) = read_as(&paying, &subject, "Organization", id).await
                && let Some(name) = org.resource["name"].as_str()
            {
                organizations.push((org.reference(), name.to_owned()));
            }
        }
    }
    let order_date =
        fhir_day(&order.resource["authoredOn"]).unwrap_or_else(|| Utc::now().date_naive());
    let chart = Chart {
        record: &record,
        order: &order,
        order_date,
        organizations: &organizations,
    };
    let mut items: Vec<Value> = Vec::new();
    for item in rule_set.items() {
        let rule = rule_set.evidence.get(&item.link_id);
        let mut finding = rule.and_then(|r| chart.evaluate(r));
        let mut method = "rule";
        // Free text the phrases missed: the tenant's model over the retrieved notes, its
        // answer verified against its sources (only where Bedrock is the tenant's engine).
        if finding.is_none()
            && let Some(rule) = rule.filter(|r| r.kind == rules::RuleKind::Note)
            && let Some(found) = from_model(&paying, patient_id, &item.text, rule).await?
        {
            finding = Some(found);
            method = "model";
        }
        items.push(response::item(&item, finding.as_ref(), method));
    }
    let response = response::questionnaire_response(
        &uuid::Uuid::new_v4().to_string(),
        rule_set,
        patient_id,
        order_reference,
        items,
        &Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    Ok(Draft {
        rule_set,
        order,
        response,
    })
}

/// A note item answered by the model: the first verified statement whose citations are
/// all notes (DocumentReference, DiagnosticReport).
async fn from_model(
    cx: &Context<'_>,
    patient_id: &str,
    question: &str,
    rule: &rules::Rule,
) -> Result<Option<evidence::Finding>, PriorAuthError> {
    let Some(answer) = super::summary::ask_model(cx, patient_id, question).await? else {
        return Ok(None);
    };
    if answer.not_found {
        return Ok(None);
    }
    let Some(statement) = answer.statements.into_iter().find(|s| {
        !s.citations.is_empty()
            && s.flagged.is_none()
            && s.citations.iter().all(|c| {
                c.reference.starts_with("DocumentReference/")
                    || c.reference.starts_with("DiagnosticReport/")
            })
    }) else {
        return Ok(None);
    };
    let value = match rule.answer {
        rules::AnswerKind::Exists => AnswerValue::Boolean(true),
        rules::AnswerKind::Excerpt => AnswerValue::Text(statement.text),
        _ => return Ok(None),
    };
    Ok(Some(evidence::Finding {
        value,
        citations: statement.citations,
        // A model's reading of free text, verified against its sources: the reviewer checks it.
        confidence: 0.6,
    }))
}

/// The patient's active coverages, read under the payment purpose.
pub async fn populate_coverage(
    cx: &Context<'_>,
    patient_id: &str,
) -> Result<Vec<RecordEntry>, PriorAuthError> {
    let subject = payment_subject(cx.subject);
    let paying = Context {
        subject: &subject,
        ..*cx
    };
    Ok(
        patient_record_of(&paying, patient_id, &["Patient", "Coverage"])
            .await?
            .into_iter()
            .filter(|e| e.resource_type == "Coverage" && e.resource["status"] == "active")
            .collect(),
    )
}

/// A reviewer's decision on one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Review {
    /// The draft answer stands.
    Accept,
    /// The reviewer's own answer replaces it (origin `override`, or `manual` where the
    /// record had none).
    Edit(String),
    /// The answer is withdrawn (the item goes unanswered).
    Reject,
}

impl Review {
    pub fn code(&self) -> &'static str {
        match self {
            Review::Accept => "accepted",
            Review::Edit(_) => "edited",
            Review::Reject => "rejected",
        }
    }
}

/// The reviewer's text as an answer of the item's type.
fn typed_answer(item_type: &str, text: &str) -> Result<AnswerValue, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("the answer is empty".into());
    }
    Ok(match item_type {
        "boolean" => match text.to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" => AnswerValue::Boolean(true),
            "false" | "no" | "n" => AnswerValue::Boolean(false),
            _ => return Err("answer yes or no".into()),
        },
        "integer" => AnswerValue::Integer(text.parse().map_err(|_| "answer a whole number")?),
        "decimal" | "quantity" => AnswerValue::Decimal {
            value: text.parse().map_err(|_| "answer a number")?,
            unit: None,
        },
        "date" => AnswerValue::Date(
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map_err(|_| "answer a date as YYYY-MM-DD")?,
        ),
        "choice" | "open-choice" | "coding" => match text.split_once('|') {
            Some((system, code)) if !system.is_empty() && !code.is_empty() => {
                AnswerValue::Coding(Code {
                    system: system.to_owned(),
                    code: code.to_owned(),
                    display: None,
                })
            }
            _ => AnswerValue::Text(text.to_owned()),
        },
        _ => AnswerValue::Text(text.to_owned()),
    })
}

/// Apply a reviewer's decision on the item `link_id` of a draft.
pub fn apply_review(
    response: &mut Value,
    link_id: &str,
    review: &Review,
    reviewer: &str,
    rule_set: &RuleSet,
) -> Result<(), PriorAuthError> {
    if response["status"] != "in-progress" {
        return Err(PriorAuthError::Conflict(
            "the packet is no longer a draft".into(),
        ));
    }
    let item_type = rule_set
        .items()
        .into_iter()
        .find(|i| i.link_id == link_id)
        .map(|i| i.item_type)
        .ok_or_else(|| PriorAuthError::BadRequest(format!("no item {link_id}")))?;
    let item_type = item_type.as_str();
    let item = response["item"]
        .as_array_mut()
        .and_then(|items| items.iter_mut().find(|i| i["linkId"] == link_id))
        .ok_or_else(|| PriorAuthError::BadRequest(format!("no item {link_id}")))?;
    match review {
        Review::Accept => {
            if item["answer"].as_array().is_none_or(|a| a.is_empty()) {
                return Err(PriorAuthError::BadRequest(
                    "there is no answer to accept: edit it, or reject it to leave it unanswered"
                        .into(),
                ));
            }
        }
        Review::Edit(text) => {
            let value = typed_answer(item_type, text).map_err(PriorAuthError::BadRequest)?;
            let had_answer = item["answer"].as_array().is_some_and(|a| !a.is_empty());
            item["answer"] = Value::Array(vec![response::answer_value(item_type, &value)]);
            let source = if had_answer { "override" } else { "manual" };
            set_extension(
                item,
                response::INFORMATION_ORIGIN,
                origin_extension(source, reviewer),
            );
            if let Some(list) = item["extension"].as_array_mut() {
                list.retain(|x| x["url"] != NOT_FOUND && x["url"] != CONFIDENCE);
            }
        }
        Review::Reject => {
            if let Some(o) = item.as_object_mut() {
                o.remove("answer");
            }
        }
    }
    set_extension(
        item,
        REVIEW,
        serde_json::json!({"url": REVIEW, "valueCode": review.code()}),
    );
    Ok(())
}

/// Why a draft cannot be approved yet, if it cannot: every answer needs the reviewer's
/// decision, and every required item an answer.
pub fn approval_blockers(response: &Value, rule_set: &RuleSet) -> Vec<String> {
    let mut blockers = Vec::new();
    for item in rule_set.items() {
        let node = response["item"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["linkId"] == item.link_id.as_str());
        let Some(node) = node else { continue };
        if extension_text(node, REVIEW) == Some("pending") {
            blockers.push(format!("{}: not reviewed", item.text));
        } else if item.required && node["answer"].as_array().is_none_or(|a| a.is_empty()) {
            blockers.push(format!("{}: required, {}", item.text, NOT_FOUND_TEXT));
        }
    }
    blockers
}

/// Every resource a response's answers cite.
pub fn cited_references(response: &Value) -> Vec<String> {
    let mut refs: Vec<String> = response["item"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(response::citations_of)
        .map(|c| c.reference)
        .collect();
    refs.sort();
    refs.dedup();
    refs
}
