//! Per-connection, per-direction streams: turns ordered kernel events into parser
//! [`Chunk`]s, marking gaps where events were lost (sequence numbers) or bytes were not
//! copied (payload over the capture cap).

use tapwire_protocols::{Chunk, Direction};

/// Stream state of one connection.
#[derive(Debug, Default, Clone)]
pub struct StreamTracker {
    next_seq: Option<u64>,
    /// A gap of unknown size is pending for [egress, ingress].
    events_lost: [bool; 2],
    /// Kernel events lost on this connection (sequence gaps).
    pub lost_events: u64,
}

fn index(direction: Direction) -> usize {
    match direction {
        Direction::Egress => 0,
        Direction::Ingress => 1,
    }
}

impl StreamTracker {
    /// Records the sequence number of any event of the connection; returns how many
    /// events are missing before it.
    pub fn observe_seq(&mut self, seq: u64) -> u64 {
        let missing = match self.next_seq {
            Some(expected) if seq > expected => seq - expected,
            _ => 0,
        };
        if missing > 0 {
            // Which direction lost bytes is unknown: both get the mark.
            self.events_lost = [true, true];
            self.lost_events += missing;
        }
        // Never move backwards: a racing duplicate number must not re-open a gap.
        if self.next_seq.is_none_or(|expected| seq + 1 > expected) {
            self.next_seq = Some(seq + 1);
        }
        missing
    }

    /// The sequence number the next event should carry; `None` before the first.
    pub fn next_seq(&self) -> Option<u64> {
        self.next_seq
    }

    /// The chunks for one data event: the captured bytes, then a gap marker carrying
    /// the bytes the kernel saw but did not copy (if any).
    pub fn chunks<'a>(
        &mut self,
        direction: Direction,
        data: &'a [u8],
        total_len: u64,
        time_ns: u64,
    ) -> (Chunk<'a>, Option<Chunk<'a>>) {
        let i = index(direction);
        let events_lost = std::mem::take(&mut self.events_lost[i]);
        let first = Chunk {
            direction,
            data,
            time_ns,
            lost_before: 0,
            events_lost,
        };
        let uncaptured = total_len.saturating_sub(data.len() as u64);
        let gap = (uncaptured > 0).then_some(Chunk {
            direction,
            data: &[],
            time_ns,
            lost_before: uncaptured,
            events_lost: false,
        });
        (first, gap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_sequence_gaps_on_both_directions_once() {
        let mut s = StreamTracker::default();
        assert_eq!(s.observe_seq(5), 0, "the first event sets the baseline");
        assert_eq!(s.observe_seq(6), 0);
        assert_eq!(s.observe_seq(9), 2);
        let (c, _) = s.chunks(Direction::Egress, b"x", 1, 0);
        assert!(c.events_lost);
        let (c, _) = s.chunks(Direction::Egress, b"y", 1, 0);
        assert!(!c.events_lost);
        let (c, _) = s.chunks(Direction::Ingress, b"z", 1, 0);
        assert!(c.events_lost);
        assert_eq!(s.observe_seq(9), 0, "a duplicate is not a gap");
        assert_eq!(s.lost_events, 2);
    }

    #[test]
    fn reports_uncaptured_tail_as_gap_marker() {
        let mut s = StreamTracker::default();
        let (c, gap) = s.chunks(Direction::Ingress, b"abc", 10, 7);
        assert_eq!(c.data, b"abc");
        let gap = gap.unwrap();
        assert_eq!((gap.lost_before, gap.data.len()), (7, 0));
        let (_, gap) = s.chunks(Direction::Ingress, b"abc", 3, 7);
        assert!(gap.is_none());
    }
}
