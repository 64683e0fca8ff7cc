//! Bodies of the script functions: read the message and parameters, decide in `core`, talk to
//! the relay through `control`, and return the script code.

use crate::core::offer::{
    truncate_script_param, Direction, Flags, NodeInfo, OfferAnswer, OfferAnswerInput,
    OfferAnswerOutcome, OfferError, PacketInfo, ReplyOutcome, RetryReason, SipMessage,
};
use crate::core::proto::command::Command;
use crate::core::sdp::SdpEdit;
use crate::core::stats::{Event as StatEvent, Op};
use crate::error::{HostError, ScriptError};
use crate::Error;

use super::autobridge::{self, Plan};
use super::request::{OfferRequest, OfferResult, SdpSource};
use crate::core::control::{Failover, OpKind};
use crate::host::bind::msg::{self, Bodies, Msg, MsgKind};
use crate::host::bind::params::Var;
use crate::host::runtime::control::{self, Target, Verdict};
use crate::host::runtime::state::{self, ModuleState, NodeView};

/// The set of the call (`set_id` or `default_set`) and its node for `call_id`; `sock_var`
/// gets the node's URL (spec §2.2, §10).
pub(crate) fn pick_node<'a>(
    st: &'a ModuleState,
    set_id: Option<i32>,
    sock_var: Option<&Var<'_>>,
    call_id: &[u8],
) -> Result<&'a NodeView, Error> {
    let set = control::set_or_error(st, set_id)?;
    let node = control::node_for_call(st, set, call_id, None)?;
    if !sock_var.is_none_or(|v| v.set_str(node.spec.url.as_bytes())) {
        tracing::warn!("cannot set sock_var to {}", node.spec.url);
    }
    Ok(node)
}

/// `rtpproxy_unforce([set_id], [sock_var])`: deletes the call's sessions on its node.
pub(crate) fn unforce(
    msg: Option<&Msg<'_>>,
    set: Option<i32>,
    sock_var: Option<Var<'_>>,
) -> Result<i32, Error> {
    let Some(m) = msg else {
        return Ok(1); // no message, or a faked reply: nothing to delete (as the C module)
    };
    let st = state::get().ok_or_else(|| Error::from(HostError::NotInitialized))?;
    let call_id = m
        .call_id()
        .ok_or_else(|| Error::from(HostError::NoCallId))?;
    let from_tag = m.ftag().ok_or_else(|| Error::from(HostError::NoFromTag))?;
    let to_tag = m.ttag();
    let cmd = Command::delete(call_id, from_tag, to_tag)?;
    let node = pick_node(st, set, sock_var.as_ref(), call_id)?;
    let set = control::set_or_error(st, set)?;
    // The call's node (from the call map); if it is not known, the nodes are asked in turn
    // until one has the call. The reply does not matter (as in the C module); a transport
    // failure has already taken the node out for everybody. The call is forgotten.
    tracing::debug!("unforce: the call's node is {}", node.spec.url);
    let _ = control::send_for_call(st, set, call_id, None, &cmd);
    Ok(1)
}

/// The last message whose SDP this process rewrote (pid, message id, buffer address), so that
/// a second call on the same message does not splice the same bytes twice.
pub(crate) static LAST_REWRITTEN: std::sync::Mutex<Option<(u32, u32, usize)>> =
    std::sync::Mutex::new(None);

/// The typed parameters of `rtpproxy_offer` / `rtpproxy_answer`, borrowed for the call.
pub(crate) struct OfferArgs<'a> {
    pub(crate) flags: Option<&'a [u8]>,
    pub(crate) ip: Option<&'a [u8]>,
    pub(crate) set: Option<i32>,
    pub(crate) sock_var: Option<Var<'a>>,
    pub(crate) ret_var: Option<Var<'a>>,
    pub(crate) body_var: Option<Var<'a>>,
    /// 4.0's 7th parameter; always `None` for 3.6, which declares six.
    pub(crate) bind_local: Option<Var<'a>>,
}

/// `rtpproxy_offer`/`rtpproxy_answer([flags], [ip_address], [set_id], [sock_var], [ret_var],
/// [body_var])` (and 4.0's `[bind_local]`), as declared; `direction` says which.
#[allow(clippy::too_many_arguments)] // the script function's parameters, as declared
pub(crate) fn offer_answer_script<'a>(
    msg: Option<&Msg<'_>>,
    flags: Option<&'a [u8]>,
    ip: Option<&'a [u8]>,
    set: Option<i32>,
    sock_var: Option<Var<'a>>,
    ret_var: Option<Var<'a>>,
    body_var: Option<Var<'a>>,
    bind_local: Option<Var<'a>>,
    direction: Direction,
) -> Result<i32, Error> {
    let args = OfferArgs {
        flags,
        ip,
        set,
        sock_var,
        ret_var,
        body_var,
        bind_local,
    };
    offer_answer(msg, &args, direction)
}

/// Runs a deferred autobridge request once the request is forwarded.
fn resume_deferred(m: &Msg<'_>, req: &OfferRequest<'_>) -> Result<(), Error> {
    run_offer_answer(Some(m), req, SdpSource::Message).map(drop)
}

/// Runs offer/answer (spec §4) on `msg` (may be absent for API use with given ids and body).
pub(crate) fn run_offer_answer(
    msg: Option<&Msg<'_>>,
    req: &OfferRequest<'_>,
    source: SdpSource,
) -> Result<OfferResult, Error> {
    run_offer_answer_noting(msg, req, source, &mut None)
}

/// [`run_offer_answer`], also recording in `last_node` every node selected, even when the
/// call then fails (the script's `sock_var` names the node that was tried, as in C).
///
/// Counts one `offers`/`answers` (or `*_failed`) per request that reached a relay or failed:
/// a script-level operation, however many streams (commands) it took.
fn run_offer_answer_noting(
    msg: Option<&Msg<'_>>,
    req: &OfferRequest<'_>,
    source: SdpSource,
    last_node: &mut Option<String>,
) -> Result<OfferResult, Error> {
    let st = state::get().ok_or_else(|| Error::from(HostError::NotInitialized))?;
    let r = offer_answer_body(st, msg, req, source, last_node);
    if last_node.is_some() || r.is_err() {
        let op = match req.direction {
            Direction::Offer => Op::Offer,
            Direction::Answer => Op::Answer,
        };
        crate::host::runtime::stats::note(st, None, StatEvent::Finished { op, ok: r.is_ok() });
    }
    r
}

/// The body of [`run_offer_answer_noting`]; `last_node` is set once a command was built for a
/// relay.
fn offer_answer_body(
    st: &'static ModuleState,
    msg: Option<&Msg<'_>>,
    req: &OfferRequest<'_>,
    source: SdpSource,
    last_node: &mut Option<String>,
) -> Result<OfferResult, Error> {
    let flags = if req.script_limits {
        Flags::parse_script_param(req.flags)
    } else {
        Flags::parse(req.flags)
    }
    .map_err(ScriptError::BadFlags)?;
    for w in flags.warnings() {
        tracing::warn!("{w}");
    }
    let ip = req.ip.map(|v| {
        let v = if req.script_limits {
            truncate_script_param(v.as_bytes())
        } else {
            v.as_bytes()
        };
        String::from_utf8_lossy(v).into_owned()
    });
    // Borrowed from the request or the message: nothing here outlives this call.
    let (call_id, from_tag, to_tag): (&[u8], &[u8], &[u8]) = match (&req.ids, msg) {
        (Some(ids), _) => (&ids.0, &ids.1, &ids.2),
        (None, Some(m)) => (
            m.call_id()
                .ok_or_else(|| Error::from(HostError::NoCallId))?,
            m.ftag().ok_or_else(|| Error::from(HostError::NoFromTag))?,
            m.ttag().unwrap_or_default(),
        ),
        (None, None) => return Err(ScriptError::NoMessageForIds.into()),
    };
    let set = control::set_or_error(st, req.set)?;
    let src = msg.and_then(Msg::source_ip).map(msg::IpText::new);
    let local = msg.and_then(Msg::local_ip).map(msg::IpText::new);
    let packet = PacketInfo {
        source_ip: src.as_ref().map_or("", msg::IpText::as_str),
        local_ip: local.as_ref().map_or("", msg::IpText::as_str),
    };
    let message = match msg.map(Msg::kind) {
        None => SipMessage::None,
        Some(Some(MsgKind::Reply)) => SipMessage::Reply(packet),
        Some(_) => SipMessage::Request(packet),
    };

    // Autobridge (spec §4.12): a request waits for its next hop; a reply learns where it goes.
    let mut bridge_address = req.bridge_address.clone();
    let mut preset_url = req.node.map(str::to_owned);
    if let Some(m) = msg {
        let body_mode = matches!(source, SdpSource::Body(_));
        match autobridge::plan(st, set, m, call_id, req, body_mode, last_node)? {
            Plan::Normal => {}
            Plan::Deferred(d) => {
                autobridge::defer(m, d, resume_deferred)?;
                return Ok(OfferResult {
                    ret_var: None,
                    node_url: last_node.clone(),
                    body: None,
                });
            }
            Plan::NoSdp => {
                return Ok(OfferResult {
                    ret_var: None,
                    node_url: last_node.clone(),
                    body: None,
                })
            }
            Plan::Reply { bridge, node } => {
                bridge_address = bridge;
                preset_url = Some(node);
            }
        }
    }

    let mut run = |body: &[u8]| -> Result<OfferAnswerOutcome, Error> {
        let mut input = OfferAnswerInput::new(
            body,
            &flags,
            call_id,
            from_tag,
            to_tag,
            message,
            req.direction,
        );
        input.ip_address = ip.as_deref().filter(|s| !s.is_empty());
        input.bridge_address = bridge_address.as_deref();
        input.bind_local = req.bind_local;
        let mut oa = new_planner(st, input, req.dialog_id.as_deref())?;
        while oa.current_stream().is_some() {
            let failover = planner_failover(&oa);
            let op = OpKind::of_letter(oa.letter());
            let oa_cell = std::cell::RefCell::new(&mut oa);
            let last = std::cell::RefCell::new(&mut *last_node);
            control::execute(
                st,
                control::Plan {
                    nodes: &set.nodes,
                    call_id,
                    target: Target::Call(preset_url.as_deref()),
                    failover,
                    op,
                },
                &mut |node| {
                    **last.borrow_mut() = Some(node.spec.url.clone());
                    planner_command(st, &mut oa_cell.borrow_mut(), node)
                },
                &mut |_, reply| planner_verdict(&mut oa_cell.borrow_mut(), reply),
            )?;
        }
        Ok(oa.finish()?)
    };

    match source {
        SdpSource::Body(body) => {
            let out = run(&body)?;
            let new_body = out.apply(&body).map_err(OfferError::Sdp)?;
            Ok(OfferResult {
                ret_var: out.ret_var().map(<[u8]>::to_vec),
                node_url: last_node.clone(),
                body: Some(new_body),
            })
        }
        SdpSource::Message => {
            let m = msg.ok_or(ScriptError::NoMessageToRewrite)?;
            let parts = match m.sdp_parts() {
                Bodies::NoBody => return Err(Error::from(HostError::NoBody)),
                Bodies::NoSdp => {
                    return Ok(OfferResult {
                        ret_var: None,
                        node_url: None,
                        body: None,
                    })
                }
                Bodies::Sdp(parts) => parts,
            };
            let me = (control::pid(), m.identity().0, m.identity().1);
            if *LAST_REWRITTEN.lock().unwrap_or_else(|e| e.into_inner()) == Some(me) {
                tracing::warn!(
                    "the SDP of this message was already rewritten by an earlier rtpproxy \
                     call; not rewriting it twice"
                );
                return Ok(OfferResult {
                    ret_var: None,
                    node_url: None,
                    body: None,
                });
            }
            let mut outcomes = Vec::with_capacity(parts.len());
            for part in &parts {
                outcomes.push(run(&part.bytes)?);
            }
            let mut ret_var = None;
            for (part, out) in parts.iter().zip(&outcomes) {
                ret_var = out.ret_var().map(<[u8]>::to_vec).or(ret_var);
                if flags.keep_body {
                    continue;
                }
                splice_part(m, part.offset, &out.edits)?;
            }
            *LAST_REWRITTEN.lock().unwrap_or_else(|e| e.into_inner()) = Some(me);
            Ok(OfferResult {
                ret_var,
                node_url: last_node.clone(),
                body: None,
            })
        }
    }
}

/// The script functions `rtpproxy_offer` / `rtpproxy_answer` (spec §4): parameters in,
/// variables out (also the async functions' fallback).
pub(crate) fn offer_answer(
    m: Option<&Msg<'_>>,
    p: &OfferArgs<'_>,
    direction: Direction,
) -> Result<i32, Error> {
    let ip = p.ip.map(|v| String::from_utf8_lossy(v).into_owned());
    let flags = p.flags.unwrap_or_default();
    let mut req = OfferRequest::new(flags, direction);
    req.ip = ip.as_deref();
    req.set = p.set;
    let bind_local = match &p.bind_local {
        None => None,
        Some(v) => v.get_text().map_err(|()| ScriptError::BindLocalUnusable)?,
    };
    req.bind_local = bind_local.as_deref();
    if let Some(m) = m {
        req.dialog_id = super::dialog::dialog_id_for_flags(m, flags, direction)?;
    }
    let source = match &p.body_var {
        None => SdpSource::Message,
        Some(v) => SdpSource::Body(v.get_str().ok_or(ScriptError::BodyVarNotString)?),
    };
    let mut node = None;
    let out = run_offer_answer_noting(m, &req, source, &mut node);
    if let (Some(url), Some(v)) = (&node, &p.sock_var) {
        v.set_str(url.as_bytes());
    }
    let out = out?;
    if let (Some(value), Some(v)) = (&out.ret_var, &p.ret_var) {
        v.set_str(value);
    }
    if let Some(body) = &out.body {
        if !p.body_var.as_ref().is_none_or(|v| v.set_str(body)) {
            return Err(ScriptError::BodyVarWrite.into());
        }
    }
    Ok(1)
}

/// The planner of one SDP body with the module's settings and the dialog id (both drivers
/// of offer/answer: the blocking functions and their async variants).
pub(crate) fn new_planner<'a>(
    st: &'a ModuleState,
    mut input: OfferAnswerInput<'a>,
    dialog_id: Option<&[u8]>,
) -> Result<OfferAnswer<'a>, Error> {
    input.marker = st.config.marker.as_deref().unwrap_or("").as_bytes();
    input.notify_socket = st.config.notify.as_ref();
    let mut oa = OfferAnswer::new(input)?;
    if let Some(did) = dialog_id {
        oa.set_dialog_id(did)?;
    } else if oa.needs_dialog_for_notify() {
        tracing::warn!("flag n without a dialog: no timeout notification is requested");
    }
    Ok(oa)
}

/// Whether the planner's next command may fail over: `U` moves to the next node, `L` stays
/// on the call's node (as in C).
pub(crate) fn planner_failover(oa: &OfferAnswer<'_>) -> Failover {
    if oa.letter() == b'U' {
        Failover::NextNode
    } else {
        Failover::Never
    }
}

/// The planner's command for `node` (its probed capabilities, its advertised address).
pub(crate) fn planner_command(
    st: &ModuleState,
    oa: &mut OfferAnswer<'_>,
    node: &NodeView,
) -> Result<Command, Error> {
    let info = NodeInfo {
        caps: control::capabilities(st, node),
        advertised: node.spec.adv_address.as_deref(),
    };
    Ok(oa.build_command(info)?)
}

/// What the engine makes of the planner's reading of a reply.
pub(crate) fn planner_verdict(oa: &mut OfferAnswer<'_>, reply: Option<&[u8]>) -> Verdict<()> {
    match oa.handle_reply(reply) {
        Ok(ReplyOutcome::Done(_)) => Verdict::Accept(()),
        Ok(ReplyOutcome::Retry(RetryReason::RelayError(code))) => Verdict::NodeFailure(code),
        Ok(ReplyOutcome::Retry(RetryReason::NoReply)) => Verdict::NodeFailure(0),
        Err(e) => Verdict::Fail(e.into()),
    }
}

/// Splices the SDP edits of the part at `part_offset` into the message.
pub(crate) fn splice_part(m: &Msg<'_>, part_offset: usize, edits: &[SdpEdit]) -> Result<(), Error> {
    for (offset, len, bytes) in lump_plan(edits, part_offset, m.len(), m.last_byte()) {
        m.splice(offset, len, &bytes)?;
    }
    Ok(())
}

/// Turns SDP edits of a part starting at `base` into message splices. OpenSIPS ignores an
/// insertion anchored at the very end of the message buffer, so an insertion there (the
/// marker after the last CRLF) is folded into the edit that ends there, or becomes a
/// replacement of the message's last byte (`last_byte`) by itself plus the insertion.
pub(crate) fn lump_plan(
    edits: &[SdpEdit],
    base: usize,
    msg_len: usize,
    last_byte: u8,
) -> Vec<(usize, usize, Vec<u8>)> {
    let mut plan: Vec<(usize, usize, Vec<u8>)> = Vec::with_capacity(edits.len());
    for e in edits {
        let offset = base + e.offset;
        if e.len == 0 && offset == msg_len && msg_len > 0 {
            match plan.last_mut() {
                Some(prev) if prev.0 + prev.1 == msg_len && prev.1 > 0 => {
                    prev.2.extend_from_slice(&e.replacement);
                }
                _ => plan.push((msg_len - 1, 1, [&[last_byte][..], &e.replacement].concat())),
            }
        } else {
            plan.push((offset, e.len, e.replacement.clone()));
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit(offset: usize, len: usize, r: &[u8]) -> SdpEdit {
        SdpEdit {
            offset,
            len,
            replacement: r.to_vec(),
        }
    }

    #[test]
    fn insertion_at_the_end_replaces_the_last_byte() {
        let plan = lump_plan(&[edit(2, 3, b"x"), edit(10, 0, b"m\r\n")], 100, 110, b'\n');
        assert_eq!(
            plan,
            vec![(102, 3, b"x".to_vec()), (109, 1, b"\nm\r\n".to_vec())]
        );
    }

    #[test]
    fn insertion_at_the_end_joins_an_edit_ending_there() {
        let plan = lump_plan(&[edit(8, 2, b"yy"), edit(10, 0, b"m")], 100, 110, b'z');
        assert_eq!(plan, vec![(108, 2, b"yym".to_vec())]);
    }

    #[test]
    fn other_insertions_stay_anchors() {
        let plan = lump_plan(&[edit(5, 0, b"m")], 100, 110, b'z');
        assert_eq!(plan, vec![(105, 0, b"m".to_vec())]);
    }
}
