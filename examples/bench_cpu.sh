#!/usr/bin/env bash
# OpenSIPS CPU per call, our module vs the C module, on loopback (issue 11, acceptance 3):
# examples/bench_calls.sh with interleaved ours/C pairs at each rate, CPU normalised by sipp's.
# Prints every step, every pair's ratio ours/C and the median per rate (target: <= 0.9, no
# failed call).
#
# Usage: examples/bench_cpu.sh [--c-module PATH] [--rates "1000 1500"] [--pairs 4]
#                              [--duration 10] [other bench_calls.sh options, e.g. --syscalls]
# The C module defaults to rtpproxy.so next to OpenSIPS's tm.so (OPENSIPS_MODULES, else
# <prefix of OPENSIPS_BIN>/lib64/opensips/modules). Environment as for bench_calls.sh.
set -euo pipefail

cd "$(dirname "$0")/.."
OPENSIPS_BIN=${OPENSIPS_BIN:-/opt/opensips/sbin/opensips}
MPATH=${OPENSIPS_MODULES:-$(dirname "$(dirname "$OPENSIPS_BIN")")/lib64/opensips/modules}
CMOD=$MPATH/rtpproxy.so
ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --c-module) CMOD=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) ARGS+=("$1"); shift ;;
    esac
done
exec examples/bench_calls.sh --c-module "$CMOD" --rates "1000 1500" --pairs 4 --duration 10 \
    ${ARGS[@]+"${ARGS[@]}"}
