//! Malformed protobuf, oversized batches, invalid pairs, wrong or missing tokens, and
//! wrong or missing client certificates are rejected with a clear gRPC status and store
//! nothing; a non-loopback listener without TLS and a token refuses to start.

mod ingest_harness;

use std::time::{Duration, SystemTime};

use bytes::{Buf, BufMut, Bytes};
use ingest_harness::{
    Backend, Collector, CollectorOptions, TestDatabase, TestResult, count_rows, pairs, push,
    tls::TestPki,
};
use tapwire_proto::v1::ingest_client::IngestClient;
use tonic::{
    Code, Request, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    metadata::MetadataValue,
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};

const TOKEN: &str = "test-token-4f1c";

/// Sends bytes as they are, so a test can put a malformed message on the wire.
#[derive(Clone, Default)]
struct RawCodec;
struct RawEncoder;
struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

async fn tls_channel(
    port: u16,
    pki: &TestPki,
    identity: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            std::fs::read(&pki.ca).unwrap_or_default(),
        ))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(cert).unwrap_or_default(),
            std::fs::read(key).unwrap_or_default(),
        ));
    }
    Channel::from_shared(format!("https://127.0.0.1:{port}"))
        .map_err(|_| unreachable_error())
        .unwrap_or_else(|e| e)
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

fn unreachable_error() -> tonic::transport::Endpoint {
    tonic::transport::Endpoint::from_static("https://127.0.0.1:1")
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    if let Ok(value) = MetadataValue::try_from(format!("Bearer {token}")) {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

#[tokio::test(flavor = "multi_thread")]
async fn rejects_bad_requests_and_stores_nothing() -> TestResult {
    let backend = Backend::TimescaleDb;
    if !ingest_harness::require(ingest_harness::backend_available(backend), "TimescaleDB")
        || !ingest_harness::require(ingest_harness::tls::openssl_available(), "openssl")
    {
        return Ok(());
    }
    tapwire_collector::auth::install_crypto_provider();
    let dir = tempfile::tempdir()?;
    let pki = TestPki::generate(dir.path())?;
    let database = TestDatabase::create(backend).await?;
    let collector = Collector::start(
        &dir.path().join("collector"),
        CollectorOptions {
            backend,
            database_url: database.url.clone(),
            extra_args: vec![
                "--token".into(),
                TOKEN.into(),
                "--tls-cert".into(),
                pki.server_cert.display().to_string(),
                "--tls-key".into(),
                pki.server_key.display().to_string(),
                "--client-ca".into(),
                pki.ca.display().to_string(),
                "--max-batch-bytes".into(),
                "65536".into(),
            ],
            env: vec![],
        },
    )?;
    let db = collector.db().await?;
    let now = SystemTime::now();

    // The right certificate and token: stored.
    let channel = tls_channel(
        collector.port,
        &pki,
        Some((&pki.client_cert, &pki.client_key)),
    )
    .await?;
    let mut good = IngestClient::new(channel.clone());
    let batch = pairs::batch(1, pairs::pairs(0, 10, now, Duration::from_millis(5)));
    let acks = good
        .push(with_token(tokio_stream::iter(vec![batch.clone()]), TOKEN))
        .await?
        .into_inner()
        .message()
        .await?;
    assert_eq!(acks.map(|a| a.stored), Some(10));

    // Wrong and missing tokens.
    let other = pairs::batch(2, pairs::pairs(100, 5, now, Duration::from_millis(5)));
    let err = good
        .push(with_token(tokio_stream::iter(vec![other.clone()]), "wrong"))
        .await
        .err();
    assert_eq!(err.map(|s| s.code()), Some(Code::Unauthenticated));
    let err = push(&mut good, vec![other.clone()]).await.err();
    assert_eq!(err.map(|s| s.code()), Some(Code::Unauthenticated));

    // A certificate from another CA, and none at all: the TLS handshake fails.
    for identity in [
        Some((pki.rogue_cert.as_path(), pki.rogue_key.as_path())),
        None,
    ] {
        let outcome = match tls_channel(collector.port, &pki, identity).await {
            Err(e) => Err(e.to_string()),
            Ok(channel) => IngestClient::new(channel)
                .push(with_token(tokio_stream::iter(vec![other.clone()]), TOKEN))
                .await
                .map(|_| ())
                .map_err(|s| s.to_string()),
        };
        assert!(
            outcome.is_err(),
            "a client without a valid certificate got through"
        );
    }

    // Malformed protobuf: field 4 (pairs) claims 100 bytes and has 2.
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/tapwire.v1.Ingest/Push");
    let malformed = Bytes::from_static(&[0x08, 0x07, 0x22, 0x64, 0x0a, 0x01]);
    let result = grpc
        .streaming(
            with_token(tokio_stream::iter(vec![malformed]), TOKEN),
            path,
            RawCodec,
        )
        .await;
    let code = match result {
        Err(status) => status.code(),
        Ok(response) => match response.into_inner().message().await {
            Err(status) => status.code(),
            Ok(m) => panic!("malformed batch accepted: {m:?}"),
        },
    };
    assert_eq!(code, Code::InvalidArgument);

    // Oversized: one pair with a 100 KiB body against --max-batch-bytes 65536.
    let mut big = pairs::pairs(200, 1, now, Duration::from_millis(5));
    if let Some(request) = big[0].request.as_mut() {
        request.body = Bytes::from(vec![b'z'; 100 * 1024]);
    }
    let err = good
        .push(with_token(
            tokio_stream::iter(vec![pairs::batch(3, big)]),
            TOKEN,
        ))
        .await
        .map(|r| r.into_inner());
    let code = match err {
        Err(s) => s.code(),
        Ok(mut stream) => match stream.message().await {
            Err(s) => s.code(),
            Ok(m) => panic!("oversized batch accepted: {m:?}"),
        },
    };
    assert!(
        matches!(code, Code::OutOfRange | Code::ResourceExhausted),
        "{code:?}"
    );

    // A pair whose id is not a UUID: the whole batch is refused.
    let mut invalid = pairs::pairs(300, 3, now, Duration::from_millis(5));
    invalid[1].id = "not-a-uuid".into();
    let mut stream = good
        .push(with_token(
            tokio_stream::iter(vec![pairs::batch(4, invalid)]),
            TOKEN,
        ))
        .await?
        .into_inner();
    let err = stream.message().await.err();
    assert_eq!(err.map(|s| s.code()), Some(Code::InvalidArgument));

    assert_eq!(
        count_rows(&db).await?,
        10,
        "only the authenticated valid batch is stored"
    );
    let metrics_free = collector.log_text();
    assert!(metrics_free.contains("batch not stored"), "{metrics_free}");
    drop(db);
    database.drop_database().await;
    Ok(())
}

#[test]
fn refuses_insecure_non_loopback_listen() -> TestResult {
    let dir = tempfile::tempdir()?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tapwire-collector"))
        .args([
            "--listen",
            "0.0.0.0:0",
            "--database-url",
            "postgres://nobody@127.0.0.1:1/x",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to listen"), "{stderr}");
    Ok(())
}
