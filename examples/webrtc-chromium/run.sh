#!/usr/bin/env bash
# Acceptance 2 of issue 15: a real browser (headless Chromium, fake microphone, JsSIP over
# WebSocket) and a plain-RTP sipp (-rtp_echo: it sends back what it gets) call each other through
# OpenSIPS 3.6.8 (proto_ws) + our module (rtpproxy_offer/answer "xw" / "xp", rtpproxy_unforce)
# + RTPProxy 3.2 with its dtls_gw and ice_lite modules: 1. Chromium calls sipp, 2. sipp calls
# Chromium. Loopback only (relay media on 127.0.0.2). Prints the browser's ICE/DTLS states and
# RTP counts, and the relay's per-session RTP counters after each BYE.
#
# Needs (none of it is a build dependency of the module):
#   OPENSIPS_BIN, RTPPROXY_BIN    as for the e2e tests (RTPProxy with lib/rtpproxy/rtpp_dtls_gw.so
#                                 and rtpp_ice_lite.so next to it)
#   PROTO_WS                      proto_ws.so of the same OpenSIPS 3.6.8 build (the peers build
#                                 leaves it out: `make all module=proto_ws` in the 3.6.8 sources)
#   JS_DIR                        a directory with node_modules/{jssip,puppeteer-core,esbuild}
#                                 (`npm install jssip puppeteer-core@22 esbuild`)
#   chromium (Debian package), node, sipp
# usage: PROTO_WS=... JS_DIR=... examples/webrtc-chromium/run.sh [SECONDS]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
secs=${1:-4}
: "${OPENSIPS_BIN:?}" "${RTPPROXY_BIN:?}" "${PROTO_WS:?}" "${JS_DIR:?}"
mods=$(dirname "$OPENSIPS_BIN")/../lib64/opensips/modules
dso=$(dirname "$RTPPROXY_BIN")/../lib/rtpproxy
so="$repo/target/release/librtpproxy.so"
[ -f "$so" ] || so="$repo/target/debug/librtpproxy.so"
[ -f "$so" ] || (cd "$repo" && cargo build --lib)
work=$(mktemp -d /tmp/webrtc-chromium.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sip=$(free_port); ws=$(free_port); ctl=$(free_port); uas=$(free_port); media=$(free_port)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
export NODE_PATH="$JS_DIR/node_modules"

"$JS_DIR/node_modules/.bin/esbuild" "$JS_DIR/node_modules/jssip/lib/JsSIP.js" --bundle \
  --format=iife --global-name=JsSIP --log-level=warning --outfile="$work/jssip.bundle.js"
cp "$here/page.html" "$work/"

"$RTPPROXY_BIN" -f -F -s "udp:127.0.0.1:$ctl" -l 127.0.0.2 -d info -p "$work/rtpproxy.pid" \
  --dso "$dso/rtpp_dtls_gw.so" --dso "$dso/rtpp_ice_lite.so" > "$work/rtpproxy.log" 2>&1 &
pids+=($!)
cat > "$work/opensips.cfg" <<CFG
log_level=3
stderror_enabled=yes
syslog_enabled=no
udp_workers=2
socket=udp:127.0.0.1:$sip
socket=ws:127.0.0.1:$ws
mpath="$mods/"
loadmodule "proto_udp.so"
loadmodule "$PROTO_WS"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "sipmsgops.so"
loadmodule "cfgutils.so"
loadmodule "$so"
modparam("rtpproxy", "rtpproxy_sock", "udp:127.0.0.1:$ctl")
route {
    if (is_method("MESSAGE")) {
        # the callee browser announces its WebSocket connection (no registrar needed)
        \$shv(ws) = "sip:" + \$si + ":" + \$sp + ";transport=ws";
        sl_send_reply(200, "OK");
        exit;
    }
    if (is_method("INVITE") && has_body("application/sdp")) {
        if (\$tU == "fromwebrtc") {
            if (!rtpproxy_offer("xw")) { sl_send_reply(488, "rtpproxy_offer failed"); exit; }
        } else if (\$tU == "towebrtc") {
            if (!rtpproxy_offer("xp")) { sl_send_reply(488, "rtpproxy_offer failed"); exit; }
        }
    }
    if (is_method("BYE")) rtpproxy_unforce();
    if (\$tU == "towebrtc") \$du = \$shv(ws);
    else \$du = "sip:127.0.0.1:$uas";
    t_on_reply("r");
    t_relay();
}
onreply_route[r] {
    if (has_body("application/sdp")) {
        if (\$tU == "fromwebrtc") rtpproxy_answer("xw");
        else if (\$tU == "towebrtc") rtpproxy_answer("xp");
    }
}
CFG
"$OPENSIPS_BIN" -F -f "$work/opensips.cfg" > "$work/opensips.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do grep -q "is active (capabilities" "$work/opensips.log" && break; sleep 0.2; done

relay_active() {
    python3 - "$ctl" <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
s.sendto(b"c1 I", ("127.0.0.1", int(sys.argv[1])))
print([l for l in s.recv(4096).decode().splitlines() if "active sessions" in l][0].split(":")[1].strip())
PY
}
report() {  # $1: case name, $2: the browser's JSON
    python3 - "$1" "$2" <<'PY'
import json, sys
r = json.load(open(sys.argv[2]))
print("%s: chromium ICE %s (nominated pair %s), DTLS %s, connection %s; RTP sent %s, received %s; "
      "ended by BYE: %s; failed: %s" % (sys.argv[1], r.get("ice_state"), r.get("ice_pair"),
      r.get("dtls"), r.get("connection_state"), r.get("rtp_sent"), r.get("rtp_received"),
      r.get("ended"), r.get("failed")))
PY
}
relay_stats() {  # $1: the how-manieth session ended
    for _ in $(seq 50); do
        [ "$(grep -c 'RTP stats' "$work/rtpproxy.log")" -ge "$1" ] && break; sleep 0.2
    done
    echo "  relay: $(grep -h 'RTP stats' "$work/rtpproxy.log" | sed -n "${1}p" | sed 's/.*RTP stats: //'); sessions after BYE: $(relay_active)"
}

# 1. the browser calls the plain phone (xw)
(cd "$work" && exec sipp -sn uas -i 127.0.0.1 -p "$uas" -mp "$media" -rtp_echo -m 1 \
  -trace_msg -message_file uas.log -nostdin > sipp-uas.out 2>&1) &
pids+=($!)
sleep 0.5
node "$here/driver.js" "ws://127.0.0.1:$ws" "sip:fromwebrtc@127.0.0.1" "$secs" \
  "file://$work/page.html" > "$work/caller.json" 2> "$work/caller.err"
report "chromium -> sipp" "$work/caller.json"
relay_stats 1

# 2. the plain phone calls the browser (xp)
node "$here/driver.js" "ws://127.0.0.1:$ws" "callee:towebrtc" "$secs" \
  "file://$work/page.html" > "$work/callee.json" 2> "$work/callee.err" &
browser=$!
pids+=($browser)
for _ in $(seq 100); do grep -q READY "$work/callee.err" && break; sleep 0.2; done
(cd "$work" && sipp -sn uac "127.0.0.1:$sip" -s towebrtc -i 127.0.0.1 -p "$(free_port)" \
  -mp "$(free_port)" -rtp_echo -m 1 -d "$((secs * 1000 + 2000))" -timeout 60s -nostdin \
  -trace_msg -message_file uac.log > sipp-uac.out 2>&1) || echo "sipp uac: call failed"
wait "$browser" || true
report "sipp -> chromium" "$work/callee.json"
relay_stats 2

grep "ERROR" "$work/opensips.log" | head -5 || true
echo "work dir: $work"
