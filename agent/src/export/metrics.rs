//! The exporter's counters, as prometheus-client metrics like the rest of the agent: cheap
//! atomics to bump on the capture path, registered on the agent's registry with
//! [`ExportMetrics::register`].

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Counters of the exporter, shared by the capture path, the batcher and the sender.
#[derive(Debug, Default)]
pub struct ExportMetrics {
    /// Pairs handed to `submit`.
    pub pairs_submitted: Counter,
    /// Pairs dropped by `submit` because the queue to the batcher was full (or the
    /// exporter was shutting down).
    pub pairs_dropped_queue_full: Counter,
    /// Pairs dropped because the spool was full (the oldest data goes first).
    pub pairs_dropped_spool_full: Counter,
    /// Pairs dropped because the collector rejected their batch as invalid, repeatedly.
    pub pairs_dropped_rejected: Counter,
    /// Pairs dropped because they could not be written to or read from the spool.
    pub pairs_dropped_spool_error: Counter,
    /// Batches closed and spooled.
    pub batches_spooled: Counter,
    /// Batches sent on a stream (resends included).
    pub batches_sent: Counter,
    /// Batches acknowledged by the collector.
    pub batches_acked: Counter,
    /// Pairs the collector acknowledged as newly stored.
    pub pairs_acked_stored: Counter,
    /// Pairs the collector acknowledged as already stored (resends).
    pub pairs_acked_duplicate: Counter,
    /// Streams that ended in an error (connect failures included).
    pub stream_errors: Counter,
    /// Sum of ack latencies in microseconds (send → ack), with `ack_latency_count`.
    pub ack_latency_us_sum: Counter,
    /// Number of ack latencies summed in `ack_latency_us_sum`.
    pub ack_latency_count: Counter,
    /// Bytes currently held by the spool.
    pub spool_bytes: Gauge,
    /// Batches currently held by the spool and not yet acknowledged.
    pub spool_batches: Gauge,
}

impl ExportMetrics {
    /// All pairs dropped for any reason.
    pub fn pairs_dropped(&self) -> u64 {
        self.pairs_dropped_queue_full.get()
            + self.pairs_dropped_spool_full.get()
            + self.pairs_dropped_rejected.get()
            + self.pairs_dropped_spool_error.get()
    }

    /// Registers every metric on `registry` under `export_…` names.
    pub fn register(&self, registry: &mut Registry) {
        let counters: [(&str, &str, &Counter); 13] = [
            (
                "export_pairs_submitted",
                "Pairs handed to the exporter",
                &self.pairs_submitted,
            ),
            (
                "export_pairs_dropped_queue_full",
                "Pairs dropped because the exporter's queue was full",
                &self.pairs_dropped_queue_full,
            ),
            (
                "export_pairs_dropped_spool_full",
                "Pairs dropped (oldest first) because the spool was full",
                &self.pairs_dropped_spool_full,
            ),
            (
                "export_pairs_dropped_rejected",
                "Pairs dropped because the collector kept rejecting their batch",
                &self.pairs_dropped_rejected,
            ),
            (
                "export_pairs_dropped_spool_error",
                "Pairs dropped because of spool I/O errors",
                &self.pairs_dropped_spool_error,
            ),
            (
                "export_batches_spooled",
                "Batches closed and spooled",
                &self.batches_spooled,
            ),
            (
                "export_batches_sent",
                "Batches sent, resends included",
                &self.batches_sent,
            ),
            (
                "export_batches_acked",
                "Batches acknowledged by the collector",
                &self.batches_acked,
            ),
            (
                "export_pairs_acked_stored",
                "Pairs the collector stored",
                &self.pairs_acked_stored,
            ),
            (
                "export_pairs_acked_duplicate",
                "Pairs the collector already had (resends)",
                &self.pairs_acked_duplicate,
            ),
            (
                "export_stream_errors",
                "Push streams that ended in an error",
                &self.stream_errors,
            ),
            (
                "export_ack_latency_microseconds_sum",
                "Sum of batch ack latencies",
                &self.ack_latency_us_sum,
            ),
            (
                "export_ack_latency_count",
                "Batch ack latencies summed",
                &self.ack_latency_count,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "export_spool_bytes",
            "Bytes held by the spool",
            self.spool_bytes.clone(),
        );
        registry.register(
            "export_spool_batches",
            "Unacknowledged batches held by the spool",
            self.spool_batches.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_metrics_appear_in_the_exposition() {
        let metrics = ExportMetrics::default();
        metrics.pairs_dropped_spool_full.inc_by(7);
        metrics.spool_bytes.set(4096);
        let mut registry = Registry::with_prefix("tapwire_agent");
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(
            text.contains("tapwire_agent_export_pairs_dropped_spool_full_total 7"),
            "{text}"
        );
        assert!(
            text.contains("tapwire_agent_export_spool_bytes 4096"),
            "{text}"
        );
        assert_eq!(metrics.pairs_dropped(), 7);
    }
}
