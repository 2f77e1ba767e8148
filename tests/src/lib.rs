//! tapwire's end-to-end harness: the real tapwire binaries and real peers (nginx,
//! python http.server, a grpcio server), started as child processes on loopback and
//! stopped when dropped. The end-to-end tests (`tests/tests/`) and `cargo xtask up --demo`
//! both use it.

pub mod child;
pub mod peers;
pub mod stack;

pub use child::Child;

/// True in CI (`CI=true`): a test whose real dependency is missing must fail there.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// True when running as root (the kernel probes need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
