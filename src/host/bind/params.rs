//! The parameters of a script function as OpenSIPS passes them.

use std::ffi::c_void;

/// The eight `void*` parameters of a script function, as OpenSIPS passes them.
pub(crate) type Params = [*mut c_void; 8];
