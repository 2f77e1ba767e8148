//! `Export`: a filtered slice as JSON lines of pairs or as one HAR 1.2 document, oldest pair
//! first, streamed in chunks. Memory stays constant for any size: index rows are read a page at
//! a time (keyset), a few payloads are read ahead, and the channel to the client is bounded.

use std::sync::Arc;
use std::time::SystemTime;

use futures::{StreamExt, TryStreamExt};
use tapwire_proto::v1::{ExportChunk, ExportFormat, ExportRequest};
use tokio::sync::mpsc;
use tonic::Status;

use super::error::QueryError;
use super::filter::{DEFAULT_RANGE, SqlWhere, from_micros, pairs_where, time_range};
use super::get::read_pair;
use super::har;
use super::summary::{SEGMENT_COLUMNS, SUMMARY_COLUMNS, position, segment_from_row};
use crate::storage::Stores;

/// Index rows read per query.
const PAGE: i64 = 500;
/// Payload reads in flight.
const READ_AHEAD: usize = 16;
/// Output bytes gathered before a chunk is sent.
const CHUNK: usize = 64 << 10;

/// The receiving end of an export, ready to be returned as a tonic stream.
pub type ExportStream = tokio_stream::wrappers::ReceiverStream<Result<ExportChunk, Status>>;

/// Starts an export; the filter is checked before anything is streamed.
pub fn export(
    stores: Arc<Stores>,
    request: &ExportRequest,
    now: SystemTime,
) -> Result<ExportStream, QueryError> {
    let filter = request.filter.clone().unwrap_or_default();
    let range = time_range(&filter, now, DEFAULT_RANGE)?;
    // Built once here so a bad filter fails the call instead of the stream.
    pairs_where(&filter, &range)?;
    let format = ExportFormat::try_from(request.format).map_err(|_| {
        QueryError::BadRequest(format!(
            "format {} is not a known export format",
            request.format
        ))
    })?;
    let limit = if request.limit == 0 {
        u64::MAX
    } else {
        request.limit
    };
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let result = run(&stores, &tx, format, limit, move || {
            pairs_where(&filter, &range)
        })
        .await;
        match result {
            Ok(count) => tracing::debug!(count, "export finished"),
            Err(RunError::Query(e)) => {
                let _ = tx.send(Err(Status::from(e))).await;
            }
            Err(RunError::ClientGone) => tracing::debug!("export client went away"),
        }
    });
    Ok(ExportStream::new(rx))
}

enum RunError {
    Query(QueryError),
    ClientGone,
}

impl From<QueryError> for RunError {
    fn from(e: QueryError) -> Self {
        RunError::Query(e)
    }
}

impl From<tokio_postgres::Error> for RunError {
    fn from(e: tokio_postgres::Error) -> Self {
        RunError::Query(e.into())
    }
}

/// Output gathered into chunks.
struct Writer<'a> {
    tx: &'a mpsc::Sender<Result<ExportChunk, Status>>,
    buf: Vec<u8>,
}

impl Writer<'_> {
    async fn write(&mut self, bytes: &[u8]) -> Result<(), RunError> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), RunError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK + 4096));
        self.tx
            .send(Ok(ExportChunk { data: data.into() }))
            .await
            .map_err(|_| RunError::ClientGone)
    }
}

async fn run(
    stores: &Stores,
    tx: &mpsc::Sender<Result<ExportChunk, Status>>,
    format: ExportFormat,
    limit: u64,
    conditions: impl Fn() -> Result<SqlWhere, QueryError>,
) -> Result<u64, RunError> {
    let mut out = Writer {
        tx,
        buf: Vec::with_capacity(CHUNK + 4096),
    };
    if format == ExportFormat::Har {
        out.write(har::prologue().as_bytes()).await?;
    }
    let mut after: Option<(i64, uuid::Uuid)> = None;
    let mut written = 0u64;
    while written < limit {
        let mut w = conditions()?;
        if let Some((time_us, id)) = after {
            let t = w.param(from_micros(time_us));
            let id = w.param(id);
            w.push_raw(format!("time >= {t} AND (time, id) > ({t}, {id})"));
        }
        let page = PAGE.min(i64::try_from(limit - written).unwrap_or(PAGE));
        let sql = format!(
            "SELECT {SUMMARY_COLUMNS}, {SEGMENT_COLUMNS} FROM rr_pairs {} \
             ORDER BY time ASC, id ASC LIMIT {page}",
            w.clause()
        );
        let rows = {
            let client = stores.db.get().await.map_err(QueryError::from)?;
            let statement = client.prepare_cached(&sql).await?;
            client.query(&statement, &w.params()).await?
        };
        let Some(last) = rows.last() else { break };
        after = Some(position(last)?);
        let segments = rows
            .iter()
            .map(|row| Ok((segment_from_row(row)?, row.try_get("remote_service")?)))
            .collect::<Result<Vec<_>, QueryError>>()?;
        let count = segments.len();
        let mut pairs = futures::stream::iter(segments)
            .map(|(at, remote_service)| async move { read_pair(stores, &at, remote_service).await })
            .buffered(READ_AHEAD);
        while let Some(pair) = pairs.try_next().await? {
            let mut line = match format {
                ExportFormat::Jsonl => serde_json::to_vec(&pair),
                ExportFormat::Har => serde_json::to_vec(&har::entry(&pair)),
            }
            .map_err(|e| QueryError::Payload(format!("serializing pair {}: {e}", pair.id)))?;
            if format == ExportFormat::Har && written > 0 {
                out.write(b",").await?;
            }
            if format == ExportFormat::Jsonl {
                line.push(b'\n');
            }
            out.write(&line).await?;
            written += 1;
        }
        if (count as i64) < page {
            break;
        }
    }
    if format == ExportFormat::Har {
        out.write(har::EPILOGUE.as_bytes()).await?;
    }
    out.flush().await?;
    Ok(written)
}
