//! What the exporter is told: where the collector is, how to authenticate, how to batch,
//! where to spool and how hard to retry.

use std::path::PathBuf;
use std::time::Duration;

/// When a batch closes: whichever limit is reached first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Pairs per batch.
    pub max_pairs: usize,
    /// Encoded bytes per batch (before compression). Keep it under the collector's
    /// maximum decoding size, or the collector rejects the batch.
    pub max_bytes: usize,
    /// How long the first pair of a batch may wait for others; bounds end-to-end delay.
    pub max_delay: Duration,
}

impl Default for BatchLimits {
    /// 1000 pairs, 4 MiB or 500 ms: end-to-end delay stays well under 2 s.
    fn default() -> Self {
        Self {
            max_pairs: 1000,
            max_bytes: 4 << 20,
            max_delay: Duration::from_millis(500),
        }
    }
}

/// gRPC message compression used on the `Push` stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// zstd: the best ratio per CPU second for headers and JSON bodies.
    #[default]
    Zstd,
    /// gzip, for collectors or proxies that only know it.
    Gzip,
    /// No compression (loopback, benchmarks).
    None,
}

/// Exponential backoff bounds between reconnect attempts (full jitter is applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffBounds {
    /// The first delay after a failure.
    pub min: Duration,
    /// The delay never grows beyond this.
    pub max: Duration,
}

impl Default for BackoffBounds {
    fn default() -> Self {
        Self {
            min: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

/// TLS material for `https://` collectors (PEM files).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificate(s) that signed the collector's certificate; without it the roots
    /// compiled into tonic (if any) are used.
    pub ca: Option<PathBuf>,
    /// Client certificate for mutual TLS (requires `key`).
    pub cert: Option<PathBuf>,
    /// Client private key for mutual TLS (requires `cert`).
    pub key: Option<PathBuf>,
    /// The name to verify in the collector's certificate, when it differs from the URL host.
    pub domain: Option<String>,
}

/// Everything [`crate::export::Exporter::start`] needs.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    /// `http://host:port` or `https://host:port`.
    pub collector_url: String,
    /// Sent as `authorization: Bearer <token>` on every stream.
    pub token: Option<String>,
    /// TLS files, used when the URL is `https://`.
    pub tls: TlsFiles,
    /// Stable agent id; when `None` it is read from (or created in) the spool folder so it
    /// survives restarts, or generated per process without a spool folder.
    pub agent_id: Option<String>,
    /// The node name stamped on every batch.
    pub node: String,
    /// When batches close.
    pub batch: BatchLimits,
    /// Compression of the `Push` stream.
    pub compression: Compression,
    /// On-disk spool folder; `None` keeps unacknowledged batches in memory only (lost on
    /// restart, still bounded by `spool_max_bytes`).
    pub spool_dir: Option<PathBuf>,
    /// Upper bound of the spool (disk or memory); when full the oldest batches are dropped.
    pub spool_max_bytes: u64,
    /// How many spooled bytes are also kept in memory so sending does not re-read the disk.
    pub memory_cache_bytes: u64,
    /// Pairs waiting between `submit` and the batcher; beyond this `submit` drops the pair.
    pub queue_pairs: usize,
    /// Batches sent but not yet acknowledged, per stream.
    pub max_in_flight: usize,
    /// Reconnect backoff.
    pub backoff: BackoffBounds,
    /// Connecting gives up after this long (then backs off and retries).
    pub connect_timeout: Duration,
    /// A batch not acknowledged within this long means the collector is stuck: reconnect.
    pub ack_timeout: Duration,
    /// `shutdown` waits at most this long for outstanding batches to be acknowledged.
    pub shutdown_timeout: Duration,
}

impl ExportConfig {
    /// A configuration with the defaults for everything but the collector's URL and node.
    pub fn new(collector_url: impl Into<String>, node: impl Into<String>) -> Self {
        Self {
            collector_url: collector_url.into(),
            token: None,
            tls: TlsFiles::default(),
            agent_id: None,
            node: node.into(),
            batch: BatchLimits::default(),
            compression: Compression::default(),
            spool_dir: None,
            spool_max_bytes: 256 << 20,
            memory_cache_bytes: 32 << 20,
            queue_pairs: 16_384,
            max_in_flight: 8,
            backoff: BackoffBounds::default(),
            connect_timeout: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}
