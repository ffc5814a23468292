#!/usr/bin/env python3
"""The training oracle's CLI (train_reference.py; conventions: docs/training.md).

  train_oracle.py loss-grads --config C --weights W --data TOKENS.bin [--dtype uint16]
        --batch B --seq S [--step 0] [--grad-accum 1] [--data-order sequential|random]
        [--seed 0] [--grads-out G.safetensors] [--json]
      loss and gradients of optimizer step index --step (0-based, i.e. update
      t = step + 1) at the given weights. Prints {"loss": l, "grad_norm": n}
      (--json) and writes the gradients, float32, under the weights' names:
      with M = --grad-accum > 1, the mean of the M micro-batch gradients
      (loss: the mean of their losses). grad_norm is the global norm before
      clipping.

  train_oracle.py train --config C --weights W --data TOKENS.bin [--dtype uint16]
        --batch B --seq S --steps N --lr PEAK --warmup K --min-lr X
        [--max-grad-norm 1.0] [--weight-decay 0.1] [--beta1 0.9] [--beta2 0.95] [--eps 1e-8]
        [--grad-accum M] [--schedule-steps T] [--data-order sequential|random] [--seed 0]
        [--state-in S0] [--state-out S1] [--weights-out W2.safetensors] [--json]
      optimizer steps t = 1..N, or t0+1..N after --state-in at step t0 (--steps
      is the run's total, as colossus-run's). Prints one line per step,
      {"step": t, "loss": l, "grad_norm": n, "lr": lr} with --json: loss and
      grad_norm (before clipping) of the weights before the update, lr the
      rate the update used. Writes the final weights (float32, the input's
      names) and, with --state-out, the AdamW state (<name>.exp_avg,
      <name>.exp_avg_sq, metadata {"step": "N"}). --state-in also takes a
      runtime checkpoint directory (optimizer.safetensors + state.json; pass
      the same directory as --weights). --schedule-steps is the schedule's
      total (default N).

Batches: micro-batch j of optimizer step s (0-based) holds samples
[j*B, j*B + B) of a global batch of M*B; sample g reads the window of S+1
tokens starting at ((s*M*B + g) mod W) * S, W = (N_tokens - 1) // S
(sequential, the default here), or at batch_hash(seed, s, g) mod (N_tokens - S)
(random). The token file is flat little-endian uint16 or uint32; --dtype may
be left out when a sidecar <TOKENS.bin>.json says {"dtype": ...}.
Exit status 0 on success, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference  # noqa: E402
import train_reference as tr  # noqa: E402


def _fail(msg: str) -> "SystemExit":
    print(f"train_oracle: {msg}", file=sys.stderr)
    return SystemExit(2)


def _save(tensors, path: str, metadata=None) -> None:
    from safetensors.numpy import save_file

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    meta = {"format": "pt"}
    meta.update(metadata or {})
    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()}, path, metadata=meta)


def _setup(a):
    cfg = reference.load_config(a.config)
    if a.activations == "bf16":
        cfg["_colossus_activations"] = "bf16"
    params = tr.trainable_params(cfg, reference.load_weights(a.weights))
    try:
        tokens = tr.read_tokens(a.data, a.dtype)
    except (ValueError, OSError) as e:
        raise _fail(str(e))
    vocab = cfg["vocab_size"]
    if len(tokens) and int(tokens.max()) >= vocab:
        raise _fail(f"{a.data}: token {int(tokens.max())} is outside the vocabulary [0, {vocab})")
    if a.batch < 1 or a.seq < 1 or a.grad_accum < 1:
        raise _fail("--batch, --seq and --grad-accum must be >= 1")
    max_pos = cfg.get("n_positions") if cfg.get("model_type") == "gpt2" else cfg.get("max_position_embeddings")
    if max_pos and a.seq > max_pos:
        raise _fail(f"--seq {a.seq} exceeds the model's {max_pos} positions")
    if tr.num_windows(len(tokens), a.seq) < 1:
        raise _fail(f"{a.data}: {len(tokens)} tokens hold no window of {a.seq}+1 tokens")
    return cfg, params, tokens


def _micro_batches(tokens, opt_index: int, a):
    """Micro-batches of the optimizer step with 0-based index opt_index:
    micro-batch j is samples [j*B, j*B + B) of a global batch of M*B."""
    g = a.batch * a.grad_accum
    return [tr.make_batch(tokens, opt_index, g, a.seq, a.data_order, a.seed, first=j * a.batch, count=a.batch)
            for j in range(a.grad_accum)]


def _load_state(path: str, params):
    """AdamW state: a safetensors file with <name>.exp_avg / <name>.exp_avg_sq
    and metadata {"step": t}, or a runtime checkpoint directory
    (optimizer.safetensors + state.json {"step": t})."""
    from safetensors import safe_open

    if os.path.isdir(path):
        with open(os.path.join(path, "state.json")) as f:
            t0 = int(json.load(f)["step"])
        path = os.path.join(path, "optimizer.safetensors")
    else:
        t0 = None
    m, v = {}, {}
    with safe_open(path, framework="numpy") as f:
        if t0 is None:
            t0 = int((f.metadata() or {}).get("step", "0"))
        keys = set(f.keys())
        for k in params:
            if f"{k}.exp_avg" not in keys or f"{k}.exp_avg_sq" not in keys:
                raise _fail(f"{path}: no optimizer state for {k!r}")
            m[k] = np.asarray(f.get_tensor(f"{k}.exp_avg"), np.float32)
            v[k] = np.asarray(f.get_tensor(f"{k}.exp_avg_sq"), np.float32)
            if m[k].shape != params[k].shape or v[k].shape != params[k].shape:
                raise _fail(f"{path}: optimizer state of {k!r} has the wrong shape")
    return t0, m, v


def cmd_loss_grads(a) -> int:
    cfg, params, tokens = _setup(a)
    loss, grads = tr.accumulated_loss_and_grads(cfg, params, _micro_batches(tokens, a.step, a))
    norm = tr.global_norm(grads)
    if a.grads_out:
        _save(grads, a.grads_out)
    if a.json:
        print(json.dumps({"loss": loss, "grad_norm": norm}))
    else:
        print(f"loss {loss:.6f}  grad_norm {norm:.6f}")
    return 0


def cmd_train(a) -> int:
    cfg, params, tokens = _setup(a)
    if a.steps < 1:
        raise _fail("--steps must be >= 1")
    m, v = tr.zeros_like(params), tr.zeros_like(params)
    t0 = 0
    if a.state_in:
        t0, m, v = _load_state(a.state_in, params)
    if t0 >= a.steps:
        raise _fail(f"the state is at step {t0}, --steps {a.steps} leaves nothing to do")
    total = a.schedule_steps if a.schedule_steps is not None else a.steps
    adam = dict(beta1=a.beta1, beta2=a.beta2, eps=a.eps, weight_decay=a.weight_decay)
    start = time.perf_counter()
    first = last = None
    for t in range(t0 + 1, a.steps + 1):
        step_start = time.perf_counter()
        loss, grads = tr.accumulated_loss_and_grads(cfg, params, _micro_batches(tokens, t - 1, a))
        lr = tr.lr_at(t, a.lr, a.warmup, total, a.min_lr)
        params, m, v, norm = tr.optimizer_step(params, grads, m, v, t, lr, a.max_grad_norm, **adam)
        first = loss if first is None else first
        last = loss
        if a.json:
            print(json.dumps({"step": t, "loss": loss, "grad_norm": norm, "lr": lr,
                              "time_s": time.perf_counter() - step_start}), flush=True)
        else:
            print(f"step {t:5d}  loss {loss:.6f}  grad_norm {norm:.6f}  lr {lr:.6g}", flush=True)
    secs = time.perf_counter() - start
    if a.weights_out:
        _save(params, a.weights_out)
    if a.state_out:
        state = {f"{k}.exp_avg": m[k] for k in params}
        state.update({f"{k}.exp_avg_sq": v[k] for k in params})
        _save(state, a.state_out, {"step": str(a.steps)})
    print(f"train_oracle: steps {t0 + 1}..{a.steps} in {secs:.3f} s, loss {first:.4f} -> {last:.4f}",
          file=sys.stderr)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="training oracle (JAX, CPU, float32)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("loss-grads", "train"):
        p = sub.add_parser(name)
        p.add_argument("--config", required=True)
        p.add_argument("--weights", required=True)
        p.add_argument("--data", required=True, help="token file, flat little-endian uint16/uint32")
        p.add_argument("--dtype", choices=["uint16", "uint32"], default=None)
        p.add_argument("--data-order", choices=["sequential", "random"], default="sequential")
        p.add_argument("--seed", type=int, default=0, help="seed of the random data order")
        p.add_argument("--batch", type=int, required=True)
        p.add_argument("--seq", type=int, required=True)
        p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
        p.add_argument("--activations", choices=["f32", "bf16"], default="f32",
                       help="bf16: mixed precision as a PyTorch bf16 model: every module's output "
                            "(and its gradient) rounded to bf16, the forward reading the f32 "
                            "master weights rounded to bf16; gradients, AdamW and logits in f32, the "
                            "logits' gradient rounded to bf16")
        p.add_argument("--json", action="store_true")
        if name == "loss-grads":
            p.add_argument("--step", type=int, default=0, help="0-based optimizer step index")
            p.add_argument("--grads-out")
        else:
            p.add_argument("--steps", type=int, required=True)
            p.add_argument("--lr", type=float, required=True, help="peak learning rate")
            p.add_argument("--warmup", type=int, required=True)
            p.add_argument("--min-lr", type=float, required=True)
            p.add_argument("--schedule-steps", type=int, default=None)
            p.add_argument("--max-grad-norm", type=float, default=tr.DEFAULTS["max_grad_norm"])
            p.add_argument("--weight-decay", type=float, default=tr.DEFAULTS["weight_decay"])
            p.add_argument("--beta1", type=float, default=tr.DEFAULTS["beta1"])
            p.add_argument("--beta2", type=float, default=tr.DEFAULTS["beta2"])
            p.add_argument("--eps", type=float, default=tr.DEFAULTS["eps"])
            p.add_argument("--state-in")
            p.add_argument("--state-out")
            p.add_argument("--weights-out")
    a = ap.parse_args(argv)
    if a.cmd == "loss-grads":
        if a.step < 0:
            raise _fail("--step must be >= 0")
        return cmd_loss_grads(a)
    return cmd_train(a)


if __name__ == "__main__":
    sys.exit(main())
