//! The write path every source shares (REST, HL7 v2 mapping, `hearth load`, the generator):
//! check a resource against R4, then stamp it with its id and version and compute its
//! search index rows. No HTTP and no SQL here.

use serde_json::{Map, Value};

use crate::conformance::{R4Structure, StructureIssue};
use crate::store::{Rendered, VersionStamp};

/// A resource that passed the structural checks, as its JSON object.
#[derive(Debug, Clone)]
pub struct CheckedResource {
    object: Map<String, Value>,
}

/// Why a resource was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InvalidResource {
    #[error("{} structural issue(s)", .0.len())]
    Structure(Vec<StructureIssue>),
    /// fhirbolt's strict model refused what the table accepted.
    #[error("not a valid R4 resource: {0}")]
    Model(String),
}

/// Check `value` (an object whose `resourceType` the caller has already checked) against
/// the R4 element table, then fhirbolt's strict model, which catches what a table cannot
/// (e.g. two `value[x]` variants at once).
pub fn check(value: Value) -> Result<CheckedResource, InvalidResource> {
    let issues = R4Structure::global().validate_resource(&value);
    if !issues.is_empty() {
        return Err(InvalidResource::Structure(issues));
    }
    hearth_model::check_strict(&value.to_string())
        .map_err(|e| InvalidResource::Model(e.to_string()))?;
    match value {
        Value::Object(object) => Ok(CheckedResource { object }),
        // validate_resource reports a non-object as a structure issue, so this is unreachable
        // in practice; answer it the same way rather than panic.
        _ => Err(InvalidResource::Model(
            "a resource must be a JSON object".into(),
        )),
    }
}

impl CheckedResource {
    pub fn id(&self) -> Option<&Value> {
        self.object.get("id")
    }

    /// The JSON to store: `resourceType`, `id`, `meta` first (with the server's versionId
    /// and lastUpdated, keeping the sender's profiles, tags and labels), then the rest as
    /// sent; and its search index rows. `local_base` is the tenant's FHIR base with a `/`.
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
        Rendered {
            content: resource.to_string(),
            index,
        }
    }
}
