#!/usr/bin/env python3
"""A scripted origin that misbehaves on purpose, for Periscope's fault tests.

Connection-level modes (--mode), chosen when the server starts:

  http               read a request head (over TLS with --tls), then answer as the
                     request PATH says (below)
  stall-handshake    accept, read the ClientHello, never answer (TLS peer that hangs)
  partial-hello      accept, read the ClientHello, send the first 20 bytes of a
                     ServerHello record, then nothing
  alert              accept, read the ClientHello, answer with a fatal TLS alert
                     (--alert CODE, default 40 handshake_failure) and close
  silent-close       accept, read whatever comes, close without a byte

HTTP behaviours, by request path (mode `http`):

  /ok                    200 with body "ok\\n", keep-alive
  /slow?seconds=S        200 "slow\\n" after S seconds (default 3), or ?ms=N after N
                         milliseconds: a request in flight
  /drain                 reads the request body (Content-Length or chunked), then 200
                         "received N bytes"; prints `request body: N bytes`
  /big?size=N            200 with N bytes of body (default 100000); prints
                         `send failed after N bytes` when the connection breaks first
  /sink                  reads a chunked request body to its last chunk without
                         parsing the chunks (fast for millions of tiny ones), then 200
                         "received N bytes" counting the bytes on the wire
  /stop-reading          reads the request head and nothing more, for an hour: an
                         upload to it stalls once the socket buffers are full
  /record...             reads the request body, prints `recorded: {json}` (method,
                         target, headers as [name, value] pairs, body as text) and
                         answers 200 "recorded N bytes"
  /gzip-json             200, a small JSON object gzip-encoded (Content-Encoding: gzip)
  /echo-head             200 whose body is the request head as received
  /invalid-status        "HTTP/1.1 abc Broken" status line, then close
  /garbage-response      bytes that are not HTTP at all, then close
  /short-body            Content-Length: 1000, 10 bytes of body, then close
  /truncated-chunked     chunked: one 10-byte chunk and the start of a second, close
  /reset-mid-body        Content-Length: 100000, 1000 bytes, then a TCP RST
  /close-without-response  close right after reading the request
  /huge-header           a response head larger than any proxy keeps (1 MiB)
  /hostile-cookie        200 whose Set-Cookie dates are not dates: `Expires=a\\xff` (not
                         UTF-8) and `Expires=a\\xe2\\x82\\xac` (a multi-byte character)
  anything else          404

Every request head received is printed as `request: METHOD TARGET` (one line), and
every connection as `connection from HOST:PORT`, so a test can tell what reached the
origin. Prints `listening on PORT` once ready. One thread per connection.
"""

import argparse
import gzip
import json
import socket
import ssl
import struct
import sys
import threading
import time


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mode", default="http",
                        choices=["http", "stall-handshake", "partial-hello", "alert",
                                 "silent-close"])
    parser.add_argument("--tls", action="store_true", help="speak HTTPS in mode http")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--alert", type=int, default=40)
    return parser.parse_args()


def say(text):
    print(text, flush=True)


class Reader:
    """Buffered reads from one connection: request heads, then body bytes."""

    def __init__(self, conn):
        self.conn = conn
        self.buffer = b""

    def fill(self):
        try:
            chunk = self.conn.recv(65536)
        except (OSError, ssl.SSLError):
            return False
        if not chunk:
            return False
        self.buffer += chunk
        return True

    def head(self, limit=1 << 20):
        """The request head (up to and including the blank line), or None on EOF."""
        while b"\r\n\r\n" not in self.buffer:
            if len(self.buffer) > limit or not self.fill():
                return None
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        return head + b"\r\n\r\n"

    def exactly(self, count):
        while len(self.buffer) < count:
            if not self.fill():
                return None
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def line(self):
        while b"\r\n" not in self.buffer:
            if not self.fill():
                return None
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def body(self, head):
        """The request body the head announces (Content-Length or chunked), or None."""
        lines = head.decode("latin-1").split("\r\n")[1:]
        fields = {}
        for line in lines:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        if "chunked" in fields.get("transfer-encoding", "").lower():
            body = b""
            while True:
                size_line = self.line()
                if size_line is None:
                    return None
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    while True:  # trailers up to the empty line
                        trailer = self.line()
                        if trailer is None or trailer == b"":
                            return body
                chunk = self.exactly(size + 2)
                if chunk is None:
                    return None
                body += chunk[:-2]
        length = int(fields.get("content-length", "0") or 0)
        return self.exactly(length)


def read_tls_record(conn):
    """Reads one TLS record (the ClientHello, usually) or whatever arrives first."""
    conn.settimeout(10)
    try:
        return conn.recv(65536)
    except OSError:
        return b""
    finally:
        conn.settimeout(None)


def reset(conn):
    """Closes with a TCP RST instead of a FIN."""
    raw = conn
    if isinstance(conn, ssl.SSLSocket):
        raw = socket.socket(fileno=conn.detach())
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.close()


def answer(conn, reader, head):
    """Answers one request; returns False when the connection must end."""
    first_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    say(f"request: {first_line}")
    parts = first_line.split(" ")
    path = parts[1] if len(parts) > 1 else "/"
    # Absolute-form targets (a proxy that forwards them as is) still select a path.
    if "://" in path:
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    path, _, query_text = path.partition("?")
    query = dict(p.partition("=")[::2] for p in query_text.split("&") if p)

    def send(data):
        conn.sendall(data)

    if path == "/ok":
        send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n")
        return True
    if path == "/slow":
        if "ms" in query:
            time.sleep(int(query["ms"]) / 1000)
        else:
            time.sleep(float(query.get("seconds", "3")))
        try:
            send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nslow\n")
        except OSError:
            say("slow answer not delivered")
            return False
        return True
    if path.startswith("/record"):
        body = reader.body(head)
        if body is None:
            say("request body: incomplete")
            return False
        lines = head.decode("latin-1").split("\r\n")
        headers = [list(map(str.strip, line.split(":", 1))) for line in lines[1:] if ":" in line]
        say("recorded: " + json.dumps({
            "method": parts[0],
            "target": parts[1] if len(parts) > 1 else "",
            "headers": headers,
            "body": body.decode("latin-1"),
        }))
        text = f"recorded {len(body)} bytes\n".encode()
        send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
             + str(len(text)).encode() + b"\r\n\r\n" + text)
        return True
    if path == "/gzip-json":
        body = gzip.compress(json.dumps({"hello": "periscope", "numbers": [1, 2, 3]}).encode())
        send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
             b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        return True
    if path == "/echo-head":
        send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
             + str(len(head)).encode() + b"\r\n\r\n" + head)
        return True
    if path == "/drain":
        body = reader.body(head)
        if body is None:
            say("request body: incomplete")
            return False
        say(f"request body: {len(body)} bytes")
        text = f"received {len(body)} bytes\n".encode()
        send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
             + str(len(text)).encode() + b"\r\n\r\n" + text)
        return True
    if path == "/big":
        size = int(query.get("size", "100000"))
        send(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: "
             + str(size).encode() + b"\r\n\r\n")
        block = bytes(range(256)) * 256
        sent = 0
        try:
            while size > 0:
                send(block[:size])
                sent += min(size, len(block))
                size -= min(size, len(block))
        except OSError:
            say(f"send failed after {sent} bytes")
            return False
        return True
    if path == "/sink":
        ending = b"\r\n0\r\n\r\n"
        tail = bytes(reader.buffer[-len(ending):])
        seen = len(reader.buffer)
        reader.buffer = b""
        while not tail.endswith(ending):
            try:
                chunk = conn.recv(1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                say("request body: incomplete")
                return False
            seen += len(chunk)
            tail = (tail + chunk)[-len(ending):]
        say(f"request body: {seen} bytes on the wire")
        text = f"received {seen} bytes\n".encode()
        send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
             + str(len(text)).encode() + b"\r\n\r\n" + text)
        return True
    if path == "/stop-reading":
        time.sleep(3600)
        return False
    if path == "/invalid-status":
        send(b"HTTP/1.1 abc Broken\r\nContent-Length: 0\r\n\r\n")
        return False
    if path == "/garbage-response":
        send(bytes(range(256)) * 4)
        return False
    if path == "/short-body":
        send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n"
             + b"0123456789")
        time.sleep(0.2)
        return False
    if path == "/truncated-chunked":
        send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
             b"a\r\n0123456789\r\n" b"64\r\nonly part of the second chunk")
        time.sleep(0.2)
        return False
    if path == "/reset-mid-body":
        send(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
             b"Content-Length: 100000\r\n\r\n" + b"x" * 1000)
        time.sleep(0.3)
        reset(conn)
        return None
    if path == "/close-without-response":
        return False
    if path == "/huge-header":
        send(b"HTTP/1.1 200 OK\r\n")
        filler = b"X-Filler: " + b"y" * 1000 + b"\r\n"
        try:
            for _ in range(1024):
                send(filler)
            send(b"Content-Length: 0\r\n\r\n")
        except OSError:
            pass
        return False
    if path == "/hostile-cookie":
        send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
             b"Set-Cookie: a=b; Expires=a\xff\r\n"
             b"Set-Cookie: c=d; Expires=a\xe2\x82\xac; Path=/\r\n\r\nok\n")
        return True
    send(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    return True


def serve_http(conn, args, context):
    if context is not None:
        try:
            conn = context.wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError) as error:
            say(f"tls handshake failed: {error}")
            conn.close()
            return
    reader = Reader(conn)
    while True:
        head = reader.head()
        if head is None:
            break
        keep = answer(conn, reader, head)
        if keep is None:  # already reset
            return
        if not keep:
            break
    try:
        conn.close()
    except OSError:
        pass


def serve(conn, peer, args, context):
    say(f"connection from {peer[0]}:{peer[1]}")
    try:
        if args.mode == "http":
            serve_http(conn, args, context)
        elif args.mode == "stall-handshake":
            read_tls_record(conn)
            time.sleep(3600)
        elif args.mode == "partial-hello":
            read_tls_record(conn)
            # Handshake record header claiming 100 bytes, ServerHello type, 15 bytes.
            conn.sendall(b"\x16\x03\x03\x00\x64\x02\x00\x00\x60\x03\x03" + b"\x00" * 9)
            time.sleep(3600)
        elif args.mode == "alert":
            read_tls_record(conn)
            conn.sendall(bytes([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, args.alert]))
            time.sleep(0.2)
            conn.close()
        elif args.mode == "silent-close":
            read_tls_record(conn)
            conn.close()
    except OSError:
        pass


def main():
    args = parse_args()
    context = None
    if args.mode == "http" and args.tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.port))
    listener.listen(128)
    say(f"listening on {listener.getsockname()[1]}")
    while True:
        conn, peer = listener.accept()
        threading.Thread(target=serve, args=(conn, peer, args, context), daemon=True).start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
