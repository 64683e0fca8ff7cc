//! `rtpproxy_offer` / `rtpproxy_answer` decisions, sans-IO (spec §3.5, §4).
//!
//! Layer: `core`. Nothing here opens a socket, reads a clock or calls the host: the host
//! gives the SDP body, the flags, the message facts and the node capabilities, sends the
//! commands built here and hands back the replies.
//!
//! # Driving one call
//!
//! 1. [`Flags::parse`] (or [`Flags::parse_script_param`] for a script parameter).
//! 2. [`OfferAnswer::new`]: tag placement (§4.2), marker check (§4.3), SDP scan (§4.4) and the
//!    list of proxied streams with the address to announce (§4.5). All SDP errors are found
//!    here, before any command is sent.
//! 3. If [`OfferAnswer::needs_dialog_for_notify`], create the dialog when the request is an
//!    initial one; whenever a dialog exists, pass its id with [`OfferAnswer::set_dialog_id`].
//! 4. For each stream ([`OfferAnswer::current_stream`]): select a node, then
//!    [`OfferAnswer::build_command`] with that node's capabilities, send it, and give the reply
//!    (or `None` for a transport failure) to [`OfferAnswer::handle_reply`]. On
//!    [`ReplyOutcome::Retry`] disable the node, select another and build the command again
//!    (the command is rebuilt from scratch for the new node's capabilities, fixing D13).
//! 5. [`OfferAnswer::finish`]: the SDP edits (for lumps or [`crate::core::sdp::apply_edits`]).
//!
//! ```
//! use rtpproxy::core::offer::*;
//! use rtpproxy::core::proto::Capabilities;
//!
//! let body = b"v=0\r\no=- 1 1 IN IP4 10.1.1.5\r\ns=-\r\nc=IN IP4 10.1.1.5\r\nt=0 0\r\n\
//!              m=audio 49170 RTP/AVP 0\r\nm=video 51372 RTP/AVP 31\r\n";
//! let flags = Flags::parse(b"")?;
//! let input = OfferAnswerInput::new(
//!     body, &flags, b"a84b4c76e66710@pc33", b"1928301774", b"",
//!     SipMessage::Request(PacketInfo { source_ip: "192.0.2.10", local_ip: "10.0.0.1" }),
//!     Direction::Offer,
//! );
//! let mut oa = OfferAnswer::new(input)?;
//! let node = NodeInfo { caps: Capabilities::CODECS, advertised: None };
//! let mut sent = Vec::new();
//! while oa.current_stream().is_some() {
//!     let cmd = oa.build_command(node)?;
//!     sent.push(String::from_utf8(cmd.as_bytes().to_vec()).unwrap());
//!     // … send `cmd` to the node, read the reply …
//!     match oa.handle_reply(Some(b"35004 10.0.0.2\n"))? {
//!         ReplyOutcome::Done(_) => {}
//!         ReplyOutcome::Retry(_) => unreachable!("would pick another node here"),
//!     }
//! }
//! assert_eq!(sent[0], "Uc0 a84b4c76e66710@pc33 192.0.2.10 49170 1928301774;1");
//! assert_eq!(sent[1], "Uc31 a84b4c76e66710@pc33 192.0.2.10 51372 1928301774;2");
//! let out = oa.finish()?;
//! let new_body = out.apply(body)?;
//! assert!(new_body.ends_with(b"a=nortpproxy:yes\r\n"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Deliberate differences from the C module
//!
//! - Message-mode rewriting is used for body-variable mode too: B1 (session `c=` only with
//!   `c`), B2 (`o` with several streams corrupts memory), B3 (a skipped last stream is cut
//!   off), B4 (`k` empties the variable) and B5 (LF-only `a=rtcp:` overrun) are not
//!   reproduced. B6 (return 0 with autobridge) is the host's business.
//! - D1: an answer (`L`) that gets E7–E10 is an error, not a crash.
//! - Failover on E71/E72/E98/E99 for offers as well as the legacy E7–E10
//!   ([`is_failover_error`]).
//! - D6: `ret_var` has no length limit. D7: `n<` without `>` is a [`FlagsError`]; the DTMF tag
//!   has no 128-byte limit. D10/D13: every command is built from scratch. D11: each call
//!   computes its tags from its own inputs, so several SDP parts never inherit a swap.
//! - D8: the old family of a `c=`/`o=` line is the one written in that line, and the hold
//!   (null address) check uses the SDP family, not the packet's.
//! - D9: an `ip_address` or advertised address that is an IP literal sets the family written
//!   to the SDP; other texts (host names) keep the reply's family, as in C.
//! - D12: when notification fields would carry an empty tag, they are left out.
//! - D28: Call-ID, tags, the dialog id and every address are checked; nothing can inject
//!   words into a command or lines into the SDP.
//! - All SDP problems are detected before the first command is sent, and no edit is produced
//!   when any stream fails (C may leave earlier streams rewritten when a later one fails).
//! - An empty `ip_address` is treated as absent (C writes an empty address into the SDP).
//! - Whitespace in the flags is ignored with a warning (C forwards it into the modifiers, where
//!   RTPProxy skips it anyway); other control bytes are refused.
//! - A reply's sub-command results (` && …`) are cut off before the reply is tokenised, so a
//!   reply without an address cannot have `&&` taken for one. A null reply address
//!   (`0.0.0.0`, `::`) counts as no address (C would write it and put the stream on hold).
//! - With flag `c`, a stream on hold does not write its null address into the session-level
//!   `c=` (C does, putting the other streams that use that line on hold too).
//! - When only the family of an address differs, only the `4`/`6` digit is replaced (C also
//!   collapses the blanks between `IP4` and the address); see also
//!   [`crate::core::sdp::marker_edit`] for bodies without CRLF.
#![warn(missing_docs)]

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::core::config::NotifySocket;
use crate::core::proto::caps::Capabilities;
use crate::core::proto::command::{self, check_word, validate_call_id, validate_tag, WordKind};
use crate::core::proto::reply::atoi;
use crate::core::proto::reply::{split_subresults, SubResult};
use crate::core::proto::{Command, ProtoError};
use crate::core::sdp::webrtc::{self, BridgeRole, PeerParams, RelayParams, Setup, WebrtcError};
use crate::core::sdp::{
    self, is_null_address, Family, MediaAnswer, RewriteOptions, Rewriter, Sdp, SdpEdit, SdpError,
};

/// Script parameters `flags` and `ip_address` are cut to this many bytes, as the C module
/// copies them into 64-byte buffers (`rtpp_get_nt_str_param`).
pub const SCRIPT_PARAM_MAX_LEN: usize = 63;

/// Longest dialog id accepted for `T<did>` / `d<did>` (C: "did too large to fit").
pub const MAX_DIALOG_ID_LEN: usize = 30;

/// Cuts a script parameter to [`SCRIPT_PARAM_MAX_LEN`] bytes, as the C module does for the
/// `flags` and `ip_address` parameters of `rtpproxy_offer`/`rtpproxy_answer`/`rtpproxy_engage`.
/// (The rtp_relay engine path does not truncate.)
pub fn truncate_script_param(param: &[u8]) -> &[u8] {
    &param[..param.len().min(SCRIPT_PARAM_MAX_LEN)]
}

/// Whether an `E<code>` reply to `U`/`L` means "this node failed, try another one" for an
/// offer (spec §4.6).
///
/// The C module fails over on the legacy codes E7–E10 only. We also fail over on E71/E72
/// (listener/session creation failed), E98 (overload) and E99 (shutting down), which is what
/// modern RTPProxy sends in those situations — a documented deviation.
pub fn is_failover_error(code: u32) -> bool {
    matches!(code, 7..=10 | 71 | 72 | 98 | 99)
}

// ---------------------------------------------------------------------------------------------
// Flags
// ---------------------------------------------------------------------------------------------

/// Something in the flags or the setup that the C module logs as a WARNING.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// An unknown flag character; it is forwarded verbatim into the modifiers.
    UnknownFlag(u8),
    /// A whitespace byte in the flags; ignored.
    IgnoredWhitespace(u8),
    /// `n` requested but no notification socket is known (neither modparam nor `n<…>`).
    NotifyWithoutSocket,
    /// `d` requested but no notification socket is known.
    DtmfWithoutSocket,
    /// Notification fields were due but no tag could be formed (no dialog, no `d`); they were
    /// left out (C sends an empty tag, D12).
    NotifyWithoutTag,
    /// `z`/autobridge re-packetization requested but the node lacks REPACK; dropped.
    RepackUnsupported,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownFlag(b) => write!(f, "unknown option `{}'", b.escape_ascii()),
            Self::IgnoredWhitespace(b) => {
                write!(f, "whitespace `{}' in flags ignored", b.escape_ascii())
            }
            Self::NotifyWithoutSocket => f.write_str(
                "cannot receive notifications because notification socket is not specified",
            ),
            Self::DtmfWithoutSocket => f.write_str(
                "cannot receive DTMF notifications because notification socket is not specified",
            ),
            Self::NotifyWithoutTag => {
                f.write_str("no dialog for timeout notifications; notification fields omitted")
            }
            Self::RepackUnsupported => f.write_str(
                "re-packetization is requested but is not supported by the selected RTP proxy node",
            ),
        }
    }
}

/// A flags string that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagsError {
    /// `n<` without a closing `>` (C reads past the end of the string, D7).
    #[error("unterminated notify socket `n<' at offset {offset} in flags")]
    UnterminatedNotifySocket {
        /// Offset of the `n`.
        offset: usize,
    },
    /// A control byte (other than whitespace) in the flags, or whitespace/control inside
    /// `n<…>`.
    #[error("byte 0x{byte:02x} at offset {offset} is not allowed in flags")]
    ForbiddenByte {
        /// The byte.
        byte: u8,
        /// Its offset.
        offset: usize,
    },
}

/// Which end of an offer/answer exchange is the WebRTC one (flags `xw` / `xp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bridge {
    /// `xw`: the offerer is WebRTC, the answerer plain RTP.
    OffererWebrtc,
    /// `xp`: the offerer is plain RTP, the answerer WebRTC.
    OffererPlain,
}

impl Bridge {
    /// How a body going through `direction` is converted.
    pub fn role(self, direction: Direction) -> BridgeRole {
        match (self, direction) {
            (Self::OffererWebrtc, Direction::Offer) | (Self::OffererPlain, Direction::Answer) => {
                BridgeRole::ToPlain
            }
            _ => BridgeRole::ToWebrtc,
        }
    }
}

/// The parsed `flags` argument (spec §4.1). Letters are case-insensitive; `t`/`T` keep their
/// case on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Flags {
    modifiers: Vec<u8>,
    rep_opts: Vec<u8>,
    ttl_opts: Vec<u8>,
    dtmf_payloads: Vec<Vec<u8>>,
    notify_socket: Option<Vec<u8>>,
    warnings: Vec<Warning>,
    /// `a`: asymmetric (`A` modifier), and the SDP address is trusted like `r`.
    pub asymmetric: bool,
    /// `r` (or `a`): announce the SDP `c=` address instead of the packet source address.
    pub trust_address: bool,
    /// `l`: lookup only (`L`, never create).
    pub lookup: bool,
    /// `k`: talk to RTPProxy but keep the body unchanged (no edits, no marker).
    pub keep_body: bool,
    /// `f`: process even when the marker is present.
    pub force: bool,
    /// `c`: also rewrite the session-level `c=` when a media-level `c=` exists.
    pub session_connection: bool,
    /// `o`: also rewrite the `o=` address.
    pub origin: bool,
    /// `n`: request timeout notifications (only sent with `U`).
    pub notify: bool,
    /// `d`: request DTMF catching (needs SUBCOMMAND).
    pub dtmf: bool,
    /// `xw` / `xp`: bridge WebRTC and plain RTP through RTPProxy's `dtls_gw` and `ice_lite`
    /// modules (not a C module flag).
    pub bridge: Option<Bridge>,
}

impl Flags {
    /// Parses a flags string, left to right, as `rtpproxy_offer_answer` does.
    ///
    /// Parsing stops at a NUL byte (the C string ends there). `a i e s w` add `A I E S S` to
    /// the modifiers; `d<digits>`, `t<digits>`, `T<digits>`, `z<digits>` take the digits that
    /// follow; `n<SOCKET>` sets the notify socket override; any other byte is forwarded
    /// verbatim with a [`Warning::UnknownFlag`], except whitespace (ignored, warned) and other
    /// control bytes (refused). No truncation: see [`Flags::parse_script_param`].
    pub fn parse(flags: &[u8]) -> Result<Self, FlagsError> {
        let mut f = Self::default();
        let digits_after = |i: usize| -> usize {
            flags[i + 1..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count()
        };
        let mut i = 0;
        while i < flags.len() {
            let b = flags[i];
            match b.to_ascii_lowercase() {
                0 => break,
                b'a' => {
                    f.modifiers.push(b'A');
                    f.asymmetric = true;
                    f.trust_address = true;
                }
                b'd' => {
                    f.dtmf = true;
                    let n = digits_after(i);
                    if n > 0 {
                        f.dtmf_payloads.push(flags[i + 1..i + 1 + n].to_vec());
                        i += n;
                    }
                }
                b'i' => f.modifiers.push(b'I'),
                b'e' => f.modifiers.push(b'E'),
                b'l' => f.lookup = true,
                b'k' => f.keep_body = true,
                b'f' => f.force = true,
                b'r' => f.trust_address = true,
                b'c' => f.session_connection = true,
                b'o' => f.origin = true,
                b'n' => {
                    f.notify = true;
                    if flags.get(i + 1) == Some(&b'<') {
                        let rest = &flags[i + 2..];
                        let end = rest
                            .iter()
                            .position(|&c| c == b'>' || c == 0)
                            .filter(|&p| rest[p] == b'>')
                            .ok_or(FlagsError::UnterminatedNotifySocket { offset: i })?;
                        let sock = &rest[..end];
                        if let Some(p) = sock
                            .iter()
                            .position(|c| c.is_ascii_whitespace() || c.is_ascii_control())
                        {
                            return Err(FlagsError::ForbiddenByte {
                                byte: sock[p],
                                offset: i + 2 + p,
                            });
                        }
                        f.notify_socket = Some(sock.to_vec());
                        i += 2 + end;
                    }
                }
                b'w' | b's' => f.modifiers.push(b'S'),
                // `xw` / `xp`; a lone `x` stays an unknown flag, forwarded as in C
                b'x' if matches!(
                    flags.get(i + 1).map(u8::to_ascii_lowercase),
                    Some(b'w' | b'p')
                ) =>
                {
                    f.bridge = Some(if flags[i + 1].eq_ignore_ascii_case(&b'w') {
                        Bridge::OffererWebrtc
                    } else {
                        Bridge::OffererPlain
                    });
                    i += 1;
                }
                b't' => {
                    let n = digits_after(i);
                    f.ttl_opts.extend_from_slice(&flags[i..i + 1 + n]);
                    i += n;
                }
                b'z' => {
                    let n = digits_after(i);
                    f.rep_opts.push(b'Z');
                    f.rep_opts.extend_from_slice(&flags[i + 1..i + 1 + n]);
                    i += n;
                }
                _ if b.is_ascii_whitespace() => f.warnings.push(Warning::IgnoredWhitespace(b)),
                _ if b.is_ascii_control() => {
                    return Err(FlagsError::ForbiddenByte { byte: b, offset: i })
                }
                _ => {
                    f.modifiers.push(b);
                    f.warnings.push(Warning::UnknownFlag(b));
                }
            }
            i += 1;
        }
        Ok(f)
    }

    /// [`truncate_script_param`] then [`Flags::parse`]: what a script function does with its
    /// `flags` parameter.
    pub fn parse_script_param(flags: &[u8]) -> Result<Self, FlagsError> {
        Self::parse(truncate_script_param(flags))
    }

    /// The common modifiers in flag order (`A`, `I`, `E`, `S` and unknown characters).
    pub fn modifiers(&self) -> &[u8] {
        &self.modifiers
    }

    /// The re-packetization options from `z` flags (`Z<digits>`…), sent only to REPACK nodes.
    pub fn repack_options(&self) -> &[u8] {
        &self.rep_opts
    }

    /// The TTL options (`t<digits>`/`T<digits>` as written), sent only to TTL_CHANGE nodes.
    pub fn ttl_options(&self) -> &[u8] {
        &self.ttl_opts
    }

    /// The DTMF payload types given as `d<digits>` (usually zero or one).
    pub fn dtmf_payloads(&self) -> &[Vec<u8>] {
        &self.dtmf_payloads
    }

    /// The notify socket override from `n<SOCKET>` (may be empty: `n<>`).
    pub fn notify_socket(&self) -> Option<&[u8]> {
        self.notify_socket.as_deref()
    }

    /// Warnings found while parsing (to be logged by the host).
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }
}

// ---------------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------------

/// Which function runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `rtpproxy_offer` (creates sessions: `U`).
    Offer,
    /// `rtpproxy_answer` (looks sessions up: `L`).
    Answer,
}

/// Addresses of the packet that carried the SIP message, in OpenSIPS' textual form
/// (`ip_addr2a`: IPv4 dotted decimal; IPv6 all 8 groups, upper-case, no `::`, no brackets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketInfo<'a> {
    /// Source address of the packet (announced to RTPProxy unless `r`/`a`).
    pub source_ip: &'a str,
    /// Local address the packet was received on (last-resort SDP address).
    pub local_ip: &'a str,
}

/// The SIP message the call runs on, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SipMessage<'a> {
    /// No message (API use): the SDP address is announced and tags are never swapped.
    None,
    /// A request.
    Request(PacketInfo<'a>),
    /// A reply.
    Reply(PacketInfo<'a>),
}

impl<'a> SipMessage<'a> {
    fn packet(&self) -> Option<PacketInfo<'a>> {
        match *self {
            Self::None => None,
            Self::Request(p) | Self::Reply(p) => Some(p),
        }
    }
}

/// Everything [`OfferAnswer::new`] needs; build it with [`OfferAnswerInput::new`] and set the
/// optional fields directly.
#[derive(Debug, Clone, Copy)]
pub struct OfferAnswerInput<'a> {
    /// The SDP body (one `application/sdp` part, or the body variable's content).
    pub body: &'a [u8],
    /// The parsed flags.
    pub flags: &'a Flags,
    /// The `ip_address` parameter (already truncated by the host); empty counts as absent.
    pub ip_address: Option<&'a str>,
    /// The Call-ID (mandatory).
    pub call_id: &'a [u8],
    /// The From-tag (mandatory).
    pub from_tag: &'a [u8],
    /// The To-tag (may be empty).
    pub to_tag: &'a [u8],
    /// The message, if any.
    pub message: SipMessage<'a>,
    /// Offer or answer.
    pub direction: Direction,
    /// `nortpproxy_str` (without CRLF); empty disables the marker check and insertion.
    pub marker: &'a [u8],
    /// `rtpp_notify_socket`, if configured.
    pub notify_socket: Option<&'a NotifySocket>,
    /// Autobridge address for `R<addr>` in the re-packetization options (IPv6 in brackets).
    pub bridge_address: Option<&'a str>,
    /// OpenSIPS 4.0's `bind_local` parameter: `l<value>` after the stream's modifiers (an
    /// address or an RTPProxy `{label}`); empty counts as absent.
    pub bind_local: Option<&'a [u8]>,
}

impl<'a> OfferAnswerInput<'a> {
    /// Input with the mandatory fields; no `ip_address`, the default marker
    /// `a=nortpproxy:yes`, no notify socket, no autobridge address.
    pub fn new(
        body: &'a [u8],
        flags: &'a Flags,
        call_id: &'a [u8],
        from_tag: &'a [u8],
        to_tag: &'a [u8],
        message: SipMessage<'a>,
        direction: Direction,
    ) -> Self {
        Self {
            body,
            flags,
            ip_address: None,
            call_id,
            from_tag,
            to_tag,
            message,
            direction,
            marker: b"a=nortpproxy:yes",
            notify_socket: None,
            bridge_address: None,
            bind_local: None,
        }
    }
}

/// What the planner needs to know about the node a command goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeInfo<'n> {
    /// The node's capabilities.
    pub caps: Capabilities,
    /// The node's advertised address (`URL|ADDR`), if any.
    pub advertised: Option<&'n str>,
}

// ---------------------------------------------------------------------------------------------
// Errors and outcomes
// ---------------------------------------------------------------------------------------------

/// Why an offer/answer fails (the script function returns -1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    /// The SDP cannot be processed.
    #[error(transparent)]
    Sdp(#[from] SdpError),
    /// The flags cannot be used.
    #[error(transparent)]
    Flags(#[from] FlagsError),
    /// The Call-ID is empty or unsafe.
    #[error("bad call-id: {0}")]
    CallId(ProtoError),
    /// The From-tag is empty or unsafe, or the To-tag is unsafe.
    #[error("bad tag: {0}")]
    Tag(ProtoError),
    /// A word of the command is unusable (port text from the SDP, notify socket, …).
    #[error("cannot build command: {0}")]
    Command(ProtoError),
    /// Offer in a reply or answer in a request without a To-tag (C fails silently).
    #[error("to-tag needed to swap tags but absent")]
    MissingToTag,
    /// The body carries the marker and `f` was not given.
    #[error("sdp already carries the marker (use flag f to force)")]
    MarkerPresent,
    /// The dialog id is empty, too long or unsafe.
    #[error("dialog id unusable (empty, longer than {MAX_DIALOG_ID_LEN} bytes or unsafe)")]
    BadDialogId,
    /// An address given by the host or configuration is unusable.
    #[error("{what} address is unusable")]
    BadAddress {
        /// Which address.
        what: &'static str,
    },
    /// An answer (`L`) got no reply: "cannot lookup a session on a different RTPProxy".
    #[error("no reply to a lookup: cannot lookup a session on a different rtpproxy")]
    NoReplyOnLookup,
    /// RTPProxy answered `E<code>` and no failover applies.
    #[error("rtpproxy error E{code}")]
    Relay {
        /// The error code.
        code: u32,
        /// Whether the code means the node itself failed ([`is_failover_error`]); the host may
        /// disable the node (the C module did so for E7–E10 before crashing, D1).
        node_failure: bool,
    },
    /// The reply is empty, or its error code or address is malformed.
    #[error("malformed reply from rtpproxy")]
    MalformedReply,
    /// The reply port is out of 1..=65535.
    #[error("incorrect port {port} in reply from rtpproxy")]
    BadReplyPort {
        /// The port as read (`atoi`).
        port: i64,
    },
    /// Port 0 in lookup mode (`l`): no such session (C fails without logging).
    #[error("session not found (port 0 in lookup mode)")]
    SessionNotFound,
    /// The SDP cannot be bridged between WebRTC and plain RTP (flags `xw`/`xp`).
    #[error(transparent)]
    Webrtc(#[from] WebrtcError),
    /// WebRTC bridging needs sub-commands, which the node does not announce.
    #[error(
        "WebRTC bridging needs rtpproxy sub-commands (VF 20191015), which the selected node \
         does not support"
    )]
    WebrtcNeedsSubcommand,
    /// The node refused the sub-commands as a whole (`E3`): its modules are not loaded.
    #[error(
        "rtpproxy refused the WebRTC sub-commands (E{code}): load its dtls_gw and ice_lite \
         modules (--dso …/rtpp_dtls_gw.so --dso …/rtpp_ice_lite.so, as modules 4 and 5)"
    )]
    WebrtcModulesMissing {
        /// The error code.
        code: u32,
    },
    /// One of the relay's WebRTC modules failed (the session itself was created/updated).
    #[error("rtpproxy's {module} module failed ({code}) on this call's WebRTC parameters")]
    WebrtcSubcommandFailed {
        /// `dtls_gw` or `ice_lite`.
        module: &'static str,
        /// The code it returned.
        code: i64,
    },
    /// A method was called out of order (e.g. a reply without a command).
    #[error("offer/answer driven out of order: {0}")]
    OutOfOrder(&'static str),
}

/// Why the host should try another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// Transport failure (the node is already disabled by the transport layer).
    NoReply,
    /// A failover error code ([`is_failover_error`]); disable the node.
    RelayError(u32),
}

/// The result of one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamResult {
    /// Index into [`Sdp::media`].
    pub media: usize,
    /// The media index `<m>`.
    pub index: u32,
    /// The relay port.
    pub port: u16,
    /// The address written to the SDP.
    pub address: Vec<u8>,
    /// The family written to the SDP.
    pub family: Family,
    /// The `ret_var` text `<address>:<port>`.
    pub ret_var: Vec<u8>,
}

/// What [`OfferAnswer::handle_reply`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyOutcome<'r> {
    /// The stream is done; move on (set `ret_var` from it if wanted). Borrowed from the
    /// planner's results (no copy per stream).
    Done(&'r StreamResult),
    /// Offer only: select another node and call [`OfferAnswer::build_command`] again.
    Retry(RetryReason),
}

/// A stream that gets a `U`/`L` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedStream {
    /// Index into [`Sdp::media`].
    pub media: usize,
    /// The media index `<m>`.
    pub index: u32,
    /// The port token of the `m=` line, sent as is.
    pub port: Vec<u8>,
    /// The address announced to RTPProxy (§4.5).
    pub address: Vec<u8>,
    /// Its family (`6` modifier when IPv6).
    pub family: Family,
    /// The codec list for the `c` modifier (RTP profiles only).
    pub codecs: Option<Vec<u8>>,
}

/// The final result of one offer/answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferAnswerOutcome {
    /// The body edits, sorted and non-overlapping (empty with `k`).
    pub edits: Vec<SdpEdit>,
    /// Whether the marker line is among the edits.
    pub marker_inserted: bool,
    /// Per-stream results, in order.
    pub streams: Vec<StreamResult>,
    /// Warnings to log.
    pub warnings: Vec<Warning>,
}

impl OfferAnswerOutcome {
    /// The `ret_var` value: that of the last stream (C sets it per stream, last one wins).
    pub fn ret_var(&self) -> Option<&[u8]> {
        self.streams.last().map(|s| s.ret_var.as_slice())
    }

    /// The new body (body-variable mode).
    pub fn apply(&self, body: &[u8]) -> Result<Vec<u8>, SdpError> {
        sdp::apply_edits(body, &self.edits)
    }
}

// ---------------------------------------------------------------------------------------------
// The state machine
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Pending {
    advertised: Option<Vec<u8>>,
    /// Sub-commands before the WebRTC ones (DTMF), to find their results.
    subs_before: usize,
    /// Which module each WebRTC sub-command went to, in order.
    bridge_subs: Vec<&'static str>,
}

/// The WebRTC side of one offer/answer (flags `xw`/`xp`).
#[derive(Debug, Clone)]
struct BridgeState {
    role: BridgeRole,
    /// The bridged media section.
    media: usize,
    /// For [`BridgeRole::ToPlain`]: the WebRTC peer's parameters.
    peer: Option<PeerParams>,
    /// For [`BridgeRole::ToWebrtc`]: the relay's parameters, once answered.
    relay: Option<RelayParams>,
}

/// One `rtpproxy_offer`/`rtpproxy_answer` call over one SDP body, sans-IO.
///
/// See the module docs for the call sequence.
#[derive(Debug)]
pub struct OfferAnswer<'a> {
    sdp: Sdp<'a>,
    flags: &'a Flags,
    direction: Direction,
    message: SipMessage<'a>,
    ip_address: Option<&'a str>,
    call_id: &'a [u8],
    letter: u8,
    first_tag: &'a [u8],
    second_tag: &'a [u8],
    marker: &'a [u8],
    marker_present: bool,
    notify_socket: Option<(Vec<u8>, bool)>,
    notify: bool,
    dtmf: bool,
    dialog_id: Option<Vec<u8>>,
    rep_opts: Vec<u8>,
    bind_local: Option<&'a [u8]>,
    streams: Vec<PlannedStream>,
    next: usize,
    pending: Option<Pending>,
    answers: Vec<MediaAnswer>,
    results: Vec<StreamResult>,
    warnings: Vec<Warning>,
    failed: bool,
    bridge: Option<BridgeState>,
}

fn check_text(what: &'static str, text: &[u8]) -> Result<(), OfferError> {
    if text.is_empty() || !text.iter().all(|b| b.is_ascii_graphic() || *b >= 0x80) {
        Err(OfferError::BadAddress { what })
    } else {
        Ok(())
    }
}

/// Family written next to an overriding address: that of an IP literal, else `fallback`.
fn override_family(text: &str, fallback: Family) -> Family {
    if text.parse::<Ipv4Addr>().is_ok() {
        Family::Ipv4
    } else if text.parse::<Ipv6Addr>().is_ok() {
        Family::Ipv6
    } else {
        fallback
    }
}

impl<'a> OfferAnswer<'a> {
    /// Prepares one offer/answer (spec §4.2–§4.5).
    ///
    /// Fails when: the Call-ID or From-tag is empty or unsafe, the To-tag is unsafe; tags must
    /// be swapped but there is no To-tag ([`OfferError::MissingToTag`]); the marker is present
    /// without `f`; the SDP is unusable (including the `o=`/session `c=` addresses that flags
    /// `o`/`c` will need); an address given by the host is unusable.
    pub fn new(input: OfferAnswerInput<'a>) -> Result<Self, OfferError> {
        let flags = input.flags;
        validate_call_id(input.call_id).map_err(OfferError::CallId)?;
        validate_tag(input.from_tag).map_err(OfferError::Tag)?;
        if !input.to_tag.is_empty() {
            validate_tag(input.to_tag).map_err(OfferError::Tag)?;
        }
        let offer = input.direction == Direction::Offer;

        // §4.2 command letter and tag placement
        let mut create = offer;
        let mut first = input.from_tag;
        let mut second = input.to_tag;
        if flags.lookup {
            if second.is_empty() {
                second = b"dummy";
            }
            create = false;
            if offer {
                std::mem::swap(&mut first, &mut second);
            }
        } else if matches!(
            (input.message, input.direction),
            (SipMessage::Reply(_), Direction::Offer) | (SipMessage::Request(_), Direction::Answer)
        ) {
            if second.is_empty() {
                return Err(OfferError::MissingToTag);
            }
            std::mem::swap(&mut first, &mut second);
        }
        let letter = if create { b'U' } else { b'L' };

        // §4.3 marker
        let marker_present = sdp::has_marker(input.body, input.marker);
        if marker_present && !flags.force {
            return Err(OfferError::MarkerPresent);
        }

        // §4.4 walk
        let sdp = sdp::scan(input.body)?;

        // addresses from the host
        let ip_address = input.ip_address.filter(|s| !s.is_empty());
        if let Some(ip) = ip_address {
            check_text("ip_address", ip.as_bytes())?;
        }
        if let Some(p) = input.message.packet() {
            check_text("source", p.source_ip.as_bytes())?;
            check_text("local", p.local_ip.as_bytes())?;
        }

        let mut warnings = flags.warnings.clone();

        // §3.5.1 notify socket
        let notify_socket = match (&flags.notify_socket, input.notify_socket) {
            (Some(s), _) => Some((s.clone(), false)),
            (None, Some(tcp @ NotifySocket::Tcp { .. })) => {
                Some((tcp.to_string().into_bytes(), true))
            }
            (None, Some(NotifySocket::Unix(path))) => Some((path.clone().into_bytes(), false)),
            (None, None) => None,
        }
        .filter(|(s, _)| !s.is_empty());
        let (mut notify, mut dtmf) = (flags.notify, flags.dtmf);
        if notify_socket.is_none() {
            if notify {
                warnings.push(Warning::NotifyWithoutSocket);
            }
            if dtmf {
                warnings.push(Warning::DtmfWithoutSocket);
            }
            notify = false;
            dtmf = false;
        }
        if letter != b'U' {
            notify = false;
        }

        let mut rep_opts = flags.rep_opts.clone();
        if let Some(r) = input.bridge_address {
            check_text("bridge", r.as_bytes())?;
            rep_opts.push(b'R');
            rep_opts.extend_from_slice(r.as_bytes());
        }
        let bind_local = input.bind_local.filter(|b| !b.is_empty());
        if let Some(b) = bind_local {
            check_text("bind_local", b)?;
        }

        // §4.5 streams and announced addresses
        let body = input.body;
        let packet = input.message.packet();
        let mut streams = Vec::new();
        for (mi, m) in sdp.media().iter().enumerate() {
            let Some(index) = m.index.filter(|_| m.is_proxied(body)) else {
                continue;
            };
            let (address, family) = match packet {
                Some(p) if !flags.trust_address => (
                    p.source_ip.as_bytes().to_vec(),
                    Family::of_text(p.source_ip.as_bytes()),
                ),
                _ => (m.effective.addr.slice(body).to_vec(), m.effective.family),
            };
            streams.push(PlannedStream {
                media: mi,
                index,
                port: m.port.slice(body).to_vec(),
                address,
                family,
                codecs: m.codec_list(body),
            });
        }

        // WebRTC bridging: one stream, checked and read before any command.
        let bridge = match flags.bridge {
            None => None,
            Some(b) => Some(match b.role(input.direction) {
                BridgeRole::ToPlain => {
                    let peer = webrtc::inspect_webrtc(&sdp)?;
                    BridgeState {
                        role: BridgeRole::ToPlain,
                        media: peer.media,
                        peer: Some(peer),
                        relay: None,
                    }
                }
                BridgeRole::ToWebrtc => BridgeState {
                    role: BridgeRole::ToWebrtc,
                    media: webrtc::inspect_plain(&sdp)?,
                    peer: None,
                    relay: None,
                },
            }),
        };

        // Dry run of the rewrite so that every SDP error surfaces before a command is sent.
        if !flags.keep_body {
            let mut r = Rewriter::new(&sdp, rewrite_options(flags));
            for s in &streams {
                r.add_media(&MediaAnswer {
                    media: s.media,
                    port: 1,
                    address: b"192.0.2.1".to_vec(),
                    family: Family::Ipv4,
                })?;
            }
            if let Some(b) = &bridge {
                let mut probe = b.clone();
                probe.relay = Some(RelayParams {
                    setup: Setup::Actpass,
                    algorithm: b"SHA-256".to_vec(),
                    fingerprint: b"00".to_vec(),
                    ufrag: b"u".to_vec(),
                    pwd: b"p".to_vec(),
                    candidates: vec![b"c".to_vec()],
                });
                r.add_edits(bridge_edits(&sdp, &probe)?);
                r.finish()?;
            }
        }

        Ok(Self {
            sdp,
            flags,
            direction: input.direction,
            message: input.message,
            ip_address,
            call_id: input.call_id,
            letter,
            first_tag: first,
            second_tag: second,
            marker: input.marker,
            marker_present,
            notify_socket,
            notify,
            dtmf,
            dialog_id: None,
            rep_opts,
            bind_local,
            streams,
            next: 0,
            pending: None,
            answers: Vec::new(),
            results: Vec::new(),
            warnings,
            failed: false,
            bridge,
        })
    }

    /// The command letter, `U` or `L`.
    pub fn letter(&self) -> u8 {
        self.letter
    }

    /// The tags in command order: first, and second (empty when omitted).
    pub fn tags(&self) -> (&[u8], &[u8]) {
        (self.first_tag, self.second_tag)
    }

    /// The scanned SDP.
    pub fn sdp(&self) -> &Sdp<'a> {
        &self.sdp
    }

    /// Whether the body already carried the marker (then it is not inserted again).
    pub fn marker_present(&self) -> bool {
        self.marker_present
    }

    /// The proxied streams, in order.
    pub fn streams(&self) -> &[PlannedStream] {
        &self.streams
    }

    /// Warnings so far (flags, notify setup, nodes without REPACK).
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// Whether a timeout tag `T<did>` is wanted: `U` with `n` and a known notify socket. Call
    /// after [`OfferAnswer::new`]; if true, the host creates the dialog for an initial request
    /// (the C module does so itself) and passes its id to [`OfferAnswer::set_dialog_id`].
    pub fn needs_dialog_for_notify(&self) -> bool {
        self.notify
    }

    /// Gives the id of the current dialog (`$DLG_did`, e.g. `2a1.c`), used for `T<did>` and
    /// the DTMF tag `d<did>` (without a dialog the DTMF tag is `c<callid>`). Call before the
    /// first [`OfferAnswer::build_command`]. Fails for an empty, unsafe or too long
    /// (> [`MAX_DIALOG_ID_LEN`] bytes) id.
    pub fn set_dialog_id(&mut self, did: &[u8]) -> Result<(), OfferError> {
        if did.len() > MAX_DIALOG_ID_LEN || check_word(WordKind::Tag, did).is_err() {
            return Err(OfferError::BadDialogId);
        }
        self.dialog_id = Some(did.to_vec());
        Ok(())
    }

    /// The stream that needs a command next, or `None` when every stream is done (then call
    /// [`OfferAnswer::finish`]).
    pub fn current_stream(&self) -> Option<&PlannedStream> {
        if self.failed {
            return None;
        }
        self.streams.get(self.next)
    }

    /// Builds the `U`/`L` command of the current stream for a node (spec §3.5).
    ///
    /// Call once per attempt: after [`OfferAnswer::new`], after each
    /// [`ReplyOutcome::Done`] while [`OfferAnswer::current_stream`] is `Some`, and after each
    /// [`ReplyOutcome::Retry`] with the newly selected node.
    pub fn build_command(&mut self, node: NodeInfo<'_>) -> Result<Command, OfferError> {
        if self.failed {
            return Err(OfferError::OutOfOrder("offer/answer already failed"));
        }
        let stream = self
            .streams
            .get(self.next)
            .ok_or(OfferError::OutOfOrder("no stream left"))?;
        let caps = node.caps;
        if let Some(adv) = node.advertised {
            check_text("advertised", adv.as_bytes())?;
        }

        if self.bridge.is_some() && !caps.contains(Capabilities::SUBCOMMAND) {
            self.failed = true;
            return Err(OfferError::WebrtcNeedsSubcommand);
        }
        let mut head = vec![self.letter];
        head.extend_from_slice(&self.flags.modifiers);
        if stream.family == Family::Ipv6 {
            head.push(b'6');
        }
        if let Some(b) = self.bind_local {
            head.push(b'l');
            head.extend_from_slice(b);
        }
        if !self.rep_opts.is_empty() {
            if caps.contains(Capabilities::REPACK) {
                head.extend_from_slice(&self.rep_opts);
            } else if !self.warnings.contains(&Warning::RepackUnsupported) {
                self.warnings.push(Warning::RepackUnsupported);
            }
        }
        if let Some(codecs) = &stream.codecs {
            if caps.contains(Capabilities::CODECS) {
                head.push(b'c');
                head.extend_from_slice(codecs);
            }
        }
        if caps.contains(Capabilities::TTL_CHANGE) {
            head.extend_from_slice(&self.flags.ttl_opts);
        }

        let cmd = self.assemble(&head, stream, caps);
        let cmd = match cmd {
            Ok(c) => c,
            Err(e) => {
                self.failed = true;
                return Err(OfferError::Command(e));
            }
        };
        if cmd.1 && !self.warnings.contains(&Warning::NotifyWithoutTag) {
            self.warnings.push(Warning::NotifyWithoutTag);
        }
        self.pending = Some(Pending {
            advertised: node.advertised.map(|a| a.as_bytes().to_vec()),
            subs_before: cmd.2,
            bridge_subs: cmd.3,
        });
        Ok(cmd.0)
    }

    /// Assembles the words. Also says whether notification fields were dropped for lack of
    /// a tag, how many sub-commands precede the WebRTC ones, and which module each WebRTC
    /// sub-command goes to.
    fn assemble(
        &self,
        head: &[u8],
        stream: &PlannedStream,
        caps: Capabilities,
    ) -> Result<(Command, bool, usize, Vec<&'static str>), ProtoError> {
        let mut b = Command::builder(head)?;
        b.call_id(self.call_id)?
            .arg(&stream.address)?
            .arg(&stream.port)?
            .indexed_tag(self.first_tag, stream.index)?;
        if !self.second_tag.is_empty() {
            b.indexed_tag(self.second_tag, stream.index)?;
        }
        let node_dtmf = self.dtmf && caps.contains(Capabilities::SUBCOMMAND);
        let node_notify = self.notify && caps.contains(Capabilities::NOTIFY);
        let mut dropped = false;
        if node_dtmf || node_notify {
            if self.letter == b'U' {
                let tag: Option<Vec<u8>> = match &self.dialog_id {
                    Some(did) if self.notify => Some([b"T", did.as_slice()].concat()),
                    _ if self.dtmf => Some(b"I".to_vec()),
                    _ => None,
                };
                match (tag, &self.notify_socket) {
                    (Some(tag), Some((sock, configured_tcp))) => {
                        let sock: &[u8] =
                            if *configured_tcp && !caps.contains(Capabilities::NOTIFY_WILD) {
                                sock.strip_prefix(b"tcp:").unwrap_or(sock)
                            } else {
                                sock
                            };
                        b.arg(sock)?.arg(&tag)?;
                    }
                    _ => dropped = true,
                }
            }
            if node_dtmf {
                let mut dtag = b"D".to_vec();
                match &self.dialog_id {
                    Some(did) => {
                        dtag.push(b'd');
                        dtag.extend_from_slice(did);
                    }
                    None => {
                        dtag.push(b'c');
                        dtag.extend_from_slice(self.call_id);
                    }
                }
                b.subcommand(command::CATCH_DTMF)?.arg(&dtag)?;
                for pt in &self.flags.dtmf_payloads {
                    b.arg(pt)?;
                }
            }
        }
        let subs_before = b.subcommand_count();
        let mut bridge_subs = Vec::new();
        match &self.bridge {
            Some(BridgeState {
                media,
                peer: Some(p),
                ..
            }) if *media == stream.media => {
                // The WebRTC peer's parameters: DTLS role and fingerprint, ICE credentials
                // and candidates (RTPProxy's dtls_gw README, scenario 2 / 1a-b).
                let verb: &[u8] = match p.setup {
                    Setup::Passive => b"P",
                    Setup::Active | Setup::Actpass => b"A",
                };
                b.subcommand(command::DTLS_GW)?
                    .arg(verb)?
                    .arg(&p.algorithm)?
                    .arg(&p.fingerprint)?;
                b.subcommand(command::ICE_LITE)?
                    .arg(b"A")?
                    .arg(&p.ufrag)?
                    .arg(&p.pwd)?;
                bridge_subs.extend(["dtls_gw", "ice_lite"]);
                let room = command::MAX_SUBCOMMANDS.saturating_sub(b.subcommand_count());
                for cand in p.candidates.iter().take(room) {
                    b.subcommand(command::ICE_LITE)?.arg(b"C")?;
                    for w in cand {
                        b.arg(w)?;
                    }
                    bridge_subs.push("ice_lite");
                }
            }
            Some(BridgeState {
                media, peer: None, ..
            }) if *media == stream.media => {
                // Ask for the relay's own parameters towards the WebRTC side.
                b.subcommand(command::DTLS_GW)?.arg(b"S")?;
                b.subcommand(command::ICE_LITE)?.arg(b"S")?;
                bridge_subs.extend(["dtls_gw", "ice_lite"]);
            }
            _ => {}
        }
        Ok((b.finish(), dropped, subs_before, bridge_subs))
    }

    /// Feeds the reply to the last command built: the reply body (cookie removed, trailing
    /// newline allowed), or `None` when the transport failed (spec §4.6, §4.7).
    ///
    /// - `None`: for `U`, [`ReplyOutcome::Retry`]; for `L`, [`OfferError::NoReplyOnLookup`].
    /// - `E<code>`: for an offer with a failover code, [`ReplyOutcome::Retry`]; otherwise
    ///   [`OfferError::Relay`] (an answer with E7–E10 included: D1 fixed).
    /// - `<port>[ <ip>[ 6]]`: the stream is done; the SDP address is, in order: the null
    ///   address if the stream's SDP address is null (on hold), `ip_address`, the node's
    ///   advertised address, the reply address, the local receive address, and without a
    ///   message the SDP address itself.
    ///
    /// Any error ends the offer/answer (later calls fail with [`OfferError::OutOfOrder`]).
    pub fn handle_reply(&mut self, reply: Option<&[u8]>) -> Result<ReplyOutcome<'_>, OfferError> {
        if self.failed {
            return Err(OfferError::OutOfOrder("offer/answer already failed"));
        }
        let pending = self
            .pending
            .take()
            .ok_or(OfferError::OutOfOrder("reply without a command"))?;
        match self.interpret(pending, reply) {
            Err(e) => {
                self.failed = true;
                Err(e)
            }
            Ok(Some(retry)) => Ok(ReplyOutcome::Retry(retry)),
            Ok(None) => self
                .results
                .last()
                .map(ReplyOutcome::Done)
                .ok_or(OfferError::OutOfOrder("stream done without a result")),
        }
    }

    fn interpret(
        &mut self,
        pending: Pending,
        reply: Option<&[u8]>,
    ) -> Result<Option<RetryReason>, OfferError> {
        let offer = self.direction == Direction::Offer;
        let Some(reply) = reply else {
            return if self.letter == b'U' {
                Ok(Some(RetryReason::NoReply))
            } else {
                Err(OfferError::NoReplyOnLookup)
            };
        };
        if reply.first() == Some(&b'E') {
            let code = parse_error_code(reply).ok_or(OfferError::MalformedReply)?;
            if code == 3 && !pending.bridge_subs.is_empty() {
                return Err(OfferError::WebrtcModulesMissing { code });
            }
            let node_failure = is_failover_error(code);
            return if node_failure && offer {
                Ok(Some(RetryReason::RelayError(code)))
            } else {
                Err(OfferError::Relay { code, node_failure })
            };
        }

        let main = match reply.windows(2).position(|w| w == b"&&") {
            Some(p) => &reply[..p],
            None => reply,
        };
        // port, address and family: the first three tokens (no allocation)
        let mut tokens: [Option<&[u8]>; 3] = [None; 3];
        for (slot, t) in tokens.iter_mut().zip(
            main.split(|&b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
                .filter(|t| !t.is_empty()),
        ) {
            *slot = Some(t);
        }
        let first = tokens[0].ok_or(OfferError::MalformedReply)?;
        let port = atoi(first);
        let port = match u16::try_from(port) {
            Ok(p) if p > 0 => p,
            _ if port == 0 && self.flags.lookup => return Err(OfferError::SessionNotFound),
            _ => return Err(OfferError::BadReplyPort { port }),
        };
        let reply_family = if tokens[2].is_some_and(|t| t.first() == Some(&b'6')) {
            Family::Ipv6
        } else {
            Family::Ipv4
        };
        let reply_ip = tokens[1];
        if let Some(ip) = reply_ip {
            check_text("reply", ip).map_err(|_| OfferError::MalformedReply)?;
        }
        // A null relay address would silently put the stream (and every stream sharing its
        // c= line) on hold; it is treated like a reply without address.
        let reply_ip = reply_ip.filter(|ip| !is_null_address(ip, reply_family));

        let stream = &self.streams[self.next];
        if !pending.bridge_subs.is_empty() {
            let relay = bridge_results(reply, &pending)?;
            if let Some(b) = self.bridge.as_mut() {
                if b.role == BridgeRole::ToWebrtc {
                    // `S` must have answered: the WebRTC side cannot do without it
                    b.relay = Some(relay.ok_or(WebrtcError::BadRelayResult("DTLS"))?);
                }
            }
        }
        let media = &self.sdp.media()[stream.media];
        let sdp_addr = media.effective.addr.slice(self.sdp.body());
        let sdp_family = media.effective.family;
        // A WebRTC section's null c= is not a hold: ICE carries the addresses.
        let webrtc_in = self
            .bridge
            .as_ref()
            .is_some_and(|b| b.role == BridgeRole::ToPlain);
        let adv = pending
            .advertised
            .as_deref()
            .and_then(|a| std::str::from_utf8(a).ok());
        let (address, family): (Vec<u8>, Family) =
            if !webrtc_in && is_null_address(sdp_addr, sdp_family) {
                (reply_family.null_address().to_vec(), reply_family)
            } else if let Some(ip) = self.ip_address {
                (ip.as_bytes().to_vec(), override_family(ip, reply_family))
            } else if let Some(adv) = adv {
                (adv.as_bytes().to_vec(), override_family(adv, reply_family))
            } else if let Some(ip) = reply_ip {
                (ip.to_vec(), reply_family)
            } else if let Some(p) = self.message.packet() {
                (
                    p.local_ip.as_bytes().to_vec(),
                    Family::of_text(p.local_ip.as_bytes()),
                )
            } else {
                (sdp_addr.to_vec(), sdp_family)
            };
        let mut ret_var = Vec::with_capacity(address.len() + 6);
        ret_var.extend_from_slice(&address);
        ret_var.push(b':');
        crate::core::text::push_decimal(&mut ret_var, u32::from(port));
        let result = StreamResult {
            media: stream.media,
            index: stream.index,
            port,
            address: address.clone(),
            family,
            ret_var,
        };
        self.answers.push(MediaAnswer {
            media: stream.media,
            port,
            address,
            family,
        });
        self.results.push(result);
        self.next += 1;
        Ok(None)
    }

    /// Finishes: the edits for all streams plus the marker line (spec §4.8), unless `k`.
    /// The marker is inserted unless `k`, the marker is disabled (empty), or the body already
    /// carried it. Fails if a stream is still open or the call already failed.
    pub fn finish(self) -> Result<OfferAnswerOutcome, OfferError> {
        if self.failed {
            return Err(OfferError::OutOfOrder("offer/answer already failed"));
        }
        if self.next < self.streams.len() {
            return Err(OfferError::OutOfOrder("streams left without a reply"));
        }
        let mut edits = Vec::new();
        let mut marker_inserted = false;
        if !self.flags.keep_body {
            let mut r = Rewriter::new(&self.sdp, rewrite_options(self.flags));
            if let Some(b) = &self.bridge {
                if b.role == BridgeRole::ToPlain {
                    r.replace_null_addresses();
                }
            }
            for a in &self.answers {
                r.add_media(a)?;
            }
            if let Some(b) = &self.bridge {
                r.add_edits(bridge_edits(&self.sdp, b)?);
            }
            if !self.marker_present && !self.marker.is_empty() {
                r.insert_marker(self.marker);
                marker_inserted = true;
            }
            edits = r.finish()?;
        }
        Ok(OfferAnswerOutcome {
            edits,
            marker_inserted,
            streams: self.results,
            warnings: self.warnings,
        })
    }
}

/// The WebRTC edits of one bridged body (towards the WebRTC side, once the relay answered).
fn bridge_edits(sdp: &Sdp<'_>, b: &BridgeState) -> Result<Vec<SdpEdit>, OfferError> {
    match (b.role, &b.relay) {
        (BridgeRole::ToPlain, _) => Ok(webrtc::to_plain_edits(sdp, b.media)),
        (BridgeRole::ToWebrtc, Some(relay)) => Ok(webrtc::to_webrtc_edits(sdp, b.media, relay)),
        (BridgeRole::ToWebrtc, None) => Err(WebrtcError::BadRelayResult("DTLS").into()),
    }
}

/// Checks the results of the WebRTC sub-commands of a `U`/`L` reply; for `S` sub-commands
/// returns the relay's parameters.
fn bridge_results(reply: &[u8], pending: &Pending) -> Result<Option<RelayParams>, OfferError> {
    let (_, subs) = split_subresults(reply);
    // a failing DTMF sub-command stops ours too
    for (i, r) in subs.iter().enumerate() {
        if let SubResult::Failed(code) = r {
            let module = i
                .checked_sub(pending.subs_before)
                .and_then(|k| pending.bridge_subs.get(k))
                .copied()
                .unwrap_or("catch_dtmf");
            return Err(OfferError::WebrtcSubcommandFailed {
                module,
                code: *code,
            });
        }
    }
    let text = |k: usize| match subs.get(pending.subs_before + k) {
        Some(SubResult::Ok(t)) => *t,
        _ => &b""[..],
    };
    let asked = text(0);
    if asked.is_empty() {
        // `A`/`C` sub-commands answer nothing on success
        return Ok(None);
    }
    let (setup, algorithm, fingerprint) = webrtc::parse_dtls_result(asked)?;
    let ice = webrtc::parse_ice_result(text(1))?;
    Ok(Some(RelayParams {
        setup,
        algorithm,
        fingerprint,
        ufrag: ice.ufrag,
        pwd: ice.pwd,
        candidates: ice.candidates,
    }))
}

fn rewrite_options(flags: &Flags) -> RewriteOptions {
    RewriteOptions {
        session_connection: flags.session_connection,
        origin: flags.origin,
    }
}

/// `E<digits>` with optional trailing whitespace → the code.
fn parse_error_code(reply: &[u8]) -> Option<u32> {
    let rest = reply.get(1..)?;
    let end = rest
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |p| p + 1);
    let digits = &rest[..end];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"v=0\r\no=alice 2890844526 2890844526 IN IP4 10.1.1.5\r\ns=-\r\nc=IN IP4 10.1.1.5\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\nm=video 0 RTP/AVP 31\r\nm=application 5000 TCP/MSRP *\r\n";
    const CID: &[u8] = b"a84b4c76e66710@pc33";
    const FT: &[u8] = b"1928301774";
    const TT: &[u8] = b"a6c85cf";

    fn all_caps() -> Capabilities {
        Capabilities::from_bits_truncate(u32::MAX)
    }

    fn node(caps: Capabilities) -> NodeInfo<'static> {
        NodeInfo {
            caps,
            advertised: None,
        }
    }

    fn req() -> SipMessage<'static> {
        SipMessage::Request(PacketInfo {
            source_ip: "192.0.2.10",
            local_ip: "10.0.0.1",
        })
    }

    fn rep() -> SipMessage<'static> {
        SipMessage::Reply(PacketInfo {
            source_ip: "198.51.100.7",
            local_ip: "10.0.0.1",
        })
    }

    #[test]
    fn flags_basic() {
        let f = Flags::parse(b"AIESWx").unwrap();
        assert_eq!(f.modifiers(), b"AIESSx");
        assert!(f.asymmetric && f.trust_address);
        assert_eq!(f.warnings(), &[Warning::UnknownFlag(b'x')]);
        let f = Flags::parse(b"lkfrcont30T20z20d101").unwrap();
        assert!(f.lookup && f.keep_body && f.force && f.trust_address);
        assert!(f.session_connection && f.origin && f.notify && f.dtmf);
        assert_eq!(f.ttl_options(), b"t30T20");
        assert_eq!(f.repack_options(), b"Z20");
        assert_eq!(f.dtmf_payloads(), &[b"101".to_vec()]);
        assert_eq!(f.modifiers(), b"");
    }

    #[test]
    fn flags_notify_socket() {
        let f = Flags::parse(b"n<tcp:%%CC_SELF%%:9999>c").unwrap();
        assert_eq!(f.notify_socket(), Some(&b"tcp:%%CC_SELF%%:9999"[..]));
        assert!(f.session_connection);
        assert_eq!(
            Flags::parse(b"cn<tcp:1.2.3.4"),
            Err(FlagsError::UnterminatedNotifySocket { offset: 1 })
        );
        assert!(Flags::parse(b"n<a\0>").is_err());
        assert!(Flags::parse(b"n<a b>").is_err());
        assert_eq!(
            Flags::parse(b"n<>").unwrap().notify_socket(),
            Some(&b""[..])
        );
        // NUL ends the flags
        assert!(!Flags::parse(b"c\0o").unwrap().origin);
        assert!(Flags::parse(b"c\x01").is_err());
        let f = Flags::parse(b" c\t").unwrap();
        assert_eq!(f.modifiers(), b"");
        assert_eq!(f.warnings().len(), 2);
    }

    #[test]
    fn flags_truncation() {
        let long = [b'x'; 100];
        let f = Flags::parse_script_param(&long).unwrap();
        assert_eq!(f.modifiers().len(), SCRIPT_PARAM_MAX_LEN);
        // a truncated n<…> becomes an error rather than an overread
        let mut s = vec![b'c'; 60];
        s.extend_from_slice(b"n<tcp:1.2.3.4:5>");
        assert!(Flags::parse_script_param(&s).is_err());
    }

    fn run(
        input: OfferAnswerInput<'_>,
        caps: Capabilities,
        replies: &[&[u8]],
    ) -> (Vec<String>, Result<OfferAnswerOutcome, OfferError>) {
        let mut oa = match OfferAnswer::new(input) {
            Ok(o) => o,
            Err(e) => return (vec![], Err(e)),
        };
        let mut sent = Vec::new();
        let mut it = replies.iter();
        while oa.current_stream().is_some() {
            let cmd = match oa.build_command(node(caps)) {
                Ok(c) => c,
                Err(e) => return (sent, Err(e)),
            };
            sent.push(String::from_utf8(cmd.as_bytes().to_vec()).unwrap());
            match oa.handle_reply(it.next().copied()) {
                Ok(_) => {}
                Err(e) => return (sent, Err(e)),
            }
        }
        (sent, oa.finish())
    }

    #[test]
    fn appendix_a_answer() {
        let flags = Flags::parse(b"").unwrap();
        let body = b"v=0\r\no=- 1 1 IN IP4 10.9.9.9\r\ns=-\r\nc=IN IP4 10.9.9.9\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n";
        let input = OfferAnswerInput::new(body, &flags, CID, FT, TT, rep(), Direction::Answer);
        let (sent, out) = run(input, all_caps(), &[b"35010 10.0.0.2\n"]);
        assert_eq!(
            sent,
            ["Lc0 a84b4c76e66710@pc33 198.51.100.7 30000 1928301774;1 a6c85cf;1"]
        );
        assert_eq!(out.unwrap().ret_var(), Some(&b"10.0.0.2:35010"[..]));
    }

    #[test]
    fn tag_placement() {
        let flags = Flags::parse(b"").unwrap();
        let mk = |msg, dir, tt: &'static [u8], flags: &'static Flags| {
            OfferAnswer::new(OfferAnswerInput::new(BODY, flags, CID, FT, tt, msg, dir))
        };
        let flags: &'static Flags = Box::leak(Box::new(flags));
        let l: &'static Flags = Box::leak(Box::new(Flags::parse(b"l").unwrap()));
        let oa = mk(req(), Direction::Offer, b"", flags).unwrap();
        assert_eq!((oa.letter(), oa.tags()), (b'U', (FT, &b""[..])));
        let oa = mk(rep(), Direction::Offer, TT, flags).unwrap();
        assert_eq!((oa.letter(), oa.tags()), (b'U', (TT, FT)));
        let oa = mk(req(), Direction::Answer, TT, flags).unwrap();
        assert_eq!((oa.letter(), oa.tags()), (b'L', (TT, FT)));
        assert_eq!(
            mk(req(), Direction::Answer, b"", flags).unwrap_err(),
            OfferError::MissingToTag
        );
        let oa = mk(req(), Direction::Offer, b"", l).unwrap();
        assert_eq!((oa.letter(), oa.tags()), (b'L', (&b"dummy"[..], FT)));
        let oa = mk(SipMessage::None, Direction::Answer, b"", flags).unwrap();
        assert_eq!((oa.letter(), oa.tags()), (b'L', (FT, &b""[..])));
        assert!(matches!(
            mk(req(), Direction::Offer, b"a;b", flags),
            Err(OfferError::Tag(_))
        ));
    }

    #[test]
    fn failover_rules() {
        let flags = Flags::parse(b"").unwrap();
        let input = OfferAnswerInput::new(BODY, &flags, CID, FT, b"", req(), Direction::Offer);
        let mut oa = OfferAnswer::new(input).unwrap();
        oa.build_command(node(all_caps())).unwrap();
        assert_eq!(
            oa.handle_reply(Some(b"E7\n")).unwrap(),
            ReplyOutcome::Retry(RetryReason::RelayError(7))
        );
        oa.build_command(node(all_caps())).unwrap();
        assert_eq!(
            oa.handle_reply(Some(b"E99\n")).unwrap(),
            ReplyOutcome::Retry(RetryReason::RelayError(99))
        );
        oa.build_command(node(all_caps())).unwrap();
        assert_eq!(
            oa.handle_reply(None).unwrap(),
            ReplyOutcome::Retry(RetryReason::NoReply)
        );
        oa.build_command(node(all_caps())).unwrap();
        assert_eq!(
            oa.handle_reply(Some(b"E50\n")),
            Err(OfferError::Relay {
                code: 50,
                node_failure: false
            })
        );
        assert!(oa.handle_reply(Some(b"1 1.1.1.1")).is_err());
        assert!(oa.build_command(node(all_caps())).is_err());

        let input = OfferAnswerInput::new(BODY, &flags, CID, FT, TT, rep(), Direction::Answer);
        let mut oa = OfferAnswer::new(input).unwrap();
        oa.build_command(node(all_caps())).unwrap();
        assert_eq!(
            oa.handle_reply(Some(b"E8\n")),
            Err(OfferError::Relay {
                code: 8,
                node_failure: true
            })
        );
        let mut oa = OfferAnswer::new(input).unwrap();
        oa.build_command(node(all_caps())).unwrap();
        assert_eq!(oa.handle_reply(None), Err(OfferError::NoReplyOnLookup));
        let mut oa = OfferAnswer::new(input).unwrap();
        assert!(oa.handle_reply(Some(b"1")).is_err());
    }

    #[test]
    fn reply_parsing() {
        let flags = Flags::parse(b"").unwrap();
        let input = OfferAnswerInput::new(BODY, &flags, CID, FT, b"", req(), Direction::Offer);
        for (reply, want) in [
            (&b"E\n"[..], Err(OfferError::MalformedReply)),
            (b"Ex", Err(OfferError::MalformedReply)),
            (b"  \n", Err(OfferError::MalformedReply)),
            (b"0\n", Err(OfferError::BadReplyPort { port: 0 })),
            (b"70000\n", Err(OfferError::BadReplyPort { port: 70000 })),
            (b"-3\n", Err(OfferError::BadReplyPort { port: -3 })),
        ] {
            let mut oa = OfferAnswer::new(input).unwrap();
            oa.build_command(node(all_caps())).unwrap();
            assert_eq!(oa.handle_reply(Some(reply)).map(|_| ()), want, "{reply:?}");
        }
        let mut oa = OfferAnswer::new(input).unwrap();
        oa.build_command(node(all_caps())).unwrap();
        let ReplyOutcome::Done(r) = oa.handle_reply(Some(b"35004abc && 0\n")).unwrap() else {
            panic!()
        };
        assert_eq!(r.port, 35004);
        // no reply address: the local receive address is used
        assert_eq!(r.address, b"10.0.0.1");
        // a null reply address counts as none
        let mut oa = OfferAnswer::new(input).unwrap();
        oa.build_command(node(all_caps())).unwrap();
        let ReplyOutcome::Done(r) = oa.handle_reply(Some(b"35004 :: 6\n")).unwrap() else {
            panic!()
        };
        assert_eq!(
            (r.address.as_slice(), r.family),
            (&b"10.0.0.1"[..], Family::Ipv4)
        );
        // lookup mode, port 0
        let l = Flags::parse(b"l").unwrap();
        let input = OfferAnswerInput::new(BODY, &l, CID, FT, TT, rep(), Direction::Answer);
        let mut oa = OfferAnswer::new(input).unwrap();
        oa.build_command(node(all_caps())).unwrap();
        assert_eq!(
            oa.handle_reply(Some(b"0\n")),
            Err(OfferError::SessionNotFound)
        );
    }

    #[test]
    fn address_precedence() {
        let flags = Flags::parse(b"").unwrap();
        let mut input = OfferAnswerInput::new(BODY, &flags, CID, FT, b"", req(), Direction::Offer);
        let adv = NodeInfo {
            caps: all_caps(),
            advertised: Some("203.0.113.9"),
        };
        let one = |input, node: NodeInfo<'_>, reply: &[u8]| {
            let mut oa = OfferAnswer::new(input).unwrap();
            oa.build_command(node).unwrap();
            match oa.handle_reply(Some(reply)).unwrap() {
                ReplyOutcome::Done(r) => (String::from_utf8(r.address.clone()).unwrap(), r.family),
                ReplyOutcome::Retry(_) => panic!(),
            }
        };
        assert_eq!(
            one(input, node(all_caps()), b"1 10.0.0.2"),
            ("10.0.0.2".into(), Family::Ipv4)
        );
        assert_eq!(
            one(input, adv, b"1 10.0.0.2"),
            ("203.0.113.9".into(), Family::Ipv4)
        );
        assert_eq!(
            one(input, adv, b"1 2001:db8::1 6"),
            ("203.0.113.9".into(), Family::Ipv4)
        );
        input.ip_address = Some("2001:db8::7");
        assert_eq!(
            one(input, adv, b"1 10.0.0.2"),
            ("2001:db8::7".into(), Family::Ipv6)
        );
        input.ip_address = Some("media.example.com");
        assert_eq!(
            one(input, adv, b"1 10.0.0.2 6"),
            ("media.example.com".into(), Family::Ipv6)
        );
        input.ip_address = Some("");
        assert_eq!(
            one(input, node(all_caps()), b"1"),
            ("10.0.0.1".into(), Family::Ipv4)
        );
        input.message = SipMessage::None;
        assert_eq!(
            one(input, node(all_caps()), b"1"),
            ("10.1.1.5".into(), Family::Ipv4)
        );
        input.ip_address = Some("bad addr");
        assert!(matches!(
            OfferAnswer::new(input),
            Err(OfferError::BadAddress { .. })
        ));
    }

    #[test]
    fn capability_gating() {
        let flags = Flags::parse(b"z20t30T5ie").unwrap();
        let mut input = OfferAnswerInput::new(BODY, &flags, CID, FT, b"", req(), Direction::Offer);
        input.bridge_address = Some("[2001:db8::1]");
        let mut oa = OfferAnswer::new(input).unwrap();
        let c = oa.build_command(node(all_caps())).unwrap();
        assert_eq!(
            c.as_bytes(),
            b"UIEZ20R[2001:db8::1]c0,8,101t30T5 a84b4c76e66710@pc33 192.0.2.10 49170 1928301774;1"
        );
        let c = oa.build_command(node(Capabilities::NONE)).unwrap();
        assert_eq!(
            c.as_bytes(),
            b"UIE a84b4c76e66710@pc33 192.0.2.10 49170 1928301774;1"
        );
        assert!(oa.warnings().contains(&Warning::RepackUnsupported));
    }

    #[test]
    fn bind_local_follows_the_stream_modifiers() {
        let flags = Flags::parse(b"ie").unwrap();
        let mut input = OfferAnswerInput::new(BODY, &flags, CID, FT, b"", req(), Direction::Offer);
        input.bind_local = Some(b"10.0.0.7");
        let mut oa = OfferAnswer::new(input).unwrap();
        let c = oa.build_command(node(all_caps())).unwrap();
        assert_eq!(
            c.as_bytes(),
            b"UIEl10.0.0.7c0,8,101 a84b4c76e66710@pc33 192.0.2.10 49170 1928301774;1"
        );
        input.bind_local = Some(b"");
        let mut oa = OfferAnswer::new(input).unwrap();
        let c = oa.build_command(node(all_caps())).unwrap();
        assert_eq!(
            c.as_bytes(),
            b"UIEc0,8,101 a84b4c76e66710@pc33 192.0.2.10 49170 1928301774;1"
        );
        input.bind_local = Some(b"10.0.0.7 x");
        assert!(matches!(
            OfferAnswer::new(input),
            Err(OfferError::BadAddress { what: "bind_local" })
        ));
    }

    #[test]
    fn notify_and_dtmf() {
        let sock = NotifySocket::Tcp {
            ip: Ipv4Addr::new(10, 0, 0, 1),
            port: 9999,
        };
        let n = Flags::parse(b"n").unwrap();
        let mut input = OfferAnswerInput::new(BODY, &n, CID, FT, b"", req(), Direction::Offer);
        input.notify_socket = Some(&sock);
        let mut oa = OfferAnswer::new(input).unwrap();
        assert!(oa.needs_dialog_for_notify());
        oa.set_dialog_id(b"2a1.c").unwrap();
        let c = oa.build_command(node(all_caps())).unwrap();
        assert_eq!(c.as_bytes(), &b"Uc0,8,101 a84b4c76e66710@pc33 192.0.2.10 49170 1928301774;1 tcp:10.0.0.1:9999 T2a1.c"[..]);
        let wild = Capabilities::from_bits_truncate(!Capabilities::NOTIFY_WILD.bits());
        let c = oa.build_command(node(wild)).unwrap();
        assert_eq!(
            c.as_bytes(),
            &b"Uc0,8,101 a84b4c76e66710@pc33 192.0.2.10 49170 1928301774;1 10.0.0.1:9999 T2a1.c"[..]
        );
        // D12: no dialog and no d -> fields left out
        let mut oa = OfferAnswer::new(input).unwrap();
        let c = oa.build_command(node(all_caps())).unwrap();
        assert_eq!(
            c.as_bytes(),
            &b"Uc0,8,101 a84b4c76e66710@pc33 192.0.2.10 49170 1928301774;1"[..]
        );
        assert!(oa.warnings().contains(&Warning::NotifyWithoutTag));
        assert!(oa.set_dialog_id(&[b'1'; 31]).is_err());
        assert!(oa.set_dialog_id(b"a b").is_err());

        let d = Flags::parse(b"d101").unwrap();
        let mut input = OfferAnswerInput::new(BODY, &d, CID, FT, b"", req(), Direction::Offer);
        input.notify_socket = Some(&sock);
        let mut oa = OfferAnswer::new(input).unwrap();
        assert!(!oa.needs_dialog_for_notify());
        oa.set_dialog_id(b"2a1.c").unwrap();
        let c = oa.build_command(node(all_caps())).unwrap();
        assert_eq!(c.as_bytes(), &b"Uc0,8,101 a84b4c76e66710@pc33 192.0.2.10 49170 1928301774;1 tcp:10.0.0.1:9999 I && M3:1 Dd2a1.c 101"[..]);
        // without a dialog: c<callid>; on L no notify fields but the sub-command stays
        let input = OfferAnswerInput {
            direction: Direction::Answer,
            to_tag: TT,
            message: rep(),
            ..input
        };
        let mut oa = OfferAnswer::new(input).unwrap();
        let c = oa.build_command(node(all_caps())).unwrap();
        assert_eq!(c.as_bytes(), &b"Lc0,8,101 a84b4c76e66710@pc33 198.51.100.7 49170 1928301774;1 a6c85cf;1 && M3:1 Dca84b4c76e66710@pc33 101"[..]);
        // without SUBCOMMAND nothing of it
        let c = oa.build_command(node(Capabilities::NONE)).unwrap();
        assert_eq!(
            c.as_bytes(),
            &b"L a84b4c76e66710@pc33 198.51.100.7 49170 1928301774;1 a6c85cf;1"[..]
        );
        // no socket: n and d disabled with warnings
        let nd = Flags::parse(b"nd").unwrap();
        let input = OfferAnswerInput::new(BODY, &nd, CID, FT, b"", req(), Direction::Offer);
        let mut oa = OfferAnswer::new(input).unwrap();
        assert_eq!(
            oa.warnings(),
            &[Warning::NotifyWithoutSocket, Warning::DtmfWithoutSocket]
        );
        let c = oa.build_command(node(all_caps())).unwrap();
        assert_eq!(
            c.as_bytes(),
            &b"Uc0,8,101 a84b4c76e66710@pc33 192.0.2.10 49170 1928301774;1"[..]
        );
    }

    #[test]
    fn marker_rules() {
        let mut body = BODY.to_vec();
        body.extend_from_slice(b"a=nortpproxy:yes\r\n");
        let flags = Flags::parse(b"").unwrap();
        let input = OfferAnswerInput::new(&body, &flags, CID, FT, b"", req(), Direction::Offer);
        assert_eq!(
            OfferAnswer::new(input).unwrap_err(),
            OfferError::MarkerPresent
        );
        let f = Flags::parse(b"f").unwrap();
        let input = OfferAnswerInput::new(&body, &f, CID, FT, b"", req(), Direction::Offer);
        let (_, out) = run(input, all_caps(), &[b"35004 10.0.0.2"]);
        let out = out.unwrap();
        assert!(!out.marker_inserted);
        let mut input = OfferAnswerInput::new(&body, &flags, CID, FT, b"", req(), Direction::Offer);
        input.marker = b"";
        assert!(OfferAnswer::new(input).is_ok());
    }

    #[test]
    fn sdp_errors_surface_before_any_command() {
        // flag c needs the session c= address, flag o the o= address
        let body =
            b"v=0\r\no=- 1 1 IN IP4\r\nc=IN IP4\r\nm=audio 1 RTP/AVP 0\r\nc=IN IP4 1.1.1.1\r\n";
        for (flags, ok) in [
            ("", true),
            ("c", false),
            ("o", false),
            ("k", true),
            ("ck", true),
        ] {
            let f = Flags::parse(flags.as_bytes()).unwrap();
            let input = OfferAnswerInput::new(body, &f, CID, FT, b"", req(), Direction::Offer);
            let r = OfferAnswer::new(input);
            assert_eq!(r.is_ok(), ok, "{flags}");
            if !ok {
                assert!(matches!(
                    r,
                    Err(OfferError::Sdp(SdpError::BadAddressLine { .. }))
                ));
            }
        }
    }

    #[test]
    fn keep_body() {
        let k = Flags::parse(b"k").unwrap();
        let input = OfferAnswerInput::new(BODY, &k, CID, FT, b"", req(), Direction::Offer);
        let (sent, out) = run(input, all_caps(), &[b"35004 10.0.0.2"]);
        assert_eq!(sent.len(), 1);
        let out = out.unwrap();
        assert!(out.edits.is_empty());
        assert_eq!(out.ret_var(), Some(&b"10.0.0.2:35004"[..]));
    }

    #[test]
    fn injection_is_refused() {
        let flags = Flags::parse(b"r").unwrap();
        let body =
            b"v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\nc=IN IP4 1.1.1.1\r\nm=audio 1\x0b2 RTP/AVP 0\r\n";
        let input = OfferAnswerInput::new(body, &flags, CID, FT, b"", req(), Direction::Offer);
        let mut oa = OfferAnswer::new(input).unwrap();
        assert!(matches!(
            oa.build_command(node(all_caps())),
            Err(OfferError::Command(_))
        ));
        let input = OfferAnswerInput::new(BODY, &flags, b"a b", FT, b"", req(), Direction::Offer);
        assert!(matches!(
            OfferAnswer::new(input),
            Err(OfferError::CallId(_))
        ));
        let input = OfferAnswerInput::new(BODY, &flags, CID, b"", b"", req(), Direction::Offer);
        assert!(matches!(OfferAnswer::new(input), Err(OfferError::Tag(_))));
        let input = OfferAnswerInput::new(BODY, &flags, CID, FT, b"", req(), Direction::Offer);
        let mut oa = OfferAnswer::new(input).unwrap();
        oa.build_command(node(all_caps())).unwrap();
        assert_eq!(
            oa.handle_reply(Some(b"1 a\x01b")),
            Err(OfferError::MalformedReply)
        );
    }

    #[test]
    fn error_codes() {
        assert_eq!(parse_error_code(b"E7\n"), Some(7));
        assert_eq!(parse_error_code(b"E71"), Some(71));
        assert_eq!(parse_error_code(b"E 7"), None);
        assert_eq!(parse_error_code(b"E99999999999"), None);
        for c in [7, 8, 9, 10, 71, 72, 98, 99] {
            assert!(is_failover_error(c));
        }
        for c in [0, 6, 11, 35, 50, 70, 73, 97, 100] {
            assert!(!is_failover_error(c));
        }
    }
}
