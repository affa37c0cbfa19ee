//! From an MLLP frame to an acknowledgement, durably: the raw message and everything mapped
//! from it are committed in one transaction before AA/CA is sent; failures are stored with
//! their reason (AE/AR) for listing and replay; a duplicate gets its original ACK back.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::ack::{AckCode, AckError, ErrorLocation, build_ack};
use super::feed::{FeedSettings, ListenerSettings};
use super::map::{Content, Field, Fields, MapContext, Mapped, SUPPORTED_EVENTS, map_message};
use super::message::{Hl7Error, Message};
use crate::resource::{InvalidResource, check};
use crate::store::{MessageRecord, MessageStatus, Store, StoreError, StoredVersion, TenantTx};

/// What to answer on the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Ack(Vec<u8>),
    /// Nothing to answer with (e.g. enhanced mode with MSH-15 = NE).
    Nothing,
    /// Not HL7 at all, or storage failed: close, and let the sender retry what it still has.
    Close,
}

/// The outcome of one message, for metrics and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Processed {
    pub answer: Answer,
    pub ack_code: Option<AckCode>,
    pub duplicate: bool,
}

/// How the message reached us.
pub struct Receipt<'a> {
    pub raw: &'a [u8],
    /// TLS client subject CN and DNS names, for feeds that require an identity; `None` on
    /// replay (checked when the message arrived).
    pub peer_identities: Option<&'a [String]>,
    /// Set when replaying a stored message: its row is updated instead of inserted.
    pub replay_of: Option<Uuid>,
}

pub struct Ingestor {
    pub store: Store,
    pub listener: ListenerSettings,
    /// The tenant's FHIR base with a trailing slash (for reference indexing).
    pub local_base: String,
}

/// Enhanced acknowledgement mode (MSH-15/16 valued) and when to send the accept ACK.
fn accept_ack_wanted(msg: &Message, success: bool) -> Option<bool> {
    let accept = msg.accept_ack_type();
    let application = msg.application_ack_type();
    if accept.is_none() && application.is_none() {
        return None; // original mode
    }
    Some(match accept.as_deref() {
        Some("NE") => false,
        Some("ER") => !success,
        Some("SU") => success,
        _ => true, // AL, or empty with MSH-16 set
    })
}

fn ack_control_id() -> String {
    // ST is 20 characters in v2.5.
    Uuid::new_v4().simple().to_string()[..20].to_owned()
}

impl Ingestor {
    /// Process stored messages again (after a mapping or feed fix). Each keeps its row and
    /// id; its outcome and attempt count are updated. A replay of an accepted message
    /// rewrites the same resources (stable ids) and changes nothing that did not change.
    pub async fn replay(&self, ids: &[Uuid]) -> Result<Vec<(Uuid, Processed)>, StoreError> {
        let mut out = Vec::new();
        for id in ids {
            let (raw, _) = self.store.message_raw(&self.listener.tenant, *id).await?;
            let processed = self
                .process(Receipt {
                    raw: &raw,
                    peer_identities: None,
                    replay_of: Some(*id),
                })
                .await?;
            out.push((*id, processed));
        }
        Ok(out)
    }

    pub async fn process(&self, receipt: Receipt<'_>) -> Result<Processed, StoreError> {
        let started = Instant::now();
        // Every resource version a message writes is audited in the message's transaction.
        let recorder = Arc::new(IngestAudit {
            listener: self.listener.name.clone(),
            replay: receipt.replay_of.is_some(),
        });
        let result = crate::store::with_commit_hook(recorder, self.process_inner(&receipt)).await;
        tracing::debug!(listener = %self.listener.name, elapsed_ms = started.elapsed().as_secs_f64() * 1000.0, "hl7 message processed");
        result
    }

    async fn process_inner(&self, receipt: &Receipt<'_>) -> Result<Processed, StoreError> {
        let received_at = Utc::now();
        // Read the header first (MSH is ASCII); the feed may override the charset.
        let first = Message::parse(receipt.raw, None);
        let msg = match first {
            Ok(m) => m,
            Err(Hl7Error::NotHl7) => {
                self.store_refusal(receipt, None, "not an HL7 v2 message (no MSH)", None)
                    .await?;
                return Ok(Processed {
                    answer: Answer::Close,
                    ack_code: None,
                    duplicate: false,
                });
            }
            Err(e) => {
                let error = AckError {
                    code: e.hl7_code(),
                    text: e.to_string(),
                    location: Some(ErrorLocation {
                        segment: "MSH".into(),
                        sequence: 1,
                        ..Default::default()
                    }),
                };
                let ack = build_ack(
                    None,
                    AckCode::AR,
                    std::slice::from_ref(&error),
                    &ack_control_id(),
                    Utc::now(),
                );
                self.store_refusal(receipt, None, &error.text, Some((AckCode::AR, ack.clone())))
                    .await?;
                return Ok(Processed {
                    answer: Answer::Ack(ack),
                    ack_code: Some(AckCode::AR),
                    duplicate: false,
                });
            }
        };
        let app = msg.sending_application();
        let facility = msg.sending_facility();
        let Some(feed) =
            self.listener
                .feed_for(app.as_deref(), facility.as_deref(), receipt.peer_identities)
        else {
            return self
                .refuse(
                    receipt,
                    &msg,
                    207,
                    "unknown sending application/facility on this listener",
                    3,
                )
                .await;
        };
        let msg = match feed.charset {
            Some(cs) => match Message::parse(receipt.raw, Some(cs)) {
                Ok(m) => m,
                Err(e) => {
                    return self
                        .refuse(receipt, &msg, e.hl7_code(), &e.to_string(), 18)
                        .await;
                }
            },
            None => msg,
        };
        let Some(control_id) = msg.control_id() else {
            return self
                .refuse(
                    receipt,
                    &msg,
                    101,
                    "MSH-10 (message control id) is required",
                    10,
                )
                .await;
        };
        let (Some(message_type), Some(event)) = (msg.message_type(), msg.trigger_event()) else {
            return self
                .refuse(
                    receipt,
                    &msg,
                    101,
                    "MSH-9 (message type and trigger event) is required",
                    9,
                )
                .await;
        };
        if !SUPPORTED_EVENTS
            .iter()
            .any(|(t, e)| *t == message_type && *e == event)
        {
            let code = if SUPPORTED_EVENTS.iter().any(|(t, _)| *t == message_type) {
                201
            } else {
                200
            };
            return self
                .refuse(receipt, &msg, code, "unsupported message type or event", 9)
                .await;
        }
        if feed.reject_z_segments && msg.segments().iter().any(|s| s.name.starts_with('Z')) {
            return self
                .refuse(
                    receipt,
                    &msg,
                    100,
                    "Z-segments are not accepted on this feed",
                    0,
                )
                .await;
        }

        // A concurrent duplicate on another connection loses the unique index race; the
        // retry then finds the winner's ACK.
        for _ in 0..3 {
            match self
                .commit_message(receipt, &msg, feed, &control_id, received_at)
                .await
            {
                Err(StoreError::ConcurrentChange) => continue,
                other => return other,
            }
        }
        Err(StoreError::ConcurrentChange)
    }

    async fn commit_message(
        &self,
        receipt: &Receipt<'_>,
        msg: &Message,
        feed: &FeedSettings,
        control_id: &str,
        received_at: chrono::DateTime<Utc>,
    ) -> Result<Processed, StoreError> {
        let tenant = &self.listener.tenant;
        let mut tx = self.store.begin(tenant).await?;
        if receipt.replay_of.is_none()
            && let Some(previous) = tx
                .previous_ack(
                    msg.sending_application().as_deref(),
                    msg.sending_facility().as_deref(),
                    control_id,
                )
                .await?
        {
            tx.commit().await?;
            return Ok(Processed {
                answer: Answer::Ack(previous),
                ack_code: None,
                duplicate: true,
            });
        }
        let message_id = receipt.replay_of.unwrap_or_else(Uuid::new_v4);
        let unresolved = std::collections::BTreeMap::new();
        let identifiers = super::map::patient_identifiers(&MapContext {
            tenant,
            feed,
            message: msg,
            known_patients: &unresolved,
        });
        let known_patients = tx.patients_with_identifiers(&identifiers).await?;
        let ctx = MapContext {
            tenant,
            feed,
            message: msg,
            known_patients: &known_patients,
        };
        let outcome = match map_message(&ctx) {
            Ok(mapped) => self.apply(&mut tx, msg, &ctx, mapped, message_id).await,
            Err(e) => Err(ApplyError::Mapping(e)),
        };
        let (success, errors) = match outcome {
            Ok(()) => (true, Vec::new()),
            Err(ApplyError::Store(e)) => return Err(e),
            Err(ApplyError::Mapping(e)) => {
                // Nothing of the mapping may stay: start over with only the message row.
                drop(tx);
                tx = self.store.begin(tenant).await?;
                (false, vec![e])
            }
        };
        let enhanced = accept_ack_wanted(msg, true).is_some();
        let code = match (enhanced, success) {
            (true, _) => AckCode::CA, // stored: the commit is accepted either way
            (false, true) => AckCode::AA,
            (false, false) => AckCode::AE,
        };
        let ack = build_ack(Some(msg), code, &errors, &ack_control_id(), Utc::now());
        let send = accept_ack_wanted(msg, success).unwrap_or(true);
        let status = if success {
            MessageStatus::Accepted
        } else {
            MessageStatus::Error
        };
        let reason = errors.first().map(describe);
        match receipt.replay_of {
            Some(id) => {
                tx.record_replay(id, status, Some(code.code()), Some(&ack), reason.as_deref())
                    .await?
            }
            None => {
                tx.insert_message(&MessageRecord {
                    id: message_id,
                    received_at,
                    listener: self.listener.name.clone(),
                    sending_application: msg.sending_application(),
                    sending_facility: msg.sending_facility(),
                    control_id: Some(control_id.to_owned()),
                    message_type: msg.message_type(),
                    trigger_event: msg.trigger_event(),
                    status,
                    ack_code: Some(code.code().to_owned()),
                    ack: Some(ack.clone()),
                    reason,
                    raw: receipt.raw.to_vec(),
                })
                .await?
            }
        }
        tx.commit().await?;
        Ok(Processed {
            answer: if send {
                Answer::Ack(ack)
            } else {
                Answer::Nothing
            },
            ack_code: Some(code),
            duplicate: false,
        })
    }

    /// Refuse with AR (CR in enhanced mode), keeping the message with the reason.
    async fn refuse(
        &self,
        receipt: &Receipt<'_>,
        msg: &Message,
        code: u16,
        text: &str,
        msh_field: usize,
    ) -> Result<Processed, StoreError> {
        let error = AckError {
            code,
            text: text.to_owned(),
            location: Some(ErrorLocation {
                segment: "MSH".into(),
                sequence: 1,
                field: msh_field,
                ..Default::default()
            }),
        };
        let ack_code = if accept_ack_wanted(msg, false).is_some() {
            AckCode::CR
        } else {
            AckCode::AR
        };
        let ack = build_ack(
            Some(msg),
            ack_code,
            std::slice::from_ref(&error),
            &ack_control_id(),
            Utc::now(),
        );
        self.store_refusal(
            receipt,
            Some(msg),
            &describe(&error),
            Some((ack_code, ack.clone())),
        )
        .await?;
        let send = accept_ack_wanted(msg, false).unwrap_or(true);
        Ok(Processed {
            answer: if send {
                Answer::Ack(ack)
            } else {
                Answer::Nothing
            },
            ack_code: Some(ack_code),
            duplicate: false,
        })
    }

    async fn store_refusal(
        &self,
        receipt: &Receipt<'_>,
        msg: Option<&Message>,
        reason: &str,
        ack: Option<(AckCode, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        let mut tx = self.store.begin(&self.listener.tenant).await?;
        let (ack_code, ack) = match ack {
            Some((c, a)) => (Some(c.code().to_owned()), Some(a)),
            None => (None, None),
        };
        match receipt.replay_of {
            Some(id) => {
                tx.record_replay(
                    id,
                    MessageStatus::Rejected,
                    ack_code.as_deref(),
                    ack.as_deref(),
                    Some(reason),
                )
                .await?
            }
            None => {
                tx.insert_message(&MessageRecord {
                    id: Uuid::new_v4(),
                    received_at: Utc::now(),
                    listener: self.listener.name.clone(),
                    sending_application: msg.and_then(Message::sending_application),
                    sending_facility: msg.and_then(Message::sending_facility),
                    control_id: msg.and_then(Message::control_id),
                    message_type: msg.and_then(Message::message_type),
                    trigger_event: msg.and_then(Message::trigger_event),
                    status: MessageStatus::Rejected,
                    ack_code,
                    ack,
                    reason: Some(reason.to_owned()),
                    raw: receipt.raw.to_vec(),
                })
                .await?
            }
        }
        tx.commit().await
    }

    /// Write every mapped resource (merged with what is stored), the A40 merge, and one
    /// Provenance naming them all and the message.
    async fn apply(
        &self,
        tx: &mut TenantTx,
        msg: &Message,
        ctx: &MapContext<'_>,
        mut mapped: Mapped,
        message_id: Uuid,
    ) -> Result<(), ApplyError> {
        if let Some(merge) = &mapped.merge {
            let old_ids: Vec<Value> = merge
                .merged_identifiers
                .iter()
                .map(|i| {
                    let mut i = i.clone();
                    i["use"] = "old".into();
                    i
                })
                .collect();
            if let Some(w) = mapped
                .writes
                .iter_mut()
                .find(|w| w.resource_type == "Patient" && w.id == merge.survivor)
                && let Content::Merge(fields) = &mut w.content
            {
                if let Some(Field::Union(ids)) = fields.get_mut("identifier") {
                    ids.extend(old_ids);
                }
                fields.insert("link".into(), Field::Union(vec![json!({"other": {"reference": format!("Patient/{}", merge.merged)}, "type": "replaces"})]));
            }
            let mut merged: Fields = Fields::new();
            merged.insert(
                "identifier".into(),
                Field::Union(merge.merged_identifiers.clone()),
            );
            merged.insert("active".into(), Field::Set(false.into()));
            merged.insert("link".into(), Field::Set(json!([{"other": {"reference": format!("Patient/{}", merge.survivor)}, "type": "replaced-by"}])));
            mapped.writes.push(super::map::Write {
                resource_type: "Patient",
                id: merge.merged.clone(),
                content: Content::Merge(merged),
            });
        }
        // Messages on other connections may create or change the same resources (a shared
        // Practitioner, Location, the patient of two messages): lock every resource this
        // message writes, in key order, before reading any of them. A row lock cannot do
        // it: there is no row yet when both find the resource missing.
        let tenant = ctx.tenant.as_str();
        let mut keys: Vec<String> = mapped
            .writes
            .iter()
            .map(|w| format!("{tenant}/{}/{}", w.resource_type, w.id))
            .collect();
        if let Some(merge) = &mapped.merge {
            keys.push(format!("{tenant}/Patient/{}", merge.merged));
        }
        tx.advisory_locks(&keys).await?;
        let mut targets: Vec<Value> = Vec::new();
        for w in &mapped.writes {
            let current = tx.current_for_update(w.resource_type, &w.id).await?;
            if let Some(v) = self
                .write(tx, w.resource_type, &w.id, current.as_ref(), &w.content)
                .await?
            {
                targets.push(json!({"reference": format!("{}/{}/_history/{}", v.resource_type, v.id, v.version_id)}));
            }
        }
        if let Some(merge) = &mapped.merge {
            // Re-point everything that referenced the merged patient (Provenance keeps history).
            for (resource_type, id) in tx.referrers("Patient", &merge.merged).await? {
                if resource_type == "Provenance"
                    || (resource_type == "Patient" && id == merge.merged)
                {
                    continue;
                }
                let Some(current) = tx.current_for_update(&resource_type, &id).await? else {
                    continue;
                };
                let Some(mut value) = current
                    .content
                    .as_deref()
                    .and_then(|c| serde_json::from_str::<Value>(c).ok())
                else {
                    continue;
                };
                repoint(
                    &mut value,
                    &format!("Patient/{}", merge.merged),
                    &format!("Patient/{}", merge.survivor),
                );
                let v = self.put_checked(tx, &resource_type, &id, value).await?;
                targets.push(json!({"reference": format!("{}/{}/_history/{}", v.resource_type, v.id, v.version_id)}));
            }
        }
        if targets.is_empty() {
            return Ok(());
        }
        let event = format!(
            "{}^{}",
            msg.message_type().unwrap_or_default(),
            msg.trigger_event().unwrap_or_default()
        );
        let sender = format!(
            "{}^{}",
            msg.sending_application().unwrap_or_default(),
            msg.sending_facility().unwrap_or_default()
        );
        let provenance = json!({
            "resourceType": "Provenance",
            "target": targets,
            "recorded": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "UPDATE", "display": "revise"}]},
            "agent": [{
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "author"}]},
                "who": {"display": format!("HL7 v2 sender {sender}")}
            }],
            "entity": [{
                "role": "source",
                "what": {
                    "identifier": {"system": "urn:hearth:hl7v2-message", "value": message_id.to_string()},
                    "display": format!("HL7 v2 {event} message {}", msg.control_id().unwrap_or_default())
                }
            }]
        });
        let id = ctx.stable_id("prov", &[&message_id.to_string()]);
        self.put_checked(tx, "Provenance", &id, provenance).await?;
        Ok(())
    }

    /// Apply one write to what is stored; `None` when nothing changed (no new version).
    async fn write(
        &self,
        tx: &mut TenantTx,
        resource_type: &str,
        id: &str,
        current: Option<&StoredVersion>,
        content: &Content,
    ) -> Result<Option<StoredVersion>, ApplyError> {
        let existing: Option<Map<String, Value>> = current
            .filter(|v| !v.deleted)
            .and_then(|v| v.content.as_deref())
            .and_then(|c| serde_json::from_str(c).ok());
        let mut next = match (content, &existing) {
            (Content::Ensure(_), Some(_)) => return Ok(None),
            (Content::Ensure(m), None) | (Content::Replace(m), _) => m.clone(),
            (Content::Merge(fields), _) => {
                let mut base = existing.clone().unwrap_or_default();
                merge_fields(&mut base, fields);
                base
            }
        };
        next.insert("resourceType".into(), resource_type.into());
        next.insert("id".into(), id.into());
        if let Some(old) = &existing {
            let strip = |m: &Map<String, Value>| {
                let mut m = m.clone();
                m.shift_remove("meta");
                m
            };
            if strip(old) == strip(&next) {
                return Ok(None);
            }
            if let Some(meta) = old.get("meta") {
                next.insert("meta".into(), meta.clone());
            }
        }
        self.put_checked(tx, resource_type, id, Value::Object(next))
            .await
            .map(Some)
    }

    async fn put_checked(
        &self,
        tx: &mut TenantTx,
        resource_type: &str,
        id: &str,
        value: Value,
    ) -> Result<StoredVersion, ApplyError> {
        let checked = check(value).map_err(|e| {
            let detail = match e {
                InvalidResource::Structure(issues) => issues
                    .first()
                    .map(|i| format!("{} ({})", i.expression, i.message))
                    .unwrap_or_default(),
                InvalidResource::Model(m) => m,
                InvalidResource::Profile(issues) => issues
                    .first()
                    .map(|i| format!("{} ({})", i.expression, i.message))
                    .unwrap_or_default(),
            };
            ApplyError::Mapping(AckError {
                code: 207,
                text: format!("the mapped {resource_type} is not valid R4: {detail}"),
                location: None,
            })
        })?;
        let base = self.local_base.clone();
        let (stored, _) = tx
            .put(resource_type, id, None, |stamp| {
                checked.render(id, stamp, &base)
            })
            .await?;
        Ok(stored)
    }
}

enum ApplyError {
    Mapping(AckError),
    Store(StoreError),
}

impl From<StoreError> for ApplyError {
    fn from(e: StoreError) -> Self {
        ApplyError::Store(e)
    }
}

/// The stored reason: code, location and text (never message content).
fn describe(e: &AckError) -> String {
    match &e.location {
        Some(l) if !l.segment.is_empty() => {
            let at = if l.field > 0 {
                format!("{}-{}", l.segment, l.field)
            } else {
                l.segment.clone()
            };
            format!("{} at {at}: {}", e.code, e.text)
        }
        _ => format!("{}: {}", e.code, e.text),
    }
}

fn same_item(a: &Value, b: &Value) -> bool {
    match (
        a.get("system").zip(a.get("value")),
        b.get("system").zip(b.get("value")),
    ) {
        (Some(x), Some(y)) => x == y,
        _ => match (a.get("other"), b.get("other")) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        },
    }
}

fn merge_fields(target: &mut Map<String, Value>, fields: &Fields) {
    for (key, field) in fields {
        match field {
            Field::Set(v) => {
                target.insert(key.clone(), v.clone());
            }
            Field::Clear => {
                target.shift_remove(key);
            }
            Field::Default(v) => {
                if !target.contains_key(key) {
                    target.insert(key.clone(), v.clone());
                }
            }
            Field::Merge(inner) => {
                let mut object = match target.get(key) {
                    Some(Value::Object(o)) => o.clone(),
                    _ => Map::new(),
                };
                merge_fields(&mut object, inner);
                if object.is_empty() {
                    target.shift_remove(key);
                } else {
                    target.insert(key.clone(), Value::Object(object));
                }
            }
            Field::Union(items) => {
                let mut list = match target.get(key) {
                    Some(Value::Array(a)) => a.clone(),
                    _ => Vec::new(),
                };
                for item in items {
                    match list.iter_mut().find(|x| same_item(x, item)) {
                        // Keep the stored one, but let a merge mark it old.
                        Some(existing) if item.get("use") == Some(&Value::from("old")) => {
                            *existing = item.clone()
                        }
                        Some(_) => {}
                        None => list.push(item.clone()),
                    }
                }
                if !list.is_empty() {
                    target.insert(key.clone(), Value::Array(list));
                }
            }
        }
    }
}

/// Replace every `reference` equal to `from` (relative) with `to`.
fn repoint(value: &mut Value, from: &str, to: &str) {
    match value {
        Value::Object(o) => {
            for (k, v) in o.iter_mut() {
                if k == "reference" && v.as_str() == Some(from) {
                    *v = to.into();
                } else {
                    repoint(v, from, to);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| repoint(v, from, to)),
        _ => {}
    }
}

/// Records what an HL7 v2 message wrote, in the transaction that writes it: one audit record
/// per message, naming the listener as the agent and every patient and version touched.
struct IngestAudit {
    listener: String,
    replay: bool,
}

impl crate::store::CommitHook for IngestAudit {
    fn before_commit<'a>(
        &'a self,
        tx: &'a mut crate::store::TenantTx,
        written: &'a [crate::store::WrittenVersion],
    ) -> crate::store::HookFuture<'a> {
        Box::pin(async move {
            use crate::audit::{AuditAction, AuditAgent, AuditOutcome, AuditRecord};
            let mut rec =
                AuditRecord::new("hl7v2-ingest", AuditAction::Create, AuditOutcome::Success);
            rec.agent = Some(AuditAgent {
                who: None,
                client_id: None,
                subject: format!("mllp:{}", self.listener),
                issuer: "hearth".to_owned(),
                on_behalf_of: None,
            });
            if self.replay {
                rec.outcome_text = Some("replay of a stored message".to_owned());
            }
            rec.add_written(written);
            crate::audit::record(tx, &rec).await
        })
    }
}
