//! Command line and environment settings of `tapwire-collector`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

/// Default largest accepted (decoded) batch.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// `tapwire-collector`: receives pairs from agents, stores and serves them.
#[derive(Debug, Parser)]
#[command(name = "tapwire-collector", version, about)]
pub struct Cli {
    /// What to do; without a subcommand the collector serves.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings shared by every subcommand.
    #[command(flatten)]
    pub config: Config,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending schema migrations, then exit.
    Migrate,
}

/// Every setting; each flag is also read from the environment variable shown in `--help`.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// gRPC address (ingest and query).
    #[arg(long, env = "TAPWIRE_LISTEN", default_value = "127.0.0.1:7440")]
    pub listen: SocketAddr,
    /// PostgreSQL URL; absent: a managed local PostgreSQL under the data folder.
    #[arg(long, env = "TAPWIRE_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Payload store: `file:///DIR` or `s3://bucket/prefix` (S3 endpoint and credentials
    /// from `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_DEFAULT_REGION`, `AWS_ALLOW_HTTP`). Default: `file://DATA_DIR/payloads`.
    #[arg(long, env = "TAPWIRE_PAYLOAD_STORE")]
    pub payload_store: Option<String>,
    /// Folder for the managed PostgreSQL and the default payload store.
    /// Default: `$HOME/.local/share/tapwire-collector`.
    #[arg(long, env = "TAPWIRE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address for Prometheus `/metrics` and `/healthz`.
    #[arg(long, env = "TAPWIRE_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Bearer token clients must present.
    #[arg(long, env = "TAPWIRE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Server certificate (PEM) for TLS.
    #[arg(long, env = "TAPWIRE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Server private key (PEM) for TLS.
    #[arg(long, env = "TAPWIRE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) that client certificates must chain to: enables mutual TLS.
    #[arg(long, env = "TAPWIRE_CLIENT_CA", requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
    /// Allow a non-loopback listen address without TLS and a token.
    #[arg(long, env = "TAPWIRE_INSECURE_PLAINTEXT")]
    pub insecure_plaintext: bool,
    /// Age after which pairs, rollups and payloads are dropped (`7d`, `36h`; `0` keeps all).
    #[arg(long, env = "TAPWIRE_RETENTION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub retention: Duration,
    /// Largest accepted batch, in bytes after decompression.
    #[arg(long, env = "TAPWIRE_MAX_BATCH_BYTES", default_value_t = DEFAULT_MAX_BATCH_BYTES)]
    pub max_batch_bytes: usize,
    /// Debian trixie root holding PostgreSQL 17 + TimescaleDB for the managed database.
    /// Default: `$HOME/.cache/tapwire/pg-trixie-tsdb` when it exists.
    #[arg(long, env = "TAPWIRE_POSTGRES_ROOT")]
    pub postgres_root: Option<PathBuf>,
    /// Host PostgreSQL binaries for the managed database (e.g. `/usr/lib/postgresql/15/bin`);
    /// takes precedence over `--postgres-root`.
    #[arg(long, env = "TAPWIRE_POSTGRES_BIN")]
    pub postgres_bin: Option<PathBuf>,
    /// Encoded `FileDescriptorSet` files (`protoc --descriptor_set_out`, `buf build -o`) of
    /// the gRPC services whose messages `GetPair` should show with field names; repeatable,
    /// or comma-separated in the environment.
    #[arg(
        long = "descriptor-set",
        env = "TAPWIRE_DESCRIPTOR_SETS",
        value_delimiter = ','
    )]
    pub descriptor_sets: Vec<PathBuf>,
    /// How often partitions are created ahead and retention runs.
    #[arg(long, env = "TAPWIRE_MAINTENANCE_INTERVAL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub maintenance_interval: Duration,
}

/// The settings are contradictory or unsafe.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Plaintext or tokenless on a reachable address.
    #[error(
        "refusing to listen on non-loopback {0} without TLS and a token \
         (give --tls-cert/--tls-key and --token, or --insecure-plaintext)"
    )]
    Insecure(SocketAddr),
    /// No home folder to derive defaults from.
    #[error("no --data-dir given and $HOME is not set")]
    NoDataDir,
}

impl Config {
    /// Checks the secure-by-default rule: off loopback, both TLS and a token are required
    /// unless `--insecure-plaintext`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let secured = self.tls_cert.is_some() && self.token.is_some();
        if !self.listen.ip().is_loopback() && !secured && !self.insecure_plaintext {
            return Err(ConfigError::Insecure(self.listen));
        }
        Ok(())
    }

    /// The data folder, explicit or under `$HOME`.
    pub fn data_dir(&self) -> Result<PathBuf, ConfigError> {
        match &self.data_dir {
            Some(dir) => Ok(dir.clone()),
            None => std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".local/share/tapwire-collector"))
                .ok_or(ConfigError::NoDataDir),
        }
    }

    /// The payload store URL, explicit or a folder in the data folder.
    pub fn payload_store(&self) -> Result<String, ConfigError> {
        match &self.payload_store {
            Some(url) => Ok(url.clone()),
            None => Ok(format!(
                "file://{}",
                self.data_dir()?.join("payloads").display()
            )),
        }
    }

    /// Retention, or `None` when it is zero (keep everything).
    pub fn retention(&self) -> Option<Duration> {
        (!self.retention.is_zero()).then_some(self.retention)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        let mut argv = vec!["tapwire-collector"];
        argv.extend_from_slice(args);
        Cli::parse_from(argv)
    }

    #[test]
    fn secure_by_default() {
        assert!(parse(&[]).config.validate().is_ok());
        assert!(
            parse(&["--listen", "0.0.0.0:7440"])
                .config
                .validate()
                .is_err()
        );
        assert!(
            parse(&["--listen", "0.0.0.0:7440", "--token", "t"])
                .config
                .validate()
                .is_err()
        );
        assert!(
            parse(&["--listen", "0.0.0.0:7440", "--insecure-plaintext"])
                .config
                .validate()
                .is_ok()
        );
        let secured = parse(&[
            "--listen",
            "[::]:7440",
            "--token",
            "t",
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
        ]);
        assert!(secured.config.validate().is_ok());
        assert_eq!(
            parse(&["--retention", "36h"]).config.retention.as_secs(),
            36 * 3600
        );
        assert!(parse(&["--retention", "0s"]).config.retention().is_none());
        assert!(matches!(
            parse(&["migrate"]).command,
            Some(Command::Migrate)
        ));
    }
}
