//! The managed local PostgreSQL: when no `--database-url` is given the collector runs its
//! own server in `DATA_DIR/postgres` (initdb on first start, `pg_ctl -w` on a free
//! loopback port, TimescaleDB when available), restarts it if it dies, and stops it on exit.

pub mod launcher;

use std::{
    ffi::OsString,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

pub use launcher::Launcher;

/// How long a start may keep failing (a SIGKILLed server's children linger ~30 s holding
/// its shared memory) before we give up.
const START_DEADLINE: Duration = Duration::from_secs(90);
/// The database the collector uses inside the managed server.
pub const DATABASE: &str = "tapwire";

/// The managed PostgreSQL could not be set up, started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    /// Preparing files, users or paths failed.
    #[error("managed PostgreSQL: {0}")]
    Setup(String),
    /// A PostgreSQL program failed.
    #[error("managed PostgreSQL: {program} failed: {detail}")]
    Program {
        /// `initdb`, `pg_ctl`, …
        program: String,
        /// Its output.
        detail: String,
    },
}

/// A running managed PostgreSQL.
#[derive(Debug)]
pub struct ManagedPostgres {
    launcher: Launcher,
    host_data: PathBuf,
    port: u16,
}

fn setup(context: &str) -> impl FnOnce(std::io::Error) -> PostgresError + '_ {
    move |e| PostgresError::Setup(format!("{context}: {e}"))
}

fn free_loopback_port() -> Result<u16, PostgresError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(setup("find a free port"))?;
    Ok(listener
        .local_addr()
        .map_err(setup("find a free port"))?
        .port())
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

/// The pid and port of a postmaster.pid whose process still runs postgres.
fn running_server(host_data: &Path) -> Option<(i32, u16)> {
    let text = std::fs::read_to_string(host_data.join("postmaster.pid")).ok()?;
    let mut lines = text.lines();
    let pid: i32 = lines.next()?.trim().parse().ok()?;
    let port: u16 = lines.nth(2)?.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    (process_alive(pid) && String::from_utf8_lossy(&cmdline).contains("postgres"))
        .then_some((pid, port))
}

impl ManagedPostgres {
    /// Starts (initializing on first use) the server whose data lives in
    /// `data_dir/postgres`, or adopts the one still running there from a previous run.
    pub async fn start(data_dir: &Path, launcher: Launcher) -> Result<Self, PostgresError> {
        let host_data = data_dir.join("postgres");
        let mut server = Self {
            launcher,
            host_data,
            port: 0,
        };
        if !server.host_data.join("PG_VERSION").exists() {
            server.init().await?;
        }
        if let Some((pid, port)) = running_server(&server.host_data) {
            tracing::info!(pid, port, "adopting the managed PostgreSQL left running");
            server.port = port;
        } else {
            server.port = free_loopback_port()?;
            server.start_server().await?;
        }
        server.ensure_database().await?;
        Ok(server)
    }

    /// The URL of the collector's database in this server.
    pub fn database_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    async fn run(&self, program: &str, args: Vec<OsString>) -> Result<String, PostgresError> {
        let output = self
            .launcher
            .command(program, &args, &self.host_data)?
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| PostgresError::Program {
                program: program.into(),
                detail: e.to_string(),
            })?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if output.status.success() {
            Ok(text)
        } else {
            Err(PostgresError::Program {
                program: program.into(),
                detail: format!("{}: {}", output.status, text.trim()),
            })
        }
    }

    async fn init(&self) -> Result<(), PostgresError> {
        // A folder without PG_VERSION is a failed earlier initdb: start over.
        if self.host_data.exists() {
            std::fs::remove_dir_all(&self.host_data)
                .map_err(setup("clear a partial data folder"))?;
        }
        std::fs::create_dir_all(&self.host_data).map_err(setup("create the data folder"))?;
        std::fs::set_permissions(&self.host_data, std::fs::Permissions::from_mode(0o700))
            .map_err(setup("restrict the data folder"))?;
        if let Some((uid, gid)) = self.launcher.owner() {
            std::os::unix::fs::chown(&self.host_data, Some(uid), Some(gid))
                .map_err(setup("hand the data folder to postgres"))?;
        }
        let data = self.launcher.data_path(&self.host_data);
        tracing::info!(data = %self.host_data.display(), "initializing the managed PostgreSQL");
        self.run(
            "initdb",
            vec![
                "-D".into(),
                data.into(),
                "-U".into(),
                "postgres".into(),
                "--auth=trust".into(),
                "--encoding=UTF8".into(),
                "--no-locale".into(),
            ],
        )
        .await?;
        let mut conf = String::from(
            "\n# tapwire-collector managed settings\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = ''\n\
             max_connections = 100\n",
        );
        if self.launcher.is_chroot() {
            // The chroot has no /dev/shm.
            conf.push_str("dynamic_shared_memory_type = sysv\n");
        }
        if self.launcher.has_timescaledb() {
            conf.push_str(
                "shared_preload_libraries = 'timescaledb'\ntimescaledb.telemetry_level = off\n",
            );
        }
        let conf_path = self.host_data.join("postgresql.conf");
        let mut existing =
            std::fs::read_to_string(&conf_path).map_err(setup("read postgresql.conf"))?;
        existing.push_str(&conf);
        std::fs::write(&conf_path, existing).map_err(setup("write postgresql.conf"))?;
        Ok(())
    }

    async fn start_server(&self) -> Result<(), PostgresError> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            // The server is not running (checked by the caller): a leftover pid file is stale.
            let pid_file = self.host_data.join("postmaster.pid");
            if pid_file.exists() && running_server(&self.host_data).is_none() {
                std::fs::remove_file(&pid_file).map_err(setup("remove a stale postmaster.pid"))?;
            }
            let data = self.launcher.data_path(&self.host_data);
            let result = self
                .run(
                    "pg_ctl",
                    vec![
                        "start".into(),
                        "-w".into(),
                        "-t".into(),
                        "60".into(),
                        "-D".into(),
                        data.clone().into(),
                        "-l".into(),
                        data.join("server.log").into(),
                        "-o".into(),
                        format!("-p {}", self.port).into(),
                    ],
                )
                .await;
            match result {
                Ok(_) => {
                    tracing::info!(port = self.port, "managed PostgreSQL started");
                    return Ok(());
                }
                Err(e) if Instant::now() < deadline => {
                    tracing::warn!(error = %e, "managed PostgreSQL did not start yet; retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Err(e) => {
                    let log = std::fs::read_to_string(self.host_data.join("server.log"))
                        .unwrap_or_default();
                    let tail: String = log
                        .lines()
                        .rev()
                        .take(10)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("\n");
                    return Err(PostgresError::Setup(format!("{e}; server log:\n{tail}")));
                }
            }
        }
    }

    async fn ensure_database(&self) -> Result<(), PostgresError> {
        let url = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .map_err(|e| PostgresError::Setup(format!("connect to the managed server: {e}")))?;
        let connection = tokio::spawn(connection);
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&DATABASE])
            .await
            .map_err(|e| PostgresError::Setup(format!("look up the database: {e}")))?
            .is_some();
        if !exists {
            client
                .batch_execute(&format!("CREATE DATABASE {DATABASE}"))
                .await
                .map_err(|e| PostgresError::Setup(format!("create the database: {e}")))?;
        }
        drop(client);
        let _ = connection.await;
        Ok(())
    }

    /// Starts the server again if it died (checked by the supervisor); same port, so the
    /// collector's connection pool reconnects by itself.
    pub async fn restart_if_dead(&self) -> Result<bool, PostgresError> {
        if running_server(&self.host_data).is_some() {
            return Ok(false);
        }
        tracing::warn!("managed PostgreSQL is not running; restarting it");
        self.start_server().await?;
        Ok(true)
    }

    /// Stops the server cleanly (fast shutdown: sessions end, data is checkpointed).
    pub async fn stop(&self) -> Result<(), PostgresError> {
        if running_server(&self.host_data).is_none() {
            return Ok(());
        }
        let data = self.launcher.data_path(&self.host_data);
        self.run(
            "pg_ctl",
            vec![
                "stop".into(),
                "-w".into(),
                "-t".into(),
                "60".into(),
                "-m".into(),
                "fast".into(),
                "-D".into(),
                data.into(),
            ],
        )
        .await?;
        tracing::info!("managed PostgreSQL stopped");
        Ok(())
    }
}
