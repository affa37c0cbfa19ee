//! Transaction and batch Bundles: `POST /fhir/{tenant}`.
//!
//! A transaction is all or nothing in ONE `TenantTx`: every check that needs no database
//! (entry shape, URLs and bases, duplicate fullUrls, scopes, dangling `urn:` references,
//! conditional references that depend on the bundle) runs first; then, in the transaction,
//! conditional references are resolved against the data as it was, DELETEs run, POST ids are
//! assigned (or `ifNoneExist` matched), PUT/PATCH targets are resolved, references to
//! `fullUrl`s and conditional references are rewritten to `Type/id`, every resource passes
//! `crate::resource::check`, POSTs are written, then PUTs and PATCHes (bundle order), then GETs
//! read what was written. Any failure drops the transaction, so nothing is stored.
//!
//! A batch runs each entry the same way but alone, in its own transaction; a failed entry
//! answers with its status and an OperationOutcome in `response.outcome`, and the batch is
//! 200. Batch entries cannot refer to each other (there is no order between them to rely on).

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use super::authn::Authenticated;
use super::body;
use super::conditional::{self, criteria, if_none_exist_criteria, single_match, update_target};
use super::fhirpath_patch;
use super::negotiate::{self, FHIR_JSON, ReturnPreference};
use super::outcome::{FhirError, Issue, IssueType, Severity, operation_outcome};
use super::patch::{self, Patch, patch_in_tx};
use crate::access::Visibility;
use crate::auth::Interaction;
use crate::conformance::R4Structure;
use crate::resource::{CheckedResource, ValidationPolicy};
use crate::search::IndexValue;
use crate::search::query::{
    AccessFilter, Predicate, SearchQuery, Summary, SystemMatch, parse_confined_search, parse_search,
};
use crate::state::AppState;
use crate::store::{SearchPage, StoreError, StoredVersion, TenantTx, VersionStamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Transaction,
    Batch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
}

/// What `request.url` names, relative to this tenant's base.
#[derive(Debug, Clone)]
enum Target {
    /// `Patient` (POST; GET = search without parameters)
    Type(String),
    /// `Patient/123`
    Instance(String, String),
    /// `Patient/123/_history/2` (GET)
    Version(String, String, i64),
    /// `Patient?identifier=...` (conditional PUT/DELETE, or a GET search)
    Search(String, Box<SearchQuery>),
}

impl Target {
    fn resource_type(&self) -> &str {
        match self {
            Target::Type(t)
            | Target::Instance(t, _)
            | Target::Version(t, _, _)
            | Target::Search(t, _) => t,
        }
    }
}

/// A conditional reference (`Patient?identifier=a|1`) found in an entry's resource.
#[derive(Debug, Clone)]
struct ConditionalReference {
    expression: String,
    text: String,
    query: SearchQuery,
}

/// One checked entry of the request Bundle.
#[derive(Debug, Clone)]
struct Entry {
    index: usize,
    full_url: Option<String>,
    method: Method,
    target: Target,
    /// POST/PUT: the resource; PATCH: the Parameters or Binary patch.
    resource: Option<Value>,
    if_none_exist: Option<SearchQuery>,
    if_match: Option<i64>,
    /// `urn:uuid:`/`urn:oid:` references in the resource: (expression, reference).
    placeholders: Vec<(String, String)>,
    conditional_references: Vec<ConditionalReference>,
    /// The caller's filtered decision for the entry's write (`None`: the whole type).
    write_filter: Option<AccessFilter>,
    /// The caller's filtered decision for a GET entry's read or search.
    read_filter: Option<AccessFilter>,
}

/// What an entry did, for its response.
enum Outcome {
    Created(StoredVersion),
    Updated(StoredVersion),
    /// `ifNoneExist` matched: nothing written.
    Existing(StoredVersion),
    Deleted(Option<VersionStamp>),
    Read(StoredVersion),
    Searched(Value),
}

/// What every entry needs to know about the request.
struct Context<'a> {
    auth: &'a Authenticated,
    /// For checks outside the entry's transaction (included resources' visibility).
    store: crate::store::Store,
    /// This tenant's FHIR base, no trailing slash.
    base: String,
    /// The same with a trailing slash, for reference parsing.
    local_base: String,
    strict: bool,
    preference: ReturnPreference,
    /// The tenant's profile validation, applied to every entry.
    policy: ValidationPolicy,
}

fn placeholder(text: &str) -> bool {
    text.starts_with("urn:uuid:") || text.starts_with("urn:oid:")
}

/// Name the entry in every issue of an error: the diagnostics say which entry, and each
/// expression is rewritten from the resource (`Patient.name[0]`) to the Bundle
/// (`Bundle.entry[3].resource.name[0]`).
fn at_entry(index: usize, mut error: FhirError) -> FhirError {
    let entry = format!("Bundle.entry[{index}]");
    for issue in &mut error.issues {
        if issue.diagnostics.starts_with(&entry) {
            // Already about this entry.
            continue;
        }
        issue.diagnostics = format!("{entry}: {}", issue.diagnostics);
        let mut expressions: Vec<String> = issue
            .expression
            .iter()
            .map(|e| {
                if e.starts_with("Bundle.entry[") {
                    e.clone()
                } else if e.starts_with(|c: char| c.is_ascii_uppercase()) {
                    let rest = e.find(['.', '[']).map_or("", |i| &e[i..]);
                    format!("{entry}.resource{rest}")
                } else {
                    format!("{entry}.resource")
                }
            })
            .collect();
        if expressions.is_empty() {
            expressions.push(entry.clone());
        }
        issue.expression = expressions;
    }
    error
}

fn bad_entry(index: usize, element: &str, diagnostics: impl Into<String>) -> FhirError {
    let at = if element.is_empty() {
        format!("Bundle.entry[{index}]")
    } else {
        format!("Bundle.entry[{index}].{element}")
    };
    at_entry(index, FhirError::bad_request(diagnostics).at(at))
}

/// Strip this tenant's base from an absolute URL; refuse any other base. Relative URLs pass.
fn relative_to_base<'u>(url: &'u str, ctx: &Context) -> Result<&'u str, &'static str> {
    if let Some(rest) = url.strip_prefix(&ctx.local_base) {
        return Ok(rest);
    }
    // Only the path decides: search values may hold URLs (`identifier=http://...|1`).
    let path = url.split('?').next().unwrap_or_default();
    if path.contains("://") {
        return Err("is an absolute URL outside this tenant's FHIR base");
    }
    Ok(url.trim_start_matches('/'))
}

fn parse_full_url(
    index: usize,
    value: Option<&Value>,
    ctx: &Context,
) -> Result<Option<String>, FhirError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let bad = |what: &str| bad_entry(index, "fullUrl", format!("fullUrl {what}"));
    let text = value.as_str().ok_or_else(|| bad("must be a string"))?;
    if let Some(uuid) = text.strip_prefix("urn:uuid:") {
        return match uuid::Uuid::parse_str(uuid) {
            Ok(_) => Ok(Some(text.to_owned())),
            Err(_) => Err(bad("is not a valid urn:uuid")),
        };
    }
    if let Some(oid) = text.strip_prefix("urn:oid:") {
        let valid = !oid.is_empty()
            && oid
                .split('.')
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        return if valid {
            Ok(Some(text.to_owned()))
        } else {
            Err(bad("is not a valid urn:oid"))
        };
    }
    if text.starts_with(&ctx.local_base) {
        return Ok(Some(text.to_owned()));
    }
    if text.contains("://") {
        return Err(bad("is an absolute URL outside this tenant's FHIR base"));
    }
    Err(bad(
        "must be a urn:uuid, a urn:oid or an absolute URL under this tenant's FHIR base",
    ))
}

/// `request.url` as a target. `method` decides which forms are allowed.
fn parse_target(
    index: usize,
    method: Method,
    url: &str,
    ctx: &Context,
) -> Result<Target, FhirError> {
    let bad = |what: &str| bad_entry(index, "request.url", what.to_owned());
    let url = relative_to_base(url, ctx).map_err(|what| bad(&format!("request.url {what}")))?;
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (url, None),
    };
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let resource_type = segments.first().copied().unwrap_or_default();
    if !R4Structure::global().is_resource_type(resource_type) {
        return Err(bad("request.url does not start with an R4 resource type"));
    }
    let valid_id = |id: &str| {
        if body::is_valid_id(id) {
            Ok(id.to_owned())
        } else {
            Err(bad("the id in request.url is not a valid FHIR id"))
        }
    };
    let t = resource_type.to_owned();
    match (segments.as_slice(), query) {
        ([_], None) => Ok(Target::Type(t)),
        ([_], Some(q)) => {
            let query = match method {
                Method::Get | Method::Head => {
                    let params: Vec<(String, String)> =
                        serde_urlencoded::from_str(q).map_err(|_| {
                            bad("the query of request.url is not valid form-urlencoded text")
                        })?;
                    // As for GET /{type}: a search confined to a patient's compartment or a
                    // practitioner's care set needs no patient parameter.
                    let parse = if crate::access::confined_to_patient(
                        &ctx.auth.principal,
                        &t,
                        Interaction::Search,
                    ) {
                        parse_confined_search
                    } else {
                        parse_search
                    };
                    parse(&t, &params, ctx.strict, &ctx.local_base).map_err(|e| {
                        at_entry(
                            index,
                            FhirError::bad_request(e.to_string())
                                .at(format!("Bundle.entry[{index}].request.url")),
                        )
                    })?
                }
                _ => criteria(&t, q, &ctx.local_base).map_err(|e| {
                    at_entry(index, e.at(format!("Bundle.entry[{index}].request.url")))
                })?,
            };
            Ok(Target::Search(t, Box::new(query)))
        }
        // A query on an instance URL (`_format`, `_pretty`) changes nothing here.
        ([_, id], _) => Ok(Target::Instance(t, valid_id(id)?)),
        ([_, id, "_history", version], _) => {
            let version = version
                .parse::<i64>()
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| bad("the version in request.url is not a positive integer"))?;
            Ok(Target::Version(t, valid_id(id)?, version))
        }
        _ => Err(bad(
            "request.url is not a resource type, a type with search parameters, an instance or a version",
        )),
    }
}

/// Walk a resource for `reference` strings: placeholders and conditional references.
fn collect_references(
    index: usize,
    value: &Value,
    expression: &mut String,
    ctx: &Context,
    entry: &mut Entry,
) -> Result<(), FhirError> {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let len = expression.len();
                expression.push('.');
                expression.push_str(key);
                if key == "reference"
                    && let Value::String(text) = child
                {
                    if placeholder(text) {
                        entry.placeholders.push((expression.clone(), text.clone()));
                    } else {
                        let relative = text.strip_prefix(&ctx.local_base).unwrap_or(text);
                        if let Some((ty, q)) = relative.split_once('?')
                            && !ty.contains('/')
                            && !ty.contains(':')
                        {
                            if !R4Structure::global().is_resource_type(ty) {
                                return Err(at_entry(
                                    index,
                                    FhirError::bad_request(
                                        "a conditional reference must start with an R4 resource type",
                                    )
                                    .at(expression.clone()),
                                ));
                            }
                            let query = criteria(ty, q, &ctx.local_base)
                                .map_err(|e| at_entry(index, e.at(expression.clone())))?;
                            entry.conditional_references.push(ConditionalReference {
                                expression: expression.clone(),
                                text: text.clone(),
                                query,
                            });
                        }
                    }
                }
                collect_references(index, child, expression, ctx, entry)?;
                expression.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let len = expression.len();
                expression.push_str(&format!("[{i}]"));
                collect_references(index, child, expression, ctx, entry)?;
                expression.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Rewrite every `reference` found in `map` (placeholder or conditional) to `Type/id`.
fn rewrite_references(value: &mut Value, map: &HashMap<String, String>) {
    match value {
        Value::Object(object) => {
            for (key, child) in object.iter_mut() {
                if key == "reference"
                    && let Value::String(text) = child
                    && let Some(target) = map.get(text.as_str())
                {
                    *text = target.clone();
                    continue;
                }
                rewrite_references(child, map);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_references(v, map)),
        _ => {}
    }
}

/// The patch an entry carries: a FHIRPath Patch Parameters resource, or a Binary holding a
/// JSON Patch (`contentType` application/json-patch+json, base64 `data`).
fn entry_patch(resource: &Value) -> Result<Patch, FhirError> {
    match resource.get("resourceType").and_then(Value::as_str) {
        Some("Parameters") => Ok(Patch::FhirPath(fhirpath_patch::parse(resource)?)),
        Some("Binary") => {
            let content_type = resource
                .get("contentType")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if content_type.split(';').next().map(str::trim) != Some("application/json-patch+json")
            {
                return Err(fhirpath_patch::not_a_patch(
                    "a Binary patch must have contentType application/json-patch+json",
                ));
            }
            let data = resource
                .get("data")
                .and_then(Value::as_str)
                .and_then(|d| STANDARD.decode(d).ok())
                .ok_or_else(|| fhirpath_patch::not_a_patch("the Binary's data is not base64"))?;
            patch::parse_json_patch(&data)
        }
        _ => Err(fhirpath_patch::not_a_patch(
            "a PATCH entry's resource is a Parameters (FHIRPath Patch) or a Binary (JSON Patch)",
        )),
    }
}

/// Check one raw entry (no database).
fn parse_entry(index: usize, raw: &Value, ctx: &Context) -> Result<Entry, FhirError> {
    let Value::Object(raw) = raw else {
        return Err(bad_entry(index, "", "an entry must be a JSON object"));
    };
    let full_url = parse_full_url(index, raw.get("fullUrl"), ctx)?;
    let Some(Value::Object(request)) = raw.get("request") else {
        return Err(bad_entry(
            index,
            "request",
            "transaction and batch entries need a request (method and url)",
        ));
    };
    let method = match request.get("method").and_then(Value::as_str) {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        Some("POST") => Method::Post,
        Some("PUT") => Method::Put,
        Some("PATCH") => Method::Patch,
        Some("DELETE") => Method::Delete,
        Some(_) => {
            return Err(bad_entry(
                index,
                "request.method",
                "request.method must be GET, HEAD, POST, PUT, PATCH or DELETE",
            ));
        }
        None => {
            return Err(bad_entry(
                index,
                "request.method",
                "request.method is missing",
            ));
        }
    };
    let url = request
        .get("url")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| bad_entry(index, "request.url", "request.url is missing"))?;
    let target = parse_target(index, method, url, ctx)?;
    let if_match = match request.get("ifMatch") {
        None => None,
        Some(v) => Some(
            v.as_str()
                .and_then(conditional::etag_version)
                .ok_or_else(|| {
                    bad_entry(
                        index,
                        "request.ifMatch",
                        "ifMatch must be an ETag such as W/\"3\"",
                    )
                })?,
        ),
    };
    let resource_type = target.resource_type().to_owned();
    let resource = match raw.get("resource") {
        None => None,
        Some(Value::Object(r)) => Some(Value::Object(r.clone())),
        Some(_) => {
            return Err(bad_entry(
                index,
                "resource",
                "resource must be a JSON object",
            ));
        }
    };
    let mut entry = Entry {
        index,
        full_url,
        method,
        target,
        resource: None,
        if_none_exist: None,
        if_match,
        placeholders: Vec::new(),
        conditional_references: Vec::new(),
        write_filter: None,
        read_filter: None,
    };
    let wrong_target = |what: &str| bad_entry(index, "request.url", what.to_owned());
    match (method, &entry.target) {
        (Method::Post, Target::Type(_)) => {}
        (Method::Post, _) => {
            return Err(wrong_target(
                "a POST entry's request.url is a resource type",
            ));
        }
        (Method::Put, Target::Instance(..) | Target::Search(..)) => {}
        (Method::Put, _) => {
            return Err(wrong_target(
                "a PUT entry's request.url is Type/id or Type?criteria",
            ));
        }
        (Method::Patch, Target::Instance(..)) => {}
        (Method::Patch, _) => {
            return Err(wrong_target(
                "a PATCH entry's request.url is Type/id (conditional patch is not supported)",
            ));
        }
        (Method::Delete, Target::Instance(..) | Target::Search(..)) => {}
        (Method::Delete, _) => {
            return Err(wrong_target(
                "a DELETE entry's request.url is Type/id or Type?criteria",
            ));
        }
        (Method::Get | Method::Head, _) => {}
    }
    if matches!(method, Method::Post | Method::Put | Method::Patch) {
        let Some(resource) = resource else {
            return Err(bad_entry(index, "resource", "this entry needs a resource"));
        };
        if method == Method::Patch {
            entry_patch(&resource).map_err(|e| at_entry(index, e))?;
        } else {
            match resource.get("resourceType").and_then(Value::as_str) {
                Some(t) if t == resource_type => {}
                _ => {
                    return Err(bad_entry(
                        index,
                        "resource.resourceType",
                        format!("the resource must be a {resource_type}, as request.url says"),
                    ));
                }
            }
            let body_id = resource.get("id");
            match (&entry.target, body_id) {
                (Target::Instance(_, id), Some(Value::String(body))) if body == id => {}
                (Target::Instance(..), Some(_)) => {
                    return Err(bad_entry(
                        index,
                        "resource.id",
                        "the id in the resource does not match request.url",
                    ));
                }
                (Target::Instance(..), None) if method == Method::Put => {
                    return Err(bad_entry(
                        index,
                        "resource.id",
                        "an update must carry the resource id",
                    ));
                }
                (Target::Search(..), Some(Value::String(id))) if !body::is_valid_id(id) => {
                    return Err(bad_entry(
                        index,
                        "resource.id",
                        "the id in the resource is not a valid FHIR id",
                    ));
                }
                _ => {}
            }
        }
        let mut expression = format!("Bundle.entry[{index}].resource");
        collect_references(index, &resource, &mut expression, ctx, &mut entry)?;
        entry.resource = Some(resource);
    }
    if let Some(raw) = request.get("ifNoneExist") {
        if method != Method::Post {
            return Err(bad_entry(
                index,
                "request.ifNoneExist",
                "ifNoneExist is for POST entries",
            ));
        }
        let text = raw.as_str().ok_or_else(|| {
            bad_entry(index, "request.ifNoneExist", "ifNoneExist must be a string")
        })?;
        let query = criteria(
            &resource_type,
            if_none_exist_criteria(&resource_type, text),
            &ctx.local_base,
        )
        .map_err(|e| {
            at_entry(
                index,
                e.at(format!("Bundle.entry[{index}].request.ifNoneExist")),
            )
        })?;
        entry.if_none_exist = Some(query);
    }
    Ok(entry)
}

/// The access decision for an entry: refused when the caller may not do it at all;
/// otherwise every search it makes (conditional targets, `ifNoneExist`, conditional
/// references, GET searches) is limited to what the caller may see, and filtered writes and
/// reads are noted for the checks `execute` makes (the write guard checks the new states).
fn apply_access(entry: &mut Entry, ctx: &Context) -> Result<(), FhirError> {
    let t = entry.target.resource_type().to_owned();
    // The audit log is Hearth's own record, served at /AuditEvent, never written by clients.
    if t == "AuditEvent" {
        return Err(at_entry(
            entry.index,
            FhirError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                IssueType::NotSupported,
                "AuditEvent is written by Hearth only; read it at /AuditEvent, not in a Bundle",
            ),
        ));
    }
    let index = entry.index;
    let decide = |t: &str, interaction: Interaction| -> Result<Option<AccessFilter>, FhirError> {
        match ctx
            .auth
            .visibility(t, interaction)
            .map_err(|e| at_entry(index, e))?
        {
            Visibility::All => Ok(None),
            Visibility::Filtered(f) => Ok(Some(f)),
        }
    };
    let write = match entry.method {
        Method::Post => Some(Interaction::Create),
        Method::Put | Method::Patch => Some(Interaction::Update),
        Method::Delete => Some(Interaction::Delete),
        Method::Get | Method::Head => None,
    };
    if let Some(interaction) = write {
        entry.write_filter = decide(&t, interaction)?;
        // Conditional matching is a search of what the caller may see.
        if let Target::Search(_, q) = &mut entry.target {
            q.access = decide(&t, Interaction::Search)?;
        }
        if let Some(q) = &mut entry.if_none_exist {
            q.access = decide(&t, Interaction::Search)?;
        }
    } else {
        match &mut entry.target {
            Target::Instance(..) | Target::Version(..) => {
                entry.read_filter = decide(&t, Interaction::Read)?;
            }
            Target::Type(_) => entry.read_filter = decide(&t, Interaction::Search)?,
            Target::Search(_, q) => {
                q.access = decide(&t, Interaction::Search)?;
                for inc in q.includes.iter().chain(&q.revincludes) {
                    let target = if q.revincludes.contains(inc) {
                        inc.source_type.clone()
                    } else {
                        inc.target_type
                            .clone()
                            .unwrap_or_else(|| inc.source_type.clone())
                    };
                    decide(&target, Interaction::Read)?;
                }
            }
        }
    }
    for r in &mut entry.conditional_references {
        let rt = r.query.resource_type.clone();
        r.query.access = decide(&rt, Interaction::Search)?;
    }
    Ok(())
}

/// Under a filtered write decision, an existing target must be one the caller may see.
async fn check_existing(
    tx: &mut TenantTx,
    e: &Entry,
    id: &str,
    ctx: &Context<'_>,
) -> Result<(), FhirError> {
    let Some(filter) = &e.write_filter else {
        return Ok(());
    };
    let t = e.target.resource_type();
    if tx.is_hidden(t, id, filter).await? {
        Err(at_entry(e.index, ctx.auth.outside(t, id)))
    } else {
        Ok(())
    }
}

/// Three-valued: can an in-memory resource satisfy a predicate? `None` = cannot tell here.
fn predicate_holds(
    p: &Predicate,
    index: &[crate::search::IndexEntry],
    id: Option<&str>,
) -> Option<bool> {
    fn rows<'a>(
        index: &'a [crate::search::IndexEntry],
        param: &'a str,
    ) -> impl Iterator<Item = &'a crate::search::IndexEntry> {
        index.iter().filter(move |e| e.param == param)
    }
    match p {
        // A POSTed resource's id is assigned by the server: no criteria can name it.
        Predicate::Id(wanted) => Some(id == Some(wanted.as_str())),
        Predicate::Token {
            param,
            system,
            code,
        } => Some(rows(index, param).any(|e| match &e.value {
            IndexValue::Token(t) => {
                code.as_ref().is_none_or(|c| t.code.as_ref() == Some(c))
                    && match system {
                        SystemMatch::Any => true,
                        SystemMatch::Absent => t.system.is_none(),
                        SystemMatch::Is(s) => t.system.as_ref() == Some(s),
                    }
            }
            _ => false,
        })),
        Predicate::String { param, mode, value } => {
            Some(rows(index, param).any(|e| match &e.value {
                IndexValue::String(s) => match mode {
                    crate::search::query::StringMode::Prefix => {
                        s.normalized.starts_with(value.as_str())
                    }
                    crate::search::query::StringMode::Exact => s.exact == *value,
                    crate::search::query::StringMode::Contains => {
                        s.normalized.contains(value.as_str())
                    }
                },
                _ => false,
            }))
        }
        Predicate::Missing { param, missing, .. } => {
            Some(rows(index, param).next().is_none() == *missing)
        }
        _ => None,
    }
}

/// Could `resource` (about to be written by the bundle) match `query`? Token, string, `_id`
/// and `:missing` criteria are decided here; anything else counts as "could", so a
/// conditional reference that might depend on the bundle is refused rather than resolved by
/// luck of ordering.
fn could_match(query: &SearchQuery, index: &[crate::search::IndexEntry], id: Option<&str>) -> bool {
    query.clauses.iter().all(|clause| {
        let results: Vec<Option<bool>> = clause
            .any_of
            .iter()
            .map(|p| predicate_holds(p, index, id))
            .collect();
        let value = if results.contains(&Some(true)) {
            Some(true)
        } else if results.contains(&None) {
            None
        } else {
            Some(false)
        };
        match value {
            None => true,
            Some(v) => v != clause.negated,
        }
    })
}

/// The checks of a whole transaction that need no database.
fn check_transaction(entries: &[Entry], ctx: &Context) -> Result<(), FhirError> {
    let mut full_urls: HashMap<&str, usize> = HashMap::new();
    for e in entries {
        if let Some(url) = &e.full_url
            && let Some(first) = full_urls.insert(url, e.index)
        {
            return Err(bad_entry(
                e.index,
                "fullUrl",
                format!("fullUrl is also the fullUrl of entry {first}; fullUrls must be unique"),
            ));
        }
    }
    let writers: HashMap<&str, &Entry> = entries
        .iter()
        .filter(|e| matches!(e.method, Method::Post | Method::Put | Method::Patch))
        .filter_map(|e| e.full_url.as_deref().map(|u| (u, e)))
        .collect();
    for e in entries {
        for (expression, text) in &e.placeholders {
            if !writers.contains_key(text.as_str()) {
                let problem = if full_urls.contains_key(text.as_str()) {
                    "refers to an entry that creates or updates no resource"
                } else {
                    "refers to no fullUrl in this bundle"
                };
                return Err(at_entry(
                    e.index,
                    FhirError::bad_request(format!("the reference {problem}"))
                        .at(expression.clone()),
                ));
            }
        }
    }
    // A conditional reference is resolved against the data as it was before the bundle; if a
    // resource of this bundle could match it, the answer would depend on processing order.
    // Index rows of each written resource, computed once (a bundle may hold many references).
    let mut rows: HashMap<usize, Vec<crate::search::IndexEntry>> = HashMap::new();
    for e in entries {
        for r in &e.conditional_references {
            for other in entries.iter().filter(|o| {
                matches!(o.method, Method::Post | Method::Put)
                    && o.target.resource_type() == r.query.resource_type
            }) {
                let id = match &other.target {
                    Target::Instance(_, id) => Some(id.as_str()),
                    _ => None,
                };
                let Some(resource) = &other.resource else {
                    continue;
                };
                let index = rows.entry(other.index).or_insert_with(|| {
                    crate::search::extract(other.target.resource_type(), resource, &ctx.local_base)
                });
                if could_match(&r.query, index, id) {
                    return Err(at_entry(
                        e.index,
                        FhirError::bad_request(format!(
                            "the conditional reference depends on entry {} of this bundle, which writes a {} its criteria could match; refer to that entry by its fullUrl instead",
                            other.index, r.query.resource_type
                        ))
                        .at(r.expression.clone()),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The REST write path's checks (`body::parse_resource`, i.e. `crate::resource::check` and
/// its error mapping), so a bundle entry is judged exactly as a PUT or POST body is.
fn check_resource(
    index: usize,
    resource: &Value,
    resource_type: &str,
    policy: ValidationPolicy,
) -> Result<CheckedResource, FhirError> {
    body::check_value(resource.clone(), resource_type, policy).map_err(|e| at_entry(index, e))
}

/// Where a write entry lands, once resolved in the transaction.
enum Plan {
    /// POST: a new resource with this id.
    Create(String),
    /// POST with ifNoneExist that matched.
    Existing(StoredVersion),
    /// PUT (resolved id) or PATCH.
    Write(String),
    /// DELETE, done.
    Done(Outcome),
    /// GET/HEAD, later.
    Read,
}

/// Run entries in one transaction, in FHIR's order. Returns each entry's outcome by index.
async fn execute(
    tx: &mut TenantTx,
    entries: &[Entry],
    ctx: &Context<'_>,
) -> Result<HashMap<usize, Outcome>, FhirError> {
    // Conditional references first, against the data as it was.
    let mut rewrites: HashMap<String, String> = HashMap::new();
    let mut resolved_references: Vec<(usize, String, String)> = Vec::new();
    for e in entries {
        for r in &e.conditional_references {
            let target = match rewrites.get(&r.text) {
                Some(t) => t.clone(),
                None => {
                    let found = single_match(tx, &r.query)
                        .await
                        .map_err(|err| at_entry(e.index, err.at(r.expression.clone())))?
                        .ok_or_else(|| {
                            at_entry(
                                e.index,
                                FhirError::new(
                                    StatusCode::PRECONDITION_FAILED,
                                    IssueType::NotFound,
                                    format!(
                                        "the conditional reference matches no {}",
                                        r.query.resource_type
                                    ),
                                )
                                .at(r.expression.clone()),
                            )
                        })?;
                    let t = format!("{}/{}", found.resource_type, found.id);
                    rewrites.insert(r.text.clone(), t.clone());
                    t
                }
            };
            resolved_references.push((e.index, r.expression.clone(), target));
        }
    }

    let mut plans: HashMap<usize, Plan> = HashMap::new();
    // Entry index -> the id its DELETE removed.
    let mut deleted: HashMap<usize, String> = HashMap::new();
    // DELETE, in bundle order.
    for e in entries.iter().filter(|e| e.method == Method::Delete) {
        let t = e.target.resource_type();
        let id = match &e.target {
            Target::Instance(_, id) => Some(id.clone()),
            Target::Search(_, q) => single_match(tx, q)
                .await
                .map_err(|err| at_entry(e.index, err))?
                .map(|v| v.id),
            _ => None,
        };
        if let Some(id) = &id {
            check_existing(tx, e, id, ctx).await?;
        }
        let outcome = match &id {
            Some(id) => Outcome::Deleted(
                tx.delete(t, id, e.if_match)
                    .await
                    .map_err(|err| at_entry(e.index, err.into()))?,
            ),
            None => Outcome::Deleted(None),
        };
        if let Some(id) = id {
            deleted.insert(e.index, id);
        }
        plans.insert(e.index, Plan::Done(outcome));
    }
    // POST ids (after the deletes: ifNoneExist sees them).
    for e in entries.iter().filter(|e| e.method == Method::Post) {
        let plan = match &e.if_none_exist {
            Some(q) => match single_match(tx, q)
                .await
                .map_err(|err| at_entry(e.index, err))?
            {
                Some(existing) => Plan::Existing(existing),
                None => Plan::Create(uuid::Uuid::new_v4().to_string()),
            },
            None => Plan::Create(uuid::Uuid::new_v4().to_string()),
        };
        plans.insert(e.index, plan);
    }
    // PUT and PATCH targets.
    for e in entries
        .iter()
        .filter(|e| matches!(e.method, Method::Put | Method::Patch))
    {
        let id = match &e.target {
            Target::Instance(_, id) => id.clone(),
            Target::Search(_, q) => {
                let body_id = e
                    .resource
                    .as_ref()
                    .and_then(|r| r.get("id"))
                    .and_then(Value::as_str);
                update_target(tx, q, body_id)
                    .await
                    .map_err(|err| at_entry(e.index, err))?
            }
            _ => return Err(bad_entry(e.index, "request.url", "no target")),
        };
        check_existing(tx, e, &id, ctx).await?;
        plans.insert(e.index, Plan::Write(id));
    }
    for e in entries
        .iter()
        .filter(|e| matches!(e.method, Method::Get | Method::Head))
    {
        plans.insert(e.index, Plan::Read);
    }

    // One entry per resource: two writes to one resource in a transaction have no defined
    // result; a conditional reference to a resource the bundle changes depends on the bundle.
    let mut written: HashMap<String, usize> = HashMap::new();
    for e in entries {
        let id = match plans.get(&e.index) {
            Some(Plan::Create(id) | Plan::Write(id)) => Some(id.clone()),
            _ => deleted.get(&e.index).cloned(),
        };
        if let Some(id) = id {
            let key = format!("{}/{}", e.target.resource_type(), id);
            if let Some(first) = written.insert(key.clone(), e.index) {
                return Err(bad_entry(
                    e.index,
                    "request",
                    format!(
                        "entries {first} and {} both change {key}; a transaction may change a resource once",
                        e.index
                    ),
                ));
            }
        }
    }
    for (index, expression, target) in &resolved_references {
        if let Some(writer) = written.get(target) {
            return Err(at_entry(
                *index,
                FhirError::bad_request(format!(
                    "the conditional reference resolves to a resource that entry {writer} of this bundle changes; refer to that entry instead"
                ))
                .at(expression.clone()),
            ));
        }
    }

    // fullUrl -> Type/id for the entries that write. A POST's absolute fullUrl is a
    // placeholder too (the server picks the id); a PUT's names its own Type/id already.
    for e in entries {
        let Some(url) = e
            .full_url
            .as_deref()
            .filter(|u| placeholder(u) || e.method == Method::Post)
        else {
            continue;
        };
        let id = match plans.get(&e.index) {
            Some(Plan::Create(id) | Plan::Write(id)) => id.clone(),
            Some(Plan::Existing(v)) => v.id.clone(),
            _ => continue,
        };
        rewrites.insert(url.to_owned(), format!("{}/{id}", e.target.resource_type()));
    }

    // Rewrite and check every resource before writing any.
    let mut checked: HashMap<usize, CheckedResource> = HashMap::new();
    let mut patches: HashMap<usize, Patch> = HashMap::new();
    for e in entries {
        let Some(resource) = &e.resource else {
            continue;
        };
        let mut resource = resource.clone();
        rewrite_references(&mut resource, &rewrites);
        match e.method {
            Method::Post | Method::Put => {
                checked.insert(
                    e.index,
                    check_resource(e.index, &resource, e.target.resource_type(), ctx.policy)?,
                );
            }
            Method::Patch => {
                patches.insert(
                    e.index,
                    entry_patch(&resource).map_err(|err| at_entry(e.index, err))?,
                );
            }
            _ => {}
        }
    }

    let mut outcomes: HashMap<usize, Outcome> = HashMap::new();
    let done: Vec<usize> = plans
        .iter()
        .filter(|(_, plan)| matches!(plan, Plan::Done(_)))
        .map(|(index, _)| *index)
        .collect();
    for index in done {
        if let Some(Plan::Done(outcome)) = plans.remove(&index) {
            outcomes.insert(index, outcome);
        }
    }
    // POST, then PUT and PATCH, each in bundle order.
    for e in entries.iter().filter(|e| e.method == Method::Post) {
        let t = e.target.resource_type();
        match plans.remove(&e.index) {
            Some(Plan::Existing(v)) => {
                outcomes.insert(e.index, Outcome::Existing(v));
            }
            Some(Plan::Create(id)) => {
                let resource = checked
                    .remove(&e.index)
                    .ok_or_else(|| bad_entry(e.index, "resource", "this entry needs a resource"))?;
                let (stored, _) = tx
                    .put(t, &id, None, |stamp| {
                        resource.render(&id, stamp, &ctx.local_base)
                    })
                    .await
                    .map_err(|err| at_entry(e.index, err.into()))?;
                outcomes.insert(e.index, Outcome::Created(stored));
            }
            _ => {}
        }
    }
    for e in entries
        .iter()
        .filter(|e| matches!(e.method, Method::Put | Method::Patch))
    {
        let t = e.target.resource_type();
        let Some(Plan::Write(id)) = plans.remove(&e.index) else {
            continue;
        };
        let outcome = if e.method == Method::Put {
            let resource = checked
                .remove(&e.index)
                .ok_or_else(|| bad_entry(e.index, "resource", "this entry needs a resource"))?;
            let (stored, created) = tx
                .put(t, &id, e.if_match, |stamp| {
                    resource.render(&id, stamp, &ctx.local_base)
                })
                .await
                .map_err(|err| at_entry(e.index, err.into()))?;
            if created {
                Outcome::Created(stored)
            } else {
                Outcome::Updated(stored)
            }
        } else {
            let patch = patches
                .remove(&e.index)
                .ok_or_else(|| bad_entry(e.index, "resource", "this entry needs a patch"))?;
            Outcome::Updated(
                patch_in_tx(tx, t, &id, e.if_match, &patch, &ctx.local_base, ctx.policy)
                    .await
                    .map_err(|err| at_entry(e.index, err))?,
            )
        };
        outcomes.insert(e.index, outcome);
    }
    // GET and HEAD last: they see the writes.
    for e in entries
        .iter()
        .filter(|e| matches!(e.method, Method::Get | Method::Head))
    {
        let outcome = read(tx, e, ctx)
            .await
            .map_err(|err| at_entry(e.index, err))?;
        outcomes.insert(e.index, outcome);
    }
    Ok(outcomes)
}

/// A GET or HEAD entry: read, vread or search, inside the transaction.
async fn read(tx: &mut TenantTx, e: &Entry, ctx: &Context<'_>) -> Result<Outcome, FhirError> {
    let query = match &e.target {
        Target::Instance(t, id) | Target::Version(t, id, _) => {
            let v = match &e.target {
                Target::Version(_, _, version) => tx.read_version(t, id, *version).await?,
                _ => tx.read(t, id).await?,
            };
            if let Some(filter) = &e.read_filter {
                let ids = [id.clone()];
                if !tx.visible_ids(t, &ids, filter).await?.contains(id) {
                    return Err(ctx.auth.outside(t, id));
                }
            }
            ctx.auth.note_served([&v]);
            return Ok(Outcome::Read(v));
        }
        Target::Type(t) => {
            let mut q = parse_search(t, &[], ctx.strict, &ctx.local_base)
                .map_err(|err| FhirError::bad_request(err.to_string()))?;
            q.access = e.read_filter.clone();
            q
        }
        Target::Search(_, q) => (**q).clone(),
    };
    let mut page = tx.search(&query).await?;
    ctx.auth
        .retain_readable(&ctx.store, &mut page.includes)
        .await?;
    ctx.auth
        .note_served(page.matches.iter().chain(&page.includes));
    Ok(Outcome::Searched(searchset(ctx, &query, &page)?))
}

fn stored_json(v: &StoredVersion) -> Result<Value, FhirError> {
    serde_json::from_str(v.content.as_deref().unwrap_or("{}"))
        .map_err(|_| StoreError::Corrupt("resource content is not JSON").into())
}

/// A searchset Bundle for a GET entry, like `GET /{type}?...` answers (without `_summary`
/// subsetting or `_elements`, which entries do not apply).
fn searchset(ctx: &Context, query: &SearchQuery, page: &SearchPage) -> Result<Value, FhirError> {
    let t = &query.resource_type;
    let self_query = serde_urlencoded::to_string(&query.used).unwrap_or_default();
    let link = |relation: &str, token: Option<&str>| {
        let mut url = format!("{}/{t}?{self_query}", ctx.base);
        if let Some(token) = token {
            if !self_query.is_empty() {
                url.push('&');
            }
            url.push_str("_page=");
            url.push_str(token);
        }
        json!({"relation": relation, "url": url})
    };
    let mut links = vec![link("self", query.page.as_deref())];
    if let Some(next) = &page.next {
        links.push(link("next", Some(next)));
    }
    if let Some(previous) = &page.previous {
        links.push(link("previous", Some(previous)));
    }
    let mut entries = Vec::new();
    if query.summary != Summary::Count {
        for (mode, versions) in [("match", &page.matches), ("include", &page.includes)] {
            for v in versions {
                entries.push(json!({
                    "fullUrl": format!("{}/{}/{}", ctx.base, v.resource_type, v.id),
                    "resource": stored_json(v)?,
                    "search": {"mode": mode},
                }));
            }
        }
    }
    let mut bundle = Map::new();
    bundle.insert("resourceType".into(), "Bundle".into());
    bundle.insert("type".into(), "searchset".into());
    if let Some(total) = page.total {
        bundle.insert("total".into(), total.into());
    }
    bundle.insert("link".into(), Value::Array(links));
    bundle.insert("entry".into(), Value::Array(entries));
    Ok(Value::Object(bundle))
}

fn status_line(status: StatusCode) -> String {
    format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default()
    )
}

fn instant(v: &StoredVersion) -> String {
    v.last_updated
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The response entry of one request entry, `Prefer: return=` deciding what writes carry.
fn response_entry(ctx: &Context, e: &Entry, outcome: Outcome) -> Result<Value, FhirError> {
    let mut entry = Map::new();
    let mut response = Map::new();
    let write = !matches!(e.method, Method::Get | Method::Head);
    let (status, version, body) = match outcome {
        Outcome::Created(v) => (StatusCode::CREATED, Some(v), None),
        Outcome::Updated(v) | Outcome::Existing(v) => (StatusCode::OK, Some(v), None),
        Outcome::Read(v) => (StatusCode::OK, Some(v), None),
        Outcome::Deleted(stamp) => {
            if let Some(stamp) = stamp {
                response.insert("etag".into(), negotiate::etag(stamp.version_id).into());
            }
            (StatusCode::NO_CONTENT, None, None)
        }
        Outcome::Searched(bundle) => (StatusCode::OK, None, Some(bundle)),
    };
    response.insert("status".into(), status_line(status).into());
    let mut resource = body;
    if let Some(v) = &version {
        entry.insert(
            "fullUrl".into(),
            format!("{}/{}/{}", ctx.base, v.resource_type, v.id).into(),
        );
        if write {
            response.insert(
                "location".into(),
                format!("{}/{}/_history/{}", v.resource_type, v.id, v.version_id).into(),
            );
        }
        response.insert("etag".into(), negotiate::etag(v.version_id).into());
        response.insert("lastModified".into(), instant(v).into());
        let wanted = !write || ctx.preference == ReturnPreference::Representation;
        if wanted {
            resource = Some(stored_json(v)?);
        }
        if write && ctx.preference == ReturnPreference::OperationOutcome {
            response.insert(
                "outcome".into(),
                operation_outcome(&[Issue {
                    severity: Severity::Information,
                    code: IssueType::Informational,
                    diagnostics: format!(
                        "{} {}/{} version {}",
                        status_line(status),
                        v.resource_type,
                        v.id,
                        v.version_id
                    ),
                    expression: Vec::new(),
                }]),
            );
        }
    }
    if e.method == Method::Head {
        resource = None;
    }
    if let Some(resource) = resource {
        entry.insert("resource".into(), resource);
    }
    entry.insert("response".into(), Value::Object(response));
    Ok(Value::Object(entry))
}

/// A failed batch entry: its status and OperationOutcome.
fn failure_entry(error: &FhirError) -> Value {
    json!({
        "response": {
            "status": status_line(error.status),
            "outcome": operation_outcome(&error.issues),
        }
    })
}

async fn transaction(
    state: &AppState,
    ctx: &Context<'_>,
    raw: &[Value],
) -> Result<Vec<Value>, FhirError> {
    let mut entries = raw
        .iter()
        .enumerate()
        .map(|(i, r)| parse_entry(i, r, ctx))
        .collect::<Result<Vec<_>, _>>()?;
    for e in &mut entries {
        apply_access(e, ctx)?;
    }
    check_transaction(&entries, ctx)?;
    let mut tx = state.store.begin(&ctx.auth.principal.tenant).await?;
    let mut outcomes = execute(&mut tx, &entries, ctx).await?;
    // Build the answer before committing: a failure here must not leave half an answer to
    // a committed transaction.
    let answer = entries
        .iter()
        .map(|e| {
            let outcome = outcomes.remove(&e.index).ok_or_else(FhirError::internal)?;
            response_entry(ctx, e, outcome)
        })
        .collect::<Result<Vec<_>, _>>()?;
    tx.commit().await?;
    Ok(answer)
}

async fn batch_entry(
    state: &AppState,
    ctx: &Context<'_>,
    index: usize,
    raw: &Value,
    full_urls: &[Option<&str>],
) -> Result<Value, FhirError> {
    let mut entry = parse_entry(index, raw, ctx)?;
    if let Some(url) = entry.full_url.as_deref()
        && let Some(first) = full_urls[..index].iter().position(|u| *u == Some(url))
    {
        return Err(bad_entry(
            index,
            "fullUrl",
            format!("fullUrl is also the fullUrl of entry {first}; fullUrls must be unique"),
        ));
    }
    apply_access(&mut entry, ctx)?;
    if let Some((expression, text)) = entry.placeholders.first() {
        let problem = if full_urls.contains(&Some(text.as_str())) {
            "refers to another entry: batch entries are independent and cannot refer to each other (use a transaction)"
        } else {
            "refers to no fullUrl in this bundle"
        };
        return Err(at_entry(
            index,
            FhirError::bad_request(format!("the reference {problem}")).at(expression.clone()),
        ));
    }
    let mut tx = state.store.begin(&ctx.auth.principal.tenant).await?;
    let mut outcomes = execute(&mut tx, std::slice::from_ref(&entry), ctx).await?;
    let outcome = outcomes.remove(&index).ok_or_else(FhirError::internal)?;
    let answer = response_entry(ctx, &entry, outcome)?;
    tx.commit().await?;
    Ok(answer)
}

async fn batch(state: &AppState, ctx: &Context<'_>, raw: &[Value]) -> Vec<Value> {
    let full_urls: Vec<Option<&str>> = raw
        .iter()
        .map(|r| r.get("fullUrl").and_then(Value::as_str))
        .collect();
    let mut answer = Vec::with_capacity(raw.len());
    for (index, entry) in raw.iter().enumerate() {
        answer.push(
            match batch_entry(state, ctx, index, entry, &full_urls).await {
                Ok(v) => v,
                Err(e) => failure_entry(&e),
            },
        );
    }
    answer
}

fn prefers_strict(req: &HttpRequest) -> bool {
    req.headers()
        .get_all("prefer")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == "handling=strict")
}

/// `POST /fhir/{tenant}` with a transaction or batch Bundle.
pub async fn transaction_or_batch(
    req: HttpRequest,
    payload: web::Payload,
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    negotiate::require_json_response(&req)?;
    negotiate::require_json_body(&req)?;
    let bytes = body::read_limited(&req, payload, state.config.server.max_body_bytes).await?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| FhirError::bad_request("the request body is not UTF-8"))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let bundle: Value = serde_json::from_str(text).map_err(|e| {
        FhirError::new(
            StatusCode::BAD_REQUEST,
            IssueType::Structure,
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(
            FhirError::bad_request("the base URL takes a Bundle (transaction or batch)")
                .at("Bundle.resourceType"),
        );
    }
    let mode = match bundle.get("type").and_then(Value::as_str) {
        Some("transaction") => Mode::Transaction,
        Some("batch") => Mode::Batch,
        _ => {
            return Err(
                FhirError::bad_request("Bundle.type must be transaction or batch")
                    .at("Bundle.type"),
            );
        }
    };
    let empty = Vec::new();
    let raw = match bundle.get("entry") {
        None => &empty,
        Some(Value::Array(entries)) => entries,
        Some(_) => {
            return Err(FhirError::bad_request("Bundle.entry must be an array").at("Bundle.entry"));
        }
    };
    let limit = state.config.server.max_bundle_entries;
    if raw.len() > limit {
        return Err(FhirError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            IssueType::TooLong,
            format!(
                "the Bundle has {} entries; this server takes at most {limit}",
                raw.len()
            ),
        )
        .at("Bundle.entry"));
    }
    auth.note(|n| {
        n.event = Some(match mode {
            Mode::Transaction => "transaction",
            Mode::Batch => "batch",
        })
    });
    let base = state.fhir_base(&auth.principal.tenant);
    let ctx = Context {
        auth: &auth,
        store: state.store.clone(),
        local_base: format!("{base}/"),
        base,
        strict: prefers_strict(&req),
        preference: negotiate::return_preference(&req),
        policy: state.validation_policy(&auth.principal.tenant).await?,
    };
    let (kind, entries) = match mode {
        Mode::Transaction => (
            "transaction-response",
            transaction(&state, &ctx, raw).await?,
        ),
        Mode::Batch => ("batch-response", batch(&state, &ctx, raw).await),
    };
    let answer = json!({
        "resourceType": "Bundle",
        "type": kind,
        "entry": entries,
    });
    Ok(HttpResponse::Ok()
        .content_type(FHIR_JSON)
        .body(answer.to_string()))
}
