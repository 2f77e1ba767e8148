//! Small HTTP/1 pairs on keep-alive connections through `ConnectionParser` (detection,
//! parsing, pairing, Pair assembly) on one core, against a baseline measured in the
//! same run: a plain `memchr` scan for the head terminator over the same chunks.
//!
//! Run: `cargo bench -p tapwire-protocols --bench parse_http1`. The last line printed is
//! one JSON object with the figures (median of the runs). Rates are per second of the
//! thread's CPU time, so other work on a shared machine does not skew them; wall-clock
//! rates are printed alongside.

use std::hint::black_box;
use std::time::{Duration, Instant};

use tapwire_protocols::{Chunk, ConnectionParser, Direction, Limits, ProtocolParser, Role};

const CONNECTIONS: usize = 20;
const PAIRS_PER_CONNECTION: usize = 2_500;
const RUNS: usize = 7;

/// One connection's chunks as the capture layer delivers them: one chunk per message.
fn record_connection(id: usize) -> Vec<(Direction, Vec<u8>)> {
    let mut chunks = Vec::with_capacity(PAIRS_PER_CONNECTION * 2);
    for i in 0..PAIRS_PER_CONNECTION {
        let request = format!(
            "GET /api/v1/users/{id}/items/{i}?limit=10 HTTP/1.1\r\nHost: inventory.default.svc:8080\r\nUser-Agent: python-requests/2.31.0\r\nAccept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n"
        );
        let body = format!("{{\"id\":{i},\"owner\":{id},\"name\":\"item\",\"ok\":true}}");
        let response = format!(
            "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 28 Nov 2026 08:00:00 GMT\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{body}",
            body.len()
        );
        chunks.push((Direction::Ingress, request.into_bytes()));
        chunks.push((Direction::Egress, response.into_bytes()));
    }
    chunks
}

/// CPU time consumed by the calling thread.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Seconds of (CPU, wall-clock) time `f` takes, and its result.
fn measure<T>(f: impl FnOnce() -> T) -> (T, f64, f64) {
    let wall = Instant::now();
    let cpu = thread_cpu_time();
    let result = f();
    let cpu = (thread_cpu_time() - cpu).as_secs_f64();
    (result, cpu, wall.elapsed().as_secs_f64())
}

/// Parses every connection; returns the number of pairs.
fn run_parser(connections: &[Vec<(Direction, Vec<u8>)>]) -> usize {
    let mut pairs = 0;
    let mut out = Vec::with_capacity(64);
    for chunks in connections {
        let mut parser = ConnectionParser::new(Role::Server, Limits::default());
        for (i, (direction, data)) in chunks.iter().enumerate() {
            let chunk = Chunk {
                direction: *direction,
                data,
                time_ns: 1_764_316_800_000_000_000 + i as u64 * 1_000,
                lost_before: 0,
                events_lost: false,
            };
            parser.on_chunk(&chunk, &mut out);
            pairs += out.len();
            black_box(&out);
            out.clear();
        }
        parser.on_close(u64::MAX / 2, &mut out);
        pairs += out.len();
        out.clear();
    }
    pairs
}

/// The baseline: finds every head terminator in the same chunks and nothing else.
fn run_baseline(connections: &[Vec<(Direction, Vec<u8>)>]) -> usize {
    let finder = memchr::memmem::Finder::new(b"\r\n\r\n");
    let mut heads = 0;
    for chunks in connections {
        for (_, data) in chunks {
            heads += finder.find_iter(black_box(data)).count();
        }
    }
    heads
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let connections: Vec<_> = (0..CONNECTIONS).map(record_connection).collect();
    let bytes: usize = connections.iter().flatten().map(|(_, d)| d.len()).sum();
    let expected = CONNECTIONS * PAIRS_PER_CONNECTION;
    // Warm-up, and a check that every pair came out.
    assert_eq!(run_parser(&connections), expected, "parser lost pairs");
    assert_eq!(
        run_baseline(&connections),
        expected * 2,
        "baseline miscounted"
    );

    let (mut parse_cpu, mut parse_wall, mut base_cpu) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..RUNS {
        let (_, cpu, wall) = measure(|| run_parser(&connections));
        let (_, base, _) = measure(|| run_baseline(&connections));
        println!(
            "run {run}: parser {:.0} pairs/s {:.1} MB/s (cpu), {:.0} pairs/s (wall); baseline {:.1} MB/s (cpu)",
            expected as f64 / cpu,
            bytes as f64 / cpu / 1e6,
            expected as f64 / wall,
            bytes as f64 / base / 1e6
        );
        parse_cpu.push(cpu);
        parse_wall.push(wall);
        base_cpu.push(base);
    }
    let cpu = median(parse_cpu);
    let wall = median(parse_wall);
    let base = median(base_cpu);
    let pairs_per_s = expected as f64 / cpu;
    let mb_per_s = bytes as f64 / cpu / 1e6;
    let baseline_mb_per_s = bytes as f64 / base / 1e6;
    println!(
        "{{\"bench\":\"parse_http1\",\"pairs\":{expected},\"bytes\":{bytes},\"runs\":{RUNS},\"clock\":\"thread cpu time\",\"pairs_per_s\":{pairs_per_s:.0},\"mb_per_s\":{mb_per_s:.2},\"wall_pairs_per_s\":{:.0},\"baseline\":\"memchr scan for CRLFCRLF\",\"baseline_mb_per_s\":{baseline_mb_per_s:.2},\"ratio_to_baseline\":{:.4},\"target_pairs_per_s\":300000}}",
        expected as f64 / wall,
        mb_per_s / baseline_mb_per_s
    );
}
