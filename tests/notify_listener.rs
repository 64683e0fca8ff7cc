//! The notification listener (`io::listener`) on its own: scripted peers for partial and
//! coalesced reads, garbage, floods, over-long lines, unknown peers and descriptor leaks, the
//! IPC wake pipe, UNIX sockets, and a real RTPProxy (`RTPPROXY_BIN`) sending real timeout
//! notifications, restarted in the middle.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rtpproxy::core::notify::{DialogId, Notification};
use rtpproxy::io::listener::{self, ListenAddr, ListenerOptions, ListenerStats, NotifySink, Peer};

type Log = Arc<Mutex<Vec<Notification>>>;

/// The tests of this file run one at a time: one of them counts the descriptors of the
/// whole test process.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

struct Recorder {
    log: Log,
    allowed: Vec<IpAddr>,
    wake: Option<OwnedFd>,
    woken: Arc<Mutex<Vec<u8>>>,
    wake_reader: Option<std::fs::File>,
}

impl NotifySink for Recorder {
    fn allow_peer(&mut self, ip: IpAddr) -> bool {
        self.allowed.contains(&ip)
    }
    fn notify(&mut self, n: Notification, _peer: &Peer) {
        self.log.lock().unwrap().push(n);
    }
    fn take_wake_fd(&mut self) -> Option<OwnedFd> {
        self.wake.take()
    }
    fn on_wake(&mut self) -> bool {
        // The reader is another descriptor of the same (now non-blocking) pipe.
        let Some(r) = self.wake_reader.as_mut() else {
            return true;
        };
        let mut buf = [0u8; 2];
        match r.read(&mut buf) {
            Ok(n) if n > 0 => {
                self.woken.lock().unwrap().extend_from_slice(&buf[..n]);
                false
            }
            _ => true,
        }
    }
}

struct Running {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
    log: Log,
    stats: Arc<ListenerStats>,
    addr: Option<SocketAddr>,
    woken: Arc<Mutex<Vec<u8>>>,
}

impl Running {
    fn start(addr: ListenAddr, allowed: Vec<IpAddr>, opts: ListenerOptions) -> Self {
        Self::start_with_wake(addr, allowed, opts, None)
    }

    fn start_with_wake(
        addr: ListenAddr,
        allowed: Vec<IpAddr>,
        opts: ListenerOptions,
        wake: Option<(OwnedFd, std::fs::File)>,
    ) -> Self {
        let bound = listener::bind(&addr).expect("bind");
        let local = bound.local_addr();
        let stop = Arc::new(AtomicBool::new(false));
        let log: Log = Arc::default();
        let stats = Arc::new(ListenerStats::default());
        let woken = Arc::new(Mutex::new(Vec::new()));
        let (wake, wake_reader) = match wake {
            Some((fd, r)) => (Some(fd), Some(r)),
            None => (None, None),
        };
        let sink = Recorder {
            log: log.clone(),
            allowed,
            wake,
            woken: woken.clone(),
            wake_reader,
        };
        let (stop2, stats2) = (stop.clone(), stats.clone());
        let thread = std::thread::spawn(move || {
            listener::run(bound, sink, opts, stats2, async move {
                while !stop2.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        });
        Self {
            stop,
            thread: Some(thread),
            log,
            stats,
            addr: local,
            woken,
        }
    }

    fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr.unwrap()).unwrap()
    }

    /// Waits (up to a generous limit) until `cond` holds.
    fn wait(&self, what: &str, cond: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn notifications(&self) -> Vec<Notification> {
        self.log.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    fn stat(&self, f: impl Fn(&ListenerStats) -> &std::sync::atomic::AtomicU64) -> u64 {
        ListenerStats::get(f(&self.stats))
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap().unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn localhost() -> Vec<IpAddr> {
    vec!["127.0.0.1".parse().unwrap()]
}

fn tcp_any() -> ListenAddr {
    ListenAddr::Tcp("127.0.0.1:0".parse().unwrap())
}

fn timeout(h_entry: u32, h_id: u32) -> Notification {
    Notification::Timeout(DialogId { h_entry, h_id })
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn partial_and_coalesced_reads() {
    let _serial = serial();
    let l = Running::start(tcp_any(), localhost(), ListenerOptions::default());
    let mut c = l.connect();
    // Split inside a line, several lines in one write, the tail completed later.
    for chunk in [&b"T1."[..], b"2\nDd3.4 5 10 80", b"0 1\nI\nT5", b".6\n"] {
        c.write_all(chunk).unwrap();
        c.flush().unwrap();
        std::thread::sleep(Duration::from_millis(30));
    }
    l.wait("3 notifications", |l| l.count() == 3);
    let got = l.notifications();
    assert_eq!(got[0], timeout(1, 2));
    let Notification::Dtmf(d) = &got[1] else {
        panic!("{got:?}")
    };
    assert_eq!(
        (d.digit, d.volume, d.duration, d.stream),
        (b'5', 10, 800, 1)
    );
    assert_eq!(d.id, b"3.4");
    assert!(!d.is_callid);
    assert_eq!(got[2], timeout(5, 6));
    l.stop();
}

#[test]
fn bad_lines_are_skipped_and_the_connection_stays_open() {
    let _serial = serial();
    let l = Running::start(tcp_any(), localhost(), ListenerOptions::default());
    let mut c = l.connect();
    c.write_all(b"garbage\nTnot-a-did\n\nDd\n\x01\x02\nT1.1\n")
        .unwrap();
    l.wait("first notification", |l| l.count() == 1);
    // The same connection still works after five bad lines.
    c.write_all(b"T2.2\n").unwrap();
    l.wait("second notification", |l| l.count() == 2);
    assert_eq!(l.notifications(), vec![timeout(1, 1), timeout(2, 2)]);
    assert_eq!(l.stat(|s| &s.malformed), 5);
    assert_eq!(l.stat(|s| &s.open), 1);
    l.stop();
}

#[test]
fn over_long_lines_are_skipped_without_unbounded_buffering() {
    let _serial = serial();
    let opts = ListenerOptions {
        max_line: 64,
        ..Default::default()
    };
    let l = Running::start(tcp_any(), localhost(), opts);
    let mut c = l.connect();
    // 1 MiB without a newline, then a good line on the same connection.
    let junk = vec![b'x'; 1 << 20];
    c.write_all(&junk).unwrap();
    c.write_all(b"\nT7.7\n").unwrap();
    l.wait("the line after the junk", |l| l.count() == 1);
    assert_eq!(l.notifications(), vec![timeout(7, 7)]);
    assert_eq!(l.stat(|s| &s.malformed), 1);
    l.stop();
}

#[test]
fn many_concurrent_connections() {
    let _serial = serial();
    let l = Running::start(tcp_any(), localhost(), ListenerOptions::default());
    let peers: usize = 50;
    let lines: usize = 20;
    let handles: Vec<_> = (0..peers)
        .map(|p| {
            let addr = l.addr.unwrap();
            std::thread::spawn(move || {
                let mut c = TcpStream::connect(addr).unwrap();
                for i in 0..lines {
                    // Odd peers write byte by byte, even ones a line at a time.
                    let did = DialogId {
                        h_entry: p as u32 + 1,
                        h_id: i as u32 + 1,
                    };
                    let line = format!("T{did}\n");
                    if p % 2 == 1 {
                        for b in line.as_bytes() {
                            c.write_all(&[*b]).unwrap();
                        }
                    } else {
                        c.write_all(line.as_bytes()).unwrap();
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    l.wait("every line", |l| l.count() == peers * lines);
    let mut got: Vec<(u32, u32)> = l
        .notifications()
        .into_iter()
        .map(|n| match n {
            Notification::Timeout(d) => (d.h_entry, d.h_id),
            other => panic!("{other:?}"),
        })
        .collect();
    got.sort_unstable();
    got.dedup();
    assert_eq!(got.len(), peers * lines, "each line exactly once");
    l.wait("connections closed", |l| l.stat(|s| &s.open) == 0);
    l.stop();
}

#[test]
fn unknown_peers_are_refused() {
    let _serial = serial();
    // Only 127.0.0.2 may talk: a connection from 127.0.0.1 is closed at once.
    let l = Running::start(
        tcp_any(),
        vec!["127.0.0.2".parse().unwrap()],
        ListenerOptions::default(),
    );
    let mut c = l.connect();
    let _ = c.write_all(b"T1.1\n");
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 8];
    let n = c.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the listener closes the connection");
    l.wait("refusal counted", |l| l.stat(|s| &s.refused) == 1);
    assert_eq!(l.count(), 0);
    l.stop();
}

#[test]
fn connection_limit() {
    let _serial = serial();
    let opts = ListenerOptions {
        max_connections: 3,
        ..Default::default()
    };
    let l = Running::start(tcp_any(), localhost(), opts);
    let held: Vec<TcpStream> = (0..3).map(|_| l.connect()).collect();
    l.wait("3 open", |l| l.stat(|s| &s.open) == 3);
    let mut extra = l.connect();
    extra
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(
        extra.read(&mut buf).unwrap_or(0),
        0,
        "4th connection closed"
    );
    drop(held);
    l.wait("all closed", |l| l.stat(|s| &s.open) == 0);
    // Room again.
    let mut c = l.connect();
    c.write_all(b"T3.3\n").unwrap();
    l.wait("served after the limit", |l| l.count() == 1);
    l.stop();
}

/// Acceptance 5 in miniature: 100 connections opened and dropped (some mid-line), 1,000
/// garbage lines, then real notifications still served and no descriptor left behind.
#[test]
fn abuse_leaves_no_descriptors_and_the_listener_serving() {
    let _serial = serial();
    let l = Running::start(tcp_any(), localhost(), ListenerOptions::default());
    // Let the runtime settle (its own descriptors exist from the start).
    let mut c = l.connect();
    c.write_all(b"T1.1\n").unwrap();
    l.wait("warm-up", |l| l.count() == 1);
    drop(c);
    l.wait("warm-up closed", |l| l.stat(|s| &s.open) == 0);
    let before = open_fds();

    for i in 0..100 {
        let mut c = l.connect();
        if i % 3 == 0 {
            let _ = c.write_all(b"T12.3");
        }
    }
    let mut g = l.connect();
    for i in 0..1000 {
        let line = match i % 4 {
            0 => "garbage garbage\n".to_string(),
            1 => format!("T{i}\n"),
            2 => "D\n".to_string(),
            _ => format!("Z{}\n", "y".repeat(i % 300)),
        };
        g.write_all(line.as_bytes()).unwrap();
    }
    g.write_all(b"T2.2\n").unwrap();
    l.wait("the good line after the garbage", |l| l.count() == 2);
    drop(g);
    l.wait("every connection closed", |l| l.stat(|s| &s.open) == 0);
    let after = open_fds();
    assert_eq!(l.stat(|s| &s.malformed), 1000);
    assert_eq!(l.stat(|s| &s.accepted), 102);
    assert_eq!(before, after, "descriptors before/after the abuse");
    let mut c = l.connect();
    c.write_all(b"T3.3\n").unwrap();
    l.wait("still serving", |l| l.count() == 3);
    println!("listener abuse: fds before={before} after={after}; 1000 bad lines skipped");
    l.stop();
}

#[test]
fn eof_with_a_partial_line_drops_it() {
    let _serial = serial();
    let l = Running::start(tcp_any(), localhost(), ListenerOptions::default());
    let mut c = l.connect();
    c.write_all(b"T4.4\nT5.").unwrap();
    drop(c);
    l.wait("closed", |l| {
        l.stat(|s| &s.accepted) == 1 && l.stat(|s| &s.open) == 0
    });
    assert_eq!(l.notifications(), vec![timeout(4, 4)]);
    l.stop();
}

#[test]
fn unix_socket_listener() {
    let _serial = serial();
    let dir = std::env::temp_dir().join(format!("rtpp-notify-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let l = Running::start(
        ListenAddr::Unix(path.clone()),
        Vec::new(),
        ListenerOptions::default(),
    );
    // UNIX peers are trusted whatever the allowed list says.
    let mut c = UnixStream::connect(&path).unwrap();
    c.write_all(b"Dcabc@host * 3 160 0\nI\n").unwrap();
    l.wait("one DTMF", |l| l.count() == 1);
    let Notification::Dtmf(d) = &l.notifications()[0] else {
        panic!()
    };
    assert!(d.is_callid);
    assert_eq!(d.id, b"abc@host");
    assert_eq!(d.digit, b'*');
    drop(c);
    l.stop();
    assert!(
        !path.exists(),
        "socket file removed when the listener stops"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_wake_pipe_is_served_between_notifications() {
    let _serial = serial();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let (tx, rx) = rt
        .block_on(async { tokio::net::unix::pipe::pipe() })
        .unwrap();
    let (tx, rx) = (
        tx.into_blocking_fd().unwrap(),
        rx.into_blocking_fd().unwrap(),
    );
    let reader = std::fs::File::from(rx.try_clone().unwrap());
    let mut writer = std::fs::File::from(tx);
    drop(rt);
    let l = Running::start_with_wake(
        tcp_any(),
        localhost(),
        ListenerOptions::default(),
        Some((rx, reader)),
    );
    writer.write_all(b"abcdefg").unwrap();
    l.wait("the pipe drained", |l| l.woken.lock().unwrap().len() == 7);
    let mut c = l.connect();
    c.write_all(b"T1.1\n").unwrap();
    l.wait("a notification", |l| l.count() == 1);
    writer.write_all(b"hij").unwrap();
    l.wait("drained again", |l| l.woken.lock().unwrap().len() == 10);
    assert_eq!(&*l.woken.lock().unwrap(), b"abcdefghij");
    l.stop();
}

// ---- a real RTPProxy ------------------------------------------------------------------------

struct Rtpp {
    child: Child,
}

impl Rtpp {
    fn start(bin: &str, ctl: u16, notify: &str) -> Self {
        let pid = std::env::temp_dir().join(format!("rtpp-notify-{ctl}.pid"));
        let child = Command::new(bin)
            .args(["-f", "-F", "-l", "127.0.0.1", "-T", "2", "-W", "2"])
            .arg("-s")
            .arg(format!("udp:127.0.0.1:{ctl}"))
            .arg("-n")
            .arg(notify)
            .arg("-p")
            .arg(pid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rtpproxy");
        let me = Self { child };
        // Wait until it answers V.
        let deadline = Instant::now() + Duration::from_secs(10);
        while control(ctl, "V").is_none() {
            assert!(Instant::now() < deadline, "rtpproxy did not come up");
        }
        me
    }
}

impl Drop for Rtpp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn control(port: u16, cmd: &str) -> Option<String> {
    // RTPProxy answers a repeated cookie from its cache: every command gets its own.
    static COOKIE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let cookie = COOKIE.fetch_add(1, Ordering::Relaxed);
    let s = UdpSocket::bind("127.0.0.1:0").ok()?;
    s.set_read_timeout(Some(Duration::from_millis(300))).ok()?;
    s.send_to(format!("c{cookie} {cmd}").as_bytes(), ("127.0.0.1", port))
        .ok()?;
    let mut buf = [0u8; 512];
    let n = s.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A session with notify tag `T<did>` that never sees media times out after `-W 2`, and
/// RTPProxy connects to the listener and writes `T<did>\n`. Then RTPProxy is restarted and
/// a second session's timeout reaches the same listener over a new connection.
#[test]
fn real_rtpproxy_timeout_notifications_and_relay_restart() {
    let _serial = serial();
    let Some(bin) = std::env::var_os("RTPPROXY_BIN").filter(|v| !v.is_empty()) else {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true" && v != "1"),
            "real_rtpproxy_timeout_notifications cannot run under CI=true: RTPPROXY_BIN is not set"
        );
        println!("SKIPPED real_rtpproxy_timeout_notifications: RTPPROXY_BIN is not set");
        return;
    };
    let bin = PathBuf::from(bin);
    let bin = bin.to_str().unwrap();
    let l = Running::start(tcp_any(), localhost(), ListenerOptions::default());
    let target = format!("tcp:{}", l.addr.unwrap());
    let ctl = free_udp_port();

    for (round, did) in [
        (
            1,
            DialogId {
                h_entry: 0x1a2,
                h_id: 7,
            },
        ),
        (
            2,
            DialogId {
                h_entry: 3,
                h_id: 0xbeef,
            },
        ),
    ] {
        let relay = Rtpp::start(bin, ctl, &target);
        let started = Instant::now();
        let reply = control(
            ctl,
            &format!("U call-{round}@test 127.0.0.1 40000 ft{round};1 {target} T{did}"),
        )
        .expect("U reply");
        assert!(!reply.contains(" E"), "U answered {reply:?}");
        l.wait("the timeout notification", |l| l.count() == round);
        println!(
            "round {round}: notification T{did} after {:.1}s (relay -W 2)",
            started.elapsed().as_secs_f64()
        );
        assert_eq!(l.notifications()[round - 1], Notification::Timeout(did));
        drop(relay); // kill: its connection to the listener ends
        l.wait("relay connection closed", |l| l.stat(|s| &s.open) == 0);
    }
    assert_eq!(l.stat(|s| &s.malformed), 0);
    l.stop();
}
