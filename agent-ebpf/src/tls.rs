//! OpenSSL uprobes: plaintext from SSL_read/SSL_write (and the `_ex` variants).
//!
//! Entry probes remember the call per thread; socket syscalls nested in it tell which
//! socket the SSL object uses (remembered per SSL object for calls that do no I/O) and
//! mark that socket so its ciphertext is not reported. The return probe, shared by all
//! functions, reports the bytes the call really moved.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::{map, uprobe, uretprobe},
    maps::{Array, LruHashMap},
    programs::{ProbeContext, RetProbeContext},
};
use tapwire_agent_common::{drop_reason, flag};

use crate::{
    events::{UserBytes, count_drop, send_data, sock_state_of},
    filters::task_allowed,
};

const SSL_READ: u32 = 1;
const SSL_WRITE: u32 = 2;
const SSL_READ_EX: u32 = 3;
const SSL_WRITE_EX: u32 = 4;
/// Handshake, connect, accept, shutdown: only their nested I/O matters.
const SSL_CONTROL: u32 = 5;

#[repr(C)]
#[derive(Clone, Copy)]
struct SslCall {
    ssl: u64,
    buf: u64,
    /// `size_t *` the `_ex` functions write the byte count to.
    len_ptr: u64,
    op: u32,
    /// Nested exported SSL calls on this thread; the outermost return reports.
    depth: u32,
}

/// The SSL call a thread is inside of.
#[map]
static SSL_ACTIVE: LruHashMap<u64, SslCall> = LruHashMap::with_max_entries(16384, 0);

/// SSL calls in flight on the node: `SSL_ACTIVE` entries inserted and not yet removed.
/// While it is zero no thread is inside an SSL call, and a socket call needs no
/// `SSL_ACTIVE` lookup to know its bytes are not ciphertext. An entry the LRU evicts
/// keeps its count forever, which only costs that lookup again.
#[map]
static SSL_CALLS_IN_FLIGHT: Array<u64> = Array::with_max_entries(1, 0);

/// Adds `delta` (wrapping) to the in-flight count; atomic, as every CPU updates it.
#[inline(always)]
fn add_in_flight(delta: u64) {
    if let Some(count) = SSL_CALLS_IN_FLIGHT.get_ptr_mut(0) {
        // The BPF target has no atomic read-modify-write methods (no compare-and-swap),
        // but its atomic add is the intrinsic's instruction (`lock ... +=`).
        // SAFETY: a map value is 8-byte aligned and lives as long as the program.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(count, delta) };
    }
}

/// Whether any thread may be inside an SSL call.
#[inline(always)]
fn any_in_flight() -> bool {
    match SSL_CALLS_IN_FLIGHT.get_ptr(0) {
        Some(count) => {
            let count = unsafe { core::ptr::read_volatile(count) };
            count != 0
        }
        None => true,
    }
}

/// Forgets the SSL call of an exiting thread (killed inside it: no return probe runs).
#[inline(always)]
pub fn forget_thread(pid_tgid: u64) {
    if any_in_flight() && SSL_ACTIVE.remove(&pid_tgid).is_ok() {
        add_in_flight(u64::MAX);
    }
}

/// (tgid, SSL *) → `struct sock` address learned from nested syscalls.
#[map]
static SSL_SOCK: LruHashMap<[u64; 2], u64> = LruHashMap::with_max_entries(65536, 0);

/// Called by the syscall probes for a TCP socket call that moved bytes. Returns true
/// when the thread is inside an SSL call, i.e. the bytes are ciphertext to drop; the
/// socket is then marked (in its state) so its ciphertext outside SSL calls is dropped too.
#[inline(always)]
pub fn note_nested_syscall(pid_tgid: u64, sk: u64) -> bool {
    if !any_in_flight() {
        return false;
    }
    let Some(call) = (unsafe { SSL_ACTIVE.get(&pid_tgid) }) else {
        return false;
    };
    let key = [pid_tgid >> 32, call.ssl];
    let _ = SSL_SOCK.insert(&key, &sk, BPF_ANY as u64);
    if let Some(state) = sock_state_of(sk) {
        state.tls = 1;
    }
    true
}

#[inline(always)]
fn enter(ctx: &ProbeContext, op: u32) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !task_allowed((pid_tgid >> 32) as u32) {
        return 0;
    }
    if let Some(active) = SSL_ACTIVE.get_ptr_mut(&pid_tgid) {
        unsafe { (*active).depth += 1 };
        return 0;
    }
    let call = SslCall {
        ssl: ctx.arg::<u64>(0).unwrap_or(0),
        buf: ctx.arg::<u64>(1).unwrap_or(0),
        len_ptr: if op == SSL_READ_EX || op == SSL_WRITE_EX {
            ctx.arg::<u64>(3).unwrap_or(0)
        } else {
            0
        },
        op,
        depth: 1,
    };
    if SSL_ACTIVE.insert(&pid_tgid, &call, BPF_ANY as u64).is_err() {
        count_drop(drop_reason::STATE_FULL);
    } else {
        add_in_flight(1);
    }
    0
}

#[uprobe(multi)]
pub fn ssl_read(ctx: ProbeContext) -> u32 {
    enter(&ctx, SSL_READ)
}

#[uprobe(multi)]
pub fn ssl_write(ctx: ProbeContext) -> u32 {
    enter(&ctx, SSL_WRITE)
}

#[uprobe(multi)]
pub fn ssl_read_ex(ctx: ProbeContext) -> u32 {
    enter(&ctx, SSL_READ_EX)
}

#[uprobe(multi)]
pub fn ssl_write_ex(ctx: ProbeContext) -> u32 {
    enter(&ctx, SSL_WRITE_EX)
}

#[uprobe(multi)]
pub fn ssl_control(ctx: ProbeContext) -> u32 {
    enter(&ctx, SSL_CONTROL)
}

/// Attached to the return of every probed function.
#[uretprobe(multi)]
pub fn ssl_return(ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(active) = SSL_ACTIVE.get_ptr_mut(&pid_tgid) else {
        return 0;
    };
    let call = unsafe {
        (*active).depth = (*active).depth.saturating_sub(1);
        if (*active).depth > 0 {
            return 0;
        }
        *active
    };
    if SSL_ACTIVE.remove(&pid_tgid).is_ok() {
        add_in_flight(u64::MAX);
    }
    let ret: i64 = ctx.ret::<i32>() as i64;
    let moved: u64 = match call.op {
        SSL_READ | SSL_WRITE if ret > 0 => ret as u64,
        SSL_READ_EX | SSL_WRITE_EX if ret == 1 => {
            unsafe { bpf_probe_read_user(call.len_ptr as *const u64) }.unwrap_or(0)
        }
        _ => 0,
    };
    if moved == 0 {
        return 0;
    }
    let key = [pid_tgid >> 32, call.ssl];
    let Some(sk) = (unsafe { SSL_SOCK.get(&key) }).copied() else {
        count_drop(drop_reason::TLS_NO_SOCKET);
        return 0;
    };
    let Some(state) = sock_state_of(sk) else {
        count_drop(drop_reason::TLS_NO_SOCKET);
        return 0;
    };
    if state.allowed == 0 {
        return 0;
    }
    let direction = if call.op == SSL_WRITE || call.op == SSL_WRITE_EX {
        flag::EGRESS
    } else {
        0
    };
    send_data(
        u32::MAX,
        direction | flag::TLS,
        moved,
        UserBytes::Buffer(call.buf),
        pid_tgid,
        state,
    );
    0
}
