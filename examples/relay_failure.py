#!/usr/bin/env python3
"""Relay failure while calls flow: our module vs the C module, same OpenSIPS, same load.

Two RTPProxy daemons in one set, rtpproxy_timeout 1 s x rtpproxy_retr 5 (the defaults),
sipp placing calls at a fixed rate through OpenSIPS (rtpproxy_offer / answer / unforce).

  hang: at t=5 s relay A is SIGSTOPped and stays hung for 2.5 x rtpproxy_disable_tout,
        then SIGCONT.
  kill: at t=5 s relay B is SIGKILLed and restarted 10 s later.
  boot: relay B is SIGSTOPped before OpenSIPS starts; calls start as soon as OpenSIPS is up,
        for 30 s; relay B is resumed at t=20 s. Also reports whether B took sessions after
        it resumed (its `I` counters).

For each module it prints failed calls, worst and p99 call-setup time (INVITE -> 200 OK as
sipp measures it) and the number of calls slower than 1 s, plus when each node came back.
In the hang scenario it also prints, from sipp's message trace (-trace_shortmsg):
  - the largest gap between two consecutive responses OpenSIPS sent the caller while calls
    were offered (first to last INVITE): a SIP worker held by a relay shows here;
  - when the module took relay A out (MI rtpproxy_show polled every 20 ms through the FIFO),
    and the worst wait (INVITE sent -> first response other than 100) of the calls placed
    after that moment.

Usage: examples/relay_failure.py [--rate 100] [--disable-tout 10] [--scenario hang|kill|boot|both|all]
                                 [--async]   (also our module with async offer/unforce)
                                 [--async-answer]   (also with the answer async: asyncA)
                                 [--only ours,async,C]   (run only these)
Needs OPENSIPS_BIN (OpenSIPS 3.6.8), RTPPROXY_BIN (rtpproxy daemon), sipp.
Loopback only; every process it starts is stopped at the end.
"""
import argparse
import csv
import socket
import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def env_path(name, default):
    p = os.environ.get(name) or default
    if not p or not os.path.exists(p):
        sys.exit(f"{name} not set or missing ({p})")
    return p


OPENSIPS = env_path("OPENSIPS_BIN", "/opt/opensips/sbin/opensips")
RTPPROXY = env_path("RTPPROXY_BIN", "/opt/rtpproxy/bin/rtpproxy")
MODULES = os.environ.get("OPENSIPS_MODULES") or os.path.join(
    os.path.dirname(os.path.dirname(OPENSIPS)), "lib64/opensips/modules")


class Relay:
    def __init__(self, work, name, port, media_lo):
        self.args = [RTPPROXY, "-f", "-F", "-s", f"udp:127.0.0.1:{port}", "-l", "127.0.0.1",
                     "-m", str(media_lo), "-M", str(media_lo + 3999),
                     "-p", os.path.join(work, f"{name}.pid")]
        self.log = open(os.path.join(work, f"{name}.log"), "w")
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=self.log,
                                     cwd=os.path.dirname(self.log.name))
        time.sleep(0.3)

    def signal(self, sig):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self):
        self.signal(signal.SIGCONT)
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def relay_info(port):
    """The relay's `I` reply as a dict of counters (None if it does not answer)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.0)
    try:
        s.sendto(b"info_1 I", ("127.0.0.1", port))
        text = s.recv(65536).decode(errors="replace")
    except OSError:
        return None
    finally:
        s.close()
    out = {}
    for line in text.split("\n"):
        if ":" in line:
            k, v = line.rsplit(":", 1)
            k = k.replace("info_1", "").strip()
            if v.strip().isdigit():
                out[k] = int(v.strip())
    return out


def opensips_cfg(work, module, sip_port, uas_port, relays, disable_tout, async_script=False):
    socks = " ".join(f"udp:127.0.0.1:{p}" for p in relays)
    routes = (ASYNC_ROUTES if async_script else SYNC_ROUTES).replace("UAS_PORT", str(uas_port))
    answer = ASYNC_ANSWER if async_script == "answer" else SYNC_ANSWER
    return f"""log_level=2
stderror_enabled=yes
syslog_enabled=no
udp_workers=4
socket=udp:127.0.0.1:{sip_port}
mpath="{MODULES}/"
loadmodule "proto_udp.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "sipmsgops.so"
loadmodule "mi_fifo.so"
modparam("mi_fifo", "fifo_name", "{work}/fifo")
modparam("mi_fifo", "reply_dir", "{work}/")
loadmodule "{module}"
modparam("rtpproxy", "rtpproxy_sock", "{socks}")
modparam("rtpproxy", "rtpproxy_disable_tout", {disable_tout})
{routes}{answer}"""


SYNC_ANSWER = """onreply_route[r] {
    if (has_body("application/sdp")) rtpproxy_answer("co");
}
"""

# the answer async too (--async-answer): tm suspends the reply and relays it after the resume
ASYNC_ANSWER = """onreply_route[r] {
    if (has_body("application/sdp")) async(rtpproxy_answer("co"), answered);
}
route[answered] {
    $var(answer_rc) = $rc;
}
"""

SYNC_ROUTES = """route {
    if (is_method("INVITE") && has_body("application/sdp")) {
        if (!rtpproxy_offer("co")) { sl_send_reply(500, "rtpproxy_offer failed"); exit; }
    }
    if (is_method("BYE")) rtpproxy_unforce();
    $du = "sip:127.0.0.1:UAS_PORT";
    t_on_reply("r");
    t_relay();
}
"""

# async offer and unforce; the answer blocks in the reply route (the script issue 11 measures)
ASYNC_ROUTES = """route {
    if (is_method("INVITE") && has_body("application/sdp")) {
        async(rtpproxy_offer("co"), offered);
        exit;
    }
    if (is_method("BYE")) {
        async(rtpproxy_unforce(), forward);
        exit;
    }
    route(forward);
}
route[offered] {
    if ($rc < 0) { t_reply(500, "rtpproxy_offer failed"); exit; }
    route(forward);
}
route[forward] {
    $du = "sip:127.0.0.1:UAS_PORT";
    t_on_reply("r");
    t_relay();
}
"""


def show(work):
    """`rtpproxy_show` over the FIFO (replies go to the work directory: mi_fifo's reply_dir)."""
    return mi_fifo(work, "rtpproxy_show")


def percentile(values, p):
    if not values:
        return 0.0
    v = sorted(values)
    k = min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))
    return v[k]


def mi_fifo(work, method, timeout=2.0):
    """One MI command through OpenSIPS's FIFO (the mi_fifo JSON-RPC framing), without
    starting opensips-cli: cheap enough to poll every 20 ms."""
    name = f"reply_{os.getpid()}_{threading.get_ident()}_{time.monotonic_ns()}"
    path = os.path.join(work, name)
    os.mkfifo(path)
    try:
        req = json.dumps({"jsonrpc": "2.0", "method": method, "id": 1})
        with open(os.path.join(work, "fifo"), "w") as f:
            f.write(f":{name}:{req}")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            data, deadline = b"", time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    chunk = None
                if chunk:
                    data += chunk
                    if data.endswith(b"\n"):
                        break
                elif chunk == b"" and data:
                    break
                else:
                    time.sleep(0.002)
        finally:
            os.close(fd)
        return json.loads(data.decode()).get("result") if data else None
    except (OSError, ValueError):
        return None
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass


class Detector(threading.Thread):
    """Polls MI rtpproxy_show every 20 ms; records when `url` is first seen disabled."""

    def __init__(self, work, url):
        super().__init__(daemon=True)
        self.work, self.url, self.at, self.stop = work, url, None, False

    def run(self):
        while not self.stop and self.at is None:
            s = mi_fifo(self.work, "rtpproxy_show")
            if s:
                for st in s:
                    for n in st.get("Nodes", []):
                        if n.get("url") == self.url and n.get("disabled", 0) != 0:
                            self.at = time.time()
            time.sleep(0.02)


def trace_figures(work, detected_at):
    """From sipp's short message trace: the largest gap (ms) between consecutive responses
    received while INVITEs were being sent, and the worst wait (ms) of an INVITE sent after
    `detected_at` for its first response other than 100 (None when there is no such call)."""
    sent, first_reply, received = {}, {}, []
    invites = []
    for path in glob.glob(os.path.join(work, "uac_*_shortmessages.log")):
        with open(path, errors="replace") as f:
            for line in f:
                cols = line.rstrip("\n").split("\t")
                if len(cols) < 7:
                    continue
                t, way, call, cseq, first = float(cols[2]), cols[3], cols[4], cols[5], cols[6]
                if way == "S" and first.startswith("INVITE"):
                    sent.setdefault(call, t)
                    invites.append(t)
                elif way == "R":
                    received.append(t)
                    if cseq.endswith("INVITE") and not first.startswith("SIP/2.0 100"):
                        first_reply.setdefault(call, t)
    if not invites:
        return None, None, 0, []
    lo, hi = min(invites), max(invites)
    inside = sorted(t for t in received if lo <= t <= hi)
    gap = max((b - a for a, b in zip(inside, inside[1:])), default=0.0) * 1000
    worst, n = None, 0
    if detected_at is not None:
        waits = []
        for call, t in sent.items():
            if t >= detected_at:
                n += 1
                r = first_reply.get(call)
                waits.append((r - t) * 1000 if r is not None else float("inf"))
        worst = max(waits) if waits else None
    slow = sorted(((first_reply.get(c, float("inf")) - t) * 1000, t - lo)
                  for c, t in sent.items())
    return gap, worst, n, [s for s in slow if s[0] > 2000]


def run(label, module, scenario, rate, disable_tout, base_port, async_script=False):
    work = tempfile.mkdtemp(prefix=f"relayfail-{label}-")
    a_port, b_port = base_port, base_port + 1
    sip_port, uas_port, uac_port = base_port + 2, base_port + 3, base_port + 4
    relays = {"A": Relay(work, "A", a_port, 20000), "B": Relay(work, "B", b_port, 40000)}
    if scenario == "boot":
        relays["B"].signal(signal.SIGSTOP)
    with open(os.path.join(work, "opensips.cfg"), "w") as f:
        f.write(opensips_cfg(work, module, sip_port, uas_port, [a_port, b_port], disable_tout,
                             async_script))
    os_log = open(os.path.join(work, "opensips.log"), "w")
    osp = subprocess.Popen([OPENSIPS, "-F", "-f", os.path.join(work, "opensips.cfg")],
                           stdout=os_log, stderr=os_log)
    procs = []
    try:
        for _ in range(100):
            if os.path.exists(os.path.join(work, "fifo")):
                break
            time.sleep(0.1)
        time.sleep(0.1 if scenario == "boot" else 1.5)
        uas = subprocess.Popen(["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(uas_port),
                                "-nostdin"], cwd=work, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        procs.append(uas)
        time.sleep(0.1 if scenario == "boot" else 0.5)
        hang = 2.5 * disable_tout
        duration = (5 + hang + 10) if scenario == "hang" else 30
        calls = int(rate * duration)
        uac = subprocess.Popen(
            ["sipp", "-sn", "uac", f"127.0.0.1:{sip_port}", "-i", "127.0.0.1", "-p",
             str(uac_port), "-r", str(rate), "-m", str(calls), "-nostdin", "-timeout",
             f"{int(duration) + 60}s", "-trace_rtt", "-rtt_freq", "1", "-trace_stat", "-fd", "1",
             "-recv_timeout", "30000", "-trace_shortmsg"],
            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(uac)
        t0 = time.time()
        events = []
        if scenario == "boot":
            events.append((0.0, "B SIGSTOPped since before start-up"))
            time.sleep(20)
            relays["B"].signal(signal.SIGCONT)
            events.append((time.time() - t0, "B SIGCONT"))
        else:
            time.sleep(5)
        if scenario == "boot":
            pass
        elif scenario == "hang":
            detector = Detector(work, f"udp:127.0.0.1:{a_port}")
            relays["A"].signal(signal.SIGSTOP)
            stopped_at = time.time()
            detector.start()
            events.append((stopped_at - t0, "A SIGSTOP"))
            time.sleep(hang)
            detector.stop = True
            relays["A"].signal(signal.SIGCONT)
            events.append((time.time() - t0, "A SIGCONT"))
        else:
            relays["B"].signal(signal.SIGKILL)
            events.append((time.time() - t0, "B SIGKILL"))
            time.sleep(10)
            relays["B"].start()
            events.append((time.time() - t0, "B restarted"))
            back = None
            deadline = time.time() + disable_tout + 15
            while time.time() < deadline:
                s = show(work)
                if s and all(n["disabled"] == 0 for st in s for n in st["Nodes"]):
                    back = time.time() - t0
                    break
                time.sleep(0.5)
            events.append((back, "every node enabled again (MI)" if back else "B NOT back"))
        uac.wait(timeout=duration + 120)
        figures = None
        if scenario == "hang":
            if detector.at is not None:
                events.append((detector.at - t0, "A seen disabled (MI)"))
            # sipp's trace timestamps: wall clock like ours (same host)
            figures = trace_figures(work, detector.at)
        if scenario == "boot":
            info = relay_info(b_port) or {}
            created = {k: v for k, v in info.items() if "created" in k or "total" in k}
            events.append((time.time() - t0, f"B counters after the run: {created or info}"))
        # results
        rtts = []
        for path in glob.glob(os.path.join(work, "uac_*_rtt.csv")):
            with open(path) as f:
                for row in csv.reader(f, delimiter=";"):
                    if len(row) >= 2 and row[1].replace(".", "", 1).isdigit():
                        rtts.append(float(row[1]))
        stats = {}
        for path in glob.glob(os.path.join(work, "uac_*_.csv")) + glob.glob(
                os.path.join(work, "uac_*.csv")):
            if path.endswith("_rtt.csv"):
                continue
            with open(path) as f:
                rows = list(csv.reader(f, delimiter=";"))
            if len(rows) >= 2:
                head, last = rows[0], rows[-1]
                stats = dict(zip(head, last))
        failed = int(stats.get("FailedCall(C)", "-1") or -1)
        ok = int(stats.get("SuccessfulCall(C)", "-1") or -1)
        return {
            "label": label, "calls": calls, "successful": ok, "failed": failed,
            "worst_ms": max(rtts) if rtts else None, "p99_ms": percentile(rtts, 99),
            "p50_ms": percentile(rtts, 50), "over_1s": sum(1 for r in rtts if r > 1000),
            "events": events, "work": work, "figures": figures,
        }
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        osp.send_signal(signal.SIGTERM)
        try:
            osp.wait(timeout=15)
        except subprocess.TimeoutExpired:
            osp.kill()
        for r in relays.values():
            r.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=100)
    ap.add_argument("--disable-tout", type=int, default=10)
    ap.add_argument("--scenario", choices=["hang", "kill", "boot", "both", "all"],
                    default="both")
    ap.add_argument("--ours", default=os.path.join(ROOT, "target/release/librtpproxy.so"))
    ap.add_argument("--c-module", default=os.path.join(MODULES, "rtpproxy.so"))
    ap.add_argument("--async", dest="async_script", action="store_true",
                    help="also run our module with the async script (as 'async')")
    ap.add_argument("--async-answer", action="store_true",
                    help="also run our module with the async script and the answer async too "
                         "(as 'asyncA')")
    ap.add_argument("--only", default="",
                    help="comma-separated labels to run (ours,async,asyncA,C)")
    args = ap.parse_args()
    scenarios = {"both": ["hang", "kill"], "all": ["hang", "kill", "boot"]}.get(
        args.scenario, [args.scenario])
    base = 41000
    for sc in scenarios:
        runs = [("ours", args.ours, False), ("C", args.c_module, False)]
        if args.async_answer:
            runs.insert(1, ("asyncA", args.ours, "answer"))
        if args.async_script:
            runs.insert(1, ("async", args.ours, True))
        for label, module, async_script in runs:
            if args.only and label not in args.only.split(","):
                continue
            if not os.path.exists(module):
                print(f"SKIPPED {label}: {module} missing")
                continue
            r = run(label, module, sc, args.rate, args.disable_tout, base, async_script)
            base += 10
            print(f"[{sc}] {label:4}: {r['calls']} calls, {r['successful']} ok, "
                  f"{r['failed']} failed; setup p50 {r['p50_ms']:.1f} ms, "
                  f"p99 {r['p99_ms']:.1f} ms, worst {r['worst_ms']} ms, "
                  f"{r['over_1s']} calls > 1 s")
            if r["figures"]:
                gap, worst, n, slow = r["figures"]
                worst_s = "none" if worst is None else f"{worst:.1f} ms"
                print(f"        largest gap between responses to the caller while calls were "
                      f"offered: {gap:.1f} ms; worst wait of the {n} calls placed after A was "
                      f"seen disabled: {worst_s}")
                stop = next((t for t, what in r["events"] if what == "A SIGSTOP"), 0.0)
                print(f"        calls that waited over 2 s: {len(slow)}" + "".join(
                    f"; {w:.0f} ms, placed at t={t:.3f}s" for w, t in slow[:5]) +
                    f" (A stopped at t={stop:.3f}s)")
            for t, what in r["events"]:
                print(f"        t={t:.1f}s {what}" if t is not None else f"        {what}")
            print(f"        logs: {r['work']}")


if __name__ == "__main__":
    main()
