//! Raw FFI: the resolved symbol table (`api`), the measured layouts (`sys`), C strings
//! (`cstr`), host memory (`mem`), the one panic guard (`guard`) and logging (`log`).

pub(crate) mod api;
pub(crate) mod cstr;
pub(crate) mod guard;
pub(crate) mod log;
pub(crate) mod mem;
pub(crate) mod sys;
