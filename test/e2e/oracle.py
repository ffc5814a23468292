#!/usr/bin/env python3
"""The end-to-end tests' oracle: HF reference semantics in JAX (reference.py).

  oracle.py forward  --config C --weights W --prompt-ids 1,2,3 --out L.npy
      logits of one sequence, float32 [T, vocab], saved with numpy.save
  oracle.py generate --config C --weights W --prompt-ids 1,2,3 --max-new-tokens N
      greedy decoding (argmax, full recompute every step, exactly N new
      tokens unless --stop-at-eos); prints one JSON line:
      {"tokens": [new tokens...], "prompt": [...], "min_top2_gap": g}
      where g is the smallest top-1 minus top-2 logit seen over the steps
      (how far greedy decoding is from a tie).

W is a .safetensors file, a sharded checkpoint's model.safetensors.index.json,
or a folder holding either; f32, f16 and bf16 tensors are upcast to float32.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference  # noqa: E402


def parse_ids(s: str):
    ids = [int(x) for x in s.replace(" ", "").split(",") if x != ""]
    if not ids:
        raise SystemExit("oracle: --prompt-ids is empty")
    return ids


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="HF reference oracle (JAX, CPU, float32)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("forward", "generate"):
        p = sub.add_parser(name)
        p.add_argument("--config", required=True)
        p.add_argument("--weights", required=True)
        p.add_argument("--prompt-ids", required=True)
        if name == "forward":
            p.add_argument("--out", required=True, help="logits .npy, float32 [T, vocab]")
        else:
            p.add_argument("--max-new-tokens", type=int, required=True)
            p.add_argument("--stop-at-eos", action="store_true")
    a = ap.parse_args(argv)

    cfg = reference.load_config(a.config)
    w = reference.load_weights(a.weights)
    ids = parse_ids(a.prompt_ids)
    vocab = cfg["vocab_size"]
    bad = [i for i in ids if not 0 <= i < vocab]
    if bad:
        raise SystemExit(f"oracle: prompt ids out of range [0, {vocab}): {bad}")

    if a.cmd == "forward":
        logits = reference.forward(cfg, w, ids)
        np.save(a.out, logits.astype(np.float32))
        print(f"oracle: logits {list(logits.shape)} -> {a.out}", file=sys.stderr)
        return 0

    seq = list(ids)
    new = []
    min_gap = float("inf")
    eos = cfg.get("eos_token_id")
    eos_set = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
    for _ in range(a.max_new_tokens):
        last = reference.forward(cfg, w, seq)[-1]
        top2 = np.sort(last)[-2:]
        min_gap = min(min_gap, float(top2[1] - top2[0]))
        tok = int(np.argmax(last))
        seq.append(tok)
        new.append(tok)
        if a.stop_at_eos and tok in eos_set:
            break
    print(json.dumps({"tokens": new, "prompt": ids, "min_top2_gap": min_gap}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
