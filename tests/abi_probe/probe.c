/*
 * Layout probe: compiled against one OpenSIPS release's own headers (with the DEFS its
 * modules are built with, see run.sh) and run; prints, one per line, `size|offset|const NAME VALUE` for
 * every size, offset and constant of the host ABI this module relies on, and `sig <symbol> 1|0`
 * for whether a core/module function still has the signature the module calls it with.
 *
 * The recorded outputs (tests/abi_probe/results/opensips-<release>.txt) are what build.rs
 * builds the module from: releases with identical results share a host profile, and the
 * profile's sizes and offsets become the constants in `sys::probed`.
 */
#include <stddef.h>
#include <stdio.h>
#include <netdb.h>

#include "sr_module.h"
#include "mi/mi.h"
#include "pvar.h"
#include "usr_avp.h"
#include "pt.h"
#include "proxy.h"
#include "ip_addr.h"
#include "lock_ops.h"
#include "data_lump.h"
#include "parser/msg_parser.h"
#include "parser/parse_to.h"
#include "parser/parse_cseq.h"
#include "parser/parse_via.h"
#include "parser/sdp/sdp.h"
#include "msg_callbacks.h"
#include "db/db.h"
#include "evi/evi_params.h"
#include "evi/evi_modules.h"
#include "bin_interface.h"
#include "ipc.h"
#include "modules/tm/h_table.h"
#include "modules/tm/tm_load.h"
#include "modules/dialog/dlg_load.h"
#include "modules/dialog/dlg_hash.h"
#include "modules/rtp_relay/rtp_relay.h"
#include "modules/rtpproxy/rtpproxy_load.h"

#define SZ(name, type) printf("size SIZEOF_%s %zu\n", #name, sizeof(type))
#define OFF(name, type, field) printf("offset %s %zu\n", #name, offsetof(type, field))
#define VAL(name, expr) printf("const %s %lld\n", #name, (long long)(expr))
/* 1 when `sym` has exactly the type the module declares for it */
#define SIG(sym, type) printf("sig %s %d\n", #sym, __builtin_types_compatible_p(__typeof__(&sym), type))

int main(void)
{
	/* export tables (sr_module.h, mi/mi.h) */
	SZ(MODULE_EXPORTS, struct module_exports);
	OFF(MODULE_EXPORTS_MI_CMDS, struct module_exports, mi_cmds);
	OFF(MODULE_EXPORTS_PROCS, struct module_exports, procs);
	OFF(MODULE_EXPORTS_RELOAD_ACK_F, struct module_exports, reload_ack_f);
	SZ(CMD_EXPORT_T, cmd_export_t);
	SZ(CMD_PARAM, struct cmd_param);
	OFF(CMD_EXPORT_T_FLAGS, cmd_export_t, flags);
	VAL(MAX_CMD_PARAMS, MAX_CMD_PARAMS);
	SZ(ACMD_EXPORT_T, acmd_export_t);
	SZ(PARAM_EXPORT_T, param_export_t);
	SZ(PROC_EXPORT_T, proc_export_t);
	OFF(PROC_EXPORT_T_FLAGS, proc_export_t, flags);
	SZ(MODULE_DEPENDENCY_T, module_dependency_t);
	SZ(DEP_EXPORT_T, dep_export_t);
	SZ(STAT_EXPORT_T, stat_export_t);
	VAL(MAX_MI_PARAMS, MAX_MI_PARAMS);
	VAL(MAX_MI_RECIPES, MAX_MI_RECIPES);
#ifdef MAX_MI_ALIASES
	VAL(MAX_MI_ALIASES, MAX_MI_ALIASES);
	OFF(MI_EXPORT_T_ALIASES, mi_export_t, aliases);
#else
	VAL(MAX_MI_ALIASES, 0);
#endif
	SZ(MI_RECIPE_T, mi_recipe_t);
	SZ(MI_EXPORT_T, mi_export_t);
	OFF(MI_EXPORT_T_RECIPES, mi_export_t, recipes);
	SZ(MI_PARAMS_T, mi_params_t);
	VAL(PROC_FLAG_INITCHILD, PROC_FLAG_INITCHILD);
	VAL(PROC_FLAG_HAS_IPC, PROC_FLAG_HAS_IPC);
	VAL(PROC_FLAG_NEEDS_SCRIPT, PROC_FLAG_NEEDS_SCRIPT);

	/* pvar.h, usr_avp.h */
	SZ(PV_SPEC_T, pv_spec_t);
	SZ(PV_VALUE_T, pv_value_t);
	OFF(PV_SPEC_T_PVP, pv_spec_t, pvp);
	SZ(INT_STR, int_str);
	VAL(PVT_AVP, PVT_AVP);
	VAL(PVT_EXTRA, PVT_EXTRA);
	VAL(AVP_VAL_STR, AVP_VAL_STR);
	VAL(EQ_T, EQ_T);

	/* struct sip_msg and what hangs off it */
	SZ(SIP_MSG, struct sip_msg);
	OFF(SIP_MSG_ID, struct sip_msg, id);
	OFF(SIP_MSG_FIRST_LINE_TYPE, struct sip_msg, first_line.type);
	OFF(SIP_MSG_METHOD_VALUE, struct sip_msg, first_line.u.request.method_value);
	OFF(SIP_MSG_STATUS_CODE, struct sip_msg, first_line.u.reply.statuscode);
	OFF(SIP_MSG_VIA2, struct sip_msg, via2);
	OFF(SIP_MSG_CALLID, struct sip_msg, callid);
	OFF(SIP_MSG_TO, struct sip_msg, to);
	OFF(SIP_MSG_CSEQ, struct sip_msg, cseq);
	OFF(SIP_MSG_FROM, struct sip_msg, from);
	OFF(SIP_MSG_BODY, struct sip_msg, body);
	OFF(SIP_MSG_RCV, struct sip_msg, rcv);
	OFF(SIP_MSG_RCV_SRC_IP, struct sip_msg, rcv.src_ip);
	OFF(SIP_MSG_RCV_DST_IP, struct sip_msg, rcv.dst_ip);
	SZ(RECEIVE_INFO, struct receive_info);
	OFF(SIP_MSG_BUF, struct sip_msg, buf);
	OFF(SIP_MSG_LEN, struct sip_msg, len);
	OFF(SIP_MSG_MSG_FLAGS, struct sip_msg, msg_flags);
	SZ(IP_ADDR, struct ip_addr);
	OFF(IP_ADDR_U, struct ip_addr, u);
	OFF(HDR_FIELD_BODY, struct hdr_field, body);
	OFF(HDR_FIELD_PARSED, struct hdr_field, parsed);
	OFF(TO_BODY_TAG_VALUE, struct to_body, tag_value);
	OFF(CSEQ_BODY_METHOD_ID, struct cseq_body, method_id);
	OFF(VIA_BODY_ERROR, struct via_body, error);
	OFF(SIP_MSG_BODY_FIRST, struct sip_msg_body, first);
	OFF(BODY_PART_MIME, struct body_part, mime);
	OFF(BODY_PART_FLAGS, struct body_part, flags);
	OFF(BODY_PART_BODY, struct body_part, body);
	OFF(BODY_PART_NEXT, struct body_part, next);
	VAL(FL_USE_RTPPROXY, FL_USE_RTPPROXY);
	VAL(SIP_REQUEST, SIP_REQUEST);
	VAL(SIP_REPLY, SIP_REPLY);
	VAL(METHOD_INVITE, METHOD_INVITE);
	VAL(METHOD_ACK, METHOD_ACK);
	VAL(METHOD_BYE, METHOD_BYE);
	VAL(METHOD_CANCEL, METHOD_CANCEL);
	VAL(HDR_EOH_F, (long long)HDR_EOH_F);
	VAL(MSG_DESTROY, MSG_DESTROY);

	/* the forward destination (proxy.h) and the process table (pt.h) */
	OFF(PROXY_L_ADDR_IDX, struct proxy_l, addr_idx);
	OFF(PROXY_L_HOST, struct proxy_l, host);
	OFF(PROXY_L_H_ADDRTYPE, struct proxy_l, host.h_addrtype);
	OFF(PROXY_L_H_LENGTH, struct proxy_l, host.h_length);
	OFF(PROXY_L_H_ADDR_LIST, struct proxy_l, host.h_addr_list);
	SZ(PROCESS_TABLE, struct process_table);
	OFF(PROCESS_TABLE_PID, struct process_table, pid);
	OFF(PROCESS_TABLE_IPC_PIPE, struct process_table, ipc_pipe);
	SZ(GEN_LOCK_T, gen_lock_t);
	VAL(IP_ADDR2STR_BUF_NO, IP_ADDR2STR_BUF_NO);

	/* tm */
	SZ(TM_BINDS, struct tm_binds);
	OFF(TM_BINDS_REGISTER_TMCB, struct tm_binds, register_tmcb);
	OFF(TM_BINDS_T_GETT, struct tm_binds, t_gett);
	SZ(TMCB_PARAMS, struct tmcb_params);
	OFF(TMCB_PARAMS_CODE, struct tmcb_params, code);
	OFF(TMCB_PARAMS_PARAM, struct tmcb_params, param);
	SZ(CELL, struct cell);
	OFF(CELL_UAS_REQUEST, struct cell, uas.request);
	VAL(TMCB_RESPONSE_FWDED, TMCB_RESPONSE_FWDED);

	/* dialog */
	SZ(DLG_BINDS, struct dlg_binds);
	OFF(DLG_BINDS_REGISTER_DLGCB, struct dlg_binds, register_dlgcb);
	OFF(DLG_BINDS_CREATE_DLG, struct dlg_binds, create_dlg);
	OFF(DLG_BINDS_GET_DLG, struct dlg_binds, get_dlg);
	OFF(DLG_BINDS_STORE_DLG_VALUE, struct dlg_binds, store_dlg_value);
	OFF(DLG_BINDS_FETCH_DLG_VALUE, struct dlg_binds, fetch_dlg_value);
	OFF(DLG_BINDS_TERMINATE_DLG, struct dlg_binds, terminate_dlg);
	OFF(DLG_BINDS_GET_DLG_DID, struct dlg_binds, get_dlg_did);
	SZ(DLG_CB_PARAMS, struct dlg_cb_params);
	OFF(DLG_CB_PARAMS_IS_ACTIVE, struct dlg_cb_params, is_active);
	OFF(DLG_CB_PARAMS_PARAM, struct dlg_cb_params, param);
	OFF(DLG_CELL_H_ID, struct dlg_cell, h_id);
	OFF(DLG_CELL_H_ENTRY, struct dlg_cell, h_entry);
	OFF(DLG_CELL_CALLID, struct dlg_cell, callid);
	OFF(DLG_CELL_LEGS, struct dlg_cell, legs);
	OFF(DLG_CELL_LEGS_NO, struct dlg_cell, legs_no);
	SZ(DLG_LEG, struct dlg_leg);
	OFF(DLG_LEG_TAG, struct dlg_leg, tag);
	VAL(DLGCB_FAILED, DLGCB_FAILED);
	VAL(DLGCB_REQ_WITHIN, DLGCB_REQ_WITHIN);
	VAL(DLGCB_TERMINATED, DLGCB_TERMINATED);
	VAL(DLGCB_EXPIRED, DLGCB_EXPIRED);
	VAL(DLGCB_RESPONSE_WITHIN, DLGCB_RESPONSE_WITHIN);

	/* rtp_relay and our own load_rtpproxy API */
	SZ(RTP_RELAY_SESSION, struct rtp_relay_session);
	OFF(RTP_RELAY_SESSION_BODY, struct rtp_relay_session, body);
	SZ(RTP_RELAY_SERVER, struct rtp_relay_server);
	SZ(RTP_RELAY_FUNCS, struct rtp_relay_funcs);
	OFF(RTP_RELAY_FUNCS_COPY_RELEASE, struct rtp_relay_funcs, copy_release);
	SZ(RTP_RELAY_HOOKS, struct rtp_relay_hooks);
	SZ(RTP_RELAY_STREAMS, struct rtp_relay_streams);
	SZ(RTPPROXY_BINDS, struct rtpproxy_binds);

	/* db and events */
	SZ(DB_FUNC_T, db_func_t);
	OFF(DB_FUNC_T_FREE_RESULT, db_func_t, free_result);
	SZ(DB_VAL_T, db_val_t);
	SZ(DB_RES_T, db_res_t);
	SZ(DB_ROW_T, db_row_t);
	VAL(EVI_INT_VAL, EVI_INT_VAL);
	VAL(EVI_STR_VAL, EVI_STR_VAL);

	/* core entry points resolved by name (src/host/api.rs) */
	SIG(parse_headers_aux, int (*)(struct sip_msg *, hdr_flags_t, int, int));
	SIG(parse_from_header, int (*)(struct sip_msg *));
	SIG(parse_sip_body, int (*)(struct sip_msg *));
	SIG(del_lump, struct lump *(*)(struct sip_msg *, unsigned int, unsigned int, enum _hdr_types_t));
	SIG(anchor_lump, struct lump *(*)(struct sip_msg *, unsigned int, enum _hdr_types_t));
	SIG(insert_new_lump_after, struct lump *(*)(struct lump *, char *, unsigned int, enum _hdr_types_t));
	SIG(db_bind_mod, int (*)(const str *, db_func_t *));
	SIG(pv_get_spec_value, int (*)(struct sip_msg *, pv_spec_p, pv_value_t *));
	SIG(pv_set_value, int (*)(struct sip_msg *, pv_spec_p, int, pv_value_t *));
	SIG(pv_parse_spec, char *(*)(const str *, pv_spec_p));
	SIG(pv_get_avp_name, int (*)(struct sip_msg *, pv_param_p, int *, unsigned short *));
	SIG(search_first_avp, struct usr_avp *(*)(unsigned short, int, int_str *, struct usr_avp *));
	SIG(destroy_avp, void (*)(struct usr_avp *));
	SIG(add_avp_last, int (*)(unsigned short, int, int_str));
	SIG(ipc_handle_job, void (*)(int));
	SIG(evi_publish_event, event_id_t (*)(str));
	SIG(evi_probe_event, int (*)(event_id_t));
	SIG(evi_get_params, evi_params_p (*)(void));
	SIG(evi_param_add, int (*)(evi_params_p, const str *, const void *, int));
	SIG(evi_raise_event, int (*)(event_id_t, evi_params_t *));
	SIG(evi_free_params, void (*)(evi_params_p));
	SIG(find_export, cmd_function (*)(const char *, int));
	SIG(get_ticks, unsigned int (*)(void));
	SIG(init_mi_result_array, mi_response_t *(*)(mi_item_t **));
	SIG(init_mi_result_object, mi_response_t *(*)(mi_item_t **));
	SIG(init_mi_result_string, mi_response_t *(*)(const char *, int));
	SIG(init_mi_error_extra, mi_response_t *(*)(int, const char *, int, const char *, int));
	SIG(init_mi_param_error, mi_response_t *(*)(void));
	SIG(free_mi_response, void (*)(mi_response_t *));
	SIG(add_mi_array, mi_item_t *(*)(mi_item_t *, char *, int));
	SIG(add_mi_object, mi_item_t *(*)(mi_item_t *, char *, int));
	SIG(add_mi_string, int (*)(mi_item_t *, char *, int, const char *, int));
	SIG(add_mi_number, int (*)(mi_item_t *, char *, int, double));
	SIG(get_mi_string_param, int (*)(const mi_params_t *, char *, char **, int *));
	SIG(get_mi_int_param, int (*)(const mi_params_t *, char *, int *));
	SIG(bin_push_str, int (*)(bin_packet_t *, const str *));
	SIG(bin_push_int, int (*)(bin_packet_t *, int));
	SIG(bin_pop_str, int (*)(bin_packet_t *, str *));
	SIG(bin_pop_int, int (*)(bin_packet_t *, void *));
	SIG(msg_callback_add, int (*)(struct sip_msg *, cb_type_t, cb_func_t, void *));
	SIG(update_sock_struct_from_via, int (*)(union sockaddr_union *, struct sip_msg *, struct via_body *));
	SIG(dprint, void (*)(int, int, const char *, const char *, char *, char *, char *, ...));
	SIG(dp_my_pid, int (*)(void));
	SIG(shm_event_raise, void (*)(long, long, long));
	/* core variables (their address has the type the module reads through) */
	SIG(log_level, int **);
	SIG(log_facility, int *);
	SIG(log_prefix, char **);
	SIG(core_scm_ver, const struct scm_version *);
	SIG(gen_pkg_malloc, void *(**)(void *, unsigned long, const char *, const char *, unsigned int));
	SIG(gen_pkg_free, void (**)(void *, void *, const char *, const char *, unsigned int));
	SIG(gen_shm_malloc, void *(**)(void *, unsigned long, const char *, const char *, unsigned int));
	SIG(gen_shm_free, void (**)(void *, void *, const char *, const char *, unsigned int));
	SIG(gen_shm_get_rused, unsigned long (**)(void *));
	SIG(gen_shm_get_size, unsigned long (**)(void *));
	SIG(mem_block, void **);
	SIG(shm_block, void **);
	SIG(mem_lock, gen_lock_t **);
	SIG(event_shm_threshold, long *);
	SIG(event_shm_last, long **);
	SIG(event_shm_pending, int **);
	SIG(process_no, int *);
	SIG(route_type, int *);
	SIG(pt, struct process_table **);
	return 0;
}
