//! The control plane as every process uses it: per-process clients and cookies, node choice
//! over the shared health table, failure marking, and the background prober process.
//!
//! SIP workers never probe a disabled node: a node that fails is marked disabled in shm at
//! once, for every process, and only the prober (a process of ours) brings it back.

use std::ffi::c_int;
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rand::{Rng, SeedableRng};

use crate::core::config::{SetId, Transport};
use crate::core::proto::caps::{Capabilities, ProbeOutcome};
use crate::core::proto::command::Command;
use crate::core::proto::cookie::CookieGen;
use crate::core::proto::reply::Reply;
use crate::core::select::{self, NodeHealth};
use crate::core::stats::{Event, Op};
use crate::io::transport::{ClientOptions, ControlClient, TransportError};

use super::events;
use super::state::{self, ModuleState, NodeView, SetView};
use super::stats;

/// Per-process control state, rebuilt when the process id changes (after a fork).
struct Control {
    pid: u32,
    cookies: CookieGen,
    /// Node-list generation the clients were made for.
    generation: u64,
    clients: Vec<Option<ControlClient>>,
}

impl Control {
    /// This process's client of `node`, created on first use; all clients are dropped when
    /// the node list changed (slot `i` may now be another node).
    fn client(
        &mut self,
        node: &NodeView,
        opts: ClientOptions,
    ) -> (&mut ControlClient, &mut CookieGen) {
        if node.generation != self.generation {
            self.clients.clear();
            self.generation = node.generation;
        }
        if self.clients.len() <= node.index {
            self.clients.resize_with(node.index + 1, || None);
        }
        let client = self.clients[node.index].get_or_insert_with(|| new_client(node, opts));
        (client, &mut self.cookies)
    }
}

/// This process's child_init rank (SIP workers and timer processes: 1..N).
static RANK: AtomicI32 = AtomicI32::new(0);

/// Records the rank OpenSIPS gave this process (`child_init`).
pub(crate) fn set_rank(rank: i32) {
    RANK.store(rank, Ordering::Relaxed);
}

/// A client for `node`. For `rtp.io:auto` the stream comes from the `rtp.io` module, which
/// keeps one socket pair end per worker rank (`rtp_io_getchildsock(rank)`); we use a
/// duplicate of it, so dropping our client never closes rtp.io's descriptor.
fn new_client(node: &NodeView, opts: ClientOptions) -> ControlClient {
    if node.spec.transport != Transport::RtpIo {
        return ControlClient::new(&node.spec, opts);
    }
    let rank = RANK.load(Ordering::Relaxed);
    // SAFETY: `find_export` only reads the loaded modules' tables.
    let f = unsafe { (super::api::api().find_export)(c"rtp_io_getchildsock".as_ptr(), 0) };
    if f.is_null() || rank < 1 {
        tracing::error!("rtp.io:auto needs the rtp.io module and a worker process (rank {rank})");
        return ControlClient::new(&node.spec, opts);
    }
    // SAFETY: rtp.io exports `int rtp_io_getchildsock(int rank)` under this name.
    let get: unsafe extern "C" fn(c_int) -> c_int = unsafe { std::mem::transmute(f) };
    // SAFETY: a plain call; it returns a descriptor or -1.
    let fd = unsafe { get(rank) };
    let dup = if fd >= 0 {
        // SAFETY: `dup` of a descriptor rtp.io owns; we own the duplicate.
        unsafe { libc::dup(fd) }
    } else {
        -1
    };
    if dup < 0 {
        tracing::error!("rtp.io gave no control socket for rank {rank}");
        return ControlClient::new(&node.spec, opts);
    }
    // SAFETY: `dup` is a fresh descriptor of a connected UNIX stream that nothing else owns.
    let stream = unsafe { std::os::unix::net::UnixStream::from_raw_fd(dup) };
    ControlClient::with_rtpio_stream(&node.spec.url, stream, opts)
}

static CONTROL: Mutex<Option<Control>> = Mutex::new(None);

fn options(st: &ModuleState) -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_millis(u64::from(st.config.timeout_ms)),
        retr: st.config.retr.max(0) as u32,
    }
}

fn with_control<R>(f: impl FnOnce(&mut Control) -> R) -> R {
    let pid = std::process::id();
    let mut guard = CONTROL.lock().unwrap_or_else(|p| p.into_inner());
    if guard.as_ref().is_none_or(|c| c.pid != pid) {
        let seed = u64::from(pid)
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
        let rand = rand::rngs::SmallRng::seed_from_u64(seed).gen_range(0..10_000);
        *guard = Some(Control {
            pid,
            cookies: CookieGen::new(pid, rand),
            generation: 0,
            clients: Vec::new(),
        });
    }
    f(guard.as_mut().expect("initialised above"))
}

/// OpenSIPS seconds-since-start clock.
pub(crate) fn now() -> u32 {
    // SAFETY: `get_ticks` only reads the core's tick counter.
    unsafe { (super::api::api().get_ticks)() }
}

/// Sends one command to `node` with the configured timeouts and returns the raw reply.
///
/// A transport failure disables the node for every process (and raises
/// `E_RTPPROXY_STATUS inactive` on the change). Already when the first UDP attempt goes
/// unanswered the node is taken out of selection for every process, so that while this
/// command finishes its retransmissions no new call is sent to a relay that may be hung; if a
/// retransmission is answered after all, the node is put back at once. A command that loses
/// an attempt while another command already took the node out gives up at once (the caller
/// fails over): two lost attempts from two processes are taken as a hung relay, so that only
/// the first command waits for every retransmission.
fn exchange(st: &ModuleState, node: &NodeView, cmd: &Command) -> Result<Vec<u8>, TransportError> {
    let opts = options(st);
    let mut suspected = false;
    let started = std::time::Instant::now();
    stats::note(st, Some(node), Event::Sent);
    let r = with_control(|c| {
        let (client, cookies) = c.client(node, opts);
        client.send_raw_observed(cookies, cmd, &mut || {
            if suspected {
                stats::note(st, Some(node), Event::Retransmitted);
                return true; // our own mark: keep retransmitting
            }
            let already_out = st.slot(node).is_some_and(|s| s.health().disabled);
            if already_out {
                return false;
            }
            suspected = true;
            node_failed(
                st,
                node,
                &format!("no reply to {} yet, retransmitting", cmd.letter() as char),
            );
            stats::note(st, Some(node), Event::Retransmitted);
            true
        })
    });
    let ev = match &r {
        Err(_) => Event::TimedOut,
        Ok(body) if matches!(Reply::parse(body), Ok(Reply::Error(_))) => Event::RelayError,
        Ok(_) => Event::Answered {
            rtt_us: started.elapsed().as_micros() as u64,
        },
    };
    stats::note(st, Some(node), ev);
    match &r {
        Err(e) => node_failed(st, node, &format!("{} failed: {e}", cmd.letter() as char)),
        Ok(_) if suspected => node_recovered(st, node),
        Ok(_) => {}
    }
    r
}

/// Sends one command and gives the raw reply body (`None` after a transport failure, which
/// has disabled the node); see [`exchange`].
pub(crate) fn send_raw(st: &ModuleState, node: &NodeView, cmd: &Command) -> Option<Vec<u8>> {
    exchange(st, node, cmd).ok()
}

/// A node that was taken out after a lost attempt answered after all: back in selection
/// (unless MI disabled it meanwhile).
fn node_recovered(st: &ModuleState, node: &NodeView) {
    let Some(slot) = st.slot(node) else { return };
    let (before, after) = slot.update(NodeHealth::on_probe_success);
    if before.disabled && !after.disabled {
        tracing::warn!(
            "RTPProxy {} answered a retransmission: back in service",
            node.spec.url
        );
        events::raise_status(&st.events, &node.spec.url, true);
    }
}

/// Marks `node` failed for every process.
pub(crate) fn node_failed(st: &ModuleState, node: &NodeView, why: &str) {
    let Some(slot) = st.slot(node) else { return };
    let now = now();
    let (before, after) = slot.update(|h| h.on_transport_failure(now, st.config.disable_tout));
    if before.disabled != after.disabled {
        stats::disabled(st, node, why);
        tracing::error!(
            "RTPProxy {} disabled: {why}; re-probed after {}s by the prober",
            node.spec.url,
            st.config.disable_tout
        );
        events::raise_status(&st.events, &node.spec.url, false);
    } else {
        tracing::warn!("RTPProxy {}: {why}", node.spec.url);
    }
}

/// The set to use: `set` if given, else `default_set`.
pub(crate) fn find_set(st: &ModuleState, set: Option<SetId>) -> Option<&'static SetView> {
    let id = set.unwrap_or(st.config.default_set);
    st.sets().iter().find(|s| s.id == id)
}

/// Chooses the node of `set` for a new call `call_id` (same node as the C module for the same
/// Call-ID while the same nodes are enabled); draining nodes are skipped. Never does I/O.
pub(crate) fn select<'a>(
    st: &ModuleState,
    set: &'a SetView,
    call_id: &[u8],
) -> Option<&'a NodeView> {
    let table: Vec<(u32, bool)> = set
        .nodes
        .iter()
        .map(|n| {
            (
                n.spec.weight,
                st.slot(n)
                    .is_some_and(|s| select::takes_new_calls(s.health(), s.draining())),
            )
        })
        .collect();
    select::select_node(&table, call_id).map(|i| &set.nodes[i])
}

/// The node for a command of call `call_id`: the node that took the call's first command if
/// it is still enabled, even while it drains (a call stays on its node), else the hash choice
/// of [`select`].
pub(crate) fn select_for_call<'a>(
    st: &ModuleState,
    set: &'a SetView,
    call_id: &[u8],
) -> Option<&'a NodeView> {
    let generation = set.nodes.first().map_or(0, |n| n.generation);
    if let Some(index) = st.calls.lookup(call_id, generation) {
        if let Some(n) = set.nodes.iter().find(|n| n.index == index) {
            if st.slot(n).is_some_and(|s| s.health().is_enabled()) {
                return Some(n);
            }
        }
    }
    select(st, set, call_id)
}

/// Records that `node` holds the sessions of `call_id`.
pub(crate) fn remember_call(st: &ModuleState, call_id: &[u8], node: &NodeView) {
    let previous = st.calls.remember(call_id, node.generation, node.index);
    stats::call_remembered(st, node, previous);
}

/// Forgets where `call_id` was (its sessions are deleted).
pub(crate) fn forget_call(st: &ModuleState, call_id: &[u8]) {
    let removed = st.calls.forget(call_id);
    stats::call_forgotten(st, removed);
}

/// Deletes the sessions of `call_id` on `node` with `cmd` (a `D`): forgets the call's node
/// and counts the outcome. Returns the raw reply (`None` after a transport failure).
pub(crate) fn delete_call(
    st: &ModuleState,
    node: &NodeView,
    call_id: &[u8],
    cmd: &Command,
) -> Option<Vec<u8>> {
    forget_call(st, call_id);
    let reply = send_raw(st, node, cmd);
    let ok = reply
        .as_deref()
        .is_some_and(|b| !matches!(Reply::parse(b), Ok(Reply::Error(_))));
    stats::note(st, None, Event::Finished { op: Op::Delete, ok });
    reply
}

/// Probes `node` now from this process without changing its state (MI `rtpproxy_ping`):
/// the round trip in µs and the version reply.
pub(crate) fn ping(st: &ModuleState, node: &NodeView) -> Result<(u64, String), TransportError> {
    let opts = options(st);
    let started = std::time::Instant::now();
    let body = with_control(|c| {
        let (client, cookies) = c.client(node, opts);
        client.send_raw(cookies, &Command::version())
    })?;
    Ok((
        started.elapsed().as_micros() as u64,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

/// Capabilities of a node; probes it first from this process if nobody has yet (the start-up
/// window before the prober's first round).
pub(crate) fn capabilities(st: &ModuleState, node: &NodeView) -> Capabilities {
    let Some(slot) = st.slot(node) else {
        return Capabilities::NONE;
    };
    if !slot.probed() {
        probe_node(st, node);
    }
    slot.capabilities()
}

/// Probes one node (`V` and the `VF` list) and records the result for every process.
pub(crate) fn probe_node(st: &ModuleState, node: &NodeView) {
    let Some(slot) = st.slot(node) else { return };
    let opts = options(st);
    let (outcome, _) = with_control(|c| {
        let (client, cookies) = c.client(node, opts);
        client.probe(cookies)
    });
    let now = now();
    match outcome {
        ProbeOutcome::Enabled(caps) => {
            let first = slot.mark_probed(caps);
            let (before, after) = slot.update(NodeHealth::on_probe_success);
            if first || before.disabled != after.disabled {
                if !after.disabled {
                    tracing::info!(
                        "RTPProxy {} is active (capabilities: {})",
                        node.spec.url,
                        caps.names().collect::<Vec<_>>().join(",")
                    );
                }
                events::raise_status(&st.events, &node.spec.url, !after.disabled);
            }
        }
        ProbeOutcome::Failed(why) => {
            let first = slot.mark_probed(Capabilities::NONE);
            let (before, after) = slot.update(|h| h.on_probe_failure(now, st.config.disable_tout));
            if before.disabled != after.disabled {
                stats::disabled(st, node, &format!("probe failed: {why}"));
            }
            if first || before.disabled != after.disabled {
                tracing::error!(
                    "RTPProxy {} is unavailable ({why}); re-probed every {}s",
                    node.spec.url,
                    st.config.disable_tout
                );
                events::raise_status(&st.events, &node.spec.url, false);
            }
        }
    }
}

/// One round of the prober: every node never probed, and every disabled node whose recheck
/// time has come.
fn prober_round(st: &ModuleState) {
    let now = now();
    for node in st.sets().iter().flat_map(|s| s.nodes.iter()) {
        let Some(slot) = st.slot(node) else { continue };
        if !slot.probed() || slot.health().is_due_for_recheck(now) {
            probe_node(st, node);
        }
    }
}

/// Body of the prober process: never returns.
pub(crate) fn run_prober() {
    let Some(st) = state::get() else {
        tracing::error!("prober started without module state");
        return;
    };
    tracing::info!("RTPProxy prober started");
    loop {
        prober_round(st);
        std::thread::sleep(Duration::from_millis(500));
    }
}
