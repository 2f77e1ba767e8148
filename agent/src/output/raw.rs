//! `--output raw`: one JSON line per stream chunk, for inspection without any other
//! component.
//!
//! Written by hand rather than through serde: at saturation this sink sees every
//! captured byte, and serde's string escaping of the base64 payload, the per-chunk
//! formatting of both socket addresses and the allocations behind them cost more than
//! encoding the payload itself. The parts of a line that are the same for every chunk
//! of a connection are formatted once, when its first chunk arrives (and again only when
//! another process of it moves bytes).

use std::{collections::HashMap, io::Write};

use tapwire_protocols::{Chunk, Direction, Role};

use super::{ChunkMeta, SinkError, StreamSink};
use crate::connections::{hash::U64Map, table::ConnectionInfo};

/// Bytes gathered before they are handed to the writer.
const BATCH_BYTES: usize = 64 * 1024;

/// Writes one JSON object per chunk to any writer (stdout in the agent):
/// `connection_id`, `pid`, `comm`, `exe`, `cgroup_id`, `container_id`, `role`,
/// `direction`, `local`, `remote`, `tls`, `seq`, `time_ns`, `bytes` (bytes in `data`),
/// `bytes_lost` (bytes transferred right before `data` that were not captured),
/// `events_lost` (kernel events of this connection were lost right before this chunk)
/// and `data` (the captured bytes, base64).
pub struct RawJsonSink<W: Write + Send> {
    out: W,
    /// Lines not yet handed to `out`.
    buf: Vec<u8>,
    /// Per connection id: the start of its lines and its addresses, formatted once.
    fixed: HashMap<u64, ConnectionFields, U64Map>,
}

struct ConnectionFields {
    /// `{"connection_id":…,"pid":…,"comm":…,"exe":…,"cgroup_id":…,"container_id":…,
    /// "role":…,` for the process `head_pid` named `head_comm`.
    head: Vec<u8>,
    head_pid: u32,
    head_comm: String,
    /// `"local":…,"remote":…,`.
    addresses: Vec<u8>,
}

impl<W: Write + Send> RawJsonSink<W> {
    /// Writes to `out` (gathered in 64 KiB batches; `flush` hands over the rest).
    pub fn new(out: W) -> Self {
        Self {
            out,
            buf: Vec::with_capacity(2 * BATCH_BYTES),
            fixed: HashMap::default(),
        }
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Client => "client",
        Role::Server => "server",
        Role::Unknown => "unknown",
    }
}

impl ConnectionFields {
    fn of(conn: &ConnectionInfo, meta: &ChunkMeta<'_>) -> Self {
        let mut addresses = Vec::with_capacity(64);
        addresses.extend_from_slice(b"\"local\":");
        json_str(&mut addresses, &conn.local.to_string());
        addresses.extend_from_slice(b",\"remote\":");
        json_str(&mut addresses, &conn.remote.to_string());
        addresses.push(b',');
        let mut fields = Self {
            head: Vec::with_capacity(192),
            head_pid: meta.pid,
            head_comm: meta.comm.to_owned(),
            addresses,
        };
        fields.format_head(conn);
        fields
    }

    /// The line start for the chunk of `meta`: re-formatted when another process (or
    /// the same one under a new name) moved these bytes.
    fn head_for(&mut self, conn: &ConnectionInfo, meta: &ChunkMeta<'_>) -> &[u8] {
        if self.head_pid != meta.pid || self.head_comm != meta.comm {
            self.head_pid = meta.pid;
            meta.comm.clone_into(&mut self.head_comm);
            self.format_head(conn);
        }
        &self.head
    }

    fn format_head(&mut self, conn: &ConnectionInfo) {
        let head = &mut self.head;
        head.clear();
        head.extend_from_slice(b"{\"connection_id\":");
        json_u64(head, conn.id);
        head.extend_from_slice(b",\"pid\":");
        json_u64(head, u64::from(self.head_pid));
        head.extend_from_slice(b",\"comm\":");
        json_str(head, &self.head_comm);
        head.extend_from_slice(b",\"exe\":");
        json_opt_str(head, conn.exe.as_deref());
        head.extend_from_slice(b",\"cgroup_id\":");
        json_u64(head, conn.cgroup_id);
        head.extend_from_slice(b",\"container_id\":");
        json_opt_str(head, conn.container_id.as_deref());
        head.extend_from_slice(b",\"role\":");
        json_str(head, role_name(conn.role));
        head.push(b',');
    }
}

/// "00" to "99": two digits per division (every line has six numbers, one of them a
/// 19-digit timestamp).
const DIGIT_PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Appends `n` in decimal. Twenty zero bytes are appended (a copy of constant size,
/// a few moves), the digits written over them in place, and the rest cut off.
/// Appending a slice of the digits' length was a call to `memcpy` for every number;
/// building the digits in a stack array and appending it whole made the 16-byte load
/// of that array wait on the 2-byte stores that had just filled it (a store-forwarding
/// stall: half of this function's time).
fn json_u64(out: &mut Vec<u8>, mut n: u64) {
    let len = n.checked_ilog10().unwrap_or(0) as usize + 1;
    let start = out.len();
    out.extend_from_slice(&[0u8; 20]);
    let digits = &mut out[start..start + 20];
    let mut i = len;
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        digits[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        digits[0..2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    } else {
        digits[0] = b'0' + n as u8;
    }
    out.truncate(start + len);
}

fn json_bool(out: &mut Vec<u8>, b: bool) {
    out.extend_from_slice(if b { b"true" } else { b"false" });
}

/// Appends `s` as a JSON string.
fn json_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Rare (control characters, quotes): serde_json knows every escape. Writing
        // a &str to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

fn json_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

impl<W: Write + Send> StreamSink for RawJsonSink<W> {
    fn on_chunk(
        &mut self,
        conn: &ConnectionInfo,
        meta: &ChunkMeta<'_>,
        chunk: &Chunk<'_>,
    ) -> Result<(), SinkError> {
        let fixed = self
            .fixed
            .entry(conn.id)
            .or_insert_with(|| ConnectionFields::of(conn, meta));
        let out = &mut self.buf;
        out.extend_from_slice(fixed.head_for(conn, meta));
        out.extend_from_slice(match chunk.direction {
            Direction::Egress => b"\"direction\":\"egress\",",
            Direction::Ingress => b"\"direction\":\"ingress\",",
        });
        out.extend_from_slice(&fixed.addresses);
        out.extend_from_slice(b"\"tls\":");
        json_bool(out, conn.tls);
        out.extend_from_slice(b",\"seq\":");
        json_u64(out, meta.seq);
        out.extend_from_slice(b",\"time_ns\":");
        json_u64(out, chunk.time_ns);
        out.extend_from_slice(b",\"bytes\":");
        json_u64(out, chunk.data.len() as u64);
        out.extend_from_slice(b",\"bytes_lost\":");
        json_u64(out, chunk.lost_before);
        out.extend_from_slice(b",\"events_lost\":");
        json_bool(out, chunk.events_lost);
        out.extend_from_slice(b",\"data\":\"");
        // The base64 alphabet needs no JSON escaping: encode straight into the line (SIMD:
        // at saturation the scalar encoder was the largest item of the agent's CPU).
        base64_simd::STANDARD.encode_append(chunk.data, out);
        out.extend_from_slice(b"\"}\n");
        if self.buf.len() >= BATCH_BYTES {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    fn on_close(&mut self, conn: &ConnectionInfo, _now_ns: u64) -> Result<(), SinkError> {
        self.fixed.remove(&conn.id);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        if !self.buf.is_empty() {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        self.out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use base64::{Engine as _, engine::general_purpose::STANDARD};

    use super::*;

    fn curl_connection() -> ConnectionInfo {
        ConnectionInfo {
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
        }
    }

    const GET_CHUNK: Chunk<'static> = Chunk {
        direction: Direction::Egress,
        data: b"GET /",
        time_ns: 11,
        lost_before: 2,
        events_lost: false,
    };

    #[test]
    fn writes_one_json_line_per_chunk() {
        let conn = curl_connection();
        let mut sink = RawJsonSink::new(Vec::new());
        let chunk = GET_CHUNK;
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

    #[test]
    fn escapes_odd_names_and_keeps_connections_apart() {
        let mut conn = ConnectionInfo {
            id: 7,
            sock_id: 1,
            pid: 9,
            comm: "x".into(),
            exe: Some("/opt/a \"b\"\\c".into()),
            cgroup_id: u64::MAX,
            container_id: None,
            role: Role::Unknown,
            local: "[::1]:4000".parse::<SocketAddr>().unwrap(),
            remote: "[2001:db8::2]:443".parse::<SocketAddr>().unwrap(),
            tls: false,
            first_seen_ns: 0,
        };
        let mut sink = RawJsonSink::new(Vec::new());
        let meta = ChunkMeta {
            seq: 0,
            pid: 9,
            comm: "tab\there\u{1}é",
        };
        let payload: Vec<u8> = (0..=255).collect();
        for (data, tls) in [(&payload[..], false), (&b""[..], true), (&b"ab"[..], true)] {
            conn.tls = tls;
            let chunk = Chunk {
                direction: Direction::Ingress,
                data,
                time_ns: 0,
                lost_before: 0,
                events_lost: true,
            };
            sink.on_chunk(&conn, &meta, &chunk).unwrap();
        }
        sink.on_close(&conn, 0).unwrap();
        assert!(sink.fixed.is_empty(), "closing forgets the connection");
        conn.id = 8;
        conn.exe = None;
        conn.container_id = Some("c0ffee".into());
        conn.role = Role::Server;
        let chunk = Chunk {
            direction: Direction::Egress,
            data: b"x",
            time_ns: 1,
            lost_before: 0,
            events_lost: false,
        };
        sink.on_chunk(&conn, &meta, &chunk).unwrap();
        sink.flush().unwrap();
        let text = String::from_utf8(sink.out).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0]["exe"], "/opt/a \"b\"\\c");
        assert_eq!(lines[0]["comm"], "tab\there\u{1}é");
        assert_eq!(lines[0]["cgroup_id"], u64::MAX);
        assert_eq!(lines[0]["container_id"], serde_json::Value::Null);
        assert_eq!(lines[0]["local"], "[::1]:4000");
        assert_eq!(lines[0]["remote"], "[2001:db8::2]:443");
        assert_eq!(lines[0]["role"], "unknown");
        assert_eq!(lines[0]["direction"], "ingress");
        assert_eq!(lines[0]["events_lost"], true);
        assert_eq!(lines[0]["bytes"], 256);
        assert_eq!(lines[0]["data"], STANDARD.encode(&payload));
        assert_eq!(
            (lines[0]["tls"].clone(), lines[2]["tls"].clone()),
            (false.into(), true.into())
        );
        assert_eq!(lines[1]["data"], "");
        assert_eq!(lines[2]["data"], "YWI=");
        assert_eq!(lines[3]["connection_id"], 8);
        assert_eq!(lines[3]["exe"], serde_json::Value::Null);
        assert_eq!(lines[3]["container_id"], "c0ffee");
        assert_eq!(lines[3]["role"], "server");
        assert_eq!(lines[3]["direction"], "egress");
        assert_eq!(lines[3]["time_ns"], 1);
    }

    #[test]
    fn names_the_process_of_each_chunk() {
        let conn = ConnectionInfo {
            id: 4,
            comm: "nginx".into(),
            exe: None,
            role: Role::Server,
            ..curl_connection()
        };
        let mut sink = RawJsonSink::new(Vec::new());
        let chunk = Chunk {
            direction: Direction::Ingress,
            data: b"x",
            ..GET_CHUNK
        };
        // The master's accept, a worker's reads, the worker renamed, the master again.
        for (pid, comm) in [(9, "nginx"), (10, "nginx"), (10, "worker"), (9, "nginx")] {
            let meta = ChunkMeta { seq: 0, pid, comm };
            sink.on_chunk(&conn, &meta, &chunk).unwrap();
        }
        sink.flush().unwrap();
        let text = String::from_utf8(sink.out).unwrap();
        let seen: Vec<(u64, String)> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|v| {
                (
                    v["pid"].as_u64().unwrap(),
                    v["comm"].as_str().unwrap().into(),
                )
            })
            .collect();
        let want = [(9, "nginx"), (10, "nginx"), (10, "worker"), (9, "nginx")];
        assert_eq!(seen, want.map(|(p, c)| (p, c.to_string())));
    }

    #[test]
    fn writes_numbers_in_decimal() {
        for n in [
            0,
            1,
            9,
            10,
            11,
            99,
            100,
            101,
            999,
            1000,
            12345,
            u64::MAX - 1,
            u64::MAX,
        ]
        .into_iter()
        .chain((0..64).map(|b| 1u64 << b))
        .chain((1..20).map(|d| 10u64.pow(d) - 1))
        {
            // Appended after what the buffer holds, not over it.
            let mut out = b"x:".to_vec();
            json_u64(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), format!("x:{n}"));
        }
    }
}
