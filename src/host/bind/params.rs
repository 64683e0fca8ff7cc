//! The parameters of a script function as OpenSIPS passes them.

use std::ffi::{c_int, c_void};

use crate::host::ffi::cstr;

/// The eight `void*` parameters of a script function, as OpenSIPS passes them.
pub(crate) type Params = [*mut c_void; 8];

/// An optional `CMD_PARAM_INT` parameter.
///
/// # Safety
/// `p` must be NULL or the `int*` the host passed for that parameter.
pub(crate) unsafe fn opt_int(p: *mut c_void) -> Option<i32> {
    // SAFETY: per the contract.
    (!p.is_null()).then(|| unsafe { *p.cast::<c_int>() })
}

/// An optional `CMD_PARAM_STR` parameter, copied.
///
/// # Safety
/// `p` must be NULL or the `str*` the host passed for that parameter.
pub(crate) unsafe fn opt_str(p: *mut c_void) -> Option<Vec<u8>> {
    // SAFETY: per the contract.
    unsafe { cstr::opt_str(p.cast()) }
}
