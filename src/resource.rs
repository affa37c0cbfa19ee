//! The write path every source shares (REST, HL7 v2 mapping, `hearth load`, the generator):
//! check a resource against R4, then stamp it with its id and version and compute its
//! search index rows. No HTTP and no SQL here.

use serde_json::{Map, Value};

use crate::conformance::{
    ProfileIssue, ProfileIssueCode, R4Structure, Severity, StructureIssue, profiles_for,
    validate_profile,
};
use crate::store::{Rendered, ValidationMode, VersionStamp};

/// A resource that passed the structural checks, as its JSON object.
#[derive(Debug, Clone)]
pub struct CheckedResource {
    object: Map<String, Value>,
    /// Profile issues that did not refuse the resource (warnings; errors in `warn` mode).
    warnings: Vec<ProfileIssue>,
}

/// Why a resource was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InvalidResource {
    #[error("{} structural issue(s)", .0.len())]
    Structure(Vec<StructureIssue>),
    /// fhirbolt's strict model refused what the table accepted.
    #[error("not a valid R4 resource: {0}")]
    Model(String),
    /// Profile errors, in a tenant that enforces its profiles.
    #[error("{} profile issue(s)", .0.len())]
    Profile(Vec<ProfileIssue>),
}

/// How a write is checked against profiles (the tenant's setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidationPolicy {
    pub mode: ValidationMode,
    /// Also check the US Core profile implied by type/category when none is declared.
    pub implied: bool,
}

impl ValidationPolicy {
    /// Base R4 structure only.
    pub const OFF: ValidationPolicy = ValidationPolicy {
        mode: ValidationMode::Off,
        implied: false,
    };
}

/// The profiles a resource is checked against: those it declares in `meta.profile`, and
/// the implied US Core ones when asked and it declares none (or when `extra` names some).
pub fn profiles_to_check(value: &Value, implied: bool, extra: &[String]) -> Vec<String> {
    let mut out: Vec<String> = value
        .get("meta")
        .and_then(|m| m.get("profile"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    if implied && out.is_empty() {
        out.extend(profiles_for(value).into_iter().map(str::to_owned));
    }
    for p in extra {
        if !out.contains(p) {
            out.push(p.clone());
        }
    }
    out
}

/// Check `value` against each profile; a declared profile Hearth does not know cannot be
/// verified, which is reported as a warning (never silently passed).
pub fn profile_issues(value: &Value, profiles: &[String]) -> Vec<ProfileIssue> {
    let mut issues = Vec::new();
    let resource_type = value
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("Resource");
    for (i, url) in profiles.iter().enumerate() {
        match validate_profile(value, url) {
            Ok(found) => issues.extend(found),
            Err(unknown) => issues.push(ProfileIssue {
                severity: Severity::Warning,
                code: ProfileIssueCode::Structure,
                expression: format!("{resource_type}.meta.profile[{i}]"),
                message: format!("{unknown}; not checked"),
                profile: url.clone(),
            }),
        }
    }
    issues
}

/// [`check`], then the profiles the policy asks for. Returns the resource and the profile
/// issues found (warnings, and errors when the mode is `warn`); in `enforce` mode any
/// profile error refuses the resource.
pub fn check_with(
    value: Value,
    policy: ValidationPolicy,
) -> Result<CheckedResource, InvalidResource> {
    // Structure first: profile rules assume a structurally valid resource.
    check_structure(&value)?;
    let issues = match policy.mode {
        ValidationMode::Off => Vec::new(),
        ValidationMode::Warn | ValidationMode::Enforce => {
            profile_issues(&value, &profiles_to_check(&value, policy.implied, &[]))
        }
    };
    if policy.mode == ValidationMode::Enforce
        && issues.iter().any(|i| i.severity == Severity::Error)
    {
        return Err(InvalidResource::Profile(issues));
    }
    let mut checked = check_model(value)?;
    checked.warnings = issues;
    Ok(checked)
}

fn check_structure(value: &Value) -> Result<(), InvalidResource> {
    let issues = R4Structure::global().validate_resource(value);
    if issues.is_empty() {
        Ok(())
    } else {
        Err(InvalidResource::Structure(issues))
    }
}

/// Check `value` (an object whose `resourceType` the caller has already checked) against
/// the R4 element table, then fhirbolt's strict model, which catches what a table cannot
/// (e.g. two `value[x]` variants at once).
pub fn check(value: Value) -> Result<CheckedResource, InvalidResource> {
    check_structure(&value)?;
    check_model(value)
}

/// fhirbolt's strict model, on a resource the R4 table has accepted.
fn check_model(value: Value) -> Result<CheckedResource, InvalidResource> {
    hearth_model::check_strict(&value.to_string())
        .map_err(|e| InvalidResource::Model(e.to_string()))?;
    match value {
        Value::Object(object) => Ok(CheckedResource {
            object,
            warnings: Vec::new(),
        }),
        // validate_resource reports a non-object as a structure issue, so this is unreachable
        // in practice; answer it the same way rather than panic.
        _ => Err(InvalidResource::Model(
            "a resource must be a JSON object".into(),
        )),
    }
}

impl CheckedResource {
    pub fn warnings(&self) -> &[ProfileIssue] {
        &self.warnings
    }

    pub fn id(&self) -> Option<&Value> {
        self.object.get("id")
    }

    /// The JSON to store: `resourceType`, `id`, `meta` first (with the server's versionId
    /// and lastUpdated, keeping the sender's profiles, tags and labels), then the rest as
    /// sent; its search index rows and care relationship rows. `local_base` is the tenant's
    /// FHIR base with a `/`.
    pub fn render(mut self, id: &str, stamp: &VersionStamp, local_base: &str) -> Rendered {
        let resource_type = self
            .object
            .shift_remove("resourceType")
            .unwrap_or(Value::Null);
        let type_name = resource_type.as_str().unwrap_or_default().to_owned();
        self.object.shift_remove("id");
        let mut meta = match self.object.shift_remove("meta") {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        meta.shift_remove("versionId");
        meta.shift_remove("lastUpdated");
        let mut stamped = Map::new();
        stamped.insert("versionId".into(), stamp.version_id.to_string().into());
        stamped.insert(
            "lastUpdated".into(),
            stamp
                .last_updated
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                .into(),
        );
        stamped.extend(meta);
        let mut out = Map::with_capacity(self.object.len() + 3);
        out.insert("resourceType".into(), resource_type);
        out.insert("id".into(), id.into());
        out.insert("meta".into(), Value::Object(stamped));
        out.extend(self.object);
        let resource = Value::Object(out);
        let index = crate::search::extract(&type_name, &resource, local_base);
        let relationships = crate::access::relationships::derive(&type_name, &resource);
        Rendered {
            content: resource.to_string(),
            index,
            relationships,
        }
    }
}
