//! Statistics in the OpenSIPS group `rtpproxy` (what [`crate::core::stats`] declares),
//! registered with the core's statistics API and counted in shm by every process.
//!
//! Counters are ordinary OpenSIPS statistics: the core keeps their values in shm and we add to
//! them atomically through the value's address (what the C macro `update_stat` does). Gauges
//! are `STAT_IS_FUNC | STAT_NO_RESET` functions that read our shm state when OpenSIPS asks.
//! Per-node statistics are named `<name>__<url>`; each URL gets one shm [`NodeRecord`] the
//! first time it appears (start-up or `rtpproxy_reload`) and keeps it, so a node removed by a
//! reload keeps its counters (they stop changing) and one that comes back continues them.
//!
//! The control plane reports through four hooks only: [`note`] (one [`Event`]),
//! [`disabled`] (why and when a node was taken out), and [`call_remembered`] /
//! [`call_forgotten`] (calls held per node).

use std::ffi::{c_ulong, c_void, CString};
use std::sync::atomic::{AtomicI64, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use crate::core::control::callmap::node_key;
use crate::core::stats::{smooth_rtt, Event, NodeStat, Stat, StatKind};

use super::shared::{NodeSlot, Replaced};
use super::state::{self, ModuleState, NodeView};
use crate::error::HostError;
use crate::host::ffi::mem;
use crate::host::ffi::sys::{self, stat_var};

const GROUP: &std::ffi::CStr = c"rtpproxy";
const REASON_MAX: usize = 120;
const URL_MAX: usize = 256;

type StatFn = unsafe extern "C" fn(*mut c_void) -> c_ulong;

/// The shm value of each module-wide counter (`stat_val*` of its `stat_var`), set in
/// `mod_init` before fork, so every process inherits the addresses.
static GLOBAL: [AtomicPtr<AtomicU64>; Stat::ALL.len()] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; Stat::ALL.len()];

/// Module-wide shm state: calls held, and the list of node records.
#[repr(C)]
struct Region {
    active_calls: AtomicI64,
    /// Address of the first [`NodeRecord`] (0: none).
    head: AtomicU64,
    /// Spin lock for adding records.
    lock: AtomicU32,
}

static REGION: AtomicPtr<Region> = AtomicPtr::new(std::ptr::null_mut());

/// Everything the statistics and the detailed MI view keep about one node URL (shm).
#[repr(C)]
pub(crate) struct NodeRecord {
    next: AtomicU64,
    /// Per [`NodeStat`] counter row: the address of its `stat_val` (0 for gauges).
    counters: [AtomicU64; NodeStat::ALL.len()],
    rtt_us: AtomicU64,
    active_calls: AtomicI64,
    /// `generation << 32 | index + 1` of the node's slot in the current list; 0 = not in it.
    slot: AtomicU64,
    last_success: AtomicU32,
    disabled_at: AtomicU32,
    reason_lock: AtomicU32,
    reason_len: AtomicU32,
    reason: [u8; REASON_MAX],
    url_len: u32,
    url: [u8; URL_MAX],
}

/// OpenSIPS seconds-since-start clock.
fn now() -> u32 {
    // SAFETY: `get_ticks` only reads the core's tick counter.
    unsafe { (crate::host::ffi::api::api().get_ticks)() }
}

fn region() -> Option<&'static Region> {
    let p = REGION.load(Ordering::Acquire);
    // SAFETY: set once in mod_init to a zeroed shm block that is never freed.
    (!p.is_null()).then(|| unsafe { &*p })
}

fn spin(lock: &AtomicU32) {
    while lock
        .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        std::thread::yield_now();
    }
}

fn add(val: u64, n: u64) {
    if val != 0 {
        // SAFETY: a `stat_val` address from `register_stat2`: an 8-byte atomic in shm that the
        // core never frees (ABI spec §2.8).
        unsafe { &*(val as *const AtomicU64) }.fetch_add(n, Ordering::Relaxed);
    }
}

fn read(val: u64) -> u64 {
    if val == 0 {
        return 0;
    }
    // SAFETY: as in `add`.
    unsafe { &*(val as *const AtomicU64) }.load(Ordering::Relaxed)
}

/// Registers one statistic; for a counter returns its value's address.
fn register(name: &str, kind: StatKind, gauge: StatFn, ctx: *mut c_void) -> Result<u64, HostError> {
    let cname = CString::new(name).map_err(|_| HostError::Statistic(name.into()))?;
    let api = crate::host::ffi::api::api();
    let mut var: *mut stat_var = std::ptr::null_mut();
    // SAFETY: both strings are NUL-terminated and copied by the core; for a counter the core
    // writes the new statistic into `var`; for a gauge the "pointer" is the function the core
    // calls with `ctx` (a shm record or NULL), as `register_stat2` documents for STAT_IS_FUNC.
    let rc = unsafe {
        match kind {
            StatKind::Counter => (api.register_stat2)(
                GROUP.as_ptr(),
                cname.as_ptr().cast_mut(),
                &mut var,
                0,
                std::ptr::null_mut(),
                0,
            ),
            StatKind::Gauge => (api.register_stat2)(
                GROUP.as_ptr(),
                cname.as_ptr().cast_mut(),
                gauge as *mut *mut stat_var,
                (sys::STAT_IS_FUNC | sys::STAT_NO_RESET) as u16,
                ctx,
                0,
            ),
        }
    };
    if rc != 0 {
        return Err(HostError::Statistic(name.into()));
    }
    if kind == StatKind::Gauge || var.is_null() {
        return Ok(0);
    }
    // SAFETY: `var` is the shm statistic just registered; `u` holds its `stat_val*`.
    Ok(unsafe { (*var).u } as u64)
}

/// `mod_init` (before fork): creates the group as a dynamic one (so that `rtpproxy_reload`
/// may add node statistics later from any process), registers the module-wide statistics and
/// those of the configured nodes.
pub(crate) fn init(st: &ModuleState) -> Result<(), HostError> {
    let api = crate::host::ffi::api::api();
    // SAFETY: the name is copied by the core; the returned group lives in shm.
    let group = unsafe { (api.add_stat_module)(GROUP.as_ptr().cast_mut()) };
    if group.is_null() {
        return Err(HostError::StatisticsGroup);
    }
    // SAFETY: `group` is the live group just created; flagging it dynamic is what
    // modules/statistics does for groups that grow after fork.
    unsafe { (*group).is_dyn = 1 };
    let r = mem::shm_malloc_zeroed(std::mem::size_of::<Region>()).cast::<Region>();
    if r.is_null() {
        return Err(HostError::OutOfShm("statistics"));
    }
    REGION.store(r, Ordering::Release);
    for &s in Stat::ALL {
        let f: StatFn = match s {
            Stat::ActiveCalls => global_gauge::<{ Stat::ActiveCalls.index() }>,
            _ => global_gauge::<{ Stat::EnabledNodes.index() }>,
        };
        let val = register(s.name(), s.kind(), f, std::ptr::null_mut())?;
        GLOBAL[s.index()].store(val as *mut AtomicU64, Ordering::Release);
    }
    attach_nodes(st);
    Ok(())
}

/// Gives every node of the current list its record (creating and registering the statistics
/// of URLs never seen) and marks the others as not in the list. `mod_init` and
/// `rtpproxy_reload` call it, after the new list is installed.
pub(crate) fn attach_nodes(st: &ModuleState) {
    let Some(region) = region() else { return };
    for_each_record(|r| r.slot.store(0, Ordering::Release));
    for n in st.sets().iter().flat_map(|s| s.nodes.iter()) {
        let Some(slot) = st.slot(n) else { continue };
        spin(&region.lock);
        let rec = find_record(&n.spec.url).or_else(|| new_record(region, &n.spec.url));
        region.lock.store(0, Ordering::Release);
        let Some(rec) = rec else { continue };
        rec.slot.store(
            ((n.generation & 0xffff_ffff) << 32) | (n.index as u64 + 1),
            Ordering::Release,
        );
        slot.set_stats_addr(rec as *const NodeRecord as u64);
    }
}

fn for_each_record(mut f: impl FnMut(&'static NodeRecord)) {
    let mut p = region().map_or(0, |r| r.head.load(Ordering::Acquire));
    while p != 0 {
        // SAFETY: list entries are shm records that are never freed.
        let rec = unsafe { &*(p as *const NodeRecord) };
        f(rec);
        p = rec.next.load(Ordering::Acquire);
    }
}

fn find_record(url: &str) -> Option<&'static NodeRecord> {
    let mut found = None;
    for_each_record(|r| {
        if found.is_none() && r.url() == url.as_bytes() {
            found = Some(r);
        }
    });
    found
}

/// Allocates and registers the record of `url` (under the region lock).
fn new_record(region: &Region, url: &str) -> Option<&'static NodeRecord> {
    if url.len() > URL_MAX {
        tracing::warn!("RTPProxy URL too long for statistics: {url}");
        return None;
    }
    let p = mem::shm_malloc_zeroed(std::mem::size_of::<NodeRecord>()).cast::<NodeRecord>();
    if p.is_null() {
        tracing::error!("out of shared memory for the statistics of {url}");
        return None;
    }
    // SAFETY: `p` is a fresh zeroed shm block of a record (all-zero atomics are valid); the
    // URL fits (checked) and is written before the record is published.
    let rec = unsafe {
        let rec = &mut *p;
        rec.url[..url.len()].copy_from_slice(url.as_bytes());
        rec.url_len = url.len() as u32;
        &*p
    };
    for &s in NodeStat::ALL {
        let f: StatFn = match s {
            NodeStat::RttUs => node_gauge::<{ NodeStat::RttUs.index() }>,
            NodeStat::Enabled => node_gauge::<{ NodeStat::Enabled.index() }>,
            NodeStat::Draining => node_gauge::<{ NodeStat::Draining.index() }>,
            _ => node_gauge::<{ NodeStat::ActiveCalls.index() }>,
        };
        match register(&s.full_name(url), s.kind(), f, p.cast()) {
            Ok(val) => rec.counters[s.index()].store(val, Ordering::Release),
            Err(e) => tracing::error!("{e}"),
        }
    }
    rec.next
        .store(region.head.load(Ordering::Acquire), Ordering::Release);
    region.head.store(p as u64, Ordering::Release);
    Some(rec)
}

impl NodeRecord {
    fn url(&self) -> &[u8] {
        &self.url[..(self.url_len as usize).min(URL_MAX)]
    }

    /// The value of a per-node statistic.
    pub(crate) fn value(&self, s: NodeStat) -> u64 {
        match s {
            NodeStat::RttUs => self.rtt_us.load(Ordering::Relaxed),
            NodeStat::ActiveCalls => self.active_calls.load(Ordering::Relaxed).max(0) as u64,
            NodeStat::Enabled => {
                u64::from(self.current_slot().is_some_and(|s| s.health().is_enabled()))
            }
            NodeStat::Draining => u64::from(self.current_slot().is_some_and(|s| s.draining())),
            _ => read(self.counters[s.index()].load(Ordering::Acquire)),
        }
    }

    /// The node's slot in the current list (`None` once a reload removed the URL).
    fn current_slot(&self) -> Option<&'static NodeSlot> {
        let v = self.slot.load(Ordering::Acquire);
        let index = ((v & 0xffff_ffff) as usize).checked_sub(1)?;
        state::get()?.shared.get_owned(index, v >> 32)
    }

    /// Tick of the last answered command (0: none).
    pub(crate) fn last_success(&self) -> u32 {
        self.last_success.load(Ordering::Relaxed)
    }

    /// Why and when (tick) the node was last disabled, if it was.
    pub(crate) fn last_disabled(&self) -> Option<(String, u32)> {
        let at = self.disabled_at.load(Ordering::Acquire);
        if at == 0 && self.reason_len.load(Ordering::Acquire) == 0 {
            return None;
        }
        spin(&self.reason_lock);
        let len = (self.reason_len.load(Ordering::Acquire) as usize).min(REASON_MAX);
        let why = String::from_utf8_lossy(&self.reason[..len]).into_owned();
        self.reason_lock.store(0, Ordering::Release);
        Some((why, self.disabled_at.load(Ordering::Acquire)))
    }
}

/// The record of `node`, once attached.
pub(crate) fn record(st: &ModuleState, node: &NodeView) -> Option<&'static NodeRecord> {
    let addr = st.slot(node)?.stats_addr();
    // SAFETY: slot addresses are records made by `new_record`, never freed.
    (addr != 0).then(|| unsafe { &*(addr as *const NodeRecord) })
}

/// Hook: counts one control-plane event (on `node`, when it concerns one).
pub(crate) fn note(st: &ModuleState, node: Option<&NodeView>, ev: Event) {
    let (global, per_node) = ev.counters();
    if let Some(g) = global {
        add(GLOBAL[g.index()].load(Ordering::Relaxed) as u64, 1);
    }
    let Some(rec) = node.and_then(|n| record(st, n)) else {
        return;
    };
    if let Some(n) = per_node {
        add(rec.counters[n.index()].load(Ordering::Relaxed), 1);
    }
    if let Event::Answered { rtt_us } = ev {
        let _ = rec
            .rtt_us
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |prev| {
                Some(smooth_rtt(prev, rtt_us))
            });
        rec.last_success.store(now().max(1), Ordering::Relaxed);
    }
}

/// Hook: `node` was just disabled (a real enabled → disabled change), because of `why`.
pub(crate) fn disabled(st: &ModuleState, node: &NodeView, why: &str) {
    let Some(rec) = record(st, node) else { return };
    let mut len = why.len().min(REASON_MAX);
    while !why.is_char_boundary(len) {
        len -= 1;
    }
    spin(&rec.reason_lock);
    // SAFETY: the record is shm we may write under its reason lock; `len <= REASON_MAX`.
    unsafe {
        let buf = std::ptr::addr_of!(rec.reason).cast_mut().cast::<u8>();
        std::ptr::copy_nonoverlapping(why.as_ptr(), buf, len);
    }
    rec.reason_len.store(len as u32, Ordering::Release);
    rec.disabled_at.store(now().max(1), Ordering::Release);
    rec.reason_lock.store(0, Ordering::Release);
}

/// The record of the node whose call-map key (`callmap::node_key` of its URL) is `key`.
fn record_of_key(key: u32) -> Option<&'static NodeRecord> {
    let mut found = None;
    for_each_record(|r| {
        if found.is_none() && std::str::from_utf8(r.url()).is_ok_and(|u| node_key(u) == key) {
            found = Some(r);
        }
    });
    found
}

/// Hook: `node` now holds a call; `replaced` is what the call-map entry held before (the
/// same call on some node, or another call pushed out by LRU eviction).
pub(crate) fn call_remembered(st: &ModuleState, node: &NodeView, replaced: Replaced) {
    match replaced {
        Replaced::Same(k) if k == node.key => return,
        Replaced::Same(k) => {
            if let Some(r) = record_of_key(k) {
                r.active_calls.fetch_sub(1, Ordering::Relaxed);
            }
        }
        // the evicted call is no longer counted: one out, one in
        Replaced::Evicted(k) => {
            if let Some(r) = record_of_key(k) {
                r.active_calls.fetch_sub(1, Ordering::Relaxed);
            }
        }
        Replaced::Empty => {
            if let Some(r) = region() {
                r.active_calls.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    if let Some(r) = record(st, node) {
        r.active_calls.fetch_add(1, Ordering::Relaxed);
    }
}

/// Hook: a call's sessions were deleted; `removed` is the node key the call map had it on.
pub(crate) fn call_forgotten(removed: Option<u32>) {
    let Some(k) = removed else { return };
    if let Some(r) = region() {
        r.active_calls.fetch_sub(1, Ordering::Relaxed);
    }
    if let Some(r) = record_of_key(k) {
        r.active_calls.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The module-wide value of `s` now.
pub(crate) fn global_value(st: &ModuleState, s: Stat) -> u64 {
    match s {
        Stat::ActiveCalls => {
            region().map_or(0, |r| r.active_calls.load(Ordering::Relaxed).max(0)) as u64
        }
        Stat::EnabledNodes => st
            .sets()
            .iter()
            .flat_map(|set| set.nodes.iter())
            .filter(|n| st.slot(n).is_some_and(|x| x.health().is_enabled()))
            .count() as u64,
        _ => read(GLOBAL[s.index()].load(Ordering::Relaxed) as u64),
    }
}

/// Gauge function of a module-wide statistic (`K` = [`Stat::index`]).
unsafe extern "C" fn global_gauge<const K: usize>(_ctx: *mut c_void) -> c_ulong {
    crate::host::ffi::guard::call("statistics", 0, || {
        state::get().map_or(0, |st| global_value(st, Stat::ALL[K]))
    })
}

/// Gauge function of a per-node statistic (`K` = [`NodeStat::index`], `ctx` = its record).
unsafe extern "C" fn node_gauge<const K: usize>(ctx: *mut c_void) -> c_ulong {
    crate::host::ffi::guard::call("statistics", 0, || {
        if ctx.is_null() {
            return 0;
        }
        // SAFETY: `ctx` is the shm record this statistic was registered with (never freed).
        let rec = unsafe { &*ctx.cast::<NodeRecord>() };
        rec.value(NodeStat::ALL[K])
    })
}
