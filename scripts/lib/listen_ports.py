#!/usr/bin/env python3
"""Print N distinct TCP ports that are free on 127.0.0.1, chosen below the kernel's
ephemeral range.

The scripts pick their listeners' ports up front and start some listeners minutes
later. A port handed out by bind(0) comes from the ephemeral range, and in those
minutes it can become the local end of one of the thousands of outgoing loopback
connections the bench (or a test running beside it) makes; the listener then fails
with "address in use". The kernel never picks a port below that range on its own.
"""
import random
import socket
import sys

count = int(sys.argv[1]) if len(sys.argv) > 1 else 1
try:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low, high = (int(x) for x in f.read().split())
except OSError:
    low, high = 32768, 60999

candidates = [p for p in range(10000, 65536) if not low <= p <= high]
if len(candidates) < 1000:  # an unusual range: any unprivileged port outside it
    candidates = [p for p in range(1024, 65536) if not low <= p <= high]
random.shuffle(candidates)

ports = []
for port in candidates:
    if len(ports) == count:
        break
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
    ports.append(port)
if len(ports) < count:
    sys.exit(f"listen_ports.py: found only {len(ports)} of {count} free ports")
print(*ports)
