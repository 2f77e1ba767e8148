//! Real traffic recorded by `tests/http1_recorded/record.py` (a relay between real
//! clients and servers): curl and wrk against nginx 1.22 and Python's http.server,
//! replayed through [`ConnectionParser`] from both ends of each connection.

use tapwire_protocols::{Chunk, ConnectionParser, Direction, Limits, Pair, ProtocolParser, Role};

/// One recorded connection: chunks in capture order; `true` = client to server.
type Connection = Vec<(bool, Vec<u8>)>;

fn load(recording: &str) -> Vec<Connection> {
    let mut connections: Vec<Connection> = Vec::new();
    for line in recording.lines() {
        if line.starts_with('#') {
            connections.push(Vec::new());
            continue;
        }
        let (tag, hex) = line.split_once(' ').expect("`C <hex>` or `S <hex>`");
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        connections
            .last_mut()
            .expect("a connection header first")
            .push((tag == "C", bytes));
    }
    connections
}

/// Replays a connection as the observed process on `role`'s side sees it.
fn replay(connection: &Connection, role: Role, pieces: usize) -> Vec<Pair> {
    let client_is_us = role == Role::Client;
    let mut parser = ConnectionParser::new(role, Limits::default());
    let mut out = Vec::new();
    let mut time = 1_764_316_800_000_000_000u64;
    for (from_client, data) in connection {
        let direction = if *from_client == client_is_us {
            Direction::Egress
        } else {
            Direction::Ingress
        };
        let step = data.len().div_ceil(pieces).max(1);
        for piece in data.chunks(step) {
            time += 1_000;
            parser.on_chunk(
                &Chunk {
                    direction,
                    data: piece,
                    time_ns: time,
                    lost_before: 0,
                    events_lost: false,
                },
                &mut out,
            );
        }
    }
    parser.on_close(time + 1_000, &mut out);
    out
}

fn all_pairs(recording: &str, role: Role, pieces: usize) -> Vec<Pair> {
    load(recording)
        .iter()
        .flat_map(|c| replay(c, role, pieces))
        .collect()
}

fn brief(p: &Pair) -> (String, String, u32, u64, String) {
    let res = p.response.as_ref();
    (
        p.method.clone(),
        p.path.clone(),
        p.status,
        res.map_or(0, |m| m.body_size),
        res.map(|m| m.content_encoding.clone()).unwrap_or_default(),
    )
}

fn owned(items: &[(&str, &str, u32, u64, &str)]) -> Vec<(String, String, u32, u64, String)> {
    items
        .iter()
        .map(|(m, p, s, n, e)| (m.to_string(), p.to_string(), *s, *n, e.to_string()))
        .collect()
}

#[test]
fn curl_against_nginx() {
    let recording = include_str!("http1_recorded/curl_nginx.rec");
    for role in [Role::Client, Role::Server] {
        for pieces in [1, 3, 17] {
            let pairs = all_pairs(recording, role, pieces);
            let got: Vec<_> = pairs.iter().map(brief).collect();
            let gz = pairs[1].response.as_ref().expect("response").body_size;
            assert_eq!(
                got,
                owned(&[
                    ("GET", "/index.html", 200, 40, ""),
                    ("GET", "/data.json", 200, gz, "gzip"),
                    ("GET", "/missing", 404, got[2].3, "gzip"),
                    ("POST", "/echo", 200, 7, ""),
                    ("HEAD", "/data.json", 200, 0, ""),
                    ("GET", "/index.html", 304, 0, ""),
                ]),
                "{role:?} in {pieces} pieces"
            );
            assert!(gz > 0 && gz < 6392, "the gzip body is kept as sent");
            assert!(
                pairs
                    .iter()
                    .all(|p| p.complete && p.is_inbound == (role == Role::Server))
            );
            // curl sent the body after nginx had already answered (100-continue, then 200).
            assert_eq!(pairs[3].request.as_ref().expect("request").body_size, 3000);
            assert_eq!(pairs[0].authority, "127.0.0.1:28418");
        }
    }
}

#[test]
fn curl_against_python_http_server() {
    let recording = include_str!("http1_recorded/curl_python.rec");
    let pairs = all_pairs(recording, Role::Client, 1);
    let got: Vec<_> = pairs.iter().map(brief).collect();
    assert_eq!(
        got,
        owned(&[
            ("GET", "/", 200, 40, ""),
            ("GET", "/data.json", 200, 6392, ""),
            ("GET", "/nope", 404, got[2].3, ""),
            ("HEAD", "/index.html", 200, 0, ""),
        ])
    );
    assert!(pairs.iter().all(|p| p.complete && !p.is_inbound));
    assert_eq!(
        &pairs[0].response.as_ref().expect("response").body[..],
        b"<html><body>hello tapwire</body></html>\n"
    );
}

#[test]
fn pipelined_requests_against_nginx() {
    let recording = include_str!("http1_recorded/pipelined_nginx.rec");
    let expected: Vec<_> = all_pairs(recording, Role::Server, 1)
        .iter()
        .map(brief)
        .collect();
    assert_eq!(expected.len(), 4);
    let statuses: Vec<_> = expected
        .iter()
        .map(|b| (b.0.as_str(), b.1.as_str(), b.2, b.4.as_str()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("GET", "/index.html", 200, ""),
            ("HEAD", "/data.json", 200, ""),
            ("GET", "/data.json", 200, "gzip"),
            ("GET", "/nope", 404, "")
        ]
    );
    // Every way of cutting the connection into pieces gives the same pairs.
    for pieces in 2..64 {
        let got: Vec<_> = all_pairs(recording, Role::Server, pieces)
            .iter()
            .map(brief)
            .collect();
        assert_eq!(got, expected, "{pieces} pieces");
    }
}

#[test]
fn wrk_keep_alive_against_nginx() {
    let recording = include_str!("http1_recorded/wrk_keepalive_nginx.rec");
    let pairs = all_pairs(recording, Role::Client, 1);
    assert_eq!(pairs.len(), 299);
    assert!(
        pairs
            .iter()
            .all(|p| p.complete && p.status == 200 && p.path == "/index.html")
    );
    let mut ids: Vec<_> = pairs.iter().map(|p| p.id.clone()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 299, "ids are unique");
}
