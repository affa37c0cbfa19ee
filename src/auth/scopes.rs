//! SMART scopes, v1 (`system/Patient.read`) and v2 (`system/Patient.rs`).

/// What a request does to a resource type, in SMART v2 letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interaction {
    Create,
    Read,
    Update,
    Delete,
    Search,
}

impl Interaction {
    fn letter(self) -> char {
        match self {
            Interaction::Create => 'c',
            Interaction::Read => 'r',
            Interaction::Update => 'u',
            Interaction::Delete => 'd',
            Interaction::Search => 's',
        }
    }
}

/// Whose data a scope is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeContext {
    /// Backend services: the whole tenant.
    System,
    /// What the user may see (decided by ABAC).
    User,
    /// One patient's compartment.
    Patient,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceScope {
    pub context: ScopeContext,
    /// `None` for `*`.
    pub resource_type: Option<String>,
    /// SMART v2 letters from `cruds`.
    pub interactions: String,
}

impl ResourceScope {
    /// Parse one clinical scope; `None` for other scopes (`openid`, `launch`, ...).
    pub fn parse(scope: &str) -> Option<ResourceScope> {
        let (context, rest) = scope.split_once('/')?;
        let context = match context {
            "system" => ScopeContext::System,
            "user" => ScopeContext::User,
            "patient" => ScopeContext::Patient,
            _ => return None,
        };
        // v2 scopes may carry a query (`?category=...`); parameters narrow, never widen, so
        // until Hearth evaluates them such a scope grants nothing.
        if rest.contains('?') {
            return None;
        }
        let (resource_type, permissions) = rest.split_once('.')?;
        let interactions = match permissions {
            "read" => "rs".to_owned(),
            "write" => "cud".to_owned(),
            "*" => "cruds".to_owned(),
            v2 if !v2.is_empty()
                && v2.chars().all(|c| "cruds".contains(c))
                && is_in_cruds_order(v2) =>
            {
                v2.to_owned()
            }
            _ => return None,
        };
        let resource_type = match resource_type {
            "*" => None,
            t if !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric()) => {
                Some(t.to_owned())
            }
            _ => return None,
        };
        Some(ResourceScope {
            context,
            resource_type,
            interactions,
        })
    }

    fn grants(&self, resource_type: &str, interaction: Interaction) -> bool {
        self.resource_type
            .as_deref()
            .is_none_or(|t| t == resource_type)
            && self.interactions.contains(interaction.letter())
    }
}

/// v2 permissions are written in `cruds` order; anything else is malformed.
fn is_in_cruds_order(letters: &str) -> bool {
    let mut last = None;
    for c in letters.chars() {
        let pos = "cruds".find(c);
        if pos <= last {
            return false;
        }
        last = pos;
    }
    true
}

/// The scopes of one token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeSet {
    pub raw: Vec<String>,
    pub resources: Vec<ResourceScope>,
}

impl ScopeSet {
    pub fn parse(scope: &str) -> ScopeSet {
        let raw: Vec<String> = scope.split_whitespace().map(str::to_owned).collect();
        let resources = raw.iter().filter_map(|s| ResourceScope::parse(s)).collect();
        ScopeSet { raw, resources }
    }

    /// Does a `system/` or `user/` scope grant `interaction` on `resource_type`?
    /// `patient/` scopes need the patient compartment check of the ABAC decision, which is
    /// not in place yet, so for now they grant nothing.
    pub fn permits(&self, resource_type: &str, interaction: Interaction) -> bool {
        self.resources.iter().any(|s| {
            matches!(s.context, ScopeContext::System | ScopeContext::User)
                && s.grants(resource_type, interaction)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_scopes() {
        let s = ScopeSet::parse("openid system/Patient.read system/Observation.cu");
        assert!(s.permits("Patient", Interaction::Read));
        assert!(s.permits("Patient", Interaction::Search));
        assert!(!s.permits("Patient", Interaction::Update));
        assert!(s.permits("Observation", Interaction::Create));
        assert!(!s.permits("Observation", Interaction::Read));
        let all = ScopeSet::parse("system/*.cruds");
        assert!(all.permits("Encounter", Interaction::Delete));
    }

    #[test]
    fn malformed_and_patient_scopes_grant_nothing() {
        for scope in [
            "system/Patient.sr",
            "system/Patient.x",
            "system/Patient",
            "system/Pat-ient.r",
            "patient/Patient.rs",
            "system/Observation.rs?category=laboratory",
        ] {
            let s = ScopeSet::parse(scope);
            assert!(!s.permits("Patient", Interaction::Read), "{scope}");
            assert!(!s.permits("Observation", Interaction::Read), "{scope}");
        }
    }
}
