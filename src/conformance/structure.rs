//! Structural validation of R4 JSON against the element table in `profiles/r4/structure.json`.
//!
//! Checks, with a FHIRPath-style expression for each finding: unknown elements, JSON shapes
//! (array vs single, object vs primitive, null, empty arrays), primitive formats (the spec's
//! regexes and integer ranges), codes of required bindings, and minimum cardinality.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use regex::Regex;
use serde::Deserialize;
use serde_json::{Map, Value};

const STRUCTURE_JSON: &str = include_str!("../../profiles/r4/structure.json");
/// Stop collecting after this many findings; a hopeless document does not deserve a 5 MB reply.
const MAX_ISSUES: usize = 100;
/// Deeper nesting than this is refused (FHIR resources are nowhere near it).
const MAX_DEPTH: usize = 64;

/// How bad a finding is: `Structure` means the JSON cannot be read as the resource (HTTP 400);
/// `Required` and `Value` mean it reads but breaks an R4 rule (HTTP 422).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueClass {
    Structure,
    Required,
    Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StructureIssue {
    pub class: IssueClass,
    /// Where, e.g. `Patient.name[0].given[1]`.
    pub expression: String,
    /// What is wrong. Never quotes the offending value: it may be PHI.
    pub message: String,
}

#[derive(Deserialize)]
struct RawTable {
    primitives: HashMap<String, RawPrimitive>,
    types: HashMap<String, RawType>,
}

#[derive(Deserialize)]
struct RawPrimitive {
    json: String,
    regex: Option<String>,
}

#[derive(Deserialize)]
struct RawType {
    kind: String,
    #[serde(rename = "abstract")]
    is_abstract: bool,
    #[serde(default)]
    elements: HashMap<String, RawElement>,
}

#[derive(Deserialize)]
struct RawElement {
    min: u32,
    max: Value,
    types: Vec<String>,
    #[serde(rename = "ref")]
    content_ref: Option<String>,
    binding: Option<RawBinding>,
    #[serde(default)]
    summary: bool,
}

#[derive(Deserialize)]
struct RawBinding {
    codes: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsonKind {
    String,
    Boolean,
    Number,
}

struct Primitive {
    json: JsonKind,
    regex: Option<Regex>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TypeKind {
    Resource,
    Complex,
    Primitive,
}

struct TypeDef {
    kind: TypeKind,
    is_abstract: bool,
    elements: HashMap<String, ElementDef>,
    /// Parent path ("" for the root) to the names of its child elements.
    children: HashMap<String, Vec<String>>,
}

struct ElementDef {
    min: u32,
    /// `None` for `*`.
    max: Option<u32>,
    types: Vec<String>,
    content_ref: Option<String>,
    required_codes: Option<HashSet<String>>,
    summary: bool,
}

/// The R4 element table, loaded once.
pub struct R4Structure {
    primitives: HashMap<String, Primitive>,
    types: HashMap<String, TypeDef>,
}

impl R4Structure {
    pub fn global() -> &'static R4Structure {
        static TABLE: OnceLock<R4Structure> = OnceLock::new();
        TABLE.get_or_init(|| {
            // The table is compiled into the binary and checked by this crate's tests, so a
            // failure here is a build defect, not bad input.
            R4Structure::from_json(STRUCTURE_JSON).expect("profiles/r4/structure.json is valid")
        })
    }

    fn from_json(text: &str) -> Result<R4Structure, String> {
        let raw: RawTable = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut primitives = HashMap::new();
        for (name, p) in raw.primitives {
            let json = match p.json.as_str() {
                "boolean" => JsonKind::Boolean,
                "number" => JsonKind::Number,
                _ => JsonKind::String,
            };
            let regex = match p.regex {
                // The spec's regexes are XML Schema style: implicitly anchored.
                Some(r) => Some(Regex::new(&format!("^(?:{r})$")).map_err(|e| e.to_string())?),
                None => None,
            };
            primitives.insert(name, Primitive { json, regex });
        }
        let mut types = HashMap::new();
        for (name, t) in raw.types {
            let kind = match t.kind.as_str() {
                "resource" => TypeKind::Resource,
                "primitive-type" => TypeKind::Primitive,
                _ => TypeKind::Complex,
            };
            let mut children: HashMap<String, Vec<String>> = HashMap::new();
            let mut elements = HashMap::new();
            for (path, e) in t.elements {
                let (parent, child) = match path.rsplit_once('.') {
                    Some((parent, child)) => (parent.to_owned(), child.to_owned()),
                    None => (String::new(), path.clone()),
                };
                children.entry(parent).or_default().push(child);
                let max = match &e.max {
                    Value::Number(n) => n.as_u64().map(|m| u32::try_from(m).unwrap_or(u32::MAX)),
                    _ => None,
                };
                elements.insert(
                    path,
                    ElementDef {
                        min: e.min,
                        max,
                        types: e.types,
                        content_ref: e.content_ref,
                        summary: e.summary,
                        required_codes: e
                            .binding
                            .and_then(|b| b.codes)
                            .map(|c| c.into_iter().collect()),
                    },
                );
            }
            // Sorted, so findings come out in the same order every time.
            children.values_mut().for_each(|c| c.sort_unstable());
            types.insert(
                name,
                TypeDef {
                    kind,
                    is_abstract: t.is_abstract,
                    elements,
                    children,
                },
            );
        }
        Ok(R4Structure { primitives, types })
    }

    /// Is `name` a concrete R4 resource type?
    pub fn is_resource_type(&self, name: &str) -> bool {
        self.types
            .get(name)
            .is_some_and(|t| t.kind == TypeKind::Resource && !t.is_abstract)
    }

    /// Every concrete R4 resource type, sorted.
    pub fn resource_types(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .types
            .iter()
            .filter(|(_, t)| t.kind == TypeKind::Resource && !t.is_abstract)
            .map(|(n, _)| n.as_str())
            .collect();
        names.sort_unstable();
        names
    }

    /// Is the top-level element `name` (e.g. `name`, or `value[x]` given as `valueQuantity`)
    /// of `resource_type` marked isSummary? For `_summary=true`.
    pub fn is_summary_element(&self, resource_type: &str, name: &str) -> bool {
        let Some(ty) = self.types.get(resource_type) else {
            return false;
        };
        let walk = Walk {
            table: self,
            issues: Vec::new(),
        };
        walk.resolve(ty, "", name)
            .is_some_and(|(def, _)| def.summary)
    }

    /// Validate a whole resource (an object with `resourceType`).
    pub fn validate_resource(&self, resource: &Value) -> Vec<StructureIssue> {
        let mut walk = Walk {
            table: self,
            issues: Vec::new(),
        };
        walk.resource(resource, None, 0);
        walk.issues
    }
}

struct Walk<'t> {
    table: &'t R4Structure,
    issues: Vec<StructureIssue>,
}

fn upper_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

impl<'t> Walk<'t> {
    fn issue(&mut self, class: IssueClass, expression: &str, message: impl Into<String>) {
        if self.issues.len() < MAX_ISSUES {
            self.issues.push(StructureIssue {
                class,
                expression: expression.to_owned(),
                message: message.into(),
            });
        }
    }

    /// `path` is where the resource sits (None at the top: the expression starts with its type).
    fn resource(&mut self, value: &Value, path: Option<&str>, depth: usize) {
        let Some(obj) = value.as_object() else {
            self.issue(
                IssueClass::Structure,
                path.unwrap_or("Resource"),
                "a resource must be a JSON object",
            );
            return;
        };
        let Some(type_name) = obj.get("resourceType").and_then(Value::as_str) else {
            self.issue(
                IssueClass::Structure,
                path.unwrap_or("Resource"),
                "resourceType is missing or not a string",
            );
            return;
        };
        let table = self.table;
        let Some(ty) = table
            .types
            .get(type_name)
            .filter(|t| t.kind == TypeKind::Resource && !t.is_abstract)
        else {
            self.issue(
                IssueClass::Structure,
                path.unwrap_or("Resource"),
                "resourceType is not an R4 resource type",
            );
            return;
        };
        let here = match path {
            Some(p) => format!("{p}.ofType({type_name})"),
            None => type_name.to_owned(),
        };
        self.object(ty, "", obj, &here, depth);
    }

    /// Validate `obj` as the elements under `prefix` (e.g. "" or "contact.") of type `ty`.
    fn object(
        &mut self,
        ty: &'t TypeDef,
        prefix: &str,
        obj: &Map<String, Value>,
        path: &str,
        depth: usize,
    ) {
        if depth > MAX_DEPTH {
            self.issue(IssueClass::Structure, path, "nesting is too deep");
            return;
        }
        let parent = prefix.trim_end_matches('.');
        for (key, value) in obj {
            if key == "resourceType" && prefix.is_empty() && ty.kind == TypeKind::Resource {
                continue;
            }
            let (name, is_extension_companion) = match key.strip_prefix('_') {
                Some(rest) => (rest, true),
                None => (key.as_str(), false),
            };
            let child_path = format!("{path}.{key}");
            let Some((def, concrete)) = self.resolve(ty, parent, name) else {
                self.issue(
                    IssueClass::Structure,
                    &child_path,
                    format!("unknown element '{key}'"),
                );
                continue;
            };
            let is_primitive = self.table.primitives.contains_key(concrete);
            if is_extension_companion && !is_primitive {
                self.issue(
                    IssueClass::Structure,
                    &child_path,
                    format!("'{key}' is only allowed for primitive elements"),
                );
                continue;
            }
            if def.max == Some(0) {
                self.issue(
                    IssueClass::Structure,
                    &child_path,
                    "this element is not allowed",
                );
                continue;
            }
            let repeats = def.max != Some(1);
            let element_path =
                format!("{parent}{}{name}", if parent.is_empty() { "" } else { "." });
            // Primitive arrays may hold null where only the `_name` companion has content.
            let nulls_allowed = is_primitive && repeats && obj.contains_key(&format!("_{name}"))
                || is_extension_companion && repeats;
            match (repeats, value) {
                (true, Value::Array(items)) if items.is_empty() => self.issue(
                    IssueClass::Structure,
                    &child_path,
                    "arrays must not be empty",
                ),
                (true, Value::Array(items)) => {
                    for (i, item) in items.iter().enumerate() {
                        let item_path = format!("{child_path}[{i}]");
                        if item.is_null() && nulls_allowed {
                            continue;
                        }
                        self.value(
                            ty,
                            &element_path,
                            def,
                            concrete,
                            is_extension_companion,
                            item,
                            &item_path,
                            depth,
                        );
                    }
                }
                (true, _) => self.issue(
                    IssueClass::Structure,
                    &child_path,
                    "this element repeats: its value must be an array",
                ),
                (false, Value::Array(_)) => self.issue(
                    IssueClass::Structure,
                    &child_path,
                    "this element does not repeat: its value must not be an array",
                ),
                (false, item) => self.value(
                    ty,
                    &element_path,
                    def,
                    concrete,
                    is_extension_companion,
                    item,
                    &child_path,
                    depth,
                ),
            }
        }
        self.required_children(ty, parent, obj, path);
    }

    /// Find the element `name` under `parent`, directly or as a choice (`value[x]` + type).
    fn resolve(
        &self,
        ty: &'t TypeDef,
        parent: &str,
        name: &str,
    ) -> Option<(&'t ElementDef, &'t str)> {
        let full = if parent.is_empty() {
            name.to_owned()
        } else {
            format!("{parent}.{name}")
        };
        if let Some(def) = ty.elements.get(&full).filter(|_| !name.ends_with("[x]")) {
            return def.types.first().map(|t| (def, t.as_str()));
        }
        for child in ty.children.get(parent)? {
            let Some(base) = child.strip_suffix("[x]") else {
                continue;
            };
            let Some(suffix) = name.strip_prefix(base).filter(|s| !s.is_empty()) else {
                continue;
            };
            let choice_path = if parent.is_empty() {
                child.clone()
            } else {
                format!("{parent}.{child}")
            };
            let def = ty.elements.get(&choice_path)?;
            if let Some(t) = def.types.iter().find(|t| upper_first(t) == suffix) {
                return Some((def, t.as_str()));
            }
        }
        None
    }

    #[allow(clippy::too_many_arguments)]
    fn value(
        &mut self,
        ty: &'t TypeDef,
        element_path: &str,
        def: &'t ElementDef,
        concrete: &'t str,
        is_extension_companion: bool,
        value: &Value,
        path: &str,
        depth: usize,
    ) {
        let table = self.table;
        if is_extension_companion {
            // `_name`: the id and extensions of a primitive, shaped like Element.
            match (value.as_object(), table.types.get("Element")) {
                (Some(obj), Some(element)) => self.object(element, "", obj, path, depth + 1),
                _ => self.issue(IssueClass::Structure, path, "must be a JSON object"),
            }
            return;
        }
        if let Some(primitive) = table.primitives.get(concrete) {
            self.primitive(concrete, primitive, def, value, path);
            return;
        }
        if concrete == "Resource" {
            self.resource(value, Some(path), depth + 1);
            return;
        }
        let Some(obj) = value.as_object() else {
            self.issue(
                IssueClass::Structure,
                path,
                format!("must be a JSON object ({concrete})"),
            );
            return;
        };
        // Backbone elements are defined inline in the same type (or by contentReference).
        if let Some(target) = &def.content_ref {
            self.object(ty, &format!("{target}."), obj, path, depth + 1);
        } else if ty.children.contains_key(element_path) {
            self.object(ty, &format!("{element_path}."), obj, path, depth + 1);
        } else if let Some(complex) = table.types.get(concrete) {
            self.object(complex, "", obj, path, depth + 1);
        } else {
            self.issue(
                IssueClass::Structure,
                path,
                format!("unknown type {concrete}"),
            );
        }
    }

    fn primitive(
        &mut self,
        type_name: &str,
        primitive: &Primitive,
        def: &ElementDef,
        value: &Value,
        path: &str,
    ) {
        let text = match (primitive.json, value) {
            (JsonKind::String, Value::String(s)) => s.clone(),
            (JsonKind::Boolean, Value::Bool(b)) => b.to_string(),
            // With arbitrary_precision this is the number exactly as it was written.
            (JsonKind::Number, Value::Number(n)) => n.to_string(),
            (kind, _) => {
                let expected = match kind {
                    JsonKind::String => "a JSON string",
                    JsonKind::Boolean => "true or false",
                    JsonKind::Number => "a JSON number",
                };
                self.issue(
                    IssueClass::Structure,
                    path,
                    format!("{type_name} must be {expected}"),
                );
                return;
            }
        };
        if let Some(regex) = &primitive.regex
            && !regex.is_match(&text)
        {
            self.issue(IssueClass::Value, path, format!("not a valid {type_name}"));
            return;
        }
        if matches!(type_name, "integer" | "positiveInt" | "unsignedInt")
            && text.parse::<i32>().is_err()
        {
            self.issue(
                IssueClass::Value,
                path,
                format!("{type_name} is out of the 32-bit range"),
            );
            return;
        }
        if type_name == "code"
            && let Some(codes) = &def.required_codes
            && !codes.contains(&text)
        {
            self.issue(
                IssueClass::Value,
                path,
                "code is not in the value set this element is bound to (required binding)",
            );
        }
    }

    fn required_children(
        &mut self,
        ty: &'t TypeDef,
        parent: &str,
        obj: &Map<String, Value>,
        path: &str,
    ) {
        let Some(children) = ty.children.get(parent) else {
            return;
        };
        for child in children {
            let full = if parent.is_empty() {
                child.clone()
            } else {
                format!("{parent}.{child}")
            };
            let Some(def) = ty.elements.get(&full).filter(|d| d.min > 0) else {
                continue;
            };
            let present = match child.strip_suffix("[x]") {
                Some(base) => obj.keys().any(|k| {
                    k.strip_prefix(base)
                        .is_some_and(|s| def.types.iter().any(|t| upper_first(t) == s))
                }),
                None => obj.contains_key(child) || obj.contains_key(&format!("_{child}")),
            };
            if !present {
                self.issue(
                    IssueClass::Required,
                    &format!("{path}.{child}"),
                    format!("'{child}' is required"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(v: Value) -> Vec<StructureIssue> {
        R4Structure::global().validate_resource(&v)
    }

    #[test]
    fn a_plain_patient_is_valid() {
        let issues = check(json!({
            "resourceType": "Patient", "id": "p1",
            "meta": {"versionId": "1", "lastUpdated": "2024-01-02T03:04:05.678Z"},
            "name": [{"family": "Doe", "given": ["Jan", "K"]}],
            "gender": "female", "birthDate": "1970-02-03",
            "deceasedBoolean": false,
            "extension": [{"url": "http://example.org/x", "valueString": "y"}],
            "_birthDate": {"extension": [{"url": "http://example.org/t", "valueTime": "10:00:00"}]},
            "contact": [{"name": {"text": "Someone"}}],
            "contained": [{"resourceType": "Organization", "id": "o", "name": "Org"}]
        }));
        assert_eq!(issues, vec![]);
    }

    #[test]
    fn findings_point_at_the_element() {
        let issues = check(json!({
            "resourceType": "Patient",
            "name": {"family": "Doe"},
            "gender": "robot",
            "birthDate": "not-a-date",
            "foo": 1,
            "contact": [{"bar": true}],
            "deceasedString": "x",
            "active": "yes"
        }));
        let by_path: HashMap<&str, IssueClass> = issues
            .iter()
            .map(|i| (i.expression.as_str(), i.class))
            .collect();
        assert_eq!(by_path.get("Patient.name"), Some(&IssueClass::Structure));
        assert_eq!(by_path.get("Patient.gender"), Some(&IssueClass::Value));
        assert_eq!(by_path.get("Patient.birthDate"), Some(&IssueClass::Value));
        assert_eq!(by_path.get("Patient.foo"), Some(&IssueClass::Structure));
        assert_eq!(
            by_path.get("Patient.contact[0].bar"),
            Some(&IssueClass::Structure)
        );
        assert_eq!(
            by_path.get("Patient.deceasedString"),
            Some(&IssueClass::Structure)
        );
        assert_eq!(by_path.get("Patient.active"), Some(&IssueClass::Structure));
        assert_eq!(issues.len(), 7, "{issues:?}");
    }

    #[test]
    fn required_elements_and_content_references() {
        let issues =
            check(json!({"resourceType": "Observation", "valueQuantity": {"value": 1.50}}));
        let paths: Vec<&str> = issues.iter().map(|i| i.expression.as_str()).collect();
        assert_eq!(paths, vec!["Observation.code", "Observation.status"]);
        assert!(issues.iter().all(|i| i.class == IssueClass::Required));

        let q = check(json!({"resourceType": "Questionnaire", "status": "draft",
            "item": [{"linkId": "1", "type": "group", "item": [{"linkId": "1.1", "type": "string", "oops": 1}]}]}));
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].expression, "Questionnaire.item[0].item[0].oops");
    }

    #[test]
    fn every_resource_type_is_known() {
        let table = R4Structure::global();
        assert!(table.is_resource_type("Patient"));
        assert!(!table.is_resource_type("DomainResource"));
        assert!(!table.is_resource_type("HumanName"));
        assert_eq!(table.resource_types().len(), 146);
    }
}
