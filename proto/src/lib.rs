//! tapwire's wire types, defined once in `tapwire/v1/*.proto` and shared by the agent,
//! the collector and the CLI.
//!
//! - [`v1::Pair`]: one request/response pair (or RPC), the unit tapwire stores.
//! - [`v1::ingest_server`]/[`v1::ingest_client`]: the agent → collector transport.
//! - [`v1::query_server`]/[`v1::query_client`]: the query API.
//!
//! Every message also implements serde's `Serialize`/`Deserialize` with the proto3 JSON
//! mapping, keyed by the proto field names (snake_case): bytes as base64, timestamps as
//! RFC 3339. That is the format of `tapwire-agent --output jsonl` and `tapwire -o json`.

/// Version 1 of the tapwire API.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("tapwire.v1");
    include!(concat!(env!("OUT_DIR"), "/tapwire.v1.serde.rs"));

    /// The encoded `FileDescriptorSet` of every tapwire proto, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/tapwire_descriptor.bin"));
}

pub use pbjson_types::{Duration, Timestamp};
