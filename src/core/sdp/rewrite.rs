//! The rewriter: RTPProxy's answers → a sorted list of minimal [`SdpEdit`]s (spec §4.7, §4.8).
//!
//! Message-mode semantics are used for every caller, including body-variable mode: the
//! body-mode defects B1–B5 of the C module are not reproduced (see the module docs of
//! [`crate::core::offer`]).

use super::{Address, Family, Sdp, SdpError, Span};

/// One change to the body: replace `len` bytes at `offset` with `replacement`.
///
/// A list of edits produced here is sorted by `offset`, and each edit ends at or before the
/// offset of the next one. A zero-length edit is an insertion at its offset; when an insertion
/// shares its offset with another edit, the list order is the output order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpEdit {
    /// First byte replaced (or insertion point).
    pub offset: usize,
    /// Number of bytes replaced (0 = pure insertion).
    pub len: usize,
    /// The new bytes.
    pub replacement: Vec<u8>,
}

impl SdpEdit {
    /// The replaced range.
    pub fn span(&self) -> Span {
        Span::new(self.offset, self.len)
    }
}

/// Which optional lines are rewritten besides the per-stream ones (flags `c` and `o`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RewriteOptions {
    /// Flag `c`: also rewrite the session-level `c=` (once per session) when the stream has its
    /// own media-level `c=`.
    pub session_connection: bool,
    /// Flag `o`: also rewrite the address of the `o=` line (once per session).
    pub origin: bool,
}

/// The relay's answer for one proxied media section, as the rewriter needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaAnswer {
    /// Index into [`Sdp::media`].
    pub media: usize,
    /// The relay port (written to `m=`; `port + 1` goes to `a=rtcp:`).
    pub port: u16,
    /// The address to write (already chosen by the precedence rules, or the null address for
    /// a stream on hold).
    pub address: Vec<u8>,
    /// The family written as `IP4`/`IP6` next to `address`.
    pub family: Family,
}

/// Whether `addr` is a null (on-hold) address of `family` (spec §4.7): IPv4 exactly `0.0.0.0`;
/// IPv6 made only of `0` and `:`.
pub fn is_null_address(addr: &[u8], family: Family) -> bool {
    match family {
        Family::Ipv4 => addr == b"0.0.0.0",
        Family::Ipv6 => !addr.is_empty() && addr.iter().all(|&b| b == b'0' || b == b':'),
    }
}

/// Accumulates the edits for the answered streams of one scanned body.
///
/// Call [`Rewriter::add_media`] once per proxied stream, in body order (the order matters:
/// the session-level `c=` and the `o=` line take the address of the first stream that reaches
/// them, as in the C module), optionally [`Rewriter::insert_marker`], then
/// [`Rewriter::finish`].
#[derive(Debug)]
pub struct Rewriter<'s, 'a> {
    sdp: &'s Sdp<'a>,
    opts: RewriteOptions,
    session_conn_done: Vec<bool>,
    origin_done: Vec<bool>,
    answered: Vec<bool>,
    replace_null: bool,
    edits: Vec<SdpEdit>,
}

impl<'s, 'a> Rewriter<'s, 'a> {
    /// A rewriter for `sdp` with the given options.
    pub fn new(sdp: &'s Sdp<'a>, opts: RewriteOptions) -> Self {
        Self {
            sdp,
            opts,
            session_conn_done: vec![false; sdp.sessions().len()],
            origin_done: vec![false; sdp.sessions().len()],
            answered: vec![false; sdp.media().len()],
            replace_null: false,
            // port, rtcp, c= (twice with flag c), o= per stream, and the marker
            edits: Vec::with_capacity(sdp.media().len() * 5 + 1),
        }
    }

    /// From now on, a null old address (`0.0.0.0`, `::`) is replaced like any other instead
    /// of being kept as "on hold". For WebRTC sections, whose `c=` may be null while ICE
    /// carries the real addresses (see [`super::webrtc`]).
    pub fn replace_null_addresses(&mut self) {
        self.replace_null = true;
    }

    /// Adds edits made elsewhere (e.g. [`super::webrtc`]); they must not overlap the
    /// others, which [`Rewriter::finish`] checks. Call before [`Rewriter::insert_marker`] so
    /// that an insertion at the marker's offset comes first.
    pub fn add_edits(&mut self, edits: impl IntoIterator<Item = SdpEdit>) {
        self.edits.extend(edits);
    }

    /// Adds the edits for one answered stream (spec §4.8, message mode), in this order:
    /// 1. the `m=` port;
    /// 2. the value of the first `a=rtcp:` of the section → `<port+1> IN IP4|IP6 <address>`;
    /// 3. the media-level `c=`, or else the session-level `c=` (once per session);
    /// 4. with `session_connection`: the session-level `c=` (once per session), unless the
    ///    replacement is a null (hold) address — then a later stream of the session does it
    ///    (C writes the null address there, putting every stream that uses it on hold);
    /// 5. with `origin`: the `o=` address (once per session; on hold it becomes the null
    ///    address, as in C).
    ///
    /// An address is left alone when the old one is null in the same family, or when old and
    /// new are equal; when only the family differs, only the `4`/`6` digit changes. Edits that
    /// would not change a byte are not emitted, so rewriting an already rewritten body with the
    /// same answers yields no further edit.
    ///
    /// Errors: the media section is not proxied or was answered already; the replacement
    /// address is unusable; a needed `c=`/`o=` line has no address. On error nothing is added.
    pub fn add_media(&mut self, answer: &MediaAnswer) -> Result<(), SdpError> {
        let sdp = self.sdp;
        let body = sdp.body();
        let media = sdp
            .media()
            .get(answer.media)
            .filter(|m| m.is_proxied(body))
            .ok_or(SdpError::NotProxied {
                media: answer.media,
            })?;
        if self.answered[answer.media] {
            return Err(SdpError::DuplicateAnswer {
                media: answer.media,
            });
        }
        check_address(&answer.address)?;
        let s = media.session;
        let session = &sdp.sessions()[s];

        // Resolve every address this stream may touch before emitting anything.
        let main_conn: Option<Address> = match media.connection {
            Some(c) => Some(c.address.ok_or(SdpError::BadAddressLine {
                offset: c.line.offset,
            })?),
            None if !self.session_conn_done[s] => Some(media.effective),
            None => None,
        };
        let touches_session_conn = media.connection.is_none() && !self.session_conn_done[s];
        // A stream on hold (null replacement) does not lend its null address to the
        // session-level c= under flag `c`: other streams may rely on that line.
        let holding = is_null_address(&answer.address, answer.family);
        // Nor does a stream take a held session-level c= off hold under flag `c`: the
        // streams without their own c= rely on it being null (and rewriting twice must give
        // the same SDP).
        let session_conn_held = session
            .connection
            .and_then(|c| c.address)
            .is_some_and(|a| is_null_address(a.addr.slice(body), a.family));
        let extra_session_conn: Option<Address> = match session.connection {
            Some(c)
                if self.opts.session_connection
                    && !holding
                    && !session_conn_held
                    && !touches_session_conn
                    && !self.session_conn_done[s] =>
            {
                Some(c.address.ok_or(SdpError::BadAddressLine {
                    offset: c.line.offset,
                })?)
            }
            _ => None,
        };
        let origin: Option<Address> = if self.opts.origin && !self.origin_done[s] {
            Some(session.origin.address.ok_or(SdpError::BadAddressLine {
                offset: session.origin.line.offset,
            })?)
        } else {
            None
        };

        // nothing below fails: the edits go straight into the list
        let new = &mut self.edits;
        let mut port = Vec::with_capacity(5);
        crate::core::text::push_decimal(&mut port, u32::from(answer.port));
        push_if_changed(new, body, media.port, port);
        if let Some(rtcp) = media.rtcp {
            let mut v = Vec::with_capacity(14 + answer.address.len());
            crate::core::text::push_decimal(&mut v, u32::from(answer.port) + 1);
            v.extend_from_slice(b" IN IP");
            v.push(answer.family.digit());
            v.push(b' ');
            v.extend_from_slice(&answer.address);
            push_if_changed(new, body, rtcp, v);
        }
        for addr in [main_conn, extra_session_conn, origin]
            .into_iter()
            .flatten()
        {
            alter_address(
                new,
                body,
                addr,
                &answer.address,
                answer.family,
                self.replace_null,
            );
        }

        if touches_session_conn || extra_session_conn.is_some() {
            self.session_conn_done[s] = true;
        }
        if origin.is_some() {
            self.origin_done[s] = true;
        }
        self.answered[answer.media] = true;
        Ok(())
    }

    /// Adds the marker line (see [`marker_edit`]). Call at most once, after the streams.
    pub fn insert_marker(&mut self, marker: &[u8]) {
        if !marker.is_empty() {
            self.edits.push(marker_edit(self.sdp.body(), marker));
        }
    }

    /// The edits, sorted by offset and checked not to overlap.
    pub fn finish(self) -> Result<Vec<SdpEdit>, SdpError> {
        let mut edits = self.edits;
        edits.sort_by_key(|e| e.offset);
        check_edits(self.sdp.body().len(), &edits)?;
        Ok(edits)
    }
}

fn check_address(addr: &[u8]) -> Result<(), SdpError> {
    if addr.is_empty()
        || addr
            .iter()
            .any(|&b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        Err(SdpError::BadReplacementAddress)
    } else {
        Ok(())
    }
}

/// Pushes the edit only when it changes something; a borrowed `new` is copied only then.
fn push_if_changed<T: AsRef<[u8]> + Into<Vec<u8>>>(
    out: &mut Vec<SdpEdit>,
    body: &[u8],
    span: Span,
    new: T,
) {
    if span.slice(body) != new.as_ref() {
        out.push(SdpEdit {
            offset: span.offset,
            len: span.len,
            replacement: new.into(),
        });
    }
}

/// The `alter_mediaip` rules of the C module, with the old family taken from the line itself
/// (defect D8 fixed) and a pure family flip when only the family differs.
fn alter_address(
    out: &mut Vec<SdpEdit>,
    body: &[u8],
    old: Address,
    new: &[u8],
    family: Family,
    replace_null: bool,
) {
    let old_text = old.addr.slice(body);
    if !replace_null && old.family == family && is_null_address(old_text, old.family) {
        return;
    }
    if old.family != family {
        push_if_changed(out, body, old.family_digit, &[family.digit()][..]);
    }
    push_if_changed(out, body, old.addr, new);
}

/// The edit that inserts the marker line `<marker><eol>` (spec §4.8).
///
/// When the body contains a CRLF, the line `<marker>\r\n` goes right after the **last** CRLF,
/// as in the C module (at the end of a CRLF-terminated body; before an unterminated last line
/// otherwise). A body without any CRLF gets the line appended at its end, terminated like the
/// body's lines (`\n` for an LF-only body); when such a body does not end with a line break,
/// one is put before the marker so it never sticks to the last line. (C appends `marker\r\n`
/// in both cases, gluing it to an unterminated last line.)
///
/// A CRLF that only ends blank lines before the session's first line does not count: the
/// marker would land before `v=`, and the result would no longer scan as SDP (found by the
/// `sdp_rewrite` fuzz target; C inserts it there).
pub fn marker_edit(body: &[u8], marker: &[u8]) -> SdpEdit {
    let mut replacement = Vec::with_capacity(marker.len() + 3);
    let offset;
    let content = body
        .iter()
        .position(|&b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .unwrap_or(body.len());
    if let Some(pos) = body
        .windows(2)
        .rposition(|w| w == b"\r\n")
        .filter(|&pos| pos + 2 > content)
    {
        offset = pos + 2;
        replacement.extend_from_slice(marker);
        replacement.extend_from_slice(b"\r\n");
    } else {
        offset = body.len();
        let eol: &[u8] = if body.contains(&b'\n') {
            b"\n"
        } else if body.contains(&b'\r') {
            b"\r"
        } else {
            b"\r\n"
        };
        if !matches!(body.last(), Some(b'\r' | b'\n')) {
            replacement.extend_from_slice(eol);
        }
        replacement.extend_from_slice(marker);
        replacement.extend_from_slice(eol);
    }
    SdpEdit {
        offset,
        len: 0,
        replacement,
    }
}

fn check_edits(body_len: usize, edits: &[SdpEdit]) -> Result<(), SdpError> {
    let mut pos = 0usize;
    for e in edits {
        let end = e.offset.checked_add(e.len);
        match end {
            Some(end) if e.offset >= pos && end <= body_len => pos = end,
            _ => return Err(SdpError::BadEdits { offset: e.offset }),
        }
    }
    Ok(())
}

/// Applies sorted, non-overlapping edits to `body` and returns the new body.
///
/// This is what body-variable mode does; message mode gives the same edits to the host as
/// lumps. Errors when the list is unsorted, overlapping or out of range.
pub fn apply_edits(body: &[u8], edits: &[SdpEdit]) -> Result<Vec<u8>, SdpError> {
    check_edits(body.len(), edits)?;
    let grow: usize = edits.iter().map(|e| e.replacement.len()).sum();
    let mut out = Vec::with_capacity(body.len() + grow);
    let mut pos = 0;
    for e in edits {
        out.extend_from_slice(&body[pos..e.offset]);
        out.extend_from_slice(&e.replacement);
        pos = e.offset + e.len;
    }
    out.extend_from_slice(&body[pos..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::scan;
    use super::*;

    fn answer(media: usize, port: u16, addr: &str, family: Family) -> MediaAnswer {
        MediaAnswer {
            media,
            port,
            address: addr.as_bytes().to_vec(),
            family,
        }
    }

    fn rewrite(
        body: &[u8],
        opts: RewriteOptions,
        answers: &[MediaAnswer],
        marker: bool,
    ) -> Vec<u8> {
        let sdp = scan(body).unwrap();
        let mut r = Rewriter::new(&sdp, opts);
        for a in answers {
            r.add_media(a).unwrap();
        }
        if marker {
            r.insert_marker(b"a=nortpproxy:yes");
        }
        apply_edits(body, &r.finish().unwrap()).unwrap()
    }

    const SIPP: &[u8] = b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.1.1\r\ns=-\r\nc=IN IP4 127.0.1.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

    #[test]
    fn session_c_port_and_marker() {
        let out = rewrite(
            SIPP,
            RewriteOptions::default(),
            &[answer(0, 35000, "10.0.0.2", Family::Ipv4)],
            true,
        );
        assert_eq!(
            out,
            b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.1.1\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 35000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=nortpproxy:yes\r\n"
        );
    }

    #[test]
    fn origin_and_family_flip() {
        let opts = RewriteOptions {
            session_connection: false,
            origin: true,
        };
        let out = rewrite(
            SIPP,
            opts,
            &[answer(0, 35000, "2001:db8::2", Family::Ipv6)],
            false,
        );
        assert_eq!(
            out,
            b"v=0\r\no=user1 53655765 2353687637 IN IP6 2001:db8::2\r\ns=-\r\nc=IN IP6 2001:db8::2\r\nt=0 0\r\nm=audio 35000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        );
    }

    #[test]
    fn hold_is_kept() {
        let body = b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4 0.0.0.0\r\nm=audio 4000 RTP/AVP 0\r\na=rtcp:4001\r\n";
        let out = rewrite(
            body,
            RewriteOptions::default(),
            &[answer(0, 5000, "0.0.0.0", Family::Ipv4)],
            false,
        );
        assert_eq!(
            out,
            b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4 0.0.0.0\r\nm=audio 5000 RTP/AVP 0\r\na=rtcp:5001 IN IP4 0.0.0.0\r\n"
        );
    }

    #[test]
    fn hold_stream_does_not_null_the_session_c_under_flag_c() {
        // stream 1 is on hold with its own c=; stream 2 relies on the session c=
        let body = b"v=0\r\no=- 1 1 IN IP4 1.0.0.1\r\nc=IN IP4 1.0.0.1\r\nm=audio 1 RTP/AVP 0\r\nc=IN IP4 0.0.0.0\r\nm=audio 2 RTP/AVP 0\r\n";
        let opts = RewriteOptions {
            session_connection: true,
            origin: false,
        };
        let answers = [
            answer(0, 3000, "0.0.0.0", Family::Ipv4),
            answer(1, 3002, "10.0.0.2", Family::Ipv4),
        ];
        let once = rewrite(body, opts, &answers, false);
        assert_eq!(
            once,
            b"v=0\r\no=- 1 1 IN IP4 1.0.0.1\r\nc=IN IP4 10.0.0.2\r\nm=audio 3000 RTP/AVP 0\r\nc=IN IP4 0.0.0.0\r\nm=audio 3002 RTP/AVP 0\r\n"
        );
        assert_eq!(rewrite(&once, opts, &answers, false), once);
    }

    #[test]
    fn marker_positions() {
        let m = b"M";
        let e = marker_edit(b"v=0\r\nx=1\r\n", m);
        assert_eq!((e.offset, e.replacement.as_slice()), (10, &b"M\r\n"[..]));
        let e = marker_edit(b"v=0\r\nx=1", m);
        assert_eq!((e.offset, e.replacement.as_slice()), (5, &b"M\r\n"[..]));
        let e = marker_edit(b"v=0\nx=1\n", m);
        assert_eq!((e.offset, e.replacement.as_slice()), (8, &b"M\n"[..]));
        let e = marker_edit(b"v=0\nx=1", m);
        assert_eq!((e.offset, e.replacement.as_slice()), (7, &b"\nM\n"[..]));
        let e = marker_edit(b"v=0", m);
        assert_eq!((e.offset, e.replacement.as_slice()), (3, &b"\r\nM\r\n"[..]));
        // fuzz regression (sdp_rewrite): a CRLF of a leading blank line is not a place for
        // the marker (it would precede v=); the LF body gets it at its end
        let e = marker_edit(b"\r\nv=0\nx=1\n", m);
        assert_eq!((e.offset, e.replacement.as_slice()), (10, &b"M\n"[..]));
        let e = marker_edit(b"\r\n\r\nv=0\r\nx=1\r\n", m);
        assert_eq!((e.offset, e.replacement.as_slice()), (14, &b"M\r\n"[..]));
    }

    #[test]
    fn errors_add_nothing() {
        let sdp = scan(SIPP).unwrap();
        let mut r = Rewriter::new(&sdp, RewriteOptions::default());
        assert_eq!(
            r.add_media(&answer(1, 1, "1.1.1.1", Family::Ipv4)),
            Err(SdpError::NotProxied { media: 1 })
        );
        assert_eq!(
            r.add_media(&answer(0, 1, "1.1 .1", Family::Ipv4)),
            Err(SdpError::BadReplacementAddress)
        );
        assert_eq!(
            r.add_media(&answer(0, 1, "", Family::Ipv4)),
            Err(SdpError::BadReplacementAddress)
        );
        r.add_media(&answer(0, 1, "1.1.1.1", Family::Ipv4)).unwrap();
        assert_eq!(
            r.add_media(&answer(0, 1, "1.1.1.1", Family::Ipv4)),
            Err(SdpError::DuplicateAnswer { media: 0 })
        );
        assert_eq!(r.finish().unwrap().len(), 2);
    }

    #[test]
    fn apply_checks_order() {
        let e = |o, l| SdpEdit {
            offset: o,
            len: l,
            replacement: vec![],
        };
        assert!(apply_edits(b"abcdef", &[e(1, 2), e(3, 1)]).is_ok());
        assert!(apply_edits(b"abcdef", &[e(1, 2), e(2, 1)]).is_err());
        assert!(apply_edits(b"abcdef", &[e(5, 2)]).is_err());
        assert!(apply_edits(b"abcdef", &[e(usize::MAX, 2)]).is_err());
        assert_eq!(apply_edits(b"abcdef", &[e(6, 0)]).unwrap(), b"abcdef");
    }

    #[test]
    fn null_addresses() {
        assert!(is_null_address(b"0.0.0.0", Family::Ipv4));
        assert!(!is_null_address(b"0.0.0.00", Family::Ipv4));
        assert!(is_null_address(b"::", Family::Ipv6));
        assert!(is_null_address(b"0:0::0", Family::Ipv6));
        assert!(!is_null_address(b"::1", Family::Ipv6));
        assert!(!is_null_address(b"", Family::Ipv6));
    }
}
