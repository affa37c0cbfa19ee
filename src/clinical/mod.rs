//! Clinical content over a patient's record: text chunks and their retrieval index, the
//! summary engines (extractive; Bedrock with a verifier), questions, and the governance of
//! AI calls. Knows FHIR JSON and SQL through `store`; no HTTP.

pub mod bedrock;
pub mod chunk;
pub mod embed;
pub mod extractive;
pub mod index;
pub mod prior_auth;
pub mod summary;
pub mod verify;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A resource of the patient's record, as the engines see it (already access-filtered).
#[derive(Debug, Clone)]
pub struct RecordEntry {
    pub resource_type: String,
    pub id: String,
    pub version_id: i64,
    pub resource: Value,
}

impl RecordEntry {
    /// `Type/id`.
    pub fn reference(&self) -> String {
        format!("{}/{}", self.resource_type, self.id)
    }
}

/// Where a statement comes from: a resource (and element), or a passage of a note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Citation {
    /// `Type/id` of the source resource.
    pub reference: String,
    /// The version the statement was made from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_id: Option<i64>,
    /// The element within it, as a FHIRPath-like path (`valueQuantity`, `code`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub element: Option<String>,
    /// For a note: the byte range of the cited passage in the note's text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span: Option<(usize, usize)>,
}

/// One sentence of a summary or an answer, with its sources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    pub text: String,
    pub citations: Vec<Citation>,
    /// Why the verifier doubts it, when the tenant shows doubtful sentences flagged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flagged: Option<String>,
}

/// A titled part of a summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Section {
    /// Stable code: `problems`, `medications`, `allergies`, `encounters`, `vitals`, `labs`,
    /// `procedures`, `immunizations`, `notes` (extractive), `narrative` (bedrock).
    pub code: String,
    pub title: String,
    pub statements: Vec<Statement>,
    /// What the section says when it has no statement ("No allergies recorded.").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub empty_text: Option<String>,
}

/// A summary as every engine returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// `extractive` or `bedrock`.
    pub engine: String,
    pub sections: Vec<Section>,
    /// Sentences the verifier removed (bedrock).
    pub removed: usize,
    /// Shown above the summary (e.g. "monthly AI quota reached: extractive summary").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
}

/// An answer to a question about the patient: cited statements, or "not found".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub question: String,
    pub statements: Vec<Statement>,
    /// True when the record does not contain an answer (statements is then empty).
    pub not_found: bool,
}
