//! One `rr_pairs` row, computed from a `Pair` at ingest.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tapwire_proto::v1::{Pair, PairSummary};
use uuid::Uuid;

use super::{StorageError, endpoint::normalize_endpoint, payloads::FrameLocation};

/// Latest accepted time: the end of year 9999, what PostgreSQL and TimescaleDB handle well.
const MAX_UNIX_SECS: i64 = 253_402_300_799;

/// The index row of one pair (docs/storage.md, `rr_pairs`).
#[derive(Debug, Clone)]
pub struct IndexRow {
    /// The pair's start time, as Unix seconds (for hour grouping).
    pub time_secs: i64,
    /// The pair's start time.
    pub time: SystemTime,
    /// The pair's UUIDv7.
    pub id: Uuid,
    /// The observed process served the request.
    pub is_inbound: bool,
    /// The node that observed the pair.
    pub node: String,
    /// The `namespace` column.
    pub namespace: String,
    /// The `service` column.
    pub service: String,
    /// The `pod` column.
    pub pod: String,
    /// The `container_id` column.
    pub container_id: String,
    /// The `pid` column.
    pub pid: i32,
    /// The `comm` column.
    pub comm: String,
    /// `http1`, `http2`, `grpc`, `websocket`.
    pub protocol: String,
    /// The `method` column.
    pub method: String,
    /// The `scheme` column.
    pub scheme: String,
    /// The `authority` column.
    pub authority: String,
    /// The request target with its query.
    pub path: String,
    /// The normalized endpoint.
    pub endpoint: String,
    /// HTTP status, 0 when no response was seen.
    pub status: i32,
    /// gRPC status when known.
    pub grpc_status: Option<i32>,
    /// `status >= 500 OR status = 0 OR grpc_status <> 0`.
    pub is_error: bool,
    /// The `duration_ns` column.
    pub duration_ns: i64,
    /// The `request_size` column.
    pub request_size: i64,
    /// The `response_size` column.
    pub response_size: i64,
    /// The `local_addr` column.
    pub local_addr: String,
    /// The `remote_addr` column.
    pub remote_addr: String,
    /// The `remote_service` column.
    pub remote_service: String,
    /// The `tls` column.
    pub tls: bool,
    /// The `complete` column.
    pub complete: bool,
    /// The `truncated` column.
    pub truncated: bool,
    /// The `partial_headers` column.
    pub partial_headers: bool,
    /// The `lost_events` column.
    pub lost_events: bool,
    /// Where the pair's payload frame is (set once the segment is written).
    pub location: FrameLocation,
}

/// PostgreSQL `text` cannot hold NUL; one stray byte must not make a batch unstorable.
fn text(s: &str) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}")
    } else {
        s.to_owned()
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl IndexRow {
    /// Validates a pair and computes its row; `node` is the batch's node, used when the
    /// pair does not name one.
    pub fn from_pair(pair: &Pair, batch_node: &str) -> Result<Self, StorageError> {
        let invalid = |reason: &str| StorageError::InvalidPair {
            id: pair.id.chars().take(64).collect(),
            reason: reason.to_owned(),
        };
        let id = Uuid::parse_str(&pair.id).map_err(|_| invalid("id is not a UUID"))?;
        let start = pair
            .start_time
            .as_ref()
            .ok_or_else(|| invalid("start_time is missing"))?;
        if !(0..=MAX_UNIX_SECS).contains(&start.seconds)
            || !(0..1_000_000_000).contains(&start.nanos)
        {
            return Err(invalid("start_time is out of range"));
        }
        // Range-checked just above, so both conversions are exact.
        let time =
            UNIX_EPOCH + Duration::new(start.seconds.unsigned_abs(), start.nanos.unsigned_abs());
        let grpc_status = pair
            .grpc_status
            .map(|s| i32::try_from(s).map_err(|_| invalid("grpc_status out of range")))
            .transpose()?;
        let status = i32::try_from(pair.status).map_err(|_| invalid("status out of range"))?;
        let is_error = status >= 500 || status == 0 || grpc_status.is_some_and(|g| g != 0);
        let node = if pair.node.is_empty() {
            batch_node
        } else {
            &pair.node
        };
        Ok(Self {
            time_secs: start.seconds,
            time,
            id,
            is_inbound: pair.is_inbound,
            node: text(node),
            namespace: text(&pair.namespace),
            service: text(&pair.service),
            pod: text(&pair.pod),
            container_id: text(&pair.container_id),
            pid: i32::try_from(pair.pid).unwrap_or(i32::MAX),
            comm: text(&pair.comm),
            protocol: text(&pair.protocol),
            method: text(&pair.method),
            scheme: text(&pair.scheme),
            authority: text(&pair.authority),
            path: text(&pair.path),
            endpoint: text(&normalize_endpoint(&pair.protocol, &pair.path)),
            status,
            grpc_status,
            is_error,
            duration_ns: to_i64(pair.duration_ns),
            request_size: to_i64(pair.request.as_ref().map_or(0, |m| m.body_size)),
            response_size: to_i64(pair.response.as_ref().map_or(0, |m| m.body_size)),
            local_addr: text(&pair.local_addr),
            remote_addr: text(&pair.remote_addr),
            remote_service: text(&pair.remote_service),
            tls: pair.tls,
            complete: pair.complete,
            truncated: pair.truncated,
            partial_headers: pair.partial_headers,
            lost_events: pair.lost_events,
            location: FrameLocation {
                key: String::new(),
                offset: 0,
                length: 0,
            },
        })
    }

    /// The row as the query API's `PairSummary` (what `Tail` streams).
    pub fn summary(&self, start_time: Option<tapwire_proto::Timestamp>) -> PairSummary {
        PairSummary {
            id: self.id.to_string(),
            time: start_time,
            duration_ns: self.duration_ns.unsigned_abs(),
            is_inbound: self.is_inbound,
            protocol: self.protocol.clone(),
            method: self.method.clone(),
            scheme: self.scheme.clone(),
            authority: self.authority.clone(),
            path: self.path.clone(),
            endpoint: self.endpoint.clone(),
            status: self.status.unsigned_abs(),
            grpc_status: self.grpc_status.map(i32::unsigned_abs),
            request_size: self.request_size.unsigned_abs(),
            response_size: self.response_size.unsigned_abs(),
            local_addr: self.local_addr.clone(),
            remote_addr: self.remote_addr.clone(),
            tls: self.tls,
            pid: self.pid.unsigned_abs(),
            comm: self.comm.clone(),
            node: self.node.clone(),
            namespace: self.namespace.clone(),
            pod: self.pod.clone(),
            service: self.service.clone(),
            remote_service: self.remote_service.clone(),
            complete: self.complete,
            truncated: self.truncated,
            partial_headers: self.partial_headers,
            lost_events: self.lost_events,
        }
    }
}
