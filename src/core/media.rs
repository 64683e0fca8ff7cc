//! Media operations, sans-IO (spec §3.4, §6, §7.2–§7.7).
//!
//! Layer: `core`. This file builds the bodies of the media commands and reads their replies:
//!
//! - prompts: `P<count>` (play) and `S` (stop playing), §7.2/§7.3;
//! - recording and copying: `R<flags>` (record to the relay's recording directory), `C<flags>`
//!   (record one stream to a file or copy it to `udp:IP:port`) and `N` (stop recording and
//!   copying; RTPProxy feature [`STOP_COPY_FEATURE_DATE`]), §7.4/§7.7;
//! - statistics: `Q` with the short reply and with named counters, §7.5/§7.6;
//! - the copy context behind the rtp_relay copy API (SIPREC, media forking): the generated SDP
//!   offer, what to send when the copy's answer arrives, what to stop at the end, and the
//!   serialised form, §6.
//!
//! Every error the relay can answer is turned into a [`RelayError`] naming what went wrong for
//! the operation at hand (session not found, unsupported modifier, prompt file missing, …).
//!
//! # Deliberate differences from the C module
//!
//! - A `P`/`S` command without To-tag has no trailing space; `Q` without To-tag is sent as
//!   `Q <callid> <tag>;1` instead of `… <tag>;1 ;1` (D17); `N` without To-tag omits the second
//!   tag instead of sending a bare `;<m>` (D16). Named counters (`rtpproxy_all_stats`) need both
//!   tags and are refused without a To-tag.
//! - Prompt names, destinations and flags are checked like every other command word: no
//!   whitespace or control bytes can reach the relay.
//! - The copy context generates the `m=` sections in document order (C: reverse order, a side
//!   effect of its SDP parser), increments the `o=` version on every new offer (D26), writes
//!   every copied line with CRLF, offers a stream its leg disabled (port `0`) inactive, treats
//!   an answered port `0` as "do not copy", and
//!   deserialises what it serialised (D26: C reads the timestamp from a pointer and always
//!   fails).
//! - Statistics: a malformed reply is an error (C: +1 without setting anything, D17).

use std::fmt;

use crate::core::proto::command::{check_word, Command, CommandBuilder, WordKind};
use crate::core::proto::reply::{self, Reply};
use crate::core::proto::ProtoError;
use crate::core::sdp::{self, Media, Protocol, Sdp, SdpError};

/// RTPProxy feature date of the `N` command (stop recording / copying). Not one of the
/// capabilities the prober asks for; the host checks it with `VF 20200226` before sending `N`.
pub const STOP_COPY_FEATURE_DATE: u32 = 20200226;

/// Feature date that announces `R`/`C` (capability `RECORD`).
pub const RECORD_FEATURE_DATE: u32 = 20071218;
/// Feature date that announces codec lists (capability `CODECS`), needed by `P`/`S`.
pub const CODECS_FEATURE_DATE: u32 = 20081102;
/// Feature date that announces `Q` (capability `STATS`).
pub const STATS_FEATURE_DATE: u32 = 20080403;
/// Feature date that announces named counters in `Q` (capability `STATS_EXTRA`).
pub const STATS_EXTRA_FEATURE_DATE: u32 = 20150420;

/// The media command a reply belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `P`: play a prompt.
    Play,
    /// `S`: stop playing.
    StopPlay,
    /// `R`: record the session.
    Record,
    /// `C`: record one stream to a file or copy it to a network address.
    Copy,
    /// `N`: stop recording / copying.
    StopCopy,
    /// `Q`: statistics.
    Query,
}

impl Operation {
    /// The command letter.
    pub fn letter(self) -> char {
        match self {
            Self::Play => 'P',
            Self::StopPlay => 'S',
            Self::Record => 'R',
            Self::Copy => 'C',
            Self::StopCopy => 'N',
            Self::Query => 'Q',
        }
    }

    /// What the command does, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Play => "play prompt",
            Self::StopPlay => "stop prompt",
            Self::Record => "record",
            Self::Copy => "copy",
            Self::StopCopy => "stop recording",
            Self::Query => "query statistics",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.letter())
    }
}

/// An `E<code>` reply, read in the context of the command that got it (RTPProxy 3.2 codes,
/// spec §3.3; the legacy meaning of E8 for `Q` is kept).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// E50 (E8 for `Q` on old relays): no session with this Call-ID and tags.
    #[error("session not found on the relay (E{code})")]
    SessionNotFound {
        /// The code received.
        code: u32,
    },
    /// E50 on `N`: no such session, or nothing is being recorded or copied in the direction
    /// the tags name.
    #[error("no such session, or nothing is being recorded in that direction (E50)")]
    NotRecording,
    /// E0: the relay does not know the command.
    #[error("the relay does not know this command (E0)")]
    UnknownCommand,
    /// E1: wrong number of arguments.
    #[error("wrong number of arguments (E1)")]
    WrongArgumentCount,
    /// E2, E6, E7 (`R`/`C`/`N`), E19 (`Q`): a modifier the command does not support.
    #[error("modifier not supported by this command (E{code})")]
    UnsupportedModifier {
        /// The code received.
        code: u32,
    },
    /// E3: sub-command not supported.
    #[error("sub-command not supported (E3)")]
    UnsupportedSubcommand,
    /// E5: syntax error.
    #[error("command syntax error (E5)")]
    Syntax,
    /// E17: the play count is not a number.
    #[error("bad play count (E17)")]
    BadPlayCount,
    /// E35 on `P`: no codec list was saved for the session (offer/answer without codecs).
    #[error("no codec list saved for the session: offer/answer must send codecs first (E35)")]
    NoSavedCodecs,
    /// E60: the prompt cannot be played (no prompt file for the session's codecs).
    #[error("the prompt cannot be played: no readable prompt file for the session's codecs (E60)")]
    PlayFailed,
    /// E62: unknown counter name in `Q`.
    #[error("unknown counter name (E62)")]
    UnknownCounter,
    /// E65: the copy or recording could not be started.
    #[error("recording/copy failed on the relay (E65)")]
    CopyFailed,
    /// E68: statistics could not be produced.
    #[error("statistics query failed (E68)")]
    StatsFailed,
    /// E25/E26: the reply would not fit the relay's buffer.
    #[error("reply too large for the relay (E{code})")]
    ReplyOverflow {
        /// The code received.
        code: u32,
    },
    /// E81–E89: the relay is out of memory.
    #[error("the relay is out of memory (E{code})")]
    OutOfMemory {
        /// The code received.
        code: u32,
    },
    /// E98: overload protection.
    #[error("the relay is overloaded (E98)")]
    Overloaded,
    /// E99: the relay is shutting down.
    #[error("the relay is shutting down (E99)")]
    ShuttingDown,
    /// Any other code.
    #[error("relay error E{code}")]
    Other {
        /// The code received.
        code: u32,
    },
}

impl RelayError {
    /// Reads `E<code>` as an answer to `op`.
    pub fn from_code(op: Operation, code: u32) -> Self {
        match (code, op) {
            (50, Operation::StopCopy) => Self::NotRecording,
            (50, _) | (8, Operation::Query) => Self::SessionNotFound { code },
            (0, _) => Self::UnknownCommand,
            (1, _) => Self::WrongArgumentCount,
            (2 | 6, _) => Self::UnsupportedModifier { code },
            (7, Operation::Record | Operation::Copy | Operation::StopCopy) => {
                Self::UnsupportedModifier { code }
            }
            (19, Operation::Query) => Self::UnsupportedModifier { code },
            (3, _) => Self::UnsupportedSubcommand,
            (5, _) => Self::Syntax,
            (17, Operation::Play) => Self::BadPlayCount,
            (35, Operation::Play) => Self::NoSavedCodecs,
            (60, _) => Self::PlayFailed,
            (62, _) => Self::UnknownCounter,
            (65, _) => Self::CopyFailed,
            (68, _) => Self::StatsFailed,
            (25 | 26, _) => Self::ReplyOverflow { code },
            (81..=89, _) => Self::OutOfMemory { code },
            (98, _) => Self::Overloaded,
            (99, _) => Self::ShuttingDown,
            _ => Self::Other { code },
        }
    }

    /// The `E` code this error came from.
    pub fn code(&self) -> u32 {
        match self {
            Self::SessionNotFound { code }
            | Self::UnsupportedModifier { code }
            | Self::ReplyOverflow { code }
            | Self::OutOfMemory { code }
            | Self::Other { code } => *code,
            Self::NotRecording => 50,
            Self::UnknownCommand => 0,
            Self::WrongArgumentCount => 1,
            Self::UnsupportedSubcommand => 3,
            Self::Syntax => 5,
            Self::BadPlayCount => 17,
            Self::NoSavedCodecs => 35,
            Self::PlayFailed => 60,
            Self::UnknownCounter => 62,
            Self::CopyFailed => 65,
            Self::StatsFailed => 68,
            Self::Overloaded => 98,
            Self::ShuttingDown => 99,
        }
    }
}

/// Why a media operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// The relay answered `E<code>`.
    #[error("{op}: {error}")]
    Relay {
        /// The command.
        op: Operation,
        /// What the relay said.
        error: RelayError,
    },
    /// The relay did not answer (the node has been disabled).
    #[error("{0}: no reply from the relay")]
    NoReply(Operation),
    /// The reply cannot be read.
    #[error("{op}: malformed reply ({detail})")]
    MalformedReply {
        /// The command.
        op: Operation,
        /// What is wrong, with an excerpt.
        detail: String,
    },
    /// A word of the command is unusable (Call-ID, tag, prompt, destination, flags).
    #[error("bad {what}: {source}")]
    Word {
        /// Which word.
        what: &'static str,
        /// Why.
        source: ProtoError,
    },
    /// The operation needs a To-tag and there is none.
    #[error("{0} needs a To-tag and there is none")]
    MissingToTag(&'static str),
    /// The chosen relay lacks a feature the operation needs.
    #[error("the relay does not support {what} (RTPProxy feature {date} is missing)")]
    Unsupported {
        /// The operation.
        what: &'static str,
        /// The feature date.
        date: u32,
    },
    /// An SDP the operation needs cannot be read.
    #[error("cannot read the {what} SDP: {source}")]
    Sdp {
        /// Which SDP.
        what: &'static str,
        /// Why.
        source: SdpError,
    },
    /// The copy context is unusable (missing leg SDP, corrupt serialised form, …).
    #[error("copy context: {0}")]
    Context(String),
}

fn word(what: &'static str) -> impl Fn(ProtoError) -> MediaError {
    move |source| MediaError::Word { what, source }
}

// ---------------------------------------------------------------------------------------------
// Tags
// ---------------------------------------------------------------------------------------------

/// The tags of a media command: the first one and, when there is one, the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tags<'a> {
    /// First tag.
    pub first: &'a [u8],
    /// Second tag; `None` when the To-tag is empty.
    pub second: Option<&'a [u8]>,
}

impl<'a> Tags<'a> {
    /// `first` and `second`, an empty `second` meaning none.
    pub fn new(first: &'a [u8], second: &'a [u8]) -> Self {
        Self {
            first,
            second: Some(second).filter(|t| !t.is_empty()),
        }
    }
}

/// Who hears a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptTarget {
    /// The caller (`rtpproxy_stream2uac`): tags From, To.
    Uac,
    /// The callee (`rtpproxy_stream2uas`): tags To, From; the To-tag is required.
    Uas,
}

impl PromptTarget {
    /// Tag order for this target (spec §7.2).
    pub fn tags<'a>(self, from_tag: &'a [u8], to_tag: &'a [u8]) -> Result<Tags<'a>, MediaError> {
        match self {
            Self::Uac => Ok(Tags::new(from_tag, to_tag)),
            Self::Uas if to_tag.is_empty() => Err(MediaError::MissingToTag("streaming to the UAS")),
            Self::Uas => Ok(Tags::new(to_tag, from_tag)),
        }
    }
}

/// Tag order of `R`/`C`/`N`/`Q` taken from a SIP message (spec §7.4, §7.5): To, From on a reply
/// (the To-tag is then required), From, To on a request.
pub fn message_tags<'a>(
    is_reply: bool,
    from_tag: &'a [u8],
    to_tag: &'a [u8],
    what: &'static str,
) -> Result<Tags<'a>, MediaError> {
    if is_reply {
        if to_tag.is_empty() {
            return Err(MediaError::MissingToTag(what));
        }
        Ok(Tags::new(to_tag, from_tag))
    } else {
        Ok(Tags::new(from_tag, to_tag))
    }
}

fn push_indexed(b: &mut CommandBuilder, tags: &Tags<'_>, index: u32) -> Result<(), MediaError> {
    b.indexed_tag(tags.first, index).map_err(word("tag"))?;
    if let Some(t) = tags.second {
        b.indexed_tag(t, index).map_err(word("tag"))?;
    }
    Ok(())
}

fn head(letter: &str, suffix: &[u8], what: &'static str) -> Result<CommandBuilder, MediaError> {
    if !suffix.is_empty() {
        check_word(WordKind::Head, suffix).map_err(word(what))?;
    }
    let mut h = letter.as_bytes().to_vec();
    h.extend_from_slice(suffix);
    Command::builder(&h).map_err(word(what))
}

// ---------------------------------------------------------------------------------------------
// Command builders
// ---------------------------------------------------------------------------------------------

/// `P<count> <callid> <prompt> session <first>;1[ <second>;1]` (spec §7.2): plays `prompt` (a
/// file prefix on the relay host, one file per codec made with `makeann`) `count` times, `-1`
/// for a loop, in the codec saved by the last `U`/`L` with a codec list.
pub fn play(
    call_id: &[u8],
    prompt: &[u8],
    count: i32,
    tags: &Tags<'_>,
) -> Result<Command, MediaError> {
    let mut b = head("P", count.to_string().as_bytes(), "play count")?;
    b.call_id(call_id).map_err(word("call-id"))?;
    b.arg(prompt).map_err(word("prompt"))?;
    b.arg(b"session").map_err(word("codecs"))?;
    push_indexed(&mut b, tags, 1)?;
    Ok(b.finish())
}

/// `S <callid> <first>;1[ <second>;1]` (spec §7.3).
pub fn stop_play(call_id: &[u8], tags: &Tags<'_>) -> Result<Command, MediaError> {
    let mut b = head("S", b"", "command")?;
    b.call_id(call_id).map_err(word("call-id"))?;
    push_indexed(&mut b, tags, 1)?;
    Ok(b.finish())
}

/// `R<flags> <callid> <first>[ <second>]` (spec §7.4): record the whole session into the
/// relay's recording directory (flag `s`: both legs in one file).
pub fn record(flags: &[u8], call_id: &[u8], tags: &Tags<'_>) -> Result<Command, MediaError> {
    let mut b = head("R", flags, "recording flags")?;
    b.call_id(call_id).map_err(word("call-id"))?;
    b.tag(tags.first).map_err(word("tag"))?;
    if let Some(t) = tags.second {
        b.tag(t).map_err(word("tag"))?;
    }
    Ok(b.finish())
}

/// `C<flags> <callid> <destination> <first>;<m>[ <second>;<m>]` (spec §7.4): record stream `m`
/// to `destination` (`udp:IP:port` copies it to the network, anything else is a file name in
/// the relay's recording directory).
pub fn copy(
    flags: &[u8],
    call_id: &[u8],
    destination: &[u8],
    tags: &Tags<'_>,
    stream: u32,
) -> Result<Command, MediaError> {
    let mut b = head("C", flags, "recording flags")?;
    b.call_id(call_id).map_err(word("call-id"))?;
    b.arg(destination).map_err(word("destination"))?;
    push_indexed(&mut b, tags, stream)?;
    Ok(b.finish())
}

/// `N <callid> <first>;<m>[ <second>;<m>]` (spec §7.7): stop recording and copying stream `m`
/// (RTPProxy [`STOP_COPY_FEATURE_DATE`]).
pub fn stop_copy(call_id: &[u8], tags: &Tags<'_>, stream: u32) -> Result<Command, MediaError> {
    let mut b = head("N", b"", "command")?;
    b.call_id(call_id).map_err(word("call-id"))?;
    push_indexed(&mut b, tags, stream)?;
    Ok(b.finish())
}

/// The counters of `rtpproxy_all_stats`, in AVP index order (spec §7.6).
pub const ALL_STATS_COUNTERS: [&str; 10] = [
    "ttl",
    "npkts_ina",
    "npkts_ino",
    "nrelayed",
    "ndropped",
    "rtpa_nsent",
    "rtpa_nrcvd",
    "rtpa_ndups",
    "rtpa_nlost",
    "rtpa_perrs",
];

/// Counters asked per `Q` command (the C module's chunk size).
pub const COUNTERS_PER_QUERY: usize = 5;

/// `Q <callid> <first>;1[ <second>;1][ <counter>…]` (spec §7.5, §7.6). Named counters need
/// both tags (RTPProxy would read the first counter as the To-tag).
pub fn query(call_id: &[u8], tags: &Tags<'_>, counters: &[&str]) -> Result<Command, MediaError> {
    if !counters.is_empty() && tags.second.is_none() {
        return Err(MediaError::MissingToTag("a query with named counters"));
    }
    let mut b = head("Q", b"", "command")?;
    b.call_id(call_id).map_err(word("call-id"))?;
    push_indexed(&mut b, tags, 1)?;
    for c in counters {
        b.arg(c.as_bytes()).map_err(word("counter"))?;
    }
    Ok(b.finish())
}

/// The `Q` commands of `rtpproxy_all_stats`: [`ALL_STATS_COUNTERS`] in chunks of
/// [`COUNTERS_PER_QUERY`].
pub fn all_stats_queries(call_id: &[u8], tags: &Tags<'_>) -> Result<Vec<Command>, MediaError> {
    ALL_STATS_COUNTERS
        .chunks(COUNTERS_PER_QUERY)
        .map(|chunk| query(call_id, tags, chunk))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------------------------

fn read_reply(op: Operation, body: Option<&[u8]>) -> Result<String, MediaError> {
    let body = body.ok_or(MediaError::NoReply(op))?;
    match Reply::parse(body) {
        Ok(Reply::Error(code)) => Err(MediaError::Relay {
            op,
            error: RelayError::from_code(op, code),
        }),
        Ok(Reply::Data(text)) => Ok(text),
        Err(e) => Err(MediaError::MalformedReply {
            op,
            detail: e.to_string(),
        }),
    }
}

/// Reads the reply of `P`/`S`/`R`/`C`/`N` (`None`: no reply). RTPProxy answers `0` on success;
/// any other non-error text is accepted as success too.
pub fn check_reply(op: Operation, body: Option<&[u8]>) -> Result<(), MediaError> {
    read_reply(op, body).map(drop)
}

/// The short `Q` reply: `<ttl> <npkts_ina> <npkts_ino> <nrelayed> <ndropped>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallStats {
    /// Seconds left before the session times out.
    pub ttl: i64,
    /// Packets received from the first party (`up_var`).
    pub npkts_ina: u64,
    /// Packets received from the second party (`down_var`).
    pub npkts_ino: u64,
    /// Packets relayed (`sent_var`).
    pub nrelayed: u64,
    /// Packets dropped (`fail_var`).
    pub ndropped: u64,
}

fn malformed(op: Operation, text: &str, why: &str) -> MediaError {
    let shown: String = text.chars().take(64).collect();
    MediaError::MalformedReply {
        op,
        detail: format!("{why}: \"{}\"", shown.escape_default()),
    }
}

fn unsigned(tok: &str) -> Option<u64> {
    (!tok.is_empty() && tok.bytes().all(|b| b.is_ascii_digit()))
        .then(|| tok.parse().ok())
        .flatten()
}

fn signed(tok: &str) -> Option<i64> {
    let digits = tok.strip_prefix(['-', '+']).unwrap_or(tok);
    unsigned(digits)?;
    tok.parse().ok()
}

/// Reads the reply of the short `Q` (spec §7.5). Tokens after the fifth are ignored.
pub fn parse_stats(body: Option<&[u8]>) -> Result<CallStats, MediaError> {
    let op = Operation::Query;
    let text = read_reply(op, body)?;
    let toks: Vec<&str> = reply::tokens(&text).collect();
    if toks.len() < 5 {
        return Err(malformed(op, &text, "fewer than 5 values"));
    }
    let ttl = signed(toks[0]).ok_or_else(|| malformed(op, &text, "bad ttl"))?;
    let mut n = [0u64; 4];
    for (slot, tok) in n.iter_mut().zip(&toks[1..5]) {
        *slot = unsigned(tok).ok_or_else(|| malformed(op, &text, "bad packet counter"))?;
    }
    Ok(CallStats {
        ttl,
        npkts_ina: n[0],
        npkts_ino: n[1],
        nrelayed: n[2],
        ndropped: n[3],
    })
}

/// Reads the reply of a `Q` with `expected` named counters (spec §7.6): exactly that many
/// signed decimal values.
pub fn parse_counters(body: Option<&[u8]>, expected: usize) -> Result<Vec<i64>, MediaError> {
    let op = Operation::Query;
    let text = read_reply(op, body)?;
    let values = reply::tokens(&text)
        .map(|t| signed(t).ok_or_else(|| malformed(op, &text, "bad counter value")))
        .collect::<Result<Vec<_>, _>>()?;
    if values.len() != expected {
        return Err(malformed(
            op,
            &text,
            &format!("{} values, expected {expected}", values.len()),
        ));
    }
    Ok(values)
}

// ---------------------------------------------------------------------------------------------
// Stream numbers for C
// ---------------------------------------------------------------------------------------------

/// The media indexes a `C` command goes to when no `mediastream` is given: those of the
/// streams offer/answer gave to the relay (supported protocol, port not 0) in the message's SDP
/// parts, each once, in order. Stream 1 alone when no SDP part can be read (as C).
pub fn copy_streams(parts: &[&[u8]]) -> Vec<u32> {
    let mut out: Vec<u32> = Vec::new();
    let mut parsed = false;
    for body in parts {
        let Ok(sdp) = sdp::scan(body) else { continue };
        parsed = true;
        for m in sdp.media() {
            if let (true, Some(i)) = (m.is_proxied(body), m.index) {
                if !out.contains(&i) {
                    out.push(i);
                }
            }
        }
    }
    if !parsed || out.is_empty() {
        vec![1]
    } else {
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Copy context (rtp_relay copy API, spec §6)
// ---------------------------------------------------------------------------------------------

/// Copy flags given by rtp_relay (`rtp_relay_common.h`).
pub mod copy_flags {
    /// SIPREC mode: streams carry `a=label:` and answers are matched by label.
    pub const SIPREC: u32 = 1 << 0;
    /// The copy is disabled: every stream is offered `a=inactive`.
    pub const DISABLE: u32 = 1 << 1;
    /// Copy the caller's streams.
    pub const LEG_CALLER: u32 = 1 << 2;
    /// Copy the callee's streams.
    pub const LEG_CALLEE: u32 = 1 << 3;
}

/// Largest number of streams rtp_relay's stream map holds.
pub const MAX_STREAM_MAP: usize = 32;

/// Largest number of streams a context keeps (32 per leg: the stream mask has 32 bits).
pub const MAX_CONTEXT_STREAMS: usize = 64;

/// A call leg of the copy API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// The caller (`RTP_RELAY_CALLER`, 0).
    Caller,
    /// The callee (`RTP_RELAY_CALLEE`, 1).
    Callee,
}

impl Leg {
    /// The rtp_relay number of the leg.
    pub fn number(self) -> i32 {
        match self {
            Self::Caller => 0,
            Self::Callee => 1,
        }
    }

    /// Tags of the leg's commands: caller (From, To), callee (To, From).
    pub fn tags<'a>(self, from_tag: &'a [u8], to_tag: &'a [u8]) -> Tags<'a> {
        match self {
            Self::Caller => Tags::new(from_tag, to_tag),
            Self::Callee => Tags::new(to_tag, from_tag),
        }
    }
}

/// One copied stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyStream {
    /// Whose stream it is.
    pub leg: Leg,
    /// The port written in the generated SDP.
    pub port: u16,
    /// The label (SIPREC `a=label:`), unique in the context.
    pub label: u32,
    /// The stream's 0-based position in its leg's SDP session.
    pub medianum: u32,
    /// The stream is on hold / inactive in its leg.
    pub inactive: bool,
    /// A copy (`C`) is running for it.
    pub started: bool,
}

const STREAM_INACTIVE: u32 = 1 << 0;
const STREAM_STARTED: u32 = 1 << 1;

impl CopyStream {
    fn flag_bits(&self) -> u32 {
        (if self.inactive { STREAM_INACTIVE } else { 0 })
            | (if self.started { STREAM_STARTED } else { 0 })
    }
}

/// One entry of the stream map handed back to rtp_relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamMapEntry {
    /// The leg.
    pub leg: Leg,
    /// The stream's 0-based position in its leg's SDP.
    pub medianum: u32,
    /// Its label.
    pub label: u32,
}

/// A command the host must send after a copy answer or at the end of the copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyAction {
    /// `C <callid> <destination> <tags by leg>;<m>`: start copying a stream.
    Start {
        /// Index into [`CopyContext::streams`].
        stream: usize,
        /// `udp:<ip>:<port>` from the answer.
        destination: Vec<u8>,
    },
    /// `N <callid> <tags by leg>;<m>`: stop copying a stream.
    Stop {
        /// Index into [`CopyContext::streams`].
        stream: usize,
        /// Mark the stream inactive afterwards (it left the stream mask).
        deactivate: bool,
    },
}

impl CopyAction {
    /// The stream the action is about.
    pub fn stream(&self) -> usize {
        match self {
            Self::Start { stream, .. } | Self::Stop { stream, .. } => *stream,
        }
    }
}

/// What a copy answer asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AnswerPlan {
    /// Commands to send, in order; report each result with [`CopyContext::record_result`].
    pub actions: Vec<CopyAction>,
    /// Streams of the answer that need nothing (already started, or already stopped).
    pub unchanged: usize,
}

/// The state of one media copy (one SIPREC session / one fork), kept by rtp_relay between the
/// offer, the answer and the end of the copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyContext {
    /// Creation time (seconds), used as the `o=` session id.
    pub ts: i64,
    /// Address written in `o=` and `c=`.
    pub media_ip: Vec<u8>,
    /// [`copy_flags`] of the last offer.
    pub flags: u32,
    /// `o=` version of the next offer.
    pub version: u32,
    /// Next label.
    pub max_index: u32,
    /// Streams (0-based SDP positions) asked for by the last offer.
    pub streams_mask: u32,
    /// The streams, caller's and callee's, in creation order.
    pub streams: Vec<CopyStream>,
}

/// Lines of `body[span]`: content without terminator, empty lines skipped.
fn lines_in(body: &[u8], span: sdp::Span) -> impl Iterator<Item = &[u8]> {
    span.slice(body)
        .split(|&b| b == b'\r' || b == b'\n')
        .filter(|l| !l.is_empty())
}

const DIRECTIONS_ACTIVE: [&[u8]; 2] = [b"a=sendrecv", b"a=sendonly"];
const DIRECTIONS_INACTIVE: [&[u8]; 2] = [b"a=recvonly", b"a=inactive"];

/// Hold as OpenSIPS' SDP parser sees it: an `a=inactive`/`a=sendonly` line (when the stream has
/// payload types), or the null address `0.0.0.0` as connection address.
fn is_on_hold(body: &[u8], m: &Media) -> bool {
    let after_m = sdp::Span::new(m.line.end(), m.block.end().saturating_sub(m.line.end()));
    if m.payloads.len > 0 {
        let hold = lines_in(body, after_m).any(|l| {
            l.len() >= 10
                && (l[..10].eq_ignore_ascii_case(b"a=inactive")
                    || l[..10].eq_ignore_ascii_case(b"a=sendonly"))
        });
        if hold {
            return true;
        }
    }
    m.effective.addr.slice(body) == b"0.0.0.0"
}

fn scan_leg<'a>(what: &'static str, body: &'a [u8]) -> Result<Sdp<'a>, MediaError> {
    sdp::scan(body).map_err(|source| MediaError::Sdp { what, source })
}

/// The media sections of the first session, with their 0-based positions.
fn first_session<'s, 'a>(sdp: &'s Sdp<'a>) -> impl Iterator<Item = (u32, &'s Media)> + 's {
    let range = sdp
        .sessions()
        .first()
        .map(|s| s.media.clone())
        .unwrap_or(0..0);
    sdp.media()[range]
        .iter()
        .enumerate()
        .map(|(k, m)| (k as u32, m))
}

fn in_mask(mask: u32, medianum: u32) -> bool {
    medianum < 32 && mask & (1 << medianum) != 0
}

impl CopyContext {
    /// A new context created at `ts` for `media_ip` (the `flags` argument of the copy offer
    /// when given, else `generated_sdp_media_ip`).
    pub fn new(ts: i64, media_ip: &[u8], flags: u32) -> Self {
        Self {
            ts,
            media_ip: media_ip.to_vec(),
            flags,
            version: 0,
            max_index: 0,
            streams_mask: 0,
            streams: Vec::new(),
        }
    }

    fn find(&self, leg: Leg, medianum: u32) -> Option<usize> {
        self.streams
            .iter()
            .position(|s| s.leg == leg && s.medianum == medianum)
    }

    fn get_or_add(
        &mut self,
        leg: Leg,
        medianum: u32,
        alloc_port: &mut dyn FnMut() -> u16,
    ) -> Result<usize, MediaError> {
        if let Some(i) = self.find(leg, medianum) {
            return Ok(i);
        }
        if self.streams.len() >= MAX_CONTEXT_STREAMS {
            return Err(MediaError::Context(format!(
                "more than {MAX_CONTEXT_STREAMS} streams"
            )));
        }
        self.streams.push(CopyStream {
            leg,
            port: alloc_port(),
            label: self.max_index,
            medianum,
            inactive: false,
            started: false,
        });
        self.max_index = self.max_index.wrapping_add(1);
        Ok(self.streams.len() - 1)
    }

    /// Builds the SDP offer of the copy (spec §6.1) from the legs' current SDPs and remembers
    /// the streams. `alloc_port` gives the port of each new stream. On error the context is
    /// left as it was.
    pub fn offer(
        &mut self,
        flags: u32,
        streams_mask: u32,
        caller_sdp: Option<&[u8]>,
        callee_sdp: Option<&[u8]>,
        alloc_port: &mut dyn FnMut() -> u16,
    ) -> Result<Vec<u8>, MediaError> {
        let mut next = self.clone();
        next.flags = flags;
        next.streams_mask = streams_mask;
        let ip = String::from_utf8_lossy(&self.media_ip).into_owned();
        let mut out = format!(
            "v=0\r\no=- {} {} IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n",
            self.ts, self.version
        )
        .into_bytes();
        for (leg, bit, body, what) in [
            (Leg::Caller, copy_flags::LEG_CALLER, caller_sdp, "caller"),
            (Leg::Callee, copy_flags::LEG_CALLEE, callee_sdp, "callee"),
        ] {
            if flags & bit == 0 {
                continue;
            }
            let body = body.ok_or_else(|| MediaError::Context(format!("no {what} SDP")))?;
            next.offer_leg(leg, what, body, &mut out, alloc_port)?;
        }
        next.version = next.version.wrapping_add(1);
        *self = next;
        Ok(out)
    }

    fn offer_leg(
        &mut self,
        leg: Leg,
        what: &'static str,
        body: &[u8],
        out: &mut Vec<u8>,
        alloc_port: &mut dyn FnMut() -> u16,
    ) -> Result<(), MediaError> {
        let sdp = scan_leg(what, body)?;
        let session = &sdp.sessions()[0];
        let first_m = sdp.media()[session.media.start].line.offset;
        let session_attrs: Vec<&[u8]> = lines_in(
            body,
            sdp::Span::new(
                session.origin.line.end(),
                first_m - session.origin.line.end(),
            ),
        )
        .filter(|l| matches!(l[0], b'b' | b'z' | b'k' | b'a'))
        .collect();
        let siprec = self.flags & copy_flags::SIPREC != 0;
        for (k, m) in first_session(&sdp) {
            if !in_mask(self.streams_mask, k) || m.protocol != Protocol::Rtp {
                continue;
            }
            let idx = self.get_or_add(leg, k, alloc_port)?;
            let port = self.streams[idx].port;
            let mut inactive = is_on_hold(body, m);
            // m= line with our port, up to the end of the payload list
            let text_end = if m.payloads.len > 0 {
                m.payloads.end()
            } else {
                m.proto.end()
            };
            out.extend_from_slice(&body[m.line.offset..m.port.offset]);
            out.extend_from_slice(port.to_string().as_bytes());
            out.extend_from_slice(&body[m.port.end()..text_end]);
            out.extend_from_slice(b"\r\n");
            for l in &session_attrs {
                out.extend_from_slice(l);
                out.extend_from_slice(b"\r\n");
            }
            let after_m = sdp::Span::new(m.line.end(), m.block.end() - m.line.end());
            for l in lines_in(body, after_m) {
                match l[0] {
                    b'a' => {
                        if l.len() > 8 && &l[2..l.len().min(8)] == b"label:" {
                            if siprec {
                                continue;
                            }
                        } else if DIRECTIONS_ACTIVE.contains(&l) {
                            inactive = false;
                            continue;
                        } else if DIRECTIONS_INACTIVE.contains(&l) {
                            inactive = true;
                            continue;
                        }
                    }
                    b'b' | b'k' => {}
                    _ => continue,
                }
                out.extend_from_slice(l);
                out.extend_from_slice(b"\r\n");
            }
            // Beyond C: a stream the leg disabled (port 0) is offered inactive.
            inactive |= m.is_port_zero(body);
            let s = &mut self.streams[idx];
            if inactive {
                s.inactive = true;
                out.extend_from_slice(b"a=inactive\r\n");
            } else if self.flags & copy_flags::DISABLE != 0 {
                out.extend_from_slice(b"a=inactive\r\n");
            } else {
                s.inactive = false;
                out.extend_from_slice(b"a=sendonly\r\n");
            }
            if siprec {
                out.extend_from_slice(format!("a=label:{}\r\n", s.label).as_bytes());
            }
        }
        Ok(())
    }

    /// The stream map for rtp_relay: caller streams, then callee streams (at most
    /// [`MAX_STREAM_MAP`]).
    pub fn stream_map(&self) -> Vec<StreamMapEntry> {
        [Leg::Caller, Leg::Callee]
            .iter()
            .flat_map(|&leg| self.streams.iter().filter(move |s| s.leg == leg))
            .take(MAX_STREAM_MAP)
            .map(|s| StreamMapEntry {
                leg: s.leg,
                medianum: s.medianum,
                label: s.label,
            })
            .collect()
    }

    fn match_answer_stream(&self, body: &[u8], k: u32, m: &Media) -> Option<usize> {
        if self.flags & copy_flags::SIPREC != 0 {
            let after_m = sdp::Span::new(m.line.end(), m.block.end() - m.line.end());
            let label = lines_in(body, after_m)
                .filter_map(|l| l.strip_prefix(b"a=label:"))
                .find_map(|v| {
                    std::str::from_utf8(v.trim_ascii())
                        .ok()?
                        .parse::<u32>()
                        .ok()
                });
            if let Some(label) = label {
                if let Some(i) = self.streams.iter().position(|s| s.label == label) {
                    return Some(i);
                }
            }
        }
        self.find(Leg::Caller, k)
            .or_else(|| self.find(Leg::Callee, k))
    }

    /// Reads the copy's SDP answer (spec §6.2) and says which streams to start and stop.
    pub fn answer(&self, body: &[u8]) -> Result<AnswerPlan, MediaError> {
        let sdp = scan_leg("copy answer", body)?;
        let mut plan = AnswerPlan::default();
        for (k, m) in first_session(&sdp) {
            if !in_mask(self.streams_mask, k) {
                continue;
            }
            let Some(idx) = self.match_answer_stream(body, k, m) else {
                continue;
            };
            let s = &self.streams[idx];
            let active = !is_on_hold(body, m)
                && !m.is_port_zero(body)
                && self.flags & copy_flags::DISABLE == 0
                && !s.inactive;
            if active {
                if s.started {
                    plan.unchanged += 1;
                    continue;
                }
                let mut destination = b"udp:".to_vec();
                destination.extend_from_slice(m.effective.addr.slice(body));
                destination.push(b':');
                destination.extend_from_slice(m.port.slice(body));
                plan.actions.push(CopyAction::Start {
                    stream: idx,
                    destination,
                });
            } else if s.started {
                plan.actions.push(CopyAction::Stop {
                    stream: idx,
                    deactivate: false,
                });
            } else {
                plan.unchanged += 1;
            }
        }
        for (idx, s) in self.streams.iter().enumerate() {
            if !in_mask(self.streams_mask, s.medianum) && s.started {
                plan.actions.push(CopyAction::Stop {
                    stream: idx,
                    deactivate: true,
                });
            }
        }
        Ok(plan)
    }

    /// The `N` commands that end the copy (spec §6.3), and how many streams need none.
    pub fn delete(&self) -> (Vec<CopyAction>, usize) {
        let actions: Vec<CopyAction> = self
            .streams
            .iter()
            .enumerate()
            .filter(|(_, s)| s.started)
            .map(|(stream, _)| CopyAction::Stop {
                stream,
                deactivate: false,
            })
            .collect();
        let idle = self.streams.len() - actions.len();
        (actions, idle)
    }

    /// Records the outcome of an action.
    pub fn record_result(&mut self, action: &CopyAction, ok: bool) {
        let Some(s) = self.streams.get_mut(action.stream()) else {
            return;
        };
        match action {
            CopyAction::Start { .. } => s.started |= ok,
            CopyAction::Stop { deactivate, .. } => {
                if ok {
                    s.started = false;
                }
                if *deactivate {
                    s.inactive = true;
                }
            }
        }
    }

    /// Writes the context in the C module's serialised layout (spec §6.3): `ts` as raw
    /// native-endian `time_t` bytes, media IP, flags, version, max index, stream mask, then per
    /// leg the stream count and per stream port, label, flags, media number.
    pub fn serialize(&self, w: &mut dyn CopyWriter) -> Result<(), MediaError> {
        let fail = || MediaError::Context("cannot write the serialised form".into());
        let ok = w.push_str(&self.ts.to_ne_bytes())
            && w.push_str(&self.media_ip)
            && w.push_int(self.flags)
            && w.push_int(self.version)
            && w.push_int(self.max_index)
            && w.push_int(self.streams_mask);
        if !ok {
            return Err(fail());
        }
        for leg in [Leg::Caller, Leg::Callee] {
            let streams: Vec<&CopyStream> = self.streams.iter().filter(|s| s.leg == leg).collect();
            if !w.push_int(streams.len() as u32) {
                return Err(fail());
            }
            for s in streams {
                let ok = w.push_int(u32::from(s.port))
                    && w.push_int(s.label)
                    && w.push_int(s.flag_bits())
                    && w.push_int(s.medianum);
                if !ok {
                    return Err(fail());
                }
            }
        }
        Ok(())
    }

    /// Reads what [`CopyContext::serialize`] wrote.
    pub fn deserialize(r: &mut dyn CopyReader) -> Result<Self, MediaError> {
        let bad = |what: &str| MediaError::Context(format!("serialised form: bad {what}"));
        let ts_bytes = r.pop_str().ok_or_else(|| bad("timestamp"))?;
        let ts = <[u8; 8]>::try_from(ts_bytes.as_slice())
            .map(i64::from_ne_bytes)
            .map_err(|_| bad("timestamp"))?;
        let media_ip = r.pop_str().ok_or_else(|| bad("media ip"))?;
        let flags = r.pop_int().ok_or_else(|| bad("flags"))?;
        let mut ctx = Self::new(ts, &media_ip, flags);
        ctx.version = r.pop_int().ok_or_else(|| bad("version"))?;
        ctx.max_index = r.pop_int().ok_or_else(|| bad("max index"))?;
        ctx.streams_mask = r.pop_int().ok_or_else(|| bad("stream mask"))?;
        for leg in [Leg::Caller, Leg::Callee] {
            let n = r.pop_int().ok_or_else(|| bad("stream count"))?;
            if n as usize > MAX_CONTEXT_STREAMS - ctx.streams.len() {
                return Err(bad("stream count"));
            }
            for _ in 0..n {
                let port = r.pop_int().ok_or_else(|| bad("port"))?;
                let label = r.pop_int().ok_or_else(|| bad("label"))?;
                let bits = r.pop_int().ok_or_else(|| bad("stream flags"))?;
                let medianum = r.pop_int().ok_or_else(|| bad("media number"))?;
                let port = u16::try_from(port).map_err(|_| bad("port"))?;
                if ctx.find(leg, medianum).is_some() {
                    return Err(bad("duplicate stream"));
                }
                ctx.streams.push(CopyStream {
                    leg,
                    port,
                    label,
                    medianum,
                    inactive: bits & STREAM_INACTIVE != 0,
                    started: bits & STREAM_STARTED != 0,
                });
            }
        }
        Ok(ctx)
    }

    /// A compact byte form (for shared memory): the serialised fields, each string as a
    /// 4-byte little-endian length and its bytes, each integer as 4 little-endian bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = ByteWriter(Vec::new());
        // Writing into a vector cannot fail.
        let _ = self.serialize(&mut w);
        w.0
    }

    /// Reads [`CopyContext::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MediaError> {
        let mut r = ByteReader { bytes, pos: 0 };
        let ctx = Self::deserialize(&mut r)?;
        if r.pos != bytes.len() {
            return Err(MediaError::Context(
                "trailing bytes in the stored context".into(),
            ));
        }
        Ok(ctx)
    }

    /// The largest [`CopyContext::to_bytes`] length a context for `media_ip_len` can reach.
    pub fn max_bytes(media_ip_len: usize) -> usize {
        // ts + ip + 4 ints + 2 counts + 4 ints per stream
        (4 + 8) + (4 + media_ip_len) + 4 * 4 + 2 * 4 + MAX_CONTEXT_STREAMS * 4 * 4
    }
}

/// Where [`CopyContext::serialize`] writes (OpenSIPS' `bin_push_*`).
pub trait CopyWriter {
    /// Appends a string; `false` on failure.
    fn push_str(&mut self, s: &[u8]) -> bool;
    /// Appends an integer; `false` on failure.
    fn push_int(&mut self, v: u32) -> bool;
}

/// Where [`CopyContext::deserialize`] reads from (OpenSIPS' `bin_pop_*`).
pub trait CopyReader {
    /// The next string.
    fn pop_str(&mut self) -> Option<Vec<u8>>;
    /// The next integer.
    fn pop_int(&mut self) -> Option<u32>;
}

struct ByteWriter(Vec<u8>);

impl CopyWriter for ByteWriter {
    fn push_str(&mut self, s: &[u8]) -> bool {
        let Ok(len) = u32::try_from(s.len()) else {
            return false;
        };
        self.0.extend_from_slice(&len.to_le_bytes());
        self.0.extend_from_slice(s);
        true
    }

    fn push_int(&mut self, v: u32) -> bool {
        self.0.extend_from_slice(&v.to_le_bytes());
        true
    }
}

struct ByteReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl ByteReader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
}

impl CopyReader for ByteReader<'_> {
    fn pop_str(&mut self) -> Option<Vec<u8>> {
        let len = self.pop_int()? as usize;
        self.take(len).map(<[u8]>::to_vec)
    }

    fn pop_int(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// The next generated-SDP port after `prev` (the C module's shared counter): one up, back to
/// `min` once `max` is reached. The counter starts at `min`, so the first port is `min + 1`.
pub fn next_generated_port(prev: u16, min: u16, max: u16) -> u16 {
    if prev >= max || prev < min {
        min
    } else {
        prev + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_orders() {
        let t = PromptTarget::Uac.tags(b"f", b"").unwrap();
        assert_eq!((t.first, t.second), (&b"f"[..], None));
        let t = PromptTarget::Uas.tags(b"f", b"t").unwrap();
        assert_eq!((t.first, t.second), (&b"t"[..], Some(&b"f"[..])));
        assert!(PromptTarget::Uas.tags(b"f", b"").is_err());
        let t = message_tags(true, b"f", b"t", "x").unwrap();
        assert_eq!((t.first, t.second), (&b"t"[..], Some(&b"f"[..])));
        assert!(message_tags(true, b"f", b"", "x").is_err());
        let t = Leg::Callee.tags(b"f", b"t");
        assert_eq!(t.first, b"t");
    }

    #[test]
    fn port_counter_wraps() {
        assert_eq!(next_generated_port(35000, 35000, 35002), 35001);
        assert_eq!(next_generated_port(35001, 35000, 35002), 35002);
        assert_eq!(next_generated_port(35002, 35000, 35002), 35000);
        assert_eq!(next_generated_port(0, 35000, 35002), 35000);
    }

    #[test]
    fn relay_codes_in_context() {
        assert_eq!(
            RelayError::from_code(Operation::Query, 8),
            RelayError::SessionNotFound { code: 8 }
        );
        assert_eq!(
            RelayError::from_code(Operation::Play, 8),
            RelayError::Other { code: 8 }
        );
        assert_eq!(
            RelayError::from_code(Operation::Copy, 7),
            RelayError::UnsupportedModifier { code: 7 }
        );
        for code in 0..120 {
            for op in [
                Operation::Play,
                Operation::StopPlay,
                Operation::Record,
                Operation::Copy,
                Operation::StopCopy,
                Operation::Query,
            ] {
                assert_eq!(RelayError::from_code(op, code).code(), code);
            }
        }
    }

    #[test]
    fn bytes_roundtrip() {
        let mut c = CopyContext::new(1_700_000_000, b"10.0.0.1", copy_flags::SIPREC);
        c.streams.push(CopyStream {
            leg: Leg::Callee,
            port: 35001,
            label: 3,
            medianum: 1,
            inactive: true,
            started: true,
        });
        let b = c.to_bytes();
        assert!(b.len() <= CopyContext::max_bytes(8));
        assert_eq!(CopyContext::from_bytes(&b).unwrap(), c);
        assert!(CopyContext::from_bytes(&b[..b.len() - 1]).is_err());
    }
}
