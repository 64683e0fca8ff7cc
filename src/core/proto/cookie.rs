//! Per-process cookies that tag UDP commands (spec §3.2).
//!
//! A cookie is `<pid>_<rand>_<seq>`: the process id, a number below 10000 drawn once per
//! process after fork, and a sequence number that grows by one per *command* (a retransmission
//! reuses the cookie of its command). On the wire the cookie is followed by one space.
//!
//! The generator holds no clock and draws no randomness itself: the process id and the random
//! part are passed in by whoever owns the process (the host's `child_init`).

use std::fmt;

/// Exclusive upper bound of the random part of a cookie (the C module uses `rand() % 10000`).
pub const COOKIE_RAND_MODULUS: u32 = 10_000;

/// One command's cookie, without the trailing space that separates it from the command.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Cookie(String);

impl Cookie {
    /// The cookie text, e.g. `23114_4821_17`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The cookie bytes as they open a request datagram: the text plus one space.
    pub fn wire_prefix(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.0.len() + 1);
        v.extend_from_slice(self.0.as_bytes());
        v.push(b' ');
        v
    }

    /// Matches a reply datagram against this cookie and returns the reply body behind it.
    ///
    /// The match is on the whole first token: the datagram must start with exactly the cookie
    /// text followed by one ASCII whitespace byte (or end right after the cookie). A datagram
    /// whose first token merely *starts* with the cookie (`1_2_3` vs. `1_2_34`) does not match;
    /// the C module compares a prefix only (defect D25).
    ///
    /// Call this for every datagram read while a request is outstanding; `None` means the
    /// datagram belongs to another (usually an earlier, timed-out) request and must be dropped.
    pub fn strip_from<'a>(&self, datagram: &'a [u8]) -> Option<&'a [u8]> {
        let rest = datagram.strip_prefix(self.0.as_bytes())?;
        match rest.split_first() {
            None => Some(rest),
            Some((sep, body)) if sep.is_ascii_whitespace() => Some(body),
            Some(_) => None,
        }
    }
}

impl fmt::Display for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cookie({})", self.0)
    }
}

/// Produces this process' cookies.
///
/// Create one per process, after fork, and share it between all of the process' nodes: the
/// sequence number is per process, as in the C module (`gencookie` in rtpproxy.c), so a node
/// never sees the same cookie twice from one process even when its client is rebuilt after a
/// reload. RTPProxy caches replies by cookie, so reusing a cookie would return a stale answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieGen {
    pid: u32,
    rand: u32,
    seq: u32,
}

impl CookieGen {
    /// A generator for process `pid`; `rand` is reduced modulo [`COOKIE_RAND_MODULUS`]. The
    /// sequence starts at 0.
    ///
    /// Call once per process after fork, with a random number drawn in that process.
    pub fn new(pid: u32, rand: u32) -> Self {
        Self::with_seq(pid, rand, 0)
    }

    /// Like [`CookieGen::new`] but starting at sequence number `seq` (tests, restarts).
    pub fn with_seq(pid: u32, rand: u32, seq: u32) -> Self {
        Self {
            pid,
            rand: rand % COOKIE_RAND_MODULUS,
            seq,
        }
    }

    /// The cookie for the next command; advances the sequence (wrapping at `u32::MAX`).
    ///
    /// Call once per command, not per retransmission.
    pub fn next_cookie(&mut self) -> Cookie {
        // `<pid>_<rand>_<seq>`, built without the formatting machinery (once per command)
        let mut b = Vec::with_capacity(32);
        crate::core::text::push_decimal(&mut b, self.pid);
        b.push(b'_');
        crate::core::text::push_decimal(&mut b, self.rand);
        b.push(b'_');
        crate::core::text::push_decimal(&mut b, self.seq);
        let c = Cookie(String::from_utf8(b).unwrap_or_default());
        self.seq = self.seq.wrapping_add(1);
        c
    }

    /// The sequence number the next cookie will carry.
    pub fn peek_seq(&self) -> u32 {
        self.seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_and_sequence() {
        let mut g = CookieGen::with_seq(23114, 4821, 17);
        let c = g.next_cookie();
        assert_eq!(c.as_str(), "23114_4821_17");
        assert_eq!(c.wire_prefix(), b"23114_4821_17 ");
        assert_eq!(g.next_cookie().as_str(), "23114_4821_18");
        assert_eq!(g.peek_seq(), 19);
    }

    #[test]
    fn rand_is_reduced_and_seq_wraps() {
        let mut g = CookieGen::with_seq(1, 123_456, u32::MAX);
        assert_eq!(g.next_cookie().as_str(), format!("1_3456_{}", u32::MAX));
        assert_eq!(g.next_cookie().as_str(), "1_3456_0");
    }

    #[test]
    fn longest_cookie_fits_the_c_limit() {
        let mut g = CookieGen::with_seq(u32::MAX, 9999, u32::MAX);
        assert!(g.next_cookie().wire_prefix().len() <= 33);
    }

    #[test]
    fn exact_token_match() {
        let c = CookieGen::with_seq(1, 2, 3).next_cookie();
        assert_eq!(c.strip_from(b"1_2_3 20040107\n"), Some(&b"20040107\n"[..]));
        assert_eq!(c.strip_from(b"1_2_3\t0\n"), Some(&b"0\n"[..]));
        assert_eq!(c.strip_from(b"1_2_3"), Some(&b""[..]));
        // a longer cookie sharing the prefix is someone else's reply
        assert_eq!(c.strip_from(b"1_2_34 0\n"), None);
        assert_eq!(c.strip_from(b"1_2_ 0\n"), None);
        assert_eq!(c.strip_from(b"9_2_3 0\n"), None);
        assert_eq!(c.strip_from(b""), None);
    }
}
