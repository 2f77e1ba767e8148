//! `tapwire-agent` binary: parses flags, picks the output sink, runs capture.

use std::io::{BufWriter, stdout};

use anyhow::Context as _;
use clap::Parser as _;
use tapwire_agent::{
    capture::{check_privileges, run},
    config::{AgentArgs, OutputMode},
    export::Exporter,
    output::{
        ChunkMeta, SinkError, StreamSink,
        pairs::{JsonLines, PairSink},
        raw::RawJsonSink,
    },
};
use tapwire_protocols::{RedactionConfig, Redactor};
use tracing_subscriber::EnvFilter;

/// `--output none`: capture and count only.
struct DiscardSink;

impl StreamSink for DiscardSink {
    fn on_chunk(
        &mut self,
        _conn: &tapwire_agent::connections::table::ConnectionInfo,
        _meta: &ChunkMeta<'_>,
        _chunk: &tapwire_protocols::Chunk<'_>,
    ) -> Result<(), SinkError> {
        Ok(())
    }
    fn on_close(
        &mut self,
        _conn: &tapwire_agent::connections::table::ConnectionInfo,
        _now_ns: u64,
    ) -> Result<(), SinkError> {
        Ok(())
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// This node's name: `NODE_NAME` (set from the downward API in Kubernetes) or the
/// host name.
fn node_name() -> String {
    std::env::var("NODE_NAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut args = AgentArgs::parse();
    check_privileges()?;
    let node = args.node_name.clone().unwrap_or_else(node_name);
    let limits = tapwire_protocols::Limits {
        max_body_bytes: args.max_body_bytes,
        ..tapwire_protocols::Limits::default()
    };
    let redactor = Redactor::new(&RedactionConfig {
        headers: args.redact_headers.clone(),
        fields: args.redact_fields.clone(),
        patterns: args.redact_patterns.clone(),
    })
    .context("--redact-pattern")?;

    if let Some(path) = args.export.token_file.clone() {
        args.export
            .load_token_file()
            .with_context(|| format!("reading --token-file {}", path.display()))?;
    }
    let Some(export_config) = args.export.config(&node) else {
        let sink: Box<dyn StreamSink> = match args.output.unwrap_or(OutputMode::Raw) {
            OutputMode::Raw => Box::new(RawJsonSink::new(BufWriter::with_capacity(
                1 << 16,
                stdout(),
            ))),
            OutputMode::Jsonl => Box::new(PairSink::new(
                JsonLines(BufWriter::with_capacity(1 << 16, stdout())),
                limits,
                redactor,
                node,
            )),
            OutputMode::None => Box::new(DiscardSink),
        };
        return run(args, sink, |_| {}).await;
    };

    // The collector's own traffic (our batches, and users' queries) is not the
    // workload's: capturing it would feed the collector its own ingest.
    if let Some(port) = collector_port(&export_config.collector_url) {
        args.exclude_ports.push(port);
    }
    let (exporter, handle) = Exporter::start(export_config).context("starting the exporter")?;
    let export_metrics = exporter.metrics().clone();
    let sink = Box::new(PairSink::new(handle, limits, redactor, node));
    let result = run(args, sink, |registry| export_metrics.register(registry)).await;
    // Capture has stopped and every pair is submitted: deliver (or spool) what is left.
    let report = exporter.shutdown().await;
    if report.unacked_pairs > 0 {
        tracing::warn!(
            batches = report.unacked_batches,
            pairs = report.unacked_pairs,
            timed_out = report.timed_out,
            "pairs not acknowledged by the collector at exit (kept in the spool when one is configured)"
        );
    }
    result
}

/// The port of a collector URL such as `https://collector:7440`.
fn collector_port(url: &str) -> Option<u16> {
    let authority = url.split("://").nth(1)?.split('/').next()?;
    let port = authority.rsplit_once(':')?.1;
    port.parse().ok()
}
