//! State shared by every OpenSIPS process: a `#[repr(C)]` array of atomics in shm, allocated in
//! `mod_init` (before fork) so that it sits at the same address in every child.
//!
//! Configuration (URLs, weights, sets) is plain Rust data copied into each process by fork;
//! only what changes at run time (node health, capabilities) lives here.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::core::proto::caps::Capabilities;
use crate::core::select::NodeHealth;

use super::mem;

/// Run-time state of one node, shared by all processes.
#[repr(C)]
pub(crate) struct NodeSlot {
    /// `NodeHealth` packed as `recheck_at << 1 | disabled`, so both change in one atomic step.
    health: AtomicU64,
    /// Capability bits learnt by probing (only ever added, as in the C module).
    pub(crate) caps: AtomicU32,
    /// Bit 0: the node has been probed at least once since start.
    flags: AtomicU32,
    /// Low 32 bits of the node-list generation the slot belongs to (see [`SharedNodes::reset_all`]).
    owner: AtomicU32,
    /// 1 while MI `rtpproxy_drain` keeps new calls away (kept apart from `health`: draining
    /// is no health change and survives failures and probes).
    draining: AtomicU32,
    /// Address of the node's statistics record in shm (`super::stats`), 0 before it is set.
    stats: AtomicU64,
}

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

    /// Records a finished probe; returns true for the first one since start.
    pub(crate) fn mark_probed(&self, caps: Capabilities) -> bool {
        self.caps.fetch_or(caps.bits(), Ordering::AcqRel);
        self.flags.fetch_or(1, Ordering::AcqRel) & 1 == 0
    }
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
        // SAFETY: `buf` is inside the region; the lock gives exclusive access to it.
        let buf = unsafe { std::ptr::addr_of_mut!((*self.ptr.as_ptr()).buf) }.cast::<u8>();
        let out = f(buf);
        r.lock.store(0, Ordering::Release);
        out
    }

    /// The generation of the published list (0: nothing published since start).
    pub(crate) fn generation(&self) -> u64 {
        self.region().generation.load(Ordering::Acquire)
    }

    /// Publishes `values` as the new node list; returns the new generation.
    pub(crate) fn publish(&self, values: &[String]) -> Result<u64, String> {
        let text = values.join("\n");
        if text.len() > LIST_CAPACITY {
            return Err(format!(
                "node list too large ({} bytes, at most {LIST_CAPACITY})",
                text.len()
            ));
        }
        self.locked(|buf| {
            // SAFETY: `text` fits in the buffer (checked above); exclusive access by the lock.
            unsafe { std::ptr::copy_nonoverlapping(text.as_ptr(), buf, text.len()) };
            self.region()
                .len
                .store(text.len() as u32, Ordering::Release);
        });
        Ok(self.region().generation.fetch_add(1, Ordering::AcqRel) + 1)
    }

    /// The published values, `None` before the first publication.
    pub(crate) fn read_values(&self) -> Option<Vec<String>> {
        if self.generation() == 0 {
            return None;
        }
        let text = self.locked(|buf| {
            let len = (self.region().len.load(Ordering::Acquire) as usize).min(LIST_CAPACITY);
            // SAFETY: `len` bytes of the buffer were written by `publish`; exclusive access.
            unsafe { std::slice::from_raw_parts(buf, len) }.to_vec()
        });
        let text = String::from_utf8_lossy(&text).into_owned();
        Some(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }
}

impl SharedNodes {
    /// Forgets health, capabilities and probe state of every slot and hands the slots to
    /// node-list `generation` (after a reload, slot `i` belongs to a different node; a process
    /// still working with the old list no longer reaches them).
    pub(crate) fn reset_all(&self, generation: u64) {
        for i in 0..self.len {
            if let Some(s) = self.get(i) {
                s.owner.store(u32::MAX, Ordering::Release);
                s.health.store(0, Ordering::Release);
                s.caps.store(0, Ordering::Release);
                s.flags.store(0, Ordering::Release);
                s.draining.store(0, Ordering::Release);
                s.stats.store(0, Ordering::Release);
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

    /// The slot of node `index` when it belongs to a node list whose generation has the low 16
    /// bits `short_generation` (as [`CallMap`] keeps it).
    pub(crate) fn get_short_owned(&self, index: usize, short_generation: u64) -> Option<&NodeSlot> {
        self.get(index).filter(|s| {
            u64::from(s.owner.load(Ordering::Acquire)) & 0xffff == short_generation & 0xffff
        })
    }

    /// Number of slots.
    pub(crate) fn capacity(&self) -> usize {
        self.len
    }
}

/// Calls remembered in [`CallMap`].
const CALL_SLOTS: usize = 1 << 16;

/// Which node took each call's first command, shared by all processes, so that later commands
/// of the call (answer, re-INVITE, delete) follow it even when hashing would now pick another
/// node (a node came back after a failover, weights changed). Direct-mapped: a newer call may
/// take an older call's slot, and that older call then falls back to hashing, which is what
/// the C module always does.
pub(crate) struct CallMap {
    ptr: NonNull<AtomicU64>,
}

// SAFETY: an array of atomics in shm that lives as long as the process.
unsafe impl Send for CallMap {}
// SAFETY: as above.
unsafe impl Sync for CallMap {}

fn call_hash(call_id: &[u8]) -> u64 {
    // FNV-1a, 64 bits
    call_id.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

impl CallMap {
    /// Allocates the (empty) map in shm. Call before fork.
    pub(crate) fn allocate() -> Option<Self> {
        let p = mem::shm_malloc_zeroed(CALL_SLOTS * std::mem::size_of::<AtomicU64>());
        NonNull::new(p.cast::<AtomicU64>()).map(|ptr| Self { ptr })
    }

    fn slot(&self, h: u64) -> &AtomicU64 {
        let i = (h as usize) % CALL_SLOTS;
        // SAFETY: `i < CALL_SLOTS`; the zeroed allocation holds that many valid atomics.
        unsafe { &*self.ptr.as_ptr().add(i) }
    }

    /// Entry layout: check bits (32) | node-list generation (16) | node index + 1 (16).
    fn pack(h: u64, generation: u64, index: usize) -> u64 {
        ((h >> 32) << 32) | ((generation & 0xffff) << 16) | ((index as u64 + 1) & 0xffff)
    }

    /// Remembers that `call_id` is on node `index` of node-list `generation`. Returns what
    /// the map slot held before, if anything: `(same call, generation & 0xffff, index)`
    /// (another call is pushed out when its slot is taken).
    pub(crate) fn remember(
        &self,
        call_id: &[u8],
        generation: u64,
        index: usize,
    ) -> Option<(bool, u64, usize)> {
        if index >= 0xffff {
            return None;
        }
        let h = call_hash(call_id);
        let old = self
            .slot(h)
            .swap(Self::pack(h, generation, index), Ordering::AcqRel);
        Self::unpack(h, old)
    }

    fn unpack(h: u64, v: u64) -> Option<(bool, u64, usize)> {
        let index = ((v & 0xffff) as usize).checked_sub(1)?;
        Some((v >> 32 == h >> 32, (v >> 16) & 0xffff, index))
    }

    /// The node index remembered for `call_id` in node-list `generation`.
    pub(crate) fn lookup(&self, call_id: &[u8], generation: u64) -> Option<usize> {
        let h = call_hash(call_id);
        let v = self.slot(h).load(Ordering::Acquire);
        if v == 0 || v >> 32 != h >> 32 || (v >> 16) & 0xffff != generation & 0xffff {
            return None;
        }
        ((v & 0xffff) as usize).checked_sub(1)
    }

    /// Forgets `call_id` (its sessions were deleted); returns the `(generation & 0xffff,
    /// index)` it was remembered on, if it was.
    pub(crate) fn forget(&self, call_id: &[u8]) -> Option<(u64, usize)> {
        let h = call_hash(call_id);
        let s = self.slot(h);
        let v = s.load(Ordering::Acquire);
        if v != 0
            && v >> 32 == h >> 32
            && s.compare_exchange(v, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            return Self::unpack(h, v).map(|(_, g, i)| (g, i));
        }
        None
    }
}
