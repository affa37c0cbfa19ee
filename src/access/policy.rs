//! The access policy as data: `profiles/access/policy.json`, overridden key by key per
//! tenant (`tenants.access_policy`).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;

/// How a denied read of one resource answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DenyAs {
    /// 403 with an OperationOutcome naming the reason.
    Forbidden,
    /// 404, as if the resource did not exist (existence itself is not revealed).
    NotFound,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BreakGlass {
    /// The token scope that allows asserting emergency access.
    pub scope: String,
    pub minutes: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Purposes {
    pub default: String,
    pub allowed: Vec<String>,
    /// Resource types a purpose may touch; a purpose not listed may touch every type.
    #[serde(default)]
    pub types: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicy {
    pub care_window_hours: u32,
    pub facility_specialties: Vec<String>,
    pub restricted_labels: Vec<String>,
    pub label_grants: BTreeMap<String, Vec<String>>,
    pub client_label_grants: BTreeMap<String, Vec<String>>,
    pub deny_as: DenyAs,
    pub break_glass: BreakGlass,
    pub purposes: Purposes,
}

#[derive(Debug, thiserror::Error)]
#[error("access policy: {0}")]
pub struct PolicyError(String);

fn default_document() -> &'static serde_json::Value {
    static DOC: OnceLock<serde_json::Value> = OnceLock::new();
    DOC.get_or_init(|| {
        serde_json::from_str(include_str!("../../profiles/access/policy.json"))
            .unwrap_or(serde_json::Value::Null)
    })
}

impl AccessPolicy {
    /// The default policy with a tenant's overrides (top-level keys replace the default's).
    pub fn with_overrides(overrides: &serde_json::Value) -> Result<AccessPolicy, PolicyError> {
        let mut doc = default_document().clone();
        if let (Some(doc), Some(over)) = (doc.as_object_mut(), overrides.as_object()) {
            for (k, v) in over {
                doc.insert(k.clone(), v.clone());
            }
        }
        serde_json::from_value(doc).map_err(|e| PolicyError(e.to_string()))
    }

    /// The labels hidden from a subject holding `grants` (labels granted to it).
    pub fn hidden_labels(&self, grants: &[String]) -> Vec<String> {
        self.restricted_labels
            .iter()
            .filter(|l| !grants.contains(l))
            .cloned()
            .collect()
    }

    /// Labels the specialties grant.
    pub fn labels_of_specialties(&self, specialties: &[String]) -> Vec<String> {
        specialties
            .iter()
            .filter_map(|s| self.label_grants.get(s))
            .flatten()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_loads_and_overrides_replace_keys() {
        let p = AccessPolicy::with_overrides(&serde_json::json!({})).expect("default");
        assert_eq!(p.care_window_hours, 72);
        assert_eq!(p.deny_as, DenyAs::Forbidden);
        let p = AccessPolicy::with_overrides(
            &serde_json::json!({"denyAs": "not-found", "careWindowHours": 0}),
        )
        .expect("override");
        assert_eq!(p.deny_as, DenyAs::NotFound);
        assert_eq!(p.care_window_hours, 0);
        assert!(AccessPolicy::with_overrides(&serde_json::json!({"denyAs": "maybe"})).is_err());
    }

    #[test]
    fn psychiatry_sees_psy() {
        let p = AccessPolicy::with_overrides(&serde_json::json!({})).expect("default");
        let granted =
            p.labels_of_specialties(&["http://nucc.org/provider-taxonomy|2084P0800X".into()]);
        let hidden = p.hidden_labels(&granted);
        assert!(!hidden.iter().any(|l| l.ends_with("|PSY")));
        assert!(hidden.iter().any(|l| l.ends_with("|ETH")));
    }
}
