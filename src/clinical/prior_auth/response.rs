//! The extraction as a QuestionnaireResponse shaped like Da Vinci DTR's: subject, the
//! questionnaire (canonical|version), the order as context, and per item its answer with
//! the evidence it cites, a confidence, its origin (auto, override, manual; with the
//! author) and its review state — or "not found in the record" and no answer.

use serde_json::{Value, json};

use super::evidence::{AnswerValue, Finding};
use super::rules::{Item, RuleSet};
use crate::clinical::Citation;

pub const DTR_PROFILE: &str =
    "http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/dtr-questionnaireresponse";
pub const QR_CONTEXT: &str = "http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/qr-context";
pub const INFORMATION_ORIGIN: &str =
    "http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/information-origin";
pub const EVIDENCE: &str = "http://hearth.health/fhir/StructureDefinition/evidence";
pub const CONFIDENCE: &str = "http://hearth.health/fhir/StructureDefinition/confidence";
pub const NOT_FOUND: &str = "http://hearth.health/fhir/StructureDefinition/not-found";
pub const REVIEW: &str = "http://hearth.health/fhir/StructureDefinition/review";
/// How an automatic answer was found: `rule` (a rule over the record) or `model` (Bedrock
/// over retrieved notes, verified).
pub const EXTRACTED_BY: &str = "http://hearth.health/fhir/StructureDefinition/extracted-by";
/// What an unanswered item says.
pub const NOT_FOUND_TEXT: &str = "not found in the record";
/// The author of automatic answers.
pub const HEARTH_DEVICE: &str = "Device/hearth-prior-auth";

/// An item's `answer[0]` value element for `value`, in the item's type.
pub fn answer_value(item_type: &str, value: &AnswerValue) -> Value {
    match value {
        AnswerValue::Boolean(b) => json!({"valueBoolean": b}),
        AnswerValue::Integer(i) => json!({"valueInteger": i}),
        AnswerValue::Decimal { value, unit } if item_type == "quantity" => {
            json!({"valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}})
        }
        AnswerValue::Decimal { value, .. } => json!({"valueDecimal": value}),
        AnswerValue::Date(d) => json!({"valueDate": d.format("%Y-%m-%d").to_string()}),
        AnswerValue::Coding(c) => {
            let mut coding = json!({"system": c.system, "code": c.code});
            if let Some(d) = &c.display {
                coding["display"] = json!(d);
            }
            json!({"valueCoding": coding})
        }
        AnswerValue::Text(t) => json!({"valueString": t}),
    }
}

pub fn evidence_extension(c: &Citation) -> Value {
    let mut parts = vec![json!({"url": "reference", "valueReference": {"reference": c.reference}})];
    if let Some(v) = c.version_id {
        parts.push(json!({"url": "versionId", "valueString": v.to_string()}));
    }
    if let Some(e) = &c.element {
        parts.push(json!({"url": "element", "valueString": e}));
    }
    if let Some((s, e)) = c.span {
        parts.push(json!({"url": "spanStart", "valueInteger": s}));
        parts.push(json!({"url": "spanEnd", "valueInteger": e}));
    }
    json!({"url": EVIDENCE, "extension": parts})
}

/// The citations an item's extensions hold.
pub fn citations_of(item: &Value) -> Vec<Citation> {
    item["answer"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|a| a["extension"].as_array().into_iter().flatten())
        .filter(|x| x["url"] == EVIDENCE)
        .filter_map(|x| {
            let part = |name: &str| {
                x["extension"]
                    .as_array()?
                    .iter()
                    .find(|p| p["url"] == name)
                    .cloned()
            };
            let reference = part("reference")?["valueReference"]["reference"]
                .as_str()?
                .to_owned();
            let span = match (part("spanStart"), part("spanEnd")) {
                (Some(s), Some(e)) => Some((
                    usize::try_from(s["valueInteger"].as_u64()?).ok()?,
                    usize::try_from(e["valueInteger"].as_u64()?).ok()?,
                )),
                _ => None,
            };
            Some(Citation {
                reference,
                version_id: part("versionId").and_then(|v| v["valueString"].as_str()?.parse().ok()),
                element: part("element").and_then(|v| v["valueString"].as_str().map(str::to_owned)),
                span,
            })
        })
        .collect()
}

pub fn origin_extension(source: &str, author: &str) -> Value {
    json!({"url": INFORMATION_ORIGIN, "extension": [
        {"url": "source", "valueCode": source},
        {"url": "author", "valueReference": {"reference": author}},
    ]})
}

/// One item as extracted (`method`: `rule` or `model`): answered with evidence, or not
/// found.
pub fn item(item: &Item, finding: Option<&Finding>, method: &str) -> Value {
    match finding {
        Some(f) => {
            let mut answer = answer_value(&item.item_type, &f.value);
            answer["extension"] =
                Value::Array(f.citations.iter().map(evidence_extension).collect());
            json!({
                "linkId": item.link_id,
                "text": item.text,
                "extension": [
                    origin_extension("auto", HEARTH_DEVICE),
                    {"url": CONFIDENCE, "valueDecimal": f.confidence},
                    {"url": EXTRACTED_BY, "valueCode": method},
                    {"url": REVIEW, "valueCode": "pending"},
                ],
                "answer": [answer],
            })
        }
        None => json!({
            "linkId": item.link_id,
            "text": item.text,
            "extension": [
                {"url": NOT_FOUND, "valueString": NOT_FOUND_TEXT},
                {"url": REVIEW, "valueCode": "pending"},
            ],
        }),
    }
}

/// The draft QuestionnaireResponse.
pub fn questionnaire_response(
    id: &str,
    set: &RuleSet,
    patient_id: &str,
    order_reference: &str,
    items: Vec<Value>,
    authored: &str,
) -> Value {
    json!({
        "resourceType": "QuestionnaireResponse",
        "id": id,
        "meta": {"profile": [DTR_PROFILE]},
        "extension": [{"url": QR_CONTEXT, "valueReference": {"reference": order_reference}}],
        "questionnaire": set.canonical(),
        "status": "in-progress",
        "subject": {"reference": format!("Patient/{patient_id}")},
        "authored": authored,
        "author": {"reference": HEARTH_DEVICE},
        "item": items,
    })
}

/// An extension's value of `url` on `node` (an item), as text.
pub fn extension_text<'a>(node: &'a Value, url: &str) -> Option<&'a str> {
    node["extension"]
        .as_array()?
        .iter()
        .find(|x| x["url"] == url)
        .and_then(|x| {
            x["valueCode"]
                .as_str()
                .or_else(|| x["valueString"].as_str())
        })
}

/// Set (replace) the extension `url` of `node` to `value`.
pub fn set_extension(node: &mut Value, url: &str, value: Value) {
    let list = node
        .as_object_mut()
        .map(|o| o.entry("extension").or_insert_with(|| json!([])));
    if let Some(Value::Array(list)) = list {
        list.retain(|x| x["url"] != url);
        list.push(value);
    }
}
