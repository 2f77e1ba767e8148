//! Replays the committed fuzz corpora (`fuzz/corpus/{http1,connection}`) exactly as the
//! fuzz targets decode them, so every seed and every input the fuzzer kept stays a
//! regression test on stable Rust: no panic, bounded output.

use std::path::Path;

use tapwire_protocols::{Chunk, ConnectionParser, Direction, Limits, ProtocolParser, Role};

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("directory entry").path();
            let bytes = std::fs::read(&path).expect("corpus file");
            (path.display().to_string(), bytes)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    files
}

/// Mirrors `fuzz/fuzz_targets/http1.rs`.
fn run_http1(input: &[u8]) -> usize {
    let Some((&control, rest)) = input.split_first() else {
        return 0;
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
    let mut pairs = 0;
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
    }
    parser.on_close(time, &mut out);
    pairs += out.len();
    pairs
}

/// Mirrors `fuzz/fuzz_targets/connection.rs`.
fn run_connection(input: &[u8]) -> usize {
    let Some((&control, mut data)) = input.split_first() else {
        return 0;
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
        data = tail;
    }
    parser.on_close(time, &mut out);
    out.len()
}

#[test]
fn http1_corpus_replays_without_panics() {
    let mut total = 0;
    for (name, input) in corpus("http1") {
        let pairs = run_http1(&input);
        // Each pair needs at least a request line or status line of the input.
        assert!(pairs <= 1 + input.len() / 8, "{name}: {pairs} pairs");
        total += pairs;
    }
    assert!(total > 0, "the seeds hold real exchanges");
}

#[test]
fn connection_corpus_replays_without_panics() {
    let mut total = 0;
    for (name, input) in corpus("connection") {
        let pairs = run_connection(&input);
        assert!(pairs <= 1 + input.len() / 8, "{name}: {pairs} pairs");
        total += pairs;
    }
    assert!(total > 0, "the seeds hold real exchanges");
}
