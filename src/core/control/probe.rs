//! The prober's command, sans-IO: one round of capability probes over every node that is due.
//!
//! A [`ProbeRound`] decides which nodes are due ([`is_due`]: never answered yet, or disabled
//! and past their recheck time), builds each node's probe (`V`, `VF 20050322`, the optional
//! `VF <date>` queries of [`crate::core::proto::caps::Probe`]), runs the probes of all due
//! nodes side by side, times every attempt (`rtpproxy_timeout` per attempt, `rtpproxy_retr`
//! attempts per UDP command, one per stream command) and hands out each node's result. What a
//! result does to the node ([`apply_outcome`]) and what is logged and raised for it
//! ([`report`]) are decided here too.
//!
//! The driver (the host's prober process) owns the sockets and the clock. It loops on
//! [`ProbeRound::poll`] with the time now:
//!
//! - [`ProbeStep::Send`]: start the command on the node's client, then report the time the
//!   request went out with [`ProbeRound::on_sent`] (or a failed start with
//!   [`ProbeRound::on_reply`]`(node, None)`);
//! - [`ProbeStep::Retransmit`]: the node's attempt is lost; send the same request again and
//!   report [`ProbeRound::on_sent`];
//! - [`ProbeStep::GiveUp`]: the command is over without a reply; drop what is in flight;
//! - [`ProbeStep::Record`]: the node's probe is finished; apply its outcome;
//! - [`ProbeStep::Wait`]: wait on the sockets of [`ProbeRound::in_flight`] until one is
//!   readable (feed the reply with [`ProbeRound::on_reply`]) or until the deadline passes;
//! - [`ProbeStep::Done`]: the round is over.
//!
//! A node that does not answer holds back nobody: every due node's first command goes out
//! before the driver waits for anything.

use std::time::{Duration, Instant};

use crate::core::proto::caps::{Capabilities, Probe, ProbeFailure, ProbeOutcome};
use crate::core::proto::command::Command;
use crate::core::select::NodeHealth;

/// Pause between two prober rounds.
pub const ROUND_INTERVAL: Duration = Duration::from_millis(500);

/// Pause after a round that failed (an internal error): the prober's clients are rebuilt.
pub const ROUND_BACKOFF: Duration = Duration::from_secs(2);

/// What the prober needs to know about one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeInput {
    /// The node's shared health now.
    pub health: NodeHealth,
    /// The prober has answered for it before (since start-up or since the reload that added
    /// it).
    pub probed: bool,
    /// Its commands are datagrams (UDP: `rtpproxy_retr` attempts per command); streams get
    /// one attempt.
    pub datagram: bool,
}

/// How long the probe commands wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTiming {
    /// Wait for one reply (`rtpproxy_timeout`).
    pub timeout: Duration,
    /// Attempts per UDP command (`rtpproxy_retr`; 0 makes every UDP probe fail at once, as
    /// every other UDP command).
    pub retr: u32,
}

/// Whether a node is probed in the round that starts at tick `now`: it was never answered,
/// or it is disabled (not forever) and its recheck time has come.
pub fn is_due(node: &ProbeInput, now: u32) -> bool {
    !node.probed || node.health.is_due_for_recheck(now)
}

/// What the driver does next in a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeStep {
    /// Start `cmd` on `node` (connect if needed and send), then [`ProbeRound::on_sent`].
    Send {
        /// Node index (in the table given to [`ProbeRound::new`]).
        node: usize,
        /// The probe command.
        cmd: Command,
    },
    /// `node`'s attempt is lost: send the same request again, then [`ProbeRound::on_sent`].
    Retransmit {
        /// Node index.
        node: usize,
    },
    /// `node`'s command ends without a reply (every attempt lost): abandon it.
    GiveUp {
        /// Node index.
        node: usize,
    },
    /// `node`'s probe is finished.
    Record {
        /// Node index.
        node: usize,
        /// What the probe found.
        outcome: ProbeOutcome,
    },
    /// Wait until a socket of [`ProbeRound::in_flight`] is readable or `until` passes.
    Wait {
        /// The earliest attempt deadline.
        until: Instant,
    },
    /// The round is over.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobState {
    /// The next command (or the result) is to be handed out.
    Ready,
    /// Handed to the driver; `attempt` is being sent (no deadline before [`ProbeRound::on_sent`]).
    Sending { attempt: u32 },
    /// Attempt `attempt` went out; lost at `deadline`.
    InFlight { attempt: u32, deadline: Instant },
    /// The result was handed out.
    Recorded,
}

#[derive(Debug)]
struct Job {
    node: usize,
    probe: Probe,
    attempts: u32,
    state: JobState,
}

/// One prober round (see the module documentation).
#[derive(Debug)]
pub struct ProbeRound {
    jobs: Vec<Job>,
    timeout: Duration,
}

impl ProbeRound {
    /// A round at tick `now` over `nodes`: every node [`is_due`] gets a probe.
    pub fn new(nodes: &[ProbeInput], now: u32, timing: ProbeTiming) -> Self {
        let jobs = nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| is_due(n, now))
            .map(|(node, n)| Job {
                node,
                probe: Probe::new(),
                attempts: if n.datagram { timing.retr } else { 1 },
                state: JobState::Ready,
            })
            .collect();
        Self {
            jobs,
            timeout: timing.timeout,
        }
    }

    /// The nodes probed in this round.
    pub fn due(&self) -> impl Iterator<Item = usize> + '_ {
        self.jobs.iter().map(|j| j.node)
    }

    /// The nodes with a command out (their sockets are what [`ProbeStep::Wait`] waits on).
    pub fn in_flight(&self) -> impl Iterator<Item = usize> + '_ {
        self.jobs
            .iter()
            .filter(|j| {
                matches!(
                    j.state,
                    JobState::InFlight { .. } | JobState::Sending { .. }
                )
            })
            .map(|j| j.node)
    }

    /// The next step at time `now`.
    pub fn poll(&mut self, now: Instant) -> ProbeStep {
        let timeout = self.timeout;
        let mut until: Option<Instant> = None;
        for job in &mut self.jobs {
            loop {
                match job.state {
                    JobState::Ready => match job.probe.poll_command() {
                        // `rtpproxy_retr` 0: the command fails without being sent
                        Some(_) if job.attempts == 0 => job.probe.handle_reply(None),
                        Some(cmd) => {
                            job.state = JobState::Sending { attempt: 1 };
                            return ProbeStep::Send {
                                node: job.node,
                                cmd,
                            };
                        }
                        None => {
                            job.state = JobState::Recorded;
                            let outcome = job
                                .probe
                                .outcome()
                                .cloned()
                                .unwrap_or(ProbeOutcome::Failed(ProbeFailure::VersionNoReply));
                            return ProbeStep::Record {
                                node: job.node,
                                outcome,
                            };
                        }
                    },
                    JobState::Sending { attempt } => {
                        // the driver did not say when it sent: count from now
                        job.state = JobState::InFlight {
                            attempt,
                            deadline: now + timeout,
                        };
                    }
                    JobState::InFlight { attempt, deadline } if now >= deadline => {
                        if attempt < job.attempts {
                            job.state = JobState::Sending {
                                attempt: attempt + 1,
                            };
                            return ProbeStep::Retransmit { node: job.node };
                        }
                        job.probe.handle_reply(None);
                        job.state = JobState::Ready;
                        return ProbeStep::GiveUp { node: job.node };
                    }
                    JobState::InFlight { deadline, .. } => {
                        until = Some(until.map_or(deadline, |u| u.min(deadline)));
                        break;
                    }
                    JobState::Recorded => break,
                }
            }
        }
        match until {
            Some(until) => ProbeStep::Wait { until },
            None => ProbeStep::Done,
        }
    }

    /// The request for `node` went out at `now` (first attempt or retransmission): its
    /// attempt is lost at `now + rtpproxy_timeout`.
    pub fn on_sent(&mut self, node: usize, now: Instant) {
        let timeout = self.timeout;
        if let Some(job) = self.job(node) {
            if let JobState::Sending { attempt } = job.state {
                job.state = JobState::InFlight {
                    attempt,
                    deadline: now + timeout,
                };
            }
        }
    }

    /// `node`'s command ended: its reply body (cookie and framing removed), or `None` when
    /// the transport failed (no reply). Ignored when no command is out on `node`.
    pub fn on_reply(&mut self, node: usize, body: Option<&[u8]>) {
        if let Some(job) = self.job(node) {
            if matches!(
                job.state,
                JobState::InFlight { .. } | JobState::Sending { .. }
            ) {
                job.probe.handle_reply(body);
                job.state = JobState::Ready;
            }
        }
    }

    fn job(&mut self, node: usize) -> Option<&mut Job> {
        self.jobs.iter_mut().find(|j| j.node == node)
    }
}

/// The node's health after a probe that found `outcome` at tick `now`: enabled again when it
/// answered (unless MI disabled it forever), else disabled until `now + disable_tout`.
pub fn apply_outcome(outcome: &ProbeOutcome, health: &mut NodeHealth, now: u32, disable_tout: i32) {
    match outcome {
        ProbeOutcome::Enabled(_) => health.on_probe_success(),
        ProbeOutcome::Failed(_) => health.on_probe_failure(now, disable_tout),
    }
}

/// The capabilities a probe leaves on the node (none when it failed).
pub fn capabilities_of(outcome: &ProbeOutcome) -> Capabilities {
    match outcome {
        ProbeOutcome::Enabled(caps) => *caps,
        ProbeOutcome::Failed(_) => Capabilities::NONE,
    }
}

/// What the operator hears of a probe's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeNotice {
    /// Nothing changed: nothing to say.
    Quiet,
    /// The node's first answer since start-up (or since the reload that added it).
    Active(Capabilities),
    /// A disabled node answered and is back in selection.
    Reenabled(Capabilities),
    /// The node answered its first probe, but MI has disabled it: it stays out.
    HeldOut,
    /// The probe failed: the node is (or stays) disabled.
    Disabled {
        /// Why.
        why: ProbeFailure,
        /// It was enabled before (counted in the statistics as a disabling).
        newly: bool,
    },
}

impl ProbeNotice {
    /// The status event to raise (`E_RTPPROXY_STATUS`): `Some(true)` active, `Some(false)`
    /// inactive, `None` none.
    pub fn status_event(&self) -> Option<bool> {
        match self {
            Self::Quiet => None,
            Self::Active(_) | Self::Reenabled(_) => Some(true),
            Self::HeldOut | Self::Disabled { .. } => Some(false),
        }
    }
}

/// What to report for a probe of a node whose health went from `before` to `after`; `first`
/// says it was the node's first probe. Only changes are reported, and every first probe.
pub fn report(
    outcome: &ProbeOutcome,
    first: bool,
    before: NodeHealth,
    after: NodeHealth,
) -> ProbeNotice {
    let changed = before.disabled != after.disabled;
    if !first && !changed {
        return ProbeNotice::Quiet;
    }
    match outcome {
        ProbeOutcome::Enabled(_) if after.disabled => ProbeNotice::HeldOut,
        ProbeOutcome::Enabled(caps) if first => ProbeNotice::Active(*caps),
        ProbeOutcome::Enabled(caps) => ProbeNotice::Reenabled(*caps),
        ProbeOutcome::Failed(why) => ProbeNotice::Disabled {
            why: why.clone(),
            newly: changed,
        },
    }
}
