//! The checks of the query API, each against answers computed from the pairs sent.
//! Every check stores its pairs in a time region of its own (hours before now: list 20,
//! paging 18, throughput 17-15.5, rollup 15-7, get 10, tail now, large export 30), and
//! computes expectations over everything sent so far, so they share one collector.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod charts;
mod listing;
mod payloads;

// Each test binary that includes `query_support` uses only some of the checks.
#[allow(unused_imports)]
pub use charts::{groupings, rollup_equals_raw, throughput_buckets};
#[allow(unused_imports)]
pub use listing::{clear_statuses, list_filters_and_pages, paging_while_pairs_arrive};
#[allow(unused_imports)]
pub use payloads::{export_formats, export_many, get_pair_decodes, tail_follows};

/// A whole second `hours_ago` hours before now: test regions start on it.
pub fn hours_ago(hours: f64) -> SystemTime {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    UNIX_EPOCH + Duration::from_secs(now - (hours * 3600.0) as u64)
}

pub(crate) fn duration(secs: i64, nanos: i32) -> tapwire_proto::Duration {
    tapwire_proto::Duration {
        seconds: secs,
        nanos,
    }
}
