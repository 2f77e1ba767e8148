//! `cargo xtask up`: tapwire on this machine. Builds the release binaries, starts the
//! collector (managed PostgreSQL with TimescaleDB, payloads in a local folder) and the
//! agent capturing every process here, prints how to look at the traffic, and runs until
//! Ctrl-C, which stops the agent first (it flushes), then the collector. Data is kept in
//! `.tapwire/` for the next run.

use anyhow::Context;
use clap::Args;
use std::net::SocketAddr;
use std::time::Duration;
use tapwire_e2e::stack::{Agent, Binaries, Collector};

use crate::demo::Demo;
use crate::process::{self, command};
use crate::setup;
use crate::tools::{self, step};

/// Options of `cargo xtask up`.
#[derive(Args)]
pub struct UpArgs {
    /// Also start local servers and clients (HTTP/1, HTTPS, HTTP/2, gRPC) that make traffic.
    #[arg(long)]
    demo: bool,
    /// The collector's gRPC address (ingest and query).
    #[arg(long, default_value = "127.0.0.1:7440")]
    listen: SocketAddr,
    /// Build in debug mode (faster to build, slower to run).
    #[arg(long)]
    debug: bool,
}

/// Runs the stack until Ctrl-C.
pub fn run(args: &UpArgs) -> anyhow::Result<()> {
    setup::run(setup::Needs {
        test_peers: args.demo,
        python: args.demo,
        timescaledb: true,
    })?;
    let profile = if args.debug { "debug" } else { "release" };
    step(format!("building tapwire ({profile})"));
    let mut build = command("cargo");
    build.args([
        "build",
        "-p",
        "tapwire-agent",
        "-p",
        "tapwire-collector",
        "-p",
        "tapwire-cli",
    ]);
    if !args.debug {
        build.arg("--release");
    }
    process::run(&mut build)?;

    let state = tools::workspace_root().join(".tapwire");
    let logs = state.join("logs");
    std::fs::create_dir_all(&logs)?;
    let bins = Binaries::profile(profile);
    // Waited for synchronously. The children run in their own process groups (a
    // terminal's Ctrl-C reaches only us) with an empty signal mask (`Child`), so we stop
    // them in order: agent first (it flushes), then the collector.
    let signals = SignalWait::block()?;

    step("starting the collector (managed TimescaleDB, payloads in .tapwire/collector)");
    let metrics = SocketAddr::from(([127, 0, 0, 1], args.listen.port() + 1));
    let root = tools::timescaledb_root();
    let root_flag = root.to_string_lossy().into_owned();
    let mut collector = Collector::start_at(
        &bins,
        &state.join("collector"),
        &logs,
        args.listen,
        metrics,
        &["--postgres-root", &root_flag],
    )?;
    step("starting the agent (eBPF capture of every process on this machine)");
    let mut agent = Agent::start(&bins, &collector.url(), &state.join("agent"), &logs, &[])?;
    let mut demo = if args.demo {
        step("starting demo servers and clients (HTTP/1, HTTPS, HTTP/2, gRPC)");
        Some(Demo::start(&state.join("demo"))?)
    } else {
        None
    };

    let cli = bins.path("tapwire")?;
    let server = collector.url();
    println!();
    println!("tapwire is recording this machine's traffic. Look at it with:");
    println!(
        "  {} --server {server} pairs list --since 5m",
        cli.display()
    );
    println!(
        "  {} --server {server} throughput --since 15m --interval 1m",
        cli.display()
    );
    println!("  {} --server {server} deps", cli.display());
    println!("  {} --server {server} tail", cli.display());
    println!(
        "Logs: {}   Ctrl-C stops everything; the data stays in {}.",
        logs.display(),
        state.display()
    );

    loop {
        if signals.wait(Duration::from_secs(1))? {
            break;
        }
        collector.child().check_running()?;
        agent.child().check_running()?;
        if let Some(demo) = demo.as_mut() {
            demo.keep_going()?;
        }
    }
    step("stopping: demo, agent (flushing), collector");
    drop(demo);
    let agent_clean = agent.stop();
    let collector_clean = collector.stop();
    anyhow::ensure!(
        agent_clean,
        "the agent did not stop cleanly; see {}",
        logs.display()
    );
    anyhow::ensure!(
        collector_clean,
        "the collector did not stop cleanly; see {}",
        logs.display()
    );
    Ok(())
}

/// SIGINT and SIGTERM, blocked and waited for synchronously.
struct SignalWait {
    set: libc::sigset_t,
}

impl SignalWait {
    fn block() -> anyhow::Result<Self> {
        // SAFETY: the sigset is initialised by sigemptyset before use; pthread_sigmask only
        // changes this thread's mask (xtask is single-threaded here).
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(std::io::Error::from_raw_os_error(rc)).context("blocking signals");
            }
            Ok(Self { set })
        }
    }

    /// Whether a signal arrived within `timeout`.
    fn wait(&self, timeout: Duration) -> anyhow::Result<bool> {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().try_into().unwrap_or(1),
            tv_nsec: 0,
        };
        // SAFETY: `set` is a valid initialised sigset; a null siginfo pointer is allowed.
        let rc = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &ts) };
        Ok(rc > 0)
    }
}
