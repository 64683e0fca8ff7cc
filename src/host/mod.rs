//! The unsafe shell: the only place that touches OpenSIPS memory, pointers and symbols.
#![allow(unsafe_code)]
