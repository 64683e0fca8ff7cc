//! Statistics, the detailed MI view, ping and drain (issue 12), end to end: a real OpenSIPS
//! 3.6.8 with our module, the httpd and prometheus modules, two real rtpproxy relays in one
//! set, sipp calls through `rtpproxy_offer` / `rtpproxy_answer` / `rtpproxy_unforce`.
//!
//! Needs `OPENSIPS_BIN` (with httpd.so and prometheus.so among its modules), `RTPPROXY_BIN`,
//! sipp, opensips-cli and curl; each test prints a SKIPPED line when something is missing.

mod e2e;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::{cfg, port, scratch, Env, Impl, OpenSips, Relay, Sipp};

/// The prometheus configuration doc/statistics.md documents.
const MODULES: &str = r#"loadmodule "sl.so"
loadmodule "sipmsgops.so"
loadmodule "httpd.so"
loadmodule "prometheus.so"
modparam("prometheus", "statistics", "rtpproxy:")
modparam("prometheus", "group_mode", 1)
modparam("prometheus", "labels", "rtpproxy: /^(.*)__(.*)$/\\1:node=\"\\2\"/")"#;

fn routes(uas: u16) -> String {
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

fn rtpproxy_bin() -> Option<PathBuf> {
    std::env::var_os("RTPPROXY_BIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.exists())
}

fn have_curl() -> bool {
    Command::new("curl").arg("--version").output().is_ok()
}

/// The statistic `rtpproxy:<name>` of a `get_statistics` reply.
fn value(all: &serde_json::Value, name: &str) -> u64 {
    all.get(format!("rtpproxy:{name}"))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("no statistic rtpproxy:{name} in {all}"))
}

/// OpenSIPS with two relays in set 0, a sipp UAS behind it, and the prometheus page.
struct Rig {
    dir: PathBuf,
    os: OpenSips,
    relays: Vec<Relay>,
    controls: Vec<SocketAddr>,
    urls: Vec<String>,
    sip_port: u16,
    http_port: u16,
    _uas: Sipp,
}

fn rig(test: &str, extra_params: &str) -> Option<Rig> {
    let env = Env::get(test)?;
    if !e2e::have_sipp(test) {
        return None;
    }
    let Some(bin) = rtpproxy_bin() else {
        e2e::skip(test, "RTPPROXY_BIN is not set");
        return None;
    };
    if !env.mpath.join("prometheus.so").exists() || !have_curl() {
        e2e::skip(test, "no prometheus.so in the OpenSIPS modules, or no curl");
        return None;
    }
    let dir = scratch(test);
    let mut relays = Vec::new();
    let mut controls = Vec::new();
    for i in 0..2 {
        let control = SocketAddr::from(([127, 0, 0, 1], port()));
        let args = ["-l", "127.0.0.1", "-d", "INFO"].map(String::from);
        relays.push(Relay::start_logged(
            &bin,
            &dir,
            &format!("relay{i}"),
            control,
            &args,
        )?);
        controls.push(control);
    }
    let urls: Vec<String> = controls.iter().map(|c| format!("udp:{c}")).collect();
    let http_port = port();
    let uas = port();
    let params = format!(
        "modparam(\"rtpproxy\", \"rtpproxy_sock\", \"{}\")\n\
         modparam(\"httpd\", \"ip\", \"127.0.0.1\")\n\
         modparam(\"httpd\", \"port\", {http_port})\n{extra_params}",
        urls.join(" ")
    );
    let c = cfg(&env, Impl::Ours, &dir, &params, MODULES, &routes(uas));
    let sip_port = c
        .text
        .lines()
        .find_map(|l| l.strip_prefix("socket=udp:127.0.0.1:"))
        .and_then(|p| p.parse().ok())
        .unwrap();
    let os = OpenSips::start(&env, &c).unwrap();
    let uas = Sipp::spawn(
        &dir,
        &[
            "-sn",
            "uas",
            "-i",
            "127.0.0.1",
            "-p",
            &uas.to_string(),
            "-nostdin",
        ]
        .map(String::from),
    )
    .expect("sipp uas");
    let rig = Rig {
        dir,
        os,
        relays,
        controls,
        urls,
        sip_port,
        http_port,
        _uas: uas,
    };
    // both relays probed and enabled before the first call
    rig.wait_for("both relays enabled", |r| r.stat("enabled_nodes") == 2);
    Some(rig)
}

impl Rig {
    fn uac_args(&self, calls: u32, rate: u32, pause_ms: u32) -> Vec<String> {
        vec![
            "-sn".into(),
            "uac".into(),
            format!("127.0.0.1:{}", self.sip_port),
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port().to_string(),
            "-m".into(),
            calls.to_string(),
            "-r".into(),
            rate.to_string(),
            "-d".into(),
            pause_ms.to_string(),
            "-timeout".into(),
            "60s".into(),
            "-nostdin".into(),
        ]
    }

    /// Places `calls` calls and waits for them; asserts sipp saw every one succeed.
    fn calls(&self, calls: u32, rate: u32) {
        let out = e2e::sipp(&self.dir, &self.uac_args(calls, rate, 0)).expect("sipp uac");
        assert!(
            out.status.success(),
            "sipp uac reported failed calls:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n"),
            self.os
                .log_text()
                .lines()
                .filter(|l| l.contains("rtpproxy") || l.contains("RTPProxy"))
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    /// `get_statistics rtpproxy:` as a JSON object.
    fn statistics(&self) -> serde_json::Value {
        e2e::json(&self.os.mi("get_statistics", &["rtpproxy:"]).unwrap())
    }

    fn stat(&self, name: &str) -> u64 {
        value(&self.statistics(), name)
    }

    fn node_stat(&self, name: &str, relay: usize) -> u64 {
        self.stat(&format!("{name}__{}", self.urls[relay]))
    }

    fn wait_for(&self, what: &str, cond: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; statistics: {}",
                self.statistics()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn sessions(&self, relay: usize) -> u64 {
        e2e::relay_counter(self.controls[relay], "active sessions").expect("relay I command")
    }

    fn sessions_created(&self, relay: usize) -> u64 {
        e2e::relay_counter(self.controls[relay], "sessions created").expect("relay I command")
    }

    fn metrics(&self) -> String {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "10"])
            .arg(format!("http://127.0.0.1:{}/metrics", self.http_port))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The detailed view's node object for `relay`.
    fn detail(&self, relay: usize) -> serde_json::Value {
        let all = e2e::json(&self.os.mi("rtpproxy_show", &["1"]).unwrap());
        all.as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["Nodes"].as_array().cloned().unwrap_or_default())
            .find(|n| n["url"] == self.urls[relay].as_str())
            .unwrap_or_else(|| panic!("{} not in the detailed view: {all}", self.urls[relay]))
    }

    fn finish(self) {
        let Rig { os, relays, .. } = self;
        let (status, log) = os.stop();
        assert!(status.success(), "opensips did not stop cleanly:\n{log}");
        drop(relays);
    }
}

/// Acceptance 1: 40 calls over two relays; every counter adds up, and prometheus shows them
/// with a `node` label per relay.
#[test]
fn forty_calls_are_counted_and_exported() {
    let Some(r) = rig("stats_forty_calls", "") else {
        return;
    };
    r.calls(40, 20);
    r.wait_for("40 deletes", |r| r.stat("deletes") == 40);
    let s = r.statistics();
    println!("get_statistics rtpproxy: {s:#}");
    for (name, want) in [
        ("offers", 40),
        ("answers", 40),
        ("deletes", 40),
        ("offers_failed", 0),
        ("answers_failed", 0),
        ("deletes_failed", 0),
        ("timeouts", 0),
        ("failovers", 0),
        ("active_calls", 0),
        ("enabled_nodes", 2),
    ] {
        assert_eq!(r.stat(name), want, "{name}");
    }
    let per_node: Vec<u64> = (0..2).map(|i| r.node_stat("commands", i)).collect();
    assert!(
        per_node.iter().all(|&n| n > 0),
        "both relays used: {per_node:?}"
    );
    assert_eq!(per_node.iter().sum::<u64>(), r.stat("commands"));
    // every call is U + L + D on one relay
    assert_eq!(r.stat("commands"), 120);
    for i in 0..2 {
        assert_eq!(r.node_stat("enabled", i), 1);
        assert!(r.node_stat("rtt_us", i) > 0);
        assert_eq!(r.node_stat("active_calls", i), 0);
        assert_eq!(r.sessions(i), 0);
    }

    let metrics = r.metrics();
    let ours: Vec<&str> = metrics.lines().filter(|l| l.contains("rtpproxy")).collect();
    println!("/metrics:\n{}", ours.join("\n"));
    assert!(
        metrics.lines().any(|l| l == "opensips_rtpproxy_offers 40"),
        "{metrics}"
    );
    assert!(metrics.contains("# TYPE opensips_rtpproxy_offers counter"));
    assert!(metrics.contains("# TYPE opensips_rtpproxy_enabled_nodes gauge"));
    for (i, url) in r.urls.iter().enumerate() {
        let want = format!(
            "opensips_rtpproxy_commands{{node=\"{url}\"}} {}",
            per_node[i]
        );
        assert!(metrics.lines().any(|l| l == want), "{want} in\n{metrics}");
        let enabled = format!("opensips_rtpproxy_enabled{{node=\"{url}\"}} 1");
        assert!(metrics.lines().any(|l| l == enabled), "{enabled}");
    }

    // A BYE of a call the relays do not know: its node is unknown, so the D goes to every
    // relay in turn and each answers E50; one failed delete, no failover.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = sock.local_addr().unwrap();
    let bye = format!(
        "BYE sip:b@127.0.0.1:{sip} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch=z9hG4bK-stats-unknown\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:a@127.0.0.1>;tag=ft-unknown\r\n\
         To: <sip:b@127.0.0.1>;tag=tt-unknown\r\n\
         Call-ID: stats-unknown-call@127.0.0.1\r\n\
         CSeq: 2 BYE\r\n\
         Content-Length: 0\r\n\r\n",
        sip = r.sip_port
    );
    sock.send_to(bye.as_bytes(), ("127.0.0.1", r.sip_port))
        .unwrap();
    let failovers = r.stat("failovers");
    r.wait_for("the E replies counted", |r| r.stat("relay_errors") == 2);
    let s = r.statistics();
    assert_eq!(value(&s, "deletes_failed"), 1, "{s}");
    assert_eq!(value(&s, "deletes"), 40, "{s}");
    let errors: u64 = r
        .urls
        .iter()
        .map(|u| value(&s, &format!("errors__{u}")))
        .sum();
    assert_eq!(errors, 2, "{s}");
    assert_eq!(value(&s, "failovers"), failovers, "{s}");
    r.finish();
}

/// Acceptance 2: a draining relay takes no new call but keeps its calls to the end;
/// undraining returns it to selection.
#[test]
fn a_draining_relay_keeps_its_calls_and_takes_no_new_ones() {
    let Some(r) = rig("stats_drain", "") else {
        return;
    };
    let url2 = r.urls[1].clone();
    let node = |s: &serde_json::Value, name: &str, relay: usize| {
        value(s, &format!("{name}__{}", r.urls[relay]))
    };
    // 20 long calls (20 s each) before the drain
    let long = Sipp::spawn(&r.dir, &r.uac_args(20, 20, 20_000)).expect("sipp uac");
    r.wait_for("20 long calls answered", |r| r.stat("answers") == 20);
    let s0 = r.statistics();
    let held = node(&s0, "active_calls", 1);
    assert!(held > 0, "relay 2 holds none of the long calls: {s0}");
    assert_eq!(value(&s0, "active_calls"), 20);
    let commands2 = node(&s0, "commands", 1);
    let created2 = r.sessions_created(1);

    // the recipe with a set id (set 0 holds both relays); then 20 new calls at once
    r.os.mi("rtpproxy_drain", &[&url2, "1", "0"]).unwrap();
    r.calls(20, 20);
    let s1 = r.statistics();
    assert_eq!(
        value(&s1, "deletes"),
        20,
        "the long calls must still be up here: {s1}"
    );
    assert_eq!(node(&s1, "commands", 1), commands2, "relay 2 got commands");
    assert_eq!(r.sessions_created(1), created2, "relay 2 created sessions");
    assert_eq!(node(&s1, "active_calls", 1), held);
    println!("while draining: 20 calls, commands__{url2} stayed {commands2}; relay 2 holds {held}");

    let d = r.detail(1);
    assert_eq!(d["state"], "draining", "{d}");
    assert_eq!(node(&s1, "draining", 1), 1);
    assert_eq!(node(&s1, "draining", 0), 0);
    assert_eq!(node(&s1, "enabled", 1), 1);
    assert_eq!(value(&s1, "enabled_nodes"), 2);
    let show = e2e::json(&r.os.mi("rtpproxy_show", &[]).unwrap());
    let plain = show[0]["Nodes"][1].clone();
    assert_eq!(plain["url"], url2.as_str(), "{show}");
    assert_eq!(
        plain["disabled"], 0,
        "plain rtpproxy_show of a draining node: {show}"
    );
    assert_eq!(plain.as_object().map(|o| o.len()), Some(5), "{show}");
    let unknown = r.os.mi("rtpproxy_drain", &["udp:127.0.0.1:1", "1"]);
    assert!(unknown.is_err_and(|e| e.contains("not found")));

    // the long calls end normally, their deletes on relay 2
    let mut long = long;
    let status = long.child.wait().expect("sipp");
    assert!(status.success(), "long calls failed");
    r.wait_for("40 deletes", |r| r.stat("deletes") == 40);
    assert_eq!(
        r.node_stat("commands", 1),
        commands2 + held,
        "one D per held call"
    );
    assert_eq!(r.node_stat("active_calls", 1), 0);
    assert_eq!(r.stat("deletes_failed"), 0);
    assert_eq!(r.stat("offers_failed"), 0);
    assert_eq!(r.sessions(0) + r.sessions(1), 0, "sessions left");

    r.os.mi("rtpproxy_drain", &[&url2, "0"]).unwrap();
    assert_eq!(r.detail(1)["state"], "enabled");
    assert_eq!(r.node_stat("draining", 1), 0);
    r.calls(20, 20);
    let after = r.node_stat("commands", 1);
    assert!(after > commands2 + held, "relay 2 back in selection");
    println!(
        "after drain=0: 20 calls, commands__{url2} {} -> {after}",
        commands2 + held
    );
    r.finish();
}

/// Acceptance 3: a hung relay times out, its calls fail over, and the detailed view says why
/// it is disabled. `rtpproxy_ping` answers for the live relay and fails for the hung one.
#[test]
fn a_hung_relay_times_out_and_fails_over() {
    let params = "modparam(\"rtpproxy\", \"rtpproxy_timeout\", \"0.2\")\n\
                  modparam(\"rtpproxy\", \"rtpproxy_retr\", 2)\n";
    let Some(r) = rig("stats_hung", params) else {
        return;
    };
    let ping = e2e::json(&r.os.mi("rtpproxy_ping", &[&r.urls[0]]).unwrap());
    assert_eq!(ping["version"], "20040107", "{ping}");
    assert!(ping["rtt_us"].as_u64().is_some_and(|v| v > 0), "{ping}");
    let before = r.node_stat("commands", 0) + r.node_stat("commands", 1);

    let pid = r.relays[1].pid().to_string();
    assert!(Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    r.calls(20, 10);
    let timeouts = r.node_stat("timeouts", 1);
    let failovers = r.stat("failovers");
    let d = r.detail(1);
    let p = r.os.mi("rtpproxy_ping", &[&r.urls[1]]);
    assert!(Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap()
        .success());
    println!(
        "hung relay: timeouts__{} = {timeouts}, failovers = {failovers}",
        r.urls[1]
    );
    println!("detailed view of the hung relay: {d:#}");
    assert!(timeouts > 0);
    assert!(failovers > 0);
    assert!(r.stat("retransmissions") > 0);
    assert_eq!(r.stat("offers"), 20);
    assert_eq!(r.stat("offers_failed"), 0);
    assert!(r.stat("timeouts") >= timeouts);
    assert_eq!(d["state"], "disabled", "{d}");
    assert_eq!(d["disabled"], 1);
    let why = d["last_disabled_reason"].as_str().unwrap_or_default();
    assert!(why.contains("no reply"), "reason: {d}");
    assert!(p.is_err(), "ping of a hung relay answered: {p:?}");
    assert_eq!(r.node_stat("enabled", 1), 0);
    assert_eq!(r.stat("enabled_nodes"), 1);
    assert!(r.node_stat("commands", 0) + r.node_stat("commands", 1) > before);
    // Log rules written for the C module's messages still match (doc/operator-guide.md).
    let log = r.os.log_text();
    let url = &r.urls[1];
    for c_words in [
        format!("ERROR:rtpproxy:control: proxy <{url}> does not respond, disable it: no reply"),
        format!(
            "ERROR:rtpproxy:control: timeout waiting reply from a RTP proxy <{url}>: Offer failed"
        ),
    ] {
        assert!(log.contains(&c_words), "no {c_words:?} in the log:\n{log}");
    }
    r.finish();
}

/// Nodes added by `rtpproxy_reload` get their statistics; removed ones keep theirs, frozen.
#[test]
fn reloaded_nodes_get_statistics() {
    let name = "stats_reload";
    let Some(env) = Env::get(name) else { return };
    let Some(bin) = rtpproxy_bin() else {
        e2e::skip(name, "RTPPROXY_BIN is not set");
        return;
    };
    if !env.mpath.join("db_sqlite.so").exists() {
        e2e::skip(name, &format!("no db_sqlite.so in {}", env.mpath.display()));
        return;
    }
    let dir = scratch(name);
    let controls: Vec<SocketAddr> = (0..2)
        .map(|_| SocketAddr::from(([127, 0, 0, 1], port())))
        .collect();
    let _relays: Vec<Relay> = controls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let args = ["-l", "127.0.0.1"].map(String::from);
            Relay::start_logged(&bin, &dir, &format!("relay{i}"), *c, &args).expect("rtpproxy")
        })
        .collect();
    let urls: Vec<String> = controls.iter().map(|c| format!("udp:{c}")).collect();
    let db = dir.join("nodes.db");
    let sql = |sql: &str| {
        let out = Command::new("python3")
            .arg("-c")
            .arg("import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()")
            .arg(&db)
            .arg(sql)
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sql(&format!(
        "CREATE TABLE rtpproxy_sockets (id INTEGER PRIMARY KEY, rtpproxy_sock TEXT, set_id INTEGER);
         INSERT INTO rtpproxy_sockets (rtpproxy_sock, set_id) VALUES ('{}', 0);",
        urls[0]
    ));
    let params = format!(
        "modparam(\"rtpproxy\", \"db_url\", \"sqlite://{}\")",
        db.display()
    );
    let c = cfg(
        &env,
        Impl::Ours,
        &dir,
        &params,
        "loadmodule \"db_sqlite.so\"",
        "",
    );
    let os = OpenSips::start(&env, &c).unwrap();
    let stats = || e2e::json(&os.mi("get_statistics", &["rtpproxy:"]).unwrap());
    let get = |s: &serde_json::Value, n: &str| s[format!("rtpproxy:{n}")].as_u64();
    let wait = |what: &str, cond: &dyn Fn(&serde_json::Value) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let s = stats();
            if cond(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let s = wait("the first node enabled", &|s| {
        get(s, &format!("enabled__{}", urls[0])) == Some(1)
    });
    assert_eq!(get(&s, &format!("commands__{}", urls[1])), None, "{s}");

    // the second node arrives, the first goes
    sql(&format!(
        "DELETE FROM rtpproxy_sockets;
         INSERT INTO rtpproxy_sockets (rtpproxy_sock, set_id) VALUES ('{}', 0);",
        urls[1]
    ));
    os.mi("rtpproxy_reload", &[]).unwrap();
    let s = wait("the reloaded node enabled", &|s| {
        get(s, &format!("enabled__{}", urls[1])) == Some(1)
    });
    println!("after reload: {s:#}");
    assert_eq!(get(&s, &format!("commands__{}", urls[1])), Some(0));
    assert_eq!(get(&s, &format!("enabled__{}", urls[0])), Some(0));
    assert_eq!(get(&s, &format!("commands__{}", urls[0])), Some(0));
    assert_eq!(get(&s, "enabled_nodes"), Some(1));
    let ping = e2e::json(&os.mi("rtpproxy_ping", &[&urls[1], "0"]).unwrap());
    assert_eq!(ping["version"], "20040107", "{ping}");

    // and back: the first node's statistics continue (registered once)
    sql(&format!(
        "INSERT INTO rtpproxy_sockets (rtpproxy_sock, set_id) VALUES ('{}', 0);",
        urls[0]
    ));
    os.mi("rtpproxy_reload", &[]).unwrap();
    let s = wait("both nodes enabled", &|s| {
        get(s, "enabled_nodes") == Some(2)
    });
    let rows = s.as_object().map_or(0, |o| o.len());
    assert_eq!(rows, 13 + 2 * 7, "one row per statistic: {s}");
    let raw = os.mi("get_statistics", &["rtpproxy:"]).unwrap();
    let key = format!("\"rtpproxy:commands__{}\"", urls[0]);
    assert_eq!(raw.matches(&key).count(), 1, "registered twice: {raw}");
    let (status, log) = os.stop();
    assert!(status.success(), "{log}");
}
