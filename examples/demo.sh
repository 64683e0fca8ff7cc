#!/usr/bin/env bash
# The module at work, in one command: ./examples/demo.sh
#
# With OpenSIPS 3.6/4.0 (OPENSIPS_BIN, else the one .ci/build-peers puts in
# ~/.cache/rtpproxy-module-peers, else /opt/opensips): OpenSIPS loads our rtpproxy.so with two
# relays (the RTPProxy engine embedded in PyPI's rtp.io, each on its own media address), sipp
# places calls with RTP through them, one relay is stopped mid-run, and the MI views and
# statistics tell what happened.
# Without OpenSIPS: the module's control plane talks to the same engine (set OPENSIPS_BIN for
# the full demo).
#
# RTPPROXY_MODULE=/path/to/rtpproxy.so runs the same steps with another module (e.g. the C one,
# to compare log lines; its MI has no detail view and no statistics). DEMO_METRICS_DIR=dir
# keeps a Prometheus scrape after each step (used for doc/grafana-dashboard.png).
set -euo pipefail
cd "$(dirname "$0")/.."
here=examples/demo
t0=$SECONDS
step() { printf '\n== %s\n' "$*"; }

cargo build --release --lib --examples 2>&1 | grep -vE '^\s*(Compiling|Finished|Fresh)' || true
so=target/release/librtpproxy.so
echo "built $so ($(stat -c %s "$so") bytes)"
t_built=$SECONDS

python3 -c 'import rtp.io' 2>/dev/null || python3 -m pip install -q rtp.io
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

base=$((20000 + RANDOM % 19000)) # below the relays' media ports (41000-49000)
ctl_a=$base ctl_b=$((base + 1)) sip=$((base + 2)) uas=$((base + 3)) uac=$((base + 4)) http=$((base + 5))
relay() { # control port, media address
    python3 $here/relay.py "udp:127.0.0.1:$1" "$2" >"$work/relay-$1.out" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do grep -q READY "$work/relay-$1.out" && return; sleep 0.1; done
    echo "relay on port $1 did not start:"; cat "$work/relay-$1.out"; exit 1
}
relay "$ctl_a" 127.0.0.2; pid_a=${pids[-1]}
relay "$ctl_b" 127.0.0.3; pid_b=${pids[-1]}
echo "relay A: control udp:127.0.0.1:$ctl_a, media on 127.0.0.2 (RTPProxy engine of rtp.io)"
echo "relay B: control udp:127.0.0.1:$ctl_b, media on 127.0.0.3"

bin=${OPENSIPS_BIN:-}
for c in ~/.cache/rtpproxy-module-peers/opensips-3.6.8/sbin/opensips /opt/opensips/sbin/opensips; do
    [ -n "$bin" ] || { [ -x "$c" ] && bin=$c; } || true
done
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "no OpenSIPS here (set OPENSIPS_BIN for the full demo): the control plane against relay A"
    target/release/examples/control_demo "udp:127.0.0.1:$ctl_a"
    exit 0
fi

mods=${OPENSIPS_MODULES:-$(dirname "$(dirname "$bin")")/lib64/opensips/modules}
module=${RTPPROXY_MODULE:-$PWD/$so}
metrics=""
if [ -f "$mods/prometheus.so" ] && [ -f "$mods/httpd.so" ]; then
    metrics="loadmodule \"httpd.so\"
modparam(\"httpd\", \"ip\", \"127.0.0.1\")
modparam(\"httpd\", \"port\", $http)
loadmodule \"prometheus.so\"
modparam(\"prometheus\", \"statistics\", \"rtpproxy:\")
modparam(\"prometheus\", \"group_mode\", 1)
modparam(\"prometheus\", \"labels\", \"rtpproxy: /^(.*)__(.*)\$/\\\\1:node=\\\"\\\\2\\\"/\")"
fi
cat >"$work/opensips.cfg" <<CFG
log_level=3
stderror_enabled=yes
syslog_enabled=no
udp_workers=2
socket=udp:127.0.0.1:$sip
mpath="$mods/"
loadmodule "proto_udp.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "sipmsgops.so"
loadmodule "mi_fifo.so"
modparam("mi_fifo", "fifo_name", "$work/fifo")
$metrics
loadmodule "$module"
modparam("rtpproxy", "rtpproxy_sock", "udp:127.0.0.1:$ctl_a udp:127.0.0.1:$ctl_b")
modparam("rtpproxy", "rtpproxy_timeout", "0.2")
modparam("rtpproxy", "rtpproxy_retr", 2)
modparam("rtpproxy", "rtpproxy_disable_tout", 2)
route {
    if (is_method("INVITE")) {
        if (!t_newtran()) exit; # a retransmission: the transaction answers it
        if (has_body("application/sdp") && !rtpproxy_offer("co")) { t_reply(503, "No RTP relay"); exit; }
    }
    if (is_method("BYE")) rtpproxy_unforce();
    \$du = "sip:127.0.0.1:$uas";
    t_on_reply("r");
    t_relay();
}
onreply_route[r] {
    if (has_body("application/sdp")) rtpproxy_answer("co");
}
CFG
"$bin" -F -f "$work/opensips.cfg" >"$work/opensips.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -p "$work/fifo" ] && break; sleep 0.1; done
if [ ! -p "$work/fifo" ]; then echo "OpenSIPS did not start:"; tail -20 "$work/opensips.log"; exit 1; fi
mi() { opensips-cli -o "fifo_file=$work/fifo" -x mi "$@" 2>&1 | sed "s/\x1b\[[0-9;]*m//g" || true; }
if [ -n "$metrics" ] && [ -n "${DEMO_METRICS_DIR:-}" ]; then # a Prometheus scrape every 0.5 s
    mkdir -p "$DEMO_METRICS_DIR"
    while sleep 0.5; do
        curl -s "http://127.0.0.1:$http/metrics" >"$DEMO_METRICS_DIR/.scrape" \
            && mv "$DEMO_METRICS_DIR/.scrape" "$DEMO_METRICS_DIR/$(date +%s.%N | cut -c1-14).prom"
    done &
    pids+=($!)
fi
# sipp as the callee: answers, echoes every RTP packet back (-rtp_echo), waits for the BYE.
callee() {
    (cd "$work" && exec sipp -sf "$OLDPWD/$here/uas_echo.xml" -i 127.0.0.1 -p "$uas" -mp 16000 \
        -rtp_echo -nostdin -trace_msg -message_file "callee-$1.log" "${@:2}" >/dev/null 2>&1) &
    pids+=($!)
}
calls() { # n: places n calls (sipp's built-in caller), prints the outcome
    callee plain -m "$1"
    sleep 0.3
    if (cd "$work" && sipp -sn uac "127.0.0.1:$sip" -i 127.0.0.1 -p "$uac" -m "$1" -r 20 -nostdin \
        -timeout 15s -trace_stat -stf stat.csv >/dev/null 2>&1); then
        echo "  $1 of $1 calls completed"
    else
        ok=$(awk -F';' 'NR==1{for(i=1;i<=NF;i++) if($i=="SuccessfulCall(C)") c=i} NR>1{v=$c} END{print v+0}' "$work/stat.csv")
        echo "  $ok of $1 calls completed"
    fi
    rm -f "$work/stat.csv"
    kill "${pids[-1]}" 2>/dev/null || true # the callee, also when a call never reached it
    wait "${pids[-1]}" 2>/dev/null || true
}
step "0. OpenSIPS $("$bin" -V | head -1 | awk '{print $3}') runs with $(basename "$module") and the two relays; its first probe found both:"
sleep 0.5
mi rtpproxy_show | python3 $here/show.py brief

step "1. One call with audio. The relay writes its own address (127.0.0.2 or .3) and ports into the SDP:"
python3 - "$work/audio.pcap" <<'PY'
import sys  # the first 100 packets (2 s) of sipp's G.711 sample
src = open("/usr/share/sip-tester/g711a.pcap", "rb").read()
out, off = [src[:24]], 24
for _ in range(100):
    n = int.from_bytes(src[off + 8:off + 12], "little")
    out.append(src[off:off + 16 + n]); off += 16 + n
open(sys.argv[1], "wb").write(b"".join(out))
PY
callee rtp -m 1
sleep 0.3
(cd "$work" && sipp -sf "$OLDPWD/$here/uac_rtp.xml" "127.0.0.1:$sip" -i 127.0.0.1 -p "$uac" -mp 18000 \
    -m 1 -nostdin -timeout 15s -trace_msg -message_file caller-rtp.log >/dev/null 2>&1) \
    && echo "  call completed" || echo "  call FAILED"
kill "${pids[-1]}" 2>/dev/null || true
wait "${pids[-1]}" 2>/dev/null || true
python3 $here/show.py sdp "$work/caller-rtp.log" "$work/callee-rtp.log"
echo "  (=> lines were rewritten by the module; the callee's answer is rewritten the same way for the caller)"
echo "  100 RTP packets caller -> relay -> callee, echoed callee -> relay -> caller; the relays count:"
for r in "A $ctl_a" "B $ctl_b"; do
    set -- $r
    echo "  relay $1: $(python3 $here/ctl.py "$2" I | grep -E 'sessions created|packets' | tr '\n' ',' | sed 's/,$//; s/,/, /g')"
done

step "2. Relay B stops answering (SIGSTOP). 20 more calls: the module fails over to A and takes B out:"
kill -STOP "$pid_b"
calls 20
echo "  our module's detailed view, rtpproxy_show detail=1:"
mi rtpproxy_show detail=1 | python3 $here/show.py nodes
echo "  statistics, get_statistics rtpproxy: (timeouts/failovers = what B cost):"
mi get_statistics rtpproxy: | python3 $here/show.py stats
echo "  B's first unanswered command (0.2 s) took it out for every worker; the calls it would have had went to A."

step "3. Relay B resumes (SIGCONT); after rtpproxy_disable_tout (2 s) it is probed and back in selection:"
kill -CONT "$pid_b"
sleep 3
calls 10
mi rtpproxy_show detail=1 | python3 $here/show.py nodes

step "4. Both relays stop: a new call is refused (the script answers 503), and comes through again once they resume:"
kill -STOP "$pid_a" "$pid_b"
echo "  both stopped:"
calls 1
kill -CONT "$pid_a" "$pid_b"
sleep 2.5
echo "  both resumed:"
calls 1
mi get_statistics rtpproxy: | python3 $here/show.py stats

step "5. What the module logged (the lines an operator alerts on; see doc/operator-guide.md):"
grep -E ':rtpproxy:' "$work/opensips.log" | grep -vE 'DBG|NOTICE' | sed -E 's/^[A-Z][a-z]{2} [ 0-9:]+ \[[0-9]+\] //' \
    | sed 's/^/  /' | tail -n 22
echo
echo "demo done in $((SECONDS - t_built)) s after the build ($((SECONDS - t0)) s in all)"
