//! WebSocket (RFC 6455) after an HTTP/1 Upgrade: frames of both directions become
//! [`StreamMessage`]s of a `websocket` pair, emitted on close, on an interval, or once
//! they hold enough bytes, so a long-lived socket never buffers without bound.

use tapwire_proto::v1::StreamMessage;

use crate::pair::{BodyBuffer, Exchange, timestamp};
use crate::stream::{Direction, Limits};

/// A message being reassembled from its frames.
#[derive(Debug)]
struct Partial {
    kind: &'static str,
    compressed: bool,
    time_ns: u64,
    data: BodyBuffer,
}

#[derive(Debug)]
enum FrameState {
    /// Collecting the 2..14 header bytes.
    Header { bytes: [u8; 14], len: usize },
    /// Reading a payload; `mask` unmasks client frames.
    Payload {
        remaining: u64,
        mask: Option<[u8; 4]>,
        offset: usize,
        control: bool,
        fin: bool,
    },
    /// Lost sync (a gap or a malformed frame): the rest of this direction is passed over.
    Opaque,
}

/// Frame parser for one direction.
#[derive(Debug)]
struct FrameReader {
    from_client: bool,
    state: FrameState,
    /// The data message being assembled from fragments.
    message: Option<Partial>,
    /// A control frame (close, ping, pong) in flight; it may interleave with fragments.
    control: Option<Partial>,
}

impl FrameReader {
    fn new(from_client: bool) -> Self {
        Self {
            from_client,
            state: FrameState::Header {
                bytes: [0; 14],
                len: 0,
            },
            message: None,
            control: None,
        }
    }

    fn feed(
        &mut self,
        mut input: &[u8],
        time_ns: u64,
        body_cap: usize,
        out: &mut Vec<StreamMessage>,
    ) {
        while !input.is_empty() {
            match &mut self.state {
                FrameState::Opaque => return,
                FrameState::Header { bytes, len } => {
                    let need = header_len(&bytes[..*len]);
                    let take = (need - *len).min(input.len());
                    bytes[*len..*len + take].copy_from_slice(&input[..take]);
                    *len += take;
                    input = &input[take..];
                    if *len == header_len(&bytes[..*len]) {
                        let header = *bytes;
                        let header_len = *len;
                        self.start_frame(&header[..header_len], time_ns, body_cap, out);
                    }
                }
                FrameState::Payload {
                    remaining,
                    mask,
                    offset,
                    control,
                    fin,
                } => {
                    let take = input
                        .len()
                        .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                    let target = if *control {
                        &mut self.control
                    } else {
                        &mut self.message
                    };
                    if let Some(partial) = target {
                        match mask {
                            Some(key) => {
                                let unmasked: Vec<u8> = input[..take]
                                    .iter()
                                    .enumerate()
                                    .map(|(i, b)| b ^ key[(*offset + i) % 4])
                                    .collect();
                                partial.data.push(&unmasked);
                            }
                            None => partial.data.push(&input[..take]),
                        }
                    }
                    *offset += take;
                    *remaining -= take as u64;
                    input = &input[take..];
                    if *remaining == 0 {
                        let (control, fin) = (*control, *fin);
                        self.end_frame(control, fin, out);
                    }
                }
            }
        }
    }

    /// A frame header is complete: set up its payload.
    fn start_frame(
        &mut self,
        header: &[u8],
        time_ns: u64,
        body_cap: usize,
        out: &mut Vec<StreamMessage>,
    ) {
        let fin = header[0] & 0x80 != 0;
        let rsv1 = header[0] & 0x40 != 0;
        let opcode = header[0] & 0x0f;
        let masked = header[1] & 0x80 != 0;
        let len7 = header[1] & 0x7f;
        let (length, mut at) = match len7 {
            126 => (u64::from(u16::from_be_bytes([header[2], header[3]])), 4),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&header[2..10]);
                (u64::from_be_bytes(b), 10)
            }
            n => (u64::from(n), 2),
        };
        let mask = masked.then(|| {
            let key = [header[at], header[at + 1], header[at + 2], header[at + 3]];
            at += 4;
            key
        });
        let control = opcode >= 8;
        let kind = match opcode {
            0 if self.message.is_some() => "",
            1 => "text",
            2 => "binary",
            8 => "close",
            9 => "ping",
            10 => "pong",
            _ => {
                // Reserved opcode or a continuation without a start: not WebSocket as
                // we know it, so stop reading rather than invent messages.
                self.state = FrameState::Opaque;
                return;
            }
        };
        if control && (!fin || length > 125) {
            self.state = FrameState::Opaque;
            return;
        }
        let partial = || Partial {
            kind,
            compressed: rsv1,
            time_ns,
            data: BodyBuffer::new(body_cap),
        };
        if control {
            self.control = Some(partial());
        } else if opcode != 0 {
            // A new data message; an unfinished one before it can never end now.
            if let Some(stale) = self.message.take() {
                out.push(self.finish(stale, true));
            }
            self.message = Some(partial());
        }
        self.state = FrameState::Payload {
            remaining: length,
            mask,
            offset: 0,
            control,
            fin,
        };
        if length == 0 {
            self.end_frame(control, fin, out);
        }
    }

    fn end_frame(&mut self, control: bool, fin: bool, out: &mut Vec<StreamMessage>) {
        self.state = FrameState::Header {
            bytes: [0; 14],
            len: 0,
        };
        let done = if control {
            self.control.take()
        } else if fin {
            self.message.take()
        } else {
            None
        };
        if let Some(partial) = done {
            out.push(self.finish(partial, false));
        }
    }

    fn finish(&self, partial: Partial, cut_short: bool) -> StreamMessage {
        StreamMessage {
            from_client: self.from_client,
            time: Some(timestamp(partial.time_ns)),
            compressed: partial.compressed,
            size: partial.data.size(),
            truncated: partial.data.is_truncated() || cut_short,
            data: partial.data.into_bytes(),
            kind: partial.kind.to_owned(),
        }
    }

    /// Accounts for lost bytes: within a payload they are skipped, otherwise this
    /// direction can no longer be followed.
    fn skip(&mut self, lost: u64) -> bool {
        if let FrameState::Payload {
            remaining,
            offset,
            control,
            ..
        } = &mut self.state
            && lost < *remaining
        {
            *remaining -= lost;
            *offset = offset.wrapping_add(usize::try_from(lost).unwrap_or(0));
            let target = if *control {
                &mut self.control
            } else {
                &mut self.message
            };
            if let Some(partial) = target {
                partial.data.skip(lost);
            }
            return true;
        }
        self.state = FrameState::Opaque;
        false
    }
}

/// Bytes of a frame header given its first bytes (2 until the length byte is known).
fn header_len(first: &[u8]) -> usize {
    let Some(b1) = first.get(1) else { return 2 };
    let ext = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 }
}

/// A WebSocket connection after its handshake.
#[derive(Debug)]
pub struct WebSocketSession {
    /// Method, path, authority, direction of the handshake; cloned into each pair.
    template: Exchange,
    client_direction: Direction,
    client: FrameReader,
    server: FrameReader,
    messages: Vec<StreamMessage>,
    held_bytes: usize,
    window_start_ns: Option<u64>,
    last_ns: u64,
    limits: Limits,
    lost: bool,
    bytes_lost: u64,
}

impl WebSocketSession {
    /// Starts following frames after the handshake described by `handshake` (whose
    /// request travelled in `client_direction`).
    pub fn new(handshake: &Exchange, client_direction: Direction, limits: Limits) -> Self {
        let template = Exchange {
            protocol: "websocket",
            method: handshake.method.clone(),
            scheme: handshake.scheme.clone(),
            authority: handshake.authority.clone(),
            path: handshake.path.clone(),
            request_direction: Some(client_direction),
            ..Exchange::default()
        };
        Self {
            template,
            client_direction,
            client: FrameReader::new(true),
            server: FrameReader::new(false),
            messages: Vec::new(),
            held_bytes: 0,
            window_start_ns: None,
            last_ns: 0,
            limits,
            lost: false,
            bytes_lost: 0,
        }
    }

    /// Takes frame bytes of one direction; returns an exchange when enough messages
    /// are held to be flushed.
    pub fn on_data(&mut self, direction: Direction, data: &[u8], time_ns: u64) -> Option<Exchange> {
        let before = self.messages.len();
        let reader = if direction == self.client_direction {
            &mut self.client
        } else {
            &mut self.server
        };
        reader.feed(
            data,
            time_ns,
            self.limits.max_body_bytes,
            &mut self.messages,
        );
        self.account(before, time_ns);
        (self.held_bytes >= self.limits.stream_flush_bytes).then(|| self.flush(time_ns, "flushed"))
    }

    /// Records a gap of `lost` bytes (None: unknown) in one direction.
    pub fn on_gap(&mut self, direction: Direction, lost: Option<u64>) {
        self.lost = true;
        self.bytes_lost = self.bytes_lost.saturating_add(lost.unwrap_or(0));
        let reader = if direction == self.client_direction {
            &mut self.client
        } else {
            &mut self.server
        };
        match lost {
            Some(n) => {
                reader.skip(n);
            }
            None => reader.state = FrameState::Opaque,
        }
    }

    /// Emits held messages when the flush interval has passed.
    pub fn on_tick(&mut self, now_ns: u64) -> Option<Exchange> {
        let start = self.window_start_ns?;
        (now_ns.saturating_sub(start) >= self.limits.stream_flush_interval_ns)
            .then(|| self.flush(now_ns, "flushed"))
    }

    /// Emits what is left when the connection closes.
    pub fn on_close(&mut self, now_ns: u64) -> Option<Exchange> {
        let mut cut = Vec::new();
        for reader in [&mut self.client, &mut self.server] {
            if let Some(partial) = reader.message.take() {
                cut.push(reader.finish(partial, true));
            }
        }
        let before = self.messages.len();
        self.messages.append(&mut cut);
        self.account(before, now_ns);
        self.window_start_ns.map(|_| self.flush(now_ns, ""))
    }

    fn account(&mut self, before: usize, time_ns: u64) {
        if self.messages.len() > before {
            self.window_start_ns.get_or_insert(time_ns);
            self.held_bytes += self.messages[before..]
                .iter()
                .map(|m| m.data.len() + 16)
                .sum::<usize>();
        }
        self.last_ns = time_ns;
    }

    fn flush(&mut self, now_ns: u64, note: &str) -> Exchange {
        let mut ex = self.template.clone();
        ex.start_ns = self.window_start_ns.take().unwrap_or(now_ns);
        ex.end_ns = Some(self.last_ns.max(ex.start_ns));
        ex.messages = std::mem::take(&mut self.messages);
        ex.complete = !self.lost && note.is_empty();
        ex.lost_events = std::mem::take(&mut self.lost);
        ex.bytes_lost = std::mem::take(&mut self.bytes_lost);
        ex.truncated = ex.messages.iter().any(|m| m.truncated);
        ex.note = note.to_owned();
        self.held_bytes = 0;
        ex
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: u8, fin: bool, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        let m = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(m | n as u8),
            n if n <= 0xffff => {
                out.push(m | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(m | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match mask {
            Some(key) => {
                out.extend_from_slice(&key);
                out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
            }
            None => out.extend_from_slice(payload),
        }
        out
    }

    fn session() -> WebSocketSession {
        let mut hs = Exchange::new("http1", 1);
        hs.path = "/chat".into();
        WebSocketSession::new(&hs, Direction::Ingress, Limits::default())
    }

    #[test]
    fn fragmented_masked_messages_with_interleaved_ping_at_every_split() {
        let mut wire = frame(1, false, b"Hel", Some([1, 2, 3, 4]));
        wire.extend(frame(9, true, b"p", Some([9, 9, 9, 9])));
        wire.extend(frame(0, true, b"lo", Some([5, 6, 7, 8])));
        let big = vec![7u8; 300];
        wire.extend(frame(2, true, &big, Some([1, 1, 1, 1])));
        for cut in 0..wire.len() {
            let mut ws = session();
            assert!(ws.on_data(Direction::Ingress, &wire[..cut], 10).is_none());
            assert!(ws.on_data(Direction::Ingress, &wire[cut..], 11).is_none());
            let ex = ws.on_close(20).expect("messages");
            let kinds: Vec<_> = ex.messages.iter().map(|m| m.kind.as_str()).collect();
            assert_eq!(kinds, ["ping", "text", "binary"], "cut {cut}");
            assert_eq!(&ex.messages[1].data[..], b"Hello");
            assert_eq!(ex.messages[2].size, 300);
            assert!(ex.messages.iter().all(|m| m.from_client));
            assert_eq!(ex.protocol, "websocket");
            assert_eq!(ex.path, "/chat");
        }
    }

    #[test]
    fn server_frames_and_close() {
        let mut ws = session();
        let mut wire = frame(1, true, b"hi", None);
        wire.extend(frame(8, true, &[0x03, 0xe8], None));
        ws.on_data(Direction::Egress, &wire, 5);
        let ex = ws.on_close(6).expect("messages");
        assert_eq!(ex.messages.len(), 2);
        assert!(!ex.messages[0].from_client);
        assert_eq!(ex.messages[1].kind, "close");
        assert!(ex.complete);
    }

    #[test]
    fn flushes_on_interval_and_size() {
        let mut ws = session();
        ws.on_data(Direction::Egress, &frame(1, true, b"a", None), 0);
        assert!(ws.on_tick(1).is_none());
        let ex = ws
            .on_tick(Limits::default().stream_flush_interval_ns)
            .expect("flush");
        assert_eq!(ex.messages.len(), 1);
        assert!(ws.on_close(10).is_none());

        let limits = Limits {
            stream_flush_bytes: 100,
            ..Limits::default()
        };
        let mut ws = WebSocketSession::new(&Exchange::default(), Direction::Egress, limits);
        let ex = ws.on_data(Direction::Ingress, &frame(2, true, &[0; 200], None), 3);
        assert_eq!(ex.expect("size flush").messages.len(), 1);
    }

    #[test]
    fn garbage_is_passed_over() {
        let mut ws = session();
        ws.on_data(
            Direction::Egress,
            b"\x03\x00garbage that is not websocket",
            1,
        );
        assert!(ws.on_close(2).is_none());
    }
}
