#!/usr/bin/env python3
"""A WebRTC endpoint (aiortc: ICE, DTLS-SRTP, rtcp-mux, BUNDLE) with a minimal SIP/UDP user
agent, for the WebRTC bridging end-to-end tests (tests/e2e_webrtc.rs).

    webrtc_peer.py uac --proxy 127.0.0.1:5060 --port P --user fromwebrtc --seconds 4 --out r.json
    webrtc_peer.py uas --port P --out r.json

uac: INVITE with an aiortc offer to --proxy, ACK on 200, audio for --seconds, BYE.
uas: answers one INVITE with an aiortc answer, audio until BYE, 200 to the BYE.
Both write JSON: ICE/DTLS states reached, RTP packets sent/received (aiortc stats), audio frames
decoded, the SIP status of the INVITE and the BYE, the Call-ID, and the SDP sent and received.
Loopback only: ICE gathers 127.0.0.1 alone and uses no STUN server.
"""

import argparse
import asyncio
import json
import random
import socket
import sys
import time

import aioice.ice
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError

# Loopback only: no interface scan, no STUN.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


def rand(n=10):
    return "".join(random.choice("abcdef0123456789") for _ in range(n))


class Sip:
    def __init__(self, port):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.setblocking(False)
        self.port = port
        self.loop = asyncio.get_running_loop()

    def send(self, text, addr):
        self.sock.sendto(text.encode(), addr)

    async def recv(self, timeout):
        data, addr = await asyncio.wait_for(self.loop.sock_recvfrom(self.sock, 65535), timeout)
        return parse(data.decode(errors="replace")), addr


def parse(text):
    head, _, body = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    hdrs = []
    for l in lines[1:]:
        name, _, value = l.partition(":")
        hdrs.append((name.strip(), value.strip()))
    return {"start": lines[0], "headers": hdrs, "body": body}


def hdr(msg, name):
    for n, v in msg["headers"]:
        if n.lower() == name.lower():
            return v
    return None


def all_hdrs(msg, name):
    return [v for n, v in msg["headers"] if n.lower() == name.lower()]


def status(msg):
    parts = msg["start"].split(" ")
    return int(parts[1]) if parts[0].startswith("SIP/") else None


def build(start, headers, body=""):
    out = [start] + [f"{n}: {v}" for n, v in headers]
    if body:
        out.append("Content-Type: application/sdp")
    out.append(f"Content-Length: {len(body.encode())}")
    return "\r\n".join(out) + "\r\n\r\n" + body


async def media_stats(pc):
    sent = recv = 0
    for s in (await pc.getStats()).values():
        if s.type == "outbound-rtp":
            sent += s.packetsSent
        elif s.type == "inbound-rtp":
            recv += s.packetsReceived
    return sent, recv


class Peer:
    def __init__(self):
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTrack(AudioStreamTrack())
        self.frames = 0
        self.ice_states = []
        self.dtls_states = []
        self.conn_states = []

        @self.pc.on("iceconnectionstatechange")
        def _ice():
            self.ice_states.append(self.pc.iceConnectionState)

        @self.pc.on("connectionstatechange")
        def _conn():
            self.conn_states.append(self.pc.connectionState)

        @self.pc.on("track")
        def _track(track):
            asyncio.ensure_future(self.consume(track))

    async def consume(self, track):
        while True:
            try:
                await track.recv()
            except MediaStreamError:
                return
            self.frames += 1

    def note_dtls(self):
        for t in self.pc.getTransceivers():
            st = t.sender.transport.state if t.sender.transport else None
            if st and st not in self.dtls_states:
                self.dtls_states.append(st)

    async def run_media(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.note_dtls()
            await asyncio.sleep(0.2)
        self.note_dtls()

    async def report(self):
        sent, recv = await media_stats(self.pc)
        return {
            "ice_states": self.ice_states,
            "dtls_states": self.dtls_states,
            "connection_states": self.conn_states,
            "rtp_sent": sent,
            "rtp_received": recv,
            "audio_frames": self.frames,
        }


async def uac(args):
    sip = Sip(args.port)
    proxy = (args.proxy.split(":")[0], int(args.proxy.split(":")[1]))
    peer = Peer()
    if args.sdp_file:
        sdp = open(args.sdp_file, newline="").read()
    else:
        await peer.pc.setLocalDescription(await peer.pc.createOffer())
        sdp = peer.pc.localDescription.sdp
    call_id = rand() + "@webrtc-peer"
    ftag = rand(8)
    uri = f"sip:{args.user}@{args.proxy}"
    me = f"sip:webrtc@127.0.0.1:{args.port}"
    result = {"call_id": call_id, "from_tag": ftag, "offer": sdp}

    def req(method, cseq, to, body="", branch=None):
        return build(
            f"{method} {uri} SIP/2.0",
            [
                ("Via", f"SIP/2.0/UDP 127.0.0.1:{args.port};branch=z9hG4bK{branch or rand()}"),
                ("Max-Forwards", "70"),
                ("From", f"<{me}>;tag={ftag}"),
                ("To", to),
                ("Call-ID", call_id),
                ("CSeq", f"{cseq} {method}"),
                ("Contact", f"<{me}>"),
            ],
            body,
        )

    sip.send(req("INVITE", 1, f"<{uri}>", sdp, "inv" + rand()), proxy)
    final = None
    deadline = time.monotonic() + 15
    while final is None and time.monotonic() < deadline:
        msg, _ = await sip.recv(15)
        st = status(msg)
        if st and st >= 200 and "INVITE" in (hdr(msg, "CSeq") or ""):
            final = msg
    result["invite_status"] = status(final) if final else None
    if final is None or status(final) >= 300:
        if final is not None:
            sip.send(req("ACK", 1, hdr(final, "To")), proxy)
            result["reason"] = final["start"]
        await peer.pc.close()
        return result
    to = hdr(final, "To")
    sip.send(req("ACK", 1, to), proxy)
    result["answer"] = final["body"]
    await peer.pc.setRemoteDescription(RTCSessionDescription(final["body"], "answer"))
    await peer.run_media(args.seconds)
    result.update(await peer.report())
    sip.send(req("BYE", 2, to), proxy)
    bye = None
    deadline = time.monotonic() + 10
    while bye is None and time.monotonic() < deadline:
        msg, _ = await sip.recv(10)
        if status(msg) and "BYE" in (hdr(msg, "CSeq") or ""):
            bye = status(msg)
    result["bye_status"] = bye
    await peer.pc.close()
    return result


async def uas(args):
    sip = Sip(args.port)
    peer = Peer()
    result = {}
    ttag = rand(8)

    def reply(msg, code, reason, body="", totag=True):
        headers = [("Via", v) for v in all_hdrs(msg, "Via")]
        to = hdr(msg, "To")
        if totag and ";tag=" not in to:
            to += f";tag={ttag}"
        headers += [
            ("From", hdr(msg, "From")),
            ("To", to),
            ("Call-ID", hdr(msg, "Call-ID")),
            ("CSeq", hdr(msg, "CSeq")),
            ("Contact", f"<sip:webrtc@127.0.0.1:{args.port}>"),
        ]
        return build(f"SIP/2.0 {code} {reason}", headers, body)

    deadline = time.monotonic() + 20
    media_started = False
    while time.monotonic() < deadline:
        try:
            msg, addr = await sip.recv(1)
        except asyncio.TimeoutError:
            if media_started:
                peer.note_dtls()
            continue
        method = msg["start"].split(" ")[0]
        if method == "INVITE":
            result["call_id"] = hdr(msg, "Call-ID")
            result["offer"] = msg["body"]
            await peer.pc.setRemoteDescription(RTCSessionDescription(msg["body"], "offer"))
            await peer.pc.setLocalDescription(await peer.pc.createAnswer())
            result["answer"] = peer.pc.localDescription.sdp
            sip.send(reply(msg, 200, "OK", result["answer"]), addr)
            result["invite_status"] = 200
        elif method == "ACK":
            media_started = True
            deadline = time.monotonic() + 30
        elif method == "BYE":
            peer.note_dtls()
            result.update(await peer.report())
            sip.send(reply(msg, 200, "OK"), addr)
            result["bye_status"] = 200
            break
    await peer.pc.close()
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=["uac", "uas"])
    ap.add_argument("--proxy")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", default="webrtc")
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--sdp-file")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    try:
        result = asyncio.run(uac(args) if args.role == "uac" else uas(args))
    except Exception as e:  # reported, not hidden
        result = {"error": repr(e)}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
