//! Upgrading a database in place: a schema at version 1 (dense per-minute histograms, no
//! hourly rollup) holding rollup rows is migrated to the current version; its histograms
//! become sparse with the same counts and `rr_rollup_1h` is backfilled from its minutes.
//! Runs on TimescaleDB and on plain PostgreSQL 15, each in a fresh database of the
//! collector's managed server.

mod ingest_harness;

use ingest_harness::{Backend, Collector, CollectorOptions, TestResult};
use tapwire_collector::storage::{histogram::sparse_entry, schema};
use tokio_postgres::NoTls;

/// A minute row at version 1: minute, count, dense histogram as (1-based index, count).
type MinuteRow = (&'static str, i64, &'static [(i32, i64)]);

const MINUTES: [MinuteRow; 3] = [
    ("2026-01-01 10:01:00+00", 3, &[(5, 2), (80, 1)]),
    ("2026-01-01 10:02:00+00", 1, &[(5, 1)]),
    ("2026-01-01 11:00:00+00", 1, &[(160, 1)]),
];

async fn upgrade(backend: Backend) -> TestResult {
    if !ingest_harness::require(
        ingest_harness::backend_available(backend),
        &format!("{backend:?}"),
    ) {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let mut collector = Collector::start(
        dir.path(),
        CollectorOptions {
            backend,
            database_url: None,
            extra_args: vec![],
            env: vec![],
        },
    )?;
    let admin = collector.db().await?;
    admin
        .batch_execute("CREATE DATABASE upgrade_from_v1")
        .await?;
    let mut config: tokio_postgres::Config = collector.database_url()?.parse()?;
    config.dbname("upgrade_from_v1");
    let (mut db, conn) = config.connect(NoTls).await?;
    tokio::spawn(conn);

    schema::migrate_to(&mut db, 1).await?;
    // Plain PostgreSQL needs the day's partition; TimescaleDB makes its chunk itself.
    let partitioned: bool = db
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table p \
             JOIN pg_class c ON c.oid = p.partrelid WHERE c.relname = 'rr_rollup_1m')",
            &[],
        )
        .await?
        .get(0);
    if partitioned {
        db.batch_execute(
            "CREATE TABLE rr_rollup_1m_p20260101 PARTITION OF rr_rollup_1m \
             FOR VALUES FROM ('2026-01-01 00:00:00+00') TO ('2026-01-02 00:00:00+00')",
        )
        .await?;
    }
    for (minute, count, hist) in MINUTES {
        let mut dense = vec![0i64; 160];
        for &(i, c) in hist {
            dense[i as usize - 1] = c;
        }
        db.execute(
            "INSERT INTO rr_rollup_1m (bucket, node, namespace, service, remote_service, \
             protocol, method, endpoint, is_inbound, status_class, grpc_error, count, errors, \
             duration_sum_ns, latency_hist) VALUES ($1::text::timestamptz, '', '', 'shop', 'db', \
             'http1', 'GET', '/x', false, 2, false, $2, 0, 1000, $3)",
            &[&minute, &count, &dense],
        )
        .await?;
    }

    schema::migrate(&mut db).await?;
    let minutes: Vec<Vec<i64>> = db
        .query(
            "SELECT latency_buckets FROM rr_rollup_1m ORDER BY bucket",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        minutes,
        vec![
            vec![sparse_entry(4, 2), sparse_entry(79, 1)],
            vec![sparse_entry(4, 1)],
            vec![sparse_entry(159, 1)],
        ],
        "dense histograms became sparse, counts kept"
    );
    let hours: Vec<(String, i64, Vec<i64>)> = db
        .query(
            "SELECT to_char(bucket AT TIME ZONE 'UTC', 'HH24:MI'), count, latency_buckets \
             FROM rr_rollup_1h ORDER BY bucket",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        hours,
        vec![
            (
                "10:00".to_owned(),
                4,
                vec![sparse_entry(4, 3), sparse_entry(79, 1)]
            ),
            ("11:00".to_owned(), 1, vec![sparse_entry(159, 1)]),
        ],
        "the hourly rollup is backfilled from the minutes"
    );
    // Migrating again changes nothing.
    schema::migrate(&mut db).await?;
    let versions: i64 = db
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await?
        .get(0);
    assert_eq!(versions, 2);

    drop((db, admin));
    let status = collector.stop()?;
    assert!(status.success(), "{status}\n{}", collector.log_text());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn version_1_upgrades_in_place_on_timescaledb() -> TestResult {
    upgrade(Backend::TimescaleDb).await
}

#[tokio::test(flavor = "multi_thread")]
async fn version_1_upgrades_in_place_on_postgres15() -> TestResult {
    upgrade(Backend::Postgres15).await
}
