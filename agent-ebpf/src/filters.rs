//! In-kernel include/exclude filters. The agent's own process is always excluded.

use aya_ebpf::{helpers::bpf_get_current_cgroup_id, macros::map, maps::HashMap};
use tapwire_agent_common::{SockTuple, filter};

/// The agent's tgid: never captured (its own exporter traffic would loop).
#[unsafe(no_mangle)]
static AGENT_TGID: u32 = 0;
/// Bits of `filter::*_INCLUDE_ACTIVE`.
#[unsafe(no_mangle)]
static FILTER_FLAGS: u32 = 0;

#[map]
static PID_FILTER: HashMap<u32, u8> = HashMap::with_max_entries(1024, 0);
#[map]
static PORT_FILTER: HashMap<u16, u8> = HashMap::with_max_entries(1024, 0);
#[map]
static CGROUP_FILTER: HashMap<u64, u8> = HashMap::with_max_entries(1024, 0);

/// The filter verdict stored for `key`, or 0. A volatile read of the value keeps LLVM
/// from merging the loads of two lookups into a form the verifier rejects.
#[inline(always)]
fn verdict<K>(map: &HashMap<K, u8>, key: &K) -> u8 {
    match map.get_ptr(key) {
        Some(value) => unsafe { core::ptr::read_volatile(value) },
        None => 0,
    }
}

#[inline(always)]
fn flags() -> u32 {
    unsafe { core::ptr::read_volatile(&raw const FILTER_FLAGS) }
}

/// Whether the agent's own process issued this call.
#[inline(always)]
pub fn is_agent(tgid: u32) -> bool {
    tgid == unsafe { core::ptr::read_volatile(&raw const AGENT_TGID) }
}

/// Pid and cgroup filters: cheap, checked at syscall entry.
#[inline(always)]
pub fn task_allowed(tgid: u32) -> bool {
    if is_agent(tgid) {
        return false;
    }
    let flags = flags();
    // Lookups only when filters exist: this runs on every socket-capable syscall.
    if flags & (filter::PID_INCLUDE_ACTIVE | filter::PID_EXCLUDE_ACTIVE) != 0 {
        let by_pid = verdict(&PID_FILTER, &tgid);
        if by_pid == filter::EXCLUDE {
            return false;
        }
        if flags & filter::PID_INCLUDE_ACTIVE != 0 && by_pid != filter::INCLUDE {
            return false;
        }
    }
    if flags & filter::CGROUP_INCLUDE_ACTIVE != 0 || flags & filter::CGROUP_EXCLUDE_ACTIVE != 0 {
        let cgroup = unsafe { bpf_get_current_cgroup_id() };
        let by_cgroup = verdict(&CGROUP_FILTER, &cgroup);
        if by_cgroup == filter::EXCLUDE {
            return false;
        }
        if flags & filter::CGROUP_INCLUDE_ACTIVE != 0 && by_cgroup != filter::INCLUDE {
            return false;
        }
    }
    true
}

/// Port filters: checked once the connection's addresses are known.
#[inline(always)]
pub fn ports_allowed(tuple: &SockTuple) -> bool {
    let flags = flags();
    if flags & (filter::PORT_INCLUDE_ACTIVE | filter::PORT_EXCLUDE_ACTIVE) == 0 {
        return true;
    }
    let local = verdict(&PORT_FILTER, &tuple.local_port);
    let remote = verdict(&PORT_FILTER, &tuple.remote_port);
    if local == filter::EXCLUDE || remote == filter::EXCLUDE {
        return false;
    }
    if flags & filter::PORT_INCLUDE_ACTIVE != 0
        && local != filter::INCLUDE
        && remote != filter::INCLUDE
    {
        return false;
    }
    true
}
