//! `rtpproxy_engage` and the dialog integration, and the notification listener process.
//! (Owned by the dialog/notification work; spec §5 and §8.)

use std::ffi::c_int;

use crate::core::config::ModuleConfig;
use crate::Error;

use super::entry::Params;
use super::sys::sip_msg;

/// Pre-fork set-up (dialog/tm APIs, global dialog callbacks).
pub(crate) fn mod_init(_config: &ModuleConfig) -> Result<(), String> {
    Ok(())
}

/// Per-process set-up after fork.
pub(crate) fn child_init(_rank: c_int) -> Result<(), String> {
    Ok(())
}

/// `rtpproxy_engage([flags], [ip_address], [set_id], [sock_var], [ret_var])`.
///
/// # Safety
/// `msg` and `params` are those of the script-function call.
pub(crate) unsafe fn engage(_msg: *mut sip_msg, _params: &Params) -> Result<i32, Error> {
    Err(Error::NotImplemented("rtpproxy_engage"))
}

/// Body of the "RTPP notification receiver" process.
pub(crate) fn notify_process(_no: c_int) {
    tracing::error!("the notification listener is not implemented yet; notifications are ignored");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
