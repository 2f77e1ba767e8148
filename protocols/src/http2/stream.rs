//! One HTTP/2 stream: what both sides sent on it, turned into one pair (or several,
//! when a long-lived gRPC stream is flushed).

use tapwire_proto::v1::{Header, Pair};

use crate::Limits;
use crate::grpc::{self, MessageFramer};
use crate::pair::{Exchange, MessageParts, PairAssembler};
use crate::stream::Direction;

/// Which message of the exchange a frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// What the client sent.
    Request,
    /// What the server sent.
    Response,
}

/// What a kept message costs besides its data, counted towards the flush size so
/// that a flood of empty messages flushes too.
const MESSAGE_OVERHEAD: usize = 64;

/// One stream in flight.
#[derive(Debug)]
pub struct Stream {
    /// The HTTP/2 stream id.
    pub id: u32,
    /// The direction requests travel on this stream.
    pub client_dir: Direction,
    ex: Exchange,
    request_ended: bool,
    response_ended: bool,
    grpc: bool,
    framers: Option<Box<[MessageFramer; 2]>>,
    messages_bytes: usize,
    /// When a frame of this stream was last seen, for the idle timeout.
    pub last_activity_ns: u64,
    last_flush_ns: u64,
    /// Bytes of this stream were lost: it can no longer be complete.
    gap: bool,
}

impl Stream {
    /// A stream first seen at `now_ns`, whose requests travel in `client_dir`.
    pub fn new(id: u32, client_dir: Direction, now_ns: u64) -> Self {
        let mut ex = Exchange::new("http2", now_ns);
        ex.stream_id = id;
        ex.request_direction = Some(client_dir);
        Self {
            id,
            client_dir,
            ex,
            request_ended: false,
            response_ended: false,
            grpc: false,
            framers: None,
            messages_bytes: 0,
            last_activity_ns: now_ns,
            last_flush_ns: now_ns,
            gap: false,
        }
    }

    /// The side that bytes travelling in `dir` belong to.
    pub fn side_of(&self, dir: Direction) -> Side {
        if dir == self.client_dir {
            Side::Request
        } else {
            Side::Response
        }
    }

    /// The response ended: the exchange is over (late request frames are ignored).
    pub fn is_finished(&self) -> bool {
        self.response_ended
    }

    /// A HEADERS block for `side`: the headers if none were seen yet, else trailers.
    /// Informational (1xx) responses are skipped: the final response follows.
    pub fn on_headers(
        &mut self,
        side: Side,
        headers: Vec<Header>,
        end_stream: bool,
        partial: bool,
        limits: &Limits,
        now_ns: u64,
    ) {
        self.last_activity_ns = now_ns;
        self.ex.partial_headers |= partial;
        let is_trailers = match side {
            Side::Request => self.ex.request.as_ref(),
            Side::Response => self.ex.response.as_ref(),
        }
        .is_some_and(|p| !p.headers.is_empty());
        if is_trailers {
            scan_grpc_status(&headers, &mut self.ex);
            let parts = self.parts_mut(side, limits);
            let held: usize = parts.trailers.iter().map(header_bytes).sum();
            let more: usize = headers.iter().map(header_bytes).sum();
            if held + more > limits.max_buffered_bytes {
                // Repeated trailer blocks are a protocol violation; keep memory bounded.
                self.ex.truncated = true;
            } else {
                parts.trailers.extend(headers);
            }
        } else {
            match side {
                Side::Request => self.take_request_pseudo(&headers),
                Side::Response => {
                    let status = pseudo(&headers, ":status").and_then(|s| s.parse().ok());
                    if status.is_some_and(|s: u32| (100..200).contains(&s)) {
                        return;
                    }
                    self.ex.status = status.unwrap_or(0);
                    self.ex.response_start_ns.get_or_insert(now_ns);
                    scan_grpc_status(&headers, &mut self.ex);
                }
            }
            self.note_content_type(side, &headers, limits);
            let content_encoding = encoding(&headers, self.grpc);
            let parts = self.parts_mut(side, limits);
            parts.content_encoding = content_encoding;
            parts.headers = headers;
        }
        if end_stream {
            self.end(side, now_ns);
        }
    }

    /// DATA payload bytes of `side`.
    pub fn on_data(
        &mut self,
        side: Side,
        data: &[u8],
        limits: &Limits,
        now_ns: u64,
        out: &mut Vec<Pair>,
        assembler: &mut PairAssembler,
    ) {
        self.last_activity_ns = now_ns;
        if side == Side::Response {
            self.ex.response_start_ns.get_or_insert(now_ns);
        }
        self.parts_mut(side, limits).body.push(data);
        if let Some(framers) = &mut self.framers {
            let before = self.ex.messages.len();
            framers[side as usize].push(data, now_ns, limits.max_body_bytes, &mut self.ex.messages);
            self.messages_bytes += self.ex.messages[before..]
                .iter()
                .map(|m| m.data.len() + MESSAGE_OVERHEAD)
                .sum::<usize>();
            if self.messages_bytes >= limits.stream_flush_bytes {
                out.push(self.flush(now_ns, limits, assembler));
            }
        }
    }

    /// `n` bytes of `side`'s DATA were not captured.
    pub fn on_data_lost(&mut self, side: Side, n: u64) {
        self.gap = true;
        self.ex.bytes_lost = self.ex.bytes_lost.saturating_add(n);
        let parts = match side {
            Side::Request => self.ex.request.as_mut(),
            Side::Response => self.ex.response.as_mut(),
        };
        if let Some(parts) = parts {
            parts.body.skip(n);
        }
        if let Some(framers) = &mut self.framers {
            framers[side as usize].lost(n);
        }
    }

    /// Bytes of the connection were lost while this stream was open.
    pub fn on_gap(&mut self, events_lost: bool) {
        self.gap = true;
        self.ex.lost_events |= events_lost;
        self.ex.truncated = true;
    }

    /// Headers of this stream could not be decoded in full.
    pub fn mark_partial(&mut self) {
        self.ex.partial_headers = true;
    }

    /// `side` sent END_STREAM.
    pub fn end(&mut self, side: Side, now_ns: u64) {
        self.last_activity_ns = now_ns;
        match side {
            Side::Request => {
                self.request_ended = true;
                self.ex.request_end_ns.get_or_insert(now_ns);
            }
            Side::Response => {
                self.response_ended = true;
                self.ex.end_ns = Some(now_ns);
            }
        }
        if let Some(framers) = &mut self.framers {
            framers[side as usize].finish(&mut self.ex.messages);
        }
    }

    /// True when this stream's messages are due to be flushed at `now_ns`.
    pub fn flush_due(&self, now_ns: u64, limits: &Limits) -> bool {
        !self.ex.messages.is_empty()
            && now_ns.saturating_sub(self.last_flush_ns) >= limits.stream_flush_interval_ns
    }

    /// Emits what a long-lived stream has so far, as an incomplete pair, and goes on
    /// collecting the rest into the next one.
    pub fn flush(&mut self, now_ns: u64, limits: &Limits, assembler: &mut PairAssembler) -> Pair {
        let mut next = Exchange::new(self.ex.protocol, now_ns);
        next.stream_id = self.id;
        next.request_direction = self.ex.request_direction;
        next.method.clone_from(&self.ex.method);
        next.scheme.clone_from(&self.ex.scheme);
        next.authority.clone_from(&self.ex.authority);
        next.path.clone_from(&self.ex.path);
        next.status = self.ex.status;
        next.request = self.ex.request.as_ref().map(|p| carry_headers(p, limits));
        next.response = self.ex.response.as_ref().map(|p| carry_headers(p, limits));
        next.response_start_ns = self.ex.response_start_ns.map(|_| now_ns);
        next.partial_headers = self.ex.partial_headers;
        let mut ex = std::mem::replace(&mut self.ex, next);
        ex.end_ns = Some(now_ns);
        ex.complete = false;
        ex.note = "stream flushed".to_owned();
        self.messages_bytes = 0;
        self.last_flush_ns = now_ns;
        assembler.assemble(ex)
    }

    /// Turns the stream into its (last) pair. `note` says why it ended early, if it did.
    pub fn finish(
        mut self,
        now_ns: u64,
        note: Option<&str>,
        assembler: &mut PairAssembler,
    ) -> Pair {
        if let Some(framers) = &mut self.framers {
            for f in framers.iter_mut() {
                f.finish(&mut self.ex.messages);
            }
        }
        let complete = note.is_none()
            && self.request_ended
            && self.response_ended
            && self
                .ex
                .request
                .as_ref()
                .is_some_and(|p| !p.headers.is_empty())
            && self.ex.response.is_some()
            && !self.gap;
        self.ex.complete = complete;
        if let Some(note) = note {
            self.ex.note_once(note);
            self.ex.end_ns.get_or_insert(now_ns);
        } else if !complete
            && self
                .ex
                .request
                .as_ref()
                .is_none_or(|p| p.headers.is_empty())
        {
            self.ex.note_once("request not seen");
        } else if !complete && !self.request_ended {
            self.ex.note_once("response ended before the request");
        }
        assembler.assemble(self.ex)
    }

    fn parts_mut(&mut self, side: Side, limits: &Limits) -> &mut MessageParts {
        let slot = match side {
            Side::Request => &mut self.ex.request,
            Side::Response => &mut self.ex.response,
        };
        slot.get_or_insert_with(|| MessageParts::new(limits.max_body_bytes))
    }

    fn take_request_pseudo(&mut self, headers: &[Header]) {
        for h in headers {
            match h.name.as_str() {
                ":method" => self.ex.method.clone_from(&h.value),
                ":scheme" => self.ex.scheme.clone_from(&h.value),
                ":authority" => self.ex.authority.clone_from(&h.value),
                ":path" => self.ex.path.clone_from(&h.value),
                "host" if self.ex.authority.is_empty() => self.ex.authority.clone_from(&h.value),
                _ => {}
            }
        }
    }

    fn note_content_type(&mut self, side: Side, headers: &[Header], limits: &Limits) {
        if self.grpc {
            return;
        }
        let is_grpc = headers
            .iter()
            .any(|h| h.name == "content-type" && grpc::is_grpc_content_type(&h.value));
        if !is_grpc {
            return;
        }
        self.grpc = true;
        self.ex.protocol = "grpc";
        let mut framers = Box::new([MessageFramer::new(true), MessageFramer::new(false)]);
        // DATA seen before the content type (response headers arriving after request
        // DATA cannot happen, but a request body is always preceded by its headers).
        if side == Side::Response
            && let Some(req) = &self.ex.request
        {
            framers[0].push(
                req.body.kept(),
                self.ex.start_ns,
                limits.max_body_bytes,
                &mut self.ex.messages,
            );
        }
        self.framers = Some(framers);
    }
}

/// A message's headers for the next segment of a flushed stream; the body restarts.
fn carry_headers(parts: &MessageParts, limits: &Limits) -> MessageParts {
    let mut next = MessageParts::new(limits.max_body_bytes);
    next.headers.clone_from(&parts.headers);
    next.content_encoding.clone_from(&parts.content_encoding);
    next
}

fn header_bytes(h: &Header) -> usize {
    h.name.len() + h.value.len()
}

fn pseudo<'a>(headers: &'a [Header], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.name == name)
        .map(|h| h.value.as_str())
}

/// `grpc-encoding` for gRPC, else `content-encoding`; empty for identity.
fn encoding(headers: &[Header], grpc: bool) -> String {
    let name = if grpc {
        "grpc-encoding"
    } else {
        "content-encoding"
    };
    match pseudo(headers, name) {
        Some(v) if !v.eq_ignore_ascii_case("identity") => v.to_owned(),
        _ => String::new(),
    }
}

fn scan_grpc_status(headers: &[Header], ex: &mut Exchange) {
    for h in headers {
        match h.name.as_str() {
            "grpc-status" => ex.grpc_status = grpc::parse_status(&h.value),
            "grpc-message" => ex.grpc_message = grpc::percent_decode(&h.value),
            _ => {}
        }
    }
}
