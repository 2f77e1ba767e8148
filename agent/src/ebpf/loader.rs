//! Loads the kernel object with its read-only configuration and attaches the socket
//! (or syscall), socket-state and process tracepoints.

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray},
    programs::{BtfTracePoint, RawTracePoint, TracePoint, UProbe},
};
use tapwire_agent_common::{KernelOffsets, MAX_CAPTURE_BYTES, MAX_RECORDS_PER_CALL, filter};
use thiserror::Error;
use tracing::warn;

use super::{
    attach_plan::{AttachPlan, explain},
    rings::{EventRings, RingPlan},
};

/// The kernel object built by `build.rs` (empty when built with `AYA_BUILD_SKIP=1`).
static KERNEL_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tapwire-agent-ebpf"));

/// Why the programs could not be loaded or capture cannot work.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error("this agent was built with AYA_BUILD_SKIP=1 and contains no kernel programs")]
    NoKernelObject,
    #[error("loading the kernel object failed: {0}")]
    Load(String),
    #[error("map {0} missing from the kernel object")]
    MissingMap(&'static str),
    #[error("configuring map {name}: {reason}")]
    Map { name: &'static str, reason: String },
    #[error("capture is impossible: {0}")]
    CaptureImpossible(String),
}

/// Include/exclude lists applied in the kernel.
#[derive(Debug, Clone, Default)]
pub struct CaptureFilters {
    pub include_pids: Vec<u32>,
    pub exclude_pids: Vec<u32>,
    pub include_ports: Vec<u16>,
    pub exclude_ports: Vec<u16>,
    pub include_cgroups: Vec<u64>,
    pub exclude_cgroups: Vec<u64>,
}

impl CaptureFilters {
    fn flags(&self) -> u32 {
        let mut flags = 0;
        for (list_empty, bit) in [
            (self.include_pids.is_empty(), filter::PID_INCLUDE_ACTIVE),
            (self.exclude_pids.is_empty(), filter::PID_EXCLUDE_ACTIVE),
            (self.include_ports.is_empty(), filter::PORT_INCLUDE_ACTIVE),
            (self.exclude_ports.is_empty(), filter::PORT_EXCLUDE_ACTIVE),
            (
                self.include_cgroups.is_empty(),
                filter::CGROUP_INCLUDE_ACTIVE,
            ),
            (
                self.exclude_cgroups.is_empty(),
                filter::CGROUP_EXCLUDE_ACTIVE,
            ),
        ] {
            if !list_empty {
                flags |= bit;
            }
        }
        flags
    }
}

/// Where the socket calls are hooked. Measured on this project's machine (kernel 6.18,
/// `agent/README.md`): the socket tracepoints cost least, both per socket call and for
/// the node's other syscalls, which none of their programs sees; of the syscall hooks the
/// raw tracepoint costs ~100 ns less per hooked call and ~100 ns more per call it does
/// not hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SyscallHook {
    /// `sock:sock_send_length` / `sock_recv_length` as BTF tracepoints (kernel 6.3+),
    /// which fire inside the socket layer with the socket itself, plus the TCP handshake
    /// for the role; no syscall tracepoint at all. Falls back to `tracepoints` when the
    /// kernel lacks them.
    SocketTracepoints,
    /// The per-syscall `syscalls/sys_exit_*` tracepoints, each hooked call reaching the
    /// program through the perf event machinery; other calls pay only a bitmap test.
    Tracepoints,
    /// The raw `sys_exit` tracepoint: one program called directly on every syscall's
    /// exit; falls back to `tracepoints` when the kernel refuses it.
    RawTracepoint,
}

/// Load-time settings.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Where the socket calls are hooked.
    pub syscall_hook: SyscallHook,
    /// Payload bytes copied per syscall (clamped to 256 KiB; iovec calls to 32 KiB).
    pub capture_bytes: u32,
    /// The event rings: how many, of what size.
    pub rings: RingPlan,
    /// In-kernel filters.
    pub filters: CaptureFilters,
}

/// The loaded object plus the maps user space reads.
pub struct LoadedCapture {
    /// Owns every program and link: dropping it detaches everything.
    pub ebpf: Ebpf,
    /// The event rings.
    pub rings: EventRings,
    /// Per-CPU drop counters indexed by `drop_reason`.
    pub drops: PerCpuArray<MapData, u64>,
    /// What was attached.
    pub plan: AttachPlan,
}

/// Tracepoint programs and the hooks each is attached to. Socket calls are handled at
/// exit only (arguments from the saved registers): no entry probes on the hot path.
const TRACEPOINTS: &[(&str, &str, &[&str])] = &[
    (
        "exit_call",
        "syscalls",
        &[
            "sys_exit_read",
            "sys_exit_recvfrom",
            "sys_exit_write",
            "sys_exit_sendto",
            "sys_exit_readv",
            "sys_exit_writev",
            "sys_exit_recvmsg",
            "sys_exit_sendmsg",
            "sys_exit_sendfile64",
            "sys_exit_connect",
            "sys_exit_accept",
            "sys_exit_accept4",
        ],
    ),
    ("enter_close", "syscalls", &["sys_enter_close"]),
    ("sock_state", "sock", &["inet_sock_set_state"]),
    ("process_exec", "sched", &["sched_process_exec"]),
    ("process_exit", "sched", &["sched_process_exit"]),
];

/// The TLS uprobe programs (loaded here, attached per library by `tls_libraries`).
pub const TLS_PROGRAMS: &[&str] = &[
    "ssl_read",
    "ssl_write",
    "ssl_read_ex",
    "ssl_write_ex",
    "ssl_control",
    "ssl_return",
];

/// Loads the object, fills the filter maps and attaches the tracepoints. Fails when no
/// data can be captured at all.
pub fn load_and_attach(
    options: &LoadOptions,
    offsets: &KernelOffsets,
    load_tls: bool,
) -> Result<LoadedCapture, LoadError> {
    if KERNEL_OBJECT.is_empty() {
        return Err(LoadError::NoKernelObject);
    }
    let agent_tgid = std::process::id();
    let capture_bytes = options
        .capture_bytes
        .min((MAX_RECORDS_PER_CALL * MAX_CAPTURE_BYTES) as u32);
    let filter_flags = options.filters.flags();
    // Wake the reader once an eighth of a ring is filled; it drains on a timer too.
    let wakeup_bytes = u64::from(options.rings.ring_bytes / 8);
    let possible_cpus = aya::util::nr_cpus()
        .map_err(|(path, e)| LoadError::Load(format!("counting CPUs from {path}: {e}")))?
        .get();
    let mut ebpf = EbpfLoader::new()
        .override_global("OFFSETS", offsets, true)
        .override_global("AGENT_TGID", &agent_tgid, true)
        .override_global("CAPTURE_BYTES", &capture_bytes, true)
        .override_global("FILTER_FLAGS", &filter_flags, true)
        .override_global("WAKEUP_BYTES", &wakeup_bytes, true)
        .map_max_entries("RINGS", possible_cpus)
        .map_max_entries("SCRATCH", possible_cpus)
        .load(KERNEL_OBJECT)
        .map_err(|e| LoadError::Load(explain(&e)))?;
    fill_filters(&mut ebpf, &options.filters)?;
    let rings = EventRings::create(&mut ebpf, &options.rings)?;

    let mut plan = AttachPlan::default();
    let socket_calls = options.syscall_hook == SyscallHook::SocketTracepoints
        && attach_socket_tracepoints(&mut ebpf, &mut plan);
    let raw_exit = options.syscall_hook == SyscallHook::RawTracepoint
        && attach_raw_sys_exit(&mut ebpf, &mut plan);
    for (program, category, hooks) in TRACEPOINTS {
        // The socket tracepoints see data and closes without any syscall hook; the raw
        // sys_exit program replaces the per-syscall exits.
        let replaced = match *program {
            "exit_call" => socket_calls || raw_exit,
            "enter_close" => socket_calls,
            _ => false,
        };
        if replaced {
            continue;
        }
        let loaded = ebpf
            .program_mut(program)
            .ok_or_else(|| format!("program {program} missing from the object"))
            .and_then(|p| {
                let tp: &mut TracePoint = p.try_into().map_err(|e| explain(&e))?;
                tp.load().map_err(|e| explain(&e))?;
                Ok(tp)
            });
        match loaded {
            Err(why) => {
                for hook in *hooks {
                    plan.record(program, &format!("{category}/{hook}"), Err(why.clone()));
                }
            }
            Ok(tp) => {
                for hook in *hooks {
                    let result = tp
                        .attach(category, hook)
                        .map(|_| ())
                        .map_err(|e| explain(&e));
                    plan.record(program, &format!("{category}/{hook}"), result);
                }
            }
        }
    }
    let essential: &[(&str, &str)] = if raw_exit || socket_calls {
        &[]
    } else {
        &[
            ("exit_call", "syscalls/sys_exit_read"),
            ("exit_call", "syscalls/sys_exit_write"),
        ]
    };
    if let Some((program, target)) = essential.iter().find(|(p, t)| !plan.is_attached(p, t)) {
        let why = plan
            .outcomes
            .iter()
            .find(|o| o.program == *program && o.target == *target)
            .and_then(|o| o.failure.clone())
            .unwrap_or_default();
        return Err(LoadError::CaptureImpossible(format!(
            "{program} could not attach to {target}: {why}\n{plan}"
        )));
    }
    if load_tls {
        for program in TLS_PROGRAMS {
            let result = ebpf
                .program_mut(program)
                .ok_or_else(|| format!("program {program} missing from the object"))
                .and_then(|p| {
                    let probe: &mut UProbe = p.try_into().map_err(|e| explain(&e))?;
                    probe.load().map_err(|e| explain(&e))
                });
            if let Err(why) = &result {
                warn!(program, %why, "TLS probe not loaded");
                plan.record(program, "(load)", result);
            }
        }
    }
    let drops = ebpf
        .take_map("DROPS")
        .ok_or(LoadError::MissingMap("DROPS"))?;
    let drops = PerCpuArray::try_from(drops).map_err(|e| LoadError::Map {
        name: "DROPS",
        reason: e.to_string(),
    })?;
    Ok(LoadedCapture {
        ebpf,
        rings,
        drops,
        plan,
    })
}

/// BTF tracepoints the socket data programs attach to, by program.
const SOCKET_TRACEPOINTS: &[(&str, &str)] = &[
    ("sock_send", "sock_send_length"),
    ("sock_recv", "sock_recv_length"),
];

/// Attaches the socket data programs and the handshake program; records the outcomes
/// and says whether all are attached. If one is not, the others are unloaded again (the
/// syscall tracepoints stand in, and must not capture the same bytes twice).
fn attach_socket_tracepoints(ebpf: &mut Ebpf, plan: &mut AttachPlan) -> bool {
    let btf = match Btf::from_sys_fs() {
        Ok(btf) => btf,
        Err(e) => {
            let why = explain(&e);
            warn!(%why, "kernel BTF unreadable; using the syscall tracepoints");
            plan.record("sock_send", "tp_btf/sock_send_length", Err(why));
            return false;
        }
    };
    let mut attached = Vec::new();
    let mut failure = None;
    for (program, hook) in SOCKET_TRACEPOINTS {
        let result = ebpf
            .program_mut(program)
            .ok_or_else(|| format!("program {program} missing from the object"))
            .and_then(|p| {
                let tp: &mut BtfTracePoint = p.try_into().map_err(|e| explain(&e))?;
                tp.load(hook, &btf).map_err(|e| explain(&e))?;
                tp.attach().map(|_| ()).map_err(|e| explain(&e))
            });
        plan.record(program, &format!("tp_btf/{hook}"), result.clone());
        match result {
            Ok(()) => attached.push(*program),
            Err(why) => {
                failure = Some(why);
                break;
            }
        }
    }
    if failure.is_none() {
        let result = ebpf
            .program_mut("tcp_handshake")
            .ok_or_else(|| "program tcp_handshake missing from the object".to_string())
            .and_then(|p| {
                let tp: &mut TracePoint = p.try_into().map_err(|e| explain(&e))?;
                tp.load().map_err(|e| explain(&e))?;
                tp.attach("sock", "inet_sock_set_state")
                    .map(|_| ())
                    .map_err(|e| explain(&e))
            });
        plan.record("tcp_handshake", "sock/inet_sock_set_state", result.clone());
        match result {
            Ok(()) => attached.push("tcp_handshake"),
            Err(why) => failure = Some(why),
        }
    }
    let Some(why) = failure else {
        return true;
    };
    warn!(%why, "socket tracepoints unavailable; using the per-syscall tracepoints");
    for program in attached {
        if let Some(p) = ebpf.program_mut(program) {
            let unloaded = match program {
                "tcp_handshake" => <&mut TracePoint>::try_from(p).and_then(|tp| tp.unload()),
                _ => <&mut BtfTracePoint>::try_from(p).and_then(|tp| tp.unload()),
            };
            if let Err(e) = unloaded {
                warn!(program, error = %e, "could not detach");
            }
        }
    }
    false
}

/// Attaches `sys_exit` to the raw `sys_exit` tracepoint; records the outcome and says
/// whether it is attached (if not, the per-syscall tracepoints stand in).
fn attach_raw_sys_exit(ebpf: &mut Ebpf, plan: &mut AttachPlan) -> bool {
    let result = ebpf
        .program_mut("sys_exit")
        .ok_or_else(|| "program sys_exit missing from the object".to_string())
        .and_then(|p| {
            let raw: &mut RawTracePoint = p.try_into().map_err(|e| explain(&e))?;
            raw.load().map_err(|e| explain(&e))?;
            raw.attach("sys_exit").map(|_| ()).map_err(|e| explain(&e))
        });
    if let Err(why) = &result {
        warn!(%why, "raw sys_exit tracepoint unavailable; using the per-syscall tracepoints");
    }
    let attached = result.is_ok();
    plan.record("sys_exit", "raw_tracepoint/sys_exit", result);
    attached
}

fn fill_filters(ebpf: &mut Ebpf, filters: &CaptureFilters) -> Result<(), LoadError> {
    fn fill<K: aya::Pod + Copy>(
        ebpf: &mut Ebpf,
        name: &'static str,
        entries: &[(K, u8)],
    ) -> Result<(), LoadError> {
        let map = ebpf.map_mut(name).ok_or(LoadError::MissingMap(name))?;
        let mut map: BpfHashMap<&mut MapData, K, u8> =
            BpfHashMap::try_from(map).map_err(|e| LoadError::Map {
                name,
                reason: e.to_string(),
            })?;
        for (key, value) in entries {
            map.insert(key, value, 0).map_err(|e| LoadError::Map {
                name,
                reason: e.to_string(),
            })?;
        }
        Ok(())
    }
    fill(
        ebpf,
        "PID_FILTER",
        &tagged(&filters.include_pids, &filters.exclude_pids),
    )?;
    fill(
        ebpf,
        "PORT_FILTER",
        &tagged(&filters.include_ports, &filters.exclude_ports),
    )?;
    fill(
        ebpf,
        "CGROUP_FILTER",
        &tagged(&filters.include_cgroups, &filters.exclude_cgroups),
    )?;
    Ok(())
}

fn tagged<K: Copy>(include: &[K], exclude: &[K]) -> Vec<(K, u8)> {
    include
        .iter()
        .map(|k| (*k, filter::INCLUDE))
        .chain(exclude.iter().map(|k| (*k, filter::EXCLUDE)))
        .collect()
}
