//! `_history` at instance and type level: Bundles of type `history`, keyset-paged.

use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::authn::Authenticated;
use super::negotiate::{self, FHIR_JSON};
use super::outcome::FhirError;
use super::resource::known_type;
use crate::access::Visibility;
use crate::auth::Interaction;
use crate::state::AppState;
use crate::store::{HistoryCursor, StoreError, StoredVersion};

const DEFAULT_COUNT: u32 = 50;
const MAX_COUNT: u32 = 1000;

struct HistoryParams {
    count: u32,
    since: Option<DateTime<Utc>>,
    after: Option<HistoryCursor>,
}

fn parse_params(req: &HttpRequest) -> Result<HistoryParams, FhirError> {
    let mut params = HistoryParams {
        count: DEFAULT_COUNT,
        since: None,
        after: None,
    };
    for (name, value) in negotiate::query_params(req)? {
        match name.as_str() {
            "_count" => {
                params.count = value
                    .parse::<u32>()
                    .map_err(|_| FhirError::bad_request("_count must be a non-negative integer"))?
                    .clamp(1, MAX_COUNT);
            }
            "_since" => {
                params.since = Some(
                    DateTime::parse_from_rfc3339(&value)
                        .map_err(|_| {
                            FhirError::bad_request("_since must be an instant with a time zone")
                        })?
                        .with_timezone(&Utc),
                );
            }
            "_page" => params.after = Some(decode_cursor(&value)?),
            "_format" => {}
            _ => {
                return Err(FhirError::bad_request(format!(
                    "unsupported _history parameter '{name}'"
                )));
            }
        }
    }
    Ok(params)
}

fn encode_cursor(c: &HistoryCursor) -> String {
    let text = format!(
        "{}|{}|{}",
        c.last_updated.timestamp_micros(),
        c.version_id,
        c.id
    );
    URL_SAFE_NO_PAD.encode(text)
}

fn decode_cursor(token: &str) -> Result<HistoryCursor, FhirError> {
    let invalid = || FhirError::bad_request("_page is not a page token Hearth issued");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let mut parts = text.splitn(3, '|');
    let micros: i64 = parts
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(invalid)?;
    let version_id: i64 = parts
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(invalid)?;
    let id = parts.next().ok_or_else(invalid)?.to_owned();
    Ok(HistoryCursor {
        last_updated: DateTime::from_timestamp_micros(micros).ok_or_else(invalid)?,
        id,
        version_id,
    })
}

pub async fn instance(
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    let (_, resource_type, id) = path.into_inner();
    history(req, resource_type, Some(id), auth, state).await
}

pub async fn type_level(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    let (_, resource_type) = path.into_inner();
    history(req, resource_type, None, auth, state).await
}

async fn history(
    req: HttpRequest,
    resource_type: String,
    id: Option<String>,
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    negotiate::require_json_response(&req)?;
    known_type(&resource_type)?;
    let visibility = auth.visibility(&resource_type, Interaction::Read)?;
    let params = parse_params(&req)?;
    let tenant = &auth.principal.tenant;
    if let Some(id) = &id {
        auth.check_visible(&state.store, &visibility, &resource_type, id)
            .await?;
    }
    let mut page = state
        .store
        .history(
            tenant,
            &resource_type,
            id.as_deref(),
            params.since,
            params.after.as_ref(),
            params.count,
        )
        .await?;
    if id.is_some() && page.versions.is_empty() && params.after.is_none() {
        return Err(FhirError::not_found("resource not found"));
    }
    // Type history under a filtered scope: only versions of resources the caller may see
    // now (a page may come back shorter than _count; the next link still pages on).
    if id.is_none() && matches!(visibility, Visibility::Filtered(_)) {
        auth.retain_readable(&state.store, &mut page.versions)
            .await?;
    }
    auth.note_served(&page.versions);
    let base = state.fhir_base(tenant);
    let path = match &id {
        Some(id) => format!("{base}/{resource_type}/{id}/_history"),
        None => format!("{base}/{resource_type}/_history"),
    };
    let mut query = format!("_count={}", params.count);
    if let Some(since) = params.since {
        query.push_str(&format!(
            "&_since={}",
            since
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .replace('+', "%2B")
        ));
    }
    let mut links =
        vec![json!({"relation": "self", "url": format!("{path}?{}", req.query_string())})];
    if let Some(next) = &page.next {
        links.push(json!({"relation": "next", "url": format!("{path}?{query}&_page={}", encode_cursor(next))}));
    }
    let entries = page
        .versions
        .iter()
        .map(|v| entry(&base, v))
        .collect::<Result<Vec<_>, _>>()?;
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "history",
        "link": links,
        "entry": entries,
    });
    Ok(HttpResponse::Ok()
        .content_type(FHIR_JSON)
        .body(bundle.to_string()))
}

fn entry(base: &str, v: &StoredVersion) -> Result<Value, FhirError> {
    let full_url = format!("{base}/{}/{}", v.resource_type, v.id);
    let (method, url) = if v.deleted {
        ("DELETE", format!("{}/{}", v.resource_type, v.id))
    } else if v.version_id == 1 {
        ("POST", v.resource_type.clone())
    } else {
        ("PUT", format!("{}/{}", v.resource_type, v.id))
    };
    let response = json!({
        "status": if v.deleted { "204" } else if v.version_id == 1 { "201" } else { "200" },
        "etag": negotiate::etag(v.version_id),
        "lastModified": v.last_updated.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    let mut entry = json!({"fullUrl": full_url, "request": {"method": method, "url": url}, "response": response});
    if let Some(content) = &v.content {
        let resource: Value = serde_json::from_str(content)
            .map_err(|_| FhirError::from(StoreError::Corrupt("resource content is not JSON")))?;
        entry["resource"] = resource;
    }
    Ok(entry)
}
