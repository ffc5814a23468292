#!/usr/bin/env bash
# Installs, builds and runs every test (runtime unit tests, lit tests for the
# dialects and passes, end-to-end numerics against the JAX oracle) via ctest.
# GPU tests skip themselves on machines without one.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

bash "$REPO/scripts/build.sh"
BUILD_DIR="${BUILD_DIR:-$REPO/build}"
log "running tests"
ctest --test-dir "$BUILD_DIR" --output-on-failure "$@"
