#!/usr/bin/env bash
# Periscope's full check: installs the test peers that are missing, then runs
# fmt, clippy, the nextest suite, the doc tests and a fuzz smoke run
# (scripts/fuzz.sh --smoke), stopping at the first failure.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh harness         # extra args go to `cargo nextest run` (filters, -E, ...);
#                                   # the fuzz smoke run is left out then
#
# Runnable from any directory; .ci/run execs it.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

START_TIME=$SECONDS
CURRENT_STEP="setup"
DONE_STEPS=()

PASSED=0
FAILED=0
SKIPPED=0
COUNTED=0

on_exit() {
    local rc=$?
    local elapsed=$((SECONDS - START_TIME))
    if [[ -n "${RUN_LOG:-}" ]]; then
        rm -f "$RUN_LOG"
    fi
    if [[ $rc -eq 0 ]]; then
        echo "scripts/test.sh: OK: ${DONE_STEPS[*]} (${elapsed}s)"
    else
        echo "scripts/test.sh: FAILED at step '${CURRENT_STEP}' (exit ${rc}) after ${elapsed}s; passed before it: ${DONE_STEPS[*]:-none}" >&2
    fi
    if [[ $COUNTED -eq 1 ]]; then
        # nextest + doc tests together, as the last line.
        echo "summary: ${PASSED} passed, ${FAILED} failed, ${SKIPPED} skipped"
    fi
}
trap on_exit EXIT

# Adds the counts from a runner's output: PATTERN picks the closing lines (nextest's
# "Summary [..] N tests run: N passed, N failed, N skipped", libtest's
# "test result: ok. N passed; N failed; N ignored; ...").
count_results() {
    local log="$1" pattern="$2" clean n
    clean="$(sed -e 's/\x1b\[[0-9;]*m//g' "$log")"
    COUNTED=1
    while IFS= read -r line; do
        n="$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+' || true)"
        PASSED=$((PASSED + ${n:-0}))
        n="$(grep -oE '[0-9]+ failed' <<<"$line" | grep -oE '[0-9]+' || true)"
        FAILED=$((FAILED + ${n:-0}))
        n="$(grep -oE '[0-9]+ (skipped|ignored)' <<<"$line" | grep -oE '[0-9]+' || true)"
        SKIPPED=$((SKIPPED + ${n:-0}))
    done < <(grep -E "$pattern" <<<"$clean" || true)
}

step() {
    CURRENT_STEP="$1"
    echo
    echo "==> ${CURRENT_STEP}"
}

step_done() {
    DONE_STEPS+=("$CURRENT_STEP")
}

SUDO=""
if [[ "$(id -u)" -ne 0 ]]; then
    SUDO="sudo"
fi

# ---------------------------------------------------------------------------
# 1. System packages (only the missing ones; apt-get update only if needed)
# ---------------------------------------------------------------------------
step "system packages"

# perl and make build the OpenSSL that Periscope links by default (openssl-src).
APT_PACKAGES=(perl make apache2 curl openssl tshark tmux python3-venv python3-openssl jq gnutls-bin iproute2 nodejs nghttp2-server tinyproxy microsocks dante-server stunnel4 iptables chromium)

pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

MISSING=()
for pkg in "${APT_PACKAGES[@]}"; do
    if ! pkg_installed "$pkg"; then
        MISSING+=("$pkg")
    fi
done

if [[ ${#MISSING[@]} -gt 0 ]]; then
    echo "installing missing packages: ${MISSING[*]}"
    # tshark asks whether non-root users may capture; answer before it asks.
    echo "wireshark-common wireshark-common/install-setuid boolean false" \
        | $SUDO debconf-set-selections
    # Package scripts must not start a system-wide Apache on port 80: the tests run
    # their own instances. Only when no policy-rc.d exists already, and removed after.
    POLICY_RC=/usr/sbin/policy-rc.d
    ADDED_POLICY=0
    if [[ ! -e $POLICY_RC ]]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY_RC" >/dev/null
        $SUDO chmod 755 "$POLICY_RC"
        ADDED_POLICY=1
    fi
    install_rc=0
    {
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                --no-install-recommends "${MISSING[@]}"
    } || install_rc=$?
    if [[ $ADDED_POLICY -eq 1 ]]; then
        $SUDO rm -f "$POLICY_RC"
    fi
    if [[ $install_rc -ne 0 ]]; then
        echo "apt-get failed (exit ${install_rc})" >&2
        exit "$install_rc"
    fi
else
    echo "all present: ${APT_PACKAGES[*]}"
fi

for tool in curl openssl tshark tmux jq node ss tinyproxy microsocks stunnel4 iptables unshare chromium; do
    command -v "$tool" >/dev/null || { echo "$tool still missing after install" >&2; exit 1; }
done
for tool in apache2 nghttpd; do
    [[ -x /usr/sbin/$tool ]] || command -v "$tool" >/dev/null \
        || { echo "$tool still missing after install" >&2; exit 1; }
done
step_done

# ---------------------------------------------------------------------------
# 1b. mitmproxy's published example addons (tests/addons_examples.rs runs them
#     unchanged). Taken from Debian's `mitmproxy` package, unpacked, not installed;
#     never copied into the repository.
# ---------------------------------------------------------------------------
step "mitmproxy examples"

EXAMPLES_CACHE="$REPO/target/peers/mitmproxy-examples"
EXAMPLES_DIR="$EXAMPLES_CACHE/usr/share/doc/mitmproxy/examples/addons"
if [[ ! -f "$EXAMPLES_DIR/anatomy.py" ]]; then
    rm -rf "$EXAMPLES_CACHE"
    mkdir -p "$EXAMPLES_CACHE/deb"
    (
        cd "$EXAMPLES_CACHE/deb"
        apt-get download mitmproxy 2>/dev/null || {
            $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
            apt-get download mitmproxy
        }
    )
    dpkg-deb -x "$EXAMPLES_CACHE"/deb/mitmproxy_*.deb "$EXAMPLES_CACHE"
    [[ -f "$EXAMPLES_DIR/anatomy.py" ]] \
        || { echo "mitmproxy package has no $EXAMPLES_DIR/anatomy.py" >&2; exit 1; }
    echo "unpacked $(basename "$EXAMPLES_CACHE"/deb/mitmproxy_*.deb) into $EXAMPLES_CACHE"
else
    echo "up to date: $EXAMPLES_DIR"
fi
export PERISCOPE_TEST_MITMPROXY_EXAMPLES="$EXAMPLES_DIR"
step_done

# ---------------------------------------------------------------------------
# 2. Python venv for the scripted test peers
# ---------------------------------------------------------------------------
step "python venv"

VENV="$REPO/.venv"
REQUIREMENTS="$REPO/tests/requirements.txt"
STAMP="$VENV/.periscope-requirements.sha256"
BASE_PYTHON="${PERISCOPE_VENV_BASE_PYTHON:-$(command -v python3)}"

want_stamp="$(
    {
        sha256sum "$REQUIREMENTS" | cut -d' ' -f1
        echo "$BASE_PYTHON"
        "$BASE_PYTHON" -c 'import sys; print(sys.version)'
    } | sha256sum | cut -d' ' -f1
)"
have_stamp="$(cat "$STAMP" 2>/dev/null || true)"

if [[ ! -x "$VENV/bin/python" || "$want_stamp" != "$have_stamp" ]]; then
    echo "creating $VENV with $BASE_PYTHON ($("$BASE_PYTHON" --version 2>&1))"
    rm -rf "$VENV"
    "$BASE_PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQUIREMENTS"
    echo "$want_stamp" >"$STAMP"
else
    echo "up to date: $VENV"
fi
"$VENV/bin/python" -c 'import OpenSSL, websockets, jsonschema, requests, playwright'
export PERISCOPE_TEST_PYTHON="$VENV/bin/python"
step_done

# ---------------------------------------------------------------------------
# 3. Rust tools
# ---------------------------------------------------------------------------
step "rust tools"
if ! cargo fmt --version >/dev/null 2>&1; then
    rustup component add rustfmt
fi
if ! cargo clippy --version >/dev/null 2>&1; then
    rustup component add clippy
fi
if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install --locked cargo-nextest
fi
step_done

# ---------------------------------------------------------------------------
# 4. Checks, in order, stopping at the first failure
# ---------------------------------------------------------------------------
# A build from scratch takes about 6.5 GB (target/ 3.8, fuzz/target 2.6); a full
# disk shows up as a linker error deep in cargo's output, so say it first.
free_kib="$(df -Pk "$REPO" | awk 'NR == 2 {print $4}')"
if [[ -n $free_kib ]] && ((free_kib < 8 * 1024 * 1024)); then
    echo "scripts/test.sh: warning: $((free_kib / 1024)) MiB free on the disk of $REPO;" \
        "a build from scratch needs about 6.5 GB" >&2
fi

step "fmt"
cargo fmt --all --check
step_done

step "clippy"
cargo clippy --workspace --all-targets -- -D warnings
step_done

RUN_LOG="$(mktemp)"

step "nextest"
rc=0
cargo nextest run --workspace --no-fail-fast "$@" 2>&1 | tee "$RUN_LOG" || rc=$?
count_results "$RUN_LOG" '^ *Summary \[.*tests? run'
[[ $rc -eq 0 ]] || exit "$rc"
step_done

step "doctests"
rc=0
cargo test --workspace --doc 2>&1 | tee "$RUN_LOG" || rc=$?
count_results "$RUN_LOG" '^test result: '
[[ $rc -eq 0 ]] || exit "$rc"
step_done

# The fuzz targets build a tree of their own (coverage instrumentation and
# AddressSanitizer), so they run after the suite rather than beside its timed tests:
# every kept regression input and seed, then a few seconds of fuzzing per target.
# Skipped when arguments narrowed the nextest run to some tests.
if [[ $# -eq 0 ]]; then
    step "fuzz smoke"
    scripts/fuzz.sh --smoke
    step_done
fi
