//! Protocol parsers: a connection's two ordered byte streams in, request/response
//! [`Pair`]s out. Nothing here touches the kernel, so all of it is tested and fuzzed on
//! recorded streams.
//!
//! The agent creates one [`ConnectionParser`] per connection and feeds it every
//! [`Chunk`] of both directions in capture order. The parser detects the protocol from
//! the first bytes, hands the bytes to that protocol's parser, and emits finished pairs.
//! The agent then attaches identity (addresses, process, container), runs the
//! [`Redactor`] over each pair, and ships them.
//!
//! Every parser implements [`ProtocolParser`].

pub mod connection;
pub mod grpc;
pub mod hpack;
pub mod http1;
pub mod http2;
pub mod pair;
pub mod redaction;
pub mod stream;
pub mod websocket;

pub use connection::ConnectionParser;
pub use http1::HttpOneParser;
pub use pair::{Exchange, MessageParts, PairAssembler};
pub use redaction::{RedactionConfig, Redactor};
pub use stream::{Chunk, Direction, Limits, Role};
pub use tapwire_proto::v1::Pair;

/// A parser for one protocol on one connection.
///
/// Implementations never panic on any input, keep memory within their [`Limits`], and
/// push each finished pair into `out` as soon as it is complete (or given up on).
pub trait ProtocolParser: Send {
    /// Takes the next chunk of either direction, in capture order.
    fn on_chunk(&mut self, chunk: &Chunk<'_>, out: &mut Vec<Pair>);

    /// Called periodically: emits pairs idle since before `now_ns` (unix nanoseconds)
    /// as incomplete, and flushes long-lived streams' messages.
    fn on_tick(&mut self, now_ns: u64, out: &mut Vec<Pair>);

    /// The connection closed: emits everything still in flight (a response delimited by
    /// the close is complete; anything else is marked incomplete).
    fn on_close(&mut self, now_ns: u64, out: &mut Vec<Pair>);
}
