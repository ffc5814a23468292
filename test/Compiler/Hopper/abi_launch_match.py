"""Checks that an artifact launches its Hopper attention kernels exactly as
their ABI lines say (test/Compiler/Hopper/attention-bwd-v3.test).

    abi_launch_match.py KERNELS.ptx INFO.json HARNESS.cu

KERNELS.ptx: `colossus-compile ... --emit=ptx` of the model; INFO.json:
`colossus-run ARTIFACT info` of the same model's artifact. For every kernel
with a `// colossus.hopper_attention ...` or `..._bwd ...` line: the
artifact's grid, block and shared_mem_bytes equal the line's grid, block and
dynamic_smem (the kernels decode their CTA order from the launch grid, so
the runtime must launch that grid). HARNESS.cu (hopper_attention_check.cu)
must take its grid and block from the same line, not compute them. Prints
one line per kernel; exit status 1 on any disagreement."""
import json
import re
import sys


def abi_lines(ptx):
    out, name = {}, None
    for line in open(ptx):
        m = re.match(r"// ----- kernel (\S+) ", line)
        if m:
            name = m.group(1)
            continue
        if name and line.startswith("// colossus.hopper_attention"):
            out[name] = dict(kv.split("=", 1) for kv in line.split()[2:] if "=" in kv)
        name = None
    return out


def main():
    ptx, info, harness = sys.argv[1:4]
    lines = abi_lines(ptx)
    kernels = {k["name"]: k for k in json.load(open(info))["kernels"]}
    bad = 0
    if not lines:
        print("no Hopper attention ABI line in", ptx)
        return 1
    for name, abi in sorted(lines.items()):
        k = kernels.get(name)
        want = ([int(x) for x in abi["grid"].split(",")], [int(x) for x in abi["block"].split(",")],
                int(abi["dynamic_smem"]))
        got = (k["grid"], k["block"], k["shared_mem_bytes"]) if k else None
        ok = got == want
        bad += not ok
        print(f"{name}: abi grid {want[0]} block {want[1]} smem {want[2]}; artifact "
              f"{'none' if not k else f'grid {got[0]} block {got[1]} smem {got[2]}'}: {'match' if ok else 'MISMATCH'}")
    src = open(harness).read()
    uses = src.count('abi.str("grid")')
    print(f"harness reads the grid from the ABI line {uses} times (forward and backward: 2)")
    if uses < 2:
        bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
