"""Op-level numerics harness: compile a one-op colossus graph for the cpu
target (colossus-compile GRAPH.mlir --emit=cpu-object), call its kernel
through ctypes on numpy arrays, and compare with an independent reference
(numpy / jax.vjp).

Kernel calling convention (docs/artifact-format.md): kernel(void **args,
int64 nb, int64 nt, int64 pos0) where args are the fusion's inputs then its
results. For a graph of one op whose operands are the function's arguments
in order, the inputs are those arguments in order.
"""
import ctypes
import os
import subprocess
import tempfile

import numpy as np

COMPILE = os.environ.get("COLOSSUS_COMPILE", "colossus-compile")


def mlir_type(a):
    if a.dtype == np.float32:
        elem = "f32"
    elif a.dtype == np.int32:
        elem = "i32"
    else:
        raise TypeError(a.dtype)
    if a.ndim == 0:
        return f"tensor<{elem}>"
    return "tensor<" + "x".join(str(d) for d in a.shape) + f"x{elem}>"


class Kernel:
    _count = 0

    def __init__(self, graph, name, workdir):
        # A fresh file per kernel: rewriting a loaded shared object crashes.
        Kernel._count += 1
        name = f"{name}-{Kernel._count}"
        path = os.path.join(workdir, name + ".mlir")
        with open(path, "w") as f:
            f.write(graph)
        so = os.path.join(workdir, name + ".so")
        r = subprocess.run([COMPILE, path, "--emit=cpu-object", "-o", so],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"colossus-compile failed:\n{graph}\n{r.stderr}")
        self.lib = ctypes.CDLL(so)

    def __call__(self, symbol, inputs, out_shapes, nb, nt, pos0=0,
                 out_dtypes=None):
        dtypes = out_dtypes or [np.float32] * len(out_shapes)
        outs = [np.zeros(s, dtype=d) for s, d in zip(out_shapes, dtypes)]
        arrays = [np.ascontiguousarray(a) for a in inputs] + outs
        ptrs = (ctypes.c_void_p * len(arrays))(
            *[a.ctypes.data_as(ctypes.c_void_p) for a in arrays])
        fn = getattr(self.lib, symbol)
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                       ctypes.c_int64]
        fn(ptrs, nb, nt, pos0)
        return outs


def one_op(op_text, args, results):
    """A function @f(args...) -> results with one op `%r = op_text`.

    args: list of (name, array); results: list of result types."""
    sig = ", ".join(f"%{n}: {mlir_type(a)}" for n, a in args)
    rtypes = ", ".join(results)
    nres = len(results)
    lhs = "%r" if nres == 1 else f"%r:{nres}"
    rets = "%r" if nres == 1 else ", ".join(f"%r#{i}" for i in range(nres))
    return (f"func.func @f({sig}) -> ({rtypes}) {{\n"
            f"  {lhs} = {op_text}\n"
            f"  return {rets} : {rtypes}\n}}\n")


def max_rel(got, want):
    want = np.asarray(want, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    scale = max(np.max(np.abs(want)), 1e-30)
    return float(np.max(np.abs(got - want)) / scale)


class Checker:
    def __init__(self):
        self.workdir = tempfile.mkdtemp(prefix="opcheck-")
        self.failures = 0
        self.count = 0

    def check(self, label, got, want, tol):
        self.count += 1
        err = max_rel(got, want)
        ok = err <= tol and got.shape == np.shape(want)
        print(f"{'ok  ' if ok else 'FAIL'} {label}: max_rel={err:.2e} (tol {tol:.0e})")
        if not ok:
            self.failures += 1

    def done(self):
        print(f"opcheck: {self.count - self.failures} passed, {self.failures} failed")
        return 1 if self.failures else 0
