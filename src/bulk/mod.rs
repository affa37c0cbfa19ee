//! Bulk Data export (Bulk Data Access IG v2, `$export`) as background jobs, and the
//! paging plan of `Patient/$everything`. No HTTP here: `fhir::export` and
//! `fhir::everything` serve these.
//!
//! A job is a row (`store::bulk`): its request, the caller (what `access::decide` needs to
//! decide again when the job runs) and its progress. The exporter (`run_exporter`, in every
//! server) claims jobs with a lease, a bounded number per tenant; a job pages through each
//! type with the same keyset search the REST API runs (the access filter in the SQL), writes
//! NDJSON lines, and after every page makes the file durable and then saves the page token
//! and byte length. A job whose server stopped is resumed by any server once its lease runs
//! out: the file being written is cut back to the saved length and the saved page is read
//! again, so each resource is written once.

pub mod output;
pub mod s3;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::access::{self, OwnedSubject, Visibility};
use crate::auth::{Interaction, Principal, ScopeSet, TokenIssuer};
use crate::search::query::{AccessFilter, Clause, PatientSet, SearchQuery, parse_criteria};
use crate::state::AppState;
use crate::store::{BulkFileRow, BulkJobRow, BulkProgress, StoreError};
use crate::tenant::TenantId;
use output::{OutputError, PartWriter};

/// The output formats the IG names for NDJSON; Hearth writes FHIR NDJSON whichever is asked.
pub const OUTPUT_FORMATS: &[&str] = &["application/fhir+ndjson", "application/ndjson", "ndjson"];

#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    /// The request cannot be run as asked (400); the text names the parameter.
    #[error("{0}")]
    BadRequest(String),
    /// The caller may not export this (403).
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Output(#[from] OutputError),
}

/// Which records: every resource, all patients' data, or a Group's members' data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportLevel {
    System,
    Patient,
    Group(String),
}

impl ExportLevel {
    fn code(&self) -> &'static str {
        match self {
            ExportLevel::System => "system",
            ExportLevel::Patient => "patient",
            ExportLevel::Group(_) => "group",
        }
    }

    fn from_row(level: &str, group: Option<&str>) -> Option<ExportLevel> {
        match (level, group) {
            ("system", _) => Some(ExportLevel::System),
            ("patient", _) => Some(ExportLevel::Patient),
            ("group", Some(g)) => Some(ExportLevel::Group(g.to_owned())),
            _ => None,
        }
    }

    /// The patient set of patient-level and group-level exports.
    fn patients(&self) -> Option<PatientSet> {
        match self {
            ExportLevel::System => None,
            ExportLevel::Patient => Some(PatientSet::Any),
            ExportLevel::Group(g) => Some(PatientSet::GroupMembers(g.clone())),
        }
    }
}

/// A kick-off request's parameters, checked.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    pub level: ExportLevel,
    /// `_type`, or empty for every type the level covers.
    pub types: Vec<String>,
    pub since: Option<DateTime<Utc>>,
    /// `_typeFilter`: per type, query strings whose matches are OR-ed.
    pub type_filters: BTreeMap<String, Vec<String>>,
    pub output_format: String,
}

impl ExportRequest {
    /// Read the kick-off parameters (`_outputFormat`, `_since`, `_type`, `_typeFilter`;
    /// commas separate values). Unknown `_`-parameters of the IG that Hearth does not
    /// support (`_elements`, `includeAssociatedData`, `patient`) are refused, not ignored:
    /// an export that silently ignored a restriction would hand out more than asked.
    pub fn parse(
        level: ExportLevel,
        params: &[(String, String)],
        local_base: &str,
    ) -> Result<ExportRequest, BulkError> {
        let mut request = ExportRequest {
            level,
            types: Vec::new(),
            since: None,
            type_filters: BTreeMap::new(),
            output_format: OUTPUT_FORMATS[0].to_owned(),
        };
        let structure = crate::conformance::R4Structure::global();
        for (name, value) in params {
            match name.as_str() {
                "_outputFormat" => {
                    if !OUTPUT_FORMATS.contains(&value.as_str()) {
                        return Err(BulkError::BadRequest(format!(
                            "_outputFormat {value:?} is not supported; use one of {}",
                            OUTPUT_FORMATS.join(", ")
                        )));
                    }
                    request.output_format = value.clone();
                }
                "_since" => {
                    let since = DateTime::parse_from_rfc3339(value).map_err(|_| {
                        BulkError::BadRequest(
                            "_since must be an instant with a time zone (e.g. 2026-01-01T00:00:00Z)"
                                .into(),
                        )
                    })?;
                    request.since = Some(since.with_timezone(&Utc));
                }
                "_type" => {
                    for t in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                        if !structure.is_resource_type(t) {
                            return Err(BulkError::BadRequest(format!(
                                "_type: {t:?} is not an R4 resource type"
                            )));
                        }
                        if !request.types.iter().any(|x| x == t) {
                            request.types.push(t.to_owned());
                        }
                    }
                }
                "_typeFilter" => {
                    for filter in value.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                        let (t, query) = filter.split_once('?').ok_or_else(|| {
                            BulkError::BadRequest(format!(
                                "_typeFilter {filter:?} must be Type?criteria"
                            ))
                        })?;
                        // Checked now, so a bad filter is a 400, not a failed job.
                        criteria_of(t, query, local_base)?;
                        request
                            .type_filters
                            .entry(t.to_owned())
                            .or_default()
                            .push(query.to_owned());
                    }
                }
                "_format" => {}
                other => {
                    return Err(BulkError::BadRequest(format!(
                        "parameter {other} is not supported by Hearth's $export"
                    )));
                }
            }
        }
        // Without _type, filters restrict their own types and the others go whole.
        for t in request.type_filters.keys() {
            if !request.types.is_empty() && !request.types.contains(t) {
                return Err(BulkError::BadRequest(format!(
                    "_typeFilter names {t}, which _type does not include"
                )));
            }
        }
        Ok(request)
    }
}

fn criteria_of(
    resource_type: &str,
    query: &str,
    local_base: &str,
) -> Result<Vec<Clause>, BulkError> {
    let params: Vec<(String, String)> = serde_urlencoded::from_str(query).map_err(|_| {
        BulkError::BadRequest(format!(
            "_typeFilter for {resource_type} is not a query string"
        ))
    })?;
    parse_criteria(resource_type, &params, local_base)
        .map_err(|e| BulkError::BadRequest(format!("_typeFilter for {resource_type}: {e}")))
}

/// What the access decision needs about the caller, kept with the job (a job outlives the
/// request and may resume on another server).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredCaller {
    pub subject: String,
    pub scopes: String,
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    pub patient: Option<String>,
    pub fhir_user: Option<String>,
    pub patient_group: Option<String>,
    pub specialties: Vec<String>,
    pub purpose: String,
}

impl StoredCaller {
    pub fn of(subject: &OwnedSubject) -> StoredCaller {
        let p = &subject.principal;
        StoredCaller {
            subject: p.subject.clone(),
            scopes: p.scopes.raw.join(" "),
            issuer: match &p.issuer {
                TokenIssuer::Hearth => None,
                TokenIssuer::IdentityProvider(url) => Some(url.clone()),
            },
            client_id: p.client_id.clone(),
            patient: p.patient.clone(),
            fhir_user: p.fhir_user.clone(),
            patient_group: p.patient_group.clone(),
            specialties: subject.specialties.clone(),
            purpose: subject.purpose.clone(),
        }
    }

    async fn subject(
        &self,
        state: &AppState,
        tenant: &TenantId,
    ) -> Result<OwnedSubject, StoreError> {
        Ok(OwnedSubject {
            principal: Principal {
                tenant: tenant.clone(),
                subject: self.subject.clone(),
                scopes: ScopeSet::parse(&self.scopes),
                token_id: String::new(),
                issuer: match &self.issuer {
                    None => TokenIssuer::Hearth,
                    Some(url) => TokenIssuer::IdentityProvider(url.clone()),
                },
                client_id: self.client_id.clone(),
                patient: self.patient.clone(),
                fhir_user: self.fhir_user.clone(),
                patient_group: self.patient_group.clone(),
            },
            policy: state.access_policy(tenant).await?,
            specialties: self.specialties.clone(),
            purpose: self.purpose.clone(),
            local_base: format!("{}/", state.fhir_base(tenant)),
        })
    }
}

/// The types a job exports, in order: those asked for (each must be searchable by the
/// caller: 403 otherwise), or every type of the level the caller may search.
pub async fn job_types(
    state: &AppState,
    tenant: &TenantId,
    request: &ExportRequest,
    subject: &OwnedSubject,
) -> Result<Vec<String>, BulkError> {
    let in_level = |t: &str| match request.level {
        ExportLevel::System => true,
        _ => access::compartment::membership_of(t) != access::compartment::Membership::Outside,
    };
    if !request.types.is_empty() {
        for t in &request.types {
            if !in_level(t) {
                return Err(BulkError::BadRequest(format!(
                    "_type: {t} holds no patient data, so a {}-level export has none of it",
                    request.level.code()
                )));
            }
            subject
                .decide(t, Interaction::Search)
                .map_err(|d| BulkError::Forbidden(d.0))?;
        }
        return Ok(request.types.clone());
    }
    let candidates: Vec<String> = match request.level {
        ExportLevel::System => state.store.resource_types_present(tenant).await?,
        _ => access::compartment::compartment_types()
            .into_iter()
            .map(str::to_owned)
            .collect(),
    };
    Ok(candidates
        .into_iter()
        .filter(|t| in_level(t) && subject.decide(t, Interaction::Search).is_ok())
        .collect())
}

/// Queue a job; its id.
pub async fn kick_off(
    state: &AppState,
    tenant: &TenantId,
    request: &ExportRequest,
    subject: &OwnedSubject,
    request_url: &str,
) -> Result<Uuid, BulkError> {
    if let ExportLevel::Group(group) = &request.level {
        // The Group must exist and be visible to the caller.
        let visibility = subject
            .decide("Group", Interaction::Read)
            .map_err(|d| BulkError::Forbidden(d.0))?
            .visibility;
        let filter = match &visibility {
            Visibility::All => None,
            Visibility::Filtered(f) => Some(f),
        };
        let found = state
            .store
            .read_visible(tenant, "Group", group, filter)
            .await
            .map(|(_, visible)| visible);
        match found {
            Ok(true) => {}
            Ok(false) | Err(StoreError::NotFound | StoreError::Gone(_)) => {
                return Err(BulkError::Forbidden(format!(
                    "Group/{group} is not visible"
                )));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let types = job_types(state, tenant, request, subject).await?;
    let id = Uuid::new_v4();
    let caller = serde_json::to_value(StoredCaller::of(subject))
        .map_err(|_| StoreError::Corrupt("export caller"))?;
    let type_filters = serde_json::to_value(&request.type_filters)
        .map_err(|_| StoreError::Corrupt("export type filters"))?;
    let group = match &request.level {
        ExportLevel::Group(g) => Some(g.as_str()),
        _ => None,
    };
    state
        .store
        .insert_bulk_job(
            tenant,
            crate::store::NewBulkJob {
                id,
                owner: &subject.principal.subject,
                caller,
                request_url,
                level: request.level.code(),
                group_id: group,
                types: &types,
                since: request.since,
                type_filters,
                output_format: &request.output_format,
                transaction_time: Utc::now(),
            },
        )
        .await?;
    Ok(id)
}

/// The search one page of `resource_type` runs for `job`: the level's patient set, `_since`,
/// nothing changed after the transaction time, and the caller's decision crossed with the
/// type's `_typeFilter`s (each grant AND each filter, OR-ed: both are sets of conjunctions).
/// `None` when the caller may no longer search the type.
fn page_query(
    job: &BulkJobRow,
    level: &ExportLevel,
    resource_type: &str,
    subject: &OwnedSubject,
    page_size: u32,
) -> Result<Option<SearchQuery>, BulkError> {
    let Ok(decision) = subject.decide(resource_type, Interaction::Search) else {
        return Ok(None);
    };
    let local_base = &subject.local_base;
    let mut clauses = Vec::new();
    if let Some(patients) = level.patients() {
        match access::patients_clause(resource_type, patients) {
            Ok(Some(clause)) => clauses.push(clause),
            Ok(None) | Err(_) => return Ok(None),
        }
    }
    let mut time = vec![(
        "_lastUpdated".to_owned(),
        format!("le{}", job.transaction_time.to_rfc3339()),
    )];
    if let Some(since) = job.since {
        time.push((
            "_lastUpdated".to_owned(),
            format!("gt{}", since.to_rfc3339()),
        ));
    }
    clauses.extend(
        parse_criteria(resource_type, &time, local_base)
            .map_err(|e| BulkError::BadRequest(e.to_string()))?,
    );
    let filters: Vec<Vec<Clause>> = job
        .type_filters
        .get(resource_type)
        .and_then(|v| serde_json::from_value::<Vec<String>>(v.clone()).ok())
        .unwrap_or_default()
        .iter()
        .map(|q| criteria_of(resource_type, q, local_base))
        .collect::<Result<_, _>>()?;
    let grants: Vec<Vec<Clause>> = match decision.visibility {
        Visibility::All => vec![Vec::new()],
        Visibility::Filtered(f) => f.grants,
    };
    let access = if filters.is_empty() {
        (grants != vec![Vec::<Clause>::new()]).then_some(AccessFilter { grants })
    } else {
        let mut crossed = Vec::new();
        for g in &grants {
            for f in &filters {
                crossed.push(g.iter().chain(f).cloned().collect());
            }
        }
        Some(AccessFilter { grants: crossed })
    };
    Ok(Some(SearchQuery {
        count: page_size,
        page: job.page_token.clone(),
        access,
        ..SearchQuery::for_type(resource_type, clauses)
    }))
}

/// The background exporter of every server: looks for work every `poll_interval_ms`,
/// cleans up expired jobs, and starts (or resumes) jobs within each tenant's limit. Runs
/// until dropped.
pub async fn run_exporter(state: Arc<AppState>) {
    let config = state.config.bulk.clone();
    let mut ticker = tokio::time::interval(Duration::from_millis(config.poll_interval_ms.max(50)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let tenants = match state.store.bulk_tenants_with_work().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "exporter: cannot list tenants");
                continue;
            }
        };
        for tenant in tenants {
            match state.store.take_expired_bulk_jobs(&tenant).await {
                Ok(expired) => {
                    for (id, locations) in expired {
                        if let Ok(Some(s3)) = s3::S3Target::from_config(&config) {
                            for location in locations {
                                if let Err(e) =
                                    s3.delete(&s3.key(tenant.as_str(), id, &location)).await
                                {
                                    tracing::warn!(tenant = %tenant, job = %id, error = %e, "exporter: cannot remove an expired file from S3");
                                }
                            }
                        }
                        if let Err(e) = output::remove_job(&config.dir, &tenant, id).await {
                            tracing::warn!(tenant = %tenant, job = %id, error = %e, "exporter: cannot remove an expired job's files");
                        }
                    }
                }
                Err(e) => tracing::warn!(tenant = %tenant, error = %e, "exporter: clean-up failed"),
            }
            loop {
                let job = match state
                    .store
                    .claim_bulk_job(&tenant, config.jobs_per_tenant, config.lease_secs)
                    .await
                {
                    Ok(Some(job)) => job,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(tenant = %tenant, error = %e, "exporter: cannot claim a job");
                        break;
                    }
                };
                let (state, tenant) = (state.clone(), tenant.clone());
                tokio::spawn(async move {
                    let id = job.id;
                    if let Err(e) = run_job(&state, &tenant, job).await {
                        tracing::warn!(tenant = %tenant, job = %id, error = %e, "export job failed");
                        let failed = async {
                            let mut tx = state.store.begin(&tenant).await?;
                            tx.finish_bulk_job(
                                id,
                                "failed",
                                Some(&e.to_string()),
                                state.config.bulk.retention_secs,
                            )
                            .await?;
                            tx.commit().await
                        };
                        if let Err(e) = failed.await {
                            tracing::warn!(tenant = %tenant, job = %id, error = %e, "export job: cannot record the failure");
                        }
                    }
                });
            }
        }
    }
}

/// Run (or resume) one claimed job to its end.
async fn run_job(
    state: &AppState,
    tenant: &TenantId,
    mut job: BulkJobRow,
) -> Result<(), BulkError> {
    let config = &state.config.bulk;
    let level = ExportLevel::from_row(&job.level, job.group_id.as_deref())
        .ok_or(StoreError::Corrupt("export job level"))?;
    let caller: StoredCaller = serde_json::from_value(job.caller.clone())
        .map_err(|_| StoreError::Corrupt("export job caller"))?;
    let subject = caller.subject(state, tenant).await?;
    let mut files: Vec<BulkFileRow> = {
        let mut tx = state.store.begin(tenant).await?;
        let files = tx.bulk_files(job.id).await?;
        tx.commit().await?;
        files
    };
    let mut exported = job.exported;
    let pause = Duration::from_millis(config.pause_between_pages_ms);
    let s3 = s3::S3Target::from_config(config)?;
    // A finished part goes to S3 before the progress moves past it (a resumed job uploads
    // it again: the PUT replaces the object). Local copies stay until the job completes, so
    // a resume can still cut back the part it was writing.
    let upload = |part: PartWriter, files: &[BulkFileRow]| {
        let location = part.location(files);
        let s3 = s3.clone();
        let key = location.map(|l| (tenant.as_str().to_owned(), l));
        async move {
            let path = part.finish().await?;
            if let (Some(s3), Some((tenant, location))) = (s3, key) {
                s3.put_file(&s3.key(&tenant, job.id, &location), &path)
                    .await?;
            }
            Ok::<(), OutputError>(())
        }
    };
    while let Some(resource_type) = job.types.get(job.type_index as usize).cloned() {
        let Some(mut query) = page_query(&job, &level, &resource_type, &subject, config.page_size)?
        else {
            job.type_index += 1;
            job.page_token = None;
            continue;
        };
        // The part being written for this type: the last one, cut back to what is durable.
        let mut writer: Option<PartWriter> = None;
        loop {
            let page = {
                let mut tx = state.store.begin(tenant).await?;
                let page = tx.search(&query).await?;
                tx.commit().await?;
                page
            };
            if !page.matches.is_empty() {
                let part = match writer.take() {
                    Some(w) => w,
                    None => {
                        PartWriter::resume_or_start(
                            &config.dir,
                            tenant,
                            job.id,
                            &resource_type,
                            &mut files,
                        )
                        .await?
                    }
                };
                let mut part = part;
                for v in &page.matches {
                    let Some(content) = v.content.as_deref() else {
                        continue;
                    };
                    if part.bytes() >= config.max_file_bytes {
                        part.record(&mut files);
                        upload(part, &files).await?;
                        part = PartWriter::next_part(
                            &config.dir,
                            tenant,
                            job.id,
                            &resource_type,
                            &mut files,
                        )
                        .await?;
                    }
                    part.write_line(content).await?;
                    exported += 1;
                }
                part.sync().await?;
                part.record(&mut files);
                writer = Some(part);
            }
            let next = page.next.clone();
            let done_with_type = next.is_none();
            if done_with_type && let Some(w) = writer.take() {
                upload(w, &files).await?;
            }
            let (type_index, token) = if done_with_type {
                (job.type_index + 1, None)
            } else {
                (job.type_index, next.clone())
            };
            // Only this type's parts changed: earlier types' rows are already saved.
            let changed: Vec<BulkFileRow> = files
                .iter()
                .filter(|f| f.resource_type == resource_type)
                .cloned()
                .collect();
            let mut tx = state.store.begin(tenant).await?;
            let still_ours = tx
                .save_bulk_progress(
                    job.id,
                    &BulkProgress {
                        type_index,
                        page_token: token.as_deref(),
                        exported,
                    },
                    &changed,
                    config.lease_secs,
                )
                .await?;
            tx.commit().await?;
            if !still_ours {
                // Cancelled (its files go with the clean-up), or taken over by another
                // server after this one stalled past its lease.
                tracing::info!(tenant = %tenant, job = %job.id, "export job stopped: cancelled or no longer leased");
                return Ok(());
            }
            job.type_index = type_index;
            job.page_token = token;
            job.exported = exported;
            if done_with_type {
                break;
            }
            query.page = job.page_token.clone();
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
    }
    let mut tx = state.store.begin(tenant).await?;
    tx.finish_bulk_job(job.id, "completed", None, config.retention_secs)
        .await?;
    tx.commit().await?;
    if s3.is_some() {
        output::remove_job(&config.dir, tenant, job.id).await?;
    }
    tracing::info!(tenant = %tenant, job = %job.id, exported, "export job completed");
    Ok(())
}

/// How far a running job is, for `X-Progress` (no PHI: counts and type names).
pub fn progress_text(job: &BulkJobRow) -> String {
    let total = job.types.len();
    let current = job
        .types
        .get(job.type_index as usize)
        .map(String::as_str)
        .unwrap_or("finishing");
    format!(
        "{} resources exported; type {} of {total} ({current})",
        job.exported,
        (job.type_index as usize + 1).min(total.max(1)),
    )
}
