//! Loading RTPProxy nodes from a database through OpenSIPS's DB API (`db_url`, spec §1.4).
//!
//! A connection is opened for each load and closed right after, so no connection crosses a
//! fork and a database that went away only fails the load at hand.

use crate::core::config::{DbConfig, SetId};

use crate::host::ffi::api::api;
use crate::host::ffi::cstr::{self, borrowed_str};
use crate::host::ffi::sys::{self, db_func_t, db_res_t, db_val_t, host_str};

/// Why the node table could not be loaded (the text is the log line).
#[derive(Debug, thiserror::Error)]
pub(crate) enum DbError {
    #[error("cannot bind a database module for db_url {0:?}")]
    Bind(String),
    #[error("the database module of {0:?} cannot run queries")]
    NoQuery(String),
    #[error("the database module lacks init/close/use_table/query")]
    MissingFunctions,
    #[error("the database module is not bound")]
    NotBound,
    #[error("cannot connect to the database {0:?}")]
    Connect(String),
    #[error("cannot use table {0:?}")]
    UseTable(String),
    #[error("query of {table}.{socket_col}/{set_col} failed")]
    Query {
        table: String,
        socket_col: String,
        set_col: String,
    },
    #[error("row {row} has {columns} columns, expected 2")]
    Columns { row: usize, columns: i32 },
    #[error("row {row}: {column} is not a set id")]
    SetId { row: usize, column: String },
    #[error("row {0} has a NULL socket")]
    NullSocket(usize),
}

/// One row: the socket column and the set id column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    pub(crate) socket: Option<String>,
    pub(crate) set_id: SetId,
}

/// Binds the DB module for `url` and checks it can run queries.
pub(crate) fn bind(url: &str) -> Result<db_func_t, DbError> {
    // SAFETY: an all-zero db_func_t is a valid "unbound" value (NULL pointers, cap 0).
    let mut f: db_func_t = unsafe { std::mem::zeroed() };
    let u = borrowed_str(url.as_bytes());
    // SAFETY: `db_bind_mod` reads the url during the call and fills `f`.
    if unsafe { (api().db_bind_mod)(&u, &mut f) } < 0 {
        return Err(DbError::Bind(url.to_owned()));
    }
    if f.cap & crate::host::ffi::sys::DB_CAP_QUERY == 0 {
        return Err(DbError::NoQuery(url.to_owned()));
    }
    Ok(f)
}

/// The value of a text column.
fn text(v: &db_val_t) -> Option<String> {
    if v.nul != 0 {
        return None;
    }
    // SAFETY: the union member read matches `type_`; strings point into the result set,
    // which lives until `free_result`, and are copied here.
    unsafe {
        match v.type_ {
            sys::db_type_t_DB_STRING => {
                cstr::cstr_to_string(v.val.string_val).map(|r| r.unwrap_or_else(|e| e.lossy))
            }
            sys::db_type_t_DB_STR | sys::db_type_t_DB_BLOB => {
                Some(String::from_utf8_lossy(cstr::str_bytes(&v.val.str_val)).into_owned())
            }
            _ => None,
        }
    }
}

/// The value of an integer column (also accepts a numeric text column).
fn int(v: &db_val_t) -> Option<i64> {
    if v.nul != 0 {
        return None;
    }
    // SAFETY: the union member read matches `type_`.
    unsafe {
        match v.type_ {
            sys::db_type_t_DB_INT => Some(i64::from(v.val.int_val)),
            sys::db_type_t_DB_BIGINT => Some(v.val.bigint_val),
            _ => text(v).and_then(|t| t.trim().parse().ok()),
        }
    }
}

/// Reads every row of the node table, ordered by the set id column.
pub(crate) fn load(f: &db_func_t, cfg: &DbConfig) -> Result<Vec<Row>, DbError> {
    let (Some(init), Some(close), Some(use_table), Some(query), Some(free_result)) =
        (f.init, f.close, f.use_table, f.query, f.free_result)
    else {
        return Err(DbError::MissingFunctions);
    };
    let url = borrowed_str(cfg.url.as_bytes());
    // SAFETY: `init` copies the URL and returns a connection or NULL.
    let con = unsafe { init(&url) };
    if con.is_null() {
        return Err(DbError::Connect(cfg.url.clone()));
    }
    let table = borrowed_str(cfg.table.as_bytes());
    let mut socket_col = borrowed_str(cfg.socket_col.as_bytes());
    let mut set_col = borrowed_str(cfg.set_id_col.as_bytes());
    let cols: [*mut host_str; 2] = [&mut socket_col, &mut set_col];
    let mut res: *mut db_res_t = std::ptr::null_mut();
    // SAFETY: live connection; the table name is copied by the call.
    if unsafe { use_table(con, &table) } < 0 {
        // SAFETY: the live connection, closed once.
        unsafe { close(con) };
        return Err(DbError::UseTable(cfg.table.clone()));
    }
    // SAFETY: live connection; the column keys and the order key point at `str`s alive across
    // the call; on success `res` is a result set that is ours until `free_result`.
    let queried = unsafe {
        query(
            con,
            std::ptr::null(),
            std::ptr::null(),
            std::ptr::null(),
            cols.as_ptr(),
            0,
            2,
            &mut set_col,
            &mut res,
        )
    };
    if queried < 0 || res.is_null() {
        // SAFETY: the live connection, closed once.
        unsafe { close(con) };
        return Err(DbError::Query {
            table: cfg.table.clone(),
            socket_col: cfg.socket_col.clone(),
            set_col: cfg.set_id_col.clone(),
        });
    }
    // SAFETY: `res` is the live result set of the query above, freed only below.
    let rows = unsafe { read_rows(&*res, cfg) };
    // SAFETY: the result set and the connection of this load, each released once.
    unsafe {
        free_result(con, res);
        close(con);
    }
    rows
}

/// The rows of a result set, copied.
///
/// # Safety
/// `r` must be a live result set of a two-column query (`rows` holds `n` rows).
unsafe fn read_rows(r: &db_res_t, cfg: &DbConfig) -> Result<Vec<Row>, DbError> {
    let n = r.n.max(0) as usize;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        // SAFETY: per the contract, `rows` has `n` rows.
        let row = unsafe { &*r.rows.add(i) };
        if row.n < 2 || row.values.is_null() {
            return Err(DbError::Columns {
                row: i,
                columns: row.n,
            });
        }
        // SAFETY: the row has at least two values (checked above).
        let vals = unsafe { std::slice::from_raw_parts(row.values, 2) };
        let Some(set_id) = int(&vals[1]).and_then(|v| SetId::try_from(v).ok()) else {
            return Err(DbError::SetId {
                row: i,
                column: cfg.set_id_col.clone(),
            });
        };
        out.push(Row {
            socket: text(&vals[0]),
            set_id,
        });
    }
    Ok(out)
}

/// Turns rows into `rtpproxy_sock` values (`N == nodes`; a negative set id uses the modparam
/// grammar, as the C module does). A row with a NULL socket is an error (the C module skips
/// every row when the first one is NULL; we refuse the table instead).
pub(crate) fn sock_values(rows: &[Row]) -> Result<Vec<String>, DbError> {
    rows.iter()
        .enumerate()
        .map(|(i, r)| match &r.socket {
            None => Err(DbError::NullSocket(i)),
            Some(s) if r.set_id >= 0 => Ok(format!("{} == {s}", r.set_id)),
            Some(s) => Ok(s.clone()),
        })
        .collect()
}

/// The bound DB module functions (bound in `mod_init`, inherited by every process).
struct Bound(db_func_t);
// SAFETY: function pointers into the DB module, valid for the process life and callable from
// any process that inherited them.
unsafe impl Send for Bound {}
// SAFETY: as above; the table is never written after binding.
unsafe impl Sync for Bound {}

static BOUND: std::sync::OnceLock<Bound> = std::sync::OnceLock::new();

/// Binds the DB module once (main process, `mod_init`).
pub(crate) fn bind_once(url: &str) -> Result<(), DbError> {
    if BOUND.get().is_none() {
        let f = bind(url)?;
        let _ = BOUND.set(Bound(f));
    }
    Ok(())
}

/// Loads the node list as `rtpproxy_sock` values, with a fresh connection.
pub(crate) fn load_values(cfg: &DbConfig) -> Result<Vec<String>, DbError> {
    let f = BOUND.get().ok_or(DbError::NotBound)?;
    sock_values(&load(&f.0, cfg)?)
}
