//! Search: a typed [`SearchQuery`] to SQL over the index tables, keyset-paged. Never reads
//! resource JSON to decide a match.

use std::collections::HashSet;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sqlx::{Postgres, QueryBuilder};

use super::resources::StoredVersion;
use super::{Store, StoreError, TenantTx};
use crate::search::query::{
    AccessFilter, CareOf, Clause, CompositeSecond, Decimal, Include, IndexTable, PatientSet,
    Predicate, Prefix, SearchQuery, SortBy, SortKey, StringMode, SystemMatch, max_includes,
};
use crate::search::values::DateRange;
use crate::tenant::TenantId;

/// One page of results.
#[derive(Debug)]
pub struct SearchPage {
    pub matches: Vec<StoredVersion>,
    pub includes: Vec<StoredVersion>,
    pub total: Option<i64>,
    /// Page tokens for the next and previous pages.
    pub next: Option<String>,
    pub previous: Option<String>,
}

/// Where a page starts: after (or, going back, before) the row with these sort values.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Cursor {
    /// true: rows after the key (next page); false: rows before it (previous page).
    forward: bool,
    keys: Vec<Option<String>>,
    id: String,
}

impl Cursor {
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(token: &str, key_count: usize) -> Result<Cursor, StoreError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| StoreError::InvalidPageToken)?;
        let cursor: Cursor =
            serde_json::from_slice(&bytes).map_err(|_| StoreError::InvalidPageToken)?;
        if cursor.keys.len() != key_count {
            return Err(StoreError::InvalidPageToken);
        }
        Ok(cursor)
    }
}

/// SQL expressions naming the resource a predicate is about.
#[derive(Clone, Copy)]
struct Owner<'a> {
    tenant: &'a str,
    resource_type: &'a str,
    id: &'a str,
    /// `r.last_updated` when the owner is the main row; otherwise looked up.
    last_updated: Option<&'a str>,
}

const MAIN: Owner<'static> = Owner {
    tenant: "r.tenant_id",
    resource_type: "r.resource_type",
    id: "r.id",
    last_updated: Some("r.last_updated"),
};

fn table(t: IndexTable) -> &'static str {
    match t {
        IndexTable::Token => "search_token",
        IndexTable::String => "search_string",
        IndexTable::Date => "search_date",
        IndexTable::Reference => "search_reference",
        IndexTable::Quantity => "search_quantity",
        IndexTable::Number => "search_number",
        IndexTable::Uri => "search_uri",
        IndexTable::Composite => "search_composite",
    }
}

struct Sql {
    qb: QueryBuilder<Postgres>,
    aliases: usize,
}

impl Sql {
    fn alias(&mut self) -> String {
        self.aliases += 1;
        format!("x{}", self.aliases)
    }

    fn push(&mut self, s: &str) -> &mut Self {
        self.qb.push(s);
        self
    }

    fn bind_text(&mut self, v: &str) -> &mut Self {
        self.qb.push_bind(v.to_owned());
        self
    }

    /// `EXISTS (SELECT 1 FROM <table> a WHERE a is owned by owner AND a.param = p AND ...`
    /// — the caller adds conditions and closes with `)`.
    fn open_exists(&mut self, t: IndexTable, owner: Owner, param: &str) -> String {
        let a = self.alias();
        self.qb.push(format!(
            "EXISTS (SELECT 1 FROM {} {a} WHERE {a}.tenant_id = {} AND {a}.resource_type = {} AND {a}.resource_id = {} AND {a}.param = ",
            table(t),
            owner.tenant,
            owner.resource_type,
            owner.id
        ));
        self.qb.push_bind(param.to_owned());
        a
    }

    fn clause(&mut self, clause: &Clause, owner: Owner) {
        self.push(if clause.negated {
            " AND NOT ("
        } else {
            " AND ("
        });
        for (i, p) in clause.any_of.iter().enumerate() {
            if i > 0 {
                self.push(" OR ");
            }
            self.predicate(p, owner);
        }
        self.push(")");
    }

    /// ` AND (grant OR grant ...)`, each grant the conjunction of its clauses.
    fn access(&mut self, access: &AccessFilter) {
        if access.grants.is_empty() {
            self.push(" AND FALSE");
            return;
        }
        self.push(" AND (");
        for (i, grant) in access.grants.iter().enumerate() {
            if i > 0 {
                self.push(" OR ");
            }
            self.push("(TRUE");
            for clause in grant {
                self.clause(clause, MAIN);
            }
            self.push(")");
        }
        self.push(")");
    }

    fn date_cmp(&mut self, lo_col: &str, hi_col: &str, prefix: Prefix, range: &DateRange) {
        let lo = range
            .lo
            .map(|d| d.to_rfc3339())
            .unwrap_or_else(|| "-infinity".into());
        let hi = range
            .hi
            .map(|d| d.to_rfc3339())
            .unwrap_or_else(|| "infinity".into());
        let p = |sql: &mut Self, s: &str| {
            // Placeholders: {lo} and {hi}; each becomes a bound timestamptz.
            let mut rest = s;
            while let Some(pos) = rest.find('{') {
                sql.push(&rest[..pos]);
                let (name, after) = rest[pos + 1..].split_once('}').unwrap_or(("", ""));
                match name {
                    "lo" => {
                        sql.qb.push_bind(lo.clone());
                        sql.push("::timestamptz");
                    }
                    "hi" => {
                        sql.qb.push_bind(hi.clone());
                        sql.push("::timestamptz");
                    }
                    "tlo" => {
                        sql.push(lo_col);
                    }
                    _ => {
                        sql.push(hi_col);
                    }
                }
                rest = after;
            }
            sql.push(rest);
        };
        let eq = "({tlo} >= {lo} AND {thi} <= {hi})";
        let s = match prefix {
            Prefix::Eq => eq.to_owned(),
            Prefix::Ne => format!("NOT {eq}"),
            Prefix::Gt => "{thi} > {hi}".to_owned(),
            Prefix::Lt => "{tlo} < {lo}".to_owned(),
            Prefix::Ge => format!("({{thi}} > {{hi}} OR {eq})"),
            Prefix::Le => format!("({{tlo}} < {{lo}} OR {eq})"),
            Prefix::Sa => "{tlo} >= {hi}".to_owned(),
            Prefix::Eb => "{thi} <= {lo}".to_owned(),
            Prefix::Ap => "({tlo} < {hi} AND {thi} > {lo})".to_owned(),
        };
        p(self, &s);
    }

    fn number_cmp(&mut self, col: &str, prefix: Prefix, value: &Decimal) {
        let v = |sql: &mut Self| {
            sql.qb.push_bind(value.text.clone());
            sql.push("::numeric");
        };
        let half = |sql: &mut Self| {
            sql.push("(5 * power(10::numeric, ");
            sql.qb.push_bind(-(value.scale + 1));
            sql.push("))");
        };
        match prefix {
            Prefix::Eq | Prefix::Ne => {
                if prefix == Prefix::Ne {
                    self.push("NOT ");
                }
                self.push(&format!("({col} >= ("));
                v(self);
                self.push(" - ");
                half(self);
                self.push(&format!(") AND {col} < ("));
                v(self);
                self.push(" + ");
                half(self);
                self.push("))");
            }
            Prefix::Ap => {
                self.push(&format!("({col} BETWEEN least("));
                v(self);
                self.push(" * 0.9, ");
                v(self);
                self.push(" * 1.1) AND greatest(");
                v(self);
                self.push(" * 0.9, ");
                v(self);
                self.push(" * 1.1))");
            }
            other => {
                let op = match other {
                    Prefix::Gt | Prefix::Sa => ">",
                    Prefix::Lt | Prefix::Eb => "<",
                    Prefix::Ge => ">=",
                    _ => "<=",
                };
                self.push(&format!("{col} {op} "));
                v(self);
            }
        }
    }

    fn system_match(&mut self, a: &str, col: &str, system: &SystemMatch) {
        match system {
            SystemMatch::Any => {}
            SystemMatch::Absent => {
                self.push(&format!(" AND {a}.{col} IS NULL"));
            }
            SystemMatch::Is(s) => {
                self.push(&format!(" AND {a}.{col} = "));
                self.bind_text(s);
            }
        }
    }

    fn like_prefix(&mut self, value: &str) {
        self.qb.push_bind(format!("{}%", escape_like(value)));
    }

    /// `(SELECT patient_id ...)`: the patients of the set, now.
    fn patient_set(&mut self, patients: &PatientSet, owner: Owner) {
        match patients {
            PatientSet::CareOf(care) => self.care_set(care, owner),
            PatientSet::Any => {
                self.push(&format!(
                    "(SELECT a.id FROM resources a WHERE a.tenant_id = {} AND a.resource_type = 'Patient')",
                    owner.tenant
                ));
            }
            PatientSet::GroupMembers(group) => {
                self.push(&format!(
                    "(SELECT g.target_id FROM search_reference g WHERE g.tenant_id = {} AND g.resource_type = 'Group' AND g.resource_id = ",
                    owner.tenant
                ));
                self.bind_text(group);
                self.push(" AND g.param = 'member' AND g.target_type = 'Patient')");
            }
        }
    }

    /// `(SELECT patient_id ...)`: the patients in `care`'s relationships, now.
    fn care_set(&mut self, care: &CareOf, owner: Owner) {
        self.push(&format!(
            "(SELECT cr.patient_id FROM care_relationships cr WHERE cr.tenant_id = {} AND cr.practitioner_id = ",
            owner.tenant
        ));
        self.bind_text(&care.practitioner);
        // A launch's relationship holds for its session only, without the after-care window.
        self.push(" AND (cr.ended_at IS NULL OR cr.ended_at > now() - CASE WHEN cr.kind = 'ehr-launch' THEN interval '0' ELSE make_interval(secs => ");
        self.qb.push_bind(care.window_secs as f64);
        self.push(&format!(
            ") END) UNION ALL SELECT ps.patient_id FROM patient_sites ps JOIN practitioner_sites pr ON pr.tenant_id = ps.tenant_id AND pr.site_type = ps.site_type AND pr.site_id = ps.site_id WHERE ps.tenant_id = {} AND ps.ended_at IS NULL AND pr.practitioner_id = ",
            owner.tenant
        ));
        self.bind_text(&care.practitioner);
        self.push(" AND (pr.ended_at IS NULL OR pr.ended_at > now()) AND pr.specialties && ");
        self.qb.push_bind(care.facility_specialties.clone());
        self.push(&format!(
            "::text[] UNION ALL SELECT bg.patient_id FROM break_glass_grants bg WHERE bg.tenant_id = {} AND bg.practitioner_id = ",
            owner.tenant
        ));
        self.bind_text(&care.practitioner);
        self.push(" AND bg.expires_at > now())");
    }

    fn predicate(&mut self, p: &Predicate, owner: Owner) {
        match p {
            Predicate::TokenIn { param, pairs } => {
                let a = self.open_exists(IndexTable::Token, owner, param);
                let (systems, codes): (Vec<String>, Vec<String>) = pairs.iter().cloned().unzip();
                self.push(&format!(
                    " AND ({a}.system, {a}.code) IN (SELECT * FROM unnest("
                ));
                self.qb.push_bind(systems);
                self.push("::text[], ");
                self.qb.push_bind(codes);
                self.push("::text[])))");
            }
            Predicate::InPatients {
                params,
                patient_itself,
                patients,
            } => {
                self.push("(");
                if *patient_itself && *patients == PatientSet::Any {
                    self.push(&format!("{} = 'Patient' OR ", owner.resource_type));
                } else if *patient_itself {
                    self.push(&format!(
                        "({} = 'Patient' AND {} IN ",
                        owner.resource_type, owner.id
                    ));
                    self.patient_set(patients, owner);
                    self.push(") OR ");
                }
                let a = self.alias();
                self.push(&format!(
                    "EXISTS (SELECT 1 FROM search_reference {a} WHERE {a}.tenant_id = {} AND {a}.resource_type = {} AND {a}.resource_id = {} AND {a}.param = ANY(",
                    owner.tenant, owner.resource_type, owner.id
                ));
                self.qb.push_bind(params.clone());
                self.push(&format!(") AND {a}.target_type = 'Patient'"));
                if *patients != PatientSet::Any {
                    self.push(&format!(" AND {a}.target_id IN "));
                    self.patient_set(patients, owner);
                }
                self.push("))");
            }
            Predicate::ReferencedBy { patient } => {
                // From the patient's side: the (few) resources referencing the patient,
                // then what they reference; a popular practitioner costs nothing extra.
                let (m, s) = (self.alias(), self.alias());
                self.push(&format!(
                    "{} IN (SELECT {s}.target_id FROM search_reference {m} JOIN search_reference {s} ON {s}.tenant_id = {m}.tenant_id AND {s}.resource_type = {m}.resource_type AND {s}.resource_id = {m}.resource_id WHERE {m}.tenant_id = {} AND {m}.target_type = 'Patient' AND {m}.target_id = ",
                    owner.id, owner.tenant
                ));
                self.bind_text(patient);
                self.push(&format!(" AND {s}.target_type = {})", owner.resource_type));
            }
            Predicate::Id(id) => {
                self.push(&format!("{} = ", owner.id));
                self.bind_text(id);
            }
            Predicate::LastUpdated(prefix, range) => match owner.last_updated {
                Some(col) => self.date_cmp(
                    col,
                    &format!("({col} + interval '1 millisecond')"),
                    *prefix,
                    range,
                ),
                None => {
                    let a = self.alias();
                    self.push(&format!(
                        "EXISTS (SELECT 1 FROM resources {a} WHERE {a}.tenant_id = {} AND {a}.resource_type = {} AND {a}.id = {} AND ",
                        owner.tenant, owner.resource_type, owner.id
                    ));
                    self.date_cmp(
                        &format!("{a}.last_updated"),
                        &format!("({a}.last_updated + interval '1 millisecond')"),
                        *prefix,
                        range,
                    );
                    self.push(")");
                }
            },
            Predicate::Missing {
                param,
                table: t,
                missing,
            } => {
                if *missing {
                    self.push("NOT ");
                }
                self.open_exists(*t, owner, param);
                self.push(")");
            }
            Predicate::Token {
                param,
                system,
                code,
            } => {
                let a = self.open_exists(IndexTable::Token, owner, param);
                if let Some(code) = code {
                    self.push(&format!(" AND {a}.code = "));
                    self.bind_text(code);
                }
                self.system_match(&a, "system", system);
                self.push(")");
            }
            Predicate::TokenText { param, text } => {
                let a = self.open_exists(IndexTable::Token, owner, param);
                self.push(&format!(" AND {a}.text_norm LIKE "));
                self.like_prefix(text);
                self.push(")");
            }
            Predicate::TokenOfType {
                param,
                type_system,
                type_code,
                value,
            } => {
                let a = self.open_exists(IndexTable::Token, owner, param);
                self.push(&format!(" AND {a}.type_code = "));
                self.bind_text(type_code);
                if let Some(s) = type_system {
                    self.push(&format!(" AND {a}.type_system = "));
                    self.bind_text(s);
                }
                self.push(&format!(" AND {a}.code = "));
                self.bind_text(value);
                self.push(")");
            }
            Predicate::String { param, mode, value } => {
                let a = self.open_exists(IndexTable::String, owner, param);
                match mode {
                    StringMode::Prefix => {
                        self.push(&format!(" AND {a}.value_norm LIKE "));
                        self.like_prefix(value);
                    }
                    StringMode::Exact => {
                        self.push(&format!(" AND {a}.value_exact = "));
                        self.bind_text(value);
                    }
                    StringMode::Contains => {
                        self.push(&format!(" AND {a}.value_norm LIKE "));
                        self.qb.push_bind(format!("%{}%", escape_like(value)));
                    }
                }
                self.push(")");
            }
            Predicate::Date {
                param,
                prefix,
                range,
            } => {
                let a = self.open_exists(IndexTable::Date, owner, param);
                self.push(" AND ");
                self.date_cmp(&format!("{a}.lo"), &format!("{a}.hi"), *prefix, range);
                self.push(")");
            }
            Predicate::Reference {
                param,
                types,
                id,
                url,
            } => {
                let a = self.open_exists(IndexTable::Reference, owner, param);
                if let Some(id) = id {
                    self.push(&format!(" AND {a}.target_id = "));
                    self.bind_text(id);
                    if !types.is_empty() {
                        self.push(&format!(" AND {a}.target_type = ANY("));
                        self.qb.push_bind(types.clone());
                        self.push(")");
                    }
                }
                if let Some(url) = url {
                    self.push(&format!(" AND {a}.url = "));
                    self.bind_text(url);
                }
                self.push(")");
            }
            Predicate::Quantity {
                param,
                prefix,
                value,
                system,
                code,
            } => {
                let a = self.open_exists(IndexTable::Quantity, owner, param);
                self.push(" AND ");
                self.number_cmp(&format!("{a}.value"), *prefix, value);
                if let Some(s) = system {
                    self.push(&format!(" AND {a}.system = "));
                    self.bind_text(s);
                }
                if let Some(c) = code {
                    self.push(&format!(" AND ({a}.code = "));
                    self.bind_text(c);
                    self.push(&format!(" OR {a}.unit = "));
                    self.bind_text(c);
                    self.push(")");
                }
                self.push(")");
            }
            Predicate::Number {
                param,
                prefix,
                value,
            } => {
                let a = self.open_exists(IndexTable::Number, owner, param);
                self.push(" AND ");
                self.number_cmp(&format!("{a}.value"), *prefix, value);
                self.push(")");
            }
            Predicate::Uri {
                param,
                value,
                below,
            } => {
                let a = self.open_exists(IndexTable::Uri, owner, param);
                if *below {
                    self.push(&format!(" AND {a}.uri LIKE "));
                    self.like_prefix(value);
                } else {
                    self.push(&format!(" AND {a}.uri = "));
                    self.bind_text(value);
                }
                self.push(")");
            }
            Predicate::Composite {
                param,
                first,
                second,
            } => {
                let a = self.open_exists(IndexTable::Composite, owner, param);
                self.push(&format!(" AND {a}.c1_code = "));
                self.bind_text(&first.1);
                self.system_match(&a, "c1_system", &first.0);
                match second {
                    CompositeSecond::Token(system, code) => {
                        self.push(&format!(" AND {a}.c2_code = "));
                        self.bind_text(code);
                        self.system_match(&a, "c2_system", system);
                    }
                    CompositeSecond::Quantity(prefix, value, system, code) => {
                        self.push(" AND ");
                        self.number_cmp(&format!("{a}.c2_value"), *prefix, value);
                        if let Some(s) = system {
                            self.push(&format!(" AND {a}.c2_system = "));
                            self.bind_text(s);
                        }
                        if let Some(c) = code {
                            self.push(&format!(" AND {a}.c2_code = "));
                            self.bind_text(c);
                        }
                    }
                    CompositeSecond::Date(prefix, range) => {
                        self.push(" AND ");
                        self.date_cmp(&format!("{a}.c2_lo"), &format!("{a}.c2_hi"), *prefix, range);
                    }
                    CompositeSecond::String(text) => {
                        self.push(&format!(" AND {a}.c2_text LIKE "));
                        self.like_prefix(text);
                    }
                }
                self.push(")");
            }
            Predicate::Chain {
                param,
                target_type,
                inner,
            } => {
                let a = self.open_exists(IndexTable::Reference, owner, param);
                self.push(&format!(" AND {a}.target_type = "));
                self.bind_text(target_type);
                self.push(" AND ");
                let (tenant, rtype, id) = (
                    format!("{a}.tenant_id"),
                    format!("{a}.target_type"),
                    format!("{a}.target_id"),
                );
                let inner_owner = Owner {
                    tenant: &tenant,
                    resource_type: &rtype,
                    id: &id,
                    last_updated: None,
                };
                self.predicate(inner, inner_owner);
                self.push(")");
            }
            Predicate::Has {
                source_type,
                param,
                inner,
            } => {
                let a = self.alias();
                self.push(&format!("EXISTS (SELECT 1 FROM search_reference {a} WHERE {a}.tenant_id = {} AND {a}.resource_type = ", owner.tenant));
                self.bind_text(source_type);
                self.push(&format!(" AND {a}.param = "));
                self.bind_text(param);
                self.push(&format!(
                    " AND {a}.target_type = {} AND {a}.target_id = {} AND ",
                    owner.resource_type, owner.id
                ));
                let (tenant, rtype, id) = (
                    format!("{a}.tenant_id"),
                    format!("{a}.resource_type"),
                    format!("{a}.resource_id"),
                );
                let inner_owner = Owner {
                    tenant: &tenant,
                    resource_type: &rtype,
                    id: &id,
                    last_updated: None,
                };
                self.predicate(inner, inner_owner);
                self.push(")");
            }
        }
    }
}

fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// The SQL of a sort key's value for the main row, `NULL`s replaced by a value that sorts
/// last in the key's direction (so keyset comparisons never meet NULL), and its SQL type.
fn sort_expression(key: &SortKey) -> (String, &'static str) {
    let (agg, col, ty) = match key.by {
        SortBy::Id => return ("r.id".into(), "text"),
        SortBy::LastUpdated => return ("r.last_updated".into(), "timestamptz"),
        SortBy::Param(IndexTable::Date) if key.descending => ("max", "hi", "timestamptz"),
        SortBy::Param(IndexTable::Date) => ("min", "lo", "timestamptz"),
        SortBy::Param(IndexTable::String) => (
            if key.descending { "max" } else { "min" },
            "value_norm",
            "text",
        ),
        SortBy::Param(IndexTable::Token) => {
            (if key.descending { "max" } else { "min" }, "code", "text")
        }
        SortBy::Param(_) => (
            if key.descending { "max" } else { "min" },
            "value",
            "numeric",
        ),
    };
    let t = match key.by {
        SortBy::Param(t) => table(t),
        _ => "search_token",
    };
    let sentinel = match (ty, key.descending) {
        ("timestamptz", false) => "'infinity'::timestamptz",
        ("timestamptz", true) => "'-infinity'::timestamptz",
        ("text", false) => "chr(1114111)",
        ("text", true) => "''",
        (_, false) => "'Infinity'::numeric",
        (_, true) => "'-Infinity'::numeric",
    };
    // The parameter code is from the registry (checked at parse time), safe to inline.
    let code = key.param.replace('\'', "");
    (
        format!(
            "coalesce((SELECT {agg}(s.{col}) FROM {t} s WHERE s.tenant_id = r.tenant_id AND s.resource_type = r.resource_type AND s.resource_id = r.id AND s.param = '{code}'), {sentinel})"
        ),
        ty,
    )
}

#[derive(sqlx::FromRow)]
struct MatchRow {
    resource_type: String,
    id: String,
    version_id: i64,
    last_updated: chrono::DateTime<chrono::Utc>,
    deleted: bool,
    content: Option<String>,
    sort_keys: Vec<Option<String>>,
}

impl Store {
    pub async fn search(
        &self,
        tenant: &TenantId,
        q: &SearchQuery,
    ) -> Result<SearchPage, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let page = tx.search(q).await?;
        tx.commit().await?;
        Ok(page)
    }

    /// Which of `patients` are in `care`'s care set now.
    pub async fn patients_in_care(
        &self,
        tenant: &TenantId,
        care: &CareOf,
        patients: &[String],
    ) -> Result<HashSet<String>, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let mut sql = Sql {
            qb: QueryBuilder::new("SELECT p FROM unnest("),
            aliases: 0,
        };
        sql.qb.push_bind(patients.to_vec());
        sql.push("::text[]) AS p WHERE p IN ");
        let owner = Owner {
            tenant: "current_setting('hearth.tenant', true)",
            resource_type: "'Patient'",
            id: "p",
            last_updated: None,
        };
        sql.care_set(care, owner);
        let rows: Vec<(String,)> = sql
            .qb
            .build_query_as()
            .persistent(true)
            .fetch_all(tx.conn())
            .await?;
        tx.commit().await?;
        Ok(rows.into_iter().map(|(p,)| p).collect())
    }

    /// [`TenantTx::is_hidden`] in its own transaction.
    pub async fn is_hidden(
        &self,
        tenant: &TenantId,
        resource_type: &str,
        id: &str,
        access: &AccessFilter,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let hidden = tx.is_hidden(resource_type, id, access).await?;
        tx.commit().await?;
        Ok(hidden)
    }

    /// [`TenantTx::read_visible`] in its own transaction: the current version and whether
    /// `access` lets the caller see it, in one statement.
    pub async fn read_visible(
        &self,
        tenant: &TenantId,
        resource_type: &str,
        id: &str,
        access: Option<&AccessFilter>,
    ) -> Result<(StoredVersion, bool), StoreError> {
        let mut tx = self.begin(tenant).await?;
        let (stored, visible, _) = tx.read_visible(resource_type, id, access, &[]).await?;
        tx.commit().await?;
        Ok((stored, visible))
    }

    /// [`TenantTx::visible_ids`] in its own transaction.
    pub async fn visible_ids(
        &self,
        tenant: &TenantId,
        resource_type: &str,
        ids: &[String],
        access: &AccessFilter,
    ) -> Result<HashSet<String>, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let visible = tx.visible_ids(resource_type, ids, access).await?;
        tx.commit().await?;
        Ok(visible)
    }
}

impl TenantTx {
    /// Search inside this transaction, which sees the transaction's own writes: transaction
    /// bundles and conditional operations match and write in one transaction.
    pub async fn search(&mut self, q: &SearchQuery) -> Result<SearchPage, StoreError> {
        let tenant = &self.tenant().clone();
        let cursor = q
            .page
            .as_deref()
            .map(|t| Cursor::decode(t, q.sort.len()))
            .transpose()?;
        let sorts: Vec<(String, &'static str, bool)> = q
            .sort
            .iter()
            .map(|k| {
                let (e, t) = sort_expression(k);
                (e, t, k.descending)
            })
            .collect();
        let forward = cursor.as_ref().is_none_or(|c| c.forward);

        let mut sql = Sql {
            qb: QueryBuilder::new(""),
            aliases: 0,
        };
        sql.push("SELECT r.resource_type, r.id, r.version_id, r.last_updated, r.deleted, v.content, ARRAY[");
        for (i, (expr, _, _)) in sorts.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.push(&format!("({expr})::text"));
        }
        sql.push("]::text[] AS sort_keys FROM resources r JOIN resource_versions v ON v.tenant_id = r.tenant_id AND v.resource_type = r.resource_type AND v.id = r.id AND v.version_id = r.version_id");
        Self::filters(&mut sql, tenant, q);
        if let Some(c) = &cursor {
            // Keyset: (k1, ..., id) strictly after (or before) the cursor, key by key.
            sql.push(" AND (");
            let n = sorts.len();
            for level in 0..=n {
                if level > 0 {
                    sql.push(" OR ");
                }
                sql.push("(TRUE");
                for (j, (expr, ty, _)) in sorts.iter().enumerate().take(level) {
                    sql.push(&format!(" AND ({expr}) = "));
                    sql.qb.push_bind(c.keys[j].clone());
                    sql.push(&format!("::{ty}"));
                }
                let ascending_here = if level < n { !sorts[level].2 } else { true };
                let op = if ascending_here == c.forward {
                    ">"
                } else {
                    "<"
                };
                if level < n {
                    let (expr, ty, _) = &sorts[level];
                    sql.push(&format!(" AND ({expr}) {op} "));
                    sql.qb.push_bind(c.keys[level].clone());
                    sql.push(&format!("::{ty}"));
                } else {
                    sql.push(&format!(" AND r.id {op} "));
                    sql.bind_text(&c.id);
                }
                sql.push(")");
            }
            sql.push(")");
            if sorts.is_empty() {
                // The same bound on the joined versions: the planner does not carry it across
                // the join, and a merge join would otherwise read every version of the type
                // before the cursor (each page as costly as all before it).
                sql.push(if c.forward {
                    " AND v.id > "
                } else {
                    " AND v.id < "
                });
                sql.bind_text(&c.id);
            }
        }
        sql.push(" ORDER BY ");
        for (expr, _, descending) in &sorts {
            let asc = *descending != forward;
            sql.push(&format!("({expr}) {}, ", if asc { "ASC" } else { "DESC" }));
        }
        sql.push(if forward { "r.id ASC" } else { "r.id DESC" });
        sql.push(" LIMIT ");
        sql.qb.push_bind(i64::from(q.count) + 1);

        let mut rows: Vec<MatchRow> = if q.count == 0 {
            Vec::new()
        } else {
            // Unnamed (unprepared) statements: PostgreSQL plans each search for its own values.
            // A cached generic plan ignores them and starts from the least selective index
            // (e.g. every lab result of the tenant instead of one patient's records).
            sql.qb
                .build_query_as()
                .persistent(false)
                .fetch_all(self.conn())
                .await?
        };
        let has_more = rows.len() > q.count as usize;
        rows.truncate(q.count as usize);
        if !forward {
            rows.reverse();
        }
        let token = |row: &MatchRow, forward: bool| {
            Cursor {
                forward,
                keys: row.sort_keys.clone(),
                id: row.id.clone(),
            }
            .encode()
        };
        // Going forward, there is a next page if more rows came back; there is a previous
        // page if we came from one. Going back, the reverse.
        let (next, previous) = match (forward, cursor.is_some()) {
            (true, came_from_cursor) => (
                has_more
                    .then(|| rows.last().map(|r| token(r, true)))
                    .flatten(),
                came_from_cursor
                    .then(|| rows.first().map(|r| token(r, false)))
                    .flatten(),
            ),
            (false, _) => (
                rows.last().map(|r| token(r, true)),
                has_more
                    .then(|| rows.first().map(|r| token(r, false)))
                    .flatten(),
            ),
        };

        let total = if q.total {
            let mut count = Sql {
                qb: QueryBuilder::new("SELECT count(*) FROM resources r"),
                aliases: 0,
            };
            Self::filters(&mut count, tenant, q);
            Some(
                count
                    .qb
                    .build_query_scalar::<i64>()
                    .persistent(false)
                    .fetch_one(self.conn())
                    .await?,
            )
        } else {
            None
        };

        let matches: Vec<StoredVersion> = rows
            .into_iter()
            .map(|r| StoredVersion {
                resource_type: r.resource_type,
                id: r.id,
                version_id: r.version_id,
                last_updated: r.last_updated,
                deleted: r.deleted,
                content: r.content,
            })
            .collect();
        let includes = Self::includes(self, tenant, q, &matches).await?;
        Ok(SearchPage {
            matches,
            includes,
            total,
            next,
            previous,
        })
    }

    /// `WHERE` for the current, undeleted resources of the type that match every clause.
    fn filters(sql: &mut Sql, tenant: &TenantId, q: &SearchQuery) {
        sql.push(" WHERE r.tenant_id = ");
        sql.bind_text(tenant.as_str());
        sql.push(" AND r.resource_type = ");
        sql.bind_text(&q.resource_type);
        sql.push(" AND NOT r.deleted");
        for clause in &q.clauses {
            sql.clause(clause, MAIN);
        }
        if let Some(access) = &q.access {
            sql.access(access);
        }
    }

    /// Read the current version and, in the same statement, whether `access` lets the
    /// caller see it (`true` when there is no filter) and the patients its `patient_params`
    /// reference (from the index, for the audit record). `Gone`/`NotFound` as `read`.
    pub async fn read_visible(
        &mut self,
        resource_type: &str,
        id: &str,
        access: Option<&AccessFilter>,
        patient_params: &[String],
    ) -> Result<(StoredVersion, bool, Vec<String>), StoreError> {
        #[derive(sqlx::FromRow)]
        struct Row {
            resource_type: String,
            id: String,
            version_id: i64,
            last_updated: chrono::DateTime<chrono::Utc>,
            deleted: bool,
            content: Option<String>,
            visible: bool,
            patients: Vec<String>,
        }
        let tenant = self.tenant().clone();
        let mut sql = Sql {
            qb: QueryBuilder::new(
                "SELECT v.resource_type, v.id, v.version_id, v.last_updated, v.deleted, v.content, (TRUE",
            ),
            aliases: 0,
        };
        if let Some(access) = access {
            sql.access(access);
        }
        sql.push(") AS visible, ARRAY(SELECT DISTINCT p.target_id FROM search_reference p WHERE p.tenant_id = r.tenant_id AND p.resource_type = r.resource_type AND p.resource_id = r.id AND p.target_type = 'Patient' AND p.target_id IS NOT NULL AND p.param = ANY(");
        sql.qb.push_bind(patient_params.to_vec());
        sql.push(")) AS patients FROM resources r JOIN resource_versions v ON v.tenant_id = r.tenant_id AND v.resource_type = r.resource_type AND v.id = r.id AND v.version_id = r.version_id WHERE r.tenant_id = ");
        sql.bind_text(tenant.as_str());
        sql.push(" AND r.resource_type = ");
        sql.bind_text(resource_type);
        sql.push(" AND r.id = ");
        sql.bind_text(id);
        let row: Option<Row> = sql
            .qb
            .build_query_as()
            .persistent(true)
            .fetch_optional(self.conn())
            .await?;
        let row = row.ok_or(StoreError::NotFound)?;
        let version = StoredVersion {
            resource_type: row.resource_type,
            id: row.id,
            version_id: row.version_id,
            last_updated: row.last_updated,
            deleted: row.deleted,
            content: row.content,
        };
        if version.deleted {
            return Err(StoreError::Gone(version.stamp()));
        }
        Ok((version, row.visible, row.patients))
    }

    /// Does `resource_type/id` exist (undeleted) outside what `access` lets the caller see?
    /// Before a change: an existing target must be visible; a new id is anyone's to take.
    pub async fn is_hidden(
        &mut self,
        resource_type: &str,
        id: &str,
        access: &AccessFilter,
    ) -> Result<bool, StoreError> {
        let tenant = self.tenant().clone();
        let mut sql = Sql {
            qb: QueryBuilder::new("SELECT NOT (TRUE"),
            aliases: 0,
        };
        sql.access(access);
        sql.push(") FROM resources r WHERE r.tenant_id = ");
        sql.bind_text(tenant.as_str());
        sql.push(" AND r.resource_type = ");
        sql.bind_text(resource_type);
        sql.push(" AND r.id = ");
        sql.bind_text(id);
        sql.push(" AND NOT r.deleted");
        let hidden: Option<bool> = sql
            .qb
            .build_query_scalar()
            .persistent(true)
            .fetch_optional(self.conn())
            .await?;
        Ok(hidden.unwrap_or(false))
    }

    /// Which of `ids` (of one type) the access filter lets the caller see, judged on the
    /// current version's index rows. Deleted resources have none, so they are never visible
    /// under a filter.
    pub async fn visible_ids(
        &mut self,
        resource_type: &str,
        ids: &[String],
        access: &AccessFilter,
    ) -> Result<HashSet<String>, StoreError> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        let tenant = self.tenant().clone();
        let mut sql = Sql {
            qb: QueryBuilder::new("SELECT r.id FROM resources r WHERE r.tenant_id = "),
            aliases: 0,
        };
        sql.bind_text(tenant.as_str());
        sql.push(" AND r.resource_type = ");
        sql.bind_text(resource_type);
        sql.push(" AND r.id = ANY(");
        sql.qb.push_bind(ids.to_vec());
        sql.push(")");
        sql.access(access);
        // Prepared and kept per connection: the shape depends only on the caller's kind of
        // grant, and the plan is driven by the primary key, so a generic plan is right —
        // planning the access filter each time would cost more than running it.
        let rows: Vec<(String,)> = sql
            .qb
            .build_query_as()
            .persistent(true)
            .fetch_all(self.conn())
            .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    async fn includes(
        tx: &mut TenantTx,
        tenant: &TenantId,
        q: &SearchQuery,
        matches: &[StoredVersion],
    ) -> Result<Vec<StoredVersion>, StoreError> {
        if matches.is_empty() || (q.includes.is_empty() && q.revincludes.is_empty()) {
            return Ok(Vec::new());
        }
        let mut seen: HashSet<(String, String)> = matches
            .iter()
            .map(|m| (m.resource_type.clone(), m.id.clone()))
            .collect();
        let mut included: Vec<StoredVersion> = Vec::new();
        let mut frontier: Vec<StoredVersion> = matches.to_vec();
        // The first round applies every include to the matches; later rounds (at most 3)
        // apply the :iterate ones to what the previous round added.
        for round in 0..4 {
            let mut added = Vec::new();
            for (inc, reverse) in q
                .includes
                .iter()
                .map(|i| (i, false))
                .chain(q.revincludes.iter().map(|i| (i, true)))
            {
                if round > 0 && !inc.iterate {
                    continue;
                }
                let found = Self::include_step(tx, tenant, inc, reverse, &frontier).await?;
                for v in found {
                    if seen.insert((v.resource_type.clone(), v.id.clone())) {
                        added.push(v);
                    }
                }
            }
            if added.is_empty() {
                break;
            }
            included.extend(added.iter().cloned());
            frontier = added;
        }
        Ok(included)
    }

    async fn include_step(
        tx: &mut TenantTx,
        tenant: &TenantId,
        inc: &Include,
        reverse: bool,
        from: &[StoredVersion],
    ) -> Result<Vec<StoredVersion>, StoreError> {
        let mut out = Vec::new();
        let types: HashSet<&str> = from.iter().map(|v| v.resource_type.as_str()).collect();
        for ty in types {
            let ids: Vec<String> = from
                .iter()
                .filter(|v| v.resource_type == ty)
                .map(|v| v.id.clone())
                .collect();
            if !reverse && inc.source_type != ty {
                continue;
            }
            let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(
                "SELECT v.resource_type, v.id, v.version_id, v.last_updated, v.deleted, v.content FROM search_reference i JOIN resources r ON r.tenant_id = i.tenant_id AND NOT r.deleted AND ",
            );
            qb.push(if reverse {
                "r.resource_type = i.resource_type AND r.id = i.resource_id"
            } else {
                "r.resource_type = i.target_type AND r.id = i.target_id"
            });
            qb.push(" JOIN resource_versions v ON v.tenant_id = r.tenant_id AND v.resource_type = r.resource_type AND v.id = r.id AND v.version_id = r.version_id WHERE i.tenant_id = ");
            qb.push_bind(tenant.as_str().to_owned());
            qb.push(" AND i.resource_type = ");
            qb.push_bind(inc.source_type.clone());
            qb.push(" AND i.param = ");
            qb.push_bind(inc.param.clone());
            if reverse {
                qb.push(" AND i.target_type = ");
                qb.push_bind(ty.to_owned());
                qb.push(" AND i.target_id = ANY(");
            } else {
                if let Some(t) = &inc.target_type {
                    qb.push(" AND i.target_type = ");
                    qb.push_bind(t.clone());
                }
                qb.push(" AND i.resource_id = ANY(");
            }
            qb.push_bind(ids);
            qb.push(") LIMIT ");
            qb.push_bind(i64::from(max_includes()));
            let rows: Vec<StoredVersion> = qb
                .build_query_as()
                .persistent(false)
                .fetch_all(tx.conn())
                .await?;
            out.extend(rows);
        }
        Ok(out)
    }
}
