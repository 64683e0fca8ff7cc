//! The control plane under faults, through a real OpenSIPS 3.6.8, real rtpproxy 3.2 daemons
//! (`RTPPROXY_BIN`) and sipp:
//! - a relay hung since before start-up: only the prober probes it (no SIP worker does), no
//!   call fails, and it takes calls again once it resumes;
//! - two MI clients reloading the node list (db_sqlite) every 200 ms while calls flow: no
//!   call fails and no session is left on the relays;
//! - a node disabled over MI while calls start and enabled before they end, with a call map
//!   of 64 entries under 200 concurrent calls, for plain offer/answer/unforce and for
//!   `rtpproxy_engage`: every delete reaches the relay that holds the call, none is left;
//! - with the test-only `fault-injection` feature: panics in prober rounds and a failing
//!   notification listener do not take OpenSIPS down.

mod e2e;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::{cfg, json, port, scratch, ControlTap, Dir, Env, Impl, OpenSips, Relay, Sipp};

const PLAIN_MODULES: &str = r#"loadmodule "sl.so"
loadmodule "sipmsgops.so""#;

const ENGAGE_MODULES: &str = r#"loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "dialog.so"
loadmodule "sipmsgops.so""#;

fn plain_routes(uas: u16) -> String {
    format!(
        r#"route {{
    if (is_method("INVITE") && has_body("application/sdp")) {{
        if (!rtpproxy_offer("co")) {{ sl_send_reply(500, "rtpproxy_offer failed"); exit; }}
    }}
    if (is_method("BYE|CANCEL")) rtpproxy_unforce();
    $du = "sip:127.0.0.1:{uas}";
    t_on_reply("r");
    t_relay();
}}
onreply_route[r] {{
    if (has_body("application/sdp")) rtpproxy_answer("co");
}}
"#
    )
}

fn engage_routes(uas: u16) -> String {
    format!(
        r#"route {{
    if (has_totag()) {{
        if (!loose_route()) match_dialog();
        $du = "sip:127.0.0.1:{uas}";
        t_relay();
        exit;
    }}
    if (is_method("INVITE")) {{
        record_route();
        if (!rtpproxy_engage("co")) {{ sl_send_reply(500, "engage failed"); exit; }}
    }}
    $du = "sip:127.0.0.1:{uas}";
    t_relay();
}}
"#
    )
}

/// The environment, a relay binary and sipp, or `None` after a SKIPPED line.
fn setup(name: &str) -> Option<Env> {
    let env = Env::get(name)?;
    if std::env::var_os("RTPPROXY_BIN").is_none_or(|v| v.is_empty()) {
        e2e::skip(
            name,
            "RTPPROXY_BIN is not set (the test signals the daemon)",
        );
        return None;
    }
    e2e::have_sipp(name).then_some(env)
}

fn relay(ctl: u16) -> Relay {
    Relay::start_daemon(&[format!("udp:127.0.0.1:{ctl}")], &[]).expect("rtpproxy")
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

fn sip_port(c: &e2e::Cfg) -> u16 {
    c.text
        .lines()
        .find_map(|l| l.strip_prefix("socket=udp:127.0.0.1:"))
        .unwrap()
        .parse()
        .unwrap()
}

fn uas(dir: &Path, port: u16) -> Sipp {
    Sipp::spawn(
        dir,
        &[
            "-sn",
            "uas",
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-nostdin",
        ]
        .map(String::from),
    )
    .expect("sipp uas")
}

/// Places `calls` calls at `rate`/s, each `hold_ms` long; returns (successful, failed).
fn calls(dir: &Path, sip: u16, calls: u32, rate: u32, hold_ms: u32) -> (u64, u64) {
    let stat = dir.join(format!("uac-{}.csv", port()));
    let out = e2e::sipp(
        dir,
        &[
            "-sn".into(),
            "uac".into(),
            format!("127.0.0.1:{sip}"),
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port().to_string(),
            "-m".into(),
            calls.to_string(),
            "-r".into(),
            rate.to_string(),
            "-l".into(),
            "400".into(),
            "-d".into(),
            hold_ms.to_string(),
            "-timeout".into(),
            "120s".into(),
            "-nostdin".into(),
            "-trace_stat".into(),
            "-stf".into(),
            stat.to_str().unwrap().into(),
        ],
    )
    .expect("sipp uac");
    let text = std::fs::read_to_string(&stat).unwrap_or_default();
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap_or("").split(';').collect();
    let last: Vec<&str> = lines.last().unwrap_or("").split(';').collect();
    let field = |name: &str| -> u64 {
        head.iter()
            .position(|h| *h == name)
            .and_then(|i| last.get(i))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let (ok, failed) = (field("SuccessfulCall(C)"), field("FailedCall(C)"));
    assert!(
        ok + failed == u64::from(calls),
        "sipp did not finish its calls ({ok} ok, {failed} failed):\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    (ok, failed)
}

/// Waits until `f` holds (polling), at most `secs` seconds.
fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

/// `(url, disabled)` of every node, from MI `rtpproxy_show`.
fn shown(os: &OpenSips) -> Vec<(String, i64)> {
    let Ok(text) = os.mi("rtpproxy_show", &[]) else {
        return Vec::new();
    };
    json(&text)
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

/// The pid in a UDP cookie (`<pid>_<rand>_<seq>`).
fn cookie_pid(datagram: &[u8]) -> Option<u32> {
    let text = String::from_utf8_lossy(datagram);
    text.split('_').next()?.parse().ok()
}

/// The pid OpenSIPS logged for the prober ("RTPProxy prober started").
fn prober_pid(log: &str) -> Option<u32> {
    let line = log
        .lines()
        .find(|l| l.contains("RTPProxy prober started"))?;
    let start = line.find('[')? + 1;
    let end = start + line[start..].find(']')?;
    line[start..end].parse().ok()
}

#[test]
fn a_relay_hung_since_start_up_is_probed_by_the_prober_only() {
    let name = "a_relay_hung_since_start_up_is_probed_by_the_prober_only";
    let Some(env) = setup(name) else { return };
    let dir = scratch("hung-at-boot");
    let (ctl1, ctl2) = (port(), port());
    let (_r1, r2) = (relay(ctl1), relay(ctl2));
    let tap = ControlTap::start(SocketAddr::from(([127, 0, 0, 1], ctl2)));
    // relay 2 is hung before OpenSIPS starts
    signal(r2.pid(), "-STOP");
    let hung = format!("udp:127.0.0.1:{}", tap.port);
    let params = format!(
        r#"modparam("rtpproxy", "rtpproxy_sock", "udp:127.0.0.1:{ctl1} {hung}")
modparam("rtpproxy", "rtpproxy_timeout", "1")
modparam("rtpproxy", "rtpproxy_retr", 5)
modparam("rtpproxy", "rtpproxy_disable_tout", 2)"#
    );
    let uas_port = port();
    let c = cfg(
        &env,
        Impl::Ours,
        &dir,
        &params,
        PLAIN_MODULES,
        &plain_routes(uas_port),
    );
    let os = OpenSips::start(&env, &c).unwrap();
    let _uas = uas(&dir, uas_port);
    let (_, failed) = calls(&dir, sip_port(&c), 40, 10, 0);
    assert_eq!(failed, 0, "calls failed while relay 2 was hung");

    // relay 2 resumes: the prober brings it back and it takes offers again
    signal(r2.pid(), "-CONT");
    assert!(
        eventually(30, || shown(&os).iter().any(|(u, d)| *u == hung && *d == 0)),
        "relay 2 not back: {:?}",
        shown(&os)
    );
    let mark = tap.len();
    let (_, failed) = calls(&dir, sip_port(&c), 40, 10, 0);
    assert_eq!(failed, 0, "calls failed after relay 2 resumed");
    let offers = tap
        .commands(mark)
        .iter()
        .filter(|(cmd, reply)| cmd.starts_with('U') && !reply.starts_with('E'))
        .count();
    assert!(offers > 0, "relay 2 took no offer after it resumed");

    // only the prober ever probed relay 2
    let log = os.log_text();
    let prober = prober_pid(&log).expect("prober pid in the log");
    let probers: BTreeSet<u32> = tap
        .events(0)
        .iter()
        .filter(|(d, data)| {
            *d == Dir::ToRelay && {
                let t = String::from_utf8_lossy(data);
                t.split_once(' ')
                    .is_some_and(|(_, c)| c.trim() == "V" || c.starts_with("VF "))
            }
        })
        .filter_map(|(_, data)| cookie_pid(data))
        .collect();
    assert!(!probers.is_empty(), "relay 2 was never probed");
    assert_eq!(
        probers,
        BTreeSet::from([prober]),
        "processes other than the prober ({prober}) probed relay 2"
    );
    let (status, log) = os.stop();
    assert!(status.success(), "{log}");
}

fn sqlite(db: &Path, sql: &str) {
    let out = Command::new("python3")
        .arg("-c")
        .arg("import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()")
        .arg(db)
        .arg(sql)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One MI command over `mi_datagram` (JSON-RPC); the reply text.
fn mi_datagram(to: SocketAddr, method: &str) -> Option<String> {
    let sock = UdpSocket::bind("127.0.0.1:0").ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let req = format!(r#"{{"jsonrpc":"2.0","method":"{method}","id":1}}"#);
    sock.send_to(req.as_bytes(), to).ok()?;
    let mut buf = [0u8; 65536];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn reload_storm_while_calls_flow() {
    let name = "reload_storm_while_calls_flow";
    let Some(env) = setup(name) else { return };
    for m in ["db_sqlite.so", "mi_datagram.so"] {
        if !env.mpath.join(m).exists() {
            e2e::skip(name, &format!("no {m}"));
            return;
        }
    }
    let dir = scratch("reload-storm");
    let (ctl1, ctl2) = (port(), port());
    let (_r1, _r2) = (relay(ctl1), relay(ctl2));
    let db = dir.join("nodes.db");
    sqlite(
        &db,
        &format!(
            "CREATE TABLE rtpproxy_sockets (id INTEGER PRIMARY KEY, rtpproxy_sock TEXT, set_id INTEGER);
             INSERT INTO rtpproxy_sockets (rtpproxy_sock, set_id) VALUES ('udp:127.0.0.1:{ctl1} udp:127.0.0.1:{ctl2}', 0);"
        ),
    );
    let mi_port = port();
    let params = format!(
        r#"modparam("rtpproxy", "db_url", "sqlite://{}")
modparam("mi_datagram", "socket_name", "udp:127.0.0.1:{mi_port}")
modparam("mi_datagram", "children_count", 2)"#,
        db.display()
    );
    let uas_port = port();
    let modules =
        format!("{PLAIN_MODULES}\nloadmodule \"db_sqlite.so\"\nloadmodule \"mi_datagram.so\"");
    let c = cfg(
        &env,
        Impl::Ours,
        &dir,
        &params,
        &modules,
        &plain_routes(uas_port),
    );
    let os = OpenSips::start(&env, &c).unwrap();
    let _uas = uas(&dir, uas_port);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mi = SocketAddr::from(([127, 0, 0, 1], mi_port));
    // two MI processes serve the datagrams: reloads run at the same time
    let storm: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut ok = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if mi_datagram(mi, &e2e::mi_name("rtpproxy_reload"))
                        .is_some_and(|r| r.contains("OK"))
                    {
                        ok += 1;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                ok
            })
        })
        .collect();
    let (_, failed) = calls(&dir, sip_port(&c), 200, 20, 500);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reloads: u32 = storm.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(reloads >= 10, "only {reloads} reloads went through");
    assert_eq!(failed, 0, "calls failed during the reload storm");
    for ctl in [ctl1, ctl2] {
        assert!(
            eventually(10, || e2e::relay_active_sessions(("127.0.0.1", ctl))
                == Some(0)),
            "sessions left on relay {ctl}: {:?}",
            e2e::relay_active_sessions(("127.0.0.1", ctl))
        );
    }
    let (status, log) = os.stop();
    assert!(status.success(), "{log}");
}

/// The Call-ID of a control command (`U…`/`L…`/`D` followed by the Call-ID).
fn call_id(cmd: &str) -> Option<&str> {
    cmd.split_whitespace().nth(1)
}

/// Calls through two relays behind taps; relay 1 disabled over MI while calls start and
/// enabled before they end; a 64-entry call map. Every call's `D` must reach the relay that
/// answered its `U`, and no session may be left.
fn failover_and_recovery(name: &str, engage: bool) {
    let Some(env) = setup(name) else { return };
    let dir = scratch(name);
    let (ctl1, ctl2) = (port(), port());
    let (_r1, _r2) = (relay(ctl1), relay(ctl2));
    let taps = [
        ControlTap::start(SocketAddr::from(([127, 0, 0, 1], ctl1))),
        ControlTap::start(SocketAddr::from(([127, 0, 0, 1], ctl2))),
    ];
    let url1 = format!("udp:127.0.0.1:{}", taps[0].port);
    let params = format!(
        r#"modparam("rtpproxy", "rtpproxy_sock", "{url1} udp:127.0.0.1:{}")
modparam("rtpproxy", "call_map_size", 64)
modparam("rtpproxy", "rtpproxy_disable_tout", 600)"#,
        taps[1].port
    );
    let uas_port = port();
    let (modules, routes) = if engage {
        (ENGAGE_MODULES, engage_routes(uas_port))
    } else {
        (PLAIN_MODULES, plain_routes(uas_port))
    };
    let c = cfg(&env, Impl::Ours, &dir, &params, modules, &routes);
    let os = OpenSips::start(&env, &c).unwrap();
    assert!(eventually(10, || shown(&os).iter().all(|(_, d)| *d == 0)));
    let _uas = uas(&dir, uas_port);
    let sip = sip_port(&c);
    // 200 calls at 40/s, each held 8 s: up to 200 at once
    let run = std::thread::spawn({
        let dir = dir.clone();
        move || calls(&dir, sip, 200, 40, 8000)
    });
    std::thread::sleep(Duration::from_millis(1500));
    os.mi("rtpproxy_enable", &[&url1, "0"]).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    os.mi("rtpproxy_enable", &[&url1, "1"]).unwrap();
    let (_, failed) = run.join().unwrap();
    assert_eq!(failed, 0, "calls failed");
    for ctl in [ctl1, ctl2] {
        assert!(
            eventually(10, || e2e::relay_active_sessions(("127.0.0.1", ctl))
                == Some(0)),
            "sessions left on relay {ctl}: {:?}",
            e2e::relay_active_sessions(("127.0.0.1", ctl))
        );
    }
    // which relay holds each call (a U it answered without error), and which relays got a
    // D that found the call
    let mut holder: BTreeMap<String, usize> = BTreeMap::new();
    let mut deleted: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    for (k, tap) in taps.iter().enumerate() {
        for (cmd, reply) in tap.commands(0) {
            let Some(id) = call_id(&cmd).map(str::to_owned) else {
                continue;
            };
            if cmd.starts_with('U') && !reply.starts_with('E') {
                holder.insert(id, k);
            } else if cmd.starts_with('D') && !reply.starts_with('E') {
                deleted.entry(id).or_default().insert(k);
            }
        }
    }
    assert_eq!(holder.len(), 200, "every call got a session");
    let on_both: Vec<usize> = (0..2)
        .map(|k| holder.values().filter(|v| **v == k).count())
        .collect();
    assert!(
        on_both.iter().all(|n| *n > 0),
        "calls per relay {on_both:?}"
    );
    for (id, k) in &holder {
        assert!(
            deleted.get(id).is_some_and(|d| d.contains(k)),
            "the D of call {id} did not reach relay {k} (deleted on {:?})",
            deleted.get(id)
        );
    }
    let (status, log) = os.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn failover_and_recovery_plain_calls_small_call_map() {
    failover_and_recovery("failover_recovery_plain", false);
}

#[test]
fn failover_and_recovery_engaged_calls_small_call_map() {
    failover_and_recovery("failover_recovery_engaged", true);
}

/// Built only with `--features fault-injection` (tests/run.sh runs it in a step of its own).
#[cfg(feature = "fault-injection")]
#[test]
fn background_processes_survive_injected_faults() {
    let name = "background_processes_survive_injected_faults";
    let Some(env) = setup(name) else { return };
    let dir = scratch("faults");
    let ctl = port();
    let _r = relay(ctl);
    let notify = dir.join("notify.sock");
    let params = format!(
        r#"modparam("rtpproxy", "rtpproxy_sock", "udp:127.0.0.1:{ctl}")
modparam("rtpproxy", "rtpp_notify_socket", "unix:{}")"#,
        notify.display()
    );
    // two prober rounds panic, the listener fails twice
    std::env::set_var("RTPPROXY_FAULT_PROBER_PANIC", "2");
    std::env::set_var("RTPPROXY_FAULT_LISTENER_ERROR", "2");
    let uas_port = port();
    let c = cfg(
        &env,
        Impl::Ours,
        &dir,
        &params,
        ENGAGE_MODULES,
        &plain_routes(uas_port),
    );
    let os = OpenSips::start(&env, &c);
    std::env::remove_var("RTPPROXY_FAULT_PROBER_PANIC");
    std::env::remove_var("RTPPROXY_FAULT_LISTENER_ERROR");
    let os = os.unwrap();
    // the prober goes on after its panics and probes the node
    assert!(
        eventually(30, || os.log_text().contains("is active (capabilities")),
        "the prober never probed after its injected panics:\n{}",
        os.log_text()
    );
    // the listener is restarted after its failures
    assert!(
        eventually(30, || os
            .log_text()
            .contains("listening for RTPProxy notifications")),
        "the notification listener never came up:\n{}",
        os.log_text()
    );
    let log = os.log_text();
    assert!(
        log.contains("injected prober fault"),
        "no prober fault seen"
    );
    assert!(
        log.contains("injected listener socket error"),
        "no listener fault seen"
    );
    // and OpenSIPS serves calls
    let _uas = uas(&dir, uas_port);
    let (_, failed) = calls(&dir, sip_port(&c), 5, 5, 0);
    assert_eq!(failed, 0);
    assert!(os.mi("rtpproxy_show", &[]).is_ok());
    let (status, log) = os.stop();
    assert!(status.success(), "{log}");
}
