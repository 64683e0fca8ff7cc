//! Module parameters: the grammars of `rtpproxy_sock`, `rtpp_notify_socket`,
//! `rtpproxy_timeout` and the other modparams, and their validation (spec §1).
//!
//! Layer: `core` (safe, sans-IO). Values arrive as text or integers from the host shell, one
//! call per `modparam` line ([`ModParams::set_str`], [`ModParams::set_int`]); at `mod_init` the
//! shell calls [`ModParams::finish`] and gets a [`ModuleConfig`] of plain Rust values. Nothing
//! here logs, resolves names or touches a socket: errors come back as [`ConfigError`] and the
//! shell writes the log line (`bad modparam rtpproxy_sock="...": <error>`).
//!
//! The C module is followed closely (`rtpproxy_add_rtpproxy_set`, `add_rtpproxy_socks`,
//! `mod_init` in rtpproxy.c). Where it silently accepts a value that can only misbehave later,
//! this module refuses it at configuration time; each such place carries a doc comment that
//! starts with "Deviation:".

use std::fmt;
use std::net::Ipv4Addr;

/// A set id (`N ==` in `rtpproxy_sock`, the DB `set_id` column, `default_set`).
pub type SetId = i32;

/// Port used when an inet node gives none (`udp:host`, `udp:host:`).
pub const DEFAULT_CONTROL_PORT: u16 = 22222;
/// Default of `rtpproxy_disable_tout`, in seconds.
pub const DEFAULT_DISABLE_TOUT: i32 = 60;
/// Default of `rtpproxy_retr`.
pub const DEFAULT_RETR: i32 = 5;
/// Default of `rtpproxy_timeout`, in milliseconds (1 s).
pub const DEFAULT_TIMEOUT_MS: u32 = 1000;
/// Default of `default_set`.
pub const DEFAULT_SET_ID: SetId = 0;
/// Default of `nortpproxy_str` (the module appends CRLF itself).
pub const DEFAULT_MARKER: &str = "a=nortpproxy:yes";
/// Default of `db_table`.
pub const DEFAULT_DB_TABLE: &str = "rtpproxy_sockets";
/// Default of `rtpp_socket_col`.
pub const DEFAULT_SOCKET_COL: &str = "rtpproxy_sock";
/// Default of `set_id_col`.
pub const DEFAULT_SET_ID_COL: &str = "set_id";
/// Default of `generated_sdp_port_min`.
pub const DEFAULT_GEN_PORT_MIN: u16 = 35000;
/// Default of `generated_sdp_port_max`.
pub const DEFAULT_GEN_PORT_MAX: u16 = 65000;
/// Default of `generated_sdp_media_ip`.
pub const DEFAULT_GEN_MEDIA_IP: &str = "127.0.0.1";
/// The one accepted spelling of an `rtp.io` node (compared case-insensitively, as in C).
pub const RTPIO_AUTO: &str = "rtp.io:auto";
/// Longest UNIX socket path that fits `sockaddr_un.sun_path` (108 bytes) with its NUL.
pub const MAX_UNIX_PATH: usize = 107;

/// The string-typed modparams, as the C module's export table types them.
pub const STR_PARAMS: &[&str] = &[
    "nortpproxy_str",
    "rtpproxy_sock",
    "rtpproxy_timeout",
    "db_url",
    "db_table",
    "rtpp_socket_col",
    "set_id_col",
    "rtpp_notify_socket",
    "generated_sdp_media_ip",
];

/// The integer-typed modparams, as the C module's export table types them.
pub const INT_PARAMS: &[&str] = &[
    "rtpproxy_disable_tout",
    "rtpproxy_retr",
    "rtpproxy_autobridge",
    "default_set",
    "generated_sdp_port_min",
    "generated_sdp_port_max",
    "call_map_size",
];

/// Why a modparam value was refused. Messages name what is wrong; the host shell adds the
/// parameter name and the value to the log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The host handed over a string value that is not valid UTF-8 (the shell checks this
    /// before calling [`ModParams::set_str`]).
    #[error("the value is not valid utf-8")]
    NotUtf8,
    /// The parameter name is not one of the module's modparams.
    #[error("unknown rtpproxy parameter {0:?}")]
    UnknownParam(String),
    /// A string value was given to an integer parameter or the other way round.
    #[error("{name} is {expected} parameter")]
    WrongType {
        /// The parameter name.
        name: &'static str,
        /// "a string" or "an integer".
        expected: &'static str,
    },
    /// The text before the first `==` is not an unsigned decimal that fits a set id.
    #[error("invalid set_id value {0:?} (expected an unsigned decimal before \"==\")")]
    InvalidSetId(String),
    /// Nothing but whitespace follows `N ==`.
    #[error("empty rtp_proxy list")]
    EmptyList,
    /// One node of a list is wrong; `reason` says how.
    #[error("in node {node:?}: {reason}")]
    Node {
        /// The whole node token as written.
        node: String,
        /// What is wrong with it.
        reason: Box<ConfigError>,
    },
    /// The node has no URL (`|1.2.3.4`, `=2`).
    #[error("empty url")]
    EmptyUrl,
    /// `URL|` or `URL|=W`: an advertised address that is empty.
    #[error("empty advertised address")]
    EmptyAdvertised,
    /// `URL=W|ADV`: the advertised address was written after the weight.
    #[error("advertised address must come before the weight (URL|ADV=WEIGHT)")]
    AdvertisedAfterWeight,
    /// The text after `=` is not an unsigned decimal.
    #[error("weight {0:?} is not a number")]
    WeightNotANumber(String),
    /// The weight does not fit 32 bits.
    #[error("weight {0} out of range (at most 4294967295)")]
    WeightOutOfRange(String),
    /// `rtp.io:auto` followed by more text.
    #[error("only \"rtp.io:auto\" is supported")]
    RtpIoSuffix,
    /// An inet node without a host (`udp:`, `tcp::22222`).
    #[error("missing host")]
    EmptyHost,
    /// `udp6:[::1]:22222`: the C module resolves the brackets as part of the name.
    #[error("ipv6 literal must be written without brackets (e.g. udp6:::1:22222)")]
    BracketedIpv6,
    /// The port text is not a decimal number.
    #[error("port {0:?} is not a number")]
    PortNotANumber(String),
    /// The port is 0 or above 65535.
    #[error("port {0} out of range (1-65535)")]
    PortOutOfRange(String),
    /// `unix:` / `cunix:` with nothing after it.
    #[error("empty unix socket path")]
    EmptyPath,
    /// The UNIX path does not fit `sun_path`.
    #[error("unix socket path too long ({0} bytes, at most 107)")]
    PathTooLong(usize),
    /// A `tcp:` notify socket without `:PORT`.
    #[error("expected tcp:IPV4:PORT")]
    NotifyFormat,
    /// The notify host is not a dotted-quad IPv4 literal.
    #[error("{0:?} is not an ipv4 address (tcp: takes an ipv4 literal, no host names)")]
    NotIpv4(String),
    /// `rtpproxy_timeout` is empty or whitespace.
    #[error("empty timeout")]
    EmptyTimeout,
    /// `rtpproxy_timeout` is not a decimal number of seconds.
    #[error("timeout {0:?} is not a number of seconds")]
    TimeoutNotANumber(String),
    /// `rtpproxy_timeout` is negative.
    #[error("timeout {0:?} is negative")]
    NegativeTimeout(String),
    /// `rtpproxy_timeout` truncates to 0 ms.
    #[error("timeout {0:?} is below 1 ms")]
    TimeoutTooSmall(String),
    /// `rtpproxy_timeout` does not fit the C `int` of milliseconds.
    #[error("timeout {0:?} is too large")]
    TimeoutTooLarge(String),
    /// `rtpproxy_retr` below 1.
    #[error("rtpproxy_retr must be at least 1, got {0}")]
    RetrTooSmall(i64),
    /// An integer parameter outside its range.
    #[error("{name} value {value} out of range ({min}-{max})")]
    IntOutOfRange {
        /// The parameter name.
        name: &'static str,
        /// The value given.
        value: i64,
        /// Smallest accepted value.
        min: i64,
        /// Largest accepted value.
        max: i64,
    },
    /// A string parameter that must not be empty was empty.
    #[error("{0} must not be empty")]
    EmptyValue(&'static str),
    /// `generated_sdp_media_ip` would break the SDP lines it is written into.
    #[error("generated_sdp_media_ip must not contain whitespace or control characters")]
    BadMediaIp,
    /// No `rtpproxy_sock`, no `db_url` and no `rtp.io` module (spec §1.6).
    #[error("no rtpproxy set specified")]
    NoSetSpecified,
}

impl ConfigError {
    /// The innermost reason: for [`ConfigError::Node`] the node's own error, else `self`.
    pub fn root(&self) -> &Self {
        match self {
            Self::Node { reason, .. } => reason.root(),
            other => other,
        }
    }

    fn in_node(node: &str, reason: Self) -> Self {
        Self::Node {
            node: node.to_owned(),
            reason: Box::new(reason),
        }
    }
}

/// Control-socket transport of one node (spec §1.2 table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// `udp:` datagrams over IPv4, with cookies and retransmissions.
    Udp,
    /// `udp6:` datagrams over IPv6.
    Udp6,
    /// `tcp:` persistent stream over IPv4, newline framing.
    Tcp,
    /// `tcp6:` persistent stream over IPv6.
    Tcp6,
    /// `unix:` or no prefix: one UNIX stream connection per command (legacy).
    Unix,
    /// `cunix:` persistent UNIX stream, newline framing.
    Cunix,
    /// `rtp.io:auto`: a per-process fd from the `rtp.io` module.
    RtpIo,
}

/// Prefixes recognised in front of a node URL, in the order the C module tries them.
const PREFIXES: [(&str, Transport); 6] = [
    ("udp:", Transport::Udp),
    ("udp6:", Transport::Udp6),
    ("tcp:", Transport::Tcp),
    ("tcp6:", Transport::Tcp6),
    ("unix:", Transport::Unix),
    ("cunix:", Transport::Cunix),
];

impl Transport {
    /// True for the host:port kinds (`udp:`, `udp6:`, `tcp:`, `tcp6:`).
    pub fn is_inet(self) -> bool {
        matches!(self, Self::Udp | Self::Udp6 | Self::Tcp | Self::Tcp6)
    }

    /// True for the kinds resolved as IPv6 (`udp6:`, `tcp6:`).
    pub fn is_ipv6(self) -> bool {
        matches!(self, Self::Udp6 | Self::Tcp6)
    }

    /// True for the datagram kinds: cookies and `rtpproxy_retr` retransmissions apply.
    pub fn is_datagram(self) -> bool {
        matches!(self, Self::Udp | Self::Udp6)
    }

    /// True for the UNIX-path kinds (`unix:`/no prefix, `cunix:`).
    pub fn is_unix(self) -> bool {
        matches!(self, Self::Unix | Self::Cunix)
    }

    /// The canonical lower-case prefix (`"unix:"` for legacy UNIX, `"rtp.io:auto"` for rtp.io).
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Udp => "udp:",
            Self::Udp6 => "udp6:",
            Self::Tcp => "tcp:",
            Self::Tcp6 => "tcp6:",
            Self::Unix => "unix:",
            Self::Cunix => "cunix:",
            Self::RtpIo => RTPIO_AUTO,
        }
    }
}

/// One node as written in an `rtpproxy_sock` value or a DB row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// The node identity (`rn_url`): the token before `|` / `=`; shown by MI, events, sock_var.
    pub url: String,
    /// Transport from the (case-insensitive) prefix.
    pub transport: Transport,
    /// The URL without its prefix: a path (UNIX kinds) or `host[:port]`; empty for rtp.io.
    pub address: String,
    /// Advertised address (`URL|ADV`), used verbatim in SDP.
    pub adv_address: Option<String>,
    /// Weight (`=N`), 1 when absent.
    pub weight: u32,
    /// Global 0-based index (`rn_index`, spec §1.2 rule 6): the node's position in definition
    /// order across every value (or DB row) of one load, whatever set it belongs to. Also the
    /// index into the per-process socket table. [`parse_node_list`] numbers the nodes of its
    /// list from 0; [`SetsBuilder`] (and so [`build_sets`]) renumbers them globally.
    pub index: usize,
}

impl NodeSpec {
    /// The host part of an inet node: the address up to its last `:` (the whole address when
    /// there is none). `None` for UNIX and rtp.io nodes. `udp6:::1` (address `::1`) yields
    /// `:` (C quirk: `connect_rtpp_node` cuts at the last `:` too).
    pub fn host(&self) -> Option<&str> {
        self.transport
            .is_inet()
            .then(|| split_host_port(&self.address).0)
    }

    /// The port of an inet node: what follows the last `:`, [`DEFAULT_CONTROL_PORT`] when that
    /// is missing or empty. `udp6:::1` yields port 1 (C quirk). `None` for UNIX and rtp.io
    /// nodes, or when the port text is not a valid port (never the case for parsed nodes).
    pub fn port(&self) -> Option<u16> {
        if !self.transport.is_inet() {
            return None;
        }
        parse_port(split_host_port(&self.address).1).ok()
    }

    /// The node every process gets from `rtp.io` when no socket is configured (spec §1.6).
    pub fn rtpio_auto() -> Self {
        Self {
            url: RTPIO_AUTO.to_owned(),
            transport: Transport::RtpIo,
            address: String::new(),
            adv_address: None,
            weight: 1,
            index: 0,
        }
    }
}

/// A set of nodes under one id, in definition order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetSpec {
    /// The set id (`N ==`, or `default_set`).
    pub id: i32,
    /// Nodes in definition order.
    pub nodes: Vec<NodeSpec>,
}

/// Where the notification listener listens (`rtpp_notify_socket`, spec §1.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifySocket {
    /// `tcp:IPv4:PORT`.
    Tcp {
        /// Listen address (IPv4 literal).
        ip: Ipv4Addr,
        /// Listen port.
        port: u16,
    },
    /// `unix:/path` or a bare path (the `unix:` prefix stripped).
    Unix(String),
}

impl fmt::Display for NotifySocket {
    /// The configured socket as it is announced to RTPProxy before capability adjustments:
    /// `tcp:IP:PORT` (canonical spelling), or the bare UNIX path.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp { ip, port } => write!(f, "tcp:{ip}:{port}"),
            Self::Unix(path) => f.write_str(path),
        }
    }
}

/// C `isspace` in the "C" locale: the separators the C module splits node lists on.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0B' | '\x0C' | '\r')
}

fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    text.len() >= prefix.len()
        && text.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// Splits `host[:port]` at the last `:`; the port text is empty when there is no `:`.
fn split_host_port(address: &str) -> (&str, &str) {
    match address.rfind(':') {
        Some(i) => (&address[..i], &address[i + 1..]),
        None => (address, ""),
    }
}

/// Port text of an inet node or notify socket: empty means the default control port.
fn parse_port(text: &str) -> Result<u16, ConfigError> {
    if text.is_empty() {
        return Ok(DEFAULT_CONTROL_PORT);
    }
    parse_nonzero_port(text)
}

fn parse_nonzero_port(text: &str) -> Result<u16, ConfigError> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ConfigError::PortNotANumber(text.to_owned()));
    }
    match text.parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(ConfigError::PortOutOfRange(text.to_owned())),
    }
}

/// Splits the transport prefix off a node URL (mirrors the prefix chain of
/// `add_rtpproxy_socks`). An unknown prefix is no prefix: the whole URL is a legacy UNIX path.
fn split_prefix(url: &str) -> Result<(Transport, &str), ConfigError> {
    for (prefix, transport) in PREFIXES {
        if starts_with_ignore_case(url, prefix) {
            return Ok((transport, &url[prefix.len()..]));
        }
    }
    if starts_with_ignore_case(url, RTPIO_AUTO) {
        if url.len() != RTPIO_AUTO.len() {
            return Err(ConfigError::RtpIoSuffix);
        }
        return Ok((Transport::RtpIo, ""));
    }
    Ok((Transport::Unix, url))
}

/// Checks the address of one node for its transport.
///
/// Deviation: the C module accepts any address and fails later, at connect time (child init)
/// or silently (a truncated UNIX path). Here an empty host or path, a bracketed IPv6 literal,
/// a port that is not a number, port 0 or a port above 65535, and a UNIX path longer than
/// `sun_path` allows are refused at configuration time.
fn check_address(transport: Transport, address: &str) -> Result<(), ConfigError> {
    match transport {
        Transport::RtpIo => Ok(()),
        Transport::Unix | Transport::Cunix => check_unix_path(address),
        Transport::Udp | Transport::Udp6 | Transport::Tcp | Transport::Tcp6 => {
            if address.contains(['[', ']']) {
                return Err(ConfigError::BracketedIpv6);
            }
            let (host, port) = split_host_port(address);
            if host.is_empty() {
                return Err(ConfigError::EmptyHost);
            }
            parse_port(port).map(drop)
        }
    }
}

fn check_unix_path(path: &str) -> Result<(), ConfigError> {
    if path.is_empty() {
        Err(ConfigError::EmptyPath)
    } else if path.len() > MAX_UNIX_PATH {
        Err(ConfigError::PathTooLong(path.len()))
    } else {
        Ok(())
    }
}

/// Parses the weight text after `=`.
///
/// Deviation: the C module reads it with `strtoul`, so garbage, an empty weight or a negative
/// one silently becomes 0 or a huge number (and `URL=W|ADV` quietly drops the advertised
/// address). Only a plain unsigned decimal that fits 32 bits is accepted here.
fn parse_weight(text: &str) -> Result<u32, ConfigError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        if text.contains('|') {
            return Err(ConfigError::AdvertisedAfterWeight);
        }
        return Err(ConfigError::WeightNotANumber(text.to_owned()));
    }
    text.parse::<u32>()
        .map_err(|_| ConfigError::WeightOutOfRange(text.to_owned()))
}

/// Parses one whitespace-free NODE token: `URL[|ADV][=WEIGHT]` (spec §1.2 rule 3).
fn parse_node(token: &str, index: usize) -> Result<NodeSpec, ConfigError> {
    parse_node_inner(token, index).map_err(|reason| ConfigError::in_node(token, reason))
}

/// Deviation: an empty advertised address (`URL|`, `URL|=2`) is refused; the C module stores
/// it and then writes an empty address into the SDP.
fn parse_node_inner(token: &str, index: usize) -> Result<NodeSpec, ConfigError> {
    // The first `=` starts the weight; the last `|` before it starts the advertised address.
    let (head, weight_text) = match token.find('=') {
        Some(i) => (&token[..i], Some(&token[i + 1..])),
        None => (token, None),
    };
    let (url, adv) = match head.rfind('|') {
        Some(i) => (&head[..i], Some(&head[i + 1..])),
        None => (head, None),
    };
    if url.is_empty() {
        return Err(ConfigError::EmptyUrl);
    }
    let weight = weight_text.map_or(Ok(1), parse_weight)?;
    if adv == Some("") {
        return Err(ConfigError::EmptyAdvertised);
    }
    let (transport, address) = split_prefix(url)?;
    check_address(transport, address)?;
    Ok(NodeSpec {
        url: url.to_owned(),
        transport,
        address: address.to_owned(),
        adv_address: adv.map(str::to_owned),
        weight,
        index,
    })
}

/// Parses the NODE-list grammar alone: whitespace-separated `URL[|ADV][=WEIGHT]` tokens
/// (spec §1.2 rules 3–5). Use it for DB rows, whose set id comes from a column.
///
/// A blank list yields no nodes (a blank DB row adds nothing, as in C). The nodes' `index`
/// counts from 0 within this list. Errors name the offending token ([`ConfigError::Node`]).
pub fn parse_node_list(list: &str) -> Result<Vec<NodeSpec>, ConfigError> {
    list.split(is_c_space)
        .filter(|token| !token.is_empty())
        .enumerate()
        .map(|(index, token)| parse_node(token, index))
        .collect()
}

/// Parses the set id text before `==` (already right-trimmed).
///
/// Deviation: a set id above `i32::MAX` is refused; the C module wraps it to a negative id.
fn parse_set_id(text: &str) -> Result<SetId, ConfigError> {
    let invalid = || ConfigError::InvalidSetId(text.to_owned());
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    text.parse::<SetId>().map_err(|_| invalid())
}

/// Parses one `rtpproxy_sock` value: `[SETID ==] NODE (WS NODE)*` (spec §1.2, mirrors
/// `rtpproxy_add_rtpproxy_set`). Call it once per value, in order.
///
/// Returns `Ok(None)` when the value is empty or whitespace only: the C module stores such a
/// value (so "a socket was given", spec §1.6) but it yields no node. The first `==` anywhere
/// splits off the set id; without it the nodes go to `default_set`.
pub fn parse_sock_value(
    value: &str,
    default_set: SetId,
) -> Result<Option<(SetId, Vec<NodeSpec>)>, ConfigError> {
    let rest = value.trim_start_matches(is_c_space);
    if rest.is_empty() {
        return Ok(None);
    }
    let (set_id, list) = match rest.find("==") {
        Some(i) => {
            let id_text = rest[..i].trim_end_matches(is_c_space);
            (parse_set_id(id_text)?, &rest[i + 2..])
        }
        None => (default_set, rest),
    };
    let nodes = parse_node_list(list)?;
    if nodes.is_empty() {
        return Err(ConfigError::EmptyList);
    }
    Ok(Some((set_id, nodes)))
}

/// Accumulates nodes into sets the way the C module does (spec §1.2 rules 6–7, §2.6): a set
/// id seen again appends to that set, sets stay in order of first appearance, nodes in
/// definition order, and each node gets the next global index.
///
/// Use one builder per load: at `mod_init` for the modparams ([`build_sets`]), and for each
/// DB load or `rtpproxy_reload` ([`SetsBuilder::reloading`]).
#[derive(Debug, Clone, Default)]
pub struct SetsBuilder {
    sets: Vec<SetSpec>,
    next_index: usize,
}

impl SetsBuilder {
    /// An empty builder: no sets, the index counter at 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder for a reload: every set of `previous` is kept, emptied and in place (sets are
    /// never deleted, spec §2.6), and the index counter restarts at 0.
    pub fn reloading(previous: &[SetSpec]) -> Self {
        Self {
            sets: previous
                .iter()
                .map(|set| SetSpec {
                    id: set.id,
                    nodes: Vec::new(),
                })
                .collect(),
            next_index: 0,
        }
    }

    /// Appends `nodes` to set `id` (created at the end if new), renumbering their global
    /// index. Adding no nodes creates no set, as in C.
    pub fn add_nodes(&mut self, id: SetId, nodes: Vec<NodeSpec>) {
        if nodes.is_empty() {
            return;
        }
        let pos = match self.sets.iter().position(|set| set.id == id) {
            Some(pos) => pos,
            None => {
                self.sets.push(SetSpec {
                    id,
                    nodes: Vec::new(),
                });
                self.sets.len() - 1
            }
        };
        let set = &mut self.sets[pos];
        for mut node in nodes {
            node.index = self.next_index;
            self.next_index += 1;
            set.nodes.push(node);
        }
    }

    /// Parses and adds one `rtpproxy_sock` value (see [`parse_sock_value`]).
    pub fn add_sock_value(&mut self, value: &str, default_set: SetId) -> Result<(), ConfigError> {
        if let Some((id, nodes)) = parse_sock_value(value, default_set)? {
            self.add_nodes(id, nodes);
        }
        Ok(())
    }

    /// Parses and adds one DB row (spec §1.4): with a set id `>= 0` the socket column is a
    /// plain node list for that set; with a negative one it is parsed like a modparam value
    /// (`N ==` allowed, `default_set` otherwise). A blank socket column adds nothing.
    pub fn add_db_row(
        &mut self,
        socket: &str,
        set_id: SetId,
        default_set: SetId,
    ) -> Result<(), ConfigError> {
        if set_id < 0 {
            return self.add_sock_value(socket, default_set);
        }
        let nodes = parse_node_list(socket)?;
        self.add_nodes(set_id, nodes);
        Ok(())
    }

    /// How many nodes were added so far (the next global index).
    pub fn node_count(&self) -> usize {
        self.next_index
    }

    /// The sets built, in order of first appearance.
    pub fn finish(self) -> Vec<SetSpec> {
        self.sets
    }
}

/// Builds the sets from the stored `rtpproxy_sock` values, in order (spec §1.2 rule 7).
/// `default_set` is the final value of that modparam, wherever it appeared in the config.
pub fn build_sets(values: &[String], default_set: SetId) -> Result<Vec<SetSpec>, ConfigError> {
    let mut builder = SetsBuilder::new();
    for value in values {
        builder.add_sock_value(value, default_set)?;
    }
    Ok(builder.finish())
}

/// Parses `rtpp_notify_socket` (spec §1.5): `tcp:IPv4:PORT`, `unix:/path` or a bare path.
/// Prefixes are case-sensitive here: anything not starting with `tcp:` is a UNIX path (with a
/// leading `unix:` stripped), so `TCP:...` and `udp:...` are paths, as in C.
///
/// Deviation: the C module takes the IP with `inet_addr` (which also accepts forms such as
/// `10.1` or hex octets), binds a listener on port 0, and truncates long UNIX paths. Here the
/// IP must be a dotted-quad IPv4 literal, the port 1..=65535, and the UNIX path non-empty and
/// no longer than [`MAX_UNIX_PATH`] bytes.
pub fn parse_notify_socket(value: &str) -> Result<NotifySocket, ConfigError> {
    if let Some(rest) = value.strip_prefix("tcp:") {
        let Some((ip_text, port_text)) = rest.rsplit_once(':') else {
            return Err(ConfigError::NotifyFormat);
        };
        if port_text.is_empty() {
            return Err(ConfigError::NotifyFormat);
        }
        let ip = ip_text
            .parse::<Ipv4Addr>()
            .map_err(|_| ConfigError::NotIpv4(ip_text.to_owned()))?;
        let port = parse_nonzero_port(port_text)?;
        return Ok(NotifySocket::Tcp { ip, port });
    }
    let path = value.strip_prefix("unix:").unwrap_or(value);
    check_unix_path(path)?;
    Ok(NotifySocket::Unix(path.to_owned()))
}

/// Parses `rtpproxy_timeout`: seconds as a decimal float, stored as whole milliseconds.
/// Mirrors `mod_init`: the value is read as a C `float` and `(int)(value * 1000)` is kept, so
/// the same text gives the same milliseconds as in C (`"0.2"` → 200).
///
/// Deviation: the C module ignores text that is not a number (keeping 1 s), reads an
/// uninitialised float for an empty value, accepts negative values and trailing text, and
/// turns values below 1 ms into a zero wait that fails every command. Here an empty value,
/// anything but a plain decimal (optional sign, fraction and exponent; leading and trailing
/// whitespace allowed), a negative value, a value below 1 ms and one above `i32::MAX` ms
/// are refused.
pub fn parse_timeout_ms(value: &str) -> Result<u32, ConfigError> {
    let text = value.trim_matches(is_c_space);
    if text.is_empty() {
        return Err(ConfigError::EmptyTimeout);
    }
    let not_a_number = || ConfigError::TimeoutNotANumber(text.to_owned());
    // Rust's float syntax also takes "inf" and "nan"; only digits, sign, point and exponent
    // are a number of seconds.
    if !text.bytes().any(|b| b.is_ascii_digit())
        || !text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'+' | b'-' | b'e' | b'E'))
    {
        return Err(not_a_number());
    }
    let seconds: f32 = text.parse().map_err(|_| not_a_number())?;
    if seconds < 0.0 {
        return Err(ConfigError::NegativeTimeout(text.to_owned()));
    }
    let ms = seconds * 1000.0;
    if ms < 1.0 {
        return Err(ConfigError::TimeoutTooSmall(text.to_owned()));
    }
    if ms >= 2_147_483_648.0 {
        return Err(ConfigError::TimeoutTooLarge(text.to_owned()));
    }
    // In range 1..2^31 after the checks above, so the truncating cast is exact C `(int)`.
    Ok(ms as u32)
}

/// Normalises `nortpproxy_str` (mirrors `mod_init`): trailing `\r`/`\n` characters are
/// stripped (the module adds CRLF itself); `None` when nothing is left, which disables the
/// marker entirely (neither checked nor inserted).
pub fn normalize_marker(value: &str) -> Option<String> {
    let marker = value.trim_end_matches(['\r', '\n']);
    (!marker.is_empty()).then(|| marker.to_owned())
}

/// Deviation: the C module only refuses an empty `generated_sdp_media_ip`; a value with
/// whitespace or control characters would corrupt the generated `o=`/`c=` lines, so it is
/// refused too.
fn check_media_ip(value: &str) -> Result<(), ConfigError> {
    if value.is_empty() {
        Err(ConfigError::EmptyValue("generated_sdp_media_ip"))
    } else if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err(ConfigError::BadMediaIp)
    } else {
        Ok(())
    }
}

/// Deviation: an empty `db_url`, `db_table`, `rtpp_socket_col` or `set_id_col` is refused;
/// the C module takes it and fails later with a DB error (or builds a broken query).
fn non_empty(name: &'static str, value: &str) -> Result<String, ConfigError> {
    if value.is_empty() {
        Err(ConfigError::EmptyValue(name))
    } else {
        Ok(value.to_owned())
    }
}

fn int_in_range(name: &'static str, value: i64, min: i64, max: i64) -> Result<i64, ConfigError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::IntOutOfRange {
            name,
            value,
            min,
            max,
        })
    }
}

/// A C `int` modparam.
fn c_int(name: &'static str, value: i64) -> Result<i32, ConfigError> {
    let value = int_in_range(name, value, i32::MIN.into(), i32::MAX.into())?;
    // In range by the check above.
    Ok(value as i32)
}

/// `generated_sdp_port_min/max`: `0..=65535`, as C checks at `mod_init`.
fn gen_port(name: &'static str, value: i64) -> Result<u16, ConfigError> {
    let value = int_in_range(name, value, 0, u16::MAX.into())?;
    // In range by the check above.
    Ok(value as u16)
}

/// Finds `name` among the modparams; the static name is returned for error values.
fn lookup(table: &[&'static str], name: &str) -> Option<&'static str> {
    table.iter().copied().find(|known| *known == name)
}

/// Where the DB provisioning reads the sets from (spec §1.4); present when `db_url` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbConfig {
    /// `db_url`.
    pub url: String,
    /// `db_table`.
    pub table: String,
    /// `rtpp_socket_col`.
    pub socket_col: String,
    /// `set_id_col`.
    pub set_id_col: String,
}

/// The modparams (the C module's 15 and ours) as the config gave them, with their defaults (spec §1.1).
///
/// The host shell creates one with [`ModParams::default`], calls [`ModParams::set_str`] or
/// [`ModParams::set_int`] once per `modparam` line (each value is checked at once, so grammar
/// errors surface at config-parse time), and calls [`ModParams::finish`] at `mod_init`.
#[derive(Debug, Clone)]
pub struct ModParams {
    sock_values: Vec<String>,
    disable_tout: i32,
    retr: i32,
    timeout_ms: u32,
    autobridge: bool,
    default_set: SetId,
    marker: String,
    db_url: Option<String>,
    db_table: String,
    socket_col: String,
    set_id_col: String,
    notify: Option<NotifySocket>,
    gen_port_min: u16,
    gen_port_max: u16,
    gen_media_ip: String,
    call_map_size: u32,
}

impl Default for ModParams {
    fn default() -> Self {
        Self {
            sock_values: Vec::new(),
            disable_tout: DEFAULT_DISABLE_TOUT,
            retr: DEFAULT_RETR,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            autobridge: false,
            default_set: DEFAULT_SET_ID,
            marker: DEFAULT_MARKER.to_owned(),
            db_url: None,
            db_table: DEFAULT_DB_TABLE.to_owned(),
            socket_col: DEFAULT_SOCKET_COL.to_owned(),
            set_id_col: DEFAULT_SET_ID_COL.to_owned(),
            notify: None,
            gen_port_min: DEFAULT_GEN_PORT_MIN,
            gen_port_max: DEFAULT_GEN_PORT_MAX,
            gen_media_ip: DEFAULT_GEN_MEDIA_IP.to_owned(),
            call_map_size: crate::core::control::callmap::DEFAULT_ENTRIES,
        }
    }
}

impl ModParams {
    /// Sets a string modparam by name. Call once per `modparam` line.
    ///
    /// `rtpproxy_sock` may repeat: each non-empty value is checked and appended (an empty
    /// value is ignored; a whitespace-only one is kept and yields no node). An empty
    /// `rtpp_notify_socket` is ignored, as in C; otherwise the last value of a parameter
    /// wins. An empty `nortpproxy_str` disables the marker.
    ///
    /// Each value goes through the same checks as its parser ([`parse_sock_value`],
    /// [`parse_timeout_ms`], [`parse_notify_socket`]), whose docs list their deviations.
    ///
    /// Deviation: `rtpproxy_sock` values are checked even when `db_url` is set, although the C
    /// module then never reads them (spec §1.4); a broken value is refused either way.
    ///
    /// Deviation: an empty `db_url`, `db_table`, `rtpp_socket_col` or `set_id_col` is refused
    /// (C fails later at bind/query time), and `generated_sdp_media_ip` must be non-empty (as
    /// C) and free of whitespace and control characters (beyond C).
    pub fn set_str(&mut self, name: &str, value: &str) -> Result<(), ConfigError> {
        let Some(name) = lookup(STR_PARAMS, name) else {
            return Err(Self::unknown_or_wrong(name, "a string"));
        };
        match name {
            "rtpproxy_sock" => {
                if !value.is_empty() {
                    parse_sock_value(value, self.default_set)?;
                    self.sock_values.push(value.to_owned());
                }
            }
            "rtpproxy_timeout" => self.timeout_ms = parse_timeout_ms(value)?,
            "nortpproxy_str" => self.marker = value.to_owned(),
            "db_url" => self.db_url = Some(non_empty(name, value)?),
            "db_table" => self.db_table = non_empty(name, value)?,
            "rtpp_socket_col" => self.socket_col = non_empty(name, value)?,
            "set_id_col" => self.set_id_col = non_empty(name, value)?,
            "rtpp_notify_socket" => {
                if !value.is_empty() {
                    self.notify = Some(parse_notify_socket(value)?);
                }
            }
            "generated_sdp_media_ip" => {
                check_media_ip(value)?;
                self.gen_media_ip = value.to_owned();
            }
            _ => unreachable!("every STR_PARAMS name is handled"),
        }
        Ok(())
    }

    /// Sets an integer modparam by name. Call once per `modparam` line; the last value wins.
    ///
    /// `rtpproxy_disable_tout` accepts negative values, as in C: a failed node then becomes
    /// eligible for re-probing at once (its recheck time is already in the past).
    ///
    /// Deviation: `rtpproxy_retr` below 1 is refused (in C every UDP command then fails
    /// without being sent), and a value outside the C `int` range is refused for every
    /// integer parameter. `generated_sdp_port_min/max` outside `0..=65535` are refused, as in C.
    pub fn set_int(&mut self, name: &str, value: i64) -> Result<(), ConfigError> {
        let Some(name) = lookup(INT_PARAMS, name) else {
            return Err(Self::unknown_or_wrong(name, "an integer"));
        };
        match name {
            "rtpproxy_disable_tout" => self.disable_tout = c_int(name, value)?,
            "rtpproxy_retr" => {
                if value < 1 {
                    return Err(ConfigError::RetrTooSmall(value));
                }
                self.retr = c_int(name, value)?;
            }
            "rtpproxy_autobridge" => self.autobridge = c_int(name, value)? != 0,
            "default_set" => self.default_set = c_int(name, value)?,
            "generated_sdp_port_min" => self.gen_port_min = gen_port(name, value)?,
            "generated_sdp_port_max" => self.gen_port_max = gen_port(name, value)?,
            "call_map_size" => {
                use crate::core::control::callmap::{MAX_ENTRIES, MIN_ENTRIES};
                let v = int_in_range(name, value, MIN_ENTRIES.into(), MAX_ENTRIES.into())?;
                // in range by the check above
                self.call_map_size = v as u32;
            }
            _ => unreachable!("every INT_PARAMS name is handled"),
        }
        Ok(())
    }

    /// The error for a name that is not in the table of the type it was given as.
    fn unknown_or_wrong(name: &str, given: &'static str) -> ConfigError {
        let other = if given == "a string" {
            lookup(INT_PARAMS, name).map(|n| (n, "an integer"))
        } else {
            lookup(STR_PARAMS, name).map(|n| (n, "a string"))
        };
        match other {
            Some((name, expected)) => ConfigError::WrongType { name, expected },
            None => ConfigError::UnknownParam(name.to_owned()),
        }
    }

    /// The stored `rtpproxy_sock` values, in config order (whitespace-only ones included).
    pub fn sock_values(&self) -> &[String] {
        &self.sock_values
    }

    /// True when `finish` will swap `generated_sdp_port_min/max` (max < min): the C module
    /// logs a NOTICE for it.
    pub fn gen_ports_swapped(&self) -> bool {
        self.gen_port_max < self.gen_port_min
    }

    /// Cross-field step at `mod_init`: builds the sets with the final `default_set`, swaps the
    /// generated-SDP ports when max < min (as C, not an error), normalises the marker.
    ///
    /// With `db_url` set, the `rtpproxy_sock` values are not applied (spec §1.4 quirk: the
    /// sets come from the DB only); `sock_values_given` still reports them so the shell can
    /// warn. The "no socket at all" rule needs to know whether `rtp.io` is loaded: the shell
    /// applies it afterwards with [`ModuleConfig::resolve_missing_sockets`].
    pub fn finish(&self) -> Result<ModuleConfig, ConfigError> {
        let (db, sets) = match &self.db_url {
            Some(url) => (
                Some(DbConfig {
                    url: url.clone(),
                    table: self.db_table.clone(),
                    socket_col: self.socket_col.clone(),
                    set_id_col: self.set_id_col.clone(),
                }),
                Vec::new(),
            ),
            None => (None, build_sets(&self.sock_values, self.default_set)?),
        };
        let (gen_port_min, gen_port_max) = if self.gen_ports_swapped() {
            (self.gen_port_max, self.gen_port_min)
        } else {
            (self.gen_port_min, self.gen_port_max)
        };
        Ok(ModuleConfig {
            sets,
            disable_tout: self.disable_tout,
            retr: self.retr,
            timeout_ms: self.timeout_ms,
            autobridge: self.autobridge,
            default_set: self.default_set,
            marker: normalize_marker(&self.marker),
            db,
            notify: self.notify.clone(),
            gen_port_min,
            gen_port_max,
            gen_media_ip: self.gen_media_ip.clone(),
            sock_values_given: !self.sock_values.is_empty(),
            call_map_size: self.call_map_size,
        })
    }
}

/// The validated module configuration, built once at `mod_init` by [`ModParams::finish`].
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleConfig {
    /// Sets from `rtpproxy_sock`, in order of first appearance (empty in DB mode).
    pub sets: Vec<SetSpec>,
    /// `rtpproxy_disable_tout`, seconds (may be negative, see [`ModParams::set_int`]).
    pub disable_tout: i32,
    /// `rtpproxy_retr`, at least 1.
    pub retr: i32,
    /// `rtpproxy_timeout` in milliseconds.
    pub timeout_ms: u32,
    /// `rtpproxy_autobridge != 0` (the shell logs the "does not work with forking" warning).
    pub autobridge: bool,
    /// `default_set`.
    pub default_set: SetId,
    /// Normalised `nortpproxy_str`; `None` disables the marker.
    pub marker: Option<String>,
    /// DB provisioning, when `db_url` is set.
    pub db: Option<DbConfig>,
    /// `rtpp_notify_socket`, when set.
    pub notify: Option<NotifySocket>,
    /// `generated_sdp_port_min` (after the swap).
    pub gen_port_min: u16,
    /// `generated_sdp_port_max` (after the swap).
    pub gen_port_max: u16,
    /// `generated_sdp_media_ip`.
    pub gen_media_ip: String,
    /// `call_map_size`: entries of the shared Call-ID -> node map (ours, not in the C module).
    pub call_map_size: u32,
    /// Whether any non-empty `rtpproxy_sock` value was stored (even whitespace-only).
    pub sock_values_given: bool,
}

impl ModuleConfig {
    /// Every node with its global index and set id, in index order, i.e. definition order
    /// across all values (not set order: `1 == a`, `2 == b`, `1 == c` yields a=0, b=1, c=2).
    pub fn indexed_nodes(&self) -> impl Iterator<Item = (usize, SetId, &NodeSpec)> + '_ {
        let mut nodes: Vec<(usize, SetId, &NodeSpec)> = self
            .sets
            .iter()
            .flat_map(|set| set.nodes.iter().map(move |node| (node.index, set.id, node)))
            .collect();
        nodes.sort_by_key(|(index, _, _)| *index);
        nodes.into_iter()
    }

    /// Total number of nodes (the size of the per-process socket table).
    pub fn node_count(&self) -> usize {
        self.sets.iter().map(|set| set.nodes.len()).sum()
    }

    /// The set with this id, if any.
    pub fn set(&self, id: SetId) -> Option<&SetSpec> {
        self.sets.iter().find(|set| set.id == id)
    }

    /// The set named by `default_set`; `None` means functions called without a set fail
    /// (the shell logs the C module's WARNING, spec §1.3).
    pub fn default_set_spec(&self) -> Option<&SetSpec> {
        self.set(self.default_set)
    }

    /// True when `rtpproxy_sock` values were given but `db_url` makes them unused (spec §1.4);
    /// the shell may warn about it.
    pub fn sock_values_ignored(&self) -> bool {
        self.db.is_some() && self.sock_values_given
    }

    /// Applies the startup rule for "no socket configured" (spec §1.6). Call it right after
    /// [`ModParams::finish`]: without `db_url` and without any `rtpproxy_sock` value, an
    /// implicit `rtp.io:auto` node is added to `default_set` when the `rtp.io` module is
    /// available, else startup fails with [`ConfigError::NoSetSpecified`].
    pub fn resolve_missing_sockets(&mut self, rtp_io_available: bool) -> Result<(), ConfigError> {
        if self.db.is_some() || self.sock_values_given {
            return Ok(());
        }
        if !rtp_io_available {
            return Err(ConfigError::NoSetSpecified);
        }
        let mut builder = SetsBuilder::new();
        builder.add_nodes(self.default_set, vec![NodeSpec::rtpio_auto()]);
        self.sets = builder.finish();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(value: &str) -> (SetId, Vec<NodeSpec>) {
        parse_sock_value(value, 0)
            .unwrap_or_else(|e| panic!("{value:?} refused: {e}"))
            .unwrap_or_else(|| panic!("{value:?} yielded no node"))
    }

    fn node(token: &str) -> NodeSpec {
        let nodes = parse_node_list(token).unwrap_or_else(|e| panic!("{token:?} refused: {e}"));
        assert_eq!(nodes.len(), 1, "{token:?}");
        nodes.into_iter().next().unwrap()
    }

    fn sock_err(value: &str) -> ConfigError {
        match parse_sock_value(value, 0) {
            Err(e) => e,
            Ok(v) => panic!("{value:?} accepted: {v:?}"),
        }
    }

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| (*v).to_owned()).collect()
    }

    // ---- user doc examples (rtpproxy module 3.6, section 1.5) ----

    #[test]
    fn doc_example_weight() {
        let (set, nodes) = one("udp:localhost:22222=2");
        assert_eq!(set, 0);
        assert_eq!(
            nodes,
            vec![NodeSpec {
                url: "udp:localhost:22222".into(),
                transport: Transport::Udp,
                address: "localhost:22222".into(),
                adv_address: None,
                weight: 2,
                index: 0,
            }]
        );
    }

    #[test]
    fn doc_example_advertised_and_weight() {
        let (set, nodes) = one("udp:localhost:22222|8.8.8.8=2");
        assert_eq!(set, 0);
        assert_eq!(nodes[0].url, "udp:localhost:22222");
        assert_eq!(nodes[0].adv_address.as_deref(), Some("8.8.8.8"));
        assert_eq!(nodes[0].weight, 2);
    }

    #[test]
    fn doc_example_load_balancing_list() {
        // The doc writes it on a continuation line of the modparam; the value is one string.
        let (set, nodes) =
            one("udp:localhost:22222 udp:localhost:22223 tcp:remote1:33422 tcp6:remote2:32322");
        assert_eq!(set, 0);
        let got: Vec<_> = nodes
            .iter()
            .map(|n| {
                (
                    n.url.as_str(),
                    n.transport,
                    n.host().unwrap(),
                    n.port().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("udp:localhost:22222", Transport::Udp, "localhost", 22222),
                ("udp:localhost:22223", Transport::Udp, "localhost", 22223),
                ("tcp:remote1:33422", Transport::Tcp, "remote1", 33422),
                ("tcp6:remote2:32322", Transport::Tcp6, "remote2", 32322),
            ]
        );
        assert!(nodes
            .iter()
            .all(|n| n.weight == 1 && n.adv_address.is_none()));
        assert_eq!(
            nodes.iter().map(|n| n.index).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
    }

    #[test]
    fn doc_example_multiple_sets() {
        let values = strings(&[
            "1 == udp:localhost:22222 udp:localhost:22223",
            "2 == udp:localhost:22223",
            "2 == udp:localhost:22223|8.8.8.8",
        ]);
        let sets = build_sets(&values, 0).unwrap();
        assert_eq!(sets.len(), 2);
        assert_eq!(sets[0].id, 1);
        assert_eq!(
            sets[0]
                .nodes
                .iter()
                .map(|n| n.url.as_str())
                .collect::<Vec<_>>(),
            ["udp:localhost:22222", "udp:localhost:22223"]
        );
        assert_eq!(sets[1].id, 2);
        assert_eq!(sets[1].nodes.len(), 2);
        assert_eq!(sets[1].nodes[0].adv_address, None);
        assert_eq!(sets[1].nodes[1].url, "udp:localhost:22223");
        assert_eq!(sets[1].nodes[1].adv_address.as_deref(), Some("8.8.8.8"));
        let indices: Vec<_> = sets
            .iter()
            .flat_map(|s| s.nodes.iter().map(|n| n.index))
            .collect();
        assert_eq!(indices, [0, 1, 2, 3]);
    }

    #[test]
    fn doc_example_legacy_unix_path() {
        let n = node("/var/run/rtpproxy.sock");
        assert_eq!(n.transport, Transport::Unix);
        assert_eq!(n.url, "/var/run/rtpproxy.sock");
        assert_eq!(n.address, "/var/run/rtpproxy.sock");
        assert_eq!(n.host(), None);
        assert_eq!(n.port(), None);
    }

    #[test]
    fn doc_examples_notify_socket() {
        assert_eq!(
            parse_notify_socket("tcp:10.10.10.10:9999").unwrap(),
            NotifySocket::Tcp {
                ip: Ipv4Addr::new(10, 10, 10, 10),
                port: 9999
            }
        );
        assert_eq!(
            parse_notify_socket("unix:/tmp/rtpproxy.unix").unwrap(),
            NotifySocket::Unix("/tmp/rtpproxy.unix".into())
        );
        assert_eq!(
            parse_notify_socket("/tmp/rtpproxy.unix").unwrap(),
            NotifySocket::Unix("/tmp/rtpproxy.unix".into())
        );
    }

    #[test]
    fn doc_examples_scalars() {
        assert_eq!(parse_timeout_ms("0.2"), Ok(200));
        assert_eq!(
            normalize_marker("a=sdpmangled:yes\r\n").as_deref(),
            Some("a=sdpmangled:yes")
        );
        let mut p = ModParams::default();
        p.set_int("rtpproxy_disable_tout", 20).unwrap();
        p.set_str("rtpproxy_timeout", "0.2").unwrap();
        p.set_int("rtpproxy_autobridge", 1).unwrap();
        p.set_int("rtpproxy_retr", 2).unwrap();
        p.set_int("default_set", 1).unwrap();
        p.set_str("nortpproxy_str", "a=sdpmangled:yes\r\n").unwrap();
        p.set_str(
            "db_url",
            "mysql://opensips:opensipsrw@192.168.2.132/opensips",
        )
        .unwrap();
        p.set_str("db_table", "nh_sockets").unwrap();
        p.set_str("rtpp_socket_col", "rtpp_socket").unwrap();
        p.set_str("set_id_col", "rtpp_set_id").unwrap();
        p.set_str("rtpp_notify_socket", "tcp:10.10.10.10:9999")
            .unwrap();
        p.set_int("generated_sdp_port_min", 10000).unwrap();
        p.set_int("generated_sdp_port_max", 30000).unwrap();
        p.set_str("generated_sdp_media_ip", "10.0.0.1").unwrap();
        let c = p.finish().unwrap();
        assert_eq!(c.disable_tout, 20);
        assert_eq!(c.timeout_ms, 200);
        assert!(c.autobridge);
        assert_eq!(c.retr, 2);
        assert_eq!(c.default_set, 1);
        assert_eq!(c.marker.as_deref(), Some("a=sdpmangled:yes"));
        assert_eq!(
            c.db,
            Some(DbConfig {
                url: "mysql://opensips:opensipsrw@192.168.2.132/opensips".into(),
                table: "nh_sockets".into(),
                socket_col: "rtpp_socket".into(),
                set_id_col: "rtpp_set_id".into(),
            })
        );
        assert_eq!(
            c.notify,
            Some(NotifySocket::Tcp {
                ip: Ipv4Addr::new(10, 10, 10, 10),
                port: 9999
            })
        );
        assert_eq!((c.gen_port_min, c.gen_port_max), (10000, 30000));
        assert_eq!(c.gen_media_ip, "10.0.0.1");
    }

    #[test]
    fn spec_examples() {
        let (_, n) = one("udp:h1:22222 udp:h2:22223 tcp:r1:33422 tcp6:r2:32322");
        assert_eq!(n.len(), 4);
        let (set, n) = one("2 == udp:localhost:22223|8.8.8.8");
        assert_eq!(set, 2);
        assert_eq!(n[0].adv_address.as_deref(), Some("8.8.8.8"));
    }

    // ---- rule 1: leading whitespace, blank values ----

    #[test]
    fn blank_values_yield_nothing() {
        for value in ["", " ", "\t", " \t\r\n\x0B\x0C "] {
            assert_eq!(parse_sock_value(value, 7), Ok(None), "{value:?}");
        }
    }

    #[test]
    fn surrounding_whitespace_is_skipped() {
        for value in ["  udp:a:1", "udp:a:1  ", "\tudp:a:1\n", "\r\n udp:a:1 \x0B"] {
            let (set, nodes) = parse_sock_value(value, 3).unwrap().unwrap();
            assert_eq!(set, 3);
            assert_eq!(nodes.len(), 1);
            assert_eq!(nodes[0].url, "udp:a:1");
        }
    }

    // ---- rule 2: set id before the first "==" ----

    #[test]
    fn set_id_forms() {
        let cases: &[(&str, SetId)] = &[
            ("1 == udp:a", 1),
            ("1==udp:a", 1),
            ("  7   ==   udp:a", 7),
            ("\t12\t==\tudp:a", 12),
            ("007 == udp:a", 7),
            ("0 == udp:a", 0),
            ("2147483647 == udp:a", i32::MAX),
        ];
        for (value, want) in cases {
            let (set, nodes) = parse_sock_value(value, 99).unwrap().unwrap();
            assert_eq!(set, *want, "{value:?}");
            assert_eq!(nodes[0].url, "udp:a");
        }
    }

    #[test]
    fn default_set_applies_without_set_id() {
        assert_eq!(parse_sock_value("udp:a", 5).unwrap().unwrap().0, 5);
        assert_eq!(parse_sock_value("udp:a", -3).unwrap().unwrap().0, -3);
    }

    #[test]
    fn invalid_set_ids() {
        let cases: &[(&str, &str)] = &[
            ("== udp:a", ""),
            ("  == udp:a", ""),
            ("x == udp:a", "x"),
            ("-1 == udp:a", "-1"),
            ("+1 == udp:a", "+1"),
            ("1 2 == udp:a", "1 2"),
            ("1.5 == udp:a", "1.5"),
            ("2147483648 == udp:a", "2147483648"),
            ("99999999999999999999 == udp:a", "99999999999999999999"),
            ("udp:a==2", "udp:a"),
            ("udp:a 1 == udp:b", "udp:a 1"),
        ];
        for (value, text) in cases {
            assert_eq!(
                sock_err(value),
                ConfigError::InvalidSetId((*text).to_owned()),
                "{value:?}"
            );
        }
        assert!(sock_err("x == udp:a")
            .to_string()
            .starts_with("invalid set_id value \"x\""));
    }

    #[test]
    fn empty_list_after_set_id() {
        for value in ["1 ==", "1 == ", "1 ==\t\r\n", "1==  "] {
            assert_eq!(sock_err(value), ConfigError::EmptyList, "{value:?}");
        }
        assert_eq!(ConfigError::EmptyList.to_string(), "empty rtp_proxy list");
    }

    #[test]
    fn only_first_double_equals_splits() {
        // "1 == udp:a 2 == udp:b": the second "==" is a node token with an empty URL.
        let e = sock_err("1 == udp:a 2 == udp:b");
        assert_eq!(e.root(), &ConfigError::EmptyUrl);
        assert!(matches!(&e, ConfigError::Node { node, .. } if node == "=="));
    }

    // ---- rule 3: NODE := URL [|ADV] [=WEIGHT] ----

    #[test]
    fn node_token_forms() {
        // (token, url, adv, weight)
        let cases: &[(&str, &str, Option<&str>, u32)] = &[
            ("udp:h:1", "udp:h:1", None, 1),
            ("udp:h:1=0", "udp:h:1", None, 0),
            ("udp:h:1=10", "udp:h:1", None, 10),
            ("udp:h:1=007", "udp:h:1", None, 7),
            ("udp:h:1=4294967295", "udp:h:1", None, u32::MAX),
            ("udp:h:1|1.2.3.4", "udp:h:1", Some("1.2.3.4"), 1),
            ("udp:h:1|1.2.3.4=3", "udp:h:1", Some("1.2.3.4"), 3),
            ("udp:h:1|2001:db8::1=3", "udp:h:1", Some("2001:db8::1"), 3),
            (
                "udp:h:1|pub.example.com",
                "udp:h:1",
                Some("pub.example.com"),
                1,
            ),
            // the LAST '|' before '=' starts ADV; earlier ones stay in the URL (as in C)
            ("/tmp/a|b|c=2", "/tmp/a|b", Some("c"), 2),
            ("rtp.io:auto", "rtp.io:auto", None, 1),
            ("rtp.io:auto|9.9.9.9=4", "rtp.io:auto", Some("9.9.9.9"), 4),
            (
                "unix:/var/run/rtpproxy.sock=5",
                "unix:/var/run/rtpproxy.sock",
                None,
                5,
            ),
        ];
        for (token, url, adv, weight) in cases {
            let n = node(token);
            assert_eq!(n.url, *url, "{token:?}");
            assert_eq!(n.adv_address.as_deref(), *adv, "{token:?}");
            assert_eq!(n.weight, *weight, "{token:?}");
        }
    }

    #[test]
    fn list_splits_on_any_c_whitespace() {
        let nodes = parse_node_list("udp:a:1\tudp:b:2\nudp:c:3\r\x0Budp:d:4\x0C  udp:e:5").unwrap();
        assert_eq!(
            nodes.iter().map(|n| n.url.as_str()).collect::<Vec<_>>(),
            ["udp:a:1", "udp:b:2", "udp:c:3", "udp:d:4", "udp:e:5"]
        );
        assert_eq!(
            nodes.iter().map(|n| n.index).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4]
        );
    }

    #[test]
    fn non_ascii_whitespace_is_not_a_separator() {
        // C isspace in the "C" locale knows only the ASCII separators.
        let n = node("/tmp/a\u{a0}b");
        assert_eq!(n.url, "/tmp/a\u{a0}b");
    }

    /// Deviation tests: weights the C module turns into 0 or garbage via strtoul.
    #[test]
    fn bad_weights_are_refused() {
        let cases: &[(&str, ConfigError)] = &[
            ("udp:h:1=", ConfigError::WeightNotANumber(String::new())),
            ("udp:h:1=x", ConfigError::WeightNotANumber("x".into())),
            ("udp:h:1=2x", ConfigError::WeightNotANumber("2x".into())),
            ("udp:h:1=-1", ConfigError::WeightNotANumber("-1".into())),
            ("udp:h:1=+1", ConfigError::WeightNotANumber("+1".into())),
            ("udp:h:1=2=3", ConfigError::WeightNotANumber("2=3".into())),
            ("udp:h:1=1.5", ConfigError::WeightNotANumber("1.5".into())),
            (
                "udp:h:1=4294967296",
                ConfigError::WeightOutOfRange("4294967296".into()),
            ),
            (
                "udp:h:1=99999999999999999999999",
                ConfigError::WeightOutOfRange("99999999999999999999999".into()),
            ),
            // C: weight strtoul("2|8.8.8.8") = 2 and the advertised address is lost
            ("udp:h:1=2|8.8.8.8", ConfigError::AdvertisedAfterWeight),
        ];
        for (token, want) in cases {
            let e = sock_err(token);
            assert_eq!(e.root(), want, "{token:?}");
            assert_eq!(
                e,
                ConfigError::Node {
                    node: (*token).to_owned(),
                    reason: Box::new(want.clone())
                }
            );
        }
        assert_eq!(
            sock_err("udp:a:1 udp:h:1=x").to_string(),
            "in node \"udp:h:1=x\": weight \"x\" is not a number"
        );
    }

    #[test]
    fn empty_url_and_advertised_are_refused() {
        let cases: &[(&str, ConfigError)] = &[
            ("=2", ConfigError::EmptyUrl),
            ("|1.2.3.4", ConfigError::EmptyUrl),
            ("|1.2.3.4=2", ConfigError::EmptyUrl),
            ("==", ConfigError::EmptyUrl),
            ("udp:h:1|", ConfigError::EmptyAdvertised),
            ("udp:h:1|=2", ConfigError::EmptyAdvertised),
        ];
        for (token, want) in cases {
            let e = parse_node_list(token).unwrap_err();
            assert_eq!(e.root(), want, "{token:?}");
        }
    }

    // ---- rule 4: transport prefixes ----

    #[test]
    fn prefixes_are_case_insensitive() {
        let cases: &[(&str, Transport, &str)] = &[
            ("udp:h", Transport::Udp, "h"),
            ("UDP:h", Transport::Udp, "h"),
            ("Udp6:h", Transport::Udp6, "h"),
            ("udp6:h", Transport::Udp6, "h"),
            ("tcp:h", Transport::Tcp, "h"),
            ("TcP:h", Transport::Tcp, "h"),
            ("tcp6:h", Transport::Tcp6, "h"),
            ("TCP6:h", Transport::Tcp6, "h"),
            ("unix:/p", Transport::Unix, "/p"),
            ("UNIX:/p", Transport::Unix, "/p"),
            ("cunix:/p", Transport::Cunix, "/p"),
            ("CUnix:/p", Transport::Cunix, "/p"),
            ("rtp.io:auto", Transport::RtpIo, ""),
            ("RTP.IO:AUTO", Transport::RtpIo, ""),
        ];
        for (token, transport, address) in cases {
            let n = node(token);
            assert_eq!(n.transport, *transport, "{token:?}");
            assert_eq!(n.address, *address, "{token:?}");
            assert_eq!(n.url, *token, "url keeps the spelling: {token:?}");
        }
    }

    #[test]
    fn unknown_prefix_is_a_legacy_unix_path() {
        for token in [
            "/var/run/rtpproxy.sock",
            "sctp:foo:22222",
            "udp",
            "rtp.io:manual",
            "rtp.io",
            "relative.sock",
        ] {
            let n = node(token);
            assert_eq!(n.transport, Transport::Unix, "{token:?}");
            assert_eq!(n.address, token);
        }
    }

    #[test]
    fn rtpio_must_be_exact() {
        for token in ["rtp.io:autox", "rtp.io:auto:1", "rtp.io:auto/x"] {
            assert_eq!(
                parse_node_list(token).unwrap_err().root(),
                &ConfigError::RtpIoSuffix,
                "{token:?}"
            );
        }
        // the suffix check runs on the URL only: ADV and weight may follow
        assert_eq!(node("rtp.io:auto=2").weight, 2);
    }

    // ---- rule 5: host and port ----

    #[test]
    fn host_and_port() {
        let cases: &[(&str, &str, u16)] = &[
            ("udp:localhost:22222", "localhost", 22222),
            ("udp:localhost", "localhost", DEFAULT_CONTROL_PORT),
            ("udp:localhost:", "localhost", DEFAULT_CONTROL_PORT),
            ("udp:127.0.0.1:7890", "127.0.0.1", 7890),
            ("tcp:10.0.0.1:65535", "10.0.0.1", 65535),
            ("tcp:10.0.0.1:1", "10.0.0.1", 1),
            ("udp6:::1:22222", "::1", 22222),
            ("tcp6:2001:db8::5:4000", "2001:db8::5", 4000),
            // [QUIRK] kept: no brackets, so the last ':' is always the port separator.
            // The address of "udp6:::1" is "::1", so the host is ":" (what C passes to
            // getaddrinfo; spec §1.2 rule 5 writes "::") and the port 1.
            ("udp6:::1", ":", 1),
            ("udp6:fe80::1", "fe80:", 1),
        ];
        for (token, host, port) in cases {
            let n = node(token);
            assert_eq!(n.host(), Some(*host), "{token:?}");
            assert_eq!(n.port(), Some(*port), "{token:?}");
        }
    }

    /// Deviation tests: addresses the C module only fails on at connect time, or truncates.
    #[test]
    fn bad_addresses_are_refused() {
        let long = format!("unix:/{}", "x".repeat(MAX_UNIX_PATH));
        let cases: Vec<(String, ConfigError)> = vec![
            ("udp:".into(), ConfigError::EmptyHost),
            ("tcp::22222".into(), ConfigError::EmptyHost),
            ("udp6::".into(), ConfigError::EmptyHost),
            ("udp:h:x".into(), ConfigError::PortNotANumber("x".into())),
            (
                "udp:h:22222x".into(),
                ConfigError::PortNotANumber("22222x".into()),
            ),
            ("udp:h:-1".into(), ConfigError::PortNotANumber("-1".into())),
            ("udp:h:+1".into(), ConfigError::PortNotANumber("+1".into())),
            ("udp:h:0".into(), ConfigError::PortOutOfRange("0".into())),
            (
                "udp:h:65536".into(),
                ConfigError::PortOutOfRange("65536".into()),
            ),
            (
                "tcp:h:999999999999999999999".into(),
                ConfigError::PortOutOfRange("999999999999999999999".into()),
            ),
            ("udp6:[::1]:22222".into(), ConfigError::BracketedIpv6),
            ("tcp6:[::1]".into(), ConfigError::BracketedIpv6),
            ("unix:".into(), ConfigError::EmptyPath),
            ("cunix:".into(), ConfigError::EmptyPath),
            (long.clone(), ConfigError::PathTooLong(MAX_UNIX_PATH + 1)),
            (
                long[5..].to_owned(),
                ConfigError::PathTooLong(MAX_UNIX_PATH + 1),
            ),
        ];
        for (token, want) in &cases {
            let e = parse_node_list(token).unwrap_err();
            assert_eq!(e.root(), want, "{token:?}");
        }
        // the longest path that fits is accepted
        let fits = format!("cunix:/{}", "x".repeat(MAX_UNIX_PATH - 1));
        assert_eq!(node(&fits).address.len(), MAX_UNIX_PATH);
    }

    #[test]
    fn error_messages_name_the_node() {
        let e = sock_err("1 == udp:a:1 udp:b:70000");
        assert_eq!(
            e.to_string(),
            "in node \"udp:b:70000\": port 70000 out of range (1-65535)"
        );
        assert_eq!(
            sock_err("udp6:[::1]:5").to_string(),
            "in node \"udp6:[::1]:5\": ipv6 literal must be written without brackets (e.g. udp6:::1:22222)"
        );
    }

    #[test]
    fn a_bad_node_fails_the_whole_value() {
        let e = sock_err("udp:a:1 udp:b:2 udp:c:x");
        assert!(matches!(&e, ConfigError::Node { node, .. } if node == "udp:c:x"));
    }

    // ---- rules 6 and 7: accumulation and global index ----

    #[test]
    fn sets_accumulate_in_first_appearance_order() {
        let values = strings(&[
            "2 == udp:a",
            "udp:b udp:c",
            "1 == udp:d",
            "2 == udp:e",
            "   ",
            "0 == udp:f",
        ]);
        let sets = build_sets(&values, 0).unwrap();
        let got: Vec<(SetId, Vec<(&str, usize)>)> = sets
            .iter()
            .map(|s| {
                (
                    s.id,
                    s.nodes.iter().map(|n| (n.url.as_str(), n.index)).collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (2, vec![("udp:a", 0), ("udp:e", 4)]),
                (0, vec![("udp:b", 1), ("udp:c", 2), ("udp:f", 5)]),
                (1, vec![("udp:d", 3)]),
            ]
        );
    }

    #[test]
    fn indexed_nodes_follow_definition_order() {
        let mut p = ModParams::default();
        for v in ["1 == udp:a", "2 == udp:b", "1 == udp:c"] {
            p.set_str("rtpproxy_sock", v).unwrap();
        }
        let c = p.finish().unwrap();
        let got: Vec<_> = c
            .indexed_nodes()
            .map(|(i, set, n)| (i, set, n.url.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 1, "udp:a".to_owned()),
                (1, 2, "udp:b".to_owned()),
                (2, 1, "udp:c".to_owned()),
            ]
        );
        assert_eq!(c.node_count(), 3);
        assert_eq!(c.set(1).unwrap().nodes.len(), 2);
        assert!(c.set(3).is_none());
    }

    #[test]
    fn default_set_is_taken_at_finish() {
        // modparam order does not matter: default_set after rtpproxy_sock still applies
        let mut p = ModParams::default();
        p.set_str("rtpproxy_sock", "udp:a").unwrap();
        p.set_int("default_set", 4).unwrap();
        let c = p.finish().unwrap();
        assert_eq!(c.sets[0].id, 4);
        assert_eq!(c.default_set_spec().unwrap().id, 4);
    }

    #[test]
    fn missing_default_set_is_reported_as_none() {
        let mut p = ModParams::default();
        p.set_str("rtpproxy_sock", "1 == udp:a").unwrap();
        let c = p.finish().unwrap();
        assert!(c.default_set_spec().is_none());
    }

    #[test]
    fn builder_rows_and_reload() {
        let mut b = SetsBuilder::new();
        b.add_db_row("udp:a udp:b=3", 5, 0).unwrap();
        b.add_db_row("  ", 6, 0).unwrap(); // blank row: nothing, no set
        b.add_db_row("7 == udp:c", -1, 0).unwrap(); // negative id: modparam grammar
        b.add_db_row("udp:d", -1, 9).unwrap(); // negative id, no "==": default_set
        b.add_db_row("udp:e", 5, 0).unwrap();
        assert_eq!(b.node_count(), 5);
        let sets = b.finish();
        assert_eq!(sets.iter().map(|s| s.id).collect::<Vec<_>>(), [5, 7, 9]);
        assert_eq!(
            sets[0].nodes.iter().map(|n| n.index).collect::<Vec<_>>(),
            [0, 1, 4]
        );
        assert_eq!(sets[0].nodes[1].weight, 3);

        // with a set id column, "N ==" is not special: "==" is a node with an empty url
        assert_eq!(
            SetsBuilder::new()
                .add_db_row("1 == udp:a", 3, 0)
                .unwrap_err()
                .root(),
            &ConfigError::EmptyUrl
        );

        // reload: sets kept (emptied) in place, index restarts at 0
        let mut r = SetsBuilder::reloading(&sets);
        r.add_db_row("udp:z", 9, 0).unwrap();
        let reloaded = r.finish();
        assert_eq!(
            reloaded
                .iter()
                .map(|s| (s.id, s.nodes.len()))
                .collect::<Vec<_>>(),
            [(5, 0), (7, 0), (9, 1)]
        );
        assert_eq!(reloaded[2].nodes[0].index, 0);
    }

    #[test]
    fn builder_ignores_empty_node_lists() {
        let mut b = SetsBuilder::new();
        b.add_nodes(3, Vec::new());
        assert!(b.finish().is_empty());
    }

    #[test]
    fn parse_node_list_blank_is_empty() {
        assert_eq!(parse_node_list(""), Ok(vec![]));
        assert_eq!(parse_node_list(" \t\n"), Ok(vec![]));
    }

    // ---- notify socket ----

    #[test]
    fn notify_socket_forms() {
        let cases: &[(&str, NotifySocket)] = &[
            (
                "tcp:127.0.0.1:9999",
                NotifySocket::Tcp {
                    ip: Ipv4Addr::LOCALHOST,
                    port: 9999,
                },
            ),
            (
                "tcp:0.0.0.0:65535",
                NotifySocket::Tcp {
                    ip: Ipv4Addr::UNSPECIFIED,
                    port: 65535,
                },
            ),
            ("unix:/run/n.sock", NotifySocket::Unix("/run/n.sock".into())),
            ("/run/n.sock", NotifySocket::Unix("/run/n.sock".into())),
            ("relative.sock", NotifySocket::Unix("relative.sock".into())),
            // [QUIRK] kept: prefixes are case-sensitive and only tcp: is inet
            ("TCP:1.2.3.4:5", NotifySocket::Unix("TCP:1.2.3.4:5".into())),
            ("udp:1.2.3.4:5", NotifySocket::Unix("udp:1.2.3.4:5".into())),
            ("UNIX:/x", NotifySocket::Unix("UNIX:/x".into())),
        ];
        for (value, want) in cases {
            assert_eq!(parse_notify_socket(value).as_ref(), Ok(want), "{value:?}");
        }
    }

    /// Deviation tests: the C module uses inet_addr and binds whatever it gets.
    #[test]
    fn bad_notify_sockets_are_refused() {
        let long = format!("/{}", "x".repeat(MAX_UNIX_PATH));
        let cases: Vec<(String, ConfigError)> = vec![
            ("tcp:".into(), ConfigError::NotifyFormat),
            ("tcp:1.2.3.4".into(), ConfigError::NotifyFormat),
            ("tcp:1.2.3.4:".into(), ConfigError::NotifyFormat),
            ("tcp:host:9999".into(), ConfigError::NotIpv4("host".into())),
            ("tcp:10.1:9999".into(), ConfigError::NotIpv4("10.1".into())),
            ("tcp::::1:9999".into(), ConfigError::NotIpv4(":::1".into())),
            ("tcp::9999".into(), ConfigError::NotIpv4(String::new())),
            (
                "tcp:1.2.3.4:x".into(),
                ConfigError::PortNotANumber("x".into()),
            ),
            (
                "tcp:1.2.3.4:0".into(),
                ConfigError::PortOutOfRange("0".into()),
            ),
            (
                "tcp:1.2.3.4:65536".into(),
                ConfigError::PortOutOfRange("65536".into()),
            ),
            ("unix:".into(), ConfigError::EmptyPath),
            (long.clone(), ConfigError::PathTooLong(MAX_UNIX_PATH + 1)),
            (
                format!("unix:{long}"),
                ConfigError::PathTooLong(MAX_UNIX_PATH + 1),
            ),
        ];
        for (value, want) in &cases {
            assert_eq!(parse_notify_socket(value).as_ref(), Err(want), "{value:?}");
        }
        assert_eq!(
            ConfigError::NotIpv4("host".into()).to_string(),
            "\"host\" is not an ipv4 address (tcp: takes an ipv4 literal, no host names)"
        );
    }

    #[test]
    fn notify_socket_display() {
        assert_eq!(
            parse_notify_socket("tcp:10.0.0.1:9999")
                .unwrap()
                .to_string(),
            "tcp:10.0.0.1:9999"
        );
        assert_eq!(
            parse_notify_socket("unix:/tmp/x").unwrap().to_string(),
            "/tmp/x"
        );
    }

    // ---- timeout ----

    #[test]
    fn timeout_values() {
        let cases: &[(&str, u32)] = &[
            ("0.2", 200),
            ("1", 1000),
            ("1.5", 1500),
            ("0.001", 1),
            ("0.0015", 1),
            ("2.", 2000),
            (".5", 500),
            ("+0.25", 250),
            ("1e-1", 100),
            ("3E0", 3000),
            (" 0.2 ", 200),
            ("\t10\n", 10000),
            ("0.3", 300),
            ("0.29", 290),
            // C float precision: 2147483000 is not a float, the nearest one is kept
            ("2147483", 2147483008),
        ];
        for (value, want) in cases {
            assert_eq!(parse_timeout_ms(value), Ok(*want), "{value:?}");
        }
    }

    /// Deviation tests: C ignores, misreads or accepts all of these.
    #[test]
    fn bad_timeouts_are_refused() {
        let cases: &[(&str, ConfigError)] = &[
            ("", ConfigError::EmptyTimeout),
            ("   ", ConfigError::EmptyTimeout),
            ("abc", ConfigError::TimeoutNotANumber("abc".into())),
            ("0.2s", ConfigError::TimeoutNotANumber("0.2s".into())),
            ("1,5", ConfigError::TimeoutNotANumber("1,5".into())),
            ("inf", ConfigError::TimeoutNotANumber("inf".into())),
            ("NaN", ConfigError::TimeoutNotANumber("NaN".into())),
            ("0x10", ConfigError::TimeoutNotANumber("0x10".into())),
            ("1 2", ConfigError::TimeoutNotANumber("1 2".into())),
            (".", ConfigError::TimeoutNotANumber(".".into())),
            ("e5", ConfigError::TimeoutNotANumber("e5".into())),
            ("1e", ConfigError::TimeoutNotANumber("1e".into())),
            ("--1", ConfigError::TimeoutNotANumber("--1".into())),
            ("-0.2", ConfigError::NegativeTimeout("-0.2".into())),
            ("-1", ConfigError::NegativeTimeout("-1".into())),
            ("0", ConfigError::TimeoutTooSmall("0".into())),
            ("-0", ConfigError::TimeoutTooSmall("-0".into())),
            ("0.0009", ConfigError::TimeoutTooSmall("0.0009".into())),
            ("1e-30", ConfigError::TimeoutTooSmall("1e-30".into())),
            ("2147484", ConfigError::TimeoutTooLarge("2147484".into())),
            ("1e30", ConfigError::TimeoutTooLarge("1e30".into())),
            ("1e99", ConfigError::TimeoutTooLarge("1e99".into())),
        ];
        for (value, want) in cases {
            assert_eq!(parse_timeout_ms(value).as_ref(), Err(want), "{value:?}");
        }
    }

    // ---- marker ----

    #[test]
    fn marker_normalisation() {
        let cases: &[(&str, Option<&str>)] = &[
            ("a=nortpproxy:yes", Some("a=nortpproxy:yes")),
            ("a=nortpproxy:yes\r\n", Some("a=nortpproxy:yes")),
            ("a=x\n\r\n\r", Some("a=x")),
            ("a=x\r\nb", Some("a=x\r\nb")),
            ("a=x ", Some("a=x ")),
            ("", None),
            ("\r\n", None),
            ("\n\n\r", None),
        ];
        for (value, want) in cases {
            assert_eq!(normalize_marker(value).as_deref(), *want, "{value:?}");
        }
    }

    // ---- ModParams ----

    #[test]
    fn param_tables_cover_all_sixteen() {
        assert_eq!(STR_PARAMS.len() + INT_PARAMS.len(), 16);
        for name in STR_PARAMS {
            assert!(!INT_PARAMS.contains(name));
        }
        let mut all: Vec<_> = STR_PARAMS.iter().chain(INT_PARAMS).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 16);
    }

    #[test]
    fn defaults() {
        let c = ModParams::default().finish().unwrap();
        assert_eq!(
            c,
            ModuleConfig {
                sets: vec![],
                disable_tout: 60,
                retr: 5,
                timeout_ms: 1000,
                autobridge: false,
                default_set: 0,
                marker: Some("a=nortpproxy:yes".into()),
                db: None,
                notify: None,
                gen_port_min: 35000,
                gen_port_max: 65000,
                gen_media_ip: "127.0.0.1".into(),
                sock_values_given: false,
                call_map_size: 131072,
            }
        );
    }

    #[test]
    fn every_param_is_settable_by_its_type() {
        let mut p = ModParams::default();
        let str_values: &[(&str, &str)] = &[
            ("nortpproxy_str", "a=x"),
            ("rtpproxy_sock", "udp:a"),
            ("rtpproxy_timeout", "2"),
            ("db_url", "mysql://u:p@h/db"),
            ("db_table", "t"),
            ("rtpp_socket_col", "c"),
            ("set_id_col", "s"),
            ("rtpp_notify_socket", "/tmp/n"),
            ("generated_sdp_media_ip", "192.0.2.1"),
        ];
        for (name, value) in str_values {
            p.set_str(name, value).unwrap();
            assert!(
                matches!(
                    p.set_int(name, 1),
                    Err(ConfigError::WrongType {
                        expected: "a string",
                        ..
                    })
                ),
                "{name}"
            );
        }
        for name in INT_PARAMS {
            let v = if *name == "call_map_size" { 64 } else { 1 };
            p.set_int(name, v).unwrap();
            assert_eq!(
                p.set_str(name, "1"),
                Err(ConfigError::WrongType {
                    name,
                    expected: "an integer"
                })
            );
        }
        assert_eq!(str_values.len(), STR_PARAMS.len());
    }

    #[test]
    fn call_map_size_is_validated() {
        let mut p = ModParams::default();
        for bad in [-1, 0, 63, i64::from(u32::MAX)] {
            assert!(matches!(
                p.set_int("call_map_size", bad),
                Err(ConfigError::IntOutOfRange { .. })
            ));
        }
        p.set_int("call_map_size", 64).unwrap();
        assert_eq!(p.finish().unwrap().call_map_size, 64);
    }

    #[test]
    fn unknown_params_are_refused() {
        let mut p = ModParams::default();
        for name in ["rtpproxy_disable", "", "RTPPROXY_SOCK", "rtpproxy_sock "] {
            assert_eq!(
                p.set_str(name, "x"),
                Err(ConfigError::UnknownParam(name.to_owned()))
            );
            assert_eq!(
                p.set_int(name, 1),
                Err(ConfigError::UnknownParam(name.to_owned()))
            );
        }
        assert_eq!(
            ConfigError::UnknownParam("foo".into()).to_string(),
            "unknown rtpproxy parameter \"foo\""
        );
    }

    #[test]
    fn sock_values_are_checked_at_once_and_stored_verbatim() {
        let mut p = ModParams::default();
        p.set_str("rtpproxy_sock", "").unwrap(); // ignored
        assert!(p.sock_values().is_empty());
        p.set_str("rtpproxy_sock", "  ").unwrap(); // stored, no node
        p.set_str("rtpproxy_sock", " 1 == udp:a ").unwrap();
        assert_eq!(p.sock_values(), ["  ", " 1 == udp:a "]);
        let e = p.set_str("rtpproxy_sock", "udp:b=x").unwrap_err();
        assert_eq!(e.root(), &ConfigError::WeightNotANumber("x".into()));
        assert_eq!(p.sock_values().len(), 2, "a refused value is not stored");
        let c = p.finish().unwrap();
        assert!(c.sock_values_given);
        assert_eq!(c.sets.len(), 1);
    }

    #[test]
    fn whitespace_only_sock_counts_as_given() {
        let mut p = ModParams::default();
        p.set_str("rtpproxy_sock", " \t ").unwrap();
        let mut c = p.finish().unwrap();
        assert!(c.sock_values_given);
        assert!(c.sets.is_empty());
        // [QUIRK] kept: the startup check passes, the module runs with no sets
        assert_eq!(c.resolve_missing_sockets(false), Ok(()));
        assert!(c.sets.is_empty());
    }

    #[test]
    fn no_sockets_rule() {
        let mut c = ModParams::default().finish().unwrap();
        assert_eq!(
            c.clone().resolve_missing_sockets(false),
            Err(ConfigError::NoSetSpecified)
        );
        assert_eq!(
            ConfigError::NoSetSpecified.to_string(),
            "no rtpproxy set specified"
        );
        c.resolve_missing_sockets(true).unwrap();
        assert_eq!(
            c.sets,
            vec![SetSpec {
                id: 0,
                nodes: vec![NodeSpec::rtpio_auto()]
            }]
        );

        let mut p = ModParams::default();
        p.set_int("default_set", 3).unwrap();
        let mut c = p.finish().unwrap();
        c.resolve_missing_sockets(true).unwrap();
        assert_eq!(
            c.default_set_spec().unwrap().nodes[0].transport,
            Transport::RtpIo
        );

        // DB mode never needs modparam sockets
        let mut p = ModParams::default();
        p.set_str("db_url", "mysql://x").unwrap();
        let mut c = p.finish().unwrap();
        assert_eq!(c.resolve_missing_sockets(false), Ok(()));
        assert!(c.sets.is_empty());
    }

    #[test]
    fn db_mode_ignores_sock_values() {
        let mut p = ModParams::default();
        p.set_str("rtpproxy_sock", "udp:a").unwrap();
        p.set_str("db_url", "postgres://db").unwrap();
        let c = p.finish().unwrap();
        assert!(c.sets.is_empty());
        assert!(c.sock_values_given);
        assert!(c.sock_values_ignored());
        let db = c.db.unwrap();
        assert_eq!(db.url, "postgres://db");
        assert_eq!(db.table, DEFAULT_DB_TABLE);
        assert_eq!(db.socket_col, DEFAULT_SOCKET_COL);
        assert_eq!(db.set_id_col, DEFAULT_SET_ID_COL);
    }

    /// Deviation test: empty DB names are refused rather than failing at bind/query time.
    #[test]
    fn empty_db_strings_are_refused() {
        let mut p = ModParams::default();
        for name in ["db_url", "db_table", "rtpp_socket_col", "set_id_col"] {
            let e = p.set_str(name, "").unwrap_err();
            assert!(matches!(e, ConfigError::EmptyValue(n) if n == name));
            assert_eq!(e.to_string(), format!("{name} must not be empty"));
        }
        assert!(p.finish().unwrap().db.is_none());
    }

    #[test]
    fn notify_param() {
        let mut p = ModParams::default();
        p.set_str("rtpp_notify_socket", "tcp:1.2.3.4:5").unwrap();
        p.set_str("rtpp_notify_socket", "").unwrap(); // ignored, as in C
        assert_eq!(
            p.finish().unwrap().notify,
            Some(NotifySocket::Tcp {
                ip: Ipv4Addr::new(1, 2, 3, 4),
                port: 5
            })
        );
        p.set_str("rtpp_notify_socket", "unix:/x").unwrap(); // last wins
        assert_eq!(
            p.finish().unwrap().notify,
            Some(NotifySocket::Unix("/x".into()))
        );
        assert_eq!(
            p.set_str("rtpp_notify_socket", "tcp:h:1"),
            Err(ConfigError::NotIpv4("h".into()))
        );
    }

    #[test]
    fn timeout_param() {
        let mut p = ModParams::default();
        p.set_str("rtpproxy_timeout", "0.5").unwrap();
        assert_eq!(p.finish().unwrap().timeout_ms, 500);
        assert_eq!(
            p.set_str("rtpproxy_timeout", ""),
            Err(ConfigError::EmptyTimeout)
        );
        assert_eq!(
            p.set_str("rtpproxy_timeout", "x"),
            Err(ConfigError::TimeoutNotANumber("x".into()))
        );
        assert_eq!(
            p.finish().unwrap().timeout_ms,
            500,
            "refused values change nothing"
        );
    }

    #[test]
    fn marker_param() {
        let mut p = ModParams::default();
        p.set_str("nortpproxy_str", "").unwrap();
        assert_eq!(p.finish().unwrap().marker, None);
        p.set_str("nortpproxy_str", "\r\n").unwrap();
        assert_eq!(p.finish().unwrap().marker, None);
        p.set_str("nortpproxy_str", "a=mangled\r\n").unwrap();
        assert_eq!(p.finish().unwrap().marker.as_deref(), Some("a=mangled"));
    }

    #[test]
    fn int_params() {
        let mut p = ModParams::default();
        // [QUIRK] kept: a negative disable timeout is accepted
        p.set_int("rtpproxy_disable_tout", -5).unwrap();
        p.set_int("rtpproxy_disable_tout", 0).unwrap();
        p.set_int("default_set", -2).unwrap();
        p.set_int("rtpproxy_autobridge", 7).unwrap();
        let c = p.finish().unwrap();
        assert_eq!(c.disable_tout, 0);
        assert_eq!(c.default_set, -2);
        assert!(c.autobridge);
        p.set_int("rtpproxy_autobridge", 0).unwrap();
        assert!(!p.finish().unwrap().autobridge);

        p.set_int("rtpproxy_disable_tout", -5).unwrap();
        assert_eq!(p.finish().unwrap().disable_tout, -5);

        assert_eq!(
            p.set_int("default_set", i64::from(i32::MAX) + 1),
            Err(ConfigError::IntOutOfRange {
                name: "default_set",
                value: i64::from(i32::MAX) + 1,
                min: i32::MIN.into(),
                max: i32::MAX.into(),
            })
        );
    }

    /// Deviation test: C runs zero send attempts and fails every UDP command.
    #[test]
    fn retr_below_one_is_refused() {
        let mut p = ModParams::default();
        for value in [0, -1, i64::MIN] {
            assert_eq!(
                p.set_int("rtpproxy_retr", value),
                Err(ConfigError::RetrTooSmall(value))
            );
        }
        assert_eq!(
            ConfigError::RetrTooSmall(0).to_string(),
            "rtpproxy_retr must be at least 1, got 0"
        );
        p.set_int("rtpproxy_retr", 1).unwrap();
        assert_eq!(p.finish().unwrap().retr, 1);
        assert!(p.set_int("rtpproxy_retr", i64::MAX).is_err());
    }

    #[test]
    fn generated_ports() {
        let mut p = ModParams::default();
        for name in ["generated_sdp_port_min", "generated_sdp_port_max"] {
            for bad in [-1, 65536, i64::MAX] {
                let e = p.set_int(name, bad).unwrap_err();
                assert_eq!(
                    e,
                    ConfigError::IntOutOfRange {
                        name,
                        value: bad,
                        min: 0,
                        max: 65535
                    }
                );
            }
        }
        assert_eq!(
            p.set_int("generated_sdp_port_min", 70000)
                .unwrap_err()
                .to_string(),
            "generated_sdp_port_min value 70000 out of range (0-65535)"
        );
        p.set_int("generated_sdp_port_min", 0).unwrap();
        p.set_int("generated_sdp_port_max", 65535).unwrap();
        assert!(!p.gen_ports_swapped());
        let c = p.finish().unwrap();
        assert_eq!((c.gen_port_min, c.gen_port_max), (0, 65535));

        // max < min: swapped, not an error (as C)
        p.set_int("generated_sdp_port_min", 40000).unwrap();
        p.set_int("generated_sdp_port_max", 30000).unwrap();
        assert!(p.gen_ports_swapped());
        let c = p.finish().unwrap();
        assert_eq!((c.gen_port_min, c.gen_port_max), (30000, 40000));

        // min == max is fine
        p.set_int("generated_sdp_port_max", 40000).unwrap();
        assert!(!p.gen_ports_swapped());
    }

    /// Deviation test: empty (as C) and whitespace/control characters (beyond C) refused.
    #[test]
    fn media_ip() {
        let mut p = ModParams::default();
        assert_eq!(
            p.set_str("generated_sdp_media_ip", ""),
            Err(ConfigError::EmptyValue("generated_sdp_media_ip"))
        );
        for bad in ["10.0.0.1 ", "10.0.0.1\r\n", "a\tb", "x\u{0}"] {
            assert_eq!(
                p.set_str("generated_sdp_media_ip", bad),
                Err(ConfigError::BadMediaIp),
                "{bad:?}"
            );
        }
        p.set_str("generated_sdp_media_ip", "2001:db8::1").unwrap();
        assert_eq!(p.finish().unwrap().gen_media_ip, "2001:db8::1");
    }

    #[test]
    fn transport_helpers() {
        use Transport::*;
        for t in [Udp, Udp6, Tcp, Tcp6] {
            assert!(t.is_inet());
            assert!(!t.is_unix());
        }
        for t in [Unix, Cunix, RtpIo] {
            assert!(!t.is_inet());
        }
        assert!(Unix.is_unix() && Cunix.is_unix() && !RtpIo.is_unix());
        assert!(Udp.is_datagram() && Udp6.is_datagram());
        assert!(!Tcp.is_datagram() && !Cunix.is_datagram() && !RtpIo.is_datagram());
        assert!(Udp6.is_ipv6() && Tcp6.is_ipv6() && !Udp.is_ipv6() && !Tcp.is_ipv6());
        // every prefix parses back to its transport
        for t in [Udp, Udp6, Tcp, Tcp6, Cunix] {
            assert_eq!(node(&format!("{}x", t.prefix())).transport, t);
        }
        assert_eq!(node(&format!("{}/x", Unix.prefix())).transport, Unix);
        assert_eq!(node(RtpIo.prefix()).transport, RtpIo);
    }

    // ---- property tests ----

    /// Strings made mostly of the grammar's own characters, to reach the deep branches.
    fn grammar_soup() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[ \t\r\n=|:.a-z0-9/\\[\\]+-]{0,60}").unwrap()
    }

    fn prefix_strategy() -> impl Strategy<Value = (&'static str, Transport)> {
        prop_oneof![
            Just(("udp:", Transport::Udp)),
            Just(("UDP:", Transport::Udp)),
            Just(("udp6:", Transport::Udp6)),
            Just(("tcp:", Transport::Tcp)),
            Just(("Tcp6:", Transport::Tcp6)),
            Just(("unix:", Transport::Unix)),
            Just(("cunix:", Transport::Cunix)),
            Just(("", Transport::Unix)),
        ]
    }

    /// A valid URL: (url, transport, address).
    fn url_strategy() -> impl Strategy<Value = (String, Transport, String)> {
        let inet_or_path = (
            prefix_strategy(),
            "[a-z][a-z0-9.-]{0,15}",
            proptest::option::of(1u16..),
        )
            .prop_map(|((prefix, transport), name, port)| {
                let address = if transport.is_inet() {
                    match port {
                        Some(p) => format!("{name}:{p}"),
                        None => name,
                    }
                } else {
                    format!("/run/{name}")
                };
                (format!("{prefix}{address}"), transport, address)
            });
        prop_oneof![
            4 => inet_or_path,
            1 => Just((RTPIO_AUTO.to_owned(), Transport::RtpIo, String::new())),
        ]
    }

    fn node_strategy(
    ) -> impl Strategy<Value = (String, Transport, String, Option<String>, Option<u32>)> {
        (
            url_strategy(),
            proptest::option::of("[0-9a-f.:]{1,20}"),
            proptest::option::of(any::<u32>()),
        )
            .prop_map(|((url, transport, address), adv, weight)| {
                (url, transport, address, adv, weight)
            })
    }

    fn token_of(url: &str, adv: &Option<String>, weight: &Option<u32>) -> String {
        let mut token = url.to_owned();
        if let Some(adv) = adv {
            token.push('|');
            token.push_str(adv);
        }
        if let Some(w) = weight {
            token.push('=');
            token.push_str(&w.to_string());
        }
        token
    }

    proptest! {
        #[test]
        fn parse_sock_value_never_panics(s in any::<String>(), d in any::<i32>()) {
            let _ = parse_sock_value(&s, d);
        }

        #[test]
        fn parse_sock_value_never_panics_on_grammar_soup(s in grammar_soup()) {
            if let Ok(Some((_, nodes))) = parse_sock_value(&s, 0) {
                prop_assert!(!nodes.is_empty());
                for n in &nodes {
                    prop_assert!(!n.url.is_empty());
                    if n.transport.is_inet() {
                        prop_assert!(n.host().is_some_and(|h| !h.is_empty()));
                        prop_assert!(n.port().is_some());
                    }
                }
            }
        }

        #[test]
        fn parse_notify_socket_never_panics(s in any::<String>()) {
            let _ = parse_notify_socket(&s);
        }

        #[test]
        fn parse_notify_socket_never_panics_on_grammar_soup(s in grammar_soup()) {
            let _ = parse_notify_socket(&s);
            let _ = parse_notify_socket(&format!("tcp:{s}"));
        }

        #[test]
        fn parse_timeout_never_panics(s in any::<String>()) {
            let _ = parse_timeout_ms(&s);
        }

        #[test]
        fn parse_timeout_never_panics_on_numberish(s in "[ +\\-.eE0-9]{0,30}") {
            if let Ok(ms) = parse_timeout_ms(&s) {
                prop_assert!(ms >= 1 && ms <= i32::MAX as u32);
            }
        }

        #[test]
        fn timeout_matches_c_float_truncation(ms in 1u32..10_000_000) {
            // whole milliseconds written as seconds come back unchanged or one below
            // (C float truncation), never above
            let text = format!("{}.{:03}", ms / 1000, ms % 1000);
            let got = parse_timeout_ms(&text).unwrap();
            prop_assert!(got == ms || got + 1 == ms, "{} -> {}", text, got);
        }

        #[test]
        fn normalize_marker_never_ends_in_line_break(s in any::<String>()) {
            if let Some(m) = normalize_marker(&s) {
                prop_assert!(!m.is_empty());
                prop_assert!(!m.ends_with(['\r', '\n']));
                prop_assert!(s.starts_with(&m));
            }
        }

        #[test]
        fn valid_node_round_trips((url, transport, address, adv, weight) in node_strategy()) {
            let token = token_of(&url, &adv, &weight);
            let nodes = parse_node_list(&token).unwrap();
            prop_assert_eq!(nodes.len(), 1);
            let n = &nodes[0];
            prop_assert_eq!(&n.url, &url);
            prop_assert_eq!(n.transport, transport);
            prop_assert_eq!(&n.address, &address);
            prop_assert_eq!(&n.adv_address, &adv);
            prop_assert_eq!(n.weight, weight.unwrap_or(1));
        }

        #[test]
        fn valid_value_round_trips(
            set in proptest::option::of(0i32..),
            nodes in proptest::collection::vec(node_strategy(), 1..6),
            sep in "[ \t]{1,3}",
            default_set in any::<i32>(),
        ) {
            let tokens: Vec<String> =
                nodes.iter().map(|(url, _, _, adv, w)| token_of(url, adv, w)).collect();
            let list = tokens.join(&sep);
            let value = match set {
                Some(id) => format!("{id}{sep}=={sep}{list}"),
                None => format!("{sep}{list}{sep}"),
            };
            let (got_set, got) = parse_sock_value(&value, default_set).unwrap().unwrap();
            prop_assert_eq!(got_set, set.unwrap_or(default_set));
            prop_assert_eq!(got.len(), nodes.len());
            for (i, (n, (url, transport, _, adv, w))) in got.iter().zip(&nodes).enumerate() {
                prop_assert_eq!(n.index, i);
                prop_assert_eq!(&n.url, url);
                prop_assert_eq!(n.transport, *transport);
                prop_assert_eq!(&n.adv_address, adv);
                prop_assert_eq!(n.weight, w.unwrap_or(1));
            }
        }

        #[test]
        fn global_indices_are_definition_order(
            values in proptest::collection::vec((0i32..4, 1usize..4), 1..8),
        ) {
            let strings: Vec<String> = values
                .iter()
                .enumerate()
                .map(|(v, (set, count))| {
                    let nodes: Vec<String> =
                        (0..*count).map(|k| format!("udp:h{v}x{k}")).collect();
                    format!("{set} == {}", nodes.join(" "))
                })
                .collect();
            let sets = build_sets(&strings, 0).unwrap();
            let mut p = ModParams::default();
            for s in &strings {
                p.set_str("rtpproxy_sock", s).unwrap();
            }
            let c = p.finish().unwrap();
            prop_assert_eq!(&c.sets, &sets);
            let expected: Vec<(SetId, String)> = values
                .iter()
                .enumerate()
                .flat_map(|(v, (set, count))| {
                    (0..*count).map(move |k| (*set, format!("udp:h{v}x{k}")))
                })
                .collect();
            let got: Vec<(usize, SetId, String)> =
                c.indexed_nodes().map(|(i, s, n)| (i, s, n.url.clone())).collect();
            prop_assert_eq!(got.len(), expected.len());
            for (i, ((gi, gs, gu), (es, eu))) in got.iter().zip(&expected).enumerate() {
                prop_assert_eq!(*gi, i);
                prop_assert_eq!(gs, es);
                prop_assert_eq!(gu, eu);
            }
            // set order = first appearance
            let mut first_seen: Vec<SetId> = Vec::new();
            for (set, _) in &values {
                if !first_seen.contains(set) {
                    first_seen.push(*set);
                }
            }
            prop_assert_eq!(sets.iter().map(|s| s.id).collect::<Vec<_>>(), first_seen);
        }
    }
}
