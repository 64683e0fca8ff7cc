//! The events the module publishes: `E_RTPPROXY_STATUS` and `E_RTPPROXY_DTMF`.

use crate::host::ffi::api::api;
use crate::host::ffi::cstr::borrowed_str;
use crate::host::ffi::sys;

/// Event ids returned by `evi_publish_event` (published in `mod_init`).
pub(crate) struct Events {
    pub(crate) status: sys::event_id_t,
    pub(crate) dtmf: sys::event_id_t,
}

/// An event the core refused to publish.
#[derive(Debug, thiserror::Error)]
#[error("cannot publish event {0}")]
pub(crate) struct PublishError(&'static str);

/// Publishes both events. The names must stay valid forever: they are string literals.
pub(crate) fn publish() -> Result<Events, PublishError> {
    let one = |name: &'static str| {
        // SAFETY: the core stores the name by reference; a literal lives as long as the module.
        let id = unsafe { (api().evi_publish_event)(borrowed_str(name.as_bytes())) };
        if id < 0 {
            Err(PublishError(name))
        } else {
            Ok(id)
        }
    };
    Ok(Events {
        status: one("E_RTPPROXY_STATUS")?,
        dtmf: one("E_RTPPROXY_DTMF")?,
    })
}

/// Raises `E_RTPPROXY_STATUS` for node `url` with `active` / `inactive`.
pub(crate) fn raise_status(events: &Events, url: &str, active: bool) {
    let status: &[u8] = if active { b"active" } else { b"inactive" };
    let a = api();
    // SAFETY: a published event id.
    if unsafe { (a.evi_probe_event)(events.status) } == 0 {
        return;
    }
    // SAFETY: a new, empty parameter list (ours until raised or freed), or NULL.
    let list = unsafe { (a.evi_get_params)() };
    if list.is_null() {
        tracing::error!("cannot create E_RTPPROXY_STATUS parameters");
        return;
    }
    let n_socket = borrowed_str(b"socket");
    let v_socket = borrowed_str(url.as_bytes());
    let n_status = borrowed_str(b"status");
    let v_status = borrowed_str(status);
    let flags = sys::EVI_STR_VAL as i32;
    let add = |name: &sys::host_str, value: &sys::host_str| {
        // SAFETY: `list` is our live list; the name and value `str`s stay alive until
        // `evi_raise_event` returns (only the str structs are referenced, ABI §4.10).
        unsafe { (a.evi_param_add)(list, name, std::ptr::from_ref(value).cast(), flags) >= 0 }
    };
    if !add(&n_socket, &v_socket) || !add(&n_status, &v_status) {
        tracing::error!("cannot add E_RTPPROXY_STATUS parameters");
        // SAFETY: the list was not raised, so it is still ours to free, once.
        unsafe { (a.evi_free_params)(list) };
        return;
    }
    // SAFETY: a published id and our filled list, which the raise frees; the borrowed `str`s
    // are alive across the call.
    if unsafe { (a.evi_raise_event)(events.status, list) } < 0 {
        tracing::error!("cannot raise E_RTPPROXY_STATUS for {url}");
    }
}
