//! Arbitrary bytes of both directions through protocol detection and whichever parser
//! it picks (HTTP/1, HTTP/2, opaque): nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapwire_protocols::{Chunk, ConnectionParser, Direction, Limits, ProtocolParser, Role};

fuzz_target!(|input: &[u8]| {
    let Some((&control, mut data)) = input.split_first() else {
        return;
    };
    let role = match control % 3 {
        0 => Role::Client,
        1 => Role::Server,
        _ => Role::Unknown,
    };
    let limits = Limits {
        max_body_bytes: 128,
        max_buffered_bytes: 1024,
        max_streams: 8,
        ..Limits::default()
    };
    let mut parser = ConnectionParser::new(role, limits);
    let mut out = Vec::new();
    let mut time = 0u64;
    while let Some((&header, tail)) = data.split_first() {
        let n = usize::from(header >> 2).min(tail.len());
        let (piece, tail) = tail.split_at(n);
        let chunk = Chunk {
            direction: if header & 1 == 0 {
                Direction::Egress
            } else {
                Direction::Ingress
            },
            data: piece,
            time_ns: time,
            lost_before: u64::from(header & 2),
            events_lost: false,
        };
        parser.on_chunk(&chunk, &mut out);
        time += 1_000_000_000;
        parser.on_tick(time, &mut out);
        out.clear();
        data = tail;
    }
    parser.on_close(time, &mut out);
});
