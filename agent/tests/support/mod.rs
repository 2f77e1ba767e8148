//! Shared helpers of the capture tests: run the real `tapwire-agent`, real servers and
//! clients, and read the raw JSON output back.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Read},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use serde_json::Value;

/// Printed by the agent once it captures (see `tapwire_agent::capture::READY_LINE`).
const READY_LINE: &str = "tapwire-agent: capturing";

/// Whether tests must not skip (CI sets `CI=true`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skips (outside CI) or fails (in CI) a test whose real dependency is unavailable.
/// Returns normally only when the test should go on.
#[macro_export]
macro_rules! require {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            let why = format!($($why)+);
            if $crate::support::in_ci() {
                panic!("required in CI: {why}");
            }
            eprintln!("skipping: {why}");
            return;
        }
    };
}

/// Whether this process may load eBPF (root; the capability test drops it itself).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `program` is on PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral loopback port")
}

/// Waits until something accepts on `addr`.
pub fn wait_for_port(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on {addr}");
}

/// A child process killed when dropped.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A temporary directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new, empty directory. Unique per call, not just per tag: tests run in parallel
    /// threads of one process, and two sharing a tag (the 1 MiB tests, the hook tests)
    /// deleted each other's served files mid-test.
    pub fn new(tag: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("tapwire-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating a temp dir");
        Self(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `python3 -m http.server` serving `dir` on `addr`.
pub fn python_http_server(dir: &Path, bind: &str, port: u16) -> Guard {
    let child = Command::new("python3")
        .args(["-m", "http.server", &port.to_string(), "--bind", bind])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting python3 -m http.server");
    Guard(child)
}

/// One line of `--output raw`.
#[derive(Debug, Clone)]
pub struct RawChunk {
    pub connection_id: u64,
    pub pid: u32,
    pub comm: String,
    pub cgroup_id: u64,
    pub role: String,
    pub direction: String,
    pub local: String,
    pub remote: String,
    pub tls: bool,
    pub seq: u64,
    pub bytes: u64,
    pub bytes_lost: u64,
    pub events_lost: bool,
    pub data: Vec<u8>,
}

fn parse_line(line: &str) -> RawChunk {
    let v: Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON line {line}: {e}"));
    let s = |k: &str| {
        v[k].as_str()
            .unwrap_or_else(|| panic!("{k} missing in {line}"))
            .to_string()
    };
    let n = |k: &str| {
        v[k].as_u64()
            .unwrap_or_else(|| panic!("{k} missing in {line}"))
    };
    let data = STANDARD.decode(s("data")).expect("base64 data");
    assert_eq!(data.len() as u64, n("bytes"), "bytes field matches data");
    RawChunk {
        connection_id: n("connection_id"),
        pid: n("pid") as u32,
        comm: s("comm"),
        cgroup_id: n("cgroup_id"),
        role: s("role"),
        direction: s("direction"),
        local: s("local"),
        remote: s("remote"),
        tls: v["tls"].as_bool().expect("tls"),
        seq: n("seq"),
        bytes: n("bytes"),
        bytes_lost: n("bytes_lost"),
        events_lost: v["events_lost"].as_bool().expect("events_lost"),
        data,
    }
}

/// A running `tapwire-agent --output raw`.
pub struct Agent {
    child: Option<Child>,
    stdout_path: PathBuf,
    stderr_lines: mpsc::Receiver<String>,
    pub stderr: Vec<String>,
    _dir: TempDir,
}

/// What the agent printed.
pub struct AgentOutput {
    /// Parsed `--output raw` lines (empty for other outputs).
    pub chunks: Vec<RawChunk>,
    /// Every stdout line.
    pub lines: Vec<String>,
    pub stderr: String,
    pub exit_ok: bool,
}

impl Agent {
    /// Starts the agent with `args` and waits until it captures. Returns `Err` with its
    /// stderr when it cannot (no eBPF here).
    pub fn start(args: &[&str]) -> Result<Self, String> {
        Self::start_with(Command::new(env!("CARGO_BIN_EXE_tapwire-agent")), args)
    }

    /// Like [`Agent::start`] with a prepared command (e.g. wrapped in `setpriv`).
    pub fn start_with(mut command: Command, args: &[&str]) -> Result<Self, String> {
        let dir = TempDir::new(&format!("agent-{}", free_port()));
        let stdout_path = dir.path().join("stdout.jsonl");
        let stdout = std::fs::File::create(&stdout_path).map_err(|e| e.to_string())?;
        if !args.contains(&"--output") {
            command.args(["--output", "raw"]);
        }
        let mut child = command
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawning tapwire-agent: {e}"))?;
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut agent = Self {
            child: Some(child),
            stdout_path,
            stderr_lines: rx,
            stderr: Vec::new(),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match agent.stderr_lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let ready = line.contains(READY_LINE);
                    agent.stderr.push(line);
                    if ready {
                        return Ok(agent);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let exited = agent
                        .child
                        .as_mut()
                        .and_then(|c| c.try_wait().ok().flatten());
                    if exited.is_some() || Instant::now() > deadline {
                        // Collect what is left of stderr for the message.
                        std::thread::sleep(Duration::from_millis(200));
                        while let Ok(line) = agent.stderr_lines.try_recv() {
                            agent.stderr.push(line);
                        }
                        return Err(format!(
                            "tapwire-agent did not start ({exited:?}):\n{}",
                            agent.stderr.join("\n")
                        ));
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(format!(
                        "tapwire-agent closed stderr:\n{}",
                        agent.stderr.join("\n")
                    ));
                }
            }
        }
    }

    /// The agent's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends SIGINT, waits for a clean exit and parses the output.
    pub fn stop(mut self) -> AgentOutput {
        // Let the last events reach the ring buffer reader.
        std::thread::sleep(Duration::from_millis(500));
        let mut child = self.child.take().expect("running agent");
        // SAFETY: kill with a pid we own.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        std::thread::sleep(Duration::from_millis(100));
        while let Ok(line) = self.stderr_lines.try_recv() {
            self.stderr.push(line);
        }
        let mut text = String::new();
        std::fs::File::open(&self.stdout_path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .expect("reading the agent's stdout");
        let lines: Vec<String> = text
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        let raw = lines.first().is_none_or(|l| l.contains("\"direction\""));
        AgentOutput {
            chunks: if raw {
                lines.iter().map(|l| parse_line(l)).collect()
            } else {
                Vec::new()
            },
            lines,
            stderr: self.stderr.join("\n"),
            exit_ok: status.is_some_and(|s| s.success()),
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts the agent or skips/fails the test (see [`require!`]).
#[macro_export]
macro_rules! start_agent {
    ($args:expr) => {
        $crate::start_agent!($args, else ())
    };
    // In a function that returns `$skipped` when it skips.
    ($args:expr, else $skipped:expr) => {
        match $crate::support::Agent::start($args) {
            Ok(agent) => agent,
            Err(why) => {
                if $crate::support::in_ci() {
                    panic!("eBPF capture must work in CI: {why}");
                }
                eprintln!("skipping: {why}");
                return $skipped;
            }
        }
    };
}

impl AgentOutput {
    /// Chunks of connections whose local address is `local`.
    pub fn by_local(&self, local: &str) -> Vec<&RawChunk> {
        self.chunks.iter().filter(|c| c.local == local).collect()
    }

    /// Concatenated data of `chunks` in `direction`.
    pub fn stream(chunks: &[&RawChunk], direction: &str) -> Vec<u8> {
        chunks
            .iter()
            .filter(|c| c.direction == direction)
            .flat_map(|c| c.data.clone())
            .collect()
    }
}

/// Runs a command to completion and returns stdout; panics with stderr on failure.
pub fn run(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes an nginx TLS server config (self-signed cert, one fixed response) into `dir`.
pub fn nginx_tls_config(dir: &Path, port: u16) -> PathBuf {
    let d = dir.display();
    run(Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=localhost",
        "-keyout",
        &format!("{d}/key.pem"),
        "-out",
        &format!("{d}/cert.pem"),
    ]));
    std::fs::create_dir_all(dir.join("tmp")).expect("nginx temp dir");
    let conf = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 64; }}\nhttp {{\n  access_log off;\n\
         client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;\n\
         uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
         server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {d}/cert.pem;\n\
         ssl_certificate_key {d}/key.pem;\n    ssl_protocols TLSv1.2 TLSv1.3;\n\
         location / {{ return 200 \"tls hello body\\n\"; }}\n  }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).expect("writing nginx.conf");
    path
}

/// Starts nginx with `conf` (foreground, single process).
pub fn nginx(conf: &Path, dir: &Path) -> Guard {
    Guard(
        Command::new("nginx")
            .arg("-c")
            .arg(conf)
            .arg("-p")
            .arg(dir)
            .stderr(Stdio::null())
            .spawn()
            .expect("starting nginx"),
    )
}

/// curl's exact request for `path` with the tests' User-Agent.
pub fn curl_request(path: &str, host: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\nUser-Agent: {USER_AGENT}\r\n\r\n"
    )
    .into_bytes()
}

/// The User-Agent every test client sends.
pub const USER_AGENT: &str = "tapwire-test";

/// Runs curl to completion (response discarded) and returns its pid.
pub fn curl(args: &[&str]) -> u32 {
    let child = Command::new("curl")
        .args([
            "-s",
            "--http1.1",
            "-H",
            &format!("User-Agent: {USER_AGENT}"),
            "-o",
            "/dev/null",
        ])
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .expect("running curl");
    let pid = child.id();
    let out = child.wait_with_output().expect("waiting for curl");
    assert!(out.status.success(), "curl {args:?} failed");
    pid
}

/// The chunks of the one connection of process `comm`/`pid`.
pub fn connection_of<'a>(out: &'a AgentOutput, comm: &str, pid: u32) -> Vec<&'a RawChunk> {
    one_connection(out, &format!("{comm} (pid {pid})"), |c| {
        c.comm == comm && c.pid == pid
    })
}

/// The chunks that `keep` selects (`what` names them in failures), which must be
/// there and belong to one connection.
pub fn one_connection<'a>(
    out: &'a AgentOutput,
    what: &str,
    keep: impl Fn(&RawChunk) -> bool,
) -> Vec<&'a RawChunk> {
    let chunks: Vec<&RawChunk> = out.chunks.iter().filter(|c| keep(c)).collect();
    assert!(
        !chunks.is_empty(),
        "no chunks of {what}; stderr:\n{}",
        out.stderr
    );
    let id = chunks[0].connection_id;
    assert!(
        chunks.iter().all(|c| c.connection_id == id),
        "one connection for {what}"
    );
    chunks
}

/// Checks that `chunks` of one direction reproduce `expected` exactly, where gaps
/// (`bytes_lost`) skip exactly the bytes that were not captured;
/// returns the bytes lost.
pub fn assert_stream_accounts_for(chunks: &[&RawChunk], direction: &str, expected: &[u8]) -> u64 {
    let mut offset = 0usize;
    let mut lost = 0;
    for c in chunks.iter().filter(|c| c.direction == direction) {
        assert!(!c.events_lost, "no kernel event may be lost");
        offset += c.bytes_lost as usize;
        lost += c.bytes_lost;
        assert!(
            offset + c.data.len() <= expected.len(),
            "stream longer than expected"
        );
        assert!(
            c.data == expected[offset..offset + c.data.len()],
            "bytes differ at offset {offset}"
        );
        offset += c.data.len();
    }
    assert_eq!(
        offset,
        expected.len(),
        "captured + lost == transferred ({direction})"
    );
    lost
}
