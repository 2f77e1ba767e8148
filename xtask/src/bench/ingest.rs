//! `cargo xtask bench ingest`: how fast the real collector makes pairs durable.
//!
//! Starts `tapwire-collector` (release build, managed TimescaleDB), streams synthetic pairs
//! shaped like captured traffic (headers ~500 B, bodies 0–4 KiB, zstd like the agent) over
//! the real `Ingest/Push` API from several concurrent streams (one per simulated agent), and
//! reports sustained pairs/s (between 10% and 90% of the pairs acknowledged), ack latency
//! at saturation (`ack_latency_ms`: mostly queueing behind the in-flight window) and at half
//! the sustained rate (`paced_ack_latency_ms`: what an agent sees when the collector keeps
//! up), and the CPU the collector and PostgreSQL spent per 10k pairs (from /proc). The baseline, measured in the same run, is a bare binary `COPY` of the
//! same index rows into the same `rr_pairs` table: the practical limit of the database.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use bytes::Bytes;
use tapwire_e2e::stack::{Binaries, Collector};
use tapwire_proto::Timestamp;
use tapwire_proto::v1::ingest_client::IngestClient;
use tapwire_proto::v1::{Batch, Header, Message, Pair};
use tokio::sync::{Semaphore, mpsc};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_stream::wrappers::ReceiverStream;

/// What `cargo xtask bench ingest` runs.
#[derive(Debug, Clone)]
pub struct IngestBenchOptions {
    /// Pairs streamed in the measured run.
    pub pairs: usize,
    /// Concurrent `Push` streams (simulated agents).
    pub streams: usize,
    /// Pairs per batch (the agent's default is 1000).
    pub batch_pairs: usize,
    /// Batches in flight per stream.
    pub in_flight: usize,
    /// zstd-compress the stream, as the agent does by default.
    pub zstd: bool,
    /// Cargo profile of the collector binary ("release" for real figures).
    pub profile: String,
    /// A PostgreSQL root for the managed database (the collector's default otherwise).
    pub postgres_root: Option<PathBuf>,
}

impl Default for IngestBenchOptions {
    fn default() -> Self {
        Self {
            pairs: 200_000,
            streams: 8,
            batch_pairs: 1000,
            in_flight: 4,
            zstd: true,
            profile: "release".into(),
            postgres_root: None,
        }
    }
}

/// Bodies are slices of one buffer: generating the load must not eat the cores measured.
static BODY: [u8; 4096] = [b'x'; 4096];

/// Runs the benchmark; returns its figures.
pub fn run(opts: &IngestBenchOptions) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(
        opts.pairs > 0 && opts.streams > 0 && opts.batch_pairs > 0,
        "nothing to send"
    );
    if opts.profile == "release" {
        super::build_release(&[("tapwire-collector", "tapwire-collector")])?;
    }
    let bins = Binaries::profile(&opts.profile);
    let scratch = std::env::temp_dir().join(format!("tapwire-bench-ingest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let data_dir = scratch.join("collector");
    let mut extra = Vec::new();
    if let Some(root) = &opts.postgres_root {
        extra.push("--postgres-root".to_string());
        extra.push(root.display().to_string());
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut collector = Collector::start(&bins, &data_dir, &scratch, &extra)
        .with_context(|| format!("starting the collector (log in {})", scratch.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(measure(opts, &mut collector, &data_dir));
    let clean_exit = collector.stop();
    if result.is_ok() && clean_exit {
        let _ = std::fs::remove_dir_all(&scratch);
    } else {
        eprintln!("bench ingest: collector log kept in {}", scratch.display());
    }
    result
}

async fn measure(
    opts: &IngestBenchOptions,
    collector: &mut Collector,
    data_dir: &Path,
) -> anyhow::Result<serde_json::Value> {
    let db = connect_database(data_dir).await?;
    let timescaledb: bool = db
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')",
            &[],
        )
        .await?
        .get(0);
    let postmaster = postmaster_pid(data_dir)?;
    let collector_pid = collector.child().pid();

    // Warm-up: connections, prepared statements, the hour's chunk.
    let warmup: Vec<Vec<Batch>> = generate(
        opts.streams,
        opts.batch_pairs,
        opts.batch_pairs * opts.streams,
        0,
    );
    ingest(opts, collector, warmup, None).await?;

    let batches = generate(opts.streams, opts.batch_pairs, opts.pairs, 1_000_000);
    let pair_bytes: usize = batches
        .iter()
        .flatten()
        .flat_map(|b| &b.pairs)
        .map(prost::Message::encoded_len)
        .sum();
    let cpu_before = (process_cpu(collector_pid)?, postgres_cpu(postmaster)?);
    let outcome = ingest(opts, collector, batches, None).await?;
    let cpu_after = (process_cpu(collector_pid)?, postgres_cpu(postmaster)?);
    anyhow::ensure!(
        outcome.stored as usize == opts.pairs,
        "collector stored {} of {} pairs ({} duplicates)",
        outcome.stored,
        opts.pairs,
        outcome.duplicates
    );
    // Ack latency at half the sustained rate: what an agent sees when the collector keeps up.
    let paced_rate = outcome.sustained_pairs_per_s / 2.0;
    let paced_pairs = ((paced_rate * PACED_SECONDS) as usize).max(opts.batch_pairs * opts.streams);
    let paced_batches = generate(opts.streams, opts.batch_pairs, paced_pairs, 10_000_000);
    let paced = ingest(opts, collector, paced_batches, Some(paced_rate)).await?;
    let mut paced_latencies = paced.ack_latencies_ms;
    paced_latencies.sort_by(f64::total_cmp);

    let stored_rows: i64 = db
        .query_one("SELECT count(*) FROM rr_pairs", &[])
        .await?
        .get(0);

    let copy_rows_per_s = copy_baseline(&db, opts.pairs).await?;

    let per_10k = |cpu: f64| cpu / opts.pairs as f64 * 10_000.0;
    let collector_cpu = cpu_after.0 - cpu_before.0;
    let postgres_cpu = cpu_after.1 - cpu_before.1;
    let mut latencies = outcome.ack_latencies_ms.clone();
    latencies.sort_by(f64::total_cmp);
    let sustained = outcome.sustained_pairs_per_s;
    let ratio = sustained / copy_rows_per_s;
    Ok(serde_json::json!({
        "database": if timescaledb { "timescaledb" } else { "postgres" },
        "pairs": opts.pairs,
        "streams": opts.streams,
        "batch_pairs": opts.batch_pairs,
        "zstd": opts.zstd,
        "avg_pair_bytes": pair_bytes / opts.pairs,
        "rows_in_table": stored_rows,
        "sustained_pairs_per_s": sustained.round(),
        "overall_pairs_per_s": (opts.pairs as f64 / outcome.elapsed.as_secs_f64()).round(),
        "ack_latency_ms": {
            "p50": percentile(&latencies, 0.50),
            "p99": percentile(&latencies, 0.99),
            "max": latencies.last().copied().unwrap_or(0.0),
        },
        "paced_ack_latency_ms": {
            "pairs_per_s": paced_rate.round(),
            "p50": percentile(&paced_latencies, 0.50),
            "p99": percentile(&paced_latencies, 0.99),
        },
        "cpu_s_per_10k_pairs": {
            "collector": round3(per_10k(collector_cpu)),
            "postgres": round3(per_10k(postgres_cpu)),
            "total": round3(per_10k(collector_cpu + postgres_cpu)),
        },
        "baseline_copy_rows_per_s": copy_rows_per_s.round(),
        "ratio_vs_copy": round3(ratio),
        "target": { "pairs_per_s": 50_000, "ratio": 0.5 },
        "meets_target": sustained >= 50_000.0 && ratio >= 0.5,
    }))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    (sorted[rank - 1] * 1000.0).round() / 1000.0
}

/// One synthetic pair: ~500 B of headers, request body 0–1 KiB, response body 0–4 KiB.
fn synthetic_pair(i: u64, now: SystemTime) -> Pair {
    // A cheap deterministic spread of sizes and shapes.
    let r = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16;
    let ts = |offset_ns: u64| {
        let t = now + Duration::from_nanos(offset_ns);
        let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        Some(Timestamp {
            seconds: since.as_secs() as i64,
            nanos: since.subsec_nanos() as i32,
        })
    };
    let headers = |prefix: &str, n: u64| {
        (0..5)
            .map(|h| Header {
                name: format!("{prefix}-{h}"),
                value: format!("{:x}-{n}-{}", r, "abcdefghij".repeat(3)),
            })
            .collect::<Vec<_>>()
    };
    let request_body = (r % 1024) as usize;
    let response_body = ((r >> 12) % 4096) as usize;
    let duration = 200_000 + r % 50_000_000;
    Pair {
        id: uuid::Uuid::now_v7().to_string(),
        start_time: ts(0),
        request_end_time: ts(duration / 4),
        response_start_time: ts(duration / 2),
        end_time: ts(duration),
        duration_ns: duration,
        is_inbound: r.is_multiple_of(2),
        protocol: "http1".into(),
        method: if r.is_multiple_of(3) { "POST" } else { "GET" }.into(),
        scheme: "http".into(),
        authority: format!("svc-{}.shop.svc:8080", r % 20),
        path: format!("/api/v1/orders/{}/items?page={}", r % 100_000, r % 7),
        status: if r.is_multiple_of(97) { 503 } else { 200 },
        request: Some(Message {
            headers: headers("x-request-header", i),
            body: Bytes::from_static(&BODY[..request_body]),
            body_size: request_body as u64,
            ..Default::default()
        }),
        response: Some(Message {
            headers: headers("x-response-header", i),
            body: Bytes::from_static(&BODY[..response_body]),
            body_size: response_body as u64,
            ..Default::default()
        }),
        local_addr: "10.0.0.5:8080".into(),
        remote_addr: format!("10.0.{}.{}:{}", r % 4, r % 250, 30_000 + r % 20_000),
        pid: 4242,
        comm: "orders".into(),
        node: "bench-node".into(),
        namespace: "shop".into(),
        pod: format!("orders-{}", r % 5),
        service: format!("svc-{}", r % 20),
        complete: true,
        connection_id: i / 20,
        ..Default::default()
    }
}

/// Batches per stream, generated before the clock starts.
fn generate(streams: usize, batch_pairs: usize, pairs: usize, first: u64) -> Vec<Vec<Batch>> {
    let now = SystemTime::now();
    let mut out: Vec<Vec<Batch>> = (0..streams).map(|_| Vec::new()).collect();
    let mut i = first;
    let mut left = pairs;
    let mut sequence = 0u64;
    while left > 0 {
        let n = left.min(batch_pairs);
        left -= n;
        sequence += 1;
        let stream = (sequence as usize) % streams;
        out[stream].push(Batch {
            sequence,
            agent_id: format!("bench-agent-{stream}"),
            node: "bench-node".into(),
            pairs: (0..n as u64).map(|k| synthetic_pair(i + k, now)).collect(),
        });
        i += n as u64;
    }
    out
}

struct IngestOutcome {
    stored: u64,
    duplicates: u64,
    elapsed: Duration,
    sustained_pairs_per_s: f64,
    ack_latencies_ms: Vec<f64>,
}

/// Streams every stream's batches concurrently; returns when all are acknowledged.
async fn ingest(
    opts: &IngestBenchOptions,
    collector: &Collector,
    batches: Vec<Vec<Batch>>,
    pairs_per_s: Option<f64>,
) -> anyhow::Result<IngestOutcome> {
    let streams = batches.len().max(1) as f64;
    // Paced: each stream sends one batch every `interval`, together `pairs_per_s`.
    let interval = pairs_per_s
        .map(|rate| Duration::from_secs_f64(opts.batch_pairs as f64 * streams / rate.max(1.0)));
    let total: usize = batches.iter().flatten().map(|b| b.pairs.len()).sum();
    // (ack time, pairs) for every ack, and latencies.
    let acks: Arc<Mutex<Vec<(Instant, u32)>>> = Arc::new(Mutex::new(Vec::new()));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for stream_batches in batches {
        let mut client = IngestClient::connect(collector.url())
            .await
            .context("connecting to the collector")?
            .max_decoding_message_size(64 << 20);
        if opts.zstd {
            client = client
                .send_compressed(tonic::codec::CompressionEncoding::Zstd)
                .accept_compressed(tonic::codec::CompressionEncoding::Zstd);
        }
        let (acks, latencies, in_flight) = (acks.clone(), latencies.clone(), opts.in_flight.max(1));
        tasks.push(tokio::spawn(async move {
            push_stream(client, stream_batches, in_flight, interval, acks, latencies).await
        }));
    }
    let mut stored = 0;
    let mut duplicates = 0;
    for task in tasks {
        let (s, d) = task.await??;
        stored += s;
        duplicates += d;
    }
    let elapsed = started.elapsed();
    let mut acks = std::mem::take(&mut *acks.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    acks.sort_by_key(|(t, _)| *t);
    // Sustained: the rate between 10% and 90% of the pairs acknowledged (no ramp-up/down).
    let mut cumulative = 0u64;
    let (mut t10, mut p10, mut t90, mut p90) = (None, 0u64, None, 0u64);
    for (t, n) in &acks {
        cumulative += u64::from(*n);
        if t10.is_none() && cumulative as f64 >= total as f64 * 0.1 {
            (t10, p10) = (Some(*t), cumulative);
        }
        if t90.is_none() && cumulative as f64 >= total as f64 * 0.9 {
            (t90, p90) = (Some(*t), cumulative);
        }
    }
    let sustained = match (t10, t90) {
        (Some(a), Some(b)) if b > a => (p90 - p10) as f64 / (b - a).as_secs_f64(),
        _ => total as f64 / elapsed.as_secs_f64(),
    };
    let ack_latencies_ms =
        std::mem::take(&mut *latencies.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    Ok(IngestOutcome {
        stored,
        duplicates,
        elapsed,
        sustained_pairs_per_s: sustained,
        ack_latencies_ms,
    })
}

/// One agent's stream: keeps `in_flight` batches outstanding, times each ack.
async fn push_stream(
    mut client: IngestClient<tonic::transport::Channel>,
    batches: Vec<Batch>,
    in_flight: usize,
    interval: Option<Duration>,
    acks: Arc<Mutex<Vec<(Instant, u32)>>>,
    latencies: Arc<Mutex<Vec<f64>>>,
) -> anyhow::Result<(u64, u64)> {
    let expected = batches.len();
    let window = Arc::new(Semaphore::new(in_flight));
    let sent_at: Arc<Mutex<HashMap<u64, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let (tx, rx) = mpsc::channel(in_flight);
    let feeder = {
        let (window, sent_at) = (window.clone(), sent_at.clone());
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            for (k, batch) in batches.into_iter().enumerate() {
                if let Some(interval) = interval {
                    tokio::time::sleep_until(start + interval * k as u32).await;
                }
                let Ok(permit) = window.acquire().await else {
                    return;
                };
                permit.forget();
                if let Ok(mut s) = sent_at.lock() {
                    s.insert(batch.sequence, Instant::now());
                }
                if tx.send(batch).await.is_err() {
                    return;
                }
            }
            // Keep the request stream open until every ack arrived.
            let _ = window.acquire_many(in_flight as u32).await;
        })
    };
    let mut responses = client.push(ReceiverStream::new(rx)).await?.into_inner();
    let (mut stored, mut duplicates, mut received) = (0u64, 0u64, 0usize);
    while received < expected {
        let Some(ack) = responses.message().await? else {
            bail!("collector closed the stream after {received} of {expected} acks");
        };
        let now = Instant::now();
        received += 1;
        stored += u64::from(ack.stored);
        duplicates += u64::from(ack.duplicates);
        if let Some(sent) = sent_at
            .lock()
            .ok()
            .and_then(|mut s| s.remove(&ack.sequence))
            && let Ok(mut l) = latencies.lock()
        {
            l.push(now.duration_since(sent).as_secs_f64() * 1000.0);
        }
        if let Ok(mut a) = acks.lock() {
            a.push((now, ack.stored + ack.duplicates));
        }
        window.add_permits(1);
    }
    feeder.abort();
    Ok((stored, duplicates))
}

/// The collector's managed database (port from its postmaster.pid).
async fn connect_database(data_dir: &Path) -> anyhow::Result<tokio_postgres::Client> {
    let pid_file = data_dir.join("postgres/postmaster.pid");
    let text = std::fs::read_to_string(&pid_file)
        .with_context(|| format!("reading {}", pid_file.display()))?;
    let port: u16 = text
        .lines()
        .nth(3)
        .and_then(|l| l.trim().parse().ok())
        .with_context(|| format!("no port in {}", pid_file.display()))?;
    let url = format!("postgres://postgres@127.0.0.1:{port}/tapwire");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    tokio::spawn(connection);
    Ok(client)
}

fn postmaster_pid(data_dir: &Path) -> anyhow::Result<i32> {
    let pid_file = data_dir.join("postgres/postmaster.pid");
    let text = std::fs::read_to_string(&pid_file)?;
    text.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .with_context(|| format!("no pid in {}", pid_file.display()))
}

/// utime + stime (+ reaped children's) of one process, in seconds.
fn cpu_seconds(pid: i32, with_children: bool) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesized command (which may contain spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    let mut ticks = field(14)? + field(15)?;
    if with_children {
        ticks += field(16)? + field(17)?;
    }
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(ticks as f64 / hz)
}

fn parent_pid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn process_cpu(pid: u32) -> anyhow::Result<f64> {
    let pid = i32::try_from(pid)?;
    cpu_seconds(pid, true).with_context(|| format!("reading the CPU time of process {pid}"))
}

/// The postmaster, its live children, and (through the postmaster's child times) the
/// backends that already exited.
fn postgres_cpu(postmaster: i32) -> anyhow::Result<f64> {
    let mut total = cpu_seconds(postmaster, true).context("reading the postmaster's CPU time")?;
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if parent_pid(pid) == Some(postmaster) {
            total += cpu_seconds(pid, false).unwrap_or(0.0);
        }
    }
    Ok(total)
}

const COPY_COLUMNS: &str = "time, id, is_inbound, node, namespace, service, pod, container_id, pid, comm, \
    protocol, method, scheme, authority, path, endpoint, status, grpc_status, is_error, duration_ns, \
    request_size, response_size, local_addr, remote_addr, remote_service, tls, complete, truncated, \
    partial_headers, lost_events, segment_key, segment_offset, segment_length";

/// Length of the paced phase that measures ack latency below saturation.
const PACED_SECONDS: f64 = 10.0;

/// Rows per `COPY` statement of the baseline.
const COPY_CHUNK: usize = 50_000;

/// Binary-COPYs `rows` index rows shaped like the ingested ones (fresh ids) into `rr_pairs`;
/// returns rows/s.
async fn copy_baseline(db: &tokio_postgres::Client, rows: usize) -> anyhow::Result<f64> {
    let types = [
        Type::TIMESTAMPTZ,
        Type::UUID,
        Type::BOOL,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::INT4,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::INT4,
        Type::INT4,
        Type::BOOL,
        Type::INT8,
        Type::INT8,
        Type::INT8,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::BOOL,
        Type::BOOL,
        Type::BOOL,
        Type::BOOL,
        Type::BOOL,
        Type::TEXT,
        Type::INT8,
        Type::INT4,
    ];
    let now = SystemTime::now();
    let pairs: Vec<Pair> = (0..rows as u64)
        .map(|i| synthetic_pair(2_000_000 + i, now))
        .collect();
    let segment_key = format!("segments/bench/{}.seg", uuid::Uuid::now_v7());
    let started = Instant::now();
    for chunk in pairs.chunks(COPY_CHUNK) {
        let sink = db
            .copy_in(&format!("COPY rr_pairs ({COPY_COLUMNS}) FROM STDIN BINARY"))
            .await
            .context("starting the baseline COPY")?;
        let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &types));
        for (k, p) in chunk.iter().enumerate() {
            let id = uuid::Uuid::parse_str(&p.id)?;
            let time = p
                .start_time
                .as_ref()
                .map(|t| SystemTime::UNIX_EPOCH + Duration::new(t.seconds as u64, t.nanos as u32))
                .unwrap_or(now);
            let endpoint = p.path.split('?').next().unwrap_or_default().to_string();
            let (request_size, response_size) = (
                p.request.as_ref().map_or(0, |m| m.body_size as i64),
                p.response.as_ref().map_or(0, |m| m.body_size as i64),
            );
            let (pid, status, offset, length) =
                (p.pid as i32, p.status as i32, (k * 1500) as i64, 1500i32);
            let grpc_status: Option<i32> = None;
            let (is_error, duration) = (p.status >= 500, p.duration_ns as i64);
            let row: [&(dyn ToSql + Sync); 33] = [
                &time,
                &id,
                &p.is_inbound,
                &p.node,
                &p.namespace,
                &p.service,
                &p.pod,
                &p.container_id,
                &pid,
                &p.comm,
                &p.protocol,
                &p.method,
                &p.scheme,
                &p.authority,
                &p.path,
                &endpoint,
                &status,
                &grpc_status,
                &is_error,
                &duration,
                &request_size,
                &response_size,
                &p.local_addr,
                &p.remote_addr,
                &p.remote_service,
                &p.tls,
                &p.complete,
                &p.truncated,
                &p.partial_headers,
                &p.lost_events,
                &segment_key,
                &offset,
                &length,
            ];
            writer
                .as_mut()
                .write(&row)
                .await
                .context("writing a baseline row")?;
        }
        writer
            .finish()
            .await
            .context("finishing the baseline COPY")?;
    }
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}
