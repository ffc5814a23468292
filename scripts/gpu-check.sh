#!/usr/bin/env bash
# The one-call GPU check of the Hopper issue (docs/gpu-check.md). Runs on a
# GPU machine (H100/H200, CUDA toolkit, PyTorch; no LLVM needed) from the
# repository root, on the bundle scripts/gpu-prepare.sh made:
#
#   bash scripts/gpu-check.sh [--dry-run] [--out DIR] [--budget SECONDS] [--skip LIST] [BUNDLE_DIR]
#
#   BUNDLE_DIR   default build/gpu-bundle
#   --dry-run    validate the bundle (files, sizes, sha256, schema) and print
#                the plan; no GPU, nothing built (works on the CPU machine)
#   --out DIR    where gpu-check.log, gpu-check-results.json and
#                gpu-check-steps.tar.gz go (default: $OUT when set)
#   --budget S   wall-clock budget of the whole run (default 330); every
#                step's time limit is cut to what is left
#   --skip LIST  parts to leave out, comma-separated: gemm, attention
#
# It (a) builds colossus-run from source without LLVM (bundled headers;
# fallback: the bundle's binary), (b) runs the sm_90a artifacts and compares
# logits and gradients with the cpu's results in the bundle, (c) runs the
# Hopper GEMM PTX through scripts/gpu/hopper_gemm_check.cu and times
# torch.nn.functional.linear on the same shapes, (d) runs the Hopper
# attention forward and backward (dK/dV, dQ) PTX through
# scripts/gpu/hopper_attention_check.cu (float64 numerics, time) and times
# causal scaled_dot_product_attention forward + backward on the same
# shapes, (e) trains a few steps with
# `colossus-run train` (tokens/s, MFU) and (f) prints one table.
# Exit status: 0 every numerics check passed, 1 not, 2 usage error or no
# bundle. PYTHON overrides the interpreter (default python3; it needs torch
# for (c) and (d)).
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[[ -d /usr/local/cuda/bin && ":$PATH:" != *":/usr/local/cuda/bin:"* ]] && export PATH="/usr/local/cuda/bin:$PATH"

usage() { awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "${BASH_SOURCE[0]}"; }
args=()
bundle=""
while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dry-run) args+=(--dry-run) ;;
    --out|--budget|--skip)
      [[ $# -ge 2 ]] || { echo "gpu-check.sh: $1 needs a value" >&2; exit 2; }
      args+=("$1" "$2"); shift ;;
    --out=*|--budget=*|--skip=*) args+=("$1") ;;
    -*) echo "gpu-check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *)
      [[ -z "$bundle" ]] || { echo "gpu-check.sh: one bundle folder only (got $bundle and $1)" >&2; exit 2; }
      bundle="$1" ;;
  esac
  shift
done
bundle="${bundle:-$REPO/build/gpu-bundle}"
PY="${PYTHON:-$(command -v python3 || true)}"
[[ -n "$PY" ]] || { echo "gpu-check.sh: python3 not found (set PYTHON)" >&2; exit 2; }
exec "$PY" "$REPO/scripts/gpu/gpu_check.py" check "$bundle" ${args[@]+"${args[@]}"}
