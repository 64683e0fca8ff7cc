//! Reading a SIP message (`struct sip_msg`) and writing script variables.
//!
//! Field offsets are the measured 3.6.8 values (ABI spec §4.5); they are kept here, in one
//! place, so that a second ABI profile (4.0 moves the fields after `rcv`) is an addition.

use std::ffi::{c_int, c_void};
use std::net::IpAddr;

use super::api::api;
use super::cstr;
use super::sys::{self, host_str, pv_spec_t, pv_value_t, sip_msg};

/// Offsets into `struct sip_msg` and the structures it points to (3.6.8, x86_64).
mod off {
    pub(super) const FIRST_LINE_TYPE: usize = 8;
    pub(super) const METHOD_VALUE: usize = 64;
    pub(super) const CALLID: usize = 120;
    pub(super) const TO: usize = 128;
    pub(super) const FROM: usize = 144;
    pub(super) const RCV_SRC_IP: usize = 504;
    pub(super) const RCV_DST_IP: usize = 528;
    /// `struct hdr_field`: body `str` and parsed pointer.
    pub(super) const HDR_BODY: usize = 24;
    pub(super) const HDR_PARSED: usize = 48;
    /// `struct to_body`: tag_value `str`.
    pub(super) const TO_TAG: usize = 56;
}

const HDR_TO_F: u64 = 1 << 3;
const HDR_CALLID_F: u64 = 1 << 6;
const SIP_REQUEST: c_int = 1;
const SIP_REPLY: c_int = 2;

/// A SIP message the host passed to a script function, valid for the call.
#[derive(Clone, Copy)]
pub(crate) struct Msg {
    ptr: *mut sip_msg,
}

/// What kind of message a script function runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MsgKind {
    Request,
    Reply,
}

impl Msg {
    /// Wraps the message pointer of a script-function call. `None` for NULL and for the
    /// FAKED_REPLY marker (`(struct sip_msg*)-1`) of failure routes.
    ///
    /// # Safety
    /// `ptr` must be NULL, `-1`, or a message that stays valid for the whole call.
    pub(crate) unsafe fn from_ptr(ptr: *mut sip_msg) -> Option<Self> {
        if ptr.is_null() || ptr as isize == -1 {
            None
        } else {
            Some(Self { ptr })
        }
    }

    pub(crate) fn as_ptr(self) -> *mut sip_msg {
        self.ptr
    }

    /// Reads a field at `offset`.
    ///
    /// # Safety
    /// `offset` must be the offset of a field of type `T` in the 3.6.8 `sip_msg`.
    unsafe fn field<T: Copy>(self, offset: usize) -> T {
        // SAFETY: per the contract and the validity of the message for the call.
        unsafe {
            self.ptr
                .cast::<u8>()
                .add(offset)
                .cast::<T>()
                .read_unaligned()
        }
    }

    /// Request or reply.
    pub(crate) fn kind(self) -> Option<MsgKind> {
        // SAFETY: `first_line.type` is an int at offset 8.
        match unsafe { self.field::<c_int>(off::FIRST_LINE_TYPE) } {
            SIP_REQUEST => Some(MsgKind::Request),
            SIP_REPLY => Some(MsgKind::Reply),
            _ => None,
        }
    }

    /// The request method bit (`METHOD_INVITE` = 1, ...); 0 for replies.
    pub(crate) fn method(self) -> u32 {
        if self.kind() != Some(MsgKind::Request) {
            return 0;
        }
        // SAFETY: `first_line.u.request.method_value` is an int at offset 64.
        unsafe { self.field::<u32>(off::METHOD_VALUE) }
    }

    fn parse(self, flags: u64) -> bool {
        // SAFETY: `parse_headers_aux` parses the live message up to the wanted headers.
        unsafe { (api().parse_headers_aux)(self.ptr, flags, 0, 1) >= 0 }
    }

    /// The body of a header field pointer read at `offset`, trimmed of whitespace.
    fn header_body(self, offset: usize) -> Option<Vec<u8>> {
        // SAFETY: offsets 120/128/144 hold `struct hdr_field*`; the header's body `str` is at
        // offset 24 and points into the message buffer, valid for the call.
        unsafe {
            let hdr = self.field::<*mut u8>(offset);
            if hdr.is_null() {
                return None;
            }
            let body = hdr.add(off::HDR_BODY).cast::<host_str>();
            Some(cstr::str_bytes(body).trim_ascii().to_vec())
        }
    }

    /// The Call-ID, trimmed; `None` when missing or empty.
    pub(crate) fn call_id(self) -> Option<Vec<u8>> {
        if !self.parse(HDR_CALLID_F) {
            return None;
        }
        self.header_body(off::CALLID).filter(|v| !v.is_empty())
    }

    /// The tag of the parsed To/From body behind the header at `offset`.
    fn tag(self, offset: usize) -> Option<Vec<u8>> {
        // SAFETY: the header exists and was parsed (checked by the callers), so `parsed`
        // points at a `struct to_body` whose `tag_value` str is at offset 56.
        unsafe {
            let hdr = self.field::<*mut u8>(offset);
            if hdr.is_null() {
                return None;
            }
            let parsed = hdr.add(off::HDR_PARSED).cast::<*mut u8>().read_unaligned();
            if parsed.is_null() {
                return None;
            }
            let tag = cstr::str_bytes(parsed.add(off::TO_TAG).cast::<host_str>());
            Some(tag.to_vec()).filter(|t| !t.is_empty())
        }
    }

    /// The From-tag (`ftag`); `None` when the header or the tag is missing.
    pub(crate) fn ftag(self) -> Option<Vec<u8>> {
        // SAFETY: parses the From header of the live message.
        if unsafe { (api().parse_from_header)(self.ptr) } != 0 {
            return None;
        }
        self.tag(off::FROM)
    }

    /// The To-tag; `None` when missing (e.g. an initial request).
    pub(crate) fn ttag(self) -> Option<Vec<u8>> {
        if !self.parse(HDR_TO_F) {
            return None;
        }
        self.tag(off::TO)
    }

    fn ip_at(self, offset: usize) -> Option<IpAddr> {
        // SAFETY: `struct ip_addr` at `offset`: af u32, len u32, 16 address bytes.
        let (af, bytes) = unsafe {
            (
                self.field::<u32>(offset),
                self.field::<[u8; 16]>(offset + 8),
            )
        };
        match af as c_int {
            libc::AF_INET => Some(IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])),
            libc::AF_INET6 => Some(IpAddr::from(bytes)),
            _ => None,
        }
    }

    /// The address the message came from.
    pub(crate) fn source_ip(self) -> Option<IpAddr> {
        self.ip_at(off::RCV_SRC_IP)
    }

    /// The local address the message was received on.
    pub(crate) fn local_ip(self) -> Option<IpAddr> {
        self.ip_at(off::RCV_DST_IP)
    }
}

/// Stores a string in a writable script variable (`sock_var`, `ret_var`, ...).
///
/// # Safety
/// `spec` must be NULL or a `pv_spec_t*` the host passed for a `CMD_PARAM_VAR` parameter of
/// the current call, and `msg` the current message (or NULL).
pub(crate) unsafe fn set_var_str(msg: *mut sip_msg, spec: *mut c_void, value: &[u8]) -> bool {
    if spec.is_null() {
        return true;
    }
    let spec = spec.cast::<pv_spec_t>();
    let mut v = pv_value_t {
        rs: cstr::borrowed_str(value),
        ri: 0,
        flags: sys::PV_VAL_STR as c_int,
    };
    // SAFETY: per the contract; the core copies the string during the call (EQ_T assignment).
    unsafe { (api().pv_set_value)(msg, spec, sys::EQ_T as c_int, &mut v) >= 0 }
}
