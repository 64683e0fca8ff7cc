#!/usr/bin/env python3
"""Sends one RTPProxy control command over UDP and prints the reply (examples/demo.sh).

Usage: ctl.py PORT COMMAND   (the relay's control socket is udp:127.0.0.1:PORT)
"""
import os
import socket
import sys

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.sendto(f"demo{os.getpid()} ".encode() + sys.argv[2].encode(), ("127.0.0.1", int(sys.argv[1])))
reply = s.recv(4096).decode(errors="replace")
print(reply.split(" ", 1)[1].rstrip())
