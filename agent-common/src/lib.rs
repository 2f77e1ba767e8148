#![no_std]
//! Records shared by the kernel programs and user space.
//!
//! Everything here is `#[repr(C)]` and has the same layout on both sides of the ring
//! buffer: the kernel writes an [`EventHeader`] (followed, for data events, by the captured
//! payload), user space reads it back. Keep fields naturally aligned so no padding differs.

/// The largest payload one data event can carry (bytes).
pub const MAX_CAPTURE_BYTES: usize = 32 * 1024;

/// Data records one contiguous-buffer syscall may be split into, so up to
/// `MAX_RECORDS_PER_CALL * MAX_CAPTURE_BYTES` bytes of one call can be captured.
pub const MAX_RECORDS_PER_CALL: usize = 8;

/// Size of the per-CPU scratch area a data event is assembled in: twice the maximum
/// payload so that the verifier can prove `offset < MAX` plus `len <= MAX` stays inside.
pub const SCRATCH_DATA_BYTES: usize = 2 * MAX_CAPTURE_BYTES;

/// iovec entries walked per readv/writev/sendmsg/recvmsg call (bounded loop). grpc-core
/// writes one HTTP/2 HEADERS frame as 20+ small slices, so 16 cut frames short.
pub const MAX_IOV_SEGMENTS: u32 = 32;

/// iovec entries walked when the capture cap exceeds one record (`--capture-bytes` above
/// `MAX_CAPTURE_BYTES`): the multi-record path and a 32-entry walk together exceed the
/// verifier's complexity budget.
pub const MAX_IOV_SEGMENTS_MULTI_RECORD: u32 = 16;

/// Length of the kernel's task command name.
pub const COMM_LEN: usize = 16;

/// What an event reports (`EventHeader::kind`).
pub mod kind {
    /// Bytes moved on a TCP socket; `captured_len` payload bytes follow the header.
    pub const DATA: u32 = 1;
    /// A connection was opened by connect (role client) or accept (role server).
    pub const OPEN: u32 = 2;
    /// The process closed its fd of a TCP socket.
    pub const CLOSE: u32 = 3;
    /// A process called exec: user space looks for TLS libraries in it.
    pub const EXEC: u32 = 4;
    /// A process (thread group) exited: user space drops its connections.
    pub const EXIT: u32 = 5;
}

/// Bits of `EventHeader::flags`.
pub mod flag {
    /// The bytes were written (sent) by the observed process; otherwise read.
    pub const EGRESS: u32 = 1;
    /// Plaintext captured from a TLS library; the socket's ciphertext is suppressed.
    pub const TLS: u32 = 2;
    /// The observed process connected (OPEN events).
    pub const ROLE_CLIENT: u32 = 4;
    /// The observed process accepted (OPEN events).
    pub const ROLE_SERVER: u32 = 8;
    /// DATA events: `cgroup_id` and `comm` are left out (zero) because the previous
    /// event of this connection came from the same process and carried them.
    pub const SAME_PROCESS: u32 = 16;
}

/// Indexes of the per-CPU `DROPS` counter array: why something was not delivered.
pub mod drop_reason {
    /// The ring buffer was full: the whole event was lost (a sequence gap follows).
    pub const RING_FULL: u32 = 0;
    /// Copying the payload from user memory failed: the event carries 0 captured bytes.
    pub const COPY_FAILED: u32 = 1;
    /// TLS plaintext whose socket could not be determined was dropped.
    pub const TLS_NO_SOCKET: u32 = 2;
    /// The in-flight TLS call table could not store a call: its plaintext was not captured.
    pub const STATE_FULL: u32 = 3;
    /// The payload was larger than the capture cap (bytes counted, not copied).
    pub const TRUNCATED: u32 = 4;
    /// Number of reasons (size of the array).
    pub const COUNT: u32 = 5;
}

/// Values of the include/exclude filter maps (`PID_FILTER`, `PORT_FILTER`, `CGROUP_FILTER`).
pub mod filter {
    /// Capture only what matches an include entry (when any include entry exists).
    pub const INCLUDE: u8 = 1;
    /// Never capture what matches.
    pub const EXCLUDE: u8 = 2;
    /// `FILTER_FLAGS` bit: at least one pid include entry exists.
    pub const PID_INCLUDE_ACTIVE: u32 = 1;
    /// `FILTER_FLAGS` bit: at least one port include entry exists.
    pub const PORT_INCLUDE_ACTIVE: u32 = 2;
    /// `FILTER_FLAGS` bit: at least one cgroup include entry exists.
    pub const CGROUP_INCLUDE_ACTIVE: u32 = 4;
    /// `FILTER_FLAGS` bit: at least one port exclude entry exists.
    pub const PORT_EXCLUDE_ACTIVE: u32 = 8;
    /// `FILTER_FLAGS` bit: at least one cgroup exclude entry exists.
    pub const CGROUP_EXCLUDE_ACTIVE: u32 = 16;
    /// `FILTER_FLAGS` bit: at least one pid exclude entry exists.
    pub const PID_EXCLUDE_ACTIVE: u32 = 32;
}

/// A TCP connection's addresses as the observed process sees them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockTuple {
    /// AF_INET (2) or AF_INET6 (10).
    pub family: u16,
    /// Local port, host byte order.
    pub local_port: u16,
    /// Remote port, host byte order.
    pub remote_port: u16,
    pub _pad: u16,
    /// Local address, network byte order (IPv4 in the first 4 bytes).
    pub local_addr: [u8; 16],
    /// Remote address, network byte order (IPv4 in the first 4 bytes).
    pub remote_addr: [u8; 16],
}

/// The fixed part of every ring buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    /// One of [`kind`].
    pub kind: u32,
    /// Bits of [`flag`].
    pub flags: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the event was produced.
    pub time_ns: u64,
    /// `bpf_get_current_pid_tgid()`: tgid in the high half, thread id in the low half.
    pub pid_tgid: u64,
    /// Cgroup (v2) id of the task (0 with [`flag::SAME_PROCESS`]).
    pub cgroup_id: u64,
    /// Identifies the connection: set by the kernel programs when they first see it (at
    /// connect/accept, or its first event) and unique per boot. Not the `struct sock`
    /// address, which the kernel hands to the next socket as soon as this one is freed
    /// (and which user space has no business seeing).
    pub sock_id: u64,
    /// Per-connection event sequence number (gaps mean lost events).
    pub seq: u64,
    /// DATA: bytes the syscall (or TLS call) really moved.
    pub total_len: u64,
    /// DATA: payload bytes following the header (`<= total_len`).
    pub captured_len: u32,
    /// The file descriptor (or -1 as u32 when unknown).
    pub fd: u32,
    /// The task's command name, NUL padded (zero with [`flag::SAME_PROCESS`]).
    pub comm: [u8; COMM_LEN],
    /// The connection's addresses.
    pub tuple: SockTuple,
}

/// Size of [`EventHeader`] in bytes (the payload of DATA events starts here).
pub const EVENT_HEADER_BYTES: usize = core::mem::size_of::<EventHeader>();

/// A data event as assembled in the per-CPU scratch map before it is copied to the ring.
#[repr(C)]
pub struct DataEvent {
    /// The fixed part.
    pub header: EventHeader,
    /// Payload; only the first `header.captured_len` bytes are sent.
    pub data: [u8; SCRATCH_DATA_BYTES],
}

/// Kernel struct member offsets (bytes), resolved from `/sys/kernel/btf/vmlinux` in user
/// space and handed to the programs as a read-only global. [`KernelOffsets::ABSENT`]
/// marks a member the kernel does not have (its check is skipped).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_files: u32,
    /// `task_struct.pid`, with `tgid` right after it: the two loads make the current
    /// task's `pid_tgid` without a helper call. [`KernelOffsets::ABSENT`] where the
    /// kernel lays them out otherwise (the programs then call the helper).
    pub task_pid: u32,
    pub files_fdt: u32,
    pub fdtable_max_fds: u32,
    pub fdtable_fd: u32,
    pub file_inode: u32,
    pub file_private_data: u32,
    pub inode_mode: u32,
    pub socket_type: u32,
    pub socket_sk: u32,
    /// `socket.file`: the file the socket belongs to (the socket tracepoints check that
    /// the call's fd is that file).
    pub socket_file: u32,
    /// `sock.sk_socket`: the `struct socket` of a sock.
    pub sock_socket: u32,
    pub sock_protocol: u32,
    pub skc_family: u32,
    pub skc_daddr: u32,
    pub skc_rcv_saddr: u32,
    pub skc_dport: u32,
    pub skc_num: u32,
    pub skc_v6_daddr: u32,
    pub skc_v6_rcv_saddr: u32,
    /// Non-zero once user space filled the struct in (the programs do nothing before).
    pub valid: u32,
}

impl KernelOffsets {
    /// Marks a member that does not exist (or is a bitfield) on this kernel.
    pub const ABSENT: u32 = u32::MAX;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data records: repr(C), only integers and byte arrays, no padding
    // holes that could leak (every field is naturally aligned and the sizes add up).
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::SockTuple {}
    unsafe impl aya::Pod for super::EventHeader {}
}
