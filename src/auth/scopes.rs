//! SMART scopes: v1 (`patient/Observation.read`), v2 (`system/Patient.rs`) and v2 granular
//! scopes with search criteria (`patient/Observation.rs?category=...|laboratory`).
//! Parsing and comparison only; what a scope lets a caller see is decided in `access`.

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
    pub fn letter(self) -> char {
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

impl ScopeContext {
    pub fn prefix(self) -> &'static str {
        match self {
            ScopeContext::System => "system",
            ScopeContext::User => "user",
            ScopeContext::Patient => "patient",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceScope {
    pub context: ScopeContext,
    /// `None` for `*`.
    pub resource_type: Option<String>,
    /// SMART v2 letters from `cruds` (v1 `read` is `rs`, `write` is `cud`).
    pub interactions: String,
    /// Granular criteria (`?category=...`), decoded; they narrow what the scope grants.
    pub criteria: Vec<(String, String)>,
}

impl ResourceScope {
    /// Parse one clinical scope; `None` for other scopes (`openid`, `launch`, ...) and for
    /// malformed ones.
    pub fn parse(scope: &str) -> Option<ResourceScope> {
        let (context, rest) = scope.split_once('/')?;
        let context = match context {
            "system" => ScopeContext::System,
            "user" => ScopeContext::User,
            "patient" => ScopeContext::Patient,
            _ => return None,
        };
        let (rest, criteria) = match rest.split_once('?') {
            Some((rest, query)) => {
                let criteria: Vec<(String, String)> = serde_urlencoded::from_str(query).ok()?;
                if criteria.is_empty() || criteria.iter().any(|(k, _)| k.is_empty()) {
                    return None;
                }
                (rest, criteria)
            }
            None => (rest, Vec::new()),
        };
        let (resource_type, permissions) = rest.split_once('.')?;
        let interactions = match permissions {
            // v1 permissions cannot carry criteria (granular scopes are v2 only).
            "read" if criteria.is_empty() => "rs".to_owned(),
            "write" if criteria.is_empty() => "cud".to_owned(),
            "*" if criteria.is_empty() => "cruds".to_owned(),
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
            criteria,
        })
    }

    /// Does this scope (criteria aside) grant `interaction` on `resource_type`?
    pub fn grants(&self, resource_type: &str, interaction: Interaction) -> bool {
        self.resource_type
            .as_deref()
            .is_none_or(|t| t == resource_type)
            && self.interactions.contains(interaction.letter())
    }

    /// Is everything `narrower` grants also granted by `self`? Same context, a type `self`
    /// covers, a subset of the letters, and at least `self`'s criteria (more criteria narrow
    /// further).
    pub fn covers(&self, narrower: &ResourceScope) -> bool {
        self.context == narrower.context
            && match (&self.resource_type, &narrower.resource_type) {
                (None, _) => true,
                (Some(a), Some(b)) => a == b,
                (Some(_), None) => false,
            }
            && narrower
                .interactions
                .chars()
                .all(|c| self.interactions.contains(c))
            && self.criteria.iter().all(|c| narrower.criteria.contains(c))
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

    /// The scopes that grant `interaction` on `resource_type` (their context and criteria
    /// still to be applied).
    pub fn granting(
        &self,
        resource_type: &str,
        interaction: Interaction,
    ) -> impl Iterator<Item = &ResourceScope> {
        self.resources
            .iter()
            .filter(move |s| s.grants(resource_type, interaction))
    }

    pub fn contains(&self, scope: &str) -> bool {
        self.raw.iter().any(|s| s == scope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(scopes: &str, t: &str, i: Interaction) -> bool {
        ScopeSet::parse(scopes).granting(t, i).next().is_some()
    }

    #[test]
    fn v1_and_v2_scopes() {
        let s = "openid system/Patient.read system/Observation.cu";
        assert!(grants(s, "Patient", Interaction::Read));
        assert!(grants(s, "Patient", Interaction::Search));
        assert!(!grants(s, "Patient", Interaction::Update));
        assert!(grants(s, "Observation", Interaction::Create));
        assert!(!grants(s, "Observation", Interaction::Read));
        assert!(grants("system/*.cruds", "Encounter", Interaction::Delete));
        assert!(grants("patient/*.read", "Encounter", Interaction::Search));
        assert!(grants(
            "user/Observation.write",
            "Observation",
            Interaction::Delete
        ));
    }

    #[test]
    fn malformed_scopes_grant_nothing() {
        for scope in [
            "system/Patient.sr",
            "system/Patient.x",
            "system/Patient",
            "system/Pat-ient.r",
            "system/Observation.read?category=laboratory",
            "system/Observation.rs?",
            "clinic/Observation.rs",
        ] {
            assert!(ResourceScope::parse(scope).is_none(), "{scope}");
        }
    }

    #[test]
    fn granular_scopes_keep_their_criteria_decoded() {
        let s = ResourceScope::parse(
            "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
        )
        .expect("parses");
        assert_eq!(s.context, ScopeContext::Patient);
        assert_eq!(
            s.criteria,
            vec![(
                "category".to_owned(),
                "http://terminology.hl7.org/CodeSystem/observation-category|laboratory".to_owned()
            )]
        );
        let encoded =
            ResourceScope::parse("patient/Observation.rs?code=http%3A%2F%2Floinc.org%7C1-8")
                .expect("parses");
        assert_eq!(encoded.criteria[0].1, "http://loinc.org|1-8");
    }

    #[test]
    fn covers_is_containment() {
        let p = |s: &str| ResourceScope::parse(s).expect("parses");
        assert!(p("system/*.rs").covers(&p("system/Observation.rs")));
        assert!(p("system/*.read").covers(&p("system/Observation.r")));
        assert!(p("system/Observation.rs").covers(&p("system/Observation.rs?category=x")));
        assert!(!p("system/Observation.rs?category=x").covers(&p("system/Observation.rs")));
        assert!(!p("system/Observation.rs").covers(&p("system/*.rs")));
        assert!(!p("system/*.rs").covers(&p("system/Observation.cruds")));
        assert!(!p("system/*.cruds").covers(&p("patient/Observation.rs")));
    }
}
