//! The synchronous heart of the agent: kernel records in, per-connection chunks out.
//! Decodes each record, keeps the connection table, tracks sequence numbers and hands
//! ordered chunks to the [`StreamSink`]. The async reader (`capture`) only feeds it.

use std::sync::{Arc, mpsc::SyncSender};

use prometheus_client::metrics::counter::Counter;
use tapwire_protocols::Direction;
use tracing::warn;

use crate::{
    connections::table::{Connection, ConnectionTable},
    events::{
        clock::BootClock,
        decode::{KernelEvent, comm, decode, is_egress},
    },
    metrics::AgentMetrics,
    output::{ChunkMeta, SinkError, StreamSink},
};

/// Metric handles used per event, resolved once (a family lookup per event costs a
/// lock and a hash).
struct EventCounters {
    data: Counter,
    open: Counter,
    close: Counter,
    exec: Counter,
    exit: Counter,
    egress_bytes: Counter,
    ingress_bytes: Counter,
}

impl EventCounters {
    fn new(metrics: &AgentMetrics) -> Self {
        let kind = |k| metrics.events.get_or_create(&[("kind", k)]).clone();
        let bytes = |d| {
            metrics
                .bytes_captured
                .get_or_create(&[("direction", d)])
                .clone()
        };
        Self {
            data: kind("data"),
            open: kind("open"),
            close: kind("close"),
            exec: kind("exec"),
            exit: kind("exit"),
            egress_bytes: bytes("egress"),
            ingress_bytes: bytes("ingress"),
        }
    }
}

/// Records → connections → chunks → sink.
pub struct CapturePipeline {
    counters: EventCounters,
    table: ConnectionTable,
    sink: Box<dyn StreamSink>,
    clock: BootClock,
    metrics: Arc<AgentMetrics>,
    /// New processes, for TLS library discovery (dropped when full: a later full scan
    /// finds them anyway).
    execs: Option<SyncSender<u32>>,
}

impl CapturePipeline {
    /// A pipeline writing to `sink`.
    pub fn new(
        table: ConnectionTable,
        sink: Box<dyn StreamSink>,
        metrics: Arc<AgentMetrics>,
        execs: Option<SyncSender<u32>>,
    ) -> Self {
        Self {
            counters: EventCounters::new(&metrics),
            table,
            sink,
            clock: BootClock::measure(),
            metrics,
            execs,
        }
    }

    /// Handles one ring buffer record.
    pub fn handle_record(&mut self, record: &[u8]) -> Result<(), SinkError> {
        let event = match decode(record) {
            Ok(event) => event,
            Err(e) => {
                self.metrics.decode_errors.inc();
                warn!(error = %e, "undecodable kernel record");
                return Ok(());
            }
        };
        match event {
            KernelEvent::Data { header, payload } => {
                self.counters.data.inc();
                let now = self.clock.to_unix_ns(header.time_ns);
                let (conn, evicted) = self.table.get_or_create(&header, now);
                let is_new = conn.streams.observe_seq(header.seq);
                if is_new > 0 {
                    self.metrics.events_lost.inc_by(is_new);
                }
                let direction = if is_egress(&header) {
                    Direction::Egress
                } else {
                    Direction::Ingress
                };
                let (chunk, gap) = conn
                    .streams
                    .chunks(direction, payload, header.total_len, now);
                let comm = comm(&header);
                let meta = ChunkMeta {
                    seq: header.seq,
                    pid: (header.pid_tgid >> 32) as u32,
                    comm: &comm,
                };
                match direction {
                    Direction::Egress => &self.counters.egress_bytes,
                    Direction::Ingress => &self.counters.ingress_bytes,
                }
                .inc_by(payload.len() as u64);
                self.sink.on_chunk(&conn.info, &meta, &chunk)?;
                if let Some(gap) = gap {
                    self.metrics.bytes_uncaptured.inc_by(gap.lost_before);
                    self.sink.on_chunk(&conn.info, &meta, &gap)?;
                }
                if let Some(evicted) = evicted {
                    self.end(evicted, now)?;
                }
            }
            KernelEvent::Open(header) => {
                self.counters.open.inc();
                self.metrics.connections_opened.inc();
                let now = self.clock.to_unix_ns(header.time_ns);
                for ended in self.table.open(&header, now) {
                    self.end(ended, now)?;
                }
                let (conn, _) = self.table.get_or_create(&header, now);
                conn.streams.observe_seq(header.seq);
            }
            KernelEvent::Close(header) => {
                self.counters.close.inc();
                let now = self.clock.to_unix_ns(header.time_ns);
                if let Some(mut conn) = self.table.close(header.sock_id) {
                    let missing = conn.streams.observe_seq(header.seq);
                    self.metrics.events_lost.inc_by(missing);
                    self.end(conn, now)?;
                }
            }
            KernelEvent::Exec { pid } => {
                self.counters.exec.inc();
                if let Some(execs) = &self.execs {
                    let _ = execs.try_send(pid);
                }
            }
            KernelEvent::Exit { pid } => {
                self.counters.exit.inc();
                let now = BootClock::now_unix_ns();
                for ended in self.table.process_exited(pid) {
                    self.end(ended, now)?;
                }
            }
        }
        self.metrics.connections.set(self.table.len() as i64);
        Ok(())
    }

    fn end(&mut self, conn: Connection, now_ns: u64) -> Result<(), SinkError> {
        self.sink.on_close(&conn.info, now_ns)
    }

    /// Periodic work: idle expiry and the sink's timers.
    pub fn tick(&mut self) -> Result<(), SinkError> {
        let now = BootClock::now_unix_ns();
        for ended in self.table.expire_idle(now) {
            self.end(ended, now)?;
        }
        self.metrics.connections.set(self.table.len() as i64);
        self.sink.on_tick(now)?;
        self.sink.flush()
    }

    /// Makes the sink's output visible.
    pub fn flush(&mut self) -> Result<(), SinkError> {
        self.sink.flush()
    }

    /// Ends every connection and flushes (agent shutdown).
    pub fn shutdown(&mut self) -> Result<(), SinkError> {
        let now = BootClock::now_unix_ns();
        for conn in self.table.drain() {
            self.end(conn, now)?;
        }
        self.sink.flush()
    }
}
