#!/usr/bin/env python3
"""Summarise one `oha --output-format json` result. Stdlib only.

    oha_summary.py OUT.json            "rps p50_ms p99_ms ok errors non2xx"
    oha_summary.py --human OUT.json    a short line for the progress log
    oha_summary.py --errors OUT.json   the error and status distributions, one line

rps counts only 2xx responses over oha's whole run time; errors are oha's error
distribution without the requests it aborts itself at the end of a timed run
("aborted due to deadline"). Exits 1 when the file is not an oha result or no request
succeeded.
"""

import json
import sys

DEADLINE = "aborted due to deadline"


def summary(path):
    with open(path) as f:
        d = json.load(f)
    total = float(d["summary"]["total"])
    codes = {int(k): int(v) for k, v in d.get("statusCodeDistribution", {}).items()}
    ok = sum(v for k, v in codes.items() if 200 <= k < 300)
    non2xx = sum(v for k, v in codes.items() if not 200 <= k < 300)
    all_errs = d.get("errorDistribution", {})
    errs = {k: v for k, v in all_errs.items() if DEADLINE not in k}
    aborted = sum(v for k, v in all_errs.items() if DEADLINE in k)
    errors = sum(errs.values())
    pct = d.get("latencyPercentilesSuccessful") or d.get("latencyPercentiles") or {}
    p50 = pct.get("p50")
    p99 = pct.get("p99")
    rps = ok / total if total > 0 else 0.0
    return {
        "rps": rps,
        "p50_ms": p50 * 1000 if p50 is not None else float("nan"),
        "p99_ms": p99 * 1000 if p99 is not None else float("nan"),
        "ok": ok,
        "errors": errors,
        "non2xx": non2xx,
        "error_distribution": errs,
        "aborted": aborted,
        "status": codes,
    }


def main():
    args = sys.argv[1:]
    mode = "plain"
    if args and args[0] in ("--human", "--errors"):
        mode = args.pop(0)
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        s = summary(args[0])
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"oha_summary: {args[0]}: {e}", file=sys.stderr)
        return 1
    if mode == "--human":
        print(
            f"{s['rps']:.0f} req/s, p50 {s['p50_ms']:.3f} ms, p99 {s['p99_ms']:.3f} ms, "
            f"{s['ok']} ok, {s['errors']} errors, {s['non2xx']} non-2xx"
        )
    elif mode == "--errors":
        errs = "; ".join(f"{v}x {k}" for k, v in sorted(s["error_distribution"].items(), key=lambda kv: -kv[1]))
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(s["status"].items()))
        print(f"status [{codes}] errors [{errs[:400]}] aborted at the deadline: {s['aborted']}")
        return 0
    else:
        print(f"{s['rps']:.3f} {s['p50_ms']:.4f} {s['p99_ms']:.4f} {s['ok']} {s['errors']} {s['non2xx']}")
    return 0 if s["ok"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
