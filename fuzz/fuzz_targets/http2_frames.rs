//! Arbitrary bytes, cut at arbitrary points, alternated between directions and
//! sprinkled with losses, through the HTTP/2 parser: nothing may panic, and the
//! streams it tracks stay within the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapwire_protocols::http2::{HttpTwoParser, PREFACE, looks_like_frames};
use tapwire_protocols::{Chunk, Direction, Limits, ProtocolParser, Role};

fuzz_target!(|input: &[u8]| {
    let Some((&control, rest)) = input.split_first() else {
        return;
    };
    let limits = Limits {
        max_body_bytes: 64,
        max_buffered_bytes: 1024,
        max_streams: 8,
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
    let mut parser = if control & 8 != 0 {
        HttpTwoParser::after_upgrade(role, limits)
    } else {
        HttpTwoParser::new(role, limits)
    };
    let mut out = Vec::new();
    let client_dir = if control & 4 == 0 {
        Direction::Egress
    } else {
        Direction::Ingress
    };
    if control & 16 != 0 {
        let preface = Chunk {
            direction: client_dir,
            data: PREFACE,
            time_ns: 0,
            lost_before: 0,
            events_lost: false,
        };
        parser.on_chunk(&preface, &mut out);
    }
    // Records: [len, flags, bytes...]; flags pick the direction, a loss, a tick.
    let mut data = rest;
    let mut time = 1u64;
    while let Some((&len, tail)) = data.split_first() {
        let Some((&flags, tail)) = tail.split_first() else {
            break;
        };
        let n = usize::from(len).min(tail.len());
        let (bytes, next) = tail.split_at(n);
        let _ = looks_like_frames(bytes);
        let chunk = Chunk {
            direction: if flags & 1 == 0 {
                client_dir
            } else {
                match client_dir {
                    Direction::Egress => Direction::Ingress,
                    Direction::Ingress => Direction::Egress,
                }
            },
            data: bytes,
            time_ns: time,
            lost_before: if flags & 2 != 0 {
                u64::from(flags >> 4)
            } else {
                0
            },
            events_lost: flags & 4 != 0,
        };
        parser.on_chunk(&chunk, &mut out);
        if flags & 8 != 0 {
            parser.on_tick(time, &mut out);
        }
        assert!(parser.open_streams() <= 8);
        time += 7;
        data = next;
        out.clear();
    }
    parser.on_close(time, &mut out);
    assert_eq!(parser.open_streams(), 0);
});
