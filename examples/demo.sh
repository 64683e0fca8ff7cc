#!/usr/bin/env bash
# Builds the module and shows it at work.
# - With an OpenSIPS 3.6.8 (OPENSIPS_BIN, or /opt/opensips/sbin/opensips): OpenSIPS loads our
#   rtpproxy.so next to a real RTPProxy engine; MI shows the probed nodes; a sipp call goes
#   through rtpproxy_offer/answer/unforce when sipp is installed.
# - Without OpenSIPS: the module's control plane talks to the RTPProxy engine embedded in
#   PyPI's rtp.io (installed if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --lib --examples
so=target/release/librtpproxy.so
echo "built $so ($(stat -c %s "$so") bytes); exported symbols: $(nm -D --defined-only "$so" | awk '{print $3}' | tr '\n' ' ')"

python3 -c 'import rtp.io' 2>/dev/null || python3 -m pip install -q rtp.io
port=$((20000 + RANDOM % 20000))
work=$(mktemp -d)
cleanup() {
    kill "${os_pid:-}" "${relay_pid:-}" 2>/dev/null || true
    wait "${os_pid:-}" "${relay_pid:-}" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
RTPIO_ENGINE_FOREVER=1 python3 tests/support/rtpio_engine.py "udp:127.0.0.1:$port" > "$work/relay.out" 2>"$work/relay.log" &
relay_pid=$!
for _ in $(seq 50); do grep -q READY "$work/relay.out" 2>/dev/null && break; sleep 0.1; done
echo "RTPProxy engine (rtp.io) listening on udp:127.0.0.1:$port"

bin=${OPENSIPS_BIN:-/opt/opensips/sbin/opensips}
if [ ! -x "$bin" ]; then
    echo "no OpenSIPS here: showing the control plane against the engine"
    exec target/release/examples/control_demo "udp:127.0.0.1:$port"
fi

mods=${OPENSIPS_MODULES:-$(dirname "$(dirname "$bin")")/lib64/opensips/modules}
sip=$((port + 1))
cat > "$work/opensips.cfg" <<CFG
log_level=3
stderror_enabled=yes
syslog_enabled=no
udp_workers=2
socket=udp:127.0.0.1:$sip
mpath="$mods/"
loadmodule "proto_udp.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "sipmsgops.so"
loadmodule "mi_fifo.so"
modparam("mi_fifo", "fifo_name", "$work/fifo")
loadmodule "$PWD/$so"
modparam("rtpproxy", "rtpproxy_sock", "udp:127.0.0.1:$port udp:127.0.0.1:$((port + 2))")
modparam("rtpproxy", "rtpproxy_timeout", "0.2")
route {
    if (has_body("application/sdp")) {
        if (is_method("INVITE")) rtpproxy_offer("co");
    }
    if (is_method("BYE")) rtpproxy_unforce();
    \$du = "sip:127.0.0.1:$((port + 3))";
    t_on_reply("r");
    t_relay();
}
onreply_route[r] {
    if (has_body("application/sdp")) rtpproxy_answer("co");
}
CFG
"$bin" -F -f "$work/opensips.cfg" > "$work/opensips.log" 2>&1 &
os_pid=$!
for _ in $(seq 100); do [ -p "$work/fifo" ] && break; sleep 0.1; done
if [ ! -p "$work/fifo" ]; then echo "OpenSIPS did not start:"; tail -20 "$work/opensips.log"; exit 1; fi
sleep 1
echo "OpenSIPS $("$bin" -V | head -1) running with our module; opensips-cli -x mi rtpproxy_show:"
opensips-cli -o "fifo_file=$work/fifo" -x mi rtpproxy_show
if command -v sipp >/dev/null; then
    uas=$((port + 3))
    (cd "$work" && exec sipp -sn uas -i 127.0.0.1 -p "$uas" -nostdin -trace_msg -message_file uas.log \
        >/dev/null 2>&1) &
    uas_pid=$!
    sleep 0.5
    echo "placing 10 calls with sipp through OpenSIPS ..."
    (cd "$work" && sipp -sn uac "127.0.0.1:$sip" -i 127.0.0.1 -p $((port + 4)) -m 10 -r 10 -nostdin \
        >/dev/null 2>&1) && echo "10 calls completed" || echo "sipp reported failed calls"
    kill "$uas_pid" 2>/dev/null || true
    echo "SDP the called party received for the first call (media now points at the relay):"
    awk '/^INVITE/{f=1} f&&/^v=0/{p=1} p{print} p&&/^$/{exit}' "$work/uas.log" | head -12
    printf '1_demo I' | python3 -c 'import socket,sys; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(2); s.sendto(sys.stdin.buffer.read(),("127.0.0.1",'"$port"')); print("relay:", s.recv(500).decode().replace(chr(10),"; "))'
fi
echo "our log lines:"
grep ':rtpproxy:' "$work/opensips.log" || true
