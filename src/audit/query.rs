//! Searching and reading audit events: `AuditEvent?patient=&agent=&date=&entity=&action=
//! &outcome=&_id=&_count=`, newest first, keyset-paged on `seq`.
//!
//! A parameter given twice must match both times (AND); a comma in a value separates
//! alternatives (OR). Unknown parameters are an error: an auditor's filter that is silently
//! dropped shows them the wrong records.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use super::{AuditAction, AuditOutcome, EVENT_COLUMNS, StoredEvent};
use crate::search::values::date_range;
use crate::store::{Store, StoreError};
use crate::tenant::TenantId;

/// Page size without `_count`, and the most `_count` gives.
pub const DEFAULT_COUNT: usize = 50;
pub const MAX_COUNT: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatePrefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Sa,
    Eb,
}

/// One `date` value: a prefix and the half-open range `[lo, hi)` the value's precision
/// covers (`None` = unbounded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateClause {
    pub prefix: DatePrefix,
    pub lo: Option<DateTime<Utc>>,
    pub hi: Option<DateTime<Utc>>,
}

impl DateClause {
    /// Recorded at or after `t`.
    pub fn after(t: DateTime<Utc>) -> DateClause {
        DateClause {
            prefix: DatePrefix::Ge,
            lo: Some(t),
            hi: Some(t),
        }
    }
}

/// A parsed search. Each outer `Vec` is one occurrence of the parameter (all must match),
/// each inner `Vec` its comma-separated alternatives (any may match).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub ids: Vec<Vec<Uuid>>,
    /// Patient ids.
    pub patients: Vec<Vec<String>>,
    /// A user reference (`Practitioner/p1`), a client id or a token subject.
    pub agents: Vec<Vec<String>>,
    pub dates: Vec<Vec<DateClause>>,
    /// `Type/id` (versions are ignored: `Observation/1` matches `Observation/1/_history/2`).
    pub entities: Vec<Vec<String>>,
    pub actions: Vec<Vec<AuditAction>>,
    pub outcomes: Vec<Vec<AuditOutcome>>,
    pub count: usize,
    /// Keyset: only events with a smaller seq (the next page).
    pub before_seq: Option<i64>,
    /// Only high-severity events (break-glass, refusals): the alert report.
    pub high_severity_only: bool,
    /// The parameters used, in order, without `_page` (for self/next links).
    pub used: Vec<(String, String)>,
}

/// A page of events, newest first.
#[derive(Debug, Clone)]
pub struct AuditPage {
    pub events: Vec<StoredEvent>,
    /// The `_page` token of the next page, if there is one.
    pub next: Option<String>,
}

fn alternatives(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim)
}

fn page_token(seq: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("audit:{seq}"))
}

fn parse_page_token(token: &str) -> Option<i64> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.strip_prefix("audit:")?.parse().ok()
}

/// `Type/id`, also accepted as an absolute URL under `local_base`.
fn reference<'a>(value: &'a str, local_base: &str) -> &'a str {
    value.strip_prefix(local_base).unwrap_or(value)
}

fn date_clause(value: &str) -> Result<DateClause, String> {
    let prefixes = [
        ("eq", DatePrefix::Eq),
        ("ne", DatePrefix::Ne),
        ("gt", DatePrefix::Gt),
        ("lt", DatePrefix::Lt),
        ("ge", DatePrefix::Ge),
        ("le", DatePrefix::Le),
        ("sa", DatePrefix::Sa),
        ("eb", DatePrefix::Eb),
    ];
    let (prefix, text) = prefixes
        .iter()
        .find_map(|(p, prefix)| value.strip_prefix(p).map(|rest| (*prefix, rest)))
        .unwrap_or((DatePrefix::Eq, value));
    let range = date_range(text).ok_or_else(|| {
        format!("date: '{value}' is not a FHIR date or dateTime (with an optional prefix eq, ne, gt, lt, ge, le, sa, eb)")
    })?;
    Ok(DateClause {
        prefix,
        lo: range.lo,
        hi: range.hi,
    })
}

impl AuditQuery {
    /// Parse request parameters. `local_base` (the tenant's FHIR base with a trailing slash)
    /// lets references be given as absolute URLs. Errors name the parameter.
    pub fn parse(params: &[(String, String)], local_base: &str) -> Result<AuditQuery, String> {
        let mut q = AuditQuery {
            count: DEFAULT_COUNT,
            ..AuditQuery::default()
        };
        for (name, value) in params {
            if name != "_page" && name != "_format" {
                q.used.push((name.clone(), value.clone()));
            }
            match name.as_str() {
                "_id" => q.ids.push(
                    alternatives(value)
                        .map(|v| {
                            Uuid::parse_str(v)
                                .map_err(|_| format!("_id: '{v}' is not an AuditEvent id"))
                        })
                        .collect::<Result<_, _>>()?,
                ),
                "patient" => q.patients.push(
                    alternatives(value)
                        .map(|v| {
                            let v = reference(v, local_base);
                            let id = v.strip_prefix("Patient/").unwrap_or(v);
                            if id.is_empty() || id.contains('/') {
                                Err(format!(
                                    "patient: '{v}' is not a patient id or Patient/id reference"
                                ))
                            } else {
                                Ok(id.to_owned())
                            }
                        })
                        .collect::<Result<_, _>>()?,
                ),
                "agent" => q.agents.push(
                    alternatives(value)
                        .map(|v| reference(v, local_base).to_owned())
                        .filter(|v| !v.is_empty())
                        .collect(),
                ),
                "date" => q.dates.push(
                    alternatives(value)
                        .map(date_clause)
                        .collect::<Result<_, _>>()?,
                ),
                "entity" => q.entities.push(
                    alternatives(value)
                        .map(|v| {
                            let v = reference(v, local_base);
                            let key = v.split("/_history/").next().unwrap_or(v);
                            match key.split_once('/') {
                                Some((t, id))
                                    if !t.is_empty() && !id.is_empty() && !id.contains('/') =>
                                {
                                    Ok(key.to_owned())
                                }
                                _ => Err(format!("entity: '{v}' is not a Type/id reference")),
                            }
                        })
                        .collect::<Result<_, _>>()?,
                ),
                "action" => q.actions.push(
                    alternatives(value)
                        .map(|v| {
                            AuditAction::from_code(v)
                                .ok_or_else(|| format!("action: '{v}' is not one of C, R, U, D, E"))
                        })
                        .collect::<Result<_, _>>()?,
                ),
                "outcome" => q.outcomes.push(
                    alternatives(value)
                        .map(|v| {
                            v.parse()
                                .ok()
                                .and_then(AuditOutcome::from_code)
                                .ok_or_else(|| format!("outcome: '{v}' is not one of 0, 4, 8, 12"))
                        })
                        .collect::<Result<_, _>>()?,
                ),
                "_count" => {
                    let n: usize = value
                        .parse()
                        .map_err(|_| format!("_count: '{value}' is not a number"))?;
                    q.count = n.clamp(1, MAX_COUNT);
                }
                "_page" => {
                    q.before_seq = Some(
                        parse_page_token(value)
                            .ok_or_else(|| "_page: not a page token Hearth issued".to_owned())?,
                    );
                }
                "_format" => {}
                other => {
                    return Err(format!(
                        "{other}: not a supported AuditEvent search parameter (supported: _id, patient, agent, date, entity, action, outcome, _count)"
                    ));
                }
            }
        }
        Ok(q)
    }

    /// Patient ids the search names (for the audit record of the search itself).
    pub fn named_patients(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.patients.iter().flatten().cloned().collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

fn push_date(b: &mut QueryBuilder<Postgres>, c: &DateClause) {
    // The event's time is an instant; the value covers [lo, hi).
    let (lo, hi) = (c.lo, c.hi);
    let ge = |b: &mut QueryBuilder<Postgres>, t: Option<DateTime<Utc>>| match t {
        Some(t) => {
            b.push("e.recorded >= ").push_bind(t);
        }
        None => {
            b.push("true");
        }
    };
    let lt = |b: &mut QueryBuilder<Postgres>, t: Option<DateTime<Utc>>| match t {
        Some(t) => {
            b.push("e.recorded < ").push_bind(t);
        }
        None => {
            b.push("true");
        }
    };
    match c.prefix {
        DatePrefix::Eq | DatePrefix::Ne => {
            if c.prefix == DatePrefix::Ne {
                b.push("NOT ");
            }
            b.push("(");
            ge(b, lo);
            b.push(" AND ");
            lt(b, hi);
            b.push(")");
        }
        DatePrefix::Ge => ge(b, lo),
        DatePrefix::Gt | DatePrefix::Sa => match hi {
            Some(_) => ge(b, hi),
            None => {
                b.push("false");
            }
        },
        DatePrefix::Le => lt(b, hi),
        DatePrefix::Lt | DatePrefix::Eb => match lo {
            Some(_) => lt(b, lo),
            None => {
                b.push("false");
            }
        },
    }
}

/// Events matching `q`, newest first, one page.
pub async fn search(
    store: &Store,
    tenant: &TenantId,
    q: &AuditQuery,
) -> Result<AuditPage, StoreError> {
    let mut b: QueryBuilder<Postgres> = QueryBuilder::new(format!(
        "SELECT {EVENT_COLUMNS} FROM audit_events e WHERE e.tenant_id = "
    ));
    b.push_bind(tenant.as_str());
    for ids in &q.ids {
        b.push(" AND e.id = ANY(").push_bind(ids.clone()).push(")");
    }
    if q.high_severity_only {
        b.push(" AND e.high_severity");
    }
    for patients in &q.patients {
        b.push(" AND e.patients && ")
            .push_bind(patients.clone())
            .push("::text[]");
    }
    for agents in &q.agents {
        b.push(" AND (e.agent_who = ANY(")
            .push_bind(agents.clone())
            .push(") OR e.agent_client_id = ANY(")
            .push_bind(agents.clone())
            .push(") OR e.agent_subject = ANY(")
            .push_bind(agents.clone())
            .push("))");
    }
    for entities in &q.entities {
        b.push(" AND audit_entity_keys(e.entities) && ")
            .push_bind(entities.clone())
            .push("::text[]");
    }
    for actions in &q.actions {
        let codes: Vec<&str> = actions.iter().map(|a| a.code()).collect();
        b.push(" AND e.action = ANY(").push_bind(codes).push(")");
    }
    for outcomes in &q.outcomes {
        let codes: Vec<i16> = outcomes.iter().map(|o| o.code()).collect();
        b.push(" AND e.outcome = ANY(").push_bind(codes).push(")");
    }
    for dates in &q.dates {
        b.push(" AND (");
        for (i, c) in dates.iter().enumerate() {
            if i > 0 {
                b.push(" OR ");
            }
            push_date(&mut b, c);
        }
        b.push(")");
    }
    if let Some(seq) = q.before_seq {
        b.push(" AND e.seq < ").push_bind(seq);
    }
    let limit = i64::try_from(q.count).unwrap_or(50) + 1;
    b.push(" ORDER BY e.seq DESC LIMIT ").push_bind(limit);
    let mut tx = store.begin(tenant).await?;
    let mut events: Vec<StoredEvent> = b.build_query_as().fetch_all(tx.conn()).await?;
    tx.commit().await?;
    let next = if events.len() > q.count {
        events.truncate(q.count);
        events.last().map(|e| page_token(e.seq))
    } else {
        None
    };
    Ok(AuditPage { events, next })
}

/// One event by its AuditEvent id.
pub async fn get(
    store: &Store,
    tenant: &TenantId,
    id: Uuid,
) -> Result<Option<StoredEvent>, StoreError> {
    let mut tx = store.begin(tenant).await?;
    let event: Option<StoredEvent> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {EVENT_COLUMNS} FROM audit_events e WHERE e.tenant_id = $1 AND e.id = $2"
    )))
    .bind(tenant.as_str())
    .bind(id)
    .fetch_optional(tx.conn())
    .await?;
    tx.commit().await?;
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn parses_every_parameter() {
        let q = AuditQuery::parse(
            &params(&[
                ("patient", "Patient/p1,p2"),
                ("agent", "Practitioner/d1"),
                ("date", "ge2026-01-01"),
                ("date", "lt2026-02"),
                ("entity", "http://h/fhir/t/Observation/o1/_history/3"),
                ("action", "R,E"),
                ("outcome", "4"),
                ("_count", "5000"),
            ]),
            "http://h/fhir/t/",
        )
        .expect("valid");
        assert_eq!(q.patients, vec![vec!["p1".to_owned(), "p2".to_owned()]]);
        assert_eq!(q.agents, vec![vec!["Practitioner/d1".to_owned()]]);
        assert_eq!(q.dates.len(), 2);
        assert_eq!(q.dates[0][0].prefix, DatePrefix::Ge);
        assert_eq!(q.entities, vec![vec!["Observation/o1".to_owned()]]);
        assert_eq!(
            q.actions,
            vec![vec![AuditAction::Read, AuditAction::Execute]]
        );
        assert_eq!(q.outcomes, vec![vec![AuditOutcome::MinorFailure]]);
        assert_eq!(q.count, MAX_COUNT);
    }

    #[test]
    fn refuses_what_it_does_not_understand() {
        for (name, value) in [
            ("action", "X"),
            ("outcome", "1"),
            ("date", "yesterday"),
            ("entity", "Observation"),
            ("patient", "Group/g1"),
            ("_page", "nonsense"),
            ("subtype", "read"),
            ("_id", "not-a-uuid"),
        ] {
            let err = AuditQuery::parse(&params(&[(name, value)]), "http://h/").unwrap_err();
            assert!(err.starts_with(name), "{name}: {err}");
        }
    }

    #[test]
    fn page_tokens_round_trip() {
        assert_eq!(parse_page_token(&page_token(12345)), Some(12345));
        assert_eq!(parse_page_token("YWJj"), None);
    }
}
