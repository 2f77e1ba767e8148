//! The end-to-end benchmark: load through nginx with the whole pipeline on (agent →
//! collector → TimescaleDB), measuring what a user cares about:
//!
//! - completeness: pairs stored ÷ requests made, at a fixed 2,000 requests/s for 60 s
//!   (h2load `--rps`, HTTP/1.1), each request counted on both sides (client and server);
//! - throughput ratio: wrk at saturation with the agent on ÷ with it off, alternating in
//!   the same run, median of the rounds;
//! - capture → queryable delay: a tagged request every second during the fixed-rate load,
//!   and the time until `ListPairs` returns it (p50/p99).

use anyhow::Context;
use std::process::Command;
use std::time::{Duration, Instant};
use tapwire_e2e::peers::Nginx;
use tapwire_e2e::stack::{Agent, Binaries, Cli, Collector};

use crate::bench::stats::{median, percentile};
use crate::process;
use crate::tools;

/// Requests per second of the completeness run.
const RATE: u32 = 2_000;
/// h2load clients of the completeness run (each at `RATE / CLIENTS` requests/s).
const CLIENTS: u32 = 20;
/// Rounds of the saturation comparison.
const ROUNDS: usize = 3;

/// Runs the benchmark; `seconds` is the length of the fixed-rate run.
pub fn run(seconds: u32) -> anyhow::Result<serde_json::Value> {
    let bins = Binaries::profile("release");
    let scratch = std::env::temp_dir().join(format!("tapwire-bench-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let root = tools::timescaledb_root().to_string_lossy().into_owned();
    let mut collector = Collector::start(
        &bins,
        &scratch.join("collector"),
        &scratch,
        &["--postgres-root", &root],
    )?;
    let nginx = Nginx::start(&scratch.join("nginx"))?;
    let cli = Cli::new(&bins, &collector.url())?;

    // Saturation: agent off vs on, alternating.
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        off.push(wrk(&nginx, &format!("off{round}"))?);
        let mut agent = Agent::start(
            &bins,
            &collector.url(),
            &scratch.join("agent"),
            &scratch,
            &[],
        )?;
        on.push(wrk(&nginx, &format!("on{round}"))?);
        agent.stop();
    }
    let (off_rps, on_rps) = (median(&off), median(&on));

    // Completeness and delay at a fixed rate.
    let mut agent = Agent::start(
        &bins,
        &collector.url(),
        &scratch.join("agent"),
        &scratch,
        &[],
    )?;
    let tag = format!("run{}", std::process::id());
    let url = format!("http://{}/hello.txt?{tag}", nginx.http);
    let load = Command::new("h2load")
        .args([
            "--h1",
            "-c",
            &CLIENTS.to_string(),
            "--rps",
            &(RATE / CLIENTS).to_string(),
        ])
        .args(["-D", &seconds.to_string(), &url])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting h2load")?;
    let delays = probe_delays(&cli, &nginx, seconds)?;
    let out = load.wait_with_output()?;
    let report = String::from_utf8_lossy(&out.stdout);
    let sent = h2load_succeeded(&report).context("reading h2load's report")?;
    // Both sides of every request: h2load's outbound pair and nginx's inbound pair.
    let stored = wait_for_count(&cli, &tag, 2 * sent, Duration::from_secs(60))?;
    agent.stop();
    collector.stop();
    let _ = std::fs::remove_dir_all(&scratch);

    Ok(serde_json::json!({
        "completeness": stored as f64 / (2 * sent) as f64,
        "requests": sent,
        "pairs_stored": stored,
        "rate_rps": RATE,
        "seconds": seconds,
        "saturation_rps_agent_off": off_rps,
        "saturation_rps_agent_on": on_rps,
        "throughput_ratio": on_rps / off_rps,
        "delay_p50_ms": percentile(&delays, 0.5),
        "delay_p99_ms": percentile(&delays, 0.99),
    }))
}

/// wrk at saturation for 10 s; requests per second.
fn wrk(nginx: &Nginx, tag: &str) -> anyhow::Result<f64> {
    let url = format!("http://{}/hello.txt?{tag}", nginx.http);
    let out = process::output(Command::new("wrk").args(["-t2", "-c32", "-d10s", &url]))?;
    out.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .context("wrk printed no Requests/sec")
}

/// Sends one tagged request a second for `seconds` and measures how long each takes to
/// become visible through the query API; milliseconds.
fn probe_delays(cli: &Cli, nginx: &Nginx, seconds: u32) -> anyhow::Result<Vec<f64>> {
    let mut delays = Vec::new();
    for i in 0..seconds.saturating_sub(5) {
        let probe = format!("probe{}x{i}", std::process::id());
        let start = Instant::now();
        process::output(
            Command::new("curl").args(["-s", &format!("http://{}/hello.txt?{probe}", nginx.http)]),
        )?;
        loop {
            let rows = cli.json(&["pairs", "list", "--since", "5m", "--text", &probe])?;
            if rows.len() >= 2 {
                delays.push(start.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            if start.elapsed() > Duration::from_secs(30) {
                delays.push(f64::INFINITY);
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_secs(1).saturating_sub(start.elapsed()));
    }
    Ok(delays)
}

fn h2load_succeeded(report: &str) -> Option<u64> {
    // "requests: 120000 total, 120000 started, 120000 done, 120000 succeeded, 0 failed, …"
    let line = report.lines().find(|l| l.starts_with("requests:"))?;
    line.split(',')
        .find(|part| part.trim_end().ends_with("succeeded"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Counts the stored pairs whose path has `tag`, waiting until `expected` or `timeout`.
fn wait_for_count(cli: &Cli, tag: &str, expected: u64, timeout: Duration) -> anyhow::Result<u64> {
    let deadline = Instant::now() + timeout;
    loop {
        let buckets = cli.json(&[
            "throughput",
            "--since",
            "30m",
            "--interval",
            "1m",
            "--text",
            tag,
        ])?;
        let count: u64 = buckets
            .iter()
            .map(|b| count_field(b, "inbound") + count_field(b, "outbound"))
            .sum();
        if count >= expected || Instant::now() > deadline {
            return Ok(count);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn count_field(v: &serde_json::Value, key: &str) -> u64 {
    match v.get(key) {
        Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(serde_json::Value::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
    }
}
