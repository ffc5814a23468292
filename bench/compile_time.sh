#!/usr/bin/env bash
# Compile-time scaling: colossus-compile should cost about the same for a
# 126-layer model as for a 32-layer one (one function per distinct layer,
# called once per layer), so the ratio 405B / 8B should be <= 1.5.
#
#   bash bench/compile_time.sh [RUNS]     (default 3; the median is reported)
#
# Compiles examples/llama-3.1-405b and examples/llama-3-8b for
# --target=sm_90a --step=forward --batch 1 --seq 2048 (needs ptxas, i.e. the
# CUDA toolkit, but no GPU). Not a test: it prints figures and exits 0 when
# both compiles succeed. COLOSSUS_COMPILE overrides the compiler binary.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[[ -d /usr/local/cuda/bin ]] && export PATH="/usr/local/cuda/bin:$PATH"
CC="${COLOSSUS_COMPILE:-$REPO/build/bin/colossus-compile}"
RUNS="${1:-3}"
[[ -x "$CC" ]] || { echo "compile_time.sh: $CC not found (run scripts/build.sh)" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# median_time MODEL -> prints the median wall time in seconds of RUNS compiles
median_time() {
  local model=$1 times=() i t0 t1
  for ((i = 0; i < RUNS; i++)); do
    t0=$(date +%s.%N)
    "$CC" "$REPO/examples/$model/config.json" --target=sm_90a --step=forward \
        --batch 1 --seq 2048 -o "$tmp/$model.colossus" >"$tmp/$model.log" 2>&1 \
      || { echo "compile_time.sh: compiling $model failed:" >&2; cat "$tmp/$model.log" >&2; exit 1; }
    t1=$(date +%s.%N)
    times+=("$(awk -v a="$t1" -v b="$t0" 'BEGIN {printf "%.6f", a - b}')")
  done
  printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.3f\n", m}'
}

t8=$(median_time llama-3-8b)
echo "llama-3-8b (32 layers) compile: ${t8} s (median of $RUNS)"
t405=$(median_time llama-3.1-405b)
echo "llama-3.1-405b (126 layers) compile: ${t405} s (median of $RUNS)"
echo "ratio: $(awk -v a="$t405" -v b="$t8" 'BEGIN {printf "%.2f", a / b}')"
