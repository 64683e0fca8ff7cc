//! A Rust re-implementation of the OpenSIPS 3.6 `rtpproxy` module.
//!
//! Three layers, one direction of dependency (see `doc/architecture.md`):
//! - [`core`]: safe, sans-IO logic (modparam grammars, node sets and selection, the
//!   RTPProxy control protocol). No sockets, no clock, no globals.
//! - [`io`]: safe I/O over std/tokio (control-socket clients, notification listener).
//! - `host`: the unsafe shell that OpenSIPS loads (only in the cdylib build).

pub mod core;
pub mod error;
pub mod io;

mod host;

pub use error::Error;
