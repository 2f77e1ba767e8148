//! [`HttpTwoParser`]: both directions' frames in, one pair per stream out.

use std::collections::VecDeque;

use tapwire_proto::v1::{Header, Pair};

use super::blocks::BlockKind;
use super::blocks::PendingBlock;
use super::frame::{self, FrameHeader, HEADER_LEN, PREFACE, flag, kind};
use super::stream::{Side, Stream};
use crate::hpack::Decoder;
use crate::pair::PairAssembler;
use crate::{Chunk, Direction, Limits, ProtocolParser, Role};

/// Stream ids remembered after their pair was emitted, so late frames on them (a
/// WINDOW_UPDATE, request trailers after an early response) open nothing new.
const CLOSED_MEMORY: usize = 128;

/// Bytes kept while looking for a frame boundary: a header at the very end of a chunk
/// is judged once the bytes after it arrive.
const RESYNC_TAIL: usize = HEADER_LEN;

/// Parses an HTTP/2 connection (h2c prior knowledge, h2c after Upgrade, or TLS
/// plaintext from the TLS probes), also when joined mid-way.
#[derive(Debug)]
pub struct HttpTwoParser {
    pub(super) limits: Limits,
    assembler: PairAssembler,
    pub(super) dirs: [DirState; 2],
    pub(super) streams: Vec<Stream>,
    pub(super) closed: VecDeque<u32>,
    /// The direction requests travel, once known (from the role or the traffic).
    pub(super) client_dir: Option<Direction>,
    upgraded: bool,
}

/// Where one direction's byte stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing seen yet: a preface, the server's SETTINGS, or a mid-way join.
    Start,
    /// At a frame boundary.
    Frames,
    /// Inside a DATA frame's payload, which is passed on as it arrives.
    Data {
        stream_id: u32,
        data_left: usize,
        pad_left: usize,
        end_stream: bool,
    },
    /// Inside a frame that is dropped (too large to buffer).
    Skip { left: usize },
    /// Position unknown after lost bytes: looking for a frame boundary.
    Resync,
}

#[derive(Debug)]
pub(super) struct DirState {
    buf: Vec<u8>,
    phase: Phase,
    pub(super) decoder: Decoder,
    pub(super) pending: Option<PendingBlock>,
}

pub(super) fn di(dir: Direction) -> usize {
    match dir {
        Direction::Egress => 0,
        Direction::Ingress => 1,
    }
}

pub(super) fn other(dir: Direction) -> Direction {
    match dir {
        Direction::Egress => Direction::Ingress,
        Direction::Ingress => Direction::Egress,
    }
}

impl HttpTwoParser {
    /// A parser for a connection seen from its start (the client preface comes first)
    /// or joined mid-way (frames come first; HPACK is learnt as it goes).
    pub fn new(role: Role, limits: Limits) -> Self {
        let table_cap = limits.max_buffered_bytes.clamp(4096, 64 * 1024);
        let dir = || DirState {
            buf: Vec::new(),
            phase: Phase::Start,
            decoder: Decoder::new(table_cap),
            pending: None,
        };
        let client_dir = match role {
            Role::Client => Some(Direction::Egress),
            Role::Server => Some(Direction::Ingress),
            Role::Unknown => None,
        };
        Self {
            assembler: PairAssembler::new(role),
            limits,
            dirs: [dir(), dir()],
            streams: Vec::new(),
            closed: VecDeque::new(),
            client_dir,
            upgraded: false,
        }
    }

    /// A parser taking over after an HTTP/1.1 `Upgrade: h2c` answered by 101: the
    /// client preface follows, and stream 1 carries the response to the upgraded
    /// request (see [`HttpTwoParser::set_upgraded_request`]).
    pub fn after_upgrade(role: Role, limits: Limits) -> Self {
        let mut parser = Self::new(role, limits);
        parser.upgraded = true;
        parser
    }

    /// Gives stream 1 the HTTP/1.1 request that was upgraded, so its pair carries the
    /// method, path and headers; `now_ns` is when that request was sent.
    pub fn set_upgraded_request(
        &mut self,
        method: &str,
        path: &str,
        authority: &str,
        headers: Vec<Header>,
        now_ns: u64,
    ) {
        let Some(client_dir) = self.client_dir else {
            return;
        };
        let mut list = vec![
            pseudo(":method", method),
            pseudo(":scheme", "http"),
            pseudo(":authority", authority),
            pseudo(":path", path),
        ];
        list.extend(headers);
        let limits = self.limits.clone();
        if let Some(i) = self.open_stream(1, client_dir, now_ns, &mut Vec::new()) {
            self.streams[i].on_headers(Side::Request, list, true, false, &limits, now_ns);
        }
    }

    /// Tells the parser which direction requests travel when its role is
    /// [`Role::Unknown`] but the caller knows (e.g. who sent the upgraded HTTP/1.1
    /// request); without it the direction is inferred from the pseudo-headers.
    pub fn set_client_direction(&mut self, direction: Direction) {
        self.client_dir = Some(direction);
    }

    /// Streams currently in flight.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    fn feed(&mut self, dir: Direction, data: &[u8], time_ns: u64, out: &mut Vec<Pair>) {
        let i = di(dir);
        if self.dirs[i].buf.is_empty() {
            let used = self.process(dir, data, time_ns, out);
            let rest = data.get(used..).unwrap_or_default();
            self.dirs[i].buf.extend_from_slice(rest);
        } else {
            let mut buf = std::mem::take(&mut self.dirs[i].buf);
            buf.extend_from_slice(data);
            let used = self.process(dir, &buf, time_ns, out).min(buf.len());
            buf.drain(..used);
            // Keep the allocation unless a large frame left it oversized.
            if buf.capacity() > 4 * self.limits.max_buffered_bytes.max(HEADER_LEN) {
                buf.shrink_to_fit();
            }
            self.dirs[i].buf = buf;
        }
    }

    /// Parses as much of `data` as possible; returns the bytes used. What is left is
    /// an incomplete frame (at most `max_buffered_bytes`, else it is skipped).
    fn process(&mut self, dir: Direction, data: &[u8], time_ns: u64, out: &mut Vec<Pair>) -> usize {
        let i = di(dir);
        let mut pos = 0usize;
        loop {
            let avail = &data[pos.min(data.len())..];
            match self.dirs[i].phase {
                Phase::Start => {
                    if !self.start(dir, avail) {
                        return pos;
                    }
                    if avail.starts_with(PREFACE) {
                        pos += PREFACE.len();
                    }
                }
                Phase::Data {
                    stream_id,
                    data_left,
                    pad_left,
                    end_stream,
                } => {
                    let take = data_left.min(avail.len());
                    if take > 0 {
                        self.on_data(dir, stream_id, &avail[..take], time_ns, out);
                    }
                    let skip = pad_left.min(avail.len() - take);
                    pos += take + skip;
                    let (data_left, pad_left) = (data_left - take, pad_left - skip);
                    if data_left == 0 && pad_left == 0 {
                        self.dirs[i].phase = Phase::Frames;
                        if end_stream {
                            self.on_end_stream(dir, stream_id, time_ns, out);
                        }
                    } else {
                        self.dirs[i].phase = Phase::Data {
                            stream_id,
                            data_left,
                            pad_left,
                            end_stream,
                        };
                        return pos;
                    }
                }
                Phase::Skip { left } => {
                    let take = left.min(avail.len());
                    pos += take;
                    if take == left {
                        self.dirs[i].phase = Phase::Frames;
                    } else {
                        self.dirs[i].phase = Phase::Skip { left: left - take };
                        return pos;
                    }
                }
                Phase::Resync => match frame::find_frame_start(avail) {
                    Some(off) => {
                        pos += off;
                        self.dirs[i].phase = Phase::Frames;
                    }
                    None => return pos + avail.len().saturating_sub(RESYNC_TAIL),
                },
                Phase::Frames => {
                    let Some(header) = FrameHeader::parse(avail) else {
                        return pos;
                    };
                    if header.kind != kind::CONTINUATION {
                        self.interrupt_block(dir);
                    }
                    if header.kind == kind::DATA {
                        let mut pad = 0usize;
                        let mut head = HEADER_LEN;
                        if header.has(flag::PADDED) {
                            let Some(&p) = avail.get(HEADER_LEN) else {
                                return pos;
                            };
                            pad = usize::from(p);
                            head += 1;
                        }
                        let body = header.length.checked_sub(head - HEADER_LEN + pad);
                        pos += head;
                        self.dirs[i].phase = match body {
                            Some(data_left) => Phase::Data {
                                stream_id: header.stream_id,
                                data_left,
                                pad_left: pad,
                                end_stream: header.has(flag::END_STREAM),
                            },
                            // Padding longer than the frame: a broken frame, dropped.
                            None => Phase::Skip {
                                left: header.length.saturating_sub(head - HEADER_LEN),
                            },
                        };
                        continue;
                    }
                    if header.length > self.limits.max_buffered_bytes {
                        pos += HEADER_LEN;
                        self.dirs[i].phase = Phase::Skip {
                            left: header.length,
                        };
                        self.on_dropped_frame(dir, &header);
                        continue;
                    }
                    let end = HEADER_LEN + header.length;
                    let Some(payload) = avail.get(HEADER_LEN..end) else {
                        return pos;
                    };
                    pos += end;
                    self.on_frame(dir, &header, payload, time_ns, out);
                }
            }
        }
    }

    /// Decides how a direction begins. Returns false while more bytes are needed.
    fn start(&mut self, dir: Direction, avail: &[u8]) -> bool {
        let st = &mut self.dirs[di(dir)];
        let n = avail.len().min(PREFACE.len());
        if avail.starts_with(PREFACE) {
            st.phase = Phase::Frames;
            return true;
        }
        if PREFACE.starts_with(&avail[..n]) {
            return false;
        }
        let Some(header) = FrameHeader::parse(avail) else {
            return false;
        };
        // A server's preface is a SETTINGS frame; anything else means earlier frames
        // (and the HPACK state they built) were missed.
        let fresh = self.upgraded || header.kind == kind::SETTINGS && !header.has(flag::ACK);
        if !fresh {
            st.decoder.reset_unknown();
        }
        st.phase = if frame::looks_like_frames(avail) {
            Phase::Frames
        } else {
            Phase::Resync
        };
        true
    }

    fn on_frame(
        &mut self,
        dir: Direction,
        header: &FrameHeader,
        payload: &[u8],
        time_ns: u64,
        out: &mut Vec<Pair>,
    ) {
        match header.kind {
            kind::HEADERS if header.stream_id != 0 => {
                let fragment = frame::strip_padding(header, payload).and_then(|p| {
                    if header.has(flag::PRIORITY) {
                        p.get(5..)
                    } else {
                        Some(p)
                    }
                });
                let block = BlockKind::Headers {
                    end_stream: header.has(flag::END_STREAM),
                };
                self.begin_block(dir, header, fragment, block, time_ns, out);
            }
            kind::PUSH_PROMISE if header.stream_id != 0 => {
                let unpadded = frame::strip_padding(header, payload);
                let promised = unpadded
                    .and_then(|p| p.get(..4))
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff);
                let fragment = unpadded.and_then(|p| p.get(4..));
                let block = BlockKind::PushPromise {
                    promised: promised.unwrap_or(0),
                };
                self.begin_block(dir, header, fragment, block, time_ns, out);
            }
            kind::CONTINUATION => self.continue_block(dir, header, payload, time_ns, out),
            kind::RST_STREAM => {
                if let Some(idx) = self.find(header.stream_id) {
                    self.close_stream(idx, Some("reset"), time_ns, out);
                }
            }
            kind::GOAWAY => {
                let Some(b) = payload.get(..4) else { return };
                let last = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff;
                // Streams the GOAWAY's sender would have served, above `last`, were
                // never processed.
                while let Some(idx) = self
                    .streams
                    .iter()
                    .position(|s| s.id > last && s.client_dir != dir)
                {
                    self.close_stream(idx, Some("goaway"), time_ns, out);
                }
            }
            // SETTINGS, PING, PRIORITY, WINDOW_UPDATE carry nothing a pair needs, and
            // unknown types must be ignored (RFC 9113 §4.1).
            _ => {}
        }
    }

    pub(super) fn open_stream(
        &mut self,
        stream_id: u32,
        client_dir: Direction,
        time_ns: u64,
        out: &mut Vec<Pair>,
    ) -> Option<usize> {
        if self.streams.len() >= self.limits.max_streams {
            let oldest = self
                .streams
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| s.last_activity_ns)
                .map(|(i, _)| i)?;
            self.close_stream(oldest, Some("too many streams"), time_ns, out);
        }
        if self.limits.max_streams == 0 {
            return None;
        }
        self.streams
            .push(Stream::new(stream_id, client_dir, time_ns));
        Some(self.streams.len() - 1)
    }

    fn on_data(
        &mut self,
        dir: Direction,
        stream_id: u32,
        data: &[u8],
        time_ns: u64,
        out: &mut Vec<Pair>,
    ) {
        let Some(idx) = self.find(stream_id) else {
            return;
        };
        let stream = &mut self.streams[idx];
        let side = stream.side_of(dir);
        stream.on_data(side, data, &self.limits, time_ns, out, &mut self.assembler);
    }

    fn on_end_stream(&mut self, dir: Direction, stream_id: u32, time_ns: u64, out: &mut Vec<Pair>) {
        let Some(idx) = self.find(stream_id) else {
            return;
        };
        let stream = &mut self.streams[idx];
        stream.end(stream.side_of(dir), time_ns);
        if stream.is_finished() {
            self.close_stream(idx, None, time_ns, out);
        }
    }

    /// Bytes of `dir` were lost before the next chunk.
    fn on_gap(&mut self, dir: Direction, lost: u64, events_lost: bool) {
        let st = &mut self.dirs[di(dir)];
        if !events_lost && st.buf.is_empty() {
            match st.phase {
                Phase::Data {
                    stream_id,
                    data_left,
                    pad_left,
                    end_stream,
                } if lost <= (data_left + pad_left) as u64 => {
                    // Still inside one DATA frame: only its body has a hole.
                    let lost = lost as usize;
                    let from_data = lost.min(data_left);
                    st.phase = Phase::Data {
                        stream_id,
                        data_left: data_left - from_data,
                        pad_left: pad_left - (lost - from_data),
                        end_stream,
                    };
                    if from_data > 0
                        && let Some(idx) = self.find(stream_id)
                    {
                        let stream = &mut self.streams[idx];
                        let side = stream.side_of(dir);
                        stream.on_data_lost(side, from_data as u64);
                    }
                    return;
                }
                Phase::Skip { left } if lost <= left as u64 => {
                    st.phase = Phase::Skip {
                        left: left - lost as usize,
                    };
                    return;
                }
                _ => {}
            }
        }
        // The frame boundary is lost, and any header block in the gap changed the table.
        let current = match st.phase {
            Phase::Data { stream_id, .. } => Some(stream_id),
            _ => None,
        };
        st.buf.clear();
        st.pending = None;
        st.decoder.reset_unknown();
        st.phase = Phase::Resync;
        for s in &mut self.streams {
            s.on_gap(events_lost);
            if Some(s.id) == current {
                let side = s.side_of(dir);
                s.on_data_lost(side, lost);
            }
        }
    }

    pub(super) fn find(&self, stream_id: u32) -> Option<usize> {
        self.streams.iter().position(|s| s.id == stream_id)
    }

    pub(super) fn close_stream(
        &mut self,
        idx: usize,
        note: Option<&str>,
        time_ns: u64,
        out: &mut Vec<Pair>,
    ) {
        let stream = self.streams.swap_remove(idx);
        if self.closed.len() >= CLOSED_MEMORY {
            self.closed.pop_front();
        }
        self.closed.push_back(stream.id);
        out.push(stream.finish(time_ns, note, &mut self.assembler));
    }
}

fn pseudo(name: &str, value: &str) -> Header {
    Header {
        name: name.to_owned(),
        value: value.to_owned(),
    }
}

impl ProtocolParser for HttpTwoParser {
    fn on_chunk(&mut self, chunk: &Chunk<'_>, out: &mut Vec<Pair>) {
        if chunk.lost_before > 0 || chunk.events_lost {
            self.on_gap(chunk.direction, chunk.lost_before, chunk.events_lost);
        }
        self.feed(chunk.direction, chunk.data, chunk.time_ns, out);
    }

    fn on_tick(&mut self, now_ns: u64, out: &mut Vec<Pair>) {
        let mut idx = 0;
        while idx < self.streams.len() {
            let stream = &mut self.streams[idx];
            if now_ns.saturating_sub(stream.last_activity_ns) >= self.limits.idle_timeout_ns {
                self.close_stream(idx, Some("idle"), now_ns, out);
                continue;
            }
            if stream.flush_due(now_ns, &self.limits) {
                out.push(stream.flush(now_ns, &self.limits, &mut self.assembler));
            }
            idx += 1;
        }
    }

    fn on_close(&mut self, now_ns: u64, out: &mut Vec<Pair>) {
        self.streams.sort_by_key(|s| s.id);
        for stream in self.streams.drain(..) {
            out.push(stream.finish(now_ns, Some("connection closed"), &mut self.assembler));
        }
        for st in &mut self.dirs {
            st.buf = Vec::new();
            st.pending = None;
        }
    }
}
