//! Demo traffic for `cargo xtask up --demo`: real local servers (python http.server,
//! nginx with TLS and h2, a grpcio server) and a client loop calling them every few
//! seconds with curl and grpcio, so there is something to look at at once.

use std::path::Path;
use std::time::{Duration, Instant};
use tapwire_e2e::peers::{self, Nginx, PeerServer, PythonHttpServer};

/// The demo's servers and the state of its client loop.
pub struct Demo {
    http: PythonHttpServer,
    nginx: Nginx,
    grpc: PeerServer,
    next: Instant,
    round: u64,
}

impl Demo {
    /// Starts the servers under `dir`.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        for sub in ["http", "nginx", "grpc"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        Ok(Self {
            http: PythonHttpServer::start(&dir.join("http"))?,
            nginx: Nginx::start(&dir.join("nginx"))?,
            grpc: PeerServer::start("grpc_peer.py", &dir.join("grpc"))?,
            next: Instant::now(),
            round: 0,
        })
    }

    /// Makes one round of calls when it is due (every 3 s). A failing call is reported,
    /// not fatal: the demo is there to be looked at.
    pub fn keep_going(&mut self) -> anyhow::Result<()> {
        if Instant::now() < self.next {
            return Ok(());
        }
        self.next = Instant::now() + Duration::from_secs(3);
        self.round += 1;
        let http = format!("http://{}/hello.txt?round={}", self.http.addr, self.round);
        let https = format!("https://localhost:{}/hello.txt", self.nginx.https.port());
        let h2 = format!("https://localhost:{}/status/201", self.nginx.https.port());
        let resolve = format!("localhost:{}:127.0.0.1", self.nginx.https.port());
        let calls: [(&str, Vec<&str>); 3] = [
            ("HTTP/1", vec![http.as_str()]),
            (
                "HTTPS",
                vec!["-k", "--http1.1", "--resolve", &resolve, &https],
            ),
            (
                "HTTP/2",
                vec![
                    "-k",
                    "--http2",
                    "--resolve",
                    &resolve,
                    "-X",
                    "POST",
                    "-d",
                    "{\"demo\":true}",
                    &h2,
                ],
            ),
        ];
        for (name, args) in calls {
            if let Err(e) = peers::curl(&args) {
                eprintln!("demo: {name} call failed: {e:#}");
            }
        }
        if let Err(e) = peers::grpc_calls(self.grpc.addr, 1) {
            eprintln!("demo: gRPC calls failed: {e:#}");
        }
        Ok(())
    }
}
