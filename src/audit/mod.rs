//! The tamper-evident audit log: one row per access to or change of patient data (and per
//! refusal), served as FHIR AuditEvent. Knows SQL, not HTTP.
//!
//! - Recording ([`record`], [`record_now`], [`record_all`]) is ONE `INSERT` on the request
//!   path, with no lock on any chain head: writes record inside the change's transaction,
//!   reads in their own transaction before the response.
//! - Sealing ([`seal`], `chain.rs`) runs off the request path (the background sealer of
//!   `hearth serve`, or `hearth audit seal`): it appends the tenant's unsealed events to a
//!   SHA-256 hash chain over a documented canonical form ([`canonical`]).
//! - Verifying ([`verify`]) recomputes the chain and names the first broken link.
//! - `query.rs` searches and reads events; `fhir.rs` renders one as an R4 AuditEvent (IHE
//!   BALP shapes).
//!
//! The tables are append-only for every role (triggers; see the migration
//! `20261125000007_audit.sql`), except through the maintenance path that retention purges
//! ([`purge`]) take.

pub mod batch;
mod chain;
pub mod fhir;
mod query;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::auth::{Principal, TokenIssuer};
use crate::store::{Store, StoreError, TenantTx};
use crate::tenant::TenantId;

pub use chain::{
    BreakReason, BrokenLink, PurgeReport, VerifyReport, canonical, purge, run_sealer, seal,
    seal_pending, verify,
};
pub use query::{AuditPage, AuditQuery, DateClause, DatePrefix, get, search};

/// AuditEvent.action: C R U D E.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    Create,
    Read,
    Update,
    Delete,
    Execute,
}

impl AuditAction {
    pub fn code(self) -> &'static str {
        match self {
            AuditAction::Create => "C",
            AuditAction::Read => "R",
            AuditAction::Update => "U",
            AuditAction::Delete => "D",
            AuditAction::Execute => "E",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "C" => AuditAction::Create,
            "R" => AuditAction::Read,
            "U" => AuditAction::Update,
            "D" => AuditAction::Delete,
            "E" => AuditAction::Execute,
            _ => return None,
        })
    }
}

/// AuditEvent.outcome: 0 success, 4 minor, 8 serious, 12 major failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditOutcome {
    Success,
    MinorFailure,
    SeriousFailure,
    MajorFailure,
}

impl AuditOutcome {
    pub fn code(self) -> i16 {
        match self {
            AuditOutcome::Success => 0,
            AuditOutcome::MinorFailure => 4,
            AuditOutcome::SeriousFailure => 8,
            AuditOutcome::MajorFailure => 12,
        }
    }

    pub fn from_code(code: i16) -> Option<Self> {
        Some(match code {
            0 => AuditOutcome::Success,
            4 => AuditOutcome::MinorFailure,
            8 => AuditOutcome::SeriousFailure,
            12 => AuditOutcome::MajorFailure,
            _ => return None,
        })
    }
}

/// Who acted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditAgent {
    /// The user as a FHIR reference, e.g. "Practitioner/p1" (fhirUser).
    pub who: Option<String>,
    /// The OAuth client.
    pub client_id: Option<String>,
    /// The token's sub.
    pub subject: String,
    /// "hearth" or the identity provider's issuer URL.
    pub issuer: String,
    pub on_behalf_of: Option<String>,
}

impl AuditAgent {
    /// The agent of an authenticated caller.
    pub fn from_principal(principal: &Principal) -> Self {
        AuditAgent {
            who: principal.fhir_user.clone(),
            client_id: principal.client_id.clone(),
            subject: principal.subject.clone(),
            issuer: match &principal.issuer {
                TokenIssuer::Hearth => "hearth".to_owned(),
                TokenIssuer::IdentityProvider(iss) => iss.clone(),
            },
            on_behalf_of: None,
        }
    }
}

/// One event to record.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    /// "read", "vread", "history-instance", "history-type", "search-type", "create",
    /// "update", "patch", "delete", "transaction", "batch", "operation", "hl7v2-ingest",
    /// "break-glass", "auth-failure", "access-denied", "export", "summary", "prior-auth"
    /// (`[a-z0-9-]{1,64}`; the database refuses anything else).
    pub event: &'static str,
    pub action: AuditAction,
    pub outcome: AuditOutcome,
    pub outcome_text: Option<String>,
    /// v3 PurposeOfUse code: TREAT, HPAYMT, HOPERAT, ETREAT ...
    pub purpose: Option<String>,
    /// None when the caller was not authenticated.
    pub agent: Option<AuditAgent>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    /// Patient ids (not references).
    pub patients: Vec<String>,
    /// "Observation/1" or "Observation/1/_history/2".
    pub entities: Vec<String>,
    /// The search query as received, for search events.
    pub query: Option<String>,
    /// The access decision's reasons.
    pub reasons: Vec<String>,
    /// Break-glass, denials.
    pub high_severity: bool,
}

impl AuditRecord {
    /// Name every version in `written` (`Type/id/_history/n`) and the patients they belong
    /// to, once each.
    pub fn add_written(&mut self, written: &[crate::store::WrittenVersion]) {
        for w in written {
            self.entities.push(format!(
                "{}/{}/_history/{}",
                w.resource_type, w.id, w.version_id
            ));
            for p in &w.patients {
                if !self.patients.contains(p) {
                    self.patients.push(p.clone());
                }
            }
        }
    }

    /// An event with everything else empty.
    pub fn new(event: &'static str, action: AuditAction, outcome: AuditOutcome) -> Self {
        AuditRecord {
            event,
            action,
            outcome,
            outcome_text: None,
            purpose: None,
            agent: None,
            source_ip: None,
            user_agent: None,
            request_id: None,
            patients: Vec::new(),
            entities: Vec::new(),
            query: None,
            reasons: Vec::new(),
            high_severity: false,
        }
    }
}

/// An event as stored: every column of `audit_events`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredEvent {
    /// Global order of insertion (not the chain's order).
    pub seq: i64,
    pub tenant_id: String,
    /// The AuditEvent id.
    pub id: Uuid,
    /// The database's clock at the insert (microseconds).
    pub recorded: DateTime<Utc>,
    pub event: String,
    /// "C", "R", "U", "D" or "E".
    pub action: String,
    /// 0, 4, 8 or 12.
    pub outcome: i16,
    pub outcome_text: Option<String>,
    pub purpose: Option<String>,
    pub agent_who: Option<String>,
    pub agent_client_id: Option<String>,
    pub agent_subject: Option<String>,
    pub agent_issuer: Option<String>,
    pub agent_on_behalf_of: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub patients: Vec<String>,
    pub entities: Vec<String>,
    pub query: Option<String>,
    pub reasons: Vec<String>,
    pub high_severity: bool,
}

/// The columns of [`StoredEvent`], in its order, for SELECTs (`e` is the table alias).
pub(crate) const EVENT_COLUMNS: &str = "e.seq, e.tenant_id, e.id, e.recorded, e.event, e.action, \
     e.outcome, e.outcome_text, e.purpose, e.agent_who, e.agent_client_id, e.agent_subject, \
     e.agent_issuer, e.agent_on_behalf_of, e.source_ip, e.user_agent, e.request_id, \
     e.patients, e.entities, e.query, e.reasons, e.high_severity";

const INSERT_ONE: &str = "INSERT INTO audit_events (tenant_id, event, action, outcome, \
     outcome_text, purpose, agent_who, agent_client_id, agent_subject, agent_issuer, \
     agent_on_behalf_of, source_ip, user_agent, request_id, patients, entities, query, \
     reasons, high_severity) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)";

const INSERT_MANY: &str = "INSERT INTO audit_events (tenant_id, event, action, outcome, \
     outcome_text, purpose, agent_who, agent_client_id, agent_subject, agent_issuer, \
     agent_on_behalf_of, source_ip, user_agent, request_id, patients, entities, query, \
     reasons, high_severity) \
     SELECT $1, u.event, u.action, u.outcome, u.outcome_text, u.purpose, u.agent_who, \
            u.agent_client_id, u.agent_subject, u.agent_issuer, u.agent_on_behalf_of, \
            u.source_ip, u.user_agent, u.request_id, u.patients::text[], u.entities::text[], \
            u.query, u.reasons::text[], u.high_severity \
       FROM unnest($2::text[], $3::text[], $4::int2[], $5::text[], $6::text[], $7::text[], \
                   $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], \
                   $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], $19::bool[]) \
            WITH ORDINALITY AS u(event, action, outcome, outcome_text, purpose, agent_who, \
                   agent_client_id, agent_subject, agent_issuer, agent_on_behalf_of, source_ip, \
                   user_agent, request_id, patients, entities, query, reasons, high_severity, n) \
      ORDER BY u.n";

/// Record `rec` inside the caller's transaction: it commits or rolls back with the change.
/// One statement; takes no lock but the row's own.
pub async fn record(tx: &mut TenantTx, rec: &AuditRecord) -> Result<(), StoreError> {
    let tenant = tx.tenant().as_str().to_owned();
    let agent = rec.agent.as_ref();
    sqlx::query(INSERT_ONE)
        .bind(tenant)
        .bind(rec.event)
        .bind(rec.action.code())
        .bind(rec.outcome.code())
        .bind(rec.outcome_text.as_deref())
        .bind(rec.purpose.as_deref())
        .bind(agent.and_then(|a| a.who.as_deref()))
        .bind(agent.and_then(|a| a.client_id.as_deref()))
        .bind(agent.map(|a| a.subject.as_str()))
        .bind(agent.map(|a| a.issuer.as_str()))
        .bind(agent.and_then(|a| a.on_behalf_of.as_deref()))
        .bind(rec.source_ip.as_deref())
        .bind(rec.user_agent.as_deref())
        .bind(rec.request_id.as_deref())
        .bind(&rec.patients)
        .bind(&rec.entities)
        .bind(rec.query.as_deref())
        .bind(&rec.reasons)
        .bind(rec.high_severity)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// Record `rec` in its own transaction (reads: written before the response; if it fails,
/// the request fails).
pub async fn record_now(
    store: &Store,
    tenant: &TenantId,
    rec: &AuditRecord,
) -> Result<(), StoreError> {
    let mut tx = store.begin(tenant).await?;
    record(&mut tx, rec).await?;
    tx.commit().await
}

/// Record many events in the caller's transaction, in one statement (`unnest` of one array
/// per column), in the order given.
pub async fn record_all(tx: &mut TenantTx, recs: &[AuditRecord]) -> Result<(), StoreError> {
    match recs {
        [] => return Ok(()),
        [one] => return record(tx, one).await,
        _ => {}
    }
    let tenant = tx.tenant().as_str().to_owned();
    let agents: Vec<Option<&AuditAgent>> = recs.iter().map(|r| r.agent.as_ref()).collect();
    let text = |f: &dyn Fn(&AuditRecord) -> Option<String>| -> Vec<Option<String>> {
        recs.iter().map(f).collect()
    };
    let agent_text = |f: &dyn Fn(&AuditAgent) -> Option<String>| -> Vec<Option<String>> {
        agents.iter().map(|a| a.and_then(f)).collect()
    };
    let events: Vec<&str> = recs.iter().map(|r| r.event).collect();
    let actions: Vec<&str> = recs.iter().map(|r| r.action.code()).collect();
    let outcomes: Vec<i16> = recs.iter().map(|r| r.outcome.code()).collect();
    let list = |f: &dyn Fn(&AuditRecord) -> &[String]| -> Vec<String> {
        recs.iter().map(|r| array_literal(f(r))).collect()
    };
    let severities: Vec<bool> = recs.iter().map(|r| r.high_severity).collect();
    sqlx::query(INSERT_MANY)
        .bind(tenant)
        .bind(events)
        .bind(actions)
        .bind(outcomes)
        .bind(text(&|r| r.outcome_text.clone()))
        .bind(text(&|r| r.purpose.clone()))
        .bind(agent_text(&|a| a.who.clone()))
        .bind(agent_text(&|a| a.client_id.clone()))
        .bind(agent_text(&|a| Some(a.subject.clone())))
        .bind(agent_text(&|a| Some(a.issuer.clone())))
        .bind(agent_text(&|a| a.on_behalf_of.clone()))
        .bind(text(&|r| r.source_ip.clone()))
        .bind(text(&|r| r.user_agent.clone()))
        .bind(text(&|r| r.request_id.clone()))
        .bind(list(&|r| &r.patients))
        .bind(list(&|r| &r.entities))
        .bind(text(&|r| r.query.clone()))
        .bind(list(&|r| &r.reasons))
        .bind(severities)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// A PostgreSQL array literal of text elements (`{"a","b \"c\""}`): `unnest` cannot carry
/// an array per row, so each row's list travels as text and is cast back.
fn array_literal(items: &[String]) -> String {
    let mut out = String::from("{");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in item.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out.push('}');
    out
}

/// One line of the alert report: when, what, who, which patients, why.
pub fn alert_line(e: &StoredEvent) -> String {
    let who = e
        .agent_who
        .as_deref()
        .or(e.agent_client_id.as_deref())
        .or(e.agent_subject.as_deref())
        .unwrap_or("(unauthenticated)");
    format!(
        "{}\t{}\toutcome {} {}\t{}\tpurpose {}\tpatients {}\t{}",
        e.recorded
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        e.event,
        e.outcome,
        e.outcome_text.as_deref().unwrap_or(""),
        who,
        e.purpose.as_deref().unwrap_or("-"),
        if e.patients.is_empty() {
            "-".to_owned()
        } else {
            e.patients.join(",")
        },
        e.reasons.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_literals_quote_everything() {
        assert_eq!(array_literal(&[]), "{}");
        assert_eq!(
            array_literal(&["a".into(), "b,c".into(), "d\"e\\f".into(), "NULL".into()]),
            r#"{"a","b,c","d\"e\\f","NULL"}"#
        );
    }

    #[test]
    fn codes_round_trip() {
        for a in [
            AuditAction::Create,
            AuditAction::Read,
            AuditAction::Update,
            AuditAction::Delete,
            AuditAction::Execute,
        ] {
            assert_eq!(AuditAction::from_code(a.code()), Some(a));
        }
        for o in [
            AuditOutcome::Success,
            AuditOutcome::MinorFailure,
            AuditOutcome::SeriousFailure,
            AuditOutcome::MajorFailure,
        ] {
            assert_eq!(AuditOutcome::from_code(o.code()), Some(o));
        }
    }
}
