//! The pages behind a session: the patient's summary, the source view of one cited
//! resource, the prior-authorization page. Every read goes through the access decision
//! with the session as the caller, inside the SQL, and leaves one audit row in the
//! transaction that read it.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

use super::error::AppError;
use super::http::{PagePolicy, see_other};
use super::pages::{
    self, Chrome, CitedSection, CitedStatement, ClinicalView, NoteView, PatientBanner,
    ResourceGroup, ResourceItem, SessionChrome, SmartStyle, SourceView, SummaryView, SyncStatus,
};
use super::render;
use super::session::{ActiveSession, current, for_patient};
use crate::access::{self, OwnedSubject, Visibility};
use crate::audit::{AuditAction, AuditOutcome, AuditRecord};
use crate::auth::Interaction;
use crate::ehr::sync::{SyncOutcome, SyncReport};
use crate::state::AppState;
use crate::store::{StoredVersion, TenantTx};

/// The summary's record groups, in the order a clinician reads them.
const SUMMARY_TYPES: &[&str] = &[
    "Condition",
    "MedicationRequest",
    "AllergyIntolerance",
    "Observation",
    "Encounter",
    "Procedure",
    "Immunization",
    "DiagnosticReport",
    "DocumentReference",
    "CareTeam",
];
/// Records per group on the summary page.
const PER_GROUP: u32 = 100;

/// The session as the access decision's caller.
pub(super) fn subject(
    state: &AppState,
    session: &ActiveSession,
    policy: std::sync::Arc<access::AccessPolicy>,
) -> OwnedSubject {
    OwnedSubject {
        principal: session.principal(),
        policy,
        specialties: Vec::new(),
        purpose: "TREAT".to_owned(),
        local_base: state.fhir_base(&session.tenant),
    }
}

/// What the session pages share: the policy (nonce, frame ancestors) and the chrome parts.
pub(super) struct Frame {
    pub(super) policy: PagePolicy,
    style: Option<SmartStyle>,
    banner: Option<PatientBanner>,
}

impl Frame {
    pub(super) fn new(session: &ActiveSession, patient: Option<&Value>) -> Frame {
        Frame {
            policy: PagePolicy::new(&session.registration.frame_ancestors),
            style: session.row.smart_style.as_ref().map(SmartStyle::from_json),
            banner: patient
                .filter(|_| session.row.need_patient_banner)
                .map(PatientBanner::from_patient),
        }
    }

    pub(super) fn chrome<'a>(
        &'a self,
        title: &'a str,
        session: &'a ActiveSession,
        ehr: &'a str,
        idle: u64,
    ) -> Chrome<'a> {
        Chrome {
            title,
            nonce: &self.policy.nonce,
            style: self.style.as_ref(),
            session: Some(SessionChrome {
                patient_id: &session.row.patient_id,
                banner: self.banner.as_ref(),
                user_display: session.row.user_display.as_deref(),
                inactivity_secs: idle,
                csrf: &session.row.csrf,
                ehr_name: ehr,
            }),
        }
    }
}

pub(super) fn ehr_label(session: &ActiveSession) -> String {
    format!(
        "{} ({})",
        session.registration.name, session.registration.iss
    )
}

/// Read one resource if the decision lets the session see it: (version, its patients).
async fn read_visible(
    tx: &mut TenantTx,
    subject: &OwnedSubject,
    resource_type: &str,
    id: &str,
) -> Result<Option<(StoredVersion, Vec<String>)>, AppError> {
    let decision = match subject.decide(resource_type, Interaction::Read) {
        Ok(d) => d,
        Err(denied) => return Err(AppError::Forbidden(denied.0)),
    };
    let filter = match &decision.visibility {
        Visibility::All => None,
        Visibility::Filtered(f) => Some(f),
    };
    let (params, itself) = access::compartment_params(resource_type);
    match tx.read_visible(resource_type, id, filter, params).await {
        Ok((stored, true, mut patients)) => {
            if itself {
                patients.push(stored.id.clone());
            }
            Ok(Some((stored, patients)))
        }
        Ok((_, false, _)) => Err(AppError::Forbidden(format!(
            "{resource_type} outside the session's access"
        ))),
        Err(crate::store::StoreError::NotFound | crate::store::StoreError::Gone(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn parse_json(stored: &StoredVersion) -> Option<Value> {
    stored
        .content
        .as_deref()
        .and_then(|c| serde_json::from_str(c).ok())
}

fn view_record(session: &ActiveSession, event: &'static str) -> AuditRecord {
    let mut rec = AuditRecord::new(event, AuditAction::Read, AuditOutcome::Success);
    rec.agent = Some(session.agent());
    rec.purpose = Some("TREAT".to_owned());
    rec.patients = vec![session.row.patient_id.clone()];
    rec
}

/// `GET /app/patient/{pid}`: sync status and the patient's records, each a citation link.
pub async fn summary(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let session = for_patient(&req, &state, &path).await?;
    let pid = session.row.patient_id.clone();
    let subject = subject(
        &state,
        &session,
        state.access_policy(&session.tenant).await?,
    );
    let local_base = state.fhir_base(&session.tenant);
    let mut rec = view_record(&session, "app-view");
    let mut tx = state.store.begin(&session.tenant).await?;
    let patient = read_visible(&mut tx, &subject, "Patient", &pid).await?;
    if let Some((stored, _)) = &patient {
        rec.entities.push(format!(
            "Patient/{}/_history/{}",
            stored.id, stored.version_id
        ));
    }
    let patient_json = patient.as_ref().and_then(|(s, _)| parse_json(s));
    let mut groups = Vec::new();
    let mut labels: HashMap<String, String> = HashMap::new();
    for resource_type in SUMMARY_TYPES {
        let Ok(decision) = subject.decide(resource_type, Interaction::Search) else {
            rec.reasons.push(format!(
                "{resource_type}: not covered by the session's scopes"
            ));
            continue;
        };
        let params = vec![
            ("patient".to_owned(), pid.clone()),
            ("_count".to_owned(), PER_GROUP.to_string()),
        ];
        let Ok(mut query) =
            crate::search::query::parse_search(resource_type, &params, true, &local_base)
        else {
            continue;
        };
        query.access = match decision.visibility {
            Visibility::All => None,
            Visibility::Filtered(f) => {
                Some(access::search_filter(&state.store, &session.tenant, &query, f).await?)
            }
        };
        let page = tx.search(&query).await?;
        let mut items: Vec<(Option<String>, ResourceItem)> = Vec::new();
        for stored in &page.matches {
            rec.entities.push(format!(
                "{}/{}/_history/{}",
                stored.resource_type, stored.id, stored.version_id
            ));
            let Some(value) = parse_json(stored) else {
                continue;
            };
            let date = render::resource_date(&value);
            labels.insert(
                format!("{}/{}", stored.resource_type, stored.id),
                render::resource_label(&value),
            );
            items.push((
                date.clone(),
                ResourceItem {
                    label: render::resource_label(&value),
                    date,
                    status: render::resource_status(&value),
                    source_href: format!(
                        "/app/patient/{pid}/source/{}/{}",
                        stored.resource_type, stored.id
                    ),
                },
            ));
        }
        // Newest first (FHIR dates sort as text within one precision).
        items.sort_by(|a, b| b.0.cmp(&a.0));
        groups.push(ResourceGroup {
            resource_type: (*resource_type).to_owned(),
            heading: render::group_heading(resource_type).to_owned(),
            items: items.into_iter().map(|(_, item)| item).collect(),
        });
    }
    crate::audit::record(&mut tx, &rec).await?;
    tx.commit().await?;

    // The cited clinical summary, over the same access decision.
    let clinical = {
        let cx = crate::clinical::summary::Context {
            store: &state.store,
            tenant: &session.tenant,
            public_base: &state.config.server.public_base_url,
            subject: &subject,
            bedrock: state.bedrock.as_ref(),
        };
        match crate::clinical::summary::summarize(&cx, &pid).await {
            Ok(summary) => Some(clinical_view(&summary, &pid, &labels)),
            Err(crate::clinical::summary::SummaryError::Forbidden(_)) => None,
            Err(crate::clinical::summary::SummaryError::Store(e)) => return Err(e.into()),
            // The records below still show; the summary says nothing rather than guess.
            Err(crate::clinical::summary::SummaryError::Index(e)) => {
                tracing::warn!(error = %e, "app: summary unavailable");
                None
            }
        }
    };
    let report: SyncReport = session
        .row
        .sync_report
        .clone()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let ehr = ehr_label(&session);
    let view = SummaryView {
        clinical,
        groups,
        sync: SyncStatus {
            outcome: match report.outcome {
                SyncOutcome::Complete => pages::SyncOutcome::Complete,
                SyncOutcome::Partial => pages::SyncOutcome::Partial,
                SyncOutcome::Failed => pages::SyncOutcome::Failed,
                SyncOutcome::NotRun => pages::SyncOutcome::NotRun,
            },
            ehr: ehr.clone(),
            finished_at: report.finished_at.clone(),
            fetched: report.fetched,
            stored: report.stored,
            unchanged: report.unchanged,
            problems: report.problems.clone(),
        },
    };
    let frame = Frame::new(&session, patient_json.as_ref());
    let chrome = frame.chrome(
        "Patient summary",
        &session,
        &ehr,
        state.config.app.idle_timeout_secs,
    );
    Ok(frame
        .policy
        .page(StatusCode::OK, pages::summary_page(&chrome, &view)))
}

/// A summary as the page shows it: each citation a link to the source view (a note's
/// passage highlighted), named by the cited record's label.
fn clinical_view(
    summary: &crate::clinical::Summary,
    pid: &str,
    labels: &HashMap<String, String>,
) -> ClinicalView {
    ClinicalView {
        engine: summary.engine.clone(),
        notice: summary.notice.clone(),
        sections: summary
            .sections
            .iter()
            .map(|section| CitedSection {
                title: section.title.clone(),
                empty_text: section.empty_text.clone(),
                statements: section
                    .statements
                    .iter()
                    .map(|statement| CitedStatement {
                        text: statement.text.clone(),
                        flagged: statement.flagged.clone(),
                        citations: statement
                            .citations
                            .iter()
                            .map(|c| {
                                let mut href = format!("/app/patient/{pid}/source/{}", c.reference);
                                if let Some((start, end)) = c.span {
                                    href.push_str(&format!("?passage={start}-{end}#cited"));
                                }
                                let label = labels
                                    .get(&c.reference)
                                    .cloned()
                                    .unwrap_or_else(|| c.reference.clone());
                                (label, href)
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

#[derive(Deserialize)]
pub struct SourceQuery {
    /// The cited passage of a note: `start-end` byte offsets into its text.
    passage: Option<String>,
}

/// `GET /app/patient/{pid}/source/{type}/{id}`: one cited resource (a note's passage
/// highlighted).
pub async fn source(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String, String)>,
    query: web::Query<SourceQuery>,
) -> Result<HttpResponse, AppError> {
    let (pid, resource_type, id) = path.into_inner();
    let session = for_patient(&req, &state, &pid).await?;
    if !crate::ehr::sync::is_fhir_id(&id) || !resource_type.bytes().all(|b| b.is_ascii_alphabetic())
    {
        return Err(AppError::NotFound);
    }
    let subject = subject(
        &state,
        &session,
        state.access_policy(&session.tenant).await?,
    );
    let mut rec = view_record(&session, "app-view");
    let mut tx = state.store.begin(&session.tenant).await?;
    let (stored, patients) = read_visible(&mut tx, &subject, &resource_type, &id)
        .await?
        .ok_or(AppError::NotFound)?;
    // A resource of another patient is refused even if the decision would allow it.
    if !patients.is_empty() && !patients.contains(&session.row.patient_id) {
        return Err(AppError::OtherPatient);
    }
    rec.entities.push(format!(
        "{resource_type}/{id}/_history/{}",
        stored.version_id
    ));
    let patient = read_visible(&mut tx, &subject, "Patient", &session.row.patient_id)
        .await
        .ok()
        .flatten();
    crate::audit::record(&mut tx, &rec).await?;
    tx.commit().await?;

    let value = parse_json(&stored).ok_or(AppError::NotFound)?;
    let note = note_of(&value, query.passage.as_deref());
    let last_updated = stored
        .last_updated
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let view = SourceView {
        resource_type: &resource_type,
        id: &id,
        version: stored.version_id,
        last_updated: &last_updated,
        resource: &value,
        source: value.pointer("/meta/source").and_then(Value::as_str),
        note,
        back_href: format!("/app/patient/{pid}"),
    };
    let patient_json = patient.as_ref().and_then(|(s, _)| parse_json(s));
    let ehr = ehr_label(&session);
    let frame = Frame::new(&session, patient_json.as_ref());
    let title = format!("{resource_type}/{id}");
    let chrome = frame.chrome(&title, &session, &ehr, state.config.app.idle_timeout_secs);
    Ok(frame
        .policy
        .page(StatusCode::OK, pages::source_page(&chrome, &view)))
}

/// The first text attachment of a note (DocumentReference content, DiagnosticReport
/// presentedForm), with the cited passage.
fn note_of(resource: &Value, passage: Option<&str>) -> Option<NoteView> {
    let attachments: Vec<&Value> = match resource.get("resourceType").and_then(Value::as_str) {
        Some("DocumentReference") => resource
            .get("content")
            .and_then(Value::as_array)
            .map(|c| c.iter().filter_map(|c| c.get("attachment")).collect())
            .unwrap_or_default(),
        Some("DiagnosticReport") => resource
            .get("presentedForm")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default(),
        _ => return None,
    };
    let attachment = attachments.into_iter().find(|a| a.get("data").is_some())?;
    let bytes = STANDARD
        .decode(attachment.get("data")?.as_str()?.as_bytes())
        .ok()?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let highlight = passage.and_then(|p| {
        let (start, end) = p.split_once('-')?;
        Some(start.parse().ok()?..end.parse().ok()?)
    });
    Some(NoteView {
        title: attachment
            .get("title")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| render::resource_label(resource)),
        text,
        highlight,
    })
}

/// `GET /app`: the current session's patient, or the signed-out page.
pub async fn home(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let session = current(&req, &state).await?;
    Ok(see_other(&format!("/app/patient/{}", session.row.patient_id)).finish())
}

/// `GET /app/static/{file}`: the stylesheet and the script.
pub async fn static_file(path: web::Path<String>) -> HttpResponse {
    let (body, content_type) = match path.as_str() {
        "app.css" => (pages::APP_CSS, "text/css; charset=utf-8"),
        "app.js" => (pages::APP_JS, "text/javascript; charset=utf-8"),
        _ => return HttpResponse::NotFound().finish(),
    };
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}
