// RUN: %colossus-opt %s | %colossus-opt | FileCheck %s
// RUN: %colossus-opt %s --mlir-print-op-generic | %colossus-opt | FileCheck %s
// RUN: %colossus-opt %s --mlir-print-op-generic | FileCheck %s --check-prefix=GENERIC

// Round trip of every op of the colossus dialect, in the custom form and
// through the generic form. Result types are inferred by the parser, so the
// checks below also pin the inferred types (printed by the consumers).

// CHECK-LABEL: func.func @positions
// CHECK: %[[P:.+]] = colossus.positions 8
// CHECK-NEXT: return %[[P]] : tensor<8xi32>
// GENERIC-LABEL: sym_name = "positions"
// GENERIC: "colossus.positions"() <{rows = 8 : i64}> : () -> tensor<8xi32>
func.func @positions() -> tensor<8xi32> {
  %0 = colossus.positions 8
  return %0 : tensor<8xi32>
}

// CHECK-LABEL: func.func @embedding
// CHECK-SAME: (%[[TABLE:.+]]: tensor<256x64xf32>, %[[IDS:.+]]: tensor<8xi32>)
// CHECK: %[[E:.+]] = colossus.embedding %[[TABLE]][%[[IDS]]] : tensor<256x64xf32>, tensor<8xi32>
// CHECK-NEXT: return %[[E]] : tensor<8x64xf32>
func.func @embedding(%table: tensor<256x64xf32>, %ids: tensor<8xi32>) -> tensor<8x64xf32> {
  %0 = colossus.embedding %table[%ids] : tensor<256x64xf32>, tensor<8xi32>
  return %0 : tensor<8x64xf32>
}

// CHECK-LABEL: func.func @rms_norm
// CHECK-SAME: (%[[X:.+]]: tensor<8x64xf32>, %[[W:.+]]: tensor<64xf32>)
// CHECK: colossus.rms_norm %[[X]], %[[W]] eps = 1.000000e-05 : tensor<8x64xf32>, tensor<64xf32>
func.func @rms_norm(%x: tensor<8x64xf32>, %w: tensor<64xf32>) -> tensor<8x64xf32> {
  %0 = colossus.rms_norm %x, %w eps = 1.0e-05 : tensor<8x64xf32>, tensor<64xf32>
  return %0 : tensor<8x64xf32>
}

// A dynamic row count is accepted and carried to the result.
// CHECK-LABEL: func.func @rms_norm_dynamic
// CHECK: %[[N:.+]] = colossus.rms_norm {{.*}} eps = 0.000000e+00 : tensor<?x64xbf16>, tensor<64xbf16>
// CHECK-NEXT: return %[[N]] : tensor<?x64xbf16>
func.func @rms_norm_dynamic(%x: tensor<?x64xbf16>, %w: tensor<64xbf16>) -> tensor<?x64xbf16> {
  %0 = colossus.rms_norm %x, %w eps = 0.0 : tensor<?x64xbf16>, tensor<64xbf16>
  return %0 : tensor<?x64xbf16>
}

// CHECK-LABEL: func.func @layer_norm
// CHECK-SAME: (%[[X:.+]]: tensor<8x64xf32>, %[[W:.+]]: tensor<64xf32>, %[[B:.+]]: tensor<64xf32>)
// CHECK: colossus.layer_norm %[[X]], %[[W]], %[[B]] eps = 1.000000e-05 : tensor<8x64xf32>, tensor<64xf32>, tensor<64xf32>
func.func @layer_norm(%x: tensor<8x64xf32>, %w: tensor<64xf32>, %b: tensor<64xf32>) -> tensor<8x64xf32> {
  %0 = colossus.layer_norm %x, %w, %b eps = 1.0e-05 : tensor<8x64xf32>, tensor<64xf32>, tensor<64xf32>
  return %0 : tensor<8x64xf32>
}

// transpose_w defaults to true (weight [N, K]) and is not printed.
// CHECK-LABEL: func.func @linear
// CHECK-SAME: (%[[X:.+]]: tensor<8x64xf32>, %[[W:.+]]: tensor<32x64xf32>)
// CHECK: %[[Y:.+]] = colossus.linear %[[X]], %[[W]] : tensor<8x64xf32>, tensor<32x64xf32>
// CHECK-NEXT: return %[[Y]] : tensor<8x32xf32>
// GENERIC-LABEL: sym_name = "linear"
// GENERIC: "colossus.linear"(%{{.*}}, %{{.*}}) <{transpose_w = true}> : (tensor<8x64xf32>, tensor<32x64xf32>) -> tensor<8x32xf32>
func.func @linear(%x: tensor<8x64xf32>, %w: tensor<32x64xf32>) -> tensor<8x32xf32> {
  %0 = colossus.linear %x, %w : tensor<8x64xf32>, tensor<32x64xf32>
  return %0 : tensor<8x32xf32>
}

// CHECK-LABEL: func.func @linear_bias
// CHECK-SAME: (%[[X:.+]]: tensor<8x64xf32>, %[[W:.+]]: tensor<32x64xf32>, %[[B:.+]]: tensor<32xf32>)
// CHECK: colossus.linear %[[X]], %[[W]] bias %[[B]] : tensor<8x64xf32>, tensor<32x64xf32>, tensor<32xf32>
func.func @linear_bias(%x: tensor<8x64xf32>, %w: tensor<32x64xf32>, %b: tensor<32xf32>) -> tensor<8x32xf32> {
  %0 = colossus.linear %x, %w bias %b : tensor<8x64xf32>, tensor<32x64xf32>, tensor<32xf32>
  return %0 : tensor<8x32xf32>
}

// transpose_w = false: weight [K, N] (HF Conv1D, GPT-2).
// CHECK-LABEL: func.func @linear_no_transpose
// CHECK-SAME: (%[[X:.+]]: tensor<8x64xf32>, %[[W:.+]]: tensor<64x192xf32>, %[[B:.+]]: tensor<192xf32>)
// CHECK: %[[Y:.+]] = colossus.linear %[[X]], %[[W]] bias %[[B]] {transpose_w = false} : tensor<8x64xf32>, tensor<64x192xf32>, tensor<192xf32>
// CHECK-NEXT: %[[Z:.+]] = colossus.linear %[[X]], %[[W]] {transpose_w = false} : tensor<8x64xf32>, tensor<64x192xf32>
// CHECK-NEXT: return %[[Y]], %[[Z]] : tensor<8x192xf32>, tensor<8x192xf32>
func.func @linear_no_transpose(%x: tensor<8x64xf32>, %w: tensor<64x192xf32>, %b: tensor<192xf32>) -> (tensor<8x192xf32>, tensor<8x192xf32>) {
  %0 = colossus.linear %x, %w bias %b {transpose_w = false} : tensor<8x64xf32>, tensor<64x192xf32>, tensor<192xf32>
  %1 = colossus.linear %x, %w {transpose_w = false} : tensor<8x64xf32>, tensor<64x192xf32>
  return %0, %1 : tensor<8x192xf32>, tensor<8x192xf32>
}

// Without scaling, the scaling attributes keep their defaults and are not
// printed.
// CHECK-LABEL: func.func @rope_rotate_half
// CHECK-SAME: (%[[X:.+]]: tensor<8x64xf32>, %[[POS:.+]]: tensor<8xi32>)
// CHECK: colossus.rope %[[X]], %[[POS]] {head_dim = 16 : i64, layout = #colossus<rope_layout rotate_half>, theta = 1.000000e+04 : f64} : tensor<8x64xf32>, tensor<8xi32>
func.func @rope_rotate_half(%x: tensor<8x64xf32>, %pos: tensor<8xi32>) -> tensor<8x64xf32> {
  %0 = colossus.rope %x, %pos {head_dim = 16 : i64, layout = #colossus<rope_layout rotate_half>, theta = 10000.0 : f64} : tensor<8x64xf32>, tensor<8xi32>
  return %0 : tensor<8x64xf32>
}

// CHECK-LABEL: func.func @rope_interleaved
// CHECK: colossus.rope
// CHECK-SAME: layout = #colossus<rope_layout interleaved>
// CHECK-SAME: theta = 5.000000e+05 : f64
func.func @rope_interleaved(%x: tensor<8x64xf32>, %pos: tensor<8xi32>) -> tensor<8x64xf32> {
  %0 = colossus.rope %x, %pos {head_dim = 16 : i64, layout = #colossus<rope_layout interleaved>, theta = 500000.0 : f64} : tensor<8x64xf32>, tensor<8xi32>
  return %0 : tensor<8x64xf32>
}

// Llama 3.1 scaling with the published parameters: low_freq_factor = 1,
// high_freq_factor = 4 and original_max_position = 8192 are the defaults and
// are not printed.
// CHECK-LABEL: func.func @rope_llama3
// CHECK: colossus.rope %{{.+}}, %{{.+}} {factor = 8.000000e+00 : f64, head_dim = 16 : i64, layout = #colossus<rope_layout rotate_half>, scaling = #colossus<rope_scaling llama3>, theta = 5.000000e+05 : f64} : tensor<8x64xf32>, tensor<8xi32>
func.func @rope_llama3(%x: tensor<8x64xf32>, %pos: tensor<8xi32>) -> tensor<8x64xf32> {
  %0 = colossus.rope %x, %pos {head_dim = 16 : i64, layout = #colossus<rope_layout rotate_half>, theta = 500000.0 : f64, scaling = #colossus<rope_scaling llama3>, factor = 8.0 : f64, low_freq_factor = 1.0 : f64, high_freq_factor = 4.0 : f64, original_max_position = 8192 : i64} : tensor<8x64xf32>, tensor<8xi32>
  return %0 : tensor<8x64xf32>
}

// Other llama3 parameters survive the round trip.
// CHECK-LABEL: func.func @rope_llama3_custom
// CHECK: colossus.rope
// CHECK-SAME: factor = 3.200000e+01 : f64
// CHECK-SAME: high_freq_factor = 8.000000e+00 : f64
// CHECK-SAME: low_freq_factor = 2.000000e+00 : f64
// CHECK-SAME: original_max_position = 128 : i64
// CHECK-SAME: scaling = #colossus<rope_scaling llama3>
func.func @rope_llama3_custom(%x: tensor<8x64xf32>, %pos: tensor<8xi32>) -> tensor<8x64xf32> {
  %0 = colossus.rope %x, %pos {head_dim = 16 : i64, layout = #colossus<rope_layout rotate_half>, theta = 500000.0 : f64, scaling = #colossus<rope_scaling llama3>, factor = 32.0 : f64, low_freq_factor = 2.0 : f64, high_freq_factor = 8.0 : f64, original_max_position = 128 : i64} : tensor<8x64xf32>, tensor<8xi32>
  return %0 : tensor<8x64xf32>
}

// CHECK-LABEL: func.func @rope_linear
// CHECK: colossus.rope
// CHECK-SAME: factor = 2.000000e+00 : f64
// CHECK-SAME: scaling = #colossus<rope_scaling linear>
func.func @rope_linear(%x: tensor<8x64xf32>, %pos: tensor<8xi32>) -> tensor<8x64xf32> {
  %0 = colossus.rope %x, %pos {head_dim = 16 : i64, layout = #colossus<rope_layout rotate_half>, theta = 10000.0 : f64, scaling = #colossus<rope_scaling linear>, factor = 2.0 : f64} : tensor<8x64xf32>, tensor<8xi32>
  return %0 : tensor<8x64xf32>
}

// Without scaling the scaling parameters are not used, not checked, and kept.
// CHECK-LABEL: func.func @rope_no_scaling_keeps_factors
// CHECK: colossus.rope %{{.+}}, %{{.+}} {factor = 0.000000e+00 : f64, head_dim = 16 : i64, high_freq_factor = 1.000000e+00 : f64, layout = #colossus<rope_layout rotate_half>, low_freq_factor = 4.000000e+00 : f64, theta = 1.000000e+04 : f64}
func.func @rope_no_scaling_keeps_factors(%x: tensor<8x64xf32>, %pos: tensor<8xi32>) -> tensor<8x64xf32> {
  %0 = colossus.rope %x, %pos {head_dim = 16 : i64, layout = #colossus<rope_layout rotate_half>, theta = 10000.0 : f64, factor = 0.0 : f64, low_freq_factor = 4.0 : f64, high_freq_factor = 1.0 : f64} : tensor<8x64xf32>, tensor<8xi32>
  return %0 : tensor<8x64xf32>
}

// CHECK-LABEL: func.func @cache_write
// CHECK-SAME: (%[[CACHE:.+]]: tensor<2x40x32xf32>, %[[X:.+]]: tensor<80x32xf32>, %[[POS:.+]]: tensor<80xi32>)
// CHECK: %[[C:.+]] = colossus.cache_write %[[CACHE]][%[[POS]]], %[[X]] : tensor<2x40x32xf32>, tensor<80x32xf32>, tensor<80xi32>
// CHECK-NEXT: return %[[C]] : tensor<2x40x32xf32>
func.func @cache_write(%cache: tensor<2x40x32xf32>, %x: tensor<80x32xf32>, %pos: tensor<80xi32>) -> tensor<2x40x32xf32> {
  %0 = colossus.cache_write %cache[%pos], %x : tensor<2x40x32xf32>, tensor<80x32xf32>, tensor<80xi32>
  return %0 : tensor<2x40x32xf32>
}

// GQA: 4 query heads share 2 kv heads. causal defaults to true and
// sliding_window to 0; neither is printed.
// CHECK-LABEL: func.func @attention_gqa
// CHECK-SAME: (%[[Q:.+]]: tensor<80x64xf32>, %[[K:.+]]: tensor<2x40x32xf32>, %[[V:.+]]: tensor<2x40x32xf32>, %[[POS:.+]]: tensor<80xi32>)
// CHECK: %[[A:.+]] = colossus.attention %[[Q]], %[[K]], %[[V]], %[[POS]] {head_dim = 16 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, scale = 2.500000e-01 : f64} : tensor<80x64xf32>, tensor<2x40x32xf32>, tensor<2x40x32xf32>, tensor<80xi32>
// CHECK-NEXT: return %[[A]] : tensor<80x64xf32>
func.func @attention_gqa(%q: tensor<80x64xf32>, %k: tensor<2x40x32xf32>, %v: tensor<2x40x32xf32>, %pos: tensor<80xi32>) -> tensor<80x64xf32> {
  %0 = colossus.attention %q, %k, %v, %pos {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f64} : tensor<80x64xf32>, tensor<2x40x32xf32>, tensor<2x40x32xf32>, tensor<80xi32>
  return %0 : tensor<80x64xf32>
}

// CHECK-LABEL: func.func @attention_not_causal
// CHECK: colossus.attention
// CHECK-SAME: causal = false
func.func @attention_not_causal(%q: tensor<80x64xf32>, %k: tensor<2x40x64xf32>, %v: tensor<2x40x64xf32>, %pos: tensor<80xi32>) -> tensor<80x64xf32> {
  %0 = colossus.attention %q, %k, %v, %pos {num_heads = 4 : i64, num_kv_heads = 4 : i64, head_dim = 16 : i64, scale = 0.25 : f64, causal = false} : tensor<80x64xf32>, tensor<2x40x64xf32>, tensor<2x40x64xf32>, tensor<80xi32>
  return %0 : tensor<80x64xf32>
}

// MQA (one kv head) with a sliding window.
// CHECK-LABEL: func.func @attention_sliding_window
// CHECK: colossus.attention
// CHECK-SAME: num_kv_heads = 1 : i64
// CHECK-SAME: sliding_window = 16 : i64
func.func @attention_sliding_window(%q: tensor<80x64xf32>, %k: tensor<2x40x16xf32>, %v: tensor<2x40x16xf32>, %pos: tensor<80xi32>) -> tensor<80x64xf32> {
  %0 = colossus.attention %q, %k, %v, %pos {num_heads = 4 : i64, num_kv_heads = 1 : i64, head_dim = 16 : i64, scale = 0.25 : f64, sliding_window = 16 : i64} : tensor<80x64xf32>, tensor<2x40x16xf32>, tensor<2x40x16xf32>, tensor<80xi32>
  return %0 : tensor<80x64xf32>
}

// CHECK-LABEL: func.func @slice
// CHECK-SAME: (%[[X:.+]]: tensor<8x192xf32>)
// CHECK: %[[Q:.+]] = colossus.slice %[[X]][0, 64] : tensor<8x192xf32>
// CHECK-NEXT: %[[V:.+]] = colossus.slice %[[X]][128, 64] : tensor<8x192xf32>
// CHECK-NEXT: return %[[Q]], %[[V]] : tensor<8x64xf32>, tensor<8x64xf32>
func.func @slice(%x: tensor<8x192xf32>) -> (tensor<8x64xf32>, tensor<8x64xf32>) {
  %0 = colossus.slice %x[0, 64] : tensor<8x192xf32>
  %1 = colossus.slice %x[128, 64] : tensor<8x192xf32>
  return %0, %1 : tensor<8x64xf32>, tensor<8x64xf32>
}

// CHECK-LABEL: func.func @softmax
// CHECK: colossus.softmax %{{.+}} : tensor<8x40xf32>
func.func @softmax(%x: tensor<8x40xf32>) -> tensor<8x40xf32> {
  %0 = colossus.softmax %x : tensor<8x40xf32>
  return %0 : tensor<8x40xf32>
}

// CHECK-LABEL: func.func @silu
// CHECK: colossus.silu %{{.+}} : tensor<8x176xf32>
func.func @silu(%x: tensor<8x176xf32>) -> tensor<8x176xf32> {
  %0 = colossus.silu %x : tensor<8x176xf32>
  return %0 : tensor<8x176xf32>
}

// erf is the default approximation and is not printed.
// CHECK-LABEL: func.func @gelu
// CHECK-SAME: (%[[X:.+]]: tensor<8x256xf16>)
// CHECK: colossus.gelu %[[X]] : tensor<8x256xf16>
// CHECK-NEXT: colossus.gelu %[[X]] : tensor<8x256xf16>
// CHECK-NEXT: colossus.gelu %[[X]] {approximate = #colossus<gelu_approx tanh>} : tensor<8x256xf16>
func.func @gelu(%x: tensor<8x256xf16>) -> (tensor<8x256xf16>, tensor<8x256xf16>, tensor<8x256xf16>) {
  %0 = colossus.gelu %x : tensor<8x256xf16>
  %1 = colossus.gelu %x {approximate = #colossus<gelu_approx erf>} : tensor<8x256xf16>
  %2 = colossus.gelu %x {approximate = #colossus<gelu_approx tanh>} : tensor<8x256xf16>
  return %0, %1, %2 : tensor<8x256xf16>, tensor<8x256xf16>, tensor<8x256xf16>
}

// CHECK-LABEL: func.func @swiglu
// CHECK-SAME: (%[[G:.+]]: tensor<8x176xf32>, %[[U:.+]]: tensor<8x176xf32>)
// CHECK: colossus.swiglu %[[G]], %[[U]] : tensor<8x176xf32>
func.func @swiglu(%gate: tensor<8x176xf32>, %up: tensor<8x176xf32>) -> tensor<8x176xf32> {
  %0 = colossus.swiglu %gate, %up : tensor<8x176xf32>
  return %0 : tensor<8x176xf32>
}

// CHECK-LABEL: func.func @add_mul
// CHECK-SAME: (%[[A:.+]]: tensor<8x64xf32>, %[[B:.+]]: tensor<8x64xf32>)
// CHECK: %[[S:.+]] = colossus.add %[[A]], %[[B]] : tensor<8x64xf32>
// CHECK-NEXT: colossus.mul %[[S]], %[[B]] : tensor<8x64xf32>
func.func @add_mul(%a: tensor<8x64xf32>, %b: tensor<8x64xf32>) -> tensor<8x64xf32> {
  %0 = colossus.add %a, %b : tensor<8x64xf32>
  %1 = colossus.mul %0, %b : tensor<8x64xf32>
  return %1 : tensor<8x64xf32>
}

// The region's arguments are printed as %in, %in_0, ...
// CHECK-LABEL: func.func @fusion
// CHECK-SAME: (%[[X:.+]]: tensor<64x16xf32>, %[[W:.+]]: tensor<32x16xf32>, %[[R:.+]]: tensor<64x32xf32>)
// CHECK: %[[F:.+]] = colossus.fusion "gemm"(%[[X]], %[[W]], %[[R]]) : (tensor<64x16xf32>, tensor<32x16xf32>, tensor<64x32xf32>) -> tensor<64x32xf32> {
// CHECK-NEXT: ^bb0(%[[A:in]]: tensor<64x16xf32>, %[[B:in_[0-9]+]]: tensor<32x16xf32>, %[[C:in_[0-9]+]]: tensor<64x32xf32>):
// CHECK-NEXT:   %[[L:.+]] = colossus.linear %[[A]], %[[B]] : tensor<64x16xf32>, tensor<32x16xf32>
// CHECK-NEXT:   %[[S:.+]] = colossus.add %[[L]], %[[C]] : tensor<64x32xf32>
// CHECK-NEXT:   colossus.yield %[[S]] : tensor<64x32xf32>
// CHECK-NEXT: }
// CHECK-NEXT: return %[[F]] : tensor<64x32xf32>
func.func @fusion(%x: tensor<64x16xf32>, %w: tensor<32x16xf32>, %r: tensor<64x32xf32>) -> tensor<64x32xf32> {
  %0 = colossus.fusion "gemm" (%x, %w, %r) : (tensor<64x16xf32>, tensor<32x16xf32>, tensor<64x32xf32>) -> tensor<64x32xf32> {
  ^bb0(%a: tensor<64x16xf32>, %b: tensor<32x16xf32>, %c: tensor<64x32xf32>):
    %1 = colossus.linear %a, %b : tensor<64x16xf32>, tensor<32x16xf32>
    %2 = colossus.add %1, %c : tensor<64x32xf32>
    colossus.yield %2 : tensor<64x32xf32>
  }
  return %0 : tensor<64x32xf32>
}

// Several results, and the kernel symbol set by code generation.
// CHECK-LABEL: func.func @fusion_multi_result
// CHECK: %[[F:.+]]:2 = colossus.fusion "norm"(%{{.+}}, %{{.+}}) {kernel = @norm_0} : (tensor<8x64xf32>, tensor<64xf32>) -> (tensor<8x64xf32>, tensor<8x64xf32>) {
// CHECK: colossus.yield %{{.+}}, %{{.+}} : tensor<8x64xf32>, tensor<8x64xf32>
// CHECK: return %[[F]]#0, %[[F]]#1
func.func @fusion_multi_result(%x: tensor<8x64xf32>, %w: tensor<64xf32>) -> (tensor<8x64xf32>, tensor<8x64xf32>) {
  %0:2 = colossus.fusion "norm" (%x, %w) {kernel = @norm_0} : (tensor<8x64xf32>, tensor<64xf32>) -> (tensor<8x64xf32>, tensor<8x64xf32>) {
  ^bb0(%a: tensor<8x64xf32>, %b: tensor<64xf32>):
    %1 = colossus.rms_norm %a, %b eps = 1.0e-05 : tensor<8x64xf32>, tensor<64xf32>
    colossus.yield %1, %a : tensor<8x64xf32>, tensor<8x64xf32>
  }
  return %0#0, %0#1 : tensor<8x64xf32>, tensor<8x64xf32>
}

// CHECK-LABEL: func.func @convert
// CHECK: %[[C:.+]] = colossus.convert %{{.+}} to f32 : tensor<8x256xbf16>
// CHECK: colossus.convert %[[C]] to bf16 : tensor<8x256xf32>
// GENERIC: "colossus.convert"(%{{.*}}) <{element_type = f32}> : (tensor<8x256xbf16>) -> tensor<8x256xf32>
func.func @convert(%x: tensor<8x256xbf16>) -> tensor<8x256xbf16> {
  %0 = colossus.convert %x to f32 : tensor<8x256xbf16>
  %1 = colossus.convert %0 to bf16 : tensor<8x256xf32>
  return %1 : tensor<8x256xbf16>
}
