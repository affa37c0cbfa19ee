//! Everything that can go wrong in the app, as a page a clinician can act on: a status, a
//! heading, a plain message and (where useful) what to do next. Never internals: store and
//! EHR errors are logged by kind (no PHI) and shown in words.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use super::http::{AppCookie, PagePolicy, SESSION_COOKIE};
use super::pages::{Chrome, ErrorView, ended_page, error_page};
use crate::auth::launch::LaunchError;
use crate::store::{SessionEnd, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("launch without iss")]
    MissingIss,
    #[error("launch from an unregistered EHR")]
    UnknownIss,
    #[error("callback without a usable state")]
    BadState,
    #[error("callback in another browser than the launch")]
    OtherBrowser,
    #[error("the EHR answered the authorization with {0}")]
    Refused(String),
    #[error("the EHR did not complete the sign-in: {0}")]
    Launch(#[from] LaunchError),
    #[error("the EHR gave no patient context")]
    NoPatient,
    #[error("no session")]
    NoSession,
    #[error("session ended ({})", .0.code())]
    Ended(SessionEnd),
    #[error("a page of another patient than the session's")]
    OtherPatient,
    #[error("not found")]
    NotFound,
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("bad form")]
    BadForm,
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("session secrets: {0}")]
    Seal(#[from] crate::auth::seal::SealError),
    /// A prior-authorization step refused (no rule set, an unreviewed draft, a payer that
    /// did not accept): the message is for the page only, never the log.
    #[error("prior authorization refused ({status})")]
    PriorAuth { status: StatusCode, message: String },
}

impl AppError {
    fn view(&self) -> (StatusCode, &'static str, String) {
        use AppError::*;
        match self {
            MissingIss => (
                StatusCode::BAD_REQUEST,
                "Launch incomplete",
                "The EHR did not say which FHIR server launched Hearth (no iss). Open Hearth again from the patient's chart.".into(),
            ),
            UnknownIss => (
                StatusCode::BAD_REQUEST,
                "Unknown EHR",
                "Hearth is not registered with the EHR that launched it. Ask your administrator to register this EHR with Hearth.".into(),
            ),
            BadState => (
                StatusCode::BAD_REQUEST,
                "Sign-in expired or not valid",
                "This sign-in did not start here, was already used, or took too long. Open Hearth again from the patient's chart.".into(),
            ),
            OtherBrowser => (
                StatusCode::BAD_REQUEST,
                "Sign-in started elsewhere",
                "This sign-in was started in another browser window or session. Open Hearth again from the patient's chart.".into(),
            ),
            Refused(error) if error == "access_denied" => (
                StatusCode::FORBIDDEN,
                "Access not granted",
                "The EHR did not grant Hearth access (consent was denied). Nothing was read.".into(),
            ),
            Refused(error) => (
                StatusCode::BAD_GATEWAY,
                "The EHR refused the sign-in",
                format!("The EHR answered with \u{201c}{}\u{201d}. Try again; if it persists, tell your administrator.", short(error)),
            ),
            Launch(LaunchError::Discovery(_)) => (
                StatusCode::BAD_GATEWAY,
                "The EHR is not reachable",
                "Hearth could not read the EHR's SMART configuration. The EHR may be down; try again in a few minutes.".into(),
            ),
            Launch(LaunchError::TokenRefused { error, .. }) => (
                StatusCode::BAD_GATEWAY,
                "The EHR refused the sign-in",
                format!("The EHR's token endpoint answered \u{201c}{}\u{201d}. Open Hearth again from the patient's chart.", short(error)),
            ),
            Launch(LaunchError::IdToken(_)) => (
                StatusCode::BAD_GATEWAY,
                "Sign-in could not be verified",
                "The EHR's identity token did not pass Hearth's checks (signature, issuer, audience, nonce or expiry). Nothing was shown. Tell your administrator.".into(),
            ),
            Launch(_) => (
                StatusCode::BAD_GATEWAY,
                "The EHR could not complete the sign-in",
                "Hearth could not complete the sign-in with the EHR. The EHR may be down, or the registration may be wrong; try again or tell your administrator.".into(),
            ),
            NoPatient => (
                StatusCode::BAD_GATEWAY,
                "No patient selected",
                "The EHR did not say which patient to open. Open Hearth from a patient's chart.".into(),
            ),
            NoSession | Ended(_) => (
                StatusCode::UNAUTHORIZED,
                "Signed out",
                "Your Hearth session has ended. Open Hearth again from the patient's chart.".into(),
            ),
            OtherPatient => (
                StatusCode::FORBIDDEN,
                "Another patient",
                "This Hearth window was opened for a different patient. Open Hearth from this patient's chart.".into(),
            ),
            NotFound => (
                StatusCode::NOT_FOUND,
                "Not found",
                "This record is not in Hearth's copy of the chart.".into(),
            ),
            Forbidden(_) => (
                StatusCode::FORBIDDEN,
                "Not permitted",
                "You may not see this record from this session.".into(),
            ),
            BadForm => (
                StatusCode::BAD_REQUEST,
                "Request not accepted",
                "The form was not sent from this Hearth window. Reload the page and try again.".into(),
            ),
            PriorAuth { status, message } => (*status, "Prior authorization", message.clone()),
            Store(_) | Seal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "Hearth could not complete this request. Try again; if it persists, tell your administrator.".into(),
            ),
        }
    }
}

/// Error codes from another system, cut to a safe size and character set.
fn short(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric() || "_-. ".contains(*c))
        .take(80)
        .collect()
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        self.view().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, heading, message) = self.view();
        match self {
            AppError::Store(e) => tracing::error!(error = %e, "app: store failure"),
            AppError::Seal(e) => tracing::error!(error = %e, "app: session secrets"),
            AppError::Launch(e) => tracing::warn!(error = %e, "app: launch failed"),
            other => tracing::info!(error = %other, "app: refused"),
        }
        // Error pages hold no PHI and no actions, and may show inside any EHR's frame
        // (where the registration is not known, e.g. a session that ended).
        let policy = PagePolicy::new(&["*".to_owned()]);
        let chrome = Chrome {
            title: heading,
            nonce: &policy.nonce,
            style: None,
            session: None,
        };
        let html = match self {
            AppError::NoSession | AppError::Ended(_) => ended_page(&chrome, heading, &message),
            _ => error_page(
                &chrome,
                &ErrorView {
                    status: status.as_u16(),
                    heading,
                    message: &message,
                    action: None,
                },
            ),
        };
        let mut response = policy.page(status, html);
        if matches!(self, AppError::NoSession | AppError::Ended(_)) {
            AppCookie::removal(SESSION_COOKIE).set_on(&mut response);
        }
        response
    }
}
