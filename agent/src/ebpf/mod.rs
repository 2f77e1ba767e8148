//! Loading the kernel programs, resolving the kernel offsets they need, creating the
//! event rings, attaching the programs (with a printed attach plan) and attaching the
//! TLS uprobes to every libssl found.

pub mod attach_plan;
pub mod btf;
pub mod loader;
pub mod offsets;
pub mod rings;
pub mod tls_libraries;
