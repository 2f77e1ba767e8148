//! HTTP/1.0 and HTTP/1.1: both directions of a connection into request/response pairs.
//!
//! Each direction is a [`side::Side`] reading heads (with `httparse`) and bodies
//! ([`body::BodyReader`]). Requests open exchanges in a queue; responses complete them
//! in order, which is how pipelined requests pair up. An exchange is emitted once both
//! its messages ended. After `101 Switching Protocols` the connection becomes a
//! WebSocket session, an HTTP/2 connection (handed to the caller), or opaque bytes; a
//! successful CONNECT makes it an opaque tunnel.

mod body;
mod head;
mod messages;
mod side;

use std::collections::VecDeque;

use self::body::{BodyReader, Framing};
use self::head::{RequestHead, ResponseHead, parse_request, parse_response};
use self::side::{Carries, Side, SideState, Took};
use crate::pair::{Exchange, MessageParts, PairAssembler};
use crate::stream::{Chunk, Direction, Limits, Role};
use crate::websocket::WebSocketSession;
use crate::{Pair, ProtocolParser};

pub(crate) use self::head::{is_request_line, is_request_line_start, status_line_prefix};

/// The connection switched to HTTP/2 by `Upgrade: h2c`: the bytes after the switch,
/// for the HTTP/2 parser that takes over.
#[derive(Debug)]
pub struct Handover {
    /// Bytes the client sent after its upgrade request (the connection preface…).
    pub from_client: Vec<u8>,
    /// Bytes the server sent after its `101` response.
    pub from_server: Vec<u8>,
    /// The direction the client's bytes travel in.
    pub client_direction: Direction,
    /// When the switch was seen, unix nanoseconds.
    pub time_ns: u64,
    /// The request that asked for the upgrade: HTTP/2 stream 1 answers it.
    pub request: Option<UpgradedRequest>,
}

/// The HTTP/1 request that asked for `Upgrade: h2c`.
#[derive(Debug, Clone)]
pub struct UpgradedRequest {
    /// Request method.
    pub method: String,
    /// Request target with its query.
    pub path: String,
    /// The Host field.
    pub authority: String,
    /// Header fields in wire order.
    pub headers: Vec<tapwire_proto::v1::Header>,
    /// When its first byte was seen, unix nanoseconds.
    pub start_ns: u64,
}

impl From<Exchange> for UpgradedRequest {
    fn from(ex: Exchange) -> Self {
        Self {
            method: ex.method,
            path: ex.path,
            authority: ex.authority,
            headers: ex.request.map(|r| r.headers).unwrap_or_default(),
            start_ns: ex.start_ns,
        }
    }
}

/// What the connection carries now.
#[derive(Debug)]
enum Mode {
    Http,
    WebSocket(Box<WebSocketSession>),
    /// A tunnel or an unknown protocol: bytes are passed over.
    Opaque,
    /// Switched to HTTP/2; the caller takes the [`Handover`].
    Http2,
}

/// An exchange waiting for the end of its request or response.
#[derive(Debug)]
struct Pending {
    seq: u64,
    ex: Exchange,
    request_done: bool,
    response_done: bool,
    /// The request asked to switch protocols (`Upgrade`), or is a CONNECT.
    upgrade: Option<String>,
    head_request: bool,
}

/// The HTTP/1 parser of one connection.
#[derive(Debug)]
pub struct HttpOneParser {
    limits: Limits,
    assembler: PairAssembler,
    /// The direction requests travel in; unknown until the first message on a
    /// connection of unknown role.
    request_direction: Option<Direction>,
    requests: Side,
    responses: Side,
    pending: VecDeque<Pending>,
    next_seq: u64,
    mode: Mode,
    handover: Option<Handover>,
    last_activity_ns: u64,
}

impl HttpOneParser {
    /// A parser for a connection on which the observed process plays `role`.
    pub fn new(role: Role, limits: Limits) -> Self {
        let request_direction = match role {
            Role::Client => Some(Direction::Egress),
            Role::Server => Some(Direction::Ingress),
            Role::Unknown => None,
        };
        Self {
            limits,
            assembler: PairAssembler::new(role),
            request_direction,
            requests: Side::new(Carries::Requests),
            responses: Side::new(Carries::Responses),
            pending: VecDeque::new(),
            next_seq: 0,
            mode: Mode::Http,
            handover: None,
            last_activity_ns: 0,
        }
    }

    /// A parser that already knows requests travel in `request_direction` (detected
    /// from the traffic on a connection of unknown role).
    pub fn with_request_direction(
        role: Role,
        limits: Limits,
        request_direction: Direction,
    ) -> Self {
        let mut parser = Self::new(role, limits);
        parser.request_direction = Some(request_direction);
        parser
    }

    /// The bytes after an `Upgrade: h2c` switch, once it happened; the caller continues
    /// the connection with an HTTP/2 parser.
    pub fn take_handover(&mut self) -> Option<Handover> {
        self.handover.take()
    }

    /// Decides which direction carries requests on a connection of unknown role.
    fn infer_direction(&mut self, chunk: &Chunk<'_>) -> Option<Direction> {
        if let Some(d) = self.request_direction {
            return Some(d);
        }
        let data = &chunk.data[head::leading_empty_lines(chunk.data)..];
        let other = match chunk.direction {
            Direction::Egress => Direction::Ingress,
            Direction::Ingress => Direction::Egress,
        };
        let dir = if status_line_prefix(data) == Some(true) {
            other
        } else if is_request_line_start(&data[..data.len().min(32)]) && !data.is_empty() {
            chunk.direction
        } else {
            return None;
        };
        self.request_direction = Some(dir);
        Some(dir)
    }

    fn side(&mut self, carries: Carries) -> &mut Side {
        match carries {
            Carries::Requests => &mut self.requests,
            Carries::Responses => &mut self.responses,
        }
    }

    /// Feeds one direction's bytes, replaying buffered bytes after a resync.
    fn feed(&mut self, carries: Carries, data: &[u8], time_ns: u64, out: &mut Vec<Pair>) {
        let mut replay = self.feed_once(carries, data, time_ns, out);
        // Each replay holds strictly fewer buffered bytes than the one before, so this ends.
        while let Some(bytes) = replay {
            replay = self.feed_once(carries, &bytes, time_ns, out);
        }
    }

    fn feed_once(
        &mut self,
        carries: Carries,
        mut input: &[u8],
        time_ns: u64,
        out: &mut Vec<Pair>,
    ) -> Option<Vec<u8>> {
        let max_buffered = self.limits.max_buffered_bytes;
        while !input.is_empty() {
            if !matches!(self.mode, Mode::Http) {
                self.after_switch(carries, input, time_ns, out);
                return None;
            }
            let side = self.side(carries);
            match &mut side.state {
                SideState::Desync => return side.resync(input, max_buffered),
                SideState::Hold => {
                    let room = max_buffered.saturating_sub(side.buf.len());
                    side.buf.extend_from_slice(&input[..input.len().min(room)]);
                    return None;
                }
                SideState::Body { seq, reader } => {
                    let seq = *seq;
                    let mut reader = std::mem::replace(reader, BodyReader::new(Framing::Empty));
                    let used = self.feed_body(carries, seq, &mut reader, input, time_ns);
                    input = &input[used.min(input.len())..];
                    // A framing error switched the side to Desync: the reader is over.
                    if let SideState::Body { reader: slot, .. } = &mut self.side(carries).state {
                        *slot = reader;
                    }
                    self.after_body(carries, time_ns, out);
                }
                SideState::Head => {
                    let took = match carries {
                        Carries::Requests => {
                            side.take_head(input, max_buffered, time_ns, |h, f| {
                                parse_request(h, f).map(Parsed::Request)
                            })
                        }
                        Carries::Responses => {
                            side.take_head(input, max_buffered, time_ns, |h, f| {
                                parse_response(h, f).map(Parsed::Response)
                            })
                        }
                    };
                    match took {
                        Took::Buffered => return None,
                        Took::TooLarge => {
                            self.lose_message(carries, "head larger than the buffer cap");
                            self.side(carries).desync();
                            return None;
                        }
                        Took::Head { value, used } => {
                            input = &input[used.min(input.len())..];
                            let start_ns = self.side(carries).msg_start_ns.unwrap_or(time_ns);
                            self.side(carries).head_done();
                            match value {
                                Ok(Parsed::Request(head)) => {
                                    self.on_request(head, start_ns, time_ns, out)
                                }
                                Ok(Parsed::Response(head)) => {
                                    if let Some(rest) =
                                        self.on_response(head, start_ns, time_ns, input, out)
                                    {
                                        input = rest;
                                    }
                                }
                                Err(error) => {
                                    tracing::debug!(%error, "HTTP/1 head not parsed; resynchronising");
                                    self.lose_message(carries, "malformed head");
                                    self.side(carries).desync();
                                }
                            }
                        }
                    }
                }
            }
        }
        None
    }

    /// Copies body bytes into the exchange `seq`; returns how many bytes were body.
    fn feed_body(
        &mut self,
        carries: Carries,
        seq: u64,
        reader: &mut BodyReader,
        input: &[u8],
        time_ns: u64,
    ) -> usize {
        let max_buffered = self.limits.max_buffered_bytes;
        let mut scratch = MessageParts::new(0);
        let parts = self
            .pending
            .iter_mut()
            .find(|p| p.seq == seq)
            .and_then(|p| match carries {
                Carries::Requests => p.ex.request.as_mut(),
                Carries::Responses => p.ex.response.as_mut(),
            })
            .unwrap_or(&mut scratch);
        match reader.feed(input, &mut parts.body, &mut parts.trailers, max_buffered) {
            Ok(used) => {
                if reader.is_done() {
                    self.message_done(carries, seq, time_ns, true);
                }
                used
            }
            Err(error) => {
                tracing::debug!(%error, "HTTP/1 body framing broken; resynchronising");
                self.mark(seq, |p| {
                    p.ex.lost_events = true;
                    p.ex.note_once("malformed body framing");
                });
                self.message_done(carries, seq, time_ns, false);
                self.side(carries).desync();
                input.len()
            }
        }
    }

    /// After a body chunk: a finished body returns its side to reading heads.
    fn after_body(&mut self, carries: Carries, time_ns: u64, out: &mut Vec<Pair>) {
        let side = self.side(carries);
        if let SideState::Body { reader, .. } = &side.state
            && reader.is_done()
        {
            side.state = SideState::Head;
        }
        self.last_activity_ns = time_ns;
        self.emit_ready(out);
    }

    fn mark(&mut self, seq: u64, f: impl FnOnce(&mut Pending)) {
        if let Some(p) = self.pending.iter_mut().find(|p| p.seq == seq) {
            f(p);
        }
    }

    /// One message of exchange `seq` ended (`whole`: it was seen completely).
    fn message_done(&mut self, carries: Carries, seq: u64, time_ns: u64, whole: bool) {
        self.mark(seq, |p| {
            match carries {
                Carries::Requests => {
                    p.request_done = true;
                    p.ex.request_end_ns = Some(time_ns);
                }
                Carries::Responses => {
                    p.response_done = true;
                    p.ex.end_ns = Some(time_ns);
                }
            }
            if !whole {
                p.ex.complete = false;
            }
        });
    }

    /// The message a side was reading cannot be followed any further.
    fn lose_message(&mut self, carries: Carries, why: &str) {
        let seq = match &self.side(carries).state {
            SideState::Body { seq, .. } => Some(*seq),
            _ => None,
        };
        if let Some(seq) = seq {
            self.mark(seq, |p| {
                p.ex.lost_events = true;
                p.ex.note_once(why);
            });
            let now = self.last_activity_ns;
            self.message_done(carries, seq, now, false);
        }
    }

    /// Bytes after a protocol switch go to the new protocol.
    fn after_switch(&mut self, carries: Carries, input: &[u8], time_ns: u64, out: &mut Vec<Pair>) {
        if input.is_empty() {
            return;
        }
        if let Mode::WebSocket(ws) = &mut self.mode {
            let client = self.request_direction.unwrap_or(Direction::Ingress);
            let direction = match carries {
                Carries::Requests => client,
                Carries::Responses => opposite(client),
            };
            if let Some(ex) = ws.on_data(direction, input, time_ns) {
                out.push(self.assembler.assemble(ex));
            }
        }
    }

    /// Emits exchanges at the front of the queue whose both messages ended.
    fn emit_ready(&mut self, out: &mut Vec<Pair>) {
        while self
            .pending
            .front()
            .is_some_and(|p| p.request_done && p.response_done)
        {
            if let Some(p) = self.pending.pop_front() {
                out.push(self.assembler.assemble(p.ex));
            }
        }
    }

    /// Emits everything in flight as incomplete, noting why.
    fn abandon_all(&mut self, now_ns: u64, why: &str, out: &mut Vec<Pair>) {
        for mut p in self.pending.drain(..) {
            if !(p.request_done && p.response_done) {
                p.ex.complete = false;
                p.ex.note_once(why);
            }
            p.ex.end_ns.get_or_insert(now_ns);
            out.push(self.assembler.assemble(p.ex));
        }
    }

    /// A gap in one direction: skipped inside a body of known length, otherwise the
    /// side resynchronises at the next message.
    fn on_gap(&mut self, carries: Carries, chunk: &Chunk<'_>) {
        let known = (!chunk.events_lost).then_some(chunk.lost_before);
        if let Mode::WebSocket(ws) = &mut self.mode {
            let client = self.request_direction.unwrap_or(Direction::Ingress);
            let direction = match carries {
                Carries::Requests => client,
                Carries::Responses => opposite(client),
            };
            ws.on_gap(direction, known);
            return;
        }
        if !matches!(self.mode, Mode::Http) {
            return;
        }
        let lost = chunk.lost_before;
        let mut scratch = MessageParts::new(0);
        let side = match carries {
            Carries::Requests => &mut self.requests,
            Carries::Responses => &mut self.responses,
        };
        if let (SideState::Body { seq, reader }, Some(n)) = (&mut side.state, known) {
            let seq = *seq;
            let parts = self
                .pending
                .iter_mut()
                .find(|p| p.seq == seq)
                .and_then(|p| match carries {
                    Carries::Requests => p.ex.request.as_mut(),
                    Carries::Responses => p.ex.response.as_mut(),
                })
                .unwrap_or(&mut scratch);
            if reader.skip(n, &mut parts.body) {
                if reader.is_done() {
                    side.state = SideState::Head;
                    self.message_done(carries, seq, chunk.time_ns, false);
                }
                self.mark(seq, |p| {
                    p.ex.bytes_lost = p.ex.bytes_lost.saturating_add(n);
                    p.ex.complete = false;
                    p.ex.note_once("bytes lost");
                });
                return;
            }
        }
        if let SideState::Body { seq, .. } = side.state {
            self.mark(seq, |p| {
                p.ex.bytes_lost = p.ex.bytes_lost.saturating_add(lost)
            });
        }
        self.lose_message(carries, "bytes lost");
        self.side(carries).desync();
    }
}

/// What a head parse produced.
enum Parsed {
    Request(RequestHead),
    Response(ResponseHead),
}

fn opposite(direction: Direction) -> Direction {
    match direction {
        Direction::Egress => Direction::Ingress,
        Direction::Ingress => Direction::Egress,
    }
}

impl ProtocolParser for HttpOneParser {
    fn on_chunk(&mut self, chunk: &Chunk<'_>, out: &mut Vec<Pair>) {
        let Some(request_direction) = self.infer_direction(chunk) else {
            return;
        };
        let carries = if chunk.direction == request_direction {
            Carries::Requests
        } else {
            Carries::Responses
        };
        if chunk.lost_before > 0 || chunk.events_lost {
            self.on_gap(carries, chunk);
        }
        self.last_activity_ns = self.last_activity_ns.max(chunk.time_ns);
        self.feed(carries, chunk.data, chunk.time_ns, out);
    }

    fn on_tick(&mut self, now_ns: u64, out: &mut Vec<Pair>) {
        if let Mode::WebSocket(ws) = &mut self.mode
            && let Some(ex) = ws.on_tick(now_ns)
        {
            out.push(self.assembler.assemble(ex));
        }
        if !self.pending.is_empty()
            && now_ns.saturating_sub(self.last_activity_ns) >= self.limits.idle_timeout_ns
        {
            self.abandon_all(now_ns, "idle", out);
            // Whatever was mid-message is unknown now.
            for side in [&mut self.requests, &mut self.responses] {
                if !matches!(side.state, SideState::Head) {
                    side.desync();
                }
            }
        }
    }

    fn on_close(&mut self, now_ns: u64, out: &mut Vec<Pair>) {
        if let SideState::Body { seq, reader } = &self.responses.state
            && reader.until_close()
        {
            let seq = *seq;
            self.message_done(Carries::Responses, seq, now_ns, true);
        }
        if let Mode::WebSocket(ws) = &mut self.mode
            && let Some(ex) = ws.on_close(now_ns)
        {
            out.push(self.assembler.assemble(ex));
        }
        self.emit_ready(out);
        self.abandon_all(now_ns, "connection closed", out);
        self.requests = Side::new(Carries::Requests);
        self.responses = Side::new(Carries::Responses);
    }
}

#[cfg(test)]
mod tests;
