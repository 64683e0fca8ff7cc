//! Harness for the end-to-end tests: a real OpenSIPS (`OPENSIPS_BIN`) loading our module,
//! optionally the C module of the same build for comparison, opensips-cli for MI, and the real
//! RTPProxy engine from PyPI `rtp.io` (or `RTPPROXY_BIN`) as the relay.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The OpenSIPS release the module was built for (from `opensips -V` by build.rs).
pub const HOST_RELEASE: &str = env!("RTPPROXY_HOST_RELEASE");

/// An MI command name as the release built for registers it. 4.0 registers every MI command
/// under its module (`core:ps`, `dialog:list`, `rtpproxy:show`, ...) and opensips-cli only
/// accepts those names; tests use the 3.6 names.
pub fn mi_name(cmd: &str) -> String {
    if HOST_RELEASE.starts_with("3.") || cmd.contains(':') {
        return cmd.to_string();
    }
    let renamed = [
        ("rtpproxy_show", "rtpproxy:show"),
        ("rtpproxy_enable", "rtpproxy:enable"),
        ("rtpproxy_reload", "rtpproxy:reload"),
        ("rtpproxy_ping", "rtpproxy:ping"),
        ("rtpproxy_drain", "rtpproxy:drain"),
        ("dlg_list", "dialog:list"),
        ("clusterer_list_cap", "clusterer:list_cap"),
        ("get_statistics", "statistics:get"),
        ("dlg_list_ctx", "dialog:list_ctx"),
        ("dbt_reload", "db_text:reload"),
        ("event_subscribe", "evi:subscribe"),
    ];
    match renamed.iter().find(|(old, _)| *old == cmd) {
        Some((_, new)) => new.to_string(),
        None => format!("core:{cmd}"),
    }
}

/// Whether this run is CI (`CI=true`): an end-to-end test that cannot run must fail there
/// rather than pass with a SKIPPED line.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Reports that `test` cannot run because of `why`: prints a loud `SKIPPED` line, or under
/// `CI=true` panics (so that CI never counts an untested path as passed). The caller returns
/// after it.
#[track_caller]
pub fn skip(test: &str, why: &str) {
    assert!(
        !ci(),
        "{test} cannot run under CI=true (it would have been skipped): {why}"
    );
    println!("SKIPPED {test}: {why}");
}

/// Calls `probe` until it returns `Some`, every 50 ms, for at most `max`; `None` when the
/// deadline passed first. For "wait until the state is reached, then assert": the assertion
/// then reports what the last probe saw.
pub fn poll_until<T>(max: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + max;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `cond` until it holds or `max` passed; returns whether it held.
pub fn wait_for(max: Duration, mut cond: impl FnMut() -> bool) -> bool {
    poll_until(max, || cond().then_some(())).is_some()
}

/// Polls `probe` until its value stays the same for `quiet` (or `max` passed) and returns the
/// last value: for "nothing more arrives after a stop", instead of a fixed sleep.
pub fn settle<T: PartialEq>(max: Duration, quiet: Duration, mut probe: impl FnMut() -> T) -> T {
    let deadline = Instant::now() + max;
    let mut last = probe();
    let mut since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = probe();
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet || Instant::now() >= deadline {
            return last;
        }
    }
}

/// The media address the harness' relays use ([`Relay::start`], [`Relay::start_daemon`]):
/// not the endpoints' 127.0.0.1, so that "the SDP now points at the relay" is a real check.
pub const RELAY_IP: &str = "127.0.0.2";
/// The media address for a second relay in the same test.
pub const RELAY2_IP: &str = "127.0.0.3";

/// What the environment provides.
pub struct Env {
    pub opensips: PathBuf,
    /// The OpenSIPS modules directory (tm.so, mi_fifo.so, ...).
    pub mpath: PathBuf,
    /// Our module.
    pub ours: PathBuf,
    /// The C module of the same OpenSIPS build, when present.
    pub c_module: Option<PathBuf>,
}

/// Which module a configuration loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Impl {
    Ours,
    C,
}

impl Env {
    /// The environment, or `None` after [`skip`] (a loud SKIPPED line; a panic under CI=true).
    pub fn get(test: &str) -> Option<Self> {
        let Some(bin) = std::env::var_os("OPENSIPS_BIN").filter(|v| !v.is_empty()) else {
            skip(
                test,
                "OPENSIPS_BIN is not set (point it at the opensips binary of a supported release, or run tests/run.sh)",
            );
            return None;
        };
        let opensips = PathBuf::from(bin);
        let mpath = match std::env::var_os("OPENSIPS_MODULES") {
            Some(p) => PathBuf::from(p),
            None => {
                let prefix = opensips
                    .parent()
                    .and_then(Path::parent)
                    .unwrap_or(Path::new("/"));
                [
                    "lib64/opensips/modules",
                    "lib/opensips/modules",
                    "lib/x86_64-linux-gnu/opensips/modules",
                ]
                .iter()
                .map(|d| prefix.join(d))
                .find(|d| d.join("tm.so").exists())
                .unwrap_or_else(|| prefix.join("lib64/opensips/modules"))
            }
        };
        assert!(
            mpath.join("tm.so").exists(),
            "no tm.so in {} (set OPENSIPS_MODULES to the OpenSIPS modules directory)",
            mpath.display()
        );
        let ours = our_module();
        let c_module = Some(mpath.join("rtpproxy.so")).filter(|p| p.exists());
        Some(Self {
            opensips,
            mpath,
            ours,
            c_module,
        })
    }

    pub fn module(&self, which: Impl) -> &Path {
        match which {
            Impl::Ours => &self.ours,
            Impl::C => self.c_module.as_deref().expect("C module not available"),
        }
    }
}

/// The cdylib cargo built next to this test binary (`target/<profile>/librtpproxy.so`).
/// `cargo test` alone does not link the cdylib, so it is built here when missing.
pub fn our_module() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("current_exe");
            let dir = exe.parent().and_then(Path::parent).expect("target dir");
            let so = dir.join("librtpproxy.so");
            // Always ask cargo (a no-op when the library is up to date): `cargo test --test X`
            // does not rebuild the cdylib, and an old one would be tested otherwise. The same
            // features as this test binary, so a fault-injection run tests a fault-injection
            // build.
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
                .args(["build", "--quiet", "--lib"]);
            if cfg!(feature = "fault-injection") {
                cmd.args(["--features", "fault-injection"]);
            }
            if dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            if let Some(target) = dir.parent() {
                cmd.env("CARGO_TARGET_DIR", target);
            }
            let status = cmd.status().expect("run cargo build --lib");
            assert!(status.success(), "cargo build --lib failed");
            assert!(so.exists(), "{} not built", so.display());
            so
        })
        .clone()
}

/// A loopback port that is free for both UDP and TCP right now (chosen by the OS, so tests
/// running at the same time do not collide), and not handed out before by this process.
pub fn port() -> u16 {
    free_port("127.0.0.1", 1)
}

/// A port on `ip` the OS reports free now for UDP and TCP, with the `span - 1` UDP ports after
/// it free as well (sipp uses a media port and the next ones for RTCP and video); none of them
/// handed out before by this process.
pub fn free_port(ip: &str, span: u16) -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let span = span.max(1);
    loop {
        let udp = std::net::UdpSocket::bind((ip, 0)).expect("bind udp");
        let p = udp.local_addr().unwrap().port();
        if u16::MAX - p < span
            || std::net::TcpListener::bind((ip, p)).is_err()
            || !(1..span).all(|i| std::net::UdpSocket::bind((ip, p + i)).is_ok())
        {
            continue;
        }
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if (p..p + span).all(|q| !given.contains(&q)) {
            given.extend(p..p + span);
            return p;
        }
    }
}

/// Whether something listens on UDP `port` (IPv4 or IPv6).
pub fn udp_bound(port: u16) -> bool {
    let hex = format!(":{port:04X}");
    ["/proc/net/udp", "/proc/net/udp6"].iter().any(|f| {
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|a| a.ends_with(&hex))
            })
    })
}

/// A scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rtpproxy-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// An OpenSIPS configuration that loads `module` with `modparams` (full modparam lines).
pub struct Cfg {
    pub text: String,
    pub fifo: PathBuf,
    pub path: PathBuf,
}

pub fn cfg(env: &Env, which: Impl, dir: &Path, modparams: &str, extra: &str, routes: &str) -> Cfg {
    let fifo = dir.join(format!("fifo-{which:?}"));
    let path = dir.join(format!("opensips-{which:?}.cfg"));
    let sip = port();
    let text = format!(
        r#"log_level=4
stderror_enabled=yes
syslog_enabled=no
udp_workers=2
socket=udp:127.0.0.1:{sip}
mpath="{mpath}/"
loadmodule "proto_udp.so"
loadmodule "tm.so"
loadmodule "mi_fifo.so"
modparam("mi_fifo", "fifo_name", "{fifo}")
{extra}
loadmodule "{module}"
{modparams}
{routes}
"#,
        mpath = env.mpath.display(),
        fifo = fifo.display(),
        module = env.module(which).display(),
    );
    let routes_default = if routes.is_empty() {
        "route { exit; }\n"
    } else {
        ""
    };
    let text = format!("{text}{routes_default}");
    std::fs::write(&path, &text).unwrap();
    Cfg { text, fifo, path }
}

/// `opensips -c -f cfg`.
pub fn check(env: &Env, cfg: &Cfg) -> Output {
    Command::new(&env.opensips)
        .arg("-c")
        .arg("-f")
        .arg(&cfg.path)
        .output()
        .unwrap()
}

/// A running OpenSIPS, killed on drop.
pub struct OpenSips {
    pub child: Option<Child>,
    pub log: PathBuf,
    pub fifo: PathBuf,
}

impl OpenSips {
    /// Starts OpenSIPS in the foreground; waits until its MI FIFO exists, or until it exits.
    pub fn start(env: &Env, cfg: &Cfg) -> Result<Self, String> {
        let log = cfg.path.with_extension("log");
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new(&env.opensips)
            .arg("-F")
            .arg("-f")
            .arg(&cfg.path)
            // its own process group, so that a failed test can stop every OpenSIPS process
            .process_group(0)
            .stdout(Stdio::from(f.try_clone().unwrap()))
            .stderr(Stdio::from(f))
            .spawn()
            .unwrap();
        let mut me = Self {
            child: Some(child),
            log,
            fifo: cfg.fifo.clone(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(st) = me.child.as_mut().unwrap().try_wait().unwrap() {
                me.child = None;
                return Err(format!(
                    "opensips exited at start-up ({st}):\n{}",
                    me.log_text()
                ));
            }
            if me.fifo.exists() && me.mi("which", &[]).is_ok() {
                return Ok(me);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("opensips did not come up:\n{}", me.log_text()))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `opensips-cli -x mi <cmd> <args>` against this instance.
    pub fn mi(&self, cmd: &str, args: &[&str]) -> Result<String, String> {
        let cmd = mi_name(cmd);
        let out = Command::new("opensips-cli")
            .arg("-o")
            .arg(format!("fifo_file={}", self.fifo.display()))
            .arg("-o")
            .arg("fifo_reply_dir=/tmp")
            .arg("-x")
            .arg("mi")
            .arg(cmd)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run opensips-cli: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && !text.contains("ERROR") {
            Ok(text)
        } else {
            Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
        }
    }

    /// Stops OpenSIPS with SIGTERM and returns its exit status and log.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return (st, self.log_text());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let st = child.wait().unwrap();
                return (st, format!("{}\n(killed: did not stop)", self.log_text()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for OpenSips {
    /// A test that did not call [`OpenSips::stop`] (it failed): SIGTERM to the whole process
    /// group, SIGKILL after a grace period, so that no worker outlives the test.
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let group = format!("-{}", c.id());
            let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && c.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = c.wait();
        }
    }
}

/// A real RTPProxy engine serving the given control sockets (`udp:127.0.0.1:PORT`, ...).
pub struct Relay {
    child: Child,
}

impl Relay {
    /// Starts `RTPPROXY_BIN` if set, else the engine of PyPI `rtp.io` (through the launcher
    /// the I/O tests use), with its media on [`RELAY_IP`]; `None` if neither exists.
    pub fn start(sockets: &[String]) -> Option<Self> {
        Self::start_on(sockets, RELAY_IP)
    }

    /// [`Relay::start`] with the media address `media_ip` (`-l`).
    pub fn start_on(sockets: &[String], media_ip: &str) -> Option<Self> {
        if std::env::var_os("RTPPROXY_BIN").is_some_and(|v| !v.is_empty()) {
            return Self::start_daemon_on(sockets, media_ip, &[]);
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/rtpio_engine.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(sockets)
            .env("RTPIO_ENGINE_LISTEN", media_ip)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let out = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line).ok()?;
        if !line.starts_with("READY") {
            let _ = child.kill();
            let _ = child.wait();
            println!("relay did not start: {line}");
            return None;
        }
        let me = Self { child };
        me.wait_control(sockets);
        Some(me)
    }

    /// Waits (at most 10 s) until the first `udp:` control socket of `sockets` answers `V`.
    fn wait_control(&self, sockets: &[String]) {
        let Some(addr) = sockets.iter().find_map(|s| s.strip_prefix("udp:")) else {
            return;
        };
        let up = wait_for(Duration::from_secs(10), || {
            relay_command(addr, "V", Duration::from_millis(300)).is_some()
        });
        assert!(up, "relay on {addr} does not answer V");
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parses opensips-cli's JSON output.
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Sends one command to a relay's UDP control socket with a fresh cookie (RTPProxy answers a
/// repeated cookie from its reply cache) and returns the reply without the cookie; `None` when
/// none came within `timeout`.
pub fn relay_command(
    control: impl std::net::ToSocketAddrs,
    cmd: &str,
    timeout: Duration,
) -> Option<String> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let cookie = format!(
        "e2e_{}_{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").ok()?;
    sock.set_read_timeout(Some(timeout)).ok()?;
    sock.send_to(format!("{cookie} {cmd}").as_bytes(), control)
        .ok()?;
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf[..n]);
    Some(text.strip_prefix(&cookie)?.trim().to_owned())
}

/// One counter of the relay's `I` (info) reply, e.g. `active sessions`.
pub fn relay_counter(control: impl std::net::ToSocketAddrs, name: &str) -> Option<u64> {
    relay_command(control, "I", Duration::from_secs(2))?
        .lines()
        .find_map(|l| l.split(&format!("{name}:")).nth(1))
        .and_then(|v| v.trim().parse().ok())
}

/// The relay's `active sessions` count.
pub fn relay_active_sessions(control: impl std::net::ToSocketAddrs) -> Option<u64> {
    relay_counter(control, "active sessions")
}

/// Runs sipp with `args` (in `dir`) and returns its exit status and output.
pub fn sipp(dir: &Path, args: &[String]) -> Option<Output> {
    Command::new("sipp")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()
}

/// A sipp process in the background (killed on drop).
pub struct Sipp {
    pub child: Child,
}

impl Sipp {
    pub fn spawn(dir: &Path, args: &[String]) -> Option<Self> {
        let child = Command::new("sipp")
            .current_dir(dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        Some(Self { child })
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `sipp` is installed; prints a SKIPPED line when it is not.
pub fn have_sipp(test: &str) -> bool {
    let ok = Command::new("sipp").arg("-v").output().is_ok();
    if !ok {
        skip(test, "sipp is not installed (Debian package sip-tester)");
    }
    ok
}

impl Relay {
    /// Starts the `RTPPROXY_BIN` daemon with extra options (recording directories `-r`/`-S`,
    /// ...), its media on [`RELAY_IP`]. `None` when `RTPPROXY_BIN` is not set (the PyPI engine
    /// takes no such options).
    pub fn start_daemon(sockets: &[String], extra: &[String]) -> Option<Self> {
        Self::start_daemon_on(sockets, RELAY_IP, extra)
    }

    /// [`Relay::start_daemon`] with the media address `media_ip` (`-l`); waits until the first
    /// `udp:` control socket answers.
    pub fn start_daemon_on(sockets: &[String], media_ip: &str, extra: &[String]) -> Option<Self> {
        let bin = std::env::var_os("RTPPROXY_BIN").filter(|v| !v.is_empty())?;
        let mut args = vec!["-l".to_owned(), media_ip.to_owned()];
        for s in sockets {
            args.extend(["-s".to_owned(), s.clone()]);
        }
        args.extend_from_slice(extra);
        if !extra.iter().any(|a| a == "-m") {
            // media ports below the ephemeral range, where every port a test picks lies: a
            // relay port can then never equal an endpoint's port (a rewritten SDP would look
            // unchanged)
            args.extend(["-m", "20000", "-M", "32000"].map(String::from));
        }
        let pid = std::env::temp_dir().join(format!("rtpp-e2e-{}.pid", port()));
        // The daemon writes its accounting file into its working directory.
        let child = daemon(Path::new(&bin), &std::env::temp_dir(), &pid, &args, None)?;
        let me = Self { child };
        me.wait_control(sockets);
        Some(me)
    }

    /// Starts the rtpproxy daemon `bin` in `dir` (its working directory: some builds write an
    /// accounting file there) with the control socket `udp:<control>` and `args` (media
    /// addresses, port range, ...), its pid file `<name>.pid` and its output in `<name>.log`
    /// there; waits until it answers `V` (panics with its log when it does not within 10 s).
    /// `None` when it cannot be started.
    pub fn start_logged(
        bin: &Path,
        dir: &Path,
        name: &str,
        control: std::net::SocketAddr,
        args: &[String],
    ) -> Option<Self> {
        let mut all = vec!["-s".to_owned(), format!("udp:{control}")];
        all.extend_from_slice(args);
        let log = dir.join(format!("{name}.log"));
        let pid = dir.join(format!("{name}.pid"));
        let me = Self {
            child: daemon(bin, dir, &pid, &all, Some(&log))?,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while relay_command(control, "V", Duration::from_millis(300)).as_deref() != Some("20040107")
        {
            assert!(
                Instant::now() < deadline,
                "rtpproxy {name} did not come up: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(me)
    }
}

/// `bin -f -F -p <pid> <args>` in `cwd`, its output to `log` (else discarded).
fn daemon(
    bin: &Path,
    cwd: &Path,
    pid: &Path,
    args: &[String],
    log: Option<&Path>,
) -> Option<Child> {
    let (out, err) = match log {
        Some(l) => {
            let f = std::fs::File::create(l).ok()?;
            (Stdio::from(f.try_clone().ok()?), Stdio::from(f))
        }
        None => (Stdio::null(), Stdio::null()),
    };
    Command::new(bin)
        .current_dir(cwd)
        .args(["-f", "-F"])
        .arg("-p")
        .arg(pid)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .ok()
}

/// The `makeann` tool next to `RTPPROXY_BIN`, when both exist.
pub fn makeann() -> Option<PathBuf> {
    let bin = PathBuf::from(std::env::var_os("RTPPROXY_BIN").filter(|v| !v.is_empty())?);
    Some(bin.parent()?.join("makeann")).filter(|p| p.exists())
}

// ---- a logging UDP proxy in front of a relay's control socket ----

/// Which way a datagram seen by a [`ControlTap`] went.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Dir {
    ToRelay,
    FromRelay,
}

/// One datagram seen by a [`ControlTap`].
pub type TapEvent = (Dir, Vec<u8>);

/// Forwards datagrams between OpenSIPS processes and a relay's UDP control socket and records
/// them in order.
pub struct ControlTap {
    pub port: u16,
    log: std::sync::Arc<std::sync::Mutex<Vec<TapEvent>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ControlTap {
    pub fn start(relay: std::net::SocketAddr) -> Self {
        use std::collections::BTreeMap;
        use std::net::{SocketAddr, UdpSocket};
        let front = UdpSocket::bind("127.0.0.1:0").unwrap();
        front
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let port = front.local_addr().unwrap().port();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::<TapEvent>::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (log2, stop2) = (log.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut uplinks: BTreeMap<SocketAddr, UdpSocket> = BTreeMap::new();
            let mut workers = Vec::new();
            let mut buf = vec![0u8; 65536];
            while !stop2.load(Ordering::Relaxed) {
                let Ok((n, client)) = front.recv_from(&mut buf) else {
                    continue;
                };
                let up = uplinks.entry(client).or_insert_with(|| {
                    let up = UdpSocket::bind("127.0.0.1:0").unwrap();
                    up.connect(relay).unwrap();
                    up.set_read_timeout(Some(Duration::from_millis(50)))
                        .unwrap();
                    let (up2, back) = (up.try_clone().unwrap(), front.try_clone().unwrap());
                    let (log3, stop3) = (log2.clone(), stop2.clone());
                    workers.push(std::thread::spawn(move || {
                        let mut buf = vec![0u8; 65536];
                        while !stop3.load(Ordering::Relaxed) {
                            if let Ok(n) = up2.recv(&mut buf) {
                                log3.lock()
                                    .unwrap()
                                    .push((Dir::FromRelay, buf[..n].to_vec()));
                                let _ = back.send_to(&buf[..n], client);
                            }
                        }
                    }));
                    up
                });
                log2.lock().unwrap().push((Dir::ToRelay, buf[..n].to_vec()));
                let _ = up.send(&buf[..n]);
            }
            for w in workers {
                let _ = w.join();
            }
        });
        Self {
            port,
            log,
            stop,
            thread: Some(thread),
        }
    }

    /// How many datagrams were seen so far.
    pub fn len(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// The datagrams seen from event `from` on.
    pub fn events(&self, from: usize) -> Vec<TapEvent> {
        self.log.lock().unwrap()[from..].to_vec()
    }

    /// Waits (at most `max`) until every command seen from event `from` on has its reply and
    /// no datagram came for 150 ms: for "the BYE's `D` and its reply have passed", without a
    /// fixed sleep.
    pub fn settle(&self, from: usize, max: Duration) {
        let deadline = Instant::now() + max;
        let mut last = self.len();
        let mut since = Instant::now();
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(25));
            let n = self.len();
            if n != last {
                (last, since) = (n, Instant::now());
                continue;
            }
            let answered = self
                .commands(from)
                .iter()
                .all(|(_, reply)| reply != "(no reply)");
            if answered && since.elapsed() >= Duration::from_millis(150) {
                return;
            }
        }
    }

    /// [`control_commands`] of the events from `from` on.
    pub fn commands(&self, from: usize) -> Vec<(String, String)> {
        control_commands(&self.events(from))
    }
}

/// The commands sent to the relay, without their cookies, each with the reply to its cookie
/// (`(no reply)` when none came); probes (`V`, `VF …`) and retransmissions (a cookie seen
/// before) left out.
pub fn control_commands(events: &[TapEvent]) -> Vec<(String, String)> {
    let split = |d: &[u8]| -> (String, String) {
        let t = String::from_utf8_lossy(d).into_owned();
        match t.split_once(' ') {
            Some((c, rest)) => (c.to_owned(), rest.trim_end().to_owned()),
            None => (String::new(), t.trim_end().to_owned()),
        }
    };
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for (dir, data) in events {
        if *dir != Dir::ToRelay {
            continue;
        }
        let (cookie, cmd) = split(data);
        if cmd == "V" || cmd.starts_with("VF ") || seen.contains(&cookie) {
            continue;
        }
        seen.push(cookie.clone());
        let reply = events
            .iter()
            .filter(|(d, _)| *d == Dir::FromRelay)
            .map(|(_, d)| split(d))
            .find(|(c, _)| *c == cookie)
            .map_or_else(|| "(no reply)".to_owned(), |(_, r)| r);
        out.push((cmd, reply));
    }
    out
}

impl Drop for ControlTap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Relay {
    /// The relay's process id (to stop and continue it with signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}
