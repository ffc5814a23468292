//===- ColossusOps.td - Colossus dialect ops ---------------*- tablegen -*-===//
#ifndef COLOSSUS_OPS_TD
#define COLOSSUS_OPS_TD

include "colossus/Dialect/Colossus/IR/ColossusDialect.td"
include "mlir/Interfaces/InferTypeOpInterface.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/Interfaces/ControlFlowInterfaces.td"
include "mlir/IR/RegionKindInterface.td"
include "mlir/IR/OpAsmInterface.td"

class Colossus_Op<string mnemonic, list<Trait> traits = []>
    : Op<Colossus_Dialect, mnemonic,
         !listconcat(traits, [Pure, InferTypeOpAdaptor])> {
  let hasVerifier = 1;
}

def FloatMatrix : 2DTensorOf<[AnyFloat]>;
def F32Matrix : 2DTensorOf<[F32]>;
def F32Vector : 1DTensorOf<[F32]>;
def FloatVector : 1DTensorOf<[AnyFloat]>;
def Float3D : 3DTensorOf<[AnyFloat]>;
def TokenVector : 1DTensorOf<[I32]>;

//===----------------------------------------------------------------------===//
// Sources of token-indexed data
//===----------------------------------------------------------------------===//

def Colossus_PositionsOp : Colossus_Op<"positions"> {
  let summary = "positions of the active tokens";
  let description = [{
    A `tensor<T x i32>` whose row `b * nt + t` holds `pos0 + t`, the absolute
    position of that token in its sequence, for the active region of the step.
    Rows past the active region are unspecified. Consumers re-materialize it
    inside their kernels, so it never occupies memory.

    ```mlir
    %pos = colossus.positions 80
    ```
  }];
  let arguments = (ins ConfinedAttr<I64Attr, [IntPositive]>:$rows);
  let results = (outs TokenVector:$result);
  let assemblyFormat = "$rows attr-dict";
  let hasVerifier = 0;
}

def Colossus_EmbeddingOp : Colossus_Op<"embedding"> {
  let summary = "row gather from an embedding table";
  let description = [{
    `result[r, :] = table[ids[r], :]`. Ids outside `[0, vocab)` are clamped
    (the runtime rejects them before a step runs).
  }];
  let arguments = (ins FloatMatrix:$table, TokenVector:$ids);
  let results = (outs FloatMatrix:$result);
  let assemblyFormat = "$table `[` $ids `]` attr-dict `:` type($table) `,` type($ids)";
}

//===----------------------------------------------------------------------===//
// Norms
//===----------------------------------------------------------------------===//

def Colossus_RmsNormOp : Colossus_Op<"rms_norm"> {
  let summary = "RMS normalization over the last dimension";
  let description = [{
    `result[r, c] = x[r, c] / sqrt(mean_c(x[r, :]^2) + eps) * weight[c]`.
  }];
  let arguments = (ins FloatMatrix:$x, FloatVector:$weight, F64Attr:$eps);
  let results = (outs FloatMatrix:$result);
  let assemblyFormat = [{
    $x `,` $weight `eps` `=` $eps attr-dict `:` type($x) `,` type($weight)
  }];
}

def Colossus_LayerNormOp : Colossus_Op<"layer_norm"> {
  let summary = "layer normalization over the last dimension";
  let description = [{
    `result[r, c] = (x[r, c] - mean) / sqrt(var + eps) * weight[c] + bias[c]`
    with the biased variance over the row.
  }];
  let arguments = (ins FloatMatrix:$x, FloatVector:$weight, FloatVector:$bias,
                       F64Attr:$eps);
  let results = (outs FloatMatrix:$result);
  let assemblyFormat = [{
    $x `,` $weight `,` $bias `eps` `=` $eps attr-dict `:` type($x) `,`
    type($weight) `,` type($bias)
  }];
}

//===----------------------------------------------------------------------===//
// Linear layers
//===----------------------------------------------------------------------===//

def Colossus_LinearOp : Colossus_Op<"linear"> {
  let summary = "x @ W^T (+ bias)";
  let description = [{
    `x: [T, K]`. With `transpose_w` (the default, HF `nn.Linear`), `weight` is
    `[N, K]` and `result = x @ weight^T`; without it (HF `Conv1D`, GPT-2),
    `weight` is `[K, N]` and `result = x @ weight`. An optional `bias: [N]` is
    added. The result is `[T, N]`.
  }];
  let arguments = (ins FloatMatrix:$x, FloatMatrix:$weight,
                       Optional<FloatVector>:$bias,
                       DefaultValuedAttr<BoolAttr, "true">:$transpose_w);
  let results = (outs FloatMatrix:$result);
  let assemblyFormat = [{
    $x `,` $weight (`bias` $bias^)? attr-dict `:` type($x) `,` type($weight)
    (`,` type($bias)^)?
  }];
}

//===----------------------------------------------------------------------===//
// Position encoding and attention
//===----------------------------------------------------------------------===//

def Colossus_RopeOp : Colossus_Op<"rope"> {
  let summary = "rotary position embedding";
  let description = [{
    Rotates each head of `x: [T, H * head_dim]` by the angles
    `positions[r] * inv_freq[i]`, `inv_freq[i] = theta^(-2i / head_dim)`,
    optionally rescaled (`linear`: divided by `factor`; `llama3`: the Llama 3.1
    wavelength-dependent rule with `factor`, `low_freq_factor`,
    `high_freq_factor`, `original_max_position`). `rotate_half` pairs element
    `i` with `i + head_dim / 2` (HF Llama); `interleaved` pairs `2i` with
    `2i + 1` (GPT-J, Meta's reference). With `inverse` the rotation is by the
    negated angle: the vector-Jacobian product of the forward rotation.
  }];
  let arguments = (ins FloatMatrix:$x, TokenVector:$positions,
                       ConfinedAttr<I64Attr, [IntPositive]>:$head_dim,
                       F64Attr:$theta, Colossus_RopeLayoutAttr:$layout,
                       DefaultValuedAttr<Colossus_RopeScalingAttr,
                         "::colossus::RopeScaling::none">:$scaling,
                       DefaultValuedAttr<F64Attr, "1.0">:$factor,
                       DefaultValuedAttr<F64Attr, "1.0">:$low_freq_factor,
                       DefaultValuedAttr<F64Attr, "4.0">:$high_freq_factor,
                       DefaultValuedAttr<I64Attr, "8192">:$original_max_position,
                       DefaultValuedAttr<BoolAttr, "false">:$inverse);
  let results = (outs FloatMatrix:$result);
  let assemblyFormat = [{
    $x `,` $positions attr-dict `:` type($x) `,` type($positions)
  }];
}

def Colossus_CacheWriteOp : Colossus_Op<"cache_write"> {
  let summary = "store new keys or values into a KV cache";
  let description = [{
    `cache: [B, S, C]`, `x: [T, C]`. Returns the cache with row `r` of `x`
    (sequence `b = r / nt`) stored at `[b, positions[r], :]`; all other
    entries unchanged. Bufferizes in place.
  }];
  let arguments = (ins Float3D:$cache, FloatMatrix:$x, TokenVector:$positions);
  let results = (outs Float3D:$result);
  let assemblyFormat = [{
    $cache `[` $positions `]` `,` $x attr-dict `:` type($cache) `,` type($x) `,`
    type($positions)
  }];
}

def Colossus_AttentionOp : Colossus_Op<"attention"> {
  let summary = "scaled dot-product attention over a KV cache (GQA/MQA)";
  let description = [{
    `q: [T, num_heads * head_dim]`; `k`, `v`: `[B, S, num_kv_heads * head_dim]`
    (the caches after this step's `cache_write`). Query row `r` (sequence
    `b = r / nt`, position `p = positions[r]`) of head `h` attends the keys
    `j` of sequence `b` with `j <= p` when `causal` (all `j < pos0 + nt`
    otherwise), and `j > p - sliding_window` when `sliding_window > 0`, using
    kv head `h / (num_heads / num_kv_heads)`:
    `out = softmax(scale * q . k_j) @ v`.

    With `save_lse` (set by colossus-autodiff on the forward attention whose
    gradient is needed) a second result `lse: tensor<T x num_heads x f32>`
    holds each (row, head)'s log-sum-exp `m + log(sum_j exp(s_j - m))` of
    the scaled scores, the row statistics `attention_grad` reads.
  }];
  let arguments = (ins FloatMatrix:$q, Float3D:$k, Float3D:$v,
                       TokenVector:$positions,
                       ConfinedAttr<I64Attr, [IntPositive]>:$num_heads,
                       ConfinedAttr<I64Attr, [IntPositive]>:$num_kv_heads,
                       ConfinedAttr<I64Attr, [IntPositive]>:$head_dim,
                       F64Attr:$scale,
                       DefaultValuedAttr<BoolAttr, "true">:$causal,
                       DefaultValuedAttr<I64Attr, "0">:$sliding_window,
                       UnitAttr:$save_lse);
  let results = (outs FloatMatrix:$result, Optional<F32Matrix>:$lse);
  let assemblyFormat = [{
    $q `,` $k `,` $v `,` $positions attr-dict `:` type($q) `,` type($k) `,`
    type($v) `,` type($positions)
  }];
}

def Colossus_SliceOp : Colossus_Op<"slice"> {
  let summary = "columns [offset, offset + size) of a matrix";
  let description = [{
    A view of the last dimension; consumers read through it, so it never
    occupies memory of its own.
  }];
  let arguments = (ins FloatMatrix:$x, ConfinedAttr<I64Attr, [IntNonNegative]>:$offset,
                       ConfinedAttr<I64Attr, [IntPositive]>:$size);
  let results = (outs FloatMatrix:$result);
  let assemblyFormat = "$x `[` $offset `,` $size `]` attr-dict `:` type($x)";
}

def Colossus_SoftmaxOp : Colossus_Op<"softmax"> {
  let summary = "softmax over the last dimension";
  let arguments = (ins FloatMatrix:$x);
  let results = (outs FloatMatrix:$result);
  let assemblyFormat = "$x attr-dict `:` type($x)";
}

//===----------------------------------------------------------------------===//
// Elementwise
//===----------------------------------------------------------------------===//

class Colossus_UnaryOp<string mnemonic> : Colossus_Op<mnemonic> {
  let arguments = (ins FloatMatrix:$x);
  let results = (outs FloatMatrix:$result);
  let assemblyFormat = "$x attr-dict `:` type($x)";
}

class Colossus_BinaryOp<string mnemonic>
    : Colossus_Op<mnemonic, [AllTypesMatch<["lhs", "rhs"]>]> {
  let arguments = (ins FloatMatrix:$lhs, FloatMatrix:$rhs);
  let results = (outs FloatMatrix:$result);
  let assemblyFormat = "$lhs `,` $rhs attr-dict `:` type($lhs)";
}

def Colossus_SiluOp : Colossus_UnaryOp<"silu"> {
  let summary = "x * sigmoid(x)";
}

def Colossus_GeluOp : Colossus_Op<"gelu"> {
  let summary = "GELU (erf or tanh approximation)";
  let arguments = (ins FloatMatrix:$x,
                       DefaultValuedAttr<Colossus_GeluApproxAttr,
                         "::colossus::GeluApprox::erf">:$approximate);
  let results = (outs FloatMatrix:$result);
  let assemblyFormat = "$x attr-dict `:` type($x)";
}

def Colossus_SwigluOp : Colossus_BinaryOp<"swiglu"> {
  let summary = "silu(gate) * up";
}

def Colossus_AddOp : Colossus_BinaryOp<"add"> {
  let summary = "elementwise sum";
}

def Colossus_MulOp : Colossus_BinaryOp<"mul"> {
  let summary = "elementwise product";
}

def Colossus_ConvertOp : Colossus_Op<"convert"> {
  let summary = "elementwise conversion to another float type";
  let description = [{
    `result[r, c] = x[r, c]` converted to `element_type` (round to nearest
    even when narrowing, exact when widening). Mixed precision uses it where
    a bf16 value meets an f32 one: the f32 logits of a bf16 model's output
    projection, the f32 gradients of bf16 parameters. Kernels compute in f32
    and round when they store, so inside a fusion group a conversion costs
    nothing; it decides the type of the buffer the group writes.

    ```mlir
    %logits = colossus.convert %y to f32 : tensor<32x256xbf16>
    ```
  }];
  let arguments = (ins RankedTensorOf<[AnyFloat]>:$x,
                       TypeAttrOf<AnyFloat>:$element_type);
  let results = (outs RankedTensorOf<[AnyFloat]>:$result);
  let assemblyFormat = "$x `to` $element_type attr-dict `:` type($x)";
}


//===----------------------------------------------------------------------===//
// Training: loss, vector-Jacobian products, optimizer
//===----------------------------------------------------------------------===//

def ScalarF32 : 0DTensorOf<[F32]>;

def Colossus_CrossEntropyOp : Colossus_Op<"cross_entropy"> {
  let summary = "mean token cross entropy of logits against target ids";
  let description = [{
    `logits: [T, V]`, `targets: [T]`. The mean over the active rows whose
    target is not `ignore_index` of `logsumexp(logits[r]) - logits[r, t_r]`
    (0 when every target is ignored).
  }];
  let arguments = (ins FloatMatrix:$logits, TokenVector:$targets,
                       DefaultValuedAttr<I64Attr, "-100">:$ignore_index);
  let results = (outs ScalarF32:$loss);
  let assemblyFormat = [{
    $logits `,` $targets attr-dict `:` type($logits) `,` type($targets)
  }];
}

def Colossus_CrossEntropyGradOp : Colossus_Op<"cross_entropy_grad"> {
  let summary = "d loss / d logits of cross_entropy";
  let description = [{
    `(softmax(logits[r]) - onehot(t_r)) * dloss / count` for rows with a
    valid target, 0 for ignored rows; `count` is the number of valid targets.
  }];
  let arguments = (ins FloatMatrix:$logits, TokenVector:$targets,
                       ScalarF32:$dloss,
                       DefaultValuedAttr<I64Attr, "-100">:$ignore_index);
  let results = (outs FloatMatrix:$result);
  let assemblyFormat = [{
    $logits `,` $targets `,` $dloss attr-dict `:` type($logits) `,`
    type($targets) `,` type($dloss)
  }];
}

def Colossus_CrossEntropyRowsOp : Colossus_Op<"cross_entropy_rows"> {
  let summary = "cross_entropy and its gradient in one pass per logits row";
  let description = [{
    `logits: [T, V]`, `targets: [T]`, `dloss` as `cross_entropy_grad`. With
    `count` the number of active rows whose target is not `ignore_index`:
    `terms[r] = (logsumexp(logits[r]) - logits[r, t_r]) / count` for those
    rows and 0 for ignored ones (their sum over the active rows, `row_sum`,
    is `cross_entropy`), and `dlogits` exactly as `cross_entropy_grad`.
    colossus-fuse forms it from a `cross_entropy` and a `cross_entropy_grad`
    of the same logits; its kernel writes `dlogits` over the logits buffer
    when nothing else reads the logits (the memory plan aliases them).
  }];
  let arguments = (ins F32Matrix:$logits, TokenVector:$targets,
                       ScalarF32:$dloss,
                       DefaultValuedAttr<I64Attr, "-100">:$ignore_index);
  let results = (outs F32Vector:$terms, F32Matrix:$dlogits);
  let assemblyFormat = [{
    $logits `,` $targets `,` $dloss attr-dict `:` type($logits) `,`
    type($targets) `,` type($dloss)
  }];
}

def Colossus_RowSumOp : Colossus_Op<"row_sum"> {
  let summary = "sum of a vector over the active rows";
  let description = [{
    `x: [T] f32`; the sum of `x[r]` over the active rows `r < nb * nt` as a
    `tensor<f32>` (the loss from `cross_entropy_rows`' terms).
  }];
  let arguments = (ins F32Vector:$x);
  let results = (outs ScalarF32:$result);
  let assemblyFormat = "$x attr-dict `:` type($x)";
}

def Colossus_LinearWeightGradOp : Colossus_Op<"linear_weight_grad"> {
  let summary = "d loss / d weight of linear: a reduction over the rows";
  let description = [{
    `x: [T, K]`, `dy: [T, N]`. With `transpose_w` the result is
    `dy^T @ x: [N, K]`, otherwise `x^T @ dy: [K, N]` (the layout of the
    weight). Sums over the active rows only.
  }];
  let arguments = (ins FloatMatrix:$x, FloatMatrix:$dy,
                       DefaultValuedAttr<BoolAttr, "true">:$transpose_w);
  let results = (outs FloatMatrix:$result);
  let assemblyFormat = "$x `,` $dy attr-dict `:` type($x) `,` type($dy)";
}

def Colossus_ColumnSumOp : Colossus_Op<"column_sum"> {
  let summary = "sum over the active rows";
  let description = "`result[c] = sum_r x[r, c]` (a bias gradient).";
  let arguments = (ins FloatMatrix:$x);
  let results = (outs FloatVector:$result);
  let assemblyFormat = "$x attr-dict `:` type($x)";
}

def Colossus_RmsNormGradOp : Colossus_Op<"rms_norm_grad",
    [AllTypesMatch<["x", "dy"]>]> {
  let summary = "vector-Jacobian product of rms_norm";
  let description = [{
    With `xhat = x * rstd`, `rstd = 1 / sqrt(mean(x^2) + eps)`:
    `dx = rstd * (dy * w - xhat * mean_c(dy * w * xhat))`,
    `dweight = sum_r dy * xhat`.
  }];
  let arguments = (ins FloatMatrix:$x, FloatVector:$weight, FloatMatrix:$dy,
                       F64Attr:$eps);
  let results = (outs FloatMatrix:$dx, FloatVector:$dweight);
  let assemblyFormat = [{
    $x `,` $weight `,` $dy `eps` `=` $eps attr-dict `:` type($x) `,`
    type($weight)
  }];
}

def Colossus_LayerNormGradOp : Colossus_Op<"layer_norm_grad",
    [AllTypesMatch<["x", "dy"]>]> {
  let summary = "vector-Jacobian product of layer_norm";
  let description = [{
    With `xhat = (x - mean) * rstd` and `g = dy * w`:
    `dx = rstd * (g - mean_c(g) - xhat * mean_c(g * xhat))`,
    `dweight = sum_r dy * xhat`, `dbias = sum_r dy`.
  }];
  let arguments = (ins FloatMatrix:$x, FloatVector:$weight, FloatMatrix:$dy,
                       F64Attr:$eps);
  let results = (outs FloatMatrix:$dx, FloatVector:$dweight,
                      FloatVector:$dbias);
  let assemblyFormat = [{
    $x `,` $weight `,` $dy `eps` `=` $eps attr-dict `:` type($x) `,`
    type($weight)
  }];
}

def Colossus_SiluGradOp : Colossus_BinaryOp<"silu_grad"> {
  let summary = "dy * d silu(x) / dx, lhs = x, rhs = dy";
}

def Colossus_GeluGradOp : Colossus_Op<"gelu_grad",
    [AllTypesMatch<["x", "dy"]>]> {
  let summary = "dy * d gelu(x) / dx";
  let arguments = (ins FloatMatrix:$x, FloatMatrix:$dy,
                       DefaultValuedAttr<Colossus_GeluApproxAttr,
                         "::colossus::GeluApprox::erf">:$approximate);
  let results = (outs FloatMatrix:$result);
  let assemblyFormat = "$x `,` $dy attr-dict `:` type($x)";
}

def Colossus_SwigluGradOp : Colossus_Op<"swiglu_grad",
    [AllTypesMatch<["gate", "up", "dy"]>]> {
  let summary = "vector-Jacobian product of swiglu";
  let description = [{
    `dgate = dy * up * silu'(gate)`, `dup = dy * silu(gate)`.
  }];
  let arguments = (ins FloatMatrix:$gate, FloatMatrix:$up, FloatMatrix:$dy);
  let results = (outs FloatMatrix:$dgate, FloatMatrix:$dup);
  let assemblyFormat = "$gate `,` $up `,` $dy attr-dict `:` type($gate)";
}

def Colossus_SoftmaxGradOp : Colossus_Op<"softmax_grad",
    [AllTypesMatch<["y", "dy"]>]> {
  let summary = "vector-Jacobian product of softmax, from its output";
  let description = "`dx = y * (dy - sum_c(dy * y))`.";
  let arguments = (ins FloatMatrix:$y, FloatMatrix:$dy);
  let results = (outs FloatMatrix:$result);
  let assemblyFormat = "$y `,` $dy attr-dict `:` type($y)";
}

def Colossus_EmbeddingGradOp : Colossus_Op<"embedding_grad"> {
  let summary = "d loss / d table of embedding: rows scattered and summed";
  let description = [{
    `result[v, :] = sum over active rows r with ids[r] == v of dy[r, :]`;
    the result is `[vocab_size, D]`. With `plus %addend` (f32
    `[vocab_size, D]`), `result[v, :] = addend[v, :] + (that sum)`: a tied
    embedding's other gradient (the lm head's dW) added by the scatter's
    kernel instead of an elementwise kernel of its own (docs/autodiff.md).
  }];
  let arguments = (ins TokenVector:$ids, FloatMatrix:$dy,
                       Optional<FloatMatrix>:$addend,
                       ConfinedAttr<I64Attr, [IntPositive]>:$vocab_size);
  let results = (outs FloatMatrix:$result);
  let assemblyFormat = [{
    $ids `,` $dy (`plus` $addend^)? attr-dict `:` type($ids) `,` type($dy)
    (`,` type($addend)^)?
  }];
}

def Colossus_CacheReadOp : Colossus_Op<"cache_read"> {
  let summary = "rows of a KV cache at the active tokens' positions";
  let description = [{
    `result[r, :] = cache[r / nt, positions[r], :]`: the vector-Jacobian
    product of cache_write with respect to the rows written.
  }];
  let arguments = (ins Float3D:$cache, TokenVector:$positions);
  let results = (outs FloatMatrix:$result);
  let assemblyFormat = [{
    $cache `[` $positions `]` attr-dict `:` type($cache) `,` type($positions)
  }];
}

def Colossus_PadColumnsOp : Colossus_Op<"pad_columns"> {
  let summary = "place a matrix at a column offset inside zeros";
  let description = [{
    `result[r, c] = x[r, c - offset]` for `offset <= c < offset + size(x)`,
    0 elsewhere; `total` columns. The vector-Jacobian product of slice.
  }];
  let arguments = (ins FloatMatrix:$x,
                       ConfinedAttr<I64Attr, [IntNonNegative]>:$offset,
                       ConfinedAttr<I64Attr, [IntPositive]>:$total);
  let results = (outs FloatMatrix:$result);
  let assemblyFormat = "$x `[` $offset `,` $total `]` attr-dict `:` type($x)";
}

def Colossus_AttentionGradOp : Colossus_Op<"attention_grad",
    [AllTypesMatch<["k", "v"]>, AllTypesMatch<["q", "dout", "out"]>]> {
  let summary = "vector-Jacobian product of attention (FlashAttention-2 form)";
  let description = [{
    Operands and attributes as `attention`, plus `dout: [T, H * head_dim]`
    (the adjoint of the output), `out` (the forward output) and `lse:
    [T, H] f32` (the forward's `save_lse` result). Results: `dq` like `q`;
    `dk`, `dv` like the caches (entries at the positions of the step's
    tokens; keys no query attends get 0).

    With `p_ij = exp(scale q_i.k_j - lse_i)`, `dP_ij = dout_i.v_j` and
    `D_i = dout_i.out_i`: `dq_i = scale sum_j p_ij (dP_ij - D_i) k_j`,
    `dv_j = sum_i p_ij dout_i`, `dk_j = scale sum_i p_ij (dP_ij - D_i) q_i`
    (sums over the query heads of the key's kv head). Nothing is recomputed
    from q and k beyond the scores.
  }];
  let arguments = (ins FloatMatrix:$q, Float3D:$k, Float3D:$v,
                       TokenVector:$positions, FloatMatrix:$dout,
                       FloatMatrix:$out, F32Matrix:$lse,
                       ConfinedAttr<I64Attr, [IntPositive]>:$num_heads,
                       ConfinedAttr<I64Attr, [IntPositive]>:$num_kv_heads,
                       ConfinedAttr<I64Attr, [IntPositive]>:$head_dim,
                       F64Attr:$scale,
                       DefaultValuedAttr<BoolAttr, "true">:$causal,
                       DefaultValuedAttr<I64Attr, "0">:$sliding_window);
  let results = (outs FloatMatrix:$dq, Float3D:$dk, Float3D:$dv);
  let assemblyFormat = [{
    $q `,` $k `,` $v `,` $positions `,` $dout `,` $out `,` $lse attr-dict `:`
    type($q) `,` type($k) `,` type($positions) `,` type($lse)
  }];
}

def Colossus_AdamwOp : Colossus_Op<"adamw",
    [AllTypesMatch<["param", "grad", "exp_avg", "exp_avg_sq"]>]> {
  let summary = "one AdamW update of a parameter (PyTorch semantics)";
  let description = [{
    `hyper: tensor<4xf32>` holds `[lr, 1 - beta1^t, 1 - beta2^t,
    grad_scale]` (grad_scale: the factor applied to the stored gradient,
    `clip_hyper`'s: the micro-batch mean times the global-norm clipping
    factor).
    With `g = grad * grad_scale`: `m = b1 m + (1 - b1) g`,
    `v = b2 v + (1 - b2) g^2`, `p = p (1 - lr wd) - lr (m / (1 - b1^t)) /
    (sqrt(v / (1 - b2^t)) + eps)`. Results: new `param`, `exp_avg`,
    `exp_avg_sq`.
  }];
  let arguments = (ins AnyRankedTensor:$param, AnyRankedTensor:$grad,
                       AnyRankedTensor:$exp_avg, AnyRankedTensor:$exp_avg_sq,
                       1DTensorOf<[F32]>:$hyper,
                       F64Attr:$beta1, F64Attr:$beta2, F64Attr:$eps,
                       F64Attr:$weight_decay);
  let results = (outs AnyRankedTensor:$new_param, AnyRankedTensor:$new_exp_avg,
                      AnyRankedTensor:$new_exp_avg_sq);
  let assemblyFormat = [{
    $param `,` $grad `,` $exp_avg `,` $exp_avg_sq `,` $hyper attr-dict `:`
    type($param) `,` type($hyper)
  }];
}

def Colossus_GlobalNormOp : Colossus_Op<"global_norm"> {
  let summary = "the L2 norm of all the given tensors together, scaled";
  let description = [{
    `hyper: tensor<5xf32>` is the update step's input `[lr, 1 - beta1^t,
    1 - beta2^t, max_norm, grad_scale]`. Result (`tensor<1xf32>`):
    `grad_scale * sqrt(sum over every tensor and element of x^2)`, the norm
    of the gradient scaled by `grad_scale` (`1/M` when the tensors hold the
    sum of `M` micro-batch gradients: the norm of their mean).
  }];
  let arguments = (ins 1DTensorOf<[F32]>:$hyper,
                       Variadic<AnyRankedTensor>:$tensors);
  let results = (outs 1DTensorOf<[F32]>:$result);
  let assemblyFormat = [{
    $hyper `,` $tensors attr-dict `:` type($hyper) `,` type($tensors)
  }];
}

def Colossus_ClipHyperOp : Colossus_Op<"clip_hyper"> {
  let summary = "AdamW step inputs with the gradient scale and clipping factor";
  let description = [{
    `hyper_in = [lr, 1 - beta1^t, 1 - beta2^t, max_norm, grad_scale]`,
    `norm: [1]` (the norm of the scaled gradient, `global_norm`'s result).
    Result `[lr, 1 - beta1^t, 1 - beta2^t, grad_scale * clip]` with
    `clip = max_norm / (norm + 1e-6)` when `0 < max_norm < norm`, else 1
    (the input of `adamw`: the factor applied to the stored gradients).
  }];
  let arguments = (ins 1DTensorOf<[F32]>:$hyper_in, 1DTensorOf<[F32]>:$norm);
  let results = (outs 1DTensorOf<[F32]>:$result);
  let assemblyFormat = "$hyper_in `,` $norm attr-dict `:` type($hyper_in) `,` type($norm)";
}

//===----------------------------------------------------------------------===//
// Fusion
//===----------------------------------------------------------------------===//

def Colossus_FusionOp : Op<Colossus_Dialect, "fusion",
    [IsolatedFromAbove, SingleBlock,
     DeclareOpInterfaceMethods<OpAsmOpInterface, ["getAsmBlockArgumentNames"]>]> {
  let summary = "a group of ops compiled into one kernel";
  let description = [{
    The region's block arguments stand for the operands; `colossus.yield`
    returns the values the rest of the program uses. `kind` names the kernel
    family (`gemm`, `norm`, `attention`, `rope`, `elementwise`, ...), and
    `kernel` (set by code generation) the symbol of the generated kernel.

    ```mlir
    %0 = colossus.fusion "gemm" (%x, %w, %res) : (...) -> tensor<64x32xf32> {
    ^bb0(%a: tensor<64x16xf32>, %b: tensor<32x16xf32>, %c: tensor<64x32xf32>):
      %1 = colossus.linear %a, %b : tensor<64x16xf32>, tensor<32x16xf32>
      %2 = colossus.add %1, %c : tensor<64x32xf32>
      colossus.yield %2 : tensor<64x32xf32>
    }
    ```
  }];
  let arguments = (ins StrAttr:$kind, Variadic<AnyRankedTensor>:$inputs,
                       OptionalAttr<FlatSymbolRefAttr>:$kernel);
  let results = (outs Variadic<AnyRankedTensor>:$results);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = [{
    $kind `(` $inputs `)` attr-dict `:` functional-type($inputs, $results) $body
  }];
  let hasVerifier = 1;
}

def Colossus_YieldOp : Op<Colossus_Dialect, "yield",
    [Pure, Terminator, HasParent<"FusionOp">, ReturnLike]> {
  let summary = "results of a fusion region";
  let arguments = (ins Variadic<AnyRankedTensor>:$values);
  let assemblyFormat = "($values^ `:` type($values))? attr-dict";
}

#endif // COLOSSUS_OPS_TD
