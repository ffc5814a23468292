#!/usr/bin/env bash
# Installs the dependencies (setup.sh), then configures and builds Colossus
# into <repo>/build with Ninja, Release, using every core.
# Extra arguments are passed to the cmake configure step (e.g. -DFOO=ON).
# BUILD_DIR overrides the build folder.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

bash "$REPO/scripts/setup.sh"

BUILD_DIR="${BUILD_DIR:-$REPO/build}"
cfg=(-DCMAKE_BUILD_TYPE=Release "-DCOLOSSUS_PYTHON=$REPO/.venv/bin/python" "$@")
if [[ -f "$BUILD_DIR/CMakeCache.txt" ]]; then
  # Keep the generator the folder was made with.
  cmake -S "$REPO" -B "$BUILD_DIR" "${cfg[@]}" >/dev/null
else
  log "configuring $BUILD_DIR"
  cmake -G Ninja -S "$REPO" -B "$BUILD_DIR" "${cfg[@]}"
fi
log "building with $(colossus_jobs) jobs"
cmake --build "$BUILD_DIR" -j "$(colossus_jobs)"
