//! Media operations and integrations: prompts, recording, statistics, the `load_rtpproxy` API
//! and the rtp_relay engine (spec §6, §7, §12). Commands and replies are built and read in
//! `core::media`; this file reads the message and parameters, picks the node, checks its
//! capabilities, sends, and turns the outcome into the script code.
//!
//! Return codes: 1 on success; -1 on any failure, including an error answered by the relay
//! (the C module ignores the replies of `P`/`S`/`R`/`C`/`N` and returns 1; we log the typed
//! error and return -1). `rtpproxy_stats` keeps the C codes: -2 for a reply it cannot read,
//! -8 for E8 and -N for any other `E<N>`.

use std::ffi::{c_int, c_void};
use std::sync::Mutex;

use crate::core::config::SetId;
use crate::core::media::{
    self as cm, CallStats, MediaError, Operation, PromptTarget, Tags, ALL_STATS_COUNTERS,
    COUNTERS_PER_QUERY, STOP_COPY_FEATURE_DATE,
};
use crate::core::proto::caps::Capabilities;
use crate::core::proto::command::Command;
use crate::core::proto::reply::Reply;
use crate::error::{HostError, ScriptError};
use crate::Error;

use super::functions::pick_node;
use crate::host::bind::avp;
use crate::host::bind::msg::{Bodies, Msg, MsgKind};
use crate::host::bind::params::Var;
use crate::host::ffi::sys::{host_str, sip_msg};
use crate::host::ffi::{cstr, guard};
use crate::host::runtime::control;
use crate::host::runtime::state::{self, ModuleState, NodeView};

fn state() -> Result<&'static ModuleState, Error> {
    state::get().ok_or_else(|| Error::from(HostError::NotInitialized))
}

// ---- message and node helpers ---------------------------------------------------------------

/// Call-ID and tags of a message.
pub(crate) struct CallIds {
    pub(crate) call_id: Vec<u8>,
    pub(crate) from_tag: Vec<u8>,
    pub(crate) to_tag: Vec<u8>,
    pub(crate) is_reply: bool,
}

pub(crate) fn call_ids(m: &Msg<'_>) -> Result<CallIds, Error> {
    Ok(CallIds {
        call_id: m.call_id().ok_or(ScriptError::MessageNoCallId)?.to_vec(),
        from_tag: m.ftag().ok_or(ScriptError::MessageNoFromTag)?.to_vec(),
        to_tag: m.ttag().unwrap_or_default().to_vec(),
        is_reply: m.kind() == Some(MsgKind::Reply),
    })
}

fn message<'m, 'a>(msg: Option<&'m Msg<'a>>) -> Result<&'m Msg<'a>, Error> {
    Ok(msg.ok_or(ScriptError::NoMessage)?)
}

/// Whether a node is enabled right now (shared health).
pub(crate) fn is_enabled(st: &ModuleState, node: &NodeView) -> bool {
    st.slot(node).is_some_and(|s| s.health().is_enabled())
}

/// The node with this URL: in `prefer` first, then in every set.
pub(crate) fn node_by_url(
    st: &ModuleState,
    url: &[u8],
    prefer: Option<SetId>,
) -> Option<&'static NodeView> {
    let matches = |n: &&NodeView| n.spec.url.as_bytes() == url;
    prefer
        .and_then(|id| st.sets().iter().find(|s| s.id == id))
        .and_then(|s| s.nodes.iter().find(matches))
        .or_else(|| st.sets().iter().flat_map(|s| s.nodes.iter()).find(matches))
}

/// Fails unless the node has `cap` (announced by feature `date`).
fn require(
    st: &ModuleState,
    node: &NodeView,
    cap: Capabilities,
    what: &'static str,
    date: u32,
) -> Result<(), MediaError> {
    if control::capabilities(st, node).contains(cap) {
        Ok(())
    } else {
        Err(MediaError::Unsupported { what, date })
    }
}

/// Per process: the answer of each node (by URL) to `VF 20200226`.
static STOP_COPY_SUPPORT: Mutex<Vec<(String, bool)>> = Mutex::new(Vec::new());

/// What this process learnt of the node's support for `N` (`None`: not asked yet).
pub(crate) fn stop_copy_known(node: &NodeView) -> Option<bool> {
    STOP_COPY_SUPPORT
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|(url, _)| *url == node.spec.url)
        .map(|(_, yes)| *yes)
}

/// Learns the node's support for `N` from its reply to `VF 20200226`; no reply (`None`)
/// means no, this time, and it is asked again next time.
pub(crate) fn stop_copy_learn(node: &NodeView, reply: Option<&[u8]>) -> bool {
    let Some(body) = reply else {
        return false;
    };
    let yes = Reply::parse(body).is_ok_and(|r| r.feature_supported());
    STOP_COPY_SUPPORT
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((node.spec.url.clone(), yes));
    if !yes {
        tracing::info!(
            "RTPProxy {} does not support stopping a recording (feature {STOP_COPY_FEATURE_DATE})",
            node.spec.url
        );
    }
    yes
}

/// The command that asks a node for `N` support.
pub(crate) fn stop_copy_probe() -> Command {
    Command::version_feature(STOP_COPY_FEATURE_DATE)
}

/// Whether the node supports `N` (feature 20200226), asked once per process and node.
fn supports_stop_copy(st: &ModuleState, node: &NodeView) -> bool {
    if let Some(yes) = stop_copy_known(node) {
        return yes;
    }
    stop_copy_learn(
        node,
        control::send_raw(st, node, &stop_copy_probe()).as_deref(),
    )
}

/// Sends one media command and checks its reply.
fn run(st: &ModuleState, node: &NodeView, op: Operation, cmd: &Command) -> Result<(), MediaError> {
    tracing::debug!("sending to {}: {cmd}", node.spec.url);
    cm::check_reply(op, control::send_raw(st, node, cmd).as_deref())
}

/// Starts copying/recording stream `stream` to `destination` (`C`), RECORD required.
pub(crate) fn send_copy(
    st: &ModuleState,
    node: &NodeView,
    flags: &[u8],
    call_id: &[u8],
    destination: &[u8],
    tags: &Tags<'_>,
    stream: u32,
) -> Result<(), MediaError> {
    require(
        st,
        node,
        Capabilities::RECORD,
        "recording",
        cm::RECORD_FEATURE_DATE,
    )?;
    let cmd = cm::copy(flags, call_id, destination, tags, stream)?;
    run(st, node, Operation::Copy, &cmd)
}

/// Stops recording/copying stream `stream` (`N`): RECORD and feature 20200226 required.
pub(crate) fn send_stop_copy(
    st: &ModuleState,
    node: &NodeView,
    call_id: &[u8],
    tags: &Tags<'_>,
    stream: u32,
) -> Result<(), MediaError> {
    require(
        st,
        node,
        Capabilities::RECORD,
        "recording",
        cm::RECORD_FEATURE_DATE,
    )?;
    let cmd = cm::stop_copy(call_id, tags, stream)?;
    if !supports_stop_copy(st, node) {
        return Err(MediaError::Unsupported {
            what: "stopping a recording",
            date: STOP_COPY_FEATURE_DATE,
        });
    }
    run(st, node, Operation::StopCopy, &cmd)
}

/// The SDP parts of the message, copied.
fn sdp_parts(m: &Msg<'_>) -> Vec<Vec<u8>> {
    match m.sdp_parts() {
        Bodies::Sdp(parts) => parts.into_iter().map(|p| p.bytes).collect(),
        Bodies::NoBody | Bodies::NoSdp => Vec::new(),
    }
}

/// The streams `C`/`N` go to: `mediastream` when positive, else every stream offer/answer gave
/// to the relay in the message's SDP (stream 1 when there is none).
pub(crate) fn streams_of(m: Option<&Msg<'_>>, mediastream: Option<i32>) -> Vec<u32> {
    match mediastream {
        Some(n) if n > 0 => vec![n as u32],
        _ => {
            let parts = m.map(sdp_parts).unwrap_or_default();
            if parts.is_empty() && m.is_some() {
                tracing::warn!("no SDP in the message: only stream 1 is recorded");
            }
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            cm::copy_streams(&refs)
        }
    }
}

/// Outcome of several stream commands: 1 when at least one succeeded.
fn some_succeeded(results: &[Result<(), MediaError>]) -> Result<i32, Error> {
    let mut ok = 0;
    let mut last = None;
    for r in results {
        match r {
            Ok(()) => ok += 1,
            Err(e) => {
                tracing::warn!("{e}");
                last = Some(e.clone());
            }
        }
    }
    match (ok, last) {
        (0, Some(e)) => Err(e.into()),
        (0, None) => Err(ScriptError::NothingToDo.into()),
        _ => Ok(1),
    }
}

// ---- requests: shared by the blocking functions, their async variants and the API ----------

/// How the replies of a [`MediaRequest`] become the function's result.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// One command; its reply decides (`P`, `S`, `R`).
    One,
    /// One command per stream; success when at least one succeeded (`C`, `N`).
    SomeStream,
    /// The short `Q` of `rtpproxy_stats`: counters, or the C module's negative codes.
    Stats,
}

/// What one media function sends to its node (spec §7), built from plain values so that the
/// blocking functions, their async variants (`features::aio`) and the `load_rtpproxy` API
/// share it: build it, [`MediaRequest::check`] it against the node, ask the node for `N`
/// support when [`MediaRequest::needs_stop_copy`] says so, send [`MediaRequest::sendable`]
/// in order, and give the replies to [`MediaRequest::finish`].
pub(crate) struct MediaRequest {
    op: Operation,
    outcome: Outcome,
    /// One entry per command: the command, or why it is not sent.
    cmds: Vec<Result<Command, MediaError>>,
}

/// What a media function ended with.
pub(crate) enum MediaDone {
    /// The script code.
    Code(i32),
    /// `rtpproxy_stats`' counters, to store in its variables (code 1).
    Stats(CallStats),
}

impl MediaDone {
    /// The script code, for a request whose result has no variables.
    pub(crate) fn code(self) -> i32 {
        match self {
            Self::Code(c) => c,
            Self::Stats(_) => 1,
        }
    }
}

impl MediaRequest {
    fn one(op: Operation, cmd: Result<Command, MediaError>) -> Self {
        Self {
            op,
            outcome: Outcome::One,
            cmds: vec![cmd],
        }
    }

    /// `P` (`rtpproxy_stream2uac/uas`): play `prompt` `count` times to `target`.
    pub(crate) fn play(
        ids: &CallIds,
        prompt: &[u8],
        count: i32,
        target: PromptTarget,
    ) -> Result<Self, Error> {
        let tags = target.tags(&ids.from_tag, &ids.to_tag)?;
        let cmd = cm::play(&ids.call_id, prompt, count, &tags)?;
        Ok(Self::one(Operation::Play, Ok(cmd)))
    }

    /// `S` (`rtpproxy_stop_stream2uac/uas`).
    pub(crate) fn stop_play(ids: &CallIds, target: PromptTarget) -> Result<Self, Error> {
        let tags = target.tags(&ids.from_tag, &ids.to_tag)?;
        let cmd = cm::stop_play(&ids.call_id, &tags)?;
        Ok(Self::one(Operation::StopPlay, Ok(cmd)))
    }

    /// `R` when there is no destination, else one `C` per stream (spec §7.4).
    pub(crate) fn record(
        call_id: &[u8],
        tags: &Tags<'_>,
        flags: &[u8],
        destination: Option<&[u8]>,
        streams: &[u32],
    ) -> Self {
        match destination {
            None => Self::one(Operation::Record, cm::record(flags, call_id, tags)),
            Some(dest) => Self {
                op: Operation::Copy,
                outcome: Outcome::SomeStream,
                cmds: streams
                    .iter()
                    .map(|&s| cm::copy(flags, call_id, dest, tags, s))
                    .collect(),
            },
        }
    }

    /// One `N` per stream (`rtpproxy_stop_recording`).
    pub(crate) fn stop_copy(call_id: &[u8], tags: &Tags<'_>, streams: &[u32]) -> Self {
        Self {
            op: Operation::StopCopy,
            outcome: Outcome::SomeStream,
            cmds: streams
                .iter()
                .map(|&s| cm::stop_copy(call_id, tags, s))
                .collect(),
        }
    }

    /// The short `Q` of `rtpproxy_stats`.
    pub(crate) fn stats(ids: &CallIds) -> Result<Self, Error> {
        let tags = cm::message_tags(
            ids.is_reply,
            &ids.from_tag,
            &ids.to_tag,
            "statistics of a reply",
        )?;
        let cmd = cm::query(&ids.call_id, &tags, &[])?;
        Ok(Self {
            op: Operation::Query,
            outcome: Outcome::Stats,
            cmds: vec![Ok(cmd)],
        })
    }

    /// Checks the node's capabilities (as probed; no I/O): nothing is sent to a node that
    /// lacks the one the commands need.
    pub(crate) fn check(&mut self, st: &ModuleState, node: &NodeView) {
        let (cap, what, date) = match self.op {
            Operation::Play | Operation::StopPlay => {
                (Capabilities::CODECS, "prompts", cm::CODECS_FEATURE_DATE)
            }
            Operation::Record | Operation::Copy | Operation::StopCopy => {
                (Capabilities::RECORD, "recording", cm::RECORD_FEATURE_DATE)
            }
            Operation::Query => (Capabilities::STATS, "statistics", cm::STATS_FEATURE_DATE),
        };
        if let Err(e) = require(st, node, cap, what, date) {
            for c in &mut self.cmds {
                *c = Err(e.clone());
            }
        }
    }

    /// Whether the node's support for `N` decides what is sent (`N` about to go out).
    pub(crate) fn needs_stop_copy(&self) -> bool {
        self.op == Operation::StopCopy && self.cmds.iter().any(Result::is_ok)
    }

    /// Applies the node's support for `N`: without it, no `N` is sent.
    pub(crate) fn stop_copy_support(&mut self, yes: bool) {
        if self.op != Operation::StopCopy || yes {
            return;
        }
        for c in self.cmds.iter_mut().filter(|c| c.is_ok()) {
            *c = Err(MediaError::Unsupported {
                what: "stopping a recording",
                date: STOP_COPY_FEATURE_DATE,
            });
        }
    }

    /// The commands to send, in order.
    pub(crate) fn sendable(&self) -> Vec<Command> {
        self.cmds
            .iter()
            .filter_map(|c| c.as_ref().ok())
            .cloned()
            .collect()
    }

    /// The result, from the replies to [`MediaRequest::sendable`] in order (`None`: the node
    /// gave none).
    pub(crate) fn finish(
        self,
        replies: impl IntoIterator<Item = Option<Vec<u8>>>,
    ) -> Result<MediaDone, Error> {
        let op = self.op;
        let mut replies = replies.into_iter();
        let results: Vec<Result<Option<Vec<u8>>, MediaError>> = self
            .cmds
            .into_iter()
            .map(|c| c.map(|_| replies.next().flatten()))
            .collect();
        let first = || {
            results
                .first()
                .cloned()
                .unwrap_or(Err(MediaError::NoReply(op)))
        };
        match self.outcome {
            Outcome::One => {
                cm::check_reply(op, first()?.as_deref())?;
                Ok(MediaDone::Code(1))
            }
            Outcome::SomeStream => {
                let checked: Vec<Result<(), MediaError>> = results
                    .iter()
                    .map(|r| {
                        r.as_ref()
                            .map_err(Clone::clone)
                            .and_then(|b| cm::check_reply(op, b.as_deref()))
                    })
                    .collect();
                some_succeeded(&checked).map(MediaDone::Code)
            }
            Outcome::Stats => match cm::parse_stats(first()?.as_deref()) {
                Ok(s) => Ok(MediaDone::Stats(s)),
                Err(e) => {
                    tracing::error!("rtpproxy_stats: {e}");
                    Ok(MediaDone::Code(
                        match e {
                            MediaError::NoReply(_) => -1,
                            MediaError::Relay { error, .. } => {
                                -(error.code().min(i32::MAX as u32) as i32)
                            }
                            _ => -2,
                        }
                        .min(-1),
                    ))
                }
            },
        }
    }
}

/// Runs a request on `node` with the blocking driver.
pub(crate) fn run_request(
    st: &ModuleState,
    node: &NodeView,
    mut req: MediaRequest,
) -> Result<MediaDone, Error> {
    req.check(st, node);
    if req.needs_stop_copy() {
        req.stop_copy_support(supports_stop_copy(st, node));
    }
    let replies: Vec<Option<Vec<u8>>> = req
        .sendable()
        .iter()
        .map(|cmd| {
            tracing::debug!("sending to {}: {cmd}", node.spec.url);
            control::send_raw(st, node, cmd)
        })
        .collect();
    req.finish(replies)
}

/// Stores `rtpproxy_stats`' counters in `up_var`, `down_var`, `sent_var`, `fail_var`.
///
/// # Safety
/// `vars` are the four `pv_spec_t*` parameters of the call on `msg`.
pub(crate) fn store_stats(vars: [&Var<'_>; 4], s: &CallStats) {
    for (var, value, name) in [
        (vars[0], s.npkts_ina, "up_var"),
        (vars[1], s.npkts_ino, "down_var"),
        (vars[2], s.nrelayed, "sent_var"),
        (vars[3], s.ndropped, "fail_var"),
    ] {
        let text = value.to_string();
        let n = i32::try_from(value).unwrap_or(i32::MAX);
        if !var.set_int(n, text.as_bytes()) {
            tracing::error!("rtpproxy_stats: cannot store {name}");
        }
    }
}

// ---- prompts --------------------------------------------------------------------------------

/// `rtpproxy_stream2uac/uas(prompt, count, [set_id], [sock_var])`.
pub(crate) fn stream(
    msg: Option<&Msg<'_>>,
    prompt: &[u8],
    count: i32,
    set: Option<i32>,
    sock_var: Option<Var<'_>>,
    target: PromptTarget,
) -> Result<i32, Error> {
    let m = message(msg)?;
    let st = state()?;
    let ids = call_ids(m)?;
    let req = MediaRequest::play(&ids, prompt, count, target)?;
    let node = pick_node(st, set, sock_var.as_ref(), &ids.call_id)?;
    run_request(st, node, req).map(MediaDone::code)
}

/// `rtpproxy_stop_stream2uac/uas([set_id], [sock_var])`.
pub(crate) fn stop_stream(
    msg: Option<&Msg<'_>>,
    set: Option<i32>,
    sock_var: Option<Var<'_>>,
    target: PromptTarget,
) -> Result<i32, Error> {
    let m = message(msg)?;
    let st = state()?;
    let ids = call_ids(m)?;
    let req = MediaRequest::stop_play(&ids, target)?;
    let node = pick_node(st, set, sock_var.as_ref(), &ids.call_id)?;
    run_request(st, node, req).map(MediaDone::code)
}

// ---- recording ------------------------------------------------------------------------------

/// The request of `rtpproxy_start_recording` on message `m`: tags From, To on a request and
/// To, From on a reply; with a destination, the streams `mediastream` names.
pub(crate) fn start_recording_request(
    m: &Msg<'_>,
    ids: &CallIds,
    flags: Option<&[u8]>,
    destination: Option<&[u8]>,
    mediastream: Option<i32>,
) -> Result<MediaRequest, Error> {
    let tags = cm::message_tags(
        ids.is_reply,
        &ids.from_tag,
        &ids.to_tag,
        "recording from a reply",
    )?;
    let streams = if destination.is_some() {
        streams_of(Some(m), mediastream)
    } else {
        Vec::new()
    };
    Ok(MediaRequest::record(
        &ids.call_id,
        &tags,
        flags.unwrap_or(b""),
        destination,
        &streams,
    ))
}

/// The request of `rtpproxy_stop_recording` on message `m`.
pub(crate) fn stop_recording_request(
    m: &Msg<'_>,
    ids: &CallIds,
    mediastream: Option<i32>,
) -> Result<MediaRequest, Error> {
    let tags = cm::message_tags(
        ids.is_reply,
        &ids.from_tag,
        &ids.to_tag,
        "stopping a recording from a reply",
    )?;
    let streams = streams_of(Some(m), mediastream);
    Ok(MediaRequest::stop_copy(&ids.call_id, &tags, &streams))
}

/// `rtpproxy_start_recording([set_id], [sock_var], [flags], [destination], [mediastream])`.
///
/// Tags go From, To on a request and To, From on a reply. RTPProxy records or copies the
/// direction the first tag names and keeps one recorder per direction, so recording both
/// directions takes one call from each side (or the copy API, which sends one `C` per leg).
///
pub(crate) fn start_recording(
    msg: Option<&Msg<'_>>,
    set: Option<i32>,
    sock_var: Option<Var<'_>>,
    flags: Option<&[u8]>,
    destination: Option<&[u8]>,
    mediastream: Option<i32>,
) -> Result<i32, Error> {
    let m = message(msg)?;
    let st = state()?;
    let ids = call_ids(m)?;
    let req = start_recording_request(m, &ids, flags, destination, mediastream)?;
    let node = pick_node(st, set, sock_var.as_ref(), &ids.call_id)?;
    run_request(st, node, req).map(MediaDone::code)
}

/// `rtpproxy_stop_recording([set_id], [sock_var], [mediastream])` (our addition: RTPProxy's
/// `N`, feature 20200226): stops the recordings and copies of the call's streams (`mediastream`
/// when positive, else every stream of the message's SDP, else stream 1).
///
pub(crate) fn stop_recording(
    msg: Option<&Msg<'_>>,
    set: Option<i32>,
    sock_var: Option<Var<'_>>,
    mediastream: Option<i32>,
) -> Result<i32, Error> {
    let m = message(msg)?;
    let st = state()?;
    let ids = call_ids(m)?;
    let req = stop_recording_request(m, &ids, mediastream)?;
    let node = pick_node(st, set, sock_var.as_ref(), &ids.call_id)?;
    run_request(st, node, req).map(MediaDone::code)
}

// ---- statistics -----------------------------------------------------------------------------

/// `rtpproxy_stats(up_var, down_var, sent_var, fail_var, [set_id], [sock_var])`.
///
pub(crate) fn stats(
    msg: Option<&Msg<'_>>,
    up: Var<'_>,
    down: Var<'_>,
    sent: Var<'_>,
    fail: Var<'_>,
    set: Option<i32>,
    sock_var: Option<Var<'_>>,
) -> Result<i32, Error> {
    let m = message(msg)?;
    let st = state()?;
    let ids = call_ids(m)?;
    let req = MediaRequest::stats(&ids)?;
    let node = pick_node(st, set, sock_var.as_ref(), &ids.call_id)?;
    match run_request(st, node, req)? {
        MediaDone::Stats(s) => {
            store_stats([&up, &down, &sent, &fail], &s);
            Ok(1)
        }
        MediaDone::Code(c) => Ok(c),
    }
}

/// `rtpproxy_all_stats(stats_avp, [set_id], [sock_var])`: ten counters into the AVP, index 0
/// = `ttl` … index 9 = `rtpa_perrs` (spec §7.6).
///
pub(crate) fn all_stats(
    msg: Option<&Msg<'_>>,
    stats_avp: Var<'_>,
    set: Option<i32>,
    sock_var: Option<Var<'_>>,
) -> Result<i32, Error> {
    // SAFETY: the first parameter is the `pv_spec_t*` of this call.
    if !unsafe { avp::is_avp(stats_avp.as_ptr()) } {
        return Err(ScriptError::NotAnAvp.into());
    }
    // SAFETY: as above; the variable's message is the current message (or NULL).
    let name = unsafe { avp::name(stats_avp.msg_ptr(), stats_avp.as_ptr()) }
        .ok_or(ScriptError::AvpUnresolved)?;
    avp::clear(name);
    let m = message(msg)?;
    let st = state()?;
    let ids = call_ids(m)?;
    let tags = cm::message_tags(
        ids.is_reply,
        &ids.from_tag,
        &ids.to_tag,
        "statistics of a reply",
    )?;
    let queries = cm::all_stats_queries(&ids.call_id, &tags)?;
    let node = pick_node(st, set, sock_var.as_ref(), &ids.call_id)?;
    require(
        st,
        node,
        Capabilities::STATS_EXTRA,
        "named statistics",
        cm::STATS_EXTRA_FEATURE_DATE,
    )?;
    let mut values = Vec::with_capacity(ALL_STATS_COUNTERS.len());
    for cmd in &queries {
        tracing::debug!("sending to {}: {cmd}", node.spec.url);
        let reply = control::send_raw(st, node, cmd);
        match cm::parse_counters(reply.as_deref(), COUNTERS_PER_QUERY) {
            Ok(v) => values.extend(v),
            Err(e) => {
                tracing::error!("rtpproxy_all_stats: {e}");
                return Ok(-2);
            }
        }
    }
    for (v, counter) in values.iter().zip(ALL_STATS_COUNTERS) {
        let stored = match i32::try_from(*v) {
            Ok(n) => avp::push_int(name, n),
            // Beyond C: a counter above 2^31-1 is kept as its decimal text.
            Err(_) => avp::push_str(name, v.to_string().as_bytes()),
        };
        if !stored {
            tracing::error!("rtpproxy_all_stats: cannot store {counter}");
            return Ok(-2);
        }
    }
    Ok(1)
}

// ---- load_rtpproxy API ----------------------------------------------------------------------

type StartRecordingF = unsafe extern "C" fn(
    *mut host_str,
    *mut host_str,
    *mut host_str,
    *mut host_str,
    *mut host_str,
    *mut host_str,
    c_int,
) -> c_int;
type StopRecordingF = unsafe extern "C" fn(
    *mut host_str,
    *mut host_str,
    *mut host_str,
    *mut host_str,
    c_int,
) -> c_int;

/// `struct rtpproxy_binds` of `rtpproxy_load.h`.
#[repr(C)]
pub(crate) struct RtpproxyBinds {
    start_recording: Option<StartRecordingF>,
    stop_recording: Option<StopRecordingF>,
}

/// `load_rtpproxy(struct rtpproxy_binds *)`: other modules find it with `find_export` and call
/// it with the binds as the only argument, which arrives here as `msg`.
///
/// # Safety
/// `msg` is a `struct rtpproxy_binds*` (or NULL), as `load_rtpproxy_api()` passes it.
pub(crate) unsafe fn load_rtpproxy(msg: *mut sip_msg) -> Result<i32, Error> {
    let binds = msg.cast::<RtpproxyBinds>();
    if binds.is_null() {
        return Err(ScriptError::NoBinds.into());
    }
    // SAFETY: per the contract, `binds` points to the caller's writable structure.
    unsafe {
        binds.write(RtpproxyBinds {
            start_recording: Some(api_start_recording),
            stop_recording: Some(api_stop_recording),
        })
    };
    Ok(1)
}

/// A `str*` argument of the API, copied; NULL or empty gives `None`.
///
/// # Safety
/// `s` must be NULL or a valid `str*` for the call.
unsafe fn api_str(s: *mut host_str) -> Option<Vec<u8>> {
    // SAFETY: per the contract.
    Some(unsafe { cstr::str_bytes(s) }.to_vec()).filter(|v| !v.is_empty())
}

/// The node for an API call: the named one (any set; must be enabled), else the hash choice
/// in the default set.
fn api_node<'a>(
    st: &'a ModuleState,
    url: Option<&[u8]>,
    call_id: &[u8],
) -> Result<&'a NodeView, Error> {
    match url {
        Some(url) => {
            let node = node_by_url(st, url, None).ok_or_else(|| {
                ScriptError::NoSuchNode(String::from_utf8_lossy(url).into_owned())
            })?;
            if is_enabled(st, node) {
                Ok(node)
            } else {
                Err(ScriptError::NodeDisabled(node.spec.url.clone()).into())
            }
        }
        None => {
            let set = control::set_or_error(st, None)?;
            Ok(control::node_for_call(st, set, call_id, None)?)
        }
    }
}

fn api_code(what: &str, r: Result<i32, Error>) -> c_int {
    guard::script_code(what, r)
}

/// `start_recording(callid, from_tag, to_tag, node, flags, destination, medianum)` of the
/// `load_rtpproxy` API: §7.4 without a message (with a destination: stream `medianum`, or 1).
unsafe extern "C" fn api_start_recording(
    callid: *mut host_str,
    from_tag: *mut host_str,
    to_tag: *mut host_str,
    node: *mut host_str,
    flags: *mut host_str,
    destination: *mut host_str,
    medianum: c_int,
) -> c_int {
    guard::call("rtpproxy API start_recording", -1, || {
        let r = (|| {
            let st = state()?;
            // SAFETY: the API's arguments are NULL or valid `str*` for the call.
            let (call_id, from, to, url, flags, dest) = unsafe {
                (
                    api_str(callid).ok_or(ScriptError::ApiNoCallId)?,
                    api_str(from_tag).ok_or(ScriptError::ApiNoFromTag)?,
                    api_str(to_tag).unwrap_or_default(),
                    api_str(node),
                    api_str(flags).unwrap_or_default(),
                    api_str(destination),
                )
            };
            let node = api_node(st, url.as_deref(), &call_id)?;
            let req = MediaRequest::record(
                &call_id,
                &Tags::new(&from, &to),
                &flags,
                dest.as_deref(),
                &[if medianum > 0 { medianum as u32 } else { 1 }],
            );
            run_request(st, node, req).map(MediaDone::code)
        })();
        api_code("rtpproxy API start_recording", r)
    })
}

/// `stop_recording(callid, from_tag, to_tag, node, medianum)` of the `load_rtpproxy` API:
/// `N` for stream `medianum` (1 when not positive).
unsafe extern "C" fn api_stop_recording(
    callid: *mut host_str,
    from_tag: *mut host_str,
    to_tag: *mut host_str,
    node: *mut host_str,
    medianum: c_int,
) -> c_int {
    guard::call("rtpproxy API stop_recording", -1, || {
        let r = (|| {
            let st = state()?;
            // SAFETY: the API's arguments are NULL or valid `str*` for the call.
            let (call_id, from, to, url) = unsafe {
                (
                    api_str(callid).ok_or(ScriptError::ApiNoCallId)?,
                    api_str(from_tag).ok_or(ScriptError::ApiNoFromTag)?,
                    api_str(to_tag).unwrap_or_default(),
                    api_str(node),
                )
            };
            let node = api_node(st, url.as_deref(), &call_id)?;
            let stream = if medianum > 0 { medianum as u32 } else { 1 };
            send_stop_copy(st, node, &call_id, &Tags::new(&from, &to), stream)?;
            Ok(1)
        })();
        api_code("rtpproxy API stop_recording", r)
    })
}

/// Fixup for the first parameter of `rtpproxy_all_stats`: refuses anything but an AVP when the
/// script is loaded (as the C module's `fixup_all_stats`).
///
/// # Safety
/// `param` is the `void**` the core passes to a fixup; `*param` is the parameter's
/// `pv_spec_t*`.
pub(crate) unsafe extern "C" fn fixup_stats_avp(param: *mut *mut c_void) -> c_int {
    guard::call("rtpproxy_all_stats fixup", -1, || {
        let spec = if param.is_null() {
            std::ptr::null_mut()
        } else {
            // SAFETY: per the contract, a non-NULL `param` points at the parameter slot.
            unsafe { *param }
        };
        // SAFETY: `spec` is NULL or the parameter's spec.
        if unsafe { avp::is_avp(spec) } {
            0
        } else {
            tracing::error!("rtpproxy_all_stats: invalid variable type - only AVPs are allowed");
            -1
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_match_rtpproxy_load_h() {
        assert_eq!(std::mem::size_of::<RtpproxyBinds>(), 16);
        assert_eq!(std::mem::offset_of!(RtpproxyBinds, stop_recording), 8);
    }
}
