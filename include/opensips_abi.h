/*
 * Our own declarations of the subset of the OpenSIPS 3.6/4.0 module ABI that this module uses.
 *
 * Written from the measured facts in shared/spec/opensips-abi-3.6.md (x86_64, default build
 * flags: DBG_MALLOC, FAST_LOCK-ADAPTIVE_WAIT, SHM_MMAP, STATISTICS). The few declarations that
 * differ between releases take their dimensions from the host profile, passed in by build.rs
 * as PROBED_* macros (from tests/abi_probe/results/); the layout tests in src/host/sys.rs
 * compare every declared size with the profile's measured one.
 *
 * Each block names the OpenSIPS header whose layout it mirrors. Opaque host types are declared
 * as incomplete structs: we only ever hold pointers to them.
 */
#ifndef RTPPROXY_RS_OPENSIPS_ABI_H
#define RTPPROXY_RS_OPENSIPS_ABI_H

/* ---- str.h ------------------------------------------------------------------------------- */
typedef struct host_str {
	char *s;
	int len;
} host_str;

/* ---- sr_module.h: module_exports ---------------------------------------------------------- */
struct sip_msg; /* opaque here; fields are read through offsets in src/host/msg.rs */

enum module_type {
	MOD_TYPE_NULL = 0,
	MOD_TYPE_DEFAULT = 1,
	MOD_TYPE_SQLDB = 2,
	MOD_TYPE_CACHEDB = 3,
	MOD_TYPE_AAA = 4,
};

struct scm_version {
	const char *type;
	const char *rev;
};

struct module_ver_info {
	const char *version;
	const char *compile_flags;
	struct scm_version scm;
};

typedef int (*cmd_function)(struct sip_msg *, void *, void *, void *, void *, void *, void *,
			    void *, void *);
typedef int (*fixup_function)(void **param);
typedef int (*free_fixup_function)(void **param);
typedef int (*init_function)(void);
typedef int (*child_init_function)(int rank);
typedef void (*destroy_function)(void);
typedef int (*response_function)(struct sip_msg *);

/* cmd_param flags */
#define CMD_PARAM_INT (1 << 0)
#define CMD_PARAM_STR (1 << 1)
#define CMD_PARAM_VAR (1 << 2)
#define CMD_PARAM_REGEX (1 << 3)
#define CMD_PARAM_OPT (1 << 4)
#define CMD_PARAM_FIX_NULL (1 << 5)
#define CMD_PARAM_NO_EXPAND (1 << 6)
#define CMD_PARAM_STATIC (1 << 7)

/* route types */
#define REQUEST_ROUTE 1
#define FAILURE_ROUTE 2
#define ONREPLY_ROUTE 4
#define BRANCH_ROUTE 8
#define ERROR_ROUTE 16
#define LOCAL_ROUTE 32
#define STARTUP_ROUTE 64
#define TIMER_ROUTE 128
#define EVENT_ROUTE 256

#define MAX_CMD_PARAMS 8

struct cmd_param {
	int flags;
	fixup_function fixup;
	free_fixup_function free_fixup;
};

typedef struct cmd_export_ {
	const char *name;
	cmd_function function;
	struct cmd_param params[MAX_CMD_PARAMS + 1];
	int flags;
} cmd_export_t;

typedef struct acmd_export_ {
	const char *name;
	void *function;
	struct cmd_param params[MAX_CMD_PARAMS + 1];
} acmd_export_t;

/* ---- async.h: the context an async command fills in -------------------------------------- */
/* async_status values (enum async_ret_code) */
#define ASYNC_NO_IO (-8)
#define ASYNC_SYNC (-7)
#define ASYNC_NO_FD (-6)
#define ASYNC_CONTINUE (-5)
#define ASYNC_CHANGE_FD (-4)
#define ASYNC_DONE_CLOSE_FD (-3)
#define ASYNC_DONE_NO_IO (-2)
#define ASYNC_DONE (-1)

typedef struct async_ctx {
	void *resume_f;
#if OPENSIPS_MAJOR >= 4 /* 4.0: the resume function's name (must not be NULL) */
	char *resume_f_name;
#endif
	void *resume_param;
	void *timeout_f;
	unsigned int timeout_s;
} async_ctx;

/* modparam types */
#define STR_PARAM (1U << 0)
#define INT_PARAM (1U << 1)
#define USE_FUNC_PARAM (1U << 31)

typedef unsigned int modparam_t;
typedef int (*param_func_t)(modparam_t type, void *val);

typedef struct param_export_ {
	const char *name;
	modparam_t type;
	void *param_pointer;
} param_export_t;

/* ---- mi/mi.h ----------------------------------------------------------------------------- */
#define MAX_MI_PARAMS PROBED_MAX_MI_PARAMS /* 10 in 3.6, 20 in 4.0 */
#define MAX_MI_RECIPES 48
#define MI_ASYNC_RPL_FLAG (1 << 0)
#define MI_NAMED_PARAMS_ONLY (1 << 1)

typedef struct cJSON mi_item_t; /* the core's cJSON node, opaque */
typedef struct cJSON mi_response_t;

typedef struct mi_params_ {
	mi_item_t *item;
	char *const *list;
} mi_params_t;

struct mi_handler {
	void *handler_f;
	void *param;
};

typedef mi_response_t *(mi_cmd_f)(const mi_params_t *params, struct mi_handler *async_hdl);
typedef int(mi_child_init_f)(void);

typedef struct mi_recipe_ {
	mi_cmd_f *cmd;
	char *params[MAX_MI_PARAMS];
} mi_recipe_t;

typedef struct mi_export_ {
	char *name;
	char *help;
	unsigned int flags;
	mi_child_init_f *init_f;
	mi_recipe_t recipes[MAX_MI_RECIPES];
#if PROBED_MAX_MI_ALIASES > 0 /* 4.0: other names of the command */
	const char *aliases[PROBED_MAX_MI_ALIASES];
#endif
} mi_export_t;

/* ---- sr_module.h: extra processes --------------------------------------------------------- */
#define PROC_FLAG_INITCHILD (1 << 0)
#define PROC_FLAG_HAS_IPC (1 << 1)
#define PROC_FLAG_NEEDS_SCRIPT (1 << 2)

typedef void (*mod_proc)(int no);
typedef int (*mod_proc_wrapper)(void);

typedef struct proc_export_ {
	const char *name;
	mod_proc_wrapper pre_fork_function;
	mod_proc_wrapper post_fork_function;
	mod_proc function;
	unsigned int no;
	unsigned int flags;
} proc_export_t;

/* ---- sr_module_deps.h --------------------------------------------------------------------- */
#define MAX_MOD_DEPS 10
#define DEP_SILENT (1 << 0)
#define DEP_WARN (1 << 1)
#define DEP_ABORT (1 << 2)
#define DEP_REVERSE_MINIT (1 << 3)
#define DEP_REVERSE_DESTROY (1 << 4)
#define DEP_REVERSE_CINIT (1 << 5)
#define DEP_REVERSE (DEP_REVERSE_MINIT | DEP_REVERSE_DESTROY | DEP_REVERSE_CINIT)

typedef struct module_dependency {
	enum module_type mod_type;
	char *mod_name;
	unsigned int type;
} module_dependency_t;

typedef struct modparam_dependency {
	char *script_param;
	module_dependency_t *(*get_deps_f)(const param_export_t *param);
} modparam_dependency_t;

/* The C type ends in a flexible array; we fix the modparam part to two entries
 * (db_url plus the terminator), which is what this module declares. */
typedef struct dep_export_rtpproxy {
	module_dependency_t md[MAX_MOD_DEPS];
	modparam_dependency_t mpd[2];
} dep_export_rtpproxy_t;

/* ---- statistics.h ------------------------------------------------------------------------- */
typedef struct stat_export_ {
	char *name;
	unsigned short flags;
	void **stat_pointer;
} stat_export_t;

#define STAT_NO_RESET  (1<<0)
#define STAT_IS_FUNC   (1<<3)

/* One statistic (shm). `u` is `stat_val *val` (an 8-byte _Atomic unsigned long) or, with
 * STAT_IS_FUNC, `unsigned long (*f)(void *context)`. */
typedef struct stat_var_ {
	unsigned int mod_idx;
	host_str name;
	unsigned short flags;
	void *context;
	void *u;
	struct stat_var_ *hnext;
	struct stat_var_ *lnext;
} stat_var;

/* A statistics group ("module"); `is_dyn` makes later registrations take the collector's lock. */
typedef struct module_stats_ {
	host_str name;
	unsigned int no;
	unsigned short is_dyn;
	unsigned short idx;
	stat_var *head;
	stat_var *tail;
} module_stats;

struct module_exports {
	const char *name;
	enum module_type type;
	struct module_ver_info ver_info;
	unsigned int dlflags;
	init_function load_f;
	const dep_export_rtpproxy_t *deps;
	const cmd_export_t *cmds;
	const acmd_export_t *acmds;
	const param_export_t *params;
	const stat_export_t *stats;
	const mi_export_t *mi_cmds;
	const void *items;
	const void *trans;
	const proc_export_t *procs;
	init_function preinit_f;
	init_function init_f;
	response_function response_f;
	destroy_function destroy_f;
	child_init_function init_child_f;
	init_function reload_ack_f;
};

/* ---- pvar.h ------------------------------------------------------------------------------ */
#define PV_VAL_NONE 0
#define PV_VAL_NULL 1
#define PV_VAL_EMPTY 2
#define PV_VAL_STR 4
#define PV_VAL_INT 8
#define PV_TYPE_INT 16

typedef struct pv_value {
	host_str rs;
	int ri;
	int flags;
} pv_value_t;

typedef struct pv_spec {
	int type;
	void *getf;
	void *setf;
	unsigned char pvp[PROBED_SIZEOF_PV_SPEC_T - 40]; /* pv_param_t: 64 bytes before 3.6.7, 72 since */
	void *pvc;
	void *trans;
} pv_spec_t;

#define EQ_T 18

/* ---- dprint.h ----------------------------------------------------------------------------- */
#define L_ALERT -3
#define L_CRIT -2
#define L_ERR -1
#define L_WARN 1
#define L_NOTICE 2
#define L_INFO 3
#define L_DBG 4

/* ---- evi/evi_params.h --------------------------------------------------------------------- */
#define EVI_INT_VAL (1 << 0)
#define EVI_STR_VAL (1 << 1)
#define EVI_FREE_LIST (1 << 31)
typedef int event_id_t;
typedef struct evi_params evi_params_t;

/* ---- db/db.h, db_res.h, db_row.h, db_val.h ------------------------------------------------ */
typedef enum {
	DB_INT = 0,
	DB_BIGINT = 1,
	DB_DOUBLE = 2,
	DB_STRING = 3,
	DB_STR = 4,
	DB_DATETIME = 5,
	DB_BLOB = 6,
	DB_BITMAP = 7,
} db_type_t;

typedef struct {
	db_type_t type;
	int nul;
	int free;
	union {
		int int_val;
		long long bigint_val;
		double double_val;
		long time_val;
		const char *string_val;
		host_str str_val;
		host_str blob_val;
		unsigned int bitmap_val;
	} val;
} db_val_t;

typedef struct db_row {
	db_val_t *values;
	int n;
} db_row_t;

typedef struct db_res {
	struct {
		host_str **names;
		db_type_t *types;
		int n;
	} col;
	struct db_row *rows;
	int n;
	int res_rows;
	int last_row;
} db_res_t;

typedef struct db_con db_con_t; /* opaque */
typedef host_str *db_key_t;
typedef const char *db_op_t;

#define DB_CAP_QUERY (1 << 0)

typedef struct db_func {
	unsigned int cap;
	int (*use_table)(db_con_t *h, const host_str *t);
	db_con_t *(*init)(const host_str *url);
	void (*close)(db_con_t *h);
	int (*query)(const db_con_t *h, const db_key_t *k, const db_op_t *op, const db_val_t *v,
		     const db_key_t *c, const int n, const int nc, const db_key_t o, db_res_t **r);
	void *fetch_result;
	void *raw_query;
	int (*free_result)(db_con_t *h, db_res_t *r);
	void *insert;
	void *delete_;
	void *update;
	void *replace;
	void *last_inserted_id;
	void *insert_update;
	void *async_raw_query;
	void *async_resume;
	void *async_free_result;
	void *async_timeout;
} db_func_t;

/* The core's functions and variables are not declared here: the module resolves them by name
 * when it is loaded (src/host/api.rs), so that test binaries without an OpenSIPS core still link.
 * The allocator entry points are function-pointer globals with these types (DBG_MALLOC). */
typedef void *(*gen_malloc_f)(void *blk, unsigned long size, const char *file, const char *func,
			      unsigned int line);
typedef void *(*gen_realloc_f)(void *blk, void *p, unsigned long size, const char *file,
			       const char *func, unsigned int line);
typedef void (*gen_free_f)(void *blk, void *p, const char *file, const char *func,
			   unsigned int line);
typedef unsigned long (*gen_info_f)(void *blk);

#endif
