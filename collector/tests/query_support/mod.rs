//! Shared parts of the query tests: synthetic pairs, independently computed expectations,
//! and the checks each backend (a real collector on TimescaleDB or plain PostgreSQL) runs.
#![allow(dead_code)]

pub mod cases;
pub mod expect;
pub mod pairs;

use tapwire_proto::v1::Pair;
use tapwire_proto::v1::query_client::QueryClient;
use tonic::transport::Channel;

/// What the checks need from a running collector.
#[allow(async_fn_in_trait)]
pub trait Backend {
    /// A client of its Query service.
    fn query(&self) -> QueryClient<Channel>;
    /// Stores `pairs` through the collector's ingest path and returns once they are durable.
    async fn ingest(&self, pairs: &[Pair]) -> anyhow::Result<()>;
}
