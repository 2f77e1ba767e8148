//! The fixed log-scale latency histogram shared by raw queries and rollups
//! (docs/storage.md): 160 buckets, 4 per power of two.

/// Number of histogram buckets.
pub const BUCKETS: usize = 160;

/// The bucket of a duration: `least(159, greatest(0, floor(4 * log2(greatest(ns, 1)))))`.
pub fn bucket_of(duration_ns: i64) -> usize {
    let ns = duration_ns.max(1) as f64;
    let b = (4.0 * ns.log2()).floor();
    // The float maths mirrors the SQL definition exactly, so raw and rollup paths agree.
    b.clamp(0.0, (BUCKETS - 1) as f64) as usize
}

/// Bits of a sparse histogram entry that hold the count; the bucket sits above them.
pub const COUNT_BITS: u32 = 48;
const COUNT_MASK: i64 = (1 << COUNT_BITS) - 1;

/// One entry of a sparse histogram (`rr_rollup_*.latency_buckets`): `bucket << 48 | count`.
/// Entries are kept in bucket order, empty buckets left out, so the common row holds a
/// handful of entries instead of 160 counts.
pub fn sparse_entry(bucket: usize, count: i64) -> i64 {
    ((bucket as i64) << COUNT_BITS) | (count & COUNT_MASK)
}

/// The bucket and count of a sparse entry (out-of-range buckets are clamped, so a damaged
/// row cannot index out of bounds).
pub fn split_entry(entry: i64) -> (usize, i64) {
    let bucket = (entry >> COUNT_BITS).clamp(0, BUCKETS as i64 - 1) as usize;
    (bucket, entry & COUNT_MASK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_entries_round_trip() {
        for (b, c) in [(0, 1), (79, 12_345), (159, (1 << 48) - 1)] {
            assert_eq!(split_entry(sparse_entry(b, c)), (b, c));
        }
        // Bucket order is entry order.
        assert!(sparse_entry(3, 1 << 40) < sparse_entry(4, 1));
    }

    #[test]
    fn matches_the_documented_formula() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1), 0);
        assert_eq!(bucket_of(2), 4);
        assert_eq!(bucket_of(1_000_000), 79);
        assert_eq!(bucket_of(i64::MAX), 159);
    }
}
