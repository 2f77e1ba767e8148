//! Hour and day arithmetic on Unix seconds, for segment keys and partition names.
//!
//! Partitions, chunks and payload segments are all cut at UTC hour boundaries; this keeps
//! the calendar maths in one place without pulling in a date-time crate.

/// Seconds in one hour.
pub const HOUR: i64 = 3600;
/// Seconds in one day.
pub const DAY: i64 = 86_400;

/// The start of the UTC hour containing `secs`.
pub fn hour_start(secs: i64) -> i64 {
    secs - secs.rem_euclid(HOUR)
}

/// The start of the UTC day containing `secs`.
pub fn day_start(secs: i64) -> i64 {
    secs - secs.rem_euclid(DAY)
}

/// A UTC calendar time broken down to the hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CivilHour {
    /// Year, e.g. 2026.
    pub year: i64,
    /// Month, 1..=12.
    pub month: u32,
    /// Day of month, 1..=31.
    pub day: u32,
    /// Hour, 0..=23.
    pub hour: u32,
}

impl CivilHour {
    /// Breaks Unix seconds down into a UTC calendar hour (proleptic Gregorian).
    pub fn from_unix(secs: i64) -> Self {
        let days = secs.div_euclid(DAY);
        let hour = (secs.rem_euclid(DAY) / HOUR) as u32;
        // Howard Hinnant's days_from_civil inverse: exact for every representable day.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Self {
            year,
            month,
            day,
            hour,
        }
    }

    /// `YYYY-MM-DD HH:00:00+00`, a literal PostgreSQL reads as a `timestamptz`.
    pub fn sql_literal(&self) -> String {
        format!(
            "{:04}-{:02}-{:02} {:02}:00:00+00",
            self.year, self.month, self.day, self.hour
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaks_down_known_instants() {
        assert_eq!(
            CivilHour::from_unix(0),
            CivilHour {
                year: 1970,
                month: 1,
                day: 1,
                hour: 0
            }
        );
        // 2026-11-28T07:12:13Z
        let t = 1_795_849_933;
        let c = CivilHour::from_unix(t);
        assert_eq!((c.year, c.month, c.day, c.hour), (2026, 11, 28, 7));
        assert_eq!(c.sql_literal(), "2026-11-28 07:00:00+00");
        // 2024-02-29T23:59:59Z, a leap day.
        let c = CivilHour::from_unix(1_709_251_199);
        assert_eq!((c.year, c.month, c.day, c.hour), (2024, 2, 29, 23));
        assert_eq!(hour_start(t), t - 12 * 60 - 13);
        assert_eq!(day_start(t) % DAY, 0);
    }
}
