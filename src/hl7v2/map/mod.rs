//! HL7 v2 → US Core resources. Pure: a message and the feed's conventions in, resource
//! contents (whole, or field-level merges for sparse updates) out. Storage applies them.
//!
//! Choices (following the HL7 v2-to-FHIR concept maps where they exist) are documented in
//! `docs/hl7v2-mapping.md`.

mod adt;
pub mod datatypes;
mod oru;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::ack::{AckError, ErrorLocation};
use super::feed::FeedSettings;
use super::message::Message;
use crate::tenant::TenantId;

/// Element name → change, for merges.
pub type Fields = std::collections::BTreeMap<String, Field>;

/// How a write combines with what is stored.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// The message carries the whole resource (results, diagnoses).
    Replace(Map<String, Value>),
    /// Set or clear only the elements the message carries; keep the rest (A08, A31).
    Merge(Fields),
    /// Create if absent; never change an existing resource (a lab feed's demographics).
    Ensure(Map<String, Value>),
}

impl Content {
    /// The same content as a create-only write: what a merge would set on a new resource.
    pub fn create_only(&self, resource_type: &str) -> Content {
        match self {
            Content::Merge(fields) => {
                let mut created = Map::new();
                created.insert("resourceType".into(), resource_type.into());
                for (k, f) in fields {
                    match f {
                        Field::Set(v) => {
                            created.insert(k.clone(), v.clone());
                        }
                        Field::Union(v) => {
                            created.insert(k.clone(), Value::Array(v.clone()));
                        }
                        Field::Default(v) => {
                            created.insert(k.clone(), v.clone());
                        }
                        Field::Clear | Field::Merge(_) => {}
                    }
                }
                Content::Ensure(created)
            }
            Content::Replace(m) | Content::Ensure(m) => Content::Ensure(m.clone()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Set(Value),
    /// HL7 `""`: delete the element.
    Clear,
    /// Merge into an object element (Encounter.period, hospitalization).
    Merge(Fields),
    /// Add array items not already present (identifiers: they never disappear).
    Union(Vec<Value>),
    /// Set only when the element is missing: what a resource first created by a sparse
    /// message (an A08 for a visit Hearth has not seen) needs to be valid.
    Default(Value),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub resource_type: &'static str,
    pub id: String,
    pub content: Content,
}

/// A40: `merged` is folded into `survivor`.
#[derive(Debug, Clone, PartialEq)]
pub struct PatientMerge {
    pub survivor: String,
    pub merged: String,
    pub merged_identifiers: Vec<Value>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mapped {
    pub writes: Vec<Write>,
    pub merge: Option<PatientMerge>,
}

impl Mapped {
    /// Add a write; a later write of the same resource merges into the earlier one.
    pub fn push(&mut self, write: Write) {
        if let Some(existing) = self
            .writes
            .iter_mut()
            .find(|w| w.resource_type == write.resource_type && w.id == write.id)
        {
            if let (Content::Merge(a), Content::Merge(b)) =
                (&mut existing.content, write.content.clone())
            {
                a.extend(b);
                return;
            }
            *existing = write;
            return;
        }
        self.writes.push(write);
    }
}

/// A mapping failure: answered with AE and an ERR segment.
pub type MappingError = AckError;

pub fn error_at(
    code: u16,
    text: impl Into<String>,
    segment: &str,
    sequence: usize,
    field: usize,
) -> MappingError {
    AckError {
        code,
        text: text.into(),
        location: Some(ErrorLocation {
            segment: segment.to_owned(),
            sequence,
            field,
            repetition: 0,
            component: 0,
        }),
    }
}

/// What mapping needs besides the message.
pub struct MapContext<'a> {
    pub tenant: &'a TenantId,
    pub feed: &'a FeedSettings,
    pub message: &'a Message,
    /// Patients the tenant already holds, by identifier (system, value): a message about a
    /// patient registered another way (REST, another feed) updates that Patient instead of
    /// creating a second one. Empty: every patient id is derived from its identifier.
    pub known_patients: &'a std::collections::BTreeMap<(String, String), String>,
}

/// The identifiers (system, value) of the message's patients (PID-3, MRG-1), as the
/// mapper reads them: what to look up before mapping.
pub fn patient_identifiers(ctx: &MapContext) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (segment, field) in [("PID", 3), ("MRG", 1)] {
        for seg in ctx.message.all(segment) {
            for rep in seg.repetitions(field).iter() {
                if let Some(id) = datatypes::identifier(ctx, rep)
                    && let (Some(system), Some(value)) =
                        (id["system"].as_str(), id["value"].as_str())
                {
                    out.push((system.to_owned(), value.to_owned()));
                }
            }
        }
    }
    out
}

impl MapContext<'_> {
    /// A deterministic, tenant-salted id: a replay maps to the same resources; equal
    /// business keys in two tenants never collide (or reveal each other).
    pub fn stable_id(&self, kind: &str, parts: &[&str]) -> String {
        let mut h = Sha256::new();
        h.update(self.tenant.as_str().as_bytes());
        h.update([0]);
        h.update(kind.as_bytes());
        for p in parts {
            h.update([0]);
            h.update(p.as_bytes());
        }
        let digest = h.finalize();
        let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        format!("{kind}-{hex}")
    }
}

/// The message types Hearth maps.
pub const SUPPORTED_EVENTS: &[(&str, &str)] = &[
    ("ADT", "A01"),
    ("ADT", "A02"),
    ("ADT", "A03"),
    ("ADT", "A04"),
    ("ADT", "A05"),
    ("ADT", "A08"),
    ("ADT", "A11"),
    ("ADT", "A13"),
    ("ADT", "A28"),
    ("ADT", "A31"),
    ("ADT", "A40"),
    ("ORU", "R01"),
];

/// Map a message whose type is in [`SUPPORTED_EVENTS`].
pub fn map_message(ctx: &MapContext) -> Result<Mapped, MappingError> {
    match ctx.message.message_type().as_deref() {
        Some("ORU") => oru::map_oru(ctx),
        Some("ADT") => adt::map_adt(ctx),
        _ => Err(error_at(200, "unsupported message type", "MSH", 1, 9)),
    }
}
