//! The control plane, sans-IO: the whole life of one relay command.
//!
//! Every command the module sends to a relay (offer, answer, delete, media commands, probes,
//! API and MI requests) runs through one [`CommandRun`]. It decides, with node health and
//! replies handed in as arguments:
//!
//! - which node takes the command ([`choose`]): the call's own node first when it is usable,
//!   else the C-compatible hash of [`crate::core::select`] (with its redistribution and
//!   weight-0 backups); a node that is `draining` takes no new calls but keeps its own;
//! - what an attempt that went unanswered means for the node's health: the node is taken out
//!   for every process at the first lost UDP attempt and put back at once when a
//!   retransmission is answered; when another process already took it out (also at the same
//!   moment: only the command whose update disabled the node keeps trying), this command gives
//!   up on it at once (two lost attempts from two processes read as a hung relay);
//! - whether to fail over to the next node (a transport failure, or an `E` reply the caller
//!   reads as a relay error), and the typed result.
//!
//! The driver (the host) only moves bytes and reads the clock. It loops on
//! [`CommandRun::poll`]: [`Step::Health`] asks it to apply a health change to the shared
//! table (and to say, for a take-out, whether its update disabled the node:
//! [`CommandRun::on_taken_out`]), [`Step::Start`] to start the command on a node (one exchange, whose per-attempt
//! deadlines and retransmissions are decided by [`crate::core::proto::DatagramExchange`] /
//! [`crate::core::proto::StreamExchange`]), [`Step::Wait`] to wait on that node's socket or its
//! deadline and report back with [`CommandRun::on_attempt_lost`] or [`CommandRun::on_reply`],
//! and [`Step::Done`] ends the command. The same loop serves a blocking driver (wait in place)
//! and a non-blocking one (park the command on the socket's descriptor and resume later).
//!
//! The prober's command is [`probe::ProbeRound`]: which nodes are due, their version and
//! capability queries, the timing of every attempt (all due nodes side by side) and what a
//! result does to a node's health.
//!
//! Every command also leaves a small record of what happened ([`Event`]): first send,
//! retransmission, timeout, relay error, failover, final result. Statistics observe these in
//! one place ([`Observer`]).

pub mod callmap;
pub mod probe;

use crate::core::select::select_node;

/// What the engine needs to know about one node of the candidate set, in set order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeInput {
    /// Weight from the configuration.
    pub weight: u32,
    /// Selection may use it (shared health: not disabled).
    pub enabled: bool,
    /// The node is being drained: it takes no new calls but keeps serving its own.
    pub draining: bool,
    /// The prober has answered for this node at least once. A node not proven yet is given
    /// up at its first lost attempt (see [`CommandRun::on_attempt_lost`]).
    pub probed: bool,
}

impl NodeInput {
    /// An enabled, not draining node of weight `weight`.
    pub const fn up(weight: u32) -> Self {
        Self {
            weight,
            enabled: true,
            draining: false,
            probed: true,
        }
    }
}

/// Chooses the node for a command of `call_id`: `own` (the node that holds the call's
/// sessions) when it is enabled and not in `excluded`, even if it is draining; otherwise the
/// hash choice of [`select_node`] among the enabled, not draining nodes not in `excluded`.
pub fn choose(
    nodes: &[NodeInput],
    call_id: &[u8],
    own: Option<usize>,
    excluded: &[usize],
) -> Option<usize> {
    if let Some(i) = own {
        if nodes.get(i).is_some_and(|n| n.enabled) && !excluded.contains(&i) {
            return Some(i);
        }
    }
    let table: Vec<(u32, bool)> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.weight, n.enabled && !n.draining && !excluded.contains(&i)))
        .collect();
    select_node(&table, call_id)
}

/// Kind of a relay command, for statistics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// `U`.
    Offer,
    /// `L`.
    Answer,
    /// `D`.
    Delete,
    /// `P`.
    Play,
    /// `S`.
    StopPlay,
    /// `R`.
    Record,
    /// `C`.
    Copy,
    /// `N`.
    StopCopy,
    /// `Q`.
    Query,
    /// `V` / `VF`.
    Version,
    /// Anything else (raw API commands).
    Other,
}

impl OpKind {
    /// The kind of a command by its letter.
    pub fn of_letter(letter: u8) -> Self {
        match letter.to_ascii_uppercase() {
            b'U' => Self::Offer,
            b'L' => Self::Answer,
            b'D' => Self::Delete,
            b'P' => Self::Play,
            b'S' => Self::StopPlay,
            b'R' => Self::Record,
            b'C' => Self::Copy,
            b'N' => Self::StopCopy,
            b'Q' => Self::Query,
            b'V' => Self::Version,
            _ => Self::Other,
        }
    }
}

/// How a command picks its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The call's own node (if known and usable), else the hash choice.
    Call {
        /// Index (in the candidate set) of the node that holds the call, if known.
        own: Option<usize>,
    },
    /// Exactly this node (a node named by the caller); fails when it is not enabled.
    Pinned(usize),
}

/// Whether the command may move to another node after a node failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failover {
    /// Try the next node (offer/answer): at most once per node of the set.
    NextNode,
    /// Fail with the node (delete, media commands, probes: they belong to one node).
    Never,
}

/// A change of a node's shared health the driver must apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthChange {
    /// Take the node out of selection for every process (until the prober brings it back).
    TakeOut {
        /// Why, for the log.
        why: String,
    },
    /// A node this command took out answered after all: back in selection.
    PutBack,
}

/// Why an exchange with a node ended without a usable reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeFault {
    /// No reply within the attempts (or the command gave up on a node already taken out).
    #[error("no reply")]
    Timeout,
    /// The node could not be reached or the connection broke.
    #[error("{0}")]
    Transport(String),
    /// The relay answered `E<code>` and the caller reads that as a relay failure.
    #[error("answered E{0}")]
    RelayError(u32),
}

/// How a command ended without success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No node of the set is usable (all disabled, or the named node is disabled).
    #[error("no available proxies")]
    NoNode,
    /// Every node tried failed; the last failure is given.
    #[error("RTPProxy failed: {0}")]
    Failed(NodeFault),
    /// The caller stopped the command ([`CommandRun::abort`]).
    #[error("command abandoned")]
    Aborted,
}

/// One thing that happened to a command (see [`Observer`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The command's first request went to `node`.
    FirstSend {
        /// Kind of command.
        op: OpKind,
        /// Node index in the candidate set.
        node: usize,
    },
    /// An attempt went unanswered and the request is sent again.
    Retransmit {
        /// Kind of command.
        op: OpKind,
        /// Node index.
        node: usize,
    },
    /// The node gave no usable reply (timeout or transport failure).
    NodeTimeout {
        /// Kind of command.
        op: OpKind,
        /// Node index.
        node: usize,
    },
    /// The relay answered with an error the caller counts as a relay failure.
    RelayError {
        /// Kind of command.
        op: OpKind,
        /// Node index.
        node: usize,
        /// The `E` code.
        code: u32,
    },
    /// The node answered (a reply the caller uses, `E` replies that are no node failure
    /// included).
    Answered {
        /// Kind of command.
        op: OpKind,
        /// Node index.
        node: usize,
        /// Round trip, µs.
        rtt_us: u64,
    },
    /// The command moves on to another node.
    Failover {
        /// Kind of command.
        op: OpKind,
        /// The node given up.
        from: usize,
        /// The next node.
        to: usize,
    },
    /// The command ended.
    Finished {
        /// Kind of command.
        op: OpKind,
        /// The node that answered, or the last one tried.
        node: Option<usize>,
        /// Whether it succeeded.
        ok: bool,
    },
}

/// Receives the events of every command (statistics count here).
pub trait Observer {
    /// One event of one command.
    fn event(&self, e: &Event);
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl Observer for NoObserver {
    fn event(&self, _e: &Event) {}
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Apply a health change to `node` (shared table, status event, log).
    Health {
        /// Node index.
        node: usize,
        /// The change.
        change: HealthChange,
    },
    /// Start the command on `node` (build it for that node, connect, send the first request).
    Start {
        /// Node index.
        node: usize,
    },
    /// The exchange with `node` is running: wait for its socket or its deadline, then report
    /// with [`CommandRun::on_attempt_lost`] / [`CommandRun::on_reply`].
    Wait {
        /// Node index.
        node: usize,
    },
    /// The command is over: the node that answered, or why not.
    Done(Result<usize, CommandError>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Choose,
    Starting(usize),
    Running(usize),
    Finished(Result<usize, CommandError>),
    Reported,
}

/// What the driver tells the engine a node's answer was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A usable reply, `rtt_us` after the first request (retransmissions included; the
    /// driver measures it).
    Reply {
        /// Round trip, µs.
        rtt_us: u64,
    },
    /// The node answered but the command failed there (an `E<code>` reply that is no node
    /// failure, or a reply the caller could not use): the node is fine, the command ends on
    /// it, and counts as failed.
    Refused {
        /// Round trip, µs.
        rtt_us: u64,
        /// The `E` code, when the reply was one.
        code: Option<u32>,
    },
    /// The relay is fine but does not know the call (`E50` to a delete). When the call's
    /// node was not known, the command moves on to the next node (the call's sessions may be
    /// there); otherwise it is done.
    NotHere,
    /// No usable reply.
    Fault(NodeFault),
}

/// The life of one command (see the module documentation).
#[derive(Debug)]
pub struct CommandRun {
    op: OpKind,
    route: Route,
    failover: Failover,
    state: State,
    tried: Vec<usize>,
    /// This command took the current node out after a lost attempt.
    suspected: bool,
    /// The current node has not been proven by the prober yet.
    unproven: bool,
    /// A node answered [`Answer::NotHere`]: running out of nodes is no failure.
    not_here: bool,
    /// The last node's answer refused the command (counted as failed in
    /// [`Event::Finished`]).
    refused: bool,
    /// Health changes not yet handed to the driver.
    pending: Vec<(usize, HealthChange)>,
    last_fault: Option<NodeFault>,
    events: Vec<Event>,
}

impl CommandRun {
    /// A command of kind `op`.
    pub fn new(op: OpKind, route: Route, failover: Failover) -> Self {
        Self {
            op,
            route,
            failover,
            state: State::Choose,
            tried: Vec::new(),
            suspected: false,
            unproven: false,
            not_here: false,
            refused: false,
            pending: Vec::new(),
            last_fault: None,
            events: Vec::new(),
        }
    }

    /// The kind of command.
    pub fn op(&self) -> OpKind {
        self.op
    }

    /// The node the command is on now (or ended on).
    pub fn node(&self) -> Option<usize> {
        match self.state {
            State::Starting(n) | State::Running(n) => Some(n),
            _ => self.tried.last().copied(),
        }
    }

    /// The next step, given the candidate set's health now and the Call-ID (for the hash).
    pub fn poll(&mut self, nodes: &[NodeInput], call_id: &[u8]) -> Step {
        if !self.pending.is_empty() {
            let (node, change) = self.pending.remove(0);
            return Step::Health { node, change };
        }
        match self.state.clone() {
            State::Choose => {
                let pick = match self.route {
                    Route::Pinned(i) => nodes
                        .get(i)
                        .is_some_and(|n| n.enabled)
                        .then_some(i)
                        .filter(|i| !self.tried.contains(i)),
                    // a call whose node is unknown and not on the hash node: any node that is
                    // up may hold it (draining or backup nodes included)
                    Route::Call { .. } if self.not_here => {
                        (0..nodes.len()).find(|i| nodes[*i].enabled && !self.tried.contains(i))
                    }
                    Route::Call { own } => choose(nodes, call_id, own, &self.tried),
                };
                match pick {
                    Some(n) => {
                        // looking for a call's sessions on the next node is no failover
                        if let Some(&from) = self.tried.last().filter(|_| !self.not_here) {
                            self.events.push(Event::Failover {
                                op: self.op,
                                from,
                                to: n,
                            });
                        }
                        self.tried.push(n);
                        self.suspected = false;
                        self.unproven = !nodes[n].probed;
                        self.state = State::Starting(n);
                        Step::Start { node: n }
                    }
                    None if self.not_here => {
                        let last = *self.tried.last().expect("a node answered");
                        self.finish(Ok(last));
                        self.poll(nodes, call_id)
                    }
                    None => {
                        let err = match self.last_fault.take() {
                            Some(f) => CommandError::Failed(f),
                            None => CommandError::NoNode,
                        };
                        self.finish(Err(err));
                        self.poll(nodes, call_id)
                    }
                }
            }
            State::Starting(n) => {
                // the driver polled again without reporting the start: treat as started
                self.on_started(n);
                Step::Wait { node: n }
            }
            State::Running(n) => Step::Wait { node: n },
            State::Finished(r) => {
                self.events.push(Event::Finished {
                    op: self.op,
                    node: match &r {
                        Ok(n) => Some(*n),
                        Err(_) => self.tried.last().copied(),
                    },
                    ok: r.is_ok() && !self.refused,
                });
                self.state = State::Reported;
                Step::Done(r)
            }
            State::Reported => Step::Done(Err(CommandError::NoNode)),
        }
    }

    /// The driver sent the first request of the command to `node`.
    pub fn on_started(&mut self, node: usize) {
        if self.state == State::Starting(node) {
            self.events.push(Event::FirstSend { op: self.op, node });
            self.state = State::Running(node);
        }
    }

    /// An attempt on `node` went unanswered and the exchange wants to send the request again.
    /// `already_out` says whether the node is out of selection right now (shared health).
    /// Returns whether to go on retransmitting; `false` means the driver abandons the exchange
    /// (the engine has already moved on: failover or failure).
    ///
    /// The rule: the first lost attempt takes the node out for everybody and this command
    /// keeps retransmitting (a reply puts the node back). If another process took the node
    /// out already, or the prober has never answered for the node (a relay hung since
    /// start-up is not worth more waits), the command gives up on the node at once. Whether
    /// this command's take-out was the one that disabled the node is only known once the
    /// driver applied it: [`CommandRun::on_taken_out`] settles that.
    pub fn on_attempt_lost(&mut self, node: usize, already_out: bool) -> bool {
        if self.state != State::Running(node) {
            return false;
        }
        if self.suspected {
            self.events.push(Event::Retransmit { op: self.op, node });
            return true; // our own mark: keep retransmitting
        }
        if already_out {
            // another process took it out: a hung relay; give up on it now
            self.events.push(Event::NodeTimeout { op: self.op, node });
            self.last_fault = Some(NodeFault::Timeout);
            self.node_gone(node);
            return false;
        }
        if self.unproven {
            self.pending.push((
                node,
                HealthChange::TakeOut {
                    why: format!("no reply to {:?} from a node not probed yet", self.op),
                },
            ));
            self.events.push(Event::NodeTimeout { op: self.op, node });
            self.last_fault = Some(NodeFault::Timeout);
            self.node_gone(node);
            return false;
        }
        self.suspected = true;
        self.pending.push((
            node,
            HealthChange::TakeOut {
                why: format!("no reply to {:?} yet, retransmitting", self.op),
            },
        ));
        self.events.push(Event::Retransmit { op: self.op, node });
        true
    }

    /// The driver applied this command's [`HealthChange::TakeOut`] of `node`; `by_us` says
    /// whether that update is the one that disabled the node (it was enabled just before).
    /// Returns whether the command still runs on `node` (the exchange goes on).
    ///
    /// Two commands that lose an attempt on the same node at the same moment both read the
    /// node as up and both ask to take it out; only the one whose take-out disabled it stays
    /// on the node and keeps retransmitting. Every other one gives up on the node at once, as
    /// when it had seen the node out already ([`CommandRun::on_attempt_lost`]).
    pub fn on_taken_out(&mut self, node: usize, by_us: bool) -> bool {
        if self.state != State::Running(node) {
            return false;
        }
        if self.suspected && !by_us {
            self.suspected = false;
            self.events.push(Event::NodeTimeout { op: self.op, node });
            self.last_fault = Some(NodeFault::Timeout);
            self.node_gone(node);
            return false;
        }
        true
    }

    /// The exchange with `node` ended: a usable reply, or a fault (transport failure, timeout,
    /// or an `E` reply the caller counts as a relay failure). Also for a failed start.
    pub fn on_reply(&mut self, node: usize, answer: Answer) {
        if !matches!(self.state, State::Running(n) | State::Starting(n) if n == node) {
            return;
        }
        match answer {
            Answer::Reply { rtt_us } => {
                self.events.push(Event::Answered {
                    op: self.op,
                    node,
                    rtt_us,
                });
                self.refused = false;
                if self.suspected {
                    self.pending.push((node, HealthChange::PutBack));
                }
                self.finish(Ok(node));
            }
            Answer::Refused { rtt_us, code } => {
                self.events.push(match code {
                    Some(code) => Event::RelayError {
                        op: self.op,
                        node,
                        code,
                    },
                    None => Event::Answered {
                        op: self.op,
                        node,
                        rtt_us,
                    },
                });
                self.refused = true;
                if self.suspected {
                    self.pending.push((node, HealthChange::PutBack));
                }
                self.finish(Ok(node));
            }
            Answer::NotHere => {
                self.events.push(Event::RelayError {
                    op: self.op,
                    node,
                    code: 50,
                });
                self.refused = true;
                if self.suspected {
                    self.pending.push((node, HealthChange::PutBack));
                }
                if matches!(self.route, Route::Call { own: None }) {
                    self.not_here = true;
                    self.state = State::Choose;
                } else {
                    self.finish(Ok(node));
                }
            }
            Answer::Fault(fault) => {
                let why = match &fault {
                    NodeFault::RelayError(code) => {
                        self.events.push(Event::RelayError {
                            op: self.op,
                            node,
                            code: *code,
                        });
                        format!("answered E{code}")
                    }
                    other => {
                        self.events.push(Event::NodeTimeout { op: self.op, node });
                        format!("{:?} failed: {other}", self.op)
                    }
                };
                self.pending.push((node, HealthChange::TakeOut { why }));
                self.last_fault = Some(fault);
                self.node_gone(node);
            }
        }
    }

    /// The caller stops the command (it could not build it for the node, or it read the
    /// reply as a final error). Health changes already decided are still handed out.
    pub fn abort(&mut self) {
        if !matches!(self.state, State::Finished(_) | State::Reported) {
            self.finish(Err(CommandError::Aborted));
        }
    }

    /// The next health change waiting for the driver, if any (a driver that is inside an
    /// exchange applies these before it retransmits; [`CommandRun::poll`] hands them out too).
    pub fn take_health(&mut self) -> Option<(usize, HealthChange)> {
        (!self.pending.is_empty()).then(|| self.pending.remove(0))
    }

    /// Events recorded since the last call (first send, retransmissions, …, the result).
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    fn node_gone(&mut self, _node: usize) {
        match self.failover {
            Failover::NextNode if !matches!(self.route, Route::Pinned(_)) => {
                self.state = State::Choose;
            }
            _ => {
                let fault = self.last_fault.take().unwrap_or(NodeFault::Timeout);
                self.finish(Err(CommandError::Failed(fault)));
            }
        }
    }

    fn finish(&mut self, r: Result<usize, CommandError>) {
        self.state = State::Finished(r);
    }
}

#[cfg(test)]
mod tests;
