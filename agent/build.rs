//! Builds the kernel programs (`agent-ebpf`) with the pinned nightly through aya-build.
//! `AYA_BUILD_SKIP=1` skips it (clippy on stable, builds that do not load programs).

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// Must match `NIGHTLY` in `./x`.
const NIGHTLY: &str = "nightly-2026-10-29";

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = std::path::Path::new(&manifest_dir).join("../agent-ebpf");
    let ebpf_dir = ebpf_dir
        .canonicalize()
        .with_context(|| format!("agent-ebpf not found at {}", ebpf_dir.display()))?;
    for file in ["src", "Cargo.toml"] {
        println!("cargo::rerun-if-changed={}", ebpf_dir.join(file).display());
    }
    println!(
        "cargo::rerun-if-changed={}",
        std::path::Path::new(&manifest_dir)
            .join("../agent-common/src")
            .display()
    );
    if std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        // Leave an empty object so include_bytes! compiles; the agent then reports that
        // it has no kernel programs.
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR").context("OUT_DIR")?);
        let object = out.join("tapwire-agent-ebpf");
        if !object.exists() {
            std::fs::write(&object, []).context("writing the placeholder object")?;
        }
    }
    // agent-ebpf is its own workspace (bpf target, nightly): aya-build runs cargo in the
    // current directory, so build from there.
    std::env::set_current_dir(&ebpf_dir).context("entering agent-ebpf")?;
    let root = ebpf_dir.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    aya_build::build_ebpf(
        [Package {
            name: "tapwire-agent-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        Toolchain::Custom(NIGHTLY),
    )
}
