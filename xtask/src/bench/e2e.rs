//! The end-to-end benchmark: load through nginx with the whole pipeline on (agent →
//! collector → TimescaleDB), measuring what a user cares about:
//!
//! - completeness: pairs stored ÷ requests made, at a fixed 2,000 requests/s for 60 s
//!   (h2load `--rps`, HTTP/1.1), each request counted on both sides (client and server);
//! - throughput ratio: wrk at saturation with the agent on ÷ with it off, alternating in
//!   the same run, median of the rounds (and, as a diagnostic, the completeness of the
//!   agent-on rounds: pairs stored ÷ 2 × requests wrk completed);
//! - capture → queryable delay: a tagged request every second during the fixed-rate load,
//!   and the time until `ListPairs` returns both its sides (p50/p99).
//!
//! The fixed-rate run comes first, on an idle collector. With it the agent's and the
//! collector's counters are recorded (kernel drops, sequence gaps, export drops, pairs
//! stored and skipped as duplicates), so a completeness below 1 says where pairs went.

use anyhow::Context;
use std::net::SocketAddr;
use std::path::Path;
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

/// Runs the benchmark; `seconds` is the length of the fixed-rate run. The scratch folder
/// (logs of the collector, agent and nginx) is kept when the run fails.
pub fn run(seconds: u32) -> anyhow::Result<serde_json::Value> {
    let bins = Binaries::profile("release");
    let scratch = std::env::temp_dir().join(format!("tapwire-bench-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let result = measure(&bins, &scratch, seconds);
    match &result {
        Ok(_) => {
            let _ = std::fs::remove_dir_all(&scratch);
        }
        Err(_) => eprintln!("bench e2e: logs kept in {}", scratch.display()),
    }
    result
}

fn measure(bins: &Binaries, scratch: &Path, seconds: u32) -> anyhow::Result<serde_json::Value> {
    let started = Instant::now();
    let root = tools::timescaledb_root().to_string_lossy().into_owned();
    let mut collector = Collector::start(
        bins,
        &scratch.join("collector"),
        scratch,
        &["--postgres-root", &root],
    )?;
    let nginx = Nginx::start(&scratch.join("nginx"))?;
    let cli = Cli::new(bins, &collector.url())?;
    let agent_state = scratch.join("agent");

    // Completeness and delay at a fixed rate, first: the saturation rounds below make
    // millions of pairs, and the collector's backlog of them would otherwise be measured
    // as this run's delay.
    let mut agent = Agent::start(bins, &collector.url(), &agent_state, scratch, &[])?;
    let tag = format!("run{}", std::process::id());
    let url = format!("http://{}/hello.txt?{tag}", nginx.http);
    // h2load's report goes to a file, not a pipe, like capture-bench's: nothing it starts
    // can hold the pipe open.
    let report_path = scratch.join("h2load.out");
    let mut load = Command::new("h2load")
        .args([
            "--h1",
            "-c",
            &CLIENTS.to_string(),
            "--rps",
            &(RATE / CLIENTS).to_string(),
        ])
        .args(["-D", &seconds.to_string(), &url])
        .stdout(std::fs::File::create(&report_path)?)
        .spawn()
        .context("starting h2load")?;
    let delays = probe_delays(&cli, &nginx, seconds)?;
    let status = load.wait()?;
    let report = std::fs::read_to_string(&report_path)?;
    anyhow::ensure!(status.success(), "h2load failed ({status}): {report}");
    let sent =
        h2load_succeeded(&report).with_context(|| format!("reading h2load's report: {report}"))?;
    // Both sides of every request: h2load's outbound pair and nginx's inbound pair.
    let expected = 2 * sent;
    let (delivered, waited) = wait_for_count(&cli, &tag, expected, Duration::from_secs(60))?;
    // Where a missing pair went: the agent's own counters, read while it still runs.
    let agent_counters = scrape(agent.metrics, AGENT_COUNTERS);
    // Stopped, the agent flushes and resends whatever is unacknowledged; a pair doubled by
    // such a resend would show only in a count taken after that.
    agent.stop();
    let (stored, _) = wait_for_count(&cli, &tag, expected, Duration::from_secs(10))?;
    let (inbound, outbound) = (stored.inbound, stored.outbound);
    let collector_counters = scrape(collector.metrics, COLLECTOR_COUNTERS);

    // Saturation: agent off vs on, alternating.
    let (mut off, mut on) = (Vec::new(), Vec::new());
    let mut saturated_requests = 0;
    let mut saturated_rounds = Vec::new();
    for round in 0..ROUNDS {
        off.push(wrk(&nginx, &format!("satoff{round}"))?.rps);
        let mut agent = Agent::start(bins, &collector.url(), &agent_state, scratch, &[])?;
        let run = wrk(&nginx, &format!("saton{round}"))?;
        on.push(run.rps);
        saturated_requests += run.requests;
        let counters = scrape(agent.metrics, AGENT_COUNTERS);
        let stop_started = Instant::now();
        let clean = agent.stop();
        saturated_rounds.push(serde_json::json!({
            "requests": run.requests,
            "rps": run.rps,
            "agent_before_stop": counters,
            "agent_stop_seconds": stop_started.elapsed().as_secs_f64(),
            "agent_stopped_cleanly": clean,
        }));
    }
    let (off_rps, on_rps) = (median(&off), median(&on));
    // Completeness at saturation, a diagnostic without a target: wrk does not count the
    // requests still in flight when it stops, which nginx may have answered (up to one
    // per connection and round more inbound pairs than counted). What the last agent
    // left unacknowledged in its spool is delivered by the next start, as in production.
    let mut agent = Agent::start(bins, &collector.url(), &agent_state, scratch, &[])?;
    let (saturated, saturated_wait) = wait_for_count(
        &cli,
        "saton",
        2 * saturated_requests,
        Duration::from_secs(120),
    )?;
    agent.stop();
    let collector_after_saturation = scrape(collector.metrics, COLLECTOR_COUNTERS);
    collector.stop();

    Ok(serde_json::json!({
        "completeness": (inbound + outbound) as f64 / expected as f64,
        "requests": sent,
        "pairs_expected": expected,
        "pairs_stored": inbound + outbound,
        "pairs_stored_inbound": inbound,
        "pairs_stored_outbound": outbound,
        "pairs_stored_before_agent_stop": delivered.inbound + delivered.outbound,
        "seconds_until_stored": waited.as_secs_f64(),
        "rate_rps": RATE,
        "seconds": seconds,
        "saturation_rps_agent_off": off_rps,
        "saturation_rps_agent_on": on_rps,
        "saturation_rps_rounds_off": off,
        "saturation_rps_rounds_on": on,
        "throughput_ratio": on_rps / off_rps,
        "saturation_requests_agent_on": saturated_requests,
        "saturation_pairs_stored_inbound": saturated.inbound,
        "saturation_pairs_stored_outbound": saturated.outbound,
        "saturation_completeness": (saturated.inbound + saturated.outbound) as f64
            / (2 * saturated_requests) as f64,
        "saturation_seconds_until_stored": saturated_wait.as_secs_f64(),
        "saturation_rounds": saturated_rounds,
        "collector_after_saturation": collector_after_saturation,
        "delays_ms": delays.iter().map(|d| (d * 10.0).round() / 10.0).collect::<Vec<_>>(),
        "delay_probes": delays.len(),
        "delay_p50_ms": percentile(&delays, 0.5),
        "delay_p99_ms": percentile(&delays, 0.99),
        "delay_max_ms": delays.iter().copied().fold(0.0, f64::max),
        "agent": agent_counters,
        "collector": collector_counters,
        "elapsed_s": started.elapsed().as_secs_f64(),
    }))
}

/// The agent's counters that say where a pair was lost (kernel ring, sequence gaps,
/// export queue or spool) or how it left.
const AGENT_COUNTERS: &[&str] = &[
    "tapwire_agent_kernel_drops_total",
    "tapwire_agent_events_lost_total",
    "tapwire_agent_decode_errors_total",
    "tapwire_agent_export_pairs_submitted_total",
    "tapwire_agent_export_pairs_dropped_queue_full_total",
    "tapwire_agent_export_pairs_dropped_spool_full_total",
    "tapwire_agent_export_pairs_dropped_rejected_total",
    "tapwire_agent_export_pairs_dropped_spool_error_total",
    "tapwire_agent_export_pairs_acked_stored_total",
    "tapwire_agent_export_pairs_acked_duplicate_total",
];

/// The collector's ingest counters.
const COLLECTOR_COUNTERS: &[&str] = &[
    "tapwire_collector_pairs_stored_total",
    "tapwire_collector_pairs_duplicate_total",
    "tapwire_collector_ingest_errors_total",
];

/// The samples of the metrics named `names` (with their labels) from the Prometheus
/// endpoint at `addr`; a diagnostic, so an unreachable endpoint gives an empty object.
fn scrape(addr: SocketAddr, names: &[&str]) -> serde_json::Value {
    let text = process::output(Command::new("curl").args([
        "-s",
        "--max-time",
        "5",
        &format!("http://{addr}/metrics"),
    ]))
    .unwrap_or_default();
    let mut out = serde_json::Map::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = key.split('{').next().unwrap_or(key);
        if names.contains(&name)
            && let Ok(value) = value.parse::<f64>()
        {
            out.insert(key.to_string(), value.into());
        }
    }
    serde_json::Value::Object(out)
}

/// One wrk run: its requests per second and the requests it completed.
struct WrkRun {
    rps: f64,
    requests: u64,
}

/// wrk at saturation for 10 s.
fn wrk(nginx: &Nginx, tag: &str) -> anyhow::Result<WrkRun> {
    let url = format!("http://{}/hello.txt?{tag}", nginx.http);
    let out = process::output(Command::new("wrk").args(["-t2", "-c32", "-d10s", &url]))?;
    let rps = out
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("wrk printed no Requests/sec: {out}"))?;
    // "  1234567 requests in 10.00s, 280.12MB read"
    let requests = out
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("wrk printed no request count: {out}"))?;
    Ok(WrkRun { rps, requests })
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

/// Stored pairs, by direction.
#[derive(Debug, Clone, Copy, Default)]
struct Stored {
    inbound: u64,
    outbound: u64,
}

/// A count that has not grown for this long will not reach what was expected: the
/// missing pairs were dropped, and waiting out the full timeout only makes the run longer.
const STALLED: Duration = Duration::from_secs(15);

/// Counts the stored pairs whose path has `tag` through `Throughput`, waiting until
/// `expected`, `timeout`, or a count that stopped growing (`STALLED`); returns the count
/// and how long it took.
fn wait_for_count(
    cli: &Cli,
    tag: &str,
    expected: u64,
    timeout: Duration,
) -> anyhow::Result<(Stored, Duration)> {
    let start = Instant::now();
    let (mut last, mut last_growth) = (0, Instant::now());
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
        let stored = buckets.iter().fold(Stored::default(), |acc, b| Stored {
            inbound: acc.inbound + count_field(b, "inbound"),
            outbound: acc.outbound + count_field(b, "outbound"),
        });
        let total = stored.inbound + stored.outbound;
        if total > last {
            (last, last_growth) = (total, Instant::now());
        }
        if total >= expected || start.elapsed() > timeout || last_growth.elapsed() > STALLED {
            return Ok((stored, start.elapsed()));
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
