//! OpenSIPS memory: pkg (per process) and shm (shared, mapped before fork).
//!
//! `pkg_malloc`/`shm_malloc` are C macros/inlines over exported function-pointer globals; they
//! are re-expressed here (ABI spec §4.2, §4.3). Memory handed to the host (lumps, MI strings it
//! frees) comes from here; everything else uses the Rust allocator.

use std::ffi::{c_char, c_void};
use std::sync::atomic::{AtomicU8, Ordering};

use super::api::api;

const FILE: &std::ffi::CStr = c"rtpproxy-rs";
const FUNC: &std::ffi::CStr = c"rtpproxy";

/// Allocates `size` bytes of pkg memory; NULL when the host allocator is exhausted.
pub(crate) fn pkg_malloc(size: usize) -> *mut c_void {
    let a = api();
    // SAFETY: `gen_pkg_malloc` and `mem_block` are set by the core before any module code
    // runs; the file/func strings are static, as the debug allocator stores them.
    unsafe {
        match *a.gen_pkg_malloc {
            Some(f) => f(
                *a.mem_block,
                size as _,
                FILE.as_ptr(),
                FUNC.as_ptr(),
                line!(),
            ),
            None => std::ptr::null_mut(),
        }
    }
}

/// A pkg copy of `bytes` (not NUL-terminated unless the input is), for the host to own.
pub(crate) fn pkg_copy(bytes: &[u8]) -> Option<*mut c_char> {
    let p = pkg_malloc(bytes.len().max(1)).cast::<c_char>();
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` is a fresh allocation of at least `bytes.len()` bytes.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr().cast::<c_char>(), p, bytes.len()) };
    Some(p)
}

/// Frees pkg memory obtained from [`pkg_malloc`].
///
/// # Safety
/// `p` must come from this process's pkg allocator and not be used afterwards.
pub(crate) unsafe fn pkg_free(p: *mut c_void) {
    let a = api();
    // SAFETY: per the contract, `p` is a live pkg block of this process.
    unsafe {
        if let Some(f) = *a.gen_pkg_free {
            f(*a.mem_block, p, FILE.as_ptr(), FUNC.as_ptr(), line!());
        }
    }
}

/// The core's global shm lock (`mem_lock`): its first byte is an x86 xchg spin lock.
fn with_mem_lock<R>(f: impl FnOnce() -> R) -> R {
    let a = api();
    // SAFETY: reading two core globals set up before modules are initialised.
    let (use_lock, lock) = unsafe { (*a.shm_use_global_lock != 0, *a.mem_lock) };
    if !use_lock || lock.is_null() {
        return f();
    }
    // SAFETY: `mem_lock` points at a 4-byte lock word in shm; taking its low byte as an
    // AtomicU8 matches the C `xchgb`/`movb` lock protocol (ABI spec §4.3).
    let byte = unsafe { &*(lock as *const AtomicU8) };
    let mut spins = 0u32;
    while byte.swap(1, Ordering::Acquire) != 0 {
        spins += 1;
        if spins >= 1024 {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    let r = f();
    byte.store(0, Ordering::Release);
    r
}

/// The inline `shm_threshold_check()` of the core: raises the shm threshold event if due.
fn shm_threshold_check() {
    let a = api();
    // SAFETY: plain reads of core globals; the pointers are checked before use, as in C.
    unsafe {
        let block = *a.shm_block;
        let (last, pending) = (*a.event_shm_last, *a.event_shm_pending);
        if *a.event_shm_threshold == 0
            || block.is_null()
            || last.is_null()
            || pending.is_null()
            || *pending != 0
        {
            return;
        }
        let (Some(rused), Some(size)) = (*a.gen_shm_get_rused, *a.gen_shm_get_size) else {
            return;
        };
        let used = rused(block) as i64;
        let total = size(block) as i64;
        if total == 0 {
            return;
        }
        let perc = used * 100 / total;
        let thr = *a.event_shm_threshold;
        if (perc < thr && *last <= thr) || (perc >= thr && *last == perc) {
            return;
        }
        (a.shm_event_raise)(used, total, perc);
    }
}

/// Allocates zeroed shm memory (visible to every process forked afterwards).
pub(crate) fn shm_malloc_zeroed(size: usize) -> *mut c_void {
    let p = with_mem_lock(|| {
        let a = api();
        // SAFETY: the allocator pointer and block are core globals set before mod_init.
        let p = unsafe {
            match *a.gen_shm_malloc {
                Some(f) => f(
                    *a.shm_block,
                    size as _,
                    FILE.as_ptr(),
                    FUNC.as_ptr(),
                    line!(),
                ),
                None => std::ptr::null_mut(),
            }
        };
        shm_threshold_check();
        p
    });
    if !p.is_null() {
        // SAFETY: `p` is a fresh allocation of `size` bytes.
        unsafe { std::ptr::write_bytes(p.cast::<u8>(), 0, size) };
    }
    p
}

/// Frees shm memory obtained from [`shm_malloc_zeroed`].
///
/// # Safety
/// `p` must be a live shm block that no process uses any more.
pub(crate) unsafe fn shm_free(p: *mut c_void) {
    with_mem_lock(|| {
        let a = api();
        // SAFETY: per the contract `p` is a live shm block.
        unsafe {
            if let Some(f) = *a.gen_shm_free {
                f(*a.shm_block, p, FILE.as_ptr(), FUNC.as_ptr(), line!());
            }
        }
        shm_threshold_check();
    });
}
