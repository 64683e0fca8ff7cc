//! Control-socket clients (spec §3.1).
//!
//! Layer: `io`. Blocking std sockets with timeouts (SIP workers are synchronous); no tokio, no
//! host calls, no `unsafe`. The protocol decisions (cookies, retries, framing, reply limits)
//! live in [`crate::core::proto`]; this file only moves bytes and reads the clock.
//!
//! One [`ControlClient`] per node per process. Building one does no I/O at all: sockets are
//! opened on first use, so clients must be used only in the process that will own the socket
//! (after OpenSIPS has forked).
//!
//! | transport | socket | lifetime |
//! |---|---|---|
//! | `udp:` / `udp6:` | connected datagram socket | kept for the life of the client |
//! | `tcp:` / `tcp6:` | TCP stream, `TCP_NODELAY` | persistent; closed on any failure, reopened on next use |
//! | `cunix:` | UNIX stream | persistent; closed on any failure, reopened on next use |
//! | `unix:` | UNIX stream | one connection per command |
//! | `rtp.io:auto` | UNIX stream handed over by the host | never closed |
//!
//! Differences from the C module (`send_rtpp_command`, `connect_rtpp_node` in rtpproxy.c),
//! all from defect D25: the TCP connect result is checked (a refused connect fails at connect
//! time, not at the first write); legacy `unix:` reads and writes have a timeout; the UDP
//! cookie is matched as a whole token; a stream reply must arrive within one timeout in total.
//! Connecting a UNIX socket with std has no timeout (it only blocks when the relay's listen
//! backlog is full); a caller can supply a bounded connect ([`ControlClient::set_unix_connector`]),
//! as the host does. Likewise the host hands resolved addresses in
//! ([`ControlClient::set_address`]) and forbids name resolution in SIP workers
//! ([`ControlClient::set_resolve_names`]).
//!
//! Besides the blocking [`ControlClient::send`], the client can run one command without
//! blocking: [`ControlClient::start`], then wait for [`ControlClient::wait_fd`] to become
//! readable or for [`ControlClient::poll_timeout`], and call [`ControlClient::on_readable`] or
//! [`ControlClient::on_timeout`] until one of them returns the outcome.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::core::config::{NodeSpec, Transport};
use crate::core::proto::{
    Command, CookieGen, DatagramExchange, ExchangeError, Framing, Probe, ProbeOutcome, ProtoError,
    Reply, StreamExchange,
};

/// Receive buffer; anything longer than `MAX_REPLY_LEN` plus a cookie is refused anyway.
const RECV_BUF_LEN: usize = 4096;

/// Upper bound on stale datagrams/bytes discarded before one command.
const MAX_DRAIN_READS: usize = 256;

/// Shortest wait handed to a socket timeout (a zero timeout means "forever" to the OS).
const MIN_WAIT: Duration = Duration::from_millis(1);

/// Timing knobs of a client (modparams `rtpproxy_timeout`, `rtpproxy_retr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOptions {
    /// Wait for one reply (per UDP attempt; for the whole reply on streams); also the connect
    /// and write timeout.
    pub timeout: Duration,
    /// UDP attempts per command (0 makes every UDP command fail at once, as in the C module).
    pub retr: u32,
}

impl Default for ClientOptions {
    /// The C module's defaults: 1 s, 5 attempts.
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(1),
            retr: 5,
        }
    }
}

/// A reply that arrived but cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyFault {
    /// Stream framing violated (too long, bytes after the newline).
    #[error(transparent)]
    Framing(ExchangeError),
    /// The reply text does not parse.
    #[error(transparent)]
    Parse(#[from] ProtoError),
}

/// Why a command got no usable reply. Every variant is a node failure in the sense of
/// spec §2.4 (the caller disables the node).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The node address does not resolve (or has a bad port) for the transport's family.
    #[error("cannot resolve {address}: {reason}")]
    Resolve {
        /// The address as configured.
        address: String,
        /// What went wrong.
        reason: String,
    },
    /// The connection could not be established (refused, timed out, no such socket file…).
    #[error("cannot connect to {address}: {source}")]
    Connect {
        /// The address as configured.
        address: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// No reply in time, after every attempt.
    #[error("no reply after {attempts} attempt(s)")]
    Timeout {
        /// Requests sent.
        attempts: u32,
    },
    /// The relay closed the connection before replying.
    #[error("connection closed by the relay")]
    Closed,
    /// A send or receive failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// A reply arrived but is malformed.
    #[error("malformed reply: {0}")]
    Garbage(#[from] ReplyFault),
    /// The client has no way to reach the node (e.g. `rtp.io:auto` without a handed-over
    /// socket).
    #[error("{0}")]
    Unavailable(&'static str),
    /// [`ControlClient::start`] was called while another command is outstanding.
    #[error("another command is still in progress on this node")]
    Busy,
}

impl TransportError {
    /// Whether this is a timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. })
    }

    fn from_exchange(e: ExchangeError) -> Self {
        match e {
            ExchangeError::Timeout { attempts } => Self::Timeout { attempts },
            ExchangeError::Closed => Self::Closed,
            other => Self::Garbage(ReplyFault::Framing(other)),
        }
    }
}

/// Resolves `host` to the first address of the wanted family (IPv6 for `*6` transports,
/// IPv4 otherwise), as the C module does with `getaddrinfo`. Brackets around an IPv6 literal
/// are tolerated.
pub fn resolve(host: &str, port: u16, ipv6: bool) -> Result<SocketAddr, TransportError> {
    let err = |reason: String| TransportError::Resolve {
        address: format!("{host}:{port}"),
        reason,
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(err("empty host".into()));
    }
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| err(e.to_string()))?;
    addrs
        .into_iter()
        .find(|a| a.is_ipv6() == ipv6)
        .ok_or_else(|| err(format!("no {} address", if ipv6 { "IPv6" } else { "IPv4" })))
}

/// `host:port` when `host` is an IP literal of the wanted family (no name service involved).
pub fn literal(host: &str, port: u16, ipv6: bool) -> Option<SocketAddr> {
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip: std::net::IpAddr = host.parse().ok()?;
    (ip.is_ipv6() == ipv6).then_some(SocketAddr::new(ip, port))
}

/// An open socket, with the blocking mode and timeouts last set on it, so that a command
/// changes them only when it needs another one (no `ioctl`/`setsockopt` per command).
#[derive(Debug)]
struct Conn {
    sock: Sock,
    /// `None`: not known (a socket handed over by the host).
    nonblocking: Option<bool>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    /// Whether something stale may be queued on this socket: a datagram exchange that did not
    /// end with the reply to its one request (timed out, abandoned, retransmitted, failed, or
    /// saw a foreign datagram) leaves it set and the next command drains first.
    dirty: bool,
}

#[derive(Debug)]
enum Sock {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// `$e` with `$s` bound to the socket inside `$sock`, whatever its kind.
macro_rules! on_sock {
    ($sock:expr, $s:ident => $e:expr) => {
        match $sock {
            Sock::Udp($s) => $e,
            Sock::Tcp($s) => $e,
            Sock::Unix($s) => $e,
        }
    };
}

/// Applies a socket setting unless `known` says it is already `want`; `known` is unknown
/// (`None`) until the call succeeded.
fn cached<T: PartialEq>(
    known: &mut Option<T>,
    want: T,
    apply: impl FnOnce() -> io::Result<()>,
) -> io::Result<()> {
    if known.as_ref() == Some(&want) {
        return Ok(());
    }
    *known = None;
    apply()?;
    *known = Some(want);
    Ok(())
}

impl Conn {
    fn new(sock: Sock, nonblocking: Option<bool>) -> Self {
        Self {
            sock,
            nonblocking,
            read_timeout: None,
            write_timeout: None,
            dirty: true,
        }
    }

    fn is_datagram(&self) -> bool {
        matches!(self.sock, Sock::Udp(_))
    }

    fn raw_fd(&self) -> RawFd {
        on_sock!(&self.sock, s => s.as_raw_fd())
    }

    fn set_nonblocking(&mut self, on: bool) -> io::Result<()> {
        let sock = &self.sock;
        cached(
            &mut self.nonblocking,
            on,
            || on_sock!(sock, s => s.set_nonblocking(on)),
        )
    }

    fn set_read_timeout(&mut self, t: Duration) -> io::Result<()> {
        let t = t.max(MIN_WAIT);
        let sock = &self.sock;
        cached(
            &mut self.read_timeout,
            t,
            || on_sock!(sock, s => s.set_read_timeout(Some(t))),
        )
    }

    fn set_write_timeout(&mut self, t: Duration) -> io::Result<()> {
        let t = t.max(MIN_WAIT);
        let sock = &self.sock;
        cached(
            &mut self.write_timeout,
            t,
            || on_sock!(sock, s => s.set_write_timeout(Some(t))),
        )
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.sock {
            Sock::Udp(s) => s.recv(buf),
            Sock::Tcp(s) => s.read(buf),
            Sock::Unix(s) => s.read(buf),
        }
    }

    /// Writes one request. Datagram sockets stay non-blocking (set once at open) and block
    /// (within `timeout`) only if the send buffer is full; streams block within `timeout`.
    fn write_request(&mut self, bytes: &[u8], timeout: Duration) -> io::Result<()> {
        let mut refused = 0;
        loop {
            let r = match &mut self.sock {
                Sock::Udp(s) => s.send(bytes).map(|_| ()),
                Sock::Tcp(_) | Sock::Unix(_) => {
                    self.set_nonblocking(false)?;
                    self.set_write_timeout(timeout)?;
                    match &mut self.sock {
                        Sock::Tcp(s) => s.write_all(bytes),
                        Sock::Unix(s) => s.write_all(bytes),
                        Sock::Udp(_) => unreachable!("matched a stream above"),
                    }
                }
            };
            match r {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && self.is_datagram() => {
                    self.set_nonblocking(false)?;
                    self.set_write_timeout(timeout)?;
                    let r = self.write_request(bytes, timeout);
                    self.set_nonblocking(true)?;
                    return r;
                }
                // a connected datagram socket reports an ICMP error queued by an earlier
                // datagram on the next call: it says nothing about this request
                Err(e)
                    if e.kind() == io::ErrorKind::ConnectionRefused
                        && self.is_datagram()
                        && refused < MAX_DRAIN_READS =>
                {
                    refused += 1;
                    continue;
                }
                other => return other,
            }
        }
    }
}

/// What one read produced.
enum ReadEvent {
    Data(usize),
    Eof,
    Nothing,
}

fn read_event(conn: &mut Conn, buf: &mut [u8]) -> io::Result<ReadEvent> {
    let datagram = conn.is_datagram();
    match conn.read(buf) {
        Ok(0) if !datagram => Ok(ReadEvent::Eof),
        Ok(n) => Ok(ReadEvent::Data(n)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
            ) =>
        {
            Ok(ReadEvent::Nothing)
        }
        Err(e) => Err(e),
    }
}

#[derive(Debug)]
enum Pending {
    Datagram(DatagramExchange),
    Stream(StreamExchange),
    OneShot {
        ex: StreamExchange,
        conn: Conn,
        cmd: Command,
        retried: bool,
    },
}

impl Pending {
    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Self::Datagram(x) => x.poll_timeout(),
            Self::Stream(x) | Self::OneShot { ex: x, .. } => x.poll_timeout(),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        match self {
            Self::Datagram(x) => x.handle_timeout(now),
            Self::Stream(x) | Self::OneShot { ex: x, .. } => x.handle_timeout(now),
        }
    }

    fn poll_outcome(&mut self) -> Option<Result<Vec<u8>, ExchangeError>> {
        match self {
            Self::Datagram(x) => x.poll_outcome(),
            Self::Stream(x) | Self::OneShot { ex: x, .. } => x.poll_outcome(),
        }
    }

    /// Requests sent so far (one for streams).
    fn attempts(&self) -> u32 {
        match self {
            Self::Datagram(x) => x.attempts(),
            Self::Stream(_) | Self::OneShot { .. } => 1,
        }
    }
}

/// The control connection of one node, in one process.
#[derive(Debug)]
pub struct ControlClient {
    url: String,
    transport: Transport,
    address: String,
    host: Option<String>,
    port: Option<u16>,
    options: ClientOptions,
    conn: Option<Conn>,
    peer: Option<SocketAddr>,
    pending: Option<Pending>,
    buf: Vec<u8>,
    /// The node's address as resolved by someone else (the host resolves names at start-up,
    /// on reload and in the prober, never in a SIP worker).
    cached: Option<SocketAddr>,
    /// Whether this client may resolve a host name itself when no address is cached.
    resolve_names: bool,
    /// Connects a UNIX stream within a timeout (std has no bounded UNIX connect).
    unix_connect: Option<UnixConnector>,
}

/// A bounded UNIX-stream connect: path and timeout in, connected stream out.
pub type UnixConnector = fn(&std::path::Path, Duration) -> io::Result<UnixStream>;

impl ControlClient {
    /// A client for `node`. Does no I/O: the socket is opened on first use.
    pub fn new(node: &NodeSpec, options: ClientOptions) -> Self {
        Self {
            url: node.url.clone(),
            transport: node.transport,
            address: node.address.clone(),
            host: node.host().map(str::to_owned),
            port: node.port(),
            options,
            conn: None,
            peer: None,
            pending: None,
            buf: Vec::new(),
            cached: None,
            resolve_names: true,
            unix_connect: None,
        }
    }

    /// Uses `addr` for this node instead of resolving its host name (see
    /// [`ControlClient::set_resolve_names`]); `None` forgets it. Takes effect at the next
    /// connect.
    pub fn set_address(&mut self, addr: Option<SocketAddr>) {
        self.cached = addr;
    }

    /// The address set with [`ControlClient::set_address`].
    pub fn cached_address(&self) -> Option<SocketAddr> {
        self.cached
    }

    /// Whether the client may resolve a host name itself when no address is set (default
    /// yes). With `false`, a node given by name and without a set address fails to connect
    /// with [`TransportError::Resolve`] at once; IP literals always work.
    pub fn set_resolve_names(&mut self, on: bool) {
        self.resolve_names = on;
    }

    /// Connects `cunix:`/`unix:` nodes with `f`, bounded by the timeout, instead of std's
    /// unbounded connect.
    pub fn set_unix_connector(&mut self, f: UnixConnector) {
        self.unix_connect = Some(f);
    }

    /// A client over an already connected stream, for `rtp.io:auto` (the host obtains the
    /// per-process socket from the `rtp.io` module). Newline framing; never closed by us.
    pub fn with_rtpio_stream(url: &str, stream: UnixStream, options: ClientOptions) -> Self {
        Self {
            url: url.to_owned(),
            transport: Transport::RtpIo,
            address: String::new(),
            host: None,
            port: None,
            options,
            conn: Some(Conn::new(Sock::Unix(stream), None)),
            peer: None,
            pending: None,
            buf: Vec::new(),
            cached: None,
            resolve_names: true,
            unix_connect: None,
        }
    }

    /// The node identity (`rn_url`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The node transport.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The framing used on this node.
    pub fn framing(&self) -> Framing {
        Framing::for_transport(self.transport)
    }

    /// The timing knobs.
    pub fn options(&self) -> ClientOptions {
        self.options
    }

    /// Changes the timing knobs (takes effect with the next command).
    pub fn set_options(&mut self, options: ClientOptions) {
        self.options = options;
    }

    /// Whether a persistent socket is open.
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// The resolved peer address of an `udp`/`tcp` node once connected (used to authenticate
    /// notification connections, spec §8.4).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Opens the persistent socket now if there is none (a no-op for legacy `unix:`). Useful
    /// to check a node at start-up; [`ControlClient::send`] does it on its own.
    pub fn connect(&mut self) -> Result<(), TransportError> {
        if self.conn.is_none() && self.transport != Transport::Unix {
            self.conn = Some(self.open()?);
        }
        Ok(())
    }

    /// Closes the persistent socket (e.g. after a reload). `rtp.io` sockets are kept.
    pub fn disconnect(&mut self) {
        self.pending = None;
        if self.transport != Transport::RtpIo {
            self.conn = None;
        }
    }

    /// Sends `cmd` and waits for its reply, parsed.
    ///
    /// `cookies` is the process-wide cookie generator; it is advanced only for UDP nodes.
    /// On any error the caller should treat the node as failed (spec §2.4).
    pub fn send(
        &mut self,
        cookies: &mut CookieGen,
        cmd: &Command,
    ) -> Result<Reply, TransportError> {
        let body = self.send_raw(cookies, cmd)?;
        Reply::parse(&body).map_err(|e| TransportError::Garbage(e.into()))
    }

    /// Sends `cmd` and waits for its reply body (cookie and trailing newline removed).
    pub fn send_raw(
        &mut self,
        cookies: &mut CookieGen,
        cmd: &Command,
    ) -> Result<Vec<u8>, TransportError> {
        self.send_raw_observed(cookies, cmd, &mut || true)
    }

    /// Like [`ControlClient::send_raw`], calling `attempt_lost` each time a wait for the reply
    /// runs out while attempts remain (UDP retransmissions). The caller can use it to stop
    /// sending new work to the node while this command finishes its retries; returning `false`
    /// abandons the command at once with [`TransportError::Timeout`].
    pub fn send_raw_observed(
        &mut self,
        cookies: &mut CookieGen,
        cmd: &Command,
        attempt_lost: &mut dyn FnMut() -> bool,
    ) -> Result<Vec<u8>, TransportError> {
        self.start(cookies, cmd)?;
        loop {
            if let Some(r) = self.take_outcome() {
                return r;
            }
            let Some(deadline) = self.poll_timeout() else {
                // an exchange always has a deadline while running; be defensive
                return Err(self.fail(TransportError::Timeout { attempts: 0 }));
            };
            let now = Instant::now();
            if now >= deadline {
                if let Some(r) = self.on_timeout(now) {
                    return r;
                }
                if !attempt_lost() {
                    let attempts = self.pending.as_ref().map_or(0, Pending::attempts);
                    self.cancel();
                    return Err(TransportError::Timeout { attempts });
                }
                continue;
            }
            if let Some(r) = self.read_step(Some(deadline - now)) {
                return r;
            }
        }
    }

    /// Runs a capability probe (`V` + `VF` commands) over this client; returns the outcome
    /// and the number of optional `VF` commands lost to transport failures.
    pub fn probe(&mut self, cookies: &mut CookieGen) -> (ProbeOutcome, u32) {
        Probe::run(|cmd| self.send_raw(cookies, cmd).ok())
    }

    /// Starts `cmd` without waiting for the reply: connects if needed (blocking, bounded by
    /// the timeout), drains stale input, and writes the request. The reply timer starts when
    /// the request is written.
    ///
    /// Then wait for [`ControlClient::wait_fd`] to be readable (call
    /// [`ControlClient::on_readable`]) or for [`ControlClient::poll_timeout`] (call
    /// [`ControlClient::on_timeout`]).
    pub fn start(&mut self, cookies: &mut CookieGen, cmd: &Command) -> Result<(), TransportError> {
        if self.pending.is_some() {
            return Err(TransportError::Busy);
        }
        if self.buf.len() != RECV_BUF_LEN {
            self.buf = vec![0; RECV_BUF_LEN];
        }
        let timeout = self.options.timeout.max(MIN_WAIT);
        let pending = match self.framing() {
            Framing::Datagram => {
                let r = self.connect().and_then(|()| self.drain());
                if let Err(e) = r {
                    return Err(self.fail(e));
                }
                Pending::Datagram(DatagramExchange::new(
                    cookies.next_cookie(),
                    cmd,
                    self.options.retr,
                    timeout,
                ))
            }
            Framing::Stream => {
                let r = self.connect().and_then(|()| self.drain());
                if let Err(e) = r {
                    return Err(self.fail(e));
                }
                Pending::Stream(StreamExchange::stream(cmd, timeout))
            }
            Framing::OneShot => {
                let conn = match self.open_unix_once() {
                    Ok(c) => c,
                    Err(e) => return Err(self.fail(e)),
                };
                Pending::OneShot {
                    ex: StreamExchange::one_shot(cmd, timeout),
                    conn,
                    cmd: cmd.clone(),
                    retried: false,
                }
            }
        };
        self.pending = Some(pending);
        match self.transmit(Instant::now()) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// The descriptor to wait on for readability while a command is outstanding.
    pub fn wait_fd(&self) -> Option<RawFd> {
        match self.pending.as_ref()? {
            Pending::OneShot { conn, .. } => Some(conn.raw_fd()),
            _ => self.conn.as_ref().map(Conn::raw_fd),
        }
    }

    /// Whether this client can serve another command without anything stale on its socket:
    /// a datagram client, connected, no command outstanding, and its last exchange ended
    /// with the reply to its only request.
    pub fn is_clean_idle(&self) -> bool {
        self.pending.is_none()
            && self
                .conn
                .as_ref()
                .is_some_and(|c| c.is_datagram() && !c.dirty)
    }

    /// When [`ControlClient::on_timeout`] is due, while a command is outstanding.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.as_ref().and_then(Pending::poll_timeout)
    }

    /// Reads what is available without blocking and returns the outcome once complete
    /// (`None`: keep waiting, or no command outstanding).
    pub fn on_readable(&mut self) -> Option<Result<Vec<u8>, TransportError>> {
        self.pending.as_ref()?;
        if let Some(r) = self.take_outcome() {
            return Some(r);
        }
        self.read_step(None)
    }

    /// Handles the deadline: retransmits (UDP) or ends the command with a timeout.
    pub fn on_timeout(&mut self, now: Instant) -> Option<Result<Vec<u8>, TransportError>> {
        let p = self.pending.as_mut()?;
        p.handle_timeout(now);
        if let Err(e) = self.transmit(now) {
            return Some(Err(self.fail(e)));
        }
        self.take_outcome()
    }

    /// Abandons the outstanding command, if any. A persistent stream is closed, since its
    /// reply may still arrive.
    pub fn cancel(&mut self) {
        if let Some(p) = self.pending.take() {
            if matches!(p, Pending::Stream(_)) && self.transport != Transport::RtpIo {
                self.conn = None;
            }
        }
    }

    // ---- internals ----

    fn open(&mut self) -> Result<Conn, TransportError> {
        let timeout = self.options.timeout.max(MIN_WAIT);
        match self.transport {
            Transport::Udp | Transport::Udp6 => {
                let v6 = self.transport == Transport::Udp6;
                let addr = self.resolve(v6)?;
                let local: SocketAddr = if v6 {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                } else {
                    (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
                };
                let connect_err = |source| TransportError::Connect {
                    address: self.address.clone(),
                    source,
                };
                let sock = UdpSocket::bind(local).map_err(connect_err)?;
                sock.connect(addr).map_err(connect_err)?;
                // non-blocking for good: commands wait with poll and never toggle it
                sock.set_nonblocking(true).map_err(connect_err)?;
                self.peer = Some(addr);
                Ok(Conn::new(Sock::Udp(sock), Some(true)))
            }
            Transport::Tcp | Transport::Tcp6 => {
                let addr = self.resolve(self.transport == Transport::Tcp6)?;
                let connect_err = |source| TransportError::Connect {
                    address: self.address.clone(),
                    source,
                };
                let s = TcpStream::connect_timeout(&addr, timeout).map_err(connect_err)?;
                // std already checks SO_ERROR after the non-blocking connect; ask once more so a
                // refused connection can never pass as connected (D25)
                if let Some(e) = s.take_error().map_err(connect_err)? {
                    return Err(connect_err(e));
                }
                s.set_nodelay(true).map_err(connect_err)?;
                self.peer = Some(addr);
                Ok(Conn::new(Sock::Tcp(s), Some(false)))
            }
            Transport::Cunix | Transport::Unix => {
                let path = PathBuf::from(&self.address);
                let s = match self.unix_connect {
                    Some(f) => f(&path, timeout),
                    None => UnixStream::connect(&path),
                }
                .map_err(|source| TransportError::Connect {
                    address: self.address.clone(),
                    source,
                })?;
                Ok(Conn::new(Sock::Unix(s), Some(false)))
            }
            Transport::RtpIo => Err(TransportError::Unavailable(
                "rtp.io socket not handed over to this process",
            )),
        }
    }

    fn resolve(&self, ipv6: bool) -> Result<SocketAddr, TransportError> {
        if let Some(a) = self.cached.filter(|a| a.is_ipv6() == ipv6) {
            return Ok(a);
        }
        match (&self.host, self.port) {
            (Some(h), Some(p)) if !self.resolve_names => {
                literal(h, p, ipv6).ok_or_else(|| TransportError::Resolve {
                    address: self.address.clone(),
                    reason: "host name not resolved yet (resolved by the prober)".into(),
                })
            }
            (Some(h), Some(p)) => resolve(h, p, ipv6),
            _ => Err(TransportError::Resolve {
                address: self.address.clone(),
                reason: "not a host[:port] address".into(),
            }),
        }
    }

    fn open_unix_once(&mut self) -> Result<Conn, TransportError> {
        let mut conn = self.open()?;
        let t = self.options.timeout;
        conn.set_write_timeout(t).map_err(TransportError::Io)?;
        conn.set_read_timeout(t).map_err(TransportError::Io)?;
        Ok(conn)
    }

    /// Discards whatever is queued on the persistent socket (late replies to earlier
    /// commands). A stream that turns out closed or broken is reopened. A datagram socket
    /// whose last exchange ended with the reply to its only request has nothing stale queued
    /// and is left alone (a stray datagram would be discarded by its cookie anyway).
    fn drain(&mut self) -> Result<(), TransportError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let datagram = conn.is_datagram();
        if datagram && !conn.dirty {
            return Ok(());
        }
        conn.set_nonblocking(true)?;
        let mut reopen = false;
        let mut scratch = [0u8; 512];
        for _ in 0..MAX_DRAIN_READS {
            match conn.read(&mut scratch) {
                Ok(0) if !datagram => {
                    reopen = true;
                    break;
                }
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // a queued ICMP error from an earlier datagram; reading it clears it
                Err(e) if datagram && e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(_) if !datagram => {
                    reopen = true;
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if reopen && self.transport != Transport::RtpIo {
            self.conn = None;
            self.connect()
        } else if reopen {
            Err(TransportError::Closed)
        } else {
            conn.dirty = false;
            Ok(())
        }
    }

    /// Writes whatever the exchange wants sent now.
    fn transmit(&mut self, now: Instant) -> Result<(), TransportError> {
        let timeout = self.options.timeout;
        let Some(pending) = self.pending.as_mut() else {
            return Ok(());
        };
        let (bytes, conn) = match pending {
            Pending::Datagram(x) => (x.poll_transmit(now), self.conn.as_mut()),
            Pending::Stream(x) => (x.poll_transmit(now), self.conn.as_mut()),
            Pending::OneShot { ex, conn, .. } => (ex.poll_transmit(now), Some(conn)),
        };
        let (Some(bytes), Some(conn)) = (bytes, conn) else {
            return Ok(());
        };
        // until the exchange ends with its reply, whatever it leaves behind may be stale
        conn.dirty = true;
        conn.write_request(bytes, timeout)?;
        Ok(())
    }

    /// One read: blocking up to `wait`, or non-blocking when `wait` is `None`. Feeds the
    /// exchange and returns its outcome if that read completed it.
    fn read_step(&mut self, wait: Option<Duration>) -> Option<Result<Vec<u8>, TransportError>> {
        let mut buf = std::mem::take(&mut self.buf);
        let r = self.read_into(wait, &mut buf);
        self.buf = buf;
        match r {
            Ok(()) => self.take_outcome(),
            Err(e) => Some(Err(self.fail(e))),
        }
    }

    fn read_into(&mut self, wait: Option<Duration>, buf: &mut [u8]) -> Result<(), TransportError> {
        let Some(pending) = self.pending.as_mut() else {
            return Ok(());
        };
        let conn = match pending {
            Pending::OneShot { conn, .. } => conn,
            _ => self.conn.as_mut().ok_or(TransportError::Closed)?,
        };
        let event = match wait {
            Some(w) => {
                conn.set_nonblocking(false)?;
                conn.set_read_timeout(w)?;
                read_event(conn, buf)
            }
            None => {
                conn.set_nonblocking(true)?;
                read_event(conn, buf)
            }
        };
        let now = Instant::now();
        let event = match (event, &mut *pending) {
            (Ok(ev), _) => ev,
            // legacy unix: the relay reset the connection; redo the whole command once
            (Err(e), Pending::OneShot { retried, .. })
                if e.kind() == io::ErrorKind::ConnectionReset && !*retried =>
            {
                return self.retry_one_shot(now);
            }
            (Err(e), _) => return Err(e.into()),
        };
        match (event, pending) {
            (ReadEvent::Nothing, _) => {}
            // a datagram that filled the buffer may be truncated; its body is then longer
            // than MAX_REPLY_LEN anyway and the exchange refuses it
            (ReadEvent::Data(n), Pending::Datagram(x)) => {
                // the reply to the only request sent: nothing of this exchange can follow
                if x.handle_datagram(now, &buf[..n]) && x.attempts() == 1 {
                    if let Some(c) = self.conn.as_mut() {
                        c.dirty = false;
                    }
                }
            }
            (ReadEvent::Data(n), Pending::Stream(x) | Pending::OneShot { ex: x, .. }) => {
                x.handle_data(now, &buf[..n]);
            }
            (ReadEvent::Eof, Pending::Stream(x) | Pending::OneShot { ex: x, .. }) => {
                x.handle_eof(now)
            }
            (ReadEvent::Eof, Pending::Datagram(_)) => {}
        }
        Ok(())
    }

    fn retry_one_shot(&mut self, now: Instant) -> Result<(), TransportError> {
        let Some(Pending::OneShot { cmd, .. }) = self.pending.take() else {
            return Ok(());
        };
        let conn = self.open_unix_once()?;
        let timeout = self.options.timeout.max(MIN_WAIT);
        self.pending = Some(Pending::OneShot {
            ex: StreamExchange::one_shot(&cmd, timeout),
            conn,
            cmd,
            retried: true,
        });
        self.transmit(now)
    }

    fn take_outcome(&mut self) -> Option<Result<Vec<u8>, TransportError>> {
        let out = self.pending.as_mut()?.poll_outcome()?;
        self.pending = None;
        match out {
            Ok(body) => Some(Ok(body)),
            Err(e) => Some(Err(self.fail(TransportError::from_exchange(e)))),
        }
    }

    /// Ends the outstanding command with `e`; a persistent stream is closed (it may be out of
    /// step now) and reopened on next use, as `badproxy` in rtpproxy.c does.
    fn fail(&mut self, e: TransportError) -> TransportError {
        self.pending = None;
        if matches!(
            self.transport,
            Transport::Tcp | Transport::Tcp6 | Transport::Cunix
        ) {
            self.conn = None;
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str) -> NodeSpec {
        crate::core::config::parse_node_list(url).unwrap().remove(0)
    }

    #[test]
    fn resolve_by_family() {
        assert_eq!(
            resolve("127.0.0.1", 5, false).unwrap(),
            "127.0.0.1:5".parse().unwrap()
        );
        assert!(resolve("127.0.0.1", 5, true).is_err());
        assert_eq!(resolve("::1", 5, true).unwrap(), "[::1]:5".parse().unwrap());
        assert_eq!(
            resolve("[::1]", 5, true).unwrap(),
            "[::1]:5".parse().unwrap()
        );
        assert!(resolve("", 5, false).is_err());
    }

    #[test]
    fn construction_does_no_io() {
        let c = ControlClient::new(&spec("udp:192.0.2.1:1"), ClientOptions::default());
        assert!(!c.is_connected());
        assert_eq!(c.wait_fd(), None);
        assert_eq!(c.poll_timeout(), None);
        assert_eq!(c.framing(), Framing::Datagram);
    }

    #[test]
    fn rtpio_without_socket_is_unavailable() {
        let mut c = ControlClient::new(&NodeSpec::rtpio_auto(), ClientOptions::default());
        let mut g = CookieGen::new(1, 2);
        assert!(matches!(
            c.send(&mut g, &Command::version()),
            Err(TransportError::Unavailable(_))
        ));
        // no cookie was used for a stream transport
        assert_eq!(g.peek_seq(), 0);
    }
}
