//! Ingest → index rows, rollups and payloads round-trip exactly, resends add nothing, and
//! the seed query runs unchanged with chunk/partition exclusion: on TimescaleDB and on
//! plain PostgreSQL 15, through the real collector binary.

mod ingest_harness;

use std::time::{Duration, SystemTime};

use ingest_harness::{
    Backend, Collector, CollectorOptions, TestDatabase, TestResult, count_rows, pairs, push,
};
use tapwire_collector::storage::endpoint::normalize_endpoint;
use tonic::codec::CompressionEncoding;

const SEED_QUERY: &str = "SELECT time_bucket(INTERVAL '1 minute', time) AS bucket, is_inbound, COUNT(id) \
    FROM rr_pairs WHERE time > now() - INTERVAL '1 hour' GROUP BY is_inbound, bucket ORDER BY bucket";

async fn roundtrip(backend: Backend) -> TestResult {
    if !ingest_harness::require(
        ingest_harness::backend_available(backend),
        &format!("{backend:?}"),
    ) {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let database = TestDatabase::create(backend).await?;
    let collector = Collector::start(
        dir.path(),
        CollectorOptions {
            backend,
            database_url: database.url.clone(),
            extra_args: vec![],
            env: vec![],
        },
    )?;
    let db = collector.db().await?;
    let flavor: String = db
        .query_one(
            "SELECT value FROM tapwire_settings WHERE key = 'flavor'",
            &[],
        )
        .await?
        .get(0);
    let expected_flavor = match backend {
        Backend::TimescaleDb => "timescaledb",
        Backend::Postgres15 => "postgres",
    };
    assert_eq!(flavor, expected_flavor);

    // Recent pairs spread over the last 40 minutes, plus old ones 3 hours back (another
    // chunk/partition that the seed query must exclude).
    let now = SystemTime::now();
    let recent = pairs::pairs(
        0,
        240,
        now - Duration::from_secs(40 * 60),
        Duration::from_secs(10),
    );
    let old = pairs::pairs(
        1000,
        30,
        now - Duration::from_secs(3 * 3600),
        Duration::from_secs(1),
    );
    let batches = vec![
        pairs::batch(1, recent[..120].to_vec()),
        pairs::batch(2, recent[120..].to_vec()),
        pairs::batch(3, old.clone()),
    ];

    let mut plain = collector.client().await?;
    let acks = push(&mut plain, batches[..1].to_vec()).await?;
    let mut gzip = collector
        .client()
        .await?
        .send_compressed(CompressionEncoding::Gzip);
    let mut acks2 = push(&mut gzip, batches[1..2].to_vec()).await?;
    let mut zstd = collector
        .client()
        .await?
        .send_compressed(CompressionEncoding::Zstd);
    let mut acks3 = push(&mut zstd, batches[2..].to_vec()).await?;
    let acks: Vec<_> = acks
        .into_iter()
        .chain(acks2.drain(..))
        .chain(acks3.drain(..))
        .collect();
    assert_eq!(
        acks.iter().map(|a| a.sequence).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(acks.iter().map(|a| a.stored).sum::<u32>(), 270);
    assert_eq!(acks.iter().map(|a| a.duplicates).sum::<u32>(), 0);
    assert_eq!(count_rows(&db).await?, 270);

    // Every pair reads back exactly from its payload frame; the row matches the pair.
    let payloads = collector.payload_store()?;
    let all: Vec<_> = recent.iter().chain(old.iter()).collect();
    for pair in &all {
        let id = uuid::Uuid::parse_str(&pair.id)?;
        let row = db
            .query_one(
                "SELECT segment_key, segment_offset, segment_length, endpoint, status, grpc_status, \
                 is_error, duration_ns, request_size, response_size, node, is_inbound, path FROM rr_pairs WHERE id = $1",
                &[&id],
            )
            .await?;
        let (key, offset, length): (String, i64, i32) = (row.get(0), row.get(1), row.get(2));
        let stored = payloads
            .read_pair(&key, offset as u64, length as u32)
            .await?;
        assert_eq!(&stored, *pair, "payload of {}", pair.id);
        assert_eq!(
            row.get::<_, String>(3),
            normalize_endpoint(&pair.protocol, &pair.path)
        );
        assert_eq!(row.get::<_, i32>(4) as u32, pair.status);
        assert_eq!(
            row.get::<_, Option<i32>>(5).map(|g| g as u32),
            pair.grpc_status
        );
        let is_error =
            pair.status >= 500 || pair.status == 0 || pair.grpc_status.is_some_and(|g| g != 0);
        assert_eq!(row.get::<_, bool>(6), is_error);
        assert_eq!(row.get::<_, i64>(7) as u64, pair.duration_ns);
        assert_eq!(
            row.get::<_, i64>(8) as u64,
            pair.request.as_ref().map_or(0, |m| m.body_size)
        );
        assert_eq!(
            row.get::<_, i64>(9) as u64,
            pair.response.as_ref().map_or(0, |m| m.body_size)
        );
        assert_eq!(row.get::<_, String>(10), "node-a");
        assert_eq!(row.get::<_, bool>(11), pair.is_inbound);
        assert_eq!(row.get::<_, String>(12), pair.path);
        assert!(key.starts_with("segments/"), "{key}");
    }

    // Resending everything stores nothing new, and the rollups do not move.
    let rollup_before: i64 = db
        .query_one("SELECT sum(count)::bigint FROM rr_rollup_1m", &[])
        .await?
        .get(0);
    assert_eq!(rollup_before, 270);
    let resent = push(&mut plain, batches.clone()).await?;
    assert_eq!(resent.iter().map(|a| a.stored).sum::<u32>(), 0);
    assert_eq!(resent.iter().map(|a| a.duplicates).sum::<u32>(), 270);
    assert_eq!(count_rows(&db).await?, 270);
    let rollup_after: i64 = db
        .query_one("SELECT sum(count)::bigint FROM rr_rollup_1m", &[])
        .await?
        .get(0);
    assert_eq!(rollup_after, 270);

    // Rollups agree with the raw rows, histogram included.
    let check = db
        .query_one(
            "SELECT (SELECT count(*) FROM rr_pairs WHERE is_error),
                    (SELECT sum(errors)::bigint FROM rr_rollup_1m),
                    (SELECT sum(duration_ns)::bigint FROM rr_pairs),
                    (SELECT sum(duration_sum_ns)::bigint FROM rr_rollup_1m),
                    (SELECT sum(x & 281474976710655)::bigint
                     FROM rr_rollup_1m, unnest(latency_buckets) x),
                    (SELECT count(*) FROM rr_pairs WHERE floor(4 * log(2, greatest(duration_ns, 1)::numeric)) = 60),
                    (SELECT coalesce(sum(x & 281474976710655), 0)::bigint
                     FROM rr_rollup_1m, unnest(latency_buckets) x WHERE x >> 48 = 60)",
            &[],
        )
        .await?;
    assert_eq!(check.get::<_, i64>(0), check.get::<_, i64>(1));
    assert_eq!(check.get::<_, i64>(2), check.get::<_, i64>(3));
    assert_eq!(check.get::<_, i64>(4), 270);
    assert_eq!(check.get::<_, i64>(5), check.get::<_, i64>(6));

    // The seed query, unchanged: only the 240 recent pairs, split by direction.
    let rows = db.query(SEED_QUERY, &[]).await?;
    let total: i64 = rows.iter().map(|r| r.get::<_, i64>(2)).sum();
    assert_eq!(total, 240);
    let inbound: i64 = rows
        .iter()
        .filter(|r| r.get::<_, bool>(1))
        .map(|r| r.get::<_, i64>(2))
        .sum();
    assert_eq!(inbound, 120);
    assert!(rows.windows(2).all(
        |w| w[0].get::<_, std::time::SystemTime>(0) <= w[1].get::<_, std::time::SystemTime>(0)
    ));

    // EXPLAIN: the old hour's chunk/partition is not scanned.
    let old_table: String = match backend {
        Backend::TimescaleDb => db
            .query_one(
                "SELECT show_chunks('rr_pairs', older_than => now() - INTERVAL '2 hours')::text",
                &[],
            )
            .await?
            .get(0),
        Backend::Postgres15 => db
            .query_one(
                "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                 WHERE i.inhparent = 'rr_pairs'::regclass ORDER BY c.relname LIMIT 1",
                &[],
            )
            .await?
            .get(0),
    };
    let short_name = old_table
        .rsplit('.')
        .next()
        .unwrap_or(&old_table)
        .to_owned();
    let plan: Vec<String> = db
        .query(&format!("EXPLAIN (ANALYZE, COSTS OFF) {SEED_QUERY}"), &[])
        .await?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    let plan = plan.join("\n");
    println!("{backend:?} seed query plan:\n{plan}");
    assert!(
        !plan.contains(&short_name),
        "{short_name} should be excluded:\n{plan}"
    );
    let excluded = plan.contains("Subplans Removed")
        || plan.contains("Chunks excluded")
        || !plan.contains("Append");
    assert!(
        excluded || plan.contains("_hyper_"),
        "no exclusion visible:\n{plan}"
    );

    drop(db);
    let mut collector = collector;
    let status = collector.stop()?;
    assert!(
        status.success(),
        "collector exit: {status}\n{}",
        collector.log_text()
    );
    database.drop_database().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn roundtrip_timescaledb() -> TestResult {
    roundtrip(Backend::TimescaleDb).await
}

#[tokio::test(flavor = "multi_thread")]
async fn roundtrip_postgres15() -> TestResult {
    roundtrip(Backend::Postgres15).await
}
