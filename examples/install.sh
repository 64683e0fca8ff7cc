#!/usr/bin/env bash
# Builds the module for the OpenSIPS installed here and installs it as rtpproxy.so into that
# OpenSIPS's modules directory.
#
#   examples/install.sh [--modules-dir DIR] [--force] [--no-build]
#
# OPENSIPS_BIN  the opensips binary to build for (default: `opensips` on PATH). The build reads
#               its version and compile flags (`opensips -V`) and picks the matching host
#               profile; an unverified release stops the build with the list of supported ones.
# --modules-dir where to install (default: found from the binary's prefix: the first of
#               lib64/opensips/modules, lib/opensips/modules, lib/x86_64-linux-gnu/opensips/modules
#               that holds tm.so).
# --force       replace an existing rtpproxy.so (it is kept as rtpproxy.so.bak); without it, an
#               existing file is described and left alone.
# --no-build    install target/release/librtpproxy.so as it is (it is still checked).
#               (CARGO_TARGET_DIR is honoured.)
#
# Before installing, the built file is loaded by that opensips in a config check (`opensips -c`),
# so a module OpenSIPS would refuse is never installed.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
die() { echo "install.sh: $*" >&2; exit 1; }

modules_dir="" force=0 build=1
while [ $# -gt 0 ]; do
    case $1 in
        --modules-dir) modules_dir=${2:?--modules-dir needs a directory}; shift 2 ;;
        --modules-dir=*) modules_dir=${1#*=}; shift ;;
        --force) force=1; shift ;;
        --no-build) build=0; shift ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

bin=${OPENSIPS_BIN:-$(command -v opensips || true)}
[ -n "$bin" ] || die "no opensips on PATH; set OPENSIPS_BIN to the opensips binary"
[ -x "$bin" ] || die "OPENSIPS_BIN=$bin is not an executable"
bin=$(readlink -f "$bin")
version=$("$bin" -V | sed -n 's/^version: //p')
[ -n "$version" ] || die "\`$bin -V\` printed no version line"
echo "OpenSIPS: $bin ($version)"

if [ -z "$modules_dir" ]; then
    prefix=$(dirname "$(dirname "$bin")")
    for d in lib64/opensips/modules lib/opensips/modules lib/x86_64-linux-gnu/opensips/modules; do
        if [ -f "$prefix/$d/tm.so" ]; then modules_dir="$prefix/$d"; break; fi
    done
    [ -n "$modules_dir" ] || die "no modules directory with tm.so under $prefix; give --modules-dir"
fi
[ -d "$modules_dir" ] || die "modules directory $modules_dir does not exist"
echo "modules directory: $modules_dir"

so="${CARGO_TARGET_DIR:-$here/target}/release/librtpproxy.so"
if [ "$build" = 1 ]; then
    (cd "$here" && OPENSIPS_BIN="$bin" cargo build --release --lib)
fi
[ -f "$so" ] || die "$so is missing (build first, or drop --no-build)"

# Config check: this opensips must accept the built module (version, flags, script API).
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/check.cfg" <<EOF
mpath="$modules_dir/"
socket=udp:127.0.0.1:5060
loadmodule "proto_udp.so"
loadmodule "tm.so"
loadmodule "$so"
modparam("rtpproxy", "rtpproxy_sock", "udp:127.0.0.1:22222")
route { rtpproxy_offer(); }
EOF
if ! "$bin" -c -f "$work/check.cfg" >"$work/check.log" 2>&1; then
    tail -20 "$work/check.log" >&2
    die "$bin refused the built module (above); nothing installed"
fi
echo "config check: $bin loads the built module"

dest="$modules_dir/rtpproxy.so"
if [ -e "$dest" ]; then
    if cmp -s "$so" "$dest"; then
        echo "$dest is already this build; nothing to do"
        exit 0
    fi
    if grep -q "RTPProxy prober" "$dest" 2>/dev/null; then
        what="an earlier build of this (Rust) module"
    elif grep -q "rtpproxy_sock" "$dest" 2>/dev/null; then
        what="the C rtpproxy module shipped with OpenSIPS"
    else
        what="a file of unknown origin"
    fi
    desc="$dest: $what, $(stat -c '%s bytes, modified %y' "$dest")"
    if [ "$force" != 1 ]; then
        die "refusing to replace $desc; run again with --force to replace it (it is kept as rtpproxy.so.bak)"
    fi
    echo "replacing $desc (kept as $dest.bak)"
    cp -p "$dest" "$dest.bak"
fi
install -m 0644 "$so" "$dest.new"
mv -f "$dest.new" "$dest"
echo "installed $dest (built for $version); load it with: loadmodule \"rtpproxy.so\""
