#!/usr/bin/env python3
"""A conformant WebSocket echo backend (Python `websockets`), for running Autobahn through a proxy.
usage: python3 echo_backend.py PORT    (needs: pip install -r backend-requirements.txt)
No size, queue or fragment caps (Autobahn 9.* sends up to 16 MiB, in 64-byte fragments), no pings,
permessage-deflate offered (Autobahn 12.* and 13.*)."""
import asyncio, os, sys

os.environ.setdefault("WEBSOCKETS_MAX_FRAGMENTS", "10000000")  # read at import time; default 4096 fails 9.3/9.4
from websockets.asyncio.server import serve


async def echo(ws):
    try:
        async for msg in ws:
            await ws.send(msg)
    except Exception:
        pass


async def main(port):
    async with serve(echo, "127.0.0.1", port, max_size=None, max_queue=None,
                     ping_interval=None, compression="deflate") as server:
        await server.serve_forever()


asyncio.run(main(int(sys.argv[1])))
