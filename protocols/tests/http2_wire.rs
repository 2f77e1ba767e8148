//! Builds HTTP/2 byte streams for the HTTP/2 and gRPC tests (included by them with
//! `#[path]`; as a test target of its own it only checks itself).
#![allow(dead_code)]

use tapwire_protocols::hpack::Encoder;
use tapwire_protocols::http2::{PREFACE, flag, kind, write_header};
use tapwire_protocols::{Chunk, Direction, Pair, ProtocolParser};

/// Which peer sends a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Client,
    Server,
}

/// A recorded conversation: writes in order, each from one peer.
pub struct Wire {
    pub events: Vec<(Peer, Vec<u8>)>,
    client_enc: Encoder,
    server_enc: Encoder,
    pub max_frame: usize,
}

impl Wire {
    pub fn new(huffman: bool) -> Self {
        Self {
            events: Vec::new(),
            client_enc: Encoder::new(huffman),
            server_enc: Encoder::new(huffman),
            max_frame: 16384,
        }
    }

    /// Client preface + SETTINGS, server SETTINGS, both ACKs.
    pub fn handshake(&mut self) -> &mut Self {
        let mut c = PREFACE.to_vec();
        frame(kind::SETTINGS, 0, 0, &[0, 4, 0, 0xff, 0xff, 0xff], &mut c);
        self.push(Peer::Client, c);
        self.frame(Peer::Server, kind::SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]);
        self.frame(Peer::Server, kind::SETTINGS, flag::ACK, 0, &[]);
        self.frame(Peer::Client, kind::SETTINGS, flag::ACK, 0, &[]);
        self
    }

    pub fn push(&mut self, peer: Peer, bytes: Vec<u8>) -> &mut Self {
        self.events.push((peer, bytes));
        self
    }

    pub fn frame(
        &mut self,
        peer: Peer,
        kind: u8,
        flags: u8,
        sid: u32,
        payload: &[u8],
    ) -> &mut Self {
        let mut v = Vec::new();
        frame(kind, flags, sid, payload, &mut v);
        self.push(peer, v)
    }

    pub fn block(&mut self, peer: Peer, headers: &[(&str, &str)]) -> Vec<u8> {
        let enc = match peer {
            Peer::Client => &mut self.client_enc,
            Peer::Server => &mut self.server_enc,
        };
        let mut block = Vec::new();
        enc.encode(headers.iter().copied(), &mut block);
        block
    }

    /// A HEADERS frame, split into CONTINUATIONs of `piece` bytes when given.
    pub fn headers(
        &mut self,
        peer: Peer,
        sid: u32,
        headers: &[(&str, &str)],
        end_stream: bool,
    ) -> &mut Self {
        self.headers_split(peer, sid, headers, end_stream, usize::MAX)
    }

    pub fn headers_split(
        &mut self,
        peer: Peer,
        sid: u32,
        headers: &[(&str, &str)],
        end_stream: bool,
        piece: usize,
    ) -> &mut Self {
        let block = self.block(peer, headers);
        let es = if end_stream { flag::END_STREAM } else { 0 };
        let mut pieces = block.chunks(piece.max(1)).peekable();
        let first = pieces.next().unwrap_or_default();
        let mut v = Vec::new();
        let eh = if pieces.peek().is_none() {
            flag::END_HEADERS
        } else {
            0
        };
        frame(kind::HEADERS, es | eh, sid, first, &mut v);
        while let Some(p) = pieces.next() {
            let eh = if pieces.peek().is_none() {
                flag::END_HEADERS
            } else {
                0
            };
            frame(kind::CONTINUATION, eh, sid, p, &mut v);
        }
        self.push(peer, v)
    }

    /// HEADERS with padding and a priority block.
    pub fn headers_padded(
        &mut self,
        peer: Peer,
        sid: u32,
        headers: &[(&str, &str)],
        end_stream: bool,
        pad: u8,
    ) -> &mut Self {
        let block = self.block(peer, headers);
        let mut payload = vec![pad, 0x80, 0, 0, 0, 15];
        payload.extend_from_slice(&block);
        payload.extend(std::iter::repeat_n(0u8, usize::from(pad)));
        let es = if end_stream { flag::END_STREAM } else { 0 };
        self.frame(
            peer,
            kind::HEADERS,
            es | flag::END_HEADERS | flag::PADDED | flag::PRIORITY,
            sid,
            &payload,
        )
    }

    /// DATA frames of at most `max_frame` bytes; the last carries END_STREAM.
    pub fn data(&mut self, peer: Peer, sid: u32, body: &[u8], end_stream: bool) -> &mut Self {
        let mut v = Vec::new();
        let mut pieces = body.chunks(self.max_frame).peekable();
        if pieces.peek().is_none() {
            frame(
                kind::DATA,
                if end_stream { flag::END_STREAM } else { 0 },
                sid,
                &[],
                &mut v,
            );
        }
        while let Some(p) = pieces.next() {
            let last = pieces.peek().is_none();
            frame(
                kind::DATA,
                if end_stream && last {
                    flag::END_STREAM
                } else {
                    0
                },
                sid,
                p,
                &mut v,
            );
        }
        self.push(peer, v)
    }

    pub fn data_padded(
        &mut self,
        peer: Peer,
        sid: u32,
        body: &[u8],
        end_stream: bool,
        pad: u8,
    ) -> &mut Self {
        let mut payload = vec![pad];
        payload.extend_from_slice(body);
        payload.extend(std::iter::repeat_n(0u8, usize::from(pad)));
        let es = if end_stream { flag::END_STREAM } else { 0 };
        self.frame(peer, kind::DATA, es | flag::PADDED, sid, &payload)
    }

    pub fn rst(&mut self, peer: Peer, sid: u32, code: u32) -> &mut Self {
        self.frame(peer, kind::RST_STREAM, 0, sid, &code.to_be_bytes())
    }

    pub fn goaway(&mut self, peer: Peer, last: u32, code: u32) -> &mut Self {
        let mut p = last.to_be_bytes().to_vec();
        p.extend_from_slice(&code.to_be_bytes());
        p.extend_from_slice(b"bye");
        self.frame(peer, kind::GOAWAY, 0, 0, &p)
    }

    pub fn push_promise(&mut self, sid: u32, promised: u32, headers: &[(&str, &str)]) -> &mut Self {
        let block = self.block(Peer::Server, headers);
        let mut payload = promised.to_be_bytes().to_vec();
        payload.extend_from_slice(&block);
        self.frame(
            Peer::Server,
            kind::PUSH_PROMISE,
            flag::END_HEADERS,
            sid,
            &payload,
        )
    }

    /// PING, WINDOW_UPDATE, PRIORITY and an unknown frame type: none of them matters
    /// to the pairs.
    pub fn noise(&mut self, peer: Peer, sid: u32) -> &mut Self {
        self.frame(peer, kind::PING, 0, 0, &[1, 2, 3, 4, 5, 6, 7, 8]);
        self.frame(peer, kind::WINDOW_UPDATE, 0, 0, &[0, 1, 0, 0]);
        self.frame(peer, kind::WINDOW_UPDATE, 0, sid, &[0, 1, 0, 0]);
        self.frame(peer, kind::PRIORITY, 0, sid, &[0, 0, 0, 0, 16]);
        self.frame(peer, 0xbe, 0x3, sid, b"unknown extension frame")
    }

    /// All bytes one peer sent.
    pub fn bytes_of(&self, peer: Peer) -> Vec<u8> {
        self.events
            .iter()
            .filter(|(p, _)| *p == peer)
            .flat_map(|(_, b)| b.clone())
            .collect()
    }
}

pub fn frame(kind: u8, flags: u8, sid: u32, payload: &[u8], dst: &mut Vec<u8>) {
    write_header(payload.len(), kind, flags, sid, dst);
    dst.extend_from_slice(payload);
}

/// The direction of a peer's bytes when the observed process is the client.
pub fn dir_of(peer: Peer, observed_is_client: bool) -> Direction {
    match (peer, observed_is_client) {
        (Peer::Client, true) | (Peer::Server, false) => Direction::Egress,
        _ => Direction::Ingress,
    }
}

pub fn chunk(direction: Direction, data: &[u8], time_ns: u64) -> Chunk<'_> {
    Chunk {
        direction,
        data,
        time_ns,
        lost_before: 0,
        events_lost: false,
    }
}

/// Feeds every event as one chunk (times 1000, 2000, …), then closes at `close_ns`
/// when given.
pub fn run(
    parser: &mut dyn ProtocolParser,
    events: &[(Peer, Vec<u8>)],
    observed_is_client: bool,
    close_ns: Option<u64>,
) -> Vec<Pair> {
    let mut out = Vec::new();
    for (i, (peer, bytes)) in events.iter().enumerate() {
        parser.on_chunk(
            &chunk(
                dir_of(*peer, observed_is_client),
                bytes,
                (i as u64 + 1) * 1000,
            ),
            &mut out,
        );
    }
    if let Some(t) = close_ns {
        parser.on_close(t, &mut out);
    }
    out
}

/// Feeds the events with the byte at global offset `cut` starting a new chunk.
pub fn run_cut(
    parser: &mut dyn ProtocolParser,
    events: &[(Peer, Vec<u8>)],
    cut: usize,
) -> Vec<Pair> {
    let mut out = Vec::new();
    let mut offset = 0;
    for (i, (peer, bytes)) in events.iter().enumerate() {
        let dir = dir_of(*peer, true);
        let t = (i as u64 + 1) * 1000;
        if cut > offset && cut < offset + bytes.len() {
            let (a, b) = bytes.split_at(cut - offset);
            parser.on_chunk(&chunk(dir, a, t), &mut out);
            parser.on_chunk(&chunk(dir, b, t), &mut out);
        } else {
            parser.on_chunk(&chunk(dir, bytes, t), &mut out);
        }
        offset += bytes.len();
    }
    out
}

pub fn total_len(events: &[(Peer, Vec<u8>)]) -> usize {
    events.iter().map(|(_, b)| b.len()).sum()
}

pub fn header<'a>(headers: &'a [tapwire_proto::v1::Header], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.name == name)
        .map(|h| h.value.as_str())
}

#[test]
fn wire_builds_frames() {
    let mut w = Wire::new(true);
    w.handshake()
        .headers(Peer::Client, 1, &[(":method", "GET")], true);
    assert!(w.bytes_of(Peer::Client).starts_with(PREFACE));
    assert!(tapwire_protocols::http2::looks_like_frames(
        &w.bytes_of(Peer::Server)
    ));
}

/// Reads a recording made by `tests/data/h2_record.py`: (direction, length, bytes)
/// records in the order the relay saw them.
pub fn load_recording(name: &str) -> Vec<(Peer, Vec<u8>)> {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut events = Vec::new();
    let mut rest = &raw[..];
    while let [tag, a, b, c, d, tail @ ..] = rest {
        let len = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
        let peer = if *tag == b'C' {
            Peer::Client
        } else {
            Peer::Server
        };
        events.push((peer, tail[..len].to_vec()));
        rest = &tail[len..];
    }
    events
}
