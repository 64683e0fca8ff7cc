"""Starts the real RTPProxy engine embedded in PyPI's rtp.io with the given command-line
arguments, prints READY, and keeps it running until stdin closes or the process is killed."""
import sys
import time

try:
    from rtp.io import rtpproxy
except ImportError as e:  # pragma: no cover - reported to the caller
    print(f"NO-RTPIO {e}", flush=True)
    sys.exit(1)

engine = rtpproxy(extra_args=sys.argv[1:])
print("READY", flush=True)
try:
    while True:
        time.sleep(3600)
except KeyboardInterrupt:
    pass
