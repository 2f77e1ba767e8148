//! Socket tracepoints: where a connection's bytes, start and end are seen at the socket
//! layer instead of at syscall exits.
//!
//! `sock:sock_send_length` and `sock:sock_recv_length` fire inside `sock_sendmsg` and
//! `sock_recvmsg`, after the protocol moved the bytes, for every socket call whatever the
//! syscall (read, write, send*, recv*, readv, writev, sendfile). As BTF tracepoints they
//! get the `struct sock` itself, so there is no fd → file → socket walk, and no program
//! runs for the node's other syscalls: with no syscall tracepoint attached, no task takes
//! the kernel's slow syscall path either. The user buffer comes from the syscall's saved
//! argument registers, as at a syscall exit.
//!
//! Without the connect and accept exits, the role comes from the handshake
//! (`sock:inet_sock_set_state`, `tcp_handshake`), and the OPEN is sent with the
//! connection's first data, when the task is the connection's own process.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use tapwire_agent_common::{flag, kind};

use crate::{
    events::{SOCKS, empty_header, fill_header, fill_identity, reset_sock_state, send_header},
    filters::task_allowed,
    kernel_structs::{current_task, fd_is_file_of, is_tcp_sock, pid_tgid_of},
    syscalls::{
        Call, MSG_PEEK, NR_READ, NR_READV, NR_RECVFROM, NR_RECVMSG, NR_SENDFILE, NR_SENDMSG,
        NR_SENDTO, NR_WRITE, NR_WRITEV, OP_READ, OP_READV, OP_RECVMSG, OP_SENDFILE, OP_SENDMSG,
        OP_WRITE, OP_WRITEV, PT_REGS_CS, PT_REGS_DI, PT_REGS_DX, PT_REGS_ORIG_AX, PT_REGS_SI,
        USER_CS, exit_data, load_reg, regs_of,
    },
    tls::note_nested_syscall,
};

const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_SYN_RECV: i32 = 3;
const TCP_CLOSE: i32 = 7;
const IPPROTO_TCP: u16 = 6;

// Offsets in the `sock:inet_sock_set_state` record.
const STATE_SKADDR: usize = 8;
const STATE_OLD: usize = 16;
const STATE_NEW: usize = 20;
const STATE_PROTOCOL: usize = 30;

/// `tp_btf/sock_send_length`: bytes a socket call sent (`ret` > 0).
#[btf_tracepoint(function = "sock_send_length")]
pub fn sock_send(ctx: BtfTracePointContext) -> i32 {
    on_socket_call(&ctx, true);
    0
}

/// `tp_btf/sock_recv_length`: bytes a socket call received, already in the user buffer.
#[btf_tracepoint(function = "sock_recv_length")]
pub fn sock_recv(ctx: BtfTracePointContext) -> i32 {
    on_socket_call(&ctx, false);
    0
}

/// Reports the bytes a user socket call moved (the tracepoints' `sk, ret, flags`).
#[inline(always)]
fn on_socket_call(ctx: &BtfTracePointContext, egress: bool) {
    let ret: i32 = ctx.arg(1);
    if ret <= 0 {
        return;
    }
    if !egress {
        let recv_flags: i32 = ctx.arg(2);
        if recv_flags as u64 & MSG_PEEK != 0 {
            return;
        }
    }
    // The kernel's own socket users (kernel threads, or an NFS client sending from a
    // process's call on a file) are not a user call on this socket: a kernel thread has
    // no user code segment, and the fd check below catches the rest.
    let task = current_task();
    let regs = regs_of(task);
    if load_reg(regs, PT_REGS_CS) & 0xffff != USER_CS {
        return;
    }
    let op = match (load_reg(regs, PT_REGS_ORIG_AX) as i32, egress) {
        (NR_READ | NR_RECVFROM, false) => OP_READ,
        (NR_READV, false) => OP_READV,
        (NR_RECVMSG, false) => OP_RECVMSG,
        (NR_WRITE | NR_SENDTO, true) => OP_WRITE,
        (NR_WRITEV, true) => OP_WRITEV,
        (NR_SENDMSG, true) => OP_SENDMSG,
        (NR_SENDFILE, true) => OP_SENDFILE,
        // sendmmsg/recvmmsg, splice, io_uring: no single user buffer to read.
        _ => return,
    };
    let sk: *const u8 = ctx.arg(0);
    if !is_tcp_sock(sk) {
        return;
    }
    let pid_tgid = pid_tgid_of(task);
    if !task_allowed((pid_tgid >> 32) as u32) {
        return;
    }
    // sendfile's socket is its first argument too (out_fd).
    let fd = load_reg(regs, PT_REGS_DI) as u32;
    let tgid = (pid_tgid >> 32) as u32;
    let sk_addr = sk as u64;
    let known = SOCKS.get_ptr_mut(&sk_addr);
    // One check per (process, fd) and connection: see `SockState::checked_fd`.
    let checked = match known {
        Some(state) => unsafe { (*state).checked_fd == fd.wrapping_add(1) && (*state).fd_tgid == tgid },
        None => false,
    };
    if !checked && !fd_is_file_of(task, fd, sk) {
        return;
    }
    let state = match known {
        Some(state) => unsafe { &mut *state },
        // A connection that was open before the agent started (role unknown).
        None => match reset_sock_state(sk_addr) {
            Some(state) => state,
            None => return,
        },
    };
    state.checked_fd = fd.wrapping_add(1);
    state.fd_tgid = tgid;
    let sk = sk_addr;
    // Ciphertext of a connection whose plaintext the TLS probes deliver is dropped.
    if note_nested_syscall(pid_tgid, sk) {
        return;
    }
    if state.tls != 0 || state.allowed == 0 {
        return;
    }
    let call = Call {
        buf: load_reg(regs, PT_REGS_SI),
        count: load_reg(regs, PT_REGS_DX),
        fd,
        op,
        task: pid_tgid,
    };
    exit_data(&call, ret as u64, state);
}

/// `sock:inet_sock_set_state`, attached with the socket data hooks only: a handshake
/// that completes starts a new connection and tells its role (SYN_SENT → ESTABLISHED
/// is the connecting side, SYN_RECV → ESTABLISHED the accepting one). The OPEN itself
/// waits for the first data (`SockState::role`).
#[tracepoint]
pub fn tcp_handshake(ctx: TracePointContext) -> u32 {
    let newstate: i32 = unsafe { ctx.read_at(STATE_NEW) }.unwrap_or(0);
    let protocol: u16 = unsafe { ctx.read_at(STATE_PROTOCOL) }.unwrap_or(0);
    if newstate != TCP_ESTABLISHED || protocol != IPPROTO_TCP {
        return 0;
    }
    let role = match unsafe { ctx.read_at::<i32>(STATE_OLD) }.unwrap_or(0) {
        TCP_SYN_SENT => flag::ROLE_CLIENT,
        TCP_SYN_RECV => flag::ROLE_SERVER,
        _ => return 0,
    };
    let sk: u64 = unsafe { ctx.read_at(STATE_SKADDR) }.unwrap_or(0);
    if let Some(state) = reset_sock_state(sk) {
        state.role = role as u8;
    }
    0
}

/// `sock:inet_sock_set_state`: a socket reaching TCP_CLOSE ends its connection even
/// when no close() was seen (process exit closes fds implicitly; with the socket data
/// hooks, this is where every connection ends).
#[tracepoint]
pub fn sock_state(ctx: TracePointContext) -> u32 {
    let newstate: i32 = unsafe { ctx.read_at(STATE_NEW) }.unwrap_or(0);
    let protocol: u16 = unsafe { ctx.read_at(STATE_PROTOCOL) }.unwrap_or(0);
    if newstate != TCP_CLOSE || protocol != IPPROTO_TCP {
        return 0;
    }
    let sk: u64 = unsafe { ctx.read_at(STATE_SKADDR) }.unwrap_or(0);
    send_close(sk, u32::MAX);
    0
}

/// Sends the CLOSE of the connection on `sk` (if it produced events) and forgets it.
#[inline(always)]
pub fn send_close(sk: u64, fd: u32) {
    let Some(state) = SOCKS.get_ptr_mut(&sk) else {
        return;
    };
    let state = unsafe { &mut *state };
    // Only connections that produced events are reported closed.
    if state.next_seq != 0 {
        let mut header = empty_header();
        let task = bpf_get_current_pid_tgid();
        fill_header(&mut header, kind::CLOSE, 0, fd, task, state);
        fill_identity(&mut header, kind::CLOSE, task, state);
        send_header(&header);
    }
    let _ = SOCKS.remove(&sk);
}
