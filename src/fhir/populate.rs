//! `POST /Questionnaire/$populate` and `/Questionnaire/{id}/$populate` (SDC style): a
//! `Parameters` body with `subject` (the Patient) and the order as `context` (a part named
//! `order` whose `content` references a ServiceRequest or MedicationRequest; a top-level
//! `order` reference is accepted too). The answer is `Parameters` with the draft
//! QuestionnaireResponse as `response`: every answer cited, or "not found in the record".
//! Runs under the payment purpose (HPAYMT) whatever the request asserts.

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use super::authn::Authenticated;
use super::body::read_limited;
use super::negotiate::{self, FHIR_JSON};
use super::outcome::FhirError;
use crate::clinical::prior_auth::{self, PriorAuthError};
use crate::clinical::summary::Context;
use crate::state::AppState;

pub async fn type_level(
    req: HttpRequest,
    payload: web::Payload,
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    populate(req, payload, None, auth, state).await
}

pub async fn instance(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    let (_, id) = path.into_inner();
    if prior_auth::rules::by_id(&id).is_none() {
        return Err(FhirError::not_found(format!("no Questionnaire/{id}")));
    }
    populate(req, payload, Some(id), auth, state).await
}

/// A reference parameter: `valueReference.reference`.
fn reference_of(p: &Value) -> Option<&str> {
    p["valueReference"]["reference"].as_str()
}

fn read_parameters(body: &Value) -> Result<(String, String), FhirError> {
    if body["resourceType"] != "Parameters" {
        return Err(FhirError::bad_request(
            "$populate takes a Parameters resource",
        ));
    }
    let params = body["parameter"].as_array().cloned().unwrap_or_default();
    let named = |name: &str| params.iter().find(|p| p["name"] == name);
    let subject = named("subject")
        .and_then(reference_of)
        .and_then(|r| r.strip_prefix("Patient/"))
        .ok_or_else(|| {
            FhirError::bad_request("parameter subject (valueReference Patient/{id}) is required")
                .at("Parameters.parameter")
        })?;
    let order = named("order").and_then(reference_of).or_else(|| {
        params
            .iter()
            .filter(|p| p["name"] == "context")
            .flat_map(|p| p["part"].as_array().into_iter().flatten())
            .find(|part| part["name"] == "content")
            .and_then(reference_of)
    });
    let order = order.ok_or_else(|| {
        FhirError::bad_request(
            "the order is required: a context parameter whose content references the ServiceRequest or MedicationRequest",
        )
        .at("Parameters.parameter")
    })?;
    Ok((subject.to_owned(), order.to_owned()))
}

pub fn prior_auth_error(e: PriorAuthError) -> FhirError {
    match e {
        PriorAuthError::Store(e) => e.into(),
        PriorAuthError::Forbidden(r) => FhirError::forbidden(r),
        PriorAuthError::NotFound(r) => FhirError::not_found(r),
        PriorAuthError::NoRuleSet(r) => FhirError::new(
            actix_web::http::StatusCode::UNPROCESSABLE_ENTITY,
            super::outcome::IssueType::NotSupported,
            r,
        ),
        PriorAuthError::BadRequest(r) => FhirError::bad_request(r),
        PriorAuthError::Conflict(r) => FhirError::new(
            actix_web::http::StatusCode::CONFLICT,
            super::outcome::IssueType::Conflict,
            r,
        ),
    }
}

async fn populate(
    req: HttpRequest,
    payload: web::Payload,
    questionnaire: Option<String>,
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    negotiate::require_json_response(&req)?;
    // The audit row says why the record was read: the request must assert it.
    if auth.purpose != prior_auth::PAYMENT_PURPOSE {
        return Err(FhirError::forbidden(format!(
            "$populate reads the record for a prior authorization: send X-Purpose-Of-Use: {}",
            prior_auth::PAYMENT_PURPOSE
        )));
    }
    let body = read_limited(&req, payload, state.config.server.max_body_bytes).await?;
    let body: Value = serde_json::from_slice(&body)
        .map_err(|_| FhirError::bad_request("the body is not JSON"))?;
    let (patient, order) = read_parameters(&body)?;
    let subject = auth.owned_subject();
    let cx = Context {
        store: &state.store,
        tenant: auth.tenant(),
        public_base: &state.config.server.public_base_url,
        subject: &subject,
        bedrock: state.bedrock.as_ref(),
    };
    let draft = prior_auth::populate(&cx, &patient, &order, questionnaire.as_deref())
        .await
        .map_err(prior_auth_error)?;
    let mut cited = prior_auth::cited_references(&draft.response);
    cited.push(order.clone());
    auth.note(|n| {
        n.event = Some("populate");
        n.patients = vec![patient.clone()];
        n.entities = cited;
    });
    let parameters = json!({
        "resourceType": "Parameters",
        "parameter": [{"name": "response", "resource": draft.response}],
    });
    Ok(HttpResponse::Ok()
        .content_type(FHIR_JSON)
        .body(parameters.to_string()))
}
