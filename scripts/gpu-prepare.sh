#!/usr/bin/env bash
# Prepares, on a machine with the compiler (LLVM/MLIR) and no GPU, everything
# the one-call GPU check (scripts/gpu-check.sh, docs/gpu-check.md) needs on a
# GPU machine that has no LLVM: a git-ignored bundle folder (default
# build/gpu-bundle) holding
#   artifacts/  sm_90a artifacts: tiny-llama and bench/medium-llama.json,
#               forward and train step, --precision f32 and bf16; the train
#               step of bench/llama-1b.json (bf16, batch 4 x 2048,
#               --recompute=none)
#   expected/   what the same models compiled for the cpu give here, through
#               colossus-run: forward logits (.npy) of a fixed prompt, loss
#               and gradients (--grads-out) of one fixed batch
#   data/       tiny-llama's weights (test/e2e/make_weights.py, seed 3) and
#               tokens (test/e2e/make_tokens.py); medium-llama uses the
#               runtime's --init=random --seed 3 (the same values on every
#               machine): with make_weights.py's N(0, 0.3) matrices its 256-wide
#               layers are so ill-conditioned that bf16 and f32 gradients
#               differ by 83%, which would leave a bf16 check no power
#   gemm/       PTX of the sm_90a TMA + wgmma GEMM (--hopper-gemm --emit=ptx)
#               for 4096^3 and 8192^3 bf16 (scripts/gpu/gemm-bench.mlir),
#               the epilogue shapes of test/Compiler/Hopper/Inputs/gemm.mlir
#               and the variants of .../Inputs/gemm-variants.mlir and
#               .../Inputs/gemm-variants-ws.mlir (two consumer warpgroups)
#               and the KV cache writes of .../Inputs/gemm-cache.mlir
#   attention/  PTX of the sm_90a TMA + wgmma attention (--hopper-attention
#               --emit=ptx): the forward and the dK/dV and dQ backward, causal, 32
#               heads of 128, seq 4096 and 16384, and llama-1b's backward
#               (scripts/gpu/attention-bench.mlir); attention-bench-v3.ptx:
#               the backward kernels only, --hopper-attention-bwd=v3
#   include/    FlatBuffers and nlohmann-json headers and the generated
#               schema header: the runtime builds there with
#               -DCOLOSSUS_BUILD_COMPILER=OFF -DCOLOSSUS_BUNDLED_INCLUDE=...
#   bin/        colossus-run built here from those headers alone (the
#               fallback when the source build fails there; needs the glibc
#               and libstdc++ symbol versions the manifest records)
#   manifest.json  the checks to run, tolerances, sizes and sha256 of files
#
#   bash scripts/gpu-prepare.sh [BUNDLE_DIR]
#
# Needs a configured and built build folder (scripts/build.sh; BUILD_DIR
# overrides build/), the venv (.venv) and ptxas. Verifies the runtime-only
# build from the bundle's headers in $BUILD_DIR/gpu-runtime (compiler and
# tests off) and that no system FlatBuffers/nlohmann header was used. Ends
# with `scripts/gpu-check.sh --dry-run BUNDLE_DIR`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

BUILD_DIR="${BUILD_DIR:-$REPO/build}"
BUNDLE="${1:-$REPO/build/gpu-bundle}"
PY="$REPO/.venv/bin/python"
BIN="$BUILD_DIR/bin"
MAX_MIB=60

case "$BUNDLE" in
  -h|--help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "${BASH_SOURCE[0]}"; exit 0 ;;
  -*) echo "gpu-prepare.sh: unknown option $BUNDLE (usage: gpu-prepare.sh [BUNDLE_DIR])" >&2; exit 2 ;;
esac
[[ -x "$PY" ]] || { echo "gpu-prepare.sh: no $PY (run scripts/setup.sh)" >&2; exit 1; }
[[ -f "$BUILD_DIR/CMakeCache.txt" ]] || { echo "gpu-prepare.sh: $BUILD_DIR is not configured (run scripts/build.sh)" >&2; exit 1; }
# The bundle travels as a carry path: inside the repository it must be ignored.
case "$(realpath -m "$BUNDLE")/" in
  "$REPO"/*)
    git -C "$REPO" check-ignore -q "$(realpath -m "$BUNDLE")" \
      || { echo "gpu-prepare.sh: $BUNDLE is inside the repository but not git-ignored" >&2; exit 1; } ;;
esac

log "building colossus-compile and colossus-run in $BUILD_DIR"
cmake --build "$BUILD_DIR" --target colossus-compile colossus-run -j "$(colossus_jobs)" >/dev/null
CC="$BIN/colossus-compile"
RUN="$BIN/colossus-run"
command -v ptxas >/dev/null || { echo "gpu-prepare.sh: ptxas not found (CUDA toolkit)" >&2; exit 1; }

rm -rf "$BUNDLE"
mkdir -p "$BUNDLE"/{artifacts,expected,data,gemm,attention,include/colossus/schema,bin,licenses}
BUNDLE="$(cd "$BUNDLE" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# ---- headers for the runtime-only build there -------------------------------
log "headers: FlatBuffers, nlohmann-json, the generated schema header"
hdr_dir() { # the folder the compiler finds <$1> in
  printf '#include <%s>\n' "$1" | ${CXX:-c++} -std=c++17 -x c++ -M - 2>/dev/null |
    tr ' ' '\n' | awk -v h="/$1" 'substr($0, length($0) - length(h) + 1) == h && !found {found = 1; print substr($0, 1, length($0) - length(h))}'
}
fb_root="$(hdr_dir flatbuffers/flatbuffers.h)"
js_root="$(hdr_dir nlohmann/json.hpp)"
[[ -n "$fb_root" && -n "$js_root" ]] || { echo "gpu-prepare.sh: FlatBuffers or nlohmann-json headers not found" >&2; exit 1; }
cp -r "$fb_root/flatbuffers" "$BUNDLE/include/"
rm -rf "$BUNDLE/include/flatbuffers/pch"
cp -r "$js_root/nlohmann" "$BUNDLE/include/"
cp "$BUILD_DIR/include/colossus/schema/colossus_generated.h" "$BUNDLE/include/colossus/schema/"
for p in libflatbuffers-dev nlohmann-json3-dev; do
  [[ -f /usr/share/doc/$p/copyright ]] && cp "/usr/share/doc/$p/copyright" "$BUNDLE/licenses/$p.copyright"
done
fb_version="$(awk '/#define FLATBUFFERS_VERSION_(MAJOR|MINOR|REVISION) / {v[$2] = $3} END {print v["FLATBUFFERS_VERSION_MAJOR"] "." v["FLATBUFFERS_VERSION_MINOR"] "." v["FLATBUFFERS_VERSION_REVISION"]}' "$BUNDLE/include/flatbuffers/base.h")"

# ---- the runtime-only build from those headers alone --------------------------
RT="$BUILD_DIR/gpu-runtime"
log "runtime-only build from the bundle's headers in $RT (compiler and tests off)"
rm -rf "$RT"
gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
cmake "${gen[@]}" -S "$REPO" -B "$RT" -DCMAKE_BUILD_TYPE=Release \
    -DCOLOSSUS_BUILD_COMPILER=OFF -DCOLOSSUS_BUILD_TESTS=OFF \
    -DCOLOSSUS_BUNDLED_INCLUDE="$BUNDLE/include" >"$tmp/rt-cfg.log" 2>&1 \
  || { cat "$tmp/rt-cfg.log" >&2; exit 1; }
cmake --build "$RT" --target colossus-run -j "$(colossus_jobs)" >"$tmp/rt-build.log" 2>&1 \
  || { cat "$tmp/rt-build.log" >&2; exit 1; }
# Every FlatBuffers / nlohmann header the build read came from the bundle.
if [[ -f "$RT/build.ninja" ]]; then
  ninja -C "$RT" -t deps >"$tmp/deps"
  if grep -E '^ +/usr/(local/)?include/(flatbuffers|nlohmann)/' "$tmp/deps" >"$tmp/leak"; then
    echo "gpu-prepare.sh: the runtime-only build read system headers:" >&2; head "$tmp/leak" >&2; exit 1
  fi
  grep -q 'include/flatbuffers/flatbuffers.h$' "$tmp/deps" && grep -q 'include/nlohmann/json.hpp$' "$tmp/deps" \
    || { echo "gpu-prepare.sh: ninja's deps do not show the bundle's headers" >&2; exit 1; }
fi
cp "$RT/bin/colossus-run" "$BUNDLE/bin/colossus-run"
strip "$BUNDLE/bin/colossus-run" 2>/dev/null || true
# What the fallback binary needs of the GPU machine's C and C++ libraries.
glibc_req="$(objdump -T "$BUNDLE/bin/colossus-run" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)"
glibcxx_req="$(objdump -T "$BUNDLE/bin/colossus-run" | grep -o 'GLIBCXX_[0-9.]*' | sed 's/GLIBCXX_//' | sort -uV | tail -1)"
"$BUNDLE/bin/colossus-run" --help >/dev/null

# ---- data ---------------------------------------------------------------------
log "data: tokens and weights"
"$PY" "$REPO/test/e2e/make_tokens.py" --out "$BUNDLE/data/tokens.bin" >/dev/null
"$PY" "$REPO/test/e2e/make_weights.py" --config "$REPO/examples/tiny-llama/config.json" --seed 3 \
    --out "$BUNDLE/data/tiny-llama.safetensors" >/dev/null 2>&1
# name:config:train batch:train seq:precisions checked on the GPU.
# small-llama-hd64 (head_dim 64, seq 256) is there so that
# --hopper-attention takes its attention (below); its f32 results are only
# the basis of the bf16 tolerance and stay out of the bundle (size).
MODELS=(tiny-llama:examples/tiny-llama/config.json:8:64:f32,bf16
        medium-llama:bench/medium-llama.json:8:64:f32,bf16
        small-llama-hd64:bench/small-llama-hd64.json:2:256:bf16)
weights_of() { # the colossus-run flags giving model $1 its parameters
  case "$1" in
    tiny-llama) echo "--weights $BUNDLE/data/tiny-llama.safetensors" ;;
    *) echo "--init=random --seed 3" ;;
  esac
}

# ---- artifacts and the cpu's results --------------------------------------------
PROMPT=17,3,250,96,41,7,128,64,200,33,5,99,180,2,77,150,11,240,61,19,88,130,45,222
FWD_SEQ=64; TRAIN_BATCH=8; TRAIN_SEQ=64
mkdir -p "$tmp/expected"
for m in "${MODELS[@]}"; do
  IFS=: read -r name cfg tb ts checked <<<"$m"; cfg="$REPO/$cfg"
  fseq=$(( ts > FWD_SEQ ? ts : FWD_SEQ ))
  for prec in f32 bf16; do
    targets=cpu; exp="$tmp/expected"
    [[ ",$checked," == *",$prec,"* ]] && { targets="cpu sm_90a"; exp="$BUNDLE/expected"; }
    log "$name $prec: compile (${targets// /, }) and run on the cpu"
    for target in $targets; do
      "$CC" "$cfg" --target=$target --precision=$prec --step=forward --batch 1 --seq $fseq \
          -o "$tmp/$name-$prec-forward.$target.colossus"
      "$CC" "$cfg" --target=$target --precision=$prec --step=train --batch $tb --seq $ts \
          -o "$tmp/$name-$prec-train.$target.colossus"
    done
    [[ "$targets" == *sm_90a* ]] && cp "$tmp/$name-$prec-forward.sm_90a.colossus" \
        "$tmp/$name-$prec-train.sm_90a.colossus" "$BUNDLE/artifacts/"
    # shellcheck disable=SC2046
    "$RUN" "$tmp/$name-$prec-forward.cpu.colossus" forward $(weights_of "$name") \
        --prompt-ids "$PROMPT" --logits-out "$exp/$name-$prec-forward.logits.npy" >/dev/null
    # shellcheck disable=SC2046
    "$RUN" "$tmp/$name-$prec-train.cpu.colossus" grads $(weights_of "$name") \
        --data "$BUNDLE/data/tokens.bin" --data-order sequential \
        --grads-out "$exp/$name-$prec-grads.safetensors" --json \
        >"$exp/$name-$prec-grads.json"
  done
done

# The medium model's forward with the TMA + wgmma GEMM kernels
# (--hopper-gemm: every projection is tile-aligned), against the same cpu
# bf16 logits as its SIMT artifact.
log "medium-llama bf16 forward with --hopper-gemm (sm_90a)"
"$CC" "$REPO/bench/medium-llama.json" --target=sm_90a --precision=bf16 --hopper-gemm --step=forward \
    --batch 1 --seq $FWD_SEQ -o "$BUNDLE/artifacts/medium-llama-bf16-forward-hopper.sm_90a.colossus"
# (info into a file first: `grep -q` leaving early would SIGPIPE the writer
# and, with pipefail, fail the pipeline.)
"$RUN" "$BUNDLE/artifacts/medium-llama-bf16-forward-hopper.sm_90a.colossus" info >"$tmp/hopper-forward.info.json"
grep -q '"tensor_maps"' "$tmp/hopper-forward.info.json" || { echo "gpu-prepare.sh: the --hopper-gemm artifact has no TMA GEMM kernel" >&2; exit 1; }
# Its train step with --hopper-gemm: the backward data GEMMs (N-contiguous B),
# the summed q/k/v input gradient and the weight gradients (token-major
# operands) as TMA + wgmma kernels too, against the cpu's bf16 gradients.
log "medium-llama bf16 train step with --hopper-gemm (sm_90a)"
"$CC" "$REPO/bench/medium-llama.json" --target=sm_90a --precision=bf16 --hopper-gemm --step=train \
    --batch $TRAIN_BATCH --seq $TRAIN_SEQ -o "$BUNDLE/artifacts/medium-llama-bf16-train-hopper.sm_90a.colossus"
"$RUN" "$BUNDLE/artifacts/medium-llama-bf16-train-hopper.sm_90a.colossus" info \
    | "$PY" -c 'import json, sys; sys.exit(not any(k["kind"] == "reduce" and "tensor_maps" in k for k in json.load(sys.stdin)["kernels"]))' \
    || { echo "gpu-prepare.sh: the --hopper-gemm train artifact has no weight gradient kernel" >&2; exit 1; }

# The head_dim-64 model with the TMA + wgmma GEMM and attention kernels
# (--hopper-attention needs head_dim 64 or 128 and a seq of whole 128-row
# tiles): forward (a 24-token prompt in a 256-token artifact: a partial
# tile) and grads (batch 2 x 256), against its cpu bf16 results.
log "small-llama-hd64 bf16 forward and train step with --hopper-gemm --hopper-attention (sm_90a)"
"$CC" "$REPO/bench/small-llama-hd64.json" --target=sm_90a --precision=bf16 --hopper-gemm --hopper-attention \
    --step=forward --batch 1 --seq 256 -o "$BUNDLE/artifacts/small-llama-hd64-bf16-forward-hopper.sm_90a.colossus"
"$CC" "$REPO/bench/small-llama-hd64.json" --target=sm_90a --precision=bf16 --hopper-gemm --hopper-attention \
    --step=train --batch 2 --seq 256 -o "$BUNDLE/artifacts/small-llama-hd64-bf16-train-hopper.sm_90a.colossus"
for st in forward train; do
  "$RUN" "$BUNDLE/artifacts/small-llama-hd64-bf16-$st-hopper.sm_90a.colossus" info \
      | "$PY" -c 'import json, sys; sys.exit(not any(k["kind"].startswith("attention") and "tensor_maps" in k for k in json.load(sys.stdin)["kernels"]))' \
      || { echo "gpu-prepare.sh: the --hopper-attention $st artifact has no TMA attention kernel" >&2; exit 1; }
done

# (The SIMT-only llama-1b artifact, 59 s a step on an H200 on 2026-11-28,
# docs/performance.md, no longer travels: the size of the bundle.)
# The MFU entry: batch 4 x 2048 with every activation kept (--recompute=none:
# a recomputed forward costs a third more FLOPs that MFU does not count; the
# arena is 16 GB). At batch 1 x 2048 the step's memory-bound part (AdamW and
# the gradient norm over 1.24e9 parameters, ~9 ms at the roofline) is a
# quarter of the roofline time, so even the roofline would stay near 50%
# (colossus-compile --report: 30.8 ms against 6 N T / 989e12 = 15.4 ms).
log "llama-1b (bench/llama-1b.json): train step, bf16, batch 4 x 2048, --recompute=none, sm_90a, --hopper-gemm --hopper-attention"
"$CC" "$REPO/bench/llama-1b.json" --target=sm_90a --precision=bf16 --step=train --batch 4 --seq 2048 \
    --recompute=none --hopper-gemm --hopper-attention -o "$BUNDLE/artifacts/llama-1b-bf16-train-hopper.sm_90a.colossus"
# The same with the v3 attention backward schedule (--hopper-attention-bwd=v3,
# docs/hopper-attention.md; its kernels' numerics are step (d)'s v3 rows).
"$CC" "$REPO/bench/llama-1b.json" --target=sm_90a --precision=bf16 --step=train --batch 4 --seq 2048 \
    --recompute=none --hopper-gemm --hopper-attention --hopper-attention-bwd=v3 \
    -o "$BUNDLE/artifacts/llama-1b-bf16-train-hopper-v3.sm_90a.colossus"

# Parameter counts for the MFU (all parameters, embeddings included).
params_of() { "$RUN" "$1" info | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["param_elements"])'; }
p_medium="$(params_of "$BUNDLE/artifacts/medium-llama-bf16-train.sm_90a.colossus")"
p_1b="$(params_of "$BUNDLE/artifacts/llama-1b-bf16-train-hopper.sm_90a.colossus")"

# ---- op-level numerics: the PTX of test/ops' one-op graphs ---------------------
# test/ops/check_training_ops.py and check_bf16_ops.py run their kernels
# on the cpu in the test suite; with COLOSSUS_OPCHECK_BACKEND=ptx-prepare
# they compile the same graphs for sm_90a into opcheck/ (gzip'ed PTX named
# by the graph's hash), which the GPU check runs with the cuda backend
# against the same references (jax.vjp, float64 numpy) on fresh inputs.
log "op-level numerics: sm_90a PTX of the test/ops graphs"
for script in check_training_ops.py check_bf16_ops.py; do
  COLOSSUS_OPCHECK_BACKEND=ptx-prepare COLOSSUS_OPCHECK_DIR="$BUNDLE/opcheck" COLOSSUS_COMPILE="$CC" \
      "$PY" "$REPO/test/ops/$script" >"$tmp/opcheck-$script.log" 2>&1 \
    || { cat "$tmp/opcheck-$script.log" >&2; echo "gpu-prepare.sh: test/ops/$script (ptx-prepare) failed" >&2; exit 1; }
done
n_train_ops="$("$PY" -c 'import sys; print(sys.argv[1].split(" checks")[0].split()[-1])' "$(tail -1 "$tmp/opcheck-check_training_ops.py.log")")"
n_bf16_ops="$("$PY" -c 'import sys; print(sys.argv[1].split(" checks")[0].split()[-1])' "$(tail -1 "$tmp/opcheck-check_bf16_ops.py.log")")"

# ---- Hopper GEMM PTX ------------------------------------------------------------
log "Hopper GEMM PTX (--hopper-gemm --emit=ptx)"
"$CC" "$REPO/scripts/gpu/gemm-bench.mlir" --target=sm_90a --hopper-gemm --emit=ptx -o "$BUNDLE/gemm/gemm-bench.ptx"
"$CC" "$REPO/test/Compiler/Hopper/Inputs/gemm.mlir" --target=sm_90a --hopper-gemm --emit=ptx -o "$BUNDLE/gemm/gemm-epilogues.ptx"
for k in gemm_4096_0_gemm gemm_8192_0_gemm; do
  grep -q "^// ----- kernel $k " "$BUNDLE/gemm/gemm-bench.ptx" || { echo "gpu-prepare.sh: no kernel $k in gemm-bench.ptx" >&2; exit 1; }
done
for k in bias_res_0_gemm small_0_gemm; do
  grep -q "^// ----- kernel $k " "$BUNDLE/gemm/gemm-epilogues.ptx" || { echo "gpu-prepare.sh: no kernel $k in gemm-epilogues.ptx" >&2; exit 1; }
done
# The variants (docs/hopper-gemm.md "Variants"): N-contiguous B, summed
# products, weight gradients, the dual GEMM and the fused epilogues.
"$CC" "$REPO/test/Compiler/Hopper/Inputs/gemm-variants.mlir" --target=sm_90a --hopper-gemm --emit=ptx -o "$BUNDLE/gemm/gemm-variants.ptx"
for k in dgrad_0_gemm dgrad_sum_0_gemm dgrad_qkv_0_gemm wgrad_0_reduce wgrad_kn_0_reduce bias_gelu_0_gemm \
         gelu_erf_0_gemm swiglu_0_gemm swiglu_grad_0_gemm; do
  grep -q "^// ----- kernel $k " "$BUNDLE/gemm/gemm-variants.ptx" || { echo "gpu-prepare.sh: no kernel $k in gemm-variants.ptx" >&2; exit 1; }
done
# The dual GEMM and a weight gradient on two consumer warpgroups.
"$CC" "$REPO/test/Compiler/Hopper/Inputs/gemm-variants-ws.mlir" --target=sm_90a --hopper-gemm --emit=ptx -o "$BUNDLE/gemm/gemm-variants-ws.ptx"
for k in swiglu_ws_0_gemm wgrad_ws_0_reduce; do
  grep -q "^// ----- kernel $k " "$BUNDLE/gemm/gemm-variants-ws.ptx" || { echo "gpu-prepare.sh: no kernel $k in gemm-variants-ws.ptx" >&2; exit 1; }
done
# Projections whose rows go into a KV cache (cache_write at positions).
"$CC" "$REPO/test/Compiler/Hopper/Inputs/gemm-cache.mlir" --target=sm_90a --hopper-gemm --emit=ptx -o "$BUNDLE/gemm/gemm-cache.ptx"
for k in kv_cache_0_gemm kv_cache_bias_0_gemm kv_llama_0_gemm; do
  grep -q "^// ----- kernel $k " "$BUNDLE/gemm/gemm-cache.ptx" || { echo "gpu-prepare.sh: no kernel $k in gemm-cache.ptx" >&2; exit 1; }
  grep -A1 "^// ----- kernel $k " "$BUNDLE/gemm/gemm-cache.ptx" | grep -q " cache=" || { echo "gpu-prepare.sh: kernel $k writes no cache" >&2; exit 1; }
done

# ---- Hopper attention PTX -------------------------------------------------------
log "Hopper attention PTX (--hopper-attention --emit=ptx)"
"$CC" "$REPO/scripts/gpu/attention-bench.mlir" --target=sm_90a --hopper-attention --emit=ptx \
    -o "$BUNDLE/attention/attention-bench.ptx"
for k in attn_4096_0_attention attn_16384_0_attention attn_bwd_4096_0_attention_grad attn_bwd_4096_1_attention_grad attn_bwd_16384_0_attention_grad attn_bwd_16384_1_attention_grad \
         attn_bwd_llama1b_0_attention_grad attn_bwd_llama1b_1_attention_grad; do
  grep -q "^// ----- kernel $k " "$BUNDLE/attention/attention-bench.ptx" || { echo "gpu-prepare.sh: no kernel $k in attention-bench.ptx" >&2; exit 1; }
done
# The v3 backward schedule (--hopper-attention-bwd=v3, never run on a GPU
# before this check): only its backward kernels are kept (the forward is
# the default's; bundle size).
"$CC" "$REPO/scripts/gpu/attention-bench.mlir" --target=sm_90a --hopper-attention --hopper-attention-bwd=v3 --emit=ptx \
    -o "$tmp/attention-bench-v3.all.ptx"
awk '/^\/\/ ----- kernel / {keep = ($4 ~ /_attention_grad$/)} keep' "$tmp/attention-bench-v3.all.ptx" \
    >"$BUNDLE/attention/attention-bench-v3.ptx"
for k in attn_bwd_4096_0_attention_grad attn_bwd_4096_1_attention_grad attn_bwd_16384_0_attention_grad attn_bwd_16384_1_attention_grad \
         attn_bwd_llama1b_0_attention_grad attn_bwd_llama1b_1_attention_grad; do
  grep -A1 "^// ----- kernel $k " "$BUNDLE/attention/attention-bench-v3.ptx" | grep -q " sched=v3" \
    || { echo "gpu-prepare.sh: no v3 kernel $k in attention-bench-v3.ptx" >&2; exit 1; }
done
if grep -q "^// ----- kernel attn_[0-9]*_0_attention " "$BUNDLE/attention/attention-bench-v3.ptx"; then
  echo "gpu-prepare.sh: attention-bench-v3.ptx holds a forward kernel" >&2; exit 1
fi

# ---- manifest -------------------------------------------------------------------
log "manifest"
commit="$(git -C "$REPO" rev-parse HEAD)"
dirty=false; [[ -n "$(git -C "$REPO" status --porcelain --untracked-files=no)" ]] && dirty=true
schema_sha="$(sha256sum "$REPO/runtime/schema/colossus.fbs" | awk '{print $1}')"
"$PY" - "$BUNDLE" <<PYEOF
import json, os, sys
sys.path.insert(0, "$REPO/scripts/gpu")
import gpu_check  # the comparisons the check itself uses
bundle = sys.argv[1]
E = lambda rel: os.path.join(bundle, rel)
# Tolerances: norm-wise relative error ||gpu - cpu|| / ||cpu||. f32: fixed.
# bf16: the cpu's bf16 and f32 results differ by d (rounding noise alone);
# the GPU's bf16 run rounds at the same points but sums in another order, so
# it may sit up to about d from the cpu's bf16 result: tol = max(floor, 2 d).
# A wrong kernel is off by O(1).
numerics = []
shapes = {"tiny-llama": (8, 64, ("f32", "bf16")), "medium-llama": (8, 64, ("f32", "bf16")),
          "small-llama-hd64": (2, 256, ("bf16",))}
for name, (tb, ts, checked) in shapes.items():
    # Results of a precision not checked on the GPU: in the temporary
    # folder of the prepare step (the basis of the tolerance only).
    def E(rel, name=name):
        alt = os.path.join("$tmp", rel)
        return alt if rel.startswith(f"expected/{name}-f32") and "f32" not in checked else os.path.join(bundle, rel)
    params = ({"weights": f"data/{name}.safetensors"} if name == "tiny-llama"
              else {"init": "random", "seed": 3})
    d_logits = gpu_check.compare_logits(E(f"expected/{name}-bf16-forward.logits.npy"),
                                        E(f"expected/{name}-f32-forward.logits.npy"))["rel_error"]
    d_grads = gpu_check.compare_grads(E(f"expected/{name}-bf16-grads.safetensors"),
                                      E(f"expected/{name}-f32-grads.safetensors"))
    l16 = json.load(open(E(f"expected/{name}-bf16-grads.json")))["loss"]
    l32 = json.load(open(E(f"expected/{name}-f32-grads.json")))["loss"]
    d_loss = abs(l16 - l32) / abs(l32)
    tol = {
        "f32": {"logits": 1e-4, "grads": 1e-3, "loss": 1e-4, "basis": "fixed"},
        "bf16": {"logits": max(1e-2, 2 * d_logits),
                 "grads": max(2e-2, 2 * d_grads["worst_tensor_rel_error"]),
                 "loss": max(1e-3, 2 * d_loss),
                 "basis": f"max(floor, 2 x the cpu's bf16-vs-f32 distance: logits {d_logits:.3g}, "
                          f"worst gradient {d_grads['worst_tensor_rel_error']:.3g}, loss {d_loss:.3g})"},
    }
    for prec in checked:
        numerics.append({
            "name": f"{name} {prec} forward logits", "kind": "forward", "precision": prec, **params,
            "artifact": f"artifacts/{name}-{prec}-forward.sm_90a.colossus",
            "prompt_ids": "$PROMPT",
            "expected": f"expected/{name}-{prec}-forward.logits.npy",
            "tol": tol[prec]["logits"], "tol_basis": tol[prec]["basis"]})
        numerics.append({
            "name": f"{name} {prec} grads (batch {tb} x {ts})", "kind": "grads", "precision": prec,
            **params, "artifact": f"artifacts/{name}-{prec}-train.sm_90a.colossus", "data": "data/tokens.bin",
            "expected": f"expected/{name}-{prec}-grads.safetensors",
            "expected_json": f"expected/{name}-{prec}-grads.json",
            "tol": tol[prec]["grads"], "tol_loss": tol[prec]["loss"], "tol_basis": tol[prec]["basis"]})
# The TMA + wgmma GEMM inside a model (tested against a fake driver only
# until this check runs): the medium model's bf16 forward, same tolerance.
hop = dict(next(n for n in numerics if n["name"] == "medium-llama bf16 forward logits"))
hop["name"] = "medium-llama bf16 forward logits (--hopper-gemm)"
hop["artifact"] = "artifacts/medium-llama-bf16-forward-hopper.sm_90a.colossus"
numerics.append(hop)
hopg = dict(next(n for n in numerics if n["name"] == "medium-llama bf16 grads (batch $TRAIN_BATCH x $TRAIN_SEQ)"))
hopg["name"] += " (--hopper-gemm)"
hopg["artifact"] = "artifacts/medium-llama-bf16-train-hopper.sm_90a.colossus"
numerics.append(hopg)
for kind, base in (("forward", "small-llama-hd64 bf16 forward logits"),
                   ("train", "small-llama-hd64 bf16 grads (batch 2 x 256)")):
    h = dict(next(n for n in numerics if n["name"] == base))
    h["name"] += " (--hopper-gemm --hopper-attention)"
    h["artifact"] = f"artifacts/small-llama-hd64-bf16-{kind}-hopper.sm_90a.colossus"
    numerics.append(h)
manifest = {
    "bundle_version": 1,
    "git_commit": "$commit",
    "git_dirty": $( $dirty && echo True || echo False ),
    "schema_sha256": "$schema_sha",
    "flatbuffers_version": "$fb_version",
    "runtime_binary": {"path": "bin/colossus-run", "glibc_min": "$glibc_req",
                       "glibcxx_min": "$glibcxx_req"},
    "numerics": numerics,
    "opcheck": [
        {"name": "op-level training kernels vs jax.vjp (test/ops/check_training_ops.py)",
         "script": "test/ops/check_training_ops.py", "checks": $n_train_ops},
        {"name": "op-level bf16 forward kernels vs float64 numpy (test/ops/check_bf16_ops.py)",
         "script": "test/ops/check_bf16_ops.py", "checks": $n_bf16_ops},
    ],
    "gemm": [
        {"name": "bf16 GEMM 4096^3", "ptx": "gemm/gemm-bench.ptx", "kernel": "gemm_4096_0_gemm",
         "m": 4096, "n": 4096, "k": 4096, "repeats": 50, "peer": True},
        {"name": "bf16 GEMM 8192^3", "ptx": "gemm/gemm-bench.ptx", "kernel": "gemm_8192_0_gemm",
         "m": 8192, "n": 8192, "k": 8192, "repeats": 30, "peer": True},
        {"name": "bf16 GEMM 1024x768x512 +bias +residual, 1000 rows", "ptx": "gemm/gemm-epilogues.ptx",
         "kernel": "bias_res_0_gemm", "m": 1024, "n": 768, "k": 512, "rows": 1000, "repeats": 5, "peer": False},
        {"name": "bf16 GEMM 256x256x192", "ptx": "gemm/gemm-epilogues.ptx", "kernel": "small_0_gemm",
         "m": 256, "n": 256, "k": 192, "repeats": 5, "peer": False},
        # Variants (never run on a GPU before this check): layouts, summed
        # products, weight gradients (rows: active token rows of K, the
        # rest NaN), the dual GEMM, fused epilogues.
        {"name": "bf16 dX = dY W 2048x2048x512 (N-contiguous B, 128x256)", "ptx": "gemm/gemm-variants.ptx",
         "kernel": "dgrad_0_gemm", "m": 2048, "n": 2048, "k": 512, "repeats": 5, "peer": False},
        {"name": "bf16 dX = dgate Wg + dup Wu 512x256x(1024+1024)", "ptx": "gemm/gemm-variants.ptx",
         "kernel": "dgrad_sum_0_gemm", "m": 512, "n": 256, "k": 2048, "rows": 500, "repeats": 5, "peer": False},
        {"name": "bf16 dX = dq Wq + dk Wk + dv Wv 512x256x(256+128+128)", "ptx": "gemm/gemm-variants.ptx",
         "kernel": "dgrad_qkv_0_gemm", "m": 512, "n": 256, "k": 512, "repeats": 5, "peer": False},
        {"name": "dW = dY^T X 768x256 over 1000 of 1024 tokens (f32, accumulated)", "ptx": "gemm/gemm-variants.ptx",
         "kernel": "wgrad_0_reduce", "m": 768, "n": 256, "k": 1024, "rows": 1000, "repeats": 5, "peer": False},
        {"name": "dW = X^T dY 128x256 over 512 tokens (f32)", "ptx": "gemm/gemm-variants.ptx",
         "kernel": "wgrad_kn_0_reduce", "m": 128, "n": 256, "k": 512, "repeats": 5, "peer": False},
        {"name": "bf16 x W + b, gelu (tanh), 512x1024x256, 2 outputs", "ptx": "gemm/gemm-variants.ptx",
         "kernel": "bias_gelu_0_gemm", "m": 512, "n": 1024, "k": 256, "rows": 480, "repeats": 5, "peer": False},
        {"name": "bf16 gelu (erf) 512x1024x256", "ptx": "gemm/gemm-variants.ptx",
         "kernel": "gelu_erf_0_gemm", "m": 512, "n": 1024, "k": 256, "repeats": 5, "peer": False},
        {"name": "bf16 dual GEMM gate/up + swiglu 512x1024x256, 3 outputs", "ptx": "gemm/gemm-variants.ptx",
         "kernel": "swiglu_0_gemm", "m": 512, "n": 1024, "k": 256, "repeats": 5, "peer": False},
        {"name": "bf16 dY Wd + swiglu_grad 512x1024x256, 2 outputs", "ptx": "gemm/gemm-variants.ptx",
         "kernel": "swiglu_grad_0_gemm", "m": 512, "n": 1024, "k": 256, "repeats": 5, "peer": False},
        {"name": "bf16 dual GEMM gate/up + swiglu 4096x4096x1024 (two consumers)", "ptx": "gemm/gemm-variants-ws.ptx",
         "kernel": "swiglu_ws_0_gemm", "m": 4096, "n": 4096, "k": 1024, "repeats": 5, "peer": False},
        {"name": "dW = dY^T X 4096x4096 over 1000 of 1024 tokens (f32, accumulated, two consumers)", "ptx": "gemm/gemm-variants-ws.ptx",
         "kernel": "wgrad_ws_0_reduce", "m": 4096, "n": 4096, "k": 1024, "rows": 1000, "repeats": 5, "peer": False},
        # KV cache writes: row r at cache[r / nt, pos0 + r % nt]; nb = rows / nt.
        {"name": "bf16 x W -> KV cache [2, 1024, 256], 2 x 500 tokens from position 300", "ptx": "gemm/gemm-cache.ptx",
         "kernel": "kv_cache_0_gemm", "m": 1024, "n": 256, "k": 512, "rows": 1000, "nt": 500, "pos0": 300,
         "repeats": 5, "peer": False},
        {"name": "bf16 x W + b -> rows and KV cache [4, 256, 128], 4 x 120 tokens from position 100", "ptx": "gemm/gemm-cache.ptx",
         "kernel": "kv_cache_bias_0_gemm", "m": 512, "n": 128, "k": 256, "rows": 480, "nt": 120, "pos0": 100,
         "repeats": 5, "peer": False},
        {"name": "bf16 llama-1b v projection -> KV cache 2048x512x2048", "ptx": "gemm/gemm-cache.ptx",
         "kernel": "kv_llama_0_gemm", "m": 2048, "n": 512, "k": 2048, "rows": 2048, "nt": 2048, "pos0": 0,
         "repeats": 20, "peer": False},
        {"name": "bf16 llama-1b v projection -> KV cache, decode: 1 token at position 1500", "ptx": "gemm/gemm-cache.ptx",
         "kernel": "kv_llama_0_gemm", "m": 2048, "n": 512, "k": 2048, "rows": 1, "nt": 1, "pos0": 1500,
         "repeats": 5, "peer": False},
    ],
    "attention": {"batch": 1, "heads": 32, "head_dim": 128, "seqs": [4096, 16384], "causal": True,
                  "colossus": "forward and backward (dK/dV, dQ) by scripts/gpu/hopper_attention_check.cu",
                  "kernels": [
                      {"name": "bf16 attention fwd causal S=4096 D=128", "seq": 4096,
                       "ptx": "attention/attention-bench.ptx", "kernel": "attn_4096_0_attention",
                       "repeats": 20},
                      {"name": "bf16 attention fwd causal S=16384 D=128", "seq": 16384,
                       "ptx": "attention/attention-bench.ptx", "kernel": "attn_16384_0_attention",
                       "repeats": 10},
                      {"name": "bf16 attention bwd dK/dV causal S=4096 D=128", "seq": 4096,
                       "ptx": "attention/attention-bench.ptx", "kernel": "attn_bwd_4096_1_attention_grad",
                       "repeats": 20, "backward": "dkdv"},
                      {"name": "bf16 attention bwd dQ causal S=4096 D=128", "seq": 4096,
                       "ptx": "attention/attention-bench.ptx", "kernel": "attn_bwd_4096_0_attention_grad",
                       "repeats": 20, "backward": "dq"},
                      {"name": "bf16 attention bwd dK/dV causal S=16384 D=128", "seq": 16384,
                       "ptx": "attention/attention-bench.ptx", "kernel": "attn_bwd_16384_1_attention_grad",
                       "repeats": 10, "backward": "dkdv"},
                      {"name": "bf16 attention bwd dQ causal S=16384 D=128", "seq": 16384,
                       "ptx": "attention/attention-bench.ptx", "kernel": "attn_bwd_16384_0_attention_grad",
                       "repeats": 10, "backward": "dq"},
                      # The v3 backward schedule (its own fwd+bwd row).
                      {"name": "bf16 attention bwd dK/dV v3 causal S=4096 D=128", "seq": 4096,
                       "ptx": "attention/attention-bench-v3.ptx", "kernel": "attn_bwd_4096_1_attention_grad",
                       "repeats": 20, "backward": "dkdv", "variant": "v3"},
                      {"name": "bf16 attention bwd dQ v3 causal S=4096 D=128", "seq": 4096,
                       "ptx": "attention/attention-bench-v3.ptx", "kernel": "attn_bwd_4096_0_attention_grad",
                       "repeats": 20, "backward": "dq", "variant": "v3"},
                      {"name": "bf16 attention bwd dK/dV v3 causal S=16384 D=128", "seq": 16384,
                       "ptx": "attention/attention-bench-v3.ptx", "kernel": "attn_bwd_16384_1_attention_grad",
                       "repeats": 10, "backward": "dkdv", "variant": "v3"},
                      {"name": "bf16 attention bwd dQ v3 causal S=16384 D=128", "seq": 16384,
                       "ptx": "attention/attention-bench-v3.ptx", "kernel": "attn_bwd_16384_0_attention_grad",
                       "repeats": 10, "backward": "dq", "variant": "v3"},
                      # llama-1b's attention backward (head_dim 64, GQA 32/8,
                      # S=2048), both schedules (a v2 / v3 row; no SDPA peer).
                      {"name": "bf16 attention bwd dK/dV llama-1b causal S=2048 D=64 GQA 32/8", "seq": 2048,
                       "ptx": "attention/attention-bench.ptx", "kernel": "attn_bwd_llama1b_1_attention_grad",
                       "repeats": 20, "backward": "dkdv", "shape": "llama-1b S=2048 D=64 GQA 32/8"},
                      {"name": "bf16 attention bwd dQ llama-1b causal S=2048 D=64 GQA 32/8", "seq": 2048,
                       "ptx": "attention/attention-bench.ptx", "kernel": "attn_bwd_llama1b_0_attention_grad",
                       "repeats": 20, "backward": "dq", "shape": "llama-1b S=2048 D=64 GQA 32/8"},
                      {"name": "bf16 attention bwd dK/dV v3 llama-1b causal S=2048 D=64 GQA 32/8", "seq": 2048,
                       "ptx": "attention/attention-bench-v3.ptx", "kernel": "attn_bwd_llama1b_1_attention_grad",
                       "repeats": 20, "backward": "dkdv", "variant": "v3", "shape": "llama-1b S=2048 D=64 GQA 32/8"},
                      {"name": "bf16 attention bwd dQ v3 llama-1b causal S=2048 D=64 GQA 32/8", "seq": 2048,
                       "ptx": "attention/attention-bench-v3.ptx", "kernel": "attn_bwd_llama1b_0_attention_grad",
                       "repeats": 20, "backward": "dq", "variant": "v3", "shape": "llama-1b S=2048 D=64 GQA 32/8"},
                  ]},
    "train": [
        {"name": "medium-llama bf16 train step (batch $TRAIN_BATCH x $TRAIN_SEQ)",
         "artifact": "artifacts/medium-llama-bf16-train.sm_90a.colossus",
         "init": "random", "seed": 3, "data": "data/tokens.bin",
         "steps": 10, "param_elements": $p_medium, "timeout_s": 90},
        {"name": "medium-llama bf16 train step (batch $TRAIN_BATCH x $TRAIN_SEQ, --hopper-gemm)",
         "artifact": "artifacts/medium-llama-bf16-train-hopper.sm_90a.colossus",
         "init": "random", "seed": 3, "data": "data/tokens.bin",
         "steps": 10, "param_elements": $p_medium, "timeout_s": 90, "profile_steps": 2},
        {"name": "llama-1b bf16 train step (batch 4 x 2048, --recompute=none, --hopper-gemm --hopper-attention)",
         "artifact": "artifacts/llama-1b-bf16-train-hopper.sm_90a.colossus",
         "init": "random", "data": "data/tokens.bin",
         "steps": 6, "param_elements": $p_1b, "timeout_s": 150, "profile_steps": 1},
        {"name": "llama-1b bf16 train step (batch 4 x 2048, --recompute=none, --hopper-gemm --hopper-attention --hopper-attention-bwd=v3)",
         "artifact": "artifacts/llama-1b-bf16-train-hopper-v3.sm_90a.colossus",
         "init": "random", "data": "data/tokens.bin",
         "steps": 6, "param_elements": $p_1b, "timeout_s": 150},
    ],
}
json.dump(manifest, open(E("manifest.json"), "w"), indent=1)
PYEOF
"$PY" "$REPO/scripts/gpu/gpu_check.py" seal "$BUNDLE"

mib="$(du -sm "$BUNDLE" | awk '{print $1}')"
log "bundle $BUNDLE: ${mib} MiB"
if (( mib > MAX_MIB )); then
  echo "gpu-prepare.sh: the bundle is ${mib} MiB, over the ${MAX_MIB} MiB it may take" >&2
  exit 1
fi
bash "$REPO/scripts/gpu-check.sh" --dry-run "$BUNDLE"
