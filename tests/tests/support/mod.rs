//! What every end-to-end test shares: a scratch folder, the stack's binaries, the CI rule
//! for missing dependencies, and readers for the CLI's JSON.

#![allow(dead_code)]

pub mod json;

use std::path::PathBuf;
use tapwire_e2e::stack::Binaries;

/// A scratch folder for one test, removed when dropped (kept when the test panics, for
/// its logs).
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tapwire-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the scratch folder");
        Self { dir }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Whether the test can run here: root (kernel probes) and the built binaries. In CI a
/// missing requirement fails the test; elsewhere it is skipped with the reason.
pub fn preflight(test: &str) -> Option<Binaries> {
    let bins = Binaries::profile("debug");
    let problem = if !tapwire_e2e::is_root() {
        Some("needs root to load eBPF programs".to_string())
    } else {
        ["tapwire-agent", "tapwire-collector", "tapwire"]
            .iter()
            .find_map(|b| bins.path(b).err().map(|e| e.to_string()))
    };
    match problem {
        None => Some(bins),
        Some(why) if tapwire_e2e::in_ci() => panic!("{test}: {why}"),
        Some(why) => {
            eprintln!("skipping {test}: {why}");
            None
        }
    }
}

/// The TimescaleDB root for the collector's managed database.
pub fn postgres_root_args() -> Vec<String> {
    match std::env::var("TAPWIRE_PG_ROOT") {
        Ok(root) => vec!["--postgres-root".into(), root],
        Err(_) => Vec::new(),
    }
}
