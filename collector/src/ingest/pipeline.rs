//! Makes one batch durable: payload segments first, then the index rows and rollups in one
//! transaction, then the live feed. A batch acknowledged after `write` returns survives any
//! crash; a batch that fails part-way may leave unreferenced segments, never index rows
//! without payloads.
//!
//! Group commit: each stream's task does its batch's own work itself (validation, index
//! rows, remote services, payload frames, the batch's segments), then queues the batch's
//! rows. Whoever holds the commit slot takes every queued batch (up to [`MAX_GROUP_ROWS`]
//! rows) and indexes them together: one COPY, one rollup upsert per table, one commit.
//! Per pair this saves most of the fixed costs of a transaction (a savepoint, rollup
//! upserts whose rows every concurrent batch contends for, the WAL flush at commit), which
//! is what bounded ingest when every batch had its own transaction. One slot is enough and
//! better than two: while a group commits, the next one accumulates, and a second slot
//! mostly committed single batches that waited on the first one's rollup row locks.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Instant, UNIX_EPOCH},
};

use bytes::Bytes;
use futures::future::try_join_all;
use tapwire_proto::{Timestamp, v1::Batch};
use tokio::sync::{Semaphore, oneshot};

use super::peers::PeerDirectory;
use crate::storage::{
    Flavor, PayloadStore, StorageError, Stores, hour::hour_start, index_row::IndexRow,
    index_writer::insert_rows, partitions::PartitionManager, payloads::Frames,
};

/// Transactions writing groups at once.
pub const COMMITTERS: usize = 1;
/// The most rows one group takes (it always takes at least one whole batch): large enough
/// to amortize a transaction, small enough to keep each ack's wait short.
pub const MAX_GROUP_ROWS: usize = 16_384;

/// What storing a batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Pairs newly stored.
    pub stored: u32,
    /// Pairs that were already stored (resends).
    pub duplicates: u32,
}

/// Why a batch was not stored.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// This batch could not be stored.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The group this batch was committed with failed, and so did the batch alone.
    #[error("{0}")]
    Shared(Arc<StorageError>),
    /// The task committing this batch's group went away before it finished (shutdown).
    #[error("the batch's commit was abandoned; retry")]
    Abandoned,
}

impl WriteError {
    /// True when retrying later may succeed, as opposed to a batch that can never be stored.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Storage(e) => e.is_transient(),
            Self::Shared(e) => e.is_transient(),
            Self::Abandoned => true,
        }
    }
}

/// A batch ready to be indexed: its rows, payloads already written.
struct Pending {
    rows: Vec<IndexRow>,
    /// Answered with how many of the rows were new.
    done: oneshot::Sender<Result<usize, Arc<StorageError>>>,
}

/// Writes batches into the stores; shared by every ingest stream.
pub struct BatchWriter {
    stores: Arc<Stores>,
    partitions: Arc<PartitionManager>,
    peers: PeerDirectory,
    queue: Mutex<VecDeque<Pending>>,
    committers: Semaphore,
}

impl BatchWriter {
    /// A writer over `stores`; `partitions` is shared with the maintenance task.
    pub fn new(stores: Arc<Stores>, partitions: Arc<PartitionManager>) -> Self {
        Self {
            stores,
            partitions,
            peers: PeerDirectory::default(),
            queue: Mutex::new(VecDeque::new()),
            committers: Semaphore::new(COMMITTERS),
        }
    }

    /// Validates and stores one batch; nothing is written when any pair is invalid.
    pub async fn write(&self, batch: &Batch) -> Result<BatchOutcome, WriteError> {
        let mut rows = batch
            .pairs
            .iter()
            .map(|pair| IndexRow::from_pair(pair, &batch.node))
            .collect::<Result<Vec<_>, _>>()?;
        if rows.is_empty() {
            return Ok(BatchOutcome {
                stored: 0,
                duplicates: 0,
            });
        }
        self.peers.ensure_seeded(&self.stores).await;
        self.peers.resolve(&mut rows);
        let frames = PayloadStore::encode_frames(&batch.pairs)?;
        self.write_segments(&mut rows, &frames).await?;
        drop(frames);

        let total = u32::try_from(rows.len()).unwrap_or(u32::MAX);
        let (done, result) = oneshot::channel();
        self.lock_queue().push_back(Pending { rows, done });
        let new_rows = self.commit_until_done(result).await?;
        let stored = u32::try_from(new_rows).unwrap_or(u32::MAX);
        Ok(BatchOutcome {
            stored,
            duplicates: total - stored,
        })
    }

    /// The queue stays consistent even if a holder panicked (it only pushes and pops).
    fn lock_queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Pending>> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for this batch's result, committing queued groups (this batch's or others')
    /// whenever a commit slot is free.
    async fn commit_until_done(
        &self,
        mut result: oneshot::Receiver<Result<usize, Arc<StorageError>>>,
    ) -> Result<usize, WriteError> {
        loop {
            let permit = tokio::select! {
                biased;
                done = &mut result => return unpack(done),
                permit = self.committers.acquire() => permit,
            };
            // The semaphore is never closed; without a permit, just wait for the result.
            let Ok(_permit) = permit else {
                return unpack(result.await);
            };
            let group = self.take_group();
            if group.is_empty() {
                // Another committer took this batch; it answers when done.
                return unpack(result.await);
            }
            self.commit(group).await;
        }
    }

    /// Takes queued batches, oldest first, up to [`MAX_GROUP_ROWS`] rows (at least one).
    fn take_group(&self) -> Vec<Pending> {
        let mut queue = self.lock_queue();
        let mut group = Vec::new();
        let mut rows = 0;
        while let Some(next) = queue.front() {
            if !group.is_empty() && rows + next.rows.len() > MAX_GROUP_ROWS {
                break;
            }
            rows += next.rows.len();
            group.extend(queue.pop_front());
        }
        group
    }

    /// Stores a group and answers each of its batches. When the group fails, each batch is
    /// retried alone, so one batch the database refuses cannot fail the others.
    async fn commit(&self, group: Vec<Pending>) {
        let started = Instant::now();
        let batches = group.len();
        let mut counts = Vec::with_capacity(batches);
        let mut answers = Vec::with_capacity(batches);
        let mut rows = Vec::with_capacity(group.iter().map(|p| p.rows.len()).sum());
        for pending in group {
            counts.push(pending.rows.len());
            rows.extend(pending.rows);
            answers.push(pending.done);
        }
        match self.index(&rows).await {
            Ok(new_rows) => {
                self.publish(&rows, &new_rows);
                let mut new_rows = new_rows.into_iter().peekable();
                let mut end = 0;
                for (done, count) in answers.into_iter().zip(counts) {
                    end += count;
                    let mut new = 0;
                    while new_rows.next_if(|&i| i < end).is_some() {
                        new += 1;
                    }
                    // The batch's task may be gone (shutdown); its rows are stored anyway.
                    let _ = done.send(Ok(new));
                }
                tracing::debug!(
                    batches,
                    rows = rows.len(),
                    elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                    "group committed"
                );
            }
            Err(error) if batches == 1 => {
                if let Some(done) = answers.into_iter().next() {
                    let _ = done.send(Err(Arc::new(error)));
                }
            }
            Err(error) => {
                tracing::warn!(%error, batches, "group commit failed; storing its batches one by one");
                let per_batch = split_rows(rows, &counts);
                for (done, rows) in answers.into_iter().zip(per_batch) {
                    let answer = match self.index(&rows).await {
                        Ok(new_rows) => {
                            self.publish(&rows, &new_rows);
                            Ok(new_rows.len())
                        }
                        Err(e) => Err(Arc::new(e)),
                    };
                    let _ = done.send(answer);
                }
            }
        }
    }

    /// Sends the new rows to the live feed (`Tail`), in commit order; skipped when nobody
    /// is tailing, which is most of the time (a summary copies most of the row).
    fn publish(&self, rows: &[IndexRow], new_rows: &[usize]) {
        if self.stores.live.receiver_count() == 0 {
            return;
        }
        for &i in new_rows {
            let row = &rows[i];
            let nanos = row
                .time
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let start = Timestamp {
                seconds: row.time_secs,
                nanos: i32::try_from(nanos).unwrap_or(0),
            };
            // Subscribers may leave at any time: nobody left to send to is not an error.
            let _ = self.stores.live.send(Arc::new(row.summary(Some(start))));
        }
    }

    /// Writes a batch's frames into segments, one per hour of `time` (so retention can
    /// delete whole hours), and sets each row's payload location.
    async fn write_segments(
        &self,
        rows: &mut [IndexRow],
        frames: &Frames,
    ) -> Result<(), StorageError> {
        if frames.len() != rows.len() {
            return Err(StorageError::CorruptPayload {
                key: String::new(),
                offset: 0,
                reason: format!("{} frames for {} rows", frames.len(), rows.len()),
            });
        }
        let mut by_hour: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
        for (i, row) in rows.iter().enumerate() {
            by_hour
                .entry(hour_start(row.time_secs))
                .or_default()
                .push(i);
        }
        let mut writes = Vec::with_capacity(by_hour.len());
        for (&hour, members) in &by_hour {
            // Consecutive frames go as one slice of the batch's buffer.
            let mut parts: Vec<Bytes> = Vec::new();
            let mut lengths = Vec::with_capacity(members.len());
            let mut run: Option<std::ops::Range<usize>> = None;
            for &i in members {
                let range = frames.range(i);
                lengths.push(u32::try_from(range.len()).map_err(|_| {
                    StorageError::CorruptPayload {
                        key: String::new(),
                        offset: 0,
                        reason: "frame larger than 4 GiB".into(),
                    }
                })?);
                run = match run {
                    Some(r) if r.end == range.start => Some(r.start..range.end),
                    Some(r) => {
                        parts.push(frames.buf().slice(r));
                        Some(range)
                    }
                    None => Some(range),
                };
            }
            if let Some(r) = run {
                parts.push(frames.buf().slice(r));
            }
            writes.push(async move {
                self.stores
                    .payloads
                    .write_segment(hour, parts, &lengths)
                    .await
            });
        }
        let locations = try_join_all(writes).await?;
        for (members, locations) in by_hour.values().zip(locations) {
            for (&i, location) in members.iter().zip(locations) {
                rows[i].location = location;
            }
        }
        Ok(())
    }

    /// Indexes rows (payloads written) in one transaction; returns the indexes of the new
    /// rows.
    async fn index(&self, rows: &[IndexRow]) -> Result<Vec<usize>, StorageError> {
        let mut client = self.stores.db.get().await?;
        if self.stores.flavor == Flavor::Postgres {
            self.partitions
                .ensure(&mut client, rows.iter().map(|r| r.time_secs))
                .await?;
        }
        insert_rows(&mut client, rows).await
    }
}

/// Splits a group's rows back into its batches (`counts` rows each, in order), moving
/// each row once.
fn split_rows(mut rows: Vec<IndexRow>, counts: &[usize]) -> Vec<Vec<IndexRow>> {
    let mut parts: Vec<Vec<IndexRow>> = counts
        .iter()
        .rev()
        .map(|&count| rows.split_off(rows.len().saturating_sub(count)))
        .collect();
    parts.reverse();
    parts
}

fn unpack(
    result: Result<Result<usize, Arc<StorageError>>, oneshot::error::RecvError>,
) -> Result<usize, WriteError> {
    match result {
        Ok(Ok(new_rows)) => Ok(new_rows),
        Ok(Err(error)) => Err(WriteError::Shared(error)),
        Err(_) => Err(WriteError::Abandoned),
    }
}
