//! Node selection and per-node health (spec §2.3, §2.4, §9.1).
//!
//! Layer: `core`; pure functions over plain values. Selection never probes and never does
//! I/O: a disabled node is skipped, and bringing it back is the job of a background prober
//! that asks [`NodeHealth::is_due_for_recheck`]. (The C module probes inline, inside the SIP
//! worker that is selecting; we do not.)
//!
//! Times are OpenSIPS "ticks": whole seconds since start, as `u32`.
#![warn(missing_docs)]

/// `recheck_at` value meaning "disabled forever" (set by MI `rtpproxy_enable <url> 0`).
pub const RECHECK_FOREVER: u32 = u32::MAX;

/// The 8-bit hash of a Call-ID used for node choice: the byte sum masked with `0xFF`.
///
/// The C module adds the bytes as the platform `char` (signed on x86-64, unsigned on aarch64)
/// into an unsigned accumulator and then masks with `0xFF`. Both readings agree after the mask,
/// because a signed byte differs from its unsigned value by 256 and `2^32` is a multiple of
/// 256; so the hash is the same for any Call-ID on either platform. It is computed here with
/// signed bytes, the x86-64 reading.
pub fn call_id_hash(call_id: &[u8]) -> u8 {
    let sum = call_id
        .iter()
        .fold(0u32, |acc, &b| acc.wrapping_add(b as i8 as i32 as u32));
    (sum & 0xFF) as u8
}

/// Chooses a node of a set for `call_id`, as `select_rtpp_node` in rtpproxy.c does, minus the
/// inline probing: `nodes` gives `(weight, enabled)` per node in definition order; the result
/// is an index into `nodes`, or `None` when no node is enabled (the caller logs "no available
/// proxies" and fails).
///
/// The rule:
/// - one node: it, if enabled;
/// - else `cut = hash % (sum of all weights)`, walking the nodes in order and subtracting each
///   weight until `cut < weight`. If that node is enabled, it is chosen. So enabling or
///   disabling a node does not move calls that hash to the other nodes;
/// - if it is disabled, `cut = hash % (sum of enabled weights)` and the walk restarts, now
///   skipping disabled nodes (they neither match nor take part in the subtraction);
/// - when every enabled node has weight 0, `cut = -1`: the first enabled node is chosen.
///   Weight-0 nodes are therefore only used when no enabled node has a positive weight.
///
/// Weights are summed in 64 bits; the C module sums in 32 bits, which only differs for weight
/// totals beyond `i32::MAX`.
pub fn select_node(nodes: &[(u32, bool)], call_id: &[u8]) -> Option<usize> {
    if !nodes.iter().any(|&(_, enabled)| enabled) {
        return None;
    }
    if nodes.len() == 1 {
        return Some(0);
    }
    let hash = i64::from(call_id_hash(call_id));
    let total: i64 = nodes.iter().map(|&(w, _)| i64::from(w)).sum();
    let active: i64 = nodes
        .iter()
        .filter(|n| n.1)
        .map(|&(w, _)| i64::from(w))
        .sum();
    // `active > 0` implies `total > 0`
    let mut cut = if active > 0 { hash % total } else { -1 };
    let mut redistributed = false;
    let mut i = 0;
    while i < nodes.len() {
        let (weight, enabled) = nodes[i];
        let weight = i64::from(weight);
        if cut < weight {
            if enabled {
                return Some(i);
            }
            if !redistributed {
                cut = if active > 0 { hash % active } else { -1 };
                redistributed = true;
                i = 0;
                continue;
            }
        }
        if enabled || !redistributed {
            cut -= weight;
        }
        i += 1;
    }
    None
}

/// The deadline `now + disable_tout`, saturating.
///
/// A negative `disable_tout` gives a deadline in the past (re-probe at every chance), which is
/// what the C module ends up doing too (quirk, §2.4); it never yields [`RECHECK_FOREVER`].
pub fn recheck_deadline(now: u32, disable_tout: i32) -> u32 {
    let d = if disable_tout >= 0 {
        now.saturating_add(disable_tout.unsigned_abs())
    } else {
        now.saturating_sub(disable_tout.unsigned_abs())
    };
    d.min(RECHECK_FOREVER - 1)
}

/// What `rtpproxy_enable <url> <value>` asks for (spec §9.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MiEnable {
    /// `0`: disabled forever; never probed, not even when the whole set is down.
    DisableForever,
    /// `2`: disabled, re-probed after `rtpproxy_disable_tout`.
    DisableAndRecheck,
    /// Anything else (`1`, `-1`, `5`…): enabled at once, without a probe.
    Enable,
}

impl MiEnable {
    /// Reads the MI `enable` value.
    pub fn from_value(value: i64) -> Self {
        match value {
            0 => Self::DisableForever,
            2 => Self::DisableAndRecheck,
            _ => Self::Enable,
        }
    }
}

/// Whether a probe should run, per the gate at the top of `rtpp_test` in rtpproxy.c.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeGate {
    /// Do not probe; the node stays as it is (`disabled` tells which way).
    Skip {
        /// The node's state, unchanged.
        disabled: bool,
    },
    /// Send `V`/`VF` now.
    Run,
}

/// The shared health of one node: enabled or not, and when it may be probed again.
///
/// A plain value: the host keeps it in shared memory as atomics and copies it in and out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeHealth {
    /// The node takes no new commands.
    pub disabled: bool,
    /// Tick at or after which a disabled node may be probed; [`RECHECK_FOREVER`] = never;
    /// 0 for an enabled node.
    pub recheck_at: u32,
}

impl NodeHealth {
    /// An enabled node.
    pub const ENABLED: Self = Self {
        disabled: false,
        recheck_at: 0,
    };

    /// Whether selection may choose the node.
    pub fn is_enabled(&self) -> bool {
        !self.disabled
    }

    /// Whether MI disabled the node forever.
    pub fn is_disabled_forever(&self) -> bool {
        self.disabled && self.recheck_at == RECHECK_FOREVER
    }

    /// A command to the node failed at the transport level (connect, send, receive, timeout,
    /// bad framing): disable it until `now + disable_tout`. Applies even when already disabled
    /// (as `badproxy` in rtpproxy.c does), except that it does not undo an MI "forever".
    pub fn on_transport_failure(&mut self, now: u32, disable_tout: i32) {
        if self.is_disabled_forever() {
            return;
        }
        self.disabled = true;
        self.recheck_at = recheck_deadline(now, disable_tout);
    }

    /// A probe succeeded: the node is enabled again.
    pub fn on_probe_success(&mut self) {
        if self.is_disabled_forever() {
            return;
        }
        *self = Self::ENABLED;
    }

    /// A probe failed: the node stays (or becomes) disabled until `now + disable_tout`.
    pub fn on_probe_failure(&mut self, now: u32, disable_tout: i32) {
        self.on_transport_failure(now, disable_tout);
    }

    /// Applies MI `rtpproxy_enable`; returns whether `disabled` changed (the host raises the
    /// status event then).
    pub fn apply_mi_enable(&mut self, what: MiEnable, now: u32, disable_tout: i32) -> bool {
        let was = self.disabled;
        *self = match what {
            MiEnable::DisableForever => Self {
                disabled: true,
                recheck_at: RECHECK_FOREVER,
            },
            MiEnable::DisableAndRecheck => Self {
                disabled: true,
                recheck_at: recheck_deadline(now, disable_tout),
            },
            MiEnable::Enable => Self::ENABLED,
        };
        was != self.disabled
    }

    /// Whether a background prober should probe this node now: disabled, not forever, and its
    /// recheck time has come.
    pub fn is_due_for_recheck(&self, now: u32) -> bool {
        self.disabled && self.recheck_at != RECHECK_FOREVER && self.recheck_at <= now
    }

    /// The gate of `rtpp_test`: never probe a node disabled forever; without `force`, an
    /// enabled node needs no probe and a disabled one waits for its recheck time; with `force`
    /// (start-up, or every node of the set down) probe regardless of the recheck time.
    pub fn probe_gate(&self, now: u32, force: bool) -> ProbeGate {
        if self.recheck_at == RECHECK_FOREVER && self.disabled {
            return ProbeGate::Skip { disabled: true };
        }
        if !force {
            if !self.disabled {
                return ProbeGate::Skip { disabled: false };
            }
            if self.recheck_at > now {
                return ProbeGate::Skip { disabled: true };
            }
        }
        ProbeGate::Run
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALL_IDS: [&[u8]; 7] = [
        b"abc",                 // 97+98+99 = 294 -> 38
        b"a84b4c76e66710@pc33", // -> 21
        b"1-12345@192.0.2.1",   // -> 86
        "\u{e9}@x".as_bytes(),  // C3 A9 40 78: signed -61-87+64+120 = 36; unsigned 548 & 0xFF = 36
        b"\xff\x80\x01",        // signed -1-128+1 = -128 -> 0x80; unsigned 384 & 0xFF = 128
        b"",                    // 0
        b"Z",                   // 90
    ];

    #[test]
    fn hash_values() {
        let got: Vec<u8> = CALL_IDS.iter().map(|c| call_id_hash(c)).collect();
        assert_eq!(got, [38, 21, 86, 36, 128, 0, 90]);
        // the unsigned reading gives the same value for every input
        for c in CALL_IDS {
            let unsigned = c.iter().map(|&b| u32::from(b)).sum::<u32>() & 0xFF;
            assert_eq!(u32::from(call_id_hash(c)), unsigned);
        }
    }

    fn pick_all(nodes: &[(u32, bool)]) -> Vec<Option<usize>> {
        CALL_IDS.iter().map(|c| select_node(nodes, c)).collect()
    }

    #[test]
    fn c_mapping_table() {
        let s = Some;
        // abc: 38 % 3 = 2; a84b..: 21 % 3 = 0; 86 % 3 = 2; 36 % 3 = 0; 128 % 3 = 2; 0; 90 % 3 = 0
        assert_eq!(
            pick_all(&[(1, true), (1, true), (1, true)]),
            [s(2), s(0), s(2), s(0), s(2), s(0), s(0)]
        );
        // total 6: 38 % 6 = 2 -> past node 0 (w1), cut 1 < 2 -> node 1; 21 % 6 = 3 -> node 2
        assert_eq!(
            pick_all(&[(1, true), (2, true), (3, true)]),
            [s(1), s(2), s(1), s(0), s(1), s(0), s(0)]
        );
        // node 1 down: only calls that landed on it move (redistributed with % 4 over 0 and 2)
        assert_eq!(
            pick_all(&[(1, true), (2, false), (3, true)]),
            [s(2), s(2), s(2), s(0), s(0), s(0), s(0)]
        );
        // first node down, the rest share by % 2
        assert_eq!(
            pick_all(&[(2, false), (1, true), (1, true)]),
            [s(1), s(2), s(1), s(1), s(1), s(1), s(1)]
        );
    }

    #[test]
    fn weight_zero_nodes_are_backups() {
        let s = Some;
        assert_eq!(pick_all(&[(1, true), (0, true)]), vec![s(0); 7]);
        // primary down: every enabled weight is 0 -> cut = -1 -> first enabled node
        assert_eq!(pick_all(&[(1, false), (0, true), (0, true)]), vec![s(1); 7]);
        assert_eq!(pick_all(&[(0, false), (0, true)]), vec![s(1); 7]);
        assert_eq!(pick_all(&[(0, true), (0, true)]), vec![s(0); 7]);
    }

    #[test]
    fn single_node_and_all_down() {
        assert_eq!(select_node(&[(0, true)], b"x"), Some(0));
        assert_eq!(select_node(&[(5, false)], b"x"), None);
        assert_eq!(select_node(&[(1, false), (3, false)], b"x"), None);
        assert_eq!(select_node(&[], b"x"), None);
    }

    #[test]
    fn distribution_follows_weights() {
        let nodes = [(1, true), (3, true), (0, true), (4, true)];
        let mut counts = [0u32; 4];
        for h in 0..=255u8 {
            counts[select_node(&nodes, &[h]).unwrap()] += 1;
        }
        // 256 hashes over a total weight of 8: exactly 32 per weight unit
        assert_eq!(counts, [32, 96, 0, 128]);
        // a disabled node's share goes to the others; nobody else's calls move
        let down = [(1, true), (3, false), (0, true), (4, true)];
        for h in 0..=255u8 {
            let before = select_node(&nodes, &[h]).unwrap();
            let after = select_node(&down, &[h]).unwrap();
            assert_ne!(after, 1);
            assert_ne!(after, 2);
            if before != 1 {
                assert_eq!(before, after);
            }
        }
    }

    #[test]
    fn health_transitions() {
        let mut h = NodeHealth::ENABLED;
        assert!(h.is_enabled());
        assert_eq!(h.probe_gate(10, false), ProbeGate::Skip { disabled: false });
        h.on_transport_failure(100, 60);
        assert_eq!(
            h,
            NodeHealth {
                disabled: true,
                recheck_at: 160
            }
        );
        assert!(!h.is_due_for_recheck(159));
        assert!(h.is_due_for_recheck(160));
        assert_eq!(h.probe_gate(159, false), ProbeGate::Skip { disabled: true });
        assert_eq!(h.probe_gate(159, true), ProbeGate::Run);
        assert_eq!(h.probe_gate(160, false), ProbeGate::Run);
        h.on_probe_failure(160, 60);
        assert_eq!(h.recheck_at, 220);
        h.on_probe_success();
        assert_eq!(h, NodeHealth::ENABLED);
        // disable_tout 0 and negative: due at once
        h.on_transport_failure(100, 0);
        assert!(h.is_due_for_recheck(100));
        h.on_transport_failure(100, -5);
        assert_eq!(h.recheck_at, 95);
        assert!(h.is_due_for_recheck(100));
        h.on_transport_failure(3, -5);
        assert_eq!(h.recheck_at, 0);
        h.on_transport_failure(u32::MAX - 1, 100);
        assert_eq!(h.recheck_at, RECHECK_FOREVER - 1);
    }

    #[test]
    fn mi_enable_semantics() {
        let mut h = NodeHealth::ENABLED;
        assert!(h.apply_mi_enable(MiEnable::from_value(0), 50, 60));
        assert!(h.is_disabled_forever());
        assert!(!h.is_due_for_recheck(u32::MAX));
        assert_eq!(
            h.probe_gate(u32::MAX, true),
            ProbeGate::Skip { disabled: true }
        );
        // transport failures and probes do not undo "forever"
        h.on_transport_failure(70, 60);
        h.on_probe_success();
        assert!(h.is_disabled_forever());
        assert!(!h.apply_mi_enable(MiEnable::from_value(2), 80, 60));
        assert_eq!(
            h,
            NodeHealth {
                disabled: true,
                recheck_at: 140
            }
        );
        assert!(h.apply_mi_enable(MiEnable::from_value(1), 90, 60));
        assert_eq!(h, NodeHealth::ENABLED);
        for v in [-1, 5, 1] {
            assert_eq!(MiEnable::from_value(v), MiEnable::Enable);
        }
        assert!(!h.apply_mi_enable(MiEnable::Enable, 90, 60));
    }
}
