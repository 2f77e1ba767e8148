//! Shared by the collector's integration tests: runs the real `tapwire-collector` binary
//! against a real database, pushes batches through the generated `ingest_client` like an
//! agent does, and reads back what was stored.
#![allow(dead_code)]

pub mod pairs;
pub mod tls;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tapwire_proto::v1::{Ack, Batch, ingest_client::IngestClient};
use tokio_postgres::NoTls;
use tonic::transport::Channel;

pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Which database the collector under test uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL 17 + TimescaleDB: `TAPWIRE_TEST_DATABASE_URL`, else the collector's
    /// managed server from the trixie root.
    TimescaleDb,
    /// Plain PostgreSQL 15: `TAPWIRE_TEST_PG15_URL`, else the collector's managed server
    /// from `/usr/lib/postgresql/15/bin`.
    Postgres15,
}

const PG15_BIN: &str = "/usr/lib/postgresql/15/bin";

fn trixie_root() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
        .join(".cache/tapwire/pg-trixie-tsdb")
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Returns false (and says why) when a dependency is missing outside CI; panics in CI,
/// where a missing dependency must fail the test instead of skipping it.
pub fn require(available: bool, what: &str) -> bool {
    if available {
        return true;
    }
    assert!(!in_ci(), "CI=true and {what} is not available");
    eprintln!("SKIPPED: {what} is not available (set CI=true to make this a failure)");
    false
}

/// True when this backend can run here (a URL is given or the binaries exist, as root).
pub fn backend_available(backend: Backend) -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    match backend {
        Backend::TimescaleDb => {
            std::env::var("TAPWIRE_TEST_DATABASE_URL").is_ok()
                || (root
                    && trixie_root()
                        .join("usr/lib/postgresql/17/bin/postgres")
                        .exists())
        }
        Backend::Postgres15 => {
            std::env::var("TAPWIRE_TEST_PG15_URL").is_ok()
                || Path::new(PG15_BIN).join("postgres").exists()
        }
    }
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A database for one test: a fresh database in the given server, or the collector's
/// managed one.
pub struct TestDatabase {
    /// The collector's `--database-url`, None for managed.
    pub url: Option<String>,
    admin_url: Option<String>,
    name: String,
}

impl TestDatabase {
    /// Creates a fresh database when an external server is configured.
    pub async fn create(backend: Backend) -> Result<Self, Error> {
        let var = match backend {
            Backend::TimescaleDb => "TAPWIRE_TEST_DATABASE_URL",
            Backend::Postgres15 => "TAPWIRE_TEST_PG15_URL",
        };
        let name = format!("tapwire_test_{}", uuid::Uuid::now_v7().simple());
        let Ok(admin_url) = std::env::var(var) else {
            return Ok(Self {
                url: None,
                admin_url: None,
                name,
            });
        };
        let (client, conn) = tokio_postgres::connect(&admin_url, NoTls).await?;
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await?;
        let mut config: tokio_postgres::Config = admin_url.parse()?;
        config.dbname(&name);
        let url = format!(
            "postgres://{}@{}:{}/{}",
            config.get_user().unwrap_or("postgres"),
            match config.get_hosts().first() {
                Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
                _ => "127.0.0.1".into(),
            },
            config.get_ports().first().copied().unwrap_or(5432),
            name
        );
        Ok(Self {
            url: Some(url),
            admin_url: Some(admin_url),
            name,
        })
    }

    /// Drops the database (external servers only).
    pub async fn drop_database(&self) {
        if let Some(admin) = &self.admin_url
            && let Ok((client, conn)) = tokio_postgres::connect(admin, NoTls).await
        {
            tokio::spawn(conn);
            let _ = client
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ))
                .await;
        }
    }
}

/// A running `tapwire-collector` process.
pub struct Collector {
    child: Option<Child>,
    /// Its data folder.
    pub data_dir: PathBuf,
    /// The gRPC port.
    pub port: u16,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    external_url: Option<String>,
}

/// How to start a collector.
pub struct CollectorOptions {
    /// The database backend.
    pub backend: Backend,
    /// `--database-url`, None for managed.
    pub database_url: Option<String>,
    /// Extra flags.
    pub extra_args: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
}

impl Collector {
    /// Starts the collector in `data_dir` and waits until it accepts connections.
    pub fn start(data_dir: &Path, options: CollectorOptions) -> Result<Self, Error> {
        let port = free_port();
        let mut args = vec![
            "--listen".to_owned(),
            format!("127.0.0.1:{port}"),
            "--data-dir".to_owned(),
            data_dir.display().to_string(),
        ];
        match &options.database_url {
            Some(url) => args.extend(["--database-url".to_owned(), url.clone()]),
            None => match options.backend {
                Backend::TimescaleDb => args.extend([
                    "--postgres-root".to_owned(),
                    trixie_root().display().to_string(),
                ]),
                Backend::Postgres15 => {
                    args.extend(["--postgres-bin".to_owned(), PG15_BIN.to_owned()])
                }
            },
        }
        args.extend(options.extra_args);
        let mut collector = Self {
            child: None,
            data_dir: data_dir.to_path_buf(),
            port,
            args,
            env: options.env,
            log: data_dir.join("collector.log"),
            external_url: options.database_url,
        };
        collector.spawn()?;
        Ok(collector)
    }

    fn spawn(&mut self) -> Result<(), Error> {
        std::fs::create_dir_all(&self.data_dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(env!("CARGO_BIN_EXE_tapwire-collector"))
            .args(&self.args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + Duration::from_secs(150);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                return Err(
                    format!("collector exited early ({status}):\n{}", self.log_text()).into(),
                );
            }
            if Instant::now() > deadline {
                return Err(format!("collector not ready in time:\n{}", self.log_text()).into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The collector's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The gRPC endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A plaintext ingest client.
    pub async fn client(&self) -> Result<IngestClient<Channel>, Error> {
        Ok(IngestClient::connect(self.endpoint()).await?)
    }

    /// The URL of the database the collector writes to.
    pub fn database_url(&self) -> Result<String, Error> {
        if let Some(url) = &self.external_url {
            return Ok(url.clone());
        }
        let pid_file = std::fs::read_to_string(self.data_dir.join("postgres/postmaster.pid"))?;
        let port = pid_file
            .lines()
            .nth(3)
            .ok_or("no port in postmaster.pid")?
            .trim();
        Ok(format!("postgres://postgres@127.0.0.1:{port}/tapwire"))
    }

    /// A direct connection to that database.
    pub async fn db(&self) -> Result<tokio_postgres::Client, Error> {
        let (client, conn) = tokio_postgres::connect(&self.database_url()?, NoTls).await?;
        tokio::spawn(conn);
        Ok(client)
    }

    /// The payload store the collector uses (its default folder).
    pub fn payload_store(&self) -> Result<tapwire_collector::storage::PayloadStore, Error> {
        let url = format!("file://{}", self.data_dir.join("payloads").display());
        Ok(tapwire_collector::storage::PayloadStore::open(&url)?)
    }

    /// Sends a signal to the collector process.
    pub fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, signal) };
        }
    }

    /// The collector's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM, and the exit status.
    pub fn stop(&mut self) -> Result<std::process::ExitStatus, Error> {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().ok_or("not running")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err("collector did not exit within 60 s of SIGTERM".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, no cleanup (the managed PostgreSQL keeps running and is adopted on restart).
    pub fn kill(&mut self) -> Result<(), Error> {
        let mut child = self.child.take().ok_or("not running")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Starts it again with the same settings (same port and data folder).
    pub fn restart(&mut self) -> Result<(), Error> {
        self.spawn()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        } else if self.external_url.is_none()
            && self.data_dir.join("postgres/postmaster.pid").exists()
        {
            // Killed and not restarted: start and stop it once so the managed server stops.
            if self.spawn().is_ok() {
                let _ = self.stop();
            }
        }
    }
}

/// Pushes batches on one stream and returns the acks (fails on the first error status).
pub async fn push(
    client: &mut IngestClient<Channel>,
    batches: Vec<Batch>,
) -> Result<Vec<Ack>, tonic::Status> {
    let n = batches.len();
    let response = client.push(tokio_stream::iter(batches)).await?;
    let mut stream = response.into_inner();
    let mut acks = Vec::with_capacity(n);
    while acks.len() < n {
        match stream.message().await? {
            Some(ack) => acks.push(ack),
            None => break,
        }
    }
    Ok(acks)
}

/// Row count of `rr_pairs`.
pub async fn count_rows(db: &tokio_postgres::Client) -> Result<i64, Error> {
    Ok(db
        .query_one("SELECT count(*) FROM rr_pairs", &[])
        .await?
        .get(0))
}

/// Delivers every batch at least once like an agent does: one stream at a time, resending
/// whatever was not acknowledged after an error, until all are acknowledged or the
/// deadline passes. Returns every ack received.
pub async fn deliver(
    endpoint: &str,
    batches: Vec<Batch>,
    deadline: Duration,
) -> Result<Vec<Ack>, Error> {
    let until = Instant::now() + deadline;
    let mut pending = batches;
    let mut acks = Vec::new();
    let mut last_error = String::new();
    while !pending.is_empty() {
        if Instant::now() > until {
            return Err(format!(
                "{} batches never acknowledged; last error: {last_error}",
                pending.len()
            )
            .into());
        }
        let attempt = async {
            let mut client = IngestClient::connect(endpoint.to_owned())
                .await
                .map_err(|e| e.to_string())?;
            let mut stream = client
                .push(tokio_stream::iter(pending.clone()))
                .await
                .map_err(|s| s.to_string())?
                .into_inner();
            let mut got = Vec::new();
            loop {
                match stream.message().await {
                    Ok(Some(ack)) => got.push(ack),
                    Ok(None) => return Ok::<_, String>((got, None)),
                    Err(status) => return Ok((got, Some(status.to_string()))),
                }
            }
        };
        match attempt.await {
            Ok((got, error)) => {
                pending.retain(|b| !got.iter().any(|a| a.sequence == b.sequence));
                acks.extend(got);
                if let Some(e) = error {
                    last_error = e;
                }
            }
            Err(e) => last_error = e,
        }
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(acks)
}

/// Asserts that `rr_pairs` holds exactly these ids, each once.
pub async fn assert_stored_once(
    db: &tokio_postgres::Client,
    batches: &[Batch],
) -> Result<(), Error> {
    let expected: std::collections::BTreeSet<uuid::Uuid> = batches
        .iter()
        .flat_map(|b| b.pairs.iter())
        .map(|p| uuid::Uuid::parse_str(&p.id))
        .collect::<Result<_, _>>()?;
    let rows = db
        .query("SELECT id, count(*) FROM rr_pairs GROUP BY id", &[])
        .await?;
    let mut stored = std::collections::BTreeSet::new();
    for row in rows {
        let (id, n): (uuid::Uuid, i64) = (row.get(0), row.get(1));
        assert_eq!(n, 1, "pair {id} stored {n} times");
        stored.insert(id);
    }
    assert_eq!(
        stored.len(),
        expected.len(),
        "stored {} distinct pairs, expected {}",
        stored.len(),
        expected.len()
    );
    assert!(stored == expected, "stored ids differ from the ids sent");
    let rollup: Option<i64> = db
        .query_one("SELECT sum(count)::bigint FROM rr_rollup_1m", &[])
        .await?
        .get(0);
    assert_eq!(
        rollup,
        Some(expected.len() as i64),
        "rollups count every pair once"
    );
    Ok(())
}
