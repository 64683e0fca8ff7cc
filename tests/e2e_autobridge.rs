//! End-to-end test of `rtpproxy_autobridge=1` (spec §4.12): a real OpenSIPS 3.6.8, a real
//! `rtpproxy` daemon serving IPv4 (127.0.0.1) and IPv6 (::1) media, and sipp calls between an
//! IPv4 and an IPv6 side.
//!
//! With autobridge, an offer/answer on a request waits until OpenSIPS forwards the request and
//! then tells the relay the next hop (`R<addr>`, IPv6 in brackets); on a reply it tells the
//! relay where the reply goes (the source of the transaction's request). The relay allocates
//! the port on the interface that reaches that party, so an IPv4 caller and an IPv6 callee
//! each get a relay address of their own family.
//!
//! A logging UDP proxy in front of the relay's control socket records every command. Each
//! case runs through our module and, when the OpenSIPS build has it, through the C module
//! with the same script and a fresh relay; the transcripts (relay commands and replies, the
//! SDP and script results each side received) must agree, except for the C module's bare
//! IPv6 `R` address on replies (a defect the spec marks **[BUG]**), which is asserted
//! explicitly.
//!
//! Cases: IPv4 caller to IPv6 callee, IPv6 to IPv4, IPv4 to IPv4, the first with
//! `rtpproxy_engage()` instead of offer/answer, a forked INVITE (only the first branch is
//! considered: one `U`; tm forgets a branch's changes once it is sent, so the second branch
//! gets the caller's SDP unchanged, as with the C module), and a statelessly forwarded call
//! (`forward()`: the reply's destination comes from its second Via).
//!
//! Without OpenSIPS, sipp or an rtpproxy daemon (`RTPPROXY_BIN`) the test prints SKIPPED and
//! passes (fails under CI=true).

mod e2e;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{cfg, ControlTap, Env, Impl, OpenSips, Relay};

const TEST: &str = "autobridge_tells_the_relay_where_the_other_party_is";

const MODULES: &str = r#"loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "dialog.so"
loadmodule "sipmsgops.so""#;

/// The IPv4 address the forked INVITE's second branch goes to (a plain UDP socket of the test
/// catches it and never answers).
const FORK_IP: &str = "127.0.0.3";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

/// One call.
#[derive(Clone, Copy, Debug)]
struct Case {
    name: &'static str,
    caller: Family,
    callee: Family,
}

const CASES: &[Case] = &[
    Case {
        name: "v4_to_v6",
        caller: Family::V4,
        callee: Family::V6,
    },
    Case {
        name: "v6_to_v4",
        caller: Family::V6,
        callee: Family::V4,
    },
    Case {
        name: "v4_to_v4",
        caller: Family::V4,
        callee: Family::V4,
    },
    // `rtpproxy_engage()` instead of offer/answer (selected by the Call-ID prefix).
    Case {
        name: "engage",
        caller: Family::V4,
        callee: Family::V6,
    },
    // A second branch to FORK_IP (selected by the Call-ID prefix).
    Case {
        name: "fork",
        caller: Family::V4,
        callee: Family::V6,
    },
    // Stateless forwarding (`forward()`): the reply has no transaction, so where it goes is
    // taken from its second Via.
    Case {
        name: "stateless",
        caller: Family::V4,
        callee: Family::V6,
    },
];

/// The callee's address of a case.
fn uas_ip(c: &Case) -> &'static str {
    match c.callee {
        Family::V4 => "127.0.0.2",
        Family::V6 => "::1",
    }
}

/// The script: offer on INVITEs (or engage), answer on replies with SDP, unforce on BYE; the
/// return codes and `sock_var` go into headers of the forwarded messages. sipp sends every
/// request to OpenSIPS itself (its local and remote addresses must be of one family); the
/// script sends each case's requests to that case's callee (`uas_ports[i]` for `CASES[i]`).
fn routes(fork_port: u16, uas_ports: &[u16]) -> String {
    let mut target = String::new();
    for (c, port) in CASES.iter().zip(uas_ports) {
        let host = match c.callee {
            Family::V4 => uas_ip(c).to_owned(),
            Family::V6 => format!("[{}]", uas_ip(c)),
        };
        target.push_str(&format!(
            "    if ($ci =~ \"^ab-{}-\") $du = \"sip:{host}:{port}\";\n",
            c.name
        ));
    }
    format!(
        r#"route[target] {{
{target}}}
route {{
    route(target);
    if ($ci =~ "^ab-stateless-") {{
        if (is_method("INVITE") && !has_totag()) route(offer);
        if (is_method("BYE")) rtpproxy_unforce();
        forward();
        exit;
    }}
    if (has_totag()) {{
        if (!loose_route()) match_dialog();
        route(target);
        if (is_method("BYE") && !($ci =~ "^ab-engage")) rtpproxy_unforce();
        t_relay();
        exit;
    }}
    if (is_method("INVITE")) {{
        if ($ci =~ "^ab-engage") {{
            record_route();
            $var(sock) = "none";
            rtpproxy_engage();
            $var(rc) = $rc;
            append_hf("X-Ab-Offer-Rc: $var(rc)\r\n");
            append_hf("X-Ab-Offer-Sock: $var(sock)\r\n");
        }} else {{
            route(offer);
        }}
        if ($ci =~ "^ab-fork") $branch = "sip:fork@{FORK_IP}:{fork_port}";
    }}
    t_on_reply("r");
    t_relay();
}}
route[offer] {{
    $var(sock) = "none";
    rtpproxy_offer("", , , $var(sock));
    $var(rc) = $rc;
    append_hf("X-Ab-Offer-Rc: $var(rc)\r\n");
    append_hf("X-Ab-Offer-Sock: $var(sock)\r\n");
}}
route[answer] {{
    $var(sock) = "none";
    rtpproxy_answer("", , , $var(sock));
    $var(rc) = $rc;
    append_hf("X-Ab-Answer-Rc: $var(rc)\r\n");
    append_hf("X-Ab-Answer-Sock: $var(sock)\r\n");
}}
onreply_route[r] {{
    if (has_body("application/sdp") && !($ci =~ "^ab-engage")) route(answer);
}}
onreply_route {{
    if ($ci =~ "^ab-stateless-" && has_body("application/sdp")) route(answer);
}}
"#
    )
}

fn scenario(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/e2e/scenarios")
        .join(format!("{name}.xml"))
        .display()
        .to_string()
}

/// The messages a sipp `-trace_msg` file says were received.
fn received_messages(trace: &str) -> Vec<String> {
    const HEAD: &str = "message received [";
    let mut out = Vec::new();
    let mut rest = trace;
    while let Some(i) = rest.find(HEAD) {
        let start = i + HEAD.len();
        let close = start + rest[start..].find(']').unwrap();
        let n: usize = rest[start..close].parse().unwrap();
        let body = close + rest[close..].find("\n\n").unwrap() + 2;
        let end = (body + n).min(rest.len());
        out.push(rest[body..end].to_owned());
        rest = &rest[end..];
    }
    out
}

/// One SIP message as a transcript block: first line (method or status), the script's
/// `X-Ab-*` headers, the body lines.
fn show_message(out: &mut String, who: &str, msg: &str) {
    let (head, body) = msg.split_once("\r\n\r\n").unwrap_or((msg, ""));
    let first = head.lines().next().unwrap_or_default();
    if first.starts_with("SIP/2.0 100") {
        return;
    }
    let first = match first.split_once(' ') {
        Some((m, _)) if !m.starts_with("SIP/") => m,
        _ => first,
    };
    out.push_str(&format!("{who} {first}\n"));
    for l in head.split("\r\n").filter(|l| l.starts_with("X-Ab-")) {
        out.push_str(&format!("{who}   {}\n", l.trim()));
    }
    for l in body.lines() {
        out.push_str(&format!("{who}   | {}\n", l.trim_end()));
    }
}

/// Numbers relay-allocated ports `<P1>`, `<P2>`… in the order the relay handed them out, and
/// their RTCP ports (`port + 1`) `<P1+1>`….
fn normalise_ports(text: &str, commands: &[(String, String)]) -> String {
    let mut ports: Vec<String> = Vec::new();
    for (_, reply) in commands {
        if let Some(p) = reply.split_whitespace().next() {
            if p.parse::<u16>().is_ok_and(|v| v > 1024) && !ports.iter().any(|x| x == p) {
                ports.push(p.to_owned());
            }
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    for ch in text.chars().chain(std::iter::once('\n')) {
        if ch.is_ascii_digit() {
            run.push(ch);
            continue;
        }
        if !run.is_empty() {
            let v: u32 = run.parse().unwrap_or(0);
            let named = ports.iter().enumerate().find_map(|(i, p)| {
                let p: u32 = p.parse().ok()?;
                if p == v {
                    Some(format!("<P{}>", i + 1))
                } else if p + 1 == v {
                    Some(format!("<P{}+1>", i + 1))
                } else {
                    None
                }
            });
            out.push_str(&named.unwrap_or_else(|| run.clone()));
            run.clear();
        }
        out.push(ch);
    }
    out.pop();
    out
}

/// What one implementation produced.
struct Run {
    /// Case name → transcript.
    transcripts: Vec<(&'static str, String)>,
    /// Relay sessions after all calls.
    sessions_left: Option<u64>,
    /// Where the transcripts were written.
    dir: PathBuf,
    /// OpenSIPS's log.
    log: String,
}

fn run_case(
    dir: &Path,
    sip: u16,
    (uas_port, fork_port): (u16, u16),
    tap: &ControlTap,
    c: &Case,
) -> String {
    let (uac_ip, proxy) = match c.caller {
        Family::V4 => ("127.0.0.1", format!("127.0.0.1:{sip}")),
        Family::V6 => ("::1", format!("[::1]:{sip}")),
    };
    let uas_ip = uas_ip(c);
    let uac_scenario = match c.caller {
        Family::V4 => "uac_basic",
        Family::V6 => "uac_ipv6",
    };
    let keys = |v: &mut Vec<String>| {
        for (k, val) in [
            ("case", c.name),
            ("offer", "-"),
            ("answer", "-"),
            ("set", "0"),
            ("mode", "msg"),
            ("ip", "-"),
        ] {
            v.extend([String::from("-key"), k.into(), val.into()]);
        }
        v.extend([String::from("-cid_str"), format!("ab-{}-%u@test", c.name)]);
    };
    let uas_log = dir.join(format!("{}-uas.log", c.name));
    let uac_log = dir.join(format!("{}-uac.log", c.name));
    let mut uas_args: Vec<String> = [
        "-sf",
        &scenario("uas_basic"),
        "-i",
        uas_ip,
        "-p",
        &uas_port.to_string(),
        "-m",
        "1",
        "-timeout",
        "20s",
        "-nostdin",
        "-trace_msg",
        "-message_file",
        &uas_log.display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    keys(&mut uas_args);
    let mut uas = Command::new("sipp")
        .current_dir(dir)
        .args(&uas_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp uas");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !e2e::udp_bound(uas_port) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // The second branch of the forked call: caught, never answered.
    let catcher = UdpSocket::bind((FORK_IP, fork_port)).unwrap();
    catcher
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mark = tap.len();

    let mut uac_args: Vec<String> = [
        "-sf",
        &scenario(uac_scenario),
        &proxy,
        "-i",
        uac_ip,
        "-p",
        &e2e::free_port(uac_ip, 1).to_string(),
        "-m",
        "1",
        "-timeout",
        "20s",
        "-nostdin",
        "-trace_msg",
        "-message_file",
        &uac_log.display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    keys(&mut uac_args);
    let uac = Command::new("sipp")
        .current_dir(dir)
        .args(&uac_args)
        .stdin(Stdio::null())
        .output()
        .expect("sipp uac");
    let deadline = Instant::now() + Duration::from_secs(10);
    let uas_status = loop {
        if let Some(st) = uas.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = uas.kill();
            let _ = uas.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Let the BYE's D (and its reply) pass the tap.
    tap.settle(mark, Duration::from_secs(3));
    assert!(
        uac.status.success() && uas_status.is_some_and(|s| s.success()),
        "case {}: sipp failed (uac {}, uas {uas_status:?}):\n{}",
        c.name,
        uac.status,
        String::from_utf8_lossy(&uac.stdout)
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n"),
    );

    let mut t = String::new();
    let commands = tap.commands(mark);
    for (cmd, reply) in &commands {
        t.push_str(&format!("relay> {cmd}\nrelay<   {reply}\n"));
    }
    let uas_trace = std::fs::read_to_string(&uas_log).unwrap_or_default();
    for m in received_messages(&uas_trace) {
        show_message(&mut t, "uas<", &m);
    }
    let uac_trace = std::fs::read_to_string(&uac_log).unwrap_or_default();
    for m in received_messages(&uac_trace) {
        show_message(&mut t, "uac<", &m);
    }
    let mut buf = [0u8; 65536];
    if let Ok(n) = catcher.recv(&mut buf) {
        show_message(&mut t, "fork<", &String::from_utf8_lossy(&buf[..n]));
    }
    // Normalise the control port and the relay's ports.
    let t = t.replace(&format!("127.0.0.1:{}", tap.port), "<control>");
    normalise_ports(&t, &commands)
}

fn run_impl(env: &Env, which: Impl) -> Option<Run> {
    let dir = e2e::scratch(&format!("autobridge-{which:?}"));
    let ctl = e2e::port();
    let relay_ctl = format!("127.0.0.1:{ctl}");
    let _relay = Relay::start_daemon(
        &[format!("udp:{relay_ctl}")],
        &["-6".into(), "v6@::1".into()],
    )?;
    let tap = ControlTap::start(relay_ctl.parse().unwrap());
    let params = format!(
        "modparam(\"rtpproxy\", \"rtpproxy_sock\", \"udp:127.0.0.1:{}\")\n\
         modparam(\"rtpproxy\", \"rtpproxy_autobridge\", 1)\n",
        tap.port
    );
    let fork_port = e2e::free_port(FORK_IP, 1);
    let uas_ports: Vec<u16> = CASES.iter().map(|c| e2e::free_port(uas_ip(c), 1)).collect();
    // cfg() picks the IPv4 SIP port; the IPv6 socket gets the same number.
    let extra = format!("socket=udp:[::1]:@SIP@\n{MODULES}");
    let c = cfg(
        env,
        which,
        &dir,
        &params,
        &extra,
        &routes(fork_port, &uas_ports),
    );
    let sip: u16 = c
        .text
        .lines()
        .find_map(|l| l.strip_prefix("socket=udp:127.0.0.1:"))
        .and_then(|p| p.parse().ok())
        .unwrap();
    let c = e2e::Cfg {
        text: c.text.replace("@SIP@", &sip.to_string()),
        ..c
    };
    std::fs::write(&c.path, &c.text).unwrap();
    let os = OpenSips::start(env, &c).unwrap_or_else(|e| panic!("{which:?}: {e}"));
    // Wait for the start-up probes to be over (the control socket quiet for a while).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = (usize::MAX, Instant::now());
    while Instant::now() < deadline {
        let n = tap.len();
        if n != last.0 {
            last = (n, Instant::now());
        } else if n > 0 && last.1.elapsed() > Duration::from_millis(700) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        CASES
            .iter()
            .zip(&uas_ports)
            .map(|(c, &p)| (c.name, run_case(&dir, sip, (p, fork_port), &tap, c)))
            .collect::<Vec<_>>()
    }));
    let sessions_left = e2e::relay_active_sessions(&relay_ctl);
    let (status, log) = os.stop();
    let transcripts = ran.unwrap_or_else(|e| std::panic::resume_unwind(e));
    assert!(
        status.success(),
        "{which:?}: opensips did not stop cleanly:\n{log}"
    );
    let text: String = transcripts
        .iter()
        .map(|(k, v)| format!("==== {k}\n{v}"))
        .collect();
    std::fs::write(dir.join("transcripts.txt"), text).unwrap();
    Some(Run {
        transcripts,
        sessions_left,
        dir,
        log,
    })
}

fn transcript<'a>(run: &'a Run, case: &str) -> &'a str {
    &run.transcripts.iter().find(|(k, _)| *k == case).unwrap().1
}

/// The relay commands of a transcript, with their replies.
fn relay_lines(t: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = t.lines().collect();
    lines
        .windows(2)
        .filter_map(|w| {
            let cmd = w[0].strip_prefix("relay> ")?;
            let reply = w[1].strip_prefix("relay<   ")?;
            Some((cmd.to_owned(), reply.to_owned()))
        })
        .collect()
}

/// The lines of one side's block (`uas<`, `uac<`, `fork<`).
fn side<'a>(t: &'a str, who: &str) -> Vec<&'a str> {
    t.lines().filter(|l| l.starts_with(who)).collect()
}

fn has_line(lines: &[&str], needle: &str) -> bool {
    lines.iter().any(|l| l.ends_with(needle))
}

/// What our module must have done, case by case (independent of the C module).
fn check_ours(run: &Run) {
    let v6 = "[0:0:0:0:0:0:0:1]";
    for c in CASES {
        let t = transcript(run, c.name);
        let relay = relay_lines(t);
        let uas = side(t, "uas<");
        let uac = side(t, "uac<");
        let offers: Vec<&(String, String)> = relay
            .iter()
            .filter(|(cmd, _)| cmd.starts_with('U'))
            .collect();
        let answers: Vec<&(String, String)> = relay
            .iter()
            .filter(|(cmd, _)| cmd.starts_with('L'))
            .collect();
        assert_eq!(offers.len(), 1, "{}: one U:\n{t}", c.name);
        assert_eq!(answers.len(), 1, "{}: one L:\n{t}", c.name);
        let (u, u_reply) = offers[0];
        let (l, l_reply) = answers[0];
        let cid = format!(" ab-{}-1@test ", c.name);
        assert!(u.contains(&cid) && l.contains(&cid), "{}:\n{t}", c.name);
        // The offer is made at forwarding time with the next hop; the answer with the
        // caller's address.
        let (u_head, u_addr, l_head, l_addr) = match (c.caller, c.callee) {
            (Family::V4, Family::V6) => (
                format!("UR{v6}"),
                "127.0.0.1",
                "L6R127.0.0.1".to_owned(),
                "0:0:0:0:0:0:0:1",
            ),
            (Family::V6, Family::V4) => (
                "U6R127.0.0.2".to_owned(),
                "0:0:0:0:0:0:0:1",
                format!("LR{v6}"),
                "127.0.0.2",
            ),
            (Family::V4, Family::V4) => (
                "UR127.0.0.2".to_owned(),
                "127.0.0.1",
                "LR127.0.0.1".to_owned(),
                "127.0.0.2",
            ),
            _ => unreachable!(),
        };
        assert!(u.starts_with(&u_head), "{}: U {u}", c.name);
        assert!(
            u.contains(&format!(" {u_addr} 49170 ")),
            "{}: U {u}",
            c.name
        );
        assert!(l.starts_with(&l_head), "{}: L {l}", c.name);
        assert!(
            l.contains(&format!(" {l_addr} 30000 ")),
            "{}: L {l}",
            c.name
        );
        // The relay answers each side with an address of that side's family. (With `R` the
        // relay reports the local address the kernel routes towards that side, 127.0.0.1 on
        // loopback whatever its `-l` is; the rewritten ports prove that the SDP points at it.)
        let family_of = |reply: &str, fam: Family| match fam {
            Family::V4 => reply.ends_with(" 127.0.0.1"),
            Family::V6 => reply.ends_with(" ::1 6"),
        };
        assert!(
            family_of(u_reply, c.callee),
            "{}: U reply {u_reply}",
            c.name
        );
        assert!(
            family_of(l_reply, c.caller),
            "{}: L reply {l_reply}",
            c.name
        );
        let c_line = |fam: Family| match fam {
            Family::V4 => "| c=IN IP4 127.0.0.1",
            Family::V6 => "| c=IN IP6 ::1",
        };
        assert!(
            has_line(&uas, c_line(c.callee)),
            "{}: INVITE SDP:\n{t}",
            c.name
        );
        assert!(
            has_line(&uac, c_line(c.caller)),
            "{}: 200 OK SDP:\n{t}",
            c.name
        );
        // The script went on (return code 1, not 0) and the call's sessions were deleted.
        assert!(has_line(&uas, "X-Ab-Offer-Rc: 1"), "{}: rc:\n{t}", c.name);
        assert!(
            relay.iter().any(|(cmd, _)| cmd.starts_with('D')),
            "{}: D:\n{t}",
            c.name
        );
        if c.name != "engage" {
            assert!(has_line(&uac, "X-Ab-Answer-Rc: 1"), "{}: rc:\n{t}", c.name);
            // sock_var names the node whose capability decided, at once.
            assert!(
                has_line(&uas, "X-Ab-Offer-Sock: udp:<control>"),
                "{}: sock_var:\n{t}",
                c.name
            );
        }
        if c.name == "fork" {
            // Only the first branch counts: tm drops what was changed for a branch once it
            // is sent, and later branches do not run offer/answer again, so the second
            // branch gets the caller's SDP unchanged (as with the C module).
            let fork = side(t, "fork<");
            assert!(has_line(&fork, "| c=IN IP4 192.0.2.10"), "fork:\n{t}");
            assert!(
                has_line(&fork, "| m=audio 49170 RTP/AVP 0 8 101"),
                "fork:\n{t}"
            );
        }
    }
    // Where the replies' addresses came from (debug log): the transaction's request, or,
    // for the stateless call, the second Via.
    let from_via = run
        .log
        .lines()
        .filter(|l| l.contains("autobridge: the reply goes to") && l.contains("second Via"))
        .count();
    let from_request = run
        .log
        .lines()
        .filter(|l| l.contains("autobridge: the reply goes to") && l.contains("request's source"))
        .count();
    assert_eq!(
        (from_request, from_via),
        (CASES.len() - 1, 1),
        "reply destinations: from the transaction's request, from the second Via"
    );
    assert_eq!(run.sessions_left, Some(0), "relay sessions left (ours)");
}

#[test]
fn autobridge_tells_the_relay_where_the_other_party_is() {
    let Some(env) = Env::get(TEST) else {
        return;
    };
    if !e2e::have_sipp(TEST) {
        return;
    }
    if std::env::var_os("RTPPROXY_BIN").is_none_or(|v| v.is_empty()) {
        e2e::skip(
            TEST,
            "RTPPROXY_BIN is not set (an rtpproxy daemon is needed)",
        );
        return;
    }
    let Some(ours) = run_impl(&env, Impl::Ours) else {
        e2e::skip(TEST, "the rtpproxy daemon did not start");
        return;
    };
    println!(
        "ours: transcripts in {}",
        ours.dir.join("transcripts.txt").display()
    );
    check_ours(&ours);
    for (name, t) in &ours.transcripts {
        for (cmd, reply) in relay_lines(t) {
            if cmd.starts_with('U') || cmd.starts_with('L') {
                println!("{name}: relay received `{cmd}` -> `{reply}`");
            }
        }
    }

    if env.c_module.is_none() {
        e2e::skip(TEST, "the C module is not available; no comparison");
        return;
    }
    let c = run_impl(&env, Impl::C).expect("relay for the C module");
    println!(
        "C: transcripts in {}",
        c.dir.join("transcripts.txt").display()
    );
    assert_eq!(c.sessions_left, Some(0), "relay sessions left (C)");
    for case in CASES {
        let (ct, ot) = (transcript(&c, case.name), transcript(&ours, case.name));
        if case.name == "v6_to_v4" {
            // The reply goes to an IPv6 caller. C: `R` + the bare IPv6 address, which the
            // relay refuses (E35), so the answer fails and the 200 OK keeps the callee's
            // address; ours brackets it and the caller gets the relay's IPv6 address.
            let cl = relay_lines(ct);
            let ol = relay_lines(ot);
            let c_l = cl.iter().find(|(cmd, _)| cmd.starts_with('L')).unwrap();
            let o_l = ol.iter().find(|(cmd, _)| cmd.starts_with('L')).unwrap();
            assert!(c_l.0.starts_with("LR0:0:0:0:0:0:0:1c"), "C: {c_l:?}");
            assert_eq!(c_l.1, "E35", "C: the relay refuses the bare IPv6 address");
            assert_eq!(
                o_l.0,
                c_l.0
                    .replacen("LR0:0:0:0:0:0:0:1", "LR[0:0:0:0:0:0:0:1]", 1),
                "same L but for the brackets"
            );
            assert!(
                has_line(&side(ct, "uac<"), "X-Ab-Answer-Rc: -1"),
                "C:\n{ct}"
            );
            assert!(
                has_line(&side(ct, "uac<"), "| c=IN IP4 198.51.100.7"),
                "C:\n{ct}"
            );
            // The offer side is the same.
            assert_eq!(side(ct, "uas<"), side(ot, "uas<"), "v6_to_v4 INVITE side");
            assert_eq!(cl[0], ol[0], "v6_to_v4 U");
            println!(
                "v6_to_v4: deliberate difference: C sends `{}` (relay: {}), ours `{}` (relay: {})",
                c_l.0, c_l.1, o_l.0, o_l.1
            );
            continue;
        }
        assert_eq!(
            ct, ot,
            "case {}: C and ours differ\n--- C:\n{ct}--- ours:\n{ot}",
            case.name
        );
        println!("{}: C and ours agree", case.name);
    }
}
