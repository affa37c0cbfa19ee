//! `GET /fhir/{tenant}/metadata`: the CapabilityStatement, built from what the router serves.

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use super::negotiate::{self, FHIR_JSON};
use super::outcome::FhirError;
use super::{RESOURCE_INTERACTIONS, SYSTEM_INTERACTIONS};
use crate::conformance::R4Structure;
use crate::state::AppState;
use crate::tenant::TenantId;

pub async fn metadata(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    negotiate::require_json_response(&req)?;
    let tenant =
        TenantId::parse(&path.into_inner()).map_err(|_| FhirError::not_found("unknown tenant"))?;
    let statement = capability_statement(&state, &tenant);
    Ok(HttpResponse::Ok()
        .content_type(FHIR_JSON)
        .body(statement.to_string()))
}

pub fn capability_statement(state: &AppState, tenant: &TenantId) -> Value {
    let interactions: Vec<Value> = RESOURCE_INTERACTIONS
        .iter()
        .map(|code| json!({"code": code}))
        .collect();
    let resources: Vec<Value> = R4Structure::global()
        .resource_types()
        .into_iter()
        .map(|t| {
            json!({
                "type": t,
                "interaction": interactions,
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": false,
                "conditionalRead": "not-supported",
                "conditionalUpdate": false,
                "conditionalDelete": "not-supported",
            })
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": state.started_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "publisher": "Hearth",
        "kind": "instance",
        "software": {"name": "Hearth", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {
            "description": format!("Hearth FHIR server, tenant {tenant}"),
            "url": state.fhir_base(tenant),
        },
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "security": {
                "cors": false,
                "description": "Every interaction except metadata requires an OAuth 2.0 bearer token issued for this tenant.",
            },
            "resource": resources,
            "interaction": SYSTEM_INTERACTIONS.iter().map(|code| json!({"code": code})).collect::<Vec<_>>(),
        }],
    })
}
