//! The module's statistics, declared once: names, kinds, and which event moves which counter.
//!
//! Layer: `core`; plain values only. The host registers every row of [`Stat::ALL`] and
//! [`NodeStat::ALL`] with OpenSIPS's statistics API (group `rtpproxy`) and feeds [`Event`]s
//! from the control plane into [`Event::counters`]; nothing else decides what is counted.
#![warn(missing_docs)]

/// How OpenSIPS (and so the prometheus module) should treat a statistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatKind {
    /// Only grows (resettable with `reset_statistics`).
    Counter,
    /// A value read on demand (`STAT_IS_FUNC | STAT_NO_RESET`; prometheus types it `gauge`).
    Gauge,
}

macro_rules! stat_table {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $s:literal, $k:ident;)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $v,)* }

        impl $name {
            /// Every row, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$v,)*];

            /// The statistic's name (for per-node rows: the part before `__<url>`).
            pub const fn name(self) -> &'static str {
                match self { $($name::$v => $s,)* }
            }

            /// Counter or gauge.
            pub const fn kind(self) -> StatKind {
                match self { $($name::$v => StatKind::$k,)* }
            }

            /// Position in [`Self::ALL`].
            pub const fn index(self) -> usize {
                self as usize
            }
        }
    };
}

stat_table! {
    /// Module-wide statistics.
    Stat {
        /// Offers (`rtpproxy_offer`, engage, rtp_relay, API) that succeeded.
        Offers => "offers", Counter;
        /// Answers that succeeded.
        Answers => "answers", Counter;
        /// Deletes the relay accepted.
        Deletes => "deletes", Counter;
        /// Offers that failed.
        OffersFailed => "offers_failed", Counter;
        /// Answers that failed.
        AnswersFailed => "answers_failed", Counter;
        /// Deletes with no reply or an error reply.
        DeletesFailed => "deletes_failed", Counter;
        /// Control commands sent (first attempts; probes not included).
        Commands => "commands", Counter;
        /// UDP retransmissions.
        Retransmissions => "retransmissions", Counter;
        /// Commands that got no usable reply from their node.
        Timeouts => "timeouts", Counter;
        /// `E<code>` replies.
        RelayErrors => "relay_errors", Counter;
        /// Commands moved to another node of the set.
        Failovers => "failovers", Counter;
        /// Calls whose sessions we created and have not deleted.
        ActiveCalls => "active_calls", Gauge;
        /// Nodes not disabled (draining ones included).
        EnabledNodes => "enabled_nodes", Gauge;
    }
}

stat_table! {
    /// Per-node statistics, named `<name>__<url>`.
    NodeStat {
        /// Commands sent to the node (first attempts).
        Commands => "commands", Counter;
        /// Commands the node did not answer.
        Timeouts => "timeouts", Counter;
        /// `E<code>` replies from the node.
        Errors => "errors", Counter;
        /// Smoothed round trip of answered commands, µs.
        RttUs => "rtt_us", Gauge;
        /// 1 when the node is not disabled.
        Enabled => "enabled", Gauge;
        /// 1 while the node drains (MI `rtpproxy_drain`).
        Draining => "draining", Gauge;
        /// Calls the node holds for us.
        ActiveCalls => "active_calls", Gauge;
    }
}

impl NodeStat {
    /// The full statistic name for the node printed as `url` by `rtpproxy_show`.
    pub fn full_name(self, url: &str) -> String {
        format!("{}__{url}", self.name())
    }
}

/// A script-level operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Offer (`U`).
    Offer,
    /// Answer (`L`).
    Answer,
    /// Delete (`D`).
    Delete,
}

impl Op {
    /// The counter an outcome of this operation moves.
    pub const fn counter(self, ok: bool) -> Stat {
        match (self, ok) {
            (Op::Offer, true) => Stat::Offers,
            (Op::Offer, false) => Stat::OffersFailed,
            (Op::Answer, true) => Stat::Answers,
            (Op::Answer, false) => Stat::AnswersFailed,
            (Op::Delete, true) => Stat::Deletes,
            (Op::Delete, false) => Stat::DeletesFailed,
        }
    }
}

/// What the control plane reports; the single input of the statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A command's first attempt was sent to a node.
    Sent,
    /// A command was sent again (UDP retransmission).
    Retransmitted,
    /// A command got no usable reply from its node.
    TimedOut,
    /// A node answered `E<code>`.
    RelayError,
    /// A node answered after `rtt_us` (first send to reply, retransmissions included).
    Answered {
        /// Round trip, µs.
        rtt_us: u64,
    },
    /// A command moved to another node of the set.
    FailedOver,
    /// A script-level operation finished.
    Finished {
        /// Which.
        op: Op,
        /// Whether it succeeded.
        ok: bool,
    },
}

impl Event {
    /// The module-wide and per-node counters this event adds one to.
    pub const fn counters(self) -> (Option<Stat>, Option<NodeStat>) {
        match self {
            Event::Sent => (Some(Stat::Commands), Some(NodeStat::Commands)),
            Event::Retransmitted => (Some(Stat::Retransmissions), None),
            Event::TimedOut => (Some(Stat::Timeouts), Some(NodeStat::Timeouts)),
            Event::RelayError => (Some(Stat::RelayErrors), Some(NodeStat::Errors)),
            Event::Answered { .. } => (None, None),
            Event::FailedOver => (Some(Stat::Failovers), None),
            Event::Finished { op, ok } => (Some(op.counter(ok)), None),
        }
    }
}

/// The smoothed round trip after a new sample (RFC 6298's `SRTT`, gain 1/8); the first sample
/// (`prev == 0`) is taken as is.
pub fn smooth_rtt(prev_us: u64, sample_us: u64) -> u64 {
    if prev_us == 0 {
        sample_us.max(1)
    } else {
        (prev_us - prev_us / 8 + sample_us / 8).max(1)
    }
}

/// A node's state as the detailed MI view names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Takes new calls.
    Enabled,
    /// Takes nothing (failed, or disabled by MI).
    Disabled,
    /// Keeps its calls, takes no new ones.
    Draining,
    /// Not probed yet since start or reload (selection already uses it).
    NotProbed,
}

impl NodeState {
    /// The state from the shared flags; disabled wins over draining, draining over not probed.
    pub fn of(disabled: bool, draining: bool, probed: bool) -> Self {
        match (disabled, draining, probed) {
            (true, _, _) => Self::Disabled,
            (false, true, _) => Self::Draining,
            (false, false, false) => Self::NotProbed,
            (false, false, true) => Self::Enabled,
        }
    }

    /// The name shown by MI.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "enabled",
            Self::Disabled => "disabled",
            Self::Draining => "draining",
            Self::NotProbed => "not probed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_indexes_follow_the_table() {
        for (i, s) in Stat::ALL.iter().enumerate() {
            assert_eq!(s.index(), i);
            assert_eq!(Stat::ALL.iter().filter(|t| t.name() == s.name()).count(), 1);
        }
        for (i, s) in NodeStat::ALL.iter().enumerate() {
            assert_eq!(s.index(), i);
            assert!(!s.name().contains("__"));
        }
        assert_eq!(
            NodeStat::RttUs.full_name("udp:127.0.0.1:7722"),
            "rtt_us__udp:127.0.0.1:7722"
        );
    }

    #[test]
    fn the_issue_names_exist_with_their_kinds() {
        let find = |n: &str| Stat::ALL.iter().find(|s| s.name() == n).map(|s| s.kind());
        for n in [
            "offers",
            "answers",
            "deletes",
            "offers_failed",
            "answers_failed",
            "deletes_failed",
            "commands",
            "retransmissions",
            "timeouts",
            "relay_errors",
            "failovers",
        ] {
            assert_eq!(find(n), Some(StatKind::Counter), "{n}");
        }
        assert_eq!(find("active_calls"), Some(StatKind::Gauge));
        assert_eq!(find("enabled_nodes"), Some(StatKind::Gauge));
        let kinds: Vec<_> = NodeStat::ALL.iter().map(|s| (s.name(), s.kind())).collect();
        assert_eq!(
            kinds,
            [
                ("commands", StatKind::Counter),
                ("timeouts", StatKind::Counter),
                ("errors", StatKind::Counter),
                ("rtt_us", StatKind::Gauge),
                ("enabled", StatKind::Gauge),
                ("draining", StatKind::Gauge),
                ("active_calls", StatKind::Gauge),
            ]
        );
    }

    #[test]
    fn events_move_matching_counters() {
        assert_eq!(
            Event::Sent.counters(),
            (Some(Stat::Commands), Some(NodeStat::Commands))
        );
        assert_eq!(
            Event::TimedOut.counters(),
            (Some(Stat::Timeouts), Some(NodeStat::Timeouts))
        );
        assert_eq!(
            Event::RelayError.counters(),
            (Some(Stat::RelayErrors), Some(NodeStat::Errors))
        );
        assert_eq!(Event::Answered { rtt_us: 5 }.counters(), (None, None));
        for op in [Op::Offer, Op::Answer, Op::Delete] {
            let ok = op.counter(true);
            let bad = op.counter(false);
            assert_ne!(ok, bad);
            assert_eq!(bad.name(), format!("{}_failed", ok.name()));
        }
    }

    #[test]
    fn rtt_smoothing() {
        assert_eq!(smooth_rtt(0, 800), 800);
        assert_eq!(smooth_rtt(800, 1600), 900);
        let mut s = 0;
        for _ in 0..200 {
            s = smooth_rtt(s, 400);
        }
        assert!((395..=405).contains(&s));
        assert_eq!(smooth_rtt(0, 0), 1);
    }

    #[test]
    fn node_states() {
        assert_eq!(NodeState::of(true, true, true), NodeState::Disabled);
        assert_eq!(NodeState::of(false, true, false), NodeState::Draining);
        assert_eq!(NodeState::of(false, false, false), NodeState::NotProbed);
        assert_eq!(NodeState::of(false, false, true).as_str(), "enabled");
    }
}
