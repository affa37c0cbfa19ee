//! Conditional interactions: `If-None-Exist` create, `PUT /{type}?criteria`,
//! `DELETE /{type}?criteria`, and conditional reads (`If-None-Match`, `If-Modified-Since`).
//!
//! Matching runs the search engine inside the same transaction as the write, so what was
//! matched is what gets written: the matched row is locked (`current_for_update`), and a
//! transaction-scoped advisory lock on (tenant, type, criteria) serialises requests with the
//! same criteria, because no row lock can stop two requests that both found *no* match from
//! both creating. What remains open: two requests whose criteria differ in text but match the
//! same resources (`identifier=a|1` and `identifier=a|1&active=true`), or a conditional
//! create racing a plain create, are not serialised against each other.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, SubsecRound, Utc};
use serde_json::Value;

use super::authn::Authenticated;
use super::body;
use super::negotiate;
use super::outcome::{FhirError, IssueType};
use super::resource::{preflight_visible, version_headers, write_response};
use crate::access::Visibility;
use crate::auth::Interaction;
use crate::search::query::{AccessFilter, SearchQuery, Summary, parse_search};
use crate::state::AppState;
use crate::store::{Rendered, StoredVersion, TenantTx, VersionStamp};
use crate::tenant::TenantId;

/// Search parameters that shape a result page rather than select resources: meaningless as
/// conditions, and refused so a client does not believe they narrowed the match.
const RESULT_PARAMETERS: &[&str] = &[
    "_count",
    "_sort",
    "_page",
    "_include",
    "_revinclude",
    "_summary",
    "_elements",
    "_total",
];

/// Parse the criteria of a conditional interaction (`identifier=sys|val&...`, the query
/// string without `?`). Strict: an unknown parameter would silently widen the match, so it is
/// a 400 here even without `Prefer: handling=strict`.
pub(super) fn criteria(
    resource_type: &str,
    raw: &str,
    local_base: &str,
) -> Result<SearchQuery, FhirError> {
    let params: Vec<(String, String)> = serde_urlencoded::from_str(raw).map_err(|_| {
        FhirError::bad_request("the conditional criteria are not valid form-urlencoded text")
    })?;
    if let Some((name, _)) = params.iter().find(|(name, _)| {
        let base = name.split(':').next().unwrap_or_default();
        RESULT_PARAMETERS.contains(&base)
    }) {
        return Err(FhirError::bad_request(format!(
            "'{name}' is not a search criterion and cannot be used in a conditional interaction"
        )));
    }
    let mut query = parse_search(resource_type, &params, true, local_base)
        .map_err(|e| FhirError::bad_request(e.to_string()))?;
    if query.clauses.is_empty() {
        return Err(FhirError::bad_request(
            "a conditional interaction needs at least one search criterion",
        ));
    }
    // Two rows are enough to tell "one" from "more than one".
    query.count = 2;
    query.page = None;
    query.sort.clear();
    query.includes.clear();
    query.revincludes.clear();
    query.summary = Summary::None;
    query.elements = None;
    query.total = false;
    Ok(query)
}

/// The criteria of a conditional interaction as one canonical string (parameters sorted), for
/// the advisory lock key.
fn criteria_key(tx: &TenantTx, query: &SearchQuery) -> String {
    let mut used = query.used.clone();
    used.sort();
    format!(
        "hearth-conditional|{}|{}?{}",
        tx.tenant(),
        query.resource_type,
        serde_urlencoded::to_string(&used).unwrap_or_default()
    )
}

fn filter_of(visibility: Visibility) -> Option<AccessFilter> {
    match visibility {
        Visibility::All => None,
        Visibility::Filtered(f) => Some(f),
    }
}

fn multiple_matches(resource_type: &str) -> FhirError {
    FhirError::new(
        StatusCode::PRECONDITION_FAILED,
        IssueType::Conflict,
        format!("the criteria match more than one {resource_type}"),
    )
}

/// The one live resource matching `query`, locked until the transaction ends; `None` for no
/// match; 412 for more than one.
pub(super) async fn single_match(
    tx: &mut TenantTx,
    query: &SearchQuery,
) -> Result<Option<StoredVersion>, FhirError> {
    let key = criteria_key(tx, query);
    tx.advisory_lock(&key).await?;
    let page = tx.search(query).await?;
    let found = match page.matches.as_slice() {
        [] => return Ok(None),
        [one] => one,
        _ => return Err(multiple_matches(&query.resource_type)),
    };
    // The search read a snapshot; lock the row and read it again, so a concurrent delete or
    // update is seen (a match deleted meanwhile is no match).
    let locked = tx
        .current_for_update(&found.resource_type, &found.id)
        .await?;
    Ok(locked.filter(|v| !v.deleted))
}

/// Where a conditional update writes: the single match; with no match, the id in the body
/// (update-as-create) or a new one. 412 for several matches, 400 when the body names another
/// resource than the match, 409 when there is no match but the body's id is taken.
pub(super) async fn update_target(
    tx: &mut TenantTx,
    query: &SearchQuery,
    body_id: Option<&str>,
) -> Result<String, FhirError> {
    let resource_type = query.resource_type.clone();
    match (single_match(tx, query).await?, body_id) {
        (Some(found), Some(id)) if found.id != id => Err(FhirError::bad_request(
            "the id in the body is not the id of the resource the criteria match",
        )
        .at(format!("{resource_type}.id"))),
        (Some(found), _) => Ok(found.id),
        (None, None) => Ok(uuid::Uuid::new_v4().to_string()),
        (None, Some(id)) => {
            let existing = tx.current_for_update(&resource_type, id).await?;
            if existing.is_some_and(|v| !v.deleted) {
                Err(FhirError::new(
                    StatusCode::CONFLICT,
                    IssueType::Conflict,
                    format!(
                        "no {resource_type} matches the criteria, but the id in the body belongs to one that does not match"
                    ),
                ))
            } else {
                Ok(id.to_owned())
            }
        }
    }
}

/// Conditional create (`If-None-Exist`): match and create in one transaction. `Ok(new)` when
/// nothing matched and `id` was created; `Err(existing)` for the single match (nothing
/// written); 412 for several.
pub(super) async fn create(
    state: &AppState,
    tenant: &TenantId,
    resource_type: &str,
    raw_criteria: &str,
    id: &str,
    access: Option<AccessFilter>,
    render: impl FnOnce(&VersionStamp) -> Rendered,
) -> Result<Result<StoredVersion, StoredVersion>, FhirError> {
    let local_base = format!("{}/", state.fhir_base(tenant));
    let mut query = criteria(resource_type, raw_criteria, &local_base)?;
    query.access = access;
    let mut tx = state.store.begin(tenant).await?;
    if let Some(existing) = single_match(&mut tx, &query).await? {
        tx.commit().await?;
        return Ok(Err(existing));
    }
    let (stored, _) = tx.put(resource_type, id, None, render).await?;
    tx.commit().await?;
    Ok(Ok(stored))
}

/// `If-None-Exist` (or a Bundle entry's `ifNoneExist`): the criteria, with an optional
/// `Type?` in front (some clients send the full search URL).
pub(super) fn if_none_exist_criteria<'a>(resource_type: &str, raw: &'a str) -> &'a str {
    raw.strip_prefix(resource_type)
        .and_then(|rest| rest.strip_prefix('?'))
        .or_else(|| raw.strip_prefix('?'))
        .unwrap_or(raw)
}

/// A weak or strong ETag as a version number: `W/"3"`, `"3"`.
pub(super) fn etag_version(text: &str) -> Option<i64> {
    let text = text.trim();
    let text = text.strip_prefix("W/").unwrap_or(text);
    text.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text)
        .parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
}

/// Conditional read: is the client's copy current? `If-None-Match` (a list of ETags or `*`)
/// decides when present; otherwise `If-Modified-Since` (an HTTP date, second precision).
/// Unreadable values are ignored, as RFC 9110 asks.
pub(super) fn not_modified(req: &HttpRequest, stored: &StoredVersion) -> bool {
    if let Some(value) = req.headers().get(header::IF_NONE_MATCH) {
        let Ok(text) = value.to_str() else {
            return false;
        };
        return text
            .split(',')
            .any(|tag| tag.trim() == "*" || etag_version(tag) == Some(stored.version_id));
    }
    let Some(since) = req
        .headers()
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| DateTime::parse_from_rfc2822(v.trim()).ok())
    else {
        return false;
    };
    stored.last_updated.trunc_subsecs(0) <= since.with_timezone(&Utc)
}

/// 304 with the validators of the current version.
pub(super) fn not_modified_response(stored: &StoredVersion) -> HttpResponse {
    let mut builder = HttpResponse::NotModified();
    version_headers(&mut builder, stored);
    builder.finish()
}

/// What `/{type}` serves, for the `Allow` header of a 405.
pub(super) const TYPE_ALLOW: &str = "GET, POST, PUT, DELETE";

/// A type-level PUT or DELETE without criteria means nothing: 405, as before these routes
/// existed.
fn without_criteria(req: &HttpRequest) -> Option<HttpResponse> {
    req.query_string()
        .is_empty()
        .then(|| super::not_allowed(TYPE_ALLOW)().into_inner())
}

/// `PUT /{type}?criteria`: conditional update.
pub async fn update(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    let (_, resource_type) = path.into_inner();
    if let Some(response) = without_criteria(&req) {
        return Ok(response);
    }
    let write = preflight_visible(&req, &auth, &resource_type, Interaction::Update)?;
    let tenant = auth.principal.tenant.clone();
    let base = state.fhir_base(&tenant);
    let local_base = format!("{base}/");
    let mut query = criteria(&resource_type, req.query_string(), &local_base)?;
    query.access = filter_of(auth.visibility(&resource_type, Interaction::Search)?);
    negotiate::require_json_body(&req)?;
    let if_match = negotiate::if_match(&req)?;
    let bytes = body::read_limited(&req, payload, state.config.server.max_body_bytes).await?;
    let policy = state.validation_policy(&tenant).await?;
    let incoming = body::parse_resource(&bytes, &resource_type, policy)?;
    let body_id = match incoming.id() {
        None => None,
        Some(Value::String(id)) if body::is_valid_id(id) => Some(id.clone()),
        Some(_) => {
            return Err(
                FhirError::bad_request("the id in the body is not a valid FHIR id")
                    .at(format!("{resource_type}.id")),
            );
        }
    };
    let mut tx = state.store.begin(&tenant).await?;
    let id = update_target(&mut tx, &query, body_id.as_deref()).await?;
    // No match and the body names an id: that id must not be someone else's resource
    // the caller cannot see (the new state is checked at commit).
    if let Visibility::Filtered(filter) = &write
        && tx.is_hidden(&resource_type, &id, filter).await?
    {
        return Err(auth.outside(&resource_type, &id));
    }
    let (stored, created) = tx
        .put(&resource_type, &id, if_match, |stamp| {
            incoming.render(&id, stamp, &local_base)
        })
        .await?;
    tx.commit().await?;
    let (status, location) = if created {
        let location = format!("{base}/{resource_type}/{id}/_history/{}", stored.version_id);
        (StatusCode::CREATED, Some(location))
    } else {
        (StatusCode::OK, None)
    };
    Ok(write_response(&req, status, &stored, location))
}

/// `DELETE /{type}?criteria`: conditional delete of a single match. No match answers 204, as
/// a repeated delete does: the state the client asked for holds. More than one match is 412
/// (Hearth does not delete several resources in one request).
pub async fn delete(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    let (_, resource_type) = path.into_inner();
    if let Some(response) = without_criteria(&req) {
        return Ok(response);
    }
    // Only what the caller may see can match (and so be deleted).
    preflight_visible(&req, &auth, &resource_type, Interaction::Delete)?;
    let tenant = auth.principal.tenant.clone();
    let local_base = format!("{}/", state.fhir_base(&tenant));
    let mut query = criteria(&resource_type, req.query_string(), &local_base)?;
    query.access = filter_of(auth.visibility(&resource_type, Interaction::Search)?);
    let if_match = negotiate::if_match(&req)?;
    let mut tx = state.store.begin(&tenant).await?;
    let deleted = match single_match(&mut tx, &query).await? {
        Some(found) => tx.delete(&resource_type, &found.id, if_match).await?,
        None => None,
    };
    tx.commit().await?;
    let mut builder = HttpResponse::NoContent();
    if let Some(stamp) = deleted {
        builder.insert_header((header::ETAG, negotiate::etag(stamp.version_id)));
    }
    Ok(builder.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags() {
        assert_eq!(etag_version("W/\"3\""), Some(3));
        assert_eq!(etag_version(" \"12\" "), Some(12));
        assert_eq!(etag_version("7"), Some(7));
        assert_eq!(etag_version("W/\"0\""), None);
        assert_eq!(etag_version("W/\"x\""), None);
    }

    #[test]
    fn if_none_exist_forms() {
        assert_eq!(
            if_none_exist_criteria("Patient", "identifier=a|1"),
            "identifier=a|1"
        );
        assert_eq!(
            if_none_exist_criteria("Patient", "Patient?identifier=a|1"),
            "identifier=a|1"
        );
        assert_eq!(
            if_none_exist_criteria("Patient", "?identifier=a|1"),
            "identifier=a|1"
        );
    }

    #[test]
    fn criteria_must_select() {
        let base = "http://h/fhir/t/";
        assert!(criteria("Patient", "identifier=a|1", base).is_ok());
        assert!(criteria("Patient", "", base).is_err(), "no criteria");
        assert!(
            criteria("Patient", "_count=1", base).is_err(),
            "result parameter"
        );
        assert!(criteria("Patient", "frobnicate=1", base).is_err(), "strict");
        let q = criteria("Patient", "identifier=a|1&_count=5", base);
        assert!(q.is_err());
    }
}
