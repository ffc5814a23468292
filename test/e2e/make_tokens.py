#!/usr/bin/env python3
"""A deterministic token corpus with learnable structure (the training tests' data).

  make_tokens.py --out TOKENS.bin [--tokens 65536] [--vocab 256] [--phrases 64]
                 [--min-len 4] [--max-len 12] [--noise 0.05] [--seed 0]
                 [--dtype uint16|uint32] [--no-sidecar] [--stats]

The "noisy phrase" corpus:
  1. a dictionary of P phrases: phrase p has length L_p uniform in
     [min-len, max-len] and tokens uniform in [0, vocab);
  2. the corpus is a sequence of phrases, each chosen uniformly at random
     and written out token by token, where every token is replaced, with
     probability `noise`, by a uniform random token; cut at --tokens tokens.

Randomness is SplitMix64 (seeded with --seed), written out here, so the bytes
depend on nothing but the arguments (no numpy stream): below(n) is
next() % n, uniform() is (next() >> 11) * 2^-53, drawn in the order above.

Why a tiny model learns it: inside a phrase the next token is determined by
the one or two before it (a bigram lookup, and one attention step back to
resolve the few tokens that occur in two phrases), so after the first token of
a phrase the only uncertainty left is the noise. The entropy rate is about
(ln P + L * H_noise) / L ~ 1 nat/token for the defaults, far below the
ln(256) = 5.5 of a uniform guess and the ~5.4 of the unigram distribution.
Written as flat little-endian --dtype, plus a sidecar <out>.json
{"dtype": ..., "tokens": N, "sha256": ..., "generator": {...}}; --stats prints
the unigram entropy and the empirical order-1/order-2 conditional entropies.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections import Counter
from typing import List

import numpy as np

MASK64 = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed: int):
        self.state = seed & MASK64

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def below(self, n: int) -> int:
        return self.next() % n

    def uniform(self) -> float:
        return (self.next() >> 11) * (1.0 / (1 << 53))


def generate(tokens: int = 65536, vocab: int = 256, phrases: int = 64, min_len: int = 4,
             max_len: int = 12, noise: float = 0.05, seed: int = 0) -> np.ndarray:
    if not (1 <= min_len <= max_len) or phrases < 1 or vocab < 2 or tokens < 1 or not 0 <= noise <= 1:
        raise ValueError("bad corpus parameters")
    rng = SplitMix64(seed)
    book: List[List[int]] = []
    for _ in range(phrases):
        n = min_len + rng.below(max_len - min_len + 1)
        book.append([rng.below(vocab) for _ in range(n)])
    out: List[int] = []
    while len(out) < tokens:
        for tok in book[rng.below(phrases)]:
            if rng.uniform() < noise:
                tok = rng.below(vocab)
            out.append(tok)
    return np.asarray(out[:tokens], dtype=np.int64)


def stats(ids: np.ndarray) -> dict:
    """Unigram entropy and plug-in conditional entropies H(x_t | x_{t-1}),
    H(x_t | x_{t-2}, x_{t-1}) in nats (the latter is biased low by sparse
    contexts; a rough floor for what a small model can reach)."""
    ids = [int(x) for x in ids]

    def cond(order: int) -> float:
        ctx, joint = Counter(), Counter()
        for i in range(order, len(ids)):
            c = tuple(ids[i - order:i])
            ctx[c] += 1
            joint[c + (ids[i],)] += 1
        n = sum(joint.values())
        return -sum(k / n * math.log(k / ctx[j[:-1]]) for j, k in joint.items())

    return {"unigram_entropy": round(cond(0), 4), "order1_entropy": round(cond(1), 4),
            "order2_entropy": round(cond(2), 4), "uniform_entropy": round(math.log(max(ids) + 1), 4)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokens", type=int, default=65536)
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--phrases", type=int, default=64)
    ap.add_argument("--min-len", type=int, default=4)
    ap.add_argument("--max-len", type=int, default=12)
    ap.add_argument("--noise", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=["uint16", "uint32"], default="uint16")
    ap.add_argument("--no-sidecar", action="store_true")
    ap.add_argument("--stats", action="store_true")
    a = ap.parse_args(argv)
    if a.dtype == "uint16" and a.vocab > 65536:
        raise SystemExit("make_tokens: a vocabulary over 65536 needs --dtype uint32")
    gen = dict(kind="noisy-phrases", tokens=a.tokens, vocab=a.vocab, phrases=a.phrases, min_len=a.min_len,
               max_len=a.max_len, noise=a.noise, seed=a.seed)
    try:
        ids = generate(**{k: v for k, v in gen.items() if k != "kind"})
    except ValueError as e:
        raise SystemExit(f"make_tokens: {e}")
    data = ids.astype("<u2" if a.dtype == "uint16" else "<u4").tobytes()
    with open(a.out, "wb") as f:
        f.write(data)
    digest = hashlib.sha256(data).hexdigest()
    if not a.no_sidecar:
        with open(a.out + ".json", "w") as f:
            json.dump({"dtype": a.dtype, "tokens": len(ids), "sha256": digest, "generator": gen}, f, indent=2)
            f.write("\n")
    print(f"make_tokens: {len(ids)} tokens ({a.dtype}, sha256 {digest[:16]}) -> {a.out}", file=sys.stderr)
    if a.stats:
        print(json.dumps(stats(ids)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
