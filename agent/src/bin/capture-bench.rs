//! `capture-bench`: the capture overhead benchmark (`cargo xtask bench capture` runs it).
//!
//! wrk against nginx on loopback, agent off and on alternating in the same run. Reports
//! the throughput ratio, p50/p99 latency of both, the agent's CPU seconds per 100k
//! requests and the kernel drops / lost events the agent counted. The agent writes
//! `--output raw` (every chunk as JSON with its payload in base64, to /dev/null); each
//! round also runs it with `--output none` (events decoded, connections and streams
//! tracked, nothing written), which separates the cost of capture from that of the
//! raw output. A third run per round captures nginx's side only (`--include-pid` of
//! its processes): on loopback the agent sees both ends of every request, four events
//! per request, while a node whose clients run elsewhere sees only its server's two.
//! Then a fixed-rate phase (h2load at `--rate` requests/s, HTTP/1.1) with the agent
//! on, which must show zero drops. Needs root, nginx, wrk and h2load.

use std::{
    io::{BufRead, BufReader},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Parser;

/// Benchmark options.
#[derive(Debug, Clone, Parser)]
struct BenchArgs {
    /// Seconds per measured round.
    #[arg(long, default_value_t = 8)]
    seconds: u32,
    /// Rounds per mode (agent off / on alternate).
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

/// A child process killed (and reaped) when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// nginx's master process, stopped with SIGTERM when dropped: it then stops its
/// workers, which SIGKILL would leave running (and serving the port) after the run.
struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child,
        // not reaped yet.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Round {
    requests: f64,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn wait_port(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on port {port}")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn start_nginx(dir: &Path, port: u16, body_bytes: usize) -> anyhow::Result<Nginx> {
    std::fs::create_dir_all(dir.join("tmp"))?;
    std::fs::write(dir.join("body"), vec![b'x'; body_bytes])?;
    let d = dir.display();
    let conf = format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 1024; }}\nhttp {{\n access_log off;\n sendfile off;\n\
         client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;\n\
         uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
         server {{ listen 127.0.0.1:{port}; root {d}; keepalive_requests 1000000; }}\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), conf)?;
    let child = Command::new("nginx")
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-p")
        .arg(dir)
        .stderr(Stdio::null())
        .spawn()
        .context("starting nginx")?;
    let guard = Nginx(child);
    wait_port(port)?;
    Ok(guard)
}

impl Nginx {
    /// The pids of nginx's master and its workers.
    fn pids(&self) -> anyhow::Result<Vec<u32>> {
        let master = self.0.id();
        let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
            .context("listing nginx's workers")?;
        let mut pids = vec![master];
        for pid in children.split_whitespace() {
            pids.push(pid.parse().context("a worker pid")?);
        }
        if pids.len() < 2 {
            bail!("nginx has no worker process");
        }
        Ok(pids)
    }
}

fn parse_ms(value: &str) -> Option<f64> {
    let (number, scale) = if let Some(v) = value.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = value.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = value.strip_suffix('s') {
        (v, 1000.0)
    } else {
        (value, 1.0)
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

fn wrk(port: u16, args: &BenchArgs) -> anyhow::Result<Round> {
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{}", args.connections),
            &format!("-d{}s", args.seconds),
            "--latency",
            &format!("http://127.0.0.1:{port}/body"),
        ])
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut round = Round::default();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["50%", v] => round.p50_ms = parse_ms(v).unwrap_or(0.0),
            ["99%", v] => round.p99_ms = parse_ms(v).unwrap_or(0.0),
            ["Requests/sec:", v] => round.rps = v.parse().unwrap_or(0.0),
            [n, "requests", "in", ..] => round.requests = n.parse().unwrap_or(0.0),
            _ => {}
        }
    }
    if round.rps == 0.0 {
        bail!("could not parse wrk output:\n{text}");
    }
    Ok(round)
}

struct RunningAgent {
    child: Killed,
    metrics_port: u16,
}

fn agent_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let path = me.with_file_name("tapwire-agent");
    if !path.exists() {
        bail!(
            "{} not found: build it first (cargo build -p tapwire-agent --release)",
            path.display()
        );
    }
    Ok(path)
}

fn start_agent(port: u16, output: &str, extra: &[String]) -> anyhow::Result<RunningAgent> {
    let metrics_port = free_port()?;
    let mut child = Command::new(agent_binary()?)
        .args([
            "--output",
            output,
            "--include-port",
            &port.to_string(),
            "--metrics-addr",
            &format!("127.0.0.1:{metrics_port}"),
        ])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting tapwire-agent")?;
    let stderr = child.stderr.take().context("agent stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("tapwire-agent: capturing") => break,
            Some(Ok(_)) => {}
            _ => bail!("tapwire-agent exited before capturing"),
        }
    }
    // Keep draining stderr so the agent never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    Ok(RunningAgent {
        child: Killed(child),
        metrics_port,
    })
}

/// utime + stime of `pid` in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_comm = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 (1-based) of stat; after the comm they are at 11 and 12.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz.max(1.0)
}

/// Sum of the agent's drop and loss counters (excluding truncation, which is not a loss
/// of events) from its metrics endpoint.
fn agent_losses(metrics_port: u16) -> anyhow::Result<f64> {
    let out = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{metrics_port}/metrics")])
        .output()
        .context("curl metrics")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut total = 0.0;
    for line in text.lines() {
        let counted = (line.starts_with("tapwire_agent_kernel_drops_total")
            && !line.contains("truncated"))
            || line.starts_with("tapwire_agent_events_lost_total");
        if counted && let Some(v) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            total += v;
        }
    }
    Ok(total)
}

fn fixed_rate(port: u16, rate: u32, seconds: u32) -> anyhow::Result<String> {
    // h2load --rate starts `rate` connections per period; with keep-alive clients each
    // sending requests at 1 req per 10 ms, 50 clients give 5000 req/s.
    let clients = 50;
    let per_client = (rate / clients).max(1);
    let total = rate * seconds;
    let out = Command::new("h2load")
        .args([
            "--h1",
            "-c",
            &clients.to_string(),
            "-n",
            &total.to_string(),
            "--rps",
            &per_client.to_string(),
            &format!("http://127.0.0.1:{port}/body"),
        ])
        .output()
        .context("running h2load")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter(|l| l.starts_with("finished in") || l.starts_with("requests:"))
        .collect::<Vec<_>>()
        .join("; "))
}

fn main() -> anyhow::Result<()> {
    let args = BenchArgs::parse();
    let dir = std::env::temp_dir().join(format!("tapwire-bench-{}", std::process::id()));
    let port = free_port()?;
    let nginx = start_nginx(&dir, port, args.body_bytes)?;
    let _warmup = wrk(
        port,
        &BenchArgs {
            seconds: 2,
            ..args.clone()
        },
    )?;
    // After the warm-up: nginx's port answers before its worker has started.
    let mut server_only = args.agent_args.clone();
    for pid in nginx.pids()? {
        server_only.extend(["--include-pid".to_string(), pid.to_string()]);
    }

    let mut off = Vec::new();
    let mut on = Vec::new();
    let mut on_none = Vec::new();
    let mut on_server = Vec::new();
    let mut agent_cpu = 0.0;
    let mut agent_cpu_none = 0.0;
    let mut agent_cpu_server = 0.0;
    let mut losses = 0.0;
    for round in 0..args.rounds {
        let baseline = wrk(port, &args)?;
        eprintln!("round {round}: agent off {:.0} req/s", baseline.rps);
        off.push(baseline);
        for (label, output, agent_args, results, cpu) in [
            ("raw", "raw", &args.agent_args, &mut on, &mut agent_cpu),
            (
                "none",
                "none",
                &args.agent_args,
                &mut on_none,
                &mut agent_cpu_none,
            ),
            (
                "raw, server side only",
                "raw",
                &server_only,
                &mut on_server,
                &mut agent_cpu_server,
            ),
        ] {
            let agent = start_agent(port, output, agent_args)?;
            let pid = agent.child.0.id();
            let cpu_before = cpu_seconds(pid);
            let with_agent = wrk(port, &args)?;
            // Let the agent drain what is still in the ring.
            std::thread::sleep(Duration::from_millis(500));
            *cpu += cpu_seconds(pid) - cpu_before;
            losses += agent_losses(agent.metrics_port)?;
            eprintln!(
                "round {round}: agent on ({label}) {:.0} req/s",
                with_agent.rps
            );
            results.push(with_agent);
        }
    }
    // Machines here are noisy: every figure is the median over the rounds.
    let median = |v: &[Round], f: fn(&Round) -> f64| {
        let mut xs: Vec<f64> = v.iter().map(f).collect();
        xs.sort_by(f64::total_cmp);
        xs.get(xs.len() / 2).copied().unwrap_or(0.0)
    };
    // Agent CPU seconds per 100k requests of the runs it was measured over.
    let cpu_per_100k = |cpu: f64, runs: &[Round]| {
        cpu / runs.iter().map(|r| r.requests).sum::<f64>().max(1.0) * 100_000.0
    };
    println!(
        "capture benchmark: wrk -t2 -c{} {}s x {} rounds, nginx {} B body",
        args.connections, args.seconds, args.rounds, args.body_bytes
    );
    println!(
        "  agent off: {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms",
        median(&off, |r| r.rps),
        median(&off, |r| r.p50_ms),
        median(&off, |r| r.p99_ms)
    );
    println!(
        "  agent on:  {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms",
        median(&on, |r| r.rps),
        median(&on, |r| r.p50_ms),
        median(&on, |r| r.p99_ms)
    );
    println!(
        "  agent on, output none: {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms",
        median(&on_none, |r| r.rps),
        median(&on_none, |r| r.p50_ms),
        median(&on_none, |r| r.p99_ms)
    );
    println!(
        "  agent on, server side only: {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms",
        median(&on_server, |r| r.rps),
        median(&on_server, |r| r.p50_ms),
        median(&on_server, |r| r.p99_ms)
    );
    let ratio = |v: &[Round]| median(v, |r| r.rps) / median(&off, |r| r.rps).max(1.0);
    println!(
        "  throughput ratio (on/off): {:.3} (output none: {:.3}; server side only: {:.3})",
        ratio(&on),
        ratio(&on_none),
        ratio(&on_server)
    );
    println!(
        "  agent CPU: {:.2} s per 100k requests (output none: {:.2}; server side only: {:.2})",
        cpu_per_100k(agent_cpu, &on),
        cpu_per_100k(agent_cpu_none, &on_none),
        cpu_per_100k(agent_cpu_server, &on_server)
    );
    println!("  events dropped or lost while saturated: {losses}");
    let mut fixed_rate_lost = None;
    if args.rate > 0 {
        let agent = start_agent(port, "raw", &args.agent_args)?;
        let summary = fixed_rate(port, args.rate, args.seconds)?;
        std::thread::sleep(Duration::from_millis(500));
        let lost = agent_losses(agent.metrics_port)?;
        println!(
            "  fixed rate {} req/s with agent on: {summary}; dropped or lost: {lost}",
            args.rate
        );
        fixed_rate_lost = Some(lost);
    }
    let _ = std::fs::remove_dir_all(&dir);
    // The last line, for `cargo xtask bench capture`.
    println!(
        "{}",
        serde_json::json!({
            "agent_args": &args.agent_args,
            "rps_agent_off_median": median(&off, |r| r.rps),
            "rps_agent_on_median": median(&on, |r| r.rps),
            "throughput_ratio": ratio(&on),
            "p50_ms_agent_off": median(&off, |r| r.p50_ms),
            "p50_ms_agent_on": median(&on, |r| r.p50_ms),
            "p99_ms_agent_off": median(&off, |r| r.p99_ms),
            "p99_ms_agent_on": median(&on, |r| r.p99_ms),
            "agent_cpu_s_per_100k_requests": cpu_per_100k(agent_cpu, &on),
            "rps_agent_on_output_none_median": median(&on_none, |r| r.rps),
            "throughput_ratio_output_none": ratio(&on_none),
            "agent_cpu_s_per_100k_requests_output_none": cpu_per_100k(agent_cpu_none, &on_none),
            "rps_agent_on_server_side_only_median": median(&on_server, |r| r.rps),
            "throughput_ratio_server_side_only": ratio(&on_server),
            "agent_cpu_s_per_100k_requests_server_side_only": cpu_per_100k(agent_cpu_server, &on_server),
            "drops_at_saturation": losses,
            "fixed_rate_rps": args.rate,
            "drops_at_fixed_rate": fixed_rate_lost,
        })
    );
    Ok(())
}
