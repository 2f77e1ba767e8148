//! `cargo xtask bench`: every benchmark of the project, results in `target/bench/`
//! (`results.json`, machine-readable, and `summary.md`). Each benchmark reports ratios
//! against a baseline measured in the same run, and medians of repeated runs.

mod e2e;
mod ingest;
mod query;
mod stats;

use clap::Args;
use std::fs;

use crate::process::{self, command};
use crate::setup;
use crate::tools::{self, step};

/// Options of `cargo xtask bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// Which benchmarks to run (all when none is named): capture, parse, ingest, query, e2e.
    names: Vec<String>,
}

/// A benchmark: its name and the function that runs it and returns its figures.
struct Bench {
    name: &'static str,
    run: fn() -> anyhow::Result<serde_json::Value>,
}

const BENCHES: &[Bench] = &[
    Bench {
        name: "capture",
        run: capture,
    },
    Bench {
        name: "parse",
        run: parse,
    },
    Bench {
        name: "ingest",
        run: || ingest::run(&ingest::IngestBenchOptions::default()),
    },
    Bench {
        name: "query",
        run: query::run,
    },
    Bench {
        name: "e2e",
        run: e2e,
    },
];

/// Runs the selected benchmarks and writes the result files.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let unknown: Vec<&String> = args
        .names
        .iter()
        .filter(|n| !BENCHES.iter().any(|b| b.name == n.as_str()))
        .collect();
    anyhow::ensure!(
        unknown.is_empty(),
        "unknown benchmark(s) {unknown:?}; known: {}",
        BENCHES
            .iter()
            .map(|b| b.name)
            .collect::<Vec<_>>()
            .join(", ")
    );
    // The benchmarks drive the tests' peers (nginx, wrk, h2load, TimescaleDB, the
    // Python venv): a fresh machine gets them the way `cargo xtask test` does.
    setup::run(setup::Needs::all())?;
    let dir = tools::workspace_root().join("target/bench");
    fs::create_dir_all(&dir)?;
    // Earlier results of the benchmarks not run now are kept: `bench query` today and
    // `bench capture` yesterday make one file, each entry stamped with when it was measured.
    let mut results = match fs::read(dir.join("results.json")) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        },
        Err(_) => serde_json::Map::new(),
    };
    let mut failed = Vec::new();
    for bench in BENCHES
        .iter()
        .filter(|b| args.names.is_empty() || args.names.iter().any(|n| n == b.name))
    {
        step(format!("bench {}", bench.name));
        let mut figures = match (bench.run)() {
            Ok(figures) => figures,
            // One failing benchmark does not lose the others' figures.
            Err(e) => {
                eprintln!("bench {} failed: {e:#}", bench.name);
                failed.push(bench.name);
                serde_json::json!({ "error": format!("{e:#}") })
            }
        };
        if let serde_json::Value::Object(map) = &mut figures {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            map.insert("measured_at_unix".into(), now.into());
        }
        results.insert(bench.name.to_string(), figures);
        // Written after every benchmark, so a long run interrupted late keeps what it has.
        let all = serde_json::Value::Object(results.clone());
        fs::write(
            dir.join("results.json"),
            serde_json::to_string_pretty(&all)?,
        )?;
        fs::write(dir.join("summary.md"), summary(&all))?;
    }
    println!("{}", summary(&serde_json::Value::Object(results.clone())));
    println!("results: {}", dir.join("results.json").display());
    anyhow::ensure!(failed.is_empty(), "benchmark(s) failed: {failed:?}");
    Ok(())
}

/// Runs a cargo bench target that prints its figures as the last JSON line of stdout.
fn cargo_bench_json(package: &str, bench: &str) -> anyhow::Result<serde_json::Value> {
    let out =
        process::output(command("cargo").args(["bench", "-q", "-p", package, "--bench", bench]))?;
    last_json_line(&out, bench)
}

/// wrk against nginx, agent off vs on, alternating (agent/src/bin/capture-bench/).
fn capture() -> anyhow::Result<serde_json::Value> {
    build_release(&[
        ("tapwire-agent", "capture-bench"),
        ("tapwire-agent", "tapwire-agent"),
    ])?;
    // Its stdout goes to a file, not a pipe: nginx and the agent it starts inherit stdout,
    // and a pipe read to EOF would wait for them as well as for the benchmark.
    let dir = tools::workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let log = dir.join("capture-bench.out");
    process::run(
        command(
            &tools::workspace_root()
                .join("target/release/capture-bench")
                .to_string_lossy(),
        )
        .stdout(std::fs::File::create(&log)?),
    )?;
    last_json_line(&std::fs::read_to_string(&log)?, "capture")
}

/// Builds the release binaries of `bins` (`package/binary` pairs) that a benchmark runs.
pub(crate) fn build_release(bins: &[(&str, &str)]) -> anyhow::Result<()> {
    let mut cmd = command("cargo");
    cmd.args(["build", "--release"]);
    for (package, bin) in bins {
        cmd.args(["-p", package, "--bin", bin]);
    }
    process::run(&mut cmd)
}

/// The figures a benchmark prints as its last JSON line.
fn last_json_line(out: &str, bench: &str) -> anyhow::Result<serde_json::Value> {
    let line = out
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| anyhow::anyhow!("bench {bench} printed no JSON result"))?;
    Ok(serde_json::from_str(line)?)
}

fn parse() -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::json!({
        "http1": cargo_bench_json("tapwire-protocols", "parse_http1")?,
        "http2": cargo_bench_json("tapwire-protocols", "parse_http2")?,
    }))
}

fn e2e() -> anyhow::Result<serde_json::Value> {
    step("building release binaries for the end-to-end run");
    build_release(&[
        ("tapwire-agent", "tapwire-agent"),
        ("tapwire-collector", "tapwire-collector"),
        ("tapwire-cli", "tapwire"),
    ])?;
    e2e::run(60)
}

/// A Markdown table: one row per benchmark figure.
fn summary(results: &serde_json::Value) -> String {
    let mut out = String::from("| benchmark | figure | value |\n|---|---|---|\n");
    fn walk(out: &mut String, bench: &str, prefix: &str, v: &serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(out, bench, &key, v);
                }
            }
            // Long lists and lists of objects (per-round details, every sample) would make
            // the table unreadable: they stay in results.json.
            serde_json::Value::Array(items)
                if items.len() > 5 || items.iter().any(serde_json::Value::is_object) =>
            {
                out.push_str(&format!(
                    "| {bench} | {prefix} | {} values (results.json) |\n",
                    items.len()
                ))
            }
            other => out.push_str(&format!("| {bench} | {prefix} | {other} |\n")),
        }
    }
    if let serde_json::Value::Object(map) = results {
        for (bench, v) in map {
            walk(&mut out, bench, "", v);
        }
    }
    out
}
