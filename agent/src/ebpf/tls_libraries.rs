//! Finds OpenSSL's libssl in every process (through /proc/PID/maps, with container
//! paths reached through /proc/PID/root) and attaches the TLS uprobes once per distinct
//! file (device, inode). New processes are announced by the exec tracepoint; each is
//! scanned a few times during its first second, when its loader maps libraries.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError},
    },
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    programs::{UProbe, uprobe::UProbeScope},
};
use tracing::{debug, info, warn};

use super::attach_plan::{AttachPlan, explain};

/// Which functions each program is attached to.
const PROBES: &[(&str, &[&str])] = &[
    ("ssl_read", &["SSL_read"]),
    ("ssl_write", &["SSL_write"]),
    ("ssl_read_ex", &["SSL_read_ex"]),
    ("ssl_write_ex", &["SSL_write_ex"]),
    (
        "ssl_control",
        &[
            "SSL_do_handshake",
            "SSL_connect",
            "SSL_accept",
            "SSL_shutdown",
        ],
    ),
    (
        "ssl_return",
        &[
            "SSL_read",
            "SSL_write",
            "SSL_read_ex",
            "SSL_write_ex",
            "SSL_do_handshake",
            "SSL_connect",
            "SSL_accept",
            "SSL_shutdown",
        ],
    ),
];

/// Delays after an exec at which the new process is scanned.
const EXEC_RESCANS: [Duration; 3] = [
    Duration::from_millis(30),
    Duration::from_millis(250),
    Duration::from_millis(900),
];
/// Full rescan period (catches libraries loaded later with dlopen).
const FULL_RESCAN: Duration = Duration::from_secs(5);

/// A libssl mapping found in a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryMapping {
    /// (device, inode) as in /proc/PID/maps: identifies the file across mount namespaces.
    pub file: (String, u64),
    /// The path inside the process's mount namespace.
    pub path: String,
}

/// Parses /proc/PID/maps text and returns the distinct libssl mappings.
pub fn libssl_mappings(maps: &str) -> Vec<LibraryMapping> {
    let mut found: Vec<LibraryMapping> = Vec::new();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(_), Some(_), Some(_), Some(dev), Some(inode)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        let path = fields.collect::<Vec<_>>().join(" ");
        let Some(name) = path.rsplit('/').next() else {
            continue;
        };
        if !name.starts_with("libssl.so") || path.ends_with("(deleted)") {
            continue;
        }
        let Ok(inode) = inode.parse::<u64>() else {
            continue;
        };
        let mapping = LibraryMapping {
            file: (dev.to_string(), inode),
            path,
        };
        if !found.contains(&mapping) {
            found.push(mapping);
        }
    }
    found
}

/// A path from the agent's mount namespace to the mapped file: through the process's
/// root (containers, chroots whose maps show in-namespace paths) or as written (maps
/// paths are shown relative to the reader's root when reachable from it). The inode
/// must match, so a different file of the same name is never probed.
fn reachable_path(pid: u32, mapping: &LibraryMapping) -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    [
        format!("/proc/{pid}/root{}", mapping.path),
        mapping.path.clone(),
    ]
    .into_iter()
    .find(|candidate| std::fs::metadata(candidate).is_ok_and(|m| m.ino() == mapping.file.1))
}

/// Counters shared with the metrics endpoint.
#[derive(Debug, Default)]
pub struct TlsStats {
    /// Distinct libssl files with all probes attached.
    pub libraries: AtomicU64,
    /// Uprobe links attached in total.
    pub probes: AtomicU64,
}

/// Owns the loaded object (so every link stays attached) and attaches libraries.
pub struct TlsLibraryWatcher {
    ebpf: Ebpf,
    seen: HashSet<(String, u64)>,
    stats: Arc<TlsStats>,
}

impl TlsLibraryWatcher {
    /// Takes ownership of the object whose TLS programs are already loaded.
    pub fn new(ebpf: Ebpf, stats: Arc<TlsStats>) -> Self {
        Self {
            ebpf,
            seen: HashSet::new(),
            stats,
        }
    }

    /// Scans every process; records what was attached in `plan`.
    pub fn scan_all(&mut self, plan: &mut AttachPlan) {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            warn!("/proc unreadable: TLS libraries cannot be discovered");
            return;
        };
        for entry in entries.flatten() {
            if let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            {
                self.scan_pid(pid, plan);
            }
        }
    }

    /// Scans one process (it may have exited: that is not an error).
    pub fn scan_pid(&mut self, pid: u32, plan: &mut AttachPlan) {
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            return;
        };
        for mapping in libssl_mappings(&maps) {
            if self.seen.contains(&mapping.file) {
                continue;
            }
            let Some(path) = reachable_path(pid, &mapping) else {
                // Not reachable yet (or the process exited): a later scan retries.
                debug!(pid, path = mapping.path, "libssl mapping not reachable");
                continue;
            };
            self.seen.insert(mapping.file.clone());
            self.attach_library(&path, &mapping.path, plan);
        }
    }

    fn attach_library(&mut self, path: &str, shown_path: &str, plan: &mut AttachPlan) {
        let mut attached = 0;
        let mut failed = 0;
        for (program, symbols) in PROBES {
            for symbol in *symbols {
                let target = format!("{shown_path}:{symbol}");
                let result = match self.ebpf.program_mut(program) {
                    None => Err(format!("program {program} missing")),
                    Some(p) => match <&mut UProbe>::try_from(p) {
                        Err(e) => Err(explain(&e)),
                        Ok(probe) => probe
                            .attach([*symbol], path, UProbeScope::AllProcesses)
                            .map(|_| ())
                            .map_err(|e| explain(&e)),
                    },
                };
                match &result {
                    Ok(()) => attached += 1,
                    Err(why) => {
                        failed += 1;
                        debug!(%target, %why, "uprobe not attached");
                    }
                }
                plan.record(program, &target, result);
            }
        }
        self.stats.probes.fetch_add(attached, Ordering::Relaxed);
        if attached > 0 {
            self.stats.libraries.fetch_add(1, Ordering::Relaxed);
        }
        info!(
            library = shown_path,
            via = path,
            attached,
            failed,
            "TLS library attached"
        );
    }

    /// Runs until `execs` is closed: rescans each announced process during its first
    /// second, and everything every few seconds.
    pub fn run(mut self, execs: Receiver<u32>) {
        let mut due: BTreeMap<(Instant, u32), ()> = BTreeMap::new();
        let mut next_full = Instant::now() + FULL_RESCAN;
        loop {
            let now = Instant::now();
            let next_due = due
                .keys()
                .next()
                .map(|(t, _)| *t)
                .unwrap_or(next_full)
                .min(next_full);
            match execs.recv_timeout(next_due.saturating_duration_since(now)) {
                Ok(pid) => {
                    let now = Instant::now();
                    // Bounded: a flood of execs only delays rescans, it never grows memory.
                    if due.len() < 30_000 {
                        for delay in EXEC_RESCANS {
                            due.insert((now + delay, pid), ());
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let now = Instant::now();
            let mut plan = AttachPlan::default();
            while let Some((&(when, pid), _)) = due.iter().next() {
                if when > now {
                    break;
                }
                due.remove(&(when, pid));
                self.scan_pid(pid, &mut plan);
            }
            if now >= next_full {
                self.scan_all(&mut plan);
                next_full = now + FULL_RESCAN;
            }
            if !plan.outcomes.is_empty() {
                info!("TLS probes attached later:\n{plan}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_libssl_file_once() {
        let maps = "\
7f00-7f10 r--p 00000000 08:01 1234 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f10-7f20 r-xp 00010000 08:01 1234 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f20-7f30 r--p 00000000 08:01 99 /usr/lib/x86_64-linux-gnu/libcrypto.so.3
7f30-7f40 r--p 00000000 00:2a 77 /opt/my app/libssl.so.1.1
7f40-7f50 r--p 00000000 08:01 55 /tmp/libssl.so.3 (deleted)
7f50-7f60 rw-p 00000000 00:00 0
";
        let found = libssl_mappings(maps);
        assert_eq!(
            found,
            vec![
                LibraryMapping {
                    file: ("08:01".into(), 1234),
                    path: "/usr/lib/x86_64-linux-gnu/libssl.so.3".into()
                },
                LibraryMapping {
                    file: ("00:2a".into(), 77),
                    path: "/opt/my app/libssl.so.1.1".into()
                },
            ]
        );
    }
}
