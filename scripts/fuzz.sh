#!/usr/bin/env bash
# Fuzzes the parsers Periscope owns with cargo-fuzz (libFuzzer), each target for a
# bounded time, after replaying the kept regression inputs; prints executions, corpus
# size and the outcome per target.
#
#   scripts/fuzz.sh                  # 30 s per target
#   scripts/fuzz.sh --smoke          # 5 s per target (the test suite's smoke run)
#   scripts/fuzz.sh --long           # 10 min per target (before resolving an issue)
#   scripts/fuzz.sh --seconds 120 filter store_rows   # chosen targets and time
#   scripts/fuzz.sh --list           # the targets
#
# Targets (fuzz/fuzz_targets/, bodies in fuzz/src/lib.rs): client_hello, socks5_handshake, filter,
# connect_authority, flow_json, har_json, har_writer, decode_body, store_file,
# store_rows.
# Seeds: fuzz/seeds/TARGET (kept in git). The growing corpus: fuzz/corpus/TARGET,
# crash inputs: fuzz/artifacts/TARGET (both ignored by git). A crash fails the run;
# keep its input in fuzz/regressions/TARGET once understood: every run replays those
# first (and `cargo test --manifest-path fuzz/Cargo.toml` does on stable Rust).
#
# Needs cargo-fuzz (installed with `cargo install --locked cargo-fuzz` when missing)
# and nightly compiler flags: the stable toolchain with RUSTC_BOOTSTRAP=1, or the
# `nightly` rustup toolchain with FUZZ_TOOLCHAIN=nightly. FUZZ_SANITIZER=none|address
# (default address) picks the sanitizer; FUZZ_JOBS (default 1) runs that many libFuzzer processes per target.
# The "regressions" column says how many kept inputs still fail (a known, unfixed bug).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FUZZ="$REPO/fuzz"
ALL_TARGETS=(client_hello filter connect_authority flow_json har_json har_writer decode_body store_file store_rows socks5_handshake)
SECONDS_PER_TARGET=30
MODE=default
SANITIZER="${FUZZ_SANITIZER:-address}"
JOBS="${FUZZ_JOBS:-1}"
TARGETS=()

usage() { sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --smoke) MODE=smoke; SECONDS_PER_TARGET=5 ;;
        --long) MODE=long; SECONDS_PER_TARGET=600 ;;
        --seconds) SECONDS_PER_TARGET="${2:?--seconds needs a number}"; shift ;;
        --seconds=*) SECONDS_PER_TARGET="${1#--seconds=}" ;;
        --list) printf '%s\n' "${ALL_TARGETS[@]}"; exit 0 ;;
        -h | --help) usage; exit 0 ;;
        -*) echo "fuzz: unknown option: $1 (see --help)" >&2; exit 2 ;;
        *) TARGETS+=("$1") ;;
    esac
    shift
done
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=("${ALL_TARGETS[@]}")
for t in "${TARGETS[@]}"; do
    [[ " ${ALL_TARGETS[*]} " == *" $t "* ]] || { echo "fuzz: unknown target $t (--list)" >&2; exit 2; }
done

say() { echo "fuzz: $*" >&2; }
die() { echo "fuzz: ERROR: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------
# Toolchain
# ---------------------------------------------------------------------------
if ! cargo fuzz --version >/dev/null 2>&1; then
    say "installing cargo-fuzz (once)"
    cargo install --locked cargo-fuzz >&2 || die "cargo install cargo-fuzz failed"
fi
# The stable compiler CI has, with the nightly flags cargo-fuzz needs unlocked;
# FUZZ_TOOLCHAIN=nightly uses a nightly rustup toolchain instead.
CARGO=(cargo)
if [[ ${FUZZ_TOOLCHAIN:-} == nightly ]]; then
    CARGO=(cargo +nightly)
    TOOLCHAIN="$(rustup run nightly rustc --version)"
else
    export RUSTC_BOOTSTRAP=1
    TOOLCHAIN="$(rustc --version) with RUSTC_BOOTSTRAP=1"
fi
# The fuzz tree always builds in fuzz/target (its flags differ from the workspace's),
# whatever target directory the caller uses for the rest.
unset CARGO_TARGET_DIR
HOST="$(rustc -vV | sed -n 's/^host: //p')"
BIN_DIR="$FUZZ/target/$HOST/release"
cd "$FUZZ"

say "building ${#TARGETS[@]} targets ($TOOLCHAIN, sanitizer $SANITIZER)"
build_started=$SECONDS
for t in "${TARGETS[@]}"; do
    "${CARGO[@]}" fuzz build --debug-assertions --sanitizer "$SANITIZER" "$t" >&2 \
        || die "cargo fuzz build $t failed (try FUZZ_SANITIZER=none)"
done
say "built in $((SECONDS - build_started)) s"

# ---------------------------------------------------------------------------
# Regressions, then fuzzing
# ---------------------------------------------------------------------------
FAILED=()
RESULTS=()
LOGS="$FUZZ/target/fuzz-logs"
mkdir -p "$LOGS"

for t in "${TARGETS[@]}"; do
    mkdir -p "$FUZZ/corpus/$t" "$FUZZ/artifacts/$t"
    regressions=()
    if [[ -d $FUZZ/regressions/$t ]]; then
        while IFS= read -r -d '' f; do regressions+=("$f"); done \
            < <(find "$FUZZ/regressions/$t" -type f -print0 | sort -z)
    fi
    known="-"
    if [[ ${#regressions[@]} -gt 0 ]]; then
        # Each input on its own: one failing must not hide the others.
        failing=0
        : >"$LOGS/$t.regressions.log"
        for f in "${regressions[@]}"; do
            if ! "$BIN_DIR/$t" -runs=1 "$f" >>"$LOGS/$t.regressions.log" 2>&1; then
                failing=$((failing + 1))
                say "$t: regression input ${f#"$FUZZ"/} still fails:"
                grep -aA1 "panicked at" "$LOGS/$t.regressions.log" | tail -1 >&2 || true
            fi
        done
        known="$failing/${#regressions[@]}"
        [[ $failing -eq 0 ]] || FAILED+=("$t (regression inputs)")
    fi

    log="$LOGS/$t.log"
    before=$(find "$FUZZ/artifacts/$t" -type f | wc -l)
    say "$t: fuzzing for ${SECONDS_PER_TARGET} s"
    status=0
    # Fork mode keeps fuzzing after a crash (each crash input is saved), so a known
    # failure does not end the search for others. -rss_limit_mb: a target that needs
    # more is a finding; -timeout: one input may take at most 10 s; -max_len: room for
    # the session-file seeds.
    "$BIN_DIR/$t" "$FUZZ/corpus/$t" "$FUZZ/seeds/$t" \
        -artifact_prefix="$FUZZ/artifacts/$t/" -fork="$JOBS" \
        -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
        -max_len=131072 >"$log" 2>&1 || status=$?
    execs=$(grep -aoE '^#[0-9]+:' "$log" | tail -1 | tr -dc '0-9')
    execs=${execs:-0}
    corpus=$(find "$FUZZ/corpus/$t" -type f | wc -l)
    after=$(find "$FUZZ/artifacts/$t" -type f | wc -l)
    found=$((after - before))
    outcome="ok"
    if [[ $found -gt 0 || ($status -ne 0 && $status -ne 77) ]]; then
        kinds="$(grep -aoE 'oom/timeout/crash: [0-9/]+' "$log" | tail -1 || true)"
        outcome="FOUND $found new inputs in fuzz/artifacts/$t (${kinds:-exit $status})"
        FAILED+=("$t")
        grep -a "panicked at" -A1 "$log" | grep -av "panicked at" | sort | uniq -c | sort -rn \
            | head -3 >&2 || true
    fi
    RESULTS+=("$(printf '%-18s %5ss %12s %9s/s %7s %10s  %s' "$t" "$SECONDS_PER_TARGET" "$execs" \
        "$((execs / SECONDS_PER_TARGET))" "$corpus" "$known" "$outcome")")
done

echo
printf '%-18s %6s %12s %11s %7s %10s  %s\n' target time executions rate corpus regressions outcome
printf '%s\n' "${RESULTS[@]}"
echo "mode $MODE, $TOOLCHAIN, sanitizer $SANITIZER; logs in $LOGS"
if [[ ${#FAILED[@]} -gt 0 ]]; then
    echo "fuzz: FAILED: ${FAILED[*]}"
    exit 1
fi
echo "fuzz: OK (${#TARGETS[@]} targets, no crash)"
