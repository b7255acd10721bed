#!/usr/bin/env bash
# The one command that installs, builds and tests mxd:
#   1. tests/deps.sh (skip with MXD_SKIP_DEPS=1)
#   2. a fresh default build in build-test, `meson test`
#   3. a fresh address+undefined sanitizer build in build-asan, `meson test`
#   4. memcheck: roundtrip, protocol, policy, hostile, lmtp, tls, the
#      issue 14 hardening suites (but hardening_io, which measures mxd's
#      memory) and the issue 16-17 suites (proxy, rate, greylist, dnsbl,
#      pregreet, milter) with mxd under valgrind (zero errors, zero
#      definite leaks)
#   5. the libFuzzer targets, 10 s each (tests/fuzz/run.sh; one test each;
#      FUZZ_SECONDS=14400 for the long form)
#   6. the benchmark harness, tests/bench/run.sh --quick (counted as one test)
#   7. the peer benchmark, tests/bench/peers_bench.py --quick (one test)
#   8. clang-format --dry-run -Werror over the C sources (counted as one test)
# Test concurrency: meson runs up to MXD_TEST_JOBS tests at a time (default
# 2, what CI has and what the suite was proven with). Integration tests
# listed in tests/meson.build's integration_parallel run side by side; the
# others (they measure memory or CPU, assert tight durations, or are new and
# not yet reviewed) run alone, after the rest; each test's ports are its
# own (tests/integration/ports.py).
# Prints a summary per build and, last, "N passed, N failed, N skipped"
# over everything; exits non-zero if any test or any build failed.
set -uo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)

if [ "${MXD_SKIP_DEPS:-0}" != 1 ]; then
    if ! bash tests/deps.sh; then
        echo "run.sh: installing dependencies failed" >&2
        exit 1
    fi
fi

summaries=()
stage_times=()
stage_name=deps # since the script started
stage_start=0
# stage NAME: ends the running stage (its wall time goes into the summary)
# and starts NAME; the CI budget is 45 minutes on 2 cores.
stage() {
    if [ -n "$stage_name" ]; then
        stage_times+=("$stage_name $((SECONDS - stage_start))s")
    fi
    stage_name=$1
    stage_start=$SECONDS
}
total_pass=0
total_fail=0
total_skip=0

# count BUILD_DIR LABEL [LOGBASE]: adds the results in BUILD_DIR's
# meson-logs/LOGBASE.json (default testlog).
count() {
    local dir=$1 label=$2 log="$1/meson-logs/${3:-testlog}.json" counts
    if [ ! -f "$log" ]; then
        summaries+=("$label: no test results (build or setup failed)")
        total_fail=$((total_fail + 1))
        return
    fi
    counts=$(python3 - "$log" <<'PY'
import json, sys
ok = fail = skip = 0
failed = []
with open(sys.argv[1], encoding="utf-8") as f:
    for line in f:
        line = line.strip()
        if not line:
            continue
        t = json.loads(line)
        res = t.get("result")
        if res in ("OK", "EXPECTEDFAIL"):
            ok += 1
        elif res == "SKIP":
            skip += 1
        else:
            fail += 1
            failed.append(f"{t.get('name')}={res}")
print(ok, fail, skip, " ".join(failed))
PY
    )
    local ok fail skip failed
    read -r ok fail skip failed <<<"$counts"
    ok=${ok:-0} fail=${fail:-1} skip=${skip:-0}
    total_pass=$((total_pass + ok))
    total_fail=$((total_fail + fail))
    total_skip=$((total_skip + skip))
    summaries+=("$label: $ok passed, $fail failed, $skip skipped${failed:+ (failed: $failed)}")
}

# build_and_test DIR LABEL [meson setup options...]
build_and_test() {
    local dir=$1 label=$2
    shift 2
    rm -rf "$dir"
    echo "==== $label: meson setup $dir $*"
    if ! meson setup "$dir" "$@"; then
        summaries+=("$label: meson setup FAILED")
        total_fail=$((total_fail + 1))
        return
    fi
    echo "==== $label: build"
    if ! ninja -C "$dir"; then
        summaries+=("$label: build FAILED")
        total_fail=$((total_fail + 1))
        return
    fi
    echo "==== $label: meson test ${TEST_ARGS:-}"
    # shellcheck disable=SC2086 # TEST_ARGS: words on purpose
    meson test -C "$dir" --print-errorlogs --num-processes "${MXD_TEST_JOBS:-2}" ${TEST_ARGS:-}
    count "$dir" "$label"
}

stage default
build_and_test build-test "default build"

# Sanitizer options apply to this build's test runs only. To stay inside
# the CI's time: crash_load kills mxd 10 times here (22 in the default
# build), and the suites run a second time on PostgreSQL (crash_pg,
# faults_pg, hostile_pg: suite pg_suites) run in the default build only;
# the PostgreSQL engine under the sanitizers is pg_units and cluster.
stage sanitizers
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    MXD_CRASH_KILLS=10 TEST_ARGS="--no-suite pg_suites" \
    build_and_test build-asan "sanitizer build" -Db_sanitize=address,undefined -Db_lundef=false

# memcheck: a subset of the integration tests again, with mxd under
# valgrind (mxdtest.py's MXD_WRAPPER): any memory error or definite leak
# makes mxd exit 99, which fails the test. meson runs named tests in the
# order given: the ones that may run side by side (tests/meson.build's
# integration_parallel) first, longest first, then the ones that run alone.
stage memcheck
echo "==== memcheck: valgrind"
if [ -x build-test/src/mxd ]; then
    MXD_WRAPPER="valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite" \
        meson test -C build-test --print-errorlogs --num-processes "${MXD_TEST_JOBS:-2}" \
        --logbase memcheck \
        lmtp hardening_auth hostile roundtrip protocol policy \
        tls milter hardening_checks dnsbl pregreet hardening hardening_mail \
        greylist proxy rate
    count build-test "memcheck (valgrind)" memcheck
else
    summaries+=("memcheck: FAILED (no default build)")
    total_fail=$((total_fail + 1))
fi

# libFuzzer targets (tests/fuzz/run.sh), FUZZ_SECONDS each (default 10):
# each target counts as one test, passed when it found nothing.
stage fuzz
echo "==== fuzz: tests/fuzz/run.sh"
rm -rf build-fuzz
fuzz_results=$(mktemp)
FUZZ_RESULTS=$fuzz_results FUZZ_SECONDS=${FUZZ_SECONDS:-10} bash tests/fuzz/run.sh
fuzz_ok=$(grep -c ' ok ' "$fuzz_results")
fuzz_bad=$(grep -vc ' ok ' "$fuzz_results")
fuzz_execs=$(awk '{n += $3} END {print n + 0}' "$fuzz_results")
if [ "$((fuzz_ok + fuzz_bad))" -eq 0 ]; then
    summaries+=("fuzz: FAILED (no results: build failed?)")
    total_fail=$((total_fail + 1))
else
    summaries+=("fuzz: $fuzz_ok passed, $fuzz_bad failed, $fuzz_execs executions ($(tr '\n' ' ' <"$fuzz_results"))")
    total_pass=$((total_pass + fuzz_ok))
    total_fail=$((total_fail + fuzz_bad))
fi
rm -f "$fuzz_results"

# The benchmark harness (tests/bench) in its quick mode: it must work, its
# numbers are never judged here. Counted as one test.
stage bench
echo "==== benchmark harness: tests/bench/run.sh --quick"
if bash tests/bench/run.sh --quick --no-docs; then
    summaries+=("benchmark harness (--quick): passed")
    total_pass=$((total_pass + 1))
else
    summaries+=("benchmark harness (--quick): FAILED")
    total_fail=$((total_fail + 1))
fi

# The peer benchmark (issue 22) in its quick mode: mxd, Postfix, smtp-sink,
# and Exim and OpenSMTPD when they can be fetched and started (said so
# otherwise); it fails when mxd or the load generator does not work.
stage peers
echo "==== peer benchmark: tests/bench/peers_bench.py --quick"
if env MXD="$PWD/build-bench/src/mxd" SMTP_LOAD="$PWD/build-test/tests/smtp_load" \
        LISTEN_BACKLOG="$PWD/build-test/tests/liblisten_backlog.so" PYTHONDONTWRITEBYTECODE=1 \
        /usr/bin/python3 tests/bench/peers_bench.py --quick; then
    summaries+=("peer benchmark (--quick): passed")
    total_pass=$((total_pass + 1))
else
    summaries+=("peer benchmark (--quick): FAILED")
    total_fail=$((total_fail + 1))
fi

stage format
echo "==== clang-format --dry-run -Werror"
shopt -s nullglob
fmt_files=(src/*.c src/*/*.c src/*/*.h tests/unit/*/*.c tests/unit/*.h tests/fuzz/*.c)
shopt -u nullglob
if [ ${#fmt_files[@]} -eq 0 ]; then
    summaries+=("clang-format: FAILED (no source files found)")
    total_fail=$((total_fail + 1))
elif clang-format --dry-run -Werror "${fmt_files[@]}"; then
    summaries+=("clang-format: passed (${#fmt_files[@]} files)")
    total_pass=$((total_pass + 1))
else
    summaries+=("clang-format: FAILED")
    total_fail=$((total_fail + 1))
fi

# The reliability tests' counts (kills, acknowledged, lost, duplicates,
# faults survived), from the default build's test log.
reliability=$(grep -hE '^(crash load|power cut|disk full|lmtp faults|primary flapping|slowloris|hostile):' \
    build-test/meson-logs/testlog.txt 2>/dev/null)

echo
echo "==== reliability counts (default build)"
echo "${reliability:-none found}"
stage end
echo
echo "==== summary ($root)"
echo "wall time by stage: ${stage_times[*]} (total ${SECONDS}s)"
for s in "${summaries[@]}"; do
    echo "$s"
done
echo "$total_pass passed, $total_fail failed, $total_skip skipped"
[ "$total_fail" -eq 0 ]
