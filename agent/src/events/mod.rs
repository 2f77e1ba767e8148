//! Kernel events: decoding ring buffer records, putting each connection's records back
//! in order across the rings, and converting kernel time to wall time.

pub mod clock;
pub mod decode;
pub mod reorder;
