//! Recorded HTTP/1 byte streams through [`ConnectionParser`]: protocol detection, then
//! pairs, also when every message is split at every possible byte offset.

use proptest::prelude::*;
use tapwire_protocols::{Chunk, ConnectionParser, Direction, Limits, Pair, ProtocolParser, Role};

const E: Direction = Direction::Egress;
const I: Direction = Direction::Ingress;

/// `curl -v http://127.0.0.1:8000/ http://127.0.0.1:8000/missing` against
/// `python3 -m http.server` (one keep-alive connection), as the client side sees it.
const CURL_TO_PYTHON: &[(Direction, &[u8])] = &[
    (E, b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n"),
    (I, b"HTTP/1.0 200 OK\r\nServer: SimpleHTTP/0.6 Python/3.11.2\r\nDate: Sat, 28 Nov 2026 07:00:00 GMT\r\nContent-type: text/html; charset=utf-8\r\nContent-Length: 30\r\n\r\n"),
    (I, b"<html><body>list</body></html>"),
];

/// A chunked, gzip-encoded response with trailers, then a HEAD and a 304, pipelined.
const PIPELINED: &[(Direction, &[u8])] = &[
    (I, b"GET /feed HTTP/1.1\r\nHost: api\r\nAccept-Encoding: gzip\r\n\r\nHEAD /feed HTTP/1.1\r\nHost: api\r\n\r\nGET /feed HTTP/1.1\r\nHost: api\r\nIf-None-Match: \"v1\"\r\n\r\n"),
    (E, b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\na\r\n\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\r\n0\r\nX-Checksum: 99\r\n\r\n"),
    (E, b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 10\r\n\r\n"),
    (E, b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n"),
];

/// A WebSocket handshake, then a server text frame in the same chunk as the 101, a
/// masked client frame fragmented around a ping, and a close.
const WEBSOCKET: &[(Direction, &[u8])] = &[
    (
        I,
        b"GET /chat HTTP/1.1\r\nHost: ws\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    ),
    (
        E,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x05hello",
    ),
    // "Hel" (masked, not final), ping, "lo" (continuation, final), close.
    (
        I,
        b"\x01\x83\x01\x02\x03\x04\x49\x67\x6f\x89\x80\x00\x00\x00\x00\x80\x82\x05\x06\x07\x08\x69\x69\x88\x80\x00\x00\x00\x00",
    ),
    (E, b"\x88\x00"),
];

fn feed(parser: &mut ConnectionParser, chunks: &[(Direction, Vec<u8>)]) -> Vec<Pair> {
    let mut out = Vec::new();
    for (i, (direction, data)) in chunks.iter().enumerate() {
        let chunk = Chunk {
            direction: *direction,
            data,
            time_ns: 1_000 + i as u64,
            lost_before: 0,
            events_lost: false,
        };
        parser.on_chunk(&chunk, &mut out);
    }
    parser.on_close(1_000_000, &mut out);
    out
}

fn owned(chunks: &[(Direction, &[u8])]) -> Vec<(Direction, Vec<u8>)> {
    chunks.iter().map(|(d, b)| (*d, b.to_vec())).collect()
}

/// What the tests compare: everything but ids and times (which depend on the split).
fn summary(pairs: &[Pair]) -> Vec<String> {
    pairs
        .iter()
        .map(|p| {
            let req = p.request.as_ref();
            let res = p.response.as_ref();
            format!(
                "{} {} {} {} in={} complete={} req={:?}/{} res={:?}/{} enc={:?} trailers={:?} note={:?} messages={:?}",
                p.protocol,
                p.method,
                p.path,
                p.status,
                p.is_inbound,
                p.complete,
                req.map(|m| m.body.to_vec()),
                req.map_or(0, |m| m.headers.len()),
                res.map(|m| m.body.to_vec()),
                res.map_or(0, |m| m.headers.len()),
                res.map(|m| m.content_encoding.clone()),
                res.map(|m| m.trailers.iter().map(|h| format!("{}={}", h.name, h.value)).collect::<Vec<_>>()),
                p.note,
                p.messages
                    .iter()
                    .map(|m| (m.from_client, m.kind.clone(), m.data.to_vec()))
                    .collect::<Vec<_>>(),
            )
        })
        .collect()
}

#[test]
fn curl_to_python_http_server() {
    let pairs = feed(
        &mut ConnectionParser::new(Role::Client, Limits::default()),
        &owned(CURL_TO_PYTHON),
    );
    assert_eq!(pairs.len(), 1);
    let p = &pairs[0];
    assert_eq!(
        (
            p.method.as_str(),
            p.path.as_str(),
            p.status,
            p.authority.as_str()
        ),
        ("GET", "/", 200, "127.0.0.1:8000")
    );
    assert!(!p.is_inbound && p.complete);
    assert_eq!(
        &p.response.as_ref().expect("response").body[..],
        b"<html><body>list</body></html>"
    );
    assert_eq!(
        p.response.as_ref().expect("response").headers[2].name,
        "Content-type"
    );
}

#[test]
fn pipelined_gzip_head_304() {
    let pairs = feed(
        &mut ConnectionParser::new(Role::Server, Limits::default()),
        &owned(PIPELINED),
    );
    let s = summary(&pairs);
    assert_eq!(pairs.len(), 3, "{s:#?}");
    assert!(pairs.iter().all(|p| p.complete && p.is_inbound));
    let statuses: Vec<_> = pairs
        .iter()
        .map(|p| (p.method.as_str(), p.status))
        .collect();
    assert_eq!(statuses, [("GET", 200), ("HEAD", 200), ("GET", 304)]);
    let first = pairs[0].response.as_ref().expect("response");
    assert_eq!(first.content_encoding, "gzip");
    assert_eq!(first.body.len(), 10);
    assert_eq!(first.trailers[0].value, "99");
}

#[test]
fn not_http_is_passed_over() {
    let tls = [
        (E, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec()),
        (I, b"\x16\x03\x03\x00\x7a".to_vec()),
    ];
    let mut parser = ConnectionParser::new(Role::Client, Limits::default());
    assert!(feed(&mut parser, &tls).is_empty());
    assert_eq!(parser.protocol(), "opaque");
    let smtp = [
        (I, b"220 mail ESMTP\r\n".to_vec()),
        (E, b"EHLO me\r\n".to_vec()),
    ];
    let mut parser = ConnectionParser::new(Role::Client, Limits::default());
    assert!(feed(&mut parser, &smtp).is_empty());
}

#[test]
fn joined_mid_connection_starts_at_the_next_message() {
    // The agent started late: the first bytes seen are the end of a response body.
    let chunks = [
        (I, b"tail of an earlier body</html>".to_vec()),
        (E, b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n".to_vec()),
        (
            I,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        ),
    ];
    let mut parser = ConnectionParser::new(Role::Unknown, Limits::default());
    let pairs = feed(&mut parser, &chunks);
    assert_eq!(parser.protocol(), "http1");
    assert_eq!(pairs.len(), 1);
    assert_eq!(
        (pairs[0].path.as_str(), pairs[0].status, pairs[0].is_inbound),
        ("/next", 200, false)
    );
}

#[test]
fn joined_on_a_response() {
    let chunks = [
        (
            E,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        ),
        (I, b"GET /b HTTP/1.1\r\n\r\n".to_vec()),
        (E, b"HTTP/1.1 404 NF\r\nContent-Length: 0\r\n\r\n".to_vec()),
    ];
    let pairs = feed(
        &mut ConnectionParser::new(Role::Unknown, Limits::default()),
        &chunks,
    );
    let got: Vec<_> = pairs
        .iter()
        .map(|p| (p.path.as_str(), p.status, p.complete, p.is_inbound))
        .collect();
    assert_eq!(got, [("", 200, false, true), ("/b", 404, true, true)]);
}

/// Splits every chunk of `chunks` into pieces at the given cut points (offsets into the
/// concatenation of that direction's bytes), keeping capture order.
fn split_at(chunks: &[(Direction, &[u8])], cuts: &[usize]) -> Vec<(Direction, Vec<u8>)> {
    let mut out = Vec::new();
    let mut offset = 0;
    for (direction, data) in chunks {
        let mut start = 0;
        for cut in cuts
            .iter()
            .filter(|c| **c > offset && **c < offset + data.len())
        {
            out.push((*direction, data[start..cut - offset].to_vec()));
            start = cut - offset;
        }
        out.push((*direction, data[start..].to_vec()));
        offset += data.len();
    }
    out
}

#[test]
fn every_single_split_gives_the_same_pairs() {
    for (role, stream) in [
        (Role::Client, CURL_TO_PYTHON),
        (Role::Server, PIPELINED),
        (Role::Server, WEBSOCKET),
    ] {
        let expected = summary(&feed(
            &mut ConnectionParser::new(role, Limits::default()),
            &owned(stream),
        ));
        let total: usize = stream.iter().map(|(_, d)| d.len()).sum();
        for cut in 1..total {
            let pieces = split_at(stream, &[cut]);
            let got = summary(&feed(
                &mut ConnectionParser::new(role, Limits::default()),
                &pieces,
            ));
            assert_eq!(got, expected, "split at {cut}");
        }
    }
}

#[test]
fn byte_by_byte_gives_the_same_pairs() {
    for (role, stream) in [
        (Role::Client, CURL_TO_PYTHON),
        (Role::Server, PIPELINED),
        (Role::Server, WEBSOCKET),
    ] {
        let expected = summary(&feed(
            &mut ConnectionParser::new(role, Limits::default()),
            &owned(stream),
        ));
        let total: usize = stream.iter().map(|(_, d)| d.len()).sum();
        let cuts: Vec<usize> = (1..total).collect();
        let got = summary(&feed(
            &mut ConnectionParser::new(role, Limits::default()),
            &split_at(stream, &cuts),
        ));
        assert_eq!(got, expected);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any set of cut points gives the same pairs as the unsplit stream.
    #[test]
    fn any_splits_give_the_same_pairs(cuts in proptest::collection::vec(1usize..700, 0..40)) {
        let expected = summary(&feed(&mut ConnectionParser::new(Role::Server, Limits::default()), &owned(PIPELINED)));
        let mut cuts = cuts;
        cuts.sort_unstable();
        cuts.dedup();
        let got = summary(&feed(&mut ConnectionParser::new(Role::Server, Limits::default()), &split_at(PIPELINED, &cuts)));
        prop_assert_eq!(got, expected);
    }

    /// Arbitrary bytes never panic and never produce more pairs than request starts.
    #[test]
    fn arbitrary_bytes_never_panic(chunks in proptest::collection::vec((any::<bool>(), proptest::collection::vec(any::<u8>(), 0..64), 0u64..4), 0..30)) {
        let mut parser = ConnectionParser::new(Role::Unknown, Limits { max_buffered_bytes: 256, ..Limits::default() });
        let mut out = Vec::new();
        parser.on_chunk(&Chunk { direction: E, data: b"GET / HTTP/1.1\r\n", time_ns: 0, lost_before: 0, events_lost: false }, &mut out);
        for (i, (egress, data, lost)) in chunks.iter().enumerate() {
            let direction = if *egress { E } else { I };
            parser.on_chunk(&Chunk { direction, data, time_ns: i as u64, lost_before: *lost, events_lost: *lost == 3 }, &mut out);
        }
        parser.on_close(u64::MAX / 2, &mut out);
        prop_assert!(out.len() <= 1 + chunks.len() * 4);
    }
}

#[test]
fn h2c_prior_knowledge_and_upgrade_go_to_http2() {
    let mut parser = ConnectionParser::new(Role::Server, Limits::default());
    let mut out = Vec::new();
    parser.on_chunk(
        &Chunk {
            direction: I,
            data: b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            time_ns: 1,
            lost_before: 0,
            events_lost: false,
        },
        &mut out,
    );
    assert_eq!(parser.protocol(), "http2");

    let mut parser = ConnectionParser::new(Role::Server, Limits::default());
    let chunks = [
        (I, b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n".to_vec()),
        (E, b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00".to_vec()),
        (I, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00".to_vec()),
    ];
    for (direction, data) in &chunks {
        parser.on_chunk(
            &Chunk {
                direction: *direction,
                data,
                time_ns: 2,
                lost_before: 0,
                events_lost: false,
            },
            &mut out,
        );
    }
    assert_eq!(parser.protocol(), "http2");
    assert!(out.is_empty(), "the 101 is not a pair of its own");
    parser.on_close(3, &mut out);
    // Stream 1 carries the upgraded request; its response never came.
    let got: Vec<_> = out
        .iter()
        .map(|p| {
            (
                p.protocol.as_str(),
                p.method.as_str(),
                p.path.as_str(),
                p.stream_id,
                p.complete,
            )
        })
        .collect();
    assert_eq!(got, [("http2", "GET", "/", 1, false)]);
}

#[test]
fn websocket_messages_in_order() {
    let pairs = feed(
        &mut ConnectionParser::new(Role::Server, Limits::default()),
        &owned(WEBSOCKET),
    );
    assert_eq!(pairs.len(), 2);
    assert_eq!(
        (pairs[0].status, pairs[0].protocol.as_str()),
        (101, "http1")
    );
    let ws = &pairs[1];
    assert_eq!(
        (ws.protocol.as_str(), ws.path.as_str(), ws.is_inbound),
        ("websocket", "/chat", true)
    );
    let got: Vec<_> = ws
        .messages
        .iter()
        .map(|m| (m.from_client, m.kind.as_str(), m.data.to_vec()))
        .collect();
    assert_eq!(
        got,
        [
            (false, "text", b"hello".to_vec()),
            (true, "ping", Vec::new()),
            (true, "text", b"Hello".to_vec()),
            (true, "close", Vec::new()),
            (false, "close", Vec::new()),
        ]
    );
}
