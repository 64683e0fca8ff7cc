//! Crate-wide error type joining the per-layer errors.

use crate::core::config::ConfigError;
use crate::core::media::MediaError;
use crate::core::proto::ProtoError;
use crate::io::transport::TransportError;

/// Any error this module can report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A modparam or configuration value is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A command could not be built, or a reply could not be understood.
    #[error(transparent)]
    Proto(#[from] ProtoError),
    /// A relay did not answer.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A media function (play, record, copy, query) was refused or failed.
    #[error(transparent)]
    Media(#[from] MediaError),
    /// A feature that belongs to a later milestone.
    #[error("{0} is not implemented yet")]
    NotImplemented(&'static str),
    /// A host-side condition (no module state, a message without what the function needs).
    #[error(transparent)]
    Host(#[from] HostError),
    /// Anything else, already described.
    #[error("{0}")]
    Other(String),
}

/// Host-side failures common to several script functions (the text is the log line).
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A function ran before `mod_init` installed the module state.
    #[error("module not initialized")]
    NotInitialized,
    /// The SIP message has no Call-ID header.
    #[error("no Call-ID in the message")]
    NoCallId,
    /// The SIP message has no From-tag.
    #[error("no From-tag in the message")]
    NoFromTag,
    /// The SIP message has no body at all.
    #[error("the message has no body")]
    NoBody,
    /// The host's per-process allocator refused.
    #[error("out of pkg memory")]
    OutOfPkgMemory,
}

/// An [`Error::Other`] with this description (the one helper for ad-hoc host errors).
pub(crate) fn other(msg: impl Into<String>) -> Error {
    Error::Other(msg.into())
}
