//! HL7 v2 escape sequences (`\F\`, `\X0D\`, `\.br\`, ...), decoded and encoded by us.
//!
//! hl7-parser has a decoder, but it slices strings by character index as if they were byte
//! offsets: non-ASCII text before an escape gives wrong output or a panic (`"éé\F\x"`).
//! This one works on byte offsets returned by `find`, so every slice is on a character
//! boundary, and it never fails: whatever it does not understand is kept as sent.

use super::charset::{self, Charset};
use super::message::Encoding;

/// Upper bound for the count in `\.sp n\` and `\.sk n\`, so a hostile count cannot make
/// the decoded text huge.
const MAX_FORMAT_REPEAT: usize = 20;

/// Decodes the escape sequences of one subcomponent's text.
///
/// - `\F\ \S\ \T\ \R\ \E\` give the field, component, subcomponent, repetition and escape
///   characters; `\P\` the v2.7 truncation character when the message defines one.
/// - `\Xhh..\` gives the bytes `hh..` read in `charset` (so `\XC3A9\` in UTF-8 and `\XE9\`
///   in 8859/1 are both "é").
/// - Formatting (FT data): `\.br\` and `\.ce\` give a line break, `\.sp n\` n line breaks,
///   `\.sk n\` n spaces; `\.fi\ \.nf\ \.in n\ \.ti n\` are dropped.
/// - `\H\ \N\` (highlighting) and `\Cxxyy\ \Mxxyyzz\` (character set switches) are dropped,
///   the text around them kept.
/// - Anything else, an unterminated escape, or `\X\` with bad hex is kept literally.
pub fn decode_escapes(text: &str, enc: &Encoding, charset: Charset) -> String {
    let esc = enc.escape;
    if !text.contains(esc) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(esc) {
        out.push_str(&rest[..start]);
        let after = &rest[start + esc.len_utf8()..];
        let Some(end) = after.find(esc) else {
            out.push_str(&rest[start..]);
            return out;
        };
        let sequence = &after[..end];
        if !decode_one(sequence, enc, charset, &mut out) {
            out.push(esc);
            out.push_str(sequence);
            out.push(esc);
        }
        rest = &after[end + esc.len_utf8()..];
    }
    out.push_str(rest);
    out
}

/// Escapes text for writing into a field (of an ACK or ERR): the delimiters and the escape
/// character become `\F\ \S\ \T\ \R\ \E\` (`\P\` for the truncation character), and CR/LF
/// become `\X0D\`/`\X0A\` because a raw one would end the segment.
///
/// `decode_escapes(&encode_text(s, enc), enc, any_charset) == s` for every string `s`.
pub fn encode_text(text: &str, enc: &Encoding) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let code = if c == enc.escape {
            "E"
        } else if c == enc.field {
            "F"
        } else if c == enc.component {
            "S"
        } else if c == enc.subcomponent {
            "T"
        } else if c == enc.repetition {
            "R"
        } else if Some(c) == enc.truncation {
            "P"
        } else if c == '\r' {
            "X0D"
        } else if c == '\n' {
            "X0A"
        } else {
            out.push(c);
            continue;
        };
        out.push(enc.escape);
        out.push_str(code);
        out.push(enc.escape);
    }
    out
}

/// Appends the meaning of one escape sequence (the text between the escape characters);
/// `false` when it is not one we understand.
fn decode_one(sequence: &str, enc: &Encoding, charset: Charset, out: &mut String) -> bool {
    let replacement = match sequence {
        "F" => Some(enc.field),
        "S" => Some(enc.component),
        "T" => Some(enc.subcomponent),
        "R" => Some(enc.repetition),
        "E" => Some(enc.escape),
        "P" => match enc.truncation {
            Some(t) => Some(t),
            None => return false,
        },
        "H" | "N" => return true,
        _ => None,
    };
    if let Some(c) = replacement {
        out.push(c);
        return true;
    }
    if let Some(hex) = sequence.strip_prefix('X') {
        return match hex_bytes(hex).and_then(|b| charset::bytes_to_text(&b, charset)) {
            Some(text) => {
                out.push_str(&text);
                true
            }
            None => false,
        };
    }
    if let Some(hex) = sequence.strip_prefix('C') {
        return hex.len() == 4 && is_hex(hex);
    }
    if let Some(hex) = sequence.strip_prefix('M') {
        return (hex.len() == 4 || hex.len() == 6) && is_hex(hex);
    }
    if let Some(command) = sequence.strip_prefix('.') {
        return format_command(command, out);
    }
    false
}

/// FT formatting commands. Case-insensitive: senders write `\.BR\` too.
fn format_command(command: &str, out: &mut String) -> bool {
    let name = command.get(..2).map(str::to_ascii_lowercase);
    let Some(name) = name else {
        return false;
    };
    let Some(arg) = command.get(2..).and_then(format_argument) else {
        return false;
    };
    let count = |default: usize| arg.map_or(default, |n| n.unsigned_abs() as usize);
    match name.as_str() {
        "br" | "ce" if arg.is_none() => out.push('\n'),
        "sp" => out.push_str(&"\n".repeat(count(1).clamp(1, MAX_FORMAT_REPEAT))),
        "sk" => out.push_str(&" ".repeat(count(1).min(MAX_FORMAT_REPEAT))),
        "fi" | "nf" if arg.is_none() => {}
        "in" | "ti" => {}
        _ => return false,
    }
    true
}

/// The optional signed number after a formatting command: `Some(None)` when there is
/// none, `None` when the text is not a number.
fn format_argument(arg: &str) -> Option<Option<i64>> {
    let arg = arg.trim();
    if arg.is_empty() {
        return Some(None);
    }
    let digits = arg.strip_prefix(['+', '-']).unwrap_or(arg);
    if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    arg.parse().ok().map(Some)
}

fn is_hex(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_hexdigit())
}

fn hex_bytes(hex: &str) -> Option<Vec<u8>> {
    if hex.is_empty() || !hex.len().is_multiple_of(2) || !is_hex(hex) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dec(text: &str) -> String {
        decode_escapes(text, &Encoding::default(), Charset::Utf8)
    }

    #[test]
    fn delimiter_escapes() {
        assert_eq!(dec(r"a\F\b\S\c\T\d\R\e\E\f"), r"a|b^c&d~e\f");
        assert_eq!(dec(r"\F\\F\"), "||");
        assert_eq!(dec("plain"), "plain");
    }

    #[test]
    fn formatting() {
        assert_eq!(dec(r"line1\.br\line2"), "line1\nline2");
        assert_eq!(dec(r"a\.BR\b"), "a\nb");
        assert_eq!(dec(r"a\.sp 2\b"), "a\n\nb");
        assert_eq!(dec(r"a\.sp\b"), "a\nb");
        assert_eq!(dec(r"a\.sk 3\b"), "a   b");
        assert_eq!(dec(r"\.in +4\a\.fi\"), "a");
        assert_eq!(dec(r"\.sp 999999\"), "\n".repeat(MAX_FORMAT_REPEAT));
        assert_eq!(dec(r"\.sp x\"), r"\.sp x\");
        assert_eq!(dec(r"\H\bold\N\ text"), "bold text");
    }

    #[test]
    fn hex_in_the_message_charset() {
        let enc = Encoding::default();
        assert_eq!(decode_escapes(r"Ren\XC3A9\", &enc, Charset::Utf8), "René");
        assert_eq!(decode_escapes(r"Ren\XE9\", &enc, Charset::Latin1), "René");
        assert_eq!(decode_escapes(r"Ren\XC3A9\", &enc, Charset::Ascii), "René");
        assert_eq!(decode_escapes(r"Ren\XE9\", &enc, Charset::Ascii), "René");
        assert_eq!(decode_escapes(r"\X0D0A\", &enc, Charset::Utf8), "\r\n");
        // Not valid UTF-8, odd length, not hex, empty: kept as sent.
        assert_eq!(decode_escapes(r"\XE9\", &enc, Charset::Utf8), r"\XE9\");
        assert_eq!(dec(r"\XC3A\"), r"\XC3A\");
        assert_eq!(dec(r"\XZZ\"), r"\XZZ\");
        assert_eq!(dec(r"\X\"), r"\X\");
    }

    #[test]
    fn charset_switches_are_dropped() {
        assert_eq!(dec(r"a\C2842\b\M2442\c\M244230\d"), "abcd");
        assert_eq!(dec(r"\C28\"), r"\C28\");
    }

    #[test]
    fn unknown_and_unterminated_are_kept() {
        assert_eq!(dec(r"C:\dir\file"), r"C:\dir\file");
        assert_eq!(dec(r"\Zlocal\"), r"\Zlocal\");
        assert_eq!(dec(r"50\% off"), r"50\% off");
        assert_eq!(dec("trailing\\"), "trailing\\");
        assert_eq!(dec(r"\P\"), r"\P\");
        assert_eq!(dec(r"\\"), r"\\");
    }

    #[test]
    fn truncation_escape_when_defined() {
        let enc = Encoding {
            truncation: Some('#'),
            ..Encoding::default()
        };
        assert_eq!(decode_escapes(r"a\P\b", &enc, Charset::Ascii), "a#b");
        assert_eq!(encode_text("a#b", &enc), r"a\P\b");
    }

    #[test]
    fn non_ascii_before_escape_does_not_break() {
        // hl7-parser 0.3 panics on this one.
        assert_eq!(dec(r"éé\F\x"), "éé|x");
        assert_eq!(dec(r"日本\S\語\XC3A9\"), "日本^語é");
    }

    #[test]
    fn other_delimiters() {
        let enc = Encoding {
            field: '!',
            component: '@',
            repetition: '*',
            escape: '$',
            subcomponent: '%',
            truncation: None,
        };
        assert_eq!(
            decode_escapes("a$F$b$E$c\\F\\", &enc, Charset::Ascii),
            "a!b$c\\F\\"
        );
        assert_eq!(encode_text("a!b$c|", &enc), "a$F$b$E$c|");
    }

    #[test]
    fn encode_text_escapes_delimiters_and_line_breaks() {
        let enc = Encoding::default();
        assert_eq!(
            encode_text("a|b^c&d~e\\f\r\ng", &enc),
            r"a\F\b\S\c\T\d\R\e\E\f\X0D\\X0A\g"
        );
        assert_eq!(encode_text("é", &enc), "é");
    }

    fn arb_encoding() -> impl Strategy<Value = Encoding> {
        let punct: Vec<char> = (0x21u8..0x7f)
            .map(char::from)
            .filter(char::is_ascii_punctuation)
            .collect();
        (
            proptest::sample::subsequence(punct, 6).prop_shuffle(),
            any::<bool>(),
        )
            .prop_map(|(chars, with_truncation)| Encoding {
                field: chars[0],
                component: chars[1],
                repetition: chars[2],
                escape: chars[3],
                subcomponent: chars[4],
                truncation: with_truncation.then_some(chars[5]),
            })
    }

    fn arb_charset() -> impl Strategy<Value = Charset> {
        prop_oneof![
            Just(Charset::Ascii),
            Just(Charset::Latin1),
            Just(Charset::Utf8)
        ]
    }

    /// Text rich in escape characters and the letters escape codes use.
    fn escape_heavy() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just("\\".to_owned()),
                Just("X".to_owned()),
                Just(".br".to_owned()),
                Just(".sp".to_owned()),
                "[FSTREHNPCMZ0-9A-Fa-f .+-]",
                any::<char>().prop_map(String::from),
            ],
            0..40,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn decode_never_panics_on_any_string(s in any::<String>(), enc in arb_encoding(), cs in arb_charset()) {
            let _ = decode_escapes(&s, &enc, cs);
            let _ = decode_escapes(&s, &Encoding::default(), cs);
        }

        #[test]
        fn decode_never_panics_on_escape_heavy_text(s in escape_heavy(), cs in arb_charset()) {
            let _ = decode_escapes(&s, &Encoding::default(), cs);
        }

        #[test]
        fn encode_then_decode_round_trips(s in any::<String>(), enc in arb_encoding(), cs in arb_charset()) {
            prop_assert_eq!(decode_escapes(&encode_text(&s, &enc), &enc, cs), s.clone());
            let def = Encoding::default();
            prop_assert_eq!(decode_escapes(&encode_text(&s, &def), &def, cs), s);
        }

        #[test]
        fn encoded_text_has_no_delimiters_or_line_breaks(s in any::<String>(), enc in arb_encoding()) {
            let encoded = encode_text(&s, &enc);
            for c in [enc.field, enc.component, enc.repetition, enc.subcomponent, '\r', '\n'] {
                prop_assert!(!encoded.contains(c));
            }
        }
    }
}
