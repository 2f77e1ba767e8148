//! Loading the kernel programs, resolving the kernel offsets they need, attaching them
//! (with a printed attach plan) and attaching the TLS uprobes to every libssl found.

pub mod attach_plan;
pub mod btf;
pub mod loader;
pub mod offsets;
pub mod tls_libraries;
