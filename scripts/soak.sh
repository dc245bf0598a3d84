#!/usr/bin/env bash
# Periscope's soak test: 1,000 concurrent keep-alive connections through the proxy
# (release build) against a local nginx — plain HTTP, then HTTPS through CONNECT (TLS
# on both legs), and the same two rounds again — printing errors, file descriptors and
# RSS before, during and after each phase. Fails when a request failed or descriptors
# and memory do not come back.
#
#   scripts/soak.sh                # 60 s per phase (about 5 minutes in all)
#   scripts/soak.sh --quick        # 10 s per phase
#   scripts/soak.sh --duration 30  # seconds per phase
#
# Passes when: every phase had zero errors and non-2xx answers; all the connections
# were open at once (the proxy held >= 1,000 client descriptors); after each phase the
# descriptor count came back to the baseline (+ SOAK_FD_SLACK, default 8); the proxy
# logged nothing but its start-up lines; the session store caught up with every flow
# within 180 s of each round; and memory did not grow from round to round: RSS after
# the allocators purged freed memory (jemalloc's arenas and glibc's malloc_trim(0),
# through gdb, so that what they merely keep cached does not count) after round 2
# within SOAK_RSS_SLACK_MIB (default 32) of that after round 1 — plain RSS where gdb
# cannot attach. RSS against the start-up baseline is printed too.
#
# Installs what it needs when missing: nginx, curl (apt); oha (cargo install, the
# version scripts/bench.sh pins). Builds Periscope with `cargo build --release` unless
# PERISCOPE_BIN names a binary. Every address is on 127.0.0.1. Environment:
# SOAK_CONNECTIONS (default 1000), SOAK_DURATION, PERISCOPE_BIN, SOAK_WORK (work dir,
# default bench/work/soak).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${SOAK_WORK:-$REPO/bench/work/soak}"
DURATION=${SOAK_DURATION:-60}
CONNECTIONS=${SOAK_CONNECTIONS:-1000}
FD_SLACK=${SOAK_FD_SLACK:-8}
RSS_SLACK_MIB=${SOAK_RSS_SLACK_MIB:-32}
OHA_VERSION=${BENCH_OHA_VERSION:-1.16.0}

usage() { sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) DURATION=10 ;;
        --duration) DURATION="${2:?--duration needs seconds}"; shift ;;
        --duration=*) DURATION="${1#--duration=}" ;;
        -h | --help) usage; exit 0 ;;
        *) echo "soak: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ $DURATION =~ ^[0-9]+$ && $DURATION -gt 0 ]] || { echo "soak: --duration takes seconds" >&2; exit 2; }

say() { echo "soak: $*" >&2; }
die() { echo "soak: ERROR: $*" >&2; exit 1; }
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY

SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO="sudo"

# ---------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------
ensure_apt() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    say "installing with apt: ${missing[*]}"
    local policy=/usr/sbin/policy-rc.d added=0 rc=0
    if [[ ! -e $policy ]]; then # package scripts must not start a system nginx
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
    for c in "${BENCH_OHA:-}" "${BENCH_TOOLS_DIR:-$HOME/.cargo}/bin/oha" "$REPO/bench/.tools/bin/oha" \
        "$(command -v oha 2>/dev/null || true)"; do
        [[ -n $c && -x $c ]] || continue
        [[ "$("$c" --version 2>/dev/null)" == "oha $OHA_VERSION" ]] && { echo "$c"; return 0; }
    done
    return 1
}

ensure_apt nginx curl python3
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
[[ -x $NGINX ]] || die "nginx not found after install"
if ! OHA="$(find_oha)"; then
    say "installing oha $OHA_VERSION with cargo (minutes, once)"
    cargo install --locked --root "${BENCH_TOOLS_DIR:-$HOME/.cargo}" oha --version "$OHA_VERSION" >&2
    OHA="$(find_oha)" || die "oha $OHA_VERSION not found after cargo install"
fi
if [[ -n ${PERISCOPE_BIN:-} ]]; then
    BIN="$PERISCOPE_BIN"
else
    say "building periscope (release)"
    (cd "$REPO" && cargo build --release --quiet --bin periscope) || die "cargo build --release failed"
    BIN="$REPO/target/release/periscope"
fi
[[ -x $BIN ]] || die "no periscope binary at $BIN"

# oha holds one descriptor per connection, nginx two processes' worth.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[[ $(ulimit -n) -ge $((CONNECTIONS + 100)) ]] \
    || die "the open file limit ($(ulimit -n)) is too low for $CONNECTIONS connections"

# ---------------------------------------------------------------------------
# Origin and proxy
# ---------------------------------------------------------------------------
# Listener ports come from below the ephemeral range (scripts/lib/listen_ports.py says why).
listen_ports() { python3 "$REPO/scripts/lib/listen_ports.py" "$1"; }

NGINX_PID=""
PROXY_PID=""
SESSION_DIR=""
cleanup() {
    local pid
    for pid in $PROXY_PID $NGINX_PID; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in $PROXY_PID $NGINX_PID; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    # A terminated proxy leaves its temporary session (gigabytes after a soak) behind.
    if [[ -n $SESSION_DIR && -d $SESSION_DIR && $SESSION_DIR == */periscope-session-* ]]; then
        rm -rf "$SESSION_DIR"
    fi
}
trap cleanup EXIT

rm -rf "$WORK"
mkdir -p "$WORK/pki" "$WORK/www" "$WORK/nginx" "$WORK/conf" "$WORK/tmp"
(
    cd "$WORK/pki"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key \
        -out ca.pem -days 2 -subj "/CN=Periscope soak origin CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout origin.key \
        -out origin.csr -subj "/CN=localhost"
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' >origin.ext
    openssl x509 -req -in origin.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out origin.pem \
        -days 2 -extfile origin.ext
) >"$WORK/pki/openssl.log" 2>&1 || { cat "$WORK/pki/openssl.log" >&2; die "openssl failed"; }
head -c 1024 /dev/urandom >"$WORK/www/1k"

read -r HTTP_PORT HTTPS_PORT PROXY_PORT < <(listen_ports 3)
[[ -n $PROXY_PORT ]] || die "could not pick 3 free loopback ports"
USER_LINE=""
[[ $(id -u) -eq 0 ]] && USER_LINE="user root root;"
cat >"$WORK/nginx/nginx.conf" <<EOF
$USER_LINE
worker_processes auto;
worker_rlimit_nofile 65536;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    default_type application/octet-stream;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    client_body_temp_path $WORK/tmp;
    proxy_temp_path $WORK/nginx/proxy_temp;
    fastcgi_temp_path $WORK/nginx/fastcgi_temp;
    uwsgi_temp_path $WORK/nginx/uwsgi_temp;
    scgi_temp_path $WORK/nginx/scgi_temp;
    server {
        listen 127.0.0.1:$HTTP_PORT;
        listen 127.0.0.1:$HTTPS_PORT ssl;
        server_name localhost;
        ssl_certificate $WORK/pki/origin.pem;
        ssl_certificate_key $WORK/pki/origin.key;
        root $WORK/www;
        location = /1k { }
    }
}
EOF
"$NGINX" -t -q -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" \
    || { cat "$WORK/nginx/error.log" >&2; die "nginx rejects its config"; }
"$NGINX" -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" &
NGINX_PID=$!
for _ in $(seq 100); do
    curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$HTTP_PORT/1k" && break
    kill -0 "$NGINX_PID" 2>/dev/null || { cat "$WORK/nginx/error.log" >&2; die "nginx exited"; }
    sleep 0.1
done

# -d 0: the flow printer renders nothing; flows still go to the (temporary) session store.
"$BIN" dump -d 0 --listen-host 127.0.0.1 -p "$PROXY_PORT" --confdir "$WORK/conf" \
    --upstream-trusted-ca "$WORK/pki/ca.pem" >"$WORK/periscope.out" 2>"$WORK/periscope.err" &
PROXY_PID=$!
PROXY="http://127.0.0.1:$PROXY_PORT"
PROXY_CA="$WORK/conf/periscope-ca-cert.pem"
for _ in $(seq 150); do
    grep -q "proxy listening at" "$WORK/periscope.err" 2>/dev/null && break
    kill -0 "$PROXY_PID" 2>/dev/null || { cat "$WORK/periscope.err" >&2; die "periscope exited at start"; }
    sleep 0.1
done
grep -q "proxy listening at" "$WORK/periscope.err" || die "periscope did not start"
SESSION_DIR="$(dirname "$(find "/proc/$PROXY_PID/fd" -mindepth 1 -maxdepth 1 -lname '*.periscope' -printf '%l\n' | head -1)")"

# ---------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------
fds() { find "/proc/$PROXY_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$PROXY_PID/status"; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$PROXY_PID/status"; }
mib() { echo "$(( $1 / 1024 )) MiB"; }
alive() { kill -0 "$PROXY_PID" 2>/dev/null || die "periscope died: $(tail -5 "$WORK/periscope.err")"; }
# Flows in the proxy's (temporary) session file: how far the store is behind the load.
stored_flows() {
    local session
    session="$(find "/proc/$PROXY_PID/fd" -mindepth 1 -maxdepth 1 -lname '*.periscope' -printf '%l\n' 2>/dev/null | head -1)"
    [[ -n $session ]] || { echo "?"; return; }
    python3 - "$session" <<'PY' 2>/dev/null || echo "?"
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, timeout=10)
print(db.execute("SELECT count(*) FROM flows").fetchone()[0])
PY
}
REQUESTS=0

warm_up() { # one request of each kind, so lazily built state is in the baseline
    curl -sS --fail -o /dev/null -x "$PROXY" "http://127.0.0.1:$HTTP_PORT/1k"
    curl -sS --fail -o /dev/null -x "$PROXY" --cacert "$PROXY_CA" "https://localhost:$HTTPS_PORT/1k"
}

# settle: waits until the descriptor count is back to BASE + slack (or 60 s pass).
settle() {
    local base=$1 waited=0
    while [[ $(fds) -gt $((base + FD_SLACK)) && $waited -lt 600 ]]; do
        sleep 0.1
        waited=$((waited + 1))
    done
    echo "$((waited / 10))"
}

FAILED=0
SUMMARY=()

# phase NAME URL [oha args...]: runs oha for DURATION with CONNECTIONS connections,
# sampling the proxy's descriptors and RSS every second.
phase() {
    local name=$1 url=$2
    shift 2
    local out="$WORK/oha-$name.json" before_fds before_rss max_fds=0 max_rss=0 f r
    alive
    before_fds=$(fds)
    before_rss=$(rss_kib)
    say "phase $name: $CONNECTIONS connections for ${DURATION}s to $url (fds $before_fds, RSS $(mib "$before_rss"))"
    # -w: requests in flight at the deadline finish (aborting them would make the
    # proxy log the handshakes the client broke off).
    "$OHA" --no-tui --output-format json -o "$out" -c "$CONNECTIONS" -z "${DURATION}s" -w \
        -x "$PROXY" "$@" "$url" &
    local oha_pid=$!
    while kill -0 "$oha_pid" 2>/dev/null; do
        sleep 1
        alive
        f=$(fds)
        r=$(rss_kib)
        ((f > max_fds)) && max_fds=$f
        ((r > max_rss)) && max_rss=$r
    done
    wait "$oha_pid" || die "oha failed in phase $name"
    local stats
    stats="$(python3 "$REPO/bench/oha_summary.py" "$out")" || die "phase $name: no successful request"
    local rps ok errors non2xx
    read -r rps _ _ ok errors non2xx <<<"$stats"
    REQUESTS=$((REQUESTS + ok))
    local stored_now
    stored_now=$(stored_flows)
    local waited after_fds after_rss
    waited=$(settle "$BASE_FDS")
    after_fds=$(fds)
    after_rss=$(rss_kib)
    local line
    line="$(printf '%-14s requests %8s  rps %7.0f  errors %s  non-2xx %s  fds %s -> max %s -> %s (%ss to settle)  RSS %s -> max %s -> %s' \
        "$name" "$ok" "$rps" "$errors" "$non2xx" "$before_fds" "$max_fds" "$after_fds" "$waited" \
        "$(mib "$before_rss")" "$(mib "$max_rss")" "$(mib "$after_rss")")"
    echo "$line"
    echo "               session store: $stored_now flows saved when the load stopped, of $REQUESTS requests so far"
    SUMMARY+=("$line")
    if [[ $errors -ne 0 || $non2xx -ne 0 ]]; then
        say "phase $name: $(python3 "$REPO/bench/oha_summary.py" --errors "$out")"
        FAILED=1
    fi
    if [[ $max_fds -lt $CONNECTIONS ]]; then
        say "phase $name: at most $max_fds descriptors: the $CONNECTIONS connections were not all open at once"
        FAILED=1
    fi
    if [[ $after_fds -gt $((BASE_FDS + FD_SLACK)) ]]; then
        say "phase $name: descriptors did not come back: $after_fds after, baseline $BASE_FDS"
        ls -l "/proc/$PROXY_PID/fd" | awk '{print $NF}' | sed 's/[0-9]\+/N/g' | sort | uniq -c >&2 || true
        FAILED=1
    fi
}

warm_up
sleep 1
BASE_FDS=$(fds)
BASE_RSS=$(rss_kib)
echo "baseline       fds $BASE_FDS  RSS $(mib "$BASE_RSS")  (periscope pid $PROXY_PID, $("$BIN" --version))"
echo "limits         $(grep 'Max open files' "/proc/$PROXY_PID/limits" | tr -s ' ')"

# drain_store: waits (up to 180 s) until the session store holds every request so far.
drain_store() {
    local started=$SECONDS stored
    while :; do
        stored=$(stored_flows)
        [[ $stored =~ ^[0-9]+$ && $stored -ge $REQUESTS ]] && break
        if [[ $((SECONDS - started)) -ge 180 ]]; then
            say "the session store did not catch up within 180 s: $stored of $REQUESTS flows saved"
            FAILED=1
            break
        fi
        sleep 1
    done
    echo "               session store: $stored of $REQUESTS flows saved, $((SECONDS - started)) s after the load"
}

# trimmed_rss: RSS after the allocators returned freed memory, through gdb — jemalloc
# (Periscope's allocator) purges its arenas only after a decay time and glibc (SQLite,
# OpenSSL) keeps freed memory in its own, so this is (close to) what the process really
# holds; empty without gdb.
trimmed_rss() {
    command -v gdb >/dev/null || return 0
    gdb -nx -batch -p "$PROXY_PID" "/proc/$PROXY_PID/exe" \
        -ex 'call (int)_rjem_mallctl("arena.4096.purge", 0, 0, 0, 0)' \
        -ex 'call (int)malloc_trim(0)' \
        >"$WORK/gdb.log" 2>&1 || return 0
    grep -q '^\$1 = ' "$WORK/gdb.log" || return 0
    sleep 1
    rss_kib
}

# round N: the HTTP phase and the HTTPS phase, then the store drained and RSS measured.
round() {
    local n=$1 suffix=""
    [[ $n -gt 1 ]] && suffix="-$n"
    phase "http$suffix" "http://127.0.0.1:$HTTP_PORT/1k"
    phase "https$suffix" "https://localhost:$HTTPS_PORT/1k" --cacert "$PROXY_CA"
    drain_store
    ROUND_RSS=$(rss_kib)
    ROUND_TRIMMED=$(trimmed_rss)
    local trimmed="(gdb cannot attach)"
    [[ -n $ROUND_TRIMMED ]] && trimmed=$(mib "$ROUND_TRIMMED")
    echo "round $n        RSS $(mib "$ROUND_RSS"), after purging freed memory $trimmed (baseline $(mib "$BASE_RSS"))"
}

round 1
ROUND1_RSS=$ROUND_RSS
ROUND1_TRIMMED=$ROUND_TRIMMED
round 2
ROUND2_RSS=$ROUND_RSS
ROUND2_TRIMMED=$ROUND_TRIMMED

warm_up || FAILED=1
FINAL_FDS=$(fds)
echo "after          fds $FINAL_FDS (baseline $BASE_FDS)  RSS $(mib "$(rss_kib)") (baseline $(mib "$BASE_RSS"), peak $(mib "$(hwm_kib)"))"
# The same load twice must not grow what the process holds: caches and allocator
# fragmentation settle in the first round, a leak keeps growing.
if [[ -n $ROUND1_TRIMMED && -n $ROUND2_TRIMMED ]]; then
    echo "memory         after purging: $(mib "$ROUND1_TRIMMED") after round 1, $(mib "$ROUND2_TRIMMED") after round 2 (slack ${RSS_SLACK_MIB} MiB; baseline $(mib "$BASE_RSS"))"
    if [[ $ROUND2_TRIMMED -gt $((ROUND1_TRIMMED + RSS_SLACK_MIB * 1024)) ]]; then
        say "memory grew from round to round under the same load"
        FAILED=1
    fi
else
    echo "memory         RSS $(mib "$ROUND1_RSS") after round 1, $(mib "$ROUND2_RSS") after round 2 (gdb cannot attach: untrimmed; slack ${RSS_SLACK_MIB} MiB)"
    if [[ $ROUND2_RSS -gt $((ROUND1_RSS + RSS_SLACK_MIB * 1024)) ]]; then
        say "memory grew from round to round under the same load"
        FAILED=1
    fi
fi
alive
# Beyond the two start-up lines, anything the proxy logged is a failure it saw.
logged() { grep -v -e "proxy listening at" -e "CA certificate for clients" "$WORK/periscope.err" || true; }
errors_logged=$(logged | wc -l)
echo "proxy log      $errors_logged lines besides the start-up ones ($WORK/periscope.err)"
logged | sed 's/127\.0\.0\.1:[0-9]*/ADDR/g' | sort | uniq -c | sort -rn | head -5 >&2
[[ $errors_logged -eq 0 ]] || FAILED=1

if [[ $FAILED -ne 0 ]]; then
    echo "soak: FAILED"
    exit 1
fi
echo "soak: OK ($CONNECTIONS connections, ${DURATION}s per phase: zero errors, descriptors back to baseline, no memory growth from round to round)"
