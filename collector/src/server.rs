//! The gRPC server: ingest (and the query service), gRPC health and reflection, TLS and the
//! bearer token, compression and the batch size limit.

use std::sync::Arc;

use anyhow::Context;
use tapwire_proto::v1::{
    FILE_DESCRIPTOR_SET, ingest_server::IngestServer, query_server::QueryServer,
};
use tokio::sync::watch;
use tonic::{
    codec::CompressionEncoding,
    service::interceptor::InterceptedService,
    transport::{Server, server::TcpIncoming},
};

use crate::{
    auth::{server_tls_config, token_interceptor},
    config::Config,
    ingest::{BatchWriter, IngestService},
    metrics::CollectorMetrics,
    query::QueryService,
    storage::Stores,
};

/// Largest accepted query request.
const QUERY_MAX_REQUEST_BYTES: usize = 4 << 20;

/// Serves gRPC on `config.listen` until `shutdown` turns true, then lets in-flight batches
/// finish and returns.
pub async fn serve(
    config: &Config,
    stores: Arc<Stores>,
    writer: Arc<BatchWriter>,
    metrics: Arc<CollectorMetrics>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let interceptor = token_interceptor(config.token.clone());
    let ingest = IngestServer::new(IngestService::new(writer, metrics, shutdown.clone()))
        .max_decoding_message_size(config.max_batch_bytes)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .send_compressed(CompressionEncoding::Zstd);
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building the reflection service")?;
    // grpcurl and many other clients still speak only the v1alpha reflection protocol.
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .context("building the v1alpha reflection service")?;
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<IngestServer<IngestService>>().await;
    // Query requests are small; batches are the only large messages.
    let mut query_service = QueryService::new(stores);
    for path in &config.descriptor_sets {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading the descriptor set {}", path.display()))?;
        query_service = query_service
            .with_descriptor_set(&bytes)
            .with_context(|| format!("loading the descriptor set {}", path.display()))?;
        tracing::info!(path = %path.display(), "registered gRPC schemas");
    }
    let query = QueryServer::new(query_service)
        .max_decoding_message_size(QUERY_MAX_REQUEST_BYTES)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .send_compressed(CompressionEncoding::Gzip);
    health.set_serving::<QueryServer<QueryService>>().await;

    let mut builder = Server::builder();
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        let tls = server_tls_config(cert, key, config.client_ca.as_deref())?;
        builder = builder.tls_config(tls).context("configuring TLS")?;
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(addr = %config.listen, tls = config.tls_cert.is_some(), token = config.token.is_some(), "gRPC listening");
    let mut stop = shutdown;
    builder
        .add_service(health_service)
        .add_service(InterceptedService::new(reflection, interceptor.clone()))
        .add_service(InterceptedService::new(
            reflection_alpha,
            interceptor.clone(),
        ))
        .add_service(InterceptedService::new(ingest, interceptor.clone()))
        .add_service(InterceptedService::new(query, interceptor))
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        )
        .await
        .context("gRPC server failed")
}
