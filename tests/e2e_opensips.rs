//! End to end: a real OpenSIPS 3.6.8 (`OPENSIPS_BIN`) loads our module.
//!
//! Each test prints a SKIPPED line and passes when no OpenSIPS is available (fails under CI=true).

mod e2e;

use e2e::{cfg, check, json, scratch, Env, Impl, OpenSips, Relay};

/// Every modparam example of the user documentation (db_url aside: it needs a database and
/// has its own test).
const DOC_MODPARAMS: &str = r#"
modparam("rtpproxy", "rtpproxy_sock", "udp:localhost:22222=2")
modparam("rtpproxy", "rtpproxy_sock", "udp:localhost:22222|8.8.8.8=2")
modparam("rtpproxy", "rtpproxy_sock",
	"udp:localhost:22222 udp:localhost:22223 tcp:remote1:33422 tcp6:remote2:32322")
modparam("rtpproxy", "rtpproxy_sock", "1 == udp:localhost:22222 udp:localhost:22223")
modparam("rtpproxy", "rtpproxy_sock", "2 == udp:localhost:22223")
modparam("rtpproxy", "rtpproxy_sock", "2 == udp:localhost:22223|8.8.8.8")
modparam("rtpproxy", "rtpproxy_disable_tout", 20)
modparam("rtpproxy", "rtpproxy_timeout", "0.2")
modparam("rtpproxy", "rtpproxy_autobridge", 1)
modparam("rtpproxy", "rtpproxy_retr", 2)
modparam("rtpproxy", "default_set", 1)
modparam("rtpproxy", "nortpproxy_str", "a=sdpmangled:yes\r\n")
modparam("rtpproxy", "db_table", "nh_sockets")
modparam("rtpproxy", "rtpp_socket_col", "rtpp_socket")
modparam("rtpproxy", "set_id_col", "rtpp_set_id")
modparam("rtpproxy", "rtpp_notify_socket", "tcp:10.10.10.10:9999")
modparam("rtpproxy", "rtpp_notify_socket", "unix:/tmp/rtpproxy.unix")
modparam("rtpproxy", "rtpp_notify_socket", "/tmp/rtpproxy.unix")
modparam("rtpproxy", "generated_sdp_port_min", 10000)
modparam("rtpproxy", "generated_sdp_port_max", 30000)
modparam("rtpproxy", "generated_sdp_media_ip", "10.0.0.1")
"#;

/// Calls every script function with every parameter kind, in every route type the C module
/// allows, the way the user documentation's examples do.
const ALL_FUNCTIONS: &str = r#"
route {
    if (is_method("INVITE") && !has_totag()) {
        rtpproxy_engage();
        rtpproxy_engage("co", "1.2.3.4", 1, $var(sock), $var(ret));
    }
    rtpproxy_offer();
    rtpproxy_offer("FAII");
    rtpproxy_offer("co", "1.2.3.4", 1, $var(sock), $var(ret), $var(body));
    rtpproxy_answer("co", , 1, , $var(ret));
    rtpproxy_unforce();
    rtpproxy_unforce(1, $var(sock));
    rtpproxy_stream2uac("ringback", -1);
    rtpproxy_stream2uas("ringback", 3, 1, $var(sock));
    rtpproxy_stop_stream2uac();
    rtpproxy_stop_stream2uas(1, $var(sock));
    rtpproxy_start_recording();
    rtpproxy_start_recording(1, $var(sock), "s", "udp:127.0.0.1:9", 1);
    rtpproxy_stats($var(up), $var(down), $var(sent), $var(fail));
    rtpproxy_stats($var(up), $var(down), $var(sent), $var(fail), 1, $var(sock));
    rtpproxy_all_stats($avp(stats));
    rtpproxy_all_stats($avp(stats), 1, $var(sock));
    t_on_reply("r");
    t_on_failure("f");
    t_on_branch("b");
    exit;
}
onreply_route[r] {
    rtpproxy_answer();
    rtpproxy_offer();
    rtpproxy_unforce();
    rtpproxy_stream2uac("ringback", 1);
    rtpproxy_stop_stream2uas();
    rtpproxy_start_recording();
    rtpproxy_stats($var(up), $var(down), $var(sent), $var(fail));
}
failure_route[f] {
    rtpproxy_unforce();
    rtpproxy_offer();
    rtpproxy_start_recording();
    rtpproxy_all_stats($avp(stats));
}
branch_route[b] {
    rtpproxy_offer("co");
    rtpproxy_answer();
    rtpproxy_engage("co");
    rtpproxy_start_recording();
}
local_route {
    rtpproxy_offer();
    rtpproxy_stream2uas("ringback", 1);
    rtpproxy_stop_stream2uac();
}
"#;

const SIP_MODULES: &str = r#"loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "sipmsgops.so"
loadmodule "dialog.so""#;

#[test]
fn doc_examples_pass_check_start_and_stop_cleanly() {
    let Some(env) = Env::get("doc_examples_pass_check_start_and_stop_cleanly") else {
        return;
    };
    let dir = scratch("doc");
    let c = cfg(
        &env,
        Impl::Ours,
        &dir,
        DOC_MODPARAMS,
        SIP_MODULES,
        ALL_FUNCTIONS,
    );
    let out = check(&env, &c);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "opensips -c failed:\n{stderr}");
    assert!(stderr.contains("config file ok"), "{stderr}");

    let os = OpenSips::start(&env, &c).unwrap();
    let show = json(&os.mi("rtpproxy_show", &[]).unwrap());
    // Sets in order of first appearance: default_set=1 was set, but the lines without
    // `N ==` were parsed with the default in force, so they land in set 1 as well.
    let sets = show.as_array().unwrap();
    assert_eq!(sets.len(), 2, "{show}");
    let (status, log) = os.stop();
    assert!(
        status.success(),
        "opensips did not exit cleanly ({status}):\n{log}"
    );
    assert!(!log.contains("CRITICAL"), "{log}");
    assert!(!log.contains("internal error"), "{log}");
}

#[test]
fn script_functions_check_like_the_c_module() {
    let Some(env) = Env::get("script_functions_check_like_the_c_module") else {
        return;
    };
    let dir = scratch("funcs");
    let params = r#"modparam("rtpproxy", "rtpproxy_sock", "udp:127.0.0.1:22222")"#;
    for which in [Impl::Ours, Impl::C] {
        if which == Impl::C && env.c_module.is_none() {
            e2e::skip(
                "script_functions_check_like_the_c_module (C comparison)",
                &format!("no rtpproxy.so in {}", env.mpath.display()),
            );
            continue;
        }
        let c = cfg(&env, which, &dir, params, SIP_MODULES, ALL_FUNCTIONS);
        let out = check(&env, &c);
        assert!(
            out.status.success(),
            "{which:?}: opensips -c failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A function in a route the C module does not allow it in is refused by both.
    let bad = "route { exit; }\nfailure_route[f] { rtpproxy_stream2uac(\"x\", 1); }\n";
    for which in [Impl::Ours, Impl::C] {
        if which == Impl::C && env.c_module.is_none() {
            continue;
        }
        let c = cfg(&env, which, &dir, params, SIP_MODULES, bad);
        let out = check(&env, &c);
        assert!(
            !out.status.success(),
            "{which:?}: stream2uac in failure_route was accepted"
        );
    }
}

/// The same `rtpproxy_sock` lines give the same `rtpproxy_show` JSON as the C module, with
/// every node served by a real relay (so the C module's start-up probe finds them alive).
#[test]
fn show_matches_the_c_module() {
    let Some(env) = Env::get("show_matches_the_c_module") else {
        return;
    };
    let Some(_) = env.c_module.as_ref() else {
        e2e::skip(
            "show_matches_the_c_module",
            "no C rtpproxy.so to compare with",
        );
        return;
    };
    let (p1, p2, p3) = (e2e::port(), e2e::port(), e2e::port());
    let Some(_relay) = Relay::start(&[
        format!("udp:127.0.0.1:{p1}"),
        format!("udp:127.0.0.1:{p2}"),
        format!("udp:127.0.0.1:{p3}"),
    ]) else {
        e2e::skip(
            "show_matches_the_c_module",
            "no RTPProxy engine (pip install rtp.io)",
        );
        return;
    };
    let params = format!(
        r#"modparam("rtpproxy", "rtpproxy_sock", "udp:127.0.0.1:{p1}")
modparam("rtpproxy", "rtpproxy_sock", "udp:127.0.0.1:{p2}|8.8.8.8=2 UDP:127.0.0.1:{p3}=0")
modparam("rtpproxy", "rtpproxy_sock", "7 == udp:127.0.0.1:{p3}=3  udp:127.0.0.1:{p1}")
modparam("rtpproxy", "rtpproxy_sock", "0 == udp:127.0.0.1:{p2}")
modparam("rtpproxy", "rtpproxy_sock", "3==udp:127.0.0.1:{p1}")
"#
    );
    let dir = scratch("show");
    let mut outputs = Vec::new();
    for which in [Impl::C, Impl::Ours] {
        let c = cfg(&env, which, &dir, &params, "", "");
        let os = OpenSips::start(&env, &c).unwrap();
        let text = os.mi("rtpproxy_show", &[]).unwrap();
        let (status, log) = os.stop();
        assert!(status.success(), "{which:?} did not exit cleanly:\n{log}");
        outputs.push(text);
    }
    println!("C module:\n{}\nours:\n{}", outputs[0], outputs[1]);
    assert_eq!(outputs[0], outputs[1]);
    let v = json(&outputs[1]);
    assert_eq!(v[0]["Set"], 0);
    assert_eq!(v[0]["Nodes"][0]["url"], format!("udp:127.0.0.1:{p1}"));
}

#[test]
fn bad_modparams_are_refused_with_a_clear_message() {
    let Some(env) = Env::get("bad_modparams_are_refused_with_a_clear_message") else {
        return;
    };
    let dir = scratch("bad");
    let ok_sock = r#"modparam("rtpproxy", "rtpproxy_sock", "udp:127.0.0.1:22222")"#;
    let cases: &[(&str, &str)] = &[
        (
            r#"modparam("rtpproxy", "rtpproxy_sock", "x == udp:127.0.0.1:22222")"#,
            "rtpproxy_sock",
        ),
        (
            r#"modparam("rtpproxy", "rtpproxy_sock", "1 == ")"#,
            "rtpproxy_sock",
        ),
        (
            r#"modparam("rtpproxy", "rtpproxy_sock", "udp:127.0.0.1:22222=heavy")"#,
            "rtpproxy_sock",
        ),
        (
            r#"modparam("rtpproxy", "rtpproxy_sock", "udp:127.0.0.1:99999")"#,
            "rtpproxy_sock",
        ),
        (
            r#"modparam("rtpproxy", "rtpproxy_timeout", "fast")"#,
            "rtpproxy_timeout",
        ),
        (
            r#"modparam("rtpproxy", "rtpproxy_retr", 0)"#,
            "rtpproxy_retr",
        ),
        (
            r#"modparam("rtpproxy", "rtpp_notify_socket", "tcp:not-an-ip:9999")"#,
            "rtpp_notify_socket",
        ),
        (
            r#"modparam("rtpproxy", "generated_sdp_port_min", 70000)"#,
            "generated_sdp_port_min",
        ),
        (
            r#"modparam("rtpproxy", "generated_sdp_media_ip", "")"#,
            "generated_sdp_media_ip",
        ),
        // printf directives in a value are logged as text, never interpreted
        (
            r#"modparam("rtpproxy", "rtpproxy_sock", "udp:127.0.0.1:22222=%s%n%x")"#,
            "=%s%n%x",
        ),
    ];
    for (line, name) in cases {
        let c = cfg(
            &env,
            Impl::Ours,
            &dir,
            &format!("{ok_sock}\n{line}"),
            "",
            "",
        );
        let os = OpenSips::start(&env, &c);
        let log = match os {
            Ok(os) => {
                let (_, log) = os.stop();
                panic!("{line} was accepted:\n{log}");
            }
            Err(log) => log,
        };
        let ours: Vec<&str> = log.lines().filter(|l| l.contains(":rtpproxy:")).collect();
        assert!(
            ours.iter().any(|l| l.contains("ERROR") && l.contains(name)),
            "{line}: no clear error naming {name}:\n{log}"
        );
        println!(
            "{line}\n  -> {}",
            ours.iter().find(|l| l.contains(name)).unwrap().trim()
        );
    }
    // Without any rtpproxy_sock (and no db_url, no rtp.io) start-up fails, as in the C module.
    let c = cfg(&env, Impl::Ours, &dir, "", "", "");
    let err = OpenSips::start(&env, &c)
        .err()
        .expect("started without rtpproxy_sock");
    assert!(err.contains("no rtpproxy set specified"), "{err}");
}

#[test]
fn mi_enable_and_show_reflect_state() {
    let Some(env) = Env::get("mi_enable_and_show_reflect_state") else {
        return;
    };
    let dir = scratch("enable");
    let params = r#"modparam("rtpproxy", "rtpproxy_sock", "udp:127.0.0.1:22222 udp:127.0.0.1:22223")
modparam("rtpproxy", "rtpproxy_sock", "5 == udp:127.0.0.1:22222")"#;
    let c = cfg(&env, Impl::Ours, &dir, params, "", "");
    let os = OpenSips::start(&env, &c).unwrap();
    os.mi("rtpproxy_enable", &["udp:127.0.0.1:22222", "0"])
        .unwrap();
    let v = json(&os.mi("rtpproxy_show", &[]).unwrap());
    assert_eq!(v[0]["Nodes"][0]["disabled"], 1);
    assert_eq!(v[0]["Nodes"][0]["recheck_ticks"], 4294967295u64);
    assert_eq!(v[1]["Nodes"][0]["disabled"], 1);
    os.mi("rtpproxy_enable", &["udp:127.0.0.1:22222", "1", "5"])
        .unwrap();
    let v = json(&os.mi("rtpproxy_show", &[]).unwrap());
    assert_eq!(v[0]["Nodes"][0]["disabled"], 1);
    assert_eq!(v[1]["Nodes"][0]["disabled"], 0);
    let err = os
        .mi("rtpproxy_enable", &["udp:127.0.0.1:1", "1"])
        .unwrap_err();
    assert!(err.contains("RTP proxy not found"), "{err}");
    let err = os.mi("rtpproxy_reload", &[]).unwrap_err();
    assert!(err.contains("Dynamic loading not enabled"), "{err}");
    let (status, log) = os.stop();
    assert!(status.success(), "{log}");
}
