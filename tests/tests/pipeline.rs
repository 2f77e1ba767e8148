//! The whole pipeline, end to end, as a user runs it: the real agent captures real clients
//! talking to real servers on this machine, the real collector stores the pairs in a real
//! TimescaleDB, and every assertion is made through the query API with the `tapwire` CLI.

mod support;

use serde_json::Value;
use std::time::Duration;
use support::json::{flag, number, optional_number, text};
use support::{Scratch, postgres_root_args, preflight};
use tapwire_e2e::peers::{self, HELLO_BODY, Nginx, PeerServer, PythonHttpServer};
use tapwire_e2e::stack::{Agent, Cli, Collector};

/// Pairs of the listing whose path is `path`, split into (outbound, inbound).
fn sides<'a>(rows: &'a [Value], path: &str) -> (Vec<&'a Value>, Vec<&'a Value>) {
    let matching: Vec<&Value> = rows.iter().filter(|r| text(r, "path") == path).collect();
    let (inbound, outbound) = matching.into_iter().partition(|r| flag(r, "is_inbound"));
    (outbound, inbound)
}

#[test]
fn every_protocol_appears_once_per_side_with_identity_and_bodies() {
    let Some(bins) = preflight("pipeline") else {
        return;
    };
    let scratch = Scratch::new("pipeline");
    let dir = &scratch.dir;
    let root_args = postgres_root_args();
    let root_args: Vec<&str> = root_args.iter().map(String::as_str).collect();
    let collector = Collector::start(&bins, &dir.join("collector"), dir, &root_args).unwrap();
    let http = PythonHttpServer::start(&dir.join("http")).unwrap();
    let nginx = Nginx::start(&dir.join("nginx")).unwrap();
    let grpc = PeerServer::start("grpc_peer.py", &dir.join("grpc")).unwrap();
    let mut agent = Agent::start(&bins, &collector.url(), &dir.join("agent"), dir, &[]).unwrap();
    let cli = Cli::new(&bins, &collector.url()).unwrap();

    // Plain HTTP/1: curl → python http.server, three distinct paths.
    for i in 0..3 {
        let body = peers::curl(&[&format!("http://{}/hello.txt?n={i}", http.addr)]).unwrap();
        assert_eq!(body, HELLO_BODY.as_bytes());
    }
    // HTTPS (OpenSSL on both sides): curl → nginx over HTTP/1.1.
    let resolve = format!("localhost:{}:127.0.0.1", nginx.https.port());
    let https_url = format!("https://localhost:{}/hello.txt?tls=1", nginx.https.port());
    peers::curl(&["-k", "--http1.1", "--resolve", &resolve, &https_url]).unwrap();
    // HTTP/2 over TLS: curl --http2 → nginx.
    let h2_url = format!("https://localhost:{}/status/201", nginx.https.port());
    let created = peers::curl(&[
        "-k",
        "--http2",
        "--resolve",
        &resolve,
        "-d",
        "{\"a\":1}",
        &h2_url,
    ])
    .unwrap();
    assert_eq!(created, b"created\n");
    // gRPC (h2c): every RPC kind once.
    let grpc_result = peers::grpc_calls(grpc.addr, 1).unwrap();
    assert_eq!(grpc_result["calls"], 5);

    let expected_paths = [
        "/hello.txt?n=0",
        "/hello.txt?n=1",
        "/hello.txt?n=2",
        "/hello.txt?tls=1",
        "/status/201",
        "/tapwire.demo.Greeter/SayHello",
        "/tapwire.demo.Greeter/CountUp",
        "/tapwire.demo.Greeter/Collect",
        "/tapwire.demo.Greeter/Chat",
        "/tapwire.demo.Greeter/Fail",
    ];
    // Each call's pairs, asked for by its path: other traffic on the machine does not
    // push them out of a page.
    let mut rows: Vec<Value> = Vec::new();
    for path in expected_paths {
        let args = [
            "pairs", "list", "--since", "10m", "--limit", "100", "--text", path,
        ];
        let found = cli
            .wait_for(&args, Duration::from_secs(30), |rows| {
                let (out, inb) = sides(rows, path);
                out.len() == 1 && inb.len() == 1
            })
            .unwrap();
        rows.extend(found.into_iter().filter(|r| text(r, "path") == path));
    }

    for path in expected_paths {
        let (out, inb) = sides(&rows, path);
        assert_eq!(
            (out.len(), inb.len()),
            (1, 1),
            "{path}: one outbound and one inbound pair, got {rows:#?}"
        );
        let (out, inb) = (out[0], inb[0]);
        // The two sides of one call mirror each other's addresses.
        assert_eq!(text(out, "local_addr"), text(inb, "remote_addr"), "{path}");
        assert_eq!(text(out, "remote_addr"), text(inb, "local_addr"), "{path}");
        assert_eq!(text(out, "method"), text(inb, "method"), "{path}");
        assert_eq!(number(out, "status"), number(inb, "status"), "{path}");
    }

    let (out, inb) = sides(&rows, "/hello.txt?n=1");
    assert_eq!(text(out[0], "method"), "GET");
    assert_eq!(number(out[0], "status"), 200);
    assert_eq!(text(out[0], "protocol"), "http1");
    assert_eq!(text(out[0], "comm"), "curl");
    assert_eq!(number(inb[0], "pid"), u64::from(http.pid()));
    assert!(text(inb[0], "comm").starts_with("python"), "{:?}", inb[0]);
    assert_eq!(text(out[0], "remote_addr"), http.addr.to_string());
    assert!(!flag(out[0], "tls"));
    // The full pair, with its bodies, from the payload store.
    let full = cli.json(&["pairs", "get", text(inb[0], "id")]).unwrap();
    let pair = &full[0]["pair"];
    let body = pair["response"]["body"].as_str().unwrap_or_default();
    assert_eq!(base64_decode(body), HELLO_BODY.as_bytes(), "{pair:#}");

    let (out, inb) = sides(&rows, "/hello.txt?tls=1");
    assert!(
        flag(out[0], "tls") && flag(inb[0], "tls"),
        "TLS pairs carry the flag"
    );
    assert_eq!(text(out[0], "comm"), "curl");
    assert_eq!(text(inb[0], "comm"), "nginx");
    assert_eq!(number(inb[0], "status"), 200);

    let (out, inb) = sides(&rows, "/status/201");
    assert_eq!(text(out[0], "protocol"), "http2");
    assert_eq!(text(inb[0], "method"), "POST");
    assert_eq!(number(inb[0], "status"), 201);

    let (out, inb) = sides(&rows, "/tapwire.demo.Greeter/SayHello");
    assert_eq!(text(out[0], "protocol"), "grpc");
    assert_eq!(optional_number(out[0], "grpc_status"), Some(0));
    assert_eq!(number(inb[0], "pid"), u64::from(grpc.pid()));
    let (out, inb) = sides(&rows, "/tapwire.demo.Greeter/Fail");
    assert_eq!(optional_number(out[0], "grpc_status"), Some(5));
    assert_eq!(optional_number(inb[0], "grpc_status"), Some(5));

    // Throughput counts exactly what the clients did: three plain GETs, each seen once
    // per side.
    let buckets = cli
        .json(&[
            "throughput",
            "--since",
            "10m",
            "--interval",
            "1m",
            "--text",
            "/hello.txt?n=",
        ])
        .unwrap();
    let total = |key: &str| buckets.iter().map(|b| number(b, key)).sum::<u64>();
    assert_eq!(
        (total("inbound"), total("outbound")),
        (3, 3),
        "{buckets:#?}"
    );

    // The service map has the client → server edges.
    let edges = cli.json(&["deps", "--since", "10m"]).unwrap();
    assert!(
        edges.iter().any(|e| text(e, "from_service") == "curl"),
        "no edge from curl: {edges:#?}"
    );

    // HAR export contains the calls.
    let har = cli
        .output(&["export", "--format", "har", "--since", "10m"])
        .unwrap();
    let har: Value = serde_json::from_str(&har).expect("the export is one HAR document");
    assert_eq!(har["log"]["version"], "1.2");
    let entries = har["log"]["entries"].as_array().expect("HAR entries");
    assert!(
        entries.iter().any(|e| e["request"]["url"]
            .as_str()
            .is_some_and(|u| u.ends_with("/hello.txt?n=2"))),
        "HAR lacks the call"
    );

    assert!(agent.stop(), "the agent stops cleanly on SIGTERM");
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("the CLI writes bodies as base64")
}
