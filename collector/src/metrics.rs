//! Prometheus metrics of the collector and the `/metrics` + `/healthz` HTTP endpoint.

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};

use crate::storage::Stores;

/// The collector's counters and histograms, registered in their own registry.
pub struct CollectorMetrics {
    registry: Registry,
    /// Batches made durable and acknowledged.
    pub batches: IntCounter,
    /// Pairs newly stored.
    pub pairs_stored: IntCounter,
    /// Pairs received again and skipped (resends).
    pub pairs_duplicate: IntCounter,
    /// Failed requests, by kind (`invalid`, `storage`, `transport`).
    pub errors: IntCounterVec,
    /// Time from a batch's arrival to its acknowledgement.
    pub batch_seconds: Histogram,
}

impl CollectorMetrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("tapwire_collector".into()), None)?;
        let batches = IntCounter::new("batches_total", "Batches made durable and acknowledged")?;
        let pairs_stored = IntCounter::new("pairs_stored_total", "Pairs newly stored")?;
        let pairs_duplicate =
            IntCounter::new("pairs_duplicate_total", "Pairs received again and skipped")?;
        let errors = IntCounterVec::new(
            Opts::new("ingest_errors_total", "Failed ingest requests by kind"),
            &["kind"],
        )?;
        let batch_seconds = Histogram::with_opts(
            HistogramOpts::new("ingest_batch_seconds", "Batch arrival to acknowledgement")
                .buckets(prometheus::exponential_buckets(0.001, 2.0, 14)?),
        )?;
        registry.register(Box::new(batches.clone()))?;
        registry.register(Box::new(pairs_stored.clone()))?;
        registry.register(Box::new(pairs_duplicate.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(batch_seconds.clone()))?;
        Ok(Self {
            registry,
            batches,
            pairs_stored,
            pairs_duplicate,
            errors,
            batch_seconds,
        })
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[derive(Clone)]
struct MetricsState {
    metrics: Arc<CollectorMetrics>,
    stores: Arc<Stores>,
}

async fn metrics_page(State(state): State<MetricsState>) -> String {
    state.metrics.render()
}

/// Healthy when the database answers.
async fn healthz(State(state): State<MetricsState>) -> (StatusCode, &'static str) {
    let ok = match state.stores.db.get().await {
        Ok(client) => client.simple_query("SELECT 1").await.is_ok(),
        Err(_) => false,
    };
    if ok {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n")
    }
}

/// Serves `/metrics` and `/healthz` on `addr` until `shutdown` fires.
pub async fn serve_metrics(
    addr: SocketAddr,
    metrics: Arc<CollectorMetrics>,
    stores: Arc<Stores>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(healthz))
        .with_state(MetricsState { metrics, stores });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics endpoint listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
}
