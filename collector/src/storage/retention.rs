//! Retention and partition upkeep: drops chunks/partitions older than the configured age
//! together with their payload segments, and creates plain-PostgreSQL partitions ahead.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use super::{Flavor, StorageError, Stores, hour::HOUR, partitions::PartitionManager};

/// How far ahead hourly partitions are created, so the hot path rarely has to.
const HOURS_AHEAD: i64 = 3;

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// What one retention pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RetentionReport {
    /// Chunks or partitions dropped.
    pub tables_dropped: u64,
    /// Payload segments deleted.
    pub segments_deleted: u64,
}

/// Drops everything older than `retention` (index rows, rollups, payload segments).
pub async fn enforce_retention(
    stores: &Stores,
    partitions: &PartitionManager,
    retention: Duration,
) -> Result<RetentionReport, StorageError> {
    let age = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
    let cutoff = now_secs().saturating_sub(age);
    let mut client = stores.db.get().await?;
    let tables_dropped = match stores.flavor {
        Flavor::TimescaleDb => {
            let cutoff_time = UNIX_EPOCH + Duration::from_secs(cutoff.max(0).unsigned_abs());
            let mut n = 0u64;
            for table in ["rr_pairs", "rr_rollup_1m", "rr_rollup_1h"] {
                let rows = client
                    .query(
                        &format!("SELECT drop_chunks('{table}', older_than => $1::timestamptz)"),
                        &[&cutoff_time],
                    )
                    .await
                    .map_err(|source| StorageError::Database {
                        context: "drop_chunks",
                        source,
                    })?;
                n += rows.len() as u64;
            }
            n
        }
        Flavor::Postgres => partitions.drop_before(&mut client, cutoff).await?,
    };
    // Segments go after their rows, so no row ever points at a deleted segment.
    let segments_deleted = stores.payloads.delete_segments_before(cutoff).await?;
    Ok(RetentionReport {
        tables_dropped,
        segments_deleted,
    })
}

/// Creates the next hours' partitions (plain PostgreSQL only).
pub async fn create_partitions_ahead(
    stores: &Stores,
    partitions: &PartitionManager,
) -> Result<(), StorageError> {
    if stores.flavor != Flavor::Postgres {
        return Ok(());
    }
    let now = now_secs();
    let mut client = stores.db.get().await?;
    partitions
        .ensure(&mut client, (0..=HOURS_AHEAD).map(|h| now + h * HOUR))
        .await
}

/// Runs upkeep every `interval` until `shutdown` fires: partitions ahead, then retention.
pub async fn run_maintenance(
    stores: Arc<Stores>,
    partitions: Arc<PartitionManager>,
    retention: Option<Duration>,
    interval: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if let Err(e) = create_partitions_ahead(&stores, &partitions).await {
            tracing::warn!(error = %e, "creating partitions ahead failed");
        }
        if let Some(retention) = retention {
            match enforce_retention(&stores, &partitions, retention).await {
                Ok(report) if report != RetentionReport::default() => {
                    tracing::info!(?report, "retention pass")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "retention pass failed"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
    }
}
