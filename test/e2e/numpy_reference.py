"""A second, plain-numpy float64 implementation of the same HF semantics.

It exists to check the oracle (reference.py, JAX float32) itself: written
separately and in a different style (explicit loops over heads and positions,
float64 throughout, RoPE as complex rotations of pairs (i, i + D/2)), so that
a slip in one is unlikely to be repeated in the other. check_reference.py
compares the two. Not used by the end-to-end comparisons.
"""

from __future__ import annotations

import math
from typing import Dict, Sequence

import numpy as np


def _rms(x, w, eps):
    return w * x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)


def _ln(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _softmax_row(s):
    s = s - s.max()
    e = np.exp(s)
    return e / e.sum()


def _attend(q, k, v, scale):
    """q [T, H, D], k/v [T, Hkv, D] -> [T, H*D]; causal, query head h uses kv head h // (H/Hkv)."""
    t, h, d = q.shape
    group = h // k.shape[1]
    out = np.zeros((t, h, d))
    for head in range(h):
        kv = head // group
        for i in range(t):
            s = np.array([q[i, head] @ k[j, kv] for j in range(i + 1)]) * scale
            p = _softmax_row(s)
            out[i, head] = p @ v[: i + 1, kv]
    return out.reshape(t, h * d)


def _llama3_freqs(cfg, dim):
    base = float(cfg.get("rope_theta", 10000.0))
    freqs = []
    rs = cfg.get("rope_scaling") or {}
    kind = rs.get("rope_type", rs.get("type", "default")) if rs else "default"
    for i in range(dim // 2):
        f = base ** (-(2.0 * i) / dim)
        if kind == "llama3":
            # Meta's apply_scaling: keep high frequencies, divide low ones by
            # `factor`, interpolate linearly in 1/wavelength in between.
            lo, hi = rs["low_freq_factor"], rs["high_freq_factor"]
            old = rs["original_max_position_embeddings"]
            wl = 2 * math.pi / f
            if wl < old / hi:
                pass
            elif wl > old / lo:
                f = f / rs["factor"]
            else:
                a = (old / wl - lo) / (hi - lo)
                f = (1 - a) * f / rs["factor"] + a * f
        elif kind != "default":
            raise ValueError(kind)
        freqs.append(f)
    return np.array(freqs)


def _rope(x, freqs):
    """x [T, H, D]: pairs (i, i + D/2) rotated by angle pos * freqs[i]."""
    t, _, d = x.shape
    half = d // 2
    out = x.copy()
    for pos in range(t):
        z = (x[pos, :, :half] + 1j * x[pos, :, half:]) * np.exp(1j * pos * freqs)[None, :]
        out[pos, :, :half] = z.real
        out[pos, :, half:] = z.imag
    return out


def llama(cfg: dict, w: Dict[str, np.ndarray], ids: Sequence[int]) -> np.ndarray:
    W = {k: np.asarray(v, dtype=np.float64) for k, v in w.items()}
    hidden = cfg["hidden_size"]
    H = cfg["num_attention_heads"]
    Hkv = cfg.get("num_key_value_heads") or H
    D = cfg.get("head_dim") or hidden // H
    eps = cfg["rms_norm_eps"]
    freqs = _llama3_freqs(cfg, D)
    t = len(ids)
    x = np.stack([W["model.embed_tokens.weight"][i] for i in ids])

    def lin(a, name):
        y = a @ W[name + ".weight"].T
        b = W.get(name + ".bias")
        return y if b is None else y + b

    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}"
        a = _rms(x, W[f"{p}.input_layernorm.weight"], eps)
        q = _rope(lin(a, f"{p}.self_attn.q_proj").reshape(t, H, D), freqs)
        k = _rope(lin(a, f"{p}.self_attn.k_proj").reshape(t, Hkv, D), freqs)
        v = lin(a, f"{p}.self_attn.v_proj").reshape(t, Hkv, D)
        x = x + lin(_attend(q, k, v, D ** -0.5), f"{p}.self_attn.o_proj")
        m = _rms(x, W[f"{p}.post_attention_layernorm.weight"], eps)
        g = lin(m, f"{p}.mlp.gate_proj")
        x = x + lin(g / (1 + np.exp(-g)) * lin(m, f"{p}.mlp.up_proj"), f"{p}.mlp.down_proj")
    x = _rms(x, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else W["lm_head.weight"]
    return x @ head.T


def gpt2(cfg: dict, w: Dict[str, np.ndarray], ids: Sequence[int]) -> np.ndarray:
    W = {k: np.asarray(v, dtype=np.float64) for k, v in w.items()}
    E, H = cfg["n_embd"], cfg["n_head"]
    D = E // H
    eps = cfg["layer_norm_epsilon"]
    t = len(ids)
    x = np.stack([W["wte.weight"][i] + W["wpe.weight"][pos] for pos, i in enumerate(ids)])

    def gelu_tanh(z):
        return 0.5 * z * (1 + np.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z ** 3)))

    for layer in range(cfg["n_layer"]):
        p = f"h.{layer}"
        a = _ln(x, W[f"{p}.ln_1.weight"], W[f"{p}.ln_1.bias"], eps)
        qkv = a @ W[f"{p}.attn.c_attn.weight"] + W[f"{p}.attn.c_attn.bias"]
        q, k, v = (qkv[:, i * E:(i + 1) * E].reshape(t, H, D) for i in range(3))
        x = x + _attend(q, k, v, 1 / math.sqrt(D)) @ W[f"{p}.attn.c_proj.weight"] + W[f"{p}.attn.c_proj.bias"]
        m = _ln(x, W[f"{p}.ln_2.weight"], W[f"{p}.ln_2.bias"], eps)
        m = gelu_tanh(m @ W[f"{p}.mlp.c_fc.weight"] + W[f"{p}.mlp.c_fc.bias"])
        x = x + m @ W[f"{p}.mlp.c_proj.weight"] + W[f"{p}.mlp.c_proj.bias"]
    x = _ln(x, W["ln_f.weight"], W["ln_f.bias"], eps)
    return x @ W["wte.weight"].T


def forward(cfg, w, ids):
    return {"llama": llama, "gpt2": gpt2}[cfg["model_type"]](cfg, w, ids)
