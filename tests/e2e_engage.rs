//! `rtpproxy_engage` and the notification listener through a real OpenSIPS 3.6.8, a real
//! RTPProxy and sipp on both sides (issue 5, acceptance 2–5):
//!
//! - calls set up and relayed with `rtpproxy_engage()` only; sessions deleted at BYE, CANCEL
//!   and refused calls;
//! - late negotiation and re-INVITEs;
//! - a call whose RTP stops is ended by a BYE to both sides (relay `-T`/`-W`, flag `n`), over
//!   TCP and UNIX notification sockets;
//! - RFC 4733 DTMF reaches an `event_datagram` subscriber as `E_RTPPROXY_DTMF`;
//! - the listener survives garbage, connection floods and unknown peers without leaking
//!   descriptors, and keeps serving its IPC pipe (`reload_routes`);
//! - the dialog values are the C module's, byte for byte.
//!
//! The relay is `RTPPROXY_BIN` (needed for `-n`, `-T`, `-W` and the `catch_dtmf` module); the
//! basic-call test also runs on PyPI rtp.io's engine.

mod e2e;

use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use e2e::{cfg, scratch, Env, Impl, OpenSips, Relay, Sipp};

const MODULES: &str = r#"loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "dialog.so"
loadmodule "sipmsgops.so"
loadmodule "event_datagram.so""#;

/// A loopback port free for UDP and TCP, with room for RTCP and the next stream after it.
fn free_port() -> u16 {
    e2e::free_port("127.0.0.1", 4)
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/notify")
        .join(name)
}

fn rtpproxy_bin() -> Option<PathBuf> {
    std::env::var_os("RTPPROXY_BIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The `catch_dtmf` module installed with `RTPPROXY_BIN`.
fn catch_dtmf_module(bin: &Path) -> Option<PathBuf> {
    let p = bin
        .parent()?
        .parent()?
        .join("lib/rtpproxy/rtpp_catch_dtmf.so");
    p.exists().then_some(p)
}

/// A pcap shipped with sipp (Debian: /usr/share/sip-tester).
fn sipp_pcap(name: &str) -> Option<PathBuf> {
    [
        "/usr/share/sip-tester",
        "/usr/share/sipp",
        "/usr/local/share/sipp/pcap",
    ]
    .iter()
    .map(|d| Path::new(d).join(name))
    .find(|p| p.exists())
}

/// The `RTPPROXY_BIN` daemon with our options, its log kept in the test directory.
fn daemon(dir: &Path, ctl: u16, extra: &[String]) -> Option<Relay> {
    let mut args: Vec<String> = ["-l", e2e::RELAY_IP, "-d", "INFO"].map(String::from).into();
    args.extend_from_slice(extra);
    let control = SocketAddr::from(([127, 0, 0, 1], ctl));
    Relay::start_logged(
        &rtpproxy_bin()?,
        dir,
        &format!("rtpproxy-{ctl}"),
        control,
        &args,
    )
}

/// Waits (up to a generous limit) until the relay has no session left; returns the count.
fn sessions_drained(control: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = e2e::relay_counter(control, "active sessions").expect("relay I command");
        if n == 0 || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How a rendered UAC/UAS scenario ends, and what it plays.
#[derive(Clone, Copy)]
enum End {
    /// The UAC sends BYE after `pause` ms.
    Hangup(u32),
    /// The UAC waits for OpenSIPS's BYE.
    Wait,
}

fn play(pcap: Option<&Path>, then_ms: u32) -> String {
    match pcap {
        Some(p) => format!(
            "<nop><action><exec play_pcap_audio=\"{}\"/></action></nop>\n  \
             <pause milliseconds=\"{then_ms}\"/>",
            p.display()
        ),
        None => String::new(),
    }
}

const BYE: &str = r#"<send retrans="500">
    <![CDATA[

      BYE sip:uas@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:uac@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: <sip:uac@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>"#;

const WAIT_BYE: &str = r#"<recv request="BYE" timeout="60000"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>"#;

/// Writes the UAC and UAS call scenarios for one test into `dir`.
fn call_scenarios(
    dir: &Path,
    uac_pcap: Option<&Path>,
    uas_pcap: Option<&Path>,
    end: End,
) -> (PathBuf, PathBuf) {
    let uac = std::fs::read_to_string(fixture("uac_call.xml")).unwrap();
    let end_text = match end {
        End::Hangup(ms) => format!("<pause milliseconds=\"{ms}\"/>\n  {BYE}"),
        End::Wait => WAIT_BYE.to_string(),
    };
    let uac = uac
        .replace("@PLAY@", &play(uac_pcap, 300))
        .replace("@END@", &end_text);
    let uas = std::fs::read_to_string(fixture("uas_call.xml"))
        .unwrap()
        .replace("@PLAY@", &play(uas_pcap, 300));
    let (a, b) = (dir.join("uac_call.xml"), dir.join("uas_call.xml"));
    std::fs::write(&a, uac).unwrap();
    std::fs::write(&b, uas).unwrap();
    (a, b)
}

/// OpenSIPS routing all calls to the UAS on `uas`, with `engage` (the whole call) on the
/// initial INVITE; in-dialog requests are matched to their dialog and sent to the UAS too.
fn routes(uas: u16, engage: &str, startup: &str) -> String {
    let startup = if startup.is_empty() {
        String::new()
    } else {
        format!("startup_route {{\n    {startup}\n}}\n")
    };
    format!(
        r#"{startup}route {{
    if (has_totag()) {{
        if (!loose_route()) match_dialog();
        $du = "sip:127.0.0.1:{uas}";
        t_relay();
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) t_relay();
        exit;
    }}
    if (is_method("INVITE")) {{
        record_route();
        {engage}
    }}
    $du = "sip:127.0.0.1:{uas}";
    t_relay();
}}
branch_route[b] {{
    xlog("L_DBG", "branch $T_branch_idx\n");
}}
"#
    )
}

fn engage_call(args: &str) -> String {
    format!("if (!rtpproxy_engage({args})) {{ sl_send_reply(500, \"engage failed\"); exit; }}")
}

/// OpenSIPS and the UAS port of one test. Dropping it stops OpenSIPS gracefully (SIGTERM to
/// the main process), so that a failing test leaves no OpenSIPS worker behind.
struct Stack {
    dir: PathBuf,
    running: Option<OpenSips>,
    sip: u16,
    uas: u16,
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(os) = self.running.take() {
            let _ = os.stop();
        }
    }
}

impl Stack {
    fn start(
        env: &Env,
        which: Impl,
        dir: &Path,
        modparams: &str,
        engage: &str,
        startup: &str,
    ) -> Self {
        let uas = free_port();
        let c = cfg(
            env,
            which,
            dir,
            modparams,
            MODULES,
            &routes(uas, engage, startup),
        );
        let sip: u16 = c
            .text
            .lines()
            .find_map(|l| l.strip_prefix("socket=udp:127.0.0.1:"))
            .unwrap()
            .parse()
            .unwrap();
        let os = OpenSips::start(env, &c).unwrap();
        Self {
            dir: dir.to_path_buf(),
            running: Some(os),
            sip,
            uas,
        }
    }

    fn os(&self) -> &OpenSips {
        self.running.as_ref().expect("OpenSIPS running")
    }

    /// Stops OpenSIPS; its exit status and log.
    fn stop(&mut self) -> (std::process::ExitStatus, String) {
        self.running.take().expect("OpenSIPS running").stop()
    }

    /// Starts the UAS (`calls` calls, then it exits) with its own media port.
    fn uas(&self, scenario: &Path, calls: u32, extra: &[&str], trace: &str) -> Sipp {
        let mp = free_port();
        let mut args: Vec<String> = [
            "-sf",
            scenario.to_str().unwrap(),
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-p",
            &self.uas.to_string(),
            "-mp",
            &mp.to_string(),
            "-m",
            &calls.to_string(),
            "-trace_msg",
            "-message_file",
            trace,
            "-nostdin",
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        let s = Sipp::spawn(&self.dir, &args).expect("sipp uas");
        assert!(
            e2e::wait_for(Duration::from_secs(10), || e2e::udp_bound(self.uas)),
            "sipp uas did not bind {}",
            self.uas
        );
        s
    }

    /// Runs the UAC in the foreground.
    fn uac(&self, scenario: &Path, calls: u32, rate: u32, trace: &str) -> Output {
        let mp = free_port();
        e2e::sipp(
            &self.dir,
            &[
                "-sf".into(),
                scenario.to_str().unwrap().into(),
                format!("127.0.0.1:{}", self.sip),
                "-i".into(),
                "127.0.0.1".into(),
                "-mi".into(),
                "127.0.0.1".into(),
                "-p".into(),
                free_port().to_string(),
                "-mp".into(),
                mp.to_string(),
                "-m".into(),
                calls.to_string(),
                "-r".into(),
                rate.to_string(),
                "-timeout".into(),
                "90s".into(),
                "-trace_msg".into(),
                "-message_file".into(),
                trace.into(),
                "-trace_err".into(),
                "-nostdin".into(),
            ],
        )
        .expect("sipp uac")
    }

    fn trace(&self, name: &str) -> Vec<Traced> {
        read_trace(&self.dir.join(name))
    }

    fn rtpproxy_errors(&self) -> Vec<String> {
        self.os()
            .log_text()
            .lines()
            .filter(|l| l.contains("ERROR:rtpproxy") || l.contains("CRITICAL:rtpproxy"))
            .map(str::to_string)
            .collect()
    }
}

/// Waits for a background sipp to finish; true when it exited with status 0.
fn sipp_ok(s: &mut Sipp, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            return st.success();
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_uac_ok(out: &Output, stack: &Stack, what: &str) {
    assert!(
        out.status.success(),
        "{what}: sipp uac failed:\n{}\nOpenSIPS log (rtpproxy/dialog lines):\n{}",
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n"),
        stack
            .os()
            .log_text()
            .lines()
            .filter(|l| l.contains("rtpproxy") || l.contains("dialog"))
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// One message of a sipp `-trace_msg` file.
struct Traced {
    /// Seconds since midnight.
    at: f64,
    sent: bool,
    text: String,
}

impl Traced {
    fn first_line(&self) -> &str {
        self.text.lines().next().unwrap_or("")
    }
    fn sdp_port(&self) -> Option<u16> {
        self.text
            .lines()
            .find_map(|l| l.strip_prefix("m=audio "))
            .and_then(|l| l.split(' ').next())
            .and_then(|p| p.parse().ok())
    }
    fn has_sdp(&self) -> bool {
        self.text.contains("\nv=0")
    }
}

fn read_trace(path: &Path) -> Vec<Traced> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = Vec::new();
    for block in text
        .split("----------------------------------------------- ")
        .skip(1)
    {
        let mut lines = block.splitn(3, '\n');
        let stamp = lines.next().unwrap_or("");
        let what = lines.next().unwrap_or("");
        let body = lines.next().unwrap_or("").trim_start_matches(['\r', '\n']);
        let at = stamp
            .split(' ')
            .nth(1)
            .map(|t| {
                t.split(':')
                    .map(|x| x.trim().parse::<f64>().unwrap_or(0.0))
                    .fold(0.0, |acc, x| acc * 60.0 + x)
            })
            .unwrap_or(0.0);
        out.push(Traced {
            at,
            sent: what.contains("sent"),
            text: body.to_string(),
        });
    }
    out
}

fn media_port_of(args_trace: &[Traced], sent: bool) -> Option<u16> {
    args_trace
        .iter()
        .find(|m| m.sent == sent && m.has_sdp())
        .and_then(Traced::sdp_port)
}

fn dialogs(os: &OpenSips) -> usize {
    let v = e2e::json(&os.mi("dlg_list", &[]).expect("dlg_list"));
    v.get("Dialogs")
        .and_then(|d| d.as_array())
        .map_or(0, Vec::len)
}

fn dialogs_drained(os: &OpenSips) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = dialogs(os);
        if n == 0 || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn skip_without_sipp(test: &str) -> Option<Env> {
    let env = Env::get(test)?;
    e2e::have_sipp(test).then_some(env)
}

// ---- acceptance 2: calls, BYE, CANCEL, refused ---------------------------------------------

#[test]
fn engage_relays_calls_and_deletes_sessions() {
    let test = "engage_relays_calls_and_deletes_sessions";
    let Some(env) = skip_without_sipp(test) else {
        return;
    };
    let dir = scratch("engage-calls");
    let ctl = format!("127.0.0.1:{}", free_port());
    let Some(_relay) = Relay::start(&[format!("udp:{ctl}")]) else {
        e2e::skip(
            test,
            "no RTPProxy engine (pip install rtp.io or set RTPPROXY_BIN)",
        );
        return;
    };
    let modparams = format!("modparam(\"rtpproxy\", \"rtpproxy_sock\", \"udp:{ctl}\")");
    let mut stack = Stack::start(
        &env,
        Impl::Ours,
        &dir,
        &modparams,
        &engage_call("\"co\""),
        "",
    );

    // Answered calls with media both ways (the UAS echoes), hung up by the UAC.
    let calls = 20;
    let pcap = sipp_pcap("dtmf_2833_1.pcap");
    let (uac, uas) = call_scenarios(&dir, pcap.as_deref(), None, End::Hangup(500));
    let mut uas_sipp = stack.uas(&uas, calls, &["-rtp_echo"], "uas-calls.msg");
    let out = stack.uac(&uac, calls, 10, "uac-calls.msg");
    assert_uac_ok(&out, &stack, "answered calls");
    assert!(sipp_ok(&mut uas_sipp, Duration::from_secs(30)), "sipp uas");
    let after_bye = sessions_drained(&ctl);
    let relayed = e2e::relay_counter(&ctl, "packets transmitted").unwrap_or(0);

    // Every INVITE reached the UAS with the relay's port, every 200 OK the UAC likewise.
    let uas_trace = stack.trace("uas-calls.msg");
    let uac_trace = stack.trace("uac-calls.msg");
    let invites: Vec<&Traced> = uas_trace
        .iter()
        .filter(|m| !m.sent && m.first_line().starts_with("INVITE"))
        .collect();
    assert_eq!(invites.len() as u32, calls);
    let uac_media = media_port_of(&uac_trace, true).unwrap();
    let uas_media = media_port_of(&uas_trace, true).unwrap();
    for inv in &invites {
        assert_ne!(inv.sdp_port(), Some(uac_media), "INVITE SDP not rewritten");
        assert!(
            inv.text.contains(&format!("c=IN IP4 {}", e2e::RELAY_IP)),
            "INVITE c= not the relay's:\n{}",
            inv.text
        );
        assert!(inv.text.contains("a=nortpproxy:yes"));
    }
    let oks: Vec<&Traced> = uac_trace
        .iter()
        .filter(|m| !m.sent && m.first_line().starts_with("SIP/2.0 200") && m.has_sdp())
        .collect();
    assert_eq!(oks.len() as u32, calls);
    for ok in &oks {
        assert_ne!(ok.sdp_port(), Some(uas_media), "200 OK SDP not rewritten");
    }

    // Cancelled calls.
    let cancels = 5;
    let mut uas_sipp = stack.uas(&fixture("uas_cancel.xml"), cancels, &[], "uas-cancel.msg");
    let out = stack.uac(&fixture("uac_cancel.xml"), cancels, 10, "uac-cancel.msg");
    assert_uac_ok(&out, &stack, "cancelled calls");
    assert!(
        sipp_ok(&mut uas_sipp, Duration::from_secs(30)),
        "sipp uas (cancel)"
    );
    let after_cancel = sessions_drained(&ctl);

    // Refused calls.
    let busy = 5;
    let mut uas_sipp = stack.uas(&fixture("uas_busy.xml"), busy, &[], "uas-busy.msg");
    let out = stack.uac(&fixture("uac_busy.xml"), busy, 10, "uac-busy.msg");
    assert_uac_ok(&out, &stack, "refused calls");
    assert!(
        sipp_ok(&mut uas_sipp, Duration::from_secs(30)),
        "sipp uas (busy)"
    );
    let after_busy = sessions_drained(&ctl);
    let created = e2e::relay_counter(&ctl, "sessions created").unwrap_or(0);

    let errors = stack.rtpproxy_errors();
    let (status, log) = stack.stop();
    assert!(status.success(), "opensips did not stop cleanly:\n{log}");
    assert!(errors.is_empty(), "rtpproxy errors:\n{}", errors.join("\n"));
    assert_eq!(after_bye, 0, "sessions left after BYE");
    assert_eq!(after_cancel, 0, "sessions left after CANCEL");
    assert_eq!(after_busy, 0, "sessions left after 486");
    if pcap.is_some() {
        assert!(relayed > 0, "no media relayed");
    }
    println!(
        "engage: {calls} answered + {cancels} cancelled + {busy} refused calls; relay sessions \
         created {created}; active after BYE {after_bye}, after CANCEL {after_cancel}, \
         after 486 {after_busy}; packets relayed {relayed}"
    );
}

// ---- late negotiation and re-INVITE ---------------------------------------------------------

#[test]
fn engage_handles_late_offer_and_reinvite() {
    let test = "engage_handles_late_offer_and_reinvite";
    let Some(env) = skip_without_sipp(test) else {
        return;
    };
    let dir = scratch("engage-late");
    let ctl = format!("127.0.0.1:{}", free_port());
    let Some(_relay) = Relay::start(&[format!("udp:{ctl}")]) else {
        e2e::skip(
            test,
            "no RTPProxy engine (pip install rtp.io or set RTPPROXY_BIN)",
        );
        return;
    };
    let modparams = format!("modparam(\"rtpproxy\", \"rtpproxy_sock\", \"udp:{ctl}\")");
    let mut stack = Stack::start(&env, Impl::Ours, &dir, &modparams, &engage_call(""), "");
    let mut uas = stack.uas(&fixture("uas_late_reinvite.xml"), 1, &[], "uas-late.msg");
    let out = stack.uac(&fixture("uac_late_reinvite.xml"), 1, 1, "uac-late.msg");
    assert_uac_ok(&out, &stack, "late negotiation");
    assert!(sipp_ok(&mut uas, Duration::from_secs(30)), "sipp uas");
    let left = sessions_drained(&ctl);
    let uac = stack.trace("uac-late.msg");
    let uas_t = stack.trace("uas-late.msg");
    let uac_media = media_port_of(&uac, true).unwrap();
    let uas_media = media_port_of(&uas_t, true).unwrap();
    // The offer in the 200 OK and the answer in the ACK, then the re-INVITE and its 200 OK:
    // every SDP crossing OpenSIPS carries a relay port, not the other side's own.
    let received_sdp = |t: &[Traced], own: u16, what: &str| {
        let sdps: Vec<&Traced> = t.iter().filter(|m| !m.sent && m.has_sdp()).collect();
        assert_eq!(sdps.len(), 2, "{what}: SDP messages received");
        for m in sdps {
            assert_ne!(
                m.sdp_port(),
                Some(own),
                "{what}: not rewritten:\n{}",
                m.text
            );
            assert!(
                m.text.contains(&format!("c=IN IP4 {}", e2e::RELAY_IP)),
                "{what}: c= not the relay's:\n{}",
                m.text
            );
        }
    };
    received_sdp(&uac, uas_media, "UAC (200 OKs)");
    received_sdp(&uas_t, uac_media, "UAS (ACK and re-INVITE)");
    let errors = stack.rtpproxy_errors();
    let (status, log) = stack.stop();
    assert!(status.success(), "{log}");
    assert!(errors.is_empty(), "rtpproxy errors:\n{}", errors.join("\n"));
    assert_eq!(left, 0, "sessions left after BYE");
}

// ---- acceptance 3: media timeout -> BYE both ways --------------------------------------------

/// Runs one call whose media stops; returns (seconds from the end of RTP to the UAC's BYE,
/// seconds to the UAS's BYE).
fn timeout_call(test: &str, unix: bool, media: bool) -> Option<(f64, f64)> {
    let env = skip_without_sipp(test)?;
    if rtpproxy_bin().is_none() {
        e2e::skip(test, "RTPPROXY_BIN is not set (the test needs -n/-T/-W)");
        return None;
    }
    let pcap = if media {
        let Some(p) = sipp_pcap("g711a.pcap") else {
            e2e::skip(test, "sipp's g711a.pcap is not installed");
            return None;
        };
        Some(p)
    } else {
        None
    };
    let dir = scratch(test);
    let ctl_port = free_port();
    let ctl = format!("127.0.0.1:{ctl_port}");
    let notify = if unix {
        format!("unix:{}", dir.join("notify.sock").display())
    } else {
        format!("tcp:127.0.0.1:{}", free_port())
    };
    let modparams = format!(
        "modparam(\"rtpproxy\", \"rtpproxy_sock\", \"udp:{ctl}\")\n\
         modparam(\"rtpproxy\", \"rtpp_notify_socket\", \"{notify}\")"
    );
    let relay = daemon(
        &dir,
        ctl_port,
        &[
            "-n".into(),
            notify.clone(),
            "-T".into(),
            "3".into(),
            "-W".into(),
            "3".into(),
        ],
    )
    .expect("rtpproxy");
    let mut stack = Stack::start(
        &env,
        Impl::Ours,
        &dir,
        &modparams,
        &engage_call("\"n\""),
        "",
    );
    let (uac, uas) = call_scenarios(&dir, pcap.as_deref(), None, End::Wait);
    let mut uas_sipp = stack.uas(&uas, 1, &["-rtp_echo"], "uas-timeout.msg");
    let out = stack.uac(&uac, 1, 1, "uac-timeout.msg");
    assert_uac_ok(&out, &stack, "call ended by the relay timeout");
    assert!(
        sipp_ok(&mut uas_sipp, Duration::from_secs(30)),
        "the UAS did not get its BYE"
    );
    let left = dialogs_drained(stack.os());
    let sessions = sessions_drained(&ctl);
    let uac_t = stack.trace("uac-timeout.msg");
    let uas_t = stack.trace("uas-timeout.msg");
    let ack = uac_t
        .iter()
        .find(|m| m.sent && m.first_line().starts_with("ACK"))
        .expect("ACK")
        .at;
    // RTP ends 0.3 s after the ACK plus the pcap's length (7.05 s), or never starts.
    let rtp_end = ack + 0.3 + if media { 7.05 } else { 0.0 };
    let bye_at = |t: &[Traced]| {
        t.iter()
            .find(|m| !m.sent && m.first_line().starts_with("BYE"))
            .map(|m| m.at)
            .expect("BYE received")
    };
    let (uac_bye, uas_bye) = (bye_at(&uac_t), bye_at(&uas_t));
    let log = stack.os().log_text();
    let ended = log
        .lines()
        .any(|l| l.contains("ended: RTPProxy reported a media timeout"));
    let errors = stack.rtpproxy_errors();
    drop(relay);
    let (status, log2) = stack.stop();
    assert!(status.success(), "{log2}");
    assert!(ended, "no timeout handled:\n{log}");
    assert!(errors.is_empty(), "rtpproxy errors:\n{}", errors.join("\n"));
    assert_eq!(left, 0, "dialog still listed by dlg_list");
    assert_eq!(sessions, 0);
    Some((uac_bye - rtp_end, uas_bye - rtp_end))
}

#[test]
fn media_timeout_sends_bye_both_ways_tcp() {
    if let Some((a, b)) = timeout_call("media_timeout_tcp", false, true) {
        println!(
            "media timeout (tcp notify, -T 3 -W 3, RTP for 7.05 s then stopped): BYE to the \
             UAC {a:.2}s and to the UAS {b:.2}s after the last RTP packet"
        );
    }
}

#[test]
fn media_timeout_sends_bye_both_ways_unix() {
    if let Some((a, b)) = timeout_call("media_timeout_unix", true, false) {
        println!(
            "media timeout (unix notify, -W 3, no RTP at all): BYE to the UAC {a:.2}s and to \
             the UAS {b:.2}s after the ACK"
        );
    }
}

// ---- acceptance 4: DTMF event ---------------------------------------------------------------

#[test]
fn dtmf_reaches_event_subscriber() {
    let test = "dtmf_reaches_event_subscriber";
    let Some(env) = skip_without_sipp(test) else {
        return;
    };
    let Some(bin) = rtpproxy_bin() else {
        e2e::skip(test, "RTPPROXY_BIN is not set");
        return;
    };
    let Some(module) = catch_dtmf_module(&bin) else {
        e2e::skip(test, "rtpp_catch_dtmf.so not found next to RTPPROXY_BIN");
        return;
    };
    let (Some(one), Some(nine)) = (sipp_pcap("dtmf_2833_1.pcap"), sipp_pcap("dtmf_2833_9.pcap"))
    else {
        e2e::skip(test, "sipp's DTMF pcaps are not installed");
        return;
    };
    let dir = scratch("engage-dtmf");
    let events = UdpSocket::bind("127.0.0.1:0").unwrap();
    events
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let ev_addr = events.local_addr().unwrap();
    let ctl_port = free_port();
    let ctl = format!("127.0.0.1:{ctl_port}");
    let notify = format!("tcp:127.0.0.1:{}", free_port());
    let modparams = format!(
        "modparam(\"rtpproxy\", \"rtpproxy_sock\", \"udp:{ctl}\")\n\
         modparam(\"rtpproxy\", \"rtpp_notify_socket\", \"{notify}\")"
    );
    let _relay = daemon(
        &dir,
        ctl_port,
        &[
            "-n".into(),
            notify,
            "--dso".into(),
            module.display().to_string(),
        ],
    )
    .expect("rtpproxy");
    let mut stack = Stack::start(
        &env,
        Impl::Ours,
        &dir,
        &modparams,
        &engage_call("\"d\""),
        &format!("subscribe_event(\"E_RTPPROXY_DTMF\", \"udp:{ev_addr}\");"),
    );
    // The caller sends "1", then the callee "9".
    let (uac, uas) = call_scenarios(&dir, Some(&one), Some(&nine), End::Hangup(1500));
    let mut uas_sipp = stack.uas(&uas, 1, &[], "uas-dtmf.msg");
    let out = stack.uac(&uac, 1, 1, "uac-dtmf.msg");
    assert_uac_ok(&out, &stack, "DTMF call");
    assert!(sipp_ok(&mut uas_sipp, Duration::from_secs(30)), "sipp uas");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < 2 {
        let Ok(n) = events.recv(&mut buf) else { break };
        let v = e2e::json(&String::from_utf8_lossy(&buf[..n]));
        if v["method"] == "E_RTPPROXY_DTMF" {
            got.push(v["params"].clone());
        }
    }
    let errors = stack.rtpproxy_errors();
    let (status, log) = stack.stop();
    assert!(status.success(), "{log}");
    assert!(errors.is_empty(), "rtpproxy errors:\n{}", errors.join("\n"));
    assert_eq!(got.len(), 2, "E_RTPPROXY_DTMF events: {got:?}\n{log}");
    let digits: Vec<(String, i64)> = got
        .iter()
        .map(|p| {
            (
                p["digit"].as_str().unwrap().to_string(),
                p["stream"].as_i64().unwrap(),
            )
        })
        .collect();
    assert!(digits.contains(&("1".into(), 0)), "{got:?}");
    assert!(digits.contains(&("9".into(), 1)), "{got:?}");
    for p in &got {
        assert_eq!(p["is_callid"], 0, "{p}");
        let id = p["id"].as_str().unwrap();
        assert!(id.contains('.'), "dialog id {id}");
        assert!(p["duration"].as_i64().unwrap() > 0, "{p}");
    }
    println!("E_RTPPROXY_DTMF events: {got:?}");
}

// ---- acceptance 5: listener abuse in the real process ----------------------------------------

fn listener_pid(os: &OpenSips) -> u32 {
    let v = e2e::json(&os.mi("ps", &[]).expect("mi ps"));
    v["Processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["Type"] == "RTPP notification receiver")
        .and_then(|p| p["PID"].as_u64())
        .expect("notification process in mi ps") as u32
}

/// Threads of every OpenSIPS process (`mi ps`): (type, pid, threads).
fn thread_counts(os: &OpenSips) -> Vec<(String, u64, usize)> {
    let v = e2e::json(&os.mi("ps", &[]).expect("mi ps"));
    v["Processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let pid = p["PID"].as_u64().unwrap();
            let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, Iterator::count);
            (p["Type"].as_str().unwrap_or("").to_string(), pid, threads)
        })
        .collect()
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// A TCP connection from another local address (an unknown peer).
fn connect_from(local: &str, to: SocketAddr) -> Option<TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .ok()?;
    rt.block_on(async {
        let s = tokio::net::TcpSocket::new_v4().ok()?;
        s.bind(format!("{local}:0").parse().ok()?).ok()?;
        let c = s.connect(to).await.ok()?;
        c.into_std().ok()
    })
}

#[test]
fn listener_survives_abuse_without_leaking() {
    let test = "listener_survives_abuse_without_leaking";
    let Some(env) = skip_without_sipp(test) else {
        return;
    };
    if rtpproxy_bin().is_none() {
        e2e::skip(test, "RTPPROXY_BIN is not set");
        return;
    }
    let dir = scratch("engage-abuse");
    let ctl_port = free_port();
    let ctl = format!("127.0.0.1:{ctl_port}");
    let nport = free_port();
    let notify = format!("tcp:127.0.0.1:{nport}");
    let modparams = format!(
        "modparam(\"rtpproxy\", \"rtpproxy_sock\", \"udp:{ctl}\")\n\
         modparam(\"rtpproxy\", \"rtpp_notify_socket\", \"{notify}\")"
    );
    let relay_args: Vec<String> = vec![
        "-n".into(),
        notify.clone(),
        "-W".into(),
        "2".into(),
        "-T".into(),
        "2".into(),
    ];
    let relay = daemon(&dir, ctl_port, &relay_args).expect("rtpproxy");
    let mut stack = Stack::start(
        &env,
        Impl::Ours,
        &dir,
        &modparams,
        &engage_call("\"n\""),
        "",
    );
    let pid = listener_pid(stack.os());
    let target: SocketAddr = format!("127.0.0.1:{nport}").parse().unwrap();
    let before = fd_count(pid);

    // 100 connections opened and dropped, a third of them in the middle of a line.
    for i in 0..100 {
        let mut c = TcpStream::connect(target).unwrap();
        if i % 3 == 0 {
            let _ = c.write_all(b"T12.3");
        }
    }
    // 1,000 garbage lines on one connection.
    let mut g = TcpStream::connect(target).unwrap();
    for i in 0..1000 {
        let line = match i % 5 {
            0 => "garbage\n".to_string(),
            1 => format!("T{i}\n"),
            2 => "Dd1.2\n".to_string(),
            3 => format!("Q{}\n", "x".repeat(i % 200)),
            _ => "T..\n".to_string(),
        };
        g.write_all(line.as_bytes()).unwrap();
    }
    g.write_all(&vec![b'y'; 5000]).unwrap();
    g.write_all(b"\n").unwrap();
    // 20 connections from an address that is no relay's.
    let mut refused = 0;
    for _ in 0..20 {
        if let Some(mut c) = connect_from("127.0.0.2", target) {
            let _ = c.write_all(b"T1.1\n");
            refused += 1;
        }
    }
    drop(g);
    // Let the listener see every close, then count again.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = fd_count(pid);
    while after > before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        after = fd_count(pid);
    }

    // IPC jobs are served by the listener process (script reload reaches every process).
    let reload = stack.os().mi("reload_routes", &[]);

    // A real timeout still ends a call (no media, -W 2).
    let (uac, uas) = call_scenarios(&dir, None, None, End::Wait);
    let mut uas_sipp = stack.uas(&uas, 1, &[], "uas-abuse.msg");
    let out = stack.uac(&uac, 1, 1, "uac-abuse.msg");
    assert_uac_ok(&out, &stack, "timeout call after the abuse");
    assert!(sipp_ok(&mut uas_sipp, Duration::from_secs(30)), "UAS BYE");
    let left = dialogs_drained(stack.os());
    let with_relay = fd_count(pid);

    // The relay restarts (its notification connection drops); the next timeout arrives over
    // a new connection, and the old one is gone.
    drop(relay);
    let relay = daemon(&dir, ctl_port, &relay_args).expect("rtpproxy restarted");
    let mut uas_sipp = stack.uas(&uas, 1, &[], "uas-restart.msg");
    let out = stack.uac(&uac, 1, 1, "uac-restart.msg");
    assert_uac_ok(&out, &stack, "timeout call after a relay restart");
    assert!(sipp_ok(&mut uas_sipp, Duration::from_secs(30)), "UAS BYE");
    let left_after_restart = dialogs_drained(stack.os());
    let after_restart = fd_count(pid);

    // The tokio runtime lives in the listener process only, on its one thread.
    let threads = thread_counts(stack.os());
    let log = stack.os().log_text();
    drop(relay);
    let (status, log2) = stack.stop();
    assert!(status.success(), "{log2}");
    assert!(reload.is_ok(), "reload_routes: {reload:?}");
    assert_eq!(
        after, before,
        "descriptors of the listener process before/after the abuse"
    );
    for (kind, pid, n) in &threads {
        assert_eq!(*n, 1, "process {kind} ({pid}) has {n} threads");
    }
    assert_eq!(left, 0);
    assert_eq!(left_after_restart, 0);
    assert_eq!(
        after_restart, with_relay,
        "one notification connection, the new relay's"
    );
    assert!(
        log.contains("connection from unknown RTPProxy node"),
        "unknown peers not refused"
    );
    assert!(
        log.contains("skipped without being logged"),
        "bad lines not summed up"
    );
    println!(
        "listener abuse: pid {pid}: fds before={before} after={after} (with the relay's \
         notification connection: {with_relay}); 100 connections dropped, 1000 garbage \
         lines + 1 over-long line, {refused} connections from 127.0.0.2 refused; \
         reload_routes served; timeout calls ended with BYE both ways before and after a relay \
         restart (fds with the new relay's connection: {after_restart})"
    );
}

// ---- dialog values: the C module's encoding --------------------------------------------------

fn dialog_values(os: &OpenSips) -> Vec<(String, String)> {
    let v = e2e::json(&os.mi("dlg_list_ctx", &[]).expect("dlg_list_ctx"));
    let mut out = Vec::new();
    for d in v["Dialogs"].as_array().into_iter().flatten() {
        for item in d["context"]["values"].as_array().into_iter().flatten() {
            for (k, val) in item.as_object().unwrap() {
                if k.starts_with("rtpproxy_") || k == "late_negotiation" {
                    out.push((k.clone(), val.to_string()));
                }
            }
        }
    }
    out.sort();
    out
}

/// Runs one engaged call and reads the dialog values while it is up.
fn values_of(env: &Env, which: Impl, tag: &str, engage_where: &str) -> Vec<(String, String)> {
    let dir = scratch(&format!("engage-values-{tag}-{which:?}"));
    let ctl = format!("127.0.0.1:{}", free_port());
    let relay = Relay::start(&[format!("udp:{ctl}")]).expect("relay");
    let modparams = format!(
        "modparam(\"rtpproxy\", \"rtpproxy_sock\", \"udp:{ctl}\")\n\
         modparam(\"rtpproxy\", \"rtpproxy_sock\", \"1 == udp:{ctl}\")"
    );
    let call = "rtpproxy_engage(\"co\", \"10.0.0.9\", 1)";
    let (req, branch) = match engage_where {
        "branch" => ("t_on_branch(\"b\");".to_string(), call.to_string()),
        _ => (engage_call("\"co\", \"10.0.0.9\", 1"), String::new()),
    };
    let uas_port = free_port();
    let mut text = routes(uas_port, &req, "");
    if !branch.is_empty() {
        text = text.replace(
            "xlog(\"L_DBG\", \"branch $T_branch_idx\\n\");",
            &format!("{branch};"),
        );
    }
    let c = cfg(env, which, &dir, &modparams, MODULES, &text);
    let sip: u16 = c
        .text
        .lines()
        .find_map(|l| l.strip_prefix("socket=udp:127.0.0.1:"))
        .unwrap()
        .parse()
        .unwrap();
    let os = OpenSips::start(env, &c).unwrap();
    let mut stack = Stack {
        dir: dir.clone(),
        running: Some(os),
        sip,
        uas: uas_port,
    };
    let (uac, uas) = call_scenarios(&dir, None, None, End::Hangup(2500));
    let mut uas_sipp = stack.uas(&uas, 1, &[], "uas-values.msg");
    let uac_thread = {
        let (dir, sip) = (dir.clone(), stack.sip);
        let mp = free_port();
        let lp = free_port();
        std::thread::spawn(move || {
            e2e::sipp(
                &dir,
                &[
                    "-sf".into(),
                    uac.to_str().unwrap().into(),
                    format!("127.0.0.1:{sip}"),
                    "-i".into(),
                    "127.0.0.1".into(),
                    "-p".into(),
                    lp.to_string(),
                    "-mp".into(),
                    mp.to_string(),
                    "-m".into(),
                    "1".into(),
                    "-timeout".into(),
                    "30s".into(),
                    "-nostdin".into(),
                ],
            )
        })
    };
    // Read while the call is up (the UAC hangs up 2.5 s after the ACK).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut values = Vec::new();
    while Instant::now() < deadline {
        values = dialog_values(stack.os());
        if values.iter().any(|(k, _)| k == "rtpproxy_3") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = uac_thread.join().unwrap().expect("sipp");
    assert!(out.status.success(), "{which:?} call failed");
    assert!(sipp_ok(&mut uas_sipp, Duration::from_secs(30)));
    drop(relay);
    let (status, _) = stack.stop();
    assert!(status.success());
    values
}

#[test]
fn dialog_values_match_the_c_module() {
    let test = "dialog_values_match_the_c_module";
    let Some(env) = skip_without_sipp(test) else {
        return;
    };
    if env.c_module.is_none() {
        e2e::skip(
            test,
            "the C rtpproxy.so of this OpenSIPS build is not installed",
        );
        return;
    }
    if Relay::start(&[format!("udp:127.0.0.1:{}", free_port())]).is_none() {
        e2e::skip(test, "no RTPProxy engine");
        return;
    }
    for place in ["request", "branch"] {
        let c = values_of(&env, Impl::C, place, place);
        let mut ours = values_of(&env, Impl::Ours, place, place);
        assert!(
            c.iter().any(|(k, _)| k == "rtpproxy_3"),
            "C values ({place}): {c:?}"
        );
        // Ours adds the node holding the call (issue 14), a value the C module ignores.
        let node = ours.iter().position(|(k, _)| k == "rtpproxy_node");
        let node = node.map(|i| ours.remove(i));
        assert!(
            node.as_ref()
                .is_some_and(|(_, v)| v.contains("udp:127.0.0.1:")),
            "our rtpproxy_node value ({place}): {node:?}"
        );
        assert_eq!(ours, c, "dialog values from the {place} route");
        println!("dialog values ({place} route), C and ours: {c:?}");
    }
}
