#!/usr/bin/env python3
"""A WebSocket client that chats through the proxy one message at a time, for the
tests of intercepting WebSocket messages: for each text in --send it prints
`sent: TEXT`, sends it, and then prints `received: TEXT` for whatever arrives within
--wait seconds. Ends with `closed` after a normal close. ws:// only (CONNECT through
the proxy, as websockets does it).
"""

import argparse
import asyncio

from websockets.asyncio.client import connect


async def chat(args):
    async with connect(args.url, proxy=f"http://{args.proxy}", compression=None,
                       open_timeout=20) as socket:
        print("open", flush=True)
        for text in args.send:
            print(f"sent: {text}", flush=True)
            await socket.send(text)
            try:
                while True:
                    reply = await asyncio.wait_for(socket.recv(), timeout=args.wait)
                    print(f"received: {reply}", flush=True)
            except asyncio.TimeoutError:
                pass
    print("closed", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--proxy", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--wait", type=float, default=2.0)
    parser.add_argument("--send", nargs="+", required=True)
    asyncio.run(chat(parser.parse_args()))


if __name__ == "__main__":
    main()
