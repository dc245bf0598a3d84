#!/usr/bin/env python3
"""An HTTP/2-only client for Periscope's tests: CONNECT through the proxy, TLS offering
only "h2" in ALPN, one request with the `h2` library. Prints a JSON line:
{"alpn": ..., "status": ..., "body_sha256": ..., "body_length": ..., "body_text": ...,
 "trailers": {...} or null, "reset": "INTERNAL_ERROR" or null,
 "goaway": "NO_ERROR" or null}
where body_text is the body when it is short, trailers are the response trailers, and
reset and goaway name the error code of a RST_STREAM or GOAWAY the proxy sent.

With --data (a POST body) and --trailer NAME=VALUE (repeatable) it sends a request
body followed by trailers, and `te: trailers`, as gRPC clients do.

As a slow reader (--slow-seconds N --slow-rate BYTES_PER_SECOND) it opens the largest
flow-control windows HTTP/2 allows, so that only the proxy's own limits can stop the
server's data from piling up in it, reads at the given rate for N seconds, then reads
the rest at full speed. It prints "reading slowly" on stderr when the slow phase
starts.
"""

import argparse
import hashlib
import json
import socket
import ssl
import sys
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--proxy", required=True, help="host:port")
    parser.add_argument("--cacert", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/")
    parser.add_argument("--data", help="a request body (the method becomes POST)")
    parser.add_argument("--trailer", action="append", default=[], help="NAME=VALUE")
    parser.add_argument("--slow-seconds", type=float, default=0)
    parser.add_argument("--slow-rate", type=int, default=1 << 20)
    args = parser.parse_args()

    proxy_host, proxy_port = args.proxy.rsplit(":", 1)
    sock = socket.create_connection((proxy_host, int(proxy_port)), timeout=20)
    target = f"{args.host}:{args.port}"
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            sys.exit("proxy closed the connection")
        head += chunk
    if not head.startswith(b"HTTP/1.1 200"):
        sys.exit(f"CONNECT failed: {head!r}")

    context = ssl.create_default_context(cafile=args.cacert)
    context.set_alpn_protocols(["h2"])
    tls = context.wrap_socket(sock, server_hostname=args.host)
    alpn = tls.selected_alpn_protocol()

    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    connection.initiate_connection()
    if args.slow_seconds:
        biggest = 2**31 - 1
        connection.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: biggest})
        connection.increment_flow_control_window(biggest - 65535)
    stream = connection.get_next_available_stream_id()
    has_body = args.data is not None or bool(args.trailer)
    headers = [
        (":method", "POST" if has_body else "GET"), (":scheme", "https"),
        (":authority", target), (":path", args.path),
    ]
    if args.trailer:
        headers.append(("te", "trailers"))
    connection.send_headers(stream, headers, end_stream=not has_body)
    if has_body:
        data = (args.data or "").encode()
        # In frames the size the peer allows; the whole body must fit the initial
        # 64 KiB window (this client does not wait for WINDOW_UPDATEs).
        size = connection.max_outbound_frame_size
        pieces = [data[i:i + size] for i in range(0, len(data), size)] or [b""]
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            connection.send_data(stream, piece, end_stream=last and not args.trailer)
    if args.trailer:
        connection.send_headers(
            stream, [tuple(t.split("=", 1)) for t in args.trailer], end_stream=True)
    tls.sendall(connection.data_to_send())

    status, body, done = None, hashlib.sha256(), False
    length = 0
    text = bytearray()
    trailers, reset, goaway = None, None, None
    # Each read in the slow phase takes this many bytes, then waits for the rate.
    slow_chunk = 16384
    slow_until = None
    while not done:
        if args.slow_seconds and slow_until is None and status is not None:
            slow_until = time.monotonic() + args.slow_seconds
            print("reading slowly", file=sys.stderr, flush=True)
        if slow_until is not None and time.monotonic() < slow_until:
            time.sleep(slow_chunk / args.slow_rate)
            data = tls.recv(slow_chunk)
        else:
            data = tls.recv(65536)
        if not data:
            break
        for event in connection.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                status = int(dict(event.headers)[b":status"])
            elif isinstance(event, h2.events.DataReceived):
                body.update(event.data)
                length += len(event.data)
                if len(text) < 65536:
                    text += event.data
                connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.TrailersReceived):
                trailers = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h2.events.StreamReset):
                reset = h2.errors.ErrorCodes(event.error_code).name
                done = True
            elif isinstance(event, h2.events.ConnectionTerminated):
                goaway = h2.errors.ErrorCodes(event.error_code).name
                done = True
            elif isinstance(event, h2.events.StreamEnded):
                done = True
        try:
            tls.sendall(connection.data_to_send())
        except OSError:
            break
    print(json.dumps({
        "alpn": alpn,
        "status": status,
        "body_length": length,
        "body_sha256": body.hexdigest(),
        "body_text": text.decode("utf-8", "replace") if len(text) < 65536 else None,
        "trailers": trailers,
        "reset": reset,
        "goaway": goaway,
    }), flush=True)


if __name__ == "__main__":
    main()
