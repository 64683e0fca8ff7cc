//! Golden offer/answer cases (tests/fixtures/sdp/<case>/) and property tests of the SDP
//! scanner and rewriter, through the public API only.
//!
//! A case directory holds `input.sdp` (exact bytes), `case.txt` (`key: value` lines, keys may
//! repeat) and, when the call succeeds, `expected.sdp`. Keys: `flags`, `direction`
//! (offer/answer), `message` (request/reply/none), `source`, `local`, `call-id`, `from-tag`,
//! `to-tag`, `ip-address`, `marker` (empty disables it), `notify` (`rtpp_notify_socket`
//! value), `dialog-id`, `bridge`, `node` (capabilities: `all`, `none`, names, `-NAME`; then
//! optionally ` adv=ADDR`), `reply` (one per command in order; `none` = transport failure),
//! `command` (expected command bodies in order), `error` (prefix of the expected error's
//! `Debug`), `ret-var`, `doc`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use rtpproxy::core::config::{parse_notify_socket, NotifySocket};
use rtpproxy::core::offer::{
    Direction, Flags, NodeInfo, OfferAnswer, OfferAnswerInput, OfferAnswerOutcome, OfferError,
    PacketInfo, ReplyOutcome, SipMessage,
};
use rtpproxy::core::proto::caps::OPTIONAL_CAPS;
use rtpproxy::core::proto::Capabilities;
use rtpproxy::core::sdp::{self, apply_edits, scan};

// ---------------------------------------------------------------------------------------------
// Fixture driver
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Case {
    kv: BTreeMap<String, Vec<String>>,
}

impl Case {
    fn load(path: &Path) -> Self {
        let text = fs::read_to_string(path).expect("case.txt");
        let mut kv: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        {
            let (k, v) = line.split_once(':').expect("key: value");
            kv.entry(k.trim().to_owned())
                .or_default()
                .push(v.strip_prefix(' ').unwrap_or(v).to_owned());
        }
        Self { kv }
    }

    fn one(&self, key: &str) -> Option<&str> {
        self.kv.get(key).and_then(|v| v.first()).map(String::as_str)
    }

    fn all(&self, key: &str) -> Vec<String> {
        self.kv.get(key).cloned().unwrap_or_default()
    }
}

fn parse_caps(spec: &str) -> Capabilities {
    let mut caps = Capabilities::NONE;
    for tok in spec.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        match tok {
            "all" => caps = Capabilities::from_bits_truncate(u32::MAX),
            "none" => caps = Capabilities::NONE,
            _ => {
                let (neg, name) = match tok.strip_prefix('-') {
                    Some(n) => (true, n),
                    None => (false, tok),
                };
                let c = OPTIONAL_CAPS
                    .iter()
                    .find(|c| c.name == name)
                    .unwrap_or_else(|| panic!("unknown capability {name}"))
                    .cap;
                caps = if neg {
                    Capabilities::from_bits_truncate(caps.bits() & !c.bits())
                } else {
                    caps.union(c)
                };
            }
        }
    }
    caps
}

struct Node {
    caps: Capabilities,
    adv: Option<String>,
    disabled: bool,
}

fn parse_nodes(case: &Case) -> Vec<Node> {
    case.all("node")
        .iter()
        .map(|n| {
            let (caps, adv) = match n.split_once(" adv=") {
                Some((c, a)) => (c, Some(a.to_owned())),
                None => (n.as_str(), None),
            };
            Node {
                caps: parse_caps(caps),
                adv,
                disabled: false,
            }
        })
        .collect()
}

/// What one run produced.
struct Run {
    commands: Vec<String>,
    result: Result<OfferAnswerOutcome, String>,
}

/// Drives one offer/answer like the host would: per stream select the first enabled node,
/// fail over to the next one on `Retry`.
fn drive(case: &Case, body: &[u8], extra_flags: &str) -> Run {
    let flags_text = format!("{}{}", case.one("flags").unwrap_or(""), extra_flags);
    let flags = match Flags::parse(flags_text.as_bytes()) {
        Ok(f) => f,
        Err(e) => {
            return Run {
                commands: vec![],
                result: Err(format!("Flags({e:?})")),
            }
        }
    };
    let source = case.one("source").unwrap_or("192.0.2.10");
    let local = case.one("local").unwrap_or("10.0.0.1");
    let packet = PacketInfo {
        source_ip: source,
        local_ip: local,
    };
    let message = match case.one("message").unwrap_or("request") {
        "request" => SipMessage::Request(packet),
        "reply" => SipMessage::Reply(packet),
        "none" => SipMessage::None,
        other => panic!("bad message {other}"),
    };
    let direction = match case.one("direction").unwrap_or("offer") {
        "offer" => Direction::Offer,
        "answer" => Direction::Answer,
        other => panic!("bad direction {other}"),
    };
    let notify: Option<NotifySocket> = case
        .one("notify")
        .map(|n| parse_notify_socket(n).expect("notify socket"));
    let mut input = OfferAnswerInput::new(
        body,
        &flags,
        case.one("call-id").unwrap_or("").as_bytes(),
        case.one("from-tag").unwrap_or("").as_bytes(),
        case.one("to-tag").unwrap_or("").as_bytes(),
        message,
        direction,
    );
    input.ip_address = case.one("ip-address");
    if let Some(m) = case.one("marker") {
        input.marker = m.as_bytes();
    }
    input.notify_socket = notify.as_ref();
    input.bridge_address = case.one("bridge");

    let mut commands = Vec::new();
    let mut replies = case.all("reply").into_iter();
    let mut nodes = parse_nodes(case);
    let result = (|| -> Result<OfferAnswerOutcome, String> {
        let mut oa = OfferAnswer::new(input).map_err(|e| format!("{e:?}"))?;
        if let Some(did) = case.one("dialog-id") {
            oa.set_dialog_id(did.as_bytes())
                .map_err(|e| format!("{e:?}"))?;
        }
        while oa.current_stream().is_some() {
            loop {
                let idx = nodes
                    .iter()
                    .position(|n| !n.disabled)
                    .ok_or_else(|| "no available proxies".to_owned())?;
                let node = NodeInfo {
                    caps: nodes[idx].caps,
                    advertised: nodes[idx].adv.as_deref(),
                };
                let cmd = oa.build_command(node).map_err(|e| format!("{e:?}"))?;
                commands.push(String::from_utf8(cmd.as_bytes().to_vec()).expect("utf-8 command"));
                let reply = replies.next().expect("a reply for every command");
                let reply = (reply != "none").then(|| format!("{reply}\n"));
                match oa
                    .handle_reply(reply.as_deref().map(str::as_bytes))
                    .map_err(|e| format!("{e:?}"))?
                {
                    ReplyOutcome::Done(_) => break,
                    ReplyOutcome::Retry(_) => nodes[idx].disabled = true,
                }
            }
        }
        oa.finish().map_err(|e| format!("{e:?}"))
    })();
    Run { commands, result }
}

fn fixture_dirs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sdp");
    let mut dirs: Vec<PathBuf> = fs::read_dir(&root)
        .expect("fixture dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("case.txt").is_file())
        .collect();
    dirs.sort();
    dirs
}

fn check_case(dir: &Path) -> Result<(), String> {
    let case = Case::load(&dir.join("case.txt"));
    let input = fs::read(dir.join("input.sdp")).map_err(|e| e.to_string())?;
    let run = drive(&case, &input, "");
    let want_cmds = case.all("command");
    if run.commands != want_cmds {
        return Err(format!(
            "commands differ:\n  got  {:?}\n  want {:?}",
            run.commands, want_cmds
        ));
    }
    match (&run.result, case.one("error")) {
        (Err(e), Some(want)) if e.starts_with(want) => return Ok(()),
        (Err(e), _) => return Err(format!("unexpected error {e}")),
        (Ok(_), Some(want)) => return Err(format!("expected error {want}, got success")),
        (Ok(_), None) => {}
    }
    let out = run.result.expect("checked");
    let got = out.apply(&input).map_err(|e| format!("{e:?}"))?;
    let want = fs::read(dir.join("expected.sdp")).map_err(|e| e.to_string())?;
    if got != want {
        return Err(format!(
            "body differs:\n--- got\n{}\n--- want\n{}",
            got.escape_ascii(),
            want.escape_ascii()
        ));
    }
    if let Some(rv) = case.one("ret-var") {
        if out.ret_var() != Some(rv.as_bytes()) {
            return Err(format!(
                "ret_var {:?} != {rv}",
                out.ret_var().map(<[u8]>::escape_ascii)
            ));
        }
    }
    // Idempotence: the rewritten body, forced through again with the same replies, is a
    // fixed point.
    let again = drive(&case, &got, "f");
    let again = again
        .result
        .map_err(|e| format!("second pass failed: {e}"))?;
    let got2 = again.apply(&got).map_err(|e| format!("{e:?}"))?;
    if got2 != got {
        return Err(format!(
            "second pass changed the body:\n{}",
            got2.escape_ascii()
        ));
    }
    Ok(())
}

#[test]
fn golden_fixtures() {
    let dirs = fixture_dirs();
    assert!(dirs.len() >= 40, "fixtures missing: {}", dirs.len());
    let mut failures = Vec::new();
    for dir in &dirs {
        if let Err(e) = check_case(dir) {
            failures.push(format!(
                "{}: {e}",
                dir.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n\n")
    );
}

/// The Appendix A offer reproduced byte for byte, spelled out here as well.
#[test]
fn appendix_a_offer_bytes() {
    let body = b"v=0\r\no=alice 2890844526 2890844526 IN IP4 10.1.1.5\r\ns=-\r\nc=IN IP4 10.1.1.5\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\nm=video 0 RTP/AVP 31\r\nm=application 5000 TCP/MSRP *\r\n";
    let flags = Flags::parse(b"n").unwrap();
    let sock = parse_notify_socket("tcp:10.0.0.1:9999").unwrap();
    let mut input = OfferAnswerInput::new(
        body,
        &flags,
        b"a84b4c76e66710@pc33",
        b"1928301774",
        b"",
        SipMessage::Request(PacketInfo {
            source_ip: "192.0.2.10",
            local_ip: "10.0.0.1",
        }),
        Direction::Offer,
    );
    input.notify_socket = Some(&sock);
    let mut oa = OfferAnswer::new(input).unwrap();
    assert!(oa.needs_dialog_for_notify());
    oa.set_dialog_id(b"2a1.c").unwrap();
    let cmd = oa
        .build_command(NodeInfo {
            caps: Capabilities::from_bits_truncate(u32::MAX),
            advertised: None,
        })
        .unwrap();
    assert_eq!(
        cmd.as_bytes(),
        &b"Uc0,8,101 a84b4c76e66710@pc33 192.0.2.10 49170 1928301774;1 tcp:10.0.0.1:9999 T2a1.c"[..]
    );
    assert!(matches!(
        oa.handle_reply(Some(b"35004 10.0.0.2\n")),
        Ok(ReplyOutcome::Done(_))
    ));
    assert!(oa.current_stream().is_none());
    let out = oa.finish().unwrap();
    assert_eq!(
        out.apply(body).unwrap(),
        &b"v=0\r\no=alice 2890844526 2890844526 IN IP4 10.1.1.5\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 35004 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\nm=video 0 RTP/AVP 31\r\nm=application 5000 TCP/MSRP *\r\na=nortpproxy:yes\r\n"[..]
    );
    // edits are minimal: the c= address, the port, the marker
    let spans: Vec<(usize, usize)> = out.edits.iter().map(|e| (e.offset, e.len)).collect();
    assert_eq!(spans.len(), 3);
    assert!(out.edits.iter().all(|e| e.len <= 8));
}

// ---------------------------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------------------------

fn eol() -> impl Strategy<Value = &'static str> {
    prop_oneof![4 => Just("\r\n"), 2 => Just("\n")]
}

fn ipv4() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just("0.0.0.0".to_owned()),
        6 => (1u8..=254, 0u8..=255, 0u8..=255, 1u8..=254).prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
    ]
}

fn ipv6() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just("::".to_owned()),
        4 => (0u16..=0xffff, 0u16..=0xffff).prop_map(|(a, b)| format!("2001:db8::{a:x}:{b:x}")),
    ]
}

fn addr() -> impl Strategy<Value = (String, &'static str)> {
    prop_oneof![3 => ipv4().prop_map(|a| (a, "IP4")), 1 => ipv6().prop_map(|a| (a, "IP6"))]
}

/// Junk lines that must survive untouched: attributes with odd spacing, ICE lines, bandwidth,
/// lines that merely contain `m=`/`c=` in the middle.
fn junk_line() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a=sendrecv".to_owned()),
        Just("a=rtcp-mux".to_owned()),
        Just("b=AS:64".to_owned()),
        Just("a=candidate:1 1 udp 2122260223 192.168.1.20 54400 typ host".to_owned()),
        Just("a=ice-ufrag:F7gI".to_owned()),
        Just("a=x-odd:  m=audio 1 RTP/AVP 0  c=IN IP4 1.1.1.1 ".to_owned()),
        Just(" c=IN IP4 9.9.9.9".to_owned()),
        "a=[a-z]{1,8}:[ -~]{0,20}".prop_map(|s| s),
    ]
}

#[derive(Debug, Clone)]
struct GenMedia {
    media: &'static str,
    port: String,
    proto: &'static str,
    payloads: &'static str,
    conn: Option<(String, &'static str)>,
    rtcp: Option<Option<(String, &'static str)>>,
    junk: Vec<String>,
}

#[derive(Debug, Clone)]
struct GenSession {
    origin: (String, &'static str),
    conn: Option<(String, &'static str)>,
    junk: Vec<String>,
    media: Vec<GenMedia>,
}

fn gen_media() -> impl Strategy<Value = GenMedia> {
    (
        prop_oneof![Just("audio"), Just("video"), Just("application")],
        prop_oneof![1 => Just("0".to_owned()), 5 => (1u16..=65535).prop_map(|p| p.to_string()), 1 => (1u16..=65534).prop_map(|p| format!("{p}/2"))],
        prop_oneof![
            Just("RTP/AVP"),
            Just("rtp/savpf"),
            Just("UDP/TLS/RTP/SAVPF"),
            Just("udp"),
            Just("udptl"),
            Just("TCP/MSRP"),
            Just("UDP/DTLS/SCTP")
        ],
        prop_oneof![Just("0"), Just("0 8 101"), Just("96 97"), Just("t38"), Just("*")],
        proptest::option::of(addr()),
        proptest::option::of(proptest::option::of(addr())),
        proptest::collection::vec(junk_line(), 0..3),
    )
        .prop_map(|(media, port, proto, payloads, conn, rtcp, junk)| GenMedia {
            media,
            port,
            proto,
            payloads,
            conn,
            rtcp,
            junk,
        })
}

fn gen_session() -> impl Strategy<Value = GenSession> {
    (
        addr(),
        proptest::option::of(addr()),
        proptest::collection::vec(junk_line(), 0..3),
        proptest::collection::vec(gen_media(), 1..4),
    )
        .prop_map(|(origin, conn, junk, media)| GenSession {
            origin,
            conn,
            junk,
            media,
        })
}

/// Renders sessions with a random line ending per line (cycled from `eols`).
fn render(sessions: &[GenSession], eols: &[&str], terminated: bool) -> Vec<u8> {
    let mut lines: Vec<String> = Vec::new();
    for s in sessions {
        lines.push("v=0".into());
        lines.push(format!("o=- 1 1 IN {} {}", s.origin.1, s.origin.0));
        lines.push("s=-".into());
        if let Some((a, f)) = &s.conn {
            lines.push(format!("c=IN {f} {a}"));
        }
        lines.push("t=0 0".into());
        lines.extend(s.junk.iter().cloned());
        for m in &s.media {
            lines.push(format!(
                "m={} {} {} {}",
                m.media, m.port, m.proto, m.payloads
            ));
            if let Some((a, f)) = &m.conn {
                lines.push(format!("c=IN {f} {a}"));
            }
            match &m.rtcp {
                Some(Some((a, f))) => lines.push(format!("a=rtcp:9 IN {f} {a}")),
                Some(None) => lines.push("a=rtcp:9".into()),
                None => {}
            }
            lines.extend(m.junk.iter().cloned());
        }
    }
    let mut out = Vec::new();
    let n = lines.len();
    for (i, l) in lines.iter().enumerate() {
        out.extend_from_slice(l.as_bytes());
        if i + 1 < n || terminated {
            out.extend_from_slice(eols[i % eols.len()].as_bytes());
        }
    }
    out
}

#[derive(Debug, Clone)]
struct GenReply {
    port: u16,
    addr: Option<(String, bool)>,
}

fn gen_reply() -> impl Strategy<Value = GenReply> {
    (
        1u16..=65535,
        proptest::option::of(prop_oneof![
            ipv4().prop_map(|a| (a, false)),
            ipv6().prop_map(|a| (a, true))
        ]),
    )
        .prop_map(|(port, addr)| GenReply { port, addr })
}

fn reply_text(r: &GenReply) -> String {
    match &r.addr {
        None => format!("{}\n", r.port),
        Some((a, false)) => format!("{} {a}\n", r.port),
        Some((a, true)) => format!("{} {a} 6\n", r.port),
    }
}

/// Runs a whole offer with one node that always answers from `replies` (cycled).
fn offer(body: &[u8], flags: &str, replies: &[GenReply]) -> Result<OfferAnswerOutcome, OfferError> {
    let flags = Flags::parse(flags.as_bytes()).unwrap();
    let input = OfferAnswerInput::new(
        body,
        &flags,
        b"cid@host",
        b"ftag",
        b"",
        SipMessage::Request(PacketInfo {
            source_ip: "192.0.2.10",
            local_ip: "10.0.0.1",
        }),
        Direction::Offer,
    );
    let mut oa = OfferAnswer::new(input)?;
    let mut i = 0;
    while oa.current_stream().is_some() {
        oa.build_command(NodeInfo {
            caps: Capabilities::from_bits_truncate(u32::MAX),
            advertised: None,
        })?;
        let r = reply_text(&replies[i % replies.len()]);
        i += 1;
        oa.handle_reply(Some(r.as_bytes()))?;
    }
    oa.finish()
}

/// Splits into (content, terminator) pairs on CR/LF, keeping terminators.
fn split_lines(b: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i] != b'\r' && b[i] != b'\n' {
            i += 1;
        }
        let content = &b[start..i];
        let t0 = i;
        if i < b.len() && b[i] == b'\r' {
            i += 1;
        }
        if i < b.len() && b[i] == b'\n' {
            i += 1;
        }
        out.push((content, &b[t0..i]));
    }
    out
}

fn tokens(line: &[u8]) -> Vec<&[u8]> {
    line.split(|&b| b == b' ' || b == b'\t')
        .filter(|t| !t.is_empty())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// (a) Outside the edited tokens the output equals the input: same lines, same line
    /// endings, untouched lines byte-identical, and in touched lines only the port, the
    /// address, the IP4/IP6 token and the a=rtcp value may differ; the only new line is the
    /// marker at the end.
    #[test]
    fn edits_stay_inside_their_tokens(
        sessions in proptest::collection::vec(gen_session(), 1..3),
        eols in proptest::collection::vec(eol(), 1..5),
        terminated in any::<bool>(),
        flags in prop_oneof![Just(""), Just("c"), Just("o"), Just("co"), Just("r"), Just("cor")],
        replies in proptest::collection::vec(gen_reply(), 1..4),
    ) {
        let body = render(&sessions, &eols, terminated);
        let Ok(out) = offer(&body, flags, &replies) else { return Ok(()); };
        let new = out.apply(&body).unwrap();
        let a = split_lines(&body);
        let b = split_lines(&new);
        prop_assert!(b.len() == a.len() + 1 || (!out.marker_inserted && b.len() == a.len()));
        // the marker line follows the last CRLF-terminated line (C rule), else comes last
        let mut b_wo: Vec<_> = b.clone();
        if out.marker_inserted {
            let pos = b.iter().position(|(c, _)| *c == b"a=nortpproxy:yes").unwrap();
            let want = a.iter().rposition(|(_, t)| *t == b"\r\n").map_or(a.len(), |i| i + 1);
            prop_assert_eq!(pos, want);
            b_wo.remove(pos);
        }
        for ((ca, ta), (cb, tb)) in a.iter().zip(b_wo.iter()) {
            // terminators: identical, except that an unterminated last line may gain one
            prop_assert!(ta == tb || ta.is_empty(), "terminator changed");
            if ca == cb {
                continue;
            }
            let (ta_, tb_) = (tokens(ca), tokens(cb));
            if !ca.starts_with(b"a=rtcp:") {
                prop_assert_eq!(ta_.len(), tb_.len());
            }
            if ca.starts_with(b"m=") {
                for (i, (x, y)) in ta_.iter().zip(tb_.iter()).enumerate() {
                    prop_assert!(i == 1 || x == y, "m= token {} changed", i);
                }
            } else if ca.starts_with(b"c=") || ca.starts_with(b"o=") {
                for (i, (x, y)) in ta_.iter().zip(tb_.iter()).enumerate() {
                    let fam = i + 2 == ta_.len();
                    let last = i + 1 == ta_.len();
                    prop_assert!(x == y || last || (fam && x.starts_with(b"IP") && y.starts_with(b"IP")));
                }
            } else {
                prop_assert!(ca.starts_with(b"a=rtcp:") && cb.starts_with(b"a=rtcp:"), "line changed: {:?}", ca.escape_ascii().to_string());
            }
        }
        // every edit lies within the scanned token spans or is the marker insertion
        let sdp = scan(&body).unwrap();
        let mut allowed: Vec<sdp::Span> = Vec::new();
        for s in sdp.sessions() {
            for l in [Some(s.origin), s.connection].into_iter().flatten() {
                if let Some(ad) = l.address { allowed.push(ad.addr); allowed.push(ad.family_digit); }
            }
        }
        for m in sdp.media() {
            allowed.push(m.port);
            if let Some(r) = m.rtcp { allowed.push(r); }
            if let Some(ad) = m.connection.and_then(|c| c.address) { allowed.push(ad.addr); allowed.push(ad.family_digit); }
        }
        for e in &out.edits {
            let ok = allowed.contains(&e.span()) || (e.len == 0 && e.replacement.windows(16).any(|w| w == b"a=nortpproxy:yes"));
            prop_assert!(ok, "edit outside allowed spans: {:?}", e);
        }
    }

    /// (c) Rewriting the rewritten body again (forced past the marker) with the same replies
    /// changes nothing.
    #[test]
    fn rewriting_twice_is_idempotent(
        sessions in proptest::collection::vec(gen_session(), 1..3),
        eols in proptest::collection::vec(eol(), 1..5),
        terminated in any::<bool>(),
        flags in prop_oneof![Just(""), Just("c"), Just("o"), Just("co"), Just("r"), Just("cor")],
        replies in proptest::collection::vec(gen_reply(), 1..4),
    ) {
        let body = render(&sessions, &eols, terminated);
        let Ok(out) = offer(&body, flags, &replies) else { return Ok(()); };
        let once = out.apply(&body).unwrap();
        let again = offer(&once, &format!("{flags}f"), &replies).unwrap();
        prop_assert!(again.edits.is_empty(), "second pass edits: {:?}", again.edits);
        prop_assert_eq!(again.apply(&once).unwrap(), once);
    }

    /// (b) Any bytes: the scanner and the whole offer flow return Ok or a typed error.
    #[test]
    fn any_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..400),
                             flags in proptest::collection::vec(any::<u8>(), 0..20),
                             reply in proptest::collection::vec(any::<u8>(), 0..40)) {
        let _ = scan(&body);
        let _ = Flags::parse(&flags);
        if let Ok(f) = Flags::parse(&flags) {
            let input = OfferAnswerInput::new(&body, &f, b"c", b"f", b"t",
                SipMessage::Reply(PacketInfo { source_ip: "1.2.3.4", local_ip: "5.6.7.8" }), Direction::Offer);
            if let Ok(mut oa) = OfferAnswer::new(input) {
                let node = NodeInfo { caps: Capabilities::from_bits_truncate(u32::MAX), advertised: None };
                for _ in 0..4 {
                    if oa.current_stream().is_none() || oa.build_command(node).is_err() { break; }
                    let _ = oa.handle_reply(Some(&reply));
                }
                if let Ok(out) = oa.finish() {
                    prop_assert!(out.apply(&body).is_ok());
                }
            }
        }
    }

    /// (b) SDP-shaped noise: lines from a small alphabet of heads and tokens.
    #[test]
    fn sdp_shaped_noise_never_panics(parts in proptest::collection::vec(
        prop_oneof![Just("v=0"), Just("o=- 1 1 IN IP4 1.2.3.4"), Just("o="), Just("c=IN IP6"), Just("c=IN IP4 0.0.0.0"),
                    Just("m=audio"), Just("m=audio 0 RTP/AVP"), Just("m=audio 1 RTP/AVP 0"), Just("m=x 1 udp"), Just("a=rtcp:"),
                    Just("a=rtcp: 5 IN IP4 1.1.1.1 "), Just("\r"), Just("\n"), Just("\r\n"), Just(" "), Just("\t"), Just("IP4"), Just("\0")], 0..40),
        replies in proptest::collection::vec(gen_reply(), 1..3)) {
        let body: Vec<u8> = parts.concat().into_bytes();
        if let Ok(sdp) = scan(&body) {
            for m in sdp.media() {
                prop_assert!(m.port.end() <= body.len() && m.line.end() <= body.len());
            }
        }
        for flags in ["", "co", "k", "f"] {
            if let Ok(out) = offer(&body, flags, &replies) {
                prop_assert!(apply_edits(&body, &out.edits).is_ok());
            }
        }
    }
}

/// Regression (found by `rewriting_twice_is_idempotent`): a held session-level `c=` (`::`)
/// with flag `c` and one stream that has its own `c=`: the session line must stay on hold for
/// the stream that relies on it, so a second pass changes nothing.
#[test]
fn flag_c_keeps_a_held_session_connection() {
    let media = |conn: Option<(String, &'static str)>, rtcp| GenMedia {
        media: "audio",
        port: "1".into(),
        proto: "RTP/AVP",
        payloads: "0",
        conn,
        rtcp,
        junk: vec![],
    };
    let sessions = [GenSession {
        origin: ("0.0.0.0".into(), "IP4"),
        conn: Some(("::".into(), "IP6")),
        junk: vec![],
        media: vec![
            media(Some(("1.0.0.1".into(), "IP4")), None),
            media(None, Some(None)),
        ],
    }];
    let body = render(&sessions, &["\r\n"], false);
    let replies = [GenReply {
        port: 1,
        addr: None,
    }];
    let out = offer(&body, "c", &replies).unwrap();
    let once = out.apply(&body).unwrap();
    let text = String::from_utf8_lossy(&once).into_owned();
    let session_c = text.lines().find(|l| l.starts_with("c=")).unwrap();
    assert!(
        session_c == "c=IN IP6 ::" || session_c == "c=IN IP4 0.0.0.0",
        "held session c= taken off hold:\n{text}"
    );
    let again = offer(&once, "cf", &replies).unwrap();
    assert!(
        again.edits.is_empty(),
        "second pass edits: {:?}\n{text}",
        again.edits
    );
}
