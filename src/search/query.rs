//! Parse a FHIR search request (`name[:modifier]=value` pairs) into a typed [`SearchQuery`].
//! Every error names the parameter; nothing here touches SQL.

use std::sync::OnceLock;

use chrono::{Duration, Utc};
use serde::Deserialize;

use super::extract::{is_native, parse_reference};
use super::registry::{ParamType, SearchParam, SearchRegistry};
use super::values::{DateRange, date_range, normalize};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Sa,
    Eb,
    Ap,
}

impl Prefix {
    /// Split a known prefix off a date/number/quantity value.
    fn split(value: &str) -> (Prefix, &str) {
        let table = [
            ("eq", Prefix::Eq),
            ("ne", Prefix::Ne),
            ("gt", Prefix::Gt),
            ("lt", Prefix::Lt),
            ("ge", Prefix::Ge),
            ("le", Prefix::Le),
            ("sa", Prefix::Sa),
            ("eb", Prefix::Eb),
            ("ap", Prefix::Ap),
        ];
        for (p, prefix) in table {
            if let Some(rest) = value.strip_prefix(p)
                && rest.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '.')
            {
                return (prefix, rest);
            }
        }
        (Prefix::Eq, value)
    }
}

/// How a token's system is constrained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemMatch {
    /// `code`: any system.
    Any,
    /// `|code`: no system.
    Absent,
    Is(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringMode {
    Prefix,
    Exact,
    Contains,
}

/// A number with its precision: `5.40` is `[5.395, 5.405)` for `eq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decimal {
    pub text: String,
    /// Digits after the decimal point.
    pub scale: i32,
}

impl Decimal {
    fn parse(s: &str) -> Option<Decimal> {
        let (mantissa, exponent) = match s.split_once(['e', 'E']) {
            Some((m, e)) => (m, e.parse::<i32>().ok()?),
            None => (s, 0),
        };
        let digits = mantissa.strip_prefix('-').unwrap_or(mantissa);
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if int.is_empty() && frac.is_empty()
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let scale = i32::try_from(frac.len()).ok()? - exponent;
        Some(Decimal {
            text: s.to_owned(),
            scale,
        })
    }
}

/// The index table a parameter's rows live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexTable {
    Token,
    String,
    Date,
    Reference,
    Quantity,
    Number,
    Uri,
    Composite,
}

impl IndexTable {
    pub fn of(t: ParamType) -> Option<IndexTable> {
        Some(match t {
            ParamType::Token => IndexTable::Token,
            ParamType::String => IndexTable::String,
            ParamType::Date => IndexTable::Date,
            ParamType::Reference => IndexTable::Reference,
            ParamType::Quantity => IndexTable::Quantity,
            ParamType::Number => IndexTable::Number,
            ParamType::Uri => IndexTable::Uri,
            ParamType::Composite => IndexTable::Composite,
            ParamType::Special => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum CompositeSecond {
    Token(SystemMatch, String),
    Quantity(Prefix, Decimal, Option<String>, Option<String>),
    Date(Prefix, DateRange),
    String(String),
}

/// Whose care relationships define a patient set (access control, never a request
/// parameter): the practitioner's current or recent encounters and care teams, the
/// patients at their facilities (for the listed specialties), and their break-glass grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CareOf {
    pub practitioner: String,
    /// Encounter and care-team links that ended within this window still count.
    pub window_secs: i64,
    /// PractitionerRole specialties (`system|code`) that make a facility a relationship.
    pub facility_specialties: Vec<String>,
}

/// A set of patients defined by data, for access control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatientSet {
    /// A practitioner's care relationships.
    CareOf(CareOf),
    /// The member patients of a Group (a Backend Services client confined to a panel).
    GroupMembers(String),
    /// Every patient: the resource is patient data of some patient (Patient-level export).
    Any,
}

/// One condition on a resource (or, inside a chain, on the referenced resource).
#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    Id(String),
    /// The resource is in the compartment of a patient of `patients` (access control, never
    /// a request parameter): one of `params` references such a patient, or
    /// (`patient_itself`) it is such a Patient.
    InPatients {
        params: Vec<String>,
        patient_itself: bool,
        patients: PatientSet,
    },
    /// The resource is referenced by a resource that references `Patient/{patient}`
    /// (`$everything`'s practitioners, organizations, locations and medications; never a
    /// request parameter).
    ReferencedBy {
        patient: String,
    },
    /// Any of these exact (system, code) pairs (access control: security labels).
    TokenIn {
        param: String,
        pairs: Vec<(String, String)>,
    },
    LastUpdated(Prefix, DateRange),
    Missing {
        param: String,
        table: IndexTable,
        missing: bool,
    },
    Token {
        param: String,
        system: SystemMatch,
        code: Option<String>,
    },
    TokenText {
        param: String,
        text: String,
    },
    TokenOfType {
        param: String,
        type_system: Option<String>,
        type_code: String,
        value: String,
    },
    String {
        param: String,
        mode: StringMode,
        value: String,
    },
    Date {
        param: String,
        prefix: Prefix,
        range: DateRange,
    },
    Reference {
        param: String,
        types: Vec<String>,
        id: Option<String>,
        url: Option<String>,
    },
    Quantity {
        param: String,
        prefix: Prefix,
        value: Decimal,
        system: Option<String>,
        code: Option<String>,
    },
    Number {
        param: String,
        prefix: Prefix,
        value: Decimal,
    },
    Uri {
        param: String,
        value: String,
        below: bool,
    },
    Composite {
        param: String,
        first: (SystemMatch, String),
        second: CompositeSecond,
    },
    /// `param:Type.inner` — the referenced resource matches `inner`.
    Chain {
        param: String,
        target_type: String,
        inner: Box<Predicate>,
    },
    /// `_has:Type:param:inner` — some `Type` referencing this resource by `param` matches.
    Has {
        source_type: String,
        param: String,
        inner: Box<Predicate>,
    },
}

/// One query parameter: any of `any_of` (comma = OR); `negated` for `:not`.
#[derive(Debug, Clone, PartialEq)]
pub struct Clause {
    pub any_of: Vec<Predicate>,
    pub negated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    Id,
    LastUpdated,
    Param(IndexTable),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    pub param: String,
    pub by: SortBy,
    pub descending: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Include {
    pub source_type: String,
    pub param: String,
    pub target_type: Option<String>,
    pub iterate: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summary {
    None,
    True,
    Count,
    Data,
    Text,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery {
    pub resource_type: String,
    pub clauses: Vec<Clause>,
    pub sort: Vec<SortKey>,
    pub count: u32,
    /// An opaque page token from a previous Bundle link.
    pub page: Option<String>,
    pub includes: Vec<Include>,
    pub revincludes: Vec<Include>,
    pub summary: Summary,
    pub elements: Option<Vec<String>>,
    pub total: bool,
    /// The parameters that were used, as `name=value` pairs, for the self link.
    pub used: Vec<(String, String)>,
    /// Parameters ignored (unknown or unsupported), for the outcome entry.
    pub ignored: Vec<String>,
    /// What the caller may see of the type (`None`: everything); set from the access
    /// decision, never from request parameters.
    pub access: Option<AccessFilter>,
}

impl SearchQuery {
    /// A search of `resource_type` by `clauses` alone (server-built searches: exports,
    /// `$everything`): default order (by id), no includes, no total.
    pub fn for_type(resource_type: &str, clauses: Vec<Clause>) -> SearchQuery {
        SearchQuery {
            resource_type: resource_type.to_owned(),
            clauses,
            sort: Vec::new(),
            count: policy().default_count,
            page: None,
            includes: Vec::new(),
            revincludes: Vec::new(),
            summary: Summary::None,
            elements: None,
            total: false,
            used: Vec::new(),
            ignored: Vec::new(),
            access: None,
        }
    }
}

/// Rows the caller may see: those matching every clause of at least one grant (a SMART
/// scope's compartment and criteria). No grants: nothing.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AccessFilter {
    pub grants: Vec<Vec<Clause>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("search parameter '{param}': {message}")]
pub struct SearchError {
    pub param: String,
    pub message: String,
}

fn err(param: &str, message: impl Into<String>) -> SearchError {
    SearchError {
        param: param.to_owned(),
        message: message.into(),
    }
}

#[derive(Deserialize)]
struct Policy {
    #[serde(rename = "requirePatient")]
    require_patient: RequirePatient,
    #[serde(rename = "defaultCount")]
    default_count: u32,
    #[serde(rename = "maxCount")]
    max_count: u32,
    #[serde(rename = "maxIncludes")]
    max_includes: u32,
}

#[derive(Deserialize)]
struct RequirePatient {
    types: Vec<String>,
    #[serde(rename = "satisfiedBy")]
    satisfied_by: Vec<String>,
}

fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        // Compiled in and checked by tests: a failure is a build defect.
        serde_json::from_str(include_str!("../../profiles/search/policy.json"))
            .expect("profiles/search/policy.json is valid")
    })
}

/// Resources added per include step at most.
pub fn max_includes() -> u32 {
    policy().max_includes
}

/// Parse a search of `resource_type`. `strict` (`Prefer: handling=strict`) turns unknown
/// parameters into errors; `local_base` is this tenant's FHIR base with a trailing `/`.
pub fn parse_search(
    resource_type: &str,
    params: &[(String, String)],
    strict: bool,
    local_base: &str,
) -> Result<SearchQuery, SearchError> {
    parse_search_with(resource_type, params, strict, local_base, true)
}

/// [`parse_search`] for a search already confined to one patient's compartment by the
/// caller's access: the require-patient policy (which exists to stop unbounded scans of
/// clinical data) is met by the confinement.
pub fn parse_confined_search(
    resource_type: &str,
    params: &[(String, String)],
    strict: bool,
    local_base: &str,
) -> Result<SearchQuery, SearchError> {
    parse_search_with(resource_type, params, strict, local_base, false)
}

/// Filter criteria only (`category=...&status=final`), as in a SMART v2 granular scope:
/// every parameter must be a known search parameter of the type; result parameters
/// (`_count`, `_include`, `_sort`, ...) are refused.
pub fn parse_criteria(
    resource_type: &str,
    params: &[(String, String)],
    local_base: &str,
) -> Result<Vec<Clause>, SearchError> {
    for (name, _) in params {
        let base = name.split(':').next().unwrap_or_default();
        if matches!(
            base,
            "_count"
                | "_sort"
                | "_total"
                | "_summary"
                | "_elements"
                | "_include"
                | "_revinclude"
                | "_page"
                | "_format"
                | "_pretty"
        ) {
            return Err(err(name, "is not a filter criterion"));
        }
    }
    Ok(parse_search_with(resource_type, params, true, local_base, false)?.clauses)
}

fn parse_search_with(
    resource_type: &str,
    params: &[(String, String)],
    strict: bool,
    local_base: &str,
    require_patient: bool,
) -> Result<SearchQuery, SearchError> {
    let registry = SearchRegistry::global();
    let policy = policy();
    let mut q = SearchQuery {
        resource_type: resource_type.to_owned(),
        clauses: Vec::new(),
        sort: Vec::new(),
        count: policy.default_count,
        page: None,
        includes: Vec::new(),
        revincludes: Vec::new(),
        summary: Summary::None,
        elements: None,
        total: false,
        used: Vec::new(),
        ignored: Vec::new(),
        access: None,
    };
    for (name, value) in params {
        let (base, modifier) = match name.split_once(':') {
            Some((b, m)) => (b, Some(m)),
            None => (name.as_str(), None),
        };
        let used = match base {
            "_format" | "_pretty" => false,
            "_page" => {
                q.page = Some(value.clone());
                false
            }
            "_count" => {
                let n: i64 = value
                    .parse()
                    .map_err(|_| err(name, "must be a non-negative integer"))?;
                let n =
                    u32::try_from(n).map_err(|_| err(name, "must be a non-negative integer"))?;
                q.count = n.min(policy.max_count);
                true
            }
            "_sort" => {
                q.sort = parse_sort(resource_type, value)?;
                true
            }
            "_total" => {
                q.total = match value.as_str() {
                    "accurate" | "estimate" => true,
                    "none" => false,
                    _ => return Err(err(name, "must be none, estimate or accurate")),
                };
                true
            }
            "_summary" => {
                q.summary = match value.as_str() {
                    "true" => Summary::True,
                    "count" => Summary::Count,
                    "data" => Summary::Data,
                    "text" => Summary::Text,
                    "false" => Summary::None,
                    _ => return Err(err(name, "must be true, false, count, data or text")),
                };
                if q.summary == Summary::Count {
                    q.total = true;
                }
                true
            }
            "_elements" => {
                let list: Vec<String> = value
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect();
                if list
                    .iter()
                    .any(|e| !e.bytes().all(|b| b.is_ascii_alphanumeric()))
                {
                    return Err(err(name, "must be a comma-separated list of element names"));
                }
                q.elements = Some(list);
                true
            }
            "_include" | "_revinclude" => {
                let iterate = match modifier {
                    None => false,
                    Some("iterate") | Some("recurse") => true,
                    Some(_) => return Err(err(name, "the only modifier is :iterate")),
                };
                let include = parse_include(name, value, iterate)?;
                if base == "_include" {
                    if !iterate && include.source_type != resource_type {
                        return Err(err(
                            name,
                            format!("must start with {resource_type}: (or use :iterate)"),
                        ));
                    }
                    q.includes.push(include);
                } else {
                    q.revincludes.push(include);
                }
                true
            }
            "_has" => {
                q.clauses.push(parse_has(name, value, local_base)?);
                true
            }
            _ => match typed_chain(resource_type, name, value, local_base)
                .transpose()?
                .map_or_else(
                    || parse_clause(resource_type, name, base, modifier, value, local_base),
                    |c| Ok(Some(c)),
                )? {
                Some(clause) => {
                    q.clauses.push(clause);
                    true
                }
                None if strict => {
                    return Err(err(
                        name,
                        format!("is not a supported search parameter for {resource_type}"),
                    ));
                }
                None => {
                    q.ignored.push(name.clone());
                    false
                }
            },
        };
        if used {
            q.used.push((name.clone(), value.clone()));
        }
    }
    if require_patient
        && policy
            .require_patient
            .types
            .iter()
            .any(|t| t == resource_type)
    {
        let names: Vec<&str> = q
            .used
            .iter()
            .map(|(n, _)| n.split(['.', ':']).next().unwrap_or_default())
            .collect();
        if !policy
            .require_patient
            .satisfied_by
            .iter()
            .any(|s| names.contains(&s.as_str()))
        {
            let options: Vec<&str> = policy
                .require_patient
                .satisfied_by
                .iter()
                .map(String::as_str)
                .filter(|p| p.starts_with('_') || registry.param(resource_type, p).is_some())
                .collect();
            return Err(err(
                "patient",
                format!(
                    "{resource_type} searches must include one of: {}",
                    options.join(", ")
                ),
            ));
        }
    }
    Ok(q)
}

fn parse_sort(resource_type: &str, value: &str) -> Result<Vec<SortKey>, SearchError> {
    let registry = SearchRegistry::global();
    let mut keys = Vec::new();
    for raw in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (descending, code) = match raw.strip_prefix('-') {
            Some(c) => (true, c),
            None => (false, raw),
        };
        let by = match code {
            "_id" => SortBy::Id,
            "_lastUpdated" => SortBy::LastUpdated,
            c => {
                let p = registry
                    .param(resource_type, c)
                    .ok_or_else(|| err("_sort", format!("unknown parameter '{c}'")))?;
                match p.param_type {
                    ParamType::Date
                    | ParamType::String
                    | ParamType::Token
                    | ParamType::Number
                    | ParamType::Quantity => SortBy::Param(
                        IndexTable::of(p.param_type)
                            .ok_or_else(|| err("_sort", "cannot sort on this parameter"))?,
                    ),
                    _ => {
                        return Err(err(
                            "_sort",
                            format!("cannot sort on '{c}' ({})", p.param_type.code()),
                        ));
                    }
                }
            }
        };
        keys.push(SortKey {
            param: code.to_owned(),
            by,
            descending,
        });
    }
    if keys.len() > 4 {
        return Err(err("_sort", "at most 4 sort keys"));
    }
    Ok(keys)
}

fn parse_include(name: &str, value: &str, iterate: bool) -> Result<Include, SearchError> {
    let registry = SearchRegistry::global();
    let mut parts = value.split(':');
    let (Some(source), Some(param)) = (parts.next(), parts.next()) else {
        return Err(err(name, "must be Type:parameter[:TargetType]"));
    };
    let target = parts.next().map(str::to_owned);
    if parts.next().is_some() {
        return Err(err(name, "must be Type:parameter[:TargetType]"));
    }
    let p = registry
        .param(source, param)
        .ok_or_else(|| err(name, format!("{source} has no search parameter '{param}'")))?;
    if p.param_type != ParamType::Reference {
        return Err(err(
            name,
            format!("{source}:{param} is not a reference parameter"),
        ));
    }
    if let Some(t) = &target
        && !p.targets.is_empty()
        && !p.targets.contains(t)
    {
        return Err(err(name, format!("{source}:{param} cannot point at {t}")));
    }
    Ok(Include {
        source_type: source.to_owned(),
        param: param.to_owned(),
        target_type: target,
        iterate,
    })
}

/// `_has:Observation:patient:code=1234` (one level).
fn parse_has(name: &str, value: &str, local_base: &str) -> Result<Clause, SearchError> {
    let registry = SearchRegistry::global();
    let mut parts = name.splitn(4, ':');
    let (_, Some(source_type), Some(param), Some(inner_name)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(err(name, "must be _has:Type:reference:parameter"));
    };
    if inner_name.starts_with("_has") {
        return Err(err(name, "only one level of _has is supported"));
    }
    let p = registry.param(source_type, param).ok_or_else(|| {
        err(
            name,
            format!("{source_type} has no search parameter '{param}'"),
        )
    })?;
    if p.param_type != ParamType::Reference {
        return Err(err(
            name,
            format!("{source_type}:{param} is not a reference parameter"),
        ));
    }
    let (inner_base, inner_modifier) = match inner_name.split_once(':') {
        Some((b, m)) => (b, Some(m)),
        None => (inner_name, None),
    };
    let inner = parse_clause(
        source_type,
        name,
        inner_base,
        inner_modifier,
        value,
        local_base,
    )?
    .ok_or_else(|| {
        err(
            name,
            format!("{source_type} has no search parameter '{inner_base}'"),
        )
    })?;
    if inner.negated {
        return Err(err(name, ":not is not supported inside _has"));
    }
    Ok(Clause {
        any_of: inner
            .any_of
            .into_iter()
            .map(|p| Predicate::Has {
                source_type: source_type.to_owned(),
                param: param.to_owned(),
                inner: Box::new(p),
            })
            .collect(),
        negated: false,
    })
}

/// Split on commas that are not escaped with `\`.
fn split_values(value: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next()
                    && let Some(last) = out.last_mut()
                {
                    last.push(n);
                }
            }
            ',' => out.push(String::new()),
            c => {
                if let Some(last) = out.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    out
}

/// Split `system|code` on the first unescaped `|`.
fn split_pipe(value: &str) -> (Option<&str>, &str) {
    match value.split_once('|') {
        Some((s, c)) => (Some(s), c),
        None => (None, value),
    }
}

fn token_value(value: &str) -> (SystemMatch, Option<String>) {
    match split_pipe(value) {
        (None, code) => (SystemMatch::Any, Some(code.to_owned())),
        (Some(""), code) => (SystemMatch::Absent, Some(code.to_owned())),
        (Some(system), "") => (SystemMatch::Is(system.to_owned()), None),
        (Some(system), code) => (SystemMatch::Is(system.to_owned()), Some(code.to_owned())),
    }
}

fn parse_clause(
    resource_type: &str,
    name: &str,
    base: &str,
    modifier: Option<&str>,
    value: &str,
    local_base: &str,
) -> Result<Option<Clause>, SearchError> {
    let registry = SearchRegistry::global();
    if value.is_empty() {
        return Err(err(name, "has no value"));
    }
    // Chains: `subject:Patient.name=x` or `patient.name=x` (one level).
    if let Some((reference, chained)) = base.split_once('.') {
        return parse_chain(
            resource_type,
            name,
            reference,
            modifier,
            chained,
            value,
            local_base,
        )
        .map(Some);
    }
    if base == "_id" {
        if modifier.is_some() {
            return Err(err(name, "_id takes no modifier"));
        }
        let ids = split_values(value).into_iter().map(Predicate::Id).collect();
        return Ok(Some(Clause {
            any_of: ids,
            negated: false,
        }));
    }
    if base == "_lastUpdated" {
        if modifier.is_some() {
            return Err(err(name, "_lastUpdated takes no modifier"));
        }
        let preds = split_values(value)
            .iter()
            .map(|v| {
                let (prefix, rest) = Prefix::split(v);
                let range = date_range(rest).ok_or_else(|| err(name, "is not a valid date"))?;
                Ok(Predicate::LastUpdated(prefix, range))
            })
            .collect::<Result<Vec<_>, SearchError>>()?;
        return Ok(Some(Clause {
            any_of: preds,
            negated: false,
        }));
    }
    let Some(param) = registry.param(resource_type, base) else {
        return Ok(None);
    };
    if is_native(base) || param.param_type == ParamType::Special {
        return Ok(None);
    }
    let table = IndexTable::of(param.param_type).ok_or_else(|| err(name, "is not searchable"))?;
    if modifier == Some("missing") {
        let missing = match value {
            "true" => true,
            "false" => false,
            _ => return Err(err(name, ":missing takes true or false")),
        };
        return Ok(Some(Clause {
            any_of: vec![Predicate::Missing {
                param: base.to_owned(),
                table,
                missing,
            }],
            negated: false,
        }));
    }
    let negated = modifier == Some("not");
    let mut any_of = Vec::new();
    for v in split_values(value) {
        if v.is_empty() {
            return Err(err(name, "has an empty value"));
        }
        any_of.push(predicate(param, name, modifier, &v, local_base)?);
    }
    if negated && param.param_type != ParamType::Token {
        return Err(err(name, ":not applies to token parameters"));
    }
    Ok(Some(Clause { any_of, negated }))
}

fn predicate(
    param: &SearchParam,
    name: &str,
    modifier: Option<&str>,
    v: &str,
    local_base: &str,
) -> Result<Predicate, SearchError> {
    let code = param.code.clone();
    let unsupported = || {
        err(
            name,
            format!(
                "the modifier :{} is not supported",
                modifier.unwrap_or_default()
            ),
        )
    };
    Ok(match param.param_type {
        ParamType::Token => match modifier {
            None | Some("not") => {
                let (system, code_value) = token_value(v);
                Predicate::Token {
                    param: code,
                    system,
                    code: code_value,
                }
            }
            Some("text") => Predicate::TokenText {
                param: code,
                text: normalize(v),
            },
            Some("of-type") => {
                // system|code|value
                let mut parts = v.splitn(3, '|');
                let (Some(s), Some(c), Some(value)) = (parts.next(), parts.next(), parts.next())
                else {
                    return Err(err(name, ":of-type takes system|code|value"));
                };
                if c.is_empty() || value.is_empty() {
                    return Err(err(name, ":of-type takes system|code|value"));
                }
                Predicate::TokenOfType {
                    param: code,
                    type_system: (!s.is_empty()).then(|| s.to_owned()),
                    type_code: c.to_owned(),
                    value: value.to_owned(),
                }
            }
            _ => return Err(unsupported()),
        },
        ParamType::String => {
            let mode = match modifier {
                None => StringMode::Prefix,
                Some("exact") => StringMode::Exact,
                Some("contains") => StringMode::Contains,
                _ => return Err(unsupported()),
            };
            let value = if mode == StringMode::Exact {
                v.to_owned()
            } else {
                normalize(v)
            };
            Predicate::String {
                param: code,
                mode,
                value,
            }
        }
        ParamType::Date => {
            if modifier.is_some() {
                return Err(unsupported());
            }
            let (prefix, rest) = Prefix::split(v);
            let range = date_range(rest)
                .ok_or_else(|| err(name, format!("'{rest}' is not a valid date")))?;
            Predicate::Date {
                param: code,
                prefix,
                range: approximate(prefix, range),
            }
        }
        ParamType::Reference => {
            let mut types: Vec<String> = param.targets.clone();
            if let Some(m) = modifier {
                if !m.starts_with(|c: char| c.is_ascii_uppercase()) {
                    return Err(unsupported());
                }
                if !types.is_empty() && !types.iter().any(|t| t == m) {
                    return Err(err(name, format!("cannot point at {m}")));
                }
                types = vec![m.to_owned()];
            }
            reference_predicate(code, types, v, local_base)
                .ok_or_else(|| err(name, "is not a valid reference"))?
        }
        ParamType::Quantity => {
            if modifier.is_some() {
                return Err(unsupported());
            }
            let (prefix, rest) = Prefix::split(v);
            let mut parts = rest.splitn(3, '|');
            let number = parts.next().unwrap_or_default();
            let value = Decimal::parse(number)
                .ok_or_else(|| err(name, format!("'{number}' is not a number")))?;
            let system = parts.next().filter(|s| !s.is_empty()).map(str::to_owned);
            let unit = parts.next().filter(|s| !s.is_empty()).map(str::to_owned);
            Predicate::Quantity {
                param: code,
                prefix,
                value,
                system,
                code: unit,
            }
        }
        ParamType::Number => {
            if modifier.is_some() {
                return Err(unsupported());
            }
            let (prefix, rest) = Prefix::split(v);
            let value = Decimal::parse(rest)
                .ok_or_else(|| err(name, format!("'{rest}' is not a number")))?;
            Predicate::Number {
                param: code,
                prefix,
                value,
            }
        }
        ParamType::Uri => {
            let below = match modifier {
                None => false,
                Some("below") => true,
                _ => return Err(unsupported()),
            };
            Predicate::Uri {
                param: code,
                value: v.to_owned(),
                below,
            }
        }
        ParamType::Composite => {
            if modifier.is_some() {
                return Err(unsupported());
            }
            let (first, second) = v
                .split_once('$')
                .ok_or_else(|| err(name, "composite values are first$second"))?;
            // Hearth indexes composites whose first part is a token (every composite in the
            // registry's scope is).
            let [_, c2] = param.components.as_slice() else {
                return Err(err(name, "is not supported"));
            };
            let (s1, code1) = token_value(first);
            let code1 = code1.ok_or_else(|| err(name, "the first part needs a code"))?;
            let second = match c2.param_type {
                ParamType::Token => {
                    let (s, c) = token_value(second);
                    CompositeSecond::Token(
                        s,
                        c.ok_or_else(|| err(name, "the second part needs a code"))?,
                    )
                }
                ParamType::Quantity => {
                    let (prefix, rest) = Prefix::split(second);
                    let mut parts = rest.splitn(3, '|');
                    let number = parts.next().unwrap_or_default();
                    let value = Decimal::parse(number)
                        .ok_or_else(|| err(name, format!("'{number}' is not a number")))?;
                    CompositeSecond::Quantity(
                        prefix,
                        value,
                        parts.next().filter(|s| !s.is_empty()).map(str::to_owned),
                        parts.next().filter(|s| !s.is_empty()).map(str::to_owned),
                    )
                }
                ParamType::Date => {
                    let (prefix, rest) = Prefix::split(second);
                    let range = date_range(rest)
                        .ok_or_else(|| err(name, format!("'{rest}' is not a valid date")))?;
                    CompositeSecond::Date(prefix, approximate(prefix, range))
                }
                ParamType::String => CompositeSecond::String(normalize(second)),
                _ => return Err(err(name, "this composite is not supported")),
            };
            Predicate::Composite {
                param: code,
                first: (s1, code1),
                second,
            }
        }
        ParamType::Special => return Err(err(name, "is not supported")),
    })
}

/// `ap` on dates: widen by 10% of the distance from now (at least a day), per the spec.
fn approximate(prefix: Prefix, range: DateRange) -> DateRange {
    if prefix != Prefix::Ap {
        return range;
    }
    let now = Utc::now();
    let gap = range.lo.map_or(Duration::zero(), |lo| (now - lo).abs()) / 10;
    let widen = gap.max(Duration::days(1));
    DateRange {
        lo: range.lo.map(|l| l - widen),
        hi: range.hi.map(|h| h + widen),
    }
}

fn reference_predicate(
    param: String,
    types: Vec<String>,
    v: &str,
    local_base: &str,
) -> Option<Predicate> {
    if v.contains('/') {
        let parsed = parse_reference(v, local_base)?;
        if parsed.url.is_some() && !v.starts_with(local_base) {
            return Some(Predicate::Reference {
                param,
                types: Vec::new(),
                id: None,
                url: parsed.url,
            });
        }
        let (t, id) = (parsed.target_type?, parsed.target_id?);
        if !types.is_empty() && !types.contains(&t) {
            return None;
        }
        return Some(Predicate::Reference {
            param,
            types: vec![t],
            id: Some(id),
            url: None,
        });
    }
    // A bare id: any of the parameter's target types.
    Some(Predicate::Reference {
        param,
        types,
        id: Some(v.to_owned()),
        url: None,
    })
}

fn parse_chain(
    resource_type: &str,
    name: &str,
    reference: &str,
    modifier: Option<&str>,
    chained: &str,
    value: &str,
    local_base: &str,
) -> Result<Clause, SearchError> {
    let registry = SearchRegistry::global();
    if chained.contains('.') {
        return Err(err(name, "only one level of chaining is supported"));
    }
    let p = registry.param(resource_type, reference).ok_or_else(|| {
        err(
            name,
            format!("{resource_type} has no search parameter '{reference}'"),
        )
    })?;
    if p.param_type != ParamType::Reference {
        return Err(err(
            name,
            format!("'{reference}' is not a reference parameter"),
        ));
    }
    let target_type = match p.targets.as_slice() {
        [only] => only.clone(),
        _ => {
            return Err(err(
                name,
                format!(
                    "'{reference}' can point at several types: name one, e.g. {reference}:Patient.{chained}"
                ),
            ));
        }
    };
    chain_clause(
        name,
        reference,
        &target_type,
        chained,
        modifier,
        value,
        local_base,
    )
}

fn chain_clause(
    name: &str,
    reference: &str,
    target_type: &str,
    chained: &str,
    modifier: Option<&str>,
    value: &str,
    local_base: &str,
) -> Result<Clause, SearchError> {
    let inner = parse_clause(target_type, name, chained, modifier, value, local_base)?.ok_or_else(
        || {
            err(
                name,
                format!("{target_type} has no search parameter '{chained}'"),
            )
        },
    )?;
    if inner.negated {
        return Err(err(name, ":not is not supported in a chain"));
    }
    Ok(Clause {
        any_of: inner
            .any_of
            .into_iter()
            .map(|p| Predicate::Chain {
                param: reference.to_owned(),
                target_type: target_type.to_owned(),
                inner: Box::new(p),
            })
            .collect(),
        negated: false,
    })
}

/// `subject:Patient.name=x`: a chain through a reference with several target types names
/// the type as a modifier.
fn typed_chain(
    resource_type: &str,
    name: &str,
    value: &str,
    local_base: &str,
) -> Option<Result<Clause, SearchError>> {
    let (reference, rest) = name.split_once(':')?;
    let (target_type, chained) = rest.split_once('.')?;
    if !target_type.starts_with(|c: char| c.is_ascii_uppercase()) {
        return None;
    }
    let registry = SearchRegistry::global();
    Some((|| {
        let p = registry.param(resource_type, reference).ok_or_else(|| {
            err(
                name,
                format!("{resource_type} has no search parameter '{reference}'"),
            )
        })?;
        if p.param_type != ParamType::Reference
            || (!p.targets.is_empty() && !p.targets.iter().any(|t| t == target_type))
        {
            return Err(err(
                name,
                format!("'{reference}' cannot point at {target_type}"),
            ));
        }
        if chained.contains('.') {
            return Err(err(name, "only one level of chaining is supported"));
        }
        let (chained, modifier) = match chained.split_once(':') {
            Some((c, m)) => (c, Some(m)),
            None => (chained, None),
        };
        chain_clause(
            name,
            reference,
            target_type,
            chained,
            modifier,
            value,
            local_base,
        )
    })())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str, q: &[(&str, &str)]) -> Result<SearchQuery, SearchError> {
        let params: Vec<(String, String)> = q
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect();
        parse_search(t, &params, true, "https://h/fhir/t/")
    }

    #[test]
    fn us_core_searches_parse() {
        let q = parse(
            "Observation",
            &[
                ("patient", "Patient/1"),
                (
                    "category",
                    "http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
                ),
                ("date", "ge2024-01-01"),
            ],
        )
        .expect("parses");
        assert_eq!(q.clauses.len(), 3);
        assert!(
            matches!(&q.clauses[0].any_of[0], Predicate::Reference { types, id: Some(id), .. } if types == &vec!["Patient".to_owned()] && id == "1")
        );
        assert!(matches!(
            &q.clauses[2].any_of[0],
            Predicate::Date {
                prefix: Prefix::Ge,
                ..
            }
        ));
        let full =
            parse("Observation", &[("patient", "https://h/fhir/t/Patient/1")]).expect("parses");
        assert_eq!(
            full.clauses,
            parse("Observation", &[("patient", "1")])
                .expect("parses")
                .clauses
        );
    }

    #[test]
    fn bad_input_names_the_parameter() {
        for (q, param) in [
            (
                vec![("name", "x"), ("birthdate", "1970-13-01")],
                "birthdate",
            ),
            (vec![("name", "x"), ("birthdate", "xx1970")], "birthdate"),
            (vec![("_count", "-1")], "_count"),
            (vec![("name:fuzzy", "x")], "name:fuzzy"),
            (
                vec![("general-practitioner.name.family", "x")],
                "general-practitioner.name.family",
            ),
            (vec![("_sort", "nonsense")], "_sort"),
            (vec![("_include", "Observation:patient")], "_include"),
            (vec![("frobnicate", "1")], "frobnicate"),
        ] {
            let e = parse("Patient", &q).expect_err("must fail");
            assert_eq!(e.param, param, "{e}");
        }
        let e = parse("Observation", &[("category", "laboratory")]).expect_err("needs a patient");
        assert!(e.message.contains("patient"), "{e}");
    }

    #[test]
    fn modifiers_and_chains() {
        let q = parse(
            "Observation",
            &[
                ("subject.name", "smith"),
                ("code:not", "a,b"),
                ("code:text", "Hémo"),
            ],
        )
        .expect_err("subject has many targets");
        assert!(q.message.contains("several types"));
        let typed =
            parse("Observation", &[("subject:Patient.name", "smith")]).expect("typed chain parses");
        assert!(
            matches!(&typed.clauses[0].any_of[0], Predicate::Chain { param, target_type, .. } if param == "subject" && target_type == "Patient")
        );
        let q = parse(
            "Observation",
            &[
                ("patient.name", "Smi"),
                ("code:not", "a,b"),
                ("code:text", "Hémo"),
            ],
        )
        .expect("parses");
        assert!(
            matches!(&q.clauses[0].any_of[0], Predicate::Chain { target_type, .. } if target_type == "Patient")
        );
        assert!(q.clauses[1].negated && q.clauses[1].any_of.len() == 2);
        assert!(
            matches!(&q.clauses[2].any_of[0], Predicate::TokenText { text, .. } if text == "hemo")
        );
    }
}
