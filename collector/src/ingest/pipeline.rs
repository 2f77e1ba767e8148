//! Makes one batch durable: payload segments first, then the index rows and rollups in one
//! transaction, then the live feed. A batch acknowledged after `write` returns survives any
//! crash; a batch that fails part-way may leave unreferenced segments, never index rows
//! without payloads.

use std::{collections::BTreeMap, sync::Arc};

use futures::future::try_join_all;
use tapwire_proto::v1::Batch;

use crate::storage::{
    Flavor, PayloadStore, StorageError, Stores, hour::hour_start, index_row::IndexRow,
    index_writer::insert_rows, partitions::PartitionManager,
};

/// What storing a batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Pairs newly stored.
    pub stored: u32,
    /// Pairs that were already stored (resends).
    pub duplicates: u32,
}

/// Writes batches into the stores; shared by every ingest stream.
pub struct BatchWriter {
    stores: Arc<Stores>,
    partitions: Arc<PartitionManager>,
}

impl BatchWriter {
    /// A writer over `stores`; `partitions` is shared with the maintenance task.
    pub fn new(stores: Arc<Stores>, partitions: Arc<PartitionManager>) -> Self {
        Self { stores, partitions }
    }

    /// Validates and stores one batch; nothing is written when any pair is invalid.
    pub async fn write(&self, batch: &Batch) -> Result<BatchOutcome, StorageError> {
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

        // One segment per hour of `time`, so retention can delete whole hours.
        let mut by_hour: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
        for (i, row) in rows.iter().enumerate() {
            by_hour
                .entry(hour_start(row.time_secs))
                .or_default()
                .push(i);
        }
        let mut writes = Vec::with_capacity(by_hour.len());
        for (&hour, members) in &by_hour {
            let frames = PayloadStore::encode_frames(members.iter().map(|&i| &batch.pairs[i]))?;
            writes.push(self.stores.payloads.write_segment(hour, frames));
        }
        let locations = try_join_all(writes).await?;
        for (members, locations) in by_hour.values().zip(locations) {
            for (&i, location) in members.iter().zip(locations) {
                rows[i].location = location;
            }
        }

        let mut client = self.stores.db.get().await?;
        if self.stores.flavor == Flavor::Postgres {
            self.partitions
                .ensure(&mut client, rows.iter().map(|r| r.time_secs))
                .await?;
        }
        let new_rows = insert_rows(&mut client, &rows).await?;
        drop(client);

        for &i in &new_rows {
            let summary = rows[i].summary(batch.pairs[i].start_time);
            // No subscriber is not an error: nobody is tailing right now.
            let _ = self.stores.live.send(Arc::new(summary));
        }
        let stored = u32::try_from(new_rows.len()).unwrap_or(u32::MAX);
        let total = u32::try_from(rows.len()).unwrap_or(u32::MAX);
        Ok(BatchOutcome {
            stored,
            duplicates: total - stored,
        })
    }
}
