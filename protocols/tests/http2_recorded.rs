//! Real HTTP/2 and gRPC traffic, recorded through a relay on 127.0.0.1 by
//! `tests/data/h2_record.py`: nghttp, curl and h2load against nginx (h2c prior
//! knowledge), and a grpcio client against a grpcio server (`tests/data/grpc_demo.py`).

#[path = "http2_wire.rs"]
mod wire;

use std::io::Read;
use tapwire_protocols::http2::HttpTwoParser;
use tapwire_protocols::{Limits, Pair, Role};

use wire::{Peer, header, load_recording, run, run_cut, total_len};

fn parse(name: &str, role: Role) -> Vec<Pair> {
    let events = load_recording(name);
    let mut p = HttpTwoParser::new(role, Limits::default());
    run(&mut p, &events, role != Role::Server, Some(u64::MAX))
}

fn texts(p: &Pair) -> Vec<(bool, Vec<u8>)> {
    p.messages
        .iter()
        .map(|m| (m.from_client, m.data.to_vec()))
        .collect()
}

#[test]
fn nghttp_get_from_nginx() {
    let pairs = parse("h2_nghttp_get.bin", Role::Client);
    assert_eq!(pairs.len(), 1);
    let p = &pairs[0];
    assert_eq!((p.protocol.as_str(), p.method.as_str()), ("http2", "GET"));
    assert_eq!(
        (p.scheme.as_str(), p.authority.as_str()),
        ("http", "127.0.0.1:43721")
    );
    assert_eq!((p.path.as_str(), p.status), ("/index.html", 200));
    assert!(p.complete && !p.is_inbound && !p.partial_headers);
    let req = p.request.as_ref().unwrap();
    assert_eq!(header(&req.headers, "user-agent"), Some("nghttp2/1.52.0"));
    let res = p.response.as_ref().unwrap();
    assert_eq!(&res.body[..], b"hello from nginx\n");
    assert_eq!(header(&res.headers, "server"), Some("nginx/1.22.1"));
}

#[test]
fn curl_post_seen_from_the_server_side() {
    let pairs = parse("h2_curl_post.bin", Role::Server);
    assert_eq!(pairs.len(), 1);
    let p = &pairs[0];
    assert!(p.is_inbound && p.complete);
    assert_eq!(
        (p.method.as_str(), p.path.as_str(), p.status),
        ("POST", "/echo?k=v", 201)
    );
    assert_eq!(&p.request.as_ref().unwrap().body[..], b"name=tapwire&x=1");
    assert_eq!(&p.response.as_ref().unwrap().body[..], b"created\n");
}

#[test]
fn nghttp_get_split_at_every_byte() {
    let events = load_recording("h2_nghttp_get.bin");
    for cut in 0..=total_len(&events) {
        let mut p = HttpTwoParser::new(Role::Client, Limits::default());
        let pairs = run_cut(&mut p, &events, cut);
        assert_eq!(pairs.len(), 1, "cut {cut}");
        assert_eq!(
            &pairs[0].response.as_ref().unwrap().body[..],
            b"hello from nginx\n"
        );
    }
}

#[test]
fn h2load_300_requests_with_10_concurrent_streams() {
    let pairs = parse("h2_h2load_300.bin", Role::Client);
    assert_eq!(pairs.len(), 300);
    for p in &pairs {
        assert!(p.complete, "{p:?}");
        assert_eq!(
            (p.method.as_str(), p.path.as_str(), p.status),
            ("GET", "/index.html", 200)
        );
        assert_eq!(
            &p.response.as_ref().unwrap().body[..],
            b"hello from nginx\n"
        );
    }
    let mut ids: Vec<u32> = pairs.iter().map(|p| p.stream_id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 300);
}

#[test]
fn h2load_joined_midway_learns_the_tables() {
    let events = load_recording("h2_h2load_300.bin");
    // The agent starts after a third of the conversation, at a client write.
    let start = (events.len() / 3..events.len())
        .find(|&i| events[i].0 == Peer::Client)
        .unwrap();
    let mut p = HttpTwoParser::new(Role::Unknown, Limits::default());
    let pairs = run(&mut p, &events[start..], true, Some(u64::MAX));
    let complete: Vec<_> = pairs.iter().filter(|p| p.complete).collect();
    assert!(complete.len() >= 150, "{} complete", complete.len());
    // Every pair the agent saw whole is a GET of the page (static-table entries),
    // direction inferred from the pseudo-headers.
    for p in &complete {
        assert_eq!(
            (p.method.as_str(), p.path.as_str(), p.status),
            ("GET", "/index.html", 200)
        );
        assert_eq!(
            &p.response.as_ref().unwrap().body[..],
            b"hello from nginx\n"
        );
        assert!(!p.is_inbound);
        // h2load and nginx index every other field once, at the start, and refer to
        // it ever after: those stay placeholders, and the pair says so.
        assert!(p.partial_headers);
        let req = &p.request.as_ref().unwrap().headers;
        assert!(
            req.iter()
                .any(|h| h.name == tapwire_protocols::hpack::UNKNOWN_NAME)
        );
    }
}

#[test]
fn grpcio_unary_streaming_gzip_and_error() {
    let pairs = parse("grpc_calls.bin", Role::Client);
    let paths: Vec<_> = pairs.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/demo.Echo/Unary",
            "/demo.Echo/Unary",
            "/demo.Echo/ServerStream",
            "/demo.Echo/ClientStream",
            "/demo.Echo/Bidi",
            "/demo.Echo/Fail"
        ]
    );
    assert!(
        pairs
            .iter()
            .all(|p| p.protocol == "grpc" && p.complete && p.status == 200)
    );
    let m = |b: &[u8], c| (c, b.to_vec());
    assert_eq!(
        texts(&pairs[0]),
        [m(b"hello", true), m(b"echo:hello", false)]
    );
    assert_eq!(pairs[0].grpc_status, Some(0));
    // Gzip: the request message is compressed and recorded as sent.
    let gz = &pairs[1];
    assert_eq!(gz.request.as_ref().unwrap().content_encoding, "gzip");
    assert!(gz.messages[0].compressed);
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&gz.messages[0].data[..])
        .read_to_end(&mut plain)
        .unwrap();
    assert_eq!(plain, vec![b'z'; 300]);
    assert_eq!(
        texts(&pairs[2]),
        [
            m(b"q", true),
            m(b"part-0:q", false),
            m(b"part-1:q", false),
            m(b"part-2:q", false)
        ]
    );
    assert_eq!(
        texts(&pairs[3]),
        [
            m(b"a", true),
            m(b"b", true),
            m(b"c", true),
            m(b"a|b|c", false)
        ]
    );
    assert_eq!(
        texts(&pairs[4]),
        [
            m(b"x", true),
            m(b"y", true),
            m(b"re:x", false),
            m(b"re:y", false)
        ]
    );
    // Trailers-only error response.
    let fail = &pairs[5];
    assert_eq!(fail.grpc_status, Some(5));
    assert_eq!(fail.grpc_message, "no such item: 42 \u{2717}");
    assert_eq!(fail.response.as_ref().unwrap().body_size, 0);
}

#[test]
fn grpcio_200_unary_calls() {
    let pairs = parse("grpc_unary_200.bin", Role::Server);
    assert_eq!(pairs.len(), 200);
    for (i, p) in pairs.iter().enumerate() {
        assert!(p.complete && p.is_inbound);
        assert_eq!(p.grpc_status, Some(0));
        let want = format!("req-{i}");
        assert_eq!(p.messages[0].data[..], *want.as_bytes());
        assert_eq!(p.messages[1].data[..], *format!("echo:{want}").as_bytes());
    }
}

/// The agent's entry point: `ConnectionParser` detects HTTP/2 (from the preface, or from
/// frames when joined mid-way) and hands the connection to `HttpTwoParser`.
#[test]
fn connection_parser_detects_and_dispatches_http2() {
    use tapwire_protocols::ConnectionParser;
    let events = load_recording("h2_curl_post.bin");
    let mut p = ConnectionParser::new(Role::Client, Limits::default());
    let pairs = run(&mut p, &events, true, Some(u64::MAX));
    assert_eq!(pairs.len(), 1);
    assert_eq!(
        (pairs[0].protocol.as_str(), pairs[0].status),
        ("http2", 201)
    );

    let events = load_recording("h2_h2load_300.bin");
    let start = (events.len() / 2..events.len())
        .find(|&i| events[i].0 == Peer::Client)
        .unwrap();
    let mut p = ConnectionParser::new(Role::Unknown, Limits::default());
    let pairs = run(&mut p, &events[start..], true, Some(u64::MAX));
    let complete = pairs.iter().filter(|p| p.complete).count();
    assert!(complete >= 100, "{complete} complete of {}", pairs.len());
    assert!(pairs.iter().all(|p| p.protocol == "http2"));
}

/// grpcio's server writes its SETTINGS as soon as it accepts, so the capture starts with
/// a server frame, before the client's preface.
#[test]
fn connection_parser_accepts_the_server_preface_first() {
    use tapwire_protocols::ConnectionParser;
    let events = load_recording("grpc_calls.bin");
    assert!(tapwire_protocols::http2::is_server_preface(&events[0].1));
    let mut p = ConnectionParser::new(Role::Client, Limits::default());
    let pairs = run(&mut p, &events, true, Some(u64::MAX));
    assert_eq!(pairs.len(), 6);
    assert!(pairs.iter().all(|p| p.protocol == "grpc" && p.complete));
}
