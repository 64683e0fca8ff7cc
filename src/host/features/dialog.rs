//! `rtpproxy_engage` and the dialog integration (spec §5), the dialog side of the `n`/`d`
//! flags (§3.5.1), and the notification listener process (§8).
//!
//! # Engage
//!
//! `rtpproxy_engage()` on an initial INVITE creates the dialog, runs the offer when the INVITE
//! has SDP (else marks `late_negotiation`), stores its parameters — in the dialog values
//! `rtpproxy_1` (flags), `rtpproxy_2` (ip) and `rtpproxy_3` (set id, 4 raw native-endian
//! bytes), or in branch AVPs `$bavp(5589965/6/7)` from a branch route — exactly as the C
//! module does, and registers, once per message:
//! - a tm `RESPONSE_FWDED` callback on the INVITE transaction (replies to the INVITE),
//! - a dialog `REQ_WITHIN|RESPONSE_WITHIN` callback (sequential requests and their replies),
//! - a dialog `FAILED|TERMINATED|EXPIRED` callback that deletes the sessions (`D`),
//! - a dialog `PROCESS_VARS` callback (values replicated from another instance).
//!
//! It also stores `rtpproxy_node`, the URL of the node holding the call ([`super::dlg_node`]),
//! and every later command of the call goes there.
//!
//! # Restored and replicated dialogs
//!
//! Per-dialog callbacks live only in the memory of the instance that registered them. A global
//! `DLGCB_LOADED` callback registers them again for every engaged dialog the dialog module
//! restores from its database or receives from another instance of its cluster, so the call's
//! re-INVITEs, replies and teardown are handled there as on the instance that created it.
//!
//! # Notification process
//!
//! "RTPP notification receiver" runs [`crate::io::listener`] on a current-thread tokio
//! runtime created inside that process. The process is declared with `PROC_FLAG_HAS_IPC`, so
//! it must serve its OpenSIPS IPC pipe: instead of the core reactor (`reactor_proc_loop`,
//! which would leave no room for the tokio reactor), the listener watches the pipe
//! (`pt[process_no].ipc_pipe[0]`, located through the process table and checked against our
//! pid) and this module runs every pending job with the core's `ipc_handle_job` whenever it
//! is readable. RPCs sent to the process (script reloads, MI-driven jobs) are therefore served
//! between notifications, as in the C module's reactor.
//!
//! # Deliberate differences from the C module
//!
//! - Without the dialog module, `rtpproxy_engage` returns -1 with an error (C calls a NULL
//!   function pointer).
//! - An empty flags string is accepted in a branch route (C refuses it).
//! - An UPDATE without SDP does not mark a late negotiation (C does, after which the next SDP
//!   exchange is handled as an offer in the wrong place); only an INVITE without SDP does.
//! - The teardown `D` goes to the node stored in the dialog (C: Call-ID hash in the set).
//! - `late_negotiation` set from the callbacks is a string value (C: value-less); see
//!   `engage_vars_cb`.
//! - Engaged dialogs restored from the database or replicated keep working (C: not at all).
//! - The sessions are also deleted when the dialog expires (`DLGCB_EXPIRED`, dialog lifetime
//!   ran out without BYEs); C leaves them to the relay's own timeout.
//! - The listener binds to the configured address with a few retries; if it still cannot,
//!   the process ends, which stops OpenSIPS (as C does when its process function returns).
//! - TCP peers are checked against the nodes of the current node list (re-read after
//!   `rtpproxy_reload`); connections accepted before a reload are not closed.

use std::collections::HashSet;
use std::ffi::{c_int, c_void};
use std::net::IpAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::core::config::{ModuleConfig, SetId, Transport};
use crate::core::notify::{DialogId, DtmfEvent, Notification};
use crate::core::offer::{truncate_script_param, Direction, Flags};
use crate::core::proto::command::Command;
use crate::error::{HostError, LifecycleError};
use crate::io::listener::{self, ListenAddr, ListenerOptions, ListenerStats, NotifySink, Peer};
use crate::Error;

use super::dlg_node;
use super::functions::run_offer_answer;
use super::request::{OfferRequest, SdpSource};
use crate::host::bind::dlg_api::{
    self, Dlg, DlgCbParams, DlgCell, DlgValue, DLGCB_EXPIRED, DLGCB_FAILED, DLGCB_LOADED,
    DLGCB_PROCESS_VARS, DLGCB_REQ_WITHIN, DLGCB_RESPONSE_WITHIN, DLGCB_TERMINATED,
};
use crate::host::bind::msg::{self, Bodies, Msg, MsgKind};
use crate::host::bind::params::Var;
use crate::host::bind::tm_api::{self, Cell, TmcbParams, TMCB_RESPONSE_FWDED};
use crate::host::ffi::api::api;
use crate::host::ffi::cstr::borrowed_str;
use crate::host::ffi::guard;
use crate::host::ffi::sys::{self, host_str, pv_spec_t, pv_value_t, sip_msg};
use crate::host::runtime::control;
use crate::host::runtime::state::{self, ModuleState};

/// Dialog value names (spec §5.3).
const VAL_FLAGS: &[u8] = b"rtpproxy_1";
const VAL_IP: &[u8] = b"rtpproxy_2";
const VAL_SET: &[u8] = b"rtpproxy_3";
const VAL_LATE: &[u8] = b"late_negotiation";
/// The token of the last late negotiation that ended (see [`late_token`]).
const VAL_LATE_DONE: &[u8] = b"late_negotiation_done";

/// The value a late negotiation is marked with: `late_negotiation:<time>.<pid>.<n>`, unique per
/// negotiation, so that an instance receiving replicated values out of order (the dialog
/// module's replication messages may be applied by two processes at once, and a full update
/// built before the ACK re-adds the value after its deletion) can tell a stale mark from a new
/// negotiation: a mark equal to `late_negotiation_done` is over.
fn late_token() -> Vec<u8> {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("late_negotiation:{secs}.{}.{n}", control::pid()).into_bytes()
}

/// Whether a late negotiation is under way: a mark that is not the ended one (a value-less or
/// integer mark, as the C module stores it, counts as under way).
fn late_active(d: &dlg_api::DlgBinds, dlg: &Dlg<'_>) -> bool {
    match d.fetch(dlg, VAL_LATE) {
        None => false,
        Some(DlgValue::Str(t)) => d.fetch(dlg, VAL_LATE_DONE) != Some(DlgValue::Str(t)),
        Some(_) => true,
    }
}

/// Ends the late negotiation: its mark is remembered as ended, then deleted.
fn end_late(d: &dlg_api::DlgBinds, dlg: &Dlg<'_>) {
    if let Some(DlgValue::Str(t)) = d.fetch(dlg, VAL_LATE) {
        d.store_str(dlg, VAL_LATE_DONE, &t);
    }
    d.delete(dlg, VAL_LATE);
}

/// Branch AVPs holding the parameters of an engage made in a branch route (spec §5.1).
const BAVP_NAMES: [&[u8]; 3] = [b"$bavp(5589965)", b"$bavp(5589966)", b"$bavp(5589967)"];
/// `pv_type` of `$bavp` (tm's extra PV: 903 + PVT_EXTRA; PVT_EXTRA is 117 in 3.6, 118 in 4.0).
const PVT_BAVP: c_int = 903 + sys::probed::PVT_EXTRA as c_int;

/// Reason recorded when a relay reports a media timeout (spec §8.3).
const TIMEOUT_REASON: &[u8] = b"RTPProxy Timeout";

/// The parsed `$bavp` specs (pkg/heap memory of the main process, inherited by fork).
struct Bavps([*mut pv_spec_t; 3]);
// SAFETY: the specs are written once in `mod_init` and only read afterwards, by the process
// that owns its copy.
unsafe impl Send for Bavps {}
// SAFETY: as above.
unsafe impl Sync for Bavps {}

static BAVPS: OnceLock<Option<Bavps>> = OnceLock::new();

/// Pre-fork set-up: binds the tm and dialog APIs and parses the branch AVP specs.
pub(crate) fn mod_init(config: &ModuleConfig) -> Result<(), LifecycleError> {
    if !tm_api::load() {
        tracing::debug!("tm API not found: rtpproxy_engage is not available");
    }
    if !dlg_api::load() {
        if config.notify.is_some() {
            return Err(LifecycleError::NotifyNeedsDialog);
        }
        tracing::debug!("dialog module not loaded: rtpproxy_engage and flag n are not available");
    }
    BAVPS.get_or_init(parse_bavps);
    Ok(())
}

fn parse_bavps() -> Option<Bavps> {
    let mut specs = [std::ptr::null_mut::<pv_spec_t>(); 3];
    for (spec, name) in specs.iter_mut().zip(BAVP_NAMES) {
        // SAFETY: `pv_spec_t` is plain data, all-zero is its empty state; the box is leaked
        // so that the spec stays valid for the life of the process (and its children).
        let p = Box::into_raw(Box::new(unsafe { std::mem::zeroed::<pv_spec_t>() }));
        let text = borrowed_str(name);
        // SAFETY: `pv_parse_spec` reads the name and fills the spec we own.
        let ok = unsafe { !(api().pv_parse_spec)(&text, p).is_null() && (*p).type_ == PVT_BAVP };
        if !ok {
            tracing::debug!(
                "cannot parse {}: engage from a branch route is not available",
                String::from_utf8_lossy(name)
            );
            return None;
        }
        *spec = p;
    }
    Some(Bavps(specs))
}

/// Per-process set-up after fork (nothing: control clients are opened on first use).
pub(crate) fn child_init(_rank: c_int) -> Result<(), LifecycleError> {
    Ok(())
}

/// `rtpproxy_engage([flags], [ip_address], [set_id], [sock_var], [ret_var])` (spec §5.1).
pub(crate) fn engage(
    msg: Option<&Msg<'_>>,
    flags: Option<&[u8]>,
    ip: Option<&[u8]>,
    set: Option<i32>,
    sock_var: Option<Var<'_>>,
    ret_var: Option<Var<'_>>,
) -> Result<i32, Error> {
    let st = state::get().ok_or_else(|| Error::from(HostError::NotInitialized))?;
    let d = dlg_api::binds().ok_or(HostError::EngageWithoutDialog)?;
    let tm = tm_api::binds().ok_or(HostError::EngageWithoutTm)?;
    let m = msg.ok_or(HostError::NotInvite)?;
    if m.kind() != Some(MsgKind::Request) || m.method() != msg::METHOD_INVITE {
        return Err(HostError::NotInvite.into());
    }
    if m.ttag().is_some() {
        return Err(HostError::NotInitialInvite.into());
    }
    // SAFETY: `m` is the initial INVITE of this call.
    if !unsafe { d.create(m) } {
        return Err(HostError::DialogCreate.into());
    }
    let dlg = &d.current(m).ok_or(HostError::NoDialog)?;
    // Copied and truncated to 63 bytes, as the C module copies them.
    let flags = flags.map(|s| truncate_script_param(s).to_vec());
    let ip = ip.map(|s| truncate_script_param(s).to_vec());
    let ip_text = ip
        .as_deref()
        .map(|v| String::from_utf8_lossy(v).into_owned());

    if matches!(m.sdp_parts(), Bodies::Sdp(_)) {
        let mut req = OfferRequest::new(flags.as_deref().unwrap_or(b""), Direction::Offer);
        req.ip = ip_text.as_deref();
        req.set = set;
        req.dialog_id = d.did(dlg);
        let out = run_offer_answer(Some(m), &req, SdpSource::Message)?;
        if let Some(url) = &out.node_url {
            dlg_node::store_call_node(d, dlg, url);
            if let Some(v) = &sock_var {
                v.set_str(url.as_bytes());
            }
        }
        if let (Some(value), Some(v)) = (&out.ret_var, &ret_var) {
            v.set_str(value);
        }
    } else if !d.store_str(dlg, VAL_LATE, &late_token()) {
        return Err(HostError::DialogStore("late_negotiation").into());
    }

    let set_id = set.map(|id| {
        if control::find_set(st, Some(id)).is_some() {
            id
        } else {
            tracing::error!("RTPProxy set {id} no longer exists: using the default set");
            st.config.default_set
        }
    });

    // SAFETY: `route_type` is the core's current route type variable.
    let route_type = unsafe { *api().route_type };
    if route_type & sys::BRANCH_ROUTE as c_int != 0 {
        // SAFETY: `m` is the current message.
        unsafe { store_branch_params(m.as_ptr(), flags.as_deref(), ip.as_deref(), set_id)? };
    } else {
        if let Some(f) = &flags {
            if !d.store_str(dlg, VAL_FLAGS, f) {
                return Err(HostError::DialogStore("the flags").into());
            }
        }
        if let Some(ip) = &ip {
            if !d.store_str(dlg, VAL_IP, ip) {
                return Err(HostError::DialogStore("the ip address").into());
            }
        }
        if let Some(id) = set_id {
            if !d.store_str(dlg, VAL_SET, &id.to_ne_bytes()) {
                return Err(HostError::DialogStore("the set").into());
            }
        }
    }

    if m.msg_flags() & msg::FL_USE_RTPPROXY != 0 {
        tracing::debug!("rtpproxy engage callbacks already registered for this message");
        return Ok(1);
    }
    m.add_msg_flags(msg::FL_USE_RTPPROXY);
    // SAFETY: `m` is the INVITE being processed.
    if !unsafe { tm.register(m.as_ptr(), TMCB_RESPONSE_FWDED, engage_reply_cb) } {
        return Err(HostError::TmCallback.into());
    }
    register_dialog_callbacks(d, dlg)?;
    Ok(1)
}

/// The per-dialog callbacks of an engaged call: at engage, and again on every instance that
/// restores or receives the dialog (per-dialog callbacks are neither stored nor replicated).
fn register_dialog_callbacks(d: &dlg_api::DlgBinds, dlg: &Dlg<'_>) -> Result<(), Error> {
    if !d.register(
        dlg,
        DLGCB_RESPONSE_WITHIN | DLGCB_REQ_WITHIN,
        engage_dialog_cb,
    ) {
        return Err(HostError::DialogCallback("callback").into());
    }
    if !d.register(
        dlg,
        DLGCB_FAILED | DLGCB_TERMINATED | DLGCB_EXPIRED,
        engage_close_cb,
    ) {
        return Err(HostError::DialogCallback("close callback").into());
    }
    if !d.register(dlg, DLGCB_PROCESS_VARS, engage_vars_cb) {
        return Err(HostError::DialogCallback("values callback").into());
    }
    Ok(())
}

/// Engage from a branch route: the parameters go to branch AVPs until a 2xx picks a branch.
///
/// # Safety
/// `msg` must be the message of the current script function.
unsafe fn store_branch_params(
    msg: *mut sip_msg,
    flags: Option<&[u8]>,
    ip: Option<&[u8]>,
    set: Option<SetId>,
) -> Result<(), Error> {
    let Some(Some(Bavps(specs))) = BAVPS.get() else {
        return Err(HostError::NoBranchAvps.into());
    };
    for (spec, value) in specs[..2].iter().zip([flags, ip]) {
        if let Some(v) = value {
            // SAFETY: `spec` is a parsed `$bavp` spec; the value is copied by the core.
            if !unsafe { msg::set_var_str(msg, spec.cast(), v) } {
                return Err(HostError::BranchAvpStore("an engage parameter").into());
            }
        }
    }
    if let Some(id) = set {
        let text = id.to_string();
        let mut v = pv_value_t {
            rs: borrowed_str(text.as_bytes()),
            ri: id,
            flags: (sys::PV_VAL_INT | sys::PV_TYPE_INT) as c_int,
        };
        // SAFETY: as above.
        if unsafe { (api().pv_set_value)(msg, specs[2], sys::EQ_T as c_int, &mut v) } < 0 {
            return Err(HostError::BranchAvpStore("the set").into());
        }
    }
    Ok(())
}

/// What an engaged dialog's later messages are processed with.
struct EngageParams {
    flags: Vec<u8>,
    ip: Option<String>,
    set: SetId,
}

/// The set id of `rtpproxy_3`: 4 raw native-endian bytes (an integer value is accepted too).
fn dialog_set(d: &dlg_api::DlgBinds, dlg: &Dlg<'_>) -> Option<SetId> {
    match d.fetch(dlg, VAL_SET)? {
        DlgValue::Str(b) if b.len() >= 4 => Some(SetId::from_ne_bytes([b[0], b[1], b[2], b[3]])),
        DlgValue::Int(n) => Some(n),
        other => {
            tracing::warn!("unusable rtpproxy_3 dialog value {other:?}: using the default set");
            None
        }
    }
}

fn dialog_params(d: &dlg_api::DlgBinds, dlg: &Dlg<'_>, default_set: SetId) -> EngageParams {
    let text = |name| match d.fetch(dlg, name) {
        Some(DlgValue::Str(v)) => Some(v),
        _ => None,
    };
    EngageParams {
        flags: text(VAL_FLAGS).unwrap_or_default(),
        ip: text(VAL_IP).map(|v| String::from_utf8_lossy(&v).into_owned()),
        set: dialog_set(d, dlg).unwrap_or(default_set),
    }
}

/// A branch AVP's value: (string, integer) if set.
///
/// # Safety
/// `msg` must be the message being processed; `spec` a parsed `$bavp` spec.
unsafe fn bavp(msg: *mut sip_msg, spec: *mut pv_spec_t) -> Option<(Vec<u8>, Option<i32>)> {
    let mut v = pv_value_t {
        rs: host_str {
            s: std::ptr::null_mut(),
            len: 0,
        },
        ri: 0,
        flags: 0,
    };
    // SAFETY: per the contract; a string value may sit in a static buffer and is copied now.
    unsafe {
        if (api().pv_get_spec_value)(msg, spec, &mut v) < 0
            || v.flags & sys::PV_VAL_NULL as c_int != 0
        {
            return None;
        }
        let s = if v.flags & sys::PV_VAL_STR as c_int != 0 {
            crate::host::ffi::cstr::str_bytes(&v.rs).to_vec()
        } else {
            Vec::new()
        };
        let n = (v.flags & sys::PV_VAL_INT as c_int != 0).then_some(v.ri);
        Some((s, n))
    }
}

/// Branch AVPs of a reply (spec §5.2): a 2xx moves them into the dialog values and uses them,
/// a 1xx only uses them; `None` when there are none or for other replies.
fn branch_params(
    d: &dlg_api::DlgBinds,
    dlg: &Dlg<'_>,
    m: &Msg<'_>,
    default_set: SetId,
) -> Result<Option<EngageParams>, Error> {
    let Some(Some(Bavps(specs))) = BAVPS.get() else {
        return Ok(None);
    };
    if m.kind() != Some(MsgKind::Reply) {
        return Ok(None);
    }
    // SAFETY: `m` is the live reply of the callback; the specs are parsed `$bavp` specs.
    let [flags, ip, set] = specs.map(|s| unsafe { bavp(m.as_ptr(), s) });
    if flags.is_none() && ip.is_none() && set.is_none() {
        return Ok(None);
    }
    let set = set.map(|(text, n)| {
        n.unwrap_or_else(|| {
            std::str::from_utf8(&text)
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(default_set)
        })
    });
    let code = m.status_code();
    if (200..300).contains(&code) {
        if let Some((f, _)) = &flags {
            if !d.store_str(dlg, VAL_FLAGS, f) {
                return Err(HostError::DialogStore("the flags").into());
            }
        }
        if let Some((ip, _)) = &ip {
            if !d.store_str(dlg, VAL_IP, ip) {
                return Err(HostError::DialogStore("the ip address").into());
            }
        }
        if let Some(id) = set {
            if !d.store_str(dlg, VAL_SET, &id.to_ne_bytes()) {
                return Err(HostError::DialogStore("the set").into());
            }
        }
    } else if code >= 300 {
        return Ok(None);
    }
    Ok(Some(EngageParams {
        flags: flags.map(|f| f.0).unwrap_or_default(),
        ip: ip.map(|v| String::from_utf8_lossy(&v.0).into_owned()),
        set: set.unwrap_or(default_set),
    }))
}

/// One message of an engaged dialog (spec §5.2): replies to the INVITE, sequential requests
/// and their replies.
fn on_message(d: &dlg_api::DlgBinds, dlg: &Dlg<'_>, m: &Msg<'_>) -> Result<(), Error> {
    let st = state::get().ok_or_else(|| Error::from(HostError::NotInitialized))?;
    let late = late_active(d, dlg);
    let has_sdp = matches!(m.sdp_parts(), Bodies::Sdp(_));
    let method = m.cseq_method().ok_or(HostError::BadCseq)?;
    if method == msg::METHOD_ACK {
        match (late, has_sdp) {
            (false, true) => return Err(HostError::UnexpectedAckSdp.into()),
            (true, false) => return Err(HostError::MissingAckSdp.into()),
            (false, false) => return Ok(()),
            (true, true) => end_late(d, dlg),
        }
    } else if !has_sdp {
        // A string value, as at engage: see `engage_vars_cb` for why not a value-less one.
        if m.kind() == Some(MsgKind::Request)
            && method == msg::METHOD_INVITE
            && !d.store_str(dlg, VAL_LATE, &late_token())
        {
            return Err(HostError::DialogStore("late_negotiation").into());
        }
        return Ok(());
    }
    let default_set = st.config.default_set;
    let p = match branch_params(d, dlg, m, default_set)? {
        Some(p) => p,
        None => dialog_params(d, dlg, default_set),
    };
    let direction = if late {
        Direction::Offer
    } else {
        Direction::Answer
    };
    // The node that holds the call (also when this instance did not create it).
    let call_node = dlg_node::call_node_from_dialog(d, dlg);
    let preset = call_node.as_deref().filter(|url| {
        control::find_set(st, Some(p.set))
            .is_some_and(|set| dlg_node::resolve(st, set, url, dlg.call_id()).is_some())
    });
    let mut req = OfferRequest::new(&p.flags, direction);
    req.ip = p.ip.as_deref();
    req.set = Some(p.set);
    req.dialog_id = d.did(dlg);
    req.node = preset;
    let out = run_offer_answer(Some(m), &req, SdpSource::Message)?;
    if let Some(url) = &out.node_url {
        dlg_node::store_call_node(d, dlg, url);
    }
    Ok(())
}

/// Processes `msg` for `dlg` (or the current dialog), logging any failure.
fn engaged_message(dlg: Option<&Dlg<'_>>, msg: *mut sip_msg) {
    let Some(d) = dlg_api::binds() else { return };
    // SAFETY: `msg` comes from a tm or dialog callback, live for the callback.
    let Some(m) = (unsafe { Msg::from_ptr(msg) }) else {
        return;
    };
    let current;
    let dlg = match dlg {
        Some(dlg) => dlg,
        None => match d.current(&m) {
            Some(c) => {
                current = c;
                &current
            }
            None => {
                tracing::debug!("dialog not found: cannot engage rtpproxy");
                return;
            }
        },
    };
    if let Err(e) = on_message(d, dlg, &m) {
        tracing::error!("rtpproxy_engage: {e}");
    }
}

/// tm `RESPONSE_FWDED` on the engaged INVITE: a reply about to be relayed.
unsafe extern "C" fn engage_reply_cb(t: *mut Cell, _ty: c_int, p: *mut TmcbParams) {
    guard::call("rtpproxy_engage reply callback", (), || {
        if t.is_null() || p.is_null() {
            return;
        }
        // SAFETY: tm passes live callback parameters.
        let rpl = unsafe { (*p).rpl };
        engaged_message(None, rpl);
    })
}

/// Dialog `REQ_WITHIN|RESPONSE_WITHIN`: a sequential request or its reply.
unsafe extern "C" fn engage_dialog_cb(dlg: *mut DlgCell, _ty: c_int, p: *mut DlgCbParams) {
    guard::call("rtpproxy_engage dialog callback", (), || {
        if p.is_null() {
            return;
        }
        // SAFETY: the dialog module passes a live cell and live parameters.
        let (dlg, msg) = unsafe { (dlg_api::Dlg::from_ptr(dlg), (*p).msg) };
        if let Some(dlg) = &dlg {
            engaged_message(Some(dlg), msg);
        }
    })
}

/// Dialog `FAILED|TERMINATED|EXPIRED`: delete the call's sessions (spec §5.4).
unsafe extern "C" fn engage_close_cb(dlg: *mut DlgCell, _ty: c_int, _p: *mut DlgCbParams) {
    guard::call("rtpproxy_engage close callback", (), || {
        // SAFETY: the dialog module passes a live cell.
        let Some(dlg) = (unsafe { dlg_api::Dlg::from_ptr(dlg) }) else {
            return;
        };
        if let Err(e) = teardown(&dlg) {
            tracing::error!("rtpproxy_engage: cannot delete the sessions: {e}");
        }
    })
}

fn teardown(dlg: &Dlg<'_>) -> Result<(), Error> {
    let st = state::get().ok_or_else(|| Error::from(HostError::NotInitialized))?;
    let d = dlg_api::binds().ok_or(HostError::NoDialogModule)?;
    let set_id = dialog_set(d, dlg).unwrap_or(st.config.default_set);
    let set = control::find_set(st, Some(set_id)).ok_or(HostError::NoSuchSet(set_id))?;
    let call_id = dlg.call_id();
    let from_tag = dlg.caller_tag().unwrap_or_default();
    let to_tag = dlg.callee_tag();
    let cmd = Command::delete(call_id, from_tag, to_tag)?;
    // The call's node (the dialog's stored node, else the call map, else the hash); the
    // reply does not matter (the relay may have deleted a timed-out session already). The
    // call is forgotten afterwards.
    let url = dlg_node::call_node_from_dialog(d, dlg)
        .filter(|url| dlg_node::resolve(st, set, url, call_id).is_some());
    let _ = control::send_for_call(st, set, call_id, url.as_deref(), &cmd);
    Ok(())
}

// ---- dialogs restored from the database or replicated from another instance ---------------

/// Registers the global `DLGCB_LOADED` callback; the dialog module runs it at once for the
/// dialogs it restored from its database, then for every dialog restored later or received
/// from another instance of the cluster. Call after the module state is installed.
pub(crate) fn register_loaded_callback() {
    let Some(d) = dlg_api::binds() else { return };
    if !d.register_global(DLGCB_LOADED, engage_loaded_cb) {
        tracing::warn!(
            "cannot register for loaded dialogs: engaged calls restored from the database or \
             replicated from another instance will not be handled"
        );
    }
}

/// Whether a dialog that came from elsewhere was engaged: it carries any of our values (a
/// call engaged by the C module without parameters and with an SDP offer carries none).
fn is_engaged(d: &dlg_api::DlgBinds, dlg: &Dlg<'_>) -> bool {
    [dlg_node::VAL_NODE, VAL_FLAGS, VAL_IP, VAL_SET, VAL_LATE]
        .iter()
        .any(|name| d.fetch(dlg, name).is_some())
}

/// `DLGCB_LOADED`: an engaged dialog restored or replicated here gets the callbacks the
/// instance that created it has, and this instance's call map learns its node.
unsafe extern "C" fn engage_loaded_cb(dlg: *mut DlgCell, _ty: c_int, _p: *mut DlgCbParams) {
    guard::call("rtpproxy_engage loaded-dialog callback", (), || {
        // SAFETY: the dialog module passes a live cell.
        let Some(dlg) = (unsafe { dlg_api::Dlg::from_ptr(dlg) }) else {
            return;
        };
        let Some(d) = dlg_api::binds() else { return };
        let dlg = &dlg;
        if !is_engaged(d, dlg) {
            return;
        }
        let call_id = dlg.call_id();
        if let Err(e) = register_dialog_callbacks(d, dlg) {
            tracing::error!(
                "rtpproxy_engage: call {} restored without its callbacks: {e}",
                String::from_utf8_lossy(call_id)
            );
            return;
        }
        if let Some(st) = state::get() {
            let set = dialog_set(d, dlg).unwrap_or(st.config.default_set);
            dlg_node::note_call_node(st, d, dlg, set);
        }
        tracing::debug!(
            "rtpproxy_engage: call {} restored (node {:?})",
            String::from_utf8_lossy(call_id),
            dlg_node::call_node_from_dialog(d, dlg)
        );
    })
}

/// `DLGCB_PROCESS_VARS`: values of an engaged dialog arrived from another instance.
///
/// - A new node (a command of the call went elsewhere there) updates this instance's map.
/// - The dialog module replicates the deletion of a value as a value-less store, which would
///   turn a finished late negotiation back on here; our module stores `late_negotiation` as a
///   string, so a value-less one arriving alone is such a deletion, and is deleted.
unsafe extern "C" fn engage_vars_cb(dlg: *mut DlgCell, _ty: c_int, p: *mut DlgCbParams) {
    guard::call("rtpproxy_engage dialog values callback", (), || {
        // SAFETY: the dialog module passes a live cell.
        let Some(dlg) = (unsafe { dlg_api::Dlg::from_ptr(dlg) }) else {
            return;
        };
        let (Some(d), Some(st)) = (dlg_api::binds(), state::get()) else {
            return;
        };
        let dlg = &dlg;
        // SAFETY: `p` is NULL or the live parameters of this PROCESS_VARS callback.
        let name = (!p.is_null())
            .then(|| unsafe { (*p).replicated_value_name() })
            .flatten();
        match name.as_deref() {
            Some(VAL_LATE) => {
                if d.fetch(dlg, VAL_LATE) == Some(DlgValue::Flag) {
                    tracing::debug!(
                        "late negotiation of call {} ended on another instance",
                        String::from_utf8_lossy(dlg.call_id())
                    );
                    d.delete(dlg, VAL_LATE);
                }
            }
            None | Some(dlg_node::VAL_NODE) => {
                let set = dialog_set(d, dlg).unwrap_or(st.config.default_set);
                dlg_node::note_call_node(st, d, dlg, set);
            }
            Some(_) => {}
        }
        // Whatever arrived, and in whatever order: a mark of a negotiation that has ended
        // (here or, replicated, on the other instance) goes.
        if d.fetch(dlg, VAL_LATE).is_some() && !late_active(d, dlg) {
            tracing::debug!(
                "stale late negotiation mark of call {} removed",
                String::from_utf8_lossy(dlg.call_id())
            );
            d.delete(dlg, VAL_LATE);
        }
    })
}

/// The dialog id a plain `rtpproxy_offer`/`rtpproxy_answer` passes in
/// `OfferRequest::dialog_id` (spec §3.5.1): with `n` on a `U` (and a notify socket), the
/// dialog of the message — created here for an initial request — which is an error when it
/// cannot be had; with `d`, the current dialog if there is one (else the DTMF tag uses the
/// Call-ID). `None` when neither applies or the dialog module is not loaded.
pub(crate) fn dialog_id_for_flags(
    m: &Msg<'_>,
    flags: &[u8],
    direction: Direction,
) -> Result<Option<Vec<u8>>, Error> {
    let Some(d) = dlg_api::binds() else {
        return Ok(None);
    };
    let Ok(f) = Flags::parse_script_param(flags) else {
        return Ok(None); // the offer itself reports bad flags
    };
    let configured = state::get().is_some_and(|st| st.config.notify.is_some());
    if !configured && f.notify_socket().is_none_or(<[u8]>::is_empty) {
        return Ok(None);
    }
    if f.notify && direction == Direction::Offer && !f.lookup {
        if m.kind() == Some(MsgKind::Request) && m.ttag().is_none() {
            // SAFETY: `m` is the initial request being processed by the script function.
            unsafe { d.create(m) };
        }
        let dlg = d.current(m).ok_or(HostError::NoNotifyDialog)?;
        return Ok(d.did(&dlg));
    }
    if f.dtmf {
        return Ok(d.current(m).and_then(|dlg| d.did(&dlg)));
    }
    Ok(None)
}

// ---- notification process -------------------------------------------------------------------

/// Raises `E_RTPPROXY_DTMF` (spec §8.5) if anybody subscribed.
fn raise_dtmf(st: &ModuleState, ev: &DtmfEvent) {
    let id = st.events.dtmf;
    let digit = [ev.digit];
    let ints: [c_int; 4] = [
        ev.duration as c_int,
        ev.volume as c_int,
        c_int::from(ev.is_callid),
        ev.stream as c_int,
    ];
    let names: [&[u8]; 6] = [
        b"digit",
        b"duration",
        b"volume",
        b"id",
        b"is_callid",
        b"stream",
    ];
    let names = names.map(borrowed_str);
    let (v_digit, v_id) = (borrowed_str(&digit), borrowed_str(&ev.id));
    let str_flag = sys::EVI_STR_VAL as c_int;
    let int_flag = sys::EVI_INT_VAL as c_int;
    let values: [(*const c_void, c_int); 6] = [
        ((&v_digit as *const host_str).cast(), str_flag),
        ((&ints[0] as *const c_int).cast(), int_flag),
        ((&ints[1] as *const c_int).cast(), int_flag),
        ((&v_id as *const host_str).cast(), str_flag),
        ((&ints[2] as *const c_int).cast(), int_flag),
        ((&ints[3] as *const c_int).cast(), int_flag),
    ];
    // SAFETY: evi calls with a published id; names and values are borrowed and stay alive
    // until `evi_raise_event` returns (it copies the str structs and ints, ABI §4.10); the
    // list from `evi_get_params` is freed by the raise, or by us on the error path.
    unsafe {
        let a = api();
        if (a.evi_probe_event)(id) == 0 {
            return;
        }
        let list = (a.evi_get_params)();
        if list.is_null() {
            tracing::error!("cannot create E_RTPPROXY_DTMF parameters");
            return;
        }
        for (name, (val, flag)) in names.iter().zip(values) {
            if (a.evi_param_add)(list, name, val, flag) < 0 {
                tracing::error!("cannot add E_RTPPROXY_DTMF parameters");
                (a.evi_free_params)(list);
                return;
            }
        }
        if (a.evi_raise_event)(id, list) < 0 {
            tracing::error!("cannot raise E_RTPPROXY_DTMF");
        }
    }
}

/// `sizeof(struct process_table)` and the offsets of `pid` and `ipc_pipe` in it (host profile).
const PT_ENTRY_SIZE: usize = sys::probed::SIZEOF_PROCESS_TABLE;
const PT_PID: usize = sys::probed::PROCESS_TABLE_PID;
const PT_IPC_PIPE: usize = sys::probed::PROCESS_TABLE_IPC_PIPE;

/// This process's IPC read descriptor (`IPC_FD_READ_SELF`), found through the process table
/// and checked: the entry's pid must be ours and the descriptor a pipe.
fn ipc_read_fd() -> Result<c_int, HostError> {
    let a = api();
    // SAFETY: `pt` and `process_no` are core variables; the entry of this process is read at
    // the measured layout, and the pid check below rejects a wrong layout before the
    // descriptor is trusted.
    let (pid, fd) = unsafe {
        let table = *a.pt;
        let no = *a.process_no;
        if table.is_null() || no < 0 {
            return Err(HostError::NoProcessTable);
        }
        let entry = table.add(no as usize * PT_ENTRY_SIZE);
        (
            entry.add(PT_PID).cast::<c_int>().read_unaligned(),
            entry.add(PT_IPC_PIPE).cast::<c_int>().read_unaligned(),
        )
    };
    if pid != std::process::id() as c_int {
        return Err(HostError::ProcessEntry(pid));
    }
    // SAFETY: `fstat` only fills the local struct.
    let is_pipe = unsafe {
        let mut sb: libc::stat = std::mem::zeroed();
        libc::fstat(fd, &mut sb) == 0 && sb.st_mode & libc::S_IFMT == libc::S_IFIFO
    };
    if !is_pipe {
        return Err(HostError::NotAPipe(fd));
    }
    Ok(fd)
}

/// Acts on notifications inside the notification process.
struct HostSink {
    st: &'static ModuleState,
    generation: Option<u64>,
    allowed: HashSet<IpAddr>,
    ipc_fd: Option<c_int>,
}

impl HostSink {
    /// The addresses of the configured non-UNIX nodes, re-read when the node list changes.
    fn refresh_peers(&mut self) {
        let topology = self.st.topology();
        if self.generation == Some(topology.generation) {
            return;
        }
        self.generation = Some(topology.generation);
        self.allowed.clear();
        for node in topology.sets.iter().flat_map(|s| s.nodes.iter()) {
            let spec = &node.spec;
            let ipv6 = match spec.transport {
                Transport::Udp | Transport::Tcp => false,
                Transport::Udp6 | Transport::Tcp6 => true,
                Transport::Unix | Transport::Cunix | Transport::RtpIo => continue,
            };
            let (Some(host), Some(port)) = (spec.host(), spec.port()) else {
                continue;
            };
            let literal = host.trim_start_matches('[').trim_end_matches(']');
            let ip = match literal.parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => crate::io::transport::resolve(host, port, ipv6)
                    .map(|a| a.ip())
                    .map_err(|e| {
                        tracing::warn!(
                            "RTPProxy {}: {e}; its notifications will be refused",
                            spec.url
                        )
                    })
                    .ok(),
            };
            self.allowed.extend(ip);
        }
        tracing::debug!("notifications accepted from {:?}", self.allowed);
    }

    fn act(&self, n: Notification, peer: &Peer) {
        match n {
            Notification::Timeout(did) => self.timeout(did, peer),
            Notification::Dtmf(ev) => {
                tracing::info!(
                    "got DTMF event {} volume={} duration={} stream={} for {} from {peer}",
                    (ev.digit as char).escape_debug(),
                    ev.volume,
                    ev.duration,
                    ev.stream,
                    String::from_utf8_lossy(&ev.id).escape_debug()
                );
                raise_dtmf(self.st, &ev);
            }
            Notification::Ignored | Notification::Unknown(_) => {}
        }
    }

    fn timeout(&self, did: DialogId, peer: &Peer) {
        tracing::info!("timeout notification for dialog {did} from {peer}");
        let Some(d) = dlg_api::binds() else {
            tracing::error!("no dialog module: cannot end dialog {did}");
            return;
        };
        match d.terminate(did.h_entry, did.h_id, TIMEOUT_REASON) {
            1 => tracing::info!("dialog {did} ended: RTPProxy reported a media timeout"),
            0 => tracing::info!("dialog {did} of a timeout notification does not exist (any more)"),
            _ => tracing::error!(
                "failed to terminate dialog h_entry=[{}], h_id=[{}]",
                did.h_entry,
                did.h_id
            ),
        }
    }
}

impl NotifySink for HostSink {
    fn allow_peer(&mut self, ip: IpAddr) -> bool {
        guard::call("notification peer check", false, || {
            self.refresh_peers();
            self.allowed.contains(&ip)
        })
    }

    fn notify(&mut self, n: Notification, peer: &Peer) {
        guard::call("notification", (), || self.act(n, peer));
    }

    fn take_wake_fd(&mut self) -> Option<OwnedFd> {
        let fd = self.ipc_fd?;
        // SAFETY: duplicating a descriptor we checked is open; the copy is ours to own.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            tracing::error!(
                "cannot watch the IPC pipe: {}",
                std::io::Error::last_os_error()
            );
            return None;
        }
        // SAFETY: `dup` is a fresh descriptor nobody else owns.
        Some(unsafe { OwnedFd::from_raw_fd(dup) })
    }

    fn on_wake(&mut self) -> bool {
        guard::call("IPC job", true, || self.run_ipc_jobs())
    }
}

impl HostSink {
    /// Runs the IPC jobs waiting in this process's pipe (at most 64 at a time); `true` once
    /// the pipe is empty.
    fn run_ipc_jobs(&self) -> bool {
        let Some(fd) = self.ipc_fd else { return true };
        for _ in 0..64 {
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: polls one descriptor without waiting.
            let n = unsafe { libc::poll(&mut p, 1, 0) };
            if n <= 0 || p.revents & libc::POLLIN == 0 {
                return true;
            }
            // SAFETY: the core reads one job from its own pipe and runs it; the pipe is
            // non-blocking (the listener set it so), so a spurious wake-up cannot block.
            unsafe { (api().ipc_handle_job)(fd) };
        }
        false
    }
}

/// Body of the "RTPP notification receiver" process (spec §8.1). Returns only when the
/// listener cannot be set up or fails (the core then ends the process).
pub(crate) fn notify_process(_no: c_int) {
    let Some(st) = state::get() else {
        tracing::error!("notification listener started without module state");
        return;
    };
    let Some(socket) = st.config.notify.as_ref() else {
        tracing::error!("notification listener started without rtpp_notify_socket");
        return;
    };
    let addr = ListenAddr::from(socket);
    // OpenSIPS shuts down when a module process returns: a failed listener is logged and
    // started again, with a growing pause, for the life of the process.
    let mut pause = Duration::from_millis(400);
    loop {
        let served = guard::call("notification listener", Err(HostError::Panicked), || {
            serve_notifications(st, &addr)
        });
        match served {
            Ok(()) => pause = Duration::from_millis(400),
            Err(e) => {
                tracing::error!(
                    "the RTPProxy notification listener on {addr} failed ({e}); restarting \
                     it in {} ms",
                    pause.as_millis()
                );
            }
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(10));
    }
}

/// Binds the notification socket and serves it until the listener fails.
fn serve_notifications(st: &'static ModuleState, addr: &ListenAddr) -> Result<(), HostError> {
    let bound = listener::bind(addr).map_err(HostError::Listen)?;
    #[cfg(feature = "fault-injection")]
    {
        use std::sync::atomic::{AtomicU32, Ordering};
        static RUNS: AtomicU32 = AtomicU32::new(0);
        let n: u32 = std::env::var("RTPPROXY_FAULT_LISTENER_ERROR")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if RUNS.fetch_add(1, Ordering::Relaxed) < n {
            drop(bound);
            return Err(HostError::Injected("listener socket error"));
        }
    }
    let ipc_fd = match ipc_read_fd() {
        Ok(fd) => Some(fd),
        Err(e) => {
            tracing::error!(
                "cannot find this process's IPC pipe ({e}): jobs sent to the notification \
                 process will not be served"
            );
            None
        }
    };
    let mut sink = HostSink {
        st,
        generation: None,
        allowed: HashSet::new(),
        ipc_fd,
    };
    sink.refresh_peers();
    tracing::info!("listening for RTPProxy notifications on {addr}");
    let stats = Arc::new(ListenerStats::default());
    listener::run(
        bound,
        sink,
        ListenerOptions::default(),
        stats,
        std::future::pending(),
    )
    .map_err(HostError::Listener)
}

/// Main-process clean-up at shutdown: removes the UNIX notification socket file (the C module
/// unlinks it in its destroy function).
pub(crate) fn destroy() {
    if let Some(crate::core::config::NotifySocket::Unix(path)) =
        state::get().and_then(|st| st.config.notify.as_ref())
    {
        let p = std::path::Path::new(path);
        if std::fs::symlink_metadata(p)
            .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
        {
            let _ = std::fs::remove_file(p);
        }
    }
}
