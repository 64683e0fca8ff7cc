//! Reading a SIP message (`struct sip_msg`) and writing script variables.
//!
//! Field offsets come from the host profile (`sys::probed`, measured per release by
//! tests/abi_probe; 4.0 moves every field after `rcv` by 64 bytes).

use std::ffi::{c_int, c_void};
use std::marker::PhantomData;
use std::net::IpAddr;
use std::ptr::NonNull;

use crate::error::HostError;
use crate::host::ffi::api::api;
use crate::host::ffi::cstr;
use crate::host::ffi::sys::{self, host_str, pv_spec_t, pv_value_t, sip_msg};

/// Offsets into `struct sip_msg` and the structures it points to (host profile).
mod off {
    use crate::host::ffi::sys::probed as p;
    pub(super) const FIRST_LINE_TYPE: usize = p::SIP_MSG_FIRST_LINE_TYPE;
    pub(super) const METHOD_VALUE: usize = p::SIP_MSG_METHOD_VALUE;
    pub(super) const CALLID: usize = p::SIP_MSG_CALLID;
    pub(super) const TO: usize = p::SIP_MSG_TO;
    pub(super) const FROM: usize = p::SIP_MSG_FROM;
    pub(super) const RCV_SRC_IP: usize = p::SIP_MSG_RCV_SRC_IP;
    pub(super) const RCV_DST_IP: usize = p::SIP_MSG_RCV_DST_IP;
    /// `struct hdr_field`: body `str` and parsed pointer.
    pub(super) const HDR_BODY: usize = p::HDR_FIELD_BODY;
    pub(super) const HDR_PARSED: usize = p::HDR_FIELD_PARSED;
    /// `struct to_body`: tag_value `str`.
    pub(super) const TO_TAG: usize = p::TO_BODY_TAG_VALUE;
}

const HDR_TO_F: u64 = 1 << 3;
const HDR_CALLID_F: u64 = 1 << 6;
const SIP_REQUEST: c_int = 1;
const SIP_REPLY: c_int = 2;

/// A SIP message the host passed to a script function or callback, borrowed for that call
/// (`'a`): created only by the shell that received the pointer, not `Copy`, so neither it nor
/// the host strings read from it (`&'a [u8]`) can outlive the call.
pub(crate) struct Msg<'a> {
    ptr: NonNull<sip_msg>,
    _msg: PhantomData<&'a mut sip_msg>,
}

/// What kind of message a script function runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MsgKind {
    Request,
    Reply,
}

impl<'a> Msg<'a> {
    /// Wraps the message pointer of a script-function call. `None` for NULL and for the
    /// FAKED_REPLY marker (`(struct sip_msg*)-1`) of failure routes.
    ///
    /// # Safety
    /// `ptr` must be NULL, `-1`, or a message that stays valid for the whole call.
    pub(crate) unsafe fn from_ptr(ptr: *mut sip_msg) -> Option<Self> {
        if ptr as isize == -1 {
            return None;
        }
        NonNull::new(ptr).map(|ptr| Self {
            ptr,
            _msg: PhantomData,
        })
    }

    /// The message, for host calls that take it.
    pub(crate) fn as_ptr(&self) -> *mut sip_msg {
        self.ptr.as_ptr()
    }

    /// Reads a field at `offset`.
    ///
    /// # Safety
    /// `offset` must be the offset of a field of type `T` in the host's `sip_msg`.
    unsafe fn field<T: Copy>(&self, offset: usize) -> T {
        // SAFETY: per the contract and the validity of the message for the call.
        unsafe {
            self.as_ptr()
                .cast::<u8>()
                .add(offset)
                .cast::<T>()
                .read_unaligned()
        }
    }

    /// Request or reply.
    pub(crate) fn kind(&self) -> Option<MsgKind> {
        // SAFETY: `first_line.type` is an int at offset 8.
        match unsafe { self.field::<c_int>(off::FIRST_LINE_TYPE) } {
            SIP_REQUEST => Some(MsgKind::Request),
            SIP_REPLY => Some(MsgKind::Reply),
            _ => None,
        }
    }

    /// The request method bit (`METHOD_INVITE` = 1, ...); 0 for replies.
    pub(crate) fn method(&self) -> u32 {
        if self.kind() != Some(MsgKind::Request) {
            return 0;
        }
        // SAFETY: `first_line.u.request.method_value` is an int at offset 64.
        unsafe { self.field::<u32>(off::METHOD_VALUE) }
    }

    fn parse(&self, flags: u64) -> bool {
        // SAFETY: `parse_headers_aux` parses the live message up to the wanted headers.
        unsafe { (api().parse_headers_aux)(self.as_ptr(), flags, 0, 1) >= 0 }
    }

    /// The body of a header field pointer read at `offset`, trimmed of whitespace.
    fn header_body(&self, offset: usize) -> Option<&'a [u8]> {
        // SAFETY: offsets 120/128/144 hold `struct hdr_field*`; the header's body `str` is at
        // offset 24 and points into the message buffer, valid for the call.
        unsafe {
            let hdr = self.field::<*mut u8>(offset);
            if hdr.is_null() {
                return None;
            }
            let body = hdr.add(off::HDR_BODY).cast::<host_str>();
            Some(cstr::str_bytes(body).trim_ascii())
        }
    }

    /// The Call-ID, trimmed; `None` when missing or empty.
    pub(crate) fn call_id(&self) -> Option<&'a [u8]> {
        if !self.parse(HDR_CALLID_F) {
            return None;
        }
        self.header_body(off::CALLID).filter(|v| !v.is_empty())
    }

    /// The tag of the parsed To/From body behind the header at `offset`.
    fn tag(&self, offset: usize) -> Option<&'a [u8]> {
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
            Some(tag).filter(|t| !t.is_empty())
        }
    }

    /// The From-tag (`ftag`); `None` when the header or the tag is missing.
    pub(crate) fn ftag(&self) -> Option<&'a [u8]> {
        // SAFETY: parses the From header of the live message.
        if unsafe { (api().parse_from_header)(self.as_ptr()) } != 0 {
            return None;
        }
        self.tag(off::FROM)
    }

    /// The To-tag; `None` when missing (e.g. an initial request).
    pub(crate) fn ttag(&self) -> Option<&'a [u8]> {
        if !self.parse(HDR_TO_F) {
            return None;
        }
        self.tag(off::TO)
    }

    fn ip_at(&self, offset: usize) -> Option<IpAddr> {
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
    pub(crate) fn source_ip(&self) -> Option<IpAddr> {
        self.ip_at(off::RCV_SRC_IP)
    }

    /// The local address the message was received on.
    pub(crate) fn local_ip(&self) -> Option<IpAddr> {
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

/// Offsets used for bodies and lumps.
mod body_off {
    use crate::host::ffi::sys::probed as p;
    pub(super) const ID: usize = p::SIP_MSG_ID;
    pub(super) const BODY: usize = p::SIP_MSG_BODY;
    pub(super) const BUF: usize = p::SIP_MSG_BUF;
    pub(super) const LEN: usize = p::SIP_MSG_LEN;
    /// `struct sip_msg_body`: the first `struct body_part` is embedded.
    pub(super) const FIRST_PART: usize = p::SIP_MSG_BODY_FIRST;
    /// `struct body_part`: mime int, flags u32, body str, next pointer.
    pub(super) const PART_MIME: usize = p::BODY_PART_MIME;
    pub(super) const PART_FLAGS: usize = p::BODY_PART_FLAGS;
    pub(super) const PART_BODY: usize = p::BODY_PART_BODY;
    pub(super) const PART_NEXT: usize = p::BODY_PART_NEXT;
}

const HDR_EOH_F: u64 = u64::MAX;
/// `(TYPE_APPLICATION << 16) + SUBTYPE_SDP`.
const MIME_APPLICATION_SDP: c_int = (3 << 16) + 3;
const PART_FLAG_NEW_OR_DELETED: u32 = 0b11;

/// One `application/sdp` part received with the message: its bytes and where they start in
/// the message buffer.
pub(crate) struct SdpPart {
    pub(crate) offset: usize,
    pub(crate) bytes: Vec<u8>,
}

/// The outcome of looking for SDP in a message.
pub(crate) enum Bodies {
    /// The message has no body (or it cannot be parsed).
    NoBody,
    /// A body without any SDP part.
    NoSdp,
    /// The SDP parts, in order.
    Sdp(Vec<SdpPart>),
}

impl<'a> Msg<'a> {
    /// The per-process message id (with the buffer address, identifies one message).
    pub(crate) fn identity(&self) -> (u32, usize) {
        // SAFETY: `id` is an unsigned int and `buf` a pointer, at the profile's offsets.
        unsafe {
            (
                self.field::<u32>(body_off::ID),
                self.field::<usize>(body_off::BUF),
            )
        }
    }

    /// Length of the received message buffer.
    pub(crate) fn len(&self) -> usize {
        // SAFETY: `len` is an unsigned int at the profile's offset.
        unsafe { self.field::<u32>(body_off::LEN) as usize }
    }

    /// The last byte of the received message buffer (0 for an empty one).
    pub(crate) fn last_byte(&self) -> u8 {
        let len = self.len();
        if len == 0 {
            return 0;
        }
        // SAFETY: `buf` points at `len` readable bytes for the call.
        unsafe { *self.field::<*const u8>(body_off::BUF).add(len - 1) }
    }

    /// Every `application/sdp` part received with the message (spec §4.10).
    pub(crate) fn sdp_parts(&self) -> Bodies {
        if !self.parse(HDR_EOH_F) {
            return Bodies::NoBody;
        }
        // SAFETY: `parse_sip_body` parses the body of the live message into `msg->body`.
        if unsafe { (api().parse_sip_body)(self.as_ptr()) } < 0 {
            return Bodies::NoBody;
        }
        // SAFETY: `body` is a `struct sip_msg_body*` (NULL without a body) at the profile's
        // offset, filled by the call above.
        let body = unsafe { self.field::<*mut u8>(body_off::BODY) };
        if body.is_null() {
            return Bodies::NoBody;
        }
        // SAFETY: `buf` is the message buffer pointer at the profile's offset.
        let buf = unsafe { self.field::<*const u8>(body_off::BUF) } as usize;
        let len = self.len();
        let mut parts = Vec::new();
        // SAFETY: the first `struct body_part` is embedded in the live `struct sip_msg_body`
        // at the profile's offset (an address inside the same allocation).
        let mut part = unsafe { body.add(body_off::FIRST_PART) };
        while !part.is_null() {
            // SAFETY: `part` is a live `struct body_part` of this message's list; `mime` (int),
            // `flags` (unsigned) and `next` (pointer) are read at the profile's offsets.
            let (mime, flags, next) = unsafe {
                (
                    part.add(body_off::PART_MIME)
                        .cast::<c_int>()
                        .read_unaligned(),
                    part.add(body_off::PART_FLAGS)
                        .cast::<u32>()
                        .read_unaligned(),
                    part.add(body_off::PART_NEXT)
                        .cast::<*mut u8>()
                        .read_unaligned(),
                )
            };
            // SAFETY: the part's `body` str describes its bytes: inside the message buffer for
            // a received part, in pkg memory for one a script added; valid for the call, and
            // copied below before the borrow ends.
            let bytes =
                unsafe { cstr::str_bytes(part.add(body_off::PART_BODY).cast::<host_str>()) };
            let start = bytes.as_ptr() as usize;
            let inside = start >= buf && start + bytes.len() <= buf + len;
            if mime == MIME_APPLICATION_SDP
                && flags & PART_FLAG_NEW_OR_DELETED == 0
                && !bytes.is_empty()
                && inside
            {
                parts.push(SdpPart {
                    offset: start - buf,
                    bytes: bytes.to_vec(),
                });
            }
            part = next;
        }
        if parts.is_empty() {
            Bodies::NoSdp
        } else {
            Bodies::Sdp(parts)
        }
    }

    /// Replaces `len` bytes at `offset` of the message buffer with `with` (a deletion plus an
    /// insertion lump; `len == 0` is a pure insertion). Content-Length follows automatically.
    pub(crate) fn splice(&self, offset: usize, len: usize, with: &[u8]) -> Result<(), HostError> {
        // SAFETY: reading the message length field.
        let total = unsafe { self.field::<u32>(body_off::LEN) } as usize;
        if offset.checked_add(len).is_none_or(|end| end > total) {
            return Err(HostError::EditOutside { offset, len, total });
        }
        let a = api();
        // SAFETY: the range is inside the buffer (checked above: `del_lump` aborts otherwise);
        // headers were parsed to EOH by `sdp_parts`, so the lumps go to the body list.
        let anchor = unsafe {
            if len == 0 {
                (a.anchor_lump)(self.as_ptr(), offset as u32, 0)
            } else {
                (a.del_lump)(self.as_ptr(), offset as u32, len as u32, 0)
            }
        };
        if anchor.is_null() {
            return Err(HostError::Lump("create"));
        }
        if with.is_empty() {
            return Ok(());
        }
        let copy = crate::host::ffi::mem::pkg_copy(with).ok_or(HostError::OutOfPkgMemory)?;
        // SAFETY: `anchor` is a live lump of this message; on success the lump owns `copy`.
        let l = unsafe { (a.insert_new_lump_after)(anchor, copy, with.len() as u32, 0) };
        if l.is_null() {
            // SAFETY: the lump did not take the copy, so it is still ours to free.
            unsafe { crate::host::ffi::mem::pkg_free(copy.cast()) };
            return Err(HostError::Lump("insert"));
        }
        Ok(())
    }
}

/// Reads a string variable (`body_var`); `None` when it is not a string.
///
/// # Safety
/// `spec` must be a `pv_spec_t*` the host passed for a variable parameter of this call.
pub(crate) unsafe fn get_var_str(msg: *mut sip_msg, spec: *mut c_void) -> Option<Vec<u8>> {
    let mut v = pv_value_t {
        rs: cstr::borrowed_str(b""),
        ri: 0,
        flags: 0,
    };
    // SAFETY: per the contract; the value may live in a static buffer, so it is copied at once.
    unsafe {
        if (api().pv_get_spec_value)(msg, spec.cast::<pv_spec_t>(), &mut v) != 0 {
            return None;
        }
        if v.flags & sys::PV_VAL_STR as c_int == 0 {
            return None;
        }
        Some(cstr::str_bytes(&v.rs).to_vec())
    }
}

/// Reads a variable as text, as the C module reads `bind_local`: `Ok(None)` when it is NULL
/// or empty, its string, or its integer in decimal; `Err(())` for any other value (or a
/// failed read).
///
/// # Safety
/// `spec` must be a `pv_spec_t*` the host passed for a variable parameter of this call.
pub(crate) unsafe fn get_var_text(
    msg: *mut sip_msg,
    spec: *mut c_void,
) -> Result<Option<Vec<u8>>, ()> {
    let mut v = pv_value_t {
        rs: cstr::borrowed_str(b""),
        ri: 0,
        flags: 0,
    };
    // SAFETY: per the contract; the value may live in a static buffer, so it is copied at once.
    let text = unsafe {
        if (api().pv_get_spec_value)(msg, spec.cast::<pv_spec_t>(), &mut v) < 0 {
            return Err(());
        }
        if v.flags & sys::PV_VAL_NULL as c_int != 0 {
            return Ok(None);
        }
        if v.flags & sys::PV_VAL_STR as c_int != 0 {
            cstr::str_bytes(&v.rs).to_vec()
        } else if v.flags & sys::PV_VAL_INT as c_int != 0 {
            v.ri.to_string().into_bytes()
        } else {
            return Err(());
        }
    };
    Ok(Some(text).filter(|t| !t.is_empty()))
}

/// An address in OpenSIPS' own text form (`ip_addr2a`): IPv4 dotted; IPv6 as 8 upper-case
/// groups without leading zeros and without `::` compression.
pub(crate) fn opensips_ip_text(ip: IpAddr) -> String {
    IpText::new(ip).as_str().to_owned()
}

/// [`opensips_ip_text`] on the stack: the per-call paths format the source and local address
/// of every offer/answer without a heap allocation.
pub(crate) struct IpText {
    buf: [u8; 40],
    len: usize,
}

impl IpText {
    pub(crate) fn new(ip: IpAddr) -> Self {
        use std::fmt::Write as _;
        let mut t = IpText {
            buf: [0; 40],
            len: 0,
        };
        // Both forms fit in 39 bytes (8 groups of at most 4 hex digits and 7 colons), so
        // the writes below cannot fail.
        let _ = match ip {
            // dotted quad by hand: the formatting machinery costs more than the rest
            IpAddr::V4(v4) => v4.octets().into_iter().enumerate().try_for_each(|(i, o)| {
                if i > 0 {
                    t.push(b".")?;
                }
                t.push(crate::core::text::decimal(u32::from(o), &mut [0; 10]))
            }),
            IpAddr::V6(v6) => v6
                .segments()
                .iter()
                .enumerate()
                .try_for_each(|(i, g)| write!(t, "{}{g:X}", if i > 0 { ":" } else { "" })),
        };
        t
    }

    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII is ever appended (see `push`).
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl IpText {
    /// Appends ASCII text (what `as_str` reads back as UTF-8).
    fn push(&mut self, b: &[u8]) -> std::fmt::Result {
        let end = self.len + b.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(std::fmt::Error)?
            .copy_from_slice(b);
        self.len = end;
        Ok(())
    }
}

impl std::fmt::Write for IpText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.push(s.as_bytes())
    }
}

/// Stores an integer, with its decimal text as the string form, in a writable script variable
/// (as `rtpproxy_stats` does: `PV_VAL_STR|PV_VAL_INT|PV_TYPE_INT`).
///
/// # Safety
/// As [`set_var_str`].
pub(crate) unsafe fn set_var_int(
    msg: *mut sip_msg,
    spec: *mut c_void,
    value: i32,
    text: &[u8],
) -> bool {
    if spec.is_null() {
        return true;
    }
    let mut v = pv_value_t {
        rs: cstr::borrowed_str(text),
        ri: value,
        flags: (sys::PV_VAL_STR | sys::PV_VAL_INT | sys::PV_TYPE_INT) as c_int,
    };
    // SAFETY: per the contract; the core copies the value during the call.
    unsafe { (api().pv_set_value)(msg, spec.cast::<pv_spec_t>(), sys::EQ_T as c_int, &mut v) >= 0 }
}

// ---- dialog integration (rtpproxy_engage, spec §5) ----------------------------------------

/// `msg_flags` bit the C module sets once engage callbacks are registered for a message.
pub(crate) const FL_USE_RTPPROXY: u32 = 1 << 12;
/// `METHOD_*` values of `first_line.u.request.method_value` and of the CSeq method id.
pub(crate) const METHOD_INVITE: u32 = 1;
pub(crate) const METHOD_ACK: u32 = 4;

/// Offsets used by the dialog integration (host profile).
mod dlg_off {
    /// `struct sip_msg`: `cseq` header pointer, reply status code, `msg_flags`.
    use crate::host::ffi::sys::probed as p;
    pub(super) const CSEQ: usize = p::SIP_MSG_CSEQ;
    pub(super) const STATUS_CODE: usize = p::SIP_MSG_STATUS_CODE;
    pub(super) const MSG_FLAGS: usize = p::SIP_MSG_MSG_FLAGS;
    /// `struct cseq_body`: `method_id` (int), after `error`, `number` and `method`.
    pub(super) const CSEQ_METHOD_ID: usize = p::CSEQ_BODY_METHOD_ID;
}

const HDR_CSEQ_F: u64 = 1 << 5;

impl<'a> Msg<'a> {
    /// The method id of the CSeq header (`METHOD_*`), for requests and replies alike; `None`
    /// when the header is missing or does not parse.
    pub(crate) fn cseq_method(&self) -> Option<u32> {
        if !self.parse(HDR_CSEQ_F) {
            return None;
        }
        // SAFETY: `cseq` is a `struct hdr_field*` at 136; once parsed, its `parsed` pointer
        // (offset 48) is the `struct cseq_body`, whose `method_id` int is at 40.
        unsafe {
            let hdr = self.field::<*mut u8>(dlg_off::CSEQ);
            if hdr.is_null() {
                return None;
            }
            let body = hdr.add(off::HDR_PARSED).cast::<*mut u8>().read_unaligned();
            if body.is_null() {
                return None;
            }
            Some(
                body.add(dlg_off::CSEQ_METHOD_ID)
                    .cast::<c_int>()
                    .read_unaligned() as u32,
            )
        }
    }

    /// The status code of a reply; 0 for a request.
    pub(crate) fn status_code(&self) -> u32 {
        if self.kind() != Some(MsgKind::Reply) {
            return 0;
        }
        // SAFETY: `first_line.u.reply.statuscode` is an unsigned int at 64.
        unsafe { self.field::<u32>(dlg_off::STATUS_CODE) }
    }

    /// `msg_flags`.
    pub(crate) fn msg_flags(&self) -> u32 {
        // SAFETY: `msg_flags` is an unsigned int at the profile's offset.
        unsafe { self.field::<u32>(dlg_off::MSG_FLAGS) }
    }

    /// Sets bits in `msg_flags`.
    pub(crate) fn add_msg_flags(&self, bits: u32) {
        let v = self.msg_flags() | bits;
        // SAFETY: `msg_flags` is an unsigned int (profile offset) of the live message, which the
        // current process owns while it handles it.
        unsafe {
            self.as_ptr()
                .cast::<u8>()
                .add(dlg_off::MSG_FLAGS)
                .cast::<u32>()
                .write_unaligned(v)
        }
    }
}

// ---- autobridge (spec §4.12) --------------------------------------------------------------

/// `HDR_VIA2_F`: parse up to the second Via.
const HDR_VIA2_F: u64 = 1 << 2;
/// `PARSE_OK` of `struct via_body.error`.
const PARSE_OK: c_int = 1;
/// `struct sip_msg`: `via2` (`struct via_body*`) at 80; `struct via_body`: `error` int at 0.
const VIA2: usize = sys::probed::SIP_MSG_VIA2;

impl<'a> Msg<'a> {
    /// Where the second Via of a reply says to send it (its `received`/`rport`, `maddr` or
    /// host, resolved as the core resolves it for forwarding, `update_sock_struct_from_via`);
    /// `None` without a usable second Via.
    pub(crate) fn via2_destination(&self) -> Option<IpAddr> {
        if !self.parse(HDR_VIA2_F) {
            return None;
        }
        // SAFETY: `via2` is a `struct via_body*` at offset 80, NULL or parsed by the call
        // above; its `error` int is at offset 0.
        let via = unsafe { self.field::<*mut c_void>(VIA2) };
        if via.is_null() {
            return None;
        }
        // SAFETY: `via` is a live `struct via_body` of this message (checked non-NULL).
        if unsafe { via.cast::<c_int>().read_unaligned() } != PARSE_OK {
            return None;
        }
        // SAFETY: all-zero is a valid `sockaddr_storage`, large enough and aligned for the
        // 28-byte `union sockaddr_union` the core fills.
        let mut su: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        // SAFETY: the live message, its parsed second Via and a writable sockaddr buffer.
        let r = unsafe {
            (api().update_sock_struct_from_via)(
                std::ptr::from_mut(&mut su).cast::<c_void>(),
                self.as_ptr(),
                via,
            )
        };
        if r == -1 {
            return None;
        }
        match c_int::from(su.ss_family) {
            libc::AF_INET => {
                // SAFETY: the family says the storage holds a `sockaddr_in`.
                let sin = unsafe { &*std::ptr::from_ref(&su).cast::<libc::sockaddr_in>() };
                Some(IpAddr::from(sin.sin_addr.s_addr.to_ne_bytes()))
            }
            libc::AF_INET6 => {
                // SAFETY: the family says the storage holds a `sockaddr_in6`.
                let sin6 = unsafe { &*std::ptr::from_ref(&su).cast::<libc::sockaddr_in6>() };
                Some(IpAddr::from(sin6.sin6_addr.s6_addr))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod ip_text_tests {
    use super::*;

    #[test]
    fn ip_text_matches_opensips_forms() {
        let v4: IpAddr = "192.0.2.10".parse().unwrap();
        assert_eq!(IpText::new(v4).as_str(), "192.0.2.10");
        let v6: IpAddr = "2001:db8::a:1".parse().unwrap();
        assert_eq!(IpText::new(v6).as_str(), "2001:DB8:0:0:0:0:A:1");
        let widest: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap();
        assert_eq!(
            IpText::new(widest).as_str(),
            "FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF"
        );
        assert_eq!(opensips_ip_text(v6), "2001:DB8:0:0:0:0:A:1");
        // every octet value, against the standard formatting
        for o in 0..=255u8 {
            for ip in [
                [o, 0, 100, 255],
                [255, o, 9, 10],
                [1, 20, o, 0],
                [0, 0, 0, o],
            ] {
                let ip = std::net::Ipv4Addr::from(ip);
                assert_eq!(IpText::new(IpAddr::V4(ip)).as_str(), ip.to_string());
            }
        }
    }
}
