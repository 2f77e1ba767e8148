//! Inputs the fuzzers found (`tests/data/fuzz/<target>/`), replayed with the fuzz
//! targets' own decoding of the input. A counting allocator checks the memory bound
//! they broke: no single allocation may exceed 1 MiB with the small fuzzing limits.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use tapwire_protocols::http2::{HttpTwoParser, PREFACE};
use tapwire_protocols::{Chunk, Direction, Limits, ProtocolParser, Role};

struct LargestAllocation;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only records the requested size.
unsafe impl GlobalAlloc for LargestAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: LargestAllocation = LargestAllocation;

/// `fuzz/fuzz_targets/http2_frames.rs`, minus its own assertions.
fn http2_frames(input: &[u8]) -> usize {
    let Some((&control, rest)) = input.split_first() else {
        return 0;
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
    let (client_dir, server_dir) = if control & 4 == 0 {
        (Direction::Egress, Direction::Ingress)
    } else {
        (Direction::Ingress, Direction::Egress)
    };
    let chunk = |direction, data, time_ns, lost_before, events_lost| Chunk {
        direction,
        data,
        time_ns,
        lost_before,
        events_lost,
    };
    if control & 16 != 0 {
        parser.on_chunk(&chunk(client_dir, PREFACE, 0, 0, false), &mut out);
    }
    let mut data = rest;
    let mut time = 1u64;
    while let [len, flags, tail @ ..] = data {
        let n = usize::from(*len).min(tail.len());
        let (bytes, next) = tail.split_at(n);
        let dir = if flags & 1 == 0 {
            client_dir
        } else {
            server_dir
        };
        let lost = if flags & 2 != 0 {
            u64::from(flags >> 4)
        } else {
            0
        };
        parser.on_chunk(&chunk(dir, bytes, time, lost, flags & 4 != 0), &mut out);
        if flags & 8 != 0 {
            parser.on_tick(time, &mut out);
        }
        assert!(parser.open_streams() <= 8);
        time += 7;
        data = next;
    }
    parser.on_close(time, &mut out);
    out.len()
}

#[test]
fn http2_frames_crashes_stay_fixed() {
    let dir = format!(
        "{}/tests/data/fuzz/http2_frames",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let input = std::fs::read(&path).unwrap();
        LARGEST.store(0, Ordering::Relaxed);
        http2_frames(&input);
        let largest = LARGEST.load(Ordering::Relaxed);
        assert!(
            largest <= 1 << 20,
            "{}: allocated {largest} bytes at once",
            path.display()
        );
        files += 1;
    }
    assert!(files > 0, "no regression inputs in {dir}");
}
