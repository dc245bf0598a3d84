#!/usr/bin/env python3
"""A WebSocket-over-HTTP/2 client (RFC 8441) for Periscope's tests, with the `h2`
library and hand-made RFC 6455 frames.

Through a CONNECT tunnel with TLS (ALPN "h2" only), or with --h2c straight to the
proxy's listener as HTTP/2 with prior knowledge. It checks that the proxy's SETTINGS
allow extended CONNECT, opens a WebSocket with :protocol websocket, sends a masked
text and a masked binary message, reads their echoes, then closes with 1000 and
reads the server's Close. Prints a JSON line:
{"alpn": ..., "enable_connect_protocol": ..., "status": ..., "text": ...,
 "binary_hex": ..., "close_code": ..., "close_reason": ...}
A status other than 200 is reported and the client stops there.
"""

import argparse
import json
import os
import socket
import ssl
import struct
import sys

import h2.config
import h2.connection
import h2.events
import h2.settings

TEXT, BINARY, CLOSE = 0x1, 0x2, 0x8


def frame(opcode, payload):
    """A final, masked client frame (RFC 6455 §5.2)."""
    head = bytes([0x80 | opcode])
    if len(payload) < 126:
        head += bytes([0x80 | len(payload)])
    elif len(payload) < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", len(payload))
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def parse_frame(buffer):
    """(opcode, payload, rest) for the first whole frame in `buffer`, else None."""
    if len(buffer) < 2:
        return None
    opcode, length = buffer[0] & 0x0F, buffer[1] & 0x7F
    masked = buffer[1] & 0x80
    at = 2
    if length == 126:
        if len(buffer) < 4:
            return None
        (length,) = struct.unpack("!H", buffer[2:4])
        at = 4
    elif length == 127:
        if len(buffer) < 10:
            return None
        (length,) = struct.unpack("!Q", buffer[2:10])
        at = 10
    if masked:
        sys.exit("the server sent a masked frame")
    if len(buffer) < at + length:
        return None
    return opcode, buffer[at:at + length], buffer[at + length:]


class Client:
    def __init__(self, sock):
        self.sock = sock
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.stream = None
        self.status = None
        self.settings = None
        self.data = b""
        self.ended = False

    def flush(self):
        self.sock.sendall(self.h2.data_to_send())

    def pump(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            sys.exit("the proxy closed the connection")
        for event in self.h2.receive_data(chunk):
            if isinstance(event, h2.events.RemoteSettingsChanged):
                self.settings = {code: change.new_value
                                 for code, change in event.changed_settings.items()}
            elif isinstance(event, h2.events.ResponseReceived):
                self.status = int(dict(event.headers)[b":status"])
            elif isinstance(event, h2.events.DataReceived):
                self.data += event.data
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                self.ended = True
        self.flush()

    def send(self, opcode, payload):
        self.h2.send_data(self.stream, frame(opcode, payload))
        self.flush()

    def receive(self):
        while True:
            parsed = parse_frame(self.data)
            if parsed:
                opcode, payload, self.data = parsed
                return opcode, payload
            if self.ended:
                sys.exit("the stream ended before a whole frame arrived")
            self.pump()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--proxy", required=True, help="host:port")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/")
    parser.add_argument("--cacert", help="the proxy's CA (TLS through a CONNECT tunnel)")
    parser.add_argument("--h2c", action="store_true",
                        help="HTTP/2 with prior knowledge to the proxy, ws:// target")
    parser.add_argument("--text", default="hello over h2")
    args = parser.parse_args()

    proxy_host, proxy_port = args.proxy.rsplit(":", 1)
    sock = socket.create_connection((proxy_host, int(proxy_port)), timeout=20)
    authority = f"{args.host}:{args.port}"
    alpn = None
    if not args.h2c:
        sock.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
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
        sock = context.wrap_socket(sock, server_hostname=args.host)
        alpn = sock.selected_alpn_protocol()

    client = Client(sock)
    client.h2.initiate_connection()
    client.flush()
    while client.settings is None:
        client.pump()
    enabled = client.settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL)
    report = {"alpn": alpn, "enable_connect_protocol": enabled}
    if enabled != 1:
        print(json.dumps(report), flush=True)
        return

    client.stream = client.h2.get_next_available_stream_id()
    client.h2.send_headers(client.stream, [
        (":method", "CONNECT"), (":protocol", "websocket"),
        (":scheme", "http" if args.h2c else "https"),
        (":path", args.path), (":authority", authority),
        ("sec-websocket-version", "13"),
        ("origin", f"{'http' if args.h2c else 'https'}://{authority}"),
    ])
    client.flush()
    while client.status is None:
        client.pump()
    report["status"] = client.status
    if client.status != 200:
        print(json.dumps(report), flush=True)
        return

    client.send(TEXT, args.text.encode())
    opcode, payload = client.receive()
    report["text"] = payload.decode() if opcode == TEXT else None
    client.send(BINARY, bytes(range(256)))
    opcode, payload = client.receive()
    report["binary_hex"] = payload.hex() if opcode == BINARY else None
    client.send(CLOSE, struct.pack("!H", 1000) + b"bye")
    opcode, payload = client.receive()
    if opcode == CLOSE and len(payload) >= 2:
        report["close_code"] = struct.unpack("!H", payload[:2])[0]
        report["close_reason"] = payload[2:].decode()
    # RFC 8441 §5: after the closing handshake the stream ends like any other, from
    # both sides; a client that just drops the connection leaves it reset instead.
    client.h2.end_stream(client.stream)
    client.flush()
    while not client.ended:
        client.pump()
    report["stream_ended"] = True
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
