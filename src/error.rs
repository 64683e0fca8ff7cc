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
    /// Anything else, already described.
    #[error("{0}")]
    Other(String),
}

/// An [`Error::Other`] with this description (the one helper for ad-hoc host errors).
pub(crate) fn other(msg: impl Into<String>) -> Error {
    Error::Other(msg.into())
}
