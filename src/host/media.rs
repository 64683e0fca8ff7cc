//! Media operations and integrations: prompts, recording, statistics, the `load_rtpproxy` API
//! and the rtp_relay engine. (Owned by the media-operations work; spec §6, §7, §12.)

use crate::core::config::ModuleConfig;
use crate::Error;

use super::entry::Params;
use super::sys::sip_msg;

/// Runs in `mod_preinit` (rtp_relay engine registration).
pub(crate) fn preinit() -> Result<(), String> {
    Ok(())
}

/// Pre-fork set-up.
pub(crate) fn mod_init(_config: &ModuleConfig) -> Result<(), String> {
    Ok(())
}

macro_rules! pending {
    ($($f:ident => $name:literal),* $(,)?) => {$(
        /// Script function of the same name (not implemented yet).
        ///
        /// # Safety
        /// `msg` and `params` are those of the script-function call.
        pub(crate) unsafe fn $f(_msg: *mut sip_msg, _params: &Params) -> Result<i32, Error> {
            Err(Error::NotImplemented($name))
        }
    )*};
}

pending! {
    start_recording => "rtpproxy_start_recording",
    stream2uac => "rtpproxy_stream2uac",
    stream2uas => "rtpproxy_stream2uas",
    stop_stream2uac => "rtpproxy_stop_stream2uac",
    stop_stream2uas => "rtpproxy_stop_stream2uas",
    stats => "rtpproxy_stats",
    all_stats => "rtpproxy_all_stats",
    load_rtpproxy => "load_rtpproxy",
}
