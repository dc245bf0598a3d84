#!/usr/bin/env python3
"""An HTTP/2 client with prior knowledge (h2c) that speaks to Periscope's plain
listener as to a proxy (absolute :scheme/:authority per request), for the tests of
what one HTTP/2 client connection may cost the proxy. Built on the `h2` library.

  --parallel N --path P --hold S   N streams at once for http://ORIGIN/P; prints
                                   `responses N STATUS...` once all ended, keeps the
                                   connection open S seconds (answering PINGs), then
                                   closes it and prints `closed`
  --reset-after S --path P --hold H   one stream, reset with RST_STREAM CANCEL after S
                                   seconds (prints `sent RST_STREAM`); the connection
                                   stays open H more seconds
  --stall --path P                 one stream whose data is never acknowledged, so
                                   its flow-control window stays shut once the
                                   first 64 KiB arrived; prints `reset CODE` when the
                                   proxy resets the stream, or `no reset` after
                                   --wait seconds

Prints `connected` once the connection preface was exchanged.
"""

import argparse
import socket
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--proxy", required=True, help="host:port")
    parser.add_argument("--origin", required=True, help="host:port the requests name")
    parser.add_argument("--path", required=True)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--hold", type=float, default=0)
    parser.add_argument("--stall", action="store_true")
    parser.add_argument("--wait", type=float, default=30)
    parser.add_argument("--reset-after", type=float)
    args = parser.parse_args()

    host, port = args.proxy.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    print("connected", flush=True)

    streams = {}
    for _ in range(args.parallel):
        stream_id = conn.get_next_available_stream_id()
        conn.send_headers(stream_id, [
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", args.origin),
            (":path", args.path),
        ], end_stream=True)
        streams[stream_id] = None
    sock.sendall(conn.data_to_send())

    if args.reset_after is not None:
        time.sleep(args.reset_after)
        for stream_id in streams:
            conn.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        sock.sendall(conn.data_to_send())
        print("sent RST_STREAM", flush=True)
        hold(sock, conn, args.hold)
        return

    ended = set()
    deadline = time.monotonic() + args.wait
    sock.settimeout(0.5)
    while len(ended) < len(streams) and time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        if not data:
            break
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                status = dict(event.headers).get(":status")
                streams[event.stream_id] = status
            elif isinstance(event, h2.events.DataReceived) and not args.stall:
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                ended.add(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                print(f"reset {event.error_code.name}", flush=True)
                ended.add(event.stream_id)
        sock.sendall(conn.data_to_send())

    if args.stall:
        if not ended:
            print("no reset", flush=True)
        sock.close()
        return

    statuses = " ".join(str(streams[s]) for s in sorted(streams))
    print(f"responses {len(ended)} {statuses}", flush=True)
    hold(sock, conn, args.hold)


def hold(sock, conn, seconds):
    """Keeps the connection open (answering PINGs and SETTINGS), then closes it."""
    sock.settimeout(0.5)
    hold_until = time.monotonic() + seconds
    while time.monotonic() < hold_until:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        if not data:
            break
        try:
            conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            break
        sock.sendall(conn.data_to_send())
    sock.close()
    print("closed", flush=True)


if __name__ == "__main__":
    main()
