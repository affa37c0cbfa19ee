//! `hearth bench-validate` and `hearth bench-transaction`: what conformance costs on writes.
//!
//! `bench-validate` runs without a database, on this one thread: it times the write-path
//! check as a tenant in `enforce` mode with implied US Core profiles runs it
//! (`resource::check_with`: base R4 table, fhirbolt strict, every claimed or implied profile)
//! over the published US Core examples and the synthetic generator's records, then each part
//! on its own.
//!
//! `bench-transaction` starts its own server in this process on an ephemeral port (like
//! `hearth bench`), builds transaction Bundles of whole synthetic records (every entry a POST
//! with a `urn:uuid:` fullUrl, intra-bundle references rewritten to those), posts them, and
//! writes the same resources one by one with PUT for comparison; each round in fresh tenants,
//! one validating in `enforce` mode (implied profiles), one `off`.

use std::collections::HashMap;
use std::hint::black_box;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cli::CliError;
use crate::config::Config;
use crate::conformance::{R4Structure, Severity};
use crate::resource::{
    InvalidResource, ValidationPolicy, check_with, profile_issues, profiles_to_check,
};
use crate::server;
use crate::state::AppState;
use crate::store::{self, ValidationMode};
use crate::synth::{self, Synth};
use crate::tenant::TenantId;

/// What a tenant in `enforce` mode with implied profiles runs on every write.
const ENFORCE_IMPLIED: ValidationPolicy = ValidationPolicy {
    mode: ValidationMode::Enforce,
    implied: true,
};

/// The issue's goal: at least this many resources per second on one core.
const GOAL_PER_SEC: f64 = 2000.0;

// ---------------------------------------------------------------------------------------
// Shared helpers

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Nearest rank over sorted durations, in µs.
fn percentile_us(sorted: &[Duration], p: f64) -> f64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted
        .get(rank - 1)
        .copied()
        .unwrap_or_default()
        .as_secs_f64()
        * 1e6
}

/// The diagnostics of an OperationOutcome (synthetic data: safe to print).
fn diagnostics(outcome: &Value) -> String {
    outcome
        .get("issue")
        .and_then(Value::as_array)
        .map(|issues| {
            issues
                .iter()
                .take(3)
                .filter_map(|i| i.get("diagnostics").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// bench-validate

#[derive(clap::Args, Clone)]
pub struct BenchValidateArgs {
    /// FHIR JSON examples (a Bundle counts as its entries); skipped with a note if absent.
    #[arg(long, default_value = "../shared/us-core-6.1.0/examples")]
    pub examples: PathBuf,
    /// Synthetic patients (about 100 resources each), plus the shared Practitioners,
    /// Organizations and Locations.
    #[arg(long, default_value_t = 200)]
    pub synthetic_patients: usize,
    /// Rounds; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// The generator's seed.
    #[arg(long, default_value_t = synth::DEFAULT_SEED)]
    pub seed: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Example,
    Synthetic,
}

struct Input {
    /// `file.json`, `file.json entry[3]` or `Type/id`.
    label: String,
    source: Source,
    resource_type: String,
    value: Value,
}

fn input(label: String, source: Source, value: Value) -> Input {
    let resource_type = value
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("(none)")
        .to_owned();
    Input {
        label,
        source,
        resource_type,
        value,
    }
}

/// The examples in `dir`: every `.json` file, a Bundle's entries instead of the Bundle.
/// `None` when the directory cannot be read. Files that are not JSON are returned as
/// problems (they count as examples with errors).
fn example_inputs(dir: &Path) -> Option<(usize, Vec<Input>, Vec<String>)> {
    let entries = std::fs::read_dir(dir).ok()?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut inputs = Vec::new();
    let mut problems = Vec::new();
    for file in &files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let value: Value = match std::fs::read_to_string(file)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
        {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("{name}: not readable as JSON: {e}"));
                continue;
            }
        };
        if value.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
            let resources = value
                .get("entry")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
                .filter_map(|(i, e)| e.get("resource").map(|r| (i, r.clone())));
            for (i, r) in resources {
                inputs.push(input(format!("{name} entry[{i}]"), Source::Example, r));
            }
        } else {
            inputs.push(input(name, Source::Example, value));
        }
    }
    Some((files.len(), inputs, problems))
}

fn synthetic_inputs(seed: u64, patients: usize) -> Vec<Input> {
    let mut all = synth::shared_resources(seed);
    for n in 1..=patients {
        all.extend(synth::patient_record(seed, n));
    }
    all.into_iter()
        .map(|s| {
            input(
                format!("{}/{}", s.resource_type, s.id),
                Source::Synthetic,
                s.body,
            )
        })
        .collect()
}

/// Why the full check refused a resource, in one line (our examples and synthetic data:
/// safe to print; the messages never quote values anyway).
fn describe(e: &InvalidResource) -> String {
    let lines: Vec<String> = match e {
        InvalidResource::Structure(issues) => issues
            .iter()
            .map(|i| format!("R4 table: {} {}", i.expression, i.message))
            .collect(),
        InvalidResource::Model(m) => vec![format!("fhirbolt strict: {m}")],
        InvalidResource::Profile(issues) => issues
            .iter()
            .filter(|i| i.severity == Severity::Error)
            .map(|i| {
                let profile = i.profile.rsplit('/').next().unwrap_or(&i.profile);
                format!(
                    "{profile}: {} {}: {}",
                    i.expression,
                    i.code.as_str(),
                    i.message
                )
            })
            .collect(),
    };
    lines.join("; ")
}

/// Per-resource durations of the parts, in input order.
#[derive(Default)]
struct PartTimes {
    clone: Vec<Duration>,
    r4: Vec<Duration>,
    serialize: Vec<Duration>,
    strict: Vec<Duration>,
    profiles: Vec<Duration>,
}

/// The full check of every input, one at a time: per-resource durations in input order.
fn time_full(inputs: &[Input]) -> Vec<Duration> {
    inputs
        .iter()
        .map(|i| {
            let t = Instant::now();
            let result = black_box(check_with(black_box(&i.value).clone(), ENFORCE_IMPLIED));
            let elapsed = t.elapsed();
            drop(result);
            elapsed
        })
        .collect()
}

/// The parts of the full check, each on its own.
fn time_parts(inputs: &[Input]) -> PartTimes {
    let mut p = PartTimes::default();
    let r4 = R4Structure::global();
    for i in inputs {
        let value = black_box(&i.value);
        let t = Instant::now();
        let copy = black_box(value.clone());
        p.clone.push(t.elapsed());
        drop(copy);

        let t = Instant::now();
        let issues = black_box(r4.validate_resource(value));
        p.r4.push(t.elapsed());
        drop(issues);

        let t = Instant::now();
        let text = black_box(value.to_string());
        p.serialize.push(t.elapsed());

        let t = Instant::now();
        let parsed = black_box(hearth_model::check_strict(&text));
        p.strict.push(t.elapsed());
        drop(parsed);

        let t = Instant::now();
        let issues = black_box(profile_issues(
            value,
            &profiles_to_check(value, ENFORCE_IMPLIED.implied, &[]),
        ));
        p.profiles.push(t.elapsed());
        drop(issues);
    }
    p
}

#[derive(Clone, Copy, Default)]
struct Latency {
    count: usize,
    /// count / sum of the per-resource times.
    per_sec: f64,
    mean_us: f64,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
}

fn latency<'a>(times: impl Iterator<Item = &'a Duration>) -> Latency {
    let mut sorted: Vec<Duration> = times.copied().collect();
    sorted.sort_unstable();
    let total: f64 = sorted.iter().map(Duration::as_secs_f64).sum();
    let count = sorted.len();
    Latency {
        count,
        per_sec: count as f64 / total.max(1e-12),
        mean_us: total * 1e6 / count.max(1) as f64,
        p50_us: percentile_us(&sorted, 0.50),
        p99_us: percentile_us(&sorted, 0.99),
        max_us: sorted.last().map_or(0.0, |d| d.as_secs_f64() * 1e6),
    }
}

fn median_latency(rows: &[Latency]) -> Latency {
    let col = |f: fn(&Latency) -> f64| median(rows.iter().map(f).collect());
    Latency {
        count: rows.first().map_or(0, |l| l.count),
        per_sec: col(|l| l.per_sec),
        mean_us: col(|l| l.mean_us),
        p50_us: col(|l| l.p50_us),
        p99_us: col(|l| l.p99_us),
        max_us: col(|l| l.max_us),
    }
}

/// One round's summary of the full check: all inputs, examples, synthetic.
struct FullRound {
    all: Latency,
    examples: Latency,
    synthetic: Latency,
}

fn full_round(inputs: &[Input], times: &[Duration]) -> FullRound {
    let of = |source: Source| {
        latency(
            inputs
                .iter()
                .zip(times)
                .filter(move |(i, _)| i.source == source)
                .map(|(_, d)| d),
        )
    };
    FullRound {
        all: latency(times.iter()),
        examples: of(Source::Example),
        synthetic: of(Source::Synthetic),
    }
}

/// Sums over the resources of one type, in seconds (each resource's median over rounds).
#[derive(Default)]
struct TypeTotals {
    count: usize,
    full: f64,
    r4: f64,
    /// Serialise + fhirbolt strict.
    strict: f64,
    profiles: f64,
}

/// Each resource's median over rounds, in input order.
fn per_resource_median(rounds: &[Vec<Duration>], n: usize) -> Vec<f64> {
    (0..n)
        .map(|k| {
            median(
                rounds
                    .iter()
                    .filter_map(|r| r.get(k))
                    .map(Duration::as_secs_f64)
                    .collect(),
            )
        })
        .collect()
}

fn print_full_row(out: &mut impl Write, label: &str, r: &FullRound) -> std::io::Result<()> {
    let rate = |l: &Latency| {
        if l.count == 0 {
            "-".to_owned()
        } else {
            format!("{:.0}", l.per_sec)
        }
    };
    writeln!(
        out,
        "  {label:<8} {:>12.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>12} {:>12}",
        r.all.per_sec,
        r.all.mean_us,
        r.all.p50_us,
        r.all.p99_us,
        r.all.max_us,
        rate(&r.examples),
        rate(&r.synthetic)
    )
}

pub fn run_validate(args: BenchValidateArgs) -> Result<(), CliError> {
    if args.rounds == 0 {
        return Err(CliError::Usage("--rounds must be at least 1".into()));
    }
    let mut out = std::io::stdout().lock();
    let (files, mut inputs, problems) = match example_inputs(&args.examples) {
        Some(found) => found,
        None => {
            writeln!(
                out,
                "note: {} is absent; only synthetic resources are checked",
                args.examples.display()
            )?;
            (0, Vec::new(), Vec::new())
        }
    };
    let examples = inputs.len();
    inputs.extend(synthetic_inputs(args.seed, args.synthetic_patients));
    let synthetic = inputs.len() - examples;
    if inputs.is_empty() {
        return Err(CliError::Usage("nothing to validate".into()));
    }
    writeln!(
        out,
        "bench-validate: {examples} example resources from {files} files in {} + {synthetic} synthetic resources ({} patients, seed {}) = {} resources",
        args.examples.display(),
        args.synthetic_patients,
        args.seed,
        inputs.len()
    )?;
    writeln!(
        out,
        "full check = resource::check_with(value.clone(), enforce, implied US Core profiles), one thread, {} rounds",
        args.rounds
    )?;

    // Warm-up (loads the R4 table and the profiles) and the verdicts.
    let started = Instant::now();
    let mut refused: Vec<(usize, String)> = Vec::new();
    for (k, i) in inputs.iter().enumerate() {
        if let Err(e) = check_with(i.value.clone(), ENFORCE_IMPLIED) {
            refused.push((k, describe(&e)));
        }
    }
    let profiles_checked: usize = inputs
        .iter()
        .map(|i| profiles_to_check(&i.value, true, &[]).len())
        .sum();
    let with_profiles = inputs
        .iter()
        .filter(|i| !profiles_to_check(&i.value, true, &[]).is_empty())
        .count();
    writeln!(
        out,
        "warm-up and verdict pass: {:.2} s; {with_profiles} of {} resources checked against at least one profile ({profiles_checked} profile checks)",
        started.elapsed().as_secs_f64(),
        inputs.len()
    )?;
    let example_errors: Vec<&(usize, String)> = refused
        .iter()
        .filter(|(k, _)| inputs.get(*k).is_some_and(|i| i.source == Source::Example))
        .collect();
    let synthetic_errors = refused.len() - example_errors.len();
    writeln!(
        out,
        "examples with errors: {} of {examples} resources{}",
        example_errors.len() + problems.len(),
        if problems.is_empty() {
            String::new()
        } else {
            format!(" ({} files unreadable)", problems.len())
        }
    )?;
    for p in &problems {
        writeln!(out, "  {p}")?;
    }
    for (k, why) in &example_errors {
        let label = inputs.get(*k).map_or("?", |i| i.label.as_str());
        writeln!(out, "  {label}: {why}")?;
    }
    writeln!(
        out,
        "synthetic with errors: {synthetic_errors} of {synthetic}"
    )?;
    for (k, why) in refused
        .iter()
        .filter(|(k, _)| {
            inputs
                .get(*k)
                .is_some_and(|i| i.source == Source::Synthetic)
        })
        .take(10)
    {
        let label = inputs.get(*k).map_or("?", |i| i.label.as_str());
        writeln!(out, "  {label}: {why}")?;
    }

    writeln!(out)?;
    writeln!(
        out,
        "full check, per round (resources/s = count / sum of per-resource times)"
    )?;
    writeln!(
        out,
        "  {:<8} {:>12} {:>9} {:>9} {:>9} {:>9} {:>12} {:>12}",
        "", "resources/s", "mean µs", "p50 µs", "p99 µs", "max µs", "examples/s", "synthetic/s"
    )?;
    out.flush()?;
    let mut full_rounds: Vec<Vec<Duration>> = Vec::new();
    let mut part_rounds: Vec<PartTimes> = Vec::new();
    let mut rows: Vec<FullRound> = Vec::new();
    for round in 0..args.rounds {
        let times = time_full(&inputs);
        let row = full_round(&inputs, &times);
        print_full_row(&mut out, &format!("round {}", round + 1), &row)?;
        out.flush()?;
        rows.push(row);
        full_rounds.push(times);
        part_rounds.push(time_parts(&inputs));
    }
    let summary = FullRound {
        all: median_latency(&rows.iter().map(|r| r.all).collect::<Vec<_>>()),
        examples: median_latency(&rows.iter().map(|r| r.examples).collect::<Vec<_>>()),
        synthetic: median_latency(&rows.iter().map(|r| r.synthetic).collect::<Vec<_>>()),
    };
    print_full_row(&mut out, "median", &summary)?;
    for (label, l) in [
        ("examples", &summary.examples),
        ("synthetic", &summary.synthetic),
    ] {
        if l.count > 0 {
            writeln!(
                out,
                "  {label:<9}: {:>6} resources, {:>7.0} resources/s, mean {:.1} µs, p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
                l.count, l.per_sec, l.mean_us, l.p50_us, l.p99_us, l.max_us
            )?;
        }
    }

    // The parts, second pass of each round. Each resource's median over rounds, so that a
    // preemption in one round (a busy machine) does not move the means.
    let n = inputs.len();
    let robust = |rounds: Vec<Vec<Duration>>| {
        let med = per_resource_median(&rounds, n);
        let sorted: Vec<Duration> = med.iter().map(|s| Duration::from_secs_f64(*s)).collect();
        (latency(sorted.iter()), med)
    };
    let part = |f: fn(&PartTimes) -> &Vec<Duration>| {
        robust(part_rounds.iter().map(|p| f(p).clone()).collect())
    };
    let (full_robust, full_med) = robust(full_rounds.clone());
    let (clone_l, _) = part(|p| &p.clone);
    let (r4_l, r4_med) = part(|p| &p.r4);
    let (ser_l, ser_med) = part(|p| &p.serialize);
    let (strict_l, strict_only_med) = part(|p| &p.strict);
    let (prof_l, prof_med) = part(|p| &p.profiles);
    let strict_med: Vec<f64> = ser_med
        .iter()
        .zip(&strict_only_med)
        .map(|(a, b)| a + b)
        .collect();
    writeln!(out)?;
    writeln!(
        out,
        "the parts, each timed on its own in a second pass (each resource's median over rounds; µs per resource)"
    )?;
    writeln!(
        out,
        "  {:<44} {:>9} {:>9} {:>9} {:>12} {:>8}",
        "part", "mean", "p50", "p99", "resources/s", "of full"
    )?;
    let full_mean = full_robust.mean_us.max(1e-9);
    for (label, l) in [
        ("value.clone()", &clone_l),
        ("R4 table (R4Structure::validate_resource)", &r4_l),
        ("serialise (value.to_string())", &ser_l),
        ("fhirbolt strict (hearth_model::check_strict)", &strict_l),
        ("US Core profiles (resource::profile_issues)", &prof_l),
        ("full check (resource::check_with)", &full_robust),
    ] {
        writeln!(
            out,
            "  {label:<44} {:>9.1} {:>9.1} {:>9.1} {:>12.0} {:>7.0}%",
            l.mean_us,
            l.p50_us,
            l.p99_us,
            l.per_sec,
            100.0 * l.mean_us / full_mean
        )?;
    }
    let composed =
        clone_l.mean_us + r4_l.mean_us + ser_l.mean_us + strict_l.mean_us + prof_l.mean_us;
    writeln!(
        out,
        "  clone + R4 table + serialise + strict + profiles = {composed:.1} µs vs full {:.1} µs",
        full_robust.mean_us
    )?;

    // Per resource type.
    let mut by_type: HashMap<&str, TypeTotals> = HashMap::new();
    for (k, i) in inputs.iter().enumerate() {
        let row = by_type.entry(i.resource_type.as_str()).or_default();
        let at = |v: &[f64]| v.get(k).copied().unwrap_or(0.0);
        row.count += 1;
        row.full += at(&full_med);
        row.r4 += at(&r4_med);
        row.strict += at(&strict_med);
        row.profiles += at(&prof_med);
    }
    let total_full: f64 = full_med.iter().sum();
    let mut types: Vec<(&str, TypeTotals)> = by_type.into_iter().collect();
    types.sort_by(|a, b| b.1.full.total_cmp(&a.1.full));
    writeln!(out)?;
    writeln!(
        out,
        "by resource type (each resource's median over rounds; mean µs per resource; top 12 by total time)"
    )?;
    writeln!(
        out,
        "  {:<22} {:>7} {:>9} {:>9} {:>12} {:>9} {:>9}",
        "type", "count", "full", "R4 table", "ser+strict", "profiles", "of total"
    )?;
    for (t, r) in types.iter().take(12) {
        let mean = |x: f64| x * 1e6 / r.count.max(1) as f64;
        writeln!(
            out,
            "  {t:<22} {:>7} {:>9.1} {:>9.1} {:>12.1} {:>9.1} {:>8.1}%",
            r.count,
            mean(r.full),
            mean(r.r4),
            mean(r.strict),
            mean(r.profiles),
            100.0 * r.full / total_full.max(1e-12)
        )?;
    }
    if types.len() > 12 {
        let (count, full) = types
            .iter()
            .skip(12)
            .fold((0, 0.0), |acc, (_, r)| (acc.0 + r.count, acc.1 + r.full));
        writeln!(
            out,
            "  {:<22} {:>7} {:>9.1} {:>9} {:>12} {:>9} {:>8.1}%",
            format!("({} other types)", types.len() - 12),
            count,
            full * 1e6 / count.max(1) as f64,
            "",
            "",
            "",
            100.0 * full / total_full.max(1e-12)
        )?;
    }

    writeln!(out)?;
    let met = summary.all.per_sec >= GOAL_PER_SEC;
    writeln!(
        out,
        "goal >= {GOAL_PER_SEC:.0} resources/s per core (< {:.0} µs each): {:.0} resources/s, mean {:.1} µs, p99 {:.1} µs: {}",
        1e6 / GOAL_PER_SEC,
        summary.all.per_sec,
        summary.all.mean_us,
        summary.all.p99_us,
        if met { "met" } else { "NOT met" }
    )?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    writeln!(
        out,
        "(rounds={} patients={} seed={}; one thread of a {cores}-core machine; no database)",
        args.rounds, args.synthetic_patients, args.seed
    )?;
    if synthetic_errors > 0 {
        return Err(CliError::Usage(format!(
            "{synthetic_errors} synthetic resources failed the check (a generator defect)"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// bench-transaction

#[derive(clap::Args, Clone)]
pub struct BenchTransactionArgs {
    /// Patients per transaction Bundle, each with their whole record (about 100 resources).
    #[arg(long, default_value_t = 100)]
    pub patients_per_bundle: usize,
    /// Bundles per measurement, posted one after another.
    #[arg(long, default_value_t = 5)]
    pub bundles: usize,
    /// Rounds; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// PUTs in flight at once in the one-by-one comparison.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// The generator's seed.
    #[arg(long, default_value_t = synth::DEFAULT_SEED)]
    pub seed: u64,
}

/// What every round writes.
struct Workload {
    /// Practitioners, Organizations, Locations: PUT into each fresh tenant first (not timed);
    /// the records refer to them as `Type/id`.
    shared: Vec<(String, String)>,
    /// Transaction Bundles, serialised, and their entry counts.
    bundles: Vec<(bytes::Bytes, usize)>,
    /// The same resources for one-by-one PUT: (`Type/id`, body with the id).
    singles: Vec<(String, String)>,
    /// References rewritten to a `urn:uuid:`, and left as `Type/id` (to shared resources).
    rewritten: usize,
    kept: usize,
}

/// Replace every `reference` found in `map`; count what was and was not.
fn rewrite_references(
    value: &mut Value,
    map: &HashMap<String, String>,
    counts: &mut (usize, usize),
) {
    match value {
        Value::Object(object) => {
            for (key, child) in object.iter_mut() {
                if key == "reference"
                    && let Value::String(text) = child
                {
                    match map.get(text.as_str()) {
                        Some(urn) => {
                            *text = urn.clone();
                            counts.0 += 1;
                        }
                        None => counts.1 += 1,
                    }
                    continue;
                }
                rewrite_references(child, map, counts);
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|v| rewrite_references(v, map, counts)),
        _ => {}
    }
}

fn path_of(s: &Synth) -> String {
    format!("{}/{}", s.resource_type, s.id)
}

fn build_workload(args: &BenchTransactionArgs) -> Workload {
    let shared = synth::shared_resources(args.seed)
        .iter()
        .map(|s| (path_of(s), s.body.to_string()))
        .collect();
    let mut bundles = Vec::with_capacity(args.bundles);
    let mut singles = Vec::new();
    let mut counts = (0usize, 0usize);
    for b in 0..args.bundles {
        let first = b * args.patients_per_bundle + 1;
        let records: Vec<Synth> = (first..first + args.patients_per_bundle)
            .flat_map(|n| synth::patient_record(args.seed, n))
            .collect();
        let urns: HashMap<String, String> = records
            .iter()
            .map(|s| (path_of(s), format!("urn:uuid:{}", uuid::Uuid::new_v4())))
            .collect();
        let mut entries = Vec::with_capacity(records.len());
        for s in records {
            let path = path_of(&s);
            singles.push((path.clone(), s.body.to_string()));
            let mut body = s.body;
            if let Value::Object(object) = &mut body {
                // A POST's id is the server's to pick.
                object.shift_remove("id");
            }
            rewrite_references(&mut body, &urns, &mut counts);
            entries.push(json!({
                "fullUrl": urns.get(&path).cloned().unwrap_or_default(),
                "resource": body,
                "request": {"method": "POST", "url": s.resource_type},
            }));
        }
        let count = entries.len();
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
        bundles.push((bytes::Bytes::from(bundle.to_string()), count));
    }
    Workload {
        shared,
        bundles,
        singles,
        rewritten: counts.0,
        kept: counts.1,
    }
}

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
    auth: String,
}

impl Client {
    /// PUT `Type/id`; it must answer 201 (every write is a create in a fresh tenant).
    async fn put(&self, path: &str, body: String) -> Result<(), String> {
        let resp = self
            .http
            .put(format!("{}/{path}", self.base))
            .header("authorization", &self.auth)
            .header("content-type", "application/fhir+json")
            .header("prefer", "return=minimal")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("PUT {path}: {e}"))?;
        let status = resp.status();
        if status != reqwest::StatusCode::CREATED {
            let text = resp.bytes().await.unwrap_or_default();
            let outcome: Value = serde_json::from_slice(&text).unwrap_or_default();
            return Err(format!("PUT {path}: {status}: {}", diagnostics(&outcome)));
        }
        resp.bytes().await.map_err(|e| format!("PUT {path}: {e}"))?;
        Ok(())
    }

    /// POST a transaction; time it until the whole answer is in; check 200, a
    /// transaction-response, `entries` entries, every one 201.
    async fn transaction(&self, bundle: bytes::Bytes, entries: usize) -> Result<Duration, String> {
        let t = Instant::now();
        let resp = self
            .http
            .post(&self.base)
            .header("authorization", &self.auth)
            .header("content-type", "application/fhir+json")
            .header("accept", "application/fhir+json")
            .header("prefer", "return=minimal")
            .body(bundle)
            .send()
            .await
            .map_err(|e| format!("POST transaction: {e}"))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("POST transaction: {e}"))?;
        let elapsed = t.elapsed();
        let answer: Value = serde_json::from_slice(&body)
            .map_err(|e| format!("POST transaction: {status}, the answer is not JSON: {e}"))?;
        if status != reqwest::StatusCode::OK {
            return Err(format!(
                "POST transaction: {status}: {}",
                diagnostics(&answer)
            ));
        }
        if answer.get("type").and_then(Value::as_str) != Some("transaction-response") {
            return Err("POST transaction: the answer is not a transaction-response".into());
        }
        let got = answer
            .get("entry")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        if got.len() != entries {
            return Err(format!(
                "POST transaction: {} response entries for {entries} request entries",
                got.len()
            ));
        }
        let status_of = |e: &Value| {
            e.pointer("/response/status")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let not_created: Vec<String> = got
            .iter()
            .map(status_of)
            .filter(|s| !s.starts_with("201"))
            .collect();
        if let Some(first) = not_created.first() {
            return Err(format!(
                "POST transaction: {} entries not 201 (first: {first:?})",
                not_created.len()
            ));
        }
        Ok(elapsed)
    }
}

/// PUT every resource, `concurrency` in flight (the benchmarks' shared driver); the wall
/// time, or the first failure.
async fn put_all(
    client: &Client,
    singles: &Arc<Vec<(String, String)>>,
    concurrency: usize,
) -> Result<Duration, CliError> {
    let (results, wall) = crate::bench::drive_all(singles.len(), concurrency, |k| {
        let (client, singles) = (client.clone(), singles.clone());
        async move {
            match singles.get(k) {
                Some((path, body)) => client.put(path, body.clone()).await,
                None => Ok(()),
            }
        }
    })
    .await?;
    results
        .into_iter()
        .collect::<Result<(), String>>()
        .map_err(CliError::Usage)?;
    Ok(wall)
}

/// A fresh tenant validating in `mode` (implied profiles when enforcing), set with the
/// owner role, and a client for it. Returns the policy the server reads back.
async fn fresh_tenant(
    state: &AppState,
    owner: &sqlx::PgPool,
    http: &reqwest::Client,
    mode: ValidationMode,
) -> Result<(TenantId, Client, ValidationPolicy), CliError> {
    let tenant = TenantId::parse(&format!(
        "bench-tx-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    ))?;
    state
        .store
        .create_tenant(&tenant, "bench-transaction")
        .await?;
    store::set_tenant_validation(owner, &tenant, mode, mode == ValidationMode::Enforce).await?;
    let policy = state.validation_policy(&tenant).await?;
    let base = state.fhir_base(&tenant);
    let token = state
        .tokens
        .mint(
            &tenant,
            &base,
            "hearth-bench-transaction",
            "system/*.cruds",
            3600,
        )
        .await?;
    let client = Client {
        http: http.clone(),
        base,
        auth: format!("Bearer {token}"),
    };
    Ok((tenant, client, policy))
}

/// One (round, mode) measurement.
struct TxRound {
    policy: ValidationPolicy,
    /// Entries committed / sum of the bundles' times.
    tx_per_sec: f64,
    secs_per_bundle: f64,
    put_per_sec: f64,
}

fn policy_label(p: ValidationPolicy) -> String {
    if p.implied {
        format!("{}+implied", p.mode.code())
    } else {
        p.mode.code().to_owned()
    }
}

fn print_tx_row(
    out: &mut impl Write,
    label: &str,
    tenant: &str,
    r: &TxRound,
) -> std::io::Result<()> {
    writeln!(
        out,
        "  {label:<10} {tenant:<24} {:<18} {:>10.0} {:>12.2} {:>12.0} {:>10.2}",
        policy_label(r.policy),
        r.tx_per_sec,
        r.secs_per_bundle,
        r.put_per_sec,
        r.tx_per_sec / r.put_per_sec.max(1e-9)
    )
}

pub async fn run_transaction(
    mut config: Config,
    args: BenchTransactionArgs,
) -> Result<(), CliError> {
    if args.patients_per_bundle == 0 || args.bundles == 0 || args.rounds == 0 {
        return Err(CliError::Usage(
            "--patients-per-bundle, --bundles and --rounds must be at least 1".into(),
        ));
    }
    let owner_url = config.database.migration_url.clone().ok_or_else(|| {
        CliError::Usage(
            "bench-transaction sets each tenant's validation with the owner role: set HEARTH_MIGRATION_DATABASE_URL".into(),
        )
    })?;
    // Not locked across awaits: the server thread logs to stdout too.
    let mut out = std::io::stdout();
    let built = Instant::now();
    let workload = build_workload(&args);
    let largest_entries = workload.bundles.iter().map(|b| b.1).max().unwrap_or(0);
    let largest_bytes = workload
        .bundles
        .iter()
        .map(|b| b.0.len())
        .max()
        .unwrap_or(0);
    let total_entries: usize = workload.bundles.iter().map(|b| b.1).sum();

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    config.server.public_base_url = format!("http://{addr}");
    config.server.max_bundle_entries = config.server.max_bundle_entries.max(largest_entries);
    config.server.max_body_bytes = config.server.max_body_bytes.max(largest_bytes + (1 << 20));
    config.database.max_connections = config
        .database
        .max_connections
        .max(u32::try_from(args.concurrency + 4).unwrap_or(u32::MAX));
    let (entries_limit, body_limit) = (
        config.server.max_bundle_entries,
        config.server.max_body_bytes,
    );
    let workers = match config.server.workers {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    writeln!(
        out,
        "bench-transaction: {} bundles x {} patients = {total_entries} resources per measurement \
         ({}..{} entries, up to {:.1} MB per bundle; built in {:.1} s)",
        args.bundles,
        args.patients_per_bundle,
        workload.bundles.iter().map(|b| b.1).min().unwrap_or(0),
        largest_entries,
        largest_bytes as f64 / 1e6,
        built.elapsed().as_secs_f64()
    )?;
    writeln!(
        out,
        "  every entry POST with a urn:uuid fullUrl; {} references rewritten to urn:uuids, {} left as Type/id \
         (to the {} shared Practitioners/Organizations/Locations, PUT untimed into each tenant first)",
        workload.rewritten,
        workload.kept,
        workload.shared.len()
    )?;
    writeln!(
        out,
        "  server in-process: max_bundle_entries={entries_limit} max_body_bytes={body_limit} HTTP workers={workers}; \
         Prefer: return=minimal; one-by-one = PUT Type/id, {} in flight; each (round, mode) in a fresh tenant",
        args.concurrency
    )?;
    out.flush()?;

    let state = actix_web::web::Data::new(server::prepare(config).await?);
    let owner = store::connect(&owner_url, 2).await?;
    let http_state = state.clone();
    std::thread::spawn(move || {
        let system = actix_web::rt::System::new();
        system.block_on(async move {
            if let Ok(server) = server::http_server(http_state, listener) {
                let _ = server.await;
            }
        });
    });
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency.max(1))
        .timeout(Duration::from_secs(1800))
        .build()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let singles = Arc::new(workload.singles);

    writeln!(
        out,
        "  {:<10} {:<24} {:<18} {:>10} {:>12} {:>12} {:>10}",
        "round", "tenant", "validation", "tx res/s", "s/bundle", "PUT res/s", "tx/PUT"
    )?;
    out.flush()?;
    let modes = [ValidationMode::Enforce, ValidationMode::Off];
    let mut results: Vec<(ValidationMode, TxRound)> = Vec::new();
    for round in 0..args.rounds {
        for mode in modes {
            let (tenant, client, policy) = fresh_tenant(&state, &owner, &http, mode).await?;
            for (path, body) in &workload.shared {
                client
                    .put(path, body.clone())
                    .await
                    .map_err(CliError::Usage)?;
            }
            let mut per_bundle = Vec::with_capacity(workload.bundles.len());
            for (bundle, entries) in &workload.bundles {
                let took = client
                    .transaction(bundle.clone(), *entries)
                    .await
                    .map_err(CliError::Usage)?;
                per_bundle.push(took.as_secs_f64());
            }
            let tx_secs: f64 = per_bundle.iter().sum();
            let put_wall = put_all(&client, &singles, args.concurrency).await?;
            let row = TxRound {
                policy,
                tx_per_sec: total_entries as f64 / tx_secs.max(1e-9),
                secs_per_bundle: median(per_bundle),
                put_per_sec: singles.len() as f64 / put_wall.as_secs_f64().max(1e-9),
            };
            tracing::info!(round, mode = mode.code(), "bench-transaction round done");
            print_tx_row(
                &mut out,
                &format!("round {}", round + 1),
                tenant.as_str(),
                &row,
            )?;
            out.flush()?;
            results.push((mode, row));
        }
    }
    let mut medians: Vec<(ValidationMode, TxRound)> = Vec::new();
    for mode in modes {
        let rows: Vec<&TxRound> = results
            .iter()
            .filter(|(m, _)| *m == mode)
            .map(|(_, r)| r)
            .collect();
        let Some(first) = rows.first() else {
            continue;
        };
        let col = |f: fn(&TxRound) -> f64| median(rows.iter().map(|r| f(r)).collect());
        let row = TxRound {
            policy: first.policy,
            tx_per_sec: col(|r| r.tx_per_sec),
            secs_per_bundle: col(|r| r.secs_per_bundle),
            put_per_sec: col(|r| r.put_per_sec),
        };
        print_tx_row(&mut out, "median", "(fresh per round)", &row)?;
        medians.push((mode, row));
    }
    if let (Some((_, enforce)), Some((_, off))) = (
        medians.iter().find(|(m, _)| *m == ValidationMode::Enforce),
        medians.iter().find(|(m, _)| *m == ValidationMode::Off),
    ) {
        let cost = |e: f64, o: f64| (1.0 / e.max(1e-9) - 1.0 / o.max(1e-9)) * 1e6;
        writeln!(
            out,
            "enforce+implied vs off: transaction {:.0} vs {:.0} res/s ({:+.0} µs of wall time per resource); \
             one-by-one PUT {:.0} vs {:.0} res/s ({:+.0} µs of wall time per resource, {} in flight)",
            enforce.tx_per_sec,
            off.tx_per_sec,
            cost(enforce.tx_per_sec, off.tx_per_sec),
            enforce.put_per_sec,
            off.put_per_sec,
            cost(enforce.put_per_sec, off.put_per_sec),
            args.concurrency
        )?;
    }
    writeln!(
        out,
        "(patients-per-bundle={} bundles={} rounds={} concurrency={} seed={}; {} tenants bench-tx-* left in place)",
        args.patients_per_bundle,
        args.bundles,
        args.rounds,
        args.concurrency,
        args.seed,
        results.len()
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn references<'v>(value: &'v Value, out: &mut Vec<&'v str>) {
        match value {
            Value::Object(o) => {
                for (k, v) in o {
                    match (k.as_str(), v) {
                        ("reference", Value::String(s)) => out.push(s),
                        _ => references(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| references(v, out)),
            _ => {}
        }
    }

    #[test]
    fn transaction_bundles_refer_to_their_own_entries_or_shared_resources() {
        let args = BenchTransactionArgs {
            patients_per_bundle: 2,
            bundles: 2,
            rounds: 1,
            concurrency: 1,
            seed: synth::DEFAULT_SEED,
        };
        let w = build_workload(&args);
        assert_eq!(w.bundles.len(), 2);
        let shared: Vec<&str> = w.shared.iter().map(|(p, _)| p.as_str()).collect();
        let mut total = 0;
        for (bytes, count) in &w.bundles {
            let bundle: Value = serde_json::from_slice(bytes).expect("a bundle is JSON");
            let entries = bundle["entry"].as_array().expect("entries");
            assert_eq!(entries.len(), *count);
            total += count;
            let full_urls: Vec<&str> = entries
                .iter()
                .map(|e| e["fullUrl"].as_str().expect("fullUrl"))
                .collect();
            assert!(full_urls.iter().all(|u| u.starts_with("urn:uuid:")));
            for e in entries {
                assert_eq!(e["request"]["method"], "POST");
                assert!(e["resource"].get("id").is_none());
                let mut refs = Vec::new();
                references(&e["resource"], &mut refs);
                for r in refs {
                    assert!(
                        full_urls.contains(&r) || shared.contains(&r),
                        "{r} is neither an entry of this bundle nor a shared resource"
                    );
                }
            }
        }
        assert_eq!(total, w.singles.len());
        assert!(w.rewritten > 0 && w.kept > 0);
    }
}
