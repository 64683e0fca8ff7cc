//! The parameters of a script function: each kind a function declares ([`Param`]), the
//! `cmd_param` entry it puts in the export row, and its decoding from the host's `void*` into
//! a typed value borrowed for the call.
//!
//! `module::script`'s `script_functions!` declares every function with a list of kinds; it
//! builds the row with [`row`] and decodes the arguments with a [`Decoder`], so the row, the
//! decoding and the body's signature come from one declaration (a kind whose value type does
//! not match the body's argument does not compile). Any other shell receiving the same host
//! parameters (the async functions) decodes them with the same [`Decoder`].

use std::ffi::{c_int, c_void};
use std::marker::PhantomData;
use std::ptr::NonNull;

use crate::host::bind::msg;
use crate::host::ffi::cstr;
use crate::host::ffi::sys::{self, cmd_param, host_str, pv_spec_t, sip_msg};

/// The eight `void*` parameters of a script function, as OpenSIPS passes them.
pub(crate) type Params = [*mut c_void; 8];

/// A parameter list padded to the host's fixed array, the terminator included.
pub(crate) type ParamRow = [cmd_param; sys::MAX_CMD_PARAMS as usize + 1];

/// A `cmd_param` of these `CMD_PARAM_*` flags, without fixup.
pub(crate) const fn param(flags: u32) -> cmd_param {
    cmd_param {
        flags: flags as i32,
        fixup: None,
        free_fixup: None,
    }
}

/// The terminator of a parameter list.
pub(crate) const END: cmd_param = param(0);

/// The row of a list of kinds' [`Param::SPEC`]s: the declared ones, in order, padded.
pub(crate) const fn row<const N: usize>(list: [Option<cmd_param>; N]) -> ParamRow {
    let mut out = [END; sys::MAX_CMD_PARAMS as usize + 1];
    let (mut i, mut n) = (0, 0);
    while i < N {
        if let Some(p) = list[i] {
            out[n] = p;
            n += 1;
        }
        i += 1;
    }
    out
}

/// A kind of script-function parameter.
pub(crate) trait Param {
    /// Its entry in the export row; `None` when the host built for does not declare it.
    const SPEC: Option<cmd_param>;
    /// What the body receives, borrowed for the call.
    type Value<'a>;
    /// Decodes the host's pointer for this parameter.
    ///
    /// # Safety
    /// `p` is what the host passed at this parameter's position for a function whose row has
    /// [`Self::SPEC`] there (NULL for an omitted optional parameter or an undeclared one);
    /// `msg` is the call's message pointer. Both stay valid for `'a`.
    unsafe fn decode<'a>(msg: *mut sip_msg, p: *mut c_void) -> Self::Value<'a>;
}

/// A kind that decodes NULL (omitted) as "absent", so a parameter the host does not declare
/// can be read as NULL.
pub(crate) trait Optional: Param {}

/// The kinds of parameters, named after their `CMD_PARAM_*` flags.
pub(crate) mod kind {
    use super::*;

    /// `CMD_PARAM_INT`: the integer.
    pub(crate) struct Int;
    /// `CMD_PARAM_INT | CMD_PARAM_OPT`: the integer, `None` when omitted.
    pub(crate) struct OptInt;
    /// `CMD_PARAM_STR`: the string, borrowed for the call.
    pub(crate) struct Str;
    /// `CMD_PARAM_STR | CMD_PARAM_OPT`: the string, `None` when omitted.
    pub(crate) struct OptStr;
    /// `CMD_PARAM_VAR`: a script variable.
    pub(crate) struct Var;
    /// `CMD_PARAM_VAR | CMD_PARAM_OPT`: a script variable, `None` when omitted.
    pub(crate) struct OptVar;
    /// A parameter only OpenSIPS 4.0 declares: `T` there; `T`'s "omitted" value on other hosts.
    pub(crate) struct Since4<T>(PhantomData<T>);

    impl Param for Int {
        const SPEC: Option<cmd_param> = Some(param(sys::CMD_PARAM_INT));
        type Value<'a> = i32;
        unsafe fn decode<'a>(_msg: *mut sip_msg, p: *mut c_void) -> Self::Value<'a> {
            // The host refuses a script that omits a mandatory parameter; should it pass NULL
            // anyway, the guard turns this panic into a logged -1.
            assert!(
                !p.is_null(),
                "the host passed no value for a mandatory integer"
            );
            // SAFETY: per the contract, the host's fixed-up `int*` (non-NULL, checked above).
            unsafe { *p.cast::<c_int>() }
        }
    }

    impl Param for OptInt {
        const SPEC: Option<cmd_param> = Some(param(sys::CMD_PARAM_INT | sys::CMD_PARAM_OPT));
        type Value<'a> = Option<i32>;
        unsafe fn decode<'a>(_msg: *mut sip_msg, p: *mut c_void) -> Self::Value<'a> {
            // SAFETY: per the contract, NULL or the host's fixed-up `int*`.
            (!p.is_null()).then(|| unsafe { *p.cast::<c_int>() })
        }
    }
    impl Optional for OptInt {}

    impl Param for Str {
        const SPEC: Option<cmd_param> = Some(param(sys::CMD_PARAM_STR));
        type Value<'a> = &'a [u8];
        unsafe fn decode<'a>(_msg: *mut sip_msg, p: *mut c_void) -> Self::Value<'a> {
            // SAFETY: per the contract, the host's fixed-up `str*`, valid for the call.
            unsafe { cstr::str_bytes(p.cast::<host_str>()) }
        }
    }

    impl Param for OptStr {
        const SPEC: Option<cmd_param> = Some(param(sys::CMD_PARAM_STR | sys::CMD_PARAM_OPT));
        type Value<'a> = Option<&'a [u8]>;
        unsafe fn decode<'a>(_msg: *mut sip_msg, p: *mut c_void) -> Self::Value<'a> {
            // SAFETY: per the contract, NULL or the host's fixed-up `str*`, valid for the call.
            (!p.is_null()).then(|| unsafe { cstr::str_bytes(p.cast::<host_str>()) })
        }
    }
    impl Optional for OptStr {}

    impl Param for Var {
        const SPEC: Option<cmd_param> = Some(param(sys::CMD_PARAM_VAR));
        type Value<'a> = super::Var<'a>;
        unsafe fn decode<'a>(msg: *mut sip_msg, p: *mut c_void) -> Self::Value<'a> {
            // SAFETY: per the contract, the host's fixed-up `pv_spec_t*` (never NULL when declared
            // mandatory: the host refuses the script otherwise).
            unsafe { super::Var::from_ptr(msg, p) }
                .expect("the host passed no spec for a mandatory variable")
        }
    }

    impl Param for OptVar {
        const SPEC: Option<cmd_param> = Some(param(sys::CMD_PARAM_VAR | sys::CMD_PARAM_OPT));
        type Value<'a> = Option<super::Var<'a>>;
        unsafe fn decode<'a>(msg: *mut sip_msg, p: *mut c_void) -> Self::Value<'a> {
            // SAFETY: per the contract, NULL or the host's fixed-up `pv_spec_t*`.
            unsafe { super::Var::from_ptr(msg, p) }
        }
    }
    impl Optional for OptVar {}

    impl<T: Optional> Param for Since4<T> {
        const SPEC: Option<cmd_param> = if cfg!(opensips_4) { T::SPEC } else { None };
        type Value<'a> = T::Value<'a>;
        unsafe fn decode<'a>(msg: *mut sip_msg, p: *mut c_void) -> Self::Value<'a> {
            // SAFETY: per the contract (the decoder passes NULL when the host does not declare
            // it, which an `Optional` kind reads as omitted).
            unsafe { T::decode(msg, p) }
        }
    }
}

/// Decodes the host's parameters of one call, kind by kind, in the declared order.
pub(crate) struct Decoder<'a> {
    msg: *mut sip_msg,
    raw: &'a Params,
    next: usize,
}

impl<'a> Decoder<'a> {
    /// The parameters OpenSIPS passed (`raw`) with the call's message pointer (NULL, the
    /// FAKED_REPLY marker or a message; only handed to the host with variable accesses).
    pub(crate) fn new(msg: *mut sip_msg, raw: &'a Params) -> Self {
        Self { msg, raw, next: 0 }
    }

    /// The next declared parameter, of kind `P` (a kind not declared on this host takes no
    /// position and decodes as omitted).
    ///
    /// # Safety
    /// The function was exported with a row made of the kinds decoded so far and `P` next, in
    /// this order, and `msg`/`raw` are what the host passed to it for this call.
    pub(crate) unsafe fn next<P: Param>(&mut self) -> P::Value<'a> {
        let p = match P::SPEC {
            Some(_) => {
                let p = self
                    .raw
                    .get(self.next)
                    .copied()
                    .unwrap_or(std::ptr::null_mut());
                self.next += 1;
                p
            }
            None => std::ptr::null_mut(),
        };
        // SAFETY: per the contract, `p` is the host's pointer for a `P` parameter (or NULL).
        unsafe { P::decode(self.msg, p) }
    }
}

/// A script variable parameter (`pv_spec_t`) of the current call, with the call's message it
/// is read and written against. Borrowed for the call: not `Copy`, never stored.
pub(crate) struct Var<'a> {
    msg: *mut sip_msg,
    spec: NonNull<pv_spec_t>,
    _call: PhantomData<&'a pv_spec_t>,
}

impl<'a> Var<'a> {
    /// # Safety
    /// `spec` is NULL or a `pv_spec_t*` the host passed for a variable parameter of the current
    /// call on `msg` (or a parsed spec that lives at least as long); both valid for `'a`.
    pub(crate) unsafe fn from_ptr(msg: *mut sip_msg, spec: *mut c_void) -> Option<Self> {
        NonNull::new(spec.cast::<pv_spec_t>()).map(|spec| Self {
            msg,
            spec,
            _call: PhantomData,
        })
    }

    /// The spec, for host calls that take it.
    pub(crate) fn as_ptr(&self) -> *mut c_void {
        self.spec.as_ptr().cast()
    }

    /// The message pointer the variable is accessed against.
    pub(crate) fn msg_ptr(&self) -> *mut sip_msg {
        self.msg
    }

    /// Stores a string.
    pub(crate) fn set_str(&self, value: &[u8]) -> bool {
        // SAFETY: a spec of this call and the call's message (`from_ptr`'s contract).
        unsafe { msg::set_var_str(self.msg, self.as_ptr(), value) }
    }

    /// Stores an integer with its decimal text as the string form.
    pub(crate) fn set_int(&self, value: i32, text: &[u8]) -> bool {
        // SAFETY: as in `set_str`.
        unsafe { msg::set_var_int(self.msg, self.as_ptr(), value, text) }
    }

    /// Its value when it is a string, copied.
    pub(crate) fn get_str(&self) -> Option<Vec<u8>> {
        // SAFETY: as in `set_str`.
        unsafe { msg::get_var_str(self.msg, self.as_ptr()) }
    }

    /// Its value as text (see [`msg::get_var_text`]).
    pub(crate) fn get_text(&self) -> Result<Option<Vec<u8>>, ()> {
        // SAFETY: as in `set_str`.
        unsafe { msg::get_var_text(self.msg, self.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::kind::*;
    use super::*;

    #[test]
    fn decoding_follows_the_declared_kinds() {
        let mut n: c_int = 7;
        let text = b"abc".to_vec();
        let mut s = cstr::borrowed_str(&text);
        let raw: Params = [
            std::ptr::from_mut(&mut n).cast(),
            std::ptr::null_mut(),
            std::ptr::from_mut(&mut s).cast(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        ];
        let mut d = Decoder::new(std::ptr::null_mut(), &raw);
        // SAFETY: `raw` holds an int, an omitted int, a str and omitted variables.
        unsafe {
            assert_eq!(d.next::<Int>(), 7);
            assert_eq!(d.next::<OptInt>(), None);
            assert_eq!(d.next::<OptStr>(), Some(&b"abc"[..]));
            assert!(d.next::<Since4<OptVar>>().is_none());
            assert!(d.next::<OptVar>().is_none());
        }
        let expected = if cfg!(opensips_4) { 5 } else { 4 };
        assert_eq!(d.next, expected, "an undeclared kind takes no position");
    }

    #[test]
    fn rows_skip_undeclared_kinds() {
        let r = row([OptInt::SPEC, Since4::<OptVar>::SPEC, Str::SPEC]);
        let flags: Vec<i32> = r.iter().map(|p| p.flags).take_while(|&f| f != 0).collect();
        let (int, s, var, opt) = (
            sys::CMD_PARAM_INT as i32,
            sys::CMD_PARAM_STR as i32,
            sys::CMD_PARAM_VAR as i32,
            sys::CMD_PARAM_OPT as i32,
        );
        if cfg!(opensips_4) {
            assert_eq!(flags, [int | opt, var | opt, s]);
        } else {
            assert_eq!(flags, [int | opt, s]);
        }
    }
}
