//! Kernel events: decoding ring buffer records and converting kernel time to wall time.

pub mod clock;
pub mod decode;
