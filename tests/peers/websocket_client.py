#!/usr/bin/env python3
"""A scripted WebSocket client for Periscope's tests: connects to an echo server
through the proxy (websockets' own HTTP proxy support, i.e. CONNECT, for ws:// and
wss:// alike) and runs one conversation:

  1. text "hello, periscope"
  2. binary bytes 0..255
  3. ping "are you there" (waits for the matching pong)
  4. a text message sent in three fragments: "frag-", "ment-", "ed"
  5. a binary message of --big-size pseudo-random bytes
  6. close with code 4000, reason "client done"

Prints one JSON line with what came back:
{"extensions": ..., "text": ..., "binary_hex": ..., "pong": true,
 "fragmented": ..., "big_length": ..., "big_sha256": ..., "big_sent_sha256": ...,
 "close_code": ..., "close_reason": ...}
"""

import argparse
import asyncio
import hashlib
import json
import random
import ssl

from websockets.asyncio.client import connect

TIMEOUT = 20


async def converse(args):
    context = None
    if args.url.startswith("wss:"):
        context = ssl.create_default_context(cafile=args.cacert)
    big = random.Random(7).randbytes(args.big_size)
    result = {}
    async with connect(
        args.url,
        proxy=f"http://{args.proxy}",
        ssl=context,
        compression=None if args.no_compression else "deflate",
        max_size=None,
        open_timeout=TIMEOUT,
        close_timeout=TIMEOUT,
        # Pings of our own would add messages the test does not expect.
        ping_interval=None,
    ) as ws:
        result["extensions"] = ws.response.headers.get("Sec-WebSocket-Extensions")

        await ws.send("hello, periscope")
        result["text"] = await asyncio.wait_for(ws.recv(), TIMEOUT)

        await ws.send(bytes(range(256)))
        echo = await asyncio.wait_for(ws.recv(), TIMEOUT)
        result["binary_hex"] = echo.hex() if isinstance(echo, bytes) else None

        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, TIMEOUT)
        result["pong"] = True

        await ws.send(["frag-", "ment-", "ed"])
        result["fragmented"] = await asyncio.wait_for(ws.recv(), TIMEOUT)

        await ws.send(big)
        echo = await asyncio.wait_for(ws.recv(), TIMEOUT)
        result["big_length"] = len(echo)
        result["big_sha256"] = hashlib.sha256(echo).hexdigest()
        result["big_sent_sha256"] = hashlib.sha256(big).hexdigest()

        await ws.close(code=4000, reason="client done")
        result["close_code"] = ws.close_code
        result["close_reason"] = ws.close_reason
    print(json.dumps(result), flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--proxy", required=True, help="host:port")
    parser.add_argument("--url", required=True, help="ws://... or wss://...")
    parser.add_argument("--cacert", help="CA to trust for wss:// (the proxy's)")
    parser.add_argument("--big-size", type=int, default=1 << 20)
    parser.add_argument("--no-compression", action="store_true")
    asyncio.run(converse(parser.parse_args()))


if __name__ == "__main__":
    main()
