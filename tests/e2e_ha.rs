//! High availability of engaged calls (issue 14), with a real OpenSIPS 3.6.8 (dialog,
//! db_sqlite, clusterer, proto_bin), two real RTPProxy daemons and sipp on both sides:
//!
//! - restart: `dialog` keeps its dialogs in SQLite (`db_mode` 1); the calls are set up, RTP
//!   flows, OpenSIPS is stopped (SIGTERM) and started again; then every call's hold re-INVITE
//!   must be rewritten by the relay that holds the call, and its BYE must delete the sessions
//!   there;
//! - takeover: two instances share the SIP socket (`reuse_port`) and replicate dialogs over
//!   `clusterer`; the calls go through the primary; the backup starts and syncs; every process
//!   of the primary is SIGKILLed; the re-INVITEs and BYEs then reach the backup, with the same
//!   expectations.
//!
//! Each relay sits behind a [`ControlTap`], so the test knows which relay took each call's
//! offer and where every later command went. The UAC waits, between its ACK and its
//! re-INVITE, for a NOTIFY the test sends once OpenSIPS has been restarted or taken over.
//!
//! `HA_CALLS` sets the number of calls (default 10). The C module's behaviour in the same
//! scenarios is printed by the ignored tests `*_c_module_reference`.

mod e2e;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::{scratch, ControlTap, Env, Impl, OpenSips, Relay, Sipp};

fn rtpproxy_bin() -> Option<PathBuf> {
    std::env::var_os("RTPPROXY_BIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn calls() -> usize {
    std::env::var("HA_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

/// The SQL schema directory of the OpenSIPS build under test.
fn sqlite_schema(env: &Env) -> Option<PathBuf> {
    let prefix = env.opensips.parent()?.parent()?;
    Some(prefix.join("share/opensips/sqlite")).filter(|p| p.join("dialog-create.sql").exists())
}

const UAC: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="ha_uac">
  <send retrans="500">
    <![CDATA[

      INVITE sip:uas@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:uac@[local_ip]:[local_port]>;tag=[pid]ha[call_number]
      To: <sip:uas@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:uac@[local_ip]:[local_port]>
      Max-Forwards: 70
@INVITE_BODY@
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200">
    <action>
      <ereg regexp="tag=[^;>]*" search_in="hdr" header="To:" check_it="true" assign_to="totag"/>
    </action>
  </recv>
@ACK_WAIT@
  <send>
    <![CDATA[

      ACK sip:uas@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:uac@[local_ip]:[local_port]>;tag=[pid]ha[call_number]
      To: <sip:uas@[remote_ip]:[remote_port]>;[$totag]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: <sip:uac@[local_ip]:[local_port]>
      Max-Forwards: 70
@ACK_BODY@
    ]]>
  </send>
  @PLAY@
@WAIT@
  <send retrans="500">
    <![CDATA[

      INVITE sip:uas@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:uac@[local_ip]:[local_port]>;tag=[pid]ha[call_number]
      To: <sip:uas@[remote_ip]:[remote_port]>;[$totag]
      Call-ID: [call_id]
      CSeq: 2 INVITE
      Contact: <sip:uac@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=uac 1 2 IN IP4 [media_ip]
      s=-
      c=IN IP4 [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000
      a=sendonly

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="200"/>
  <send>
    <![CDATA[

      ACK sip:uas@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:uac@[local_ip]:[local_port]>;tag=[pid]ha[call_number]
      To: <sip:uas@[remote_ip]:[remote_port]>;[$totag]
      Call-ID: [call_id]
      CSeq: 2 ACK
      Contact: <sip:uac@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[

      BYE sip:uas@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:uac@[local_ip]:[local_port]>;tag=[pid]ha[call_number]
      To: <sip:uas@[remote_ip]:[remote_port]>;[$totag]
      Call-ID: [call_id]
      CSeq: 3 BYE
      Contact: <sip:uac@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
</scenario>
"#;

/// The UAC's offer (initial INVITE, or the ACK of a late negotiation).
const UAC_SDP: &str = "      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=uac 1 1 IN IP4 [media_ip]
      s=-
      c=IN IP4 [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000

";

const NO_BODY: &str = "      Content-Length: 0

";

/// The UAC waits for the test's NOTIFY and answers it.
const WAIT: &str = r#"  <recv request="NOTIFY" timeout="180000"/>
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

/// The UAC scenario: with `late`, an INVITE without SDP, the answer in the ACK, sent only
/// after a first NOTIFY.
fn uac_scenario(late: bool, play: &str) -> String {
    let (invite, ack, ack_wait) = if late {
        (NO_BODY, UAC_SDP, WAIT)
    } else {
        (UAC_SDP, NO_BODY, "")
    };
    UAC.replace("@INVITE_BODY@\n", invite)
        .replace("@ACK_BODY@\n", ack)
        .replace("@ACK_WAIT@", ack_wait)
        .replace("@WAIT@", WAIT)
        .replace("@PLAY@", play)
}

const UAS: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="ha_uas">
  <recv request="INVITE" crlf="true"/>
  <send retrans="500">
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]has[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:uas@[local_ip]:[local_port]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=uas 1 1 IN IP4 [media_ip]
      s=-
      c=IN IP4 [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000

    ]]>
  </send>
  <recv request="ACK" crlf="true"/>
  <recv request="INVITE" timeout="180000"/>
  <send retrans="500">
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:uas@[local_ip]:[local_port]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=uas 1 2 IN IP4 [media_ip]
      s=-
      c=IN IP4 [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000
      a=recvonly

    ]]>
  </send>
  <recv request="ACK" crlf="true"/>
  <recv request="BYE" timeout="60000"/>
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
  </send>
</scenario>
"#;

/// What is being survived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    /// OpenSIPS stopped (SIGTERM) and started again; dialogs restored from SQLite.
    Restart,
    /// A clustered backup on the same SIP socket takes over from a SIGKILLed primary.
    Takeover,
}

/// How calls are engaged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Engage {
    /// `rtpproxy_engage("co")`.
    Engage,
    /// `rtp_relay_engage("rtpproxy")` (the rtp_relay module drives our engine).
    RtpRelay,
}

/// The script: every call engaged on its initial INVITE; in-dialog requests matched to their
/// dialog and relayed to the UAS.
fn routes(uas: u16, engage: Engage) -> String {
    let engage = match engage {
        Engage::Engage => "if (!rtpproxy_engage(\"co\")) { sl_send_reply(500, \"engage failed\"); exit; }",
        Engage::RtpRelay => "create_dialog();\n        $rtp_relay = \"co\";\n        $rtp_relay_peer = \"co\";\n        if (!rtp_relay_engage(\"rtpproxy\")) { sl_send_reply(500, \"engage failed\"); exit; }",
    };
    format!(
        r#"route {{
    if (has_totag()) {{
        if (!loose_route()) match_dialog();
        $du = "sip:127.0.0.1:{uas}";
        t_relay();
        exit;
    }}
    if (is_method("INVITE")) {{
        # An INVITE retransmitted before this one left the script would create a second
        # dialog, whose failure deletes the call's sessions: absorb retransmissions first.
        t_newtran();
        record_route();
        {engage}
    }}
    $du = "sip:127.0.0.1:{uas}";
    t_relay();
}}
"#
    )
}

/// One OpenSIPS instance's configuration.
struct Instance<'a> {
    name: &'a str,
    engage: Engage,
    sip: u16,
    /// The dialog database (restart) or the cluster node (takeover).
    dialog: String,
}

fn write_cfg(
    env: &Env,
    which: Impl,
    dir: &Path,
    inst: &Instance,
    nodes: &str,
    uas: u16,
) -> e2e::Cfg {
    let fifo = dir.join(format!("fifo-{}", inst.name));
    let path = dir.join(format!("{}.cfg", inst.name));
    let reuse = if inst.dialog.contains("clusterer") {
        " reuse_port"
    } else {
        ""
    };
    let text = format!(
        r#"log_level=3
stderror_enabled=yes
syslog_enabled=no
udp_workers=2
socket=udp:127.0.0.1:{sip}{reuse}
mpath="{mpath}/"
loadmodule "proto_udp.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "sipmsgops.so"
loadmodule "mi_fifo.so"
modparam("mi_fifo", "fifo_name", "{fifo}")
loadmodule "dialog.so"
{dialog}
{rtp_relay}
loadmodule "{module}"
modparam("rtpproxy", "rtpproxy_sock", "{nodes}")
{routes}"#,
        sip = inst.sip,
        mpath = env.mpath.display(),
        fifo = fifo.display(),
        dialog = inst.dialog,
        module = env.module(which).display(),
        routes = routes(uas, inst.engage),
        rtp_relay = if inst.engage == Engage::RtpRelay {
            "loadmodule \"rtp_relay.so\""
        } else {
            ""
        },
    );
    std::fs::write(&path, &text).unwrap();
    e2e::Cfg { text, fifo, path }
}

fn sqlite_dialog(db: &Path) -> String {
    format!(
        r#"loadmodule "db_sqlite.so"
modparam("dialog", "db_mode", 1)
modparam("dialog", "db_url", "sqlite://{}")"#,
        db.display()
    )
}

fn cluster_dialog(me: u32, my_bin: u16, other: u32, other_bin: u16, seed: bool) -> String {
    let seed = if seed { ", flags=seed" } else { "" };
    format!(
        r#"socket=bin:127.0.0.1:{my_bin}
loadmodule "proto_bin.so"
loadmodule "clusterer.so"
modparam("clusterer", "db_mode", 0)
modparam("clusterer", "my_node_id", {me})
modparam("clusterer", "my_node_info", "cluster_id=1, node_id={me}, url=bin:127.0.0.1:{my_bin}{seed}")
modparam("clusterer", "neighbor_node_info", "cluster_id=1, node_id={other}, url=bin:127.0.0.1:{other_bin}")
modparam("dialog", "dialog_replication_cluster", 1)"#
    )
}

/// The Call-IDs of an instance's dialogs in one of `states` (3: 2xx not yet acknowledged,
/// 4: confirmed).
fn calls_in(os: &OpenSips, states: &[i64]) -> Vec<String> {
    let Ok(text) = os.mi("dlg_list", &[]) else {
        return Vec::new();
    };
    let v = e2e::json(&text);
    v["Dialogs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["state"].as_i64().is_some_and(|s| states.contains(&s)))
        .filter_map(|d| d["callid"].as_str().map(str::to_owned))
        .collect()
}

/// Polls until `os` holds `n` dialogs in `states` (or the limit passes); their Call-IDs.
fn wait_calls(os: &OpenSips, n: usize, states: &[i64], limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    loop {
        let ids = calls_in(os, states);
        if ids.len() >= n || Instant::now() > deadline {
            return ids;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// How many of an instance's dialogs carry the value `name`.
fn dialogs_with_value(os: &OpenSips, name: &str) -> usize {
    let Ok(text) = os.mi("dlg_list_ctx", &[]) else {
        return usize::MAX;
    };
    let v = e2e::json(&text);
    v["Dialogs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| {
            d["context"]["values"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|item| item.get(name).is_some())
        })
        .count()
}

/// SIGKILL to every process of an instance (its own process group).
fn kill_all(mut os: OpenSips) {
    let mut child = os.child.take().expect("running");
    let group = format!("-{}", child.id());
    let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
    let _ = child.wait();
    // Wait until no process of the group is left (workers are reaped by init).
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline
        && Command::new("kill")
            .args(["-0", "--", &group])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A NOTIFY in call `call_id` to the UAC (its go-ahead for the re-INVITE).
fn trigger(sock: &UdpSocket, uac: SocketAddr, call_id: &str, n: usize) {
    let me = sock.local_addr().unwrap();
    let text = format!(
        "NOTIFY sip:uac@{uac} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch=z9hG4bK-ha-{n}\r\n\
         From: <sip:test@{me}>;tag=ha-test\r\n\
         To: <sip:uac@{uac}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 NOTIFY\r\n\
         Event: go\r\n\
         Content-Length: 0\r\n\r\n"
    );
    sock.send_to(text.as_bytes(), uac).unwrap();
}

/// What one run showed.
#[derive(Debug, Default)]
struct Report {
    calls: usize,
    /// Calls confirmed on the instance that handles them after the event.
    restored: usize,
    /// Packets the relays forwarded before the event (RTP was flowing).
    rtp_before: u64,
    /// Calls whose re-INVITE (or its 200) got a relay command after the event.
    reinvites_rewritten: usize,
    /// Commands after the event that went to the relay not holding the call.
    to_wrong_relay: usize,
    /// Calls whose sessions a `D` deleted on the relay holding them (reply 0).
    deleted: usize,
    /// Re-INVITEs the UAS received with an SDP port other than the UAC's.
    uas_saw_relay_port: usize,
    /// Dialogs still marked `late_negotiation` on the primary and the backup after the ACKs
    /// of late negotiations (takeover with late offers).
    late_left: [usize; 2],
    /// Active sessions left on each relay at the end.
    left: [u64; 2],
    uac_ok: bool,
    /// OpenSIPS log lines of our module at WARNING or worse after the event.
    module_errors: Vec<String>,
}

fn letter_and_call(cmd: &str) -> Option<(char, String)> {
    let mut it = cmd.split_whitespace();
    let letter = it.next()?.chars().next()?;
    Some((letter.to_ascii_uppercase(), it.next()?.to_owned()))
}

/// Whether a relay command's Call-ID is the call's (rtp_relay appends `-<branch>`).
fn same_call(relay_call: &str, call: &str) -> bool {
    relay_call
        .strip_prefix(call)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
}

fn sessions_drained(ctl: SocketAddr) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = e2e::relay_active_sessions(ctl).unwrap_or(u64::MAX);
        if n == 0 || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `n` calls through `event` with module `which`.
fn run(env: &Env, which: Impl, event: Event, engage: Engage, late: bool, n: usize) -> Report {
    let late_tag = if late { "-late" } else { "" };
    let dir = scratch(&format!("ha-{event:?}-{which:?}-{engage:?}{late_tag}"));
    let bin = rtpproxy_bin().unwrap();
    let relay_ctl: Vec<SocketAddr> = (0..2)
        .map(|_| SocketAddr::from(([127, 0, 0, 1], e2e::port())))
        .collect();
    let _relays: Vec<Relay> = relay_ctl
        .iter()
        .enumerate()
        .map(|(i, ctl)| {
            let args: Vec<String> = ["-l", "127.0.0.1", "-d", "INFO"].map(String::from).into();
            Relay::start_logged(&bin, &dir, &format!("relay{i}"), *ctl, &args).expect("relay")
        })
        .collect();
    let taps: Vec<ControlTap> = relay_ctl.iter().map(|c| ControlTap::start(*c)).collect();
    let nodes = taps
        .iter()
        .map(|t| format!("udp:127.0.0.1:{}", t.port))
        .collect::<Vec<_>>()
        .join(" ");

    let sip = e2e::port();
    let uas_port = e2e::free_port("127.0.0.1", 4);
    let uac_port = e2e::free_port("127.0.0.1", 4);
    let uac_media = e2e::free_port("127.0.0.1", 4);
    let (primary_dialog, backup_dialog) = match event {
        Event::Restart => {
            let db = dir.join("dialog.sqlite");
            let schema = sqlite_schema(env).unwrap();
            for f in ["standard-create.sql", "dialog-create.sql"] {
                let sql = std::fs::read_to_string(schema.join(f)).unwrap();
                let out = Command::new("sqlite3")
                    .arg(&db)
                    .arg(sql)
                    .output()
                    .expect("sqlite3");
                assert!(out.status.success(), "sqlite3 {f}: {out:?}");
            }
            (sqlite_dialog(&db), String::new())
        }
        Event::Takeover => {
            let (b1, b2) = (e2e::port(), e2e::port());
            (
                cluster_dialog(1, b1, 2, b2, true),
                cluster_dialog(2, b2, 1, b1, false),
            )
        }
    };
    let primary = write_cfg(
        env,
        which,
        &dir,
        &Instance {
            name: "primary",
            engage,
            sip,
            dialog: primary_dialog,
        },
        &nodes,
        uas_port,
    );
    let backup = (event == Event::Takeover).then(|| {
        write_cfg(
            env,
            which,
            &dir,
            &Instance {
                name: "backup",
                engage,
                sip,
                dialog: backup_dialog,
            },
            &nodes,
            uas_port,
        )
    });
    let os = OpenSips::start(env, &primary).unwrap();

    let pcap = Path::new("/usr/share/sip-tester/g711a.pcap");
    let play = if pcap.exists() {
        format!(
            "<nop><action><exec play_pcap_audio=\"{}\"/></action></nop>",
            pcap.display()
        )
    } else {
        String::new()
    };
    std::fs::write(dir.join("uac.xml"), uac_scenario(late, &play)).unwrap();
    std::fs::write(dir.join("uas.xml"), UAS).unwrap();
    let s = |v: &str| v.to_string();
    let mut uas = Sipp::spawn(
        &dir,
        &[
            s("-sf"),
            s("uas.xml"),
            s("-i"),
            s("127.0.0.1"),
            s("-mi"),
            s("127.0.0.1"),
            s("-p"),
            uas_port.to_string(),
            s("-mp"),
            e2e::free_port("127.0.0.1", 4).to_string(),
            s("-rtp_echo"),
            // a late negotiation's 200 is retransmitted until the test lets the ACK go
            s("-max_retrans"),
            s("12"),
            s("-m"),
            n.to_string(),
            s("-trace_msg"),
            s("-message_file"),
            s("uas.msg"),
            s("-nostdin"),
        ],
    )
    .expect("sipp uas");
    std::thread::sleep(Duration::from_millis(300));
    let mut uac = Sipp::spawn(
        &dir,
        &[
            s("-sf"),
            s("uac.xml"),
            format!("127.0.0.1:{sip}"),
            s("-i"),
            s("127.0.0.1"),
            s("-mi"),
            s("127.0.0.1"),
            s("-p"),
            uac_port.to_string(),
            s("-mp"),
            uac_media.to_string(),
            s("-m"),
            n.to_string(),
            s("-r"),
            s("20"),
            s("-l"),
            n.to_string(),
            s("-timeout"),
            s("240s"),
            s("-trace_err"),
            s("-nostdin"),
        ],
    )
    .expect("sipp uac");

    let mut report = Report {
        calls: n,
        ..Report::default()
    };
    // A late negotiation stays at "2xx not acknowledged" until the test lets the ACK go.
    let up: &[i64] = if late { &[3] } else { &[4] };
    let ids = wait_calls(&os, n, up, Duration::from_secs(60));
    assert_eq!(ids.len(), n, "calls up through the primary");
    // Let RTP flow a little through the relays.
    std::thread::sleep(Duration::from_millis(1500));
    report.rtp_before = relay_ctl
        .iter()
        .map(|c| e2e::relay_counter(c, "packets transmitted").unwrap_or(0))
        .sum();

    // Which relay took each call's offer.
    let holder = |call: &str| -> Option<usize> {
        (0..2).find(|&i| {
            taps[i].commands(0).iter().any(|(c, _)| {
                letter_and_call(c).is_some_and(|(l, id)| l == 'U' && same_call(&id, call))
            })
        })
    };
    let holders: Vec<Option<usize>> = ids.iter().map(|id| holder(id)).collect();
    assert!(
        holders.iter().all(Option::is_some),
        "every call has a relay: {holders:?}"
    );

    // The survivor's log starts with the event (a restarted instance rewrites its log).
    let survivor = match event {
        Event::Restart => {
            let (status, log) = os.stop();
            let _ = std::fs::write(dir.join("primary-before-restart.log"), log);
            assert!(status.success(), "OpenSIPS stopped cleanly");
            OpenSips::start(env, &primary).unwrap()
        }
        Event::Takeover => {
            // As an operator would: the backup starts once the primary's dialog replication is
            // ready (a seed is "Ok" after its own sync attempt falls back). A backup started
            // before that may wait for the primary forever (seen under load: the primary never
            // answered its sync request).
            let ready = e2e::wait_for(Duration::from_secs(30), || {
                os.mi("clusterer_list_cap", &[]).is_ok_and(|t| {
                    let v = e2e::json(&t);
                    v["Clusters"].as_array().into_iter().flatten().any(|c| {
                        c["Capabilities"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|cap| cap["name"] == "dialog-dlg-repl" && cap["state"] == "Ok")
                    })
                })
            });
            assert!(ready, "the primary's dialog replication is ready");
            let b = OpenSips::start(env, backup.as_ref().unwrap()).unwrap();
            let synced = wait_calls(&b, n, up, Duration::from_secs(30));
            assert_eq!(synced.len(), n, "the backup synced the dialogs");
            if late {
                // The ACKs carry the answer and end the late negotiation; whichever instance
                // gets them, the other one learns it by replication.
                let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
                let uac_addr = SocketAddr::from(([127, 0, 0, 1], uac_port));
                for (i, id) in ids.iter().enumerate() {
                    trigger(&sock, uac_addr, id, 1000 + i);
                }
                for inst in [&os, &b] {
                    wait_calls(inst, n, &[4], Duration::from_secs(30));
                }
                let deadline = Instant::now() + Duration::from_secs(15);
                loop {
                    report.late_left = [&os, &b].map(|i| dialogs_with_value(i, "late_negotiation"));
                    if report.late_left == [0, 0] || Instant::now() > deadline {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            kill_all(os);
            b
        }
    };
    report.restored = calls_in(&survivor, &[3, 4]).len();
    let marks: Vec<usize> = taps.iter().map(ControlTap::len).collect();

    // Go: every call re-INVITEs and hangs up, now through the survivor.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let uac_addr = SocketAddr::from(([127, 0, 0, 1], uac_port));
    for (i, id) in ids.iter().enumerate() {
        trigger(&sock, uac_addr, id, i);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut uac_status = None;
    while Instant::now() < deadline {
        if let Some(st) = uac.child.try_wait().unwrap() {
            uac_status = Some(st);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    report.uac_ok = uac_status.is_some_and(|s| s.success());
    let uas_deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < uas_deadline && uas.child.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(100));
    }

    // The relays' command logs, for a post-mortem (marks: where the event was).
    for (i, tap) in taps.iter().enumerate() {
        for (name, from) in [("all", 0), ("after", marks[i])] {
            let text: String = tap
                .commands(from)
                .iter()
                .map(|(c, r)| format!("{c} => {r}\n"))
                .collect();
            let _ = std::fs::write(dir.join(format!("tap{i}-{name}.txt")), text);
        }
    }
    for (id, holder) in ids.iter().zip(&holders) {
        let holder = holder.unwrap();
        let mut rewritten = false;
        let mut deleted = false;
        for (i, tap) in taps.iter().enumerate() {
            for (cmd, reply) in tap.commands(marks[i]) {
                let Some((letter, call)) = letter_and_call(&cmd) else {
                    continue;
                };
                if !same_call(&call, id) {
                    continue;
                }
                if i != holder {
                    report.to_wrong_relay += 1;
                    continue;
                }
                match letter {
                    'U' | 'L' if !reply.starts_with('E') => rewritten = true,
                    'D' if reply == "0" => deleted = true,
                    _ => {}
                }
            }
        }
        report.reinvites_rewritten += usize::from(rewritten);
        report.deleted += usize::from(deleted);
    }
    let uas_trace = std::fs::read_to_string(dir.join("uas.msg")).unwrap_or_default();
    let mut seen: Vec<&str> = uas_trace
        .split("----------------------------------------------- ")
        .filter(|m| m.contains("CSeq: 2 INVITE") && m.contains("received"))
        .filter(|m| {
            m.lines()
                .find_map(|l| l.trim().strip_prefix("m=audio "))
                .and_then(|l| l.split(' ').next())
                .is_some_and(|p| p != uac_media.to_string())
        })
        .filter_map(|m| m.lines().find_map(|l| l.trim().strip_prefix("Call-ID: ")))
        .collect();
    seen.sort_unstable();
    seen.dedup();
    report.uas_saw_relay_port = seen.len();
    report.left = [
        sessions_drained(relay_ctl[0]),
        sessions_drained(relay_ctl[1]),
    ];
    let log = survivor.log_text();
    report.module_errors = log
        .lines()
        .filter(|l| {
            l.contains(":rtpproxy:") && (l.contains("ERROR") || l.contains("WARNING"))
                || l.contains("CRITICAL")
        })
        // Under load a UAS retransmits its 200 to the re-INVITE; one relayed after the BYE
        // asks the relay about a deleted session (as on any instance, HA or not).
        .filter(|l| !l.contains("incorrect port 0 in reply"))
        .map(str::to_owned)
        .collect();
    drop(uac);
    drop(uas);
    let (status, _) = survivor.stop();
    assert!(
        status.success() || event == Event::Takeover,
        "OpenSIPS stopped"
    );
    report
}

/// One scenario at a time: each runs two OpenSIPS instances, two relays and two sipp with
/// RTP, and two side by side on two cores starve the replication and the relays' timers.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn setup(test: &str) -> Option<Env> {
    let env = Env::get(test)?;
    if !e2e::have_sipp(test) {
        return None;
    }
    if rtpproxy_bin().is_none() {
        e2e::skip(test, "RTPPROXY_BIN is not set");
        return None;
    }
    let missing: Vec<&str> = ["dialog.so", "db_sqlite.so", "clusterer.so", "proto_bin.so"]
        .into_iter()
        .filter(|m| !env.mpath.join(m).exists())
        .collect();
    if !missing.is_empty() || sqlite_schema(&env).is_none() {
        e2e::skip(
            test,
            &format!("this OpenSIPS build lacks {missing:?} or its SQLite schema"),
        );
        return None;
    }
    if Command::new("sqlite3").arg("-version").output().is_err() {
        e2e::skip(test, "the sqlite3 tool is not installed");
        return None;
    }
    Some(env)
}

fn assert_survived(r: &Report) {
    println!("{r:#?}");
    let n = r.calls;
    assert_eq!(r.restored, n, "dialogs on the surviving instance");
    assert!(
        r.uac_ok,
        "every call completed (re-INVITE and BYE answered)"
    );
    assert_eq!(r.reinvites_rewritten, n, "re-INVITEs handled by the relay");
    assert_eq!(r.uas_saw_relay_port, n, "re-INVITE SDP rewritten");
    assert_eq!(
        r.to_wrong_relay, 0,
        "commands to the relay not holding the call"
    );
    assert_eq!(r.deleted, n, "sessions deleted where they are");
    assert_eq!(r.left, [0, 0], "sessions left on the relays");
    assert!(r.module_errors.is_empty(), "{:#?}", r.module_errors);
}

#[test]
fn engaged_calls_survive_a_restart() {
    let test = "engaged_calls_survive_a_restart";
    let _serial = serial();
    let Some(env) = setup(test) else { return };
    let r = run(
        &env,
        Impl::Ours,
        Event::Restart,
        Engage::Engage,
        false,
        calls(),
    );
    assert!(r.rtp_before > 0, "RTP flowed through the relays");
    assert_survived(&r);
}

#[test]
fn engaged_calls_survive_a_takeover() {
    let test = "engaged_calls_survive_a_takeover";
    let _serial = serial();
    let Some(env) = setup(test) else { return };
    let r = run(
        &env,
        Impl::Ours,
        Event::Takeover,
        Engage::Engage,
        false,
        calls(),
    );
    assert!(r.rtp_before > 0, "RTP flowed through the relays");
    assert_survived(&r);
}

/// The C module in the same scenarios, for reference (prints what it does).
#[test]
#[ignore = "reference run of the C module; prints figures"]
fn restart_and_takeover_c_module_reference() {
    let test = "restart_and_takeover_c_module_reference";
    let _serial = serial();
    let Some(env) = setup(test) else { return };
    if env.c_module.is_none() {
        e2e::skip(test, "no C rtpproxy.so");
        return;
    }
    for (event, late) in [
        (Event::Restart, false),
        (Event::Takeover, false),
        (Event::Takeover, true),
    ] {
        let r = run(&env, Impl::C, event, Engage::Engage, late, calls());
        println!("C module, {event:?}, late offer {late}: {r:#?}");
    }
}

/// Calls engaged with `rtp_relay_engage("rtpproxy")`: rtp_relay restores its context (set,
/// node URL) on the backup and drives our engine with it.
#[test]
fn rtp_relay_calls_survive_a_takeover() {
    let test = "rtp_relay_calls_survive_a_takeover";
    let _serial = serial();
    let Some(env) = setup(test) else { return };
    if !env.mpath.join("rtp_relay.so").exists() {
        e2e::skip(test, "rtp_relay.so not in the modules directory");
        return;
    }
    let r = run(
        &env,
        Impl::Ours,
        Event::Takeover,
        Engage::RtpRelay,
        false,
        calls(),
    );
    assert_survived(&r);
}

/// Late negotiations (INVITE without SDP, answer in the ACK) acknowledged while both instances
/// run: the end of the late negotiation reaches the other instance, and the calls then survive
/// the takeover.
#[test]
fn late_offer_calls_survive_a_takeover() {
    let test = "late_offer_calls_survive_a_takeover";
    let _serial = serial();
    let Some(env) = setup(test) else { return };
    let r = run(
        &env,
        Impl::Ours,
        Event::Takeover,
        Engage::Engage,
        true,
        calls(),
    );
    println!("{r:#?}");
    assert_eq!(r.late_left, [0, 0], "late_negotiation left after the ACKs");
    assert_survived(&r);
}
