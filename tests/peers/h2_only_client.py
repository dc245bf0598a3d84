#!/usr/bin/env python3
"""An HTTP/2-only client for Periscope's tests: CONNECT through the proxy, TLS offering
only "h2" in ALPN, one GET with the `h2` library. Prints a JSON line:
{"alpn": ..., "status": ..., "body_sha256": ..., "body_length": ...}
"""

import argparse
import hashlib
import json
import socket
import ssl
import sys

import h2.config
import h2.connection
import h2.events


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--proxy", required=True, help="host:port")
    parser.add_argument("--cacert", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/")
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
    stream = connection.get_next_available_stream_id()
    connection.send_headers(stream, [
        (":method", "GET"), (":scheme", "https"),
        (":authority", target), (":path", args.path),
    ], end_stream=True)
    tls.sendall(connection.data_to_send())

    status, body, done = None, bytearray(), False
    while not done:
        data = tls.recv(65536)
        if not data:
            break
        for event in connection.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                status = int(dict(event.headers)[b":status"])
            elif isinstance(event, h2.events.DataReceived):
                body.extend(event.data)
                connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                done = True
        tls.sendall(connection.data_to_send())
    print(json.dumps({
        "alpn": alpn,
        "status": status,
        "body_length": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest(),
    }), flush=True)


if __name__ == "__main__":
    main()
