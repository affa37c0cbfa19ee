//! Hearth: a FHIR-native integration server. See ARCHITECTURE.md for the map.

pub mod access;
pub mod app;
pub mod audit;
pub mod auth;
pub mod bench;
pub mod bench_access;
pub mod bench_conformance;
pub mod bench_mllp;
pub mod bench_search;
pub mod cli;
pub mod config;
pub mod conformance;
pub mod demo_ehr;
pub mod ehr;
pub mod fhir;
pub mod hl7v2;
pub mod oauth;
pub mod ops;
pub mod resource;
pub mod search;
pub mod server;
pub mod state;
pub mod store;
pub mod synth;
pub mod telemetry;
pub mod tenant;
