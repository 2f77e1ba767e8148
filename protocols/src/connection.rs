//! The per-connection entry point: detects the protocol from the first bytes of either
//! direction and hands everything to that protocol's parser.

use crate::http1::{HttpOneParser, is_request_line, is_request_line_start, status_line_prefix};
use crate::stream::{Chunk, Direction, Limits, Role};
use crate::{Pair, ProtocolParser};

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Bytes held per direction while the protocol is still unknown.
const DETECT_CAP: usize = 16 * 1024;
/// Chunks that did not look like any known protocol before the connection is passed
/// over for good. More than one, so that a connection joined mid-message (agent started
/// late) is recognised at the next message start.
const MAX_UNRECOGNISED_CHUNKS: u32 = 8;

/// The HTTP/2 parser, reached through one seam so this module does not depend on its
/// internals.
mod h2 {
    use crate::ProtocolParser;
    use crate::http1::Handover;
    use crate::http2::HttpTwoParser;
    use crate::stream::{Limits, Role};

    /// True when bytes seen mid-connection look like HTTP/2 frames.
    pub(super) fn looks_like_frames(bytes: &[u8]) -> bool {
        crate::http2::looks_like_frames(bytes)
    }

    /// A parser for a connection that starts with the preface or joined mid-way.
    pub(super) fn parser(role: Role, limits: Limits) -> Option<Box<dyn ProtocolParser>> {
        Some(Box::new(HttpTwoParser::new(role, limits)))
    }

    /// A parser for a connection that switched from HTTP/1 by `Upgrade: h2c`; stream 1
    /// carries the upgraded request.
    pub(super) fn after_upgrade(
        role: Role,
        limits: Limits,
        handover: &Handover,
    ) -> Option<Box<dyn ProtocolParser>> {
        let mut parser = HttpTwoParser::after_upgrade(role, limits);
        parser.set_client_direction(handover.client_direction);
        if let Some(request) = &handover.request {
            parser.set_upgraded_request(
                &request.method,
                &request.path,
                &request.authority,
                request.headers.clone(),
                request.start_ns,
            );
        }
        Some(Box::new(parser))
    }
}

/// What the first bytes of a direction say.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Http1Request,
    Http1Response,
    Http2,
    NeedMore,
    Unknown,
}

fn classify(bytes: &[u8], at_start: bool) -> Verdict {
    let n = bytes.len().min(H2_PREFACE.len());
    if bytes[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Verdict::Http2
        } else {
            Verdict::NeedMore
        };
    }
    match status_line_prefix(bytes) {
        Some(true) => return Verdict::Http1Response,
        None => return Verdict::NeedMore,
        Some(false) => {}
    }
    let skip = bytes
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count();
    let line = &bytes[skip..];
    if is_request_line_start(&line[..line.len().min(32)]) {
        match memchr::memchr(b'\n', line) {
            Some(nl) if is_request_line(&line[..nl]) => return Verdict::Http1Request,
            Some(_) => {}
            None if bytes.len() < DETECT_CAP => return Verdict::NeedMore,
            None => {}
        }
    }
    // h2c with prior knowledge where the server speaks first (grpcio writes its SETTINGS
    // right after accept): the client's preface follows in the other direction.
    if crate::http2::is_server_preface(bytes) {
        return Verdict::Http2;
    }
    // Mid-connection HTTP/2 frames; at a connection's start the preface would have come.
    if !at_start && h2::looks_like_frames(bytes) {
        return Verdict::Http2;
    }
    Verdict::Unknown
}

/// Bytes of one direction held while the protocol is undecided.
#[derive(Debug, Default)]
struct Held {
    bytes: Vec<u8>,
    first_ns: u64,
    lost_before: u64,
    events_lost: bool,
}

#[derive(Default)]
enum State {
    #[default]
    Detecting,
    Http1(Box<HttpOneParser>),
    Http2(Box<dyn ProtocolParser>),
    /// Not a protocol we parse: bytes are passed over, nothing is kept.
    Opaque,
}

/// Parses one connection: protocol detection, then HTTP/1 or HTTP/2 (h2c by prior
/// knowledge, by Upgrade, or joined mid-connection).
pub struct ConnectionParser {
    role: Role,
    limits: Limits,
    state: State,
    egress: Held,
    ingress: Held,
    unrecognised: u32,
    /// No byte of this connection has been missed so far.
    pristine: bool,
}

impl ConnectionParser {
    /// A parser for a new connection on which the observed process plays `role`.
    pub fn new(role: Role, limits: Limits) -> Self {
        Self {
            role,
            limits,
            state: State::Detecting,
            egress: Held::default(),
            ingress: Held::default(),
            unrecognised: 0,
            pristine: role != Role::Unknown,
        }
    }

    /// The protocol detected so far: "http1", "http2", "opaque", or "" while undecided.
    pub fn protocol(&self) -> &'static str {
        match self.state {
            State::Detecting => "",
            State::Http1(_) => "http1",
            State::Http2(_) => "http2",
            State::Opaque => "opaque",
        }
    }

    fn detect(&mut self, chunk: &Chunk<'_>, out: &mut Vec<Pair>) {
        if chunk.lost_before > 0 || chunk.events_lost {
            self.pristine = false;
        }
        let held = match chunk.direction {
            Direction::Egress => &mut self.egress,
            Direction::Ingress => &mut self.ingress,
        };
        if held.bytes.is_empty() {
            held.first_ns = chunk.time_ns;
            held.lost_before = chunk.lost_before;
            held.events_lost = chunk.events_lost;
        }
        let room = DETECT_CAP.saturating_sub(held.bytes.len());
        held.bytes
            .extend_from_slice(&chunk.data[..chunk.data.len().min(room)]);
        if held.bytes.is_empty() {
            return;
        }
        let at_start = self.pristine;
        let verdict = classify(&held.bytes, at_start);
        let parser: State = match verdict {
            Verdict::NeedMore => return,
            Verdict::Unknown => {
                held.bytes.clear();
                self.unrecognised += 1;
                if self.unrecognised >= MAX_UNRECOGNISED_CHUNKS || at_start {
                    tracing::trace!("connection is not HTTP; passing it over");
                    self.drop_held();
                    self.state = State::Opaque;
                }
                return;
            }
            Verdict::Http1Request => State::Http1(Box::new(HttpOneParser::with_request_direction(
                self.role,
                self.limits.clone(),
                chunk.direction,
            ))),
            Verdict::Http1Response => {
                State::Http1(Box::new(HttpOneParser::with_request_direction(
                    self.role,
                    self.limits.clone(),
                    opposite(chunk.direction),
                )))
            }
            Verdict::Http2 => match h2::parser(self.role, self.limits.clone()) {
                Some(parser) => State::Http2(parser),
                None => State::Opaque,
            },
        };
        self.state = parser;
        self.replay_held(out);
    }

    /// Feeds the bytes held during detection to the chosen parser, in arrival order.
    fn replay_held(&mut self, out: &mut Vec<Pair>) {
        let mut held = [
            (Direction::Egress, std::mem::take(&mut self.egress)),
            (Direction::Ingress, std::mem::take(&mut self.ingress)),
        ];
        held.sort_by_key(|(_, h)| h.first_ns);
        for (direction, h) in held {
            if h.bytes.is_empty() {
                continue;
            }
            let chunk = Chunk {
                direction,
                data: &h.bytes,
                time_ns: h.first_ns,
                lost_before: h.lost_before,
                events_lost: h.events_lost,
            };
            self.dispatch(&chunk, out);
        }
    }

    fn drop_held(&mut self) {
        self.egress = Held::default();
        self.ingress = Held::default();
    }

    fn dispatch(&mut self, chunk: &Chunk<'_>, out: &mut Vec<Pair>) {
        match &mut self.state {
            State::Detecting => self.detect(chunk, out),
            State::Http1(parser) => {
                parser.on_chunk(chunk, out);
                if let Some(handover) = parser.take_handover() {
                    let Some(mut next) =
                        h2::after_upgrade(self.role, self.limits.clone(), &handover)
                    else {
                        self.state = State::Opaque;
                        return;
                    };
                    let server_direction = opposite(handover.client_direction);
                    for (direction, data) in [
                        (handover.client_direction, &handover.from_client),
                        (server_direction, &handover.from_server),
                    ] {
                        if !data.is_empty() {
                            let chunk = Chunk {
                                direction,
                                data,
                                time_ns: handover.time_ns,
                                lost_before: 0,
                                events_lost: false,
                            };
                            next.on_chunk(&chunk, out);
                        }
                    }
                    self.state = State::Http2(next);
                }
            }
            State::Http2(parser) => parser.on_chunk(chunk, out),
            State::Opaque => {}
        }
    }
}

fn opposite(direction: Direction) -> Direction {
    match direction {
        Direction::Egress => Direction::Ingress,
        Direction::Ingress => Direction::Egress,
    }
}

impl std::fmt::Debug for ConnectionParser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionParser")
            .field("role", &self.role)
            .field("protocol", &self.protocol())
            .finish_non_exhaustive()
    }
}

impl ProtocolParser for ConnectionParser {
    fn on_chunk(&mut self, chunk: &Chunk<'_>, out: &mut Vec<Pair>) {
        self.dispatch(chunk, out);
    }

    fn on_tick(&mut self, now_ns: u64, out: &mut Vec<Pair>) {
        match &mut self.state {
            State::Http1(parser) => parser.on_tick(now_ns, out),
            State::Http2(parser) => parser.on_tick(now_ns, out),
            State::Detecting | State::Opaque => {}
        }
    }

    fn on_close(&mut self, now_ns: u64, out: &mut Vec<Pair>) {
        // Bytes still held undecided never formed a message we know: nothing to emit.
        self.drop_held();
        match &mut self.state {
            State::Http1(parser) => parser.on_close(now_ns, out),
            State::Http2(parser) => parser.on_close(now_ns, out),
            State::Detecting | State::Opaque => {}
        }
    }
}
