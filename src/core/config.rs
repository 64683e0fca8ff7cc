//! Module parameters: the grammars of `rtpproxy_sock`, `rtpp_notify_socket`,
//! `rtpproxy_timeout` and the other modparams, and their validation (spec §1).
//!
//! Values arrive as text from the host shell; results are plain Rust values.

use std::net::Ipv4Addr;

/// Why a modparam value was refused. Messages name what is wrong; the host shell adds the
/// parameter name and the value to the log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Placeholder until the grammar lands.
    #[error("{0}")]
    Invalid(String),
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

/// One node as written in an `rtpproxy_sock` value or a DB row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// The node identity (`rn_url`): the token before `|` / `=`; shown by MI, events, sock_var.
    pub url: String,
    /// Transport from the (case-insensitive) prefix.
    pub transport: Transport,
    /// The URL without its prefix: a path (UNIX kinds) or `host[:port]`.
    pub address: String,
    /// Advertised address (`URL|ADV`), used verbatim in SDP.
    pub adv_address: Option<String>,
    /// Weight (`=N`), 1 when absent.
    pub weight: u32,
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
