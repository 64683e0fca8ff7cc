#!/usr/bin/env bash
# End-to-end load benchmark: sipp UAC -> OpenSIPS (rtpproxy_offer / rtpproxy_answer /
# rtpproxy_unforce) -> sipp UAS, with a real rtpproxy relay, on loopback only.
#
# For our module and, when --c-module is given, the C module of the same OpenSIPS build, it
# places calls at rising rates (each step RATE calls/s for DURATION s) and reports per step and
# per module:
#   - whether every call succeeded (a call whose offer or answer fails is made to fail: the
#     INVITE gets a 500, the 200 OK is dropped),
#   - call set-up time p50/p99: INVITE sent -> 200 OK received at the UAC, from sipp's
#     -trace_shortmsg timestamps (microseconds; sipp's -trace_rtt only has whole ms),
#   - OpenSIPS CPU per call (ms): utime+stime of every OpenSIPS process, from /proc, before
#     and after the step ("cpu"), and the same less what those processes burn when idle over
#     the step's time, measured for 5 s before the first step ("net"),
#   - sipp's CPU per call (ms): utime+stime of the UAC and the UAS over the step ("sipp"), and
#     OpenSIPS's CPU divided by it ("norm"). sipp does the same work per call whichever module
#     OpenSIPS runs, so "norm" cancels what the machine's load and clock do to both,
#   - the relay's active sessions after the step (0 = every session was deleted at BYE).
# With --pairs N it runs, per rate, N pairs of steps ours/C (alternating which goes first) and
# prints each pair's ratio of "norm" (ours/C) and the median per rate; no module stops early.
# With --syscalls it also counts OpenSIPS's system calls and context switches per call (perf).
# With --baseline a third stack ("none") runs the same script without any rtpproxy module or
# function: what OpenSIPS costs per call on its own. In pair mode each pair then also prints
# the modules' own footprints, (ours - none) / (C - none).
# A module stops climbing at its first step with a failed call. Both stacks (same OpenSIPS
# binary, same script, same number of workers, a relay and a sipp UAS each) run side by side
# and the steps alternate between them, so background load hits both alike. The UAC is sipp's
# built-in `uac`; the UAS answers 200 OK at once (see uas.xml below).
#
# Usage: examples/bench_calls.sh [options]
#   --ours PATH        our module (default: cargo build --release, target/release/librtpproxy.so)
#   --c-module PATH    the C module to compare with (e.g. /opt/opensips/lib64/opensips/modules/rtpproxy.so)
#   --rates "R1 R2 .." call rates to try, calls/s (default "100 200 400 800")
#   --duration S       seconds per step (default 10)
#   --workers N        OpenSIPS udp_workers (default 4)
#   --flags F          flags for rtpproxy_offer/rtpproxy_answer (default "co")
#   --keep             keep the work directory (logs, configs, traces)
#   --delay MS         put each relay MS ms away, each way (examples/udp_delay.py in front of its
#                      control socket)
#   --async            also run our module with the async script (async offer and unforce, the
#                      answer blocking in the reply route, as issue 11 defines it), as "async"
#   --async-answer     with --async: the answer async too (tm suspends the reply route; an
#                      answer that fails is counted as a failed call)
#   --pairs N          N interleaved ours/C pairs per rate (needs --c-module); prints the ratios
#   --syscalls         count system calls per call with `perf stat` (needs perf, root or
#                      kernel.perf_event_paranoid <= 1)
#   --baseline         also run OpenSIPS without the module ("none"), for the footprints
# Environment: BENCH_PERF_EXTRA (more perf events for --syscalls, e.g. probe_libc:malloc;
# their counts are in the kept work directory's *.perf files), OPENSIPS_BIN (default /opt/opensips/sbin/opensips), OPENSIPS_MODULES (default
# <prefix>/lib64/opensips/modules), RTPPROXY_BIN (default /opt/rtpproxy/bin/rtpproxy).
# Needs: sipp, python3.
set -euo pipefail

cd "$(dirname "$0")/.."

OPENSIPS_BIN=${OPENSIPS_BIN:-/opt/opensips/sbin/opensips}
RTPPROXY_BIN=${RTPPROXY_BIN:-/opt/rtpproxy/bin/rtpproxy}
RATES="100 200 400 800"
DURATION=10
WORKERS=4
FLAGS="co"
OURS=""
CMOD=""
KEEP=0
DELAY=0
ASYNC=0
ASYNC_ANSWER=0
PAIRS=0
SYSCALLS=0
BASELINE=0

while [ $# -gt 0 ]; do
    case "$1" in
        --ours) OURS=$2; shift 2 ;;
        --c-module) CMOD=$2; shift 2 ;;
        --rates) RATES=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --workers) WORKERS=$2; shift 2 ;;
        --flags) FLAGS=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --delay) DELAY=$2; shift 2 ;;
        --async) ASYNC=1; shift ;;
        --async-answer) ASYNC_ANSWER=1; shift ;;
        --pairs) PAIRS=$2; shift 2 ;;
        --syscalls) SYSCALLS=1; shift ;;
        --baseline) BASELINE=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

die() { echo "bench_calls: $*" >&2; exit 1; }
[ -x "$OPENSIPS_BIN" ] || die "no OpenSIPS at $OPENSIPS_BIN (set OPENSIPS_BIN)"
[ -x "$RTPPROXY_BIN" ] || die "no rtpproxy at $RTPPROXY_BIN (set RTPPROXY_BIN)"
command -v sipp >/dev/null || die "sipp is not installed (Debian: sip-tester)"
command -v python3 >/dev/null || die "python3 is needed"
MPATH=${OPENSIPS_MODULES:-$(dirname "$(dirname "$OPENSIPS_BIN")")/lib64/opensips/modules}
[ -f "$MPATH/tm.so" ] || die "no tm.so in $MPATH (set OPENSIPS_MODULES)"
if [ -z "$OURS" ]; then
    echo "== cargo build --release"
    cargo build --release --quiet
    OURS=${CARGO_TARGET_DIR:-target}/release/librtpproxy.so
fi
[ -f "$OURS" ] || die "our module $OURS does not exist"
[ "$PAIRS" = 0 ] || [ -n "$CMOD" ] || die "--pairs needs --c-module"
[ "$SYSCALLS" = 0 ] || command -v perf >/dev/null || die "--syscalls needs perf"
OURS=$(realpath "$OURS")
if [ -n "$CMOD" ]; then
    [ -f "$CMOD" ] || die "C module $CMOD does not exist"
    CMOD=$(realpath "$CMOD")
fi

WORK=$(mktemp -d /tmp/bench_calls.XXXXXX)
PIDS=()
cleanup() {
    local p _
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for _ in $(seq 1 30); do
        for p in "${PIDS[@]}"; do
            kill -0 "$p" 2>/dev/null && break
        done
        kill -0 "$p" 2>/dev/null || break
        sleep 0.1
    done
    for p in "${PIDS[@]}"; do
        kill -9 "$p" 2>/dev/null || true
    done
    if [ "$KEEP" = 1 ]; then echo "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until something listens on UDP port $1 (from /proc/net/udp).
wait_udp() {
    local hex
    hex=$(printf ':%04X ' "$1")
    for _ in $(seq 1 200); do
        grep -q "$hex" /proc/net/udp && return 0
        sleep 0.05
    done
    return 1
}

# Active sessions of the relay whose control port is $1 (`I` command).
relay_sessions() {
    python3 - "$1" <<'EOF'
import os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
cookie = "bench%d" % os.getpid()
s.sendto(("%s I" % cookie).encode(), ("127.0.0.1", int(sys.argv[1])))
reply = s.recv(4096).decode(errors="replace")
for line in reply.splitlines():
    if "active sessions:" in line:
        print(line.split("active sessions:")[1].strip())
        break
else:
    print("?")
EOF
}

# CPU clock ticks (utime+stime) of OpenSIPS main process $1 and all its children.
cpu_ticks() {
    local total=0 p f
    for p in "$1" $(pgrep -P "$1" || true); do
        [ -r "/proc/$p/stat" ] || continue
        # the command name "(opensips)" has no blanks, so fields split plainly
        read -r -a f < "/proc/$p/stat"
        total=$((total + f[13] + f[14]))
    done
    echo "$total"
}
TCK=$(getconf CLK_TCK)

# CPU clock ticks (utime+stime) of process $1 alone.
proc_ticks() {
    local f
    read -r -a f < "/proc/$1/stat" || { echo 0; return; }
    echo $((f[13] + f[14]))
}

# Runs "$@" and writes the CPU seconds (user+system) it and its children used to file $1.
run_timed() {
    python3 -c '
import resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
r = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as f:
    f.write("%.6f\n" % (r.ru_utime + r.ru_stime))
sys.exit(rc)
' "$@"
}

# "syscalls context-switches" per call from `perf stat -x,` output $1 over $2 calls.
perf_per_call() {
    python3 - "$1" "$2" <<'EOF'
import sys
v = {}
for line in open(sys.argv[1]):
    f = line.strip().split(",")
    if len(f) > 2 and f[0].replace(".", "").isdigit():
        v[f[2]] = float(f[0])
n = max(1, int(sys.argv[2]))
print("%.1f %.1f" % (v.get("raw_syscalls:sys_enter", 0) / n, v.get("context-switches", 0) / n))
EOF
}

# Set-up times from a sipp short-message trace: "p50 p99" in ms.
setup_percentiles() {
    python3 - "$1" <<'EOF'
import sys
sent, done = {}, []
for line in open(sys.argv[1], errors="replace"):
    f = line.rstrip("\n").split("\t")
    if len(f) < 7 or f[5] != "CSeq:1 INVITE":
        continue
    t, d, cid, first = float(f[2]), f[3], f[4], f[6]
    if d == "S" and first.startswith("INVITE") and cid not in sent:
        sent[cid] = t
    elif d == "R" and first.startswith("SIP/2.0 200") and cid in sent:
        done.append((t - sent.pop(cid)) * 1000.0)
if not done:
    print("- -")
else:
    done.sort()
    pct = lambda p: done[min(len(done) - 1, int(round(p / 100.0 * (len(done) - 1))))]
    print("%.2f %.2f" % (pct(50), pct(99)))
EOF
}

# The UAS answers at once with 200 OK, without 180: with several OpenSIPS workers a 180 can
# be overtaken by the 200 under load, and sipp's UAC counts a 180 arriving after the 200 as a
# failed call although offer, answer and delete all worked.
cat >"$WORK/uas.xml" <<'EOF'
<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="bench uas">
  <recv request="INVITE" crlf="true"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000

    ]]>
  </send>
  <recv request="ACK" crlf="true"/>
  <recv request="BYE"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
</scenario>
EOF

# Starts a relay and an OpenSIPS with module $2 under the name $1 (script: "sync" or "async"
# in $4); sets SIP_$1, CTL_$1, PID_$1.
start_stack() {
    local name=$1 module=$2 min=$3 kind=${4:-sync} sip ctl uas cfg sock
    sip=$(free_port); ctl=$(free_port); uas=$(free_port)
    # in the work directory: some rtpproxy builds write an accounting file into the cwd
    (cd "$WORK" && exec "$RTPPROXY_BIN" -f -F -l 127.0.0.1 -s "udp:127.0.0.1:$ctl" -m "$min" \
        -M $((min + 9998)) -p "$WORK/$name-rtpproxy.pid" -d ERR >"$WORK/$name-rtpproxy.log" 2>&1) &
    PIDS+=($!)
    disown
    wait_udp "$ctl" || die "$name: rtpproxy did not start"
    sock=$ctl
    if [ "$DELAY" != 0 ]; then
        sock=$(free_port)
        python3 examples/udp_delay.py "$sock" "$ctl" "$DELAY" >"$WORK/$name-delay.log" 2>&1 &
        PIDS+=($!)
        disown
        wait_udp "$sock" || die "$name: delay proxy did not start"
    fi
    sipp -sf "$WORK/uas.xml" -i 127.0.0.1 -p "$uas" -nostdin >"$WORK/$name-uas.log" 2>&1 &
    PIDS+=($!)
    printf -v "UAS_$name" '%s' "$!"
    disown
    wait_udp "$uas" || die "$name: sipp UAS did not start"
    cfg=$WORK/$name.cfg
    cat >"$cfg" <<EOF
log_level=1
stderror_enabled=yes
syslog_enabled=no
udp_workers=$WORKERS
socket=udp:127.0.0.1:$sip
mpath="$MPATH/"
loadmodule "proto_udp.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "sipmsgops.so"
EOF
    if [ "$kind" != none ]; then
        cat >>"$cfg" <<EOF
loadmodule "$module"
modparam("rtpproxy", "rtpproxy_sock", "udp:127.0.0.1:$sock")
EOF
    fi
    if [ "$kind" = none ]; then
        cat >>"$cfg" <<EOF
route {
    \$du = "sip:127.0.0.1:$uas";
    t_on_reply("r");
    if (!t_relay()) sl_reply_error();
}
onreply_route[r] {
    if (has_body("application/sdp")) {
        \$var(answered) = 1;
    }
}
EOF
    elif [ "$kind" = async ]; then
        cat >>"$cfg" <<EOF
route {
    if (is_method("INVITE") && has_body("application/sdp")) {
        async(rtpproxy_offer("$FLAGS"), offered);
        exit;
    }
    if (is_method("BYE|CANCEL")) {
        async(rtpproxy_unforce(), forward);
        exit;
    }
    route(forward);
}
route[offered] {
    if (\$rc < 0) { t_reply(500, "rtpproxy_offer failed"); exit; }
    route(forward);
}
route[forward] {
    \$du = "sip:127.0.0.1:$uas";
    t_on_reply("r");
    if (!t_relay()) sl_reply_error();
}
EOF
        if [ "$ASYNC_ANSWER" = 1 ]; then
            cat >>"$cfg" <<EOF
onreply_route[r] {
    if (has_body("application/sdp")) {
        async(rtpproxy_answer("$FLAGS"), answered);
    }
}
route[answered] {
    if (\$rc < 0) xlog("L_ERR", "bench: async answer failed\n");
}
EOF
        else
            cat >>"$cfg" <<EOF
onreply_route[r] {
    if (has_body("application/sdp")) {
        if (!rtpproxy_answer("$FLAGS")) drop;
    }
}
EOF
        fi
    else
        cat >>"$cfg" <<EOF
route {
    if (is_method("INVITE") && has_body("application/sdp")) {
        if (!rtpproxy_offer("$FLAGS")) { sl_send_reply(500, "rtpproxy_offer failed"); exit; }
    }
    if (is_method("BYE|CANCEL")) rtpproxy_unforce();
    \$du = "sip:127.0.0.1:$uas";
    t_on_reply("r");
    if (!t_relay()) sl_reply_error();
}
onreply_route[r] {
    if (has_body("application/sdp")) {
        if (!rtpproxy_answer("$FLAGS")) drop;
    }
}
EOF
    fi
    "$OPENSIPS_BIN" -F -f "$cfg" -m 512 -M 32 >"$WORK/$name-opensips.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    disown
    wait_udp "$sip" || { cat "$WORK/$name-opensips.log" >&2; die "$name: OpenSIPS did not start"; }
    sleep 2 # let every process start and the relay be probed
    printf -v "SIP_$name" '%s' "$sip"
    printf -v "CTL_$name" '%s' "$ctl"
    printf -v "PID_$name" '%s' "$pid"
}

# One step: module $1 at rate $2. Prints a result line; returns 1 if a call failed.
step() {
    local name=$1 rate=$2 sip ctl pid uas calls limit before after t0 t1 rc stat ok failed pcts sessions cpu
    local uas0 uas1 uac sc="" perfpid=""
    sip=SIP_$name; sip=${!sip}; ctl=CTL_$name; ctl=${!ctl}; pid=PID_$name; pid=${!pid}
    uas=UAS_$name; uas=${!uas}
    calls=$((rate * DURATION))
    limit=$((rate * 5))
    [ "$limit" -lt $(($(ulimit -n) - 100)) ] || limit=$(($(ulimit -n) - 100))
    t0=$(date +%s.%N)
    before=$(cpu_ticks "$pid")
    uas0=$(proc_ticks "$uas")
    if [ "$SYSCALLS" = 1 ]; then
        perf stat -x, -e raw_syscalls:sys_enter,context-switches${BENCH_PERF_EXTRA:+,$BENCH_PERF_EXTRA} -o "$WORK/$name-$rate.perf" \
            -p "$(echo "$pid" $(pgrep -P "$pid") | tr ' ' ,)" >/dev/null 2>&1 &
        perfpid=$!
    fi
    rc=0
    run_timed "$WORK/$name-$rate.uaccpu" sipp -sn uac "127.0.0.1:$sip" -i 127.0.0.1 -p "$(free_port)" -r "$rate" -m "$calls" \
        -l "$limit" -nostdin -recv_timeout 10000 -timeout $((DURATION * 4 + 30))s \
        -trace_shortmsg -shortmessage_file "$WORK/$name-$rate.short" \
        -trace_stat -stf "$WORK/$name-$rate.stat" -fd 1 \
        -trace_err -error_file "$WORK/$name-$rate.err" \
        >"$WORK/$name-$rate.out" 2>&1 || rc=$?
    after=$(cpu_ticks "$pid")
    uas1=$(proc_ticks "$uas")
    t1=$(date +%s.%N)
    if [ -n "$perfpid" ]; then
        kill -INT "$perfpid" 2>/dev/null || true
        wait "$perfpid" 2>/dev/null || true
    fi
    sleep 1
    sessions=$(relay_sessions "$ctl")
    stat=$(tail -n 1 "$WORK/$name-$rate.stat")
    ok=$(echo "$stat" | cut -d';' -f16)
    failed=$(echo "$stat" | cut -d';' -f18)
    if [ "$name" = async ] && [ "$ASYNC_ANSWER" = 1 ]; then
        # a failed async answer cannot drop the reply: count it from the log
        local af
        af=$(grep -c "bench: async answer failed" "$WORK/$name-opensips.log" || true)
        failed=$((failed + af - ${ANSWER_FAILED:-0}))
        ok=$((ok - af + ${ANSWER_FAILED:-0}))
        ANSWER_FAILED=$af
    fi
    pcts=$(setup_percentiles "$WORK/$name-$rate.short")
    # gross, and net of what the same processes burn when idle over the same time
    uac=$(cat "$WORK/$name-$rate.uaccpu" 2>/dev/null || echo 0)
    # gross, net, sipp (UAC + UAS) and gross/sipp
    cpu=$(python3 -c "g = ($after - $before) / $TCK; n = g - ${IDLE_RATE[$name]} / $TCK * ($t1 - $t0); \
s = $uac + ($uas1 - $uas0) / $TCK; k = 1000.0 / max(1, $ok); \
print('%.3f %.3f %.3f %.3f' % (g * k, max(0.0, n) * k, s * k, g / s if s > 0 else 0))")
    [ -n "$perfpid" ] && sc=$(perf_per_call "$WORK/$name-$rate.perf" "$ok")
    TOTAL[$name]=$(( ${TOTAL[$name]:-0} + ok ))
    printf '%-5s %6s %7s %7s %7s %9s %9s %9s %9s %9s %6s %9s %5s %s\n' "$name" "$rate" "$calls" \
        "$ok" "$failed" ${pcts} ${cpu} "$sessions" "$rc" "$sc"
    RESULT[$name,$rate]="$ok $failed ${pcts} $cpu $sessions"
    NORM=$(echo "$cpu" | cut -d' ' -f4)
    [ "$rc" = 0 ] && [ "$failed" = 0 ] && [ "$ok" = "$calls" ]
}

declare -A TOTAL RESULT BEST IDLE_RATE
MODS=(ours)
start_stack ours "$OURS" 20000
if [ "$ASYNC" = 1 ]; then
    MODS+=(async)
    start_stack async "$OURS" 40000 async
fi
if [ -n "$CMOD" ]; then
    MODS+=(c)
    start_stack c "$CMOD" 30000
fi
if [ "$BASELINE" = 1 ]; then
    MODS+=(none)
    start_stack none "" 50000 none
fi

# Idle CPU of each OpenSIPS (timer processes etc.), over the same 5 s, both stacks idle.
declare -A I0
for m in "${MODS[@]}"; do p=PID_$m; I0[$m]=$(cpu_ticks "${!p}"); done
sleep 5
for m in "${MODS[@]}"; do
    p=PID_$m
    IDLE_RATE[$m]=$(python3 -c "print(($(cpu_ticks "${!p}") - ${I0[$m]}) / 5.0)")
done

echo "OpenSIPS: $("$OPENSIPS_BIN" -V | head -1); workers: $WORKERS; flags: \"$FLAGS\"; $DURATION s per step; relay delay: $DELAY ms each way"
echo "ours: $OURS"
[ -n "$CMOD" ] && echo "C:    $CMOD"
for m in "${MODS[@]}"; do
    echo "idle CPU of OpenSIPS ($m): $(python3 -c "print('%.1f' % (${IDLE_RATE[$m]} / $TCK * 1000))") ms/s"
done
echo "cpu = OpenSIPS CPU ms per call; net = the same less the idle CPU over the step;"
echo "sipp = CPU ms per call of sipp (UAC + UAS); norm = cpu / sipp"
[ "$SYSCALLS" = 1 ] && echo "last columns: OpenSIPS system calls and context switches per call"
echo
printf '%-5s %6s %7s %7s %7s %9s %9s %9s %9s %9s %6s %9s %5s\n' module cps calls ok failed \
    "p50(ms)" "p99(ms)" "cpu(ms)" "net(ms)" "sipp(ms)" norm sessions rc
declare -A STOPPED
if [ "$PAIRS" -gt 0 ]; then
    # ours and C only, in pairs; the order alternates so that drift hits both alike
    declare -A RATIOS BAD NORMS FOOT
    for rate in $RATES; do
        for i in $(seq 1 "$PAIRS"); do
            if [ $((i % 2)) = 1 ]; then order="ours c"; else order="c ours"; fi
            [ "$BASELINE" = 1 ] && order=${order/ / none }
            for m in $order; do
                step "$m" "$rate" || { [ "$m" = none ] || BAD[$rate]=1; }
                NORMS[$m]=$NORM
            done
            r=$(python3 -c "o, c = ${NORMS[ours]}, ${NORMS[c]}; print('%.3f' % (o / c if c > 0 else 0))")
            RATIOS[$rate]="${RATIOS[$rate]:-} $r"
            if [ "$BASELINE" = 1 ]; then
                f=$(python3 -c "o, c, n = ${NORMS[ours]}, ${NORMS[c]}, ${NORMS[none]}; \
print('%.3f' % ((o - n) / (c - n) if c > n else 0))")
                FOOT[$rate]="${FOOT[$rate]:-} $f"
                echo "pair $i at $rate cps: ours/C (norm) = $r; footprint (ours-none)/(C-none) = $f"
            else
                echo "pair $i at $rate cps: ours/C (norm) = $r"
            fi
        done
    done
    echo
    echo "Summary: OpenSIPS CPU per call ours/C, normalised by sipp's CPU, median of $PAIRS pairs"
    for rate in $RATES; do
        [ -n "${RATIOS[$rate]:-}" ] || continue
        # shellcheck disable=SC2086
        med=$(python3 -c 'import statistics, sys; print("%.3f" % statistics.median(map(float, sys.argv[1:])))' ${RATIOS[$rate]})
        printf '%6s cps: median %s  pairs:%s  %s\n' "$rate" "$med" "${RATIOS[$rate]}" \
            "$([ -n "${BAD[$rate]:-}" ] && echo "FAILED CALLS" || echo "no failed call")"
        RATIOS[$rate]=""
        if [ -n "${FOOT[$rate]:-}" ]; then
            # shellcheck disable=SC2086
            med=$(python3 -c 'import statistics, sys; print("%.3f" % statistics.median(map(float, sys.argv[1:])))' ${FOOT[$rate]})
            printf '%6s cps: footprint (ours-none)/(C-none) median %s  pairs:%s\n' "$rate" "$med" "${FOOT[$rate]}"
            FOOT[$rate]=""
        fi
    done
    exit 0
fi
for rate in $RATES; do
    for m in "${MODS[@]}"; do
        [ -n "${STOPPED[$m]:-}" ] && continue
        if step "$m" "$rate"; then
            BEST[$m]=$rate
        else
            STOPPED[$m]=1
        fi
    done
done

echo
echo "Summary (figures at the highest rate without a failed call):"
printf '%-5s %9s %9s %9s %9s %9s %12s %16s\n' module "max cps" "p50(ms)" "p99(ms)" "cpu(ms)" \
    "net(ms)" "total calls" "sessions at end"
for m in "${MODS[@]}"; do
    ctl=CTL_$m
    best=${BEST[$m]:-none}
    if [ "$best" = none ]; then
        read -r _ _ p50 p99 cpu net _ <<<"- - - - - - -"
    else
        read -r _ _ p50 p99 cpu net _ <<<"${RESULT[$m,$best]}"
    fi
    printf '%-5s %9s %9s %9s %9s %9s %12s %16s\n' "$m" "$best" "$p50" "$p99" "$cpu" "$net" \
        "${TOTAL[$m]:-0}" "$(relay_sessions "${!ctl}")"
done
