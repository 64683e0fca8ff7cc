//! The OpenSIPS core symbols this module uses, resolved by name from the running core.
//!
//! OpenSIPS links its binary with `-Wl,-E`, so every core function and global is in its dynamic
//! symbol table (ABI spec §0). Resolving them with `dlsym` when the module loads, instead of
//! leaving undefined references for `dlopen` to fill, gives the same result inside OpenSIPS and
//! lets test binaries, which have no core, link the same code. Signatures follow ABI spec §4.

use std::ffi::{c_char, c_int, c_long, c_uint, c_void, CStr};
use std::sync::OnceLock;

use crate::error::HostError;

use super::sys::{
    db_func_t, evi_params_t, gen_free_f, gen_info_f, gen_malloc_f, host_str, mi_item_t,
    mi_params_t, mi_response_t, module_stats, pv_spec_t, pv_value_t, scm_version, sip_msg,
    stat_var,
};

/// The core's `int_str` (`union { int n; str s; }`), passed by value to the AVP functions.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) union IntStr {
    pub(crate) n: c_int,
    pub(crate) s: host_str,
}

type Dprint = unsafe extern "C" fn(
    c_int,
    c_int,
    *const c_char,
    *const c_char,
    *mut c_char,
    *mut c_char,
    *mut c_char,
    ...
);

macro_rules! core_api {
    (
        fns { $($f:ident : $t:ty,)* }
        vars { $($v:ident : $vt:ty,)* }
    ) => {
        /// Entry points and variable addresses of the running OpenSIPS core.
        pub(crate) struct Api {
            $(pub(crate) $f: $t,)*
            $(pub(crate) $v: *mut $vt,)*
        }

        impl Api {
            fn resolve() -> Result<Self, HostError> {
                Ok(Self {
                    $($f: {
                        let p = symbol(concat!(stringify!($f), "\0"))?;
                        // SAFETY: the core exports a function of this name with exactly this
                        // signature (ABI spec §4); a data pointer and a function pointer have
                        // the same size and representation on the supported platform.
                        unsafe { std::mem::transmute::<*mut c_void, $t>(p) }
                    },)*
                    $($v: symbol(concat!(stringify!($v), "\0"))?.cast::<$vt>(),)*
                })
            }
        }
    };
}

core_api! {
    fns {
        dprint: Dprint,
        dp_my_pid: unsafe extern "C" fn() -> c_int,
        get_ticks: unsafe extern "C" fn() -> c_uint,
        find_export: unsafe extern "C" fn(*const c_char, c_int) -> *mut c_void,
        shm_event_raise: unsafe extern "C" fn(c_long, c_long, c_long),
        init_mi_result_array: unsafe extern "C" fn(*mut *mut mi_item_t) -> *mut mi_response_t,
        init_mi_result_object: unsafe extern "C" fn(*mut *mut mi_item_t) -> *mut mi_response_t,
        init_mi_result_string: unsafe extern "C" fn(*const c_char, c_int) -> *mut mi_response_t,
        init_mi_error_extra: unsafe extern "C" fn(
            c_int, *const c_char, c_int, *const c_char, c_int) -> *mut mi_response_t,
        init_mi_param_error: unsafe extern "C" fn() -> *mut mi_response_t,
        free_mi_response: unsafe extern "C" fn(*mut mi_response_t),
        add_mi_array: unsafe extern "C" fn(*mut mi_item_t, *mut c_char, c_int) -> *mut mi_item_t,
        add_mi_object: unsafe extern "C" fn(*mut mi_item_t, *mut c_char, c_int) -> *mut mi_item_t,
        add_mi_string: unsafe extern "C" fn(
            *mut mi_item_t, *mut c_char, c_int, *const c_char, c_int) -> c_int,
        add_mi_number: unsafe extern "C" fn(*mut mi_item_t, *mut c_char, c_int, f64) -> c_int,
        get_mi_string_param: unsafe extern "C" fn(
            *const mi_params_t, *mut c_char, *mut *mut c_char, *mut c_int) -> c_int,
        get_mi_int_param: unsafe extern "C" fn(*const mi_params_t, *mut c_char, *mut c_int) -> c_int,
        evi_publish_event: unsafe extern "C" fn(host_str) -> c_int,
        evi_probe_event: unsafe extern "C" fn(c_int) -> c_int,
        evi_get_params: unsafe extern "C" fn() -> *mut evi_params_t,
        evi_param_add: unsafe extern "C" fn(
            *mut evi_params_t, *const host_str, *const c_void, c_int) -> c_int,
        evi_raise_event: unsafe extern "C" fn(c_int, *mut evi_params_t) -> c_int,
        evi_free_params: unsafe extern "C" fn(*mut evi_params_t),
        parse_headers_aux: unsafe extern "C" fn(*mut sip_msg, u64, c_int, c_int) -> c_int,
        parse_from_header: unsafe extern "C" fn(*mut sip_msg) -> c_int,
        parse_sip_body: unsafe extern "C" fn(*mut sip_msg) -> c_int,
        del_lump: unsafe extern "C" fn(*mut sip_msg, c_uint, c_uint, c_int) -> *mut c_void,
        anchor_lump: unsafe extern "C" fn(*mut sip_msg, c_uint, c_int) -> *mut c_void,
        insert_new_lump_after: unsafe extern "C" fn(*mut c_void, *mut c_char, c_uint, c_int) -> *mut c_void,
        db_bind_mod: unsafe extern "C" fn(*const host_str, *mut db_func_t) -> c_int,
        pv_get_spec_value: unsafe extern "C" fn(*mut sip_msg, *mut pv_spec_t, *mut pv_value_t) -> c_int,
        pv_set_value: unsafe extern "C" fn(*mut sip_msg, *mut pv_spec_t, c_int, *mut pv_value_t) -> c_int,
        pv_parse_spec: unsafe extern "C" fn(*const host_str, *mut pv_spec_t) -> *mut c_char,
        ipc_handle_job: unsafe extern "C" fn(c_int),
        pv_get_avp_name: unsafe extern "C" fn(*mut sip_msg, *mut c_void, *mut c_int, *mut u16) -> c_int,
        search_first_avp: unsafe extern "C" fn(u16, c_int, *mut IntStr, *mut c_void) -> *mut c_void,
        destroy_avp: unsafe extern "C" fn(*mut c_void),
        add_avp_last: unsafe extern "C" fn(u16, c_int, IntStr) -> c_int,
        bin_push_str: unsafe extern "C" fn(*mut c_void, *const host_str) -> c_int,
        bin_push_int: unsafe extern "C" fn(*mut c_void, c_int) -> c_int,
        bin_pop_str: unsafe extern "C" fn(*mut c_void, *mut host_str) -> c_int,
        bin_pop_int: unsafe extern "C" fn(*mut c_void, *mut c_void) -> c_int,
        msg_callback_add: unsafe extern "C" fn(
            *mut sip_msg, c_int, unsafe extern "C" fn(*mut sip_msg, c_int, *mut c_void, *mut c_void),
            *mut c_void) -> c_int,
        register_stat2: unsafe extern "C" fn(
            *const c_char, *mut c_char, *mut *mut stat_var, u16, *mut c_void, c_int) -> c_int,
        add_stat_module: unsafe extern "C" fn(*mut c_char) -> *mut module_stats,
        update_sock_struct_from_via: unsafe extern "C" fn(*mut c_void, *mut sip_msg, *mut c_void) -> c_int,
    }
    vars {
        log_level: *mut c_int,
        log_facility: c_int,
        log_prefix: *mut c_char,
        core_scm_ver: scm_version,
        gen_pkg_malloc: gen_malloc_f,
        gen_pkg_free: gen_free_f,
        mem_block: *mut c_void,
        gen_shm_malloc: gen_malloc_f,
        gen_shm_free: gen_free_f,
        gen_shm_get_rused: gen_info_f,
        gen_shm_get_size: gen_info_f,
        shm_block: *mut c_void,
        mem_lock: *mut c_int,
        shm_use_global_lock: c_int,
        event_shm_threshold: c_long,
        event_shm_last: *mut c_long,
        event_shm_pending: *mut c_int,
        process_no: c_int,
        route_type: c_int,
        async_status: c_int,
        pt: *mut u8,
    }
}

// SAFETY: the table only holds addresses inside the core binary, fixed for the process life.
unsafe impl Send for Api {}
// SAFETY: as above; reading the addresses from several threads is harmless.
unsafe impl Sync for Api {}

/// The address of core symbol `name` (NUL-terminated).
fn symbol(name: &'static str) -> Result<*mut c_void, HostError> {
    let bare = name.strip_suffix('\0').unwrap_or(name);
    let c =
        CStr::from_bytes_with_nul(name.as_bytes()).map_err(|_| HostError::MissingSymbol(bare))?;
    // SAFETY: `dlsym` on the global namespace with a NUL-terminated name.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c.as_ptr()) };
    if p.is_null() {
        Err(HostError::MissingSymbol(bare))
    } else {
        Ok(p)
    }
}

static API: OnceLock<Result<Api, HostError>> = OnceLock::new();

/// The core API, or why it is unavailable (not running inside OpenSIPS).
pub(crate) fn try_api() -> Result<&'static Api, &'static HostError> {
    API.get_or_init(Api::resolve).as_ref()
}

/// The core API. Inside OpenSIPS every symbol exists (checked at the first modparam), so a
/// failure here is a bug; it panics, and the entry point's guard turns that into an error.
pub(crate) fn api() -> &'static Api {
    match try_api() {
        Ok(a) => a,
        Err(e) => panic!("{e}"),
    }
}
