#!/usr/bin/env bash
# The test command (see README): formatting, lints, all tests, and the export check.
#
# OPENSIPS_BIN   an OpenSIPS 3.6.8 binary for the end-to-end tests
# RTPPROXY_BIN   an rtpproxy 3.2.0 daemon
#   When unset, .ci/build-peers builds them from ../shared/vendor into a cache outside the
#   repository (once; minutes on 2 cores) and they are used from there; without the vendored
#   sources, /opt/opensips and /opt/rtpproxy are used when present.
# CI=true        an end-to-end test that cannot run fails instead of printing SKIPPED
set -euo pipefail
cd "$(dirname "$0")/.."

want=()
[ -n "${OPENSIPS_BIN:-}" ] || want+=(opensips-3.6.8)
[ -n "${RTPPROXY_BIN:-}" ] || want+=(rtpproxy-3.2.0)
if [ ${#want[@]} -gt 0 ]; then
    vendor=${VENDOR_DIR:-$(cd .. && pwd)/shared/vendor}
    if [ -f "$vendor/SHA256SUMS" ]; then
        eval "$(.ci/build-peers --env "${want[@]}")"
    else
        echo "no $vendor/SHA256SUMS: not building the peers"
        if [ -z "${OPENSIPS_BIN:-}" ] && [ -x /opt/opensips/sbin/opensips ]; then
            export OPENSIPS_BIN=/opt/opensips/sbin/opensips
        fi
        if [ -z "${RTPPROXY_BIN:-}" ] && [ -x /opt/rtpproxy/bin/rtpproxy ]; then
            export RTPPROXY_BIN=/opt/rtpproxy/bin/rtpproxy
        fi
    fi
fi
echo "OPENSIPS_BIN=${OPENSIPS_BIN:-(none)} RTPPROXY_BIN=${RTPPROXY_BIN:-(none)} CI=${CI:-}"

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "== cargo build (the module)"
cargo build
echo "== exported symbols"
syms=$(nm -D --defined-only target/debug/librtpproxy.so | awk '{print $3}' | grep -v '^_\?_\?\(init\|fini\|edata\|end\|bss_start\)$' || true)
if [ "$syms" != "exports" ]; then
    echo "unexpected exported symbols:"; echo "$syms"; exit 1
fi
echo "only 'exports' is exported"
echo "== fuzz targets compile"
cargo check --quiet --manifest-path fuzz/Cargo.toml
echo "== cargo test"
set +e
cargo test --no-fail-fast -- --nocapture > target/test-output.txt 2>&1
rc=$?
if [ "$rc" -eq 0 ]; then
    # The fault-injection hooks exist only in a build with the feature: a step of its own.
    echo "== cargo test --features fault-injection (background processes survive faults)"
    cargo build --quiet --lib --features fault-injection \
        && cargo test --features fault-injection --test e2e_control_plane background -- --nocapture \
            >> target/test-output.txt 2>&1
    rc=$?
    cargo build --quiet --lib   # leave the production build in target/
fi
set -e
grep -E '^(test |SKIPPED|test result|---- )' target/test-output.txt || true
if [ "$rc" -ne 0 ]; then
    echo "cargo test failed (exit $rc); every panic, with what followed it:"
    grep -n -B25 -A12 "panicked at" target/test-output.txt | head -300 || true
    echo "the end of its output:"
    tail -100 target/test-output.txt
    exit "$rc"
fi
passed=$(grep -E '^test result' target/test-output.txt | grep -o '[0-9]* passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -E '^test result' target/test-output.txt | grep -o '[0-9]* failed' | awk '{s+=$1} END {print s+0}')
echo "${passed} passed, ${failed} failed"
skipped=$(grep -c 'SKIPPED' target/test-output.txt || true)
if [ "${CI:-}" = true ] && [ "$skipped" -ne 0 ]; then
    echo "CI=true but ${skipped} SKIPPED line(s) were printed"; exit 1
fi
