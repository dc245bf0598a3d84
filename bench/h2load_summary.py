#!/usr/bin/env python3
"""Summarise one h2load run (its stdout). Stdlib only.

    h2load_summary.py OUT.txt            "rps protocol ok non2xx failed errored seconds"
    h2load_summary.py --human OUT.txt    a short line for the progress log

rps counts only finished requests with a 2xx response ("N succeeded", "status codes: N
2xx") over the measured time: with -D the main duration (after any warm-up), else
"finished in Xs". protocol is what h2load says ALPN
negotiated ("Application protocol: h2"), "none" when it says nothing (no TLS connection
was made). Exits 1 when the file is not an h2load result or no request got a 2xx.
"""

import re
import sys


def seconds(value, unit):
    return float(value) * {"s": 1.0, "ms": 1e-3, "us": 1e-6}[unit]


def summary(path):
    with open(path, errors="replace") as f:
        text = f.read()
    finished = re.search(r"^finished in ([0-9.]+)(s|ms|us),", text, re.M)
    requests = re.search(
        r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored", text, re.M)
    codes = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text, re.M)
    if not (finished and requests and codes):
        raise ValueError("not an h2load result")
    # h2load prints the protocol once per thread (for its first connection); keep each
    # distinct one so that a mix across threads shows.
    # The measured time: with -D, the main duration ("finished in" also counts the
    # warm-up, and h2load's own req/s divides by the main duration too).
    main = re.search(r"Timing-based test with [0-9.]+s of warm-up time and ([0-9.]+)s of main "
                     r"duration", text)
    protocols = sorted(set(re.findall(r"^Application protocol: (\S+)", text, re.M)))
    secs = float(main.group(1)) if main else seconds(*finished.groups())
    # "succeeded" counts finished requests with a 2xx or 3xx status, the 2xx of "status
    # codes" also responses whose body had not arrived when the run ended: a request
    # counts once both hold (the origin answers nothing but 200).
    ok = min(int(codes.group(1)), int(requests.group(4)))
    non2xx = sum(int(codes.group(i)) for i in (2, 3, 4))
    return {
        "rps": ok / secs if secs > 0 else 0.0,
        "protocol": ",".join(protocols) or "none",
        "ok": ok,
        "non2xx": non2xx,
        "failed": int(requests.group(5)),
        "errored": int(requests.group(6)),
        "seconds": secs,
    }


def main():
    args = sys.argv[1:]
    human = False
    if args and args[0] == "--human":
        human = True
        args = args[1:]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        s = summary(args[0])
    except (OSError, ValueError) as e:
        print(f"h2load_summary: {args[0]}: {e}", file=sys.stderr)
        return 1
    if human:
        print(f"{s['rps']:,.0f} req/s ({s['ok']} 2xx in {s['seconds']:.2f} s, ALPN {s['protocol']}, "
              f"{s['non2xx']} non-2xx, {s['failed']} failed, {s['errored']} errored)")
    else:
        print(s["rps"], s["protocol"], s["ok"], s["non2xx"], s["failed"], s["errored"], s["seconds"])
    return 0 if s["ok"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
