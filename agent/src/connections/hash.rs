//! A cheap hasher for the agent's per-event maps keyed by the kernel programs'
//! connection ids and the agent's own. The keys come from the kernel and the agent
//! itself, not from the network, so the DoS resistance of the default SipHash buys
//! nothing here while its cost shows up on every event.

use std::hash::{BuildHasherDefault, Hasher};

/// `BuildHasher` for maps keyed by `u64` (see [`U64Hasher`]).
pub type U64Map = BuildHasherDefault<U64Hasher>;

/// Multiplicative hashing of one `u64` (the high bits of the product are well mixed,
/// and hashbrown takes its control bits from the top of the hash).
#[derive(Default, Clone, Copy)]
pub struct U64Hasher(u64);

impl Hasher for U64Hasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by u64 keys; fold anything else in, 8 bytes at a time.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // The keys (clock readings, counters) share their high bits: rotate the mixed
        // low bits up so both halves of the table index vary.
        self.0 = (self.0.rotate_left(5) ^ n)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(32);
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashSet, hash::BuildHasher};

    use super::*;

    #[test]
    fn spreads_aligned_kernel_addresses() {
        let build = U64Map::default();
        // struct sock addresses: 8-byte aligned, same high bits.
        let low: HashSet<u64> = (0..4096u64)
            .map(|i| build.hash_one(0xffff_8880_0000_0000 + i * 2048) & 0xfff)
            .collect();
        assert!(low.len() > 2000, "{} distinct low 12 bits", low.len());
        let high: HashSet<u64> = (0..4096u64)
            .map(|i| build.hash_one(0xffff_8880_0000_0000 + i * 2048) >> 57)
            .collect();
        assert!(high.len() > 100, "{} distinct top 7 bits", high.len());
    }

    #[test]
    fn spreads_kernel_connection_ids() {
        let build = U64Map::default();
        // Monotonic nanoseconds above a CPU number (agent-ebpf's `new_conn_id`): about
        // 20 µs apart, on two CPUs.
        let ids = (0..4096u64).map(|i| ((5_000_000_000 + i * 20_000) << 8) | (i % 2));
        let low: HashSet<u64> = ids.clone().map(|id| build.hash_one(id) & 0xfff).collect();
        assert!(low.len() > 2000, "{} distinct low 12 bits", low.len());
        let high: HashSet<u64> = ids.map(|id| build.hash_one(id) >> 57).collect();
        assert!(high.len() > 100, "{} distinct top 7 bits", high.len());
    }
}
