#!/usr/bin/env python3
"""The one-call GPU check of the Hopper issue (docs/gpu-check.md).

  gpu_check.py seal BUNDLE
      (scripts/gpu-prepare.sh) add the sizes and sha256 of every file of the
      bundle to BUNDLE/manifest.json.
  gpu_check.py check BUNDLE [--dry-run] [--out DIR] [--budget SECONDS]
      run the checks the manifest lists on this machine's GPU (or, with
      --dry-run, only validate the bundle and show the plan).

`check` is what scripts/gpu-check.sh runs. Every step runs as a child
process with a time limit (its own limit, cut to what is left of --budget);
a step that fails, times out or is skipped is reported and the run goes on.
Nothing prints a timing ratio that was not measured in this run.

Exit status of `check`: 0 every numerics check passed (the models' sm_90a
artifacts against the cpu, and the Hopper GEMM and attention against
their float64 references); 1 some numerics check failed or could not run (dry run: the
bundle is invalid); 2 usage error or no readable manifest.

Python 3.8+, standard library only (numpy is used when importable).
"""

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
from array import array

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
H100_BF16_PEAK = 989e12  # dense BF16 tensor FLOP/s (DESIGN.md), the MFU's peak
RUNTIME_SOURCES = [
    "runtime/src/Artifact.cpp", "runtime/src/Checkpoint.cpp", "runtime/src/CpuDevice.cpp",
    "runtime/src/CudaDevice.cpp", "runtime/src/FileIO.cpp", "runtime/src/Npy.cpp",
    "runtime/src/OptimizerRef.cpp", "runtime/src/SafetensorsWriter.cpp",
    "runtime/src/Sampling.cpp", "runtime/src/Session.cpp", "runtime/src/TokenData.cpp",
    "runtime/src/Weights.cpp", "tools/colossus-run/main.cpp"]
HEADERS = ["include/flatbuffers/flatbuffers.h", "include/nlohmann/json.hpp",
           "include/colossus/schema/colossus_generated.h"]

try:
    import numpy as np
except ImportError:  # the comparisons fall back to plain Python
    np = None


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- bundle -------------------------------------------------------------------

def seal(bundle):
    path = os.path.join(bundle, "manifest.json")
    manifest = json.load(open(path))
    files = {}
    for root, _, names in os.walk(bundle):
        for n in sorted(names):
            full = os.path.join(root, n)
            rel = os.path.relpath(full, bundle)
            if rel == "manifest.json":
                continue
            files[rel] = {"bytes": os.path.getsize(full), "sha256": sha256(full)}
    manifest["files"] = dict(sorted(files.items()))
    manifest["total_bytes"] = sum(f["bytes"] for f in files.values())
    json.dump(manifest, open(path, "w"), indent=1)
    print(f"sealed {path}: {len(files)} files, {manifest['total_bytes'] / 2**20:.1f} MiB")
    return 0


def referenced(manifest):
    """Every bundle path the checks read."""
    refs = [manifest.get("runtime_binary", {}).get("path")] + HEADERS
    for c in manifest.get("numerics", []):
        refs += [c.get(k) for k in ("artifact", "weights", "data", "expected", "expected_json")]
    for g in manifest.get("gemm", []):
        refs.append(g.get("ptx"))
    for a in manifest.get("attention", {}).get("kernels", []):
        refs.append(a.get("ptx"))
    for t in manifest.get("train", []):
        refs += [t.get(k) for k in ("artifact", "weights", "data")]
    if manifest.get("opcheck"):
        refs += [rel for rel in manifest.get("files", {}) if rel.startswith("opcheck/")] or ["opcheck/"]
    return [r for r in refs if r]


def validate(bundle, manifest, hashes=True):
    """Problems with the bundle, as messages (empty: valid)."""
    problems = []
    if manifest.get("bundle_version") != 1:
        problems.append(f"bundle_version {manifest.get('bundle_version')!r}, this script reads 1")
    files = manifest.get("files")
    if not isinstance(files, dict):
        return problems + ["manifest.json has no 'files' (not sealed: run gpu_check.py seal)"]
    for rel, meta in files.items():
        full = os.path.join(bundle, rel)
        if not os.path.isfile(full):
            problems.append(f"{rel}: missing")
        elif os.path.getsize(full) != meta.get("bytes"):
            problems.append(f"{rel}: {os.path.getsize(full)} bytes, the manifest says {meta.get('bytes')}")
        elif hashes and sha256(full) != meta.get("sha256"):
            problems.append(f"{rel}: sha256 differs from the manifest (corrupt or changed)")
    for rel in referenced(manifest):
        if rel not in files:
            problems.append(f"{rel}: used by a check but not in the manifest's files")
    fbs = os.path.join(REPO, "runtime", "schema", "colossus.fbs")
    want = manifest.get("schema_sha256")
    if want and os.path.isfile(fbs) and sha256(fbs) != want:
        problems.append("runtime/schema/colossus.fbs differs from the one the bundle's schema "
                        "header and artifacts were made from: run scripts/gpu-prepare.sh again")
    return problems


# ---- numerics ------------------------------------------------------------------

def load_npy(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:6] != b"\x93NUMPY":
        raise ValueError(f"{path}: not a .npy file")
    major = data[6]
    hlen_size = 2 if major == 1 else 4
    hlen = int.from_bytes(data[8:8 + hlen_size], "little")
    header = data[8 + hlen_size:8 + hlen_size + hlen].decode("latin1")
    if "'<f4'" not in header or "'fortran_order': False" not in header:
        raise ValueError(f"{path}: expected little-endian float32, C order ({header.strip()})")
    shape = tuple(int(v) for v in re.search(r"\(([^)]*)\)", header).group(1).split(",") if v.strip())
    return shape, data[8 + hlen_size + hlen:]


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] != "F32":
            raise ValueError(f"{path}: tensor {name} is {meta['dtype']}, expected F32")
        b, e = meta["data_offsets"]
        out[name] = (tuple(meta["shape"]), data[base + b:base + e])
    return out


def diff_sums(a_bytes, b_bytes):
    """(sum (a-b)^2, sum b^2, all of a finite) for little-endian f32 bytes."""
    if np is not None:
        a = np.frombuffer(a_bytes, dtype="<f4").astype(np.float64)
        b = np.frombuffer(b_bytes, dtype="<f4").astype(np.float64)
        finite = bool(np.isfinite(a).all())
        d = np.where(np.isfinite(a), a - b, 0.0)
        return float(d @ d), float(b @ b), finite
    a, b = array("f"), array("f")
    a.frombytes(a_bytes)
    b.frombytes(b_bytes)
    if sys.byteorder != "little":
        a.byteswap()
        b.byteswap()
    err = ref = 0.0
    finite = True
    for x, y in zip(a, b):
        if math.isfinite(x):
            err += (x - y) * (x - y)
        else:
            finite = False
        ref += y * y
    return err, ref, finite


def rel_error(err_sq, ref_sq, finite):
    if not finite:
        return math.inf
    return math.sqrt(err_sq / ref_sq) if ref_sq > 0 else (0.0 if err_sq == 0 else math.inf)


def compare_logits(got_path, want_path):
    gs, gb = load_npy(got_path)
    ws, wb = load_npy(want_path)
    if gs != ws:
        raise ValueError(f"logits shape {gs}, the cpu's {ws}")
    return {"shape": list(ws), "rel_error": rel_error(*diff_sums(gb, wb))}


def compare_grads(got_path, want_path):
    got, want = load_safetensors(got_path), load_safetensors(want_path)
    if set(got) != set(want):
        raise ValueError(f"gradient names differ: missing {sorted(set(want) - set(got))[:3]}, "
                         f"extra {sorted(set(got) - set(want))[:3]}")
    tot_err = tot_ref = 0.0
    all_finite = True
    worst_name, worst = None, -1.0
    for name in sorted(want):
        if got[name][0] != want[name][0]:
            raise ValueError(f"{name}: shape {got[name][0]}, the cpu's {want[name][0]}")
        e, r, fin = diff_sums(got[name][1], want[name][1])
        tot_err, tot_ref, all_finite = tot_err + e, tot_ref + r, all_finite and fin
        rel = rel_error(e, r, fin)
        if rel > worst:
            worst_name, worst = name, rel
    return {"tensors": len(want), "global_rel_error": rel_error(tot_err, tot_ref, all_finite),
            "worst_tensor": worst_name, "worst_tensor_rel_error": worst}


# ---- the run -------------------------------------------------------------------

def fmt(x, spec=".3g"):
    if x is None:
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return format(x, spec)


class Runner:
    def __init__(self, work, log_file, budget):
        self.work = work
        self.logs = os.path.join(work, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.log_file = log_file
        self.t0 = time.time()
        self.deadline = self.t0 + budget

    def say(self, msg=""):
        line = f"[{time.time() - self.t0:6.1f}s] {msg}" if msg else ""
        print(line, flush=True)
        self.log_file.write(line + "\n")
        self.log_file.flush()

    def left(self):
        return self.deadline - time.time()

    def start(self, name, cmd, cwd=None, env=None):
        self.say(f"$ {' '.join(cmd)}")
        out = open(os.path.join(self.logs, name + ".log"), "w")
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True)
        return p, out

    def finish(self, name, p, out, limit, t_start):
        """Waits for a started step; returns its result dict."""
        res = {"step": name, "limit_s": round(limit, 1)}
        try:
            so, se = p.communicate(timeout=max(1.0, limit - (time.time() - t_start)))
            res["timed_out"] = False
        except subprocess.TimeoutExpired:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(p.pid, sig)  # the step's own process group
                except ProcessLookupError:
                    break
                try:
                    so, se = p.communicate(timeout=5)
                    break
                except subprocess.TimeoutExpired:
                    continue
            else:
                so, se = b"", b""
            res["timed_out"] = True
        res["rc"] = p.returncode
        res["seconds"] = round(time.time() - t_start, 2)
        res["stdout"] = so.decode("utf-8", "replace")
        res["stderr"] = se.decode("utf-8", "replace")
        out.write(res["stdout"])
        out.write("\n--- stderr ---\n" + res["stderr"])
        out.write(f"\n--- rc {res['rc']} timed_out {res['timed_out']} {res['seconds']} s\n")
        out.close()
        state = "TIMED OUT" if res["timed_out"] else f"rc {res['rc']}"
        self.say(f"  {name}: {state} in {res['seconds']} s")
        if res["timed_out"] or res["rc"] != 0:
            for line in res["stderr"].strip().splitlines()[-6:]:
                self.say(f"  | {line}")
        return res

    def run(self, name, cmd, limit, cwd=None, env=None, min_s=5):
        limit = min(limit, self.left() - 10)
        if limit < min_s:
            self.say(f"  {name}: skipped (time budget: {self.left():.0f} s left)")
            return {"step": name, "skipped": True, "rc": None, "timed_out": False,
                    "stdout": "", "stderr": ""}
        t = time.time()
        p, out = self.start(name, cmd, cwd, env)
        return self.finish(name, p, out, limit, t)


def step_error(res):
    if res.get("skipped"):
        return "skipped (time budget)"
    if res.get("timed_out"):
        return f"timed out after {res.get('limit_s')} s"
    if res.get("rc") not in (0, None):
        tail = res.get("stderr", "").strip().splitlines()
        return f"exit {res['rc']}" + (f": {tail[-1][:160]}" if tail else "")
    return None


def json_lines(text):
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def find_tool(name, extra=()):
    p = shutil.which(name)
    if p:
        return p
    for d in extra:
        c = os.path.join(d, name)
        if os.access(c, os.X_OK):
            return c
    return None


CUDA_BINS = ("/usr/local/cuda/bin",)


def build_runtime(r, bundle, results):
    """(a) colossus-run from source with the bundle's headers; fallbacks: a
    direct g++ build, then the binary built by gpu-prepare.sh."""
    inc = os.path.join(bundle, "include")
    bdir = os.path.join(r.work, "runtime-build")
    tries = []
    cmake = find_tool("cmake")
    if cmake:
        gen = ["-G", "Ninja"] if find_tool("ninja") else []
        res = r.run("runtime-cmake-configure",
                    [cmake, *gen, "-S", REPO, "-B", bdir, "-DCMAKE_BUILD_TYPE=Release",
                     "-DCOLOSSUS_BUILD_COMPILER=OFF", "-DCOLOSSUS_BUILD_TESTS=OFF",
                     f"-DCOLOSSUS_BUNDLED_INCLUDE={inc}"], 60)
        err = step_error(res)
        if not err:
            res = r.run("runtime-cmake-build",
                        [cmake, "--build", bdir, "--target", "colossus-run", "-j", str(os.cpu_count() or 4)], 180)
            err = step_error(res)
        binary = os.path.join(bdir, "bin", "colossus-run")
        tries.append({"how": "cmake", "error": err})
        if not err and os.access(binary, os.X_OK):
            return binary, tries
    else:
        tries.append({"how": "cmake", "error": "cmake not found"})
    cxx = find_tool(os.environ.get("CXX", "g++")) or find_tool("c++")
    if cxx:
        objdir = os.path.join(r.work, "runtime-gxx")
        os.makedirs(objdir, exist_ok=True)
        flags = ["-std=c++17", "-O2", "-DNDEBUG", "-I", os.path.join(REPO, "runtime", "include"), "-I", inc]
        procs, objs, t = [], [], time.time()
        limit = min(180, r.left() - 10)
        for i, src in enumerate(RUNTIME_SOURCES):
            obj = os.path.join(objdir, f"{i}.o")
            objs.append(obj)
            procs.append((src, *r.start(f"runtime-gxx-{i}", [cxx, *flags, "-c", os.path.join(REPO, src), "-o", obj])))
        errs = [step_error(r.finish(f"runtime-gxx-{i}", p, out, limit, t)) for i, (src, p, out) in enumerate(procs)]
        err = next((e for e in errs if e), None)
        binary = os.path.join(objdir, "colossus-run")
        if not err:
            err = step_error(r.run("runtime-gxx-link", [cxx, *objs, "-o", binary, "-ldl"], 60))
        tries.append({"how": "g++", "error": err})
        if not err:
            return binary, tries
    else:
        tries.append({"how": "g++", "error": "no C++ compiler found"})
    rb = results["manifest"].get("runtime_binary", {})
    binary = os.path.join(bundle, rb.get("path", "bin/colossus-run"))
    res = r.run("runtime-carried-help", [binary, "--help"], 20)
    err = step_error(res)
    tries.append({"how": f"carried binary (needs GLIBC_{rb.get('glibc_min')}, GLIBCXX_{rb.get('glibcxx_min')})",
                  "error": err})
    return (binary if not err else None), tries


def param_flags(bundle, c):
    """--weights FILE, or the runtime's seeded --init=random."""
    if c.get("weights"):
        return ["--weights", os.path.join(bundle, c["weights"])]
    return ["--init=random", "--seed", str(c.get("seed", 0))]


def check_numerics(r, bundle, run_bin, c):
    art = os.path.join(bundle, c["artifact"])
    out_dir = os.path.join(r.work, "numerics")
    os.makedirs(out_dir, exist_ok=True)
    tag = re.sub(r"[^A-Za-z0-9]+", "-", c["name"]).strip("-")
    rec = {"name": c["name"], "kind": c["kind"], "precision": c["precision"], "tol": c["tol"],
           "tol_basis": c.get("tol_basis")}
    if run_bin is None:
        rec.update(status="error", error="no colossus-run (the runtime build failed)")
        return rec
    if c["kind"] == "forward":
        got = os.path.join(out_dir, tag + ".npy")
        res = r.run("numerics-" + tag, [run_bin, art, "forward", *param_flags(bundle, c),
                                        "--prompt-ids", c["prompt_ids"], "--logits-out", got,
                                        "--device", "cuda", "--json"], 60)
    else:
        got = os.path.join(out_dir, tag + ".safetensors")
        res = r.run("numerics-" + tag, [run_bin, art, "grads", *param_flags(bundle, c),
                                        "--data", os.path.join(bundle, c["data"]), "--data-order", "sequential",
                                        "--grads-out", got, "--device", "cuda", "--json"], 90)
    err = step_error(res)
    if err:
        rec.update(status="skipped" if res.get("skipped") else "error", error=err)
        return rec
    try:
        if c["kind"] == "forward":
            cmp_ = compare_logits(got, os.path.join(bundle, c["expected"]))
            rec.update(cmp_)
            ok = cmp_["rel_error"] <= c["tol"]
            r.say(f"  {c['name']}: norm-wise relative error {fmt(cmp_['rel_error'])} (tolerance {c['tol']:.3g}): "
                  f"{'PASS' if ok else 'FAIL'}")
        else:
            gpu = json_lines(res["stdout"])[-1]
            cpu = json.load(open(os.path.join(bundle, c["expected_json"])))
            cmp_ = compare_grads(got, os.path.join(bundle, c["expected"]))
            loss_rel = (abs(gpu["loss"] - cpu["loss"]) / abs(cpu["loss"])
                        if gpu.get("loss") is not None else math.inf)
            rec.update(cmp_, loss_gpu=gpu.get("loss"), loss_cpu=cpu["loss"], loss_rel_error=loss_rel,
                       grad_norm_gpu=gpu.get("grad_norm"), grad_norm_cpu=cpu.get("grad_norm"),
                       tol_loss=c["tol_loss"], time_s=gpu.get("time_s"))
            ok = (loss_rel <= c["tol_loss"] and cmp_["worst_tensor_rel_error"] <= c["tol"])
            r.say(f"  {c['name']}: loss {fmt(gpu.get('loss'), '.6f')} vs cpu {cpu['loss']:.6f} "
                  f"(rel {fmt(loss_rel)}, tol {c['tol_loss']:.3g}); gradients: global {fmt(cmp_['global_rel_error'])}, "
                  f"worst tensor {fmt(cmp_['worst_tensor_rel_error'])} ({cmp_['worst_tensor']}), "
                  f"tolerance {c['tol']:.3g}: {'PASS' if ok else 'FAIL'}")
        rec["status"] = "pass" if ok else "fail"
    except Exception as e:  # unreadable output: report, go on
        rec.update(status="error", error=f"comparison failed: {type(e).__name__}: {e}")
        r.say(f"  {c['name']}: {rec['error']}")
    return rec


OPCHECK_RE = re.compile(r"^opcheck: (\d+) passed, (\d+) failed", re.M)


def check_opcheck(r, bundle, o):
    """test/ops' one-op kernels on the GPU: the script with the cuda backend
    on the bundle's PTX (opcheck/), its own fresh inputs and references;
    pass when every one of its checks passed and none is missing."""
    rec = {"name": o["name"], "checks_expected": o["checks"]}
    env = dict(os.environ, COLOSSUS_OPCHECK_BACKEND="cuda",
               COLOSSUS_OPCHECK_DIR=os.path.join(bundle, "opcheck"), JAX_PLATFORMS="cpu")
    tag = "opcheck-" + os.path.basename(o["script"]).replace(".py", "")
    res = r.run(tag, [sys.executable, os.path.join(REPO, o["script"])], 120, env=env)
    m = OPCHECK_RE.search(res.get("stdout", ""))
    if not m:
        rec.update(status="skipped" if res.get("skipped") else "error",
                   error=step_error(res) or "no 'opcheck:' summary line")
        r.say(f"  {o['name']}: {rec['error']}")
        return rec
    passed, failed = int(m.group(1)), int(m.group(2))
    fails = [l for l in res["stdout"].splitlines() if l.startswith("FAIL")]
    ok = failed == 0 and passed == o["checks"]
    rec.update(status="pass" if ok else "fail", passed=passed, failed=failed, failures=fails[:20])
    r.say(f"  {o['name']}: {passed} passed, {failed} failed (expected {o['checks']} checks): "
          f"{'PASS' if ok else 'FAIL'}" + "".join(f"\n    {l}" for l in fails[:10]))
    return rec


GEMM_RE = re.compile(r"norm-wise relative error ([0-9.eE+-]+) \(tolerance ([0-9.eE+-]+)\).*?: (PASS|FAIL)")
TIME_RE = re.compile(r"time: median ([0-9.]+) ms of (\d+) \(min ([0-9.]+), max ([0-9.]+)\): ([0-9.]+) TFLOP/s")


def start_check_build(r, nvcc, work, name):
    """Starts nvcc on scripts/gpu/NAME.cu (it includes harness.h next to it)
    into WORK/NAME, as step NAME-build (dashes); returns what
    finish_check_build needs, or None without nvcc."""
    if not nvcc:
        return None
    binary = os.path.join(work, name)
    cuda_root = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    cmd = [nvcc, "-arch=sm_90a", "-O2", "-o", binary, os.path.join(REPO, "scripts", "gpu", name + ".cu"),
           "-lcuda", "-lpthread", "-L" + os.path.join(cuda_root, "lib64", "stubs")]
    step = name.replace("_", "-") + "-build"
    started = time.time()
    proc, out = r.start(step, cmd)
    return binary, step, proc, out, started


def finish_check_build(r, build, results, key):
    """Waits for a start_check_build; records "ok", the error or "nvcc not
    found" as results[key]; returns the binary, or None when not built."""
    if build is None:
        results[key] = "nvcc not found"
        return None
    binary, step, proc, out, started = build
    lim = min(180.0, (time.time() - started) + max(10.0, r.left() - 10))
    res = r.finish(step, proc, out, lim, started)
    results[key] = step_error(res) or "ok"
    return None if step_error(res) else binary


def run_kernel_check(r, rec, step, cmd, timeout):
    """Runs a hopper_*_check command as step `step` and fills `rec` from its
    numerics line (pass/fail, relative error, tolerance) and time line."""
    res = r.run(step, cmd, timeout)
    for line in res["stdout"].splitlines():
        r.say("  | " + line)
    m = GEMM_RE.search(res["stdout"])
    if m:
        rec.update(rel_error=float(m.group(1)), tol=float(m.group(2)), status="pass" if m.group(3) == "PASS" else "fail")
    else:
        rec.update(status="skipped" if res.get("skipped") else "error", error=step_error(res) or "no numerics line")
    t = TIME_RE.search(res["stdout"])
    if t:
        rec.update(median_ms=float(t.group(1)), tflops=float(t.group(5)))
    return rec


def check_gemm(r, bundle, hgc, g):
    rec = {"name": g["name"], "kernel": g["kernel"], "m": g["m"], "n": g["n"], "k": g["k"]}
    if hgc is None:
        rec.update(status="error", error="hopper_gemm_check was not built")
        return rec
    cmd = [hgc, os.path.join(bundle, g["ptx"]), "--kernel", g["kernel"], "--repeats", str(g.get("repeats", 20))]
    if g.get("rows"):
        cmd += ["--rows", str(g["rows"])]
    # KV cache outputs: nt tokens per sequence from position pos0.
    for key in ("nt", "pos0"):
        if key in g:
            cmd += ["--" + key, str(g[key])]
    # One log per entry: a kernel checked at a second pos0 gets its own.
    step = "gemm-" + g["kernel"] + (f"-pos0-{g['pos0']}" if g.get("pos0") else "")
    return run_kernel_check(r, rec, step, cmd, 120)


def check_attention(r, bundle, hac, a):
    """One Hopper attention kernel through hopper_attention_check: numerics
    against float64, then the median time (the forward, or with "backward"
    the dK/dV kernel of the backward)."""
    rec = {"name": a["name"], "kernel": a["kernel"], "seq": a["seq"], "backward": a.get("backward"),
           "variant": a.get("variant"), "shape": a.get("shape")}
    if hac is None:
        rec.update(status="error", error="hopper_attention_check was not built")
        return rec
    cmd = [hac, os.path.join(bundle, a["ptx"]), "--kernel", a["kernel"], "--repeats", str(a.get("repeats", 20))]
    # One log per entry: a kernel of another schedule has the same name.
    step = "attention-" + a["kernel"] + (f"-{a['variant']}" if a.get("variant") else "")
    return run_kernel_check(r, rec, step, cmd, 150)


def check_train(r, bundle, run_bin, t):
    rec = {"name": t["name"], "param_elements": t["param_elements"]}
    if run_bin is None:
        rec.update(status="error", error="no colossus-run (the runtime build failed)")
        return rec
    def train_cmd(steps):
        return [run_bin, os.path.join(bundle, t["artifact"]), "train", "--data", os.path.join(bundle, t["data"]),
                "--data-order", "sequential", "--steps", str(steps), "--lr", "1e-4", "--warmup", "0",
                "--device", "cuda", "--json"] + param_flags(bundle, t)
    tag = re.sub(r"[^A-Za-z0-9]+", "-", t["name"]).strip("-")
    if t.get("profile_steps"):
        rec["profile"] = profile_train(r, t, tag, train_cmd(t["profile_steps"]))
    if not t.get("steps"):
        rec.update(status="profile only", error="no timed steps (profile only)")
        return rec
    res = r.run("train-" + tag, train_cmd(t["steps"]), t.get("timeout_s", 120))
    steps = [s for s in json_lines(res["stdout"]) if "step" in s]
    err = step_error(res)
    if err or not steps:
        rec.update(status="skipped" if res.get("skipped") else "error", error=err or "no step lines", steps_done=len(steps))
        return rec
    steady = steps[1:] or steps
    tps = statistics.median(s["tokens_per_s"] for s in steady)
    mfu = 6.0 * t["param_elements"] * tps / H100_BF16_PEAK
    losses = [s.get("loss") for s in steps]
    finite = all(l is not None and math.isfinite(l) for l in losses)
    rec.update(status="measured", steps_done=len(steps), tokens_per_step=steps[0].get("tokens"),
               tokens_per_s=tps, step_s=statistics.median(s["time_s"] for s in steady),
               steps_timed=len(steady), mfu=mfu, losses=losses, losses_finite=finite)
    r.say(f"  {t['name']}: {tps:.1f} tokens/s (median of steps {2 if len(steps) > 1 else 1}..{len(steps)}), "
          f"MFU {100 * mfu:.4f}% (6 * {t['param_elements']} params * tokens/s / 989e12); "
          f"losses {', '.join(fmt(l, '.4f') for l in losses)}{'' if finite else ' (NOT FINITE)'}")
    return rec


def profile_train(r, t, tag, cmd):
    """`colossus-run train --profile`: every launch timed (cuda events, no
    graphs); the JSON lands in the step logs. Returns the heaviest kernels."""
    path = os.path.join(r.logs, f"profile-{tag}.json")
    res = r.run("profile-" + tag, cmd + ["--profile", path], t.get("timeout_s", 120))
    err = step_error(res)
    if err or not os.path.exists(path):
        r.say(f"  profile of {t['name']}: {err or 'no profile written'}")
        return {"error": err or "no profile written"}
    prof = json.load(open(path))
    steps = t["profile_steps"]
    r.say(f"  profile of {t['name']} ({steps} step{'s' if steps > 1 else ''}, graphs off): "
          f"{prof['total_s']:.4f} s of kernel time, {len(prof['kernels'])} kernels; heaviest:")
    for k in prof["kernels"][:12]:
        r.say(f"    {100 * k['share']:6.2f}%  {k['total_s'] / steps * 1e3:10.3f} ms/step  "
              f"{k['launches'] // steps:4d} x  {k['name']}")
    return {"steps": steps, "total_s": prof["total_s"], "kernels": prof["kernels"][:40]}


def short(msg, n=90):
    msg = str(msg)
    return msg if len(msg) <= n else msg[:n - 3] + "..."


def ratio_status(ours, peer, passed, measured, whose):
    """The ratio column and status of a colossus / SDPA row: a ratio only
    when the peer was timed and colossus's numerics passed."""
    if peer is not None and passed:
        return f"{ours / peer:.3f}", measured
    if peer is not None:
        return "n/a", f"not available ({whose} numerics did not pass)"
    return "n/a", "not available (SDPA side not measured)"


def table(results):
    rows = []
    for c in results["numerics"]:
        val = c.get("rel_error", c.get("worst_tensor_rel_error"))
        rows.append((c["name"], f"rel err {fmt(val)}", "cpu run (bundle)",
                     f"tol {c['tol']:.3g}", c["status"].upper() + (f" ({short(c['error'])})" if c.get("error") else "")))
    for o in results.get("opcheck", []):
        rows.append((o["name"], f"{o.get('passed', 0)} of {o['checks_expected']} passed" if "passed" in o
                     else "not run", "jax.vjp / float64 numpy", "per check",
                     o["status"].upper() + (f" ({short(o['error'])})" if o.get("error") else "")))
    peers = {(p["m"], p["n"], p["k"]): p for p in results.get("torch_gemm", []) if "tflops" in p}
    for g in results["gemm"]:
        rows.append((g["name"] + " numerics", f"rel err {fmt(g.get('rel_error'))}",
                     "float64 reference", f"tol {fmt(g.get('tol'), 'g')}",
                     g["status"].upper() + (f" ({short(g['error'])})" if g.get("error") else "")))
    for g in results["gemm"]:
        if not g.get("peer"):
            continue
        peer = peers.get((g["m"], g["n"], g["k"]))
        ours = f"{g['tflops']:.1f} TFLOP/s" if "tflops" in g else "not measured"
        theirs = f"{peer['tflops']:.1f} TFLOP/s" if peer else "not measured"
        if "tflops" in g and peer and g["status"] == "pass":
            ratio, status = f"{g['tflops'] / peer['tflops']:.3f}", "measured"
        elif "tflops" in g and peer:
            ratio, status = "n/a", "not available (the kernel's numerics did not pass)"
        else:
            ratio, status = "n/a", "not available (" + ("colossus" if "tflops" not in g else "cuBLAS") + " side not measured)"
        rows.append((f"{g['name']}: colossus / cuBLAS", ours, f"torch.linear {theirs}", ratio, status))
    ours_att = {c["seq"]: c for c in results.get("attention_colossus", [])
                if not c.get("backward") and not c.get("shape")}
    # Backward kernels by (seq, dkdv / dq, schedule): "v2" the default,
    # "v3" --hopper-attention-bwd=v3 (its own row next to the default's).
    ours_bwd = {(c["seq"], c["backward"], c.get("variant") or "v2"): c
                for c in results.get("attention_colossus", []) if c.get("backward") and not c.get("shape")}
    for c in results.get("attention_colossus", []):
        rows.append((c["name"] + " numerics", f"rel err {fmt(c.get('rel_error'))}",
                     "float64 reference", f"tol {fmt(c.get('tol'), 'g')}",
                     c["status"].upper() + (f" ({short(c['error'])})" if c.get("error") else "")))
    att = results.get("attention", [])
    for a in att:
        if a.get("backend") != "default":
            continue
        for what in ("fwd", "fwd_bwd"):
            key = f"{what}_tflops"
            theirs = f"SDPA {a[key]:.1f} TFLOP/s" if key in a else "SDPA not measured"
            c = ours_att.get(a["seq"])
            label = f"attention {what.replace('_', '+')} causal S={a['seq']} D={a['head_dim']}: colossus / SDPA"
            if what == "fwd" and c is not None and "tflops" in c:
                ours = f"{c['tflops']:.1f} TFLOP/s"
                ratio, status = ratio_status(c["tflops"], a.get(key), c["status"] == "pass",
                                             "measured", "the kernel's")
                rows.append((label, ours, theirs, ratio, status))
            elif what == "fwd":
                rows.append((label, "not measured", theirs, "n/a",
                             "not available (colossus side not measured"
                             + (f": {short(c.get('error'))}" if c is not None and c.get("error") else "") + ")"))
            else:
                # Colossus forward + backward: the forward, dK/dV and dQ
                # kernels' medians summed (each timed alone), FLOPs as SDPA's
                # (3.5 x the forward's). A second row for the v3 backward
                # schedule when the bundle has its kernels.
                for variant in ("v2", "v3"):
                    dkdv, dq = ours_bwd.get((a["seq"], "dkdv", variant)), ours_bwd.get((a["seq"], "dq", variant))
                    if variant == "v3" and dkdv is None and dq is None:
                        continue
                    vlabel = label if variant == "v2" else label.replace(": colossus", " (dK/dV+dQ v3): colossus")
                    parts = [c, dkdv, dq]
                    timed = all(x is not None and "median_ms" in x for x in parts)
                    if timed:
                        fwd_flops = c["tflops"] * c["median_ms"] * 1e9
                        ms = sum(x["median_ms"] for x in parts)
                        tf = 3.5 * fwd_flops / (ms * 1e-3) / 1e12
                        ours = f"{tf:.1f} TFLOP/s"
                        ratio, status = ratio_status(tf, a.get(key), all(x["status"] == "pass" for x in parts),
                                                     "measured (fwd + dK/dV + dQ kernels, each timed alone)",
                                                     "a kernel's")
                        rows.append((vlabel, ours, theirs, ratio, status))
                    else:
                        rows.append((vlabel, "not measured", theirs, "n/a",
                                     "not available (colossus side not measured: forward, dK/dV and dQ kernels needed)"))
    # Backward kernels of another shape (e.g. llama-1b's) timed under both
    # schedules: dK/dV + dQ medians, v2 / v3 (above 1: v3 is faster).
    shaped = {}
    for c in results.get("attention_colossus", []):
        if c.get("shape") and c.get("backward"):
            shaped.setdefault(c["shape"], {})[(c["backward"], c.get("variant") or "v2")] = c
    for shape, ks in shaped.items():
        v2 = [ks.get(("dkdv", "v2")), ks.get(("dq", "v2"))]
        v3 = [ks.get(("dkdv", "v3")), ks.get(("dq", "v3"))]
        label = f"attention bwd {shape} (dK/dV+dQ): v2 / v3 time"
        if all(x is not None and "median_ms" in x for x in v2 + v3):
            ms2, ms3 = sum(x["median_ms"] for x in v2), sum(x["median_ms"] for x in v3)
            ok = all(x["status"] == "pass" for x in v2 + v3)
            rows.append((label, f"v3 {ms3:.3f} ms", f"v2 {ms2:.3f} ms", f"{ms2 / ms3:.3f}" if ok else "n/a",
                         "measured (each kernel timed alone)" if ok
                         else "not available (a kernel's numerics did not pass)"))
        else:
            rows.append((label, "not measured", "not measured", "n/a",
                         "not available (dK/dV and dQ of both schedules needed)"))
    if not att:
        rows.append(("attention: colossus / torch SDPA", "not measured", "SDPA not measured", "n/a",
                     "not available: colossus " + results["manifest"]["attention"]["colossus"]
                     + (f"; SDPA: {short(results.get('attention_error'))}" if results.get("attention_error") else "")))
    for t in results["train"]:
        prof = t.get("profile")
        if prof and "total_s" in prof:
            top = prof["kernels"][0] if prof["kernels"] else None
            rows.append((f"profile: {t['name']}", f"{prof['total_s'] / prof['steps']:.4f} s/step", "kernels summed",
                         f"top {100 * top['share']:.1f}%" if top else "n/a",
                         "measured (graphs off)" + (f"; top: {short(top['name'], 40)}" if top else "")))
        elif prof:
            rows.append((f"profile: {t['name']}", "not measured", "kernels summed", "n/a",
                         f"not available ({short(prof.get('error'))})"))
        if t["status"] == "profile only":
            continue
        if t["status"] == "measured":
            rows.append((f"train: {t['name']}", f"{t['tokens_per_s']:.1f} tokens/s", "989 TFLOP/s (peak)",
                         f"MFU {100 * t['mfu']:.4f}%", "measured" + ("" if t["losses_finite"] else " (loss NOT finite)")))
        else:
            rows.append((f"train: {t['name']}", "not measured", "989 TFLOP/s (peak)", "n/a",
                         f"not available ({short(t.get('error'))})"))
    return rows


def print_table(r, rows):
    """Fixed-width columns; the last one (status) is never cut."""
    head = ("check", "colossus", "peer (this run)", "ratio / value", "status")
    caps = (58, 22, 30, 16)
    widths = [min(caps[i], max(len(str(x[i])) for x in rows + [head])) for i in range(4)]

    def line(x):
        cells = [str(v) if len(str(v)) <= widths[i] else str(v)[:widths[i] - 1] + "~"
                 for i, v in enumerate(x[:4])]
        return "  ".join(c.ljust(widths[i]) for i, c in enumerate(cells)) + "  " + str(x[4])

    r.say("")
    r.say(line(head))
    r.say(line(["-" * w for w in widths] + ["------"]))
    for x in rows:
        r.say(line(x))


def tools_report():
    rep = {}
    for t in ("cmake", "ninja", "g++", "c++", "nvcc", "nvidia-smi", "python3", "timeout"):
        rep[t] = find_tool(t, CUDA_BINS if t == "nvcc" else ())
    try:
        import importlib.util
        rep["torch"] = "importable" if importlib.util.find_spec("torch") else None
    except Exception:
        rep["torch"] = None
    rep["numpy"] = "importable" if np is not None else None
    return rep


def check(args):
    bundle = os.path.abspath(args.bundle)
    mpath = os.path.join(bundle, "manifest.json")
    if not os.path.isfile(mpath):
        print(f"gpu-check: {mpath} not found: make the bundle with scripts/gpu-prepare.sh "
              f"(and carry it to the GPU machine)", file=sys.stderr)
        return 2
    try:
        manifest = json.load(open(mpath))
    except ValueError as e:
        print(f"gpu-check: {mpath}: not JSON ({e})", file=sys.stderr)
        return 2
    problems = validate(bundle, manifest)
    tools = tools_report()
    skip = {x for x in args.skip.split(",") if x}
    if skip - {"gemm", "attention"}:
        print(f"gpu-check: --skip: unknown part(s) {', '.join(sorted(skip - {'gemm', 'attention'}))} "
              f"(expected gemm, attention)", file=sys.stderr)
        return 2

    if args.dry_run:
        print(f"gpu-check --dry-run: bundle {bundle}")
        print(f"  made from commit {manifest.get('git_commit')}{' (dirty)' if manifest.get('git_dirty') else ''}, "
              f"{len(manifest.get('files', {}))} files, {manifest.get('total_bytes', 0) / 2**20:.1f} MiB")
        rb = manifest.get("runtime_binary", {})
        print(f"  runtime: source build (cmake, else g++) with include/ (FlatBuffers "
              f"{manifest.get('flatbuffers_version')}); fallback {rb.get('path')} "
              f"(needs GLIBC_{rb.get('glibc_min')}, GLIBCXX_{rb.get('glibcxx_min')})")
        print(f"  numerics checks: {len(manifest.get('numerics', []))}")
        for c in manifest.get("numerics", []):
            print(f"    {c['name']}: {c['artifact']} vs {c['expected']} (tol {c['tol']:.3g})")
        for o in manifest.get("opcheck", []):
            n_ptx = sum(1 for rel in manifest.get("files", {}) if rel.startswith("opcheck/"))
            print(f"  op-level: {o['name']}: {o['checks']} checks ({n_ptx} PTX files in opcheck/ for all)")
        print(f"  Hopper GEMM checks: {len(manifest.get('gemm', []))}")
        for g in manifest.get("gemm", []):
            print(f"    {g['name']}: {g['ptx']} {g['kernel']}{' + torch.linear' if g.get('peer') else ''}")
        a = manifest.get("attention", {})
        print(f"  attention (torch SDPA): causal, B={a.get('batch')} H={a.get('heads')} "
              f"D={a.get('head_dim')} S={a.get('seqs')}; colossus: {a.get('colossus')}")
        for k in a.get("kernels", []):
            print(f"    {k['name']}: {k['ptx']} {k['kernel']} (hopper_attention_check)")
        for t in manifest.get("train", []):
            print(f"  train: {t['name']}: {t['steps']} steps, {t['param_elements']} params")
        print("  tools here: " + ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in tools.items()))
        if problems:
            print(f"gpu-check --dry-run: INVALID bundle ({len(problems)} problems):")
            for p in problems:
                print(f"  {p}")
            return 1
        print("gpu-check --dry-run: bundle OK (GPU steps skipped)")
        return 0

    out_dir = args.out or os.environ.get("OUT") or None
    work = tempfile.mkdtemp(prefix="colossus-gpu-check-")
    log_path = os.path.join(work, "gpu-check.log")
    r = Runner(work, open(log_path, "w"), args.budget)
    results = {"bundle": bundle, "work": work, "budget_s": args.budget, "manifest": manifest,
               "bundle_problems": problems, "tools": tools, "numerics": [], "gemm": [], "train": []}
    r.say(f"colossus GPU check: bundle {bundle} (commit {manifest.get('git_commit')}), budget {args.budget} s, work {work}")
    for p in problems:
        r.say(f"  bundle problem: {p}")

    # Environment.
    if tools["nvidia-smi"]:
        res = r.run("nvidia-smi", [tools["nvidia-smi"], "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                                   "--format=csv,noheader"], 30)
        results["gpu"] = res["stdout"].strip() or step_error(res)
        r.say(f"  GPU: {results['gpu']}")

    # (a) runtime, with the GEMM harness compiled alongside (both CPU-bound).
    r.say("== (a) build colossus-run (no LLVM), scripts/gpu/hopper_gemm_check.cu and hopper_attention_check.cu")
    nvcc = tools["nvcc"]
    hac_build = start_check_build(r, nvcc, work, "hopper_attention_check")
    hgc_build = start_check_build(r, nvcc, work, "hopper_gemm_check")
    run_bin, tries = build_runtime(r, bundle, results)
    results["runtime_build"] = {"binary": run_bin, "tries": tries}
    r.say(f"  colossus-run: {run_bin or 'NONE'} ({'; '.join(t['how'] + ': ' + (t['error'] or 'ok') for t in tries)})")
    hgc = finish_check_build(r, hgc_build, results, "hopper_gemm_check_build")
    hac = finish_check_build(r, hac_build, results, "hopper_attention_check_build")

    # (b) numerics of the models.
    r.say("== (b) numerics: sm_90a artifacts on the GPU vs the cpu's results")
    for c in manifest.get("numerics", []):
        results["numerics"].append(check_numerics(r, bundle, run_bin, c))
    r.say("== (b2) op-level numerics: test/ops' one-op kernels (sm_90a PTX) against jax / float64 numpy")
    results["opcheck"] = [check_opcheck(r, bundle, o) for o in manifest.get("opcheck", [])]

    # (c) Hopper GEMM and cuBLAS on the same shapes.
    r.say("== (c) Hopper GEMM (hopper_gemm_check) and torch.nn.functional.linear"
          + (" (skipped: --skip gemm)" if "gemm" in skip else ""))
    for g in ([] if "gemm" in skip else manifest.get("gemm", [])):
        rec = check_gemm(r, bundle, hgc, g)
        rec["peer"] = bool(g.get("peer"))
        results["gemm"].append(rec)
    py = sys.executable
    bench = os.path.join(REPO, "scripts", "gpu", "torch_bench.py")
    shapes = ",".join(f"{g['m']}x{g['n']}x{g['k']}" for g in manifest.get("gemm", [])
                      if g.get("peer") and "gemm" not in skip)
    results["torch_gemm"] = []
    if shapes:
        res = r.run("torch-gemm", [py, bench, "gemm", "--shapes", shapes, "--repeats", "50"], 150)
        lines = json_lines(res["stdout"])
        results["torch_info"] = next((x for x in lines if "torch" in x), None)
        results["torch_gemm"] = [x for x in lines if x.get("op") == "linear"]
        for x in results["torch_gemm"]:
            r.say(f"  torch.linear {x['m']}x{x['n']}x{x['k']} bf16: median {x['median_ms']:.3f} ms, {x['tflops']:.1f} TFLOP/s")
        if step_error(res):
            results["torch_gemm_error"] = step_error(res)

    # (d) attention: the Hopper attention forward (hopper_attention_check:
    # float64 numerics, time) and torch SDPA forward + backward.
    r.say("== (d) attention: colossus (" + manifest["attention"]["colossus"] + ") and torch SDPA forward + backward"
          + (" (skipped: --skip attention)" if "attention" in skip else ""))
    a = manifest["attention"]
    results["attention_colossus"] = [check_attention(r, bundle, hac, k) for k in a.get("kernels", [])
                                     if "attention" not in skip]
    res = {"stdout": "", "skipped": True} if "attention" in skip else r.run("torch-sdpa", [py, bench, "sdpa", "--seqs", ",".join(str(s) for s in a["seqs"]),
                               "--batch", str(a["batch"]), "--heads", str(a["heads"]),
                               "--head-dim", str(a["head_dim"])], 150)
    results["attention"] = [x for x in json_lines(res["stdout"]) if x.get("op") == "sdpa"]
    for x in results["attention"]:
        if "error" in x:
            r.say(f"  SDPA {x['backend']} S={x['seq']}: {x['error']}")
        else:
            r.say(f"  SDPA {x['backend']} S={x['seq']}: fwd {x['fwd_median_ms']:.3f} ms {x['fwd_tflops']:.1f} TFLOP/s, "
                  f"fwd+bwd {x['fwd_bwd_median_ms']:.3f} ms {x['fwd_bwd_tflops']:.1f} TFLOP/s")
    if "attention" not in skip and step_error(res):
        results["attention_error"] = step_error(res)

    # (e) training throughput.
    r.say("== (e) train steps: tokens/s and MFU = 6 * params * tokens_per_s / 989e12")
    for t in manifest.get("train", []):
        results["train"].append(check_train(r, bundle, run_bin, t))

    # (f) the table.
    rows = table(results)
    results["table"] = [dict(zip(("check", "colossus", "peer", "ratio", "status"), x)) for x in rows]
    print_table(r, rows)
    checks = (results["numerics"] + results.get("opcheck", []) + results["gemm"]
              + results.get("attention_colossus", []))
    failed = [c["name"] for c in checks if c.get("status") != "pass"]
    results["all_numerics_passed"] = not failed and bool(checks)
    results["seconds"] = round(time.time() - r.t0, 1)
    r.say("")
    r.say(f"numerics: {len(checks) - len(failed)} of {len(checks)} passed"
          + (f"; not passed: {', '.join(failed)}" if failed else "") + f" ({results['seconds']} s)")
    r.log_file.close()

    res_path = os.path.join(work, "gpu-check-results.json")
    with open(res_path, "w") as f:
        json.dump(results, f, indent=1, default=str)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        shutil.copy(log_path, os.path.join(out_dir, "gpu-check.log"))
        shutil.copy(res_path, os.path.join(out_dir, "gpu-check-results.json"))
        with tarfile.open(os.path.join(out_dir, "gpu-check-steps.tar.gz"), "w:gz") as tar:
            tar.add(r.logs, arcname="logs")
        print(f"results in {out_dir}: gpu-check.log, gpu-check-results.json, gpu-check-steps.tar.gz")
    else:
        print(f"results in {work}")
    return 0 if results["all_numerics_passed"] else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("seal")
    s.add_argument("bundle")
    c = sub.add_parser("check")
    c.add_argument("bundle")
    c.add_argument("--dry-run", action="store_true")
    c.add_argument("--out")
    c.add_argument("--budget", type=float, default=330)
    c.add_argument("--skip", default="", help="comma-separated parts to leave out: gemm, attention")
    args = ap.parse_args()
    if args.cmd == "seal":
        return seal(args.bundle)
    return check(args)


if __name__ == "__main__":
    sys.exit(main())
