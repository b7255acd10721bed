#!/usr/bin/env bash
# mxd against Postfix on this machine: builds mxd with optimisation in
# build-bench and runs tests/bench/compare.py (as root; see its header).
#   bash tests/bench/run.sh            default run, under 10 minutes; writes docs/performance.md
#   bash tests/bench/run.sh --quick    every part once, small (CI), under 2 minutes
#   bash tests/bench/run.sh --full     the issue's sizes (20,000 per point, 1,000,000 held)
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ ! -d build-bench ]; then
    meson setup build-bench --buildtype=release -Dtests=false >/dev/null
fi
ninja -C build-bench >/dev/null
export MXD=$PWD/build-bench/src/mxd MXCTL=$PWD/build-bench/src/mxctl PYTHONDONTWRITEBYTECODE=1
exec /usr/bin/python3 tests/bench/compare.py "$@"
