//! The bounded connection table: one entry per live kernel socket, created by its first
//! event (open or data), removed on close, process exit, idle expiry or eviction.

use std::{
    collections::{HashMap, hash_map::Entry},
    net::SocketAddr,
    sync::Arc,
};

use tapwire_agent_common::{COMM_LEN, EventHeader, flag};
use tapwire_protocols::Role;

use super::{
    hash::U64Map,
    identity::{IdentityCache, ProcessIdentity},
};
use crate::{
    events::decode::{comm, comm_str, socket_addrs},
    streams::StreamTracker,
};

/// What every consumer needs to know about a connection.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// Agent-unique id (never reused while the agent runs).
    pub id: u64,
    /// The kernel programs' id of the connection (`EventHeader::sock_id`).
    pub sock_id: u64,
    /// The process that opened it (or first used it).
    pub pid: u32,
    /// That process's command name.
    pub comm: String,
    /// Its executable path.
    pub exe: Option<Arc<str>>,
    /// Its cgroup id.
    pub cgroup_id: u64,
    /// Its container id.
    pub container_id: Option<Arc<str>>,
    /// Who connected; `Unknown` for connections that predate the agent.
    pub role: Role,
    /// Local address as the process sees it.
    pub local: SocketAddr,
    /// Remote address.
    pub remote: SocketAddr,
    /// Plaintext comes from TLS probes.
    pub tls: bool,
    /// When the connection was first seen (unix ns).
    pub first_seen_ns: u64,
}

/// A table entry.
#[derive(Debug)]
pub struct Connection {
    /// Identity and addresses.
    pub info: ConnectionInfo,
    /// Stream state (sequence tracking, gap marks).
    pub streams: StreamTracker,
    /// Last event time (unix ns), for idle expiry.
    pub last_seen_ns: u64,
    /// The process that moved the connection's last bytes, by name.
    pub process: LastProcess,
}

/// The process of a connection's last event that carried a command name, and that
/// name: the kernel leaves it out of the events that follow from the same process
/// (`flag::SAME_PROCESS`). The name is kept decoded, so the events in between cost no
/// conversion.
#[derive(Debug)]
pub struct LastProcess {
    pid: u32,
    /// The name as the kernel sent it (NUL padded).
    raw: [u8; COMM_LEN],
    /// `raw` as text.
    name: String,
}

impl LastProcess {
    fn new(pid: u32, raw: [u8; COMM_LEN]) -> Self {
        Self {
            pid,
            raw,
            name: comm_str(&raw).into_owned(),
        }
    }

    /// The command name of the process that moved the bytes of the event of
    /// `header`: the header's own, or the one it left out. A process this
    /// connection's entry has not seen name itself (the entry was re-created after
    /// idle expiry or eviction) gets its name from /proc if it is the opener, else
    /// none (empty).
    pub fn comm_of(&mut self, header: &EventHeader) -> &str {
        let pid = (header.pid_tgid >> 32) as u32;
        if header.flags & flag::SAME_PROCESS == 0 {
            if (pid, header.comm) != (self.pid, self.raw) {
                self.pid = pid;
                self.raw = header.comm;
                self.name.clear();
                self.name.push_str(&comm_str(&header.comm));
            }
            return &self.name;
        }
        if self.pid == pid { &self.name } else { "" }
    }
}

/// Bounded map from kernel socket to connection.
pub struct ConnectionTable {
    by_sock: HashMap<u64, Connection, U64Map>,
    capacity: usize,
    idle_ns: u64,
    next_id: u64,
    identities: IdentityCache,
}

impl ConnectionTable {
    /// A table of at most `capacity` connections, expiring those idle for `idle_ns`.
    pub fn new(capacity: usize, idle_ns: u64) -> Self {
        Self {
            by_sock: HashMap::default(),
            capacity: capacity.max(1),
            idle_ns,
            next_id: 1,
            identities: IdentityCache::new(16_384),
        }
    }

    /// Live connections.
    pub fn len(&self) -> usize {
        self.by_sock.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.by_sock.is_empty()
    }

    /// Starts a connection from an OPEN event; returns the connection it replaces (one
    /// whose id the kernel programs handed out again, which they never do) and anything
    /// evicted to make room.
    pub fn open(&mut self, header: &EventHeader, now_ns: u64) -> Vec<Connection> {
        let mut ended: Vec<Connection> = self.by_sock.remove(&header.sock_id).into_iter().collect();
        let role = if header.flags & flag::ROLE_CLIENT != 0 {
            Role::Client
        } else if header.flags & flag::ROLE_SERVER != 0 {
            Role::Server
        } else {
            Role::Unknown
        };
        ended.extend(self.insert(header, role, now_ns));
        ended
    }

    /// The connection of a data event, created (role unknown) if it predates the agent
    /// or its open event was missed. Also returns a connection evicted to make room.
    pub fn get_or_create(
        &mut self,
        header: &EventHeader,
        now_ns: u64,
    ) -> (&mut Connection, Option<Connection>) {
        let mut evicted = None;
        // The full check first: the lookup it needs only happens when the table is full.
        if self.by_sock.len() >= self.capacity && !self.by_sock.contains_key(&header.sock_id) {
            evicted = self.evict_oldest();
        }
        let conn = match self.by_sock.entry(header.sock_id) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(v) => {
                let pid = (header.pid_tgid >> 32) as u32;
                let identity = self.identities.lookup(pid);
                let id = self.next_id;
                self.next_id += 1;
                v.insert(new_connection(id, header, Role::Unknown, identity, now_ns))
            }
        };
        conn.last_seen_ns = now_ns;
        if header.flags & flag::TLS != 0 {
            conn.info.tls = true;
        }
        (conn, evicted)
    }

    fn insert(&mut self, header: &EventHeader, role: Role, now_ns: u64) -> Option<Connection> {
        let evicted = if self.by_sock.len() >= self.capacity {
            self.evict_oldest()
        } else {
            None
        };
        let pid = (header.pid_tgid >> 32) as u32;
        let identity = self.identities.lookup(pid);
        let id = self.next_id;
        self.next_id += 1;
        self.by_sock.insert(
            header.sock_id,
            new_connection(id, header, role, identity, now_ns),
        );
        evicted
    }

    fn evict_oldest(&mut self) -> Option<Connection> {
        let oldest = self
            .by_sock
            .iter()
            .min_by_key(|(_, c)| c.last_seen_ns)
            .map(|(k, _)| *k)?;
        self.by_sock.remove(&oldest)
    }

    /// The sequence number the next event of `sock_id` should carry: 0 for a socket not
    /// tracked (every connection's first event is numbered 0).
    #[inline]
    pub fn next_seq(&self, sock_id: u64) -> u64 {
        self.by_sock
            .get(&sock_id)
            .and_then(|c| c.streams.next_seq())
            .unwrap_or(0)
    }

    /// Removes a closed connection.
    pub fn close(&mut self, sock_id: u64) -> Option<Connection> {
        self.by_sock.remove(&sock_id)
    }

    /// Removes every connection of an exited process.
    pub fn process_exited(&mut self, pid: u32) -> Vec<Connection> {
        self.identities.forget(pid);
        let socks: Vec<u64> = self
            .by_sock
            .iter()
            .filter(|(_, c)| c.info.pid == pid)
            .map(|(k, _)| *k)
            .collect();
        socks
            .into_iter()
            .filter_map(|s| self.by_sock.remove(&s))
            .collect()
    }

    /// Removes connections idle since before `now_ns - idle`.
    pub fn expire_idle(&mut self, now_ns: u64) -> Vec<Connection> {
        let cutoff = now_ns.saturating_sub(self.idle_ns);
        let socks: Vec<u64> = self
            .by_sock
            .iter()
            .filter(|(_, c)| c.last_seen_ns < cutoff)
            .map(|(k, _)| *k)
            .collect();
        socks
            .into_iter()
            .filter_map(|s| self.by_sock.remove(&s))
            .collect()
    }

    /// Removes everything (shutdown).
    pub fn drain(&mut self) -> Vec<Connection> {
        self.by_sock.drain().map(|(_, c)| c).collect()
    }
}

fn new_connection(
    id: u64,
    header: &EventHeader,
    role: Role,
    identity: ProcessIdentity,
    now_ns: u64,
) -> Connection {
    let (local, remote) = socket_addrs(&header.tuple);
    let pid = (header.pid_tgid >> 32) as u32;
    let carries_identity = header.flags & flag::SAME_PROCESS == 0;
    let comm = identity.comm.unwrap_or_else(|| comm(header).into_owned());
    let process = if carries_identity {
        LastProcess::new(pid, header.comm)
    } else {
        LastProcess::new(pid, comm_bytes(&comm))
    };
    Connection {
        info: ConnectionInfo {
            id,
            sock_id: header.sock_id,
            pid,
            comm,
            exe: identity.exe,
            cgroup_id: if carries_identity {
                header.cgroup_id
            } else {
                identity.cgroup_id.unwrap_or(0)
            },
            container_id: identity.container_id,
            role,
            local,
            remote,
            tls: header.flags & flag::TLS != 0,
            first_seen_ns: now_ns,
        },
        streams: StreamTracker::default(),
        last_seen_ns: now_ns,
        process,
    }
}

/// `comm` as the kernel stores it: at most `COMM_LEN - 1` bytes, NUL padded.
fn comm_bytes(comm: &str) -> [u8; COMM_LEN] {
    let mut bytes = [0; COMM_LEN];
    let len = comm.len().min(COMM_LEN - 1);
    bytes[..len].copy_from_slice(&comm.as_bytes()[..len]);
    bytes
}

#[cfg(test)]
mod tests {
    use tapwire_agent_common::{SockTuple, kind};

    use super::*;

    fn header(sock_id: u64, pid: u32, flags: u32) -> EventHeader {
        EventHeader {
            kind: kind::OPEN,
            flags,
            time_ns: 0,
            pid_tgid: (pid as u64) << 32,
            cgroup_id: 1,
            sock_id,
            seq: 0,
            total_len: 0,
            captured_len: 0,
            fd: 3,
            comm: [0; 16],
            tuple: SockTuple {
                family: 2,
                local_port: 1,
                remote_port: 2,
                ..Default::default()
            },
        }
    }

    #[test]
    fn events_without_a_command_name_get_the_last_one_of_their_process() {
        let mut table = ConnectionTable::new(8, u64::MAX);
        let mut first = header(1, 10, 0);
        first.kind = kind::DATA;
        first.comm = *b"worker-1\0\0\0\0\0\0\0\0";
        let mut same = first;
        same.flags = flag::SAME_PROCESS;
        same.comm = [0; 16];
        let (conn, _) = table.get_or_create(&first, 0);
        assert_eq!(conn.process.comm_of(&first), "worker-1");
        assert_eq!(conn.process.comm_of(&same), "worker-1");
        let mut other = same;
        other.pid_tgid = 11 << 32;
        assert_eq!(conn.process.comm_of(&other), "", "not seen: unknown");
        // A process that renames itself is seen with its new name.
        let mut renamed = first;
        renamed.comm = *b"worker-2\0\0\0\0\0\0\0\0";
        assert_eq!(conn.process.comm_of(&renamed), "worker-2");
        assert_eq!(conn.process.comm_of(&same), "worker-2");
    }

    #[test]
    fn a_connection_first_seen_without_identity_takes_it_from_proc() {
        let pid = std::process::id();
        let mut h = header(2, pid, flag::SAME_PROCESS);
        h.kind = kind::DATA;
        h.cgroup_id = 0;
        let mut table = ConnectionTable::new(8, u64::MAX);
        let (conn, _) = table.get_or_create(&h, 0);
        let own = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(conn.info.comm, own.trim_end());
        assert_eq!(conn.process.comm_of(&h), own.trim_end());
        assert_ne!(conn.info.cgroup_id, 0, "from /proc/self/cgroup");
    }

    #[test]
    fn open_close_exit_expiry_and_bound() {
        let mut t = ConnectionTable::new(2, 100);
        assert!(t.open(&header(1, 10, flag::ROLE_CLIENT), 0).is_empty());
        let (c, _) = t.get_or_create(&header(2, 11, 0), 50);
        assert_eq!(c.info.role, Role::Unknown);
        // Full: the least recently seen connection (sock 1) is evicted.
        let ended = t.open(&header(3, 10, flag::ROLE_SERVER), 60);
        assert_eq!(
            ended.iter().map(|c| c.info.sock_id).collect::<Vec<_>>(),
            vec![1]
        );
        assert_eq!(t.len(), 2);
        assert_eq!(t.process_exited(10).len(), 1);
        assert_eq!(t.expire_idle(151).len(), 1);
        assert!(t.is_empty());
        assert!(t.close(2).is_none());
    }

    #[test]
    fn open_for_a_known_id_starts_a_new_connection() {
        let mut t = ConnectionTable::new(8, 100);
        t.open(&header(1, 10, flag::ROLE_CLIENT), 0);
        let first = t.get_or_create(&header(1, 10, 0), 1).0.info.id;
        let ended = t.open(&header(1, 10, flag::ROLE_CLIENT), 2);
        assert_eq!(ended.len(), 1);
        assert_ne!(t.get_or_create(&header(1, 10, 0), 3).0.info.id, first);
    }
}
