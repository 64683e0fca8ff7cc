//! Async script functions through a real OpenSIPS (`OPENSIPS_BIN`), real rtpproxy daemons
//! (`RTPPROXY_BIN`) and SIP requests sent from the test:
//! - `async(rtpproxy_offer/answer/unforce(...), resume)`: the resume route sees `$rc`, the
//!   forwarded request carries the rewritten SDP, `sock_var`/`ret_var` are set, the relay
//!   holds the session and forgets it after the unforce;
//! - a relay error (`$rc` negative for an answer to an unknown call, as the blocking function);
//! - one of two relays hung (SIGSTOP): every offer still succeeds (failover), the unforce ends;
//! - both relays hung and a script timeout shorter than the command: the resume route runs
//!   with a negative `$rc`;
//! - `launch(rtpproxy_unforce())` deletes the session.

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
        let branch = format!("z9hG4bK{}{}", call, method);
        let msg = format!(
            "{method} sip:uas@127.0.0.1:{uas} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:{me};branch={branch}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:uac@127.0.0.1>;tag={ftag}\r\n\
             To: <sip:uas@127.0.0.1>{to_tag}\r\n\
             Call-ID: {call}\r\n\
             CSeq: 1 {method}\r\n\
             Contact: <sip:uac@127.0.0.1:{me}>\r\n\
             {ctype}Content-Length: {len}\r\n\r\n{body}",
            uas = self.uas_port(),
            len = body.len()
        );
        self.sock
            .send_to(msg.as_bytes(), ("127.0.0.1", self.proxy))
            .unwrap();
        let deadline = Instant::now() + wait;
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            if let Ok(n) = self.uas.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if text.starts_with(method) && text.contains(&format!("Call-ID: {call}")) {
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
    let dir = scratch(name);
    let relays: Vec<(u16, Relay)> = (0..n_relays)
        .map(|_| {
            let p = port();
            (
                p,
                Relay::start_daemon(&[format!("udp:127.0.0.1:{p}")], &[]).expect("rtpproxy"),
            )
        })
        .collect();
    let mut sip = Sip::new();
    let ports: Vec<u16> = relays.iter().map(|(p, _)| *p).collect();
    let c = cfg(
        env,
        Impl::Ours,
        &dir,
        &modparams(&ports, timeout, retr),
        EXTRA,
        &routes(sip.uas_port(), script_timeout),
    );
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
    while Instant::now() < deadline && !os.log_text().contains("is active") {
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
