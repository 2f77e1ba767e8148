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

#[cfg(test)]
mod tests {
    use super::bucket_of;

    #[test]
    fn matches_the_documented_formula() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1), 0);
        assert_eq!(bucket_of(2), 4);
        assert_eq!(bucket_of(1_000_000), 79);
        assert_eq!(bucket_of(i64::MAX), 159);
    }
}
