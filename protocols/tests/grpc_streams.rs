//! gRPC over HTTP/2 through `HttpTwoParser`: unary, the three streaming kinds,
//! trailers-only responses, compression, and flushing long-lived streams.

#[path = "http2_wire.rs"]
mod wire;

use std::io::Write;

use tapwire_protocols::http2::HttpTwoParser;
use tapwire_protocols::{Limits, Pair, ProtocolParser, Role};
use wire::{Peer, Wire, chunk, run, run_cut, total_len};

fn call(path: &str) -> Vec<(&str, &str)> {
    vec![
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost:50051"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("grpc-timeout", "1S"),
    ]
}

const RESPONSE: &[(&str, &str)] = &[(":status", "200"), ("content-type", "application/grpc")];

fn msg(payload: &[u8], compressed: bool) -> Vec<u8> {
    let mut v = vec![u8::from(compressed)];
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn ok_trailers(w: &mut Wire, sid: u32) {
    w.headers(
        Peer::Server,
        sid,
        &[("grpc-status", "0"), ("grpc-message", "")],
        true,
    );
}

fn server() -> HttpTwoParser {
    HttpTwoParser::new(Role::Server, Limits::default())
}

fn texts(p: &Pair) -> Vec<(bool, String)> {
    p.messages
        .iter()
        .map(|m| (m.from_client, String::from_utf8_lossy(&m.data).into_owned()))
        .collect()
}

fn unary() -> Wire {
    let mut w = Wire::new(true);
    w.handshake();
    w.headers(
        Peer::Client,
        1,
        &call("/helloworld.Greeter/SayHello"),
        false,
    )
    .data(Peer::Client, 1, &msg(b"\n\x05world", false), true)
    .headers(Peer::Server, 1, RESPONSE, false)
    .data(Peer::Server, 1, &msg(b"\n\x0bHello world", false), false);
    ok_trailers(&mut w, 1);
    w
}

#[test]
fn unary_call() {
    let out = run(&mut server(), &unary().events, false, None);
    assert_eq!(out.len(), 1);
    let p = &out[0];
    assert_eq!(p.protocol, "grpc");
    assert_eq!(p.path, "/helloworld.Greeter/SayHello");
    assert_eq!(
        tapwire_protocols::grpc::parse_path(&p.path),
        Some(("helloworld.Greeter", "SayHello"))
    );
    assert_eq!((p.status, p.grpc_status), (200, Some(0)));
    assert!(p.complete && p.is_inbound);
    assert_eq!(
        texts(p),
        vec![
            (true, "\n\x05world".into()),
            (false, "\n\x0bHello world".into())
        ]
    );
    let m = &p.messages[0];
    assert_eq!((m.size, m.compressed, m.truncated), (7, false, false));
    assert!(m.time.is_some());
    // The raw DATA bytes, prefixes included, are the bodies.
    assert_eq!(
        p.request.as_ref().unwrap().body[..],
        msg(b"\n\x05world", false)[..]
    );
    let trailers = &p.response.as_ref().unwrap().trailers;
    assert_eq!(trailers[0].name, "grpc-status");
}

#[test]
fn unary_call_split_at_every_byte() {
    let w = unary();
    let whole = run(&mut server(), &w.events, false, None);
    for cut in 0..=total_len(&w.events) {
        // `run_cut` observes the client side; the pairs' contents are the same.
        let mut p = HttpTwoParser::new(Role::Client, Limits::default());
        let got = run_cut(&mut p, &w.events, cut);
        assert_eq!(got.len(), 1, "cut {cut}");
        assert_eq!(texts(&got[0]), texts(&whole[0]), "cut {cut}");
        assert_eq!(got[0].grpc_status, Some(0));
    }
}

#[test]
fn trailers_only_error_with_percent_encoded_message() {
    let mut w = Wire::new(true);
    w.handshake();
    w.headers(Peer::Client, 1, &call("/pkg.Users/Get"), false)
        .data(Peer::Client, 1, &msg(b"id=42", false), true)
        .headers(
            Peer::Server,
            1,
            &[
                (":status", "200"),
                ("content-type", "application/grpc"),
                ("grpc-status", "5"),
                ("grpc-message", "user%2042%20not%20found%20%E2%9C%97"),
            ],
            true,
        );
    let out = run(&mut server(), &w.events, false, None);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].grpc_status, Some(5));
    assert_eq!(out[0].grpc_message, "user 42 not found ✗");
    assert!(out[0].complete);
    assert_eq!(texts(&out[0]), vec![(true, "id=42".into())]);
}

#[test]
fn client_server_and_bidi_streaming() {
    let mut w = Wire::new(true);
    w.handshake();
    // Client streaming on 1: three messages, one of them split across frames.
    w.headers(Peer::Client, 1, &call("/route.Guide/RecordRoute"), false);
    let mut all = msg(b"p1", false);
    all.extend(msg(b"p2-longer", false));
    w.data(Peer::Client, 1, &all[..9], false)
        .data(Peer::Client, 1, &all[9..], false);
    w.data(Peer::Client, 1, &msg(b"p3", false), true);
    // Server streaming on 3, interleaved with stream 1's response.
    w.headers(Peer::Client, 3, &call("/route.Guide/ListFeatures"), false)
        .data(Peer::Client, 3, &msg(b"rect", false), true);
    w.headers(Peer::Server, 3, RESPONSE, false);
    w.headers(Peer::Server, 1, RESPONSE, false);
    for i in 0..4 {
        w.data(
            Peer::Server,
            3,
            &msg(format!("f{i}").as_bytes(), false),
            false,
        );
    }
    w.data(Peer::Server, 1, &msg(b"summary", false), false);
    ok_trailers(&mut w, 1);
    ok_trailers(&mut w, 3);
    // Bidi on 5: ping-pong.
    w.headers(Peer::Client, 5, &call("/route.Guide/RouteChat"), false);
    w.headers(Peer::Server, 5, RESPONSE, false);
    for i in 0..3 {
        w.data(
            Peer::Client,
            5,
            &msg(format!("c{i}").as_bytes(), false),
            i == 2,
        );
        w.data(
            Peer::Server,
            5,
            &msg(format!("s{i}").as_bytes(), false),
            false,
        );
    }
    ok_trailers(&mut w, 5);
    let out = run(&mut server(), &w.events, false, None);
    assert_eq!(out.len(), 3);
    let by = |sid| out.iter().find(|p| p.stream_id == sid).unwrap();
    assert_eq!(
        texts(by(1)),
        vec![
            (true, "p1".into()),
            (true, "p2-longer".into()),
            (true, "p3".into()),
            (false, "summary".into())
        ]
    );
    let s3: Vec<_> = texts(by(3)).into_iter().map(|(_, t)| t).collect();
    assert_eq!(s3, vec!["rect", "f0", "f1", "f2", "f3"]);
    let s5: Vec<_> = texts(by(5))
        .into_iter()
        .map(|(c, t)| format!("{c}:{t}"))
        .collect();
    assert_eq!(
        s5,
        vec![
            "true:c0", "false:s0", "true:c1", "false:s1", "true:c2", "false:s2"
        ]
    );
    assert!(out.iter().all(|p| p.complete && p.grpc_status == Some(0)));
}

#[test]
fn gzip_compressed_messages_keep_flag_and_encoding() {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&[b'a'; 500]).unwrap();
    let compressed = gz.finish().unwrap();
    let mut req = call("/pkg.Blob/Put");
    req.push(("grpc-encoding", "gzip"));
    req.push(("grpc-accept-encoding", "gzip,identity"));
    let mut w = Wire::new(true);
    w.handshake();
    w.headers(Peer::Client, 1, &req, false)
        .data(Peer::Client, 1, &msg(&compressed, true), true)
        .headers(Peer::Server, 1, RESPONSE, false)
        .data(Peer::Server, 1, &msg(b"", false), false);
    ok_trailers(&mut w, 1);
    let out = run(&mut server(), &w.events, false, None);
    let p = &out[0];
    assert_eq!(p.request.as_ref().unwrap().content_encoding, "gzip");
    assert_eq!(p.response.as_ref().unwrap().content_encoding, "");
    assert!(p.messages[0].compressed);
    assert_eq!(p.messages[0].data[..], compressed[..]);
    assert!(!p.messages[1].compressed);
    assert_eq!(p.messages[1].size, 0);
}

#[test]
fn long_stream_flushes_by_size_then_completes() {
    let limits = Limits {
        stream_flush_bytes: 100,
        ..Limits::default()
    };
    let mut w = Wire::new(true);
    w.handshake();
    w.headers(Peer::Client, 1, &call("/feed.Ticker/Watch"), false)
        .data(Peer::Client, 1, &msg(b"all", false), true)
        .headers(Peer::Server, 1, RESPONSE, false);
    for i in 0..10 {
        w.data(
            Peer::Server,
            1,
            &msg(format!("{i:030}").as_bytes(), false),
            false,
        );
    }
    ok_trailers(&mut w, 1);
    let mut p = HttpTwoParser::new(Role::Client, limits);
    let out = run(&mut p, &w.events, true, None);
    assert!(out.len() >= 3, "{}", out.len());
    let (flushed, last) = out.split_at(out.len() - 1);
    for f in flushed {
        assert_eq!(f.note, "stream flushed");
        assert!(!f.complete);
        assert_eq!(f.path, "/feed.Ticker/Watch");
        assert_eq!(f.stream_id, 1);
    }
    assert!(last[0].complete);
    assert_eq!(last[0].grpc_status, Some(0));
    let total: usize = out.iter().map(|p| p.messages.len()).sum();
    assert_eq!(total, 11);
    let firsts: Vec<_> = out
        .iter()
        .flat_map(|p| p.messages.iter())
        .map(|m| m.data.len())
        .collect();
    assert_eq!(firsts[0], 3);
    assert!(firsts[1..].iter().all(|&n| n == 30));
}

#[test]
fn long_stream_flushes_on_interval() {
    let limits = Limits {
        stream_flush_interval_ns: 1_000_000,
        ..Limits::default()
    };
    let mut w = Wire::new(true);
    w.handshake();
    w.headers(Peer::Client, 1, &call("/feed.Ticker/Watch"), false)
        .headers(Peer::Server, 1, RESPONSE, false)
        .data(Peer::Server, 1, &msg(b"tick-1", false), false);
    let mut p = HttpTwoParser::new(Role::Client, limits);
    let mut out = run(&mut p, &w.events, true, None);
    p.on_tick(500_000, &mut out);
    assert!(out.is_empty());
    p.on_tick(2_000_000, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].note, "stream flushed");
    assert_eq!(texts(&out[0]), vec![(false, "tick-1".into())]);
    // Nothing new: nothing flushed.
    p.on_tick(4_000_000, &mut out);
    assert_eq!(out.len(), 1);
    let mut more = Wire::new(true);
    more.data(Peer::Server, 1, &msg(b"tick-2", false), false);
    p.on_chunk(
        &chunk(
            wire::dir_of(Peer::Server, true),
            &more.events[0].1,
            4_500_000,
        ),
        &mut out,
    );
    p.on_close(5_000_000, &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].note, "connection closed");
    assert_eq!(texts(&out[1]), vec![(false, "tick-2".into())]);
}

#[test]
fn huge_message_is_counted_not_kept() {
    let limits = Limits {
        max_body_bytes: 64,
        ..Limits::default()
    };
    let mut w = Wire::new(true);
    w.handshake();
    w.headers(Peer::Client, 1, &call("/pkg.Blob/Get"), false)
        .data(Peer::Client, 1, &msg(b"", false), true)
        .headers(Peer::Server, 1, RESPONSE, false)
        .data(Peer::Server, 1, &msg(&[7u8; 100_000], false), false);
    ok_trailers(&mut w, 1);
    let mut p = HttpTwoParser::new(Role::Client, limits);
    let out = run(&mut p, &w.events, true, None);
    let m = &out[0].messages[1];
    assert_eq!((m.data.len(), m.size, m.truncated), (64, 100_000, true));
    assert!(out[0].truncated);
}
