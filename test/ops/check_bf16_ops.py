"""Numerics of the forward kernels on bf16 buffers, op by op.

Each case compiles a one-op graph whose tensors are bf16 for the cpu target,
runs its kernel on random bf16 inputs (active region smaller than the
capacity; rows past it are poisoned with NaN), and compares with a float64
numpy reference computed from the same bf16 values. The kernels compute in
f32 and round once when they store, so a bf16 result must be within about
one rounding (2^-9 relative) of the reference: the tolerance is 4e-3 of the
largest magnitude; f32 results (a conversion fused into the kernel) keep the
f32 tolerance. Usage: check_bf16_ops.py (colossus-compile on PATH or in
$COLOSSUS_COMPILE).
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from opcheck import Checker, Kernel  # noqa: E402

T, NB, NT = 12, 2, 5  # capacity 12 rows, 10 active
R = NB * NT
BF16_TOL = 4e-3
F32_TOL = 2e-5
rng = np.random.default_rng(1)
chk = Checker()


def to_bf16(a):
    """float32 -> bf16 bits (uint16), round to nearest even; NaN stays NaN."""
    bits = np.asarray(a, np.float32).view(np.uint32).astype(np.uint64)
    nan = (bits & 0x7FFFFFFF) > 0x7F800000
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(nan, np.uint16(0x7FC0), rounded).astype(np.uint16)


def from_bf16(u):
    return (np.asarray(u, np.uint16).astype(np.uint32) << 16).view(np.float32)


def act(shape, scale=1.0):
    a = (rng.standard_normal(shape) * scale).astype(np.float32)
    a[R:] = np.nan
    return to_bf16(a)


def par(shape, scale=1.0):
    return to_bf16(rng.standard_normal(shape) * scale)


def ty(shape, elem="bf16"):
    return "tensor<" + "x".join(str(d) for d in shape) + f"x{elem}>"


def run(name, body, args, result_types, out_shapes, out_dtypes, symbol):
    sig = ", ".join(f"%{n}: {t}" for n, _, t in args)
    graph = (f"func.func @f({sig}) -> ({', '.join(result_types)}) {{\n"
             f"{body}\n}}\n")
    k = Kernel(graph, name, chk.workdir)
    return k(symbol, [a for _, a, _ in args], out_shapes, NB, NT, 0,
             out_dtypes=out_dtypes)


def f64(u):
    return from_bf16(u).astype(np.float64)


# --- linear, bf16 out (the scalar path) and f32 out (a fused conversion)
D, N = 40, 24
x, w = act((T, D)), par((N, D), 0.2)
(y,) = run("linear",
           f"  %r = colossus.linear %x, %w : {ty((T, D))}, {ty((N, D))}\n"
           f"  return %r : {ty((T, N))}",
           [("x", x, ty((T, D))), ("w", w, ty((N, D)))], [ty((T, N))],
           [(T, N)], [np.uint16], "f_0_gemm")
want = f64(x)[:R] @ f64(w).T
chk.check("linear bf16", from_bf16(y)[:R], want, BF16_TOL)
(y32,) = run("linear_f32",
             f"  %y = colossus.linear %x, %w : {ty((T, D))}, {ty((N, D))}\n"
             f"  %r = colossus.convert %y to f32 : {ty((T, N))}\n"
             f"  return %r : {ty((T, N), 'f32')}",
             [("x", x, ty((T, D))), ("w", w, ty((N, D)))],
             [ty((T, N), "f32")], [(T, N)], [np.float32], "f_0_gemm")
chk.check("linear -> convert f32", y32[:R], want, F32_TOL)

# --- rms_norm
x, g = act((T, D)), par((D,))
(y,) = run("rms",
           f"  %r = colossus.rms_norm %x, %g eps = 1.0e-05 : {ty((T, D))}, {ty((D,))}\n"
           f"  return %r : {ty((T, D))}",
           [("x", x, ty((T, D))), ("g", g, ty((D,)))], [ty((T, D))],
           [(T, D)], [np.uint16], "f_0_norm")
xr = f64(x)[:R]
want = xr / np.sqrt(np.mean(xr * xr, -1, keepdims=True) + 1e-5) * f64(g)
chk.check("rms_norm", from_bf16(y)[:R], want, BF16_TOL)

# --- swiglu + residual add (one elementwise kernel)
a, b, res = act((T, D)), act((T, D)), act((T, D))
(y,) = run("swiglu",
           f"  %s = colossus.swiglu %a, %b : {ty((T, D))}\n"
           f"  %r = colossus.add %res, %s : {ty((T, D))}\n"
           f"  return %r : {ty((T, D))}",
           [("a", a, ty((T, D))), ("b", b, ty((T, D))), ("res", res, ty((T, D)))],
           [ty((T, D))], [(T, D)], [np.uint16], "f_0_elementwise")
ar, br, rr = f64(a)[:R], f64(b)[:R], f64(res)[:R]
want = rr + ar / (1 + np.exp(-ar)) * br
chk.check("swiglu + add", from_bf16(y)[:R], want, BF16_TOL)

# --- attention: causal, GQA 2, bf16 q and caches, bf16 output (the sum over
# keys is kept in f32 and rounded once)
H, HKV, HD, S = 4, 2, 8, 9
scale = 1.0 / np.sqrt(HD)
pos = np.array([r % NT for r in range(T)], np.int32)
q = act((T, H * HD))
kc, vc = par((NB, S, HKV * HD)), par((NB, S, HKV * HD))
ctype = ty((NB, S, HKV * HD))
attrs = (f"{{num_heads = {H} : i64, num_kv_heads = {HKV} : i64, "
         f"head_dim = {HD} : i64, scale = {scale} : f64}}")
(y,) = run("attn",
           f"  %r = colossus.attention %q, %k, %v, %p {attrs} : "
           f"{ty((T, H * HD))}, {ctype}, {ctype}, tensor<{T}xi32>\n"
           f"  return %r : {ty((T, H * HD))}",
           [("q", q, ty((T, H * HD))), ("k", kc, ctype), ("v", vc, ctype),
            ("p", pos, f"tensor<{T}xi32>")],
           [ty((T, H * HD))], [(T, H * HD)], [np.uint16], "f_0_attention")
want = np.zeros((R, H * HD))
qf, kf, vf = f64(q), f64(kc), f64(vc)
for r in range(R):
    bb, p = r // NT, pos[r]
    for h in range(H):
        kv = h // (H // HKV)
        qv = qf[r, h * HD:(h + 1) * HD]
        ks = kf[bb, :p + 1, kv * HD:(kv + 1) * HD]
        vs = vf[bb, :p + 1, kv * HD:(kv + 1) * HD]
        s = ks @ qv * scale
        pr = np.exp(s - s.max())
        pr /= pr.sum()
        want[r, h * HD:(h + 1) * HD] = pr @ vs
chk.check("attention", from_bf16(y)[:R], want, BF16_TOL)

# --- embedding (a gather is exact)
V = 20
table = par((V, D))
ids = rng.integers(0, V, size=T).astype(np.int32)
(y,) = run("embed",
           f"  %r = colossus.embedding %t[%i] : {ty((V, D))}, tensor<{T}xi32>\n"
           f"  return %r : {ty((T, D))}",
           [("t", table, ty((V, D))), ("i", ids, f"tensor<{T}xi32>")],
           [ty((T, D))], [(T, D)], [np.uint16], "f_0_embedding")
chk.check("embedding", from_bf16(y)[:R], f64(table)[ids[:R]], 0.0)

# --- the rounding itself: values halfway between two bf16 numbers round to
# even, NaN stays NaN (one elementwise kernel storing f32 sums as bf16)
halves = np.array([1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8, -(1.0 + 2.0**-8), np.nan],
                  np.float32)
xs = np.zeros((T, 4), np.float32)
xs[:] = halves
zs = np.zeros((T, 4), np.float32)
(y,) = run("round",
           f"  %s = colossus.add %x, %z : {ty((T, 4), 'f32')}\n"
           f"  %r = colossus.convert %s to bf16 : {ty((T, 4), 'f32')}\n"
           f"  return %r : {ty((T, 4))}",
           [("x", xs, ty((T, 4), "f32")), ("z", zs, ty((T, 4), "f32"))],
           [ty((T, 4))], [(T, 4)], [np.uint16], "f_0_elementwise")
got = y[0]
want_bits = np.array([0x3F80, 0x3F82, 0xBF80], np.uint16)  # ties to even
chk.count += 1
ok = (got[:3] == want_bits).all() and np.isnan(from_bf16(got[3]))
if chk.comparing():
    print(f"{'ok  ' if ok else 'FAIL'} round to nearest even: {[hex(v) for v in got]}")
    chk.failures += 0 if ok else 1

sys.exit(chk.done())
