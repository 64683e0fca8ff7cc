#!/usr/bin/env bash
# Acceptance 2 of issue 15: a real browser (headless Chromium, fake microphone) calls a plain-RTP
# sipp UAS through OpenSIPS 3.6.8 (SIP over WebSocket, proto_ws) + our module
# (rtpproxy_offer/answer "xw", rtpproxy_unforce) + RTPProxy 3.2 with its dtls_gw and ice_lite
# modules. Loopback only (relay media on 127.0.0.2). Prints the browser's ICE/DTLS states and RTP
# counts, and the relay's per-session RTP counters after the BYE.
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
loadmodule "$so"
modparam("rtpproxy", "rtpproxy_sock", "udp:127.0.0.1:$ctl")
route {
    if (is_method("INVITE") && has_body("application/sdp")) {
        if (!rtpproxy_offer("xw")) { sl_send_reply(488, "rtpproxy_offer failed"); exit; }
    }
    if (is_method("BYE")) rtpproxy_unforce();
    \$du = "sip:127.0.0.1:$uas";
    t_on_reply("r");
    t_relay();
}
onreply_route[r] {
    if (has_body("application/sdp")) rtpproxy_answer("xw");
}
CFG
"$OPENSIPS_BIN" -F -f "$work/opensips.cfg" > "$work/opensips.log" 2>&1 &
pids+=($!)
(cd "$work" && exec sipp -sn uas -i 127.0.0.1 -p "$uas" -mp "$media" -rtp_echo -m 1 \
  -trace_msg -message_file uas.log -nostdin > sipp.out 2>&1) &
pids+=($!)
for _ in $(seq 50); do grep -q "is active (capabilities" "$work/opensips.log" && break; sleep 0.2; done

NODE_PATH="$JS_DIR/node_modules" node "$here/driver.js" "ws://127.0.0.1:$ws" \
  "sip:fromwebrtc@127.0.0.1" "$secs" "file://$work/page.html" > "$work/chromium.json" 2> "$work/chromium.err"
for _ in $(seq 50); do grep -q "RTP stats" "$work/rtpproxy.log" && break; sleep 0.2; done
active=$(python3 - "$ctl" <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
s.sendto(b"c1 I", ("127.0.0.1", int(sys.argv[1])))
print([l for l in s.recv(4096).decode().splitlines() if "active sessions" in l][0].split(":")[1].strip())
PY
)
python3 - "$work/chromium.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print("chromium: ICE %s (nominated pair %s), DTLS %s, connection %s; RTP sent %s, received %s; "
      "call ended by BYE: %s; failed: %s" % (r.get("ice_state"), r.get("ice_pair"), r.get("dtls"),
      r.get("connection_state"), r.get("rtp_sent"), r.get("rtp_received"), r.get("ended"),
      r.get("failed")))
PY
echo "relay: $(grep -h 'RTP stats' "$work/rtpproxy.log" | sed 's/.*RTP stats: //')"
echo "relay sessions after BYE: $active"
grep -q "ERROR" "$work/opensips.log" && grep "ERROR" "$work/opensips.log" | head -5
echo "work dir: $work"
