//! HL7 v2 over MLLP: parsing messages into owned, decoded segments (see `message` for what
//! comes from hl7-parser and what is ours), escapes, character sets and timestamps; feeds;
//! mapping to US Core (`map`); acknowledgements; the durable ingestion pipeline; the MLLP
//! listeners of `hearth serve`.

pub mod ack;
pub mod charset;
pub mod escape;
pub mod feed;
pub mod ingest;
pub mod map;
pub mod message;
pub mod service;
pub mod timestamp;

pub use charset::{Charset, decode_bytes, encode_bytes};
pub use escape::{decode_escapes, encode_text};
pub use message::{Component, Encoding, Field, Hl7Error, Message, Presence, Repetition, Segment};
pub use timestamp::{Hl7Timestamp, parse_timestamp};
