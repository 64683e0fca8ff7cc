//! RTPProxy control protocol, sans-IO (spec §3).
//!
//! Layer: `core`. Nothing here opens a socket, reads a clock or draws random numbers; the
//! process id, the cookie seed and `now` come in as arguments.
//!
//! - [`cookie`]: `<pid>_<rand>_<seq>` cookies for UDP requests (§3.2);
//! - [`command`]: command bodies, with every word from a SIP message checked (§3.4, D28);
//! - [`framing`]: how a command is put on each transport (§3.1);
//! - [`reply`]: reply parsing into [`Reply`] / [`MediaReply`] (§3.3, §3.5.2);
//! - [`caps`]: the capability table and the probe state machine (§2.5);
//! - [`exchange`]: one request/reply exchange with retries and timeouts, driven by `io`.
#![warn(missing_docs)]

pub mod caps;
pub mod command;
pub mod cookie;
pub mod exchange;
pub mod framing;
pub mod reply;

pub use caps::{Capabilities, OptionalCap, Probe, ProbeFailure, ProbeOutcome, OPTIONAL_CAPS};
pub use command::{
    check_word, validate_call_id, validate_tag, Command, CommandBuilder, WordKind, MAX_WORD_LEN,
};
pub use cookie::{Cookie, CookieGen};
pub use exchange::{DatagramExchange, ExchangeError, StreamExchange};
pub use framing::Framing;
pub use reply::{split_subresults, MediaReply, Reply, SubResult, MAX_REPLY_LEN};

/// A command that cannot be built or a reply that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// A word of a command is empty.
    #[error("{what} is empty")]
    EmptyWord {
        /// Which word.
        what: &'static str,
    },
    /// A word of a command exceeds [`MAX_WORD_LEN`].
    #[error("{what} is {len} bytes long, more than {MAX_WORD_LEN}")]
    WordTooLong {
        /// Which word.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// A word contains a byte that would split or corrupt the command.
    #[error("{what} contains byte 0x{byte:02x} at offset {offset}")]
    ForbiddenByte {
        /// Which word.
        what: &'static str,
        /// The offending byte.
        byte: u8,
        /// Its offset in the word.
        offset: usize,
    },
    /// The whole command would exceed [`command::MAX_COMMAND_LEN`].
    #[error("command of {len} bytes is too long")]
    CommandTooLong {
        /// Length it would have had.
        len: usize,
    },
    /// More than [`command::MAX_SUBCOMMANDS`] sub-commands.
    #[error("more than {} sub-commands in one command", command::MAX_SUBCOMMANDS)]
    TooManySubcommands,
    /// A sub-command of more than [`command::MAX_SUBCOMMAND_WORDS`] words.
    #[error("sub-command of more than {} words", command::MAX_SUBCOMMAND_WORDS)]
    SubcommandTooLong,
    /// The reply is empty.
    #[error("empty reply")]
    EmptyReply,
    /// The reply exceeds [`MAX_REPLY_LEN`].
    #[error("reply of {len} bytes is too long")]
    ReplyTooLong {
        /// Its length.
        len: usize,
    },
    /// The reply does not have the expected shape (reason and an escaped excerpt).
    #[error("malformed reply ({0})")]
    MalformedReply(String),
    /// A data reply was expected but the relay answered `E<code>`.
    #[error("relay answered error E{0}")]
    ErrorReply(u32),
}
