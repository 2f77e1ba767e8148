//! The command line of `tapwire`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// tapwire: query the traffic a tapwire collector recorded.
#[derive(Debug, Parser)]
#[command(name = "tapwire", version, about)]
pub struct Cli {
    /// Where to connect, shared by every subcommand.
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Output format: human tables, or JSON lines keyed by proto field names.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// What to ask.
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach the collector; flags win over the environment, which wins over the config file
/// (`~/.config/tapwire/config.toml`, keys `server`, `token`, `ca`, `cert`, `key`).
#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// Collector address [default: http://127.0.0.1:7440].
    #[arg(long, env = "TAPWIRE_SERVER", global = true)]
    pub server: Option<String>,
    /// Bearer token.
    #[arg(long, env = "TAPWIRE_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) to verify an https collector.
    #[arg(long, env = "TAPWIRE_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, env = "TAPWIRE_CERT", global = true, requires = "key")]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    #[arg(long, env = "TAPWIRE_KEY", global = true, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Config file [default: $XDG_CONFIG_HOME/tapwire/config.toml or ~/.config/tapwire/config.toml].
    #[arg(long, env = "TAPWIRE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Recorded request/response pairs.
    #[command(subcommand)]
    Pairs(PairsCommand),
    /// Requests per time bucket, inbound and outbound, with errors and latency.
    Throughput {
        /// Bucket width (`10s`, `1m`, `1h`).
        #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
        /// Which pairs.
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Requests grouped by service, method and normalized path.
    Endpoints {
        /// At most this many endpoints.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Which pairs.
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// The service map: who calls whom.
    Deps {
        /// Which pairs.
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Services seen, with their volumes.
    Services {
        /// Which pairs.
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// New pairs as they arrive.
    Tail {
        /// Which pairs.
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// A slice of traffic as HAR 1.2 or JSON lines of full pairs.
    Export {
        /// Output document format.
        #[arg(long, value_enum, default_value_t = ExportFormatArg::Har)]
        format: ExportFormatArg,
        /// Write to this file instead of standard output.
        #[arg(short = 'O', long = "output-file")]
        output_file: Option<PathBuf>,
        /// At most this many pairs (0: all).
        #[arg(long, default_value_t = 0)]
        limit: u64,
        /// Which pairs.
        #[command(flatten)]
        filter: FilterArgs,
    },
}

/// `tapwire pairs …`.
#[derive(Debug, Subcommand)]
pub enum PairsCommand {
    /// Pairs newest first.
    List {
        /// At most this many pairs (1..1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Continue from a cursor printed by a previous call.
        #[arg(long)]
        cursor: Option<String>,
        /// Which pairs.
        #[command(flatten)]
        filter: Box<FilterArgs>,
    },
    /// One pair in full.
    Get {
        /// The pair's id.
        id: String,
        /// Undo content encodings and show gRPC messages as JSON.
        #[arg(long)]
        decode: bool,
    },
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormatArg {
    /// HAR 1.2, for browser dev tools and HAR tools.
    Har,
    /// One full pair per line.
    Jsonl,
}

/// Which pairs a command is about.
#[derive(Debug, Clone, Default, Args)]
pub struct FilterArgs {
    /// Start: a duration before now (`15m`, `2h`, `1d`) or a time (`2026-11-28T08:00:00Z`).
    #[arg(long)]
    pub since: Option<String>,
    /// End, in the same forms [default: now].
    #[arg(long)]
    pub until: Option<String>,
    /// Node name.
    #[arg(long)]
    pub node: Option<String>,
    /// Kubernetes namespace.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Service (workload).
    #[arg(short = 's', long)]
    pub service: Option<String>,
    /// Pod name.
    #[arg(long)]
    pub pod: Option<String>,
    /// Direction.
    #[arg(long, value_enum)]
    pub direction: Option<DirectionArg>,
    /// Protocol (`http1`, `http2`, `grpc`, `websocket`).
    #[arg(long)]
    pub protocol: Option<String>,
    /// HTTP method.
    #[arg(long)]
    pub method: Option<String>,
    /// Paths starting with this.
    #[arg(long)]
    pub path_prefix: Option<String>,
    /// A normalized endpoint (`/users/{id}`).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// An HTTP status (`404`) or class (`5xx`).
    #[arg(long)]
    pub status: Option<String>,
    /// A gRPC status code.
    #[arg(long)]
    pub grpc_status: Option<u32>,
    /// Only pairs at least this slow (`250ms`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub min_duration: Option<std::time::Duration>,
    /// Case-insensitive text in authority or path.
    #[arg(long)]
    pub text: Option<String>,
    /// Only errors (5xx, gRPC errors, no response).
    #[arg(long)]
    pub errors: bool,
    /// Process id.
    #[arg(long)]
    pub pid: Option<u32>,
    /// The peer's service.
    #[arg(long)]
    pub remote_service: Option<String>,
}

/// Directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DirectionArg {
    /// Requests the observed workload served.
    In,
    /// Requests it made to dependencies.
    Out,
}
