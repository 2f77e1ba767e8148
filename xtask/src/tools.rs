//! Where tapwire keeps what it installs, and how xtask reports its steps.

use std::path::{Path, PathBuf};

/// The tools folder `./x` installs into and reuses (`$TAPWIRE_TOOLS`).
pub fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TAPWIRE_TOOLS") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache/tapwire")
}

/// The Python virtual environment with grpcio, grpcurl, SeaweedFS and websockets.
pub fn venv_dir() -> PathBuf {
    tools_dir().join("venv")
}

/// The Debian trixie root with PostgreSQL 17 and TimescaleDB.
pub fn timescaledb_root() -> PathBuf {
    tools_dir().join("pg-trixie-tsdb")
}

/// The workspace root (the parent of xtask/).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// PATH with the venv and the tools' bin folder first, so tests find grpcurl, weed,
/// the venv's python3 and bpf-linker.
pub fn path_with_tools() -> std::ffi::OsString {
    let mut parts = vec![venv_dir().join("bin"), tools_dir().join("bin")];
    if let Some(path) = std::env::var_os("PATH") {
        parts.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(parts).unwrap_or_default()
}

/// Prints a progress line for a step.
pub fn step(msg: impl std::fmt::Display) {
    eprintln!("\x1b[1m==> {msg}\x1b[0m");
}
