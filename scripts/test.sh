#!/usr/bin/env bash
# Installs, builds and runs every test (runtime unit tests, lit tests for the
# dialects and passes, end-to-end numerics against the JAX oracle) via ctest.
# GPU tests skip themselves on machines without one.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

bash "$REPO/scripts/build.sh"
BUILD_DIR="${BUILD_DIR:-$REPO/build}"
log "running tests"
rc=0
ctest --test-dir "$BUILD_DIR" --output-on-failure "$@" || rc=$?
# ctest runs the whole lit suite as one test: show lit's own counts too.
lastlog="$BUILD_DIR/Testing/Temporary/LastTest.log"
if [[ -f "$lastlog" ]] && grep -q "Total Discovered Tests" "$lastlog"; then
  log "lit summary"
  grep -E "^Total Discovered Tests|^  (Passed|Failed|Unsupported|Skipped|Excluded|Expectedly Failed|Unexpectedly Passed|Timed Out): " "$lastlog"
fi
exit "$rc"
