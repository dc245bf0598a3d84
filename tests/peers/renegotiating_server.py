#!/usr/bin/env python3
"""An IIS-like HTTPS server for Periscope's tests.

Like IIS with "client certificates: accept" on one path, it reads a request, then
(for paths under --reneg-prefix) sends a TLS 1.2 HelloRequest and renegotiates with a
CertificateRequest before it answers. Modes change what happens after the HelloRequest:

  optional   request a certificate, accept none (IIS "accept")
  require    request a certificate, fail the handshake without one (IIS "require")
  plain      renegotiate without asking for a certificate
  stall      send the HelloRequest, then ignore the client (a server that never finishes)
  mid-body   send half the response body, renegotiate, send the rest

Answers are JSON and say what the server saw:
  {"path": ..., "method": ..., "body_length": N, "renegotiated": true,
   "client_cert": "CN of the presented certificate or null"}
`/vedauth/authorize/oauth` answers 400 with {"error": "invalid_request", ...}, like the
server in the story that started Periscope.

Prints "listening on PORT" once ready. One thread per connection; keep-alive.
"""

import argparse
import json
import select
import socket
import sys
import threading
import time

from OpenSSL import SSL, crypto


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--client-ca", help="CA file for client certificates")
    parser.add_argument("--mode", default="optional",
                        choices=["optional", "require", "plain", "stall", "mid-body"])
    parser.add_argument("--reneg-prefix", default="/vedauth")
    parser.add_argument("--renegotiations", type=int, default=1,
                        help="how many renegotiations per request")
    parser.add_argument("--body-size", type=int, default=0,
                        help="extra response body bytes (for mid-body)")
    return parser.parse_args()


def make_context(args):
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.set_max_proto_version(SSL.TLS1_2_VERSION)
    context.use_certificate_chain_file(args.cert)
    context.use_privatekey_file(args.key)
    # Without a session id context and this option the client resumes and no
    # CertificateRequest is sent (DESIGN.md, section 4).
    context.set_session_id(b"periscope-test")
    context.set_options(SSL.OP_NO_TICKET | 0x00010000)  # NO_SESSION_RESUMPTION_ON_RENEGOTIATION
    if args.client_ca:
        context.load_verify_locations(args.client_ca)
        context.load_client_ca(args.client_ca.encode())
    return context


def wait_readable(sock, timeout=30):
    ready, _, _ = select.select([sock], [], [], timeout)
    if not ready:
        raise TimeoutError("peer silent")


def recv_some(conn, sock):
    while True:
        try:
            return conn.recv(65536)
        except SSL.WantReadError:
            wait_readable(sock)
        except SSL.ZeroReturnError:
            return b""


def send_all(conn, sock, data):
    view = memoryview(data)
    while view:
        try:
            sent = conn.send(view[:16384])
            view = view[sent:]
        except SSL.WantReadError:
            wait_readable(sock)
        except SSL.WantWriteError:
            select.select([], [sock], [], 30)


def renegotiate(conn, sock, args, stall=False):
    verify = SSL.VERIFY_NONE
    if args.mode in ("optional", "mid-body"):
        verify = SSL.VERIFY_PEER
    elif args.mode == "require":
        verify = SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT
    conn.set_verify(verify, lambda *a: True)
    conn.renegotiate()
    while True:
        try:
            conn.do_handshake()  # writes the HelloRequest
            break
        except SSL.WantReadError:
            wait_readable(sock)
    if stall:
        # Never read the client's ClientHello: wait until it gives up.
        while True:
            ready, _, _ = select.select([sock], [], [], 60)
            if ready and not sock.recv(65536, socket.MSG_PEEK):
                return False
            time.sleep(0.05)
    # The renegotiation runs when we read; the client sends no application data until
    # it gets an answer, so peek until the handshake is over.
    deadline = time.time() + 30
    while conn.renegotiate_pending():
        if time.time() > deadline:
            raise TimeoutError("renegotiation did not complete")
        try:
            conn.recv(1, socket.MSG_PEEK)
        except SSL.WantReadError:
            if conn.renegotiate_pending():
                wait_readable(sock, 30)
    return True


def read_request(conn, sock, buffered):
    while b"\r\n\r\n" not in buffered:
        chunk = recv_some(conn, sock)
        if not chunk:
            return None, b""
        buffered += chunk
    head, rest = buffered.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = recv_some(conn, sock)
        if not chunk:
            return None, b""
        rest += chunk
    body, rest = rest[:length], rest[length:]
    return (method, path, headers, body), rest


def client_cn(conn):
    cert = conn.get_peer_certificate()
    if cert is None:
        return None
    return cert.get_subject().CN


def serve(conn, sock, args):
    conn.setblocking(False)
    buffered = b""
    while True:
        request, buffered = read_request(conn, sock, buffered)
        if request is None:
            return
        method, path, headers, body = request
        renegotiated = False
        if path.startswith(args.reneg_prefix) and args.mode != "mid-body":
            for _ in range(args.renegotiations):
                if not renegotiate(conn, sock, args, stall=args.mode == "stall"):
                    return
                renegotiated = True
        answer = {
            "path": path,
            "method": method,
            "body_length": len(body),
            "renegotiated": renegotiated,
            "client_cert": client_cn(conn),
        }
        status = "200 OK"
        if path.startswith(args.reneg_prefix + "/authorize/oauth"):
            status = "400 Bad Request"
            answer["error"] = "invalid_request"
        if args.mode == "mid-body" and path.startswith(args.reneg_prefix):
            filler = b"x" * args.body_size
            payload = json.dumps(answer).encode() + b"\n" + filler
            half = len(payload) // 2
            head = (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(payload)}\r\n\r\n").encode()
            send_all(conn, sock, head + payload[:half])
            for _ in range(args.renegotiations):
                if not renegotiate(conn, sock, args):
                    return
            send_all(conn, sock, payload[half:])
            continue
        payload = json.dumps(answer).encode()
        head = (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n").encode()
        send_all(conn, sock, head + payload)


def handle(context, sock, args):
    conn = SSL.Connection(context, sock)
    conn.set_accept_state()
    try:
        sock.setblocking(False)
        while True:
            try:
                conn.do_handshake()
                break
            except SSL.WantReadError:
                wait_readable(sock)
        serve(conn, sock, args)
    except (SSL.Error, OSError, TimeoutError, ValueError) as error:
        print(f"connection ended: {error!r}", file=sys.stderr, flush=True)
    finally:
        try:
            sock.close()
        except OSError:
            pass


def main():
    args = parse_args()
    context = make_context(args)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(128)
    print(f"listening on {listener.getsockname()[1]}", flush=True)
    while True:
        sock, _ = listener.accept()
        threading.Thread(target=handle, args=(context, sock, args), daemon=True).start()


if __name__ == "__main__":
    main()
