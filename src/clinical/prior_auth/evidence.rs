//! Rule-based extraction: each item's rule applied to the patient's record (already
//! filtered by the access decision), deterministic and inspectable. An answer cites every
//! resource (element, and for notes the sentence's byte span) it rests on; no evidence is
//! "not found", never a guessed `false`.

use chrono::NaiveDate;
use serde_json::Value;

use super::rules::{AnswerKind, Code, Rule, RuleKind};
use crate::clinical::chunk::note_attachment;
use crate::clinical::{Citation, RecordEntry};

/// An answer's value, typed as the Questionnaire item's answer will be.
#[derive(Debug, Clone, PartialEq)]
pub enum AnswerValue {
    Boolean(bool),
    Integer(i64),
    Decimal { value: f64, unit: Option<String> },
    Date(NaiveDate),
    Coding(Code),
    Text(String),
}

/// What a rule found.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub value: AnswerValue,
    pub citations: Vec<Citation>,
    /// How sure the rule is: 1.0 for an exact structured match, less for prefixes and text.
    pub confidence: f64,
}

/// Citations per answer at most (the strongest first).
const MAX_CITATIONS: usize = 5;

/// The record as rules read it: the order, its date, the rest by type.
pub struct Chart<'a> {
    pub record: &'a [RecordEntry],
    pub order: &'a RecordEntry,
    /// The order's date (`authoredOn`), or today.
    pub order_date: NaiveDate,
    /// The payer organizations' names, by `Organization/id`.
    pub organizations: &'a [(String, String)],
}

/// A FHIR date or dateTime's day (`2026-11-01`, `2026-11-01T08:00:00Z`, `2026-11`).
pub fn fhir_day(value: &Value) -> Option<NaiveDate> {
    let text = value.as_str()?;
    let day = text.get(..10).unwrap_or(text);
    NaiveDate::parse_from_str(day, "%Y-%m-%d")
        .ok()
        .or_else(|| NaiveDate::parse_from_str(&format!("{}-01", text.get(..7)?), "%Y-%m-%d").ok())
}

fn first_day(resource: &Value, paths: &[&[&str]]) -> Option<NaiveDate> {
    paths.iter().find_map(|path| {
        let mut v = resource;
        for key in *path {
            v = v.get(*key)?;
        }
        fhir_day(v)
    })
}

/// The clinically relevant day of a resource.
fn evidence_day(e: &RecordEntry) -> Option<NaiveDate> {
    let r = &e.resource;
    match e.resource_type.as_str() {
        "Condition" => first_day(
            r,
            &[
                &["onsetDateTime"],
                &["onsetPeriod", "start"],
                &["recordedDate"],
            ],
        ),
        "Observation" => first_day(
            r,
            &[
                &["effectiveDateTime"],
                &["effectivePeriod", "start"],
                &["effectiveInstant"],
                &["issued"],
            ],
        ),
        "MedicationRequest" => first_day(r, &[&["authoredOn"]]),
        "Procedure" => first_day(r, &[&["performedDateTime"], &["performedPeriod", "start"]]),
        "DiagnosticReport" => first_day(
            r,
            &[
                &["effectiveDateTime"],
                &["effectivePeriod", "start"],
                &["issued"],
            ],
        ),
        "DocumentReference" => first_day(r, &[&["date"], &["context", "period", "start"]]),
        _ => None,
    }
}

fn codings(concept: &Value) -> impl Iterator<Item = Code> + '_ {
    concept["coding"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            Some(Code {
                system: c["system"].as_str()?.to_owned(),
                code: c["code"].as_str()?.to_owned(),
                display: c["display"].as_str().map(str::to_owned),
            })
        })
}

/// ICD-10-CM codes are written with and without the dot: compare without it.
fn normalise(code: &str) -> String {
    code.replace('.', "").to_ascii_uppercase()
}

/// The coding of `concept` that `rule` names, and whether it matched exactly (not by prefix).
fn matching_coding(rule: &Rule, concept: &Value) -> Option<(Code, bool)> {
    let all: Vec<Code> = codings(concept).collect();
    if let Some(c) = all.iter().find(|c| {
        rule.codes
            .iter()
            .any(|r| r.system == c.system && r.code == c.code)
    }) {
        return Some((c.clone(), true));
    }
    all.into_iter()
        .find(|c| {
            rule.code_prefixes.iter().any(|p| {
                p.system == c.system && normalise(&c.code).starts_with(&normalise(&p.prefix))
            })
        })
        .map(|c| (c, false))
}

fn has_body_site(rule: &Rule, concepts: &[&Value]) -> bool {
    rule.body_sites.is_empty()
        || concepts.iter().any(|concept| {
            let list: Vec<&Value> = match concept {
                Value::Array(items) => items.iter().collect(),
                other => vec![*other],
            };
            list.iter().any(|c| {
                codings(c).any(|c| {
                    rule.body_sites
                        .iter()
                        .any(|b| b.system == c.system && b.code == c.code)
                })
            })
        })
}

fn status_is(resource: &Value, allowed: &[&str]) -> bool {
    resource["status"]
        .as_str()
        .is_some_and(|s| allowed.contains(&s))
}

fn concept_code(concept: &Value) -> Option<&str> {
    concept["coding"]
        .as_array()?
        .iter()
        .find_map(|c| c["code"].as_str())
}

fn cite(e: &RecordEntry, element: &str) -> Citation {
    Citation {
        reference: e.reference(),
        version_id: Some(e.version_id),
        element: Some(element.to_owned()),
        span: None,
    }
}

impl Chart<'_> {
    fn of_type<'b>(&'b self, t: &'b str) -> impl Iterator<Item = &'b RecordEntry> + 'b {
        self.record.iter().filter(move |e| e.resource_type == t)
    }

    fn in_window(&self, rule: &Rule, e: &RecordEntry) -> bool {
        match rule.within_days {
            None => true,
            Some(days) => evidence_day(e).is_some_and(|d| {
                d >= self.order_date - chrono::TimeDelta::days(days)
                    && d <= self.order_date + chrono::TimeDelta::days(1)
            }),
        }
    }

    /// Newest first (undated last).
    fn newest_first<'b>(&self, mut v: Vec<&'b RecordEntry>) -> Vec<&'b RecordEntry> {
        v.sort_by_key(|e| std::cmp::Reverse(evidence_day(e)));
        v
    }

    /// Apply one item's rule.
    pub fn evaluate(&self, rule: &Rule) -> Option<Finding> {
        match rule.kind {
            RuleKind::Condition => self.condition(rule),
            RuleKind::Observation => self.observation(rule),
            RuleKind::Medication => self.medication(rule),
            RuleKind::Procedure => self.procedure(rule),
            RuleKind::Report => self.report(rule),
            RuleKind::Note => self.note(rule),
            RuleKind::Order => self.order(rule),
            RuleKind::Coverage => self.coverage(rule),
        }
    }

    fn condition(&self, rule: &Rule) -> Option<Finding> {
        let found: Vec<(&RecordEntry, Code, bool)> = self
            .of_type("Condition")
            .filter(|e| {
                let r = &e.resource;
                let active = concept_code(&r["clinicalStatus"])
                    .is_none_or(|s| s == "active" || s == "recurrence" || s == "relapse");
                let confirmed = !matches!(
                    concept_code(&r["verificationStatus"]),
                    Some("refuted" | "entered-in-error")
                );
                active && confirmed && self.in_window(rule, e)
            })
            .filter_map(|e| {
                matching_coding(rule, &e.resource["code"]).map(|(c, exact)| (e, c, exact))
            })
            .collect();
        let entries = self.newest_first(found.iter().map(|(e, _, _)| *e).collect());
        let newest = entries.first()?;
        let (_, coding, exact) = found.iter().find(|(e, _, _)| e.id == newest.id)?;
        let confidence = if *exact { 1.0 } else { 0.95 };
        let citations = entries
            .iter()
            .take(MAX_CITATIONS)
            .map(|e| cite(e, "code"))
            .collect();
        let value = match rule.answer {
            AnswerKind::Exists => AnswerValue::Boolean(true),
            AnswerKind::Code => AnswerValue::Coding(coding.clone()),
            AnswerKind::OnsetWeeks => {
                // The earliest onset among the matching conditions: how long it has lasted.
                let (onset_entry, onset) = entries
                    .iter()
                    .filter_map(|e| {
                        first_day(
                            &e.resource,
                            &[&["onsetDateTime"], &["onsetPeriod", "start"]],
                        )
                        .map(|d| (*e, d))
                    })
                    .min_by_key(|(_, d)| *d)?;
                let weeks = (self.order_date - onset).num_days() / 7;
                return Some(Finding {
                    value: AnswerValue::Integer(weeks.max(0)),
                    citations: vec![cite(onset_entry, "onset")],
                    confidence,
                });
            }
            _ => return None,
        };
        Some(Finding {
            value,
            citations,
            confidence,
        })
    }

    fn observation(&self, rule: &Rule) -> Option<Finding> {
        let values: Vec<(&RecordEntry, f64, Option<String>)> = self
            .of_type("Observation")
            .filter(|e| status_is(&e.resource, &["final", "amended", "corrected"]))
            .filter(|e| self.in_window(rule, e))
            .filter(|e| matching_coding(rule, &e.resource["code"]).is_some())
            .filter_map(|e| {
                let q = &e.resource["valueQuantity"];
                let value = q["value"].as_f64()?;
                let unit = q["code"]
                    .as_str()
                    .or_else(|| q["unit"].as_str())
                    .map(str::to_owned);
                if let Some(wanted) = &rule.unit
                    && unit.as_deref() != Some(wanted.as_str())
                {
                    return None;
                }
                Some((e, value, unit))
            })
            .collect();
        let by_date = self.newest_first(values.iter().map(|(e, _, _)| *e).collect());
        let of = |e: &RecordEntry| values.iter().find(|(v, _, _)| v.id == e.id);
        let newest = by_date.first()?;
        let (value, citations) = match rule.answer {
            AnswerKind::LatestValue => {
                let (_, v, unit) = of(newest)?;
                (
                    AnswerValue::Decimal {
                        value: *v,
                        unit: unit.clone(),
                    },
                    vec![cite(newest, "valueQuantity")],
                )
            }
            AnswerKind::LatestDate => (
                AnswerValue::Date(evidence_day(newest)?),
                vec![cite(newest, "effective")],
            ),
            AnswerKind::MinValue => {
                let (e, v, unit) = values.iter().min_by(|a, b| a.1.total_cmp(&b.1))?;
                (
                    AnswerValue::Decimal {
                        value: *v,
                        unit: unit.clone(),
                    },
                    vec![cite(e, "valueQuantity")],
                )
            }
            AnswerKind::MeetsThreshold => {
                let t = rule.threshold?;
                let meeting: Vec<&RecordEntry> = by_date
                    .iter()
                    .copied()
                    .filter(|e| of(e).is_some_and(|(_, v, _)| t.comparator.holds(*v, t.value)))
                    .collect();
                // Values were measured: a value that misses the threshold is evidence too
                // (answered false, citing what was checked).
                let cited = if meeting.is_empty() {
                    &by_date
                } else {
                    &meeting
                };
                (
                    AnswerValue::Boolean(!meeting.is_empty()),
                    cited
                        .iter()
                        .take(MAX_CITATIONS)
                        .map(|e| cite(e, "valueQuantity"))
                        .collect(),
                )
            }
            _ => return None,
        };
        Some(Finding {
            value,
            citations,
            confidence: 1.0,
        })
    }

    fn medication(&self, rule: &Rule) -> Option<Finding> {
        let trials: Vec<&RecordEntry> = self.newest_first(
            self.of_type("MedicationRequest")
                .filter(|e| {
                    e.id != self.order.id || self.order.resource_type != "MedicationRequest"
                })
                .filter(|e| status_is(&e.resource, &["active", "completed", "stopped"]))
                .filter(|e| {
                    e.resource["intent"].as_str().is_some_and(|i| {
                        matches!(
                            i,
                            "order" | "original-order" | "instance-order" | "filler-order"
                        )
                    })
                })
                .filter(|e| self.in_window(rule, e))
                .filter(|e| {
                    matching_coding(rule, &e.resource["medicationCodeableConcept"]).is_some()
                })
                .collect(),
        );
        let newest = trials.first()?;
        let citations = trials
            .iter()
            .take(MAX_CITATIONS)
            .map(|e| cite(e, "medicationCodeableConcept"))
            .collect();
        let value = match rule.answer {
            AnswerKind::Exists => AnswerValue::Boolean(true),
            AnswerKind::DurationDays => {
                let (e, days) = trials
                    .iter()
                    .filter_map(|e| duration_days(&e.resource).map(|d| (*e, d)))
                    .max_by_key(|(_, d)| *d)?;
                return Some(Finding {
                    value: AnswerValue::Integer(days),
                    citations: vec![cite(e, "dispenseRequest")],
                    confidence: 1.0,
                });
            }
            _ => return None,
        };
        let _ = newest;
        Some(Finding {
            value,
            citations,
            confidence: 1.0,
        })
    }

    fn procedure(&self, rule: &Rule) -> Option<Finding> {
        let done: Vec<&RecordEntry> = self.newest_first(
            self.of_type("Procedure")
                .filter(|e| status_is(&e.resource, &["completed"]))
                .filter(|e| self.in_window(rule, e))
                .filter(|e| matching_coding(rule, &e.resource["code"]).is_some())
                .filter(|e| has_body_site(rule, &[&e.resource["bodySite"]]))
                .collect(),
        );
        self.dated(rule, &done, "code")
    }

    fn report(&self, rule: &Rule) -> Option<Finding> {
        let reports: Vec<&RecordEntry> = self.newest_first(
            self.of_type("DiagnosticReport")
                .filter(|e| status_is(&e.resource, &["final", "amended", "corrected"]))
                .filter(|e| self.in_window(rule, e))
                .filter(|e| matching_coding(rule, &e.resource["code"]).is_some())
                .filter(|e| {
                    has_body_site(rule, &[&e.resource["code"], &e.resource["conclusionCode"]])
                })
                .collect(),
        );
        if rule.answer == AnswerKind::Conclusion {
            let e = reports
                .iter()
                .find(|e| e.resource["conclusion"].is_string())?;
            return Some(Finding {
                value: AnswerValue::Text(e.resource["conclusion"].as_str()?.to_owned()),
                citations: vec![cite(e, "conclusion")],
                confidence: 1.0,
            });
        }
        self.dated(rule, &reports, "code")
    }

    /// `exists` or `date` of the newest of `found`.
    fn dated(&self, rule: &Rule, found: &[&RecordEntry], element: &str) -> Option<Finding> {
        let newest = found.first()?;
        let (value, citations) = match rule.answer {
            AnswerKind::Exists => (
                AnswerValue::Boolean(true),
                found
                    .iter()
                    .take(MAX_CITATIONS)
                    .map(|e| cite(e, element))
                    .collect(),
            ),
            AnswerKind::Date => (
                AnswerValue::Date(evidence_day(newest)?),
                vec![cite(newest, element)],
            ),
            _ => return None,
        };
        Some(Finding {
            value,
            citations,
            confidence: 1.0,
        })
    }

    fn note(&self, rule: &Rule) -> Option<Finding> {
        let notes: Vec<&RecordEntry> = self.newest_first(
            self.record
                .iter()
                .filter(|e| match e.resource_type.as_str() {
                    "DocumentReference" => !status_is(&e.resource, &["entered-in-error"]),
                    "DiagnosticReport" => {
                        status_is(&e.resource, &["final", "amended", "corrected"])
                    }
                    _ => false,
                })
                .filter(|e| self.in_window(rule, e))
                .collect(),
        );
        let mut hits: Vec<(Citation, String)> = Vec::new();
        for e in notes {
            let Some(note) = note_attachment(&e.resource) else {
                continue;
            };
            for (start, end) in sentences(&note.text) {
                let sentence = &note.text[start..end];
                if rule.patterns.iter().any(|p| affirmed(sentence, p)) {
                    hits.push((
                        Citation {
                            reference: e.reference(),
                            version_id: Some(e.version_id),
                            element: Some(note.element.clone()),
                            span: Some((start, end)),
                        },
                        sentence.trim().to_owned(),
                    ));
                }
            }
        }
        let (first, sentence) = hits.first()?.clone();
        let value = match rule.answer {
            AnswerKind::Exists => AnswerValue::Boolean(true),
            AnswerKind::Excerpt => AnswerValue::Text(sentence),
            _ => return None,
        };
        let citations = match rule.answer {
            AnswerKind::Excerpt => vec![first],
            _ => hits
                .into_iter()
                .take(MAX_CITATIONS)
                .map(|(c, _)| c)
                .collect(),
        };
        // Found in free text: a phrase, not a coded fact.
        Some(Finding {
            value,
            citations,
            confidence: 0.8,
        })
    }

    fn order(&self, rule: &Rule) -> Option<Finding> {
        let r = &self.order.resource;
        let (value, element) = match rule.answer {
            AnswerKind::Code => {
                let element = if self.order.resource_type == "MedicationRequest" {
                    "medicationCodeableConcept"
                } else {
                    "code"
                };
                (AnswerValue::Coding(codings(&r[element]).next()?), element)
            }
            AnswerKind::Reason => (
                AnswerValue::Coding(codings(r["reasonCode"].as_array()?.first()?).next()?),
                "reasonCode",
            ),
            AnswerKind::Date => (AnswerValue::Date(fhir_day(&r["authoredOn"])?), "authoredOn"),
            _ => return None,
        };
        Some(Finding {
            value,
            citations: vec![cite(self.order, element)],
            confidence: 1.0,
        })
    }

    fn coverage(&self, rule: &Rule) -> Option<Finding> {
        let coverage = self
            .of_type("Coverage")
            .find(|e| status_is(&e.resource, &["active"]))?;
        let r = &coverage.resource;
        let (value, element) = match rule.answer {
            AnswerKind::Payer => {
                let payor = r["payor"].as_array()?.first()?;
                let name = payor["display"].as_str().map(str::to_owned).or_else(|| {
                    let reference = payor["reference"].as_str()?;
                    self.organizations
                        .iter()
                        .find(|(r, _)| r == reference)
                        .map(|(_, name)| name.clone())
                })?;
                (AnswerValue::Text(name), "payor")
            }
            AnswerKind::MemberId => {
                let id = r["subscriberId"]
                    .as_str()
                    .or_else(|| r["identifier"].as_array()?.first()?["value"].as_str())?;
                (AnswerValue::Text(id.to_owned()), "subscriberId")
            }
            _ => return None,
        };
        Some(Finding {
            value,
            citations: vec![cite(coverage, element)],
            confidence: 1.0,
        })
    }
}

/// Days a medication order covers: its validity period, or its expected supply.
fn duration_days(r: &Value) -> Option<i64> {
    let dispense = &r["dispenseRequest"];
    if let (Some(start), Some(end)) = (
        fhir_day(&dispense["validityPeriod"]["start"]).or_else(|| fhir_day(&r["authoredOn"])),
        fhir_day(&dispense["validityPeriod"]["end"]),
    ) {
        return Some((end - start).num_days());
    }
    let supply = &dispense["expectedSupplyDuration"];
    let value = supply["value"].as_f64()?;
    let days = match supply["code"].as_str().or_else(|| supply["unit"].as_str()) {
        Some("d" | "day" | "days") => value,
        Some("wk" | "week" | "weeks") => value * 7.0,
        Some("mo" | "month" | "months") => value * 30.0,
        _ => return None,
    };
    Some(days.round() as i64)
}

/// Byte ranges of the text's sentences (split at `.`, `!`, `?`, `;` and line ends), blank
/// ones left out.
fn sentences(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, ch) in text.char_indices() {
        if matches!(ch, '.' | '!' | '?' | ';' | '\n') {
            let end = i + ch.len_utf8();
            if !text[start..end].trim().is_empty() {
                out.push((start, end));
            }
            start = end;
        }
    }
    if start < text.len() && !text[start..].trim().is_empty() {
        out.push((start, text.len()));
    }
    out
}

/// Words that negate what follows them in a sentence.
const NEGATIONS: &[&str] = &[
    "no",
    "denies",
    "denied",
    "without",
    "not",
    "negative for",
    "absence of",
    "free of",
];

/// The sentence states `phrase` (on word boundaries, any case) and does not negate it
/// before it: "denies fever" and "no history of cancer" do not count.
fn affirmed(sentence: &str, phrase: &str) -> bool {
    let lower = sentence.to_lowercase();
    let phrase = phrase.to_lowercase();
    let mut from = 0;
    while let Some(pos) = lower[from..].find(&phrase) {
        let at = from + pos;
        let end = at + phrase.len();
        let boundary_before = lower[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric());
        let boundary_after = lower[end..]
            .chars()
            .next()
            .is_none_or(|c| !c.is_alphanumeric());
        if boundary_before && boundary_after {
            let before: Vec<&str> = lower[..at]
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .collect();
            let before_text = before.join(" ");
            let negated = NEGATIONS.iter().any(|n| {
                before_text == *n
                    || before_text.starts_with(&format!("{n} "))
                    || before_text.ends_with(&format!(" {n}"))
                    || before_text.contains(&format!(" {n} "))
            });
            if !negated {
                return true;
            }
        }
        from = end;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negated_phrases_do_not_count() {
        assert!(affirmed(
            "Completed 6 weeks of physical therapy.",
            "physical therapy"
        ));
        assert!(!affirmed("Denies fever, chills or weight loss.", "fever"));
        assert!(!affirmed("No history of cancer.", "history of cancer"));
        assert!(!affirmed(
            "Patient is without saddle anesthesia.",
            "saddle anesthesia"
        ));
        assert!(affirmed("Reports fever since Monday.", "fever"));
        assert!(!affirmed("Feverish feeling.", "fever"), "word boundaries");
    }

    #[test]
    fn sentences_are_byte_spans() {
        let text = "History: back pain.\nPlan: PT twice weekly; recheck.";
        let spans = sentences(text);
        let parts: Vec<&str> = spans.iter().map(|(s, e)| text[*s..*e].trim()).collect();
        assert_eq!(
            parts,
            vec!["History: back pain.", "Plan: PT twice weekly;", "recheck."]
        );
    }

    #[test]
    fn fhir_days_of_dates_and_date_times() {
        let d = |s: &str| fhir_day(&Value::from(s));
        assert_eq!(d("2026-11-01"), NaiveDate::from_ymd_opt(2026, 11, 1));
        assert_eq!(
            d("2026-11-01T08:00:00Z"),
            NaiveDate::from_ymd_opt(2026, 11, 1)
        );
        assert_eq!(d("2026-11"), NaiveDate::from_ymd_opt(2026, 11, 1));
        assert_eq!(d("soon"), None);
    }
}
