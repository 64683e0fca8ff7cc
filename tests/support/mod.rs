//! Shared helpers for the I/O tests: temp dirs, free ports, node specs, a child-process guard
//! and a launcher for a real RTPProxy engine (PyPI `rtp.io`, or `RTPPROXY_BIN`).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command as Proc, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use rtpproxy::core::config::{parse_node_list, NodeSpec, Transport};

/// The node spec the config parser produces for `<prefix><address>`.
pub fn node(transport: Transport, address: &str) -> NodeSpec {
    let url = format!("{}{address}", transport.prefix());
    let mut nodes = parse_node_list(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
    let n = nodes.remove(0);
    assert_eq!(n.transport, transport, "{url}");
    n
}

/// A directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "rtpp-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port that is free for both TCP and UDP on `ip` right now.
pub fn free_port(ip: &str) -> u16 {
    for _ in 0..100 {
        let t = TcpListener::bind((ip, 0)).expect("bind tcp");
        let port = t.local_addr().unwrap().port();
        if UdpSocket::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on {ip}");
}

pub fn ipv6_loopback_works() -> bool {
    UdpSocket::bind("[::1]:0").is_ok() && TcpListener::bind("[::1]:0").is_ok()
}

/// Kills and reaps a child process on drop (and closes its stdin first).
pub struct ChildGuard {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl ChildGuard {
    pub fn new(mut child: Child) -> Self {
        let stdin = child.stdin.take();
        Self { child, stdin }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A readiness check of one control socket.
type ReadyCheck<'a> = Box<dyn Fn() -> bool + 'a>;

/// Control sockets of one running engine.
pub struct Engine {
    pub udp: String,
    pub udp6: Option<String>,
    pub tcp: String,
    pub tcp6: Option<String>,
    pub unix: PathBuf,
    pub cunix: PathBuf,
    /// `rtp.io` or the `RTPPROXY_BIN` path.
    pub kind: String,
    _guard: ChildGuard,
    _dir: TempDir,
}

impl Engine {
    /// One node spec per control socket, with a name for messages.
    pub fn nodes(&self) -> Vec<(&'static str, NodeSpec)> {
        let mut v = vec![
            ("udp", node(Transport::Udp, &self.udp)),
            ("tcp", node(Transport::Tcp, &self.tcp)),
            ("unix", node(Transport::Unix, self.unix.to_str().unwrap())),
            (
                "cunix",
                node(Transport::Cunix, self.cunix.to_str().unwrap()),
            ),
        ];
        if let Some(a) = &self.udp6 {
            v.push(("udp6", node(Transport::Udp6, a)));
        }
        if let Some(a) = &self.tcp6 {
            v.push(("tcp6", node(Transport::Tcp6, a)));
        }
        v
    }

    /// Starts a real engine serving UDP, TCP, UNIX and CUNIX control sockets (and UDP6/TCP6
    /// when IPv6 loopback works), or prints one loud SKIPPED line and returns `None` when no
    /// engine is available.
    pub fn start() -> Option<Self> {
        let dir = TempDir::new("engine");
        let udp = format!("127.0.0.1:{}", free_port("127.0.0.1"));
        let tcp = format!("127.0.0.1:{}", free_port("127.0.0.1"));
        let (udp6, tcp6) = if ipv6_loopback_works() {
            (
                Some(format!("::1:{}", free_port("::1"))),
                Some(format!("::1:{}", free_port("::1"))),
            )
        } else {
            (None, None)
        };
        let unix = dir.path().join("ctl.sock");
        let cunix = dir.path().join("cctl.sock");
        let mut specs = vec![
            format!("udp:{udp}"),
            format!("tcp:{tcp}"),
            format!("unix:{}", unix.display()),
            format!("cunix:{}", cunix.display()),
        ];
        if let (Some(u6), Some(t6)) = (&udp6, &tcp6) {
            specs.push(format!("udp6:{u6}"));
            specs.push(format!("tcp6:{t6}"));
        }
        let log = std::fs::File::create(dir.path().join("engine.log")).expect("log file");

        let (guard, kind) = if let Some(bin) = std::env::var_os("RTPPROXY_BIN") {
            let mut cmd = Proc::new(&bin);
            cmd.current_dir(dir.path()); // the daemon writes an accounting file there
            cmd.arg("-f").arg("-F");
            for s in &specs {
                cmd.arg("-s").arg(s);
            }
            cmd.arg("-l")
                .arg("127.0.0.1")
                .arg("-p")
                .arg(dir.path().join("rtpproxy.pid"));
            cmd.stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            let child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run RTPPROXY_BIN {bin:?}: {e}"));
            (ChildGuard::new(child), bin.to_string_lossy().into_owned())
        } else {
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/rtpio_engine.py");
            let child = Proc::new("python3")
                .arg(&script)
                .args(&specs)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(log)
                .spawn();
            let Ok(mut child) = child else {
                skip("python3 not found");
                return None;
            };
            let mut out = BufReader::new(child.stdout.take().unwrap());
            let guard = ChildGuard::new(child);
            let mut line = String::new();
            let _ = out.read_line(&mut line);
            if line.starts_with("NO-RTPIO") || line.is_empty() {
                skip(line.trim());
                return None;
            }
            assert!(
                line.starts_with("READY"),
                "rtp.io engine did not start: {line}"
            );
            // keep reading stdout in the background so the child never blocks on it
            std::thread::spawn(move || {
                let mut sink = Vec::new();
                let _ = out.read_to_end(&mut sink);
            });
            (guard, "rtp.io".to_owned())
        };

        let engine = Self {
            udp,
            udp6,
            tcp,
            tcp6,
            unix,
            cunix,
            kind,
            _guard: guard,
            _dir: dir,
        };
        if let Err(what) = engine.wait_ready(Duration::from_secs(15)) {
            let log =
                std::fs::read_to_string(engine._dir.path().join("engine.log")).unwrap_or_default();
            panic!(
                "engine ({}) not answering on {what}; log:\n{log}",
                engine.kind
            );
        }
        Some(engine)
    }

    /// Sends `V` on every socket with plain std sockets until each one answers.
    fn wait_ready(&self, max: Duration) -> Result<(), String> {
        let until = Instant::now() + max;
        let mut todo: Vec<(&str, ReadyCheck<'_>)> = vec![
            ("udp", Box::new(|| udp_v(&self.udp))),
            ("tcp", Box::new(|| tcp_v(&self.tcp))),
            ("unix", Box::new(|| unix_v(&self.unix, b"V"))),
            ("cunix", Box::new(|| unix_v(&self.cunix, b"V\n"))),
        ];
        if let Some(a) = &self.udp6 {
            todo.push(("udp6", Box::new(move || udp_v(a))));
        }
        if let Some(a) = &self.tcp6 {
            let addr = a
                .rsplit_once(':')
                .map(|(h, p)| format!("[{h}]:{p}"))
                .unwrap();
            todo.push(("tcp6", Box::new(move || tcp_v(&addr))));
        }
        while let Some((name, check)) = todo.first() {
            if check() {
                drop(todo.remove(0));
            } else if Instant::now() > until {
                return Err((*name).to_owned());
            } else {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }
}

fn udp_v(addr: &str) -> bool {
    let target = match addr.rsplit_once(':') {
        Some((h, p)) if h.contains(':') => format!("[{h}]:{p}"),
        _ => addr.to_owned(),
    };
    let local = if target.starts_with('[') {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    let Ok(s) = UdpSocket::bind(local) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    if s.send_to(b"ready_0_0 V", &target).is_err() {
        return false;
    }
    let mut buf = [0u8; 256];
    matches!(s.recv(&mut buf), Ok(n) if buf[..n].starts_with(b"ready_0_0 20040107"))
}

fn tcp_v(addr: &str) -> bool {
    let Ok(s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    stream_v(s, b"V\n")
}

fn unix_v(path: &Path, req: &[u8]) -> bool {
    let Ok(s) = UnixStream::connect(path) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    stream_v(s, req)
}

fn stream_v<S: Read + Write>(mut s: S, req: &[u8]) -> bool {
    if s.write_all(req).is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"20040107"))
}

/// Prints the skip line once per test binary, straight to the process' stderr so that the
/// test harness' output capture does not hide it. Under `CI=true` it panics instead: CI must
/// not count an untested path as passed.
fn skip(why: &str) {
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true" && v != "1"),
        "no RTPProxy engine under CI=true (pip install rtp.io or set RTPPROXY_BIN) [{why}]"
    );
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: no RTPProxy engine (pip install rtp.io or set RTPPROXY_BIN) [{why}]"
        );
    });
}
