//! The `exports` table OpenSIPS reads with `dlsym`, and the tables it points to.
//!
//! Names, parameter kinds and allowed routes mirror the C module of the OpenSIPS release built
//! for (3.6.8, ABI spec §2.3; with `opensips_4`, 4.0.1's additions and MI names) so that every
//! existing script passes `opensips -c` unchanged. Nothing else lives here.

use std::ffi::{c_char, CStr};

use super::sys::{self, cmd_param, mi_recipe_t};
use super::{entry, mi_ops};

/// `Sync` wrapper for host tables made of raw pointers to static data.
#[repr(transparent)]
pub(crate) struct HostTable<T>(pub(crate) T);
// SAFETY: the tables are immutable after compilation and only hold pointers to other statics
// (string literals, functions, tables); sharing them between threads is harmless.
unsafe impl<T> Sync for HostTable<T> {}

const fn param(flags: u32) -> cmd_param {
    cmd_param {
        flags: flags as i32,
        fixup: None,
        free_fixup: None,
    }
}

const INT_OPT: cmd_param = param(sys::CMD_PARAM_INT | sys::CMD_PARAM_OPT);
const STR_OPT: cmd_param = param(sys::CMD_PARAM_STR | sys::CMD_PARAM_OPT);
const VAR_OPT: cmd_param = param(sys::CMD_PARAM_VAR | sys::CMD_PARAM_OPT);
const INT: cmd_param = param(sys::CMD_PARAM_INT);
const STR: cmd_param = param(sys::CMD_PARAM_STR);
const VAR: cmd_param = param(sys::CMD_PARAM_VAR);
const END: cmd_param = param(0);
/// The AVP parameter of `rtpproxy_all_stats`, checked at start-up.
const AVP_VAR: cmd_param = cmd_param {
    flags: sys::CMD_PARAM_VAR as i32,
    fixup: Some(super::media::fixup_stats_avp),
    free_fixup: None,
};

/// Pads a parameter list to the host's fixed array, the terminator included.
const fn params<const N: usize>(
    list: [cmd_param; N],
) -> [cmd_param; sys::MAX_CMD_PARAMS as usize + 1] {
    let mut out = [END; sys::MAX_CMD_PARAMS as usize + 1];
    let mut i = 0;
    while i < N {
        out[i] = list[i];
        i += 1;
    }
    out
}

const fn cname(s: &'static CStr) -> *const c_char {
    s.as_ptr()
}

const R_REQ: i32 = sys::REQUEST_ROUTE as i32;
const R_FAIL: i32 = sys::FAILURE_ROUTE as i32;
const R_REPLY: i32 = sys::ONREPLY_ROUTE as i32;
const R_BRANCH: i32 = sys::BRANCH_ROUTE as i32;
const R_LOCAL: i32 = sys::LOCAL_ROUTE as i32;
const R_ALL5: i32 = R_REQ | R_REPLY | R_FAIL | R_BRANCH | R_LOCAL;

macro_rules! cmd {
    ($name:literal, $f:path, [$($p:expr),*], $routes:expr) => {
        cmd!($name, $f, params([$($p),*]), $routes)
    };
    ($name:literal, $f:path, $params:expr, $routes:expr) => {
        sys::cmd_export_ {
            name: cname($name),
            function: Some($f),
            params: $params,
            flags: $routes,
        }
    };
}

/// `rtpproxy_offer`/`rtpproxy_answer`: flags, ip, set, sock_var, ret_var, body_var.
#[cfg(not(opensips_4))]
const OFFER_ANSWER_PARAMS: [cmd_param; sys::MAX_CMD_PARAMS as usize + 1] =
    params([STR_OPT, STR_OPT, INT_OPT, VAR_OPT, VAR_OPT, VAR_OPT]);
/// 4.0 adds a 7th, `bind_local` (a variable, sent as `l<value>` in the U/L command).
#[cfg(opensips_4)]
const OFFER_ANSWER_PARAMS: [cmd_param; sys::MAX_CMD_PARAMS as usize + 1] = params([
    STR_OPT, STR_OPT, INT_OPT, VAR_OPT, VAR_OPT, VAR_OPT, VAR_OPT,
]);

/// Number of script functions (4.0 adds the `rtpproxy_is_nproc` API export).
const N_CMDS: usize = if cfg!(opensips_4) { 15 } else { 14 };

/// Script functions, in the C module's order (plus `rtpproxy_stop_recording`, our addition).
pub(crate) static CMDS: HostTable<[sys::cmd_export_t; N_CMDS]> = HostTable([
    cmd!(
        c"rtpproxy_unforce",
        entry::rtpproxy_unforce_f,
        [INT_OPT, VAR_OPT],
        R_ALL5
    ),
    cmd!(
        c"rtpproxy_engage",
        entry::rtpproxy_engage_f,
        [STR_OPT, STR_OPT, INT_OPT, VAR_OPT, VAR_OPT],
        R_ALL5
    ),
    cmd!(
        c"rtpproxy_start_recording",
        entry::rtpproxy_start_recording_f,
        [INT_OPT, VAR_OPT, STR_OPT, STR_OPT, INT_OPT],
        R_REQ | R_REPLY | R_BRANCH | R_FAIL
    ),
    cmd!(
        c"rtpproxy_offer",
        entry::rtpproxy_offer_f,
        OFFER_ANSWER_PARAMS,
        R_ALL5
    ),
    cmd!(
        c"rtpproxy_answer",
        entry::rtpproxy_answer_f,
        OFFER_ANSWER_PARAMS,
        R_ALL5
    ),
    cmd!(
        c"rtpproxy_stream2uac",
        entry::rtpproxy_stream2uac_f,
        [STR, INT, INT_OPT, VAR_OPT],
        R_REQ | R_REPLY | R_LOCAL
    ),
    cmd!(
        c"rtpproxy_stream2uas",
        entry::rtpproxy_stream2uas_f,
        [STR, INT, INT_OPT, VAR_OPT],
        R_REQ | R_REPLY | R_LOCAL
    ),
    cmd!(
        c"rtpproxy_stop_stream2uac",
        entry::rtpproxy_stop_stream2uac_f,
        [INT_OPT, VAR_OPT],
        R_REQ | R_REPLY | R_LOCAL
    ),
    cmd!(
        c"rtpproxy_stop_stream2uas",
        entry::rtpproxy_stop_stream2uas_f,
        [INT_OPT, VAR_OPT],
        R_REQ | R_REPLY | R_LOCAL
    ),
    cmd!(
        c"rtpproxy_stats",
        entry::rtpproxy_stats_f,
        [VAR, VAR, VAR, VAR, INT_OPT, VAR_OPT],
        R_ALL5
    ),
    cmd!(
        c"rtpproxy_all_stats",
        entry::rtpproxy_all_stats_f,
        [AVP_VAR, INT_OPT, VAR_OPT],
        R_ALL5
    ),
    // Our addition (RTPProxy's N command), after the C module's functions.
    cmd!(
        c"rtpproxy_stop_recording",
        entry::rtpproxy_stop_recording_f,
        [INT_OPT, VAR_OPT, INT_OPT],
        R_REQ | R_REPLY | R_BRANCH | R_FAIL
    ),
    cmd!(c"load_rtpproxy", entry::load_rtpproxy_f, [], 0),
    // 4.0: `int rtpproxy_is_nproc(enum inp_op)`, looked up by the rtp.io module.
    #[cfg(opensips_4)]
    sys::cmd_export_ {
        name: cname(c"rtpproxy_is_nproc"),
        // SAFETY: OpenSIPS never calls an API export (flags 0) as a script function; users
        // (rtp.io) cast it back to `int (*)(enum inp_op)`, its real type.
        function: Some(unsafe {
            std::mem::transmute::<unsafe extern "C" fn(i32) -> i32, CmdFn>(entry::rtpproxy_is_nproc)
        }),
        params: params([]),
        flags: 0,
    },
    sys::cmd_export_ {
        name: std::ptr::null(),
        function: None,
        params: params([]),
        flags: 0,
    },
]);

macro_rules! acmd {
    ($name:literal, $f:path, $params:expr) => {
        sys::acmd_export_ {
            name: cname($name),
            function: $f as *mut std::ffi::c_void,
            params: $params,
        }
    };
}

/// Async script functions (`async()`/`launch()`), with the blocking functions' parameters.
pub(crate) static ACMDS: HostTable<[sys::acmd_export_t; 4]> = HostTable([
    acmd!(
        c"rtpproxy_unforce",
        super::aio::rtpproxy_unforce_af,
        params([INT_OPT, VAR_OPT])
    ),
    acmd!(
        c"rtpproxy_offer",
        super::aio::rtpproxy_offer_af,
        OFFER_ANSWER_PARAMS
    ),
    acmd!(
        c"rtpproxy_answer",
        super::aio::rtpproxy_answer_af,
        OFFER_ANSWER_PARAMS
    ),
    sys::acmd_export_ {
        name: std::ptr::null(),
        function: std::ptr::null_mut(),
        params: params([]),
    },
]);

macro_rules! modparam {
    ($name:literal, $ty:expr, $f:path) => {
        sys::param_export_ {
            name: cname($name),
            type_: $ty | sys::USE_FUNC_PARAM,
            param_pointer: $f as *mut std::ffi::c_void,
        }
    };
}

const P_STR: u32 = sys::STR_PARAM;
const P_INT: u32 = sys::INT_PARAM;

/// The modparams (the C module's 15, then ours). All use `USE_FUNC_PARAM`, so OpenSIPS never writes into our memory.
pub(crate) static PARAMS: HostTable<[sys::param_export_t; 17]> = HostTable([
    modparam!(c"nortpproxy_str", P_STR, entry::mp_nortpproxy_str),
    modparam!(c"rtpproxy_sock", P_STR, entry::mp_rtpproxy_sock),
    modparam!(
        c"rtpproxy_disable_tout",
        P_INT,
        entry::mp_rtpproxy_disable_tout
    ),
    modparam!(c"rtpproxy_retr", P_INT, entry::mp_rtpproxy_retr),
    modparam!(c"rtpproxy_timeout", P_STR, entry::mp_rtpproxy_timeout),
    modparam!(c"rtpproxy_autobridge", P_INT, entry::mp_rtpproxy_autobridge),
    modparam!(c"default_set", P_INT, entry::mp_default_set),
    modparam!(c"db_url", P_STR, entry::mp_db_url),
    modparam!(c"db_table", P_STR, entry::mp_db_table),
    modparam!(c"rtpp_socket_col", P_STR, entry::mp_rtpp_socket_col),
    modparam!(c"set_id_col", P_STR, entry::mp_set_id_col),
    modparam!(c"rtpp_notify_socket", P_STR, entry::mp_rtpp_notify_socket),
    modparam!(
        c"generated_sdp_port_min",
        P_INT,
        entry::mp_generated_sdp_port_min
    ),
    modparam!(
        c"generated_sdp_port_max",
        P_INT,
        entry::mp_generated_sdp_port_max
    ),
    modparam!(
        c"generated_sdp_media_ip",
        P_STR,
        entry::mp_generated_sdp_media_ip
    ),
    modparam!(c"call_map_size", P_INT, entry::mp_call_map_size),
    sys::param_export_ {
        name: std::ptr::null(),
        type_: 0,
        param_pointer: std::ptr::null_mut(),
    },
]);

#[cfg(opensips_4)]
type CmdFn = unsafe extern "C" fn(
    *mut sys::sip_msg,
    *mut std::ffi::c_void,
    *mut std::ffi::c_void,
    *mut std::ffi::c_void,
    *mut std::ffi::c_void,
    *mut std::ffi::c_void,
    *mut std::ffi::c_void,
    *mut std::ffi::c_void,
    *mut std::ffi::c_void,
) -> i32;

const MI_PARAMS: usize = sys::probed::MAX_MI_PARAMS as usize;

const EMPTY_RECIPE: mi_recipe_t = mi_recipe_t {
    cmd: None,
    params: [std::ptr::null_mut(); MI_PARAMS],
};

// SAFETY: an all-zero `mi_export_t` is the host's own terminator (`EMPTY_MI_EXPORT`): NULL
// pointers, no flags, `None` functions.
const EMPTY_MI_EXPORT: sys::mi_export_t = unsafe { std::mem::zeroed() };

type MiHandler =
    unsafe extern "C" fn(*const sys::mi_params_t, *mut sys::mi_handler) -> *mut sys::mi_response_t;

const fn recipe(cmd: MiHandler, names: &[&'static CStr]) -> mi_recipe_t {
    let mut r = mi_recipe_t {
        cmd: Some(cmd),
        params: [std::ptr::null_mut(); MI_PARAMS],
    };
    let mut i = 0;
    while i < names.len() {
        r.params[i] = names[i].as_ptr().cast_mut();
        i += 1;
    }
    r
}

const fn recipes(list: &[mi_recipe_t]) -> [mi_recipe_t; sys::MAX_MI_RECIPES as usize] {
    let mut out = [EMPTY_RECIPE; sys::MAX_MI_RECIPES as usize];
    let mut i = 0;
    while i < list.len() {
        out[i] = list[i];
        i += 1;
    }
    out
}

const fn mi(
    name: &'static CStr,
    init: Option<unsafe extern "C" fn() -> i32>,
    list: &[mi_recipe_t],
) -> sys::mi_export_t {
    #[allow(clippy::needless_update)] // 4.0 adds `aliases` (none, as in the C module)
    sys::mi_export_ {
        name: name.as_ptr().cast_mut(),
        help: std::ptr::null_mut(),
        flags: 0,
        init_f: init,
        recipes: recipes(list),
        ..EMPTY_MI_EXPORT
    }
}

/// MI command names: 3.6 `rtpproxy_show`; 4.0 registers them under the module (`show`, called
/// as `rtpproxy:show`), as its C module does.
const fn mi_name(v3: &'static CStr, v4: &'static CStr) -> &'static CStr {
    if cfg!(opensips_4) {
        v4
    } else {
        v3
    }
}

/// MI commands under the names of the release built for.
pub(crate) static MI_CMDS: HostTable<[sys::mi_export_t; 6]> = HostTable([
    mi(
        mi_name(c"rtpproxy_enable", c"enable"),
        None,
        &[
            recipe(entry::mi_enable_rtp_proxy_1, &[c"url", c"enable"]),
            recipe(entry::mi_enable_rtp_proxy_2, &[c"url", c"enable", c"setid"]),
        ],
    ),
    mi(
        mi_name(c"rtpproxy_show", c"show"),
        None,
        &[
            recipe(entry::mi_show_rtpproxies, &[]),
            recipe(mi_ops::mi_show_detail, &[c"detail"]),
        ],
    ),
    mi(
        mi_name(c"rtpproxy_reload", c"reload"),
        Some(entry::mi_child_init),
        &[recipe(entry::mi_reload_rtpproxies, &[])],
    ),
    // Our additions (issue 12): probe a node now; keep new calls away from a node.
    mi(
        mi_name(c"rtpproxy_ping", c"ping"),
        None,
        &[
            recipe(mi_ops::mi_ping_1, &[c"url"]),
            recipe(mi_ops::mi_ping_2, &[c"url", c"setid"]),
        ],
    ),
    mi(
        mi_name(c"rtpproxy_drain", c"drain"),
        None,
        &[
            recipe(mi_ops::mi_drain_1, &[c"url", c"drain"]),
            recipe(mi_ops::mi_drain_2, &[c"url", c"drain", c"setid"]),
        ],
    ),
    EMPTY_MI_EXPORT,
]);

const fn dep(
    ty: sys::module_type,
    name: Option<&'static CStr>,
    flags: u32,
) -> sys::module_dependency_t {
    sys::module_dependency {
        mod_type: ty,
        mod_name: match name {
            Some(n) => n.as_ptr().cast_mut(),
            None => std::ptr::null_mut(),
        },
        type_: flags,
    }
}

const NO_DEP: sys::module_dependency_t = dep(sys::module_type_MOD_TYPE_NULL, None, 0);

/// Dependencies as the C module declares them: tm is required, dialog is optional,
/// rtp_relay initialises after us, and `db_url` pulls in an SQL module.
pub(crate) static DEPS: HostTable<sys::dep_export_rtpproxy_t> =
    HostTable(sys::dep_export_rtpproxy {
        md: [
            dep(
                sys::module_type_MOD_TYPE_DEFAULT,
                Some(c"tm"),
                sys::DEP_ABORT,
            ),
            dep(
                sys::module_type_MOD_TYPE_DEFAULT,
                Some(c"dialog"),
                sys::DEP_SILENT,
            ),
            dep(
                sys::module_type_MOD_TYPE_DEFAULT,
                Some(c"rtp_relay"),
                sys::DEP_SILENT | sys::DEP_REVERSE,
            ),
            NO_DEP,
            NO_DEP,
            NO_DEP,
            NO_DEP,
            NO_DEP,
            NO_DEP,
            NO_DEP,
        ],
        mpd: [
            sys::modparam_dependency {
                script_param: c"db_url".as_ptr().cast_mut(),
                get_deps_f: Some(entry::get_deps_db_url),
            },
            sys::modparam_dependency {
                script_param: std::ptr::null_mut(),
                get_deps_f: None,
            },
        ],
    });

const fn process(
    name: &'static CStr,
    f: unsafe extern "C" fn(i32),
    flags: u32,
) -> sys::proc_export_t {
    sys::proc_export_ {
        name: cname(name),
        pre_fork_function: None,
        post_fork_function: None,
        function: Some(f),
        no: 1,
        flags,
    }
}

const NO_PROCESS: sys::proc_export_t = sys::proc_export_ {
    name: std::ptr::null(),
    pre_fork_function: None,
    post_fork_function: None,
    function: None,
    no: 0,
    flags: 0,
};

/// The background prober that probes every node once at start-up and re-enables failed
/// nodes, so that no SIP worker ever waits for a recheck.
const PROBER: sys::proc_export_t = process(c"RTPProxy prober", entry::prober_process, 0);

/// Extra processes without a notification socket: the prober only.
pub(crate) static PROCS: HostTable<[sys::proc_export_t; 2]> = HostTable([PROBER, NO_PROCESS]);

/// Extra processes with `rtpp_notify_socket`: the prober and the notification receiver (with
/// child init, IPC and script access, as the C module declares it).
pub(crate) static PROCS_WITH_NOTIFY: HostTable<[sys::proc_export_t; 3]> = HostTable([
    PROBER,
    sys::proc_export_ {
        pre_fork_function: Some(entry::notify_pre_fork),
        post_fork_function: Some(entry::notify_post_fork),
        ..process(
            c"RTPP notification receiver",
            entry::notify_process,
            sys::PROC_FLAG_INITCHILD | sys::PROC_FLAG_HAS_IPC | sys::PROC_FLAG_NEEDS_SCRIPT,
        )
    },
    NO_PROCESS,
]);

/// Selects the process table; `mod_init` calls this before fork, when the config is known.
pub(crate) fn use_notify_process(enabled: bool) {
    let table: *const sys::proc_export_t = if enabled {
        PROCS_WITH_NOTIFY.0.as_ptr()
    } else {
        PROCS.0.as_ptr()
    };
    // SAFETY: `mod_init` runs in the main process before fork, single-threaded; OpenSIPS
    // reads `procs` only after every mod_init has returned (ABI spec §2.1).
    unsafe { exports.procs = table };
}

/// The module descriptor. `ver_info.scm` is overwritten with the core's own values by
/// [`copy_core_scm`] while `dlopen()` runs, before OpenSIPS checks it.
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static mut exports: sys::module_exports = sys::module_exports {
    name: cname(c"rtpproxy"),
    type_: sys::module_type_MOD_TYPE_DEFAULT,
    ver_info: sys::module_ver_info {
        version: sys::OPENSIPS_FULL_VERSION.as_ptr(),
        compile_flags: sys::OPENSIPS_COMPILE_FLAGS.as_ptr(),
        scm: sys::scm_version {
            type_: cname(c"unknown"),
            rev: cname(c""),
        },
    },
    dlflags: 0,
    load_f: None,
    deps: &DEPS.0,
    cmds: &CMDS.0 as *const _ as *const sys::cmd_export_t,
    acmds: &ACMDS.0 as *const _ as *const sys::acmd_export_t,
    params: &PARAMS.0 as *const _ as *const sys::param_export_t,
    stats: std::ptr::null(),
    mi_cmds: &MI_CMDS.0 as *const _ as *const sys::mi_export_t,
    items: std::ptr::null(),
    trans: std::ptr::null(),
    procs: &PROCS.0 as *const _ as *const sys::proc_export_t,
    preinit_f: Some(entry::mod_preinit),
    init_f: Some(entry::mod_init),
    response_f: None,
    destroy_f: Some(entry::mod_destroy),
    init_child_f: Some(entry::child_init),
    reload_ack_f: None,
};

/// Copies the running core's SCM type/revision into `exports` (runs inside `dlopen()`).
///
/// OpenSIPS compares `scm.type` exactly ("unknown" for tarball builds, "git" for checkouts), so
/// the module follows whatever core loads it. The symbol is looked up dynamically so that
/// test binaries, which have no OpenSIPS core, link and run.
extern "C" fn copy_core_scm() {
    // SAFETY: dlsym on the global namespace has no preconditions; `core_scm_ver` is a
    // `const struct scm_version` (two `const char*`) in the core binary when present.
    unsafe {
        let Ok(api) = super::api::try_api() else {
            return;
        };
        let core = &*api.core_scm_ver;
        if !core.type_.is_null() {
            let e = &raw mut exports;
            (*e).ver_info.scm.type_ = core.type_;
            (*e).ver_info.scm.rev = if core.rev.is_null() {
                cname(c"")
            } else {
                core.rev
            };
        }
    }
}

#[used]
#[link_section = ".init_array"]
static COPY_CORE_SCM: extern "C" fn() = copy_core_scm;

#[cfg(test)]
mod tests {
    use super::*;

    fn name(p: *const c_char) -> &'static str {
        // SAFETY: the tables hold pointers to `'static` C string literals.
        unsafe { CStr::from_ptr(p) }.to_str().unwrap()
    }

    fn cmd(n: &str) -> Option<&'static sys::cmd_export_t> {
        CMDS.0
            .iter()
            .take_while(|c| !c.name.is_null())
            .find(|c| name(c.name) == n)
    }

    #[test]
    fn mi_names_are_those_of_the_release_built_for() {
        let names: Vec<&str> = MI_CMDS
            .0
            .iter()
            .take_while(|m| !m.name.is_null())
            .map(|m| name(m.name))
            .collect();
        if cfg!(opensips_4) {
            assert_eq!(names, ["enable", "show", "reload", "ping", "drain"]);
        } else {
            assert_eq!(
                names,
                [
                    "rtpproxy_enable",
                    "rtpproxy_show",
                    "rtpproxy_reload",
                    "rtpproxy_ping",
                    "rtpproxy_drain"
                ]
            );
        }
        assert!(MI_CMDS.0[5].name.is_null() && MI_CMDS.0[5].recipes[0].cmd.is_none());
    }

    #[test]
    fn offer_and_answer_take_the_parameters_of_the_release() {
        let want = if cfg!(opensips_4) { 7 } else { 6 };
        for f in ["rtpproxy_offer", "rtpproxy_answer"] {
            let c = cmd(f).unwrap();
            let n = c.params.iter().take_while(|p| p.flags != 0).count();
            assert_eq!(n, want, "{f}");
        }
        assert_eq!(cmd("rtpproxy_is_nproc").is_some(), cfg!(opensips_4));
    }

    #[test]
    fn only_the_forked_notification_process_is_the_notifier() {
        let p = &PROCS_WITH_NOTIFY.0[1];
        let (pre, post) = (p.pre_fork_function.unwrap(), p.post_fork_function.unwrap());
        // SAFETY: the hooks only store a flag.
        unsafe {
            assert_eq!(pre(), 0);
            #[cfg(opensips_4)]
            assert_eq!(entry::rtpproxy_is_nproc(0), 1);
            assert_eq!(post(), 0);
            #[cfg(opensips_4)]
            assert_eq!(entry::rtpproxy_is_nproc(0), 0);
        }
    }
}
