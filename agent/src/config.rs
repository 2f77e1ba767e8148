//! Command-line configuration of `tapwire-agent`.

use std::net::SocketAddr;

use clap::{Parser, ValueEnum};

use crate::{
    ebpf::{loader::SyscallHook, rings::RingLayout},
    export::ExportArgs,
};

/// What the agent writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputMode {
    /// One JSON line per stream chunk on stdout.
    Raw,
    /// One JSON line per request/response pair (proto3 JSON of `tapwire.v1.Pair`).
    Jsonl,
    /// Capture and count only (metrics), no output.
    None,
}

/// tapwire-agent: captures every TCP conversation on this node with eBPF.
#[derive(Debug, Clone, Parser)]
#[command(name = "tapwire-agent", version)]
pub struct AgentArgs {
    /// Write to stdout instead of sending to a collector: `raw` chunks, `jsonl` pairs, or
    /// `none`. Without `--collector` the default is `raw`.
    #[arg(long, value_enum, env = "TAPWIRE_OUTPUT", conflicts_with = "collector")]
    pub output: Option<OutputMode>,
    /// Where pairs go: the collector and its transport (`--collector URL` …).
    #[command(flatten)]
    pub export: ExportArgs,
    /// This machine's name, stamped on every pair (in Kubernetes: the node name from the
    /// downward API). Defaults to the host name.
    #[arg(long, env = "TAPWIRE_NODE")]
    pub node_name: Option<String>,
    /// More header names whose values are redacted (besides Authorization, Cookie, …).
    #[arg(
        long = "redact-header",
        env = "TAPWIRE_REDACT_HEADERS",
        value_delimiter = ','
    )]
    pub redact_headers: Vec<String>,
    /// More parameter/JSON field name fragments whose values are redacted (besides
    /// token, password, secret, api_key …).
    #[arg(
        long = "redact-field",
        env = "TAPWIRE_REDACT_FIELDS",
        value_delimiter = ','
    )]
    pub redact_fields: Vec<String>,
    /// Regular expressions whose matches are redacted in headers, targets and bodies.
    #[arg(long = "redact-pattern")]
    pub redact_patterns: Vec<String>,
    /// Bytes of each body kept in a pair (the true size is always recorded).
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,
    /// Payload bytes captured per syscall (at most 262144 for plain buffers, 32768 for
    /// iovec calls); longer transfers report their true length.
    #[arg(long, default_value_t = 32768)]
    pub capture_bytes: u32,
    /// Memory of the event rings in MiB, split equally over them (each ring a power of
    /// two, at least 1 MiB).
    #[arg(long, default_value_t = 16)]
    pub ring_mib: u32,
    /// `per-cpu`: a ring per CPU, so CPUs never contend for one (user space restores
    /// each connection's order); `shared`: one ring for all CPUs.
    #[arg(long, value_enum, default_value_t = RingLayout::PerCpu)]
    pub ring_layout: RingLayout,
    /// Where socket calls are hooked: `socket-tracepoints` (`sock:sock_send_length` and
    /// `sock_recv_length` in the socket layer, kernel 6.3+; no program runs for other
    /// syscalls), `tracepoints` (one `syscalls/sys_exit_*` tracepoint per hooked call) or
    /// `raw-tracepoint` (the raw `sys_exit` tracepoint: ~100 ns less per read/write than
    /// `tracepoints`, ~100 ns more per other syscall). The first and last fall back to
    /// `tracepoints` when the kernel refuses them.
    #[arg(long, value_enum, default_value_t = SyscallHook::SocketTracepoints)]
    pub syscall_hook: SyscallHook,
    /// Serve Prometheus metrics and /healthz here (e.g. 127.0.0.1:9464).
    #[arg(long, env = "TAPWIRE_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Do not attach the OpenSSL uprobes.
    #[arg(long)]
    pub no_tls: bool,
    /// Capture only these processes (repeatable).
    #[arg(long = "include-pid")]
    pub include_pids: Vec<u32>,
    /// Never capture these processes (repeatable).
    #[arg(long = "exclude-pid")]
    pub exclude_pids: Vec<u32>,
    /// Capture only connections with this local or remote port (repeatable).
    #[arg(long = "include-port")]
    pub include_ports: Vec<u16>,
    /// Never capture connections with this local or remote port (repeatable).
    #[arg(long = "exclude-port")]
    pub exclude_ports: Vec<u16>,
    /// Capture only processes in this cgroup id (repeatable).
    #[arg(long = "include-cgroup")]
    pub include_cgroups: Vec<u64>,
    /// Never capture processes in this cgroup id (repeatable).
    #[arg(long = "exclude-cgroup")]
    pub exclude_cgroups: Vec<u64>,
    /// Connections tracked at most.
    #[arg(long, default_value_t = 65536)]
    pub max_connections: usize,
    /// A connection without events for this long is forgotten.
    #[arg(long, default_value_t = 300)]
    pub idle_timeout_secs: u64,
}
