//! Safe, sans-IO core: everything here is deterministic and testable without OpenSIPS.
//!
//! Nothing in this layer opens a socket, reads a clock, logs through the host or touches
//! process-global state. Time and randomness come in as arguments.
#![forbid(unsafe_code)]

pub mod config;
pub mod control;
pub mod media;
pub mod notify;
pub mod offer;
pub mod proto;
pub mod sdp;
pub mod select;
pub mod stats;
pub(crate) mod text;
