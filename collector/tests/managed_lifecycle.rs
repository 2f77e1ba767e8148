//! The managed PostgreSQL life cycle through the real binary: `migrate` initializes the
//! data folder and is idempotent; serving exposes `/metrics`, `/healthz` and gRPC health;
//! SIGTERM exits 0 and stops the managed server. Runs on plain PostgreSQL 15 (host
//! binaries via runuser) so the TimescaleDB variant is covered by the other tests.

mod ingest_harness;

use std::{
    process::Command,
    time::{Duration, SystemTime},
};

use ingest_harness::{Backend, Collector, CollectorOptions, TestResult, deliver, pairs};

const PG15_BIN: &str = "/usr/lib/postgresql/15/bin";

fn http_get(url: &str) -> Result<(String, String), ingest_harness::Error> {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", url])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
    Ok((body.to_owned(), code.to_owned()))
}

/// A rollup table's total count and summed (sparse) latency histogram.
async fn rollup_totals(
    db: &tokio_postgres::Client,
    table: &str,
) -> Result<(i64, Vec<i64>), ingest_harness::Error> {
    let row = db
        .query_one(
            &format!("SELECT sum(count)::bigint, tapwire_hist_sum(latency_buckets) FROM {table}"),
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_serve_metrics_and_clean_stop_with_managed_postgres15() -> TestResult {
    let root = unsafe { libc::geteuid() } == 0;
    let available = std::path::Path::new(PG15_BIN).join("postgres").exists() && root;
    if !ingest_harness::require(available, "PostgreSQL 15 binaries (as root)") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    for _ in 0..2 {
        let out = Command::new(env!("CARGO_BIN_EXE_tapwire-collector"))
            .args(["--postgres-bin", PG15_BIN, "--data-dir"])
            .arg(dir.path())
            .arg("migrate")
            .output()?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // migrate leaves no server running.
        assert!(!dir.path().join("postgres/postmaster.pid").exists());
    }

    let metrics_port = ingest_harness::free_port();
    let mut collector = Collector::start(
        dir.path(),
        CollectorOptions {
            backend: Backend::Postgres15,
            database_url: None,
            extra_args: vec!["--metrics-addr".into(), format!("127.0.0.1:{metrics_port}")],
            env: vec![],
        },
    )?;
    let db = collector.db().await?;
    let versions: i64 = db
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await?
        .get(0);
    assert_eq!(versions, 2);

    let batch = pairs::batch(
        7,
        pairs::pairs(0, 25, SystemTime::now(), Duration::from_millis(1)),
    );
    deliver(
        &collector.endpoint(),
        vec![batch.clone(), batch],
        Duration::from_secs(30),
    )
    .await?;
    let (metrics, code) = http_get(&format!("http://127.0.0.1:{metrics_port}/metrics"))?;
    assert_eq!(code, "200");
    assert!(
        metrics.contains("tapwire_collector_batches_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tapwire_collector_pairs_stored_total 25"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tapwire_collector_pairs_duplicate_total 25"),
        "{metrics}"
    );
    let (_, code) = http_get(&format!("http://127.0.0.1:{metrics_port}/healthz"))?;
    assert_eq!(code, "200");
    let hourly = rollup_totals(&db, "rr_rollup_1h").await?;
    assert_eq!(hourly.0, 25, "ingest maintains the hourly rollup");
    assert_eq!(hourly, rollup_totals(&db, "rr_rollup_1m").await?);

    let channel = tonic::transport::Channel::from_shared(collector.endpoint())?
        .connect()
        .await?;
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "tapwire.v1.Ingest".into(),
        })
        .await?
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    drop(db);
    let status = collector.stop()?;
    assert!(status.success(), "{status}\n{}", collector.log_text());
    assert!(
        !dir.path().join("postgres/postmaster.pid").exists(),
        "managed PostgreSQL still running after SIGTERM"
    );
    Ok(())
}
