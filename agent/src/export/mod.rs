//! Delivers pairs to the collector at least once: the capture path hands pairs to
//! [`ExportHandle::submit`] (never blocks), a batcher thread closes batches on count, bytes
//! or age and writes them to a bounded spool, and a sender task streams them on one gRPC
//! `Ingest/Push` stream, retiring each batch only when the collector acknowledges it as
//! durable. Failures reconnect with jittered exponential backoff and resend what was not
//! acknowledged; with a spool folder that includes what an agent restart left behind.
//! When the collector is down long enough for the spool to fill, the oldest batches are
//! dropped, counted in [`ExportMetrics`] and logged.

mod args;
mod backoff;
mod batcher;
mod codec;
mod config;
mod metrics;
mod sender;
mod spool;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tapwire_proto::v1::Pair;
use tokio::sync::{Notify, watch};
use tonic::codec::CompressionEncoding;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

pub use args::ExportArgs;
pub use config::{BackoffBounds, BatchLimits, Compression, ExportConfig, TlsFiles};
pub use metrics::ExportMetrics;
pub use spool::{AppendOutcome, Spool, SpoolError, SpoolLimits, SpooledBatch};

use batcher::BatcherTask;
use sender::{SenderTask, lock};

#[cfg(test)]
mod exporter_tests;

const AGENT_ID_FILE: &str = "agent-id";

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The collector URL is not a valid `http(s)://host:port` URI.
    #[error("invalid collector URL {url:?}: {source}")]
    Url {
        /// The URL given.
        url: String,
        /// What tonic said.
        source: tonic::transport::Error,
    },
    /// A TLS file is missing or unreadable, or the TLS settings are inconsistent.
    #[error("TLS settings: {0}")]
    Tls(String),
    /// The token cannot be sent as an HTTP header.
    #[error("the token contains characters not allowed in an HTTP header")]
    Token,
    /// The spool folder cannot be used.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The agent id file in the spool folder cannot be read or written.
    #[error("agent id file {path}: {source}")]
    AgentId {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `start` was called outside a tokio runtime, or a thread could not be spawned.
    #[error("cannot start the exporter's tasks: {0}")]
    Runtime(String),
}

/// Submits pairs for export; cheap to clone, safe to call from any thread.
#[derive(Debug, Clone)]
pub struct ExportHandle {
    pairs: SyncSender<Pair>,
    closing: Arc<AtomicBool>,
    metrics: Arc<ExportMetrics>,
}

impl ExportHandle {
    /// Queues a pair for export without ever blocking. Returns false when the pair was
    /// dropped (queue full because the spool cannot keep up, or the exporter shut down);
    /// drops are counted in `pairs_dropped_queue_full`.
    pub fn submit(&self, pair: Pair) -> bool {
        self.metrics.pairs_submitted.inc_by(1);
        if self.closing.load(Ordering::Relaxed) {
            self.metrics.pairs_dropped_queue_full.inc_by(1);
            return false;
        }
        match self.pairs.try_send(pair) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                let dropped = self.metrics.pairs_dropped_queue_full.inc() + 1;
                // Logged at powers of two: visible, but never a log flood on the hot path.
                if dropped.is_power_of_two() {
                    tracing::warn!(dropped_total = dropped, "export queue full: dropping pairs");
                }
                false
            }
        }
    }

    /// The exporter's counters.
    pub fn metrics(&self) -> &Arc<ExportMetrics> {
        &self.metrics
    }
}

/// What was left undelivered at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Batches not acknowledged (kept in the spool folder for the next start, if any).
    pub unacked_batches: usize,
    /// Pairs in those batches.
    pub unacked_pairs: u64,
    /// True when the wait hit `shutdown_timeout`.
    pub timed_out: bool,
}

/// The running exporter; [`Exporter::shutdown`] flushes it.
#[derive(Debug)]
pub struct Exporter {
    agent_id: String,
    closing: Arc<AtomicBool>,
    batcher: Option<std::thread::JoinHandle<()>>,
    stop: watch::Sender<bool>,
    spooled: Arc<Notify>,
    sender: tokio::task::JoinHandle<()>,
    spool: Arc<Mutex<Spool>>,
    persistent: bool,
    metrics: Arc<ExportMetrics>,
    shutdown_timeout: Duration,
}

impl Exporter {
    /// Opens the spool (resending what a previous run left unacknowledged), starts the
    /// batcher thread and the sender task. Must be called inside a tokio runtime.
    pub fn start(config: ExportConfig) -> Result<(Exporter, ExportHandle), ExportError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| ExportError::Runtime(e.to_string()))?;
        let endpoint = endpoint(&config)?;
        let authorization = config
            .token
            .as_ref()
            .map(|t| {
                MetadataValue::<Ascii>::try_from(format!("Bearer {t}"))
                    .map_err(|_| ExportError::Token)
            })
            .transpose()?;
        let limits = SpoolLimits::for_total(config.spool_max_bytes, config.memory_cache_bytes);
        let spool = match &config.spool_dir {
            Some(dir) => Spool::open(dir, limits)?,
            None => Spool::in_memory(limits),
        };
        let agent_id = match (&config.agent_id, &config.spool_dir) {
            (Some(id), _) => id.clone(),
            (None, Some(dir)) => persistent_agent_id(dir)?,
            (None, None) => uuid::Uuid::now_v7().to_string(),
        };
        if !spool.is_empty() {
            tracing::info!(
                batches = spool.len(),
                pairs = spool.pending_pairs(),
                "resending batches spooled by a previous run"
            );
        }
        let metrics = Arc::new(ExportMetrics::default());
        metrics.spool_bytes.set((spool.bytes()) as i64);
        metrics.spool_batches.set((spool.len() as u64) as i64);
        let spool = Arc::new(Mutex::new(spool));
        let spooled = Arc::new(Notify::new());
        let closing = Arc::new(AtomicBool::new(false));
        let (pairs_tx, pairs_rx) = std::sync::mpsc::sync_channel(config.queue_pairs.max(1));

        let batcher = BatcherTask {
            limits: config.batch,
            agent_id: agent_id.clone(),
            node: config.node.clone(),
            pairs: pairs_rx,
            closing: closing.clone(),
            spool: spool.clone(),
            spooled: spooled.clone(),
            metrics: metrics.clone(),
        };
        let batcher = std::thread::Builder::new()
            .name("tapwire-export-batcher".into())
            .spawn(move || batcher.run())
            .map_err(|e| ExportError::Runtime(format!("batcher thread: {e}")))?;

        let (stop, stop_rx) = watch::channel(false);
        let sender = SenderTask {
            endpoint,
            authorization,
            compression: match config.compression {
                Compression::Zstd => Some(CompressionEncoding::Zstd),
                Compression::Gzip => Some(CompressionEncoding::Gzip),
                Compression::None => None,
            },
            spool: spool.clone(),
            spooled: spooled.clone(),
            metrics: metrics.clone(),
            backoff: config.backoff,
            max_in_flight: config.max_in_flight.max(1),
            ack_timeout: config.ack_timeout,
            connect_timeout: config.connect_timeout,
            stop: stop_rx,
        };
        let sender = runtime.spawn(sender.run());
        tracing::info!(collector = %config.collector_url, %agent_id, spool = ?config.spool_dir, "exporter started");
        let handle = ExportHandle {
            pairs: pairs_tx,
            closing: closing.clone(),
            metrics: metrics.clone(),
        };
        let exporter = Exporter {
            agent_id,
            closing,
            batcher: Some(batcher),
            stop,
            spooled,
            sender,
            spool,
            persistent: config.spool_dir.is_some(),
            metrics,
            shutdown_timeout: config.shutdown_timeout,
        };
        Ok((exporter, handle))
    }

    /// The agent id stamped on every batch.
    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    /// The exporter's counters.
    pub fn metrics(&self) -> &Arc<ExportMetrics> {
        &self.metrics
    }

    /// Stops accepting pairs, closes the open batch, and waits up to `shutdown_timeout`
    /// for every spooled batch to be acknowledged. What is left stays in the spool folder
    /// (resent at the next start) or, without one, is lost and reported.
    pub async fn shutdown(mut self) -> ShutdownReport {
        self.closing.store(true, Ordering::Release);
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        if let Some(batcher) = self.batcher.take() {
            // The batcher notices `closing` within its poll interval and flushes.
            if let Err(error) = tokio::task::spawn_blocking(move || batcher.join()).await {
                tracing::error!(%error, "export batcher did not stop cleanly");
            }
        }
        let _ = self.stop.send(true);
        self.spooled.notify_one();
        let timed_out = tokio::time::timeout_at(deadline, &mut self.sender)
            .await
            .is_err();
        if timed_out {
            self.sender.abort();
        }
        let spool = lock(&self.spool);
        let report = ShutdownReport {
            unacked_batches: spool.len(),
            unacked_pairs: spool.pending_pairs(),
            timed_out,
        };
        if report.unacked_batches > 0 {
            if self.persistent {
                tracing::warn!(
                    batches = report.unacked_batches,
                    pairs = report.unacked_pairs,
                    "collector did not acknowledge everything before shutdown; kept in the spool for the next start"
                );
            } else {
                tracing::error!(
                    batches = report.unacked_batches,
                    pairs = report.unacked_pairs,
                    "collector did not acknowledge everything before shutdown and there is no spool folder: these pairs are lost"
                );
            }
        }
        report
    }
}

impl Drop for Exporter {
    /// Without `shutdown`, the batcher and sender still stop (without waiting for acks).
    fn drop(&mut self) {
        self.closing.store(true, Ordering::Release);
    }
}

fn endpoint(config: &ExportConfig) -> Result<Endpoint, ExportError> {
    let url = config.collector_url.clone();
    let mut endpoint = Endpoint::from_shared(url.clone())
        .map_err(|source| ExportError::Url {
            url: url.clone(),
            source,
        })?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let https = url.starts_with("https://");
    let tls = &config.tls;
    if !https {
        if tls.ca.is_some() || tls.cert.is_some() || tls.key.is_some() {
            return Err(ExportError::Tls(format!(
                "TLS files given but the collector URL {url} is not https://"
            )));
        }
        return Ok(endpoint);
    }
    let read = |path: &Path| {
        std::fs::read(path)
            .map_err(|e| ExportError::Tls(format!("cannot read {}: {e}", path.display())))
    };
    let mut client = ClientTlsConfig::new();
    client = match &tls.ca {
        Some(ca) => client.ca_certificate(Certificate::from_pem(read(ca)?)),
        None => client.with_enabled_roots(),
    };
    client = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => client.identity(Identity::from_pem(read(cert)?, read(key)?)),
        (None, None) => client,
        _ => {
            return Err(ExportError::Tls(
                "mutual TLS needs both a client certificate and its key".into(),
            ));
        }
    };
    if let Some(domain) = &tls.domain {
        client = client.domain_name(domain.clone());
    }
    endpoint = endpoint
        .tls_config(client)
        .map_err(|e| ExportError::Tls(e.to_string()))?;
    Ok(endpoint)
}

/// Reads the agent id kept in the spool folder, creating it on first start.
fn persistent_agent_id(dir: &Path) -> Result<String, ExportError> {
    let path = dir.join(AGENT_ID_FILE);
    let err = |source| ExportError::AgentId {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let id = uuid::Uuid::now_v7().to_string();
    let tmp = dir.join(format!("{AGENT_ID_FILE}.tmp"));
    std::fs::write(&tmp, &id).map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)?;
    Ok(id)
}
