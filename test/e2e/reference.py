"""Independent numerics oracle: Hugging Face reference semantics in JAX.

Written from the Hugging Face `transformers` modeling code
(LlamaForCausalLM, GPT2LMHeadModel), NOT from the Colossus compiler, so that
the end-to-end tests compare two independent implementations. CPU, float32
throughout (jax x64 stays off); weights stored as f16/bf16 are upcast to f32.

Weight names are the published HF checkpoint names:
  Llama: model.embed_tokens.weight, model.layers.{i}.input_layernorm.weight,
         model.layers.{i}.self_attn.{q,k,v,o}_proj.weight  ([out, in], y = x @ W.T),
         model.layers.{i}.post_attention_layernorm.weight,
         model.layers.{i}.mlp.{gate,up,down}_proj.weight, model.norm.weight,
         lm_head.weight (absent when tie_word_embeddings: embed_tokens is used)
  GPT-2: wte.weight, wpe.weight, h.{i}.ln_1.{weight,bias},
         h.{i}.attn.c_attn.{weight [n_embd, 3*n_embd], bias} (Conv1D: y = x @ W + b),
         h.{i}.attn.c_proj.*, h.{i}.ln_2.*, h.{i}.mlp.c_fc.{weight [n_embd, n_inner], bias},
         h.{i}.mlp.c_proj.*, ln_f.{weight,bias}; the LM head is tied to wte.
"""

from __future__ import annotations

import json
import math
import os
from functools import partial
from typing import Dict, List, Sequence

import numpy as np

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

jax.config.update("jax_enable_x64", False)
# Full float32 matmuls (never a reduced-precision pass).
jax.config.update("jax_default_matmul_precision", "highest")

Weights = Dict[str, np.ndarray]


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------

def load_config(path: str) -> dict:
    """Reads an HF config.json (a folder holding one is accepted too)."""
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    with open(path) as f:
        return json.load(f)


def _load_safetensors_file(path: str) -> Weights:
    from safetensors.numpy import load_file  # ml_dtypes provides bfloat16

    return {k: np.asarray(v, dtype=np.float32) for k, v in load_file(path).items()}


def load_weights(path: str) -> Weights:
    """Loads HF weights as float32 numpy arrays.

    `path` is a .safetensors file, a model.safetensors.index.json of a sharded
    checkpoint, or a folder holding either.
    """
    if os.path.isdir(path):
        idx = os.path.join(path, "model.safetensors.index.json")
        path = idx if os.path.exists(idx) else os.path.join(path, "model.safetensors")
    if path.endswith(".json"):
        with open(path) as f:
            index = json.load(f)
        base = os.path.dirname(os.path.abspath(path))
        out: Weights = {}
        for shard in sorted(set(index["weight_map"].values())):
            out.update(_load_safetensors_file(os.path.join(base, shard)))
        missing = set(index["weight_map"]) - set(out)
        if missing:
            raise ValueError(f"index names tensors missing from the shards: {sorted(missing)[:5]}")
        return out
    return _load_safetensors_file(path)


# --------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------

def _act(name: str):
    name = (name or "").lower()
    if name in ("silu", "swish"):
        return jax.nn.silu
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu_tanh"):
        # HF NewGELUActivation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        c = math.sqrt(2.0 / math.pi)
        return lambda x: 0.5 * x * (1.0 + jnp.tanh(c * (x + 0.044715 * x * x * x)))
    if name == "gelu":
        return lambda x: jax.nn.gelu(x, approximate=False)
    if name == "relu":
        return jax.nn.relu
    raise ValueError(f"unsupported activation {name!r}")


# Activation precision (the config key "_colossus_activations", set by the
# training oracle's --activations flag): "bf16" rounds the output of every
# module (norm, projection, rope, attention, activation function, product,
# residual sum) to bfloat16, as a PyTorch model in bf16 does; the rounding's
# derivative rounds the cotangent the same way. Logits stay float32 (their
# cotangent is rounded: _logits_rounder).
def _rounder(cfg: dict):
    if cfg.get("_colossus_activations", "f32") == "bf16":
        return lambda x: x.astype(jnp.bfloat16).astype(jnp.float32)
    return lambda x: x


# The logits stay float32 in the forward, but with "bf16" their cotangent
# (the loss gradient dlogits) is rounded to bfloat16 before it reaches the
# output projection, as PyTorch's bf16 autocast stores it (and colossus's
# --precision=bf16 step: docs/training.md, "Mixed precision").
@jax.custom_vjp
def _round_cotangent(x):
    return x


def _round_cotangent_fwd(x):
    return x, None


def _round_cotangent_bwd(_, g):
    return (g.astype(jnp.bfloat16).astype(jnp.float32),)


_round_cotangent.defvjp(_round_cotangent_fwd, _round_cotangent_bwd)


def _logits_rounder(cfg: dict):
    if cfg.get("_colossus_activations", "f32") == "bf16":
        return _round_cotangent
    return lambda x: x


def _causal_attention(q, k, v, scale):
    """q: [H, T, D]; k, v: [Hkv, T, D] (GQA: H % Hkv == 0). Returns [T, H*D]."""
    h, t, d = q.shape
    hkv = k.shape[0]
    if h % hkv:
        raise ValueError(f"{h} heads are not a multiple of {hkv} kv heads")
    rep = h // hkv
    # HF repeat_kv: kv head j serves query heads j*rep .. j*rep+rep-1.
    k = jnp.repeat(k, rep, axis=0)
    v = jnp.repeat(v, rep, axis=0)
    scores = jnp.einsum("htd,hsd->hts", q, k) * scale
    mask = jnp.tril(jnp.ones((t, t), dtype=bool))
    scores = jnp.where(mask[None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1)
    out = jnp.einsum("hts,hsd->htd", probs, v)
    return jnp.transpose(out, (1, 0, 2)).reshape(t, h * d)


def _run(fn, cfg: dict, w: Weights, ids: Sequence[int]) -> np.ndarray:
    """Runs a jitted model on `ids` padded at the end to a bucket of 32
    positions (one compilation serves many lengths). Causal attention makes
    the padding invisible to the real rows, which are returned."""
    ids = np.asarray(ids, dtype=np.int32)
    t = int(ids.shape[0])
    tp = max(32, -(-t // 32) * 32)
    padded = np.zeros((tp,), dtype=np.int32)
    padded[:t] = ids
    params = {k: jnp.asarray(v, dtype=jnp.float32) for k, v in w.items()}
    out = fn(json.dumps(cfg, sort_keys=True), params, jnp.asarray(padded))
    return np.asarray(out, dtype=np.float32)[:t]


# --------------------------------------------------------------------------
# Llama
# --------------------------------------------------------------------------

def llama_head_dim(cfg: dict) -> int:
    hd = cfg.get("head_dim")
    return int(hd) if hd else cfg["hidden_size"] // cfg["num_attention_heads"]


def rope_inv_freq(cfg: dict) -> np.ndarray:
    """HF's rope initialization (default and 'llama3'), float32 like HF.

    Returns (inv_freq [head_dim/2], attention_scaling)."""
    dim = llama_head_dim(cfg)
    dim = int(dim * cfg.get("partial_rotary_factor", 1.0))
    base = float(cfg.get("rope_theta", 10000.0))
    inv_freq = (1.0 / (base ** (np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / dim))).astype(np.float32)
    scaling = cfg.get("rope_scaling") or None
    if scaling is None:
        return inv_freq, 1.0
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type == "default":
        return inv_freq, 1.0
    if rope_type != "llama3":
        raise ValueError(f"rope_type {rope_type!r} is not implemented by the oracle")
    # transformers.modeling_rope_utils._compute_llama3_parameters
    factor = float(scaling["factor"])
    low_freq_factor = float(scaling["low_freq_factor"])
    high_freq_factor = float(scaling["high_freq_factor"])
    old_context_len = float(scaling["original_max_position_embeddings"])
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = (2 * math.pi / inv_freq).astype(np.float32)
    inv_freq_llama = np.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq).astype(np.float32)
    smooth_factor = ((old_context_len / wavelen - low_freq_factor)
                     / (high_freq_factor - low_freq_factor)).astype(np.float32)
    smoothed = ((1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama).astype(np.float32)
    is_medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return np.where(is_medium, smoothed, inv_freq_llama).astype(np.float32), 1.0


def _rotate_half(x):
    half = x.shape[-1] // 2
    return jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def _rms_norm(x, w, eps):
    var = jnp.mean(x * x, axis=-1, keepdims=True)
    return w * (x * jax.lax.rsqrt(var + eps))


def _linear_t(x, w, b=None):
    """nn.Linear: y = x @ W.T (+ b), W is [out, in]."""
    y = x @ w.T
    return y if b is None else y + b


def llama_forward(cfg: dict, w: Weights, ids: Sequence[int]) -> np.ndarray:
    """Logits [T, vocab] (float32) of LlamaForCausalLM on one sequence."""
    return _run(_llama_jit, cfg, w, ids)


@partial(jax.jit, static_argnums=(0,))
def _llama_jit(cfg_json: str, j, ids):
    cfg = json.loads(cfg_json)
    t = ids.shape[0]
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads") or nh
    hd = llama_head_dim(cfg)
    eps = float(cfg.get("rms_norm_eps", 1e-6))
    act = _act(cfg.get("hidden_act", "silu"))
    attn_bias = bool(cfg.get("attention_bias", False))
    mlp_bias = bool(cfg.get("mlp_bias", False))

    inv_freq, attention_scaling = rope_inv_freq(cfg)
    pos = np.arange(t, dtype=np.float32)
    freqs = jnp.asarray(pos[:, None] * inv_freq[None, :])            # [T, D/2] (float32, as HF)
    emb = jnp.concatenate([freqs, freqs], axis=-1)                     # [T, D]
    cos = jnp.cos(emb) * attention_scaling
    sin = jnp.sin(emb) * attention_scaling
    rot = inv_freq.shape[0] * 2                                        # rotary dims (partial rotary)

    def rope(x):  # x: [H, T, D]
        xr, xp = x[..., :rot], x[..., rot:]
        xr = xr * cos[None] + _rotate_half(xr) * sin[None]
        return jnp.concatenate([xr, xp], axis=-1)

    r = _rounder(cfg)
    x = j["model.embed_tokens.weight"][ids]                             # [T, hidden]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = r(_rms_norm(x, j[p + "input_layernorm.weight"], eps))
        bias = (lambda n: j[p + f"self_attn.{n}_proj.bias"]) if attn_bias else (lambda n: None)
        q = r(_linear_t(h, j[p + "self_attn.q_proj.weight"], bias("q")))
        k = r(_linear_t(h, j[p + "self_attn.k_proj.weight"], bias("k")))
        v = r(_linear_t(h, j[p + "self_attn.v_proj.weight"], bias("v")))
        q = jnp.transpose(q.reshape(t, nh, hd), (1, 0, 2))
        k = jnp.transpose(k.reshape(t, nkv, hd), (1, 0, 2))
        v = jnp.transpose(v.reshape(t, nkv, hd), (1, 0, 2))
        q, k = r(rope(q)), r(rope(k))
        a = r(_causal_attention(q, k, v, 1.0 / math.sqrt(hd)))
        x = r(x + r(_linear_t(a, j[p + "self_attn.o_proj.weight"], bias("o"))))
        h = r(_rms_norm(x, j[p + "post_attention_layernorm.weight"], eps))
        mb = (lambda n: j[p + f"mlp.{n}_proj.bias"]) if mlp_bias else (lambda n: None)
        g = r(act(r(_linear_t(h, j[p + "mlp.gate_proj.weight"], mb("gate")))))
        u = r(_linear_t(h, j[p + "mlp.up_proj.weight"], mb("up")))
        x = r(x + r(_linear_t(r(g * u), j[p + "mlp.down_proj.weight"], mb("down"))))
    x = r(_rms_norm(x, j["model.norm.weight"], eps))
    # LlamaConfig.tie_word_embeddings defaults to False.
    if cfg.get("tie_word_embeddings", False):
        head = j["model.embed_tokens.weight"]
    else:
        head = j["lm_head.weight"]
    return _logits_rounder(cfg)(x @ head.T)


# --------------------------------------------------------------------------
# GPT-2
# --------------------------------------------------------------------------

def _layer_norm(x, w, b, eps):
    mu = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean((x - mu) ** 2, axis=-1, keepdims=True)
    return (x - mu) * jax.lax.rsqrt(var + eps) * w + b


def gpt2_forward(cfg: dict, w: Weights, ids: Sequence[int]) -> np.ndarray:
    """Logits [T, vocab] (float32) of GPT2LMHeadModel on one sequence."""
    # Accept checkpoints saved from GPT2LMHeadModel too ("transformer." prefix).
    w = {(k[len("transformer."):] if k.startswith("transformer.") else k): v for k, v in w.items()}
    return _run(_gpt2_jit, cfg, w, ids)


@partial(jax.jit, static_argnums=(0,))
def _gpt2_jit(cfg_json: str, j, ids):
    cfg = json.loads(cfg_json)
    t = ids.shape[0]
    e = cfg["n_embd"]
    nh = cfg["n_head"]
    hd = e // nh
    eps = float(cfg.get("layer_norm_epsilon", 1e-5))
    act = _act(cfg.get("activation_function", "gelu_new"))
    scale = 1.0 / math.sqrt(hd) if cfg.get("scale_attn_weights", True) else 1.0

    r = _rounder(cfg)
    x = r(j["wte.weight"][ids] + j["wpe.weight"][jnp.arange(t)])
    for i in range(cfg["n_layer"]):
        p = f"h.{i}."
        h = r(_layer_norm(x, j[p + "ln_1.weight"], j[p + "ln_1.bias"], eps))
        qkv = r(h @ j[p + "attn.c_attn.weight"] + j[p + "attn.c_attn.bias"])   # Conv1D
        q, k, v = jnp.split(qkv, 3, axis=-1)
        heads = lambda z: jnp.transpose(z.reshape(t, nh, hd), (1, 0, 2))      # noqa: E731
        s = scale
        if cfg.get("scale_attn_by_inverse_layer_idx", False):
            s = s / float(i + 1)
        a = r(_causal_attention(heads(q), heads(k), heads(v), s))
        x = r(x + r(a @ j[p + "attn.c_proj.weight"] + j[p + "attn.c_proj.bias"]))
        h = r(_layer_norm(x, j[p + "ln_2.weight"], j[p + "ln_2.bias"], eps))
        m = r(act(r(h @ j[p + "mlp.c_fc.weight"] + j[p + "mlp.c_fc.bias"])))
        x = r(x + r(m @ j[p + "mlp.c_proj.weight"] + j[p + "mlp.c_proj.bias"]))
    x = r(_layer_norm(x, j["ln_f.weight"], j["ln_f.bias"], eps))
    # GPT2LMHeadModel ties lm_head to wte (tie_word_embeddings defaults to True).
    head = j["wte.weight"] if cfg.get("tie_word_embeddings", True) else j["lm_head.weight"]
    return _logits_rounder(cfg)(x @ head.T)


# --------------------------------------------------------------------------
# Dispatch, generation
# --------------------------------------------------------------------------

def forward(cfg: dict, w: Weights, ids: Sequence[int]) -> np.ndarray:
    mt = cfg.get("model_type")
    if mt == "llama":
        return llama_forward(cfg, w, ids)
    if mt == "gpt2":
        return gpt2_forward(cfg, w, ids)
    raise ValueError(f"model_type {mt!r} is not implemented by the oracle")


def generate(cfg: dict, w: Weights, prompt: Sequence[int], max_new_tokens: int,
             stop_at_eos: bool = False) -> List[int]:
    """Greedy decoding, recomputing the whole sequence every step (no KV cache:
    the cache is what the system under test implements, the oracle avoids it).
    Returns the new tokens only. Ties go to the lowest token id (argmax)."""
    seq = list(prompt)
    new: List[int] = []
    eos = cfg.get("eos_token_id")
    eos_set = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
    for _ in range(max_new_tokens):
        logits = forward(cfg, w, seq)
        tok = int(np.argmax(logits[-1]))
        seq.append(tok)
        new.append(tok)
        if stop_at_eos and tok in eos_set:
            break
    return new
