//! The prior-authorization pages: the patient's orders a rule set covers, drafting a
//! packet (`clinical::prior_auth::populate` under the payment purpose), reviewing each
//! answer against its evidence (accept, edit, reject), approving or rejecting the packet,
//! and, once approved only, the PAS Bundle as a download or a `Claim/$submit` to the
//! tenant's payer endpoint. Every step is a new version of the packet, written with its
//! audit row in one transaction.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::error::AppError;
use super::http::see_other;
use super::pages::{self, PacketItem, PacketLink, PacketPage, PriorAuthList, PriorAuthOrder};
use super::render;
use super::session::{ActiveSession, for_patient};
use super::views::{Frame, ehr_label};
use crate::access::{OwnedSubject, Visibility};
use crate::audit::{AuditAction, AuditOutcome, AuditRecord};
use crate::auth::Interaction;
use crate::clinical::RecordEntry;
use crate::clinical::prior_auth::{
    self, PAYMENT_PURPOSE, PriorAuthError, Review, claim, response, rules,
};
use crate::clinical::summary::Context;
use crate::state::AppState;
use crate::store::{PacketChange, PacketRow, TenantTx};

/// The session as the caller, for payment.
fn payment_subject(
    state: &AppState,
    session: &ActiveSession,
    policy: std::sync::Arc<crate::access::AccessPolicy>,
) -> OwnedSubject {
    prior_auth::payment_subject(&super::views::subject(state, session, policy))
}

/// Who acts: the user's fhirUser reference (or the session).
fn actor(session: &ActiveSession) -> String {
    session.principal().subject
}

fn record(session: &ActiveSession, event: &'static str, action: AuditAction) -> AuditRecord {
    let mut rec = AuditRecord::new(event, action, AuditOutcome::Success);
    rec.agent = Some(session.agent());
    rec.purpose = Some(PAYMENT_PURPOSE.to_owned());
    rec.patients = vec![session.row.patient_id.clone()];
    rec
}

fn refused(e: PriorAuthError) -> AppError {
    let (status, message) = match e {
        PriorAuthError::Store(e) => return AppError::Store(e),
        PriorAuthError::Forbidden(r) => return AppError::Forbidden(r),
        PriorAuthError::NotFound(_) => return AppError::NotFound,
        PriorAuthError::NoRuleSet(r) => (StatusCode::UNPROCESSABLE_ENTITY, r),
        PriorAuthError::BadRequest(r) => (StatusCode::BAD_REQUEST, r),
        PriorAuthError::Conflict(r) => (StatusCode::CONFLICT, r),
    };
    AppError::PriorAuth { status, message }
}

fn base_path(pid: &str) -> String {
    format!("/app/patient/{pid}/prior-auth")
}

/// `GET /app/patient/{pid}/prior-auth`: orders to draft for, and the packets so far.
pub async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let session = for_patient(&req, &state, &path).await?;
    let pid = session.row.patient_id.clone();
    let subject = payment_subject(
        &state,
        &session,
        state.access_policy(&session.tenant).await?,
    );
    let local_base = state.fhir_base(&session.tenant);
    let mut rec = record(&session, "app-prior-auth", AuditAction::Read);
    let mut tx = state.store.begin(&session.tenant).await?;
    let mut orders = Vec::new();
    for order_type in ["ServiceRequest", "MedicationRequest"] {
        let Ok(decision) = subject.decide(order_type, Interaction::Search) else {
            continue;
        };
        let params = vec![
            ("patient".to_owned(), pid.clone()),
            ("_count".to_owned(), "100".to_owned()),
        ];
        let Ok(mut query) =
            crate::search::query::parse_search(order_type, &params, true, &local_base)
        else {
            continue;
        };
        query.access = match decision.visibility {
            Visibility::All => None,
            Visibility::Filtered(f) => Some(f),
        };
        for stored in tx.search(&query).await?.matches {
            let Some(resource) = stored
                .content
                .as_deref()
                .and_then(|c| serde_json::from_str::<Value>(c).ok())
            else {
                continue;
            };
            let entry = RecordEntry {
                resource_type: stored.resource_type.clone(),
                id: stored.id.clone(),
                version_id: stored.version_id,
                resource,
            };
            rec.entities.push(format!(
                "{}/_history/{}",
                entry.reference(),
                entry.version_id
            ));
            let rule_set = prior_auth::rule_set_for(&entry);
            // Medication orders matter only where a rule set covers them (a drug needing
            // authorization); every service order is listed.
            if order_type == "MedicationRequest" && rule_set.is_none() {
                continue;
            }
            orders.push(PriorAuthOrder {
                label: render::resource_label(&entry.resource),
                reference: entry.reference(),
                rule_set: rule_set.map(|s| s.title.clone()),
            });
        }
    }
    let packets = tx
        .prior_auth_packets_of(&pid)
        .await?
        .into_iter()
        .map(|p| PacketLink {
            href: format!("{}/{}", base_path(&pid), p.id),
            title: rules::by_id(&p.rule_set).map_or(p.rule_set.clone(), |s| s.title.clone()),
            status: p.status,
            updated: p.updated_at.format("%Y-%m-%d %H:%M UTC").to_string(),
        })
        .collect();
    crate::audit::record(&mut tx, &rec).await?;
    tx.commit().await?;
    let frame = Frame::new(&session, None);
    let ehr = ehr_label(&session);
    let chrome = frame.chrome(
        "Prior authorization",
        &session,
        &ehr,
        state.config.app.idle_timeout_secs,
    );
    let view = PriorAuthList {
        orders,
        packets,
        draft_action: format!("{}/draft", base_path(&pid)),
    };
    Ok(frame
        .policy
        .page(StatusCode::OK, pages::prior_auth_page(&chrome, &view)))
}

#[derive(Deserialize)]
pub struct DraftForm {
    csrf: String,
    order: String,
}

/// `POST .../prior-auth/draft`: extract a packet for an order.
pub async fn draft(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    form: web::Form<DraftForm>,
) -> Result<HttpResponse, AppError> {
    let session = for_patient(&req, &state, &path).await?;
    super::session::check_csrf(&session, &form.csrf)?;
    let pid = session.row.patient_id.clone();
    let subject = payment_subject(
        &state,
        &session,
        state.access_policy(&session.tenant).await?,
    );
    let cx = Context {
        store: &state.store,
        tenant: &session.tenant,
        public_base: &state.config.server.public_base_url,
        subject: &subject,
        bedrock: state.bedrock.as_ref(),
    };
    let draft = prior_auth::populate(&cx, &pid, &form.order, None)
        .await
        .map_err(refused)?;
    let id = Uuid::new_v4();
    let mut response = draft.response;
    response["id"] = json!(id.to_string());
    let mut rec = record(&session, "prior-auth-draft", AuditAction::Create);
    rec.entities = prior_auth::cited_references(&response);
    rec.entities.push(draft.order.reference());
    rec.entities.push(format!("prior-auth/{id}"));
    let who = actor(&session);
    let mut tx = state.store.begin(&session.tenant).await?;
    tx.insert_prior_auth_packet(
        id,
        &pid,
        &draft.order.reference(),
        &draft.rule_set.id,
        &PacketChange {
            actor: &who,
            action: "drafted",
            link_id: None,
            detail: Some(&draft.rule_set.canonical()),
            status: "draft",
            response: &response,
            claim: None,
            submission: None,
        },
    )
    .await?;
    crate::audit::record(&mut tx, &rec).await?;
    tx.commit().await?;
    Ok(see_other(&format!("{}/{id}", base_path(&pid))).finish())
}

/// Write the packet's next version and, in the same transaction, its audit row
/// (event, action, outcome).
async fn record_change(
    tx: &mut TenantTx,
    session: &ActiveSession,
    packet: &PacketRow,
    change: &PacketChange<'_>,
    (event, action, outcome): (&'static str, AuditAction, AuditOutcome),
) -> Result<(), AppError> {
    tx.update_prior_auth_packet(packet.id, packet.version, change)
        .await?;
    let mut rec = record(session, event, action);
    rec.entities = vec![format!("prior-auth/{}", packet.id)];
    rec.outcome = outcome;
    crate::audit::record(tx, &rec).await?;
    Ok(())
}

/// The packet of this session's patient, locked for a change (or not).
async fn own_packet(
    tx: &mut TenantTx,
    session: &ActiveSession,
    id: &str,
    lock: bool,
) -> Result<PacketRow, AppError> {
    let id = Uuid::parse_str(id).map_err(|_| AppError::NotFound)?;
    let packet = if lock {
        tx.prior_auth_packet_for_update(id).await?
    } else {
        tx.prior_auth_packet(id).await?
    };
    match packet {
        Some(p) if p.patient_id == session.row.patient_id => Ok(p),
        Some(_) => Err(AppError::OtherPatient),
        None => Err(AppError::NotFound),
    }
}

fn answer_text(item: &Value) -> Option<String> {
    let answer = item["answer"].as_array()?.first()?;
    let obj = answer.as_object()?;
    let (key, value) = obj.iter().find(|(k, _)| k.starts_with("value"))?;
    Some(match (key.as_str(), value) {
        ("valueBoolean", Value::Bool(b)) => {
            if *b {
                "Yes".into()
            } else {
                "No".into()
            }
        }
        ("valueCoding", c) => {
            let code = c["code"].as_str().unwrap_or_default();
            match c["display"].as_str() {
                Some(d) => format!("{d} ({code})"),
                None => code.to_owned(),
            }
        }
        ("valueQuantity", q) => {
            format!("{} {}", q["value"], q["unit"].as_str().unwrap_or_default())
        }
        (_, Value::String(s)) => s.clone(),
        (_, other) => other.to_string(),
    })
}

/// `GET .../prior-auth/{packet}`.
pub async fn packet(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    let (pid, id) = path.into_inner();
    let session = for_patient(&req, &state, &pid).await?;
    let mut tx = state.store.begin(&session.tenant).await?;
    let packet = own_packet(&mut tx, &session, &id, false).await?;
    let history = tx.prior_auth_events(packet.id).await?;
    let mut rec = record(&session, "app-prior-auth", AuditAction::Read);
    rec.entities = vec![format!("prior-auth/{}", packet.id)];
    crate::audit::record(&mut tx, &rec).await?;
    tx.commit().await?;
    let rule_set = rules::by_id(&packet.rule_set).ok_or(AppError::NotFound)?;
    let base = format!("{}/{}", base_path(&pid), packet.id);
    let items: Vec<PacketItem> = rule_set
        .items()
        .iter()
        .filter_map(|item| {
            let node = packet.response["item"]
                .as_array()?
                .iter()
                .find(|i| i["linkId"] == item.link_id.as_str())?;
            let origin = node["extension"].as_array().and_then(|list| {
                let o = list
                    .iter()
                    .find(|x| x["url"] == response::INFORMATION_ORIGIN)?;
                let part = |n: &str| {
                    o["extension"]
                        .as_array()?
                        .iter()
                        .find(|p| p["url"] == n)
                        .cloned()
                };
                let source = part("source")?["valueCode"].as_str()?.to_owned();
                let author = part("author")
                    .and_then(|a| a["valueReference"]["reference"].as_str().map(str::to_owned));
                Some(match author {
                    Some(a) if source != "auto" => format!("{source} by {a}"),
                    _ => source,
                })
            });
            let confidence = node["extension"].as_array().and_then(|list| {
                list.iter().find(|x| x["url"] == response::CONFIDENCE)?["valueDecimal"].as_f64()
            });
            Some(PacketItem {
                link_id: item.link_id.clone(),
                question: item.text.clone(),
                required: item.required,
                answer: answer_text(node),
                origin,
                confidence: confidence.map(|c| format!("{:.0}%", c * 100.0)),
                review: response::extension_text(node, response::REVIEW)
                    .unwrap_or("pending")
                    .to_owned(),
                citations: response::citations_of(node)
                    .into_iter()
                    .map(|c| {
                        let mut href = format!("/app/patient/{pid}/source/{}", c.reference);
                        if let Some((s, e)) = c.span {
                            href.push_str(&format!("?passage={s}-{e}#cited"));
                        }
                        (c.reference, href)
                    })
                    .collect(),
            })
        })
        .collect();
    let approved = matches!(packet.status.as_str(), "approved" | "submitted");
    let payer = state.store.prior_auth_settings(&session.tenant).await?;
    let payer_url = payer["payerSubmitUrl"].as_str().filter(|u| !u.is_empty());
    let view = PacketPage {
        title: rule_set.title.clone(),
        status: packet.status.clone(),
        order: packet.order_ref.clone(),
        blockers: if packet.status == "draft" {
            prior_auth::approval_blockers(&packet.response, rule_set)
        } else {
            Vec::new()
        },
        items,
        review_action: format!("{base}/review"),
        decision_action: format!("{base}/decision"),
        bundle_href: approved.then(|| format!("{base}/bundle")),
        submit_action: (approved && payer_url.is_some() && packet.status != "submitted")
            .then(|| format!("{base}/submit")),
        submission: packet.submission.as_ref().map(|s| {
            format!(
                "Submitted to the payer: HTTP {}{}",
                s["httpStatus"],
                s["outcome"]
                    .as_str()
                    .map(|o| format!(", {o}"))
                    .unwrap_or_default()
            )
        }),
        history: history
            .iter()
            .map(|e| {
                let what = match &e.link_id {
                    Some(l) => format!("{} {l}", e.action),
                    None => e.action.clone(),
                };
                (
                    e.at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                    e.actor.clone(),
                    what,
                )
            })
            .collect(),
        back_href: base_path(&pid),
    };
    let frame = Frame::new(&session, None);
    let ehr = ehr_label(&session);
    let chrome = frame.chrome(
        "Prior authorization",
        &session,
        &ehr,
        state.config.app.idle_timeout_secs,
    );
    Ok(frame
        .policy
        .page(StatusCode::OK, pages::packet_page(&chrome, &view)))
}

#[derive(Deserialize)]
pub struct ReviewForm {
    csrf: String,
    link_id: String,
    action: String,
    #[serde(default)]
    value: String,
}

/// `POST .../prior-auth/{packet}/review`: accept, edit or reject one answer.
pub async fn review(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    form: web::Form<ReviewForm>,
) -> Result<HttpResponse, AppError> {
    let (pid, id) = path.into_inner();
    let session = for_patient(&req, &state, &pid).await?;
    super::session::check_csrf(&session, &form.csrf)?;
    let review = match form.action.as_str() {
        "accept" => Review::Accept,
        "edit" => Review::Edit(form.value.clone()),
        "reject" => Review::Reject,
        _ => return Err(AppError::BadForm),
    };
    let who = actor(&session);
    let mut tx = state.store.begin(&session.tenant).await?;
    let packet = own_packet(&mut tx, &session, &id, true).await?;
    let rule_set = rules::by_id(&packet.rule_set).ok_or(AppError::NotFound)?;
    let mut response = packet.response.clone();
    prior_auth::apply_review(&mut response, &form.link_id, &review, &who, rule_set)
        .map_err(refused)?;
    let action = match review {
        Review::Accept => "accepted",
        Review::Edit(_) => "edited",
        Review::Reject => "rejected-answer",
    };
    record_change(
        &mut tx,
        &session,
        &packet,
        &PacketChange {
            actor: &who,
            action,
            link_id: Some(&form.link_id),
            detail: None,
            status: "draft",
            response: &response,
            claim: None,
            submission: None,
        },
        (
            "prior-auth-review",
            AuditAction::Update,
            AuditOutcome::Success,
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(see_other(&format!(
        "{}/{}#item-{}",
        base_path(&pid),
        packet.id,
        form.link_id
    ))
    .finish())
}

#[derive(Deserialize)]
pub struct DecisionForm {
    csrf: String,
    decision: String,
}

/// The resources a claim includes, read under the payment decision: the patient, the
/// order, its requester, the active coverage and its payer, and every cited resource.
async fn claim_resources(
    cx: &Context<'_>,
    packet: &PacketRow,
) -> Result<(RecordEntry, Vec<RecordEntry>), AppError> {
    // What the caller may still read goes in; anything else is left out of the claim.
    let read = |reference: String| async move {
        let (t, id) = reference.split_once('/')?;
        prior_auth::read_as(cx, cx.subject, t, id)
            .await
            .ok()
            .flatten()
    };
    let order = read(packet.order_ref.clone())
        .await
        .ok_or(AppError::NotFound)?;
    let mut wanted: Vec<String> = prior_auth::cited_references(&packet.response);
    wanted.push(format!("Patient/{}", packet.patient_id));
    if let Some(r) = order.resource["requester"]["reference"].as_str() {
        wanted.push(r.to_owned());
    }
    let coverage = prior_auth::populate_coverage(cx, &packet.patient_id)
        .await
        .map_err(refused)?;
    for c in &coverage {
        if let Some(p) = c.resource["payor"][0]["reference"].as_str() {
            wanted.push(p.to_owned());
        }
    }
    wanted.retain(|r| !coverage.iter().any(|c| &c.reference() == r));
    wanted.sort();
    wanted.dedup();
    let mut resources = coverage;
    for reference in wanted {
        if let Some(e) = read(reference).await {
            resources.push(e);
        }
    }
    Ok((order, resources))
}

/// `POST .../prior-auth/{packet}/decision`: approve (every answer reviewed, every required
/// one answered) or reject the packet.
pub async fn decision(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    form: web::Form<DecisionForm>,
) -> Result<HttpResponse, AppError> {
    let (pid, id) = path.into_inner();
    let session = for_patient(&req, &state, &pid).await?;
    super::session::check_csrf(&session, &form.csrf)?;
    let who = actor(&session);
    let subject = payment_subject(
        &state,
        &session,
        state.access_policy(&session.tenant).await?,
    );
    let cx = Context {
        store: &state.store,
        tenant: &session.tenant,
        public_base: &state.config.server.public_base_url,
        subject: &subject,
        bedrock: state.bedrock.as_ref(),
    };
    let mut tx = state.store.begin(&session.tenant).await?;
    let packet = own_packet(&mut tx, &session, &id, true).await?;
    if packet.status != "draft" {
        return Err(refused(PriorAuthError::Conflict(
            "this request was already decided".into(),
        )));
    }
    let rule_set = rules::by_id(&packet.rule_set).ok_or(AppError::NotFound)?;
    let mut response = packet.response.clone();
    let (status, claim) = match form.decision.as_str() {
        "approve" => {
            let blockers = prior_auth::approval_blockers(&response, rule_set);
            if !blockers.is_empty() {
                return Err(refused(PriorAuthError::Conflict(format!(
                    "the request cannot be approved yet: {}",
                    blockers.join("; ")
                ))));
            }
            response["status"] = json!("completed");
            response["author"] = json!({"reference": who});
            let (order, resources) = claim_resources(&cx, &packet).await?;
            let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let bundle = claim::pas_bundle(&claim::ClaimParts {
                claim_id: &packet.id.to_string(),
                response: &response,
                order: &order,
                resources: &resources,
                created: &created,
                base: &state.fhir_base(&session.tenant),
            });
            ("approved", Some(bundle))
        }
        "reject" => {
            response["status"] = json!("stopped");
            ("rejected", None)
        }
        _ => return Err(AppError::BadForm),
    };
    record_change(
        &mut tx,
        &session,
        &packet,
        &PacketChange {
            actor: &who,
            action: status,
            link_id: None,
            detail: None,
            status,
            response: &response,
            claim: claim.as_ref(),
            submission: None,
        },
        (
            "prior-auth-decision",
            AuditAction::Update,
            AuditOutcome::Success,
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(see_other(&format!("{}/{}", base_path(&pid), packet.id)).finish())
}

/// `GET .../prior-auth/{packet}/bundle`: the approved packet's PAS Bundle, as a download.
pub async fn bundle(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    let (pid, id) = path.into_inner();
    let session = for_patient(&req, &state, &pid).await?;
    let who = actor(&session);
    let mut tx = state.store.begin(&session.tenant).await?;
    let packet = own_packet(&mut tx, &session, &id, true).await?;
    let Some(claim) = packet
        .claim
        .clone()
        .filter(|_| matches!(packet.status.as_str(), "approved" | "submitted"))
    else {
        return Err(refused(PriorAuthError::Conflict(
            "only an approved request can be exported".into(),
        )));
    };
    record_change(
        &mut tx,
        &session,
        &packet,
        &PacketChange {
            actor: &who,
            action: "exported",
            link_id: None,
            detail: None,
            status: &packet.status,
            response: &packet.response,
            claim: None,
            submission: None,
        },
        (
            "prior-auth-export",
            AuditAction::Read,
            AuditOutcome::Success,
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/fhir+json"))
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"prior-auth-{}.json\"", packet.id),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(claim.to_string()))
}

/// `POST .../prior-auth/{packet}/submit`: send the approved PAS Bundle to the tenant's
/// payer endpoint (`Claim/$submit`) and keep its answer.
pub async fn submit(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    form: web::Form<super::session::CsrfForm>,
) -> Result<HttpResponse, AppError> {
    let (pid, id) = path.into_inner();
    let session = for_patient(&req, &state, &pid).await?;
    form.check(&session)?;
    let who = actor(&session);
    let settings = state.store.prior_auth_settings(&session.tenant).await?;
    let Some(base) = settings["payerSubmitUrl"]
        .as_str()
        .filter(|u| !u.is_empty())
    else {
        return Err(refused(PriorAuthError::Conflict(
            "no payer endpoint is configured for this organization".into(),
        )));
    };
    let mut tx = state.store.begin(&session.tenant).await?;
    let packet = own_packet(&mut tx, &session, &id, true).await?;
    let Some(claim) = packet.claim.clone().filter(|_| packet.status == "approved") else {
        return Err(refused(PriorAuthError::Conflict(
            "only an approved, unsent request can be submitted".into(),
        )));
    };
    let url = format!("{}/Claim/$submit", base.trim_end_matches('/'));
    let sent = state
        .ehr_http
        .post(&url)
        .header(header::CONTENT_TYPE.as_str(), "application/fhir+json")
        .header(header::ACCEPT.as_str(), "application/fhir+json")
        .body(claim.to_string())
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await;
    let (http_status, answer) = match sent {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
        Err(e) => {
            tracing::warn!(error = %e.without_url(), "prior auth: payer endpoint unreachable");
            return Err(refused(PriorAuthError::Conflict(
                "the payer endpoint did not answer; try again later".into(),
            )));
        }
    };
    // The payer's ClaimResponse (alone, or first in its Bundle): its outcome.
    let claim_response = if answer["resourceType"] == "Bundle" {
        answer["entry"][0]["resource"].clone()
    } else {
        answer.clone()
    };
    let submission = json!({
        "url": url,
        "httpStatus": http_status,
        "outcome": claim_response["outcome"],
        "response": answer,
        "at": chrono::Utc::now().to_rfc3339(),
    });
    let accepted = (200..300).contains(&http_status);
    let status = if accepted { "submitted" } else { "approved" };
    record_change(
        &mut tx,
        &session,
        &packet,
        &PacketChange {
            actor: &who,
            action: if accepted {
                "submitted"
            } else {
                "submission-refused"
            },
            link_id: None,
            detail: Some(&format!("HTTP {http_status}")),
            status,
            response: &packet.response,
            claim: None,
            submission: Some(&submission),
        },
        (
            "prior-auth-submit",
            AuditAction::Execute,
            if accepted {
                AuditOutcome::Success
            } else {
                AuditOutcome::MinorFailure
            },
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(see_other(&format!("{}/{}", base_path(&pid), packet.id)).finish())
}
