//! `--output raw`: one JSON line per stream chunk, for inspection without any other
//! component.

use std::io::Write;

use base64::{Engine as _, engine::general_purpose::STANDARD};
use serde::Serialize;
use tapwire_protocols::{Chunk, Direction, Role};

use super::{ChunkMeta, SinkError, StreamSink};
use crate::connections::table::ConnectionInfo;

/// One output line.
#[derive(Debug, Serialize)]
struct RawChunkLine<'a> {
    connection_id: u64,
    pid: u32,
    comm: &'a str,
    exe: Option<&'a str>,
    cgroup_id: u64,
    container_id: Option<&'a str>,
    role: &'static str,
    direction: &'static str,
    local: String,
    remote: String,
    tls: bool,
    seq: u64,
    time_ns: u64,
    /// Bytes in `data`.
    bytes: usize,
    /// Bytes transferred right before `data` that were not captured.
    bytes_lost: u64,
    /// Kernel events of this connection were lost right before this chunk.
    events_lost: bool,
    /// The captured bytes, base64.
    data: String,
}

/// Writes [`RawChunkLine`]s to any writer (stdout in the agent).
pub struct RawJsonSink<W: Write + Send> {
    out: W,
}

impl<W: Write + Send> RawJsonSink<W> {
    /// Writes to `out` (buffer it: the sink writes one line per chunk).
    pub fn new(out: W) -> Self {
        Self { out }
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Client => "client",
        Role::Server => "server",
        Role::Unknown => "unknown",
    }
}

impl<W: Write + Send> StreamSink for RawJsonSink<W> {
    fn on_chunk(
        &mut self,
        conn: &ConnectionInfo,
        meta: &ChunkMeta<'_>,
        chunk: &Chunk<'_>,
    ) -> Result<(), SinkError> {
        let line = RawChunkLine {
            connection_id: conn.id,
            pid: meta.pid,
            comm: meta.comm,
            exe: conn.exe.as_deref(),
            cgroup_id: conn.cgroup_id,
            container_id: conn.container_id.as_deref(),
            role: role_name(conn.role),
            direction: match chunk.direction {
                Direction::Egress => "egress",
                Direction::Ingress => "ingress",
            },
            local: conn.local.to_string(),
            remote: conn.remote.to_string(),
            tls: conn.tls,
            seq: meta.seq,
            time_ns: chunk.time_ns,
            bytes: chunk.data.len(),
            bytes_lost: chunk.lost_before,
            events_lost: chunk.events_lost,
            data: STANDARD.encode(chunk.data),
        };
        serde_json::to_writer(&mut self.out, &line).map_err(|e| SinkError::Other(e.to_string()))?;
        self.out.write_all(b"\n")?;
        Ok(())
    }

    fn on_close(&mut self, _conn: &ConnectionInfo, _now_ns: u64) -> Result<(), SinkError> {
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    #[test]
    fn writes_one_json_line_per_chunk() {
        let conn = ConnectionInfo {
            id: 3,
            sock_id: 1,
            pid: 9,
            comm: "curl".into(),
            exe: Some("/usr/bin/curl".into()),
            cgroup_id: 5,
            container_id: None,
            role: Role::Client,
            local: "127.0.0.1:4000".parse::<SocketAddr>().unwrap(),
            remote: "127.0.0.1:80".parse::<SocketAddr>().unwrap(),
            tls: false,
            first_seen_ns: 0,
        };
        let mut sink = RawJsonSink::new(Vec::new());
        let chunk = Chunk {
            direction: Direction::Egress,
            data: b"GET /",
            time_ns: 11,
            lost_before: 2,
            events_lost: false,
        };
        sink.on_chunk(
            &conn,
            &ChunkMeta {
                seq: 4,
                pid: 9,
                comm: "curl",
            },
            &chunk,
        )
        .unwrap();
        sink.flush().unwrap();
        let text = String::from_utf8(sink.out).unwrap();
        assert_eq!(text.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["connection_id"], 3);
        assert_eq!(v["role"], "client");
        assert_eq!(v["direction"], "egress");
        assert_eq!(v["local"], "127.0.0.1:4000");
        assert_eq!(v["bytes"], 5);
        assert_eq!(v["bytes_lost"], 2);
        assert_eq!(v["data"], STANDARD.encode(b"GET /"));
    }
}
