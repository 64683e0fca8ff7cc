//! AVPs (`$avp(name)`), as `rtpproxy_all_stats` fills them (ABI spec §4.4, §4.15).
//!
//! An AVP parameter arrives as the `pv_spec_t*` of the script variable; its name (number and
//! name flags) is resolved per call with `pv_get_avp_name`, then values are appended with
//! `add_avp_last` so that index 0 is the first value written.

use std::ffi::{c_int, c_ushort, c_void};

use crate::host::ffi::api::api;
use crate::host::ffi::cstr;
use crate::host::ffi::sys::{pv_spec_t, sip_msg};

/// `PVT_AVP` of `enum _pv_type` (3.6.8).
pub(crate) const PVT_AVP: c_int = 4;
/// `AVP_VAL_STR`: the value is a string.
const AVP_VAL_STR: c_ushort = 1 << 1;

pub(crate) use crate::host::ffi::api::IntStr;

/// A resolved AVP name: what `search_first_avp` / `add_avp_last` take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AvpName {
    id: c_int,
    flags: c_ushort,
}

/// Whether a variable parameter is an AVP (`$avp(...)`).
///
/// # Safety
/// `spec` must be NULL or a live `pv_spec_t*` the host passed for a variable parameter.
pub(crate) unsafe fn is_avp(spec: *const c_void) -> bool {
    // SAFETY: per the contract; `type` is the first field of `pv_spec_t`.
    !spec.is_null() && unsafe { (*spec.cast::<pv_spec_t>()).type_ } == PVT_AVP
}

/// Resolves the AVP name of `spec` for the current message.
///
/// # Safety
/// `spec` must be a live `pv_spec_t*` of an AVP and `msg` the current message (or NULL).
pub(crate) unsafe fn name(msg: *mut sip_msg, spec: *mut c_void) -> Option<AvpName> {
    let spec = spec.cast::<pv_spec_t>();
    let mut id: c_int = 0;
    let mut flags: c_ushort = 0;
    // SAFETY: `pvp` is the `pv_param_t` embedded in the live spec; the outputs are locals.
    let r =
        unsafe { (api().pv_get_avp_name)(msg, (&raw mut (*spec).pvp).cast(), &mut id, &mut flags) };
    (r >= 0).then_some(AvpName { id, flags })
}

/// Deletes every value of the AVP.
pub(crate) fn clear(avp: AvpName) {
    let a = api();
    loop {
        // SAFETY: searching the current AVP list by a resolved name; no value is wanted back.
        let found = unsafe {
            (a.search_first_avp)(
                avp.flags,
                avp.id,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        if found.is_null() {
            break;
        }
        // SAFETY: `found` is a live AVP of the current list, found just above.
        unsafe { (a.destroy_avp)(found) };
    }
}

/// Appends an integer value.
pub(crate) fn push_int(avp: AvpName, value: i32) -> bool {
    // SAFETY: the core copies the value into a new AVP.
    unsafe { (api().add_avp_last)(avp.flags, avp.id, IntStr { n: value }) >= 0 }
}

/// Appends a string value (copied by the core).
pub(crate) fn push_str(avp: AvpName, value: &[u8]) -> bool {
    let s = cstr::borrowed_str(value);
    // SAFETY: the core copies the string into the new AVP during the call.
    unsafe { (api().add_avp_last)(avp.flags | AVP_VAL_STR, avp.id, IntStr { s }) >= 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_str_is_the_core_union() {
        assert_eq!(std::mem::size_of::<IntStr>(), 16);
        assert_eq!(std::mem::align_of::<IntStr>(), 8);
    }
}
