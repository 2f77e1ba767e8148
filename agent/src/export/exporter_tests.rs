//! The exporter against a real gRPC `Ingest` server on loopback that records what it
//! receives and can fail streams, refuse connections or lose acks. (The real collector with
//! its database is exercised by `tests/tests/delivery.rs`.)

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex as StdMutex;
use std::time::Instant;

use tapwire_proto::v1::ingest_server::{Ingest, IngestServer};
use tapwire_proto::v1::{Ack, Batch};
use tokio::task::JoinHandle;
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

use super::*;

#[derive(Default)]
struct Received {
    /// Pair id → times received.
    pairs: HashMap<String, u32>,
    agent_ids: Vec<String>,
    authorization: Vec<String>,
    batches: u64,
}

/// A loopback ingest server; `fail_every` ends a stream (without acking the batch it just
/// received, like a collector that crashed after storing it) every that many batches.
#[derive(Clone)]
struct TestCollector {
    received: Arc<StdMutex<Received>>,
    fail_every: u64,
}

#[tonic::async_trait]
impl Ingest for TestCollector {
    type PushStream = Pin<Box<dyn Stream<Item = Result<Ack, Status>> + Send + 'static>>;

    async fn push(
        &self,
        request: Request<Streaming<Batch>>,
    ) -> Result<Response<Self::PushStream>, Status> {
        let auth = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        self.received.lock().expect("lock").authorization.push(auth);
        let mut inbound = request.into_inner();
        let (acks, rx) = tokio::sync::mpsc::channel(16);
        let this = self.clone();
        tokio::spawn(async move {
            let mut on_stream = 0u64;
            while let Ok(Some(batch)) = inbound.message().await {
                on_stream += 1;
                {
                    let mut received = this.received.lock().expect("lock");
                    received.batches += 1;
                    received.agent_ids.push(batch.agent_id.clone());
                    for pair in &batch.pairs {
                        *received.pairs.entry(pair.id.clone()).or_default() += 1;
                    }
                }
                if this.fail_every > 0 && on_stream.is_multiple_of(this.fail_every) {
                    let _ = acks.send(Err(Status::unavailable("simulated crash"))).await;
                    return;
                }
                let ack = Ack {
                    sequence: batch.sequence,
                    stored: batch.pairs.len() as u32,
                    duplicates: 0,
                };
                if acks.send(Ok(ack)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

async fn serve(addr: SocketAddr, collector: TestCollector) -> JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(
                IngestServer::new(collector)
                    .accept_compressed(tonic::codec::CompressionEncoding::Zstd)
                    .accept_compressed(tonic::codec::CompressionEncoding::Gzip),
            )
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    })
}

fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

fn test_pair(i: usize) -> Pair {
    Pair {
        id: uuid::Uuid::now_v7().to_string(),
        method: "POST".into(),
        path: format!("/orders/{i}"),
        status: 200,
        request: Some(tapwire_proto::v1::Message {
            body: bytes::Bytes::from(vec![b'{'; 300 + i % 700]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn config(addr: SocketAddr, spool: Option<&Path>) -> ExportConfig {
    let mut config = ExportConfig::new(format!("http://{addr}"), "node-test");
    config.token = Some("s3cret".into());
    config.spool_dir = spool.map(Path::to_path_buf);
    config.batch = BatchLimits {
        max_pairs: 50,
        max_bytes: 1 << 20,
        max_delay: Duration::from_millis(20),
    };
    config.backoff = BackoffBounds {
        min: Duration::from_millis(20),
        max: Duration::from_millis(200),
    };
    config.shutdown_timeout = Duration::from_secs(10);
    config
}

async fn wait_acked(metrics: &ExportMetrics, pairs: u64) {
    let started = Instant::now();
    while metrics.pairs_acked_stored.get() < pairs {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "only {} of {pairs} pairs acknowledged",
            metrics.pairs_acked_stored.get()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_every_pair_once_with_token_and_stable_agent_id() {
    let addr = free_addr();
    let received = Arc::new(StdMutex::new(Received::default()));
    let server = serve(
        addr,
        TestCollector {
            received: received.clone(),
            fail_every: 0,
        },
    )
    .await;
    let spool = tempfile::tempdir().expect("tempdir");
    let (exporter, handle) = Exporter::start(config(addr, Some(spool.path()))).expect("start");
    let agent_id = exporter.agent_id().to_owned();
    let pairs: Vec<Pair> = (0..2000).map(test_pair).collect();
    for pair in &pairs {
        assert!(handle.submit(pair.clone()));
    }
    wait_acked(exporter.metrics(), 2000).await;
    let report = exporter.shutdown().await;
    assert_eq!(report.unacked_batches, 0);
    assert!(!report.timed_out);
    {
        let received = received.lock().expect("lock");
        assert_eq!(received.pairs.len(), 2000);
        for pair in &pairs {
            assert_eq!(
                received.pairs.get(&pair.id),
                Some(&1),
                "pair {} not received once",
                pair.id
            );
        }
        assert!(received.authorization.iter().all(|a| a == "Bearer s3cret"));
        assert!(received.agent_ids.iter().all(|a| *a == agent_id));
    }
    // The id lives in the spool folder: a restarted agent keeps it.
    let (again, _handle) = Exporter::start(config(addr, Some(spool.path()))).expect("restart");
    assert_eq!(again.agent_id(), agent_id);
    again.shutdown().await;
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_streams_lose_nothing() {
    let addr = free_addr();
    let received = Arc::new(StdMutex::new(Received::default()));
    let server = serve(
        addr,
        TestCollector {
            received: received.clone(),
            fail_every: 3,
        },
    )
    .await;
    let (exporter, handle) = Exporter::start(config(addr, None)).expect("start");
    let pairs: Vec<Pair> = (0..1500).map(test_pair).collect();
    for chunk in pairs.chunks(100) {
        for pair in chunk {
            assert!(handle.submit(pair.clone()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    wait_acked(exporter.metrics(), 1500).await;
    let metrics = exporter.metrics().clone();
    let report = exporter.shutdown().await;
    assert_eq!(report.unacked_batches, 0);
    let received = received.lock().expect("lock");
    for pair in &pairs {
        assert!(
            received.pairs.contains_key(&pair.id),
            "pair {} lost",
            pair.id
        );
    }
    assert!(
        received.pairs.values().any(|n| *n > 1),
        "unacked batches must have been resent"
    );
    assert!(metrics.stream_errors.get() >= 5);
    assert_eq!(metrics.pairs_dropped(), 0);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_resends_what_the_collector_never_acknowledged() {
    let addr = free_addr();
    let spool = tempfile::tempdir().expect("tempdir");
    let pairs: Vec<Pair> = (0..500).map(test_pair).collect();
    {
        // Nothing listens yet: every batch stays in the spool.
        let mut cfg = config(addr, Some(spool.path()));
        cfg.shutdown_timeout = Duration::from_millis(300);
        let (exporter, handle) = Exporter::start(cfg).expect("start");
        for pair in &pairs {
            assert!(handle.submit(pair.clone()));
        }
        let report = exporter.shutdown().await;
        assert_eq!(report.unacked_pairs, 500);
        assert!(report.timed_out);
    }
    let received = Arc::new(StdMutex::new(Received::default()));
    let server = serve(
        addr,
        TestCollector {
            received: received.clone(),
            fail_every: 0,
        },
    )
    .await;
    let (exporter, _handle) = Exporter::start(config(addr, Some(spool.path()))).expect("restart");
    wait_acked(exporter.metrics(), 500).await;
    assert_eq!(exporter.shutdown().await.unacked_batches, 0);
    let received = received.lock().expect("lock");
    for pair in &pairs {
        assert_eq!(
            received.pairs.get(&pair.id),
            Some(&1),
            "pair {} not delivered once",
            pair.id
        );
    }
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spool_drops_the_oldest() {
    let addr = free_addr();
    let spool = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(addr, Some(spool.path()));
    cfg.spool_max_bytes = 256 << 10;
    cfg.shutdown_timeout = Duration::from_millis(200);
    let (exporter, handle) = Exporter::start(cfg).expect("start");
    let pairs: Vec<Pair> = (0..5000).map(test_pair).collect();
    let started = Instant::now();
    for pair in &pairs {
        handle.submit(pair.clone());
    }
    // Let the batcher spool what was queued.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = exporter.metrics().clone();
    let report = exporter.shutdown().await;
    let dropped = metrics.pairs_dropped_spool_full.get();
    assert!(dropped > 0, "a 256 KiB spool cannot hold 5000 pairs");
    assert_eq!(
        dropped + metrics.pairs_dropped_queue_full.get() + report.unacked_pairs,
        5000,
        "every pair is either kept or counted as dropped ({:?})",
        started.elapsed()
    );
    assert!(metrics.spool_bytes.get() <= 256 << 10);
    // The newest pairs are the ones kept.
    let spool = Spool::open(spool.path(), SpoolLimits::for_total(256 << 10, 0)).expect("reopen");
    let last = spool
        .next_from(spool.next_sequence() - 1)
        .expect("read")
        .expect("newest batch kept");
    let batch = <Batch as prost::Message>::decode(last.data).expect("decode");
    assert_eq!(
        batch.pairs.last().map(|p| p.id.clone()),
        pairs.last().map(|p| p.id.clone())
    );
}

/// PEM files made by the real `openssl` CLI: a CA, a server certificate for 127.0.0.1 and
/// a client certificate, all signed by the CA; plus a second, untrusted CA's client.
struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    fn create() -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = |args: &[&str]| {
            std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let ca = |name: &str| {
            let (key, pem, subj) = (
                format!("{name}.key"),
                format!("{name}.pem"),
                format!("/CN={name}"),
            );
            let mut args = vec!["req", "-x509"];
            args.extend(ec);
            args.extend(["-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subj]);
            args.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
            args.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
            run(&args)
        };
        let leaf = |name: &str, ca: &str, ext: &str| {
            let (key, csr, pem, subj) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
                format!("/CN={name}"),
            );
            let ext_file = format!("{name}.ext");
            if std::fs::write(dir.path().join(&ext_file), ext).is_err() {
                return false;
            }
            let mut args = vec!["req"];
            args.extend(ec);
            args.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
            let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
            run(&args)
                && run(&[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    &ca_pem,
                    "-CAkey",
                    &ca_key,
                    "-CAcreateserial",
                    "-out",
                    &pem,
                    "-days",
                    "2",
                    "-extfile",
                    &ext_file,
                ])
        };
        let ok = ca("ca")
            && ca("other-ca")
            && leaf(
                "server",
                "ca",
                "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
            )
            && leaf(
                "client",
                "ca",
                "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
            )
            && leaf(
                "intruder",
                "other-ca",
                "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
            );
        ok.then_some(Self { dir })
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).expect("pem")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_delivers_and_refuses_an_untrusted_client() {
    let Some(pki) = TestPki::create() else {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "CI: the openssl CLI is needed to make test certificates"
        );
        eprintln!("skipping: the openssl CLI could not make test certificates");
        return;
    };
    let addr = free_addr();
    let received = Arc::new(StdMutex::new(Received::default()));
    let collector = TestCollector {
        received: received.clone(),
        fail_every: 0,
    };
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(
            pki.read("server.pem"),
            pki.read("server.key"),
        ))
        .client_ca_root(tonic::transport::Certificate::from_pem(pki.read("ca.pem")));
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .tls_config(tls)
            .expect("server TLS")
            .add_service(
                IngestServer::new(collector)
                    .accept_compressed(tonic::codec::CompressionEncoding::Zstd),
            )
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    let tls_config = |client: &str| {
        let mut cfg = config(addr, None);
        cfg.collector_url = format!("https://{addr}");
        cfg.tls = TlsFiles {
            ca: Some(pki.path("ca.pem")),
            cert: Some(pki.path(&format!("{client}.pem"))),
            key: Some(pki.path(&format!("{client}.key"))),
            domain: None,
        };
        cfg.shutdown_timeout = Duration::from_millis(500);
        cfg
    };

    // A client certificate from another CA: the handshake fails, nothing arrives.
    let (exporter, handle) = Exporter::start(tls_config("intruder")).expect("start");
    for i in 0..20 {
        handle.submit(test_pair(i));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(exporter.metrics().stream_errors.get() >= 1);
    assert_eq!(exporter.shutdown().await.unacked_pairs, 20);
    assert!(received.lock().expect("lock").pairs.is_empty());

    // The trusted client certificate: delivered.
    let (exporter, handle) = Exporter::start(tls_config("client")).expect("start");
    let pairs: Vec<Pair> = (0..300).map(test_pair).collect();
    for pair in &pairs {
        handle.submit(pair.clone());
    }
    wait_acked(exporter.metrics(), 300).await;
    assert_eq!(exporter.shutdown().await.unacked_batches, 0);
    let received = received.lock().expect("lock");
    assert!(pairs.iter().all(|p| received.pairs.get(&p.id) == Some(&1)));
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_never_blocks_when_the_pipeline_is_stuck() {
    let addr = free_addr();
    let mut cfg = config(addr, None);
    cfg.queue_pairs = 100;
    cfg.shutdown_timeout = Duration::from_millis(200);
    let (exporter, handle) = Exporter::start(cfg).expect("start");
    let accepted = {
        // Holding the spool stalls the batcher at its next flush, so the queue fills up:
        // a blocking submit would hang here forever.
        let _stuck = lock(&exporter.spool);
        (0..5000).filter(|i| handle.submit(test_pair(*i))).count()
    };
    assert!(
        accepted >= 100,
        "the queue itself takes {accepted} < 100 pairs"
    );
    assert!(accepted < 5000, "a stuck pipeline must drop pairs");
    let metrics = exporter.metrics().clone();
    assert_eq!(
        metrics.pairs_dropped_queue_full.get(),
        5000 - accepted as u64
    );
    exporter.shutdown().await;
    assert!(
        !handle.submit(test_pair(0)),
        "after shutdown pairs are refused"
    );
}
