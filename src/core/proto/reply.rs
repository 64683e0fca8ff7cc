//! Reply parsing (spec §3.3, §3.5.2).
//!
//! Input is a reply *body*: for UDP what follows the cookie, for stream transports the line
//! read. One trailing `\n` (or `\r\n`) is tolerated. Every input either parses or yields a
//! [`ProtoError`]; nothing here panics on arbitrary bytes.

use std::net::IpAddr;

use nom::branch::alt;
use nom::bytes::complete::{tag, take_till1, take_while1};
use nom::character::complete::{char as ch, digit1, space0, space1};
use nom::combinator::{all_consuming, map_res, not, opt, recognize, rest};
use nom::sequence::{pair, preceded, terminated};
use nom::IResult;

use super::ProtoError;

/// Longest reply body accepted, in bytes (RTPProxy's own reply limit is 1 KiB).
pub const MAX_REPLY_LEN: usize = 1024;

/// One reply from RTPProxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `E<code>`: the command failed on the relay (see the table in spec §3.3).
    Error(u32),
    /// Anything else: the reply text without its trailing newline.
    Data(String),
}

/// The answer to `U`/`L`: `<port>[ <ip>[ 6]]`, possibly followed by sub-command results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaReply {
    /// The relay port; `0` when a lookup found no session.
    pub port: u16,
    /// The relay address, absent when RTPProxy is bound to a wildcard address.
    pub addr: Option<IpAddr>,
    /// The reply carried the `6` marker (IPv6 address).
    pub ipv6: bool,
    /// Results of ` && ` sub-commands, in order, as text (see [`SubResult`]).
    pub subcommand_results: Vec<String>,
}

/// The result of one ` && ` sub-command in a `U`/`L` reply (RTPProxy 20191015).
///
/// RTPProxy writes one result per sub-command up to the last one that has something to say:
/// a sub-command that succeeded without output is `0` when a later one has output, and is
/// left out at the end. Sub-commands run in order and the first failure (a non-zero number,
/// `-1` in practice) stops the rest, which then have no result at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubResult<'a> {
    /// Success; the output text (empty when the sub-command had none or it was left out).
    Ok(&'a [u8]),
    /// The sub-command failed with this code; the ones after it did not run.
    Failed(i64),
}

/// Splits a `U`/`L` reply body into its main part (`<port> [<addr> [6]]`, untrimmed) and the
/// sub-command results after each `&&`, trimmed. A result that is exactly a decimal number
/// is a status (`0` success, anything else a failure); any other text is output.
///
/// ```
/// use rtpproxy::core::proto::reply::{split_subresults, SubResult};
/// let (main, subs) = split_subresults(b"35004 10.0.0.2 && 0 && ab cd\n");
/// assert_eq!(main, b"35004 10.0.0.2 ");
/// assert_eq!(subs, [SubResult::Ok(b""), SubResult::Ok(b"ab cd")]);
/// ```
pub fn split_subresults(reply: &[u8]) -> (&[u8], Vec<SubResult<'_>>) {
    let reply = strip_newline(reply);
    let mut parts = split_on_ampamp(reply);
    let main = parts.remove(0);
    let subs = parts
        .into_iter()
        .map(|p| {
            let t = p.trim_ascii();
            let numeric = !t.is_empty()
                && t.iter()
                    .enumerate()
                    .all(|(i, b)| b.is_ascii_digit() || (i == 0 && *b == b'-'))
                && t != b"-";
            match numeric {
                true if atoi(t) == 0 => SubResult::Ok(b""),
                true => SubResult::Failed(atoi(t)),
                false => SubResult::Ok(t),
            }
        })
        .collect();
    (main, subs)
}

fn split_on_ampamp(b: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + 1 < b.len() {
        if &b[i..i + 2] == b"&&" {
            out.push(&b[start..i]);
            i += 2;
            start = i;
        } else {
            i += 1;
        }
    }
    out.push(&b[start..]);
    out
}

/// The tokens of a reply's text: the one tokeniser for every reply (space-separated values;
/// runs of whitespace count as one separator).
pub fn tokens(text: &str) -> impl Iterator<Item = &str> {
    text.split_ascii_whitespace()
}

impl Reply {
    /// Parses a reply body.
    ///
    /// Refused with an error: an empty body, a body over [`MAX_REPLY_LEN`], bytes that are not
    /// UTF-8, control characters other than the trailing newline, and an `E` reply whose code
    /// is not a decimal number.
    pub fn parse(body: &[u8]) -> Result<Self, ProtoError> {
        if body.len() > MAX_REPLY_LEN {
            return Err(ProtoError::ReplyTooLong { len: body.len() });
        }
        let body = strip_newline(body);
        if body.is_empty() {
            return Err(ProtoError::EmptyReply);
        }
        if let Some(pos) = body
            .iter()
            .position(|&b| b.is_ascii_control() && b != b'\t')
        {
            return Err(malformed(body, &format!("control byte at offset {pos}")));
        }
        let text = std::str::from_utf8(body).map_err(|_| malformed(body, "not utf-8"))?;
        if text.starts_with('E') {
            return match all_consuming(error_reply)(text) {
                Ok((_, code)) => Ok(Self::Error(code)),
                Err(_) => Err(malformed(body, "bad error code")),
            };
        }
        Ok(Self::Data(text.to_owned()))
    }

    /// The error code of a well-formed `E<n>` reply body, as
    /// `Reply::parse(body).ok().and_then(|r| r.error_code())`, without copying a data reply.
    pub fn error_code_in(body: &[u8]) -> Option<u32> {
        if body.first() != Some(&b'E') {
            return None;
        }
        Self::parse(body).ok().and_then(|r| r.error_code())
    }

    /// The error code of an `E<n>` reply.
    pub fn error_code(&self) -> Option<u32> {
        match self {
            Self::Error(c) => Some(*c),
            Self::Data(_) => None,
        }
    }

    /// The text of a non-error reply.
    pub fn text(&self) -> Option<&str> {
        match self {
            Self::Data(t) => Some(t),
            Self::Error(_) => None,
        }
    }

    /// The whitespace-separated tokens of a non-error reply (none for an error reply).
    pub fn tokens(&self) -> impl Iterator<Item = &str> {
        tokens(self.text().unwrap_or(""))
    }

    /// The first token as a signed decimal number (replies of `D`, `Q`, `VF`…).
    pub fn number(&self) -> Result<i64, ProtoError> {
        let text = self.data()?;
        let (_, n) = terminated(signed, alt((space1, nom::combinator::eof)))(text).map_err(
            |_: nom::Err<nom::error::Error<&str>>| malformed(text.as_bytes(), "not a number"),
        )?;
        Ok(n)
    }

    /// The protocol version from a `V` reply (`20040107` for every RTPProxy since 2004).
    pub fn version(&self) -> Result<u32, ProtoError> {
        let n = self.number()?;
        u32::try_from(n).map_err(|_| malformed(self.text().unwrap_or("").as_bytes(), "bad version"))
    }

    /// Whether a `VF` reply says "supported", by the C module's rule: not an error reply and
    /// the text reads as the number 1 (`atoi`).
    pub fn feature_supported(&self) -> bool {
        match self {
            Self::Data(t) => atoi(t.as_bytes()) == 1,
            Self::Error(_) => false,
        }
    }

    /// Parses a `U`/`L` reply.
    pub fn media(&self) -> Result<MediaReply, ProtoError> {
        let text = self.data()?;
        let (main, subs) = match text.split_once("&&") {
            Some((m, s)) => (m, Some(s)),
            None => (text, None),
        };
        let (_, (port, addr, marker)) = all_consuming(media_main)(main)
            .map_err(|_| malformed(text.as_bytes(), "bad media reply"))?;
        let addr = match addr {
            Some(a) => Some(
                a.parse::<IpAddr>()
                    .map_err(|_| malformed(text.as_bytes(), "bad address"))?,
            ),
            None => None,
        };
        let subcommand_results = subs
            .map(|s| s.split("&&").map(|r| r.trim().to_owned()).collect())
            .unwrap_or_default();
        Ok(MediaReply {
            port,
            addr,
            ipv6: marker == Some("6"),
            subcommand_results,
        })
    }

    fn data(&self) -> Result<&str, ProtoError> {
        match self {
            Self::Data(t) => Ok(t),
            Self::Error(c) => Err(ProtoError::ErrorReply(*c)),
        }
    }
}

/// C `atoi` over a reply: skips leading whitespace, reads an optional sign and the digits that
/// follow, ignores the rest; `0` when there are no digits. Saturates instead of overflowing.
///
/// Used where the C module decides on `atoi` of the reply (version and capability checks), so
/// that odd replies are judged the same way.
pub fn atoi(bytes: &[u8]) -> i64 {
    let mut it = bytes
        .iter()
        .copied()
        .skip_while(|b| b.is_ascii_whitespace())
        .peekable();
    let neg = match it.peek() {
        Some(b'-') => {
            it.next();
            true
        }
        Some(b'+') => {
            it.next();
            false
        }
        _ => false,
    };
    let mut n: i64 = 0;
    for b in it.take_while(u8::is_ascii_digit) {
        n = n.saturating_mul(10).saturating_add(i64::from(b - b'0'));
    }
    if neg {
        -n
    } else {
        n
    }
}

fn strip_newline(body: &[u8]) -> &[u8] {
    let body = body.strip_suffix(b"\n").unwrap_or(body);
    body.strip_suffix(b"\r").unwrap_or(body)
}

fn malformed(body: &[u8], why: &str) -> ProtoError {
    let shown: String = body
        .iter()
        .take(64)
        .flat_map(|b| b.escape_ascii())
        .map(char::from)
        .collect();
    ProtoError::MalformedReply(format!("{why}: \"{shown}\""))
}

fn error_reply(i: &str) -> IResult<&str, u32> {
    preceded(
        tag("E"),
        terminated(map_res(digit1, str::parse::<u32>), space0),
    )(i)
}

fn signed(i: &str) -> IResult<&str, i64> {
    map_res(
        recognize(pair(opt(alt((ch('-'), ch('+')))), digit1)),
        str::parse::<i64>,
    )(i)
}

type MediaMain<'a> = (u16, Option<&'a str>, Option<&'a str>);

fn media_main(i: &str) -> IResult<&str, MediaMain<'_>> {
    let word = |i| take_till1(|c: char| c == ' ' || c == '\t')(i);
    let (i, _) = space0(i)?;
    let (i, port) = map_res(take_while1(|c: char| c.is_ascii_digit()), str::parse::<u16>)(i)?;
    // the port is a whole word: `20120x 1.2.3.4` is malformed (C's `atoi` would take 20120 and
    // go on; found by fuzzing, where the address was then silently dropped)
    let (i, _) = not(word)(i)?;
    let (i, addr) = opt(preceded(space1, word))(i)?;
    let (i, marker) = opt(preceded(space1, word))(i)?;
    // further tokens are tolerated and ignored (the C module looks at the first three)
    let (i, _) = rest(i)?;
    Ok((i, (port, addr, marker)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn p(s: &str) -> Result<Reply, ProtoError> {
        Reply::parse(s.as_bytes())
    }

    #[test]
    fn one_tokeniser_for_replies_and_media_parsers() {
        assert_eq!(tokens(" 5  0 12 ").collect::<Vec<_>>(), ["5", "0", "12"]);
        assert_eq!(
            p("5 0 12\n").unwrap().tokens().collect::<Vec<_>>(),
            ["5", "0", "12"]
        );
        assert_eq!(p("E8\n").unwrap().tokens().count(), 0);
    }

    #[test]
    fn versions_and_flags() {
        assert_eq!(p("20040107\n").unwrap().version().unwrap(), 20040107);
        assert!(p("1\n").unwrap().feature_supported());
        assert!(!p("0\n").unwrap().feature_supported());
        assert!(!p("E1\n").unwrap().feature_supported());
        assert_eq!(p("0").unwrap().number().unwrap(), 0);
        assert_eq!(p("-1 x").unwrap().number().unwrap(), -1);
        assert!(p("abc").unwrap().number().is_err());
        assert!(p("12abc").unwrap().number().is_err());
        assert!(p("99999999999").unwrap().version().is_err());
    }

    #[test]
    fn errors() {
        assert_eq!(p("E50\n").unwrap(), Reply::Error(50));
        assert_eq!(p("E7").unwrap().error_code(), Some(7));
        assert_eq!(p("E0\r\n").unwrap(), Reply::Error(0));
        assert!(matches!(p("E"), Err(ProtoError::MalformedReply(_))));
        assert!(matches!(p("Ex1"), Err(ProtoError::MalformedReply(_))));
        assert!(matches!(p("E1 2"), Err(ProtoError::MalformedReply(_))));
        assert!(matches!(
            p("E99999999999"),
            Err(ProtoError::MalformedReply(_))
        ));
        assert_eq!(p("E8").unwrap().media(), Err(ProtoError::ErrorReply(8)));
    }

    #[test]
    fn media_replies() {
        let m = p("35004 10.0.0.2\n").unwrap().media().unwrap();
        assert_eq!(m.port, 35004);
        assert_eq!(m.addr, Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))));
        assert!(!m.ipv6);
        let m = p("40000 2001:db8::1 6\n").unwrap().media().unwrap();
        assert_eq!(
            m.addr,
            Some(IpAddr::V6("2001:db8::1".parse::<Ipv6Addr>().unwrap()))
        );
        assert!(m.ipv6);
        let m = p("0\n").unwrap().media().unwrap();
        assert_eq!((m.port, m.addr, m.ipv6), (0, None, false));
        let m = p("41000 127.0.0.1 && 0").unwrap().media().unwrap();
        assert_eq!(m.port, 41000);
        assert_eq!(m.subcommand_results, vec!["0".to_owned()]);
        assert!(p("70000 1.2.3.4").unwrap().media().is_err());
        assert!(p("x 1.2.3.4").unwrap().media().is_err());
        // fuzz regression (relay_reply): digits glued to garbage are not a port
        assert!(p("20120a53\n").unwrap().media().is_err());
        assert!(p("20120x 1.2.3.4").unwrap().media().is_err());
        assert_eq!(p("20120\t1.2.3.4").unwrap().media().unwrap().port, 20120);
        assert!(p("1000 not-an-ip").unwrap().media().is_err());
    }

    #[test]
    fn subcommand_results() {
        // as RTPProxy 3.2 with dtls_gw and ice_lite answers `L … && M4:1 S && M5:1 S`
        let (main, subs) = split_subresults(
            b"40224 127.0.0.2 && actpass SHA-256 07:32 && eBWk BgEz c:7f%201%20UDP\n",
        );
        assert_eq!(main, b"40224 127.0.0.2 ");
        assert_eq!(
            subs,
            [
                SubResult::Ok(b"actpass SHA-256 07:32"),
                SubResult::Ok(b"eBWk BgEz c:7f%201%20UDP")
            ]
        );
        // a failure stops the rest; leading successes without output are `0`
        let (_, subs) = split_subresults(b"40250 127.0.0.2 && 0 && -1\n");
        assert_eq!(subs, [SubResult::Ok(b""), SubResult::Failed(-1)]);
        let (main, subs) = split_subresults(b"40250\n");
        assert_eq!((main, subs.len()), (&b"40250"[..], 0));
        let (_, subs) = split_subresults(b"1 && && -&&x&&&");
        assert_eq!(
            subs,
            [
                SubResult::Ok(b""),
                SubResult::Ok(b"-"),
                SubResult::Ok(b"x"),
                SubResult::Ok(b"&")
            ]
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(Reply::parse(b""), Err(ProtoError::EmptyReply));
        assert_eq!(Reply::parse(b"\n"), Err(ProtoError::EmptyReply));
        assert!(Reply::parse(b"\xff\xfe").is_err());
        assert!(Reply::parse(b"1\n2\n").is_err());
        assert!(Reply::parse(b"a\0b").is_err());
        assert!(matches!(
            Reply::parse(&[b'1'; MAX_REPLY_LEN + 1]),
            Err(ProtoError::ReplyTooLong { .. })
        ));
        // every short byte string either parses or errors
        for a in 0u8..=255 {
            for b in [b'0', b' ', b'E', b'\n', 0xc3, a] {
                let input = [a, b];
                if let Ok(r) = Reply::parse(&input) {
                    let _ = (r.number(), r.media(), r.version(), r.feature_supported());
                }
            }
        }
    }

    #[test]
    fn c_atoi() {
        assert_eq!(atoi(b"20040107\n"), 20040107);
        assert_eq!(atoi(b"  -12x"), -12);
        assert_eq!(atoi(b"+3"), 3);
        assert_eq!(atoi(b"x1"), 0);
        assert_eq!(atoi(b""), 0);
        assert_eq!(atoi(b"99999999999999999999999"), i64::MAX);
    }

    #[test]
    fn error_code_in_agrees_with_parse() {
        for body in [
            &b"E7\n"[..],
            b"E7",
            b"Ex\n",
            b"E\n",
            b"35000 127.0.0.1\n",
            b"0",
            b"",
            b"\n",
            b"E 8",
        ] {
            assert_eq!(
                Reply::error_code_in(body),
                Reply::parse(body).ok().and_then(|r| r.error_code()),
                "{body:?}"
            );
        }
        assert_eq!(Reply::error_code_in(b"E8\n"), Some(8));
    }
}
