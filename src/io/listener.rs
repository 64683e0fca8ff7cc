//! The notification listener (spec §8): accepts the connections RTPProxy opens to
//! `rtpp_notify_socket` and hands every notification line to a [`NotifySink`].
//!
//! It runs on a current-thread tokio runtime that [`run`] creates in the calling thread; the
//! host calls it only inside the notification process, after OpenSIPS has forked. Every
//! connection is a local task; the sink is called from that same thread, one notification at
//! a time, so it may call into OpenSIPS.
//!
//! Robustness rules:
//! - Each connection has its own bounded [`LineBuffer`]: reads may split or join lines
//!   anywhere; a line longer than [`ListenerOptions::max_line`] is skipped up to its newline.
//! - A line that does not parse is logged (at most [`ListenerOptions::logged_errors`] times
//!   per connection, then counted) and skipped; the connection stays open. RTPProxy keeps one
//!   connection per target and only notices a closed socket on a later write, so closing
//!   would lose notifications.
//! - TCP peers must be allowed by [`NotifySink::allow_peer`] (the configured nodes'
//!   addresses); UNIX peers are local and trusted. At most
//!   [`ListenerOptions::max_connections`] connections are open at once; more are closed at
//!   once. A connection ends when the peer closes it or a read fails, and its socket is
//!   closed then (no descriptor outlives its connection).
//! - Accept errors (e.g. out of descriptors) are logged, rate-limited, and retried after a
//!   short pause; the listener itself never stops because of a peer.
//! - One more pipe can be watched ([`NotifySink::take_wake_fd`]): the host serves the
//!   OpenSIPS IPC pipe of its process through it.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::unix::pipe;
use tokio::net::{TcpListener, UnixListener};

use crate::core::config::NotifySocket;
use crate::core::notify::{parse_line, Frame, LineBuffer, Notification, MAX_LINE};

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP socket (`tcp:IPv4:PORT`; port 0 picks a free port, for tests).
    Tcp(SocketAddrV4),
    /// A UNIX stream socket at this path.
    Unix(PathBuf),
}

impl From<&NotifySocket> for ListenAddr {
    fn from(s: &NotifySocket) -> Self {
        match s {
            NotifySocket::Tcp { ip, port } => Self::Tcp(SocketAddrV4::new(*ip, *port)),
            NotifySocket::Unix(path) => Self::Unix(PathBuf::from(path)),
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(a) => write!(f, "tcp:{a}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Limits of the listener.
#[derive(Debug, Clone)]
pub struct ListenerOptions {
    /// Connections open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Longest line, newline excluded.
    pub max_line: usize,
    /// Bad lines logged per connection; later ones are only counted (and summed up when the
    /// connection ends).
    pub logged_errors: u32,
    /// Bytes read at once per connection.
    pub read_buffer: usize,
}

impl Default for ListenerOptions {
    fn default() -> Self {
        Self {
            max_connections: 256,
            max_line: MAX_LINE,
            logged_errors: 10,
            read_buffer: 4096,
        }
    }
}

/// Counters, readable from any thread while the listener runs.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Connections accepted and served.
    pub accepted: AtomicU64,
    /// Connections closed at once: unknown peer or too many connections.
    pub refused: AtomicU64,
    /// Connections open now.
    pub open: AtomicU64,
    /// Complete lines received (good or bad).
    pub lines: AtomicU64,
    /// Lines skipped: unparsable, unknown command, or too long.
    pub malformed: AtomicU64,
    /// Notifications handed to the sink.
    pub delivered: AtomicU64,
}

impl ListenerStats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Who sent a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A TCP peer.
    Tcp(SocketAddr),
    /// The n-th UNIX connection of this listener.
    Unix(u64),
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(a) => write!(f, "{a}"),
            Self::Unix(n) => write!(f, "unix connection #{n}"),
        }
    }
}

/// What the listener reports to; called on the listener's thread only.
pub trait NotifySink {
    /// Whether a TCP peer with this address may send notifications.
    fn allow_peer(&mut self, ip: IpAddr) -> bool;
    /// One notification to act on: [`Notification::Timeout`] or [`Notification::Dtmf`]
    /// (`I` lines and unknown commands are handled by the listener).
    fn notify(&mut self, notification: Notification, peer: &Peer);
    /// A pipe to watch for reading besides the sockets, taken once when serving starts. It is
    /// only watched: the sink reads it in [`NotifySink::on_wake`] (through another descriptor
    /// of the same pipe, if it likes). The listener makes it non-blocking and closes it at the
    /// end.
    fn take_wake_fd(&mut self) -> Option<OwnedFd> {
        None
    }
    /// Called when the wake pipe is readable; returns `true` once nothing is left to read,
    /// `false` to be called again soon.
    fn on_wake(&mut self) -> bool {
        true
    }
}

/// A bound listening socket, not yet served. A UNIX socket file is removed when this (or the
/// listener serving it) is dropped.
#[derive(Debug)]
pub struct Bound {
    sock: BoundSock,
    path: Option<PathBuf>,
}

#[derive(Debug)]
enum BoundSock {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

impl Bound {
    /// The TCP address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.sock {
            BoundSock::Tcp(l) => l.local_addr().ok(),
            BoundSock::Unix(_) => None,
        }
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            if std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket()) {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// Binds the listening socket (no runtime needed). TCP sockets get `SO_REUSEADDR`. For UNIX,
/// a socket file left by a dead process (nobody accepts on it) is removed first; a file that
/// is not a socket, or a socket somebody serves, is an error.
pub fn bind(addr: &ListenAddr) -> io::Result<Bound> {
    match addr {
        ListenAddr::Tcp(a) => Ok(Bound {
            // std sets SO_REUSEADDR on Unix before binding.
            sock: BoundSock::Tcp(std::net::TcpListener::bind(a)?),
            path: None,
        }),
        ListenAddr::Unix(path) => {
            remove_stale_socket(path)?;
            let l = std::os::unix::net::UnixListener::bind(path)?;
            Ok(Bound {
                sock: BoundSock::Unix(l),
                path: Some(path.clone()),
            })
        }
    }
}

fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("another process listens on {}", path.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!("removing stale notification socket {}", path.display());
            std::fs::remove_file(path)
        }
        Err(e) => Err(e),
    }
}

/// Logs an event at most once per period, counting what it held back.
struct RateLimit {
    period: Duration,
    last: Option<Instant>,
    held: u64,
}

impl RateLimit {
    fn new(period: Duration) -> Self {
        Self {
            period,
            last: None,
            held: 0,
        }
    }

    /// `Some(held back since the last time)` when this one may be logged.
    fn check(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.period)
        {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

fn suffix(held: u64) -> String {
    if held == 0 {
        String::new()
    } else {
        format!(" ({held} more like this not logged)")
    }
}

/// A printable excerpt of a line for the log.
fn excerpt(line: &[u8]) -> String {
    let cut = &line[..line.len().min(80)];
    let text: String = String::from_utf8_lossy(cut).escape_debug().collect();
    if line.len() > cut.len() {
        format!("{text}…")
    } else {
        text
    }
}

/// Keeps [`ListenerStats::open`] right however a connection task ends.
struct OpenGuard(Arc<ListenerStats>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reads one connection until it ends.
async fn connection<R, S>(
    stream: R,
    peer: Peer,
    sink: Rc<RefCell<S>>,
    opts: ListenerOptions,
    stats: Arc<ListenerStats>,
) where
    R: AsyncRead + Unpin,
    S: NotifySink,
{
    let _open = OpenGuard(stats.clone());
    // Declared after the guard, so the socket is closed before the count goes down.
    let mut stream = stream;
    let mut lines = LineBuffer::new(opts.max_line);
    let mut buf = vec![0u8; opts.read_buffer.max(64)];
    let mut bad: u32 = 0;
    tracing::debug!("notification connection from {peer}");
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) => {
                if lines.pending() > 0 {
                    tracing::warn!(
                        "dropping partial RTPProxy notification [{}] ({} bytes) from {peer}: \
                         connection closed",
                        excerpt(lines.partial()),
                        lines.pending()
                    );
                }
                break;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::info!("notification connection from {peer} failed: {e}");
                break;
            }
        };
        lines.feed(&buf[..n], |frame| {
            ListenerStats::add(&stats.lines, 1);
            let problem = match frame {
                Frame::TooLong { len } => Some(format!(
                    "RTPProxy notification too long ({len} bytes, limit {}) skipped",
                    opts.max_line
                )),
                Frame::Line(line) => match parse_line(line) {
                    Ok(Notification::Ignored) => {
                        tracing::debug!("ignored timeout notification from {peer}");
                        None
                    }
                    Ok(Notification::Unknown(c)) => Some(format!(
                        "unhandled RTPProxy notification '{}' [{}] skipped",
                        (c as char).escape_debug(),
                        excerpt(line)
                    )),
                    Ok(n) => {
                        ListenerStats::add(&stats.delivered, 1);
                        sink.borrow_mut().notify(n, &peer);
                        None
                    }
                    Err(e) => Some(format!(
                        "bad RTPProxy notification [{}] skipped: {e}",
                        excerpt(line)
                    )),
                },
            };
            if let Some(p) = problem {
                ListenerStats::add(&stats.malformed, 1);
                bad = bad.saturating_add(1);
                if bad <= opts.logged_errors {
                    tracing::warn!("{p} (from {peer})");
                }
            }
        });
    }
    if bad > opts.logged_errors {
        tracing::warn!(
            "{} more bad notification lines from {peer} were skipped without being logged",
            bad - opts.logged_errors
        );
    }
    tracing::debug!("notification connection from {peer} closed");
}

enum Listening {
    Tcp(TcpListener),
    Unix(UnixListener),
}

enum Accepted {
    Tcp(tokio::net::TcpStream, SocketAddr),
    Unix(tokio::net::UnixStream),
}

impl Listening {
    async fn accept(&self) -> io::Result<Accepted> {
        match self {
            Self::Tcp(l) => l.accept().await.map(|(s, a)| Accepted::Tcp(s, a)),
            Self::Unix(l) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
        }
    }
}

/// Serves `bound` until `shutdown` completes. Must run inside a [`tokio::task::LocalSet`] on a
/// runtime with I/O and time enabled ([`run`] sets that up).
pub async fn serve<S, F>(
    bound: Bound,
    sink: S,
    opts: ListenerOptions,
    stats: Arc<ListenerStats>,
    shutdown: F,
) -> io::Result<()>
where
    S: NotifySink + 'static,
    F: Future<Output = ()>,
{
    let listening = match &bound.sock {
        BoundSock::Tcp(l) => {
            let l = l.try_clone()?;
            l.set_nonblocking(true)?;
            Listening::Tcp(TcpListener::from_std(l)?)
        }
        BoundSock::Unix(l) => {
            let l = l.try_clone()?;
            l.set_nonblocking(true)?;
            Listening::Unix(UnixListener::from_std(l)?)
        }
    };
    let mut sink = sink;
    let wake = match sink.take_wake_fd() {
        Some(fd) => Some(pipe::Receiver::from_owned_fd(fd)?),
        None => None,
    };
    let sink = Rc::new(RefCell::new(sink));
    let mut unix_seq: u64 = 0;
    let mut refused_log = RateLimit::new(Duration::from_secs(10));
    let mut accept_log = RateLimit::new(Duration::from_secs(10));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            ready = async {
                match &wake {
                    Some(w) => w.readable().await.map(|()| w),
                    None => std::future::pending().await,
                }
            } => {
                // The sink reads the pipe; reporting "would block" once it has drained it
                // clears the readiness until more data arrives.
                let _ = ready?.try_io(|| {
                    if sink.borrow_mut().on_wake() {
                        Err(io::ErrorKind::WouldBlock.into())
                    } else {
                        Ok(())
                    }
                });
            }
            accepted = listening.accept() => {
                let accepted = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        if let Some(held) = accept_log.check() {
                            tracing::error!(
                                "cannot accept notification connections: {e}{}",
                                suffix(held)
                            );
                        }
                        // Out of descriptors or memory: let connections end first.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let peer = match &accepted {
                    Accepted::Tcp(_, addr) => Peer::Tcp(*addr),
                    Accepted::Unix(_) => {
                        unix_seq += 1;
                        Peer::Unix(unix_seq)
                    }
                };
                let refuse = match &peer {
                    Peer::Tcp(addr) if !sink.borrow_mut().allow_peer(addr.ip()) => {
                        Some("connection from unknown RTPProxy node")
                    }
                    _ if ListenerStats::get(&stats.open) >= opts.max_connections as u64 => {
                        Some("too many notification connections")
                    }
                    _ => None,
                };
                if let Some(why) = refuse {
                    ListenerStats::add(&stats.refused, 1);
                    if let Some(held) = refused_log.check() {
                        tracing::warn!("{why} {peer}: closed{}", suffix(held));
                    }
                    drop(accepted);
                    continue;
                }
                ListenerStats::add(&stats.accepted, 1);
                ListenerStats::add(&stats.open, 1);
                let (sink, opts, stats) = (sink.clone(), opts.clone(), stats.clone());
                match accepted {
                    Accepted::Tcp(s, _) => {
                        tokio::task::spawn_local(connection(s, peer, sink, opts, stats));
                    }
                    Accepted::Unix(s) => {
                        tokio::task::spawn_local(connection(s, peer, sink, opts, stats));
                    }
                }
            }
        }
    }
    drop(listening);
    drop(bound);
    Ok(())
}

/// Creates a current-thread runtime in the calling thread and serves `bound` on it until
/// `shutdown` completes (pass [`std::future::pending`] to serve forever). Connections still
/// open then are closed.
pub fn run<S, F>(
    bound: Bound,
    sink: S,
    opts: ListenerOptions,
    stats: Arc<ListenerStats>,
    shutdown: F,
) -> io::Result<()>
where
    S: NotifySink + 'static,
    F: Future<Output = ()>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let r = local.block_on(&rt, serve(bound, sink, opts, stats, shutdown));
    drop(local);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_counts_what_it_holds_back() {
        let mut r = RateLimit::new(Duration::from_secs(3600));
        assert_eq!(r.check(), Some(0));
        assert_eq!(r.check(), None);
        assert_eq!(r.check(), None);
        r.last = Some(Instant::now() - Duration::from_secs(7200));
        assert_eq!(r.check(), Some(2));
    }

    #[test]
    fn excerpts_are_printable_and_short() {
        assert_eq!(excerpt(b"T1.2\x1b[2J"), "T1.2\\u{1b}[2J");
        assert!(excerpt(&[b'x'; 500]).chars().count() <= 81);
    }

    #[test]
    fn stale_unix_socket_is_replaced_but_live_one_is_not() {
        let dir = std::env::temp_dir().join(format!("rtpp-listener-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("n.sock");
        let _ = std::fs::remove_file(&path);
        // A socket file nobody serves (its listener is gone).
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let addr = ListenAddr::Unix(path.clone());
        let b = bind(&addr).expect("stale socket replaced");
        // Somebody serves it now: refused.
        assert_eq!(bind(&addr).unwrap_err().kind(), io::ErrorKind::AddrInUse);
        drop(b);
        assert!(!path.exists(), "socket file removed with the listener");
        std::fs::write(&path, b"not a socket").unwrap();
        assert_eq!(
            bind(&addr).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
