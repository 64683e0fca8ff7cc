#!/usr/bin/env python3
"""Start the real RTPProxy engine embedded in PyPI's rtp.io, for the integration tests.

Usage: rtpio_engine.py SOCKET [SOCKET ...]
  SOCKET is an RTPProxy `-s` argument, e.g. udp:127.0.0.1:40000, tcp:127.0.0.1:40001,
  udp6:::1:40002, unix:/tmp/x.sock, cunix:/tmp/y.sock.

Prints READY on stdout once the engine object exists, then serves until stdin is closed
(or, with RTPIO_ENGINE_FOREVER=1 in the environment, until it is killed)
(the test harness holds the pipe and closes it, or kills this process, when done).
RTPIO_ENGINE_LISTEN in the environment sets the media address (`-l`; default 127.0.0.1).
Exit status 2 means rtp.io is not importable; 3 means the engine refused the arguments.
"""
import os
import sys
import time

try:
    from rtp.io import rtpproxy
except Exception as exc:  # noqa: BLE001 - any import problem means "no engine"
    print(f"NO-RTPIO {type(exc).__name__}: {exc}", flush=True)
    sys.exit(2)


def main() -> int:
    args = ["-F"]
    for spec in sys.argv[1:]:
        args += ["-s", spec]
    args += ["-l", os.environ.get("RTPIO_ENGINE_LISTEN") or "127.0.0.1"]
    try:
        engine = rtpproxy(extra_args=args)
    except Exception as exc:  # noqa: BLE001
        print(f"FAILED {type(exc).__name__}: {exc}", flush=True)
        return 3
    print("READY", flush=True)
    try:
        if os.environ.get("RTPIO_ENGINE_FOREVER"):
            while True:
                time.sleep(3600)
        sys.stdin.read()
    except KeyboardInterrupt:
        pass
    del engine
    return 0


if __name__ == "__main__":
    sys.exit(main())
