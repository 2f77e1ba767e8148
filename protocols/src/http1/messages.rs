//! What a parsed head means for the connection: a request opens an exchange, a
//! response answers the oldest open one (or switches the connection's protocol).

use super::body::{BodyReader, Framing};
use super::head::{HeadFacts, RequestHead, ResponseHead};
use super::side::{Carries, SideState};
use super::{Handover, HttpOneParser, Mode, Pending, UpgradedRequest};
use crate::Pair;
use crate::pair::{Exchange, MessageParts};
use crate::stream::Direction;
use crate::websocket::WebSocketSession;

impl HttpOneParser {
    pub(super) fn on_request(
        &mut self,
        head: RequestHead,
        start_ns: u64,
        time_ns: u64,
        out: &mut Vec<Pair>,
    ) {
        if self.pending.len() >= self.limits.max_pending_pairs.max(1) {
            // Too many requests without responses: give up on the oldest.
            if let Some(mut oldest) = self.pending.pop_front() {
                oldest.ex.note_once("too many pipelined requests");
                oldest.ex.complete = false;
                out.push(self.assembler.assemble(oldest.ex));
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut ex = Exchange::new("http1", start_ns);
        ex.request_direction = self.request_direction;
        ex.scheme = "http".to_owned();
        ex.authority = authority_of(&head);
        ex.method = head.method;
        ex.path = head.target;
        ex.complete = true;
        if std::mem::take(&mut self.requests.after_gap) {
            // Requests may have been lost before this one: its response may not be next.
            ex.lost_events = true;
            ex.note_once("follows lost bytes");
        }
        let facts = &head.facts;
        let framing = if facts.transfer_encoding {
            if facts.chunked {
                Some(Framing::Chunked)
            } else {
                None
            }
        } else if facts.bad_length {
            None
        } else {
            Some(facts.content_length.map_or(Framing::Empty, Framing::Length))
        };
        let upgrade = if ex.method.eq_ignore_ascii_case("CONNECT") {
            Some("connect".to_owned())
        } else if facts.connection_upgrade {
            facts.upgrade.clone()
        } else {
            None
        };
        let head_request = ex.method.eq_ignore_ascii_case("HEAD");
        let mut parts = MessageParts::new(self.limits.max_body_bytes);
        parts.headers = head.headers;
        parts.content_encoding = head.facts.content_encoding;
        ex.request = Some(parts);
        self.pending.push_back(Pending {
            seq,
            ex,
            request_done: false,
            response_done: false,
            upgrade: upgrade.clone(),
            head_request,
        });
        let Some(framing) = framing else {
            self.mark(seq, |p| p.ex.note_once("request body framing unknown"));
            self.message_done(Carries::Requests, seq, time_ns, false);
            self.requests.desync();
            return;
        };
        let reader = BodyReader::new(framing);
        if reader.is_done() {
            self.message_done(Carries::Requests, seq, time_ns, true);
            // Bytes after an upgrade request wait for the response's verdict.
            self.requests.state = if upgrade.is_some() {
                SideState::Hold
            } else {
                SideState::Head
            };
        } else {
            self.requests.state = SideState::Body { seq, reader };
        }
        self.last_activity_ns = time_ns;
    }

    /// Handles a response head; returns the rest of the input when the connection
    /// switched protocols (it is not HTTP/1 any more).
    pub(super) fn on_response<'i>(
        &mut self,
        head: ResponseHead,
        start_ns: u64,
        time_ns: u64,
        rest: &'i [u8],
        out: &mut Vec<Pair>,
    ) -> Option<&'i [u8]> {
        self.last_activity_ns = time_ns;
        let status = head.status;
        if (100..200).contains(&status) && status != 101 {
            // Interim response (100 Continue, 103 Early Hints): the final one follows.
            return None;
        }
        let after_gap = std::mem::take(&mut self.responses.after_gap);
        let index = match self.pending.iter().position(|p| !p.response_done) {
            Some(i) => i,
            None => {
                // A response to a request never seen (joined mid-connection, or lost).
                let seq = self.next_seq;
                self.next_seq += 1;
                let mut ex = Exchange::new("http1", start_ns);
                ex.request_direction = self.request_direction;
                ex.note_once("request not seen");
                self.pending.push_back(Pending {
                    seq,
                    ex,
                    request_done: true,
                    response_done: false,
                    upgrade: None,
                    head_request: false,
                });
                self.pending.len() - 1
            }
        };
        let pending = &mut self.pending[index];
        let seq = pending.seq;
        let ex = &mut pending.ex;
        if after_gap {
            ex.lost_events = true;
            ex.note_once("follows lost bytes");
        }
        ex.status = u32::from(status);
        ex.response_start_ns = Some(start_ns);
        let mut parts = MessageParts::new(self.limits.max_body_bytes);
        parts.headers = head.headers;
        parts.content_encoding = head.facts.content_encoding.clone();
        ex.response = Some(parts);

        let upgrade = pending.upgrade.take();
        let switch = match upgrade.as_deref() {
            Some("connect") if (200..300).contains(&status) => Some(Mode::Opaque),
            Some(proto) if status == 101 => Some(if proto.contains("websocket") {
                let dir = self.request_direction.unwrap_or(Direction::Ingress);
                Mode::WebSocket(Box::new(WebSocketSession::new(
                    &pending.ex,
                    dir,
                    self.limits.clone(),
                )))
            } else if proto.contains("h2c") {
                Mode::Http2
            } else {
                Mode::Opaque
            }),
            // Switching without having asked, or to something unknown: not HTTP any more.
            None if status == 101 => Some(Mode::Opaque),
            _ => None,
        };
        if let Some(mode) = switch {
            // h2c: the upgraded request becomes HTTP/2 stream 1, whose response comes
            // as frames, so it is handed over rather than paired with the 101.
            let upgraded = matches!(mode, Mode::Http2)
                .then(|| self.pending.iter().position(|p| p.seq == seq))
                .flatten()
                .and_then(|i| self.pending.remove(i))
                .map(|p| UpgradedRequest::from(p.ex));
            self.message_done(Carries::Responses, seq, time_ns, true);
            self.emit_ready(out);
            let held = std::mem::take(&mut self.requests.buf);
            self.mode = mode;
            self.requests.state = SideState::Head;
            if let Mode::Http2 = self.mode {
                self.handover = Some(Handover {
                    from_client: held,
                    from_server: rest.to_vec(),
                    client_direction: self.request_direction.unwrap_or(Direction::Ingress),
                    time_ns,
                    request: upgraded,
                });
                return Some(&[]);
            }
            self.after_switch(Carries::Requests, &held, time_ns, out);
            return Some(rest);
        }
        if matches!(self.requests.state, SideState::Hold) {
            // The server declined the upgrade: held bytes are HTTP after all.
            let held = std::mem::take(&mut self.requests.buf);
            self.requests.state = SideState::Head;
            self.feed(Carries::Requests, &held, time_ns, out);
        }
        let framing = response_framing(
            status,
            &head.facts,
            self.pending
                .iter()
                .find(|p| p.seq == seq)
                .is_some_and(|p| p.head_request),
        );
        let reader = BodyReader::new(framing);
        if reader.is_done() {
            self.message_done(Carries::Responses, seq, time_ns, true);
            self.emit_ready(out);
        } else {
            self.responses.state = SideState::Body { seq, reader };
        }
        None
    }
}

/// How a response body is delimited (RFC 9112 §6.3).
fn response_framing(status: u16, facts: &HeadFacts, head_request: bool) -> Framing {
    if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::Empty
    } else if facts.transfer_encoding {
        if facts.chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else if let Some(n) = facts.content_length.filter(|_| !facts.bad_length) {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    }
}

/// The request's authority: the Host field, or the authority of an absolute-form target.
fn authority_of(head: &RequestHead) -> String {
    if let Some(host) = &head.facts.host {
        return host.clone();
    }
    let target = head.target.as_str();
    if let Some((_, rest)) = target.split_once("://") {
        return rest.split(['/', '?']).next().unwrap_or_default().to_owned();
    }
    if head.method.eq_ignore_ascii_case("CONNECT") {
        return target.to_owned();
    }
    String::new()
}
