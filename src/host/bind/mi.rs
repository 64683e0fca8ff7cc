//! MI replies: a small JSON value built in Rust, converted to the core's MI items in one place.

use std::ffi::c_char;

use crate::host::ffi::cstr::clamp_len;
use crate::host::ffi::sys::{self, mi_item_t, mi_response_t};

/// A reply value. Object keys keep their order, as the C module's replies do.
pub(crate) enum Json {
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(&'static str, Json)>),
}

/// The MI reply for `value`; NULL only when the core is out of memory.
pub(crate) fn reply(value: &Json) -> *mut mi_response_t {
    let mut item: *mut mi_item_t = std::ptr::null_mut();
    // SAFETY: the init functions return a fresh response (or NULL) and set `item` to its root.
    let resp = unsafe {
        match value {
            Json::Arr(_) => (crate::host::ffi::api::api().init_mi_result_array)(&mut item),
            Json::Obj(_) => (crate::host::ffi::api::api().init_mi_result_object)(&mut item),
            Json::Str(s) => {
                return (crate::host::ffi::api::api().init_mi_result_string)(
                    s.as_ptr().cast(),
                    clamp_len(s.len()),
                );
            }
            Json::Num(n) => {
                // No number-root helper is used by this module; render as a string.
                let s = n.to_string();
                return (crate::host::ffi::api::api().init_mi_result_string)(
                    s.as_ptr().cast(),
                    clamp_len(s.len()),
                );
            }
        }
    };
    if resp.is_null() || item.is_null() {
        return resp;
    }
    let ok = match value {
        Json::Arr(items) => items.iter().all(|v| add(item, b"", v)),
        Json::Obj(fields) => fields.iter().all(|(k, v)| add(item, k.as_bytes(), v)),
        _ => true,
    };
    if !ok {
        // SAFETY: `resp` is ours and was not handed to the core yet.
        unsafe { (crate::host::ffi::api::api().free_mi_response)(resp) };
        return error(500, "Internal error");
    }
    resp
}

/// Adds `value` under `name` (ignored inside arrays) to the container `to`.
fn add(to: *mut mi_item_t, name: &[u8], value: &Json) -> bool {
    let n = name.as_ptr().cast_mut().cast::<c_char>();
    let nl = clamp_len(name.len());
    // SAFETY: `to` is a live container of the response being built; names and strings are
    // copied by the core during the call.
    unsafe {
        match value {
            Json::Num(x) => (crate::host::ffi::api::api().add_mi_number)(to, n, nl, *x) >= 0,
            Json::Str(s) => {
                (crate::host::ffi::api::api().add_mi_string)(
                    to,
                    n,
                    nl,
                    s.as_ptr().cast(),
                    clamp_len(s.len()),
                ) >= 0
            }
            Json::Arr(items) => {
                let a = (crate::host::ffi::api::api().add_mi_array)(to, n, nl);
                !a.is_null() && items.iter().all(|v| add(a, b"", v))
            }
            Json::Obj(fields) => {
                let o = (crate::host::ffi::api::api().add_mi_object)(to, n, nl);
                !o.is_null() && fields.iter().all(|(k, v)| add(o, k.as_bytes(), v))
            }
        }
    }
}

/// An MI error reply with a code and message.
pub(crate) fn error(code: i32, msg: &str) -> *mut mi_response_t {
    // SAFETY: the message is copied by the core during the call.
    unsafe {
        (crate::host::ffi::api::api().init_mi_error_extra)(
            code,
            msg.as_ptr().cast(),
            clamp_len(msg.len()),
            std::ptr::null(),
            0,
        )
    }
}

/// The standard "Invalid params" reply after a failed parameter read.
pub(crate) fn param_error() -> *mut mi_response_t {
    // SAFETY: no arguments; returns a fresh response.
    unsafe { (crate::host::ffi::api::api().init_mi_param_error)() }
}

/// Reads a string parameter; `None` when missing or of the wrong type.
///
/// # Safety
/// `params` must be the live parameter set of the MI call being served.
pub(crate) unsafe fn string_param(
    params: *const sys::mi_params_t,
    name: &std::ffi::CStr,
) -> Option<Vec<u8>> {
    let mut p: *mut c_char = std::ptr::null_mut();
    let mut len: i32 = 0;
    // SAFETY: per the contract; the value is copied before the call returns.
    unsafe {
        if (crate::host::ffi::api::api().get_mi_string_param)(
            params,
            name.as_ptr().cast_mut(),
            &mut p,
            &mut len,
        ) < 0
        {
            return None;
        }
        Some(crate::host::ffi::cstr::ptr_len_bytes(p, len).to_vec())
    }
}

/// Reads an integer parameter (numbers or numeric strings); `None` when missing or invalid.
///
/// # Safety
/// `params` must be the live parameter set of the MI call being served.
pub(crate) unsafe fn int_param(
    params: *const sys::mi_params_t,
    name: &std::ffi::CStr,
) -> Option<i32> {
    let mut v: i32 = 0;
    // SAFETY: per the contract.
    let rc = unsafe {
        (crate::host::ffi::api::api().get_mi_int_param)(params, name.as_ptr().cast_mut(), &mut v)
    };
    (rc >= 0).then_some(v)
}
