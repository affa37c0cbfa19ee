//! The EHR as a data source: its FHIR API and the record sync at launch.

pub mod client;
pub mod sync;
