//! Rule sets as data (`profiles/prior-auth/*.json`, shape in its README): the payer's
//! Questionnaire and, per item, the rule that finds its evidence. Loaded once; a rule set
//! that does not parse or whose items and rules disagree fails the unit test, never a
//! request.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;

/// The rule sets Hearth ships, embedded in the binary.
const FILES: &[(&str, &str)] = &[
    (
        "lumbar-spine-mri",
        include_str!("../../../profiles/prior-auth/lumbar-spine-mri.json"),
    ),
    (
        "glp1-type2-diabetes",
        include_str!("../../../profiles/prior-auth/glp1-type2-diabetes.json"),
    ),
    (
        "home-oxygen",
        include_str!("../../../profiles/prior-auth/home-oxygen.json"),
    ),
    (
        "polysomnography",
        include_str!("../../../profiles/prior-auth/polysomnography.json"),
    ),
];

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Code {
    pub system: String,
    pub code: String,
    #[serde(default)]
    pub display: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CodePrefix {
    pub system: String,
    pub prefix: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
pub struct Threshold {
    pub comparator: Comparator,
    pub value: f64,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum Comparator {
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
}

impl Comparator {
    pub fn holds(self, value: f64, limit: f64) -> bool {
        match self {
            Comparator::Lt => value < limit,
            Comparator::Le => value <= limit,
            Comparator::Gt => value > limit,
            Comparator::Ge => value >= limit,
        }
    }
}

/// What evidence an item's rule looks for, and what of it becomes the answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    pub kind: RuleKind,
    pub answer: AnswerKind,
    #[serde(default)]
    pub codes: Vec<Code>,
    #[serde(default)]
    pub code_prefixes: Vec<CodePrefix>,
    #[serde(default)]
    pub within_days: Option<i64>,
    #[serde(default)]
    pub threshold: Option<Threshold>,
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default)]
    pub body_sites: Vec<Code>,
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Free words for readers of the file; not used.
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum RuleKind {
    Condition,
    Observation,
    Medication,
    Procedure,
    Report,
    Note,
    Order,
    Coverage,
}

impl RuleKind {
    /// The resource types the rule reads (what the HPAYMT decision is asked for).
    pub fn resource_types(self) -> &'static [&'static str] {
        match self {
            RuleKind::Condition => &["Condition"],
            RuleKind::Observation => &["Observation"],
            RuleKind::Medication => &["MedicationRequest"],
            RuleKind::Procedure => &["Procedure"],
            RuleKind::Report => &["DiagnosticReport"],
            RuleKind::Note => &["DocumentReference", "DiagnosticReport"],
            RuleKind::Order => &[],
            RuleKind::Coverage => &["Coverage"],
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum AnswerKind {
    Exists,
    Code,
    OnsetWeeks,
    LatestValue,
    LatestDate,
    MeetsThreshold,
    MinValue,
    DurationDays,
    Date,
    Conclusion,
    Excerpt,
    Reason,
    Payer,
    MemberId,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleSet {
    pub id: String,
    pub version: String,
    pub title: String,
    pub basis: String,
    pub order_codes: Vec<Code>,
    pub questionnaire: Value,
    pub evidence: BTreeMap<String, Rule>,
}

/// A Questionnaire item as extraction needs it.
#[derive(Debug, Clone)]
pub struct Item {
    pub link_id: String,
    pub text: String,
    pub item_type: String,
    pub required: bool,
}

impl RuleSet {
    /// The Questionnaire's canonical URL, versioned.
    pub fn canonical(&self) -> String {
        let url = self.questionnaire["url"].as_str().unwrap_or_default();
        format!("{url}|{}", self.version)
    }

    /// The items, in the Questionnaire's order.
    pub fn items(&self) -> Vec<Item> {
        self.questionnaire["item"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| {
                Some(Item {
                    link_id: i["linkId"].as_str()?.to_owned(),
                    text: i["text"].as_str().unwrap_or_default().to_owned(),
                    item_type: i["type"].as_str().unwrap_or("string").to_owned(),
                    required: i["required"].as_bool().unwrap_or(false),
                })
            })
            .collect()
    }

    /// The resource types the rule set reads: its rules' (and the Patient's, always).
    pub fn resource_types(&self) -> Vec<&'static str> {
        let mut types = vec!["Patient"];
        for rule in self.evidence.values() {
            for t in rule.kind.resource_types() {
                if !types.contains(t) {
                    types.push(t);
                }
            }
        }
        types
    }

    fn check(&self) -> Result<(), String> {
        let items = self.items();
        if items.is_empty() {
            return Err(format!("{}: the questionnaire has no items", self.id));
        }
        for item in &items {
            if !self.evidence.contains_key(&item.link_id) {
                return Err(format!("{}: item {} has no rule", self.id, item.link_id));
            }
        }
        for link in self.evidence.keys() {
            if !items.iter().any(|i| &i.link_id == link) {
                return Err(format!("{}: rule {link} has no item", self.id));
            }
        }
        if self.questionnaire["id"].as_str() != Some(self.id.as_str()) {
            return Err(format!("{}: the questionnaire's id differs", self.id));
        }
        Ok(())
    }
}

fn load() -> Result<Vec<RuleSet>, String> {
    FILES
        .iter()
        .map(|(name, text)| {
            let set: RuleSet = serde_json::from_str(text).map_err(|e| format!("{name}: {e}"))?;
            set.check()?;
            Ok(set)
        })
        .collect()
}

/// Every rule set (empty if one is broken: the unit test says which).
pub fn all() -> &'static [RuleSet] {
    static SETS: OnceLock<Vec<RuleSet>> = OnceLock::new();
    SETS.get_or_init(|| load().unwrap_or_default())
}

pub fn by_id(id: &str) -> Option<&'static RuleSet> {
    all().iter().find(|s| s.id == id)
}

/// The rule set for an order with these codings (the first that names one of them).
pub fn for_order_codes(codings: &[Code]) -> Option<&'static RuleSet> {
    all().iter().find(|set| {
        set.order_codes.iter().any(|c| {
            codings
                .iter()
                .any(|o| o.system == c.system && o.code == c.code)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_set_loads_and_items_match_rules() {
        let sets = load().expect("rule sets");
        assert_eq!(sets.len(), FILES.len());
        for set in &sets {
            assert_eq!(by_id(&set.id).map(|s| s.id.as_str()), Some(set.id.as_str()));
            assert!(!set.order_codes.is_empty(), "{}", set.id);
            assert!(for_order_codes(&set.order_codes[..1]).is_some());
        }
    }

    #[test]
    fn a_rule_set_whose_item_lacks_a_rule_is_refused() {
        let mut set = load().expect("rule sets").remove(0);
        let first = set.items()[0].link_id.clone();
        set.evidence.remove(&first);
        assert!(set.check().is_err());
    }
}
