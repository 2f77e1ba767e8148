//! Arbitrary bytes, cut at arbitrary points and alternated between directions, through
//! the connection parser of an HTTP/1 connection: nothing may panic, and memory must
//! stay bounded by the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapwire_protocols::{Chunk, ConnectionParser, Direction, Limits, ProtocolParser, Role};

fuzz_target!(|input: &[u8]| {
    // Every stream starts as HTTP/1 so the fuzzer spends its time in the HTTP/1 parser.
    let Some((&control, rest)) = input.split_first() else {
        return;
    };
    let limits = Limits {
        max_body_bytes: 64,
        max_buffered_bytes: 512,
        max_pending_pairs: 4,
        idle_timeout_ns: 50,
        stream_flush_interval_ns: 20,
        stream_flush_bytes: 256,
        ..Limits::default()
    };
    let role = match control % 3 {
        0 => Role::Client,
        1 => Role::Server,
        _ => Role::Unknown,
    };
    let mut parser = ConnectionParser::new(role, limits);
    let mut out = Vec::new();
    let (req_dir, res_dir) = if control & 4 == 0 {
        (Direction::Egress, Direction::Ingress)
    } else {
        (Direction::Ingress, Direction::Egress)
    };
    let start = Chunk {
        direction: req_dir,
        data: b"GET / HTTP/1.1\r\n\r\n",
        time_ns: 0,
        lost_before: 0,
        events_lost: false,
    };
    parser.on_chunk(&start, &mut out);
    // The rest is a sequence of records: [len, flags, bytes...].
    let mut data = rest;
    let mut time = 1u64;
    while let Some((&len, tail)) = data.split_first() {
        let Some((&flags, tail)) = tail.split_first() else {
            break;
        };
        let n = usize::from(len).min(tail.len());
        let (piece, tail) = tail.split_at(n);
        let chunk = Chunk {
            direction: if flags & 1 == 0 { req_dir } else { res_dir },
            data: piece,
            time_ns: time,
            lost_before: if flags & 2 != 0 {
                u64::from(flags >> 4)
            } else {
                0
            },
            events_lost: flags & 8 != 0,
        };
        parser.on_chunk(&chunk, &mut out);
        if flags & 4 != 0 {
            parser.on_tick(time * 10, &mut out);
        }
        time += 1;
        data = tail;
        out.clear();
    }
    parser.on_close(time, &mut out);
});
