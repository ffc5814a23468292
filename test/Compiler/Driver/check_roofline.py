"""Recomputes the sm_90a estimates of a colossus-compile --report.

An independent implementation of the formulas in docs/cli.md: theoretical
occupancy (NVIDIA occupancy calculator rules for compute capability 9.0) from
each kernel's registers, shared memory and block size; roofline times from
its FLOPs and bytes; the step totals and floor. Prints one summary line for
FileCheck, or the mismatches and exits 1.
"""
import argparse
import json
import math
import sys

DEVICES = {  # FLOP/s (f32 FMA, dense bf16 tensor), HBM B/s
    "h100_sxm": (66.9e12, 989e12, 3.35e12),
    "h200_sxm": (66.9e12, 989e12, 4.8e12),
}


def occupancy(block, regs, smem):
    warps = -(-block // 32)
    reg_warp = -(-regs * 32 // 256) * 256
    smem_block = -(-(smem + 1024) // 128) * 128
    if block > 1024 or regs > 255 or reg_warp * warps > 65536 or smem > 227 * 1024:
        return 0, 0, "launch"
    limits = [
        ("warps", 64 // warps),
        ("blocks", 32),
        ("registers", (65536 // 4 // reg_warp) * 4 // warps if reg_warp else 32),
        ("shared_memory", 228 * 1024 // smem_block),
    ]
    blocks = min(v for _, v in limits)
    return blocks, blocks * warps, next(n for n, v in limits if v == blocks)


def close(a, b):
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-18)


p = argparse.ArgumentParser()
p.add_argument("report")
p.add_argument("--block-dim", type=int, required=True)
a = p.parse_args()
r = json.load(open(a.report))
errors = []
sums = {d: 0.0 for d in DEVICES}
flops = nbytes = 0.0
limiters = set()
for k in r["kernels"]:
    name = k["name"]
    if k["block_dim"] != a.block_dim:
        errors.append(f"{name}: block_dim {k['block_dim']}")
    smem = k["static_shared_mem_bytes"] + k["dynamic_shared_mem_bytes"]
    blocks, warps, limiter = occupancy(k["block_dim"], k["registers"], smem)
    occ = k["occupancy"]
    limiters.add(occ["limiter"])
    if (occ["blocks_per_sm"], occ["active_warps_per_sm"], occ["limiter"]) != (
            blocks, warps, limiter) or not close(occ["fraction"], warps / 64):
        errors.append(f"{name}: occupancy {occ}, expected {blocks} blocks, "
                      f"{warps} warps, {limiter}")
    if k["compute_pipe"] != "fma_f32":
        errors.append(f"{name}: compute_pipe {k['compute_pipe']}")
    est = k["roofline_estimate"]
    n = est["launches"]
    if n < k["launches_per_step"]:
        errors.append(f"{name}: {n} launches < launches_per_step")
    flops += k["flops"] * n
    nbytes += k["bytes"] * n
    for d, (fma, _, bw) in DEVICES.items():
        t = max(k["flops"] / fma, k["bytes"] / bw)
        e = est[d]
        bound = "memory" if k["bytes"] / bw > k["flops"] / fma else "compute"
        if not close(e["seconds_per_launch"], t) or not close(
                e["seconds"], t * n) or e["bound"] != bound:
            errors.append(f"{name}: {d} {e}, expected {t} s per launch, {bound}")
        sums[d] += t * n
step = r["roofline_estimate"]
if not close(step["flops"], flops) or not close(step["bytes"], nbytes):
    errors.append(f"step flops/bytes {step['flops']} {step['bytes']}, "
                  f"expected {flops} {nbytes}")
ratios = []
for d, (_, bf16, bw) in DEVICES.items():
    s = step[d]
    floor = max(flops / bf16, nbytes / bw)
    if not close(s["sum_of_kernel_estimates_seconds"], sums[d]) or not close(
            s["floor_seconds"], floor) or not close(s["ratio"], sums[d] / floor):
        errors.append(f"step {d}: {s}, expected sum {sums[d]}, floor {floor}")
    if s["ratio"] < 1 - 1e-9:
        errors.append(f"step {d}: ratio {s['ratio']} < 1")
    ratios.append(s["ratio"])
if errors:
    print("roofline FAILED:\n  " + "\n  ".join(errors))
    sys.exit(1)
print(f"roofline OK: {len(r['kernels'])} kernels, limiters "
      f"{','.join(sorted(limiters))}")
