//! Safe-ish bindings to host facilities: the SIP message, AVPs, MI, events, DB and the
//! dialog/tm module APIs. Built on `ffi` only.

pub(crate) mod avp;
pub(crate) mod db;
pub(crate) mod dlg_api;
pub(crate) mod events;
pub(crate) mod mi;
pub(crate) mod msg;
pub(crate) mod params;
pub(crate) mod tm_api;
