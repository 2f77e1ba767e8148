//! Putting each connection's records back in order when they come from several rings.
//!
//! Every CPU writes to its own ring, so when a thread moves to another CPU (or two
//! threads use one socket) a connection's next record can be read, from one ring, before
//! an earlier one still waiting in another. Each record carries its connection's sequence
//! number: a record ahead of the one expected is held here, and handed on as soon as the
//! records before it arrive. A held record whose predecessors do not come is handed on
//! anyway once they cannot be in a ring any more, and the gap then counts as lost.
//!
//! "Cannot be in a ring any more": a record's sequence number is taken while its program
//! runs, and the program commits the record before it returns, so a predecessor of a
//! held record was committed, at the latest, a few microseconds after the held record
//! itself. Once every ring has been drained again after that ([`ReorderBuffer::end_round`])
//! and [`MIN_HOLD_NS`] have passed, it would have been read.
//!
//! Process exits are held the same way, so that a process's last records, still in
//! another ring, reach its connections before the exit ends them.

use std::collections::HashMap;

use crate::connections::hash::U64Map;

/// The least time a record is held before its missing predecessors count as lost.
pub const MIN_HOLD_NS: u64 = 10_000_000;

/// Bytes of held records at most; past it the oldest are handed on early.
pub const MAX_HELD_BYTES: usize = 16 * 1024 * 1024;

/// A record copied out of its ring to wait for its predecessors.
#[derive(Debug)]
pub struct HeldRecord {
    /// The connection's sequence number of the record.
    pub seq: u64,
    /// The record, as read from the ring.
    pub bytes: Vec<u8>,
    round: u64,
    held_ns: u64,
}

/// Records waiting for their predecessors, by connection.
#[derive(Debug, Default)]
pub struct ReorderBuffer {
    /// Held records of each connection, sorted by sequence number.
    by_sock: HashMap<u64, Vec<HeldRecord>, U64Map>,
    /// Exits waiting for the other rings: (pid, round, time).
    exits: Vec<(u32, u64, u64)>,
    held_bytes: usize,
    round: u64,
    /// Records held so far.
    pub held_total: u64,
    /// Records handed on because the buffer was full.
    pub forced_total: u64,
}

impl ReorderBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `sock` has held records.
    #[inline]
    pub fn holds(&self, sock: u64) -> bool {
        !self.by_sock.is_empty() && self.by_sock.contains_key(&sock)
    }

    /// Holds `record` (sequence number `seq` of connection `sock`).
    pub fn hold(&mut self, sock: u64, seq: u64, record: &[u8], now_ns: u64) {
        let held = self.by_sock.entry(sock).or_default();
        let at = held.partition_point(|r| r.seq <= seq);
        held.insert(
            at,
            HeldRecord {
                seq,
                bytes: record.to_vec(),
                round: self.round,
                held_ns: now_ns,
            },
        );
        self.held_bytes += record.len();
        self.held_total += 1;
    }

    /// Holds the exit of `pid` until the other rings have been drained.
    pub fn hold_exit(&mut self, pid: u32, now_ns: u64) {
        self.exits.push((pid, self.round, now_ns));
    }

    /// The first held record of `sock` if its sequence number is at most `expected`
    /// (its turn has come, or it is a late duplicate).
    pub fn take_next(&mut self, sock: u64, expected: u64) -> Option<HeldRecord> {
        let held = self.by_sock.get_mut(&sock)?;
        if held.first().is_none_or(|r| r.seq > expected) {
            return None;
        }
        let record = held.remove(0);
        if held.is_empty() {
            self.by_sock.remove(&sock);
        }
        self.held_bytes -= record.bytes.len();
        Some(record)
    }

    /// Marks the end of a round in which every ring was drained, and returns what no
    /// longer has to wait: the connections whose oldest held record has waited a full
    /// round and [`MIN_HOLD_NS`] (all their held records, in order; the first comes
    /// after a gap), then the exits that have waited as long. When more than
    /// [`MAX_HELD_BYTES`] are held, the oldest connections go too.
    pub fn end_round(&mut self, now_ns: u64) -> Released {
        let round = self.round;
        self.round += 1;
        let due = |held_round: u64, held_ns: u64| {
            held_round < round && now_ns.saturating_sub(held_ns) >= MIN_HOLD_NS
        };
        let oldest_first = self.socks_oldest_first();
        let mut socks: Vec<u64> = oldest_first
            .iter()
            .filter(|&&sock| {
                let first = &self.by_sock[&sock][0];
                due(first.round, first.held_ns)
            })
            .copied()
            .collect();
        if self.held_bytes > MAX_HELD_BYTES {
            // Down to half the bound, oldest first, so a burst is not forced out again
            // at the next round.
            let mut bytes = self.held_bytes;
            for sock in oldest_first {
                if bytes <= MAX_HELD_BYTES / 2 {
                    break;
                }
                let held = &self.by_sock[&sock];
                bytes -= held.iter().map(|r| r.bytes.len()).sum::<usize>();
                if !socks.contains(&sock) {
                    self.forced_total += held.len() as u64;
                    socks.push(sock);
                }
            }
        }
        let (due_exits, waiting): (Vec<_>, Vec<_>) = self
            .exits
            .iter()
            .partition(|&&(_, held_round, held_ns)| due(held_round, held_ns));
        self.exits = waiting;
        Released {
            records: self.take(&socks),
            exits: due_exits.into_iter().map(|(pid, _, _)| pid).collect(),
        }
    }

    /// Everything still held, in order (shutdown).
    pub fn drain(&mut self) -> Released {
        let socks = self.socks_oldest_first();
        Released {
            records: self.take(&socks),
            exits: self.exits.drain(..).map(|(pid, _, _)| pid).collect(),
        }
    }

    /// Connections with held records, the one holding the oldest record first.
    fn socks_oldest_first(&self) -> Vec<u64> {
        let mut socks: Vec<(u64, u64)> = self
            .by_sock
            .iter()
            .filter_map(|(sock, held)| held.first().map(|r| (r.held_ns, *sock)))
            .collect();
        socks.sort_unstable();
        socks.into_iter().map(|(_, sock)| sock).collect()
    }

    /// Removes every held record of `socks`, connection after connection.
    fn take(&mut self, socks: &[u64]) -> Vec<HeldRecord> {
        let mut records = Vec::new();
        for sock in socks {
            if let Some(held) = self.by_sock.remove(sock) {
                self.held_bytes -= held.iter().map(|r| r.bytes.len()).sum::<usize>();
                records.extend(held);
            }
        }
        records
    }

    /// Bytes held now.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }
}

/// What [`ReorderBuffer::end_round`] hands on.
#[derive(Debug, Default)]
pub struct Released {
    /// Held records, grouped by connection, each connection's in sequence order.
    pub records: Vec<HeldRecord>,
    /// Processes whose exit can be handled now.
    pub exits: Vec<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn hands_on_in_sequence_order_when_the_turn_comes() {
        let mut r = ReorderBuffer::new();
        r.hold(7, 3, b"c", 0);
        r.hold(7, 2, b"b", 0);
        assert!(r.holds(7));
        assert!(r.take_next(7, 1).is_none(), "seq 1 still missing");
        assert_eq!(r.take_next(7, 2).map(|h| h.bytes), Some(b"b".to_vec()));
        assert!(r.take_next(7, 2).is_none());
        assert_eq!(r.take_next(7, 3).map(|h| h.bytes), Some(b"c".to_vec()));
        assert!(!r.holds(7));
        assert_eq!(r.held_bytes(), 0);
    }

    #[test]
    fn waits_a_full_round_and_the_minimum_time() {
        let mut r = ReorderBuffer::new();
        r.hold(1, 5, b"x", 0);
        r.hold_exit(42, 0);
        assert!(
            r.end_round(100 * MS).records.is_empty(),
            "held in this round: a predecessor may be unread in a ring drained earlier in it"
        );
        let early = r.end_round(MS);
        assert!(
            early.records.is_empty() && early.exits.is_empty(),
            "too young"
        );
        let due = r.end_round(MIN_HOLD_NS);
        assert_eq!(due.records.iter().map(|h| h.seq).collect::<Vec<_>>(), [5]);
        assert_eq!(due.exits, [42]);
        assert!(!r.holds(1));
    }

    #[test]
    fn a_full_buffer_hands_on_the_oldest_first() {
        let mut r = ReorderBuffer::new();
        let big = vec![0u8; MAX_HELD_BYTES / 3];
        for sock in 0..4u64 {
            r.hold(sock, 1, &big, sock);
        }
        // Same round: nothing is due, but the buffer is over its bound.
        let released = r.end_round(10);
        let socks: Vec<u64> = released
            .records
            .iter()
            .map(|h| h.bytes.len() as u64)
            .collect();
        assert_eq!(socks.len(), 3, "down to half the bound");
        assert!(r.holds(3), "the youngest stays");
        assert_eq!(r.forced_total, 3);
        assert!(r.held_bytes() <= MAX_HELD_BYTES / 2);
    }

    #[test]
    fn drain_returns_everything() {
        let mut r = ReorderBuffer::new();
        r.hold(1, 9, b"a", 0);
        r.hold(2, 4, b"b", 1);
        r.hold_exit(3, 0);
        let all = r.drain();
        assert_eq!(all.records.len(), 2);
        assert_eq!(all.exits, [3]);
        assert_eq!(r.held_bytes(), 0);
    }
}
