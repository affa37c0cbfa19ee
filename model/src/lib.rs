//! Hearth's only door to fhirbolt.
//!
//! fhirbolt's serde code is generic and is monomorphised in whichever crate calls it; behind
//! these non-generic functions it is compiled once, here, and the server crate rebuilds fast.
//! Keep this API small and free of fhirbolt types.

use fhirbolt::model::r4::Resource;
use fhirbolt::serde::{DeserializationConfig, DeserializationMode};

/// Why fhirbolt's strict R4 model rejected a document. The message comes from the
/// deserializer (e.g. "unknown field `foo`, expected one of ..."); it names fields, never values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrictParseError {
    pub message: String,
}

impl std::fmt::Display for StrictParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StrictParseError {}

/// Check `json` against fhirbolt's strict R4 model: unknown elements, wrong JSON kinds and
/// repeated `value[x]` are errors. Deserialises into the `Resource` enum, not a concrete type:
/// fhirbolt 0.4 fails on concrete types whose `contained` mixes resource types.
pub fn check_strict(json: &str) -> Result<(), StrictParseError> {
    let config = DeserializationConfig {
        mode: DeserializationMode::Strict,
    };
    fhirbolt::json::from_str::<Resource>(json, Some(config))
        .map(drop)
        .map_err(|e| StrictParseError {
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_mode_rejects_unknown_elements() {
        let err = check_strict(r#"{"resourceType":"Patient","foo":1}"#).err();
        assert!(err.is_some_and(|e| e.message.contains("foo")));
    }

    #[test]
    fn accepts_a_patient() {
        let r = check_strict(r#"{"resourceType":"Patient","gender":"female"}"#);
        assert!(r.is_ok());
    }
}
