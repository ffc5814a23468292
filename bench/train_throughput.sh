#!/usr/bin/env bash
# Training throughput on the CPU: tokens per second of one training step
# (grads + AdamW) of colossus against the JAX (XLA CPU) reference model of
# test/e2e/train_oracle.py, measured in the same run on the same weights and
# batches, for the tiny Llama and a medium one (bench/medium-llama.json,
# 4 layers, hidden 256). Batch 8 x 64 tokens, sequential data order.
#   bash bench/train_throughput.sh [STEPS]   (default 8; both sides: the
#   per-step times of steps 2..N, after XLA's compilation in step 1)
# Not a test: prints the figures and `ratio:` lines (colossus / JAX).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${BIN:-$REPO/build/bin}"
PY="$REPO/.venv/bin/python"
STEPS="${1:-8}"
export JAX_PLATFORMS=cpu
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$PY" "$REPO/test/e2e/make_tokens.py" --out "$tmp/tok.bin" > /dev/null

for model in "$REPO/examples/tiny-llama/config.json" "$REPO/bench/medium-llama.json"; do
  name=$(basename "$(dirname "$model")")
  [[ "$name" == bench ]] && name=medium-llama
  "$PY" "$REPO/test/e2e/make_weights.py" --config "$model" --seed 3 --out "$tmp/w.safetensors" > /dev/null
  "$BIN/colossus-compile" "$model" --step=train --batch 8 --seq 64 -o "$tmp/t.colossus"
  "$BIN/colossus-run" "$tmp/t.colossus" train --weights "$tmp/w.safetensors" \
      --data "$tmp/tok.bin" --data-order sequential --steps "$STEPS" --lr 1e-3 --warmup 0 --min-lr 1e-4 \
      --json | grep '"step"' > "$tmp/c.jsonl"
  ours=$("$PY" -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1])][1:]; print(sum(x['tokens'] for x in r)/sum(x['time_s'] for x in r))" "$tmp/c.jsonl")
  # JAX: the time of STEPS steps minus the time of 1 step (compilation).
  "$PY" "$REPO/test/e2e/train_oracle.py" train --config "$model" \
      --weights "$tmp/w.safetensors" --data "$tmp/tok.bin" --dtype uint16 \
      --batch 8 --seq 64 --steps "$STEPS" --lr 1e-3 --warmup 0 --min-lr 1e-4 \
      --json 2>/dev/null > "$tmp/j.jsonl"
  jax=$("$PY" -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1])][1:]; print(len(r)*512/sum(x['time_s'] for x in r))" "$tmp/j.jsonl")
  printf '%s: colossus %.1f tokens/s, JAX (XLA CPU) %.1f tokens/s\n' "$name" "$ours" "$jax"
  awk -v a="$ours" -v b="$jax" -v m="$name" 'BEGIN {printf "ratio: %s %.3f\n", m, a / b}'
done
