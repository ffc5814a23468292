#!/usr/bin/env python3
"""Random weights with exactly the Hugging Face tensor names and shapes.

  make_weights.py --config C --seed S --out W.safetensors [--dtype f32|f16|bf16] [--shards N]

With --shards N > 1 the checkpoint is split like HF's: files
model-0000k-of-0000N.safetensors plus model.safetensors.index.json
({"metadata": {"total_size": ...}, "weight_map": {name: file}}). --out then
names the index file (a path ending in .json) or a folder that receives it.

The init (see docs/testing.md) is chosen so that logits are well separated:
greedy generation must never hinge on a near-tie between the two best tokens.
  - token embeddings (embed_tokens, wte):  N(0, 0.5)
  - position embeddings (wpe):             N(0, 0.3)
  - every other matrix:                    N(0, 0.3)   (hidden 48..64: fan-in gain 2.1-2.4)
  - norm weights:                          1 + N(0, 0.1)
  - biases (norm and linear):              N(0, 0.1)
Values are drawn in float32 from numpy's PCG64 with the given seed, then
rounded to --dtype; the same seed gives the same file, byte for byte.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, Tuple

import numpy as np

Spec = List[Tuple[str, Tuple[int, ...], str]]  # (name, shape, kind)

EMBED_STD = 0.5
POS_STD = 0.3
MATRIX_STD = 0.3
NORM_NOISE = 0.1
BIAS_STD = 0.1


def llama_spec(cfg: dict) -> Spec:
    h = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads") or nh
    hd = cfg.get("head_dim") or h // nh
    inter = cfg["intermediate_size"]
    v = cfg["vocab_size"]
    ab = bool(cfg.get("attention_bias", False))
    mb = bool(cfg.get("mlp_bias", False))
    s: Spec = [("model.embed_tokens.weight", (v, h), "embed")]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        s.append((p + "input_layernorm.weight", (h,), "norm"))
        for n, o in (("q", nh * hd), ("k", nkv * hd), ("v", nkv * hd)):
            s.append((p + f"self_attn.{n}_proj.weight", (o, h), "matrix"))
            if ab:
                s.append((p + f"self_attn.{n}_proj.bias", (o,), "bias"))
        s.append((p + "self_attn.o_proj.weight", (h, nh * hd), "matrix"))
        if ab:
            s.append((p + "self_attn.o_proj.bias", (h,), "bias"))
        s.append((p + "post_attention_layernorm.weight", (h,), "norm"))
        for n, shape in (("gate", (inter, h)), ("up", (inter, h)), ("down", (h, inter))):
            s.append((p + f"mlp.{n}_proj.weight", shape, "matrix"))
            if mb:
                s.append((p + f"mlp.{n}_proj.bias", (shape[0],), "bias"))
    s.append(("model.norm.weight", (h,), "norm"))
    if not cfg.get("tie_word_embeddings", False):
        s.append(("lm_head.weight", (v, h), "matrix"))
    return s


def gpt2_spec(cfg: dict) -> Spec:
    e = cfg["n_embd"]
    inner = cfg.get("n_inner") or 4 * e
    v = cfg["vocab_size"]
    s: Spec = [("wte.weight", (v, e), "embed"), ("wpe.weight", (cfg["n_positions"], e), "pos")]
    for i in range(cfg["n_layer"]):
        p = f"h.{i}."
        s += [
            (p + "ln_1.weight", (e,), "norm"), (p + "ln_1.bias", (e,), "bias"),
            (p + "attn.c_attn.weight", (e, 3 * e), "matrix"), (p + "attn.c_attn.bias", (3 * e,), "bias"),
            (p + "attn.c_proj.weight", (e, e), "matrix"), (p + "attn.c_proj.bias", (e,), "bias"),
            (p + "ln_2.weight", (e,), "norm"), (p + "ln_2.bias", (e,), "bias"),
            (p + "mlp.c_fc.weight", (e, inner), "matrix"), (p + "mlp.c_fc.bias", (inner,), "bias"),
            (p + "mlp.c_proj.weight", (inner, e), "matrix"), (p + "mlp.c_proj.bias", (e,), "bias"),
        ]
    s += [("ln_f.weight", (e,), "norm"), ("ln_f.bias", (e,), "bias")]
    return s


def spec_for(cfg: dict) -> Spec:
    mt = cfg.get("model_type")
    if mt == "llama":
        return llama_spec(cfg)
    if mt == "gpt2":
        return gpt2_spec(cfg)
    raise SystemExit(f"make_weights: model_type {mt!r} is not supported")


def make(cfg: dict, seed: int) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out: Dict[str, np.ndarray] = {}
    for name, shape, kind in spec_for(cfg):
        z = rng.standard_normal(shape, dtype=np.float32)
        if kind == "embed":
            a = EMBED_STD * z
        elif kind == "pos":
            a = POS_STD * z
        elif kind == "matrix":
            a = MATRIX_STD * z
        elif kind == "norm":
            a = 1.0 + NORM_NOISE * z
        else:
            a = BIAS_STD * z
        out[name] = a.astype(np.float32)
    return out


def _cast(a: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "f32":
        return a
    if dtype == "f16":
        return a.astype(np.float16)
    if dtype == "bf16":
        import ml_dtypes

        return a.astype(ml_dtypes.bfloat16)
    raise SystemExit(f"make_weights: unknown dtype {dtype}")


def save(tensors: Dict[str, np.ndarray], out: str, shards: int) -> List[str]:
    from safetensors.numpy import save_file

    meta = {"format": "pt"}
    if shards <= 1:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        save_file(tensors, out, metadata=meta)
        return [out]
    if out.endswith(".json"):
        folder, index_path = os.path.dirname(os.path.abspath(out)), out
    else:
        folder, index_path = out, os.path.join(out, "model.safetensors.index.json")
    os.makedirs(folder, exist_ok=True)
    names = list(tensors)
    if shards > len(names):
        raise SystemExit(f"make_weights: {shards} shards for {len(names)} tensors")
    total = sum(tensors[n].nbytes for n in names)
    # Contiguous runs of tensors in checkpoint order, cut near equal byte counts.
    groups: List[List[str]] = [[]]
    acc = 0
    for i, n in enumerate(names):
        left = len(names) - i
        must_cut = left <= shards - len(groups)          # one tensor left per remaining shard
        want_cut = acc >= total * len(groups) / shards
        if groups[-1] and len(groups) < shards and (must_cut or want_cut):
            groups.append([])
        groups[-1].append(n)
        acc += tensors[n].nbytes
    assert len(groups) == shards and all(groups)
    weight_map: Dict[str, str] = {}
    files = []
    for g, group in enumerate(groups):
        fname = f"model-{g + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: tensors[n] for n in group}, os.path.join(folder, fname), metadata=meta)
        files.append(os.path.join(folder, fname))
        for n in group:
            weight_map[n] = fname
    index = {"metadata": {"total_size": total},
             "weight_map": {n: weight_map[n] for n in sorted(weight_map)}}
    with open(index_path, "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
    return [index_path] + files


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="HF config.json (or a folder holding one)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", choices=["f32", "f16", "bf16"], default="f32")
    ap.add_argument("--shards", type=int, default=1)
    a = ap.parse_args(argv)
    cfg_path = a.config
    if os.path.isdir(cfg_path):
        cfg_path = os.path.join(cfg_path, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    tensors = {k: _cast(v, a.dtype) for k, v in make(cfg, a.seed).items()}
    files = save(tensors, a.out, a.shards)
    n = sum(v.size for v in tensors.values())
    print(f"make_weights: {len(tensors)} tensors, {n} parameters, {a.dtype} -> {', '.join(files)}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
