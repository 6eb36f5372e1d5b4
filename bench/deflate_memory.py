#!/usr/bin/env python3
"""What permessage-deflate costs wasp per filtered WebSocket, by hand (not part of bench/run.sh).
usage: deflate_memory.py WASP_PID URL deflate|plain [N]   (Python 3 with `websockets`, e.g.
target/autobahn/env/py3). Opens N (default 500) WebSockets to URL (a filtered location in front of a
deflating echo backend, e.g. tests/autobahn/echo_backend.py), offering permessage-deflate or not, and
reports wasp's resident memory growth per connection while they are idle, then after each sent one
4 KiB compressible message and got its echo (every connection active once). Run each case against a
freshly started wasp: memory freed by one run is reused by the next. With `plain` the upstream leg
still negotiates deflate (wasp offers it)."""
import asyncio, sys
from websockets.asyncio.client import connect


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise SystemExit("no VmRSS")


async def measure(pid, url, n, compression):
    base = rss_kib(pid)
    sockets = [await connect(url, compression=compression, max_size=None) for _ in range(n)]
    await asyncio.sleep(1)
    idle = rss_kib(pid)
    message = ("compressible text " * 230)[:4096]
    for ws in sockets:
        await ws.send(message)
        assert await ws.recv() == message
    await asyncio.sleep(1)
    active = rss_kib(pid)
    negotiated = sockets[0].protocol.extensions
    for ws in sockets:
        await ws.close()
    return (idle - base) / n, (active - base) / n, negotiated


async def main(pid, url, mode, n):
    compression = {"deflate": "deflate", "plain": None}[mode]
    idle, active, extensions = await measure(pid, url, n, compression)
    print(f"{mode} ({n} connections, extensions {extensions}): "
          f"{idle:.1f} KiB each idle, {active:.1f} KiB each after one echo")


asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 500))
