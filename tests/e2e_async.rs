//! Async script functions through a real OpenSIPS (`OPENSIPS_BIN`), real rtpproxy daemons
//! (`RTPPROXY_BIN`) and SIP requests sent from the test:
//! - `async(rtpproxy_offer/answer/unforce(...), resume)`: the resume route sees `$rc`, the
//!   forwarded request carries the rewritten SDP, `sock_var`/`ret_var` are set, the relay
//!   holds the session and forgets it after the unforce;
//! - a relay error (`$rc` negative for an answer to an unknown call, as the blocking function);
//! - one of two relays hung (SIGSTOP): every offer still succeeds (failover), the unforce ends;
//! - both relays hung and a script timeout shorter than the command: the resume route runs
//!   with a negative `$rc`;
//! - `launch(rtpproxy_unforce())` deletes the session;
//! - every async function (offer, answer, unforce, the prompts and their stops, start/stop
//!   recording, stats) on a relay that holds the call (its effect: rewritten SDP, a recording
//!   file, nothing left to stop, counters that grow), with relay errors (unknown call, a prompt
//!   the relay cannot open), under `launch()` (the report route's `$rc`), on a hung relay (the
//!   function ends, the relay is out, a new call and the function run on the other relay) and
//!   with a script timeout shorter than the command.

mod e2e;

use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::{cfg, port, scratch, Env, Impl, OpenSips, Relay};

fn setup(name: &str) -> Option<Env> {
    let env = Env::get(name)?;
    if std::env::var_os("RTPPROXY_BIN").is_none_or(|v| v.is_empty()) {
        e2e::skip(name, "RTPPROXY_BIN is not set");
        return None;
    }
    Some(env)
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
    if sig == "-STOP" {
        // every thread of the relay has to stop, which takes a while on a busy machine: until
        // then it may still answer
        let stopped = e2e::wait_for(Duration::from_secs(5), || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, r)| r.trim_start().starts_with('T'))
                })
                .unwrap_or(false)
        });
        assert!(stopped, "relay {pid} not stopped by SIGSTOP");
    }
}

/// The script: INVITE -> async offer, UPDATE -> async answer, BYE -> async unforce,
/// MESSAGE -> launch(unforce); each resume route records `$rc` and the variables in headers
/// and relays the request to the test's UAS socket.
fn routes(uas: u16, script_timeout: Option<u32>) -> String {
    let t = script_timeout.map_or(String::new(), |t| format!(", {t}"));
    format!(
        r#"route {{
    $du = "sip:127.0.0.1:{uas}";
    if (is_method("OPTIONS")) {{
        sl_send_reply(200, "Alive");
        exit;
    }}
    if (is_method("INVITE")) {{
        async(rtpproxy_offer("co", , , $avp(sock), $avp(ret)), resumed{t});
    }}
    if (is_method("UPDATE")) {{
        async(rtpproxy_answer("co", , , $avp(sock), $avp(ret)), resumed{t});
    }}
    if (is_method("INFO")) {{
        $avp(body) = $rb;
        async(rtpproxy_offer("co", , , $avp(sock), $avp(ret), $avp(body)), body_var{t});
    }}
    if (is_method("BYE")) {{
        async(rtpproxy_unforce(, $avp(sock)), resumed{t});
    }}
    if (is_method("MESSAGE")) {{
        launch(rtpproxy_unforce());
        append_hf("X-RC: launched\r\n");
        t_relay();
        exit;
    }}
    if (is_method("ACK")) {{
        async(rtpproxy_unforce(), resumed{t});
    }}
    exit;
}}
route[resumed] {{
    append_hf("X-RC: $rc\r\n");
    append_hf("X-Sock: $avp(sock)\r\n");
    append_hf("X-Ret: $avp(ret)\r\n");
    t_relay();
}}
route[body_var] {{
    append_hf("X-RC: $rc\r\n");
    append_hf("X-Sock: $avp(sock)\r\n");
    if ($avp(body) =~ "m=audio 40000 ") append_hf("X-Body: unchanged\r\n");
    else if ($avp(body) =~ "m=audio [0-9]+ ") append_hf("X-Body: rewritten\r\n");
    t_relay();
}}
"#
    )
}

fn modparams(relays: &[u16], timeout: &str, retr: u32) -> String {
    let socks: Vec<String> = relays
        .iter()
        .map(|p| format!("udp:127.0.0.1:{p}"))
        .collect();
    format!(
        r#"modparam("rtpproxy", "rtpproxy_sock", "{}")
modparam("rtpproxy", "rtpproxy_timeout", "{timeout}")
modparam("rtpproxy", "rtpproxy_retr", {retr})
modparam("rtpproxy", "rtpproxy_disable_tout", 60)"#,
        socks.join(" ")
    )
}

const SDP: &str =
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n";

const EXTRA: &str = r#"loadmodule "sl.so"
loadmodule "sipmsgops.so""#;

struct Sip {
    sock: UdpSocket,
    uas: UdpSocket,
    proxy: u16,
}

impl Sip {
    fn new() -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let uas = UdpSocket::bind("127.0.0.1:0").unwrap();
        uas.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Self {
            sock,
            uas,
            proxy: 0,
        }
    }

    fn uas_port(&self) -> u16 {
        self.uas.local_addr().unwrap().port()
    }

    /// Sends a request and returns the request OpenSIPS forwards for it (`None` within
    /// `wait`).
    /// Sends a request without waiting for anything.
    fn send(&self, method: &str, call: &str) {
        let me = self.sock.local_addr().unwrap().port();
        let msg = format!(
            "{method} sip:uas@127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{call}{method}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:uac@127.0.0.1>;tag=ft\r\n\
             To: <sip:uas@127.0.0.1>\r\n\
             Call-ID: {call}\r\n\
             CSeq: 1 {method}\r\n\
             Content-Type: application/sdp\r\n\
             Content-Length: {len}\r\n\r\n{body}",
            body = SDP,
            len = SDP.len()
        );
        self.sock
            .send_to(msg.as_bytes(), ("127.0.0.1", self.proxy))
            .unwrap();
    }

    fn request(
        &self,
        method: &str,
        call: &str,
        ftag: &str,
        ttag: Option<&str>,
        sdp: bool,
        wait: Duration,
    ) -> Option<String> {
        self.request_with(method, call, ftag, ttag, sdp, "", wait)
    }

    /// Sends a request with `extra` header lines (each ending in CRLF) without waiting.
    fn send_with(
        &self,
        method: &str,
        call: &str,
        ftag: &str,
        ttag: Option<&str>,
        sdp: bool,
        extra: &str,
    ) {
        let me = self.sock.local_addr().unwrap().port();
        let body = if sdp {
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"
        } else {
            ""
        };
        let to_tag = ttag.map_or(String::new(), |t| format!(";tag={t}"));
        let ctype = if sdp {
            "Content-Type: application/sdp\r\n"
        } else {
            ""
        };
        // a branch of its own per request: tm takes a repeated one for a retransmission
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let branch = format!("z9hG4bK{call}{method}{n}");
        let msg = format!(
            "{method} sip:uas@127.0.0.1:{uas} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:{me};branch={branch}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:uac@127.0.0.1>;tag={ftag}\r\n\
             To: <sip:uas@127.0.0.1>{to_tag}\r\n\
             Call-ID: {call}\r\n\
             CSeq: 1 {method}\r\n\
             Contact: <sip:uac@127.0.0.1:{me}>\r\n\
             {extra}{ctype}Content-Length: {len}\r\n\r\n{body}",
            uas = self.uas_port(),
            len = body.len()
        );
        self.sock
            .send_to(msg.as_bytes(), ("127.0.0.1", self.proxy))
            .unwrap();
    }

    /// [`Sip::send_with`], then the request OpenSIPS forwards for it (`None` within `wait`).
    #[allow(clippy::too_many_arguments)]
    fn request_with(
        &self,
        method: &str,
        call: &str,
        ftag: &str,
        ttag: Option<&str>,
        sdp: bool,
        extra: &str,
        wait: Duration,
    ) -> Option<String> {
        self.send_with(method, call, ftag, ttag, sdp, extra);
        let deadline = Instant::now() + wait;
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            if let Ok(n) = self.uas.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if text.starts_with(method)
                    && text.contains(&format!("Call-ID: {call}"))
                    && extra.lines().all(|l| text.contains(l))
                {
                    return Some(text);
                }
            }
        }
        None
    }
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map(str::trim)
}

fn media_port(msg: &str) -> Option<u16> {
    msg.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split(' ').next())
        .and_then(|p| p.parse().ok())
}

struct Setup {
    _dir: std::path::PathBuf,
    os: OpenSips,
    sip: Sip,
    relays: Vec<(u16, Relay)>,
}

fn start(
    env: &Env,
    name: &str,
    n_relays: usize,
    timeout: &str,
    retr: u32,
    script_timeout: Option<u32>,
) -> Setup {
    start_with(env, name, n_relays, &[], &|uas, _| {
        (
            modparams_all(uas, timeout, retr),
            routes(uas.sip_uas, script_timeout),
        )
    })
}

/// What a configuration needs to know: the relays' control ports and the test's UAS port.
struct Ports {
    relays: Vec<u16>,
    sip_uas: u16,
}

fn modparams_all(p: &Ports, timeout: &str, retr: u32) -> String {
    modparams(&p.relays, timeout, retr)
}

/// Starts `n_relays` rtpproxy daemons (with `relay_args`) and OpenSIPS with the modparams
/// and routes `conf` makes.
fn start_with(
    env: &Env,
    name: &str,
    n_relays: usize,
    relay_args: &[String],
    conf: &dyn Fn(&Ports, ()) -> (String, String),
) -> Setup {
    let dir = scratch(name);
    let relays: Vec<(u16, Relay)> = (0..n_relays)
        .map(|_| {
            let p = port();
            (
                p,
                Relay::start_daemon(&[format!("udp:127.0.0.1:{p}")], relay_args).expect("rtpproxy"),
            )
        })
        .collect();
    let mut sip = Sip::new();
    let ports = Ports {
        relays: relays.iter().map(|(p, _)| *p).collect(),
        sip_uas: sip.uas_port(),
    };
    let (mp, rt) = conf(&ports, ());
    let c = cfg(env, Impl::Ours, &dir, &mp, EXTRA, &rt);
    sip.proxy = c
        .text
        .lines()
        .find_map(|l| l.strip_prefix("socket=udp:127.0.0.1:"))
        .unwrap()
        .parse()
        .unwrap();
    let os = OpenSips::start(env, &c).unwrap_or_else(|e| panic!("{e}"));
    // the prober's first round
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && os.log_text().matches("is active").count() < n_relays {
        std::thread::sleep(Duration::from_millis(100));
    }
    Setup {
        _dir: dir,
        os,
        sip,
        relays,
    }
}

fn sessions(port: u16) -> u64 {
    e2e::relay_active_sessions(("127.0.0.1", port)).unwrap_or(u64::MAX)
}

fn wait_until(what: &str, max: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + max;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn async_offer_answer_unforce_and_launch() {
    let Some(env) = setup("async_offer_answer_unforce_and_launch") else {
        return;
    };
    let s = start(&env, "async-basic", 1, "1", 3, None);
    let relay = s.relays[0].0;
    let wait = Duration::from_secs(5);

    // offer: $rc 1, SDP rewritten to a relay port, sock_var and ret_var set
    let fwd = s
        .sip
        .request("INVITE", "c1", "ft1", None, true, wait)
        .expect("offer resumed");
    assert_eq!(header(&fwd, "X-RC"), Some("1"), "{fwd}");
    assert_eq!(
        header(&fwd, "X-Sock"),
        Some(format!("udp:127.0.0.1:{relay}").as_str())
    );
    let port = media_port(&fwd).expect("SDP in the forwarded INVITE");
    assert_ne!(port, 40000, "SDP not rewritten: {fwd}");
    assert!(
        header(&fwd, "X-Ret").is_some_and(|r| r.ends_with(&format!(":{port}"))),
        "{fwd}"
    );
    assert_eq!(sessions(relay), 1);

    // offer in body_var mode: the variable gets the rewritten SDP at resume, the message
    // keeps its own
    let fwd = s
        .sip
        .request("INFO", "cb", "ftb", None, true, wait)
        .expect("body_var offer resumed");
    assert_eq!(header(&fwd, "X-RC"), Some("1"), "{fwd}");
    assert_eq!(header(&fwd, "X-Body"), Some("rewritten"), "{fwd}");
    assert_eq!(
        header(&fwd, "X-Sock"),
        Some(format!("udp:127.0.0.1:{relay}").as_str())
    );
    assert_eq!(media_port(&fwd), Some(40000), "{fwd}");
    assert_eq!(sessions(relay), 2);
    let fwd = s
        .sip
        .request("BYE", "cb", "ftb", None, false, wait)
        .expect("unforce resumed");
    assert_eq!(header(&fwd, "X-RC"), Some("1"), "{fwd}");
    wait_until("the body_var call deleted", wait, || sessions(relay) == 1);

    // answer (the callee's request direction): $rc 1, rewritten
    let fwd = s
        .sip
        .request("UPDATE", "c1", "ft1", Some("tt1"), true, wait)
        .expect("answer resumed");
    assert_eq!(header(&fwd, "X-RC"), Some("1"), "{fwd}");
    assert_ne!(media_port(&fwd), Some(40000), "{fwd}");

    // relay error: an answer for a call the relay does not know fails as the blocking one
    let fwd = s
        .sip
        .request("UPDATE", "nosuch", "fx", Some("tx"), true, wait)
        .expect("answer resumed");
    assert!(
        header(&fwd, "X-RC").is_some_and(|r| r.starts_with('-')),
        "{fwd}"
    );

    // unforce: $rc 1, the session is gone
    let fwd = s
        .sip
        .request("BYE", "c1", "ft1", Some("tt1"), false, wait)
        .expect("unforce resumed");
    assert_eq!(header(&fwd, "X-RC"), Some("1"), "{fwd}");
    wait_until("the session deleted", wait, || sessions(relay) == 0);

    // unforce of an unknown call: the relay answers E50, still $rc 1 (as the blocking one)
    let fwd = s
        .sip
        .request("BYE", "nosuch2", "fy", Some("ty"), false, wait)
        .expect("unforce resumed");
    assert_eq!(header(&fwd, "X-RC"), Some("1"), "{fwd}");

    // ACK cannot suspend: runs synchronously, the resume route still runs
    let fwd = s
        .sip
        .request("INVITE", "c3", "ft3", None, true, wait)
        .expect("offer resumed");
    assert_eq!(header(&fwd, "X-RC"), Some("1"), "{fwd}");
    let fwd = s
        .sip
        .request("ACK", "c3", "ft3", Some("tt3"), false, wait)
        .expect("sync unforce");
    assert_eq!(header(&fwd, "X-RC"), Some("1"), "{fwd}");
    wait_until("the ACK's delete", wait, || sessions(relay) == 0);

    // launch(rtpproxy_unforce()): the request goes on at once, the delete happens
    let fwd = s
        .sip
        .request("INVITE", "c2", "ft2", None, true, wait)
        .expect("offer resumed");
    assert_eq!(header(&fwd, "X-RC"), Some("1"), "{fwd}");
    assert_eq!(sessions(relay), 1);
    let fwd = s
        .sip
        .request("MESSAGE", "c2", "ft2", Some("tt2"), false, wait)
        .expect("launched");
    assert_eq!(header(&fwd, "X-RC"), Some("launched"), "{fwd}");
    wait_until("the launched delete", wait, || sessions(relay) == 0);

    let (_, log) = s.os.stop();
    assert!(
        !log.contains("CRITICAL") && !log.contains("internal error"),
        "{log}"
    );
}

/// The 200 OK (with SDP on port 50000) the test's UAS sends for `req`.
fn ok_with_sdp(req: &str) -> String {
    let mut head = String::from("SIP/2.0 200 OK\r\n");
    for line in req.lines() {
        let l = line.trim_end();
        if l.starts_with("Via:")
            || l.starts_with("From:")
            || l.starts_with("Call-ID:")
            || l.starts_with("CSeq:")
            || l.starts_with("Record-Route:")
        {
            head.push_str(l);
            head.push_str("\r\n");
        } else if l.starts_with("To:") {
            head.push_str(l);
            head.push_str(";tag=uas1\r\n");
        }
    }
    let body = "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 50000 RTP/AVP 0\r\n";
    format!(
        "{head}Contact: <sip:uas@127.0.0.1>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// `async(rtpproxy_answer(...))` in a transaction's reply route (`t_on_reply`): tm suspends
/// the reply, the resume route sees `$rc` and the variables, and the reply the caller gets
/// carries the relay's port; a relay error resumes with its code and leaves the SDP alone.
#[test]
fn async_answer_in_a_reply_route() {
    let Some(env) = setup("async_answer_in_a_reply_route") else {
        return;
    };
    let s = start_with(&env, "async-reply", 1, &[], &|p, _| {
        (
            modparams_all(p, "1", 3),
            format!(
                r#"route {{
    if (is_method("INVITE")) {{
        if (!rtpproxy_offer("co")) {{ sl_send_reply(500, "offer failed"); exit; }}
        t_on_reply("r");
    }}
    $du = "sip:127.0.0.1:{uas}";
    t_relay();
    exit;
}}
onreply_route[r] {{
    if (has_body("application/sdp")) {{
        async(rtpproxy_answer("co", , , $avp(sock), $avp(ret)), answered);
    }}
}}
route[answered] {{
    xlog("L_NOTICE", "reply resumed: call $ci rc $rc sock $avp(sock) ret $avp(ret)\n");
}}
"#,
                uas = p.sip_uas
            ),
        )
    });
    let relay = s.relays[0].0;
    let wait = Duration::from_secs(5);
    s.sip
        .sock
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // the UAS answers `invite`; the 200 OK the caller then gets
    // (an empty `invite`: the UAS already answered)
    let relayed_ok = |invite: &str, call: &str| -> Option<String> {
        if !invite.is_empty() {
            s.sip
                .uas
                .send_to(ok_with_sdp(invite).as_bytes(), ("127.0.0.1", s.sip.proxy))
                .unwrap();
        }
        let mut buf = vec![0u8; 65536];
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let Ok(n) = s.sip.sock.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if text.starts_with("SIP/2.0 200") && text.contains(&format!("Call-ID: {call}")) {
                    return Some(text);
                }
            }
        }
        None
    };

    // success: the caller's 200 OK carries the relay's port; $rc and the variables at resume
    let invite = s
        .sip
        .request("INVITE", "r1", "ftr", None, true, wait)
        .expect("INVITE r1 relayed");
    let ok = relayed_ok(&invite, "r1").expect("the 200 OK relayed after the async answer");
    let port = media_port(&ok).expect("SDP in the 200 OK");
    assert_ne!(port, 50000, "answer SDP not rewritten: {ok}");
    assert_eq!(sessions(relay), 1);
    let resumed = format!("reply resumed: call r1 rc 1 sock udp:127.0.0.1:{relay} ret ");
    wait_until("the resume route's log line for r1", wait, || {
        s.os.log_text().contains(&resumed)
    });
    let log = s.os.log_text();
    let ret = log
        .lines()
        .find_map(|l| l.split_once(&resumed).map(|(_, r)| r.trim()))
        .unwrap();
    assert!(
        ret.ends_with(&format!(":{port}")),
        "ret_var {ret}, port {port}"
    );

    // the relay has no session for the answer (deleted behind the module's back): $rc -1 at
    // resume, and the reply goes on with its own SDP
    let invite = s
        .sip
        .request("INVITE", "r2", "ftr2", None, true, wait)
        .expect("INVITE r2 relayed");
    let ctl = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    ctl.connect(("127.0.0.1", relay)).unwrap();
    ctl.set_read_timeout(Some(wait)).unwrap();
    ctl.send(b"x1 D r2 ftr2").unwrap();
    let mut buf = [0u8; 256];
    let n = ctl.recv(&mut buf).unwrap();
    assert_eq!(
        &buf[..n],
        b"x1 0\n",
        "the session of r2 deleted on the relay"
    );
    let ok = relayed_ok(&invite, "r2").expect("the 200 OK of r2 relayed");
    assert_eq!(media_port(&ok), Some(50000), "SDP left alone: {ok}");
    wait_until("the resume route's log line for r2", wait, || {
        s.os.log_text().contains("reply resumed: call r2 rc -1")
    });

    // the relay answers late (stopped for a while): both replies wait, suspended, while
    // both SIP workers go on serving (a blocking answer would hold each of them), and go out
    // rewritten once the relay answers
    let invites: Vec<String> = ["r3", "r4"]
        .iter()
        .map(|c| {
            s.sip
                .request("INVITE", c, "ftr3", None, true, wait)
                .expect("INVITE relayed")
        })
        .collect();
    let pid = s.relays[0].1.pid();
    signal(pid, "-STOP");
    for invite in &invites {
        s.sip
            .uas
            .send_to(ok_with_sdp(invite).as_bytes(), ("127.0.0.1", s.sip.proxy))
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    let served = s.sip.request(
        "MESSAGE",
        "m1",
        "ftm",
        None,
        false,
        Duration::from_millis(500),
    );
    let mut early = Vec::new();
    while let Ok(n) = s.sip.sock.recv(&mut buf) {
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.starts_with("SIP/2.0 200") && text.contains("INVITE") {
            early.push(text);
        }
    }
    signal(pid, "-CONT");
    assert!(
        served.is_some(),
        "a request was not served while two replies waited for the relay"
    );
    assert!(
        early.is_empty(),
        "a reply went out before the relay answered: {early:?}"
    );
    let mut oks: Vec<String> = Vec::new();
    let deadline = Instant::now() + wait;
    while oks.len() < 2 && Instant::now() < deadline {
        if let Ok(n) = s.sip.sock.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if text.starts_with("SIP/2.0 200") && text.contains("INVITE") {
                oks.push(text);
            }
        }
    }
    for call in ["r3", "r4"] {
        let ok = oks
            .iter()
            .find(|t| t.contains(&format!("Call-ID: {call}\r\n")))
            .unwrap_or_else(|| panic!("no 200 OK of {call} after the relay answered"));
        assert_ne!(media_port(ok), Some(50000), "SDP rewritten: {ok}");
        wait_until("the resume route's log line", wait, || {
            s.os.log_text()
                .contains(&format!("reply resumed: call {call} rc 1"))
        });
    }
    let log = s.os.log_text();
    assert!(!log.contains("CRITICAL") && !log.contains("BUG"), "{log}");
}

#[test]
fn async_offer_fails_over_from_a_hung_relay() {
    let Some(env) = setup("async_offer_fails_over_from_a_hung_relay") else {
        return;
    };
    let s = start(&env, "async-failover", 2, "0.3", 2, None);
    let wait = Duration::from_secs(10);
    let (hung, ok) = (&s.relays[0], &s.relays[1]);
    signal(hung.1.pid(), "-STOP");
    // enough calls that the hash sends some to the hung relay first
    for i in 0..8 {
        let call = format!("f{i}");
        let fwd = s
            .sip
            .request("INVITE", &call, "ft", None, true, wait)
            .expect("offer resumed");
        assert_eq!(header(&fwd, "X-RC"), Some("1"), "{fwd}");
        assert_eq!(
            header(&fwd, "X-Sock"),
            Some(format!("udp:127.0.0.1:{}", ok.0).as_str()),
            "{fwd}"
        );
    }
    assert_eq!(sessions(ok.0), 8);
    for i in 0..8 {
        let call = format!("f{i}");
        let fwd = s
            .sip
            .request("BYE", &call, "ft", Some("tt"), false, wait)
            .expect("unforce resumed");
        assert_eq!(header(&fwd, "X-RC"), Some("1"), "{fwd}");
    }
    wait_until("every session deleted", wait, || sessions(ok.0) == 0);
    signal(hung.1.pid(), "-CONT");
    let (_, log) = s.os.stop();
    assert!(
        log.contains("does not respond, disable it"),
        "the hung relay was never taken out:\n{log}"
    );
}

#[test]
fn async_script_timeout_resumes_with_an_error() {
    let Some(env) = setup("async_script_timeout_resumes_with_an_error") else {
        return;
    };
    // the command alone could take 2 relays x 3 s x 5 attempts; the script allows 1 s
    let s = start(&env, "async-script-timeout", 2, "3", 5, Some(1));
    for (_, r) in &s.relays {
        signal(r.pid(), "-STOP");
    }
    // more parked offers than workers (2): a blocking worker could not answer the OPTIONS
    // before an offer ends; parked ones leave the workers free
    for i in 0..4 {
        s.sip.send("INVITE", &format!("p{i}"));
    }
    s.sip.send("OPTIONS", "o1");
    s.sip
        .sock
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let first = loop {
        let n = s.sip.sock.recv(&mut buf).expect("a reply");
        let r = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !r.starts_with("SIP/2.0 100 ") {
            break r;
        }
    };
    assert!(
        first.starts_with("SIP/2.0 200 Alive"),
        "first reply: {first}"
    );
    // and no offer had ended yet
    s.sip.uas.set_nonblocking(true).unwrap();
    assert!(
        s.sip.uas.recv(&mut buf).is_err(),
        "an offer ended before the OPTIONS"
    );
    s.sip.uas.set_nonblocking(false).unwrap();
    let mut resumed = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while resumed < 4 && Instant::now() < deadline {
        if let Ok(n) = s.sip.uas.recv(&mut buf) {
            let fwd = String::from_utf8_lossy(&buf[..n]).into_owned();
            if fwd.starts_with("INVITE") {
                assert_eq!(header(&fwd, "X-RC"), Some("-1"), "{fwd}");
                assert_eq!(
                    media_port(&fwd),
                    Some(40000),
                    "SDP must be untouched: {fwd}"
                );
                resumed += 1;
            }
        }
    }
    assert_eq!(resumed, 4, "every offer resumes after the script timeout");
    for (_, r) in &s.relays {
        signal(r.pid(), "-CONT");
    }
    let (_, log) = s.os.stop();
    assert!(log.contains("script's timeout passed"), "{log}");
}

// ---- every async function: success, relay error, timeout, script timeout, launch() ----------

/// Every async function, by the name the tests give it, and its call in the script.
fn async_calls(prompt: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "offer",
            r#"rtpproxy_offer("co", , , $avp(sock), $avp(ret))"#.into(),
        ),
        (
            "answer",
            r#"rtpproxy_answer("co", , , $avp(sock), $avp(ret))"#.into(),
        ),
        ("unforce", "rtpproxy_unforce(, $avp(sock))".into()),
        (
            "play",
            format!(r#"rtpproxy_stream2uac("{prompt}", 1, , $avp(sock))"#),
        ),
        (
            "playuas",
            format!(r#"rtpproxy_stream2uas("{prompt}", 1, , $avp(sock))"#),
        ),
        // a prompt the relay cannot open: it answers E60
        (
            "playbad",
            r#"rtpproxy_stream2uac("/nonexistent/prompt", 1, , $avp(sock))"#.into(),
        ),
        ("stop", "rtpproxy_stop_stream2uac(, $avp(sock))".into()),
        ("stopuas", "rtpproxy_stop_stream2uas(, $avp(sock))".into()),
        ("rec", "rtpproxy_start_recording(, $avp(sock))".into()),
        ("stoprec", "rtpproxy_stop_recording(, $avp(sock))".into()),
        (
            "stats",
            "rtpproxy_stats($avp(up), $avp(down), $avp(sent), $avp(fail), , $avp(sock))".into(),
        ),
    ]
}

/// The async functions the matrix tests run (all but the extra error case).
const FUNCTIONS: [&str; 10] = [
    "offer", "answer", "play", "playuas", "stop", "stopuas", "rec", "stoprec", "stats", "unforce",
];

/// A request with `X-Fn: <name>` runs that function: `async(..., resumed)`, with
/// `X-Mode: timeout` `async(..., resumed, 1)`, with `X-Mode: launch` `launch(..., report,
/// "<name>")` (then the request goes on at once). The resume route records `$rc` and the
/// variables in headers and relays the request to the test's UAS socket; the report route of
/// a launched job logs them.
fn matrix_routes(uas: u16, prompt: &str) -> String {
    let mut dispatch = String::new();
    for (name, call) in async_calls(prompt) {
        dispatch.push_str(&format!(
            r#"    if ($hdr(X-Fn) == "{name}") {{
        if ($hdr(X-Mode) == "launch") {{
            launch({call}, report, "{name}");
            append_hf("X-RC: launched\r\n");
            t_relay();
            exit;
        }}
        if ($hdr(X-Mode) == "timeout") {{
            async({call}, resumed, 1);
        }}
        async({call}, resumed);
    }}
"#
        ));
    }
    format!(
        r#"route {{
    $du = "sip:127.0.0.1:{uas}";
    if (is_method("OPTIONS")) {{
        sl_send_reply(200, "Alive");
        exit;
    }}
{dispatch}    exit;
}}
route[resumed] {{
    append_hf("X-RC: $rc\r\n");
    append_hf("X-Sock: $avp(sock)\r\n");
    append_hf("X-Ret: $avp(ret)\r\n");
    append_hf("X-Stats: $avp(up) $avp(down) $avp(sent) $avp(fail)\r\n");
    t_relay();
}}
route[report] {{
    xlog("REPORT $param(1) rc=$rc stats=$avp(up) $avp(down) $avp(sent) $avp(fail)\n");
}}
"#
    )
}

/// Makes a 1 s prompt with `makeann` (next to `RTPPROXY_BIN`) in `dir`.
fn make_prompt(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let makeann = e2e::makeann()?;
    let wav = dir.join("tone.wav");
    let samples: Vec<i16> = (0..8000u32)
        .map(|i| (8000.0 * (f64::from(i) * 440.0 * std::f64::consts::TAU / 8000.0).sin()) as i16)
        .collect();
    let data_len = (samples.len() * 2) as u32;
    let mut w = Vec::new();
    for chunk in [
        &b"RIFF"[..],
        &(36 + data_len).to_le_bytes(),
        b"WAVEfmt ",
        &16u32.to_le_bytes(),
        &1u16.to_le_bytes(),
        &1u16.to_le_bytes(),
        &8000u32.to_le_bytes(),
        &16000u32.to_le_bytes(),
        &2u16.to_le_bytes(),
        &16u16.to_le_bytes(),
        b"data",
        &data_len.to_le_bytes(),
    ] {
        w.extend_from_slice(chunk);
    }
    for s in samples {
        w.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(&wav, w).ok()?;
    let prompt = dir.join("prompt");
    let ok = Command::new(makeann)
        .arg(&wav)
        .arg(&prompt)
        .status()
        .is_ok_and(|s| s.success());
    (ok && dir.join("prompt.0").exists()).then_some(prompt)
}

/// The matrix setup: relays with a recording directory, the prompt, the matrix script.
struct Matrix {
    s: Setup,
    rec: std::path::PathBuf,
    seq: std::cell::Cell<u32>,
}

impl Matrix {
    fn start(
        env: &Env,
        name: &str,
        n_relays: usize,
        modparams: &dyn Fn(&[u16]) -> String,
    ) -> Option<Self> {
        let work = scratch(&format!("{name}-work"));
        let rec = work.join("rec");
        std::fs::create_dir_all(&rec).unwrap();
        let prompt = make_prompt(&work)?;
        let args = ["-r".to_owned(), rec.display().to_string()];
        let prompt = prompt.display().to_string();
        let s = start_with(env, name, n_relays, &args, &|p, _| {
            (modparams(&p.relays), matrix_routes(p.sip_uas, &prompt))
        });
        Some(Self {
            s,
            rec,
            seq: std::cell::Cell::new(0),
        })
    }

    /// Runs function `f` on call `call` (`mode`: "", "timeout" or "launch") and returns the
    /// forwarded request.
    fn run(&self, f: &str, mode: &str, call: &str, wait: Duration) -> Option<String> {
        let n = self.seq.get();
        self.seq.set(n + 1);
        let extra = format!("X-Fn: {f}\r\nX-Mode: {mode}\r\nX-Seq: {n}\r\n");
        // an offer is the caller's (no To-tag), an answer the callee's (tags the other way
        // round); everything else runs in the caller's direction of the dialog
        let (ftag, ttag) = match f {
            "offer" => ("ft", None),
            "answer" => ("tt", Some("ft")),
            _ => ("ft", Some("tt")),
        };
        self.s.sip.request_with(
            "INFO",
            call,
            ftag,
            ttag,
            f == "offer" || f == "answer",
            &extra,
            wait,
        )
    }

    /// [`Matrix::run`] and the `$rc` it resumed with.
    fn rc(&self, f: &str, call: &str) -> String {
        let fwd = self
            .run(f, "", call, Duration::from_secs(15))
            .unwrap_or_else(|| panic!("{f} on {call} never resumed"));
        header(&fwd, "X-RC").unwrap_or("").to_owned()
    }

    fn relay_url(&self, k: usize) -> String {
        format!("udp:127.0.0.1:{}", self.s.relays[k].0)
    }

    /// The recordings of call `call` in the relays' recording directory.
    fn recordings(&self, call: &str) -> usize {
        std::fs::read_dir(&self.rec)
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .starts_with(&format!("{call}="))
                    })
                    .count()
            })
            .unwrap_or(0)
    }
}

/// Sends `n` RTP-sized datagrams to the relay's media port `port` (its media address is
/// [`e2e::RELAY_IP`]).
fn send_rtp(port: u16, n: usize) {
    let s = UdpSocket::bind("127.0.0.1:40000")
        .or_else(|_| UdpSocket::bind("127.0.0.1:0"))
        .unwrap();
    let mut pkt = vec![0x80u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    pkt.extend_from_slice(&[0xffu8; 160]);
    for i in 0..n {
        pkt[3] = i as u8;
        let _ = s.send_to(&pkt, (e2e::RELAY_IP, port));
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn matrix_modparams(relays: &[u16], timeout: &str, retr: u32, disable_tout: u32) -> String {
    modparams(relays, timeout, retr).replace(
        r#""rtpproxy_disable_tout", 60"#,
        &format!(r#""rtpproxy_disable_tout", {disable_tout}"#),
    )
}

#[test]
fn every_async_function_succeeds_reports_relay_errors_and_runs_under_launch() {
    const T: &str = "every_async_function_succeeds_reports_relay_errors_and_runs_under_launch";
    let Some(env) = setup(T) else { return };
    let Some(m) = Matrix::start(&env, "async-matrix", 1, &|r| {
        matrix_modparams(r, "1", 2, 60)
    }) else {
        e2e::skip(T, "needs makeann beside RTPPROXY_BIN");
        return;
    };
    let relay = m.s.relays[0].0;
    let url = m.relay_url(0);
    let wait = Duration::from_secs(15);

    // success: each function on a call the relay holds, with its real effect
    let fwd = m.run("offer", "", "m1", wait).expect("offer resumed");
    assert_eq!(header(&fwd, "X-RC"), Some("1"), "{fwd}");
    assert_eq!(header(&fwd, "X-Sock"), Some(url.as_str()), "{fwd}");
    let offered = media_port(&fwd).expect("SDP in the forwarded request");
    assert_ne!(offered, 40000, "SDP not rewritten: {fwd}");
    assert!(
        header(&fwd, "X-Ret").is_some_and(|r| r.ends_with(&format!(":{offered}"))),
        "{fwd}"
    );
    assert_eq!(sessions(relay), 1);
    let fwd = m.run("answer", "", "m1", wait).expect("answer resumed");
    assert_eq!(header(&fwd, "X-RC"), Some("1"), "{fwd}");
    let answered = media_port(&fwd).expect("SDP in the forwarded request");
    assert_ne!(answered, 40000, "SDP not rewritten: {fwd}");

    for f in ["play", "playuas", "stop", "stopuas"] {
        let fwd = m
            .run(f, "", "m1", wait)
            .unwrap_or_else(|| panic!("{f} resumed"));
        assert_eq!(header(&fwd, "X-RC"), Some("1"), "{f}: {fwd}");
        assert_eq!(header(&fwd, "X-Sock"), Some(url.as_str()), "{f}: {fwd}");
    }
    // the relay opens the recording at once
    assert_eq!(m.recordings("m1"), 0);
    assert_eq!(m.rc("rec", "m1"), "1");
    assert!(
        e2e::wait_for(wait, || m.recordings("m1") > 0),
        "no recording of m1"
    );
    // stopping: 1 while recording, then the relay says there is nothing to stop (E50)
    assert_eq!(m.rc("stoprec", "m1"), "1");
    assert_eq!(m.rc("stoprec", "m1"), "-1");
    // statistics: the variables hold the relay's counters, which grow with the packets sent
    let fwd = m.run("stats", "", "m1", wait).expect("stats resumed");
    assert_eq!(header(&fwd, "X-RC"), Some("1"), "{fwd}");
    let counters = |fwd: &str| -> Vec<u64> {
        header(fwd, "X-Stats")
            .unwrap_or("")
            .split_whitespace()
            .map(|v| v.parse().unwrap_or_else(|_| panic!("not a counter: {fwd}")))
            .collect()
    };
    let before = counters(&fwd);
    assert_eq!(before.len(), 4, "{fwd}");
    send_rtp(offered, 10);
    if answered != offered {
        send_rtp(answered, 10);
    }
    let after = e2e::poll_until(wait, || {
        let fwd = m.run("stats", "", "m1", wait)?;
        let c = counters(&fwd);
        (c[0] + c[1] >= before[0] + before[1] + 10).then_some(c)
    });
    assert!(after.is_some(), "the counters did not grow: {before:?}");

    // relay errors: a call the relay does not know (E50), a prompt it cannot open (E60)
    for f in [
        "answer", "play", "playuas", "stop", "stopuas", "rec", "stoprec",
    ] {
        let rc = m.rc(f, "nosuch");
        assert!(rc.starts_with('-'), "{f} on an unknown call: $rc {rc}");
    }
    assert!(m.rc("playbad", "m1").starts_with('-'));
    // rtpproxy_stats keeps the C codes: -N for E<N>
    assert_eq!(m.rc("stats", "nosuch"), "-50");
    // the unforce ignores the reply, as the blocking one
    assert_eq!(m.rc("unforce", "nosuch"), "1");

    // unforce: the session is gone
    assert_eq!(m.rc("unforce", "m1"), "1");
    assert!(
        e2e::wait_for(wait, || sessions(relay) == 0),
        "m1 not deleted"
    );

    // launch(): the request goes on at once, the job's report route sees its $rc, the
    // relay does what the function asked
    let launch = |f: &str, call: &str| {
        let fwd = m
            .run(f, "launch", call, wait)
            .unwrap_or_else(|| panic!("{f} launched"));
        assert_eq!(header(&fwd, "X-RC"), Some("launched"), "{fwd}");
    };
    let reported = |f: &str, rc: &str| {
        let line = format!("REPORT {f} rc={rc}");
        assert!(
            e2e::wait_for(wait, || m.s.os.log_text().contains(&line)),
            "no '{line}' in the log:\n{}",
            m.s.os.log_text()
        );
    };
    launch("offer", "m2");
    reported("offer", "1");
    assert!(
        e2e::wait_for(wait, || sessions(relay) == 1),
        "launched offer: no session"
    );
    launch("answer", "m2");
    reported("answer", "1");
    for f in ["play", "playuas", "stop", "stopuas"] {
        launch(f, "m2");
        reported(f, "1");
    }
    launch("rec", "m2");
    reported("rec", "1");
    assert!(
        e2e::wait_for(wait, || m.recordings("m2") > 0),
        "launched recording: no file"
    );
    launch("stoprec", "m2");
    reported("stoprec", "1");
    // the launched stop did stop it: nothing left to stop
    assert_eq!(m.rc("stoprec", "m2"), "-1");
    // (the report route sees the counters when the job was parked; a reply that came
    // while the function ran makes the launch synchronous, and OpenSIPS then runs the
    // report route with AVPs of its own)
    launch("stats", "m2");
    reported("stats", "1");
    launch("unforce", "m2");
    reported("unforce", "1");
    assert!(
        e2e::wait_for(wait, || sessions(relay) == 0),
        "launched unforce: session left"
    );

    let (_, log) = m.s.os.stop();
    assert!(
        !log.contains("CRITICAL") && !log.contains("internal error"),
        "{log}"
    );
}

/// `(url, disabled)` of every node, from MI `rtpproxy_show`.
fn shown(os: &OpenSips) -> Vec<(String, i64)> {
    let Ok(text) = os.mi("rtpproxy_show", &[]) else {
        return Vec::new();
    };
    e2e::json(&text)
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["Nodes"].as_array().cloned().unwrap_or_default())
        .map(|n| {
            (
                n["url"].as_str().unwrap_or("").to_owned(),
                n["disabled"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

#[test]
fn every_async_function_ends_on_a_hung_relay_and_the_call_goes_on_on_the_other() {
    const T: &str = "every_async_function_ends_on_a_hung_relay_and_the_call_goes_on_on_the_other";
    let Some(env) = setup(T) else { return };
    // 0.3 s x 2 attempts per node; a node taken out is probed again after 1 s
    let Some(m) = Matrix::start(&env, "async-matrix-hung", 2, &|r| {
        matrix_modparams(r, "0.3", 2, 1)
    }) else {
        e2e::skip(T, "needs makeann beside RTPPROXY_BIN");
        return;
    };
    let wait = Duration::from_secs(15);
    let all_up = |m: &Matrix| {
        e2e::wait_for(wait, || {
            let s = shown(&m.s.os);
            s.len() == 2 && s.iter().all(|(_, d)| *d == 0)
        })
    };
    for (k, f) in FUNCTIONS.iter().enumerate() {
        assert!(
            all_up(&m),
            "{f}: the relays are not both enabled: {:?}",
            shown(&m.s.os)
        );
        // a call on one relay (the hash's choice), which then hangs
        let call = format!("h{k}");
        let fwd = m.run("offer", "", &call, wait).expect("offer resumed");
        assert_eq!(header(&fwd, "X-RC"), Some("1"), "{fwd}");
        let on = header(&fwd, "X-Sock").unwrap_or("").to_owned();
        let hung = (0..2)
            .find(|i| m.relay_url(*i) == on)
            .expect("a relay of ours");
        let other = m.relay_url(1 - hung);
        // the callee's answer gives the relay its side (prompts to the callee need it)
        if *f != "answer" {
            assert_eq!(m.rc("answer", &call), "1");
        }
        if *f == "stoprec" {
            assert_eq!(m.rc("rec", &call), "1");
        }
        signal(m.s.relays[hung].1.pid(), "-STOP");
        let port = m.s.relays[hung].0;
        assert!(
            e2e::relay_command(("127.0.0.1", port), "V", Duration::from_millis(300)).is_none(),
            "{f}: relay {port} still answers after SIGSTOP"
        );
        // the function on the hung relay ends (bounded by the timeouts), the relay is out
        let fwd = m
            .run(f, "", &call, wait)
            .unwrap_or_else(|| panic!("{f} on the hung relay never resumed"));
        let rc = header(&fwd, "X-RC").unwrap_or("");
        match *f {
            // the offer of the call fails over to the other relay
            "offer" => {
                assert_eq!(rc, "1", "{fwd}");
                assert_eq!(header(&fwd, "X-Sock"), Some(other.as_str()), "{fwd}");
            }
            // the reply does not matter to the unforce
            "unforce" => assert_eq!(rc, "1", "{fwd}"),
            _ => assert!(rc.starts_with('-'), "{f} on a hung relay: $rc {rc}: {fwd}"),
        }
        assert!(
            e2e::wait_for(wait, || shown(&m.s.os)
                .iter()
                .any(|(u, d)| *u == on && *d != 0)),
            "{f}: the hung relay was not taken out: {:?}",
            shown(&m.s.os)
        );
        // a new call goes to the other relay at once, and the function works there
        let call2 = format!("g{k}");
        let fwd = m.run("offer", "", &call2, wait).expect("offer resumed");
        assert_eq!(header(&fwd, "X-RC"), Some("1"), "{fwd}");
        assert_eq!(header(&fwd, "X-Sock"), Some(other.as_str()), "{fwd}");
        if *f != "answer" && *f != "offer" {
            assert_eq!(m.rc("answer", &call2), "1");
        }
        if *f == "stoprec" {
            assert_eq!(m.rc("rec", &call2), "1");
        }
        if *f != "offer" {
            let fwd = m.run(f, "", &call2, wait).expect("resumed");
            assert_eq!(
                header(&fwd, "X-RC"),
                Some("1"),
                "{f} on the other relay: {fwd}"
            );
            assert_eq!(header(&fwd, "X-Sock"), Some(other.as_str()), "{fwd}");
        }
        signal(m.s.relays[hung].1.pid(), "-CONT");
    }
    let (_, log) = m.s.os.stop();
    assert!(log.contains("does not respond, disable it"), "{log}");
}

#[test]
fn every_async_function_resumes_at_the_script_timeout() {
    const T: &str = "every_async_function_resumes_at_the_script_timeout";
    let Some(env) = setup(T) else { return };
    // a command alone could take 3 s x 3 attempts; the script allows 1 s
    let Some(m) = Matrix::start(&env, "async-matrix-timeout", 1, &|r| {
        matrix_modparams(r, "3", 3, 60)
    }) else {
        e2e::skip(T, "needs makeann beside RTPPROXY_BIN");
        return;
    };
    signal(m.s.relays[0].1.pid(), "-STOP");
    for f in FUNCTIONS {
        let call = format!("t-{f}");
        let fwd = m
            .run(f, "timeout", &call, Duration::from_secs(15))
            .unwrap_or_else(|| panic!("{f} never resumed"));
        assert_eq!(header(&fwd, "X-RC"), Some("-1"), "{f}: {fwd}");
        if f == "offer" || f == "answer" {
            assert_eq!(
                media_port(&fwd),
                Some(40000),
                "SDP must be untouched: {fwd}"
            );
        }
    }
    // the relay was never taken out: every command was abandoned before its attempt was lost
    assert!(
        shown(&m.s.os).iter().all(|(_, d)| *d == 0),
        "{:?}",
        shown(&m.s.os)
    );
    signal(m.s.relays[0].1.pid(), "-CONT");
    let (_, log) = m.s.os.stop();
    assert_eq!(
        log.matches("script's timeout passed").count(),
        FUNCTIONS.len(),
        "{log}"
    );
}
