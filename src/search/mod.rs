//! FHIR search: the parameter registry (data in `profiles/search/`), a FHIRPath subset,
//! index extraction at write time, and parsing of search requests into a typed query.
//! Knows FHIR and JSON; not HTTP, not SQL (`store` turns a [`query::SearchQuery`] into SQL).

pub mod extract;
pub mod fhirpath;
pub mod query;
pub mod registry;
pub mod values;

pub use extract::{IndexEntry, IndexValue, extract, extract_params};
pub use registry::{ParamType, SearchParam, SearchRegistry};
