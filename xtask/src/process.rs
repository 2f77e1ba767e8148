//! Running commands with the tools environment and a clear error when they fail.

use anyhow::{Context, bail};
use std::process::{Command, Stdio};

use crate::tools;

/// A command with the tools on PATH and `TAPWIRE_TOOLS` set.
pub fn command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("PATH", tools::path_with_tools())
        .env("TAPWIRE_TOOLS", tools::tools_dir())
        .current_dir(tools::workspace_root());
    cmd
}

/// Runs `cmd` to completion; fails with its command line when it exits non-zero.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` with its output captured; returns stdout, fails with stderr.
pub fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
