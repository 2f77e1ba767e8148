//! Prepares the host for eBPF: tracefs and bpffs mounted, memlock limit raised (best
//! effort: recent kernels account BPF memory to the memory cgroup instead).

use std::{ffi::CString, path::Path};

use tracing::{info, warn};

fn is_mounted(target: &str, fstype: &str) -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .map(|m| {
            m.lines().any(|l| {
                let mut f = l.split_whitespace();
                let _ = f.next();
                f.next() == Some(target) && f.next() == Some(fstype)
            })
        })
        .unwrap_or(false)
}

fn mount(fstype: &str, target: &str) -> std::io::Result<()> {
    let c = |s: &str| CString::new(s).map_err(std::io::Error::other);
    let (source, fs, dir) = (c(fstype)?, c(fstype)?, c(target)?);
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            dir.as_ptr(),
            fs.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Where tracefs is mounted (the kernel's own mount point for it).
pub const TRACEFS: &str = "/sys/kernel/tracing";

/// Mounts a `fstype` filesystem at `target` unless one is mounted there already; says
/// whether it mounted one.
pub fn mount_if_absent(fstype: &str, target: &str) -> std::io::Result<bool> {
    if is_mounted(target, fstype) {
        return Ok(false);
    }
    if !Path::new(target).exists() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("mount point {target} missing"),
        ));
    }
    mount(fstype, target).map(|()| true)
}

/// Mounts tracefs at /sys/kernel/tracing and bpffs at /sys/fs/bpf when absent. Failure
/// is logged: tracepoint attachment then reports the real consequence.
pub fn ensure_kernel_filesystems() {
    for (fstype, target) in [("tracefs", TRACEFS), ("bpf", "/sys/fs/bpf")] {
        match mount_if_absent(fstype, target) {
            Ok(true) => info!(target, "mounted {fstype}"),
            Ok(false) => {}
            Err(e) => warn!(target, error = %e, "could not mount {fstype}"),
        }
    }
}

/// Raises RLIMIT_MEMLOCK to infinity; on kernels that account BPF memory to cgroups the
/// limit does not matter, so failure is only a warning.
pub fn raise_memlock_limit() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } != 0 {
        warn!(
            error = %std::io::Error::last_os_error(),
            "could not raise RLIMIT_MEMLOCK; continuing (BPF memory is cgroup-accounted on kernels >= 5.11)"
        );
    }
}
