//! Character sets of HL7 v2 messages (MSH-18) and turning wire bytes into text.
//!
//! HL7 v2 is a byte protocol: MSH-18 names the character set, and an empty MSH-18 means
//! ASCII. In practice senders put accented names into "ASCII" messages in whatever their
//! system uses, so the rule here is:
//!
//! 1. A feed override (`override_`) wins and is strict: `Utf8` must be valid UTF-8, `Ascii`
//!    must be 7-bit, `Latin1` accepts any byte. MSH-18 is then not consulted at all, so a
//!    feed known to lie in MSH-18 can be fixed in configuration.
//! 2. A UTF-8 byte order mark means UTF-8 (strict), whatever MSH-18 says: a sender that
//!    writes a BOM is writing UTF-8. The BOM itself is always removed.
//! 3. MSH-18 `UNICODE UTF-8` (or an alias) means strict UTF-8; `8859/1` (or an alias) means
//!    ISO-8859-1. A declared name we do not support is an error (table 0211, code 103),
//!    because guessing would silently corrupt names.
//! 4. MSH-18 empty or `ASCII`: all bytes 7-bit gives [`Charset::Ascii`]; otherwise valid
//!    UTF-8 gives [`Charset::Utf8`], anything else [`Charset::Latin1`]. Real Latin-1 text
//!    is almost never valid UTF-8 (an accented letter followed by a plain one is not), so
//!    this sniff is safe in the direction that matters.
//!
//! The charset returned is the one the bytes were decoded with, not the declared one; it
//! is also the charset that `\Xhh\` escapes are read in.
//!
//! ISO-8859-1 is decoded strictly (byte n is U+00nn), not as windows-1252: HL7 names
//! 8859/1, and a feed that really sends cp1252 punctuation gets control characters rather
//! than a guess. No `encoding_rs` dependency is needed for this.

use std::fmt;

use super::message::Hl7Error;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// A character set this layer can decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Charset {
    /// 7-bit ASCII: MSH-18 `ASCII` or empty.
    Ascii,
    /// ISO-8859-1: MSH-18 `8859/1`.
    Latin1,
    /// UTF-8: MSH-18 `UNICODE UTF-8`.
    Utf8,
}

impl Charset {
    /// The charset an MSH-18 value names (HL7 table 0211 and common aliases), or `None`
    /// when it is not one we support. Case and surrounding spaces are ignored.
    pub fn from_hl7_name(name: &str) -> Option<Charset> {
        let upper = name.trim().to_ascii_uppercase();
        match upper.as_str() {
            "ASCII" | "US-ASCII" => Some(Charset::Ascii),
            "8859/1" | "8859-1" | "ISO-8859-1" | "ISO8859-1" | "ISO_8859-1" | "ISO_IR 100"
            | "ISO-IR 100" | "ISO IR100" | "LATIN1" | "LATIN-1" => Some(Charset::Latin1),
            "UNICODE UTF-8" | "UNICODE UTF8" | "UTF-8" | "UTF8" | "ISO_IR 192" => {
                Some(Charset::Utf8)
            }
            _ => None,
        }
    }

    /// The HL7 table 0211 code, for writing MSH-18 of a reply.
    pub fn hl7_name(self) -> &'static str {
        match self {
            Charset::Ascii => "ASCII",
            Charset::Latin1 => "8859/1",
            Charset::Utf8 => "UNICODE UTF-8",
        }
    }
}

impl fmt::Display for Charset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hl7_name())
    }
}

/// Decodes a message's bytes into text, following the rules in the module docs.
///
/// Returns the text (without a BOM) and the charset it was decoded with.
pub fn decode_bytes(raw: &[u8], override_: Option<Charset>) -> Result<(String, Charset), Hl7Error> {
    let (body, bom_len) = match raw.strip_prefix(UTF8_BOM) {
        Some(rest) => (rest, UTF8_BOM.len()),
        None => (raw, 0),
    };
    if bom_len == 0 && (raw.starts_with(b"\xFF\xFE") || raw.starts_with(b"\xFE\xFF")) {
        return Err(Hl7Error::Charset("UTF-16".to_owned()));
    }
    if let Some(charset) = override_ {
        return decode_strict(body, charset, bom_len).map(|text| (text, charset));
    }
    if bom_len > 0 {
        return decode_strict(body, Charset::Utf8, bom_len).map(|text| (text, Charset::Utf8));
    }
    match declared_charset(body)? {
        Some(Charset::Utf8) => decode_strict(body, Charset::Utf8, 0).map(|t| (t, Charset::Utf8)),
        Some(Charset::Latin1) => Ok((latin1(body), Charset::Latin1)),
        Some(Charset::Ascii) | None => Ok(sniff(body)),
    }
}

/// Encodes text for the wire in `charset`; a character the charset cannot hold becomes `?`
/// (a reply must still go out, and the replaced text is only ever our own error text).
pub fn encode_bytes(text: &str, charset: Charset) -> Vec<u8> {
    match charset {
        Charset::Utf8 => text.as_bytes().to_vec(),
        Charset::Latin1 => text
            .chars()
            .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
            .collect(),
        Charset::Ascii => text
            .chars()
            .map(|c| if c.is_ascii() { c as u8 } else { b'?' })
            .collect(),
    }
}

/// Text of the bytes of a `\Xhh..\` escape, read in the message charset; `None` when the
/// bytes are not valid in it (the caller then keeps the escape literally).
pub(crate) fn bytes_to_text(bytes: &[u8], charset: Charset) -> Option<String> {
    match charset {
        Charset::Utf8 => String::from_utf8(bytes.to_vec()).ok(),
        Charset::Latin1 => Some(latin1(bytes)),
        // Same sniff as for a whole "ASCII" message, so escapes agree with the text.
        Charset::Ascii => Some(sniff(bytes).0),
    }
}

fn decode_strict(body: &[u8], charset: Charset, bom_len: usize) -> Result<String, Hl7Error> {
    match charset {
        Charset::Latin1 => Ok(latin1(body)),
        Charset::Ascii => match body.iter().position(|b| !b.is_ascii()) {
            Some(at) => Err(Hl7Error::InvalidBytes {
                charset,
                offset: at + bom_len,
            }),
            None => Ok(latin1(body)),
        },
        Charset::Utf8 => match std::str::from_utf8(body) {
            Ok(text) => Ok(text.to_owned()),
            Err(e) => Err(Hl7Error::InvalidBytes {
                charset,
                offset: e.valid_up_to() + bom_len,
            }),
        },
    }
}

fn sniff(body: &[u8]) -> (String, Charset) {
    if body.is_ascii() {
        return (latin1(body), Charset::Ascii);
    }
    match std::str::from_utf8(body) {
        Ok(text) => (text.to_owned(), Charset::Utf8),
        Err(_) => (latin1(body), Charset::Latin1),
    }
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// MSH-18 (first repetition) read from the raw bytes, before any decoding: the delimiters
/// are ASCII, so the header can be split as bytes whatever the charset.
///
/// `Ok(None)` when there is no MSH or MSH-18 is empty (message parsing reports a missing
/// MSH itself); `Err` when MSH-18 names a charset we do not support.
fn declared_charset(body: &[u8]) -> Result<Option<Charset>, Hl7Error> {
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(body.len());
    let Some(header) = body.get(start..) else {
        return Ok(None);
    };
    let line_end = header
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(header.len());
    let line = &header[..line_end];
    let (Some(b"MSH"), Some(&field_sep)) = (line.get(..3), line.get(3)) else {
        return Ok(None);
    };
    if !field_sep.is_ascii_punctuation() {
        return Ok(None);
    }
    let mut parts = line.split(|&b| b == field_sep);
    // parts: "MSH", MSH-2, MSH-3, ...; MSH-18 is the 18th part.
    let encoding_chars = parts.nth(1).unwrap_or_default();
    let Some(msh18) = parts.nth(15) else {
        return Ok(None);
    };
    let first_repetition = match encoding_chars.get(1) {
        Some(&rep) => msh18.split(|&b| b == rep).next().unwrap_or_default(),
        None => msh18,
    };
    let Ok(name) = std::str::from_utf8(first_repetition) else {
        return Err(Hl7Error::Charset("(non-ASCII name)".to_owned()));
    };
    let name = name.trim();
    if name.is_empty() {
        return Ok(None);
    }
    match Charset::from_hl7_name(name) {
        Some(charset) => Ok(Some(charset)),
        // The name is a table code, not patient data; cap it so an error stays small.
        None => Err(Hl7Error::Charset(name.chars().take(32).collect())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msh18(value: &str) -> Vec<u8> {
        format!("MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5||||||{value}\rPID|1\r").into_bytes()
    }

    #[test]
    fn names_and_aliases() {
        for name in ["ASCII", " ascii "] {
            assert_eq!(Charset::from_hl7_name(name), Some(Charset::Ascii));
        }
        for name in ["8859/1", "ISO-8859-1", "ISO_IR 100", "latin1"] {
            assert_eq!(Charset::from_hl7_name(name), Some(Charset::Latin1));
        }
        for name in ["UNICODE UTF-8", "UTF-8", "UTF8", "utf-8"] {
            assert_eq!(Charset::from_hl7_name(name), Some(Charset::Utf8));
        }
        assert_eq!(Charset::from_hl7_name("8859/2"), None);
        assert_eq!(Charset::from_hl7_name("UNICODE"), None);
    }

    #[test]
    fn declared_charset_is_read_from_msh18() {
        assert_eq!(
            declared_charset(&msh18("8859/1")),
            Ok(Some(Charset::Latin1))
        );
        assert_eq!(
            declared_charset(&msh18("UNICODE UTF-8~8859/1")),
            Ok(Some(Charset::Utf8))
        );
        assert_eq!(declared_charset(&msh18("")), Ok(None));
        assert_eq!(declared_charset(b"MSH|^~\\&|A\r"), Ok(None));
        assert_eq!(declared_charset(b"PID|1"), Ok(None));
        assert_eq!(declared_charset(b""), Ok(None));
        assert_eq!(
            declared_charset(&msh18("ISO IR87")),
            Err(Hl7Error::Charset("ISO IR87".to_owned()))
        );
    }

    #[test]
    fn latin1_declared_decodes_each_byte() {
        let mut raw = msh18("8859/1");
        raw.extend_from_slice(b"PID|1||||Ren\xE9\r");
        let (text, cs) = decode_bytes(&raw, None).unwrap();
        assert_eq!(cs, Charset::Latin1);
        assert!(text.contains("René"));
    }

    #[test]
    fn undeclared_non_ascii_is_sniffed() {
        let utf8 = "MSH|^~\\&|A\rPID|1||||René\r".as_bytes();
        assert_eq!(decode_bytes(utf8, None).unwrap().1, Charset::Utf8);
        let latin = b"MSH|^~\\&|A\rPID|1||||Ren\xE9\r";
        let (text, cs) = decode_bytes(latin, None).unwrap();
        assert_eq!(cs, Charset::Latin1);
        assert!(text.contains("René"));
        assert_eq!(
            decode_bytes(b"MSH|^~\\&|A\r", None).unwrap().1,
            Charset::Ascii
        );
    }

    #[test]
    fn declared_utf8_must_be_valid() {
        let mut raw = msh18("UNICODE UTF-8");
        let at = raw.len();
        raw.extend_from_slice(b"\xE9x");
        assert_eq!(
            decode_bytes(&raw, None),
            Err(Hl7Error::InvalidBytes {
                charset: Charset::Utf8,
                offset: at
            })
        );
    }

    #[test]
    fn override_wins_and_is_strict() {
        let raw = msh18("UNICODE UTF-8");
        let mut latin = raw.clone();
        latin.push(0xE9);
        let (text, cs) = decode_bytes(&latin, Some(Charset::Latin1)).unwrap();
        assert_eq!(cs, Charset::Latin1);
        assert!(text.ends_with('é'));
        assert!(matches!(
            decode_bytes(&latin, Some(Charset::Ascii)),
            Err(Hl7Error::InvalidBytes {
                charset: Charset::Ascii,
                ..
            })
        ));
        // An unsupported MSH-18 is not consulted when the feed says what it sends.
        assert!(decode_bytes(&msh18("8859/2"), Some(Charset::Utf8)).is_ok());
        assert!(decode_bytes(&msh18("8859/2"), None).is_err());
    }

    #[test]
    fn bom_is_stripped_and_means_utf8() {
        let mut raw = UTF8_BOM.to_vec();
        raw.extend_from_slice(&msh18("8859/1"));
        raw.extend_from_slice("é".as_bytes());
        let (text, cs) = decode_bytes(&raw, None).unwrap();
        assert_eq!(cs, Charset::Utf8);
        assert!(text.starts_with("MSH|"));
        assert!(text.ends_with('é'));
        assert!(decode_bytes(b"\xFF\xFEM\0S\0H\0", None).is_err());
    }

    #[test]
    fn encode_bytes_replaces_what_cannot_be_held() {
        assert_eq!(encode_bytes("é€", Charset::Latin1), vec![0xE9, b'?']);
        assert_eq!(encode_bytes("é", Charset::Ascii), b"?".to_vec());
        assert_eq!(encode_bytes("é", Charset::Utf8), "é".as_bytes().to_vec());
    }
}
