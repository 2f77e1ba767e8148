//! Turns raw ring buffer records into typed events. Records come from our own kernel
//! programs, but are still checked: a short or unknown record is an error, not a panic.

use std::{
    borrow::Cow,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use tapwire_agent_common::{COMM_LEN, EVENT_HEADER_BYTES, EventHeader, SockTuple, flag, kind};
use thiserror::Error;

/// A record that could not be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than the {EVENT_HEADER_BYTES}-byte header")]
    Short(usize),
    #[error("data record announces {announced} payload bytes but carries {present}")]
    PayloadMismatch { announced: usize, present: usize },
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
}

/// One decoded kernel event.
#[derive(Debug)]
pub enum KernelEvent<'a> {
    /// Bytes moved on a connection.
    Data {
        header: EventHeader,
        payload: &'a [u8],
    },
    /// A connection was opened (connect or accept).
    Open(EventHeader),
    /// A connection was closed.
    Close(EventHeader),
    /// A process called exec.
    Exec { pid: u32 },
    /// A process exited.
    Exit { pid: u32 },
}

impl KernelEvent<'_> {
    /// The connection and sequence number of a connection event (data, open, close).
    pub fn sequence(&self) -> Option<(u64, u64)> {
        match self {
            Self::Data { header, .. } | Self::Open(header) | Self::Close(header) => {
                Some((header.sock_id, header.seq))
            }
            Self::Exec { .. } | Self::Exit { .. } => None,
        }
    }
}

/// Decodes one ring buffer record.
pub fn decode(record: &[u8]) -> Result<KernelEvent<'_>, DecodeError> {
    if record.len() < EVENT_HEADER_BYTES {
        return Err(DecodeError::Short(record.len()));
    }
    // SAFETY: the length was checked; EventHeader is plain old data, any bit pattern is
    // valid, and read_unaligned has no alignment requirement.
    let header: EventHeader = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
    let pid = (header.pid_tgid >> 32) as u32;
    match header.kind {
        kind::DATA => {
            let announced = header.captured_len as usize;
            let payload = record
                .get(EVENT_HEADER_BYTES..EVENT_HEADER_BYTES + announced)
                .ok_or(DecodeError::PayloadMismatch {
                    announced,
                    present: record.len() - EVENT_HEADER_BYTES,
                })?;
            Ok(KernelEvent::Data { header, payload })
        }
        kind::OPEN => Ok(KernelEvent::Open(header)),
        kind::CLOSE => Ok(KernelEvent::Close(header)),
        kind::EXEC => Ok(KernelEvent::Exec { pid }),
        kind::EXIT => Ok(KernelEvent::Exit { pid }),
        other => Err(DecodeError::UnknownKind(other)),
    }
}

/// The (local, remote) socket addresses of a tuple.
pub fn socket_addrs(tuple: &SockTuple) -> (SocketAddr, SocketAddr) {
    let ip = |bytes: &[u8; 16]| -> IpAddr {
        if tuple.family == 2 {
            IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
        } else {
            // Dual-stack sockets carry IPv4 peers as ::ffff:a.b.c.d; show them as IPv4.
            Ipv6Addr::from(*bytes).to_canonical()
        }
    };
    (
        SocketAddr::new(ip(&tuple.local_addr), tuple.local_port),
        SocketAddr::new(ip(&tuple.remote_addr), tuple.remote_port),
    )
}

/// The command name without its NUL padding (borrowed unless it is not UTF-8: this
/// runs for every event).
pub fn comm(header: &EventHeader) -> Cow<'_, str> {
    comm_str(&header.comm)
}

/// A NUL-padded command name as text (see [`comm`]).
pub fn comm_str(comm: &[u8; COMM_LEN]) -> Cow<'_, str> {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    // `from_utf8` checks ASCII a word at a time; the lossy conversion walks every
    // name byte by byte, and only a name that is not UTF-8 needs it.
    match std::str::from_utf8(&comm[..end]) {
        Ok(name) => Cow::Borrowed(name),
        Err(_) => String::from_utf8_lossy(&comm[..end]),
    }
}

/// Whether the bytes were written by the observed process.
pub fn is_egress(header: &EventHeader) -> bool {
    header.flags & flag::EGRESS != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: u32, captured: u32) -> EventHeader {
        EventHeader {
            kind,
            flags: 0,
            time_ns: 1,
            pid_tgid: (42u64 << 32) | 43,
            cgroup_id: 0,
            sock_id: 7,
            seq: 0,
            total_len: captured as u64,
            captured_len: captured,
            fd: 3,
            comm: *b"curl\0\0\0\0\0\0\0\0\0\0\0\0",
            tuple: SockTuple {
                family: 2,
                local_port: 5000,
                remote_port: 80,
                _pad: 0,
                local_addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                remote_addr: [127, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            },
        }
    }

    fn bytes(h: &EventHeader, payload: &[u8]) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain-old-data struct.
        let raw = unsafe {
            std::slice::from_raw_parts((h as *const EventHeader).cast::<u8>(), EVENT_HEADER_BYTES)
        };
        [raw, payload].concat()
    }

    #[test]
    fn decodes_data_with_payload_and_addresses() {
        let h = header(kind::DATA, 5);
        let record = bytes(&h, b"hello");
        let KernelEvent::Data { header, payload } = decode(&record).unwrap() else {
            panic!("not data")
        };
        assert_eq!(payload, b"hello");
        assert_eq!(comm(&header), "curl");
        let (local, remote) = socket_addrs(&header.tuple);
        assert_eq!(local.to_string(), "127.0.0.1:5000");
        assert_eq!(remote.to_string(), "127.0.0.2:80");
    }

    #[test]
    fn rejects_short_and_inconsistent_records() {
        assert_eq!(decode(&[0; 10]).unwrap_err(), DecodeError::Short(10));
        let record = bytes(&header(kind::DATA, 9), b"abc");
        assert!(matches!(
            decode(&record),
            Err(DecodeError::PayloadMismatch { .. })
        ));
        let record = bytes(&header(99, 0), b"");
        assert_eq!(decode(&record).unwrap_err(), DecodeError::UnknownKind(99));
    }

    #[test]
    fn shows_v4_mapped_v6_as_v4() {
        let mut h = header(kind::OPEN, 0);
        h.tuple.family = 10;
        h.tuple.local_addr = Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped().octets();
        h.tuple.remote_addr = Ipv6Addr::LOCALHOST.octets();
        let (local, remote) = socket_addrs(&h.tuple);
        assert_eq!(local.to_string(), "10.0.0.1:5000");
        assert_eq!(remote.to_string(), "[::1]:80");
    }

    #[test]
    fn names_command_without_padding_even_when_not_utf8() {
        assert!(matches!(
            comm_str(b"curl\0\0\0\0\0\0\0\0\0\0\0\0"),
            Cow::Borrowed("curl")
        ));
        assert_eq!(comm_str(b"0123456789abcdef"), "0123456789abcdef");
        assert_eq!(comm_str(b"w\xffker\0\0\0\0\0\0\0\0\0\0\0"), "w\u{fffd}ker");
    }
}
