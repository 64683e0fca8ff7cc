#!/usr/bin/env python3
"""Formats opensips-cli MI output for examples/demo.sh.

Usage: show.py sdp CALLER_TRACE CALLEE_TRACE   caller's SDP and the SDP the callee received,
                                                side by side, rewritten lines marked
       show.py brief < rtpproxy_show.json         one line per relay: enabled or disabled
       show.py nodes < rtpproxy_show-detail.json one line per relay
       show.py stats < get_statistics.json       the module-wide statistics on a few lines
"""
import json
import sys


def first_invite_sdp(path):
    text = open(path, errors="replace").read().replace("\r", "")
    start = text.find("INVITE sip:")
    body = text[start:].split("\n\n", 1)[1]
    return body.split("\n\n", 1)[0].strip("\n").split("\n")


def sdp(caller, callee):
    a, b = first_invite_sdp(caller), first_invite_sdp(callee)
    w = max(len(x) for x in a) + 2
    print(f"     {'caller sent':<{w}}callee received")
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else ""
        y = b[i] if i < len(b) else ""
        mark = "  " if x == y else "=>"
        print(f"  {mark} {x:<{w}}{y}")


def all_nodes(doc):
    sets = doc.get("Sets", []) if isinstance(doc, dict) else doc
    return [n for s in sets for n in s.get("Nodes", [])]


def brief(doc):
    for n in all_nodes(doc):
        print(f"  {n['url']}: {'disabled' if n['disabled'] else 'enabled'}")


def nodes(doc):
    for n in all_nodes(doc):
        extra = ""
        if "last_disabled_reason" in n:
            extra = f"; last disabled {n.get('last_disabled_ago_s')}s ago: {n['last_disabled_reason']}"
        print(
            f"  {n['url']}: {n.get('state')}, calls {n.get('active_calls')}, "
            f"commands {n.get('commands')}, timeouts {n.get('timeouts')}, rtt {n.get('rtt_us')}us{extra}"
        )


def stats(doc):
    keep = ["offers", "answers", "deletes", "offers_failed", "timeouts", "failovers",
            "retransmissions", "active_calls", "enabled_nodes"]
    vals = {k.split(":", 1)[1]: v for k, v in doc.items()}
    print("  " + ", ".join(f"{k} {vals[k]}" for k in keep if k in vals))


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "sdp":
        sdp(sys.argv[2], sys.argv[3])
    else:
        raw = sys.stdin.read()
        try:
            doc = json.loads(raw)
        except ValueError:
            print("  " + raw.strip().replace("\n", " "))
            sys.exit(0)
        {"brief": brief, "nodes": nodes, "stats": stats}[mode](doc)
