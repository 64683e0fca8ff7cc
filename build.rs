//! Build script: generates the OpenSIPS ABI bindings from `include/opensips_abi.h` and fixes the
//! version strings OpenSIPS compares at `loadmodule` time.
//!
//! Where the version strings come from, first match wins:
//! 1. `OPENSIPS_FULL_VERSION` and `OPENSIPS_COMPILE_FLAGS` in the environment;
//! 2. `opensips -V` of `$OPENSIPS_BIN`, else of `opensips` on `PATH`;
//! 3. the stock OpenSIPS 3.6.8 x86_64 tarball build.
//!
//! The SCM type/revision are not fixed here: the module copies them from the running core's
//! `core_scm_ver` when it is loaded (see `src/host/exports.rs`).

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// OpenSIPS versions whose layouts were measured and match `include/opensips_abi.h`.
const SUPPORTED_VERSIONS: &[&str] = &["opensips 3.6.8 (x86_64/linux)"];

const DEFAULT_VERSION: &str = "opensips 3.6.8 (x86_64/linux)";
const DEFAULT_FLAGS: &str = "STATS: On, DISABLE_NAGLE, USE_MCAST, SHM_MMAP, PKG_MALLOC, Q_MALLOC, \
F_MALLOC, HP_MALLOC, F_PARALLEL_MALLOC, DBG_MALLOC, FAST_LOCK-ADAPTIVE_WAIT";

/// Compile-flag items the declared layouts depend on.
const REQUIRED_FLAGS: &[&str] = &["DBG_MALLOC", "SHM_MMAP", "PKG_MALLOC", "FAST_LOCK"];
/// Compile-flag items that would change layouts or inline helpers we re-implement.
const REFUSED_FLAGS: &[&str] = &[
    "DBG_LOCK",
    "FUTEX",
    "SHM_EXTRA_STATS",
    "NOSMP",
    "USE_PTHREAD_MUTEX",
    "USE_POSIX_SEM",
];

fn main() {
    for var in [
        "OPENSIPS_BIN",
        "OPENSIPS_FULL_VERSION",
        "OPENSIPS_COMPILE_FLAGS",
        "PATH",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=include/opensips_abi.h");
    println!("cargo:rerun-if-changed=build.rs");

    let (version, flags, source) = host_signature();
    if !SUPPORTED_VERSIONS.contains(&version.as_str()) {
        fail(&format!(
            "OpenSIPS version \"{version}\" (from {source}) is not supported: this module's ABI \
             declarations were verified for {SUPPORTED_VERSIONS:?} only. Point OPENSIPS_BIN at a \
             supported opensips binary, or set OPENSIPS_FULL_VERSION/OPENSIPS_COMPILE_FLAGS."
        ));
    }
    for item in REQUIRED_FLAGS {
        if !flags.contains(item) {
            fail(&format!(
                "OpenSIPS compile flags \"{flags}\" (from {source}) lack {item}; the declared \
                 allocator and lock layouts need it"
            ));
        }
    }
    for item in REFUSED_FLAGS {
        if flags.contains(item) {
            fail(&format!(
                "OpenSIPS compile flags \"{flags}\" (from {source}) contain {item}, which changes \
                 layouts this module declares; build OpenSIPS with the default flags"
            ));
        }
    }
    println!("cargo:rustc-env=RTPPROXY_HOST_SIGNATURE_SOURCE={source}");

    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    std::fs::write(
        out.join("host_version.rs"),
        format!(
            "/// Must equal the core's OPENSIPS_FULL_VERSION.\n\
             pub const OPENSIPS_FULL_VERSION: &std::ffi::CStr = c{version:?};\n\
             /// Must equal the core's OPENSIPS_COMPILE_FLAGS.\n\
             pub const OPENSIPS_COMPILE_FLAGS: &std::ffi::CStr = c{flags:?};\n"
        ),
    )
    .expect("write host_version.rs");

    let bindings = bindgen::Builder::default()
        .header("include/opensips_abi.h")
        .allowlist_file(".*opensips_abi\\.h")
        .use_core()
        .derive_default(false)
        .derive_debug(false)
        .layout_tests(true)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .unwrap_or_else(|e| {
            fail(&format!(
                "bindgen failed on include/opensips_abi.h: {e} (is libclang-dev installed?)"
            ))
        });
    bindings
        .write_to_file(out.join("opensips_abi.rs"))
        .expect("write bindings");
}

fn host_signature() -> (String, String, String) {
    if let (Ok(v), Ok(f)) = (
        env::var("OPENSIPS_FULL_VERSION"),
        env::var("OPENSIPS_COMPILE_FLAGS"),
    ) {
        return (v, f, "OPENSIPS_FULL_VERSION/OPENSIPS_COMPILE_FLAGS".into());
    }
    let explicit = env::var("OPENSIPS_BIN").ok().filter(|s| !s.is_empty());
    let bin = explicit.clone().unwrap_or_else(|| "opensips".into());
    match Command::new(&bin).arg("-V").output() {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let field = |key: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .map(|v| v.trim().to_string())
            };
            match (field("version:"), field("flags:")) {
                (Some(v), Some(f)) => (v, f, format!("`{bin} -V`")),
                _ => fail(&format!(
                    "`{bin} -V` did not print version: and flags: lines"
                )),
            }
        }
        Err(e) if explicit.is_some() => fail(&format!("cannot run OPENSIPS_BIN={bin}: {e}")),
        Err(_) => (
            DEFAULT_VERSION.into(),
            DEFAULT_FLAGS.into(),
            "stock 3.6.8 defaults".into(),
        ),
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    panic!("{msg}");
}
