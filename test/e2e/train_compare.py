#!/usr/bin/env python3
"""Compares training runs and tensors (system under test first, oracle second).

  train_compare.py learned RUN.jsonl [--max-ratio 0.5] [--last 10] [--max-loss L]
      the run learned: the mean loss of the last --last steps is below
      --max-ratio times the first step's loss (docs/training.md), and below
      L when --max-loss is given.
  train_compare.py steps A.jsonl B.jsonl [--steps K] [--loss-rel 1e-4]
                   [--grad-norm-rel 1e-3] [--lr-rel 1e-6]
      step lines {"step", "loss", "grad_norm", "lr"} agree step by step over
      the first K steps (default: all of B's); |a - b| / |b| per field.
  train_compare.py tensors A.safetensors B.safetensors [--max-rel 1e-4]
                   [--ignore-slice SUFFIX:START:END ...]
      same names and shapes; per tensor max|a - b| / max|b| <= --max-rel
      (a tensor of zeros must be matched exactly). For gradients and weights.
      --ignore-slice leaves entries [START, END) of the first axis of every
      tensor whose name ends with SUFFIX out of the difference (not of the
      scale), e.g. attn.c_attn.bias:64:128 for the key bias of a GPT-2 of
      n_embd 64 after training: its true gradient is exactly 0 (softmax is
      shift invariant), so AdamW turns float32 noise into lr-sized steps
      (docs/training.md).

A run file may hold other lines; those that parse as JSON objects with a
"loss" are the steps. Exit status 0 on agreement, 1 on disagreement, 2 on
unreadable input. The figures are printed either way.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import List

import numpy as np


def read_steps(path: str) -> List[dict]:
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(d, dict) and "loss" in d:
                out.append(d)
    return out


def cmd_learned(a) -> int:
    steps = read_steps(a.run)
    if len(steps) < max(2, a.last):
        print(f"train_compare: {a.run}: {len(steps)} step lines, need at least {max(2, a.last)}")
        return 2
    first = float(steps[0]["loss"])
    tail = float(np.mean([float(s["loss"]) for s in steps[-a.last:]]))
    ok_ratio = tail < a.max_ratio * first
    ok_abs = a.max_loss is None or tail < a.max_loss
    extra = "" if a.max_loss is None else f", {'<' if ok_abs else '>='} {a.max_loss}"
    ok = ok_ratio and ok_abs
    print(f"train_compare: loss {first:.4f} -> {tail:.4f} (mean of the last {a.last} of {len(steps)} steps), "
          f"ratio {tail / first:.3f} {'<' if ok_ratio else '>='} {a.max_ratio}{extra} {'OK' if ok else 'FAIL'}")
    return 0 if ok else 1


def cmd_steps(a) -> int:
    sa, sb = read_steps(a.a), read_steps(a.b)
    k = a.steps if a.steps is not None else len(sb)
    if len(sa) < k or len(sb) < k or k < 1:
        print(f"train_compare: {len(sa)} and {len(sb)} step lines, comparing {k}")
        return 2
    limits = {"loss": a.loss_rel, "grad_norm": a.grad_norm_rel, "lr": a.lr_rel}
    worst = {f: (0.0, 0) for f in limits}
    for i in range(k):
        if "step" in sa[i] and "step" in sb[i] and sa[i]["step"] != sb[i]["step"]:
            print(f"train_compare: line {i}: step {sa[i]['step']} vs {sb[i]['step']} FAIL")
            return 1
        for f in limits:
            if f not in sb[i]:
                continue
            if f not in sa[i]:
                print(f"train_compare: step line {i} of {a.a} has no {f!r} FAIL")
                return 1
            x, y = float(sa[i][f]), float(sb[i][f])
            r = abs(x - y) / abs(y) if y != 0 else (0.0 if x == 0 else float("inf"))
            if r > worst[f][0]:
                worst[f] = (r, i)
    ok = all(worst[f][0] <= limits[f] for f in limits)
    desc = ", ".join(f"{f} max_rel={worst[f][0]:.2e} (line {worst[f][1]}, limit {limits[f]:g})" for f in limits)
    print(f"train_compare: {k} steps: {desc} {'OK' if ok else 'FAIL'}")
    return 0 if ok else 1


def cmd_tensors(a) -> int:
    from safetensors.numpy import load_file

    try:
        ta, tb = load_file(a.a), load_file(a.b)
    except Exception as e:  # noqa: BLE001
        print(f"train_compare: cannot read tensors: {e}")
        return 2
    if set(ta) != set(tb):
        print(f"train_compare: names differ: only in {a.a}: {sorted(set(ta) - set(tb))[:5]}, "
              f"only in {a.b}: {sorted(set(tb) - set(ta))[:5]} FAIL")
        return 1
    worst, worst_name, bad = 0.0, "", []
    for k in sorted(tb):
        x, y = np.asarray(ta[k], np.float64), np.asarray(tb[k], np.float64)
        if x.shape != y.shape:
            print(f"train_compare: {k}: shape {list(x.shape)} vs {list(y.shape)} FAIL")
            return 1
        d = np.abs(x - y)
        for suffix, lo, hi in a.ignore_slice:
            if k.endswith(suffix) and d.ndim >= 1:
                d[lo:hi] = 0.0
        if a.norm_wise:
            # ||a - b|| / ||b|| (the bf16 comparisons: rounding noise spread
            # over the tensor, not one worst entry).
            scale = float(np.linalg.norm(y)) if y.size else 0.0
            diff = float(np.linalg.norm(d)) if y.size else 0.0
        else:
            scale = float(np.max(np.abs(y))) if y.size else 0.0
            diff = float(np.max(d)) if y.size else 0.0
        r = diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
        if r > a.max_rel:
            bad.append(k)
        if r >= worst:
            worst, worst_name = r, k
    ok = not bad
    what = "max_norm_rel" if a.norm_wise else "max_rel"
    print(f"train_compare: {len(tb)} tensors, {what}={worst:.3e} ({worst_name}) {'OK' if ok else 'FAIL'}")
    if bad:
        print(f"train_compare: over {a.max_rel:g}: {', '.join(bad[:10])}")
    return 0 if ok else 1


def _slice(s: str):
    try:
        suffix, lo, hi = s.rsplit(":", 2)
        return suffix, int(lo), int(hi)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r}: SUFFIX:START:END")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("learned")
    p.add_argument("run")
    p.add_argument("--max-ratio", type=float, default=0.5)
    p.add_argument("--last", type=int, default=10)
    p.add_argument("--max-loss", type=float, default=None)
    p = sub.add_parser("steps")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--loss-rel", type=float, default=1e-4)
    p.add_argument("--grad-norm-rel", type=float, default=1e-3)
    p.add_argument("--lr-rel", type=float, default=1e-6)
    p = sub.add_parser("tensors")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--max-rel", type=float, default=1e-4)
    p.add_argument("--ignore-slice", type=_slice, action="append", default=[], metavar="SUFFIX:START:END")
    p.add_argument("--norm-wise", action="store_true",
                   help="compare ||a - b|| / ||b|| per tensor instead of max|a - b| / max|b|")
    a = ap.parse_args(argv)
    return {"learned": cmd_learned, "steps": cmd_steps, "tensors": cmd_tensors}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
