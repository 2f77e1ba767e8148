//! Reading `rr_pairs` rows into `PairSummary` messages.

use std::time::SystemTime;

use tapwire_proto::v1::PairSummary;
use tokio_postgres::Row;
use uuid::Uuid;

use super::error::QueryError;
use super::filter::{micros, to_timestamp};

/// The `rr_pairs` columns [`summary_from_row`] reads, in its order.
pub const SUMMARY_COLUMNS: &str = "id, time, duration_ns, is_inbound, protocol, method, scheme, \
    authority, path, endpoint, status, grpc_status, request_size, response_size, local_addr, \
    remote_addr, tls, pid, comm, node, namespace, pod, service, remote_service, complete, \
    truncated, partial_headers, lost_events";

/// Number of columns in [`SUMMARY_COLUMNS`]; the segment columns of a payload query follow.
pub const SUMMARY_COLUMN_COUNT: usize = 28;

/// The payload location columns, appended after [`SUMMARY_COLUMNS`] when payloads are read.
pub const SEGMENT_COLUMNS: &str = "segment_key, segment_offset, segment_length";

/// Where one pair's payload lives.
#[derive(Debug, Clone)]
pub struct SegmentRef {
    /// Object key of the segment.
    pub key: String,
    /// Byte offset of the pair's frame.
    pub offset: u64,
    /// Byte length of the frame.
    pub length: u32,
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, i: usize) -> Result<T, QueryError> {
    row.try_get(i)
        .map_err(|e| QueryError::Database(format!("reading column {i}: {e}")))
}

/// The `(time, id)` keyset position of a row read with [`SUMMARY_COLUMNS`].
pub fn position(row: &Row) -> Result<(i64, Uuid), QueryError> {
    let id: Uuid = get(row, 0)?;
    let time: SystemTime = get(row, 1)?;
    Ok((micros(time), id))
}

/// A `PairSummary` from a row read with [`SUMMARY_COLUMNS`].
pub fn summary_from_row(row: &Row) -> Result<PairSummary, QueryError> {
    let id: Uuid = get(row, 0)?;
    let time: SystemTime = get(row, 1)?;
    let unsigned = |i: usize| -> Result<u64, QueryError> { Ok(get::<i64>(row, i)?.max(0) as u64) };
    Ok(PairSummary {
        id: id.to_string(),
        time: Some(to_timestamp(time)),
        duration_ns: unsigned(2)?,
        is_inbound: get(row, 3)?,
        protocol: get(row, 4)?,
        method: get(row, 5)?,
        scheme: get(row, 6)?,
        authority: get(row, 7)?,
        path: get(row, 8)?,
        endpoint: get(row, 9)?,
        status: get::<i32>(row, 10)?.max(0) as u32,
        grpc_status: get::<Option<i32>>(row, 11)?.map(|g| g.max(0) as u32),
        request_size: unsigned(12)?,
        response_size: unsigned(13)?,
        local_addr: get(row, 14)?,
        remote_addr: get(row, 15)?,
        tls: get(row, 16)?,
        pid: get::<i32>(row, 17)?.max(0) as u32,
        comm: get(row, 18)?,
        node: get(row, 19)?,
        namespace: get(row, 20)?,
        pod: get(row, 21)?,
        service: get(row, 22)?,
        remote_service: get(row, 23)?,
        complete: get(row, 24)?,
        truncated: get(row, 25)?,
        partial_headers: get(row, 26)?,
        lost_events: get(row, 27)?,
    })
}

/// The segment location of a row read with `SUMMARY_COLUMNS, SEGMENT_COLUMNS`.
pub fn segment_from_row(row: &Row) -> Result<SegmentRef, QueryError> {
    let base = SUMMARY_COLUMN_COUNT;
    Ok(SegmentRef {
        key: get(row, base)?,
        offset: get::<i64>(row, base + 1)?.max(0) as u64,
        length: get::<i32>(row, base + 2)?.max(0) as u32,
    })
}
