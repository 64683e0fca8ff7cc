//! Policy of the shared Call-ID -> node map: set-associative, LRU within a set.
//!
//! The host keeps the map in shared memory (atomics under a per-set lock); this file decides
//! the geometry, the keys and which way a new call takes. A call is keyed by a 64-bit hash of
//! its Call-ID, and the node by a 32-bit hash of its URL ([`node_key`]), so that a reload that
//! keeps a node keeps its calls, whatever the node's position in the new list.

/// Ways per set.
pub const WAYS: usize = 8;

/// Smallest map (`call_map_size`).
pub const MIN_ENTRIES: u32 = 64;

/// Largest map (`call_map_size`), 16 M entries.
pub const MAX_ENTRIES: u32 = 1 << 24;

/// Default size: room for about 100,000 concurrent calls with few evictions (about 2 MB of
/// shared memory).
pub const DEFAULT_ENTRIES: u32 = 1 << 17;

/// Number of sets for a configured size (rounded up to whole sets).
pub fn sets_for(entries: u32) -> usize {
    (entries.clamp(MIN_ENTRIES, MAX_ENTRIES) as usize).div_ceil(WAYS)
}

/// The key of a Call-ID: FNV-1a, 64 bits; never 0 (0 marks an empty way).
pub fn call_key(call_id: &[u8]) -> u64 {
    let h = call_id.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    h.max(1)
}

/// The identity of a node across reloads: FNV-1a of its URL folded to 32 bits; never 0.
pub fn node_key(url: &str) -> u32 {
    let h = call_key(url.as_bytes());
    ((h >> 32) as u32 ^ h as u32).max(1)
}

/// The set a call key lives in.
pub fn set_of(key: u64, sets: usize) -> usize {
    // the high bits: the low bits also pick the way order inside nothing, but mixing both
    // halves keeps sets even for any size
    ((key ^ (key >> 29)) % sets.max(1) as u64) as usize
}

/// One way as the policy sees it: its key (0 = empty) and last-use stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Way {
    /// Call key, 0 when empty.
    pub key: u64,
    /// Set clock value at the last use.
    pub stamp: u32,
}

/// Where to store `key` in a set: the way that already holds it, else an empty way, else the
/// least recently used one (stamps compared relative to the set's `clock`, so the clock may
/// wrap). Returns the way and whether another call is evicted.
pub fn place(ways: &[Way], key: u64, clock: u32) -> (usize, bool) {
    if let Some(i) = ways.iter().position(|w| w.key == key) {
        return (i, false);
    }
    if let Some(i) = ways.iter().position(|w| w.key == 0) {
        return (i, false);
    }
    let oldest = ways
        .iter()
        .enumerate()
        .max_by_key(|(_, w)| clock.wrapping_sub(w.stamp))
        .map_or(0, |(i, _)| i);
    (oldest, true)
}

/// The way that holds `key`, if any.
pub fn find(ways: &[Way], key: u64) -> Option<usize> {
    ways.iter().position(|w| w.key == key && key != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(key: u64, stamp: u32) -> Way {
        Way { key, stamp }
    }

    #[test]
    fn geometry_is_clamped_and_rounded() {
        assert_eq!(sets_for(64), 8);
        assert_eq!(sets_for(1), 8);
        assert_eq!(sets_for(65), 9);
        assert_eq!(sets_for(u32::MAX), (MAX_ENTRIES as usize) / WAYS);
        assert_eq!(sets_for(DEFAULT_ENTRIES), 16384);
    }

    #[test]
    fn keys_are_never_zero_and_stable() {
        assert_ne!(call_key(b""), 0);
        assert_eq!(call_key(b"abc"), call_key(b"abc"));
        assert_ne!(call_key(b"abc"), call_key(b"abd"));
        assert_ne!(
            node_key("udp:127.0.0.1:7722"),
            node_key("udp:127.0.0.1:7723")
        );
        assert_ne!(node_key(""), 0);
    }

    #[test]
    fn placement_table() {
        // (ways, key, clock) -> (way, evicts)
        type Case<'a> = (&'a [Way], u64, u32, (usize, bool));
        let cases: &[Case] = &[
            (&[w(0, 0), w(0, 0)], 5, 1, (0, false)),
            (&[w(7, 3), w(0, 0)], 5, 4, (1, false)),
            (&[w(7, 3), w(5, 1)], 5, 4, (1, false)), // already there: same way
            (&[w(7, 3), w(8, 1), w(9, 2)], 5, 4, (1, true)), // least recent
            // the clock wrapped: stamp u32::MAX is older than stamp 1
            (&[w(7, 1), w(8, u32::MAX), w(9, 0)], 5, 2, (1, true)),
        ];
        for (ways, key, clock, want) in cases {
            assert_eq!(place(ways, *key, *clock), *want, "{ways:?} {key} {clock}");
        }
        assert_eq!(find(&[w(7, 3), w(5, 1)], 5), Some(1));
        assert_eq!(find(&[w(7, 3), w(5, 1)], 6), None);
        assert_eq!(find(&[w(0, 3)], 0), None);
    }

    #[test]
    fn sets_spread_keys() {
        let sets = sets_for(64);
        let mut count = vec![0u32; sets];
        for i in 0..8000u32 {
            count[set_of(call_key(format!("call-{i}@host").as_bytes()), sets)] += 1;
        }
        assert!(count.iter().all(|&c| c > 700), "{count:?}");
    }
}
