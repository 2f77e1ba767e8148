//! `ListPairs`: index rows newest first, paged with keyset cursors in both directions.

use std::time::SystemTime;

use tapwire_proto::v1::{ListPairsRequest, ListPairsResponse};
use uuid::Uuid;

use super::cursor::{Cursor, Way};
use super::error::QueryError;
use super::filter::{DEFAULT_RANGE, from_micros, pairs_where, time_range};
use super::summary::{SUMMARY_COLUMNS, position, summary_from_row};
use crate::storage::Stores;

/// Rows per page when the request does not say.
pub const DEFAULT_LIMIT: u32 = 50;
/// The largest page.
pub const MAX_LIMIT: u32 = 1000;

/// Answers `ListPairs`.
pub async fn list_pairs(
    stores: &Stores,
    request: &ListPairsRequest,
    now: SystemTime,
) -> Result<ListPairsResponse, QueryError> {
    let limit = match request.limit {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    };
    let cursor = if request.cursor.is_empty() {
        None
    } else {
        Some(Cursor::decode(&request.cursor)?)
    };
    let filter = request.filter.clone().unwrap_or_default();
    let range = time_range(&filter, now, DEFAULT_RANGE)?;
    let mut w = pairs_where(&filter, &range)?;
    let way = cursor.map_or(Way::Older, |c| c.way);
    if let Some(c) = cursor {
        let t = w.param(from_micros(c.time_us));
        let id = w.param(c.id);
        // The plain `time` bound lets the planner exclude chunks; the row comparison is exact.
        match c.way {
            Way::Older => w.push_raw(format!("time <= {t} AND (time, id) < ({t}, {id})")),
            Way::Newer => w.push_raw(format!("time >= {t} AND (time, id) > ({t}, {id})")),
        }
    }
    let order = match way {
        Way::Older => "time DESC, id DESC",
        Way::Newer => "time ASC, id ASC",
    };
    let sql = format!(
        "SELECT {SUMMARY_COLUMNS} FROM rr_pairs {} ORDER BY {order} LIMIT {}",
        w.clause(),
        limit + 1
    );
    let client = stores.db.get().await?;
    let statement = client.prepare_cached(&sql).await?;
    let mut rows = client.query(&statement, &w.params()).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    if way == Way::Newer {
        rows.reverse();
    }
    let pairs = rows
        .iter()
        .map(summary_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let first = rows.first().map(position).transpose()?;
    let last = rows.last().map(position).transpose()?;
    let at = |way: Way, (time_us, id): (i64, Uuid)| Cursor { way, time_us, id }.encode();

    let (next_cursor, prev_cursor) = match (way, cursor) {
        (Way::Older, _) => {
            let next = match (more, last) {
                (true, Some(last)) => at(Way::Older, last),
                _ => String::new(),
            };
            let prev = match (first, cursor) {
                (Some(first), _) => at(Way::Newer, first),
                (None, Some(c)) => at(Way::Newer, (c.time_us, c.id)),
                // Nothing yet: newer than the start of the range, i.e. whatever arrives.
                (None, None) => at(
                    Way::Newer,
                    (super::filter::micros(range.start) - 1, Uuid::max()),
                ),
            };
            (next, prev)
        }
        (Way::Newer, Some(c)) => {
            let next = at(Way::Older, last.unwrap_or((c.time_us, c.id)));
            let prev = at(Way::Newer, first.unwrap_or((c.time_us, c.id)));
            (next, prev)
        }
        (Way::Newer, None) => (String::new(), String::new()),
    };
    Ok(ListPairsResponse {
        pairs,
        next_cursor,
        prev_cursor,
    })
}
