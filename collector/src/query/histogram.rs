//! The shared log-scale latency histogram of `docs/storage.md`: 160 buckets, 4 per power of
//! two. Raw-row queries and `rr_rollup_1m` both reduce durations to these buckets, so the
//! percentiles of both paths are identical. This module adds what queries need: the bucket
//! as SQL, the value of a bucket, and percentiles.

use std::sync::LazyLock;

// The bucket function is ingest's own (storage::histogram), so raw and rollup answers agree
// by construction.
pub use crate::storage::histogram::{BUCKETS, bucket_of, split_entry};

/// The value reported for bucket `b`: `round(2 ^ ((b + 0.5) / 4))` nanoseconds.
pub fn bucket_value(b: usize) -> u64 {
    (2f64.powf((b as f64 + 0.5) / 4.0)).round() as u64
}

/// The smallest duration of each bucket, derived from [`bucket_of`] itself, so that SQL's
/// `width_bucket` over this table reproduces the Rust function exactly (a float `log` in
/// SQL would disagree with Rust's `log2` right at bucket edges).
static THRESHOLDS: LazyLock<Vec<i64>> = LazyLock::new(|| {
    (0..BUCKETS)
        .map(|b| {
            if b == 0 {
                return 1;
            }
            // bucket_of is monotonic: binary search for the first duration in bucket >= b.
            let (mut lo, mut hi) = (1i64, 1i64 << 50);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if bucket_of(mid) >= b {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            lo
        })
        .collect()
});

/// A SQL expression giving the histogram bucket (0..159) of `column`, exact and index-free:
/// `width_bucket` over the bucket thresholds as a constant array.
pub fn sql_bucket_expr(column: &str) -> String {
    let list = THRESHOLDS
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    format!("(width_bucket(greatest({column}, 1), ARRAY[{list}]::bigint[]) - 1)")
}

/// A latency histogram being filled from query rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: [u64; BUCKETS],
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: [0; BUCKETS],
            total: 0,
        }
    }
}

/// Percentiles p50/p95/p99 in nanoseconds (0 for an empty set).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 95th percentile.
    pub p95: u64,
    /// 99th percentile.
    pub p99: u64,
}

impl Histogram {
    /// Adds `count` durations that fell into bucket `b` (out-of-range buckets are clamped,
    /// so a malformed row cannot panic the server).
    pub fn add(&mut self, b: i64, count: u64) {
        let b = b.clamp(0, BUCKETS as i64 - 1) as usize;
        self.counts[b] += count;
        self.total += count;
    }

    /// Adds a sparse histogram (a rollup row's `latency_buckets`).
    pub fn add_sparse(&mut self, entries: &[i64]) {
        for &entry in entries {
            let (b, c) = split_entry(entry);
            self.counts[b] += c as u64;
            self.total += c as u64;
        }
    }

    /// How many durations the histogram holds.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The value of the bucket where the cumulative count first reaches `ceil(q * total)`.
    pub fn percentile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).max(1);
        let mut cumulative = 0;
        for (b, c) in self.counts.iter().enumerate() {
            cumulative += c;
            if cumulative >= rank {
                return bucket_value(b);
            }
        }
        bucket_value(BUCKETS - 1)
    }

    /// p50, p95 and p99.
    pub fn percentiles(&self) -> Percentiles {
        Percentiles {
            p50: self.percentile(0.50),
            p95: self.percentile(0.95),
            p99: self.percentile(0.99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_follow_the_documented_formula() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1), 0);
        assert_eq!(bucket_of(2), 4);
        assert_eq!(bucket_of(1024), 40);
        assert_eq!(bucket_of(1_000_000), 79);
        assert_eq!(bucket_of(i64::MAX), 159);
        assert_eq!(bucket_value(40), 1117);
    }

    #[test]
    fn thresholds_are_the_first_duration_of_each_bucket() {
        for (b, t) in THRESHOLDS.iter().enumerate().skip(1) {
            // Buckets 1..3 hold no integer duration, so their threshold is bucket 4's.
            assert!(bucket_of(*t) >= b, "threshold {t}");
            assert!(bucket_of(t - 1) < b, "below threshold {t}");
        }
    }

    #[test]
    fn percentile_is_the_bucket_reaching_the_rank() {
        let mut h = Histogram::default();
        for d in 1..=100i64 {
            h.add(bucket_of(d * 1000) as i64, 1);
        }
        assert_eq!(h.percentile(0.5), bucket_value(bucket_of(50_000)));
        assert_eq!(h.percentile(0.99), bucket_value(bucket_of(99_000)));
        assert_eq!(Histogram::default().percentiles(), Percentiles::default());
    }
}
