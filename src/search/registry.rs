//! The search parameters Hearth indexes and answers, loaded from
//! `profiles/search/parameters.json` (base R4 + US Core 6.1.0, see its README).

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use serde::Deserialize;

use super::fhirpath::{self, Expr};

const PARAMETERS_JSON: &str = include_str!("../../profiles/search/parameters.json");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamType {
    Number,
    Date,
    String,
    Token,
    Reference,
    Composite,
    Quantity,
    Uri,
    Special,
}

impl ParamType {
    fn parse(s: &str) -> Option<ParamType> {
        Some(match s {
            "number" => ParamType::Number,
            "date" => ParamType::Date,
            "string" => ParamType::String,
            "token" => ParamType::Token,
            "reference" => ParamType::Reference,
            "composite" => ParamType::Composite,
            "quantity" => ParamType::Quantity,
            "uri" => ParamType::Uri,
            "special" => ParamType::Special,
            _ => return None,
        })
    }

    pub fn code(self) -> &'static str {
        match self {
            ParamType::Number => "number",
            ParamType::Date => "date",
            ParamType::String => "string",
            ParamType::Token => "token",
            ParamType::Reference => "reference",
            ParamType::Composite => "composite",
            ParamType::Quantity => "quantity",
            ParamType::Uri => "uri",
            ParamType::Special => "special",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Component {
    pub code: String,
    pub param_type: ParamType,
    pub expression: Expr,
}

#[derive(Debug, Clone)]
pub struct SearchParam {
    pub resource_type: String,
    pub code: String,
    pub param_type: ParamType,
    pub url: String,
    /// The FHIRPath source, for the CapabilityStatement and error messages.
    pub expression_text: String,
    pub expression: Expr,
    pub targets: Vec<String>,
    pub components: Vec<Component>,
}

#[derive(Deserialize)]
struct RawFile {
    parameters: Vec<RawParam>,
    #[serde(rename = "usCore")]
    us_core: BTreeMap<String, RawUsCore>,
}

#[derive(Deserialize)]
struct RawParam {
    resource: String,
    code: String,
    #[serde(rename = "type")]
    param_type: String,
    expression: String,
    url: String,
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    components: Vec<RawComponent>,
}

#[derive(Deserialize)]
struct RawComponent {
    code: String,
    expression: String,
}

#[derive(Deserialize, Default, Clone)]
pub struct RawUsCore {
    #[serde(default)]
    pub shall: Vec<Vec<String>>,
    #[serde(default)]
    pub should: Vec<Vec<String>>,
    #[serde(default)]
    pub revinclude: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub include: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("parameters.json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{resource}.{code}: {error}")]
    Expression {
        resource: String,
        code: String,
        error: fhirpath::ParseError,
    },
    #[error("{0}: unknown parameter type or component")]
    Definition(String),
}

pub struct SearchRegistry {
    by_type: HashMap<String, BTreeMap<String, SearchParam>>,
    us_core: BTreeMap<String, RawUsCore>,
}

impl SearchRegistry {
    pub fn global() -> &'static SearchRegistry {
        static REGISTRY: OnceLock<SearchRegistry> = OnceLock::new();
        REGISTRY.get_or_init(|| {
            // Compiled into the binary and checked by this module's tests: a failure is a
            // build defect, not bad input.
            SearchRegistry::from_json(PARAMETERS_JSON)
                .expect("profiles/search/parameters.json is valid")
        })
    }

    pub fn from_json(text: &str) -> Result<SearchRegistry, RegistryError> {
        let raw: RawFile = serde_json::from_str(text)?;
        let types: HashMap<(String, String), ParamType> = raw
            .parameters
            .iter()
            .filter_map(|p| {
                Some((
                    (p.resource.clone(), p.code.clone()),
                    ParamType::parse(&p.param_type)?,
                ))
            })
            .collect();
        let mut by_type: HashMap<String, BTreeMap<String, SearchParam>> = HashMap::new();
        for p in raw.parameters {
            let param_type = ParamType::parse(&p.param_type)
                .ok_or_else(|| RegistryError::Definition(p.code.clone()))?;
            let parse = |e: &str| {
                fhirpath::parse(e).map_err(|error| RegistryError::Expression {
                    resource: p.resource.clone(),
                    code: p.code.clone(),
                    error,
                })
            };
            let expression = parse(&p.expression)?;
            let mut components = Vec::new();
            for c in &p.components {
                let component_type = types
                    .get(&(p.resource.clone(), c.code.clone()))
                    .copied()
                    .ok_or_else(|| {
                        RegistryError::Definition(format!("{}.{}", p.resource, c.code))
                    })?;
                components.push(Component {
                    code: c.code.clone(),
                    param_type: component_type,
                    expression: parse(&c.expression)?,
                });
            }
            by_type.entry(p.resource.clone()).or_default().insert(
                p.code.clone(),
                SearchParam {
                    resource_type: p.resource,
                    code: p.code,
                    param_type,
                    url: p.url,
                    expression_text: p.expression,
                    expression,
                    targets: p.targets,
                    components,
                },
            );
        }
        Ok(SearchRegistry {
            by_type,
            us_core: raw.us_core,
        })
    }

    pub fn param(&self, resource_type: &str, code: &str) -> Option<&SearchParam> {
        self.by_type.get(resource_type)?.get(code)
    }

    /// Every parameter of a type, by code.
    pub fn params(&self, resource_type: &str) -> impl Iterator<Item = &SearchParam> {
        self.by_type
            .get(resource_type)
            .into_iter()
            .flat_map(|m| m.values())
    }

    pub fn has_type(&self, resource_type: &str) -> bool {
        self.by_type.contains_key(resource_type)
    }

    pub fn searchable_types(&self) -> impl Iterator<Item = &str> {
        self.by_type.keys().map(String::as_str)
    }

    /// US Core's expectations for a type (SHALL/SHOULD combinations, includes).
    pub fn us_core(&self, resource_type: &str) -> Option<&RawUsCore> {
        self.us_core.get(resource_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_loads_with_us_core_parameters() {
        let r = SearchRegistry::global();
        let p = r
            .param("Observation", "patient")
            .expect("Observation.patient");
        assert_eq!(p.param_type, ParamType::Reference);
        assert_eq!(p.targets, vec!["Patient"]);
        let race = r.param("Patient", "race").expect("US Core race");
        assert_eq!(race.param_type, ParamType::Token);
        let cvq = r
            .param("Observation", "code-value-quantity")
            .expect("composite");
        assert_eq!(cvq.components.len(), 2);
        assert_eq!(cvq.components[1].param_type, ParamType::Quantity);
        assert!(r.us_core("Observation").is_some_and(|u| {
            u.shall
                .contains(&vec!["category".to_owned(), "patient".to_owned()])
        }));
    }
}
