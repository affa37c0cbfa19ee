//! Summaries and questions for one patient, as one caller may see them: the record (every
//! resource the access decision lets the caller read, inside the SQL), the engine the
//! tenant chose (extractive by default; Bedrock only with a BAA and within the monthly
//! quota, else extractive with a notice), the verifier, the cache, and the governance
//! record of every AI call.

use std::collections::HashSet;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::bedrock::{Bedrock, BedrockSettings};
use super::embed::to_pgvector;
use super::verify::{Source, VerifyMode, build_prompt, verify};
use super::{Answer, Citation, RecordEntry, Section, Summary, extractive};
use crate::access::{OwnedSubject, Visibility};
use crate::auth::Interaction;
use crate::store::{InvocationResult, NewInvocation, RetrievedChunk, Store, StoreError};
use crate::tenant::TenantId;

/// The types a summary reads.
pub const RECORD_TYPES: &[&str] = &[
    "Patient",
    "Condition",
    "MedicationRequest",
    "MedicationStatement",
    "AllergyIntolerance",
    "Encounter",
    "Observation",
    "Procedure",
    "Immunization",
    "DiagnosticReport",
    "DocumentReference",
];
/// Resources read per type at most (pages of 1,000).
const MAX_PER_TYPE: usize = 10_000;
/// Excerpts given to the model.
const SOURCES: i64 = 24;
const BEDROCK_MAX_TOKENS: u32 = 1200;

/// A tenant's AI settings (`hearth tenant ai-settings`), all optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AiSettings {
    /// `extractive` (default) or `bedrock`.
    pub engine: Option<String>,
    /// The tenant declares its Bedrock account covered by a BAA; without it no PHI is sent.
    pub bedrock_baa: bool,
    pub model_id: Option<String>,
    /// Tokens (input + output) per calendar month; over it, extractive with a notice.
    pub monthly_token_quota: Option<i64>,
    /// `remove` (default) or `flag` unsupported sentences.
    pub unsupported: Option<String>,
    /// The retrieval index's embedder: `hashing` (default) or `titan` (needs the BAA).
    pub embedding: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("not permitted: {0}")]
    Forbidden(String),
    #[error(transparent)]
    Index(#[from] super::index::IndexError),
}

/// What a summary needs from the server.
pub struct Context<'a> {
    pub store: &'a Store,
    pub tenant: &'a TenantId,
    pub public_base: &'a str,
    pub subject: &'a OwnedSubject,
    /// Bedrock connection settings (region, endpoint), when configured.
    pub bedrock: Option<&'a BedrockSettings>,
}

/// The patient's record as the caller may see it, every page read.
pub async fn patient_record(
    cx: &Context<'_>,
    patient_id: &str,
) -> Result<Vec<RecordEntry>, SummaryError> {
    patient_record_of(cx, patient_id, RECORD_TYPES).await
}

/// The patient's resources of `types` (Patient among them) as the caller may see them.
pub async fn patient_record_of(
    cx: &Context<'_>,
    patient_id: &str,
    types: &[&str],
) -> Result<Vec<RecordEntry>, SummaryError> {
    Ok(parse_record(
        patient_versions_of(cx, patient_id, types).await?,
    ))
}

/// The stored versions of the patient's record the caller may see (not yet parsed: a
/// cached summary needs only their ids and versions); `Forbidden` when the caller may not
/// read the patient.
async fn patient_versions(
    cx: &Context<'_>,
    patient_id: &str,
) -> Result<Vec<crate::store::StoredVersion>, SummaryError> {
    patient_versions_of(cx, patient_id, RECORD_TYPES).await
}

async fn patient_versions_of(
    cx: &Context<'_>,
    patient_id: &str,
    types: &[&str],
) -> Result<Vec<crate::store::StoredVersion>, SummaryError> {
    let local_base = format!("{}/fhir/{}", cx.public_base, cx.tenant);
    let mut record = Vec::new();
    let mut tx = cx.store.begin(cx.tenant).await?;
    for resource_type in types {
        let Ok(decision) = cx.subject.decide(resource_type, Interaction::Search) else {
            continue;
        };
        let param = if *resource_type == "Patient" {
            "_id"
        } else {
            "patient"
        };
        let params = vec![
            (param.to_owned(), patient_id.to_owned()),
            ("_count".to_owned(), "1000".to_owned()),
        ];
        let Ok(mut query) =
            crate::search::query::parse_search(resource_type, &params, false, &local_base)
        else {
            continue;
        };
        query.access = match decision.visibility {
            Visibility::All => None,
            Visibility::Filtered(f) => {
                Some(crate::access::search_filter(cx.store, cx.tenant, &query, f).await?)
            }
        };
        let mut read = 0;
        loop {
            let page = tx.search(&query).await?;
            read += page.matches.len();
            record.extend(page.matches);
            match page.next {
                Some(next) if read < MAX_PER_TYPE => query.page = Some(next),
                _ => break,
            }
        }
    }
    tx.commit().await?;
    // A patient the caller may not read has no record for them (403, not an empty summary).
    if !record
        .iter()
        .any(|e| e.resource_type == "Patient" && e.id == patient_id)
    {
        return Err(SummaryError::Forbidden(format!(
            "Patient/{patient_id} is not visible to this caller"
        )));
    }
    Ok(record)
}

fn parse_record(versions: Vec<crate::store::StoredVersion>) -> Vec<RecordEntry> {
    versions
        .into_iter()
        .filter_map(|stored| {
            let resource = serde_json::from_str(stored.content.as_deref()?).ok()?;
            Some(RecordEntry {
                resource_type: stored.resource_type,
                id: stored.id,
                version_id: stored.version_id,
                resource,
            })
        })
        .collect()
}

/// A short hash of what the caller sees (references and versions): the cache key.
pub fn data_version(record: &[crate::store::StoredVersion]) -> String {
    let mut keys: Vec<String> = record
        .iter()
        .map(|e| format!("{}/{}/{}", e.resource_type, e.id, e.version_id))
        .collect();
    keys.sort();
    let digest = Sha256::digest(keys.join("\n").as_bytes());
    digest.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// The resources (`Type/id`) of the patient's chunks the caller may see: retrieval ranks
/// only these.
async fn visible_chunk_refs(
    cx: &Context<'_>,
    patient_id: &str,
) -> Result<Vec<String>, SummaryError> {
    let refs = cx.store.chunked_resources(cx.tenant, patient_id).await?;
    let mut by_type: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (t, id) in refs {
        by_type.entry(t).or_default().push(id);
    }
    let mut visible = Vec::new();
    for (resource_type, ids) in by_type {
        let Ok(decision) = cx.subject.decide(&resource_type, Interaction::Read) else {
            continue;
        };
        let allowed: HashSet<String> = match decision.visibility {
            Visibility::All => ids.iter().cloned().collect(),
            Visibility::Filtered(f) => {
                cx.store
                    .visible_ids(cx.tenant, &resource_type, &ids, &f)
                    .await?
            }
        };
        visible.extend(
            ids.into_iter()
                .filter(|id| allowed.contains(id))
                .map(|id| format!("{resource_type}/{id}")),
        );
    }
    Ok(visible)
}

/// Hybrid retrieval over the patient's chunks the caller may see (indexing what is queued
/// first, so the index is current).
pub async fn retrieve(
    cx: &Context<'_>,
    patient_id: &str,
    query: &str,
    k: i64,
) -> Result<Vec<RetrievedChunk>, SummaryError> {
    let embedder = super::index::embedder_for(cx.store, cx.tenant, cx.bedrock).await?;
    // Chunks embedded by another model are queued again (a change of model reindexes).
    cx.store
        .requeue_other_model(cx.tenant, patient_id, embedder.model())
        .await?;
    super::index::index_pending(cx.store, cx.tenant, cx.public_base, &embedder).await?;
    let visible = visible_chunk_refs(cx, patient_id).await?;
    if visible.is_empty() {
        return Ok(Vec::new());
    }
    let embedding = to_pgvector(
        &embedder
            .embed(query)
            .await
            .map_err(super::index::IndexError::from)?,
    );
    Ok(cx
        .store
        .retrieve(
            cx.tenant,
            patient_id,
            &visible,
            &crate::store::RetrievalQuery {
                text: query,
                embedding: &embedding,
                model: embedder.model(),
                k,
            },
        )
        .await?)
}

fn settings_of(value: &serde_json::Value) -> AiSettings {
    serde_json::from_value(value.clone()).unwrap_or_default()
}

/// Why the Bedrock engine may not run now, if it may not.
async fn bedrock_refusal(
    cx: &Context<'_>,
    settings: &AiSettings,
) -> Result<Option<&'static str>, SummaryError> {
    if !settings.bedrock_baa {
        return Ok(Some(
            "This tenant's Bedrock account is not declared covered by a BAA: no patient data is sent to it. Extractive summary.",
        ));
    }
    if cx.bedrock.is_none() {
        return Ok(Some(
            "Bedrock is not configured on this server. Extractive summary.",
        ));
    }
    if let Some(quota) = settings.monthly_token_quota
        && cx.store.ai_tokens_this_month(cx.tenant).await? >= quota
    {
        return Ok(Some(
            "This month's AI quota is used up. Extractive summary until next month.",
        ));
    }
    Ok(None)
}

/// The patient's summary for the caller, from the cache when the visible record has not
/// changed since.
pub async fn summarize(cx: &Context<'_>, patient_id: &str) -> Result<Summary, SummaryError> {
    let versions = patient_versions(cx, patient_id).await?;
    let settings = settings_of(&cx.store.ai_settings(cx.tenant).await?);
    let wants_bedrock = settings.engine.as_deref() == Some("bedrock");
    let refusal = if wants_bedrock {
        bedrock_refusal(cx, &settings).await?
    } else {
        None
    };
    let engine = if wants_bedrock && refusal.is_none() {
        "bedrock"
    } else {
        extractive::ENGINE
    };
    let version = data_version(&versions);
    if let Some(cached) = cx
        .store
        .cached_summary(cx.tenant, patient_id, engine, &version, &version)
        .await?
        && let Ok(mut summary) = serde_json::from_value::<Summary>(cached)
    {
        // Why the extractive engine stands in is said now, not as it was when cached.
        if let Some(notice) = refusal {
            summary.notice = Some(notice.to_owned());
        }
        return Ok(summary);
    }
    let record = parse_record(versions);
    let mut summary = if engine == "bedrock" {
        match bedrock_summary(cx, &settings, patient_id).await? {
            Ok(s) => s,
            Err(notice) => with_notice(extractive::summarize(&record, chrono::Utc::now()), notice),
        }
    } else {
        extractive::summarize(&record, chrono::Utc::now())
    };
    // A fallback after a failed call is not cached: the next view tries the model again.
    if summary.engine == engine
        && let Ok(value) = serde_json::to_value(&summary)
    {
        cx.store
            .cache_summary(cx.tenant, patient_id, engine, &version, &version, &value)
            .await?;
    }
    if let Some(notice) = refusal {
        summary.notice = Some(notice.to_owned());
    }
    Ok(summary)
}

fn with_notice(mut summary: Summary, notice: String) -> Summary {
    summary.notice = Some(notice);
    summary
}

/// A question about the patient: the extractive router, or Bedrock over retrieval.
pub async fn ask(
    cx: &Context<'_>,
    patient_id: &str,
    question: &str,
) -> Result<Answer, SummaryError> {
    let record = patient_record(cx, patient_id).await?;
    if let Some(answer) = ask_model(cx, patient_id, question).await? {
        return Ok(answer);
    }
    Ok(extractive::answer(&record, question))
}

/// A question answered by Bedrock over retrieval, verified: only when the tenant's engine
/// is Bedrock and it may be used now (configured, BAA declared, quota left). `None`
/// otherwise, or when the call failed (the caller decides what stands in). The caller has
/// checked that the patient is visible.
pub async fn ask_model(
    cx: &Context<'_>,
    patient_id: &str,
    question: &str,
) -> Result<Option<Answer>, SummaryError> {
    let settings = settings_of(&cx.store.ai_settings(cx.tenant).await?);
    if settings.engine.as_deref() != Some("bedrock")
        || bedrock_refusal(cx, &settings).await?.is_some()
    {
        return Ok(None);
    }
    let chunks = retrieve(cx, patient_id, question, SOURCES).await?;
    Ok(
        call_bedrock(cx, &settings, patient_id, Some(question), &chunks)
            .await
            .ok()
            .map(|(verified, _)| Answer {
                question: question.to_owned(),
                not_found: verified.not_found || verified.statements.is_empty(),
                statements: verified.statements,
            }),
    )
}

/// The Bedrock summary, or (as `Err`) the notice of why the extractive one stands in.
async fn bedrock_summary(
    cx: &Context<'_>,
    settings: &AiSettings,
    patient_id: &str,
) -> Result<Result<Summary, String>, SummaryError> {
    let query = "active problems diagnoses medications allergies recent admissions discharges vital signs laboratory results procedures immunizations assessment plan";
    let chunks = retrieve(cx, patient_id, query, SOURCES).await?;
    match call_bedrock(cx, settings, patient_id, None, &chunks).await {
        Ok((verified, _)) => Ok(Ok(Summary {
            engine: "bedrock".to_owned(),
            sections: vec![Section {
                code: "narrative".to_owned(),
                title: "Summary".to_owned(),
                statements: verified.statements,
                empty_text: Some("The record does not contain enough to summarise.".to_owned()),
            }],
            removed: verified.removed,
            notice: (verified.removed > 0).then(|| {
                format!(
                    "{} sentence(s) of the model's output were removed: their sources did not support them.",
                    verified.removed
                )
            }),
        })),
        Err(reason) => Ok(Err(format!(
            "The AI summary is unavailable ({reason}). Extractive summary."
        ))),
    }
}

/// One governed Bedrock call: sources numbered from the chunks, the prompt, the
/// invocation recorded before the call and completed after it (output, verified output,
/// tokens, latency), the verifier.
async fn call_bedrock(
    cx: &Context<'_>,
    settings: &AiSettings,
    patient_id: &str,
    question: Option<&str>,
    chunks: &[RetrievedChunk],
) -> Result<(super::verify::Verified, uuid::Uuid), String> {
    let bedrock_settings = cx.bedrock.ok_or("not configured")?;
    let sources: Vec<Source> = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| Source {
            number: i + 1,
            citation: Citation {
                reference: format!("{}/{}", c.resource_type, c.resource_id),
                version_id: Some(c.version_id),
                element: c.element.clone(),
                span: match (c.span_start, c.span_end) {
                    (Some(s), Some(e)) => Some((s.max(0) as usize, e.max(0) as usize)),
                    _ => None,
                },
            },
            patient_id: c.patient_id.clone(),
            visible: true,
            text: c.text.clone(),
        })
        .collect();
    let (system, user) = build_prompt(question, &sources);
    let model_id = settings
        .model_id
        .clone()
        .unwrap_or_else(|| "anthropic.claude-3-5-sonnet-20240620-v1:0".to_owned());
    let id = uuid::Uuid::new_v4();
    let chunk_ids: Vec<i64> = chunks.iter().map(|c| c.id).collect();
    let agent = cx
        .subject
        .principal
        .fhir_user
        .clone()
        .unwrap_or_else(|| cx.subject.principal.subject.clone());
    cx.store
        .begin_invocation(
            cx.tenant,
            &NewInvocation {
                id,
                purpose: if question.is_some() {
                    "question"
                } else {
                    "summary"
                },
                patient_id: Some(patient_id),
                agent: Some(&agent),
                model_id: &model_id,
                system_prompt: &system,
                prompt: &user,
                chunk_ids: &chunk_ids,
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    let client = Bedrock::new(bedrock_settings).map_err(|e| e.to_string())?;
    let output = match client
        .converse(&model_id, &system, &user, BEDROCK_MAX_TOKENS)
        .await
    {
        Ok(o) => o,
        Err(e) => {
            let outcome = format!("error: {e}");
            let _ = cx
                .store
                .finish_invocation(
                    cx.tenant,
                    id,
                    &InvocationResult {
                        outcome: &outcome,
                        raw_output: None,
                        verified_output: None,
                        removed: None,
                        input_tokens: None,
                        output_tokens: None,
                        latency_ms: None,
                    },
                )
                .await;
            return Err(e.to_string());
        }
    };
    let mode = match settings.unsupported.as_deref() {
        Some("flag") => VerifyMode::Flag,
        _ => VerifyMode::Remove,
    };
    let verified = verify(&output.text, &sources, patient_id, mode);
    let verified_json = serde_json::to_value(&verified.statements).ok();
    cx.store
        .finish_invocation(
            cx.tenant,
            id,
            &InvocationResult {
                outcome: "ok",
                raw_output: Some(&output.text),
                verified_output: verified_json.as_ref(),
                removed: i32::try_from(verified.removed).ok(),
                input_tokens: i32::try_from(output.input_tokens).ok(),
                output_tokens: i32::try_from(output.output_tokens).ok(),
                latency_ms: i32::try_from(output.latency_ms).ok(),
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok((verified, id))
}
