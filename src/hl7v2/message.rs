//! A parsed, decoded, owned HL7 v2 message.
//!
//! # What hl7-parser does and what we do
//!
//! hl7-parser 0.3 splits one segment line into fields, repetitions, components and
//! subcomponents ([`hl7_parser::parser::parse_segment_with_separators`]); that is all we use
//! it for. Everything around it is ours, because the crate is wrong there on real feeds:
//!
//! - **Bytes to text** ([`super::charset`]): the crate takes `&str` only (no 8859/1), and
//!   rejects a UTF-8 BOM.
//! - **MSH-1/MSH-2**: the crate takes exactly five characters after `MSH`, so the v2.7
//!   truncation character (`MSH|^~\&#|`) shifts every MSH field by one, and `MSH|^~\|` is
//!   silently read with `|` as the subcomponent separator. We read and check MSH-1/MSH-2
//!   ourselves, then hand the crate the rest of MSH as a plain segment (`MSH|<MSH-3>|...`).
//! - **Segments**: we split lines on CR, LF or CRLF and skip blank ones. The crate's
//!   message parser stops at the first line it cannot parse and returns what it had,
//!   dropping the rest of the message without an error; per-line parsing lets us reject
//!   a malformed line with its sequence number instead.
//! - **Escapes** ([`super::escape`]): the crate's decoder slices by character index and
//!   panics on non-ASCII text before an escape (`"éé\F\x"`), so its `decode`/`display`
//!   are never called; every subcomponent is decoded by us.
//! - **Nulls**: the crate has no notion of HL7's `""` (see below).
//!
//! Splitting on raw delimiters before decoding is correct HL7: a delimiter inside data is
//! always escaped (`\F\`), and no escape sequence contains a raw delimiter.
//!
//! # Absent, empty and `""`
//!
//! HL7 distinguishes a field that is not sent (keep what the receiver has) from one sent
//! as `""` (delete it). [`Segment::field`] returns `None` for absent *and* empty fields,
//! and `Some` for a `""` field, on which [`Field::is_null`] is true; [`Segment::presence`]
//! tells the three cases apart in one call. `""` is recognised for a whole field,
//! repetition or component ([`Repetition::is_null`], [`Repetition::is_component_null`]);
//! its decoded text is empty, so text accessors return `None` and a mapper that ignores
//! nulls never writes a literal `""`. A sender that means two quote characters escapes
//! them (`\X2222\`).

use chrono_tz::Tz;
use hl7_parser::message::Separators;

use super::charset::{Charset, decode_bytes};
use super::escape::decode_escapes;
use super::timestamp::{Hl7Timestamp, parse_timestamp};

/// HL7's explicit null.
const NULL: &str = "\"\"";

/// Errors of the HL7 v2 layer. Each knows where it is (for ERR-2) and its HL7 table 0357
/// code (ERR-3, [`Hl7Error::hl7_code`]).
///
/// The messages never contain field values (which may be PHI), so they can be logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Hl7Error {
    #[error("not an HL7 v2 message: it must start with an MSH segment")]
    NotHl7,
    #[error("MSH-1/MSH-2 encoding characters are missing or invalid")]
    BadEncodingCharacters,
    #[error("segment {sequence} is malformed: {reason}")]
    BadSegment { sequence: usize, reason: String },
    #[error("required field {segment}-{field} is missing")]
    MissingField {
        segment: String,
        sequence: usize,
        field: usize,
    },
    #[error("unsupported character set {0:?}")]
    Charset(String),
    #[error("message bytes are not valid {charset} (byte {offset})")]
    InvalidBytes { charset: Charset, offset: usize },
    #[error("bad timestamp: {0}")]
    BadTimestamp(String),
    #[error("timestamp has a time but no UTC offset, and no default time zone is configured")]
    MissingTimeZone,
    #[error("unsupported message type {0:?}")]
    UnsupportedMessageType(String),
    #[error("unsupported trigger event {0:?}")]
    UnsupportedEvent(String),
    #[error("unsupported processing id {0:?}")]
    UnsupportedProcessingId(String),
    #[error("unsupported version {0:?}")]
    UnsupportedVersion(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// Another error, located at a field (see [`Hl7Error::at`]).
    #[error("{segment}-{field}: {source}")]
    InField {
        segment: String,
        sequence: usize,
        field: usize,
        source: Box<Hl7Error>,
    },
}

impl Hl7Error {
    /// The HL7 table 0357 code for ERR-3.
    pub fn hl7_code(&self) -> u16 {
        match self {
            Hl7Error::NotHl7 | Hl7Error::BadSegment { .. } => 100,
            Hl7Error::MissingField { .. } => 101,
            Hl7Error::BadEncodingCharacters
            | Hl7Error::InvalidBytes { .. }
            | Hl7Error::BadTimestamp(_)
            | Hl7Error::MissingTimeZone => 102,
            Hl7Error::Charset(_) => 103,
            Hl7Error::UnsupportedMessageType(_) => 200,
            Hl7Error::UnsupportedEvent(_) => 201,
            Hl7Error::UnsupportedProcessingId(_) => 202,
            Hl7Error::UnsupportedVersion(_) => 203,
            Hl7Error::Internal(_) => 207,
            Hl7Error::InField { source, .. } => source.hl7_code(),
        }
    }

    /// The segment ID for ERR-2.1, when known.
    pub fn segment(&self) -> Option<&str> {
        match self {
            Hl7Error::MissingField { segment, .. } | Hl7Error::InField { segment, .. } => {
                Some(segment)
            }
            _ if self.msh_field().is_some() => Some("MSH"),
            _ => None,
        }
    }

    /// The segment's 1-based sequence in the message for ERR-2.2, when known.
    pub fn sequence(&self) -> Option<usize> {
        match self {
            Hl7Error::BadSegment { sequence, .. }
            | Hl7Error::MissingField { sequence, .. }
            | Hl7Error::InField { sequence, .. } => Some(*sequence),
            _ if self.msh_field().is_some() => Some(1),
            _ => None,
        }
    }

    /// The field position for ERR-2.3, when known.
    pub fn field(&self) -> Option<usize> {
        match self {
            Hl7Error::MissingField { field, .. } | Hl7Error::InField { field, .. } => Some(*field),
            _ => self.msh_field(),
        }
    }

    /// Locates an error (typically from [`parse_timestamp`]) at a field, for ERR-2.
    pub fn at(self, segment: &str, sequence: usize, field: usize) -> Hl7Error {
        Hl7Error::InField {
            segment: segment.to_owned(),
            sequence,
            field,
            source: Box::new(self),
        }
    }

    /// The MSH field an error is about, for errors that are always about MSH.
    fn msh_field(&self) -> Option<usize> {
        match self {
            Hl7Error::NotHl7 => Some(1),
            Hl7Error::BadEncodingCharacters => Some(2),
            Hl7Error::Charset(_) | Hl7Error::InvalidBytes { .. } => Some(18),
            Hl7Error::UnsupportedMessageType(_) | Hl7Error::UnsupportedEvent(_) => Some(9),
            Hl7Error::UnsupportedProcessingId(_) => Some(11),
            Hl7Error::UnsupportedVersion(_) => Some(12),
            _ => None,
        }
    }
}

/// The message's delimiters, from MSH-1 and MSH-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    pub field: char,
    pub component: char,
    pub repetition: char,
    pub escape: char,
    pub subcomponent: char,
    /// The v2.7 truncation character (fifth character of MSH-2), if sent.
    pub truncation: Option<char>,
}

impl Default for Encoding {
    /// `|^~\&`, no truncation character.
    fn default() -> Self {
        Encoding {
            field: '|',
            component: '^',
            repetition: '~',
            escape: '\\',
            subcomponent: '&',
            truncation: None,
        }
    }
}

impl Encoding {
    /// MSH-2 text for a reply: `^~\&`, plus the truncation character when there is one.
    pub fn msh2(&self) -> String {
        let mut out: String = [
            self.component,
            self.repetition,
            self.escape,
            self.subcomponent,
        ]
        .into_iter()
        .collect();
        out.extend(self.truncation);
        out
    }

    /// Reads MSH-1 and MSH-2 from the first line. Returns the encoding and the byte index
    /// where MSH-2 ends (at the field separator before MSH-3, or the end of the line).
    ///
    /// MSH-2 must be 4 characters, or 5 with the v2.7 truncation character; all delimiters
    /// are distinct ASCII punctuation.
    fn from_msh_line(line: &str) -> Result<(Encoding, usize), Hl7Error> {
        let bytes = line.as_bytes();
        let field = *bytes.get(3).ok_or(Hl7Error::BadEncodingCharacters)?;
        let rest = bytes.get(4..).unwrap_or_default();
        let len = rest.iter().position(|&b| b == field).unwrap_or(rest.len());
        let chars = &rest[..len];
        let mut all = vec![field];
        all.extend_from_slice(chars);
        let distinct = all.iter().enumerate().all(|(i, b)| !all[..i].contains(b));
        if !(4..=5).contains(&chars.len()) || !distinct || !all.iter().all(u8::is_ascii_punctuation)
        {
            return Err(Hl7Error::BadEncodingCharacters);
        }
        let c = |i: usize| chars.get(i).copied().map(char::from);
        let (Some(component), Some(repetition), Some(escape), Some(subcomponent)) =
            (c(0), c(1), c(2), c(3))
        else {
            return Err(Hl7Error::BadEncodingCharacters);
        };
        let encoding = Encoding {
            field: char::from(field),
            component,
            repetition,
            escape,
            subcomponent,
            truncation: c(4),
        };
        Ok((encoding, 4 + len))
    }

    fn separators(&self) -> Separators {
        Separators {
            field: self.field,
            component: self.component,
            subcomponent: self.subcomponent,
            repetition: self.repetition,
            escape: self.escape,
            lenient_newlines: false,
        }
    }
}

/// Whether a field was sent, sent as `""`, or sent with a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Not sent, or sent empty: keep what the receiver has.
    Absent,
    /// Sent as `""`: delete what the receiver has.
    Null,
    /// Sent with a value.
    Present,
}

/// A parsed HL7 v2 message: owned, with escapes decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Never empty; the first is MSH (checked by `parse`).
    segments: Vec<Segment>,
    encoding: Encoding,
    charset: Charset,
}

impl Message {
    /// Parses a message from its wire bytes (one MLLP frame's content).
    ///
    /// Accepts a UTF-8 BOM, leading whitespace, CR, LF or CRLF segment terminators (mixed
    /// too), blank lines, and the v2.7 truncation character. The charset comes from
    /// `charset_override`, else MSH-18 (see [`super::charset`]). Rejects anything that does
    /// not start with MSH (batches, FHS/BHS, included), a second MSH, and lines that are
    /// not segments.
    pub fn parse(raw: &[u8], charset_override: Option<Charset>) -> Result<Message, Hl7Error> {
        let (text, charset) = decode_bytes(raw, charset_override)?;
        Message::from_text(&text, charset)
    }

    fn from_text(text: &str, charset: Charset) -> Result<Message, Hl7Error> {
        let text = text.trim_start_matches(|c: char| c.is_ascii_whitespace());
        if !text.starts_with("MSH") {
            return Err(Hl7Error::NotHl7);
        }
        let mut lines = text.split(['\r', '\n']).filter(|line| !is_blank(line));
        let first = lines.next().ok_or(Hl7Error::NotHl7)?;
        let (encoding, msh2_end) = Encoding::from_msh_line(first)?;
        let mut segments = vec![parse_msh(first, msh2_end, &encoding, charset)?];
        for line in lines {
            let sequence = segments.len() + 1;
            segments.push(parse_segment(line, sequence, &encoding, charset)?);
        }
        Ok(Message {
            segments,
            encoding,
            charset,
        })
    }

    /// All segments in order; the first is MSH.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The first segment with this name.
    pub fn first(&self, name: &str) -> Option<&Segment> {
        self.segments.iter().find(|s| s.name == name)
    }

    /// Every segment with this name, in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Segment> + 'a {
        self.segments.iter().filter(move |s| s.name == name)
    }

    /// The MSH segment.
    pub fn msh(&self) -> &Segment {
        // `parse` only builds a Message with MSH first; this is not input-dependent.
        &self.segments[0]
    }

    /// The charset the message was decoded with (not necessarily what MSH-18 says).
    pub fn charset(&self) -> Charset {
        self.charset
    }

    pub fn encoding(&self) -> &Encoding {
        &self.encoding
    }

    /// MSH-9.1, e.g. `ADT`.
    pub fn message_type(&self) -> Option<String> {
        self.msh().component(9, 1)
    }

    /// MSH-9.2, e.g. `A01`.
    pub fn trigger_event(&self) -> Option<String> {
        self.msh().component(9, 2)
    }

    /// MSH-9.3, e.g. `ADT_A01`.
    pub fn message_structure(&self) -> Option<String> {
        self.msh().component(9, 3)
    }

    /// MSH-10.
    pub fn control_id(&self) -> Option<String> {
        self.msh().text(10)
    }

    /// MSH-11.1 (`P`, `T`, `D`).
    pub fn processing_id(&self) -> Option<String> {
        self.msh().component(11, 1)
    }

    /// MSH-12.1, e.g. `2.5.1`.
    pub fn version(&self) -> Option<String> {
        self.msh().component(12, 1)
    }

    /// MSH-3.1.
    pub fn sending_application(&self) -> Option<String> {
        self.msh().component(3, 1)
    }

    /// MSH-4.1.
    pub fn sending_facility(&self) -> Option<String> {
        self.msh().component(4, 1)
    }

    /// MSH-5.1.
    pub fn receiving_application(&self) -> Option<String> {
        self.msh().component(5, 1)
    }

    /// MSH-6.1.
    pub fn receiving_facility(&self) -> Option<String> {
        self.msh().component(6, 1)
    }

    /// MSH-15 (`AL`, `NE`, `ER`, `SU`).
    pub fn accept_ack_type(&self) -> Option<String> {
        self.msh().text(15)
    }

    /// MSH-16.
    pub fn application_ack_type(&self) -> Option<String> {
        self.msh().text(16)
    }

    /// Checks the MSH fields every message must have to be processed and acknowledged:
    /// MSH-9.1, MSH-10, MSH-11 and MSH-12 (ERR code 101 otherwise).
    pub fn check_header(&self) -> Result<(), Hl7Error> {
        let msh = self.msh();
        let missing = |field| Hl7Error::MissingField {
            segment: "MSH".to_owned(),
            sequence: 1,
            field,
        };
        if self.message_type().is_none() {
            return Err(missing(9));
        }
        for field in [10, 11, 12] {
            if msh.text(field).is_none() {
                return Err(missing(field));
            }
        }
        Ok(())
    }
}

/// One segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The segment ID, e.g. `PID`.
    pub name: String,
    /// 1-based position in the message (MSH is 1), for ERR-2.2.
    pub sequence: usize,
    /// `fields[0]` is field 1.
    fields: Vec<Field>,
}

impl Segment {
    /// Field `n`, numbered as HL7 does: for MSH, field 1 is the field separator and field 2
    /// the encoding characters (both as sent, not split or decoded); for other segments
    /// field 1 is the first after the name. `None` when the field is absent or empty,
    /// `Some` for a value or `""` (see the module docs).
    pub fn field(&self, n: usize) -> Option<&Field> {
        self.fields
            .get(n.checked_sub(1)?)
            .filter(|f| !f.repetitions.is_empty())
    }

    /// The repetitions of field `n`; an empty slice when absent.
    pub fn repetitions(&self, n: usize) -> &[Repetition] {
        self.field(n).map_or(&[], |f| f.repetitions.as_slice())
    }

    /// First repetition, first component, first subcomponent of field `n`, decoded;
    /// `None` if empty or `""`.
    pub fn text(&self, n: usize) -> Option<String> {
        self.component(n, 1)
    }

    /// First repetition, component `c` (1-based), first subcomponent of field `n`.
    pub fn component(&self, n: usize, c: usize) -> Option<String> {
        self.repetitions(n).first()?.component(c).map(str::to_owned)
    }

    /// First repetition, component `c`, subcomponent `s` (both 1-based) of field `n`.
    pub fn subcomponent(&self, n: usize, c: usize, s: usize) -> Option<String> {
        self.repetitions(n)
            .first()?
            .subcomponent(c, s)
            .map(str::to_owned)
    }

    /// Whether field `n` is absent, `""`, or has a value.
    pub fn presence(&self, n: usize) -> Presence {
        match self.field(n) {
            None => Presence::Absent,
            Some(f) if f.is_null() => Presence::Null,
            Some(_) => Presence::Present,
        }
    }

    /// Number of fields as sent (including trailing empty ones; for MSH counting MSH-1
    /// and MSH-2), i.e. the highest `n` that [`Segment::field`] can answer.
    pub fn field_count(&self) -> usize {
        self.fields.len()
    }

    /// All fields as sent; index 0 is field 1. Empty fields have no repetitions.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// Field `n` (component 1 of the first repetition, so TS values work too) as a
    /// timestamp; `Ok(None)` when empty. Errors are located at this field for ERR-2.
    pub fn timestamp(
        &self,
        n: usize,
        default_tz: Option<Tz>,
    ) -> Result<Option<Hl7Timestamp>, Hl7Error> {
        match self.component(n, 1) {
            None => Ok(None),
            Some(text) => parse_timestamp(&text, default_tz)
                .map(Some)
                .map_err(|e| e.at(&self.name, self.sequence, n)),
        }
    }
}

/// A field: its repetitions (none when the field is empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub repetitions: Vec<Repetition>,
}

impl Field {
    /// Whether the field was sent as `""` (delete).
    pub fn is_null(&self) -> bool {
        matches!(self.repetitions.as_slice(), [only] if only.is_null())
    }

    /// Whether the field has no text at all (`""` counts as empty).
    pub fn is_empty(&self) -> bool {
        self.repetitions.iter().all(Repetition::is_empty)
    }

    /// The first repetition.
    pub fn first(&self) -> Option<&Repetition> {
        self.repetitions.first()
    }
}

/// One repetition of a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repetition {
    pub components: Vec<Component>,
}

impl Repetition {
    /// Component `c` (1-based), first subcomponent; `None` if empty or `""`.
    pub fn component(&self, c: usize) -> Option<&str> {
        self.subcomponent(c, 1)
    }

    /// Component `c`, subcomponent `s` (both 1-based); `None` if empty or `""`.
    pub fn subcomponent(&self, c: usize, s: usize) -> Option<&str> {
        self.components
            .get(c.checked_sub(1)?)?
            .subcomponents
            .get(s.checked_sub(1)?)
            .map(String::as_str)
            .filter(|text| !text.is_empty())
    }

    /// Whether the repetition has no text at all (`""` counts as empty).
    pub fn is_empty(&self) -> bool {
        self.components
            .iter()
            .all(|c| c.subcomponents.iter().all(String::is_empty))
    }

    /// Whether the repetition was sent as `""` (delete).
    pub fn is_null(&self) -> bool {
        matches!(self.components.as_slice(), [only] if only.is_null())
    }

    /// Whether component `c` (1-based) was sent as `""` (delete).
    pub fn is_component_null(&self, c: usize) -> bool {
        c.checked_sub(1)
            .and_then(|i| self.components.get(i))
            .is_some_and(Component::is_null)
    }
}

/// One component: its subcomponents' decoded text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    pub subcomponents: Vec<String>,
    /// Sent as `""`; `subcomponents` is then `[""]`.
    null: bool,
}

impl Component {
    /// A component with these subcomponents (not a null).
    pub fn new(subcomponents: Vec<String>) -> Component {
        Component {
            subcomponents,
            null: false,
        }
    }

    /// Whether the component was sent as `""` (delete).
    pub fn is_null(&self) -> bool {
        self.null
    }
}

/// Lines between segment terminators that carry nothing: blank lines, and leftovers such
/// as a stray MLLP end byte.
fn is_blank(line: &str) -> bool {
    line.chars().all(|c| c.is_whitespace() || c.is_control())
}

/// `[A-Z][A-Z0-9]{2}`: HL7 segment IDs (Z-segments included).
fn is_segment_name(name: &[u8]) -> bool {
    matches!(name, [first, rest @ ..] if rest.len() == 2
        && first.is_ascii_uppercase()
        && rest.iter().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()))
}

fn parse_msh(
    line: &str,
    msh2_end: usize,
    encoding: &Encoding,
    charset: Charset,
) -> Result<Segment, Hl7Error> {
    let text_field = |text: String| Field {
        repetitions: vec![Repetition {
            components: vec![Component::new(vec![text])],
        }],
    };
    let mut fields = vec![
        text_field(encoding.field.to_string()),
        text_field(line.get(4..msh2_end).unwrap_or_default().to_owned()),
    ];
    let after = line.get(msh2_end..).unwrap_or_default();
    if !after.is_empty() {
        // `after` starts with the field separator: this is an ordinary segment line whose
        // first field is MSH-3, which hl7-parser splits correctly.
        let rest = format!("MSH{after}");
        fields.extend(split_fields(&rest, 1, encoding, charset)?);
    }
    Ok(Segment {
        name: "MSH".to_owned(),
        sequence: 1,
        fields,
    })
}

fn parse_segment(
    line: &str,
    sequence: usize,
    encoding: &Encoding,
    charset: Charset,
) -> Result<Segment, Hl7Error> {
    let bad = |reason: &str| Hl7Error::BadSegment {
        sequence,
        reason: reason.to_owned(),
    };
    let (Some(name), Some(after)) = (line.get(..3), line.get(3..)) else {
        return Err(bad("not a segment (no segment ID)"));
    };
    if !is_segment_name(name.as_bytes()) {
        return Err(bad("not a segment (no segment ID)"));
    }
    if name == "MSH" {
        return Err(bad("MSH is allowed only as the first segment"));
    }
    let fields = if after.is_empty() {
        Vec::new()
    } else if after.starts_with(encoding.field) {
        split_fields(line, sequence, encoding, charset)?
    } else {
        return Err(bad("segment ID not followed by the field separator"));
    };
    Ok(Segment {
        name: name.to_owned(),
        sequence,
        fields,
    })
}

/// Splits a segment line (`XXX|...`, no terminator) into decoded fields with hl7-parser.
fn split_fields(
    line: &str,
    sequence: usize,
    encoding: &Encoding,
    charset: Charset,
) -> Result<Vec<Field>, Hl7Error> {
    let parsed = hl7_parser::parser::parse_segment_with_separators(line, encoding.separators())
        .map_err(|_| Hl7Error::BadSegment {
            sequence,
            reason: "cannot be split into fields".to_owned(),
        })?;
    // The crate returns what it parsed and drops the rest; it should consume the whole
    // line (no CR/LF are left in it), and if it ever does not we refuse, not truncate.
    if parsed.range.end != line.len() {
        return Err(Hl7Error::BadSegment {
            sequence,
            reason: "not fully parsed".to_owned(),
        });
    }
    let decode = |raw: &str| {
        if raw == NULL {
            String::new()
        } else {
            decode_escapes(raw, encoding, charset)
        }
    };
    let fields = parsed
        .fields
        .iter()
        .map(|field| {
            if field.raw_value().is_empty() {
                return Field {
                    repetitions: Vec::new(),
                };
            }
            let repetitions = field
                .repeats
                .iter()
                .map(|repeat| Repetition {
                    components: repeat
                        .components
                        .iter()
                        .map(|component| Component {
                            null: matches!(component.subcomponents.as_slice(), [only] if only.value == NULL),
                            subcomponents: component
                                .subcomponents
                                .iter()
                                .map(|sub| decode(sub.value))
                                .collect(),
                        })
                        .collect(),
                })
                .collect();
            Field { repetitions }
        })
        .collect();
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A synthetic ADT^A01 (no real person), 15 segments.
    const ADT_A01: &[&str] = &[
        r"MSH|^~\&|EPICADT|NORTHWIND^1.2.840.114350.1.13.999^ISO|HEARTH|HEARTHFAC|20240705143012-0400||ADT^A01^ADT_A01|MSG00001|P|2.5.1|||AL|NE||UNICODE UTF-8",
        r"EVN|A01|20240705143000-0400|||JSMITH^Smith^Jane^^^^^^NORTHWIND",
        r"PID|1||123^^^HOSP&1.2.3&ISO^MR~456^^^SSA^SS||Doe^Jane^Q^^Ms.^^L~Roe^Jane^^^^^M||19800214|F|||100 Main St^Apt 4\F\B^Springfield^IL^62701^USA^H||^PRN^PH^^1^217^5551234~^NET^Internet^jane.doe@example.org|||M||ACCT778899||||||||||||N",
        r"PD1|||Northwind Family Practice^^9001|1234567890^Welby^Marcus^^^Dr.",
        r"NK1|1|Doe^John^^^^^L|SPO^Spouse^HL70063|100 Main St^^Springfield^IL^62701^USA|^PRN^PH^^1^217^5554321",
        r"NK1|2|Doe^Ann|DAU^Daughter^HL70063",
        r"PV1|1|I|4W^401^A^NORTHWIND^^^^^4 West||||1234567890^Welby^Marcus^^^Dr.|||MED||||7|||1234567890^Welby^Marcus^^^Dr.|IP|VN0001^^^NORTHWIND^VN|||||||||||||||||||||||||20240705142500-0400",
        r"PV2|||^Chest pain\.br\radiating to left arm",
        r"OBX|1|NM|8302-2^Body height^LN||165|cm^centimeter^UCUM|||||F|||20240705143000-0400",
        r"OBX|2|NM|29463-7^Body weight^LN||68.5|kg^kilogram^UCUM|||||F|||20240705143000-0400",
        r"AL1|1|DA|70618^Penicillin^RXNORM|SV|Hives",
        r"AL1|2|FA|256349002^Peanut^SCT|MO|",
        r"DG1|1||R07.9^Chest pain, unspecified^I10||20240705|A",
        r"GT1|1||Doe^Jane^Q||100 Main St^^Springfield^IL^62701^USA",
        r"IN1|1|PPO01^Acme PPO|ACME01|Acme Health Insurance||||GRP100|||||||Doe^Jane^Q|SEL|19800214",
    ];

    /// A synthetic ORU^R01 (no real person), 14 segments.
    const ORU_R01: &[&str] = &[
        r"MSH|^~\&|LAB|NORTHWIND|HEARTH|HEARTHFAC|20240706091500-0400||ORU^R01^ORU_R01|LAB5550001|P|2.5.1|||NE|AL",
        r"PID|1||123^^^HOSP&1.2.3&ISO^MR||Doe^Jane^Q||19800214|F",
        r"PV1|1|O|LAB^^^NORTHWIND",
        r"ORC|RE|ORD1001^EPIC|LAB2002^LAB||CM",
        r"OBR|1|ORD1001^EPIC|LAB2002^LAB|24323-8^Comprehensive metabolic panel^LN|||20240706080000-0400|||||||||1234567890^Welby^Marcus||||||20240706091000-0400|||F",
        r"OBX|1|NM|2345-7^Glucose^LN||98|mg/dL^^UCUM|70-99|N|||F|||20240706080000-0400",
        r"OBX|2|NM|2160-0^Creatinine^LN||1.1|mg/dL^^UCUM|0.6-1.2|N|||F",
        r"OBX|3|NM|2951-2^Sodium^LN||139|mmol/L^^UCUM|135-145|N|||F",
        r"OBX|4|NM|2823-3^Potassium^LN||5.6|mmol/L^^UCUM|3.5-5.1|H|||F",
        r"OBX|5|NM|17861-6^Calcium^LN||9.4|mg/dL^^UCUM|8.6-10.3|N|||F",
        r"OBX|6|ST|1751-7^Albumin^LN||\XE2899B\ 3.5|g/dL^^UCUM|3.5-5.2|N|||F",
        r"NTE|1|L|Specimen slightly hemolyzed\.br\Potassium may be falsely elevated",
        r"OBX|7|FT|11502-2^Lab report^LN||Reviewed by\.br\Dr. Welby \T\ team||||||F",
        r"SPM|1|SPC1001||BLD^Blood^HL70487|||||||||||||20240706080000-0400",
    ];

    fn parse(text: &str) -> Message {
        Message::parse(text.as_bytes(), None).unwrap()
    }

    fn err(raw: &[u8]) -> Hl7Error {
        Message::parse(raw, None).unwrap_err()
    }

    #[test]
    fn adt_a01() {
        let m = parse(&ADT_A01.join("\r"));
        assert_eq!(m.segments().len(), 15);
        assert_eq!(m.charset(), Charset::Utf8);
        assert_eq!(m.message_type().as_deref(), Some("ADT"));
        assert_eq!(m.trigger_event().as_deref(), Some("A01"));
        assert_eq!(m.message_structure().as_deref(), Some("ADT_A01"));
        assert_eq!(m.control_id().as_deref(), Some("MSG00001"));
        assert_eq!(m.processing_id().as_deref(), Some("P"));
        assert_eq!(m.version().as_deref(), Some("2.5.1"));
        assert_eq!(m.sending_application().as_deref(), Some("EPICADT"));
        assert_eq!(m.sending_facility().as_deref(), Some("NORTHWIND"));
        assert_eq!(m.receiving_application().as_deref(), Some("HEARTH"));
        assert_eq!(m.receiving_facility().as_deref(), Some("HEARTHFAC"));
        assert_eq!(m.accept_ack_type().as_deref(), Some("AL"));
        assert_eq!(m.application_ack_type().as_deref(), Some("NE"));
        assert_eq!(m.check_header(), Ok(()));

        let msh = m.msh();
        assert_eq!(msh.text(1).as_deref(), Some("|"));
        assert_eq!(msh.text(2).as_deref(), Some("^~\\&"));
        assert_eq!(msh.text(18).as_deref(), Some("UNICODE UTF-8"));
        assert_eq!(msh.field_count(), 18);
        assert_eq!(
            msh.component(4, 2).as_deref(),
            Some("1.2.840.114350.1.13.999")
        );

        let pid = m.first("PID").unwrap();
        assert_eq!(pid.sequence, 3);
        assert_eq!(pid.component(5, 1).as_deref(), Some("Doe"));
        assert_eq!(pid.repetitions(5)[1].component(7), Some("M"));
        assert_eq!(pid.component(11, 2).as_deref(), Some("Apt 4|B"));
        assert_eq!(
            pid.repetitions(13)[1].component(4),
            Some("jane.doe@example.org")
        );
        assert_eq!(pid.text(30).as_deref(), Some("N"));
        let born = pid.timestamp(7, None).unwrap().unwrap();
        assert_eq!(born.fhir, "1980-02-14");

        assert_eq!(m.all("NK1").count(), 2);
        assert_eq!(
            m.all("AL1").map(|s| s.sequence).collect::<Vec<_>>(),
            [11, 12]
        );
        let pv2 = m.first("PV2").unwrap();
        assert_eq!(
            pv2.component(3, 2).as_deref(),
            Some("Chest pain\nradiating to left arm")
        );
        let evn = m.first("EVN").unwrap();
        assert_eq!(
            evn.timestamp(2, None).unwrap().unwrap().fhir,
            "2024-07-05T14:30:00-04:00"
        );
        let pv1 = m.first("PV1").unwrap();
        assert_eq!(pv1.text(44).as_deref(), Some("20240705142500-0400"));
        assert_eq!(pv1.field(45), None);
        assert!(m.first("ZZZ").is_none());
    }

    #[test]
    fn oru_r01() {
        let m = parse(&ORU_R01.join("\r"));
        assert_eq!(m.segments().len(), 14);
        assert_eq!(m.message_type().as_deref(), Some("ORU"));
        assert_eq!(m.trigger_event().as_deref(), Some("R01"));
        assert_eq!(m.accept_ack_type().as_deref(), Some("NE"));
        assert_eq!(m.application_ack_type().as_deref(), Some("AL"));
        let obx: Vec<_> = m.all("OBX").collect();
        assert_eq!(obx.len(), 7);
        assert_eq!(obx[3].text(5).as_deref(), Some("5.6"));
        assert_eq!(obx[3].text(8).as_deref(), Some("H"));
        assert_eq!(obx[3].component(3, 2).as_deref(), Some("Potassium"));
        // \XE2899B\ is U+225B in UTF-8 bytes, sniffed in an "ASCII" message.
        assert_eq!(obx[5].text(5).as_deref(), Some("\u{225B} 3.5"));
        assert_eq!(
            obx[6].text(5).as_deref(),
            Some("Reviewed by\nDr. Welby & team")
        );
        let nte = m.first("NTE").unwrap();
        assert_eq!(nte.sequence, 12);
        assert_eq!(
            nte.text(3).as_deref(),
            Some("Specimen slightly hemolyzed\nPotassium may be falsely elevated")
        );
        let obr = m.first("OBR").unwrap();
        assert_eq!(
            obr.timestamp(22, None).unwrap().unwrap().fhir,
            "2024-07-06T09:10:00-04:00"
        );
    }

    #[test]
    fn terminators_cr_lf_crlf_and_mixed_agree() {
        let cr = parse(&ADT_A01.join("\r"));
        for sep in ["\n", "\r\n"] {
            assert_eq!(parse(&ADT_A01.join(sep)), cr);
        }
        let mixed: String = ADT_A01
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{s}{}", ["\r", "\n", "\r\n"][i % 3]))
            .collect();
        assert_eq!(parse(&mixed), cr);
        // Trailing blank lines, blank lines between segments, a stray MLLP end byte.
        assert_eq!(
            parse(&format!("{}\r\r\n\r\n  \r\x1c", ADT_A01.join("\r\r"))),
            cr
        );
        // Leading whitespace before MSH.
        assert_eq!(parse(&format!("\r\n \t{}", ADT_A01.join("\r"))), cr);
    }

    #[test]
    fn bom_is_stripped() {
        let text = ADT_A01.join("\r");
        let mut raw = b"\xEF\xBB\xBF".to_vec();
        raw.extend_from_slice(text.as_bytes());
        let m = Message::parse(&raw, None).unwrap();
        assert_eq!(m.segments(), parse(&text).segments());
        assert_eq!(m.charset(), Charset::Utf8);
    }

    #[test]
    fn v27_truncation_character() {
        let m = parse("MSH|^~\\&#|APP|FAC|HEARTH|HF|20240101||ADT^A04|C1|P|2.7\rPID|1||X\\P\\Y");
        let enc = m.encoding();
        assert_eq!(enc.truncation, Some('#'));
        assert_eq!(
            (enc.component, enc.repetition, enc.escape, enc.subcomponent),
            ('^', '~', '\\', '&')
        );
        assert_eq!(enc.msh2(), "^~\\&#");
        assert_eq!(m.msh().text(2).as_deref(), Some("^~\\&#"));
        assert_eq!(m.sending_application().as_deref(), Some("APP"));
        assert_eq!(m.message_type().as_deref(), Some("ADT"));
        assert_eq!(m.control_id().as_deref(), Some("C1"));
        assert_eq!(m.version().as_deref(), Some("2.7"));
        assert_eq!(m.first("PID").unwrap().text(3).as_deref(), Some("X#Y"));
    }

    #[test]
    fn bad_encoding_characters() {
        for raw in [
            "MSH|^~\\|APP",
            "MSH|^~\\",
            "MSH|",
            "MSH",
            "MSH|^~\\&#!|",
            "MSH|^~^&|",
            "MSH|^~|&|",
            "MSHA^~\\&|",
            "MSH|^~\\a|",
            "MSH|^~ &|",
            "MSH\r|^~\\&|",
            "MSH|^~\\é|",
        ] {
            assert_eq!(
                err(raw.as_bytes()),
                Hl7Error::BadEncodingCharacters,
                "{raw:?}"
            );
        }
        assert_eq!(Hl7Error::BadEncodingCharacters.field(), Some(2));
        // Other delimiters are fine when distinct punctuation.
        let m = parse("MSH!@*$%!A!B\rPID!1!!a@b$F$c");
        assert_eq!(
            m.first("PID").unwrap().component(3, 2).as_deref(),
            Some("b!c")
        );
        // MSH-2 up to the end of the line.
        assert_eq!(parse("MSH|^~\\&").msh().field_count(), 2);
    }

    #[test]
    fn not_hl7() {
        for raw in [
            &b""[..],
            b"   ",
            b"PID|1",
            b"xMSH|^~\\&|",
            b"FHS|^~\\&|",
            b"msh|^~\\&|",
        ] {
            assert_eq!(err(raw), Hl7Error::NotHl7, "{raw:?}");
        }
        assert_eq!(Hl7Error::NotHl7.hl7_code(), 100);
    }

    #[test]
    fn malformed_lines_are_rejected_with_their_sequence() {
        let base = "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rEVN|A01\r";
        for (line, sequence) in [
            ("continued free text", 3),
            ("PI", 3),
            ("pid|1", 3),
            ("PIDX|1", 3),
            ("PID 1", 3),
            ("MSH|^~\\&|again", 3),
        ] {
            let e = err(format!("{base}{line}\rPV1|1").as_bytes());
            assert!(
                matches!(e, Hl7Error::BadSegment { sequence: s, .. } if s == sequence),
                "{line:?} gave {e:?}"
            );
            assert_eq!(e.hl7_code(), 100);
            assert_eq!(e.sequence(), Some(sequence));
        }
        // A segment with only its ID is accepted, with no fields.
        let m = parse(&format!("{base}ZXY\rPV1|1"));
        assert_eq!(m.first("ZXY").unwrap().field_count(), 0);
        assert_eq!(m.first("ZXY").unwrap().field(1), None);
    }

    #[test]
    fn repetitions_and_subcomponents() {
        let m = parse(&ADT_A01.join("\r"));
        let pid = m.first("PID").unwrap();
        let ids = pid.repetitions(3);
        assert_eq!(ids.len(), 2);
        assert_eq!(ids[0].component(1), Some("123"));
        assert_eq!(ids[0].component(2), None);
        assert_eq!(ids[0].component(4), Some("HOSP"));
        assert_eq!(ids[0].subcomponent(4, 1), Some("HOSP"));
        assert_eq!(ids[0].subcomponent(4, 2), Some("1.2.3"));
        assert_eq!(ids[0].subcomponent(4, 3), Some("ISO"));
        assert_eq!(ids[0].subcomponent(4, 4), None);
        assert_eq!(ids[0].component(5), Some("MR"));
        assert_eq!(ids[1].component(1), Some("456"));
        assert_eq!(ids[1].component(4), Some("SSA"));
        assert_eq!(ids[1].component(5), Some("SS"));
        assert_eq!(pid.subcomponent(3, 4, 2).as_deref(), Some("1.2.3"));
        assert_eq!(pid.text(3).as_deref(), Some("123"));
        assert_eq!(ids[0].component(0), None);
        assert_eq!(ids[0].subcomponent(4, 0), None);
    }

    #[test]
    fn empty_versus_null() {
        let m = parse("MSH|^~\\&|A\rPID|1||\"\"||^\"\"^x~\"\"|\"\"^\"\"|a&\"\"|\\X2222\\|~|");
        let pid = m.first("PID").unwrap();
        // PID-2: empty; PID-3: ""; PID-4: empty.
        assert_eq!(pid.presence(2), Presence::Absent);
        assert_eq!(pid.field(2), None);
        assert_eq!(pid.presence(3), Presence::Null);
        assert!(pid.field(3).unwrap().is_null());
        assert!(pid.field(3).unwrap().is_empty());
        assert_eq!(pid.text(3), None);
        assert_eq!(pid.repetitions(3).len(), 1);
        assert_eq!(pid.presence(4), Presence::Absent);
        // PID-5: component 2 is "", second repetition is "".
        assert_eq!(pid.presence(5), Presence::Present);
        let reps = pid.repetitions(5);
        assert!(!reps[0].is_null());
        assert!(reps[0].is_component_null(2));
        assert!(!reps[0].is_component_null(1));
        assert!(!reps[0].is_component_null(3));
        assert!(!reps[0].is_component_null(9));
        assert_eq!(reps[0].component(2), None);
        assert_eq!(reps[0].component(3), Some("x"));
        assert!(reps[1].is_null());
        // PID-6: two null components is not a null field.
        assert_eq!(pid.presence(6), Presence::Present);
        assert!(pid.field(6).unwrap().is_empty());
        // PID-7: a null subcomponent reads as empty.
        assert_eq!(pid.subcomponent(7, 1, 2), None);
        assert!(!pid.repetitions(7)[0].is_component_null(1));
        // PID-8: escaped quotes are text.
        assert_eq!(pid.text(8).as_deref(), Some("\"\""));
        assert_eq!(pid.presence(8), Presence::Present);
        // PID-9: two empty repetitions; PID-10: empty and last.
        assert_eq!(pid.repetitions(9).len(), 2);
        assert!(pid.field(9).unwrap().is_empty());
        assert_eq!(pid.field(10), None);
        assert_eq!(pid.field_count(), 10);
    }

    #[test]
    fn missing_trailing_fields() {
        let m = parse("MSH|^~\\&|A\rPID|1");
        let pid = m.first("PID").unwrap();
        assert_eq!(pid.field(40), None);
        assert_eq!(pid.repetitions(40), &[] as &[Repetition]);
        assert_eq!(pid.text(40), None);
        assert_eq!(pid.component(40, 3), None);
        assert_eq!(pid.subcomponent(40, 3, 2), None);
        assert_eq!(pid.presence(40), Presence::Absent);
        assert_eq!(pid.field(0), None);
        assert_eq!(pid.timestamp(40, None), Ok(None));
        assert_eq!(m.message_type(), None);
        assert_eq!(m.control_id(), None);
        assert_eq!(m.msh().field(usize::MAX), None);
        assert_eq!(
            m.check_header(),
            Err(Hl7Error::MissingField {
                segment: "MSH".to_owned(),
                sequence: 1,
                field: 9
            })
        );
    }

    #[test]
    fn latin1_message() {
        let mut raw =
            b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5||||||8859/1\rPID|1||7||Ren\xE9e^Jos\xE9||"
                .to_vec();
        raw.extend_from_slice(b"\rNTE|1||caf\\XE9\\");
        let m = Message::parse(&raw, None).unwrap();
        assert_eq!(m.charset(), Charset::Latin1);
        let pid = m.first("PID").unwrap();
        assert_eq!(pid.component(5, 1).as_deref(), Some("Renée"));
        assert_eq!(pid.component(5, 2).as_deref(), Some("José"));
        assert_eq!(m.first("NTE").unwrap().text(3).as_deref(), Some("café"));
    }

    #[test]
    fn utf8_message_with_hex_escape() {
        let text = "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5||||||UNICODE UTF-8\rPID|1||7||Ren\\XC3A9\\e^José|\rNTE|1||éé\\F\\x";
        let m = parse(text);
        assert_eq!(m.charset(), Charset::Utf8);
        let pid = m.first("PID").unwrap();
        assert_eq!(pid.component(5, 1).as_deref(), Some("Renée"));
        assert_eq!(pid.component(5, 2).as_deref(), Some("José"));
        assert_eq!(m.first("NTE").unwrap().text(3).as_deref(), Some("éé|x"));
    }

    #[test]
    fn charset_errors_point_at_msh18() {
        let e = err(b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5||||||8859/15\rPID|1");
        assert_eq!(e, Hl7Error::Charset("8859/15".to_owned()));
        assert_eq!(
            (e.hl7_code(), e.segment(), e.sequence(), e.field()),
            (103, Some("MSH"), Some(1), Some(18))
        );
        let e = err(b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5||||||UNICODE UTF-8\rPID|1||\xE9");
        assert_eq!(e.hl7_code(), 102);
        assert_eq!(e.field(), Some(18));
    }

    #[test]
    fn errors_carry_err_locations() {
        let m = parse("MSH|^~\\&|A\rPID|1||||||1980021");
        let e = m.first("PID").unwrap().timestamp(7, None).unwrap_err();
        assert_eq!(
            (e.hl7_code(), e.segment(), e.sequence(), e.field()),
            (102, Some("PID"), Some(2), Some(7))
        );
        assert!(
            matches!(&e, Hl7Error::InField { source, .. } if matches!(**source, Hl7Error::BadTimestamp(_)))
        );
        assert!(e.to_string().starts_with("PID-7: bad timestamp"));
        assert_eq!(
            Hl7Error::UnsupportedMessageType("QRY".into()).field(),
            Some(9)
        );
        assert_eq!(Hl7Error::UnsupportedEvent("A99".into()).hl7_code(), 201);
        assert_eq!(
            Hl7Error::UnsupportedProcessingId("X".into()).hl7_code(),
            202
        );
        assert_eq!(Hl7Error::UnsupportedVersion("2.1".into()).field(), Some(12));
        assert_eq!(Hl7Error::Internal("db".into()).hl7_code(), 207);
        assert_eq!(Hl7Error::Internal("db".into()).segment(), None);
        assert_eq!(Hl7Error::MissingTimeZone.hl7_code(), 102);
    }

    /// Bytes that look like HL7: mostly valid headers and segment IDs around field text
    /// full of delimiters, escapes, quotes, stray line breaks and non-ASCII bytes, so
    /// parsing usually goes deep instead of failing on the first line.
    fn hl7ish() -> impl Strategy<Value = Vec<u8>> {
        let bytes = |v: &[u8]| Just(v.to_vec());
        let header = prop_oneof![
            6 => bytes(b"MSH|^~\\&|"),
            2 => bytes(b"MSH|^~\\&#|"),
            1 => bytes(b"\xEF\xBB\xBFMSH|^~\\&|"),
            1 => bytes(b"\r\n MSH|^~\\&"),
            1 => bytes(b"MSH|^~\\|"),
            1 => proptest::collection::vec(any::<u8>(), 0..10).prop_map(|v| [&b"MSH"[..], &v].concat()),
        ];
        let piece = prop_oneof![
            8 => "[A-Za-z0-9 .]{1,6}".prop_map(String::into_bytes),
            3 => bytes(b"|"),
            2 => bytes(b"^"),
            2 => bytes(b"~"),
            2 => bytes(b"&"),
            2 => bytes(b"\\"),
            1 => bytes(b"#"),
            1 => bytes(b"\"\""),
            1 => bytes(b"\\XC3A9\\"),
            1 => bytes(b"\\XE9\\"),
            1 => bytes(b"\\F\\"),
            1 => bytes(b"\\.br\\"),
            1 => bytes(b"UNICODE UTF-8"),
            1 => bytes(b"8859/1"),
            1 => bytes("é".as_bytes()),
            1 => bytes(&[0xE9]),
            1 => proptest::collection::vec(any::<u8>(), 1..4),
        ];
        let terminator = prop_oneof![bytes(b"\r"), bytes(b"\n"), bytes(b"\r\n"), bytes(b"\r\r")];
        let name = prop_oneof![
            30 => "(PID|PV1|OBX|NTE|ZX1|EVN)\\|".prop_map(String::into_bytes),
            1 => bytes(b"MSH|^~\\&"),
            1 => proptest::collection::vec(any::<u8>(), 0..4),
        ];
        let segment = (
            terminator,
            name,
            proptest::collection::vec(piece.clone(), 0..20),
        )
            .prop_map(|(t, n, body)| [t, n, body.concat()].concat());
        (
            header,
            proptest::collection::vec(piece, 0..20),
            proptest::collection::vec(segment, 0..10),
        )
            .prop_map(|(h, msh, segments)| [h, msh.concat(), segments.concat()].concat())
    }

    fn arb_override() -> impl Strategy<Value = Option<Charset>> {
        prop_oneof![
            Just(None),
            Just(Some(Charset::Ascii)),
            Just(Some(Charset::Latin1)),
            Just(Some(Charset::Utf8)),
        ]
    }

    /// Exercises every accessor of a parsed message; it must not panic.
    fn touch_everything(m: &Message) {
        let _ = (
            m.message_type(),
            m.trigger_event(),
            m.control_id(),
            m.version(),
        );
        let _ = (m.charset(), m.encoding().msh2(), m.check_header());
        for s in m.segments() {
            for n in 0..=s.field_count() + 1 {
                let _ = (
                    s.text(n),
                    s.component(n, 2),
                    s.subcomponent(n, 1, 2),
                    s.presence(n),
                );
                let _ = s.timestamp(n, None);
                for r in s.repetitions(n) {
                    let _ = (
                        r.is_empty(),
                        r.is_null(),
                        r.is_component_null(1),
                        r.component(3),
                    );
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..512), cs in arb_override()) {
            if let Ok(m) = Message::parse(&raw, cs) {
                touch_everything(&m);
            }
        }

        #[test]
        fn hl7ish_bytes_never_panic(raw in hl7ish(), cs in arb_override()) {
            if let Ok(m) = Message::parse(&raw, cs) {
                prop_assert_eq!(&m.msh().name, "MSH");
                prop_assert!(m.segments().iter().enumerate().all(|(i, s)| s.sequence == i + 1));
                touch_everything(&m);
            }
        }

        #[test]
        fn terminators_never_change_the_result(raw in hl7ish()) {
            let crlf: Vec<u8> = raw.iter().flat_map(|&b| if b == b'\r' { vec![b'\r', b'\n'] } else { vec![b] }).collect();
            let lf: Vec<u8> = raw.iter().map(|&b| if b == b'\r' { b'\n' } else { b }).collect();
            let reference = Message::parse(&raw, Some(Charset::Latin1));
            // Only when the input had no LF of its own, since an LF would then become CRLF.
            if !raw.contains(&b'\n') {
                prop_assert_eq!(Message::parse(&crlf, Some(Charset::Latin1)), reference.clone());
            }
            prop_assert_eq!(Message::parse(&lf, Some(Charset::Latin1)).ok(), reference.ok());
        }
    }
}
