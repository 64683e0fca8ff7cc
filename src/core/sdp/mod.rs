//! SDP scanning and minimal-splice rewriting (spec §4.3, §4.4, §4.7, §4.8).
//!
//! Layer: `core`. Pure byte work: no sockets, no clock, no host calls, no global state.
//!
//! The module never builds an SDP model that is printed back. [`scan`] records the byte
//! positions ([`Span`]s) of the few tokens the `rtpproxy` module may change; the rewriter
//! ([`Rewriter`]) turns RTPProxy's answers into a sorted list of non-overlapping [`SdpEdit`]s;
//! the host turns the same edits into OpenSIPS lumps (message mode) or applies them to a copy
//! with [`apply_edits`] (body-variable mode). Every byte outside an edit stays as received:
//! unknown attributes, ICE lines, whitespace and the line-ending style (CRLF, LF, mixes).
//!
//! Lines: a line is a maximal run of bytes containing neither `\r` nor `\n`, so a line starts
//! at the beginning of the body or right after a `\r` or `\n`. This is the C module's
//! "previous byte is CR or LF" rule (`find_sdp_line` in OpenSIPS' SDP helpers); the only
//! difference is that a lone `\r` also *ends* a line here (C looks for `\n` only), which only
//! matters for bodies with stray carriage returns.
//!
//! Errors are [`SdpError`]s; no input (any bytes, not only UTF-8) makes these functions panic.
#![warn(missing_docs)]

mod rewrite;
mod scan;
pub mod webrtc;

use std::fmt;
use std::ops::Range;

pub use rewrite::{
    apply_edits, is_null_address, marker_edit, MediaAnswer, RewriteOptions, Rewriter, SdpEdit,
};
pub use scan::{has_marker, scan};

/// A byte range of the body: `offset` and `len` in bytes from the start of the body given to
/// [`scan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    /// First byte.
    pub offset: usize,
    /// Number of bytes (may be 0 for an empty value).
    pub len: usize,
}

impl Span {
    /// A span from `offset` of `len` bytes.
    pub const fn new(offset: usize, len: usize) -> Self {
        Self { offset, len }
    }

    /// One past the last byte.
    pub const fn end(self) -> usize {
        self.offset.saturating_add(self.len)
    }

    /// As a `Range` for slicing.
    pub const fn range(self) -> Range<usize> {
        self.offset..self.end()
    }

    /// The bytes of `body` this span covers; empty when the span is out of range.
    pub fn slice(self, body: &[u8]) -> &[u8] {
        body.get(self.range()).unwrap_or_default()
    }
}

/// Address family of an SDP address (`IP4` / `IP6` token), of a packet address or of an
/// RTPProxy reply (`6` marker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4 (`IP4`).
    Ipv4,
    /// IPv6 (`IP6`).
    Ipv6,
}

impl Family {
    /// The digit used in `IP4` / `IP6`.
    pub const fn digit(self) -> u8 {
        match self {
            Self::Ipv4 => b'4',
            Self::Ipv6 => b'6',
        }
    }

    /// The null address written for a stream on hold (spec §4.7): `0.0.0.0` or `::`.
    pub const fn null_address(self) -> &'static [u8] {
        match self {
            Self::Ipv4 => b"0.0.0.0",
            Self::Ipv6 => b"::",
        }
    }

    /// Family of an address written as text: IPv6 when it contains a `:`, else IPv4.
    ///
    /// This is how a packet address rendered by OpenSIPS (`ip_addr2a`) is classified.
    pub fn of_text(text: &[u8]) -> Self {
        if text.contains(&b':') {
            Self::Ipv6
        } else {
            Self::Ipv4
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ipv4 => "IP4",
            Self::Ipv6 => "IP6",
        })
    }
}

/// The address part of a `c=` or `o=` line: the token after the first `IP4`/`IP6` token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    /// `IP4` or `IP6`.
    pub family: Family,
    /// The one byte `4` or `6` of the `IP4`/`IP6` token (rewritten when the family flips).
    pub family_digit: Span,
    /// The address token (a multicast `/ttl` suffix, if any, is part of it).
    pub addr: Span,
}

/// A `c=` or `o=` line and, when it has one, its address.
///
/// A line without a usable `IP4`/`IP6 <addr>` part is kept with `address: None`; it is an
/// error only when the module actually needs that address (as in the C module, which extracts
/// it lazily).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressLine {
    /// The whole line, without its line terminator.
    pub line: Span,
    /// The address, if the line has one.
    pub address: Option<Address>,
}

/// How a media protocol is handled (spec §4.4 table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// An RTP profile (`RTP/AVP`, `RTP/SAVPF`, `UDP/TLS/RTP/SAVPF`, …): proxied, and its payload
    /// types form the `c<pt,…>` codec list.
    Rtp,
    /// `udp`, `udptl`, `UDP/BFCP`: proxied, no codec list.
    Udp,
    /// Anything else (`TCP/MSRP`, `TCP/TLS/RTP/SAVPF`, `UDP/DTLS/SCTP`, …): skipped, and it
    /// does not consume a media index.
    Unsupported,
}

impl Protocol {
    /// Classifies a protocol token, case-insensitively, by the C module's table
    /// (`sup_ptypes` in rtpproxy.c).
    pub fn classify(proto: &[u8]) -> Self {
        const RTP: [&[u8]; 8] = [
            b"rtp/avp",
            b"rtp/avpf",
            b"rtp/savp",
            b"rtp/savpf",
            b"dccp/tls/rtp/savp",
            b"dccp/tls/rtp/savpf",
            b"udp/tls/rtp/savp",
            b"udp/tls/rtp/savpf",
        ];
        const UDP: [&[u8]; 3] = [b"udp", b"udptl", b"udp/bfcp"];
        if RTP.iter().any(|p| p.eq_ignore_ascii_case(proto)) {
            Self::Rtp
        } else if UDP.iter().any(|p| p.eq_ignore_ascii_case(proto)) {
            Self::Udp
        } else {
            Self::Unsupported
        }
    }
}

/// Which `c=` line a media description uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionSource {
    /// Its own media-level `c=` line.
    Media,
    /// The session-level `c=` line.
    Session,
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// Index of its session in [`Sdp::sessions`].
    pub session: usize,
    /// The `m=` line, without its terminator.
    pub line: Span,
    /// The whole media section: from the `m=` line to the next `m=` line or the end of the
    /// session.
    pub block: Span,
    /// The media type token (`audio`, `video`, …).
    pub media_type: Span,
    /// The port token, sent to RTPProxy as is and replaced as a whole (a `port/count` form
    /// included).
    pub port: Span,
    /// The protocol token.
    pub proto: Span,
    /// How the protocol is handled.
    pub protocol: Protocol,
    /// The payload list after the protocol (empty unless [`Protocol::Rtp`]).
    pub payloads: Span,
    /// The media-level `c=` line (first `c=` of the section), if any.
    pub connection: Option<AddressLine>,
    /// The value of the first `a=rtcp:` line of the section (after `a=rtcp:`, blanks trimmed).
    pub rtcp: Option<Span>,
    /// The effective connection address (media-level, else session-level). The C module needs
    /// it for every `m=` line, even one that is skipped afterwards, so [`scan`] fails without it.
    pub effective: Address,
    /// Where [`Media::effective`] comes from.
    pub effective_source: ConnectionSource,
    /// The media index `<m>` sent to RTPProxy (1-based, counted over the whole body, port-0
    /// streams included); `None` for an unsupported protocol.
    pub index: Option<u32>,
}

impl Media {
    /// Whether the port token is exactly `0` (stream disabled: no command, no rewrite).
    pub fn is_port_zero(&self, body: &[u8]) -> bool {
        self.port.slice(body) == b"0"
    }

    /// Whether RTPProxy is engaged for this stream: supported protocol and port not `0`.
    pub fn is_proxied(&self, body: &[u8]) -> bool {
        self.index.is_some() && !self.is_port_zero(body)
    }

    /// The codec list for the `c` modifier (spec §4.4): the payload digits with each run of
    /// other bytes between two payloads turned into one `,` and trailing non-digits dropped,
    /// e.g. `0 8 101` → `0,8,101`. `None` unless the protocol is an RTP profile.
    pub fn codec_list(&self, body: &[u8]) -> Option<Vec<u8>> {
        if self.protocol != Protocol::Rtp {
            return None;
        }
        let mut out = Vec::new();
        let mut pending_sep = false;
        for &b in self.payloads.slice(body) {
            if b.is_ascii_digit() {
                if pending_sep {
                    out.push(b',');
                    pending_sep = false;
                }
                out.push(b);
            } else {
                pending_sep = true;
            }
        }
        Some(out)
    }
}

/// One session description (from a `v=` line to the next `v=` line or the end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The session's bytes.
    pub span: Span,
    /// The first `o=` line.
    pub origin: AddressLine,
    /// The session-level `c=` line: the first `c=` between `o=` and the first `m=`.
    pub connection: Option<AddressLine>,
    /// Its media sections, as a range of indexes into [`Sdp::media`].
    pub media: Range<usize>,
}

/// The result of [`scan`]: sessions and media sections with the spans the rewriter may touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sdp<'a> {
    body: &'a [u8],
    start: usize,
    sessions: Vec<Session>,
    media: Vec<Media>,
}

impl<'a> Sdp<'a> {
    /// The body that was scanned.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// Offset of the first `v=` (leading whitespace skipped).
    pub fn start(&self) -> usize {
        self.start
    }

    /// The sessions, in body order.
    pub fn sessions(&self) -> &[Session] {
        &self.sessions
    }

    /// All media sections of all sessions, in body order.
    pub fn media(&self) -> &[Media] {
        &self.media
    }

    /// The bytes of `span` in the scanned body.
    pub fn text(&self, span: Span) -> &'a [u8] {
        span.slice(self.body)
    }
}

/// Why an SDP body cannot be processed (the C module returns -1 for all of these).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// After leading whitespace the body does not start with `v=`.
    #[error("no sessions in sdp (body does not start with v=)")]
    NoSession,
    /// A session has no `o=` line.
    #[error("no o= line in the session at offset {offset}")]
    NoOrigin {
        /// Offset of the session's `v=` line.
        offset: usize,
    },
    /// A session has no `m=` line after its `o=` line.
    #[error("no m= line in the session at offset {offset}")]
    NoMedia {
        /// Offset of the session's `v=` line.
        offset: usize,
    },
    /// A media section has neither a media-level nor a session-level `c=` line.
    #[error("no c= line for the m= line at offset {offset}")]
    NoConnection {
        /// Offset of the `m=` line.
        offset: usize,
    },
    /// A `c=` or `o=` line that is needed has no `IP4`/`IP6 <address>` part.
    #[error("no IP4/IP6 address in the line at offset {offset}")]
    BadAddressLine {
        /// Offset of the line.
        offset: usize,
    },
    /// An `m=` line lacks its port, its protocol or (RTP profiles) its payload types.
    #[error("malformed m= line at offset {offset}: {what}")]
    BadMediaLine {
        /// Offset of the `m=` line.
        offset: usize,
        /// What is missing.
        what: &'static str,
    },
    /// A replacement address is empty or contains whitespace or control bytes.
    #[error("unusable replacement address")]
    BadReplacementAddress,
    /// An answer names a media section that does not exist or is not proxied.
    #[error("media section {media} is not a proxied stream")]
    NotProxied {
        /// Index into [`Sdp::media`].
        media: usize,
    },
    /// The same media section was answered twice.
    #[error("media section {media} answered twice")]
    DuplicateAnswer {
        /// Index into [`Sdp::media`].
        media: usize,
    },
    /// An edit list is unsorted, overlapping or out of the body's range.
    #[error("edit at offset {offset} is out of order or out of range")]
    BadEdits {
        /// Offset of the offending edit.
        offset: usize,
    },
}
