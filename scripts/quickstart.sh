#!/usr/bin/env bash
# Quick start: install, build, then compile the tiny Llama of examples/ and
# generate tokens with it on random weights, on the CPU (and on the GPU when
# `nvidia-smi -L` lists one). Everything it writes goes to build/quickstart/.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

bash "$REPO/scripts/build.sh"

BUILD_DIR="${BUILD_DIR:-$REPO/build}"
BIN="$BUILD_DIR/bin"
PY="$REPO/.venv/bin/python"
Q="$BUILD_DIR/quickstart"
MODEL="$REPO/examples/tiny-llama/config.json"
PROMPT=17,3,250,96,41
NEW=24
mkdir -p "$Q"

run() { printf '\n$ %s\n' "$*" | sed "s#$REPO/##g"; "$@"; }

echo
echo "== 1. Random weights for examples/tiny-llama (HF names, safetensors, seed 3)"
run "$PY" "$REPO/test/e2e/make_weights.py" --config "$MODEL" --seed 3 \
    --out "$Q/tiny-llama.safetensors"

echo
echo "== 2. Compile for the CPU: one artifact (kernels as a shared object + plan)"
run "$BIN/colossus-compile" "$MODEL" --target=cpu --step=forward --batch 1 --seq 64 \
    -o "$Q/tiny-llama-cpu.colossus"
printf '\n$ %s\n' "${BIN#$REPO/}/colossus-run ${Q#$REPO/}/tiny-llama-cpu.colossus info   (summarized)"
"$BIN/colossus-run" "$Q/tiny-llama-cpu.colossus" info | "$PY" -c '
import json, sys
i = json.load(sys.stdin)
print("target %s, batch %s, seq %s, %d kernels, %d launches, arena %d bytes, %d params, file %d bytes" % (
    i["target"], i["batch"], i["seq"], i["num_kernels"], sum(s["launches"] for s in i["steps"]),
    i["arena_bytes"], i["params"], i["file_bytes"]))'

echo
echo "== 3. Generate $NEW tokens greedily after the prompt $PROMPT (CPU)"
run "$BIN/colossus-run" "$Q/tiny-llama-cpu.colossus" generate \
    --weights "$Q/tiny-llama.safetensors" --prompt-ids "$PROMPT" \
    --max-new-tokens "$NEW" --temperature 0 --json

echo
echo "== 4. The same with the independent JAX reference (test/e2e/oracle.py)"
run "$PY" "$REPO/test/e2e/oracle.py" generate --config "$MODEL" \
    --weights "$Q/tiny-llama.safetensors" --prompt-ids "$PROMPT" --max-new-tokens "$NEW"

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
  echo
  echo "== 5. GPU found ($(nvidia-smi -L | head -n1)): compile for sm_90a and generate"
  run "$BIN/colossus-compile" "$MODEL" --target=sm_90a --step=forward --batch 1 --seq 64 \
      -o "$Q/tiny-llama-sm_90a.colossus"
  run "$BIN/colossus-run" "$Q/tiny-llama-sm_90a.colossus" generate \
      --weights "$Q/tiny-llama.safetensors" --prompt-ids "$PROMPT" \
      --max-new-tokens "$NEW" --temperature 0 --json
else
  echo
  echo "== 5. No GPU here (nvidia-smi -L lists none): skipping the sm_90a target"
fi

echo
echo "== 6. Train it on the CPU: compile the training step (grads + AdamW),"
echo "      train 100 steps on a small generated corpus, watch the loss fall"
run "$PY" "$REPO/test/e2e/make_tokens.py" --out "$Q/tokens.bin"
run "$BIN/colossus-compile" "$MODEL" --target=cpu --step=train --batch 8 --seq 64 \
    -o "$Q/tiny-llama-train.colossus"
rm -rf "$Q/checkpoints"
printf '\n$ %s\n' "colossus-run tiny-llama-train.colossus train --steps 100 ... (every 10th step shown)"
"$BIN/colossus-run" "$Q/tiny-llama-train.colossus" train \
    --weights "$Q/tiny-llama.safetensors" --data "$Q/tokens.bin" \
    --data-order sequential --steps 100 --lr 1e-2 --warmup 10 --min-lr 1e-3 \
    --checkpoint-dir "$Q/checkpoints" --checkpoint-every 100 --json |
  grep '"step"' | awk 'NR == 1 || NR % 10 == 0'

echo
echo "== 7. Generate from the trained weights (the checkpoint's model.safetensors)"
run "$BIN/colossus-run" "$Q/tiny-llama-cpu.colossus" generate \
    --weights "$Q/checkpoints/step-00000100/model.safetensors" --prompt-ids "$PROMPT" \
    --max-new-tokens "$NEW" --temperature 0 --json

echo
echo "Done. Outputs are in ${Q#$REPO/}/. Next: bash scripts/test.sh"
