//! The processes a benchmark run drives: nginx, wrk, h2load and the agent, and what is
//! read from them (wrk's figures, CPU time, the agent's loss counters).

use std::{
    io::{BufRead, BufReader},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::placement::{place_command, place_process};

/// A child process killed (and reaped) when dropped.
pub struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// nginx's master process, stopped with SIGTERM when dropped: it then stops its
/// workers, which SIGKILL would leave running (and serving the port) after the run.
pub struct Nginx(Child);

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

/// One wrk run's figures.
#[derive(Debug, Default, Clone, Copy)]
pub struct Round {
    /// Requests completed.
    pub requests: f64,
    /// Requests per second.
    pub rps: f64,
    /// Median latency.
    pub p50_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
    /// nginx workers' CPU seconds per second of the run: 1.0 is a saturated worker.
    pub server_busy: f64,
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

/// A TCP port free on loopback now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts nginx (one worker) serving a `body_bytes` file as `/body` on `port`, with its
/// configuration and files in `dir`.
pub fn start_nginx(dir: &Path, port: u16, body_bytes: usize) -> anyhow::Result<Nginx> {
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
    pub fn pids(&self) -> anyhow::Result<Vec<u32>> {
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

    /// The pids of nginx's workers.
    pub fn workers(&self) -> anyhow::Result<Vec<u32>> {
        Ok(self.pids()?.split_off(1))
    }

    /// Moves nginx's master and workers to `cpus`.
    pub fn place(&self, cpus: &[usize]) -> anyhow::Result<()> {
        for pid in self.pids()? {
            place_process(pid, cpus)?;
        }
        Ok(())
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

/// A wrk load of `connections` connections for `seconds` against nginx on `port`, run
/// on `cpus`, with the share of a CPU nginx's workers were busy meanwhile.
pub fn wrk(
    nginx: &Nginx,
    port: u16,
    connections: u32,
    seconds: u32,
    cpus: &[usize],
) -> anyhow::Result<Round> {
    let workers = nginx.workers()?;
    let server_cpu = |workers: &[u32]| workers.iter().map(|&pid| cpu_seconds(pid)).sum::<f64>();
    let server_before = server_cpu(&workers);
    let started = Instant::now();
    let mut command = Command::new("wrk");
    command.args([
        "-t2",
        &format!("-c{connections}"),
        &format!("-d{seconds}s"),
        "--latency",
        &format!("http://127.0.0.1:{port}/body"),
    ]);
    place_command(&mut command, cpus);
    let out = command.output().context("running wrk")?;
    let server_busy =
        (server_cpu(&workers) - server_before) / started.elapsed().as_secs_f64().max(1e-3);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut round = Round {
        server_busy,
        ..Round::default()
    };
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

/// An agent started by [`start_agent`], killed when dropped.
pub struct RunningAgent {
    child: Killed,
    /// Where its metrics are served.
    pub metrics_port: u16,
}

impl RunningAgent {
    /// The agent's pid.
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }
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

/// Starts the agent (`--output output`, only nginx's port, `extra` arguments) and waits
/// until it captures.
pub fn start_agent(port: u16, output: &str, extra: &[String]) -> anyhow::Result<RunningAgent> {
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
pub fn cpu_seconds(pid: u32) -> f64 {
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
pub fn agent_losses(metrics_port: u16) -> anyhow::Result<f64> {
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

/// h2load at `rate` requests/s for `seconds`, run on `cpus`: its summary lines.
pub fn fixed_rate(port: u16, rate: u32, seconds: u32, cpus: &[usize]) -> anyhow::Result<String> {
    // h2load --rate starts `rate` connections per period; with keep-alive clients each
    // sending requests at 1 req per 10 ms, 50 clients give 5000 req/s.
    let clients = 50;
    let per_client = (rate / clients).max(1);
    let total = rate * seconds;
    let mut command = Command::new("h2load");
    command.args([
        "--h1",
        "-c",
        &clients.to_string(),
        "-n",
        &total.to_string(),
        "--rps",
        &per_client.to_string(),
        &format!("http://127.0.0.1:{port}/body"),
    ]);
    place_command(&mut command, cpus);
    let out = command.output().context("running h2load")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter(|l| l.starts_with("finished in") || l.starts_with("requests:"))
        .collect::<Vec<_>>()
        .join("; "))
}
