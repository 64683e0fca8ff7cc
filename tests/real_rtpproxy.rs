//! `io::transport` + `core::proto` against a REAL RTPProxy engine on loopback.
//!
//! The engine is PyPI `rtp.io` (the RTPProxy engine embedded in a Python module, started by
//! `tests/support/rtpio_engine.py`), or the daemon named by `RTPPROXY_BIN`. Without either,
//! every test prints one `SKIPPED:` line and passes.

mod support;

use std::time::Duration;

use rtpproxy::core::config::Transport;
use rtpproxy::core::proto::{Capabilities, Command, CookieGen, ProbeOutcome, Reply};
use rtpproxy::io::transport::{ClientOptions, ControlClient};

use support::Engine;

fn opts() -> ClientOptions {
    // generous: the engine may be slow on a loaded CI box; faults are tested elsewhere
    ClientOptions {
        timeout: Duration::from_millis(1000),
        retr: 3,
    }
}

fn cookies() -> CookieGen {
    CookieGen::new(std::process::id(), 4321)
}

#[test]
fn capability_probe_over_every_transport() {
    let Some(engine) = Engine::start() else {
        return;
    };
    let mut g = cookies();
    for (name, spec) in engine.nodes() {
        let mut c = ControlClient::new(&spec, opts());
        let (outcome, lost) = c.probe(&mut g);
        let ProbeOutcome::Enabled(caps) = outcome else {
            panic!("{name}: probe failed: {outcome:?}");
        };
        assert_eq!(lost, 0, "{name}: optional VF lost");
        // long-standing features of every 3.x engine
        for cap in [
            Capabilities::CODECS,
            Capabilities::STATS,
            Capabilities::REPACK,
            Capabilities::RECORD,
        ] {
            assert!(caps.contains(cap), "{name}: {caps:?} lacks {cap:?}");
        }
        // 20170313 is a fork-only feature; upstream RTPProxy answers 0
        assert!(!caps.contains(Capabilities::TTL_CHANGE), "{name}: {caps:?}");
        eprintln!("{name} ({}): {caps:?}", engine.kind);
    }
}

#[test]
fn version_and_unknown_feature() {
    let Some(engine) = Engine::start() else {
        return;
    };
    let mut g = cookies();
    for (name, spec) in engine.nodes() {
        let mut c = ControlClient::new(&spec, opts());
        let v = c
            .send(&mut g, &Command::version())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(v.version().unwrap(), 20040107, "{name}");
        let f = c.send(&mut g, &Command::version_feature(20991231)).unwrap();
        assert!(!f.feature_supported(), "{name}: {f:?}");
    }
}

#[test]
fn session_update_lookup_delete_over_every_transport() {
    let Some(engine) = Engine::start() else {
        return;
    };
    let mut g = cookies();
    for (name, spec) in engine.nodes() {
        let mut c = ControlClient::new(&spec, opts());
        let call_id = format!("real-{name}-{}@test", std::process::id());

        // U: the caller's side; the relay allocates a port on 127.0.0.1 (-l)
        let mut u = Command::builder(b"Uc0,8").unwrap();
        u.call_id(call_id.as_bytes())
            .unwrap()
            .arg(b"127.0.0.1")
            .unwrap()
            .arg(b"5000")
            .unwrap();
        u.indexed_tag(b"ftag1", 1).unwrap();
        let offer = c
            .send(&mut g, &u.finish())
            .unwrap_or_else(|e| panic!("{name}: U: {e}"));
        let offer = offer
            .media()
            .unwrap_or_else(|e| panic!("{name}: U reply {offer:?}: {e}"));
        assert_ne!(offer.port, 0, "{name}");
        assert_eq!(offer.addr, Some("127.0.0.1".parse().unwrap()), "{name}");
        assert!(!offer.ipv6);

        // L: the callee's side of the same session
        let mut l = Command::builder(b"Lc0").unwrap();
        l.call_id(call_id.as_bytes())
            .unwrap()
            .arg(b"127.0.0.1")
            .unwrap()
            .arg(b"6000")
            .unwrap();
        l.indexed_tag(b"ftag1", 1)
            .unwrap()
            .indexed_tag(b"ttag1", 1)
            .unwrap();
        let answer = c.send(&mut g, &l.finish()).unwrap().media().unwrap();
        assert_ne!(answer.port, 0, "{name}");
        assert_ne!(
            answer.port, offer.port,
            "{name}: both sides got the same port"
        );

        // L for a session that does not exist: port 0
        let mut l = Command::builder(b"L").unwrap();
        l.call_id(format!("nosuch-{call_id}").as_bytes()).unwrap();
        l.arg(b"127.0.0.1").unwrap().arg(b"6000").unwrap();
        l.indexed_tag(b"a", 1)
            .unwrap()
            .indexed_tag(b"b", 1)
            .unwrap();
        assert_eq!(
            c.send(&mut g, &l.finish()).unwrap().media().unwrap().port,
            0,
            "{name}"
        );

        // D deletes it; a second D finds nothing and is answered with an error code
        let d = Command::delete(call_id.as_bytes(), b"ftag1", Some(b"ttag1")).unwrap();
        let r = c.send(&mut g, &d).unwrap();
        assert_eq!(r.number().unwrap(), 0, "{name}: {r:?}");
        let r = c.send(&mut g, &d).unwrap();
        assert!(matches!(r, Reply::Error(_)), "{name}: second D gave {r:?}");
    }
}

#[test]
fn repeated_cookie_gets_the_cached_reply() {
    let Some(engine) = Engine::start() else {
        return;
    };
    let mut nodes = vec![
        engine
            .nodes()
            .into_iter()
            .find(|(n, _)| *n == "udp")
            .unwrap()
            .1,
    ];
    nodes.extend(
        engine
            .nodes()
            .into_iter()
            .filter(|(_, s)| s.transport == Transport::Udp6)
            .map(|(_, s)| s),
    );
    for spec in nodes {
        let mut c = ControlClient::new(&spec, opts());
        // two generators in the same state produce the same cookie
        let mut first = CookieGen::with_seq(std::process::id(), 77, 1000);
        let mut again = first.clone();

        let v = c.send(&mut first, &Command::version()).unwrap();
        assert_eq!(v.version().unwrap(), 20040107);
        // a different command under the same cookie: the relay answers from its cache
        let cached = c
            .send(&mut again, &Command::version_feature(20991231))
            .unwrap();
        assert_eq!(cached, v, "{}: cookie cache not hit", spec.url);

        // a fresh cookie gets a real answer
        let fresh = c
            .send(&mut first, &Command::version_feature(20991231))
            .unwrap();
        assert!(!fresh.feature_supported());
        assert_ne!(fresh, v);

        // delete twice under one cookie: the second is the cached success, not "not found"
        let call_id = format!("cache-{:?}-{}", spec.transport, std::process::id());
        let mut u = Command::builder(b"U").unwrap();
        u.call_id(call_id.as_bytes())
            .unwrap()
            .arg(b"127.0.0.1")
            .unwrap()
            .arg(b"7000")
            .unwrap();
        u.indexed_tag(b"f", 1).unwrap();
        c.send(&mut first, &u.finish()).unwrap().media().unwrap();
        let d = Command::delete(call_id.as_bytes(), b"f", None).unwrap();
        let mut same = first.clone();
        let r1 = c.send(&mut first, &d).unwrap();
        let r2 = c.send(&mut same, &d).unwrap();
        assert_eq!(r1.number().unwrap(), 0);
        assert_eq!(r2, r1);
        let r3 = c.send(&mut first, &d).unwrap();
        assert!(matches!(r3, Reply::Error(_)), "{r3:?}");
    }
}

#[test]
fn persistent_streams_reuse_one_connection() {
    let Some(engine) = Engine::start() else {
        return;
    };
    let mut g = cookies();
    for (name, spec) in engine.nodes() {
        if !matches!(
            spec.transport,
            Transport::Tcp | Transport::Tcp6 | Transport::Cunix
        ) {
            continue;
        }
        let mut c = ControlClient::new(&spec, opts());
        c.connect().unwrap();
        for _ in 0..20 {
            assert_eq!(
                c.send(&mut g, &Command::version())
                    .unwrap()
                    .version()
                    .unwrap(),
                20040107,
                "{name}"
            );
            assert!(c.is_connected());
        }
        // stream transports do not consume cookies
        assert_eq!(g.peek_seq(), 0);
    }
}
