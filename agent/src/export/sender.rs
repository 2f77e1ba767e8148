//! Streams spooled batches to the collector on one `Push` stream and retires them from the
//! spool when acknowledged. Any failure (connect, stream error, silence) ends the stream;
//! after a jittered exponential backoff a new stream resends everything not acknowledged,
//! which is safe because the collector is idempotent by pair id.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tapwire_proto::v1::Ack;
use tokio::sync::{Notify, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::CompressionEncoding;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Endpoint;
use tonic::{Code, Request, Status};

use super::backoff::Backoff;
use super::codec::EncodedBatchCodec;
use super::config::BackoffBounds;
use super::metrics::ExportMetrics;
use super::spool::{Spool, SpoolError, SpooledBatch};

const PUSH_PATH: &str = "/tapwire.v1.Ingest/Push";
/// A batch the collector refuses this many times in a row as invalid is dropped, so one
/// bad batch cannot stop delivery forever.
const MAX_REJECTIONS: u32 = 3;

/// Why a stream ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamError {
    #[error("cannot connect to the collector: {0}")]
    Connect(#[source] tonic::transport::Error),
    #[error("collector answered {}: {}", .0.code(), .0.message())]
    Status(#[source] Status),
    #[error("collector closed the stream")]
    Closed,
    #[error("no ack for batch {0} within the ack timeout")]
    AckTimeout(u64),
    #[error("collector did not answer in time while {0}")]
    Timeout(&'static str),
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("spool task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Locks the spool, also after a panic elsewhere: its state is updated atomically per call.
pub(crate) fn lock(spool: &Mutex<Spool>) -> MutexGuard<'_, Spool> {
    match spool.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

struct InFlight {
    sequence: u64,
    pairs: u32,
    sent: Instant,
}

/// The async task that owns the connection to the collector.
pub(crate) struct SenderTask {
    pub(crate) endpoint: Endpoint,
    pub(crate) authorization: Option<MetadataValue<Ascii>>,
    pub(crate) compression: Option<CompressionEncoding>,
    pub(crate) spool: Arc<Mutex<Spool>>,
    pub(crate) spooled: Arc<Notify>,
    pub(crate) metrics: Arc<ExportMetrics>,
    pub(crate) backoff: BackoffBounds,
    pub(crate) max_in_flight: usize,
    pub(crate) ack_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    /// Becomes true at shutdown: send what is spooled, then stop.
    pub(crate) stop: watch::Receiver<bool>,
}

impl SenderTask {
    /// Runs until shutdown is requested and the spool is empty (the caller bounds the wait).
    pub(crate) async fn run(mut self) {
        let mut backoff = Backoff::new(self.backoff);
        let mut rejected: Option<(u64, u32)> = None;
        loop {
            if *self.stop.borrow() && lock(&self.spool).is_empty() {
                break;
            }
            if self.stop.has_changed().is_err() {
                // The exporter was dropped without `shutdown`: nobody waits for delivery.
                break;
            }
            let error = match self.stream(&mut backoff).await {
                Ok(()) => break,
                Err(error) => error,
            };
            self.metrics.stream_errors.inc_by(1);
            if let StreamError::Status(status) = &error {
                rejected = self.handle_rejection(status, rejected).await;
            }
            let delay = backoff.next_delay();
            tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "collector stream ended; will resend unacknowledged batches");
            tokio::time::sleep(delay).await;
        }
        tracing::debug!("export sender stopped");
    }

    /// Drops the first unacknowledged batch when the collector refused it as invalid
    /// `MAX_REJECTIONS` times in a row; returns the updated (sequence, count).
    async fn handle_rejection(
        &self,
        status: &Status,
        previous: Option<(u64, u32)>,
    ) -> Option<(u64, u32)> {
        match status.code() {
            Code::InvalidArgument | Code::ResourceExhausted | Code::OutOfRange => {}
            Code::Unauthenticated | Code::PermissionDenied => {
                tracing::error!(
                    message = status.message(),
                    "collector refuses this agent's credentials (check --token / --cert)"
                );
                return previous;
            }
            _ => return previous,
        }
        let first = lock(&self.spool).first_pending()?;
        let count = match previous {
            Some((sequence, count)) if sequence == first => count + 1,
            _ => 1,
        };
        if count < MAX_REJECTIONS {
            return Some((first, count));
        }
        let spool = self.spool.clone();
        match tokio::task::spawn_blocking(move || lock(&spool).discard(first)).await {
            Ok(Ok(Some(pairs))) => {
                self.metrics.pairs_dropped_rejected.inc_by(u64::from(pairs));
                tracing::error!(sequence = first, pairs, code = %status.code(), message = status.message(),
                    "collector refused this batch {MAX_REJECTIONS} times; dropping it");
            }
            Ok(Ok(None)) => {}
            Ok(Err(error)) => tracing::error!(%error, "cannot drop a refused batch from the spool"),
            Err(error) => tracing::error!(%error, "spool task failed"),
        }
        None
    }

    /// One `Push` stream: returns `Ok` only when shutdown was requested and all is acked.
    async fn stream(&mut self, backoff: &mut Backoff) -> Result<(), StreamError> {
        // A black-holed network accepts nothing and resets nothing: every step that waits
        // on the collector is bounded, so a partition ends in a reconnect, never a hang.
        let setup = tokio::time::timeout(self.connect_timeout, async {
            let channel = self
                .endpoint
                .connect()
                .await
                .map_err(StreamError::Connect)?;
            let mut grpc = tonic::client::Grpc::new(channel);
            if let Some(encoding) = self.compression {
                grpc = grpc.send_compressed(encoding).accept_compressed(encoding);
            }
            grpc.ready().await.map_err(StreamError::Connect)?;
            Ok::<_, StreamError>(grpc)
        });
        let mut grpc = setup
            .await
            .map_err(|_| StreamError::Timeout("connecting"))??;

        let (frames, frames_rx) = mpsc::channel::<Bytes>(self.max_in_flight.max(1));
        let mut in_flight = VecDeque::new();
        let mut cursor = 0u64;
        // Queue the first batches before the call so they travel right behind the headers.
        self.fill(&frames, &mut in_flight, &mut cursor).await?;
        let mut request = Request::new(ReceiverStream::new(frames_rx));
        if let Some(auth) = &self.authorization {
            request.metadata_mut().insert("authorization", auth.clone());
        }
        let call = grpc.streaming(
            request,
            PathAndQuery::from_static(PUSH_PATH),
            EncodedBatchCodec,
        );
        let response = tokio::time::timeout(self.ack_timeout, call)
            .await
            .map_err(|_| StreamError::Timeout("opening the Push stream"))?
            .map_err(StreamError::Status)?;
        let mut acks = response.into_inner();
        tracing::info!(endpoint = %self.endpoint.uri(), resending = in_flight.len(), "connected to the collector");

        loop {
            self.fill(&frames, &mut in_flight, &mut cursor).await?;
            let stopping = *self.stop.borrow();
            if stopping && in_flight.is_empty() && lock(&self.spool).is_empty() {
                return Ok(());
            }
            let deadline = in_flight
                .front()
                .map(|f: &InFlight| tokio::time::Instant::from_std(f.sent + self.ack_timeout));
            let oldest = in_flight.front().map_or(0, |f| f.sequence);
            tokio::select! {
                ack = acks.message() => match ack {
                    Ok(Some(ack)) => self.on_ack(ack, &mut in_flight, backoff).await?,
                    Ok(None) => return Err(StreamError::Closed),
                    Err(status) => return Err(StreamError::Status(status)),
                },
                () = self.spooled.notified(), if in_flight.len() < self.max_in_flight => {}
                changed = self.stop.changed(), if !stopping => {
                    if changed.is_err() {
                        // The exporter is gone without shutdown: nobody waits for us.
                        return Ok(());
                    }
                }
                () = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                    return Err(StreamError::AckTimeout(oldest));
                }
            }
        }
    }

    /// Sends spooled batches after `cursor` until the in-flight window is full.
    async fn fill(
        &self,
        frames: &mpsc::Sender<Bytes>,
        in_flight: &mut VecDeque<InFlight>,
        cursor: &mut u64,
    ) -> Result<(), StreamError> {
        while in_flight.len() < self.max_in_flight {
            let Some(batch) = self.read_next(*cursor).await? else {
                break;
            };
            *cursor = batch.sequence + 1;
            // Never waits: every queued frame is also in flight, and the queue holds
            // `max_in_flight` frames.
            frames
                .try_send(batch.data)
                .map_err(|_| StreamError::Closed)?;
            in_flight.push_back(InFlight {
                sequence: batch.sequence,
                pairs: batch.pairs,
                sent: Instant::now(),
            });
            self.metrics.batches_sent.inc_by(1);
        }
        Ok(())
    }

    /// The next spooled batch at or after `from`; a corrupt record is dropped and counted
    /// rather than blocking delivery of everything behind it.
    async fn read_next(&self, mut from: u64) -> Result<Option<SpooledBatch>, StreamError> {
        loop {
            let spool = self.spool.clone();
            let read = tokio::task::spawn_blocking(move || lock(&spool).next_from(from)).await?;
            match read {
                Err(SpoolError::Corrupt { sequence, path }) => {
                    let spool = self.spool.clone();
                    let pairs = tokio::task::spawn_blocking(move || lock(&spool).discard(sequence))
                        .await??;
                    let pairs = pairs.unwrap_or(0);
                    self.metrics
                        .pairs_dropped_spool_error
                        .inc_by(u64::from(pairs));
                    tracing::error!(sequence, pairs, path = %path.display(), "corrupt spooled batch dropped");
                    from = sequence + 1;
                }
                other => return Ok(other?),
            }
        }
    }

    async fn on_ack(
        &self,
        ack: Ack,
        in_flight: &mut VecDeque<InFlight>,
        backoff: &mut Backoff,
    ) -> Result<(), StreamError> {
        let Some(index) = in_flight.iter().position(|f| f.sequence == ack.sequence) else {
            tracing::debug!(
                sequence = ack.sequence,
                "ack for a batch not in flight (already dropped?)"
            );
            return Ok(());
        };
        let Some(done) = in_flight.remove(index) else {
            return Ok(());
        };
        let latency_us = done.sent.elapsed().as_micros() as u64;
        let total = u64::from(ack.stored) + u64::from(ack.duplicates);
        if total != u64::from(done.pairs) {
            tracing::warn!(
                sequence = ack.sequence,
                sent = done.pairs,
                stored = ack.stored,
                duplicates = ack.duplicates,
                "collector acknowledged a different number of pairs than sent"
            );
        }
        let spool = self.spool.clone();
        let sequence = ack.sequence;
        let (bytes, batches) = tokio::task::spawn_blocking(move || {
            let mut spool = lock(&spool);
            spool.ack(sequence).map(|_| (spool.bytes(), spool.len()))
        })
        .await??;
        let m = &self.metrics;
        m.batches_acked.inc_by(1);
        m.pairs_acked_stored.inc_by(u64::from(ack.stored));
        m.pairs_acked_duplicate.inc_by(u64::from(ack.duplicates));
        m.ack_latency_us_sum.inc_by(latency_us);
        m.ack_latency_count.inc_by(1);
        m.spool_bytes.set((bytes) as i64);
        m.spool_batches.set((batches as u64) as i64);
        backoff.reset();
        Ok(())
    }
}
