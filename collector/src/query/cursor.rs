//! Opaque keyset cursors over `(time, id)` for `ListPairs`.
//!
//! A cursor is a position in the newest-first order plus the way to go from it: older rows
//! (`(time, id) < position`) or newer rows (`> position`). Because it names a position and not
//! an offset, a page deep in the list costs what the first page costs, and rows arriving
//! meanwhile neither shift nor repeat the pages.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

use super::error::QueryError;

/// Format version, so a future layout can refuse old cursors with a clear message.
const VERSION: u8 = 1;
const LEN: usize = 1 + 1 + 8 + 16;

/// Which way a cursor pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// Rows strictly older than the position.
    Older,
    /// Rows strictly newer than the position.
    Newer,
}

/// A decoded cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Which way to page.
    pub way: Way,
    /// The position's `time`, in microseconds since the epoch.
    pub time_us: i64,
    /// The position's `id`.
    pub id: Uuid,
}

impl Cursor {
    /// The opaque text form handed to clients.
    pub fn encode(&self) -> String {
        let mut raw = Vec::with_capacity(LEN);
        raw.push(VERSION);
        raw.push(match self.way {
            Way::Older => 0,
            Way::Newer => 1,
        });
        raw.extend_from_slice(&self.time_us.to_be_bytes());
        raw.extend_from_slice(self.id.as_bytes());
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Parses a cursor produced by [`Cursor::encode`].
    pub fn decode(text: &str) -> Result<Self, QueryError> {
        let raw = URL_SAFE_NO_PAD
            .decode(text.trim())
            .map_err(|e| QueryError::BadCursor(format!("not a cursor of this server ({e})")))?;
        if raw.len() != LEN {
            return Err(QueryError::BadCursor(format!(
                "not a cursor of this server ({} bytes)",
                raw.len()
            )));
        }
        if raw[0] != VERSION {
            return Err(QueryError::BadCursor(format!(
                "cursor version {} is not supported",
                raw[0]
            )));
        }
        let way = match raw[1] {
            0 => Way::Older,
            1 => Way::Newer,
            other => return Err(QueryError::BadCursor(format!("unknown direction {other}"))),
        };
        let mut time = [0u8; 8];
        time.copy_from_slice(&raw[2..10]);
        let mut id = [0u8; 16];
        id.copy_from_slice(&raw[10..26]);
        Ok(Cursor {
            way,
            time_us: i64::from_be_bytes(time),
            id: Uuid::from_bytes(id),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let c = Cursor {
            way: Way::Newer,
            time_us: 1_764_000_000_123_456,
            id: Uuid::now_v7(),
        };
        assert_eq!(Cursor::decode(&c.encode()).ok(), Some(c));
    }

    #[test]
    fn damaged_cursors_are_refused() {
        for bad in ["", "!!!", "AAAA", &"A".repeat(40)] {
            assert!(
                matches!(Cursor::decode(bad), Err(QueryError::BadCursor(_))),
                "{bad}"
            );
        }
    }
}
