#!/usr/bin/env python3
"""Compares the system under test (first argument) with the oracle (second).

  compare.py logits A.npy B.npy [--max-rel 1e-4]
      shapes must match (leading axes of size 1, e.g. a batch of one, are
      ignored); then  max_rel = max|a - b| / max|b|  over every position and
      vocabulary entry must be <= --max-rel. Prints the figure either way.
  compare.py tokens A.json B.json
      the "tokens" arrays of the two JSON documents must be identical.
      A file may hold several lines: the last line that parses as a JSON
      object with "tokens" is used. On a mismatch both arrays are printed.

Exit status 0 on agreement, 1 on disagreement, 2 on unreadable input.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def _squeeze_leading(a: np.ndarray) -> np.ndarray:
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    return a


def cmd_logits(a_path: str, b_path: str, max_rel: float) -> int:
    try:
        a = np.load(a_path)
        b = np.load(b_path)
    except Exception as e:  # noqa: BLE001
        print(f"compare: cannot read logits: {e}")
        return 2
    a2, b2 = _squeeze_leading(a), _squeeze_leading(b)
    if a2.shape != b2.shape:
        print(f"compare: shape mismatch: {a_path} {list(a.shape)} vs {b_path} {list(b.shape)}")
        return 1
    a2 = a2.astype(np.float64)
    b2 = b2.astype(np.float64)
    if not np.all(np.isfinite(a2)):
        print(f"compare: {a_path} has {int(np.sum(~np.isfinite(a2)))} non-finite values")
        return 1
    scale = float(np.max(np.abs(b2)))
    if scale == 0.0:
        print("compare: reference logits are all zero")
        return 2
    diff = np.abs(a2 - b2)
    err = float(np.max(diff)) / scale
    where = np.unravel_index(int(np.argmax(diff)), diff.shape)
    ok = err <= max_rel
    print(f"compare: logits {list(a2.shape)} max_rel={err:.3e} (limit {max_rel:.1e}, "
          f"max|ref|={scale:.4g}, worst at {tuple(int(i) for i in where)}) "
          f"{'OK' if ok else 'FAIL'}")
    return 0 if ok else 1


def _read_tokens(path: str):
    with open(path) as f:
        text = f.read()
    candidates = [text] + text.splitlines()[::-1]
    for c in candidates:
        c = c.strip()
        if not c:
            continue
        try:
            doc = json.loads(c)
        except ValueError:
            continue
        if isinstance(doc, dict) and "tokens" in doc:
            return [int(t) for t in doc["tokens"]]
    raise ValueError(f"no JSON object with \"tokens\" in {path}")


def cmd_tokens(a_path: str, b_path: str) -> int:
    try:
        a = _read_tokens(a_path)
        b = _read_tokens(b_path)
    except (OSError, ValueError) as e:
        print(f"compare: {e}")
        return 2
    if a == b:
        print(f"compare: tokens identical ({len(a)} tokens) OK")
        return 0
    first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    print(f"compare: tokens differ (lengths {len(a)} and {len(b)}, first difference at index {first}) FAIL")
    print(f"  {a_path}: {a}")
    print(f"  {b_path}: {b}")
    return 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="compare results with the oracle's")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("logits")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--max-rel", type=float, default=1e-4)
    p = sub.add_parser("tokens")
    p.add_argument("a")
    p.add_argument("b")
    a = ap.parse_args(argv)
    if a.cmd == "logits":
        return cmd_logits(a.a, a.b, a.max_rel)
    return cmd_tokens(a.a, a.b)


if __name__ == "__main__":
    sys.exit(main())
