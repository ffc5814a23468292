// RUN: %colossus-opt %s -split-input-file -verify-diagnostics

// One case per verifier error of the colossus dialect
// (dialects/lib/Colossus/IR/ColossusOps.cpp), plus the ODS constraints that
// stand in front of them.

//===----------------------------------------------------------------------===//
// positions
//===----------------------------------------------------------------------===//

func.func @positions_zero_rows() {
  // expected-error @+1 {{attribute 'rows' failed to satisfy constraint: 64-bit signless integer attribute whose value is positive}}
  %0 = colossus.positions 0
  return
}

// -----

//===----------------------------------------------------------------------===//
// embedding
//===----------------------------------------------------------------------===//

// Result types are inferred while parsing: a table of the wrong rank is
// reported there, not read out of bounds.
func.func @embedding_table_rank(%table: tensor<64xf32>, %ids: tensor<8xi32>) {
  // expected-error @+1 {{'colossus.embedding' op table must be a 2-D tensor, got 'tensor<64xf32>'}}
  %0 = colossus.embedding %table[%ids] : tensor<64xf32>, tensor<8xi32>
  return
}

// -----

func.func @embedding_ids_rank(%table: tensor<256x64xf32>, %ids: tensor<i32>) {
  // expected-error @+1 {{'colossus.embedding' op ids must be a 1-D tensor, got 'tensor<i32>'}}
  %0 = colossus.embedding %table[%ids] : tensor<256x64xf32>, tensor<i32>
  return
}

// -----

func.func @embedding_ids_type(%table: tensor<256x64xf32>, %ids: tensor<8xi64>) {
  // expected-error @+1 {{operand #1 must be 1D tensor of 32-bit signless integer values}}
  %0 = colossus.embedding %table[%ids] : tensor<256x64xf32>, tensor<8xi64>
  return
}

// -----

// The generic form states the result type; it must be the inferred one.
func.func @embedding_result_type(%table: tensor<256x64xf32>, %ids: tensor<8xi32>) {
  // expected-error @+2 {{'colossus.embedding' op inferred type(s) 'tensor<8x64xf32>' are incompatible with return type(s) of operation 'tensor<8x32xf32>'}}
  // expected-error @+1 {{'colossus.embedding' op failed to infer returned types}}
  %0 = "colossus.embedding"(%table, %ids) : (tensor<256x64xf32>, tensor<8xi32>) -> tensor<8x32xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// rms_norm, layer_norm
//===----------------------------------------------------------------------===//

func.func @rms_norm_eps_nan(%x: tensor<8x64xf32>, %w: tensor<64xf32>) {
  // expected-error @+1 {{'colossus.rms_norm' op eps must be non-negative}}
  %0 = colossus.rms_norm %x, %w eps = 0x7FF8000000000000 : tensor<8x64xf32>, tensor<64xf32>
  return
}

// -----

func.func @rms_norm_weight_size(%x: tensor<8x64xf32>, %w: tensor<32xf32>) {
  // expected-error @+1 {{'colossus.rms_norm' op weight has 32 elements but the input rows have 64}}
  %0 = colossus.rms_norm %x, %w eps = 1.0e-05 : tensor<8x64xf32>, tensor<32xf32>
  return
}

// -----

func.func @rms_norm_weight_type(%x: tensor<8x64xf32>, %w: tensor<64xbf16>) {
  // expected-error @+1 {{'colossus.rms_norm' op weight must have the element type of the input}}
  %0 = colossus.rms_norm %x, %w eps = 1.0e-05 : tensor<8x64xf32>, tensor<64xbf16>
  return
}

// -----

func.func @rms_norm_negative_eps(%x: tensor<8x64xf32>, %w: tensor<64xf32>) {
  // expected-error @+1 {{'colossus.rms_norm' op eps must be non-negative}}
  %0 = colossus.rms_norm %x, %w eps = -1.0e-05 : tensor<8x64xf32>, tensor<64xf32>
  return
}

// -----

func.func @layer_norm_weight_size(%x: tensor<8x64xf32>, %w: tensor<63xf32>, %b: tensor<64xf32>) {
  // expected-error @+1 {{'colossus.layer_norm' op weight has 63 elements but the input rows have 64}}
  %0 = colossus.layer_norm %x, %w, %b eps = 1.0e-05 : tensor<8x64xf32>, tensor<63xf32>, tensor<64xf32>
  return
}

// -----

func.func @layer_norm_bias_size(%x: tensor<8x64xf32>, %w: tensor<64xf32>, %b: tensor<128xf32>) {
  // expected-error @+1 {{'colossus.layer_norm' op bias has 128 elements but the input rows have 64}}
  %0 = colossus.layer_norm %x, %w, %b eps = 1.0e-05 : tensor<8x64xf32>, tensor<64xf32>, tensor<128xf32>
  return
}

// -----

func.func @layer_norm_bias_type(%x: tensor<8x64xf32>, %w: tensor<64xf32>, %b: tensor<64xf16>) {
  // expected-error @+1 {{'colossus.layer_norm' op bias must have the element type of the input}}
  %0 = colossus.layer_norm %x, %w, %b eps = 1.0e-05 : tensor<8x64xf32>, tensor<64xf32>, tensor<64xf16>
  return
}

// -----

func.func @layer_norm_negative_eps(%x: tensor<8x64xf32>, %w: tensor<64xf32>, %b: tensor<64xf32>) {
  // expected-error @+1 {{'colossus.layer_norm' op eps must be non-negative}}
  %0 = colossus.layer_norm %x, %w, %b eps = -1.0 : tensor<8x64xf32>, tensor<64xf32>, tensor<64xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// linear
//===----------------------------------------------------------------------===//

func.func @linear_contraction(%x: tensor<8x64xf32>, %w: tensor<32x48xf32>) {
  // expected-error @+1 {{'colossus.linear' op contraction size mismatch: x has 64 columns, weight [N, K] has K = 48}}
  %0 = colossus.linear %x, %w : tensor<8x64xf32>, tensor<32x48xf32>
  return
}

// -----

// With transpose_w = false the weight is [K, N]: a weight that would be
// right transposed is wrong here.
func.func @linear_contraction_no_transpose(%x: tensor<8x64xf32>, %w: tensor<192x64xf32>) {
  // expected-error @+1 {{'colossus.linear' op contraction size mismatch: x has 64 columns, weight [K, N] has K = 192}}
  %0 = colossus.linear %x, %w {transpose_w = false} : tensor<8x64xf32>, tensor<192x64xf32>
  return
}

// -----

func.func @linear_element_type(%x: tensor<8x64xbf16>, %w: tensor<32x64xf32>) {
  // expected-error @+1 {{'colossus.linear' op x and weight must have the same element type (or f32 x with a bf16 weight)}}
  %0 = colossus.linear %x, %w : tensor<8x64xbf16>, tensor<32x64xf32>
  return
}

// -----

func.func @linear_bias_size(%x: tensor<8x64xf32>, %w: tensor<32x64xf32>, %b: tensor<64xf32>) {
  // expected-error @+1 {{'colossus.linear' op bias has 64 elements but the output has 32 columns}}
  %0 = colossus.linear %x, %w bias %b : tensor<8x64xf32>, tensor<32x64xf32>, tensor<64xf32>
  return
}

// -----

// N is the second dimension of a [K, N] weight.
func.func @linear_bias_size_no_transpose(%x: tensor<8x64xf32>, %w: tensor<64x192xf32>, %b: tensor<64xf32>) {
  // expected-error @+1 {{'colossus.linear' op bias has 64 elements but the output has 192 columns}}
  %0 = colossus.linear %x, %w bias %b {transpose_w = false} : tensor<8x64xf32>, tensor<64x192xf32>, tensor<64xf32>
  return
}

// -----

func.func @linear_bias_type(%x: tensor<8x64xf32>, %w: tensor<32x64xf32>, %b: tensor<32xf16>) {
  // expected-error @+1 {{'colossus.linear' op bias must have the element type of x}}
  %0 = colossus.linear %x, %w bias %b : tensor<8x64xf32>, tensor<32x64xf32>, tensor<32xf16>
  return
}

// -----

func.func @linear_weight_rank(%x: tensor<8x64xf32>, %w: tensor<64xf32>) {
  // expected-error @+1 {{'colossus.linear' op weight must be a 2-D tensor, got 'tensor<64xf32>'}}
  %0 = colossus.linear %x, %w : tensor<8x64xf32>, tensor<64xf32>
  return
}

// -----

// The result of a [K, N] weight has N columns, in the generic form too.
func.func @linear_result_type_no_transpose(%x: tensor<8x64xf32>, %w: tensor<64x192xf32>) {
  // expected-error @+2 {{'colossus.linear' op inferred type(s) 'tensor<8x192xf32>' are incompatible with return type(s) of operation 'tensor<8x64xf32>'}}
  // expected-error @+1 {{'colossus.linear' op failed to infer returned types}}
  %0 = "colossus.linear"(%x, %w) <{transpose_w = false}> : (tensor<8x64xf32>, tensor<64x192xf32>) -> tensor<8x64xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// rope
//===----------------------------------------------------------------------===//

func.func @rope_head_dim_odd(%x: tensor<8x60xf32>, %pos: tensor<8xi32>) {
  // expected-error @+1 {{'colossus.rope' op head_dim must be even, got 15}}
  %0 = colossus.rope %x, %pos {head_dim = 15 : i64, layout = #colossus<rope_layout rotate_half>, theta = 10000.0 : f64} : tensor<8x60xf32>, tensor<8xi32>
  return
}

// -----

func.func @rope_head_dim_columns(%x: tensor<8x60xf32>, %pos: tensor<8xi32>) {
  // expected-error @+1 {{'colossus.rope' op columns (60) must be a multiple of head_dim (16)}}
  %0 = colossus.rope %x, %pos {head_dim = 16 : i64, layout = #colossus<rope_layout rotate_half>, theta = 10000.0 : f64} : tensor<8x60xf32>, tensor<8xi32>
  return
}

// -----

func.func @rope_head_dim_zero(%x: tensor<8x64xf32>, %pos: tensor<8xi32>) {
  // expected-error @+1 {{attribute 'head_dim' failed to satisfy constraint: 64-bit signless integer attribute whose value is positive}}
  %0 = colossus.rope %x, %pos {head_dim = 0 : i64, layout = #colossus<rope_layout rotate_half>, theta = 10000.0 : f64} : tensor<8x64xf32>, tensor<8xi32>
  return
}

// -----

func.func @rope_positions(%x: tensor<8x64xf32>, %pos: tensor<16xi32>) {
  // expected-error @+1 {{'colossus.rope' op positions must have one entry per row of x}}
  %0 = colossus.rope %x, %pos {head_dim = 16 : i64, layout = #colossus<rope_layout rotate_half>, theta = 10000.0 : f64} : tensor<8x64xf32>, tensor<16xi32>
  return
}

// -----

func.func @rope_theta(%x: tensor<8x64xf32>, %pos: tensor<8xi32>) {
  // expected-error @+1 {{'colossus.rope' op theta must be positive}}
  %0 = colossus.rope %x, %pos {head_dim = 16 : i64, layout = #colossus<rope_layout rotate_half>, theta = 0.0 : f64} : tensor<8x64xf32>, tensor<8xi32>
  return
}

// -----

// NaN is not positive.
func.func @rope_theta_nan(%x: tensor<8x64xf32>, %pos: tensor<8xi32>) {
  // expected-error @+1 {{'colossus.rope' op theta must be positive}}
  %0 = colossus.rope %x, %pos {head_dim = 16 : i64, layout = #colossus<rope_layout rotate_half>, theta = 0x7FF8000000000000 : f64} : tensor<8x64xf32>, tensor<8xi32>
  return
}

// -----

func.func @rope_linear_factor(%x: tensor<8x64xf32>, %pos: tensor<8xi32>) {
  // expected-error @+1 {{'colossus.rope' op scaling factor must be positive}}
  %0 = colossus.rope %x, %pos {head_dim = 16 : i64, layout = #colossus<rope_layout rotate_half>, theta = 10000.0 : f64, scaling = #colossus<rope_scaling linear>, factor = 0.0 : f64} : tensor<8x64xf32>, tensor<8xi32>
  return
}

// -----

func.func @rope_llama3_factor(%x: tensor<8x64xf32>, %pos: tensor<8xi32>) {
  // expected-error @+1 {{'colossus.rope' op scaling factor must be positive}}
  %0 = colossus.rope %x, %pos {head_dim = 16 : i64, layout = #colossus<rope_layout rotate_half>, theta = 500000.0 : f64, scaling = #colossus<rope_scaling llama3>, factor = -8.0 : f64} : tensor<8x64xf32>, tensor<8xi32>
  return
}

// -----

func.func @rope_llama3_freq_factors(%x: tensor<8x64xf32>, %pos: tensor<8xi32>) {
  // expected-error @+1 {{'colossus.rope' op llama3 scaling needs high_freq_factor > low_freq_factor}}
  %0 = colossus.rope %x, %pos {head_dim = 16 : i64, layout = #colossus<rope_layout rotate_half>, theta = 500000.0 : f64, scaling = #colossus<rope_scaling llama3>, factor = 8.0 : f64, low_freq_factor = 4.0 : f64, high_freq_factor = 4.0 : f64} : tensor<8x64xf32>, tensor<8xi32>
  return
}

// -----

func.func @rope_llama3_low_freq_factor(%x: tensor<8x64xf32>, %pos: tensor<8xi32>) {
  // expected-error @+1 {{'colossus.rope' op llama3 scaling needs low_freq_factor > 0}}
  %0 = colossus.rope %x, %pos {head_dim = 16 : i64, layout = #colossus<rope_layout rotate_half>, theta = 500000.0 : f64, scaling = #colossus<rope_scaling llama3>, factor = 8.0 : f64, low_freq_factor = 0.0 : f64} : tensor<8x64xf32>, tensor<8xi32>
  return
}

// -----

func.func @rope_llama3_original_max_position(%x: tensor<8x64xf32>, %pos: tensor<8xi32>) {
  // expected-error @+1 {{'colossus.rope' op llama3 scaling needs original_max_position > 0}}
  %0 = colossus.rope %x, %pos {head_dim = 16 : i64, layout = #colossus<rope_layout rotate_half>, theta = 500000.0 : f64, scaling = #colossus<rope_scaling llama3>, factor = 8.0 : f64, original_max_position = -8192 : i64} : tensor<8x64xf32>, tensor<8xi32>
  return
}

// -----

func.func @rope_bad_layout(%x: tensor<8x64xf32>, %pos: tensor<8xi32>) {
  // expected-error @+2 {{expected ::colossus::RopeLayout to be one of: rotate_half, interleaved}}
  // expected-error @+1 {{failed to parse Colossus_RopeLayoutAttr parameter 'value'}}
  %0 = colossus.rope %x, %pos {head_dim = 16 : i64, layout = #colossus<rope_layout neox>, theta = 10000.0 : f64} : tensor<8x64xf32>, tensor<8xi32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// cache_write
//===----------------------------------------------------------------------===//

func.func @cache_write_columns(%cache: tensor<2x40x32xf32>, %x: tensor<80x64xf32>, %pos: tensor<80xi32>) {
  // expected-error @+1 {{'colossus.cache_write' op cache rows have 32 elements but x rows have 64}}
  %0 = colossus.cache_write %cache[%pos], %x : tensor<2x40x32xf32>, tensor<80x64xf32>, tensor<80xi32>
  return
}

// -----

func.func @cache_write_element_type(%cache: tensor<2x40x32xbf16>, %x: tensor<80x32xf32>, %pos: tensor<80xi32>) {
  // expected-error @+1 {{'colossus.cache_write' op cache and x must have the same element type}}
  %0 = colossus.cache_write %cache[%pos], %x : tensor<2x40x32xbf16>, tensor<80x32xf32>, tensor<80xi32>
  return
}

// -----

func.func @cache_write_positions(%cache: tensor<2x40x32xf32>, %x: tensor<80x32xf32>, %pos: tensor<40xi32>) {
  // expected-error @+1 {{'colossus.cache_write' op positions must have one entry per row of x}}
  %0 = colossus.cache_write %cache[%pos], %x : tensor<2x40x32xf32>, tensor<80x32xf32>, tensor<40xi32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// attention
//===----------------------------------------------------------------------===//

func.func @attention_heads_not_divisible(%q: tensor<80x96xf32>, %k: tensor<2x40x64xf32>, %v: tensor<2x40x64xf32>, %pos: tensor<80xi32>) {
  // expected-error @+1 {{'colossus.attention' op num_heads (6) must be a multiple of num_kv_heads (4)}}
  %0 = colossus.attention %q, %k, %v, %pos {num_heads = 6 : i64, num_kv_heads = 4 : i64, head_dim = 16 : i64, scale = 0.25 : f64} : tensor<80x96xf32>, tensor<2x40x64xf32>, tensor<2x40x64xf32>, tensor<80xi32>
  return
}

// -----

func.func @attention_q_columns(%q: tensor<80x60xf32>, %k: tensor<2x40x32xf32>, %v: tensor<2x40x32xf32>, %pos: tensor<80xi32>) {
  // expected-error @+1 {{'colossus.attention' op q has 60 columns, expected num_heads * head_dim = 64}}
  %0 = colossus.attention %q, %k, %v, %pos {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f64} : tensor<80x60xf32>, tensor<2x40x32xf32>, tensor<2x40x32xf32>, tensor<80xi32>
  return
}

// -----

// The caches hold num_heads (not num_kv_heads) heads: a GQA mistake.
func.func @attention_k_columns(%q: tensor<80x64xf32>, %k: tensor<2x40x64xf32>, %v: tensor<2x40x64xf32>, %pos: tensor<80xi32>) {
  // expected-error @+1 {{'colossus.attention' op k has 64 columns, expected num_kv_heads * head_dim = 32}}
  %0 = colossus.attention %q, %k, %v, %pos {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f64} : tensor<80x64xf32>, tensor<2x40x64xf32>, tensor<2x40x64xf32>, tensor<80xi32>
  return
}

// -----

func.func @attention_k_v_shape(%q: tensor<80x64xf32>, %k: tensor<2x40x32xf32>, %v: tensor<2x48x32xf32>, %pos: tensor<80xi32>) {
  // expected-error @+1 {{'colossus.attention' op k and v differ in dimension 1 (40 vs 48)}}
  %0 = colossus.attention %q, %k, %v, %pos {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f64} : tensor<80x64xf32>, tensor<2x40x32xf32>, tensor<2x48x32xf32>, tensor<80xi32>
  return
}

// -----

func.func @attention_k_v_element_type(%q: tensor<80x64xf32>, %k: tensor<2x40x32xf32>, %v: tensor<2x40x32xbf16>, %pos: tensor<80xi32>) {
  // expected-error @+1 {{'colossus.attention' op k and v must have the same element type}}
  %0 = colossus.attention %q, %k, %v, %pos {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f64} : tensor<80x64xf32>, tensor<2x40x32xf32>, tensor<2x40x32xbf16>, tensor<80xi32>
  return
}

// -----

func.func @attention_q_k_element_type(%q: tensor<80x64xf32>, %k: tensor<2x40x32xbf16>, %v: tensor<2x40x32xbf16>, %pos: tensor<80xi32>) {
  // expected-error @+1 {{'colossus.attention' op q and k must have the same element type}}
  %0 = colossus.attention %q, %k, %v, %pos {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f64} : tensor<80x64xf32>, tensor<2x40x32xbf16>, tensor<2x40x32xbf16>, tensor<80xi32>
  return
}

// -----

func.func @attention_positions(%q: tensor<80x64xf32>, %k: tensor<2x40x32xf32>, %v: tensor<2x40x32xf32>, %pos: tensor<40xi32>) {
  // expected-error @+1 {{'colossus.attention' op positions must have one entry per row of q}}
  %0 = colossus.attention %q, %k, %v, %pos {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f64} : tensor<80x64xf32>, tensor<2x40x32xf32>, tensor<2x40x32xf32>, tensor<40xi32>
  return
}

// -----

func.func @attention_sliding_window(%q: tensor<80x64xf32>, %k: tensor<2x40x32xf32>, %v: tensor<2x40x32xf32>, %pos: tensor<80xi32>) {
  // expected-error @+1 {{'colossus.attention' op sliding_window must be >= 0}}
  %0 = colossus.attention %q, %k, %v, %pos {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f64, sliding_window = -1 : i64} : tensor<80x64xf32>, tensor<2x40x32xf32>, tensor<2x40x32xf32>, tensor<80xi32>
  return
}

// -----

func.func @attention_scale(%q: tensor<80x64xf32>, %k: tensor<2x40x32xf32>, %v: tensor<2x40x32xf32>, %pos: tensor<80xi32>) {
  // expected-error @+1 {{'colossus.attention' op scale must be positive}}
  %0 = colossus.attention %q, %k, %v, %pos {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.0 : f64} : tensor<80x64xf32>, tensor<2x40x32xf32>, tensor<2x40x32xf32>, tensor<80xi32>
  return
}

// -----

// A dynamic dimension is accepted where it cannot be checked; the static
// ones still are.
func.func @attention_dynamic(%q: tensor<?x64xf32>, %k: tensor<?x?x64xf32>, %v: tensor<?x?x64xf32>, %pos: tensor<?xi32>) {
  // expected-error @+1 {{'colossus.attention' op k has 64 columns, expected num_kv_heads * head_dim = 32}}
  %0 = colossus.attention %q, %k, %v, %pos {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f64} : tensor<?x64xf32>, tensor<?x?x64xf32>, tensor<?x?x64xf32>, tensor<?xi32>
  return
}

// -----

func.func @attention_zero_kv_heads(%q: tensor<80x64xf32>, %k: tensor<2x40x32xf32>, %v: tensor<2x40x32xf32>, %pos: tensor<80xi32>) {
  // expected-error @+1 {{attribute 'num_kv_heads' failed to satisfy constraint: 64-bit signless integer attribute whose value is positive}}
  %0 = colossus.attention %q, %k, %v, %pos {num_heads = 4 : i64, num_kv_heads = 0 : i64, head_dim = 16 : i64, scale = 0.25 : f64} : tensor<80x64xf32>, tensor<2x40x32xf32>, tensor<2x40x32xf32>, tensor<80xi32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// slice
//===----------------------------------------------------------------------===//

func.func @slice_out_of_range(%x: tensor<8x192xf32>) {
  // expected-error @+1 {{'colossus.slice' op offset 128 + size 128 exceeds the 192 columns of x}}
  %0 = colossus.slice %x[128, 128] : tensor<8x192xf32>
  return
}

// -----

func.func @slice_too_wide(%x: tensor<8x192xf32>) {
  // expected-error @+1 {{'colossus.slice' op offset 0 + size 256 exceeds the 192 columns of x}}
  %0 = colossus.slice %x[0, 256] : tensor<8x192xf32>
  return
}

// -----

// offset + size overflows int64: still out of range.
func.func @slice_overflow(%x: tensor<8x192xf32>) {
  // expected-error @+1 {{'colossus.slice' op offset 9223372036854775807 + size 64 exceeds the 192 columns of x}}
  %0 = colossus.slice %x[9223372036854775807, 64] : tensor<8x192xf32>
  return
}

// -----

func.func @slice_negative_offset(%x: tensor<8x192xf32>) {
  // expected-error @+1 {{attribute 'offset' failed to satisfy constraint: 64-bit signless integer attribute whose value is non-negative}}
  %0 = colossus.slice %x[-64, 64] : tensor<8x192xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// swiglu, add, mul
//===----------------------------------------------------------------------===//

// The custom form has one type for both operands; the generic form can say
// two, and the AllTypesMatch constraint rejects them before the verifier.
func.func @swiglu_mismatch(%g: tensor<8x176xf32>, %u: tensor<8x64xf32>) {
  // expected-error @+1 {{'colossus.swiglu' op failed to verify that all of {lhs, rhs} have same type}}
  %0 = "colossus.swiglu"(%g, %u) : (tensor<8x176xf32>, tensor<8x64xf32>) -> tensor<8x176xf32>
  return
}

// -----

func.func @add_mismatch(%a: tensor<8x64xf32>, %b: tensor<8x64xbf16>) {
  // expected-error @+1 {{'colossus.add' op failed to verify that all of {lhs, rhs} have same type}}
  %0 = "colossus.add"(%a, %b) : (tensor<8x64xf32>, tensor<8x64xbf16>) -> tensor<8x64xf32>
  return
}

// -----

func.func @mul_mismatch(%a: tensor<8x64xf32>, %b: tensor<?x64xf32>) {
  // expected-error @+1 {{'colossus.mul' op failed to verify that all of {lhs, rhs} have same type}}
  %0 = "colossus.mul"(%a, %b) : (tensor<8x64xf32>, tensor<?x64xf32>) -> tensor<8x64xf32>
  return
}

// -----

func.func @add_result_type(%a: tensor<8x64xf32>, %b: tensor<8x64xf32>) {
  // expected-error @+2 {{'colossus.add' op inferred type(s) 'tensor<8x64xf32>' are incompatible with return type(s) of operation 'tensor<8x32xf32>'}}
  // expected-error @+1 {{'colossus.add' op failed to infer returned types}}
  %0 = "colossus.add"(%a, %b) : (tensor<8x64xf32>, tensor<8x64xf32>) -> tensor<8x32xf32>
  return
}

// -----

func.func @silu_rank(%x: tensor<8x4x16xf32>) {
  // expected-error @+1 {{operand #0 must be 2D tensor of floating-point values, but got 'tensor<8x4x16xf32>'}}
  %0 = "colossus.silu"(%x) : (tensor<8x4x16xf32>) -> tensor<8x4x16xf32>
  return
}

// -----

func.func @gelu_bad_approximation(%x: tensor<8x64xf32>) {
  // expected-error @+2 {{expected ::colossus::GeluApprox to be one of: erf, tanh}}
  // expected-error @+1 {{failed to parse Colossus_GeluApproxAttr parameter 'value'}}
  %0 = colossus.gelu %x {approximate = #colossus<gelu_approx sigmoid>} : tensor<8x64xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// fusion, yield
//===----------------------------------------------------------------------===//

func.func @fusion_arg_count(%a: tensor<8x64xf32>, %b: tensor<8x64xf32>) -> tensor<8x64xf32> {
  // expected-error @+1 {{'colossus.fusion' op region has 1 arguments but the op has 2 inputs}}
  %0 = colossus.fusion "elementwise" (%a, %b) : (tensor<8x64xf32>, tensor<8x64xf32>) -> tensor<8x64xf32> {
  ^bb0(%x: tensor<8x64xf32>):
    colossus.yield %x : tensor<8x64xf32>
  }
  return %0 : tensor<8x64xf32>
}

// -----

func.func @fusion_arg_type(%a: tensor<8x64xf32>, %b: tensor<8x64xf32>) -> tensor<8x64xf32> {
  // expected-error @+1 {{'colossus.fusion' op region argument 1 type does not match input 1}}
  %0 = colossus.fusion "elementwise" (%a, %b) : (tensor<8x64xf32>, tensor<8x64xf32>) -> tensor<8x64xf32> {
  ^bb0(%x: tensor<8x64xf32>, %y: tensor<8x64xbf16>):
    colossus.yield %x : tensor<8x64xf32>
  }
  return %0 : tensor<8x64xf32>
}

// -----

func.func @fusion_yield_type(%a: tensor<8x64xf32>) -> tensor<8x64xf32> {
  // expected-error @+1 {{'colossus.fusion' op yielded types do not match the results}}
  %0 = colossus.fusion "gemm" (%a) : (tensor<8x64xf32>) -> tensor<8x64xf32> {
  ^bb0(%x: tensor<8x64xf32>):
    %1 = colossus.slice %x[0, 32] : tensor<8x64xf32>
    colossus.yield %1 : tensor<8x32xf32>
  }
  return %0 : tensor<8x64xf32>
}

// -----

func.func @fusion_yield_count(%a: tensor<8x64xf32>) -> tensor<8x64xf32> {
  // expected-error @+1 {{'colossus.fusion' op yielded types do not match the results}}
  %0 = colossus.fusion "norm" (%a) : (tensor<8x64xf32>) -> tensor<8x64xf32> {
  ^bb0(%x: tensor<8x64xf32>):
    colossus.yield %x, %x : tensor<8x64xf32>, tensor<8x64xf32>
  }
  return %0 : tensor<8x64xf32>
}

// -----

// The block is not closed by a terminator (the fusion is verified before the
// ops of its region).
func.func @fusion_no_yield(%a: tensor<8x64xf32>) -> tensor<8x64xf32> {
  // expected-error @+1 {{'colossus.fusion' op region must end with colossus.yield}}
  %0 = colossus.fusion "elementwise" (%a) : (tensor<8x64xf32>) -> tensor<8x64xf32> {
  ^bb0(%x: tensor<8x64xf32>):
    %1 = colossus.silu %x : tensor<8x64xf32>
  }
  return %0 : tensor<8x64xf32>
}

// -----

func.func @fusion_empty_kind(%a: tensor<8x64xf32>) -> tensor<8x64xf32> {
  // expected-error @+1 {{'colossus.fusion' op kind must not be empty}}
  %0 = colossus.fusion "" (%a) : (tensor<8x64xf32>) -> tensor<8x64xf32> {
  ^bb0(%x: tensor<8x64xf32>):
    colossus.yield %x : tensor<8x64xf32>
  }
  return %0 : tensor<8x64xf32>
}

// -----

// IsolatedFromAbove: values from outside come in as inputs.
func.func @fusion_isolated(%a: tensor<8x64xf32>, %b: tensor<8x64xf32>) -> tensor<8x64xf32> {
  // expected-note @+1 {{required by region isolation constraints}}
  %0 = colossus.fusion "elementwise" (%a) : (tensor<8x64xf32>) -> tensor<8x64xf32> {
  ^bb0(%x: tensor<8x64xf32>):
    // expected-error @+1 {{using value defined outside the region}}
    %1 = colossus.add %x, %b : tensor<8x64xf32>
    colossus.yield %1 : tensor<8x64xf32>
  }
  return %0 : tensor<8x64xf32>
}

// -----

func.func @yield_outside_fusion(%a: tensor<8x64xf32>) {
  // expected-error @+1 {{'colossus.yield' op expects parent op 'colossus.fusion'}}
  colossus.yield %a : tensor<8x64xf32>
}

// -----

func.func @convert_to_integer(%x: tensor<8x64xbf16>) {
  // expected-error @+1 {{'colossus.convert' op attribute 'element_type' failed to satisfy constraint: type attribute of floating-point}}
  %0 = colossus.convert %x to i32 : tensor<8x64xbf16>
  return
}
