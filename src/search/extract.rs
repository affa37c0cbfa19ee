//! Index rows for one resource: every registry parameter of its type, evaluated at write time.

use serde_json::Value;

use super::fhirpath::{Node, evaluate};
use super::registry::{ParamType, SearchParam, SearchRegistry};
use super::values::{DateRange, date_range, normalize};

#[derive(Debug, Clone, PartialEq, Default)]
pub struct TokenValue {
    pub system: Option<String>,
    pub code: Option<String>,
    /// Normalised display text (CodeableConcept.text, Coding.display), for `:text`.
    pub text: Option<String>,
    /// Identifier.type, for `:of-type`.
    pub type_system: Option<String>,
    pub type_code: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StringValue {
    pub normalized: String,
    pub exact: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceValue {
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    /// Absolute URLs that are not this server's, and canonicals.
    pub url: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QuantityValue {
    /// The number exactly as written (cast to numeric in SQL).
    pub value: String,
    pub system: Option<String>,
    pub code: Option<String>,
    pub unit: Option<String>,
}

/// The second part of a composite value.
#[derive(Debug, Clone, PartialEq)]
pub enum CompositePart {
    Token(TokenValue),
    Quantity(QuantityValue),
    Date(DateRange),
    String(StringValue),
}

#[derive(Debug, Clone, PartialEq)]
pub enum IndexValue {
    Token(TokenValue),
    String(StringValue),
    Date(DateRange),
    Reference(ReferenceValue),
    Quantity(QuantityValue),
    Number(String),
    Uri(String),
    Composite(TokenValue, CompositePart),
}

/// One index row: a parameter code and a value.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexEntry {
    pub param: String,
    pub value: IndexValue,
}

/// Parameters answered from the resource table itself, not index rows.
pub fn is_native(code: &str) -> bool {
    matches!(code, "_id" | "_lastUpdated")
}

/// Compute every index row for `resource` of `resource_type`. `local_base` is this tenant's
/// FHIR base with a trailing slash: absolute references into it are indexed as local ones.
pub fn extract(resource_type: &str, resource: &Value, local_base: &str) -> Vec<IndexEntry> {
    extract_params(resource_type, resource, local_base, None)
}

/// [`extract`] limited to the parameters in `only` (all when `None`).
pub fn extract_params(
    resource_type: &str,
    resource: &Value,
    local_base: &str,
    only: Option<&[String]>,
) -> Vec<IndexEntry> {
    let registry = SearchRegistry::global();
    let context = [Node::Json(resource, Some(resource_type.to_owned()))];
    let mut rows = Vec::new();
    for param in registry.params(resource_type) {
        if is_native(&param.code)
            || param.param_type == ParamType::Special
            || only.is_some_and(|only| !only.contains(&param.code))
        {
            continue;
        }
        let nodes = evaluate(&param.expression, &context);
        if param.param_type == ParamType::Composite {
            composite_rows(param, &nodes, local_base, &mut rows);
            continue;
        }
        for node in &nodes {
            for value in values_of(param.param_type, node, local_base) {
                let entry = IndexEntry {
                    param: param.code.clone(),
                    value,
                };
                if !rows.contains(&entry) {
                    rows.push(entry);
                }
            }
        }
    }
    rows
}

fn composite_rows(
    param: &SearchParam,
    roots: &[Node],
    local_base: &str,
    rows: &mut Vec<IndexEntry>,
) {
    let [first, second] = param.components.as_slice() else {
        return;
    };
    for root in roots {
        let ctx = std::slice::from_ref(root);
        let firsts: Vec<TokenValue> = evaluate(&first.expression, ctx)
            .iter()
            .flat_map(|n| values_of(first.param_type, n, local_base))
            .filter_map(|v| match v {
                IndexValue::Token(t) => Some(t),
                IndexValue::Reference(r) => Some(TokenValue {
                    code: r
                        .target_type
                        .zip(r.target_id)
                        .map(|(t, i)| format!("{t}/{i}"))
                        .or(r.url),
                    ..TokenValue::default()
                }),
                _ => None,
            })
            .filter(|t| t.code.is_some())
            .collect();
        let seconds: Vec<CompositePart> = evaluate(&second.expression, ctx)
            .iter()
            .flat_map(|n| values_of(second.param_type, n, local_base))
            .filter_map(|v| match v {
                IndexValue::Token(t) => Some(CompositePart::Token(t)),
                IndexValue::Quantity(q) => Some(CompositePart::Quantity(q)),
                IndexValue::Date(d) => Some(CompositePart::Date(d)),
                IndexValue::String(s) => Some(CompositePart::String(s)),
                _ => None,
            })
            .collect();
        for f in &firsts {
            for s in &seconds {
                let entry = IndexEntry {
                    param: param.code.clone(),
                    value: IndexValue::Composite(f.clone(), s.clone()),
                };
                if !rows.contains(&entry) {
                    rows.push(entry);
                }
            }
        }
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

const CONTACT_SYSTEMS: &[&str] = &["phone", "fax", "email", "pager", "url", "sms", "other"];

fn values_of(param_type: ParamType, node: &Node, local_base: &str) -> Vec<IndexValue> {
    match param_type {
        ParamType::Token => tokens(node).into_iter().map(IndexValue::Token).collect(),
        ParamType::String => strings(node).into_iter().map(IndexValue::String).collect(),
        ParamType::Date => dates(node).into_iter().map(IndexValue::Date).collect(),
        ParamType::Reference => reference(node, local_base)
            .into_iter()
            .map(IndexValue::Reference)
            .collect(),
        ParamType::Quantity => quantity(node)
            .into_iter()
            .map(IndexValue::Quantity)
            .collect(),
        ParamType::Number => match node {
            Node::Json(Value::Number(n), _) => vec![IndexValue::Number(n.to_string())],
            _ => Vec::new(),
        },
        ParamType::Uri => match node {
            Node::Json(Value::String(s), _) => vec![IndexValue::Uri(s.clone())],
            _ => Vec::new(),
        },
        ParamType::Composite | ParamType::Special => Vec::new(),
    }
}

fn coding(c: &Value) -> Option<TokenValue> {
    let t = TokenValue {
        system: text(c.get("system")),
        code: text(c.get("code")),
        text: text(c.get("display")).map(|d| normalize(&d)),
        ..TokenValue::default()
    };
    (t.system.is_some() || t.code.is_some()).then_some(t)
}

fn tokens(node: &Node) -> Vec<TokenValue> {
    let code = |c: String| {
        vec![TokenValue {
            code: Some(c),
            ..TokenValue::default()
        }]
    };
    match node {
        Node::Bool(b) => code(b.to_string()),
        Node::Str(s) => code(s.clone()),
        Node::Json(Value::Bool(b), _) => code(b.to_string()),
        Node::Json(Value::String(s), _) => code(s.clone()),
        Node::Json(Value::Object(o), _) => {
            if o.contains_key("coding") || (o.contains_key("text") && !o.contains_key("value")) {
                // CodeableConcept
                let mut out: Vec<TokenValue> = o
                    .get("coding")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(coding)
                    .collect();
                if let Some(t) = text(o.get("text")) {
                    out.push(TokenValue {
                        text: Some(normalize(&t)),
                        ..TokenValue::default()
                    });
                }
                out
            } else if let Some(value) = text(o.get("value")) {
                let system = text(o.get("system"));
                if system
                    .as_deref()
                    .is_some_and(|s| CONTACT_SYSTEMS.contains(&s))
                {
                    // ContactPoint: the value is the code.
                    return vec![TokenValue {
                        system,
                        code: Some(value),
                        ..TokenValue::default()
                    }];
                }
                // Identifier; one row per type coding so `:of-type` can match.
                let types: Vec<TokenValue> = o
                    .get("type")
                    .and_then(|t| t.get("coding"))
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(coding)
                    .collect();
                let base = TokenValue {
                    system,
                    code: Some(value),
                    ..TokenValue::default()
                };
                if types.is_empty() {
                    vec![base]
                } else {
                    types
                        .into_iter()
                        .map(|t| TokenValue {
                            type_system: t.system,
                            type_code: t.code,
                            ..base.clone()
                        })
                        .collect()
                }
            } else {
                coding(node_value(node)).into_iter().collect()
            }
        }
        _ => Vec::new(),
    }
}

fn node_value<'a>(node: &Node<'a>) -> &'a Value {
    match node {
        Node::Json(v, _) => v,
        _ => &Value::Null,
    }
}

const STRING_PARTS: &[&str] = &[
    "text",
    "family",
    "given",
    "prefix",
    "suffix",
    "line",
    "city",
    "district",
    "state",
    "postalCode",
    "country",
];

fn strings(node: &Node) -> Vec<StringValue> {
    let make = |s: &str| StringValue {
        normalized: normalize(s),
        exact: s.to_owned(),
    };
    match node {
        Node::Json(Value::String(s), _) => vec![make(s)],
        Node::Str(s) => vec![make(s)],
        // HumanName, Address and similar: every part is searchable.
        Node::Json(Value::Object(o), _) => STRING_PARTS
            .iter()
            .filter_map(|k| o.get(*k))
            .flat_map(|v| match v {
                Value::String(s) => vec![make(s)],
                Value::Array(items) => items.iter().filter_map(Value::as_str).map(make).collect(),
                _ => Vec::new(),
            })
            .filter(|s| !s.normalized.is_empty())
            .collect(),
        _ => Vec::new(),
    }
}

fn dates(node: &Node) -> Vec<DateRange> {
    match node {
        Node::Json(Value::String(s), _) => date_range(s).into_iter().collect(),
        Node::Json(Value::Object(o), _) if o.contains_key("start") || o.contains_key("end") => {
            // Period: open where a bound is missing.
            let start = o.get("start").and_then(Value::as_str).and_then(date_range);
            let end = o.get("end").and_then(Value::as_str).and_then(date_range);
            vec![DateRange {
                lo: start.and_then(|s| s.lo),
                hi: end.and_then(|e| e.hi),
            }]
        }
        Node::Json(Value::Object(o), _) if o.contains_key("event") => o
            .get("event")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter_map(date_range)
            .collect(),
        _ => Vec::new(),
    }
}

/// Split a reference into type and id when it is `Type/id` (optionally `/_history/n`) or an
/// absolute URL under `local_base`; other absolute URLs are kept whole.
pub fn parse_reference(reference: &str, local_base: &str) -> Option<ReferenceValue> {
    if reference.starts_with('#') || reference.is_empty() {
        return None;
    }
    let relative = reference.strip_prefix(local_base).unwrap_or(reference);
    let relative = relative.split("/_history/").next().unwrap_or(relative);
    let is_absolute = relative.contains("://") || relative.starts_with("urn:");
    if !is_absolute {
        let mut parts = relative.split('/');
        if let (Some(t), Some(id), None) = (parts.next(), parts.next(), parts.next())
            && t.starts_with(|c: char| c.is_ascii_uppercase())
            && !id.is_empty()
        {
            return Some(ReferenceValue {
                target_type: Some(t.to_owned()),
                target_id: Some(id.to_owned()),
                url: None,
            });
        }
        return None;
    }
    let mut segments = relative.trim_end_matches('/').rsplit('/');
    let id = segments.next();
    let ty = segments
        .next()
        .filter(|t| t.starts_with(|c: char| c.is_ascii_uppercase()));
    Some(ReferenceValue {
        target_type: ty.map(str::to_owned),
        target_id: ty.and(id).map(str::to_owned),
        url: Some(relative.to_owned()),
    })
}

fn reference(node: &Node, local_base: &str) -> Vec<ReferenceValue> {
    match node {
        Node::Json(Value::Object(o), _) => {
            let Some(r) = o.get("reference").and_then(Value::as_str) else {
                return Vec::new();
            };
            let mut value = match parse_reference(r, local_base) {
                Some(v) => v,
                None => return Vec::new(),
            };
            if value.target_type.is_none() {
                value.target_type = text(o.get("type"));
            }
            vec![value]
        }
        // canonical
        Node::Json(Value::String(s), _) => vec![ReferenceValue {
            target_type: None,
            target_id: None,
            url: Some(s.clone()),
        }],
        _ => Vec::new(),
    }
}

fn quantity(node: &Node) -> Vec<QuantityValue> {
    let Node::Json(Value::Object(o), _) = node else {
        return Vec::new();
    };
    let Some(Value::Number(n)) = o.get("value") else {
        return Vec::new();
    };
    vec![QuantityValue {
        value: n.to_string(),
        system: text(o.get("system")),
        code: text(o.get("code")),
        unit: text(o.get("unit")),
    }]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rows_for(param: &str, resource: &Value) -> Vec<IndexValue> {
        let t = resource["resourceType"].as_str().unwrap_or_default();
        extract(t, resource, "https://h/fhir/t/")
            .into_iter()
            .filter(|e| e.param == param)
            .map(|e| e.value)
            .collect()
    }

    #[test]
    fn observation_rows() {
        // Parsed from text so the decimal keeps its written form (arbitrary_precision).
        let obs: Value = serde_json::from_str(&json!({"resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4", "display": "Hemoglobin A1c"}], "text": "HbA1c"},
            "subject": {"reference": "https://h/fhir/t/Patient/p1"},
            "effectiveDateTime": "2024-03-05",
            "valueQuantity": {"value": 7.25, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}})
            .to_string().replace("7.25", "7.20")).expect("json");
        assert_eq!(
            rows_for("patient", &obs),
            vec![IndexValue::Reference(ReferenceValue {
                target_type: Some("Patient".into()),
                target_id: Some("p1".into()),
                url: None
            })]
        );
        let code = rows_for("code", &obs);
        assert_eq!(code.len(), 2);
        assert!(
            matches!(&code[0], IndexValue::Token(t) if t.code.as_deref() == Some("4548-4") && t.text.as_deref() == Some("hemoglobin a1c"))
        );
        assert!(
            matches!(&code[1], IndexValue::Token(t) if t.code.is_none() && t.text.as_deref() == Some("hba1c"))
        );
        assert!(matches!(
            rows_for("date", &obs).as_slice(),
            [IndexValue::Date(_)]
        ));
        assert!(
            matches!(rows_for("value-quantity", &obs).as_slice(), [IndexValue::Quantity(q)] if q.value == "7.20")
        );
        assert!(
            matches!(rows_for("code-value-quantity", &obs).as_slice(), [IndexValue::Composite(t, CompositePart::Quantity(q))] if t.code.as_deref() == Some("4548-4") && q.value == "7.20")
        );
        assert!(rows_for("_id", &obs).is_empty(), "_id is answered natively");
    }

    #[test]
    fn patient_rows() {
        let p = json!({"resourceType": "Patient",
            "identifier": [{"system": "urn:mrn", "value": "123", "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}}],
            "name": [{"family": "Ñúñez", "given": ["Ana", "María"]}],
            "telecom": [{"system": "email", "value": "a@example.org"}],
            "birthDate": "1970-01-02", "gender": "female"});
        let names: Vec<String> = rows_for("name", &p)
            .into_iter()
            .filter_map(|v| match v {
                IndexValue::String(s) => Some(s.normalized),
                _ => None,
            })
            .collect();
        assert_eq!(names, vec!["nunez", "ana", "maria"]);
        assert!(
            matches!(rows_for("identifier", &p).as_slice(), [IndexValue::Token(t)] if t.type_code.as_deref() == Some("MR") && t.code.as_deref() == Some("123"))
        );
        assert!(
            matches!(rows_for("email", &p).as_slice(), [IndexValue::Token(t)] if t.code.as_deref() == Some("a@example.org"))
        );
        assert!(
            matches!(rows_for("deceased", &p).as_slice(), [IndexValue::Token(t)] if t.code.as_deref() == Some("false"))
        );
    }

    #[test]
    fn references() {
        let base = "https://h/fhir/t/";
        let local = parse_reference("Patient/1/_history/2", base).expect("ref");
        assert_eq!(
            (
                local.target_type.as_deref(),
                local.target_id.as_deref(),
                local.url
            ),
            (Some("Patient"), Some("1"), None)
        );
        let external = parse_reference("https://other/fhir/Patient/9", base).expect("ref");
        assert_eq!(external.target_id.as_deref(), Some("9"));
        assert_eq!(
            external.url.as_deref(),
            Some("https://other/fhir/Patient/9")
        );
        assert!(parse_reference("#contained", base).is_none());
    }
}
