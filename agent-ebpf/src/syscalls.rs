//! Syscall tracepoints: socket data, connection open and close, process exec and exit.
//! (`socket_calls` has the hooks that replace the socket ones where the kernel allows.)

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use tapwire_agent_common::{flag, kind};

use crate::{
    events::{
        SockState, UserBytes, empty_header, reset_sock_state, send_data, send_header, send_open,
        sock_state_of, write_current_comm,
    },
    filters::{is_agent, task_allowed},
    kernel_structs::{current_task, tcp_sock_of_fd},
    socket_calls::send_close,
    tls::note_nested_syscall,
};

pub(crate) const OP_READ: u32 = 1;
pub(crate) const OP_WRITE: u32 = 2;
pub(crate) const OP_READV: u32 = 3;
pub(crate) const OP_WRITEV: u32 = 4;
pub(crate) const OP_RECVMSG: u32 = 5;
pub(crate) const OP_SENDMSG: u32 = 6;
pub(crate) const OP_SENDFILE: u32 = 7;
const OP_CONNECT: u32 = 8;
const OP_ACCEPT: u32 = 9;

const EINPROGRESS: i64 = -115;

// Offsets of sys_enter_* arguments, sys_exit_* nr and ret in the tracepoint record.
const ARG0: usize = 16;
const NR: usize = 8;
const RET: usize = 16;
/// recv flag: the bytes stay queued and will be read again, so a peek is not data.
pub(crate) const MSG_PEEK: u64 = 2;

#[inline(always)]
fn arg(ctx: &TracePointContext, offset: usize) -> u64 {
    unsafe { ctx.read_at::<u64>(offset) }.unwrap_or(0)
}

// x86_64 syscall numbers.
pub(crate) const NR_READ: i32 = 0;
pub(crate) const NR_WRITE: i32 = 1;
pub(crate) const NR_READV: i32 = 19;
pub(crate) const NR_WRITEV: i32 = 20;
pub(crate) const NR_SENDFILE: i32 = 40;
const NR_CONNECT: i32 = 42;
const NR_ACCEPT: i32 = 43;
pub(crate) const NR_SENDTO: i32 = 44;
pub(crate) const NR_RECVFROM: i32 = 45;
pub(crate) const NR_SENDMSG: i32 = 46;
pub(crate) const NR_RECVMSG: i32 = 47;
const NR_ACCEPT4: i32 = 288;

/// The argument registers a socket call needs, from the task's `struct pt_regs`.
#[derive(Clone, Copy, Default)]
pub(crate) struct SyscallRegs {
    pub r10: u64,
    pub dx: u64,
    pub si: u64,
    pub di: u64,
}

// Offsets in x86_64 `struct pt_regs`.
pub(crate) const PT_REGS_R10: usize = 56;
pub(crate) const PT_REGS_DX: usize = 96;
pub(crate) const PT_REGS_SI: usize = 104;
pub(crate) const PT_REGS_DI: usize = 112;
pub(crate) const PT_REGS_ORIG_AX: usize = 120;
pub(crate) const PT_REGS_CS: usize = 136;
/// The code segment of 64-bit user code (`__USER_CS`).
pub(crate) const USER_CS: u64 = 0x33;

/// The task's saved user registers. At syscall exit they still hold the call's
/// arguments (the kernel reads them from there and writes only the return value back),
/// so no entry probe is needed to remember them. `bpf_task_pt_regs` returns a pointer
/// the verifier knows the type of, so the fields are plain loads, not helper calls.
#[inline(always)]
pub(crate) fn syscall_regs() -> SyscallRegs {
    let regs = task_regs();
    SyscallRegs {
        r10: load_reg(regs, PT_REGS_R10),
        dx: load_reg(regs, PT_REGS_DX),
        si: load_reg(regs, PT_REGS_SI),
        di: load_reg(regs, PT_REGS_DI),
    }
}

/// The current task's saved user registers (`struct pt_regs`, typed for the verifier).
#[inline(always)]
pub(crate) fn task_regs() -> *const u8 {
    regs_of(current_task())
}

/// The saved user registers of `task` (a `struct task_struct` typed for the verifier).
#[inline(always)]
pub(crate) fn regs_of(task: *const u8) -> *const u8 {
    unsafe { aya_ebpf::helpers::generated::bpf_task_pt_regs(task.cast_mut().cast()) as *const u8 }
}

/// One saved register of [`task_regs`], by its offset in `struct pt_regs`.
#[inline(always)]
pub(crate) fn load_reg(regs: *const u8, offset: usize) -> u64 {
    unsafe { core::ptr::read_volatile(regs.add(offset).cast::<u64>()) }
}

/// A socket call as reconstructed at its exit.
pub(crate) struct Call {
    /// Buffer, iovec array or msghdr (user address).
    pub buf: u64,
    /// iovec count for readv/writev.
    pub count: u64,
    pub fd: u32,
    pub op: u32,
    /// The calling task's `bpf_get_current_pid_tgid()`.
    pub task: u64,
}

/// The one program on every hooked syscall's exit (read, write, send*, recv*, readv,
/// writev, sendfile, connect, accept, accept4). Everything is decided here, from the
/// return value and the saved argument registers: failed and empty calls, which are
/// most calls on non-blocking sockets that find nothing to read, cost a few
/// instructions, and there is no per-call state between entry and exit to keep.
/// This also covers calls that started before the agent attached (a server blocked in
/// accept, a keep-alive connection blocked in read).
#[tracepoint]
pub fn exit_call(ctx: TracePointContext) -> u32 {
    let ret = arg(&ctx, RET) as i64;
    let nr: i32 = unsafe { ctx.read_at(NR) }.unwrap_or(-1);
    on_exit(nr, ret)
}

/// `raw_tracepoint/sys_exit`: the same program on the raw tracepoint under every
/// syscall's exit, attached instead of the per-syscall ones when user space is asked
/// to (`--syscall-hook raw-tracepoint`). The per-syscall tracepoints above are built on
/// it: for each hooked call the kernel formats a trace record and runs the program
/// through the perf event machinery, while a raw tracepoint calls the program directly
/// with the registers and return value. But it runs for every syscall, hooked or not;
/// the others leave after one load and a compare, yet the call itself costs them more
/// than the per-syscall tracepoints' bitmap test.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    let regs = task_regs();
    let nr = load_reg(regs, PT_REGS_ORIG_AX) as i32;
    if !is_hooked(nr) {
        return 0;
    }
    // A 32-bit process numbers its syscalls differently (its 3 is read, its 45 brk):
    // only 64-bit calls are decoded, as the per-syscall tracepoints do.
    if load_reg(regs, PT_REGS_CS) & 0xffff != USER_CS {
        return 0;
    }
    let ret: i64 = ctx.arg(1);
    on_exit(nr, ret) as i32
}

/// Whether `nr` is one of the calls [`on_exit`] reports.
#[inline(always)]
fn is_hooked(nr: i32) -> bool {
    matches!(
        nr,
        NR_READ
            | NR_WRITE
            | NR_READV
            | NR_WRITEV
            | NR_SENDFILE
            | NR_CONNECT
            | NR_ACCEPT
            | NR_SENDTO
            | NR_RECVFROM
            | NR_SENDMSG
            | NR_RECVMSG
            | NR_ACCEPT4
    )
}

/// Reports the exit of syscall `nr` that returned `ret`, for either program above.
#[inline(always)]
fn on_exit(nr: i32, ret: i64) -> u32 {
    let (op, flags_reg) = match nr {
        NR_READ => (OP_READ, false),
        NR_RECVFROM => (OP_READ, true),
        NR_WRITE | NR_SENDTO => (OP_WRITE, false),
        NR_READV => (OP_READV, false),
        NR_WRITEV => (OP_WRITEV, false),
        NR_RECVMSG => (OP_RECVMSG, true),
        NR_SENDMSG => (OP_SENDMSG, false),
        NR_SENDFILE => (OP_SENDFILE, false),
        NR_CONNECT => (OP_CONNECT, false),
        NR_ACCEPT | NR_ACCEPT4 => (OP_ACCEPT, false),
        _ => return 0,
    };
    let reported = match op {
        OP_CONNECT => ret == 0 || ret == EINPROGRESS,
        OP_ACCEPT => ret >= 0,
        _ => ret > 0,
    };
    if !reported {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if !task_allowed((pid_tgid >> 32) as u32) {
        return 0;
    }
    if op == OP_ACCEPT {
        let fd = ret as u32;
        if let Some(sk) = tcp_sock_of_fd(fd) {
            open_connection(sk, fd, flag::ROLE_SERVER, pid_tgid);
        }
        return 0;
    }
    let regs = syscall_regs();
    let fd = regs.di as u32;
    if op == OP_CONNECT {
        if let Some(sk) = tcp_sock_of_fd(fd) {
            open_connection(sk, fd, flag::ROLE_CLIENT, pid_tgid);
        }
        return 0;
    }
    // recvfrom's flags are its 4th argument (r10), recvmsg's its 3rd (dx).
    let peek_flags = if nr == NR_RECVFROM { regs.r10 } else { regs.dx };
    if flags_reg && peek_flags & MSG_PEEK != 0 {
        return 0;
    }
    let Some(sk) = tcp_sock_of_fd(fd) else {
        return 0;
    };
    // Ciphertext of a connection whose plaintext the TLS probes deliver is dropped.
    if note_nested_syscall(pid_tgid, sk) {
        return 0;
    }
    let Some(state) = sock_state_of(sk) else {
        return 0;
    };
    if state.tls != 0 || state.allowed == 0 {
        return 0;
    }
    let call = Call {
        buf: regs.si,
        count: regs.dx,
        fd,
        op,
        task: pid_tgid,
    };
    exit_data(&call, ret as u64, state);
    0
}

#[inline(always)]
pub(crate) fn exit_data(call: &Call, moved: u64, state: &mut SockState) {
    let (flags, bytes) = match call.op {
        OP_READ => (0, UserBytes::Buffer(call.buf)),
        OP_WRITE => (flag::EGRESS, UserBytes::Buffer(call.buf)),
        OP_READV => (0, UserBytes::Vector(call.buf, call.count)),
        OP_WRITEV => (flag::EGRESS, UserBytes::Vector(call.buf, call.count)),
        OP_RECVMSG | OP_SENDMSG => {
            // struct user_msghdr: msg_iov at 16, msg_iovlen at 24 (x86_64 / aarch64 ABI),
            // read together: every user read is a helper call of its own.
            let [iov, count] = unsafe {
                aya_ebpf::helpers::bpf_probe_read_user((call.buf + 16) as *const [u64; 2])
            }
            .unwrap_or([0, 0]);
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
    send_data(call.fd, flags, moved, bytes, call.task, state);
}

#[inline(always)]
fn open_connection(sk: u64, fd: u32, role: u32, task: u64) {
    // A new connection starts a new sequence and forgets any TLS mark (the sock may be
    // a reused address).
    let Some(state) = reset_sock_state(sk) else {
        return;
    };
    if state.allowed == 0 {
        return;
    }
    send_open(fd, role, task, state);
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

#[tracepoint]
pub fn process_exec(_ctx: TracePointContext) -> u32 {
    send_process_event(kind::EXEC);
    0
}

#[tracepoint]
pub fn process_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    crate::tls::forget_thread(pid_tgid);
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
    write_current_comm(&mut header.comm);
    send_header(&header);
}
