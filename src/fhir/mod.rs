//! The FHIR R4 REST surface at `/fhir/{tenant}`: routes, negotiation, OperationOutcome.
//! Handlers check the request, call `store`, and shape the HTTP answer; no SQL here.

mod audit_event;
mod audit_trail;
mod authn;
mod body;
mod break_glass;
mod bundle;
pub mod capability;
mod conditional;
mod everything;
mod export;
mod fhirpath_patch;
mod history;
pub mod negotiate;
pub mod outcome;
mod patch;
mod populate;
mod resource;
mod search;
mod summary;
mod validate;

use actix_web::http::header;
use actix_web::{HttpResponse, web};

pub use authn::{Authenticated, auth_failure_reason, authenticate};
pub use body::parse_resource;
pub use outcome::FhirError;

/// Type-level and instance-level interactions every resource type supports. The
/// CapabilityStatement lists exactly these; a test checks each one is routed.
pub const RESOURCE_INTERACTIONS: &[&str] = &[
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
];

/// Operations, as (name, level) for the CapabilityStatement; a test probes each.
pub const OPERATIONS: &[(&str, &str)] = &[("validate", "type and instance")];

/// Operations of one resource type, as (type, name, OperationDefinition).
pub const TYPE_OPERATIONS: &[(&str, &str, &str)] = &[
    (
        "Patient",
        "everything",
        "http://hl7.org/fhir/OperationDefinition/Patient-everything",
    ),
    (
        "Patient",
        "export",
        "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export",
    ),
    (
        "Questionnaire",
        "populate",
        "http://hl7.org/fhir/uv/sdc/OperationDefinition/Questionnaire-populate",
    ),
    (
        "Group",
        "export",
        "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export",
    ),
];

/// System-level operations, as (name, OperationDefinition).
pub const SYSTEM_OPERATIONS: &[(&str, &str)] = &[(
    "export",
    "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
)];

/// System-level interactions.
pub const SYSTEM_INTERACTIONS: &[&str] = &["transaction", "batch"];

/// Register the FHIR routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/fhir/{tenant}")
            .wrap(actix_web::middleware::from_fn(audit_trail::audit_trail))
            .service(
                // The base URL: transaction and batch Bundles.
                web::resource(["", "/"])
                    .route(web::post().to(bundle::transaction_or_batch))
                    .default_service(web::to(not_allowed("POST"))),
            )
            .service(
                web::resource("/metadata")
                    .route(web::get().to(capability::metadata))
                    .default_service(web::to(not_allowed("GET"))),
            )
            // The audit log, before the generic /{type} routes: read-only.
            .service(
                web::resource("/AuditEvent")
                    .route(web::get().to(audit_event::search_get))
                    .default_service(web::to(not_allowed("GET"))),
            )
            .service(
                web::resource("/AuditEvent/_search")
                    .route(web::post().to(audit_event::search_post))
                    .default_service(web::to(not_allowed("POST"))),
            )
            .service(
                web::resource("/AuditEvent/{id}")
                    .route(web::get().to(audit_event::read))
                    .default_service(web::to(not_allowed("GET"))),
            )
            // Bulk Data export and $everything, before the generic /{type} routes.
            .service(
                web::resource("/$export")
                    .route(web::get().to(export::system_kick_off))
                    .route(web::post().to(export::system_kick_off))
                    .default_service(web::to(not_allowed("GET, POST"))),
            )
            .service(
                web::resource("/$export-status/{job}")
                    .route(web::get().to(export::status))
                    .route(web::delete().to(export::cancel))
                    .default_service(web::to(not_allowed("GET, DELETE"))),
            )
            .service(
                web::resource("/$export-file/{job}/{file}")
                    .route(web::get().to(export::file))
                    .default_service(web::to(not_allowed("GET"))),
            )
            .service(
                web::resource("/Patient/$export")
                    .route(web::get().to(export::patient_kick_off))
                    .route(web::post().to(export::patient_kick_off))
                    .default_service(web::to(not_allowed("GET, POST"))),
            )
            .service(
                web::resource("/Group/{id}/$export")
                    .route(web::get().to(export::group_kick_off))
                    .route(web::post().to(export::group_kick_off))
                    .default_service(web::to(not_allowed("GET, POST"))),
            )
            .service(
                web::resource("/Questionnaire/$populate")
                    .route(web::post().to(populate::type_level))
                    .default_service(web::to(not_allowed("POST"))),
            )
            .service(
                web::resource("/Questionnaire/{id}/$populate")
                    .route(web::post().to(populate::instance))
                    .default_service(web::to(not_allowed("POST"))),
            )
            .service(
                web::resource("/Patient/$everything")
                    .route(web::get().to(everything::type_level))
                    .default_service(web::to(not_allowed("GET"))),
            )
            .service(
                web::resource("/Patient/{id}/$everything")
                    .route(web::get().to(everything::instance))
                    .default_service(web::to(not_allowed("GET"))),
            )
            .service(
                web::resource("/{type}")
                    .route(web::post().to(resource::create))
                    .route(web::get().to(search::search_get))
                    .route(web::put().to(conditional::update))
                    .route(web::delete().to(conditional::delete))
                    .default_service(web::to(not_allowed(conditional::TYPE_ALLOW))),
            )
            .service(
                web::resource("/{type}/_search")
                    .route(web::post().to(search::search_post))
                    .default_service(web::to(not_allowed("POST"))),
            )
            .service(
                web::resource("/{type}/_history")
                    .route(web::get().to(history::type_level))
                    .default_service(web::to(not_allowed("GET"))),
            )
            .service(
                web::resource("/{type}/$validate")
                    .route(web::post().to(validate::type_level))
                    .default_service(web::to(not_allowed("POST"))),
            )
            .service(
                web::resource("/Patient/{id}/$summary")
                    .route(web::get().to(summary::summary))
                    .default_service(web::to(not_allowed("GET"))),
            )
            .service(
                web::resource("/Patient/{id}/$break-glass")
                    .route(web::post().to(break_glass::break_glass))
                    .default_service(web::to(not_allowed("POST"))),
            )
            .service(
                web::resource("/{type}/{id}/$validate")
                    .route(web::post().to(validate::instance_level))
                    .route(web::get().to(validate::instance_level))
                    .default_service(web::to(not_allowed("GET, POST"))),
            )
            .service(
                web::resource("/{type}/{id}")
                    .route(web::get().to(resource::read))
                    .route(web::put().to(resource::update))
                    .route(web::patch().to(patch::patch))
                    .route(web::delete().to(resource::delete))
                    .default_service(web::to(not_allowed("GET, PUT, PATCH, DELETE"))),
            )
            .service(
                web::resource("/{type}/{id}/_history")
                    .route(web::get().to(history::instance))
                    .default_service(web::to(not_allowed("GET"))),
            )
            .service(
                web::resource("/{type}/{id}/_history/{vid}")
                    .route(web::get().to(resource::vread))
                    .default_service(web::to(not_allowed("GET"))),
            ),
    );
}

fn not_allowed(
    allow: &'static str,
) -> impl Fn() -> std::future::Ready<HttpResponse> + Clone + 'static {
    move || {
        let mut response = actix_web::ResponseError::error_response(&FhirError::new(
            actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
            outcome::IssueType::NotSupported,
            format!("this URL supports {allow}"),
        ));
        if let Ok(value) = header::HeaderValue::from_str(allow) {
            response.headers_mut().insert(header::ALLOW, value);
        }
        std::future::ready(response)
    }
}

/// Anything no route matches.
pub async fn not_found() -> HttpResponse {
    actix_web::ResponseError::error_response(&FhirError::not_found("no such endpoint"))
}
