//! Text chunks of a patient's record for the retrieval index: one readable line per resource
//! (what a clinician would read), and the text of notes (DocumentReference content,
//! DiagnosticReport presentedForm) split into sections by their headings, each chunk
//! carrying its byte range in the decoded note. Pure functions of the JSON.
//!
//! The small readers of FHIR JSON used here (concept names, quantities, dates, sentences)
//! are shared with the extractive engine, which must write values exactly as stored.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::Value;

use super::RecordEntry;

/// Note sections longer than this (bytes) are split further, on sentence boundaries.
const MAX_CHUNK_BYTES: usize = 1200;
/// The section name of note text before its first heading.
pub(crate) const PREAMBLE_SECTION: &str = "Note";

/// A piece of text for the retrieval index, with where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// `resource` for the readable rendering of the resource, else the note section's name
    /// (`Assessment`, `Plan`, `HPI`, ... ; `Note` for text before the first heading).
    pub section: String,
    /// The text. For a note chunk, exactly the bytes `span` designates in the note's text.
    pub text: String,
    /// The element the note text comes from (`content[0].attachment`, `presentedForm[0]`).
    pub element: Option<String>,
    /// For a note chunk: its byte range in the note's decoded text ([`note_text`]).
    pub span: Option<(usize, usize)>,
}

/// The chunks of one resource: its readable rendering, then for a note its text by section
/// (long sections split at about 1,200 bytes on sentence boundaries).
pub fn chunks_of(entry: &RecordEntry) -> Vec<Chunk> {
    let mut chunks = vec![Chunk {
        section: "resource".to_owned(),
        text: render(&entry.resource_type, &entry.resource),
        element: None,
        span: None,
    }];
    if let Some(note) = note_attachment(&entry.resource) {
        for section in note_sections(&note.text) {
            for (start, end) in split_long(&note.text, section.start, section.end) {
                chunks.push(Chunk {
                    section: section.name.clone(),
                    text: note.text[start..end].to_owned(),
                    element: Some(note.element.clone()),
                    span: Some((start, end)),
                });
            }
        }
    }
    chunks
}

/// The decoded text of a note's first text attachment (DocumentReference
/// `content[].attachment`, DiagnosticReport `presentedForm[]`), if any: inline `data` of a
/// `text/*` content type (or of no content type, when it decodes to UTF-8 text).
pub fn note_text(resource: &Value) -> Option<String> {
    note_attachment(resource).map(|note| note.text)
}

/// A note's text and the element it was decoded from.
pub(crate) struct NoteAttachment {
    pub element: String,
    pub text: String,
}

pub(crate) fn note_attachment(resource: &Value) -> Option<NoteAttachment> {
    let is_document = match resource["resourceType"].as_str() {
        Some("DocumentReference") => true,
        Some("DiagnosticReport") => false,
        _ => return None,
    };
    let items = if is_document {
        &resource["content"]
    } else {
        &resource["presentedForm"]
    };
    items.as_array()?.iter().enumerate().find_map(|(i, item)| {
        let (attachment, element) = if is_document {
            (&item["attachment"], format!("content[{i}].attachment"))
        } else {
            (item, format!("presentedForm[{i}]"))
        };
        decode_text_attachment(attachment).map(|text| NoteAttachment { element, text })
    })
}

fn decode_text_attachment(attachment: &Value) -> Option<String> {
    let content_type = attachment["contentType"]
        .as_str()
        .map(|c| c.trim().to_ascii_lowercase());
    if let Some(ct) = &content_type
        && !ct.starts_with("text/")
    {
        return None;
    }
    let data = attachment["data"].as_str()?;
    let compact: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let engine = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let bytes = engine.decode(compact.as_bytes()).ok()?;
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        // A declared text type in another charset: readable, if not byte-exact.
        Err(e) if content_type.is_some() => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        Err(_) => return None,
    };
    if content_type.is_none() && text.chars().any(|c| c.is_control() && !c.is_whitespace()) {
        return None;
    }
    if text.trim().is_empty() {
        return None;
    }
    Some(text)
}

// ---------------------------------------------------------------------------------------
// Note sections and sentences.

/// A section of a note: its name and the byte range of its body (trimmed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NoteSection {
    pub name: String,
    pub start: usize,
    pub end: usize,
}

/// Headings a note may use inline ("Assessment: stable") or alone on a line, with the name
/// a section gets.
const KNOWN_HEADINGS: &[(&str, &str)] = &[
    ("hpi", "HPI"),
    ("history of present illness", "History of present illness"),
    ("history", "History"),
    ("interval history", "Interval history"),
    ("chief complaint", "Chief complaint"),
    ("cc", "Chief complaint"),
    ("reason for visit", "Reason for visit"),
    ("ros", "ROS"),
    ("review of systems", "Review of systems"),
    ("pmh", "PMH"),
    ("past medical history", "Past medical history"),
    ("past surgical history", "Past surgical history"),
    ("medications", "Medications"),
    ("current medications", "Current medications"),
    ("allergies", "Allergies"),
    ("social history", "Social history"),
    ("family history", "Family history"),
    ("physical exam", "Physical exam"),
    ("physical examination", "Physical examination"),
    ("exam", "Exam"),
    ("vitals", "Vitals"),
    ("vital signs", "Vital signs"),
    ("labs", "Labs"),
    ("results", "Results"),
    ("findings", "Findings"),
    ("subjective", "Subjective"),
    ("objective", "Objective"),
    ("assessment", "Assessment"),
    ("assessment and plan", "Assessment and plan"),
    ("assessment & plan", "Assessment and plan"),
    ("assessment/plan", "Assessment and plan"),
    ("a/p", "Assessment and plan"),
    ("impression", "Impression"),
    ("impression and plan", "Impression and plan"),
    ("problems", "Problems"),
    ("active problems", "Active problems"),
    ("problem list", "Problem list"),
    ("diagnosis", "Diagnosis"),
    ("diagnoses", "Diagnoses"),
    ("discharge diagnosis", "Discharge diagnosis"),
    ("discharge diagnoses", "Discharge diagnoses"),
    ("hospital course", "Hospital course"),
    ("conclusion", "Conclusion"),
    ("recommendations", "Recommendations"),
    ("plan", "Plan"),
    ("follow-up", "Follow-up"),
    ("follow up", "Follow-up"),
    ("disposition", "Disposition"),
];

fn known_heading(name: &str) -> Option<&'static str> {
    let lower = name.trim().to_lowercase();
    KNOWN_HEADINGS
        .iter()
        .find(|(key, _)| *key == lower)
        .map(|(_, canonical)| *canonical)
}

/// The heading a line opens, if it is one: the section name and the offset (in the line)
/// where the section's body starts.
fn heading_of(line: &str) -> Option<(String, usize)> {
    let content = line.trim_end_matches(['\n', '\r']);
    let trimmed = content.trim();
    if trimmed.is_empty() {
        return None;
    }
    // Markdown-ish "## Assessment".
    if trimmed.starts_with('#') {
        let name = trimmed
            .trim_start_matches('#')
            .trim()
            .trim_end_matches(':')
            .trim();
        if name.is_empty() {
            return None;
        }
        let name = known_heading(name).map_or_else(|| name.to_owned(), str::to_owned);
        return Some((name, line.len()));
    }
    // A heading alone on its line: "ASSESSMENT AND PLAN:", "Assessment:".
    if let Some(head) = trimmed.strip_suffix(':') {
        let head = head.trim();
        if let Some(canonical) = known_heading(head) {
            return Some((canonical.to_owned(), line.len()));
        }
        if !head.is_empty() && head.len() <= 60 && is_all_caps(head) {
            return Some((sentence_case(head), line.len()));
        }
        return None;
    }
    // A known heading followed by text on the same line: "Assessment: stable".
    let colon = trimmed.find(':')?;
    let canonical = known_heading(&trimmed[..colon])?;
    let lead = content.len() - content.trim_start().len();
    Some((canonical.to_owned(), lead + colon + 1))
}

fn is_all_caps(text: &str) -> bool {
    text.chars().filter(|c| c.is_alphabetic()).count() >= 2
        && !text.chars().any(char::is_lowercase)
        && !text.contains(':')
}

fn sentence_case(text: &str) -> String {
    let lower = text.to_lowercase();
    let mut chars = lower.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The sections of a note by its headings; text before the first heading is the `Note`
/// section. Bodies are trimmed; empty sections are left out.
pub(crate) fn note_sections(text: &str) -> Vec<NoteSection> {
    let mut sections = Vec::new();
    let mut name = PREAMBLE_SECTION.to_owned();
    let mut start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if let Some((heading, body)) = heading_of(line) {
            push_trimmed(&mut sections, text, name, start, offset);
            name = heading;
            start = offset + body;
        }
        offset += line.len();
    }
    push_trimmed(&mut sections, text, name, start, text.len());
    sections
}

fn push_trimmed(
    sections: &mut Vec<NoteSection>,
    text: &str,
    name: String,
    start: usize,
    end: usize,
) {
    if let Some((start, end)) = trim_range(text, start, end) {
        sections.push(NoteSection { name, start, end });
    }
}

/// `start..end` without leading and trailing whitespace; `None` when nothing is left.
pub(crate) fn trim_range(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let slice = text.get(start..end)?;
    let lead = slice.len() - slice.trim_start().len();
    let trail = slice.len() - slice.trim_end().len();
    let (s, e) = (start + lead, end - trail);
    (s < e).then_some((s, e))
}

/// Abbreviations whose period does not end a sentence.
const ABBREVIATIONS: &[&str] = &[
    "dr", "mr", "mrs", "ms", "vs", "e.g", "i.e", "approx", "pt", "fig", "no", "st", "jr", "sr",
];

/// The sentences of `text[start..end]`, as trimmed byte ranges. A sentence ends at `.`,
/// `!` or `?` followed by whitespace (not after a list number like "1." opening it, an
/// abbreviation or an initial), at a blank line, and before a line that opens a list item.
pub(crate) fn sentences(text: &str, start: usize, end: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let Some(slice) = text.get(start..end) else {
        return out;
    };
    let mut sentence_start = 0;
    let chars: Vec<(usize, char)> = slice.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        let mut boundary = None;
        if matches!(c, '.' | '!' | '?') {
            // Closing quotes or brackets belong to the sentence.
            let mut j = i + 1;
            while j < chars.len() && matches!(chars[j].1, '"' | '\'' | ')' | ']' | '”' | '’') {
                j += 1;
            }
            let at_end = j == chars.len();
            if (at_end || chars[j].1.is_whitespace())
                && (c != '.' || !is_non_terminal_period(slice, sentence_start, at))
            {
                boundary = Some(if at_end { slice.len() } else { chars[j].0 });
            }
        } else if c == '\n' {
            let rest = &slice[at + 1..];
            let next_line = rest.split('\n').next().unwrap_or("");
            if next_line.trim().is_empty() || list_marker_len(next_line.trim_start()) > 0 {
                boundary = Some(at);
            }
        }
        if let Some(b) = boundary {
            if let Some(range) = trim_range(slice, sentence_start, b) {
                out.push((start + range.0, start + range.1));
            }
            sentence_start = b;
        }
        i += 1;
    }
    if let Some(range) = trim_range(slice, sentence_start, slice.len()) {
        out.push((start + range.0, start + range.1));
    }
    out
}

/// Whether the period at `at` belongs to a word rather than ending the sentence.
fn is_non_terminal_period(slice: &str, sentence_start: usize, at: usize) -> bool {
    let before = &slice[sentence_start..at];
    let word = before
        .rsplit(|c: char| c.is_whitespace() || c == '(')
        .next()
        .unwrap_or("");
    if word.is_empty() {
        return false;
    }
    let first_token = before.trim_start().len() == word.len();
    // "1." opening a numbered item.
    if first_token && word.chars().all(|c| c.is_ascii_digit()) {
        return true;
    }
    // An initial: "J. Smith".
    if word.chars().count() == 1 && word.chars().all(|c| c.is_uppercase()) {
        return true;
    }
    ABBREVIATIONS.contains(&word.to_lowercase().as_str())
}

/// The length of a list marker ("- ", "* ", "• ", "1. ", "2) ") opening `line`, or 0.
pub(crate) fn list_marker_len(line: &str) -> usize {
    for bullet in ["- ", "* ", "• "] {
        if line.starts_with(bullet) {
            return bullet.len();
        }
    }
    let digits = line.chars().take_while(char::is_ascii_digit).count();
    if digits > 0 && digits <= 3 {
        let rest = &line[digits..];
        if rest.starts_with(". ") || rest.starts_with(") ") {
            return digits + 2;
        }
    }
    0
}

/// `text[start..end]` as pieces of at most about [`MAX_CHUNK_BYTES`], cut between sentences
/// (a longer sentence is cut between words).
fn split_long(text: &str, start: usize, end: usize) -> Vec<(usize, usize)> {
    if end - start <= MAX_CHUNK_BYTES {
        return vec![(start, end)];
    }
    let mut pieces = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for (s, e) in sentences(text, start, end) {
        if e - s > MAX_CHUNK_BYTES {
            if let Some(piece) = current.take() {
                pieces.push(piece);
            }
            pieces.extend(split_words(text, s, e));
            continue;
        }
        current = match current {
            Some((cs, _)) if e - cs <= MAX_CHUNK_BYTES => Some((cs, e)),
            Some(piece) => {
                pieces.push(piece);
                Some((s, e))
            }
            None => Some((s, e)),
        };
    }
    if let Some(piece) = current {
        pieces.push(piece);
    }
    pieces
}

/// A long sentence cut between words into pieces of at most [`MAX_CHUNK_BYTES`] (a word
/// longer than that is cut at a character boundary).
fn split_words(text: &str, start: usize, end: usize) -> Vec<(usize, usize)> {
    let mut pieces = Vec::new();
    let mut s = start;
    while s < end {
        let mut e = (s + MAX_CHUNK_BYTES).min(end);
        while !text.is_char_boundary(e) {
            e -= 1;
        }
        if e < end
            && let Some(space) = text[s..e].rfind(char::is_whitespace)
            && space > 0
        {
            e = s + space;
        }
        if e <= s {
            // A single character wider than the limit cannot happen; move on regardless.
            e = (s + 1..=end)
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(end);
        }
        if let Some(range) = trim_range(text, s, e) {
            pieces.push(range);
        }
        s = e;
    }
    pieces
}

// ---------------------------------------------------------------------------------------
// Readers of FHIR JSON, shared with the extractive engine.

/// A non-empty string element, trimmed.
pub(crate) fn str_of(value: &Value) -> Option<&str> {
    value.as_str().map(str::trim).filter(|s| !s.is_empty())
}

/// The name of a CodeableConcept: its text, else the first coding's display.
pub(crate) fn concept_name(concept: &Value) -> Option<String> {
    str_of(&concept["text"])
        .or_else(|| {
            concept["coding"]
                .as_array()?
                .iter()
                .find_map(|coding| str_of(&coding["display"]))
        })
        .map(|s| one_line(s.trim_end_matches('.')))
}

/// The status a CodeableConcept says (`clinicalStatus`, `verificationStatus`): its first
/// coding's code, else its text, lowercased.
pub(crate) fn concept_code(concept: &Value) -> Option<String> {
    concept["coding"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|coding| str_of(&coding["code"]))
        .or_else(|| str_of(&concept["text"]))
        .map(str::to_lowercase)
}

/// A short name for well-known code systems.
pub(crate) fn system_name(system: &str) -> Option<&'static str> {
    let system = system.trim().trim_end_matches('/');
    Some(match system {
        "http://loinc.org" => "LOINC",
        "http://snomed.info/sct" => "SNOMED CT",
        "http://hl7.org/fhir/sid/icd-10-cm" => "ICD-10-CM",
        "http://hl7.org/fhir/sid/icd-10" => "ICD-10",
        "http://www.nlm.nih.gov/research/umls/rxnorm" => "RxNorm",
        "http://hl7.org/fhir/sid/cvx" => "CVX",
        "http://www.ama-assn.org/go/cpt" => "CPT",
        "http://hl7.org/fhir/sid/ndc" => "NDC",
        _ => return None,
    })
}

/// The coding of a concept to show with its name, preferring the systems in order, as
/// `(system name, code)`; only codings of well-known systems.
pub(crate) fn preferred_coding(concept: &Value, prefer: &[&str]) -> Option<(&'static str, String)> {
    let codings = concept["coding"].as_array()?;
    let named: Vec<(&'static str, &str)> = codings
        .iter()
        .filter_map(|c| Some((system_name(c["system"].as_str()?)?, str_of(&c["code"])?)))
        .collect();
    prefer
        .iter()
        .find_map(|p| named.iter().find(|(name, _)| name == p))
        .or_else(|| named.first())
        .map(|(name, code)| (*name, (*code).to_owned()))
}

/// A concept's name with its preferred code: "Type 2 diabetes mellitus (ICD-10-CM E11.9)".
pub(crate) fn concept_label(concept: &Value, prefer: &[&str]) -> Option<String> {
    let name = concept_name(concept)?;
    Some(match preferred_coding(concept, prefer) {
        Some((system, code)) => format!("{name} ({system} {code})"),
        None => name,
    })
}

/// A JSON number exactly as written in the source (the crate keeps numbers' text).
pub(crate) fn number_text(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The unit of a Quantity as written: `unit`, else `code`.
pub(crate) fn quantity_unit(quantity: &Value) -> Option<&str> {
    str_of(&quantity["unit"]).or_else(|| str_of(&quantity["code"]))
}

/// A Quantity as stored: "7.2 %", "<5 mg/dL", "120".
pub(crate) fn quantity_text(quantity: &Value) -> Option<String> {
    let value = number_text(&quantity["value"])?;
    let comparator = str_of(&quantity["comparator"]).unwrap_or("");
    Some(match quantity_unit(quantity) {
        Some(unit) => format!("{comparator}{value} {unit}"),
        None => format!("{comparator}{value}"),
    })
}

/// The value[x] of an Observation (or of a component) as text, with the element it is in.
pub(crate) fn value_text(holder: &Value) -> Option<(String, &'static str)> {
    if let Some(q) = quantity_text(&holder["valueQuantity"]) {
        return Some((q, "valueQuantity"));
    }
    if let Some(c) = concept_name(&holder["valueCodeableConcept"]) {
        return Some((c, "valueCodeableConcept"));
    }
    if let Some(s) = str_of(&holder["valueString"]) {
        return Some((one_line(s), "valueString"));
    }
    if let Some(n) = number_text(&holder["valueInteger"]) {
        return Some((n, "valueInteger"));
    }
    if let Some(b) = holder["valueBoolean"].as_bool() {
        return Some(((if b { "yes" } else { "no" }).to_owned(), "valueBoolean"));
    }
    if let Some(s) = str_of(&holder["valueDateTime"]) {
        return Some((s.to_owned(), "valueDateTime"));
    }
    None
}

/// The date part of a FHIR date/dateTime ("2026-03-01T08:00:00Z" → "2026-03-01"): always a
/// substring of the source value.
pub(crate) fn date_part(value: &str) -> &str {
    let value = value.trim();
    match value.get(..10) {
        Some(date) if value.len() > 10 && value.as_bytes().get(10) == Some(&b'T') => date,
        _ => value,
    }
}

/// A sortable instant (seconds since the epoch, UTC) of a FHIR date, dateTime or instant;
/// partial dates sort at their start. `None` when unreadable.
pub(crate) fn date_key(value: &str) -> Option<i64> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime};
    let value = value.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(value) {
        return Some(dt.timestamp());
    }
    if let Ok(dt) = NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(dt.and_utc().timestamp());
    }
    let parse = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok();
    let parsed = value
        .get(..10)
        .and_then(parse)
        .or_else(|| value.get(..7).and_then(|m| parse(&format!("{m}-01"))))
        .or_else(|| value.get(..4).and_then(|y| parse(&format!("{y}-01-01"))))?;
    Some(parsed.and_hms_opt(0, 0, 0)?.and_utc().timestamp())
}

/// The first of `paths` (dotted element paths) holding a non-empty string, with its path.
pub(crate) fn first_date<'a>(
    resource: &'a Value,
    paths: &[&'static str],
) -> Option<(&'a str, &'static str)> {
    paths.iter().find_map(|path| {
        let value = path.split('.').fold(resource, |v, key| &v[key]);
        str_of(value).map(|s| (s, *path))
    })
}

/// Whitespace runs (newlines included) as single spaces.
pub(crate) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The element the clinically relevant date of a resource is in, by type, in order.
fn date_paths(resource_type: &str) -> &'static [&'static str] {
    match resource_type {
        "Observation" => &[
            "effectiveDateTime",
            "effectiveInstant",
            "effectivePeriod.start",
            "issued",
        ],
        "Condition" => &["onsetDateTime", "onsetPeriod.start", "recordedDate"],
        "MedicationRequest" => &["authoredOn"],
        "MedicationStatement" => &["effectiveDateTime", "effectivePeriod.start", "dateAsserted"],
        "AllergyIntolerance" => &["onsetDateTime", "recordedDate"],
        "Encounter" => &["period.start"],
        "Procedure" => &["performedDateTime", "performedPeriod.start"],
        "Immunization" => &["occurrenceDateTime"],
        "DocumentReference" => &["date", "context.period.start"],
        "DiagnosticReport" => &["effectiveDateTime", "effectivePeriod.start", "issued"],
        "Patient" => &["birthDate"],
        _ => &[
            "effectiveDateTime",
            "occurrenceDateTime",
            "performedDateTime",
            "authoredOn",
            "recordedDate",
            "period.start",
            "date",
            "issued",
        ],
    }
}

/// The readable one-line rendering of a resource for the index, e.g. "Observation
/// Hemoglobin A1c (LOINC 4548-4) 7.2 % on 2026-03-01, final, flagged high".
pub(crate) fn render(resource_type: &str, resource: &Value) -> String {
    let mut parts: Vec<String> = vec![resource_type.to_owned()];
    let concept = match resource_type {
        "Immunization" => concept_label(&resource["vaccineCode"], &["CVX"]),
        "MedicationRequest"
        | "MedicationStatement"
        | "MedicationAdministration"
        | "MedicationDispense" => {
            concept_label(&resource["medicationCodeableConcept"], &["RxNorm"])
                .or_else(|| str_of(&resource["medicationReference"]["display"]).map(one_line))
        }
        "AllergyIntolerance" | "Condition" => {
            concept_label(&resource["code"], &["ICD-10-CM", "SNOMED CT"])
        }
        "Encounter" => {
            let class = str_of(&resource["class"]["display"])
                .or_else(|| str_of(&resource["class"]["code"]))
                .map(str::to_owned);
            let kind = resource["type"].get(0).and_then(concept_name);
            match (class, kind) {
                (Some(c), Some(k)) => Some(format!("{c} {k}")),
                (c, k) => c.or(k),
            }
        }
        "DocumentReference" => resource["type"]
            .as_object()
            .and_then(|_| concept_name(&resource["type"]))
            .or_else(|| str_of(&resource["description"]).map(one_line)),
        "Patient" => patient_name(resource),
        _ => concept_label(&resource["code"], &["LOINC", "SNOMED CT"]),
    };
    parts.extend(concept);
    if resource_type == "Observation" {
        if let Some((value, _)) = value_text(resource) {
            parts.push(value);
        }
        let components: Vec<String> = resource["component"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| {
                let (value, _) = value_text(c)?;
                Some(match concept_name(&c["code"]) {
                    Some(name) => format!("{name} {value}"),
                    None => value,
                })
            })
            .collect();
        if !components.is_empty() {
            parts.push(components.join(", "));
        }
    }
    let mut line = parts.join(" ");
    match resource_type {
        "Encounter" => {
            if let Some(start) = str_of(&resource["period"]["start"]) {
                line.push_str(&format!(" from {}", date_part(start)));
            }
            if let Some(end) = str_of(&resource["period"]["end"]) {
                line.push_str(&format!(" to {}", date_part(end)));
            }
        }
        _ => {
            if let Some((date, _)) = first_date(resource, date_paths(resource_type)) {
                line.push_str(&format!(" on {}", date_part(date)));
            }
        }
    }
    let mut tail: Vec<String> = Vec::new();
    if let Some(dosage) = str_of(&resource["dosageInstruction"][0]["text"])
        .or_else(|| str_of(&resource["dosage"][0]["text"]))
    {
        tail.push(one_line(dosage));
    }
    let status = str_of(&resource["status"])
        .map(str::to_owned)
        .or_else(|| concept_code(&resource["clinicalStatus"]));
    tail.extend(status);
    if let Some(v) = concept_code(&resource["verificationStatus"]).filter(|v| v != "confirmed") {
        tail.push(v);
    }
    if let Some(c) = str_of(&resource["criticality"]) {
        tail.push(format!("criticality {c}"));
    }
    let reactions = manifestations(resource);
    if !reactions.is_empty() {
        tail.push(format!("reaction {}", reactions.join(", ")));
    }
    if let Some(flag) = interpretation_text(resource) {
        tail.push(format!("flagged {flag}"));
    }
    if let Some(conclusion) = str_of(&resource["conclusion"]) {
        tail.push(one_line(conclusion));
    }
    if resource_type == "Patient" {
        tail.extend(str_of(&resource["gender"]).map(str::to_owned));
        if let Some(birth) = str_of(&resource["birthDate"]) {
            tail.push(format!("born {birth}"));
        }
    }
    for item in tail {
        line.push_str(", ");
        line.push_str(&item);
    }
    line
}

fn patient_name(resource: &Value) -> Option<String> {
    let name = resource["name"].get(0)?;
    if let Some(text) = str_of(&name["text"]) {
        return Some(one_line(text));
    }
    let mut words: Vec<&str> = name["given"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(str_of)
        .collect();
    words.extend(str_of(&name["family"]));
    (!words.is_empty()).then(|| words.join(" "))
}

/// The reaction manifestations of an AllergyIntolerance, in order, without repeats.
pub(crate) fn manifestations(resource: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for reaction in resource["reaction"].as_array().into_iter().flatten() {
        for m in reaction["manifestation"].as_array().into_iter().flatten() {
            if let Some(name) = concept_name(m)
                && !out.iter().any(|o| o.eq_ignore_ascii_case(&name))
            {
                out.push(name);
            }
        }
    }
    out
}

/// An Observation's interpretation in words ("high", "critically low", "abnormal"), or its
/// text; `None` when normal or absent.
pub(crate) fn interpretation_text(resource: &Value) -> Option<String> {
    let interpretation = resource["interpretation"].get(0)?;
    let codes = interpretation["coding"].as_array().into_iter().flatten();
    for coding in codes {
        let word = match str_of(&coding["code"]) {
            Some("H") | Some("HU") => "high",
            Some("HH") => "critically high",
            Some("L") | Some("LU") => "low",
            Some("LL") => "critically low",
            Some("A") => "abnormal",
            Some("AA") => "critically abnormal",
            Some("POS") => "positive",
            Some("DET") => "detected",
            Some("N") | Some("NEG") | Some("ND") => return None,
            _ => continue,
        };
        return Some(word.to_owned());
    }
    let text = concept_name(interpretation)?;
    let lower = text.to_lowercase();
    (lower != "normal" && lower != "n").then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    fn entry(resource: Value) -> RecordEntry {
        RecordEntry {
            resource_type: resource["resourceType"].as_str().unwrap_or("").to_owned(),
            id: resource["id"].as_str().unwrap_or("").to_owned(),
            version_id: 1,
            resource,
        }
    }

    #[test]
    fn observation_renders_as_one_readable_line() {
        let obs: Value = serde_json::from_str(
            r#"{
            "resourceType": "Observation", "id": "a1c", "status": "final",
            "category": [{"coding": [{"code": "laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4",
                "display": "Hemoglobin A1c/Hemoglobin.total in Blood"}], "text": "Hemoglobin A1c"},
            "valueQuantity": {"value": 7.20, "unit": "%"},
            "effectiveDateTime": "2026-03-01T08:00:00Z",
            "interpretation": [{"coding": [{"code": "H"}]}]
        }"#,
        )
        .unwrap();
        let chunks = chunks_of(&entry(obs));
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].section, "resource");
        assert_eq!(
            chunks[0].text,
            "Observation Hemoglobin A1c (LOINC 4548-4) 7.20 % on 2026-03-01, final, flagged high"
        );
    }

    #[test]
    fn note_is_split_by_headings_with_spans() {
        let text = "Follow-up visit for diabetes.\n\nHPI: Feels well. No polyuria.\n\
                    ASSESSMENT AND PLAN:\n1. Type 2 diabetes, improving. Continue metformin.\n\
                    ## Plan\nRecheck A1c in 3 months.\n";
        let doc = json!({
            "resourceType": "DocumentReference", "id": "n1", "status": "current",
            "type": {"text": "Progress note"}, "date": "2026-03-02T10:00:00Z",
            "content": [
                {"attachment": {"contentType": "application/pdf", "data": b64("%PDF")}},
                {"attachment": {"contentType": "text/plain; charset=utf-8", "data": b64(text)}}
            ]
        });
        assert_eq!(note_text(&doc).as_deref(), Some(text));
        let chunks = chunks_of(&entry(doc));
        let names: Vec<&str> = chunks.iter().map(|c| c.section.as_str()).collect();
        assert_eq!(
            names,
            ["resource", "Note", "HPI", "Assessment and plan", "Plan"]
        );
        for chunk in &chunks[1..] {
            let (s, e) = chunk.span.unwrap();
            assert_eq!(&text[s..e], chunk.text);
            assert_eq!(chunk.element.as_deref(), Some("content[1].attachment"));
        }
        assert_eq!(chunks[2].text, "Feels well. No polyuria.");
        assert_eq!(chunks[4].text, "Recheck A1c in 3 months.");
        assert!(
            chunks[0]
                .text
                .starts_with("DocumentReference Progress note on 2026-03-02")
        );
    }

    #[test]
    fn diagnostic_report_presented_form_is_a_note() {
        let text = "IMPRESSION:\nNo acute cardiopulmonary process.";
        let report = json!({
            "resourceType": "DiagnosticReport", "id": "r1", "status": "final",
            "code": {"text": "Chest X-ray"},
            "presentedForm": [{"contentType": "text/plain", "data": b64(text)}]
        });
        let chunks = chunks_of(&entry(report));
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[1].section, "Impression");
        assert_eq!(chunks[1].element.as_deref(), Some("presentedForm[0]"));
        assert_eq!(chunks[1].text, "No acute cardiopulmonary process.");
    }

    #[test]
    fn non_text_or_undecodable_attachments_have_no_note_text() {
        let doc = json!({"resourceType": "DocumentReference", "content": [
            {"attachment": {"contentType": "application/pdf", "data": b64("x")}},
            {"attachment": {"contentType": "text/plain", "data": "***"}},
            {"attachment": {"contentType": "text/plain", "url": "http://example.org/n"}}
        ]});
        assert_eq!(note_text(&doc), None);
        assert_eq!(note_text(&json!({"resourceType": "Observation"})), None);
    }

    #[test]
    fn long_sections_are_split_on_sentence_boundaries() {
        let sentence = "The patient walked a long way today without chest pain or dyspnea. ";
        let body = sentence.repeat(40);
        let text = format!("Assessment:\n{body}");
        let doc = json!({"resourceType": "DocumentReference", "id": "n",
            "content": [{"attachment": {"contentType": "text/plain", "data": b64(&text)}}]});
        let chunks = chunks_of(&entry(doc));
        assert!(chunks.len() > 3);
        for chunk in &chunks[1..] {
            assert_eq!(chunk.section, "Assessment");
            assert!(chunk.text.len() <= MAX_CHUNK_BYTES);
            assert!(chunk.text.ends_with("dyspnea."));
            let (s, e) = chunk.span.unwrap();
            assert_eq!(&text[s..e], chunk.text);
        }
        let covered: usize = chunks[1..].iter().map(|c| c.text.len()).sum();
        assert!(covered >= body.trim().len() - chunks.len());
    }

    #[test]
    fn a_sentence_longer_than_a_chunk_is_cut_between_words() {
        let text = "word ".repeat(700);
        let pieces = split_long(&text, 0, text.trim_end().len());
        assert!(pieces.len() >= 3);
        for (s, e) in pieces {
            assert!(e - s <= MAX_CHUNK_BYTES);
            assert!(text[s..e].starts_with("word"));
        }
    }

    #[test]
    fn sentences_respect_list_numbers_decimals_and_abbreviations() {
        let text = "1. Diabetes, A1c 7.2 today. Seen by Dr. Lee vs. last year!\n- Next item\nend";
        let got: Vec<&str> = sentences(text, 0, text.len())
            .into_iter()
            .map(|(s, e)| &text[s..e])
            .collect();
        assert_eq!(
            got,
            [
                "1. Diabetes, A1c 7.2 today.",
                "Seen by Dr. Lee vs. last year!",
                "- Next item\nend"
            ]
        );
    }

    #[test]
    fn dates_and_numbers_are_kept_as_written() {
        assert_eq!(date_part("2026-03-01T08:00:00Z"), "2026-03-01");
        assert_eq!(date_part("2026-03"), "2026-03");
        assert!(date_key("2026-03-01T08:00:00+02:00") < date_key("2026-03-01T08:00:00Z"));
        assert!(date_key("2026") < date_key("2026-02"));
        assert_eq!(date_key("yesterday"), None);
        let q: Value =
            serde_json::from_str(r#"{"value": 7.20, "unit": "%", "comparator": "<"}"#).unwrap();
        assert_eq!(quantity_text(&q).as_deref(), Some("<7.20 %"));
    }
}
