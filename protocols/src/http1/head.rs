//! Finding and parsing an HTTP/1 message head (request line or status line, then header
//! fields) and the facts about it that decide how the body is framed.

use std::borrow::Cow;

use tapwire_proto::v1::Header;

use crate::pair::text;

/// Header fields parsed without touching the heap; heads with more fall back to a
/// larger array once.
const INLINE_HEADERS: usize = 64;
/// The most header fields one head may carry.
const MAX_HEADERS: usize = 1024;

/// Where the head ends, searched incrementally as bytes arrive.
#[derive(Debug, Default, Clone)]
pub(crate) struct HeadScanner {
    /// Bytes already searched (minus a few, since a terminator may span the boundary).
    scanned: usize,
    /// A line of the head starts with white space (obsolete line folding).
    folded: bool,
}

impl HeadScanner {
    /// Returns the head's length including its empty line, once `buf` holds all of it.
    pub(crate) fn find_end(&mut self, buf: &[u8]) -> Option<usize> {
        let from = self.scanned.saturating_sub(3);
        for nl in memchr::memchr_iter(b'\n', &buf[from..]) {
            let i = from + nl;
            match buf.get(i + 1) {
                Some(b'\n') => return Some(i + 2),
                Some(b'\r') => match buf.get(i + 2) {
                    Some(b'\n') => return Some(i + 3),
                    Some(_) => {}
                    None => {
                        self.scanned = i;
                        return None;
                    }
                },
                Some(b' ' | b'\t') => self.folded = true,
                Some(_) => {}
                None => {
                    self.scanned = i;
                    return None;
                }
            }
        }
        self.scanned = buf.len();
        None
    }

    /// True when the head found folds a header over several lines.
    pub(crate) fn folded(&self) -> bool {
        self.folded
    }
}

/// Number of empty lines (`\r\n` or `\n`) at the start of `buf`: senders may put some
/// between messages, and readers ignore them.
pub(crate) fn leading_empty_lines(buf: &[u8]) -> usize {
    let mut i = 0;
    loop {
        match buf.get(i..) {
            Some([b'\r', b'\n', ..]) => i += 2,
            Some([b'\n', ..]) => i += 1,
            _ => return i,
        }
    }
}

/// The facts of a head that decide framing and pairing.
#[derive(Debug, Clone, Default)]
pub(crate) struct HeadFacts {
    pub content_length: Option<u64>,
    /// Content-Length values that disagree or do not parse: framing is unknowable.
    pub bad_length: bool,
    /// Transfer-Encoding present; `chunked` says whether chunked is its final coding.
    pub transfer_encoding: bool,
    pub chunked: bool,
    pub connection_close: bool,
    pub connection_upgrade: bool,
    pub upgrade: Option<String>,
    pub expect_continue: bool,
    pub content_encoding: String,
    pub host: Option<String>,
}

/// A parsed request head.
#[derive(Debug, Clone)]
pub(crate) struct RequestHead {
    pub method: String,
    pub target: String,
    pub headers: Vec<Header>,
    pub facts: HeadFacts,
}

/// A parsed status line and header fields.
#[derive(Debug, Clone)]
pub(crate) struct ResponseHead {
    pub status: u16,
    pub headers: Vec<Header>,
    pub facts: HeadFacts,
}

/// Why a head could not be parsed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeadError {
    #[error("malformed head: {0}")]
    Syntax(#[from] httparse::Error),
    #[error("head ended early")]
    Incomplete,
    #[error("more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
}

fn parser_config() -> httparse::ParserConfig {
    let mut config = httparse::ParserConfig::default();
    // A capture tool records what peers actually send: accept what lenient servers
    // accept rather than drop the exchange.
    config
        .allow_multiple_spaces_in_request_line_delimiters(true)
        .allow_multiple_spaces_in_response_status_delimiters(true)
        .allow_spaces_after_header_name_in_responses(true)
        .ignore_invalid_headers_in_requests(true)
        .ignore_invalid_headers_in_responses(true);
    config
}

/// Replaces each obsolete line fold (a line break followed by white space) with one
/// space, as RFC 9112 §5.2 allows a recipient to do.
fn unfold(head: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.len());
    let mut i = 0;
    while i < head.len() {
        let fold_len = match &head[i..] {
            [b'\r', b'\n', b' ' | b'\t', ..] => 2,
            [b'\n', b' ' | b'\t', ..] => 1,
            _ => 0,
        };
        if fold_len > 0 {
            i += fold_len;
            while matches!(head.get(i), Some(b' ' | b'\t')) {
                i += 1;
            }
            out.push(b' ');
        } else {
            out.push(head[i]);
            i += 1;
        }
    }
    out
}

/// Runs `parse` with a stack array of header slots, retrying once with a large heap
/// array when the head has more fields.
fn with_header_slots<'b, T>(
    bytes: &'b [u8],
    parse: fn(&'b [u8], &mut [httparse::Header<'b>]) -> Result<T, HeadError>,
) -> Result<T, HeadError> {
    let mut inline = [httparse::EMPTY_HEADER; INLINE_HEADERS];
    match parse(bytes, &mut inline) {
        Err(HeadError::Syntax(httparse::Error::TooManyHeaders)) => {
            let mut slots = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
            match parse(bytes, &mut slots) {
                Err(HeadError::Syntax(httparse::Error::TooManyHeaders)) => {
                    Err(HeadError::TooManyHeaders)
                }
                other => other,
            }
        }
        other => other,
    }
}

fn unfolded(head: &[u8], folded: bool) -> Cow<'_, [u8]> {
    if folded {
        Cow::Owned(unfold(head))
    } else {
        Cow::Borrowed(head)
    }
}

/// Parses a complete request head (as delimited by [`HeadScanner`]).
pub(crate) fn parse_request(head: &[u8], folded: bool) -> Result<RequestHead, HeadError> {
    with_header_slots(&unfolded(head, folded), |bytes, slots| {
        let mut req = httparse::Request::new(slots);
        match parser_config().parse_request(&mut req, bytes)? {
            httparse::Status::Complete(_) => {}
            httparse::Status::Partial => return Err(HeadError::Incomplete),
        }
        let (headers, facts) = collect_headers(req.headers);
        Ok(RequestHead {
            method: req.method.unwrap_or_default().to_owned(),
            target: req.path.unwrap_or_default().to_owned(),
            headers,
            facts,
        })
    })
}

/// Parses a complete response head (as delimited by [`HeadScanner`]).
pub(crate) fn parse_response(head: &[u8], folded: bool) -> Result<ResponseHead, HeadError> {
    with_header_slots(&unfolded(head, folded), |bytes, slots| {
        let mut res = httparse::Response::new(slots);
        match parser_config().parse_response(&mut res, bytes)? {
            httparse::Status::Complete(_) => {}
            httparse::Status::Partial => return Err(HeadError::Incomplete),
        }
        let (headers, facts) = collect_headers(res.headers);
        Ok(ResponseHead {
            status: res.code.unwrap_or(0),
            headers,
            facts,
        })
    })
}

/// Copies the header fields out in order and extracts the framing facts.
fn collect_headers(raw: &[httparse::Header<'_>]) -> (Vec<Header>, HeadFacts) {
    let mut facts = HeadFacts::default();
    let mut headers = Vec::with_capacity(raw.len());
    for h in raw {
        let name = h.name.as_bytes();
        let value = trim(h.value);
        // The length picks the one name a field could be, so most fields cost one
        // comparison.
        let is = |known: &[u8]| name.eq_ignore_ascii_case(known);
        match name.len() {
            14 if is(b"content-length") => match parse_length(value) {
                Some(n) if facts.content_length.is_none_or(|seen| seen == n) => {
                    facts.content_length = Some(n);
                }
                _ => facts.bad_length = true,
            },
            17 if is(b"transfer-encoding") => {
                facts.transfer_encoding = true;
                // Only the final coding decides whether the body is chunked.
                let last = value
                    .rsplit(|b| *b == b',')
                    .next()
                    .map(trim)
                    .unwrap_or_default();
                facts.chunked = last.eq_ignore_ascii_case(b"chunked");
            }
            10 if is(b"connection") => {
                for token in value.split(|b| *b == b',').map(trim) {
                    facts.connection_close |= token.eq_ignore_ascii_case(b"close");
                    facts.connection_upgrade |= token.eq_ignore_ascii_case(b"upgrade");
                }
            }
            7 if is(b"upgrade") => {
                facts.upgrade = Some(String::from_utf8_lossy(value).to_ascii_lowercase());
            }
            6 if is(b"expect") => {
                facts.expect_continue = value.eq_ignore_ascii_case(b"100-continue");
            }
            16 if is(b"content-encoding") => {
                if !facts.content_encoding.is_empty() {
                    facts.content_encoding.push_str(", ");
                }
                facts.content_encoding.push_str(&text(value));
            }
            4 if is(b"host") && facts.host.is_none() => facts.host = Some(text(value)),
            _ => {}
        }
        headers.push(Header {
            name: h.name.to_owned(),
            value: text(value),
        });
    }
    if facts.content_encoding.eq_ignore_ascii_case("identity") {
        facts.content_encoding.clear();
    }
    (headers, facts)
}

/// A Content-Length value: digits only (a list of equal values is allowed).
fn parse_length(value: &[u8]) -> Option<u64> {
    let mut result: Option<u64> = None;
    for part in value.split(|b| *b == b',').map(trim) {
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = part.iter().try_fold(0u64, |acc, d| {
            acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })?;
        if result.is_some_and(|r| r != n) {
            return None;
        }
        result = Some(n);
    }
    result
}

fn trim(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &value[start..end]
}

/// True when `line` could be the start of a request line (`TOKEN SP target`), as far as
/// it goes: used to detect HTTP/1 and to find the next request after lost bytes.
pub(crate) fn is_request_line_start(line: &[u8]) -> bool {
    let method_len = line
        .iter()
        .position(|b| !(b.is_ascii_uppercase() || *b == b'-' || *b == b'_'))
        .unwrap_or(line.len());
    if method_len == 0 || method_len > 24 {
        return false;
    }
    match line.get(method_len) {
        None => true,
        Some(b' ') => line
            .get(method_len + 1)
            .is_none_or(|b| *b == b'/' || *b == b'*' || b.is_ascii_alphanumeric()),
        Some(_) => false,
    }
}

/// True when a complete first line (without its line break) is an HTTP/1 request line.
pub(crate) fn is_request_line(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    is_request_line_start(line) && (line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0"))
}

/// True when `bytes` start like an HTTP/1 status line (`HTTP/1.x NNN`), as far as they
/// go: `Some(false)` rules it out, `None` needs more bytes.
pub(crate) fn status_line_prefix(bytes: &[u8]) -> Option<bool> {
    const PREFIX: &[u8] = b"HTTP/1.";
    let n = bytes.len().min(PREFIX.len());
    if bytes[..n] != PREFIX[..n] {
        return Some(false);
    }
    let rest = bytes.get(PREFIX.len()..)?;
    let shape: [fn(u8) -> bool; 5] = [
        |b| b == b'0' || b == b'1',
        |b| b == b' ',
        |b| b.is_ascii_digit(),
        |b| b.is_ascii_digit(),
        |b| b.is_ascii_digit(),
    ];
    for (b, ok) in rest.iter().zip(shape) {
        if !ok(*b) {
            return Some(false);
        }
    }
    if rest.len() >= shape.len() {
        Some(true)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_head_end_incrementally() {
        let mut scanner = HeadScanner::default();
        let full = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY";
        for cut in 0..full.len() {
            let mut s = HeadScanner::default();
            let first = s.find_end(&full[..cut]);
            if first.is_none() {
                assert_eq!(s.find_end(full), Some(27));
            }
        }
        assert_eq!(scanner.find_end(b"GET / HTTP/1.1\n\nX"), Some(16));
    }

    #[test]
    fn parses_folded_headers() {
        let head = b"GET / HTTP/1.1\r\nX-Long: a\r\n  b\r\nHost: h\r\n\r\n";
        let mut scanner = HeadScanner::default();
        let end = scanner.find_end(head).expect("complete head");
        assert!(scanner.folded());
        let req = parse_request(&head[..end], scanner.folded()).expect("parses");
        assert_eq!(req.headers[0].value, "a b");
        assert_eq!(req.facts.host.as_deref(), Some("h"));
    }

    #[test]
    fn facts_of_a_response() {
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Encoding: br\r\nConnection: keep-alive, Upgrade\r\n\r\n";
        let res = parse_response(head, false).expect("parses");
        assert_eq!(res.status, 200);
        assert!(res.facts.chunked);
        assert!(res.facts.connection_upgrade);
        assert_eq!(res.facts.content_encoding, "br");
    }

    #[test]
    fn conflicting_lengths_are_flagged() {
        let head = b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
        assert!(parse_request(head, false).expect("parses").facts.bad_length);
        let head = b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n";
        let facts = parse_request(head, false).expect("parses").facts;
        assert_eq!(facts.content_length, Some(5));
        assert!(!facts.bad_length);
    }

    #[test]
    fn recognises_request_and_status_lines() {
        assert!(is_request_line(b"GET /x HTTP/1.1\r"));
        assert!(!is_request_line(b"EHLO mail.example\r"));
        assert!(is_request_line_start(b"PO"));
        assert!(!is_request_line_start(b"\x16\x03\x01"));
        assert_eq!(status_line_prefix(b"HTTP/1.1 200 OK"), Some(true));
        assert_eq!(status_line_prefix(b"HTTP/1"), None);
        assert_eq!(status_line_prefix(b"HTTP/2 200"), Some(false));
    }

    #[test]
    fn many_headers_fall_back_to_the_heap() {
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..200 {
            head.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        assert_eq!(
            parse_request(&head, false).expect("parses").headers.len(),
            200
        );
    }
}
