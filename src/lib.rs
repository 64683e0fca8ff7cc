//! A Rust re-implementation of the OpenSIPS `rtpproxy` module (OpenSIPS 3.6.x and 4.0.x).
//!
//! Three layers, one direction of dependency (see `doc/architecture.md`):
//! - [`core`]: safe, sans-IO logic (modparam grammars, node sets and selection, the
//!   RTPProxy control protocol). No sockets, no clock, no globals.
//! - [`io`]: safe I/O over std/tokio (control-socket clients, notification listener).
//! - `host`: the unsafe shell that OpenSIPS loads (only in the cdylib build).

// The host layouts (tests/abi_probe) were measured on x86_64 Linux only.
#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
compile_error!(
    "this module's OpenSIPS layouts are verified for x86_64 Linux only (tests/abi_probe); \
     other targets need their own probe results first"
);

pub mod core;
pub mod error;
pub mod io;

mod host;

pub use error::Error;
