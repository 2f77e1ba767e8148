//! One direction of an HTTP/1 connection: where it is in the message it is reading,
//! the unparsed bytes it holds, and how it finds its way back after lost bytes.

use super::body::BodyReader;
use super::head::{
    HeadScanner, is_request_line, is_request_line_start, leading_empty_lines, status_line_prefix,
};

/// Longest request or status line considered while resynchronising.
const MAX_START_LINE: usize = 16 * 1024;

/// What a direction is doing.
#[derive(Debug)]
pub(super) enum SideState {
    /// Between messages: the next bytes start a head.
    Head,
    /// Reading the body of the exchange numbered `seq`.
    Body { seq: u64, reader: BodyReader },
    /// Out of sync after lost or malformed bytes: looking for the next message start.
    Desync,
    /// Waiting for the response to decide whether the connection switches protocols
    /// (Upgrade, CONNECT); bytes are held, not parsed.
    Hold,
}

/// Which kind of message start a direction looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Carries {
    Requests,
    Responses,
}

/// The outcome of [`Side::take_head`].
pub(super) enum Took<T> {
    /// A head was parsed; `used` bytes of the input belonged to it.
    Head { value: T, used: usize },
    /// All input was consumed (held until the head ends).
    Buffered,
    /// The head grew past the buffer cap.
    TooLarge,
}

/// One direction's parsing state.
#[derive(Debug)]
pub(super) struct Side {
    pub carries: Carries,
    pub state: SideState,
    /// Unparsed bytes: an unfinished head, held bytes, or a resync candidate.
    pub buf: Vec<u8>,
    scanner: HeadScanner,
    /// When the first byte of the message being read arrived.
    pub msg_start_ns: Option<u64>,
    /// The next message follows lost bytes: its pairing is uncertain.
    pub after_gap: bool,
}

impl Side {
    pub(super) fn new(carries: Carries) -> Self {
        Self {
            carries,
            state: SideState::Head,
            buf: Vec::new(),
            scanner: HeadScanner::default(),
            msg_start_ns: None,
            after_gap: false,
        }
    }

    /// Forgets the message in progress and looks for the next one.
    pub(super) fn desync(&mut self) {
        self.state = SideState::Desync;
        self.buf.clear();
        self.scanner = HeadScanner::default();
        self.msg_start_ns = None;
        self.after_gap = true;
    }

    /// Reads a head from held bytes plus `input`, parsing it with `parse` once complete.
    pub(super) fn take_head<T>(
        &mut self,
        input: &[u8],
        max_buffered: usize,
        time_ns: u64,
        parse: impl FnOnce(&[u8], bool) -> T,
    ) -> Took<T> {
        if self.buf.is_empty() {
            // Fast path: the whole head is usually in one chunk; parse it in place.
            let skip = leading_empty_lines(input);
            let rest = &input[skip..];
            if rest.is_empty() {
                return Took::Buffered;
            }
            self.msg_start_ns.get_or_insert(time_ns);
            let mut scanner = HeadScanner::default();
            if let Some(end) = scanner.find_end(rest) {
                let value = parse(&rest[..end], scanner.folded());
                return Took::Head {
                    value,
                    used: skip + end,
                };
            }
            if rest.len() > max_buffered {
                return Took::TooLarge;
            }
            self.buf.extend_from_slice(rest);
            self.scanner = scanner;
            return Took::Buffered;
        }
        let before = self.buf.len();
        let take = input.len().min(max_buffered.saturating_sub(before));
        self.buf.extend_from_slice(&input[..take]);
        match self.scanner.find_end(&self.buf) {
            Some(end) => {
                let value = parse(&self.buf[..end], self.scanner.folded());
                self.buf.clear();
                self.scanner = HeadScanner::default();
                Took::Head {
                    value,
                    used: end.saturating_sub(before).min(take),
                }
            }
            None if take < input.len() || self.buf.len() >= max_buffered => Took::TooLarge,
            None => Took::Buffered,
        }
    }

    /// Prepares for the next head after one was consumed.
    pub(super) fn head_done(&mut self) {
        self.msg_start_ns = None;
    }

    /// Looks for the next message start in held bytes plus `input`. Returns the bytes
    /// from that start on (to be parsed as a new message) once found.
    pub(super) fn resync(&mut self, input: &[u8], max_buffered: usize) -> Option<Vec<u8>> {
        let keep_cap = max_buffered.clamp(64, MAX_START_LINE);
        self.buf.extend_from_slice(input);
        let mut start = 0;
        loop {
            let line = &self.buf[start..];
            let plausible = match self.carries {
                Carries::Requests => is_request_line_start(&line[..line.len().min(32)]),
                Carries::Responses => status_line_prefix(line) != Some(false),
            };
            if plausible {
                match memchr::memchr(b'\n', line) {
                    Some(nl) => {
                        let found = match self.carries {
                            Carries::Requests => is_request_line(&line[..nl]),
                            Carries::Responses => status_line_prefix(line) == Some(true),
                        };
                        if found {
                            let rest = self.buf.split_off(start);
                            self.buf.clear();
                            self.state = SideState::Head;
                            return Some(rest);
                        }
                    }
                    None if line.len() <= keep_cap => {
                        // A candidate whose line has not ended yet: keep it.
                        self.buf.drain(..start);
                        return None;
                    }
                    None => {}
                }
            }
            match memchr::memchr(b'\n', line) {
                Some(nl) => start += nl + 1,
                None => {
                    self.buf.clear();
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resync_finds_the_next_request_across_chunks() {
        let mut side = Side::new(Carries::Requests);
        side.desync();
        assert!(
            side.resync(b"tail of a body\r\nGET /next HT", 1024)
                .is_none()
        );
        let rest = side
            .resync(b"TP/1.1\r\nHost: x\r\n\r\n", 1024)
            .expect("found");
        assert!(rest.starts_with(b"GET /next HTTP/1.1\r\n"));
    }

    #[test]
    fn resync_finds_a_status_line() {
        let mut side = Side::new(Carries::Responses);
        side.desync();
        let rest = side
            .resync(
                b"xx HTTP/1.1 200 OK\r\nnot\nHTTP/1.1 404 Not Found\r\n\r\n",
                1024,
            )
            .expect("found");
        assert!(rest.starts_with(b"HTTP/1.1 404"));
    }

    #[test]
    fn resync_drops_what_cannot_start_a_message() {
        let mut side = Side::new(Carries::Requests);
        side.desync();
        assert!(side.resync(&[0u8; 5000], 1024).is_none());
        assert!(side.buf.is_empty());
    }
}
