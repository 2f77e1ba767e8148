//! Building and sending ring buffer records: headers, per-connection state (sequence
//! number, addresses, filter verdict, TLS mark), payload copies (clamped so the verifier
//! can prove them in bounds) and drop counters.

use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::{
        bpf_get_current_cgroup_id, bpf_ktime_get_ns,
        generated::{bpf_get_current_comm, bpf_get_smp_processor_id, bpf_probe_read_user},
    },
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray},
};
use tapwire_agent_common::{
    COMM_LEN, DataEvent, EVENT_HEADER_BYTES, EventHeader, MAX_CAPTURE_BYTES, MAX_IOV_SEGMENTS,
    MAX_IOV_SEGMENTS_MULTI_RECORD, MAX_RECORDS_PER_CALL, SockTuple, drop_reason,
};

use crate::{
    filters::ports_allowed,
    kernel_structs::read_tuple,
    ring::{CHECK_EVERY_BYTES, CpuRing, fill_check_due},
};

/// Payload bytes copied per syscall (user space sets it; clamped to
/// `MAX_RECORDS_PER_CALL * MAX_CAPTURE_BYTES`). Beyond `MAX_CAPTURE_BYTES` a contiguous
/// buffer is sent as several records; iovec calls stop at `MAX_CAPTURE_BYTES`.
#[unsafe(no_mangle)]
static CAPTURE_BYTES: u32 = MAX_CAPTURE_BYTES as u32;

/// Where a data event is assembled (too large for the 512-byte BPF stack), one slot per
/// CPU. A plain array indexed by CPU because per-CPU map values are limited to 32 KiB;
/// user space sizes it to the number of possible CPUs.
#[map]
static SCRATCH: Array<DataEvent> = Array::with_max_entries(1, 0);

/// What the programs keep per connection, so that an event costs one map lookup
/// instead of re-reading the socket's addresses (five kernel reads) and re-checking the
/// port filters (two lookups) every time.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SockState {
    /// Sequence number of the connection's next event; 0 means none was sent yet.
    pub next_seq: u64,
    /// The connection's id in every event header (`sock_id`): unique per boot, so
    /// user space never mistakes a new connection on a reused `struct sock` address for
    /// the old one whose last events may still sit unread in another CPU's ring.
    pub conn_id: u64,
    /// The addresses, read when the entry is created: a connected TCP socket's 4-tuple
    /// does not change, and a new connection on a reused `struct sock` starts with an
    /// open (connect/accept) that replaces the entry.
    pub tuple: SockTuple,
    /// The port filters let this connection through (evaluated once, with the tuple).
    pub allowed: u8,
    /// The TLS probes deliver this socket's plaintext: its ciphertext is suppressed.
    pub tls: u8,
    /// `flag::ROLE_*` learned from the TCP handshake, for an OPEN not sent yet: the
    /// socket tracepoints see the handshake end in softirq context, where the current
    /// task is not the connection's process, so the OPEN goes out with the first data.
    pub role: u8,
    /// This connection's record bytes since one of its records last checked its ring's
    /// fill level (`ring::fill_check_due`), in `UNCHECKED_UNIT`s rounded up. A byte,
    /// not a wider count: a larger value makes the LRU map's elements straddle an
    /// extra cache line, which cost the receive program a tenth of its time.
    pub unchecked_units: u8,
    /// `fd + 1` of the last socket call whose fd was checked to be this socket's file
    /// (0: none yet), in process `fd_tgid`. Later calls through the same fd of the same
    /// process skip the walk from the task's fd table: only a user call on this socket
    /// itself has that fd in its first argument register while the socket moves bytes.
    pub checked_fd: u32,
    /// The process `checked_fd` belongs to.
    pub fd_tgid: u32,
    /// The process whose cgroup and command name the connection's last event carried:
    /// the next data event of the same process leaves them out (`flag::SAME_PROCESS`),
    /// two helper calls that were a tenth of an event's cost.
    pub sent_identity_of: u32,
}

/// Per-connection state by `struct sock` address. LRU: an entry whose close was never
/// seen ages out instead of filling the map.
#[map]
pub static SOCKS: LruHashMap<u64, SockState> = LruHashMap::with_max_entries(65536, 0);

/// The state of `sk`, created (addresses read, filters evaluated) on first use.
/// `None` when the socket's addresses cannot be read.
#[inline(always)]
pub fn sock_state_of(sk: u64) -> Option<&'static mut SockState> {
    if let Some(state) = SOCKS.get_ptr_mut(&sk) {
        return Some(unsafe { &mut *state });
    }
    reset_sock_state(sk)
}

/// Replaces the state of `sk` with a fresh one: a new connection (open) on a socket
/// address that may have carried another before.
#[inline(always)]
pub fn reset_sock_state(sk: u64) -> Option<&'static mut SockState> {
    let tuple = tuple_of(sk)?;
    let state = SockState {
        next_seq: 0,
        conn_id: new_conn_id(),
        tuple,
        allowed: ports_allowed(&tuple) as u8,
        tls: 0,
        role: 0,
        unchecked_units: 0,
        checked_fd: 0,
        fd_tgid: 0,
        sent_identity_of: 0,
    };
    SOCKS.insert(&sk, &state, BPF_ANY as u64).ok()?;
    SOCKS.get_ptr_mut(&sk).map(|state| unsafe { &mut *state })
}

/// A connection id no other connection of this boot has had: the monotonic clock in
/// nanoseconds with the CPU in the low byte. One CPU cannot start two connections in
/// the same nanosecond, and two CPUs differ in the low byte (machines with more than
/// 256 CPUs would need the same nanosecond too).
#[inline(always)]
fn new_conn_id() -> u64 {
    let now = unsafe { bpf_ktime_get_ns() };
    let cpu = unsafe { bpf_get_smp_processor_id() } as u64;
    (now << 8) | (cpu & 0xff)
}

/// Per-CPU counters indexed by `drop_reason`.
#[map]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(drop_reason::COUNT, 0);

/// Counts one occurrence of `reason`.
#[inline(always)]
pub fn count_drop(reason: u32) {
    if let Some(counter) = DROPS.get_ptr_mut(reason) {
        unsafe { *counter += 1 };
    }
}

#[inline(always)]
fn capture_cap() -> usize {
    let cap = unsafe { core::ptr::read_volatile(&raw const CAPTURE_BYTES) } as usize;
    if cap > MAX_CAPTURE_BYTES {
        MAX_CAPTURE_BYTES
    } else {
        cap
    }
}

#[inline(always)]
fn capture_cap_per_call() -> u64 {
    let cap = unsafe { core::ptr::read_volatile(&raw const CAPTURE_BYTES) } as u64;
    let max = (MAX_RECORDS_PER_CALL * MAX_CAPTURE_BYTES) as u64;
    if cap > max { max } else { cap }
}

/// Sends a contiguous buffer as up to `MAX_RECORDS_PER_CALL` records of at most
/// `MAX_CAPTURE_BYTES` each; the last record's `total_len` includes the uncaptured tail.
#[inline(always)]
fn send_buffer(fd: u32, flags: u32, total: u64, src: u64, task: u64, state: &mut SockState) {
    let want = if total < capture_cap_per_call() {
        total
    } else {
        capture_cap_per_call()
    };
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(event) = SCRATCH.get_ptr_mut(cpu) else {
        return;
    };
    let event = unsafe { &mut *event };
    let data = event.data.as_mut_ptr();
    let flags =
        flags | fill_identity(&mut event.header, tapwire_agent_common::kind::DATA, task, state);
    for i in 0..MAX_RECORDS_PER_CALL as u64 {
        let start = i * MAX_CAPTURE_BYTES as u64;
        if i > 0 && start >= want {
            break;
        }
        let rest = want.saturating_sub(start);
        let mut len = if rest < MAX_CAPTURE_BYTES as u64 {
            rest as usize
        } else {
            MAX_CAPTURE_BYTES
        };
        let last = start + len as u64 >= want || i + 1 == MAX_RECORDS_PER_CALL as u64;
        fill_header(
            &mut event.header,
            tapwire_agent_common::kind::DATA,
            flags,
            fd,
            task,
            state,
        );
        event.header.total_len = if last { total - start } else { len as u64 };
        if len > MAX_CAPTURE_BYTES {
            len = MAX_CAPTURE_BYTES;
        }
        if !copy_user(data, src + start, len) {
            count_drop(drop_reason::COPY_FAILED);
            len = 0;
        } else if last && (start + len as u64) < total {
            count_drop(drop_reason::TRUNCATED);
        }
        event.header.captured_len = len as u32;
        let record = unsafe {
            core::slice::from_raw_parts(
                event as *const DataEvent as *const u8,
                EVENT_HEADER_BYTES + len,
            )
        };
        output_data(record, state);
        if last {
            break;
        }
    }
}

/// Fills the process identity (cgroup id, command name) of an event of the connection
/// of `state`, or leaves it out (zero) when the connection's last event came from the
/// same process; returns the flag to add (`flag::SAME_PROCESS` or 0). Every event but
/// data carries it: opens and closes are rare, and a close may run in softirq context,
/// on behalf of no process of the connection. Called once per call, not per record: a
/// decision per record of a multi-record call would multiply the paths the verifier
/// walks.
#[inline(always)]
pub fn fill_identity(header: &mut EventHeader, kind: u32, task: u64, state: &mut SockState) -> u32 {
    let tgid = (task >> 32) as u32;
    if kind == tapwire_agent_common::kind::DATA && state.sent_identity_of == tgid {
        header.cgroup_id = 0;
        clear_comm(&mut header.comm);
        return tapwire_agent_common::flag::SAME_PROCESS;
    }
    state.sent_identity_of = tgid;
    header.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    write_current_comm(&mut header.comm);
    0
}

// `clear_comm` stores words: the name sits at an 8-byte aligned offset.
const _: () = assert!(core::mem::offset_of!(EventHeader, comm) % 8 == 0);
const _: () = assert!(COMM_LEN == 16);

/// Writes the current task's command name into `comm` with the helper itself. aya's
/// `bpf_get_current_comm()` fills a stack array that is then copied, and both the
/// array's zeroing and the copy compile to byte-at-a-time loops. The kernel zeroes the
/// buffer when it has no name to give.
#[inline(always)]
pub fn write_current_comm(comm: &mut [u8; COMM_LEN]) {
    unsafe { bpf_get_current_comm(comm.as_mut_ptr().cast(), COMM_LEN as u32) };
}

/// Zeroes `comm` with two 8-byte stores. `= [0; 16]` becomes a call to a
/// byte-at-a-time `memset` subprogram: 80 instructions and a call on every data event.
#[inline(always)]
fn clear_comm(comm: &mut [u8; COMM_LEN]) {
    let words = comm.as_mut_ptr().cast::<u64>();
    // Volatile so the stores are not merged back into a memset call.
    unsafe {
        core::ptr::write_volatile(words, 0);
        core::ptr::write_volatile(words.add(1), 0);
    }
}

/// Fills the fields every connection event shares but the identity
/// ([`fill_identity`]) and takes the connection's next sequence number. `task` is the
/// current `bpf_get_current_pid_tgid()`, which every caller has already read: with
/// return-thunk mitigations even the cheapest helper call costs, and an event used to
/// make this one three times.
#[inline(always)]
pub fn fill_header(
    header: &mut EventHeader,
    kind: u32,
    flags: u32,
    fd: u32,
    task: u64,
    state: &mut SockState,
) {
    // Not atomic: two CPUs racing on one socket may reuse a number, which user space
    // tolerates; a missed increment never hides a lost event.
    let seq = state.next_seq;
    state.next_seq = seq + 1;
    header.kind = kind;
    header.flags = flags;
    header.time_ns = unsafe { bpf_ktime_get_ns() };
    header.pid_tgid = task;
    header.sock_id = state.conn_id;
    header.seq = seq;
    header.total_len = 0;
    header.captured_len = 0;
    header.fd = fd;
    copy_tuple(&mut header.tuple, &state.tuple);
}

// Both tuples sit at 8-byte aligned offsets (map values and ring records are 8-byte
// aligned), which `copy_tuple` relies on.
const _: () = assert!(core::mem::offset_of!(EventHeader, tuple) % 8 == 0);
const _: () = assert!(core::mem::offset_of!(SockState, tuple) % 8 == 0);
const _: () = assert!(core::mem::size_of::<SockTuple>() == 40);

/// Copies a tuple as five 64-bit words. A plain assignment between a map value and a
/// record becomes a call to a byte-at-a-time `memmove` (LLVM cannot rule out overlap),
/// 40 iterations on every event.
#[inline(always)]
fn copy_tuple(dst: &mut SockTuple, src: &SockTuple) {
    let dst = dst as *mut SockTuple as *mut u64;
    let src = src as *const SockTuple as *const u64;
    for i in 0..5 {
        // Volatile so the loop is not turned back into a memmove call.
        unsafe { core::ptr::write_volatile(dst.add(i), core::ptr::read_volatile(src.add(i))) };
    }
}

/// Sends the OPEN of the connection of `state` with `role` (`flag::ROLE_*`).
#[inline(always)]
pub fn send_open(fd: u32, role: u32, task: u64, state: &mut SockState) {
    let mut header = empty_header();
    fill_header(
        &mut header,
        tapwire_agent_common::kind::OPEN,
        role,
        fd,
        task,
        state,
    );
    fill_identity(&mut header, tapwire_agent_common::kind::OPEN, task, state);
    send_header(&header);
}

/// A header with every field zero, to be filled in.
#[inline(always)]
pub fn empty_header() -> EventHeader {
    EventHeader {
        kind: 0,
        flags: 0,
        time_ns: 0,
        pid_tgid: 0,
        cgroup_id: 0,
        sock_id: 0,
        seq: 0,
        total_len: 0,
        captured_len: 0,
        fd: 0,
        comm: [0; 16],
        tuple: SockTuple::default(),
    }
}

/// Sends a header-only event (open, close, exec, exit).
#[inline(always)]
pub fn send_header(header: &EventHeader) {
    let record = unsafe {
        core::slice::from_raw_parts(
            header as *const EventHeader as *const u8,
            EVENT_HEADER_BYTES,
        )
    };
    if let Some(ring) = CpuRing::current() {
        ring.output(record);
    }
}

/// Where a data event's bytes are in user memory.
#[derive(Clone, Copy)]
pub enum UserBytes {
    /// One contiguous buffer.
    Buffer(u64),
    /// An array of `struct iovec` with this many entries.
    Vector(u64, u64),
    /// Nothing to copy (sendfile): only the length is reported.
    None,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct IoVec {
    base: u64,
    len: u64,
}

/// Size of a `struct iovec`.
const IOVEC_BYTES: usize = core::mem::size_of::<IoVec>();

/// Leading entries of an iovec array read at once (on the stack).
const BATCHED_IOVECS: usize = 4;

/// Builds and sends a data event for `total` bytes the current task (`task`, its
/// `bpf_get_current_pid_tgid()`) moved on the connection of `state`.
#[inline(always)]
pub fn send_data(
    fd: u32,
    flags: u32,
    total: u64,
    bytes: UserBytes,
    task: u64,
    state: &mut SockState,
) {
    if state.next_seq == 0 && state.role != 0 {
        send_open(fd, state.role as u32, task, state);
    }
    if let UserBytes::Buffer(src) = bytes {
        send_buffer(fd, flags, total, src, task, state);
        return;
    }
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(event) = SCRATCH.get_ptr_mut(cpu) else {
        return;
    };
    let event = unsafe { &mut *event };
    let flags =
        flags | fill_identity(&mut event.header, tapwire_agent_common::kind::DATA, task, state);
    fill_header(
        &mut event.header,
        tapwire_agent_common::kind::DATA,
        flags,
        fd,
        task,
        state,
    );
    event.header.total_len = total;
    let cap = capture_cap();
    let want = if total < cap as u64 {
        total as usize
    } else {
        cap
    };
    let data = event.data.as_mut_ptr();
    let mut copied: usize = 0;
    let mut failed = false;
    match bytes {
        UserBytes::Buffer(src) => {
            let mut len = want;
            if len > MAX_CAPTURE_BYTES {
                len = MAX_CAPTURE_BYTES;
            }
            if copy_user(data, src, len) {
                copied = len;
            } else {
                failed = true;
            }
        }
        UserBytes::Vector(iov, count) => {
            // A constant to the verifier (read-only global), so it prunes the iterations
            // that can never run.
            let segments = if capture_cap_per_call() > MAX_CAPTURE_BYTES as u64 {
                MAX_IOV_SEGMENTS_MULTI_RECORD as u64
            } else {
                MAX_IOV_SEGMENTS as u64
            };
            // The first entries come in one user read: most vector calls have a few
            // segments (a header and a body), and each read pays the helper's fixed
            // cost and the kernel's user-copy checks. The syscall itself has just read
            // these `count` entries, so the read fails only if another thread unmapped
            // them meanwhile (counted as a failed copy, like any other).
            let mut first = core::mem::MaybeUninit::<[IoVec; BATCHED_IOVECS]>::uninit();
            let batched = if count < BATCHED_IOVECS as u64 {
                count
            } else {
                BATCHED_IOVECS as u64
            };
            if !copy_user(first.as_mut_ptr().cast(), iov, batched as usize * IOVEC_BYTES) {
                failed = true;
            }
            for i in 0..MAX_IOV_SEGMENTS as u64 {
                if failed || i >= count || i >= segments || copied >= want {
                    break;
                }
                let segment = if i < BATCHED_IOVECS as u64 {
                    // SAFETY: entries below `batched` were read above; `i < count`.
                    unsafe { (*first.as_ptr())[i as usize] }
                } else {
                    match unsafe {
                        aya_ebpf::helpers::bpf_probe_read_user(
                            (iov + i * IOVEC_BYTES as u64) as *const IoVec,
                        )
                    } {
                        Ok(segment) => segment,
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                };
                let room = want - copied;
                let len = if segment.len < room as u64 {
                    segment.len as usize
                } else {
                    room
                };
                // LLVM knows `room` is below the cap and drops a plain clamp; the
                // verifier does not (it sees `want - copied` as possibly negative).
                let mut len = opaque(len);
                if len > MAX_CAPTURE_BYTES {
                    len = MAX_CAPTURE_BYTES;
                }
                let at = copied & (MAX_CAPTURE_BYTES - 1);
                if !copy_user(unsafe { data.add(at) }, segment.base, len) {
                    failed = true;
                    break;
                }
                copied += len;
            }
        }
        UserBytes::None => {}
    }
    if failed {
        count_drop(drop_reason::COPY_FAILED);
    }
    if (copied as u64) < total && !failed {
        count_drop(drop_reason::TRUNCATED);
    }
    if copied > MAX_CAPTURE_BYTES {
        copied = MAX_CAPTURE_BYTES;
    }
    event.header.captured_len = copied as u32;
    let size = EVENT_HEADER_BYTES + copied;
    let record =
        unsafe { core::slice::from_raw_parts(event as *const DataEvent as *const u8, size) };
    output_data(record, state);
}

/// The unit of `SockState::unchecked_units`, in bytes.
const UNCHECKED_UNIT: u64 = 128;
const _: () = assert!(CHECK_EVERY_BYTES / UNCHECKED_UNIT <= u8::MAX as u64);
const _: () = assert!(core::mem::size_of::<SockState>() == 72);

/// Sends a data record of the connection of `state`. When it is lost, the next event
/// carries the process identity again: user space never saw this one's.
#[inline(always)]
fn output_data(record: &[u8], state: &mut SockState) {
    let units = u64::from(state.unchecked_units) + (record.len() as u64).div_ceil(UNCHECKED_UNIT);
    let bytes = units * UNCHECKED_UNIT;
    let unchecked = if fill_check_due(state.next_seq, bytes) {
        state.unchecked_units = 0;
        Some(bytes)
    } else {
        // Below the check's byte bound, so it fits in the byte (asserted above).
        state.unchecked_units = units as u8;
        None
    };
    let sent = match CpuRing::current() {
        Some(ring) => ring.output_data(record, unchecked),
        None => false,
    };
    if !sent {
        state.sent_identity_of = 0;
    }
}

/// `value`, with what LLVM knows of its range forgotten (a stack round trip), so a
/// bounds check the verifier needs is not optimised away as redundant.
#[inline(always)]
fn opaque(value: usize) -> usize {
    let slot = value;
    unsafe { core::ptr::read_volatile(&slot) }
}

#[inline(always)]
fn copy_user(dst: *mut u8, src: u64, len: usize) -> bool {
    if len == 0 {
        return true;
    }
    unsafe { bpf_probe_read_user(dst.cast(), len as u32, src as *const _) == 0 }
}

/// Reads the addresses of `sk`; counts nothing (an unreadable socket is simply skipped).
#[inline(always)]
fn tuple_of(sk: u64) -> Option<SockTuple> {
    let mut tuple = SockTuple::default();
    read_tuple(sk, &mut tuple)?;
    Some(tuple)
}
