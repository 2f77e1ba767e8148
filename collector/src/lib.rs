//! tapwire-collector: receives pairs from agents over gRPC (`ingest`), indexes them in
//! PostgreSQL/TimescaleDB and keeps their payloads in an object store (`storage`), runs a
//! local PostgreSQL when no database is given (`postgres`), and serves the query API.

pub mod app;
pub mod auth;
pub mod config;
pub mod ingest;
pub mod metrics;
pub mod postgres;
pub mod query;
pub mod server;
pub mod storage;
