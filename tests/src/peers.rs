//! Real servers and clients that tapwire is tested against and demonstrated with.

use anyhow::Context;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::child::{Child, free_port, wait_for_port};

/// The body nginx and python http.server serve at `/hello.txt`.
pub const HELLO_BODY: &str = "hello from tapwire's test peer\n";

/// The Python interpreter with grpcio (the tools venv when it exists).
pub fn python() -> PathBuf {
    let tools = std::env::var_os("TAPWIRE_TOOLS").map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/tapwire")
        },
        PathBuf::from,
    );
    let venv = tools.join("venv/bin/python3");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// A peer script of `tests/peers/`.
pub fn peer_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("peers")
        .join(name)
}

/// Writes the files the web peers serve into `dir/www`.
fn write_site(dir: &Path) -> anyhow::Result<PathBuf> {
    let www = dir.join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("hello.txt"), HELLO_BODY)?;
    // 1 MiB of a repeating, position-dependent pattern, so a lost or shifted byte shows.
    let big: Vec<u8> = (0..1024 * 1024u32).map(|i| b'a' + (i % 26) as u8).collect();
    std::fs::write(www.join("big.bin"), big)?;
    Ok(www)
}

/// nginx with a plain HTTP/1.1 port and a TLS (OpenSSL) port speaking HTTP/1.1 and h2.
pub struct Nginx {
    /// Plain HTTP.
    pub http: SocketAddr,
    /// HTTPS with ALPN h2 and http/1.1.
    pub https: SocketAddr,
    _child: Child,
}

impl Nginx {
    /// Starts nginx with its configuration, certificate and site under `dir`.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        let www = write_site(dir)?;
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let status = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=localhost", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .context("running openssl to make nginx's certificate")?;
        anyhow::ensure!(status.success(), "openssl req failed");
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let https = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let d = dir.display();
        let conf = format!(
            r#"user root;
daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    default_type application/octet-stream;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 100000;
    server {{
        listen {http};
        root {www};
        location = /status/201 {{ return 201 "created\n"; }}
        location = /status/503 {{ return 503 "unavailable\n"; }}
    }}
    server {{
        listen {https} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        root {www};
        location = /status/201 {{ return 201 "created\n"; }}
    }}
}}
"#,
            www = www.display(),
            cert = cert.display(),
            key = key.display(),
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let child = Child::spawn(
            "nginx",
            Command::new("nginx")
                .arg("-c")
                .arg(&conf_path)
                .arg("-p")
                .arg(dir),
            &dir.join("nginx.log"),
        )?;
        wait_for_port(http, Duration::from_secs(10))?;
        wait_for_port(https, Duration::from_secs(10))?;
        Ok(Self {
            http,
            https,
            _child: child,
        })
    }
}

/// `python3 -m http.server` serving the test site.
pub struct PythonHttpServer {
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
}

impl PythonHttpServer {
    /// Starts it on a free loopback port, serving `dir/www`.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        let www = write_site(dir)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let child = Child::spawn(
            "python http.server",
            Command::new(python())
                .args(["-m", "http.server", "--bind", "127.0.0.1"])
                .arg(addr.port().to_string())
                .arg("--directory")
                .arg(&www),
            &dir.join("http-server.log"),
        )?;
        wait_for_port(addr, Duration::from_secs(10))?;
        Ok(Self { addr, child })
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }
}

/// A server from `tests/peers/` (`SCRIPT serve --port P`): the grpcio server
/// (`grpc_peer.py`, plaintext h2c), the HTTP/1.1 keep-alive server (`http1_peer.py`) or
/// the WebSocket server (`ws_peer.py`).
pub struct PeerServer {
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
}

impl PeerServer {
    /// Starts `tests/peers/SCRIPT` on a free loopback port, its log in `dir`.
    pub fn start(script: &str, dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let child = Child::spawn(
            script,
            Command::new(python()).arg(peer_script(script)).args([
                "serve",
                "--port",
                &addr.port().to_string(),
            ]),
            &dir.join(format!("{script}.log")),
        )?;
        wait_for_port(addr, Duration::from_secs(20))?;
        Ok(Self { addr, child })
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }
}

/// Runs `tests/peers/SCRIPT ARGS… --port P` as a client; returns its JSON summary.
pub fn peer_call(
    script: &str,
    addr: SocketAddr,
    args: &[&str],
) -> anyhow::Result<serde_json::Value> {
    let out = Command::new(python())
        .arg(peer_script(script))
        .args(args)
        .args(["--port", &addr.port().to_string()])
        .output()
        .with_context(|| format!("running {script} {args:?}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{script} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Runs every RPC kind of the gRPC peer `count` times against `addr`; returns the
/// client's JSON summary.
pub fn grpc_calls(addr: SocketAddr, count: u32) -> anyhow::Result<serde_json::Value> {
    peer_call(
        "grpc_peer.py",
        addr,
        &["call", "--count", &count.to_string()],
    )
}

/// Runs curl with `args`; returns its stdout.
pub fn curl(args: &[&str]) -> anyhow::Result<Vec<u8>> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .context("running curl")?;
    anyhow::ensure!(
        out.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out.stdout)
}
