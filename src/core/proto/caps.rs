//! Capability probing (spec §2.5): `V`, then `VF 20050322`, then ten optional `VF <date>`.
//!
//! [`Probe`] is a small sans-IO state machine: ask it for the next command
//! ([`Probe::poll_command`]), send that command however the caller likes, and hand back the
//! reply body or the transport failure ([`Probe::handle_reply`]). When no command is left,
//! [`Probe::outcome`] says whether the node is usable and with which capabilities.
//!
//! Whether a probe should run at all (MI "disabled forever", recheck time not yet reached) is
//! decided by [`crate::core::select::NodeHealth::probe_gate`].

use std::fmt;

use super::reply::atoi;
use super::Command;

/// The only control-protocol version the module speaks (reply to `V`).
pub const SUPPORTED_PROTOCOL_VERSION: i64 = 20040107;

/// Feature date every usable RTPProxy must report as supported.
pub const REQUIRED_FEATURE_DATE: u32 = 20050322;

/// Optional RTPProxy features the module uses, as a bit set.
///
/// The bit values are those of the C module (`rn_capabilities`); they are visible through MI
/// output only indirectly, but keeping them eases comparison.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Capabilities(u32);

impl Capabilities {
    /// No optional capability.
    pub const NONE: Self = Self(0);
    /// 20071116: RTP re-packetization (`Z<n>`, autobridge `R<addr>`).
    pub const REPACK: Self = Self(1 << 0);
    /// 20081102: codec list in `U`/`L` (`c<pt,…>`); required by stream2uac/uas.
    pub const CODECS: Self = Self(1 << 1);
    /// 20090810: automatic bridging.
    pub const AUTOBRIDGE: Self = Self(1 << 2);
    /// 20081224: timeout notifications (only when RTPProxy runs with `-n`).
    pub const NOTIFY: Self = Self(1 << 3);
    /// 20080403: the `Q` command.
    pub const STATS: Self = Self(1 << 4);
    /// 20150617: wildcard notify targets; keeps the `tcp:` prefix of the notify socket.
    pub const NOTIFY_WILD: Self = Self(1 << 5);
    /// 20150420: `Q` with named counters.
    pub const STATS_EXTRA: Self = Self(1 << 6);
    /// 20170313: per-session TTL change (`t`/`T`; not in upstream RTPProxy).
    pub const TTL_CHANGE: Self = Self(1 << 7);
    /// 20071218: copy/record.
    pub const RECORD: Self = Self(1 << 8);
    /// 20191015: `&&` sub-commands (DTMF catching).
    pub const SUBCOMMAND: Self = Self(1 << 9);

    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// From raw bits; unknown bits are dropped.
    pub const fn from_bits_truncate(bits: u32) -> Self {
        Self(bits & 0x3ff)
    }

    /// Whether every capability of `other` is present.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Adds the capabilities of `other`.
    pub fn insert(&mut self, other: Self) {
        self.0 |= other.0;
    }

    /// Both sets together.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Whether no capability is present.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Names of the present capabilities, in probe order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        OPTIONAL_CAPS
            .iter()
            .filter(move |c| self.contains(c.cap))
            .map(|c| c.name)
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Capabilities(")?;
        for (i, n) in self.names().enumerate() {
            if i > 0 {
                f.write_str("|")?;
            }
            f.write_str(n)?;
        }
        f.write_str(")")
    }
}

/// One optional capability: the `VF` date that announces it, its bit and a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalCap {
    /// The feature date sent in `VF <date>`.
    pub date: u32,
    /// The bit set when RTPProxy answers `1`.
    pub cap: Capabilities,
    /// Short upper-case name, as in the C module.
    pub name: &'static str,
}

/// Optional capabilities in the order the C module probes them (`rtpp_test` in rtpproxy.c).
pub const OPTIONAL_CAPS: [OptionalCap; 10] = [
    OptionalCap {
        date: 20071116,
        cap: Capabilities::REPACK,
        name: "REPACK",
    },
    OptionalCap {
        date: 20081102,
        cap: Capabilities::CODECS,
        name: "CODECS",
    },
    OptionalCap {
        date: 20090810,
        cap: Capabilities::AUTOBRIDGE,
        name: "AUTOBRIDGE",
    },
    OptionalCap {
        date: 20081224,
        cap: Capabilities::NOTIFY,
        name: "NOTIFY",
    },
    OptionalCap {
        date: 20080403,
        cap: Capabilities::STATS,
        name: "STATS",
    },
    OptionalCap {
        date: 20150617,
        cap: Capabilities::NOTIFY_WILD,
        name: "NOTIFY_WILD",
    },
    OptionalCap {
        date: 20150420,
        cap: Capabilities::STATS_EXTRA,
        name: "STATS_EXTRA",
    },
    OptionalCap {
        date: 20170313,
        cap: Capabilities::TTL_CHANGE,
        name: "TTL_CHANGE",
    },
    OptionalCap {
        date: 20071218,
        cap: Capabilities::RECORD,
        name: "RECORD",
    },
    OptionalCap {
        date: 20191015,
        cap: Capabilities::SUBCOMMAND,
        name: "SUBCOMMAND",
    },
];

/// Why a probe declared the node unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeFailure {
    /// `V` got no reply (transport failure).
    VersionNoReply,
    /// `V` was answered with something other than `20040107` (`atoi` of the reply is given;
    /// an `E` reply reads as 0).
    UnsupportedVersion(i64),
    /// `VF 20050322` got no reply (transport failure after a good `V`).
    RequiredFeatureNoReply,
    /// `VF 20050322` was answered with something other than `1`.
    RequiredFeatureMissing,
}

impl ProbeFailure {
    /// Whether the C module raises `E_RTPPROXY_STATUS inactive` from the probe itself: it does
    /// whenever `V` was answered (a transport failure raises its own event in any case).
    pub fn raises_inactive_event(&self) -> bool {
        !matches!(self, Self::VersionNoReply)
    }
}

impl fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::VersionNoReply => f.write_str("no reply to the version query"),
            Self::UnsupportedVersion(v) => {
                write!(
                    f,
                    "unsupported protocol version {v} (need {SUPPORTED_PROTOCOL_VERSION})"
                )
            }
            Self::RequiredFeatureNoReply => f.write_str("relay went down during the version query"),
            Self::RequiredFeatureMissing => {
                write!(
                    f,
                    "required protocol feature {REQUIRED_FEATURE_DATE} not supported"
                )
            }
        }
    }
}

/// The result of a finished probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The node speaks the protocol; these optional capabilities were reported. The C module
    /// only ever *adds* them to the node (quirk: never cleared until restart).
    Enabled(Capabilities),
    /// The node must stay (or become) disabled.
    Failed(ProbeFailure),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Version,
    Required,
    Optional(usize),
    Done,
}

/// One capability probe of one node, sans-IO.
///
/// Mirrors `rtpp_test`/`rtpp_checkcap` in rtpproxy.c once the decision to probe was taken:
/// `V` must read (by `atoi`) as 20040107, `VF 20050322` must read as 1, and each optional
/// `VF` that reads as 1 adds its capability. A transport failure on an *optional* `VF` only
/// leaves that capability out and the probe goes on, as in the C module;
/// [`Probe::optional_transport_failures`] lets a caller be stricter.
#[derive(Debug, Clone)]
pub struct Probe {
    step: Step,
    caps: Capabilities,
    optional_failures: u32,
    outcome: Option<ProbeOutcome>,
}

impl Default for Probe {
    fn default() -> Self {
        Self::new()
    }
}

impl Probe {
    /// A probe that has sent nothing yet.
    pub fn new() -> Self {
        Self {
            step: Step::Version,
            caps: Capabilities::NONE,
            optional_failures: 0,
            outcome: None,
        }
    }

    /// The command to send next, or `None` once the probe is finished.
    ///
    /// Call after [`Probe::new`] and after every [`Probe::handle_reply`].
    pub fn poll_command(&self) -> Option<Command> {
        match self.step {
            Step::Version => Some(Command::version()),
            Step::Required => Some(Command::version_feature(REQUIRED_FEATURE_DATE)),
            Step::Optional(i) => Some(Command::version_feature(OPTIONAL_CAPS[i].date)),
            Step::Done => None,
        }
    }

    /// Feeds the outcome of the command last returned by [`Probe::poll_command`]: the reply
    /// body (cookie and framing removed), or `None` if the command failed at the transport
    /// level. Ignored once the probe is finished.
    pub fn handle_reply(&mut self, reply: Option<&[u8]>) {
        match self.step {
            Step::Version => match reply {
                None => self.fail(ProbeFailure::VersionNoReply),
                Some(r) => {
                    let v = atoi(r);
                    if v == SUPPORTED_PROTOCOL_VERSION {
                        self.step = Step::Required;
                    } else {
                        self.fail(ProbeFailure::UnsupportedVersion(v));
                    }
                }
            },
            Step::Required => match reply {
                None => self.fail(ProbeFailure::RequiredFeatureNoReply),
                Some(r) if vf_says_yes(r) => self.step = Step::Optional(0),
                Some(_) => self.fail(ProbeFailure::RequiredFeatureMissing),
            },
            Step::Optional(i) => {
                match reply {
                    None => self.optional_failures += 1,
                    Some(r) if vf_says_yes(r) => self.caps.insert(OPTIONAL_CAPS[i].cap),
                    Some(_) => {}
                }
                if i + 1 < OPTIONAL_CAPS.len() {
                    self.step = Step::Optional(i + 1);
                } else {
                    self.step = Step::Done;
                    self.outcome = Some(ProbeOutcome::Enabled(self.caps));
                }
            }
            Step::Done => {}
        }
    }

    /// The result, once [`Probe::poll_command`] returns `None`.
    pub fn outcome(&self) -> Option<&ProbeOutcome> {
        self.outcome.as_ref()
    }

    /// How many optional `VF` commands failed at the transport level.
    pub fn optional_transport_failures(&self) -> u32 {
        self.optional_failures
    }

    /// Runs a whole probe through `send`, which returns the reply body of one command or
    /// `None` on a transport failure. Convenience for blocking callers.
    pub fn run(mut send: impl FnMut(&Command) -> Option<Vec<u8>>) -> (ProbeOutcome, u32) {
        let mut p = Self::new();
        while let Some(cmd) = p.poll_command() {
            let r = send(&cmd);
            p.handle_reply(r.as_deref());
        }
        let out = p
            .outcome
            .clone()
            .unwrap_or(ProbeOutcome::Failed(ProbeFailure::VersionNoReply));
        (out, p.optional_failures)
    }

    fn fail(&mut self, why: ProbeFailure) {
        self.step = Step::Done;
        self.outcome = Some(ProbeOutcome::Failed(why));
    }
}

/// The C module's `VF` rule: a reply starting with `E` is "no", else `atoi(reply) == 1`.
fn vf_says_yes(reply: &[u8]) -> bool {
    reply.first() != Some(&b'E') && atoi(reply) == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(replies: &[Option<&str>]) -> (ProbeOutcome, Vec<Vec<u8>>, u32) {
        let mut sent = Vec::new();
        let mut it = replies.iter();
        let (out, fails) = Probe::run(|cmd| {
            sent.push(cmd.as_bytes().to_vec());
            it.next().copied().flatten().map(|s| s.as_bytes().to_vec())
        });
        (out, sent, fails)
    }

    #[test]
    fn full_probe_order_and_bits() {
        let mut replies = vec![Some("20040107\n"), Some("1\n")];
        // REPACK yes, CODECS yes, AUTOBRIDGE no, NOTIFY yes, STATS E1, NOTIFY_WILD yes,
        // STATS_EXTRA 0, TTL_CHANGE 0, RECORD yes, SUBCOMMAND yes
        replies.extend(
            ["1", "1", "0", "1", "E1", "1", "0", "0", "1", "1"]
                .iter()
                .map(|s| Some(*s)),
        );
        let (out, sent, fails) = script(&replies);
        let sent: Vec<String> = sent
            .iter()
            .map(|s| String::from_utf8(s.clone()).unwrap())
            .collect();
        assert_eq!(
            sent,
            [
                "V",
                "VF 20050322",
                "VF 20071116",
                "VF 20081102",
                "VF 20090810",
                "VF 20081224",
                "VF 20080403",
                "VF 20150617",
                "VF 20150420",
                "VF 20170313",
                "VF 20071218",
                "VF 20191015"
            ]
        );
        let want = Capabilities::REPACK
            .union(Capabilities::CODECS)
            .union(Capabilities::NOTIFY)
            .union(Capabilities::NOTIFY_WILD)
            .union(Capabilities::RECORD)
            .union(Capabilities::SUBCOMMAND);
        assert_eq!(out, ProbeOutcome::Enabled(want));
        assert_eq!(want.bits(), 0b11_0010_1011);
        assert_eq!(fails, 0);
    }

    #[test]
    fn failures() {
        assert_eq!(
            script(&[None]).0,
            ProbeOutcome::Failed(ProbeFailure::VersionNoReply)
        );
        assert_eq!(
            script(&[Some("E0\n")]).0,
            ProbeOutcome::Failed(ProbeFailure::UnsupportedVersion(0))
        );
        assert_eq!(
            script(&[Some("20040108")]).0,
            ProbeOutcome::Failed(ProbeFailure::UnsupportedVersion(20040108))
        );
        let (out, sent, _) = script(&[Some("20040107"), None]);
        assert_eq!(
            out,
            ProbeOutcome::Failed(ProbeFailure::RequiredFeatureNoReply)
        );
        assert_eq!(sent.len(), 2);
        assert_eq!(
            script(&[Some("20040107"), Some("0")]).0,
            ProbeOutcome::Failed(ProbeFailure::RequiredFeatureMissing)
        );
        assert_eq!(
            script(&[Some("20040107"), Some("E1")]).0,
            ProbeOutcome::Failed(ProbeFailure::RequiredFeatureMissing)
        );
        assert!(!ProbeFailure::VersionNoReply.raises_inactive_event());
        assert!(ProbeFailure::RequiredFeatureNoReply.raises_inactive_event());
    }

    #[test]
    fn atoi_rules_like_the_c_module() {
        // trailing text after the number is accepted, as atoi does
        let (out, _, _) = script(&[Some("20040107 extra"), Some("1 yes")]);
        assert_eq!(out, ProbeOutcome::Enabled(Capabilities::NONE));
    }

    #[test]
    fn optional_transport_failures_do_not_fail_the_probe() {
        let mut replies = vec![Some("20040107"), Some("1"), None, Some("1")];
        replies.extend(std::iter::repeat_n(None, 8));
        let (out, sent, fails) = script(&replies);
        assert_eq!(out, ProbeOutcome::Enabled(Capabilities::CODECS));
        assert_eq!(sent.len(), 12);
        assert_eq!(fails, 9);
    }

    #[test]
    fn capability_set_helpers() {
        let c = Capabilities::from_bits_truncate(u32::MAX);
        assert_eq!(c.names().count(), 10);
        assert_eq!(
            format!("{:?}", Capabilities::STATS.union(Capabilities::REPACK)),
            "Capabilities(REPACK|STATS)"
        );
        assert!(Capabilities::NONE.is_empty());
        for (i, c) in OPTIONAL_CAPS.iter().enumerate() {
            assert_eq!(c.cap.bits(), 1 << i);
        }
    }
}
