//! Operator MI commands beyond the C module's: the detailed view (`rtpproxy_show detail=1`),
//! `rtpproxy_ping` and `rtpproxy_drain`.
//!
//! Draining is not a health change: it raises no `E_RTPPROXY_STATUS`, keeps `"disabled":0` in
//! the plain `rtpproxy_show`, and leaves the prober and failure marking alone.

use crate::core::config::SetId;
use crate::core::stats::{NodeStat, NodeState};

use crate::host::bind::mi::{self, Json};
use crate::host::ffi::guard;
use crate::host::ffi::sys::{self, mi_response_t};
use crate::host::runtime::state::{self, ModuleState, NodeView};
use crate::host::runtime::{control, stats};

type Params = *const sys::mi_params_t;

/// Nodes of `url`, in set `set` or in every set.
fn nodes<'a>(
    st: &'a ModuleState,
    url: &'a [u8],
    set: Option<SetId>,
) -> impl Iterator<Item = &'static NodeView> + 'a {
    st.sets()
        .iter()
        .filter(move |s| set.is_none_or(|id| id == s.id))
        .flat_map(|s| s.nodes.iter())
        .filter(move |n| n.spec.url.as_bytes() == url)
}

/// Reads `url` and, when `with_set`, `setid`.
///
/// # Safety
/// `params` must be the live parameter set of the MI call being served.
unsafe fn url_and_set(
    params: Params,
    with_set: bool,
) -> Result<(Vec<u8>, Option<SetId>), *mut mi_response_t> {
    // SAFETY: per the contract.
    let url = unsafe { mi::string_param(params, c"url") }.ok_or_else(mi::param_error)?;
    if url.is_empty() {
        return Err(mi::error(400, "Empty url"));
    }
    let set = if with_set {
        // SAFETY: per the contract.
        Some(unsafe { mi::int_param(params, c"setid") }.ok_or_else(mi::param_error)?)
    } else {
        None
    };
    Ok((url, set))
}

/// The plain `rtpproxy_show` reply (byte-identical to the C module's).
pub(crate) fn show_json(st: &ModuleState) -> Json {
    Json::Arr(
        st.sets()
            .iter()
            .map(|s| {
                let nodes = s
                    .nodes
                    .iter()
                    .map(|n| {
                        let (disabled, recheck) =
                            st.slot(n).map(|x| x.snapshot()).unwrap_or((0, 0));
                        Json::Obj(vec![
                            ("url", Json::Str(n.spec.url.clone())),
                            ("index", Json::Num(n.index as f64)),
                            ("disabled", Json::Num(f64::from(disabled))),
                            ("weight", Json::Num(f64::from(n.spec.weight))),
                            ("recheck_ticks", Json::Num(f64::from(recheck))),
                        ])
                    })
                    .collect();
                Json::Obj(vec![
                    ("Set", Json::Num(f64::from(s.id))),
                    ("Nodes", Json::Arr(nodes)),
                ])
            })
            .collect(),
    )
}

fn detail_json(st: &ModuleState) -> Json {
    let now = control::now();
    let ago = |tick: u32| Json::Num(f64::from(now.saturating_sub(tick)));
    let node = |n: &NodeView| {
        let slot = st.slot(n);
        let health = slot.map(|s| s.health()).unwrap_or_default();
        let draining = slot.is_some_and(|s| s.draining());
        let probed = slot.is_some_and(|s| s.probed());
        let caps = slot
            .map(|s| {
                s.capabilities()
                    .names()
                    .map(|c| Json::Str(c.into()))
                    .collect()
            })
            .unwrap_or_default();
        let mut f = vec![
            ("url", Json::Str(n.spec.url.clone())),
            ("index", Json::Num(n.index as f64)),
            ("weight", Json::Num(f64::from(n.spec.weight))),
            (
                "state",
                Json::Str(
                    NodeState::of(health.disabled, draining, probed)
                        .as_str()
                        .into(),
                ),
            ),
            ("disabled", Json::Num(f64::from(u8::from(health.disabled)))),
            ("draining", Json::Num(f64::from(u8::from(draining)))),
            ("recheck_ticks", Json::Num(f64::from(health.recheck_at))),
            ("capabilities", Json::Arr(caps)),
        ];
        if let Some(rec) = stats::record(st, n) {
            if let Some((why, at)) = rec.last_disabled() {
                f.push(("last_disabled_reason", Json::Str(why)));
                f.push(("last_disabled_ago_s", ago(at)));
            }
            if rec.last_success() != 0 {
                f.push(("last_success_ago_s", ago(rec.last_success())));
            }
            for &s in NodeStat::ALL {
                if !matches!(s, NodeStat::Enabled | NodeStat::Draining) {
                    f.push((s.name(), Json::Num(rec.value(s) as f64)));
                }
            }
        }
        Json::Obj(f)
    };
    Json::Arr(
        st.sets()
            .iter()
            .map(|s| {
                Json::Obj(vec![
                    ("Set", Json::Num(f64::from(s.id))),
                    ("Nodes", Json::Arr(s.nodes.iter().map(node).collect())),
                ])
            })
            .collect(),
    )
}

/// `rtpproxy_show detail=<n>`: the detailed view (0 gives the plain one).
pub(crate) unsafe extern "C" fn mi_show_detail(
    params: Params,
    _async: *mut sys::mi_handler,
) -> *mut mi_response_t {
    serve("rtpproxy_show", |st| {
        // SAFETY: `params` is the live parameter set of this MI call.
        match unsafe { mi::int_param(params, c"detail") } {
            None => mi::param_error(),
            Some(0) => mi::reply(&show_json(st)),
            Some(_) => mi::reply(&detail_json(st)),
        }
    })
}

/// Serves one MI call: the one panic guard (its fallback reply is built only on a panic, so
/// nothing is allocated per call) and the module state, or an MI error when there is none.
pub(crate) fn serve(
    name: &str,
    body: impl FnOnce(&'static ModuleState) -> *mut mi_response_t,
) -> *mut mi_response_t {
    guard::call_lazy(
        name,
        || mi::error(500, "Internal error"),
        || match state::get() {
            Some(st) => body(st),
            None => mi::error(500, "module not initialized"),
        },
    )
}

/// Shared body of the `rtpproxy_ping` recipes.
///
/// # Safety
/// `params` must be the live parameter set of the MI call being served.
unsafe fn ping(st: &ModuleState, params: Params, with_set: bool) -> *mut mi_response_t {
    // SAFETY: per the contract.
    let (url, set) = match unsafe { url_and_set(params, with_set) } {
        Ok(v) => v,
        Err(e) => return e,
    };
    let Some(n) = nodes(st, &url, set).next() else {
        return mi::error(404, "RTP proxy not found");
    };
    match control::ping(st, n) {
        Ok((rtt_us, version)) => mi::reply(&Json::Obj(vec![
            ("url", Json::Str(n.spec.url.clone())),
            ("rtt_us", Json::Num(rtt_us as f64)),
            ("version", Json::Str(version)),
        ])),
        Err(e) => mi::error(500, &format!("no reply from {}: {e}", n.spec.url)),
    }
}

/// Shared body of the `rtpproxy_drain` recipes.
///
/// # Safety
/// `params` must be the live parameter set of the MI call being served.
unsafe fn drain(st: &ModuleState, params: Params, with_set: bool) -> *mut mi_response_t {
    // SAFETY: per the contract.
    let (url, set) = match unsafe { url_and_set(params, with_set) } {
        Ok(v) => v,
        Err(e) => return e,
    };
    // SAFETY: per the contract.
    let Some(on) = (unsafe { mi::int_param(params, c"drain") }) else {
        return mi::param_error();
    };
    let mut found = false;
    for n in nodes(st, &url, set) {
        found = true;
        if let Some(slot) = st.slot(n) {
            if slot.set_draining(on != 0) != (on != 0) {
                tracing::info!(
                    "RTPProxy {} {}",
                    n.spec.url,
                    if on != 0 {
                        "draining: no new calls"
                    } else {
                        "no longer draining"
                    }
                );
            }
        }
    }
    if found {
        mi::reply(&Json::Str("OK".into()))
    } else {
        mi::error(404, "RTP proxy not found")
    }
}

macro_rules! mi_entry {
    ($($f:ident => $name:literal => $body:ident($with_set:expr)),* $(,)?) => {$(
        /// MI recipe of the same command.
        pub(crate) unsafe extern "C" fn $f(
            params: Params,
            _async: *mut sys::mi_handler,
        ) -> *mut mi_response_t {
            // SAFETY: `params` is the live parameter set of this MI call.
            serve($name, |st| unsafe { $body(st, params, $with_set) })
        }
    )*};
}

mi_entry! {
    mi_ping_1 => "rtpproxy_ping" => ping(false),
    mi_ping_2 => "rtpproxy_ping" => ping(true),
    mi_drain_1 => "rtpproxy_drain" => drain(false),
    mi_drain_2 => "rtpproxy_drain" => drain(true),
}
