//! Header blocks: HEADERS and PUSH_PROMISE with their CONTINUATIONs, decoded with the
//! direction's HPACK decoder and handed to the stream they open or continue.

use tapwire_proto::v1::{Header, Pair};

use super::frame::{FrameHeader, flag, kind as frame_kind};
use super::parser::{HttpTwoParser, di, other};
use super::stream::Side;
use crate::Direction;

#[derive(Debug)]
pub(super) enum BlockKind {
    Headers { end_stream: bool },
    PushPromise { promised: u32 },
}

/// A header block waiting for its CONTINUATION frames.
#[derive(Debug)]
pub(super) struct PendingBlock {
    stream_id: u32,
    kind: BlockKind,
    block: Vec<u8>,
}

impl HttpTwoParser {
    pub(super) fn begin_block(
        &mut self,
        dir: Direction,
        header: &FrameHeader,
        fragment: Option<&[u8]>,
        kind: BlockKind,
        time_ns: u64,
        out: &mut Vec<Pair>,
    ) {
        let Some(fragment) = fragment else {
            self.lose_block(dir, header.stream_id);
            return;
        };
        if header.has(flag::END_HEADERS) {
            self.on_block(dir, header.stream_id, kind, fragment, time_ns, out);
        } else {
            self.dirs[di(dir)].pending = Some(PendingBlock {
                stream_id: header.stream_id,
                kind,
                block: fragment.to_vec(),
            });
        }
    }

    pub(super) fn continue_block(
        &mut self,
        dir: Direction,
        header: &FrameHeader,
        payload: &[u8],
        time_ns: u64,
        out: &mut Vec<Pair>,
    ) {
        let st = &mut self.dirs[di(dir)];
        let Some(pending) = st
            .pending
            .as_mut()
            .filter(|p| p.stream_id == header.stream_id)
        else {
            // The start of this block was not seen: the table may have changed unseen.
            self.interrupt_block(dir);
            self.lose_block(dir, header.stream_id);
            return;
        };
        if pending.block.len() + payload.len() > self.limits.max_buffered_bytes {
            st.pending = None;
            self.lose_block(dir, header.stream_id);
            return;
        }
        pending.block.extend_from_slice(payload);
        if header.has(flag::END_HEADERS)
            && let Some(p) = st.pending.take()
        {
            self.on_block(dir, p.stream_id, p.kind, &p.block, time_ns, out);
        }
    }

    /// A frame other than CONTINUATION arrived while a block was open: the block is
    /// lost, and with it the table's state.
    pub(super) fn interrupt_block(&mut self, dir: Direction) {
        if let Some(p) = self.dirs[di(dir)].pending.take() {
            self.lose_block(dir, p.stream_id);
        }
    }

    /// A header block could not be decoded: the table is unknown from here, and the
    /// stream it belonged to has partial headers.
    fn lose_block(&mut self, dir: Direction, stream_id: u32) {
        self.dirs[di(dir)].decoder.reset_unknown();
        if let Some(idx) = self.find(stream_id) {
            self.streams[idx].mark_partial();
        }
    }

    pub(super) fn on_dropped_frame(&mut self, dir: Direction, header: &FrameHeader) {
        if matches!(
            header.kind,
            frame_kind::HEADERS | frame_kind::PUSH_PROMISE | frame_kind::CONTINUATION
        ) {
            self.dirs[di(dir)].pending = None;
            self.lose_block(dir, header.stream_id);
        }
    }

    fn on_block(
        &mut self,
        dir: Direction,
        stream_id: u32,
        kind: BlockKind,
        block: &[u8],
        time_ns: u64,
        out: &mut Vec<Pair>,
    ) {
        let mut headers = Vec::with_capacity(16);
        let max_list = self.limits.max_buffered_bytes;
        let (partial, dropped) =
            match self.dirs[di(dir)]
                .decoder
                .decode(block, max_list, &mut headers)
            {
                Ok(summary) => (summary.unknown_refs > 0, summary.dropped > 0),
                Err(error) => {
                    tracing::debug!(%error, stream_id, "undecodable HPACK block");
                    (true, false)
                }
            };
        match kind {
            BlockKind::Headers { end_stream } => {
                let idx = match self.find(stream_id) {
                    Some(idx) => idx,
                    None => {
                        if self.closed.contains(&stream_id) {
                            return;
                        }
                        let client_dir = self.client_dir_for(dir, &headers);
                        match self.open_stream(stream_id, client_dir, time_ns, out) {
                            Some(idx) => idx,
                            None => return,
                        }
                    }
                };
                let limits = &self.limits;
                let stream = &mut self.streams[idx];
                let side = stream.side_of(dir);
                stream.on_headers(side, headers, end_stream, partial, limits, time_ns);
                if dropped {
                    stream.on_gap(false);
                }
                if stream.is_finished() {
                    self.close_stream(idx, None, time_ns, out);
                }
            }
            BlockKind::PushPromise { promised } => {
                if promised == 0 || self.find(promised).is_some() {
                    return;
                }
                // The promise carries the request the server pushes a response to.
                if let Some(idx) = self.open_stream(promised, other(dir), time_ns, out) {
                    let limits = &self.limits;
                    self.streams[idx].on_headers(
                        Side::Request,
                        headers,
                        true,
                        partial,
                        limits,
                        time_ns,
                    );
                }
            }
        }
    }

    /// The direction requests travel in, for a stream first seen in a block from `dir`.
    fn client_dir_for(&mut self, dir: Direction, headers: &[Header]) -> Direction {
        if let Some(d) = self.client_dir {
            return d;
        }
        let has = |name: &str| headers.iter().any(|h| h.name == name);
        if has(":method") {
            self.client_dir = Some(dir);
            dir
        } else if has(":status") {
            self.client_dir = Some(other(dir));
            other(dir)
        } else {
            // Nothing decodable says which side this is: the opener is the client.
            dir
        }
    }
}
