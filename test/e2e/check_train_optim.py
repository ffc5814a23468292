#!/usr/bin/env python3
"""Checks the training oracle's non-gradient parts against hand-computed values.

  check_train_optim.py --examples DIR --tmp DIR

  - AdamW (train_reference.adamw_update): two steps worked out by hand with
    exact fractions, with and without decoupled weight decay, and the rank
    rule (decay for rank >= 2 only);
  - clipping: a 3-4-12 gradient (norm 13) at several max_norm values;
  - the schedule: warmup, cosine midpoint, quarter point, end, past the end,
    warmup 0;
  - cross entropy: a 2-class case with known probabilities, ignore_index, a
    logit of 1000 (max subtraction), an all-ignored batch;
  - data: window indices and contents, wrap-around, sub-ranges of a global
    batch, the random order's hash, uint16 / uint32 files, the sidecar;
  - the CLI (train_oracle.py, in process): train's first line equals
    loss-grads at step 0; the weights after one step equal AdamW applied by
    hand to the written gradients; 2 steps, then --state-in to --steps 4 (from
    a state file and from a runtime checkpoint directory), equal 4 steps bit
    for bit; --grad-accum 2 of batch 2 equals batch 4 (both data orders).
Prints one line per check and a final 'N passed, N failed' line.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_tokens  # noqa: E402
import make_weights  # noqa: E402
import reference  # noqa: E402
import train_oracle  # noqa: E402
import train_reference as tr  # noqa: E402

results = []


def check(name: str, ok: bool, detail: str = "") -> None:
    results.append(bool(ok))
    print(f"{'PASS' if ok else 'FAIL'}: {name}{' -- ' + detail if detail else ''}", flush=True)


def close(a, b, rel=1e-6) -> bool:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= rel * np.maximum(np.abs(b), 1e-30)))


def check_adamw() -> None:
    lr, eps = 0.1, 1e-8
    # Step 1, g = 0.5, m = v = 0:  m = 0.1*0.5 = 0.05;  v = 0.05*0.25 = 0.0125
    # mhat = 0.05/(1-0.9) = 0.5;  vhat = 0.0125/(1-0.95) = 0.25;  sqrt(vhat) = 0.5
    # update = lr * 0.5/(0.5 + 1e-8) = 0.1 * (1 - 2e-8)
    upd1 = 0.1 * 0.5 / (0.5 + eps)
    p1_nodecay = 1.0 - upd1                   # 0.900000002
    p1_decay = 1.0 * (1 - lr * 0.1) - upd1    # 0.99 - 0.099999998 = 0.890000002
    p, m, v = tr.adamw_update(np.array([1.0], np.float32), np.array([0.5], np.float32),
                              np.zeros(1, np.float32), np.zeros(1, np.float32), t=1, lr=lr)
    check("adamw step 1 (rank 1: no decay): p, m, v", close(p, [p1_nodecay]) and close(m, [0.05]) and
          close(v, [0.0125]), f"p={p[0]:.9f} want {p1_nodecay:.9f}")
    pm, _, _ = tr.adamw_update(np.ones((1, 1), np.float32), np.full((1, 1), 0.5, np.float32),
                               np.zeros((1, 1), np.float32), np.zeros((1, 1), np.float32), t=1, lr=lr)
    check("adamw step 1 (rank 2: decoupled decay 0.1)", close(pm, [[p1_decay]]),
          f"p={pm[0, 0]:.9f} want {p1_decay:.9f}")
    # Step 2, g = -0.25:  m = 0.9*0.05 - 0.1*0.25 = 0.02;  v = 0.95*0.0125 + 0.05*0.0625 = 0.015
    # mhat = 0.02/(1-0.81) = 2/19;  vhat = 0.015/(1-0.9025) = 2/13
    # update = lr * (2/19) / (sqrt(2/13) + 1e-8)
    upd2 = lr * (2 / 19) / (math.sqrt(2 / 13) + eps)
    p2, m2, v2 = tr.adamw_update(p, np.array([-0.25], np.float32), m, v, t=2, lr=lr)
    check("adamw step 2 (bias corrections 1-0.9^2, 1-0.95^2)",
          close(p2, [p1_nodecay - upd2]) and close(m2, [0.02]) and close(v2, [0.015]),
          f"p={p2[0]:.9f} want {p1_nodecay - upd2:.9f} (update {upd2:.9f})")
    pm2, _, _ = tr.adamw_update(pm, np.full((1, 1), -0.25, np.float32), m.reshape(1, 1), v.reshape(1, 1), t=2, lr=lr)
    want = p1_decay * (1 - lr * 0.1) - upd2
    check("adamw step 2 with decay", close(pm2, [[want]]), f"p={pm2[0, 0]:.9f} want {want:.9f}")
    check("decay rule: rank >= 2 only",
          tr.decays((256, 64)) and tr.decays((3, 1, 2)) and not tr.decays((64,)) and not tr.decays(()))
    # Other hyperparameters: b1 = 0.5, b2 = 0.5, eps = 0.1, wd = 0.5, lr = 1, t = 1, g = 2, p = 3 (rank 2):
    # m = 1, v = 2, mhat = 2, vhat = 4; p = 3*(1 - 0.5) - 2/(2 + 0.1) = 1.5 - 0.952380952
    p3, _, _ = tr.adamw_update(np.full((1, 1), 3.0, np.float32), np.full((1, 1), 2.0, np.float32),
                               np.zeros((1, 1), np.float32), np.zeros((1, 1), np.float32), t=1, lr=1.0,
                               beta1=0.5, beta2=0.5, eps=0.1, weight_decay=0.5)
    check("adamw with b1=b2=0.5, eps=0.1, wd=0.5", close(p3, [[1.5 - 2 / 2.1]]), f"p={p3[0, 0]:.9f}")


def check_clip() -> None:
    g = {"a": np.array([3.0, 4.0], np.float32), "b": np.array([[12.0]], np.float32)}  # norm 13
    check("global norm of (3, 4, 12) = 13", abs(tr.global_norm(g) - 13.0) < 1e-12)
    c, n = tr.clip_grads(g, 1.0)
    k = 1.0 / (13.0 + 1e-6)
    check("max_norm 1: scaled by 1/(13 + 1e-6), norm reported before",
          n == 13.0 and close(c["a"], [3 * k, 4 * k]) and close(c["b"], [[12 * k]]), f"a={c['a']}")
    c, n = tr.clip_grads(g, 6.5)
    k = 6.5 / (13.0 + 1e-6)
    check("max_norm 6.5: scaled by 6.5/(13 + 1e-6)", close(c["a"], [3 * k, 4 * k]) and close(c["b"], [[12 * k]]))
    for mx in (13.0, 20.0, 0.0, -1.0):
        c, n = tr.clip_grads(g, mx)
        check(f"max_norm {mx}: unchanged (norm {n} is not > max_norm, or clipping off)",
              n == 13.0 and np.array_equal(c["a"], g["a"]) and np.array_equal(c["b"], g["b"]))


def check_schedule() -> None:
    s = dict(peak=1e-3, warmup=10, total=110, min_lr=1e-4)
    cases = [(1, 1e-4), (5, 5e-4), (10, 1e-3),
             (35, 1e-4 + 0.5 * 9e-4 * (1 + math.sqrt(0.5))),   # a quarter of the cosine: cos(pi/4)
             (60, 5.5e-4),                                      # half way: cos(pi/2) = 0
             (85, 1e-4 + 0.5 * 9e-4 * (1 - math.sqrt(0.5))),
             (110, 1e-4),                                       # the end: min_lr
             (200, 1e-4)]                                       # past the end: stays at min_lr
    for t, want in cases:
        got = tr.lr_at(t, **s)
        check(f"schedule(peak 1e-3, warmup 10, total 110, min 1e-4) at t={t}", abs(got - want) <= 1e-15,
              f"{got:.12g} want {want:.12g}")
    got = tr.lr_at(1, 2e-3, 0, 100, 0.0)
    want = 0.5 * 2e-3 * (1 + math.cos(math.pi / 100))
    check("warmup 0: the cosine from t=1", abs(got - want) <= 1e-15, f"{got:.12g}")
    check("warmup == total: peak at the last warmup step, then min_lr",
          tr.lr_at(50, 1.0, 50, 50, 0.1) == 1.0 and tr.lr_at(51, 1.0, 50, 50, 0.1) == 0.1)


def check_cross_entropy() -> None:
    ln3 = math.log(3.0)
    lg = np.array([[[0.0, ln3], [0.0, ln3]]], np.float32)   # softmax (1/4, 3/4) at both positions
    got = float(tr.cross_entropy(lg, np.array([[1, 0]])))
    want = (-math.log(0.75) + math.log(4.0)) / 2
    check("cross entropy: mean of -ln(3/4) and -ln(1/4)", abs(got - want) < 1e-6, f"{got:.7f} want {want:.7f}")
    got = float(tr.cross_entropy(lg, np.array([[1, -100]])))
    check("cross entropy: ignore_index counts in neither sum nor count", abs(got + math.log(0.75)) < 1e-6,
          f"{got:.7f}")
    big = np.array([[[1000.0, 0.0]]], np.float32)
    got = float(tr.cross_entropy(big, np.array([[1]])))
    check("cross entropy: logit 1000 (max subtracted, no overflow)", abs(got - 1000.0) < 1e-3, f"{got}")
    got = float(tr.cross_entropy(lg, np.array([[-100, -100]])))
    check("cross entropy: nothing counted gives 0", got == 0.0, f"{got}")


def check_data(tmp: str) -> None:
    toks = np.arange(23)
    check("W = (N-1)//S: 23 tokens, S=5 -> 4 windows", tr.num_windows(23, 5) == 4)
    check("sequential windows, B=3: step 0 -> 0,1,2; step 1 -> 3,0,1 (wrap)",
          tr.batch_windows(0, 3, 4) == [0, 1, 2] and tr.batch_windows(1, 3, 4) == [3, 0, 1])
    x, y = tr.make_batch(toks, 1, 3, 5)
    check("window w: inputs tokens [5w, 5w+5), targets [5w+1, 5w+6)",
          x.tolist() == [[15, 16, 17, 18, 19], [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
          and y.tolist() == [[16, 17, 18, 19, 20], [1, 2, 3, 4, 5], [6, 7, 8, 9, 10]] and x.dtype == np.int32)
    x, y = tr.make_batch(toks, 1, 3, 5, first=1, count=2)
    check("samples [1, 3) of the global batch: windows 0, 1 of step 1", x.tolist() == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    # SplitMix64 from state 0: the generator's well-known first output.
    check("splitmix64(0) = 0xe220a8397b1dcdaf (make_tokens and the random order)",
          tr._splitmix64_of(0) == 0xE220A8397B1DCDAF and make_tokens.SplitMix64(0).next() == 0xE220A8397B1DCDAF)
    h = tr._splitmix64_of(tr._splitmix64_of(tr._splitmix64_of(7) ^ 3) ^ 2)
    check("random order: start = batch_hash(seed, step, sample) mod (N - S)",
          tr.window_start(1000, 3, 2, 8, 16, "random", 7) == h % 984 and tr.batch_hash(7, 3, 2) == h)
    # The values test/runtime/TokenDataTest.cpp pins for the runtime's TokenData.
    starts = [tr.window_start(1000, st, i, 2, 16, "random", 42) for st in range(3) for i in range(2)]
    check("random order: the runtime test's values (hash and N=1000, S=16, seed 42 starts)",
          tr.batch_hash(0, 0, 0) == 0x238275BC38FCBE91 and tr.batch_hash(1234, 5, 3) == 0x90E35A1EADA213BB
          and starts == [806, 646, 92, 90, 686, 318], f"{starts}")
    ids = np.array([0, 1, 255, 65535, 7], np.int64)
    p16 = os.path.join(tmp, "t16.bin")
    ids.astype("<u2").tofile(p16)
    p32 = os.path.join(tmp, "t32.bin")
    (ids + 70000).astype("<u4").tofile(p32)
    with open(p32 + ".json", "w") as f:
        json.dump({"dtype": "u32"}, f)
    check("uint16 little-endian file", tr.read_tokens(p16, "uint16").tolist() == ids.tolist())
    check("uint32 file, dtype from the sidecar (short spelling u32)", tr.read_tokens(p32).tolist() == (ids + 70000).tolist())
    for args, what in (((p32, "uint16"), "sidecar disagrees"), ((p16, None), "no dtype anywhere")):
        try:
            tr.read_tokens(*args)
            check(f"read_tokens refuses: {what}", False)
        except ValueError as e:
            check(f"read_tokens refuses: {what}", True, str(e).split(": ", 1)[-1])


def cli(argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = train_oracle.main(argv)
    # Step lines without their wall time, which differs from run to run.
    return rc, [{k: v for k, v in json.loads(line).items() if k != "time_s"}
                for line in out.getvalue().splitlines() if line.startswith("{")]


def check_cli(examples: str, tmp: str) -> None:
    from safetensors.numpy import load_file, save_file

    cfg_path = os.path.join(examples, "tiny-llama", "config.json")
    cfg = reference.load_config(cfg_path)
    w0 = os.path.join(tmp, "w0.safetensors")
    save_file(make_weights.make(cfg, 3), w0)
    data = os.path.join(tmp, "tokens.bin")
    make_tokens.main(["--out", data, "--tokens", "2000", "--seed", "1"])
    common = ["--config", cfg_path, "--data", data, "--batch", "2", "--seq", "16", "--json"]
    sched = ["--lr", "3e-3", "--warmup", "2", "--min-lr", "3e-4"]

    g_path = os.path.join(tmp, "g.safetensors")
    _, lg = cli(["loss-grads", "--weights", w0, "--grads-out", g_path] + common)
    w1 = os.path.join(tmp, "w1.safetensors")
    _, steps = cli(["train", "--weights", w0, "--steps", "1", "--weights-out", w1, "--schedule-steps", "4"]
                   + common + sched)
    check("train step 1 reports loss-grads' loss and grad_norm",
          steps[0]["step"] == 1 and steps[0]["loss"] == lg[0]["loss"] and steps[0]["grad_norm"] == lg[0]["grad_norm"],
          f"loss {lg[0]['loss']:.6f}, grad_norm {lg[0]['grad_norm']:.6f}")
    check("lr of step 1 = peak * 1/warmup", abs(steps[0]["lr"] - 1.5e-3) < 1e-18)
    g = load_file(g_path)
    base = load_file(w0)
    check("gradients: float32, one per weight, same names and shapes",
          set(g) == set(base) and all(g[k].dtype == np.float32 and g[k].shape == base[k].shape for k in g))
    # AdamW by hand from the written gradients (t = 1: mhat = g', vhat = g'^2).
    norm = math.sqrt(sum(float(np.sum(np.square(v.astype(np.float64)))) for v in g.values()))
    coef = 1.0 / (norm + 1e-6) if norm > 1.0 else 1.0
    lr = 1.5e-3
    after = load_file(w1)
    worst = 0.0
    for k, p in base.items():
        gc = g[k].astype(np.float64) * coef
        want = p.astype(np.float64) * (1 - lr * 0.1 if p.ndim >= 2 else 1.0) - lr * gc / (np.abs(gc) + 1e-8)
        worst = max(worst, float(np.max(np.abs(after[k] - want) / np.maximum(np.abs(want), 1.0))))
    # float32 arithmetic: a few ulps. A missing decay would be lr*wd = 1.5e-4.
    check("weights after step 1 = clip + AdamW by hand on the written gradients", worst <= 3e-7,
          f"max |diff|/max(|p|, 1) {worst:.1e} (norm {norm:.4f}, clip coef {coef:.6f})")

    w4 = os.path.join(tmp, "w4.safetensors")
    _, four = cli(["train", "--weights", w0, "--steps", "4", "--weights-out", w4] + common + sched)
    s2, w2 = os.path.join(tmp, "s2.safetensors"), os.path.join(tmp, "w2.safetensors")
    _, first = cli(["train", "--weights", w0, "--steps", "2", "--schedule-steps", "4", "--weights-out", w2,
                    "--state-out", s2] + common + sched)
    w22 = os.path.join(tmp, "w22.safetensors")
    _, second = cli(["train", "--weights", w2, "--steps", "4", "--state-in", s2, "--weights-out", w22]
                    + common + sched)
    a, b = load_file(w4), load_file(w22)
    check("2 steps + resume to --steps 4 = 4 steps (bit for bit, same step lines)",
          first + second == four and all(np.array_equal(a[k], b[k]) for k in a),
          f"steps {[s['step'] for s in second]}, losses {[round(s['loss'], 4) for s in four]}")
    # The same resume from a runtime checkpoint directory (docs/training-runtime.md).
    ck = os.path.join(tmp, "ckpt", "step-00000002")
    os.makedirs(ck)
    save_file(load_file(w2), os.path.join(ck, "model.safetensors"), metadata={"format": "pt"})
    save_file(load_file(s2), os.path.join(ck, "optimizer.safetensors"))
    with open(os.path.join(ck, "state.json"), "w") as f:
        json.dump({"step": 2, "format": 1}, f)
    w22d = os.path.join(tmp, "w22d.safetensors")
    _, second_d = cli(["train", "--weights", ck, "--steps", "4", "--state-in", ck, "--weights-out", w22d]
                      + common + sched)
    c = load_file(w22d)
    check("resume from a checkpoint directory (model/optimizer.safetensors, state.json)",
          second_d == second and all(np.array_equal(a[k], c[k]) for k in a))
    st = load_file(s2)
    check("optimizer state names: <name>.exp_avg, <name>.exp_avg_sq",
          set(st) == {f"{k}{x}" for k in base for x in (".exp_avg", ".exp_avg_sq")})
    check("4-step run: lr rises over the warmup, then decays to min_lr",
          [round(s["lr"], 12) for s in four] == [1.5e-3, 3e-3, round(3e-4 + 0.5 * 2.7e-3, 12), 3e-4])

    ga = os.path.join(tmp, "ga.safetensors")
    gb = os.path.join(tmp, "gb.safetensors")
    lg_common = ["loss-grads", "--config", cfg_path, "--weights", w0, "--data", data, "--seq", "16", "--json",
                 "--step", "1"]
    for order in (["--data-order", "sequential"], ["--data-order", "random", "--seed", "5"]):
        _, x4 = cli(lg_common + order + ["--batch", "4", "--grads-out", ga])
        _, x22 = cli(lg_common + order + ["--batch", "2", "--grad-accum", "2", "--grads-out", gb])
        A, B = load_file(ga), load_file(gb)
        rel = max(float(np.max(np.abs(A[k] - B[k])) / max(float(np.max(np.abs(A[k]))), 1e-30)) for k in A)
        check(f"{order[1]} order: --grad-accum 2 x batch 2 = batch 4 (same windows, equal counts)",
              abs(x4[0]["loss"] - x22[0]["loss"]) <= 1e-6 * x4[0]["loss"] and rel <= 5e-5,
              f"loss {x4[0]['loss']:.6f} vs {x22[0]['loss']:.6f}, grads max_rel {rel:.1e}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", default=os.path.join(HERE, "..", "..", "examples"))
    ap.add_argument("--tmp", required=True)
    a = ap.parse_args()
    os.makedirs(a.tmp, exist_ok=True)
    check_adamw()
    check_clip()
    check_schedule()
    check_cross_entropy()
    check_data(a.tmp)
    check_cli(a.examples, a.tmp)
    passed = sum(results)
    failed = len(results) - passed
    print(f"train oracle optimizer check: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
