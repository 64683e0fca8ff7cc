//! Command bodies (spec §3.4) and the words that go into them.
//!
//! A [`Command`] is the command *body* only: no cookie, no newline. Framing per transport is
//! added by [`super::framing`] or by an exchange. Every word taken from a SIP message (Call-ID,
//! tags) is checked before it is written: RTPProxy splits commands on whitespace and uses `;`
//! inside tags for the media index, so a word carrying either would change the meaning of the
//! command. The C module writes such words raw (defect D28); we refuse them with a typed error.

use std::fmt;

use super::ProtoError;

/// Longest word (Call-ID, tag, argument) accepted into a command, in bytes.
pub const MAX_WORD_LEN: usize = 1024;

/// Longest command body accepted, in bytes. RTPProxy reads commands of up to 8 KiB including
/// the cookie; this leaves room for it.
pub const MAX_COMMAND_LEN: usize = 8192 - 64;

/// Most ` && ` sub-commands RTPProxy takes in one command (its `MAX_SUBC_NUM` is 16, one
/// slot of which is the main command).
pub const MAX_SUBCOMMANDS: usize = 15;

/// Most words RTPProxy takes in one sub-command, its head (`M5:1`) included
/// (`RTPC_MAX_ARGC`).
pub const MAX_SUBCOMMAND_WORDS: usize = 24;

/// Sub-command head of RTPProxy's `catch_dtmf` module (module 3, instance 1).
pub const CATCH_DTMF: &[u8] = b"M3:1";
/// Sub-command head of RTPProxy's `dtls_gw` module (module 4, instance 1): DTLS-SRTP.
pub const DTLS_GW: &[u8] = b"M4:1";
/// Sub-command head of RTPProxy's `ice_lite` module (module 5, instance 1): ICE-lite and
/// RTCP mux.
pub const ICE_LITE: &[u8] = b"M5:1";

/// What a word is, for checking and for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WordKind {
    /// The command letter and its modifiers (`U`, `Lc0,8`, `VF`): no whitespace or controls.
    Head,
    /// A Call-ID: no whitespace, controls or `;`.
    CallId,
    /// A From/To tag: no whitespace, controls or `;`.
    Tag,
    /// Any other argument (addresses, ports, `tag;1` pairs already joined, prompts): no
    /// whitespace or controls; `;` is allowed.
    Arg,
}

impl WordKind {
    /// Human name used in error messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Head => "command head",
            Self::CallId => "call-id",
            Self::Tag => "tag",
            Self::Arg => "argument",
        }
    }

    fn forbids(self, b: u8) -> bool {
        let base = b.is_ascii_whitespace() || b.is_ascii_control();
        match self {
            Self::CallId | Self::Tag => base || b == b';',
            Self::Head | Self::Arg => base,
        }
    }
}

/// Checks one word for use in a command.
///
/// Refuses an empty word (it would shift every later argument), a word longer than
/// [`MAX_WORD_LEN`], and any byte that RTPProxy would read as a separator: ASCII whitespace,
/// other ASCII control characters (including NUL and DEL) and, for Call-IDs and tags, `;`.
/// Bytes ≥ 0x80 are allowed.
pub fn check_word(kind: WordKind, word: &[u8]) -> Result<(), ProtoError> {
    if word.is_empty() {
        return Err(ProtoError::EmptyWord { what: kind.name() });
    }
    if word.len() > MAX_WORD_LEN {
        return Err(ProtoError::WordTooLong {
            what: kind.name(),
            len: word.len(),
        });
    }
    if let Some(offset) = word.iter().position(|&b| kind.forbids(b)) {
        return Err(ProtoError::ForbiddenByte {
            what: kind.name(),
            byte: word[offset],
            offset,
        });
    }
    Ok(())
}

/// Checks a Call-ID (see [`check_word`]).
pub fn validate_call_id(call_id: &[u8]) -> Result<(), ProtoError> {
    check_word(WordKind::CallId, call_id)
}

/// Checks a From/To tag (see [`check_word`]).
pub fn validate_tag(tag: &[u8]) -> Result<(), ProtoError> {
    check_word(WordKind::Tag, tag)
}

/// One command body, ready to be framed for a transport.
#[derive(Clone, PartialEq, Eq)]
pub struct Command {
    bytes: Vec<u8>,
}

impl Command {
    /// `V`: ask for the control protocol version (reply `20040107`).
    pub fn version() -> Self {
        Self {
            bytes: b"V".to_vec(),
        }
    }

    /// `VF <date>`: ask whether the feature dated `date` (e.g. `20081224`) is supported
    /// (reply `1` or `0`).
    pub fn version_feature(date: u32) -> Self {
        Self {
            bytes: format!("VF {date}").into_bytes(),
        }
    }

    /// `D <callid> <from-tag>[ <to-tag>]`: delete a session.
    ///
    /// An empty `to_tag` is the same as `None` (the C module omits the part when the To-tag is
    /// empty). No media index is appended and tags are never swapped.
    pub fn delete(
        call_id: &[u8],
        from_tag: &[u8],
        to_tag: Option<&[u8]>,
    ) -> Result<Self, ProtoError> {
        let mut b = Self::builder(b"D")?;
        b.call_id(call_id)?.tag(from_tag)?;
        if let Some(t) = to_tag.filter(|t| !t.is_empty()) {
            b.tag(t)?;
        }
        Ok(b.finish())
    }

    /// Starts a command whose first word is `head` (the command letter plus modifiers).
    pub fn builder(head: &[u8]) -> Result<CommandBuilder, ProtoError> {
        check_word(WordKind::Head, head)?;
        Ok(CommandBuilder {
            bytes: head.to_vec(),
            subcommands: 0,
            words: 1,
        })
    }

    /// The command body bytes (no cookie, no newline).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The command letter (first byte of the body).
    pub fn letter(&self) -> u8 {
        self.bytes[0]
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Command({})", self.bytes.escape_ascii())
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.bytes.escape_ascii())
    }
}

/// Builds a [`Command`] word by word; every word is checked and separated by one space.
///
/// ```
/// use rtpproxy::core::proto::Command;
/// let mut b = Command::builder(b"Uc0,8,101")?;
/// b.call_id(b"a84b4c76e66710@pc33")?
///     .arg(b"192.0.2.10")?
///     .arg(b"49170")?
///     .indexed_tag(b"1928301774", 1)?;
/// assert_eq!(
///     b.finish().as_bytes(),
///     b"Uc0,8,101 a84b4c76e66710@pc33 192.0.2.10 49170 1928301774;1"
/// );
/// # Ok::<(), rtpproxy::core::proto::ProtoError>(())
/// ```
#[derive(Debug, Clone)]
pub struct CommandBuilder {
    bytes: Vec<u8>,
    subcommands: usize,
    words: usize,
}

impl CommandBuilder {
    fn push_word(&mut self, kind: WordKind, word: &[u8]) -> Result<&mut Self, ProtoError> {
        check_word(kind, word)?;
        self.count_word()?;
        self.push_raw(&[b" ", word])
    }

    /// Counts one more word of the current sub-command (the main command is not limited).
    fn count_word(&mut self) -> Result<(), ProtoError> {
        if self.subcommands > 0 && self.words >= MAX_SUBCOMMAND_WORDS {
            return Err(ProtoError::SubcommandTooLong);
        }
        self.words += 1;
        Ok(())
    }

    fn push_raw(&mut self, parts: &[&[u8]]) -> Result<&mut Self, ProtoError> {
        let add: usize = parts.iter().map(|p| p.len()).sum();
        if self.bytes.len() + add > MAX_COMMAND_LEN {
            return Err(ProtoError::CommandTooLong {
                len: self.bytes.len() + add,
            });
        }
        for p in parts {
            self.bytes.extend_from_slice(p);
        }
        Ok(self)
    }

    /// Appends ` <call_id>` (checked as a Call-ID).
    pub fn call_id(&mut self, call_id: &[u8]) -> Result<&mut Self, ProtoError> {
        self.push_word(WordKind::CallId, call_id)
    }

    /// Appends ` <tag>` (checked as a tag; no media index, as in `D` and `R`).
    pub fn tag(&mut self, tag: &[u8]) -> Result<&mut Self, ProtoError> {
        self.push_word(WordKind::Tag, tag)
    }

    /// Appends ` <tag>;<index>` (checked as a tag), the form used by `U`/`L`/`P`/`S`/`C`/`Q`/`N`.
    pub fn indexed_tag(&mut self, tag: &[u8], index: u32) -> Result<&mut Self, ProtoError> {
        check_word(WordKind::Tag, tag)?;
        self.count_word()?;
        let idx = index.to_string();
        self.push_raw(&[b" ", tag, b";", idx.as_bytes()])
    }

    /// Appends ` <word>` (checked as a generic argument: `;` allowed, no whitespace).
    pub fn arg(&mut self, word: &[u8]) -> Result<&mut Self, ProtoError> {
        self.push_word(WordKind::Arg, word)
    }

    /// Appends ` && <head>`: starts a sub-command (RTPProxy 20191015), e.g. `M3:1`. At most
    /// [`MAX_SUBCOMMANDS`] per command, each of at most [`MAX_SUBCOMMAND_WORDS`] words.
    pub fn subcommand(&mut self, head: &[u8]) -> Result<&mut Self, ProtoError> {
        check_word(WordKind::Head, head)?;
        if self.subcommands >= MAX_SUBCOMMANDS {
            return Err(ProtoError::TooManySubcommands);
        }
        self.push_raw(&[b" && ", head])?;
        self.subcommands += 1;
        self.words = 1;
        Ok(self)
    }

    /// How many sub-commands were started so far.
    pub fn subcommand_count(&self) -> usize {
        self.subcommands
    }

    /// The command built so far.
    pub fn finish(&self) -> Command {
        Command {
            bytes: self.bytes.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_commands() {
        assert_eq!(Command::version().as_bytes(), b"V");
        assert_eq!(
            Command::version_feature(20081224).as_bytes(),
            b"VF 20081224"
        );
        assert_eq!(Command::version().letter(), b'V');
    }

    #[test]
    fn delete_layouts() {
        let d = Command::delete(b"a84b4c76e66710@pc33", b"1928301774", Some(b"a6c85cf")).unwrap();
        assert_eq!(d.as_bytes(), b"D a84b4c76e66710@pc33 1928301774 a6c85cf");
        let d = Command::delete(b"c", b"f", None).unwrap();
        assert_eq!(d.as_bytes(), b"D c f");
        let d = Command::delete(b"c", b"f", Some(b"")).unwrap();
        assert_eq!(d.as_bytes(), b"D c f");
    }

    #[test]
    fn appendix_a_offer_bytes() {
        let mut b = Command::builder(b"Uc0,8,101").unwrap();
        b.call_id(b"a84b4c76e66710@pc33")
            .unwrap()
            .arg(b"192.0.2.10")
            .unwrap()
            .arg(b"49170")
            .unwrap()
            .indexed_tag(b"1928301774", 1)
            .unwrap()
            .arg(b"tcp:10.0.0.1:9999")
            .unwrap()
            .arg(b"I")
            .unwrap()
            .subcommand(b"M3:1")
            .unwrap()
            .arg(b"Dd2a1.c")
            .unwrap()
            .arg(b"101")
            .unwrap();
        assert_eq!(
            b.finish().as_bytes(),
            &b"Uc0,8,101 a84b4c76e66710@pc33 192.0.2.10 49170 1928301774;1 tcp:10.0.0.1:9999 I && M3:1 Dd2a1.c 101"[..]
        );
    }

    #[test]
    fn words_that_would_inject_are_refused() {
        for bad in [
            &b"a b"[..],
            b"a\tb",
            b"a\nb",
            b"a\rb",
            b"a;b",
            b"a\0b",
            b"a\x7fb",
            b"a\x0bb",
        ] {
            assert!(
                matches!(validate_call_id(bad), Err(ProtoError::ForbiddenByte { .. })),
                "{bad:?}"
            );
            assert!(validate_tag(bad).is_err());
        }
        assert_eq!(
            validate_tag(b"ab;c"),
            Err(ProtoError::ForbiddenByte {
                what: "tag",
                byte: b';',
                offset: 2
            })
        );
        assert_eq!(
            validate_call_id(b""),
            Err(ProtoError::EmptyWord { what: "call-id" })
        );
        let long = vec![b'x'; MAX_WORD_LEN + 1];
        assert!(matches!(
            validate_call_id(&long),
            Err(ProtoError::WordTooLong { .. })
        ));
        assert!(validate_call_id(&long[..MAX_WORD_LEN]).is_ok());
        // non-ASCII bytes are fine, `;` is fine in a generic argument only
        assert!(validate_call_id("ça-va@host".as_bytes()).is_ok());
        assert!(check_word(WordKind::Arg, b"tag;1").is_ok());
        assert!(check_word(WordKind::Arg, b"a b").is_err());
        assert!(Command::delete(b"c id", b"f", None).is_err());
        assert!(Command::delete(b"c", b"f", Some(b"t;1")).is_err());
        assert!(Command::builder(b"U x").is_err());
        assert!(Command::builder(b"").is_err());
    }

    #[test]
    fn subcommand_limits() {
        let mut b = Command::builder(b"U").unwrap();
        b.call_id(b"c").unwrap();
        for _ in 0..MAX_SUBCOMMANDS {
            b.subcommand(ICE_LITE).unwrap().arg(b"S").unwrap();
        }
        assert_eq!(b.subcommand_count(), MAX_SUBCOMMANDS);
        assert_eq!(
            b.subcommand(DTLS_GW).unwrap_err(),
            ProtoError::TooManySubcommands
        );
        let mut b = Command::builder(b"U").unwrap();
        b.subcommand(ICE_LITE).unwrap();
        for _ in 1..MAX_SUBCOMMAND_WORDS {
            b.arg(b"w").unwrap();
        }
        assert_eq!(b.arg(b"w").unwrap_err(), ProtoError::SubcommandTooLong);
        // the main command has no word limit
        let mut b = Command::builder(b"U").unwrap();
        for _ in 0..2 * MAX_SUBCOMMAND_WORDS {
            b.arg(b"w").unwrap();
        }
    }

    #[test]
    fn command_length_is_bounded() {
        let mut b = Command::builder(b"Q").unwrap();
        let word = vec![b'a'; MAX_WORD_LEN];
        let mut err = None;
        for _ in 0..10 {
            if let Err(e) = b.arg(&word) {
                err = Some(e);
                break;
            }
        }
        assert!(matches!(err, Some(ProtoError::CommandTooLong { .. })));
        assert!(b.finish().as_bytes().len() <= MAX_COMMAND_LEN);
    }
}
