//! Generated bindings of `include/opensips_abi.h`, plus the host signature and the host
//! profile's measured layouts (`probed`) fixed by `build.rs`.
//!
//! Everything here is a plain declaration; the safe wrappers live in the sibling modules.
#![allow(
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    dead_code
)]
#![allow(unreachable_pub, clippy::all, clippy::undocumented_unsafe_blocks)]

include!(concat!(env!("OUT_DIR"), "/opensips_abi.rs"));
include!(concat!(env!("OUT_DIR"), "/host_version.rs"));
include!(concat!(env!("OUT_DIR"), "/host_profile.rs"));

/// Pins the layouts OpenSIPS reads from us to the values measured on the real headers: the
/// fixed ones (the same in every verified release, ABI spec §2, Appendix A) as numbers, the
/// ones that differ between releases against the host profile's probe result (`probed`).
/// A wrong edit of `include/opensips_abi.h` fails here.
#[cfg(test)]
mod layout {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn module_exports_matches_3_6_8() {
        assert_eq!(size_of::<module_exports>(), 184);
        assert_eq!(size_of::<module_exports>(), probed::SIZEOF_MODULE_EXPORTS);
        let offsets = [
            (offset_of!(module_exports, name), 0),
            (offset_of!(module_exports, type_), 8),
            (offset_of!(module_exports, ver_info), 16),
            (offset_of!(module_exports, dlflags), 48),
            (offset_of!(module_exports, load_f), 56),
            (offset_of!(module_exports, deps), 64),
            (offset_of!(module_exports, cmds), 72),
            (offset_of!(module_exports, acmds), 80),
            (offset_of!(module_exports, params), 88),
            (offset_of!(module_exports, stats), 96),
            (offset_of!(module_exports, mi_cmds), 104),
            (offset_of!(module_exports, items), 112),
            (offset_of!(module_exports, trans), 120),
            (offset_of!(module_exports, procs), 128),
            (offset_of!(module_exports, preinit_f), 136),
            (offset_of!(module_exports, init_f), 144),
            (offset_of!(module_exports, response_f), 152),
            (offset_of!(module_exports, destroy_f), 160),
            (offset_of!(module_exports, init_child_f), 168),
            (offset_of!(module_exports, reload_ack_f), 176),
        ];
        for (i, (got, want)) in offsets.iter().enumerate() {
            assert_eq!(got, want, "module_exports field #{i}");
        }
        assert_eq!(size_of::<module_ver_info>(), 32);
    }

    #[test]
    fn statistics_types_match_3_6_8() {
        assert_eq!(size_of::<stat_export_t>(), 24);
        assert_eq!(size_of::<stat_var>(), 64);
        assert_eq!(offset_of!(stat_var, flags), 24);
        assert_eq!(offset_of!(stat_var, context), 32);
        assert_eq!(offset_of!(stat_var, u), 40);
        assert_eq!(offset_of!(module_stats, is_dyn), 20);
        assert_eq!(size_of::<module_stats>(), 40);
    }

    #[test]
    fn export_tables_match_3_6_8() {
        assert_eq!(size_of::<host_str>(), 16);
        assert_eq!(size_of::<cmd_param>(), 24);
        assert_eq!(offset_of!(cmd_param, fixup), 8);
        assert_eq!(offset_of!(cmd_param, free_fixup), 16);
        assert_eq!(size_of::<cmd_export_t>(), 240);
        assert_eq!(offset_of!(cmd_export_t, function), 8);
        assert_eq!(offset_of!(cmd_export_t, params), 16);
        assert_eq!(offset_of!(cmd_export_t, flags), 232);
        assert_eq!(size_of::<acmd_export_t>(), 232);
        assert_eq!(offset_of!(acmd_export_t, function), 8);
        assert_eq!(offset_of!(acmd_export_t, params), 16);
        // async.h: 4.0 inserts `resume_f_name` after `resume_f`
        let named = if cfg!(opensips_4) { 8 } else { 0 };
        assert_eq!(size_of::<async_ctx>(), 32 + named);
        assert_eq!(offset_of!(async_ctx, resume_f), 0);
        assert_eq!(offset_of!(async_ctx, resume_param), 8 + named);
        assert_eq!(offset_of!(async_ctx, timeout_f), 16 + named);
        assert_eq!(offset_of!(async_ctx, timeout_s), 24 + named);
        assert_eq!(size_of::<param_export_t>(), 24);
        assert_eq!(offset_of!(param_export_t, type_), 8);
        assert_eq!(offset_of!(param_export_t, param_pointer), 16);
        assert_eq!(size_of::<mi_recipe_t>(), probed::SIZEOF_MI_RECIPE_T);
        assert_eq!(size_of::<mi_export_t>(), probed::SIZEOF_MI_EXPORT_T);
        assert_eq!(
            offset_of!(mi_export_t, recipes),
            probed::MI_EXPORT_T_RECIPES
        );
        assert_eq!(i64::from(MAX_MI_RECIPES), probed::MAX_MI_RECIPES);
        assert_eq!(i64::from(MAX_CMD_PARAMS), probed::MAX_CMD_PARAMS);
        assert_eq!(size_of::<cmd_export_t>(), probed::SIZEOF_CMD_EXPORT_T);
        assert_eq!(size_of::<proc_export_t>(), probed::SIZEOF_PROC_EXPORT_T);
        assert_eq!(size_of::<param_export_t>(), probed::SIZEOF_PARAM_EXPORT_T);
        assert_eq!(offset_of!(mi_export_t, flags), 16);
        assert_eq!(offset_of!(mi_export_t, init_f), 24);
        assert_eq!(offset_of!(mi_export_t, recipes), 32);
        #[cfg(opensips_4)]
        assert_eq!(
            offset_of!(mi_export_t, aliases),
            probed::MI_EXPORT_T_ALIASES
        );
        assert_eq!(size_of::<mi_params_t>(), 16);
        assert_eq!(size_of::<proc_export_t>(), 40);
        assert_eq!(offset_of!(proc_export_t, function), 24);
        assert_eq!(offset_of!(proc_export_t, no), 32);
        assert_eq!(offset_of!(proc_export_t, flags), 36);
        assert_eq!(size_of::<module_dependency_t>(), 24);
        assert_eq!(size_of::<modparam_dependency_t>(), 16);
        assert_eq!(offset_of!(dep_export_rtpproxy_t, mpd), 240);
        assert_eq!(size_of::<stat_export_t>(), 24);
    }

    #[test]
    fn value_types_match_3_6_8() {
        assert_eq!(size_of::<pv_value_t>(), 24);
        assert_eq!(offset_of!(pv_value_t, ri), 16);
        assert_eq!(offset_of!(pv_value_t, flags), 20);
        assert_eq!(size_of::<pv_spec_t>(), probed::SIZEOF_PV_SPEC_T);
        assert_eq!(offset_of!(pv_spec_t, pvp), probed::PV_SPEC_T_PVP);
        assert_eq!(offset_of!(pv_spec_t, pvc), probed::SIZEOF_PV_SPEC_T - 16);
        assert_eq!(size_of::<scm_version>(), 16);
    }

    #[test]
    fn db_types_match_3_6_8() {
        assert_eq!(size_of::<db_func_t>(), 144);
        assert_eq!(size_of::<db_func_t>(), probed::SIZEOF_DB_FUNC_T);
        assert_eq!(size_of::<db_res_t>(), probed::SIZEOF_DB_RES_T);
        assert_eq!(offset_of!(db_func_t, use_table), 8);
        assert_eq!(offset_of!(db_func_t, init), 16);
        assert_eq!(offset_of!(db_func_t, close), 24);
        assert_eq!(offset_of!(db_func_t, query), 32);
        assert_eq!(offset_of!(db_func_t, free_result), 56);
        assert_eq!(offset_of!(db_func_t, async_timeout), 136);
        assert_eq!(size_of::<db_res_t>(), 48);
        assert_eq!(offset_of!(db_res_t, rows), 24);
        assert_eq!(offset_of!(db_res_t, n), 32);
        assert_eq!(size_of::<db_row_t>(), 16);
        assert_eq!(size_of::<db_val_t>(), 32);
        assert_eq!(offset_of!(db_val_t, val), 16);
    }
}
