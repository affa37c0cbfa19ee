//! Bulk Data export (Bulk Data Access IG v2): kick-off at `/$export`, `/Patient/$export`
//! and `/Group/{id}/$export` (`Prefer: respond-async`: 202 + `Content-Location`), the
//! status URL (`202` with `X-Progress`/`Retry-After`, then the manifest; `DELETE` cancels)
//! and the files (only to the client that started the job). The jobs themselves run in
//! `crate::bulk`.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};
use uuid::Uuid;

use super::authn::Authenticated;
use super::body::read_limited;
use super::negotiate;
use super::outcome::{FhirError, Issue, IssueType, Severity, operation_outcome};
use crate::bulk::{self, BulkError, ExportLevel, ExportRequest};
use crate::state::AppState;

/// How long a client should wait between polls.
const RETRY_AFTER_SECS: u32 = 2;

pub async fn system_kick_off(
    req: HttpRequest,
    payload: web::Payload,
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    kick_off(req, payload, ExportLevel::System, auth, state).await
}

pub async fn patient_kick_off(
    req: HttpRequest,
    payload: web::Payload,
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    kick_off(req, payload, ExportLevel::Patient, auth, state).await
}

pub async fn group_kick_off(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    let (_, group) = path.into_inner();
    if !crate::ehr::sync::is_fhir_id(&group) {
        return Err(FhirError::not_found("resource not found"));
    }
    kick_off(req, payload, ExportLevel::Group(group), auth, state).await
}

async fn kick_off(
    req: HttpRequest,
    payload: web::Payload,
    level: ExportLevel,
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    negotiate::require_json_response(&req)?;
    let respond_async = req
        .headers()
        .get_all("prefer")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == "respond-async");
    if !respond_async {
        return Err(FhirError::bad_request(
            "$export runs asynchronously: send Prefer: respond-async",
        ));
    }
    let mut params = negotiate::query_params(&req)?;
    if req.method() == actix_web::http::Method::POST {
        let body = read_limited(&req, payload, state.config.server.max_body_bytes).await?;
        if !body.is_empty() {
            params.extend(parameters_body(&body)?);
        }
    }
    let tenant = auth.tenant().clone();
    let base = state.fhir_base(&tenant);
    let request = ExportRequest::parse(level, &params, &format!("{base}/")).map_err(bulk_error)?;
    let request_url = format!(
        "{base}{}",
        req.uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or_default()
            .strip_prefix(&format!("/fhir/{tenant}"))
            .unwrap_or_default()
    );
    let subject = auth.owned_subject();
    let job = bulk::kick_off(&state, &tenant, &request, &subject, &request_url)
        .await
        .map_err(bulk_error)?;
    auth.note(|n| {
        n.event = Some("export");
        n.entities = vec![format!("bulk-export/{job}")];
        n.query = Some(request_url.clone());
        if let ExportLevel::Group(g) = &request.level {
            n.entities.push(format!("Group/{g}"));
        }
    });
    let status_url = format!("{base}/$export-status/{job}");
    let outcome = operation_outcome(&[Issue {
        severity: Severity::Information,
        code: IssueType::Informational,
        diagnostics: format!("export job accepted; poll {status_url}"),
        expression: Vec::new(),
    }]);
    Ok(HttpResponse::Accepted()
        .insert_header((header::CONTENT_LOCATION, status_url))
        .content_type(negotiate::FHIR_JSON)
        .body(outcome.to_string()))
}

/// A kick-off POST's `Parameters` body as name/value pairs.
fn parameters_body(body: &[u8]) -> Result<Vec<(String, String)>, FhirError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|_| FhirError::bad_request("the body is not JSON"))?;
    if value.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Err(FhirError::bad_request(
            "a kick-off POST body must be a Parameters resource",
        ));
    }
    let mut pairs = Vec::new();
    for (i, p) in value
        .get("parameter")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let name = p.get("name").and_then(Value::as_str).ok_or_else(|| {
            FhirError::bad_request("a parameter has no name")
                .at(format!("Parameters.parameter[{i}].name"))
        })?;
        let value = ["valueString", "valueInstant", "valueDateTime", "valueCode"]
            .iter()
            .find_map(|k| p.get(*k).and_then(Value::as_str))
            .ok_or_else(|| {
                FhirError::bad_request(format!("parameter {name} has no string value"))
                    .at(format!("Parameters.parameter[{i}]"))
            })?;
        pairs.push((name.to_owned(), value.to_owned()));
    }
    Ok(pairs)
}

fn bulk_error(e: BulkError) -> FhirError {
    match e {
        BulkError::BadRequest(text) => FhirError::bad_request(text),
        BulkError::Forbidden(text) => FhirError::forbidden(text),
        BulkError::Store(e) => e.into(),
        BulkError::Output(e) => {
            tracing::warn!(error = %e, "export output failed");
            FhirError::internal()
        }
    }
}

fn job_id(text: &str) -> Result<Uuid, FhirError> {
    Uuid::parse_str(text).map_err(|_| FhirError::not_found("no such export job"))
}

/// The job if it is the caller's: another client's job is "not found", as is an expired one.
async fn own_job(
    state: &AppState,
    auth: &Authenticated,
    id: Uuid,
) -> Result<(crate::store::BulkJobRow, Vec<crate::store::BulkFileRow>), FhirError> {
    match state.store.bulk_job(auth.tenant(), id).await? {
        Some((job, files)) if job.owner == auth.principal.subject => Ok((job, files)),
        _ => Err(FhirError::not_found("no such export job")),
    }
}

pub async fn status(
    path: web::Path<(String, String)>,
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    let id = job_id(&path.1)?;
    let (job, files) = own_job(&state, &auth, id).await?;
    auth.note(|n| {
        n.event = Some("export-status");
        n.entities = vec![format!("bulk-export/{id}")];
    });
    match job.status.as_str() {
        "queued" | "running" => Ok(HttpResponse::Accepted()
            .insert_header(("X-Progress", bulk::progress_text(&job)))
            .insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS.to_string()))
            .finish()),
        "completed" => {
            let base = state.fhir_base(auth.tenant());
            let output: Vec<Value> = files
                .iter()
                .filter(|f| f.lines > 0)
                .map(|f| {
                    json!({
                        "type": f.resource_type,
                        "url": format!("{base}/$export-file/{id}/{}", f.seq),
                        "count": f.lines,
                    })
                })
                .collect();
            let manifest = json!({
                "transactionTime": job.transaction_time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "request": job.request_url,
                "requiresAccessToken": true,
                "output": output,
                "error": [],
            });
            let mut response = HttpResponse::Ok();
            if let Some(expires) = job.expires_at {
                response.insert_header((header::EXPIRES, expires.to_rfc2822()));
            }
            Ok(response
                .content_type("application/json")
                .body(manifest.to_string()))
        }
        "failed" => Err(FhirError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            IssueType::Exception,
            format!(
                "the export failed: {}",
                job.error.as_deref().unwrap_or("unknown reason")
            ),
        )),
        _ => Err(FhirError::not_found("no such export job")),
    }
}

pub async fn cancel(
    path: web::Path<(String, String)>,
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    let id = job_id(&path.1)?;
    own_job(&state, &auth, id).await?;
    auth.note(|n| {
        n.event = Some("export-cancel");
        n.entities = vec![format!("bulk-export/{id}")];
    });
    if !state.store.cancel_bulk_job(auth.tenant(), id).await? {
        return Err(FhirError::not_found("no such export job"));
    }
    Ok(HttpResponse::Accepted().finish())
}

pub async fn file(
    path: web::Path<(String, String, String)>,
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    let (_, job, seq) = path.into_inner();
    let id = job_id(&job)?;
    let (job, files) = own_job(&state, &auth, id).await?;
    let file = seq
        .parse::<i32>()
        .ok()
        .and_then(|seq| files.into_iter().find(|f| f.seq == seq))
        .filter(|_| job.status == "completed")
        .ok_or_else(|| FhirError::not_found("no such export file"))?;
    auth.note(|n| {
        n.event = Some("export-file");
        n.entities = vec![format!("bulk-export/{id}/{}", file.location)];
        n.query = Some(job.request_url.clone());
    });
    let length = u64::try_from(file.bytes).unwrap_or(0);
    // In S3 (configured): streamed from there, never held whole.
    if let Some(s3) = bulk::s3::S3Target::from_config(&state.config.bulk).map_err(|e| {
        tracing::warn!(error = %e, "export files: S3 not usable");
        FhirError::internal()
    })? {
        let stored = s3
            .get(&s3.key(auth.tenant().as_str(), id, &file.location))
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "export file unreadable from S3");
                FhirError::internal()
            })?;
        let body = futures_util::TryStreamExt::map_err(stored.bytes_stream(), |_| {
            std::io::Error::other("S3 stream interrupted")
        });
        return Ok(HttpResponse::Ok()
            .content_type("application/fhir+ndjson")
            .no_chunking(length)
            .streaming(body));
    }
    let path = bulk::output::file_path(&state.config.bulk.dir, auth.tenant(), id, &file.location)
        .map_err(|_| FhirError::internal())?;
    let handle = tokio::fs::File::open(&path).await.map_err(|e| {
        tracing::warn!(error = %e.kind(), "export file unreadable");
        FhirError::internal()
    })?;
    // Exactly the durable, recorded length (a file is complete once its job is).
    let limited = tokio::io::AsyncReadExt::take(handle, u64::try_from(file.bytes).unwrap_or(0));
    Ok(HttpResponse::Ok()
        .content_type("application/fhir+ndjson")
        .no_chunking(u64::try_from(file.bytes).unwrap_or(0))
        .streaming(tokio_util::io::ReaderStream::new(limited)))
}
