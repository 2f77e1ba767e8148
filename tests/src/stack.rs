//! The tapwire binaries, started as a real stack: collector (with its managed
//! PostgreSQL/TimescaleDB), agent, and the `tapwire` CLI to query them.

use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::child::{Child, free_port, wait_for_port};

/// Where the tapwire binaries are.
#[derive(Debug, Clone)]
pub struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// The binaries of the profile `profile` ("debug", "release") of this workspace.
    pub fn profile(profile: &str) -> Self {
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
            PathBuf::from,
        );
        let dir = target.join(profile);
        Self {
            dir: dir.canonicalize().unwrap_or(dir),
        }
    }

    /// The path of binary `name`, which must have been built.
    pub fn path(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.join(name);
        if !path.exists() {
            bail!(
                "{} is not built (run `cargo build --workspace --bins` first)",
                path.display()
            );
        }
        Ok(path)
    }
}

/// A running `tapwire-collector` with its managed database.
pub struct Collector {
    /// The gRPC address (ingest and query).
    pub addr: SocketAddr,
    /// Prometheus metrics and health.
    pub metrics: SocketAddr,
    /// The collector's data folder (database and payloads).
    pub data_dir: PathBuf,
    bin: PathBuf,
    extra: Vec<String>,
    log: PathBuf,
    child: Child,
}

impl Collector {
    /// Starts a collector keeping its data in `data_dir`, with extra flags `extra`.
    pub fn start(
        bins: &Binaries,
        data_dir: &Path,
        log_dir: &Path,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        Self::start_at(bins, data_dir, log_dir, addr, metrics, extra)
    }

    /// Starts a collector on fixed addresses (a restart keeps its address).
    pub fn start_at(
        bins: &Binaries,
        data_dir: &Path,
        log_dir: &Path,
        addr: SocketAddr,
        metrics: SocketAddr,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        // Waiting for the port below would mistake another process for this collector.
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            bail!("{addr} is already in use (is another tapwire collector running?)");
        }
        let bin = bins.path("tapwire-collector")?;
        let log = log_dir.join("collector.log");
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_string()).collect();
        let child = Child::spawn(
            "tapwire-collector",
            Command::new(&bin)
                .arg("--listen")
                .arg(addr.to_string())
                .arg("--metrics-addr")
                .arg(metrics.to_string())
                .arg("--data-dir")
                .arg(data_dir)
                .args(&extra),
            &log,
        )?;
        // The first start runs initdb and the migrations.
        wait_for_port(addr, Duration::from_secs(120))
            .with_context(|| format!("collector did not start; see {}", log.display()))?;
        Ok(Self {
            addr,
            metrics,
            data_dir: data_dir.to_path_buf(),
            bin,
            extra,
            log,
            child,
        })
    }

    /// The URL agents and the CLI use.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Kills the collector with SIGKILL (a crash).
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// Stops it with SIGTERM; true when it exited cleanly.
    pub fn stop(&mut self) -> bool {
        self.child.stop(Duration::from_secs(60))
    }

    /// Starts it again with the same data, addresses and flags.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.child.stop(Duration::from_secs(60));
        self.child = Child::spawn(
            "tapwire-collector",
            Command::new(&self.bin)
                .arg("--listen")
                .arg(self.addr.to_string())
                .arg("--metrics-addr")
                .arg(self.metrics.to_string())
                .arg("--data-dir")
                .arg(&self.data_dir)
                .args(&self.extra),
            &self.log,
        )?;
        wait_for_port(self.addr, Duration::from_secs(120))
    }

    /// The process.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// The lines of the managed PostgreSQL's `postmaster.pid` (line 1 is the postmaster's
    /// pid, line 4 its port). It exists only while the collector runs that server.
    fn postmaster_lines(&self) -> anyhow::Result<Vec<String>> {
        let path = self.data_dir.join("postgres/postmaster.pid");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {} (does this collector run a managed database?)",
                path.display()
            )
        })?;
        Ok(text.lines().map(|l| l.trim().to_string()).collect())
    }

    /// The managed PostgreSQL's postmaster as its `postmaster.pid` describes it, for fault
    /// tests that kill it and wait for the collector to bring it back.
    pub fn postmaster(&self) -> anyhow::Result<Postmaster> {
        let lines = self.postmaster_lines()?;
        let first = lines.first().context("empty postmaster.pid")?;
        let pid = first
            .parse()
            .with_context(|| format!("no pid in postmaster.pid: {first:?}"))?;
        // Line 8 is the server's status; a server still starting (crash recovery after a
        // kill) has written its pid but does not accept connections yet.
        let ready = lines.get(7).is_some_and(|status| status == "ready");
        Ok(Postmaster { pid, ready })
    }

    /// A URL of the managed database (`tapwire` on 127.0.0.1, trust auth for loopback), for
    /// checks that must bypass the query API, such as running the seed's SQL as a user would.
    pub fn database_url(&self) -> anyhow::Result<String> {
        let lines = self.postmaster_lines()?;
        let line = lines.get(3).context("no port line in postmaster.pid")?;
        let port: u16 = line
            .parse()
            .with_context(|| format!("no port in postmaster.pid: {line:?}"))?;
        Ok(format!("postgres://postgres@127.0.0.1:{port}/tapwire"))
    }
}

/// The managed database server's postmaster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Postmaster {
    /// Its process id.
    pub pid: i32,
    /// Whether it has finished starting and accepts connections.
    pub ready: bool,
}

/// A running `tapwire-agent` shipping to a collector.
pub struct Agent {
    /// Prometheus metrics and health.
    pub metrics: SocketAddr,
    child: Child,
}

impl Agent {
    /// Starts an agent sending to `collector_url`, with extra flags `extra`, and waits
    /// until its probes are attached (its health endpoint answers).
    pub fn start(
        bins: &Binaries,
        collector_url: &str,
        state_dir: &Path,
        log_dir: &Path,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(state_dir)?;
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let log = log_dir.join("agent.log");
        let child = Child::spawn(
            "tapwire-agent",
            Command::new(bins.path("tapwire-agent")?)
                .arg("--collector")
                .arg(collector_url)
                .arg("--metrics-addr")
                .arg(metrics.to_string())
                .arg("--spool-dir")
                .arg(state_dir.join("spool"))
                .args(extra),
            &log,
        )?;
        wait_for_port(metrics, Duration::from_secs(60))
            .with_context(|| format!("agent did not start; see {}", log.display()))?;
        // Attaching the TLS probes to running processes follows the metrics endpoint.
        std::thread::sleep(Duration::from_millis(1500));
        Ok(Self { metrics, child })
    }

    /// Stops it with SIGTERM (it flushes what it holds); true when it exited cleanly.
    pub fn stop(&mut self) -> bool {
        self.child.stop(Duration::from_secs(30))
    }

    /// The process.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }
}

/// The `tapwire` CLI pointed at a collector.
pub struct Cli {
    bin: PathBuf,
    server: String,
}

impl Cli {
    /// The CLI of `bins`, talking to `server`.
    pub fn new(bins: &Binaries, server: &str) -> anyhow::Result<Self> {
        Ok(Self {
            bin: bins.path("tapwire")?,
            server: server.to_string(),
        })
    }

    /// Runs `tapwire --server S ARGS`; returns its standard output.
    pub fn output(&self, args: &[&str]) -> anyhow::Result<String> {
        Ok(self.run(args)?.0)
    }

    /// Runs `tapwire --server S ARGS`; returns its standard output and standard error.
    fn run(&self, args: &[&str]) -> anyhow::Result<(String, String)> {
        let out = Command::new(&self.bin)
            .arg("--server")
            .arg(&self.server)
            .args(args)
            .output()
            .context("running tapwire")?;
        if !out.status.success() {
            bail!(
                "tapwire {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok((
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Every pair `tapwire pairs list FILTER --limit 1000 -o json` finds, following the
    /// `older: --cursor …` hints the CLI prints on standard error page by page (one page
    /// holds at most 1000 pairs, fewer than a load test makes).
    pub fn all_pairs(&self, filter: &[&str]) -> anyhow::Result<Vec<serde_json::Value>> {
        let mut rows = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut args = vec!["pairs", "list", "--limit", "1000", "-o", "json"];
            args.extend_from_slice(filter);
            if let Some(c) = &cursor {
                args.extend(["--cursor", c.as_str()]);
            }
            let (stdout, stderr) = self.run(&args)?;
            let before = rows.len();
            for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
                rows.push(serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?);
            }
            let next = stderr
                .lines()
                .find_map(|l| l.strip_prefix("older: --cursor "))
                .map(|c| c.trim().to_string());
            match next {
                // An empty page ends the walk even if a cursor is offered, so a cursor that
                // does not advance cannot loop forever.
                Some(next) if rows.len() > before && cursor.as_ref() != Some(&next) => {
                    cursor = Some(next);
                }
                _ => return Ok(rows),
            }
        }
    }

    /// Runs `tapwire --server S ARGS -o json`; returns one JSON value per output line.
    pub fn json(&self, args: &[&str]) -> anyhow::Result<Vec<serde_json::Value>> {
        let mut with_json = args.to_vec();
        with_json.extend(["-o", "json"]);
        self.output(&with_json)?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l}")))
            .collect()
    }

    /// Polls `tapwire ARGS -o json` until `done` accepts the output or `timeout` passes;
    /// returns the last output.
    pub fn wait_for(
        &self,
        args: &[&str],
        timeout: Duration,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> anyhow::Result<Vec<serde_json::Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let rows = self.json(args)?;
            if done(&rows) || Instant::now() > deadline {
                return Ok(rows);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}
