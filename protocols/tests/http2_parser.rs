//! HTTP/2 streams through `HttpTwoParser`: every frame type, CONTINUATION, padding,
//! concurrency, resets, GOAWAY, trailers, push, mid-way joins, losses and limits.

#[path = "http2_wire.rs"]
mod wire;

use proptest::prelude::*;
use tapwire_protocols::http2::{HttpTwoParser, looks_like_frames};
use tapwire_protocols::{Chunk, Direction, Limits, Pair, ProtocolParser, Role};
use wire::{Peer, Wire, chunk, header, run, run_cut, total_len};

const REQ: &[(&str, &str)] = &[
    (":method", "POST"),
    (":scheme", "https"),
    (":authority", "api.example.com"),
    (":path", "/v1/items?limit=5"),
    ("content-type", "application/json"),
    ("user-agent", "tapwire-test/1"),
];

fn resp(status: &str) -> Vec<(&str, &str)> {
    vec![
        (":status", status),
        ("content-type", "application/json"),
        ("server", "t"),
    ]
}

fn client() -> HttpTwoParser {
    HttpTwoParser::new(Role::Client, Limits::default())
}

/// One POST with a body and a response with a body on stream `sid`.
fn exchange(w: &mut Wire, sid: u32, req_body: &[u8], resp_body: &[u8]) {
    w.headers(Peer::Client, sid, REQ, false)
        .data(Peer::Client, sid, req_body, true)
        .headers(Peer::Server, sid, &resp("201"), false)
        .data(Peer::Server, sid, resp_body, true);
}

/// The fields a pair is judged by (not its random id).
fn key(p: &Pair) -> String {
    format!(
        "{} {} {} {} {} {} {} st={} c={} p={} req={:?} resp={:?} note={} msgs={}",
        p.stream_id,
        p.protocol,
        p.method,
        p.scheme,
        p.authority,
        p.path,
        p.is_inbound,
        p.status,
        p.complete,
        p.partial_headers,
        p.request
            .as_ref()
            .map(|m| (&m.headers, &m.body, m.body_size, &m.trailers)),
        p.response
            .as_ref()
            .map(|m| (&m.headers, &m.body, m.body_size, &m.trailers)),
        p.note,
        p.messages.len(),
    )
}

#[test]
fn post_with_bodies_becomes_one_complete_pair() {
    let mut w = Wire::new(true);
    w.handshake();
    exchange(&mut w, 1, br#"{"name":"x"}"#, br#"{"id":7}"#);
    let pairs = run(&mut client(), &w.events, true, None);
    assert_eq!(pairs.len(), 1);
    let p = &pairs[0];
    assert_eq!(p.protocol, "http2");
    assert_eq!((p.method.as_str(), p.scheme.as_str()), ("POST", "https"));
    assert_eq!(
        (p.authority.as_str(), p.path.as_str()),
        ("api.example.com", "/v1/items?limit=5")
    );
    assert_eq!(p.status, 201);
    assert_eq!(p.stream_id, 1);
    assert!(p.complete && !p.is_inbound && !p.partial_headers && !p.truncated);
    let req = p.request.as_ref().unwrap();
    assert_eq!(&req.body[..], br#"{"name":"x"}"#);
    assert_eq!(req.body_size, 12);
    assert_eq!(header(&req.headers, "user-agent"), Some("tapwire-test/1"));
    assert_eq!(req.headers[0].name, ":method");
    let res = p.response.as_ref().unwrap();
    assert_eq!(&res.body[..], br#"{"id":7}"#);
    assert_eq!(header(&res.headers, "server"), Some("t"));
    // Times: request start (its HEADERS), request end, response start, end.
    let ts = |t: &Option<tapwire_proto::Timestamp>| t.as_ref().map(|t| t.nanos);
    assert_eq!(ts(&p.start_time), Some(5000));
    assert_eq!(ts(&p.request_end_time), Some(6000));
    assert_eq!(ts(&p.response_start_time), Some(7000));
    assert_eq!(ts(&p.end_time), Some(8000));
    assert_eq!(p.duration_ns, 3000);
    assert_eq!(uuid_version(&p.id), 7);
}

fn uuid_version(id: &str) -> u32 {
    id.chars().nth(14).and_then(|c| c.to_digit(16)).unwrap_or(0)
}

#[test]
fn every_frame_type_padding_continuation_and_unknown_frames() {
    let mut w = Wire::new(false);
    w.handshake().noise(Peer::Client, 1);
    w.headers_split(Peer::Client, 1, REQ, false, 3);
    w.noise(Peer::Server, 1);
    w.data_padded(Peer::Client, 1, b"padded-body", true, 7);
    w.headers_padded(Peer::Server, 1, &resp("200"), false, 4);
    w.data_padded(Peer::Server, 1, b"", false, 0);
    w.data_padded(Peer::Server, 1, b"resp", true, 255);
    w.goaway(Peer::Server, 1, 0);
    let pairs = run(&mut client(), &w.events, true, Some(99_000));
    assert_eq!(pairs.len(), 1, "{pairs:#?}");
    let p = &pairs[0];
    assert!(p.complete);
    assert_eq!(p.path, "/v1/items?limit=5");
    assert_eq!(&p.request.as_ref().unwrap().body[..], b"padded-body");
    assert_eq!(&p.response.as_ref().unwrap().body[..], b"resp");
    assert_eq!(p.status, 200);
}

#[test]
fn continuation_interrupted_by_another_frame_marks_partial_and_relearns() {
    let mut w = Wire::new(false);
    w.handshake();
    let block = w.block(Peer::Client, REQ);
    let (a, _) = block.split_at(4);
    // HEADERS without END_HEADERS, then a PING: the block is lost.
    w.frame(Peer::Client, 0x1, 0, 1, a);
    w.frame(Peer::Client, 0x6, 0, 0, &[0; 8]);
    w.headers(Peer::Server, 1, &resp("200"), true);
    // The next stream's literals teach the table again.
    exchange(&mut w, 3, b"", b"");
    let pairs = run(&mut client(), &w.events, true, None);
    assert_eq!(pairs.len(), 2);
    assert_eq!(pairs[0].stream_id, 1);
    assert!(!pairs[0].complete);
    assert_eq!(pairs[1].stream_id, 3);
    assert_eq!(pairs[1].status, 201);
}

#[test]
fn many_concurrent_streams_interleaved() {
    let mut w = Wire::new(true);
    w.handshake();
    let ids: Vec<u32> = (0..60).map(|i| 1 + 2 * i).collect();
    for &sid in &ids {
        let path = format!("/item/{sid}");
        w.headers(
            Peer::Client,
            sid,
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":authority", "h"),
                (":path", &path),
            ],
            true,
        );
    }
    for &sid in ids.iter().rev() {
        w.headers(Peer::Server, sid, &resp("200"), false);
    }
    for round in 0..3 {
        for &sid in &ids {
            let body = format!("{sid}-{round};");
            w.data(Peer::Server, sid, body.as_bytes(), round == 2);
        }
    }
    let pairs = run(&mut client(), &w.events, true, None);
    assert_eq!(pairs.len(), ids.len());
    for p in &pairs {
        assert!(p.complete);
        assert_eq!(p.path, format!("/item/{}", p.stream_id));
        let body = String::from_utf8(p.response.as_ref().unwrap().body.to_vec()).unwrap();
        assert_eq!(body, format!("{0}-0;{0}-1;{0}-2;", p.stream_id));
    }
}

#[test]
fn rst_stream_and_goaway_close_streams_incomplete() {
    let mut w = Wire::new(true);
    w.handshake();
    w.headers(Peer::Client, 1, REQ, false);
    w.headers(Peer::Client, 3, REQ, true);
    w.headers(Peer::Client, 5, REQ, true);
    w.rst(Peer::Client, 1, 0x8);
    w.goaway(Peer::Server, 3, 0);
    w.headers(Peer::Server, 3, &resp("200"), true);
    let pairs = run(&mut client(), &w.events, true, None);
    let notes: Vec<_> = pairs
        .iter()
        .map(|p| (p.stream_id, p.complete, p.note.as_str()))
        .collect();
    assert_eq!(
        notes,
        vec![(1, false, "reset"), (5, false, "goaway"), (3, true, "")]
    );
    // Frames on a closed stream open nothing.
    let mut p = client();
    let mut out = run(&mut p, &w.events, true, None);
    let mut again = Wire::new(true);
    again.data(Peer::Client, 1, b"late", true);
    p.on_chunk(&chunk(Direction::Egress, &again.events[0].1, 1), &mut out);
    assert_eq!(p.open_streams(), 0);
}

#[test]
fn trailers_on_both_sides() {
    let mut w = Wire::new(true);
    w.handshake();
    w.headers(Peer::Client, 1, REQ, false)
        .data(Peer::Client, 1, b"abc", false)
        .headers(Peer::Client, 1, &[("x-checksum", "900150983cd24fb0")], true)
        .headers(Peer::Server, 1, &resp("200"), false)
        .data(Peer::Server, 1, b"ok", false)
        .headers(Peer::Server, 1, &[("x-served-by", "edge-1")], true);
    let pairs = run(&mut client(), &w.events, true, None);
    assert_eq!(pairs.len(), 1);
    let p = &pairs[0];
    assert!(p.complete);
    let req = p.request.as_ref().unwrap();
    assert_eq!(
        header(&req.trailers, "x-checksum"),
        Some("900150983cd24fb0")
    );
    assert_eq!(header(&req.headers, "x-checksum"), None);
    let res = p.response.as_ref().unwrap();
    assert_eq!(header(&res.trailers, "x-served-by"), Some("edge-1"));
    assert_eq!(&res.body[..], b"ok");
}

#[test]
fn informational_response_is_skipped() {
    let mut w = Wire::new(true);
    w.handshake();
    w.headers(
        Peer::Client,
        1,
        &[
            (":method", "PUT"),
            (":path", "/up"),
            ("expect", "100-continue"),
        ],
        false,
    )
    .headers(Peer::Server, 1, &[(":status", "100")], false)
    .data(Peer::Client, 1, b"payload", true)
    .headers(Peer::Server, 1, &resp("204"), true);
    let pairs = run(&mut client(), &w.events, true, None);
    assert_eq!(pairs.len(), 1);
    assert_eq!(pairs[0].status, 204);
    assert!(pairs[0].complete);
}

#[test]
fn server_push_becomes_its_own_pair() {
    let mut w = Wire::new(true);
    w.handshake();
    w.headers(
        Peer::Client,
        1,
        &[
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", "h"),
            (":path", "/"),
        ],
        true,
    );
    w.push_promise(
        1,
        2,
        &[
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", "h"),
            (":path", "/style.css"),
        ],
    );
    w.headers(Peer::Server, 1, &resp("200"), false)
        .data(Peer::Server, 1, b"<html>", true);
    w.headers(
        Peer::Server,
        2,
        &[(":status", "200"), ("content-type", "text/css")],
        false,
    )
    .data(Peer::Server, 2, b"body{}", true);
    let pairs = run(&mut client(), &w.events, true, None);
    assert_eq!(pairs.len(), 2);
    assert_eq!(
        (pairs[1].stream_id, pairs[1].path.as_str()),
        (2, "/style.css")
    );
    assert!(pairs[1].complete);
    assert!(!pairs[1].is_inbound);
    assert_eq!(&pairs[1].response.as_ref().unwrap().body[..], b"body{}");
}

fn mixed_conversation() -> Wire {
    let mut w = Wire::new(true);
    w.handshake().noise(Peer::Client, 1);
    w.headers_split(Peer::Client, 1, REQ, false, 5);
    w.headers(
        Peer::Client,
        3,
        &[(":method", "GET"), (":path", "/b")],
        true,
    );
    w.data_padded(Peer::Client, 1, b"first body", true, 3);
    w.headers(Peer::Server, 3, &resp("404"), true);
    w.headers_padded(Peer::Server, 1, &resp("200"), false, 2);
    w.data(Peer::Server, 1, b"second body", false);
    w.headers(Peer::Server, 1, &[("grpc-status", "0")], true);
    w
}

#[test]
fn every_split_point_gives_the_same_pairs() {
    let w = mixed_conversation();
    let whole: Vec<String> = run(&mut client(), &w.events, true, None)
        .iter()
        .map(key)
        .collect();
    assert_eq!(whole.len(), 2);
    for cut in 0..=total_len(&w.events) {
        let got: Vec<String> = run_cut(&mut client(), &w.events, cut)
            .iter()
            .map(key)
            .collect();
        assert_eq!(got, whole, "split at byte {cut}");
    }
}

#[test]
fn one_byte_chunks_give_the_same_pairs() {
    let w = mixed_conversation();
    let whole: Vec<String> = run(&mut client(), &w.events, true, None)
        .iter()
        .map(key)
        .collect();
    let mut p = client();
    let mut out = Vec::new();
    for (i, (peer, bytes)) in w.events.iter().enumerate() {
        for b in bytes.chunks(1) {
            p.on_chunk(
                &chunk(wire::dir_of(*peer, true), b, (i as u64 + 1) * 1000),
                &mut out,
            );
        }
    }
    assert_eq!(out.iter().map(key).collect::<Vec<_>>(), whole);
}

#[test]
fn joined_midway_marks_partial_headers_and_learns() {
    let mut w = Wire::new(true);
    w.handshake();
    exchange(&mut w, 1, b"a", b"b");
    let before = w.events.len();
    // The agent starts here: stream 3 reuses table entries from stream 1 (partial),
    // and adds a new one that stream 5 then reuses (decoded).
    w.headers(
        Peer::Client,
        3,
        &[
            (":method", "POST"),
            (":scheme", "https"),
            (":authority", "api.example.com"),
            (":path", "/v1/items?limit=5"),
            ("x-new", "1"),
        ],
        true,
    );
    w.headers(Peer::Server, 3, &resp("201"), true);
    w.headers(
        Peer::Client,
        5,
        &[(":method", "GET"), (":path", "/c"), ("x-new", "1")],
        true,
    );
    w.headers(Peer::Server, 5, &[(":status", "200")], true);
    let mut p = HttpTwoParser::new(Role::Unknown, Limits::default());
    let pairs = run(&mut p, &w.events[before..], false, None);
    assert_eq!(pairs.len(), 2, "{pairs:#?}");
    let (a, b) = (&pairs[0], &pairs[1]);
    assert_eq!(a.stream_id, 3);
    assert!(a.partial_headers);
    assert_eq!(a.method, "POST");
    // ":status: 201" was indexed by stream 1's response, before the join.
    assert_eq!(a.status, 0);
    let res = a.response.as_ref().unwrap();
    assert_eq!(res.headers[0].name, tapwire_protocols::hpack::UNKNOWN_NAME);
    // The observed process (Egress = server here) served the requests.
    assert!(a.is_inbound);
    assert!(!b.partial_headers, "{b:#?}");
    assert_eq!(b.path, "/c");
    assert_eq!(
        header(&b.request.as_ref().unwrap().headers, "x-new"),
        Some("1")
    );
}

#[test]
fn joined_midway_inside_a_data_frame_resynchronises() {
    let mut w = Wire::new(true);
    w.handshake();
    exchange(&mut w, 1, b"", &[b'z'; 300]);
    exchange(&mut w, 3, b"q", b"r");
    let server_all = w.bytes_of(Peer::Server);
    assert!(looks_like_frames(&server_all));
    let mut p = HttpTwoParser::new(Role::Client, Limits::default());
    let mut out = Vec::new();
    // Start in the middle of stream 1's response DATA.
    let last = w.events.len() - 4;
    for (i, (peer, bytes)) in w.events.iter().enumerate().skip(last - 1) {
        let data = if i == last - 1 {
            &bytes[100..]
        } else {
            &bytes[..]
        };
        p.on_chunk(&chunk(wire::dir_of(*peer, true), data, i as u64), &mut out);
    }
    let s3: Vec<_> = out.iter().filter(|p| p.stream_id == 3).collect();
    assert_eq!(s3.len(), 1, "{out:#?}");
    assert_eq!(&s3[0].response.as_ref().unwrap().body[..], b"r");
    assert!(s3[0].partial_headers);
}

#[test]
fn lost_bytes_inside_a_data_frame_keep_framing() {
    let mut w = Wire::new(true);
    w.handshake();
    exchange(&mut w, 1, b"", &[b'x'; 1000]);
    exchange(&mut w, 3, b"", b"fine");
    let mut p = client();
    let mut out = Vec::new();
    for (i, (peer, bytes)) in w.events.iter().enumerate() {
        let dir = wire::dir_of(*peer, true);
        if i == 7 {
            // Stream 1's response DATA: only the first 100 and last 100 bytes captured.
            p.on_chunk(&chunk(dir, &bytes[..109], 1), &mut out);
            let mut c = chunk(dir, &bytes[909..], 2);
            c.lost_before = 800;
            p.on_chunk(&c, &mut out);
        } else {
            p.on_chunk(&chunk(dir, bytes, 3), &mut out);
        }
    }
    assert_eq!(out.len(), 2);
    let r = out[0].response.as_ref().unwrap();
    assert_eq!((r.body.len(), r.body_size), (100, 1000));
    assert!(out[0].truncated && !out[0].complete);
    assert_eq!(out[0].bytes_lost, 800);
    assert!(out[1].complete);
    assert_eq!(&out[1].response.as_ref().unwrap().body[..], b"fine");
}

#[test]
fn lost_events_resynchronise_and_flag_streams() {
    let mut w = Wire::new(true);
    w.handshake();
    w.headers(Peer::Client, 1, REQ, true);
    let mid = w.events.len();
    w.headers(Peer::Server, 1, &resp("200"), false);
    w.data(Peer::Server, 1, b"xyz", true);
    exchange(&mut w, 3, b"", b"after");
    let mut p = client();
    let mut out = Vec::new();
    for (i, (peer, bytes)) in w.events.iter().enumerate() {
        if i == mid {
            continue; // lost
        }
        let mut c = chunk(wire::dir_of(*peer, true), bytes, i as u64);
        c.events_lost = i == mid + 1;
        p.on_chunk(&c, &mut out);
    }
    p.on_close(1_000, &mut out);
    let s1 = out.iter().find(|p| p.stream_id == 1).unwrap();
    assert!(s1.lost_events && !s1.complete);
    let s3 = out.iter().find(|p| p.stream_id == 3).unwrap();
    assert_eq!(&s3.response.as_ref().unwrap().body[..], b"after");
}

#[test]
fn limits_bound_streams_bodies_and_frames() {
    let limits = Limits {
        max_streams: 4,
        max_body_bytes: 10,
        max_buffered_bytes: 4096,
        ..Limits::default()
    };
    let mut w = Wire::new(true);
    w.handshake();
    for sid in (1..=19).step_by(2) {
        w.headers(Peer::Client, sid, REQ, true);
    }
    w.headers(Peer::Server, 19, &resp("200"), false)
        .data(Peer::Server, 19, &[b'y'; 100], true);
    // A HEADERS frame larger than the buffer cap is skipped, not buffered.
    w.frame(Peer::Client, 0x1, 0x5, 21, &vec![0x82; 10_000]);
    exchange(&mut w, 23, b"", b"z");
    let mut p = HttpTwoParser::new(Role::Client, limits);
    let out = run(&mut p, &w.events, true, None);
    let evicted = out.iter().filter(|p| p.note == "too many streams").count();
    assert_eq!(evicted, 6);
    let s19 = out.iter().find(|p| p.stream_id == 19).unwrap();
    let r = s19.response.as_ref().unwrap();
    assert_eq!(
        (r.body.len(), r.body_size, r.body_truncated),
        (10, 100, true)
    );
    assert!(s19.truncated);
    assert!(out.iter().any(|p| p.stream_id == 23 && p.status == 201));
    assert!(p.open_streams() <= 4);
}

#[test]
fn idle_streams_expire_and_close_emits_the_rest() {
    let limits = Limits {
        idle_timeout_ns: 1_000_000,
        ..Limits::default()
    };
    let mut w = Wire::new(true);
    w.handshake();
    w.headers(Peer::Client, 1, REQ, true);
    let mut p = HttpTwoParser::new(Role::Server, limits);
    let mut out = run(&mut p, &w.events, false, None);
    p.on_tick(500_000, &mut out);
    assert!(out.is_empty());
    p.on_tick(2_000_000, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].note, "idle");
    assert!(out[0].is_inbound);
    let mut w = Wire::new(true);
    w.handshake().headers(Peer::Client, 1, REQ, false);
    let mut p = HttpTwoParser::new(Role::Server, Limits::default());
    let out = run(&mut p, &w.events, false, Some(10_000));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].note, "connection closed");
    assert!(!out[0].complete);
}

#[test]
fn h2c_upgrade_answers_the_upgraded_request_on_stream_1() {
    let mut w = Wire::new(true);
    // After the 101, the server's SETTINGS may come before the client preface.
    w.frame(Peer::Server, 0x4, 0, 0, &[]);
    w.headers(Peer::Server, 1, &resp("200"), false);
    w.handshake();
    w.data(Peer::Server, 1, b"upgraded!", true);
    exchange(&mut w, 3, b"", b"next");
    let mut p = HttpTwoParser::after_upgrade(Role::Client, Limits::default());
    p.set_upgraded_request("GET", "/", "localhost:8080", vec![], 1);
    let out = run(&mut p, &w.events, true, None);
    assert_eq!(out.len(), 2, "{out:#?}");
    assert_eq!(
        (out[0].stream_id, out[0].method.as_str(), out[0].status),
        (1, "GET", 200)
    );
    assert!(out[0].complete);
    assert_eq!(&out[0].response.as_ref().unwrap().body[..], b"upgraded!");
    assert_eq!(out[1].stream_id, 3);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn interleaved_streams_in_any_order_and_chunking(
        order in Just((0..40usize).collect::<Vec<_>>()).prop_shuffle(),
        cuts in prop::collection::vec(1usize..64, 1..40),
    ) {
        // 10 streams, 4 steps each; the shuffle is applied per step kind so each
        // stream's own steps stay in order.
        let mut w = Wire::new(true);
        w.handshake();
        let mut next_step = [0usize; 10];
        let mut steps = Vec::new();
        for o in order {
            let s = o % 10;
            steps.push((s, next_step[s]));
            next_step[s] += 1;
        }
        for (s, step) in steps {
            let sid = 1 + 2 * s as u32;
            let path = format!("/s/{sid}");
            match step {
                0 => { w.headers(Peer::Client, sid, &[(":method", "PUT"), (":path", &path)], false); }
                1 => { w.data(Peer::Client, sid, path.as_bytes(), true); }
                2 => { w.headers(Peer::Server, sid, &[(":status", "200")], false); }
                _ => { w.data(Peer::Server, sid, format!("r{sid}").as_bytes(), true); }
            }
        }
        let mut p = client();
        let mut out = Vec::new();
        let mut cut = cuts.iter().cycle();
        for (peer, bytes) in &w.events {
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let n = (*cut.next().unwrap()).min(rest.len());
                p.on_chunk(&chunk(wire::dir_of(*peer, true), &rest[..n], 1), &mut out);
                rest = &rest[n..];
            }
        }
        prop_assert_eq!(out.len(), 10);
        for pair in &out {
            prop_assert!(pair.complete);
            prop_assert_eq!(&pair.path, &format!("/s/{}", pair.stream_id));
            prop_assert_eq!(&pair.request.as_ref().unwrap().body[..], pair.path.as_bytes());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        prefix in any::<bool>(),
        chunks in prop::collection::vec((any::<bool>(), prop::collection::vec(any::<u8>(), 0..200), 0u64..3), 0..20),
    ) {
        let limits = Limits { max_buffered_bytes: 512, max_streams: 8, max_body_bytes: 64, ..Limits::default() };
        let mut p = HttpTwoParser::new(Role::Unknown, limits);
        let mut out = Vec::new();
        if prefix {
            p.on_chunk(&chunk(Direction::Egress, tapwire_protocols::http2::PREFACE, 0), &mut out);
        }
        for (egress, data, lost) in &chunks {
            let c = Chunk {
                direction: if *egress { Direction::Egress } else { Direction::Ingress },
                data,
                time_ns: 5,
                lost_before: *lost,
                events_lost: *lost == 2,
            };
            p.on_chunk(&c, &mut out);
        }
        p.on_tick(u64::MAX, &mut out);
        p.on_close(u64::MAX, &mut out);
        prop_assert!(p.open_streams() == 0);
    }
}

#[test]
fn h2c_upgrade_with_unknown_role_uses_the_given_client_direction() {
    let mut w = Wire::new(true);
    w.frame(Peer::Server, 0x4, 0, 0, &[]);
    w.handshake();
    w.headers(Peer::Server, 1, &resp("200"), false)
        .data(Peer::Server, 1, b"up", true);
    let mut p = HttpTwoParser::after_upgrade(Role::Unknown, Limits::default());
    // The observed process received the upgraded request: it is the server.
    p.set_client_direction(Direction::Ingress);
    p.set_upgraded_request("POST", "/submit", "h:80", vec![], 1);
    let out = run(&mut p, &w.events, false, None);
    assert_eq!(out.len(), 1);
    assert!(out[0].is_inbound && out[0].complete);
    assert_eq!(
        (out[0].method.as_str(), out[0].path.as_str()),
        ("POST", "/submit")
    );
}

#[test]
fn resynchronises_when_frame_headers_straddle_small_chunks() {
    for piece in 1..24 {
        let mut w = Wire::new(false);
        w.handshake();
        w.headers(Peer::Client, 1, REQ, true);
        w.headers(Peer::Server, 1, &resp("200"), false);
        w.data(Peer::Server, 1, &[b'x'; 40], true);
        exchange(&mut w, 3, b"", b"after");
        let mut p = client();
        let mut out = Vec::new();
        for (i, (peer, bytes)) in w.events.iter().enumerate() {
            let dir = wire::dir_of(*peer, true);
            // Stream 1's response DATA is seen from its 20th byte on, after a loss.
            let (data, lost) = if i == 6 {
                (&bytes[20..], true)
            } else {
                (&bytes[..], false)
            };
            for (n, part) in data.chunks(piece).enumerate() {
                let mut c = chunk(dir, part, i as u64);
                c.events_lost = lost && n == 0;
                p.on_chunk(&c, &mut out);
            }
        }
        let s3 = out.iter().find(|p| p.stream_id == 3);
        let body = s3
            .and_then(|p| p.response.as_ref())
            .map(|r| r.body.to_vec());
        assert_eq!(
            body.as_deref(),
            Some(&b"after"[..]),
            "pieces of {piece}: {out:#?}"
        );
    }
}
