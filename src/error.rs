//! Crate-wide error type joining the per-layer errors.

use crate::core::config::ConfigError;

/// Any error this module can report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A modparam or configuration value is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A feature that belongs to a later milestone.
    #[error("{0} is not implemented yet")]
    NotImplemented(&'static str),
    /// Anything else, already described.
    #[error("{0}")]
    Other(String),
}
