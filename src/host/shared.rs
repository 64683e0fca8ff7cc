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

    /// Records a finished probe; returns true for the first one since start.
    pub(crate) fn mark_probed(&self, caps: Capabilities) -> bool {
        self.caps.fetch_or(caps.bits(), Ordering::AcqRel);
        self.flags.fetch_or(1, Ordering::AcqRel) & 1 == 0
    }
}
