//! HTTP/2 and gRPC parsing throughput on one core, on real recorded conversations
//! (`tests/data/h2_h2load_300.bin`: h2load → nginx, 300 GETs over 10 concurrent streams;
//! `tests/data/grpc_unary_200.bin`: grpcio client → grpcio server, 200 unary calls).
//!
//! Each recording is replayed as many fresh connections through `HttpTwoParser`, each
//! read as one chunk, as the agent feeds it. The baseline, measured in the same run on
//! the same bytes, only walks the frame headers (the least any HTTP/2 parser must do);
//! the ratio says how many times that minimum the full parse costs. Figures are the
//! median of 7 runs; the last line is JSON.

use std::hint::black_box;
use std::time::Instant;

use tapwire_protocols::http2::{HttpTwoParser, PREFACE};
use tapwire_protocols::{Chunk, Direction, Limits, ProtocolParser, Role};

const RUNS: usize = 7;

/// A recorded conversation: each read with the direction it travelled.
type Events = [(Direction, Vec<u8>)];
const TARGET_PAIRS: usize = 60_000;

struct Recording {
    name: &'static str,
    events: Vec<(Direction, Vec<u8>)>,
    bytes: usize,
    pairs: usize,
}

fn load(name: &'static str) -> Recording {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut events = Vec::new();
    let mut rest = &raw[..];
    while let [tag, a, b, c, d, tail @ ..] = rest {
        let len = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
        // Observed as the client: its writes are egress.
        let dir = if *tag == b'C' {
            Direction::Egress
        } else {
            Direction::Ingress
        };
        events.push((dir, tail[..len].to_vec()));
        rest = &tail[len..];
    }
    let bytes = events.iter().map(|(_, b)| b.len()).sum();
    let pairs = parse_once(&events);
    Recording {
        name,
        events,
        bytes,
        pairs,
    }
}

fn parse_once(events: &Events) -> usize {
    let mut parser = HttpTwoParser::new(Role::Client, Limits::default());
    let mut out = Vec::with_capacity(64);
    let mut pairs = 0;
    for (i, (direction, data)) in events.iter().enumerate() {
        let chunk = Chunk {
            direction: *direction,
            data,
            time_ns: 1_700_000_000_000_000_000 + i as u64 * 1000,
            lost_before: 0,
            events_lost: false,
        };
        parser.on_chunk(&chunk, &mut out);
        pairs += out.len();
        black_box(&out);
        out.clear();
    }
    parser.on_close(u64::MAX, &mut out);
    pairs + out.len()
}

/// Walks frame headers only, per direction, across chunk boundaries.
fn walk_frames(events: &Events) -> usize {
    let mut skip = [PREFACE.len(), 0usize];
    let mut head: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut frames = 0;
    for (direction, data) in events {
        let d = usize::from(*direction == Direction::Ingress);
        let mut pos = 0;
        while pos < data.len() {
            if skip[d] > 0 {
                let n = skip[d].min(data.len() - pos);
                skip[d] -= n;
                pos += n;
                continue;
            }
            let need = 9 - head[d].len();
            let n = need.min(data.len() - pos);
            head[d].extend_from_slice(&data[pos..pos + n]);
            pos += n;
            if head[d].len() == 9 {
                let h = &head[d];
                skip[d] = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                head[d].clear();
                frames += 1;
            }
        }
    }
    frames
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Seconds per replay of `f` over the recording, median of RUNS runs.
fn time(rec: &Recording, f: fn(&Events) -> usize) -> f64 {
    let reps = TARGET_PAIRS.div_ceil(rec.pairs.max(1));
    let samples = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..reps {
                black_box(f(black_box(&rec.events)));
            }
            start.elapsed().as_secs_f64() / reps as f64
        })
        .collect();
    median(samples)
}

fn main() {
    let mut json = Vec::new();
    for name in ["h2_h2load_300.bin", "grpc_unary_200.bin"] {
        let rec = load(name);
        let parse = time(&rec, parse_once);
        let walk = time(&rec, walk_frames);
        let pairs_per_s = rec.pairs as f64 / parse;
        let mb_per_s = rec.bytes as f64 / parse / 1e6;
        let base_mb_per_s = rec.bytes as f64 / walk / 1e6;
        println!(
            "{:<20} {:>4} pairs {:>6} bytes: {:>9.0} pairs/s {:>7.1} MB/s | frame walk {:>8.1} MB/s | parse/walk time {:.1}x",
            rec.name,
            rec.pairs,
            rec.bytes,
            pairs_per_s,
            mb_per_s,
            base_mb_per_s,
            walk_ratio(parse, walk)
        );
        json.push(format!(
            "\"{}\":{{\"pairs\":{},\"bytes\":{},\"pairs_per_s\":{:.0},\"mb_per_s\":{:.1},\"baseline_frame_walk_mb_per_s\":{:.1},\"time_ratio_vs_baseline\":{:.2}}}",
            rec.name.trim_end_matches(".bin"),
            rec.pairs,
            rec.bytes,
            pairs_per_s,
            mb_per_s,
            base_mb_per_s,
            walk_ratio(parse, walk)
        ));
    }
    println!(
        "{{\"bench\":\"parse_http2\",\"runs\":{RUNS},\"target_pairs_per_s\":150000,{}}}",
        json.join(",")
    );
}

fn walk_ratio(parse: f64, walk: f64) -> f64 {
    parse / walk
}
