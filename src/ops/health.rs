//! `/healthz`: the process answers. `/readyz`: the database answers and the schema is current.

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::state::AppState;
use crate::store::{SchemaStatus, schema_status};

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match schema_status(state.store.pool()).await {
        Ok(SchemaStatus::Current) => HttpResponse::Ok().json(json!({"status": "ready"})),
        Ok(SchemaStatus::Behind { applied, expected }) => HttpResponse::ServiceUnavailable().json(
            json!({"status": "migrations pending", "applied": applied, "expected": expected}),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            HttpResponse::ServiceUnavailable().json(json!({"status": "database unreachable"}))
        }
    }
}
