//! `remote_service`: which service is at the other end of a pair, computed at ingest.
//!
//! The agent only knows its own end of a connection. The collector sees both ends whenever
//! both processes are observed: an inbound pair says that its `local_addr` (ip:port) is
//! served by its `service`, and an outbound pair says that its `local_addr` (the client's
//! ip:ephemeral port) belongs to its `service`. So:
//! - an outbound pair's `remote_service` is the service serving its `remote_addr`; when no
//!   observed server listens there, the host of its authority (an external or not observed
//!   host), else its `remote_addr`;
//! - an inbound pair's `remote_service` is the calling client's service when that client
//!   was observed making the call, else empty.
//!
//! Both maps are bounded and forget addresses not seen for [`PEER_TTL`] (ports are reused,
//! pods come and go). A batch teaches before it asks, so a server and its client captured in
//! the same batch find each other; otherwise a call resolves once the other side has been
//! seen. At start-up the maps are seeded from the newest rows of the last [`PEER_TTL`].
//! A `remote_service` the agent already set is kept.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use tokio::sync::watch;

use crate::storage::{StorageError, Stores, index_row::IndexRow};

/// How long an address is remembered after it was last seen.
pub const PEER_TTL: Duration = Duration::from_secs(15 * 60);
/// The most addresses each map (servers, clients) holds.
pub const MAX_PEERS: usize = 100_000;
/// How long the first batches wait for the start-up seed before going on without it.
const SEED_WAIT: Duration = Duration::from_secs(5);

/// The newest service seen at each address of one direction, within the last `PEER_TTL`.
const SEED_QUERY: &str = "SELECT DISTINCT ON (local_addr) local_addr, service, \
    extract(epoch FROM now() - time)::float8 \
    FROM rr_pairs \
    WHERE is_inbound = $1 AND time > now() - make_interval(secs => $2) \
        AND local_addr <> '' AND service <> '' \
    ORDER BY local_addr, time DESC \
    LIMIT $3";

/// One remembered address.
#[derive(Debug, Clone)]
struct Seen {
    service: String,
    at: Instant,
}

/// Addresses to services, bounded, with expiry.
#[derive(Debug)]
struct AddrMap {
    entries: HashMap<String, Seen>,
    capacity: usize,
    ttl: Duration,
}

impl AddrMap {
    fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            entries: HashMap::new(),
            capacity: capacity.max(1),
            ttl,
        }
    }

    /// Remembers that `service` was at `addr` at `now`.
    fn learn(&mut self, addr: &str, service: &str, now: Instant) {
        if addr.is_empty() || service.is_empty() {
            return;
        }
        if let Some(seen) = self.entries.get_mut(addr) {
            seen.at = now;
            if seen.service != service {
                service.clone_into(&mut seen.service);
            }
            return;
        }
        if self.entries.len() >= self.capacity {
            self.make_room(now);
        }
        self.entries.insert(
            addr.to_owned(),
            Seen {
                service: service.to_owned(),
                at: now,
            },
        );
    }

    /// Adds a seeded address unless a fresher sighting is already there.
    fn seed(&mut self, addr: String, service: String, at: Instant) {
        if self.entries.contains_key(&addr) || self.entries.len() >= self.capacity {
            return;
        }
        self.entries.insert(addr, Seen { service, at });
    }

    /// The service at `addr`, unless not seen for a TTL.
    fn get(&self, addr: &str, now: Instant) -> Option<&str> {
        self.entries
            .get(addr)
            .filter(|seen| now.saturating_duration_since(seen.at) <= self.ttl)
            .map(|seen| seen.service.as_str())
    }

    /// Drops expired addresses; when that is not enough, the least recently seen quarter,
    /// so the sweep runs once per many inserts.
    fn make_room(&mut self, now: Instant) {
        let ttl = self.ttl;
        self.entries
            .retain(|_, seen| now.saturating_duration_since(seen.at) <= ttl);
        if self.entries.len() * 4 < self.capacity * 3 {
            return;
        }
        let mut by_age: Vec<(Instant, String)> = self
            .entries
            .iter()
            .map(|(addr, seen)| (seen.at, addr.clone()))
            .collect();
        by_age.sort_unstable();
        let excess = self.entries.len() - self.capacity * 3 / 4;
        for (_, addr) in by_age.into_iter().take(excess) {
            self.entries.remove(&addr);
        }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Both maps.
#[derive(Debug)]
struct Maps {
    /// An inbound pair's `local_addr` → its `service` (who listens there).
    servers: AddrMap,
    /// An outbound pair's `local_addr` → its `service` (who calls from there).
    clients: AddrMap,
}

/// Computes `remote_service` for the rows of each batch (see the module docs).
#[derive(Debug)]
pub struct PeerDirectory {
    maps: Arc<Mutex<Maps>>,
    /// Set when the seed task starts: its completion flag and the time it started.
    seed: OnceLock<(watch::Receiver<bool>, Instant)>,
}

impl Default for PeerDirectory {
    fn default() -> Self {
        Self::new(MAX_PEERS, PEER_TTL)
    }
}

impl PeerDirectory {
    /// A directory holding at most `capacity` addresses per direction, each for `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            maps: Arc::new(Mutex::new(Maps {
                servers: AddrMap::new(capacity, ttl),
                clients: AddrMap::new(capacity, ttl),
            })),
            seed: OnceLock::new(),
        }
    }

    /// The maps stay consistent even if a holder panicked (every update is one insert).
    fn lock(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.maps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts seeding from the stored rows on the first call, and waits for it (at most
    /// [`SEED_WAIT`] after it started, so a huge table delays only the first batches).
    pub async fn ensure_seeded(&self, stores: &Arc<Stores>) {
        let (done, started) = self.seed.get_or_init(|| {
            let (tx, rx) = watch::channel(false);
            let (maps, stores) = (Arc::clone(&self.maps), Arc::clone(stores));
            tokio::spawn(async move {
                match seed(&stores, &maps).await {
                    Ok((servers, clients)) => {
                        tracing::info!(servers, clients, "remote services seeded from stored pairs");
                    }
                    Err(error) => {
                        tracing::warn!(%error, "remote services not seeded; learning them from new pairs only");
                    }
                }
                let _ = tx.send(true);
            });
            (rx, Instant::now())
        });
        if *done.borrow() {
            return;
        }
        let Some(left) = (*started + SEED_WAIT).checked_duration_since(Instant::now()) else {
            return;
        };
        let mut done = done.clone();
        let _ = tokio::time::timeout(left, done.wait_for(|seeded| *seeded)).await;
    }

    /// Learns the batch's addresses, then fills the `remote_service` of every row that has
    /// none.
    pub fn resolve(&self, rows: &mut [IndexRow]) {
        let now = Instant::now();
        let mut maps = self.lock();
        for row in rows.iter() {
            let map = if row.is_inbound {
                &mut maps.servers
            } else {
                &mut maps.clients
            };
            map.learn(&row.local_addr, &row.service, now);
        }
        for row in rows.iter_mut() {
            if !row.remote_service.is_empty() {
                continue;
            }
            row.remote_service = if row.is_inbound {
                maps.clients
                    .get(&row.remote_addr, now)
                    .map(str::to_owned)
                    .unwrap_or_default()
            } else if let Some(service) = maps.servers.get(&row.remote_addr, now) {
                service.to_owned()
            } else {
                let host = authority_host(&row.authority);
                if host.is_empty() {
                    row.remote_addr.clone()
                } else {
                    host
                }
            };
        }
    }
}

/// Seeds both maps from the newest rows; returns how many servers and clients it added.
async fn seed(stores: &Stores, maps: &Mutex<Maps>) -> Result<(usize, usize), StorageError> {
    let client = stores.db.get().await?;
    let db = |context| move |source| StorageError::Database { context, source };
    let statement = client
        .prepare(SEED_QUERY)
        .await
        .map_err(db("prepare the remote-service seed"))?;
    let limit = i64::try_from(MAX_PEERS).unwrap_or(i64::MAX);
    let window = PEER_TTL.as_secs_f64();
    let mut counts = [0; 2];
    for (n, inbound) in [true, false].into_iter().enumerate() {
        let rows = client
            .query(&statement, &[&inbound, &window, &limit])
            .await
            .map_err(db("read recent addresses"))?;
        let now = Instant::now();
        let mut maps = maps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let map = if inbound {
            &mut maps.servers
        } else {
            &mut maps.clients
        };
        for row in rows {
            let (addr, service, age): (String, String, f64) = (
                row.try_get(0).map_err(db("read a seed row"))?,
                row.try_get(1).map_err(db("read a seed row"))?,
                row.try_get(2).map_err(db("read a seed row"))?,
            );
            let age = Duration::try_from_secs_f64(age.max(0.0)).unwrap_or(PEER_TTL);
            map.seed(addr, service, now.checked_sub(age).unwrap_or(now));
        }
        counts[n] = map.len();
    }
    Ok((counts[0], counts[1]))
}

/// The host of an authority (`host`, `host:port`, `[v6]:port`), lowercase, without port or
/// trailing dot; empty when there is none.
pub fn authority_host(authority: &str) -> String {
    let authority = authority.trim();
    // Userinfo has no place in an HTTP authority, but must never leak into a group key.
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(bracketed) = authority.strip_prefix('[') {
        bracketed.split_once(']').map_or(bracketed, |(h, _)| h)
    } else {
        match authority.rsplit_once(':') {
            // One colon: host:port. More: a bare IPv6 address, no port.
            Some((host, _)) if !host.contains(':') => host,
            _ => authority,
        }
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_hosts() {
        assert_eq!(authority_host("api.stripe.com:443"), "api.stripe.com");
        assert_eq!(authority_host("Orders.Shop.svc"), "orders.shop.svc");
        assert_eq!(authority_host("example.com.:80"), "example.com");
        assert_eq!(authority_host("[::1]:8080"), "::1");
        assert_eq!(authority_host("fe80::1"), "fe80::1");
        assert_eq!(authority_host("user:pw@host:1"), "host");
        assert_eq!(authority_host(""), "");
        assert_eq!(authority_host(" 10.0.0.7:9000 "), "10.0.0.7");
    }

    #[test]
    fn expiry_and_bounds() {
        let t0 = Instant::now();
        let mut map = AddrMap::new(8, Duration::from_secs(10));
        map.learn("10.0.0.1:80", "web", t0);
        assert_eq!(
            map.get("10.0.0.1:80", t0 + Duration::from_secs(10)),
            Some("web")
        );
        assert_eq!(map.get("10.0.0.1:80", t0 + Duration::from_secs(11)), None);
        // Seen again: remembered again, under its newest service.
        map.learn("10.0.0.1:80", "web2", t0 + Duration::from_secs(20));
        assert_eq!(
            map.get("10.0.0.1:80", t0 + Duration::from_secs(21)),
            Some("web2")
        );
        // Never more than the capacity; the least recently seen go first.
        for i in 0..100u64 {
            map.learn(
                &format!("10.0.1.{i}:80"),
                "x",
                t0 + Duration::from_secs(30 + i),
            );
            assert!(map.len() <= 8, "{} entries", map.len());
        }
        assert_eq!(
            map.get("10.0.1.99:80", t0 + Duration::from_secs(130)),
            Some("x")
        );
        assert_eq!(map.get("10.0.1.0:80", t0 + Duration::from_secs(130)), None);
        // A seed never overrides a live sighting.
        map.seed("10.0.1.99:80".into(), "old".into(), t0);
        assert_eq!(
            map.get("10.0.1.99:80", t0 + Duration::from_secs(130)),
            Some("x")
        );
        // Empty addresses or services teach nothing.
        map.learn("", "svc", t0);
        map.learn("10.9.9.9:1", "", t0);
        assert_eq!(map.get("", t0), None);
        assert_eq!(map.get("10.9.9.9:1", t0), None);
    }
}
