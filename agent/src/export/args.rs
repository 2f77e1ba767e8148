//! The agent's command-line flags for collector mode (`--collector URL` and friends), ready
//! to `#[command(flatten)]` into the agent's arguments; each flag is also an environment
//! variable.

use std::path::PathBuf;
use std::time::Duration;

use super::config::{BackoffBounds, BatchLimits, Compression, ExportConfig, TlsFiles};

/// Flags of collector mode.
#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// Stream pairs to this collector (`http://HOST:PORT` or `https://HOST:PORT`).
    #[arg(long, env = "TAPWIRE_COLLECTOR")]
    pub collector: Option<String>,
    /// Bearer token the collector expects.
    #[arg(long, env = "TAPWIRE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the bearer token (a mounted Kubernetes Secret); a trailing newline
    /// is ignored.
    #[arg(long, env = "TAPWIRE_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// CA certificate (PEM) that signed the collector's certificate.
    #[arg(long, env = "TAPWIRE_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, env = "TAPWIRE_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    #[arg(long, env = "TAPWIRE_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Name to verify in the collector's certificate when it differs from the URL's host.
    #[arg(long, env = "TAPWIRE_COLLECTOR_TLS_NAME")]
    pub collector_tls_name: Option<String>,
    /// Folder of the on-disk spool of unacknowledged batches (kept across restarts);
    /// without it they are held in memory only.
    #[arg(long, env = "TAPWIRE_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Spool size limit in bytes; beyond it the oldest batches are dropped.
    #[arg(long, env = "TAPWIRE_SPOOL_MAX_BYTES", default_value_t = 256 << 20)]
    pub spool_max_bytes: u64,
    /// A batch closes at this many pairs…
    #[arg(long, env = "TAPWIRE_BATCH_MAX_PAIRS", default_value_t = 1000)]
    pub batch_max_pairs: usize,
    /// …or this many encoded bytes…
    #[arg(long, env = "TAPWIRE_BATCH_MAX_BYTES", default_value_t = 4 << 20)]
    pub batch_max_bytes: usize,
    /// …or when its first pair is this old (milliseconds).
    #[arg(long, env = "TAPWIRE_BATCH_MAX_DELAY_MS", default_value_t = 500)]
    pub batch_max_delay_ms: u64,
    /// Compression of the stream to the collector: zstd, gzip or none.
    #[arg(long, env = "TAPWIRE_EXPORT_COMPRESSION", default_value = "zstd", value_parser = parse_compression)]
    pub export_compression: Compression,
    /// Longest pause between reconnect attempts (milliseconds; jittered, exponential).
    #[arg(long, env = "TAPWIRE_RETRY_MAX_MS", default_value_t = 10_000)]
    pub retry_max_ms: u64,
    /// Agent id stamped on batches (default: kept in the spool folder, else random).
    #[arg(long, env = "TAPWIRE_AGENT_ID")]
    pub agent_id: Option<String>,
}

fn parse_compression(s: &str) -> Result<Compression, String> {
    match s {
        "zstd" => Ok(Compression::Zstd),
        "gzip" => Ok(Compression::Gzip),
        "none" => Ok(Compression::None),
        other => Err(format!(
            "unknown compression {other:?} (zstd, gzip or none)"
        )),
    }
}

impl ExportArgs {
    /// Reads `--token-file` into the token, so a misconfigured secret fails at start-up.
    pub fn load_token_file(&mut self) -> std::io::Result<()> {
        if let Some(path) = &self.token_file {
            let token = std::fs::read_to_string(path)?;
            self.token = Some(token.trim_end_matches(['\r', '\n']).to_string());
        }
        Ok(())
    }

    /// The exporter's configuration when `--collector` is given; `node` names this machine.
    pub fn config(&self, node: &str) -> Option<ExportConfig> {
        let url = self.collector.clone()?;
        let mut config = ExportConfig::new(url, node);
        config.token = self.token.clone();
        config.tls = TlsFiles {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            domain: self.collector_tls_name.clone(),
        };
        config.agent_id = self.agent_id.clone();
        config.spool_dir = self.spool_dir.clone();
        config.spool_max_bytes = self.spool_max_bytes;
        config.batch = BatchLimits {
            max_pairs: self.batch_max_pairs.max(1),
            max_bytes: self.batch_max_bytes.max(1),
            max_delay: Duration::from_millis(self.batch_max_delay_ms),
        };
        config.compression = self.export_compression;
        config.backoff = BackoffBounds {
            max: Duration::from_millis(self.retry_max_ms).max(config.backoff.min),
            ..config.backoff
        };
        Some(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        export: ExportArgs,
    }

    #[test]
    fn flags_become_a_config() {
        let cli = Cli::parse_from([
            "agent",
            "--collector",
            "https://collector:7440",
            "--token",
            "t",
            "--ca",
            "/ca.pem",
            "--cert",
            "/c.pem",
            "--key",
            "/k.pem",
            "--spool-dir",
            "/var/lib/tapwire/spool",
            "--batch-max-delay-ms",
            "200",
            "--export-compression",
            "gzip",
        ]);
        let config = cli.export.config("node-1").expect("collector mode");
        assert_eq!(config.collector_url, "https://collector:7440");
        assert_eq!(config.token.as_deref(), Some("t"));
        assert_eq!(config.tls.key, Some(PathBuf::from("/k.pem")));
        assert_eq!(config.batch.max_delay, Duration::from_millis(200));
        assert_eq!(config.batch.max_pairs, 1000);
        assert_eq!(config.compression, Compression::Gzip);
        assert_eq!(config.node, "node-1");
        assert!(
            Cli::try_parse_from(["agent", "--cert", "/c.pem"]).is_err(),
            "cert needs key"
        );
        assert!(Cli::parse_from(["agent"]).export.config("n").is_none());
    }
}
