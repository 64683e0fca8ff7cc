#!/usr/bin/env bash
# Runs every cargo-fuzz target for a fixed time each and keeps a tally of executions across runs.
#
#   examples/fuzz.sh [SECONDS] [TARGET ...]     (default: 60 s each, every target in fuzz/Cargo.toml)
#
# Seeds: fuzz/corpus/<target>/ (small files we wrote, committed). What libFuzzer finds is kept
# in fuzz/target/work/<target>/ (not committed) and reused by the next run; crashes land in
# fuzz/artifacts/<target>/. The tally of executions per target across runs is
# fuzz/target/work/executions.tsv; the script prints it at the end.
# Needs the nightly toolchain (`cargo +nightly`) and cargo-fuzz (installed when missing).
# JOBS=N runs N targets at a time (default 1). Exit status 1 when any target crashed.
# FUZZ_FLAGS: cargo-fuzz build flags (default `-O -a -s none`: optimised, with debug assertions
# and overflow checks, no AddressSanitizer: the fuzzed code is safe Rust, so ASan would only cost
# speed, about half of it).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
mapfile -t all < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^opensips-rtpproxy')
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
work=fuzz/target/work
tally=$work/executions.tsv
mkdir -p "$work"
touch "$tally"

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
read -r -a flags <<<"${FUZZ_FLAGS:--O -a -s none}"
echo "== building ${#targets[@]} targets (cargo fuzz build ${flags[*]})"
cargo +nightly fuzz build "${flags[@]}"

crashed=()
run_one() {
    local t=$1 log=$work/$1.log
    mkdir -p "$work/$t" "fuzz/corpus/$t"
    set +e
    cargo +nightly fuzz run "${flags[@]}" "$t" "$work/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 >"$log" 2>&1
    local rc=$?
    set -e
    local n
    n=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    printf '%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$t" "${n:-0}" "$rc" >>"$tally"
    if [ "$rc" -ne 0 ]; then
        echo "!! $t exited $rc; its log: $log"
        grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" | head -10
        return 1
    fi
    echo "   $t: ${n:-?} executions in ${secs} s"
}

jobs=${JOBS:-1}
running=0
for t in "${targets[@]}"; do
    if [ "$jobs" -gt 1 ]; then
        ( run_one "$t" ) &
        running=$((running + 1))
        if [ "$running" -ge "$jobs" ]; then wait -n || crashed+=(one); running=$((running - 1)); fi
    else
        run_one "$t" || crashed+=("$t")
    fi
done
while [ "$running" -gt 0 ]; do wait -n || crashed+=(one); running=$((running - 1)); done

echo "== executions per target, all runs (from $tally)"
awk -F'\t' '{n[$2]+=$3; r[$2]++} END {for (t in n) printf "%-14s %12d  (%d runs)\n", t, n[t], r[t]}' "$tally" | sort
if [ ${#crashed[@]} -gt 0 ]; then
    echo "crashes: see fuzz/artifacts/"; exit 1
fi
