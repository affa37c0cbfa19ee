//! The access decision: may this caller do this to this resource type, and which resources
//! of it may they see? Today the decision comes from the token's SMART scopes: the
//! interaction letters, `patient/` confinement to the patient compartment, and v2 granular
//! criteria. The answer is a [`Visibility`] that `store` turns into SQL, so searches, reads,
//! includes and history are filtered by the same rows the search index holds.

pub mod compartment;

use crate::auth::{Interaction, Principal, ResourceScope, ScopeContext};
use crate::search::query::{AccessFilter, Clause, parse_criteria};
use compartment::Membership;

/// What of a resource type the caller may see.
#[derive(Debug, Clone, PartialEq)]
pub enum Visibility {
    /// Every resource of the type in the tenant.
    All,
    /// Only resources matching the filter (a compartment, granular criteria, or both).
    Filtered(AccessFilter),
}

/// The caller may not do this at all; the text says why (it goes into the 403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

/// The patient `patient/` scopes are confined to: the token's launch context, or the user
/// when the user is a patient.
pub fn patient_in_context(principal: &Principal) -> Option<&str> {
    principal.patient.as_deref().or_else(|| {
        principal
            .fhir_user
            .as_deref()
            .and_then(|u| u.strip_prefix("Patient/"))
    })
}

/// Decide `interaction` on `resource_type` for `principal`. `local_base` is the tenant's
/// FHIR base with a trailing slash (references in criteria are read against it).
pub fn decide(
    principal: &Principal,
    resource_type: &str,
    interaction: Interaction,
    local_base: &str,
) -> Result<Visibility, Denied> {
    let mut grants: Vec<Vec<Clause>> = Vec::new();
    let mut why_not: Option<String> = None;
    for scope in principal.scopes.granting(resource_type, interaction) {
        match grant(principal, scope, resource_type, local_base) {
            Ok(clauses) if clauses.is_empty() => return Ok(Visibility::All),
            Ok(clauses) => grants.push(clauses),
            Err(reason) => why_not = Some(reason),
        }
    }
    if grants.is_empty() {
        let reason = why_not.unwrap_or_else(|| {
            format!("the token's scopes do not allow {interaction:?} on {resource_type}")
        });
        return Err(Denied(reason));
    }
    Ok(Visibility::Filtered(AccessFilter { grants }))
}

/// The clauses one scope confines `resource_type` to (empty: the whole type), or why the
/// scope grants nothing here.
fn grant(
    principal: &Principal,
    scope: &ResourceScope,
    resource_type: &str,
    local_base: &str,
) -> Result<Vec<Clause>, String> {
    let mut clauses = Vec::new();
    if scope.context == ScopeContext::Patient {
        let patient = patient_in_context(principal).ok_or_else(|| {
            "patient/ scopes need a patient in the token's launch context".to_owned()
        })?;
        if let Some(clause) = compartment_clause(resource_type, patient, local_base)? {
            clauses.push(clause);
        }
    }
    if !scope.criteria.is_empty() {
        let criteria = parse_criteria(resource_type, &scope.criteria, local_base).map_err(|e| {
            format!("the token's granular scope cannot be applied to {resource_type}: {e}")
        })?;
        clauses.extend(criteria);
    }
    Ok(clauses)
}

/// One clause: the resource is in `patient`'s compartment (any membership parameter points
/// at the patient; for Patient, it is the patient). `None` for types outside the
/// compartment, which hold no patient data.
fn compartment_clause(
    resource_type: &str,
    patient: &str,
    local_base: &str,
) -> Result<Option<Clause>, String> {
    let reference = format!("Patient/{patient}");
    let (mut criteria, params) = match compartment::membership_of(resource_type) {
        Membership::Outside => return Ok(None),
        Membership::PatientItself(params) => (vec![("_id".to_owned(), patient.to_owned())], params),
        Membership::Through(params) => (Vec::new(), params),
    };
    criteria.extend(params.iter().map(|p| (p.clone(), reference.clone())));
    let mut any_of = Vec::new();
    for (param, value) in criteria {
        // A membership parameter Hearth does not index cannot be checked; it is left out,
        // and a type with none left is not readable under patient/ scopes.
        if let Ok(parsed) = parse_criteria(resource_type, &[(param, value)], local_base) {
            any_of.extend(parsed.into_iter().flat_map(|c| c.any_of));
        }
    }
    if any_of.is_empty() {
        return Err(format!(
            "{resource_type} cannot be confined to a patient compartment on this server"
        ));
    }
    Ok(Some(Clause {
        any_of,
        negated: false,
    }))
}

/// Is every search of `resource_type` this caller may make confined to one patient's
/// compartment? Then the search is bounded without a `patient` parameter.
pub fn confined_to_patient(
    principal: &Principal,
    resource_type: &str,
    interaction: Interaction,
) -> bool {
    let mut granting = principal
        .scopes
        .granting(resource_type, interaction)
        .peekable();
    granting.peek().is_some()
        && granting.all(|s| s.context == ScopeContext::Patient)
        && patient_in_context(principal).is_some()
        && compartment::membership_of(resource_type) != Membership::Outside
}
