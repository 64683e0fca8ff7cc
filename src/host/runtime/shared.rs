//! State shared by every OpenSIPS process: a `#[repr(C)]` array of atomics in shm, allocated in
//! `mod_init` (before fork) so that it sits at the same address in every child.
//!
//! Configuration (URLs, weights, sets) is plain Rust data copied into each process by fork;
//! only what changes at run time (node health, capabilities) lives here.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::core::control::callmap;
use crate::core::proto::caps::Capabilities;
use crate::core::select::NodeHealth;

use crate::error::LifecycleError;
use crate::host::ffi::mem;

/// Run-time state of one node, shared by all processes.
#[repr(C)]
pub(crate) struct NodeSlot {
    /// `NodeHealth` packed as `recheck_at << 1 | disabled`, so both change in one atomic step.
    health: AtomicU64,
    /// Capability bits learnt by probing (only ever added, as in the C module).
    pub(crate) caps: AtomicU32,
    /// Bit 0: the node has been probed at least once since start.
    flags: AtomicU32,
    /// Low 32 bits of the node-list generation the slot belongs to (see [`SharedNodes::hand_over`]).
    owner: AtomicU32,
    /// 1 while MI `rtpproxy_drain` keeps new calls away (kept apart from `health`: draining
    /// is no health change and survives failures and probes).
    draining: AtomicU32,
    /// Address of the node's statistics record in shm (`super::stats`), 0 before it is set.
    stats: AtomicU64,
    /// Resolved address: bit 31 valid, bit 16 IPv6, bits 0..16 port.
    addr_meta: AtomicU32,
    /// Resolved address: the IP, network order (IPv4 in word 0).
    addr_ip: [AtomicU32; 4],
}

/// `addr_meta` flag: the address is valid.
const ADDR_VALID: u32 = 1 << 31;
/// `addr_meta` flag: IPv6.
const ADDR_V6: u32 = 1 << 16;

/// The shm array of node slots.
pub(crate) struct SharedNodes {
    ptr: NonNull<NodeSlot>,
    len: usize,
}

// SAFETY: the slots are atomics in shared memory that lives until the process exits; concurrent
// access from any thread or process is what atomics are for.
unsafe impl Send for SharedNodes {}
// SAFETY: as above; all access goes through `&NodeSlot` atomics.
unsafe impl Sync for SharedNodes {}

impl SharedNodes {
    /// Allocates zeroed slots for `len` nodes (at least one) in shm. Call before fork.
    pub(crate) fn allocate(len: usize) -> Option<Self> {
        let len = len.max(1);
        let bytes = len.checked_mul(std::mem::size_of::<NodeSlot>())?;
        let p = mem::shm_malloc_zeroed(bytes).cast::<NodeSlot>();
        NonNull::new(p).map(|ptr| Self { ptr, len })
    }

    /// The slot of node `index`, if it exists.
    pub(crate) fn get(&self, index: usize) -> Option<&NodeSlot> {
        if index >= self.len {
            return None;
        }
        // SAFETY: `index < len` and the allocation holds `len` zero-initialised slots, which
        // are valid `AtomicU32`s; the memory is never freed while the module is loaded.
        Some(unsafe { &*self.ptr.as_ptr().add(index) })
    }
}

fn pack(h: NodeHealth) -> u64 {
    (u64::from(h.recheck_at) << 1) | u64::from(h.disabled)
}

fn unpack(v: u64) -> NodeHealth {
    NodeHealth {
        disabled: v & 1 == 1,
        recheck_at: (v >> 1) as u32,
    }
}

impl NodeSlot {
    /// The node's health now.
    pub(crate) fn health(&self) -> NodeHealth {
        unpack(self.health.load(Ordering::Acquire))
    }

    /// Applies `f` atomically (retrying on concurrent changes); returns `(before, after)`.
    pub(crate) fn update(&self, f: impl Fn(&mut NodeHealth)) -> (NodeHealth, NodeHealth) {
        let mut cur = self.health.load(Ordering::Acquire);
        loop {
            let before = unpack(cur);
            let mut after = before;
            f(&mut after);
            match self.health.compare_exchange_weak(
                cur,
                pack(after),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return (before, after),
                Err(actual) => cur = actual,
            }
        }
    }

    /// `(disabled, recheck_ticks)` as MI shows them.
    pub(crate) fn snapshot(&self) -> (u32, u32) {
        let h = self.health();
        (u32::from(h.disabled), h.recheck_at)
    }

    /// Capabilities learnt so far.
    pub(crate) fn capabilities(&self) -> Capabilities {
        Capabilities::from_bits_truncate(self.caps.load(Ordering::Acquire))
    }

    /// Whether the node was probed since start.
    pub(crate) fn probed(&self) -> bool {
        self.flags.load(Ordering::Acquire) & 1 == 1
    }

    /// Whether the node is draining (MI `rtpproxy_drain`).
    pub(crate) fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire) != 0
    }

    /// Sets or clears draining; returns the previous value.
    pub(crate) fn set_draining(&self, on: bool) -> bool {
        self.draining.swap(u32::from(on), Ordering::AcqRel) != 0
    }

    /// Address of the node's statistics record (0: none yet).
    pub(crate) fn stats_addr(&self) -> u64 {
        self.stats.load(Ordering::Acquire)
    }

    /// Attaches the node's statistics record.
    pub(crate) fn set_stats_addr(&self, addr: u64) {
        self.stats.store(addr, Ordering::Release);
    }

    /// The node's resolved address, if someone resolved it (start-up, reload, prober).
    pub(crate) fn address(&self) -> Option<std::net::SocketAddr> {
        let meta = self.addr_meta.load(Ordering::Acquire);
        if meta & ADDR_VALID == 0 {
            return None;
        }
        let w: Vec<u32> = self
            .addr_ip
            .iter()
            .map(|a| a.load(Ordering::Acquire))
            .collect();
        let port = (meta & 0xffff) as u16;
        let ip: std::net::IpAddr = if meta & ADDR_V6 != 0 {
            let mut b = [0u8; 16];
            for (i, word) in w.iter().enumerate() {
                b[i * 4..i * 4 + 4].copy_from_slice(&word.to_be_bytes());
            }
            std::net::Ipv6Addr::from(b).into()
        } else {
            std::net::Ipv4Addr::from(w[0].to_be_bytes()).into()
        };
        Some(std::net::SocketAddr::new(ip, port))
    }

    /// Records the node's resolved address (once: a valid address is never rewritten, so
    /// readers never see half of a change).
    pub(crate) fn set_address(&self, addr: std::net::SocketAddr) {
        if self.addr_meta.load(Ordering::Acquire) & ADDR_VALID != 0 {
            return;
        }
        let (words, v6) = match addr.ip() {
            std::net::IpAddr::V4(ip) => ([u32::from_be_bytes(ip.octets()), 0, 0, 0], false),
            std::net::IpAddr::V6(ip) => {
                let o = ip.octets();
                let mut w = [0u32; 4];
                for (i, word) in w.iter_mut().enumerate() {
                    *word =
                        u32::from_be_bytes([o[i * 4], o[i * 4 + 1], o[i * 4 + 2], o[i * 4 + 3]]);
                }
                (w, true)
            }
        };
        for (a, w) in self.addr_ip.iter().zip(words) {
            a.store(w, Ordering::Release);
        }
        let meta = ADDR_VALID | if v6 { ADDR_V6 } else { 0 } | u32::from(addr.port());
        self.addr_meta.store(meta, Ordering::Release);
    }

    /// Everything a reload carries over for a node it keeps.
    fn copy_from(&self, other: &SlotCopy) {
        self.health.store(other.health, Ordering::Release);
        self.caps.store(other.caps, Ordering::Release);
        self.flags.store(other.flags, Ordering::Release);
        for (a, w) in self.addr_ip.iter().zip(other.addr_ip) {
            a.store(w, Ordering::Release);
        }
        self.addr_meta.store(other.addr_meta, Ordering::Release);
        self.draining.store(other.draining, Ordering::Release);
        self.stats.store(other.stats, Ordering::Release);
    }

    fn save(&self) -> SlotCopy {
        SlotCopy {
            health: self.health.load(Ordering::Acquire),
            caps: self.caps.load(Ordering::Acquire),
            flags: self.flags.load(Ordering::Acquire),
            addr_meta: self.addr_meta.load(Ordering::Acquire),
            addr_ip: std::array::from_fn(|i| self.addr_ip[i].load(Ordering::Acquire)),
            draining: self.draining.load(Ordering::Acquire),
            stats: self.stats.load(Ordering::Acquire),
        }
    }

    /// Records a finished probe; returns true for the first one since start.
    pub(crate) fn mark_probed(&self, caps: Capabilities) -> bool {
        self.caps.fetch_or(caps.bits(), Ordering::AcqRel);
        self.flags.fetch_or(1, Ordering::AcqRel) & 1 == 0
    }
}

/// A slot's state as a reload copies it.
#[derive(Clone, Copy, Default)]
struct SlotCopy {
    health: u64,
    caps: u32,
    flags: u32,
    addr_meta: u32,
    addr_ip: [u32; 4],
    draining: u32,
    stats: u64,
}

/// Room for the reloaded node list (as `rtpproxy_sock`-style lines).
const LIST_CAPACITY: usize = 64 * 1024;

#[repr(C)]
struct ListRegion {
    generation: AtomicU64,
    lock: AtomicU32,
    len: AtomicU32,
    buf: [u8; LIST_CAPACITY],
}

/// The node list published by MI `rtpproxy_reload`, shared by all processes: one
/// `rtpproxy_sock` value per line and a generation number that each process compares with the
/// list it has built.
pub(crate) struct SharedList {
    ptr: NonNull<ListRegion>,
}

// SAFETY: the region lives in shm for the life of the process; the generation and length are
// atomics and the buffer is only touched under the region's spin lock.
unsafe impl Send for SharedList {}
// SAFETY: as above.
unsafe impl Sync for SharedList {}

impl SharedList {
    /// Allocates the (empty, generation 0) list in shm. Call before fork.
    pub(crate) fn allocate() -> Option<Self> {
        let p = mem::shm_malloc_zeroed(std::mem::size_of::<ListRegion>()).cast::<ListRegion>();
        NonNull::new(p).map(|ptr| Self { ptr })
    }

    fn region(&self) -> &ListRegion {
        // SAFETY: allocated zeroed (valid atomics and bytes) and never freed.
        unsafe { self.ptr.as_ref() }
    }

    fn locked<R>(&self, f: impl FnOnce(*mut u8) -> R) -> R {
        let r = self.region();
        while r
            .lock
            .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::thread::yield_now();
        }
        let _unlock = SetLock(&r.lock);
        // SAFETY: `buf` is inside the region; the lock gives exclusive access to it.
        let buf = unsafe { std::ptr::addr_of_mut!((*self.ptr.as_ptr()).buf) }.cast::<u8>();
        f(buf)
    }

    /// The generation of the published list (0: nothing published since start).
    pub(crate) fn generation(&self) -> u64 {
        self.region().generation.load(Ordering::Acquire)
    }

    /// Publishes `values` as the new node list and hands the node slots over to it, under one
    /// lock: the new generation is decided here, `slots` is called with it while the lock is
    /// held (to reset the slots for that generation), and only then is the generation made
    /// visible. Two reloads at once are therefore serialised, and slots and list always agree.
    pub(crate) fn publish(
        &self,
        values: &[String],
        slots: impl FnOnce(u64),
    ) -> Result<u64, LifecycleError> {
        let text = values.join("\n");
        if text.len() > LIST_CAPACITY {
            return Err(LifecycleError::ListTooLarge {
                len: text.len(),
                capacity: LIST_CAPACITY,
            });
        }
        Ok(self.locked(|buf| {
            let generation = self.region().generation.load(Ordering::Acquire) + 1;
            slots(generation);
            // SAFETY: `text` fits in the buffer (checked above); exclusive access by the lock.
            unsafe { std::ptr::copy_nonoverlapping(text.as_ptr(), buf, text.len()) };
            self.region()
                .len
                .store(text.len() as u32, Ordering::Release);
            self.region()
                .generation
                .store(generation, Ordering::Release);
            generation
        }))
    }

    /// The published values with their generation (read together under the lock), `None`
    /// before the first publication.
    pub(crate) fn read_values(&self) -> Option<(u64, Vec<String>)> {
        if self.generation() == 0 {
            return None;
        }
        let (generation, text) = self.locked(|buf| {
            let len = (self.region().len.load(Ordering::Acquire) as usize).min(LIST_CAPACITY);
            // SAFETY: `len` bytes of the buffer were written by `publish`; exclusive access.
            let text = unsafe { std::slice::from_raw_parts(buf, len) }.to_vec();
            (self.region().generation.load(Ordering::Acquire), text)
        });
        let text = String::from_utf8_lossy(&text).into_owned();
        Some((
            generation,
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_owned)
                .collect(),
        ))
    }
}

impl SharedNodes {
    /// Hands every slot to node-list `generation` (after a reload, slot `i` may belong to a
    /// different node; a process still working with the old list no longer reaches them).
    /// `keep[i] = Some(j)` carries the state of old slot `j` (health, capabilities, probe
    /// state, resolved address, drain state, statistics record) over to new slot `i`: the same node, kept by the reload.
    /// Every other slot starts afresh. Call under the list lock ([`SharedList::publish`]).
    pub(crate) fn hand_over(&self, generation: u64, keep: &[Option<usize>]) {
        let saved: Vec<SlotCopy> = (0..self.len)
            .map(|i| self.get(i).map(NodeSlot::save).unwrap_or_default())
            .collect();
        for i in 0..self.len {
            if let Some(s) = self.get(i) {
                s.owner.store(u32::MAX, Ordering::Release);
                let from = keep.get(i).copied().flatten().and_then(|j| saved.get(j));
                s.copy_from(from.unwrap_or(&SlotCopy::default()));
                s.owner.store(generation as u32, Ordering::Release);
            }
        }
    }

    /// The slot of node `index` of node-list `generation`; `None` when the slot now belongs to
    /// another generation.
    pub(crate) fn get_owned(&self, index: usize, generation: u64) -> Option<&NodeSlot> {
        self.get(index)
            .filter(|s| s.owner.load(Ordering::Acquire) == generation as u32)
    }

    /// Number of slots.
    pub(crate) fn capacity(&self) -> usize {
        self.len
    }
}

/// One way of the call map: a call key and its node.
#[repr(C)]
struct CallWay {
    /// [`callmap::call_key`] of the Call-ID; 0 = empty.
    key: AtomicU64,
    /// [`callmap::node_key`] of the node's URL.
    node: AtomicU32,
    /// Set clock at the last use (LRU).
    stamp: AtomicU32,
}

/// One set of the call map.
#[repr(C)]
struct CallSet {
    lock: AtomicU32,
    clock: AtomicU32,
    ways: [CallWay; callmap::WAYS],
}

/// Which node holds each call's sessions, shared by all processes, so that later commands
/// of the call (answer, re-INVITE, delete, media functions) follow it even when hashing would
/// now pick another node (a failover, a recovery, weights changed, a reload).
///
/// Set-associative with LRU eviction inside a set (policy in [`callmap`]); nodes are keyed
/// by URL, so a reload that keeps a node keeps its calls. A call that lost its entry falls
/// back to hashing, which is what the C module always does.
pub(crate) struct CallMap {
    ptr: NonNull<CallSet>,
    sets: usize,
}

// SAFETY: an array of atomics in shm that lives as long as the process; each set is changed
// only under its spin lock.
unsafe impl Send for CallMap {}
// SAFETY: as above.
unsafe impl Sync for CallMap {}

/// Releases a set's spin lock, also when the holder unwinds.
struct SetLock<'a>(&'a AtomicU32);

impl Drop for SetLock<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Release);
    }
}

impl CallMap {
    /// Allocates the (empty) map for `entries` calls in shm. Call before fork.
    pub(crate) fn allocate(entries: u32) -> Option<Self> {
        let sets = callmap::sets_for(entries);
        let p = mem::shm_malloc_zeroed(sets.checked_mul(std::mem::size_of::<CallSet>())?);
        NonNull::new(p.cast::<CallSet>()).map(|ptr| Self { ptr, sets })
    }

    /// Runs `f` on the set of `key` under its lock.
    fn with_set<R>(&self, key: u64, f: impl FnOnce(&CallSet) -> R) -> R {
        let i = callmap::set_of(key, self.sets);
        // SAFETY: `i < sets`; the zeroed allocation holds that many sets of valid atomics and
        // is never freed.
        let set = unsafe { &*self.ptr.as_ptr().add(i) };
        while set
            .lock
            .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::thread::yield_now();
        }
        let _unlock = SetLock(&set.lock);
        f(set)
    }

    fn ways(set: &CallSet) -> [callmap::Way; callmap::WAYS] {
        std::array::from_fn(|i| callmap::Way {
            key: set.ways[i].key.load(Ordering::Relaxed),
            stamp: set.ways[i].stamp.load(Ordering::Relaxed),
        })
    }

    /// Remembers that `call_id` is on the node with key `node`. Returns what the entry it
    /// took held before (for the call gauges).
    pub(crate) fn remember(&self, call_id: &[u8], node: u32) -> Replaced {
        let key = callmap::call_key(call_id);
        let replaced = self.with_set(key, |set| {
            let clock = set.clock.load(Ordering::Relaxed).wrapping_add(1);
            set.clock.store(clock, Ordering::Relaxed);
            let (i, evicts) = callmap::place(&Self::ways(set), key, clock);
            let way = &set.ways[i];
            let (old_key, old_node) = (
                way.key.load(Ordering::Relaxed),
                way.node.load(Ordering::Relaxed),
            );
            way.key.store(key, Ordering::Relaxed);
            way.node.store(node, Ordering::Relaxed);
            way.stamp.store(clock, Ordering::Relaxed);
            if old_key == key {
                Replaced::Same(old_node)
            } else if evicts {
                Replaced::Evicted(old_node)
            } else {
                Replaced::Empty
            }
        });
        if matches!(replaced, Replaced::Evicted(_)) {
            tracing::debug!("call map full in this set: the least recently used call was evicted");
        }
        replaced
    }

    /// The node key remembered for `call_id` (and marks the entry used).
    pub(crate) fn lookup(&self, call_id: &[u8]) -> Option<u32> {
        let key = callmap::call_key(call_id);
        self.with_set(key, |set| {
            let i = callmap::find(&Self::ways(set), key)?;
            let clock = set.clock.load(Ordering::Relaxed).wrapping_add(1);
            set.clock.store(clock, Ordering::Relaxed);
            set.ways[i].stamp.store(clock, Ordering::Relaxed);
            Some(set.ways[i].node.load(Ordering::Relaxed))
        })
    }

    /// Forgets `call_id` (its sessions were deleted); returns the node key it was
    /// remembered on, if it was.
    pub(crate) fn forget(&self, call_id: &[u8]) -> Option<u32> {
        let key = callmap::call_key(call_id);
        self.with_set(key, |set| {
            let i = callmap::find(&Self::ways(set), key)?;
            set.ways[i].key.store(0, Ordering::Relaxed);
            Some(set.ways[i].node.load(Ordering::Relaxed))
        })
    }
}

/// What [`CallMap::remember`] replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replaced {
    /// A free entry.
    Empty,
    /// The same call's entry, on the node with this key.
    Same(u32),
    /// Another call's entry (least recently used), on the node with this key.
    Evicted(u32),
}
