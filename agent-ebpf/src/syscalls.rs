//! Syscall tracepoints: socket data, connection open and close, process exec and exit.

use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::bpf_get_current_pid_tgid,
    macros::{map, tracepoint},
    maps::HashMap,
    programs::TracePointContext,
};
use tapwire_agent_common::{EventHeader, SockTuple, drop_reason, flag, kind};

use crate::{
    events::{SEQ, UserBytes, count_drop, fill_header, send_data, send_header, tuple_of},
    filters::{is_agent, ports_allowed, task_allowed},
    kernel_structs::tcp_sock_of_fd,
    tls::{TLS_SOCKS, note_nested_syscall},
};

const OP_READ: u32 = 1;
const OP_WRITE: u32 = 2;
const OP_READV: u32 = 3;
const OP_WRITEV: u32 = 4;
const OP_RECVMSG: u32 = 5;
const OP_SENDMSG: u32 = 6;
const OP_SENDFILE: u32 = 7;
const OP_CONNECT: u32 = 8;
const OP_ACCEPT: u32 = 9;

const EINPROGRESS: i64 = -115;
const TCP_CLOSE: i32 = 7;

/// A socket call between its entry and exit tracepoints.
#[repr(C)]
#[derive(Clone, Copy)]
struct PendingCall {
    sk: u64,
    /// Buffer, iovec array or msghdr (user address).
    buf: u64,
    /// iovec count for readv/writev.
    count: u64,
    fd: u32,
    op: u32,
}

/// In-flight calls per thread. A plain hash (cheaper per update than LRU on this hot
/// path): an entry left by a thread killed mid-call is overwritten when its thread id is
/// reused, and the table is sized far above the number of threads blocked in I/O.
#[map]
static PENDING: HashMap<u64, PendingCall> = HashMap::with_max_entries(65536, 0);

// Offsets of sys_enter_* arguments and sys_exit_* ret in the tracepoint record.
const ARG0: usize = 16;
const ARG1: usize = 24;
const ARG2: usize = 32;
const ARG3: usize = 40;
/// recv flag: the bytes stay queued and will be read again, so a peek is not data.
const MSG_PEEK: u64 = 2;
const RET: usize = 16;

#[inline(always)]
fn arg(ctx: &TracePointContext, offset: usize) -> u64 {
    unsafe { ctx.read_at::<u64>(offset) }.unwrap_or(0)
}

/// Records a data call at entry when its fd is a TCP socket this agent captures.
#[inline(always)]
fn enter_data(ctx: &TracePointContext, op: u32, flags_arg: Option<usize>) -> u32 {
    if let Some(offset) = flags_arg
        && arg(ctx, offset) & MSG_PEEK != 0
    {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if !task_allowed((pid_tgid >> 32) as u32) {
        return 0;
    }
    let fd = arg(ctx, ARG0) as u32;
    let Some(sk) = tcp_sock_of_fd(fd) else {
        return 0;
    };
    // Ciphertext of a connection whose plaintext the TLS probes deliver is dropped.
    if note_nested_syscall(pid_tgid, sk) || unsafe { TLS_SOCKS.get(&sk) }.is_some() {
        return 0;
    }
    let call = PendingCall {
        sk,
        buf: arg(ctx, ARG1),
        count: arg(ctx, ARG2),
        fd,
        op,
    };
    if PENDING.insert(&pid_tgid, &call, BPF_ANY as u64).is_err() {
        count_drop(drop_reason::STATE_FULL);
    }
    0
}

#[tracepoint]
pub fn enter_read(ctx: TracePointContext) -> u32 {
    enter_data(&ctx, OP_READ, None)
}

#[tracepoint]
pub fn enter_recvfrom(ctx: TracePointContext) -> u32 {
    enter_data(&ctx, OP_READ, Some(ARG3))
}

#[tracepoint]
pub fn enter_write(ctx: TracePointContext) -> u32 {
    enter_data(&ctx, OP_WRITE, None)
}

#[tracepoint]
pub fn enter_readv(ctx: TracePointContext) -> u32 {
    enter_data(&ctx, OP_READV, None)
}

#[tracepoint]
pub fn enter_writev(ctx: TracePointContext) -> u32 {
    enter_data(&ctx, OP_WRITEV, None)
}

#[tracepoint]
pub fn enter_recvmsg(ctx: TracePointContext) -> u32 {
    enter_data(&ctx, OP_RECVMSG, Some(ARG2))
}

#[tracepoint]
pub fn enter_sendmsg(ctx: TracePointContext) -> u32 {
    enter_data(&ctx, OP_SENDMSG, None)
}

#[tracepoint]
pub fn enter_sendfile(ctx: TracePointContext) -> u32 {
    enter_data(&ctx, OP_SENDFILE, None)
}

#[tracepoint]
pub fn enter_connect(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !task_allowed((pid_tgid >> 32) as u32) {
        return 0;
    }
    let fd = arg(&ctx, ARG0) as u32;
    let Some(sk) = tcp_sock_of_fd(fd) else {
        return 0;
    };
    let call = PendingCall {
        sk,
        buf: 0,
        count: 0,
        fd,
        op: OP_CONNECT,
    };
    if PENDING.insert(&pid_tgid, &call, BPF_ANY as u64).is_err() {
        count_drop(drop_reason::STATE_FULL);
    }
    0
}

#[tracepoint]
pub fn enter_accept(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !task_allowed((pid_tgid >> 32) as u32) {
        return 0;
    }
    // The new fd is only known at exit.
    let call = PendingCall {
        sk: 0,
        buf: 0,
        count: 0,
        fd: 0,
        op: OP_ACCEPT,
    };
    if PENDING.insert(&pid_tgid, &call, BPF_ANY as u64).is_err() {
        count_drop(drop_reason::STATE_FULL);
    }
    0
}

/// One exit program for every call recorded at entry: the op says what to report.
#[tracepoint]
pub fn exit_call(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(call) = (unsafe { PENDING.get(&pid_tgid) }).copied() else {
        exit_without_entry(&ctx, pid_tgid);
        return 0;
    };
    let _ = PENDING.remove(&pid_tgid);
    let ret = arg(&ctx, RET) as i64;
    match call.op {
        OP_CONNECT => {
            if ret == 0 || ret == EINPROGRESS {
                send_open(call.sk, call.fd, flag::ROLE_CLIENT);
            }
        }
        OP_ACCEPT => {
            if ret >= 0 {
                let fd = ret as u32;
                if let Some(sk) = tcp_sock_of_fd(fd) {
                    send_open(sk, fd, flag::ROLE_SERVER);
                }
            }
        }
        _ => {
            if ret > 0 {
                exit_data(&call, ret as u64);
            }
        }
    }
    0
}

// x86_64 syscall numbers and `struct pt_regs` offsets of the argument registers.
const NR_READ: i32 = 0;
const NR_WRITE: i32 = 1;
const NR_READV: i32 = 19;
const NR_WRITEV: i32 = 20;
const NR_SENDFILE: i32 = 40;
const NR_ACCEPT: i32 = 43;
const NR_SENDTO: i32 = 44;
const NR_RECVFROM: i32 = 45;
const NR_SENDMSG: i32 = 46;
const NR_RECVMSG: i32 = 47;
const NR_ACCEPT4: i32 = 288;
const REG_DI: u64 = 112;
const REG_SI: u64 = 104;
const REG_DX: u64 = 96;
const REG_R10: u64 = 56;

/// A call whose entry was not seen: it started before the agent attached (a server
/// blocked in accept, a keep-alive connection blocked in read). The arguments are still
/// in the task's saved user registers, so the call is reconstructed from them.
#[inline(never)]
fn exit_without_entry(ctx: &TracePointContext, pid_tgid: u64) {
    let ret = arg(ctx, RET) as i64;
    if ret < 0 {
        return;
    }
    let nr: i32 = unsafe { ctx.read_at(8) }.unwrap_or(-1);
    let (op, flags_reg) = match nr {
        NR_READ => (OP_READ, None),
        NR_RECVFROM => (OP_READ, Some(REG_R10)),
        NR_WRITE | NR_SENDTO => (OP_WRITE, None),
        NR_READV => (OP_READV, None),
        NR_WRITEV => (OP_WRITEV, None),
        NR_RECVMSG => (OP_RECVMSG, Some(REG_DX)),
        NR_SENDMSG => (OP_SENDMSG, None),
        NR_SENDFILE => (OP_SENDFILE, None),
        NR_ACCEPT | NR_ACCEPT4 => (OP_ACCEPT, None),
        _ => return,
    };
    if op != OP_ACCEPT && ret == 0 {
        return;
    }
    if !task_allowed((pid_tgid >> 32) as u32) {
        return;
    }
    let regs = unsafe {
        let task = aya_ebpf::helpers::generated::bpf_get_current_task_btf();
        aya_ebpf::helpers::generated::bpf_task_pt_regs(task) as u64
    };
    let reg = |offset: u64| -> u64 {
        unsafe { aya_ebpf::helpers::bpf_probe_read_kernel((regs + offset) as *const u64) }
            .unwrap_or(0)
    };
    if op == OP_ACCEPT {
        let fd = ret as u32;
        if let Some(sk) = tcp_sock_of_fd(fd) {
            send_open(sk, fd, flag::ROLE_SERVER);
        }
        return;
    }
    if let Some(offset) = flags_reg
        && reg(offset) & MSG_PEEK != 0
    {
        return;
    }
    let fd = reg(REG_DI) as u32;
    let Some(sk) = tcp_sock_of_fd(fd) else {
        return;
    };
    if note_nested_syscall(pid_tgid, sk) || unsafe { TLS_SOCKS.get(&sk) }.is_some() {
        return;
    }
    let call = PendingCall {
        sk,
        buf: reg(REG_SI),
        count: reg(REG_DX),
        fd,
        op,
    };
    exit_data(&call, ret as u64);
}

#[inline(always)]
fn exit_data(call: &PendingCall, moved: u64) {
    let Some(tuple) = tuple_of(call.sk) else {
        return;
    };
    if !ports_allowed(&tuple) {
        return;
    }
    let (flags, bytes) = match call.op {
        OP_READ => (0, UserBytes::Buffer(call.buf)),
        OP_WRITE => (flag::EGRESS, UserBytes::Buffer(call.buf)),
        OP_READV => (0, UserBytes::Vector(call.buf, call.count)),
        OP_WRITEV => (flag::EGRESS, UserBytes::Vector(call.buf, call.count)),
        OP_RECVMSG | OP_SENDMSG => {
            // struct user_msghdr: msg_iov at 16, msg_iovlen at 24 (x86_64 / aarch64 ABI).
            let iov: u64 =
                unsafe { aya_ebpf::helpers::bpf_probe_read_user((call.buf + 16) as *const u64) }
                    .unwrap_or(0);
            let count: u64 =
                unsafe { aya_ebpf::helpers::bpf_probe_read_user((call.buf + 24) as *const u64) }
                    .unwrap_or(0);
            let flags = if call.op == OP_SENDMSG {
                flag::EGRESS
            } else {
                0
            };
            (flags, UserBytes::Vector(iov, count))
        }
        OP_SENDFILE => (flag::EGRESS, UserBytes::None),
        _ => return,
    };
    send_data(call.sk, call.fd, flags, moved, bytes, &tuple);
}

#[inline(always)]
fn send_open(sk: u64, fd: u32, role: u32) {
    let Some(tuple) = tuple_of(sk) else {
        return;
    };
    if !ports_allowed(&tuple) {
        return;
    }
    // A new connection starts a new sequence (the sock may be a reused address).
    let _ = SEQ.remove(&sk);
    let _ = TLS_SOCKS.remove(&sk);
    let mut header = empty_header();
    fill_header(&mut header, kind::OPEN, role, sk, fd, &tuple);
    send_header(&header);
}

#[tracepoint]
pub fn enter_close(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if is_agent((pid_tgid >> 32) as u32) {
        return 0;
    }
    let fd = arg(&ctx, ARG0) as u32;
    let Some(sk) = tcp_sock_of_fd(fd) else {
        return 0;
    };
    send_close(sk, fd);
    0
}

/// `sock:inet_sock_set_state`: a socket reaching TCP_CLOSE ends its connection even
/// when no close() was seen (process exit closes fds implicitly).
#[tracepoint]
pub fn sock_state(ctx: TracePointContext) -> u32 {
    let newstate: i32 = unsafe { ctx.read_at(20) }.unwrap_or(0);
    let protocol: u16 = unsafe { ctx.read_at(30) }.unwrap_or(0);
    if newstate != TCP_CLOSE || protocol != 6 {
        return 0;
    }
    let sk: u64 = unsafe { ctx.read_at(8) }.unwrap_or(0);
    send_close(sk, u32::MAX);
    0
}

#[inline(always)]
fn send_close(sk: u64, fd: u32) {
    let _ = TLS_SOCKS.remove(&sk);
    // Only connections that produced events are reported closed.
    if unsafe { SEQ.get(&sk) }.is_none() {
        return;
    }
    let tuple = tuple_of(sk).unwrap_or_default();
    let mut header = empty_header();
    fill_header(&mut header, kind::CLOSE, 0, sk, fd, &tuple);
    let _ = SEQ.remove(&sk);
    send_header(&header);
}

#[tracepoint]
pub fn process_exec(_ctx: TracePointContext) -> u32 {
    send_process_event(kind::EXEC);
    0
}

#[tracepoint]
pub fn process_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // Only the thread group leader's exit ends the process.
    if pid_tgid >> 32 == pid_tgid & 0xffff_ffff {
        send_process_event(kind::EXIT);
    }
    0
}

#[inline(always)]
fn send_process_event(event_kind: u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if is_agent((pid_tgid >> 32) as u32) {
        return;
    }
    let mut header = empty_header();
    header.kind = event_kind;
    header.pid_tgid = pid_tgid;
    header.time_ns = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    header.comm = aya_ebpf::helpers::bpf_get_current_comm().unwrap_or([0; 16]);
    send_header(&header);
}

#[inline(always)]
fn empty_header() -> EventHeader {
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
