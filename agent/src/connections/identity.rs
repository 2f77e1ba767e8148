//! Process identity read from /proc: executable path and container id. Cached per pid
//! (bounded) because every connection of a process shares it.

use std::{collections::HashMap, sync::Arc};

/// What the agent knows about a process beyond its pid and command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessIdentity {
    /// The process's command name (`/proc/PID/comm` of its main thread). The kernel
    /// reports the name of the *thread* that moved the bytes, which for threaded servers
    /// is a worker's name (`tokio-rt-worker`), not the program's.
    pub comm: Option<String>,
    /// `/proc/PID/exe` target (inside the process's mount namespace).
    pub exe: Option<Arc<str>>,
    /// The container runtime's id, when the process runs in a container.
    pub container_id: Option<Arc<str>>,
    /// Its cgroup v2 id (the inode of its cgroup directory), for connections first
    /// seen from an event that left the kernel's out (`flag::SAME_PROCESS`).
    pub cgroup_id: Option<u64>,
}

/// Bounded per-pid cache of [`ProcessIdentity`].
pub struct IdentityCache {
    by_pid: HashMap<u32, ProcessIdentity>,
    capacity: usize,
}

impl IdentityCache {
    /// A cache holding at most `capacity` processes.
    pub fn new(capacity: usize) -> Self {
        Self {
            by_pid: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// The identity of `pid`, read from /proc on first use. A process that already
    /// exited yields an empty identity.
    pub fn lookup(&mut self, pid: u32) -> ProcessIdentity {
        if let Some(found) = self.by_pid.get(&pid) {
            return found.clone();
        }
        if self.by_pid.len() >= self.capacity {
            // Rare (more live processes than the cap): start over rather than grow.
            self.by_pid.clear();
        }
        let identity = read_identity(pid);
        self.by_pid.insert(pid, identity.clone());
        identity
    }

    /// Forgets an exited process (its pid may be reused).
    pub fn forget(&mut self, pid: u32) {
        self.by_pid.remove(&pid);
    }
}

fn read_identity(pid: u32) -> ProcessIdentity {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| Arc::from(p.to_string_lossy().as_ref()));
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok();
    let container_id = cgroups
        .as_deref()
        .and_then(container_id_from_cgroup)
        .map(Arc::from);
    let cgroup_id = cgroups.as_deref().and_then(cgroup_v2_id);
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim_end().to_string())
        .filter(|c| !c.is_empty());
    ProcessIdentity {
        comm,
        exe,
        container_id,
        cgroup_id,
    }
}

/// The id the kernel gives the cgroup v2 of /proc/PID/cgroup text (its `0::` line):
/// the inode number of that cgroup's directory under /sys/fs/cgroup.
fn cgroup_v2_id(text: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    let path = text.lines().find_map(|line| line.strip_prefix("0::"))?;
    let dir = std::path::Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
    std::fs::metadata(dir).ok().map(|m| m.ino())
}

/// Extracts a container id (64 hex digits) from /proc/PID/cgroup text, as written by
/// docker, containerd (CRI), CRI-O and podman under systemd or cgroupfs drivers.
pub fn container_id_from_cgroup(text: &str) -> Option<String> {
    for line in text.lines() {
        let path = line.splitn(3, ':').nth(2)?;
        for part in path.rsplit('/') {
            let mut id = part.strip_suffix(".scope").unwrap_or(part);
            for prefix in [
                "docker-",
                "cri-containerd-",
                "crio-",
                "libpod-",
                "containerd-",
            ] {
                if let Some(rest) = id.strip_prefix(prefix) {
                    id = rest;
                }
            }
            if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Some(id.to_ascii_lowercase());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn finds_container_ids_of_common_runtimes() {
        for text in [
            format!("0::/system.slice/docker-{ID}.scope"),
            format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1_2.slice/cri-containerd-{ID}.scope"
            ),
            format!("12:pids:/kubepods/besteffort/pod1234/{ID}\n0::/"),
            format!("0::/machine.slice/libpod-{ID}.scope/container"),
            format!("0::/kubepods.slice/crio-{ID}.scope"),
        ] {
            assert_eq!(
                container_id_from_cgroup(&text).as_deref(),
                Some(ID),
                "{text}"
            );
        }
    }

    #[test]
    fn host_processes_have_no_container_id() {
        assert_eq!(
            container_id_from_cgroup("0::/user.slice/user-0.slice/session-1.scope"),
            None
        );
        assert_eq!(container_id_from_cgroup("garbage"), None);
        assert_eq!(container_id_from_cgroup(""), None);
    }

    #[test]
    fn reads_own_identity() {
        let mut cache = IdentityCache::new(4);
        let me = cache.lookup(std::process::id());
        assert!(me.exe.is_some());
    }
}
