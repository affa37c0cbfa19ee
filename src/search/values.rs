//! Value semantics shared by indexing and querying: date ranges, string normalisation.

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, TimeZone, Utc};
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// A half-open instant range `[lo, hi)`; `None` is open-ended (minus/plus infinity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateRange {
    pub lo: Option<DateTime<Utc>>,
    pub hi: Option<DateTime<Utc>>,
}

/// The range a FHIR date, dateTime or instant covers at its precision: `2024` is the whole
/// year, `2024-03-05T10:00:00Z` one second, `...:00.250Z` one millisecond. Without a time
/// zone, a time is read as UTC (FHIR requires one when a time is present; dates have none and
/// are taken as UTC days). Also accepts `hh:mm` without seconds, as search values may.
pub fn date_range(text: &str) -> Option<DateRange> {
    let (date_part, time_part) = match text.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (text, None),
    };
    let mut fields = date_part.split('-');
    let year: i32 = fields.next().filter(|y| y.len() == 4)?.parse().ok()?;
    let month: Option<u32> = match fields.next() {
        Some(m) if m.len() == 2 => Some(m.parse().ok()?),
        Some(_) => return None,
        None => None,
    };
    let day: Option<u32> = match fields.next() {
        Some(d) if d.len() == 2 => Some(d.parse().ok()?),
        Some(_) => return None,
        None => None,
    };
    if fields.next().is_some() {
        return None;
    }
    let utc_day = |y, m, d| {
        NaiveDate::from_ymd_opt(y, m, d)
            .map(|nd| Utc.from_utc_datetime(&nd.and_time(NaiveTime::MIN)))
    };
    let Some(time) = time_part else {
        let (lo, hi) = match (month, day) {
            (None, _) => (utc_day(year, 1, 1)?, utc_day(year + 1, 1, 1)?),
            (Some(m), None) => {
                let lo = utc_day(year, m, 1)?;
                let hi = if m == 12 {
                    utc_day(year + 1, 1, 1)?
                } else {
                    utc_day(year, m + 1, 1)?
                };
                (lo, hi)
            }
            (Some(m), Some(d)) => {
                let lo = utc_day(year, m, d)?;
                (lo, lo + Duration::days(1))
            }
        };
        return Some(DateRange {
            lo: Some(lo),
            hi: Some(hi),
        });
    };
    let (Some(month), Some(day)) = (month, day) else {
        return None;
    };
    // Split the zone off: Z, +hh:mm or -hh:mm (absent: UTC).
    let (clock, offset_secs) = if let Some(c) = time.strip_suffix('Z') {
        (c, 0)
    } else if let Some(pos) = time.rfind(['+', '-']) {
        let (c, zone) = time.split_at(pos);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let (h, m) = zone[1..].split_once(':')?;
        let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
        if h > 14 || m > 59 {
            return None;
        }
        (c, sign * (h * 3600 + m * 60))
    } else {
        (time, 0)
    };
    let mut parts = clock.split(':');
    let hour: u32 = parts.next()?.parse().ok()?;
    let minute: u32 = parts.next()?.parse().ok()?;
    let (second, fraction, precision) = match parts.next() {
        None => (0, 0u32, Duration::minutes(1)),
        Some(s) => {
            let (whole, frac) = match s.split_once('.') {
                Some((w, f))
                    if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    (w, Some(f))
                }
                Some(_) => return None,
                None => (s, None),
            };
            let second: u32 = whole.parse().ok()?;
            match frac {
                None => (second, 0, Duration::seconds(1)),
                Some(f) => {
                    let digits = u32::try_from(f.len()).ok()?;
                    let nanos = f.parse::<u32>().ok()? * 10u32.pow(9 - digits);
                    (second, nanos, Duration::nanoseconds(10i64.pow(9 - digits)))
                }
            }
        }
    };
    if parts.next().is_some() || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let naive = NaiveDate::from_ymd_opt(year, month, day)?.and_hms_nano_opt(
        hour,
        minute,
        second.min(59),
        fraction,
    )?;
    let lo = Utc.from_utc_datetime(&naive) - Duration::seconds(i64::from(offset_secs));
    Some(DateRange {
        lo: Some(lo),
        hi: Some(lo + precision),
    })
}

/// Lower case, accents removed, whitespace collapsed: what string search compares.
pub fn normalize(text: &str) -> String {
    let folded: String = text
        .nfd()
        .filter(|c| !is_combining_mark(*c))
        .collect::<String>()
        .to_lowercase();
    folded.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(s: &str) -> (String, String) {
        let r = date_range(s).unwrap_or_else(|| panic!("{s} should parse"));
        let fmt = |d: Option<DateTime<Utc>>| {
            d.map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default()
        };
        (fmt(r.lo), fmt(r.hi))
    }

    #[test]
    fn precision_sets_the_range() {
        assert_eq!(
            range("2024"),
            (
                "2024-01-01T00:00:00.000Z".into(),
                "2025-01-01T00:00:00.000Z".into()
            )
        );
        assert_eq!(
            range("2024-12"),
            (
                "2024-12-01T00:00:00.000Z".into(),
                "2025-01-01T00:00:00.000Z".into()
            )
        );
        assert_eq!(
            range("2024-02-29"),
            (
                "2024-02-29T00:00:00.000Z".into(),
                "2024-03-01T00:00:00.000Z".into()
            )
        );
        assert_eq!(
            range("2024-03-05T10:00:00-05:00"),
            (
                "2024-03-05T15:00:00.000Z".into(),
                "2024-03-05T15:00:01.000Z".into()
            )
        );
        assert_eq!(
            range("2024-03-05T10:00:00.25Z"),
            (
                "2024-03-05T10:00:00.250Z".into(),
                "2024-03-05T10:00:00.260Z".into()
            )
        );
        assert_eq!(
            range("2024-03-05T10:00Z"),
            (
                "2024-03-05T10:00:00.000Z".into(),
                "2024-03-05T10:01:00.000Z".into()
            )
        );
    }

    #[test]
    fn rejects_malformed_dates() {
        for bad in [
            "",
            "24",
            "2024-1",
            "2024-02-30",
            "2024-01-01T25:00:00Z",
            "2024-01-01T10:00:00+15:00",
            "2024-01-01T10",
            "abcd",
            "2024-01-01T10:00:00.Z",
        ] {
            assert!(date_range(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn normalisation_folds_case_and_accents() {
        assert_eq!(normalize("  Ünïcödé   Nàme "), "unicode name");
        assert_eq!(normalize("O'Brien"), "o'brien");
    }
}
