//! Ingest throughput measurement (ignored by default; run it explicitly):
//!
//! ```text
//! cargo test -p tapwire-collector --release --test ingest_throughput -- --ignored --nocapture
//! ```
//!
//! Streams synthetic pairs (bodies of 0.1–2 KiB) through the real collector binary and its
//! managed TimescaleDB (or `TAPWIRE_TEST_DATABASE_URL`), then binary-COPies the same rows
//! straight into `rr_pairs` as the baseline. Prints sustained pairs/s, CPU per 10k pairs
//! (collector and PostgreSQL), ack latency p50/p99 and the ratio to the bare COPY.
//! Knobs: `TAPWIRE_BENCH_PAIRS` (default 200000), `TAPWIRE_BENCH_STREAMS` (4),
//! `TAPWIRE_BENCH_BATCH` (1000 pairs), `TAPWIRE_BENCH_WINDOW` (unacked batches per stream, 4).

mod ingest_harness;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use ingest_harness::{
    Backend, Collector, CollectorOptions, Error, TestDatabase, TestResult, pairs,
};
use tapwire_collector::storage::{
    connect_pool, copy_baseline::bare_copy, index_row::IndexRow, payloads::FrameLocation,
};
use tapwire_proto::v1::Batch;
use tokio::sync::Semaphore;
use tokio_stream::wrappers::ReceiverStream;

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system) used so far by a process.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(after) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return 0.0;
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// CPU seconds of a postmaster and its children (backends, writers).
fn postgres_cpu_seconds(postmaster: u32) -> f64 {
    let mut total = cpu_seconds(postmaster);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(postmaster) {
            total += cpu_seconds(pid);
        }
    }
    total
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

async fn run_stream(
    endpoint: String,
    batches: Vec<Batch>,
    window: usize,
) -> Result<Vec<Duration>, Error> {
    let mut client = tapwire_proto::v1::ingest_client::IngestClient::connect(endpoint)
        .await?
        .send_compressed(tonic::codec::CompressionEncoding::Zstd)
        .max_encoding_message_size(64 << 20);
    let (feed, rx) = tokio::sync::mpsc::channel(window);
    let mut acks = client.push(ReceiverStream::new(rx)).await?.into_inner();
    let slots = Arc::new(Semaphore::new(window));
    let sent: Arc<std::sync::Mutex<HashMap<u64, Instant>>> = Arc::default();
    let expected = batches.len();
    let sender = {
        let (slots, sent) = (Arc::clone(&slots), Arc::clone(&sent));
        tokio::spawn(async move {
            for batch in batches {
                let Ok(permit) = slots.acquire().await else {
                    return;
                };
                permit.forget();
                sent.lock()
                    .map(|mut m| m.insert(batch.sequence, Instant::now()))
                    .ok();
                if feed.send(batch).await.is_err() {
                    return;
                }
            }
        })
    };
    let mut latencies = Vec::with_capacity(expected);
    while latencies.len() < expected {
        let ack = acks.message().await?.ok_or("stream ended early")?;
        let started = sent.lock().ok().and_then(|mut m| m.remove(&ack.sequence));
        latencies.push(started.map(|t| t.elapsed()).unwrap_or_default());
        slots.add_permits(1);
    }
    sender.await?;
    Ok(latencies)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run with --ignored --nocapture (release build recommended)"]
async fn ingest_throughput_against_bare_copy() -> TestResult {
    let backend = Backend::TimescaleDb;
    if !ingest_harness::require(ingest_harness::backend_available(backend), "TimescaleDB") {
        return Ok(());
    }
    let total = knob("TAPWIRE_BENCH_PAIRS", 200_000);
    let streams = knob("TAPWIRE_BENCH_STREAMS", 4).max(1);
    let batch_size = knob("TAPWIRE_BENCH_BATCH", 1000).max(1);
    let window = knob("TAPWIRE_BENCH_WINDOW", 4).max(1) as usize;

    let dir = tempfile::tempdir()?;
    let database = TestDatabase::create(backend).await?;
    let mut collector = Collector::start(
        dir.path(),
        CollectorOptions {
            backend,
            database_url: database.url.clone(),
            extra_args: vec![],
            env: vec![],
        },
    )?;
    let start = SystemTime::now() - Duration::from_secs(1800);
    let all = pairs::pairs(
        0,
        total,
        start,
        Duration::from_micros(1800 * 1_000_000 / total.max(1)),
    );
    let mut per_stream: Vec<Vec<Batch>> = vec![Vec::new(); streams as usize];
    for (n, chunk) in all.chunks(batch_size as usize).enumerate() {
        per_stream[n % streams as usize].push(pairs::batch(n as u64 + 1, chunk.to_vec()));
    }
    let collector_pid = collector.pid().ok_or("collector not running")?;
    let postmaster: Option<u32> =
        std::fs::read_to_string(dir.path().join("postgres/postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next()?.trim().parse().ok());
    let (cpu_c0, cpu_p0) = (
        cpu_seconds(collector_pid),
        postmaster.map_or(0.0, postgres_cpu_seconds),
    );
    let began = Instant::now();
    let tasks: Vec<_> = per_stream
        .into_iter()
        .map(|batches| tokio::spawn(run_stream(collector.endpoint(), batches, window)))
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = began.elapsed();
    let (cpu_c, cpu_p) = (
        cpu_seconds(collector_pid) - cpu_c0,
        postmaster.map_or(0.0, postgres_cpu_seconds) - cpu_p0,
    );
    latencies.sort();
    let db = collector.db().await?;
    assert_eq!(ingest_harness::count_rows(&db).await?, total as i64);
    let ingest_rate = total as f64 / elapsed.as_secs_f64();

    // Baseline: the same rows, bare binary COPY into the emptied table, same streams.
    db.batch_execute("TRUNCATE rr_pairs, rr_rollup_1m").await?;
    let url = collector.database_url()?;
    let pool = connect_pool(&url)?;
    let rows: Vec<IndexRow> = all
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut row = IndexRow::from_pair(p, "node-a")?;
            row.location = FrameLocation {
                key: format!("segments/2026/11/28/07/{}.seg", uuid::Uuid::now_v7()),
                offset: (i as u64 % batch_size) * 700,
                length: 700,
            };
            Ok(row)
        })
        .collect::<Result<_, tapwire_collector::storage::StorageError>>()?;
    let rows = Arc::new(rows);
    let began = Instant::now();
    let mut copies = Vec::new();
    for s in 0..streams as usize {
        let (pool, rows) = (pool.clone(), Arc::clone(&rows));
        copies.push(tokio::spawn(async move {
            let mut client = pool.get().await?;
            for (n, chunk) in rows.chunks(batch_size as usize).enumerate() {
                if n % streams as usize == s {
                    bare_copy(&mut client, chunk).await?;
                }
            }
            Ok::<_, Error>(())
        }));
    }
    for copy in copies {
        copy.await??;
    }
    let copy_elapsed = began.elapsed();
    let copy_rate = total as f64 / copy_elapsed.as_secs_f64();
    assert_eq!(ingest_harness::count_rows(&db).await?, total as i64);

    println!(
        "ingest: {total} pairs in {:.2} s = {:.0} pairs/s ({streams} streams, {batch_size}/batch, window {window})\n\
         cpu per 10k pairs: collector {:.3} s, postgres {:.3} s\n\
         ack latency: p50 {:.1} ms, p99 {:.1} ms\n\
         bare COPY baseline: {:.2} s = {:.0} rows/s\n\
         ratio ingest/baseline: {:.2}",
        elapsed.as_secs_f64(),
        ingest_rate,
        cpu_c * 10_000.0 / total as f64,
        cpu_p * 10_000.0 / total as f64,
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        copy_elapsed.as_secs_f64(),
        copy_rate,
        ingest_rate / copy_rate,
    );
    drop(db);
    assert!(collector.stop()?.success());
    database.drop_database().await;
    Ok(())
}
