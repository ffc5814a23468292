#!/usr/bin/env bash
# Roofline estimate of a Llama-3-8B training step on H100 SXM and H200 SXM:
# compiles the train step (grads + AdamW update) of examples/llama-3-8b for
# --target=sm_90a with --report, then prints the compile time and, per
# device, the sum of the kernels' roofline estimates, the step's floor
# max(FLOPs / 989 TFLOP/s dense BF16, bytes / HBM bandwidth) and their ratio
# (1.0 would be kernels at the floor; docs/cli.md defines the fields).
# It compiles the step twice: with the SIMT kernels (the default) and with
# the Hopper kernels (--hopper-gemm --hopper-attention: TMA + wgmma GEMMs
# and attention where they apply, docs/hopper-gemm.md), and prints both.
#
#   bash bench/hopper_roofline.sh [BATCH] [SEQ]     (default 1 2048)
#
# These are estimates from FLOP and byte counts, not GPU timings: the
# compile needs ptxas (the CUDA toolkit) but no GPU. Not a test: it prints
# figures and exits 0 when the compile succeeds. COLOSSUS_COMPILE overrides
# the compiler binary; REPORT=file.json keeps the JSON reports
# (file-simt.json, file-hopper.json).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[[ -d /usr/local/cuda/bin ]] && export PATH="/usr/local/cuda/bin:$PATH"
CC="${COLOSSUS_COMPILE:-$REPO/build/bin/colossus-compile}"
BATCH="${1:-1}"
SEQ="${2:-2048}"
[[ -x "$CC" ]] || { echo "hopper_roofline.sh: $CC not found (run scripts/build.sh)" >&2; exit 1; }
PY="$REPO/.venv/bin/python"
[[ -x "$PY" ]] || PY=python3

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

run() {
local label="$1"; shift
local report="$tmp/report-$label.json"
t0=$(date +%s.%N)
"$CC" "$REPO/examples/llama-3-8b/config.json" --target=sm_90a --step=train \
    --batch "$BATCH" --seq "$SEQ" -o "$tmp/llama-3-8b.colossus" "$@" \
    --report="$report" >"$tmp/compile.log" 2>&1 \
  || { echo "hopper_roofline.sh: compiling llama-3-8b failed:" >&2; cat "$tmp/compile.log" >&2; exit 1; }
t1=$(date +%s.%N)

echo
echo "== $label kernels${*:+ ($*)}"
echo "llama-3-8b train step (grads + update), batch $BATCH x seq $SEQ, sm_90a"
echo "compile: $(awk -v a="$t1" -v b="$t0" 'BEGIN {printf "%.2f", a - b}') s"
"$PY" - "$report" <<'PYEOF'
import json
import sys

r = json.load(open(sys.argv[1]))
est = r["roofline_estimate"]
ks = r["kernels"]
launches = sum(k["roofline_estimate"]["launches"] for k in ks)
print(f"kernels: {len(ks)}, launches: {launches}, "
      f"FLOPs: {est['flops']:.3e}, bytes: {est['bytes']:.3e} (estimates)")
for dev, label in (("h100_sxm", "H100 SXM"), ("h200_sxm", "H200 SXM")):
    d = est[dev]
    print(f"{label}: sum of kernel estimates {d['sum_of_kernel_estimates_seconds'] * 1e3:.1f} ms, "
          f"floor {d['floor_seconds'] * 1e3:.1f} ms ({d['floor_bound']}-bound), "
          f"ratio {d['ratio']:.2f}")
    by_pipe = {}
    for k in ks:
        e = k["roofline_estimate"][dev]
        key = k["compute_pipe"] if e["bound"] == "compute" else "memory-bound"
        by_pipe[key] = by_pipe.get(key, 0.0) + e["seconds"]
    print("  of the sum: " + ", ".join(
        f"{v * 1e3:.1f} ms {k}" for k, v in sorted(by_pipe.items())))
PYEOF
if [[ -n "${REPORT:-}" ]]; then cp "$report" "${REPORT%.json}-$label.json"; fi
}

run simt
run hopper --hopper-gemm --hopper-attention
