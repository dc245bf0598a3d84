#!/usr/bin/env python3
"""Print the JSON description of a bench run (machine, versions, method) for report.py.

scripts/bench.sh passes what it knows in BENCH_META_* environment variables; the
machine facts come from /proc and uname here. Stdlib only.
"""

import datetime
import json
import os
import platform


def env(name, default=""):
    return os.environ.get(f"BENCH_META_{name}", default)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mem_total():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    kib = int(line.split()[1])
                    return f"{kib / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def os_name():
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def main():
    nproc = os.cpu_count() or 0
    smoke = env("MODE") == "smoke"
    big = env("BIG")
    method = [
        "Origin: nginx with its own config in bench/work/run-MODE (HTTP/1.1 except the h2 "
        "scenario's server, "
        f"{env('PROTOCOLS')}, ECDSA P-256 certificate from a throw-away CA, keep-alive without a "
        "request cap, no session cache and no tickets: every new connection to it is a full "
        "handshake; access log off). `/1k` is 1,024 random bytes; `/big` a sparse file; uploads "
        "are `PUT /upload/NAME` with nginx's DAV module, which answers only after the whole body "
        "is written to a file on tmpfs (/dev/shm).",
        f"TLS as the origin saw it: {env('TLS')}.",
        "Proxies: fresh processes for each scenario. Periscope: `periscope dump -p PORT --confdir DIR "
        "--upstream-trusted-ca CA.pem`, stdout (a line per flow) to /dev/null, default body limit "
        "(4 MiB kept per body). mitmdump: `mitmdump -q --set confdir=DIR --set "
        "ssl_verify_upstream_trusted_ca=CA.pem --set stream_large_bodies=4m` (without streaming it "
        "would hold a whole 1 GiB body in memory). Both verify the origin's certificate; every "
        "client verifies the certificate it gets (the origin CA direct, the proxy's CA through it): "
        "no `--insecure` anywhere.",
        f"Keep-alive and new-connection cells: `oha --no-tui --output-format json -z {env('DURATION')}s "
        "-c C [-x http://proxy] --cacert CA https://localhost:PORT/1k` (oha speaks CONNECT to the "
        "proxy, HTTP/1.1, rustls); new connection per request adds `--disable-keepalive` (c=16), "
        "so through a proxy each request is a CONNECT, two TLS handshakes and a new upstream TCP "
        f"connection. {env('RUNS')} run(s) per cell, targets interleaved within each run; the table "
        "shows medians. req/s counts 2xx responses only; p50/p99 are oha's latency percentiles; "
        "the added p50 is periscope's p50 minus direct's.",
        f"Large transfers: curl through the proxy (`-o /dev/null -w %{{speed_download}}`, uploads "
        f"`-T FILE -H 'Expect:'`), {big} MiB, {env('TRANSFER_RUNS')} run(s) per target; mitmdump is "
        f"capped at {env('MITM_CAP')} s per transfer (its MB/s is then over what it moved). Peak RSS: "
        "the proxy's VmHWM is reset (`/proc/PID/clear_refs` = 5) before each transfer and read "
        "after, together with VmRSS sampled every 10 ms; the larger is reported.",
        f"Idle connections: bench/idle.py opens {env('IDLE')} connections through the proxy (CONNECT, "
        "TLS, one GET /1k each, 16 at a time), lets them idle 2 s, reads the proxy's VmRSS, then "
        "sends a second request on every one (proof they were held open) and closes them.",
        f"Long session: {env('FLOWS')} keep-alive GET /1k through Periscope with oha in four "
        "quarters (c=16); VmRSS after each quarter; growth is RSS after all minus RSS after the "
        "first quarter (target < 10 MiB). mitmdump gets "
        f"{env('MITM_FLOWS')} flows (it is too slow for more within the time budget).",
        f"Session store: crates/tui/examples/fill_session.rs writes {env('STORE_FLOWS')} made-up "
        "flows (like the proxy's: headers, a 1 KiB JSON response, TLS details, every milestone; "
        "5% 404, one in 20 renegotiated, one in 1,000 with `foo` in its body) into a session file; "
        "then `periscope dump -r FILE FILTER` with its output to /dev/null, for `~d nothing` (opening "
        "the session: the index is read, nothing matches), `~c 404` (index columns, 5% printed) and "
        f"`~b foo` (every body read), {env('STORE_RUNS')} run(s) each; wall time, and peak RSS "
        "(getrusage of the child).",
        f"This machine has {nproc} cores: oha or curl, the proxy and nginx all share them, so the "
        "ratios are to the direct connection in the same run, which also shares them.",
    ]
    if smoke:
        method.insert(0, "SMOKE MODE: 1 s runs, one run per cell, a 10 MiB transfer, 50 idle "
                         "connections, 1,000 flows, a 2,000-flow session file: checks that the bench "
                         "works, measures nothing.")
    try:
        load = open("/proc/loadavg").read().split()[:3]
        load_now = " ".join(load)
    except OSError:
        load_now = ""
    meta = {
        "mode": env("MODE"),
        "only": env("ONLY"),
        "args": env("ARGS"),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "elapsed": env("ELAPSED"),
        "cpu_model": cpu_model(),
        "nproc": str(nproc),
        "mem_total": mem_total(),
        "os": os_name(),
        "kernel": platform.release(),
        "load_before": f"{env('LOAD')} (at the end: {load_now})",
        "periscope": env("PERISCOPE"),
        "periscope_binary": env("PERISCOPE_BIN"),
        "nginx": env("NGINX"),
        "openssl": env("OPENSSL"),
        "periscope_openssl": env("PERISCOPE_OPENSSL"),
        "curl": env("CURL"),
        "oha": env("OHA"),
        "mitmproxy": env("MITM"),
        "python": env("PYTHON"),
        "method": method,
    }
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
