//! `cargo xtask bench ingest`: how fast the real collector makes pairs durable.
//!
//! Starts `tapwire-collector` (release build, managed TimescaleDB) and streams synthetic
//! pairs shaped like captured traffic (headers ~500 B, bodies 0–4 KiB) over the real
//! `Ingest/Push` API from several concurrent HTTP/2 streams (one per simulated agent). It
//! reports sustained pairs/s (between 10% and 90% of the pairs acknowledged), ack latency at
//! saturation (`ack_latency_ms`: mostly queueing behind the in-flight window) and at half the
//! sustained rate (`paced_ack_latency_ms`: what an agent sees when the collector keeps up),
//! and the CPU the collector and PostgreSQL spent per 10k pairs (from /proc).
//!
//! The baseline is a bare binary `COPY` of index rows computed exactly like the collector
//! computes them ([`tapwire_collector::storage::copy_baseline::bare_copy`], the same code
//! path the collector's COPY uses) into the same `rr_pairs` table, 50k rows per statement on
//! one connection: the practical limit of the database, without payloads, deduplication or
//! rollups.
//!
//! Keeping the comparison honest on a 2-core machine:
//! - The load generator must not compete with what it measures. Every batch is generated,
//!   protobuf-encoded and zstd-compressed (level 3, as tonic does for the agent) into its
//!   gRPC frame before the clock starts; in the measured window the generator only writes
//!   those bytes to HTTP/2 streams. The collector still does all of its work: it
//!   decompresses, decodes and validates every batch, writes payload segments and index
//!   rows, and acknowledges. Every round sends pairs with fresh UUIDv7 ids, so nothing is a
//!   resend; the bench fails unless every pair is stored.
//! - The baseline's rows are also built before its clock starts.
//! - The machine is shared and noisy, so baseline and ingest are measured alternately in
//!   `rounds` rounds (baseline, then ingest, in each) and the figures are medians; the ratio
//!   is the median of the per-round ratios, each from a baseline and an ingest run measured
//!   seconds apart.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body::Frame;
use http_body_util::StreamBody;
use prost::Message as _;
use tapwire_collector::storage::{
    copy_baseline::bare_copy, index_row::IndexRow, payloads::FrameLocation,
};
use tapwire_e2e::stack::{Binaries, Collector};
use tapwire_proto::Timestamp;
use tapwire_proto::v1::{Ack, Batch, Header, Message, Pair};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{DecodeBuf, Decoder};
use tonic::codegen::{Service, http};
use tonic::transport::Channel;

/// What `cargo xtask bench ingest` runs.
#[derive(Debug, Clone)]
pub struct IngestBenchOptions {
    /// Pairs streamed in each measured round.
    pub pairs: usize,
    /// Measured rounds (each: baseline COPY, then ingest); figures are medians.
    pub rounds: usize,
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
            rounds: 3,
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

/// Length of the paced phase that measures ack latency below saturation.
const PACED_SECONDS: f64 = 10.0;

/// Rows per `COPY` statement (and transaction) of the baseline.
const COPY_CHUNK: usize = 50_000;

/// The gRPC method the agents push to.
const PUSH_PATH: &str = "/tapwire.v1.Ingest/Push";

/// Runs the benchmark; returns its figures.
pub fn run(opts: &IngestBenchOptions) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(
        opts.pairs > 0 && opts.streams > 0 && opts.batch_pairs > 0 && opts.rounds > 0,
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
    let result = runtime.block_on(measure(opts, &mut collector));
    let clean_exit = collector.stop();
    if result.is_ok() && clean_exit {
        let _ = std::fs::remove_dir_all(&scratch);
    } else {
        eprintln!("bench ingest: collector log kept in {}", scratch.display());
    }
    result
}

/// The figures of one measured round.
struct Round {
    sustained: f64,
    overall: f64,
    copy_rows_per_s: f64,
    ack_latencies_ms: Vec<f64>,
    collector_cpu: f64,
    postgres_cpu: f64,
}

async fn measure(
    opts: &IngestBenchOptions,
    collector: &mut Collector,
) -> anyhow::Result<serde_json::Value> {
    let url = collector.database_url()?;
    let db = connect_database(&url).await?;
    let mut copy_db = connect_database(&url).await?;
    let timescaledb: bool = db
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')",
            &[],
        )
        .await?
        .get(0);
    let postmaster = collector.postmaster()?.pid;
    let collector_pid = collector.child().pid();

    // Warm-up: connections, prepared statements, the hour's chunk.
    let warmup = encode_all(
        opts,
        generate(
            opts.streams,
            opts.batch_pairs,
            opts.batch_pairs * opts.streams,
            0,
        ),
    )?;
    ingest(opts, collector, warmup, None).await?;

    let mut rounds = Vec::with_capacity(opts.rounds);
    let mut pair_bytes = 0;
    for round in 0..opts.rounds as u64 {
        // Distinct counters per round and phase: different sizes and shapes, fresh ids.
        let first = 1_000_000 + round * 10_000_000;
        let rows = baseline_rows(opts.pairs, first + 5_000_000)?;
        let copy_rows_per_s = copy_baseline(&mut copy_db, &rows).await?;
        drop(rows);

        let batches = generate(opts.streams, opts.batch_pairs, opts.pairs, first);
        pair_bytes = batches
            .iter()
            .flatten()
            .flat_map(|b| &b.pairs)
            .map(prost::Message::encoded_len)
            .sum::<usize>();
        let frames = encode_all(opts, batches)?;
        let cpu_before = (process_cpu(collector_pid)?, postgres_cpu(postmaster)?);
        let outcome = ingest(opts, collector, frames, None).await?;
        let cpu_after = (process_cpu(collector_pid)?, postgres_cpu(postmaster)?);
        anyhow::ensure!(
            outcome.stored as usize == opts.pairs,
            "round {round}: collector stored {} of {} pairs ({} duplicates)",
            outcome.stored,
            opts.pairs,
            outcome.duplicates
        );
        eprintln!(
            "bench ingest: round {round}: {:.0} pairs/s sustained, bare COPY {:.0} rows/s, ratio {:.3}",
            outcome.sustained_pairs_per_s,
            copy_rows_per_s,
            outcome.sustained_pairs_per_s / copy_rows_per_s
        );
        rounds.push(Round {
            sustained: outcome.sustained_pairs_per_s,
            overall: opts.pairs as f64 / outcome.elapsed.as_secs_f64(),
            copy_rows_per_s,
            ack_latencies_ms: outcome.ack_latencies_ms,
            collector_cpu: cpu_after.0 - cpu_before.0,
            postgres_cpu: cpu_after.1 - cpu_before.1,
        });
    }

    let sustained = median(rounds.iter().map(|r| r.sustained));
    let copy_rows_per_s = median(rounds.iter().map(|r| r.copy_rows_per_s));
    let ratio = median(rounds.iter().map(|r| r.sustained / r.copy_rows_per_s));

    // Ack latency at half the sustained rate: what an agent sees when the collector keeps up.
    let paced_rate = sustained / 2.0;
    let paced_pairs = ((paced_rate * PACED_SECONDS) as usize).max(opts.batch_pairs * opts.streams);
    let paced_batches = encode_all(
        opts,
        generate(opts.streams, opts.batch_pairs, paced_pairs, 100_000_000),
    )?;
    let paced = ingest(opts, collector, paced_batches, Some(paced_rate)).await?;
    let mut paced_latencies = paced.ack_latencies_ms;
    paced_latencies.sort_by(f64::total_cmp);

    let stored_rows: i64 = db
        .query_one("SELECT count(*) FROM rr_pairs", &[])
        .await?
        .get(0);

    let measured_pairs = (opts.pairs * rounds.len()) as f64;
    let per_10k = |cpu: f64| cpu / measured_pairs * 10_000.0;
    let collector_cpu: f64 = rounds.iter().map(|r| r.collector_cpu).sum();
    let postgres_cpu: f64 = rounds.iter().map(|r| r.postgres_cpu).sum();
    let mut latencies: Vec<f64> = rounds
        .iter()
        .flat_map(|r| r.ack_latencies_ms.iter().copied())
        .collect();
    latencies.sort_by(f64::total_cmp);
    let per_round: Vec<serde_json::Value> = rounds
        .iter()
        .map(|r| {
            serde_json::json!({
                "sustained_pairs_per_s": r.sustained.round(),
                "baseline_copy_rows_per_s": r.copy_rows_per_s.round(),
                "ratio_vs_copy": round3(r.sustained / r.copy_rows_per_s),
            })
        })
        .collect();
    Ok(serde_json::json!({
        "database": if timescaledb { "timescaledb" } else { "postgres" },
        "pairs": opts.pairs,
        "rounds": opts.rounds,
        "streams": opts.streams,
        "batch_pairs": opts.batch_pairs,
        "zstd": opts.zstd,
        "avg_pair_bytes": pair_bytes / opts.pairs,
        "rows_in_table": stored_rows,
        "sustained_pairs_per_s": sustained.round(),
        "overall_pairs_per_s": median(rounds.iter().map(|r| r.overall)).round(),
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
        "per_round": per_round,
        "target": { "pairs_per_s": 50_000, "ratio": 0.5 },
        "meets_target": sustained >= 50_000.0 && ratio >= 0.5,
    }))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
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

/// One batch, already in its gRPC frame (flag, length, zstd-compressed protobuf).
struct EncodedBatch {
    sequence: u64,
    frame: Bytes,
}

/// Encodes every batch into its gRPC frame, as the agent's tonic client would put it on the
/// wire (zstd at tonic's level when `opts.zstd`, else uncompressed).
fn encode_all(
    opts: &IngestBenchOptions,
    batches: Vec<Vec<Batch>>,
) -> anyhow::Result<Vec<Vec<EncodedBatch>>> {
    batches
        .into_iter()
        .map(|stream| {
            stream
                .into_iter()
                .map(|batch| {
                    let raw = batch.encode_to_vec();
                    let (flag, body) = if opts.zstd {
                        let compressed = zstd::stream::encode_all(
                            raw.as_slice(),
                            zstd::DEFAULT_COMPRESSION_LEVEL,
                        )
                        .context("compressing a batch")?;
                        (1u8, compressed)
                    } else {
                        (0u8, raw)
                    };
                    let length = u32::try_from(body.len()).context("batch larger than 4 GiB")?;
                    let mut frame = Vec::with_capacity(5 + body.len());
                    frame.push(flag);
                    frame.extend_from_slice(&length.to_be_bytes());
                    frame.extend_from_slice(&body);
                    Ok(EncodedBatch {
                        sequence: batch.sequence,
                        frame: Bytes::from(frame),
                    })
                })
                .collect()
        })
        .collect()
}

/// Index rows of `rows` fresh synthetic pairs, computed by the collector's own code, with a
/// payload location like the collector's (the baseline writes no payloads).
fn baseline_rows(rows: usize, first: u64) -> anyhow::Result<Vec<IndexRow>> {
    let now = SystemTime::now();
    let segment_key = format!("segments/bench/{}.seg", uuid::Uuid::now_v7());
    (0..rows as u64)
        .map(|k| {
            let pair = synthetic_pair(first + k, now);
            let mut row = IndexRow::from_pair(&pair, "bench-node")?;
            row.location = FrameLocation {
                key: segment_key.clone(),
                offset: (k % 1000) * 1500,
                length: 1500,
            };
            Ok(row)
        })
        .collect()
}

/// Binary-COPYs `rows` into `rr_pairs` with the collector's `bare_copy`, [`COPY_CHUNK`] rows
/// per transaction; returns rows/s.
async fn copy_baseline(db: &mut tokio_postgres::Client, rows: &[IndexRow]) -> anyhow::Result<f64> {
    let started = Instant::now();
    for chunk in rows.chunks(COPY_CHUNK) {
        bare_copy(db, chunk).await.context("the baseline COPY")?;
    }
    Ok(rows.len() as f64 / started.elapsed().as_secs_f64())
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
    batches: Vec<Vec<EncodedBatch>>,
    pairs_per_s: Option<f64>,
) -> anyhow::Result<IngestOutcome> {
    let streams = batches.len().max(1) as f64;
    // Paced: each stream sends one batch every `interval`, together `pairs_per_s`.
    let interval = pairs_per_s
        .map(|rate| Duration::from_secs_f64(opts.batch_pairs as f64 * streams / rate.max(1.0)));
    // Connect before the clock starts, one HTTP/2 connection per simulated agent.
    let mut channels = Vec::with_capacity(batches.len());
    for _ in 0..batches.len() {
        channels.push(
            Channel::from_shared(collector.url())
                .context("the collector's URL")?
                .connect()
                .await
                .context("connecting to the collector")?,
        );
    }
    // (ack time, pairs) for every ack, and latencies.
    let acks: Arc<Mutex<Vec<(Instant, u32)>>> = Arc::new(Mutex::new(Vec::new()));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (stream_batches, channel) in batches.into_iter().zip(channels) {
        let (acks, latencies, in_flight) = (acks.clone(), latencies.clone(), opts.in_flight.max(1));
        let zstd = opts.zstd;
        tasks.push(tokio::spawn(async move {
            push_stream(
                channel,
                zstd,
                stream_batches,
                in_flight,
                interval,
                acks,
                latencies,
            )
            .await
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
    let total: u64 = acks.iter().map(|(_, n)| u64::from(*n)).sum();
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

/// Decodes the collector's acks.
struct AckDecoder;

impl Decoder for AckDecoder {
    type Item = Ack;
    type Error = tonic::Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Ack>, tonic::Status> {
        Ack::decode(buf)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("undecodable ack: {e}")))
    }
}

/// One agent's stream: keeps `in_flight` pre-encoded batches outstanding, times each ack.
/// The request is built by hand (what tonic's generated client sends, minus the encoding
/// work) because the frames are already encoded and compressed.
async fn push_stream(
    mut channel: Channel,
    zstd: bool,
    batches: Vec<EncodedBatch>,
    in_flight: usize,
    interval: Option<Duration>,
    acks: Arc<Mutex<Vec<(Instant, u32)>>>,
    latencies: Arc<Mutex<Vec<f64>>>,
) -> anyhow::Result<(u64, u64)> {
    let expected = batches.len();
    let window = Arc::new(Semaphore::new(in_flight));
    let sent_at: Arc<Mutex<HashMap<u64, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let (tx, rx) = mpsc::channel::<Bytes>(in_flight);
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
                if tx.send(batch.frame).await.is_err() {
                    return;
                }
            }
            // Keep the request stream open until every ack arrived.
            let _ = window.acquire_many(in_flight as u32).await;
        })
    };
    let body = StreamBody::new(
        ReceiverStream::new(rx).map(|frame| Ok::<_, Infallible>(Frame::data(frame))),
    );
    let mut request = http::Request::builder()
        .method(http::Method::POST)
        .uri(PUSH_PATH)
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if zstd {
        request = request.header("grpc-encoding", "zstd");
    }
    let request = request
        .body(tonic::body::Body::new(body))
        .context("building the Push request")?;
    std::future::poll_fn(|cx| Service::poll_ready(&mut channel, cx))
        .await
        .context("waiting for the collector connection")?;
    let response = Service::call(&mut channel, request)
        .await
        .context("starting Push")?;
    let (parts, body) = response.into_parts();
    if let Some(status) = tonic::Status::from_header_map(&parts.headers)
        && status.code() != tonic::Code::Ok
    {
        bail!("Push refused: {status}");
    }
    let mut responses =
        tonic::Streaming::new_response(AckDecoder, body, parts.status, None, Some(64 << 20));
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

/// A connection to the collector's managed database.
async fn connect_database(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    tokio::spawn(connection);
    Ok(client)
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
