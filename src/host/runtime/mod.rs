//! Per-process and shared state, the driver of `core::control` (blocking and background),
//! the prober and notification processes, and statistics. Built on `ffi` and `bind`.

pub(crate) mod control;
pub(crate) mod shared;
pub(crate) mod state;
pub(crate) mod stats;
