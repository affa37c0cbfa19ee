//! HL7 v2 DTM/TS values to FHIR `date` / `dateTime` text.
//!
//! `YYYY[MM[DD[HH[MM[SS[.S...]]]]]][+/-ZZZZ]`. A value without a time becomes a FHIR `date`
//! of the same precision (an offset on it is checked and dropped: FHIR dates have none).
//! A value with a time becomes a `dateTime` with seconds (FHIR requires them; missing
//! minutes and seconds are `00`) and an offset: the one sent, else the feed's default time
//! zone, else [`Hl7Error::MissingTimeZone`] so the caller can refuse rather than guess.
//!
//! hl7-parser has a timestamp parser too, but it hands back the parts without a time zone
//! policy; FHIR text needs one, so this is ours (and needs no chrono feature of the crate).
//!
//! Errors describe what is wrong, never the value: timestamps like birth dates are PHI.

use chrono::{
    DateTime, Duration, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset,
    TimeZone,
};
use chrono_tz::Tz;

use super::message::Hl7Error;

/// A parsed HL7 timestamp as FHIR text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hl7Timestamp {
    /// FHIR `date` (`2024`, `2024-03`, `2024-03-10`) or `dateTime`
    /// (`2024-03-10T14:30:00-04:00`, fraction kept as sent).
    pub fhir: String,
    /// Whether the value had a time (so `fhir` is a `dateTime` with an offset).
    pub has_time: bool,
    /// The instant, when the value has a time; for ordering and FHIR `instant` fields.
    pub instant: Option<DateTime<FixedOffset>>,
}

/// Parses a DTM (or the first component of a TS) into FHIR text.
///
/// A local time without an offset is read in `default_tz`, DST-aware: an ambiguous time
/// (the repeated hour when clocks go back) is the earlier of its two instants; a time in
/// the gap when clocks go forward is read with the offset in force just before the gap
/// (what a clock not yet moved forward would show), so `02:30` on a New York spring-forward
/// day is `03:30-04:00`. That is also what PostgreSQL and java.time do.
pub fn parse_timestamp(text: &str, default_tz: Option<Tz>) -> Result<Hl7Timestamp, Hl7Error> {
    let text = text.trim();
    if text.is_empty() {
        return Err(bad("empty"));
    }
    if !text.is_ascii() {
        return Err(bad("not ASCII"));
    }
    // Year digits come first, so a sign can only start the offset.
    let (main, offset) = match text.find(['+', '-']) {
        Some(at) => (&text[..at], Some(&text[at..])),
        None => (text, None),
    };
    let (digits, fraction) = match main.split_once('.') {
        Some((digits, fraction)) => (digits, Some(fraction)),
        None => (main, None),
    };
    if !all_digits(digits) {
        return Err(bad("not digits"));
    }
    if !matches!(digits.len(), 4 | 6 | 8 | 10 | 12 | 14) {
        return Err(bad("wrong length"));
    }
    if let Some(fraction) = fraction {
        if digits.len() != 14 {
            return Err(bad("fraction of a second without seconds"));
        }
        // HL7 allows 4 digits; up to 9 (nanoseconds) are taken because senders do send 6.
        if fraction.is_empty() || fraction.len() > 9 || !all_digits(fraction) {
            return Err(bad("bad fraction of a second"));
        }
    }
    let offset = offset.map(parse_offset).transpose()?;

    let year = number(digits, 0..4)?.ok_or_else(|| bad("wrong length"))?;
    let month = number(digits, 4..6)?;
    let day = number(digits, 6..8)?;
    // FHIR years are 0001-9999.
    if year == 0 {
        return Err(bad("year 0000"));
    }
    let date = NaiveDate::from_ymd_opt(year as i32, month.unwrap_or(1), day.unwrap_or(1))
        .ok_or_else(|| bad("no such date"))?;
    let fhir_date = match (month, day) {
        (None, _) => format!("{year:04}"),
        (Some(month), None) => format!("{year:04}-{month:02}"),
        (Some(_), Some(_)) => date.format("%Y-%m-%d").to_string(),
    };
    let Some(hour) = number(digits, 8..10)? else {
        return Ok(Hl7Timestamp {
            fhir: fhir_date,
            has_time: false,
            instant: None,
        });
    };
    let minute = number(digits, 10..12)?.unwrap_or(0);
    let second = number(digits, 12..14)?.unwrap_or(0);
    let nanos = match fraction {
        // Right-pad to 9 digits: ".5" is 500 ms.
        Some(f) => format!("{f:0<9}")
            .parse::<u32>()
            .map_err(|_| bad("bad fraction"))?,
        None => 0,
    };
    let time = NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)
        .filter(|_| second < 60)
        .ok_or_else(|| bad("time out of range"))?;
    let local = NaiveDateTime::new(date, time);

    let instant = match (offset, default_tz) {
        (Some(offset), _) => offset
            .from_local_datetime(&local)
            .single()
            .ok_or_else(|| bad("time out of range"))?,
        (None, Some(tz)) => resolve_local(local, tz).ok_or_else(|| bad("time out of range"))?,
        (None, None) => return Err(Hl7Error::MissingTimeZone),
    };
    let fraction = fraction.map(|f| format!(".{f}")).unwrap_or_default();
    let fhir = format!(
        "{}{fraction}{}",
        instant.format("%Y-%m-%dT%H:%M:%S"),
        format_offset(instant.offset())
    );
    Ok(Hl7Timestamp {
        fhir,
        has_time: true,
        instant: Some(instant),
    })
}

fn bad(reason: &str) -> Hl7Error {
    Hl7Error::BadTimestamp(reason.to_owned())
}

fn all_digits(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_digit())
}

/// The number at `range` of `digits`, `None` when the value is shorter.
fn number(digits: &str, range: std::ops::Range<usize>) -> Result<Option<u32>, Hl7Error> {
    match digits.get(range) {
        None => Ok(None),
        Some(part) => part.parse().map(Some).map_err(|_| bad("not digits")),
    }
}

/// `+HHMM` / `-HHMM`, within FHIR's range (up to 14:00 either way).
fn parse_offset(text: &str) -> Result<FixedOffset, Hl7Error> {
    let (sign, rest) = text.split_at_checked(1).ok_or_else(|| bad("bad offset"))?;
    if rest.len() != 4 || !all_digits(rest) {
        return Err(bad("bad offset"));
    }
    let hours = number(rest, 0..2)?.unwrap_or(0);
    let minutes = number(rest, 2..4)?.unwrap_or(0);
    if minutes > 59 || hours > 14 || (hours == 14 && minutes > 0) {
        return Err(bad("offset out of range"));
    }
    let seconds = (hours * 3600 + minutes * 60) as i32;
    let seconds = if sign == "-" { -seconds } else { seconds };
    FixedOffset::east_opt(seconds).ok_or_else(|| bad("offset out of range"))
}

/// A local time in `tz` as an instant; see [`parse_timestamp`] for gaps and overlaps.
fn resolve_local(local: NaiveDateTime, tz: Tz) -> Option<DateTime<FixedOffset>> {
    let resolved = match tz.from_local_datetime(&local) {
        LocalResult::Single(dt) => dt,
        LocalResult::Ambiguous(a, b) => a.min(b),
        LocalResult::None => {
            // Walk back to a local time that exists; its offset is the one before the gap.
            // Gaps are an hour or less today; 48 h covers whole skipped days (Samoa 2011).
            let before = (1..=192).find_map(|k| {
                let earlier = local.checked_sub_signed(Duration::minutes(15 * k))?;
                tz.from_local_datetime(&earlier).latest()
            })?;
            let offset = before.offset().fix();
            let utc =
                local.checked_sub_signed(Duration::seconds(offset.local_minus_utc().into()))?;
            tz.from_utc_datetime(&utc)
        }
    };
    // FHIR offsets have no seconds; historical LMT offsets do (New York -04:56:02 before
    // 1883). Use the whole-minute offset so the text and the instant stay the same moment.
    let seconds = resolved.offset().fix().local_minus_utc();
    let whole_minutes = FixedOffset::east_opt(seconds - seconds % 60)?;
    Some(resolved.with_timezone(&whole_minutes))
}

fn format_offset(offset: &FixedOffset) -> String {
    let seconds = offset.local_minus_utc();
    let sign = if seconds < 0 { '-' } else { '+' };
    let minutes = seconds.unsigned_abs() / 60;
    format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NY: Tz = chrono_tz::America::New_York;

    fn fhir(text: &str, tz: Option<Tz>) -> String {
        match parse_timestamp(text, tz) {
            Ok(ts) => ts.fhir,
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn dates_keep_their_precision() {
        assert_eq!(fhir("2024", None), "2024");
        assert_eq!(fhir("202403", None), "2024-03");
        assert_eq!(fhir("20240310", None), "2024-03-10");
        assert_eq!(fhir(" 20240310 ", None), "2024-03-10");
        // An offset on a date is checked and dropped.
        assert_eq!(fhir("20240310-0500", None), "2024-03-10");
        let ts = parse_timestamp("20240229", None).unwrap();
        assert!(!ts.has_time);
        assert_eq!(ts.instant, None);
    }

    #[test]
    fn times_with_offsets() {
        assert_eq!(fhir("202403101430-0500", None), "2024-03-10T14:30:00-05:00");
        assert_eq!(fhir("2024031014-0500", None), "2024-03-10T14:00:00-05:00");
        assert_eq!(
            fhir("20240310143015+0530", None),
            "2024-03-10T14:30:15+05:30"
        );
        assert_eq!(
            fhir("20240310143015.1234+0000", None),
            "2024-03-10T14:30:15.1234+00:00"
        );
        assert_eq!(
            fhir("20240310143015.123456-0000", None),
            "2024-03-10T14:30:15.123456+00:00"
        );
        assert_eq!(
            fhir("20240310143015+1400", None),
            "2024-03-10T14:30:15+14:00"
        );
        let ts = parse_timestamp("20240310143015.5+0100", None).unwrap();
        assert!(ts.has_time);
        let instant = ts.instant.unwrap();
        assert_eq!(instant.timestamp_subsec_millis(), 500);
        assert_eq!(instant.to_rfc3339(), "2024-03-10T14:30:15.500+01:00");
    }

    #[test]
    fn times_without_offset_need_a_zone() {
        assert_eq!(
            parse_timestamp("202407041200", None),
            Err(Hl7Error::MissingTimeZone)
        );
        assert_eq!(fhir("202407041200", Some(NY)), "2024-07-04T12:00:00-04:00");
        assert_eq!(fhir("202401041200", Some(NY)), "2024-01-04T12:00:00-05:00");
        assert_eq!(
            fhir("20240104120001.25", Some(NY)),
            "2024-01-04T12:00:01.25-05:00"
        );
        // A date needs no zone.
        assert_eq!(fhir("20240704", None), "2024-07-04");
    }

    #[test]
    fn dst_gap_and_overlap() {
        // 2024-03-10 02:30 does not exist in New York: read with the EST offset.
        assert_eq!(
            fhir("20240310023000", Some(NY)),
            "2024-03-10T03:30:00-04:00"
        );
        assert_eq!(fhir("202403100200", Some(NY)), "2024-03-10T03:00:00-04:00");
        // 2024-11-03 01:30 happens twice: the first (EDT) one.
        assert_eq!(
            fhir("20241103013000", Some(NY)),
            "2024-11-03T01:30:00-04:00"
        );
        // Just outside the transitions.
        assert_eq!(
            fhir("20240310015959", Some(NY)),
            "2024-03-10T01:59:59-05:00"
        );
        assert_eq!(
            fhir("20241103020000", Some(NY)),
            "2024-11-03T02:00:00-05:00"
        );
        // Samoa skipped 2011-12-30 entirely.
        let apia: Tz = chrono_tz::Pacific::Apia;
        assert_eq!(
            fhir("201112301200", Some(apia)),
            "2011-12-31T12:00:00+14:00"
        );
    }

    #[test]
    fn historical_offsets_with_seconds_become_whole_minutes() {
        let ts = parse_timestamp("187001011200", Some(NY)).unwrap();
        assert_eq!(ts.fhir, "1870-01-01T12:00:02-04:56");
    }

    #[test]
    fn ranges_are_validated() {
        for bad in [
            "",
            "20241",
            "2024133",
            "20241301",
            "20240230",
            "20230229",
            "00000101",
            "2024031024-0500",
            "202403101260-0500",
            "20240310125960-0500",
            "20240310125959.-0500",
            "20240310125959.1234567890-0500",
            "202403101259.5-0500",
            "20240310-05",
            "20240310+1401",
            "20240310+1260",
            "20240310+05:00",
            "2024-03-10",
            "20240310T1200",
            "2024031012００",
            "abcd",
            "+0500",
            "20240310^S",
        ] {
            let result = parse_timestamp(bad, Some(NY));
            assert!(
                matches!(result, Err(Hl7Error::BadTimestamp(_))),
                "{bad:?} gave {result:?}"
            );
        }
    }

    #[test]
    fn errors_do_not_contain_the_value() {
        let Err(e) = parse_timestamp("19801341", None) else {
            panic!("accepted")
        };
        assert!(!e.to_string().contains("1980"));
        assert_eq!(e.hl7_code(), 102);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn never_panics(s in "[0-9+.\\- ]{0,24}|\\PC{0,24}") {
            let _ = parse_timestamp(&s, Some(NY));
            let _ = parse_timestamp(&s, None);
        }

        #[test]
        fn valid_timestamps_round_trip_through_the_instant(
            secs in -2_000_000_000i64..4_000_000_000i64,
            offset_minutes in -719i32..=840,
        ) {
            let offset = FixedOffset::east_opt(offset_minutes * 60).unwrap();
            let dt = DateTime::from_timestamp(secs, 0).unwrap().with_timezone(&offset);
            let sign = if offset_minutes < 0 { '-' } else { '+' };
            let abs = offset_minutes.unsigned_abs();
            let hl7 = format!("{}{sign}{:02}{:02}", dt.format("%Y%m%d%H%M%S"), abs / 60, abs % 60);
            let ts = parse_timestamp(&hl7, None).unwrap();
            prop_assert_eq!(ts.instant, Some(dt));
            prop_assert_eq!(ts.fhir, dt.format("%Y-%m-%dT%H:%M:%S%:z").to_string());
        }
    }
}
