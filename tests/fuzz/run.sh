#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, -Dfuzz=true) and runs each one.
#
#   tests/fuzz/run.sh [TARGET...]       every target (or those named)
#
# Environment:
#   FUZZ_SECONDS=60     time per target (CI); e.g. 14400 for four hours each
#   FUZZ_JOBS=2         targets run at the same time
#   FUZZ_BUILD=build-fuzz  build directory (created if missing, rebuilt always)
#   FUZZ_RESULTS=FILE   also write "NAME ok|FAIL EXECUTIONS" lines there
#
# Each target starts from its seed corpus (tests/fuzz/corpus/NAME, never
# written to) plus what earlier runs found (BUILD/fuzz-work/NAME), with its
# dictionary (tests/fuzz/NAME.dict). A crash, leak, sanitizer report or
# timeout fails the target; the input is left in BUILD/fuzz-artifacts/ and
# its path printed: turn it into a cmocka test before fixing the bug.
# Prints executions per target and in total; exits 1 if any target failed.
set -uo pipefail

cd "$(dirname "$0")/../.."
seconds=${FUZZ_SECONDS:-60}
jobs=${FUZZ_JOBS:-2}
build=${FUZZ_BUILD:-build-fuzz}
all=(smtp_proto addr dotstuff reply lmtp_proto dnsmsg conf authres mime7 proxy dnsbl milter spf_record dsnparam dmarc_record sts_policy sqlparam)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")

if [ ! -f "$build/build.ninja" ]; then
    if ! CC=clang meson setup "$build" -Dfuzz=true -Dtests=false; then
        echo "fuzz: meson setup failed" >&2
        exit 1
    fi
fi
if ! ninja -C "$build"; then
    echo "fuzz: build failed" >&2
    exit 1
fi

mkdir -p "$build/fuzz-artifacts" "$build/fuzz-logs"

# run_one NAME: one target for $seconds, its log in fuzz-logs/NAME.log.
run_one() {
    local name=$1 work="$build/fuzz-work/$1" dict=()
    mkdir -p "$work"
    [ -f "tests/fuzz/$name.dict" ] && dict=(-dict="tests/fuzz/$name.dict")
    "$build/tests/fuzz/fuzz_$name" "${dict[@]}" -max_total_time="$seconds" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$build/fuzz-artifacts/$name-" \
        "$work" "tests/fuzz/corpus/$name" >"$build/fuzz-logs/$name.log" 2>&1
}

for name in "${targets[@]}"; do
    if [ ! -x "$build/tests/fuzz/fuzz_$name" ]; then
        echo "fuzz: no target $name" >&2
        exit 2
    fi
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
        wait -n
    done
    echo "fuzz: running $name for ${seconds}s"
    run_one "$name" &
done
wait

total=0
failed=0
[ -n "${FUZZ_RESULTS:-}" ] && : >"$FUZZ_RESULTS"
for name in "${targets[@]}"; do
    log="$build/fuzz-logs/$name.log"
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    execs=${execs:-0}
    total=$((total + execs))
    if grep -qE '^==[0-9]+==ERROR|runtime error|^SUMMARY: |Test unit written to|^MS: ' "$log" ||
        ! grep -q '^Done [0-9]* runs' "$log"; then
        status=FAIL
        failed=$((failed + 1))
        echo "fuzz $name: FAILED after $execs executions; log $log:"
        grep -E 'ERROR|runtime error|SUMMARY|Test unit written' "$log" | head -20
    else
        status=ok
        echo "fuzz $name: ok, $execs executions"
    fi
    [ -n "${FUZZ_RESULTS:-}" ] && echo "$name $status $execs" >>"$FUZZ_RESULTS"
done
echo "fuzz: ${#targets[@]} targets, $failed failed, $total executions in total (${seconds}s each)"
[ "$failed" -eq 0 ]
