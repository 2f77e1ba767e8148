//! Request/response pairs: every connection is parsed by
//! `tapwire_protocols::ConnectionParser`, each finished pair is stamped with the
//! connection's identity, redacted, and handed to a [`PairDestination`]: JSON lines on
//! stdout (`--output jsonl`) or the collector exporter (`--collector`).

use std::{collections::HashMap, io::Write};

use tapwire_protocols::{
    Chunk, Limits, Pair, ProtocolParser, connection::ConnectionParser, redaction::Redactor,
};

use super::{ChunkMeta, SinkError, StreamSink};
use crate::connections::table::ConnectionInfo;
use crate::export::ExportHandle;

/// Where finished pairs go.
pub trait PairDestination: Send {
    /// Takes one finished, stamped and redacted pair.
    fn deliver(&mut self, pair: Pair) -> Result<(), SinkError>;

    /// Makes everything delivered so far visible.
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Pairs as proto3 JSON lines (`--output jsonl`).
pub struct JsonLines<W: Write + Send>(pub W);

impl<W: Write + Send> PairDestination for JsonLines<W> {
    fn deliver(&mut self, pair: Pair) -> Result<(), SinkError> {
        serde_json::to_writer(&mut self.0, &pair).map_err(|e| SinkError::Other(e.to_string()))?;
        self.0.write_all(b"\n")?;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.0.flush()?;
        Ok(())
    }
}

/// Pairs to the collector. `submit` never blocks; what the exporter cannot hold is
/// dropped and counted in its metrics, so capture never waits on the network.
impl PairDestination for ExportHandle {
    fn deliver(&mut self, pair: Pair) -> Result<(), SinkError> {
        self.submit(pair);
        Ok(())
    }
}

/// Parses every connection into pairs and hands them to a [`PairDestination`].
pub struct PairSink<D: PairDestination> {
    destination: D,
    limits: Limits,
    redactor: Redactor,
    /// One parser per live connection (bounded by the connection table: every
    /// connection it drops is closed here too).
    parsers: HashMap<u64, (ConnectionInfo, ConnectionParser)>,
    pairs: Vec<Pair>,
    node: String,
}

impl<D: PairDestination> PairSink<D> {
    /// Pairs parsed with `limits`, redacted by `redactor`, stamped with `node` (this
    /// machine's name), delivered to `destination`.
    pub fn new(destination: D, limits: Limits, redactor: Redactor, node: String) -> Self {
        Self {
            destination,
            limits,
            redactor,
            parsers: HashMap::new(),
            pairs: Vec::new(),
            node,
        }
    }

    fn deliver_pairs(&mut self, conn: &ConnectionInfo) -> Result<(), SinkError> {
        for mut pair in self.pairs.drain(..) {
            stamp(&mut pair, conn, &self.node);
            // Before anything leaves the agent.
            self.redactor.redact(&mut pair);
            self.destination.deliver(pair)?;
        }
        Ok(())
    }
}

/// Fills in what only the capture layer knows.
fn stamp(pair: &mut Pair, conn: &ConnectionInfo, node: &str) {
    if pair.id.is_empty() {
        pair.id = uuid::Uuid::now_v7().to_string();
    }
    pair.local_addr = conn.local.to_string();
    pair.remote_addr = conn.remote.to_string();
    pair.tls = conn.tls;
    if conn.tls && pair.tls_library.is_empty() {
        pair.tls_library = "openssl".into();
    }
    // HTTP/1 has no scheme on the wire; only the capture layer knows it was TLS.
    if conn.tls && pair.scheme == "http" {
        pair.scheme = "https".into();
    }
    pair.pid = conn.pid;
    pair.comm = conn.comm.clone();
    pair.exe = conn.exe.as_deref().unwrap_or_default().to_string();
    pair.container_id = conn.container_id.as_deref().unwrap_or_default().to_string();
    pair.cgroup_id = conn.cgroup_id;
    pair.connection_id = conn.id;
    if pair.node.is_empty() {
        pair.node = node.to_string();
    }
    // Outside Kubernetes a process is its own service; the name is what maps and
    // endpoint lists group by.
    if pair.service.is_empty() {
        pair.service = conn.comm.clone();
    }
}

impl<D: PairDestination> StreamSink for PairSink<D> {
    fn on_chunk(
        &mut self,
        conn: &ConnectionInfo,
        _meta: &ChunkMeta<'_>,
        chunk: &Chunk<'_>,
    ) -> Result<(), SinkError> {
        let limits = &self.limits;
        let (info, parser) = self.parsers.entry(conn.id).or_insert_with(|| {
            (
                conn.clone(),
                ConnectionParser::new(conn.role, limits.clone()),
            )
        });
        // TLS is learned with the first plaintext chunk.
        info.tls = conn.tls;
        parser.on_chunk(chunk, &mut self.pairs);
        if !self.pairs.is_empty() {
            self.deliver_pairs(conn)?;
        }
        Ok(())
    }

    fn on_close(&mut self, conn: &ConnectionInfo, now_ns: u64) -> Result<(), SinkError> {
        if let Some((info, mut parser)) = self.parsers.remove(&conn.id) {
            parser.on_close(now_ns, &mut self.pairs);
            self.deliver_pairs(&info)?;
        }
        Ok(())
    }

    fn on_tick(&mut self, now_ns: u64) -> Result<(), SinkError> {
        let ids: Vec<u64> = self.parsers.keys().copied().collect();
        for id in ids {
            let Some((info, parser)) = self.parsers.get_mut(&id) else {
                continue;
            };
            parser.on_tick(now_ns, &mut self.pairs);
            if !self.pairs.is_empty() {
                let info = info.clone();
                self.deliver_pairs(&info)?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.destination.flush()
    }
}
