//! Search: `GET /{type}?...` and `POST /{type}/_search`, answered with a searchset Bundle.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::authn::Authenticated;
use super::body::read_limited;
use super::negotiate::{self, FHIR_JSON};
use super::outcome::{FhirError, Issue, IssueType, Severity, operation_outcome};
use super::resource::known_type;
use crate::access::{self, Visibility};
use crate::auth::Interaction;
use crate::conformance::R4Structure;
use crate::search::query::{SearchQuery, Summary, parse_confined_search, parse_search};
use crate::state::AppState;
use crate::store::{StoreError, StoredVersion};

pub async fn search_get(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    let (_, resource_type) = path.into_inner();
    let params = negotiate::query_params(&req)?;
    search(req, resource_type, params, auth, state).await
}

/// `POST _search`: parameters in a form body (and the query string), same answer as GET.
pub async fn search_post(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    let (_, resource_type) = path.into_inner();
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return Err(FhirError::new(
            actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IssueType::NotSupported,
            "POST _search takes application/x-www-form-urlencoded",
        ));
    }
    let body = read_limited(&req, payload, state.config.server.max_body_bytes).await?;
    let mut params = negotiate::query_params(&req)?;
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body)
        .map_err(|_| FhirError::bad_request("the form body is not valid form-urlencoded text"))?;
    params.extend(form);
    search(req, resource_type, params, auth, state).await
}

fn strict_handling(req: &HttpRequest) -> bool {
    req.headers()
        .get_all("prefer")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == "handling=strict")
}

async fn search(
    req: HttpRequest,
    resource_type: String,
    params: Vec<(String, String)>,
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    negotiate::require_json_response(&req)?;
    known_type(&resource_type)?;
    let visibility = auth.visibility(&resource_type, Interaction::Search)?;
    let tenant = &auth.principal.tenant;
    let base = state.fhir_base(tenant);
    let local_base = format!("{base}/");
    let parse = if access::confined_to_patient(&auth.principal, &resource_type, Interaction::Search)
    {
        parse_confined_search
    } else {
        parse_search
    };
    let mut query = parse(&resource_type, &params, strict_handling(&req), &local_base)
        .map_err(|e| FhirError::bad_request(e.to_string()))?;
    if let Visibility::Filtered(filter) = visibility {
        query.access = Some(access::search_filter(&state.store, tenant, &query, filter).await?);
    }
    // Included resources must be readable under the token's scopes too.
    for inc in query.includes.iter().chain(&query.revincludes) {
        let target = if query.revincludes.contains(inc) {
            &inc.source_type
        } else {
            inc.target_type.as_ref().unwrap_or(&inc.source_type)
        };
        auth.visibility(target, Interaction::Read)?;
    }
    // The search and its audit row commit together (one transaction per search).
    let mut tx = state.store.begin(tenant).await?;
    let mut page = tx.search(&query).await.map_err(|e| match e {
        StoreError::InvalidPageToken => {
            FhirError::bad_request("_page is not a page token Hearth issued for this search")
        }
        other => FhirError::from(other),
    })?;
    // Each included resource must be readable on its own: a patient/ token never gets
    // another patient's records through _include or _revinclude.
    auth.retain_readable(&state.store, &mut page.includes)
        .await?;
    let self_query = serde_urlencoded::to_string(&query.used).unwrap_or_default();
    // The patients of the results: those the search is pinned to, when it is (every match
    // is in their compartments; reading each entry again would cost more than the search),
    // else read from each entry.
    match access::pinned_patients(&resource_type, &query.clauses) {
        Some(pinned) if page.includes.is_empty() => auth.note(|n| {
            n.patients = pinned;
            n.entities = page
                .matches
                .iter()
                .map(|v| format!("{}/{}/_history/{}", v.resource_type, v.id, v.version_id))
                .collect();
        }),
        _ => auth.note_served(page.matches.iter().chain(&page.includes)),
    }
    auth.note(|n| n.query = Some(format!("{resource_type}?{self_query}")));
    auth.record_read_in(&mut tx, "search-type", crate::audit::AuditAction::Execute)
        .await?;
    tx.commit().await?;
    let link = |relation: &str, extra: Option<&str>| {
        let mut url = format!("{base}/{resource_type}?{self_query}");
        if let Some(token) = extra {
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
        for v in &page.matches {
            entries.push(entry(&base, v, "match", &query)?);
        }
        for v in &page.includes {
            entries.push(entry(&base, v, "include", &query)?);
        }
    }
    if !query.ignored.is_empty() {
        let outcome = operation_outcome(&[Issue {
            severity: Severity::Warning,
            code: IssueType::NotSupported,
            diagnostics: format!(
                "ignored unknown or unsupported parameters: {} (send Prefer: handling=strict to get an error instead)",
                query.ignored.join(", ")
            ),
            expression: Vec::new(),
        }]);
        let outcome_entry = json!({"resource": outcome, "search": {"mode": "outcome"}});
        entries.push(raw(outcome_entry.to_string())?);
    }
    let bundle = SearchBundle {
        resource_type: "Bundle",
        bundle_type: "searchset",
        total: page.total,
        link: links,
        entry: entries,
    };
    let body = serde_json::to_string(&bundle).map_err(|_| FhirError::internal())?;
    Ok(HttpResponse::Ok().content_type(FHIR_JSON).body(body))
}

/// The searchset, with entries kept as the JSON text they already are.
#[derive(serde::Serialize)]
pub(super) struct SearchBundle {
    #[serde(rename = "resourceType")]
    pub resource_type: &'static str,
    #[serde(rename = "type")]
    pub bundle_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
    pub link: Vec<Value>,
    pub entry: Vec<Box<RawValue>>,
}

fn raw(text: String) -> Result<Box<RawValue>, FhirError> {
    RawValue::from_string(text)
        .map_err(|_| FhirError::from(StoreError::Corrupt("resource content is not JSON")))
}

/// One entry. The stored JSON is spliced in as it is (it is served as stored, and parsing
/// and re-serialising every resource of a page costs more than the query); only
/// `_summary`/`_elements` need a tree.
pub(super) fn entry(
    base: &str,
    v: &StoredVersion,
    mode: &str,
    query: &SearchQuery,
) -> Result<Box<RawValue>, FhirError> {
    let content = v.content.as_deref().unwrap_or("{}");
    let subsetting = mode == "match"
        && (query.elements.is_some()
            || matches!(query.summary, Summary::True | Summary::Data | Summary::Text));
    let resource = if subsetting {
        let mut resource: Value = serde_json::from_str(content)
            .map_err(|_| FhirError::from(StoreError::Corrupt("resource content is not JSON")))?;
        subset(&mut resource, query);
        resource.to_string()
    } else {
        content.to_owned()
    };
    let full_url = Value::from(format!("{base}/{}/{}", v.resource_type, v.id));
    raw(format!(
        r#"{{"fullUrl":{full_url},"resource":{resource},"search":{{"mode":"{mode}"}}}}"#
    ))
}

/// `_summary=true|data|text` and `_elements`: keep what was asked (plus the mandatory
/// `resourceType`, `id`, `meta`) and tag the result SUBSETTED.
fn subset(resource: &mut Value, query: &SearchQuery) {
    let Value::Object(obj) = resource else { return };
    let resource_type = obj
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let structure = R4Structure::global();
    let keep: Box<dyn Fn(&str) -> bool> = match (&query.elements, query.summary) {
        (Some(list), _) => {
            let list = list.clone();
            Box::new(move |k: &str| {
                list.iter()
                    .any(|e| e == k || k.strip_prefix('_') == Some(e.as_str()))
            })
        }
        (None, Summary::True) => Box::new(|k: &str| {
            structure.is_summary_element(&resource_type, k.trim_start_matches('_'))
        }),
        (None, Summary::Data) => Box::new(|k: &str| k != "text"),
        (None, Summary::Text) => Box::new(|k: &str| k == "text"),
        _ => return,
    };
    obj.retain(|k, _| matches!(k.as_str(), "resourceType" | "id" | "meta") || keep(k));
    let meta = obj.entry("meta").or_insert_with(|| json!({}));
    if let Value::Object(meta) = meta {
        let tags = meta.entry("tag").or_insert_with(|| json!([]));
        if let Value::Array(tags) = tags {
            tags.push(json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}));
        }
    }
}
