//! What the script and MI see: offer/answer/unforce, engage, autobridge, media functions,
//! the rtp_relay engine, HA node storage and MI commands. Built on `runtime`, `bind`, `ffi`.

pub(crate) mod aio;
pub(crate) mod autobridge;
pub(crate) mod dialog;
pub(crate) mod dlg_node;
pub(crate) mod functions;
pub(crate) mod media;
pub(crate) mod mi_ops;
pub(crate) mod request;
pub(crate) mod rtp_relay;
