//! `--since`/`--until` values: a duration before now (`15m`) or an RFC 3339 time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use tapwire_proto::Timestamp;

/// The time `spec` means, relative to `now`.
pub fn parse_time(spec: &str, now: SystemTime) -> Result<SystemTime> {
    let spec = spec.trim();
    if let Ok(ago) = humantime::parse_duration(spec) {
        return now
            .checked_sub(ago)
            .with_context(|| format!("{spec:?} reaches before the epoch"));
    }
    humantime::parse_rfc3339_weak(spec).with_context(|| {
        format!("{spec:?} is neither a duration (15m, 2h) nor a time (2026-11-28T08:00:00Z)")
    })
}

/// A protobuf timestamp.
pub fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// Back from a protobuf timestamp (invalid ones become the epoch).
pub fn system_time(ts: &Timestamp) -> SystemTime {
    let secs = u64::try_from(ts.seconds).unwrap_or(0);
    let nanos = u32::try_from(ts.nanos).unwrap_or(0).min(999_999_999);
    UNIX_EPOCH + Duration::new(secs, nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_times() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            parse_time("15m", now).unwrap(),
            now - Duration::from_secs(900)
        );
        assert_eq!(
            parse_time("1d", now).unwrap(),
            now - Duration::from_secs(86_400)
        );
        assert_eq!(
            parse_time("1970-01-02T00:00:00Z", now).unwrap(),
            UNIX_EPOCH + Duration::from_secs(86_400)
        );
        assert!(parse_time("yesterday", now).is_err());
    }
}
