#!/usr/bin/env python3
"""A user-space UDP delay proxy: puts a relay's control socket DELAY_MS away, each way.

    examples/udp_delay.py LISTEN_PORT TARGET_PORT DELAY_MS

Listens on 127.0.0.1:LISTEN_PORT; every datagram is sent on to 127.0.0.1:TARGET_PORT after
DELAY_MS, from an upstream socket of its own per client address (so replies find their way
back), and every reply is handed back to that client after DELAY_MS. Upstream sockets idle
for 30 s are closed. Prints READY once listening. Loopback only.
"""
import asyncio
import sys
import time


class Upstream(asyncio.DatagramProtocol):
    def __init__(self, front, client, delay):
        self.front, self.client, self.delay = front, client, delay
        self.transport = None
        self.used = time.monotonic()

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, _addr):
        self.used = time.monotonic()
        loop = asyncio.get_running_loop()
        loop.call_later(self.delay, self.front.sendto, data, self.client)


class Front(asyncio.DatagramProtocol):
    def __init__(self, target, delay):
        self.target, self.delay = target, delay
        self.ups = {}
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        loop = asyncio.get_running_loop()
        up = self.ups.get(addr)
        if up is None:
            up = Upstream(self.transport, addr, self.delay)
            self.ups[addr] = up
            loop.create_task(self.connect(up, data))
            return
        up.used = time.monotonic()
        loop.call_later(self.delay, self.send_up, up, data)

    async def connect(self, up, first):
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(
            lambda: up, local_addr=("127.0.0.1", 0), remote_addr=self.target
        )
        loop.call_later(self.delay, self.send_up, up, first)

    @staticmethod
    def send_up(up, data):
        if up.transport is not None and not up.transport.is_closing():
            up.transport.sendto(data)

    async def sweep(self):
        while True:
            await asyncio.sleep(5)
            now = time.monotonic()
            for addr, up in list(self.ups.items()):
                if now - up.used > 30 and up.transport is not None:
                    up.transport.close()
                    del self.ups[addr]


async def main():
    listen, target, delay_ms = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    loop = asyncio.get_running_loop()
    front = Front(("127.0.0.1", target), delay_ms / 1000.0)
    await loop.create_datagram_endpoint(lambda: front, local_addr=("127.0.0.1", listen))
    print("READY", flush=True)
    await front.sweep()


if __name__ == "__main__":
    asyncio.run(main())
