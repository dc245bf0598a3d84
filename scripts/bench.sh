#!/usr/bin/env bash
# Periscope's benchmark: the same HTTPS workloads three ways in one run — direct to an
# nginx origin (the ceiling), through Periscope, through mitmdump — then a table and
# bench/RESULTS.md (machine, versions, medians, ratios to direct, targets).
#
#   scripts/bench.sh                 # full run (< 17 min once the tools are installed)
#   scripts/bench.sh --smoke         # tiny sizes, same code paths; writes bench/work/RESULTS.smoke.md
#   scripts/bench.sh --only idle     # one scenario: keepalive newconn transfer idle session store socks hooks addons rsa12 h2 resume web
#   scripts/bench.sh --tls12         # origin speaks TLS 1.2 only (default: 1.2 and 1.3)
#
# Installs what it needs when missing: nginx, curl, openssl, python3, h2load (apt:
# nghttp2-client); oha (cargo install, pinned); mitmproxy (pip, in bench/.venv, with
# Python >= 3.12 where one exists). The web scenario uses the test suite's Playwright
# and Chromium (scripts/test.sh installs them; PERISCOPE_TEST_PYTHON and
# PERISCOPE_TEST_CHROMIUM name others).
# Builds Periscope with `cargo build --release` unless PERISCOPE_BIN names a binary.
# See bench/README.md for what each scenario measures and how.
#
# Environment overrides: PERISCOPE_BIN, BENCH_RUNS, BENCH_DURATION (seconds per oha or
# h2load run), BENCH_H2_WARMUP (h2load's warm-up, seconds), BENCH_OHA_VERSION,
# BENCH_MITMPROXY_SPEC, BENCH_TOOLS_DIR (cargo install root for oha, default ~/.cargo),
# BENCH_PYTHON (interpreter for the mitmproxy venv), BENCH_VENV (its directory, default
# bench/.venv).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$REPO/bench"
WORK="$BENCH/work"
START=$SECONDS
ARGS="$*"

# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------
MODE=full
ONLY=""
TLS12=0
ALL_SCENARIOS=(keepalive newconn transfer idle session store socks hooks addons rsa12 h2 resume web)

usage() { sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --smoke) MODE=smoke ;;
        --only) ONLY="${2:?--only needs a scenario name}"; shift ;;
        --only=*) ONLY="${1#--only=}" ;;
        --tls12) TLS12=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "bench: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [[ -n $ONLY ]]; then
    ok=0
    for s in "${ALL_SCENARIOS[@]}"; do [[ $s == "$ONLY" ]] && ok=1; done
    [[ $ok -eq 1 ]] || { echo "bench: --only takes one of: ${ALL_SCENARIOS[*]}" >&2; exit 2; }
    SCENARIOS=("$ONLY")
else
    SCENARIOS=("${ALL_SCENARIOS[@]}")
fi

if [[ $MODE == smoke ]]; then
    RUNS=${BENCH_RUNS:-1}
    DURATION=${BENCH_DURATION:-2}
    CONCURRENCIES=(1 16 64)
    BIG_MIB=10
    TRANSFER_RUNS=1
    TRANSFER_CAP=60       # seconds, any target
    MITM_TRANSFER_CAP=30  # seconds, mitmdump
    IDLE_COUNT=50
    SESSION_FLOWS=1000
    MITM_SESSION_FLOWS=1000
    STORE_FLOWS=2000
    STORE_RUNS=1
    WEB_FLOWS=2000
    WEB_RUNS=1
    SOCKS_REQUESTS=200
    H2_WARMUP=${BENCH_H2_WARMUP:-3}
    OUT_MD="$WORK/RESULTS.smoke.md"
else
    RUNS=${BENCH_RUNS:-3}
    DURATION=${BENCH_DURATION:-6}
    CONCURRENCIES=(1 16 64)
    BIG_MIB=1024
    TRANSFER_RUNS=2
    TRANSFER_CAP=120
    MITM_TRANSFER_CAP=30
    IDLE_COUNT=1000
    SESSION_FLOWS=100000
    MITM_SESSION_FLOWS=4000   # mitmdump is ~20x slower: 4k flows take it ~25 s
    STORE_FLOWS=100000        # written in ~20 s; the whole scenario stays under a minute
    STORE_RUNS=2
    WEB_FLOWS=100000
    WEB_RUNS=3
    SOCKS_REQUESTS=5000
    H2_WARMUP=${BENCH_H2_WARMUP:-5}   # h2load's warm-up before each measured run (scenario h2)
    OUT_MD="$BENCH/RESULTS.md"
fi
if [[ -n $ONLY ]]; then
    OUT_MD="$WORK/RESULTS.only-$ONLY.md"
    [[ $MODE == smoke ]] && OUT_MD="$WORK/RESULTS.only-$ONLY.smoke.md"
fi
# Each mode has its own run directory: a smoke run (the test suite) never clobbers a full one.
RUN="$WORK/run-$MODE${ONLY:+-$ONLY}"
NEWCONN_CONCURRENCY=16
SESSION_CONCURRENCY=16
OHA_VERSION=${BENCH_OHA_VERSION:-1.16.0}
VENV="${BENCH_VENV:-$BENCH/.venv}"

say() { echo "bench: $*" >&2; }
die() { echo "bench: ERROR: $*" >&2; exit 1; }
loud() {
    echo "bench: ************************************************************" >&2
    echo "bench: *** $*" >&2
    echo "bench: ************************************************************" >&2
}

SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO="sudo"
# Direct means direct: no proxy from the environment for curl, oha or Python.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY

# ---------------------------------------------------------------------------
# Dependencies
# ---------------------------------------------------------------------------
ensure_apt() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    say "installing with apt: ${missing[*]}"
    # Package scripts must not start a system-wide nginx on port 80.
    local policy=/usr/sbin/policy-rc.d added=0 rc=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
        $SUDO chmod 755 "$policy"
        added=1
    fi
    {
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                --no-install-recommends "${missing[@]}" >/dev/null
    } || rc=$?
    [[ $added -eq 1 ]] && $SUDO rm -f "$policy"
    [[ $rc -eq 0 ]] || die "apt-get install ${missing[*]} failed (exit $rc)"
}

find_oha() {
    local c
    for c in "${BENCH_OHA:-}" "${BENCH_TOOLS_DIR:-$HOME/.cargo}/bin/oha" "$BENCH/.tools/bin/oha" \
        "$(command -v oha 2>/dev/null || true)"; do
        [[ -n $c && -x $c ]] || continue
        if [[ -n ${BENCH_OHA:-} && $c == "$BENCH_OHA" ]] ||
            [[ "$("$c" --version 2>/dev/null)" == "oha $OHA_VERSION" ]]; then
            echo "$c"
            return 0
        fi
    done
    return 1
}

# The two slow installs (oha compiles for minutes, pip downloads mitmproxy) run in the
# background while Periscope builds; each logs to bench/work/install-*.log.
OHA_JOB=""
start_oha_install() {
    if OHA="$(find_oha)"; then return 0; fi
    command -v cargo >/dev/null || die "cargo not found: it is needed to install oha"
    local root="${BENCH_TOOLS_DIR:-$HOME/.cargo}"
    say "installing oha $OHA_VERSION with cargo into $root, in the background (minutes, once): $WORK/install-oha.log"
    cargo install --locked --root "$root" oha --version "$OHA_VERSION" >"$WORK/install-oha.log" 2>&1 &
    OHA_JOB=$!
}
finish_oha_install() {
    if [[ -n $OHA_JOB ]]; then
        say "waiting for the oha install"
        if ! wait "$OHA_JOB"; then
            OHA_JOB=""
            tail -20 "$WORK/install-oha.log" >&2
            die "cargo install oha $OHA_VERSION failed (log: $WORK/install-oha.log)"
        fi
        OHA_JOB=""
        OHA="$(find_oha)" || die "oha $OHA_VERSION still not found after cargo install"
    fi
    say "oha: $OHA"
}

python_version_ok() { # python >= 3.12?
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null
}

pick_python() {
    local c
    if [[ -n ${BENCH_PYTHON:-} ]]; then echo "$BENCH_PYTHON"; return; fi
    for c in "$HOME"/.pyenv/versions/3.12.*/bin/python3.12 "$(command -v python3.12 2>/dev/null || true)" \
        "$HOME"/.pyenv/versions/3.13.*/bin/python3.13 "$(command -v python3.13 2>/dev/null || true)" \
        "$(command -v python3 2>/dev/null || true)"; do
        [[ -n $c && -x $c ]] && python_version_ok "$c" && { echo "$c"; return; }
    done
    command -v python3
}

MITM_OK=0
MITM_SKIP_REASON=""
MITM_JOB=""
MITM_SPEC=""
mitmdump_works() { [[ -x $VENV/bin/mitmdump ]] && "$VENV/bin/mitmdump" --version >/dev/null 2>&1; }
start_mitmproxy_install() {
    local py
    if mitmdump_works; then return 0; fi
    py="$(pick_python)"
    if python_version_ok "$py"; then
        MITM_SPEC="${BENCH_MITMPROXY_SPEC:-mitmproxy==12.3.1}"
    else
        MITM_SPEC="${BENCH_MITMPROXY_SPEC:-mitmproxy}"
        say "no Python >= 3.12 found; $py is $("$py" --version 2>&1): pip will pick an older mitmproxy"
    fi
    MITM_SPEC+=" with $py ($("$py" --version 2>&1))"
    say "installing $MITM_SPEC into $VENV, in the background: $WORK/install-mitmproxy.log"
    rm -rf "$VENV"
    {
        "$py" -m venv "$VENV" &&
            "$VENV/bin/python" -m pip install --disable-pip-version-check "${MITM_SPEC%% with *}"
    } >"$WORK/install-mitmproxy.log" 2>&1 &
    MITM_JOB=$!
}
finish_mitmproxy_install() {
    if [[ -n $MITM_JOB ]]; then
        say "waiting for the mitmproxy install"
        wait "$MITM_JOB" || true
        MITM_JOB=""
    fi
    if mitmdump_works; then
        MITM_OK=1
    else
        tail -5 "$WORK/install-mitmproxy.log" 2>/dev/null | sed 's/^/bench: pip: /' >&2
        MITM_SKIP_REASON="installing ${MITM_SPEC:-mitmproxy} into $VENV failed (log: $WORK/install-mitmproxy.log)"
    fi
}

# ---------------------------------------------------------------------------
# Processes (only the ones this script started are ever stopped)
# ---------------------------------------------------------------------------
NGINX_PID=""
PERISCOPE_PID=""
MITM_PID=""
SHM=""
cleanup() {
    local pid
    for pid in "$PERISCOPE_PID" "$MITM_PID" "$NGINX_PID" "$OHA_JOB" "$MITM_JOB"; do
        if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; fi
    done
    for pid in "$PERISCOPE_PID" "$MITM_PID" "$NGINX_PID"; do
        if [[ -n $pid ]]; then wait "$pid" 2>/dev/null || true; fi
    done
    [[ -n $SHM && -d $SHM ]] && rm -rf "$SHM"
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Listener ports come from below the ephemeral range (scripts/lib/listen_ports.py says why).
listen_ports() { python3 "$REPO/scripts/lib/listen_ports.py" "$1"; }

stop_pid() { # stop_pid PID: TERM, wait up to 5 s, then KILL
    local pid=$1
    [[ -n $pid ]] || return 0
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# probe PROXY_URL CAFILE [PORT]: GET /proto through the proxy ("" = direct) from the
# origin on PORT (default: the main one); prints the body.
probe() {
    local proxy=$1 ca=$2 port=${3:-$NGINX_PORT}
    curl -sS --fail --max-time 5 ${proxy:+-x "$proxy"} --cacert "$ca" \
        "https://localhost:$port/proto" 2>/dev/null
}

wait_ready() { # wait_ready NAME PROXY_URL CAFILE PID LOG
    local name=$1 proxy=$2 ca=$3 pid=$4 log=$5
    for _ in $(seq 150); do
        kill -0 "$pid" 2>/dev/null || { tail -20 "$log" >&2; die "$name exited at start"; }
        if [[ -s $ca ]] && probe "$proxy" "$ca" >/dev/null; then return 0; fi
        sleep 0.2
    done
    tail -20 "$log" >&2
    die "$name did not answer through $proxy within 30 s"
}

# The socks scenario adds a SOCKS5 listener beside the regular one (which the readiness
# probe uses), the h2 scenario a reverse-proxy listener in front of the HTTP/2 origin
# (h2load cannot use an HTTP proxy); the other scenarios run the proxies as they always did.
extra_modes() { # extra_modes SCENARIO periscope|mitmdump
    local socks=$PERISCOPE_SOCKS_PORT h2=$PERISCOPE_H2_PORT
    [[ $2 == mitmdump ]] && socks=$MITM_SOCKS_PORT h2=$MITM_H2_PORT
    case $1 in
        socks) echo "--mode regular --mode socks5@$socks" ;;
        h2) echo "--mode regular --mode reverse:https://localhost:$NGINX_H2_PORT@$h2" ;;
    esac
    return 0
}

# The addons scenario runs both proxies with the same no-op `response` script
# (bench/noop_response.py); Periscope's worker uses the system python3.
addon_args() { # addon_args SCENARIO periscope|mitmdump
    case $1 in
        addons) echo "-s $BENCH/noop_response.py" ;;
        addons_body) echo "-s $BENCH/body_request_response.py" ;;
        *) return 0 ;;
    esac
    [[ $2 == periscope ]] && echo "--scripts-python $(command -v python3)"
    return 0
}

# The hooks scenario's variants: 20 rules (10 header, 10 body) whose filters match
# none of the bench's requests, the way rules scoped to other hosts sit in a config
# file; or an intercept filter that matches nothing, with the control API serving (so
# flows are kept in a temporary session, as the console and the web UI keep them); or
# the session saved to a file with -w. Without -w or the API, dump keeps no flows; the
# long session keeps them too (-w), since its RSS must stay flat while the store fills.
hook_args() { # hook_args VARIANT|SCENARIO
    local i
    case $1 in
        hooks-save)
            printf -- '-w\n%s\n' "$RUN/hooks-save.periscope" ;;
        session)
            printf -- '-w\n%s\n' "$RUN/session.periscope" ;;
        hooks-rules)
            for i in $(seq 10); do
                printf -- '--modify-headers\n/~d nomatch%s.invalid/x-rule-%s/%s\n' "$i" "$i" "$i"
                printf -- '--modify-body\n/~d nomatch%s.invalid/secret%s/public\n' "$i" "$i"
            done ;;
        hooks-intercept)
            printf -- '--intercept\n~d nomatch.invalid\n--web-port\n0\n' ;;
    esac
}

start_periscope() {
    local log="$RUN/periscope.$1.log"
    local extra=()
    mapfile -t extra < <(hook_args "$1")
    # stdout (a line per flow) goes nowhere: printing is not what is measured.
    # shellcheck disable=SC2046 # extra_modes and addon_args print separate words on purpose
    "$PERISCOPE_BIN" dump -p "$PERISCOPE_PORT" --confdir "$RUN/periscope-conf" \
        --upstream-trusted-ca "$RUN/pki/ca.pem" $(extra_modes "$1" periscope) \
        $(addon_args "$1" periscope) "${extra[@]}" >/dev/null 2>"$log" &
    PERISCOPE_PID=$!
    wait_ready periscope "http://127.0.0.1:$PERISCOPE_PORT" "$PERISCOPE_CA" "$PERISCOPE_PID" "$log"
}

start_mitmdump() {
    [[ $MITM_OK -eq 1 ]] || return 0
    local log="$RUN/mitmdump.$1.log"
    # Both streams to the log: with -q mitmdump prints only errors, and it prints them on
    # stdout ("failed to listen ... address already in use"), its stderr saying just
    # "Error logged during startup, exiting...".
    # shellcheck disable=SC2046 # extra_modes and addon_args print separate words on purpose
    "$VENV/bin/mitmdump" -q --listen-host 127.0.0.1 --listen-port "$MITM_PORT" \
        $(extra_modes "$1" mitmdump) $(addon_args "$1" mitmdump) \
        --set confdir="$RUN/mitmproxy-conf" \
        --set ssl_verify_upstream_trusted_ca="$RUN/pki/ca.pem" \
        --set stream_large_bodies=4m >"$log" 2>&1 &
    MITM_PID=$!
    wait_ready mitmdump "http://127.0.0.1:$MITM_PORT" "$MITM_CA" "$MITM_PID" "$log"
}

start_proxies() { # start_proxies SCENARIO: fresh proxies for each scenario
    start_periscope "$1"
    start_mitmdump "$1"
}

HARMLESS='signal wakeup fd|^Traceback \(most recent call last\):$|_sighandler_noop|^BlockingIOError: \[Errno 11\]|^ *$'
stop_proxies() {
    local name=$1 log
    stop_pid "$PERISCOPE_PID"; PERISCOPE_PID=""
    stop_pid "$MITM_PID"; MITM_PID=""
    for log in "$RUN/periscope.$name.log" "$RUN/mitmdump.$name.log"; do
        [[ -s $log ]] || continue
        # Python's asyncio prints a harmless traceback when a signal arrives while its
        # wakeup pipe is full (mitmdump at shutdown after heavy load): not counted.
        local n first
        n=$(grep -vE "$HARMLESS" "$log" | grep -ciE 'error|warn|panic|traceback' || true)
        first=$(grep -vE "$HARMLESS" "$log" | grep -iE -m1 'error|warn|panic|traceback' | cut -c1-200 || true)
        [[ $n -gt 0 ]] && note "$(basename "$log"): $n error/warning lines, first: $first"
    done
    return 0
}

# ---------------------------------------------------------------------------
# Recording
# ---------------------------------------------------------------------------
record() { # record METRIC TARGET RUN VALUE
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RUN/results.tsv"
}
note() {
    echo "$*" >>"$RUN/notes.txt"
    say "note: $*"
}
MISSING_CORE=()   # direct/periscope measurements that produced no number

targets() { # the targets that run: direct periscope [mitmdump]
    echo direct periscope
    [[ $MITM_OK -eq 1 ]] && echo mitmdump
    return 0
}
proxy_url() {
    case $1 in
        direct) echo "" ;;
        periscope) echo "http://127.0.0.1:$PERISCOPE_PORT" ;;
        mitmdump) echo "http://127.0.0.1:$MITM_PORT" ;;
    esac
}
client_ca() {
    case $1 in
        direct) echo "$RUN/pki/ca.pem" ;;
        periscope) echo "$PERISCOPE_CA" ;;
        mitmdump) echo "$MITM_CA" ;;
    esac
}
proxy_pid() {
    case $1 in
        periscope) echo "$PERISCOPE_PID" ;;
        mitmdump) echo "$MITM_PID" ;;
        *) echo "" ;;
    esac
}
# A proxy's CPU includes its children's (Periscope's addon worker in the addons scenario).
proc_cpu() {
    local pid=$1 total child
    total="$(python3 "$BENCH/rss.py" cpu "$pid" 2>/dev/null || echo 0)"
    # shellcheck disable=SC2013 # the children files hold space-separated pids, no lines
    for child in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
        total="$(python3 -c "print($total + $(python3 "$BENCH/rss.py" cpu "$child" 2>/dev/null || echo 0))")"
    done
    echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)
# Every core's busy time so far, in seconds (/proc/stat: user nice system idle iowait irq
# softirq steal; all but idle and iowait). In bash: a python start would land in the window.
machine_cpu() {
    local _cpu user nice system _idle _iowait irq softirq steal _rest
    read -r _cpu user nice system _idle _iowait irq softirq steal _rest </proc/stat
    echo "$(((user + nice + system + irq + softirq + steal) * 1000 / CLK_TCK))e-3"
}
proc_rss_mib() { # VmRSS in MiB, empty when the process is gone
    local kib
    kib="$(python3 "$BENCH/rss.py" now "$1" 2>/dev/null)" || return 0
    python3 -c "print($kib / 1024)"
}
failed() { # failed TARGET WHAT: a measurement gave no number
    note "$1: $2 gave no result"
    local pid
    pid="$(proxy_pid "$1")"
    if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
        note "$1 is no longer running (crashed?): last log lines: $(tail -5 "$RUN/$1".*.log 2>/dev/null | tr '\n' ' ' | cut -c1-400)"
    fi
    [[ $1 == mitmdump ]] || MISSING_CORE+=("$1: $2")
}

# oha_run TARGET OUT.json ARGS...: one oha run against /1k of the origin on OHA_PORT
# (default: the main one); 0 when it produced JSON.
# The proxy's CPU time during the run goes to OUT.json.cpu, the whole machine's (every
# core's busy time: oha, nginx, the proxy, the kernel) to OUT.json.mcpu (seconds).
oha_run() {
    local target=$1 out=$2
    shift 2
    local proxy pid cpu0="" mcpu0
    proxy="$(proxy_url "$target")"
    pid="$(proxy_pid "$target")"
    [[ -n $pid ]] && cpu0="$(proc_cpu "$pid")"
    mcpu0="$(machine_cpu)"
    local limit=$((DURATION + 60))
    timeout -k 5 "$limit" "$OHA" --no-tui --output-format json \
        --cacert "$(client_ca "$target")" ${proxy:+-x "$proxy"} \
        "$@" "https://localhost:${OHA_PORT:-$NGINX_PORT}/1k" >"$out" 2>"$out.err" || true
    python3 -c "print($(machine_cpu) - $mcpu0)" >"$out.mcpu"
    rm -f "$out.cpu"
    [[ -n $pid ]] && python3 -c "print($(proc_cpu "$pid") - $cpu0)" >"$out.cpu"
    [[ -s $out ]] && python3 "$BENCH/oha_summary.py" "$out" >/dev/null 2>&1
}

# oha_why OUT.json: why a run gave no number (oha's distributions, else its stderr).
oha_why() {
    python3 "$BENCH/oha_summary.py" --errors "$1" 2>/dev/null && return 0
    echo "oha: $(head -c 300 "$1.err" 2>/dev/null | tr '\n' ' ')"
}

# oha_record METRIC_PREFIX TARGET RUN OUT.json [rps p50 p99]
oha_record() {
    local prefix=$1 target=$2 run=$3 out=$4
    shift 4
    local fields=("$@") line
    line="$(python3 "$BENCH/oha_summary.py" "$out")"
    # line: rps p50_ms p99_ms ok errors non2xx
    local rps p50 p99 ok errors non2xx
    read -r rps p50 p99 ok errors non2xx <<<"$line"
    local f
    for f in "${fields[@]}"; do
        case $f in
            rps) record "${prefix}_rps" "$target" "$run" "$rps" ;;
            p50) record "${prefix}_p50" "$target" "$run" "$p50" ;;
            p99) record "${prefix}_p99" "$target" "$run" "$p99" ;;
            cpu) [[ -s $out.cpu && $ok -gt 0 ]] &&
                record "${prefix}_cpu" "$target" "$run" "$(python3 -c "print($(cat "$out.cpu") * 1e6 / $ok)")" ;;
            mcpu) [[ -s $out.mcpu && $ok -gt 0 ]] &&
                record "${prefix}_mcpu" "$target" "$run" "$(python3 -c "print($(cat "$out.mcpu") * 1e6 / $ok)")" ;;
        esac
    done
    if [[ $errors != 0 || $non2xx != 0 ]]; then
        note "$target $prefix run $run: $ok ok, $errors errors, $non2xx non-2xx; $(python3 "$BENCH/oha_summary.py" --errors "$out")"
    fi
}

# ---------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------
scenario_keepalive() {
    say "== 1. keep-alive, 1 KiB responses, concurrency ${CONCURRENCIES[*]}, $RUNS x ${DURATION}s"
    start_proxies keepalive
    local run c target out
    for run in $(seq "$RUNS"); do
        for c in "${CONCURRENCIES[@]}"; do
            for target in $(targets); do
                out="$RUN/oha.ka.c$c.$target.$run.json"
                if oha_run "$target" "$out" -z "${DURATION}s" -c "$c"; then
                    oha_record "ka_c$c" "$target" "$run" "$out" rps p50 p99 cpu mcpu
                    say "   run $run c=$c $target: $(python3 "$BENCH/oha_summary.py" --human "$out")"
                else
                    failed "$target" "keep-alive c=$c run $run ($(oha_why "$out"))"
                fi
            done
        done
    done
    stop_proxies keepalive
}

# Keep-alive at c=16 with one script in both proxies: a no-op `response` (the cost of
# a hook call to the worker and back, per request; compare with ka_c16_* of scenario
# 1), then `request` + `response` reading the bodies (both bodies sent to the worker).
scenario_addons() {
    local phase prefix run target out
    for phase in addons addons_body; do
        prefix=addon_c16
        [[ $phase == addons_body ]] && prefix=addon_body_c16
        say "== 8. keep-alive, 1 KiB responses, c=16, script $(addon_args "$phase" mitmdump | cut -d' ' -f2 | xargs basename), $RUNS x ${DURATION}s"
        start_proxies "$phase"
        for run in $(seq "$RUNS"); do
            for target in $(targets); do
                out="$RUN/oha.$phase.$target.$run.json"
                if oha_run "$target" "$out" -z "${DURATION}s" -c 16; then
                    oha_record "$prefix" "$target" "$run" "$out" rps p50 cpu
                    say "   run $run c=16 $target: $(python3 "$BENCH/oha_summary.py" --human "$out")"
                else
                    failed "$target" "keep-alive with a script ($phase) run $run ($(oha_why "$out"))"
                fi
            done
        done
        stop_proxies "$phase"
    done
}

scenario_newconn() {
    say "== 2. a new connection per request, concurrency $NEWCONN_CONCURRENCY, $RUNS x ${DURATION}s"
    start_proxies newconn
    newconn_runs nc "nc_c$NEWCONN_CONCURRENCY" "$NGINX_PORT" "new-connection"
    stop_proxies newconn
}

# newconn_runs NAME METRIC PORT WHAT: RUNS rounds of oha with a new connection per request
# (c=NEWCONN_CONCURRENCY) to the origin on PORT, the targets taking turns in each round.
newconn_runs() {
    local name=$1 metric=$2 port=$3 what=$4 run target out
    for run in $(seq "$RUNS"); do
        for target in $(targets); do
            out="$RUN/oha.$name.$target.$run.json"
            if OHA_PORT=$port oha_run "$target" "$out" -z "${DURATION}s" -c "$NEWCONN_CONCURRENCY" --disable-keepalive; then
                oha_record "$metric" "$target" "$run" "$out" rps cpu mcpu
                say "   run $run $target: $(python3 "$BENCH/oha_summary.py" --human "$out")"
            else
                failed "$target" "$what run $run ($(oha_why "$out"))"
            fi
        done
    done
}

# transfer_one KIND TARGET RUN: KIND download|upload; records MB/s and the proxy's peak RSS.
transfer_one() {
    local kind=$1 target=$2 run=$3
    local proxy ca pid cap out sampler="" rss_json="$RUN/rss.$kind.$target.$run.json"
    proxy="$(proxy_url "$target")"
    ca="$(client_ca "$target")"
    pid="$(proxy_pid "$target")"
    cap=$TRANSFER_CAP
    [[ $target == mitmdump ]] && cap=$MITM_TRANSFER_CAP
    if [[ -n $pid ]]; then
        python3 "$BENCH/rss.py" reset "$pid"
        rm -f "$rss_json" "$rss_json.ready"
        python3 "$BENCH/rss.py" sample "$pid" "$rss_json" &
        sampler=$!
        for _ in $(seq 100); do
            [[ -e $rss_json.ready ]] && break
            sleep 0.02
        done
    fi
    local rc=0 name="up-$target-$run-$RANDOM" cpu0="" mcpu0
    [[ -n $pid ]] && cpu0="$(proc_cpu "$pid")"
    mcpu0="$(machine_cpu)"
    if [[ $kind == download ]]; then
        out="$(curl -sS --max-time "$cap" ${proxy:+-x "$proxy"} --cacert "$ca" -o /dev/null \
            -w '%{speed_download} %{size_download} %{http_code}' \
            "https://localhost:$NGINX_PORT/big" 2>"$RUN/curl.err")" || rc=$?
    else
        # No `Expect: 100-continue`: throughput, not the 100-continue dance, is measured.
        out="$(curl -sS --max-time "$cap" ${proxy:+-x "$proxy"} --cacert "$ca" -o /dev/null \
            -H 'Expect:' -T "$RUN/www/big" \
            -w '%{speed_upload} %{size_upload} %{http_code}' \
            "https://localhost:$NGINX_PORT/upload/$name" 2>"$RUN/curl.err")" || rc=$?
        rm -f "$SHM/upload/$name"
    fi
    local mcpu cpu=""
    mcpu="$(python3 -c "print($(machine_cpu) - $mcpu0)")"
    [[ -n $pid ]] && cpu="$(python3 -c "print($(proc_cpu "$pid") - $cpu0)")"
    if [[ -n $sampler ]]; then
        kill "$sampler" 2>/dev/null || true
        wait "$sampler" 2>/dev/null || true
    fi
    local speed size code
    read -r speed size code <<<"$out"
    local key=dl
    [[ $kind == upload ]] && key=ul
    local expect=$((BIG_MIB * 1024 * 1024))
    if [[ -z $speed || ${speed%.*} -eq 0 ]]; then
        failed "$target" "$kind run $run (curl exit $rc, $(head -c 200 "$RUN/curl.err"))"
    else
        local mbps
        mbps="$(python3 -c "print(${speed} / 1e6)")"
        record "${key}_mbps" "$target" "$run" "$mbps"
        # CPU seconds per GiB moved: the whole machine's, and the proxy's.
        if [[ ${size%.*} -gt 0 ]]; then
            record "${key}_mcpu" "$target" "$run" "$(python3 -c "print($mcpu * 1073741824 / ${size%.*})")"
            [[ -n $cpu ]] && record "${key}_cpu" "$target" "$run" "$(python3 -c "print($cpu * 1073741824 / ${size%.*})")"
        fi
        if [[ $rc -eq 28 ]]; then
            note "$target $kind run $run: capped at ${cap}s after $((${size%.*} / 1048576)) MiB of $BIG_MIB MiB; MB/s is over what was moved"
        elif [[ $rc -ne 0 || ${size%.*} -ne $expect || ! $code =~ ^2 ]]; then
            note "$target $kind run $run: curl exit $rc, HTTP $code, $size of $expect bytes; $(head -c 200 "$RUN/curl.err")"
            [[ $target == mitmdump ]] || MISSING_CORE+=("$target: $kind run $run incomplete")
        fi
        say "   $kind run $run $target: $(printf '%.0f' "$mbps") MB/s, HTTP $code, $((${size%.*} / 1048576)) MiB"
    fi
    if [[ -n $sampler ]]; then
        local peak
        if [[ -s $rss_json ]]; then
            peak="$(python3 -c "import json; d=json.load(open('$rss_json')); print(max(d['max_rss_kib'], d['hwm_kib'])/1024)")"
        else # the sampler died early: the kernel's peak still holds
            peak="$(python3 -c "print($(python3 "$BENCH/rss.py" hwm "$pid") / 1024)")"
        fi
        record "${key}_rss" "$target" "$run" "$peak"
    fi
}

scenario_transfer() {
    say "== 3. one large download and upload ($BIG_MIB MiB, streamed), $TRANSFER_RUNS run(s) each"
    start_proxies transfer
    local run target kind
    for kind in download upload; do
        for run in $(seq "$TRANSFER_RUNS"); do
            for target in $(targets); do
                transfer_one "$kind" "$target" "$run"
            done
        done
    done
    stop_proxies transfer
}

# SOCKS5 keep-alive: one curl asks for /1k SOCKS_REQUESTS times on one connection,
# through each SOCKS5 listener (direct: no proxy); the rate is requests per second of
# wall time, curl's own start included (the same for every target). In the same loop the
# same curl goes through each proxy's regular listener (-x: one CONNECT tunnel), so that
# SOCKS5 can be compared with it on the same workload; which of the two goes first
# alternates from run to run. The proxy's CPU time per request is recorded for both.
scenario_socks() {
    say "== 7. SOCKS5 and the regular listener (CONNECT), keep-alive, 1 KiB responses, one connection, $SOCKS_REQUESTS requests, $RUNS runs"
    start_proxies socks
    local run target out socks started elapsed ok via vias metric pid cpu0 cpu
    local urls=() how=()
    for _ in $(seq "$SOCKS_REQUESTS"); do urls+=("https://localhost:$NGINX_PORT/1k"); done
    for run in $(seq "$RUNS"); do
        for target in $(targets); do
            case $target in
                direct) socks="" ;;
                periscope) socks="127.0.0.1:$PERISCOPE_SOCKS_PORT" ;;
                mitmdump) socks="127.0.0.1:$MITM_SOCKS_PORT" ;;
            esac
            vias=(socks5 regular)
            ((run % 2 == 0)) && vias=(regular socks5)
            [[ $target == direct ]] && vias=(socks5) # direct: no proxy, measured once
            pid="$(proxy_pid "$target")"
            for via in "${vias[@]}"; do
                if [[ $via == socks5 ]]; then
                    metric=socks_ka
                    how=(${socks:+--socks5-hostname "$socks"})
                else
                    metric=socks_regular
                    how=(-x "$(proxy_url "$target")")
                fi
                out="$RUN/socks.$via.$target.$run"
                cpu0=""
                [[ -n $pid ]] && cpu0="$(proc_cpu "$pid")"
                started=$(date +%s.%N)
                # The bodies go to stdout (/dev/null); each status to stderr, one a line.
                curl -sS --fail --max-time 300 "${how[@]}" \
                    --cacert "$(client_ca "$target")" -w '%{stderr}%{http_code}\n' \
                    "${urls[@]}" >/dev/null 2>"$out" || true
                elapsed=$(python3 -c "print($(date +%s.%N) - $started)")
                cpu=""
                [[ -n $pid ]] && cpu="$(python3 -c "print($(proc_cpu "$pid") - $cpu0)")"
                ok=$(grep -c '^200$' "$out" || true)
                if [[ $ok -eq $SOCKS_REQUESTS ]]; then
                    record "${metric}_rps" "$target" "$run" "$(python3 -c "print($ok / $elapsed)")"
                    if [[ -n $cpu ]]; then
                        record "${metric}_cpu" "$target" "$run" "$(python3 -c "print($cpu * 1e6 / $ok)")"
                    fi
                    say "   run $run $target ($via): $ok requests in ${elapsed}s"
                else
                    failed "$target" "$via keep-alive run $run ($ok of $SOCKS_REQUESTS answered 200; $(grep -v '^200$' "$out" | head -c 300 | tr '\n' ' '))"
                fi
            done
        done
    done
    stop_proxies socks
}

# RSA-2048 and TLS 1.2 only on the origin (the second nginx server): keep-alive and a new
# connection per request at c=16, the same oha runs as scenarios 1 and 2. What each
# target negotiated with that origin is checked once and goes into RESULTS.md.
scenario_rsa12() {
    say "== 9. RSA-2048 origin, TLS 1.2 only: keep-alive and a new connection per request, c=16, $RUNS x ${DURATION}s"
    start_proxies rsa12
    local run kind target out seen all=""
    for target in $(targets); do
        seen="$(probe "$(proxy_url "$target")" "$(client_ca "$target")" "$NGINX_RSA_PORT")" || seen="no answer"
        all+="${all:+; }$target: $seen"
        [[ $seen == "TLSv1.2 ECDHE-RSA-"* ]] ||
            note "$target: the RSA-2048 TLS 1.2 origin saw \"$seen\", not TLS 1.2 with an ECDHE-RSA cipher"
    done
    TLS_SEEN+="; RSA-2048 TLS 1.2 origin (scenario rsa12): $all"
    say "   RSA-2048 TLS 1.2 origin saw: $all"
    for run in $(seq "$RUNS"); do
        for kind in ka nc; do
            for target in $(targets); do
                out="$RUN/oha.rsa12.$kind.$target.$run.json"
                local args=(-z "${DURATION}s" -c 16)
                [[ $kind == nc ]] && args+=(--disable-keepalive)
                if OHA_PORT=$NGINX_RSA_PORT oha_run "$target" "$out" "${args[@]}"; then
                    oha_record "rsa12_${kind}_c16" "$target" "$run" "$out" rps cpu mcpu
                    say "   run $run $kind c=16 $target: $(python3 "$BENCH/oha_summary.py" --human "$out")"
                else
                    failed "$target" "RSA-2048 TLS 1.2 $kind c=16 run $run ($(oha_why "$out"))"
                fi
            done
        done
    done
    stop_proxies rsa12
}

# A new connection per request against an origin that resumes sessions (a session
# cache and tickets, as most servers have): each client resumes with whatever it keeps
# (oha's rustls, Periscope's per-server cache, mitmproxy's), on both legs of a proxy.
scenario_resume() {
    say "== 11. a new connection per request to an origin that resumes sessions, c=$NEWCONN_CONCURRENCY, $RUNS x ${DURATION}s"
    start_proxies resume
    newconn_runs resume "resume_nc_c$NEWCONN_CONCURRENCY" "$NGINX_RESUME_PORT" "resumption new-connection"
    stop_proxies resume
}

h2_port() { # where h2load and the probe connect for TARGET: the origin, or the proxy's reverse listener
    case $1 in
        direct) echo "$NGINX_H2_PORT" ;;
        periscope) echo "$PERISCOPE_H2_PORT" ;;
        mitmdump) echo "$MITM_H2_PORT" ;;
    esac
}

# h2_probe TARGET: what both legs spoke, "client HTTP/V, origin saw PROTOCOL TLS CIPHER":
# curl --http2 (verifying the certificate) asks for /proto, where nginx answers with its
# $server_protocol; curl reports the version of its own leg.
h2_probe() {
    local out
    out="$(curl -sS --fail --max-time 5 --http2 --cacert "$(client_ca "$1")" \
        -w 'client HTTP/%{http_version}' "https://localhost:$(h2_port "$1")/proto" 2>&1)" || {
        echo "no answer: $(echo "$out" | head -c 200 | tr '\n' ' ')"
        return 0
    }
    echo "${out##*$'\n'}, origin saw ${out%%$'\n'*}"
}

# h2load_run TARGET OUT: one h2load run against /1k, H2_WARMUP seconds of warm-up (every
# connection open, streams in flight: what is measured is the steady state, not the ramp;
# at 1,600 streams in flight mitmdump takes seconds to answer the first ones), then
# DURATION seconds measured. h2load prints a line when the measured phase starts and one
# when it ends; the proxy's and the machine's CPU time between the two go to OUT.cpu and
# OUT.mcpu, as oha_run's do. 0 when it produced a result.
h2load_run() {
    local target=$1 out=$2 pid cpu0="" mcpu0="" h2pid
    pid="$(proxy_pid "$target")"
    rm -f "$out.cpu" "$out.mcpu"
    timeout -k 5 $((H2_WARMUP + DURATION + 60)) "$H2LOAD" -c 16 -m 100 \
        --warm-up-time "$H2_WARMUP" -D "$DURATION" \
        "https://localhost:$(h2_port "$target")/1k" >"$out" 2>"$out.err" &
    h2pid=$!
    while kill -0 "$h2pid" 2>/dev/null; do
        if [[ -z $mcpu0 ]]; then
            if grep -qs '^Main benchmark duration is started' "$out"; then
                [[ -n $pid ]] && cpu0="$(proc_cpu "$pid")"
                mcpu0="$(machine_cpu)"
                # No polling while most of the measured phase runs.
                sleep "$((DURATION - 1)).5"
            fi
        elif grep -q '^Main benchmark duration is over' "$out"; then
            break
        fi
        sleep 0.02
    done
    # Also when h2load exited between two looks: then a little late.
    if [[ -n $mcpu0 ]]; then
        python3 -c "print($(machine_cpu) - $mcpu0)" >"$out.mcpu"
        [[ -n $pid ]] && python3 -c "print($(proc_cpu "$pid") - $cpu0)" >"$out.cpu"
    fi
    wait "$h2pid" || true
    [[ -s $out.mcpu ]] && python3 "$BENCH/h2load_summary.py" "$out" >/dev/null 2>&1
}

# HTTP/2: h2load with 100 concurrent streams on each of 16 TLS connections (ALPN h2),
# GET /1k. h2load cannot use an HTTP proxy, so both proxies run a reverse-proxy listener
# in front of the HTTP/2 origin. Only runs that negotiated h2 count.
scenario_h2() {
    say "== 10. HTTP/2, 1 KiB responses, 100 streams on each of 16 connections (h2load), $RUNS x ${DURATION}s after ${H2_WARMUP}s of warm-up"
    start_proxies h2
    local run target out seen all="" line rps proto ok non2xx failures errored why
    for target in $(targets); do
        seen="$(h2_probe "$target")"
        all+="${all:+; }$target: $seen"
        [[ $seen == "client HTTP/2, origin saw HTTP/2.0 "* ]] ||
            note "$target: HTTP/2 is not spoken on both legs (curl --http2: $seen)"
    done
    TLS_SEEN+="; HTTP/2 origin (scenario h2, curl --http2): $all"
    say "   HTTP/2 legs: $all"
    for run in $(seq "$RUNS"); do
        for target in $(targets); do
            out="$RUN/h2load.$target.$run.txt"
            if h2load_run "$target" "$out"; then
                line="$(python3 "$BENCH/h2load_summary.py" "$out")"
                read -r rps proto ok non2xx failures errored _ <<<"$line"
                if [[ $proto != h2 ]]; then
                    failed "$target" "HTTP/2 run $run (h2load negotiated $proto, not h2)"
                    continue
                fi
                record h2_rps "$target" "$run" "$rps"
                if [[ -s $out.cpu ]]; then
                    record h2_cpu "$target" "$run" "$(python3 -c "print($(cat "$out.cpu") * 1e6 / $ok)")"
                fi
                if [[ -s $out.mcpu ]]; then
                    record h2_mcpu "$target" "$run" "$(python3 -c "print($(cat "$out.mcpu") * 1e6 / $ok)")"
                fi
                if [[ $non2xx != 0 || $failures != 0 || $errored != 0 ]]; then
                    note "$target h2 run $run: $ok 2xx, $non2xx non-2xx, $failures failed, $errored errored"
                fi
                say "   run $run $target: $(python3 "$BENCH/h2load_summary.py" --human "$out")"
            else
                # No 2xx in the measured phase (the summary says what there was), or no result.
                why="$(python3 "$BENCH/h2load_summary.py" --human "$out" 2>/dev/null)" || true
                [[ -n $why ]] || why="h2load: $(grep -hiE -m3 'error|fail|refused' "$out" "$out.err" | head -c 300 | tr '\n' ' ')"
                failed "$target" "HTTP/2 run $run ($why)"
            fi
        done
    done
    stop_proxies h2
}

# Hooks that do not apply must cost nothing: Periscope alone, with 20 rules that match
# nothing, and with an intercept filter that matches nothing (issue: rules within 10%,
# no intercept costs nothing); and what saving the flows costs (-w). Keep-alive c=16,
# Periscope only, the variants taking turns within each run so that drift on shared
# cores hits them alike.
scenario_hooks() {
    say "== 12. keep-alive c=16 with hooks that match nothing, $RUNS x ${DURATION}s"
    local run variant out
    for run in $(seq "$RUNS"); do
        for variant in hooks-none hooks-rules hooks-intercept hooks-save; do
            rm -f "$RUN"/hooks-save.periscope*
            start_periscope "$variant"
            out="$RUN/oha.$variant.$run.json"
            if oha_run periscope "$out" -z "${DURATION}s" -c 16; then
                oha_record "${variant//-/_}" periscope "$run" "$out" rps cpu
                say "   run $run $variant: $(python3 "$BENCH/oha_summary.py" --human "$out")"
            else
                failed periscope "$variant run $run ($(oha_why "$out"))"
            fi
            stop_pid "$PERISCOPE_PID"; PERISCOPE_PID=""
        done
    done
}

scenario_idle() {
    say "== 4. $IDLE_COUNT idle keep-alive connections held open through the proxy"
    start_proxies idle
    local target out
    for target in $(targets); do
        [[ $target == direct ]] && continue
        out="$RUN/idle.$target.json"
        local proxy
        proxy="$(proxy_url "$target")"
        if timeout -k 5 300 python3 "$BENCH/idle.py" --proxy "${proxy#http://}" --port "$NGINX_PORT" \
            --cafile "$(client_ca "$target")" --count "$IDLE_COUNT" \
            --rss-pid "$(proxy_pid "$target")" >"$out" 2>"$out.err" && [[ -s $out ]]; then
            local line opened reused before idle errs
            line="$(python3 -c "
import json; d=json.load(open('$out'))
print(d['opened'], d['reused_ok'], d['rss_before_kib']/1024, d['rss_idle_kib']/1024, json.dumps(d['errors'])[:300])")"
            read -r opened reused before idle errs <<<"$line"
            record idle_base_rss "$target" 1 "$before"
            record idle_rss "$target" 1 "$idle"
            record idle_opened "$target" 1 "$((opened < reused ? opened : reused))"
            if [[ $opened -ne $IDLE_COUNT || $reused -ne $opened ]]; then
                note "$target idle: opened $opened of $IDLE_COUNT, $reused reused after idling; errors: $errs"
                [[ $target == mitmdump ]] || MISSING_CORE+=("$target: idle connections failed")
            fi
            say "   $target: RSS $(printf '%.1f' "$before") MiB before, $(printf '%.1f' "$idle") MiB with $opened open; $reused reused"
        else
            failed "$target" "idle connections ($(head -c 300 "$out.err"))"
        fi
    done
    stop_proxies idle
}

scenario_session() {
    local quarter=$((SESSION_FLOWS / 4))
    say "== 5. long session: $SESSION_FLOWS flows (keep-alive, c=$SESSION_CONCURRENCY), RSS after each quarter"
    start_proxies session
    local target q out total
    for target in $(targets); do
        [[ $target == direct ]] && continue
        total=0
        for q in 1 2 3 4; do
            out="$RUN/oha.session.$target.$q.json"
            local n=$quarter
            [[ $target == mitmdump ]] && n=$((MITM_SESSION_FLOWS / 4))
            if DURATION=300 oha_run "$target" "$out" -n "$n" -c "$SESSION_CONCURRENCY"; then
                local line flows errors non2xx
                line="$(python3 "$BENCH/oha_summary.py" "$out")"
                read -r _ _ _ flows errors non2xx <<<"$line"
                total=$((total + flows))
                [[ $errors != 0 || $non2xx != 0 ]] &&
                    note "$target session quarter $q: $errors errors, $non2xx non-2xx; $(python3 "$BENCH/oha_summary.py" --errors "$out")"
                sleep 0.5
                local rss
                rss="$(proc_rss_mib "$(proxy_pid "$target")")"
                [[ -n $rss ]] && record "sess_rss_$q" "$target" 1 "$rss"
                say "   $target: $total flows, RSS ${rss:-?} MiB"
            else
                failed "$target" "session quarter $q ($(oha_why "$out"))"
                break
            fi
        done
        record sess_flows "$target" 1 "$total"
        [[ $target == mitmdump && $MITM_SESSION_FLOWS -ne $SESSION_FLOWS ]] &&
            note "mitmdump long session: $total flows, not $SESSION_FLOWS (it is too slow for the full session within the time budget)"
    done
    stop_proxies session
}

# fill_session_bin: the session generator (crates/tui/examples/fill_session.rs), built
# with the profile of the Periscope binary under test; BENCH_FILL_SESSION names a built one.
fill_session_bin() {
    if [[ -n ${BENCH_FILL_SESSION:-} ]]; then
        echo "$BENCH_FILL_SESSION"
        return 0
    fi
    # The generator is timed too: release, unless Periscope itself is a debug build.
    local profile=release flags=(--quiet --release)
    if [[ $PERISCOPE_BIN == */debug/* ]]; then
        profile=debug
        flags=(--quiet)
    fi
    (cd "$REPO" && cargo build "${flags[@]}" -p periscope-tui --example fill_session) >&2 || return 1
    echo "${CARGO_TARGET_DIR:-$REPO/target}/$profile/examples/fill_session"
}

# measured CMD...: runs CMD with its output discarded; prints "SECONDS PEAK_RSS_KIB EXIT".
measured() {
    python3 -c '
import resource, subprocess, sys, time
start = time.monotonic()
rc = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(time.monotonic() - start, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc)' "$@"
}

scenario_store() {
    say "== 6. session store: $STORE_FLOWS flows in a session file, opened and filtered with periscope dump -r"
    local gen file="$RUN/store.periscope" secs rss rc run key filter
    if ! gen="$(fill_session_bin)"; then
        failed periscope "building the session generator (cargo build -p periscope-tui --example fill_session)"
        return 0
    fi
    rm -f "$file" "$file-wal" "$file-shm"
    read -r secs rss rc <<<"$(measured "$gen" "$file" "$STORE_FLOWS")"
    if [[ $rc -ne 0 ]]; then
        failed periscope "filling the session with $STORE_FLOWS flows (exit $rc)"
        return 0
    fi
    record store_flows periscope 1 "$STORE_FLOWS"
    record store_fill_s periscope 1 "$secs"
    record store_file_mib periscope 1 "$(python3 -c "import os; print(os.path.getsize('$file') / 1048576)")"
    say "   wrote $STORE_FLOWS flows in $(printf '%.1f' "$secs") s"
    for run in $(seq "$STORE_RUNS"); do
        for key in open filter_c filter_b; do
            case $key in
                open) filter='~d nothing' ;;   # matches nothing: the cost of reading the index
                filter_c) filter='~c 404' ;;   # the index columns, then 5% of the flows printed
                filter_b) filter='~b foo' ;;   # every body
            esac
            read -r secs rss rc <<<"$(measured "$PERISCOPE_BIN" dump -r "$file" "$filter")"
            if [[ $rc -ne 0 ]]; then
                failed periscope "dump -r '$filter' run $run (exit $rc)"
                continue
            fi
            record "store_${key}_s" periscope "$run" "$secs"
            record "store_${key}_rss" periscope "$run" "$(python3 -c "print($rss / 1024)")"
            say "   run $run dump -r '$filter': $(printf '%.2f' "$secs") s, peak RSS $((rss / 1024)) MiB"
        done
    done
    rm -f "$file" "$file-wal" "$file-shm"
}

# The web UI on a big session, in Chromium driven by Playwright (the test suite's
# tests/web/ui_checks.py, scenario "big"): the session from the store scenario's
# generator, opened with `periscope web -r`; figures of each run, none asserted.
scenario_web() {
    say "== 7. web UI: a $WEB_FLOWS-flow session in Chromium (first rows, scrolling, a search, JS heap)"
    local python="${PERISCOPE_TEST_PYTHON:-$REPO/.venv/bin/python}"
    local chromium="${PERISCOPE_TEST_CHROMIUM:-/usr/bin/chromium}"
    if [[ ! -x $python ]] || ! "$python" -c 'import playwright' 2>/dev/null || [[ ! -x $chromium ]]; then
        failed periscope "web UI: needs Playwright in $python and $chromium (scripts/test.sh installs both)"
        return 0
    fi
    local gen file="$RUN/web.periscope" log="$RUN/periscope.web.log" run
    if ! gen="$(fill_session_bin)"; then
        failed periscope "building the session generator (cargo build -p periscope-tui --example fill_session)"
        return 0
    fi
    rm -f "$file" "$file-wal" "$file-shm"
    "$gen" "$file" "$WEB_FLOWS" >/dev/null || { failed periscope "filling the web session"; return 0; }
    for run in $(seq "$WEB_RUNS"); do
        "$PERISCOPE_BIN" web -r "$file" -p 0 --web-port 0 --confdir "$RUN/periscope-conf" \
            >/dev/null 2>"$log" &
        local pid=$! url="" port="" waited=0
        while [[ -z $url || -z $port ]] && ((waited < 300)); do
            url="$(sed -n 's/.*web UI at \(http[^ ]*\).*/\1/p' "$log" | head -1)"
            port="$(sed -n 's/.*proxy listening at [^ ]*:\([0-9]*\) .*/\1/p' "$log" | head -1)"
            sleep 0.1
            waited=$((waited + 1))
        done
        if [[ -z $url || -z $port ]]; then
            failed periscope "web UI run $run: no URL printed ($(tail -1 "$log"))"
            stop_pid "$pid"
            continue
        fi
        local out figures
        out="$(PERISCOPE_TEST_CHROMIUM="$chromium" "$python" "$REPO/tests/web/ui_checks.py" big \
            --url "$url" --proxy "$port" --shots "$RUN" --flows "$WEB_FLOWS" \
            --search '~c 500' --search-count '^[0-9,]+ flows' 2>&1)" || true
        stop_pid "$pid"
        figures="$(sed -n 's/^figures: //p' <<<"$out")"
        if [[ -z $figures ]]; then
            failed periscope "web UI run $run: $(tail -3 <<<"$out" | tr '\n' ' ')"
            continue
        fi
        local key value
        while read -r key value; do
            record "$key" periscope "$run" "$value"
        done < <(python3 -c '
import json, sys
f = json.loads(sys.argv[1])
print("web_flows", f["flows"])
print("web_first_paint_s", f["first_paint_s"])
print("web_scroll_s", max(f["scroll_jump_s"]))
print("web_search_s", f["search_s"])
print("web_rows", f["max_rows_drawn"])
if f.get("js_heap_mb") is not None: print("web_heap_mb", f["js_heap_mb"])
if f.get("dom_nodes") is not None: print("web_nodes", f["dom_nodes"])
if f.get("chromium_pss_mb") is not None: print("web_browser_mb", f["chromium_pss_mb"])' "$figures")
        say "   run $run: $figures"
    done
    rm -f "$file" "$file-wal" "$file-shm"
}

# ---------------------------------------------------------------------------
# Main: one function, so that bash has read all of it before it starts (editing this
# file during a run cannot change what the run does).
# ---------------------------------------------------------------------------
main() {
    # ---------------------------------------------------------------------------
    # Setup
    # ---------------------------------------------------------------------------
    say "mode: $MODE; scenarios: ${SCENARIOS[*]}"
    ensure_apt nginx curl openssl python3 ca-certificates nghttp2-client
    NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
    [[ -x $NGINX ]] || die "nginx not found after install"
    H2LOAD="$(command -v h2load || echo /usr/bin/h2load)"
    [[ -x $H2LOAD ]] || die "h2load not found after installing nghttp2-client"
    mkdir -p "$WORK"
    start_oha_install
    start_mitmproxy_install

    if [[ -n ${PERISCOPE_BIN:-} ]]; then
        [[ -x $PERISCOPE_BIN ]] || die "PERISCOPE_BIN=$PERISCOPE_BIN is not executable"
    else
        say "building Periscope (cargo build --release)"
        (cd "$REPO" && cargo build --release --quiet --bin periscope) >&2 || die "cargo build --release failed"
        PERISCOPE_BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/periscope"
    fi

    finish_oha_install
    finish_mitmproxy_install
    if [[ $MITM_OK -ne 1 ]]; then
        if [[ $MODE == smoke ]]; then
            loud "MITMDUMP SKIPPED: $MITM_SKIP_REASON — its column will be empty"
        else
            die "mitmproxy unavailable: $MITM_SKIP_REASON"
        fi
    fi

    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

    rm -rf "$RUN"
    mkdir -p "$RUN/pki" "$RUN/www" "$RUN/nginx" "$RUN/periscope-conf" "$RUN/mitmproxy-conf"
    : >"$RUN/results.tsv"
    : >"$RUN/notes.txt"
    [[ $MITM_OK -eq 1 ]] || note "MITMDUMP SKIPPED: $MITM_SKIP_REASON"
    # Upload sink on tmpfs when there is one: nginx writes the body to a file (DAV PUT).
    if [[ -d /dev/shm && -w /dev/shm ]]; then SHM="$(mktemp -d /dev/shm/periscope-bench.XXXXXX)"; else SHM="$(mktemp -d "$RUN/sink.XXXXXX")"; fi
    mkdir -p "$SHM/upload" "$SHM/tmp"
    chmod 755 "$SHM" "$SHM/upload" "$SHM/tmp"

    say "certificates (ECDSA P-256 CA; localhost leaves: ECDSA P-256, and RSA-2048 for the rsa12 origin)"
    (
        cd "$RUN/pki"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key \
            -out ca.pem -days 30 -subj "/CN=Periscope bench origin CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout origin.key \
            -out origin.csr -subj "/CN=localhost"
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' >origin.ext
        openssl x509 -req -in origin.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out origin.pem \
            -days 30 -extfile origin.ext
        # The rsa12 origin's leaf: RSA-2048 from the same CA (keyEncipherment as RSA leaves have it).
        openssl req -newkey rsa:2048 -nodes -keyout origin-rsa.key -out origin-rsa.csr -subj "/CN=localhost"
        sed 's/digitalSignature/digitalSignature,keyEncipherment/' origin.ext >origin-rsa.ext
        openssl x509 -req -in origin-rsa.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out origin-rsa.pem \
            -days 30 -extfile origin-rsa.ext
    ) >"$RUN/pki/openssl.log" 2>&1 || { cat "$RUN/pki/openssl.log" >&2; die "openssl failed"; }

    head -c 1024 /dev/urandom >"$RUN/www/1k"
    truncate -s "${BIG_MIB}M" "$RUN/www/big" # sparse: reads cost no disk

    # nginx: HTTP/1.1 (the main origin), RSA-2048 with TLS 1.2 only (scenario rsa12), HTTP/2
    # over TLS (scenario h2), session cache and tickets on (scenario resume); then each
    # proxy's regular, reverse (h2) and SOCKS5 listeners.
    read -r NGINX_PORT NGINX_RSA_PORT NGINX_H2_PORT NGINX_RESUME_PORT \
        PERISCOPE_PORT PERISCOPE_H2_PORT PERISCOPE_SOCKS_PORT \
        MITM_PORT MITM_H2_PORT MITM_SOCKS_PORT < <(listen_ports 10)
    [[ -n $MITM_SOCKS_PORT ]] || die "could not pick 10 free loopback ports"
    PERISCOPE_CA="$RUN/periscope-conf/periscope-ca-cert.pem"
    MITM_CA="$RUN/mitmproxy-conf/mitmproxy-ca-cert.pem"
    PROTOCOLS="TLSv1.2 TLSv1.3"
    [[ $TLS12 -eq 1 ]] && PROTOCOLS="TLSv1.2"
    USER_LINE=""
    [[ $(id -u) -eq 0 ]] && USER_LINE="user root root;"

    cat >"$RUN/nginx/nginx.conf" <<EOF
    $USER_LINE
    worker_processes auto;
    worker_rlimit_nofile 65536;
    daemon off;
    pid $RUN/nginx/nginx.pid;
    error_log $RUN/nginx/error.log warn;
    events { worker_connections 16384; }
    http {
        access_log off;
        default_type application/octet-stream;
        keepalive_timeout 300s;
        keepalive_requests 100000000;
        client_body_temp_path $SHM/tmp;
        proxy_temp_path $RUN/nginx/proxy_temp;
        fastcgi_temp_path $RUN/nginx/fastcgi_temp;
        uwsgi_temp_path $RUN/nginx/uwsgi_temp;
        scgi_temp_path $RUN/nginx/scgi_temp;
        server {
            listen 127.0.0.1:$NGINX_PORT ssl;
            server_name localhost;
            ssl_certificate $RUN/pki/origin.pem;
            ssl_certificate_key $RUN/pki/origin.key;
            ssl_protocols $PROTOCOLS;
            # Every new connection is a full handshake (no resumption) on the origin side.
            ssl_session_cache off;
            ssl_session_tickets off;
            root $RUN/www;
            location = /1k { }
            location = /big { }
            location = /proto { default_type text/plain; return 200 "\$ssl_protocol \$ssl_cipher\n"; }
            # Upload sink: DAV PUT answers only once the whole body is read (into tmpfs).
            location /upload/ {
                root $SHM;
                dav_methods PUT;
                client_max_body_size 0;
                client_body_buffer_size 1m;
            }
        }
        # Scenario rsa12: the same /1k behind an RSA-2048 certificate, TLS 1.2 only.
        server {
            listen 127.0.0.1:$NGINX_RSA_PORT ssl;
            server_name localhost;
            ssl_certificate $RUN/pki/origin-rsa.pem;
            ssl_certificate_key $RUN/pki/origin-rsa.key;
            ssl_protocols TLSv1.2;
            ssl_session_cache off;
            ssl_session_tickets off;
            root $RUN/www;
            location = /1k { }
            location = /proto { default_type text/plain; return 200 "\$ssl_protocol \$ssl_cipher\n"; }
        }
        # Scenario resume: the same /1k, resumption on (session cache and tickets).
        server {
            listen 127.0.0.1:$NGINX_RESUME_PORT ssl;
            server_name localhost;
            ssl_certificate $RUN/pki/origin.pem;
            ssl_certificate_key $RUN/pki/origin.key;
            ssl_protocols $PROTOCOLS;
            ssl_session_cache shared:resume:10m;
            ssl_session_tickets on;
            root $RUN/www;
            location = /1k { }
        }
        # Scenario h2: the same /1k over HTTP/2 (ALPN h2, HTTP/1.1 still offered).
        server {
            listen 127.0.0.1:$NGINX_H2_PORT ssl http2;
            server_name localhost;
            ssl_certificate $RUN/pki/origin.pem;
            ssl_certificate_key $RUN/pki/origin.key;
            ssl_protocols $PROTOCOLS;
            ssl_session_cache off;
            ssl_session_tickets off;
            root $RUN/www;
            location = /1k { }
            location = /proto { default_type text/plain; return 200 "\$server_protocol \$ssl_protocol \$ssl_cipher\n"; }
        }
    }
EOF
    "$NGINX" -t -q -p "$RUN/nginx" -e "$RUN/nginx/error.log" -c "$RUN/nginx/nginx.conf" \
        || { cat "$RUN/nginx/error.log" >&2; die "nginx rejects its config"; }
    "$NGINX" -p "$RUN/nginx" -e "$RUN/nginx/error.log" -c "$RUN/nginx/nginx.conf" &
    NGINX_PID=$!
    for _ in $(seq 100); do
        probe "" "$RUN/pki/ca.pem" >/dev/null && break
        kill -0 "$NGINX_PID" 2>/dev/null || { cat "$RUN/nginx/error.log" >&2; die "nginx exited"; }
        sleep 0.1
    done
    probe "" "$RUN/pki/ca.pem" >/dev/null || die "nginx does not answer on port $NGINX_PORT"
    say "origin: nginx on https://localhost:$NGINX_PORT ($(probe "" "$RUN/pki/ca.pem"))"

    # Which upstream TLS each proxy negotiates (what nginx saw), for the record.
    start_proxies probe
    TLS_SEEN="direct curl: $(probe "" "$RUN/pki/ca.pem"); via periscope: $(probe "http://127.0.0.1:$PERISCOPE_PORT" "$PERISCOPE_CA")"
    [[ $MITM_OK -eq 1 ]] && TLS_SEEN+="; via mitmdump: $(probe "http://127.0.0.1:$MITM_PORT" "$MITM_CA")"
    stop_proxies probe
    say "origin-side TLS: $TLS_SEEN"

    # ---------------------------------------------------------------------------
    # Run
    # ---------------------------------------------------------------------------
    # The 1-minute load average still counts the build and start-up above: let it
    # settle (90 s at most) so that the report's "busy machine" check sees other work.
    if [[ $MODE == full ]]; then
        settle_started=$SECONDS
        while ((SECONDS - settle_started < 90)) \
            && awk -v cores="$(nproc)" '{ exit !($1 > 0.5 * cores) }' /proc/loadavg; do
            sleep 5
        done
        say "load average before the first scenario: $(cut -d' ' -f1 /proc/loadavg) (waited $((SECONDS - settle_started)) s for it to settle)"
    fi
    LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
    for s in "${SCENARIOS[@]}"; do
        "scenario_$s"
    done

    # ---------------------------------------------------------------------------
    # Report
    # ---------------------------------------------------------------------------
    periscope_version="$(cd "$REPO" && git describe --always --tags 2>/dev/null || echo unknown)"
    # The RESULTS.md of an earlier run, not yet committed, does not make the build dirty.
    if [[ -n "$(cd "$REPO" && git status --porcelain --untracked-files=no -- . ':!bench/RESULTS.md' 2>/dev/null)" ]]; then
        periscope_version+="-dirty"
    fi
    mitm_version="skipped ($MITM_SKIP_REASON)"
    python_version=""
    if [[ $MITM_OK -eq 1 ]]; then
        mitm_version="$("$VENV/bin/mitmdump" --version 2>/dev/null | sed -n 's/^Mitmproxy: //p') (its own OpenSSL: $("$VENV/bin/mitmdump" --version 2>/dev/null | sed -n 's/^OpenSSL: //p'))"
        python_version="$("$VENV/bin/python" --version 2>&1)"
    fi
    BENCH_META_NGINX="$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')"
    BENCH_META_OPENSSL="$(openssl version)"
    BENCH_META_PERISCOPE_OPENSSL="$("$PERISCOPE_BIN" --version | sed -n '2p')"
    export BENCH_META_PERISCOPE_OPENSSL
    BENCH_META_CURL="$(curl --version | head -1)"
    BENCH_META_OHA="$("$OHA" --version) (rustls)"
    export BENCH_META_NGINX BENCH_META_OPENSSL BENCH_META_CURL BENCH_META_OHA
    export BENCH_META_MODE="$MODE" BENCH_META_ONLY="$ONLY" BENCH_META_ARGS="$ARGS" \
        BENCH_META_ELAPSED="$((SECONDS - START))" BENCH_META_LOAD="$LOAD_BEFORE" \
        BENCH_META_PERISCOPE="$periscope_version" BENCH_META_PERISCOPE_BIN="$PERISCOPE_BIN" \
        BENCH_META_MITM="$mitm_version" BENCH_META_PYTHON="$python_version" \
        BENCH_META_TLS="$TLS_SEEN" BENCH_META_PROTOCOLS="$PROTOCOLS" \
        BENCH_META_RUNS="$RUNS" BENCH_META_DURATION="$DURATION" BENCH_META_BIG="$BIG_MIB" \
        BENCH_META_TRANSFER_RUNS="$TRANSFER_RUNS" BENCH_META_MITM_CAP="$MITM_TRANSFER_CAP" \
        BENCH_META_IDLE="$IDLE_COUNT" BENCH_META_FLOWS="$SESSION_FLOWS" \
        BENCH_META_MITM_FLOWS="$MITM_SESSION_FLOWS" BENCH_META_STORE_FLOWS="$STORE_FLOWS" \
        BENCH_META_STORE_RUNS="$STORE_RUNS"
    python3 "$BENCH/meta.py" >"$RUN/meta.json"
    python3 "$BENCH/report.py" "$RUN" "$OUT_MD"
    cp "$OUT_MD" "$RUN/" 2>/dev/null || true
    [[ $MITM_OK -eq 1 ]] || loud "MITMDUMP SKIPPED: $MITM_SKIP_REASON — its column is empty"
    say "raw measurements and logs: $RUN"
    say "done in $((SECONDS - START)) s"

    if [[ ${#MISSING_CORE[@]} -gt 0 ]]; then
        say "FAILED: measurements of direct or Periscope that gave no result:"
        printf 'bench:   %s\n' "${MISSING_CORE[@]}" >&2
        exit 3
    fi
}

main
