//! Turning what a protocol parser saw of one exchange into a [`Pair`].
//!
//! Both HTTP parsers collect an [`Exchange`] while the bytes flow and hand it to a
//! [`PairAssembler`] once it is finished (or given up on). The assembler owns the rules
//! every pair follows whatever its protocol: the UUIDv7 id, the four timestamps, the
//! direction, the body cap and the completeness flags. Identity (addresses, process,
//! container) is the agent's job, not this one's.

use std::hash::{BuildHasher, Hasher, RandomState};

use bytes::Bytes;
use pbjson_types::Timestamp;
use tapwire_proto::v1::{Header, Message, Pair, StreamMessage};

use crate::stream::{Direction, Role};

/// A body (or stream message payload) as it arrives: the first `cap` bytes are kept,
/// every byte is counted.
#[derive(Debug, Clone, Default)]
pub struct BodyBuffer {
    kept: Vec<u8>,
    size: u64,
    cap: usize,
}

impl BodyBuffer {
    /// An empty body that keeps at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        Self {
            kept: Vec::new(),
            size: 0,
            cap,
        }
    }

    /// Appends bytes seen on the wire.
    pub fn push(&mut self, data: &[u8]) {
        self.size = self.size.saturating_add(data.len() as u64);
        let room = self.cap.saturating_sub(self.kept.len());
        if room > 0 {
            self.kept.extend_from_slice(&data[..data.len().min(room)]);
        }
    }

    /// Counts bytes that were part of the body but never captured.
    pub fn skip(&mut self, lost: u64) {
        self.size = self.size.saturating_add(lost);
        // Nothing after a hole may be kept: the kept prefix must stay a true prefix.
        self.cap = self.kept.len();
    }

    /// The body's true size so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// True when fewer bytes are kept than were seen.
    pub fn is_truncated(&self) -> bool {
        (self.kept.len() as u64) < self.size
    }

    /// The kept bytes.
    pub fn kept(&self) -> &[u8] {
        &self.kept
    }

    /// Gives up the kept bytes.
    pub fn into_bytes(self) -> Bytes {
        Bytes::from(self.kept)
    }
}

/// One side of an exchange as parsed: headers in wire order, body, trailers.
#[derive(Debug, Clone, Default)]
pub struct MessageParts {
    /// Header fields in the order (and letter case) they were sent.
    pub headers: Vec<Header>,
    /// Trailer fields (chunked trailers, HTTP/2 trailing HEADERS).
    pub trailers: Vec<Header>,
    /// The body as sent, still content-encoded.
    pub body: BodyBuffer,
    /// `content-encoding` or `grpc-encoding`; empty for identity.
    pub content_encoding: String,
}

impl MessageParts {
    /// An empty message whose body keeps at most `body_cap` bytes.
    pub fn new(body_cap: usize) -> Self {
        Self {
            body: BodyBuffer::new(body_cap),
            ..Self::default()
        }
    }

    fn into_message(self) -> Message {
        let body_size = self.body.size();
        let body_truncated = self.body.is_truncated();
        Message {
            headers: self.headers,
            body: self.body.into_bytes(),
            body_size,
            body_truncated,
            content_encoding: self.content_encoding,
            trailers: self.trailers,
        }
    }
}

/// Everything a parser learned about one exchange; [`PairAssembler::assemble`] turns it
/// into a [`Pair`]. Times are unix nanoseconds.
#[derive(Debug, Clone, Default)]
pub struct Exchange {
    /// "http1", "http2", "grpc", "websocket".
    pub protocol: &'static str,
    /// First byte of the request seen (or of whatever part was seen first).
    pub start_ns: u64,
    /// Last byte of the request seen.
    pub request_end_ns: Option<u64>,
    /// First byte of the (final) response seen.
    pub response_start_ns: Option<u64>,
    /// Last byte of the response seen, or when the exchange was given up on.
    pub end_ns: Option<u64>,
    /// The request as seen; `None` when it never was (joined mid-connection).
    pub request: Option<MessageParts>,
    /// The response as seen; `None` when none came.
    pub response: Option<MessageParts>,
    /// Request method (`GET`, `CONNECT`…).
    pub method: String,
    /// "http" or "https" (the agent knows about TLS).
    pub scheme: String,
    /// `Host` or `:authority`.
    pub authority: String,
    /// The request target with its query.
    pub path: String,
    /// HTTP status; 0 when no response was seen.
    pub status: u32,
    /// gRPC status, when the exchange is gRPC and one was seen.
    pub grpc_status: Option<u32>,
    /// gRPC status message.
    pub grpc_message: String,
    /// gRPC or WebSocket messages in order.
    pub messages: Vec<StreamMessage>,
    /// The direction the request travelled in, when known: decides `is_inbound` on
    /// connections whose role is unknown.
    pub request_direction: Option<Direction>,
    /// Both messages were seen from start to end.
    pub complete: bool,
    /// Some bytes were not captured or not kept.
    pub truncated: bool,
    /// Headers referenced HPACK entries never seen.
    pub partial_headers: bool,
    /// Bytes or events were lost while the exchange was in flight.
    pub lost_events: bool,
    /// How many bytes of the exchange were not captured, when known.
    pub bytes_lost: u64,
    /// Why the exchange is incomplete ("connection closed", "idle"…).
    pub note: String,
    /// The HTTP/2 stream id; 0 for HTTP/1.
    pub stream_id: u32,
}

impl Exchange {
    /// A new exchange of `protocol` whose first byte was seen at `start_ns`.
    pub fn new(protocol: &'static str, start_ns: u64) -> Self {
        Self {
            protocol,
            start_ns,
            ..Self::default()
        }
    }

    /// Records why the exchange is incomplete; the first reason wins.
    pub fn note_once(&mut self, note: &str) {
        if self.note.is_empty() {
            self.note.push_str(note);
        }
    }
}

/// Builds pairs for one connection: ids, times, direction and completeness flags.
#[derive(Debug, Clone)]
pub struct PairAssembler {
    role: Role,
    id_state: u64,
}

impl PairAssembler {
    /// An assembler for a connection on which the observed process plays `role`.
    pub fn new(role: Role) -> Self {
        // Seeded from std's per-process random keys: ids need uniqueness within a
        // millisecond, not cryptographic strength, and a syscall per pair would cost more
        // than parsing it.
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_usize(std::ptr::from_ref(&role) as usize);
        Self {
            role,
            id_state: hasher.finish(),
        }
    }

    /// The role the pairs' direction is derived from.
    pub fn role(&self) -> Role {
        self.role
    }

    /// True when an exchange whose request travelled in `request_direction` was served
    /// by the observed process.
    pub fn is_inbound(&self, request_direction: Option<Direction>) -> bool {
        match self.role {
            Role::Server => true,
            Role::Client => false,
            // The side that sent the request is the client.
            Role::Unknown => request_direction == Some(Direction::Ingress),
        }
    }

    /// Turns a finished (or abandoned) exchange into a pair.
    pub fn assemble(&mut self, ex: Exchange) -> Pair {
        let end_ns = ex
            .end_ns
            .or(ex.response_start_ns)
            .or(ex.request_end_ns)
            .unwrap_or(ex.start_ns)
            .max(ex.start_ns);
        let body_truncated = ex.request.as_ref().is_some_and(|m| m.body.is_truncated())
            || ex.response.as_ref().is_some_and(|m| m.body.is_truncated())
            || ex.messages.iter().any(|m| m.truncated);
        Pair {
            id: self.next_id(ex.start_ns),
            start_time: Some(timestamp(ex.start_ns)),
            end_time: Some(timestamp(end_ns)),
            request_end_time: ex.request_end_ns.map(timestamp),
            response_start_time: ex.response_start_ns.map(timestamp),
            duration_ns: end_ns - ex.start_ns,
            is_inbound: self.is_inbound(ex.request_direction),
            protocol: ex.protocol.to_owned(),
            request: ex.request.map(MessageParts::into_message),
            response: ex.response.map(MessageParts::into_message),
            method: ex.method,
            scheme: ex.scheme,
            authority: ex.authority,
            path: ex.path,
            status: ex.status,
            grpc_status: ex.grpc_status,
            grpc_message: ex.grpc_message,
            messages: ex.messages,
            complete: ex.complete,
            truncated: ex.truncated || body_truncated || ex.bytes_lost > 0,
            partial_headers: ex.partial_headers,
            lost_events: ex.lost_events,
            bytes_lost: ex.bytes_lost,
            note: ex.note,
            stream_id: ex.stream_id,
            ..Pair::default()
        }
    }

    /// A UUIDv7 carrying `start_ns`'s millisecond, so ids sort by start time.
    fn next_id(&mut self, start_ns: u64) -> String {
        let mut random = [0u8; 10];
        random[..8].copy_from_slice(&self.next_random().to_le_bytes());
        random[8..].copy_from_slice(&self.next_random().to_le_bytes()[..2]);
        uuid::Builder::from_unix_timestamp_millis(start_ns / 1_000_000, &random)
            .into_uuid()
            .hyphenated()
            .encode_lower(&mut uuid::Uuid::encode_buffer())
            .to_owned()
    }

    /// splitmix64: fast, well distributed, never repeats within 2^64 draws.
    fn next_random(&mut self) -> u64 {
        self.id_state = self.id_state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.id_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Unix nanoseconds as a protobuf timestamp.
pub fn timestamp(ns: u64) -> Timestamp {
    Timestamp {
        seconds: (ns / 1_000_000_000) as i64,
        // Always below 10^9, so it fits.
        nanos: (ns % 1_000_000_000) as i32,
    }
}

/// A header field from raw bytes; bytes that are not UTF-8 are replaced.
pub fn header(name: &[u8], value: &[u8]) -> Header {
    Header {
        name: text(name),
        value: text(value),
    }
}

/// Bytes as text; bytes that are not UTF-8 are replaced. The strict check first: it is
/// much faster than the lossy conversion on the (usual) valid input.
pub fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(valid) => valid.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_keeps_a_prefix_and_counts_everything() {
        let mut body = BodyBuffer::new(4);
        body.push(b"abc");
        body.push(b"defg");
        assert_eq!(body.kept(), b"abcd");
        assert_eq!(body.size(), 7);
        assert!(body.is_truncated());
    }

    #[test]
    fn body_after_a_hole_is_counted_not_kept() {
        let mut body = BodyBuffer::new(100);
        body.push(b"ab");
        body.skip(10);
        body.push(b"cd");
        assert_eq!(body.kept(), b"ab");
        assert_eq!(body.size(), 14);
    }

    #[test]
    fn ids_are_uuidv7_ordered_by_start_time() {
        let mut assembler = PairAssembler::new(Role::Server);
        let a = assembler.assemble(Exchange::new("http1", 1_700_000_000_000_000_000));
        let b = assembler.assemble(Exchange::new("http1", 1_700_000_000_500_000_000));
        let ua = uuid::Uuid::parse_str(&a.id).expect("valid uuid");
        assert_eq!(ua.get_version_num(), 7);
        assert!(a.id < b.id);
        assert_ne!(a.id, b.id);
        assert!(a.is_inbound);
    }

    #[test]
    fn unknown_role_infers_direction_from_who_sent_the_request() {
        let mut assembler = PairAssembler::new(Role::Unknown);
        let mut ex = Exchange::new("http1", 5);
        ex.request_direction = Some(Direction::Egress);
        assert!(!assembler.assemble(ex.clone()).is_inbound);
        ex.request_direction = Some(Direction::Ingress);
        assert!(assembler.assemble(ex).is_inbound);
    }

    #[test]
    fn times_and_duration() {
        let mut assembler = PairAssembler::new(Role::Client);
        let mut ex = Exchange::new("http1", 1_000_000_001);
        ex.request_end_ns = Some(1_000_000_010);
        ex.response_start_ns = Some(1_500_000_000);
        ex.end_ns = Some(2_000_000_000);
        let pair = assembler.assemble(ex);
        assert_eq!(pair.duration_ns, 999_999_999);
        assert_eq!(
            pair.start_time,
            Some(Timestamp {
                seconds: 1,
                nanos: 1
            })
        );
        assert!(!pair.is_inbound);
    }
}
