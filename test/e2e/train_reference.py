"""Training oracle: loss, gradients, clipping, AdamW and the LR schedule.

The independent reference for the compiled `train` step (docs/training.md
states the conventions; this file is their executable form). The forward pass
is reference.py's (HF LlamaForCausalLM / GPT2LMHeadModel in JAX, float32,
matmul precision "highest"), applied to every position of every sample of a
batch; gradients come from jax.grad in float32. Nothing here is shared with
the compiler but the weights file and the token file.

Every function below is pure (arrays in, arrays out); the CLI around them is
train_oracle.py.

  window_start / make_batch    which tokens a step reads (sequential or random order)
  loss                         mean token cross entropy over a batch
  loss_and_grads               its value and jax.grad, float32
  global_norm, clip_grads      global-norm clipping
  lr_at                        warmup + cosine schedule
  adamw_update                 one AdamW step (PyTorch semantics)
"""

from __future__ import annotations

import json
import math
import os
import sys
from functools import lru_cache
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference  # noqa: E402  (sets JAX_PLATFORMS=cpu, x64 off, highest matmul precision)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

Params = Dict[str, jnp.ndarray]

IGNORE_INDEX = -100
DEFAULTS = dict(beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, max_grad_norm=1.0)
CLIP_EPS = 1e-6

# Tensors some published checkpoints carry that are buffers, not parameters.
_BUFFER_SUFFIXES = ("attn.masked_bias", "rotary_emb.inv_freq")


# --------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------

def canonical_name(cfg: dict, name: str) -> str:
    """The name reference.py's forward looks the tensor up by (GPT-2
    checkpoints saved from GPT2LMHeadModel carry a 'transformer.' prefix)."""
    if cfg.get("model_type") == "gpt2" and name.startswith("transformer."):
        return name[len("transformer."):]
    return name


def is_trainable(cfg: dict, name: str, shape: Sequence[int]) -> bool:
    """Every floating tensor of the checkpoint is a parameter, except HF
    buffers (GPT-2's causal-mask `attn.bias` of rank 4, `attn.masked_bias`,
    rotary `inv_freq`)."""
    if name.endswith(_BUFFER_SUFFIXES):
        return False
    if cfg.get("model_type") == "gpt2" and name.endswith("attn.bias") and len(shape) == 4:
        return False
    return True


def trainable_params(cfg: dict, weights: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """{file name: float32 array} of the trainable tensors, in sorted order."""
    return {k: np.asarray(weights[k], np.float32) for k in sorted(weights)
            if is_trainable(cfg, k, np.shape(weights[k]))}


def decays(shape: Sequence[int]) -> bool:
    """Decoupled weight decay applies to tensors of rank >= 2 (matrices and
    embeddings), never to norm weights or biases (rank 1)."""
    return len(shape) >= 2


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------

_DTYPES = {"uint16": "<u2", "u16": "<u2", "uint32": "<u4", "u32": "<u4"}


def read_tokens(path: str, dtype: str | None = None) -> np.ndarray:
    """A flat little-endian uint16 / uint32 token file, as int64.

    dtype None: taken from the sidecar `<path>.json` ({"dtype": ...}; the
    runtime's short spellings u16 / u32 are accepted too); when both are
    given they must agree."""
    side = path + ".json"
    side_dtype = None
    if os.path.exists(side):
        with open(side) as f:
            side_dtype = json.load(f).get("dtype")
        if side_dtype is not None and side_dtype not in _DTYPES:
            raise ValueError(f"{side}: dtype {side_dtype!r} is not one of {', '.join(_DTYPES)}")
    if dtype is None:
        dtype = side_dtype
    if dtype is None:
        raise ValueError(f"{path}: no --dtype and no sidecar {side} naming one")
    np_dtype = _DTYPES.get(dtype)
    if np_dtype is None:
        raise ValueError(f"token dtype {dtype!r}: uint16 or uint32")
    if side_dtype is not None and _DTYPES[side_dtype] != np_dtype:
        raise ValueError(f"{path}: --dtype {dtype} but the sidecar says {side_dtype}")
    size = os.path.getsize(path)
    if size % np.dtype(np_dtype).itemsize:
        raise ValueError(f"{path}: {size} bytes is not a whole number of {dtype} tokens")
    return np.fromfile(path, dtype=np_dtype).astype(np.int64)


def num_windows(n_tokens: int, seq: int) -> int:
    """W = (N - 1) // S windows of S+1 tokens (window w starts at w*S)."""
    return (n_tokens - 1) // seq


def batch_windows(step: int, batch: int, n_windows: int) -> List[int]:
    """Sequential order: sample i of data step s reads window (s*B + i) mod W."""
    return [(step * batch + i) % n_windows for i in range(batch)]


_M64 = (1 << 64) - 1


def _splitmix64_of(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def batch_hash(seed: int, step: int, sample: int) -> int:
    """The random order's counter-based hash (docs/training-runtime.md)."""
    return _splitmix64_of(_splitmix64_of(_splitmix64_of(seed & _M64) ^ step) ^ sample)


def window_start(n_tokens: int, step: int, sample: int, batch: int, seq: int,
                 order: str = "sequential", seed: int = 0) -> int:
    """First token of sample `sample` (index in the global batch `batch`) of
    optimizer step `step`:
      sequential: ((step*batch + sample) mod W) * S,  W = (N-1)//S
      random:     batch_hash(seed, step, sample) mod (N - S)"""
    if n_tokens < seq + 1:
        raise ValueError(f"{n_tokens} tokens hold no window of {seq}+1 tokens")
    if order == "random":
        return batch_hash(seed, step, sample) % (n_tokens - seq)
    if order != "sequential":
        raise ValueError(f"data order {order!r}: sequential or random")
    return ((step * batch + sample) % num_windows(n_tokens, seq)) * seq


def make_batch(tokens: np.ndarray, step: int, batch: int, seq: int, order: str = "sequential",
               seed: int = 0, first: int = 0, count: int | None = None) -> Tuple[np.ndarray, np.ndarray]:
    """(inputs, targets), int32 [count, S], of samples [first, first+count)
    (default: all `batch`) of step `step`'s global batch of `batch` samples.
    A window of S+1 tokens: the inputs are its first S, the targets its last S.
    With gradient accumulation over M micro-batches of b samples, micro-batch
    j of optimizer step s is first = j*b, count = b of a global batch of M*b
    (in sequential order: data step s*M + j with batch b)."""
    count = batch - first if count is None else count
    if not (0 <= first and count >= 0 and first + count <= batch):
        raise ValueError(f"samples [{first}, {first}+{count}) are outside the batch [0, {batch})")
    starts = [window_start(len(tokens), step, first + i, batch, seq, order, seed) for i in range(count)]
    block = np.stack([tokens[st: st + seq + 1] for st in starts])
    return block[:, :-1].astype(np.int32), block[:, 1:].astype(np.int32)


# --------------------------------------------------------------------------
# Loss and gradients
# --------------------------------------------------------------------------

def logits(cfg: dict, params: Params, inputs) -> jnp.ndarray:
    """[B, S, vocab] float32: reference.py's forward on each sample (all positions)."""
    mt = cfg.get("model_type")
    if mt == "llama":
        fn = reference._llama_jit
    elif mt == "gpt2":
        fn = reference._gpt2_jit
    else:
        raise ValueError(f"model_type {mt!r} is not implemented by the oracle")
    cfg_json = json.dumps(cfg, sort_keys=True)
    p = {canonical_name(cfg, k): v for k, v in params.items()}
    if cfg.get("_colossus_activations", "f32") == "bf16":
        # Mixed precision: the forward reads the f32 master weights rounded
        # to bf16; their gradient reaches the master weights unrounded.
        p = {k: v + jax.lax.stop_gradient(
                 v.astype(jnp.bfloat16).astype(jnp.float32) - v)
             for k, v in p.items()}
    return jax.vmap(lambda ids: fn(cfg_json, p, ids))(inputs)


def cross_entropy(lg, targets, ignore_index: int = IGNORE_INDEX):
    """Mean token cross entropy, float32: log-softmax with the row maximum
    subtracted; positions whose target is ignore_index count in neither the
    sum nor the count. With no counted position the loss is 0 (not NaN)."""
    lg = lg.astype(jnp.float32)
    z = lg - jax.lax.stop_gradient(jnp.max(lg, axis=-1, keepdims=True))
    logp = z - jnp.log(jnp.sum(jnp.exp(z), axis=-1, keepdims=True))
    valid = targets != ignore_index
    safe = jnp.where(valid, targets, 0)
    nll = -jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
    count = jnp.sum(valid.astype(jnp.float32))
    return jnp.sum(jnp.where(valid, nll, 0.0)) / jnp.maximum(count, 1.0)


def loss(cfg: dict, params: Params, inputs, targets) -> jnp.ndarray:
    """The training loss of one (micro-)batch: inputs/targets int [B, S]."""
    return cross_entropy(logits(cfg, params, inputs), targets)


@lru_cache(maxsize=None)
def _value_and_grad(cfg_json: str):
    cfg = json.loads(cfg_json)
    return jax.jit(jax.value_and_grad(lambda p, x, y: loss(cfg, p, x, y)))


def loss_and_grads(cfg: dict, params: Params, inputs, targets) -> Tuple[float, Dict[str, np.ndarray]]:
    """(loss, {name: float32 gradient}) of one batch, by jax.grad."""
    fn = _value_and_grad(json.dumps(cfg, sort_keys=True))
    p = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    val, g = fn(p, jnp.asarray(inputs, jnp.int32), jnp.asarray(targets, jnp.int32))
    return float(val), {k: np.asarray(v, np.float32) for k, v in g.items()}


def accumulated_loss_and_grads(cfg: dict, params: Params,
                               micro_batches: Iterable[Tuple[np.ndarray, np.ndarray]]):
    """Gradient accumulation: the mean of the micro-batch gradients (and of
    their losses), each micro-batch loss being its own mean."""
    total_loss, total, m = 0.0, None, 0
    for x, y in micro_batches:
        l, g = loss_and_grads(cfg, params, x, y)
        total_loss += l
        total = g if total is None else {k: total[k] + g[k] for k in g}
        m += 1
    if m == 0:
        raise ValueError("no micro-batch")
    inv = np.float32(1.0 / m)
    return total_loss / m, {k: (v * inv if m > 1 else v).astype(np.float32) for k, v in total.items()}


# --------------------------------------------------------------------------
# Clipping, schedule, AdamW
# --------------------------------------------------------------------------

def global_norm(grads: Dict[str, np.ndarray]) -> float:
    """sqrt of the sum of squares of every entry of every gradient (the
    float32 gradients squared and summed in float64)."""
    return math.sqrt(sum(float(np.sum(np.square(np.asarray(g, np.float64)))) for g in grads.values()))


def clip_grads(grads: Dict[str, np.ndarray], max_norm: float):
    """Global-norm clipping. Returns (clipped grads, norm before clipping).
    When max_norm > 0 and norm > max_norm every gradient is multiplied by
    max_norm / (norm + 1e-6); otherwise the gradients are unchanged."""
    norm = global_norm(grads)
    if max_norm > 0 and norm > max_norm:
        coef = np.float32(max_norm / (norm + CLIP_EPS))
        return {k: (g * coef).astype(np.float32) for k, g in grads.items()}, norm
    return dict(grads), norm


def lr_at(t: int, peak: float, warmup: int, total: int, min_lr: float) -> float:
    """Learning rate of optimizer step t = 1, 2, ... (double precision):
      t <= warmup: peak * t / warmup
      otherwise:   min_lr + 0.5 (peak - min_lr) (1 + cos(pi (t - warmup) / max(1, total - warmup)))
    (t - warmup) is capped at max(1, total - warmup): past `total` the rate
    stays at min_lr instead of climbing the cosine again."""
    if t < 1:
        raise ValueError(f"optimizer steps count from 1 (got {t})")
    if t <= warmup:
        return peak * t / warmup
    span = max(1, total - warmup)
    progress = min(t - warmup, span) / span
    return min_lr + 0.5 * (peak - min_lr) * (1.0 + math.cos(math.pi * progress))


def adamw_update(param: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray, t: int, lr: float,
                 beta1: float = DEFAULTS["beta1"], beta2: float = DEFAULTS["beta2"],
                 eps: float = DEFAULTS["eps"], weight_decay: float = DEFAULTS["weight_decay"],
                 decay: bool | None = None):
    """One AdamW step on one tensor (PyTorch semantics), float32 arithmetic:
      m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
      mhat = m / (1 - b1^t);  vhat = v / (1 - b2^t)
      p = p (1 - lr wd)       (decoupled; only when `decay`, default rank >= 2)
      p = p - lr mhat / (sqrt(vhat) + eps)
    The scalars lr, 1 - b1^t, 1 - b2^t, 1 - lr wd are computed in double
    precision and rounded to float32. Returns (param, m, v)."""
    f = np.float32
    if decay is None:
        decay = decays(np.shape(param))
    p, g = np.asarray(param, f), np.asarray(grad, f)
    m = f(beta1) * np.asarray(m, f) + f(1.0 - beta1) * g
    v = f(beta2) * np.asarray(v, f) + f(1.0 - beta2) * (g * g)
    mhat = m / f(1.0 - beta1 ** t)
    vhat = v / f(1.0 - beta2 ** t)
    if decay and weight_decay != 0.0:
        p = p * f(1.0 - lr * weight_decay)
    p = p - f(lr) * (mhat / (np.sqrt(vhat) + f(eps)))
    return p.astype(f), m.astype(f), v.astype(f)


def optimizer_step(params: Dict[str, np.ndarray], grads: Dict[str, np.ndarray],
                   m: Dict[str, np.ndarray], v: Dict[str, np.ndarray], t: int, lr: float,
                   max_grad_norm: float = DEFAULTS["max_grad_norm"], **adam):
    """Clip, then AdamW on every tensor. Returns (params, m, v, grad_norm)."""
    g, norm = clip_grads(grads, max_grad_norm)
    new_p, new_m, new_v = {}, {}, {}
    for k in params:
        new_p[k], new_m[k], new_v[k] = adamw_update(params[k], g[k], m[k], v[k], t, lr, **adam)
    return new_p, new_m, new_v, norm


def zeros_like(params: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    return {k: np.zeros_like(v, dtype=np.float32) for k, v in params.items()}
