//! The rtp_relay engine `rtpproxy` (spec §12, ABI spec §4.13): with the rtp_relay module
//! loaded, `rtp_relay_engage("rtpproxy")` drives offer/answer/delete through the callbacks
//! registered here in `mod_preinit`, and SIPREC / media forking use the copy callbacks (§6).
//!
//! Offer/answer reuse the host's offer/answer core ([`super::functions::run_offer_answer`]).
//! The copy context lives in shm (rtp_relay keeps it with the dialog and may use it from any
//! process): one block holding [`CopyContext::to_bytes`], sized for the largest context.

use std::cell::UnsafeCell;
use std::ffi::{c_char, c_int, c_uint, c_void};
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use crate::core::config::{ModuleConfig, SetId};
use crate::core::media::{
    self as cm, copy_flags, CopyAction, CopyContext, CopyReader, CopyWriter, Leg, MediaError,
    MAX_STREAM_MAP,
};
use crate::core::offer::Direction;
use crate::core::proto::command::Command;
use crate::core::proto::reply::Reply;
use crate::error::{HostError, LifecycleError};
use crate::host::ffi::cstr::opt_str;
use crate::Error;

use super::functions::run_offer_answer;
use super::media::{is_enabled, node_by_url, send_copy, send_stop_copy};
use super::request::{OfferRequest, SdpSource};
use crate::host::bind::msg::{Bodies, Msg};
use crate::host::ffi::sys::{host_str, sip_msg};
use crate::host::ffi::{api, cstr, guard, mem};
use crate::host::runtime::control;
use crate::host::runtime::state::{self, ModuleState, NodeView, SetView};

// ---- the rtp_relay ABI (rtp_relay.h, rtp_relay_common.h; 3.6.8) -----------------------------

/// `struct rtp_relay_session` (48 bytes).
#[repr(C)]
pub(crate) struct RelaySession {
    msg: *mut sip_msg,
    branch: c_int,
    callid: *mut host_str,
    from_tag: *mut host_str,
    to_tag: *mut host_str,
    body: *mut host_str,
}

/// `struct rtp_relay_server` (24 bytes): the set and the node (shm string) of a session.
#[repr(C)]
pub(crate) struct RelayServer {
    set: c_int,
    node: host_str,
}

/// `struct rtp_relay_stream`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct RelayStream {
    leg: c_int,
    medianum: c_int,
    label: c_int,
}

/// `struct rtp_relay_streams`.
#[repr(C)]
pub(crate) struct RelayStreams {
    count: c_int,
    streams: [RelayStream; MAX_STREAM_MAP],
}

type OfferF = unsafe extern "C" fn(
    *mut RelaySession,
    *mut RelayServer,
    *mut host_str,
    *mut host_str,
    *mut host_str,
    *mut host_str,
    *mut host_str,
    *mut host_str,
    *mut host_str,
    *mut host_str,
) -> c_int;
type DeleteF = unsafe extern "C" fn(
    *mut RelaySession,
    *mut RelayServer,
    *mut host_str,
    *mut host_str,
) -> c_int;
type CopyOfferF = unsafe extern "C" fn(
    *mut RelaySession,
    *mut RelayServer,
    *mut *mut c_void,
    *mut host_str,
    c_uint,
    c_uint,
    *mut host_str,
    *mut RelayStreams,
) -> c_int;
type CopyAnswerF = unsafe extern "C" fn(
    *mut RelaySession,
    *mut RelayServer,
    *mut c_void,
    *mut host_str,
    *mut host_str,
) -> c_int;
type CopyDeleteF =
    unsafe extern "C" fn(*mut RelaySession, *mut RelayServer, *mut c_void, *mut host_str) -> c_int;
type CopySerializeF = unsafe extern "C" fn(*mut c_void, *mut c_void) -> c_int;
type CopyDeserializeF = unsafe extern "C" fn(*mut *mut c_void, *mut c_void) -> c_int;
type CopyReleaseF = unsafe extern "C" fn(*mut *mut c_void);

/// `struct rtp_relay_funcs` (72 bytes).
#[repr(C)]
struct RelayFuncs {
    offer: Option<OfferF>,
    answer: Option<OfferF>,
    delete: Option<DeleteF>,
    copy_offer: Option<CopyOfferF>,
    copy_answer: Option<CopyAnswerF>,
    copy_delete: Option<CopyDeleteF>,
    copy_serialize: Option<CopySerializeF>,
    copy_deserialize: Option<CopyDeserializeF>,
    copy_release: Option<CopyReleaseF>,
}

type GetSdpF = unsafe extern "C" fn(*mut RelaySession, c_int) -> *mut host_str;
type GetDlgIdsF = unsafe extern "C" fn(*mut host_str, *mut c_uint, *mut c_uint) -> c_int;

/// `struct rtp_relay_hooks` (16 bytes), filled in by rtp_relay when we register.
#[repr(C)]
struct RelayHooks {
    get_sdp: Option<GetSdpF>,
    get_dlg_ids: Option<GetDlgIdsF>,
}

type RegisterF = unsafe extern "C" fn(*const c_char, *mut RelayFuncs, *mut RelayHooks) -> c_int;

/// The hooks rtp_relay writes at registration (main process, before fork; read-only after).
struct HookCell(UnsafeCell<RelayHooks>);
// SAFETY: written once by rtp_relay during `mod_preinit` (single-threaded, before fork), only
// read afterwards.
unsafe impl Sync for HookCell {}

static HOOKS: HookCell = HookCell(UnsafeCell::new(RelayHooks {
    get_sdp: None,
    get_dlg_ids: None,
}));

fn get_sdp_hook() -> Option<GetSdpF> {
    // SAFETY: see `HookCell`: no writer once script functions and callbacks run.
    unsafe { (*HOOKS.0.get()).get_sdp }
}

/// Registers the engine `rtpproxy` with rtp_relay, when that module is loaded.
pub(crate) fn register() -> Result<(), LifecycleError> {
    // SAFETY: `find_export` only reads the loaded modules' tables.
    let f = unsafe { (api::api().find_export)(c"register_rtp_relay".as_ptr(), 0) };
    if f.is_null() {
        tracing::debug!("rtp_relay is not loaded: engine rtpproxy not registered");
        return Ok(());
    }
    // SAFETY: rtp_relay exports `register_rtp_relay` with the `reg_rtp_relay_f` signature.
    let register = unsafe { std::mem::transmute::<*mut c_void, RegisterF>(f) };
    let mut funcs = RelayFuncs {
        offer: Some(engine_offer),
        answer: Some(engine_answer),
        delete: Some(engine_delete),
        copy_offer: Some(engine_copy_offer),
        copy_answer: Some(engine_copy_answer),
        copy_delete: Some(engine_copy_delete),
        copy_serialize: Some(engine_copy_serialize),
        copy_deserialize: Some(engine_copy_deserialize),
        copy_release: Some(engine_copy_release),
    };
    // SAFETY: rtp_relay copies `funcs` and fills the static hooks; the name is a static C
    // string; this runs once, in the main process, before fork.
    let r = unsafe { register(c"rtpproxy".as_ptr(), &mut funcs, HOOKS.0.get()) };
    if r < 0 {
        // The C module ignores this too; rtp_relay has logged why.
        tracing::warn!("rtp_relay refused the engine rtpproxy ({r})");
    } else {
        tracing::debug!("registered as the rtp_relay engine rtpproxy");
    }
    Ok(())
}

/// The shared generated-SDP port counter (allocated in `mod_init`).
static PORT_COUNTER: AtomicPtr<AtomicU32> = AtomicPtr::new(std::ptr::null_mut());

/// Allocates the shared port counter, starting at `generated_sdp_port_min`.
pub(crate) fn mod_init(config: &ModuleConfig) -> Result<(), HostError> {
    let p = mem::shm_malloc_zeroed(std::mem::size_of::<AtomicU32>()).cast::<AtomicU32>();
    if p.is_null() {
        return Err(HostError::OutOfShm("generated-SDP port counter"));
    }
    // SAFETY: `p` is a fresh, zeroed, suitably aligned shm block; nobody else sees it yet.
    unsafe { (*p).store(u32::from(config.gen_port_min), Ordering::Relaxed) };
    PORT_COUNTER.store(p, Ordering::Release);
    Ok(())
}

fn alloc_port(st: &ModuleState) -> u16 {
    let (min, max) = (st.config.gen_port_min, st.config.gen_port_max);
    let p = PORT_COUNTER.load(Ordering::Acquire);
    if p.is_null() {
        return min;
    }
    // SAFETY: the counter is a shm block allocated before fork and never freed.
    let counter = unsafe { &*p };
    let step = |prev: u32| Some(u32::from(cm::next_generated_port(prev as u16, min, max)));
    let prev = counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, step)
        .unwrap_or(u32::from(min));
    cm::next_generated_port(prev as u16, min, max)
}

/// Call-ID, tags and flags of one callback (the C module's `rtpproxy_fill_call_args`).
struct CallArgs {
    call_id: Vec<u8>,
    from_tag: Vec<u8>,
    to_tag: Vec<u8>,
    flags: Vec<u8>,
}

/// Builds the call arguments: ids from the session, else from its message; flags are the
/// concatenation of `parts`; the Call-ID gets `-<branch>` for a branch session.
///
/// # Safety
/// `sess` must be the live session of the callback; `parts` NULL or valid `str*`.
unsafe fn call_args(
    sess: &RelaySession,
    parts: &[*mut host_str],
    require_from: bool,
) -> Result<CallArgs, Error> {
    // SAFETY: the session's message is NULL or live for the callback.
    let m = unsafe { Msg::from_ptr(sess.msg) };
    // SAFETY: the session's strings are NULL or valid for the callback.
    let (callid, from, to) = unsafe {
        (
            opt_str(sess.callid),
            opt_str(sess.from_tag),
            opt_str(sess.to_tag),
        )
    };
    let from_tag = match from {
        Some(f) => f,
        None => m
            .as_ref()
            .and_then(Msg::ftag)
            .map(<[u8]>::to_vec)
            .unwrap_or_default(),
    };
    if require_from && from_tag.is_empty() {
        return Err(HostError::SessionNoFromTag.into());
    }
    let to_tag = match to {
        Some(t) => t,
        None => m
            .as_ref()
            .and_then(Msg::ttag)
            .map(<[u8]>::to_vec)
            .unwrap_or_default(),
    };
    let mut call_id = match callid {
        Some(c) => c,
        None => m
            .as_ref()
            .and_then(Msg::call_id)
            .map(<[u8]>::to_vec)
            .unwrap_or_default(),
    };
    if call_id.is_empty() {
        return Err(HostError::SessionNoCallId.into());
    }
    if sess.branch != -1 {
        call_id.extend_from_slice(format!("-{}", sess.branch).as_bytes());
    }
    let mut flags = Vec::new();
    for &p in parts {
        // SAFETY: per the contract.
        if let Some(v) = unsafe { opt_str(p) } {
            flags.extend_from_slice(&v);
        }
    }
    Ok(CallArgs {
        call_id,
        from_tag,
        to_tag,
        flags,
    })
}

fn state() -> Result<&'static ModuleState, Error> {
    state::get().ok_or_else(|| Error::from(HostError::NotInitialized))
}

fn set_or_default(st: &ModuleState, id: c_int) -> Result<&'static SetView, Error> {
    let wanted = (id != -1).then_some(id as SetId);
    if let Some(set) = wanted.and_then(|id| control::find_set(st, Some(id))) {
        return Ok(set);
    }
    if let Some(id) = wanted {
        tracing::warn!(
            "RTPProxy set {id} not available, using the default set {}",
            st.config.default_set
        );
    }
    control::find_set(st, None).ok_or(Error::from(HostError::NoDefaultSet(st.config.default_set)))
}

/// The session's node (`server.node`) when rtp_relay knows one.
fn server_node(server: &RelayServer) -> Option<Vec<u8>> {
    // SAFETY: `node` is an shm string owned by rtp_relay (or empty), valid for the callback.
    Some(unsafe { cstr::str_bytes(&server.node) }.to_vec()).filter(|n| !n.is_empty())
}

/// Replaces `server.node` with `url` (shm, NUL-terminated, as rtp_relay frees it).
fn store_server_node(server: &mut RelayServer, url: &str) {
    if server_node(server).as_deref() == Some(url.as_bytes()) {
        return;
    }
    let p = mem::shm_malloc_zeroed(url.len() + 1).cast::<c_char>();
    if p.is_null() {
        tracing::error!("out of shared memory for the rtp_relay node name");
        return;
    }
    // SAFETY: `p` has room for the bytes and the NUL (zeroed); the old string, if any, is an
    // shm block rtp_relay handed over to us for replacement (the C module frees it the same
    // way).
    unsafe {
        std::ptr::copy_nonoverlapping(url.as_ptr().cast::<c_char>(), p, url.len());
        if !server.node.s.is_null() {
            mem::shm_free(server.node.s.cast());
        }
    }
    server.node = host_str {
        s: p,
        len: cstr::clamp_len(url.len()),
    };
}

/// Offer or answer for rtp_relay (spec §12).
///
/// # Safety
/// Pointers as rtp_relay passes them to `offer`/`answer`.
unsafe fn offer_answer(
    sess: *mut RelaySession,
    server: *mut RelayServer,
    body_out: *mut host_str,
    ip: *mut host_str,
    parts: [*mut host_str; 6],
    direction: Direction,
) -> Result<i32, Error> {
    let st = state()?;
    if sess.is_null() || server.is_null() {
        return Err(HostError::NoSession.into());
    }
    // SAFETY: rtp_relay passes live session and server structures for the callback.
    let (sess, server) = unsafe { (&*sess, &mut *server) };
    // SAFETY: per the contract.
    let a = unsafe { call_args(sess, &parts, true) }?;
    // SAFETY: per the contract.
    let ip = unsafe { opt_str(ip) }
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(&v).into_owned());
    // SAFETY: the session's message is NULL or live for the callback.
    let m = unsafe { Msg::from_ptr(sess.msg) };
    let known = server_node(server);
    let (set, preset) = match direction {
        Direction::Offer => {
            let set = set_or_default(st, server.set)?;
            if known.is_none() {
                server.set = set.id as c_int;
            }
            (set, known)
        }
        Direction::Answer => {
            let set = control::find_set(st, Some(server.set as SetId))
                .ok_or(HostError::SetUnavailable(server.set))?;
            if let Some(url) = &known {
                let usable = node_by_url(st, url, Some(set.id)).is_some_and(|n| is_enabled(st, n));
                if !usable {
                    return Err(HostError::NodeUnusable {
                        node: String::from_utf8_lossy(url).into_owned(),
                        op: "answer",
                    }
                    .into());
                }
            }
            (set, known)
        }
    };
    let preset = preset.map(|v| String::from_utf8_lossy(&v).into_owned());
    tracing::debug!(
        "rtp_relay {direction:?}: call-id {} tags {}/{} set {} node {preset:?} flags {}",
        String::from_utf8_lossy(&a.call_id),
        String::from_utf8_lossy(&a.from_tag),
        String::from_utf8_lossy(&a.to_tag),
        set.id,
        String::from_utf8_lossy(&a.flags)
    );
    let mut req = OfferRequest::new(&a.flags, direction);
    // rtp_relay concatenates several flag strings; the C engine does not cut them.
    req.script_limits = false;
    req.ip = ip.as_deref();
    req.set = Some(set.id);
    req.ids = Some((a.call_id.clone(), a.from_tag.clone(), a.to_tag.clone()));
    req.node = preset.as_deref();

    // SAFETY: the session's body is NULL or valid for the callback.
    let given = unsafe { opt_str(sess.body) };
    let out = if body_out.is_null() {
        // Message mode: rewrite the message itself.
        let m = m.ok_or(HostError::NoMessageNoBody)?;
        match (given, sess.body) {
            (Some(body), p) if !p.is_null() => {
                // SAFETY: `p` is a valid `str*` (checked above by `opt_str`).
                let start = unsafe { (*p).s } as usize;
                let (_, buf) = m.identity();
                if start < buf || start + body.len() > buf + m.len() {
                    return Err(HostError::BodyOutsideMessage.into());
                }
                let out = run_offer_answer(Some(&m), &req, SdpSource::Body(body.clone()))?;
                if let Some(new_body) = &out.body {
                    if new_body != &body {
                        m.splice(start - buf, body.len(), new_body)?;
                    }
                }
                out
            }
            _ => run_offer_answer(Some(&m), &req, SdpSource::Message)?,
        }
    } else {
        let body = match given {
            Some(b) => b,
            None => m
                .as_ref()
                .and_then(|m| match m.sdp_parts() {
                    Bodies::Sdp(mut parts) => Some(parts.swap_remove(0).bytes),
                    _ => None,
                })
                .ok_or(HostError::NoSdp)?,
        };
        let out = run_offer_answer(m.as_ref(), &req, SdpSource::Body(body))?;
        let new_body = out.body.as_deref().unwrap_or_default();
        let p = mem::pkg_copy(new_body).ok_or_else(|| Error::from(HostError::OutOfPkgMemory))?;
        // SAFETY: `body_out` is rtp_relay's writable `str`; it takes ownership of the pkg copy.
        unsafe {
            *body_out = host_str {
                s: p,
                len: cstr::clamp_len(new_body.len()),
            }
        };
        out
    };
    if direction == Direction::Offer {
        if let Some(url) = &out.node_url {
            store_server_node(server, url);
        }
    }
    Ok(1)
}

unsafe extern "C" fn engine_offer(
    sess: *mut RelaySession,
    server: *mut RelayServer,
    body: *mut host_str,
    ip: *mut host_str,
    type_: *mut host_str,
    in_iface: *mut host_str,
    out_iface: *mut host_str,
    global_flags: *mut host_str,
    flags: *mut host_str,
    extra_flags: *mut host_str,
) -> c_int {
    guard::call("rtp_relay offer", -1, || {
        let parts = [type_, in_iface, out_iface, global_flags, flags, extra_flags];
        // SAFETY: the arguments are rtp_relay's, valid for the callback.
        let r = unsafe { offer_answer(sess, server, body, ip, parts, Direction::Offer) };
        guard::script_code("rtp_relay offer", r)
    })
}

unsafe extern "C" fn engine_answer(
    sess: *mut RelaySession,
    server: *mut RelayServer,
    body: *mut host_str,
    ip: *mut host_str,
    type_: *mut host_str,
    in_iface: *mut host_str,
    out_iface: *mut host_str,
    global_flags: *mut host_str,
    flags: *mut host_str,
    extra_flags: *mut host_str,
) -> c_int {
    guard::call("rtp_relay answer", -1, || {
        let parts = [type_, in_iface, out_iface, global_flags, flags, extra_flags];
        // SAFETY: the arguments are rtp_relay's, valid for the callback.
        let r = unsafe { offer_answer(sess, server, body, ip, parts, Direction::Answer) };
        guard::script_code("rtp_relay answer", r)
    })
}

/// The session's node for the copy commands: `server.node` when usable, else the hash choice
/// in the session's set.
fn copy_node(
    st: &ModuleState,
    server: &RelayServer,
    call_id: &[u8],
) -> Result<&'static NodeView, Error> {
    let url = server_node(server).ok_or(HostError::NoSessionNode("use"))?;
    let set = set_or_default(st, server.set)?;
    if let Some(n) = node_by_url(st, &url, Some(set.id)).filter(|n| is_enabled(st, n)) {
        return Ok(n);
    }
    Ok(control::node_for_call(st, set, call_id, None)?)
}

unsafe extern "C" fn engine_delete(
    sess: *mut RelaySession,
    server: *mut RelayServer,
    flags: *mut host_str,
    extra: *mut host_str,
) -> c_int {
    guard::call("rtp_relay delete", -1, || {
        let r = (|| {
            let st = state()?;
            if sess.is_null() || server.is_null() {
                return Err(HostError::NoSession.into());
            }
            // SAFETY: rtp_relay passes live structures for the callback.
            let (sess, server) = unsafe { (&*sess, &*server) };
            // SAFETY: as above.
            let a = unsafe { call_args(sess, &[flags, extra], false) }?;
            let url = server_node(server).ok_or(HostError::NoSessionNode("delete on"))?;
            let set = control::find_set(st, Some(server.set as SetId))
                .ok_or(HostError::SetUnavailable(server.set))?;
            let node = node_by_url(st, &url, Some(set.id))
                .filter(|n| is_enabled(st, n))
                .ok_or_else(|| HostError::NodeUnusable {
                    node: String::from_utf8_lossy(&url).into_owned(),
                    op: "delete",
                })?;
            // rtp_relay gives no From-tag when the dialog ends (its ctx only passes the
            // To-tag); without it RTPProxy finds no session (E50) and the C engine leaves the
            // session behind. Take the caller's tag from the dialog being terminated.
            let from_tag = if a.from_tag.is_empty() {
                // SAFETY: the session's Call-ID is NULL or a valid `str*`.
                let base = unsafe { opt_str(sess.callid) }.unwrap_or_default();
                dialog_caller_tag(&base).unwrap_or_default()
            } else {
                a.from_tag.clone()
            };
            let cmd = if from_tag.is_empty() {
                // Nothing better than the C engine's command (only the To-tag).
                Command::delete(&a.call_id, &a.to_tag, None)?
            } else {
                Command::delete(&a.call_id, &from_tag, Some(&a.to_tag))?
            };
            tracing::debug!("sending to {}: {cmd}", node.spec.url);
            let reply =
                control::send_to(st, node, &a.call_id, &cmd).ok_or(HostError::NoReplyTo("D"))?;
            if let Ok(Reply::Error(code)) = Reply::parse(&reply) {
                tracing::warn!(
                    "rtp_relay delete: RTPProxy {} answered E{code}",
                    node.spec.url
                );
            }
            Ok(1)
        })();
        guard::script_code("rtp_relay delete", r)
    })
}

/// The caller's tag of the dialog being processed, when its Call-ID is `call_id`.
fn dialog_caller_tag(call_id: &[u8]) -> Option<Vec<u8>> {
    crate::host::bind::dlg_api::binds()?
        .with_current(|dlg| {
            (call_id.is_empty() || dlg.call_id() == call_id)
                .then(|| dlg.caller_tag().map(<[u8]>::to_vec))
                .flatten()
        })
        .flatten()
}

// ---- copy contexts in shm -------------------------------------------------------------------

/// Header of a copy context block: used and available bytes; the bytes follow.
#[repr(C)]
struct ShmContext {
    len: u32,
    cap: u32,
}

const HEADER: usize = std::mem::size_of::<ShmContext>();

/// Allocates a block for `ctx` and writes it.
fn ctx_new(ctx: &CopyContext) -> Result<*mut c_void, MediaError> {
    let cap = CopyContext::max_bytes(ctx.media_ip.len());
    let bytes = ctx.to_bytes();
    if bytes.len() > cap {
        return Err(MediaError::Context("context larger than its block".into()));
    }
    let p = mem::shm_malloc_zeroed(HEADER + cap);
    if p.is_null() {
        return Err(MediaError::Context("out of shared memory".into()));
    }
    // SAFETY: `p` is a fresh block of HEADER + cap bytes, aligned for the header.
    unsafe {
        let h = p.cast::<ShmContext>();
        (*h).cap = cap as u32;
        (*h).len = bytes.len() as u32;
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.cast::<u8>().add(HEADER), bytes.len());
    }
    Ok(p)
}

/// Reads the context in block `p`.
///
/// # Safety
/// `p` must be NULL or a block made by [`ctx_new`] and not yet released.
unsafe fn ctx_load(p: *mut c_void) -> Result<CopyContext, MediaError> {
    if p.is_null() {
        return Err(MediaError::Context("no copy context".into()));
    }
    // SAFETY: per the contract, the header and `len` bytes after it are ours.
    let bytes = unsafe {
        let h = &*p.cast::<ShmContext>();
        std::slice::from_raw_parts(p.cast::<u8>().add(HEADER), h.len.min(h.cap) as usize)
    };
    CopyContext::from_bytes(bytes)
}

/// Writes `ctx` back into block `p`.
///
/// # Safety
/// As [`ctx_load`], `p` not NULL.
unsafe fn ctx_store(p: *mut c_void, ctx: &CopyContext) -> Result<(), MediaError> {
    let bytes = ctx.to_bytes();
    // SAFETY: per the contract; the write stays inside the block's capacity.
    unsafe {
        let h = p.cast::<ShmContext>();
        if bytes.len() > (*h).cap as usize {
            return Err(MediaError::Context("context outgrew its block".into()));
        }
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.cast::<u8>().add(HEADER), bytes.len());
        (*h).len = bytes.len() as u32;
    }
    Ok(())
}

/// The current SDP of one leg, through rtp_relay's `get_sdp` hook.
///
/// # Safety
/// `sess` must be the live session of the callback.
unsafe fn leg_sdp(sess: *mut RelaySession, leg: Leg) -> Option<Vec<u8>> {
    let get = get_sdp_hook()?;
    // SAFETY: rtp_relay's hook with the session it gave us; the result is NULL or a `str*`
    // valid for the callback, copied at once.
    unsafe { opt_str(get(sess, leg.number())) }
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `copy_offer` (spec §6.1).
///
/// # Safety
/// Pointers as rtp_relay passes them.
#[allow(clippy::too_many_arguments)]
unsafe fn copy_offer(
    sess: *mut RelaySession,
    ctx_p: *mut *mut c_void,
    flags: *mut host_str,
    copy: c_uint,
    streams: c_uint,
    ret_body: *mut host_str,
    map: *mut RelayStreams,
) -> Result<i32, Error> {
    let st = state()?;
    if ctx_p.is_null() || ret_body.is_null() {
        return Err(HostError::NoCopyContext.into());
    }
    // SAFETY: `ctx_p` is rtp_relay's context slot.
    let existing = unsafe { *ctx_p };
    let mut ctx = if existing.is_null() {
        // SAFETY: `flags` is NULL or a valid `str*`.
        let ip = unsafe { opt_str(flags) }
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| st.config.gen_media_ip.as_bytes().to_vec());
        CopyContext::new(now_seconds(), &ip, copy)
    } else {
        // SAFETY: a context we made before.
        unsafe { ctx_load(existing) }?
    };
    // SAFETY: the session of the callback.
    let (caller, callee) = unsafe {
        (
            if copy & copy_flags::LEG_CALLER != 0 {
                leg_sdp(sess, Leg::Caller)
            } else {
                None
            },
            if copy & copy_flags::LEG_CALLEE != 0 {
                leg_sdp(sess, Leg::Callee)
            } else {
                None
            },
        )
    };
    let body = ctx.offer(
        copy,
        streams,
        caller.as_deref(),
        callee.as_deref(),
        &mut || alloc_port(st),
    )?;
    if existing.is_null() {
        let p = ctx_new(&ctx)?;
        // SAFETY: rtp_relay's context slot; it now owns the block (freed by copy_release).
        unsafe { *ctx_p = p };
    } else {
        // SAFETY: a context we made before.
        unsafe { ctx_store(existing, &ctx) }?;
    }
    if !map.is_null() {
        let entries = ctx.stream_map();
        // SAFETY: `map` is rtp_relay's `struct rtp_relay_streams`.
        let m = unsafe { &mut *map };
        m.count = entries.len() as c_int;
        for (slot, e) in m.streams.iter_mut().zip(&entries) {
            *slot = RelayStream {
                leg: e.leg.number(),
                medianum: e.medianum as c_int,
                label: e.label as c_int,
            };
        }
    }
    let p = mem::pkg_copy(&body).ok_or_else(|| Error::from(HostError::OutOfPkgMemory))?;
    // SAFETY: rtp_relay's writable `str`; it takes ownership of the pkg copy.
    unsafe {
        *ret_body = host_str {
            s: p,
            len: cstr::clamp_len(body.len()),
        }
    };
    Ok(0)
}

unsafe extern "C" fn engine_copy_offer(
    sess: *mut RelaySession,
    _server: *mut RelayServer,
    ctx: *mut *mut c_void,
    flags: *mut host_str,
    copy: c_uint,
    streams: c_uint,
    ret_body: *mut host_str,
    map: *mut RelayStreams,
) -> c_int {
    guard::call("rtp_relay copy_offer", -1, || {
        // SAFETY: rtp_relay's arguments, valid for the callback.
        match unsafe { copy_offer(sess, ctx, flags, copy, streams, ret_body, map) } {
            Ok(n) => n,
            Err(e) => {
                tracing::error!("rtp_relay copy_offer: {e}");
                -1
            }
        }
    })
}

/// Sends the commands of a copy plan and records the results; returns how many succeeded.
fn run_actions(
    st: &ModuleState,
    node: &NodeView,
    a: &CallArgs,
    ctx: &mut CopyContext,
    actions: &[CopyAction],
) -> usize {
    let mut ok = 0;
    for action in actions {
        let Some(s) = ctx.streams.get(action.stream()).copied() else {
            continue;
        };
        let tags = s.leg.tags(&a.from_tag, &a.to_tag);
        let stream = s.medianum + 1;
        let r = match action {
            CopyAction::Start { destination, .. } => {
                send_copy(st, node, b"", &a.call_id, destination, &tags, stream)
            }
            CopyAction::Stop { .. } => send_stop_copy(st, node, &a.call_id, &tags, stream),
        };
        if let Err(e) = &r {
            tracing::warn!("rtp_relay copy: {e}");
        }
        ctx.record_result(action, r.is_ok());
        if r.is_ok()
            && !matches!(
                action,
                CopyAction::Stop {
                    deactivate: true,
                    ..
                }
            )
        {
            ok += 1;
        }
    }
    ok
}

unsafe extern "C" fn engine_copy_answer(
    sess: *mut RelaySession,
    server: *mut RelayServer,
    ctx_p: *mut c_void,
    flags: *mut host_str,
    body: *mut host_str,
) -> c_int {
    guard::call("rtp_relay copy_answer", -1, || {
        let r = (|| {
            let st = state()?;
            if sess.is_null() || server.is_null() {
                return Err(HostError::NoSession.into());
            }
            // SAFETY: rtp_relay passes live structures for the callback.
            let (s, server) = unsafe { (&*sess, &*server) };
            // SAFETY: as above.
            let a = unsafe { call_args(s, &[flags], true) }?;
            let node = copy_node(st, server, &a.call_id)?;
            // SAFETY: `body` is NULL or a valid `str*`.
            let body = unsafe { opt_str(body) }.ok_or(HostError::NoAnswerBody)?;
            // SAFETY: a context we made.
            let mut ctx = unsafe { ctx_load(ctx_p) }?;
            let plan = ctx.answer(&body)?;
            let ok = run_actions(st, node, &a, &mut ctx, &plan.actions);
            // SAFETY: a context we made.
            unsafe { ctx_store(ctx_p, &ctx) }?;
            if ok + plan.unchanged > 0 {
                Ok(1)
            } else {
                Err(HostError::NothingCopied.into())
            }
        })();
        guard::script_code("rtp_relay copy_answer", r)
    })
}

unsafe extern "C" fn engine_copy_delete(
    sess: *mut RelaySession,
    server: *mut RelayServer,
    ctx_p: *mut c_void,
    flags: *mut host_str,
) -> c_int {
    guard::call("rtp_relay copy_delete", -1, || {
        let r = (|| {
            let st = state()?;
            if sess.is_null() || server.is_null() {
                return Err(HostError::NoSession.into());
            }
            // SAFETY: rtp_relay passes live structures for the callback.
            let (s, server) = unsafe { (&*sess, &*server) };
            // SAFETY: as above.
            let a = unsafe { call_args(s, &[flags], true) }?;
            let node = copy_node(st, server, &a.call_id)?;
            // SAFETY: a context we made.
            let mut ctx = unsafe { ctx_load(ctx_p) }?;
            let (actions, idle) = ctx.delete();
            let ok = run_actions(st, node, &a, &mut ctx, &actions);
            // SAFETY: a context we made.
            unsafe { ctx_store(ctx_p, &ctx) }?;
            if ok + idle > 0 {
                Ok(1)
            } else {
                Err(HostError::NothingStopped.into())
            }
        })();
        guard::script_code("rtp_relay copy_delete", r)
    })
}

/// `bin_push_*` on an OpenSIPS `bin_packet_t`.
struct BinWriter(*mut c_void);

impl CopyWriter for BinWriter {
    fn push_str(&mut self, s: &[u8]) -> bool {
        let v = cstr::borrowed_str(s);
        // SAFETY: `self.0` is the live packet of the callback; the core copies the string.
        unsafe { (api::api().bin_push_str)(self.0, &v) >= 0 }
    }

    fn push_int(&mut self, v: u32) -> bool {
        // SAFETY: as above.
        unsafe { (api::api().bin_push_int)(self.0, v as c_int) >= 0 }
    }
}

/// `bin_pop_*` on an OpenSIPS `bin_packet_t`.
struct BinReader(*mut c_void);

impl CopyReader for BinReader {
    fn pop_str(&mut self) -> Option<Vec<u8>> {
        let mut s = cstr::borrowed_str(b"");
        // SAFETY: `self.0` is the live packet; the popped string points into it and is copied.
        unsafe {
            if (api::api().bin_pop_str)(self.0, &mut s) < 0 {
                return None;
            }
            Some(cstr::str_bytes(&s).to_vec())
        }
    }

    fn pop_int(&mut self) -> Option<u32> {
        let mut v: u32 = 0;
        // SAFETY: as above; the core writes an `unsigned int`.
        unsafe { ((api::api().bin_pop_int)(self.0, (&raw mut v).cast()) >= 0).then_some(v) }
    }
}

unsafe extern "C" fn engine_copy_serialize(ctx_p: *mut c_void, packet: *mut c_void) -> c_int {
    guard::call("rtp_relay copy_serialize", -1, || {
        // SAFETY: a context we made.
        let r = unsafe { ctx_load(ctx_p) }.and_then(|ctx| ctx.serialize(&mut BinWriter(packet)));
        match r {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!("rtp_relay copy_serialize: {e}");
                -1
            }
        }
    })
}

/// Rebuilds a context from a replicated dialog. rtp_relay 3.6.8 frees the copy context when
/// this returns 0 (its check is inverted; the C engine always returns -1), so success is 1
/// and failure 0 (the context is then freed, which is what a failure should do).
unsafe extern "C" fn engine_copy_deserialize(
    ctx_p: *mut *mut c_void,
    packet: *mut c_void,
) -> c_int {
    guard::call("rtp_relay copy_deserialize", 0, || {
        if ctx_p.is_null() {
            return 0;
        }
        let r = CopyContext::deserialize(&mut BinReader(packet)).and_then(|c| ctx_new(&c));
        match r {
            Ok(p) => {
                // SAFETY: rtp_relay's context slot.
                unsafe { *ctx_p = p };
                1
            }
            Err(e) => {
                tracing::error!("rtp_relay copy_deserialize: {e}");
                0
            }
        }
    })
}

unsafe extern "C" fn engine_copy_release(ctx_p: *mut *mut c_void) {
    guard::call("rtp_relay copy_release", (), || {
        if ctx_p.is_null() {
            return;
        }
        // SAFETY: rtp_relay's context slot: NULL or a block we made, released once.
        unsafe {
            let p = *ctx_p;
            if !p.is_null() {
                mem::shm_free(p);
            }
            *ctx_p = std::ptr::null_mut();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn layouts_match_rtp_relay_3_6_8() {
        assert_eq!(size_of::<RelaySession>(), 48);
        assert_eq!(offset_of!(RelaySession, branch), 8);
        assert_eq!(offset_of!(RelaySession, callid), 16);
        assert_eq!(offset_of!(RelaySession, body), 40);
        assert_eq!(size_of::<RelayServer>(), 24);
        assert_eq!(offset_of!(RelayServer, node), 8);
        assert_eq!(size_of::<RelayFuncs>(), 72);
        assert_eq!(offset_of!(RelayFuncs, copy_offer), 24);
        assert_eq!(offset_of!(RelayFuncs, copy_release), 64);
        assert_eq!(size_of::<RelayHooks>(), 16);
        assert_eq!(size_of::<RelayStream>(), 12);
        assert_eq!(size_of::<RelayStreams>(), 4 + 12 * 32);
        assert_eq!(HEADER, 8);
    }
}
