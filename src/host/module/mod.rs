//! The module itself: the `exports` table OpenSIPS reads and the entry points (init,
//! child init, destroy, script-function shells). The top of the host layer.

pub(crate) mod entry;
pub(crate) mod exports;
pub(crate) mod script;
