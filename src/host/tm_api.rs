//! The tm module's API (`load_tm`, ABI spec §4.12): transaction callbacks for
//! `rtpproxy_engage`.
//!
//! Bound once in `mod_init` (tm is a hard dependency, so it is always there) and inherited by
//! every process.

use std::ffi::{c_int, c_void};
use std::sync::OnceLock;

use super::api::api;
use super::sys::sip_msg;

/// `struct cell` (opaque).
#[repr(C)]
pub(crate) struct Cell {
    _opaque: [u8; 0],
}

/// `struct tmcb_params` (48 bytes).
#[repr(C)]
pub(crate) struct TmcbParams {
    pub(crate) req: *mut sip_msg,
    pub(crate) rpl: *mut sip_msg,
    pub(crate) code: c_int,
    pub(crate) param: *mut *mut c_void,
    pub(crate) extra1: *mut c_void,
    pub(crate) extra2: *mut c_void,
}

/// A transaction callback.
pub(crate) type TmCb = unsafe extern "C" fn(*mut Cell, c_int, *mut TmcbParams);

type RegisterTmcb = unsafe extern "C" fn(
    *mut sip_msg,
    *mut Cell,
    c_int,
    Option<TmCb>,
    *mut c_void,
    Option<unsafe extern "C" fn(*mut c_void)>,
) -> c_int;

/// `struct tm_binds` (function pointers; 360 bytes before 3.6.7, 368 since: the host
/// profile's size); only `register_tmcb` and `t_gett` are typed.
#[repr(C)]
pub(crate) struct TmBinds {
    register_tmcb: Option<RegisterTmcb>,
    _before_t_gett: [*mut c_void; T_GETT_INDEX - 1],
    /// `struct cell *t_gett(void)` (offset 168, index 21, in every verified release).
    t_gett: Option<unsafe extern "C" fn() -> *mut c_void>,
    _after_t_gett: [*mut c_void; TM_BINDS_SLOTS - T_GETT_INDEX - 1],
}

const PTR: usize = std::mem::size_of::<*mut c_void>();
const T_GETT_INDEX: usize = crate::host::sys::probed::TM_BINDS_T_GETT / PTR;
const TM_BINDS_SLOTS: usize = crate::host::sys::probed::SIZEOF_TM_BINDS / PTR;

impl TmBinds {
    /// tm's `t_gett`: the current transaction (NULL, `T_UNDEFINED` = -1, or a `struct cell*`).
    pub(crate) fn t_gett(&self) -> Option<unsafe extern "C" fn() -> *mut c_void> {
        self.t_gett
    }
}

/// `TMCB_RESPONSE_FWDED`: a reply is about to be relayed upstream.
pub(crate) const TMCB_RESPONSE_FWDED: c_int = 1 << 3;

// SAFETY: only function pointers into the tm module, fixed for the process life.
unsafe impl Send for TmBinds {}
// SAFETY: as above.
unsafe impl Sync for TmBinds {}

static BINDS: OnceLock<Option<TmBinds>> = OnceLock::new();

/// Binds the tm API; call once in `mod_init`.
pub(crate) fn load() -> bool {
    BINDS
        .get_or_init(|| {
            // SAFETY: `find_export` reads the loaded modules' tables; `load_tm` has the
            // signature `int load_tm(struct tm_binds*)` and fills the whole struct.
            unsafe {
                let f = (api().find_export)(c"load_tm".as_ptr(), 0);
                if f.is_null() {
                    return None;
                }
                let load: unsafe extern "C" fn(*mut TmBinds) -> c_int = std::mem::transmute(f);
                let mut b: TmBinds = std::mem::zeroed();
                if load(&mut b) == -1 || b.register_tmcb.is_none() {
                    return None;
                }
                Some(b)
            }
        })
        .is_some()
}

/// The tm API, once bound.
pub(crate) fn binds() -> Option<&'static TmBinds> {
    BINDS.get().and_then(Option::as_ref)
}

impl TmBinds {
    /// Registers `cb` for `types` on the transaction of `msg` (created if needed). `false`
    /// on failure.
    ///
    /// # Safety
    /// `msg` must be the request being processed by the current script function.
    pub(crate) unsafe fn register(&self, msg: *mut sip_msg, types: c_int, cb: TmCb) -> bool {
        let Some(f) = self.register_tmcb else {
            return false;
        };
        // SAFETY: per the contract; `cb` is an `extern "C"` function of this module, which is
        // never unloaded; no parameter and no release function. 1 means success.
        unsafe {
            f(
                msg,
                std::ptr::null_mut(),
                types,
                Some(cb),
                std::ptr::null_mut(),
                None,
            ) == 1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn layouts_match_the_host_profile() {
        use crate::host::sys::probed;
        assert_eq!(size_of::<TmBinds>(), probed::SIZEOF_TM_BINDS);
        assert_eq!(offset_of!(TmBinds, t_gett), probed::TM_BINDS_T_GETT);
        assert_eq!(size_of::<TmcbParams>(), probed::SIZEOF_TMCB_PARAMS);
        assert_eq!(size_of::<TmcbParams>(), 48);
        assert_eq!(offset_of!(TmcbParams, rpl), 8);
        assert_eq!(offset_of!(TmcbParams, code), 16);
        assert_eq!(offset_of!(TmcbParams, param), 24);
    }
}
