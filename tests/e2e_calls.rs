//! Calls through a real OpenSIPS 3.6.8 with our module and a real RTPProxy: sipp UAC ->
//! OpenSIPS (rtpproxy_offer / rtpproxy_answer / rtpproxy_unforce) -> sipp UAS.

mod e2e;

use std::time::Duration;

use e2e::{cfg, port, scratch, Env, Impl, OpenSips, Relay, Sipp, RELAY_IP};

const MODULES: &str = r#"loadmodule "sl.so"
loadmodule "sipmsgops.so""#;

fn routes(uas: u16, offer: &str, answer: &str) -> String {
    format!(
        r#"route {{
    if (is_method("INVITE") && has_body("application/sdp")) {{
        if (!rtpproxy_offer("{offer}")) {{ sl_send_reply(500, "rtpproxy_offer failed"); exit; }}
    }}
    if (is_method("BYE|CANCEL")) rtpproxy_unforce();
    $du = "sip:127.0.0.1:{uas}";
    t_on_reply("r");
    t_relay();
}}
onreply_route[r] {{
    if (has_body("application/sdp")) rtpproxy_answer("{answer}");
}}
"#
    )
}

/// Places `calls` calls; returns the UAS message trace.
fn run_calls(
    env: &Env,
    which: Impl,
    name: &str,
    calls: u32,
    rate: u32,
    extra_params: &str,
) -> Option<(String, u64)> {
    let dir = scratch(name);
    let ctl = port();
    let relay_ctl = format!("127.0.0.1:{ctl}");
    let Some(_relay) = Relay::start(&[format!("udp:{relay_ctl}")]) else {
        e2e::skip(
            name,
            "no RTPProxy engine (pip install rtp.io or set RTPPROXY_BIN)",
        );
        return None;
    };
    let uas = port();
    let params =
        format!("modparam(\"rtpproxy\", \"rtpproxy_sock\", \"udp:{relay_ctl}\")\n{extra_params}");
    let c = cfg(env, which, &dir, &params, MODULES, &routes(uas, "co", "co"));
    let sip_port = c
        .text
        .lines()
        .find_map(|l| l.strip_prefix("socket=udp:127.0.0.1:"))
        .unwrap();
    let os = OpenSips::start(env, &c).unwrap();
    let _uas = Sipp::spawn(
        &dir,
        &[
            "-sn",
            "uas",
            "-i",
            "127.0.0.1",
            "-p",
            &uas.to_string(),
            "-trace_msg",
            "-message_file",
            "uas.log",
            "-nostdin",
        ]
        .map(String::from),
    )
    .expect("sipp uas");
    assert!(
        e2e::wait_for(Duration::from_secs(10), || e2e::udp_bound(uas)),
        "sipp uas did not bind port {uas}"
    );
    let uac_port = port();
    let out = e2e::sipp(
        &dir,
        &[
            "-sn".into(),
            "uac".into(),
            format!("127.0.0.1:{sip_port}"),
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            uac_port.to_string(),
            "-m".into(),
            calls.to_string(),
            "-r".into(),
            rate.to_string(),
            "-timeout".into(),
            "60s".into(),
            "-nostdin".into(),
            "-trace_err".into(),
        ],
    )
    .expect("sipp uac");
    // The last BYE's unforce reaches the relay shortly after sipp is done: poll until no
    // session is left (or report how many were after the deadline).
    let mut active = None;
    e2e::wait_for(Duration::from_secs(10), || {
        active = e2e::relay_active_sessions(&relay_ctl);
        active == Some(0)
    });
    let active = active.expect("relay I command");
    let (status, log) = os.stop();
    assert!(status.success(), "opensips did not stop cleanly:\n{log}");
    assert!(
        out.status.success(),
        "{which:?}: sipp uac reported failed calls:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n"),
        log.lines()
            .filter(|l| l.contains("rtpproxy"))
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let trace = std::fs::read_to_string(dir.join("uas.log")).unwrap_or_default();
    Some((trace, active))
}

#[test]
fn calls_are_relayed_and_sessions_deleted() {
    let Some(env) = Env::get("calls_are_relayed_and_sessions_deleted") else {
        return;
    };
    if !e2e::have_sipp("calls_are_relayed_and_sessions_deleted") {
        return;
    }
    let calls = 200;
    let Some((trace, active)) = run_calls(&env, Impl::Ours, "calls", calls, 100, "") else {
        return;
    };
    // Every INVITE the UAS received carries a rewritten SDP: media on the relay's address
    // (RELAY_IP, not the caller's 127.0.0.1) and a relay-allocated port (sipp's own media port
    // is 6000), plus the marker.
    let invites: Vec<&str> = trace
        .split("INVITE sip:")
        .skip(1)
        .map(|m| m.split("\n-----").next().unwrap_or(m))
        .collect();
    assert_eq!(invites.len() as u32, calls, "INVITEs at the UAS");
    for inv in &invites {
        let sdp_port: u16 = inv
            .lines()
            .find_map(|l| l.strip_prefix("m=audio "))
            .and_then(|l| l.split(' ').next())
            .and_then(|p| p.parse().ok())
            .expect("m=audio line");
        assert_ne!(sdp_port, 6000, "m= port not rewritten:\n{inv}");
        let c_lines: Vec<&str> = inv.lines().filter(|l| l.starts_with("c=")).collect();
        assert!(
            !c_lines.is_empty() && c_lines.iter().all(|l| *l == format!("c=IN IP4 {RELAY_IP}")),
            "c= not rewritten to the relay's {RELAY_IP}:\n{inv}"
        );
        assert!(inv.contains("a=nortpproxy:yes"), "marker missing:\n{inv}");
    }
    assert_eq!(active, 0, "sessions left on the relay after every BYE");
    println!("{calls} calls relayed; relay sessions after BYE: {active}");
}
