//! The unsafe shell: the only place that touches OpenSIPS memory, pointers and symbols.
//!
//! Rules (see doc/safety.md): every `extern "C"` entry point is one call through `guard::call`;
//! C strings are converted only in `cstr`; memory the host frees comes from `mem`; state shared
//! between processes lives in `shared` (shm atomics, allocated before fork).
#![allow(unsafe_code)]

pub(crate) mod aio;
pub(crate) mod api;
pub(crate) mod autobridge;
pub(crate) mod avp;
pub(crate) mod control;
pub(crate) mod cstr;
pub(crate) mod db;
pub(crate) mod dialog;
pub(crate) mod dlg_api;
pub(crate) mod dlg_node;
pub(crate) mod entry;
pub(crate) mod events;
pub(crate) mod exports;
pub(crate) mod functions;
pub(crate) mod guard;
pub(crate) mod log;
pub(crate) mod media;
pub(crate) mod mem;
pub(crate) mod mi;
pub(crate) mod mi_ops;
pub(crate) mod msg;
pub(crate) mod rtp_relay;
pub(crate) mod shared;
pub(crate) mod state;
pub(crate) mod stats;
pub(crate) mod sys;
pub(crate) mod tm_api;
