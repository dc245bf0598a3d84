#!/usr/bin/env python3
"""Turn the raw measurements of one bench run into the table and RESULTS.md.

    report.py WORKDIR OUT.md

WORKDIR holds what scripts/bench.sh wrote:
  results.tsv   metric <TAB> target <TAB> run <TAB> value      (one line per measurement)
  notes.txt     free-form lines: errors seen, capped transfers, skipped parts
  meta.json     machine, versions, mode, settings
The table is printed on stdout and written, with the machine and method, to OUT.md.
Stdlib only.
"""

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

TARGETS = ("direct", "periscope", "mitmdump")

# (key, label, unit, decimals, target kind, target value)
#   kind "ratio_ge": periscope/direct >= value
#   kind "abs_lt":   periscope < value (unit of the row)
#   kind "abs_ge":   periscope >= value (unit of the row)
#   kind None:       no target, shown for context
ROWS = [
    ("ka_c1_rps", "keep-alive 1 KiB, c=1: req/s", "req/s", 0, None, None),
    ("ka_c1_p50", "keep-alive 1 KiB, c=1: p50 latency", "ms", 3, None, None),
    ("ka_c1_p99", "keep-alive 1 KiB, c=1: p99 latency", "ms", 3, None, None),
    ("ka_c1_added_p50", "keep-alive 1 KiB, c=1: p50 added by the proxy", "ms", 3, "abs_lt", 0.3),
    ("ka_c16_rps", "keep-alive 1 KiB, c=16: req/s", "req/s", 0, "ratio_ge", 0.5),
    ("ka_c16_p50", "keep-alive 1 KiB, c=16: p50 latency", "ms", 3, None, None),
    ("ka_c16_p99", "keep-alive 1 KiB, c=16: p99 latency", "ms", 3, None, None),
    ("ka_c16_cpu", "keep-alive 1 KiB, c=16: proxy CPU per request", "µs", 0, None, None),
    ("ka_c16_peers", "keep-alive 1 KiB, c=16: client + origin CPU per request", "µs", 0, None, None),
    ("ka_c64_rps", "keep-alive 1 KiB, c=64: req/s", "req/s", 0, None, None),
    ("ka_c64_p50", "keep-alive 1 KiB, c=64: p50 latency", "ms", 3, None, None),
    ("ka_c64_p99", "keep-alive 1 KiB, c=64: p99 latency", "ms", 3, None, None),
    ("nc_c16_rps", "new connection per request, c=16: req/s", "req/s", 0, "ratio_ge", 0.4),
    ("nc_c16_cpu", "new connection per request, c=16: proxy CPU per request", "µs", 0, None, None),
    ("nc_c16_peers", "new connection per request, c=16: client + origin CPU per request", "µs", 0,
     None, None),
    ("rsa12_ka_c16_rps", "RSA-2048 TLS 1.2 origin, keep-alive 1 KiB, c=16: req/s", "req/s", 0,
     None, None),
    ("rsa12_ka_c16_cpu", "RSA-2048 TLS 1.2 origin, keep-alive 1 KiB, c=16: proxy CPU per request",
     "µs", 0, None, None),
    ("rsa12_ka_c16_peers", "RSA-2048 TLS 1.2 origin, keep-alive 1 KiB, c=16: client + origin CPU "
     "per request", "µs", 0, None, None),
    ("rsa12_nc_c16_rps", "RSA-2048 TLS 1.2 origin, new connection per request, c=16: req/s",
     "req/s", 0, None, None),
    ("rsa12_nc_c16_cpu", "RSA-2048 TLS 1.2 origin, new connection per request, c=16: proxy CPU "
     "per request", "µs", 0, None, None),
    ("rsa12_nc_c16_peers", "RSA-2048 TLS 1.2 origin, new connection per request, c=16: client + "
     "origin CPU per request", "µs", 0, None, None),
    ("resume_nc_c16_rps", "new connection per request, origin resumes sessions, c=16: req/s",
     "req/s", 0, None, None),
    ("resume_nc_c16_cpu", "new connection per request, origin resumes sessions, c=16: proxy CPU "
     "per request", "µs", 0, None, None),
    ("resume_nc_c16_peers", "new connection per request, origin resumes sessions, c=16: client + "
     "origin CPU per request", "µs", 0, None, None),
    ("h2_rps", "HTTP/2 1 KiB, 100 streams on 16 connections: req/s", "req/s", 0, None, None),
    ("h2_cpu", "HTTP/2 1 KiB, 100 streams on 16 connections: proxy CPU per request", "µs", 0,
     None, None),
    ("h2_peers", "HTTP/2 1 KiB, 100 streams on 16 connections: client + origin CPU per request",
     "µs", 0, None, None),
    ("dl_mbps", "large download: throughput", "MB/s", 0, "ratio_ge", 0.8),
    ("dl_rss", "large download: proxy peak RSS", "MiB", 1, "abs_lt", 64),
    ("dl_cpu", "large download: proxy CPU per GiB", "s", 2, None, None),
    ("dl_peers", "large download: client + origin CPU per GiB", "s", 2, None, None),
    ("ul_mbps", "large upload: throughput", "MB/s", 0, "ratio_ge", 0.8),
    ("ul_rss", "large upload: proxy peak RSS", "MiB", 1, "abs_lt", 64),
    ("ul_cpu", "large upload: proxy CPU per GiB", "s", 2, None, None),
    ("ul_peers", "large upload: client + origin CPU per GiB", "s", 2, None, None),
    ("socks_ka_rps", "SOCKS5 keep-alive 1 KiB, one connection: req/s", "req/s", 0, None, None),
    ("socks_ka_cpu", "SOCKS5 keep-alive 1 KiB, one connection: proxy CPU per request", "µs", 0,
     None, None),
    ("socks_regular_rps", "the same through the regular listener (CONNECT): req/s", "req/s", 0,
     None, None),
    ("socks_regular_cpu", "the same through the regular listener (CONNECT): proxy CPU per request",
     "µs", 0, None, None),
    ("socks_vs_regular", "SOCKS5 req/s ÷ regular listener req/s", "", 2, "abs_ge", 0.95),
    ("hooks_none_rps", "keep-alive c=16, Periscope alone: req/s", "req/s", 0, None, None),
    ("hooks_none_cpu", "keep-alive c=16, Periscope alone: CPU per request", "µs", 0, None, None),
    ("hooks_rules_rps", "keep-alive c=16, 20 rules matching nothing: req/s", "req/s", 0, None,
     None),
    ("hooks_rules_cpu", "keep-alive c=16, 20 rules matching nothing: CPU per request", "µs", 0,
     None, None),
    ("hooks_intercept_rps", "keep-alive c=16, intercept matching nothing: req/s", "req/s", 0,
     None, None),
    ("hooks_intercept_cpu", "keep-alive c=16, intercept matching nothing: CPU per request", "µs",
     0, None, None),
    ("hooks_save_rps", "keep-alive c=16, saving the session (-w): req/s", "req/s", 0, None,
     None),
    ("hooks_save_cpu", "keep-alive c=16, saving the session (-w): CPU per request", "µs", 0,
     None, None),
    ("addon_c16_rps", "keep-alive 1 KiB, c=16, no-op response script: req/s", "req/s", 0, None,
     None),
    ("addon_c16_p50", "keep-alive 1 KiB, c=16, no-op response script: p50 latency", "ms", 3,
     None, None),
    ("addon_c16_cpu", "keep-alive 1 KiB, c=16, no-op response script: proxy CPU per request",
     "µs", 0, None, None),
    ("addon_body_c16_rps", "keep-alive 1 KiB, c=16, request + response script reading bodies: "
     "req/s", "req/s", 0, None, None),
    ("addon_body_c16_p50", "keep-alive 1 KiB, c=16, request + response script reading bodies: "
     "p50 latency", "ms", 3, None, None),
    ("addon_body_c16_cpu", "keep-alive 1 KiB, c=16, request + response script reading bodies: "
     "proxy CPU per request", "µs", 0, None, None),
    ("idle_base_rss", "idle connections: proxy RSS before", "MiB", 1, None, None),
    ("idle_rss", "idle connections: proxy RSS with all open", "MiB", 1, "abs_lt", 100),
    ("idle_per_conn", "idle connections: RSS per connection", "KiB", 1, None, None),
    ("idle_opened", "idle connections: opened and reused", "conns", 0, None, None),
    ("sess_rss_1", "long session: RSS after 1/4 of the flows", "MiB", 1, None, None),
    ("sess_rss_2", "long session: RSS after 2/4", "MiB", 1, None, None),
    ("sess_rss_3", "long session: RSS after 3/4", "MiB", 1, None, None),
    ("sess_rss_4", "long session: RSS after all flows", "MiB", 1, None, None),
    ("sess_growth", "long session: RSS growth, 1/4 to all", "MiB", 1, "abs_lt", 10),
    ("sess_flows", "long session: flows completed", "flows", 0, None, None),
    ("store_flows", "session store: flows in the file", "flows", 0, None, None),
    ("store_fill_s", "session store: writing them (generator, no proxy)", "s", 2, None, None),
    ("store_file_mib", "session store: file size", "MiB", 0, None, None),
    ("store_open_s", "session store: open (dump -r '~d nothing')", "s", 2, None, None),
    ("store_open_rss", "session store: open, peak RSS", "MiB", 1, None, None),
    ("store_filter_c_s", "session store: filter ~c 404 (dump -r)", "s", 2, None, None),
    ("store_filter_c_rss", "session store: filter ~c 404, peak RSS", "MiB", 1, None, None),
    ("store_filter_b_s", "session store: filter ~b foo (every body)", "s", 2, None, None),
    ("store_filter_b_rss", "session store: filter ~b foo, peak RSS", "MiB", 1, None, None),
    ("web_flows", "web UI: flows in the session opened", "flows", 0, None, None),
    ("web_first_paint_s", "web UI: page load to first rows painted", "s", 2, "abs_lt", 1),
    ("web_scroll_s", "web UI: slowest scroll jump to rows filled in", "s", 2, None, None),
    ("web_search_s", "web UI: search typed to answer shown (~c 500, by the server)", "s", 2,
     "abs_lt", 1),
    ("web_rows", "web UI: most rows drawn at once", "rows", 0, None, None),
    ("web_heap_mb", "web UI: JS heap after the search", "MB", 1, None, None),
    ("web_nodes", "web UI: DOM nodes after the search", "nodes", 0, None, None),
    ("web_browser_mb", "web UI: Chromium's memory, all its processes (PSS)", "MiB", 0, None,
     None),
]


def load(workdir):
    values = defaultdict(list)
    path = workdir / "results.tsv"
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) != 4:
                continue
            metric, target, _run, value = parts
            try:
                values[(metric, target)].append(float(value))
            except ValueError:
                pass
    notes = []
    if (workdir / "notes.txt").exists():
        notes = [n for n in (workdir / "notes.txt").read_text().splitlines() if n.strip()]
    meta = {}
    if (workdir / "meta.json").exists():
        meta = json.loads((workdir / "meta.json").read_text())
    return values, notes, meta


def median(values, key, target):
    v = values.get((key, target))
    return statistics.median(v) if v else None


# The ratio targets whose CPU budget RESULTS.md works out: (rate row, CPU prefix, unit of
# the CPU figures, how many units one second of the rate is, label).
BUDGETS = [
    ("ka_c16_rps", "ka_c16", "µs", 1e6, "keep-alive, c=16 (per request)"),
    ("nc_c16_rps", "nc_c16", "µs", 1e6, "new connection per request (per request)"),
    ("dl_mbps", "dl", "s", 2**30 / 1e6, "large download (per GiB)"),
    ("ul_mbps", "ul", "s", 2**30 / 1e6, "large upload (per GiB)"),
]


# Every workload whose client + origin CPU is worked out (prefix_mcpu minus prefix_cpu):
# those of the ratio targets and the scenarios without a target.
PEERS = [prefix for _rate, prefix, *_ in BUDGETS] + [
    "rsa12_ka_c16", "rsa12_nc_c16", "h2", "resume_nc_c16"]


def derive(values):
    """Rows computed from others: added latency, session growth, client + origin CPU,
    SOCKS5 against the regular listener."""
    med = {}
    for (key, target), v in values.items():
        med[(key, target)] = statistics.median(v)
    # Client + origin: the whole machine's CPU minus the proxy's, run by run.
    for prefix in PEERS:
        for t in TARGETS:
            machine = values.get((f"{prefix}_mcpu", t))
            if not machine:
                continue
            proxy = values.get((f"{prefix}_cpu", t)) if t != "direct" else [0.0] * len(machine)
            if proxy and len(proxy) == len(machine):
                med[(f"{prefix}_peers", t)] = statistics.median(
                    m - p for m, p in zip(machine, proxy))
    d = med.get(("ka_c1_p50", "direct"))
    for t in ("periscope", "mitmdump"):
        p = med.get(("ka_c1_p50", t))
        if d is not None and p is not None:
            med[("ka_c1_added_p50", t)] = p - d
        before, idle, n = (med.get((k, t)) for k in ("idle_base_rss", "idle_rss", "idle_opened"))
        if before is not None and idle is not None and n:
            med[("idle_per_conn", t)] = (idle - before) * 1024 / n
        a, b = med.get(("sess_rss_1", t)), med.get(("sess_rss_4", t))
        if a is not None and b is not None:
            med[("sess_growth", t)] = b - a
        socks, regular = med.get(("socks_ka_rps", t)), med.get(("socks_regular_rps", t))
        if socks is not None and regular:
            med[("socks_vs_regular", t)] = socks / regular
    return med


def fmt(value, decimals):
    if value is None:
        return "—"
    if decimals == 0:
        return f"{value:,.0f}"
    return f"{value:,.{decimals}f}"


def build_rows(med, meta):
    smoke = meta.get("mode") == "smoke"
    only = meta.get("only") or ""
    rows = []
    verdicts = []
    for key, label, unit, decimals, kind, goal in ROWS:
        cells = {t: med.get((key, t)) for t in TARGETS}
        if all(v is None for v in cells.values()):
            continue  # scenario not run (--only) or removed
        d, p = cells["direct"], cells["periscope"]
        ratio = p / d if (d and p is not None) else None
        target = "—"
        verdict = ""
        if kind == "ratio_ge":
            target = f"≥ {goal}× direct"
            if ratio is not None:
                verdict = "pass" if ratio >= goal else "FAIL"
            else:
                verdict = "n/a"
        elif kind == "abs_lt":
            target = f"< {goal:g} {unit}"
            if p is not None:
                verdict = "pass" if p < goal else "FAIL"
            else:
                verdict = "n/a"
        elif kind == "abs_ge":
            target = f"≥ {goal:g} {unit}".rstrip()
            if p is not None:
                verdict = "pass" if p >= goal else "FAIL"
            else:
                verdict = "n/a"
        if verdict:
            verdicts.append((label, verdict))
        rows.append(
            [
                label if not unit or label.endswith(unit) else f"{label} ({unit})",
                fmt(cells["direct"], decimals),
                fmt(cells["periscope"], decimals),
                fmt(cells["mitmdump"], decimals),
                f"{ratio:.2f}" if ratio is not None else "—",
                target,
                verdict or "—",
            ]
        )
    return rows, verdicts, smoke, only


HEADER = ["metric", "direct", "periscope", "mitmdump", "periscope/direct", "target", "pass/fail"]


def text_table(rows):
    table = [HEADER] + rows
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADER))]
    out = []
    for n, r in enumerate(table):
        cells = [r[0].ljust(widths[0])] + [c.rjust(widths[i]) for i, c in enumerate(r) if i > 0]
        out.append(" | ".join(cells))
        if n == 0:
            out.append("-+-".join("-" * w for w in widths))
    return "\n".join(out)


def md_table(rows):
    out = ["| " + " | ".join(HEADER) + " |", "|" + "|".join(["---"] + ["---:"] * 6) + "|"]
    for r in rows:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
    return "\n".join(out)


def cpu_budget(med, meta):
    """What a ratio target leaves the proxy on this machine: at the target rate each unit
    (a request, a GiB) may take `cores / rate` of CPU time in all, and the client and the
    origin take their share of it first."""
    try:
        cores = int(meta.get("nproc") or 0)
    except ValueError:
        cores = 0
    goals = {key: goal for key, _l, _u, _d, kind, goal in ROWS if kind == "ratio_ge"}
    lines = []
    for rate_key, prefix, unit, per_second, label in BUDGETS:
        direct = med.get((rate_key, "direct"))
        peers = med.get((f"{prefix}_peers", "periscope"))
        peers_direct = med.get((f"{prefix}_peers", "direct"))
        proxy = med.get((f"{prefix}_cpu", "periscope"))
        if not (cores and direct and peers is not None and proxy is not None):
            continue
        goal = goals[rate_key]
        available = cores * per_second / (goal * direct)
        left = available - peers
        decimals = 0 if unit == "µs" else 2
        lines.append("| " + " | ".join([
            label,
            f"{goal}× direct",
            f"{fmt(available, decimals)} {unit}",
            f"{fmt(peers, decimals)} {unit}",
            f"{fmt(left, decimals)} {unit}",
            f"{fmt(proxy, decimals)} {unit}",
            f"{fmt(peers_direct, decimals)} {unit}" if peers_direct is not None else "—",
        ]) + " |")
    if not lines:
        return []
    return [
        "## CPU budget of the ratio targets\n",
        f"oha or curl, nginx and the proxy share this machine's {cores} cores. At the target "
        "rate, one request (or one GiB) may use the cores' time divided by the rate, in all; "
        "the client and the origin use their part of it (measured through Periscope: the "
        "machine's busy time from /proc/stat minus Periscope's, per 2xx response or per GiB), "
        "and what is left is what Periscope may spend. For comparison, the last column is what "
        "client and origin spend on the same exchange without a proxy. A TLS-intercepting proxy "
        "does the work of both ends again: it completes the client's handshake as the origin "
        "does and the origin's as the client does, decrypts what the client encrypted and "
        "encrypts it again, and parses and writes every HTTP message twice.\n",
        "| target | ratio | CPU per unit at that rate | client + origin through Periscope | "
        "left for Periscope | Periscope measured | client + origin direct |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *lines,
        "",
    ]


# The Method items of the scenarios that meta.py does not describe (rsa12, h2, and the
# regular-listener half of socks); they go before its last item (the cores).
EXTRA_METHOD = [
    "SOCKS5 against the regular listener: one `curl` fetches `/1k` N times on one connection "
    "(`curl --socks5-hostname 127.0.0.1:PORT --cacert CA URL URL ...`), through the SOCKS5 "
    "listener each proxy runs beside its regular one, and the same curl through the regular "
    "listener (`-x http://127.0.0.1:PORT`: one CONNECT tunnel), in the same loop, the order of "
    "the two alternating from run to run; direct is curl without a proxy, once per run. req/s is "
    "requests over wall time, curl's start included; the proxy's CPU time per request is its "
    "/proc/PID/stat time across the curl divided by the requests. \"SOCKS5 req/s ÷ regular "
    "listener req/s\" is the ratio of the two medians (target for Periscope: ≥ 0.95, SOCKS5 "
    "within 5% of the regular listener).",
    "Resumption (scenario resume): a fourth nginx server, the ECDSA certificate and the same "
    "`/1k`, with `ssl_session_cache shared` and tickets on; the new-connection c=16 oha command "
    "against it. oha (rustls) resumes its sessions with the origin directly and with the proxy "
    "through one; Periscope resumes its upstream sessions per server, mitmproxy as it does.",
    "RSA-2048 TLS 1.2 origin (scenario rsa12): a second nginx server, the same `/1k`, an RSA-2048 "
    "leaf from the same throw-away CA and `ssl_protocols TLSv1.2`, no resumption either; the "
    "keep-alive c=16 and new-connection c=16 cells run the same oha commands against it, same "
    "duration and number of runs. Only the origin leg is RSA and TLS 1.2: through a proxy the "
    "client leg is whatever the proxy offers oha (its own leaf, TLS 1.3). What each target "
    "negotiated with this origin is in \"TLS as the origin saw it\".",
    "HTTP/2 (scenario h2): a third nginx server, `listen ... ssl http2` (the other scenarios "
    "stay HTTP/1.1), the ECDSA certificate, the same `/1k`. `h2load -c 16 -m 100 "
    "--warm-up-time W -D D https://localhost:PORT/1k`: 16 TLS connections (ALPN h2), 100 "
    "concurrent streams on each; W seconds of warm-up (every connection open, streams in "
    "flight), then D seconds measured (D the oha duration; the same number of runs). h2load "
    "cannot use an HTTP proxy, so through a proxy it connects to a reverse-proxy listener in "
    "front of the HTTP/2 origin: `periscope dump --mode regular --mode "
    "reverse:https://localhost:ORIGIN@PORT`, `mitmdump --mode regular --mode "
    "reverse:https://localhost:ORIGIN@PORT`. h2load does not verify the certificate it gets "
    "(the one client that does not); a `curl --http2` that does verifies each target once and "
    "reports what both legs spoke (its own leg, and nginx's `$server_protocol`): in \"TLS as "
    "the origin saw it\"; a run counts only when h2load negotiated h2. req/s counts finished "
    "requests with a 2xx over the measured D seconds; the proxy's and the machine's CPU time "
    "are read when h2load starts and ends its measured phase (it prints a line for each).",
]


def method_items(meta):
    items = list(meta.get("method", []))
    at = next((n for n, item in enumerate(items) if item.startswith("This machine has")),
              len(items))
    return items[:at] + EXTRA_METHOD + items[at:]


def cpu_targets(med):
    """The speed targets stated in CPU per unit of work against the physical limit (a
    TLS-intercepting proxy does both ends' work, so its CPU per request may approach
    what client and origin spend together without it), and the rates against mitmdump."""
    def get(key, target):
        return med.get((key, target))

    def ratio(a, b):
        return a / b if a is not None and b else None

    rows = [
        ("keep-alive 1 KiB, c=16: proxy CPU per request ÷ (client + origin, direct)",
         ratio(get("ka_c16_cpu", "periscope"), get("ka_c16_peers", "direct")), 2, "≤ 1.0", "le", 1.0),
        ("new connection per request, c=16: proxy CPU per request ÷ (client + origin, direct)",
         ratio(get("nc_c16_cpu", "periscope"), get("nc_c16_peers", "direct")), 2, "≤ 1.0", "le", 1.0),
        ("RSA-2048 TLS 1.2 origin, new connection: proxy CPU per request ÷ (client + origin, direct)",
         ratio(get("rsa12_nc_c16_cpu", "periscope"), get("rsa12_nc_c16_peers", "direct")), 2, "—",
         None, None),
        ("HTTP/2, 100 streams on 16 connections: proxy CPU per request ÷ (client + origin, direct)",
         ratio(get("h2_cpu", "periscope"), get("h2_peers", "direct")), 2, "≤ 1.0", "le", 1.0),
        ("large upload: proxy CPU per GiB (s)", get("ul_cpu", "periscope"), 2, "≤ 1.5", "le", 1.5),
        ("large download: proxy CPU per GiB (s)", get("dl_cpu", "periscope"), 2, "≤ 1.5", "le", 1.5),
        ("keep-alive c=16 req/s: Periscope ÷ mitmdump",
         ratio(get("ka_c16_rps", "periscope"), get("ka_c16_rps", "mitmdump")), 1, "≥ 40", "ge", 40.0),
        ("new connections/s: Periscope ÷ mitmdump",
         ratio(get("nc_c16_rps", "periscope"), get("nc_c16_rps", "mitmdump")), 1, "≥ 20", "ge", 20.0),
        ("RSA-2048 TLS 1.2 origin, new connections/s: Periscope ÷ mitmdump",
         ratio(get("rsa12_nc_c16_rps", "periscope"), get("rsa12_nc_c16_rps", "mitmdump")), 1, "—",
         None, None),
        ("HTTP/2 req/s: Periscope ÷ direct",
         ratio(get("h2_rps", "periscope"), get("h2_rps", "direct")), 2, "measured", None, None),
        ("HTTP/2 req/s: Periscope ÷ mitmdump",
         ratio(get("h2_rps", "periscope"), get("h2_rps", "mitmdump")), 1, "measured", None, None),
        ("1,000 idle keep-alive connections: proxy RSS (MiB)", get("idle_rss", "periscope"), 1,
         "≤ 48", "le", 48.0),
        ("p50 latency added at c=1 (ms)", get("ka_c1_added_p50", "periscope"), 3, "≤ 0.15", "le", 0.15),
        ("SOCKS5 keep-alive req/s ÷ regular listener req/s", get("socks_vs_regular", "periscope"), 2,
         "≥ 0.95", "ge", 0.95),
    ]
    lines = ["## Targets in CPU per unit of work (speed issue, round two)\n",
             "| target | Periscope | goal | pass/fail |", "|---|---:|---:|---:|"]
    for label, value, decimals, goal_text, kind, goal in rows:
        verdict = "—"
        if value is not None and kind == "le":
            verdict = "pass" if value <= goal else "FAIL"
        elif value is not None and kind == "ge":
            verdict = "pass" if value >= goal else "FAIL"
        lines.append(f"| {label} | {fmt(value, decimals)} | {goal_text} | {verdict} |")
    lines.append("")
    return lines


def markdown(rows, verdicts, notes, meta, raw=(), med=None):
    m = meta
    lines = []
    title = "Periscope benchmark"
    if m.get("mode") == "smoke":
        title += " (smoke mode: tiny durations, the numbers mean nothing)"
    lines.append(f"# {title}\n")
    command = ("scripts/bench.sh " + m.get("args", "")).strip()
    lines.append(f"Generated by `{command}` on {m.get('date', '?')}, in {m.get('elapsed', '?')} s.\n")
    load = (m.get("load_before") or "").split()
    try:
        busy = float(load[0]) > 0.5 * float(m.get("nproc") or 1)
    except (IndexError, ValueError):
        busy = False
    if busy:
        lines.append(f"**The machine was busy when this run started (load average {load[0]} on "
                     f"{m.get('nproc')} cores): the numbers show that the bench works, not what "
                     "Periscope can do. Rerun on a quiet machine before quoting them.**\n")
    lines.append("## Machine\n")
    for k, label in [
        ("cpu_model", "CPU"),
        ("nproc", "cores (nproc)"),
        ("mem_total", "RAM"),
        ("os", "OS"),
        ("kernel", "kernel"),
        ("load_before", "load average at start"),
    ]:
        if m.get(k):
            lines.append(f"- {label}: {m[k]}")
    lines.append("")
    lines.append("## Versions\n")
    for k, label in [
        ("periscope", "periscope"),
        ("periscope_binary", "periscope binary"),
        ("nginx", "nginx (origin)"),
        ("openssl", "OpenSSL (system; nginx and curl link it)"),
        ("periscope_openssl", "OpenSSL Periscope runs on (`periscope --version`)"),
        ("curl", "curl (large transfers)"),
        ("oha", "oha (load generator)"),
        ("mitmproxy", "mitmproxy"),
        ("python", "Python (mitmproxy venv)"),
    ]:
        if m.get(k):
            lines.append(f"- {label}: {m[k]}")
    lines.append("")
    lines.append("## Results\n")
    lines.append("Medians over the runs of each cell; `periscope/direct` is the ratio of the "
                 "medians; the targets apply to Periscope. `—`: not applicable or not measured.\n")
    lines.append(md_table(rows))
    lines.append("")
    lines.append("\"proxy CPU per request\" (or per GiB) is the proxy process's user + system CPU "
                 "time during the oha run or the transfer (all threads, from /proc/PID/stat) "
                 "divided by the 2xx responses (or the GiB moved): less sensitive to other load "
                 "on the machine than req/s. \"client + origin CPU\" is every core's busy time "
                 "during the same run (/proc/stat: user, nice, system, irq, softirq, steal) minus "
                 "the proxy's: oha or curl, nginx, and the kernel's work for them (on loopback "
                 "the sender's core also does much of the receiver's TCP work, so the split "
                 "between the three is approximate; their sum is not).\n")
    failed = [label for label, v in verdicts if v == "FAIL"]
    if verdicts:
        if failed:
            lines.append(f"Targets missed: {len(failed)} of {len(verdicts)} — " + "; ".join(failed) + ".\n")
        else:
            lines.append(f"All {len(verdicts)} targets met.\n")
    lines.extend(cpu_targets(med or {}))
    lines.extend(cpu_budget(med or {}, m))
    lines.append("## Method\n")
    for item in method_items(m):
        lines.append(f"- {item}")
    lines.append("")
    if raw:
        lines.append("## Every measurement\n")
        lines.append("Each run's value, in run order, to judge the spread behind the medians.\n")
        lines.append("| metric | target | values |")
        lines.append("|---|---|---|")
        for (key, target), vals in raw:
            lines.append(f"| `{key}` | {target} | " + ", ".join(f"{v:.6g}" for v in vals) + " |")
        lines.append("")
    if notes:
        lines.append("## Notes from this run (errors, caps, skips)\n")
        for n in notes:
            lines.append(f"- {n}")
        lines.append("")
    return "\n".join(lines)


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    workdir, out = Path(sys.argv[1]), Path(sys.argv[2])
    values, notes, meta = load(workdir)
    med = derive(values)
    rows, verdicts, smoke, only = build_rows(med, meta)
    print()
    print(text_table(rows))
    print()
    failed = [label for label, v in verdicts if v == "FAIL"]
    if verdicts:
        print(f"targets: {len(verdicts) - len(failed)} of {len(verdicts)} met"
              + (f"; missed: {'; '.join(failed)}" if failed else ""))
    for n in notes:
        print(f"note: {n}")
    out.parent.mkdir(parents=True, exist_ok=True)
    order = {key: n for n, (key, *_rest) in enumerate(ROWS)}
    raw = sorted(
        ((k, v) for k, v in values.items() if len(v) > 1),
        key=lambda kv: (order.get(kv[0][0], 999), kv[0][0], TARGETS.index(kv[0][1]) if kv[0][1] in TARGETS else 9),
    )
    out.write_text(markdown(rows, verdicts, notes, meta, raw, med))
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
