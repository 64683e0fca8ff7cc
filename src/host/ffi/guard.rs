//! The only place that catches panics. Every `extern "C"` entry point runs its body through
//! [`call`], so a bug in this module becomes a logged error and a failure code, never an unwind
//! into OpenSIPS and never a dead SIP worker.

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// Installs a panic hook that records the message and location instead of printing them.
pub(crate) fn install_panic_hook() {
    HOOK.call_once(|| {
        panic::set_hook(Box::new(|info| {
            let payload = info.payload();
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".to_string());
            let loc = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("{msg}{loc}")));
        }));
    });
}

/// Runs `f`, turning a panic into `on_panic` after logging it under `what`.
pub(crate) fn call<R>(what: &str, on_panic: R, f: impl FnOnce() -> R) -> R {
    call_lazy(what, || on_panic, f)
}

/// [`call`] with the failure value built only when `f` panicked: for values that cost something
/// to make and must not be dropped unused (an MI error response is allocated by the core and
/// only freed when returned to it).
pub(crate) fn call_lazy<R>(what: &str, on_panic: impl FnOnce() -> R, f: impl FnOnce() -> R) -> R {
    install_panic_hook();
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            let detail = LAST_PANIC
                .with(|p| p.borrow_mut().take())
                .unwrap_or_else(|| "unknown panic".to_string());
            tracing::error!("internal error in {what}: {detail}; the call failed safely");
            on_panic()
        }
    }
}

/// Script-function return code of a result: `Ok(n)` with `n != 0` passes through, `Ok(0)` is
/// mapped to -1 (0 would stop the script), errors are logged and give their negative code
/// ([`crate::Error::return_code`]).
pub(crate) fn script_code(what: &str, r: Result<i32, crate::Error>) -> i32 {
    match r {
        Ok(0) => -1,
        Ok(n) => n,
        Err(e) => {
            tracing::error!("{what}: {e}");
            e.return_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_the_failure_value() {
        let r = call("test", -1, || -> i32 { panic!("boom {}", 42) });
        assert_eq!(r, -1);
        // and the guard keeps working afterwards
        assert_eq!(call("test", -1, || 7), 7);
    }

    #[test]
    fn zero_never_reaches_the_script() {
        assert_eq!(script_code("f", Ok(0)), -1);
        assert_eq!(script_code("f", Ok(1)), 1);
        assert_eq!(script_code("f", Ok(-2)), -2);
        let e = crate::Error::from(crate::error::HostError::NoCallId);
        assert_eq!(script_code("f", Err(e)), -1);
    }
}
