//! FHIRPath Patch (FHIR R4 §3.1.0.7.3): a `Parameters` resource whose `operation` parameters
//! each have `type` (add, insert, delete, replace, move), `path`, and per type `name`,
//! `value`, `index`, `source`, `destination`.
//!
//! Supported subset: paths are what `crate::search::fhirpath` evaluates (member steps, `[n]`,
//! `where(...)`, `first()`, `ofType()`, choice elements), e.g. `Patient.birthDate`,
//! `Patient.name[0].given`, `Patient.telecom.where(system='phone')`. Targets are located by
//! evaluating the path over the resource and mapping each result back to its place in the
//! JSON. `insert` and `move` need a path ending in an element name (the list). `value` is a
//! `value[x]` (any type) or nested `part`s, which build an object (a repeated part name makes
//! an array). For `add` of an element the resource does not have yet, whether it is a list
//! and, for a choice element (`deceased` + `valueBoolean`), its JSON name are learnt from the
//! R4 element table. Primitive extensions (`_birthDate`) are removed with their element.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use serde_json::{Map, Value};

use super::outcome::{FhirError, IssueType};
use super::patch::unprocessable;
use crate::conformance::{IssueClass, R4Structure};
use crate::search::fhirpath::{self, Expr, Node, Primary, Step};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Add,
    Insert,
    Delete,
    Replace,
    Move,
}

/// One parsed operation; `index` is its position in `Parameters.parameter`.
#[derive(Debug, Clone)]
pub struct FhirPathOperation {
    index: usize,
    kind: Kind,
    path: Expr,
    name: Option<String>,
    value: Option<Value>,
    /// The `X` of `valueX`, for choice elements.
    value_type: Option<String>,
    position: Option<usize>,
    source: Option<usize>,
    destination: Option<usize>,
}

/// The `valueX` of a parameter (or part): its value and `X`.
fn value_x(part: &Map<String, Value>) -> Option<(Value, String)> {
    part.iter().find_map(|(key, value)| {
        let suffix = key.strip_prefix("value")?;
        suffix
            .starts_with(|c: char| c.is_ascii_uppercase())
            .then(|| (value.clone(), suffix.to_owned()))
    })
}

/// A `value` given as parts: `{name, value[x] | part}` items become an object's members.
fn parts_value(parts: &[Value]) -> Option<Value> {
    let mut out = Map::new();
    for part in parts {
        let part = part.as_object()?;
        let name = part.get("name")?.as_str()?.to_owned();
        let value = match value_x(part) {
            Some((v, _)) => v,
            None => parts_value(part.get("part")?.as_array()?)?,
        };
        match out.get_mut(&name) {
            Some(Value::Array(items)) => items.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, value]);
            }
            None => {
                out.insert(name, value);
            }
        }
    }
    Some(Value::Object(out))
}

/// Parse a FHIRPath Patch `Parameters` resource. 400 for anything malformed, naming the
/// parameter.
pub(super) fn parse(parameters: &Value) -> Result<Vec<FhirPathOperation>, FhirError> {
    if parameters.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Err(FhirError::bad_request(
            "a FHIRPath Patch is a Parameters resource (for JSON Patch send application/json-patch+json)",
        ));
    }
    let Some(items) = parameters.get("parameter").and_then(Value::as_array) else {
        return Err(
            FhirError::bad_request("the patch has no operations").at("Parameters.parameter")
        );
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_operation(i, item))
        .collect()
}

fn parse_operation(i: usize, item: &Value) -> Result<FhirPathOperation, FhirError> {
    let at = format!("Parameters.parameter[{i}]");
    let bad = |what: &str| FhirError::bad_request(format!("patch operation {i}: {what}")).at(&at);
    if item.get("name").and_then(Value::as_str) != Some("operation") {
        return Err(bad("every parameter must be named 'operation'"));
    }
    let parts = item
        .get("part")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("an operation has parts"))?;
    let part = |name: &str| {
        parts
            .iter()
            .filter_map(Value::as_object)
            .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
    };
    let text = |name: &str| -> Result<Option<String>, FhirError> {
        match part(name) {
            None => Ok(None),
            Some(p) => match value_x(p) {
                Some((Value::String(s), _)) => Ok(Some(s)),
                _ => Err(bad(&format!("'{name}' must be a string"))),
            },
        }
    };
    let integer = |name: &str| -> Result<Option<usize>, FhirError> {
        match part(name) {
            None => Ok(None),
            Some(p) => value_x(p)
                .and_then(|(v, _)| v.as_u64())
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| bad(&format!("'{name}' must be a non-negative integer"))),
        }
    };
    let kind = match text("type")?.as_deref() {
        Some("add") => Kind::Add,
        Some("insert") => Kind::Insert,
        Some("delete") => Kind::Delete,
        Some("replace") => Kind::Replace,
        Some("move") => Kind::Move,
        Some(_) => return Err(bad("'type' must be add, insert, delete, replace or move")),
        None => return Err(bad("'type' is missing")),
    };
    let path_text = text("path")?.ok_or_else(|| bad("'path' is missing"))?;
    let path = fhirpath::parse(&path_text).map_err(|e| {
        bad(&format!(
            "'path' is not a FHIRPath expression Hearth can evaluate: {e}"
        ))
    })?;
    let (value, value_type) = match part("value") {
        None => (None, None),
        Some(p) => match value_x(p) {
            Some((v, ty)) => (Some(v), Some(ty)),
            None => {
                let nested = p.get("part").and_then(Value::as_array);
                let v = nested
                    .and_then(|parts| parts_value(parts))
                    .ok_or_else(|| bad("'value' needs a value[x] or parts"))?;
                (Some(v), None)
            }
        },
    };
    let op = FhirPathOperation {
        index: i,
        kind,
        path,
        name: text("name")?,
        value,
        value_type,
        position: integer("index")?,
        source: integer("source")?,
        destination: integer("destination")?,
    };
    let needs: &[(&str, bool)] = match kind {
        Kind::Add => &[("name", op.name.is_some()), ("value", op.value.is_some())],
        Kind::Insert => &[
            ("index", op.position.is_some()),
            ("value", op.value.is_some()),
        ],
        Kind::Delete => &[],
        Kind::Replace => &[("value", op.value.is_some())],
        Kind::Move => &[
            ("source", op.source.is_some()),
            ("destination", op.destination.is_some()),
        ],
    };
    if let Some((missing, _)) = needs.iter().find(|(_, present)| !present) {
        return Err(bad(&format!("'{missing}' is required for this type")));
    }
    Ok(op)
}

/// A step from a JSON value to one of its children.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// Where every value of the tree sits, by address: FHIRPath evaluation returns references
/// into the resource, and this turns them back into paths that can be changed.
fn places(root: &Value) -> HashMap<*const Value, Vec<Seg>> {
    fn walk(v: &Value, path: &mut Vec<Seg>, out: &mut HashMap<*const Value, Vec<Seg>>) {
        out.insert(v as *const Value, path.clone());
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    path.push(Seg::Key(k.clone()));
                    walk(child, path, out);
                    path.pop();
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    path.push(Seg::Index(i));
                    walk(child, path, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = HashMap::new();
    walk(root, &mut Vec::new(), &mut out);
    out
}

fn get_mut<'a>(mut v: &'a mut Value, path: &[Seg]) -> Option<&'a mut Value> {
    for seg in path {
        v = match (seg, v) {
            (Seg::Key(k), Value::Object(map)) => map.get_mut(k)?,
            (Seg::Index(i), Value::Array(items)) => items.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(v)
}

/// The FHIRPath-style expression of a place, as the structure validator writes it
/// (`Patient.name[0].given`).
fn expression(resource_type: &str, path: &[Seg]) -> String {
    let mut out = resource_type.to_owned();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Evaluate `expr` over the resource and return the places of what it selects. A result that
/// is not part of the resource (a literal, a boolean) cannot be patched.
fn select(op: &FhirPathOperation, expr: &Expr, root: &Value) -> Result<Vec<Vec<Seg>>, FhirError> {
    let nodes = fhirpath::evaluate(expr, &[Node::Json(root, None)]);
    let places = places(root);
    nodes
        .iter()
        .map(|node| match node {
            Node::Json(v, _) => places.get(&(*v as *const Value)).cloned(),
            _ => None,
        })
        .map(|place| {
            place.ok_or_else(|| {
                failed(
                    op,
                    "the path selects something that is not an element of the resource",
                )
            })
        })
        .collect()
}

fn failed(op: &FhirPathOperation, what: &str) -> FhirError {
    unprocessable(
        IssueType::Invalid,
        format!("patch operation {} cannot be applied: {what}", op.index),
    )
    .at(format!("Parameters.parameter[{}]", op.index))
}

fn single(op: &FhirPathOperation, places: Vec<Vec<Seg>>) -> Result<Vec<Seg>, FhirError> {
    let count = places.len();
    let mut places = places.into_iter();
    match (places.next(), count) {
        (Some(place), 1) => Ok(place),
        (None, _) => Err(failed(op, "the path selects nothing")),
        _ => Err(failed(
            op,
            &format!("the path selects {count} elements; it must select one"),
        )),
    }
}

/// The list a path names, as (place of its owner, element name): `Patient.name[0].given` is
/// `given` of `Patient.name[0]`. For insert and move.
fn list_owner(
    op: &FhirPathOperation,
    root: &Value,
    resource_type: &str,
) -> Result<(Vec<Seg>, String), FhirError> {
    let Expr::Path(primary, steps) = &op.path else {
        return Err(failed(op, "the path must name a list element"));
    };
    match (steps.split_last(), primary.as_ref()) {
        (Some((Step::Member(name), rest)), _) => {
            let owner = Expr::Path(primary.clone(), rest.to_vec());
            let place = single(op, select(op, &owner, root)?)?;
            Ok((place, name.clone()))
        }
        (None, Primary::Identifier(name)) if name != resource_type => {
            Ok((Vec::new(), name.clone()))
        }
        _ => Err(failed(
            op,
            "the path must end with the name of a list element",
        )),
    }
}

/// Remove the value at `place`, with its `_name` primitive-extension companion, then any
/// object or array this leaves empty (FHIR allows neither).
fn remove(root: &mut Value, place: &[Seg]) {
    let Some((last, owner)) = place.split_last() else {
        return;
    };
    match (last, get_mut(root, owner)) {
        (Seg::Key(k), Some(Value::Object(map))) => {
            map.shift_remove(k);
            map.shift_remove(&format!("_{k}"));
        }
        (Seg::Index(i), Some(Value::Array(items))) if *i < items.len() => {
            items.remove(*i);
            // A primitive list's companion `_given` is parallel to `given`.
            if let Some((Seg::Key(list), grand)) = owner.split_last()
                && let Some(Value::Object(map)) = get_mut(root, grand)
                && let Some(Value::Array(companion)) = map.get_mut(&format!("_{list}"))
                && *i < companion.len()
            {
                companion.remove(*i);
            }
        }
        _ => return,
    }
    let now_empty = match get_mut(root, owner) {
        Some(Value::Object(map)) => map.is_empty(),
        Some(Value::Array(items)) => items.is_empty(),
        _ => false,
    };
    if now_empty && !owner.is_empty() {
        remove(root, owner);
    }
}

/// Does the structure table object to the element at `expr` (its name or its shape)?
fn shape_refused(candidate: &Value, expr: &str) -> bool {
    R4Structure::global()
        .validate_resource(candidate)
        .iter()
        .any(|i| i.class == IssueClass::Structure && i.expression == expr)
}

fn add(op: &FhirPathOperation, root: &mut Value, resource_type: &str) -> Result<(), FhirError> {
    let (Some(name), Some(value)) = (&op.name, &op.value) else {
        return Err(failed(op, "'name' and 'value' are required"));
    };
    let place = single(op, select(op, &op.path, root)?)?;
    let is_object = matches!(get_mut(root, &place), Some(Value::Object(_)));
    if !is_object {
        return Err(failed(
            op,
            "the path must select an element that has children",
        ));
    }
    // The element may exist already: a list gets the value appended; a single value stays.
    if let Some(Value::Object(map)) = get_mut(root, &place) {
        match map.get_mut(name) {
            Some(Value::Array(items)) => {
                items.push(value.clone());
                return Ok(());
            }
            Some(_) => {
                return Err(failed(op, "the element already has a value (use replace)"));
            }
            None => {}
        }
    }
    // A new element: try the JSON names and shapes it could have, keep the first the R4
    // table accepts (else the first, and the write's checks report why).
    let mut names = vec![name.clone()];
    if let Some(ty) = &op.value_type {
        names.push(format!("{name}{ty}"));
    }
    let mut candidates = Vec::new();
    for key in &names {
        for shaped in [value.clone(), Value::Array(vec![value.clone()])] {
            candidates.push((key.clone(), shaped));
        }
    }
    let mut chosen = None;
    for (key, shaped) in &candidates {
        let mut candidate = root.clone();
        if let Some(Value::Object(map)) = get_mut(&mut candidate, &place) {
            map.insert(key.clone(), shaped.clone());
        }
        let mut path = place.clone();
        path.push(Seg::Key(key.clone()));
        if !shape_refused(&candidate, &expression(resource_type, &path)) {
            chosen = Some((key.clone(), shaped.clone()));
            break;
        }
    }
    let (key, shaped) = chosen
        .or_else(|| candidates.into_iter().next())
        .ok_or_else(|| failed(op, "nothing to add"))?;
    if let Some(Value::Object(map)) = get_mut(root, &place) {
        map.insert(key, shaped);
    }
    Ok(())
}

fn insert(op: &FhirPathOperation, root: &mut Value, resource_type: &str) -> Result<(), FhirError> {
    let (Some(index), Some(value)) = (op.position, &op.value) else {
        return Err(failed(op, "'index' and 'value' are required"));
    };
    let (owner, name) = list_owner(op, root, resource_type)?;
    let Some(Value::Object(map)) = get_mut(root, &owner) else {
        return Err(failed(
            op,
            "the list's owner is not an element with children",
        ));
    };
    match map.get_mut(&name) {
        None if index == 0 => {
            map.insert(name, Value::Array(vec![value.clone()]));
            Ok(())
        }
        Some(Value::Array(items)) if index <= items.len() => {
            items.insert(index, value.clone());
            Ok(())
        }
        Some(Value::Array(_)) | None => Err(failed(op, "the index is past the end of the list")),
        Some(_) => Err(failed(op, "the path does not name a list")),
    }
}

fn move_item(
    op: &FhirPathOperation,
    root: &mut Value,
    resource_type: &str,
) -> Result<(), FhirError> {
    let (Some(source), Some(destination)) = (op.source, op.destination) else {
        return Err(failed(op, "'source' and 'destination' are required"));
    };
    let (owner, name) = list_owner(op, root, resource_type)?;
    let Some(Value::Object(map)) = get_mut(root, &owner) else {
        return Err(failed(
            op,
            "the list's owner is not an element with children",
        ));
    };
    match map.get_mut(&name) {
        Some(Value::Array(items)) if source < items.len() && destination < items.len() => {
            let item = items.remove(source);
            items.insert(destination, item);
            Ok(())
        }
        Some(Value::Array(_)) => Err(failed(
            op,
            "source or destination is past the end of the list",
        )),
        _ => Err(failed(op, "the path does not name a list")),
    }
}

/// Apply the operations in order to `resource` (the caller works on a copy).
pub(super) fn apply(
    operations: &[FhirPathOperation],
    resource: &mut Value,
) -> Result<(), FhirError> {
    let resource_type = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    for op in operations {
        match op.kind {
            Kind::Add => add(op, resource, &resource_type)?,
            Kind::Insert => insert(op, resource, &resource_type)?,
            Kind::Move => move_item(op, resource, &resource_type)?,
            Kind::Delete => {
                // Deleting what is not there is not an error (the spec's rule).
                let places = select(op, &op.path, resource)?;
                if places.len() > 1 {
                    return Err(failed(
                        op,
                        &format!(
                            "the path selects {} elements; delete removes one",
                            places.len()
                        ),
                    ));
                }
                if let Some(place) = places.first() {
                    if place.is_empty() {
                        return Err(failed(op, "the whole resource cannot be deleted"));
                    }
                    remove(resource, place);
                }
            }
            Kind::Replace => {
                let place = single(op, select(op, &op.path, resource)?)?;
                if place.is_empty() {
                    return Err(failed(op, "the whole resource cannot be replaced"));
                }
                let value = op.value.clone().unwrap_or(Value::Null);
                match get_mut(resource, &place) {
                    Some(target) => *target = value,
                    None => return Err(failed(op, "the path selects nothing")),
                }
            }
        }
    }
    Ok(())
}

/// A 400 for a Binary that is not a JSON Patch, for Bundle entries.
pub(super) fn not_a_patch(what: &str) -> FhirError {
    FhirError::new(StatusCode::BAD_REQUEST, IssueType::Invalid, what.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op(parts: Value) -> Value {
        json!({"name": "operation", "part": parts})
    }

    fn run(ops: Vec<Value>, mut resource: Value) -> Result<Value, FhirError> {
        let parsed = parse(&json!({"resourceType": "Parameters", "parameter": ops}))?;
        apply(&parsed, &mut resource)?;
        Ok(resource)
    }

    fn patient() -> Value {
        json!({"resourceType": "Patient", "id": "p",
            "name": [{"family": "F", "given": ["A", "B"]}],
            "telecom": [{"system": "phone", "value": "1"}, {"system": "email", "value": "a@b"}],
            "birthDate": "1970-01-01", "_birthDate": {"extension": [{"url": "http://x", "valueString": "y"}]}})
    }

    #[test]
    fn replace_delete_add_insert_move() {
        let out = run(
            vec![
                op(json!([{"name": "type", "valueCode": "replace"},
                          {"name": "path", "valueString": "Patient.telecom.where(system='phone').value"},
                          {"name": "value", "valueString": "2"}])),
                op(json!([{"name": "type", "valueCode": "delete"},
                          {"name": "path", "valueString": "Patient.birthDate"}])),
                op(json!([{"name": "type", "valueCode": "add"},
                          {"name": "path", "valueString": "Patient"},
                          {"name": "name", "valueString": "gender"},
                          {"name": "value", "valueCode": "female"}])),
                op(json!([{"name": "type", "valueCode": "add"},
                          {"name": "path", "valueString": "Patient"},
                          {"name": "name", "valueString": "deceased"},
                          {"name": "value", "valueBoolean": false}])),
                op(json!([{"name": "type", "valueCode": "insert"},
                          {"name": "path", "valueString": "Patient.name[0].given"},
                          {"name": "index", "valueInteger": 0},
                          {"name": "value", "valueString": "Z"}])),
                op(json!([{"name": "type", "valueCode": "move"},
                          {"name": "path", "valueString": "Patient.name[0].given"},
                          {"name": "source", "valueInteger": 2},
                          {"name": "destination", "valueInteger": 0}])),
                op(json!([{"name": "type", "valueCode": "add"},
                          {"name": "path", "valueString": "Patient"},
                          {"name": "name", "valueString": "address"},
                          {"name": "value", "part": [{"name": "city", "valueString": "C"}]}])),
            ],
            patient(),
        )
        .expect("applies");
        assert_eq!(out["telecom"][0]["value"], "2");
        assert!(out.get("birthDate").is_none() && out.get("_birthDate").is_none());
        assert_eq!(out["gender"], "female");
        assert_eq!(out["deceasedBoolean"], false);
        assert_eq!(out["name"][0]["given"], json!(["B", "Z", "A"]));
        assert_eq!(out["address"], json!([{"city": "C"}]), "a list is learnt");
    }

    #[test]
    fn deleting_the_last_item_removes_the_list() {
        let out = run(
            vec![op(json!([{"name": "type", "valueCode": "delete"},
                           {"name": "path", "valueString": "Patient.name[0]"}]))],
            patient(),
        )
        .expect("applies");
        assert!(out.get("name").is_none());
        let nothing = run(
            vec![op(json!([{"name": "type", "valueCode": "delete"},
                           {"name": "path", "valueString": "Patient.photo"}]))],
            patient(),
        );
        assert!(nothing.is_ok(), "deleting nothing is fine");
    }

    #[test]
    fn errors() {
        let status = |r: Result<Value, FhirError>| r.err().map(|e| e.status.as_u16());
        let many = run(
            vec![op(json!([{"name": "type", "valueCode": "replace"},
                           {"name": "path", "valueString": "Patient.telecom"},
                           {"name": "value", "valueString": "x"}]))],
            patient(),
        );
        assert_eq!(status(many), Some(422));
        let unknown = run(
            vec![op(json!([{"name": "type", "valueCode": "frob"},
                           {"name": "path", "valueString": "Patient"}]))],
            patient(),
        );
        assert_eq!(status(unknown), Some(400));
        let bad_path = run(
            vec![op(json!([{"name": "type", "valueCode": "delete"},
                           {"name": "path", "valueString": "Patient..x"}]))],
            patient(),
        );
        assert_eq!(status(bad_path), Some(400));
        let missing_value = run(
            vec![op(json!([{"name": "type", "valueCode": "replace"},
                           {"name": "path", "valueString": "Patient.birthDate"}]))],
            patient(),
        );
        assert_eq!(status(missing_value), Some(400));
    }
}
