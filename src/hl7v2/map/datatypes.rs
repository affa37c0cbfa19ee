//! HL7 v2 data types to FHIR data types (CX, XPN, XAD, XTN, CWE, XCN, PL, DTM, NM).

use serde_json::{Map, Value, json};

use super::{MapContext, MappingError, error_at};
use crate::hl7v2::message::{Repetition, Segment};
use crate::hl7v2::timestamp::parse_timestamp;

/// A coding system named in CWE-3 (HL7 table 0396) as a FHIR system URI.
pub fn coding_system(name: &str) -> Option<String> {
    let upper = name.to_ascii_uppercase();
    Some(match upper.as_str() {
        "LN" | "LOINC" => "http://loinc.org".into(),
        "SCT" | "SNM" | "SNOMED" | "SNOMEDCT" => "http://snomed.info/sct".into(),
        "I10" | "ICD10" | "ICD10CM" | "I10C" => "http://hl7.org/fhir/sid/icd-10-cm".into(),
        "I9" | "I9C" | "ICD9" | "ICD9CM" => "http://hl7.org/fhir/sid/icd-9-cm".into(),
        "RXNORM" | "RXN" => "http://www.nlm.nih.gov/research/umls/rxnorm".into(),
        "CVX" => "http://hl7.org/fhir/sid/cvx".into(),
        "NDC" => "http://hl7.org/fhir/sid/ndc".into(),
        "UCUM" => "http://unitsofmeasure.org".into(),
        "CPT" | "C4" => "http://www.ama-assn.org/go/cpt".into(),
        _ if upper.starts_with("HL7")
            && upper.len() == 7
            && upper[3..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            format!("http://terminology.hl7.org/CodeSystem/v2-{}", &upper[3..])
        }
        _ => return None,
    })
}

/// CWE/CE/CNE → CodeableConcept: the primary and alternate codings, CWE-2 as text.
pub fn codeable_concept(rep: &Repetition) -> Option<Value> {
    let mut codings = Vec::new();
    for (code_at, display_at, system_at) in [(1, 2, 3), (4, 5, 6)] {
        if let Some(code) = rep.component(code_at) {
            let mut c = Map::new();
            match rep.component(system_at).and_then(coding_system) {
                Some(system) => {
                    c.insert("system".into(), system.into());
                }
                None => {
                    if let Some(local) = rep.component(system_at) {
                        // An unknown local system: keep its name so nothing is lost.
                        c.insert(
                            "system".into(),
                            format!("urn:hearth:hl7v2:codesystem:{}", local.replace(' ', "_"))
                                .into(),
                        );
                    }
                }
            }
            c.insert("code".into(), code.into());
            if let Some(d) = rep.component(display_at) {
                c.insert("display".into(), d.into());
            }
            codings.push(Value::Object(c));
        }
    }
    let text = rep.component(2).or_else(|| rep.component(9));
    if codings.is_empty() && text.is_none() {
        return None;
    }
    let mut cc = Map::new();
    if !codings.is_empty() {
        cc.insert("coding".into(), Value::Array(codings));
    }
    if let Some(t) = text {
        cc.insert("text".into(), t.into());
    }
    Some(Value::Object(cc))
}

/// A CodeableConcept with one coding from a fixed system.
pub fn concept(system: &str, code: &str, display: Option<&str>) -> Value {
    let mut coding = json!({"system": system, "code": code});
    if let Some(d) = display {
        coding["display"] = d.into();
    }
    json!({"coding": [coding]})
}

/// CX → Identifier. The system comes from the assigning authority: an ISO OID, the feed's
/// map, SSA → the SSN system, else the feed's default or a Hearth URN naming the authority.
pub fn identifier(ctx: &MapContext, rep: &Repetition) -> Option<Value> {
    let value = rep.component(1)?;
    let namespace = rep.subcomponent(4, 1);
    let universal = rep.subcomponent(4, 2);
    let universal_type = rep.subcomponent(4, 3);
    let type_code = rep.component(5);
    let system = match (universal, universal_type) {
        (Some(oid), Some(t)) if t.eq_ignore_ascii_case("ISO") => format!("urn:oid:{oid}"),
        _ => match namespace {
            Some(ns) if ctx.feed.assigning_authorities.contains_key(ns) => {
                ctx.feed.assigning_authorities[ns].clone()
            }
            Some("SSA") | Some("SS") => "http://hl7.org/fhir/sid/us-ssn".into(),
            _ if type_code == Some("SS") => "http://hl7.org/fhir/sid/us-ssn".into(),
            Some(ns) => ctx
                .feed
                .default_identifier_system
                .clone()
                .unwrap_or_else(|| {
                    format!(
                        "urn:hearth:hl7v2:assigning-authority:{}",
                        ns.replace(' ', "_")
                    )
                }),
            None => ctx
                .feed
                .default_identifier_system
                .clone()
                .unwrap_or_else(|| "urn:hearth:hl7v2:assigning-authority:unknown".into()),
        },
    };
    let mut id = json!({"system": system, "value": value});
    if let Some(t) = type_code {
        id["type"] = concept("http://terminology.hl7.org/CodeSystem/v2-0203", t, None);
    }
    Some(id)
}

/// XPN → HumanName.
pub fn human_name(rep: &Repetition) -> Option<Value> {
    let mut name = Map::new();
    if let Some(f) = rep.subcomponent(1, 1) {
        name.insert("family".into(), f.into());
    }
    let given: Vec<Value> = [rep.component(2), rep.component(3)]
        .into_iter()
        .flatten()
        .map(Value::from)
        .collect();
    if !given.is_empty() {
        name.insert("given".into(), Value::Array(given));
    }
    if let Some(s) = rep.component(4) {
        name.insert("suffix".into(), json!([s]));
    }
    if let Some(p) = rep.component(5) {
        name.insert("prefix".into(), json!([p]));
    }
    let name_use = match rep.component(7) {
        Some("L") => Some("official"),
        Some("D") => Some("usual"),
        Some("M") => Some("maiden"),
        Some("N") => Some("nickname"),
        Some("A") => Some("anonymous"),
        Some("T") => Some("temp"),
        _ => None,
    };
    if let Some(u) = name_use {
        name.insert("use".into(), u.into());
    }
    (!name.is_empty()).then_some(Value::Object(name))
}

/// XAD → Address.
pub fn address(rep: &Repetition) -> Option<Value> {
    let mut a = Map::new();
    let lines: Vec<Value> = [rep.subcomponent(1, 1), rep.component(2)]
        .into_iter()
        .flatten()
        .map(Value::from)
        .collect();
    if !lines.is_empty() {
        a.insert("line".into(), Value::Array(lines));
    }
    for (at, key) in [(3, "city"), (4, "state"), (5, "postalCode"), (6, "country")] {
        if let Some(v) = rep.component(at) {
            a.insert(key.into(), v.into());
        }
    }
    let use_ = match rep.component(7) {
        Some("H") | Some("P") => Some("home"),
        Some("B") | Some("O") => Some("work"),
        Some("C") => Some("temp"),
        _ => None,
    };
    if let Some(u) = use_ {
        a.insert("use".into(), u.into());
    }
    (!a.is_empty()).then_some(Value::Object(a))
}

/// XTN → ContactPoint; `default_use` for PID-13 (home) and PID-14 (work).
pub fn contact_point(rep: &Repetition, default_use: &str) -> Option<Value> {
    let equipment = rep.component(3);
    let value = match (rep.component(4), rep.component(1)) {
        (Some(email), _) if equipment == Some("Internet") || equipment == Some("X.400") => {
            email.to_owned()
        }
        (_, Some(v)) => v.to_owned(),
        _ => {
            let parts: Vec<&str> = [rep.component(5), rep.component(6), rep.component(7)]
                .into_iter()
                .flatten()
                .collect();
            if parts.is_empty() {
                return None;
            }
            parts.join("-")
        }
    };
    let system = match equipment {
        Some("Internet") | Some("X.400") => "email",
        Some("FX") => "fax",
        Some("BP") => "pager",
        _ => "phone",
    };
    let use_ = match (rep.component(2), equipment) {
        (_, Some("CP")) => "mobile",
        (Some("WPN"), _) => "work",
        (Some("PRN"), _) | (Some("ORN"), _) | (Some("VHN"), _) => "home",
        _ => default_use,
    };
    Some(json!({"system": system, "value": value, "use": use_}))
}

/// A timestamp field as a FHIR date/dateTime, in the feed's time zone when it has none.
/// `date_only` keeps just the date (birth dates).
pub fn datetime(
    ctx: &MapContext,
    seg: &Segment,
    field: usize,
    date_only: bool,
) -> Result<Option<String>, MappingError> {
    let Some(text) = seg.component(field, 1) else {
        return Ok(None);
    };
    if date_only {
        let date: String = text.chars().take(8).collect();
        return parse_timestamp(&date, None)
            .map(|t| Some(t.fhir))
            .map_err(|_| error_at(102, "not a valid date", &seg.name, seg.sequence, field));
    }
    match parse_timestamp(&text, ctx.feed.time_zone) {
        Ok(t) => Ok(Some(t.fhir)),
        Err(crate::hl7v2::message::Hl7Error::MissingTimeZone) => Err(error_at(
            102,
            "timestamp without a time zone and the feed has no time_zone configured",
            &seg.name,
            seg.sequence,
            field,
        )),
        Err(_) => Err(error_at(
            102,
            "not a valid timestamp",
            &seg.name,
            seg.sequence,
            field,
        )),
    }
}

/// Is this FHIR dateTime precise enough to be an `instant` (seconds and an offset)?
pub fn is_instant(fhir: &str) -> bool {
    fhir.len() >= 20
        && fhir.as_bytes().get(10) == Some(&b'T')
        && (fhir.ends_with('Z') || fhir[19..].contains(['+', '-']))
}

/// An HL7 NM value as a JSON number (FHIR decimal), kept exactly as written.
pub fn decimal(text: &str) -> Option<Value> {
    let t = text.trim();
    let t = t.strip_prefix('+').unwrap_or(t);
    let valid = {
        let digits = t.strip_prefix('-').unwrap_or(t);
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        !int.is_empty()
            && int.bytes().all(|b| b.is_ascii_digit())
            && frac.bytes().all(|b| b.is_ascii_digit())
            && !(digits.ends_with('.'))
    };
    if !valid {
        return None;
    }
    // FHIR decimals have no leading zeros ("007" → "7"), but keep "0.5".
    let (sign, digits) = match t.strip_prefix('-') {
        Some(d) => ("-", d),
        None => ("", t),
    };
    let (int, frac) = digits
        .split_once('.')
        .map_or((digits, None), |(i, f)| (i, Some(f)));
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let normal = match frac {
        Some(f) => format!("{sign}{int}.{f}"),
        None => format!("{sign}{int}"),
    };
    serde_json::from_str::<serde_json::Number>(&normal)
        .ok()
        .map(Value::Number)
}

/// UCUM codes common in lab and vitals feeds: a unit in OBX-6 that is one of these is
/// coded as UCUM even when OBX-6.3 does not say so.
const KNOWN_UCUM: &[&str] = &[
    "%",
    "g/dL",
    "g/L",
    "mg/dL",
    "mg/L",
    "ug/L",
    "ng/mL",
    "pg/mL",
    "mmol/L",
    "umol/L",
    "nmol/L",
    "mEq/L",
    "meq/L",
    "U/L",
    "IU/L",
    "[IU]/L",
    "10*3/uL",
    "10*6/uL",
    "10*9/L",
    "10*12/L",
    "fL",
    "pg",
    "mm[Hg]",
    "/min",
    "kg",
    "g",
    "cm",
    "m",
    "kg/m2",
    "Cel",
    "[degF]",
    "mL/min/{1.73_m2}",
    "mL/min",
    "s",
    "mm/h",
    "L/min",
    "mL",
    "L",
    "{ratio}",
    "1",
];

/// OBX-6 (CWE) and a number → Quantity.
pub fn quantity(value: Value, units: Option<&Repetition>) -> Value {
    let mut q = Map::new();
    q.insert("value".into(), value);
    if let Some(u) = units {
        let code = u.component(1);
        let text = u.component(2).or(code);
        if let Some(t) = text {
            q.insert("unit".into(), t.into());
        }
        let ucum = u
            .component(3)
            .is_some_and(|s| s.eq_ignore_ascii_case("UCUM"))
            || code.is_some_and(|c| KNOWN_UCUM.contains(&c));
        if let (true, Some(c)) = (ucum, code) {
            q.insert("system".into(), "http://unitsofmeasure.org".into());
            q.insert("code".into(), c.into());
        }
    }
    Value::Object(q)
}

/// The display form of an XCN/PL for names of deduplicated resources.
pub fn join_present(parts: &[Option<&str>], sep: &str) -> Option<String> {
    let present: Vec<&str> = parts.iter().flatten().copied().collect();
    (!present.is_empty()).then(|| present.join(sep))
}
