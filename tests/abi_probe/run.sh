#!/usr/bin/env bash
# Compiles tests/abi_probe/probe.c against one OpenSIPS release's own headers, with the DEFS
# `make -n` prints for a module of a default x86_64 build, runs it and prints its output.
#
#   tests/abi_probe/run.sh <opensips source dir>            probe output on stdout
#   tests/abi_probe/run.sh <opensips source dir> --record   also writes results/opensips-<v>.txt
#
# The source dir is an unpacked release (a tarball, or `git archive <tag>` of OpenSIPS/opensips).
# Nothing is built in the source dir; the probe binary goes to a temporary directory.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "${1:?usage: run.sh <opensips source dir> [--record]}" && pwd)
version=$(sed -n "s/^VERSION_MAJOR = //p; s/^VERSION_MINOR = //p; s/^VERSION_SUBMINOR = //p" "$src/Makefile.defs" | paste -sd.)
[ -n "$version" ] || { echo "run.sh: no VERSION in $src/Makefile.defs" >&2; exit 1; }
defs=(-DMOD_NAME='"abi_probe"' -DHAVE_STDATOMIC -DHAVE_GENERICS -DNAME='"opensips"'
      -DVERSION="\"$version\"" -DARCH='"x86_64"' -DOS='"linux"' -DCOMPILER='"cc"' -D__CPU_x86_64
      -D__OS_linux -D__SMP_yes -DCFG_DIR='"/usr/local/etc/opensips/"' -DVERSIONTYPE='"unknown"'
      -DTHISREVISION='"unknown"' -DFAST_LOCK -DADAPTIVE_WAIT -DADAPTIVE_WAIT_LOOPS=1024
      -DHAVE_GETHOSTBYNAME2 -DHAVE_UNION_SEMUN -DHAVE_MSG_NOSIGNAL -DHAVE_MSGHDR_MSG_CONTROL
      -DHAVE_ALLOCA_H -DHAVE_TIMEGM -DHAVE_EPOLL -DHAVE_SIGIO_RT -DHAVE_SELECT -DPKG_MALLOC
      -DSHM_MMAP -DUSE_MCAST -DDISABLE_NAGLE -DSTATISTICS -DHAVE_RESOLV_RES -DF_MALLOC -DQ_MALLOC
      -DHP_MALLOC -DDBG_MALLOC -DF_PARALLEL_MALLOC)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The header-only inline helpers reference core symbols; the probe never calls them, so the link
# is told to leave them unresolved.
cc -std=gnu11 -w -O0 "${defs[@]}" -I"$src" "$here/probe.c" -o "$tmp/probe" \
    -Wl,--unresolved-symbols=ignore-all
{
    echo "# OpenSIPS $version: tests/abi_probe/probe.c compiled against its own headers (default x86_64 DEFS)"
    "$tmp/probe"
} > "$tmp/out"
cat "$tmp/out"
if [ "${2:-}" = --record ]; then
    mkdir -p "$here/results"
    cp "$tmp/out" "$here/results/opensips-$version.txt"
fi
