"""Op-level numerics harness: compile a one-op colossus graph, run its
kernel(s) on numpy arrays, and compare with an independent reference
(numpy / jax.vjp).

Backends ($COLOSSUS_OPCHECK_BACKEND):
  cpu (default)  colossus-compile GRAPH.mlir --emit=cpu-object, the kernels
                 called through ctypes.
  ptx-prepare    colossus-compile GRAPH.mlir --target=sm_90a --emit=ptx,
                 saved gzip'ed as $COLOSSUS_OPCHECK_DIR/<sha256 of the
                 graph>.ptx.gz (the GPU check's bundle: the GPU machine has
                 no compiler); nothing runs, nothing is compared.
  cuda           the PTX saved by ptx-prepare, loaded and launched through
                 the CUDA driver (libcuda via ctypes) on device 0 with the
                 launch of its `// colossus.simt` line (a 1-D grid of
                 ceil(rows * cols / block_dim) blocks, rows = nb * nt or
                 fixed; docs/artifact-format.md).

Every output buffer is poisoned (all bytes 0xFF: NaN in f32 and bf16, -1 in
i32) before the kernel runs, so an element the kernel should write and does
not shows up as NaN.

Kernel calling convention (docs/artifact-format.md): kernel(void **args,
int64 nb, int64 nt, int64 pos0) on the cpu, kernel(args..., nb, nt, pos0)
on cuda, where args are the fusion's inputs then its results. For a graph
of one op whose operands are the function's arguments in order, the inputs
are those arguments in order.
"""
import ctypes
import gzip
import hashlib
import os
import re
import subprocess
import tempfile

import numpy as np

COMPILE = os.environ.get("COLOSSUS_COMPILE", "colossus-compile")
BACKEND = os.environ.get("COLOSSUS_OPCHECK_BACKEND", "cpu")
PTX_DIR = os.environ.get("COLOSSUS_OPCHECK_DIR", "")
if BACKEND not in ("cpu", "ptx-prepare", "cuda"):
    raise SystemExit(f"opcheck: COLOSSUS_OPCHECK_BACKEND={BACKEND!r}: expected cpu, ptx-prepare or cuda")
if BACKEND != "cpu" and not PTX_DIR:
    raise SystemExit(f"opcheck: the {BACKEND} backend needs COLOSSUS_OPCHECK_DIR")


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


def ptx_path(graph):
    return os.path.join(PTX_DIR, hashlib.sha256(graph.encode()).hexdigest()[:24] + ".ptx.gz")


def parse_ptx(text):
    """`colossus-compile GRAPH.mlir --emit=ptx` output -> {kernel: (ptx,
    launch dict)}; a kernel without a `// colossus.simt` line is refused."""
    kernels = {}
    parts = re.split(r"^// ----- kernel (\S+) [^\n]*-----\n", text, flags=re.M)
    for name, body in zip(parts[1::2], parts[2::2]):
        m = re.match(r"// colossus\.simt (.*)\n", body)
        if not m:
            raise RuntimeError(f"opcheck: kernel {name} has no colossus.simt launch line "
                               f"(a Hopper kernel? not supported by this harness)")
        launch = dict(kv.split("=", 1) for kv in m.group(1).split())
        kernels[name] = (body[m.end():], launch)
    return kernels


class Cuda:
    """The few driver calls the cuda backend needs (device 0, one context)."""
    _instance = None

    @classmethod
    def get(cls):
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def __init__(self):
        lib = os.environ.get("COLOSSUS_LIBCUDA") or "libcuda.so.1"
        try:
            self.cu = ctypes.CDLL(lib)
        except OSError as e:
            raise SystemExit(f"opcheck: the cuda backend cannot load the CUDA driver {lib}: {e}")
        self.check(self.cu.cuInit(0), "cuInit")
        dev = ctypes.c_int()
        self.check(self.cu.cuDeviceGet(ctypes.byref(dev), 0), "cuDeviceGet")
        self.ctx = ctypes.c_void_p()
        self.check(self.cu.cuDevicePrimaryCtxRetain(ctypes.byref(self.ctx), dev), "cuDevicePrimaryCtxRetain")
        self.check(self.cu.cuCtxSetCurrent(self.ctx), "cuCtxSetCurrent")

    def check(self, rc, what):
        if rc != 0:
            name = ctypes.c_char_p()
            self.cu.cuGetErrorName(rc, ctypes.byref(name))
            raise RuntimeError(f"{what} failed: {name.value.decode() if name.value else rc}")

    def load(self, ptx, name):
        mod = ctypes.c_void_p()
        self.check(self.cu.cuModuleLoadData(ctypes.byref(mod), ctypes.c_char_p(ptx.encode() + b"\0")),
                   f"cuModuleLoadData({name})")
        fn = ctypes.c_void_p()
        self.check(self.cu.cuModuleGetFunction(ctypes.byref(fn), mod, name.encode()),
                   f"cuModuleGetFunction({name})")
        return fn

    def run(self, fn, name, launch, arrays, nb, nt, pos0):
        """Copies `arrays` to the device, launches, copies them all back."""
        ptrs = []
        try:
            for a in arrays:
                p = ctypes.c_uint64()
                self.check(self.cu.cuMemAlloc_v2(ctypes.byref(p), ctypes.c_size_t(max(a.nbytes, 16))),
                           "cuMemAlloc")
                ptrs.append(p)
                self.check(self.cu.cuMemcpyHtoD_v2(p, a.ctypes.data_as(ctypes.c_void_p),
                                                   ctypes.c_size_t(a.nbytes)), "cuMemcpyHtoD")
            region = [ctypes.c_int64(nb), ctypes.c_int64(nt), ctypes.c_int64(pos0)]
            params = (ctypes.c_void_p * (len(ptrs) + 3))(
                *[ctypes.cast(ctypes.byref(p), ctypes.c_void_p) for p in ptrs + region])
            rows = nb * nt if launch["rows"] == "tokens" else int(launch["rows"])
            block = int(launch["block_dim"])
            total = rows * int(launch["cols"])
            if total > 0:
                grid = (total + block - 1) // block
                self.check(self.cu.cuLaunchKernel(fn, grid, 1, 1, block, 1, 1, 0, None, params, None),
                           f"cuLaunchKernel({name}, grid {grid}, block {block})")
            self.check(self.cu.cuCtxSynchronize(), f"{name}: cuCtxSynchronize")
            for a, p in zip(arrays, ptrs):
                self.check(self.cu.cuMemcpyDtoH_v2(a.ctypes.data_as(ctypes.c_void_p), p,
                                                   ctypes.c_size_t(a.nbytes)), "cuMemcpyDtoH")
        finally:
            for p in ptrs:
                self.cu.cuMemFree_v2(p)


class Kernel:
    _count = 0

    def __init__(self, graph, name, workdir):
        # A fresh file per kernel: rewriting a loaded shared object crashes.
        Kernel._count += 1
        name = f"{name}-{Kernel._count}"
        path = os.path.join(workdir, name + ".mlir")
        with open(path, "w") as f:
            f.write(graph)
        self.graph = graph
        if BACKEND == "cuda":
            with gzip.open(ptx_path(graph), "rt") as f:
                self.kernels = parse_ptx(f.read())
            self.functions = {}
            return
        if BACKEND == "ptx-prepare":
            r = subprocess.run([COMPILE, path, "--target=sm_90a", "--emit=ptx"],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"colossus-compile failed:\n{graph}\n{r.stderr}")
            parse_ptx(r.stdout)  # every kernel has its launch line
            os.makedirs(PTX_DIR, exist_ok=True)
            # mtime=0: the same graph gives the same bytes.
            with open(ptx_path(graph), "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as z:
                z.write(r.stdout.encode())
            return
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
        for o in outs:
            o.reshape(-1).view(np.uint8).fill(0xFF)  # poison: NaN (f32, bf16), -1 (i32)
        arrays = [np.ascontiguousarray(a) for a in inputs] + outs
        if BACKEND == "ptx-prepare":
            return outs
        if BACKEND == "cuda":
            cuda = Cuda.get()
            if symbol not in self.kernels:
                raise RuntimeError(f"opcheck: no kernel {symbol} in the PTX of\n{self.graph}")
            launch = self.kernels[symbol][1]
            work = [a.copy() for a in arrays]
            if "scratch_bytes" in launch:
                # The fusion's scratch buffer (poisoned too) after the results.
                work.append(np.full(int(launch["scratch_bytes"]), 0xFF, np.uint8))
            if int(launch["num_args"]) != len(work):
                raise RuntimeError(f"opcheck: {symbol} takes {launch['num_args']} buffers, given {len(work)}")
            name = symbol
            while True:  # the kernel, then its `then` kernel(s), same buffers
                if name not in self.functions:
                    self.functions[name] = cuda.load(self.kernels[name][0], name)
                cuda.run(self.functions[name], name, self.kernels[name][1], work, nb, nt, pos0)
                name = self.kernels[name][1].get("then")
                if not name:
                    break
                if name not in self.kernels:
                    raise RuntimeError(f"opcheck: {symbol}'s then-kernel {name} is not in the PTX")
            return work[len(inputs):len(arrays)]
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

    @staticmethod
    def comparing():
        """False when the backend only prepares (nothing ran)."""
        return BACKEND != "ptx-prepare"

    def check(self, label, got, want, tol):
        self.count += 1
        if BACKEND == "ptx-prepare":
            return
        err = max_rel(got, want)
        ok = err <= tol and got.shape == np.shape(want)
        print(f"{'ok  ' if ok else 'FAIL'} {label}: max_rel={err:.2e} (tol {tol:.0e})")
        if not ok:
            self.failures += 1

    def done(self):
        if BACKEND == "ptx-prepare":
            print(f"opcheck: prepared the PTX of {Kernel._count} graphs for {self.count} checks in {PTX_DIR}")
            return 0
        print(f"opcheck: {self.count - self.failures} passed, {self.failures} failed")
        return 1 if self.failures else 0
