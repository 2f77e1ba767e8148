//! Prometheus metrics and the health endpoint (`--metrics-addr`).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::{Router, http::header::CONTENT_TYPE, response::IntoResponse, routing::get};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tracing::{info, warn};

type Labels = [(&'static str, &'static str); 1];

/// Every metric the agent exports.
pub struct AgentMetrics {
    registry: Registry,
    /// Kernel events received, by kind.
    pub events: Family<Labels, Counter>,
    /// Payload bytes captured, by direction.
    pub bytes_captured: Family<Labels, Counter>,
    /// Bytes the kernel saw moved but did not copy (over the capture cap).
    pub bytes_uncaptured: Counter,
    /// Kernel-side drops, by reason.
    pub kernel_drops: Family<Labels, Counter>,
    /// Kernel events lost (per-connection sequence gaps).
    pub events_lost: Counter,
    /// Records read ahead of an earlier record of their connection (in another ring) and
    /// held until it arrived.
    pub events_reordered: Counter,
    /// Held records handed on early because the reorder buffer was full.
    pub events_reorder_forced: Counter,
    /// Bytes of records held for reordering now.
    pub reorder_held_bytes: Gauge,
    /// Records user space could not decode.
    pub decode_errors: Counter,
    /// Connections currently tracked.
    pub connections: Gauge,
    /// Connections seen in total.
    pub connections_opened: Counter,
    /// Programs attached (tracepoints and uprobes).
    pub probes_attached: Gauge,
    /// TLS library files with probes attached.
    pub tls_libraries: Gauge,
    last_drops: [AtomicU64; tapwire_agent_common::drop_reason::COUNT as usize],
}

/// Names of the kernel drop reasons, indexed like the `DROPS` map.
pub const DROP_REASONS: [&str; tapwire_agent_common::drop_reason::COUNT as usize] = [
    "ring_full",
    "copy_failed",
    "tls_no_socket",
    "state_full",
    "truncated",
];

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentMetrics {
    /// Creates and registers all metrics.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tapwire_agent");
        let m = Self {
            events: Family::default(),
            bytes_captured: Family::default(),
            bytes_uncaptured: Counter::default(),
            kernel_drops: Family::default(),
            events_lost: Counter::default(),
            events_reordered: Counter::default(),
            events_reorder_forced: Counter::default(),
            reorder_held_bytes: Gauge::default(),
            decode_errors: Counter::default(),
            connections: Gauge::default(),
            connections_opened: Counter::default(),
            probes_attached: Gauge::default(),
            tls_libraries: Gauge::default(),
            last_drops: Default::default(),
            registry: Registry::default(),
        };
        registry.register(
            "events",
            "Kernel events received, by kind",
            m.events.clone(),
        );
        registry.register(
            "bytes_captured",
            "Payload bytes captured",
            m.bytes_captured.clone(),
        );
        registry.register(
            "bytes_uncaptured",
            "Bytes transferred but not copied (over the capture cap)",
            m.bytes_uncaptured.clone(),
        );
        registry.register(
            "kernel_drops",
            "Kernel-side drops by reason",
            m.kernel_drops.clone(),
        );
        registry.register(
            "events_lost",
            "Kernel events lost (sequence gaps)",
            m.events_lost.clone(),
        );
        registry.register(
            "events_reordered",
            "Records held until an earlier record of their connection, read from another ring, arrived",
            m.events_reordered.clone(),
        );
        registry.register(
            "events_reorder_forced",
            "Held records handed on early because the reorder buffer was full",
            m.events_reorder_forced.clone(),
        );
        registry.register(
            "reorder_held_bytes",
            "Bytes of records held for reordering",
            m.reorder_held_bytes.clone(),
        );
        registry.register(
            "decode_errors",
            "Undecodable ring records",
            m.decode_errors.clone(),
        );
        registry.register(
            "connections",
            "Connections tracked now",
            m.connections.clone(),
        );
        registry.register(
            "connections_opened",
            "Connections seen",
            m.connections_opened.clone(),
        );
        registry.register(
            "probes_attached",
            "Attached programs",
            m.probes_attached.clone(),
        );
        registry.register(
            "tls_libraries",
            "TLS libraries probed",
            m.tls_libraries.clone(),
        );
        Self { registry, ..m }
    }

    /// The registry, for other parts of the agent (the exporter) to add their metrics to
    /// the same endpoint.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Updates the drop counters from the kernel's cumulative per-reason totals.
    pub fn observe_kernel_drops(&self, totals: &[u64]) {
        for (i, total) in totals.iter().enumerate().take(DROP_REASONS.len()) {
            let previous = self.last_drops[i].swap(*total, Ordering::Relaxed);
            if *total > previous {
                self.kernel_drops
                    .get_or_create(&[("reason", DROP_REASONS[i])])
                    .inc_by(total - previous);
            }
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if let Err(e) = encode(&mut text, &self.registry) {
            warn!(error = %e, "encoding metrics failed");
        }
        text
    }
}

/// Serves `/metrics` and `/healthz` on `addr` until the process exits.
pub async fn serve(addr: SocketAddr, metrics: Arc<AgentMetrics>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    info!(%addr, "metrics listening");
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.render(),
                    )
                        .into_response()
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }));
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_drop_deltas_and_gauges() {
        let m = AgentMetrics::new();
        m.observe_kernel_drops(&[2, 0, 0, 0, 5]);
        m.observe_kernel_drops(&[3, 0, 0, 0, 5]);
        m.connections.set(4);
        let text = m.render();
        assert!(
            text.contains("tapwire_agent_kernel_drops_total{reason=\"ring_full\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("tapwire_agent_kernel_drops_total{reason=\"truncated\"} 5"),
            "{text}"
        );
        assert!(text.contains("tapwire_agent_connections 4"), "{text}");
    }
}
