"""Numerics of the training kernels, op by op, against jax.vjp.

Each case compiles a one-op graph for the cpu target, runs its kernel(s)
on random inputs with an active region smaller than the capacity (the rows
past it are poisoned with NaN, so a kernel that reads them fails), and
compares with the vector-Jacobian product JAX computes for the forward op's
reference semantics (float32). Usage: check_training_ops.py (colossus-compile
on PATH or in $COLOSSUS_COMPILE).
"""
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from opcheck import Checker, Kernel, mlir_type, one_op  # noqa: E402

T, NB, NT = 12, 2, 5  # capacity 12 rows, 10 active
R = NB * NT
D, N, V = 16, 24, 20
TOL = 2e-5
rng = np.random.default_rng(0)
chk = Checker()


def act(shape, scale=1.0):
    """A [T, ...] activation: random active rows, NaN past them."""
    a = (rng.standard_normal(shape) * scale).astype(np.float32)
    a[R:] = np.nan
    return a


def par(shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def run(name, op_text, args, results, out_shapes, symbols):
    k = Kernel(one_op(op_text, args, results), name, chk.workdir)
    inputs = [a for _, a in args]
    outs = []
    for sym, shapes in zip(symbols, out_shapes):
        outs += k(sym, inputs, shapes, NB, NT, 0)
    return outs


def t(shape):
    return "tensor<" + "x".join(str(d) for d in shape) + "xf32>"


# --- rms_norm: dx (row kernel) and dweight (reduction over the rows)
x, w, dy = act((T, D)), par((D,)), act((T, D))
dx, dw = run("rms", f"colossus.rms_norm_grad %x, %w, %dy eps = 1.0e-05 : {t((T, D))}, {t((D,))}",
             [("x", x), ("w", w), ("dy", dy)], [t((T, D)), t((D,))],
             [[(T, D)], [(D,)]], ["f_0_norm_grad", "f_1_norm_grad"])
def rms(x, w):
    return x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-5) * w
_, vjp = jax.vjp(rms, x[:R], w)
rdx, rdw = vjp(dy[:R])
chk.check("rms_norm_grad dx", dx[:R], rdx, TOL)
chk.check("rms_norm_grad dweight", dw, rdw, TOL)

# --- layer_norm: dx, dweight, dbias
x, w, b, dy = act((T, D)), par((D,)), par((D,)), act((T, D))
dx, dw, db = run("ln", f"colossus.layer_norm_grad %x, %w, %dy eps = 1.0e-05 : {t((T, D))}, {t((D,))}",
                 [("x", x), ("w", w), ("dy", dy)], [t((T, D)), t((D,)), t((D,))],
                 [[(T, D)], [(D,), (D,)]], ["f_0_norm_grad", "f_1_norm_grad"])
def ln(x, w, b):
    m = jnp.mean(x, -1, keepdims=True)
    v = jnp.mean((x - m) ** 2, -1, keepdims=True)
    return (x - m) * jax.lax.rsqrt(v + 1e-5) * w + b
_, vjp = jax.vjp(ln, x[:R], w, b)
rdx, rdw, rdb = vjp(dy[:R])
chk.check("layer_norm_grad dx", dx[:R], rdx, TOL)
chk.check("layer_norm_grad dweight", dw, rdw, TOL)
chk.check("layer_norm_grad dbias", db, rdb, TOL)

# --- elementwise: silu, gelu (tanh, erf), swiglu
x, dy = act((T, D), 2.0), act((T, D))
(out,) = run("silu", f"colossus.silu_grad %x, %dy : {t((T, D))}",
             [("x", x), ("dy", dy)], [t((T, D))], [[(T, D)]], ["f_0_elementwise"])
_, vjp = jax.vjp(jax.nn.silu, x[:R])
chk.check("silu_grad", out[:R], vjp(dy[:R])[0], TOL)
for approx, tanh in (("tanh", True), ("erf", False)):
    (out,) = run("gelu_" + approx,
                 f"colossus.gelu_grad %x, %dy {{approximate = #colossus<gelu_approx {approx}>}} : {t((T, D))}",
                 [("x", x), ("dy", dy)], [t((T, D))], [[(T, D)]], ["f_0_elementwise"])
    _, vjp = jax.vjp(lambda v: jax.nn.gelu(v, approximate=tanh), x[:R])
    chk.check(f"gelu_grad ({approx})", out[:R], vjp(dy[:R])[0], TOL)
g, u = act((T, D), 2.0), act((T, D))
dg, du = run("swiglu", f"colossus.swiglu_grad %g, %u, %dy : {t((T, D))}",
             [("g", g), ("u", u), ("dy", dy)], [t((T, D)), t((T, D))],
             [[(T, D), (T, D)]], ["f_0_elementwise"])
_, vjp = jax.vjp(lambda a, c: jax.nn.silu(a) * c, g[:R], u[:R])
rdg, rdu = vjp(dy[:R])
chk.check("swiglu_grad dgate", dg[:R], rdg, TOL)
chk.check("swiglu_grad dup", du[:R], rdu, TOL)

# --- softmax_grad from the output
y = np.array(jax.nn.softmax(jnp.asarray(np.nan_to_num(act((T, D))))), dtype=np.float32)
y[R:] = np.nan
(out,) = run("softmax", f"colossus.softmax_grad %y, %dy : {t((T, D))}",
             [("y", y), ("dy", dy)], [t((T, D))], [[(T, D)]], ["f_0_softmax_grad"])
xs = jnp.log(jnp.asarray(y[:R]))
_, vjp = jax.vjp(jax.nn.softmax, xs)
chk.check("softmax_grad", out[:R], vjp(dy[:R])[0], TOL)

# --- cross entropy (mean over valid targets, ignore_index -100) and its grad
logits = act((T, V), 3.0)
targets = rng.integers(0, V, size=T).astype(np.int32)
targets[3] = -100
targets[R:] = -7  # past the active rows: must not be read
def ce(lg):
    valid = targets[:R] != -100
    lse = jax.nn.logsumexp(lg, -1)
    picked = jnp.take_along_axis(lg, jnp.clip(targets[:R], 0)[:, None], -1)[:, 0]
    return jnp.sum(jnp.where(valid, lse - picked, 0.0)) / jnp.sum(valid)
(loss,) = run("ce", f"colossus.cross_entropy %lg, %tg : {t((T, V))}, tensor<{T}xi32>",
              [("lg", logits), ("tg", targets)], ["tensor<f32>"], [[()]], ["f_0_loss"])
rloss, vjp = jax.vjp(ce, logits[:R])
chk.check("cross_entropy", np.asarray(loss), rloss, 1e-6)
dloss = np.array(1.7, dtype=np.float32)
(out,) = run("ceg", f"colossus.cross_entropy_grad %lg, %tg, %dl : {t((T, V))}, tensor<{T}xi32>, tensor<f32>",
             [("lg", logits), ("tg", targets), ("dl", dloss)], [t((T, V))], [[(T, V)]],
             ["f_0_loss_grad"])
chk.check("cross_entropy_grad", out[:R], vjp(jnp.float32(1.7))[0], TOL)
# The loss and its gradient together: colossus-fuse makes them one row kernel
# (cross_entropy_rows: per-row loss terms, dlogits) and a sum of the terms.
pair = (f"func.func @f(%lg: {t((T, V))}, %tg: tensor<{T}xi32>, %dl: tensor<f32>) -> (tensor<f32>, {t((T, V))}) {{\n"
        f"  %l = colossus.cross_entropy %lg, %tg : {t((T, V))}, tensor<{T}xi32>\n"
        f"  %g = colossus.cross_entropy_grad %lg, %tg, %dl : {t((T, V))}, tensor<{T}xi32>, tensor<f32>\n"
        f"  return %l, %g : tensor<f32>, {t((T, V))}\n}}\n")
k = Kernel(pair, "cepair", chk.workdir)
terms, dlg = k("f_0_loss_grad", [logits, targets, dloss], [(T,), (T, V)], NB, NT, 0)
(ploss,) = k("f_1_loss", [terms], [()], NB, NT, 0)
chk.check("cross_entropy_rows + row_sum: loss", np.asarray(ploss), rloss, 1e-6)
chk.check("cross_entropy_rows: dlogits", dlg[:R], vjp(jnp.float32(1.7))[0], TOL)

# --- linear: weight gradients in both layouts, bias gradient
x, dy = act((T, D)), act((T, N))
for tw in (True, False):
    shape = (N, D) if tw else (D, N)
    (dwt,) = run(f"lwg_{tw}",
                 f"colossus.linear_weight_grad %x, %dy {{transpose_w = {str(tw).lower()}}} : {t((T, D))}, {t((T, N))}",
                 [("x", x), ("dy", dy)], [t(shape)], [[shape]], ["f_0_reduce"])
    wt = par(shape)
    fwd = (lambda wv: x[:R] @ wv.T) if tw else (lambda wv: x[:R] @ wv)
    _, vjp = jax.vjp(fwd, wt)
    chk.check(f"linear_weight_grad (transpose_w={tw})", dwt, vjp(dy[:R])[0], TOL)
(cs,) = run("colsum", f"colossus.column_sum %dy : {t((T, N))}", [("dy", dy)],
            [t((N,))], [[(N,)]], ["f_0_reduce"])
chk.check("column_sum", cs, np.sum(dy[:R], 0), TOL)

# --- embedding: scatter-add of repeated ids
ids = rng.integers(0, V, size=T).astype(np.int32)
ids[1] = ids[2] = ids[7]
ids[R:] = 10**6
dy = act((T, D))
(de,) = run("embg", f"colossus.embedding_grad %ids, %dy {{vocab_size = {V} : i64}} : tensor<{T}xi32>, {t((T, D))}",
            [("ids", ids), ("dy", dy)], [t((V, D))], [[(V, D)]], ["f_0_reduce"])
table = par((V, D))
_, vjp = jax.vjp(lambda tb: tb[ids[:R]], table)
chk.check("embedding_grad", de, vjp(dy[:R])[0], TOL)

# --- views materialized: pad_columns, cache_read
x = act((T, D))
(pc,) = run("pad", f"colossus.pad_columns %x[8, 40] : {t((T, D))}", [("x", x)],
            [t((T, 40))], [[(T, 40)]], ["f_0_elementwise"])
want = np.zeros((R, 40), np.float32)
want[:, 8:24] = x[:R]
chk.check("pad_columns", pc[:R], want, 0.0)
S = 9
cache = par((NB, S, D))
pos = np.array([(r % NT) + 2 for r in range(T)], np.int32)
(cr,) = run("cread", f"colossus.cache_read %c[%p] : tensor<{NB}x{S}x{D}xf32>, tensor<{T}xi32>",
            [("c", cache), ("p", pos)], [t((T, D))], [[(T, D)]], ["f_0_elementwise"])
# row r reads cache[r // nt, positions[r]].
want = np.stack([cache[r // NT, pos[r]] for r in range(R)])
chk.check("cache_read", cr[:R], want, 0.0)

# --- attention: the forward with save_lse (output and per-(row, head)
# log-sum-exp), then dq (per query, head) and dk, dv (per key, kv head) from
# those saved statistics; GQA 2, causal, with and without a sliding window.
H, HKV, HD, S = 4, 2, 8, 9
scale = 1.0 / np.sqrt(HD)
pos = np.array([r % NT for r in range(T)], np.int32)
for window in (0, 3):
    q, dout = act((T, H * HD)), act((T, H * HD))
    kc, vc = par((NB, S, HKV * HD)), par((NB, S, HKV * HD))
    attrs = (f"num_heads = {H} : i64, num_kv_heads = {HKV} : i64, head_dim = {HD} : i64, "
             f"scale = {scale} : f64, sliding_window = {window} : i64")
    ctype = f"tensor<{NB}x{S}x{HKV * HD}xf32>"
    out, lse = run(f"attnf{window}",
                   f"colossus.attention %q, %k, %v, %p {{{attrs}, save_lse}} : {t((T, H * HD))}, {ctype}, {ctype}, tensor<{T}xi32>",
                   [("q", q), ("k", kc), ("v", vc), ("p", pos)],
                   [t((T, H * HD)), t((T, H))], [[(T, H * HD), (T, H)]],
                   ["f_0_attention"])
    dq, dk, dv = run(f"attn{window}",
                     f"colossus.attention_grad %q, %k, %v, %p, %do, %o, %lse {{{attrs}}} : {t((T, H * HD))}, {ctype}, tensor<{T}xi32>, {t((T, H))}",
                     [("q", q), ("k", kc), ("v", vc), ("p", pos), ("do", dout),
                      ("o", out), ("lse", lse)],
                     [t((T, H * HD)), ctype, ctype],
                     [[(T, H * HD)], [(NB, S, HKV * HD), (NB, S, HKV * HD)]],
                     ["f_0_attention_grad", "f_1_attention_grad"])

    def scores(qa, ka):
        res = []
        for bb in range(NB):
            qb = qa[bb * NT:(bb + 1) * NT].reshape(NT, H, HD)
            kb = jnp.repeat(ka[bb].reshape(NT, HKV, HD), H // HKV, axis=1)
            sc = jnp.einsum("ihd,jhd->hij", qb, kb) * scale
            i = jnp.arange(NT)[:, None]
            j = jnp.arange(NT)[None, :]
            mask = j <= i
            if window:
                mask = mask & (j > i - window)
            res.append(jnp.where(mask[None], sc, -jnp.inf))
        return res

    def attn(qa, ka, va):
        outs = []
        for bb, sc in enumerate(scores(qa, ka)):
            vb = jnp.repeat(va[bb].reshape(NT, HKV, HD), H // HKV, axis=1)
            pr = jax.nn.softmax(sc, -1)
            outs.append(jnp.einsum("hij,jhd->ihd", pr, vb).reshape(NT, H * HD))
        return jnp.concatenate(outs)
    kact, vact = kc[:, :NT], vc[:, :NT]
    rout, vjp = jax.vjp(attn, q[:R], kact, vact)
    rlse = jnp.concatenate([jax.nn.logsumexp(sc, -1).T for sc in scores(q[:R], kact)])
    chk.check(f"attention out (window {window})", out[:R], rout, TOL)
    chk.check(f"attention lse (window {window})", lse[:R], rlse, TOL)
    rdq, rdk, rdv = vjp(dout[:R])
    chk.check(f"attention_grad dq (window {window})", dq[:R], rdq, TOL)
    chk.check(f"attention_grad dk (window {window})", dk[:, :NT], rdk, TOL)
    chk.check(f"attention_grad dv (window {window})", dv[:, :NT], rdv, TOL)

# --- optimizer: global norm, clipping factor, AdamW (PyTorch semantics)
# hyper = [lr, 1 - b1^t, 1 - b2^t, max_norm, grad_scale]; the norm is that of
# grad_scale * the tensors (the mean of accumulated micro-batch gradients).
ga, gb = par((6, 5), 3.0), par((7,), 3.0)
for gscale in (1.0, 0.25):
    hin = np.array([3e-4, 0.1, 0.05, 1.0, gscale], np.float32)
    (gn,) = run("gnorm", f"colossus.global_norm %h, %a, %b : tensor<5xf32>, {t((6, 5))}, {t((7,))}",
                [("h", hin), ("a", ga), ("b", gb)], ["tensor<1xf32>"], [[(1,)]], ["f_0_global_norm"])
    chk.check(f"global_norm (grad_scale {gscale})", gn,
              [gscale * np.sqrt(np.sum(ga.astype(np.float64) ** 2) + np.sum(gb.astype(np.float64) ** 2))], 1e-6)
for max_norm, norm, gscale in ((1.0, 5.0, 1.0), (10.0, 5.0, 1.0), (0.0, 5.0, 1.0),
                               (1.0, 5.0, 0.5), (10.0, 5.0, 0.5)):
    hin = np.array([3e-4, 0.1, 0.05, max_norm, gscale], np.float32)
    (hy,) = run("clip", "colossus.clip_hyper %h, %n : tensor<5xf32>, tensor<1xf32>",
                [("h", hin), ("n", np.array([norm], np.float32))], ["tensor<4xf32>"],
                [[(4,)]], ["f_0_clip"])
    scale = gscale * (max_norm / (norm + 1e-6) if 0 < max_norm < norm else 1.0)
    chk.check(f"clip_hyper (max {max_norm}, grad_scale {gscale})", hy, [3e-4, 0.1, 0.05, scale], 1e-7)
for shape, wd in (((6, 5), 0.1), ((7,), 0.0)):
    pp, gg, mm, vv = par(shape), par(shape), par(shape, 0.1), np.abs(par(shape, 0.01))
    hyper = np.array([1e-2, 1 - 0.9 ** 3, 1 - 0.95 ** 3, 0.5], np.float32)
    ty = t(shape)
    np_, nm, nv = run(f"adamw{len(shape)}",
                      f"colossus.adamw %p, %g, %m, %v, %h {{beta1 = 0.9 : f64, beta2 = 0.95 : f64, eps = 1.0e-08 : f64, weight_decay = {wd} : f64}} : {ty}, tensor<4xf32>",
                      [("p", pp), ("g", gg), ("m", mm), ("v", vv), ("h", hyper)],
                      [ty, ty, ty], [[shape, shape, shape]], ["f_0_adamw"])
    f = np.float32
    g = gg * f(0.5)
    m = f(0.9) * mm + f(0.1) * g
    v = f(0.95) * vv + f(0.05) * g * g
    p = pp * f(1 - 1e-2 * wd) if wd else pp
    p = p - f(1e-2) * ((m / hyper[1]) / (np.sqrt(v / hyper[2]) + f(1e-8)))
    chk.check(f"adamw param {shape}", np_, p, 1e-6)
    chk.check(f"adamw exp_avg {shape}", nm, m, 1e-6)
    chk.check(f"adamw exp_avg_sq {shape}", nv, v, 1e-6)

sys.exit(chk.done())
