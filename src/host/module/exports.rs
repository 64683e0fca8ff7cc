//! The `exports` table OpenSIPS reads with `dlsym`, and the tables it points to.
//!
//! Names, parameter kinds and allowed routes mirror the C module of the OpenSIPS release built
//! for (3.6.8, ABI spec §2.3; with `opensips_4`, 4.0.1's additions and MI names) so that every
//! existing script passes `opensips -c` unchanged. Nothing else lives here.

use std::ffi::{c_char, c_int, CStr};

use super::{entry, script};
use crate::host::features::mi_ops;
use crate::host::ffi::sys::{self, mi_recipe_t};

/// `Sync` wrapper for host tables made of raw pointers to static data.
#[repr(transparent)]
pub(crate) struct HostTable<T>(pub(crate) T);
// SAFETY: the tables are immutable after compilation and only hold pointers to other statics
// (string literals, functions, tables); sharing them between threads is harmless.
unsafe impl<T> Sync for HostTable<T> {}

const fn cname(s: &'static CStr) -> *const c_char {
    s.as_ptr()
}

/// Concatenates `head` and `tail` into a table of `K` rows; the rows left over are `end`
/// (the terminator).
const fn rows<T: Copy, const N: usize, const M: usize, const K: usize>(
    head: [T; N],
    tail: [T; M],
    end: T,
) -> [T; K] {
    let mut out = [end; K];
    let mut i = 0;
    while i < N {
        out[i] = head[i];
        i += 1;
    }
    while i < N + M {
        out[i] = tail[i - N];
        i += 1;
    }
    out
}

/// API exports other modules look up by name: 4.0's `int rtpproxy_is_nproc(enum inp_op)`,
/// used by the rtp.io module.
#[cfg(opensips_4)]
const API_ROWS: [sys::cmd_export_t; 1] = [sys::cmd_export_ {
    name: cname(c"rtpproxy_is_nproc"),
    // SAFETY: OpenSIPS never calls an API export (flags 0) as a script function; users
    // (rtp.io) cast it back to `int (*)(enum inp_op)`, its real type.
    function: Some(unsafe {
        std::mem::transmute::<unsafe extern "C" fn(i32) -> i32, CmdFn>(entry::rtpproxy_is_nproc)
    }),
    params: crate::host::bind::params::row([]),
    flags: 0,
}];
#[cfg(not(opensips_4))]
const API_ROWS: [sys::cmd_export_t; 0] = [];

const CMD_END: sys::cmd_export_t = sys::cmd_export_ {
    name: std::ptr::null(),
    function: None,
    params: [script::END; sys::MAX_CMD_PARAMS as usize + 1],
    flags: 0,
};

/// Script functions (declared in [`script`]), the API exports, the terminator.
pub(crate) static CMDS: HostTable<
    [sys::cmd_export_t; script::CMD_ROWS.len() + API_ROWS.len() + 1],
> = HostTable(rows(script::CMD_ROWS, API_ROWS, CMD_END));

const PARAM_END: sys::param_export_t = sys::param_export_ {
    name: std::ptr::null(),
    type_: 0,
    param_pointer: std::ptr::null_mut(),
};

const ACMD_END: sys::acmd_export_t = sys::acmd_export_ {
    name: std::ptr::null(),
    function: std::ptr::null_mut(),
    params: [script::END; sys::MAX_CMD_PARAMS as usize + 1],
};

/// Async script functions (`async()`/`launch()`, declared in [`script`]), the terminator.
pub(crate) static ACMDS: HostTable<[sys::acmd_export_t; script::ACMD_ROWS.len() + 1]> =
    HostTable(rows(script::ACMD_ROWS, [], ACMD_END));

/// The modparams (declared in [`script`]), then the terminator.
pub(crate) static PARAMS: HostTable<[sys::param_export_t; script::PARAM_ROWS.len() + 1]> =
    HostTable(rows(script::PARAM_ROWS, [], PARAM_END));

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

/// `init_f`: the module's `mod_init`, which then selects the process table.
unsafe extern "C" fn mod_init() -> c_int {
    entry::mod_init(use_notify_process)
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
    init_f: Some(mod_init),
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
        let Ok(api) = crate::host::ffi::api::try_api() else {
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

    /// The rows as the tables stood before they were generated from one declaration per
    /// function and modparam: names, parameter kinds, fixups and route masks, in order.
    #[test]
    fn generated_rows_match_the_previous_tables() {
        const I: u32 = sys::CMD_PARAM_INT;
        const S: u32 = sys::CMD_PARAM_STR;
        const V: u32 = sys::CMD_PARAM_VAR;
        const O: u32 = sys::CMD_PARAM_OPT;
        const REQ: u32 = sys::REQUEST_ROUTE;
        const ALL5: u32 =
            REQ | sys::ONREPLY_ROUTE | sys::FAILURE_ROUTE | sys::BRANCH_ROUTE | sys::LOCAL_ROUTE;
        const REC: u32 = REQ | sys::ONREPLY_ROUTE | sys::BRANCH_ROUTE | sys::FAILURE_ROUTE;
        const MEDIA: u32 = REQ | sys::ONREPLY_ROUTE | sys::LOCAL_ROUTE;
        let oa: &[u32] = if cfg!(opensips_4) {
            &[S | O, S | O, I | O, V | O, V | O, V | O, V | O]
        } else {
            &[S | O, S | O, I | O, V | O, V | O, V | O]
        };
        let mut want: Vec<(&str, &[u32], u32)> = vec![
            ("rtpproxy_unforce", &[I | O, V | O], ALL5),
            (
                "rtpproxy_engage",
                &[S | O, S | O, I | O, V | O, V | O],
                ALL5,
            ),
            (
                "rtpproxy_start_recording",
                &[I | O, V | O, S | O, S | O, I | O],
                REC,
            ),
            ("rtpproxy_offer", oa, ALL5),
            ("rtpproxy_answer", oa, ALL5),
            ("rtpproxy_stream2uac", &[S, I, I | O, V | O], MEDIA),
            ("rtpproxy_stream2uas", &[S, I, I | O, V | O], MEDIA),
            ("rtpproxy_stop_stream2uac", &[I | O, V | O], MEDIA),
            ("rtpproxy_stop_stream2uas", &[I | O, V | O], MEDIA),
            ("rtpproxy_stats", &[V, V, V, V, I | O, V | O], ALL5),
            ("rtpproxy_all_stats", &[V, I | O, V | O], ALL5),
            ("rtpproxy_stop_recording", &[I | O, V | O, I | O], REC),
            ("load_rtpproxy", &[], 0),
        ];
        if cfg!(opensips_4) {
            want.push(("rtpproxy_is_nproc", &[], 0));
        }
        let got: Vec<(&str, Vec<u32>, u32)> = CMDS
            .0
            .iter()
            .take_while(|c| !c.name.is_null())
            .map(|c| {
                let kinds = c.params.iter().take_while(|p| p.flags != 0);
                let kinds = kinds.map(|p| p.flags as u32).collect();
                (name(c.name), kinds, c.flags as u32)
            })
            .collect();
        let want: Vec<(&str, Vec<u32>, u32)> = want
            .into_iter()
            .map(|(n, p, r)| (n, p.to_vec(), r))
            .collect();
        assert_eq!(got, want);
        assert_eq!(CMDS.0.len(), got.len() + 1, "one terminator");
        assert!(CMDS
            .0
            .iter()
            .all(|c| c.name.is_null() || c.function.is_some()));
        let with_fixup: Vec<&str> = CMDS
            .0
            .iter()
            .take_while(|c| !c.name.is_null())
            .filter(|c| c.params.iter().any(|p| p.fixup.is_some()))
            .map(|c| name(c.name))
            .collect();
        assert_eq!(with_fixup, ["rtpproxy_all_stats"]);
        assert!(cmd("rtpproxy_all_stats").unwrap().params[0].fixup.is_some());

        let (st, int) = (sys::STR_PARAM, sys::INT_PARAM);
        let want = [
            ("nortpproxy_str", st),
            ("rtpproxy_sock", st),
            ("rtpproxy_disable_tout", int),
            ("rtpproxy_retr", int),
            ("rtpproxy_timeout", st),
            ("rtpproxy_autobridge", int),
            ("default_set", int),
            ("db_url", st),
            ("db_table", st),
            ("rtpp_socket_col", st),
            ("set_id_col", st),
            ("rtpp_notify_socket", st),
            ("generated_sdp_port_min", int),
            ("generated_sdp_port_max", int),
            ("generated_sdp_media_ip", st),
            ("call_map_size", int),
        ];
        let got: Vec<(&str, u32)> = PARAMS
            .0
            .iter()
            .take_while(|p| !p.name.is_null())
            .map(|p| (name(p.name), p.type_ & !sys::USE_FUNC_PARAM))
            .collect();
        assert_eq!(got, want);
        assert_eq!(PARAMS.0.len(), want.len() + 1, "one terminator");
        assert!(PARAMS
            .0
            .iter()
            .take_while(|p| !p.name.is_null())
            .all(|p| p.type_ & sys::USE_FUNC_PARAM != 0 && !p.param_pointer.is_null()));
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
