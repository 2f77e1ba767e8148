//! tapwire-agent: captures every TCP conversation on the node with eBPF (syscall
//! tracepoints and OpenSSL uprobes) and turns it into ordered per-connection streams.
//!
//! Pipeline: `ebpf` (load, attach, TLS libraries) → ring buffer → `events` (decode,
//! clock) → `connections` (table, identity) → `streams` (sequence gaps, lost bytes) →
//! `output` ([`output::StreamSink`]: raw JSON, parsers, exporter). `capture` runs it.

pub mod capture;
pub mod config;
pub mod connections;
pub mod ebpf;
pub mod events;
pub mod export;
pub mod host_setup;
pub mod metrics;
pub mod output;
pub mod pipeline;
pub mod streams;
