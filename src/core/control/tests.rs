//! Engine tests: scripted drivers over fake node tables.
//!
//! Each case is a list of what the relays do; the driver applies health changes to its own
//! table, as the host does to shared memory, and the trace of steps is compared.

use super::*;

/// What a node does with one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Does {
    /// Answers at once.
    Answer,
    /// Loses `n` attempts, then answers.
    AnswerAfter(u32),
    /// Never answers (the exchange times out after `retr` attempts).
    Hang,
    /// Answers `E<code>` (a relay failure for the caller).
    Error(u32),
    /// Cannot be reached.
    Refuse,
    /// Answers that it does not know the call (`E50` to a delete).
    NotHere,
}

/// Runs a command against `does` (one behaviour per node) with `retr` attempts per exchange.
/// `out_by_other` marks nodes another process takes out as soon as they lose an attempt.
fn drive(
    nodes: &mut [NodeInput],
    does: &[Does],
    out_by_other: &[usize],
    route: Route,
    failover: Failover,
    retr: u32,
) -> (Result<usize, CommandError>, Vec<String>, Vec<Event>) {
    let mut run = CommandRun::new(OpKind::Offer, route, failover);
    let mut trace = Vec::new();
    let mut events = Vec::new();
    for _ in 0..100 {
        match run.poll(nodes, b"abc") {
            Step::Health { node, change } => {
                trace.push(format!("{change:?}@{node}"));
                nodes[node].enabled = matches!(change, HealthChange::PutBack);
            }
            Step::Start { node } => {
                trace.push(format!("start@{node}"));
                if does[node] == Does::Refuse {
                    run.on_reply(node, Answer::Fault(NodeFault::Transport("refused".into())));
                    continue;
                }
                run.on_started(node);
                let lost = match does[node] {
                    Does::AnswerAfter(n) => n,
                    Does::Hang => u32::MAX,
                    _ => 0,
                };
                let mut attempts = 1;
                let mut abandoned = false;
                while lost >= attempts {
                    if attempts == retr {
                        run.on_reply(node, Answer::Fault(NodeFault::Timeout));
                        abandoned = true;
                        break;
                    }
                    if out_by_other.contains(&node) {
                        nodes[node].enabled = false;
                    }
                    let out = !nodes[node].enabled;
                    if !run.on_attempt_lost(node, out) {
                        trace.push(format!("abandon@{node}"));
                        abandoned = true;
                        break;
                    }
                    // the driver applies queued health changes before resending, and says
                    // whether its take-out disabled the node
                    let mut go_on = true;
                    while let Step::Health { node, change } = run.poll(nodes, b"abc") {
                        trace.push(format!("{change:?}@{node}"));
                        let was_up = nodes[node].enabled;
                        nodes[node].enabled = matches!(change, HealthChange::PutBack);
                        if matches!(change, HealthChange::TakeOut { .. }) {
                            go_on &= run.on_taken_out(node, was_up);
                        }
                    }
                    if !go_on {
                        trace.push(format!("second@{node}"));
                        break;
                    }
                    attempts += 1;
                }
                if abandoned {
                    continue;
                }
                match does[node] {
                    Does::NotHere => run.on_reply(node, Answer::NotHere),
                    Does::Error(code) => {
                        run.on_reply(node, Answer::Fault(NodeFault::RelayError(code)))
                    }
                    _ => run.on_reply(node, Answer::Reply { rtt_us: 1 }),
                }
            }
            Step::Wait { node } => panic!("wait on {node} after the exchange was reported"),
            Step::Done(r) => {
                events.extend(run.take_events());
                return (r, trace, events);
            }
        }
        events.extend(run.take_events());
    }
    panic!("no result")
}

fn up(n: usize) -> Vec<NodeInput> {
    vec![NodeInput::up(1); n]
}

const CALL: Route = Route::Call { own: None };

#[test]
fn choice_table() {
    let d = NodeInput {
        draining: true,
        ..NodeInput::up(1)
    };
    let off = NodeInput {
        enabled: false,
        ..NodeInput::up(1)
    };
    let u = NodeInput::up(1);
    // "abc" hashes to 38: 38 % 3 = 2, 38 % 2 = 0
    type Case<'a> = (&'a [NodeInput], Option<usize>, &'a [usize], Option<usize>);
    let cases: &[Case] = &[
        (&[u, u, u], None, &[], Some(2)),
        (&[u, u, u], Some(0), &[], Some(0)),   // own node first
        (&[u, off, u], Some(1), &[], Some(2)), // own node down: hash
        (&[u, u, d], None, &[], Some(0)),      // draining takes no new call
        (&[u, u, d], Some(2), &[], Some(2)),   // but keeps its own
        (&[u, u, u], Some(0), &[0], Some(2)),  // own node failed in this command
        (&[u, u, u], None, &[2], Some(0)),     // failed node skipped, redistributed
        (&[d, d], None, &[], None),
        (&[off, off], Some(0), &[], None),
    ];
    for (nodes, own, excluded, want) in cases {
        assert_eq!(
            choose(nodes, b"abc", *own, excluded),
            *want,
            "{nodes:?} own {own:?} excluded {excluded:?}"
        );
    }
}

#[test]
fn weight_zero_backup_is_used_when_primaries_fail() {
    let mut nodes = vec![NodeInput::up(1), NodeInput::up(0)];
    let (r, trace, _) = drive(
        &mut nodes,
        &[Does::Refuse, Does::Answer],
        &[],
        CALL,
        Failover::NextNode,
        5,
    );
    assert_eq!(r, Ok(1));
    assert_eq!(trace[0], "start@0");
    assert_eq!(trace.last().unwrap(), "start@1");
}

#[test]
fn command_table() {
    use Does::*;
    type Case = (
        &'static str,
        Vec<Does>,
        &'static [usize],
        Route,
        Failover,
        Result<usize, CommandError>,
        &'static [&'static str],
    );
    let cases: Vec<Case> = vec![
        (
            "answers at once",
            vec![Answer, Answer, Answer],
            &[],
            CALL,
            Failover::NextNode,
            Ok(2),
            &["start@2"],
        ),
        (
            "hang: out at the first lost attempt, failover after the last",
            vec![Answer, Answer, Hang],
            &[],
            CALL,
            Failover::NextNode,
            Ok(0),
            &["start@2", "out@2", "out@2", "start@0"],
        ),
        (
            "answered a retransmission: back in",
            vec![Answer, Answer, AnswerAfter(2)],
            &[],
            CALL,
            Failover::NextNode,
            Ok(2),
            &["start@2", "out@2", "back@2"],
        ),
        (
            "another process took it out: give up at once",
            vec![Answer, Answer, Hang],
            &[2],
            CALL,
            Failover::NextNode,
            Ok(0),
            &["start@2", "abandon@2", "start@0"],
        ),
        (
            "E reply counted as relay failure: failover",
            vec![Answer, Answer, Error(7)],
            &[],
            CALL,
            Failover::NextNode,
            Ok(0),
            &["start@2", "out@2", "start@0"],
        ),
        (
            "refused, no failover",
            vec![Answer, Answer, Refuse],
            &[],
            CALL,
            Failover::Never,
            Err(CommandError::Failed(NodeFault::Transport("refused".into()))),
            &["start@2", "out@2"],
        ),
        (
            "every node fails",
            vec![Refuse, Refuse, Refuse],
            &[],
            CALL,
            Failover::NextNode,
            Err(CommandError::Failed(NodeFault::Transport("refused".into()))),
            &["start@2", "out@2", "start@0", "out@0", "start@1", "out@1"],
        ),
        (
            "own node first",
            vec![Answer, Answer, Answer],
            &[],
            Route::Call { own: Some(1) },
            Failover::NextNode,
            Ok(1),
            &["start@1"],
        ),
        (
            "pinned node never fails over",
            vec![Answer, Refuse, Answer],
            &[],
            Route::Pinned(1),
            Failover::NextNode,
            Err(CommandError::Failed(NodeFault::Transport("refused".into()))),
            &["start@1", "out@1"],
        ),
    ];
    for (name, does, others, route, failover, want, want_trace) in cases {
        let mut nodes = up(does.len());
        let (r, trace, _) = drive(&mut nodes, &does, others, route, failover, 3);
        let trace: Vec<String> = trace
            .iter()
            .map(|t| {
                if t.starts_with("TakeOut") {
                    format!("out@{}", t.rsplit('@').next().unwrap())
                } else if t.starts_with("PutBack") {
                    format!("back@{}", t.rsplit('@').next().unwrap())
                } else {
                    t.clone()
                }
            })
            .collect();
        assert_eq!(r, want, "{name}");
        assert_eq!(trace, *want_trace, "{name}");
    }
}

#[test]
fn all_down_is_no_node_and_pinned_down_too() {
    let mut nodes = vec![
        NodeInput {
            weight: 1,
            enabled: false,
            draining: false,
            probed: true,
        };
        2
    ];
    let (r, trace, ev) = drive(
        &mut nodes,
        &[Does::Answer; 2],
        &[],
        CALL,
        Failover::NextNode,
        3,
    );
    assert_eq!(r, Err(CommandError::NoNode));
    assert!(trace.is_empty());
    assert_eq!(
        ev,
        vec![Event::Finished {
            op: OpKind::Offer,
            node: None,
            ok: false
        }]
    );
    let (r, _, _) = drive(
        &mut nodes,
        &[Does::Answer; 2],
        &[],
        Route::Pinned(0),
        Failover::Never,
        3,
    );
    assert_eq!(r, Err(CommandError::NoNode));
}

#[test]
fn events_record_the_life_of_a_command() {
    let mut nodes = up(3);
    let (_, _, ev) = drive(
        &mut nodes,
        &[Does::Answer, Does::Answer, Does::Hang],
        &[],
        CALL,
        Failover::NextNode,
        3,
    );
    let op = OpKind::Offer;
    assert_eq!(
        ev,
        vec![
            Event::FirstSend { op, node: 2 },
            Event::Retransmit { op, node: 2 },
            Event::Retransmit { op, node: 2 },
            Event::NodeTimeout { op, node: 2 },
            Event::Failover { op, from: 2, to: 0 },
            Event::FirstSend { op, node: 0 },
            Event::Answered {
                op,
                node: 0,
                rtt_us: 1
            },
            Event::Finished {
                op,
                node: Some(0),
                ok: true
            },
        ]
    );
    let mut nodes = up(3);
    let (_, _, ev) = drive(
        &mut nodes,
        &[Does::Answer, Does::Answer, Does::Error(5)],
        &[],
        CALL,
        Failover::NextNode,
        3,
    );
    assert!(ev.contains(&Event::RelayError {
        op,
        node: 2,
        code: 5
    }));
}

#[test]
fn op_kinds_by_letter() {
    let got: Vec<OpKind> = b"ULDPSRCNQVx"
        .iter()
        .map(|&l| OpKind::of_letter(l))
        .collect();
    use OpKind::*;
    assert_eq!(
        got,
        [Offer, Answer, Delete, Play, StopPlay, Record, Copy, StopCopy, Query, Version, Other]
    );
}

#[test]
fn late_reports_are_ignored() {
    let mut run = CommandRun::new(OpKind::Delete, CALL, Failover::Never);
    let nodes = up(1);
    assert_eq!(run.poll(&nodes, b"x"), Step::Start { node: 0 });
    run.on_started(0);
    run.on_reply(0, Answer::Reply { rtt_us: 1 });
    // a second report for the same exchange changes nothing
    run.on_reply(0, Answer::Fault(NodeFault::Timeout));
    assert!(!run.on_attempt_lost(0, false));
    assert_eq!(run.poll(&nodes, b"x"), Step::Done(Ok(0)));
}

#[test]
fn a_node_never_probed_is_given_up_at_its_first_lost_attempt() {
    let mut nodes = up(3);
    nodes[2].probed = false;
    let (r, trace, ev) = drive(
        &mut nodes,
        &[Does::Answer, Does::Answer, Does::Hang],
        &[],
        CALL,
        Failover::NextNode,
        5,
    );
    assert_eq!(r, Ok(0));
    assert_eq!(trace.len(), 4, "{trace:?}");
    assert_eq!(trace[1], "abandon@2");
    assert!(trace[2].starts_with("TakeOut") && trace[2].ends_with("@2"));
    assert_eq!(trace[3], "start@0");
    assert!(!ev.iter().any(|e| matches!(e, Event::Retransmit { .. })));
}

/// Applies `run`'s pending health changes to `table` (the shared health), reporting each
/// take-out's result as the host's driver does; returns whether `run` stays on its node.
fn apply_shared(run: &mut CommandRun, table: &mut [NodeInput]) -> bool {
    let mut go_on = true;
    while let Some((node, change)) = run.take_health() {
        match change {
            HealthChange::TakeOut { .. } => {
                let by_us = table[node].enabled;
                table[node].enabled = false;
                go_on &= run.on_taken_out(node, by_us);
            }
            HealthChange::PutBack => table[node].enabled = true,
        }
    }
    go_on
}

#[test]
fn of_two_commands_losing_an_attempt_at_once_only_the_one_that_took_the_node_out_waits() {
    // Two processes, one shared table; both commands are on node 2 (the hash node).
    let mut shared = up(3);
    let mut a = CommandRun::new(OpKind::Offer, CALL, Failover::NextNode);
    let mut b = CommandRun::new(OpKind::Offer, CALL, Failover::NextNode);
    for run in [&mut a, &mut b] {
        assert_eq!(run.poll(&shared, b"abc"), Step::Start { node: 2 });
        run.on_started(2);
    }
    // Both lose an attempt at the same moment: both read the node as up...
    assert!(a.on_attempt_lost(2, !shared[2].enabled));
    assert!(b.on_attempt_lost(2, !shared[2].enabled));
    // ...and both ask to take it out; `a`'s update lands first.
    assert!(apply_shared(&mut a, &mut shared), "a took it out: a waits");
    assert!(
        !apply_shared(&mut b, &mut shared),
        "b came second: b gives up"
    );
    assert!(!shared[2].enabled);
    // `b` fails over at once (no more retransmissions on node 2) and is answered by node 0.
    assert_eq!(b.poll(&shared, b"abc"), Step::Start { node: 0 });
    b.on_started(0);
    b.on_reply(0, Answer::Reply { rtt_us: 1 });
    assert_eq!(b.poll(&shared, b"abc"), Step::Done(Ok(0)));
    let op = OpKind::Offer;
    let b_events = b.take_events();
    // (the client had already sent the request again when the attempt was reported lost)
    assert_eq!(
        b_events[..6],
        [
            Event::FirstSend { op, node: 2 },
            Event::Retransmit { op, node: 2 },
            Event::NodeTimeout { op, node: 2 },
            Event::Failover { op, from: 2, to: 0 },
            Event::FirstSend { op, node: 0 },
            Event::Answered {
                op,
                node: 0,
                rtt_us: 1
            },
        ]
    );
    // `a` keeps retransmitting on node 2; a later report of `b` changes nothing
    assert!(!b.on_taken_out(2, false));
    assert!(a.on_attempt_lost(2, !shared[2].enabled), "a's own mark");
    assert!(apply_shared(&mut a, &mut shared));
    assert_eq!(a.poll(&shared, b"abc"), Step::Wait { node: 2 });
    // the retransmission is answered: `a` puts the node back
    a.on_reply(2, Answer::Reply { rtt_us: 5 });
    assert!(apply_shared(&mut a, &mut shared));
    assert!(shared[2].enabled);
    assert_eq!(a.poll(&shared, b"abc"), Step::Done(Ok(2)));
    let retransmits = a
        .take_events()
        .iter()
        .filter(|e| matches!(e, Event::Retransmit { .. }))
        .count();
    assert_eq!(retransmits, 2);

    // The same race for a command that may not fail over: it ends at once with no reply.
    let mut shared = up(1);
    let mut a = CommandRun::new(OpKind::Delete, Route::Pinned(0), Failover::Never);
    let mut b = CommandRun::new(OpKind::Delete, Route::Pinned(0), Failover::Never);
    for run in [&mut a, &mut b] {
        assert_eq!(run.poll(&shared, b"x"), Step::Start { node: 0 });
        run.on_started(0);
        assert!(run.on_attempt_lost(0, !shared[0].enabled));
    }
    assert!(apply_shared(&mut a, &mut shared));
    assert!(!apply_shared(&mut b, &mut shared));
    assert_eq!(
        b.poll(&shared, b"x"),
        Step::Done(Err(CommandError::Failed(NodeFault::Timeout)))
    );
    assert_eq!(a.poll(&shared, b"x"), Step::Wait { node: 0 });
}

#[test]
fn a_take_out_that_disabled_the_node_keeps_the_command_on_it_in_the_driver_too() {
    // `drive` reports every take-out as the host does: alone, a command that loses attempts
    // is the one that took the node out, and keeps retransmitting until answered.
    let mut nodes = up(3);
    let (r, trace, _) = drive(
        &mut nodes,
        &[Does::Answer, Does::Answer, Does::AnswerAfter(2)],
        &[],
        CALL,
        Failover::NextNode,
        5,
    );
    assert_eq!(r, Ok(2));
    assert!(!trace.iter().any(|t| t.starts_with("second@")), "{trace:?}");
    assert!(nodes[2].enabled, "put back by its answer");
}

#[test]
fn a_delete_looks_for_a_call_whose_node_is_unknown() {
    use Does::*;
    // own node unknown: the hash node (2) does not know the call, the next one does
    let mut nodes = up(3);
    let (r, trace, _) = drive(
        &mut nodes,
        &[Answer, NotHere, NotHere],
        &[],
        CALL,
        Failover::Never,
        3,
    );
    assert_eq!(r, Ok(0));
    assert_eq!(trace, ["start@2", "start@0"]);
    // nobody knows it: done on the last node, no node taken out
    let (r, trace, _) = drive(
        &mut nodes,
        &[NotHere, NotHere, NotHere],
        &[],
        CALL,
        Failover::Never,
        3,
    );
    assert_eq!(r, Ok(1));
    assert_eq!(trace, ["start@2", "start@0", "start@1"]);
    assert!(nodes.iter().all(|n| n.enabled));
    // the call's node is known: its answer is final
    let (r, trace, _) = drive(
        &mut nodes,
        &[Answer, NotHere, Answer],
        &[],
        Route::Call { own: Some(1) },
        Failover::Never,
        3,
    );
    assert_eq!(r, Ok(1));
    assert_eq!(trace, ["start@1"]);
}

#[test]
fn an_aborted_command_still_hands_out_its_health_changes() {
    let mut run = CommandRun::new(OpKind::Offer, CALL, Failover::NextNode);
    let nodes = up(2);
    let Step::Start { node } = run.poll(&nodes, b"x") else {
        panic!("no start")
    };
    run.on_started(node);
    run.on_reply(node, Answer::Fault(NodeFault::Timeout));
    run.abort();
    assert!(matches!(run.poll(&nodes, b"x"), Step::Health { .. }));
    assert_eq!(
        run.poll(&nodes, b"x"),
        Step::Done(Err(CommandError::Aborted))
    );
}

#[test]
fn refusals_and_missing_sessions_count_as_failed_without_failover() {
    let nodes = up(2);
    let finished_ok = |ev: &[Event]| {
        ev.iter().find_map(|e| match e {
            Event::Finished { ok, .. } => Some(*ok),
            _ => None,
        })
    };
    // a call whose node is unknown: every node is asked, none has it
    let mut run = CommandRun::new(OpKind::Delete, CALL, Failover::Never);
    let mut ev = Vec::new();
    let r = loop {
        match run.poll(&nodes, b"call-1") {
            Step::Start { node } => {
                run.on_started(node);
                run.on_reply(node, Answer::NotHere);
            }
            Step::Done(r) => break r,
            other => panic!("unexpected {other:?}"),
        }
        ev.extend(run.take_events());
    };
    ev.extend(run.take_events());
    assert!(r.is_ok());
    let errors = ev
        .iter()
        .filter(|e| matches!(e, Event::RelayError { code: 50, .. }))
        .count();
    assert_eq!(errors, 2, "{ev:?}");
    assert!(!ev.iter().any(|e| matches!(e, Event::Failover { .. })));
    assert_eq!(finished_ok(&ev), Some(false));
    // an E reply that is no node failure ends the command on its node, failed
    let mut run = CommandRun::new(OpKind::Answer, Route::Pinned(1), Failover::Never);
    assert_eq!(run.poll(&nodes, b"call-1"), Step::Start { node: 1 });
    run.on_started(1);
    run.on_reply(
        1,
        Answer::Refused {
            rtt_us: 3,
            code: Some(8),
        },
    );
    assert_eq!(run.poll(&nodes, b"call-1"), Step::Done(Ok(1)));
    let ev = run.take_events();
    assert!(ev.contains(&Event::RelayError {
        op: OpKind::Answer,
        node: 1,
        code: 8
    }));
    assert_eq!(finished_ok(&ev), Some(false));
}

/// The prober's round ([`probe::ProbeRound`]) under a scripted driver with a virtual clock.
mod probe_round {
    use std::time::{Duration, Instant};

    use super::probe::*;
    use crate::core::proto::caps::{Capabilities, ProbeFailure, ProbeOutcome, OPTIONAL_CAPS};
    use crate::core::select::{NodeHealth, RECHECK_FOREVER};

    /// What a relay does with the probe's datagrams.
    #[derive(Debug, Clone, Copy)]
    enum Relay {
        /// Answers every command; `VF` with `1` for these capabilities.
        Answers(Capabilities),
        /// Loses the first `n` requests (of the whole probe), then answers with every
        /// capability.
        LosesFirst(u32),
        /// Never answers.
        Hangs,
        /// Cannot be reached (the start fails).
        Refuses,
        /// Speaks another protocol version.
        OldVersion,
    }

    const RTT: Duration = Duration::from_millis(10);
    const UDP: ProbeTiming = ProbeTiming {
        timeout: Duration::from_secs(1),
        retr: 5,
    };

    fn fresh(datagram: bool) -> ProbeInput {
        ProbeInput {
            health: NodeHealth::ENABLED,
            probed: false,
            datagram,
        }
    }

    fn reply(relay: Relay, cmd: &[u8]) -> Option<Vec<u8>> {
        let caps = match relay {
            Relay::Answers(c) => c,
            Relay::LosesFirst(_) => Capabilities::from_bits_truncate(u32::MAX),
            Relay::OldVersion => return Some(b"20040106".to_vec()),
            Relay::Hangs | Relay::Refuses => return None,
        };
        let text = std::str::from_utf8(cmd).unwrap();
        Some(match text.strip_prefix("VF ") {
            None => b"20040107".to_vec(),
            Some("20050322") => b"1".to_vec(),
            Some(date) => {
                let cap = OPTIONAL_CAPS
                    .iter()
                    .find(|c| c.date.to_string() == date)
                    .unwrap();
                if caps.contains(cap.cap) { b"1" } else { b"0" }.to_vec()
            }
        })
    }

    /// One result: node, outcome, milliseconds after the round started.
    type Recorded = Vec<(usize, ProbeOutcome, u128)>;

    /// Runs one round against `relays` (replies arrive `RTT` after each request); returns
    /// the results and a trace of the steps with their virtual time in ms.
    fn run(round: &mut ProbeRound, relays: &[Relay]) -> (Recorded, Vec<String>) {
        let t0 = Instant::now();
        let mut t = t0;
        let ms = |t: Instant| (t - t0).as_millis();
        let mut last_cmd: Vec<Vec<u8>> = vec![Vec::new(); relays.len()];
        let mut lost = vec![0u32; relays.len()];
        let mut arriving: Vec<(Instant, usize, Vec<u8>)> = Vec::new();
        let mut recorded = Vec::new();
        let mut trace = Vec::new();
        let mut send =
            |node: usize, cmd: &[u8], t: Instant, arriving: &mut Vec<(Instant, usize, Vec<u8>)>| {
                if let Relay::LosesFirst(n) = relays[node] {
                    if lost[node] < n {
                        lost[node] += 1;
                        return;
                    }
                }
                if let Some(body) = reply(relays[node], cmd) {
                    arriving.push((t + RTT, node, body));
                }
            };
        for _ in 0..10_000 {
            match round.poll(t) {
                ProbeStep::Send { node, cmd } => {
                    trace.push(format!(
                        "{} send@{node} {}",
                        ms(t),
                        String::from_utf8_lossy(cmd.as_bytes())
                    ));
                    last_cmd[node] = cmd.as_bytes().to_vec();
                    if matches!(relays[node], Relay::Refuses) {
                        round.on_reply(node, None);
                        continue;
                    }
                    send(node, &last_cmd[node], t, &mut arriving);
                    round.on_sent(node, t);
                }
                ProbeStep::Retransmit { node } => {
                    trace.push(format!("{} resend@{node}", ms(t)));
                    send(node, &last_cmd[node], t, &mut arriving);
                    round.on_sent(node, t);
                }
                ProbeStep::GiveUp { node } => trace.push(format!("{} giveup@{node}", ms(t))),
                ProbeStep::Record { node, outcome } => {
                    trace.push(format!("{} record@{node}", ms(t)));
                    recorded.push((node, outcome, ms(t)));
                }
                ProbeStep::Wait { until } => {
                    let in_flight: Vec<usize> = round.in_flight().collect();
                    let next = arriving
                        .iter()
                        .filter(|(_, n, _)| in_flight.contains(n))
                        .map(|(at, _, _)| *at)
                        .min();
                    t = next.map_or(until, |at| at.min(until)).max(t);
                    let (now, later): (Vec<_>, Vec<_>) =
                        arriving.drain(..).partition(|(at, _, _)| *at <= t);
                    arriving = later;
                    for (_, node, body) in now {
                        round.on_reply(node, Some(&body));
                    }
                }
                ProbeStep::Done => return (recorded, trace),
            }
        }
        panic!("the round never ended: {trace:?}")
    }

    #[test]
    fn which_nodes_are_due() {
        let disabled_until = |at: u32| NodeHealth {
            disabled: true,
            recheck_at: at,
        };
        let probed = |health: NodeHealth| ProbeInput {
            health,
            probed: true,
            datagram: true,
        };
        let cases = [
            (fresh(true), true),                              // never answered
            (probed(NodeHealth::ENABLED), false),             // up: nothing to do
            (probed(disabled_until(101)), false),             // recheck time not reached
            (probed(disabled_until(100)), true),              // recheck time reached
            (probed(disabled_until(RECHECK_FOREVER)), false), // MI: disabled forever
            (
                ProbeInput {
                    health: disabled_until(RECHECK_FOREVER),
                    ..fresh(false)
                },
                true, // never answered: probed once even so (its capabilities)
            ),
        ];
        for (input, want) in cases {
            assert_eq!(is_due(&input, 100), want, "{input:?}");
        }
        let inputs: Vec<ProbeInput> = cases.iter().map(|c| c.0).collect();
        let round = ProbeRound::new(&inputs, 100, UDP);
        assert_eq!(round.due().collect::<Vec<_>>(), [0, 3, 5]);
        assert_eq!(round.in_flight().count(), 0);
    }

    #[test]
    fn every_due_node_is_asked_before_anything_is_waited_for() {
        let mut round = ProbeRound::new(&[fresh(true), fresh(true), fresh(false)], 0, UDP);
        let t = Instant::now();
        for want in 0..3 {
            match round.poll(t) {
                ProbeStep::Send { node, cmd } => {
                    assert_eq!(node, want);
                    assert_eq!(cmd.as_bytes(), b"V");
                    round.on_sent(node, t);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            round.poll(t),
            ProbeStep::Wait {
                until: t + UDP.timeout
            }
        );
        assert_eq!(round.in_flight().collect::<Vec<_>>(), [0, 1, 2]);
    }

    #[test]
    fn a_hung_node_holds_back_nobody() {
        let all = Capabilities::from_bits_truncate(u32::MAX);
        let mut round = ProbeRound::new(&[fresh(true), fresh(true), fresh(true)], 0, UDP);
        let (recorded, trace) = run(
            &mut round,
            &[Relay::Hangs, Relay::Answers(all), Relay::Refuses],
        );
        // the refused node fails at once, the answering one after its 12 round trips, the
        // hung one after 5 attempts of 1 s
        assert_eq!(
            recorded,
            [
                (2, ProbeOutcome::Failed(ProbeFailure::VersionNoReply), 0),
                (1, ProbeOutcome::Enabled(all), 120),
                (0, ProbeOutcome::Failed(ProbeFailure::VersionNoReply), 5000),
            ]
        );
        let hung: Vec<&str> = trace
            .iter()
            .filter(|l| l.contains("@0"))
            .map(String::as_str)
            .collect();
        assert_eq!(
            hung,
            [
                "0 send@0 V",
                "1000 resend@0",
                "2000 resend@0",
                "3000 resend@0",
                "4000 resend@0",
                "5000 giveup@0",
                "5000 record@0"
            ]
        );
        // the first requests of all three went out at once
        assert_eq!(&trace[..3], ["0 send@0 V", "0 send@1 V", "0 send@2 V"]);
    }

    #[test]
    fn lost_attempts_are_retransmitted_and_the_probe_goes_on() {
        let mut round = ProbeRound::new(&[fresh(true)], 0, UDP);
        let (recorded, trace) = run(&mut round, &[Relay::LosesFirst(2)]);
        assert_eq!(
            recorded,
            [(
                0,
                ProbeOutcome::Enabled(Capabilities::from_bits_truncate(u32::MAX)),
                2000 + 12 * 10
            )]
        );
        assert_eq!(
            &trace[..4],
            [
                "0 send@0 V",
                "1000 resend@0",
                "2000 resend@0",
                "2010 send@0 VF 20050322"
            ]
        );
    }

    #[test]
    fn streams_get_one_attempt_and_retr_zero_sends_nothing() {
        let mut round = ProbeRound::new(&[fresh(false)], 0, UDP);
        let (recorded, trace) = run(&mut round, &[Relay::Hangs]);
        assert_eq!(
            recorded,
            [(0, ProbeOutcome::Failed(ProbeFailure::VersionNoReply), 1000)]
        );
        assert_eq!(trace, ["0 send@0 V", "1000 giveup@0", "1000 record@0"]);

        let timing = ProbeTiming { retr: 0, ..UDP };
        let mut round = ProbeRound::new(&[fresh(true)], 0, timing);
        let (recorded, trace) = run(&mut round, &[Relay::Answers(Capabilities::NONE)]);
        assert_eq!(
            recorded,
            [(0, ProbeOutcome::Failed(ProbeFailure::VersionNoReply), 0)]
        );
        assert_eq!(trace, ["0 record@0"]);
    }

    #[test]
    fn capability_results() {
        let some = Capabilities::REPACK.union(Capabilities::STATS);
        let mut round = ProbeRound::new(&[fresh(true), fresh(false), fresh(true)], 7, UDP);
        let (recorded, _) = run(
            &mut round,
            &[
                Relay::Answers(some),
                Relay::Answers(Capabilities::NONE),
                Relay::OldVersion,
            ],
        );
        let mut by_node: Vec<(usize, ProbeOutcome)> =
            recorded.into_iter().map(|(n, o, _)| (n, o)).collect();
        by_node.sort_by_key(|(n, _)| *n);
        assert_eq!(
            by_node,
            [
                (0, ProbeOutcome::Enabled(some)),
                (1, ProbeOutcome::Enabled(Capabilities::NONE)),
                (
                    2,
                    ProbeOutcome::Failed(ProbeFailure::UnsupportedVersion(20040106))
                ),
            ]
        );
        assert_eq!(capabilities_of(&by_node[0].1), some);
        assert_eq!(capabilities_of(&by_node[2].1), Capabilities::NONE);
    }

    /// Applies a round's result the way the host does; returns the notice and the health.
    fn record(
        outcome: &ProbeOutcome,
        first: bool,
        health: NodeHealth,
        now: u32,
        disable_tout: i32,
    ) -> (ProbeNotice, NodeHealth) {
        let mut after = health;
        apply_outcome(outcome, &mut after, now, disable_tout);
        (report(outcome, first, health, after), after)
    }

    #[test]
    fn failure_recheck_and_recovery_follow_disable_tout() {
        let ok = ProbeOutcome::Enabled(Capabilities::CODECS);
        let down = ProbeOutcome::Failed(ProbeFailure::VersionNoReply);
        // first probe fails at tick 100, disable_tout 60
        let (notice, h) = record(&down, true, NodeHealth::ENABLED, 100, 60);
        assert_eq!(
            notice,
            ProbeNotice::Disabled {
                why: ProbeFailure::VersionNoReply,
                newly: true
            }
        );
        assert_eq!(notice.status_event(), Some(false));
        let input = |health| ProbeInput {
            health,
            probed: true,
            datagram: true,
        };
        assert!(!is_due(&input(h), 159));
        assert!(is_due(&input(h), 160));
        // still failing at 160: quiet, next recheck at 220
        let (notice, h) = record(&down, false, h, 160, 60);
        assert_eq!(notice, ProbeNotice::Quiet);
        assert_eq!(notice.status_event(), None);
        assert_eq!(h.recheck_at, 220);
        // it answers at 220: back in selection
        let (notice, h) = record(&ok, false, h, 220, 60);
        assert_eq!(notice, ProbeNotice::Reenabled(Capabilities::CODECS));
        assert_eq!(notice.status_event(), Some(true));
        assert_eq!(h, NodeHealth::ENABLED);
        assert!(!is_due(&input(h), u32::MAX));
        // disable_tout 0 or negative: rechecked in the very next round
        for tout in [0, -5] {
            let (_, h) = record(&down, false, NodeHealth::ENABLED, 300, tout);
            assert!(h.disabled);
            assert!(is_due(&input(h), 300), "disable_tout {tout}");
        }
    }

    #[test]
    fn first_answers_and_nodes_mi_holds_out() {
        let ok = ProbeOutcome::Enabled(Capabilities::NONE);
        let (notice, h) = record(&ok, true, NodeHealth::ENABLED, 5, 60);
        assert_eq!(notice, ProbeNotice::Active(Capabilities::NONE));
        assert_eq!(h, NodeHealth::ENABLED);
        // answered again while up: nothing to say
        assert_eq!(record(&ok, false, h, 6, 60).0, ProbeNotice::Quiet);
        // MI disabled it forever before its first probe: it stays out, reported inactive
        let forever = NodeHealth {
            disabled: true,
            recheck_at: RECHECK_FOREVER,
        };
        let (notice, h) = record(&ok, true, forever, 5, 60);
        assert_eq!(notice, ProbeNotice::HeldOut);
        assert_eq!(notice.status_event(), Some(false));
        assert_eq!(h, forever);
    }

    #[test]
    fn late_and_unknown_reports_are_ignored() {
        let mut round = ProbeRound::new(&[fresh(true)], 0, UDP);
        let t = Instant::now();
        round.on_reply(0, Some(b"20040107")); // nothing out yet
        round.on_reply(9, None); // not in the round
        round.on_sent(9, t);
        assert!(matches!(round.poll(t), ProbeStep::Send { node: 0, .. }));
        // the driver forgot to report the send: the attempt counts from the next poll
        assert_eq!(
            round.poll(t),
            ProbeStep::Wait {
                until: t + UDP.timeout
            }
        );
    }
}
