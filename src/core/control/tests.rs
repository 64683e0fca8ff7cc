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
                    // the driver applies queued health changes before resending
                    while let Step::Health { node, change } = run.poll(nodes, b"abc") {
                        trace.push(format!("{change:?}@{node}"));
                        nodes[node].enabled = matches!(change, HealthChange::PutBack);
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
