//! The events the module publishes: `E_RTPPROXY_STATUS` and `E_RTPPROXY_DTMF`.

use crate::host::ffi::cstr::borrowed_str;
use crate::host::ffi::sys;

/// Event ids returned by `evi_publish_event` (published in `mod_init`).
pub(crate) struct Events {
    pub(crate) status: sys::event_id_t,
    pub(crate) dtmf: sys::event_id_t,
}

/// Publishes both events. The names must stay valid forever: they are string literals.
pub(crate) fn publish() -> Result<Events, String> {
    let one = |name: &'static [u8]| {
        // SAFETY: the core stores the name by reference; a literal lives as long as the module.
        let id = unsafe { (crate::host::ffi::api::api().evi_publish_event)(borrowed_str(name)) };
        if id < 0 {
            Err(format!(
                "cannot publish event {}",
                String::from_utf8_lossy(name)
            ))
        } else {
            Ok(id)
        }
    };
    Ok(Events {
        status: one(b"E_RTPPROXY_STATUS")?,
        dtmf: one(b"E_RTPPROXY_DTMF")?,
    })
}

/// Raises `E_RTPPROXY_STATUS` for node `url` with `active` / `inactive`.
pub(crate) fn raise_status(events: &Events, url: &str, active: bool) {
    let status: &[u8] = if active { b"active" } else { b"inactive" };
    // SAFETY: evi calls with valid ids; names and values are borrowed `str`s that stay alive
    // until `evi_raise_event` returns (it copies nothing but the str structs, ABI §4.10), and a
    // list from `evi_get_params` is freed by the raise itself or by us on the error path.
    unsafe {
        if (crate::host::ffi::api::api().evi_probe_event)(events.status) == 0 {
            return;
        }
        let list = (crate::host::ffi::api::api().evi_get_params)();
        if list.is_null() {
            tracing::error!("cannot create E_RTPPROXY_STATUS parameters");
            return;
        }
        let n_socket = borrowed_str(b"socket");
        let v_socket = borrowed_str(url.as_bytes());
        let n_status = borrowed_str(b"status");
        let v_status = borrowed_str(status);
        let flags = sys::EVI_STR_VAL as i32;
        if (crate::host::ffi::api::api().evi_param_add)(
            list,
            &n_socket,
            (&v_socket as *const sys::host_str).cast(),
            flags,
        ) < 0
            || (crate::host::ffi::api::api().evi_param_add)(
                list,
                &n_status,
                (&v_status as *const sys::host_str).cast(),
                flags,
            ) < 0
        {
            tracing::error!("cannot add E_RTPPROXY_STATUS parameters");
            (crate::host::ffi::api::api().evi_free_params)(list);
            return;
        }
        if (crate::host::ffi::api::api().evi_raise_event)(events.status, list) < 0 {
            tracing::error!("cannot raise E_RTPPROXY_STATUS for {url}");
        }
    }
}
