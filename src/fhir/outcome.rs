//! OperationOutcome: the body of every FHIR error, and its HTTP status.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde_json::{Map, Value, json};

use crate::conformance::{IssueClass, StructureIssue};
use crate::store::StoreError;

/// OperationOutcome.issue.severity
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Fatal,
    Error,
    Warning,
    Information,
}

impl Severity {
    fn code(self) -> &'static str {
        match self {
            Severity::Fatal => "fatal",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Information => "information",
        }
    }
}

/// OperationOutcome.issue.code (the IssueType value set), the subset Hearth raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueType {
    Invalid,
    Structure,
    Required,
    Value,
    Invariant,
    CodeInvalid,
    Security,
    Login,
    Forbidden,
    Expired,
    NotSupported,
    NotFound,
    Deleted,
    TooLong,
    Conflict,
    Exception,
    Transient,
    Informational,
}

impl IssueType {
    fn code(self) -> &'static str {
        match self {
            IssueType::Invalid => "invalid",
            IssueType::Structure => "structure",
            IssueType::Required => "required",
            IssueType::Value => "value",
            IssueType::Invariant => "invariant",
            IssueType::CodeInvalid => "code-invalid",
            IssueType::Security => "security",
            IssueType::Login => "login",
            IssueType::Forbidden => "forbidden",
            IssueType::Expired => "expired",
            IssueType::NotSupported => "not-supported",
            IssueType::NotFound => "not-found",
            IssueType::Deleted => "deleted",
            IssueType::TooLong => "too-long",
            IssueType::Conflict => "conflict",
            IssueType::Exception => "exception",
            IssueType::Transient => "transient",
            IssueType::Informational => "informational",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Issue {
    pub severity: Severity,
    pub code: IssueType,
    pub diagnostics: String,
    /// FHIRPath expressions of the elements concerned, e.g. `Patient.name[0].given`.
    pub expression: Vec<String>,
}

impl Issue {
    pub fn error(code: IssueType, diagnostics: impl Into<String>) -> Self {
        Issue {
            severity: Severity::Error,
            code,
            diagnostics: diagnostics.into(),
            expression: Vec::new(),
        }
    }

    fn to_json(&self) -> Value {
        let mut issue = Map::new();
        issue.insert("severity".into(), self.severity.code().into());
        issue.insert("code".into(), self.code.code().into());
        issue.insert("diagnostics".into(), self.diagnostics.clone().into());
        if !self.expression.is_empty() {
            issue.insert("expression".into(), self.expression.clone().into());
        }
        Value::Object(issue)
    }
}

pub fn operation_outcome(issues: &[Issue]) -> Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": issues.iter().map(Issue::to_json).collect::<Vec<_>>(),
    })
}

/// An error answered as an OperationOutcome with an HTTP status.
#[derive(Debug, Clone)]
pub struct FhirError {
    pub status: StatusCode,
    pub issues: Vec<Issue>,
    /// 401s carry `WWW-Authenticate: Bearer` with this error code (RFC 6750).
    pub bearer_error: Option<&'static str>,
}

impl FhirError {
    pub fn new(status: StatusCode, code: IssueType, diagnostics: impl Into<String>) -> Self {
        FhirError {
            status,
            issues: vec![Issue::error(code, diagnostics)],
            bearer_error: None,
        }
    }

    pub fn at(mut self, expression: impl Into<String>) -> Self {
        if let Some(issue) = self.issues.first_mut() {
            issue.expression.push(expression.into());
        }
        self
    }

    pub fn bad_request(diagnostics: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, IssueType::Invalid, diagnostics)
    }

    pub fn unauthorized(bearer_error: &'static str, diagnostics: impl Into<String>) -> Self {
        FhirError {
            bearer_error: Some(bearer_error),
            ..Self::new(StatusCode::UNAUTHORIZED, IssueType::Login, diagnostics)
        }
    }

    pub fn forbidden(diagnostics: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, IssueType::Forbidden, diagnostics)
    }

    pub fn not_found(diagnostics: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, IssueType::NotFound, diagnostics)
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            IssueType::Exception,
            "internal error; the request id in X-Request-Id identifies it in the server log",
        )
    }

    /// Structural validation failed: 400 when the content cannot be read as the resource
    /// (unknown elements, wrong JSON kinds), 422 when it reads but breaks R4 rules.
    pub fn from_structure(issues: Vec<StructureIssue>) -> Self {
        let status = if issues.iter().any(|i| i.class == IssueClass::Structure) {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        let issues = issues
            .into_iter()
            .map(|i| Issue {
                severity: Severity::Error,
                code: match i.class {
                    IssueClass::Structure => IssueType::Structure,
                    IssueClass::Required => IssueType::Required,
                    IssueClass::Value => IssueType::Value,
                },
                diagnostics: i.message,
                expression: vec![i.expression],
            })
            .collect();
        FhirError {
            status,
            issues,
            bearer_error: None,
        }
    }
}

impl FhirError {
    /// The answer to a resource the write path refused: 400 for unreadable content, 422
    /// for R4 rules or (in an enforcing tenant) profile errors.
    pub fn from_invalid(e: crate::resource::InvalidResource, resource_type: &str) -> Self {
        use crate::resource::InvalidResource;
        match e {
            InvalidResource::Structure(issues) => FhirError::from_structure(issues),
            InvalidResource::Model(message) => FhirError::new(
                StatusCode::BAD_REQUEST,
                IssueType::Structure,
                format!("not a valid R4 {resource_type}: {message}"),
            ),
            InvalidResource::Profile(issues) => FhirError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                issues: issues.iter().map(Issue::from_profile).collect(),
                bearer_error: None,
            },
        }
    }
}

impl Issue {
    pub fn from_profile(p: &crate::conformance::ProfileIssue) -> Issue {
        use crate::conformance::{ProfileIssueCode, Severity as ProfileSeverity};
        Issue {
            severity: match p.severity {
                ProfileSeverity::Error => Severity::Error,
                ProfileSeverity::Warning => Severity::Warning,
            },
            code: match p.code {
                ProfileIssueCode::Required => IssueType::Required,
                ProfileIssueCode::Value => IssueType::Value,
                ProfileIssueCode::Invariant => IssueType::Invariant,
                ProfileIssueCode::Structure => IssueType::Structure,
                ProfileIssueCode::CodeInvalid => IssueType::CodeInvalid,
            },
            diagnostics: format!("{} (profile {})", p.message, p.profile),
            expression: vec![p.expression.clone()],
        }
    }
}

impl std::fmt::Display for FhirError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.status)
    }
}

impl ResponseError for FhirError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        response.insert_header((header::CONTENT_TYPE, super::negotiate::FHIR_JSON));
        response.insert_header((header::CACHE_CONTROL, "no-store"));
        if let Some(code) = self.bearer_error {
            let value = format!("Bearer realm=\"hearth\", error=\"{code}\"");
            if let Ok(v) = HeaderValue::from_str(&value) {
                response.insert_header((header::WWW_AUTHENTICATE, v));
            }
        }
        response.body(operation_outcome(&self.issues).to_string())
    }
}

impl From<StoreError> for FhirError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => FhirError::not_found("resource not found"),
            StoreError::Gone(stamp) => FhirError::new(
                StatusCode::GONE,
                IssueType::Deleted,
                format!("resource was deleted (version {})", stamp.version_id),
            ),
            StoreError::VersionConflict { expected, current } => FhirError::new(
                StatusCode::PRECONDITION_FAILED,
                IssueType::Conflict,
                format!("If-Match expected version {expected}, the current version is {current}"),
            ),
            StoreError::Busy | StoreError::ConcurrentChange => FhirError::new(
                StatusCode::CONFLICT,
                IssueType::Conflict,
                "another request is changing this resource; retry",
            ),
            StoreError::UnknownTenant => FhirError::not_found("unknown tenant"),
            StoreError::Forbidden(reason) => FhirError::forbidden(reason),
            StoreError::InvalidPageToken => {
                FhirError::bad_request("_page is not a page token Hearth issued for this search")
            }
            other => {
                // The StoreError's Display carries only a SQLSTATE, never row values.
                tracing::error!(error = %other, "store failure");
                FhirError::internal()
            }
        }
    }
}
