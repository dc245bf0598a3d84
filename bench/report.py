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
    ("ka_c64_rps", "keep-alive 1 KiB, c=64: req/s", "req/s", 0, None, None),
    ("ka_c64_p50", "keep-alive 1 KiB, c=64: p50 latency", "ms", 3, None, None),
    ("ka_c64_p99", "keep-alive 1 KiB, c=64: p99 latency", "ms", 3, None, None),
    ("nc_c16_rps", "new connection per request, c=16: req/s", "req/s", 0, "ratio_ge", 0.4),
    ("nc_c16_cpu", "new connection per request, c=16: proxy CPU per request", "µs", 0, None, None),
    ("dl_mbps", "large download: throughput", "MB/s", 0, "ratio_ge", 0.8),
    ("dl_rss", "large download: proxy peak RSS", "MiB", 1, "abs_lt", 64),
    ("ul_mbps", "large upload: throughput", "MB/s", 0, "ratio_ge", 0.8),
    ("ul_rss", "large upload: proxy peak RSS", "MiB", 1, "abs_lt", 64),
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


def derive(values):
    """Rows computed from others: added latency, session growth."""
    med = {}
    for (key, target), v in values.items():
        med[(key, target)] = statistics.median(v)
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
        if verdict:
            verdicts.append((label, verdict))
        rows.append(
            [
                label if label.endswith(unit) else f"{label} ({unit})",
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


def markdown(rows, verdicts, notes, meta, raw=()):
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
        ("openssl", "OpenSSL (system; nginx, curl and Periscope link it)"),
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
    lines.append("\"proxy CPU per request\" is the proxy process's user + system CPU time during "
                 "the oha run (all threads, from /proc/PID/stat) divided by the 2xx responses: "
                 "less sensitive to other load on the machine than req/s.\n")
    failed = [label for label, v in verdicts if v == "FAIL"]
    if verdicts:
        if failed:
            lines.append(f"Targets missed: {len(failed)} of {len(verdicts)} — " + "; ".join(failed) + ".\n")
        else:
            lines.append(f"All {len(verdicts)} targets met.\n")
    lines.append("## Method\n")
    for item in m.get("method", []):
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
    out.write_text(markdown(rows, verdicts, notes, meta, raw))
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
