//! `GET /fhir/{tenant}/metadata`: the CapabilityStatement, built from what the router serves.

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use super::negotiate::{self, FHIR_JSON};
use super::outcome::FhirError;
use super::{
    OPERATIONS, RESOURCE_INTERACTIONS, SYSTEM_INTERACTIONS, SYSTEM_OPERATIONS, TYPE_OPERATIONS,
};
use std::collections::BTreeMap;

use crate::conformance::{R4Structure, known_profiles};
use crate::search::{ParamType, SearchRegistry};
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
    let registry = SearchRegistry::global();
    // Which `Source:param` can point at each type, for searchRevInclude.
    let mut revincludes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for source in registry.searchable_types() {
        for p in registry
            .params(source)
            .filter(|p| p.param_type == ParamType::Reference)
        {
            for target in &p.targets {
                revincludes
                    .entry(target.clone())
                    .or_default()
                    .push(format!("{source}:{}", p.code));
            }
        }
    }
    let resources: Vec<Value> = R4Structure::global()
        .resource_types()
        .into_iter()
        .map(|t| {
            let mut params = vec![
                json!({"name": "_id", "type": "token", "definition": "http://hl7.org/fhir/SearchParameter/Resource-id"}),
                json!({"name": "_lastUpdated", "type": "date", "definition": "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated"}),
            ];
            params.extend(
                registry
                    .params(t)
                    .filter(|p| !matches!(p.code.as_str(), "_id" | "_lastUpdated") && p.param_type != ParamType::Special)
                    .map(|p| json!({"name": p.code, "type": p.param_type.code(), "definition": p.url})),
            );
            let includes: Vec<String> = registry
                .params(t)
                .filter(|p| p.param_type == ParamType::Reference)
                .map(|p| format!("{t}:{}", p.code))
                .collect();
            let mut revs = revincludes.get(t).cloned().unwrap_or_default();
            revs.sort();
            let profiles: Vec<&str> = known_profiles().filter(|(_, ty)| *ty == t).map(|(url, _)| url).collect();
            let operations: Vec<Value> = OPERATIONS
                .iter()
                .map(|(name, _)| json!({"name": name, "definition": format!("http://hl7.org/fhir/OperationDefinition/Resource-{name}")}))
                .chain(
                    TYPE_OPERATIONS
                        .iter()
                        .filter(|(ty, _, _)| *ty == t)
                        .map(|(_, name, definition)| json!({"name": name, "definition": definition})),
                )
                .collect();
            let mut entry = json!({
                "type": t,
                "interaction": interactions,
                "searchParam": params,
                "searchInclude": includes,
                "searchRevInclude": revs,
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalRead": "full-support",
                "conditionalUpdate": true,
                "conditionalDelete": "single",
                "operation": operations,
            });
            if !profiles.is_empty() {
                entry["supportedProfile"] = json!(profiles);
            }
            entry
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": state.started_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "publisher": "Hearth",
        "kind": "instance",
        // What US Core asks a server to support is checked by tests against this registry
        // (every SHALL search, the profiles, the interactions).
        "instantiates": ["http://hl7.org/fhir/us/core/CapabilityStatement/us-core-server|6.1.0"],
        "software": {"name": "Hearth", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {
            "description": format!("Hearth FHIR server, tenant {tenant}"),
            "url": state.fhir_base(tenant),
        },
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "security": security(&state.fhir_base(tenant)),
            "resource": resources,
            "interaction": SYSTEM_INTERACTIONS.iter().map(|code| json!({"code": code})).collect::<Vec<_>>(),
            "operation": SYSTEM_OPERATIONS.iter().map(|(name, definition)| json!({"name": name, "definition": definition})).collect::<Vec<_>>(),
        }],
    })
}

/// SMART on FHIR security: the service code, and the legacy `oauth-uris` extension some
/// clients still read instead of `.well-known/smart-configuration`. (It has no `authorize`:
/// Hearth's own server issues Backend Services tokens only.)
fn security(fhir_base: &str) -> Value {
    json!({
        "cors": false,
        "service": [{
            "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                "code": "SMART-on-FHIR",
            }],
            "text": "OAuth 2.0 bearer tokens per SMART App Launch 2.2: Backend Services from this server, user tokens from the tenant's identity providers",
        }],
        "extension": [{
            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
            "extension": [
                {"url": "token", "valueUri": format!("{fhir_base}/auth/token")},
                {"url": "introspect", "valueUri": format!("{fhir_base}/auth/introspect")},
                {"url": "revoke", "valueUri": format!("{fhir_base}/auth/revoke")},
            ],
        }],
        "description": "Every interaction except metadata requires an OAuth 2.0 bearer token for this tenant, in the Authorization header.",
    })
}
