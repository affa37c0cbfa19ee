//! `hearth demo-data`: deterministic, synthetic, US Core-shaped patient records written
//! through the normal write path (`parse_resource` checks, then `Store::update`).
//!
//! Everything here is made up: names are built from syllables, identifiers carry a `SYN-`
//! prefix, phone numbers sit in the fictional 555-01xx range. The same `--seed` and patient
//! number always give the same record, so a re-run adds versions instead of duplicates, and
//! `hearth bench-search` can recompute a patient's name and birth date without reading it.

use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta};
use serde_json::{Value, json};

use crate::cli::CliError;
use crate::config::Config;
use crate::fhir::FhirError;
use crate::resource::ValidationPolicy;
use crate::store::{self, Store, StoreError};
use crate::tenant::TenantId;

pub const DEFAULT_SEED: u64 = 42;

#[derive(clap::Args, Clone)]
pub struct DemoDataArgs {
    #[arg(long)]
    pub tenant: String,
    /// Patients to generate (about 100 resources each).
    #[arg(long)]
    pub patients: usize,
    /// Same seed, same records.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    /// Concurrent writers.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Generate and validate only; write nothing (no database needed).
    #[arg(long)]
    pub dry_run: bool,
}

// ---------------------------------------------------------------------------------------
// Code systems, profiles and code tables

const SNOMED: &str = "http://snomed.info/sct";
const LOINC: &str = "http://loinc.org";
const RXNORM: &str = "http://www.nlm.nih.gov/research/umls/rxnorm";
const CVX: &str = "http://hl7.org/fhir/sid/cvx";
const UCUM: &str = "http://unitsofmeasure.org";
const NPI: &str = "http://hl7.org/fhir/sid/us-npi";
const MRN_SYSTEM: &str = "urn:oid:2.16.840.1.113883.19.5.99";
const OMB_RACE_ETHNICITY: &str = "urn:oid:2.16.840.1.113883.6.238";
const OBS_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
const V3_ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
const ENCOUNTER_ID_SYSTEM: &str = "https://hearth.example/synth/encounter";
const US_CORE: &str = "http://hl7.org/fhir/us/core/StructureDefinition/";

/// Fixed bounds keep the output independent of the day it is generated.
const WINDOW_START: (i32, u32, u32) = (2018, 1, 1);
const WINDOW_END: (i32, u32, u32) = (2026, 10, 31);
const BIRTH_FIRST: (i32, u32, u32) = (1930, 1, 1);
const BIRTH_LAST: (i32, u32, u32) = (2020, 12, 31);

const PRACTITIONERS: usize = 20;
/// Organizations 1..=3 provide care, 4..=5 pay for it.
const PROVIDER_ORGS: usize = 3;
const PAYER_ORGS: usize = 2;
const LOCATIONS: usize = 5;

#[derive(Clone, Copy)]
struct Code {
    code: &'static str,
    display: &'static str,
}

const fn c(code: &'static str, display: &'static str) -> Code {
    Code { code, display }
}

const DIABETES: &str = "44054006";

/// SNOMED CT problems.
const CONDITIONS: &[Code] = &[
    c(DIABETES, "Diabetes mellitus type 2"),
    c("59621000", "Essential hypertension"),
    c("55822004", "Hyperlipidemia"),
    c("195967001", "Asthma"),
    c("13645005", "Chronic obstructive pulmonary disease"),
    c("35489007", "Depressive disorder"),
    c("197480006", "Anxiety disorder"),
    c("414545008", "Ischemic heart disease"),
    c("49436004", "Atrial fibrillation"),
    c("709044004", "Chronic kidney disease"),
    c("239873007", "Osteoarthritis of knee"),
    c("414916001", "Obesity"),
    c("73430006", "Sleep apnea"),
    c("40930008", "Hypothyroidism"),
    c("84114007", "Heart failure"),
    c("235595009", "Gastroesophageal reflux disease"),
    c("271737000", "Anemia"),
    c("444814009", "Viral sinusitis"),
    c("10509002", "Acute bronchitis"),
    c("68566005", "Urinary tract infectious disease"),
];

/// RxNorm drugs with a sig and doses per day.
struct Drug {
    code: Code,
    sig: &'static str,
    per_day: u32,
}

const fn d(code: &'static str, display: &'static str, sig: &'static str, per_day: u32) -> Drug {
    Drug {
        code: c(code, display),
        sig,
        per_day,
    }
}

#[rustfmt::skip]
const MEDICATIONS: &[Drug] = &[
    d("860975", "24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet", "Take 1 tablet by mouth once daily with the evening meal", 1),
    d("197361", "Amlodipine 5 MG Oral Tablet", "Take 1 tablet by mouth once daily", 1),
    d("314076", "Lisinopril 10 MG Oral Tablet", "Take 1 tablet by mouth once daily", 1),
    d("617318", "Atorvastatin 20 MG Oral Tablet", "Take 1 tablet by mouth at bedtime", 1),
    d("310798", "Hydrochlorothiazide 25 MG Oral Tablet", "Take 1 tablet by mouth every morning", 1),
    d("966222", "Levothyroxine Sodium 0.075 MG Oral Tablet", "Take 1 tablet by mouth before breakfast", 1),
    d("312938", "Sertraline 100 MG Oral Tablet", "Take 1 tablet by mouth once daily", 1),
    d("745679", "200 ACTUAT Albuterol 0.09 MG/ACTUAT Metered Dose Inhaler", "Inhale 2 puffs every 4 to 6 hours as needed for wheezing", 4),
    d("313782", "Acetaminophen 325 MG Oral Tablet", "Take 2 tablets by mouth every 6 hours as needed for pain", 4),
    d("310965", "Ibuprofen 200 MG Oral Tablet", "Take 1 tablet by mouth every 8 hours with food as needed", 3),
    d("308182", "Amoxicillin 250 MG Oral Capsule", "Take 1 capsule by mouth three times daily for 10 days", 3),
    d("855332", "Warfarin Sodium 5 MG Oral Tablet", "Take 1 tablet by mouth once daily as directed", 1),
    d("200064", "Furosemide 40 MG Oral Tablet", "Take 1 tablet by mouth every morning", 1),
    d("198211", "Simvastatin 40 MG Oral Tablet", "Take 1 tablet by mouth at bedtime", 1),
    d("261962", "Omeprazole 20 MG Delayed Release Oral Capsule", "Take 1 capsule by mouth before breakfast", 1),
];

/// SNOMED CT procedures.
const PROCEDURES: &[Code] = &[
    c("73761001", "Colonoscopy"),
    c("430193006", "Medication reconciliation"),
    c("171207006", "Depression screening"),
    c("710824005", "Assessment of health and social care needs"),
    c("117015009", "Throat culture"),
    c("399208008", "Plain chest X-ray"),
    c("312681000", "Bone density scan"),
    c("76601001", "Intramuscular injection"),
    c("80146002", "Appendectomy"),
    c("29303009", "Electrocardiographic procedure"),
    c("268556000", "Urine screening for glucose"),
    c("162676008", "Brief general examination"),
];

/// CVX vaccines.
const VACCINES: &[Code] = &[
    c("140", "Influenza, seasonal, injectable, preservative free"),
    c(
        "208",
        "SARS-COV-2 (COVID-19) vaccine, mRNA, spike protein, LNP, preservative free, 30 mcg/0.3mL dose",
    ),
    c("115", "Tdap"),
    c("113", "Td (adult) preservative free"),
    c("133", "Pneumococcal conjugate PCV 13"),
    c("33", "pneumococcal polysaccharide vaccine, 23 valent"),
    c("187", "zoster vaccine recombinant"),
    c("43", "Hep B, adult"),
    c("62", "HPV, quadrivalent"),
];

/// SNOMED CT allergies with their category.
const ALLERGIES: &[(Code, &str)] = &[
    (c("91936005", "Allergy to penicillin"), "medication"),
    (c("294505008", "Allergy to sulfonamides"), "medication"),
    (c("91935009", "Allergy to peanuts"), "food"),
    (c("300913006", "Shellfish allergy"), "food"),
    (c("425525006", "Allergy to dairy product"), "food"),
    (c("418689008", "Allergy to grass pollen"), "environment"),
    (c("232350006", "House dust mite allergy"), "environment"),
    (c("419474003", "Allergy to mold"), "environment"),
    (c("300916003", "Latex allergy"), "environment"),
];

const REACTIONS: &[Code] = &[
    c("271807003", "Eruption of skin"),
    c("878820003", "Rhinoconjunctivitis"),
    c("247472004", "Wheal"),
    c("39579001", "Anaphylaxis"),
];

/// A quantitative result: LOINC code, UCUM unit, plausible range and decimals.
#[derive(Clone, Copy)]
struct Measure {
    code: Code,
    unit: &'static str,
    low: f64,
    high: f64,
    decimals: i32,
}

const fn m(
    code: &'static str,
    display: &'static str,
    unit: &'static str,
    low: f64,
    high: f64,
    decimals: i32,
) -> Measure {
    Measure {
        code: c(code, display),
        unit,
        low,
        high,
        decimals,
    }
}

#[rustfmt::skip]
const HBA1C: Measure = m("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 4.6, 6.2, 1);

/// A lab panel: the DiagnosticReport code and its member results.
struct Panel {
    code: Code,
    members: &'static [Measure],
}

#[rustfmt::skip]
const PANELS: &[Panel] = &[
    Panel {
        code: c("58410-2", "CBC panel - Blood by Automated count"),
        members: &[
            m("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 11.5, 17.0, 1),
            m("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", 3.8, 10.8, 1),
            m("777-3", "Platelets [#/volume] in Blood by Automated count", "10*3/uL", 150.0, 400.0, 0),
            m("4544-3", "Hematocrit [Volume Fraction] of Blood by Automated count", "%", 35.0, 50.0, 1),
        ],
    },
    Panel {
        code: c("51990-0", "Basic metabolic panel - Blood"),
        members: &[
            m("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", 70.0, 140.0, 0),
            m("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 0.6, 1.4, 2),
            m("3094-0", "Urea nitrogen [Mass/volume] in Serum or Plasma", "mg/dL", 7.0, 22.0, 0),
            m("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", 135.0, 146.0, 0),
            m("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 3.5, 5.2, 1),
        ],
    },
    Panel {
        code: c("57698-3", "Lipid panel with direct LDL - Serum or Plasma"),
        members: &[
            m("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", 140.0, 260.0, 0),
            m("2571-8", "Triglyceride [Mass/volume] in Serum or Plasma", "mg/dL", 60.0, 240.0, 0),
            m("2085-9", "Cholesterol in HDL [Mass/volume] in Serum or Plasma", "mg/dL", 35.0, 80.0, 0),
            m("18262-6", "Cholesterol in LDL [Mass/volume] in Serum or Plasma by Direct assay", "mg/dL", 60.0, 180.0, 0),
        ],
    },
    Panel {
        code: c("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood"),
        members: &[HBA1C],
    },
];

// Vital signs other than blood pressure, body weight, height and BMI (those are computed).
const HEART_RATE: Measure = m("8867-4", "Heart rate", "/min", 55.0, 100.0, 0);
#[rustfmt::skip]
const SPO2: Measure = m("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%", 93.0, 100.0, 0);
const SPO2_ALSO: Code = c("2708-6", "Oxygen saturation in Arterial blood");

const STATES: &[(&str, &str, &str, &str, &str)] = &[
    // state, city, ZIP, area code, UTC offset (standard time; fixed offsets are valid FHIR)
    ("MA", "Springfield", "01103", "413", "-05:00"),
    ("IL", "Peoria", "61602", "309", "-06:00"),
    ("TX", "Austin", "78701", "512", "-06:00"),
    ("CA", "Fresno", "93721", "559", "-08:00"),
    ("NY", "Albany", "12207", "518", "-05:00"),
    ("FL", "Tampa", "33602", "813", "-05:00"),
    ("WA", "Spokane", "99201", "509", "-08:00"),
    ("CO", "Boulder", "80302", "303", "-07:00"),
    ("AZ", "Tucson", "85701", "520", "-07:00"),
    ("OH", "Dayton", "45402", "937", "-05:00"),
    ("GA", "Macon", "31201", "478", "-05:00"),
    ("MN", "Duluth", "55802", "218", "-06:00"),
    ("NM", "Santa Fe", "87501", "505", "-07:00"),
];

const STREET_SUFFIXES: &[&str] = &["St", "Ave", "Rd", "Ln", "Way", "Ct", "Blvd"];

// Syllables for fictional names; a few carry accents so non-ASCII names (e.g. Ñúñez, Zoë)
// turn up in every data set.
const GIVEN_HEADS: &[&str] = &[
    "A", "Be", "Ca", "Da", "E", "Fe", "Ga", "Ha", "I", "Jo", "Ka", "Le", "Ma", "Na", "O", "Pe",
    "Ri", "Sa", "Ta", "Va", "Ze", "Zo", "Mí", "Jé",
];
const GIVEN_MIDS: &[&str] = &["", "", "la", "ri", "na", "ve", "mi", "lo", "ra", "se"];
const GIVEN_TAILS: &[&str] = &[
    "n", "lle", "ra", "th", "ë", "o", "x", "nia", "ssa", "é", "el", "r", "lia", "mon", "da",
];
const FAMILY_HEADS: &[&str] = &[
    "Al", "Bran", "Cor", "Dun", "El", "Fen", "Gar", "Hol", "Ib", "Jor", "Kel", "Lin", "Mor", "Ñú",
    "Os", "Pel", "Quin", "Rav", "Sté", "Tor", "Ul", "Vas", "Wyn", "Yar", "Zan", "Bø",
];
const FAMILY_MIDS: &[&str] = &["", "", "", "a", "e", "i", "o", "ber", "den", "ma", "ri"];
const FAMILY_TAILS: &[&str] = &[
    "son", "ez", "ford", "man", "ley", "ström", "ton", "ard", "ini", "ova", "ñez", "wick", "ço",
    "berg", "field",
];

// ---------------------------------------------------------------------------------------
// A tiny seeded PRNG (splitmix64): enough for test data, no crate needed.

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// An independent stream per (seed, patient, purpose): changing how one part of a record
    /// is drawn does not shift the others.
    pub fn stream(seed: u64, patient: usize, purpose: u64) -> Rng {
        let mut r = Rng(seed
            ^ (patient as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ purpose.wrapping_mul(0xD1B5_4A32_D192_ED03));
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        lo + self.below((hi - lo + 1) as usize) as i64
    }

    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// One element of a non-empty table.
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// `k` distinct indices of `0..n` (fewer when `n < k`).
    fn distinct(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..n).collect();
        for i in 0..k.min(n) {
            let j = i + self.below(n - i);
            all.swap(i, j);
        }
        all.truncate(k.min(n));
        all
    }
}

// ---------------------------------------------------------------------------------------
// JSON helpers

fn ymd((y, m, d): (i32, u32, u32)) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap_or(NaiveDate::MIN)
}

fn random_day(rng: &mut Rng, from: NaiveDate, to: NaiveDate) -> NaiveDate {
    let span = (to - from).num_days().max(0);
    from + TimeDelta::days(rng.range(0, span))
}

/// A clinic-hours moment on `day`.
fn clinic_time(rng: &mut Rng, day: NaiveDate) -> NaiveDateTime {
    day.and_time(NaiveTime::MIN) + TimeDelta::minutes(rng.range(7 * 60 + 30, 17 * 60) / 5 * 5)
}

fn date_time(t: NaiveDateTime, tz: &str) -> String {
    format!("{}{tz}", t.format("%Y-%m-%dT%H:%M:%S"))
}

fn age_on(birth: NaiveDate, day: NaiveDate) -> i32 {
    let years = day.year() - birth.year();
    if day.ordinal() < birth.ordinal() {
        years - 1
    } else {
        years
    }
}

fn coding(system: &str, code: &Code) -> Value {
    json!({"system": system, "code": code.code, "display": code.display})
}

fn concept(system: &str, code: &Code) -> Value {
    json!({"coding": [coding(system, code)], "text": code.display})
}

fn reference(resource_type: &str, id: &str) -> Value {
    json!({"reference": format!("{resource_type}/{id}")})
}

fn profile(name: &str) -> Value {
    json!({"profile": [format!("{US_CORE}{name}")]})
}

fn rounded(x: f64, decimals: i32) -> Value {
    if decimals <= 0 {
        return json!(x.round() as i64);
    }
    let scale = 10f64.powi(decimals);
    serde_json::Number::from_f64((x * scale).round() / scale).map_or(Value::Null, Value::Number)
}

fn quantity(value: Value, unit: &str) -> Value {
    json!({"value": value, "unit": unit, "system": UCUM, "code": unit})
}

/// Add `key` to a JSON object (optional elements: FHIR JSON has no nulls).
fn set(target: &mut Value, key: &str, value: Value) {
    if let Value::Object(map) = target {
        map.insert(key.to_owned(), value);
    }
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn given_name(rng: &mut Rng) -> String {
    let name = format!(
        "{}{}{}",
        rng.pick(GIVEN_HEADS),
        rng.pick(GIVEN_MIDS),
        rng.pick(GIVEN_TAILS)
    );
    capitalized(&name)
}

fn family_name(rng: &mut Rng) -> String {
    let one = |rng: &mut Rng| {
        format!(
            "{}{}{}",
            rng.pick(FAMILY_HEADS),
            rng.pick(FAMILY_MIDS),
            rng.pick(FAMILY_TAILS)
        )
    };
    let first = one(rng);
    if rng.chance(0.05) {
        format!("{first}-{}", one(rng))
    } else {
        first
    }
}

fn phone(rng: &mut Rng, area: &str) -> String {
    // 555-0100..0199 is reserved for fiction.
    format!("({area}) 555-01{:02}", rng.below(100))
}

fn street_address(rng: &mut Rng) -> String {
    format!(
        "{} {} {}",
        rng.range(1, 9999),
        capitalized(&family_name(rng)),
        rng.pick(STREET_SUFFIXES)
    )
}

fn address(rng: &mut Rng, state: usize, use_: &str) -> Value {
    let (st, city, zip, _, _) = STATES[state % STATES.len()];
    json!({
        "use": use_,
        "line": [street_address(rng)],
        "city": city,
        "state": st,
        "postalCode": zip,
        "country": "US"
    })
}

/// A fictional NPI (9-prefixed, so never a real one's range start) with a valid check
/// digit: US Core checks it (us-core-17, Luhn over "80840" + the first nine digits).
fn npi(kind: u64, n: usize) -> String {
    let base = format!("9{kind}{n:07}");
    let digits: Vec<u32> = format!("80840{base}")
        .chars()
        .filter_map(|c| c.to_digit(10))
        .collect();
    // Luhn: double every second digit from the right of the payload (which is the
    // rightmost once the check digit is appended).
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                *d
            }
        })
        .sum();
    let check = (10 - sum % 10) % 10;
    format!("{base}{check}")
}

// ---------------------------------------------------------------------------------------
// Records

/// One generated resource.
pub struct Synth {
    pub resource_type: &'static str,
    pub id: String,
    pub body: Value,
}

fn synth(resource_type: &'static str, id: String, mut body: Value) -> Synth {
    set(&mut body, "id", Value::String(id.clone()));
    Synth {
        resource_type,
        id,
        body,
    }
}

pub fn patient_id(n: usize) -> String {
    format!("synth-patient-{n}")
}

pub fn mrn(n: usize) -> String {
    format!("SYN-{n}")
}

fn practitioner_id(k: usize) -> String {
    format!("synth-practitioner-{k}")
}

fn organization_id(k: usize) -> String {
    format!("synth-organization-{k}")
}

fn location_id(k: usize) -> String {
    format!("synth-location-{k}")
}

/// The parts of a patient `hearth bench-search` needs to build its queries.
pub struct PatientFacts {
    pub number: usize,
    pub family: String,
    pub given: Vec<String>,
    pub gender: &'static str,
    pub birth_date: NaiveDate,
    state: usize,
}

/// Stream purposes (see [`Rng::stream`]).
const FACTS: u64 = 1;
const CLINICAL: u64 = 2;
const SHARED: u64 = 3;

pub fn patient_facts(seed: u64, n: usize) -> PatientFacts {
    let mut rng = Rng::stream(seed, n, FACTS);
    let family = family_name(&mut rng);
    let mut given = vec![given_name(&mut rng)];
    if rng.chance(0.4) {
        given.push(given_name(&mut rng));
    }
    let gender = match rng.below(100) {
        0..=48 => "female",
        49..=97 => "male",
        98 => "other",
        _ => "unknown",
    };
    let birth_date = random_day(&mut rng, ymd(BIRTH_FIRST), ymd(BIRTH_LAST));
    let state = rng.below(STATES.len());
    PatientFacts {
        number: n,
        family,
        given,
        gender,
        birth_date,
        state,
    }
}

/// Practitioners, Organizations and Locations every patient refers to.
pub fn shared_resources(seed: u64) -> Vec<Synth> {
    let mut rng = Rng::stream(seed, 0, SHARED);
    let mut out = Vec::new();
    for k in 1..=PROVIDER_ORGS + PAYER_ORGS {
        let payer = k > PROVIDER_ORGS;
        let state = rng.below(STATES.len());
        let (_, city, _, area, _) = STATES[state];
        let (name, type_code, type_display) = if payer {
            (
                format!("{} Health Plan", capitalized(&family_name(&mut rng))),
                "pay",
                "Payer",
            )
        } else {
            (
                format!(
                    "{} Community Health, {city}",
                    capitalized(&family_name(&mut rng))
                ),
                "prov",
                "Healthcare Provider",
            )
        };
        let body = json!({
            "resourceType": "Organization",
            "meta": profile("us-core-organization"),
            "identifier": [{"system": NPI, "value": npi(1, k)}],
            "active": true,
            "type": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/organization-type",
                "code": type_code,
                "display": type_display
            }]}],
            "name": name,
            "telecom": [{"system": "phone", "value": phone(&mut rng, area), "use": "work"}],
            "address": [address(&mut rng, state, "work")]
        });
        out.push(synth("Organization", organization_id(k), body));
    }
    for k in 1..=PRACTITIONERS {
        let state = rng.below(STATES.len());
        let (_, _, _, area, _) = STATES[state];
        let body = json!({
            "resourceType": "Practitioner",
            "meta": profile("us-core-practitioner"),
            "identifier": [{"system": NPI, "value": npi(2, k)}],
            "active": true,
            "name": [{
                "use": "official",
                "family": family_name(&mut rng),
                "given": [given_name(&mut rng)],
                "prefix": ["Dr."]
            }],
            "telecom": [{"system": "phone", "value": phone(&mut rng, area), "use": "work"}],
            "address": [address(&mut rng, state, "work")],
            "gender": if rng.chance(0.5) { "female" } else { "male" }
        });
        out.push(synth("Practitioner", practitioner_id(k), body));
    }
    for k in 1..=LOCATIONS {
        let state = rng.below(STATES.len());
        let (_, city, _, area, _) = STATES[state];
        let org = 1 + (k - 1) % PROVIDER_ORGS;
        let body = json!({
            "resourceType": "Location",
            "meta": profile("us-core-location"),
            "status": "active",
            "name": format!("{city} Clinic {k}"),
            "type": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
                "code": "OF",
                "display": "Outpatient facility"
            }]}],
            "telecom": [{"system": "phone", "value": phone(&mut rng, area), "use": "work"}],
            "address": address(&mut rng, state, "work"),
            "managingOrganization": reference("Organization", &organization_id(org))
        });
        out.push(synth("Location", location_id(k), body));
    }
    out
}

struct Encounter {
    id: String,
    start: NaiveDateTime,
    end: NaiveDateTime,
    inpatient: bool,
    practitioner: usize,
    org: usize,
    location: usize,
}

/// Builds one patient's record; owns the id counters so ids stay `synth-<type>-<n>-<k>`.
struct Record<'a> {
    rng: Rng,
    facts: &'a PatientFacts,
    tz: &'static str,
    patient_ref: Value,
    primary: usize,
    out: Vec<Synth>,
    counters: std::collections::HashMap<&'static str, usize>,
}

impl Record<'_> {
    fn next_id(&mut self, resource_type: &'static str) -> String {
        let k = self.counters.entry(resource_type).or_insert(0);
        *k += 1;
        format!(
            "synth-{}-{}-{}",
            resource_type.to_ascii_lowercase(),
            self.facts.number,
            k
        )
    }

    fn push(&mut self, resource_type: &'static str, id: String, body: Value) {
        self.out.push(synth(resource_type, id, body));
    }

    fn window(&self) -> (NaiveDate, NaiveDate) {
        (
            ymd(WINDOW_START).max(self.facts.birth_date),
            ymd(WINDOW_END),
        )
    }

    fn practitioner(&mut self) -> usize {
        // Most care comes from the patient's own clinician.
        if self.rng.chance(0.6) {
            self.primary
        } else {
            1 + self.rng.below(PRACTITIONERS)
        }
    }

    fn practitioner_ref(&self, k: usize) -> Value {
        reference("Practitioner", &practitioner_id(k))
    }

    fn when(&self, t: NaiveDateTime) -> String {
        date_time(t, self.tz)
    }
}

fn patient_resource(rec: &mut Record) -> Value {
    let f = rec.facts;
    let rng = &mut rec.rng;
    let (_, _, _, area, _) = STATES[f.state];
    let (race_code, race_display) = *rng.pick(&[
        ("2106-3", "White"),
        ("2054-5", "Black or African American"),
        ("2028-9", "Asian"),
        ("1002-5", "American Indian or Alaska Native"),
        ("2076-8", "Native Hawaiian or Other Pacific Islander"),
    ]);
    let (eth_code, eth_display) = if rng.chance(0.2) {
        ("2135-2", "Hispanic or Latino")
    } else {
        ("2186-5", "Not Hispanic or Latino")
    };
    let birth_sex = match f.gender {
        "female" => "F",
        "male" => "M",
        _ => "UNK",
    };
    let (lang, lang_display) = if eth_code == "2135-2" && rng.chance(0.5) {
        ("es", "Spanish")
    } else {
        ("en-US", "English (United States)")
    };
    json!({
        "resourceType": "Patient",
        "meta": profile("us-core-patient"),
        "extension": [
            {
                "url": format!("{US_CORE}us-core-race"),
                "extension": [
                    {"url": "ombCategory", "valueCoding": {
                        "system": OMB_RACE_ETHNICITY, "code": race_code, "display": race_display}},
                    {"url": "text", "valueString": race_display}
                ]
            },
            {
                "url": format!("{US_CORE}us-core-ethnicity"),
                "extension": [
                    {"url": "ombCategory", "valueCoding": {
                        "system": OMB_RACE_ETHNICITY, "code": eth_code, "display": eth_display}},
                    {"url": "text", "valueString": eth_display}
                ]
            },
            {"url": format!("{US_CORE}us-core-birthsex"), "valueCode": birth_sex}
        ],
        "identifier": [{
            "use": "usual",
            "type": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                "code": "MR",
                "display": "Medical Record Number"
            }], "text": "Medical Record Number"},
            "system": MRN_SYSTEM,
            "value": mrn(f.number)
        }],
        "active": true,
        "name": [{"use": "official", "family": f.family, "given": f.given}],
        "telecom": [
            {"system": "phone", "value": phone(rng, area), "use": if rng.chance(0.5) { "home" } else { "mobile" }},
            {"system": "email", "value": format!("synth{}@example.org", f.number)}
        ],
        "gender": f.gender,
        "birthDate": f.birth_date.format("%Y-%m-%d").to_string(),
        "address": [address(rng, f.state, "home")],
        "communication": [{"language": {"coding": [{
            "system": "urn:ietf:bcp:47", "code": lang, "display": lang_display}], "text": lang_display}}],
        "generalPractitioner": [reference("Practitioner", &practitioner_id(rec.primary))],
        "managingOrganization": reference("Organization", &organization_id(1 + f.number % PROVIDER_ORGS))
    })
}

fn encounters(rec: &mut Record) -> Vec<Encounter> {
    let (from, to) = rec.window();
    let count = rec.rng.range(1, 7) as usize;
    let mut days: Vec<NaiveDate> = (0..count)
        .map(|_| random_day(&mut rec.rng, from, to))
        .collect();
    days.sort_unstable();
    let mut out = Vec::with_capacity(count);
    for day in days {
        let inpatient = rec.rng.chance(0.15);
        let start = clinic_time(&mut rec.rng, day);
        let end = if inpatient {
            start + TimeDelta::hours(rec.rng.range(20, 140))
        } else {
            start + TimeDelta::minutes(rec.rng.range(3, 12) * 5)
        };
        let practitioner = rec.practitioner();
        let enc = Encounter {
            id: rec.next_id("Encounter"),
            start,
            end,
            inpatient,
            practitioner,
            org: 1 + rec.rng.below(PROVIDER_ORGS),
            location: 1 + rec.rng.below(LOCATIONS),
        };
        let (class, class_display, type_code) = if inpatient {
            (
                "IMP",
                "inpatient encounter",
                c("32485007", "Hospital admission"),
            )
        } else {
            (
                "AMB",
                "ambulatory",
                *rec.rng.pick(&[
                    c("185349003", "Encounter for check up"),
                    c("185345009", "Encounter for symptom"),
                    c("390906007", "Follow-up encounter"),
                ]),
            )
        };
        let mut body = json!({
            "resourceType": "Encounter",
            "meta": profile("us-core-encounter"),
            "identifier": [{"system": ENCOUNTER_ID_SYSTEM, "value": enc.id}],
            "status": "finished",
            "class": {"system": V3_ACT_CODE, "code": class, "display": class_display},
            "type": [concept(SNOMED, &type_code)],
            "subject": rec.patient_ref,
            "participant": [{
                "type": [{"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                    "code": "PPRF",
                    "display": "primary performer"
                }]}],
                "period": {"start": rec.when(enc.start), "end": rec.when(enc.end)},
                "individual": rec.practitioner_ref(enc.practitioner)
            }],
            "period": {"start": rec.when(enc.start), "end": rec.when(enc.end)},
            "location": [{"location": reference("Location", &location_id(enc.location))}],
            "serviceProvider": reference("Organization", &organization_id(enc.org))
        });
        if inpatient {
            set(
                &mut body,
                "hospitalization",
                json!({"dischargeDisposition": {"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/discharge-disposition",
                    "code": "home",
                    "display": "Home"
                }]}}),
            );
        }
        rec.push("Encounter", enc.id.clone(), body);
        out.push(enc);
    }
    out
}

fn conditions(rec: &mut Record, encs: &[Encounter]) -> Vec<Code> {
    let count = rec.rng.range(1, 5) as usize;
    let picked: Vec<Code> = rec
        .rng
        .distinct(CONDITIONS.len(), count)
        .into_iter()
        .map(|i| CONDITIONS[i])
        .collect();
    let (_, to) = rec.window();
    for code in &picked {
        let id = rec.next_id("Condition");
        let on_encounter = !encs.is_empty() && rec.rng.chance(0.4);
        let (category, category_display, onset, encounter) = if on_encounter {
            let e = rec.rng.pick(encs);
            (
                "encounter-diagnosis",
                "Encounter Diagnosis",
                e.start,
                Some(e.id.clone()),
            )
        } else {
            let day = random_day(&mut rec.rng, rec.facts.birth_date, to);
            (
                "problem-list-item",
                "Problem List Item",
                clinic_time(&mut rec.rng, day),
                None,
            )
        };
        let resolved = rec.rng.chance(0.25);
        let mut body = json!({
            "resourceType": "Condition",
            "meta": profile("us-core-condition-problems-health-concerns"),
            "clinicalStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                "code": if resolved { "resolved" } else { "active" }
            }]},
            "verificationStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                "code": "confirmed"
            }]},
            "category": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                "code": category,
                "display": category_display
            }]}],
            "code": concept(SNOMED, code),
            "subject": rec.patient_ref,
            "onsetDateTime": rec.when(onset),
            "recordedDate": rec.when(onset)
        });
        if let Some(enc) = encounter {
            set(
                &mut body,
                "meta",
                profile("us-core-condition-encounter-diagnosis"),
            );
            set(&mut body, "encounter", reference("Encounter", &enc));
        }
        if resolved {
            let abated = onset + TimeDelta::days(rec.rng.range(7, 400));
            set(
                &mut body,
                "abatementDateTime",
                Value::String(rec.when(abated)),
            );
        }
        rec.push("Condition", id, body);
    }
    picked
}

fn category(code: &str, display: &str) -> Value {
    json!([{"coding": [{"system": OBS_CATEGORY, "code": code, "display": display}], "text": display}])
}

fn measured(rng: &mut Rng, m: &Measure) -> Value {
    rounded(m.low + rng.unit() * (m.high - m.low), m.decimals)
}

/// Vital signs, lab panels (with their DiagnosticReports) for a series of visits.
fn observations(rec: &mut Record, encs: &[Encounter], diabetic: bool) {
    let (from, to) = rec.window();
    let f = rec.facts;
    // Body habitus: stable per patient so weight, height and BMI agree.
    let adult_height = if f.gender == "female" {
        150.0 + rec.rng.unit() * 28.0
    } else {
        160.0 + rec.rng.unit() * 32.0
    };
    let adult_bmi = 19.0 + rec.rng.unit() * 17.0;
    let visits = rec.rng.range(2, 13) as usize;
    for v in 0..visits {
        // The first visits are the encounters; the rest are lab or vitals checks outside them.
        let (at, encounter, performer) = match encs.get(v) {
            Some(e) => (
                e.start + TimeDelta::minutes(10),
                Some(e.id.clone()),
                e.practitioner,
            ),
            None => {
                let day = random_day(&mut rec.rng, from, to);
                let p = rec.practitioner();
                (clinic_time(&mut rec.rng, day), None, p)
            }
        };
        let age = age_on(f.birth_date, at.date()).max(0);
        let growth = (f64::from(age) / 18.0).min(1.0);
        let height = 50.0 + (adult_height - 50.0) * growth + rec.rng.unit() * 0.8;
        let bmi = if age < 18 {
            15.0 + f64::from(age) * 0.25
        } else {
            adult_bmi
        } + rec.rng.unit() * 1.5
            - 0.75;
        let weight = bmi * (height / 100.0) * (height / 100.0);
        let base = |rec: &Record, profile_name: &str, cat: &str, cat_display: &str, code: &Code| {
            let mut body = json!({
                "resourceType": "Observation",
                "meta": profile(profile_name),
                "status": "final",
                "category": category(cat, cat_display),
                "code": concept(LOINC, code),
                "subject": rec.patient_ref,
                "effectiveDateTime": rec.when(at),
                "performer": [rec.practitioner_ref(performer)]
            });
            if let Some(e) = &encounter {
                set(&mut body, "encounter", reference("Encounter", e));
            }
            body
        };
        // Vital signs: one of each.
        let mut bp = base(
            rec,
            "us-core-blood-pressure",
            "vital-signs",
            "Vital Signs",
            &c("85354-9", "Blood pressure panel with all children optional"),
        );
        let systolic = rec.rng.range(100, 165);
        let diastolic = rec.rng.range(60, 100).min(systolic - 25);
        set(
            &mut bp,
            "component",
            json!([
                {"code": concept(LOINC, &c("8480-6", "Systolic blood pressure")),
                 "valueQuantity": quantity(json!(systolic), "mm[Hg]")},
                {"code": concept(LOINC, &c("8462-4", "Diastolic blood pressure")),
                 "valueQuantity": quantity(json!(diastolic), "mm[Hg]")}
            ]),
        );
        let id = rec.next_id("Observation");
        rec.push("Observation", id, bp);
        let simple: [(&str, Code, Value, &str); 4] = [
            (
                "us-core-heart-rate",
                HEART_RATE.code,
                measured(&mut rec.rng, &HEART_RATE),
                HEART_RATE.unit,
            ),
            (
                "us-core-body-weight",
                c("29463-7", "Body weight"),
                rounded(weight, 1),
                "kg",
            ),
            (
                "us-core-body-height",
                c("8302-2", "Body height"),
                rounded(height, 1),
                "cm",
            ),
            (
                "us-core-bmi",
                c("39156-5", "Body mass index (BMI) [Ratio]"),
                rounded(bmi, 1),
                "kg/m2",
            ),
        ];
        for (name, code, value, unit) in simple {
            let mut body = base(rec, name, "vital-signs", "Vital Signs", &code);
            set(&mut body, "valueQuantity", quantity(value, unit));
            let id = rec.next_id("Observation");
            rec.push("Observation", id, body);
        }
        let mut spo2 = base(
            rec,
            "us-core-pulse-oximetry",
            "vital-signs",
            "Vital Signs",
            &SPO2.code,
        );
        set(
            &mut spo2,
            "code",
            json!({"coding": [coding(LOINC, &SPO2.code), coding(LOINC, &SPO2_ALSO)],
                   "text": SPO2.code.display}),
        );
        set(
            &mut spo2,
            "valueQuantity",
            quantity(measured(&mut rec.rng, &SPO2), SPO2.unit),
        );
        let id = rec.next_id("Observation");
        rec.push("Observation", id, spo2);

        // Labs on about half of the visits, every inpatient stay.
        let inpatient = encs.get(v).is_some_and(|e| e.inpatient);
        if !(inpatient || rec.rng.chance(0.45)) {
            continue;
        }
        let panels = rec.rng.range(1, 2) as usize;
        let issued = at + TimeDelta::minutes(rec.rng.range(90, 60 * 30));
        for p in rec.rng.distinct(PANELS.len(), panels) {
            let panel = &PANELS[p];
            let mut results = Vec::new();
            for member in panel.members {
                let mut measure = *member;
                if diabetic && member.code.code == HBA1C.code.code {
                    measure.low = 6.5;
                    measure.high = 10.5;
                }
                let mut body = base(
                    rec,
                    "us-core-observation-lab",
                    "laboratory",
                    "Laboratory",
                    &member.code,
                );
                set(&mut body, "issued", Value::String(rec.when(issued)));
                set(
                    &mut body,
                    "valueQuantity",
                    quantity(measured(&mut rec.rng, &measure), member.unit),
                );
                set(
                    &mut body,
                    "referenceRange",
                    json!([{
                        "low": quantity(rounded(member.low, member.decimals), member.unit),
                        "high": quantity(rounded(member.high, member.decimals), member.unit)
                    }]),
                );
                let id = rec.next_id("Observation");
                results.push(reference("Observation", &id));
                rec.push("Observation", id, body);
            }
            let mut report = json!({
                "resourceType": "DiagnosticReport",
                "meta": profile("us-core-diagnosticreport-lab"),
                "status": "final",
                "category": [{"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/v2-0074",
                    "code": "LAB",
                    "display": "Laboratory"
                }]}],
                "code": concept(LOINC, &panel.code),
                "subject": rec.patient_ref,
                "effectiveDateTime": rec.when(at),
                "issued": rec.when(issued),
                "performer": [reference("Organization", &organization_id(1 + f.number % PROVIDER_ORGS))],
                "result": results
            });
            if let Some(e) = &encounter {
                set(&mut report, "encounter", reference("Encounter", e));
            }
            let id = rec.next_id("DiagnosticReport");
            rec.push("DiagnosticReport", id, report);
        }
    }
}

fn medication_requests(rec: &mut Record, encs: &[Encounter]) {
    let (from, to) = rec.window();
    let count = rec.rng.range(2, 14);
    for _ in 0..count {
        let drug = rec.rng.pick(MEDICATIONS);
        let (authored, encounter, requester) = if !encs.is_empty() && rec.rng.chance(0.7) {
            let e = rec.rng.pick(encs);
            (
                e.start + TimeDelta::minutes(20),
                Some(e.id.clone()),
                e.practitioner,
            )
        } else {
            let day = random_day(&mut rec.rng, from, to);
            let p = rec.practitioner();
            (clinic_time(&mut rec.rng, day), None, p)
        };
        // Older prescriptions have mostly run their course.
        let recent = (ymd(WINDOW_END) - authored.date()).num_days() < 365;
        let status = if recent || rec.rng.chance(0.2) {
            "active"
        } else if rec.rng.chance(0.85) {
            "completed"
        } else {
            "stopped"
        };
        let mut body = json!({
            "resourceType": "MedicationRequest",
            "meta": profile("us-core-medicationrequest"),
            "status": status,
            "intent": "order",
            "category": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
                "code": "community",
                "display": "Community"
            }]}],
            "medicationCodeableConcept": concept(RXNORM, &drug.code),
            "subject": rec.patient_ref,
            "authoredOn": rec.when(authored),
            "requester": rec.practitioner_ref(requester),
            "dosageInstruction": [{
                "sequence": 1,
                "text": drug.sig,
                "timing": {"repeat": {"frequency": drug.per_day, "period": 1, "periodUnit": "d"}}
            }]
        });
        if let Some(e) = encounter {
            set(&mut body, "encounter", reference("Encounter", &e));
        }
        let id = rec.next_id("MedicationRequest");
        rec.push("MedicationRequest", id, body);
    }
}

fn procedures(rec: &mut Record, encs: &[Encounter]) {
    let (from, to) = rec.window();
    let count = rec.rng.range(1, 9);
    for _ in 0..count {
        let code = *rec.rng.pick(PROCEDURES);
        let (at, encounter, performer, location) = if !encs.is_empty() && rec.rng.chance(0.75) {
            let e = rec.rng.pick(encs);
            (
                e.start + TimeDelta::minutes(15),
                Some(e.id.clone()),
                e.practitioner,
                e.location,
            )
        } else {
            let day = random_day(&mut rec.rng, from, to);
            let p = rec.practitioner();
            (
                clinic_time(&mut rec.rng, day),
                None,
                p,
                1 + rec.rng.below(LOCATIONS),
            )
        };
        let mut body = json!({
            "resourceType": "Procedure",
            "meta": profile("us-core-procedure"),
            "status": "completed",
            "code": concept(SNOMED, &code),
            "subject": rec.patient_ref,
            "performedDateTime": rec.when(at),
            "performer": [{"actor": rec.practitioner_ref(performer)}],
            "location": reference("Location", &location_id(location))
        });
        if let Some(e) = encounter {
            set(&mut body, "encounter", reference("Encounter", &e));
        }
        let id = rec.next_id("Procedure");
        rec.push("Procedure", id, body);
    }
}

fn documents(rec: &mut Record, encs: &[Encounter], problems: &[Code]) {
    let (from, to) = rec.window();
    let count = rec.rng.range(1, 5) as usize;
    let f = rec.facts;
    let problem_list = problems
        .iter()
        .map(|p| p.display)
        .collect::<Vec<_>>()
        .join(", ");
    for k in 0..count {
        let (start, end, encounter, author, org, discharge) = match encs.get(k) {
            Some(e) => (
                e.start,
                e.end,
                Some(e.id.clone()),
                e.practitioner,
                e.org,
                e.inpatient,
            ),
            None => {
                let day = random_day(&mut rec.rng, from, to);
                let t = clinic_time(&mut rec.rng, day);
                let p = rec.practitioner();
                (
                    t,
                    t + TimeDelta::minutes(20),
                    None,
                    p,
                    1 + rec.rng.below(PROVIDER_ORGS),
                    false,
                )
            }
        };
        let kind = if discharge {
            c("18842-5", "Discharge summary")
        } else {
            c("11506-3", "Progress note")
        };
        let plan = rec.rng.pick(&[
            "Continue current medications. Follow up in 3 months.",
            "Labs ordered. Follow up in 6 weeks to review results.",
            "Lifestyle counselling given. Follow up in 1 year.",
            "Medication adjusted. Follow up in 4 weeks.",
        ]);
        let note = format!(
            "{title} for {given} {family} (MRN {mrn}), {date}.\n\
             Active problems: {problem_list}.\n\
             Plan: {plan}\n\
             Synthetic note written by hearth demo-data; not a real patient.\n",
            title = kind.display,
            given = f.given.join(" "),
            family = f.family,
            mrn = mrn(f.number),
            date = start.format("%Y-%m-%d"),
        );
        let data = base64::engine::general_purpose::STANDARD.encode(note.as_bytes());
        let mut body = json!({
            "resourceType": "DocumentReference",
            "meta": profile("us-core-documentreference"),
            "status": "current",
            "type": concept(LOINC, &kind),
            "category": [{"coding": [{
                "system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category",
                "code": "clinical-note",
                "display": "Clinical Note"
            }]}],
            "subject": rec.patient_ref,
            "date": rec.when(end),
            "author": [rec.practitioner_ref(author)],
            "custodian": reference("Organization", &organization_id(org)),
            "content": [{
                "attachment": {
                    "contentType": "text/plain",
                    "data": data,
                    "title": kind.display,
                    "creation": rec.when(end)
                },
                "format": {
                    "system": "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode",
                    "code": "urn:ihe:iti:xds:2017:mimeTypeSufficient",
                    "display": "mimeType Sufficient"
                }
            }],
            "context": {"period": {"start": rec.when(start), "end": rec.when(end)}}
        });
        if let (Some(e), Some(Value::Object(context))) = (encounter, body.get_mut("context")) {
            context.insert("encounter".into(), json!([reference("Encounter", &e)]));
        }
        let id = rec.next_id("DocumentReference");
        rec.push("DocumentReference", id, body);
    }
}

fn allergies(rec: &mut Record) {
    let (_, to) = rec.window();
    let count = rec.rng.range(0, 4) as usize;
    for i in rec.rng.distinct(ALLERGIES.len(), count) {
        let (code, cat) = ALLERGIES[i];
        let day = random_day(&mut rec.rng, rec.facts.birth_date, to);
        let at = clinic_time(&mut rec.rng, day);
        let reaction = *rec.rng.pick(REACTIONS);
        let severe = reaction.code == "39579001";
        let body = json!({
            "resourceType": "AllergyIntolerance",
            "meta": profile("us-core-allergyintolerance"),
            "clinicalStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                "code": "active"
            }]},
            "verificationStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                "code": "confirmed"
            }]},
            "type": "allergy",
            "category": [cat],
            "criticality": if severe { "high" } else { "low" },
            "code": concept(SNOMED, &code),
            "patient": rec.patient_ref,
            "onsetDateTime": rec.when(at),
            "recordedDate": rec.when(at),
            "reaction": [{
                "manifestation": [concept(SNOMED, &reaction)],
                "severity": if severe { "severe" } else { "mild" }
            }]
        });
        let id = rec.next_id("AllergyIntolerance");
        rec.push("AllergyIntolerance", id, body);
    }
}

fn immunizations(rec: &mut Record) {
    let (from, to) = rec.window();
    let count = rec.rng.range(1, 5);
    for _ in 0..count {
        let vaccine = *rec.rng.pick(VACCINES);
        let day = random_day(&mut rec.rng, from, to);
        let at = clinic_time(&mut rec.rng, day);
        let performer = rec.practitioner();
        let lot = format!("SYN{:06}", rec.rng.below(1_000_000));
        let body = json!({
            "resourceType": "Immunization",
            "meta": profile("us-core-immunization"),
            "status": "completed",
            "vaccineCode": concept(CVX, &vaccine),
            "patient": rec.patient_ref,
            "occurrenceDateTime": rec.when(at),
            "primarySource": true,
            "location": reference("Location", &location_id(1 + rec.rng.below(LOCATIONS))),
            "lotNumber": lot,
            "performer": [{
                "function": {"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/v2-0443",
                    "code": "AP",
                    "display": "Administering Provider"
                }]},
                "actor": rec.practitioner_ref(performer)
            }]
        });
        let id = rec.next_id("Immunization");
        rec.push("Immunization", id, body);
    }
}

fn coverage(rec: &mut Record) {
    let f = rec.facts;
    let age_now = age_on(f.birth_date, ymd(WINDOW_END));
    let (type_code, type_display) = if age_now >= 65 {
        ("1", "MEDICARE")
    } else if rec.rng.chance(0.2) {
        ("2", "MEDICAID")
    } else {
        ("5", "PRIVATE HEALTH INSURANCE")
    };
    let payer = PROVIDER_ORGS + 1 + rec.rng.below(PAYER_ORGS);
    let start = ymd(WINDOW_START).max(f.birth_date);
    let body = json!({
        "resourceType": "Coverage",
        "meta": profile("us-core-coverage"),
        "identifier": [{
            "type": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                "code": "MB",
                "display": "Member Number"
            }]},
            "system": "https://hearth.example/synth/member",
            "value": format!("SYNM-{}", f.number)
        }],
        "status": "active",
        "type": {"coding": [{
            "system": "https://nahdo.org/sopt",
            "code": type_code,
            "display": type_display
        }]},
        "subscriberId": format!("SYNM-{}", f.number),
        "beneficiary": rec.patient_ref,
        "relationship": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/subscriber-relationship",
            "code": "self",
            "display": "Self"
        }]},
        "period": {"start": start.format("%Y-%m-%d").to_string()},
        "payor": [reference("Organization", &organization_id(payer))],
        "class": [{
            "type": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/coverage-class",
                "code": "group",
                "display": "Group"
            }]},
            "value": format!("GRP-{}", 100 + payer),
            "name": "Synthetic employer group"
        }]
    });
    let id = rec.next_id("Coverage");
    rec.push("Coverage", id, body);
}

/// Every resource of patient `n` (1-based), the Patient first, referenced resources before
/// the resources that refer to them.
pub fn patient_record(seed: u64, n: usize) -> Vec<Synth> {
    let facts = patient_facts(seed, n);
    let mut rec = Record {
        rng: Rng::stream(seed, n, CLINICAL),
        tz: STATES[facts.state].4,
        patient_ref: reference("Patient", &patient_id(n)),
        primary: 1 + n % PRACTITIONERS,
        facts: &facts,
        out: Vec::with_capacity(128),
        counters: std::collections::HashMap::new(),
    };
    let patient = patient_resource(&mut rec);
    rec.push("Patient", patient_id(n), patient);
    let encs = encounters(&mut rec);
    let problems = conditions(&mut rec, &encs);
    let diabetic = problems.iter().any(|p| p.code == DIABETES);
    observations(&mut rec, &encs, diabetic);
    medication_requests(&mut rec, &encs);
    procedures(&mut rec, &encs);
    documents(&mut rec, &encs, &problems);
    allergies(&mut rec);
    immunizations(&mut rec);
    coverage(&mut rec);
    rec.out
}

// ---------------------------------------------------------------------------------------
// Writing

#[derive(Default)]
struct Tally {
    written: AtomicU64,
    patients: AtomicU64,
    rejected: AtomicU64,
    /// The first few rejections, to fix the generator by.
    examples: Mutex<Vec<String>>,
}

struct Writer {
    store: Option<Store>,
    tenant: TenantId,
    local_base: String,
    /// The tenant's validation, as every other write of it gets.
    policy: ValidationPolicy,
    tally: Tally,
}

impl Writer {
    /// Validate and store one resource exactly as `hearth load` does. A validation failure
    /// is a generator defect: counted and kept as an example, not fatal to the run.
    async fn write(&self, s: Synth) -> Result<(), CliError> {
        let incoming = match crate::fhir::parse_resource(
            s.body.to_string().as_bytes(),
            s.resource_type,
            self.policy,
        ) {
            Ok(incoming) => incoming,
            Err(e) => {
                self.reject(&s, &e);
                return Ok(());
            }
        };
        if let Some(store) = &self.store {
            store
                .update(&self.tenant, s.resource_type, &s.id, None, |stamp| {
                    incoming.render(&s.id, stamp, &self.local_base)
                })
                .await?;
        }
        self.tally.written.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn reject(&self, s: &Synth, e: &FhirError) {
        self.tally.rejected.fetch_add(1, Ordering::Relaxed);
        let issues: Vec<String> = e
            .issues
            .iter()
            .map(|i| format!("{} {}", i.expression.join(","), i.diagnostics))
            .collect();
        if let Ok(mut examples) = self.tally.examples.lock()
            && examples.len() < 10
        {
            examples.push(format!(
                "{}/{}: {}",
                s.resource_type,
                s.id,
                issues.join("; ")
            ));
        }
    }
}

fn progress(tally: &Tally, started: Instant, patients: usize) {
    let written = tally.written.load(Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    let _ = writeln!(
        std::io::stderr().lock(),
        "demo-data: {} / {patients} patients, {written} resources, {:.0} s, {:.0} resources/s",
        tally.patients.load(Ordering::Relaxed),
        secs,
        written as f64 / secs.max(1e-9)
    );
}

pub async fn run(config: Config, args: DemoDataArgs) -> Result<(), CliError> {
    let tenant = TenantId::parse(&args.tenant)?;
    let concurrency = args.concurrency.max(1);
    let store = if args.dry_run {
        None
    } else {
        let max = u32::try_from(concurrency + 2).unwrap_or(u32::MAX);
        let pool = store::connect(config.database_url()?, max).await?;
        let store = Store::new(pool, config.database.lock_timeout_ms);
        match store.create_tenant(&tenant, "synthetic demo data").await {
            Ok(()) | Err(StoreError::TenantExists) => {}
            Err(e) => return Err(e.into()),
        }
        Some(store)
    };
    let policy = match &store {
        Some(store) => {
            let t = store.tenant_settings(&tenant).await?;
            ValidationPolicy {
                mode: t.validation,
                implied: t.validate_implied,
            }
        }
        // A dry run checks against US Core, as an enforcing tenant would.
        None => ValidationPolicy {
            mode: crate::store::ValidationMode::Enforce,
            implied: true,
        },
    };
    let writer = Arc::new(Writer {
        store,
        policy,
        local_base: format!("{}/", config.fhir_base(&tenant)),
        tenant,
        tally: Tally::default(),
    });
    let started = Instant::now();
    for s in shared_resources(args.seed) {
        writer.write(s).await?;
    }
    let next = Arc::new(AtomicUsize::new(1));
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (writer, next) = (writer.clone(), next.clone());
        let (seed, patients) = (args.seed, args.patients);
        workers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n > patients {
                    return Ok::<(), CliError>(());
                }
                for s in patient_record(seed, n) {
                    if let Err(e) = writer.write(s).await {
                        // Stop the other writers too: a store error is not per-patient.
                        next.store(patients + 1, Ordering::Relaxed);
                        return Err(e);
                    }
                }
                writer.tally.patients.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let reporter = {
        let writer = writer.clone();
        let patients = args.patients;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            tick.tick().await;
            loop {
                tick.tick().await;
                progress(&writer.tally, started, patients);
            }
        })
    };
    let mut failure = None;
    for w in workers {
        let result = match w.await {
            Ok(result) => result,
            Err(e) => Err(CliError::Usage(format!("a writer task failed: {e}"))),
        };
        if let Err(e) = result {
            failure.get_or_insert(e);
        }
    }
    reporter.abort();
    if let Some(e) = failure {
        return Err(e);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let written = writer.tally.written.load(Ordering::Relaxed);
    let rejected = writer.tally.rejected.load(Ordering::Relaxed);
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} {written} resources for {} patients into {} in {elapsed:.1} s: {:.0} resources/s",
        if args.dry_run { "validated" } else { "wrote" },
        args.patients,
        writer.tenant,
        written as f64 / elapsed.max(1e-9)
    )?;
    if rejected > 0 {
        let examples = writer
            .tally
            .examples
            .lock()
            .map(|e| e.join("\n  "))
            .unwrap_or_default();
        return Err(CliError::Usage(format!(
            "{rejected} generated resources failed validation (a generator defect):\n  {examples}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejection(s: &Synth) -> Option<String> {
        // Tests hold the generator to US Core, as an enforcing tenant would.
        let policy = ValidationPolicy {
            mode: crate::store::ValidationMode::Enforce,
            implied: true,
        };
        crate::fhir::parse_resource(s.body.to_string().as_bytes(), s.resource_type, policy)
            .err()
            .map(|e| format!("{}/{}: {:?}", s.resource_type, s.id, e.issues))
    }

    #[test]
    fn records_are_deterministic_per_seed_and_patient() {
        let a: Vec<Value> = patient_record(7, 3).into_iter().map(|s| s.body).collect();
        let b: Vec<Value> = patient_record(7, 3).into_iter().map(|s| s.body).collect();
        let other: Vec<Value> = patient_record(8, 3).into_iter().map(|s| s.body).collect();
        assert_eq!(a, b);
        assert_ne!(a, other);
        assert_eq!(patient_facts(7, 3).family, patient_facts(7, 3).family);
    }

    #[test]
    fn every_generated_resource_is_valid_r4_with_a_valid_id() {
        let mut all = shared_resources(DEFAULT_SEED);
        for n in 1..=25 {
            all.extend(patient_record(DEFAULT_SEED, n));
        }
        let rejected: Vec<String> = all.iter().filter_map(rejection).collect();
        assert!(rejected.is_empty(), "{rejected:#?}");
        for s in &all {
            let valid = s.id.len() <= 64
                && s.id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            assert!(valid, "{}", s.id);
        }
    }

    #[test]
    fn the_validator_would_notice_a_broken_generator() {
        let mut patient = patient_record(DEFAULT_SEED, 1).remove(0);
        set(&mut patient.body, "birthDate", json!("1980-13-45"));
        assert!(rejection(&patient).is_some());
    }

    #[test]
    fn about_a_hundred_resources_per_patient() {
        let total: usize = (1..=200)
            .map(|n| patient_record(DEFAULT_SEED, n).len())
            .sum();
        let mean = total as f64 / 200.0;
        assert!((85.0..=115.0).contains(&mean), "{mean}");
    }

    #[test]
    fn some_names_are_accented() {
        let accented = (1..=200)
            .map(|n| patient_facts(DEFAULT_SEED, n))
            .filter(|f| !f.family.is_ascii() || f.given.iter().any(|g| !g.is_ascii()))
            .count();
        assert!(accented > 10, "{accented}");
    }

    #[test]
    fn rng_stays_in_range() {
        let mut rng = Rng::new(1);
        for _ in 0..10_000 {
            assert!(rng.below(7) < 7);
            let r = rng.range(-3, 3);
            assert!((-3..=3).contains(&r));
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u));
        }
        assert_eq!(rng.below(0), 0);
    }
}
