//! Writing search index rows: one statement writes the version, moves the current pointer,
//! clears the resource's previous index rows and inserts the new ones (arrays + unnest).

use chrono::{DateTime, Utc};

use crate::search::extract::{CompositePart, IndexEntry, IndexValue, TokenValue};

/// The whole write of one version, in one round trip. `$1..$7` are the version; the rest
/// are the index columns, one array per column.
pub(super) const WRITE_VERSION: &str = "
    WITH v AS (
        INSERT INTO resource_versions
               (tenant_id, resource_type, id, version_id, last_updated, deleted, content)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        RETURNING tenant_id, resource_type, id, version_id, last_updated, deleted),
    cur AS (
        INSERT INTO resources (tenant_id, resource_type, id, version_id, last_updated, deleted)
        SELECT tenant_id, resource_type, id, version_id, last_updated, deleted FROM v
        ON CONFLICT (tenant_id, resource_type, id) DO UPDATE
           SET version_id = EXCLUDED.version_id,
               last_updated = EXCLUDED.last_updated,
               deleted = EXCLUDED.deleted),
    d1 AS (DELETE FROM search_token WHERE tenant_id = $1 AND resource_type = $2 AND resource_id = $3),
    d2 AS (DELETE FROM search_string WHERE tenant_id = $1 AND resource_type = $2 AND resource_id = $3),
    d3 AS (DELETE FROM search_date WHERE tenant_id = $1 AND resource_type = $2 AND resource_id = $3),
    d4 AS (DELETE FROM search_reference WHERE tenant_id = $1 AND resource_type = $2 AND resource_id = $3),
    d5 AS (DELETE FROM search_quantity WHERE tenant_id = $1 AND resource_type = $2 AND resource_id = $3),
    d6 AS (DELETE FROM search_number WHERE tenant_id = $1 AND resource_type = $2 AND resource_id = $3),
    d7 AS (DELETE FROM search_uri WHERE tenant_id = $1 AND resource_type = $2 AND resource_id = $3),
    d8 AS (DELETE FROM search_composite WHERE tenant_id = $1 AND resource_type = $2 AND resource_id = $3),
    i1 AS (INSERT INTO search_token
               (tenant_id, resource_type, resource_id, param, system, code, text_norm, type_system, type_code)
           SELECT $1, $2, $3, * FROM unnest($8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[])),
    i2 AS (INSERT INTO search_string (tenant_id, resource_type, resource_id, param, value_norm, value_exact)
           SELECT $1, $2, $3, * FROM unnest($14::text[], $15::text[], $16::text[])),
    i3 AS (INSERT INTO search_date (tenant_id, resource_type, resource_id, param, lo, hi)
           SELECT $1, $2, $3, p, coalesce(lo, '-infinity'), coalesce(hi, 'infinity')
             FROM unnest($17::text[], $18::timestamptz[], $19::timestamptz[]) AS x(p, lo, hi)),
    i4 AS (INSERT INTO search_reference (tenant_id, resource_type, resource_id, param, target_type, target_id, url)
           SELECT $1, $2, $3, * FROM unnest($20::text[], $21::text[], $22::text[], $23::text[])),
    i5 AS (INSERT INTO search_quantity (tenant_id, resource_type, resource_id, param, value, system, code, unit)
           SELECT $1, $2, $3, p, v::numeric, s, c, u
             FROM unnest($24::text[], $25::text[], $26::text[], $27::text[], $28::text[]) AS x(p, v, s, c, u)),
    i6 AS (INSERT INTO search_number (tenant_id, resource_type, resource_id, param, value)
           SELECT $1, $2, $3, p, v::numeric FROM unnest($29::text[], $30::text[]) AS x(p, v)),
    i7 AS (INSERT INTO search_uri (tenant_id, resource_type, resource_id, param, uri)
           SELECT $1, $2, $3, * FROM unnest($31::text[], $32::text[])),
    i8 AS (INSERT INTO search_composite
               (tenant_id, resource_type, resource_id, param, c1_system, c1_code,
                c2_system, c2_code, c2_value, c2_lo, c2_hi, c2_text)
           SELECT $1, $2, $3, p, s1, c1, s2, c2, v2::numeric, lo2, hi2, t2
             FROM unnest($33::text[], $34::text[], $35::text[], $36::text[], $37::text[], $38::text[],
                         $39::timestamptz[], $40::timestamptz[], $41::text[])
                  AS x(p, s1, c1, s2, c2, v2, lo2, hi2, t2))
    SELECT 1";

type Text = Vec<Option<String>>;
type Instants = Vec<Option<DateTime<Utc>>>;

/// Index entries as column arrays, in the order of `WRITE_VERSION`'s `$8..$41`.
#[derive(Default)]
pub(super) struct IndexColumns {
    pub token: (Vec<String>, Text, Text, Text, Text, Text),
    pub string: (Vec<String>, Vec<String>, Vec<String>),
    pub date: (Vec<String>, Instants, Instants),
    pub reference: (Vec<String>, Text, Text, Text),
    pub quantity: (Vec<String>, Vec<String>, Text, Text, Text),
    pub number: (Vec<String>, Vec<String>),
    pub uri: (Vec<String>, Vec<String>),
    pub composite: (
        Vec<String>,
        Text,
        Vec<String>,
        Text,
        Text,
        Text,
        Instants,
        Instants,
        Text,
    ),
}

impl IndexColumns {
    pub fn from_entries(entries: &[IndexEntry]) -> Self {
        let mut c = IndexColumns::default();
        for e in entries {
            let p = e.param.clone();
            match &e.value {
                IndexValue::Token(t) => push_token(&mut c.token, p, t),
                IndexValue::String(s) => {
                    c.string.0.push(p);
                    c.string.1.push(s.normalized.clone());
                    c.string.2.push(s.exact.clone());
                }
                IndexValue::Date(d) => {
                    c.date.0.push(p);
                    c.date.1.push(d.lo);
                    c.date.2.push(d.hi);
                }
                IndexValue::Reference(r) => {
                    c.reference.0.push(p);
                    c.reference.1.push(r.target_type.clone());
                    c.reference.2.push(r.target_id.clone());
                    c.reference.3.push(r.url.clone());
                }
                IndexValue::Quantity(q) => {
                    c.quantity.0.push(p);
                    c.quantity.1.push(q.value.clone());
                    c.quantity.2.push(q.system.clone());
                    c.quantity.3.push(q.code.clone());
                    c.quantity.4.push(q.unit.clone());
                }
                IndexValue::Number(n) => {
                    c.number.0.push(p);
                    c.number.1.push(n.clone());
                }
                IndexValue::Uri(u) => {
                    c.uri.0.push(p);
                    c.uri.1.push(u.clone());
                }
                IndexValue::Composite(first, second) => {
                    let Some(code) = first.code.clone() else {
                        continue;
                    };
                    let k = &mut c.composite;
                    k.0.push(p);
                    k.1.push(first.system.clone());
                    k.2.push(code);
                    let (mut s2, mut c2, mut v2, mut lo2, mut hi2, mut t2) =
                        (None, None, None, None, None, None);
                    match second {
                        CompositePart::Token(t) => {
                            s2 = t.system.clone();
                            c2 = t.code.clone();
                        }
                        CompositePart::Quantity(q) => {
                            s2 = q.system.clone();
                            c2 = q.code.clone().or_else(|| q.unit.clone());
                            v2 = Some(q.value.clone());
                        }
                        CompositePart::Date(d) => {
                            lo2 = d.lo;
                            hi2 = d.hi;
                        }
                        CompositePart::String(s) => t2 = Some(s.normalized.clone()),
                    }
                    k.3.push(s2);
                    k.4.push(c2);
                    k.5.push(v2);
                    k.6.push(lo2);
                    k.7.push(hi2);
                    k.8.push(t2);
                }
            }
        }
        c
    }
}

fn push_token(t: &mut (Vec<String>, Text, Text, Text, Text, Text), param: String, v: &TokenValue) {
    t.0.push(param);
    t.1.push(v.system.clone());
    t.2.push(v.code.clone());
    t.3.push(v.text.clone());
    t.4.push(v.type_system.clone());
    t.5.push(v.type_code.clone());
}
