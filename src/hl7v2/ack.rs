//! Acknowledgements: ACK messages with MSA and, on errors, ERR segments.

use chrono::{DateTime, Utc};

use super::escape::encode_text;
use super::message::{Encoding, Message};

/// MSA-1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCode {
    /// Original mode: accepted and stored.
    AA,
    /// Original mode: stored, but could not be processed (mapping error).
    AE,
    /// Original mode: refused (unknown sender, unsupported type, unreadable header).
    AR,
    /// Enhanced mode: commit accept.
    CA,
    /// Enhanced mode: commit reject.
    CR,
}

impl AckCode {
    pub fn code(self) -> &'static str {
        match self {
            AckCode::AA => "AA",
            AckCode::AE => "AE",
            AckCode::AR => "AR",
            AckCode::CA => "CA",
            AckCode::CR => "CR",
        }
    }
}

/// Where an error is (ERR-2 in v2.5+, ERR-1 before), all 1-based; 0 = not given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorLocation {
    pub segment: String,
    pub sequence: usize,
    pub field: usize,
    pub repetition: usize,
    pub component: usize,
}

/// One ERR segment: an HL7 table 0357 code and a short text. The text must never carry
/// message content (it is also stored as the failure reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckError {
    pub code: u16,
    pub text: String,
    pub location: Option<ErrorLocation>,
}

fn table_0357_text(code: u16) -> &'static str {
    match code {
        0 => "Message accepted",
        100 => "Segment sequence error",
        101 => "Required field missing",
        102 => "Data type error",
        103 => "Table value not found",
        200 => "Unsupported message type",
        201 => "Unsupported event code",
        202 => "Unsupported processing id",
        203 => "Unsupported version id",
        204 => "Unknown key identifier",
        205 => "Duplicate key identifier",
        206 => "Application record locked",
        _ => "Application internal error",
    }
}

const DEFAULT_ENCODING: Encoding = Encoding {
    field: '|',
    component: '^',
    repetition: '~',
    escape: '\\',
    subcomponent: '&',
    truncation: None,
};

fn hl7_timestamp(now: DateTime<Utc>) -> String {
    now.format("%Y%m%d%H%M%S%.3f+0000").to_string()
}

/// Build the ACK for `original` (None when its header could not be read). `control_id` is
/// the ACK's own MSH-10.
pub fn build_ack(
    original: Option<&Message>,
    code: AckCode,
    errors: &[AckError],
    control_id: &str,
    now: DateTime<Utc>,
) -> Vec<u8> {
    let enc = &DEFAULT_ENCODING;
    let text = |s: Option<String>| s.map(|v| encode_text(&v, enc)).unwrap_or_default();
    let version = original
        .and_then(Message::version)
        .unwrap_or_else(|| "2.5.1".into());
    let event = text(original.and_then(Message::trigger_event));
    let msh = format!(
        "MSH|^~\\&|{}|{}|{}|{}|{}||ACK^{}^ACK|{}|{}|{}",
        text(original.and_then(Message::receiving_application)).if_empty("HEARTH"),
        text(original.and_then(Message::receiving_facility)).if_empty("HEARTH"),
        text(original.and_then(Message::sending_application)),
        text(original.and_then(Message::sending_facility)),
        hl7_timestamp(now),
        event,
        encode_text(control_id, enc),
        text(original.and_then(Message::processing_id)).if_empty("P"),
        encode_text(&version, enc),
    );
    let mut segments = vec![msh];
    let mut msa = format!(
        "MSA|{}|{}",
        code.code(),
        text(original.and_then(Message::control_id))
    );
    if let Some(first) = errors.first() {
        msa.push('|');
        msa.push_str(&encode_text(&first.text, enc));
    }
    segments.push(msa);
    let v25_or_later = !(version.starts_with("2.1")
        || version.starts_with("2.2")
        || version.starts_with("2.3")
        || version.starts_with("2.4"));
    for e in errors {
        let loc = e.location.clone().unwrap_or_default();
        let code_text = format!("{}^{}^HL70357", e.code, table_0357_text(e.code));
        let numbers = |n: usize| if n == 0 { String::new() } else { n.to_string() };
        if v25_or_later {
            let location = if loc.segment.is_empty() {
                String::new()
            } else {
                format!(
                    "{}^{}^{}^{}^{}",
                    loc.segment,
                    numbers(loc.sequence),
                    numbers(loc.field),
                    numbers(loc.repetition),
                    numbers(loc.component)
                )
            };
            segments.push(format!(
                "ERR||{location}|{code_text}|E||||{}",
                encode_text(&e.text, enc)
            ));
        } else {
            segments.push(format!(
                "ERR|{}^{}^{}^{}&{}&HL70357",
                loc.segment,
                numbers(loc.sequence),
                numbers(loc.field),
                e.code,
                encode_text(&e.text, enc).replace('&', "\\T\\")
            ));
        }
    }
    let mut out = segments.join("\r");
    out.push('\r');
    out.into_bytes()
}

trait IfEmpty {
    fn if_empty(self, default: &str) -> String;
}

impl IfEmpty for String {
    fn if_empty(self, default: &str) -> String {
        if self.is_empty() {
            default.to_owned()
        } else {
            self
        }
    }
}
