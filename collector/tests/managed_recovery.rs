//! Crash recovery with the collector's managed PostgreSQL (TimescaleDB from the trixie
//! root): SIGKILL the collector mid-stream and restart it; SIGKILL the database and let the
//! collector restart it. Afterwards every pair sent is stored exactly once.

mod ingest_harness;

use std::time::{Duration, SystemTime};

use ingest_harness::{
    Backend, Collector, CollectorOptions, TestResult, assert_stored_once, deliver, pairs,
};
use tapwire_proto::v1::Batch;
use tokio_stream::wrappers::ReceiverStream;

fn batches(count: u64, per_batch: u64) -> Vec<Batch> {
    let start = SystemTime::now() - Duration::from_secs(600);
    (0..count)
        .map(|b| {
            pairs::batch(
                b + 1,
                pairs::pairs(
                    b * per_batch,
                    per_batch,
                    start + Duration::from_secs(b),
                    Duration::from_millis(3),
                ),
            )
        })
        .collect()
}

fn managed(backend: Backend) -> CollectorOptions {
    CollectorOptions {
        backend,
        database_url: None,
        extra_args: vec![],
        env: vec![],
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_stream_then_restart_loses_and_doubles_nothing() -> TestResult {
    if !ingest_harness::require(
        ingest_harness::backend_available(Backend::TimescaleDb),
        "TimescaleDB trixie root",
    ) {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let mut collector = Collector::start(dir.path(), managed(Backend::TimescaleDb))?;
    let all = batches(40, 50);

    // Feed one stream by hand so batches are in flight when the collector dies.
    let (feed, rx) = tokio::sync::mpsc::channel(64);
    let mut client = collector.client().await?;
    let mut acks_stream = client.push(ReceiverStream::new(rx)).await?.into_inner();
    for batch in &all[..10] {
        feed.send(batch.clone()).await?;
    }
    let mut acked = Vec::new();
    while acked.len() < 10 {
        let ack = acks_stream.message().await?.ok_or("stream ended early")?;
        acked.push(ack.sequence);
    }
    for batch in &all[10..20] {
        feed.send(batch.clone()).await?;
    }
    collector.kill()?;
    while let Ok(Some(ack)) = acks_stream.message().await {
        acked.push(ack.sequence);
    }
    drop(feed);

    collector.restart()?;
    let unacked: Vec<Batch> = all
        .iter()
        .filter(|b| !acked.contains(&b.sequence))
        .cloned()
        .collect();
    let acks = deliver(&collector.endpoint(), unacked, Duration::from_secs(120)).await?;
    assert_eq!(acks.len() + acked.len(), 40);

    let db = collector.db().await?;
    assert_stored_once(&db, &all).await?;
    drop(db);
    let status = collector.stop()?;
    assert!(status.success(), "{status}\n{}", collector.log_text());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn database_killed_and_restarted_loses_and_doubles_nothing() -> TestResult {
    if !ingest_harness::require(
        ingest_harness::backend_available(Backend::TimescaleDb),
        "TimescaleDB trixie root",
    ) {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let mut collector = Collector::start(dir.path(), managed(Backend::TimescaleDb))?;
    let all = batches(12, 50);
    deliver(
        &collector.endpoint(),
        all[..4].to_vec(),
        Duration::from_secs(30),
    )
    .await?;

    let pid_file = std::fs::read_to_string(dir.path().join("postgres/postmaster.pid"))?;
    let pid: i32 = pid_file
        .lines()
        .next()
        .ok_or("empty postmaster.pid")?
        .trim()
        .parse()?;
    // SAFETY: kill(2) on the managed postmaster this test's collector started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);

    // Keep delivering while the database is down; the collector brings it back.
    deliver(
        &collector.endpoint(),
        all[4..].to_vec(),
        Duration::from_secs(150),
    )
    .await?;
    let db = collector.db().await?;
    assert_stored_once(&db, &all).await?;
    drop(db);
    assert!(
        collector.log_text().contains("restarting it"),
        "{}",
        collector.log_text()
    );
    let status = collector.stop()?;
    assert!(status.success(), "{status}\n{}", collector.log_text());
    Ok(())
}
