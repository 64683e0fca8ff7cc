//! The only place that converts between C strings and Rust data.
//!
//! Host `str` values (`{char *s; int len}`) are not NUL-terminated and often live in static
//! buffers that the next host call reuses, so they are borrowed for the call only or copied.

use std::ffi::{c_char, c_int, CStr};

use super::sys::host_str;
use crate::error::NotUtf8;

/// Borrows the bytes of a host `str`.
///
/// A NULL pointer or a non-positive length gives an empty slice.
///
/// # Safety
/// `s` must be NULL or point to a `str` whose `s`/`len` describe readable memory that stays
/// valid and unchanged for `'a`.
pub(crate) unsafe fn str_bytes<'a>(s: *const host_str) -> &'a [u8] {
    if s.is_null() {
        return &[];
    }
    // SAFETY: the caller guarantees `s` points to a valid host `str`.
    let v = unsafe { &*s };
    // SAFETY: the caller guarantees `s`/`len` describe readable memory for `'a`.
    unsafe { ptr_len_bytes(v.s, v.len) }
}

/// A host `str`, copied; NULL gives `None` (an empty string is kept).
///
/// # Safety
/// As [`str_bytes`].
pub(crate) unsafe fn opt_str(s: *const host_str) -> Option<Vec<u8>> {
    // SAFETY: per the contract.
    (!s.is_null()).then(|| unsafe { str_bytes(s) }.to_vec())
}

/// Borrows `len` bytes at `p`; NULL or `len <= 0` gives an empty slice.
///
/// # Safety
/// `p` must be NULL or valid for reads of `len` bytes for `'a`.
pub(crate) unsafe fn ptr_len_bytes<'a>(p: *const c_char, len: c_int) -> &'a [u8] {
    if p.is_null() || len <= 0 {
        return &[];
    }
    // SAFETY: the caller guarantees `p` is valid for `len` bytes; len > 0 checked above.
    unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len as usize) }
}

/// Copies a NUL-terminated C string (e.g. a modparam value) into an owned `String`.
///
/// Returns `None` for NULL; bytes that are not UTF-8 are refused with [`NotUtf8`], which
/// carries the lossy reading.
///
/// # Safety
/// `p` must be NULL or point to a NUL-terminated string readable for the call.
pub(crate) unsafe fn cstr_to_string(p: *const c_char) -> Option<Result<String, NotUtf8>> {
    if p.is_null() {
        return None;
    }
    // SAFETY: the caller guarantees `p` is a NUL-terminated readable string.
    let bytes = unsafe { CStr::from_ptr(p) }.to_bytes();
    Some(String::from_utf8(bytes.to_vec()).map_err(|_| NotUtf8 {
        lossy: String::from_utf8_lossy(bytes).into_owned(),
    }))
}

/// A `str` view of a Rust byte slice, for host APIs that only read the value during the call.
pub(crate) fn borrowed_str(bytes: &[u8]) -> host_str {
    host_str {
        s: bytes.as_ptr().cast_mut().cast::<c_char>(),
        len: clamp_len(bytes.len()),
    }
}

/// A length the host's `int` fields can hold.
pub(crate) fn clamp_len(len: usize) -> c_int {
    c_int::try_from(len).unwrap_or(c_int::MAX)
}

/// Copies bytes into a NUL-terminated owned buffer (interior NULs replaced by `?`), for host
/// calls that need a `char*` valid for the call.
pub(crate) fn to_c_buffer(bytes: &[u8]) -> Vec<u8> {
    let mut v: Vec<u8> = bytes
        .iter()
        .map(|&b| if b == 0 { b'?' } else { b })
        .collect();
    v.push(0);
    v
}
