//! Generated bindings of `include/opensips_abi.h`, plus the host signature fixed by `build.rs`.
//!
//! Everything here is a plain declaration; the safe wrappers live in the sibling modules.
#![allow(non_camel_case_types, non_upper_case_globals, non_snake_case, dead_code)]
#![allow(unreachable_pub, clippy::all, clippy::undocumented_unsafe_blocks)]

include!(concat!(env!("OUT_DIR"), "/opensips_abi.rs"));
include!(concat!(env!("OUT_DIR"), "/host_version.rs"));
