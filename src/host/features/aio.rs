//! Async script functions (`acmds`): `async(rtpproxy_offer(...), route)`,
//! `async(rtpproxy_answer(...), route)`, `async(rtpproxy_unforce(...), route)`, the media
//! functions (`rtpproxy_stream2uac/uas`, their stops, `rtpproxy_start_recording`,
//! `rtpproxy_stop_recording`, `rtpproxy_stats`: the blocking functions' own request,
//! `features::media::MediaRequest`, sent command after command to the call's node) and the
//! same under `launch()`.
//!
//! The command runs on the engine through [`AsyncRun`] (the non-blocking driver), so node
//! choice, retransmissions, the lost-attempt rule and failover are those of the blocking
//! functions. The worker is handed one descriptor for the whole command: an epoll set that
//! holds the socket of the attempt in flight and a timerfd armed at the attempt's deadline.
//! It becomes readable when a reply arrives or when the attempt is lost, so tm's reactor
//! wakes us for both; we then retransmit or fail over and answer `ASYNC_CONTINUE` (the same
//! descriptor stays in the reactor, with the script's `async()` timeout still counting). A
//! command therefore never waits longer than `rtpproxy_timeout` × attempts per node tried,
//! whatever the relay does, also under `launch()`, which has no timeout of its own.
//!
//! Where the route cannot suspend (anything but a request route or a transaction's reply
//! route, or an ACK), or the set has a node that cannot be waited on without blocking (not
//! UDP), the blocking function runs and the status is `ASYNC_SYNC`. The resume function
//! waits on the descriptor itself until the next deadline, so tm's blocking fallback loop
//! (it calls the resume function again and again) waits instead of spinning.

use std::ffi::{c_int, c_void};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::core::control::{Failover, OpKind};
use crate::core::offer::{
    truncate_script_param, Direction, Flags, OfferAnswer, OfferAnswerInput, OfferAnswerOutcome,
    OfferError, PacketInfo, SipMessage,
};
use crate::core::proto::command::Command;
use crate::Error;

use crate::core::stats::{Event as StatEvent, Op};

use super::functions::{self, OfferArgs};
use super::media::{self, MediaDone, MediaRequest};
use crate::core::media::PromptTarget;
use crate::error::{HostError, ScriptError};
use crate::host::bind::msg::{self, Bodies, Msg, MsgKind};
use crate::host::bind::params::kind::{Int, OptInt, OptStr, OptVar, Since4, Str, Var as VarKind};
use crate::host::bind::params::{Decoder, Params, Var};
use crate::host::ffi::api::api;
use crate::host::ffi::guard;
use crate::host::ffi::sys::{self, async_ctx, sip_msg};
use crate::host::runtime::control::{self, AsyncRun, Progress, Steps, Verdict};
use crate::host::runtime::state::{self, ModuleState, NodeView, SetView};
use std::collections::VecDeque;

/// Sets the core's `async_status`.
fn set_status(v: i32) {
    // SAFETY: `async_status` is the core's global int, read by tm after our call returns;
    // SIP workers are single-threaded.
    unsafe { *api().async_status = v };
}

/// The epoll descriptor handed to the reactor: the attempt's socket and a timer.
///
/// A finished command's waiter is kept for the next one (see [`Waiter::take`] and
/// [`Waiter::release`]): tm only removes it from the reactor (`ASYNC_DONE`), and the next
/// command re-arms the timer, which also clears an expiry left from before.
struct Waiter {
    epoll: OwnedFd,
    timer: OwnedFd,
    /// The sockets added to the set (removed again when the waiter is kept).
    watched: Vec<RawFd>,
}

/// How many finished commands' waiters a process keeps for reuse.
const IDLE_WAITERS: usize = 16;

thread_local! {
    /// This process's idle waiters, with the process id they belong to (a forked child
    /// starts its own list).
    static IDLE: std::cell::RefCell<(u32, Vec<Waiter>)> =
        const { std::cell::RefCell::new((0, Vec::new())) };
}

impl Waiter {
    /// An idle waiter of this process, else a new one.
    fn take() -> std::io::Result<Self> {
        let pid = control::pid();
        let kept = IDLE.with(|idle| {
            let mut idle = idle.borrow_mut();
            if idle.0 != pid {
                // inherited over a fork: the parent's; closing our copies leaves its own
                idle.1.clear();
                idle.0 = pid;
            }
            idle.1.pop()
        });
        match kept {
            Some(w) => Ok(w),
            None => Self::new(),
        }
    }

    /// Keeps this waiter for the next command (its sockets leave the set); `Err` gives it
    /// back when the list is full.
    fn release(mut self) -> Result<(), Self> {
        for fd in self.watched.drain(..) {
            // SAFETY: removes `fd` from our own epoll set; a closed or reused descriptor
            // number only makes the call fail (EBADF/ENOENT), which is ignored.
            unsafe {
                libc::epoll_ctl(
                    self.epoll.as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    fd,
                    std::ptr::null_mut(),
                )
            };
        }
        let pid = control::pid();
        IDLE.with(|idle| {
            let mut idle = idle.borrow_mut();
            if idle.0 == pid && idle.1.len() < IDLE_WAITERS {
                idle.1.push(self);
                Ok(())
            } else {
                Err(self)
            }
        })
    }

    fn new() -> std::io::Result<Self> {
        // SAFETY: plain syscalls creating fresh descriptors that we own from here on.
        let (ep, tfd) = unsafe {
            (
                libc::epoll_create1(libc::EPOLL_CLOEXEC),
                libc::timerfd_create(
                    libc::CLOCK_MONOTONIC,
                    libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
                ),
            )
        };
        if ep < 0 || tfd < 0 {
            let e = std::io::Error::last_os_error();
            for fd in [ep, tfd].into_iter().filter(|fd| *fd >= 0) {
                // SAFETY: a descriptor we just created and nobody else knows.
                unsafe { libc::close(fd) };
            }
            return Err(e);
        }
        // SAFETY: both are fresh descriptors owned by nothing else.
        let (epoll, timer) = unsafe { (OwnedFd::from_raw_fd(ep), OwnedFd::from_raw_fd(tfd)) };
        let w = Self {
            epoll,
            timer,
            watched: Vec::new(),
        };
        w.add(w.timer.as_raw_fd())?;
        Ok(w)
    }

    /// Adds `fd` to the set; `true` when it was not there yet.
    fn add(&self, fd: RawFd) -> std::io::Result<bool> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: fd as u64,
        };
        // SAFETY: both descriptors are open; `ev` is valid for the call.
        let r =
            unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        let e = std::io::Error::last_os_error();
        if r < 0 && e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e);
        }
        Ok(r == 0)
    }

    /// Watches `fd` (the socket of the attempt in flight; a closed socket leaves the set by
    /// itself) and arms the timer at `deadline`.
    fn arm(&mut self, fd: Option<RawFd>, deadline: Option<Instant>) -> std::io::Result<()> {
        if let Some(fd) = fd {
            if self.add(fd)? {
                self.watched.push(fd);
            }
        }
        let wait = deadline.map_or(Duration::from_millis(1), |d| {
            d.saturating_duration_since(Instant::now())
                .max(Duration::from_micros(50))
        });
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: wait.as_secs() as libc::time_t,
                tv_nsec: wait.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: `timer` is our timerfd; `spec` is valid for the call.
        let r = unsafe {
            libc::timerfd_settime(self.timer.as_raw_fd(), 0, &spec, std::ptr::null_mut())
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits until something in the set is ready, at most until `deadline` (no wait when the
    /// reactor woke us: it is ready), then consumes the timer's expiry.
    fn wait(&self, deadline: Option<Instant>) {
        let ms = deadline.map_or(0, |d| {
            d.saturating_duration_since(Instant::now())
                .as_millis()
                .clamp(0, 60_000) as c_int
        });
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: one valid event slot for the call.
        unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), &mut ev, 1, ms) };
        let mut buf = [0u8; 8];
        // SAFETY: a non-blocking read of the timer's 8-byte counter into our buffer.
        unsafe { libc::read(self.timer.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
    }
}

/// What the command does with its replies and, at the end, with the message.
enum Job {
    Unforce(Unforce),
    OfferAnswer(Box<OfferJob>),
    Media(MediaJob),
}

/// One async command between its start and its end (the tm context's `resume_param`).
struct AsyncCmd {
    waiter: Waiter,
    run: AsyncRun,
    job: Job,
}

impl AsyncCmd {
    /// Advances as far as it goes; `Some(code)` when the whole function is over.
    fn advance(&mut self, st: &ModuleState, msg: *mut sip_msg) -> Option<i32> {
        loop {
            let progress = match &mut self.job {
                Job::Unforce(u) => self.run.advance(st, u),
                Job::OfferAnswer(j) => self.run.advance(st, j.as_mut()),
                Job::Media(j) => self.run.advance(st, j),
            };
            match (progress, &mut self.job) {
                (Progress::Waiting, _) => return None,
                (Progress::Done(r), Job::Media(j)) => match j.next(st, r.is_ok()) {
                    Some(run) => self.run = run,
                    // SAFETY: `msg` is the message tm resumes with (or the one we started on).
                    None => return Some(unsafe { j.finish(msg) }),
                },
                // the reply does not matter (as in the blocking function)
                (Progress::Done(_), Job::Unforce(_)) => return Some(1),
                (Progress::Done(Err(e)), Job::OfferAnswer(j)) => {
                    // SAFETY: `msg` is the message tm resumes with (or the one we started on).
                    let r = unsafe { j.fail(msg, e) };
                    j.count(st, false);
                    return Some(guard::script_code(j.name, r));
                }
                (Progress::Done(Ok(_)), Job::OfferAnswer(j)) => match j.next_command(st) {
                    Some(run) => self.run = run,
                    None => {
                        // SAFETY: as above.
                        let r = unsafe { j.finish(st, msg) };
                        j.count(st, r.is_ok());
                        return Some(guard::script_code(j.name, r));
                    }
                },
            }
        }
    }
}

/// Unforce: its `D` command does not depend on the node.
struct Unforce(Command);

impl Steps for Unforce {
    fn build(&mut self, _node: &NodeView) -> Result<Command, Error> {
        Ok(self.0.clone())
    }
    fn judge(&mut self, _node: &NodeView, body: Option<&[u8]>) -> Verdict<()> {
        match body {
            Some(b) if control::is_session_unknown(b) => Verdict::NotHere,
            Some(_) => Verdict::Accept(()),
            None => Verdict::NodeFailure(0),
        }
    }
}

/// A media function in flight (`P`, `S`, `R`, `C`, `N`, `Q`): the request of
/// `features::media` (the blocking function's own), sent one command after the other to the
/// call's node; `N` support is asked first when this process does not know it.
struct MediaJob {
    name: &'static str,
    node: &'static NodeView,
    /// Taken when the result is made.
    req: Option<MediaRequest>,
    /// The `VF` for `N` support is in flight.
    probing: bool,
    /// The commands still to send, the first one in flight.
    todo: VecDeque<Command>,
    replies: Vec<Option<Vec<u8>>>,
    /// The reply of the command in flight.
    reply: Option<Vec<u8>>,
    /// `rtpproxy_stats`' four variables.
    stats_vars: Option<[*mut c_void; 4]>,
}

impl Steps for MediaJob {
    fn build(&mut self, _node: &NodeView) -> Result<Command, Error> {
        if self.probing {
            return Ok(media::stop_copy_probe());
        }
        self.todo
            .front()
            .cloned()
            .ok_or_else(|| HostError::Internal("no media command").into())
    }
    fn judge(&mut self, _node: &NodeView, body: Option<&[u8]>) -> Verdict<()> {
        // as `send_raw`: any reply is the node's answer, none is a node failure
        match body {
            Some(b) => {
                self.reply = Some(b.to_vec());
                Verdict::Accept(())
            }
            None => Verdict::NodeFailure(0),
        }
    }
}

impl MediaJob {
    /// Prepares `req` for `node` (capabilities, known `N` support); `None` when the blocking
    /// path gives the answer without a relay (nothing to send).
    fn new(
        st: &ModuleState,
        name: &'static str,
        node: &'static NodeView,
        mut req: MediaRequest,
        stats_vars: Option<[*mut c_void; 4]>,
    ) -> (Self, Option<AsyncRun>) {
        req.check(st, node);
        let probing = req.needs_stop_copy()
            && match media::stop_copy_known(node) {
                Some(yes) => {
                    req.stop_copy_support(yes);
                    false
                }
                None => true,
            };
        let mut job = Self {
            name,
            node,
            todo: req.sendable().into(),
            req: Some(req),
            probing,
            replies: Vec::new(),
            reply: None,
            stats_vars,
        };
        let run = job.run(st);
        (job, run)
    }

    /// The engine command for the next command to send, if any.
    fn run(&mut self, st: &ModuleState) -> Option<AsyncRun> {
        let letter = if self.probing {
            b'V'
        } else {
            self.todo.front()?.letter()
        };
        Some(AsyncRun::to_node(st, self.node, OpKind::of_letter(letter)))
    }

    /// The command in flight is over (`ok`: the node answered): on to the next one.
    fn next(&mut self, st: &ModuleState, ok: bool) -> Option<AsyncRun> {
        let reply = self.reply.take().filter(|_| ok);
        if self.probing {
            self.probing = false;
            let yes = media::stop_copy_learn(self.node, reply.as_deref());
            let req = self.req.as_mut()?;
            req.stop_copy_support(yes);
            self.todo = req.sendable().into();
        } else {
            self.todo.pop_front();
            self.replies.push(reply);
        }
        self.run(st)
    }

    /// Every command is done: the result as the blocking function makes it.
    ///
    /// # Safety
    /// `msg` is the message the function runs on (or resumes with).
    unsafe fn finish(&mut self, msg: *mut sip_msg) -> i32 {
        let r = self
            .req
            .take()
            .ok_or_else(|| HostError::Internal("no media request").into())
            .and_then(|req| req.finish(std::mem::take(&mut self.replies)));
        // SAFETY: per the contract; the variables are this call's parameters.
        unsafe { media_code(msg, self.name, r, self.stats_vars) }
    }
}

/// The data an offer/answer borrows from, kept at a fixed address for the command's life.
struct OfferInputs {
    body: Vec<u8>,
    flags: Flags,
    call_id: Vec<u8>,
    from_tag: Vec<u8>,
    to_tag: Vec<u8>,
    ip: Option<String>,
    src: Option<msg::IpText>,
    local: Option<msg::IpText>,
    reply: bool,
    bind_local: Option<Vec<u8>>,
}

/// The specs of an offer/answer's variables (`Var::as_ptr`; NULL when omitted), kept across
/// the suspension: they belong to the script, and the variables are rebuilt against the
/// message the function resumes on ([`OfferVars::get`]).
struct OfferVars {
    sock_var: *mut c_void,
    ret_var: *mut c_void,
    body_var: *mut c_void,
}

impl OfferVars {
    fn new(args: &OfferArgs<'_>) -> Self {
        let spec = |v: &Option<Var<'_>>| v.as_ref().map_or(std::ptr::null_mut(), Var::as_ptr);
        Self {
            sock_var: spec(&args.sock_var),
            ret_var: spec(&args.ret_var),
            body_var: spec(&args.body_var),
        }
    }

    /// The variable of `spec` (one of the fields), accessed against `msg`.
    ///
    /// # Safety
    /// `msg` is the message the function runs on or resumes with, valid for `'m`.
    unsafe fn get<'m>(msg: *mut sip_msg, spec: *mut c_void) -> Option<Var<'m>> {
        // SAFETY: `spec` is NULL or a variable parameter of this call (the script's spec,
        // which outlives the suspension); `msg` per the contract.
        unsafe { Var::from_ptr(msg, spec) }
    }
}

/// An offer or answer in flight: the planner (which borrows from `inputs`) and what to do
/// with the result.
struct OfferJob {
    /// Borrows from `*inputs`; dropped first (see `Drop`).
    oa: Option<OfferAnswer<'static>>,
    inputs: *mut OfferInputs,
    name: &'static str,
    set: &'static SetView,
    vars: OfferVars,
    /// The SDP is a body variable (else the message's one SDP part).
    body_mode: bool,
    last_node: Option<String>,
}

impl Drop for OfferJob {
    fn drop(&mut self) {
        self.oa = None;
        // SAFETY: `inputs` came from `Box::into_raw` in `OfferJob::new` and nothing borrows
        // it any more (the planner was dropped above).
        drop(unsafe { Box::from_raw(self.inputs) });
    }
}

impl Steps for OfferJob {
    fn build(&mut self, node: &NodeView) -> Result<Command, Error> {
        self.last_node = Some(node.spec.url.clone());
        let st = state::get().ok_or(HostError::NotInitialized)?;
        let oa = self.oa.as_mut().ok_or(HostError::Internal("no planner"))?;
        functions::planner_command(st, oa, node)
    }

    fn judge(&mut self, _node: &NodeView, reply: Option<&[u8]>) -> Verdict<()> {
        match self.oa.as_mut() {
            Some(oa) => functions::planner_verdict(oa, reply),
            None => Verdict::Fail(HostError::Internal("no planner").into()),
        }
    }
}

impl OfferJob {
    /// Counts the script-level offer/answer in the statistics, as the blocking function does.
    fn count(&self, st: &ModuleState, ok: bool) {
        let op = if self.name == "rtpproxy_offer" {
            Op::Offer
        } else {
            Op::Answer
        };
        crate::host::runtime::stats::note(st, None, StatEvent::Finished { op, ok });
    }

    /// Prepares an offer/answer on `m` with the call's parameters `args` (`None`: not suited
    /// for the async path, run the blocking function). What must survive the suspension is
    /// copied; the variables are kept as specs ([`OfferVars`]).
    fn new(
        st: &'static ModuleState,
        m: &Msg<'_>,
        args: &OfferArgs<'_>,
        direction: Direction,
    ) -> Result<Option<(Self, AsyncRun)>, Error> {
        if st.config.autobridge {
            return Ok(None);
        }
        let flags_s = args.flags.unwrap_or_default();
        let set = control::set_or_error(st, args.set)?;
        if !AsyncRun::can_park(&set.nodes) {
            return Ok(None);
        }
        let flags = Flags::parse_script_param(flags_s).map_err(ScriptError::BadFlags)?;
        for w in flags.warnings() {
            tracing::warn!("{w}");
        }
        let body = match &args.body_var {
            Some(v) => v.get_str().ok_or(ScriptError::BodyVarNotString)?,
            None => match m.sdp_parts() {
                Bodies::Sdp(mut parts) if parts.len() == 1 => parts.remove(0).bytes,
                // no body, no SDP, several SDP parts: the blocking function handles these
                _ => return Ok(None),
            },
        };
        let bind_local = match &args.bind_local {
            None => None,
            Some(v) => v.get_text().map_err(|()| ScriptError::BindLocalUnusable)?,
        };
        let dialog_id = super::dialog::dialog_id_for_flags(m, flags_s, direction)?;
        let inputs = Box::new(OfferInputs {
            body,
            flags,
            call_id: m.call_id().ok_or(HostError::NoCallId)?.to_vec(),
            from_tag: m.ftag().ok_or(HostError::NoFromTag)?.to_vec(),
            to_tag: m.ttag().unwrap_or_default().to_vec(),
            ip: args
                .ip
                .map(|v| String::from_utf8_lossy(truncate_script_param(v)).into_owned()),
            src: m.source_ip().map(msg::IpText::new),
            local: m.local_ip().map(msg::IpText::new),
            reply: m.kind() == Some(MsgKind::Reply),
            bind_local,
        });
        let inputs = Box::into_raw(inputs);
        // SAFETY: `inputs` stays at this address until `OfferJob::drop`, which drops the
        // planner (the only borrower) before freeing it; nothing mutates it meanwhile.
        let i: &'static OfferInputs = unsafe { &*inputs };
        let mut job = Self {
            oa: None,
            inputs,
            name: match direction {
                Direction::Offer => "rtpproxy_offer",
                Direction::Answer => "rtpproxy_answer",
            },
            set,
            vars: OfferVars::new(args),
            body_mode: args.body_var.is_some(),
            last_node: None,
        };
        let packet = PacketInfo {
            source_ip: i.src.as_ref().map_or("", msg::IpText::as_str),
            local_ip: i.local.as_ref().map_or("", msg::IpText::as_str),
        };
        let mut input = OfferAnswerInput::new(
            &i.body,
            &i.flags,
            &i.call_id,
            &i.from_tag,
            &i.to_tag,
            if i.reply {
                SipMessage::Reply(packet)
            } else {
                SipMessage::Request(packet)
            },
            direction,
        );
        input.ip_address = i.ip.as_deref().filter(|s| !s.is_empty());
        input.bind_local = i.bind_local.as_deref();
        job.oa = Some(functions::new_planner(st, input, dialog_id.as_deref())?);
        match job.next_command(st) {
            Some(run) => Ok(Some((job, run))),
            // nothing to send (the marker says another proxy did it): the blocking
            // function gives the same answer without a relay
            None => Ok(None),
        }
    }

    /// The engine command for the planner's next stream, if any.
    fn next_command(&mut self, st: &ModuleState) -> Option<AsyncRun> {
        let oa = self.oa.as_ref()?;
        oa.current_stream()?;
        let failover = functions::planner_failover(oa);
        // SAFETY: see `OfferJob::new`.
        let call_id = unsafe { &(*self.inputs).call_id };
        Some(AsyncRun::new(
            st,
            &self.set.nodes,
            call_id,
            None,
            failover,
            OpKind::of_letter(oa.letter()),
        ))
    }

    /// The command failed: `sock_var` names the node tried, as in the blocking function.
    ///
    /// # Safety
    /// `msg` is the message the function runs on (or resumes with).
    unsafe fn fail(&mut self, msg: *mut sip_msg, e: Error) -> Result<i32, Error> {
        // SAFETY: per the contract.
        if let (Some(url), Some(v)) = (&self.last_node, unsafe {
            OfferVars::get(msg, self.vars.sock_var)
        }) {
            v.set_str(url.as_bytes());
        }
        Err(e)
    }

    /// Every stream is done: rewrite the SDP and set the variables, as the blocking function.
    ///
    /// # Safety
    /// `msg` is the message tm resumes with (the request the function started on).
    unsafe fn finish(&mut self, _st: &ModuleState, msg: *mut sip_msg) -> Result<i32, Error> {
        let oa = self.oa.take().ok_or(HostError::Internal("no planner"))?;
        let out: OfferAnswerOutcome = oa.finish()?;
        // SAFETY: see `OfferJob::new`.
        let i = unsafe { &*self.inputs };
        // SAFETY: the call's three variables against `msg`, the message tm resumes with (per
        // the contract).
        let (sock_var, ret_var, body_var) = unsafe {
            (
                OfferVars::get(msg, self.vars.sock_var),
                OfferVars::get(msg, self.vars.ret_var),
                OfferVars::get(msg, self.vars.body_var),
            )
        };
        if let (Some(url), Some(v)) = (&self.last_node, &sock_var) {
            v.set_str(url.as_bytes());
        }
        if self.body_mode {
            let new_body = out.apply(&i.body).map_err(OfferError::Sdp)?;
            if !body_var.is_some_and(|v| v.set_str(&new_body)) {
                return Err(ScriptError::BodyVarWrite.into());
            }
        } else if !i.flags.keep_body {
            // SAFETY: tm resumes with a message whose buffer outlives the call.
            let m = unsafe { Msg::from_ptr(msg) }.ok_or(ScriptError::NoResumeMessage)?;
            let part = match m.sdp_parts() {
                Bodies::Sdp(mut parts) if parts.len() == 1 && parts[0].bytes == i.body => {
                    parts.remove(0)
                }
                // `launch()` resumes with the core's dummy message (no body): the request
                // went on long ago, there is nothing left to rewrite
                Bodies::NoBody | Bodies::NoSdp => {
                    tracing::debug!("{}: no message to rewrite (a launched job)", self.name);
                    if let (Some(value), Some(v)) = (out.ret_var(), &ret_var) {
                        v.set_str(value);
                    }
                    return Ok(1);
                }
                _ => return Err(ScriptError::SdpChanged.into()),
            };
            let me = (control::pid(), m.identity().0, m.identity().1);
            let mut last = functions::LAST_REWRITTEN
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if *last == Some(me) {
                tracing::warn!(
                    "the SDP of this message was already rewritten by an earlier rtpproxy \
                     call; not rewriting it twice"
                );
                return Ok(1);
            }
            functions::splice_part(&m, part.offset, &out.edits)?;
            *last = Some(me);
        }
        if let (Some(value), Some(v)) = (out.ret_var(), &ret_var) {
            v.set_str(value);
        }
        Ok(1)
    }
}

/// Whether tm can suspend the route running now: a request route (not an ACK), or the reply
/// route of a transaction (`t_on_reply`: tm keeps a copy of the reply, runs the resume route
/// on it and then relays it, lumps included). tm itself falls back to calling the resume
/// function in a loop where it cannot suspend after all (a local transaction), which the
/// resume function tolerates.
fn can_suspend(m: Option<&Msg<'_>>) -> bool {
    // SAFETY: `route_type` is the core's current route type variable.
    let route = unsafe { *api().route_type };
    match m.and_then(Msg::kind) {
        Some(MsgKind::Request) => {
            route == sys::REQUEST_ROUTE as c_int && m.is_some_and(|m| m.method() != msg::METHOD_ACK)
        }
        Some(MsgKind::Reply) => route == sys::ONREPLY_ROUTE as c_int,
        None => false,
    }
}

/// Hands the command to tm: the epoll descriptor, the resume and timeout functions.
///
/// # Safety
/// `ctx` is the async context tm passed to the function.
unsafe fn park(ctx: *mut async_ctx, mut cmd: Box<AsyncCmd>) -> Result<i32, (Box<AsyncCmd>, Error)> {
    if let Err(e) = cmd.waiter.arm(cmd.run.wait_fd(), cmd.run.deadline()) {
        return Err((cmd, HostError::AsyncWait(e).into()));
    }
    let fd = cmd.waiter.epoll.as_raw_fd();
    let boxed = Box::into_raw(cmd);
    // SAFETY: `ctx` is tm's context for this call; the fields are ours to set.
    unsafe {
        (*ctx).resume_f = resume as *mut c_void;
        (*ctx).resume_param = boxed.cast();
        (*ctx).timeout_f = timeout as *mut c_void;
        #[cfg(opensips_4)]
        {
            (*ctx).resume_f_name = c"rtpproxy_async_resume".as_ptr().cast_mut();
        }
    }
    set_status(fd);
    Ok(1)
}

/// Starts a command: done at once (`ASYNC_SYNC` with its code) or parked.
///
/// # Safety
/// `msg` and `ctx` are those of the call.
unsafe fn start(
    st: &'static ModuleState,
    msg: *mut sip_msg,
    ctx: *mut async_ctx,
    run: AsyncRun,
    job: Job,
) -> i32 {
    set_status(sys::ASYNC_SYNC);
    let waiter = match Waiter::take() {
        Ok(w) => w,
        Err(e) => {
            tracing::error!("rtpproxy async: {e}");
            return -1;
        }
    };
    let mut cmd = AsyncCmd { waiter, run, job };
    if let Some(code) = cmd.advance(st, msg) {
        let _ = cmd.waiter.release();
        return code;
    }
    // SAFETY: per the contract.
    match unsafe { park(ctx, Box::new(cmd)) } {
        Ok(code) => code,
        Err((mut cmd, e)) => {
            // cannot park: finish here, waiting in place (bounded by the deadlines)
            tracing::warn!("rtpproxy async: {e}; completing synchronously");
            set_status(sys::ASYNC_SYNC);
            loop {
                cmd.waiter.wait(cmd.run.deadline());
                if let Some(code) = cmd.advance(st, msg) {
                    let _ = cmd.waiter.release();
                    return code;
                }
            }
        }
    }
}

/// tm's resume function: the descriptor is readable (a reply, or the attempt's timer).
unsafe extern "C" fn resume(_fd: c_int, msg: *mut sip_msg, param: *mut c_void) -> c_int {
    guard::call("rtpproxy async resume", -1, || {
        let Some(st) = state::get() else {
            return -1;
        };
        let cmd = param.cast::<AsyncCmd>();
        // SAFETY: `param` is the box `park` handed to tm; tm calls us until we say done, and
        // only then do we free it.
        let c = unsafe { &mut *cmd };
        // The reactor calls us when the set is readable: a reply, or the timer at the
        // attempt's deadline, so `advance` has something to do. When it had nothing (tm's
        // blocking loop calls again and again without waiting, or a stray datagram was
        // dropped), wait here, at most until the attempt's deadline.
        let deadline = c.run.deadline();
        let mut outcome = c.advance(st, msg);
        if outcome.is_none()
            && c.run.deadline() == deadline
            && deadline.is_some_and(|d| Instant::now() < d)
        {
            c.waiter.wait(deadline);
            outcome = c.advance(st, msg);
        }
        match outcome {
            None => {
                if let Err(e) = c.waiter.arm(c.run.wait_fd(), c.run.deadline()) {
                    // cannot re-arm: finish in place, bounded by the deadlines
                    tracing::warn!("rtpproxy async: {e}; completing synchronously");
                    loop {
                        c.waiter.wait(c.run.deadline());
                        if let Some(code) = c.advance(st, msg) {
                            // SAFETY: as above.
                            return unsafe { done(cmd, code) };
                        }
                    }
                }
                set_status(sys::ASYNC_CONTINUE);
                0
            }
            // SAFETY: as above.
            Some(code) => unsafe { done(cmd, code) },
        }
    })
}

/// The command is over: tm takes the epoll descriptor out of its reactor; we keep the
/// waiter for the next command (`ASYNC_DONE`), or, when enough are kept, tm closes its
/// descriptor (`ASYNC_DONE_CLOSE_FD`) and we close the timer.
///
/// # Safety
/// `cmd` is the box `park` made; it is not used again.
unsafe fn done(cmd: *mut AsyncCmd, code: i32) -> i32 {
    // SAFETY: per the contract.
    let c = unsafe { Box::from_raw(cmd) };
    let AsyncCmd { waiter, .. } = *c;
    match waiter.release() {
        Ok(()) => set_status(sys::ASYNC_DONE),
        Err(waiter) => {
            let _ = waiter.epoll.into_raw_fd();
            set_status(sys::ASYNC_DONE_CLOSE_FD);
        }
    }
    code
}

/// tm's timeout function: the script's `async()` timeout passed first.
unsafe extern "C" fn timeout(_fd: c_int, _msg: *mut sip_msg, param: *mut c_void) -> c_int {
    guard::call("rtpproxy async timeout", -1, || {
        let cmd = param.cast::<AsyncCmd>();
        // SAFETY: `param` is the box `park` handed to tm; this is its last use.
        unsafe {
            if let Some(st) = state::get() {
                (*cmd).run.abandon(st);
                if let Job::OfferAnswer(j) = &(*cmd).job {
                    j.count(st, false);
                }
            }
            tracing::warn!("rtpproxy async: the script's timeout passed before the relay answered");
            done(cmd, -1)
        }
    })
}

/// `async(rtpproxy_unforce([set_id], [sock_var]), route)`.
///
/// # Safety
/// The arguments are those of the call.
pub(crate) unsafe fn unforce(
    msg: *mut sip_msg,
    ctx: *mut async_ctx,
    params: &Params,
) -> Result<i32, Error> {
    set_status(sys::ASYNC_SYNC);
    // SAFETY: per the contract.
    let m = unsafe { Msg::from_ptr(msg) };
    let st = state::get().ok_or(HostError::NotInitialized)?;
    let mut d = Decoder::new(msg, params);
    // SAFETY: the parameters of `rtpproxy_unforce`, in the declared order.
    let (set, sock_var) = unsafe { (d.next::<OptInt>(), d.next::<OptVar>()) };
    let set_view = control::set_or_error(st, set)?;
    let Some(m) = m
        .as_ref()
        .filter(|m| can_suspend(Some(m)) && AsyncRun::can_park(&set_view.nodes))
    else {
        return functions::unforce(m.as_ref(), set, sock_var);
    };
    let call_id = m.call_id().ok_or(HostError::NoCallId)?;
    let from_tag = m.ftag().ok_or(HostError::NoFromTag)?;
    let cmd = Command::delete(call_id, from_tag, m.ttag())?;
    functions::pick_node(st, set, sock_var.as_ref(), call_id)?;
    let run = AsyncRun::new(
        st,
        &set_view.nodes,
        call_id,
        None,
        Failover::Never,
        OpKind::Delete,
    );
    // SAFETY: per the contract.
    Ok(unsafe { start(st, msg, ctx, run, Job::Unforce(Unforce(cmd))) })
}

/// `async(rtpproxy_offer(...), route)` / `async(rtpproxy_answer(...), route)`.
///
/// # Safety
/// The arguments are those of the call.
unsafe fn offer_answer(
    msg: *mut sip_msg,
    ctx: *mut async_ctx,
    params: &Params,
    direction: Direction,
) -> Result<i32, Error> {
    set_status(sys::ASYNC_SYNC);
    let mut d = Decoder::new(msg, params);
    // SAFETY: decoded in the order of the blocking function's row, which this one shares.
    let args = unsafe {
        OfferArgs {
            flags: d.next::<OptStr>(),
            ip: d.next::<OptStr>(),
            set: d.next::<OptInt>(),
            sock_var: d.next::<OptVar>(),
            ret_var: d.next::<OptVar>(),
            body_var: d.next::<OptVar>(),
            bind_local: d.next::<Since4<OptVar>>(),
        }
    };
    // SAFETY: per the contract.
    let m = unsafe { Msg::from_ptr(msg) };
    let st = state::get().ok_or(HostError::NotInitialized)?;
    let job = match m.as_ref().filter(|m| can_suspend(Some(m))) {
        Some(m) => OfferJob::new(st, m, &args, direction)?,
        None => None,
    };
    match job {
        // the route cannot suspend, or the command does not suit the async path
        None => functions::offer_answer(m.as_ref(), &args, direction),
        Some((job, run)) => {
            // SAFETY: per the contract.
            Ok(unsafe { start(st, msg, ctx, run, Job::OfferAnswer(Box::new(job))) })
        }
    }
}

/// `async(rtpproxy_offer(...), route)`.
///
/// # Safety
/// The arguments are those of the call.
pub(crate) unsafe fn offer(
    msg: *mut sip_msg,
    ctx: *mut async_ctx,
    params: &Params,
) -> Result<i32, Error> {
    // SAFETY: per the contract.
    unsafe { offer_answer(msg, ctx, params, Direction::Offer) }
}

/// `async(rtpproxy_answer(...), route)`.
///
/// # Safety
/// The arguments are those of the call.
pub(crate) unsafe fn answer(
    msg: *mut sip_msg,
    ctx: *mut async_ctx,
    params: &Params,
) -> Result<i32, Error> {
    // SAFETY: per the contract.
    unsafe { offer_answer(msg, ctx, params, Direction::Answer) }
}

/// The script code of a media function's result; `rtpproxy_stats` stores its counters.
///
/// # Safety
/// `msg` is the call's message (the one the job resumes on); `stats_vars` the four
/// `pv_spec_t*` parameters of the call (or `None`).
unsafe fn media_code(
    msg: *mut sip_msg,
    name: &str,
    r: Result<MediaDone, Error>,
    stats_vars: Option<[*mut c_void; 4]>,
) -> i32 {
    let r = r.map(|done| match (done, stats_vars) {
        (MediaDone::Stats(s), Some(specs)) => {
            // SAFETY: per the contract, each spec is a variable parameter of this call,
            // accessed against `msg`.
            let vars = specs.map(|spec| unsafe { Var::from_ptr(msg, spec) });
            match vars {
                [Some(up), Some(down), Some(sent), Some(fail)] => {
                    media::store_stats([&up, &down, &sent, &fail], &s);
                }
                _ => tracing::error!("{name}: a statistics variable is missing"),
            }
            1
        }
        (done, _) => done.code(),
    });
    guard::script_code(name, r)
}

/// Runs a media request on `node`: parked when the route can suspend and the node can be
/// waited on, else with the blocking driver (`ASYNC_SYNC`), as the blocking function does.
///
/// # Safety
/// `msg`, `ctx` are those of the call; `stats_vars` its variables (or `None`).
unsafe fn media_start(
    msg: *mut sip_msg,
    ctx: *mut async_ctx,
    name: &'static str,
    node: &'static NodeView,
    req: MediaRequest,
    stats_vars: Option<[*mut c_void; 4]>,
) -> Result<i32, Error> {
    set_status(sys::ASYNC_SYNC);
    let st = state::get().ok_or(HostError::NotInitialized)?;
    // SAFETY: per the contract.
    let m = unsafe { Msg::from_ptr(msg) };
    if !can_suspend(m.as_ref()) || !AsyncRun::can_park(std::slice::from_ref(node)) {
        // SAFETY: per the contract.
        return Ok(unsafe { media_code(msg, name, media::run_request(st, node, req), stats_vars) });
    }
    let (mut job, run) = MediaJob::new(st, name, node, req, stats_vars);
    Ok(match run {
        // SAFETY: per the contract.
        None => unsafe { job.finish(msg) },
        // SAFETY: per the contract.
        Some(run) => unsafe { start(st, msg, ctx, run, Job::Media(job)) },
    })
}

/// What every async media function needs first: the call's message (as the blocking one,
/// which needs one), the module state and the call's identifiers.
///
/// # Safety
/// `msg` is the call's message pointer, valid for `'m`.
unsafe fn media_call<'m>(
    msg: *mut sip_msg,
) -> Result<(Msg<'m>, &'static ModuleState, media::CallIds), Error> {
    set_status(sys::ASYNC_SYNC);
    // SAFETY: per the contract.
    let m = unsafe { Msg::from_ptr(msg) }.ok_or(ScriptError::NoMessage)?;
    let st = state::get().ok_or(HostError::NotInitialized)?;
    let ids = media::call_ids(&m)?;
    Ok((m, st, ids))
}

/// `async(rtpproxy_stream2uac/uas(prompt, count, [set_id], [sock_var]), route)`.
///
/// # Safety
/// The arguments are those of the call.
unsafe fn stream(
    msg: *mut sip_msg,
    ctx: *mut async_ctx,
    params: &Params,
    target: PromptTarget,
    name: &'static str,
) -> Result<i32, Error> {
    let mut d = Decoder::new(msg, params);
    // SAFETY: decoded in the order of the blocking function's row, which this one shares.
    let (prompt, count, set, sock_var) = unsafe {
        (
            d.next::<Str>(),
            d.next::<Int>(),
            d.next::<OptInt>(),
            d.next::<OptVar>(),
        )
    };
    // SAFETY: per the contract.
    let (_m, st, ids) = unsafe { media_call(msg) }?;
    let req = MediaRequest::play(&ids, prompt, count, target)?;
    let node = functions::pick_node(st, set, sock_var.as_ref(), &ids.call_id)?;
    // SAFETY: per the contract.
    unsafe { media_start(msg, ctx, name, node, req, None) }
}

/// `async(rtpproxy_stop_stream2uac/uas([set_id], [sock_var]), route)`.
///
/// # Safety
/// The arguments are those of the call.
unsafe fn stop_stream(
    msg: *mut sip_msg,
    ctx: *mut async_ctx,
    params: &Params,
    target: PromptTarget,
    name: &'static str,
) -> Result<i32, Error> {
    let mut d = Decoder::new(msg, params);
    // SAFETY: decoded in the order of the blocking function's row, which this one shares.
    let (set, sock_var) = unsafe { (d.next::<OptInt>(), d.next::<OptVar>()) };
    // SAFETY: per the contract.
    let (_m, st, ids) = unsafe { media_call(msg) }?;
    let req = MediaRequest::stop_play(&ids, target)?;
    let node = functions::pick_node(st, set, sock_var.as_ref(), &ids.call_id)?;
    // SAFETY: per the contract.
    unsafe { media_start(msg, ctx, name, node, req, None) }
}

macro_rules! prompt_fns {
    ($($f:ident => $body:ident, $target:ident, $name:literal;)*) => {$(
        #[doc = concat!("`async(", $name, "(...), route)`.")]
        ///
        /// # Safety
        /// The arguments are those of the call.
        unsafe fn $f(msg: *mut sip_msg, ctx: *mut async_ctx, params: &Params) -> Result<i32, Error> {
            // SAFETY: per the contract.
            unsafe { $body(msg, ctx, params, PromptTarget::$target, $name) }
        }
    )*};
}

prompt_fns! {
    stream2uac => stream, Uac, "rtpproxy_stream2uac";
    stream2uas => stream, Uas, "rtpproxy_stream2uas";
    stop_stream2uac => stop_stream, Uac, "rtpproxy_stop_stream2uac";
    stop_stream2uas => stop_stream, Uas, "rtpproxy_stop_stream2uas";
}

/// `async(rtpproxy_start_recording([set_id], [sock_var], [flags], [destination],
/// [mediastream]), route)`.
///
/// # Safety
/// The arguments are those of the call.
unsafe fn start_recording(
    msg: *mut sip_msg,
    ctx: *mut async_ctx,
    params: &Params,
) -> Result<i32, Error> {
    let mut d = Decoder::new(msg, params);
    // SAFETY: decoded in the order of the blocking function's row, which this one shares.
    let (set, sock_var, flags, destination, mediastream) = unsafe {
        (
            d.next::<OptInt>(),
            d.next::<OptVar>(),
            d.next::<OptStr>(),
            d.next::<OptStr>(),
            d.next::<OptInt>(),
        )
    };
    // SAFETY: per the contract.
    let (m, st, ids) = unsafe { media_call(msg) }?;
    let req = media::start_recording_request(&m, &ids, flags, destination, mediastream)?;
    let node = functions::pick_node(st, set, sock_var.as_ref(), &ids.call_id)?;
    // SAFETY: per the contract.
    unsafe { media_start(msg, ctx, "rtpproxy_start_recording", node, req, None) }
}

/// `async(rtpproxy_stop_recording([set_id], [sock_var], [mediastream]), route)`.
///
/// # Safety
/// The arguments are those of the call.
unsafe fn stop_recording(
    msg: *mut sip_msg,
    ctx: *mut async_ctx,
    params: &Params,
) -> Result<i32, Error> {
    let mut d = Decoder::new(msg, params);
    // SAFETY: decoded in the order of the blocking function's row, which this one shares.
    let (set, sock_var, mediastream) =
        unsafe { (d.next::<OptInt>(), d.next::<OptVar>(), d.next::<OptInt>()) };
    // SAFETY: per the contract.
    let (m, st, ids) = unsafe { media_call(msg) }?;
    let req = media::stop_recording_request(&m, &ids, mediastream)?;
    let node = functions::pick_node(st, set, sock_var.as_ref(), &ids.call_id)?;
    // SAFETY: per the contract.
    unsafe { media_start(msg, ctx, "rtpproxy_stop_recording", node, req, None) }
}

/// `async(rtpproxy_stats(up_var, down_var, sent_var, fail_var, [set_id], [sock_var]), route)`.
///
/// # Safety
/// The arguments are those of the call.
unsafe fn stats(msg: *mut sip_msg, ctx: *mut async_ctx, params: &Params) -> Result<i32, Error> {
    let mut d = Decoder::new(msg, params);
    // SAFETY: decoded in the order of the blocking function's row, which this one shares.
    let (up, down, sent, fail, set, sock_var) = unsafe {
        (
            d.next::<VarKind>(),
            d.next::<VarKind>(),
            d.next::<VarKind>(),
            d.next::<VarKind>(),
            d.next::<OptInt>(),
            d.next::<OptVar>(),
        )
    };
    // SAFETY: per the contract.
    let (_m, st, ids) = unsafe { media_call(msg) }?;
    let req = MediaRequest::stats(&ids)?;
    let node = functions::pick_node(st, set, sock_var.as_ref(), &ids.call_id)?;
    // The specs outlive the suspension (they belong to the script); the job rebuilds the
    // variables against the message it resumes on.
    let vars = Some([up.as_ptr(), down.as_ptr(), sent.as_ptr(), fail.as_ptr()]);
    // SAFETY: per the contract; the four variables are this call's parameters.
    unsafe { media_start(msg, ctx, "rtpproxy_stats", node, req, vars) }
}

/// Writes the `acmd` entry points: the guarded shell around a body returning
/// `Result<i32, Error>`, mapped to the script code as the blocking functions are.
/// The C type of an async script function (`acmd_function`).
pub(crate) type AsyncFn = unsafe extern "C" fn(
    *mut sip_msg,
    *mut async_ctx,
    *mut c_void,
    *mut c_void,
    *mut c_void,
    *mut c_void,
    *mut c_void,
    *mut c_void,
    *mut c_void,
    *mut c_void,
) -> c_int;

macro_rules! async_fn {
    ($($f:ident => $name:literal => $body:path),* $(,)?) => {$(
        /// Async script function of the same name.
        pub(crate) unsafe extern "C" fn $f(
            msg: *mut sip_msg, ctx: *mut async_ctx,
            p1: *mut c_void, p2: *mut c_void, p3: *mut c_void, p4: *mut c_void,
            p5: *mut c_void, p6: *mut c_void, p7: *mut c_void, p8: *mut c_void,
        ) -> c_int {
            guard::call($name, -1, || {
                let params: Params = [p1, p2, p3, p4, p5, p6, p7, p8];
                // SAFETY: `msg`, `ctx` and `params` are exactly what OpenSIPS passed.
                guard::script_code($name, unsafe { $body(msg, ctx, &params) })
            })
        }
    )*};
}

async_fn! {
    rtpproxy_unforce_af => "rtpproxy_unforce" => unforce,
    rtpproxy_offer_af => "rtpproxy_offer" => offer,
    rtpproxy_answer_af => "rtpproxy_answer" => answer,
    rtpproxy_stream2uac_af => "rtpproxy_stream2uac" => stream2uac,
    rtpproxy_stream2uas_af => "rtpproxy_stream2uas" => stream2uas,
    rtpproxy_stop_stream2uac_af => "rtpproxy_stop_stream2uac" => stop_stream2uac,
    rtpproxy_stop_stream2uas_af => "rtpproxy_stop_stream2uas" => stop_stream2uas,
    rtpproxy_start_recording_af => "rtpproxy_start_recording" => start_recording,
    rtpproxy_stop_recording_af => "rtpproxy_stop_recording" => stop_recording,
    rtpproxy_stats_af => "rtpproxy_stats" => stats,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    fn readable(fd: RawFd) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the call; no wait.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    #[test]
    fn the_descriptor_wakes_at_the_deadline_and_on_a_reply() {
        let mut w = Waiter::new().unwrap();
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let deadline = Instant::now() + Duration::from_millis(30);
        w.arm(Some(sock.as_raw_fd()), Some(deadline)).unwrap();
        assert!(!readable(w.epoll.as_raw_fd()), "nothing happened yet");
        // the lost attempt: readable once the deadline passed, and the wait consumes it
        w.wait(Some(deadline + Duration::from_secs(5)));
        assert!(Instant::now() >= deadline);
        assert!(!readable(w.epoll.as_raw_fd()), "timer expiry consumed");
        // a reply
        w.arm(
            Some(sock.as_raw_fd()),
            Some(Instant::now() + Duration::from_secs(60)),
        )
        .unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.send_to(b"x", sock.local_addr().unwrap()).unwrap();
        w.wait(Some(Instant::now() + Duration::from_secs(5)));
        assert!(
            readable(w.epoll.as_raw_fd()),
            "the reply is still to be read"
        );
    }

    #[test]
    fn a_kept_waiter_forgets_its_sockets_and_its_old_timer() {
        let mut w = Waiter::take().unwrap();
        let epoll = w.epoll.as_raw_fd();
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        w.arm(Some(sock.as_raw_fd()), Some(Instant::now())).unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.send_to(b"x", sock.local_addr().unwrap()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert!(readable(epoll), "a datagram and an expired timer");
        assert!(w.release().is_ok(), "kept");
        let mut w = Waiter::take().unwrap();
        assert_eq!(w.epoll.as_raw_fd(), epoll, "the kept waiter is reused");
        assert!(w.watched.is_empty());
        // the old socket still holds its datagram, the old expiry is cleared by re-arming
        let other = UdpSocket::bind("127.0.0.1:0").unwrap();
        w.arm(
            Some(other.as_raw_fd()),
            Some(Instant::now() + Duration::from_secs(60)),
        )
        .unwrap();
        assert!(!readable(epoll), "nothing of the previous command wakes it");
        peer.send_to(b"y", other.local_addr().unwrap()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert!(readable(epoll), "its own socket does");
        let mut buf = [0u8; 4];
        assert_eq!(
            sock.recv(&mut buf).unwrap(),
            1,
            "the old datagram was left alone"
        );
    }
}
