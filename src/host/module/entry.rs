//! Every `extern "C"` function OpenSIPS calls. Each body is one call through
//! [`guard::call`]; the logic lives in safe functions below or in `core`.

use std::ffi::{c_int, c_void, CStr};

use crate::core::config::{ConfigError, ModuleConfig, Transport};
use crate::error::{HostError, LifecycleError};

use crate::core::select::MiEnable;
use crate::host::bind::events;
use crate::host::bind::mi::{self, Json};
use crate::host::features::mi_ops;
use crate::host::ffi::sys::{self, mi_response_t};
use crate::host::ffi::{cstr, guard, log};
use crate::host::runtime::state::{self, ModuleState};
use crate::host::runtime::{control, shared};

// ---- modparams -----------------------------------------------------------------------------

/// Handles one `modparam("rtpproxy", name, value)` line.
///
/// # Safety
/// `val` is what OpenSIPS passes for a `USE_FUNC_PARAM` of type `ty`: a NUL-terminated string
/// for `STR_PARAM`, an integer cast to a pointer for `INT_PARAM`.
pub(crate) unsafe fn set_modparam(
    name: &'static str,
    ty: sys::modparam_t,
    val: *mut c_void,
) -> c_int {
    log::install();
    let (shown, result) = if ty & sys::STR_PARAM != 0 {
        // SAFETY: per the contract, a string modparam value is a NUL-terminated C string.
        match unsafe { cstr::cstr_to_string(val.cast()) } {
            None => (String::new(), Ok(())),
            Some(Err(e)) => (e.lossy, Err(ConfigError::NotUtf8)),
            Some(Ok(s)) => {
                let r = state::with_params(|p| p.set_str(name, &s));
                (s, r)
            }
        }
    } else {
        let v = val as isize as c_int;
        (
            v.to_string(),
            state::with_params(|p| p.set_int(name, i64::from(v))),
        )
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("bad modparam {name}={shown:?}: {e}");
            LifecycleError::Config(e).return_code()
        }
    }
}

/// Node slots allocated at start-up: room for reloads that add nodes.
const MIN_NODE_SLOTS: usize = 256;

// ---- lifecycle -----------------------------------------------------------------------------

/// `preinit_f`: runs in the main process before any `mod_init`.
pub(crate) unsafe extern "C" fn mod_preinit() -> c_int {
    guard::call("mod_preinit", -1, || {
        log::install();
        match crate::host::features::rtp_relay::register().map_err(LifecycleError::binding) {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!("{e}");
                e.return_code()
            }
        }
    })
}

/// Body of `init_f` (`mod_init`): validates the configuration and sets up shared state, before
/// fork; then hands `select_procs` whether the notification process is wanted (the exports
/// table owns the process list, so this module does not reach back into it).
pub(crate) fn mod_init(select_procs: fn(bool)) -> c_int {
    guard::call("mod_init", -1, || match init() {
        Ok(notify) => {
            select_procs(notify);
            0
        }
        Err(e) => {
            tracing::error!("{e}");
            e.return_code()
        }
    })
}

/// Whether another loaded module exports a function of this name (`find_export`).
fn module_exports_fn(name: &CStr) -> bool {
    // SAFETY: `find_export` only reads the loaded modules' tables.
    unsafe { !(crate::host::ffi::api::api().find_export)(name.as_ptr(), 0).is_null() }
}

/// Returns whether `rtpp_notify_socket` is set (the notification process is needed).
fn init() -> Result<bool, LifecycleError> {
    log::install();
    tracing::info!("initializing (Rust rtpproxy module)");
    let params = state::with_params(|p| p.clone());
    let mut config: ModuleConfig = params.finish().map_err(LifecycleError::Config)?;

    config
        .resolve_missing_sockets(module_exports_fn(c"rtp_io_getchildsock"))
        .map_err(LifecycleError::Sockets)?;
    if let Some(db) = &config.db {
        if config.sock_values_ignored() {
            tracing::warn!(
                "db_url is set: the rtpproxy_sock values are ignored (as in the C module)"
            );
        }
        crate::host::bind::db::bind_once(&db.url).map_err(LifecycleError::binding)?;
        let values = crate::host::bind::db::load_values(db)
            .map_err(|e| LifecycleError::Database(e.to_string()))?;
        config.sets = state::decode_list(&values, config.default_set)
            .map_err(LifecycleError::DatabaseNode)?;
        tracing::info!(
            "loaded {} RTPProxy node(s) from table {}",
            config.node_count(),
            db.table
        );
    }
    if config.notify.is_some() && !module_exports_fn(c"load_dlg") {
        return Err(LifecycleError::NotifyNeedsDialog);
    }
    if config.autobridge {
        tracing::warn!("rtpproxy_autobridge is enabled: it does not work with forking");
    }

    let topology = state::Topology::new(0, &config.sets);
    let node_count = config.node_count();
    if !topology.sets.iter().any(|s| s.id == config.default_set) {
        tracing::warn!(
            "default_set {} has no nodes: functions called without a set id will fail",
            config.default_set
        );
    }
    let shared = shared::SharedNodes::allocate(node_count.max(MIN_NODE_SLOTS))
        .ok_or(HostError::OutOfShm("node table"))?;
    // Names are resolved once here, before fork; SIP workers never resolve (the prober
    // retries the ones that fail).
    for n in topology.sets.iter().flat_map(|s| s.nodes.iter()) {
        if let (Some(slot), Some(addr)) = (shared.get(n.index), control::resolve_spec(&n.spec)) {
            slot.set_address(addr);
        }
    }
    let list = shared::SharedList::allocate().ok_or(HostError::OutOfShm("node list"))?;
    let calls =
        shared::CallMap::allocate(config.call_map_size).ok_or(HostError::OutOfShm("call map"))?;
    let events = events::publish().map_err(LifecycleError::binding)?;
    for s in &topology.sets {
        for n in &s.nodes {
            if n.spec.transport == Transport::RtpIo {
                tracing::debug!("node {} uses the rtp.io module", n.spec.url);
            }
        }
    }
    let notify = config.notify.is_some();
    crate::host::features::dialog::mod_init(&config).map_err(LifecycleError::binding)?;
    crate::host::features::rtp_relay::mod_init(&config).map_err(LifecycleError::binding)?;
    state::install(ModuleState::new(
        config, shared, list, calls, events, topology,
    ))?;
    let st = state::get().ok_or(HostError::Internal("module state not installed"))?;
    crate::host::runtime::stats::init(st)?;
    crate::host::features::dialog::register_loaded_callback();
    Ok(notify)
}

/// `init_child_f`: per-process set-up after fork.
pub(crate) unsafe extern "C" fn child_init(rank: c_int) -> c_int {
    guard::call("child_init", -1, || {
        tracing::debug!("child_init({rank})");
        control::set_rank(rank);
        match crate::host::features::dialog::child_init(rank).map_err(LifecycleError::binding) {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!("{e}");
                e.return_code()
            }
        }
    })
}

/// `destroy_f`: main process at shutdown.
pub(crate) unsafe extern "C" fn mod_destroy() {
    guard::call("mod_destroy", (), || {
        crate::host::features::dialog::destroy();
        tracing::debug!("module destroyed");
    })
}

// ---- MI ------------------------------------------------------------------------------------

/// `rtpproxy_show`: sets and nodes with their live state.
pub(crate) unsafe extern "C" fn mi_show_rtpproxies(
    _params: *const sys::mi_params_t,
    _async: *mut sys::mi_handler,
) -> *mut mi_response_t {
    mi_ops::serve("rtpproxy_show", |st| mi::reply(&mi_ops::show_json(st)))
}

/// `rtpproxy_enable url enable`.
pub(crate) unsafe extern "C" fn mi_enable_rtp_proxy_1(
    params: *const sys::mi_params_t,
    _async: *mut sys::mi_handler,
) -> *mut mi_response_t {
    // SAFETY: `params` is the live parameter set of this MI call.
    mi_ops::serve("rtpproxy_enable", |st| unsafe {
        mi_enable(st, params, false)
    })
}

/// `rtpproxy_enable url enable setid`.
pub(crate) unsafe extern "C" fn mi_enable_rtp_proxy_2(
    params: *const sys::mi_params_t,
    _async: *mut sys::mi_handler,
) -> *mut mi_response_t {
    // SAFETY: `params` is the live parameter set of this MI call.
    mi_ops::serve("rtpproxy_enable", |st| unsafe {
        mi_enable(st, params, true)
    })
}

/// Shared body of both `rtpproxy_enable` recipes.
///
/// # Safety
/// `params` must be the live parameter set of the MI call being served.
unsafe fn mi_enable(
    st: &ModuleState,
    params: *const sys::mi_params_t,
    with_set: bool,
) -> *mut mi_response_t {
    {
        if st.sets().is_empty() {
            return mi::error(404, "RTP proxy not found");
        }
        // SAFETY: `params` is the live parameter set of this MI call.
        let Some(url) = (unsafe { mi::string_param(params, c"url") }) else {
            return mi::param_error();
        };
        if url.is_empty() {
            return mi::error(400, "Empty url");
        }
        // SAFETY: as above.
        let Some(enable) = (unsafe { mi::int_param(params, c"enable") }) else {
            return mi::param_error();
        };
        let set = if with_set {
            // SAFETY: as above.
            match unsafe { mi::int_param(params, c"setid") } {
                Some(id) => Some(id),
                None => return mi::param_error(),
            }
        } else {
            None
        };
        let now = control::now();
        let mut found = false;
        for s in st.sets().iter().filter(|s| set.is_none_or(|id| id == s.id)) {
            for n in s
                .nodes
                .iter()
                .filter(|n| n.spec.url.as_bytes() == url.as_slice())
            {
                found = true;
                let Some(slot) = st.slot(n) else { continue };
                let what = MiEnable::from_value(i64::from(enable));
                let (before, after) =
                    slot.update(|h| _ = h.apply_mi_enable(what, now, st.config.disable_tout));
                if after.disabled && !before.disabled {
                    crate::host::runtime::stats::disabled(
                        st,
                        n,
                        &format!("rtpproxy_enable {enable}"),
                    );
                }
                if before.disabled != after.disabled {
                    // The C module raises this event with the status inverted; we send the
                    // state the node is now in (doc/differences.md).
                    events::raise_status(&st.events, &n.spec.url, !after.disabled);
                }
            }
        }
        if found {
            mi::reply(&Json::Str("OK".into()))
        } else {
            mi::error(404, "RTP proxy not found")
        }
    }
}

/// `rtpproxy_reload`: reload the node list from the database.
pub(crate) unsafe extern "C" fn mi_reload_rtpproxies(
    _params: *const sys::mi_params_t,
    _async: *mut sys::mi_handler,
) -> *mut mi_response_t {
    mi_ops::serve("rtpproxy_reload", |st| {
        let Some(db) = &st.config.db else {
            return mi::error(400, "Dynamic loading not enabled");
        };
        match reload(st, db) {
            Ok(n) => {
                tracing::info!("rtpproxy_reload: {n} node(s) loaded from {}", db.table);
                mi::reply(&Json::Str("OK".into()))
            }
            Err(e) => {
                tracing::error!("rtpproxy_reload failed, the current node list is kept: {e}");
                mi::error(500, &format!("Reload failed, node list unchanged: {e}"))
            }
        }
    })
}

/// Loads the node list from the database and publishes it to every process. Nothing changes
/// unless the whole table loads and parses.
fn reload(st: &ModuleState, db: &crate::core::config::DbConfig) -> Result<usize, LifecycleError> {
    let values = crate::host::bind::db::load_values(db)
        .map_err(|e| LifecycleError::Database(e.to_string()))?;
    let kept: Vec<_> = st.sets().iter().map(|s| s.id).collect();
    let lines = state::encode_list(&kept, &values);
    let sets =
        state::decode_list(&lines, st.config.default_set).map_err(LifecycleError::DatabaseNode)?;
    let count: usize = sets.iter().map(|s| s.nodes.len()).sum();
    if count > st.shared.capacity() {
        return Err(LifecycleError::TooManyNodes {
            count,
            capacity: st.shared.capacity(),
        });
    }
    // Nodes the reload keeps (same URL) keep their slot state: health, capabilities and
    // resolved address; their calls stay on them (the call map is keyed by URL).
    let old: Vec<(String, usize)> = st
        .sets()
        .iter()
        .flat_map(|s| s.nodes.iter())
        .map(|n| (n.spec.url.clone(), n.index))
        .collect();
    let new_nodes: Vec<_> = sets.iter().flat_map(|s| s.nodes.iter()).collect();
    let mut keep = vec![None; st.shared.capacity()];
    let mut fresh = Vec::new();
    for n in &new_nodes {
        match old.iter().find(|(url, _)| *url == n.url) {
            Some((_, j)) => keep[n.index] = Some(*j),
            // resolved here, in the MI process, never in a SIP worker
            None => fresh.push((n.index, control::resolve_spec(n))),
        }
    }
    let generation = st.list.publish(&lines, |generation| {
        st.shared.hand_over(generation, &keep);
        for (i, addr) in &fresh {
            if let (Some(slot), Some(addr)) = (st.shared.get(*i), addr) {
                slot.set_address(*addr);
            }
        }
    })?;
    st.replace(state::Topology::new(generation, &sets));
    crate::host::runtime::stats::attach_nodes(st);
    Ok(count)
}

/// Per-process init of the MI command `rtpproxy_reload`.
pub(crate) unsafe extern "C" fn mi_child_init() -> c_int {
    guard::call("mi_child_init", -1, || 0)
}

/// Body of the notification listener process (`procs`, only when `rtpp_notify_socket` is set).
pub(crate) unsafe extern "C" fn notify_process(no: c_int) {
    guard::call("notification listener", (), || {
        crate::host::features::dialog::notify_process(no)
    })
}

/// Whether this process is the notification process. Set in the main process just before that
/// process is forked and cleared right after, so only the forked process keeps it, from its
/// first instruction on (before any module's `child_init` runs in it).
static IS_NOTIFY_PROCESS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `pre_fork_function` of the notification process (main process, before the fork).
pub(crate) unsafe extern "C" fn notify_pre_fork() -> c_int {
    IS_NOTIFY_PROCESS.store(true, std::sync::atomic::Ordering::Relaxed);
    0
}

/// `post_fork_function` of the notification process (main process, after the fork).
pub(crate) unsafe extern "C" fn notify_post_fork() -> c_int {
    IS_NOTIFY_PROCESS.store(false, std::sync::atomic::Ordering::Relaxed);
    0
}

/// 4.0's `int rtpproxy_is_nproc(enum inp_op op)` API: 1 in the notification process, else 0.
/// The rtp.io module asks it in every process's `child_init` to decide whether to keep its
/// notification client socket. `NPROC_SET` (1), which the C module uses on itself, changes
/// nothing here: the answer is fixed at fork time.
#[cfg(opensips_4)]
pub(crate) unsafe extern "C" fn rtpproxy_is_nproc(_op: c_int) -> c_int {
    c_int::from(IS_NOTIFY_PROCESS.load(std::sync::atomic::Ordering::Relaxed))
}

/// Body of the prober process (`procs`); OpenSIPS exits the process if it returns.
pub(crate) unsafe extern "C" fn prober_process(_no: c_int) {
    guard::call("prober", (), control::run_prober)
}

/// Modparam dependency of `db_url`: an SQL database module, as the core's
/// `get_deps_sqldb_url` declares it for function-style parameters (`DEP_WARN`).
pub(crate) unsafe extern "C" fn get_deps_db_url(
    _param: *const sys::param_export_t,
) -> *mut sys::module_dependency_t {
    guard::call("get_deps_db_url", std::ptr::null_mut(), || {
        let size = 2 * std::mem::size_of::<sys::module_dependency_t>();
        let p = crate::host::ffi::mem::pkg_malloc(size).cast::<sys::module_dependency_t>();
        if p.is_null() {
            return p;
        }
        // SAFETY: `p` is a fresh pkg block for two entries; the core frees it with pkg_free.
        unsafe {
            std::ptr::write_bytes(p.cast::<u8>(), 0, size);
            (*p).mod_type = sys::module_type_MOD_TYPE_SQLDB;
            (*p).type_ = sys::DEP_WARN;
        }
        p
    })
}
