//! Groups submitted pairs into batches that close on count, bytes or age, and writes each
//! closed batch to the spool. Runs on its own thread: spool writes are fsync'd and must not
//! stall the async runtime, and the capture path only ever does a non-blocking `try_send`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use prost::Message;
use tapwire_proto::v1::{Batch, Pair};
use tokio::sync::Notify;

use super::config::BatchLimits;
use super::metrics::ExportMetrics;
use super::spool::Spool;

/// Field number of `Batch.pairs` in ingest.proto.
const BATCH_PAIRS_FIELD: u32 = 4;
/// How often an idle batcher looks at the shutdown flag.
const IDLE_POLL: Duration = Duration::from_millis(50);

/// Accumulates pairs already encoded as `Batch.pairs` fields, so a batch is encoded once,
/// as it fills, and its size is known exactly.
#[derive(Debug)]
pub(crate) struct BatchBuilder {
    limits: BatchLimits,
    buf: BytesMut,
    pairs: u32,
    opened_at: Option<Instant>,
}

impl BatchBuilder {
    pub(crate) fn new(limits: BatchLimits) -> Self {
        Self {
            limits,
            buf: BytesMut::new(),
            pairs: 0,
            opened_at: None,
        }
    }

    /// True when `pair` can join this batch without exceeding the byte limit (a pair
    /// larger than the limit still travels, alone).
    pub(crate) fn fits(&self, pair: &Pair) -> bool {
        self.pairs == 0
            || self.buf.len() + prost::encoding::message::encoded_len(BATCH_PAIRS_FIELD, pair)
                <= self.limits.max_bytes
    }

    /// Adds a pair; the caller checks `fits` first and `is_full` after.
    pub(crate) fn push(&mut self, pair: &Pair) {
        if self.pairs == 0 {
            self.opened_at = Some(Instant::now());
        }
        prost::encoding::message::encode(BATCH_PAIRS_FIELD, pair, &mut self.buf);
        self.pairs += 1;
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pairs == 0
    }

    /// The batch reached its pair or byte limit.
    pub(crate) fn is_full(&self) -> bool {
        self.pairs as usize >= self.limits.max_pairs || self.buf.len() >= self.limits.max_bytes
    }

    /// When the open batch must close, `None` when empty.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.opened_at.map(|t| t + self.limits.max_delay)
    }

    /// Closes the batch: the encoded `Batch` and its pair count.
    pub(crate) fn take(&mut self, sequence: u64, agent_id: &str, node: &str) -> (Bytes, u32) {
        let header = Batch {
            sequence,
            agent_id: agent_id.to_owned(),
            node: node.to_owned(),
            pairs: Vec::new(),
        };
        // Protobuf fields may come in any order: the header goes after the pairs.
        header.encode_raw(&mut self.buf);
        let pairs = std::mem::take(&mut self.pairs);
        self.opened_at = None;
        (self.buf.split().freeze(), pairs)
    }
}

/// What the batcher thread needs.
pub(crate) struct BatcherTask {
    pub(crate) limits: BatchLimits,
    pub(crate) agent_id: String,
    pub(crate) node: String,
    pub(crate) pairs: Receiver<Pair>,
    pub(crate) closing: Arc<AtomicBool>,
    pub(crate) spool: Arc<Mutex<Spool>>,
    pub(crate) spooled: Arc<Notify>,
    pub(crate) metrics: Arc<ExportMetrics>,
}

impl BatcherTask {
    /// Runs until shutdown (`closing` set and the queue drained) and flushes the last batch.
    pub(crate) fn run(self) {
        let mut builder = BatchBuilder::new(self.limits);
        loop {
            let wait = builder.deadline().map_or(IDLE_POLL, |d| {
                d.saturating_duration_since(Instant::now()).min(IDLE_POLL)
            });
            match self.pairs.recv_timeout(wait) {
                Ok(pair) => {
                    if !builder.fits(&pair) {
                        self.flush(&mut builder);
                    }
                    builder.push(&pair);
                    if builder.is_full() {
                        self.flush(&mut builder);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if builder.deadline().is_some_and(|d| d <= Instant::now()) {
                        self.flush(&mut builder);
                    }
                    if self.closing.load(Ordering::Acquire) {
                        break;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // Pairs submitted just before shutdown.
        while let Ok(pair) = self.pairs.try_recv() {
            if !builder.fits(&pair) {
                self.flush(&mut builder);
            }
            builder.push(&pair);
        }
        self.flush(&mut builder);
        tracing::debug!("export batcher stopped");
    }

    fn flush(&self, builder: &mut BatchBuilder) {
        if builder.is_empty() {
            return;
        }
        let result = {
            let mut spool = match self.spool.lock() {
                Ok(spool) => spool,
                Err(poisoned) => poisoned.into_inner(),
            };
            let sequence = spool.next_sequence();
            let (data, pairs) = builder.take(sequence, &self.agent_id, &self.node);
            let result = spool.append(data, pairs).map_err(|e| (e, pairs));
            self.metrics.spool_bytes.set((spool.bytes()) as i64);
            self.metrics.spool_batches.set((spool.len() as u64) as i64);
            result
        };
        match result {
            Ok(outcome) => {
                if outcome.sequence.is_some() {
                    self.metrics.batches_spooled.inc_by(1);
                    self.spooled.notify_one();
                }
                if outcome.dropped_pairs > 0 {
                    self.metrics
                        .pairs_dropped_spool_full
                        .inc_by(outcome.dropped_pairs);
                    tracing::warn!(
                        dropped_batches = outcome.dropped_batches,
                        dropped_pairs = outcome.dropped_pairs,
                        "export spool full (collector down or slow): dropped the oldest pairs"
                    );
                }
            }
            Err((error, pairs)) => {
                self.metrics
                    .pairs_dropped_spool_error
                    .inc_by(u64::from(pairs));
                tracing::error!(%error, pairs, "cannot spool a batch; its pairs are dropped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(i: usize, body: usize) -> Pair {
        Pair {
            id: format!("0190c0de-0000-7000-8000-{i:012}"),
            method: "GET".into(),
            path: format!("/items/{i}"),
            request: Some(tapwire_proto::v1::Message {
                body: vec![b'x'; body].into(),
                body_size: body as u64,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn limits(max_pairs: usize, max_bytes: usize) -> BatchLimits {
        BatchLimits {
            max_pairs,
            max_bytes,
            max_delay: Duration::from_millis(20),
        }
    }

    #[test]
    fn batch_decodes_to_the_pairs_and_header() {
        let mut builder = BatchBuilder::new(limits(10, 1 << 20));
        let pairs: Vec<Pair> = (0..3).map(|i| pair(i, 100)).collect();
        for p in &pairs {
            assert!(builder.fits(p));
            builder.push(p);
        }
        let (data, n) = builder.take(42, "agent-1", "node-a");
        assert_eq!(n, 3);
        let batch = Batch::decode(data).expect("decodes");
        assert_eq!(batch.sequence, 42);
        assert_eq!(batch.agent_id, "agent-1");
        assert_eq!(batch.node, "node-a");
        assert_eq!(batch.pairs, pairs);
        assert!(builder.is_empty());
        assert!(builder.deadline().is_none());
    }

    #[test]
    fn closes_on_count_and_bytes() {
        let mut builder = BatchBuilder::new(limits(2, 1 << 20));
        builder.push(&pair(0, 10));
        assert!(!builder.is_full());
        builder.push(&pair(1, 10));
        assert!(builder.is_full());

        let mut builder = BatchBuilder::new(limits(100, 1000));
        builder.push(&pair(0, 600));
        assert!(
            !builder.fits(&pair(1, 600)),
            "second pair would exceed 1000 bytes"
        );
        let (data, _) = builder.take(1, "a", "n");
        assert!(data.len() < 1000);
        // An oversized pair still travels, alone.
        let big = pair(2, 5000);
        assert!(builder.fits(&big));
        builder.push(&big);
        assert!(builder.is_full());
    }

    #[test]
    fn batcher_thread_closes_batches_on_count_and_on_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(
            dir.path(),
            super::super::spool::SpoolLimits::for_total(64 << 20, 1 << 20),
        )
        .expect("spool");
        let spool = Arc::new(Mutex::new(spool));
        let (tx, rx) = std::sync::mpsc::sync_channel(100);
        let closing = Arc::new(AtomicBool::new(false));
        let task = BatcherTask {
            limits: limits(4, 1 << 20),
            agent_id: "a".into(),
            node: "n".into(),
            pairs: rx,
            closing: closing.clone(),
            spool: spool.clone(),
            spooled: Arc::new(Notify::new()),
            metrics: Arc::new(ExportMetrics::default()),
        };
        let thread = std::thread::spawn(move || task.run());
        for i in 0..10 {
            tx.send(pair(i, 50)).expect("send");
        }
        // 2 full batches at once, the last 2 pairs after max_delay (20 ms).
        let started = Instant::now();
        loop {
            let n = spool.lock().expect("lock").len();
            if n == 3 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "only {n} batches closed"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        tx.send(pair(10, 50)).expect("send");
        closing.store(true, Ordering::Release);
        thread.join().expect("batcher thread");
        let spool = spool.lock().expect("lock");
        let mut sizes = Vec::new();
        let mut ids = Vec::new();
        let mut from = 0;
        while let Some(b) = spool.next_from(from).expect("read") {
            let batch = Batch::decode(b.data).expect("decode");
            assert_eq!(batch.sequence, b.sequence);
            sizes.push(batch.pairs.len());
            ids.extend(batch.pairs.into_iter().map(|p| p.id));
            from = b.sequence + 1;
        }
        assert_eq!(
            sizes,
            vec![4, 4, 2, 1],
            "the pair sent before shutdown is flushed too"
        );
        assert_eq!(ids, (0..11).map(|i| pair(i, 0).id).collect::<Vec<_>>());
    }
}
