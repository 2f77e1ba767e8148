//! What the capture layer hands to the parsers: ordered chunks of one connection.

/// Which side of the connection the observed process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The observed process connected (it sends requests): its pairs are outbound.
    Client,
    /// The observed process accepted (it serves requests): its pairs are inbound.
    Server,
    /// The connection predates the agent, so who connected is unknown; the parsers
    /// infer it from the traffic (who sends requests).
    Unknown,
}

/// The direction of a chunk's bytes, seen from the observed process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Bytes the observed process wrote (sent).
    Egress,
    /// Bytes the observed process read (received).
    Ingress,
}

/// A piece of one direction of a connection's byte stream.
#[derive(Debug, Clone, Copy)]
pub struct Chunk<'a> {
    /// Which way the bytes went.
    pub direction: Direction,
    /// The bytes captured, in stream order.
    pub data: &'a [u8],
    /// When the bytes were transferred, unix nanoseconds.
    pub time_ns: u64,
    /// Bytes of this direction that were transferred right before `data` but not
    /// captured (a lost event, or a payload larger than the capture cap). The parser
    /// resynchronises at the next message boundary and marks the affected pairs.
    pub lost_before: u64,
    /// Kernel events of this connection were lost just before this chunk (the bytes
    /// lost are unknown); treated like a gap of unknown size.
    pub events_lost: bool,
}

/// Caps that bound a parser's memory. The agent sets them from its configuration.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Bytes of a body (or stream message) kept in the pair; the rest is counted only.
    pub max_body_bytes: usize,
    /// Bytes of unparsed input buffered per direction (headers that have not ended…);
    /// beyond it the parser gives up on the message and resynchronises.
    pub max_buffered_bytes: usize,
    /// Concurrent HTTP/2 streams tracked per connection.
    pub max_streams: usize,
    /// Pairs waiting for their response per connection (pipelining).
    pub max_pending_pairs: usize,
    /// A pair without progress for this long is emitted as incomplete.
    pub idle_timeout_ns: u64,
    /// A streaming RPC emits what it has so far after this long (the rest follows in
    /// later pairs with the same stream).
    pub stream_flush_interval_ns: u64,
    /// … or once its messages hold this many bytes.
    pub stream_flush_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            max_buffered_bytes: 256 * 1024,
            max_streams: 256,
            max_pending_pairs: 128,
            idle_timeout_ns: 60_000_000_000,
            stream_flush_interval_ns: 5_000_000_000,
            stream_flush_bytes: 1024 * 1024,
        }
    }
}
