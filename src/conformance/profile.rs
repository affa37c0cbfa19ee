//! US Core 6.1.0 profile validation against the rule table in `profiles/us-core/profiles.json`
//! (see `profiles/us-core/README.md` for what the rules mean).
//!
//! Checks, each with a FHIRPath-style expression: cardinalities narrower than base R4
//! (inside every occurrence of the parent), fixed and pattern values, slices (how many
//! items belong, and the rules for those items), required bindings on code/Coding/
//! CodeableConcept, allowed types of choice elements, reference target types (relative
//! references), the invariants (`invariants.rs`), and US Core extensions anywhere in the
//! resource. Base R4 structure is `structure.rs`'s job and is not checked again here.
//!
//! The table is compiled once into a tree per profile, so validating walks only the
//! elements a profile says something about, plus one pass over the resource for
//! extensions.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::R4Structure;

mod invariants;

use invariants::{Check, Ctx};

const PROFILES_JSON: &str = include_str!("../../profiles/us-core/profiles.json");
/// Stop collecting after this many findings, as `structure.rs` does.
const MAX_ISSUES: usize = 100;
/// Deeper nesting than this is not walked (structure.rs refuses it anyway).
const MAX_DEPTH: usize = 64;
/// An extension whose url starts with this must be one US Core defines.
const US_CORE_PREFIX: &str = "http://hl7.org/fhir/us/core/StructureDefinition/";
/// The version a `meta.profile` canonical may name (`url|6.1.0`).
const US_CORE_VERSION: &str = "6.1.0";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// The kind of finding, as the OperationOutcome issue type it maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileIssueCode {
    /// Something the profile requires is missing (minimum cardinality, a slice, a
    /// sub-extension).
    Required,
    /// A value differs from the profile's fixed value or pattern.
    Value,
    /// An invariant does not hold.
    Invariant,
    /// Too many occurrences, a type or reference target the profile does not allow, an
    /// unknown or misplaced US Core extension.
    Structure,
    /// A code outside a required value set.
    CodeInvalid,
}

impl ProfileIssueCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ProfileIssueCode::Required => "required",
            ProfileIssueCode::Value => "value",
            ProfileIssueCode::Invariant => "invariant",
            ProfileIssueCode::Structure => "structure",
            ProfileIssueCode::CodeInvalid => "code-invalid",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileIssue {
    pub severity: Severity,
    pub code: ProfileIssueCode,
    /// Where, e.g. `Patient.name[0].family`.
    pub expression: String,
    /// What is wrong. Never quotes the offending value: it may be PHI. It may quote the
    /// profile (expected codes, patterns, invariant text).
    pub message: String,
    /// The canonical url of the profile that was checked.
    pub profile: String,
}

/// The url is not a US Core 6.1.0 profile of a resource.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a known US Core {US_CORE_VERSION} profile: {url}")]
pub struct UnknownProfile {
    pub url: String,
}

/// Validate `resource` against the US Core profile `profile_url` (a canonical, optionally
/// with `|6.1.0`). Base R4 structure is not checked here: see `R4Structure`.
pub fn validate_profile(
    resource: &Value,
    profile_url: &str,
) -> Result<Vec<ProfileIssue>, UnknownProfile> {
    let registry = Registry::global();
    let (url, version) = match profile_url.split_once('|') {
        Some((u, v)) => (u, Some(v)),
        None => (profile_url, None),
    };
    let profile = version
        .is_none_or(|v| v == US_CORE_VERSION)
        .then(|| registry.profile(url))
        .flatten()
        .ok_or_else(|| UnknownProfile {
            url: profile_url.to_owned(),
        })?;
    let mut walk = Walk {
        registry,
        profile,
        resource,
        issues: Vec::new(),
        path: Vec::new(),
    };
    walk.run();
    Ok(walk.issues)
}

/// The US Core profiles a resource is expected to meet when it claims none, by resource
/// type, and for Observation, Condition and DiagnosticReport by code and category (see
/// `IMPLIED`). Empty when US Core has no profile for it (or, like Device, only for a kind
/// of it that the resource cannot tell).
pub fn profiles_for(resource: &Value) -> Vec<&'static str> {
    let registry = Registry::global();
    let Some(resource_type) = resource.get("resourceType").and_then(Value::as_str) else {
        return Vec::new();
    };
    let mut out: Vec<&'static str> = Vec::new();
    let mut tier = None;
    for rule in IMPLIED.iter().filter(|r| r.resource_type == resource_type) {
        if tier.is_some_and(|t| rule.tier > t) {
            break;
        }
        let hit = match rule.when {
            When::Always => true,
            When::Category(system, code) => has_coding(resource.get("category"), system, code),
            When::Code(system, code) => has_coding(resource.get("code"), system, code),
        };
        if !hit {
            continue;
        }
        tier = Some(rule.tier);
        if let Some(url) = registry.url_of(rule.profile)
            && !out.contains(&url)
        {
            out.push(url);
        }
    }
    out
}

/// Every US Core profile of a resource this server knows: (canonical url, resource type).
pub fn known_profiles() -> impl Iterator<Item = (&'static str, &'static str)> {
    Registry::global()
        .profiles
        .iter()
        .map(|p| (p.url.as_str(), p.type_name.as_str()))
}

// ---------------------------------------------------------------------------------------
// Which profile a resource implies. Rules for one type are in tier order: the first tier
// with a match wins, and every match of that tier is returned.
// ---------------------------------------------------------------------------------------

const LOINC: &str = "http://loinc.org";
const OBS_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
const US_CORE_CATEGORY: &str = "http://hl7.org/fhir/us/core/CodeSystem/us-core-category";
const CONDITION_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/condition-category";
const US_CORE_CONDITION_CATEGORY: &str =
    "http://hl7.org/fhir/us/core/CodeSystem/condition-category";
const V2_0074: &str = "http://terminology.hl7.org/CodeSystem/v2-0074";

#[derive(Clone, Copy)]
enum When {
    Always,
    Category(&'static str, &'static str),
    Code(&'static str, &'static str),
}

struct Implied {
    resource_type: &'static str,
    tier: u8,
    when: When,
    /// The profile's name (last segment of its url).
    profile: &'static str,
}

const fn implied(
    resource_type: &'static str,
    tier: u8,
    when: When,
    profile: &'static str,
) -> Implied {
    Implied {
        resource_type,
        tier,
        when,
        profile,
    }
}

#[rustfmt::skip]
const IMPLIED: &[Implied] = &[
    // Observation: a profile that pins the code first, then by category. Pulse oximetry
    // is picked by 59408-5 only: its other code, 2708-6, is also an arterial blood gas
    // (laboratory) result.
    implied("Observation", 0, When::Code(LOINC, "85354-9"), "us-core-blood-pressure"),
    implied("Observation", 0, When::Code(LOINC, "39156-5"), "us-core-bmi"),
    implied("Observation", 0, When::Code(LOINC, "8302-2"), "us-core-body-height"),
    implied("Observation", 0, When::Code(LOINC, "8310-5"), "us-core-body-temperature"),
    implied("Observation", 0, When::Code(LOINC, "29463-7"), "us-core-body-weight"),
    implied("Observation", 0, When::Code(LOINC, "9843-4"), "us-core-head-circumference"),
    implied("Observation", 0, When::Code(LOINC, "8867-4"), "us-core-heart-rate"),
    implied("Observation", 0, When::Code(LOINC, "9279-1"), "us-core-respiratory-rate"),
    implied("Observation", 0, When::Code(LOINC, "59408-5"), "us-core-pulse-oximetry"),
    implied("Observation", 0, When::Code(LOINC, "59576-9"), "pediatric-bmi-for-age"),
    implied("Observation", 0, When::Code(LOINC, "77606-2"), "pediatric-weight-for-height"),
    implied("Observation", 0, When::Code(LOINC, "8289-1"), "head-occipital-frontal-circumference-percentile"),
    implied("Observation", 0, When::Code(LOINC, "72166-2"), "us-core-smokingstatus"),
    implied("Observation", 0, When::Code(LOINC, "11341-5"), "us-core-observation-occupation"),
    implied("Observation", 0, When::Code(LOINC, "82810-3"), "us-core-observation-pregnancystatus"),
    implied("Observation", 0, When::Code(LOINC, "86645-9"), "us-core-observation-pregnancyintent"),
    implied("Observation", 0, When::Code(LOINC, "76690-7"), "us-core-observation-sexual-orientation"),
    implied("Observation", 1, When::Category(OBS_CATEGORY, "vital-signs"), "us-core-vital-signs"),
    implied("Observation", 1, When::Category(OBS_CATEGORY, "laboratory"), "us-core-observation-lab"),
    implied("Observation", 1, When::Category(OBS_CATEGORY, "survey"), "us-core-observation-screening-assessment"),
    implied("Observation", 2, When::Category(OBS_CATEGORY, "exam"), "us-core-observation-clinical-result"),
    implied("Observation", 2, When::Category(OBS_CATEGORY, "imaging"), "us-core-observation-clinical-result"),
    implied("Observation", 2, When::Category(OBS_CATEGORY, "procedure"), "us-core-observation-clinical-result"),
    implied("Observation", 2, When::Category(OBS_CATEGORY, "therapy"), "us-core-observation-clinical-result"),
    implied("Observation", 2, When::Category(OBS_CATEGORY, "activity"), "us-core-observation-clinical-result"),
    implied("Observation", 3, When::Category(US_CORE_CATEGORY, "sdoh"), "us-core-simple-observation"),
    implied("Observation", 3, When::Category(US_CORE_CATEGORY, "functional-status"), "us-core-simple-observation"),
    implied("Observation", 3, When::Category(US_CORE_CATEGORY, "disability-status"), "us-core-simple-observation"),
    implied("Observation", 3, When::Category(US_CORE_CATEGORY, "cognitive-status"), "us-core-simple-observation"),
    implied("Observation", 3, When::Category(OBS_CATEGORY, "social-history"), "us-core-simple-observation"),
    implied("Condition", 0, When::Category(CONDITION_CATEGORY, "encounter-diagnosis"), "us-core-condition-encounter-diagnosis"),
    implied("Condition", 0, When::Category(CONDITION_CATEGORY, "problem-list-item"), "us-core-condition-problems-health-concerns"),
    implied("Condition", 0, When::Category(US_CORE_CONDITION_CATEGORY, "health-concern"), "us-core-condition-problems-health-concerns"),
    implied("Condition", 9, When::Always, "us-core-condition-problems-health-concerns"),
    implied("DiagnosticReport", 0, When::Category(V2_0074, "LAB"), "us-core-diagnosticreport-lab"),
    implied("DiagnosticReport", 9, When::Always, "us-core-diagnosticreport-note"),
    implied("AllergyIntolerance", 9, When::Always, "us-core-allergyintolerance"),
    implied("CarePlan", 9, When::Always, "us-core-careplan"),
    implied("CareTeam", 9, When::Always, "us-core-careteam"),
    implied("Coverage", 9, When::Always, "us-core-coverage"),
    implied("DocumentReference", 9, When::Always, "us-core-documentreference"),
    implied("Encounter", 9, When::Always, "us-core-encounter"),
    implied("Goal", 9, When::Always, "us-core-goal"),
    implied("Immunization", 9, When::Always, "us-core-immunization"),
    implied("Location", 9, When::Always, "us-core-location"),
    implied("Medication", 9, When::Always, "us-core-medication"),
    implied("MedicationDispense", 9, When::Always, "us-core-medicationdispense"),
    implied("MedicationRequest", 9, When::Always, "us-core-medicationrequest"),
    implied("Organization", 9, When::Always, "us-core-organization"),
    implied("Patient", 9, When::Always, "us-core-patient"),
    implied("Practitioner", 9, When::Always, "us-core-practitioner"),
    implied("PractitionerRole", 9, When::Always, "us-core-practitionerrole"),
    implied("Procedure", 9, When::Always, "us-core-procedure"),
    implied("Provenance", 9, When::Always, "us-core-provenance"),
    implied("QuestionnaireResponse", 9, When::Always, "us-core-questionnaireresponse"),
    implied("RelatedPerson", 9, When::Always, "us-core-relatedperson"),
    implied("ServiceRequest", 9, When::Always, "us-core-servicerequest"),
    implied("Specimen", 9, When::Always, "us-core-specimen"),
];

/// Does a CodeableConcept (or an array of them) have the coding `system|code`?
fn has_coding(value: Option<&Value>, system: &str, code: &str) -> bool {
    let concepts: &[Value] = match value {
        Some(Value::Array(a)) => a,
        Some(v) => std::slice::from_ref(v),
        None => return false,
    };
    concepts.iter().any(|cc| {
        cc.get("coding")
            .and_then(Value::as_array)
            .is_some_and(|codings| {
                codings.iter().any(|c| {
                    c.get("system").and_then(Value::as_str) == Some(system)
                        && c.get("code").and_then(Value::as_str) == Some(code)
                })
            })
    })
}

// ---------------------------------------------------------------------------------------
// The table as read from JSON
// ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct RawTable {
    profiles: Vec<RawProfile>,
    extensions: Vec<RawExtension>,
}

#[derive(Deserialize)]
struct RawProfile {
    url: String,
    name: String,
    #[serde(rename = "type")]
    type_name: String,
    constraints: Vec<RawConstraint>,
    elements: Vec<RawElement>,
}

#[derive(Deserialize)]
struct RawElement {
    path: String,
    min: Option<u32>,
    max: Option<Value>,
    fixed: Option<Value>,
    pattern: Option<Value>,
    binding: Option<RawBinding>,
    types: Option<Vec<String>>,
    choice: Option<Vec<String>>,
    targets: Option<Vec<String>>,
    #[serde(default)]
    constraints: Vec<RawConstraint>,
    #[serde(rename = "match")]
    matcher: Option<RawMatch>,
}

type RawCodes = HashMap<String, Vec<String>>;

#[derive(Deserialize)]
struct RawBinding {
    #[serde(rename = "valueSet")]
    value_set: String,
    on: Vec<String>,
    codes: Option<RawCodes>,
}

#[derive(Deserialize)]
struct RawMatch {
    pattern: Option<Value>,
    #[serde(rename = "valueSet")]
    value_set: Option<String>,
    codes: Option<RawCodes>,
}

#[derive(Deserialize)]
struct RawConstraint {
    key: String,
    severity: String,
    human: String,
    source: String,
}

#[derive(Deserialize)]
struct RawExtension {
    url: String,
    name: String,
    context: Vec<RawContext>,
    value: Option<RawValue>,
    extensions: Vec<RawSub>,
    #[serde(rename = "extensionsAllowed")]
    extensions_allowed: bool,
}

#[derive(Deserialize)]
struct RawContext {
    expression: Option<String>,
}

#[derive(Deserialize)]
struct RawValue {
    min: u32,
    types: Vec<String>,
    binding: Option<RawBinding>,
}

#[derive(Deserialize)]
struct RawSub {
    url: String,
    min: u32,
    max: Value,
    value: Option<RawValue>,
}

// ---------------------------------------------------------------------------------------
// The compiled table
// ---------------------------------------------------------------------------------------

/// The codes of an enumerable value set.
struct CodeSet {
    by_system: HashMap<String, HashSet<String>>,
    /// Every code regardless of system, for `code` elements (which carry no system).
    any: HashSet<String>,
}

impl CodeSet {
    fn new(raw: RawCodes) -> CodeSet {
        let any = raw.values().flatten().cloned().collect();
        let by_system = raw
            .into_iter()
            .map(|(system, codes)| (system, codes.into_iter().collect()))
            .collect();
        CodeSet { by_system, any }
    }

    fn has(&self, system: &str, code: &str) -> bool {
        self.by_system.get(system).is_some_and(|c| c.contains(code))
    }

    fn has_coding(&self, coding: &Value) -> bool {
        match (
            coding.get("system").and_then(Value::as_str),
            coding.get("code").and_then(Value::as_str),
        ) {
            (Some(system), Some(code)) => self.has(system, code),
            _ => false,
        }
    }

    fn has_concept(&self, concept: &Value) -> bool {
        concept
            .get("coding")
            .and_then(Value::as_array)
            .is_some_and(|codings| codings.iter().any(|c| self.has_coding(c)))
    }
}

struct Binding {
    value_set: String,
    /// None: the value set cannot be enumerated, so the binding is not checked.
    codes: Option<CodeSet>,
    /// The coded types of the element (`code`, `Coding`, `CodeableConcept`).
    on: Vec<String>,
}

impl Binding {
    fn new(raw: RawBinding) -> Binding {
        Binding {
            value_set: raw.value_set,
            codes: raw.codes.map(CodeSet::new),
            on: raw.on,
        }
    }

    /// Is `value`, of FHIR type `type_name`, in the value set? None when not checkable.
    fn accepts(&self, type_name: &str, value: &Value) -> Option<bool> {
        let codes = self.codes.as_ref()?;
        if !self.on.iter().any(|t| t == type_name) {
            return None;
        }
        match type_name {
            "code" => value.as_str().map(|c| codes.any.contains(c)),
            "Coding" => value.is_object().then(|| codes.has_coding(value)),
            "CodeableConcept" => value.is_object().then(|| codes.has_concept(value)),
            _ => None,
        }
    }
}

struct Constraint {
    key: String,
    severity: Severity,
    human: String,
    source: String,
    /// None only if the table names an invariant `invariants.rs` does not implement; a
    /// test keeps that from shipping.
    check: Option<Check>,
}

impl Constraint {
    fn new(raw: RawConstraint) -> Constraint {
        Constraint {
            check: invariants::lookup(&raw.source, &raw.key),
            severity: if raw.severity == "warning" {
                Severity::Warning
            } else {
                Severity::Error
            },
            key: raw.key,
            human: raw.human,
            source: raw.source,
        }
    }
}

/// What a profile says about one element (or one slice of it).
#[derive(Default)]
struct Rules {
    min: u32,
    max: Option<u32>,
    fixed: Option<Value>,
    pattern: Option<(Value, String)>,
    binding: Option<Binding>,
    types: Option<Vec<String>>,
    targets: Option<Vec<String>>,
    constraints: Vec<Constraint>,
}

/// How the items of an element are found in its parent's JSON object.
enum Name {
    Key(String),
    /// A choice element `stem[x]`: (JSON key, FHIR type) of each variant.
    Choice(Vec<(String, String)>),
}

#[derive(Default)]
struct Node {
    children: Vec<Element>,
}

struct Element {
    name: Name,
    /// As the element is named in an expression when it is missing (`value[x]`).
    label: String,
    rules: Rules,
    /// Rules for the children of every item.
    node: Node,
    slices: Vec<Slice>,
}

struct Slice {
    name: String,
    min: u32,
    max: Option<u32>,
    /// None: the slice has no discriminator we can evaluate; it is not checked.
    matcher: Option<Matcher>,
    description: String,
    /// Rules for the items that belong to the slice.
    rules: Rules,
    node: Node,
}

enum Matcher {
    Pattern(Value),
    Codes(CodeSet),
}

impl Matcher {
    fn matches(&self, value: &Value) -> bool {
        match self {
            Matcher::Pattern(p) => contains(p, value),
            Matcher::Codes(codes) => {
                if value.get("coding").is_some() {
                    codes.has_concept(value)
                } else {
                    codes.has_coding(value)
                }
            }
        }
    }
}

struct Profile {
    url: String,
    name: String,
    type_name: String,
    constraints: Vec<Constraint>,
    root: Node,
}

struct ValueRule {
    min: u32,
    types: Vec<String>,
    binding: Option<Binding>,
}

impl ValueRule {
    fn new(raw: RawValue) -> ValueRule {
        ValueRule {
            min: raw.min,
            types: raw.types,
            binding: raw.binding.map(Binding::new),
        }
    }
}

struct SubExtension {
    url: String,
    min: u32,
    max: Option<u32>,
    value: Option<ValueRule>,
}

struct ExtensionDef {
    name: String,
    /// Element paths the extension may sit on; None when a context is a data type
    /// (`ContactPoint`, `Element`), which a JSON walk cannot tell, so it is not checked.
    contexts: Option<Vec<String>>,
    /// None: a complex extension, which must not have a value.
    value: Option<ValueRule>,
    subs: Vec<SubExtension>,
    extensions_allowed: bool,
}

struct Registry {
    profiles: Vec<Profile>,
    by_url: HashMap<String, usize>,
    by_name: HashMap<String, usize>,
    extensions: HashMap<String, ExtensionDef>,
}

fn parse_max(v: Option<&Value>) -> Option<u32> {
    v.and_then(Value::as_u64)
        .map(|m| u32::try_from(m).unwrap_or(u32::MAX))
}

fn upper_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

/// A short, readable form of a slice pattern for messages: its codings, system or url.
fn describe_pattern(p: &Value) -> String {
    let coding = |c: &Value| {
        format!(
            "{}|{}",
            c.get("system").and_then(Value::as_str).unwrap_or(""),
            c.get("code").and_then(Value::as_str).unwrap_or("")
        )
    };
    if let Some(codings) = p.get("coding").and_then(Value::as_array) {
        return codings.iter().map(coding).collect::<Vec<_>>().join(", ");
    }
    if p.get("code").is_some_and(Value::is_string) {
        return coding(p);
    }
    if let Some(inner) = p.get("code").or_else(|| p.get("type")) {
        return describe_pattern(inner);
    }
    if let Some(url) = p.get("url").and_then(Value::as_str) {
        return url.to_owned();
    }
    if let Some(system) = p.get("system").and_then(Value::as_str) {
        return format!("system {system}");
    }
    p.to_string()
}

impl Node {
    fn child(&mut self, segment: &str, choice: Option<&[String]>) -> Result<&mut Element, String> {
        let position = self.children.iter().position(|e| e.label == segment);
        let index = match position {
            Some(i) => i,
            None => {
                let name = match segment.strip_suffix("[x]") {
                    Some(stem) => {
                        let types =
                            choice.ok_or_else(|| format!("{segment}: choice without types"))?;
                        Name::Choice(
                            types
                                .iter()
                                .map(|t| (format!("{stem}{}", upper_first(t)), t.clone()))
                                .collect(),
                        )
                    }
                    None => Name::Key(segment.to_owned()),
                };
                self.children.push(Element {
                    name,
                    label: segment.to_owned(),
                    rules: Rules::default(),
                    node: Node::default(),
                    slices: Vec::new(),
                });
                self.children.len() - 1
            }
        };
        self.children
            .get_mut(index)
            .ok_or_else(|| format!("{segment}: lost element"))
    }
}

impl Element {
    fn slice(&mut self, name: &str) -> Result<&mut Slice, String> {
        let index = match self.slices.iter().position(|s| s.name == name) {
            Some(i) => i,
            None => {
                self.slices.push(Slice {
                    name: name.to_owned(),
                    min: 0,
                    max: None,
                    matcher: None,
                    description: String::new(),
                    rules: Rules::default(),
                    node: Node::default(),
                });
                self.slices.len() - 1
            }
        };
        self.slices
            .get_mut(index)
            .ok_or_else(|| format!("{name}: lost slice"))
    }
}

impl Registry {
    fn global() -> &'static Registry {
        static REGISTRY: OnceLock<Registry> = OnceLock::new();
        REGISTRY.get_or_init(|| {
            // The table is compiled into the binary and checked by this crate's tests, so
            // a failure here is a build defect, not bad input.
            Registry::from_json(PROFILES_JSON).expect("profiles/us-core/profiles.json is valid")
        })
    }

    fn from_json(text: &str) -> Result<Registry, String> {
        let raw: RawTable = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut profiles = Vec::new();
        for p in raw.profiles {
            let mut root = Node::default();
            for e in p.elements {
                insert(&mut root, &p.type_name, e).map_err(|err| format!("{}: {err}", p.url))?;
            }
            profiles.push(Profile {
                url: p.url,
                name: p.name,
                type_name: p.type_name,
                constraints: p.constraints.into_iter().map(Constraint::new).collect(),
                root,
            });
        }
        let by_url = profiles
            .iter()
            .enumerate()
            .map(|(i, p)| (p.url.clone(), i))
            .collect();
        let by_name = profiles
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.clone(), i))
            .collect();
        let structure = R4Structure::global();
        let mut extensions = HashMap::new();
        for e in raw.extensions {
            let paths: Vec<String> = e.context.into_iter().filter_map(|c| c.expression).collect();
            // A context we can check is a resource type or a path inside one.
            let checkable = paths.iter().all(|p| {
                let first = p.split('.').next().unwrap_or(p);
                structure.is_resource_type(first)
            });
            extensions.insert(
                e.url,
                ExtensionDef {
                    name: e.name,
                    contexts: (checkable && !paths.is_empty()).then_some(paths),
                    value: e.value.map(ValueRule::new),
                    subs: e
                        .extensions
                        .into_iter()
                        .map(|s| SubExtension {
                            url: s.url,
                            min: s.min,
                            max: parse_max(Some(&s.max)),
                            value: s.value.map(ValueRule::new),
                        })
                        .collect(),
                    extensions_allowed: e.extensions_allowed,
                },
            );
        }
        Ok(Registry {
            profiles,
            by_url,
            by_name,
            extensions,
        })
    }

    fn profile(&self, url: &str) -> Option<&Profile> {
        self.by_url.get(url).and_then(|&i| self.profiles.get(i))
    }

    fn url_of(&'static self, name: &str) -> Option<&'static str> {
        self.by_name
            .get(name)
            .and_then(|&i| self.profiles.get(i))
            .map(|p| p.url.as_str())
    }
}

/// Put the rules of one table element into the profile's tree.
fn insert(root: &mut Node, type_name: &str, raw: RawElement) -> Result<(), String> {
    let rest = raw
        .path
        .strip_prefix(type_name)
        .and_then(|r| r.strip_prefix('.'))
        .ok_or_else(|| format!("{}: path outside {type_name}", raw.path))?
        .to_owned();
    let segments: Vec<(&str, Option<&str>)> = rest
        .split('.')
        .map(|s| match s.split_once(':') {
            Some((name, slice)) => (name, Some(slice)),
            None => (s, None),
        })
        .collect();
    let last = segments.len() - 1;
    let mut node = root;
    for (i, (segment, slice)) in segments.into_iter().enumerate() {
        let choice = if i == last {
            raw.choice.as_deref()
        } else {
            None
        };
        let element = node.child(segment, choice)?;
        match (slice, i == last) {
            (None, false) => node = &mut element.node,
            (Some(s), false) => node = &mut element.slice(s)?.node,
            (None, true) => {
                fill_rules(&mut element.rules, raw);
                return Ok(());
            }
            (Some(s), true) => {
                let slice = element.slice(s)?;
                slice.min = raw.min.unwrap_or(0);
                slice.max = parse_max(raw.max.as_ref());
                let matcher = raw
                    .matcher
                    .as_ref()
                    .and_then(|m| match (&m.pattern, &m.codes) {
                        (Some(p), _) => Some(Matcher::Pattern(p.clone())),
                        (None, Some(codes)) => Some(Matcher::Codes(CodeSet::new(codes.clone()))),
                        (None, None) => None,
                    });
                slice.description = match raw.matcher.as_ref() {
                    Some(RawMatch {
                        pattern: Some(p), ..
                    }) => describe_pattern(p),
                    Some(RawMatch {
                        value_set: Some(vs),
                        ..
                    }) => format!("a code from {vs}"),
                    _ => String::new(),
                };
                slice.matcher = matcher;
                // A slice's own min/max are counted over its members, not as element rules.
                let mut rules_only = raw;
                rules_only.min = None;
                rules_only.max = None;
                fill_rules(&mut slice.rules, rules_only);
                return Ok(());
            }
        }
    }
    Ok(())
}

fn fill_rules(rules: &mut Rules, raw: RawElement) {
    rules.min = raw.min.unwrap_or(0);
    rules.max = parse_max(raw.max.as_ref());
    rules.fixed = raw.fixed;
    rules.pattern = raw.pattern.map(|p| {
        let d = describe_pattern(&p);
        (p, d)
    });
    rules.binding = raw.binding.map(Binding::new);
    rules.types = raw.types;
    rules.targets = raw.targets;
    rules.constraints = raw.constraints.into_iter().map(Constraint::new).collect();
}

/// Pattern semantics: every key of a pattern object is present and contains its value;
/// every item of a pattern array is contained in some item of the value's array;
/// primitives are equal.
fn contains(pattern: &Value, value: &Value) -> bool {
    match (pattern, value) {
        (Value::Object(p), Value::Object(v)) => p
            .iter()
            .all(|(k, pv)| v.get(k).is_some_and(|vv| contains(pv, vv))),
        (Value::Array(p), Value::Array(v)) => {
            p.iter().all(|pi| v.iter().any(|vi| contains(pi, vi)))
        }
        (Value::Array(p), single) => p.iter().all(|pi| contains(pi, single)),
        (p, v) => p == v,
    }
}

/// The type of a relative reference `Type/id` (or `Type/id/_history/n`); None for
/// anything else (absolute, contained, urn:, logical).
fn relative_reference_type<'v>(resource: &'v Value, reference: &'v str) -> Option<&'v str> {
    if reference.starts_with('#') || reference.contains(':') {
        return None;
    }
    invariants::reference_type(resource, reference)
}

// ---------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Seg<'v> {
    Key(&'v str),
    Index(usize),
}

struct Item<'v> {
    key: &'v str,
    index: Option<usize>,
    value: &'v Value,
    /// The FHIR type when the element is a choice.
    type_name: Option<&'v str>,
}

struct Walk<'v> {
    registry: &'static Registry,
    profile: &'static Profile,
    resource: &'v Value,
    issues: Vec<ProfileIssue>,
    /// Where the walk is, below the resource type.
    path: Vec<Seg<'v>>,
}

fn collect_items<'v>(element: &'v Element, obj: &'v Map<String, Value>) -> Vec<Item<'v>> {
    let mut out = Vec::new();
    match &element.name {
        Name::Key(key) => match obj.get(key) {
            Some(Value::Array(items)) => {
                for (i, v) in items.iter().enumerate().filter(|(_, v)| !v.is_null()) {
                    out.push(Item {
                        key,
                        index: Some(i),
                        value: v,
                        type_name: None,
                    });
                }
            }
            Some(Value::Null) | None => {}
            Some(v) => out.push(Item {
                key,
                index: None,
                value: v,
                type_name: None,
            }),
        },
        Name::Choice(variants) => {
            for (key, type_name) in variants {
                if let Some(v) = obj.get(key).filter(|v| !v.is_null()) {
                    out.push(Item {
                        key,
                        index: None,
                        value: v,
                        type_name: Some(type_name),
                    });
                }
            }
        }
    }
    out
}

/// Is the element present only through its `_name` companion (a primitive that has only
/// an id or extensions)? It counts as present for minimum cardinality.
fn present_as_companion(element: &Element, obj: &Map<String, Value>) -> bool {
    let companion = |key: &str| {
        obj.iter()
            .any(|(k, v)| !v.is_null() && k.strip_prefix('_') == Some(key))
    };
    match &element.name {
        Name::Key(key) => companion(key),
        Name::Choice(variants) => variants.iter().any(|(k, _)| companion(k)),
    }
}

impl<'v> Walk<'v> {
    fn run(&mut self) {
        let profile = self.profile;
        let Some(obj) = self.resource.as_object() else {
            self.issue(
                Severity::Error,
                ProfileIssueCode::Structure,
                None,
                "a resource must be a JSON object".into(),
            );
            return;
        };
        let resource_type = obj.get("resourceType").and_then(Value::as_str);
        if resource_type != Some(profile.type_name.as_str()) {
            self.issue(
                Severity::Error,
                ProfileIssueCode::Structure,
                None,
                format!(
                    "profile {} applies to {} resources only",
                    profile.name, profile.type_name
                ),
            );
            return;
        }
        let resource = self.resource;
        self.constraints(&profile.constraints, resource, None);
        self.node(&profile.root, obj, 0);
        let mut host = vec![profile.type_name.as_str()];
        self.extensions(obj, &mut host, 0);
    }

    fn expression(&self, extra: Option<&str>) -> String {
        let mut s = match self.resource.get("resourceType").and_then(Value::as_str) {
            Some(t) => t.to_owned(),
            None => "Resource".to_owned(),
        };
        for seg in &self.path {
            match seg {
                Seg::Key(k) => {
                    s.push('.');
                    s.push_str(k);
                }
                Seg::Index(i) => {
                    s.push('[');
                    s.push_str(&i.to_string());
                    s.push(']');
                }
            }
        }
        if let Some(e) = extra {
            s.push('.');
            s.push_str(e);
        }
        s
    }

    fn issue(
        &mut self,
        severity: Severity,
        code: ProfileIssueCode,
        extra: Option<&str>,
        message: String,
    ) {
        if self.issues.len() < MAX_ISSUES {
            let expression = self.expression(extra);
            self.issues.push(ProfileIssue {
                severity,
                code,
                expression,
                message,
                profile: self.profile.url.clone(),
            });
        }
    }

    fn node(&mut self, node: &'static Node, obj: &'v Map<String, Value>, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        for element in &node.children {
            let items = collect_items(element, obj);
            let count = if items.is_empty() && present_as_companion(element, obj) {
                1
            } else {
                items.len()
            };
            let label = element.label.as_str();
            if count < element.rules.min as usize {
                self.issue(
                    Severity::Error,
                    ProfileIssueCode::Required,
                    Some(label),
                    format!(
                        "'{label}' is required by this profile (minimum {}, found {count})",
                        element.rules.min
                    ),
                );
            }
            if let Some(max) = element.rules.max
                && count > max as usize
            {
                self.issue(
                    Severity::Error,
                    ProfileIssueCode::Structure,
                    Some(label),
                    format!(
                        "'{label}' may occur at most {max} time(s) in this profile (found {count})"
                    ),
                );
            }
            for item in &items {
                self.item(&element.rules, &element.node, item, depth);
            }
            for slice in &element.slices {
                let Some(matcher) = &slice.matcher else {
                    continue;
                };
                let mut members = 0usize;
                for item in items.iter().filter(|i| matcher.matches(i.value)) {
                    members += 1;
                    self.item(&slice.rules, &slice.node, item, depth);
                }
                if members < slice.min as usize {
                    self.issue(
                        Severity::Error,
                        ProfileIssueCode::Required,
                        Some(label),
                        format!(
                            "at least {} '{label}' must match slice '{}' ({}); found {members}",
                            slice.min, slice.name, slice.description
                        ),
                    );
                }
                if let Some(max) = slice.max
                    && members > max as usize
                {
                    self.issue(
                        Severity::Error,
                        ProfileIssueCode::Structure,
                        Some(label),
                        format!(
                            "at most {max} '{label}' may match slice '{}' ({}); found {members}",
                            slice.name, slice.description
                        ),
                    );
                }
            }
        }
    }

    fn item(&mut self, rules: &'static Rules, node: &'static Node, item: &Item<'v>, depth: usize) {
        self.path.push(Seg::Key(item.key));
        if let Some(i) = item.index {
            self.path.push(Seg::Index(i));
        }
        if let (Some(types), Some(t)) = (&rules.types, item.type_name)
            && !types.iter().any(|a| a == t)
        {
            self.issue(
                Severity::Error,
                ProfileIssueCode::Structure,
                None,
                format!(
                    "type {t} is not allowed here by this profile (allowed: {})",
                    types.join(", ")
                ),
            );
        }
        if let Some(fixed) = &rules.fixed
            && fixed != item.value
        {
            self.issue(
                Severity::Error,
                ProfileIssueCode::Value,
                None,
                format!("must be exactly {fixed} in this profile"),
            );
        }
        if let Some((pattern, description)) = &rules.pattern
            && !contains(pattern, item.value)
        {
            self.issue(
                Severity::Error,
                ProfileIssueCode::Value,
                None,
                format!("must match the profile's pattern ({description})"),
            );
        }
        if let Some(binding) = &rules.binding {
            let type_name = item.type_name.or(binding.on.first().map(String::as_str));
            if let Some(t) = type_name
                && binding.accepts(t, item.value) == Some(false)
            {
                self.issue(
                    Severity::Error,
                    ProfileIssueCode::CodeInvalid,
                    None,
                    format!(
                        "no code from the required value set {} (required binding)",
                        binding.value_set
                    ),
                );
            }
        }
        if let Some(targets) = &rules.targets
            && item.type_name.is_none_or(|t| t == "Reference")
            && let Some(reference) = item.value.get("reference").and_then(Value::as_str)
            && let Some(target) = relative_reference_type(self.resource, reference)
            && !targets.iter().any(|t| t == target)
        {
            self.issue(
                Severity::Error,
                ProfileIssueCode::Structure,
                None,
                format!(
                    "reference to a {target}, but this profile allows only {}",
                    targets.join(", ")
                ),
            );
        }
        self.constraints(&rules.constraints, item.value, item.type_name);
        if !node.children.is_empty()
            && let Some(obj) = item.value.as_object()
        {
            self.node(node, obj, depth + 1);
        }
        if item.index.is_some() {
            self.path.pop();
        }
        self.path.pop();
    }

    fn constraints(
        &mut self,
        constraints: &'static [Constraint],
        value: &'v Value,
        type_name: Option<&'v str>,
    ) {
        for c in constraints {
            let Some(check) = c.check else {
                continue;
            };
            let ctx = Ctx {
                value,
                type_name,
                resource: self.resource,
            };
            if !check(&ctx) {
                self.issue(
                    c.severity,
                    ProfileIssueCode::Invariant,
                    None,
                    format!("{} ({}): {}", c.key, c.source, c.human),
                );
            }
        }
    }

    /// One pass over the whole resource for extensions with a US Core url. `host` is the
    /// element path (no indices) of the object being walked, for the context check.
    fn extensions(&mut self, obj: &'v Map<String, Value>, host: &mut Vec<&'v str>, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        for (key, value) in obj {
            let is_extension = key == "extension" || key == "modifierExtension";
            self.path.push(Seg::Key(key));
            match value {
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        self.path.push(Seg::Index(i));
                        if is_extension {
                            self.extension(item, host);
                        }
                        self.descend(key, item, host, depth);
                        self.path.pop();
                    }
                }
                other => self.descend(key, other, host, depth),
            }
            self.path.pop();
        }
    }

    fn descend(&mut self, key: &'v str, value: &'v Value, host: &mut Vec<&'v str>, depth: usize) {
        let Some(obj) = value.as_object() else {
            return;
        };
        // A contained resource or a Bundle entry's resource is a host of its own.
        if let Some(resource_type) = obj.get("resourceType").and_then(Value::as_str) {
            let mut inner = vec![resource_type];
            self.extensions(obj, &mut inner, depth + 1);
            return;
        }
        host.push(key.strip_prefix('_').unwrap_or(key));
        self.extensions(obj, host, depth + 1);
        host.pop();
    }

    fn extension(&mut self, item: &'v Value, host: &[&'v str]) {
        let Some(obj) = item.as_object() else {
            return;
        };
        let Some(url) = obj.get("url").and_then(Value::as_str) else {
            return;
        };
        if !url.starts_with(US_CORE_PREFIX) {
            return;
        }
        let registry = self.registry;
        let Some(def) = registry.extensions.get(url) else {
            self.issue(
                Severity::Error,
                ProfileIssueCode::Structure,
                None,
                format!("unknown US Core extension: US Core {US_CORE_VERSION} defines no extension with this url"),
            );
            return;
        };
        if let Some(contexts) = &def.contexts {
            let here = host.join(".");
            if !contexts.contains(&here) {
                self.issue(
                    Severity::Error,
                    ProfileIssueCode::Structure,
                    None,
                    format!(
                        "extension {} is not allowed on {here} (allowed on: {})",
                        def.name,
                        contexts.join(", ")
                    ),
                );
            }
        }
        self.extension_value(def.value.as_ref(), obj, &def.name);
        let subs = obj.get("extension").and_then(Value::as_array);
        if !def.extensions_allowed && subs.is_some() {
            self.issue(
                Severity::Error,
                ProfileIssueCode::Structure,
                Some("extension"),
                format!("extension {} has no sub-extensions", def.name),
            );
        }
        let subs = subs.map(Vec::as_slice).unwrap_or(&[]);
        for sub in &def.subs {
            let mut count = 0usize;
            for (j, s) in subs.iter().enumerate() {
                let Some(s_obj) = s.as_object() else {
                    continue;
                };
                if s_obj.get("url").and_then(Value::as_str) != Some(sub.url.as_str()) {
                    continue;
                }
                count += 1;
                self.path.push(Seg::Key("extension"));
                self.path.push(Seg::Index(j));
                self.extension_value(sub.value.as_ref(), s_obj, &sub.url);
                self.path.pop();
                self.path.pop();
            }
            if count < sub.min as usize {
                self.issue(
                    Severity::Error,
                    ProfileIssueCode::Required,
                    None,
                    format!(
                        "extension {} requires the sub-extension '{}' (minimum {}, found {count})",
                        def.name, sub.url, sub.min
                    ),
                );
            }
            if let Some(max) = sub.max
                && count > max as usize
            {
                self.issue(
                    Severity::Error,
                    ProfileIssueCode::Structure,
                    None,
                    format!(
                        "extension {} allows the sub-extension '{}' at most {max} time(s) (found {count})",
                        def.name, sub.url
                    ),
                );
            }
        }
    }

    /// The value[x] of an extension (or sub-extension) `name` against `rule` (None: a
    /// complex extension, which has no value).
    fn extension_value(
        &mut self,
        rule: Option<&'static ValueRule>,
        ext: &'v Map<String, Value>,
        name: &str,
    ) {
        let value = ext.iter().find(|(k, v)| {
            !v.is_null()
                && k.strip_prefix("value")
                    .is_some_and(|s| s.starts_with(|c: char| c.is_ascii_uppercase()))
        });
        let Some(rule) = rule else {
            if let Some((key, _)) = value {
                self.issue(
                    Severity::Error,
                    ProfileIssueCode::Structure,
                    Some(key),
                    format!("extension {name} is complex: it has sub-extensions, not a value"),
                );
            }
            return;
        };
        let Some((key, v)) = value else {
            if rule.min > 0 {
                self.issue(
                    Severity::Error,
                    ProfileIssueCode::Required,
                    Some("value[x]"),
                    format!(
                        "extension {name} requires a value ({})",
                        rule.types.join(", ")
                    ),
                );
            }
            return;
        };
        let suffix = key.get(5..).unwrap_or("");
        let Some(type_name) = rule.types.iter().find(|t| upper_first(t) == suffix) else {
            self.issue(
                Severity::Error,
                ProfileIssueCode::Structure,
                Some(key),
                format!(
                    "extension {name} does not allow this value type (allowed: {})",
                    rule.types.join(", ")
                ),
            );
            return;
        };
        if let Some(binding) = &rule.binding
            && binding.accepts(type_name, v) == Some(false)
        {
            self.issue(
                Severity::Error,
                ProfileIssueCode::CodeInvalid,
                Some(key),
                format!(
                    "no code from the required value set {} (required binding)",
                    binding.value_set
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_table_loads_and_has_every_profile() {
        let registry = Registry::global();
        assert_eq!(registry.profiles.len(), known_profiles().count());
        assert!(registry.profiles.len() >= 45, "{}", registry.profiles.len());
        assert!(registry.extensions.len() >= 10);
        // profiles_for stops at the first tier with a match: rules of a type are in tier order.
        for pair in IMPLIED.windows(2) {
            if let [a, b] = pair
                && a.resource_type == b.resource_type
            {
                assert!(
                    a.tier <= b.tier,
                    "IMPLIED out of tier order at {}",
                    b.profile
                );
            }
        }
        for rule in IMPLIED {
            assert!(
                registry.url_of(rule.profile).is_some(),
                "IMPLIED names unknown profile {}",
                rule.profile
            );
        }
    }

    #[test]
    fn every_constraint_in_the_table_has_an_implementation() {
        fn walk(node: &Node, missing: &mut Vec<String>) {
            for e in &node.children {
                let slices = e.slices.iter().map(|s| (&s.rules, &s.node));
                for (rules, child) in std::iter::once((&e.rules, &e.node)).chain(slices) {
                    for c in &rules.constraints {
                        if c.check.is_none() {
                            missing.push(format!("{}#{}", c.source, c.key));
                        }
                    }
                    walk(child, missing);
                }
            }
        }
        let mut missing = Vec::new();
        for p in &Registry::global().profiles {
            for c in &p.constraints {
                if c.check.is_none() {
                    missing.push(format!("{}#{}", c.source, c.key));
                }
            }
            walk(&p.root, &mut missing);
        }
        assert_eq!(missing, Vec::<String>::new());
    }

    #[test]
    fn patterns_are_containment() {
        let p = json!({"coding": [{"system": "s", "code": "c"}]});
        assert!(contains(
            &p,
            &json!({"coding": [{"system": "x", "code": "y"}, {"system": "s", "code": "c", "display": "d"}], "text": "t"})
        ));
        assert!(!contains(
            &p,
            &json!({"coding": [{"system": "s", "code": "d"}]})
        ));
        assert!(!contains(&p, &json!({"text": "t"})));
    }

    #[test]
    fn unknown_profiles_are_errors() {
        let r = json!({"resourceType": "Patient"});
        assert!(validate_profile(&r, "http://example.org/StructureDefinition/x").is_err());
        assert!(validate_profile(&r, &format!("{US_CORE_PREFIX}us-core-patient|3.1.1")).is_err());
        assert!(validate_profile(&r, &format!("{US_CORE_PREFIX}us-core-patient|6.1.0")).is_ok());
    }

    #[test]
    fn implied_profiles() {
        let bp = json!({"resourceType": "Observation",
            "category": [{"coding": [{"system": OBS_CATEGORY, "code": "vital-signs"}]}],
            "code": {"coding": [{"system": LOINC, "code": "85354-9"}]}});
        assert_eq!(
            profiles_for(&bp),
            vec![format!("{US_CORE_PREFIX}us-core-blood-pressure")]
        );
        let lab = json!({"resourceType": "Observation",
            "category": [{"coding": [{"system": OBS_CATEGORY, "code": "laboratory"}]}],
            "code": {"text": "x"}});
        assert_eq!(
            profiles_for(&lab),
            vec![format!("{US_CORE_PREFIX}us-core-observation-lab")]
        );
        let vs = json!({"resourceType": "Observation",
            "category": [{"coding": [{"system": OBS_CATEGORY, "code": "vital-signs"}]}]});
        assert_eq!(
            profiles_for(&vs),
            vec![format!("{US_CORE_PREFIX}us-core-vital-signs")]
        );
        assert_eq!(
            profiles_for(&json!({"resourceType": "Patient"})),
            vec![format!("{US_CORE_PREFIX}us-core-patient")]
        );
        assert!(profiles_for(&json!({"resourceType": "Observation"})).is_empty());
        assert!(profiles_for(&json!({"resourceType": "Device"})).is_empty());
        assert!(profiles_for(&json!({"resourceType": "Basic"})).is_empty());
    }
}
