//! `io::transport` against scripted fake peers, for faults a real RTPProxy will not produce:
//! silence, wrong cookies, garbage, late replies, resets, refused connects.
//!
//! Timeouts are short (100 ms). Only outcomes are asserted, never durations.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rtpproxy::core::config::{NodeSpec, Transport};
use rtpproxy::core::proto::{Command, CookieGen, ExchangeError, Reply};
use rtpproxy::io::transport::{ClientOptions, ControlClient, ReplyFault, TransportError};

use support::{node, TempDir};

const T: Duration = Duration::from_millis(100);
/// Safety net so a broken test fails instead of hanging.
const FAKE_WAIT: Duration = Duration::from_secs(5);

fn opts(retr: u32) -> ClientOptions {
    ClientOptions { timeout: T, retr }
}

fn cookies() -> CookieGen {
    CookieGen::new(4242, 17)
}

// ---- UDP fakes ----

fn udp_peer() -> (UdpSocket, NodeSpec) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(FAKE_WAIT)).unwrap();
    let spec = node(Transport::Udp, &s.local_addr().unwrap().to_string());
    (s, spec)
}

fn recv_req(s: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = [0u8; 2048];
    let (n, from) = s.recv_from(&mut buf).expect("fake peer got no datagram");
    (buf[..n].to_vec(), from)
}

fn cookie_of(d: &[u8]) -> String {
    let end = d.iter().position(|&b| b == b' ').unwrap_or(d.len());
    String::from_utf8(d[..end].to_vec()).unwrap()
}

#[test]
fn udp_silence_times_out_after_retr_identical_attempts() {
    let (peer, spec) = udp_peer();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || loop {
        let (d, _) = recv_req(&peer);
        if tx.send(d).is_err() {
            break;
        }
    });
    let mut c = ControlClient::new(&spec, opts(3));
    let mut g = cookies();
    let err = c.send(&mut g, &Command::version()).unwrap_err();
    assert!(
        matches!(err, TransportError::Timeout { attempts: 3 }),
        "{err:?}"
    );
    let got: Vec<Vec<u8>> = (0..3)
        .map(|_| rx.recv_timeout(FAKE_WAIT).unwrap())
        .collect();
    assert_eq!(got[0], b"4242_17_0 V");
    assert!(
        got.iter().all(|d| d == &got[0]),
        "retransmissions must reuse the cookie"
    );
    assert!(rx.try_recv().is_err());
    // one cookie per command, not per attempt
    assert_eq!(g.peek_seq(), 1);
}

#[test]
fn udp_retr_zero_fails_without_sending() {
    let (peer, spec) = udp_peer();
    peer.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut c = ControlClient::new(&spec, opts(0));
    let err = c.send(&mut cookies(), &Command::version()).unwrap_err();
    assert!(
        matches!(err, TransportError::Timeout { attempts: 0 }),
        "{err:?}"
    );
    let mut buf = [0u8; 64];
    assert!(
        peer.recv_from(&mut buf).is_err(),
        "nothing may be sent with retr=0"
    );
}

#[test]
fn udp_wrong_cookies_are_ignored_until_the_right_one() {
    let (peer, spec) = udp_peer();
    thread::spawn(move || {
        let (d, from) = recv_req(&peer);
        let c = cookie_of(&d);
        peer.send_to(b"99_99_99 1\n", from).unwrap();
        // shares the cookie as a prefix only: a prefix comparison would take it (D25)
        peer.send_to(format!("{c}9 1\n").as_bytes(), from).unwrap();
        peer.send_to(b"\x00\x01garbage", from).unwrap();
        peer.send_to(b"", from).unwrap();
        peer.send_to(format!("{c} 20040107\n").as_bytes(), from)
            .unwrap();
    });
    let mut c = ControlClient::new(
        &spec,
        ClientOptions {
            timeout: Duration::from_secs(2),
            retr: 1,
        },
    );
    let r = c.send(&mut cookies(), &Command::version()).unwrap();
    assert_eq!(r, Reply::Data("20040107".into()));
}

#[test]
fn udp_garbage_reply_is_a_typed_error() {
    let (peer, spec) = udp_peer();
    thread::spawn(move || {
        let (d, from) = recv_req(&peer);
        peer.send_to(format!("{} \u{1}\u{2}\n", cookie_of(&d)).as_bytes(), from)
            .unwrap();
        let (d, from) = recv_req(&peer);
        let mut long = format!("{} ", cookie_of(&d)).into_bytes();
        long.extend(std::iter::repeat_n(b'7', 2000));
        peer.send_to(&long, from).unwrap();
        let (d, from) = recv_req(&peer);
        peer.send_to(format!("{} Eoops\n", cookie_of(&d)).as_bytes(), from)
            .unwrap();
    });
    let mut c = ControlClient::new(
        &spec,
        ClientOptions {
            timeout: Duration::from_secs(2),
            retr: 1,
        },
    );
    let mut g = cookies();
    let e = c.send(&mut g, &Command::version()).unwrap_err();
    assert!(
        matches!(e, TransportError::Garbage(ReplyFault::Parse(_))),
        "{e:?}"
    );
    let e = c.send(&mut g, &Command::version()).unwrap_err();
    assert!(
        matches!(
            e,
            TransportError::Garbage(ReplyFault::Framing(ExchangeError::ReplyTooLong))
        ),
        "{e:?}"
    );
    let e = c.send(&mut g, &Command::version()).unwrap_err();
    assert!(
        matches!(e, TransportError::Garbage(ReplyFault::Parse(_))),
        "{e:?}"
    );
}

#[test]
fn udp_late_reply_is_never_taken_as_the_next_answer() {
    let (peer, spec) = udp_peer();
    let (timed_out_tx, timed_out_rx) = mpsc::channel::<()>();
    let (stale_sent_tx, stale_sent_rx) = mpsc::channel::<()>();
    thread::spawn(move || {
        let (d1, from) = recv_req(&peer);
        let c1 = cookie_of(&d1);
        // answer command 1 only after the client gave up on it
        timed_out_rx.recv().unwrap();
        peer.send_to(format!("{c1} 1111\n").as_bytes(), from)
            .unwrap();
        stale_sent_tx.send(()).unwrap();
        let (d2, from) = recv_req(&peer);
        let c2 = cookie_of(&d2);
        assert_ne!(c1, c2);
        // another late copy arrives while command 2 is waiting, then the real answer
        peer.send_to(format!("{c1} 2222\n").as_bytes(), from)
            .unwrap();
        peer.send_to(format!("{c2} 0\n").as_bytes(), from).unwrap();
    });
    let mut c = ControlClient::new(&spec, opts(1));
    let mut g = cookies();
    let e = c.send(&mut g, &Command::version()).unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
    timed_out_tx.send(()).unwrap();
    stale_sent_rx.recv_timeout(FAKE_WAIT).unwrap();
    c.set_options(ClientOptions {
        timeout: Duration::from_secs(2),
        ..c.options()
    });
    let d = Command::delete(b"cid", b"ft", None).unwrap();
    let r = c.send(&mut g, &d).unwrap();
    assert_eq!(r, Reply::Data("0".into()));
}

#[test]
fn udp_to_a_closed_port_fails() {
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spec = node(Transport::Udp, &format!("127.0.0.1:{port}"));
    let mut c = ControlClient::new(&spec, opts(2));
    // ICMP port unreachable (refused) or silence: either way, a transport error
    assert!(c.send(&mut cookies(), &Command::version()).is_err());
}

#[test]
fn udp_address_of_the_wrong_family_fails_at_first_use() {
    // `udp:` resolves IPv4 only; an IPv6 literal has no IPv4 address (no DNS involved)
    let spec = node(Transport::Udp, "::1:5");
    let mut c = ControlClient::new(&spec, opts(1));
    let e = c.send(&mut cookies(), &Command::version()).unwrap_err();
    assert!(matches!(e, TransportError::Resolve { .. }), "{e:?}");
}

#[test]
fn nonblocking_shape_retransmits_and_completes() {
    let (peer, spec) = udp_peer();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (d1, _) = recv_req(&peer);
        // ignore the first attempt, answer the retransmission
        let (d2, from) = recv_req(&peer);
        peer.send_to(format!("{} 20040107\n", cookie_of(&d2)).as_bytes(), from)
            .unwrap();
        tx.send((d1, d2)).unwrap();
    });
    let mut c = ControlClient::new(&spec, opts(5));
    let mut g = cookies();
    c.start(&mut g, &Command::version()).unwrap();
    assert!(c.wait_fd().is_some());
    assert!(matches!(
        c.start(&mut g, &Command::version()),
        Err(TransportError::Busy)
    ));
    let give_up = Instant::now() + FAKE_WAIT;
    let outcome = loop {
        assert!(Instant::now() < give_up, "no outcome");
        if let Some(r) = c.on_readable() {
            break r;
        }
        let now = Instant::now();
        if c.poll_timeout().is_some_and(|d| now >= d) {
            if let Some(r) = c.on_timeout(now) {
                break r;
            }
        }
        thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(outcome.unwrap(), b"20040107");
    let (d1, d2) = rx.recv_timeout(FAKE_WAIT).unwrap();
    assert_eq!(d1, d2);
    assert_eq!(c.poll_timeout(), None);
    assert_eq!(c.wait_fd(), None);
}

// ---- TCP fakes ----

fn tcp_peer() -> (TcpListener, NodeSpec) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let spec = node(Transport::Tcp, &l.local_addr().unwrap().to_string());
    (l, spec)
}

fn accept(l: &TcpListener) -> TcpStream {
    let (s, _) = l.accept().unwrap();
    s.set_read_timeout(Some(FAKE_WAIT)).unwrap();
    s
}

fn read_line<S: Read>(s: &mut S) -> Vec<u8> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).expect("fake peer read") == 1 {
        line.push(b[0]);
        if b[0] == b'\n' {
            break;
        }
    }
    line
}

#[test]
fn tcp_silence_times_out_and_next_command_uses_a_fresh_connection() {
    let (l, spec) = tcp_peer();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut s1 = accept(&l);
        let first = read_line(&mut s1);
        // never answer on connection 1; the next command must come on a new connection
        let mut s2 = accept(&l);
        let second = read_line(&mut s2);
        let _ = s1.write_all(b"STALE\n");
        s2.write_all(b"20040107\n").unwrap();
        tx.send((first, second)).unwrap();
        thread::sleep(FAKE_WAIT);
    });
    let mut c = ControlClient::new(&spec, opts(5));
    let mut g = cookies();
    let e = c.send(&mut g, &Command::version()).unwrap_err();
    assert!(
        matches!(e, TransportError::Timeout { attempts: 1 }),
        "{e:?}"
    );
    assert!(!c.is_connected(), "a failed stream is closed");
    c.set_options(ClientOptions {
        timeout: FAKE_WAIT,
        retr: 5,
    });
    let r = c.send(&mut g, &Command::version()).unwrap();
    assert_eq!(r.version().unwrap(), 20040107);
    let (first, second) = rx.recv_timeout(FAKE_WAIT).unwrap();
    assert_eq!(first, b"V\n");
    assert_eq!(second, b"V\n");
    assert_eq!(g.peek_seq(), 0, "no cookies on streams");
}

#[test]
fn tcp_connection_reset_then_reconnect() {
    let (l, spec) = tcp_peer();
    thread::spawn(move || {
        let mut s1 = accept(&l);
        // take one byte so the request has surely arrived, then close with the rest unread:
        // the kernel answers with RST
        let mut b = [0u8; 1];
        s1.read_exact(&mut b).unwrap();
        drop(s1);
        let mut s2 = accept(&l);
        let line = read_line(&mut s2);
        assert_eq!(line, b"VF 20081224\n");
        s2.write_all(b"1\n").unwrap();
        thread::sleep(FAKE_WAIT);
    });
    let mut c = ControlClient::new(
        &spec,
        ClientOptions {
            timeout: Duration::from_secs(2),
            retr: 1,
        },
    );
    let mut g = cookies();
    let cmd = Command::version_feature(20081224);
    let e = c.send(&mut g, &cmd).unwrap_err();
    assert!(
        matches!(e, TransportError::Io(_) | TransportError::Closed),
        "{e:?}"
    );
    assert!(!c.is_connected());
    let r = c.send(&mut g, &cmd).unwrap();
    assert!(r.feature_supported());
}

#[test]
fn tcp_peer_close_between_commands_is_noticed_before_sending() {
    let (l, spec) = tcp_peer();
    let (closed_tx, closed_rx) = mpsc::channel();
    thread::spawn(move || {
        let mut s1 = accept(&l);
        read_line(&mut s1);
        s1.write_all(b"20040107\n").unwrap();
        drop(s1);
        closed_tx.send(()).unwrap();
        let mut s2 = accept(&l);
        read_line(&mut s2);
        s2.write_all(b"0\n").unwrap();
        thread::sleep(FAKE_WAIT);
    });
    let mut c = ControlClient::new(
        &spec,
        ClientOptions {
            timeout: Duration::from_secs(2),
            retr: 1,
        },
    );
    let mut g = cookies();
    assert_eq!(
        c.send(&mut g, &Command::version())
            .unwrap()
            .version()
            .unwrap(),
        20040107
    );
    closed_rx.recv_timeout(FAKE_WAIT).unwrap();
    // give the FIN time to land (setup only; nothing is timed)
    thread::sleep(Duration::from_millis(50));
    let d = Command::delete(b"c", b"f", None).unwrap();
    assert_eq!(c.send(&mut g, &d).unwrap(), Reply::Data("0".into()));
}

#[test]
fn tcp_refused_connect_is_detected_at_connect_time() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spec = node(Transport::Tcp, &format!("127.0.0.1:{port}"));
    let mut c = ControlClient::new(&spec, opts(1));
    let e = c.connect().unwrap_err();
    match &e {
        TransportError::Connect { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused)
        }
        other => panic!("{other:?}"),
    }
    assert!(!c.is_connected());
    let e = c.send(&mut cookies(), &Command::version()).unwrap_err();
    assert!(matches!(e, TransportError::Connect { .. }), "{e:?}");
}

#[test]
fn tcp_framing_faults() {
    let (l, spec) = tcp_peer();
    thread::spawn(move || {
        // 1: bytes after the newline
        let mut s = accept(&l);
        read_line(&mut s);
        s.write_all(b"1\nX").unwrap();
        // 2 (new connection, the old one was dropped by the client): no newline within 1 KiB
        let mut s = accept(&l);
        read_line(&mut s);
        s.write_all(&[b'7'; 1500]).unwrap();
        // 3: a reply split over several writes is accumulated
        let mut s = accept(&l);
        read_line(&mut s);
        s.write_all(b"2004").unwrap();
        s.flush().unwrap();
        thread::sleep(Duration::from_millis(20));
        s.write_all(b"01").unwrap();
        thread::sleep(Duration::from_millis(20));
        s.write_all(b"07\n").unwrap();
        // 4: the relay closes mid-reply
        read_line(&mut s);
        s.write_all(b"20").unwrap();
        drop(s);
        thread::sleep(FAKE_WAIT);
    });
    let mut c = ControlClient::new(
        &spec,
        ClientOptions {
            timeout: Duration::from_secs(2),
            retr: 1,
        },
    );
    let mut g = cookies();
    let v = Command::version();
    let e = c.send(&mut g, &v).unwrap_err();
    assert!(
        matches!(
            e,
            TransportError::Garbage(ReplyFault::Framing(ExchangeError::TrailingData))
        ),
        "{e:?}"
    );
    let e = c.send(&mut g, &v).unwrap_err();
    assert!(
        matches!(
            e,
            TransportError::Garbage(ReplyFault::Framing(ExchangeError::ReplyTooLong))
        ),
        "{e:?}"
    );
    assert_eq!(c.send(&mut g, &v).unwrap().version().unwrap(), 20040107);
    let e = c.send(&mut g, &v).unwrap_err();
    assert!(
        matches!(e, TransportError::Closed | TransportError::Io(_)),
        "{e:?}"
    );
}

// ---- UNIX fakes ----

fn unix_peer(dir: &TempDir, transport: Transport) -> (UnixListener, NodeSpec) {
    let path = dir.path().join("fake.sock");
    let l = UnixListener::bind(&path).unwrap();
    (l, node(transport, path.to_str().unwrap()))
}

fn accept_unix(l: &UnixListener) -> UnixStream {
    let (s, _) = l.accept().unwrap();
    s.set_read_timeout(Some(FAKE_WAIT)).unwrap();
    s
}

#[test]
fn legacy_unix_uses_one_connection_per_command_without_newline() {
    let dir = TempDir::new("unix-ok");
    let (l, spec) = unix_peer(&dir, Transport::Unix);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for reply in [&b"20040107\n"[..], b"1\n"] {
            let mut s = accept_unix(&l);
            let mut buf = [0u8; 256];
            let n = s.read(&mut buf).unwrap();
            tx.send(buf[..n].to_vec()).unwrap();
            s.write_all(reply).unwrap();
        }
    });
    let mut c = ControlClient::new(&spec, opts(1));
    let mut g = cookies();
    assert_eq!(
        c.send(&mut g, &Command::version())
            .unwrap()
            .version()
            .unwrap(),
        20040107
    );
    assert!(!c.is_connected(), "legacy unix keeps no socket");
    assert!(c
        .send(&mut g, &Command::version_feature(20081102))
        .unwrap()
        .feature_supported());
    assert_eq!(rx.recv_timeout(FAKE_WAIT).unwrap(), b"V");
    assert_eq!(rx.recv_timeout(FAKE_WAIT).unwrap(), b"VF 20081102");
}

#[test]
fn legacy_unix_has_a_read_timeout() {
    let dir = TempDir::new("unix-silent");
    let (l, spec) = unix_peer(&dir, Transport::Unix);
    thread::spawn(move || {
        let mut s = accept_unix(&l);
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf);
        thread::sleep(FAKE_WAIT);
    });
    let mut c = ControlClient::new(&spec, opts(1));
    let e = c.send(&mut cookies(), &Command::version()).unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
}

#[test]
fn legacy_unix_reset_is_retried_once() {
    let dir = TempDir::new("unix-reset");
    let (l, spec) = unix_peer(&dir, Transport::Unix);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        // first connection: read one byte and close with the rest unread (ECONNRESET)
        let mut s = accept_unix(&l);
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        drop(s);
        let mut s = accept_unix(&l);
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).unwrap();
        tx.send(buf[..n].to_vec()).unwrap();
        s.write_all(b"1\n").unwrap();
        thread::sleep(FAKE_WAIT);
    });
    let mut c = ControlClient::new(
        &spec,
        ClientOptions {
            timeout: Duration::from_secs(2),
            retr: 1,
        },
    );
    let r = c
        .send(&mut cookies(), &Command::version_feature(20081224))
        .unwrap();
    assert!(r.feature_supported());
    assert_eq!(rx.recv_timeout(FAKE_WAIT).unwrap(), b"VF 20081224");
}

#[test]
fn legacy_unix_missing_socket_is_a_connect_error() {
    let dir = TempDir::new("unix-missing");
    let spec = node(
        Transport::Unix,
        dir.path().join("nobody.sock").to_str().unwrap(),
    );
    let mut c = ControlClient::new(&spec, opts(1));
    let e = c.send(&mut cookies(), &Command::version()).unwrap_err();
    assert!(matches!(e, TransportError::Connect { .. }), "{e:?}");
}

#[test]
fn cunix_keeps_one_connection() {
    let dir = TempDir::new("cunix");
    let (l, spec) = unix_peer(&dir, Transport::Cunix);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut s = accept_unix(&l);
        for _ in 0..3 {
            let line = read_line(&mut s);
            tx.send(line).unwrap();
            s.write_all(b"20040107\n").unwrap();
        }
        thread::sleep(FAKE_WAIT);
    });
    let mut c = ControlClient::new(
        &spec,
        ClientOptions {
            timeout: Duration::from_secs(2),
            retr: 1,
        },
    );
    let mut g = cookies();
    for _ in 0..3 {
        assert_eq!(
            c.send(&mut g, &Command::version())
                .unwrap()
                .version()
                .unwrap(),
            20040107
        );
    }
    for _ in 0..3 {
        assert_eq!(rx.recv_timeout(FAKE_WAIT).unwrap(), b"V\n");
    }
}

#[test]
fn rtpio_stream_is_kept_and_stale_lines_are_drained() {
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    theirs.set_read_timeout(Some(FAKE_WAIT)).unwrap();
    let (timed_out_tx, timed_out_rx) = mpsc::channel::<()>();
    let (stale_tx, stale_rx) = mpsc::channel::<()>();
    thread::spawn(move || {
        assert_eq!(read_line(&mut theirs), b"V\n");
        timed_out_rx.recv().unwrap();
        theirs.write_all(b"STALE\n").unwrap();
        stale_tx.send(()).unwrap();
        assert_eq!(read_line(&mut theirs), b"V\n");
        theirs.write_all(b"20040107\n").unwrap();
        thread::sleep(FAKE_WAIT);
    });
    let mut c = ControlClient::with_rtpio_stream("rtp.io:auto", ours, opts(1));
    let mut g = cookies();
    let e = c.send(&mut g, &Command::version()).unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
    assert!(c.is_connected(), "rtp.io sockets are never closed");
    timed_out_tx.send(()).unwrap();
    stale_rx.recv_timeout(FAKE_WAIT).unwrap();
    c.set_options(ClientOptions {
        timeout: Duration::from_secs(2),
        retr: 1,
    });
    assert_eq!(
        c.send(&mut g, &Command::version())
            .unwrap()
            .version()
            .unwrap(),
        20040107
    );
}
