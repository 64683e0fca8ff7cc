//! The SDP scanner: finds sessions, media sections and the spans of the tokens the rewriter
//! may change (spec §4.4). Mirrors the walk of `rtpproxy_offer_answer` in rtpproxy.c and the
//! OpenSIPS SDP helpers (`find_sdp_line`, `extract_mediaip`, `extract_mediainfo`) without
//! copying them: every rule below is the observable one from the spec.

use nom::bytes::complete::{take_till1, take_while, take_while1};
use nom::IResult;

use super::{
    Address, AddressLine, ConnectionSource, Family, Media, Protocol, Sdp, SdpError, Session, Span,
};

/// One line: content bytes `[start, end)`, terminator excluded.
#[derive(Debug, Clone, Copy)]
struct Line {
    start: usize,
    end: usize,
}

impl Line {
    fn span(self) -> Span {
        Span::new(self.start, self.end - self.start)
    }
}

fn is_eol(b: u8) -> bool {
    b == b'\r' || b == b'\n'
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Splits `body[from..]` into lines (maximal runs without CR/LF; empty runs dropped).
fn lines(body: &[u8], from: usize) -> Vec<Line> {
    // SDP lines run 20-40 bytes: one allocation for the usual body
    let mut out = Vec::with_capacity(body.len() / 16 + 4);
    let mut i = from;
    while i < body.len() {
        if is_eol(body[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < body.len() && !is_eol(body[i]) {
            i += 1;
        }
        out.push(Line { start, end: i });
    }
    out
}

/// Scans an SDP body.
///
/// Rules (spec §4.4): leading whitespace is skipped and the rest must start with `v=`;
/// sessions split at lines starting with `v=`; each needs an `o=` line and an `m=` line after
/// it; the session-level `c=` is the first `c=` between `o=` and the first `m=`; a media
/// section runs from its `m=` to the next `m=` of the session; its `c=` and `a=rtcp:` are the
/// first such lines in the section (case-sensitive, at line start). Every media section needs
/// an effective `c=` address (even one that will be skipped) and a well-formed `m=` line.
/// The media index counts supported protocols across all sessions, port-0 streams included.
///
/// Works on any bytes; returns a typed error instead of panicking.
pub fn scan(body: &[u8]) -> Result<Sdp<'_>, SdpError> {
    let start = body
        .iter()
        .position(|&b| !(is_blank(b) || is_eol(b)))
        .unwrap_or(body.len());
    if !body[start..].starts_with(b"v=") {
        return Err(SdpError::NoSession);
    }
    let all = lines(body, start);
    let starts = |l: &Line, p: &[u8]| body[l.start..l.end].starts_with(p);

    // Session boundaries: indexes of `v=` lines (the first line is one).
    let mut bounds: Vec<usize> = (0..all.len()).filter(|&i| starts(&all[i], b"v=")).collect();
    bounds.push(all.len());

    let mut sessions = Vec::new();
    let mut media = Vec::new();
    let mut next_index: u32 = 0;
    for w in bounds.windows(2) {
        let (first, last) = (w[0], w[1]);
        let s_lines = &all[first..last];
        let s_start = s_lines[0].start;
        let s_end = all.get(last).map_or(body.len(), |l| l.start);
        let s_idx = sessions.len();

        let o_pos = s_lines
            .iter()
            .position(|l| starts(l, b"o="))
            .ok_or(SdpError::NoOrigin { offset: s_start })?;
        let m_rel: Vec<usize> = (o_pos + 1..s_lines.len())
            .filter(|&i| starts(&s_lines[i], b"m="))
            .collect();
        let first_m = *m_rel.first().ok_or(SdpError::NoMedia { offset: s_start })?;
        let origin = address_line(body, s_lines[o_pos]);
        let s_conn = s_lines[o_pos + 1..first_m]
            .iter()
            .find(|l| starts(l, b"c="))
            .map(|&l| address_line(body, l));

        let media_start = media.len();
        for (k, &mi) in m_rel.iter().enumerate() {
            let block_end_line = m_rel.get(k + 1).copied().unwrap_or(s_lines.len());
            let m_line = s_lines[mi];
            let block_lines = &s_lines[mi + 1..block_end_line];
            let block_end = s_lines.get(block_end_line).map_or(s_end, |l| l.start);
            let m_conn = block_lines
                .iter()
                .find(|l| starts(l, b"c="))
                .map(|&l| address_line(body, l));
            let rtcp = block_lines
                .iter()
                .find(|l| starts(l, b"a=rtcp:"))
                .map(|&l| rtcp_value(body, l));

            // The effective c= is looked up before the m= line is parsed (C order).
            let (eff_line, effective_source) = match (m_conn, s_conn) {
                (Some(c), _) => (c, ConnectionSource::Media),
                (None, Some(c)) => (c, ConnectionSource::Session),
                (None, None) => {
                    return Err(SdpError::NoConnection {
                        offset: m_line.start,
                    })
                }
            };
            let effective = eff_line.address.ok_or(SdpError::BadAddressLine {
                offset: eff_line.line.offset,
            })?;
            let parts = media_line(body, m_line)?;
            let index = if parts.protocol == Protocol::Unsupported {
                None
            } else {
                next_index = next_index.saturating_add(1);
                Some(next_index)
            };
            media.push(Media {
                session: s_idx,
                line: m_line.span(),
                block: Span::new(m_line.start, block_end - m_line.start),
                media_type: parts.media_type,
                port: parts.port,
                proto: parts.proto,
                protocol: parts.protocol,
                payloads: parts.payloads,
                connection: m_conn,
                rtcp,
                effective,
                effective_source,
                index,
            });
        }
        sessions.push(Session {
            span: Span::new(s_start, s_end - s_start),
            origin,
            connection: s_conn,
            media: media_start..media.len(),
        });
    }
    Ok(Sdp {
        body,
        start,
        sessions,
        media,
    })
}

/// Whether `marker` (the `nortpproxy_str`) occurs at the start of a line of `body` (spec §4.3):
/// at offset 0 or right after a `\r` or `\n`. A prefix match, as in C: `a=nortpproxy:yesno`
/// matches `a=nortpproxy:yes`. An empty marker never matches.
pub fn has_marker(body: &[u8], marker: &[u8]) -> bool {
    if marker.is_empty() || marker.len() > body.len() {
        return false;
    }
    (0..=body.len() - marker.len())
        .filter(|&p| p == 0 || is_eol(body[p - 1]))
        .any(|p| body[p..].starts_with(marker))
}

type Tok<'a> = IResult<&'a [u8], &'a [u8]>;

fn blanks0(i: &[u8]) -> Tok<'_> {
    take_while(is_blank)(i)
}

fn blanks1(i: &[u8]) -> Tok<'_> {
    take_while1(is_blank)(i)
}

fn token(i: &[u8]) -> Tok<'_> {
    take_till1(is_blank)(i)
}

/// The value of a line after its two-byte `x=` head, with trailing blanks removed, as
/// (offset of value, value bytes).
fn line_value(body: &[u8], line: Line) -> (usize, &[u8]) {
    let from = (line.start + 2).min(line.end);
    let mut to = line.end;
    while to > from && is_blank(body[to - 1]) {
        to -= 1;
    }
    (from, &body[from..to])
}

/// Extracts the address of a `c=` / `o=` line: the token following the first token that is
/// exactly `IP4` or `IP6` (case-sensitive, as `extract_mediaip` does).
fn address_line(body: &[u8], line: Line) -> AddressLine {
    let (base, value) = line_value(body, line);
    AddressLine {
        line: line.span(),
        address: find_address(base, value),
    }
}

fn find_address(base: usize, value: &[u8]) -> Option<Address> {
    let mut rest = value;
    let mut family: Option<(Family, usize)> = None;
    loop {
        let (r, _) = blanks0(rest).ok()?;
        let (r, tok) = token(r).ok()?;
        let tok_off = base + (value.len() - r.len() - tok.len());
        if let Some((fam, digit)) = family {
            return Some(Address {
                family: fam,
                family_digit: Span::new(digit, 1),
                addr: Span::new(tok_off, tok.len()),
            });
        }
        match tok {
            b"IP4" => family = Some((Family::Ipv4, tok_off + 2)),
            b"IP6" => family = Some((Family::Ipv6, tok_off + 2)),
            _ => {}
        }
        rest = r;
    }
}

/// The value span of an `a=rtcp:` line: after the attribute name, blanks trimmed on both sides.
fn rtcp_value(body: &[u8], line: Line) -> Span {
    let mut from = line.start + b"a=rtcp:".len();
    let mut to = line.end;
    while from < to && is_blank(body[from]) {
        from += 1;
    }
    while to > from && is_blank(body[to - 1]) {
        to -= 1;
    }
    Span::new(from, to - from)
}

struct MediaParts {
    media_type: Span,
    port: Span,
    proto: Span,
    protocol: Protocol,
    payloads: Span,
}

/// Parses `m=<media> <port> <proto> <payloads…>` (blanks around and between tokens allowed).
fn media_line(body: &[u8], line: Line) -> Result<MediaParts, SdpError> {
    let (base, value) = line_value(body, line);
    let bad = |what| SdpError::BadMediaLine {
        offset: line.start,
        what,
    };
    let at =
        |rest: &[u8], tok: &[u8]| Span::new(base + value.len() - rest.len() - tok.len(), tok.len());
    let no_port = |_| bad("no port");
    let (r, _) = blanks0(value).map_err(no_port)?;
    let (r, media_type) = token(r).map_err(no_port)?;
    let media_type = at(r, media_type);
    let (r, _) = blanks1(r).map_err(no_port)?;
    let (r, port) = token(r).map_err(no_port)?;
    let port = at(r, port);
    let no_proto = |_| bad("no protocol");
    let (r, _) = blanks1(r).map_err(no_proto)?;
    let (r, proto) = token(r).map_err(no_proto)?;
    let protocol = Protocol::classify(proto);
    let proto = at(r, proto);
    let payloads = if protocol == Protocol::Rtp {
        let (r, _) = blanks0(r).map_err(|_| bad("no payload types"))?;
        if r.is_empty() {
            return Err(bad("no payload types"));
        }
        Span::new(base + value.len() - r.len(), r.len())
    } else {
        Span::new(base + value.len() - r.len(), 0)
    };
    Ok(MediaParts {
        media_type,
        port,
        proto,
        protocol,
        payloads,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASIC: &[u8] = b"v=0\r\no=alice 1 1 IN IP4 10.1.1.5\r\ns=-\r\nc=IN IP4 10.1.1.5\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\nm=video 0 RTP/AVP 31\r\nm=application 5000 TCP/MSRP *\r\n";

    fn text<'a>(sdp: &Sdp<'a>, s: Span) -> &'a str {
        std::str::from_utf8(sdp.text(s)).unwrap()
    }

    #[test]
    fn basic_offsets() {
        let sdp = scan(BASIC).unwrap();
        assert_eq!(sdp.sessions().len(), 1);
        let s = &sdp.sessions()[0];
        let o = s.origin.address.unwrap();
        assert_eq!(text(&sdp, o.addr), "10.1.1.5");
        assert_eq!(text(&sdp, o.family_digit), "4");
        let c = s.connection.unwrap().address.unwrap();
        assert_eq!(text(&sdp, c.addr), "10.1.1.5");
        assert_eq!(sdp.media().len(), 3);
        let m = &sdp.media()[0];
        assert_eq!(text(&sdp, m.port), "49170");
        assert_eq!(text(&sdp, m.proto), "RTP/AVP");
        assert_eq!(text(&sdp, m.payloads), "0 8 101");
        assert_eq!(m.codec_list(BASIC).unwrap(), b"0,8,101");
        assert_eq!(m.index, Some(1));
        assert_eq!(m.effective_source, ConnectionSource::Session);
        assert!(m.is_proxied(BASIC));
        assert_eq!(sdp.media()[1].index, Some(2));
        assert!(!sdp.media()[1].is_proxied(BASIC));
        assert_eq!(sdp.media()[2].index, None);
        assert_eq!(sdp.media()[2].protocol, Protocol::Unsupported);
    }

    #[test]
    fn media_level_c_and_rtcp() {
        let b = b"v=0\no=- 1 1 IN IP6 ::1\ns=-\nm=audio 4000 RTP/AVP 0\nc=IN IP6 2001:db8::1\na=rtcp-mux\na=rtcp:4001 IN IP6 2001:db8::1  \na=rtcp:9\n";
        let sdp = scan(b).unwrap();
        let m = &sdp.media()[0];
        assert_eq!(m.effective_source, ConnectionSource::Media);
        assert_eq!(m.effective.family, Family::Ipv6);
        assert_eq!(text(&sdp, m.effective.addr), "2001:db8::1");
        assert_eq!(text(&sdp, m.rtcp.unwrap()), "4001 IN IP6 2001:db8::1");
    }

    #[test]
    fn codec_list_rules() {
        let b = b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4 1.2.3.4\r\nm=audio 1 RTP/AVP  0  8\t101 x\r\nm=audio 1 udp 0\r\n";
        let sdp = scan(b).unwrap();
        assert_eq!(sdp.media()[0].codec_list(b).unwrap(), b"0,8,101");
        assert_eq!(sdp.media()[1].codec_list(b), None);
        assert_eq!(sdp.media()[1].protocol, Protocol::Udp);
    }

    #[test]
    fn errors() {
        assert_eq!(scan(b""), Err(SdpError::NoSession));
        assert_eq!(scan(b" \r\n x=0"), Err(SdpError::NoSession));
        assert!(matches!(
            scan(b"v=0\r\nm=audio 1 RTP/AVP 0\r\n"),
            Err(SdpError::NoOrigin { .. })
        ));
        assert!(matches!(
            scan(b"v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\n"),
            Err(SdpError::NoMedia { .. })
        ));
        assert!(matches!(
            scan(b"v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\nm=audio 1 RTP/AVP 0\r\n"),
            Err(SdpError::NoConnection { .. })
        ));
        assert!(matches!(
            scan(b"v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\nc=IN IP4\r\nm=audio 1 RTP/AVP 0\r\n"),
            Err(SdpError::BadAddressLine { .. })
        ));
        for bad in [
            &b"m=audio"[..],
            b"m=audio 1",
            b"m=audio 1 RTP/AVP",
            b"m=audio 1 RTP/AVP  ",
        ] {
            let mut b = b"v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\nc=IN IP4 1.1.1.1\r\n".to_vec();
            b.extend_from_slice(bad);
            assert!(
                matches!(scan(&b), Err(SdpError::BadMediaLine { .. })),
                "{bad:?}"
            );
        }
        // unsupported protocol: payloads not required, but the port/proto still are
        let b = b"v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\nc=IN IP4 1.1.1.1\r\nm=message 1 TCP/MSRP\r\n";
        assert!(scan(b).is_ok());
    }

    #[test]
    fn sessions_and_index_continue() {
        let b = b"v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\nc=IN IP4 1.1.1.1\r\nm=audio 1 RTP/AVP 0\r\nm=x 2 TCP/MSRP *\r\nv=0\r\no=- 1 1 IN IP4 2.2.2.2\r\nc=IN IP4 2.2.2.2\r\nm=audio 0 RTP/AVP 0\r\nm=audio 3 udp 0\r\n";
        let sdp = scan(b).unwrap();
        assert_eq!(sdp.sessions().len(), 2);
        let idx: Vec<_> = sdp.media().iter().map(|m| m.index).collect();
        assert_eq!(idx, [Some(1), None, Some(2), Some(3)]);
        assert_eq!(sdp.sessions()[1].media, 2..4);
        assert_eq!(sdp.media()[3].session, 1);
    }

    #[test]
    fn marker_at_line_start_only() {
        assert!(has_marker(b"a=nortpproxy:yes\r\n", b"a=nortpproxy:yes"));
        assert!(has_marker(b"v=0\ra=nortpproxy:yesno", b"a=nortpproxy:yes"));
        assert!(!has_marker(
            b"v=0\r\n a=nortpproxy:yes",
            b"a=nortpproxy:yes"
        ));
        assert!(!has_marker(b"x", b""));
        assert!(!has_marker(b"", b"a"));
    }

    #[test]
    fn leading_whitespace_and_odd_breaks() {
        let b = b"\r\n  v=0\ro=- 1 1 IN IP4 1.1.1.1\n\nc=IN IP4 1.1.1.1\r\rm=audio 1 RTP/AVP 0";
        let sdp = scan(b).unwrap();
        assert_eq!(sdp.start(), 4);
        assert_eq!(text(&sdp, sdp.media()[0].port), "1");
    }
}
