#!/usr/bin/env python3
"""Checks the oracle itself (no compiler needed).

  check_reference.py --examples DIR --tmp DIR

For each tiny example model (and a few variants: tied embeddings, attention
and MLP biases, GQA, llama3 RoPE scaling) compares reference.py (JAX, float32)
with numpy_reference.py (plain numpy, float64, written separately):
max|jax - np64| / max|np64| must be <= 1e-5. Also checks:
  - causality / padding: the logits of a prefix equal the first rows of a
    longer sequence's logits;
  - loading: a bf16 file and a 2-shard index load to the same tensors as the
    values they were written from (bf16-rounded), and the oracle CLI runs;
  - the llama3 rope_scaling example exercises all three frequency bands.
Prints one line per check and a final 'N passed, N failed' line.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_weights  # noqa: E402
import numpy_reference  # noqa: E402
import reference  # noqa: E402

PROMPT = [17, 3, 250, 96, 41, 0, 255, 128, 7, 64, 200, 33, 90, 1, 2, 150, 151, 5, 9, 77,
          31, 62, 124, 248, 11, 22, 44, 88, 176, 99, 198, 141, 27, 54, 108, 216, 177]  # 37 ids

results = []


def check(name: str, ok: bool, detail: str = "") -> None:
    results.append(ok)
    print(f"{'PASS' if ok else 'FAIL'}: {name}{' -- ' + detail if detail else ''}", flush=True)


def rel(a, b) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", default=os.path.join(HERE, "..", "..", "examples"))
    ap.add_argument("--tmp", required=True)
    a = ap.parse_args()
    os.makedirs(a.tmp, exist_ok=True)

    models = {}
    for m in ("tiny-llama", "tiny-gpt2", "tiny-llama-gqa3"):
        models[m] = reference.load_config(os.path.join(a.examples, m))
    llama = models["tiny-llama"]
    v = copy.deepcopy(llama)
    v.update(tie_word_embeddings=True, attention_bias=True, mlp_bias=True, num_key_value_heads=1)
    models["tiny-llama(tied,biases,MQA)"] = v
    v = copy.deepcopy(llama)
    v.update(head_dim=32, hidden_act="silu")  # head_dim != hidden/heads
    models["tiny-llama(head_dim=32)"] = v

    # 1. JAX float32 vs numpy float64.
    for name, cfg in models.items():
        w = make_weights.make(cfg, seed=11)
        got = reference.forward(cfg, w, PROMPT)
        want = numpy_reference.forward(cfg, w, PROMPT)
        r = rel(got, want)
        check(f"{name}: jax f32 vs numpy f64, {len(PROMPT)} tokens",
              got.shape == want.shape and r <= 1e-5, f"max_rel={r:.2e}")

    # 2. Prefix consistency (the padding to 32-position buckets is invisible).
    for name in ("tiny-llama", "tiny-gpt2"):
        cfg = models[name]
        w = make_weights.make(cfg, seed=5)
        full = reference.forward(cfg, w, PROMPT)
        for n in (1, 13, 32, 33):
            part = reference.forward(cfg, w, PROMPT[:n])
            r = rel(part, full[:n])
            # Different padded lengths compile differently: float32 rounding
            # differs by ~1e-6; a leak through the padding would be O(1).
            check(f"{name}: logits of a {n}-token prefix = first rows of 37", r <= 1e-5, f"max_rel={r:.2e}")

    # 3. Loading bf16 and sharded files; the CLI.
    cfg_path = os.path.join(a.examples, "tiny-llama", "config.json")
    py = sys.executable
    f32 = os.path.join(a.tmp, "w.safetensors")
    bf16 = os.path.join(a.tmp, "w-bf16.safetensors")
    shards = os.path.join(a.tmp, "shards")
    for extra, out in (([], f32), (["--dtype", "bf16"], bf16), (["--shards", "2"], shards)):
        subprocess.run([py, os.path.join(HERE, "make_weights.py"), "--config", cfg_path, "--seed", "3",
                        "--out", out] + extra, check=True)
    base = make_weights.make(llama, 3)
    wf = reference.load_weights(f32)
    check("f32 file loads exactly", all(np.array_equal(wf[k], base[k]) for k in base) and set(wf) == set(base))
    import ml_dtypes
    wb = reference.load_weights(bf16)
    check("bf16 file loads as the bf16-rounded values",
          all(np.array_equal(wb[k], base[k].astype(ml_dtypes.bfloat16).astype(np.float32)) for k in base))
    index = os.path.join(shards, "model.safetensors.index.json")
    with open(index) as f:
        files = sorted(set(json.load(f)["weight_map"].values()))
    ws = reference.load_weights(index)
    check("2-shard index loads all tensors", files == ["model-00001-of-00002.safetensors",
                                                       "model-00002-of-00002.safetensors"]
          and all(np.array_equal(ws[k], base[k]) for k in base) and set(ws) == set(base))
    out = os.path.join(a.tmp, "l.npy")
    subprocess.run([py, os.path.join(HERE, "oracle.py"), "forward", "--config", cfg_path, "--weights", index,
                    "--prompt-ids", "1,2,3", "--out", out], check=True)
    l_cli = np.load(out)
    r = rel(l_cli, numpy_reference.forward(llama, base, [1, 2, 3]))
    check("oracle.py forward on the sharded checkpoint", l_cli.shape == (3, 256) and r <= 1e-5, f"max_rel={r:.2e}")

    # 4. The llama3 example exercises every band of the scaling.
    g = models["tiny-llama-gqa3"]
    rs = g["rope_scaling"]
    hd = reference.llama_head_dim(g)
    inv = 1.0 / (g["rope_theta"] ** (np.arange(0, hd, 2) / hd))
    wl = 2 * math.pi / inv
    bands = {"high (kept)": int(np.sum(wl < rs["original_max_position_embeddings"] / rs["high_freq_factor"])),
             "low (/factor)": int(np.sum(wl > rs["original_max_position_embeddings"] / rs["low_freq_factor"]))}
    bands["medium (smoothed)"] = len(wl) - sum(bands.values())
    check("tiny-llama-gqa3 rope_scaling covers all three bands", all(n > 0 for n in bands.values()),
          json.dumps(bands))
    scaled, _ = reference.rope_inv_freq(g)
    check("llama3 scaling changes the frequencies", not np.allclose(scaled, inv.astype(np.float32)))

    passed = sum(results)
    failed = len(results) - passed
    print(f"oracle self-check: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
