//! `hearth bench-mllp`: HL7 v2 over MLLP under load, and where the time of one message goes.
//!
//! For each connection count and each round: a fresh tenant (`bench-mllp-*`), Hearth's MLLP
//! service started in this process on 127.0.0.1:0 for it, N concurrent connections (our
//! `mllp::MllpClient`), each sending M synthetic messages back to back and checking every ACK
//! (MSA-1 = AA, MSA-2 = the message's MSH-10); anything else is counted, listed at the end,
//! and makes the command fail (a connection closed without an ACK is counted too, and the
//! message is sent again on a new connection, as a sender would). Reported per connection count: acknowledged
//! messages per second, client-side ACK latency p50/p99, the service's own
//! `hearth_hl7_ack_seconds`, and CPU per message of this process and of the PostgreSQL
//! backends the service opened (Linux `/proc`), medians over rounds.
//!
//! Then a single-connection pass calls `Ingestor::process` directly, one message at a time, on
//! the largest connection count's messages (its streams interleaved, the first
//! `--stage-messages`), in a fresh tenant per round, and times parse (`Message::parse`), map
//! (`map_message`), check + render of the mapped resources (CPU), and the whole `process`;
//! SQL + commit is `process - parse - map`. A PostgreSQL `SELECT 1` and a durable commit are
//! timed alongside, to compare the SQL time with bare round trips.
//!
//! The messages: ADT^A01 (new visit) and ADT^A08 (update: new phone, sometimes a new bed),
//! both with PID, PV1 (attending doctor), IN1, AL1 and DG1; ORU^R01 with an ORC, one OBR and
//! five NM OBX. `--patients` patients are partitioned over the connections (a patient's
//! messages stay in order on one connection, as with a real feed), so patients see updates;
//! doctors, beds and payors are shared by every connection. The streams depend only on the
//! seed and the connection count: every round sends the same messages into a new tenant.
//! Tenants are left in place.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use mllp::MllpClient;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::cli::CliError;
use crate::config::{Config, FeedConfig, MllpListenerConfig};
use crate::hl7v2::feed::ListenerSettings;
use crate::hl7v2::ingest::{Answer, Ingestor, Receipt};
use crate::hl7v2::map::{Content, MapContext, map_message};
use crate::hl7v2::message::Message;
use crate::hl7v2::service;
use crate::ops::Metrics;
use crate::store::{self, Store, StoreError, VersionStamp};
use crate::tenant::TenantId;

#[derive(clap::Args, Clone)]
pub struct BenchMllpArgs {
    /// Connection counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    pub connections: Vec<usize>,
    /// Messages each connection sends per round.
    #[arg(long, default_value_t = 500)]
    pub messages: usize,
    /// Rounds per connection count (and of the single-connection stage pass); medians are
    /// reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Message mix as kind:weight, kinds `adt` (A01/A08) and `oru` (R01).
    #[arg(long, default_value = "adt:3,oru:1")]
    pub mix: String,
    /// Distinct patients, partitioned over the connections.
    #[arg(long, default_value_t = 500)]
    pub patients: usize,
    /// Messages in the single-connection stage pass: the streams of the largest connection
    /// count interleaved (each patient's messages stay in order), the first this many (0: all).
    #[arg(long, default_value_t = 1000)]
    pub stage_messages: usize,
    /// Seed of the message generator.
    #[arg(long, default_value_t = 20240415)]
    pub seed: u64,
}

const SENDING_APPLICATION: &str = "BENCH_EHR";
const SENDING_FACILITY: &str = "BENCH_HOSP";
const LISTENER: &str = "bench-mllp";
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a message is sent when the connection closes without an ACK.
const SEND_ATTEMPTS: usize = 3;
/// `/proc/*/stat` counts CPU time in USER_HZ ticks, 100 per second on Linux.
const TICKS_PER_SEC: f64 = 100.0;

// ---------------------------------------------------------------------------------------
// The message generator
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Mix {
    adt: u64,
    oru: u64,
}

fn parse_mix(text: &str) -> Result<Mix, CliError> {
    let mut mix = Mix { adt: 0, oru: 0 };
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (kind, weight) = part
            .split_once(':')
            .ok_or_else(|| CliError::Usage(format!("--mix: '{part}' is not kind:weight")))?;
        let weight: u32 = weight
            .trim()
            .parse()
            .map_err(|_| CliError::Usage(format!("--mix: '{weight}' is not a weight")))?;
        match kind.trim() {
            "adt" => mix.adt = u64::from(weight),
            "oru" => mix.oru = u64::from(weight),
            other => {
                return Err(CliError::Usage(format!(
                    "--mix: unknown kind '{other}' (adt, oru)"
                )));
            }
        }
    }
    if mix.adt + mix.oru == 0 {
        return Err(CliError::Usage("--mix: the weights add up to 0".into()));
    }
    Ok(mix)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    A01,
    A08,
    R01,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::A01, Kind::A08, Kind::R01];

    fn label(self) -> &'static str {
        match self {
            Kind::A01 => "ADT^A01",
            Kind::A08 => "ADT^A08",
            Kind::R01 => "ORU^R01",
        }
    }

    fn index(self) -> usize {
        match self {
            Kind::A01 => 0,
            Kind::A08 => 1,
            Kind::R01 => 2,
        }
    }
}

struct Generated {
    control_id: String,
    kind: Kind,
    raw: Vec<u8>,
}

#[derive(Clone, Copy)]
struct Plan {
    messages: usize,
    patients: usize,
    mix: Mix,
    seed: u64,
}

const FAMILIES: &[&str] = &[
    "Abernathy",
    "Brightwater",
    "Castellano",
    "Delacroix",
    "Eastwood",
    "Fairbanks",
    "Galloway",
    "Hollister",
    "Iverson",
    "Jankowski",
    "Kowalczyk",
    "Lindqvist",
    "Montgomery",
    "Nakamura",
    "Okonkwo",
    "Pemberton",
    "Quintero",
    "Rasmussen",
    "Sandoval",
    "Thornbury",
    "Underhill",
    "Valdivia",
    "Whitlock",
    "Yamamoto",
    "Zielinski",
];
const GIVENS: &[&str] = &[
    "Avery", "Blake", "Casey", "Dana", "Emerson", "Finley", "Harper", "Jordan", "Kendall", "Logan",
    "Morgan", "Parker", "Quinn", "Riley", "Sawyer", "Taylor", "Rowan", "Skyler", "Reese", "Hayden",
];
const STREETS: &[&str] = &[
    "Maple Lane",
    "Ocean View Rd",
    "Harbor Blvd",
    "Cedar Court",
    "Birch Street",
    "Willow Way",
    "Summit Ave",
    "Mill Road",
];
const CITIES: &[(&str, &str, &str)] = &[
    ("Lanternbrook", "CA", "95999"),
    ("Emberfield", "IL", "62999"),
    ("Foxhollow", "MA", "01999"),
    ("Stonebridge", "TX", "79999"),
];
const RACES: &[(&str, &str)] = &[
    ("2106-3", "White"),
    ("2054-5", "Black or African American"),
    ("2028-9", "Asian"),
    ("1002-5", "American Indian or Alaska Native"),
];
const ETHNICITIES: &[(&str, &str)] = &[
    ("2186-5", "Not Hispanic or Latino"),
    ("2135-2", "Hispanic or Latino"),
];
const MARITAL: &[(&str, &str)] = &[
    ("S", "Single"),
    ("M", "Married"),
    ("D", "Divorced"),
    ("W", "Widowed"),
];
const DOCTORS: usize = 40;
const WARDS: &[&str] = &["4W", "5E", "6N", "3S", "7W", "ICU"];
const ROOMS: u32 = 12;
/// (company id, company name, plan code, plan name)
const PAYORS: &[(&str, &str, &str, &str)] = &[
    (
        "PAY001",
        "Imaginary Mutual Insurance Co",
        "IMIPPO",
        "Imaginary PPO",
    ),
    (
        "PAY002",
        "Synthetic Health Partners",
        "SHPHMO",
        "Synthetic HMO",
    ),
    (
        "PAY003",
        "Fictional Medicare Advantage",
        "FMA01",
        "Advantage Gold",
    ),
    ("PAY004", "Placeholder Blue Plan", "PBPPO", "Blue PPO"),
    ("PAY005", "Example Care Alliance", "ECAEPO", "Alliance EPO"),
    (
        "PAY006",
        "Notional State Medicaid",
        "NSMCD",
        "Medicaid Managed Care",
    ),
    ("PAY007", "Mock Employers Trust", "METHD", "High Deductible"),
    ("PAY008", "Sample Union Health Fund", "SUHF", "Union Plan"),
];
/// (AL1-2 category, category text, code, name, coding system)
const ALLERGENS: &[(&str, &str, &str, &str, &str)] = &[
    ("DA", "Drug allergy", "7980", "Penicillin G", "RXNORM"),
    ("DA", "Drug allergy", "2670", "Codeine", "RXNORM"),
    ("DA", "Drug allergy", "1191", "Aspirin", "RXNORM"),
    ("DA", "Drug allergy", "10180", "Sulfamethoxazole", "RXNORM"),
    ("FA", "Food allergy", "256349002", "Peanut", "SCT"),
    ("FA", "Food allergy", "102263004", "Eggs", "SCT"),
    (
        "EA",
        "Environmental allergy",
        "256277009",
        "Grass pollen",
        "SCT",
    ),
    ("EA", "Environmental allergy", "111088007", "Latex", "SCT"),
];
const REACTIONS: &[&str] = &["Hives", "Rash", "Wheezing", "Throat tightness", "Nausea"];
const DIAGNOSES: &[(&str, &str)] = &[
    ("R07.9", "Chest pain, unspecified"),
    ("I10", "Essential (primary) hypertension"),
    ("J18.9", "Pneumonia, unspecified organism"),
    ("E11.9", "Type 2 diabetes mellitus without complications"),
    ("N39.0", "Urinary tract infection, site not specified"),
    ("I48.91", "Unspecified atrial fibrillation"),
    (
        "J44.1",
        "Chronic obstructive pulmonary disease with acute exacerbation",
    ),
    ("K35.80", "Unspecified acute appendicitis"),
    ("R55", "Syncope and collapse"),
    ("A41.9", "Sepsis, unspecified organism"),
    ("I50.9", "Heart failure, unspecified"),
    ("N17.9", "Acute kidney failure, unspecified"),
];
/// A basic metabolic panel: (LOINC, name, UCUM unit, low, high, decimals).
const PANEL: &[(&str, &str, &str, f64, f64, usize)] = &[
    ("2951-2", "Sodium", "mmol/L", 136.0, 145.0, 0),
    ("2823-3", "Potassium", "mmol/L", 3.5, 5.1, 1),
    ("2075-0", "Chloride", "mmol/L", 98.0, 107.0, 0),
    ("2345-7", "Glucose", "mg/dL", 70.0, 99.0, 0),
    ("2160-0", "Creatinine", "mg/dL", 0.6, 1.3, 2),
];

#[derive(Clone)]
struct Visit {
    number: String,
    admitted: NaiveDateTime,
    ward: usize,
    room: u32,
    bed: char,
    doctor: usize,
    diagnoses: Vec<usize>,
}

#[derive(Default)]
struct PatientState {
    visits: u32,
    visit: Option<Visit>,
    phone_changes: usize,
}

struct Demographics {
    family: &'static str,
    given: &'static str,
    middle: &'static str,
    dob: String,
    sex: &'static str,
    address: String,
}

fn demographics(p: usize) -> Demographics {
    let (city, state, zip) = CITIES[p % CITIES.len()];
    Demographics {
        family: FAMILIES[p % FAMILIES.len()],
        given: GIVENS[(p / FAMILIES.len()) % GIVENS.len()],
        middle: GIVENS[(p * 7 + 3) % GIVENS.len()],
        dob: format!(
            "{}{:02}{:02}",
            1935 + (p * 7) % 70,
            1 + p % 12,
            1 + (p * 11) % 28
        ),
        sex: if p.is_multiple_of(2) { "F" } else { "M" },
        address: format!(
            "{} {}^^{city}^{state}^{zip}^USA^H",
            10 + (p * 13) % 980,
            STREETS[(p * 3) % STREETS.len()]
        ),
    }
}

fn hl7_time(t: NaiveDateTime) -> String {
    t.format("%Y%m%d%H%M%S").to_string()
}

fn doctor(k: usize) -> String {
    format!(
        "{}^{}^{}^^^Dr^^^NPI",
        1_234_500_000 + k * 17,
        FAMILIES[(k * 7 + 2) % FAMILIES.len()],
        GIVENS[(k * 3 + 1) % GIVENS.len()]
    )
}

fn pid_segment(p: usize, phone_changes: usize) -> String {
    let d = demographics(p);
    let (race, race_text) = RACES[p % RACES.len()];
    let (eth, eth_text) = ETHNICITIES[(p / 3) % ETHNICITIES.len()];
    let (marital, marital_text) = MARITAL[(p / 5) % MARITAL.len()];
    let phone = (p * 37 + phone_changes * 101) % 10_000;
    format!(
        "PID|1||BMRN{p:06}^^^{SENDING_FACILITY}^MR||{}^{}^{}^^^^L||{}|{}||{race}^{race_text}^CDCREC|{}||(555)555-{phone:04}^PRN^PH^^1^555^555{phone:04}||ENG^English^HL70296|{marital}^{marital_text}^HL70002||BACCT{p:06}^^^{SENDING_FACILITY}^AN||||{eth}^{eth_text}^CDCREC",
        d.family, d.given, d.middle, d.dob, d.sex, d.address
    )
}

fn pv1_inpatient(visit: &Visit, full: bool) -> String {
    let location = format!(
        "{}^{}^{}^{SENDING_FACILITY}",
        WARDS[visit.ward % WARDS.len()],
        100 + visit.room,
        visit.bed
    );
    let head = format!(
        "PV1|1|I|{location}|E|||{}|||MED||||7|||||{}^^^{SENDING_FACILITY}^VN",
        doctor(visit.doctor),
        visit.number
    );
    if full {
        format!(
            "{head}||||||||||||||||||||{SENDING_FACILITY}|||||{}",
            hl7_time(visit.admitted)
        )
    } else {
        head
    }
}

fn msh(now: NaiveDateTime, kind: Kind, control_id: &str) -> String {
    let message_type = match kind {
        Kind::A01 => "ADT^A01^ADT_A01",
        Kind::A08 => "ADT^A08^ADT_A01",
        Kind::R01 => "ORU^R01^ORU_R01",
    };
    format!(
        "MSH|^~\\&|{SENDING_APPLICATION}|{SENDING_FACILITY}|HEARTH|HEARTH|{}||{message_type}|{control_id}|P|2.5.1",
        hl7_time(now)
    )
}

fn adt(
    kind: Kind,
    control_id: &str,
    now: NaiveDateTime,
    p: usize,
    state: &PatientState,
    visit: &Visit,
) -> String {
    let event = if kind == Kind::A01 { "A01" } else { "A08" };
    let d = demographics(p);
    let mut segments = vec![
        msh(now, kind, control_id),
        format!("EVN|{event}|{}", hl7_time(now)),
        pid_segment(p, state.phone_changes),
        pv1_inpatient(visit, true),
    ];
    let (payor_id, payor_name, plan, plan_name) = PAYORS[p % PAYORS.len()];
    segments.push(format!(
        "IN1|1|{plan}^{plan_name}^L|{payor_id}^^^{SENDING_FACILITY}^XX|{payor_name}|100 Payer Plaza^^Foxhollow^MA^01999^USA^B||(800)555-0100^WPN^PH^^1^800^5550100|GRP-{:04}|Bench Employers Group|||20240101|20241231|||{}^{}^^^^^L|SEL^Self^HL70063|{}|{}|||||||||||||||||POL{p:07}",
        p % 97,
        d.family,
        d.given,
        d.dob,
        d.address
    ));
    let first = (p * 3) % ALLERGENS.len();
    let second = (p * 5 + 1) % ALLERGENS.len();
    let allergies: Vec<usize> = if p.is_multiple_of(2) || first == second {
        vec![first]
    } else {
        vec![first, second]
    };
    for (i, a) in allergies.iter().enumerate() {
        let (category, category_text, code, name, system) = ALLERGENS[*a % ALLERGENS.len()];
        let (severity, severity_text) = if a % 3 == 0 {
            ("SV", "Severe")
        } else {
            ("MO", "Moderate")
        };
        segments.push(format!(
            "AL1|{}|{category}^{category_text}^HL70127|{code}^{name}^{system}|{severity}^{severity_text}^HL70128|{}|20100512",
            i + 1,
            REACTIONS[(p + i) % REACTIONS.len()]
        ));
    }
    for (i, dx) in visit.diagnoses.iter().enumerate() {
        let (code, text) = DIAGNOSES[*dx % DIAGNOSES.len()];
        segments.push(format!(
            "DG1|{}||{code}^{text}^I10C||{}|A^Admitting^HL70052",
            i + 1,
            hl7_time(visit.admitted)
        ));
    }
    let mut text = segments.join("\r");
    text.push('\r');
    text
}

fn oru(
    rng: &mut StdRng,
    control_id: &str,
    now: NaiveDateTime,
    p: usize,
    state: &PatientState,
) -> String {
    let (pv1, doc) = match &state.visit {
        Some(v) => (pv1_inpatient(v, false), doctor(v.doctor)),
        None => (
            format!("PV1|1|O|LAB^^^{SENDING_FACILITY}"),
            doctor(rng.gen_range(0..DOCTORS)),
        ),
    };
    let collected = hl7_time(now - chrono::Duration::minutes(45));
    let reported = hl7_time(now);
    let mut segments = vec![
        msh(now, Kind::R01, control_id),
        pid_segment(p, state.phone_changes),
        pv1,
        format!(
            "ORC|RE|PLC{control_id}^{SENDING_APPLICATION}|FIL{control_id}^BENCH_LAB||CM||||{reported}|||{doc}"
        ),
        format!(
            "OBR|1|PLC{control_id}^{SENDING_APPLICATION}|FIL{control_id}^BENCH_LAB|51990-0^Basic metabolic panel - Blood^LN|||{collected}|||||||||{doc}||||||{reported}||CH|F"
        ),
    ];
    for (i, (loinc, name, unit, low, high, decimals)) in PANEL.iter().enumerate() {
        let value = low + (high - low) * rng.gen_range(-0.3..1.3);
        let flag = if value < *low {
            "L"
        } else if value > *high {
            "H"
        } else {
            "N"
        };
        let d = *decimals;
        segments.push(format!(
            "OBX|{}|NM|{loinc}^{name}^LN||{value:.d$}|{unit}^{unit}^UCUM|{low:.d$}-{high:.d$}|{flag}|||F|||{collected}|||||{reported}",
            i + 1
        ));
    }
    let mut text = segments.join("\r");
    text.push('\r');
    text
}

/// The messages connection `connection` of `connections` sends. Deterministic.
fn stream(plan: &Plan, connection: usize, connections: usize) -> Vec<Generated> {
    let seed = plan.seed ^ ((connections as u64) << 32) ^ (connection as u64);
    let mut rng = StdRng::seed_from_u64(seed);
    let patients = plan.patients.max(1);
    let mut mine: Vec<usize> = (0..patients)
        .filter(|p| p % connections.max(1) == connection)
        .collect();
    if mine.is_empty() {
        mine.push(connection % patients);
    }
    let mut states: BTreeMap<usize, PatientState> = BTreeMap::new();
    let start = NaiveDate::from_ymd_opt(2024, 4, 15)
        .and_then(|d| d.and_hms_opt(8, 0, 0))
        .unwrap_or_default();
    let total_weight = plan.mix.adt + plan.mix.oru;
    let mut out = Vec::with_capacity(plan.messages);
    for j in 0..plan.messages {
        let now = start
            .checked_add_signed(chrono::Duration::seconds((j as i64).saturating_mul(20)))
            .unwrap_or(start);
        let p = mine[rng.gen_range(0..mine.len())];
        let is_adt = rng.gen_range(0..total_weight) < plan.mix.adt;
        let control_id = format!("BM{connection:03}{j:07}");
        let state = states.entry(p).or_default();
        let (kind, text) = if is_adt {
            let kind = if state.visit.is_none() || rng.gen_bool(0.25) {
                state.visits += 1;
                let mut diagnoses = vec![rng.gen_range(0..DIAGNOSES.len())];
                if rng.gen_bool(0.5) {
                    let second = rng.gen_range(0..DIAGNOSES.len());
                    if !diagnoses.contains(&second) {
                        diagnoses.push(second);
                    }
                }
                state.visit = Some(Visit {
                    number: format!("BV{p:05}{:03}", state.visits),
                    admitted: now,
                    ward: rng.gen_range(0..WARDS.len()),
                    room: rng.gen_range(1..=ROOMS),
                    bed: if rng.gen_bool(0.5) { 'A' } else { 'B' },
                    doctor: rng.gen_range(0..DOCTORS),
                    diagnoses,
                });
                Kind::A01
            } else {
                state.phone_changes += 1;
                if rng.gen_bool(0.5)
                    && let Some(v) = state.visit.as_mut()
                {
                    v.ward = rng.gen_range(0..WARDS.len());
                    v.room = rng.gen_range(1..=ROOMS);
                }
                Kind::A08
            };
            match &state.visit {
                Some(visit) => (kind, adt(kind, &control_id, now, p, state, visit)),
                // Unreachable: an ADT message always has a visit by now.
                None => (Kind::R01, oru(&mut rng, &control_id, now, p, state)),
            }
        } else {
            (Kind::R01, oru(&mut rng, &control_id, now, p, state))
        };
        out.push(Generated {
            control_id,
            kind,
            raw: text.into_bytes(),
        });
    }
    out
}

/// The streams of `connections` connections taken in turn, one message of each at a time
/// (so each patient's messages stay in order), the first `limit` (0: all).
fn interleaved(plan: &Plan, connections: usize, limit: usize) -> Vec<Generated> {
    let mut streams: Vec<std::vec::IntoIter<Generated>> = (0..connections)
        .map(|c| stream(plan, c, connections).into_iter())
        .collect();
    let mut out = Vec::new();
    loop {
        let mut any = false;
        for s in streams.iter_mut() {
            if let Some(m) = s.next() {
                any = true;
                out.push(m);
                if limit > 0 && out.len() >= limit {
                    return out;
                }
            }
        }
        if !any {
            return out;
        }
    }
}

fn kind_counts<'a>(messages: impl Iterator<Item = &'a Generated>) -> [usize; 3] {
    let mut counts = [0; 3];
    for m in messages {
        if let Some(c) = counts.get_mut(m.kind.index()) {
            *c += 1;
        }
    }
    counts
}

fn describe_counts(counts: [usize; 3]) -> String {
    Kind::ALL
        .iter()
        .zip(counts)
        .map(|(k, n)| format!("{} {n}", k.label()))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------
// Checking ACKs
// ---------------------------------------------------------------------------------------

/// A failure: its kind (for counting) and one example's detail.
type Failure = (String, String);

fn check_ack(ack: &[u8], control_id: &str) -> Result<(), Failure> {
    let msg =
        Message::parse(ack, None).map_err(|e| ("unreadable ACK".to_owned(), e.to_string()))?;
    let msa = msg
        .first("MSA")
        .ok_or_else(|| ("ACK without MSA".to_owned(), control_id.to_owned()))?;
    let code = msa.component(1, 1).unwrap_or_default();
    let echoed = msa.component(2, 1).unwrap_or_default();
    if code != "AA" {
        let text = msa.component(3, 1).unwrap_or_default();
        return Err((format!("MSA-1 {code}"), format!("{control_id}: {text}")));
    }
    if echoed != control_id {
        return Err((
            "MSA-2 is not the MSH-10".to_owned(),
            format!("sent {control_id}, ACK names {echoed}"),
        ));
    }
    Ok(())
}

#[derive(Default)]
struct Failures(BTreeMap<String, (usize, String)>);

impl Failures {
    fn add(&mut self, (kind, detail): Failure) {
        self.0.entry(kind).or_insert((0, detail)).0 += 1;
    }

    fn merge(&mut self, other: Failures) {
        for (kind, (n, detail)) in other.0 {
            self.0.entry(kind).or_insert((0, detail)).0 += n;
        }
    }

    fn count(&self) -> usize {
        self.0.values().map(|(n, _)| n).sum()
    }
}

// ---------------------------------------------------------------------------------------
// CPU accounting (Linux /proc; None elsewhere)
// ---------------------------------------------------------------------------------------

/// User + system CPU seconds of a process (`self` or a pid).
fn process_cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces; fields restart after it at
    // field 3 (state), so utime (14) and stime (15) are at 11 and 12.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SEC)
}

/// Machine-wide (busy, total) CPU ticks.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4)?;
    Some((total.saturating_sub(idle), total))
}

/// The machine's busy fraction between two readings, and its busy CPU seconds.
fn machine_busy(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<(f64, f64)> {
    let ((b0, t0), (b1, t1)) = (before?, after?);
    let total = t1.checked_sub(t0)?;
    let busy = b1.saturating_sub(b0) as f64;
    (total > 0).then(|| (busy / total as f64, busy / TICKS_PER_SEC))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "n/a".into())
}

async fn db_now(store: &Store) -> Result<DateTime<Utc>, CliError> {
    Ok(sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(store.pool())
        .await
        .map_err(StoreError::from)?)
}

/// CPU seconds of this role's PostgreSQL backends started since `since` (the pools opened for
/// the measurement); None without /proc or without such backends.
async fn pg_backend_cpu(store: &Store, since: DateTime<Utc>) -> Result<Option<f64>, CliError> {
    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity
          WHERE datname = current_database() AND usename = current_user
            AND backend_start >= $1 AND pid <> pg_backend_pid()",
    )
    .bind(since)
    .fetch_all(store.pool())
    .await
    .map_err(StoreError::from)?;
    if pids.is_empty() {
        return Ok(None);
    }
    let mut total = 0.0;
    for pid in pids {
        match process_cpu_secs(&pid.to_string()) {
            Some(s) => total += s,
            None => return Ok(None),
        }
    }
    Ok(Some(total))
}

/// What the service's PostgreSQL backends were doing, summed over samples of
/// `pg_stat_activity`.
#[derive(Default, Clone, Copy)]
struct BackendStates {
    samples: u64,
    /// Active with no wait event: on a CPU or waiting for one.
    running: u64,
    /// Heavyweight locks: row locks, the advisory locks of a message's resources.
    lock: u64,
    lwlock: u64,
    io: u64,
    /// Inside a transaction, waiting for Hearth's next statement (Hearth's CPU, the network).
    in_transaction: u64,
    /// Between transactions.
    idle: u64,
    other: u64,
}

impl BackendStates {
    fn add(&mut self, o: &BackendStates) {
        self.samples += o.samples;
        self.running += o.running;
        self.lock += o.lock;
        self.lwlock += o.lwlock;
        self.io += o.io;
        self.in_transaction += o.in_transaction;
        self.idle += o.idle;
        self.other += o.other;
    }

    fn total(&self) -> u64 {
        self.running
            + self.lock
            + self.lwlock
            + self.io
            + self.in_transaction
            + self.idle
            + self.other
    }
}

/// Sample the states of this role's backends started since `since` every 20 ms until `stop`.
async fn sample_backends(
    pool: sqlx::PgPool,
    since: DateTime<Utc>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Result<BackendStates, StoreError> {
    let mut s = BackendStates::default();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let rows: Vec<(Option<String>, Option<String>, i64)> = sqlx::query_as(
            "SELECT state, wait_event_type, count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND usename = current_user
                AND backend_start >= $1 AND pid <> pg_backend_pid()
              GROUP BY 1, 2",
        )
        .bind(since)
        .fetch_all(&pool)
        .await?;
        s.samples += 1;
        for (state, wait, n) in rows {
            let n = u64::try_from(n).unwrap_or(0);
            let slot = match (state.as_deref(), wait.as_deref()) {
                (Some("active"), None) => &mut s.running,
                (Some("active"), Some("Lock")) => &mut s.lock,
                (Some("active"), Some("LWLock")) => &mut s.lwlock,
                (Some("active"), Some("IO")) => &mut s.io,
                (Some("idle in transaction"), _) => &mut s.in_transaction,
                (Some("idle"), _) => &mut s.idle,
                _ => &mut s.other,
            };
            *slot += n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(s)
}

// ---------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------

fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    // Nearest rank.
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted
        .get(rank - 1)
        .copied()
        .unwrap_or_default()
        .as_secs_f64()
        * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn median_opt(v: Vec<Option<f64>>) -> Option<f64> {
    let present: Vec<f64> = v.into_iter().flatten().collect();
    (!present.is_empty()).then(|| median(present))
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn cell(v: Option<f64>, width: usize, decimals: usize) -> String {
    match v {
        Some(x) => format!("{x:>width$.decimals$}"),
        None => format!("{:>width$}", "n/a"),
    }
}

// ---------------------------------------------------------------------------------------
// The load rounds
// ---------------------------------------------------------------------------------------

fn listener_config(tenant: &TenantId) -> Result<MllpListenerConfig, CliError> {
    Ok(MllpListenerConfig {
        name: LISTENER.into(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        tenant: tenant.to_string(),
        tls: None,
        max_frame_bytes: 1024 * 1024,
        idle_timeout_secs: 300,
        feeds: vec![FeedConfig {
            name: "bench".into(),
            sending_application: Some(SENDING_APPLICATION.into()),
            sending_facility: Some(SENDING_FACILITY.into()),
            time_zone: Some("America/New_York".into()),
            ..FeedConfig::default()
        }],
    })
}

/// What the service's metrics say about a round.
#[derive(Default, Clone, Copy)]
struct ServerStats {
    ack_count: f64,
    ack_sum: f64,
    aa: f64,
}

fn server_stats(text: &str) -> ServerStats {
    let mut s = ServerStats::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        match series.split('{').next().unwrap_or_default() {
            "hearth_hl7_ack_seconds_sum" => s.ack_sum += value,
            "hearth_hl7_ack_seconds_count" => s.ack_count += value,
            "hearth_hl7_messages_total" if series.contains("ack=\"AA\"") => s.aa += value,
            _ => {}
        }
    }
    s
}

struct RoundResult {
    sent: usize,
    acked: usize,
    failures: Failures,
    msgs_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    server_mean_ms: Option<f64>,
    hearth_cpu_us: Option<f64>,
    pg_cpu_us: Option<f64>,
    busy: Option<f64>,
    others: Option<f64>,
    backends: BackendStates,
}

struct ConnectionOutcome {
    latencies: Vec<Duration>,
    failures: Failures,
}

/// Send every message on one connection, one at a time, waiting for each ACK. A connection
/// closed without an ACK is a failure; as a real sender would, the message is then sent again
/// on a new connection (up to `SEND_ATTEMPTS` times), so later messages of the same patient
/// are not refused for lack of it. Latency runs from the first attempt.
async fn send_all(
    first: MllpClient,
    addr: SocketAddr,
    messages: Arc<Vec<Generated>>,
) -> Result<ConnectionOutcome, String> {
    let mut client = Some(first);
    let mut latencies = Vec::with_capacity(messages.len());
    let mut failures = Failures::default();
    for m in messages.iter() {
        let started = Instant::now();
        for attempt in 1..=SEND_ATTEMPTS {
            let mut c = match client.take() {
                Some(c) => c,
                None => MllpClient::connect(addr, EXCHANGE_TIMEOUT)
                    .await
                    .map_err(|e| format!("reconnect to the MLLP listener: {e}"))?,
            };
            match c.send(&m.raw).await {
                Ok(ack) => {
                    let latency = started.elapsed();
                    match check_ack(&ack, &m.control_id) {
                        Ok(()) => latencies.push(latency),
                        Err(f) => failures.add(f),
                    }
                    client = Some(c);
                    break;
                }
                Err(e) => {
                    failures.add((
                        "connection closed without an ACK (message sent again on a new connection)"
                            .to_owned(),
                        format!("{} {}: {e}", m.kind.label(), m.control_id),
                    ));
                    if attempt == SEND_ATTEMPTS {
                        failures.add((
                            format!("never acknowledged in {SEND_ATTEMPTS} attempts"),
                            format!("{} {}", m.kind.label(), m.control_id),
                        ));
                    }
                }
            }
        }
    }
    if let Some(c) = client {
        let _ = c.close().await;
    }
    Ok(ConnectionOutcome {
        latencies,
        failures,
    })
}

async fn load_round(
    config: &Config,
    store: &Store,
    tenant: &TenantId,
    streams: &[Arc<Vec<Generated>>],
) -> Result<RoundResult, CliError> {
    let n = streams.len();
    let mut round_config = config.clone();
    round_config.database.max_connections = round_config
        .database
        .max_connections
        .max(u32::try_from(n).unwrap_or(u32::MAX).saturating_add(2));
    round_config.mllp.listeners = vec![listener_config(tenant)?];
    let since = db_now(store).await?;
    let metrics = Arc::new(Metrics::new().map_err(|e| CliError::Usage(format!("metrics: {e}")))?);
    let service = service::start(&round_config, metrics.clone())?
        .ok_or_else(|| CliError::Usage("the MLLP service started no listener".into()))?;
    let result = drive_round(store, since, &service.addresses, &metrics, streams).await;
    service.stop();
    result
}

async fn drive_round(
    store: &Store,
    since: DateTime<Utc>,
    addresses: &[(String, SocketAddr)],
    metrics: &Metrics,
    streams: &[Arc<Vec<Generated>>],
) -> Result<RoundResult, CliError> {
    let addr = addresses
        .first()
        .map(|(_, a)| *a)
        .ok_or_else(|| CliError::Usage("the MLLP service bound no address".into()))?;
    let mut clients = Vec::with_capacity(streams.len());
    for _ in streams {
        clients.push(
            MllpClient::connect(addr, EXCHANGE_TIMEOUT)
                .await
                .map_err(|e| CliError::Usage(format!("connect to the MLLP listener: {e}")))?,
        );
    }
    let sent: usize = streams.iter().map(|s| s.len()).sum();
    let cpu_before = process_cpu_secs("self");
    let machine_before = machine_ticks();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = tokio::spawn(sample_backends(store.pool().clone(), since, stop.clone()));
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .zip(streams)
        .map(|(client, messages)| tokio::spawn(send_all(client, addr, messages.clone())))
        .collect();
    let mut latencies = Vec::with_capacity(sent);
    let mut failures = Failures::default();
    for task in tasks {
        let outcome = task
            .await
            .map_err(|e| CliError::Usage(e.to_string()))?
            .map_err(CliError::Usage)?;
        latencies.extend(outcome.latencies);
        failures.merge(outcome.failures);
    }
    let wall = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let backends = sampler
        .await
        .map_err(|e| CliError::Usage(e.to_string()))??;
    let hearth_cpu = cpu_before.zip(process_cpu_secs("self")).map(|(a, b)| b - a);
    let machine = machine_busy(machine_before, machine_ticks());
    let pg_cpu = pg_backend_cpu(store, since).await?;
    // CPU the rest of the machine used meanwhile, in cores: what this round competed with.
    let others = match (machine, hearth_cpu, pg_cpu) {
        (Some((_, busy_secs)), Some(h), Some(p)) => {
            Some(((busy_secs - h - p) / wall.as_secs_f64().max(1e-9)).max(0.0))
        }
        _ => None,
    };
    let server = server_stats(
        &metrics
            .render()
            .map_err(|e| CliError::Usage(format!("metrics: {e}")))?,
    );
    latencies.sort_unstable();
    let acked = latencies.len();
    if server.aa.round() as usize != acked {
        failures.add((
            "server AA count differs from the ACKs checked".to_owned(),
            format!(
                "hearth_hl7_messages_total{{ack=\"AA\"}} = {}, client counted {acked}",
                server.aa
            ),
        ));
    }
    let per_msg = |secs: f64| secs * 1e6 / sent.max(1) as f64;
    Ok(RoundResult {
        sent,
        acked,
        failures,
        msgs_per_sec: acked as f64 / wall.as_secs_f64().max(1e-9),
        p50_ms: percentile_ms(&latencies, 0.50),
        p99_ms: percentile_ms(&latencies, 0.99),
        server_mean_ms: (server.ack_count > 0.0)
            .then(|| server.ack_sum / server.ack_count * 1000.0),
        hearth_cpu_us: hearth_cpu.map(per_msg),
        pg_cpu_us: pg_cpu.map(per_msg),
        busy: machine.map(|(fraction, _)| fraction),
        others,
        backends,
    })
}

fn load_header() -> String {
    format!(
        "{:>5} {:>6} {:>7} {:>5} {:>8} {:>8} {:>8} {:>8} {:>11} {:>11} {:>6} {:>7}",
        "conns",
        "round",
        "acked",
        "fail",
        "msg/s",
        "p50 ms",
        "p99 ms",
        "srv ms",
        "hearth µs",
        "pg µs",
        "busy",
        "others"
    )
}

fn load_row(conns: usize, label: &str, acked: String, failed: String, r: &LoadSummary) -> String {
    format!(
        "{conns:>5} {label:>6} {acked:>7} {failed:>5} {:>8.0} {:>8.2} {:>8.2} {} {} {} {} {}",
        r.msgs_per_sec,
        r.p50_ms,
        r.p99_ms,
        cell(r.server_mean_ms, 8, 2),
        cell(r.hearth_cpu_us, 11, 0),
        cell(r.pg_cpu_us, 11, 0),
        match r.busy {
            Some(b) => format!("{:>5.0}%", b * 100.0),
            None => format!("{:>6}", "n/a"),
        },
        cell(r.others, 7, 2)
    )
}

#[derive(Clone, Copy)]
struct LoadSummary {
    msgs_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    server_mean_ms: Option<f64>,
    hearth_cpu_us: Option<f64>,
    pg_cpu_us: Option<f64>,
    busy: Option<f64>,
    others: Option<f64>,
}

impl From<&RoundResult> for LoadSummary {
    fn from(r: &RoundResult) -> Self {
        LoadSummary {
            msgs_per_sec: r.msgs_per_sec,
            p50_ms: r.p50_ms,
            p99_ms: r.p99_ms,
            server_mean_ms: r.server_mean_ms,
            hearth_cpu_us: r.hearth_cpu_us,
            pg_cpu_us: r.pg_cpu_us,
            busy: r.busy,
            others: r.others,
        }
    }
}

fn summarize(rounds: &[RoundResult]) -> LoadSummary {
    let col = |f: fn(&RoundResult) -> f64| median(rounds.iter().map(f).collect());
    let col_opt = |f: fn(&RoundResult) -> Option<f64>| median_opt(rounds.iter().map(f).collect());
    LoadSummary {
        msgs_per_sec: col(|r| r.msgs_per_sec),
        p50_ms: col(|r| r.p50_ms),
        p99_ms: col(|r| r.p99_ms),
        server_mean_ms: col_opt(|r| r.server_mean_ms),
        hearth_cpu_us: col_opt(|r| r.hearth_cpu_us),
        pg_cpu_us: col_opt(|r| r.pg_cpu_us),
        busy: col_opt(|r| r.busy),
        others: col_opt(|r| r.others),
    }
}

// ---------------------------------------------------------------------------------------
// The stage pass
// ---------------------------------------------------------------------------------------

/// Parse, map, and check + render every mapped resource as if it were new: the CPU stages of
/// one message, timed separately. Returns (parse, map, check, resources touched).
fn cpu_stages(
    listener: &ListenerSettings,
    local_base: &str,
    raw: &[u8],
) -> Result<(Duration, Duration, Duration, usize), String> {
    let started = Instant::now();
    let msg = Message::parse(raw, None).map_err(|e| format!("parse: {e}"))?;
    let parse = started.elapsed();
    let feed = listener
        .feed_for(
            msg.sending_application().as_deref(),
            msg.sending_facility().as_deref(),
            Some(&[]),
        )
        .ok_or_else(|| "no feed matches the generated MSH-3/MSH-4".to_owned())?;
    let known_patients = std::collections::BTreeMap::new();
    let ctx = MapContext {
        tenant: &listener.tenant,
        feed,
        message: &msg,
        known_patients: &known_patients,
    };
    let started = Instant::now();
    let mapped = map_message(&ctx).map_err(|e| format!("map: {}", e.text))?;
    let map = started.elapsed();
    let started = Instant::now();
    let stamp = VersionStamp {
        version_id: 1,
        last_updated: Utc::now(),
    };
    for w in &mapped.writes {
        let content = match &w.content {
            Content::Merge(_) => w.content.create_only(w.resource_type),
            other => other.clone(),
        };
        let (Content::Ensure(mut object) | Content::Replace(mut object)) = content else {
            continue;
        };
        object.insert("resourceType".into(), w.resource_type.into());
        object.insert("id".into(), w.id.clone().into());
        if let Ok(checked) = crate::resource::check(Value::Object(object)) {
            let rendered = checked.render(&w.id, &stamp, local_base);
            std::hint::black_box(rendered);
        }
    }
    let check = started.elapsed();
    Ok((parse, map, check, mapped.writes.len()))
}

/// Per message kind (and all): sums of each stage.
#[derive(Default, Clone, Copy)]
struct StageSums {
    n: usize,
    parse: Duration,
    map: Duration,
    check: Duration,
    process: Duration,
    touched: usize,
}

impl StageSums {
    fn mean_us(&self, d: Duration) -> Option<f64> {
        (self.n > 0).then(|| micros(d) / self.n as f64)
    }
}

struct StageRound {
    /// All, then by `Kind::index`.
    sums: [StageSums; 4],
    process_p50_us: f64,
    hearth_cpu_us: Option<f64>,
    pg_cpu_us: Option<f64>,
    versions_per_msg: f64,
    resources: i64,
    failures: Failures,
    backends: BackendStates,
}

async fn stage_round(
    config: &Config,
    store: &Store,
    tenant: &TenantId,
    messages: &[Generated],
) -> Result<StageRound, CliError> {
    store
        .create_tenant(tenant, "MLLP benchmark (stages)")
        .await?;
    let listener = ListenerSettings::from_config(&listener_config(tenant)?)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let local_base = format!("{}/", config.fhir_base(tenant));
    let mut sums = [StageSums::default(); 4];
    for m in messages {
        let (parse, map, check, touched) =
            cpu_stages(&listener, &local_base, &m.raw).map_err(CliError::Usage)?;
        for s in [0, 1 + m.kind.index()] {
            if let Some(s) = sums.get_mut(s) {
                s.n += 1;
                s.parse += parse;
                s.map += map;
                s.check += check;
                s.touched += touched;
            }
        }
    }
    let since = db_now(store).await?;
    let ingestor = Ingestor {
        store: Store::new(
            store::connect(config.database_url()?, 2).await?,
            config.database.lock_timeout_ms,
        ),
        listener,
        local_base,
    };
    let no_identities: Vec<String> = Vec::new();
    let mut failures = Failures::default();
    let mut process_times = Vec::with_capacity(messages.len());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = tokio::spawn(sample_backends(store.pool().clone(), since, stop.clone()));
    let cpu_before = process_cpu_secs("self");
    for m in messages {
        let started = Instant::now();
        let processed = ingestor
            .process(Receipt {
                raw: &m.raw,
                peer_identities: Some(&no_identities),
                replay_of: None,
            })
            .await?;
        let elapsed = started.elapsed();
        process_times.push(elapsed);
        for s in [0, 1 + m.kind.index()] {
            if let Some(s) = sums.get_mut(s) {
                s.process += elapsed;
            }
        }
        let verdict = match processed.answer {
            Answer::Ack(ack) => check_ack(&ack, &m.control_id),
            Answer::Nothing => Err(("no ACK (answer: nothing)".into(), m.control_id.clone())),
            Answer::Close => Err(("no ACK (answer: close)".into(), m.control_id.clone())),
        };
        if let Err(f) = verdict {
            failures.add(f);
        }
    }
    let hearth_cpu = cpu_before.zip(process_cpu_secs("self")).map(|(a, b)| b - a);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let backends = sampler
        .await
        .map_err(|e| CliError::Usage(e.to_string()))??;
    let pg_cpu = pg_backend_cpu(store, since).await?;
    let mut tx = ingestor.store.begin(tenant).await?;
    let versions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM resource_versions WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_one(tx.conn())
            .await
            .map_err(StoreError::from)?;
    let resources: i64 = sqlx::query_scalar("SELECT count(*) FROM resources WHERE tenant_id = $1")
        .bind(tenant.as_str())
        .fetch_one(tx.conn())
        .await
        .map_err(StoreError::from)?;
    tx.commit().await?;
    process_times.sort_unstable();
    let n = messages.len().max(1) as f64;
    Ok(StageRound {
        sums,
        process_p50_us: percentile_ms(&process_times, 0.5) * 1000.0,
        hearth_cpu_us: hearth_cpu.map(|s| s * 1e6 / n),
        pg_cpu_us: pg_cpu.map(|s| s * 1e6 / n),
        versions_per_msg: versions as f64 / n,
        resources,
        failures,
        backends,
    })
}

/// Median round trip of `SELECT 1`, and of a commit that must flush WAL (a transaction with
/// an xid), on one connection, in µs.
async fn database_round_trips(store: &Store) -> Result<(f64, f64), CliError> {
    let mut conn = store.pool().acquire().await.map_err(StoreError::from)?;
    let mut select = Vec::with_capacity(200);
    for _ in 0..200 {
        let started = Instant::now();
        sqlx::query("SELECT 1")
            .execute(&mut *conn)
            .await
            .map_err(StoreError::from)?;
        select.push(micros(started.elapsed()));
    }
    let mut commit = Vec::with_capacity(100);
    for _ in 0..100 {
        let started = Instant::now();
        sqlx::raw_sql("BEGIN; SELECT pg_current_xact_id(); COMMIT")
            .execute(&mut *conn)
            .await
            .map_err(StoreError::from)?;
        commit.push(micros(started.elapsed()));
    }
    Ok((median(select), median(commit)))
}

// ---------------------------------------------------------------------------------------
// The command
// ---------------------------------------------------------------------------------------

pub async fn run(config: Config, args: BenchMllpArgs) -> Result<(), CliError> {
    if args.connections.is_empty() || args.connections.contains(&0) {
        return Err(CliError::Usage(
            "--connections: give counts of at least 1, e.g. 1,4,16".into(),
        ));
    }
    if args.messages == 0 || args.rounds == 0 || args.patients == 0 {
        return Err(CliError::Usage(
            "--messages, --rounds and --patients must be at least 1".into(),
        ));
    }
    let plan = Plan {
        messages: args.messages,
        patients: args.patients,
        mix: parse_mix(&args.mix)?,
        seed: args.seed,
    };
    // One connection, opened now and kept: the backends opened later are the measured ones.
    let stats_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect(config.database_url()?)
        .await
        .map_err(StoreError::from)?;
    let store = Store::new(stats_pool, config.database.lock_timeout_ms);
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    // Load the R4 tables and the search registry before anything is timed.
    {
        let warm_tenant = TenantId::parse(&format!("bench-mllp-{run_id}-warmup"))?;
        let listener = ListenerSettings::from_config(&listener_config(&warm_tenant)?)
            .map_err(|e| CliError::Usage(e.to_string()))?;
        for m in stream(&plan, 0, 1).iter().take(8) {
            cpu_stages(&listener, "http://warm.up/fhir/x/", &m.raw).map_err(CliError::Usage)?;
        }
    }

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "hearth bench-mllp: connections {:?}, {} messages per connection, {} rounds, mix adt:{} oru:{}, {} patients, seed {}",
        args.connections,
        args.messages,
        args.rounds,
        plan.mix.adt,
        plan.mix.oru,
        plan.patients,
        plan.seed
    )?;
    writeln!(
        out,
        "machine: {cores} cores, load average {} at start; tenants bench-mllp-{run_id}-*",
        load_average()
    )?;
    writeln!(
        out,
        "msg/s = AA-acked / wall; p50/p99 = client ACK latency; srv ms = mean hearth_hl7_ack_seconds; hearth/pg µs = CPU per message of this process (client included) / of the service's PostgreSQL backends; busy = machine CPU busy; others = cores used by other processes meanwhile"
    )?;
    writeln!(out, "{}", load_header())?;
    drop(out);

    let mut all_failures = Failures::default();
    let mut summaries = Vec::new();
    for &n in &args.connections {
        let streams: Vec<Arc<Vec<Generated>>> =
            (0..n).map(|c| Arc::new(stream(&plan, c, n))).collect();
        let counts = kind_counts(streams.iter().flat_map(|s| s.iter()));
        let mut states = BackendStates::default();
        let mut rounds = Vec::with_capacity(args.rounds);
        for r in 1..=args.rounds {
            let tenant = TenantId::parse(&format!("bench-mllp-{run_id}-c{n}-r{r}"))?;
            store.create_tenant(&tenant, "MLLP benchmark").await?;
            let mut result = load_round(&config, &store, &tenant, &streams).await?;
            tracing::info!(connections = n, round = r, "bench-mllp round done");
            writeln!(
                std::io::stdout().lock(),
                "{}",
                load_row(
                    n,
                    &r.to_string(),
                    result.acked.to_string(),
                    result.failures.count().to_string(),
                    &LoadSummary::from(&result)
                )
            )?;
            all_failures.merge(std::mem::take(&mut result.failures));
            states.add(&result.backends);
            rounds.push(result);
        }
        summaries.push((
            n,
            rounds.first().map_or(0, |r| r.sent),
            summarize(&rounds),
            counts,
            states,
        ));
    }

    let mut out = std::io::stdout().lock();
    writeln!(out)?;
    writeln!(out, "median over {} rounds:", args.rounds)?;
    writeln!(
        out,
        "{}  {:>10}",
        load_header().replace(" round", "   msgs"),
        "cpu-bound"
    )?;
    for (n, sent, s, _, _) in &summaries {
        let ceiling = match (s.hearth_cpu_us, s.pg_cpu_us) {
            (Some(h), Some(p)) if h + p > 0.0 => Some(cores as f64 * 1e6 / (h + p)),
            _ => None,
        };
        writeln!(
            out,
            "{}  {}",
            load_row(*n, &sent.to_string(), String::new(), String::new(), s),
            cell(ceiling, 10, 0)
        )?;
    }
    writeln!(
        out,
        "(cpu-bound = {cores} cores / (hearth + pg CPU per message): the rate at which this machine's CPUs would be saturated)"
    )?;
    for (n, _, _, counts, _) in &summaries {
        writeln!(
            out,
            "messages per round at {n} connection(s): {}",
            describe_counts(*counts)
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "the service's PostgreSQL backends, pg_stat_activity sampled every 20 ms over all rounds (share of backend samples):"
    )?;
    writeln!(
        out,
        "{:>5} {:>9} {:>9} {:>10} {:>8} {:>6} {:>16} {:>8} {:>6}",
        "conns",
        "backends",
        "running",
        "lock wait",
        "LWLock",
        "IO",
        "in tx, for app",
        "idle",
        "other"
    )?;
    for (n, _, _, _, st) in &summaries {
        let total = st.total().max(1) as f64;
        let pct = |x: u64| format!("{:.0}%", x as f64 * 100.0 / total);
        writeln!(
            out,
            "{n:>5} {:>9.1} {:>9} {:>10} {:>8} {:>6} {:>16} {:>8} {:>6}",
            st.total() as f64 / st.samples.max(1) as f64,
            pct(st.running),
            pct(st.lock),
            pct(st.lwlock),
            pct(st.io),
            pct(st.in_transaction),
            pct(st.idle),
            pct(st.other)
        )?;
    }
    writeln!(
        out,
        "(running = active, no wait event: on a CPU or waiting for one; in tx, for app = inside a transaction waiting for Hearth's next statement; idle = between messages)"
    )?;
    drop(out);

    // Where the time goes: the messages of the largest connection count, one at a time,
    // through Ingestor::process directly.
    let widest = args.connections.iter().copied().max().unwrap_or(1);
    let messages = interleaved(&plan, widest, args.stage_messages);
    let mut stage_rounds = Vec::with_capacity(args.rounds);
    for r in 1..=args.rounds {
        let tenant = TenantId::parse(&format!("bench-mllp-{run_id}-stages-r{r}"))?;
        let mut result = stage_round(&config, &store, &tenant, &messages).await?;
        all_failures.merge(std::mem::take(&mut result.failures));
        stage_rounds.push(result);
    }
    let (rtt_us, commit_us) = database_round_trips(&store).await?;
    print_stages(&stage_rounds, messages.len(), widest, rtt_us, commit_us)?;

    let mut out = std::io::stdout().lock();
    writeln!(out, "load average {} at end", load_average())?;
    let failed = all_failures.count();
    if failed > 0 {
        writeln!(out, "FAILURES ({failed}):")?;
        for (kind, (n, example)) in &all_failures.0 {
            writeln!(out, "  {n:>6} × {kind} (e.g. {example})")?;
        }
        return Err(CliError::Usage(format!(
            "{failed} message(s) were not acknowledged with AA and their own MSH-10"
        )));
    }
    writeln!(out, "every message acknowledged AA with its own MSH-10")?;
    Ok(())
}

/// One row of the stage table: the value of a column (all, then by kind).
type StageColumn<'a> = Box<dyn Fn(usize) -> Option<f64> + 'a>;

fn print_stages(
    rounds: &[StageRound],
    messages: usize,
    widest: usize,
    rtt_us: f64,
    commit_us: f64,
) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    // Per column (all, A01, A08, R01): the median over rounds of each stage's mean.
    let stage = |col: usize, f: fn(&StageSums) -> Duration| {
        median_opt(
            rounds
                .iter()
                .map(|r| r.sums.get(col).and_then(|s| s.mean_us(f(s))))
                .collect(),
        )
    };
    let counts: Vec<usize> = (0..4)
        .map(|c| {
            rounds
                .first()
                .and_then(|r| r.sums.get(c))
                .map_or(0, |s| s.n)
        })
        .collect();
    writeln!(out)?;
    writeln!(
        out,
        "where the time goes: one connection, Ingestor::process called directly on {messages} messages (the {widest}-connection streams interleaved), a fresh tenant per round; µs per message (mean), median of {} rounds",
        rounds.len()
    )?;
    let mut header = format!("  {:<44}", "stage");
    header.push_str(&format!(" {:>9}", "all"));
    for k in Kind::ALL {
        header.push_str(&format!(" {:>9}", k.label()));
    }
    writeln!(out, "{header}")?;
    let mut count_row = format!("  {:<44}", "messages");
    for c in &counts {
        count_row.push_str(&format!(" {c:>9}"));
    }
    writeln!(out, "{count_row}")?;
    let rows: [(&str, StageColumn); 6] = [
        (
            "parse (Message::parse)",
            Box::new(|c| stage(c, |s| s.parse)),
        ),
        ("map (map_message)", Box::new(|c| stage(c, |s| s.map))),
        (
            "process (parse + map + SQL + commit)",
            Box::new(|c| stage(c, |s| s.process)),
        ),
        (
            "SQL + commit = process - parse - map",
            Box::new(|c| {
                let (p, a, m) = (
                    stage(c, |s| s.process)?,
                    stage(c, |s| s.parse)?,
                    stage(c, |s| s.map)?,
                );
                Some(p - a - m)
            }),
        ),
        (
            "  of which check + render, CPU (estimate)",
            Box::new(|c| stage(c, |s| s.check)),
        ),
        (
            "resources touched per message",
            Box::new(|c| {
                median_opt(
                    rounds
                        .iter()
                        .map(|r| {
                            r.sums
                                .get(c)
                                .and_then(|s| (s.n > 0).then(|| s.touched as f64 / s.n as f64))
                        })
                        .collect(),
                )
            }),
        ),
    ];
    for (label, f) in &rows {
        let mut line = format!("  {label:<44}");
        for c in 0..4 {
            let decimals = if label.starts_with("resources") { 1 } else { 0 };
            line.push_str(&format!(" {}", cell(f(c), 9, decimals)));
        }
        writeln!(out, "{line}")?;
    }
    let process_p50 = median(rounds.iter().map(|r| r.process_p50_us).collect());
    let hearth = median_opt(rounds.iter().map(|r| r.hearth_cpu_us).collect());
    let pg = median_opt(rounds.iter().map(|r| r.pg_cpu_us).collect());
    let versions = median(rounds.iter().map(|r| r.versions_per_msg).collect());
    let resources = median(rounds.iter().map(|r| r.resources as f64).collect());
    let touched = rounds
        .first()
        .and_then(|r| r.sums.first())
        .map_or(0.0, |s| s.touched as f64 / s.n.max(1) as f64);
    // BEGIN (+ SET LOCALs, one batch), the duplicate check, the advisory locks of the
    // message's resources, one locking read per touched resource, lock + insert per version
    // written (the Provenance included), the message row, COMMIT.
    let round_trips = 5.0 + touched + 2.0 * versions;
    let sql = stage(0, |s| s.process)
        .zip(stage(0, |s| s.parse))
        .zip(stage(0, |s| s.map))
        .map(|((p, a), m)| p - a - m);
    writeln!(
        out,
        "  process p50 {process_p50:.0} µs; CPU per message during process: hearth {} µs, PostgreSQL backend {} µs",
        cell(hearth, 0, 0),
        cell(pg, 0, 0)
    )?;
    let mut states = BackendStates::default();
    for r in rounds {
        states.add(&r.backends);
    }
    let total = states.total().max(1) as f64;
    let pct = |x: u64| x as f64 * 100.0 / total;
    writeln!(
        out,
        "  its PostgreSQL backend (pg_stat_activity every 20 ms): running {:.0}%, lock/LWLock/IO wait {:.0}%, in a transaction waiting for Hearth {:.0}%, idle between messages {:.0}%",
        pct(states.running),
        pct(states.lock + states.lwlock + states.io),
        pct(states.in_transaction),
        pct(states.idle + states.other)
    )?;
    writeln!(
        out,
        "  versions written per message {versions:.2} (Provenance included); {resources:.0} distinct resources after {messages} messages"
    )?;
    writeln!(
        out,
        "  estimated round trips per message ≈ {round_trips:.1} (5 + touched + 2 × versions written); SQL + commit per round trip ≈ {} µs",
        cell(sql.map(|s| s / round_trips), 0, 0)
    )?;
    writeln!(
        out,
        "  PostgreSQL now: SELECT 1 round trip p50 {rtt_us:.0} µs; durable commit (BEGIN; pg_current_xact_id(); COMMIT, one batch) p50 {commit_us:.0} µs"
    )?;
    Ok(())
}
