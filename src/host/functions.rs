//! Bodies of the script functions: read the message and parameters, decide in `core`, talk to
//! the relay through `control`, and return the script code.

use std::ffi::{c_int, c_void};

use crate::core::proto::command::Command;
use crate::Error;

use super::control;
use super::msg::{self, Msg};
use super::state;
use super::sys::sip_msg;

/// An optional `CMD_PARAM_INT` parameter.
///
/// # Safety
/// `p` must be NULL or the `int*` the host passed for that parameter.
pub(crate) unsafe fn opt_int(p: *mut c_void) -> Option<i32> {
    // SAFETY: per the contract.
    (!p.is_null()).then(|| unsafe { *p.cast::<c_int>() })
}

fn err(msg: impl Into<String>) -> Error {
    Error::Other(msg.into())
}

/// `rtpproxy_unforce([set_id], [sock_var])`: deletes the call's sessions on its node.
///
/// # Safety
/// The arguments are those of the script-function call.
pub(crate) unsafe fn unforce(
    msg: *mut sip_msg,
    set: *mut c_void,
    sock_var: *mut c_void,
) -> Result<i32, Error> {
    // SAFETY: per the contract.
    let Some(m) = (unsafe { Msg::from_ptr(msg) }) else {
        return Ok(1); // no message, or a faked reply: nothing to delete (as the C module)
    };
    let st = state::get().ok_or_else(|| err("module not initialized"))?;
    let call_id = m
        .call_id()
        .ok_or_else(|| err("no Call-ID in the message"))?;
    let from_tag = m.ftag().ok_or_else(|| err("no From-tag in the message"))?;
    let to_tag = m.ttag();
    // SAFETY: per the contract.
    let set_id = unsafe { opt_int(set) };
    let set = control::find_set(st, set_id).ok_or_else(|| {
        err(format!(
            "cannot find RTPProxy set {}",
            set_id.unwrap_or(st.config.default_set)
        ))
    })?;
    let cmd = Command::delete(&call_id, &from_tag, to_tag.as_deref())?;
    let node = control::select(st, set, &call_id)
        .ok_or_else(|| err(format!("no available proxies in set {}", set.id)))?;
    // SAFETY: per the contract, `sock_var` is NULL or the variable parameter.
    if !unsafe { msg::set_var_str(msg, sock_var, node.spec.url.as_bytes()) } {
        tracing::warn!("cannot set sock_var to {}", node.spec.url);
    }
    // The reply does not matter (as in the C module); a transport failure has already
    // disabled the node for everybody.
    let _ = control::send(st, node, &cmd);
    Ok(1)
}
