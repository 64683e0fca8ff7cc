#!/usr/bin/env bash
# Memory check of the module inside a real OpenSIPS 3.6.8 under valgrind memcheck.
#
#   examples/memcheck.sh [CALLS_PER_BATCH]     (default 600: 2 batches x (600 + 400) = 2,000 calls)
#
# Two real rtpproxy relays (media on 127.0.0.2 and 127.0.0.3) provisioned from a db_text table;
# OpenSIPS (2 UDP workers, small pkg/shm pools) runs in the foreground under
#   valgrind --leak-check=full --show-leak-kinds=definite,indirect
# and takes, per batch, CALLS_PER_BATCH calls with rtpproxy_offer / rtpproxy_answer /
# rtpproxy_unforce (sipp's built-in uac/uas) and 2/3 as many calls with rtpproxy_engage, a late
# offer and a re-INVITE (tests/fixtures/notify/*late_reinvite.xml). Between the batches:
# MI rtpproxy_show / rtpproxy_enable / dbt_reload + rtpproxy_reload, and a relay failure (one
# relay SIGKILLed during calls, then restarted and re-enabled).
#
# Reports: OpenSIPS's `shmem:` and `pkmem:` statistics after a warm-up, after batch 1 and after
# batch 2 (goal: flat between the last two), and the definitely / indirectly lost blocks of every
# OpenSIPS process, split into those whose stack has a frame of our module (goal: 0) and the rest.
# Not a CI step: it takes several minutes on 2 cores. Exit status 1 when a lost block is ours.
#
# OPENSIPS_BIN / RTPPROXY_BIN as for tests/run.sh (built by .ci/build-peers when unset).
# KEEP=1 keeps the scratch directory (its path is printed).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
per_batch=${1:-600}
engaged=$((per_batch * 2 / 3))
rate=${RATE:-20}

if [ -z "${OPENSIPS_BIN:-}" ] || [ -z "${RTPPROXY_BIN:-}" ]; then
    eval "$(.ci/build-peers --env)"
fi
for t in valgrind sipp opensips-cli; do
    command -v "$t" >/dev/null || { echo "memcheck: $t is not installed"; exit 2; }
done
mpath=$(dirname "$(dirname "$OPENSIPS_BIN")")/lib64/opensips/modules
echo "== building the module (debug: full symbols)"
cargo build --lib --quiet
module=$root/target/debug/librtpproxy.so

work=$(mktemp -d /tmp/memcheck.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ "${KEEP:-}" = 1 ] && echo "scratch kept in $work" || rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sip=$(free_port); uas1=$(free_port); uas2=$(free_port); ctl_a=$(free_port); ctl_b=$(free_port)

relay() { # name control media-ip port-min
    (cd "$work" && exec "$RTPPROXY_BIN" -f -F -p "$work/$1.pid" -s "udp:127.0.0.1:$2" -l "$3" \
        -m "$4" -M "$(($4 + 3998))" -d WARN >"$work/$1.log" 2>&1) &
    echo $!
}
relay_a=$(relay relay-a "$ctl_a" 127.0.0.2 20000); pids+=("$relay_a")
relay_b=$(relay relay-b "$ctl_b" 127.0.0.3 30000); pids+=("$relay_b")

mkdir -p "$work/tables"
printf 'rtpproxy_sock(str) set_id(int)\nudp\\:127.0.0.1\\:%s:0\nudp\\:127.0.0.1\\:%s:0\n' "$ctl_a" "$ctl_b" \
    >"$work/tables/rtpproxy_sockets"
fifo=$work/fifo
cat >"$work/opensips.cfg" <<EOF
log_level=2
stderror_enabled=yes
syslog_enabled=no
udp_workers=2
socket=udp:127.0.0.1:$sip
mpath="$mpath/"
loadmodule "proto_udp.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "sipmsgops.so"
loadmodule "dialog.so"
loadmodule "db_text.so"
loadmodule "mi_fifo.so"
modparam("mi_fifo", "fifo_name", "$fifo")
loadmodule "$module"
modparam("rtpproxy", "db_url", "text://$work/tables")
modparam("rtpproxy", "rtpproxy_disable_tout", 2)
route {
    if (has_totag()) {
        if (!loose_route()) match_dialog();
        if (\$rU == "uas") \$du = "sip:127.0.0.1:$uas2"; else \$du = "sip:127.0.0.1:$uas1";
        if (is_method("BYE") && \$rU != "uas") rtpproxy_unforce();
        t_relay();
        exit;
    }
    if (is_method("INVITE") && \$rU == "uas") {
        # engaged calls: late offer, re-INVITE (tests/fixtures/notify/uac_late_reinvite.xml)
        record_route();
        if (!rtpproxy_engage("co")) { sl_send_reply(500, "engage failed"); exit; }
        \$du = "sip:127.0.0.1:$uas2";
        t_relay();
        exit;
    }
    if (is_method("INVITE") && has_body("application/sdp")) {
        if (!rtpproxy_offer("co")) { sl_send_reply(500, "offer failed"); exit; }
    }
    \$du = "sip:127.0.0.1:$uas1";
    t_on_reply("r");
    t_relay();
}
onreply_route[r] {
    if (has_body("application/sdp")) rtpproxy_answer("co");
}
EOF

echo "== OpenSIPS under valgrind (scratch $work)"
valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite,indirect \
    --errors-for-leak-kinds=definite --num-callers=40 --trace-children=no \
    --log-file="$work/vg.%p.log" \
    "$OPENSIPS_BIN" -F -f "$work/opensips.cfg" -m 128 -M 16 >"$work/opensips.log" 2>&1 &
os_pid=$!
pids+=("$os_pid")

mi() { opensips-cli -o "fifo_file=$fifo" -o fifo_reply_dir=/tmp -x mi "$@"; }
for _ in $(seq 1 600); do
    [ -p "$fifo" ] && mi which >/dev/null 2>&1 && break
    kill -0 "$os_pid" 2>/dev/null || { echo "opensips exited:"; tail -30 "$work/opensips.log"; exit 1; }
    sleep 0.5
done
mi which >/dev/null || { echo "opensips did not come up"; tail -30 "$work/opensips.log"; exit 1; }

cp tests/fixtures/notify/uas_late_reinvite.xml "$work/uas_late_reinvite.xml"
cp tests/fixtures/notify/uac_late_reinvite.xml "$work/uac_late_reinvite.xml"
bg_sipp() { # sipp -bg exits 99 and prints "Background mode - PID=[N]"
    local out
    out=$(cd "$work" && sipp "$@" -nostdin -bg 2>&1 || true)
    pids+=("$(sed -n 's/.*PID=\[\([0-9]*\)\].*/\1/p' <<<"$out")")
}
bg_sipp -sn uas -i 127.0.0.1 -p "$uas1"
bg_sipp -sf uas_late_reinvite.xml -i 127.0.0.1 -p "$uas2"
sleep 1

calls() { # kind count -> prints "ok/failed"
    local kind=$1 n=$2 scen=(-sn uac)
    [ "$kind" = engaged ] && scen=(-sf uac_late_reinvite.xml)
    (cd "$work" && sipp "${scen[@]}" "127.0.0.1:$sip" -i 127.0.0.1 -p "$(free_port)" -m "$n" \
        -r "$rate" -l 40 -timeout 900s -nostdin -trace_stat -stf "$kind.csv" >"$work/sipp-$kind.out" 2>&1) || true
    python3 - "$work/$kind.csv" "$kind" "$n" <<'PY'
import sys
rows = [l.rstrip("\n").split(";") for l in open(sys.argv[1]) if l.strip()]
col = {name: i for i, name in enumerate(rows[0])}
last = rows[-1]
print("   %s x%s: %s successful, %s failed" % (sys.argv[2], sys.argv[3],
      last[col["SuccessfulCall(C)"]], last[col["FailedCall(C)"]]))
PY
    rm -f "$work/$kind.csv"
}
stats() { # label: waits until shmem:used_size stays put (tm's wait timer, dialog deletion), then reads
    local prev=-1 now
    for _ in $(seq 1 40); do
        now=$(mi get_statistics shmem:used_size | tr -dc '0-9')
        [ "$now" = "$prev" ] && break
        prev=$now
        sleep 3
    done
    mi get_statistics shmem: pkmem: active_dialogs inuse_transactions >"$work/stats-$1.json"
    python3 - "$work/stats-$1.json" "$1" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
keys = ["shmem:used_size", "shmem:real_used_size", "shmem:max_used_size", "shmem:fragments",
        "dialog:active_dialogs", "tm:inuse_transactions"]
pk = {k: v for k, v in d.items() if k.startswith("pkmem:") and (k.endswith("-real_used_size") or k.endswith("-used_size"))}
print("   %-8s " % sys.argv[2] + "  ".join("%s=%s" % (k.split(":")[1], d.get(k)) for k in keys))
used = sorted((k, v) for k, v in pk.items() if k.endswith("-real_used_size"))
print("            pkmem real_used per process: " + " ".join("%s=%s" % (k.split(":")[1].split("-")[0], v) for k, v in used))
PY
}

echo "== warm-up"
calls plain 50
calls engaged 30
stats warm-up

batch() {
    echo "== batch $1"
    calls plain "$per_batch"
    calls engaged "$engaged"
}
batch 1
stats batch-1

echo "== MI: show / enable / reload"
for i in 1 2 3; do
    mi rtpproxy_show >/dev/null
    mi rtpproxy_enable "udp:127.0.0.1:$ctl_b" 0 >/dev/null
    mi rtpproxy_enable "udp:127.0.0.1:$ctl_b" 1 >/dev/null
    mi dbt_reload >/dev/null
    mi rtpproxy_reload >/dev/null
done
mi rtpproxy_show | tr -d ' \n' | head -c 400; echo

echo "== relay failure: relay B killed during calls, then back"
kill -KILL "$relay_b"
calls plain 100
calls engaged 40
relay_b=$(relay relay-b "$ctl_b" 127.0.0.3 30000); pids+=("$relay_b")
sleep 3
mi rtpproxy_enable "udp:127.0.0.1:$ctl_b" 1 >/dev/null
mi rtpproxy_show | tr -d ' \n' | head -c 400; echo
stats after-failure

batch 2
stats batch-2
python3 - "$work/stats-batch-1.json" "$work/stats-batch-2.json" <<'PY'
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:3])
d = {k: int(b[k]) - int(a[k]) for k in b if k in a and (k.endswith("used_size") or k.endswith("fragments"))}
print("   batch 1 -> batch 2: shmem used_size %+d, real_used_size %+d; pkmem real_used per process %s"
      % (d.get("shmem:used_size", 0), d.get("shmem:real_used_size", 0),
         " ".join("%+d" % v for k, v in sorted(d.items()) if k.startswith("pkmem:") and k.endswith("-real_used_size"))))
PY

echo "== stopping OpenSIPS (valgrind writes its leak reports)"
kill -TERM "$os_pid"
for _ in $(seq 1 240); do kill -0 "$os_pid" 2>/dev/null || break; sleep 0.5; done
wait "$os_pid" 2>/dev/null || true

python3 - "$work" <<'PY'
import glob, re, sys
ours_pat = re.compile(r"librtpproxy\.so|rtpproxy::|opensips_rtpproxy")
tot = {"definitely": [0, 0], "indirectly": [0, 0]}
mine = {"definitely": [0, 0], "indirectly": [0, 0]}
examples = []
logs = sorted(glob.glob(sys.argv[1] + "/vg.*.log"))
for f in logs:
    text = open(f, errors="replace").read()
    for rec in re.split(r"\n==\d+== \n", text):
        m = re.search(r"([\d,]+) (?:\(([\d,]+) direct, ([\d,]+) indirect\) )?bytes in ([\d,]+) blocks are (definitely|indirectly) lost", rec)
        if not m:
            continue
        kind = m.group(5)
        nbytes = int(m.group(1).replace(",", ""))
        blocks = int(m.group(4).replace(",", ""))
        tot[kind][0] += blocks; tot[kind][1] += nbytes
        if ours_pat.search(rec):
            mine[kind][0] += blocks; mine[kind][1] += nbytes
            if len(examples) < 3:
                examples.append(rec.strip()[:3000])
print("== valgrind: %d process logs" % len(logs))
for k in ("definitely", "indirectly"):
    print("   %s lost: %d blocks / %d bytes in all; with a frame of our module: %d blocks / %d bytes"
          % (k, tot[k][0], tot[k][1], mine[k][0], mine[k][1]))
errs = 0
mine_errs = []
for f in logs:
    text = open(f, errors="replace").read()
    m = re.search(r"ERROR SUMMARY: (\d+) errors", text)
    errs += int(m.group(1)) if m else 0
    for rec in re.split(r"\n==\d+== \n", text):
        if re.search(r"Invalid (read|write|free)|uninitialised|Mismatched free|overlap", rec) and ours_pat.search(rec):
            mine_errs.append(rec.strip()[:2000])
print("   memcheck errors (all processes, incl. definite leaks): %d; error contexts with a frame of our module: %d"
      % (errs, len(mine_errs)))
print("   (uninitialised-value reports inside OpenSIPS's shm allocator are shared memory written by another process: valgrind cannot see that)")
for e in mine_errs[:2]:
    print(e)
for e in examples:
    print(e)
sys.exit(1 if mine["definitely"][0] or mine["indirectly"][0] else 0)
PY
