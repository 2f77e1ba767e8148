//! The synchronous heart of the agent: kernel records in, per-connection chunks out.
//! Decodes each record, puts each connection's records back in order (they come from
//! one ring per CPU), keeps the connection table, tracks sequence numbers and hands
//! ordered chunks to the [`StreamSink`]. The async reader (`capture`) only feeds it,
//! calling [`CapturePipeline::end_round`] each time it has drained every ring.

use std::sync::{Arc, mpsc::SyncSender};

use prometheus_client::metrics::counter::Counter;
use tapwire_protocols::Direction;
use tracing::warn;

use crate::{
    connections::table::{Connection, ConnectionTable},
    events::{
        clock::BootClock,
        decode::{KernelEvent, decode, is_egress},
        reorder::ReorderBuffer,
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
    reorder: ReorderBuffer,
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
            reorder: ReorderBuffer::new(),
            sink,
            clock: BootClock::measure(),
            metrics,
            execs,
        }
    }

    /// Handles one ring buffer record: now, or, when an earlier record of its connection
    /// has not been read yet, once that one has been.
    pub fn handle_record(&mut self, record: &[u8]) -> Result<(), SinkError> {
        let event = match decode(record) {
            Ok(event) => event,
            Err(e) => {
                self.metrics.decode_errors.inc();
                warn!(error = %e, "undecodable kernel record");
                return Ok(());
            }
        };
        match event.sequence() {
            Some((sock, seq)) => {
                if seq > self.table.next_seq(sock) {
                    self.hold(sock, seq, record, &event);
                    return Ok(());
                }
                self.process(event)?;
                if self.reorder.holds(sock) {
                    self.release_next(sock)?;
                }
                Ok(())
            }
            None => {
                if let KernelEvent::Exit { pid } = event {
                    // The process's last records may still be unread in another ring.
                    self.reorder.hold_exit(pid, BootClock::now_monotonic_ns());
                    self.set_held_gauge();
                    return Ok(());
                }
                self.process(event)
            }
        }
    }

    fn hold(&mut self, sock: u64, seq: u64, record: &[u8], event: &KernelEvent<'_>) {
        let produced_ns = match event {
            KernelEvent::Data { header, .. }
            | KernelEvent::Open(header)
            | KernelEvent::Close(header) => header.time_ns,
            _ => BootClock::now_monotonic_ns(),
        };
        self.reorder.hold(sock, seq, record, produced_ns);
        self.metrics.events_reordered.inc();
        self.set_held_gauge();
    }

    /// Hands on the held records of `sock` whose turn has come.
    fn release_next(&mut self, sock: u64) -> Result<(), SinkError> {
        while let Some(held) = self.reorder.take_next(sock, self.table.next_seq(sock)) {
            if let Ok(event) = decode(&held.bytes) {
                self.process(event)?;
            }
        }
        self.set_held_gauge();
        Ok(())
    }

    /// Every ring has been drained once more: records held long enough are handed on
    /// (their missing predecessors count as lost), and held exits are handled.
    pub fn end_round(&mut self) -> Result<(), SinkError> {
        let released = self.reorder.end_round(BootClock::now_monotonic_ns());
        self.hand_on(released)
    }

    fn hand_on(&mut self, released: crate::events::reorder::Released) -> Result<(), SinkError> {
        if released.records.is_empty() && released.exits.is_empty() {
            return Ok(());
        }
        for held in released.records {
            if let Ok(event) = decode(&held.bytes) {
                self.process(event)?;
            }
        }
        for pid in released.exits {
            self.process(KernelEvent::Exit { pid })?;
        }
        self.metrics
            .events_reorder_forced
            .inc_by(std::mem::take(&mut self.reorder.forced_total));
        self.set_held_gauge();
        Ok(())
    }

    fn set_held_gauge(&self) {
        self.metrics
            .reorder_held_bytes
            .set(self.reorder.held_bytes() as i64);
    }

    fn process(&mut self, event: KernelEvent<'_>) -> Result<(), SinkError> {
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
                let meta = ChunkMeta {
                    seq: header.seq,
                    pid: (header.pid_tgid >> 32) as u32,
                    comm: conn.process.comm_of(&header),
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

    /// Hands on everything held, ends every connection and flushes (agent shutdown).
    pub fn shutdown(&mut self) -> Result<(), SinkError> {
        let held = self.reorder.drain();
        self.hand_on(held)?;
        let now = BootClock::now_unix_ns();
        for conn in self.table.drain() {
            self.end(conn, now)?;
        }
        self.sink.flush()
    }
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
