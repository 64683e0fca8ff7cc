//! Every script function and every modparam, each declared once: the declaration makes the row
//! OpenSIPS reads (`cmd_export_t` / `param_export_t`) and the guarded `extern "C"` shell it
//! calls, so a name, its parameter kinds and its body cannot drift apart.

use std::ffi::{c_char, c_int, c_void};

use crate::core::media::PromptTarget;
use crate::core::offer::Direction;
use crate::host::bind::msg::Msg;
use crate::host::bind::params::kind::{Int, OptInt, OptStr, OptVar, Since4, Str, Var};
pub(crate) use crate::host::bind::params::END;
use crate::host::bind::params::{self, Decoder, Param, Params};
use crate::host::features::{aio, dialog, functions, media};
use crate::host::ffi::guard;
use crate::host::ffi::sys::{self, cmd_param, sip_msg};

/// The AVP parameter of `rtpproxy_all_stats` (a variable, checked at start-up).
struct StatsAvp;

impl Param for StatsAvp {
    const SPEC: Option<cmd_param> = Some(cmd_param {
        flags: sys::CMD_PARAM_VAR as i32,
        fixup: Some(media::fixup_stats_avp),
        free_fixup: None,
    });
    type Value<'a> = params::Var<'a>;
    unsafe fn decode<'a>(msg: *mut sip_msg, p: *mut c_void) -> Self::Value<'a> {
        // SAFETY: per the contract.
        unsafe { Var::decode(msg, p) }
    }
}

const R_REQ: i32 = sys::REQUEST_ROUTE as i32;
const R_FAIL: i32 = sys::FAILURE_ROUTE as i32;
const R_REPLY: i32 = sys::ONREPLY_ROUTE as i32;
const R_BRANCH: i32 = sys::BRANCH_ROUTE as i32;
const R_LOCAL: i32 = sys::LOCAL_ROUTE as i32;
const R_ALL5: i32 = R_REQ | R_REPLY | R_FAIL | R_BRANCH | R_LOCAL;

/// A C string literal from a Rust one.
macro_rules! c_name {
    ($name:literal) => {
        concat!($name, "\0").as_ptr().cast::<c_char>()
    };
}

/// The body call of one shell: typed (the message, then each declared parameter decoded by
/// its kind, then the constant arguments written after the body, if any) or `@raw` (the host's first pointer as it is, for the API export).
macro_rules! script_body {
    ($msg:ident, $raw:ident, ($($arg:ident: $kind:ty),*), @raw $body:path) => {{
        let _ = &$raw;
        // SAFETY: `$msg` is exactly what the caller passed (see the body's contract).
        unsafe { $body($msg) }
    }};
    ($msg:ident, $raw:ident, ($($arg:ident: $kind:ty),*), $body:path $(, $extra:expr)*) => {{
        let mut _d = Decoder::new($msg, &$raw);
        // SAFETY: the kinds are decoded in the order of the row exported for this function,
        // from what OpenSIPS passed for this call.
        $(let $arg = unsafe { _d.next::<$kind>() };)*
        // SAFETY: `$msg` is the message of this call (NULL and the FAKED_REPLY marker give
        // `None`); the borrow ends with the call.
        let m = unsafe { Msg::from_ptr($msg) };
        $body(m.as_ref(), $($arg,)* $($extra),*)
    }};
}

/// `name => shell(body), (param: Kind, ...), routes;` declares one script function:
/// its `cmd_export_t` row in [`CMD_ROWS`] (built from the kinds) and its shell, which decodes
/// the parameters into the kinds' typed values, runs `body(msg, params...)` under the guard
/// and maps the result to the script code. The async functions of the same names copy
/// these rows (`ACMD_ROWS`).
macro_rules! script_functions {
    ($($name:literal => $shell:ident($($body:tt)*), ($($arg:ident: $kind:ty),* $(,)?),
        $routes:expr;)*) => {
        $(
            #[doc = concat!("Script function `", $name, "`.")]
            pub(crate) unsafe extern "C" fn $shell(
                msg: *mut sys::sip_msg,
                p1: *mut c_void, p2: *mut c_void, p3: *mut c_void, p4: *mut c_void,
                p5: *mut c_void, p6: *mut c_void, p7: *mut c_void, p8: *mut c_void,
            ) -> c_int {
                guard::call($name, -1, || {
                    let raw: Params = [p1, p2, p3, p4, p5, p6, p7, p8];
                    let r = script_body!(msg, raw, ($($arg: $kind),*), $($body)*);
                    guard::script_code($name, r)
                })
            }
        )*
        /// The script functions' rows, in declaration order (no terminator).
        pub(crate) const CMD_ROWS: [sys::cmd_export_t; [$($name),*].len()] = [$(
            sys::cmd_export_ {
                name: c_name!($name),
                function: Some($shell),
                params: params::row([$(<$kind as Param>::SPEC),*]),
                flags: $routes,
            }
        ),*];
    };
}

// In the C module's order (plus `rtpproxy_stop_recording`, our addition, after its functions).
script_functions! {
    "rtpproxy_unforce" => rtpproxy_unforce_f(functions::unforce),
        (set: OptInt, sock_var: OptVar), R_ALL5;
    "rtpproxy_engage" => rtpproxy_engage_f(dialog::engage),
        (flags: OptStr, ip: OptStr, set: OptInt, sock_var: OptVar, ret_var: OptVar), R_ALL5;
    "rtpproxy_start_recording" => rtpproxy_start_recording_f(media::start_recording),
        (set: OptInt, sock_var: OptVar, flags: OptStr, destination: OptStr, mediastream: OptInt),
        R_REQ | R_REPLY | R_BRANCH | R_FAIL;
    // 4.0 adds a 7th, `bind_local` (a variable, sent as `l<value>` in the U/L command).
    "rtpproxy_offer" => rtpproxy_offer_f(functions::offer_answer_script, Direction::Offer),
        (flags: OptStr, ip: OptStr, set: OptInt, sock_var: OptVar, ret_var: OptVar,
         body_var: OptVar, bind_local: Since4<OptVar>), R_ALL5;
    "rtpproxy_answer" => rtpproxy_answer_f(functions::offer_answer_script, Direction::Answer),
        (flags: OptStr, ip: OptStr, set: OptInt, sock_var: OptVar, ret_var: OptVar,
         body_var: OptVar, bind_local: Since4<OptVar>), R_ALL5;
    "rtpproxy_stream2uac" => rtpproxy_stream2uac_f(media::stream, PromptTarget::Uac),
        (prompt: Str, count: Int, set: OptInt, sock_var: OptVar), R_REQ | R_REPLY | R_LOCAL;
    "rtpproxy_stream2uas" => rtpproxy_stream2uas_f(media::stream, PromptTarget::Uas),
        (prompt: Str, count: Int, set: OptInt, sock_var: OptVar), R_REQ | R_REPLY | R_LOCAL;
    "rtpproxy_stop_stream2uac" => rtpproxy_stop_stream2uac_f(media::stop_stream, PromptTarget::Uac),
        (set: OptInt, sock_var: OptVar), R_REQ | R_REPLY | R_LOCAL;
    "rtpproxy_stop_stream2uas" => rtpproxy_stop_stream2uas_f(media::stop_stream, PromptTarget::Uas),
        (set: OptInt, sock_var: OptVar), R_REQ | R_REPLY | R_LOCAL;
    "rtpproxy_stats" => rtpproxy_stats_f(media::stats),
        (up: Var, down: Var, sent: Var, fail: Var, set: OptInt, sock_var: OptVar), R_ALL5;
    "rtpproxy_all_stats" => rtpproxy_all_stats_f(media::all_stats),
        (stats_avp: StatsAvp, set: OptInt, sock_var: OptVar), R_ALL5;
    "rtpproxy_stop_recording" => rtpproxy_stop_recording_f(media::stop_recording),
        (set: OptInt, sock_var: OptVar, mediastream: OptInt), R_REQ | R_REPLY | R_BRANCH | R_FAIL;
    // The API export other modules look up (flags 0: never called from a script); the host's
    // first pointer is the caller's binds structure, not a message.
    "load_rtpproxy" => load_rtpproxy_f(@raw media::load_rtpproxy), (), 0;
}

/// `name: KIND => setter;` declares one modparam: its `param_export_t` row in
/// [`PARAM_ROWS`] (always `USE_FUNC_PARAM`, so OpenSIPS never writes into our memory) and its
/// setter, which validates the value at once (`entry::set_modparam`).
macro_rules! modparams {
    ($($name:literal: $ty:ident => $setter:ident;)*) => {
        $(
            #[doc = concat!("`USE_FUNC_PARAM` setter of `modparam(\"rtpproxy\", \"", $name, "\", …)`.")]
            pub(crate) unsafe extern "C" fn $setter(ty: sys::modparam_t, val: *mut c_void) -> c_int {
                // SAFETY: OpenSIPS calls this with the value layout `set_modparam` documents.
                guard::call(concat!("modparam ", $name), -1, || unsafe {
                    super::entry::set_modparam($name, ty, val)
                })
            }
        )*
        /// The modparams' rows, in declaration order (no terminator).
        pub(crate) const PARAM_ROWS: [sys::param_export_t; [$($name),*].len()] = [$(
            sys::param_export_ {
                name: c_name!($name),
                type_: sys::$ty | sys::USE_FUNC_PARAM,
                param_pointer: $setter as *mut c_void,
            }
        ),*];
    };
}

// The C module's 15, then ours.
modparams! {
    "nortpproxy_str": STR_PARAM => mp_nortpproxy_str;
    "rtpproxy_sock": STR_PARAM => mp_rtpproxy_sock;
    "rtpproxy_disable_tout": INT_PARAM => mp_rtpproxy_disable_tout;
    "rtpproxy_retr": INT_PARAM => mp_rtpproxy_retr;
    "rtpproxy_timeout": STR_PARAM => mp_rtpproxy_timeout;
    "rtpproxy_autobridge": INT_PARAM => mp_rtpproxy_autobridge;
    "default_set": INT_PARAM => mp_default_set;
    "db_url": STR_PARAM => mp_db_url;
    "db_table": STR_PARAM => mp_db_table;
    "rtpp_socket_col": STR_PARAM => mp_rtpp_socket_col;
    "set_id_col": STR_PARAM => mp_set_id_col;
    "rtpp_notify_socket": STR_PARAM => mp_rtpp_notify_socket;
    "generated_sdp_port_min": INT_PARAM => mp_generated_sdp_port_min;
    "generated_sdp_port_max": INT_PARAM => mp_generated_sdp_port_max;
    "generated_sdp_media_ip": STR_PARAM => mp_generated_sdp_media_ip;
    "call_map_size": INT_PARAM => mp_call_map_size;
}

/// Whether two NUL-terminated names are equal (for the rows below, at compile time).
const fn same_name(a: *const c_char, b: &std::ffi::CStr) -> bool {
    let b = b.to_bytes_with_nul();
    let mut i = 0;
    while i < b.len() {
        // SAFETY: `a` is a row's name, a NUL-terminated literal; we stop at its NUL (or
        // earlier, at the first difference).
        if unsafe { *a.add(i) } as u8 != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// An async script function's row: the name and parameters of the blocking function of the
/// same name in [`CMD_ROWS`] (declared once, there); the body is one of `features::aio`'s
/// (they run the command without holding the worker).
const fn acmd(name: &'static std::ffi::CStr, f: aio::AsyncFn) -> sys::acmd_export_t {
    let mut i = 0;
    while i < CMD_ROWS.len() {
        if same_name(CMD_ROWS[i].name, name) {
            return sys::acmd_export_ {
                name: name.as_ptr(),
                function: f as *mut c_void,
                params: CMD_ROWS[i].params,
            };
        }
        i += 1;
    }
    panic!("an async function without a blocking one of the same name");
}

/// The async script functions' rows (`async()`/`launch()`), no terminator.
pub(crate) const ACMD_ROWS: [sys::acmd_export_t; 10] = [
    acmd(c"rtpproxy_unforce", aio::rtpproxy_unforce_af),
    acmd(c"rtpproxy_offer", aio::rtpproxy_offer_af),
    acmd(c"rtpproxy_answer", aio::rtpproxy_answer_af),
    acmd(c"rtpproxy_stream2uac", aio::rtpproxy_stream2uac_af),
    acmd(c"rtpproxy_stream2uas", aio::rtpproxy_stream2uas_af),
    acmd(
        c"rtpproxy_stop_stream2uac",
        aio::rtpproxy_stop_stream2uac_af,
    ),
    acmd(
        c"rtpproxy_stop_stream2uas",
        aio::rtpproxy_stop_stream2uas_af,
    ),
    acmd(
        c"rtpproxy_start_recording",
        aio::rtpproxy_start_recording_af,
    ),
    acmd(c"rtpproxy_stop_recording", aio::rtpproxy_stop_recording_af),
    acmd(c"rtpproxy_stats", aio::rtpproxy_stats_af),
];
