//! Control-socket clients (spec §3.1).
