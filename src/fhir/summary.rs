//! `GET /fhir/{tenant}/Patient/{id}/$summary`: the patient's cited summary, and
//! `?question=…`: a cited answer or "not found in the record". Hearth's own JSON shape
//! (documented in docs/summaries.md): `{"patient", "summary": {engine, sections: [{code,
//! title, statements: [{text, citations: [{reference, version_id, element, span}]}],
//! empty_text}], removed, notice}}` or `{"patient", "answer": {question, statements,
//! not_found}}`. Every resource read goes through the caller's access decision; the audit
//! row names the patient and every cited resource.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::authn::Authenticated;
use super::negotiate;
use super::outcome::FhirError;
use crate::clinical::summary::{self, Context, SummaryError};
use crate::state::AppState;

#[derive(Deserialize)]
pub struct SummaryQuery {
    question: Option<String>,
}

pub async fn summary(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    query: web::Query<SummaryQuery>,
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    let (_, patient_id) = path.into_inner();
    negotiate::require_json_response(&req)?;
    if !crate::ehr::sync::is_fhir_id(&patient_id) {
        return Err(FhirError::not_found("resource not found"));
    }
    auth.note(|n| {
        n.event = Some("summary");
        n.patients = vec![patient_id.clone()];
    });
    let subject = auth.owned_subject();
    let cx = Context {
        store: &state.store,
        tenant: &auth.principal.tenant,
        public_base: &state.config.server.public_base_url,
        subject: &subject,
        bedrock: state.bedrock.as_ref(),
    };
    let body = match query
        .question
        .as_deref()
        .map(str::trim)
        .filter(|q| !q.is_empty())
    {
        Some(question) => {
            let answer = summary::ask(&cx, &patient_id, question)
                .await
                .map_err(summary_error)?;
            note_cited(&auth, answer.statements.iter());
            json!({"patient": format!("Patient/{patient_id}"), "answer": answer})
        }
        None => {
            let summary = summary::summarize(&cx, &patient_id)
                .await
                .map_err(summary_error)?;
            note_cited(&auth, summary.sections.iter().flat_map(|s| &s.statements));
            json!({"patient": format!("Patient/{patient_id}"), "summary": summary})
        }
    };
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body.to_string()))
}

fn note_cited<'a>(
    auth: &Authenticated,
    statements: impl Iterator<Item = &'a crate::clinical::Statement>,
) {
    let mut cited: Vec<String> = statements
        .flat_map(|s| s.citations.iter().map(|c| c.reference.clone()))
        .collect();
    cited.sort();
    cited.dedup();
    auth.note(|n| n.entities = cited);
}

fn summary_error(e: SummaryError) -> FhirError {
    match e {
        SummaryError::Forbidden(reason) => FhirError::forbidden(reason),
        SummaryError::Store(e) => e.into(),
        SummaryError::Index(crate::clinical::index::IndexError::Store(e)) => e.into(),
        SummaryError::Index(e) => {
            tracing::warn!(error = %e, "summary: the retrieval index could not be updated");
            FhirError::new(
                actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                super::outcome::IssueType::Transient,
                "the retrieval index could not be updated; retry",
            )
        }
    }
}
