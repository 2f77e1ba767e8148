//! Protocol parsing on real traffic: the real agent (`--output jsonl`, limited to the
//! servers' ports) captures real clients talking to real servers, and each test asserts
//! the exact pairs: HTTP/1.1 keep-alive with chunked, HEAD, 304 and POST; wrk and paced
//! HTTP/1.1 load → nginx;
//! h2load → nginx over TLS and h2; a WebSocket exchange; an HTTP/2 connection that
//! started before the agent.

mod support;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::json::{flag, number, text};
use support::{Scratch, preflight};
use tapwire_e2e::Child;
use tapwire_e2e::peers::{self, HELLO_BODY, Nginx, PeerServer};
use tapwire_e2e::stack::Binaries;

/// `tapwire-agent --output jsonl` capturing only `ports`.
struct JsonlAgent {
    child: Child,
    out: PathBuf,
}

impl JsonlAgent {
    fn start(bins: &Binaries, dir: &Path, ports: &[u16]) -> Self {
        Self::start_with(bins, dir, ports, &[])
    }

    fn start_with(bins: &Binaries, dir: &Path, ports: &[u16], extra: &[&str]) -> Self {
        let out = dir.join("pairs.jsonl");
        let err = dir.join("agent.log");
        let mut cmd = Command::new(bins.path("tapwire-agent").unwrap());
        cmd.args(["--output", "jsonl"]).args(extra);
        for port in ports {
            cmd.args(["--include-port", &port.to_string()]);
        }
        let child = Child::spawn_split("tapwire-agent", &mut cmd, &out, &err).unwrap();
        // Ready once its probes are attached.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = std::fs::read_to_string(&err).unwrap_or_default();
            if log.contains("tapwire-agent: capturing") {
                break;
            }
            assert!(Instant::now() < deadline, "agent did not start: {log}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, out }
    }

    /// Stops the agent (it flushes every pair in flight) and returns its pairs.
    fn stop(mut self) -> Vec<Value> {
        // Let the last events reach the ring buffer reader.
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            self.child.stop(Duration::from_secs(20)),
            "the agent exits 0 on SIGTERM"
        );
        let file = std::fs::File::open(&self.out).unwrap();
        BufReader::new(file)
            .lines()
            .map(|l| serde_json::from_str(&l.unwrap()).expect("one pair per line"))
            .collect()
    }
}

fn inbound(pairs: &[Value]) -> Vec<&Value> {
    let mut v: Vec<&Value> = pairs.iter().filter(|p| flag(p, "is_inbound")).collect();
    v.sort_by_key(|p| text(p, "start_time").to_string());
    v
}

fn outbound(pairs: &[Value]) -> Vec<&Value> {
    let mut v: Vec<&Value> = pairs.iter().filter(|p| !flag(p, "is_inbound")).collect();
    v.sort_by_key(|p| text(p, "start_time").to_string());
    v
}

fn body(message: &Value) -> Vec<u8> {
    use base64::Engine;
    let b64 = message["body"].as_str().unwrap_or_default();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

#[test]
fn http1_keep_alive_with_chunked_head_304_and_post() {
    let Some(bins) = preflight("http1") else {
        return;
    };
    let scratch = Scratch::new("proto-http1");
    let server = PeerServer::start("http1_peer.py", &scratch.dir).unwrap();
    let agent = JsonlAgent::start(&bins, &scratch.dir, &[server.addr.port()]);
    let client = peers::peer_call("http1_peer.py", server.addr, &["call"]).unwrap();
    let pairs = agent.stop();

    let expected = [
        ("GET", "/hello", 200, "hello over keep-alive\n"),
        ("GET", "/chunked", 200, "first,second,third"),
        ("HEAD", "/hello", 200, ""),
        ("GET", "/etag", 304, ""),
        ("POST", "/echo", 201, "{\"n\":1}"),
    ];
    assert_eq!(client.as_array().unwrap().len(), expected.len());
    for side in [inbound(&pairs), outbound(&pairs)] {
        assert_eq!(side.len(), expected.len(), "{pairs:#?}");
        // One keep-alive connection carries every exchange.
        assert!(
            side.iter()
                .all(|p| number(p, "connection_id") == number(side[0], "connection_id"))
        );
        for (pair, (method, path, status, response)) in side.iter().zip(expected) {
            assert_eq!(text(pair, "protocol"), "http1");
            assert_eq!(text(pair, "method"), method);
            assert_eq!(text(pair, "path"), path);
            assert_eq!(number(pair, "status"), status);
            assert_eq!(body(&pair["response"]), response.as_bytes(), "{path}");
            assert!(flag(pair, "complete"), "{pair:#}");
        }
        let chunked = &side[1]["response"];
        let trailers = chunked["trailers"].as_array().expect("chunked trailers");
        assert!(
            trailers
                .iter()
                .any(|t| text(t, "name") == "X-Checksum" && text(t, "value") == "42")
        );
        assert_eq!(body(&side[4]["request"]), b"{\"n\":1}");
        assert_eq!(
            number(&side[2]["response"], "body_size"),
            0,
            "HEAD has no body"
        );
    }
}

#[test]
fn paced_http1_load_to_nginx_pairs_every_request() {
    let Some(bins) = preflight("http1-load") else {
        return;
    };
    let scratch = Scratch::new("proto-load");
    let nginx = Nginx::start(&scratch.dir).unwrap();
    let agent = JsonlAgent::start(&bins, &scratch.dir, &[nginx.http.port()]);
    let url = format!("http://{}/hello.txt", nginx.http);
    // A fixed rate (4 keep-alive connections, 2,000 requests/s): this test is about pairing
    // every exchange exactly; capacity at saturation is `cargo xtask bench capture`.
    let out = Command::new("h2load")
        .args(["--h1", "-c", "4", "--rps", "500", "-D", "2", &url])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let requests: u64 = report
        .lines()
        .find(|l| l.starts_with("requests:"))
        .and_then(|l| l.split(',').find(|p| p.trim_end().ends_with("succeeded")))
        .and_then(|p| p.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no request count in {report}"));
    let pairs = agent.stop();
    assert!(requests >= 1000, "{report}");
    for side in [inbound(&pairs), outbound(&pairs)] {
        assert_eq!(side.len() as u64, requests, "one pair per request");
        assert!(side.iter().all(|p| number(p, "status") == 200
            && flag(p, "complete")
            && !flag(p, "lost_events")
            && body(&p["response"]) == HELLO_BODY.as_bytes()));
    }
}

#[test]
fn wrk_to_nginx_every_exchange_paired() {
    let Some(bins) = preflight("wrk") else { return };
    let scratch = Scratch::new("proto-wrk");
    let nginx = Nginx::start(&scratch.dir).unwrap();
    // wrk saturates nginx; a ring buffer that holds the whole 1 s burst lets even a debug
    // build of the agent catch up afterwards, so every exchange must come out paired.
    let agent = JsonlAgent::start_with(
        &bins,
        &scratch.dir,
        &[nginx.http.port()],
        &["--ring-mib", "256"],
    );
    let url = format!("http://{}/hello.txt", nginx.http);
    let out = Command::new("wrk")
        .args(["-t1", "-c2", "-d1s", &url])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    // "  12345 requests in 1.00s, …"
    let requests: u64 = report
        .lines()
        .find_map(|l| l.trim().split_once(" requests in"))
        .and_then(|(n, _)| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no request count in {report}"));
    std::thread::sleep(Duration::from_secs(3));
    let pairs = agent.stop();
    for side in [inbound(&pairs), outbound(&pairs)] {
        let ok = side
            .iter()
            .filter(|p| {
                number(p, "status") == 200 && flag(p, "complete") && !flag(p, "lost_events")
            })
            .count() as u64;
        // wrk counts completed requests; at most one per connection is cut off at the end.
        assert!(
            ok >= requests && side.len() as u64 <= requests + 2,
            "{ok} complete pairs of {} for {requests} requests",
            side.len()
        );
    }
}

#[test]
fn h2load_to_nginx_over_tls_and_h2() {
    let Some(bins) = preflight("h2load") else {
        return;
    };
    let scratch = Scratch::new("proto-h2load");
    let nginx = Nginx::start(&scratch.dir).unwrap();
    let agent = JsonlAgent::start(&bins, &scratch.dir, &[nginx.https.port()]);
    let url = format!("https://127.0.0.1:{}/hello.txt", nginx.https.port());
    let out = Command::new("h2load")
        .args(["-n", "200", "-c", "2", "-m", "4", &url])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("200 succeeded"), "{report}");
    let pairs = agent.stop();
    for side in [inbound(&pairs), outbound(&pairs)] {
        let ok: Vec<&&Value> = side
            .iter()
            .filter(|p| text(p, "protocol") == "http2" && text(p, "path") == "/hello.txt")
            .collect();
        assert_eq!(ok.len(), 200, "{} of {} pairs", ok.len(), side.len());
        assert!(
            ok.iter()
                .all(|p| flag(p, "tls") && number(p, "status") == 200)
        );
        assert!(
            ok.iter()
                .all(|p| body(&p["response"]) == HELLO_BODY.as_bytes())
        );
    }
}

#[test]
fn websocket_handshake_then_messages() {
    let Some(bins) = preflight("websocket") else {
        return;
    };
    let scratch = Scratch::new("proto-ws");
    let server = PeerServer::start("ws_peer.py", &scratch.dir).unwrap();
    let agent = JsonlAgent::start(&bins, &scratch.dir, &[server.addr.port()]);
    let replies = peers::peer_call("ws_peer.py", server.addr, &["call", "--count", "3"]).unwrap();
    assert_eq!(replies, serde_json::json!(["pong-1", "pong-2", "pong-3"]));
    let pairs = agent.stop();
    for side in [inbound(&pairs), outbound(&pairs)] {
        let handshake = side
            .iter()
            .find(|p| number(p, "status") == 101)
            .expect("the handshake pair");
        assert_eq!(text(handshake, "path"), "/chat");
        let messages: Vec<(bool, String)> = side
            .iter()
            .filter(|p| text(p, "protocol") == "websocket")
            .flat_map(|p| p["messages"].as_array().cloned().unwrap_or_default())
            .filter(|m| text(m, "kind") == "text")
            .map(|m| {
                use base64::Engine;
                let data = base64::engine::general_purpose::STANDARD
                    .decode(m["data"].as_str().unwrap_or_default())
                    .unwrap();
                (flag(&m, "from_client"), String::from_utf8(data).unwrap())
            })
            .collect();
        let expected: Vec<(bool, String)> = (1..=3)
            .flat_map(|i| [(true, format!("ping-{i}")), (false, format!("pong-{i}"))])
            .collect();
        assert_eq!(messages, expected, "{pairs:#?}");
    }
}

#[test]
fn http2_connection_joined_midway_still_yields_pairs() {
    let Some(bins) = preflight("late-join") else {
        return;
    };
    let scratch = Scratch::new("proto-late");
    let server = PeerServer::start("grpc_peer.py", &scratch.dir).unwrap();
    // The connection and its HPACK tables are set up before the agent starts.
    let client = Command::new(peers::python())
        .arg(peers::peer_script("grpc_peer.py"))
        .args([
            "hold",
            "--seconds",
            "8",
            "--port",
            &server.addr.port().to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let agent = JsonlAgent::start(&bins, &scratch.dir, &[server.addr.port()]);
    let out = client.wait_with_output().unwrap();
    let calls = serde_json::from_slice::<Value>(&out.stdout).unwrap()["calls"]
        .as_u64()
        .unwrap();
    let pairs = agent.stop();
    let served = inbound(&pairs);
    // At least the calls of the last 4 seconds (5 a second), each its own stream.
    assert!(
        calls >= 20 && served.len() >= 15,
        "{} pairs for {calls} calls",
        served.len()
    );
    assert!(served.iter().all(|p| number(p, "stream_id") % 2 == 1));
    assert!(
        served.iter().any(|p| flag(p, "partial_headers")),
        "headers indexed before the join are marked partial"
    );
    assert!(
        served
            .iter()
            .all(|p| matches!(text(p, "protocol"), "grpc" | "http2"))
    );
}
