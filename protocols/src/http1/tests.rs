//! Crafted streams through [`HttpOneParser`]: every framing rule, pipelining, upgrades,
//! gaps and limits.

use super::*;

const E: Direction = Direction::Egress;
const I: Direction = Direction::Ingress;

/// Feeds `(direction, bytes)` chunks at times 1, 2, 3… and closes the connection.
fn run(role: Role, limits: Limits, chunks: &[(Direction, &[u8])]) -> Vec<Pair> {
    let mut parser = HttpOneParser::new(role, limits);
    let mut out = Vec::new();
    for (i, (direction, data)) in chunks.iter().enumerate() {
        let chunk = Chunk {
            direction: *direction,
            data,
            time_ns: i as u64 + 1,
            lost_before: 0,
            events_lost: false,
        };
        parser.on_chunk(&chunk, &mut out);
    }
    parser.on_close(1000, &mut out);
    out
}

fn server(chunks: &[(Direction, &[u8])]) -> Vec<Pair> {
    run(Role::Server, Limits::default(), chunks)
}

fn body(message: Option<&tapwire_proto::v1::Message>) -> &[u8] {
    message.map(|m| &m.body[..]).unwrap_or_default()
}

#[test]
fn content_length_exchange() {
    let pairs = server(&[
        (
            I,
            b"POST /submit?q=1 HTTP/1.1\r\nHost: svc:8080\r\nContent-Length: 5\r\n\r\nhello",
        ),
        (
            E,
            b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nContent-Encoding: gzip\r\n\r\nok",
        ),
    ]);
    assert_eq!(pairs.len(), 1);
    let p = &pairs[0];
    assert_eq!(
        (p.method.as_str(), p.path.as_str(), p.authority.as_str()),
        ("POST", "/submit?q=1", "svc:8080")
    );
    assert_eq!(p.status, 201);
    assert!(p.complete && p.is_inbound);
    assert_eq!(body(p.request.as_ref()), b"hello");
    assert_eq!(body(p.response.as_ref()), b"ok");
    assert_eq!(
        p.response.as_ref().map(|m| m.content_encoding.as_str()),
        Some("gzip")
    );
    assert_eq!(p.protocol, "http1");
    assert!(p.request_end_time.is_some() && p.response_start_time.is_some());
}

#[test]
fn chunked_response_with_trailers() {
    let pairs = server(&[
        (I, b"GET / HTTP/1.1\r\n\r\n"),
        (
            E,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
        ),
        (E, b"2\r\nde\r\n0\r\nGrpc-Status: 0\r\n\r\n"),
    ]);
    let response = pairs[0].response.as_ref().expect("response");
    assert_eq!(&response.body[..], b"abcde");
    assert_eq!(response.trailers[0].name, "Grpc-Status");
    assert!(pairs[0].complete);
}

#[test]
fn close_delimited_response_is_complete_at_close() {
    let pairs = server(&[
        (I, b"GET /old HTTP/1.0\r\n\r\n"),
        (E, b"HTTP/1.0 200 OK\r\n\r\nall of "),
        (E, b"this"),
    ]);
    assert_eq!(pairs.len(), 1);
    assert_eq!(body(pairs[0].response.as_ref()), b"all of this");
    assert!(pairs[0].complete);
}

#[test]
fn no_body_for_head_204_304() {
    let pairs = server(&[
        (
            I,
            b"HEAD /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\n",
        ),
        (E, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"),
        (E, b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n"),
        (E, b"HTTP/1.1 304 Not Modified\r\n\r\n"),
    ]);
    let got: Vec<_> = pairs
        .iter()
        .map(|p| (p.path.as_str(), p.status, p.complete))
        .collect();
    assert_eq!(
        got,
        [("/a", 200, true), ("/b", 204, true), ("/c", 304, true)]
    );
}

#[test]
fn expect_100_continue() {
    let pairs = server(&[
        (
            I,
            b"PUT /f HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
        ),
        (E, b"HTTP/1.1 100 Continue\r\n\r\n"),
        (I, b"data"),
        (E, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ]);
    assert_eq!(pairs.len(), 1);
    assert_eq!(pairs[0].status, 200);
    assert_eq!(body(pairs[0].request.as_ref()), b"data");
    assert!(pairs[0].complete);
}

#[test]
fn pipelined_requests_pair_in_order() {
    let pairs = server(&[
        (I, b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\n"),
        (E, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1HTTP/1.1 404 NF\r\nContent-Length: 1\r\n\r\n2"),
        (E, b"HTTP/1.1 500 E\r\nContent-Length: 1\r\n\r\n3"),
    ]);
    let got: Vec<_> = pairs
        .iter()
        .map(|p| (p.path.clone(), p.status, body(p.response.as_ref()).to_vec()))
        .collect();
    assert_eq!(
        got,
        [
            ("/1".into(), 200, b"1".to_vec()),
            ("/2".into(), 404, b"2".to_vec()),
            ("/3".into(), 500, b"3".to_vec())
        ]
    );
}

#[test]
fn thousands_of_keep_alive_pairs() {
    let mut parser = HttpOneParser::new(Role::Client, Limits::default());
    let mut out = Vec::new();
    for i in 0..5000u64 {
        let req = format!("GET /item/{i} HTTP/1.1\r\nHost: api\r\n\r\n");
        let res = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{i}",
            i.to_string().len()
        );
        for (direction, data) in [(E, req.as_bytes()), (I, res.as_bytes())] {
            let chunk = Chunk {
                direction,
                data,
                time_ns: i * 10,
                lost_before: 0,
                events_lost: false,
            };
            parser.on_chunk(&chunk, &mut out);
        }
    }
    assert_eq!(out.len(), 5000);
    assert!(out.iter().all(|p| p.complete && !p.is_inbound));
    assert_eq!(out[4999].path, "/item/4999");
    assert!(parser.pending.is_empty());
}

#[test]
fn folded_headers_and_case_are_kept() {
    let pairs = server(&[
        (
            I,
            b"GET / HTTP/1.1\r\nX-CamelCase: one\r\n two\r\nhost: h\r\n\r\n",
        ),
        (
            E,
            b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n\tb\r\nContent-Length: 0\r\n\r\n",
        ),
    ]);
    let request = pairs[0].request.as_ref().expect("request");
    assert_eq!(
        (
            request.headers[0].name.as_str(),
            request.headers[0].value.as_str()
        ),
        ("X-CamelCase", "one two")
    );
    assert_eq!(
        pairs[0].response.as_ref().expect("response").headers[0].value,
        "a b"
    );
}

#[test]
fn websocket_upgrade_then_frames() {
    let pairs = server(&[
        (I, b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
        // Server text frame "hi" right behind the 101 in the same chunk.
        (E, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x02hi"),
        // Masked client text "GET / HTTP/1.1" must not be parsed as HTTP.
        (I, &masked_text(b"GET / HTTP/1.1\r\n\r\n")),
    ]);
    assert_eq!(pairs.len(), 2);
    assert_eq!(
        (pairs[0].status, pairs[0].protocol.as_str()),
        (101, "http1")
    );
    let ws = &pairs[1];
    assert_eq!(
        (ws.protocol.as_str(), ws.path.as_str()),
        ("websocket", "/ws")
    );
    let texts: Vec<_> = ws
        .messages
        .iter()
        .map(|m| (m.from_client, m.data.to_vec()))
        .collect();
    assert_eq!(
        texts,
        [
            (false, b"hi".to_vec()),
            (true, b"GET / HTTP/1.1\r\n\r\n".to_vec())
        ]
    );
}

fn masked_text(payload: &[u8]) -> Vec<u8> {
    let key = [0x11, 0x22, 0x33, 0x44];
    let mut out = vec![0x81, 0x80 | payload.len() as u8];
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

#[test]
fn declined_upgrade_stays_http() {
    let pairs = server(&[
        (I, b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nGET /next HTTP/1.1\r\n\r\n"),
        (E, b"HTTP/1.1 400 Bad\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ]);
    let got: Vec<_> = pairs.iter().map(|p| (p.path.as_str(), p.status)).collect();
    assert_eq!(got, [("/ws", 400), ("/next", 200)]);
}

#[test]
fn connect_tunnel_is_opaque() {
    let pairs = run(
        Role::Client,
        Limits::default(),
        &[
            (E, b"CONNECT db:5432 HTTP/1.1\r\n\r\n"),
            (I, b"HTTP/1.1 200 Connection established\r\n\r\n"),
            (E, b"GET /not-http-inside HTTP/1.1\r\n\r\n"),
            (I, b"\x16\x03\x01 binary"),
        ],
    );
    assert_eq!(pairs.len(), 1);
    assert_eq!(
        (
            pairs[0].method.as_str(),
            pairs[0].authority.as_str(),
            pairs[0].status
        ),
        ("CONNECT", "db:5432", 200)
    );
}

#[test]
fn h2c_upgrade_hands_over() {
    let mut parser = HttpOneParser::new(Role::Server, Limits::default());
    let mut out = Vec::new();
    let chunks: [(Direction, &[u8]); 3] = [
        (I, b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"),
        (I, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        (E, b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"),
    ];
    for (direction, data) in chunks {
        parser.on_chunk(
            &Chunk {
                direction,
                data,
                time_ns: 5,
                lost_before: 0,
                events_lost: false,
            },
            &mut out,
        );
    }
    let handover = parser.take_handover().expect("handover");
    assert!(handover.from_client.starts_with(b"PRI * HTTP/2.0"));
    assert_eq!(handover.from_server.len(), 9);
    assert_eq!(handover.client_direction, I);
    // The upgraded request is answered on HTTP/2 stream 1, not by the 101.
    let request = handover.request.expect("upgraded request");
    assert_eq!(
        (
            request.method.as_str(),
            request.path.as_str(),
            request.authority.as_str()
        ),
        ("GET", "/", "h")
    );
    assert!(out.is_empty());
}

#[test]
fn unanswered_request_is_incomplete_at_close() {
    let pairs = server(&[(I, b"GET /hang HTTP/1.1\r\n\r\n")]);
    assert_eq!(pairs.len(), 1);
    assert!(!pairs[0].complete);
    assert_eq!(
        (pairs[0].status, pairs[0].note.as_str()),
        (0, "connection closed")
    );
}

#[test]
fn response_without_request_is_kept() {
    let pairs = run(
        Role::Unknown,
        Limits::default(),
        &[(E, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")],
    );
    assert_eq!(pairs.len(), 1);
    assert!(!pairs[0].complete);
    assert!(
        pairs[0].is_inbound,
        "the observed side sent the response, so it served"
    );
    assert_eq!(pairs[0].note, "request not seen");
}

#[test]
fn idle_pairs_are_emitted_on_tick() {
    let mut parser = HttpOneParser::new(Role::Server, Limits::default());
    let mut out = Vec::new();
    parser.on_chunk(
        &Chunk {
            direction: I,
            data: b"GET / HTTP/1.1\r\n\r\n",
            time_ns: 1,
            lost_before: 0,
            events_lost: false,
        },
        &mut out,
    );
    parser.on_tick(2, &mut out);
    assert!(out.is_empty());
    parser.on_tick(1 + Limits::default().idle_timeout_ns, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].note, "idle");
}

#[test]
fn gap_inside_a_body_keeps_sync() {
    let mut parser = HttpOneParser::new(Role::Server, Limits::default());
    let mut out = Vec::new();
    let mut feed = |direction, data: &[u8], lost_before| {
        parser.on_chunk(
            &Chunk {
                direction,
                data,
                time_ns: 1,
                lost_before,
                events_lost: false,
            },
            &mut out,
        );
    };
    feed(I, b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nab", 0);
    feed(I, b"ghij", 4);
    feed(E, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0);
    feed(I, b"GET /after HTTP/1.1\r\n\r\n", 0);
    feed(E, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].bytes_lost, 4);
    assert!(!out[0].complete && out[0].truncated);
    assert_eq!(out[0].request.as_ref().map(|m| m.body_size), Some(10));
    assert!(out[1].complete);
    assert_eq!(out[1].path, "/after");
}

#[test]
fn unknown_gap_resynchronises_at_next_request() {
    let mut parser = HttpOneParser::new(Role::Server, Limits::default());
    let mut out = Vec::new();
    let mut feed = |direction, data: &[u8], events_lost| {
        parser.on_chunk(
            &Chunk {
                direction,
                data,
                time_ns: 1,
                lost_before: 0,
                events_lost,
            },
            &mut out,
        );
    };
    feed(
        I,
        b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        false,
    );
    feed(
        I,
        b"garbage\r\nmore garbage\r\nGET /b HTTP/1.1\r\n\r\n",
        true,
    );
    feed(E, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false);
    feed(E, b"HTTP/1.1 201 OK\r\nContent-Length: 0\r\n\r\n", false);
    let got: Vec<_> = out
        .iter()
        .map(|p| (p.path.as_str(), p.status, p.lost_events))
        .collect();
    assert_eq!(got, [("/a", 200, true), ("/b", 201, true)]);
    assert!(!out[0].complete);
}

#[test]
fn limits_bound_bodies_heads_and_queue() {
    let limits = Limits {
        max_body_bytes: 4,
        max_buffered_bytes: 64,
        max_pending_pairs: 2,
        ..Limits::default()
    };
    let pairs = run(Role::Server, limits, &[
        (I, b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789"),
        (I, b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n"),
        // A head that has to be buffered beyond the cap is given up on.
        (I, b"GET /big HTTP/1.1\r\nX: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
        (I, b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n"),
    ]);
    let request = pairs[0].request.as_ref().expect("request");
    assert_eq!(
        (&request.body[..], request.body_size, request.body_truncated),
        (&b"0123"[..], 10, true)
    );
    assert!(pairs[0].truncated);
    assert_eq!(pairs[0].note, "too many pipelined requests");
    let paths: Vec<_> = pairs.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["/", "/1", "/2"]);
}

#[test]
fn unknown_role_infers_direction_from_requests() {
    let pairs = run(
        Role::Unknown,
        Limits::default(),
        &[
            (E, b"GET /out HTTP/1.1\r\n\r\n"),
            (I, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        ],
    );
    assert!(!pairs[0].is_inbound);
    assert!(pairs[0].complete);
}
