//! Walks kernel structs to learn whether an fd is a TCP socket and what its addresses
//! are, or (for the socket tracepoints, which get the sock) whether a sock is TCP and
//! the file of the calling syscall's fd. Offsets come from user space (BTF) through the read-only `OFFSETS` global, so no
//! CO-RE is needed.
//!
//! From the current task to the fd table the pointers have types the verifier knows
//! (`bpf_get_current_task_btf` and the BTF of the members the offsets name), so those
//! fields are plain loads; past the fd array (a `struct file **`, which the verifier
//! treats as a number) every read is a `bpf_probe_read_kernel`, two fields at once where
//! they sit close together.

use aya_ebpf::helpers::{
    bpf_get_current_pid_tgid, bpf_probe_read_kernel, generated::bpf_get_current_task_btf,
};
use tapwire_agent_common::{KernelOffsets, SockTuple};

/// Filled in by user space before load (read-only, so the verifier sees constants).
#[unsafe(no_mangle)]
static OFFSETS: KernelOffsets = KernelOffsets {
    task_files: 0,
    task_pid: 0,
    files_fdt: 0,
    fdtable_max_fds: 0,
    fdtable_fd: 0,
    file_inode: 0,
    file_private_data: 0,
    inode_mode: 0,
    socket_type: 0,
    socket_sk: 0,
    socket_file: 0,
    sock_socket: 0,
    sock_protocol: 0,
    skc_family: 0,
    skc_daddr: 0,
    skc_rcv_saddr: 0,
    skc_dport: 0,
    skc_num: 0,
    skc_v6_daddr: 0,
    skc_v6_rcv_saddr: 0,
    valid: 0,
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const SOCK_STREAM: u16 = 1;
const IPPROTO_TCP: u16 = 6;
const S_IFMT: u16 = 0o170000;
const S_IFSOCK: u16 = 0o140000;

macro_rules! offset {
    ($field:ident) => {
        // Volatile so the compiler keeps the load: user space rewrites the value.
        unsafe { core::ptr::read_volatile(&raw const OFFSETS.$field) }
    };
}

/// A field through a pointer of known BTF type: one load instruction, which the kernel
/// turns into 0 where the memory cannot be read. `offset` must be a constant to the
/// verifier (a read-only global) naming a member of that type.
#[inline(always)]
fn load<T>(base: *const u8, offset: u32) -> T {
    unsafe { core::ptr::read_volatile(base.add(offset as usize).cast::<T>()) }
}

/// Reads the fields at `a` (an `A`) and `b` (a `B`) of `base` with one kernel read when
/// both fit in a 32-byte window, else with two.
#[inline(always)]
fn read_two<A: Copy, B: Copy>(base: u64, a: u32, b: u32) -> Option<(A, B)> {
    const WINDOW: u32 = 32;
    let start = if a < b { a } else { b };
    let end_a = a + core::mem::size_of::<A>() as u32;
    let end_b = b + core::mem::size_of::<B>() as u32;
    let end = if end_a > end_b { end_a } else { end_b };
    if end - start <= WINDOW {
        let window: [u8; WINDOW as usize] = read_at(base, start)?;
        let at = |offset: u32| (offset - start) as usize;
        // SAFETY: both fields lie inside the window (checked above); unaligned reads.
        let first = unsafe { core::ptr::read_unaligned(window.as_ptr().add(at(a)).cast::<A>()) };
        let second = unsafe { core::ptr::read_unaligned(window.as_ptr().add(at(b)).cast::<B>()) };
        return Some((first, second));
    }
    Some((read_at(base, a)?, read_at(base, b)?))
}

#[inline(always)]
fn read_at<T>(base: u64, offset: u32) -> Option<T> {
    if base == 0 {
        return None;
    }
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T).ok() }
}

/// The current task (`struct task_struct`, typed for the verifier).
#[inline(always)]
pub fn current_task() -> *const u8 {
    unsafe { bpf_get_current_task_btf() as *const u8 }
}

/// What `bpf_get_current_pid_tgid()` returns (tgid high, pid low), read from `task`
/// (the current task, from [`current_task`]) with two loads instead of a helper call:
/// with return-thunk mitigations even that cheap helper costs on every event.
#[inline(always)]
pub fn pid_tgid_of(task: *const u8) -> u64 {
    let at = offset!(task_pid);
    if at == KernelOffsets::ABSENT || offset!(valid) == 0 {
        return bpf_get_current_pid_tgid();
    }
    // Two 32-bit loads: the verifier rejects one load that spans two members.
    let pid: u32 = load(task, at);
    let tgid: u32 = load(task, at + 4);
    (u64::from(tgid) << 32) | u64::from(pid)
}

/// The `struct file` address behind `fd` of `task` (the current task), or `None`.
#[inline(always)]
fn file_of_fd(task: *const u8, fd: u32) -> Option<u64> {
    if offset!(valid) == 0 {
        return None;
    }
    let files: *const u8 = load(task, offset!(task_files));
    if files.is_null() {
        return None;
    }
    let fdt: *const u8 = load(files, offset!(files_fdt));
    if fdt.is_null() {
        return None;
    }
    let max_fds: u32 = load(fdt, offset!(fdtable_max_fds));
    if fd >= max_fds {
        return None;
    }
    let fd_array: u64 = load(fdt, offset!(fdtable_fd));
    read_at(fd_array, fd.wrapping_mul(8))
}

/// Returns the `struct sock` address behind `fd` of the current task when it is a TCP
/// socket (IPv4 or IPv6), otherwise `None`.
#[inline(always)]
pub fn tcp_sock_of_fd(fd: u32) -> Option<u64> {
    let file = file_of_fd(current_task(), fd)?;
    let (inode, socket): (u64, u64) =
        read_two(file, offset!(file_inode), offset!(file_private_data))?;
    let mode: u16 = read_at(inode, offset!(inode_mode))?;
    if mode & S_IFMT != S_IFSOCK {
        return None;
    }
    let (sock_type, sk): (u16, u64) = read_two(socket, offset!(socket_type), offset!(socket_sk))?;
    if sock_type != SOCK_STREAM {
        return None;
    }
    let family: u16 = read_at(sk, offset!(skc_family))?;
    if family != AF_INET && family != AF_INET6 {
        return None;
    }
    let protocol_offset = offset!(sock_protocol);
    if protocol_offset != KernelOffsets::ABSENT {
        let protocol: u16 = read_at(sk, protocol_offset)?;
        if protocol != IPPROTO_TCP {
            return None;
        }
    }
    Some(sk)
}

/// Whether `sk`, a `struct sock` pointer the verifier knows the type of (a BTF
/// tracepoint's argument), is a TCP stream socket over IPv4 or IPv6. Plain loads only.
#[inline(always)]
pub fn is_tcp_sock(sk: *const u8) -> bool {
    if offset!(valid) == 0 {
        return false;
    }
    let family: u16 = load(sk, offset!(skc_family));
    if family != AF_INET && family != AF_INET6 {
        return false;
    }
    let protocol_offset = offset!(sock_protocol);
    if protocol_offset != KernelOffsets::ABSENT {
        let protocol: u16 = load(sk, protocol_offset);
        if protocol != IPPROTO_TCP {
            return false;
        }
    }
    // A raw socket can carry IPPROTO_TCP too: only a stream socket is a connection.
    let socket: *const u8 = load(sk, offset!(sock_socket));
    !socket.is_null() && load::<u16>(socket, offset!(socket_type)) == SOCK_STREAM
}

/// Whether `fd` of `task` (the current task) is the file of `sk` (typed as for
/// [`is_tcp_sock`]).
/// A socket tracepoint fires inside whatever syscall the task is in; the kernel's own
/// socket users (an NFS or iSCSI client sending from a process's `write` on a file)
/// would otherwise have that call's buffer taken for the socket's bytes.
#[inline(always)]
pub fn fd_is_file_of(task: *const u8, fd: u32, sk: *const u8) -> bool {
    let socket: *const u8 = load(sk, offset!(sock_socket));
    if socket.is_null() {
        return false;
    }
    let file: u64 = load(socket, offset!(socket_file));
    file != 0 && file_of_fd(task, fd) == Some(file)
}

/// Reads the addresses of a TCP `struct sock`.
#[inline(always)]
pub fn read_tuple(sk: u64, tuple: &mut SockTuple) -> Option<()> {
    let family: u16 = read_at(sk, offset!(skc_family))?;
    let dport: u16 = read_at(sk, offset!(skc_dport))?;
    let num: u16 = read_at(sk, offset!(skc_num))?;
    tuple.family = family;
    tuple.remote_port = u16::from_be(dport);
    tuple.local_port = num;
    if family == AF_INET {
        let daddr: [u8; 4] = read_at(sk, offset!(skc_daddr))?;
        let saddr: [u8; 4] = read_at(sk, offset!(skc_rcv_saddr))?;
        tuple.remote_addr = [0; 16];
        tuple.local_addr = [0; 16];
        tuple.remote_addr[..4].copy_from_slice(&daddr);
        tuple.local_addr[..4].copy_from_slice(&saddr);
    } else {
        let v6_daddr = offset!(skc_v6_daddr);
        let v6_saddr = offset!(skc_v6_rcv_saddr);
        if v6_daddr == KernelOffsets::ABSENT || v6_saddr == KernelOffsets::ABSENT {
            return None;
        }
        tuple.remote_addr = read_at(sk, v6_daddr)?;
        tuple.local_addr = read_at(sk, v6_saddr)?;
    }
    Some(())
}
