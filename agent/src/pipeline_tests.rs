//! The pipeline on records as the rings deliver them: out of order across rings, with
//! gaps that fill late or never, and process exits racing their last records.

use std::sync::{Arc, Mutex};

use tapwire_agent_common::{EVENT_HEADER_BYTES, EventHeader, SockTuple, flag, kind};
use tapwire_protocols::Chunk;

use super::CapturePipeline;
use crate::{
    connections::table::{ConnectionInfo, ConnectionTable},
    events::{clock::BootClock, reorder::MIN_HOLD_NS},
    metrics::AgentMetrics,
    output::{ChunkMeta, SinkError, StreamSink},
};

/// What the sink saw: (sock, seq, bytes, events_lost) per chunk, and closed socks.
#[derive(Default)]
struct Seen {
    chunks: Vec<(u64, u64, Vec<u8>, bool)>,
    closed: Vec<u64>,
}

struct RecordingSink(Arc<Mutex<Seen>>);

impl StreamSink for RecordingSink {
    fn on_chunk(
        &mut self,
        conn: &ConnectionInfo,
        meta: &ChunkMeta<'_>,
        chunk: &Chunk<'_>,
    ) -> Result<(), SinkError> {
        self.0.lock().unwrap().chunks.push((
            conn.sock_id,
            meta.seq,
            chunk.data.to_vec(),
            chunk.events_lost,
        ));
        Ok(())
    }

    fn on_close(&mut self, conn: &ConnectionInfo, _now_ns: u64) -> Result<(), SinkError> {
        self.0.lock().unwrap().closed.push(conn.sock_id);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

fn pipeline() -> (CapturePipeline, Arc<Mutex<Seen>>, Arc<AgentMetrics>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let metrics = Arc::new(AgentMetrics::new());
    let p = CapturePipeline::new(
        ConnectionTable::new(64, u64::MAX / 2),
        Box::new(RecordingSink(seen.clone())),
        metrics.clone(),
        None,
    );
    (p, seen, metrics)
}

/// A record as the kernel writes it, produced `age_ns` ago.
fn record(event_kind: u32, sock: u64, seq: u64, pid: u32, payload: &[u8], age_ns: u64) -> Vec<u8> {
    let header = EventHeader {
        kind: event_kind,
        flags: flag::EGRESS,
        time_ns: BootClock::now_monotonic_ns().saturating_sub(age_ns),
        pid_tgid: (pid as u64) << 32 | pid as u64,
        cgroup_id: 1,
        sock_id: sock,
        seq,
        total_len: payload.len() as u64,
        captured_len: payload.len() as u32,
        fd: 3,
        comm: *b"client\0\0\0\0\0\0\0\0\0\0",
        tuple: SockTuple {
            family: 2,
            local_port: 40000,
            remote_port: 80,
            ..Default::default()
        },
    };
    // SAFETY: EventHeader is plain old data; its bytes are what the kernel writes.
    let bytes: &[u8] =
        unsafe { std::slice::from_raw_parts((&raw const header).cast::<u8>(), EVENT_HEADER_BYTES) };
    let mut out = bytes.to_vec();
    out.extend_from_slice(payload);
    out
}

fn data(sock: u64, seq: u64, payload: &[u8]) -> Vec<u8> {
    record(kind::DATA, sock, seq, 10, payload, 0)
}

#[test]
fn records_read_ahead_of_their_predecessors_come_out_in_order() {
    let (mut p, seen, metrics) = pipeline();
    // Ring 1 is drained first: it holds the connection's records 1 and 3; ring 0 holds
    // 0 and 2.
    for r in [
        data(7, 1, b"b"),
        data(7, 3, b"d"),
        data(7, 0, b"a"),
        data(7, 2, b"c"),
    ] {
        p.handle_record(&r).unwrap();
    }
    p.end_round().unwrap();
    let seen = seen.lock().unwrap();
    let order: Vec<(u64, Vec<u8>, bool)> = seen
        .chunks
        .iter()
        .map(|(_, s, d, l)| (*s, d.clone(), *l))
        .collect();
    assert_eq!(
        order,
        [
            (0, b"a".to_vec(), false),
            (1, b"b".to_vec(), false),
            (2, b"c".to_vec(), false),
            (3, b"d".to_vec(), false)
        ]
    );
    assert_eq!(metrics.events_reordered.get(), 2);
    assert_eq!(metrics.events_lost.get(), 0);
}

#[test]
fn an_open_read_after_the_first_data_still_starts_the_connection() {
    let (mut p, seen, _) = pipeline();
    p.handle_record(&data(9, 1, b"GET")).unwrap();
    p.handle_record(&record(kind::OPEN, 9, 0, 10, b"", 0))
        .unwrap();
    p.handle_record(&data(9, 2, b" /")).unwrap();
    let seen = seen.lock().unwrap();
    let seqs: Vec<u64> = seen.chunks.iter().map(|c| c.1).collect();
    assert_eq!(seqs, [1, 2]);
    assert!(seen.closed.is_empty(), "the open did not end a connection");
}

#[test]
fn a_gap_that_never_fills_is_handed_on_as_lost_after_a_round() {
    let (mut p, seen, metrics) = pipeline();
    let old = 2 * MIN_HOLD_NS;
    p.handle_record(&record(kind::DATA, 5, 0, 10, b"x", old))
        .unwrap();
    p.handle_record(&record(kind::DATA, 5, 2, 10, b"z", old))
        .unwrap();
    p.end_round().unwrap();
    assert_eq!(seen.lock().unwrap().chunks.len(), 1, "waits one full round");
    p.end_round().unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.chunks.len(), 2);
    assert!(
        seen.chunks[1].3,
        "the chunk after the gap says events were lost"
    );
    assert_eq!(metrics.events_lost.get(), 1);
}

#[test]
fn a_young_held_record_waits_for_the_minimum_time() {
    let (mut p, seen, _) = pipeline();
    p.handle_record(&data(5, 0, b"x")).unwrap();
    p.handle_record(&data(5, 2, b"z")).unwrap();
    p.end_round().unwrap();
    p.end_round().unwrap();
    assert_eq!(
        seen.lock().unwrap().chunks.len(),
        1,
        "produced just now: its predecessor may still be on its way"
    );
    p.handle_record(&data(5, 1, b"y")).unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.chunks.iter().map(|c| c.1).collect::<Vec<_>>(),
        [0, 1, 2]
    );
}

#[test]
fn an_exit_waits_for_the_last_records_of_its_process() {
    let (mut p, seen, _) = pipeline();
    p.handle_record(&data(3, 0, b"a")).unwrap();
    // The exit is read from one ring before the process's last record in another.
    p.handle_record(&record(kind::EXIT, 0, 0, 10, b"", 0))
        .unwrap();
    p.handle_record(&data(3, 1, b"b")).unwrap();
    p.end_round().unwrap();
    assert!(seen.lock().unwrap().closed.is_empty());
    std::thread::sleep(std::time::Duration::from_nanos(MIN_HOLD_NS));
    p.end_round().unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.closed, [3], "one connection, ended by the exit");
    assert_eq!(seen.chunks.len(), 2);
}

#[test]
fn shutdown_hands_on_everything_held() {
    let (mut p, seen, _) = pipeline();
    p.handle_record(&data(4, 3, b"late")).unwrap();
    p.shutdown().unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.chunks.len(), 1);
    assert_eq!(seen.closed, [4]);
}
