//! Request framing per transport (spec §3.1).
//!
//! | framing | transports | request bytes |
//! |---|---|---|
//! | [`Framing::Datagram`] | `udp:`, `udp6:` | `<cookie> <command>` (no newline) |
//! | [`Framing::Stream`] | `tcp:`, `tcp6:`, `cunix:`, `rtp.io:auto` | `<command>\n` |
//! | [`Framing::OneShot`] | `unix:` (legacy) | `<command>` on a fresh connection |

use crate::core::config::Transport;

use super::{Command, Cookie};

/// How requests and replies are delimited on a transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Framing {
    /// One datagram per request, prefixed with a cookie; retransmitted on timeout.
    Datagram,
    /// A persistent byte stream; one line per request and per reply.
    Stream,
    /// One connection per request; the command without newline; the reply is one read.
    OneShot,
}

impl Framing {
    /// The framing a transport uses.
    pub fn for_transport(transport: Transport) -> Self {
        match transport {
            Transport::Udp | Transport::Udp6 => Self::Datagram,
            Transport::Tcp | Transport::Tcp6 | Transport::Cunix | Transport::RtpIo => Self::Stream,
            Transport::Unix => Self::OneShot,
        }
    }

    /// Whether requests carry a cookie (only datagrams do).
    pub fn uses_cookie(self) -> bool {
        self == Self::Datagram
    }
}

/// `<cookie> <command>`: one UDP request datagram.
pub fn encode_datagram(cookie: &Cookie, cmd: &Command) -> Vec<u8> {
    let mut v = cookie.wire_prefix();
    v.extend_from_slice(cmd.as_bytes());
    v
}

/// `<command>\n`: one request on a persistent stream.
pub fn encode_stream(cmd: &Command) -> Vec<u8> {
    let mut v = Vec::with_capacity(cmd.as_bytes().len() + 1);
    v.extend_from_slice(cmd.as_bytes());
    v.push(b'\n');
    v
}

/// `<command>`: one request on a legacy one-shot UNIX connection.
pub fn encode_one_shot(cmd: &Command) -> Vec<u8> {
    cmd.as_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::proto::CookieGen;

    #[test]
    fn per_transport() {
        assert_eq!(Framing::for_transport(Transport::Udp), Framing::Datagram);
        assert_eq!(Framing::for_transport(Transport::Udp6), Framing::Datagram);
        assert_eq!(Framing::for_transport(Transport::Tcp), Framing::Stream);
        assert_eq!(Framing::for_transport(Transport::Tcp6), Framing::Stream);
        assert_eq!(Framing::for_transport(Transport::Cunix), Framing::Stream);
        assert_eq!(Framing::for_transport(Transport::RtpIo), Framing::Stream);
        assert_eq!(Framing::for_transport(Transport::Unix), Framing::OneShot);
        assert!(Framing::Datagram.uses_cookie());
        assert!(!Framing::Stream.uses_cookie());
    }

    #[test]
    fn appendix_a_bytes() {
        let cookie = CookieGen::with_seq(23114, 4821, 18).next_cookie();
        let mut b = Command::builder(b"Lc0").unwrap();
        b.call_id(b"a84b4c76e66710@pc33")
            .unwrap()
            .arg(b"198.51.100.7")
            .unwrap()
            .arg(b"30000")
            .unwrap()
            .indexed_tag(b"1928301774", 1)
            .unwrap()
            .indexed_tag(b"a6c85cf", 1)
            .unwrap();
        let cmd = b.finish();
        assert_eq!(
            encode_datagram(&cookie, &cmd),
            b"23114_4821_18 Lc0 a84b4c76e66710@pc33 198.51.100.7 30000 1928301774;1 a6c85cf;1"
        );
        assert_eq!(encode_stream(&Command::version()), b"V\n");
        assert_eq!(encode_one_shot(&Command::version()), b"V");
    }
}
