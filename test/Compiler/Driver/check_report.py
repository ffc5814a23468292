"""Checks a colossus-compile --report JSON file.

Every kernel must list its fused ops, FLOPs and bytes; for sm_90a, ptxas's
registers (> 0) and spills (== 0). Prints one summary line for FileCheck.
"""
import argparse
import json
import sys

p = argparse.ArgumentParser()
p.add_argument("report")
p.add_argument("--target", required=True)
p.add_argument("--kernels", type=int, default=None)
a = p.parse_args()
r = json.load(open(a.report))
errors = []
if r["target"] != a.target:
    errors.append(f"target {r['target']} != {a.target}")
ks = r["kernels"]
if a.kernels is not None and len(ks) != a.kernels:
    errors.append(f"{len(ks)} kernels, expected {a.kernels}")
spills = 0
for k in ks:
    for field in ("name", "kind", "fused_ops", "flops", "bytes", "launches_per_step"):
        if field not in k:
            errors.append(f"{k.get('name')}: no {field}")
    if not k.get("fused_ops"):
        errors.append(f"{k['name']}: empty fused_ops")
    if a.target == "sm_90a":
        if k.get("registers", 0) <= 0:
            errors.append(f"{k['name']}: registers {k.get('registers')}")
        spills += k.get("spill_bytes", 1)
        if k.get("spill_bytes", 1) != 0:
            errors.append(f"{k['name']}: {k.get('spill_bytes')} spill bytes")
mp = r["memory_plan"]
if mp["peak_bytes"] <= 0 or mp["peak_bytes"] > mp["arena_bytes_without_reuse"]:
    errors.append(f"memory plan: {mp}")
if errors:
    print("report FAILED:\n  " + "\n  ".join(errors))
    sys.exit(1)
print(f"report OK: {len(ks)} kernels, {spills} spill bytes")
