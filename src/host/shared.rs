//! State shared by every OpenSIPS process: a `#[repr(C)]` array of atomics in shm, allocated in
//! `mod_init` (before fork) so that it sits at the same address in every child.
//!
//! Configuration (URLs, weights, sets) is plain Rust data copied into each process by fork;
//! only what changes at run time (node health, capabilities) lives here.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use super::mem;

/// Run-time state of one node, shared by all processes.
#[repr(C)]
pub(crate) struct NodeSlot {
    /// 1 when the node must not be selected.
    pub(crate) disabled: AtomicU32,
    /// OpenSIPS tick at which a disabled node may be probed again; `u32::MAX` = never (MI).
    pub(crate) recheck_ticks: AtomicU32,
    /// Capability bits learnt by probing.
    pub(crate) caps: AtomicU32,
    _reserved: AtomicU32,
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

impl NodeSlot {
    /// `(disabled, recheck_ticks)` as MI shows them.
    pub(crate) fn snapshot(&self) -> (u32, u32) {
        (self.disabled.load(Ordering::Acquire), self.recheck_ticks.load(Ordering::Acquire))
    }

    /// Sets both health fields.
    pub(crate) fn set(&self, disabled: bool, recheck_ticks: u32) {
        self.recheck_ticks.store(recheck_ticks, Ordering::Release);
        self.disabled.store(u32::from(disabled), Ordering::Release);
    }
}
