//! RTPProxy notifications: the lines a relay writes to `rtpp_notify_socket` (spec §8.2, §8.3)
//! and the dialog ids they carry (§3.5.1).
//!
//! Layer: `core`. [`LineBuffer`] cuts a byte stream into bounded lines, whatever the read
//! boundaries are; [`parse_line`] turns one line into a [`Notification`]. Nothing here reads a
//! socket or logs: the listener (`io::listener`) does the I/O, the host acts on the result.
//!
//! ```
//! use rtpproxy::core::notify::*;
//!
//! let mut lines = LineBuffer::new(MAX_LINE);
//! let mut got = Vec::new();
//! // Reads can split and join lines anywhere.
//! for chunk in [&b"T2a1.c\nDd2a"[..], b"1.c 5 10 800 0\nI\n"] {
//!     lines.feed(chunk, |frame| got.push(match frame {
//!         Frame::Line(l) => parse_line(l),
//!         Frame::TooLong { .. } => unreachable!(),
//!     }));
//! }
//! assert_eq!(got[0], Ok(Notification::Timeout(DialogId { h_entry: 0x1a2, h_id: 0xc })));
//! let Ok(Notification::Dtmf(d)) = &got[1] else { panic!() };
//! assert_eq!((d.digit, d.volume, d.duration, d.stream), (b'5', 10, 800, 0));
//! assert_eq!(d.id, b"2a1.c");
//! assert_eq!(got[2], Ok(Notification::Ignored));
//! ```
//!
//! # Deliberate differences from the C module
//!
//! - A line that cannot be parsed is an error for that line only: the caller logs it and goes
//!   on with the next line of the same connection (C closes the connection, losing whatever
//!   the relay sends next, since RTPProxy only notices the closed socket on a later write).
//! - A line longer than [`MAX_LINE`] is skipped up to its newline ([`Frame::TooLong`]) instead
//!   of closing the connection; the limit is 1024 bytes instead of 255, so a DTMF line carrying
//!   a long Call-ID (`Dc<callid> …`) still fits.
//! - Dialog ids: each part must have 1 to 8 hexadecimal digits (C accepts an empty part as 0
//!   and silently wraps longer ones). A trailing `\r` is tolerated on every line.
//! - DTMF: the id and the digit must be present (C raises an event with an empty id or reads
//!   past the line), the digit must be one printable character, and a volume given without a
//!   duration is read (C reports it as 0).
#![warn(missing_docs)]

use std::fmt;

/// The longest notification line accepted, newline excluded.
pub const MAX_LINE: usize = 1024;

/// The dialog id of OpenSIPS (`$DLG_did`): hash entry and hash id, written as
/// `<rev-hex(h_entry)>.<rev-hex(h_id)>`, each number in lowercase hexadecimal with its
/// least-significant digit first (e.g. `h_entry = 0x1a2` gives `2a1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DialogId {
    /// `h_entry` of the dialog cell.
    pub h_entry: u32,
    /// `h_id` of the dialog cell.
    pub h_id: u32,
}

/// Why a dialog id does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialogIdError {
    /// No `.` between the two numbers.
    #[error("no '.' in the dialog id")]
    NoSeparator,
    /// A part is empty, longer than 8 digits, or not hexadecimal.
    #[error("bad hexadecimal number in the dialog id")]
    BadNumber,
}

/// Reads a reverse-hex number: the first digit is the least significant.
fn reverse_hex(text: &[u8]) -> Result<u32, DialogIdError> {
    if text.is_empty() || text.len() > 8 {
        return Err(DialogIdError::BadNumber);
    }
    let mut v: u32 = 0;
    for &c in text.iter().rev() {
        let d = (c as char).to_digit(16).ok_or(DialogIdError::BadNumber)?;
        v = (v << 4) | d;
    }
    Ok(v)
}

fn write_reverse_hex(f: &mut fmt::Formatter<'_>, mut v: u32) -> fmt::Result {
    if v == 0 {
        return f.write_str("0");
    }
    while v != 0 {
        let d = v & 0xf;
        let c = char::from_digit(d, 16).unwrap_or('0');
        write!(f, "{c}")?;
        v >>= 4;
    }
    Ok(())
}

impl DialogId {
    /// Parses `<rev-hex>.<rev-hex>` (upper- or lowercase digits).
    pub fn parse(text: &[u8]) -> Result<Self, DialogIdError> {
        let dot = text
            .iter()
            .position(|&c| c == b'.')
            .ok_or(DialogIdError::NoSeparator)?;
        Ok(Self {
            h_entry: reverse_hex(&text[..dot])?,
            h_id: reverse_hex(&text[dot + 1..])?,
        })
    }
}

impl fmt::Display for DialogId {
    /// The `$DLG_did` text, exactly as the dialog module writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_reverse_hex(f, self.h_entry)?;
        f.write_str(".")?;
        write_reverse_hex(f, self.h_id)
    }
}

/// One DTMF digit caught by RTPProxy's `catch_dtmf` module (the `E_RTPPROXY_DTMF` parameters,
/// spec §8.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DtmfEvent {
    /// The digit character (`0`-`9`, `*`, `#`, `A`-`D`, ...).
    pub digit: u8,
    /// Volume field (0 when absent or not a number).
    pub volume: u32,
    /// Duration field (0 when absent or not a number).
    pub duration: u32,
    /// 0 = caller's stream, 1 = callee's stream (0 when absent: older relays).
    pub stream: u32,
    /// The dialog id text (`d<did>` tags) or the Call-ID (`c<callid>` tags).
    pub id: Vec<u8>,
    /// Whether [`DtmfEvent::id`] is a Call-ID.
    pub is_callid: bool,
}

/// What one notification line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    /// `I`: a session timed out whose controller asked only for DTMF; nothing to do.
    Ignored,
    /// `T<did>`: the media of that dialog timed out; end the dialog.
    Timeout(DialogId),
    /// `D<kind><id> <digit>[ <volume>[ <duration>[ <stream>]]]`: a DTMF digit.
    Dtmf(DtmfEvent),
    /// A line starting with another character (C: logged as unhandled and ignored).
    Unknown(u8),
}

/// Why a line is not a usable notification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    /// An empty line.
    #[error("empty notification line")]
    Empty,
    /// A `T` line whose dialog id does not parse.
    #[error("bad dialog id in timeout notification: {0}")]
    DialogId(#[from] DialogIdError),
    /// A `D` line without a space after the id, or with an empty id.
    #[error("DTMF notification without an id")]
    DtmfId,
    /// A `D` line without a digit, or whose digit is not one printable character.
    #[error("DTMF notification without a valid digit")]
    DtmfDigit,
    /// A control byte (other than the final `\r`) in the line.
    #[error("control byte 0x{0:02x} in notification line")]
    ControlByte(u8),
}

/// C `str2int`: an unsigned decimal number, or `None`.
fn decimal(text: &[u8]) -> Option<u32> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// Parses one notification line (without its `\n`; a trailing `\r` is ignored).
pub fn parse_line(line: &[u8]) -> Result<Notification, NotifyError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if let Some(&c) = line.iter().find(|c| c.is_ascii_control()) {
        return Err(NotifyError::ControlByte(c));
    }
    let (&cmd, param) = line.split_first().ok_or(NotifyError::Empty)?;
    match cmd {
        b'I' => Ok(Notification::Ignored),
        b'T' => Ok(Notification::Timeout(DialogId::parse(param)?)),
        b'D' => parse_dtmf(param).map(Notification::Dtmf),
        other => Ok(Notification::Unknown(other)),
    }
}

/// `<kind><id> <digit>[ <volume>[ <duration>[ <stream>]]]` (after the `D`).
fn parse_dtmf(param: &[u8]) -> Result<DtmfEvent, NotifyError> {
    let sp = param
        .iter()
        .position(|&c| c == b' ')
        .ok_or(NotifyError::DtmfId)?;
    let (tag, rest) = (&param[..sp], &param[sp + 1..]);
    let (&kind, id) = tag.split_first().ok_or(NotifyError::DtmfId)?;
    if id.is_empty() {
        return Err(NotifyError::DtmfId);
    }
    let mut fields = rest.split(|&c| c == b' ');
    let digit = match fields.next() {
        Some(&[d]) if d.is_ascii_graphic() => d,
        _ => return Err(NotifyError::DtmfDigit),
    };
    let mut number = || fields.next().and_then(decimal).unwrap_or(0);
    let volume = number();
    let duration = number();
    let stream = number();
    Ok(DtmfEvent {
        digit,
        volume,
        duration,
        stream,
        id: id.to_vec(),
        is_callid: kind == b'c',
    })
}

/// One piece of the stream, as [`LineBuffer::feed`] delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete line, without its `\n`.
    Line(&'a [u8]),
    /// A line longer than the limit was skipped; `len` is its length without the `\n`.
    TooLong {
        /// Bytes skipped.
        len: usize,
    },
}

/// Cuts a byte stream into `\n`-terminated lines of at most `max` bytes, whatever the read
/// boundaries. Memory stays bounded by `max`: a longer line is skipped up to its newline.
#[derive(Debug, Clone)]
pub struct LineBuffer {
    buf: Vec<u8>,
    max: usize,
    /// Bytes of an over-long line skipped so far (`Some` while skipping).
    skipping: Option<usize>,
}

impl LineBuffer {
    /// A buffer for lines of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            max,
            skipping: None,
        }
    }

    /// Feeds bytes read from the stream; `on_frame` gets every line they complete, in order.
    pub fn feed(&mut self, mut data: &[u8], mut on_frame: impl FnMut(Frame<'_>)) {
        while !data.is_empty() {
            let nl = data.iter().position(|&c| c == b'\n');
            let seg = &data[..nl.unwrap_or(data.len())];
            data = nl.map_or(&[][..], |i| &data[i + 1..]);
            if let Some(skipped) = self.skipping.as_mut() {
                *skipped += seg.len();
                if nl.is_some() {
                    let len = *skipped;
                    self.skipping = None;
                    on_frame(Frame::TooLong { len });
                }
                continue;
            }
            if self.buf.len() + seg.len() > self.max {
                let len = self.buf.len() + seg.len();
                self.buf.clear();
                if nl.is_some() {
                    on_frame(Frame::TooLong { len });
                } else {
                    self.skipping = Some(len);
                }
                continue;
            }
            match nl {
                Some(_) if self.buf.is_empty() => on_frame(Frame::Line(seg)),
                Some(_) => {
                    self.buf.extend_from_slice(seg);
                    on_frame(Frame::Line(&self.buf));
                    self.buf.clear();
                }
                None => self.buf.extend_from_slice(seg),
            }
        }
    }

    /// Bytes of an unfinished line held (or skipped) so far: what is lost if the stream ends.
    pub fn pending(&self) -> usize {
        self.skipping.unwrap_or(self.buf.len())
    }

    /// The unfinished line held so far (empty while skipping an over-long one).
    pub fn partial(&self) -> &[u8] {
        &self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn did(h_entry: u32, h_id: u32) -> DialogId {
        DialogId { h_entry, h_id }
    }

    #[test]
    fn dialog_id_text_matches_the_dialog_module() {
        assert_eq!(did(0x1a2, 0xc).to_string(), "2a1.c");
        assert_eq!(did(0, 0).to_string(), "0.0");
        assert_eq!(did(0x10, 1).to_string(), "01.1");
        assert_eq!(did(u32::MAX, 0xabcdef12).to_string(), "ffffffff.21fedcba");
        assert_eq!(DialogId::parse(b"2A1.C"), Ok(did(0x1a2, 0xc)));
    }

    #[test]
    fn bad_dialog_ids() {
        for bad in [
            &b""[..],
            b"12",
            b".1",
            b"1.",
            b"1.2.3",
            b"g.1",
            b"123456789.1",
            b"1 .2",
        ] {
            assert!(
                DialogId::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// `tests/fixtures/notify/golden.txt`: `<line>\t<expected>` per row (`\t` separated).
    #[test]
    fn golden_lines() {
        let text = include_str!("../../tests/fixtures/notify/golden.txt");
        let mut n = 0;
        for row in text.lines() {
            if row.is_empty() || row.starts_with('#') {
                continue;
            }
            let (input, want) = row.split_once('\t').expect("tab-separated row");
            let input = input.replace("\\r", "\r");
            let got = match parse_line(input.as_bytes()) {
                Ok(Notification::Ignored) => "ignored".to_string(),
                Ok(Notification::Timeout(d)) => format!("timeout {:x} {:x}", d.h_entry, d.h_id),
                Ok(Notification::Dtmf(d)) => format!(
                    "dtmf digit={} volume={} duration={} stream={} id={} is_callid={}",
                    d.digit as char,
                    d.volume,
                    d.duration,
                    d.stream,
                    String::from_utf8_lossy(&d.id),
                    u8::from(d.is_callid)
                ),
                Ok(Notification::Unknown(c)) => format!("unknown {}", c as char),
                Err(e) => format!("error {e}"),
            };
            assert_eq!(got, want, "line {input:?}");
            n += 1;
        }
        assert!(n >= 20, "only {n} golden rows");
    }

    fn frames(lb: &mut LineBuffer, data: &[u8]) -> Vec<Result<Vec<u8>, usize>> {
        let mut out = Vec::new();
        lb.feed(data, |f| {
            out.push(match f {
                Frame::Line(l) => Ok(l.to_vec()),
                Frame::TooLong { len } => Err(len),
            })
        });
        out
    }

    #[test]
    fn partial_and_coalesced_reads() {
        let mut lb = LineBuffer::new(16);
        assert!(frames(&mut lb, b"T1.").is_empty());
        assert_eq!(lb.pending(), 3);
        assert_eq!(
            frames(&mut lb, b"2\nI\nDc"),
            vec![Ok(b"T1.2".to_vec()), Ok(b"I".to_vec())]
        );
        assert_eq!(lb.partial(), b"Dc");
        assert_eq!(frames(&mut lb, b"x 1\n"), vec![Ok(b"Dcx 1".to_vec())]);
        assert_eq!(lb.pending(), 0);
    }

    #[test]
    fn long_lines_are_skipped_and_the_stream_goes_on() {
        let mut lb = LineBuffer::new(4);
        assert_eq!(
            frames(&mut lb, b"12345\nI\n"),
            vec![Err(5), Ok(b"I".to_vec())]
        );
        assert!(frames(&mut lb, b"123").is_empty());
        assert!(frames(&mut lb, b"45678").is_empty());
        assert_eq!(lb.pending(), 8);
        assert_eq!(
            frames(&mut lb, b"9\nT1.1\n"),
            vec![Err(9), Ok(b"T1.1".to_vec())]
        );
        // Exactly the limit is fine.
        assert_eq!(frames(&mut lb, b"abcd\n"), vec![Ok(b"abcd".to_vec())]);
    }

    proptest! {
        #[test]
        fn dialog_id_round_trip(h_entry in any::<u32>(), h_id in any::<u32>()) {
            let d = did(h_entry, h_id);
            prop_assert_eq!(DialogId::parse(d.to_string().as_bytes()), Ok(d));
            prop_assert!(d.to_string().len() <= 17);
            let line = format!("T{d}");
            prop_assert_eq!(parse_line(line.as_bytes()), Ok(Notification::Timeout(d)));
        }

        #[test]
        fn parse_line_never_panics(line in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_line(&line);
        }

        #[test]
        fn dtmf_fields_round_trip(
            digit in proptest::sample::select(b"0123456789*#ABCD".to_vec()),
            volume in any::<u32>(), duration in any::<u32>(), stream in 0u32..2,
            id in "[!-~]{1,40}", callid in any::<bool>(),
        ) {
            let kind = if callid { 'c' } else { 'd' };
            let line = format!("D{kind}{id} {} {volume} {duration} {stream}", digit as char);
            let want = DtmfEvent {
                digit, volume, duration, stream, id: id.into_bytes(), is_callid: callid,
            };
            prop_assert_eq!(parse_line(line.as_bytes()), Ok(Notification::Dtmf(want)));
        }

        /// However the stream is cut into reads, the same frames come out, and lines within
        /// the limit come out byte for byte.
        #[test]
        fn framing_is_independent_of_read_boundaries(
            lines in proptest::collection::vec(proptest::collection::vec(
                any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..40), 0..20),
            cuts in proptest::collection::vec(0usize..2000, 0..30),
        ) {
            let max = 24;
            let mut stream = Vec::new();
            for l in &lines {
                stream.extend_from_slice(l);
                stream.push(b'\n');
            }
            let whole = frames(&mut LineBuffer::new(max), &stream);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.sort_unstable();
            let mut lb = LineBuffer::new(max);
            let mut pieces = Vec::new();
            let mut at = 0;
            for c in cuts.into_iter().chain([stream.len()]) {
                pieces.extend(frames(&mut lb, &stream[at..c]));
                at = c;
            }
            prop_assert_eq!(&pieces, &whole);
            prop_assert_eq!(lb.pending(), 0);
            prop_assert_eq!(whole.len(), lines.len());
            for (l, f) in lines.iter().zip(&whole) {
                if l.len() <= max {
                    prop_assert_eq!(f, &Ok(l.clone()));
                } else {
                    prop_assert_eq!(f, &Err(l.len()));
                }
            }
        }
    }
}
