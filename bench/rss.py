#!/usr/bin/env python3
"""Resident memory of a process, from /proc/PID/status (Linux only, stdlib only).

    rss.py now PID            print VmRSS in KiB
    rss.py reset PID          reset the peak (VmHWM) to the current RSS (clear_refs 5)
    rss.py cpu PID            print the CPU time the process used so far (user + system,
                              all threads), in seconds
    rss.py hwm PID            print VmHWM (the peak RSS) in KiB
    rss.py sample PID OUT     sample VmRSS every 10 ms until SIGTERM/SIGINT or the
                              process exits; then write JSON to OUT:
                              {"max_rss_kib", "hwm_kib", "samples"}
                              (OUT.ready appears once the signal handlers are set)

The peak of a transfer is the larger of the sampled maximum and VmHWM (which the
kernel keeps exactly, once reset at the start of the transfer).
"""

import json
import os
import signal
import sys
import time


def status(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
    return fields


def now(pid):
    print(status(pid)["VmRSS"])


def cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # Fields after the command name, which is in parentheses and may hold spaces.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    print(f"{(utime + stime) / os.sysconf('SC_CLK_TCK'):.3f}")


def reset(pid):
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError as e:  # not fatal: sampling still sees the peak
        print(f"rss.py: cannot reset the peak of {pid}: {e}", file=sys.stderr)


def sample(pid, out):
    stop = False

    def on_signal(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with open(out + ".ready", "w"):
        pass
    peak = 0
    hwm = 0
    count = 0
    while not stop:
        try:
            s = status(pid)
        except (OSError, KeyError, ValueError):
            break
        peak = max(peak, s.get("VmRSS", 0))
        hwm = s.get("VmHWM", hwm)
        count += 1
        time.sleep(0.01)
    try:
        s = status(pid)
        peak = max(peak, s.get("VmRSS", 0))
        hwm = s.get("VmHWM", hwm)
    except (OSError, KeyError, ValueError):
        pass
    with open(out, "w") as f:
        json.dump({"max_rss_kib": peak, "hwm_kib": hwm, "samples": count}, f)


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    cmd, pid = sys.argv[1], int(sys.argv[2])
    if cmd == "now":
        now(pid)
    elif cmd == "hwm":
        print(status(pid)["VmHWM"])
    elif cmd == "cpu":
        cpu(pid)
    elif cmd == "reset":
        reset(pid)
    elif cmd == "sample" and len(sys.argv) == 4:
        sample(pid, sys.argv[3])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
