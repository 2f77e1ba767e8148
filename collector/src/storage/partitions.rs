//! Native range partitions for plain PostgreSQL: hourly for `rr_pairs`, daily for the
//! rollups `rr_rollup_1m` and `rr_rollup_1h` (docs/storage.md). TimescaleDB creates its chunks itself.
//!
//! Partitions are created ahead of time by the maintenance task and on demand for late or
//! early data, before a batch's transaction, so a batch never fails for lack of one.

use std::{collections::HashSet, sync::Mutex};

use tokio_postgres::Client;

use super::{
    StorageError,
    hour::{CivilHour, DAY, HOUR, day_start, hour_start},
};

/// Serializes partition DDL between collectors sharing one database.
const PARTITION_LOCK: i64 = 0x7461_7077_6972_6502;

/// Creates and drops the partitions of the plain-PostgreSQL schema, remembering which
/// exist so the common case costs no round trip.
#[derive(Debug, Default)]
pub struct PartitionManager {
    hours: Mutex<HashSet<i64>>,
    days: Mutex<HashSet<i64>>,
}

fn pairs_partition(hour: i64) -> String {
    let c = CivilHour::from_unix(hour);
    format!(
        "rr_pairs_p{:04}{:02}{:02}{:02}",
        c.year, c.month, c.day, c.hour
    )
}

/// The rollup tables, partitioned by day.
const ROLLUP_TABLES: [&str; 2] = ["rr_rollup_1m", "rr_rollup_1h"];

fn rollup_partition(table: &str, day: i64) -> String {
    let c = CivilHour::from_unix(day);
    format!("{table}_p{:04}{:02}{:02}", c.year, c.month, c.day)
}

/// Parses `rr_pairs_pYYYYMMDDHH` / `rr_rollup_1m_pYYYYMMDD` back to the Unix start.
fn partition_start(name: &str, prefix: &str) -> Option<i64> {
    let digits = name.strip_prefix(prefix)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) || (digits.len() != 10 && digits.len() != 8) {
        return None;
    }
    let field = |r: std::ops::Range<usize>| digits.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (field(0..4)?, field(4..6)?, field(6..8)?);
    let h = if digits.len() == 10 { field(8..10)? } else { 0 };
    // days_from_civil (Howard Hinnant), the inverse of CivilHour::from_unix.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * DAY + h * HOUR)
}

fn db(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StorageError {
    move |source| StorageError::Database { context, source }
}

impl PartitionManager {
    /// Makes sure the partitions holding rows at these Unix times exist.
    pub async fn ensure<I>(&self, client: &mut Client, times: I) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = i64>,
    {
        let (mut new_hours, mut new_days) = (Vec::new(), Vec::new());
        {
            let hours = self.hours.lock().unwrap_or_else(|e| e.into_inner());
            let days = self.days.lock().unwrap_or_else(|e| e.into_inner());
            for t in times {
                let (h, d) = (hour_start(t), day_start(t));
                if !hours.contains(&h) && !new_hours.contains(&h) {
                    new_hours.push(h);
                }
                if !days.contains(&d) && !new_days.contains(&d) {
                    new_days.push(d);
                }
            }
        }
        if new_hours.is_empty() && new_days.is_empty() {
            return Ok(());
        }
        let mut ddl = String::new();
        for &h in &new_hours {
            ddl.push_str(&format!(
                "CREATE TABLE IF NOT EXISTS {} PARTITION OF rr_pairs FOR VALUES FROM ('{}') TO ('{}');\n",
                pairs_partition(h),
                CivilHour::from_unix(h).sql_literal(),
                CivilHour::from_unix(h + HOUR).sql_literal()
            ));
        }
        for &d in &new_days {
            for table in ROLLUP_TABLES {
                ddl.push_str(&format!(
                    "CREATE TABLE IF NOT EXISTS {} PARTITION OF {table} FOR VALUES FROM ('{}') TO ('{}');\n",
                    rollup_partition(table, d),
                    CivilHour::from_unix(d).sql_literal(),
                    CivilHour::from_unix(d + DAY).sql_literal()
                ));
            }
        }
        let tx = client
            .transaction()
            .await
            .map_err(db("begin partition DDL"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PARTITION_LOCK])
            .await
            .map_err(db("take the partition lock"))?;
        tx.batch_execute(&ddl)
            .await
            .map_err(db("create partitions"))?;
        tx.commit().await.map_err(db("commit partitions"))?;
        self.hours
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(new_hours);
        self.days
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(new_days);
        Ok(())
    }

    /// Drops the partitions whose whole range ends at or before `cutoff` (Unix seconds);
    /// returns how many were dropped.
    pub async fn drop_before(&self, client: &mut Client, cutoff: i64) -> Result<u64, StorageError> {
        let rows = client
            .query(
                "SELECT c.relname::text, p.relname::text FROM pg_inherits i
                 JOIN pg_class c ON c.oid = i.inhrelid
                 JOIN pg_class p ON p.oid = i.inhparent
                 WHERE p.relname IN ('rr_pairs', 'rr_rollup_1m', 'rr_rollup_1h')",
                &[],
            )
            .await
            .map_err(db("list partitions"))?;
        let mut dropped = 0;
        for row in rows {
            let (name, parent): (String, String) = (row.get(0), row.get(1));
            let (start, len) = if parent == "rr_pairs" {
                (partition_start(&name, "rr_pairs_p"), HOUR)
            } else {
                (partition_start(&name, &format!("{parent}_p")), DAY)
            };
            let Some(start) = start else { continue };
            if start + len > cutoff {
                continue;
            }
            client
                .batch_execute(&format!("DROP TABLE IF EXISTS {name}"))
                .await
                .map_err(db("drop a partition"))?;
            if len == HOUR {
                self.hours
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&start);
            } else {
                self.days
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&start);
            }
            tracing::info!(partition = %name, "dropped partition past retention");
            dropped += 1;
        }
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_round_trip() {
        let h = hour_start(1_795_849_933);
        assert_eq!(pairs_partition(h), "rr_pairs_p2026112807");
        assert_eq!(partition_start(&pairs_partition(h), "rr_pairs_p"), Some(h));
        let d = day_start(1_795_849_933);
        assert_eq!(
            rollup_partition("rr_rollup_1m", d),
            "rr_rollup_1m_p20261128"
        );
        assert_eq!(
            partition_start(&rollup_partition("rr_rollup_1h", d), "rr_rollup_1h_p"),
            Some(d)
        );
        assert_eq!(partition_start("rr_pairs_default", "rr_pairs_p"), None);
    }
}
