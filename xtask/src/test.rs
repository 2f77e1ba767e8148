//! `cargo xtask test`: the whole test suite, as CI runs it.
//!
//! Formatting and clippy first (cheap, and they catch most review comments), then every
//! crate's tests. The kernel-facing suites (agent, end-to-end) run one test at a time:
//! each starts its own agent, and two agents at once would see each other's traffic.

use clap::Args;

use crate::process::{self, command};
use crate::setup;
use crate::tools::{self, step};

/// Options of `cargo xtask test`.
#[derive(Args)]
pub struct TestArgs {
    /// Skip `cargo fmt --check` and clippy.
    #[arg(long)]
    no_lint: bool,
    /// Only run the tests of these packages (e.g. `-p tapwire-protocols`).
    #[arg(short, long = "package")]
    packages: Vec<String>,
    /// Passed to the test binaries (e.g. a test name filter).
    #[arg(last = true)]
    test_args: Vec<String>,
}

/// Suites that drive real kernel probes; run serially.
const SERIAL_PACKAGES: &[&str] = &["tapwire-agent", "tapwire-e2e"];

/// Runs the suite.
pub fn run(args: &TestArgs) -> anyhow::Result<()> {
    setup::run(setup::Needs::all())?;
    if !args.no_lint {
        step("cargo fmt --check");
        process::run(command("cargo").args(["fmt", "--all", "--", "--check"]))?;
        step("cargo clippy (warnings are errors)");
        process::run(command("cargo").args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    if args.packages.is_empty() {
        step("Kubernetes manifests: render every overlay and validate it (deploy/check.sh)");
        process::run(command("bash").arg("deploy/check.sh"))?;
    }
    step("building every binary (the end-to-end tests run them)");
    process::run(command("cargo").args(["build", "--workspace", "--bins"]))?;

    let selected: Vec<String> = if args.packages.is_empty() {
        Vec::new()
    } else {
        args.packages.clone()
    };
    let wants = |p: &str| selected.is_empty() || selected.iter().any(|s| s == p);

    let parallel: Vec<&str> = [
        "tapwire-proto",
        "tapwire-protocols",
        "tapwire-collector",
        "tapwire-cli",
        "xtask",
        "tapwire-agent-common",
    ]
    .into_iter()
    .filter(|p| wants(p))
    .collect();
    if !parallel.is_empty() {
        step(format!("tests: {}", parallel.join(" ")));
        let mut cmd = command("cargo");
        cmd.arg("test");
        for p in &parallel {
            cmd.args(["-p", p]);
        }
        cmd.arg("--").args(&args.test_args);
        process::run(test_env(&mut cmd))?;
    }
    for p in SERIAL_PACKAGES.iter().filter(|p| wants(p)) {
        step(format!("tests: {p} (one at a time, as root, real probes)"));
        let mut cmd = command("cargo");
        cmd.args(["test", "-p", p, "--", "--test-threads=1"])
            .args(&args.test_args);
        process::run(test_env(&mut cmd))?;
    }
    Ok(())
}

/// The environment every test gets: where the tools are, and where the TimescaleDB root is.
fn test_env(cmd: &mut std::process::Command) -> &mut std::process::Command {
    cmd.env("TAPWIRE_PG_ROOT", tools::timescaledb_root())
        .env("RUST_BACKTRACE", "1")
}
