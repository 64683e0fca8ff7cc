//! The driver of the control plane: every relay command of every caller goes through
//! [`execute`], which runs the sans-IO engine of [`crate::core::control`] and only moves bytes
//! and reads the clock. Plus the per-process clients, the shared health updates the engine
//! asks for, and the background prober process (the driver of
//! [`crate::core::control::probe::ProbeRound`]).
//!
//! Rules kept here (doc/architecture.md, "Control plane"):
//! - a SIP worker never probes, never resolves a host name and never waits on a node known to
//!   be down: names are resolved at start-up, by `rtpproxy_reload` (MI process) and by the
//!   prober, and handed to the clients from shared memory; a node not probed yet is used with
//!   no optional capability and taken out at its first lost attempt;
//! - a node that loses an attempt is taken out for every process at once, and put back when
//!   a retransmission is answered; only the prober brings a failed node back otherwise.

use std::collections::HashMap;
use std::ffi::c_int;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::core::config::{NodeSpec, SetId, Transport};
use crate::core::control::probe::{
    self, ProbeInput, ProbeNotice, ProbeRound, ProbeStep, ProbeTiming,
};
use crate::core::control::{
    choose, Answer, CommandError, CommandRun, Event, Failover, HealthChange, NodeFault, NodeInput,
    Observer, OpKind, Route, Step,
};
use crate::core::proto::caps::{Capabilities, ProbeOutcome};
use crate::core::proto::command::Command;
use crate::core::proto::cookie::CookieGen;
use crate::core::proto::reply::Reply;
use crate::core::select::NodeHealth;
use crate::core::stats::{Event as StatEvent, Op};
pub(crate) use crate::error::ControlError;
use crate::error::HostError;
use crate::io::transport::{self, ClientOptions, ControlClient, TransportError};
use crate::Error;

use super::shared::NodeSlot;
use super::state::{self, ModuleState, NodeView, SetView};
use super::stats;
use crate::host::bind::events;

/// Per-process control state, rebuilt when the process id changes (after a fork) or when a
/// panic poisoned it (no command is left "pending").
struct Control {
    pid: u32,
    cookies: CookieGen,
    /// One client per node URL: a reload that keeps a node keeps its connection.
    clients: HashMap<String, ControlClient>,
    /// Clients of finished non-blocking commands, clean and connected, for the next ones
    /// (a parked command has a client of its own; reusing one saves its socket set-up).
    idle: Vec<ControlClient>,
}

/// How many finished non-blocking commands' clients a process keeps for reuse.
const IDLE_CLIENTS: usize = 32;

impl Control {
    fn new(pid: u32) -> Self {
        let seed = u64::from(pid)
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
        let rand = rand::rngs::SmallRng::seed_from_u64(seed).gen_range(0..10_000);
        Self {
            pid,
            cookies: CookieGen::new(pid, rand),
            clients: HashMap::new(),
            idle: Vec::new(),
        }
    }

    /// This process's client of `node`, created on first use, with the address the shared
    /// table holds for it (never resolved here).
    fn client(
        &mut self,
        st: &ModuleState,
        node: &NodeView,
        opts: ClientOptions,
    ) -> (&mut ControlClient, &mut CookieGen) {
        // looked up by reference first: no key copy per command once the client exists
        if !self.clients.contains_key(node.spec.url.as_str()) {
            self.clients
                .insert(node.spec.url.clone(), worker_client(node, opts));
        }
        let client = self
            .clients
            .get_mut(node.spec.url.as_str())
            .expect("inserted above");
        client.set_options(opts);
        if client.cached_address().is_none() {
            client.set_address(st.slot(node).and_then(|s| s.address()));
        }
        (client, &mut self.cookies)
    }
}

/// A client of `node` for a non-blocking command: a clean idle one of this process when
/// it still talks to the node's current address, else a new one.
fn async_client(st: &ModuleState, node: &NodeView, opts: ClientOptions) -> ControlClient {
    let address = st.slot(node).and_then(|s| s.address());
    let reused = with_control(|c| {
        let i = c.idle.iter().position(|k| {
            k.url() == node.spec.url && (address.is_none() || k.peer_addr() == address)
        })?;
        Some(c.idle.swap_remove(i))
    });
    match reused {
        Some(mut client) => {
            client.set_options(opts);
            client
        }
        None => {
            let mut client = worker_client(node, opts);
            client.set_address(address);
            client
        }
    }
}

/// Keeps the client of a finished non-blocking command for the next one, if it is clean.
fn keep_async_client(client: ControlClient) {
    if client.is_clean_idle() {
        with_control(|c| {
            if c.idle.len() < IDLE_CLIENTS {
                c.idle.push(client);
            }
        });
    }
}

/// A client as SIP workers use it: no name resolution, bounded UNIX connects.
fn worker_client(node: &NodeView, opts: ClientOptions) -> ControlClient {
    let mut c = new_client(node, opts);
    c.set_resolve_names(false);
    c.set_unix_connector(bounded_unix_connect);
    c
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
    let f =
        unsafe { (crate::host::ffi::api::api().find_export)(c"rtp_io_getchildsock".as_ptr(), 0) };
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

/// Connects a UNIX stream without waiting longer than `timeout`: a non-blocking connect is
/// retried while the relay's listen backlog is full (`EAGAIN`).
fn bounded_unix_connect(
    path: &std::path::Path,
    timeout: Duration,
) -> std::io::Result<std::os::unix::net::UnixStream> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: `sockaddr_un` is plain old data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return Err(std::io::ErrorKind::InvalidInput.into());
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: a plain socket(2) call.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket that nothing else owns; the stream closes it on drop.
    let stream = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
    let deadline = Instant::now() + timeout;
    loop {
        // SAFETY: `addr` is a valid `sockaddr_un` of the given size; `fd` is open.
        let r = unsafe {
            libc::connect(
                fd,
                std::ptr::addr_of!(addr).cast(),
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            )
        };
        if r == 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Some(libc::EAGAIN) => return Err(std::io::ErrorKind::TimedOut.into()),
            Some(libc::EINTR) => {}
            _ => return Err(e),
        }
    }
    stream.set_nonblocking(false)?;
    Ok(stream)
}

static CONTROL: Mutex<Option<Control>> = Mutex::new(None);

fn options(st: &ModuleState) -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_millis(u64::from(st.config.timeout_ms)),
        retr: st.config.retr.max(0) as u32,
    }
}

/// This process's id, cached: a `getpid` per command adds up. A fork handler clears the cache
/// in every child, so a forked process never sees its parent's id.
static PID: AtomicU32 = AtomicU32::new(0);

extern "C" fn forget_pid() {
    PID.store(0, Ordering::Relaxed);
}

/// The current process id, without a system call once known in this process.
pub(crate) fn pid() -> u32 {
    static HOOKED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let known = PID.load(Ordering::Relaxed);
    if known != 0 {
        return known;
    }
    let hooked = *HOOKED.get_or_init(|| {
        // SAFETY: registers a child-side fork handler that only stores to an atomic (async-
        // signal-safe); the handler is a plain function of this library, which OpenSIPS never
        // unloads.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(forget_pid)) };
        if rc != 0 {
            tracing::warn!("pthread_atfork failed ({rc}): the process id is not cached");
        }
        rc == 0
    });
    let id = std::process::id();
    if hooked {
        PID.store(id, Ordering::Relaxed);
    }
    id
}

fn with_control<R>(f: impl FnOnce(&mut Control) -> R) -> R {
    let pid = pid();
    let mut guard = match CONTROL.lock() {
        Ok(g) => g,
        Err(poisoned) => {
            // a panic interrupted a command: its client may still have it "pending";
            // start afresh (every client is rebuilt on next use)
            let mut g = poisoned.into_inner();
            *g = None;
            CONTROL.clear_poison();
            tracing::warn!("control state rebuilt after an internal error");
            g
        }
    };
    if guard.as_ref().is_none_or(|c| c.pid != pid) {
        *guard = Some(Control::new(pid));
    }
    f(guard.as_mut().expect("initialised above"))
}

/// OpenSIPS seconds-since-start clock.
pub(crate) fn now() -> u32 {
    // SAFETY: `get_ticks` only reads the core's tick counter.
    unsafe { (crate::host::ffi::api::api().get_ticks)() }
}

/// The resolved address of a `udp`/`tcp` node (`None` for other transports or when the
/// name does not resolve). Only for start-up, reloads and the prober: never a SIP worker.
pub(crate) fn resolve_spec(spec: &NodeSpec) -> Option<SocketAddr> {
    let v6 = matches!(spec.transport, Transport::Udp6 | Transport::Tcp6);
    if !matches!(
        spec.transport,
        Transport::Udp | Transport::Udp6 | Transport::Tcp | Transport::Tcp6
    ) {
        return None;
    }
    let (host, port) = (spec.host()?, spec.port()?);
    transport::literal(host, port, v6).or_else(|| match transport::resolve(host, port, v6) {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::warn!("RTPProxy {}: {e}", spec.url);
            None
        }
    })
}

/// The shm slot that tells how `node` is doing now: its own, or, when a reload replaced the
/// list while this command was running, the slot of the same node (same URL) in the new
/// list. Only read: a command on the old list changes no slot of the new one.
fn slot_now<'s>(st: &'s ModuleState, node: &NodeView) -> Option<&'s NodeSlot> {
    st.slot(node).or_else(|| {
        st.sets()
            .iter()
            .flat_map(|s| s.nodes.iter())
            .find(|n| n.spec.url == node.spec.url)
            .and_then(|n| st.slot(n))
    })
}

/// What the engine knows about a node now. A node of an old list that the new one dropped
/// (or during the instant of the hand-over) counts as up and probed: the command finishes
/// on the list it started with.
fn node_input(st: &ModuleState, node: &NodeView) -> NodeInput {
    let slot = slot_now(st, node);
    NodeInput {
        weight: node.spec.weight,
        enabled: slot.is_none_or(|s| s.health().is_enabled()),
        // MI `rtpproxy_drain`: no new calls, its own calls stay
        draining: slot.is_some_and(|s| s.draining()),
        probed: slot.is_none_or(|s| s.probed()),
    }
}

/// Where a caller wants a command to go.
#[derive(Clone, Copy)]
pub(crate) enum Target<'a> {
    /// The call's node: the one named (a URL stored in the dialog, a node rtp_relay or
    /// autobridge gives), else the one the call map remembers, else the hash choice.
    Call(Option<&'a str>),
    /// Exactly this node.
    Node(&'a NodeView),
}

/// A command to run: where, for which call, whether it may fail over.
pub(crate) struct Plan<'a, 'b> {
    /// The candidate nodes (a set's nodes).
    pub(crate) nodes: &'a [NodeView],
    /// The Call-ID (hash, call map); may be empty for commands outside a call.
    pub(crate) call_id: &'b [u8],
    /// Where to go.
    pub(crate) target: Target<'b>,
    /// Whether a node failure moves the command to the next node.
    pub(crate) failover: Failover,
    /// Kind of command.
    pub(crate) op: OpKind,
}

/// Reads a node's reply (`None`: the node gave none) for [`execute`].
pub(crate) type Judge<'j, T> = dyn FnMut(&NodeView, Option<&[u8]>) -> Verdict<T> + 'j;

/// What the caller makes of a node's answer (see [`execute`]).
pub(crate) enum Verdict<T> {
    /// Done with this value.
    Accept(T),
    /// The relay answered an error that counts as a node failure: take the node out and fail
    /// over if the plan allows.
    NodeFailure(u32),
    /// Stop with this error (the node itself is fine).
    Fail(Error),
    /// The relay does not know the call (`E50`): look further if the call's node is unknown.
    NotHere,
}

/// The index in `nodes` of the call's own node for `target`.
fn own_index(st: &ModuleState, nodes: &[NodeView], call_id: &[u8], target: Target<'_>) -> Route {
    match target {
        Target::Node(n) => Route::Pinned(
            nodes
                .iter()
                .position(|c| std::ptr::eq(c, n) || c.spec.url == n.spec.url)
                .unwrap_or(usize::MAX),
        ),
        Target::Call(Some(url)) => Route::Call {
            own: nodes.iter().position(|n| n.spec.url == url),
        },
        Target::Call(None) => {
            let own = (!call_id.is_empty())
                .then(|| st.calls.lookup(call_id))
                .flatten()
                .and_then(|key| nodes.iter().position(|n| n.key == key));
            Route::Call { own }
        }
    }
}

/// Feeds a node's reply and the caller's verdict on it to the engine (both drivers): an
/// accepted reply is kept, an `E` reply that is no node failure ends the command on that node.
fn on_body<T>(
    run: &mut CommandRun,
    i: usize,
    body: &[u8],
    rtt_us: u64,
    verdict: Verdict<T>,
    accepted: &mut Option<T>,
    caller_error: &mut Option<Error>,
) {
    let code = Reply::error_code_in(body);
    match verdict {
        Verdict::Accept(t) => {
            *accepted = Some(t);
            let answer = match code {
                Some(code) => Answer::Refused {
                    rtt_us,
                    code: Some(code),
                },
                None => Answer::Reply { rtt_us },
            };
            run.on_reply(i, answer);
        }
        Verdict::NodeFailure(code) => run.on_reply(i, Answer::Fault(NodeFault::RelayError(code))),
        Verdict::Fail(e) => {
            *caller_error = Some(e);
            run.on_reply(i, Answer::Refused { rtt_us, code });
        }
        Verdict::NotHere => run.on_reply(i, Answer::NotHere),
    }
}

/// Runs one command through the engine: the node is chosen, `build` makes the command for
/// it, the exchange runs (retransmissions, lost-attempt rule), `judge` reads the reply; on a
/// node failure the engine fails over (if the plan allows) and `build` is asked again for the
/// next node. `judge` also hears of a node that gave no reply (`None`): returning
/// [`Verdict::Fail`] stops there, anything else lets the engine go on.
///
/// An offer that succeeds is remembered as the call's node; a delete forgets the call.
pub(crate) fn execute<'a, T>(
    st: &ModuleState,
    plan: Plan<'a, '_>,
    build: &mut dyn FnMut(&NodeView) -> Result<Command, Error>,
    judge: &mut Judge<'_, T>,
) -> Result<(T, &'a NodeView), Error> {
    let nodes = plan.nodes;
    let route = own_index(st, nodes, plan.call_id, plan.target);
    let mut run = CommandRun::new(plan.op, route, plan.failover);
    let mut accepted: Option<T> = None;
    let mut caller_error: Option<Error> = None;
    let mut table: Vec<NodeInput> = Vec::with_capacity(nodes.len());
    let result = loop {
        table.clear();
        table.extend(nodes.iter().map(|n| node_input(st, n)));
        let step = run.poll(&table, plan.call_id);
        observe(st, nodes, run.take_events());
        match step {
            Step::Health { node, change } => {
                apply(st, &mut run, node, &nodes[node], change);
            }
            Step::Start { node: i } => {
                let node = &nodes[i];
                let cmd = match build(node) {
                    Ok(c) => c,
                    Err(e) => {
                        caller_error = Some(e);
                        run.abort();
                        continue;
                    }
                };
                let started = Instant::now();
                let exchanged = exchange(st, &mut run, i, node, &cmd);
                let rtt_us = started.elapsed().as_micros() as u64;
                match exchanged {
                    Ok(body) => {
                        let verdict = judge(node, Some(&body));
                        on_body(
                            &mut run,
                            i,
                            &body,
                            rtt_us,
                            verdict,
                            &mut accepted,
                            &mut caller_error,
                        );
                    }
                    Err(fault) => {
                        run.on_reply(i, Answer::Fault(fault));
                        if let Verdict::Fail(e) = judge(node, None) {
                            caller_error = Some(e);
                            run.abort();
                        }
                    }
                }
            }
            Step::Wait { .. } => {
                // the blocking driver runs each exchange to its end in `Start`
                run.abort();
            }
            Step::Done(r) => break r,
        }
    };
    observe(st, nodes, run.take_events());
    let node = conclude(st, nodes, &plan, &run, result, caller_error)?;
    accepted
        .map(|t| (t, node))
        .ok_or_else(|| HostError::Internal("reply not kept").into())
}

/// The end of a command, for both drivers: the call map learns (offer) or forgets (delete)
/// the call, and the engine's result becomes the node that answered or the host's error.
fn conclude<'a>(
    st: &ModuleState,
    nodes: &'a [NodeView],
    plan: &Plan<'_, '_>,
    run: &CommandRun,
    result: Result<usize, CommandError>,
    caller_error: Option<Error>,
) -> Result<&'a NodeView, Error> {
    if plan.op == OpKind::Delete && !plan.call_id.is_empty() {
        forget_call(st, plan.call_id);
    }
    if let Some(e) = caller_error {
        return Err(e);
    }
    match result {
        Ok(i) => {
            let node = &nodes[i];
            if plan.op == OpKind::Offer && !plan.call_id.is_empty() {
                remember_call(st, plan.call_id, node);
            }
            Ok(node)
        }
        Err(CommandError::NoNode | CommandError::Aborted) => Err(match plan.target {
            Target::Node(n) => ControlError::NodeUnavailable(n.spec.url.clone()),
            Target::Call(_) => ControlError::NoNode(set_of(st, nodes)),
        }
        .into()),
        Err(CommandError::Failed(fault)) => {
            let url = run
                .node()
                .and_then(|i| nodes.get(i))
                .map(|n| n.spec.url.clone())
                .unwrap_or_default();
            Err(match plan.target {
                Target::Call(_) if plan.op == OpKind::Offer => ControlError::NoneLeft {
                    set: set_of(st, nodes),
                    url,
                    fault,
                },
                _ => ControlError::Failed { url, fault },
            }
            .into())
        }
    }
}

/// The id of the set `nodes` belong to (for messages).
fn set_of(st: &ModuleState, nodes: &[NodeView]) -> SetId {
    st.sets()
        .iter()
        .find(|s| std::ptr::eq(s.nodes.as_ptr(), nodes.as_ptr()))
        .map_or(st.config.default_set, |s| s.id)
}

/// The observer every command's events go to: counts the statistics (the one place every
/// command of every caller passes), logs failovers and traces the rest.
struct HostObserver<'a> {
    st: &'a ModuleState,
    nodes: &'a [NodeView],
}

impl Observer for HostObserver<'_> {
    fn event(&self, e: &Event) {
        let node = |i: usize| self.nodes.get(i);
        let (on, stat) = match *e {
            Event::FirstSend { node: i, .. } => (node(i), Some(StatEvent::Sent)),
            Event::Retransmit { node: i, .. } => (node(i), Some(StatEvent::Retransmitted)),
            Event::NodeTimeout { node: i, .. } => (node(i), Some(StatEvent::TimedOut)),
            Event::RelayError { node: i, .. } => (node(i), Some(StatEvent::RelayError)),
            Event::Answered {
                node: i, rtt_us, ..
            } => (node(i), Some(StatEvent::Answered { rtt_us })),
            Event::Failover { from, to, .. } => {
                tracing::info!(
                    "failing over from RTPProxy {} to {}",
                    node(from).map_or("?", |n| &n.spec.url),
                    node(to).map_or("?", |n| &n.spec.url)
                );
                (node(from), Some(StatEvent::FailedOver))
            }
            // Deletes are one command per script-level operation; offers and answers are
            // counted per request by the offer/answer driver (a request may take one command
            // per stream).
            Event::Finished { op, ok, .. } => match op {
                OpKind::Delete => (None, Some(StatEvent::Finished { op: Op::Delete, ok })),
                _ => (None, None),
            },
        };
        if let Some(ev) = stat {
            stats::note(self.st, on, ev);
        }
        tracing::trace!("control event: {e:?}");
    }
}

/// Hands a command's events to the observer.
fn observe(st: &ModuleState, nodes: &[NodeView], events: Vec<Event>) {
    let o = HostObserver { st, nodes };
    for e in &events {
        o.event(e);
    }
}

/// Applies a health change the engine asked for on `node` (index `i`); a take-out tells the
/// engine whether this update is the one that disabled the node. Returns whether the command
/// still runs on `i` (see [`CommandRun::on_taken_out`]; `true` for a put-back).
fn apply(
    st: &ModuleState,
    run: &mut CommandRun,
    i: usize,
    node: &NodeView,
    change: HealthChange,
) -> bool {
    match change {
        HealthChange::TakeOut { why } => {
            let by_us = node_failed(st, node, &why);
            run.on_taken_out(i, by_us)
        }
        HealthChange::PutBack => {
            node_recovered(st, node);
            true
        }
    }
}

/// After a lost attempt on `node` (index `i`): applies every health change the engine decided
/// and returns whether the exchange goes on (`go_on`, what [`CommandRun::on_attempt_lost`]
/// said, unless this command's take-out came second).
fn settle_lost_attempt(
    st: &ModuleState,
    run: &mut CommandRun,
    i: usize,
    node: &NodeView,
    mut go_on: bool,
) -> bool {
    while let Some((_, change)) = run.take_health() {
        go_on &= apply(st, run, i, node, change);
    }
    go_on
}

/// Waits until `fd` is readable or `wait` has passed.
fn wait_readable(fd: RawFd, wait: Duration) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = wait.as_millis().clamp(1, i32::MAX as u128) as c_int;
    // SAFETY: one valid `pollfd` for the duration of the call.
    unsafe { libc::poll(&mut p, 1, ms) };
}

fn fault_of(e: &TransportError) -> NodeFault {
    match e {
        TransportError::Timeout { .. } => NodeFault::Timeout,
        other => NodeFault::Transport(other.to_string()),
    }
}

/// One exchange with `node` (index `i` in the engine's set), run to its end: connect and
/// send, wait on the socket until the attempt's deadline, retransmit, and ask the engine what
/// a lost attempt means.
fn exchange(
    st: &ModuleState,
    run: &mut CommandRun,
    i: usize,
    node: &NodeView,
    cmd: &Command,
) -> Result<Vec<u8>, NodeFault> {
    let opts = options(st);
    with_control(|c| {
        let (client, cookies) = c.client(st, node, opts);
        if let Err(e) = client.start(cookies, cmd) {
            return Err(fault_of(&e));
        }
        run.on_started(i);
        loop {
            let Some(deadline) = client.poll_timeout() else {
                client.cancel();
                return Err(NodeFault::Timeout);
            };
            let now = Instant::now();
            if now >= deadline {
                if let Some(r) = client.on_timeout(now) {
                    return r.map_err(|e| fault_of(&e));
                }
                // the request went out again: an attempt was lost
                let out = st.slot(node).is_some_and(|s| s.health().disabled);
                let go_on = run.on_attempt_lost(i, out);
                if !settle_lost_attempt(st, run, i, node, go_on) {
                    client.cancel();
                    return Err(NodeFault::Timeout);
                }
                continue;
            }
            if let Some(fd) = client.wait_fd() {
                wait_readable(fd, deadline - now);
            }
            if let Some(r) = client.on_readable() {
                return r.map_err(|e| fault_of(&e));
            }
        }
    })
}

/// Sends one command to exactly `node` (no failover) and returns the raw reply body, or
/// `None` when the node gave none (it has been taken out) or is disabled.
pub(crate) fn send_raw(st: &ModuleState, node: &NodeView, cmd: &Command) -> Option<Vec<u8>> {
    send_to(st, node, b"", cmd)
}

/// [`send_raw`] for a command of call `call_id` (a delete forgets the call).
pub(crate) fn send_to(
    st: &ModuleState,
    node: &NodeView,
    call_id: &[u8],
    cmd: &Command,
) -> Option<Vec<u8>> {
    execute(
        st,
        Plan {
            nodes: std::slice::from_ref(node),
            call_id,
            target: Target::Node(node),
            failover: Failover::Never,
            op: OpKind::of_letter(cmd.letter()),
        },
        &mut |_| Ok(cmd.clone()),
        &mut |_, body| match body {
            Some(b) => Verdict::Accept(b.to_vec()),
            None => Verdict::NodeFailure(0),
        },
    )
    .ok()
    .map(|(b, _)| b)
}

/// Sends one command to the node that holds call `call_id` in `set` (`url`: the node the
/// caller knows holds it, e.g. stored in the dialog; else the call map; else the hash), with
/// no failover. When the call's node is not known and the hash node answers that it has no
/// such session (`E50`), the other nodes that are up are asked in turn. Returns the reply
/// body and the node.
pub(crate) fn send_for_call<'a>(
    st: &ModuleState,
    set: &'a SetView,
    call_id: &[u8],
    url: Option<&str>,
    cmd: &Command,
) -> Result<(Vec<u8>, &'a NodeView), Error> {
    execute(
        st,
        Plan {
            nodes: &set.nodes,
            call_id,
            target: Target::Call(url),
            failover: Failover::Never,
            op: OpKind::of_letter(cmd.letter()),
        },
        &mut |_| Ok(cmd.clone()),
        &mut |_, body| match body {
            Some(b) if is_session_unknown(b) => Verdict::NotHere,
            Some(b) => Verdict::Accept(b.to_vec()),
            None => Verdict::NodeFailure(0),
        },
    )
}

/// `E50`: the relay has no such session.
pub(crate) fn is_session_unknown(body: &[u8]) -> bool {
    body.strip_prefix(b"E")
        .is_some_and(|code| code.trim_ascii() == SESSION_UNKNOWN)
}

/// RTPProxy's error code for an unknown session.
const SESSION_UNKNOWN: &[u8] = b"50";

/// A node that was taken out after a lost attempt answered after all: back in selection
/// (unless MI disabled it meanwhile).
fn node_recovered(st: &ModuleState, node: &NodeView) {
    let Some(slot) = st.slot(node) else { return };
    let (before, after) = slot.update(NodeHealth::on_probe_success);
    if before.disabled && !after.disabled {
        // The C module's words for a node back in selection (operators' rules match them).
        tracing::info!(
            "rtp proxy <{}> found, support for it re-enabled: it answered a retransmission",
            node.spec.url
        );
        events::raise_status(&st.events, &node.spec.url, true);
    }
}

/// Marks `node` failed for every process; returns whether this update is the one that
/// disabled it (it was enabled just before). The lines start with the C module's words for the
/// same condition (`timeout waiting reply from a RTP proxy`, `proxy <URL> does not respond,
/// disable it`), at its levels, so that log rules written for it still match; what we know
/// more follows.
pub(crate) fn node_failed(st: &ModuleState, node: &NodeView, why: &str) -> bool {
    // A node of an old list that a reload dropped has no slot: nobody else can take it out.
    let Some(slot) = st.slot(node) else {
        return true;
    };
    let now = now();
    let (before, after) = slot.update(|h| h.on_transport_failure(now, st.config.disable_tout));
    let url = &node.spec.url;
    // The engine words a command that got no reply after its last attempt `<op> failed: no
    // reply` (core::control, NodeFault::Timeout).
    let timed_out = why.ends_with(" failed: no reply");
    if timed_out {
        tracing::error!("timeout waiting reply from a RTP proxy <{url}>: {why}");
    }
    if before.disabled != after.disabled {
        stats::disabled(st, node, why);
        // An E7–E10 reply also takes the node out (as in C, which logs nothing then).
        let lead = if why.starts_with("answered E") {
            "is out of service"
        } else {
            "does not respond"
        };
        tracing::error!(
            "proxy <{url}> {lead}, disable it: {why}; re-probed after {}s by the prober",
            st.config.disable_tout
        );
        events::raise_status(&st.events, url, false);
    } else if !timed_out {
        tracing::warn!("RTPProxy {url}: {why}");
    }
    !before.disabled && after.disabled
}

/// The set to use: `set` if given, else `default_set`.
pub(crate) fn find_set(st: &ModuleState, set: Option<SetId>) -> Option<&'static SetView> {
    let id = set.unwrap_or(st.config.default_set);
    st.sets().iter().find(|s| s.id == id)
}

/// Probes `node` now from this process without changing its state (MI `rtpproxy_ping`):
/// the round trip in µs and the version reply.
pub(crate) fn ping(st: &ModuleState, node: &NodeView) -> Result<(u64, String), TransportError> {
    let opts = options(st);
    let started = std::time::Instant::now();
    let body = with_control(|c| {
        let (client, cookies) = c.client(st, node, opts);
        client.send_raw(cookies, &Command::version())
    })?;
    Ok((
        started.elapsed().as_micros() as u64,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

/// The set `set` (or `default_set`), or the error every caller reports.
pub(crate) fn set_or_error(
    st: &ModuleState,
    set: Option<SetId>,
) -> Result<&'static SetView, ControlError> {
    find_set(st, set).ok_or(ControlError::NoSet(set.unwrap_or(st.config.default_set)))
}

/// The node a command of call `call_id` would use now (see [`Target::Call`]), without
/// sending anything: for callers that need the node before the command (`sock_var`,
/// capability checks).
pub(crate) fn node_for_call<'a>(
    st: &ModuleState,
    set: &'a SetView,
    call_id: &[u8],
    url: Option<&str>,
) -> Result<&'a NodeView, ControlError> {
    let table: Vec<NodeInput> = set.nodes.iter().map(|n| node_input(st, n)).collect();
    let Route::Call { own } = own_index(st, &set.nodes, call_id, Target::Call(url)) else {
        return Err(ControlError::NoNode(set.id));
    };
    choose(&table, call_id, own, &[])
        .map(|i| &set.nodes[i])
        .ok_or(ControlError::NoNode(set.id))
}

/// Capabilities of a node as probed so far. A node the prober has not answered yet has none
/// of the optional ones (the conservative rule, doc/architecture.md): no SIP worker probes.
pub(crate) fn capabilities(st: &ModuleState, node: &NodeView) -> Capabilities {
    slot_now(st, node).map_or(Capabilities::NONE, |slot| slot.capabilities())
}

/// Records a probe's outcome for every process: the shared health, capabilities and probed
/// mark change as [`probe::apply_outcome`] says, and what [`probe::report`] decides is logged,
/// counted and raised.
fn record_probe(st: &ModuleState, node: &NodeView, outcome: &ProbeOutcome) {
    let Some(slot) = st.slot(node) else { return };
    let now = now();
    let first = slot.mark_probed(probe::capabilities_of(outcome));
    let (before, after) =
        slot.update(|h| probe::apply_outcome(outcome, h, now, st.config.disable_tout));
    let notice = probe::report(outcome, first, before, after);
    let url = &node.spec.url;
    match &notice {
        ProbeNotice::Quiet | ProbeNotice::HeldOut => {}
        ProbeNotice::Active(caps) => {
            let caps = caps.names().collect::<Vec<_>>().join(",");
            tracing::info!("RTPProxy {url} is active (capabilities: {caps})");
        }
        ProbeNotice::Reenabled(caps) => {
            let caps = caps.names().collect::<Vec<_>>().join(",");
            // The C module's words for a node back after a failure.
            tracing::info!(
                "rtp proxy <{url}> found, support for it re-enabled (capabilities: {caps})"
            );
        }
        ProbeNotice::Disabled { why, newly } => {
            if *newly {
                stats::disabled(st, node, &format!("probe failed: {why}"));
            }
            // The C module's words (and level) for a failed probe.
            tracing::warn!(
                "support for RTP proxy <{url}> has been disabled{}: {why}; re-probed every {}s",
                if st.config.disable_tout < 0 {
                    ""
                } else {
                    " temporarily"
                },
                st.config.disable_tout
            );
        }
    }
    if let Some(active) = notice.status_event() {
        events::raise_status(&st.events, url, active);
    }
}

/// The prober process's driver of [`ProbeRound`]: its own clients and cookies (it never
/// shares the workers' state). It only starts commands, waits on the sockets of every probe
/// in flight at once and reads the clock; the round decides the rest.
struct Prober {
    cookies: CookieGen,
    /// One client per node entry (a URL may be in two sets, and both are probed at once).
    clients: HashMap<String, ControlClient>,
}

/// The prober's client key of `node`.
fn probe_key(node: &NodeView) -> String {
    format!("{}#{}", node.index, node.spec.url)
}

impl Prober {
    /// The prober's client of `node`, with the address the shared table holds for it (and
    /// the prober's cookies).
    fn client(
        &mut self,
        st: &ModuleState,
        node: &NodeView,
        opts: ClientOptions,
    ) -> (&mut ControlClient, &mut CookieGen) {
        let client = self
            .clients
            .entry(probe_key(node))
            .or_insert_with(|| new_client(node, opts));
        client.set_options(opts);
        client.set_unix_connector(bounded_unix_connect);
        if client.cached_address().is_none() {
            if let Some(a) = st.slot(node).and_then(|s| s.address()) {
                client.set_address(Some(a));
            }
        }
        (client, &mut self.cookies)
    }

    /// A reply (or a transport failure) of `node`'s command: the address it came from is
    /// shared with the workers, and the round hears of it.
    fn on_outcome(
        st: &ModuleState,
        round: &mut ProbeRound,
        i: usize,
        node: &NodeView,
        client: &ControlClient,
        out: Result<Vec<u8>, TransportError>,
    ) {
        if let (Some(slot), Some(peer)) = (st.slot(node), client.peer_addr()) {
            slot.set_address(peer);
        }
        round.on_reply(i, out.ok().as_deref());
    }

    /// One round: [`ProbeRound`] over every node of every set.
    fn round(&mut self, st: &ModuleState) {
        #[cfg(feature = "fault-injection")]
        fault::prober_round();
        let nodes: Vec<&NodeView> = st
            .sets()
            .iter()
            .flat_map(|s| s.nodes.iter())
            .filter(|n| st.slot(n).is_some())
            .collect();
        let inputs: Vec<ProbeInput> = nodes
            .iter()
            .map(|n| {
                let slot = st.slot(n).expect("filtered above");
                ProbeInput {
                    health: slot.health(),
                    probed: slot.probed(),
                    datagram: matches!(n.spec.transport, Transport::Udp | Transport::Udp6),
                }
            })
            .collect();
        let opts = options(st);
        let mut round = ProbeRound::new(
            &inputs,
            now(),
            ProbeTiming {
                timeout: opts.timeout,
                retr: opts.retr,
            },
        );
        // names are resolved here, outside every SIP worker, and shared with them
        for i in round.due() {
            if let Some(slot) = st.slot(nodes[i]) {
                if slot.address().is_none() {
                    if let Some(a) = resolve_spec(&nodes[i].spec) {
                        slot.set_address(a);
                    }
                }
            }
        }
        loop {
            match round.poll(Instant::now()) {
                ProbeStep::Send { node: i, cmd } => {
                    let (client, cookies) = self.client(st, nodes[i], opts);
                    match client.start(cookies, &cmd) {
                        Ok(()) => round.on_sent(i, Instant::now()),
                        Err(_) => round.on_reply(i, None),
                    }
                }
                ProbeStep::Retransmit { node: i } => {
                    let (client, _) = self.client(st, nodes[i], opts);
                    match client.on_timeout(Instant::now()) {
                        None => round.on_sent(i, Instant::now()),
                        Some(out) => Self::on_outcome(st, &mut round, i, nodes[i], client, out),
                    }
                }
                ProbeStep::GiveUp { node: i } => self.client(st, nodes[i], opts).0.cancel(),
                ProbeStep::Record { node: i, outcome } => record_probe(st, nodes[i], &outcome),
                ProbeStep::Wait { until } => self.wait(st, &mut round, &nodes, until),
                ProbeStep::Done => break,
            }
        }
    }

    /// Waits until a socket of a probe in flight is readable or `until` has passed, and
    /// feeds the replies that arrived.
    fn wait(
        &mut self,
        st: &ModuleState,
        round: &mut ProbeRound,
        nodes: &[&NodeView],
        until: Instant,
    ) {
        let in_flight: Vec<usize> = round.in_flight().collect();
        let mut polled: Vec<(usize, libc::pollfd)> = Vec::new();
        for &i in &in_flight {
            if let Some(fd) = self
                .clients
                .get(&probe_key(nodes[i]))
                .and_then(|c| c.wait_fd())
            {
                polled.push((
                    i,
                    libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    },
                ));
            }
        }
        let mut pfds: Vec<libc::pollfd> = polled.iter().map(|(_, p)| *p).collect();
        let ms = until
            .saturating_duration_since(Instant::now())
            .as_millis()
            .clamp(1, 1000) as c_int;
        // SAFETY: `pfds` is a valid array of `pfds.len()` entries for the whole call.
        unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
        for ((i, _), p) in polled.iter().zip(&pfds) {
            if p.revents == 0 {
                continue;
            }
            let Some(client) = self.clients.get_mut(&probe_key(nodes[*i])) else {
                continue;
            };
            if let Some(out) = client.on_readable() {
                Self::on_outcome(st, round, *i, nodes[*i], client, out);
            }
        }
    }
}

/// Body of the prober process: never returns. Each round runs under the guard: an error or
/// a panic in one round is logged, the prober backs off and goes on.
pub(crate) fn run_prober() {
    let Some(st) = state::get() else {
        tracing::error!("prober started without module state");
        return;
    };
    tracing::info!("RTPProxy prober started");
    let mut prober = Prober {
        cookies: Control::new(std::process::id()).cookies,
        clients: HashMap::new(),
    };
    loop {
        let ok = crate::host::ffi::guard::call("prober round", false, || {
            prober.round(st);
            true
        });
        if ok {
            std::thread::sleep(probe::ROUND_INTERVAL);
        } else {
            // the clients may be mid-command: start again with fresh ones
            prober.clients.clear();
            std::thread::sleep(probe::ROUND_BACKOFF);
        }
    }
}

/// Fault injection for the end-to-end tests (cargo feature `fault-injection`, never in a
/// release build).
#[cfg(feature = "fault-injection")]
mod fault {
    use std::sync::atomic::{AtomicU32, Ordering};

    static ROUNDS: AtomicU32 = AtomicU32::new(0);

    /// With `RTPPROXY_FAULT_PROBER_PANIC=N` in the environment, the first `N` prober rounds
    /// panic.
    pub(super) fn prober_round() {
        let n: u32 = std::env::var("RTPPROXY_FAULT_PROBER_PANIC")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if ROUNDS.fetch_add(1, Ordering::Relaxed) < n {
            panic!("injected prober fault");
        }
    }
}

/// Records that `node` holds the sessions of `call_id` (and moves the call gauges).
pub(crate) fn remember_call(st: &ModuleState, call_id: &[u8], node: &NodeView) {
    let replaced = st.calls.remember(call_id, node.key);
    stats::call_remembered(st, node, replaced);
}

/// Forgets where `call_id` was (its sessions are deleted; moves the call gauges).
fn forget_call(st: &ModuleState, call_id: &[u8]) {
    stats::call_forgotten(st.calls.forget(call_id));
}

/// What a non-blocking command's caller does with the node's answers (see [`AsyncRun`]).
pub(crate) trait Steps {
    /// The command for `node` (asked again after each failover).
    fn build(&mut self, node: &NodeView) -> Result<Command, Error>;
    /// Reads `node`'s reply (`None`: it gave none), as `judge` does for [`execute`].
    fn judge(&mut self, node: &NodeView, body: Option<&[u8]>) -> Verdict<()>;
}

/// How far a non-blocking command got.
pub(crate) enum Progress {
    /// Waiting for [`AsyncRun::wait_fd`] or [`AsyncRun::deadline`].
    Waiting,
    /// Over: the node that answered, or why not.
    Done(Result<&'static NodeView, Error>),
}

/// One command run by the non-blocking driver: the same engine as [`execute`], but instead
/// of waiting in place it returns [`Progress::Waiting`]; the caller parks the command on
/// [`AsyncRun::wait_fd`] until readable or until [`AsyncRun::deadline`], then calls
/// [`AsyncRun::advance`] again. Retransmissions, the lost-attempt rule and failover are the
/// engine's, exactly as for the blocking driver. The command has its own client (its own
/// socket), so the worker's blocking commands are never `Busy` because of a parked one.
pub(crate) struct AsyncRun {
    nodes: &'static [NodeView],
    call_id: Vec<u8>,
    /// The node URL the caller named as the call's own node.
    own_url: Option<String>,
    /// The command goes to exactly `nodes[0]` (media commands, as [`send_raw`]).
    pinned: bool,
    failover: Failover,
    op: OpKind,
    run: CommandRun,
    client: Option<(usize, ControlClient)>,
    /// When the exchange in `client` started (its round trip for the statistics).
    started: Instant,
    caller_error: Option<Error>,
}

impl AsyncRun {
    /// A command of `op` for call `call_id` on `nodes` (its own node: `own_url`, else the
    /// call map, else the hash). Nothing is sent before the first [`AsyncRun::advance`].
    pub(crate) fn new(
        st: &ModuleState,
        nodes: &'static [NodeView],
        call_id: &[u8],
        own_url: Option<&str>,
        failover: Failover,
        op: OpKind,
    ) -> Self {
        let route = own_index(st, nodes, call_id, Target::Call(own_url));
        Self {
            nodes,
            call_id: call_id.to_vec(),
            own_url: own_url.map(str::to_owned),
            pinned: false,
            failover,
            op,
            run: CommandRun::new(op, route, failover),
            client: None,
            started: Instant::now(),
            caller_error: None,
        }
    }

    /// A command of `op` for exactly `node`, outside the call map (as [`send_raw`]): it
    /// fails when the node is disabled or gives no reply.
    pub(crate) fn to_node(st: &ModuleState, node: &'static NodeView, op: OpKind) -> Self {
        let nodes = std::slice::from_ref(node);
        let route = own_index(st, nodes, b"", Target::Node(node));
        Self {
            nodes,
            call_id: Vec::new(),
            own_url: None,
            pinned: true,
            failover: Failover::Never,
            op,
            run: CommandRun::new(op, route, Failover::Never),
            client: None,
            started: Instant::now(),
            caller_error: None,
        }
    }

    /// Whether every node of `nodes` can be waited on without blocking (UDP): the others
    /// (stream connects, UNIX one-shots, rtp.io) run through the blocking driver.
    pub(crate) fn can_park(nodes: &[NodeView]) -> bool {
        nodes
            .iter()
            .all(|n| matches!(n.spec.transport, Transport::Udp | Transport::Udp6))
    }

    /// The socket of the attempt in flight.
    pub(crate) fn wait_fd(&self) -> Option<RawFd> {
        self.client.as_ref().and_then(|(_, c)| c.wait_fd())
    }

    /// When the attempt in flight is lost.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.client.as_ref().and_then(|(_, c)| c.poll_timeout())
    }

    /// Moves the command on as far as it goes without waiting: reads a reply that arrived,
    /// handles a passed deadline (retransmission, lost-attempt rule, failover), starts the
    /// next node. Never blocks.
    pub(crate) fn advance(&mut self, st: &ModuleState, steps: &mut dyn Steps) -> Progress {
        let nodes = self.nodes;
        loop {
            if let Some((i, client)) = self.client.as_mut() {
                let i = *i;
                let node = &nodes[i];
                let mut out = client.on_readable();
                if out.is_none() {
                    let now = Instant::now();
                    match client.poll_timeout() {
                        None => out = Some(Err(TransportError::Busy)),
                        Some(d) if now >= d => {
                            out = client.on_timeout(now);
                            if out.is_none() {
                                // the request went out again: an attempt was lost
                                let down = st.slot(node).is_some_and(|s| s.health().disabled);
                                let go_on = self.run.on_attempt_lost(i, down);
                                if !settle_lost_attempt(st, &mut self.run, i, node, go_on) {
                                    client.cancel();
                                    out = Some(Err(TransportError::Timeout { attempts: 0 }));
                                }
                            }
                        }
                        Some(_) => {}
                    }
                }
                observe(st, nodes, self.run.take_events());
                let Some(out) = out else {
                    return Progress::Waiting;
                };
                if let Some((_, client)) = self.client.take() {
                    keep_async_client(client);
                }
                match out {
                    Ok(body) => {
                        let rtt_us = self.started.elapsed().as_micros() as u64;
                        let verdict = steps.judge(node, Some(&body));
                        on_body(
                            &mut self.run,
                            i,
                            &body,
                            rtt_us,
                            verdict,
                            &mut None,
                            &mut self.caller_error,
                        );
                    }
                    Err(e) => {
                        self.run.on_reply(i, Answer::Fault(fault_of(&e)));
                        if let Verdict::Fail(e) = steps.judge(node, None) {
                            self.caller_error = Some(e);
                            self.run.abort();
                        }
                    }
                }
            }
            let table: Vec<NodeInput> = nodes.iter().map(|n| node_input(st, n)).collect();
            let step = self.run.poll(&table, &self.call_id);
            observe(st, nodes, self.run.take_events());
            match step {
                Step::Health { node, change } => {
                    apply(st, &mut self.run, node, &nodes[node], change);
                }
                Step::Start { node: i } => {
                    let node = &nodes[i];
                    let cmd = match steps.build(node) {
                        Ok(c) => c,
                        Err(e) => {
                            self.caller_error = Some(e);
                            self.run.abort();
                            continue;
                        }
                    };
                    let mut client = async_client(st, node, options(st));
                    match with_control(|c| client.start(&mut c.cookies, &cmd)) {
                        Ok(()) => {
                            self.run.on_started(i);
                            self.client = Some((i, client));
                            self.started = Instant::now();
                        }
                        Err(e) => {
                            self.run.on_reply(i, Answer::Fault(fault_of(&e)));
                            if let Verdict::Fail(e) = steps.judge(node, None) {
                                self.caller_error = Some(e);
                                self.run.abort();
                            }
                        }
                    }
                }
                Step::Wait { .. } => {
                    // every started exchange is kept in `client`: nothing to wait on
                    self.run.abort();
                }
                Step::Done(r) => {
                    observe(st, nodes, self.run.take_events());
                    return Progress::Done(self.conclude(st, r));
                }
            }
        }
    }

    /// Stops the command where it is (the script's `async()` timeout): the attempt in
    /// flight is abandoned and the engine records the end, so every command the observer
    /// saw start is also seen to finish.
    pub(crate) fn abandon(&mut self, st: &ModuleState) {
        if let Some((_, mut c)) = self.client.take() {
            c.cancel();
        }
        self.run.abort();
        let table: Vec<NodeInput> = Vec::new();
        while !matches!(self.run.poll(&table, &self.call_id), Step::Done(_)) {}
        observe(st, self.nodes, self.run.take_events());
    }

    fn conclude(
        &mut self,
        st: &ModuleState,
        r: Result<usize, CommandError>,
    ) -> Result<&'static NodeView, Error> {
        let plan = Plan {
            nodes: self.nodes,
            call_id: &self.call_id,
            target: if self.pinned {
                Target::Node(&self.nodes[0])
            } else {
                Target::Call(self.own_url.as_deref())
            },
            failover: self.failover,
            op: self.op,
        };
        conclude(
            st,
            self.nodes,
            &plan,
            &self.run,
            r,
            self.caller_error.take(),
        )
    }
}
