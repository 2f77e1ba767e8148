//! Consumers of connection streams. The capture pipeline hands every chunk of every
//! connection, in order, to one [`StreamSink`]: the raw JSON printer, the pair parser
//! (`--output jsonl`) or the collector exporter all plug in here.

pub mod pairs;
pub mod raw;

use tapwire_protocols::Chunk;
use thiserror::Error;

use crate::connections::table::ConnectionInfo;

/// Why a sink could not take data.
#[derive(Debug, Error)]
pub enum SinkError {
    #[error("writing output: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

/// Per-event facts that are not part of the parser's [`Chunk`].
#[derive(Debug, Clone, Copy)]
pub struct ChunkMeta<'a> {
    /// The kernel event's per-connection sequence number.
    pub seq: u64,
    /// The process (tgid) that moved the bytes.
    pub pid: u32,
    /// Its command name.
    pub comm: &'a str,
}

/// A per-connection consumer of ordered chunks.
pub trait StreamSink: Send {
    /// The next chunk of `conn` (either direction, capture order).
    fn on_chunk(
        &mut self,
        conn: &ConnectionInfo,
        meta: &ChunkMeta<'_>,
        chunk: &Chunk<'_>,
    ) -> Result<(), SinkError>;

    /// `conn` ended (closed, its process exited, idle, evicted or agent shutdown).
    fn on_close(&mut self, conn: &ConnectionInfo, now_ns: u64) -> Result<(), SinkError>;

    /// Called about once a second (timeouts, periodic flushes).
    fn on_tick(&mut self, _now_ns: u64) -> Result<(), SinkError> {
        Ok(())
    }

    /// Makes everything accepted so far visible (called after each ring drain and at
    /// shutdown).
    fn flush(&mut self) -> Result<(), SinkError>;
}
