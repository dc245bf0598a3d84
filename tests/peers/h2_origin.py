#!/usr/bin/env python3
"""A scripted HTTP/2 origin (TLS, ALPN "h2" first) for Periscope's tests, built on the
`h2` library so that it can send the frames a real server only sends when something
goes wrong. The request path picks the behaviour, once the request has ended:

  /ok                  200 "ok\\n"
  /record...           prints `recorded: {json}` (method, target, headers as [name,
                       value] pairs without the pseudo-headers, body as text) and
                       answers 200 "recorded N bytes\\n", as fault_origin.py does
  /trailers            200, a JSON body describing the request ({"method", "te",
                       "body_length", "trailers"}) and the response trailers
                       `grpc-status: 0` and `x-checksum: <sha256 of the body>`, declared
                       in a `trailer` header (HTTP/1.1 needs that to relay them)
  /20k                 200, 20000 bytes of "x" in two DATA frames (larger than what
                       Periscope sends a script with the call, so it is read in part)
  /rst-mid-body        200 announcing 100000 bytes, 1000 bytes of them, then RST_STREAM
                       INTERNAL_ERROR
  /goaway-refuse       GOAWAY NO_ERROR whose last-stream-id is below this request's
                       stream (RFC 9113 §6.8: the request was not processed and may be
                       retried elsewhere), then close the connection
  /goaway-refuse-once  the same the first time this path is asked for, then /ok
  /goaway-mid-body     200 announcing 100000 bytes, 1000 bytes of them, then GOAWAY
                       INTERNAL_ERROR naming this stream, then close the connection
  anything else        404

It allows extended CONNECT (RFC 8441): `CONNECT :protocol websocket` to /chat is
answered 200 and every WebSocket message on the stream is echoed, a Close included
(which ends the stream); to any other path it is answered 403 "no websockets here".

A client that offers only HTTP/1.1 gets it (Periscope offers the server what its client
offered): /trailers then answers the same, in chunked encoding with the trailers after
the last chunk; anything else is 404. With --h2-only such a client is refused in the
handshake with the alert no_application_protocol, as Go's HTTP/2-only (gRPC) servers
do; it prints `refused a client that does not offer h2`. With --ignore-alpn it
selects no protocol by ALPN and speaks HTTP/2 to every client at once, starting with
its SETTINGS (a server configured for HTTP/2 only, with ALPN left out).

Prints `listening on PORT` once ready, `connection` for each connection and
`request: METHOD PATH` for each request, so a test can tell what reached it.
"""

import argparse
import hashlib
import json
import socket
import ssl
import struct
import threading

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from OpenSSL import SSL

CLOSE = 0x8

refused_once = set()
refused_lock = threading.Lock()


def say(text):
    print(text, flush=True)


class Exchange:
    def __init__(self, headers):
        self.headers = headers
        self.body = bytearray()
        self.trailers = None

    def header(self, name):
        for key, value in self.headers:
            if key == name:
                return value
        return None


def linger(sock):
    """Closing with unread bytes would make the kernel send a TCP RST, and the peer's
    kernel may drop the GOAWAY still unread in its buffer."""
    sock.settimeout(1)
    try:
        while sock.recv(65536):
            pass
    except (OSError, ssl.SSLError):
        pass


def trailers_answer(method, te, body_length, trailers):
    body = json.dumps({
        "method": method,
        "te": te,
        "body_length": body_length,
        "trailers": trailers,
    }).encode()
    return body, [("grpc-status", "0"), ("x-checksum", hashlib.sha256(body).hexdigest())]


def respond(conn, stream, exchange):
    """Returns False when the connection is to be closed."""
    path = exchange.header(":path").split("?", 1)[0]
    if path == "/goaway-refuse-once":
        with refused_lock:
            first = path not in refused_once
            refused_once.add(path)
        path = "/goaway-refuse" if first else "/ok"
    if path.startswith("/record"):
        say("recorded: " + json.dumps({
            "method": exchange.header(":method"),
            "target": exchange.header(":path"),
            "headers": [[k, v] for k, v in exchange.headers if not k.startswith(":")],
            "body": bytes(exchange.body).decode("latin-1"),
        }))
        text = f"recorded {len(exchange.body)} bytes\n".encode()
        conn.send_headers(stream, [(":status", "200"), ("content-type", "text/plain"),
                                   ("content-length", str(len(text)))])
        conn.send_data(stream, text, end_stream=True)
    elif path == "/ok":
        conn.send_headers(stream, [(":status", "200"), ("content-length", "3")])
        conn.send_data(stream, b"ok\n", end_stream=True)
    elif path == "/trailers":
        body, trailers = trailers_answer(exchange.header(":method"), exchange.header("te"),
                                         len(exchange.body), dict(exchange.trailers or []))
        conn.send_headers(stream, [
            (":status", "200"),
            ("content-type", "application/json"),
            ("trailer", "grpc-status, x-checksum"),
        ])
        conn.send_data(stream, body)
        conn.send_headers(stream, trailers, end_stream=True)
    elif path == "/20k":
        conn.send_headers(stream, [(":status", "200"), ("content-length", "20000")])
        conn.send_data(stream, b"x" * 10000)
        conn.send_data(stream, b"x" * 10000, end_stream=True)
    elif path == "/rst-mid-body":
        conn.send_headers(stream, [(":status", "200"), ("content-length", "100000")])
        conn.send_data(stream, b"x" * 1000)
        conn.reset_stream(stream, error_code=h2.errors.ErrorCodes.INTERNAL_ERROR)
    elif path == "/goaway-refuse":
        conn.close_connection(error_code=h2.errors.ErrorCodes.NO_ERROR,
                              last_stream_id=max(stream - 2, 0))
        return False
    elif path == "/goaway-mid-body":
        conn.send_headers(stream, [(":status", "200"), ("content-length", "100000")])
        conn.send_data(stream, b"x" * 1000)
        conn.close_connection(error_code=h2.errors.ErrorCodes.INTERNAL_ERROR,
                              last_stream_id=stream)
        return False
    else:
        conn.send_headers(stream, [(":status", "404"), ("content-length", "0")],
                          end_stream=True)
    return True


class WebSocketEcho:
    """Echoes the RFC 6455 frames of one extended CONNECT stream: client frames are
    masked, the echoes are not."""

    def __init__(self):
        self.buffer = bytearray()

    def receive(self, conn, stream, data):
        """Returns False once the Close was echoed."""
        self.buffer += data
        while True:
            frame = self.next_frame()
            if frame is None:
                return True
            head, payload = frame
            opcode = head & 0x0F
            length = len(payload)
            if length < 126:
                out = bytes([head, length])
            elif length < 1 << 16:
                out = bytes([head, 126]) + struct.pack("!H", length)
            else:
                out = bytes([head, 127]) + struct.pack("!Q", length)
            conn.send_data(stream, out + payload, end_stream=opcode == CLOSE)
            if opcode == CLOSE:
                return False

    def next_frame(self):
        buf = self.buffer
        if len(buf) < 2:
            return None
        length, offset = buf[1] & 0x7F, 2
        if length == 126:
            if len(buf) < 4:
                return None
            length, offset = struct.unpack("!H", buf[2:4])[0], 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length, offset = struct.unpack("!Q", buf[2:10])[0], 10
        masked = buf[1] & 0x80
        mask = buf[offset:offset + 4] if masked else b"\0\0\0\0"
        offset += 4 if masked else 0
        if len(buf) < offset + length:
            return None
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(buf[offset:offset + length]))
        head = buf[0]
        del buf[:offset + length]
        return head, payload


def open_websocket(conn, stream, exchange, websockets):
    if exchange.header(":path") != "/chat":
        body = b"no websockets here"
        conn.send_headers(stream, [(":status", "403"), ("content-length", str(len(body)))])
        conn.send_data(stream, body, end_stream=True)
        return
    conn.send_headers(stream, [(":status", "200")])
    websockets[stream] = WebSocketEcho()


def serve(sock):
    say("connection")
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
    conn.initiate_connection()
    conn.update_settings({h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: 1})
    exchanges = {}
    websockets = {}
    try:
        sock.sendall(conn.data_to_send())
        keep_open = True
        while keep_open:
            data = sock.recv(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    exchange = Exchange(event.headers)
                    exchanges[event.stream_id] = exchange
                    say(f"request: {exchange.header(':method')} {exchange.header(':path')}")
                    if exchange.header(":protocol") == "websocket":
                        exchanges.pop(event.stream_id)
                        open_websocket(conn, event.stream_id, exchange, websockets)
                elif isinstance(event, h2.events.DataReceived) and \
                        event.stream_id in websockets:
                    conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id)
                    if not websockets[event.stream_id].receive(conn, event.stream_id,
                                                               event.data):
                        del websockets[event.stream_id]
                elif isinstance(event, h2.events.DataReceived):
                    exchanges[event.stream_id].body += event.data
                    conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.TrailersReceived):
                    exchanges[event.stream_id].trailers = event.headers
                elif isinstance(event, h2.events.StreamEnded):
                    if event.stream_id not in exchanges:
                        continue
                    exchange = exchanges.pop(event.stream_id)
                    if not respond(conn, event.stream_id, exchange):
                        keep_open = False
                        break
                elif isinstance(event, h2.events.ConnectionTerminated):
                    keep_open = False
            sock.sendall(conn.data_to_send())
        if conn.state_machine.state == h2.connection.ConnectionState.CLOSED:
            linger(sock)
    except (OSError, ssl.SSLError, h2.exceptions.ProtocolError) as error:
        say(f"connection failed: {error}")
    finally:
        sock.close()


def serve_http1(sock):
    say("connection")
    head = b""
    try:
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(65536)
            if not chunk:
                return
            head += chunk
        lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip()
                   for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
        say(f"request: {method} {target}")
        if target.split("?", 1)[0] != "/trailers":
            sock.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n"
                         b"Connection: close\r\n\r\n")
            return
        body, trailers = trailers_answer(method, headers.get("te"), 0, {})
        sock.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nTrailer: grpc-status, x-checksum\r\n"
            b"Connection: close\r\n\r\n"
            + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in trailers).encode() + b"\r\n")
        linger(sock)
    except (OSError, ssl.SSLError) as error:
        say(f"connection failed: {error}")
    finally:
        sock.close()


class PyOpenSSLSocket:
    """What serve() uses of an ssl.SSLSocket, over a pyOpenSSL connection: its ALPN
    callback can refuse a client, which the ssl module's cannot."""

    def __init__(self, conn):
        self.conn = conn

    def recv(self, size):
        try:
            return self.conn.recv(size)
        except (SSL.ZeroReturnError, SSL.SysCallError):
            # A close_notify, or a client that just closed the socket.
            return b""
        except SSL.Error as error:
            raise OSError(f"TLS: {error}") from error

    def sendall(self, data):
        try:
            self.conn.sendall(data)
        except SSL.Error as error:
            raise OSError(f"TLS: {error}") from error

    def settimeout(self, seconds):
        self.conn.settimeout(seconds)

    def close(self):
        try:
            self.conn.shutdown()
        except SSL.Error:
            pass
        self.conn.close()


class NoCommonProtocol(Exception):
    pass


def h2_only_context(cert, key):
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.use_certificate_chain_file(cert)
    context.use_privatekey_file(key)

    def select(_conn, offered):
        if b"h2" in offered:
            return b"h2"
        say("refused a client that does not offer h2")
        # pyOpenSSL answers a raising callback with SSL_TLSEXT_ERR_ALERT_FATAL, which
        # OpenSSL sends as no_application_protocol (NO_OVERLAPPING_PROTOCOLS would
        # only leave ALPN out and carry on).
        raise NoCommonProtocol()

    context.set_alpn_select_callback(select)
    return context


def serve_h2_only(context, raw):
    conn = SSL.Connection(context, raw)
    conn.set_accept_state()
    try:
        conn.do_handshake()
    except (SSL.Error, OSError, NoCommonProtocol) as error:
        say(f"tls handshake failed: {error}")
        raw.close()
        return
    serve(PyOpenSSLSocket(conn))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--h2-only", action="store_true",
                        help="refuse clients that do not offer h2 (no_application_protocol)")
    parser.add_argument("--ignore-alpn", action="store_true",
                        help="select no ALPN protocol and speak HTTP/2 to everyone")
    args = parser.parse_args()
    only_h2 = h2_only_context(args.cert, args.key) if args.h2_only else None

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    if not args.ignore_alpn:
        context.set_alpn_protocols(["h2", "http/1.1"])
    listener = socket.create_server((args.host, args.port))
    say(f"listening on {listener.getsockname()[1]}")
    while True:
        raw, _ = listener.accept()
        if only_h2 is not None:
            threading.Thread(target=serve_h2_only, args=(only_h2, raw), daemon=True).start()
            continue

        def handshake_and_serve(raw=raw):
            try:
                tls = context.wrap_socket(raw, server_side=True)
            except (OSError, ssl.SSLError) as error:
                say(f"tls handshake failed: {error}")
                raw.close()
                return
            if args.ignore_alpn or tls.selected_alpn_protocol() == "h2":
                serve(tls)
            else:
                serve_http1(tls)

        threading.Thread(target=handshake_and_serve, daemon=True).start()


if __name__ == "__main__":
    main()
