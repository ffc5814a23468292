"""Checks a --report's attention FLOPs against the model config.

Usage: check_attention_flops.py CONFIG.json REPORT.json BATCH SEQ

Independent of the compiler's estimateFlops: per (query, key) pair a token
sees (causal: on average (SEQ + 1) / 2 keys) and per query head, a forward
attention does two head_dim products (q.k and p.v: 4 * head_dim FLOPs),
the dq half of its gradient three (scores, dP = dout.v, dS k) and the
dk/dv half four (scores, dP, dS^T q, P^T dout). Prints one line per kernel
and "attention flops OK" or exits 1.
"""
import json
import sys

config = json.load(open(sys.argv[1]))
report = json.load(open(sys.argv[2]))
batch, seq = int(sys.argv[3]), int(sys.argv[4])
heads = config["num_attention_heads"]
head_dim = config.get("head_dim") or config["hidden_size"] // heads
pairs = batch * seq * heads * (seq + 1) / 2.0
unit = head_dim * pairs
bad = 0
grads = []
forwards = 0
for k in report["kernels"]:
    if k["kind"] == "attention":
        forwards += 1
        ok = abs(k["flops"] - 4 * unit) <= 1e-9 * unit
        bad += not ok
        print(f"{k['name']}: attention flops {k['flops']:.0f} expected "
              f"{4 * unit:.0f}" + ("" if ok else "  MISMATCH"))
    elif k["kind"] == "attention_grad":
        grads.append(k)
# The fuser splits each gradient into its dq and dk/dv halves (one kernel
# each, in either order): the products per pair must be 6 and 8, as many of
# each.
products = sorted(round(k["flops"] / unit, 6) for k in grads)
half = len(products) // 2
want = [6.0] * half + [8.0] * half
for k in grads:
    print(f"{k['name']}: attention_grad flops {k['flops']:.0f} = "
          f"{k['flops'] / unit:g} x head_dim x pairs")
if products != want or not grads or not forwards:
    print(f"MISMATCH: attention_grad products per pair {products}, "
          f"expected {want}")
    bad += 1
if bad:
    sys.exit(1)
print(f"attention flops OK: {forwards} forward, {len(grads)} gradient kernels")
