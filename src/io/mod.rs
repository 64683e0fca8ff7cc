//! Safe I/O over std and tokio: control-socket clients and the notification listener.
//!
//! Nothing here calls into OpenSIPS. tokio runtimes are only ever created inside a process
//! that the module owns, after OpenSIPS has forked.
#![forbid(unsafe_code)]
pub mod listener;
pub mod transport;
