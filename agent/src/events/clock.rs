//! Converts `bpf_ktime_get_ns` (CLOCK_MONOTONIC) to unix wall-clock nanoseconds.

/// The offset between the monotonic clock and the wall clock, measured once.
#[derive(Debug, Clone, Copy)]
pub struct BootClock {
    offset_ns: i128,
}

fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; both clocks always exist.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

impl BootClock {
    /// Measures the offset now.
    pub fn measure() -> Self {
        let mono = now_ns(libc::CLOCK_MONOTONIC);
        let real = now_ns(libc::CLOCK_REALTIME);
        Self {
            offset_ns: real - mono,
        }
    }

    /// Unix nanoseconds for a monotonic kernel timestamp.
    pub fn to_unix_ns(&self, ktime_ns: u64) -> u64 {
        (ktime_ns as i128 + self.offset_ns).clamp(0, u64::MAX as i128) as u64
    }

    /// The current monotonic time in nanoseconds, the clock of kernel timestamps.
    pub fn now_monotonic_ns() -> u64 {
        now_ns(libc::CLOCK_MONOTONIC).clamp(0, u64::MAX as i128) as u64
    }

    /// The current unix time in nanoseconds.
    pub fn now_unix_ns() -> u64 {
        now_ns(libc::CLOCK_REALTIME).clamp(0, u64::MAX as i128) as u64
    }
}
