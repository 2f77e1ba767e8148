//! The query API against the real `tapwire-collector` binary on real databases: TimescaleDB
//! (managed from the trixie root, or `TAPWIRE_TEST_DATABASE_URL`) and plain PostgreSQL 15
//! (managed from `/usr/lib/postgresql/15/bin`, or `TAPWIRE_TEST_PG15_URL`). Pairs go in through
//! the ingest API like an agent sends them; every answer is checked against expectations
//! computed from the pairs sent (see `query_support`).

mod ingest_harness;
mod query_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use ingest_harness::{Backend as Database, Collector, CollectorOptions, TestDatabase};
use query_support::cases;
use tapwire_proto::v1::ingest_client::IngestClient;
use tapwire_proto::v1::query_client::QueryClient;
use tapwire_proto::v1::{Batch, Pair};
use tonic::transport::Channel;

/// A running collector seen through gRPC.
struct LiveCollector {
    /// Kept so the process lives as long as the checks (stopped on drop).
    _collector: Collector,
    channel: Channel,
    sequence: AtomicU64,
}

impl query_support::Backend for LiveCollector {
    fn query(&self) -> QueryClient<Channel> {
        QueryClient::new(self.channel.clone()).max_decoding_message_size(64 << 20)
    }

    async fn ingest(&self, pairs: &[Pair]) -> anyhow::Result<()> {
        let mut client = IngestClient::new(self.channel.clone());
        let batches: Vec<Batch> = pairs
            .chunks(1000)
            .map(|chunk| Batch {
                sequence: self.sequence.fetch_add(1, Ordering::Relaxed),
                agent_id: "query-test".into(),
                node: "node-x".into(),
                pairs: chunk.to_vec(),
            })
            .collect();
        let n = batches.len();
        let acks = ingest_harness::push(&mut client, batches).await?;
        anyhow::ensure!(
            acks.len() == n,
            "{} of {n} batches acknowledged",
            acks.len()
        );
        let stored: u64 = acks
            .iter()
            .map(|a| u64::from(a.stored + a.duplicates))
            .sum();
        anyhow::ensure!(
            stored == pairs.len() as u64,
            "{stored} of {} pairs stored",
            pairs.len()
        );
        Ok(())
    }
}

async fn start(database: Database, dir: &std::path::Path) -> Option<(LiveCollector, TestDatabase)> {
    if !ingest_harness::require(
        ingest_harness::backend_available(database),
        &format!("{database:?}"),
    ) {
        return None;
    }
    let db = TestDatabase::create(database).await.expect("test database");
    let schemas = dir.join("health.fds");
    std::fs::write(&schemas, tonic_health::pb::FILE_DESCRIPTOR_SET).expect("write schemas");
    let mut collector = Collector::start(
        dir,
        CollectorOptions {
            backend: database,
            database_url: db.url.clone(),
            extra_args: vec!["--descriptor-set".into(), schemas.display().to_string()],
            env: vec![],
        },
    )
    .expect("collector starts");
    // Bucket edges must not depend on the database's time zone: give it one 5:45 off UTC.
    let client = collector.db().await.expect("database");
    let name: String = client
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    client
        .batch_execute(&format!(
            "ALTER DATABASE \"{name}\" SET timezone = 'Asia/Kathmandu'"
        ))
        .await
        .expect("set the time zone");
    drop(client);
    collector.stop().expect("collector stops");
    collector.restart().expect("collector restarts");
    let zone: String = collector
        .db()
        .await
        .unwrap()
        .query_one("SHOW timezone", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(zone, "Asia/Kathmandu");
    let channel = Channel::from_shared(collector.endpoint())
        .unwrap()
        .connect()
        .await
        .expect("connect");
    Some((
        LiveCollector {
            _collector: collector,
            channel,
            sequence: AtomicU64::new(1),
        },
        db,
    ))
}

async fn every_check(database: Database, large_export: usize) {
    let dir = tempfile::tempdir().unwrap();
    let Some((live, db)) = start(database, dir.path()).await else {
        return;
    };
    let mut sent = Vec::new();
    let began = Instant::now();
    let step = |name: &str| eprintln!("{database:?}: {name} done at {:?}", began.elapsed());
    cases::clear_statuses(&live).await;
    step("statuses");
    cases::list_filters_and_pages(&live, &mut sent).await;
    step("list");
    cases::paging_while_pairs_arrive(&live, &mut sent).await;
    step("paging");
    cases::throughput_buckets(&live, &mut sent).await;
    step("throughput");
    cases::rollup_equals_raw(&live, &mut sent).await;
    step("rollup");
    cases::groupings(&live, &sent).await;
    step("groupings");
    cases::export_formats(&live, &sent).await;
    step("export");
    cases::get_pair_decodes(&live, &mut sent).await;
    step("get");
    cases::tail_follows(&live, &mut sent).await;
    step("tail");
    if large_export > 0 {
        let took = cases::export_many(&live, large_export).await;
        eprintln!("{database:?}: exported {large_export} pairs in {took:?}");
    }
    drop(live);
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_api_on_timescaledb() {
    every_check(Database::TimescaleDb, 100_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_api_on_postgres15() {
    every_check(Database::Postgres15, 0).await;
}
