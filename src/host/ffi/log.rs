//! `tracing` bridged to OpenSIPS logging (`dprint` with `*log_level`), so our lines land in the
//! operator's OpenSIPS log with the usual `LEVEL:rtpproxy:func: message` prefix.
//!
//! The message is formatted by us and passed as a `%s` argument: nothing we log is ever used
//! as a format string.

use std::ffi::{c_char, c_int};
use std::fmt::Write as _;
use std::sync::Once;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

use super::sys;

static INSTALL: Once = Once::new();

/// Installs the bridge as the process-wide `tracing` subscriber (idempotent).
pub(crate) fn install() {
    INSTALL.call_once(|| {
        let _ = tracing::subscriber::set_global_default(HostLog);
    });
}

/// The OpenSIPS level of a `tracing` level.
const L_ERR: c_int = sys::L_ERR as c_int;
const L_WARN: c_int = sys::L_WARN as c_int;
const L_NOTICE: c_int = sys::L_NOTICE as c_int;
const L_INFO: c_int = sys::L_INFO as c_int;
const L_DBG: c_int = sys::L_DBG as c_int;

fn host_level(level: &Level) -> c_int {
    match *level {
        Level::ERROR => L_ERR,
        Level::WARN => L_WARN,
        Level::INFO => L_INFO,
        Level::DEBUG | Level::TRACE => L_DBG,
    }
}

fn level_text(lev: c_int) -> &'static [u8] {
    match lev {
        L_ERR => b"ERROR\0",
        L_WARN => b"WARNING\0",
        L_NOTICE => b"NOTICE\0",
        L_INFO => b"INFO\0",
        _ => b"DBG\0",
    }
}

/// Whether OpenSIPS would print a line of level `lev` in this process now.
fn printable(lev: c_int) -> bool {
    let Ok(api) = super::api::try_api() else {
        return false;
    };
    // SAFETY: `log_level` is a core variable that always points at the current process's
    // level (a core global or shm slot); a NULL check covers the very early start-up.
    unsafe {
        let p = *api.log_level;
        !p.is_null() && *p >= lev
    }
}

/// Logs one already formatted message at OpenSIPS level `lev`, from function `func`.
pub(crate) fn emit(lev: c_int, func: &str, msg: &str) {
    if !printable(lev) {
        return;
    }
    let func_c = super::cstr::to_c_buffer(func.as_bytes());
    let mut msg_c = super::cstr::to_c_buffer(msg.as_bytes());
    // OpenSIPS lines end with a newline, like the C module's LM_* format strings.
    msg_c.pop();
    msg_c.extend_from_slice(b"\n\0");
    let lvl = level_text(lev);
    let lvl = std::str::from_utf8(&lvl[..lvl.len() - 1]).unwrap_or("DBG");
    let stderr_fmt = format!("%s [%d] %s{lvl}:rtpproxy:%s: %s\0");
    let syslog_fmt = format!("%s{lvl}:rtpproxy:%s: %s\0");
    let mut tbuf = [0 as c_char; 32];
    let time_ptr = time_text(&mut tbuf);
    let api = super::api::api();
    // SAFETY: all pointers are NUL-terminated buffers alive for the call; the variadic list is
    // (time, pid, prefix, func, message) as every dprint consumer expects (ABI spec §4.1),
    // and the user part of the format is a constant "%s".
    unsafe {
        let prefix = *api.log_prefix;
        let prefix = if prefix.is_null() {
            c"".as_ptr()
        } else {
            prefix.cast_const()
        };
        (api.dprint)(
            lev,
            *api.log_facility,
            c"rtpproxy".as_ptr(),
            func_c.as_ptr().cast(),
            stderr_fmt.as_ptr().cast_mut().cast(),
            syslog_fmt.as_ptr().cast_mut().cast(),
            c"%s".as_ptr().cast_mut(),
            time_ptr,
            (api.dp_my_pid)(),
            prefix,
            func_c.as_ptr().cast::<c_char>(),
            msg_c.as_ptr().cast::<c_char>(),
        );
    }
}

/// `ctime_r` text without the weekday and year ("Nov 26 11:18:52"), as OpenSIPS prints it.
fn time_text(buf: &mut [c_char; 32]) -> *const c_char {
    // SAFETY: `time(NULL)` has no preconditions; `ctime_r` writes at most 26 bytes into our
    // 32-byte buffer.
    let ok = unsafe {
        let t = libc::time(std::ptr::null_mut());
        !libc::ctime_r(&t, buf.as_mut_ptr()).is_null()
    };
    if !ok {
        buf[0] = 0;
        return buf.as_ptr();
    }
    buf[19] = 0;
    buf[4..].as_ptr()
}

/// The subscriber: levels are checked against the host at each event; spans are not tracked.
struct HostLog;

struct MessageVisitor(String);

impl Visit for MessageVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl Subscriber for HostLog {
    fn register_callsite(
        &self,
        _meta: &'static Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        // The host level can change at run time (cfg, MI `log_level`): never cache a decision.
        tracing::subscriber::Interest::sometimes()
    }
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        printable(host_level(metadata.level()))
    }
    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _span: &Id, _values: &Record<'_>) {}
    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let meta = event.metadata();
        let mut v = MessageVisitor(String::new());
        event.record(&mut v);
        // The module path stands in for the C function name ("rtpproxy::host::entry" -> "entry").
        let func = meta
            .module_path()
            .and_then(|p| p.rsplit("::").next())
            .unwrap_or("rtpproxy");
        let lev = if meta.target().ends_with("::notice") {
            L_NOTICE
        } else {
            host_level(meta.level())
        };
        emit(lev, func, &v.0);
    }
    fn enter(&self, _span: &Id) {}
    fn exit(&self, _span: &Id) {}
}
