//! `cargo xtask bench query`: latency of each Query call on a large index, through gRPC.
//!
//! Starts the real `tapwire-collector` (release build, managed TimescaleDB), stores a few
//! thousand real pairs through `Ingest/Push` (so payload segments exist), then bulk-loads
//! `TAPWIRE_BENCH_QUERY_PAIRS` (default 10 million) synthetic index rows spread over the last
//! 7 days with SQL, pointing at those segments, and builds their rollup rows (`rr_rollup_1m`,
//! `rr_rollup_1h`) the way ingest does. Each call is then repeated and its p50/p99 reported. The baseline, measured in
//! the same run, is the seed's own query (`time_bucket` counts over the last hour) sent
//! straight to the database: the ratio says what the API adds on top of the raw SQL.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tapwire_e2e::stack::{Binaries, Collector};
use tapwire_proto::v1::ingest_client::IngestClient;
use tapwire_proto::v1::query_client::QueryClient;
use tapwire_proto::v1::{
    Batch, DependenciesRequest, EndpointsRequest, Filter, GetPairRequest, Header, ListPairsRequest,
    Message, Pair, ServicesRequest, ThroughputRequest,
};
use tonic::transport::Channel;

use super::stats::percentile;

/// Synthetic rows loaded when `TAPWIRE_BENCH_QUERY_PAIRS` is not set.
const DEFAULT_PAIRS: u64 = 10_000_000;
/// Real pairs stored through the ingest API (their segments back every synthetic row).
const REAL_PAIRS: usize = 2000;
/// Rows per bulk `INSERT`, to show progress and bound each statement.
const SLICE: u64 = 1_000_000;
/// Repetitions of each measured call.
const RUNS: usize = 50;
/// A call stops being repeated after this long (at least `MIN_RUNS` runs), so a slow call
/// cannot stall the benchmark.
const BUDGET: Duration = Duration::from_secs(30);
const MIN_RUNS: usize = 5;
const DAY: u64 = 86_400;

/// Runs the benchmark and returns its figures (milliseconds).
pub fn run() -> anyhow::Result<serde_json::Value> {
    let pairs = std::env::var("TAPWIRE_BENCH_QUERY_PAIRS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_PAIRS);
    super::build_release(&[("tapwire-collector", "tapwire-collector")])?;
    let scratch = std::env::temp_dir().join(format!("tapwire-bench-query-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let data_dir = scratch.join("collector");
    // Rows reach 7 days back: keep them all while measuring.
    let mut collector = Collector::start(
        &Binaries::profile("release"),
        &data_dir,
        &scratch,
        &["--retention", "30d"],
    )
    .with_context(|| format!("starting the collector (log in {})", scratch.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = collector
        .database_url()
        .and_then(|db| runtime.block_on(measure(&collector.url(), &db, pairs)));
    let clean_exit = collector.stop();
    if result.is_ok() && clean_exit {
        let _ = std::fs::remove_dir_all(&scratch);
    } else {
        eprintln!("bench query: collector log kept in {}", scratch.display());
    }
    result
}

/// A connection to the collector's managed database.
async fn connect_database(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

fn timestamp(t: SystemTime) -> tapwire_proto::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    tapwire_proto::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// A UUIDv7 for `t` with `n` in its random bits.
fn uuid_v7(t: SystemTime, n: u64) -> String {
    let ms = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
    let hex = format!(
        "{ms:012x}7{:03x}8{:015x}",
        n & 0xfff,
        n.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 4
    );
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Real pairs an hour ago, stored through the ingest API.
async fn store_real_pairs(channel: Channel) -> anyhow::Result<()> {
    let start = SystemTime::now() - Duration::from_secs(3600);
    let pairs: Vec<Pair> = (0..REAL_PAIRS)
        .map(|i| {
            let t = start + Duration::from_millis(i as u64 * 10);
            let body = format!("{{\"order\":{i},\"items\":[1,2,3]}}");
            let message = Message {
                headers: vec![Header {
                    name: "content-type".into(),
                    value: "application/json".into(),
                }],
                body_size: body.len() as u64,
                body: body.into_bytes().into(),
                ..Default::default()
            };
            Pair {
                id: uuid_v7(t, i as u64),
                start_time: Some(timestamp(t)),
                end_time: Some(timestamp(t + Duration::from_millis(3))),
                duration_ns: 3_000_000,
                is_inbound: true,
                protocol: "http1".into(),
                method: "GET".into(),
                scheme: "http".into(),
                authority: "svc-1.local".into(),
                path: format!("/orders/{i}"),
                status: 200,
                request: Some(message.clone()),
                response: Some(message),
                service: "svc-1".into(),
                namespace: "bench".into(),
                complete: true,
                ..Default::default()
            }
        })
        .collect();
    let batches: Vec<Batch> = pairs
        .chunks(500)
        .enumerate()
        .map(|(i, chunk)| Batch {
            sequence: i as u64 + 1,
            agent_id: "bench-query".into(),
            node: "bench-node".into(),
            pairs: chunk.to_vec(),
        })
        .collect();
    let n = batches.len();
    let mut acks = IngestClient::new(channel)
        .push(tokio_stream::iter(batches))
        .await
        .context("Ingest/Push")?
        .into_inner();
    for _ in 0..n {
        acks.message()
            .await?
            .context("the collector closed the stream early")?;
    }
    Ok(())
}

/// Index rows `[from, to)` of the synthetic load, spread evenly over the last 7 days (`g`
/// orders them in time), each pointing at one of the real pairs' payload frames. Every
/// dimension follows from one of 64 routes (`g % 64`: service, peer, endpoint, direction), so
/// a minute has at most 64 rollup rows, like a cluster with 16 services.
const LOAD_SQL: &str = "
INSERT INTO rr_pairs (time, id, is_inbound, node, namespace, service, pod, container_id, pid,
    comm, protocol, method, scheme, authority, path, endpoint, status, grpc_status, is_error,
    duration_ns, request_size, response_size, local_addr, remote_addr, remote_service, tls,
    complete, truncated, partial_headers, lost_events, segment_key, segment_offset, segment_length)
SELECT t, (lpad(to_hex((extract(epoch FROM t) * 1000)::bigint), 12, '0') || '7'
        || substr(md5(g::text), 1, 3) || '8' || substr(md5(g::text), 4, 15))::uuid,
    g % 2 = 0, 'node-' || g % 64 % 16 % 3, 'ns-' || g % 64 % 16 % 4, 'svc-' || g % 64 % 16,
    'svc-' || g % 64 % 16 || '-' || g % 3, '', 1000 + g % 64 % 16, 'svc', p.protocol, p.method, 'http',
    CASE WHEN g % 64 / 16 = 0 THEN 'api.example.com' ELSE 'svc-' || (g % 64 / 16 + g % 64 % 16) % 16 || '.local' END,
    p.endpoint || '?g=' || g, p.endpoint, p.status, p.grpc_status,
    p.status >= 500 OR p.status = 0 OR coalesce(p.grpc_status, 0) <> 0,
    (1000 * power(10, (hashint8(g) & 65535) / 13107.0))::bigint, 200, 1500,
    '10.0.0.1:8080', '10.0.1.' || g % 200 || ':443',
    CASE WHEN g % 64 / 16 = 0 THEN '' ELSE 'svc-' || (g % 64 / 16 + g % 64 % 16) % 16 END,
    false, true, false, false, false, r.segment_key, r.segment_offset, r.segment_length
FROM generate_series($1::bigint, $2::bigint - 1) AS g
CROSS JOIN LATERAL (SELECT $4::timestamptz - ($3::bigint - g) * ($5::float8 / $3::bigint)
    * INTERVAL '1 second' AS t) AS tt
JOIN (VALUES
    (0, 'http1', 'GET', '/users/{id}', 200, NULL::int), (1, 'http1', 'POST', '/orders', 201, NULL),
    (2, 'http2', 'GET', '/search', 200, NULL), (3, 'http1', 'GET', '/users/{id}/cart', 404, NULL),
    (4, 'grpc', 'POST', '/shop.Cart/Add', 200, 0), (5, 'http1', 'GET', '/health', 200, NULL),
    (6, 'http2', 'DELETE', '/users/{id}', 503, NULL), (7, 'grpc', 'POST', '/shop.Cart/List', 200, 14))
    AS p(n, protocol, method, endpoint, status, grpc_status) ON p.n = g % 8
JOIN bench_refs AS r ON r.n = g % (SELECT count(*) FROM bench_refs)";

/// The per-minute rollup rows of all loaded rows, built like ingest builds them.
const ROLLUP_SQL: &str = "
INSERT INTO rr_rollup_1m (bucket, node, namespace, service, remote_service, protocol, method,
    endpoint, is_inbound, status_class, grpc_error, count, errors, duration_sum_ns,
    latency_buckets)
SELECT bucket, node, namespace, service, remote_service, protocol, method, endpoint, is_inbound,
    status_class, grpc_error, n, e, d,
    (SELECT array_agg((k::bigint << 48) | (hist ->> k)::bigint ORDER BY k::int)
     FROM jsonb_object_keys(hist) AS k)
FROM (
    SELECT bucket, node, namespace, service, remote_service, protocol, method, endpoint,
        is_inbound, status_class, grpc_error, sum(n) AS n, sum(e) AS e, sum(d) AS d,
        jsonb_object_agg(hb::text, n) AS hist
    FROM (
        SELECT time_bucket(INTERVAL '1 minute', time) AS bucket, node, namespace, service,
            remote_service, protocol, method, endpoint, is_inbound,
            (status / 100)::smallint AS status_class, coalesce(grpc_status, 0) <> 0 AS grpc_error,
            least(159, greatest(0, floor(4 * ln(greatest(duration_ns, 1)::float8) / ln(2))))::int AS hb,
            count(*) AS n, count(*) FILTER (WHERE is_error) AS e, sum(duration_ns) AS d
        FROM rr_pairs WHERE node <> 'bench-node'
        GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12
    ) AS per_bucket
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11
) AS grouped
ON CONFLICT DO NOTHING";

/// The hourly rollup of the loaded rows, summed from their minutes as ingest does.
const ROLLUP_1H_SQL: &str = "
INSERT INTO rr_rollup_1h
SELECT time_bucket(INTERVAL '1 hour', bucket), node, namespace, service, remote_service,
    protocol, method, endpoint, is_inbound, status_class, grpc_error, sum(count)::bigint,
    sum(errors)::bigint, sum(duration_sum_ns)::bigint, tapwire_hist_sum(latency_buckets)
FROM rr_rollup_1m WHERE node <> 'bench-node'
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11
ON CONFLICT DO NOTHING";

async fn load(db: &tokio_postgres::Client, pairs: u64) -> anyhow::Result<serde_json::Value> {
    db.batch_execute(
        "CREATE TABLE bench_refs AS SELECT row_number() OVER (ORDER BY id) - 1 AS n, segment_key, \
         segment_offset, segment_length FROM rr_pairs",
    )
    .await?;
    let now = SystemTime::now();
    let span = (7 * DAY) as f64;
    let began = Instant::now();
    let mut from = 0;
    while from < pairs {
        let to = (from + SLICE).min(pairs);
        db.execute(
            LOAD_SQL,
            &[&(from as i64), &(to as i64), &(pairs as i64), &now, &span],
        )
        .await
        .context("loading synthetic rows")?;
        eprintln!(
            "bench query: {to} of {pairs} rows loaded ({:?})",
            began.elapsed()
        );
        from = to;
    }
    let rows_s = began.elapsed().as_secs_f64();
    let began = Instant::now();
    db.execute(ROLLUP_SQL, &[])
        .await
        .context("building the rollups")?;
    db.execute(ROLLUP_1H_SQL, &[])
        .await
        .context("building the hourly rollups")?;
    db.batch_execute("ANALYZE rr_pairs; ANALYZE rr_rollup_1m; ANALYZE rr_rollup_1h")
        .await?;
    Ok(
        serde_json::json!({ "rows": pairs, "load_rows_s": rows_s, "build_rollups_s": began.elapsed().as_secs_f64() }),
    )
}

/// Times `runs` calls of `call`; returns p50 and p99 in milliseconds.
async fn time_calls<F, Fut>(runs: usize, mut call: F) -> anyhow::Result<serde_json::Value>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    call(0).await?; // warm-up: connection, plan cache, pages
    let mut ms = Vec::with_capacity(runs);
    let started = Instant::now();
    for i in 0..runs {
        if i >= MIN_RUNS && started.elapsed() > BUDGET {
            break;
        }
        let began = Instant::now();
        call(i + 1).await?;
        ms.push(began.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(serde_json::json!({
        "p50_ms": percentile(&ms, 0.5),
        "p99_ms": percentile(&ms, 0.99),
        "runs": ms.len(),
    }))
}

fn range(ago: Duration) -> Filter {
    let now = SystemTime::now();
    Filter {
        start: Some(timestamp(now - ago)),
        end: Some(timestamp(now)),
        ..Default::default()
    }
}

fn interval(secs: i64) -> Option<tapwire_proto::Duration> {
    Some(tapwire_proto::Duration {
        seconds: secs,
        nanos: 0,
    })
}

async fn measure(url: &str, database_url: &str, pairs: u64) -> anyhow::Result<serde_json::Value> {
    let channel = Channel::from_shared(url.to_owned())?.connect().await?;
    store_real_pairs(channel.clone()).await?;
    let db = connect_database(database_url).await?;
    let loaded = load(&db, pairs).await?;
    let q = QueryClient::new(channel).max_decoding_message_size(64 << 20);

    let baseline = time_calls(RUNS, |_| {
        let db = &db;
        async move {
            db.query(
                "SELECT time_bucket(INTERVAL '1 minute', time) AS bucket, is_inbound, COUNT(id) \
                 FROM rr_pairs WHERE time > now() - INTERVAL '1 hour' \
                 GROUP BY is_inbound, bucket ORDER BY bucket",
                &[],
            )
            .await?;
            Ok(())
        }
    })
    .await?;
    let throughput_1h = time_calls(RUNS, |_| {
        let mut q = q.clone();
        async move {
            q.throughput(ThroughputRequest {
                filter: Some(range(Duration::from_secs(3600))),
                interval: interval(60),
            })
            .await?;
            Ok(())
        }
    })
    .await?;
    let throughput_7d = time_calls(RUNS, |_| {
        let mut q = q.clone();
        async move {
            let answer = q
                .throughput(ThroughputRequest {
                    filter: Some(range(Duration::from_secs(7 * DAY))),
                    interval: interval(3600),
                })
                .await?
                .into_inner();
            anyhow::ensure!(
                answer.source == "rollup_1h",
                "7 days were not served from the hourly rollup"
            );
            Ok(())
        }
    })
    .await?;
    let list = |cursor: String| ListPairsRequest {
        filter: Some(range(Duration::from_secs(7 * DAY))),
        limit: 50,
        cursor,
    };
    let list_first = time_calls(RUNS, |_| {
        let mut q = q.clone();
        async move {
            q.list_pairs(list(String::new())).await?;
            Ok(())
        }
    })
    .await?;
    let mut cursor = String::new();
    for _ in 0..999 {
        cursor = q
            .clone()
            .list_pairs(list(cursor))
            .await?
            .into_inner()
            .next_cursor;
    }
    let list_1000 = time_calls(RUNS, |_| {
        let mut q = q.clone();
        let cursor = cursor.clone();
        async move {
            q.list_pairs(list(cursor)).await?;
            Ok(())
        }
    })
    .await?;
    let ids: Vec<String> = db
        .query(
            "SELECT id::text FROM rr_pairs TABLESAMPLE SYSTEM (1) LIMIT 200",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    anyhow::ensure!(!ids.is_empty(), "no ids sampled");
    let get_pair = time_calls(RUNS, |i| {
        let mut q = q.clone();
        let id = ids[i % ids.len()].clone();
        async move {
            q.get_pair(GetPairRequest { id, decode: true }).await?;
            Ok(())
        }
    })
    .await?;
    let dependencies_24h = time_calls(RUNS / 5, |_| {
        let mut q = q.clone();
        async move {
            q.dependencies(DependenciesRequest {
                filter: Some(range(Duration::from_secs(DAY))),
            })
            .await?;
            Ok(())
        }
    })
    .await?;
    let endpoints_1h = time_calls(RUNS, |_| {
        let mut q = q.clone();
        async move {
            q.endpoints(EndpointsRequest {
                filter: Some(range(Duration::from_secs(3600))),
                limit: 100,
            })
            .await?;
            Ok(())
        }
    })
    .await?;
    let services_24h = time_calls(RUNS / 5, |_| {
        let mut q = q.clone();
        async move {
            q.services(ServicesRequest {
                filter: Some(range(Duration::from_secs(DAY))),
            })
            .await?;
            Ok(())
        }
    })
    .await?;
    let ratio = |v: &serde_json::Value| {
        let base = baseline["p50_ms"].as_f64().unwrap_or(0.0);
        v["p50_ms"]
            .as_f64()
            .map(|x| if base > 0.0 { x / base } else { 0.0 })
    };
    Ok(serde_json::json!({
        "load": loaded,
        "baseline_seed_query_1h_sql": baseline,
        "throughput_1h_1m": throughput_1h,
        "throughput_1h_1m_vs_baseline_p50": ratio(&throughput_1h),
        "throughput_7d_1h_rollup": throughput_7d,
        "list_pairs_first_page": list_first,
        "list_pairs_page_1000": list_1000,
        "get_pair_decode": get_pair,
        "dependencies_24h": dependencies_24h,
        "endpoints_1h": endpoints_1h,
        "services_24h": services_24h,
        "targets_ms": { "throughput_1h_p99": 50, "throughput_7d_p99": 200, "list_pairs_p99": 30,
                        "get_pair_p99": 20, "dependencies_24h_p99": 200 },
    }))
}
