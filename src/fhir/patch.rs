//! `PATCH /{type}/{id}`: JSON Patch (RFC 6902, `application/json-patch+json`) and FHIRPath
//! Patch (a `Parameters` resource, `application/fhir+json`; see `fhirpath_patch.rs`).
//!
//! The patch applies to the current version's JSON inside one transaction that holds the row
//! lock; the result goes through the same checks as a PUT body (`body::parse_resource`, i.e.
//! `crate::resource::check`) and is stored as the next version through `TenantTx::put`, with
//! `If-Match` honoured. JSON Patch is our own small implementation rather than a crate: it is
//! ~200 lines, adds no dependency, and its error messages follow the house rule of never
//! quoting values (they may be PHI).

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::Value;

use super::authn::Authenticated;
use super::body;
use super::fhirpath_patch::{self, FhirPathOperation};
use super::negotiate;
use super::outcome::{FhirError, IssueType};
use super::resource::{preflight_visible, write_response};
use crate::auth::Interaction;
use crate::resource::ValidationPolicy;
use crate::state::AppState;
use crate::store::{StoreError, StoredVersion, TenantTx};

/// A parsed patch document.
#[derive(Debug, Clone)]
pub(super) enum Patch {
    Json(Vec<JsonOperation>),
    FhirPath(Vec<FhirPathOperation>),
}

/// One RFC 6902 operation; paths are RFC 6901 pointers split into unescaped tokens.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum JsonOperation {
    Add {
        path: Vec<String>,
        value: Value,
    },
    Remove {
        path: Vec<String>,
    },
    Replace {
        path: Vec<String>,
        value: Value,
    },
    Move {
        from: Vec<String>,
        path: Vec<String>,
    },
    Copy {
        from: Vec<String>,
        path: Vec<String>,
    },
    Test {
        path: Vec<String>,
        value: Value,
    },
}

/// A patch that cannot be applied to this resource (a path that is not there, a failed
/// `test`): 422, naming the operation.
pub(super) fn unprocessable(code: IssueType, diagnostics: impl Into<String>) -> FhirError {
    FhirError::new(StatusCode::UNPROCESSABLE_ENTITY, code, diagnostics)
}

/// RFC 6901: `""` is the whole document; otherwise `/`-separated tokens, `~1` = `/`,
/// `~0` = `~`, any other `~` is an error.
fn parse_pointer(text: &str) -> Option<Vec<String>> {
    if text.is_empty() {
        return Some(Vec::new());
    }
    let rest = text.strip_prefix('/')?;
    rest.split('/')
        .map(|token| {
            let mut out = String::with_capacity(token.len());
            let mut chars = token.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => out.push('~'),
                    Some('1') => out.push('/'),
                    _ => return None,
                }
            }
            Some(out)
        })
        .collect()
}

/// Parse an `application/json-patch+json` body. 400 for anything that is not a well-formed
/// patch document.
pub(super) fn parse_json_patch(bytes: &[u8]) -> Result<Patch, FhirError> {
    let document: Value = serde_json::from_slice(bytes).map_err(|e| {
        FhirError::new(
            StatusCode::BAD_REQUEST,
            IssueType::Structure,
            format!("the JSON Patch is not valid JSON: {e}"),
        )
    })?;
    json_patch_operations(&document).map(Patch::Json)
}

/// The operations of a JSON Patch document (also used for a Bundle entry's Binary patch).
pub(super) fn json_patch_operations(document: &Value) -> Result<Vec<JsonOperation>, FhirError> {
    let Value::Array(items) = document else {
        return Err(FhirError::bad_request(
            "a JSON Patch document is an array of operations",
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let bad = |what: &str| {
                FhirError::bad_request(format!("JSON Patch operation {i}: {what}"))
                    .at(format!("/{i}"))
            };
            let Value::Object(op) = item else {
                return Err(bad("must be an object"));
            };
            let pointer = |name: &str| -> Result<Vec<String>, FhirError> {
                let text = op
                    .get(name)
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(&format!("'{name}' is missing or not a string")))?;
                parse_pointer(text).ok_or_else(|| bad(&format!("'{name}' is not a JSON Pointer")))
            };
            let value = || {
                op.get("value")
                    .cloned()
                    .ok_or_else(|| bad("'value' is missing"))
            };
            match op.get("op").and_then(Value::as_str) {
                Some("add") => Ok(JsonOperation::Add {
                    path: pointer("path")?,
                    value: value()?,
                }),
                Some("remove") => Ok(JsonOperation::Remove {
                    path: pointer("path")?,
                }),
                Some("replace") => Ok(JsonOperation::Replace {
                    path: pointer("path")?,
                    value: value()?,
                }),
                Some("move") => Ok(JsonOperation::Move {
                    from: pointer("from")?,
                    path: pointer("path")?,
                }),
                Some("copy") => Ok(JsonOperation::Copy {
                    from: pointer("from")?,
                    path: pointer("path")?,
                }),
                Some("test") => Ok(JsonOperation::Test {
                    path: pointer("path")?,
                    value: value()?,
                }),
                Some(_) => Err(bad("'op' must be add, remove, replace, move, copy or test")),
                None => Err(bad("'op' is missing")),
            }
        })
        .collect()
}

/// An array index token: digits without leading zeros (RFC 6901 §4).
fn array_index(token: &str) -> Option<usize> {
    if token.is_empty() || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    if !token.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    token.parse().ok()
}

fn get<'a>(mut value: &'a Value, path: &[String]) -> Option<&'a Value> {
    for token in path {
        value = match value {
            Value::Object(map) => map.get(token)?,
            Value::Array(items) => items.get(array_index(token)?)?,
            _ => return None,
        };
    }
    Some(value)
}

fn get_mut<'a>(mut value: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    for token in path {
        value = match value {
            Value::Object(map) => map.get_mut(token)?,
            Value::Array(items) => items.get_mut(array_index(token)?)?,
            _ => return None,
        };
    }
    Some(value)
}

/// Numbers compare by value (`1` equals `1.0`), as RFC 6902 §4.6 asks; the stored JSON keeps
/// numbers as written, so plain `==` would not.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

fn json_add(root: &mut Value, path: &[String], value: Value) -> Result<(), &'static str> {
    let Some((last, parent_path)) = path.split_last() else {
        *root = value;
        return Ok(());
    };
    match get_mut(root, parent_path) {
        Some(Value::Object(map)) => {
            map.insert(last.clone(), value);
            Ok(())
        }
        Some(Value::Array(items)) if last == "-" => {
            items.push(value);
            Ok(())
        }
        Some(Value::Array(items)) => match array_index(last) {
            Some(i) if i <= items.len() => {
                items.insert(i, value);
                Ok(())
            }
            _ => Err("the array index is out of range"),
        },
        Some(_) => Err("the parent of the path is not an object or an array"),
        None => Err("the parent of the path does not exist"),
    }
}

fn json_remove(root: &mut Value, path: &[String]) -> Result<Value, &'static str> {
    let Some((last, parent_path)) = path.split_last() else {
        return Err("the whole resource cannot be removed");
    };
    match get_mut(root, parent_path) {
        // shift_remove keeps the order of the other elements (the stored JSON's order).
        Some(Value::Object(map)) => map.shift_remove(last).ok_or("the path does not exist"),
        Some(Value::Array(items)) => match array_index(last) {
            Some(i) if i < items.len() => Ok(items.remove(i)),
            _ => Err("the path does not exist"),
        },
        _ => Err("the path does not exist"),
    }
}

/// Apply RFC 6902 operations in order; the first failure fails the patch (the caller works
/// on a copy, so nothing half-applied survives).
fn apply_json(operations: &[JsonOperation], root: &mut Value) -> Result<(), FhirError> {
    for (i, op) in operations.iter().enumerate() {
        let failed = |what: &str| {
            unprocessable(
                IssueType::Invalid,
                format!("JSON Patch operation {i} cannot be applied: {what}"),
            )
            .at(format!("/{i}"))
        };
        match op {
            JsonOperation::Add { path, value } => {
                json_add(root, path, value.clone()).map_err(failed)?;
            }
            JsonOperation::Remove { path } => {
                json_remove(root, path).map_err(failed)?;
            }
            JsonOperation::Replace { path, value } => {
                let target =
                    get_mut(root, path).ok_or_else(|| failed("the path does not exist"))?;
                *target = value.clone();
            }
            JsonOperation::Move { from, path } => {
                if path.len() > from.len() && path.starts_with(from) {
                    return Err(failed("a value cannot be moved into itself"));
                }
                let value = json_remove(root, from).map_err(|_| failed("'from' does not exist"))?;
                json_add(root, path, value).map_err(failed)?;
            }
            JsonOperation::Copy { from, path } => {
                let value = get(root, from)
                    .cloned()
                    .ok_or_else(|| failed("'from' does not exist"))?;
                json_add(root, path, value).map_err(failed)?;
            }
            JsonOperation::Test { path, value } => {
                let matches = get(root, path).is_some_and(|current| json_equal(current, value));
                if !matches {
                    // The value is not quoted: it may be PHI.
                    return Err(unprocessable(
                        IssueType::Conflict,
                        format!("JSON Patch operation {i} (test) failed: the resource does not have the tested value"),
                    )
                    .at(format!("/{i}")));
                }
            }
        }
    }
    Ok(())
}

/// Apply a patch to a resource's JSON.
pub(super) fn apply(patch: &Patch, resource: &mut Value) -> Result<(), FhirError> {
    match patch {
        Patch::Json(operations) => apply_json(operations, resource),
        Patch::FhirPath(operations) => fhirpath_patch::apply(operations, resource),
    }
}

/// Patch the current version of `resource_type/id` inside `tx` and store the result as the
/// next version. 404/410 when there is nothing to patch; 412 on an `If-Match` mismatch;
/// 422 when the patch changes `id` or `resourceType`; the write checks otherwise.
pub(super) async fn patch_in_tx(
    tx: &mut TenantTx,
    resource_type: &str,
    id: &str,
    if_match: Option<i64>,
    patch: &Patch,
    local_base: &str,
    policy: ValidationPolicy,
) -> Result<StoredVersion, FhirError> {
    let current = tx
        .current_for_update(resource_type, id)
        .await?
        .ok_or(StoreError::NotFound)?;
    if current.deleted {
        return Err(StoreError::Gone(current.stamp()).into());
    }
    if let Some(expected) = if_match
        && expected != current.version_id
    {
        return Err(StoreError::VersionConflict {
            expected,
            current: current.version_id,
        }
        .into());
    }
    let mut value: Value = serde_json::from_str(current.content.as_deref().unwrap_or_default())
        .map_err(|_| StoreError::Corrupt("resource content is not JSON"))?;
    apply(patch, &mut value)?;
    if value.get("resourceType").and_then(Value::as_str) != Some(resource_type) {
        return Err(
            unprocessable(IssueType::Invariant, "a patch must not change resourceType")
                .at(format!("{resource_type}.resourceType")),
        );
    }
    if value.get("id").and_then(Value::as_str) != Some(id) {
        return Err(
            unprocessable(IssueType::Invariant, "a patch must not change id")
                .at(format!("{resource_type}.id")),
        );
    }
    // The same checks a PUT body gets.
    let checked = body::check_value(value, resource_type, policy)?;
    let (stored, _) = tx
        .put(resource_type, id, if_match, |stamp| {
            checked.render(id, stamp, local_base)
        })
        .await?;
    Ok(stored)
}

/// The media type without parameters, lower case.
fn essence(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        value
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase(),
    )
}

pub async fn patch(
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    payload: web::Payload,
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    let (_, resource_type, id) = path.into_inner();
    let visibility = preflight_visible(&req, &auth, &resource_type, Interaction::Update)?;
    if !body::is_valid_id(&id) {
        return Err(FhirError::bad_request(
            "the id in the URL is not a valid FHIR id",
        ));
    }
    auth.check_existing_visible(&state.store, &visibility, &resource_type, &id)
        .await?;
    auth.note(|n| n.event = Some("patch"));
    // The patch format is chosen by Content-Type; a PATCH without one is ambiguous.
    let json_patch = match essence(&req).as_deref() {
        Some("application/json-patch+json") => true,
        Some("application/fhir+json" | "application/json" | "application/json+fhir") => false,
        _ => {
            return Err(FhirError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                IssueType::NotSupported,
                "PATCH takes application/json-patch+json (JSON Patch) or application/fhir+json (FHIRPath Patch Parameters)",
            ));
        }
    };
    let if_match = negotiate::if_match(&req)?;
    let bytes = body::read_limited(&req, payload, state.config.server.max_body_bytes).await?;
    let patch = if json_patch {
        parse_json_patch(&bytes)?
    } else {
        let parameters: Value = serde_json::from_slice(&bytes).map_err(|e| {
            FhirError::new(
                StatusCode::BAD_REQUEST,
                IssueType::Structure,
                format!("the body is not valid JSON: {e}"),
            )
        })?;
        Patch::FhirPath(fhirpath_patch::parse(&parameters)?)
    };
    let tenant = &auth.principal.tenant;
    let local_base = format!("{}/", state.fhir_base(tenant));
    let policy = state.validation_policy(tenant).await?;
    let mut tx = state.store.begin(tenant).await?;
    let stored = patch_in_tx(
        &mut tx,
        &resource_type,
        &id,
        if_match,
        &patch,
        &local_base,
        policy,
    )
    .await?;
    tx.commit().await?;
    Ok(write_response(&req, StatusCode::OK, &stored, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(patch: Value, mut doc: Value) -> Result<Value, FhirError> {
        let ops = json_patch_operations(&patch)?;
        apply_json(&ops, &mut doc)?;
        Ok(doc)
    }

    #[test]
    fn pointers() {
        assert_eq!(parse_pointer(""), Some(vec![]));
        assert_eq!(
            parse_pointer("/a~1b/c~0d/0"),
            Some(vec!["a/b".into(), "c~d".into(), "0".into()])
        );
        assert_eq!(parse_pointer("a"), None);
        assert_eq!(parse_pointer("/a~2"), None);
        assert_eq!(array_index("01"), None);
        assert_eq!(array_index("10"), Some(10));
    }

    #[test]
    fn rfc6902_operations() {
        let doc = json!({"a": [1, 2], "b": {"c": "x"}});
        let out = run(
            json!([
                {"op": "add", "path": "/a/1", "value": 9},
                {"op": "add", "path": "/a/-", "value": 3},
                {"op": "replace", "path": "/b/c", "value": "y"},
                {"op": "copy", "from": "/b", "path": "/d"},
                {"op": "move", "from": "/d/c", "path": "/e"},
                {"op": "remove", "path": "/a/0"},
                {"op": "test", "path": "/a", "value": [9, 2.0, 3]}
            ]),
            doc,
        );
        assert_eq!(
            out.ok(),
            Some(json!({"a": [9, 2, 3], "b": {"c": "y"}, "d": {}, "e": "y"}))
        );
    }

    #[test]
    fn failures() {
        let doc = json!({"a": 1});
        let test = run(
            json!([{"op": "test", "path": "/a", "value": 2}]),
            doc.clone(),
        );
        assert_eq!(test.err().map(|e| e.status.as_u16()), Some(422));
        let missing = run(json!([{"op": "remove", "path": "/b"}]), doc.clone());
        assert_eq!(missing.err().map(|e| e.status.as_u16()), Some(422));
        let into_itself = run(
            json!([{"op": "move", "from": "", "path": "/a/b"}]),
            doc.clone(),
        );
        assert_eq!(into_itself.err().map(|e| e.status.as_u16()), Some(422));
        let malformed = run(json!([{"op": "frob", "path": "/a"}]), doc.clone());
        assert_eq!(malformed.err().map(|e| e.status.as_u16()), Some(400));
        let no_value = run(json!([{"op": "add", "path": "/a"}]), doc.clone());
        assert_eq!(no_value.err().map(|e| e.status.as_u16()), Some(400));
        let not_array = run(json!({"op": "add"}), doc);
        assert_eq!(not_array.err().map(|e| e.status.as_u16()), Some(400));
    }
}
