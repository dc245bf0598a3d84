#!/usr/bin/env python3
"""Hold many idle HTTPS keep-alive connections open through an HTTP proxy (or direct),
and measure the proxy's resident memory while they are open. Stdlib only.

Each connection: TCP to the proxy, `CONNECT host:port`, TLS (verified against --cafile,
SNI = host), one `GET path` with keep-alive, response read whole. Then all of them sit
idle for --settle seconds, the proxy's VmRSS is read, and every connection sends a second
request (proof that they were really held open, not closed behind our back).

Prints one JSON object:
  {"count", "opened", "failed", "open_seconds", "rss_before_kib", "rss_idle_kib",
   "reused_ok", "errors": {message: count}}
"""

import argparse
import concurrent.futures
import json
import resource
import socket
import ssl
import sys
import time
from collections import Counter


def rss_kib(pid):
    if not pid:
        return None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def read_head(sock):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before the response head")
        buf += chunk
        if len(buf) > 65536:
            raise ConnectionError("response head too long")
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head.decode("latin-1"), rest


def read_response(sock):
    head, rest = read_head(sock)
    status_line = head.split("\r\n", 1)[0]
    parts = status_line.split()
    if len(parts) < 2 or not parts[1].isdigit():
        raise ConnectionError(f"bad status line: {status_line!r}")
    status = int(parts[1])
    length = 0
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    body = rest
    while len(body) < length:
        chunk = sock.recv(min(65536, length - len(body)))
        if not chunk:
            raise ConnectionError("connection closed in the body")
        body += chunk
    return status


def open_one(args, ctx):
    if args.proxy:
        phost, _, pport = args.proxy.rpartition(":")
        raw = socket.create_connection((phost, int(pport)), timeout=args.timeout)
        target = f"{args.host}:{args.port}"
        raw.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        head, rest = read_head(raw)
        if rest:
            raise ConnectionError("unexpected bytes after the CONNECT response")
        code = head.split("\r\n", 1)[0].split()
        if len(code) < 2 or code[1] != "200":
            raise ConnectionError(f"CONNECT refused: {head.splitlines()[0]!r}")
    else:
        raw = socket.create_connection((args.host, args.port), timeout=args.timeout)
    sock = ctx.wrap_socket(raw, server_hostname=args.host)
    request(sock, args)
    return sock


def request(sock, args):
    sock.sendall(
        f"GET {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n"
        f"User-Agent: periscope-bench-idle\r\n\r\n".encode()
    )
    status = read_response(sock)
    if status != 200:
        raise ConnectionError(f"status {status}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--proxy", help="HOST:PORT of the HTTP proxy; none = direct")
    p.add_argument("--host", default="localhost")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/1k")
    p.add_argument("--cafile", required=True)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--settle", type=float, default=2.0)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--rss-pid", type=int, default=0)
    args = p.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.count + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(want, soft), hard), hard))

    ctx = ssl.create_default_context(cafile=args.cafile)
    ctx.set_alpn_protocols(["http/1.1"])

    errors = Counter()
    socks = []
    rss_before = rss_kib(args.rss_pid)
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
        futures = [pool.submit(open_one, args, ctx) for _ in range(args.count)]
        for f in concurrent.futures.as_completed(futures):
            try:
                socks.append(f.result())
            except Exception as e:  # noqa: BLE001 - counted and reported
                errors[f"open: {type(e).__name__}: {e}"[:200]] += 1
    open_seconds = time.monotonic() - start
    time.sleep(args.settle)
    rss_idle = rss_kib(args.rss_pid)

    def reuse(sock):
        request(sock, args)

    reused = 0
    with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
        futures = [pool.submit(reuse, s) for s in socks]
        for f in concurrent.futures.as_completed(futures):
            try:
                f.result()
                reused += 1
            except Exception as e:  # noqa: BLE001
                errors[f"reuse: {type(e).__name__}: {e}"[:200]] += 1
    for s in socks:
        try:
            s.close()
        except OSError:
            pass
    print(
        json.dumps(
            {
                "count": args.count,
                "opened": len(socks),
                "failed": args.count - len(socks),
                "open_seconds": round(open_seconds, 3),
                "rss_before_kib": rss_before,
                "rss_idle_kib": rss_idle,
                "reused_ok": reused,
                "errors": dict(errors),
            }
        )
    )


if __name__ == "__main__":
    sys.exit(main())
