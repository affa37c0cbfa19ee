//! The R4 Patient compartment (`profiles/compartments/patient.json`): which search
//! parameters make a resource of each type part of a patient's record.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Deserialize;

#[derive(Deserialize)]
struct CompartmentFile {
    resources: HashMap<String, Vec<String>>,
}

fn membership() -> &'static HashMap<String, Vec<String>> {
    static DATA: OnceLock<HashMap<String, Vec<String>>> = OnceLock::new();
    DATA.get_or_init(|| {
        let file: CompartmentFile =
            serde_json::from_str(include_str!("../../profiles/compartments/patient.json"))
                .unwrap_or(CompartmentFile {
                    resources: HashMap::new(),
                });
        file.resources
    })
}

/// How a resource type relates to the Patient compartment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership<'a> {
    /// Not patient data (Practitioner, Organization, Location, Medication, ...).
    Outside,
    /// Patient itself: the patient's own resource (and those it links to).
    PatientItself(&'a [String]),
    /// Member when one of these reference parameters points at the patient.
    Through(&'a [String]),
}

pub fn membership_of(resource_type: &str) -> Membership<'static> {
    match membership().get(resource_type) {
        None => Membership::Outside,
        Some(params) if resource_type == "Patient" => Membership::PatientItself(params),
        Some(params) => Membership::Through(params),
    }
}

/// Every type of the Patient compartment, sorted by name (Patient included).
pub fn compartment_types() -> Vec<&'static str> {
    let mut types: Vec<&'static str> = membership().keys().map(String::as_str).collect();
    types.sort_unstable();
    types
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r4_patient_compartment_is_loaded() {
        assert_eq!(membership().len(), 66);
        assert_eq!(
            membership_of("Observation"),
            Membership::Through(&["subject".to_owned(), "performer".to_owned()])
        );
        assert_eq!(membership_of("Practitioner"), Membership::Outside);
        assert!(matches!(
            membership_of("Patient"),
            Membership::PatientItself(_)
        ));
    }
}
