//! The access decision, in one place: may this subject do this to this resource type, and
//! which resources of it may they see? Inputs: the token's SMART scopes (letters, `patient/`
//! compartment, granular criteria), the user (a Practitioner sees the patients they have a
//! care relationship with: encounters, care teams, their facility, break-glass), the
//! security labels they may see, and the purpose of use — with the policy as data
//! (`profiles/access/policy.json` + tenant overrides). The answer is a [`Visibility`] that
//! `store` turns into SQL, so searches, reads, includes and history are filtered by the same
//! rows the search index holds — counts and pages never see what the caller may not.

pub mod compartment;
pub mod policy;
pub mod relationships;

use crate::auth::{Interaction, Principal, ResourceScope, ScopeContext};
use crate::search::query::{AccessFilter, CareOf, Clause, PatientSet, Predicate, parse_criteria};
use compartment::Membership;
pub use policy::{AccessPolicy, DenyAs};

/// What of a resource type the caller may see.
#[derive(Debug, Clone, PartialEq)]
pub enum Visibility {
    /// Every resource of the type in the tenant.
    All,
    /// Only resources matching the filter: any of its grants, each a conjunction of a
    /// patient compartment, a care set or Group, hidden labels and granular criteria.
    Filtered(AccessFilter),
}

/// The caller may not do this at all; the text says why (it goes into the 403 and the
/// audit record).
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

/// What the decision knows about the caller, gathered once per request.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    pub principal: &'a Principal,
    pub policy: &'a AccessPolicy,
    /// Specialties (`system|code`) of the user's current PractitionerRoles.
    pub specialties: Vec<String>,
    /// The purpose of use the request asserts (already checked by [`check_purpose`]).
    pub purpose: String,
}

impl Subject<'_> {
    /// The practitioner the user is, if the user is one.
    pub fn practitioner(&self) -> Option<&str> {
        self.principal
            .fhir_user
            .as_deref()
            .and_then(|u| u.strip_prefix("Practitioner/"))
    }

    /// The patient the user is, if the user is one.
    fn patient_user(&self) -> Option<&str> {
        self.principal
            .fhir_user
            .as_deref()
            .and_then(|u| u.strip_prefix("Patient/"))
    }

    /// Labels this subject may not see: a practitioner's specialties grant labels; any other
    /// caller holds what the policy grants every client (`*`) and its own client id.
    fn hidden_labels(&self) -> Vec<String> {
        let grants = if self.practitioner().is_some() {
            self.policy.labels_of_specialties(&self.specialties)
        } else {
            let mut grants = self
                .policy
                .client_label_grants
                .get("*")
                .cloned()
                .unwrap_or_default();
            if let Some(own) = self
                .principal
                .client_id
                .as_ref()
                .and_then(|c| self.policy.client_label_grants.get(c))
            {
                grants.extend(own.iter().cloned());
            }
            grants
        };
        self.policy.hidden_labels(&grants)
    }
}

/// The decision: what of the type the caller may see, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub visibility: Visibility,
    /// Human-readable grounds (scopes, relationships, labels hidden), for the audit record.
    pub reasons: Vec<String>,
}

/// Is the asserted purpose of use allowed to this caller? Emergency treatment (break-glass)
/// needs the policy's break-glass scope.
pub fn check_purpose(
    principal: &Principal,
    policy: &AccessPolicy,
    purpose: &str,
) -> Result<(), Denied> {
    if !policy.purposes.allowed.iter().any(|p| p == purpose) {
        return Err(Denied(format!("purpose of use {purpose} is not accepted")));
    }
    if purpose == "ETREAT" && !principal.scopes.contains(&policy.break_glass.scope) {
        return Err(Denied(format!(
            "purpose of use ETREAT (break-glass) needs the {} grant",
            policy.break_glass.scope
        )));
    }
    Ok(())
}

/// Decide `interaction` on `resource_type` for `subject`. `local_base` is the tenant's
/// FHIR base with a trailing slash (references in criteria are read against it).
pub fn decide(
    subject: &Subject<'_>,
    resource_type: &str,
    interaction: Interaction,
    local_base: &str,
) -> Result<Decision, Denied> {
    if let Some(types) = subject.policy.purposes.types.get(&subject.purpose)
        && !types.iter().any(|t| t == resource_type)
    {
        return Err(Denied(format!(
            "purpose of use {} does not cover {resource_type}",
            subject.purpose
        )));
    }
    let mut grants: Vec<Vec<Clause>> = Vec::new();
    let mut reasons: Vec<String> = Vec::new();
    let mut why_not: Option<String> = None;
    // Labels restrict disclosure: they filter what is read, not what may be written.
    let disclosure = matches!(interaction, Interaction::Read | Interaction::Search);
    for scope in subject
        .principal
        .scopes
        .granting(resource_type, interaction)
    {
        match grant(subject, scope, resource_type, local_base, disclosure) {
            Ok((clauses, why)) => {
                reasons.push(why);
                if clauses.is_empty() {
                    return Ok(Decision {
                        visibility: Visibility::All,
                        reasons,
                    });
                }
                grants.push(clauses);
            }
            Err(reason) => why_not = Some(reason),
        }
    }
    if grants.is_empty() {
        let reason = why_not.unwrap_or_else(|| {
            format!("the token's scopes do not allow {interaction:?} on {resource_type}")
        });
        return Err(Denied(reason));
    }
    Ok(Decision {
        visibility: Visibility::Filtered(AccessFilter { grants }),
        reasons,
    })
}

/// The clauses one scope confines `resource_type` to (empty: the whole type) with the
/// grounds, or why the scope grants nothing here.
fn grant(
    subject: &Subject<'_>,
    scope: &ResourceScope,
    resource_type: &str,
    local_base: &str,
    disclosure: bool,
) -> Result<(Vec<Clause>, String), String> {
    let principal = subject.principal;
    let mut clauses = Vec::new();
    let mut why = format!("scope {}/", scope.context.prefix());
    let confine_to = match scope.context {
        ScopeContext::Patient => Some(patient_in_context(principal).ok_or_else(|| {
            "patient/ scopes need a patient in the token's launch context".to_owned()
        })?),
        ScopeContext::User if subject.practitioner().is_some() => None,
        ScopeContext::User => Some(subject.patient_user().ok_or_else(|| {
            "user/ scopes need a fhirUser naming a Practitioner or Patient".to_owned()
        })?),
        ScopeContext::System => None,
    };
    if let Some(patient) = confine_to
        && let Some(clause) = compartment_clause(resource_type, patient, local_base)?
    {
        clauses.push(clause);
        why.push_str(&format!("; compartment of Patient/{patient}"));
    }
    // A practitioner sees patients they have a care relationship with, whatever the scope
    // context (an EHR launch gives clinicians patient/ scopes too).
    if scope.context != ScopeContext::System
        && let Some(practitioner) = subject.practitioner()
        && let Some(clause) = patients_clause(
            resource_type,
            PatientSet::CareOf(CareOf {
                practitioner: practitioner.to_owned(),
                window_secs: i64::from(subject.policy.care_window_hours) * 3600,
                facility_specialties: subject.policy.facility_specialties.clone(),
            }),
        )?
    {
        clauses.push(clause);
        why.push_str(&format!(
            "; care relationships of Practitioner/{practitioner}"
        ));
    }
    // A Backend Services client registered for a Group sees its members' records only.
    if scope.context == ScopeContext::System
        && let Some(group) = &principal.patient_group
        && let Some(clause) =
            patients_clause(resource_type, PatientSet::GroupMembers(group.clone()))?
    {
        clauses.push(clause);
        why.push_str(&format!("; members of Group/{group}"));
    }
    // Labelled data needs an explicit grant, except in a patient's own record.
    let own_record = subject.practitioner().is_none() && confine_to.is_some();
    if disclosure && !own_record {
        let hidden = subject.hidden_labels();
        if !hidden.is_empty() {
            clauses.push(label_clause(&hidden));
            why.push_str(&format!("; hidden labels {}", short_codes(&hidden)));
        }
    }
    if !scope.criteria.is_empty() {
        let criteria = parse_criteria(resource_type, &scope.criteria, local_base).map_err(|e| {
            format!("the token's granular scope cannot be applied to {resource_type}: {e}")
        })?;
        clauses.extend(criteria);
        why.push_str("; granular criteria");
    }
    Ok((clauses, why))
}

fn short_codes(labels: &[String]) -> String {
    labels
        .iter()
        .map(|l| l.rsplit('|').next().unwrap_or(l))
        .collect::<Vec<_>>()
        .join(",")
}

/// The compartment parameters of a type that Hearth indexes, and whether the type is
/// Patient itself; `None` for types outside the compartment; an error when none is indexed
/// (membership cannot be checked, so nothing of the type is granted).
fn indexed_compartment(resource_type: &str) -> Result<Option<(Vec<String>, bool)>, String> {
    let registry = crate::search::SearchRegistry::global();
    let (params, patient_itself) = match compartment::membership_of(resource_type) {
        Membership::Outside => return Ok(None),
        Membership::PatientItself(params) => (params, true),
        Membership::Through(params) => (params, false),
    };
    let params: Vec<String> = params
        .iter()
        .filter(|p| registry.param(resource_type, p).is_some())
        .cloned()
        .collect();
    if params.is_empty() && !patient_itself {
        return Err(format!(
            "{resource_type} cannot be confined to a patient compartment on this server"
        ));
    }
    Ok(Some((params, patient_itself)))
}

/// The resource belongs to a patient of `patients` (`None`: the type holds no patient data).
pub fn patients_clause(
    resource_type: &str,
    patients: PatientSet,
) -> Result<Option<Clause>, String> {
    let Some((params, patient_itself)) = indexed_compartment(resource_type)? else {
        return Ok(None);
    };
    Ok(Some(Clause {
        any_of: vec![Predicate::InPatients {
            params,
            patient_itself,
            patients,
        }],
        negated: false,
    }))
}

/// NOT (any hidden label in `meta.security`), as one index probe.
fn label_clause(hidden: &[String]) -> Clause {
    let pairs = hidden
        .iter()
        .map(|label| {
            let (system, code) = label.split_once('|').unwrap_or(("", label));
            (system.to_owned(), code.to_owned())
        })
        .collect();
    Clause {
        any_of: vec![Predicate::TokenIn {
            param: "_security".to_owned(),
            pairs,
        }],
        negated: true,
    }
}

/// One clause: the resource is in `patient`'s compartment (any membership parameter points
/// at the patient; for Patient, it is the patient). `None` for types outside the
/// compartment, which hold no patient data.
pub fn compartment_clause(
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
/// compartment or a practitioner's care set? Then the search is bounded without a
/// `patient` parameter.
pub fn confined_to_patient(
    principal: &Principal,
    resource_type: &str,
    interaction: Interaction,
) -> bool {
    let mut granting = principal
        .scopes
        .granting(resource_type, interaction)
        .peekable();
    let practitioner_user = principal
        .fhir_user
        .as_deref()
        .is_some_and(|u| u.starts_with("Practitioner/"));
    granting.peek().is_some()
        && granting.all(|s| match s.context {
            ScopeContext::Patient => patient_in_context(principal).is_some(),
            ScopeContext::User => practitioner_user,
            ScopeContext::System => false,
        })
        && compartment::membership_of(resource_type) != Membership::Outside
}

/// The Patient-compartment parameters of a type, and whether it is Patient itself (no
/// parameters: the type holds no patient data).
pub fn compartment_params(resource_type: &str) -> (&'static [String], bool) {
    match compartment::membership_of(resource_type) {
        Membership::Outside => (&[], false),
        Membership::PatientItself(params) => (params, true),
        Membership::Through(params) => (params, false),
    }
}

/// The patients (ids) whose compartment `resource` is in — for the audit record of a read.
pub fn patients_of(
    resource_type: &str,
    resource: &serde_json::Value,
    local_base: &str,
) -> Vec<String> {
    let (params, itself) = compartment_params(resource_type);
    if params.is_empty() && !itself {
        return Vec::new();
    }
    let mut patients: Vec<String> =
        crate::search::extract_params(resource_type, resource, local_base, Some(params))
            .into_iter()
            .filter_map(|e| match e.value {
                crate::search::IndexValue::Reference(r)
                    if r.target_type.as_deref() == Some("Patient") =>
                {
                    r.target_id
                }
                _ => None,
            })
            .collect();
    if itself && let Some(id) = resource.get("id").and_then(|v| v.as_str()) {
        patients.push(id.to_owned());
    }
    patients.sort();
    patients.dedup();
    patients
}

/// An owned copy of what [`decide`] needs, for checks made later in the request (the
/// write guard runs inside the transaction, just before commit).
#[derive(Debug, Clone)]
pub struct OwnedSubject {
    pub principal: Principal,
    pub policy: std::sync::Arc<AccessPolicy>,
    pub specialties: Vec<String>,
    pub purpose: String,
    pub local_base: String,
}

impl OwnedSubject {
    pub fn decide(
        &self,
        resource_type: &str,
        interaction: Interaction,
    ) -> Result<Decision, Denied> {
        let subject = Subject {
            principal: &self.principal,
            policy: &self.policy,
            specialties: self.specialties.clone(),
            purpose: self.purpose.clone(),
        };
        decide(&subject, resource_type, interaction, &self.local_base)
    }
}

/// The filter a search runs with. A search pinned to patients all in the caller's care set
/// needs no per-row care check: one lookup replaces it (labels and criteria stay in the SQL).
pub async fn search_filter(
    store: &crate::store::Store,
    tenant: &crate::tenant::TenantId,
    query: &crate::search::query::SearchQuery,
    filter: AccessFilter,
) -> Result<AccessFilter, crate::store::StoreError> {
    if let (Some(care), Some(pinned)) = (
        care_of(&filter),
        pinned_patients(&query.resource_type, &query.clauses),
    ) {
        let permitted = store.patients_in_care(tenant, care, &pinned).await?;
        if pinned.iter().all(|p| permitted.contains(p)) {
            return Ok(without_care(&filter));
        }
    }
    Ok(filter)
}

/// The patients a search is pinned to: one of its clauses requires a compartment-linking
/// reference (`patient`, or a compartment parameter typed Patient; `_id` for Patient) to one
/// of these ids, so every match is in one of their compartments.
pub fn pinned_patients(resource_type: &str, clauses: &[Clause]) -> Option<Vec<String>> {
    let params: &[String] = match compartment::membership_of(resource_type) {
        Membership::Outside => return None,
        Membership::PatientItself(p) | Membership::Through(p) => p,
    };
    clauses.iter().filter(|c| !c.negated).find_map(|clause| {
        let ids: Option<Vec<String>> = clause
            .any_of
            .iter()
            .map(|p| match p {
                Predicate::Id(id) if resource_type == "Patient" => Some(id.clone()),
                Predicate::Reference {
                    param,
                    types,
                    id: Some(id),
                    url: None,
                } if (param == "patient" && (types.is_empty() || types == &["Patient"]))
                    || (params.contains(param) && types == &["Patient"]) =>
                {
                    Some(id.clone())
                }
                _ => None,
            })
            .collect();
        ids.filter(|ids| !ids.is_empty())
    })
}

/// The care relationship a filter's grants require, if any (one practitioner per caller).
pub fn care_of(filter: &AccessFilter) -> Option<&CareOf> {
    filter
        .grants
        .iter()
        .flatten()
        .find_map(|c| match c.any_of.as_slice() {
            [
                Predicate::InPatients {
                    patients: PatientSet::CareOf(care),
                    ..
                },
            ] => Some(care),
            _ => None,
        })
}

/// `filter` without its care-relationship clauses — valid when the search is pinned to
/// patients all of whom are in the care set (checked by the caller).
pub fn without_care(filter: &AccessFilter) -> AccessFilter {
    AccessFilter {
        grants: filter
            .grants
            .iter()
            .map(|grant| {
                grant
                    .iter()
                    .filter(|c| {
                        !matches!(
                            c.any_of.as_slice(),
                            [Predicate::InPatients {
                                patients: PatientSet::CareOf(_),
                                ..
                            }]
                        )
                    })
                    .cloned()
                    .collect()
            })
            .collect(),
    }
}
