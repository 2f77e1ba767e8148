//! A child process that is stopped (SIGTERM, then SIGKILL) when dropped.

use anyhow::{Context, bail};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A running child process with a name for messages; stopped on drop.
pub struct Child {
    name: String,
    inner: Option<std::process::Child>,
}

impl Child {
    /// Starts `cmd`, with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> anyhow::Result<Self> {
        Self::spawn_split(name, cmd, log, log)
    }

    /// Starts `cmd`, with stdout appended to `stdout` and stderr to `stderr`.
    pub fn spawn_split(
        name: &str,
        cmd: &mut Command,
        stdout: &Path,
        stderr: &Path,
    ) -> anyhow::Result<Self> {
        let open = |path: &Path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))
        };
        // SAFETY: between fork and exec only async-signal-safe calls are made
        // (sigemptyset, pthread_sigmask). A supervisor that blocks SIGINT/SIGTERM to wait
        // for them synchronously (`cargo xtask up`) must not pass that mask on: a child
        // with SIGTERM blocked could never shut down cleanly.
        unsafe {
            cmd.pre_exec(|| {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                Ok(())
            });
        }
        let inner = cmd
            .stdin(Stdio::null())
            .stdout(open(stdout)?)
            .stderr(open(stderr)?)
            // Its own process group: a Ctrl-C meant for the supervisor must not reach the
            // children first, so they stop in the right order.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Self {
            name: name.to_string(),
            inner: Some(inner),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.inner.as_ref().map_or(0, std::process::Child::id)
    }

    /// The child's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Fails when the child has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(child) = self.inner.as_mut()
            && let Some(status) = child.try_wait()?
        {
            bail!("{} exited: {status}", self.name);
        }
        Ok(())
    }

    /// Sends SIGTERM and waits up to `grace` for the exit, then SIGKILL. Returns whether
    /// the child exited successfully on its own.
    pub fn stop(&mut self, grace: Duration) -> bool {
        let Some(mut child) = self.inner.take() else {
            return true;
        };
        signal(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Kills the child with SIGKILL (a crash, for fault tests).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.inner.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid, sig) };
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Waits until something accepts connections on `addr`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("nothing listens on {addr} after {timeout:?}")
}
