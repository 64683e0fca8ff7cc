//! Differential end-to-end test: the same calls through the C `rtpproxy` module of the OpenSIPS
//! build and through ours, with the same OpenSIPS binary, the same script and the same kind of
//! relay (a real `rtpproxy` daemon).
//!
//! For every case a sipp UAC (scenario under `tests/e2e/scenarios/`) calls a sipp UAS through
//! OpenSIPS, whose script runs `rtpproxy_offer` on INVITEs, `rtpproxy_answer` on replies with
//! SDP and `rtpproxy_unforce` on BYE. Compared, after normalisation:
//!
//! - every message the UAS received (first line, Content-Length, body) and every reply the UAC
//!   received (the answer side), plus the headers the script adds: return code, `ret_var`,
//!   `sock_var` and, in body-variable mode, the variable's content;
//! - every control command the relay received (with its reply), captured by a logging UDP
//!   proxy in front of each relay; start-up probes (`V`, `VF`) are left out (their count and
//!   timing differ by design, see doc/differences.md).
//!
//! Normalised: relay-allocated ports (numbered in the order the relay handed them out),
//! cookies, the control ports, and sipp's tags and media ports in the built-in scenario (the
//! Call-ID is fixed with `-cid_str`). The transcripts must then be equal, except for the
//! deliberate differences listed in [`DELIBERATE`], each of which is asserted explicitly.
//!
//! Set 0 is a plain relay with IPv4 and IPv6 media addresses, set 1 a bridging relay (for the
//! `i`/`e` flags); OpenSIPS listens on IPv4 and IPv6. Each implementation gets fresh relays.
//! `DIFF_CASES=a,b` runs only the named cases. The transcripts are written to
//! `transcripts.txt` in the scratch directories (`$TMPDIR/rtpproxy-e2e-<pid>-diff-{C,Ours}`).
//!
//! Without OpenSIPS, the C module, sipp or an rtpproxy binary the test prints SKIPPED and passes.

mod e2e;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{cfg, ControlTap, Dir, Env, Impl, OpenSips, Relay, TapEvent};

const TEST: &str = "c_and_rust_modules_agree_call_by_call";

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

/// How the UAC reaches OpenSIPS.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Transport {
    V4,
    V6,
}

/// One call: which scenarios, which flags, which set, which mode.
#[derive(Clone, Copy, Debug)]
struct Case {
    name: &'static str,
    /// UAC and UAS scenario files (without `.xml`); `None` = sipp's built-in `uac`/`uas`.
    scenarios: Option<(&'static str, &'static str)>,
    offer: &'static str,
    answer: &'static str,
    /// RTPProxy set: 0 (plain relay, IPv4 + IPv6) or 1 (bridging relay, for `i`/`e`).
    set: u8,
    /// Body-variable mode (`$var(body)` as the 6th parameter) instead of message mode.
    body_var: bool,
    /// The `ip_address` parameter (message mode, set 0); empty = not given.
    ip: &'static str,
    transport: Transport,
}

const fn case(
    name: &'static str,
    uac: &'static str,
    uas: &'static str,
    offer: &'static str,
    answer: &'static str,
) -> Case {
    Case {
        name,
        scenarios: Some((uac, uas)),
        offer,
        answer,
        set: 0,
        body_var: false,
        ip: "",
        transport: Transport::V4,
    }
}

fn cases() -> Vec<Case> {
    let mut v = vec![
        Case {
            name: "default",
            scenarios: None,
            offer: "",
            answer: "",
            set: 0,
            body_var: false,
            ip: "",
            transport: Transport::V4,
        },
        case("basic", "uac_basic", "uas_basic", "", ""),
        case("reinvite", "uac_reinvite", "uas_reinvite", "", ""),
        case("hold", "uac_hold", "uas_reinvite", "", ""),
        case("hold_r", "uac_hold", "uas_reinvite", "r", "r"),
        case("two_streams", "uac_two_streams", "uas_two_streams", "", ""),
        case("mixed", "uac_mixed", "uas_basic", "", ""),
        case("co", "uac_media_c", "uas_two_streams", "co", "co"),
        case(
            "co_session_only",
            "uac_two_streams",
            "uas_two_streams",
            "co",
            "co",
        ),
        case("r", "uac_trust", "uas_basic", "r", "r"),
        case("f", "uac_marker", "uas_basic", "f", ""),
        case("marker_without_f", "uac_marker", "uas_basic", "", ""),
        case("k", "uac_basic", "uas_basic", "k", "k"),
        case("a", "uac_trust", "uas_basic", "a", "a"),
        case("s_w", "uac_basic", "uas_basic", "s", "w"),
        case("z", "uac_basic", "uas_basic", "z20", "z20"),
        Case {
            ip: "203.0.113.50",
            ..case("ip_address", "uac_basic", "uas_basic", "", "")
        },
        Case {
            ip: "2001:db8::50",
            ..case("ip_address_v6", "uac_basic", "uas_basic", "", "")
        },
        Case {
            set: 1,
            ..case("ie", "uac_basic", "uas_basic", "ie", "ei")
        },
        case("ipv6", "uac_ipv6", "uas_ipv6", "", ""),
        case("ipv6_r", "uac_ipv6", "uas_ipv6", "r", "r"),
        Case {
            transport: Transport::V6,
            ..case("ipv6_transport", "uac_ipv6", "uas_ipv6", "", "")
        },
        case("webrtc", "uac_webrtc", "uas_webrtc", "", ""),
        case("webrtc_co", "uac_webrtc", "uas_webrtc", "co", "co"),
        case("webrtc_trickle", "uac_webrtc_trickle", "uas_webrtc", "", ""),
    ];
    for (name, uac, uas, offer, answer) in [
        ("body_var", "uac_basic", "uas_basic", "", ""),
        ("body_var_c", "uac_basic", "uas_basic", "c", "c"),
        ("body_var_media_c", "uac_media_c", "uas_two_streams", "", ""),
        ("body_var_webrtc", "uac_webrtc", "uas_webrtc", "", ""),
        ("body_var_k", "uac_basic", "uas_basic", "k", "k"),
    ] {
        v.push(Case {
            body_var: true,
            ..case(name, uac, uas, offer, answer)
        });
    }
    if !e2e::HOST_RELEASE.starts_with("3.") {
        // 4.0's 7th parameter, bind_local (passed in X-Ip as `bind:<value>`, see `routes`).
        v.push(Case {
            ip: "bind:127.0.0.1",
            ..case("bind_local", "uac_basic", "uas_basic", "", "")
        });
    }
    v
}

// ---------------------------------------------------------------------------------------------
// Deliberate differences
// ---------------------------------------------------------------------------------------------

/// A difference between the C module and ours that is on purpose: the C module has a defect
/// there (spec §11.2). `check` asserts the exact difference on the two transcripts of the case
/// and returns the C transcript as ours is expected to be, so that everything else is still
/// compared for equality.
struct Deliberate {
    case: &'static str,
    why: &'static str,
    check: fn(&str, &str) -> String,
}

const DELIBERATE: &[Deliberate] = &[
    Deliberate {
        case: "ipv6",
        why: "D8: an IPv6 SDP relayed for an IPv4 source without `r`: the C module takes the \
              old family from the packet source, so it writes `c=IN IP6 <IPv4 relay address>` \
              (an invalid line); ours takes the old family from the line and writes \
              `c=IN IP4 <relay>` (INVITE at the UAS and 200 OK at the UAC)",
        check: |c, ours| {
            same_but(
                c,
                ours,
                "  | c=IN IP6 127.0.0.1\\r\\n",
                "  | c=IN IP4 127.0.0.1\\r\\n",
                2,
            )
        },
    },
    Deliberate {
        case: "ip_address_v6",
        why: "D9: an IPv6 literal as ip_address with an IPv4 relay: the C module takes the \
              family from the relay's reply only and writes `c=IN IP4 2001:db8::50`; ours \
              writes the family of the literal, `c=IN IP6 2001:db8::50`",
        check: |c, ours| {
            same_but(
                c,
                ours,
                "  | c=IN IP4 2001:db8::50\\r\\n",
                "  | c=IN IP6 2001:db8::50\\r\\n",
                2,
            )
        },
    },
    Deliberate {
        case: "body_var",
        why: "B1/D2: body_var mode, stream without a media-level c=: the C module leaves the \
              session-level c= pointing at the endpoint (media would bypass the relay) unless \
              flag `c` is given; ours rewrites it as message mode does (offer and answer side)",
        check: |c, ours| session_c_kept(c, ours, 2),
    },
    Deliberate {
        case: "body_var_media_c",
        why: "B1/D2 again, answer side only: the UAS's audio stream uses the session-level c=, \
              which the C module leaves unchanged in body_var mode",
        check: |c, ours| session_c_kept(c, ours, 1),
    },
    Deliberate {
        case: "body_var_webrtc",
        why: "B3/D4: body_var mode when the last m= stream is not proxied (the WebRTC data \
              channel, UDP/DTLS/SCTP): the C module drops that stream's text from the \
              variable; ours keeps it byte for byte",
        check: |c, ours| body_var_last_stream(c, ours),
    },
    Deliberate {
        case: "body_var_k",
        why: "B4/D4: body_var mode with flag `k`: the C module empties the variable; ours \
              leaves the SDP unchanged (k = keep the body)",
        check: |c, ours| body_var_keep(c, ours),
    },
];

/// The C transcript has the line `bad` exactly `n` times where ours has `good`; returns the C
/// transcript with them replaced.
fn same_but(c: &str, ours: &str, bad: &str, good: &str, n: usize) -> String {
    let count = |t: &str, l: &str| t.lines().filter(|x| *x == l).count();
    assert_eq!(count(c, bad), n, "C should have `{bad}` {n} times:\n{c}");
    assert_eq!(count(ours, bad), 0, "ours has `{bad}`:\n{ours}");
    assert_eq!(
        count(ours, good),
        n,
        "ours should have `{good}` {n} times:\n{ours}"
    );
    let lines: Vec<String> = c
        .lines()
        .map(|l| {
            if l == bad {
                good.to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect();
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// The decoded `X-Body-Var` blocks of a transcript (offer side first, answer side second).
fn body_var_blocks(t: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in t.lines() {
        if line.starts_with("  X-Body-Var:") {
            if let Some(b) = cur.take() {
                out.push(b);
            }
            cur = Some(String::new());
        } else if let Some(b) = cur.as_mut() {
            if let Some(rest) = line.strip_prefix("    # ") {
                b.push_str(rest);
                b.push('\n');
            } else {
                out.push(cur.take().unwrap());
            }
        }
    }
    out.extend(cur);
    out
}

/// B1: the only differences inside the body_var blocks are session-level `c=` lines (before
/// the first `m=`) that C leaves at the endpoint's address and ours points at the relay;
/// `expected` of them in all.
fn session_c_kept(c: &str, ours: &str, expected: usize) -> String {
    let (cb, ob) = (body_var_blocks(c), body_var_blocks(ours));
    assert_eq!((cb.len(), ob.len()), (2, 2), "two body_var blocks each");
    let mut fixed = c.to_owned();
    let mut found = 0;
    for (cblock, oblock) in cb.iter().zip(&ob) {
        let (cl, ol): (Vec<&str>, Vec<&str>) = (cblock.lines().collect(), oblock.lines().collect());
        assert_eq!(
            cl.len(),
            ol.len(),
            "same number of lines:\n{cblock}\n{oblock}"
        );
        let first_m = ol.iter().position(|l| l.starts_with("m=")).unwrap();
        let mut rebuilt = cblock.clone();
        for (i, (x, y)) in cl.iter().zip(&ol).enumerate() {
            if x == y {
                continue;
            }
            assert!(
                i < first_m && x.starts_with("c=IN IP4 ") && *y == "c=IN IP4 127.0.0.1\\r\\n",
                "only the session c= may differ, not line {i}: C `{x}`, ours `{y}`"
            );
            rebuilt = rebuilt.replacen(&format!("{x}\n"), &format!("{y}\n"), 1);
            found += 1;
        }
        fixed = fixed.replacen(&indent_block(cblock), &indent_block(&rebuilt), 1);
    }
    assert_eq!(found, expected, "session c= lines left unchanged by C");
    fixed
}

fn body_var_last_stream(c: &str, ours: &str) -> String {
    let (cb, ob) = (body_var_blocks(c), body_var_blocks(ours));
    assert_eq!((cb.len(), ob.len()), (2, 2), "two body_var blocks each");
    let mut fixed = c.to_owned();
    for i in 0..2 {
        let tail = "m=application ";
        assert!(
            !cb[i].contains(tail),
            "C drops the data channel:\n{}",
            cb[i]
        );
        assert!(
            ob[i].contains(tail),
            "ours keeps the data channel:\n{}",
            ob[i]
        );
        // Ours = C's body with the data channel's lines back in front of the marker.
        let ours_lines: Vec<&str> = ob[i].lines().collect();
        let start = ours_lines.iter().position(|l| l.starts_with(tail)).unwrap();
        let end = ours_lines.len() - 1; // the marker line stays last
        let mut c_lines: Vec<&str> = cb[i].lines().collect();
        assert_eq!(
            c_lines.last().copied(),
            Some("a=nortpproxy:yes\\r\\n"),
            "C ends with the marker"
        );
        let marker = c_lines.pop().unwrap();
        c_lines.extend_from_slice(&ours_lines[start..end]);
        c_lines.push(marker);
        let rebuilt: String = c_lines.iter().map(|l| format!("{l}\n")).collect();
        assert_eq!(
            rebuilt, ob[i],
            "apart from the dropped stream, C and ours agree"
        );
        fixed = fixed.replacen(&indent_block(&cb[i]), &indent_block(&ob[i]), 1);
    }
    fixed
}

fn body_var_keep(c: &str, ours: &str) -> String {
    let (cb, ob) = (body_var_blocks(c), body_var_blocks(ours));
    assert_eq!((cb.len(), ob.len()), (2, 2), "two body_var blocks each");
    let mut fixed = c.to_owned();
    for i in 0..2 {
        assert_eq!(cb[i], "", "C empties the variable with k");
        assert!(ob[i].starts_with("v=0"), "ours keeps the SDP:\n{}", ob[i]);
        assert!(
            !ob[i].contains("nortpproxy"),
            "no marker with k:\n{}",
            ob[i]
        );
        fixed = fixed.replacen(
            "  X-Body-Var: (hex)\n  X-",
            &format!("  X-Body-Var: (hex)\n{}  X-", indent_block(&ob[i])),
            1,
        );
    }
    fixed
}

fn indent_block(b: &str) -> String {
    b.lines().map(|l| format!("    # {l}\n")).collect()
}

// ---------------------------------------------------------------------------------------------
// The relay
// ---------------------------------------------------------------------------------------------

/// The rtpproxy daemon to use: `RTPPROXY_BIN`, else /opt/rtpproxy/bin/rtpproxy.
fn rtpproxy_binary() -> Option<PathBuf> {
    std::env::var_os("RTPPROXY_BIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from("/opt/rtpproxy/bin/rtpproxy")))
        .filter(|p| p.exists())
}

/// A real rtpproxy daemon in `dir` with the media arguments `listen` (`-l …`, `-6 …`) and ports
/// from `min..=max`; returns it with its control address.
fn start_relay(
    bin: &Path,
    dir: &Path,
    name: &str,
    listen: &[&str],
    min: u16,
    max: u16,
) -> (Relay, SocketAddr) {
    let control = SocketAddr::from(([127, 0, 0, 1], e2e::port()));
    let mut args: Vec<String> = listen.iter().map(|a| (*a).to_owned()).collect();
    args.extend(["-m", &min.to_string(), "-M", &max.to_string(), "-d", "INFO"].map(String::from));
    let relay = Relay::start_logged(bin, dir, name, control, &args).expect("start rtpproxy");
    (relay, control)
}

// ---------------------------------------------------------------------------------------------
// OpenSIPS script
// ---------------------------------------------------------------------------------------------

const MODULES: &str = r#"loadmodule "sl.so"
loadmodule "sipmsgops.so""#;

/// One offer or answer in the script: message or body-variable mode, set 0 or 1, with
/// `sock_var` and `ret_var`, and the results as headers of the forwarded message.
fn media_route(name: &str, function: &str) -> String {
    let call = |set: &str, body: &str| {
        format!(
            "{function}(\"$var(flags)\", , {set}, $var(sock), $var(ret){body}); $var(rc) = $rc;"
        )
    };
    let mip = format!(
        "{function}(\"$var(flags)\", \"$var(ip)\", , $var(sock), $var(ret)); $var(rc) = $rc;"
    );
    // 4.0 only: bind_local, the 7th parameter.
    let mbl = if e2e::HOST_RELEASE.starts_with("3.") {
        String::new()
    } else {
        format!(
            "}} else if ($var(bl) != \"\") {{\n        {function}(\"$var(flags)\", , , $var(sock), \
             $var(ret), , $var(bl)); $var(rc) = $rc;"
        )
    };
    format!(
        r#"route[{name}] {{
    $var(sock) = "none"; $var(ret) = "none"; $var(rc) = "none";
    if ($var(mode) == "bodyvar") {{
        $var(body) = $rb;
        if ($var(set) == 1) {{ {b1} }} else {{ {b0} }}
        append_hf("X-Body-Var: $(var(body){{s.encode.hexa}})\r\n");
    {mbl}
    }} else if ($var(ip) != "") {{
        {mip}
    }} else {{
        if ($var(set) == 1) {{ {m1} }} else {{ {m0} }}
    }}
    append_hf("X-{name}-Rc: $var(rc)\r\n");
    append_hf("X-{name}-Ret: $var(ret)\r\n");
    append_hf("X-{name}-Sock: $var(sock)\r\n");
}}
"#,
        b1 = call("1", ", $var(body)"),
        b0 = call("", ", $var(body)"),
        m1 = call("1", ""),
        m0 = call("", ""),
    )
}

/// The script. Requests go to their Request-URI: the UAC addresses the UAS and sends through
/// OpenSIPS (`sipp -rsa`), so each case has a UAS port of its own and a late retransmission
/// of one case never reaches the next case's UAS.
fn routes() -> String {
    // The case parameters come as headers: X-Offer/X-Answer (flags, "-" for none), X-Set,
    // X-Mode, X-Ip. The UAS echoes them in its 200 OK for the reply route.
    let params = |flags: &str| {
        format!(
            r#"$var(set) = 0;
    if ($hdr(X-Set) == "1") $var(set) = 1;
    $var(mode) = "msg";
    if ($hdr(X-Mode) == "bodyvar") $var(mode) = "bodyvar";
    $var(ip) = "";
    if (is_present_hf("X-Ip") && $hdr(X-Ip) != "-") $var(ip) = $hdr(X-Ip);
    $var(bl) = "";
    if ($(var(ip){{s.substr,0,5}}) == "bind:") {{
        $var(bl) = $(var(ip){{s.substr,5,0}});
        $var(ip) = "";
    }}
    $var(flags) = "";
    if (is_present_hf("{flags}") && $hdr({flags}) != "-") $var(flags) = $hdr({flags});"#
        )
    };
    format!(
        r#"route {{
    {req}
    if (is_method("INVITE") && has_body("application/sdp")) route(Offer);
    if (is_method("BYE|CANCEL")) {{
        if ($var(set) == 1) rtpproxy_unforce(1); else rtpproxy_unforce();
    }}
    t_on_reply("r");
    t_relay();
}}
onreply_route[r] {{
    if (has_body("application/sdp")) {{
        {rep}
        route(Answer);
    }}
}}
{offer}{answer}"#,
        req = params("X-Offer"),
        rep = params("X-Answer"),
        offer = media_route("Offer", "rtpproxy_offer"),
        answer = media_route("Answer", "rtpproxy_answer"),
    )
}

// ---------------------------------------------------------------------------------------------
// sipp traces
// ---------------------------------------------------------------------------------------------

/// The messages a sipp `-trace_msg` file says were received, as raw bytes.
fn received_messages(trace: &[u8]) -> Vec<Vec<u8>> {
    const HEAD: &[u8] = b"message received [";
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(i) = find(&trace[pos..], HEAD) {
        let start = pos + i + HEAD.len();
        let close = start + find(&trace[start..], b"]").unwrap();
        let n: usize = std::str::from_utf8(&trace[start..close])
            .unwrap()
            .parse()
            .unwrap();
        // "] bytes :\n\n" then the message
        let body = close + find(&trace[close..], b"\n\n").unwrap() + 2;
        let end = (body + n).min(trace.len());
        out.push(trace[body..end].to_vec());
        pos = end;
    }
    out
}

/// The m= ports of the messages a sipp trace says were sent (the built-in scenarios' media
/// ports: 6000, or the next free one when another sipp holds it).
fn sent_media_ports(trace: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(trace);
    let mut ports = Vec::new();
    for block in text.split("message sent").skip(1) {
        let block = block
            .split("-----------------------------------------------")
            .next();
        for l in block.unwrap_or_default().lines() {
            if let Some(rest) = l.strip_prefix("m=") {
                if let Some(p) = rest.split(' ').nth(1) {
                    ports.push(p.to_owned());
                }
            }
        }
    }
    ports
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
        .collect()
}

/// Body lines with their line ends made visible.
fn show_body(out: &mut String, body: &[u8], prefix: &str) {
    let mut rest = body;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |p| p + 1);
        out.push_str(prefix);
        out.push_str(&rest[..end].escape_ascii().to_string());
        out.push('\n');
        rest = &rest[end..];
    }
}

/// One SIP message as it goes into the transcript: first line, Content-Length, the headers the
/// script added, the body.
fn show_message(out: &mut String, who: &str, msg: &[u8]) {
    let split = find(msg, b"\r\n\r\n").map_or(msg.len(), |p| p + 4);
    let head = String::from_utf8_lossy(&msg[..split]);
    let body = &msg[split..];
    let first = head.lines().next().unwrap_or_default();
    if first.starts_with("SIP/2.0 100") {
        return; // tm's provisional reply: not interesting, not always there
    }
    let first = match first.split_once(' ') {
        Some((m, _)) if !m.starts_with("SIP/") => m, // the request URI is sipp's business
        _ => first,
    };
    out.push_str(&format!("{who} {first}\n"));
    out.push_str(&format!(
        "  Content-Length: {}\n",
        header(&head, "Content-Length").unwrap_or("-")
    ));
    for l in head.split("\r\n").filter(|l| l.starts_with("X-")) {
        let Some((n, v)) = l.split_once(':') else {
            continue;
        };
        if matches!(n, "X-Offer" | "X-Answer" | "X-Set" | "X-Mode" | "X-Ip") {
            continue; // the UAC's own case parameters
        }
        if n == "X-Body-Var" {
            out.push_str("  X-Body-Var: (hex)\n");
            show_body(out, &hex_decode(v.trim()), "    # ");
        } else {
            out.push_str(&format!("  {n}: {}\n", v.trim()));
        }
    }
    show_body(out, body, "  | ");
}

// ---------------------------------------------------------------------------------------------
// Running one implementation
// ---------------------------------------------------------------------------------------------

fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/scenarios")
}

fn wait_child(child: &mut Child, secs: u64) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What one implementation produced.
struct Run {
    /// Case name → normalised transcript.
    transcripts: BTreeMap<&'static str, String>,
    /// Relay sessions left after all cases (set 0, set 1).
    sessions_left: (Option<u64>, Option<u64>),
}

/// Relay events of one case as transcript lines: `U… → reply`, probes left out, cookies cut,
/// retransmissions (same cookie) folded.
fn show_relay(out: &mut String, label: &str, events: &[TapEvent]) {
    for (cmd, reply) in e2e::control_commands(events) {
        out.push_str(&format!("{label} {cmd}\n{label}   => {reply}\n"));
    }
}

/// Renumbers relay ports (from `U`/`L` replies) as `<P1>`, `<P2>`… and `port+1` as `<P1+1>`:
/// every maximal run of digits whose value is one of them (relay ports are at least 10000 and
/// no other number of the cases has that value).
fn normalise_ports(text: &str, relay_ports: &[u16]) -> String {
    let name = |run: &str| -> Option<String> {
        let v: u32 = run.parse().ok()?;
        relay_ports.iter().enumerate().find_map(|(i, &p)| {
            let p = u32::from(p);
            if p == v {
                Some(format!("<P{}>", i + 1))
            } else if p + 1 == v {
                Some(format!("<P{}+1>", i + 1))
            } else {
                None
            }
        })
    };
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    for ch in text.chars().chain(std::iter::once('\n')) {
        if ch.is_ascii_digit() {
            run.push(ch);
            continue;
        }
        if !run.is_empty() {
            out.push_str(&name(&run).unwrap_or_else(|| run.clone()));
            run.clear();
        }
        out.push(ch);
    }
    out.pop();
    out
}

fn relay_ports_of(events: &[TapEvent]) -> Vec<u16> {
    let mut ports = Vec::new();
    for (dir, data) in events {
        if *dir != Dir::FromRelay {
            continue;
        }
        let t = String::from_utf8_lossy(data);
        let port = t
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u16>().ok());
        if let Some(p) = port.filter(|&p| p > 1024 && !ports.contains(&p)) {
            ports.push(p);
        }
    }
    ports
}

struct Lab {
    dir: PathBuf,
    sip: u16,
    taps: [ControlTap; 2],
}

impl Lab {
    fn run_case(&self, c: &Case) -> String {
        let dir = &self.dir;
        let scen = scenario_dir();
        let keys = |v: &mut Vec<String>| {
            let none = |f: &'static str| if f.is_empty() { "-" } else { f };
            for (k, val) in [
                ("case", c.name),
                ("offer", none(c.offer)),
                ("answer", none(c.answer)),
                ("set", if c.set == 1 { "1" } else { "0" }),
                ("mode", if c.body_var { "bodyvar" } else { "msg" }),
                ("ip", none(c.ip)),
            ] {
                v.extend(["-key".to_owned(), k.to_owned(), val.to_owned()]);
            }
            v.extend(["-cid_str".to_owned(), format!("diff-{}-%u@test", c.name)]);
        };
        let (local, proxy) = match c.transport {
            Transport::V4 => ("127.0.0.1", format!("127.0.0.1:{}", self.sip)),
            Transport::V6 => ("::1", format!("[::1]:{}", self.sip)),
        };
        let uas_port = e2e::free_port(local, 1);
        let uas_addr = match c.transport {
            Transport::V4 => format!("127.0.0.1:{uas_port}"),
            Transport::V6 => format!("[::1]:{uas_port}"),
        };
        let uas_log = dir.join(format!("{}-uas.log", c.name));
        let uac_log = dir.join(format!("{}-uac.log", c.name));
        let _ = std::fs::remove_file(&uas_log);
        let _ = std::fs::remove_file(&uac_log);
        let scenario_args = |which: usize| -> Vec<String> {
            match c.scenarios {
                Some(s) => {
                    let f = if which == 0 { s.0 } else { s.1 };
                    vec![
                        "-sf".into(),
                        scen.join(format!("{f}.xml")).display().to_string(),
                    ]
                }
                None => vec!["-sn".into(), ["uac", "uas"][which].into()],
            }
        };
        let mut uas_args = scenario_args(1);
        uas_args.extend(
            [
                "-i",
                local,
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
            .map(String::from),
        );
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
        let marks = [self.taps[0].len(), self.taps[1].len()];

        let mut uac_args = scenario_args(0);
        uac_args.extend(
            [
                &uas_addr,
                "-rsa",
                &proxy,
                "-i",
                local,
                "-p",
                &e2e::free_port(local, 1).to_string(),
                "-m",
                "1",
                "-timeout",
                "20s",
                "-nostdin",
                "-trace_msg",
                "-message_file",
                &uac_log.display().to_string(),
            ]
            .map(String::from),
        );
        keys(&mut uac_args);
        let uac = Command::new("sipp")
            .current_dir(dir)
            .args(&uac_args)
            .stdin(Stdio::null())
            .output()
            .expect("sipp uac");
        let uas_status = wait_child(&mut uas, 10);
        // let the BYE's D reach the relay and its reply come back
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            uac.status.success() && uas_status.is_some_and(|s| s.success()),
            "case {}: sipp failed (uac {}, uas {:?}):\n{}\n{}",
            c.name,
            uac.status,
            uas_status,
            String::from_utf8_lossy(&uac.stdout)
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n"),
            String::from_utf8_lossy(&uac.stderr),
        );

        let uas_trace = std::fs::read(&uas_log).unwrap_or_default();
        let uac_trace = std::fs::read(&uac_log).unwrap_or_default();
        let mut t = String::new();
        for m in received_messages(&uas_trace) {
            show_message(&mut t, "uas<", &m);
        }
        for m in received_messages(&uac_trace) {
            show_message(&mut t, "uac<", &m);
        }
        let mut relay_events = Vec::new();
        for (i, tap) in self.taps.iter().enumerate() {
            let ev = tap.events(marks[i]);
            show_relay(&mut t, &format!("relay{i}>"), &ev);
            relay_events.extend(ev);
        }

        // Normalise: control ports, the built-in scenario's ids and media ports, relay ports.
        for (i, tap) in self.taps.iter().enumerate() {
            t = t.replace(&format!("127.0.0.1:{}", tap.port), &format!("<control{i}>"));
        }
        if c.scenarios.is_none() {
            t = normalise_sipp_ids(&t, &uas_trace, &uac_trace);
        }
        normalise_ports(&t, &relay_ports_of(&relay_events))
    }
}

/// The built-in scenarios put the pid into the tags, and the media port depends on which ports
/// other sipp processes hold: replace them by names.
fn normalise_sipp_ids(t: &str, uas_trace: &[u8], uac_trace: &[u8]) -> String {
    let mut t = t.to_owned();
    let uas_msgs = received_messages(uas_trace);
    let uac_msgs = received_messages(uac_trace);
    let head = |m: &Vec<u8>| {
        let s = find(m, b"\r\n\r\n").map_or(m.len(), |p| p + 4);
        String::from_utf8_lossy(&m[..s]).into_owned()
    };
    if let Some(inv) = uas_msgs.first().map(head) {
        if let Some(tag) = header(&inv, "From").and_then(|f| f.split("tag=").nth(1)) {
            t = t.replace(tag, "<from-tag>");
        }
    }
    if let Some(ok) = uac_msgs
        .iter()
        .map(head)
        .find(|h| h.starts_with("SIP/2.0 200"))
    {
        if let Some(tag) = header(&ok, "To").and_then(|f| f.split("tag=").nth(1)) {
            t = t.replace(tag, "<to-tag>");
        }
    }
    for (who, trace) in [("uac", uac_trace), ("uas", uas_trace)] {
        for p in sent_media_ports(trace) {
            t = t.replace(&format!(" {p} "), &format!(" <{who}-media> "));
        }
    }
    t
}

fn run_impl(env: &Env, which: Impl, relay_bin: &Path, cases: &[Case]) -> Run {
    let dir = e2e::scratch(&format!("diff-{which:?}"));
    // Set 0: an ordinary relay with IPv4 and IPv6 media addresses; set 1: a bridging relay
    // (internal 127.0.0.1, external 127.0.0.2) for the `i`/`e` flags.
    let (_plain, plain_ctl) = start_relay(
        relay_bin,
        &dir,
        "relay0",
        &["-l", "127.0.0.1", "-6", "v6@::1"],
        10000,
        14998,
    );
    let (_bridge, bridge_ctl) = start_relay(
        relay_bin,
        &dir,
        "relay1",
        &["-l", "127.0.0.1/127.0.0.2"],
        15000,
        19998,
    );
    let taps = [ControlTap::start(plain_ctl), ControlTap::start(bridge_ctl)];
    let params = format!(
        "modparam(\"rtpproxy\", \"rtpproxy_sock\", \"udp:127.0.0.1:{}\")\n\
         modparam(\"rtpproxy\", \"rtpproxy_sock\", \"1 == udp:127.0.0.1:{}\")\n",
        taps[0].port, taps[1].port
    );
    // cfg() picks the IPv4 SIP port; the IPv6 socket gets the same number.
    let extra = format!("socket=udp:[::1]:@SIP@\n{MODULES}");
    let c = cfg(env, which, &dir, &params, &extra, &routes());
    let sip: u16 = c
        .text
        .lines()
        .find_map(|l| l.strip_prefix("socket=udp:127.0.0.1:"))
        .and_then(|p| p.parse().ok())
        .unwrap();
    let c = e2e::Cfg {
        // Debug logging of every process slows OpenSIPS down enough to provoke SIP
        // retransmissions; notices and worse are plenty here.
        text: c
            .text
            .replace("@SIP@", &sip.to_string())
            .replace("log_level=4", "log_level=2"),
        ..c
    };
    std::fs::write(&c.path, &c.text).unwrap();
    let os = OpenSips::start(env, &c).unwrap_or_else(|e| panic!("{which:?}: {e}"));
    // Start-up probes: wait until the control sockets have been quiet for a while.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = (usize::MAX, Instant::now());
    while Instant::now() < deadline {
        let n = taps[0].len() + taps[1].len();
        if n != last.0 {
            last = (n, Instant::now());
        } else if n > 0 && last.1.elapsed() > Duration::from_millis(700) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let lab = Lab {
        dir: dir.clone(),
        sip,
        taps,
    };
    // A failed case still stops OpenSIPS with SIGTERM: killing only its main process (what
    // dropping it does) would leave its children behind.
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut transcripts = BTreeMap::new();
        for c in cases {
            transcripts.insert(c.name, lab.run_case(c));
        }
        transcripts
    }));
    std::thread::sleep(Duration::from_millis(200));
    let sessions_left = (
        e2e::relay_active_sessions(plain_ctl),
        e2e::relay_active_sessions(bridge_ctl),
    );
    let (status, log) = os.stop();
    let transcripts = ran.unwrap_or_else(|e| std::panic::resume_unwind(e));
    assert!(
        status.success(),
        "{which:?}: opensips did not stop cleanly:\n{log}"
    );
    std::fs::write(dir.join("transcripts.txt"), {
        let mut s = String::new();
        for (k, v) in &transcripts {
            s.push_str(&format!("==== {k}\n{v}"));
        }
        s
    })
    .unwrap();
    Run {
        transcripts,
        sessions_left,
    }
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

/// A line-by-line diff for the failure message.
fn diff(a: &str, b: &str) -> String {
    let (al, bl): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let mut out = String::new();
    for i in 0..al.len().max(bl.len()) {
        let (x, y) = (al.get(i).copied(), bl.get(i).copied());
        if x != y {
            out.push_str(&format!(
                "  line {}:\n    C:    {}\n    ours: {}\n",
                i + 1,
                x.unwrap_or("(none)"),
                y.unwrap_or("(none)")
            ));
        }
    }
    out
}

#[test]
fn c_and_rust_modules_agree_call_by_call() {
    let Some(env) = Env::get(TEST) else {
        return;
    };
    if env.c_module.is_none() {
        println!(
            "SKIPPED {TEST}: the C module rtpproxy.so is not in {}",
            env.mpath.display()
        );
        return;
    }
    if !e2e::have_sipp(TEST) {
        return;
    }
    let Some(relay_bin) = rtpproxy_binary() else {
        println!("SKIPPED {TEST}: no rtpproxy daemon (set RTPPROXY_BIN)");
        return;
    };
    // DIFF_CASES=a,b runs only those cases (for working on one of them).
    let only = std::env::var("DIFF_CASES").unwrap_or_default();
    let cases: Vec<Case> = cases()
        .into_iter()
        .filter(|c| only.is_empty() || only.split(',').any(|n| n == c.name))
        .collect();
    let c = run_impl(&env, Impl::C, &relay_bin, &cases);
    let ours = run_impl(&env, Impl::Ours, &relay_bin, &cases);

    let mut failures = Vec::new();
    for case in &cases {
        let (ct, ot) = (&c.transcripts[case.name], &ours.transcripts[case.name]);
        let deliberate = DELIBERATE.iter().find(|d| d.case == case.name);
        let expected = match deliberate {
            Some(d) => {
                println!("{}: deliberate difference: {}", case.name, d.why);
                match std::panic::catch_unwind(|| (d.check)(ct, ot)) {
                    Ok(e) => e,
                    Err(e) => {
                        let why = e
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                            .unwrap_or_default();
                        failures.push(format!(
                            "case {}: the deliberate difference is not as expected: {why}\n\
                             --- C:\n{ct}--- ours:\n{ot}",
                            case.name
                        ));
                        continue;
                    }
                }
            }
            None => ct.clone(),
        };
        if expected == *ot {
            let apart = if deliberate.is_some() {
                " apart from the deliberate difference"
            } else {
                ""
            };
            println!("{}: C and ours agree{apart}", case.name);
        } else {
            failures.push(format!(
                "case {}:\n{}\n--- C:\n{ct}--- ours:\n{ot}",
                case.name,
                diff(&expected, ot)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        c.sessions_left,
        (Some(0), Some(0)),
        "C: relay sessions left"
    );
    assert_eq!(
        ours.sessions_left,
        (Some(0), Some(0)),
        "ours: relay sessions left"
    );
    println!("{} cases: same SDP and relay commands", cases.len());
}
