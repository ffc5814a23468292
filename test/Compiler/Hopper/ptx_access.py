"""Global memory accesses of every kernel in `colossus-compile --emit=ptx`.

Prints one line per kernel (in PTX order) for FileCheck:

  NAME: ld.v=A ld.s=B ld.s.loop=C st.v=D st.s=E loops=F shfl=G

  ld.v / st.v   vector global loads / stores (ld.global.v2/v4/v8...)
  ld.s / st.s   scalar global loads / stores, not counting the loads of
                libdevice's sin/cos argument-reduction table
                (__cudart_i2opi_f, on the slow path of huge angles)
  ld.s.loop     scalar global loads inside a loop (a block range ending
                in a branch back to its label)
  loops         backward branches
  shfl          warp shuffles

These are static instruction counts: a row kernel with loops=0 reads each
of its operands' elements exactly as often as ld.v / ld.s says.
"""
import re
import sys

text = open(sys.argv[1]).read()
parts = re.split(r"// ----- kernel (\S+)[^\n]*-----", text)
for i in range(1, len(parts), 2):
    name, body = parts[i], parts[i + 1]
    lines = body.splitlines()
    labels = {}
    for n, line in enumerate(lines):
        m = re.match(r"^(\$L\w+):", line.strip())
        if m:
            labels[m.group(1)] = n
    loops = []
    for n, line in enumerate(lines):
        m = re.search(r"\bbra(?:\.uni)?\s+(\$L\w+);", line)
        if m and m.group(1) in labels and labels[m.group(1)] < n:
            loops.append((labels[m.group(1)], n))
    # Registers holding the address of the i2opi table, and the loads from
    # addresses computed from them.
    table_regs = set()
    for line in lines:
        m = re.search(r"mov\.[ub]64\s+(%rd\d+),\s+__cudart_i2opi_f;", line)
        if m:
            table_regs.add(m.group(1))
    changed = True
    while changed:
        changed = False
        for line in lines:
            m = re.search(r"\b(?:add|cvta\S*)\.\S+\s+(%rd\d+),\s+(.*);", line)
            if m and m.group(1) not in table_regs and any(
                r in re.findall(r"%rd\d+", m.group(2)) for r in table_regs
            ):
                table_regs.add(m.group(1))
                changed = True
    ld_v = ld_s = ld_s_loop = st_v = st_s = 0
    for n, line in enumerate(lines):
        s = line.strip()
        if re.match(r"ld\.global", s):
            vec = re.match(r"ld\.global(?:\.nc)?\.v\d", s) is not None
            addr = re.search(r"\[(%rd\d+)", s)
            if addr and addr.group(1) in table_regs:
                continue
            if vec:
                ld_v += 1
            else:
                ld_s += 1
                if any(a <= n <= b for a, b in loops):
                    ld_s_loop += 1
        elif re.match(r"st\.global", s):
            if re.match(r"st\.global\.v\d", s):
                st_v += 1
            else:
                st_s += 1
    shfl = len(re.findall(r"\bshfl\.sync", body))
    print(
        f"{name}: ld.v={ld_v} ld.s={ld_s} ld.s.loop={ld_s_loop} st.v={st_v} "
        f"st.s={st_s} loops={len(loops)} shfl={shfl}"
    )
