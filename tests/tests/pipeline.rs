//! The whole pipeline, end to end, as a user runs it: the real agent captures real clients
//! talking to real servers on this machine, the real collector stores the pairs in a real
//! TimescaleDB, and every assertion is made through the query API with the `tapwire` CLI,
//! except one: the seed's own SQL, run straight against that database, must count what
//! the query API's Throughput counts.

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

    // The seed's own SQL, run straight against the collector's database, counts what the
    // query API counts: minute by minute and per direction, over everything the agent
    // stored (other traffic on this machine included), and exactly the three plain GETs
    // when restricted to their paths.
    let url = collector.database_url().unwrap();
    let restricted = SEED_SQL.replace(
        "WHERE time > now()",
        "WHERE path LIKE '/hello.txt?n=%' AND time > now()",
    );
    assert_ne!(restricted, SEED_SQL, "the restriction applies");
    let gets = seed_query(&url, &restricted).unwrap();
    assert_eq!(totals(&gets), (3, 3), "the seed query's GETs: {gets:?}");

    // The agent has stopped, so what is stored no longer changes once the collector has
    // written its last batch: take a Throughput answer that two reads agree on.
    let throughput = || {
        cli.json(&["throughput", "--since", "1h", "--interval", "1m"])
            .unwrap()
            .iter()
            .map(|b| (number(b, "inbound"), number(b, "outbound")))
            .filter(|&(i, o)| i + o > 0)
            .collect::<Vec<_>>()
    };
    let mut api = throughput();
    for _ in 0..20 {
        let again = throughput();
        if again == api {
            break;
        }
        api = again;
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut seed = per_bucket(&seed_query(&url, SEED_SQL).unwrap());
    if seed != api {
        // Once more, in case the last batch landed between the two reads.
        api = throughput();
        seed = per_bucket(&seed_query(&url, SEED_SQL).unwrap());
    }
    assert!(
        seed.iter().map(|(i, o)| i + o).sum::<u64>() >= 2 * expected_paths.len() as u64,
        "the seed query sees at least this test's calls: {seed:?}"
    );
    assert_eq!(
        seed, api,
        "the seed query's (inbound, outbound) per minute equal Throughput's"
    );
}

/// The seed's query, word for word as the design states it, over the last hour.
const SEED_SQL: &str = "SELECT time_bucket(INTERVAL '1 minute', time) AS bucket, is_inbound, \
     COUNT(id) FROM rr_pairs WHERE time > now() - INTERVAL '1 hour' \
     GROUP BY is_inbound, bucket ORDER BY bucket";

/// One row of the seed query: bucket, is_inbound, count.
type SeedRow = (std::time::SystemTime, bool, i64);

/// Runs `sql` (the seed query or a restriction of it) against the database at `url`.
fn seed_query(url: &str, sql: &str) -> anyhow::Result<Vec<SeedRow>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        let connection = tokio::spawn(connection);
        let rows = client.query(sql, &[]).await?;
        drop(client);
        let _ = connection.await;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    })
}

/// (inbound, outbound) per bucket, in bucket order, as Throughput reports them.
fn per_bucket(rows: &[SeedRow]) -> Vec<(u64, u64)> {
    let mut out: Vec<(std::time::SystemTime, u64, u64)> = Vec::new();
    for &(bucket, inbound, count) in rows {
        if out.last().is_none_or(|last| last.0 != bucket) {
            out.push((bucket, 0, 0));
        }
        let last = out.last_mut().expect("pushed above");
        let count = u64::try_from(count).expect("COUNT is never negative");
        if inbound {
            last.1 += count;
        } else {
            last.2 += count;
        }
    }
    out.into_iter().map(|(_, i, o)| (i, o)).collect()
}

/// (inbound, outbound) over all rows of the seed query.
fn totals(rows: &[SeedRow]) -> (u64, u64) {
    per_bucket(rows)
        .iter()
        .fold((0, 0), |(i, o), (bi, bo)| (i + bi, o + bo))
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("the CLI writes bodies as base64")
}
