//! WebRTC bridging, SDP side: what a WebRTC media section hands to RTPProxy's `dtls_gw` and
//! `ice_lite` modules, and the minimal edits that turn a WebRTC section into a plain RTP one
//! and back (flags `xw` / `xp` of [`crate::core::offer`]).
//!
//! Supported: one proxied audio stream per body (with or without `a=group:BUNDLE` naming it);
//! every other `m=` line must be disabled (port 0). Refused with a [`WebrtcError`], before
//! any command is sent and without touching the body: several live streams (video or data
//! channel bundled with the audio), a WebRTC section without `a=fingerprint`, `a=ice-ufrag`
//! or `a=ice-pwd`, a section that is not DTLS-SRTP (`UDP/TLS/RTP/SAVP[F]`) on the WebRTC
//! side or not plain RTP (`RTP/AVP[F]`) on the plain side.
//!
//! Edits are line deletions and insertions plus the protocol token; every other byte stays.
//! - WebRTC → plain: the protocol becomes `RTP/AVP`; the ICE, DTLS, mux and feedback lines
//!   ([`BRIDGE_ATTRIBUTES`], `a=group:BUNDLE`) are deleted at session and media level.
//! - plain → WebRTC: the protocol becomes `UDP/TLS/RTP/SAVPF`; the same lines are deleted
//!   if the plain side had any, and the relay's parameters are inserted at the end of the
//!   section (`a=mid` when there is none, `a=sendrecv` when no direction is given, `a=rtcp-mux`, `a=ice-ufrag`, `a=ice-pwd`,
//!   `a=candidate`…, `a=end-of-candidates`, `a=fingerprint`, `a=setup`), with `a=ice-lite`
//!   and `a=group:BUNDLE <mid>` before the first `m=` line of the session.

use std::net::IpAddr;

use super::{Sdp, SdpEdit, Span};

/// Attributes that belong to the WebRTC transport (ICE, DTLS, RTCP mux, AVPF feedback, SDES):
/// removed on the plain side, replaced by the relay's on the WebRTC side. `a=group` is
/// handled apart (only its `BUNDLE` form).
pub const BRIDGE_ATTRIBUTES: [&[u8]; 16] = [
    b"ice-ufrag",
    b"ice-pwd",
    b"ice-options",
    b"ice-lite",
    b"ice-mismatch",
    b"candidate",
    b"end-of-candidates",
    b"remote-candidates",
    b"fingerprint",
    b"setup",
    b"tls-id",
    b"rtcp-mux",
    b"rtcp-mux-only",
    b"rtcp-rsize",
    b"rtcp-fb",
    b"crypto",
];

/// The SDP direction attributes.
const DIRECTIONS: [&[u8]; 4] = [b"sendrecv", b"sendonly", b"recvonly", b"inactive"];

/// The protocol written on the WebRTC side.
pub const WEBRTC_PROTO: &[u8] = b"UDP/TLS/RTP/SAVPF";
/// The protocol written on the plain side.
pub const PLAIN_PROTO: &[u8] = b"RTP/AVP";

/// Most remote candidates handed to `ice_lite` (RTPProxy takes 15 sub-commands per command;
/// two go to the `dtls_gw` and `ice_lite` `A`, one may go to DTMF catching).
pub const MAX_CANDIDATES: usize = 12;

/// Which way one SDP body is converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeRole {
    /// The body comes from the WebRTC side and goes to the plain side.
    ToPlain,
    /// The body comes from the plain side and goes to the WebRTC side.
    ToWebrtc,
}

/// A DTLS role (`a=setup`, RFC 4145 / RFC 5763).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// `active`: the endpoint starts the DTLS handshake.
    Active,
    /// `passive`: the endpoint waits for it.
    Passive,
    /// `actpass`: either (offers only).
    Actpass,
}

impl Setup {
    /// The SDP / RTPProxy word.
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            Self::Active => b"active",
            Self::Passive => b"passive",
            Self::Actpass => b"actpass",
        }
    }

    fn parse(v: &[u8]) -> Option<Self> {
        [Self::Active, Self::Passive, Self::Actpass]
            .into_iter()
            .find(|s| s.as_bytes().eq_ignore_ascii_case(v))
    }
}

/// What a WebRTC media section gives the relay (the `A`/`C` sub-commands).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerParams {
    /// Index into [`Sdp::media`].
    pub media: usize,
    /// The peer's DTLS role (`a=setup`; `actpass` when absent, as RFC 8842 assumes).
    pub setup: Setup,
    /// The fingerprint's hash function as written (`sha-256`).
    pub algorithm: Vec<u8>,
    /// The fingerprint (`AB:CD:…`).
    pub fingerprint: Vec<u8>,
    /// `a=ice-ufrag`.
    pub ufrag: Vec<u8>,
    /// `a=ice-pwd`.
    pub pwd: Vec<u8>,
    /// The usable candidates, each as the words RTPProxy reads: the eight mandatory fields
    /// and any `raddr`/`rport` pairs. UDP, RTP component, IP literals only; at most
    /// [`MAX_CANDIDATES`].
    pub candidates: Vec<Vec<Vec<u8>>>,
    /// Candidates left out (TCP, RTCP component, mDNS names, over the limit).
    pub skipped_candidates: usize,
}

/// What the relay answered to `M4:1 S` and `M5:1 S`, for the WebRTC side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayParams {
    /// The relay's DTLS role.
    pub setup: Setup,
    /// Hash function, as RTPProxy writes it (`SHA-256`).
    pub algorithm: Vec<u8>,
    /// The relay's certificate fingerprint.
    pub fingerprint: Vec<u8>,
    /// The relay's ICE user fragment.
    pub ufrag: Vec<u8>,
    /// The relay's ICE password.
    pub pwd: Vec<u8>,
    /// The relay's candidates, URL-decoded (the text after `a=candidate:`).
    pub candidates: Vec<Vec<u8>>,
}

/// Why a body cannot be bridged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebrtcError {
    /// No stream to bridge (every `m=` disabled or of an unsupported protocol).
    #[error("WebRTC bridging: no audio stream to bridge")]
    NoStream,
    /// More than one live stream (video or data channel, bundled or not).
    #[error(
        "WebRTC bridging supports one audio stream; this SDP has {live} live m= lines \
         (video/data or BUNDLE of several streams is not supported)"
    )]
    SeveralStreams {
        /// Number of `m=` lines with a non-zero port.
        live: usize,
    },
    /// The one stream is not audio.
    #[error("WebRTC bridging supports audio only (m={media})")]
    NotAudio {
        /// The media type.
        media: String,
    },
    /// The protocol does not fit the side.
    #[error("WebRTC bridging: protocol {proto} on the {side} side (expected {expected})")]
    WrongProtocol {
        /// The protocol found.
        proto: String,
        /// `WebRTC` or `plain`.
        side: &'static str,
        /// What is expected.
        expected: &'static str,
    },
    /// A mandatory WebRTC attribute is missing.
    #[error("WebRTC bridging: no a={0} in the WebRTC SDP")]
    Missing(&'static str),
    /// An attribute value cannot be used.
    #[error("WebRTC bridging: unusable a={0} value")]
    BadValue(&'static str),
    /// `a=setup:holdconn` or another role the relay cannot take.
    #[error("WebRTC bridging: unsupported a=setup role")]
    BadSetup,
    /// The relay answered `S` with something that cannot be read.
    #[error("WebRTC bridging: unreadable {0} parameters from rtpproxy")]
    BadRelayResult(&'static str),
}

#[derive(Debug, Clone, Copy)]
struct AttrLine {
    /// The line without its terminator.
    line: Span,
    /// The line with its terminator (what a deletion removes).
    whole: Span,
}

fn is_eol(b: u8) -> bool {
    b == b'\r' || b == b'\n'
}

/// The lines of `span`, with and without their terminators (CRLF, LF or CR).
fn lines_of(body: &[u8], span: Span) -> Vec<AttrLine> {
    let end = span.end().min(body.len());
    let mut out = Vec::new();
    let mut i = span.offset;
    while i < end {
        let start = i;
        while i < end && !is_eol(body[i]) {
            i += 1;
        }
        let line_end = i;
        if i < end && body[i] == b'\r' {
            i += 1;
        }
        if i < end && body[i] == b'\n' {
            i += 1;
        }
        if line_end > start {
            out.push(AttrLine {
                line: Span::new(start, line_end - start),
                whole: Span::new(start, i - start),
            });
        } else if i == start {
            i += 1;
        }
    }
    out
}

/// `a=<name>[:<value>]` → (name, value).
fn attribute(text: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = text.strip_prefix(b"a=")?;
    Some(match rest.iter().position(|&b| b == b':') {
        Some(p) => (&rest[..p], rest[p + 1..].trim_ascii()),
        None => (rest.trim_ascii(), &b""[..]),
    })
}

/// The span of the session-level part of session `s` (before its first `m=`).
fn session_head(sdp: &Sdp<'_>, s: usize) -> Span {
    let session = &sdp.sessions()[s];
    let end = sdp
        .media()
        .get(session.media.start)
        .map_or(session.span.end(), |m| m.line.offset);
    Span::new(session.span.offset, end - session.span.offset)
}

fn first_attr<'a>(sdp: &Sdp<'a>, span: Span, name: &[u8]) -> Option<&'a [u8]> {
    lines_of(sdp.body(), span)
        .into_iter()
        .filter_map(|l| attribute(sdp.text(l.line)))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// A media-level attribute, else the session-level one.
fn media_or_session<'a>(sdp: &Sdp<'a>, media: usize, name: &[u8]) -> Option<&'a [u8]> {
    let m = &sdp.media()[media];
    first_attr(sdp, m.block, name).or_else(|| first_attr(sdp, session_head(sdp, m.session), name))
}

fn is_token(v: &[u8]) -> bool {
    !v.is_empty() && v.iter().all(|b| b.is_ascii_graphic())
}

/// Finds the one stream to bridge: exactly one live (`port` ≠ 0) `m=` line, audio, proxied.
fn the_stream(sdp: &Sdp<'_>) -> Result<usize, WebrtcError> {
    let body = sdp.body();
    let live: Vec<usize> = (0..sdp.media().len())
        .filter(|&i| !sdp.media()[i].is_port_zero(body))
        .collect();
    match live.as_slice() {
        [] => Err(WebrtcError::NoStream),
        [one] => {
            let m = &sdp.media()[*one];
            if !m.is_proxied(body) {
                return Err(WebrtcError::NoStream);
            }
            let kind = sdp.text(m.media_type);
            if kind != b"audio" {
                return Err(WebrtcError::NotAudio {
                    media: String::from_utf8_lossy(kind).into_owned(),
                });
            }
            Ok(*one)
        }
        more => Err(WebrtcError::SeveralStreams { live: more.len() }),
    }
}

fn is_dtls_srtp(proto: &[u8]) -> bool {
    proto.eq_ignore_ascii_case(b"UDP/TLS/RTP/SAVPF")
        || proto.eq_ignore_ascii_case(b"UDP/TLS/RTP/SAVP")
}

fn is_plain_rtp(proto: &[u8]) -> bool {
    proto.eq_ignore_ascii_case(b"RTP/AVP") || proto.eq_ignore_ascii_case(b"RTP/AVPF")
}

/// Checks a body from the WebRTC side and reads what the relay needs from it.
pub fn inspect_webrtc(sdp: &Sdp<'_>) -> Result<PeerParams, WebrtcError> {
    let media = the_stream(sdp)?;
    let m = &sdp.media()[media];
    let proto = sdp.text(m.proto);
    if !is_dtls_srtp(proto) {
        return Err(WebrtcError::WrongProtocol {
            proto: String::from_utf8_lossy(proto).into_owned(),
            side: "WebRTC",
            expected: "UDP/TLS/RTP/SAVPF",
        });
    }
    let fp =
        media_or_session(sdp, media, b"fingerprint").ok_or(WebrtcError::Missing("fingerprint"))?;
    let mut words = fp
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty());
    let (Some(algorithm), Some(fingerprint), None) = (words.next(), words.next(), words.next())
    else {
        return Err(WebrtcError::BadValue("fingerprint"));
    };
    if !is_token(algorithm)
        || algorithm.len() > 16
        || !fingerprint
            .iter()
            .all(|b| b.is_ascii_hexdigit() || *b == b':')
    {
        return Err(WebrtcError::BadValue("fingerprint"));
    }
    let setup = match media_or_session(sdp, media, b"setup") {
        None => Setup::Actpass,
        Some(v) => Setup::parse(v).ok_or(WebrtcError::BadSetup)?,
    };
    let ufrag =
        media_or_session(sdp, media, b"ice-ufrag").ok_or(WebrtcError::Missing("ice-ufrag"))?;
    let pwd = media_or_session(sdp, media, b"ice-pwd").ok_or(WebrtcError::Missing("ice-pwd"))?;
    if !is_token(ufrag) {
        return Err(WebrtcError::BadValue("ice-ufrag"));
    }
    if !is_token(pwd) {
        return Err(WebrtcError::BadValue("ice-pwd"));
    }
    let mut candidates = Vec::new();
    let mut skipped = 0;
    for l in lines_of(sdp.body(), m.block) {
        let Some((b"candidate", v)) = attribute(sdp.text(l.line)) else {
            continue;
        };
        match usable_candidate(v) {
            Some(c) if candidates.len() < MAX_CANDIDATES => candidates.push(c),
            _ => skipped += 1,
        }
    }
    Ok(PeerParams {
        media,
        setup,
        algorithm: algorithm.to_vec(),
        fingerprint: fingerprint.to_vec(),
        ufrag: ufrag.to_vec(),
        pwd: pwd.to_vec(),
        candidates,
        skipped_candidates: skipped,
    })
}

/// The words of a candidate `ice_lite` can take: `<foundation> 1 udp <prio> <ip> <port> typ
/// <type>` (RTP component, UDP, an IP literal) plus its `raddr`/`rport` pairs.
fn usable_candidate(v: &[u8]) -> Option<Vec<Vec<u8>>> {
    let w: Vec<&[u8]> = v
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
        .collect();
    if w.len() < 8
        || w[1] != b"1"
        || !w[2].eq_ignore_ascii_case(b"udp")
        || !w[3].iter().all(u8::is_ascii_digit)
        || std::str::from_utf8(w[4]).ok()?.parse::<IpAddr>().is_err()
        || parse_port(w[5]).is_none()
        || w[6] != b"typ"
        || !w.iter().all(|x| is_token(x))
    {
        return None;
    }
    let mut out: Vec<Vec<u8>> = w[..8].iter().map(|x| x.to_vec()).collect();
    for pair in w[8..].chunks_exact(2) {
        if pair[0] == b"raddr" || pair[0] == b"rport" {
            out.extend(pair.iter().map(|x| x.to_vec()));
        }
    }
    Some(out)
}

fn parse_port(w: &[u8]) -> Option<u16> {
    std::str::from_utf8(w).ok()?.parse().ok()
}

/// Checks a body from the plain side; returns the stream to bridge.
pub fn inspect_plain(sdp: &Sdp<'_>) -> Result<usize, WebrtcError> {
    let media = the_stream(sdp)?;
    let proto = sdp.text(sdp.media()[media].proto);
    if !is_plain_rtp(proto) {
        return Err(WebrtcError::WrongProtocol {
            proto: String::from_utf8_lossy(proto).into_owned(),
            side: "plain",
            expected: "RTP/AVP",
        });
    }
    Ok(media)
}

/// Reads the `dtls_gw` `S` result: `<actpass|active|passive> <alg> <fingerprint>`.
pub fn parse_dtls_result(text: &[u8]) -> Result<(Setup, Vec<u8>, Vec<u8>), WebrtcError> {
    let bad = WebrtcError::BadRelayResult("DTLS");
    let w: Vec<&[u8]> = text
        .split(|b| *b == b' ')
        .filter(|w| !w.is_empty())
        .collect();
    match w.as_slice() {
        [mode, alg, fp]
            if is_token(alg) && fp.iter().all(|b| b.is_ascii_hexdigit() || *b == b':') =>
        {
            Ok((Setup::parse(mode).ok_or(bad)?, alg.to_vec(), fp.to_vec()))
        }
        _ => Err(bad),
    }
}

/// The `ice_lite` `S` result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceResult {
    /// The relay's ICE user fragment.
    pub ufrag: Vec<u8>,
    /// The relay's ICE password.
    pub pwd: Vec<u8>,
    /// Its candidates, URL-decoded.
    pub candidates: Vec<Vec<u8>>,
}

/// Reads the `ice_lite` `S` result: `<ufrag> <pwd> c:<url-encoded candidate>…`.
pub fn parse_ice_result(text: &[u8]) -> Result<IceResult, WebrtcError> {
    let bad = WebrtcError::BadRelayResult("ICE");
    let mut w = text.split(|b| *b == b' ').filter(|w| !w.is_empty());
    let (Some(ufrag), Some(pwd)) = (w.next(), w.next()) else {
        return Err(bad);
    };
    if !is_token(ufrag) || !is_token(pwd) {
        return Err(bad);
    }
    let mut candidates = Vec::new();
    for c in w {
        let enc = c.strip_prefix(b"c:").ok_or(bad.clone())?;
        let dec = url_decode(enc).ok_or(bad.clone())?;
        // one SDP line: printable, no line breaks
        if dec.is_empty() || !dec.iter().all(|b| *b == b' ' || b.is_ascii_graphic()) {
            return Err(bad);
        }
        candidates.push(dec);
    }
    if candidates.is_empty() {
        return Err(bad);
    }
    Ok(IceResult {
        ufrag: ufrag.to_vec(),
        pwd: pwd.to_vec(),
        candidates,
    })
}

fn url_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hex = std::str::from_utf8(s.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The line terminator used after the `m=` line of `media` (CRLF unless that line ends in a
/// bare LF or CR).
fn eol_of(sdp: &Sdp<'_>, media: usize) -> &'static [u8] {
    let body = sdp.body();
    let end = sdp.media()[media].line.end();
    match (body.get(end), body.get(end + 1)) {
        (Some(b'\r'), Some(b'\n')) => b"\r\n",
        (Some(b'\n'), _) => b"\n",
        (Some(b'\r'), _) => b"\r",
        _ => b"\r\n",
    }
}

/// Deletions of the bridge attributes (and `a=group:BUNDLE`) at session and media level of
/// the stream's session.
fn deletions(sdp: &Sdp<'_>, media: usize, keep_bundle: bool) -> Vec<SdpEdit> {
    let m = &sdp.media()[media];
    let mut out = Vec::new();
    for span in [session_head(sdp, m.session), m.block] {
        for l in lines_of(sdp.body(), span) {
            let Some((name, value)) = attribute(sdp.text(l.line)) else {
                continue;
            };
            let bundle = name == b"group" && value.starts_with(b"BUNDLE");
            if BRIDGE_ATTRIBUTES.contains(&name) || (bundle && !keep_bundle) {
                out.push(SdpEdit {
                    offset: l.whole.offset,
                    len: l.whole.len,
                    replacement: Vec::new(),
                });
            }
        }
    }
    out
}

fn proto_edit(sdp: &Sdp<'_>, media: usize, proto: &[u8]) -> Option<SdpEdit> {
    let span = sdp.media()[media].proto;
    (sdp.text(span) != proto).then(|| SdpEdit {
        offset: span.offset,
        len: span.len,
        replacement: proto.to_vec(),
    })
}

/// The edits that make the WebRTC stream `media` a plain RTP one (besides the port and
/// address edits of the ordinary rewrite).
pub fn to_plain_edits(sdp: &Sdp<'_>, media: usize) -> Vec<SdpEdit> {
    let mut out: Vec<SdpEdit> = proto_edit(sdp, media, PLAIN_PROTO).into_iter().collect();
    out.extend(deletions(sdp, media, false));
    out.sort_by_key(|e| e.offset);
    out
}

/// The edits that make the plain stream `media` a WebRTC one with the relay's parameters.
pub fn to_webrtc_edits(sdp: &Sdp<'_>, media: usize, relay: &RelayParams) -> Vec<SdpEdit> {
    let body = sdp.body();
    let m = &sdp.media()[media];
    let eol = eol_of(sdp, media);
    let head = session_head(sdp, m.session);
    let has_bundle = lines_of(body, head)
        .iter()
        .filter_map(|l| attribute(sdp.text(l.line)))
        .any(|(n, v)| n == b"group" && v.starts_with(b"BUNDLE"));
    let mid = first_attr(sdp, m.block, b"mid");

    let mut out: Vec<SdpEdit> = proto_edit(sdp, media, WEBRTC_PROTO).into_iter().collect();
    out.extend(deletions(sdp, media, true));

    // session level, before the first m= of the session
    let mut session_lines: Vec<u8> = Vec::new();
    let line = |buf: &mut Vec<u8>, parts: &[&[u8]]| {
        for p in parts {
            buf.extend_from_slice(p);
        }
        buf.extend_from_slice(eol);
    };
    line(&mut session_lines, &[b"a=ice-lite"]);
    let mid_value: &[u8] = mid.unwrap_or(b"0");
    if !has_bundle {
        line(&mut session_lines, &[b"a=group:BUNDLE ", mid_value]);
    }
    out.push(SdpEdit {
        offset: head.end(),
        len: 0,
        replacement: session_lines,
    });

    // media level, at the end of the section
    let mut media_lines: Vec<u8> = Vec::new();
    let end = m.block.end();
    if end > 0 && !is_eol(body[end - 1]) {
        media_lines.extend_from_slice(eol);
    }
    if mid.is_none() {
        line(&mut media_lines, &[b"a=mid:", mid_value]);
    }
    // RFC 4566 makes a section without a direction sendrecv; written out, since some WebRTC
    // stacks (aiortc) take a missing direction for "send nothing".
    let has_direction = [m.block, head].into_iter().any(|span| {
        DIRECTIONS
            .iter()
            .any(|d| first_attr(sdp, span, d).is_some())
    });
    if !has_direction {
        line(&mut media_lines, &[b"a=sendrecv"]);
    }
    line(&mut media_lines, &[b"a=rtcp-mux"]);
    line(&mut media_lines, &[b"a=ice-ufrag:", &relay.ufrag]);
    line(&mut media_lines, &[b"a=ice-pwd:", &relay.pwd]);
    for c in &relay.candidates {
        line(&mut media_lines, &[b"a=candidate:", c]);
    }
    line(&mut media_lines, &[b"a=end-of-candidates"]);
    let alg = relay.algorithm.to_ascii_lowercase();
    line(
        &mut media_lines,
        &[b"a=fingerprint:", &alg, b" ", &relay.fingerprint],
    );
    line(&mut media_lines, &[b"a=setup:", relay.setup.as_bytes()]);
    out.push(SdpEdit {
        offset: end,
        len: 0,
        replacement: media_lines,
    });
    out.sort_by_key(|e| e.offset);
    out
}

#[cfg(test)]
mod tests {
    use super::super::{apply_edits, scan};
    use super::*;

    const AIORTC: &[u8] = b"v=0\r\no=- 3913185541 3913185541 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\na=msid-semantic:WMS *\r\nm=audio 51000 UDP/TLS/RTP/SAVPF 96 0 8\r\nc=IN IP4 127.0.0.1\r\na=sendrecv\r\na=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=mid:0\r\na=msid:a b\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=rtcp-mux\r\na=ssrc:1 cname:x\r\na=rtpmap:96 opus/48000/2\r\na=rtcp-fb:96 nack\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=candidate:1 1 udp 2130706431 127.0.0.1 51000 typ host\r\na=candidate:2 1 tcp 1 127.0.0.1 9 typ host tcptype active\r\na=candidate:3 1 udp 2130706431 x.local 51001 typ host\r\na=candidate:4 1 udp 1694498815 192.0.2.1 51000 typ srflx raddr 127.0.0.1 rport 51000 generation 0\r\na=end-of-candidates\r\na=ice-ufrag:Ab12\r\na=ice-pwd:pwdpwdpwdpwdpwdpwdpwdp\r\na=fingerprint:sha-256 AA:BB:CC\r\na=setup:actpass\r\n";

    #[test]
    fn webrtc_offer_parameters() {
        let sdp = scan(AIORTC).unwrap();
        let p = inspect_webrtc(&sdp).unwrap();
        assert_eq!(p.setup, Setup::Actpass);
        assert_eq!(p.algorithm, b"sha-256");
        assert_eq!(p.fingerprint, b"AA:BB:CC");
        assert_eq!(p.ufrag, b"Ab12");
        assert_eq!(p.candidates.len(), 2);
        assert_eq!(
            p.candidates[1].join(&b' '),
            b"4 1 udp 1694498815 192.0.2.1 51000 typ srflx raddr 127.0.0.1 rport 51000"
        );
        assert_eq!(p.skipped_candidates, 2);
    }

    #[test]
    fn webrtc_to_plain_removes_only_transport_lines() {
        let sdp = scan(AIORTC).unwrap();
        let out = apply_edits(AIORTC, &to_plain_edits(&sdp, 0)).unwrap();
        assert_eq!(
            out,
            &b"v=0\r\no=- 3913185541 3913185541 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=msid-semantic:WMS *\r\nm=audio 51000 RTP/AVP 96 0 8\r\nc=IN IP4 127.0.0.1\r\na=sendrecv\r\na=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=mid:0\r\na=msid:a b\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ssrc:1 cname:x\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"[..]
        );
    }

    const SIPP: &[u8] = b"v=0\no=user1 53655765 2353687637 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 6000 RTP/AVP 0\na=rtpmap:0 PCMU/8000";

    fn relay() -> RelayParams {
        RelayParams {
            setup: Setup::Passive,
            algorithm: b"SHA-256".to_vec(),
            fingerprint: b"07:32".to_vec(),
            ufrag: b"eBWk".to_vec(),
            pwd: b"BgEzjkLyCd35ocJ/XebglSGL".to_vec(),
            candidates: vec![b"7f000002 1 UDP 2113929471 127.0.0.2 40224 typ host".to_vec()],
        }
    }

    #[test]
    fn plain_to_webrtc_keeps_line_style() {
        let sdp = scan(SIPP).unwrap();
        assert_eq!(inspect_plain(&sdp).unwrap(), 0);
        let out = apply_edits(SIPP, &to_webrtc_edits(&sdp, 0, &relay())).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "v=0\no=user1 53655765 2353687637 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\n\
             a=ice-lite\na=group:BUNDLE 0\n\
             m=audio 6000 UDP/TLS/RTP/SAVPF 0\na=rtpmap:0 PCMU/8000\n\
             a=mid:0\na=sendrecv\na=rtcp-mux\na=ice-ufrag:eBWk\na=ice-pwd:BgEzjkLyCd35ocJ/XebglSGL\n\
             a=candidate:7f000002 1 UDP 2113929471 127.0.0.2 40224 typ host\n\
             a=end-of-candidates\na=fingerprint:sha-256 07:32\na=setup:passive\n"
        );
    }

    #[test]
    fn relay_results() {
        assert_eq!(
            parse_dtls_result(b"actpass SHA-256 07:32:21").unwrap(),
            (Setup::Actpass, b"SHA-256".to_vec(), b"07:32:21".to_vec())
        );
        assert!(parse_dtls_result(b"maybe SHA-256 07").is_err());
        assert!(parse_dtls_result(b"active SHA-256").is_err());
        let IceResult {
            ufrag: u,
            pwd: p,
            candidates: c,
        } = parse_ice_result(
            b"eBWk BgEz c:7f000002%201%20UDP%202113929471%20127.0.0.2%2040224%20typ%20host",
        )
        .unwrap();
        assert_eq!((u.as_slice(), p.as_slice()), (&b"eBWk"[..], &b"BgEz"[..]));
        assert_eq!(
            c,
            [b"7f000002 1 UDP 2113929471 127.0.0.2 40224 typ host".to_vec()]
        );
        assert!(parse_ice_result(b"u p").is_err());
        assert!(parse_ice_result(b"u p c:a%0d%0ab").is_err());
        assert!(parse_ice_result(b"u p c:a%zz").is_err());
        assert!(parse_ice_result(b"u p x:a").is_err());
    }

    #[test]
    fn every_prefix_and_mutation_is_handled_without_panic() {
        // cut the bodies anywhere, and break lines in odd ways: inspection, edits and their
        // application either work or give an error
        for body in [AIORTC, SIPP] {
            let mut inputs: Vec<Vec<u8>> = (0..=body.len()).map(|n| body[..n].to_vec()).collect();
            inputs.push(
                body.iter()
                    .map(|&b| if b == b'\n' { b'\r' } else { b })
                    .collect(),
            );
            inputs.push(body.iter().filter(|&&b| b != b'\n').copied().collect());
            for input in &inputs {
                let Ok(sdp) = scan(input) else { continue };
                if let Ok(p) = inspect_webrtc(&sdp) {
                    apply_edits(input, &to_plain_edits(&sdp, p.media)).unwrap();
                }
                if let Ok(m) = inspect_plain(&sdp) {
                    apply_edits(input, &to_webrtc_edits(&sdp, m, &relay())).unwrap();
                }
            }
        }
        for junk in [
            &b"u p c:%"[..],
            b"u p c:%4",
            b"u p c:",
            b"a b c",
            b"",
            b"   ",
        ] {
            let _ = parse_ice_result(junk);
            let _ = parse_dtls_result(junk);
        }
    }

    #[test]
    fn refusals() {
        let video = [
            AIORTC,
            b"m=video 51000 UDP/TLS/RTP/SAVPF 97\r\nc=IN IP4 127.0.0.1\r\na=mid:1\r\n",
        ]
        .concat();
        let sdp = scan(&video).unwrap();
        assert_eq!(
            inspect_webrtc(&sdp),
            Err(WebrtcError::SeveralStreams { live: 2 })
        );
        let no_fp: Vec<u8> = AIORTC
            .split_inclusive(|b| *b == b'\n')
            .filter(|l| !l.starts_with(b"a=fingerprint"))
            .flatten()
            .copied()
            .collect();
        let sdp = scan(&no_fp).unwrap();
        assert_eq!(
            inspect_webrtc(&sdp),
            Err(WebrtcError::Missing("fingerprint"))
        );
        let sdp = scan(SIPP).unwrap();
        assert!(matches!(
            inspect_webrtc(&sdp),
            Err(WebrtcError::WrongProtocol { .. })
        ));
        let sdp = scan(AIORTC).unwrap();
        assert!(matches!(
            inspect_plain(&sdp),
            Err(WebrtcError::WrongProtocol { .. })
        ));
        let vid = b"v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\nc=IN IP4 1.1.1.1\r\nm=audio 0 RTP/AVP 0\r\nm=video 5 RTP/AVP 31\r\n";
        let sdp = scan(vid).unwrap();
        assert!(matches!(
            inspect_plain(&sdp),
            Err(WebrtcError::NotAudio { .. })
        ));
    }
}
