#!/usr/bin/env python3
"""An HTTPS origin that reports the key exchange of each connection, for Periscope's
tests of which groups each leg offers.

It runs on pyOpenSSL, whose OpenSSL (the one bundled with `cryptography`, 3.5 or
newer) prefers the post-quantum hybrid X25519MLKEM768 when a client offers it, as
servers on current OpenSSL, BoringSSL and Go do. Every answer is 200 with a JSON
body: {"group": the group agreed on, "offered_post_quantum": whether the client's
supported_groups listed X25519MLKEM768}. Keep-alive, one thread per connection.

Prints "listening on PORT" once ready and the library's version on stderr.
"""

import argparse
import json
import socket
import sys
import threading
import time

from cryptography.hazmat.backends.openssl import backend
from OpenSSL import SSL

X25519_MLKEM768 = 0x11EC


def peek_client_hello(raw):
    """The first record a client sent (its ClientHello), left unread on the socket."""
    raw.settimeout(20)
    deadline = time.monotonic() + 20
    record = b""
    while len(record) < 5 or len(record) < 5 + int.from_bytes(record[3:5], "big"):
        # A peek returns at once what is there, so the rest of a hello that arrives
        # in two segments is waited for; an empty peek is the client closing.
        peeked = raw.recv(16384, socket.MSG_PEEK)
        if not peeked or time.monotonic() > deadline:
            return b""
        if len(peeked) == len(record):
            time.sleep(0.005)
        record = peeked
    # pyOpenSSL needs a blocking socket.
    raw.settimeout(None)
    return record[5:]


def supported_groups(hello):
    """The IANA numbers in a ClientHello's supported_groups extension (handshake
    message bytes, header included)."""
    at = 4 + 2 + 32
    at += 1 + hello[at]
    at += 2 + int.from_bytes(hello[at:at + 2], "big")
    at += 1 + hello[at]
    end = at + 2 + int.from_bytes(hello[at:at + 2], "big")
    at += 2
    while at < end:
        kind = int.from_bytes(hello[at:at + 2], "big")
        length = int.from_bytes(hello[at + 2:at + 4], "big")
        if kind == 0x000A:
            body = hello[at + 6:at + 4 + length]
            return [int.from_bytes(body[i:i + 2], "big") for i in range(0, len(body), 2)]
        at += 4 + length
    return []


def serve(context, raw):
    buffer = b""
    try:
        offered = supported_groups(peek_client_hello(raw))
        conn = SSL.Connection(context, raw)
        conn.set_accept_state()
        conn.do_handshake()
        while True:
            while b"\r\n\r\n" not in buffer:
                data = conn.recv(65536)
                if not data:
                    return
                buffer += data
            _head, buffer = buffer.split(b"\r\n\r\n", 1)
            body = json.dumps({
                "group": conn.get_group_name(),
                "offered_post_quantum": X25519_MLKEM768 in offered,
            }).encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\n\r\n%s" % (len(body), body))
    except SSL.ZeroReturnError:
        pass
    except (SSL.Error, OSError, IndexError) as error:
        print(f"connection failed: {error!r}", file=sys.stderr)
    finally:
        raw.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(SSL.TLS1_3_VERSION)
    context.use_certificate_chain_file(args.cert)
    context.use_privatekey_file(args.key)
    listener = socket.create_server(("127.0.0.1", 0))
    print(backend.openssl_version_text(), file=sys.stderr)
    print(f"listening on {listener.getsockname()[1]}", flush=True)
    while True:
        raw, _ = listener.accept()
        threading.Thread(target=serve, args=(context, raw), daemon=True).start()


if __name__ == "__main__":
    main()
