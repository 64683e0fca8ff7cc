//! The unsafe shell: the only place that touches OpenSIPS memory, pointers and symbols.
//!
//! Rules (see doc/safety.md): every `extern "C"` entry point is one call through `guard::call`;
//! C strings are converted only in `cstr`; memory the host frees comes from `mem`; state shared
//! between processes lives in `shared` (shm atomics, allocated before fork).
#![allow(unsafe_code)]

pub(crate) mod bind;
pub(crate) mod features;
pub(crate) mod ffi;
pub(crate) mod module;
pub(crate) mod runtime;
