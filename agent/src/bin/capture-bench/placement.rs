//! Which CPUs the benchmark's server and load generator run on.
//!
//! With every CPU shared, wrk's threads and nginx often share one CPU while another
//! idles. On this 2-CPU machine a run then left 7–25 % of the machine idle and gave
//! nginx 79–100 % of a CPU with the agent off (preempted up to 15k times a second), and
//! how often that happened varied from run to run. Such a run measures placement luck, not a server at saturation.
//! Pinned, nginx has a CPU of its own and is busy all of it, wrk runs on the others,
//! and the agent is left where the scheduler puts it, as on a real node. Both
//! placements are measured, in the same rounds.

use std::{os::unix::process::CommandExt, path::Path, process::Command};

use anyhow::{Context as _, bail};

/// Where the server and the load generator run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// nginx on the first allowed CPU, the load generator on the others.
    Pinned,
    /// Every process on every allowed CPU, placed by the scheduler.
    Shared,
}

/// The CPUs of each placement, from the CPUs this benchmark may use.
pub struct CpuPlan {
    all: Vec<usize>,
}

impl CpuPlan {
    /// The plan for the CPUs this process may run on; at least two are needed.
    pub fn new() -> anyhow::Result<Self> {
        // SAFETY: an all-zero cpu_set_t is a valid empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid cpu_set_t of the size passed.
        let rc =
            unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("reading this process's CPU set");
        }
        let all: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            // SAFETY: `cpu` is below CPU_SETSIZE.
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
            .collect();
        if all.len() < 2 {
            bail!(
                "the benchmark needs at least two CPUs (server and load generator), has {}",
                all.len()
            );
        }
        Ok(Self { all })
    }

    /// The CPUs nginx runs on.
    pub fn server(&self, placement: Placement) -> &[usize] {
        match placement {
            Placement::Pinned => &self.all[..1],
            Placement::Shared => &self.all,
        }
    }

    /// The CPUs wrk and h2load run on.
    pub fn client(&self, placement: Placement) -> &[usize] {
        match placement {
            Placement::Pinned => &self.all[1..],
            Placement::Shared => &self.all,
        }
    }

    /// The pinned placement in words, for the report.
    pub fn describe_pinned(&self) -> String {
        format!(
            "nginx on CPU {}, load generator on CPUs {:?}, agent unpinned",
            self.all[0],
            &self.all[1..]
        )
    }
}

fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        // SAFETY: the CPUs come from sched_getaffinity, so they are below CPU_SETSIZE.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    set
}

/// Moves every thread of process `pid` to `cpus`.
pub fn place_process(pid: u32, cpus: &[usize]) -> anyhow::Result<()> {
    let set = cpu_set(cpus);
    let tasks = Path::new("/proc").join(pid.to_string()).join("task");
    for entry in
        std::fs::read_dir(&tasks).with_context(|| format!("listing {}", tasks.display()))?
    {
        let tid: libc::pid_t = entry?
            .file_name()
            .to_string_lossy()
            .parse()
            .context("a thread id")?;
        // SAFETY: `set` is a valid cpu_set_t of the size passed.
        let rc =
            unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("moving thread {tid} of process {pid} to CPUs {cpus:?}"));
        }
    }
    Ok(())
}

/// Makes `command` start on `cpus`: its threads inherit the set.
pub fn place_command(command: &mut Command, cpus: &[usize]) {
    let set = cpu_set(cpus);
    // SAFETY: the closure runs between fork and exec and only makes one syscall, which
    // is async-signal-safe; `set` was built before the fork.
    unsafe {
        command.pre_exec(move || {
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
