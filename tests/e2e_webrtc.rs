//! WebRTC bridging end to end (issue 15): a real OpenSIPS 3.6.8 with our module
//! (`rtpproxy_offer`/`rtpproxy_answer` with flags `xw` / `xp`, `rtpproxy_unforce` on BYE), a
//! real RTPProxy 3.2 with its `dtls_gw` and `ice_lite` modules (`--dso`), PyPI aiortc as the
//! browser (tests/support/webrtc_peer.py: ICE, DTLS-SRTP, rtcp-mux, BUNDLE) and sipp as the
//! plain-RTP phone (`-rtp_echo`: it sends back every packet it gets).
//!
//! Needs `OPENSIPS_BIN`, `RTPPROXY_BIN` (built with libsrtp2/libssl, so that
//! `lib/rtpproxy/rtpp_dtls_gw.so` and `rtpp_ice_lite.so` sit next to it), sipp and aiortc;
//! otherwise each test prints SKIPPED. Loopback only: the relay's media address is 127.0.0.2,
//! everything else 127.0.0.1; aiortc gathers 127.0.0.1 alone and uses no STUN server.

mod e2e;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{cfg, port, scratch, Env, Impl, OpenSips, Relay, Sipp};

const MODULES: &str = r#"loadmodule "sl.so"
loadmodule "sipmsgops.so""#;

/// Everything the tests need, or `None` after a SKIPPED line.
struct Peers {
    env: Env,
    rtpproxy: PathBuf,
    dso: [PathBuf; 2],
}

fn peers(test: &str) -> Option<Peers> {
    let env = Env::get(test)?;
    if !e2e::have_sipp(test) {
        return None;
    }
    let Some(rtpproxy) = std::env::var_os("RTPPROXY_BIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
    else {
        e2e::skip(test, "RTPPROXY_BIN is not set");
        return None;
    };
    let lib = rtpproxy.parent()?.parent()?.join("lib/rtpproxy");
    let dso = [lib.join("rtpp_dtls_gw.so"), lib.join("rtpp_ice_lite.so")];
    if !dso.iter().all(|p| p.exists()) {
        e2e::skip(
            test,
            &format!(
                "{} has no dtls_gw/ice_lite modules (build RTPProxy with libsrtp2-dev \
             and libssl-dev)",
                lib.display()
            ),
        );
        return None;
    }
    let aiortc = Command::new("python3")
        .args(["-c", "import aiortc"])
        .status()
        .is_ok_and(|s| s.success());
    if !aiortc {
        e2e::skip(test, "python3 cannot import aiortc (pip install aiortc)");
        return None;
    }
    Some(Peers { env, rtpproxy, dso })
}

/// The relay, its control address and its log file; with the WebRTC modules when `modules`.
fn relay(p: &Peers, dir: &Path, modules: bool) -> (Relay, SocketAddr, PathBuf) {
    let control = SocketAddr::from(([127, 0, 0, 1], port()));
    let mut args: Vec<String> = ["-l", "127.0.0.2", "-d", "INFO"].map(String::from).into();
    if modules {
        for m in &p.dso {
            args.push("--dso".into());
            args.push(m.display().to_string());
        }
    }
    let relay =
        Relay::start_logged(&p.rtpproxy, dir, "rtpproxy", control, &args).expect("start rtpproxy");
    (relay, control, dir.join("rtpproxy.log"))
}

/// How the script asks for the bridge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// `rtpproxy_offer` / `rtpproxy_answer`, `rtpproxy_unforce` on BYE.
    Script,
    /// `rtpproxy_engage` on the INVITE; the dialog does the rest.
    Engage,
    /// `rtp_relay_engage("rtpproxy")` with the flags in `$rtp_relay` / `$rtp_relay_peer`.
    RtpRelay,
}

/// The script: To-user `fromwebrtc` bridges with `xw` (the caller is WebRTC), `towebrtc` with
/// `xp`; the call goes to `callee`. A refused offer is logged and the INVITE relayed as it
/// came, so that the test can see it untouched.
fn routes(callee: u16, mode: Mode) -> String {
    let pick = r#"$var(f) = "";
        if ($tU == "fromwebrtc") $var(f) = "xw";
        else if ($tU == "towebrtc") $var(f) = "xp";"#;
    match mode {
        Mode::Script => format!(
            r#"route {{
    if (is_method("INVITE") && has_body("application/sdp")) {{
        if ($tU == "fromwebrtc") {{
            if (!rtpproxy_offer("xw")) xlog("L_ERR", "WEBRTC-REFUSED $ci\n");
        }} else if ($tU == "towebrtc") {{
            if (!rtpproxy_offer("xp")) xlog("L_ERR", "WEBRTC-REFUSED $ci\n");
        }}
    }}
    if (is_method("BYE")) rtpproxy_unforce();
    $du = "sip:127.0.0.1:{callee}";
    t_on_reply("r");
    t_relay();
}}
onreply_route[r] {{
    if (has_body("application/sdp")) {{
        if ($tU == "fromwebrtc") rtpproxy_answer("xw");
        else if ($tU == "towebrtc") rtpproxy_answer("xp");
    }}
}}
"#
        ),
        Mode::Engage | Mode::RtpRelay => {
            let engage = if mode == Mode::Engage {
                r#"if ($tU == "fromwebrtc") rtpproxy_engage("xw");
        else rtpproxy_engage("xp");"#
            } else {
                r#"create_dialog();
        $rtp_relay = $var(f);
        $rtp_relay_peer = $var(f);
        rtp_relay_engage("rtpproxy");"#
            };
            format!(
                r#"route {{
    if (has_totag()) {{
        match_dialog();
        $du = "sip:127.0.0.1:{callee}";
        t_relay();
        exit;
    }}
    if (is_method("INVITE")) {{
        {pick}
        {engage}
    }}
    $du = "sip:127.0.0.1:{callee}";
    t_relay();
}}
"#
            )
        }
    }
}

fn opensips(
    p: &Peers,
    dir: &Path,
    control: SocketAddr,
    callee: u16,
    mode: Mode,
) -> (OpenSips, u16) {
    let params = format!("modparam(\"rtpproxy\", \"rtpproxy_sock\", \"udp:{control}\")");
    let modules = match mode {
        Mode::Script => MODULES.to_owned(),
        Mode::Engage => format!("{MODULES}\nloadmodule \"dialog.so\""),
        Mode::RtpRelay => {
            format!("{MODULES}\nloadmodule \"dialog.so\"\nloadmodule \"rtp_relay.so\"")
        }
    };
    let c = cfg(
        &p.env,
        Impl::Ours,
        dir,
        &params,
        &modules,
        &routes(callee, mode),
    );
    let sip: u16 = c
        .text
        .lines()
        .find_map(|l| l.strip_prefix("socket=udp:127.0.0.1:"))
        .and_then(|v| v.parse().ok())
        .unwrap();
    let os = OpenSips::start(&p.env, &c).unwrap();
    // the prober must have seen the node (and its SUBCOMMAND capability) before the call
    let deadline = Instant::now() + Duration::from_secs(10);
    while !os.log_text().contains("is active (capabilities") {
        assert!(
            Instant::now() < deadline,
            "node never probed:\n{}",
            os.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (os, sip)
}

/// The aiortc peer (tests/support/webrtc_peer.py) in the background.
fn webrtc_peer(dir: &Path, args: &[String]) -> Child {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/webrtc_peer.py");
    Command::new("python3")
        .arg(script)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("peer.err")).unwrap(),
        ))
        .spawn()
        .expect("python3 webrtc_peer.py")
}

/// Waits for the peer to exit (60 s at most) and reads its JSON report.
fn peer_report(dir: &Path, mut child: Child, out: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "webrtc peer did not finish: {}",
                std::fs::read_to_string(dir.join("peer.err")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(dir.join(out)).unwrap_or_else(|e| {
        panic!(
            "no peer report ({e}): {}",
            std::fs::read_to_string(dir.join("peer.err")).unwrap_or_default()
        )
    });
    e2e::json(&text)
}

/// The relay's end-of-session RTP counters for `call_id` from its log: (in from callee, in
/// from caller, relayed).
fn relay_rtp_stats(log: &Path, call_id: &str) -> Option<(u64, u64, u64)> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text
        .lines()
        .find(|l| l.contains(call_id) && l.contains("RTP stats:"))?;
    let nums: Vec<u64> = line
        .split("RTP stats:")
        .nth(1)?
        .split(',')
        .filter_map(|part| part.split_whitespace().next()?.parse().ok())
        .collect();
    Some((*nums.first()?, *nums.get(1)?, *nums.get(2)?))
}

/// Polls until the relay logged the session's deletion and has no session left.
fn session_deleted(
    control: SocketAddr,
    log: &Path,
    call_id: &str,
) -> (u64, Option<(u64, u64, u64)>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let active = e2e::relay_active_sessions(control).expect("relay I command");
        let stats = relay_rtp_stats(log, call_id);
        if (active == 0 && stats.is_some()) || Instant::now() > deadline {
            return (active, stats);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn states(v: &serde_json::Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// ICE completed, DTLS connected, RTP both ways at the browser.
fn assert_media(who: &str, r: &serde_json::Value) -> (u64, u64, u64) {
    assert!(r.get("error").is_none(), "{who}: peer failed: {r}");
    assert_eq!(r["invite_status"], 200, "{who}: {r}");
    assert!(
        states(r, "ice_states").iter().any(|s| s == "completed"),
        "{who}: ICE never completed: {r}"
    );
    assert!(
        states(r, "dtls_states").iter().any(|s| s == "connected"),
        "{who}: DTLS never connected: {r}"
    );
    let sent = r["rtp_sent"].as_u64().unwrap_or(0);
    let got = r["rtp_received"].as_u64().unwrap_or(0);
    let frames = r["audio_frames"].as_u64().unwrap_or(0);
    // 4 s of 20 ms packets is 200; ask for a clear majority, not an exact count
    assert!(sent >= 100, "{who}: browser sent {sent} RTP packets: {r}");
    assert!(got >= 100, "{who}: browser received {got} RTP packets: {r}");
    assert!(
        frames >= 100,
        "{who}: browser decoded {frames} audio frames: {r}"
    );
    assert_eq!(r["bye_status"], 200, "{who}: {r}");
    (sent, got, frames)
}

fn sdp_lines(sdp: &str) -> Vec<&str> {
    sdp.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect()
}

fn assert_plain(who: &str, sdp: &str) {
    let lines = sdp_lines(sdp);
    let m = lines.iter().find(|l| l.starts_with("m=audio ")).unwrap();
    assert!(m.contains(" RTP/AVP "), "{who}: {m}");
    for l in &lines {
        for bad in [
            "a=ice-",
            "a=candidate",
            "a=fingerprint",
            "a=setup",
            "a=rtcp-mux",
            "a=group:BUNDLE",
        ] {
            assert!(
                !l.starts_with(bad),
                "{who}: {l} left on the plain side:\n{sdp}"
            );
        }
    }
    assert!(lines.contains(&"c=IN IP4 127.0.0.2"), "{who}:\n{sdp}");
}

fn assert_webrtc(who: &str, sdp: &str, setup: &str) {
    let lines = sdp_lines(sdp);
    let m = lines.iter().find(|l| l.starts_with("m=audio ")).unwrap();
    assert!(m.contains(" UDP/TLS/RTP/SAVPF "), "{who}: {m}");
    let port = m.split(' ').nth(1).unwrap();
    for want in [
        "a=ice-lite",
        "a=rtcp-mux",
        "a=mid:0",
        "a=group:BUNDLE 0",
        setup,
    ] {
        assert!(lines.contains(&want), "{who}: no {want}:\n{sdp}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("a=fingerprint:sha-256 ")),
        "{sdp}"
    );
    assert!(lines.iter().any(|l| l.starts_with("a=ice-ufrag:")), "{sdp}");
    let cand = lines
        .iter()
        .find(|l| l.starts_with("a=candidate:"))
        .unwrap();
    assert!(
        cand.contains(&format!(" 127.0.0.2 {port} typ host")),
        "{who}: candidate is not the relay's: {cand}"
    );
}

#[test]
fn webrtc_caller_reaches_plain_callee() {
    webrtc_caller("webrtc_caller_reaches_plain_callee", Mode::Script);
}

#[test]
fn webrtc_caller_with_rtpproxy_engage() {
    webrtc_caller("webrtc_caller_with_rtpproxy_engage", Mode::Engage);
}

#[test]
fn plain_caller_reaches_webrtc_callee() {
    plain_caller("plain_caller_reaches_webrtc_callee", Mode::Script);
}

#[test]
fn plain_caller_with_rtp_relay_engine() {
    plain_caller("plain_caller_with_rtp_relay_engine", Mode::RtpRelay);
}

fn webrtc_caller(name: &str, mode: Mode) {
    let Some(p) = peers(name) else { return };
    let dir = scratch(name);
    let (_relay, control, rlog) = relay(&p, &dir, true);
    let uas = port();
    let (os, sip) = opensips(&p, &dir, control, uas, mode);
    let media = e2e::free_port("127.0.0.1", 4);
    let _sipp = Sipp::spawn(
        &dir,
        &[
            "-sn",
            "uas",
            "-i",
            "127.0.0.1",
            "-p",
            &uas.to_string(),
            "-mp",
            &media.to_string(),
            "-rtp_echo",
            "-m",
            "1",
            "-trace_msg",
            "-message_file",
            "uas.log",
            "-nostdin",
        ]
        .map(String::from),
    )
    .expect("sipp uas");
    std::thread::sleep(Duration::from_millis(300));
    let peer = webrtc_peer(
        &dir,
        &[
            "uac".into(),
            "--proxy".into(),
            format!("127.0.0.1:{sip}"),
            "--port".into(),
            port().to_string(),
            "--user".into(),
            "fromwebrtc".into(),
            "--seconds".into(),
            "4".into(),
            "--out".into(),
            "uac.json".into(),
        ],
    );
    let r = peer_report(&dir, peer, "uac.json");
    let call_id = r["call_id"].as_str().unwrap_or_default().to_owned();
    let (active, stats) = session_deleted(control, &rlog, &call_id);
    let (status, log) = os.stop();
    assert!(status.success(), "opensips did not stop cleanly:\n{log}");
    let (sent, got, frames) = assert_media("aiortc caller", &r);
    assert_webrtc(
        "answer to the browser",
        r["answer"].as_str().unwrap(),
        "a=setup:passive",
    );
    let trace = std::fs::read_to_string(dir.join("uas.log")).unwrap_or_default();
    let invite = trace.split("INVITE sip:").nth(1).expect("INVITE at sipp");
    assert_plain(
        "offer to sipp",
        invite.split("\r\n\r\n").nth(1).unwrap_or(invite),
    );
    assert_eq!(active, 0, "session left on the relay after BYE");
    let (from_callee, from_caller, relayed) =
        stats.unwrap_or_else(|| panic!("no RTP stats for {call_id} in the relay log"));
    assert!(
        from_caller >= 100 && from_callee >= 100,
        "relay: {from_callee}/{from_caller}"
    );
    println!(
        "{mode:?}: aiortc -> sipp: ICE {:?}, DTLS {:?}; browser sent {sent} / received {got} RTP \
         ({frames} frames decoded); relay: {from_caller} in from the browser, {from_callee} in \
         from sipp (its echo), {relayed} relayed; sessions after BYE: {active}",
        states(&r, "ice_states"),
        states(&r, "dtls_states")
    );
}

fn plain_caller(name: &str, mode: Mode) {
    let Some(p) = peers(name) else { return };
    if mode == Mode::RtpRelay && !p.env.mpath.join("rtp_relay.so").exists() {
        e2e::skip(name, "rtp_relay.so not in the modules directory");
        return;
    }
    let dir = scratch(name);
    let (_relay, control, rlog) = relay(&p, &dir, true);
    let uas = port();
    let (os, sip) = opensips(&p, &dir, control, uas, mode);
    let peer = webrtc_peer(
        &dir,
        &[
            "uas".into(),
            "--port".into(),
            uas.to_string(),
            "--out".into(),
            "uas.json".into(),
        ],
    );
    std::thread::sleep(Duration::from_millis(1500));
    let media = e2e::free_port("127.0.0.1", 4);
    let out = e2e::sipp(
        &dir,
        &[
            "-sn",
            "uac",
            &format!("127.0.0.1:{sip}"),
            "-s",
            "towebrtc",
            "-i",
            "127.0.0.1",
            "-p",
            &port().to_string(),
            "-mp",
            &media.to_string(),
            "-rtp_echo",
            "-m",
            "1",
            "-d",
            "4000",
            "-timeout",
            "40s",
            "-nostdin",
            "-trace_msg",
            "-message_file",
            "uac.log",
        ]
        .map(String::from),
    )
    .expect("sipp uac");
    let r = peer_report(&dir, peer, "uas.json");
    let call_id = r["call_id"].as_str().unwrap_or_default().to_owned();
    let (active, stats) = session_deleted(control, &rlog, &call_id);
    let (status, log) = os.stop();
    assert!(status.success(), "opensips did not stop cleanly:\n{log}");
    assert!(
        out.status.success(),
        "sipp uac failed:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (sent, got, frames) = assert_media("aiortc callee", &r);
    assert_webrtc(
        "offer to the browser",
        r["offer"].as_str().unwrap(),
        "a=setup:actpass",
    );
    let trace = std::fs::read_to_string(dir.join("uac.log")).unwrap_or_default();
    // sipp's log: blocks separated by dashed lines, "message received" for what came in
    let ok = trace
        .split("-----------------------------------------------")
        .find(|m| {
            m.contains("message received") && m.contains("SIP/2.0 200 OK") && m.contains("m=audio")
        })
        .expect("200 OK with SDP at sipp");
    let body = &ok[ok.find("v=0").unwrap()..];
    assert_plain("answer to sipp", body);
    assert_eq!(active, 0, "session left on the relay after BYE");
    let (from_callee, from_caller, relayed) =
        stats.unwrap_or_else(|| panic!("no RTP stats for {call_id} in the relay log"));
    assert!(
        from_caller >= 100 && from_callee >= 100,
        "relay: {from_callee}/{from_caller}"
    );
    println!(
        "{mode:?}: sipp -> aiortc: ICE {:?}, DTLS {:?}; browser sent {sent} / received {got} RTP \
         ({frames} frames decoded); relay: {from_callee} in from the browser, {from_caller} in \
         from sipp (its echo), {relayed} relayed; sessions after BYE: {active}",
        states(&r, "ice_states"),
        states(&r, "dtls_states")
    );
}

/// Sends an INVITE with `body` through OpenSIPS to a bare UDP socket and returns the body
/// that arrived there.
fn forward_invite(sip: u16, callee: &UdpSocket, user: &str, body: &[u8]) -> Vec<u8> {
    let me = UdpSocket::bind("127.0.0.1:0").unwrap();
    let lport = me.local_addr().unwrap().port();
    let call_id = format!("refuse-{user}-{lport}@127.0.0.1");
    let mut msg = format!(
        "INVITE sip:{user}@127.0.0.1:{sip} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK{lport}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=f{lport}\r\nTo: <sip:{user}@127.0.0.1>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:a@127.0.0.1:{lport}>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    msg.extend_from_slice(body);
    me.send_to(&msg, ("127.0.0.1", sip)).unwrap();
    callee
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = vec![0u8; 65535];
    loop {
        let n = callee.recv(&mut buf).expect("INVITE relayed to the callee");
        let got = &buf[..n];
        if got.starts_with(b"INVITE ")
            && got.windows(call_id.len()).any(|w| w == call_id.as_bytes())
        {
            let p = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
            return got[p + 4..].to_vec();
        }
    }
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/webrtc")
            .join(name),
    )
    .unwrap()
}

#[test]
fn unsupported_offers_get_a_clear_error_and_stay_untouched() {
    let name = "unsupported_offers_get_a_clear_error_and_stay_untouched";
    let Some(p) = peers(name) else { return };
    let dir = scratch(name);
    let (_relay, control, _) = relay(&p, &dir, true);
    let callee = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (os, sip) = opensips(
        &p,
        &dir,
        control,
        callee.local_addr().unwrap().port(),
        Mode::Script,
    );
    let cases = [
        (
            "chrome-video-bundle.sdp",
            "fromwebrtc",
            "supports one audio stream",
        ),
        (
            "chrome-no-fingerprint.sdp",
            "fromwebrtc",
            "no a=fingerprint",
        ),
        (
            "sipp-plain.sdp",
            "fromwebrtc",
            "protocol RTP/AVP on the WebRTC side",
        ),
        ("chrome-offer.sdp", "towebrtc", "on the plain side"),
    ];
    let mut got = Vec::new();
    for (fx, user, _) in cases {
        let body = fixture(fx);
        got.push((fx, body.clone(), forward_invite(sip, &callee, user, &body)));
    }
    let active = e2e::relay_active_sessions(control).expect("relay I command");
    let (status, log) = os.stop();
    assert!(status.success(), "opensips did not stop cleanly:\n{log}");
    for ((fx, sent, arrived), (_, _, why)) in got.iter().zip(cases) {
        assert_eq!(
            arrived.escape_ascii().to_string(),
            sent.escape_ascii().to_string(),
            "{fx}: body changed"
        );
        assert!(
            log.lines().any(|l| l.contains("ERROR") && l.contains(why)),
            "{fx}: no clear error ({why}) in the log:\n{}",
            log.lines()
                .filter(|l| l.contains("ERROR"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert_eq!(log.matches("WEBRTC-REFUSED").count(), cases.len());
    assert_eq!(active, 0, "a refused offer created a relay session");
    println!(
        "{} unsupported offers refused, bodies byte-identical, no relay session",
        cases.len()
    );
}

#[test]
fn relay_without_webrtc_modules_is_a_clear_error() {
    let name = "relay_without_webrtc_modules_is_a_clear_error";
    let Some(p) = peers(name) else { return };
    let dir = scratch(name);
    let (_relay, control, _) = relay(&p, &dir, false);
    let callee = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (os, sip) = opensips(
        &p,
        &dir,
        control,
        callee.local_addr().unwrap().port(),
        Mode::Script,
    );
    let body = fixture("aiortc-offer.sdp");
    let arrived = forward_invite(sip, &callee, "fromwebrtc", &body);
    let active = e2e::relay_active_sessions(control).expect("relay I command");
    let (status, log) = os.stop();
    assert!(status.success(), "opensips did not stop cleanly:\n{log}");
    assert_eq!(arrived, body, "body changed");
    let err = log
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("WebRTC sub-commands"))
        .unwrap_or_else(|| panic!("no clear error in the log:\n{log}"));
    assert!(err.contains("E3") && err.contains("--dso"), "{err}");
    assert_eq!(active, 0);
    println!("relay without modules: {}", err.trim());
}
