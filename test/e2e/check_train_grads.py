#!/usr/bin/env python3
"""Checks the training oracle's gradients in float64 (no compiler needed).

  check_train_grads.py [--examples DIR] [--models M1,M2,...] [--entries 2]

The oracle (train_reference.py: reference.py's JAX forward, cross entropy and
jax.grad, all float32) against central finite differences of a float64 loss
built on numpy_reference.py (the separate plain-numpy float64 forward):

  - loss: |L32 - L64| / L64 <= 1e-6;
  - entries: in every parameter tensor, the entry of largest |gradient| and
    --entries seeded random entries; error = |g32 - fd64| / max|g32 of the
    tensor| <= 2e-5, and for the largest entry also |g32 - fd64| / |fd64|
    (typically ~1e-6, at worst 7e-6: float32 rounding of the oracle);
  - directional derivatives through every parameter at once, along
    d = g32/|g32| (|<g32, d> - fd64| / |fd64| <= 1e-5) and along a random
    unit direction (a sum of terms of both signs: <= 1e-4).

Models (--models): tiny-llama, tiny-gpt2 and tiny-llama-variant (tied
embeddings, attention/MLP biases, MQA) by default; tiny-llama-gqa3 (GQA 3:1,
llama3 RoPE scaling) on request (each model costs a few seconds of XLA
compilation). Batch
2 x 10 tokens from make_tokens' corpus, 3 targets set to ignore_index (-100).
fd64 = (L(p + h) - L(p - h)) / 2h, h = 1e-5 * max(1, |p|): truncation and
rounding errors are ~1e-10, far below float32's.
Prints one line per tensor and a final 'N passed, N failed' line.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_tokens  # noqa: E402
import make_weights  # noqa: E402
import numpy_reference  # noqa: E402
import reference  # noqa: E402
import train_reference as tr  # noqa: E402

IGNORE = tr.IGNORE_INDEX
# float32 gradients of these models are accurate to ~1e-6 typically and
# 7e-6 at worst (entries of k_proj; the finite differences themselves are
# converged to 1e-10); a wrong rule shows up as 1e-2 or more.
LIMIT = 2e-5
results = []
worst = {"entry": 0.0, "largest_entry_rel": 0.0, "direction": 0.0, "random": 0.0, "loss": 0.0}


def check(name: str, ok: bool, detail: str = "") -> None:
    results.append(ok)
    print(f"{'PASS' if ok else 'FAIL'}: {name}{' -- ' + detail if detail else ''}", flush=True)


def loss64(cfg, w, inputs, targets) -> float:
    """Mean cross entropy in float64 over the non-ignored targets, written
    independently of train_reference.cross_entropy."""
    total, count = 0.0, 0
    for x, y in zip(inputs, targets):
        lg = numpy_reference.forward(cfg, w, [int(i) for i in x])
        for pos, t in enumerate(y):
            if int(t) == IGNORE:
                continue
            row = lg[pos]
            top = row.max()
            total += (top + math.log(np.exp(row - top).sum())) - row[int(t)]
            count += 1
    return total / count


def fd(cfg, w, inputs, targets, name, idx, h) -> float:
    w = dict(w)
    base = np.array(w[name], dtype=np.float64)
    plus, minus = base.copy(), base.copy()
    plus[idx] += h
    minus[idx] -= h
    w[name] = plus
    lp = loss64(cfg, w, inputs, targets)
    w[name] = minus
    lm = loss64(cfg, w, inputs, targets)
    return (lp - lm) / (2 * h)


def check_model(label: str, cfg: dict, seed: int, entries: int) -> None:
    w32 = make_weights.make(cfg, seed)
    params = tr.trainable_params(cfg, w32)
    corpus = make_tokens.generate(tokens=4096, vocab=cfg["vocab_size"], seed=seed)
    inputs, targets = tr.make_batch(corpus, 3, 2, 10)
    targets = targets.copy()
    targets[0, 0] = targets[1, 5] = targets[1, 9] = IGNORE

    l32, g32 = tr.loss_and_grads(cfg, params, inputs, targets)
    w64 = {k: v.astype(np.float64) for k, v in params.items()}
    l64 = loss64(cfg, w64, inputs, targets)
    r = abs(l32 - l64) / abs(l64)
    worst["loss"] = max(worst["loss"], r)
    check(f"{label}: loss f32 {l32:.6f} vs f64 {l64:.6f}", r <= 1e-6, f"rel={r:.1e}")
    check(f"{label}: a gradient for every parameter, same shapes",
          set(g32) == set(params) and all(g32[k].shape == params[k].shape for k in params))

    rng = np.random.default_rng(seed)
    for name in sorted(params):
        g = g32[name]
        scale = float(np.max(np.abs(g)))
        if scale == 0.0:
            check(f"{label}: {name} has a gradient", False, "all zeros")
            continue
        picks = [np.unravel_index(int(np.argmax(np.abs(g))), g.shape)]
        picks += [tuple(int(rng.integers(0, n)) for n in g.shape) for _ in range(entries)]
        errs, largest_rel = [], None
        for k, idx in enumerate(picks):
            p = float(w64[name][idx])
            num = fd(cfg, w64, inputs, targets, name, idx, 1e-5 * max(1.0, abs(p)))
            errs.append(abs(float(g[idx]) - num) / scale)
            if k == 0:
                largest_rel = abs(float(g[idx]) - num) / abs(num)
        e = max(errs)
        worst["entry"] = max(worst["entry"], e)
        worst["largest_entry_rel"] = max(worst["largest_entry_rel"], largest_rel)
        check(f"{label}: {name} {list(g.shape)} {len(picks)} entries", e <= LIMIT and largest_rel <= LIMIT,
              f"err/max|g|={e:.1e}, largest entry rel={largest_rel:.1e}")

    # Every parameter at once: derivatives along the gradient itself (no
    # cancellation: <g, d> = |g|) and along a random direction (a sum of
    # terms of both signs, so a looser relative limit).
    gnorm = math.sqrt(sum(float(np.sum(np.square(g32[k], dtype=np.float64))) for k in w64))
    rnd = {k: rng.standard_normal(v.shape) for k, v in w64.items()}
    rnorm = math.sqrt(sum(float(np.sum(x * x)) for x in rnd.values()))
    for what, d, limit in (("the gradient", {k: g32[k].astype(np.float64) / gnorm for k in w64}, 1e-5),
                           ("a random direction", {k: v / rnorm for k, v in rnd.items()}, 1e-4)):
        h = 1e-5
        lp = loss64(cfg, {k: w64[k] + h * d[k] for k in w64}, inputs, targets)
        lm = loss64(cfg, {k: w64[k] - h * d[k] for k in w64}, inputs, targets)
        num = (lp - lm) / (2 * h)
        ana = sum(float(np.sum(g32[k].astype(np.float64) * d[k])) for k in w64)
        r = abs(ana - num) / abs(num)
        key = "direction" if what == "the gradient" else "random"
        worst[key] = max(worst[key], r)
        check(f"{label}: derivative along {what}, all {len(w64)} tensors", r <= limit,
              f"<g,d>={ana:.7e} fd={num:.7e} rel={r:.1e}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", default=os.path.join(HERE, "..", "..", "examples"))
    ap.add_argument("--models", default="tiny-llama,tiny-gpt2,tiny-llama-variant",
                    help="comma-separated, of tiny-llama, tiny-gpt2, tiny-llama-gqa3, tiny-llama-variant")
    ap.add_argument("--entries", type=int, default=2, help="random entries per tensor (plus the largest)")
    a = ap.parse_args()
    available = {m: reference.load_config(os.path.join(a.examples, m))
                 for m in ("tiny-llama", "tiny-gpt2", "tiny-llama-gqa3")}
    v = copy.deepcopy(available["tiny-llama"])
    v.update(tie_word_embeddings=True, attention_bias=True, mlp_bias=True, num_key_value_heads=1)
    available["tiny-llama-variant"] = v  # tied embeddings, attention and MLP biases, MQA
    names = [m.strip() for m in a.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in available]
    if unknown:
        raise SystemExit(f"check_train_grads: unknown models {unknown}; known: {sorted(available)}")
    for i, label in enumerate(available):
        if label in names:
            check_model(label, available[label], seed=20 + i, entries=a.entries)
    passed = sum(results)
    failed = len(results) - passed
    print("worst: loss rel {loss:.1e}, entry err/max|g| {entry:.1e}, largest-entry rel {largest_entry_rel:.1e}, "
          "along g rel {direction:.1e}, random direction rel {random:.1e}".format(**worst))
    print(f"train oracle gradient check: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
