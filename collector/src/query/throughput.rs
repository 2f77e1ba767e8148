//! `Throughput`: per-bucket counts (inbound/outbound, errors) and latency percentiles, from raw
//! rows for short ranges and from the rollups for long ones (`rr_rollup_1h` when the buckets
//! are whole hours, `rr_rollup_1m` otherwise), with identical answers.
//!
//! Buckets are aligned like `time_bucket` (origin 2000-01-03 00:00 UTC) and the range is widened
//! to whole buckets, so the first and last bucket count all their pairs: that is what makes the
//! raw and the rollup path agree, and what a chart of whole buckets expects.

use std::time::{Duration, SystemTime};

use tapwire_proto::v1::{ThroughputBucket, ThroughputRequest, ThroughputResponse};

use super::error::QueryError;
use super::filter::{
    DEFAULT_RANGE, TimeRange, from_micros, micros, pairs_where, rollup_can_answer, rollup_where,
    time_range, to_timestamp,
};
use super::histogram::{Histogram, sql_bucket_expr};
use crate::storage::Stores;

/// `time_bucket`'s origin for `timestamptz`: 2000-01-03 00:00:00 UTC, in microseconds.
pub const ORIGIN_US: i64 = 946_857_600_000_000;
/// Ranges at least this long are answered from a rollup when one can answer the filter
/// (shorter ones read few raw rows, and keep sub-minute buckets possible).
pub const ROLLUP_MIN_RANGE: Duration = Duration::from_secs(3600);
/// The most buckets one answer may have.
pub const MAX_BUCKETS: i64 = 10_000;
const MINUTE_US: i64 = 60_000_000;
const HOUR_US: i64 = 60 * MINUTE_US;

/// The start of the bucket holding `t_us` (both in microseconds since the epoch).
pub fn bucket_start(t_us: i64, interval_us: i64) -> i64 {
    ORIGIN_US + (t_us - ORIGIN_US).div_euclid(interval_us) * interval_us
}

/// The bucket width in microseconds, checked.
fn interval_us(request: &ThroughputRequest) -> Result<i64, QueryError> {
    let Some(d) = &request.interval else {
        return Ok(MINUTE_US);
    };
    if d.seconds < 1 || d.nanos < 0 || d.nanos % 1000 != 0 || d.seconds > 366 * 86_400 {
        return Err(QueryError::BadRequest(
            "interval must be between 1 second and 366 days, in whole microseconds".into(),
        ));
    }
    Ok(d.seconds * 1_000_000 + i64::from(d.nanos) / 1000)
}

/// Per-bucket accumulation.
#[derive(Default, Clone)]
struct Acc {
    inbound: u64,
    outbound: u64,
    inbound_errors: u64,
    outbound_errors: u64,
    latency: Histogram,
}

/// Answers `Throughput`.
pub async fn throughput(
    stores: &Stores,
    request: &ThroughputRequest,
    now: SystemTime,
) -> Result<ThroughputResponse, QueryError> {
    let interval = interval_us(request)?;
    let filter = request.filter.clone().unwrap_or_default();
    let asked = time_range(&filter, now, DEFAULT_RANGE)?;
    let first = bucket_start(micros(asked.start), interval);
    let end = bucket_start(micros(asked.end) - 1, interval) + interval;
    let count = (end - first) / interval;
    if count > MAX_BUCKETS {
        return Err(QueryError::RangeTooLarge(format!(
            "{count} buckets exceed the limit of {MAX_BUCKETS}; use a wider interval or a \
             shorter range"
        )));
    }
    let range = TimeRange {
        start: from_micros(first),
        end: from_micros(end),
    };
    let rollup = (asked.length() >= ROLLUP_MIN_RANGE && rollup_can_answer(&filter))
        .then(|| rollup_table(interval))
        .flatten();
    let mut buckets = vec![Acc::default(); count as usize];
    let client = stores.db.get().await?;
    let slot = |b: i64| -> Option<usize> {
        let i = (b - first).div_euclid(interval);
        (0..count).contains(&i).then_some(i as usize)
    };

    if let Some(table) = rollup {
        // One row per stored rollup row, summed here: adding 160-entry histograms in Rust
        // is far cheaper than unnesting them into rows for SQL to group.
        let mut w = rollup_where(&filter, &range)?;
        let iv = w.param(interval);
        let sql = format!(
            "SELECT time_bucket({iv}::bigint * INTERVAL '1 microsecond', bucket), is_inbound, \
             count, errors, latency_buckets FROM {table} {}",
            w.clause()
        );
        for row in client
            .query(&client.prepare_cached(&sql).await?, &w.params())
            .await?
        {
            let b: SystemTime = row.try_get(0)?;
            let Some(i) = slot(micros(b)) else { continue };
            let (n, errors) = (
                row.try_get::<_, i64>(2)?.max(0) as u64,
                row.try_get::<_, i64>(3)?.max(0) as u64,
            );
            add_counts(&mut buckets[i], row.try_get(1)?, n, errors);
            buckets[i]
                .latency
                .add_sparse(&row.try_get::<_, Vec<i64>>(4)?);
        }
    } else {
        let mut w = pairs_where(&filter, &range)?;
        let iv = w.param(interval);
        let sql = format!(
            "SELECT time_bucket({iv}::bigint * INTERVAL '1 microsecond', time) AS b, is_inbound, \
             is_error, {} AS h, count(*) FROM rr_pairs {} GROUP BY 1, 2, 3, 4",
            sql_bucket_expr("duration_ns"),
            w.clause()
        );
        for row in client
            .query(&client.prepare_cached(&sql).await?, &w.params())
            .await?
        {
            let b: SystemTime = row.try_get(0)?;
            let Some(i) = slot(micros(b)) else { continue };
            let n = row.try_get::<_, i64>(4)?.max(0) as u64;
            let is_error: bool = row.try_get(2)?;
            add_counts(
                &mut buckets[i],
                row.try_get(1)?,
                n,
                if is_error { n } else { 0 },
            );
            buckets[i]
                .latency
                .add(i64::from(row.try_get::<_, i32>(3)?), n);
        }
    }

    let buckets = buckets
        .into_iter()
        .enumerate()
        .map(|(i, acc)| {
            let p = acc.latency.percentiles();
            ThroughputBucket {
                time: Some(to_timestamp(from_micros(first + i as i64 * interval))),
                inbound: acc.inbound,
                outbound: acc.outbound,
                inbound_errors: acc.inbound_errors,
                outbound_errors: acc.outbound_errors,
                p50_ns: p.p50,
                p95_ns: p.p95,
                p99_ns: p.p99,
            }
        })
        .collect();
    Ok(ThroughputResponse {
        buckets,
        source: match rollup {
            Some(table) => table.trim_start_matches("rr_").into(),
            None => "raw".into(),
        },
    })
}

/// The coarsest rollup whose buckets tile buckets of `interval` exactly, if any.
fn rollup_table(interval: i64) -> Option<&'static str> {
    if interval % HOUR_US == 0 {
        Some("rr_rollup_1h")
    } else if interval % MINUTE_US == 0 {
        Some("rr_rollup_1m")
    } else {
        None
    }
}

fn add_counts(acc: &mut Acc, is_inbound: bool, n: u64, errors: u64) {
    if is_inbound {
        acc.inbound += n;
        acc.inbound_errors += errors;
    } else {
        acc.outbound += n;
        acc.outbound_errors += errors;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_align_like_time_bucket() {
        // 2026-01-01 00:00:30 UTC with 1-minute and 7-minute buckets.
        let t = 1_767_225_630_000_000;
        assert_eq!(bucket_start(t, MINUTE_US), 1_767_225_600_000_000);
        let seven = 7 * MINUTE_US;
        let b = bucket_start(t, seven);
        assert!(b <= t && t < b + seven);
        assert_eq!((b - ORIGIN_US) % seven, 0);
        // Before the origin too.
        assert_eq!(
            bucket_start(ORIGIN_US - 1, MINUTE_US),
            ORIGIN_US - MINUTE_US
        );
    }
}
