//! Ingest: the `Ingest` gRPC service agents push batches to, and the pipeline that makes a
//! batch durable (payload segments first, then index rows and rollups) before its ack.

pub mod peers;
pub mod pipeline;
pub mod service;

pub use pipeline::{BatchOutcome, BatchWriter, WriteError};
pub use service::IngestService;
