//! gRPC's length-prefixed messages, reassembled across DATA frames.

use crate::pair::timestamp;
use bytes::Bytes;
use tapwire_proto::v1::StreamMessage;

/// The message prefix: 1 byte compressed flag, 4 bytes big-endian length.
pub const PREFIX_LEN: usize = 5;

/// Bytes reserved up front for a message; longer ones grow as their data arrives.
const PREALLOC_MAX: usize = 16 * 1024;

/// Cuts one direction of a gRPC stream's DATA bytes into messages.
///
/// Memory is bounded by the caller's per-message cap: the rest of a long message is
/// counted, not kept.
#[derive(Debug)]
pub struct MessageFramer {
    from_client: bool,
    prefix: [u8; PREFIX_LEN],
    prefix_len: usize,
    current: Option<Partial>,
    /// Bytes were lost across a message boundary: framing is unknown until the stream
    /// ends, so nothing more is cut.
    desynced: bool,
}

#[derive(Debug)]
struct Partial {
    compressed: bool,
    size: u64,
    remaining: u64,
    data: Vec<u8>,
    truncated: bool,
    time_ns: u64,
}

impl MessageFramer {
    /// A framer for the client's (`from_client`) or the server's side of a stream.
    pub fn new(from_client: bool) -> Self {
        Self {
            from_client,
            prefix: [0; PREFIX_LEN],
            prefix_len: 0,
            current: None,
            desynced: false,
        }
    }

    /// Takes the next DATA payload bytes of this side; finished messages (each keeping
    /// at most `max_data` bytes) are appended to `out`.
    pub fn push(
        &mut self,
        mut data: &[u8],
        time_ns: u64,
        max_data: usize,
        out: &mut Vec<StreamMessage>,
    ) {
        if self.desynced {
            return;
        }
        while !data.is_empty() {
            if let Some(cur) = &mut self.current {
                let take = usize::try_from(cur.remaining).map_or(data.len(), |r| r.min(data.len()));
                let room = max_data.saturating_sub(cur.data.len()).min(take);
                if !cur.truncated {
                    cur.data.extend_from_slice(&data[..room]);
                }
                if room < take {
                    cur.truncated = true;
                }
                cur.remaining -= take as u64;
                data = &data[take..];
                if cur.remaining == 0 {
                    self.finish_current(out);
                }
                continue;
            }
            let need = PREFIX_LEN - self.prefix_len;
            let take = need.min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&data[..take]);
            self.prefix_len += take;
            data = &data[take..];
            if self.prefix_len == PREFIX_LEN {
                self.prefix_len = 0;
                let size = u64::from(u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]));
                self.current = Some(Partial {
                    compressed: self.prefix[0] & 1 != 0,
                    size,
                    remaining: size,
                    // The declared size is the peer's word: reserve no more than is kept.
                    data: Vec::with_capacity(
                        usize::try_from(size)
                            .unwrap_or(0)
                            .min(max_data)
                            .min(PREALLOC_MAX),
                    ),
                    truncated: false,
                    time_ns,
                });
                if size == 0 {
                    self.finish_current(out);
                }
            }
        }
    }

    /// `n` bytes of this side were not captured. Inside a message they only truncate
    /// it; across a boundary the framing is lost for the rest of the stream.
    pub fn lost(&mut self, n: u64) {
        match &mut self.current {
            Some(cur) if cur.remaining > n => {
                cur.remaining -= n;
                cur.truncated = true;
            }
            _ => {
                self.current = None;
                self.desynced = true;
            }
        }
    }

    /// The side ended: a message cut short is emitted as truncated.
    pub fn finish(&mut self, out: &mut Vec<StreamMessage>) {
        if let Some(cur) = &mut self.current {
            cur.truncated = true;
        }
        self.finish_current(out);
        self.prefix_len = 0;
    }

    /// Bytes held for the message in progress.
    pub fn buffered(&self) -> usize {
        self.current.as_ref().map_or(0, |c| c.data.len())
    }

    fn finish_current(&mut self, out: &mut Vec<StreamMessage>) {
        if let Some(cur) = self.current.take() {
            out.push(StreamMessage {
                from_client: self.from_client,
                time: Some(timestamp(cur.time_ns)),
                compressed: cur.compressed,
                data: Bytes::from(cur.data),
                size: cur.size,
                truncated: cur.truncated,
                kind: String::new(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(compressed: bool, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![u8::from(compressed)];
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn messages_split_at_every_offset() {
        let mut wire = frame(false, b"hello");
        wire.extend(frame(true, b""));
        wire.extend(frame(false, b"world!"));
        for cut in 0..=wire.len() {
            let mut f = MessageFramer::new(true);
            let mut out = Vec::new();
            f.push(&wire[..cut], 1, 1024, &mut out);
            f.push(&wire[cut..], 2, 1024, &mut out);
            let got: Vec<_> = out
                .iter()
                .map(|m| (m.compressed, m.data.to_vec()))
                .collect();
            assert_eq!(
                got,
                vec![
                    (false, b"hello".to_vec()),
                    (true, vec![]),
                    (false, b"world!".to_vec())
                ],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn caps_data_and_counts_size() {
        let mut f = MessageFramer::new(false);
        let mut out = Vec::new();
        f.push(&frame(false, &[7u8; 100]), 5, 10, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data.len(), 10);
        assert_eq!(out[0].size, 100);
        assert!(out[0].truncated);
        assert!(!out[0].from_client);
    }

    #[test]
    fn unfinished_message_is_truncated_on_finish() {
        let mut f = MessageFramer::new(true);
        let mut out = Vec::new();
        f.push(&frame(false, b"abcdef")[..8], 5, 100, &mut out);
        assert!(out.is_empty());
        f.finish(&mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].truncated);
        assert_eq!(&out[0].data[..], b"abc");
    }

    #[test]
    fn loss_inside_and_across_messages() {
        let mut f = MessageFramer::new(true);
        let mut out = Vec::new();
        f.push(&frame(false, b"abcdef")[..7], 5, 100, &mut out);
        f.lost(2);
        f.push(b"ef", 6, 100, &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].truncated);
        assert_eq!(out[0].size, 6);
        f.lost(50);
        f.push(&frame(false, b"x"), 7, 100, &mut out);
        assert_eq!(out.len(), 1);
    }
}
