//! At-least-once delivery, end to end: the agent's exporter streams pairs to the real
//! `tapwire-collector` (managed PostgreSQL/TimescaleDB) while the collector is SIGKILLed and
//! restarted, the network between them is cut (a black-holing proxy: packets vanish, no
//! resets), and the agent itself is restarted during the outage. Afterwards every pair
//! submitted is in `rr_pairs` exactly once, checked with SQL in the collector's database.
//!
//! Needs the collector built (`cargo build -p tapwire-collector`) and PostgreSQL (the trixie
//! TimescaleDB root, or `TAPWIRE_PG_ROOT`); `TAPWIRE_DELIVERY_OUTAGE_SECS` sets the length
//! of the network cut (default 60 s, as in issue 4).

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use support::{Scratch, postgres_root_args};
use tapwire_agent::export::{BackoffBounds, BatchLimits, ExportConfig, ExportHandle, Exporter};
use tapwire_e2e::stack::{Binaries, Collector};
use tapwire_proto::Timestamp;
use tapwire_proto::v1::{Header, Message, Pair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The collector binary, or `None` (skipped) outside CI when it is not built.
fn collector_binaries(test: &str) -> Option<Binaries> {
    let bins = Binaries::profile("debug");
    match bins.path("tapwire-collector") {
        Ok(_) => Some(bins),
        Err(e) if tapwire_e2e::in_ci() => panic!("{test}: {e}"),
        Err(e) => {
            eprintln!("skipping {test}: {e}");
            None
        }
    }
}

/// A TCP proxy on loopback that can black-hole traffic: while cut, it forwards nothing in
/// either direction and accepts new connections without connecting them, like a network
/// partition (no RST, no FIN: the exporter must notice by itself).
struct BlackHoleProxy {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
}

impl BlackHoleProxy {
    async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (cut, cut_rx) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut cut = cut_rx.clone();
                tokio::spawn(async move {
                    if cut.wait_for(|c| !*c).await.is_err() {
                        return;
                    }
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::spawn(pump(client_read, server_write, cut.clone()));
                    pump(server_read, client_write, cut).await;
                });
            }
        });
        Ok(Self { addr, cut })
    }

    fn set_cut(&self, cut: bool) {
        let _ = self.cut.send(cut);
    }
}

/// Copies bytes one way, holding them while the network is cut.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut cut: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if cut.wait_for(|c| !*c).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A pair shaped like captured traffic: ~500 B of headers, a body of 0–4 KiB.
fn synthetic_pair(i: u64) -> Pair {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let ts = |offset_ns: u64| {
        let t = now + Duration::from_nanos(offset_ns);
        Some(Timestamp {
            seconds: t.as_secs() as i64,
            nanos: t.subsec_nanos() as i32,
        })
    };
    let headers = |side: &str| {
        (0..8)
            .map(|h| Header {
                name: format!("x-{side}-header-{h}"),
                value: format!("value-{i}-{h}-{}", "v".repeat(40)),
            })
            .collect::<Vec<_>>()
    };
    let body_len = (i * 977 % 4096) as usize;
    Pair {
        id: uuid::Uuid::now_v7().to_string(),
        start_time: ts(0),
        request_end_time: ts(200_000),
        response_start_time: ts(1_000_000),
        end_time: ts(1_500_000),
        duration_ns: 1_500_000,
        is_inbound: i.is_multiple_of(2),
        protocol: "http1".into(),
        method: "POST".into(),
        scheme: "http".into(),
        authority: "orders.shop.svc:8080".into(),
        path: format!("/orders/{i}?page=1"),
        status: if i.is_multiple_of(50) { 503 } else { 200 },
        request: Some(Message {
            headers: headers("req"),
            body: vec![b'r'; body_len].into(),
            body_size: body_len as u64,
            ..Default::default()
        }),
        response: Some(Message {
            headers: headers("resp"),
            body: vec![b'{'; body_len / 2].into(),
            body_size: (body_len / 2) as u64,
            ..Default::default()
        }),
        local_addr: "10.0.0.5:8080".into(),
        remote_addr: "10.0.0.9:43120".into(),
        pid: 4242,
        comm: "orders".into(),
        node: "delivery-node".into(),
        namespace: "shop".into(),
        pod: "orders-7d9f".into(),
        service: "orders".into(),
        complete: true,
        connection_id: i / 10,
        ..Default::default()
    }
}

/// Submits pairs at a steady rate to whichever exporter is current; remembers what was
/// accepted.
struct Producer {
    handle: Arc<Mutex<Option<ExportHandle>>>,
    sent: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Producer {
    fn start(handle: ExportHandle, per_second: u64) -> Self {
        let handle = Arc::new(Mutex::new(Some(handle)));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (handle, sent, stop) = (handle.clone(), sent.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..per_second / 10 {
                        let pair = synthetic_pair(i);
                        i += 1;
                        let id = pair.id.clone();
                        if let Some(h) = handle.lock().expect("lock").as_ref()
                            && h.submit(pair)
                        {
                            sent.lock().expect("lock").push(id);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Self {
            handle,
            sent,
            stop,
            thread: Some(thread),
        }
    }

    fn swap(&self, handle: Option<ExportHandle>) {
        *self.handle.lock().expect("lock") = handle;
    }

    fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("producer thread");
        }
        std::mem::take(&mut *self.sent.lock().expect("lock"))
    }
}

fn exporter_config(url: &str, spool: &Path) -> ExportConfig {
    let mut config = ExportConfig::new(url, "delivery-node");
    config.spool_dir = Some(spool.to_path_buf());
    config.batch = BatchLimits {
        max_pairs: 200,
        max_bytes: 1 << 20,
        max_delay: Duration::from_millis(200),
    };
    config.backoff = BackoffBounds {
        min: Duration::from_millis(100),
        max: Duration::from_secs(2),
    };
    config.connect_timeout = Duration::from_secs(2);
    config.ack_timeout = Duration::from_secs(5);
    config.shutdown_timeout = Duration::from_secs(1);
    config
}

/// A connection to the collector's managed database.
async fn collector_database(collector: &Collector) -> tokio_postgres::Client {
    let url = collector
        .database_url()
        .unwrap_or_else(|e| panic!("the collector's database: {e:#}"));
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    tokio::spawn(connection);
    client
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn every_pair_is_stored_exactly_once_across_crashes_and_a_network_cut() {
    const TEST: &str = "delivery";
    let Some(bins) = collector_binaries(TEST) else {
        return;
    };
    let outage = Duration::from_secs(
        std::env::var("TAPWIRE_DELIVERY_OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    );
    let scratch = Scratch::new(TEST);
    let dir = &scratch.dir;
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let _entered = runtime.enter();
    let root_args = postgres_root_args();
    let root_args: Vec<&str> = root_args.iter().map(String::as_str).collect();
    let data_dir = dir.join("collector");
    let mut collector =
        Collector::start(&bins, &data_dir, dir, &root_args).expect("collector starts");
    let proxy = runtime
        .block_on(BlackHoleProxy::start(collector.addr))
        .expect("proxy");
    let url = format!("http://{}", proxy.addr);
    let spool = dir.join("spool");

    let (exporter, handle) =
        Exporter::start(exporter_config(&url, &spool)).expect("exporter starts");
    let producer = Producer::start(handle, 500);
    std::thread::sleep(Duration::from_secs(3));

    // 1. The collector crashes mid-stream and comes back.
    collector.kill();
    std::thread::sleep(Duration::from_secs(2));
    collector
        .restart()
        .expect("collector restarts after SIGKILL");
    std::thread::sleep(Duration::from_secs(3));

    // 2. The network is cut; halfway through, the agent restarts (SIGTERM-like shutdown
    //    with batches unacknowledged: they must survive in the spool).
    let errors_before_cut = exporter.metrics().stream_errors.get();
    proxy.set_cut(true);
    std::thread::sleep(outage / 2);
    // Nothing was reset or closed: the exporter noticed the silence by itself.
    assert!(
        exporter.metrics().stream_errors.get() > errors_before_cut,
        "the exporter did not notice the partition within {:?}",
        outage / 2
    );
    producer.swap(None);
    let first_metrics = exporter.metrics().clone();
    let report = runtime.block_on(exporter.shutdown());
    assert!(
        report.unacked_batches > 0,
        "the cut left nothing unacknowledged: {report:?}"
    );
    let (exporter, handle) =
        Exporter::start(exporter_config(&url, &spool)).expect("exporter restarts");
    producer.swap(Some(handle));
    std::thread::sleep(outage - outage / 2);
    proxy.set_cut(false);
    std::thread::sleep(Duration::from_secs(3));
    let sent = producer.finish();

    // 3. Everything drains.
    let metrics = exporter.metrics().clone();
    wait_until("the spool to drain", Duration::from_secs(120), || {
        metrics.spool_batches.get() == 0 && metrics.batches_spooled.get() > 0
    });
    let report = runtime.block_on(exporter.shutdown());
    assert_eq!(report.unacked_batches, 0, "{report:?}");
    assert_eq!(
        first_metrics.pairs_dropped() + metrics.pairs_dropped(),
        0,
        "nothing may be dropped"
    );
    assert!(
        first_metrics.stream_errors.get() >= 2,
        "the crash and the cut must have broken streams"
    );

    // 4. Exactly once, by SQL in the collector's own database.
    let db = runtime.block_on(collector_database(&collector));
    let rows = runtime
        .block_on(db.query(
            "SELECT id::text FROM rr_pairs WHERE node = 'delivery-node'",
            &[],
        ))
        .expect("select ids");
    let stored: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let unique: HashSet<&String> = stored.iter().collect();
    let expected: HashSet<&String> = sent.iter().collect();
    assert_eq!(unique.len(), stored.len(), "duplicates stored");
    let missing: Vec<_> = expected.difference(&unique).take(5).collect();
    assert!(
        missing.is_empty(),
        "{} of {} pairs missing, e.g. {missing:?}",
        expected.len() - unique.len().min(expected.len()),
        expected.len()
    );
    assert_eq!(unique, expected, "stored ids differ from submitted ids");
    eprintln!(
        "delivery: {} pairs stored exactly once; {} resent as duplicates; outage {outage:?}",
        sent.len(),
        first_metrics.pairs_acked_duplicate.get() + metrics.pairs_acked_duplicate.get()
    );
    assert!(collector.stop(), "collector exits cleanly on SIGTERM");
}

#[test]
fn a_pair_is_stored_within_two_seconds_with_default_batching() {
    const TEST: &str = "delivery-latency";
    let Some(bins) = collector_binaries(TEST) else {
        return;
    };
    let scratch = Scratch::new(TEST);
    let dir = &scratch.dir;
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let _entered = runtime.enter();
    let root_args = postgres_root_args();
    let root_args: Vec<&str> = root_args.iter().map(String::as_str).collect();
    let data_dir = dir.join("collector");
    let mut collector =
        Collector::start(&bins, &data_dir, dir, &root_args).expect("collector starts");
    let db = runtime.block_on(collector_database(&collector));
    // The agent's defaults: 1000 pairs, 4 MiB or 500 ms per batch.
    let config = ExportConfig::new(collector.url(), "delivery-node");
    let (exporter, handle) = Exporter::start(config).expect("exporter starts");
    let mut delays = Vec::new();
    for i in 0..5 {
        let pair = synthetic_pair(i);
        let id = pair.id.clone();
        let submitted = Instant::now();
        assert!(handle.submit(pair));
        loop {
            let found = runtime
                .block_on(db.query_opt("SELECT 1 FROM rr_pairs WHERE id::text = $1", &[&id]))
                .expect("query");
            if found.is_some() {
                break;
            }
            assert!(
                submitted.elapsed() < Duration::from_secs(2),
                "pair {id} not stored within 2 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        delays.push(submitted.elapsed());
    }
    eprintln!("{TEST}: submit → row visible: {delays:?}");
    let report = runtime.block_on(exporter.shutdown());
    assert_eq!(report.unacked_batches, 0);
    assert!(collector.stop(), "collector exits cleanly on SIGTERM");
}
