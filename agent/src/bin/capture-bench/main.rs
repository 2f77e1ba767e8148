//! `capture-bench`: the capture overhead benchmark (`cargo xtask bench capture` runs it).
//!
//! wrk against nginx on loopback, agent off and on alternating in the same run. Reports
//! the throughput ratio, p50/p99 latency of both, how busy nginx's worker was, the
//! agent's CPU seconds per 100k requests and the kernel drops / lost events the agent
//! counted. nginx runs on a CPU of its own and wrk on the others, so nginx is saturated
//! (`placement.rs` says why); each round also runs the agent-off and raw runs with every
//! CPU shared, placed by the scheduler alone. Each ratio is reported twice: the median
//! with the agent over the median without, and the median of each round's own ratio.
//!
//! The agent writes `--output raw` (every chunk as JSON with its payload in base64, to
//! /dev/null); each round also runs it with `--output none` (events decoded,
//! connections and streams tracked, nothing written), which separates the cost of
//! capture from that of the raw output, and once capturing nginx's side only
//! (`--include-pid` of its processes): on loopback the agent sees both ends of every
//! request, four events per request, while a node whose clients run elsewhere sees only
//! its server's two. Then a fixed-rate phase (h2load at `--rate` requests/s, HTTP/1.1)
//! with the agent on, which must show zero drops. Needs root, nginx, wrk and h2load.

mod placement;
mod processes;

use std::time::Duration;

use clap::Parser;

use crate::{
    placement::{CpuPlan, Placement},
    processes::{
        Round, agent_losses, cpu_seconds, fixed_rate, free_port, start_agent, start_nginx, wrk,
    },
};

/// Benchmark options.
#[derive(Debug, Clone, Parser)]
struct BenchArgs {
    /// Seconds per measured run.
    #[arg(long, default_value_t = 8)]
    seconds: u32,
    /// Rounds; each runs every variant (agent off, agent on in each setting) once.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// wrk connections.
    #[arg(long, default_value_t = 32)]
    connections: u32,
    /// Requests per second of the fixed-rate phase (0 skips it).
    #[arg(long, default_value_t = 5000)]
    rate: u32,
    /// Response body bytes.
    #[arg(long, default_value_t = 1024)]
    body_bytes: usize,
    /// An extra argument for the agent (repeatable), e.g.
    /// `--agent-arg=--syscall-hook=tracepoints` to measure the fallback hooks.
    #[arg(long = "agent-arg", allow_hyphen_values = true)]
    agent_args: Vec<String>,
}

/// One measured configuration: the agent's setting, or no agent, under one placement.
struct Variant {
    /// What the report calls it.
    label: &'static str,
    placement: Placement,
    /// The agent's `--output` and extra arguments; `None` runs without the agent.
    agent: Option<(&'static str, Vec<String>)>,
    runs: Vec<Round>,
    /// Agent CPU seconds over all of `runs`.
    agent_cpu: f64,
}

impl Variant {
    fn new(
        label: &'static str,
        placement: Placement,
        agent: Option<(&'static str, Vec<String>)>,
    ) -> Self {
        Self {
            label,
            placement,
            agent,
            runs: Vec::new(),
            agent_cpu: 0.0,
        }
    }

    /// The median of `f` over the runs. Machines here are noisy: every figure is one.
    fn median(&self, f: fn(&Round) -> f64) -> f64 {
        median(self.runs.iter().map(f).collect())
    }

    /// This variant's median throughput over `off`'s.
    fn ratio(&self, off: &Variant) -> f64 {
        self.rps() / off.rps().max(1.0)
    }

    /// The median over the rounds of this variant's throughput over `off`'s in the same
    /// round. The host here drifts between a fast and a slow state that lasts a round or
    /// more (nginx at 100 % CPU did 68–71k or 81k req/s); pairing each run with its own
    /// round's baseline cancels that drift, which the ratio of the two medians does not
    /// when the rounds of each fall in the two states in different proportions.
    fn paired_ratio(&self, off: &Variant) -> f64 {
        median(
            self.runs
                .iter()
                .zip(&off.runs)
                .map(|(on, off)| on.rps / off.rps.max(1.0))
                .collect(),
        )
    }

    fn rps(&self) -> f64 {
        self.median(|r| r.rps)
    }

    /// Agent CPU seconds per 100k requests.
    fn cpu_per_100k(&self) -> f64 {
        let requests: f64 = self.runs.iter().map(|r| r.requests).sum();
        self.agent_cpu / requests.max(1.0) * 100_000.0
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(0.0)
}

fn main() -> anyhow::Result<()> {
    let args = BenchArgs::parse();
    let cpus = CpuPlan::new()?;
    let dir = std::env::temp_dir().join(format!("tapwire-bench-{}", std::process::id()));
    let port = free_port()?;
    let nginx = start_nginx(&dir, port, args.body_bytes)?;
    let pinned_client = cpus.client(Placement::Pinned);
    let _warmup = wrk(&nginx, port, args.connections, 2, pinned_client)?;
    // After the warm-up: nginx's port answers before its worker has started.
    let mut server_only = args.agent_args.clone();
    for pid in nginx.pids()? {
        server_only.extend(["--include-pid".to_string(), pid.to_string()]);
    }
    let agent = |output: &'static str, extra: &[String]| Some((output, extra.to_vec()));
    let mut variants = [
        Variant::new("agent off", Placement::Pinned, None),
        Variant::new(
            "agent on (raw)",
            Placement::Pinned,
            agent("raw", &args.agent_args),
        ),
        Variant::new(
            "agent on (none)",
            Placement::Pinned,
            agent("none", &args.agent_args),
        ),
        Variant::new(
            "agent on (raw, server side only)",
            Placement::Pinned,
            agent("raw", &server_only),
        ),
        Variant::new("every CPU shared, agent off", Placement::Shared, None),
        Variant::new(
            "every CPU shared, agent on (raw)",
            Placement::Shared,
            agent("raw", &args.agent_args),
        ),
    ];
    let mut losses = 0.0;
    for round in 0..args.rounds {
        for variant in &mut variants {
            nginx.place(cpus.server(variant.placement))?;
            let client = cpus.client(variant.placement);
            let agent = match &variant.agent {
                Some((output, extra)) => Some(start_agent(port, output, extra)?),
                None => None,
            };
            let agent_cpu_before = agent.as_ref().map(|a| cpu_seconds(a.pid()));
            let run = wrk(&nginx, port, args.connections, args.seconds, client)?;
            if let (Some(agent), Some(before)) = (&agent, agent_cpu_before) {
                // Let the agent drain what is still in the ring.
                std::thread::sleep(Duration::from_millis(500));
                variant.agent_cpu += cpu_seconds(agent.pid()) - before;
                losses += agent_losses(agent.metrics_port)?;
            }
            eprintln!("round {round}: {} {:.0} req/s", variant.label, run.rps);
            variant.runs.push(run);
        }
    }
    let [off, raw, none, server, shared_off, shared_raw] = &variants;
    println!(
        "capture benchmark: wrk -t2 -c{} {}s x {} rounds, nginx {} B body; {}",
        args.connections,
        args.seconds,
        args.rounds,
        args.body_bytes,
        cpus.describe_pinned()
    );
    for variant in &variants {
        println!(
            "  {}: {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms, nginx busy {:.0} % of a CPU",
            variant.label,
            variant.rps(),
            variant.median(|r| r.p50_ms),
            variant.median(|r| r.p99_ms),
            variant.median(|r| r.server_busy) * 100.0
        );
    }
    // Each agent-on variant with its baseline, its name in the summary and its suffix in
    // the JSON keys; the first is the target figure.
    let compared = [
        (raw, off, "", ""),
        (none, off, "output none", "_output_none"),
        (server, off, "server side only", "_server_side_only"),
        (shared_raw, shared_off, "every CPU shared", "_shared_cpus"),
    ];
    // The target figure followed by `unit`, then the others in brackets.
    let summary = |figure: fn(&Variant, &Variant) -> f64, decimals: usize, unit: &str| {
        let others: Vec<String> = compared[1..]
            .iter()
            .map(|(on, off, name, _)| format!("{name}: {:.decimals$}", figure(on, off)))
            .collect();
        let (on, off, ..) = compared[0];
        format!(
            "{:.decimals$}{unit} ({})",
            figure(on, off),
            others.join("; ")
        )
    };
    println!(
        "  throughput ratio (on/off): {}",
        summary(Variant::ratio, 3, "")
    );
    println!(
        "  paired by round (median of each round's on/off): {}",
        summary(Variant::paired_ratio, 3, "")
    );
    println!(
        "  agent CPU: {}",
        summary(|on, _| on.cpu_per_100k(), 2, " s per 100k requests")
    );
    println!("  events dropped or lost while saturated: {losses}");
    let mut fixed_rate_lost = None;
    if args.rate > 0 {
        nginx.place(cpus.server(Placement::Pinned))?;
        let agent = start_agent(port, "raw", &args.agent_args)?;
        let summary = fixed_rate(port, args.rate, args.seconds, pinned_client)?;
        std::thread::sleep(Duration::from_millis(500));
        let lost = agent_losses(agent.metrics_port)?;
        println!(
            "  fixed rate {} req/s with agent on: {summary}; dropped or lost: {lost}",
            args.rate
        );
        fixed_rate_lost = Some(lost);
    }
    drop(nginx);
    let _ = std::fs::remove_dir_all(&dir);
    let mut figures = serde_json::json!({
        "agent_args": &args.agent_args,
        "placement": cpus.describe_pinned(),
        "rps_agent_off_median": off.rps(),
        "p50_ms_agent_off": off.median(|r| r.p50_ms),
        "p50_ms_agent_on": raw.median(|r| r.p50_ms),
        "p99_ms_agent_off": off.median(|r| r.p99_ms),
        "p99_ms_agent_on": raw.median(|r| r.p99_ms),
        "nginx_busy_agent_off": off.median(|r| r.server_busy),
        "nginx_busy_agent_on": raw.median(|r| r.server_busy),
        "rps_agent_off_shared_cpus_median": shared_off.rps(),
        "nginx_busy_agent_off_shared_cpus": shared_off.median(|r| r.server_busy),
        "nginx_busy_agent_on_shared_cpus": shared_raw.median(|r| r.server_busy),
        "drops_at_saturation": losses,
        "fixed_rate_rps": args.rate,
        "drops_at_fixed_rate": fixed_rate_lost,
    });
    for (on, off, _, suffix) in compared {
        figures[format!("rps_agent_on{suffix}_median")] = on.rps().into();
        figures[format!("throughput_ratio{suffix}")] = on.ratio(off).into();
        figures[format!("throughput_ratio{suffix}_paired")] = on.paired_ratio(off).into();
        figures[format!("agent_cpu_s_per_100k_requests{suffix}")] = on.cpu_per_100k().into();
    }
    // The last line, for `cargo xtask bench capture`.
    println!("{figures}");
    Ok(())
}
