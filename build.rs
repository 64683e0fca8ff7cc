//! Build script: picks the host profile of the OpenSIPS release the module is built for, turns
//! that profile's measured layouts into constants, generates the ABI bindings from
//! `include/opensips_abi.h` and fixes the version strings OpenSIPS compares at `loadmodule` time.
//!
//! Where the version strings come from, first match wins:
//! 1. `OPENSIPS_FULL_VERSION` and `OPENSIPS_COMPILE_FLAGS` in the environment;
//! 2. `opensips -V` of `$OPENSIPS_BIN`, else of `opensips` on `PATH`;
//! 3. the stock OpenSIPS 3.6.8 x86_64 tarball build.
//!
//! Host profiles: `tests/abi_probe/results/opensips-<release>.txt` holds, per verified release,
//! the output of `tests/abi_probe/probe.c` compiled against that release's own headers. Releases
//! whose results are identical share one profile (named after its first release); a release
//! without a results file is not supported and stops the build.
//!
//! The SCM type/revision are not fixed here: the module copies them from the running core's
//! `core_scm_ver` when it is loaded (see `src/host/module/exports.rs`).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const RESULTS_DIR: &str = "tests/abi_probe/results";

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

/// One recorded probe result: `(kind, name, value)` lines, kind = size | offset | const | sig.
type Probe = Vec<(String, String, i64)>;

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
    println!("cargo:rerun-if-changed={RESULTS_DIR}");
    println!("cargo::rustc-check-cfg=cfg(opensips_4)");

    let releases = verified_releases();
    let (version, flags, source) = host_signature();
    let release = version
        .strip_prefix("opensips ")
        .and_then(|v| v.strip_suffix(" (x86_64/linux)"))
        .unwrap_or("");
    let Some((_, probe)) = releases.iter().find(|(r, _)| r == release) else {
        fail(&format!(
            "OpenSIPS version \"{version}\" (from {source}) is not supported: this module's ABI \
             declarations were verified for {} on x86_64/linux only (see README.md, \"Supported \
             OpenSIPS releases\"). Point OPENSIPS_BIN at a supported opensips binary, or set \
             OPENSIPS_FULL_VERSION/OPENSIPS_COMPILE_FLAGS.",
            releases
                .iter()
                .map(|(r, _)| r.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
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
    if let Some((_, name, _)) = probe.iter().find(|(k, _, v)| k == "sig" && *v != 1) {
        fail(&format!(
            "OpenSIPS {release}: the core symbol {name} changed its type (probe result); \
             this release needs a code change, not only a profile"
        ));
    }
    let profile = releases
        .iter()
        .find(|(_, p)| p == probe)
        .map(|(r, _)| r.clone())
        .expect("the release itself matches");
    let major: u32 = release
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major >= 4 {
        println!("cargo:rustc-cfg=opensips_4");
    }
    println!("cargo:rustc-env=RTPPROXY_HOST_SIGNATURE_SOURCE={source}");
    println!("cargo:rustc-env=RTPPROXY_HOST_RELEASE={release}");
    println!("cargo:rustc-env=RTPPROXY_HOST_PROFILE={profile}");
    println!(
        "cargo:warning=building for OpenSIPS {release} (host profile {profile}, from {source})"
    );

    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    std::fs::write(
        out.join("host_version.rs"),
        format!(
            "/// Must equal the core's OPENSIPS_FULL_VERSION.\n\
             pub const OPENSIPS_FULL_VERSION: &std::ffi::CStr = c{version:?};\n\
             /// Must equal the core's OPENSIPS_COMPILE_FLAGS.\n\
             pub const OPENSIPS_COMPILE_FLAGS: &std::ffi::CStr = c{flags:?};\n\
             /// The OpenSIPS release built for.\n\
             pub const HOST_RELEASE: &str = {release:?};\n\
             /// The host profile (first release with the same measured layouts).\n\
             pub const HOST_PROFILE: &str = {profile:?};\n"
        ),
    )
    .expect("write host_version.rs");
    std::fs::write(
        out.join("host_profile.rs"),
        probed_constants(&profile, probe),
    )
    .expect("write host_profile.rs");

    let value = |name: &str| {
        probe
            .iter()
            .find(|(_, n, _)| n == name)
            .map(|(_, _, v)| *v)
            .unwrap_or_else(|| fail(&format!("probe result of {release} lacks {name}")))
    };
    let bindings = bindgen::Builder::default()
        .header("include/opensips_abi.h")
        .clang_arg(format!("-DOPENSIPS_MAJOR={major}"))
        .clang_arg(format!("-DPROBED_MAX_MI_PARAMS={}", value("MAX_MI_PARAMS")))
        .clang_arg(format!(
            "-DPROBED_MAX_MI_ALIASES={}",
            value("MAX_MI_ALIASES")
        ))
        .clang_arg(format!(
            "-DPROBED_SIZEOF_PV_SPEC_T={}",
            value("SIZEOF_PV_SPEC_T")
        ))
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

/// Every recorded probe result with its release (`3.6.8`), in version order.
fn verified_releases() -> Vec<(String, Probe)> {
    let dir = Path::new(RESULTS_DIR);
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", dir.display())));
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(release) = name
            .strip_prefix("opensips-")
            .and_then(|n| n.strip_suffix(".txt"))
        else {
            continue;
        };
        let text = std::fs::read_to_string(entry.path()).expect("read probe result");
        let mut probe = Probe::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let mut it = line.split_whitespace();
            match (it.next(), it.next(), it.next().and_then(|v| v.parse().ok())) {
                (Some(kind), Some(name), Some(value)) => {
                    probe.push((kind.to_string(), name.to_string(), value))
                }
                _ => fail(&format!("{}: bad line {line:?}", entry.path().display())),
            }
        }
        out.push((release.to_string(), probe));
    }
    // Version order (3.6.10 after 3.6.9), so a profile is named after its first release.
    out.sort_by_key(|(r, _)| -> Vec<u32> { r.split('.').filter_map(|p| p.parse().ok()).collect() });
    out
}

/// `sys::probed`: the profile's sizes and offsets (`usize`) and constants (`i64`).
fn probed_constants(profile: &str, probe: &Probe) -> String {
    let mut s = format!(
        "/// Sizes, offsets and constants of host profile {profile}, as measured by\n\
         /// tests/abi_probe/probe.c against the release's own headers.\n\
         pub mod probed {{\n"
    );
    for (kind, name, value) in probe {
        match kind.as_str() {
            "size" | "offset" => s.push_str(&format!("    pub const {name}: usize = {value};\n")),
            "const" => s.push_str(&format!("    pub const {name}: i64 = {value};\n")),
            _ => {}
        }
    }
    s.push_str("}\n");
    s
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
