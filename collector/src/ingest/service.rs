//! The tonic `Ingest` service: one `Push` stream per agent, batches stored in order, each
//! acknowledged once durable.

use std::{pin::Pin, sync::Arc, time::Instant};

use futures::Stream;
use tapwire_proto::v1::{Ack, Batch, ingest_server::Ingest};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};

use super::{BatchWriter, pipeline::WriteError};
use crate::metrics::CollectorMetrics;

/// Acks buffered per stream before the stream stops reading (backpressure on the agent).
const ACK_BUFFER: usize = 16;

/// Serves `Ingest.Push`.
pub struct IngestService {
    writer: Arc<BatchWriter>,
    metrics: Arc<CollectorMetrics>,
    shutdown: watch::Receiver<bool>,
}

impl IngestService {
    /// A service storing through `writer`; streams end (after their current batch) when
    /// `shutdown` turns true.
    pub fn new(
        writer: Arc<BatchWriter>,
        metrics: Arc<CollectorMetrics>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            writer,
            metrics,
            shutdown,
        }
    }
}

fn storage_status(error: &WriteError) -> Status {
    if error.is_transient() {
        Status::unavailable(format!("batch not stored, retry later: {error}"))
    } else {
        Status::invalid_argument(format!("batch rejected: {error}"))
    }
}

/// Decoding failures surface from tonic as `Internal`; to the agent they are a bad request.
fn transport_status(status: Status) -> Status {
    match status.code() {
        Code::Internal => {
            Status::invalid_argument(format!("malformed batch: {}", status.message()))
        }
        _ => status,
    }
}

#[tonic::async_trait]
impl Ingest for IngestService {
    type PushStream = Pin<Box<dyn Stream<Item = Result<Ack, Status>> + Send + 'static>>;

    async fn push(
        &self,
        request: Request<Streaming<Batch>>,
    ) -> Result<Response<Self::PushStream>, Status> {
        let mut inbound = request.into_inner();
        let (acks, rx) = mpsc::channel(ACK_BUFFER);
        let writer = Arc::clone(&self.writer);
        let metrics = Arc::clone(&self.metrics);
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                // Only waiting for the next batch is cancelled by shutdown; a batch being
                // stored always finishes and is acknowledged.
                let next = tokio::select! {
                    biased;
                    _ = async { shutdown.wait_for(|stop| *stop).await.is_ok() } => None,
                    next = inbound.message() => Some(next),
                };
                let Some(next) = next else {
                    let _ = acks
                        .send(Err(Status::unavailable("collector is shutting down")))
                        .await;
                    return;
                };
                let batch = match next {
                    Ok(Some(batch)) => batch,
                    Ok(None) => return,
                    Err(status) => {
                        metrics.errors.with_label_values(&["transport"]).inc();
                        tracing::warn!(code = ?status.code(), message = status.message(), "ingest stream failed");
                        let _ = acks.send(Err(transport_status(status))).await;
                        return;
                    }
                };
                let started = Instant::now();
                match writer.write(&batch).await {
                    Ok(outcome) => {
                        metrics.batches.inc();
                        metrics.pairs_stored.inc_by(u64::from(outcome.stored));
                        metrics
                            .pairs_duplicate
                            .inc_by(u64::from(outcome.duplicates));
                        metrics
                            .batch_seconds
                            .observe(started.elapsed().as_secs_f64());
                        let ack = Ack {
                            sequence: batch.sequence,
                            stored: outcome.stored,
                            duplicates: outcome.duplicates,
                        };
                        if acks.send(Ok(ack)).await.is_err() {
                            return;
                        }
                    }
                    Err(error) => {
                        let kind = if error.is_transient() {
                            "storage"
                        } else {
                            "invalid"
                        };
                        metrics.errors.with_label_values(&[kind]).inc();
                        tracing::warn!(%error, agent = %batch.agent_id, sequence = batch.sequence, "batch not stored");
                        let _ = acks.send(Err(storage_status(&error))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
