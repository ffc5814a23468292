#!/usr/bin/env bash
# Installs what Colossus needs to build and test, and nothing more:
#   - Debian packages (toolchain, LLVM/MLIR 22, FlatBuffers, GoogleTest, json)
#   - a Python virtual environment at <repo>/.venv with the pinned packages of
#     scripts/requirements.txt (jax on CPU, numpy, safetensors, ml_dtypes)
# Idempotent: when everything is already there it checks and returns quickly
# (dpkg-query for the packages; a stamp file inside the venv for Python).
# The CUDA toolkit (/usr/local/cuda) comes with GPU machines; it is not
# installed here, only put on PATH by the other scripts when present.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DEB_PACKAGES=(
  cmake g++ make ninja-build ccache git python3-venv
  llvm-22-dev libmlir-22-dev mlir-22-tools llvm-22-tools
  libflatbuffers-dev flatbuffers-compiler libgtest-dev nlohmann-json3-dev
)

# ---- Debian packages -------------------------------------------------------
missing=()
for p in "${DEB_PACKAGES[@]}"; do
  status="$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)"
  [[ "$status" == ii* ]] || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "setup.sh: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    SUDO=(sudo)
  fi
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -q
  "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# ---- Python virtual environment -------------------------------------------
VENV="$REPO/.venv"
REQS="$REPO/scripts/requirements.txt"
STAMP="$VENV/.colossus-requirements"
if [[ -x "$VENV/bin/python" && -f "$STAMP" ]] && cmp -s "$REQS" "$STAMP"; then
  : # up to date
else
  # Prefer Debian's interpreter (python3-venv above); fall back to PATH's.
  PY=/usr/bin/python3
  [[ -x "$PY" ]] || PY="$(command -v python3)"
  if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating virtual environment $VENV ($("$PY" --version 2>&1))"
    "$PY" -m venv "$VENV"
  fi
  log "installing Python packages from scripts/requirements.txt"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
      --no-input -r "$REQS"
  "$VENV/bin/python" -c 'import jax, numpy, safetensors, ml_dtypes' \
    || { echo "setup.sh: the venv's packages do not import" >&2; exit 1; }
  cp "$REQS" "$STAMP"
fi
