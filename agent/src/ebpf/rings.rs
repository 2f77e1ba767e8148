//! The event rings user space reads: one BPF ring buffer per online CPU (or one shared by
//! all), created here and put into the programs' `RINGS` array of maps, plus one epoll
//! instance that is readable whenever any ring is, so a single `AsyncFd` waits on all.

use std::os::fd::{AsFd as _, AsRawFd, FromRawFd as _, OwnedFd, RawFd};

use aya::{
    Ebpf,
    maps::{MapData, RingBuf, of_maps::ArrayOfMaps},
};
use clap::ValueEnum;

use super::loader::LoadError;

/// How the kernel programs' records are spread over rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RingLayout {
    /// A ring per online CPU: producers never contend (the default).
    PerCpu,
    /// One ring for every CPU: records of all connections in one order, at the price of
    /// every CPU's records contending for it.
    Shared,
}

/// The smallest ring: below this a burst between two drains overflows it.
const MIN_RING_BYTES: u32 = 1024 * 1024;

/// How many rings of what size, decided before the programs load (their wakeup
/// threshold depends on the ring size).
#[derive(Debug, Clone)]
pub struct RingPlan {
    layout: RingLayout,
    /// Possible CPUs: the `RINGS` slots to fill.
    possible: u32,
    /// CPUs online now: each gets its own ring (per-CPU layout).
    online: Vec<u32>,
    /// Bytes of each ring.
    pub ring_bytes: u32,
}

impl RingPlan {
    /// Splits `total_bytes` over the rings of `layout`. With the per-CPU layout, possible
    /// CPUs that are offline now share one extra ring, so a CPU brought online later
    /// still has somewhere to write.
    pub fn new(layout: RingLayout, total_bytes: u32) -> Result<Self, LoadError> {
        let possible = aya::util::nr_cpus()
            .map_err(|(path, e)| LoadError::Load(format!("counting CPUs from {path}: {e}")))?
            .get();
        let online = aya::util::online_cpus()
            .map_err(|(path, e)| LoadError::Load(format!("reading {path}: {e}")))?;
        let mut plan = Self {
            layout,
            possible,
            online,
            ring_bytes: 0,
        };
        plan.ring_bytes = ring_size(total_bytes, plan.ring_count());
        Ok(plan)
    }

    /// Rings to create.
    pub fn ring_count(&self) -> u32 {
        match self.layout {
            RingLayout::Shared => 1,
            RingLayout::PerCpu => {
                let online = self.online.len() as u32;
                online + u32::from(online < self.possible)
            }
        }
    }

    /// The ring CPU `cpu` writes to.
    fn ring_of(&self, cpu: u32) -> usize {
        match self.layout {
            RingLayout::Shared => 0,
            RingLayout::PerCpu => self
                .online
                .iter()
                .position(|&c| c == cpu)
                .unwrap_or(self.online.len()),
        }
    }
}

/// The rings, each with its read position, and the epoll instance over all of them.
pub struct EventRings {
    rings: Vec<RingBuf<MapData>>,
    epoll: OwnedFd,
    ring_bytes: u32,
}

impl EventRings {
    /// Creates the rings of `plan` and puts them into the `RINGS` slot of every
    /// possible CPU.
    pub fn create(ebpf: &mut Ebpf, plan: &RingPlan) -> Result<Self, LoadError> {
        let map = ebpf
            .map_mut("RINGS")
            .ok_or(LoadError::MissingMap("RINGS"))?;
        let mut slots: ArrayOfMaps<&mut MapData, RingBuf<MapData>> =
            ArrayOfMaps::try_from(map).map_err(|e| map_error("RINGS", e))?;
        let mut rings = Vec::with_capacity(plan.ring_count() as usize);
        for _ in 0..plan.ring_count() {
            rings.push(RingBuf::create(plan.ring_bytes, 0).map_err(|e| map_error("RINGS", e))?);
        }
        for cpu in 0..plan.possible {
            slots
                .set(cpu, &rings[plan.ring_of(cpu)], 0)
                .map_err(|e| map_error("RINGS", e))?;
        }
        let epoll = epoll_over(&rings).map_err(|e| LoadError::Map {
            name: "RINGS",
            reason: format!("epoll over the rings: {e}"),
        })?;
        Ok(Self {
            rings,
            epoll,
            ring_bytes: plan.ring_bytes,
        })
    }

    /// The rings, to drain.
    pub fn rings_mut(&mut self) -> &mut [RingBuf<MapData>] {
        &mut self.rings
    }

    /// Number of rings.
    pub fn len(&self) -> usize {
        self.rings.len()
    }

    /// Whether there are no rings (never, once created).
    pub fn is_empty(&self) -> bool {
        self.rings.is_empty()
    }

    /// Bytes of each ring.
    pub fn ring_bytes(&self) -> u32 {
        self.ring_bytes
    }
}

impl AsRawFd for EventRings {
    /// The epoll instance: readable while any ring has records.
    fn as_raw_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }
}

/// Each ring's size: an equal share of `total_bytes`, rounded down to a power of two, at
/// least [`MIN_RING_BYTES`].
fn ring_size(total_bytes: u32, rings: u32) -> u32 {
    let share = (total_bytes / rings.max(1)).max(MIN_RING_BYTES);
    1 << (31 - share.leading_zeros())
}

fn map_error(name: &'static str, e: aya::maps::MapError) -> LoadError {
    LoadError::Map {
        name,
        reason: e.to_string(),
    }
}

/// An epoll instance watching every ring for readability (level-triggered: readable for
/// as long as any ring holds records).
fn epoll_over(rings: &[RingBuf<MapData>]) -> std::io::Result<OwnedFd> {
    // SAFETY: epoll_create1 has no memory-safety preconditions; the result is checked.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a new, valid descriptor that nothing else owns.
    let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
    for (i, ring) in rings.iter().enumerate() {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        let ring_fd = ring.as_fd().as_raw_fd();
        // SAFETY: both descriptors are open for the duration of the call and `event`
        // is a valid epoll_event.
        let rc = unsafe { libc::epoll_ctl(fd, libc::EPOLL_CTL_ADD, ring_fd, &mut event) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(epoll)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(layout: RingLayout, possible: u32, online: &[u32]) -> RingPlan {
        RingPlan {
            layout,
            possible,
            online: online.to_vec(),
            ring_bytes: 0,
        }
    }

    #[test]
    fn offline_cpus_share_a_spare_ring() {
        let p = plan(RingLayout::PerCpu, 4, &[0, 2]);
        assert_eq!(p.ring_count(), 3);
        assert_eq!(
            (0..4).map(|c| p.ring_of(c)).collect::<Vec<_>>(),
            [0, 2, 1, 2]
        );
        let p = plan(RingLayout::PerCpu, 2, &[0, 1]);
        assert_eq!(p.ring_count(), 2, "no spare when every CPU is online");
        let p = plan(RingLayout::Shared, 4, &[0, 1, 2, 3]);
        assert_eq!(p.ring_count(), 1);
        assert!((0..4).all(|c| p.ring_of(c) == 0));
    }

    #[test]
    fn rings_share_the_budget_in_powers_of_two_with_a_floor() {
        let mib = 1024 * 1024;
        assert_eq!(ring_size(16 * mib, 1), 16 * mib);
        assert_eq!(ring_size(16 * mib, 2), 8 * mib);
        assert_eq!(ring_size(16 * mib, 3), 4 * mib, "5.3 MiB rounds down");
        assert_eq!(ring_size(16 * mib, 64), mib, "never below the floor");
    }
}
