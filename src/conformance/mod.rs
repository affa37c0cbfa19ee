//! Conformance data and checks: what a valid R4 resource looks like.
//!
//! The facts live in `profiles/` as data (see `profiles/r4/README.md`); this module loads
//! them and checks resources against them. It knows JSON, not HTTP or SQL.

mod profile;
mod structure;

pub use profile::{
    ProfileIssue, ProfileIssueCode, Severity, UnknownProfile, known_profiles, profiles_for,
    validate_profile,
};
pub use structure::{IssueClass, R4Structure, StructureIssue};
