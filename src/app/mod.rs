//! The SMART app: Hearth launched from an EHR (Epic, Oracle Health) or standalone, the
//! clinician's session and pages. Routes under `/app`; HTML only (errors are pages, not
//! OperationOutcomes). The launch client itself (discovery, code exchange, ID token) is
//! `auth::launch`; the record sync is `ehr::sync`.

pub mod error;
pub mod http;
pub mod launch;
pub mod pages;
pub mod prior_auth;
pub mod render;
pub mod session;
pub mod views;

use actix_web::web;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/app", web::get().to(views::home))
        .route("/app/launch", web::get().to(launch::ehr_launch))
        .route("/app/start", web::get().to(launch::standalone))
        .route("/app/callback", web::get().to(launch::callback))
        .route("/app/logout", web::post().to(session::logout))
        .route("/app/activity", web::post().to(session::activity))
        .route("/app/ended", web::get().to(session::ended))
        .route("/app/static/{file}", web::get().to(views::static_file))
        .route("/app/patient/{pid}", web::get().to(views::summary))
        .route("/app/patient/{pid}/sync", web::post().to(launch::resync))
        .route(
            "/app/patient/{pid}/prior-auth",
            web::get().to(prior_auth::list),
        )
        .route(
            "/app/patient/{pid}/prior-auth/draft",
            web::post().to(prior_auth::draft),
        )
        .route(
            "/app/patient/{pid}/prior-auth/{packet}",
            web::get().to(prior_auth::packet),
        )
        .route(
            "/app/patient/{pid}/prior-auth/{packet}/review",
            web::post().to(prior_auth::review),
        )
        .route(
            "/app/patient/{pid}/prior-auth/{packet}/decision",
            web::post().to(prior_auth::decision),
        )
        .route(
            "/app/patient/{pid}/prior-auth/{packet}/bundle",
            web::get().to(prior_auth::bundle),
        )
        .route(
            "/app/patient/{pid}/prior-auth/{packet}/submit",
            web::post().to(prior_auth::submit),
        )
        .route(
            "/app/patient/{pid}/source/{type}/{id}",
            web::get().to(views::source),
        )
        .route("/app/{tenant}/jwks", web::get().to(launch::jwks));
}
