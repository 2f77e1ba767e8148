//! Reading an HTTP/1 body as it arrives: by Content-Length, chunked (with trailers), or
//! until the connection closes.

use tapwire_proto::v1::Header;

use super::head::HeadScanner;
use crate::pair::{BodyBuffer, header};

/// The longest chunk-size line (with extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;
/// Trailer fields kept per message.
const MAX_TRAILERS: usize = 64;

/// How a body is delimited, decided by the head (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body at all.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the connection closes (responses only).
    UntilClose,
}

#[derive(Debug, Clone)]
enum State {
    Length {
        remaining: u64,
    },
    ChunkSize {
        line: Vec<u8>,
    },
    ChunkData {
        remaining: u64,
    },
    /// The line break after a chunk's data; counts the bytes of it already seen.
    ChunkDataEnd {
        seen_cr: bool,
    },
    Trailers {
        buf: Vec<u8>,
        scanner: HeadScanner,
    },
    UntilClose,
    Done,
}

/// Why a body cannot be followed any further: the stream is out of sync.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum BodyError {
    #[error("malformed chunk size line")]
    ChunkSize,
    #[error("chunk data not followed by a line break")]
    ChunkEnd,
    #[error("trailer section larger than the buffer cap")]
    TrailersTooLarge,
}

/// Follows one body's framing, copying its bytes into a [`BodyBuffer`].
#[derive(Debug, Clone)]
pub(crate) struct BodyReader {
    state: State,
}

impl BodyReader {
    /// A reader for a body framed as `framing`.
    pub(crate) fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length { remaining: n },
            Framing::Chunked => State::ChunkSize { line: Vec::new() },
            Framing::UntilClose => State::UntilClose,
        };
        Self { state }
    }

    /// True once the whole body (and its trailers) has been read.
    pub(crate) fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// True when only the connection's close ends this body.
    pub(crate) fn until_close(&self) -> bool {
        matches!(self.state, State::UntilClose)
    }

    /// Consumes body bytes from `input`; returns how many were part of this body. Stops
    /// at the body's end, so the rest of `input` belongs to the next message.
    pub(crate) fn feed(
        &mut self,
        mut input: &[u8],
        body: &mut BodyBuffer,
        trailers: &mut Vec<Header>,
        max_buffered: usize,
    ) -> Result<usize, BodyError> {
        let total = input.len();
        while !input.is_empty() {
            match &mut self.state {
                State::Done => break,
                State::UntilClose => {
                    body.push(input);
                    input = &[];
                }
                State::Length { remaining } | State::ChunkData { remaining } => {
                    let take = input
                        .len()
                        .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                    body.push(&input[..take]);
                    input = &input[take..];
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        self.state = match self.state {
                            State::Length { .. } => State::Done,
                            _ => State::ChunkDataEnd { seen_cr: false },
                        };
                    }
                }
                State::ChunkDataEnd { seen_cr } => match (input[0], *seen_cr) {
                    (b'\r', false) => {
                        *seen_cr = true;
                        input = &input[1..];
                    }
                    (b'\n', _) => {
                        self.state = State::ChunkSize { line: Vec::new() };
                        input = &input[1..];
                    }
                    _ => return Err(BodyError::ChunkEnd),
                },
                State::ChunkSize { line } => {
                    let (used, end) = match memchr::memchr(b'\n', input) {
                        Some(nl) => (nl + 1, true),
                        None => (input.len(), false),
                    };
                    if line.len() + used > MAX_CHUNK_LINE {
                        return Err(BodyError::ChunkSize);
                    }
                    line.extend_from_slice(&input[..used]);
                    input = &input[used..];
                    if end {
                        let size = parse_chunk_size(line).ok_or(BodyError::ChunkSize)?;
                        self.state = if size == 0 {
                            State::Trailers {
                                // The size line's break starts the trailer section, so an
                                // empty section reads as an empty line.
                                buf: b"\n".to_vec(),
                                scanner: HeadScanner::default(),
                            }
                        } else {
                            State::ChunkData { remaining: size }
                        };
                    }
                }
                State::Trailers { buf, scanner } => {
                    let before = buf.len();
                    let room = max_buffered.saturating_sub(before).max(2);
                    let take = input.len().min(room);
                    buf.extend_from_slice(&input[..take]);
                    match scanner.find_end(buf) {
                        Some(end) => {
                            parse_trailers(&buf[1..end], trailers);
                            input = &input[end.saturating_sub(before).min(take)..];
                            self.state = State::Done;
                        }
                        None if take < input.len() || buf.len() >= max_buffered.max(3) => {
                            return Err(BodyError::TrailersTooLarge);
                        }
                        None => input = &input[take..],
                    }
                }
            }
        }
        Ok(total - input.len())
    }

    /// Accounts for `lost` body bytes that were never captured. Returns false when the
    /// gap cannot be placed within this body (the stream is then out of sync).
    pub(crate) fn skip(&mut self, lost: u64, body: &mut BodyBuffer) -> bool {
        match &mut self.state {
            State::UntilClose => {
                body.skip(lost);
                true
            }
            State::Length { remaining } | State::ChunkData { remaining } if lost <= *remaining => {
                *remaining -= lost;
                body.skip(lost);
                if *remaining == 0 {
                    self.state = match self.state {
                        State::Length { .. } => State::Done,
                        _ => State::ChunkDataEnd { seen_cr: false },
                    };
                }
                true
            }
            _ => false,
        }
    }
}

/// The size in a chunk-size line (`HEX[;ext]\r\n`).
fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return None;
    }
    let rest = &line[digits..];
    // After the size: optional white space, extensions, then the line break.
    if !matches!(rest.first(), Some(b'\r' | b'\n' | b';' | b' ' | b'\t')) {
        return None;
    }
    line[..digits].iter().try_fold(0u64, |acc, b| {
        let d = (*b as char).to_digit(16)?;
        Some((acc << 4) | u64::from(d))
    })
}

/// Parses a complete trailer section (fields and the final empty line).
fn parse_trailers(section: &[u8], out: &mut Vec<Header>) {
    let mut slots = [httparse::EMPTY_HEADER; MAX_TRAILERS];
    // Malformed trailers are dropped: they come after the body, so framing is intact.
    if let Ok(httparse::Status::Complete((_, fields))) =
        httparse::parse_headers(section, &mut slots)
    {
        out.extend(fields.iter().map(|h| header(h.name.as_bytes(), h.value)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(framing: Framing, input: &[u8], step: usize) -> (Vec<u8>, Vec<Header>, usize) {
        let mut reader = BodyReader::new(framing);
        let mut body = BodyBuffer::new(1 << 20);
        let mut trailers = Vec::new();
        let mut used = 0;
        for piece in input.chunks(step.max(1)) {
            if reader.is_done() {
                break;
            }
            used += reader
                .feed(piece, &mut body, &mut trailers, 1 << 16)
                .expect("well-formed body");
        }
        assert!(reader.is_done());
        (body.kept().to_vec(), trailers, used)
    }

    #[test]
    fn chunked_with_trailers_at_every_step() {
        let wire = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-Sum: 1\r\nX-B: 2\r\n\r\nNEXT";
        for step in 1..wire.len() {
            let (body, trailers, used) = read_all(Framing::Chunked, wire, step);
            assert_eq!(body, b"Wikipedia");
            assert_eq!(trailers.len(), 2);
            assert_eq!(trailers[1].name, "X-B");
            assert_eq!(used, wire.len() - 4, "step {step}");
        }
    }

    #[test]
    fn chunked_without_trailers_stops_at_the_end() {
        let wire = b"3\r\nabc\r\n0\r\n\r\nGET";
        let (body, trailers, used) = read_all(Framing::Chunked, wire, wire.len());
        assert_eq!(body, b"abc");
        assert!(trailers.is_empty());
        assert_eq!(used, wire.len() - 3);
    }

    #[test]
    fn malformed_chunks_are_errors() {
        let mut reader = BodyReader::new(Framing::Chunked);
        let mut body = BodyBuffer::new(10);
        let mut trailers = Vec::new();
        assert_eq!(
            reader.feed(b"zz\r\n", &mut body, &mut trailers, 100),
            Err(BodyError::ChunkSize)
        );
        let mut reader = BodyReader::new(Framing::Chunked);
        assert_eq!(
            reader.feed(b"1\r\naXX", &mut body, &mut trailers, 100),
            Err(BodyError::ChunkEnd)
        );
    }

    #[test]
    fn gaps_inside_a_length_body_keep_sync() {
        let mut reader = BodyReader::new(Framing::Length(10));
        let mut body = BodyBuffer::new(100);
        let mut trailers = Vec::new();
        assert_eq!(reader.feed(b"abc", &mut body, &mut trailers, 100), Ok(3));
        assert!(reader.skip(4, &mut body));
        assert_eq!(reader.feed(b"defXX", &mut body, &mut trailers, 100), Ok(3));
        assert!(reader.is_done());
        assert_eq!(body.size(), 10);
        assert!(!BodyReader::new(Framing::Length(2)).skip(3, &mut body));
    }
}
