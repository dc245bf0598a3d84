#!/usr/bin/env python3
"""A WebSocket echo server for Periscope's tests (plain, or TLS with --cert/--key).

Prints "listening on PORT" once ready, and `handshake: [[name, value], ...]` with the
headers of each opening handshake it accepts. Echoes every message (text or binary)
back.
"""

import argparse
import asyncio
import json
import ssl

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed


async def echo(connection):
    print("handshake: " + json.dumps([list(h) for h in connection.request.headers.raw_items()]),
          flush=True)
    try:
        async for message in connection:
            await connection.send(message)
    except ConnectionClosed:
        # Any close code is fine here (the tests use application codes such as 4000,
        # which the library reports as an error).
        pass


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()
    context = None
    if args.cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
    async with serve(echo, "127.0.0.1", args.port, ssl=context, max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"listening on {port}", flush=True)
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    asyncio.run(main())
