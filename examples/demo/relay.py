#!/usr/bin/env python3
"""A real RTPProxy engine (the one embedded in PyPI's rtp.io) for examples/demo.sh.

Usage: relay.py CONTROL_SOCKET MEDIA_ADDRESS
  e.g. relay.py udp:127.0.0.1:40000 127.0.0.2 - control commands on the first, RTP relayed on
  the second (the address the module writes into the SDP). Prints READY, then serves until
  killed.
"""
import sys
import time

try:
    from rtp.io import rtpproxy
except Exception as exc:  # noqa: BLE001 - any import problem means "no engine"
    print(f"NO-RTPIO {type(exc).__name__}: {exc}", flush=True)
    sys.exit(2)

engine = rtpproxy(extra_args=["-F", "-s", sys.argv[1], "-l", sys.argv[2], "-m", "41000", "-M", "49000"])
print("READY", flush=True)
while True:
    time.sleep(3600)
