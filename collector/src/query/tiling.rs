//! Splits a time range into pieces that are each answered from the cheapest table that
//! answers them exactly: whole hours from `rr_rollup_1h`, whole minutes from
//! `rr_rollup_1m`, and the ragged seconds at either end from the raw rows of `rr_pairs`.
//!
//! A grouped query over the last 24 hours then reads 23 hours of hourly rows, up to two
//! hours of minute rows and two partial minutes of raw rows, and its answer is the same as
//! if every raw row had been read, because the rollups are maintained in the same
//! transaction as the rows they summarize.

use super::filter::{TimeRange, from_micros, micros};

const MINUTE_US: i64 = 60_000_000;
const HOUR_US: i64 = 60 * MINUTE_US;

/// Where one piece of a range is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `rr_pairs`, row by row.
    Raw,
    /// `rr_rollup_1m`.
    Minutes,
    /// `rr_rollup_1h`.
    Hours,
}

impl Source {
    /// The table this source reads.
    pub fn table(self) -> &'static str {
        match self {
            Source::Raw => "rr_pairs",
            Source::Minutes => "rr_rollup_1m",
            Source::Hours => "rr_rollup_1h",
        }
    }
}

/// One piece of a tiled range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// The table that answers it.
    pub source: Source,
    /// The part of the range it covers, `[start, end)`.
    pub range: TimeRange,
}

fn floor_to(t: i64, unit: i64) -> i64 {
    t - t.rem_euclid(unit)
}

fn ceil_to(t: i64, unit: i64) -> i64 {
    let f = floor_to(t, unit);
    if f == t { t } else { f + unit }
}

/// The pieces of `range`, in time order, none empty. Without `rollups` (a filter the
/// rollups cannot answer), the whole range is one raw piece.
pub fn tile(range: &TimeRange, rollups: bool) -> Vec<Piece> {
    let (start, end) = (micros(range.start), micros(range.end));
    let mut cuts: Vec<(Source, i64, i64)> = Vec::with_capacity(5);
    let (m0, m1) = (ceil_to(start, MINUTE_US), floor_to(end, MINUTE_US));
    if !rollups || m0 >= m1 {
        cuts.push((Source::Raw, start, end));
    } else {
        let (h0, h1) = (ceil_to(m0, HOUR_US), floor_to(m1, HOUR_US));
        cuts.push((Source::Raw, start, m0));
        if h0 < h1 {
            cuts.push((Source::Minutes, m0, h0));
            cuts.push((Source::Hours, h0, h1));
            cuts.push((Source::Minutes, h1, m1));
        } else {
            cuts.push((Source::Minutes, m0, m1));
        }
        cuts.push((Source::Raw, m1, end));
    }
    cuts.into_iter()
        .filter(|&(_, a, b)| a < b)
        .map(|(source, a, b)| Piece {
            source,
            range: TimeRange {
                start: from_micros(a),
                end: from_micros(b),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(a: i64, b: i64) -> TimeRange {
        TimeRange {
            start: from_micros(a),
            end: from_micros(b),
        }
    }

    fn summary(pieces: &[Piece]) -> Vec<(Source, i64, i64)> {
        pieces
            .iter()
            .map(|p| (p.source, micros(p.range.start), micros(p.range.end)))
            .collect()
    }

    #[test]
    fn covers_the_range_exactly_with_the_coarsest_tables() {
        // 2026-11-28 09:59:30.5 to 2026-11-29 10:02:10 UTC.
        let h = 1_795_856_400_000_000; // 10:00:00
        let start = h - 29_500_000;
        let end = h + 24 * HOUR_US + 2 * MINUTE_US + 10_000_000;
        let pieces = tile(&range(start, end), true);
        assert_eq!(
            summary(&pieces),
            vec![
                (Source::Raw, start, h),
                (Source::Hours, h, h + 24 * HOUR_US),
                (
                    Source::Minutes,
                    h + 24 * HOUR_US,
                    h + 24 * HOUR_US + 2 * MINUTE_US
                ),
                (Source::Raw, h + 24 * HOUR_US + 2 * MINUTE_US, end),
            ]
        );
        // Contiguous, in order, from start to end.
        for w in pieces.windows(2) {
            assert_eq!(w[0].range.end, w[1].range.start);
        }
    }

    #[test]
    fn short_or_unanswerable_ranges_stay_raw() {
        let h = 1_795_856_400_000_000;
        let within_a_minute = range(h + 1, h + 50_000_000);
        assert_eq!(
            summary(&tile(&within_a_minute, true)),
            vec![(Source::Raw, h + 1, h + 50_000_000)]
        );
        let day = range(h, h + 24 * HOUR_US);
        assert_eq!(
            summary(&tile(&day, false)),
            vec![(Source::Raw, h, h + 24 * HOUR_US)]
        );
        // Minutes only, no whole hour inside.
        let minutes = range(h + MINUTE_US, h + 10 * MINUTE_US);
        assert_eq!(
            summary(&tile(&minutes, true)),
            vec![(Source::Minutes, h + MINUTE_US, h + 10 * MINUTE_US)]
        );
    }
}
