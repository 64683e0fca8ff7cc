//! `E_RTPPROXY_STATUS` through a real OpenSIPS 3.6.8 (event_datagram subscriber): one event
//! per real state change, with the status the node is in.

mod e2e;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use e2e::{cfg, port, scratch, Env, Impl, OpenSips, Relay};

/// Collects `(socket, status)` pairs of E_RTPPROXY_STATUS datagrams until `until` holds or
/// the deadline passes.
fn collect(
    sock: &UdpSocket,
    got: &mut Vec<(String, String)>,
    max: Duration,
    until: impl Fn(&[(String, String)]) -> bool,
) {
    let deadline = Instant::now() + max;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && !until(got) {
        let Ok(n) = sock.recv(&mut buf) else { continue };
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let v: serde_json::Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(_) => continue,
        };
        if v["method"] == "E_RTPPROXY_STATUS" {
            let p = &v["params"];
            got.push((
                p["socket"].as_str().unwrap_or_default().to_string(),
                p["status"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
}

#[test]
fn status_event_once_per_real_change() {
    let name = "status_event_once_per_real_change";
    let Some(env) = Env::get(name) else { return };
    if !env.mpath.join("event_datagram.so").exists() {
        e2e::skip(name, "no event_datagram.so");
        return;
    }
    let (up, down) = (port(), port());
    let Some(_relay) = Relay::start(&[format!("udp:127.0.0.1:{up}")]) else {
        e2e::skip(name, "no RTPProxy engine");
        return;
    };
    let listener = UdpSocket::bind("127.0.0.1:0").unwrap();
    listener
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let lport = listener.local_addr().unwrap().port();
    let dir = scratch("events");
    let (u, d) = (
        format!("udp:127.0.0.1:{up}"),
        format!("udp:127.0.0.1:{down}"),
    );
    let params = format!(
        "modparam(\"rtpproxy\", \"rtpproxy_sock\", \"{u} {d}\")\n\
         modparam(\"rtpproxy\", \"rtpproxy_timeout\", \"0.2\")\n\
         modparam(\"rtpproxy\", \"rtpproxy_retr\", 1)\n\
         modparam(\"rtpproxy\", \"rtpproxy_disable_tout\", 1)"
    );
    // The test subscribes by MI once OpenSIPS is up, then causes the changes itself.
    let c = cfg(
        &env,
        Impl::Ours,
        &dir,
        &params,
        "loadmodule \"event_datagram.so\"",
        "",
    );
    let os = OpenSips::start(&env, &c).unwrap();
    os.mi(
        "event_subscribe",
        &[
            "E_RTPPROXY_STATUS",
            &format!("udp:127.0.0.1:{lport}"),
            "120",
        ],
    )
    .unwrap();
    let mut got = Vec::new();
    // MI: disable the live node, then enable it: exactly one inactive then one active.
    os.mi("rtpproxy_enable", &[&u, "0"]).unwrap();
    os.mi("rtpproxy_enable", &[&u, "0"]).unwrap(); // no change: no event
    os.mi("rtpproxy_enable", &[&u, "1"]).unwrap();
    collect(&listener, &mut got, Duration::from_secs(5), |g| {
        g.iter().filter(|e| e.0 == u).count() >= 2
    });
    let for_up: Vec<&(String, String)> = got.iter().filter(|e| e.0 == u).collect();
    assert_eq!(
        for_up.iter().map(|e| e.1.as_str()).collect::<Vec<_>>(),
        vec!["inactive", "active"],
        "{got:?}"
    );
    // The dead node is re-probed every second by the prober and stays down: no event.
    got.clear();
    collect(&listener, &mut got, Duration::from_secs(3), |_| false);
    assert!(
        got.iter().all(|e| e.0 != d),
        "events for a node that stayed down: {got:?}"
    );
    let (status, log) = os.stop();
    assert!(status.success(), "{log}");
}
