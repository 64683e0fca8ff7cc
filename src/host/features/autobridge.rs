//! `rtpproxy_autobridge` (spec §4.12): the relay is told, with `R<addr>` in the rep-opts slot
//! of `U`/`L`, where the other party of the stream is, so that a relay serving several
//! interfaces (e.g. IPv4 and IPv6, spec §4.13) allocates the port on the interface that
//! reaches it.
//!
//! Applies to offer/answer made by the script functions and by `rtpproxy_engage` (not to the
//! rtp_relay engine, which the C module also runs without it), when the selected node reports
//! AUTOBRIDGE (20090810):
//!
//! - **request**: the other party is the next hop, which the core only knows when it forwards
//!   the request. The parameters are stored with the message, and the offer/answer runs from
//!   its `REQ_PRE_FORWARD` callback with `R<next hop>` (IPv4 as is, IPv6 as `[…]`). Only the
//!   first branch is considered, as in C: later branches run nothing, and since tm drops the
//!   changes made for a branch once it is sent, they carry the caller's SDP unchanged; hence
//!   the start-up warning that autobridge does not work with forking. `MSG_DESTROY` frees the
//!   stored parameters.
//! - **reply**: the other party is the source of the transaction's request (or, without a
//!   transaction, the destination the second Via names); the offer/answer runs at once with
//!   `R<addr>` on the node the capability was checked on.
//!
//! # Deliberate differences from the C module
//!
//! - A deferred offer/answer returns 1. The C module returns 1 in message mode too, but 0 in
//!   body_var mode (B6), which stops the script.
//! - body_var mode on a request is refused (-1, with an error): the variable must be filled
//!   before the next hop is known. The C module returns 0 and, at forwarding, rewrites the
//!   message at offsets taken from the variable's copy (memory corruption).
//! - The source address of a reply's request is bracketed when it is IPv6 (`R[…]`), as the
//!   relay requires; the C module sends it bare and the relay refuses the command (E35), so
//!   the answer fails.
//! - One deferral per message, covering every SDP part (the C module registers one per part;
//!   the commands are the same).
//! - The node chosen for a reply is used for every stream (C: only the first, D5).

use std::ffi::{c_int, c_void};
use std::net::IpAddr;

use crate::core::config::SetId;
use crate::core::offer::Direction;
use crate::core::proto::caps::Capabilities;
use crate::error::{HostError, ScriptError};
use crate::Error;

use super::request::OfferRequest;
use crate::host::bind::msg::{self, Bodies, Msg, MsgKind};
use crate::host::bind::tm_api;
use crate::host::ffi::api::api;
use crate::host::ffi::guard;
use crate::host::ffi::sys::sip_msg;
use crate::host::runtime::control;
use crate::host::runtime::state::{ModuleState, SetView};

/// `cb_type_t` values (`msg_callbacks.h`).
const REQ_PRE_FORWARD: c_int = 0;
const MSG_DESTROY: c_int = 1;

/// The `R` address for `ip`: IPv4 dotted, IPv6 in OpenSIPS' text form between brackets (the
/// relay's syntax for an IPv6 address in a modifier).
pub(crate) fn bridge_address(ip: IpAddr) -> String {
    let text = msg::opensips_ip_text(ip);
    match ip {
        IpAddr::V4(_) => text,
        IpAddr::V6(_) => format!("[{text}]"),
    }
}

/// What to do with one offer/answer.
pub(crate) enum Plan {
    /// Autobridge does not apply (off, or the node lacks AUTOBRIDGE): as usual.
    Normal,
    /// A message without any SDP part: nothing to do (returns 1, as without autobridge).
    NoSdp,
    /// Deferred to the forwarding of the request: the caller hands these parameters to
    /// [`defer`] with the function that resumes the request.
    Deferred(Deferred),
    /// A reply: run now, with `R<bridge>` when the other party is known, on `node`.
    Reply {
        bridge: Option<String>,
        node: String,
    },
}

/// The parameters of a deferred offer/answer, kept with the message until it is freed.
pub(crate) struct Deferred {
    pub(crate) flags: Vec<u8>,
    pub(crate) ip: Option<String>,
    pub(crate) set: Option<SetId>,
    pub(crate) direction: Direction,
    pub(crate) dialog_id: Option<Vec<u8>>,
    /// Resumes the request, set by [`defer`].
    resume: Option<Resume>,
    /// Set by the first pre-forward callback: later branches do nothing.
    done: bool,
}

/// Decides what autobridge does for `req` on `m` (spec §4.12). The node checked for
/// AUTOBRIDGE is recorded in `last_node` (the script's `sock_var`). Only for requests made by
/// a script function or engage ([`OfferRequest::is_script_request`]) without an `R` address yet.
pub(crate) fn plan(
    st: &ModuleState,
    set: &SetView,
    m: &Msg<'_>,
    call_id: &[u8],
    req: &OfferRequest<'_>,
    body_mode: bool,
    last_node: &mut Option<String>,
) -> Result<Plan, Error> {
    if !st.config.autobridge || !req.is_script_request() || req.bridge_address.is_some() {
        return Ok(Plan::Normal);
    }
    let request = m.kind() == Some(MsgKind::Request);
    if !body_mode {
        // As in C, a message without SDP selects no node (and leaves `sock_var` alone).
        match m.sdp_parts() {
            Bodies::NoBody => return Err(Error::from(HostError::NoBody)),
            Bodies::NoSdp => return Ok(Plan::NoSdp),
            Bodies::Sdp(_) => {}
        }
    }
    let node = control::node_for_call(st, set, call_id, None)?;
    *last_node = Some(node.spec.url.clone());
    // As in C, the set's nodes are assumed alike: the capability of this one decides.
    if !control::capabilities(st, node).contains(Capabilities::AUTOBRIDGE) {
        return Ok(Plan::Normal);
    }
    if !request {
        let bridge = reply_destination(m).map(bridge_address);
        if bridge.is_none() {
            tracing::error!(
                "autobridge: cannot find where this reply goes (no transaction, no usable \
                 second Via); sending it to the relay without R"
            );
        }
        return Ok(Plan::Reply {
            bridge,
            node: node.spec.url.clone(),
        });
    }
    if body_mode {
        return Err(ScriptError::BodyVarOnRequest.into());
    }
    Ok(Plan::Deferred(Deferred {
        flags: req.flags.to_vec(),
        ip: req.ip.map(str::to_owned),
        set: req.set,
        direction: req.direction,
        dialog_id: req.dialog_id.clone(),
        resume: None,
        done: false,
    }))
}

/// Runs a deferred request when its next hop is known (the offer/answer driver).
pub(crate) type Resume = fn(&Msg<'_>, &OfferRequest<'_>) -> Result<(), Error>;

/// Stores `d` with the request `m` and registers the pre-forward and destroy callbacks; the
/// pre-forward callback calls `resume`.
pub(crate) fn defer(m: &Msg<'_>, mut d: Deferred, resume: Resume) -> Result<(), Error> {
    d.resume = Some(resume);
    let direction = d.direction;
    let a = api();
    let p = Box::into_raw(Box::new(d)).cast::<c_void>();
    // The destroy callback first: once it is registered, the message owns `p`.
    // SAFETY: `m` is the live request of this call; `on_destroy` frees `p` once, when the
    // core frees the message (`free_sip_msg`).
    if unsafe { (a.msg_callback_add)(m.as_ptr(), MSG_DESTROY, on_destroy, p) } != 0 {
        // SAFETY: not registered, so `p` (from `Box::into_raw` above) is still ours.
        drop(unsafe { Box::from_raw(p.cast::<Deferred>()) });
        return Err(HostError::AutobridgeCallback("callbacks").into());
    }
    // SAFETY: as above; `p` stays valid until the destroy callback, which runs after every
    // forwarding of the message.
    if unsafe { (a.msg_callback_add)(m.as_ptr(), REQ_PRE_FORWARD, on_pre_forward, p) } != 0 {
        return Err(HostError::AutobridgeCallback("pre-forward callback").into());
    }
    tracing::debug!("autobridge: {direction:?} deferred until the request is forwarded");
    Ok(())
}

/// `REQ_PRE_FORWARD`: the core has chosen the next hop (`extra`, a `struct proxy_l*`).
unsafe extern "C" fn on_pre_forward(
    msg: *mut sip_msg,
    cb_type: c_int,
    param: *mut c_void,
    extra: *mut c_void,
) {
    guard::call("autobridge pre-forward callback", (), || {
        if cb_type != REQ_PRE_FORWARD || param.is_null() {
            return;
        }
        // SAFETY: `param` is the `Deferred` registered with this message; it lives until the
        // destroy callback, and this process is the only one that handles the message.
        let d = unsafe { &mut *param.cast::<Deferred>() };
        if d.done {
            tracing::debug!("autobridge: not the first branch, nothing to do");
            return;
        }
        d.done = true;
        // SAFETY: the core passes the `struct proxy_l*` it forwards to.
        let Some(hop) = (unsafe { next_hop(extra) }) else {
            tracing::error!("autobridge: cannot read the next hop; the SDP is left unchanged");
            return;
        };
        // SAFETY: the message being forwarded, live for the callback.
        let Some(m) = (unsafe { Msg::from_ptr(msg) }) else {
            return;
        };
        let bridge = bridge_address(hop);
        let mut req = OfferRequest::new(&d.flags, d.direction);
        req.ip = d.ip.as_deref();
        req.set = d.set;
        req.dialog_id = d.dialog_id.clone();
        req.bridge_address = Some(bridge.clone());
        let Some(resume) = d.resume else {
            return;
        };
        if let Err(e) = resume(&m, &req) {
            tracing::error!(
                "autobridge: {:?} towards {bridge} failed: {e}; the SDP is left unchanged",
                d.direction
            );
        }
    });
}

/// `MSG_DESTROY`: frees the stored parameters.
unsafe extern "C" fn on_destroy(
    _msg: *mut sip_msg,
    cb_type: c_int,
    param: *mut c_void,
    _extra: *mut c_void,
) {
    guard::call("autobridge destroy callback", (), || {
        if cb_type == MSG_DESTROY && !param.is_null() {
            // SAFETY: `param` came from `Box::into_raw` in `defer`; the core runs the destroy
            // callbacks once, then forgets them.
            drop(unsafe { Box::from_raw(param.cast::<Deferred>()) });
        }
    });
}

/// `struct proxy_l`: `addr_idx` u16, then `host` (`struct hostent`) with `h_addrtype` int,
/// `h_length` int and `h_addr_list` (host profile; 22/40/44/48 in every verified release).
mod proxy_off {
    use crate::host::ffi::sys::probed as p;
    pub(super) const ADDR_IDX: usize = p::PROXY_L_ADDR_IDX;
    pub(super) const H_ADDRTYPE: usize = p::PROXY_L_H_ADDRTYPE;
    pub(super) const H_LENGTH: usize = p::PROXY_L_H_LENGTH;
    pub(super) const H_ADDR_LIST: usize = p::PROXY_L_H_ADDR_LIST;
}

/// The address the core forwards to (`hostent2ip_addr(&p->host, p->addr_idx)`).
///
/// # Safety
/// `p` must be NULL or a live `struct proxy_l*`.
unsafe fn next_hop(p: *mut c_void) -> Option<IpAddr> {
    if p.is_null() {
        return None;
    }
    let p = p.cast::<u8>();
    // SAFETY: per the contract, fields at the profile's offsets of `struct proxy_l`; the address
    // list is NULL-terminated and is walked only up to `addr_idx`.
    unsafe {
        let idx = usize::from(p.add(proxy_off::ADDR_IDX).cast::<u16>().read_unaligned());
        let af = p
            .add(proxy_off::H_ADDRTYPE)
            .cast::<c_int>()
            .read_unaligned();
        let len = p.add(proxy_off::H_LENGTH).cast::<c_int>().read_unaligned();
        let list = p
            .add(proxy_off::H_ADDR_LIST)
            .cast::<*const *const u8>()
            .read_unaligned();
        if list.is_null() {
            return None;
        }
        for i in 0..idx {
            if (*list.add(i)).is_null() {
                return None;
            }
        }
        let a = *list.add(idx);
        if a.is_null() {
            return None;
        }
        match (af, len) {
            (libc::AF_INET, 4) => Some(IpAddr::from(a.cast::<[u8; 4]>().read_unaligned())),
            (libc::AF_INET6, 16) => Some(IpAddr::from(a.cast::<[u8; 16]>().read_unaligned())),
            _ => None,
        }
    }
}

/// `struct cell`: `uas.request` (`struct sip_msg*`, shm clone of the request); at 240 in
/// every verified release, although `struct cell` shrank from 6920 to 1096 bytes in 4.0.
const CELL_UAS_REQUEST: usize = crate::host::ffi::sys::probed::CELL_UAS_REQUEST;
/// `T_UNDEFINED`.
const T_UNDEFINED: isize = -1;

/// Where a reply goes: the source of its transaction's request, else the second Via.
fn reply_destination(m: &Msg<'_>) -> Option<IpAddr> {
    if let Some(ip) = transaction_source() {
        tracing::debug!("autobridge: the reply goes to {ip} (its request's source)");
        return Some(ip);
    }
    let ip = m.via2_destination()?;
    tracing::debug!("autobridge: the reply goes to {ip} (its second Via)");
    Some(ip)
}

/// The source address of the current transaction's request.
fn transaction_source() -> Option<IpAddr> {
    let gett = tm_api::binds()?.t_gett()?;
    // SAFETY: `t_gett` takes nothing and returns the current transaction, NULL or
    // `T_UNDEFINED`.
    let t = unsafe { gett() };
    if t.is_null() || t as isize == T_UNDEFINED {
        return None;
    }
    // SAFETY: a live `struct cell`, referenced by the core while this reply is handled;
    // `uas.request` is a `struct sip_msg*` at the profile's offset (NULL for local transactions).
    let req = unsafe {
        t.cast::<u8>()
            .add(CELL_UAS_REQUEST)
            .cast::<*mut sip_msg>()
            .read_unaligned()
    };
    // SAFETY: the transaction's request, in shm for the life of the transaction.
    unsafe { Msg::from_ptr(req) }?.source_ip()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_is_sent_as_is() {
        assert_eq!(bridge_address("192.0.2.7".parse().unwrap()), "192.0.2.7");
        assert_eq!(bridge_address("127.0.0.1".parse().unwrap()), "127.0.0.1");
    }

    #[test]
    fn ipv6_is_bracketed_in_opensips_form() {
        assert_eq!(
            bridge_address("2001:db8::1".parse().unwrap()),
            "[2001:DB8:0:0:0:0:0:1]"
        );
        assert_eq!(bridge_address("::1".parse().unwrap()), "[0:0:0:0:0:0:0:1]");
        assert_eq!(
            bridge_address("fe80::a:bc:def0".parse().unwrap()),
            "[FE80:0:0:0:0:A:BC:DEF0]"
        );
    }

    #[test]
    fn ipv4_mapped_ipv6_stays_ipv6() {
        assert_eq!(
            bridge_address("::ffff:192.0.2.1".parse().unwrap()),
            "[0:0:0:0:0:FFFF:C000:201]"
        );
    }

    #[test]
    fn next_hop_reads_the_proxy_address() {
        // A `struct proxy_l` image: two IPv4 addresses, the second one current.
        let a0 = [10u8, 0, 0, 1];
        let a1 = [192u8, 0, 2, 9];
        let list: [*const u8; 3] = [a0.as_ptr(), a1.as_ptr(), std::ptr::null()];
        let mut p = [0u8; 64];
        p[proxy_off::ADDR_IDX..][..2].copy_from_slice(&1u16.to_ne_bytes());
        p[proxy_off::H_ADDRTYPE..][..4].copy_from_slice(&libc::AF_INET.to_ne_bytes());
        p[proxy_off::H_LENGTH..][..4].copy_from_slice(&4i32.to_ne_bytes());
        p[proxy_off::H_ADDR_LIST..][..8].copy_from_slice(&(list.as_ptr() as usize).to_ne_bytes());
        // SAFETY: `p` is laid out as a `struct proxy_l` whose list outlives the call.
        let ip = unsafe { next_hop(p.as_mut_ptr().cast()) };
        assert_eq!(ip, Some("192.0.2.9".parse().unwrap()));

        // An index past the end of the list.
        p[proxy_off::ADDR_IDX..][..2].copy_from_slice(&5u16.to_ne_bytes());
        // SAFETY: as above.
        assert_eq!(unsafe { next_hop(p.as_mut_ptr().cast()) }, None);

        // IPv6.
        let a6: [u8; 16] = "2001:db8::5"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        let list6: [*const u8; 2] = [a6.as_ptr(), std::ptr::null()];
        p[proxy_off::ADDR_IDX..][..2].copy_from_slice(&0u16.to_ne_bytes());
        p[proxy_off::H_ADDRTYPE..][..4].copy_from_slice(&libc::AF_INET6.to_ne_bytes());
        p[proxy_off::H_LENGTH..][..4].copy_from_slice(&16i32.to_ne_bytes());
        p[proxy_off::H_ADDR_LIST..][..8].copy_from_slice(&(list6.as_ptr() as usize).to_ne_bytes());
        // SAFETY: as above.
        let ip = unsafe { next_hop(p.as_mut_ptr().cast()) }.unwrap();
        assert_eq!(bridge_address(ip), "[2001:DB8:0:0:0:0:0:5]");

        // SAFETY: NULL is allowed.
        assert_eq!(unsafe { next_hop(std::ptr::null_mut()) }, None);
    }
}
