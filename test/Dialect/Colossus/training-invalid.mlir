// RUN: %colossus-opt %s -split-input-file -verify-diagnostics

// One case per verifier error of the training ops of the colossus dialect
// (the "Training ops" section of dialects/lib/Colossus/IR/ColossusOps.cpp),
// plus the ODS constraints and the parse-time rank checks of the result-type
// inference that stand in front of them.

//===----------------------------------------------------------------------===//
// cross_entropy
//===----------------------------------------------------------------------===//

func.func @cross_entropy_logits_f32(%logits: tensor<8x256xbf16>, %targets: tensor<8xi32>) {
  // expected-error @+1 {{'colossus.cross_entropy' op logits must be f32}}
  %0 = colossus.cross_entropy %logits, %targets : tensor<8x256xbf16>, tensor<8xi32>
  return
}

// -----

func.func @cross_entropy_rows(%logits: tensor<8x256xf32>, %targets: tensor<16xi32>) {
  // expected-error @+1 {{'colossus.cross_entropy' op logits and targets must have the same number of rows (8 vs 16)}}
  %0 = colossus.cross_entropy %logits, %targets : tensor<8x256xf32>, tensor<16xi32>
  return
}

// -----

func.func @cross_entropy_logits_rank(%logits: tensor<2x8x256xf32>, %targets: tensor<8xi32>) {
  // expected-error @+1 {{'colossus.cross_entropy' op operand #0 must be 2D tensor of floating-point values, but got 'tensor<2x8x256xf32>'}}
  %0 = colossus.cross_entropy %logits, %targets : tensor<2x8x256xf32>, tensor<8xi32>
  return
}

// -----

func.func @cross_entropy_targets_type(%logits: tensor<8x256xf32>, %targets: tensor<8xi64>) {
  // expected-error @+1 {{'colossus.cross_entropy' op operand #1 must be 1D tensor of 32-bit signless integer values, but got 'tensor<8xi64>'}}
  %0 = colossus.cross_entropy %logits, %targets : tensor<8x256xf32>, tensor<8xi64>
  return
}

// -----

// The loss is a tensor<f32> scalar, whatever the generic form says.
func.func @cross_entropy_result_type(%logits: tensor<8x256xf32>, %targets: tensor<8xi32>) {
  // expected-error @+1 {{'colossus.cross_entropy' op result #0 must be 0D tensor of 32-bit float values, but got 'tensor<1xf32>'}}
  %0 = "colossus.cross_entropy"(%logits, %targets) <{ignore_index = -100 : i64}> : (tensor<8x256xf32>, tensor<8xi32>) -> tensor<1xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// cross_entropy_grad
//===----------------------------------------------------------------------===//

func.func @cross_entropy_grad_logits_f32(%logits: tensor<8x256xf16>, %targets: tensor<8xi32>, %dloss: tensor<f32>) {
  // expected-error @+1 {{'colossus.cross_entropy_grad' op logits must be f32}}
  %0 = colossus.cross_entropy_grad %logits, %targets, %dloss : tensor<8x256xf16>, tensor<8xi32>, tensor<f32>
  return
}

// -----

func.func @cross_entropy_grad_rows(%logits: tensor<8x256xf32>, %targets: tensor<4xi32>, %dloss: tensor<f32>) {
  // expected-error @+1 {{'colossus.cross_entropy_grad' op logits and targets must have the same number of rows (8 vs 4)}}
  %0 = colossus.cross_entropy_grad %logits, %targets, %dloss : tensor<8x256xf32>, tensor<4xi32>, tensor<f32>
  return
}

// -----

func.func @cross_entropy_grad_dloss_rank(%logits: tensor<8x256xf32>, %targets: tensor<8xi32>, %dloss: tensor<1xf32>) {
  // expected-error @+1 {{'colossus.cross_entropy_grad' op operand #2 must be 0D tensor of 32-bit float values, but got 'tensor<1xf32>'}}
  %0 = colossus.cross_entropy_grad %logits, %targets, %dloss : tensor<8x256xf32>, tensor<8xi32>, tensor<1xf32>
  return
}

// -----

func.func @cross_entropy_grad_dloss_type(%logits: tensor<8x256xf32>, %targets: tensor<8xi32>, %dloss: tensor<bf16>) {
  // expected-error @+1 {{'colossus.cross_entropy_grad' op operand #2 must be 0D tensor of 32-bit float values, but got 'tensor<bf16>'}}
  %0 = colossus.cross_entropy_grad %logits, %targets, %dloss : tensor<8x256xf32>, tensor<8xi32>, tensor<bf16>
  return
}

// -----

func.func @cross_entropy_grad_ignore_index_type(%logits: tensor<8x256xf32>, %targets: tensor<8xi32>, %dloss: tensor<f32>) {
  // expected-error @+1 {{attribute 'ignore_index' failed to satisfy constraint: 64-bit signless integer attribute}}
  %0 = colossus.cross_entropy_grad %logits, %targets, %dloss {ignore_index = -100 : i32} : tensor<8x256xf32>, tensor<8xi32>, tensor<f32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// linear_weight_grad
//===----------------------------------------------------------------------===//

func.func @linear_weight_grad_element_type(%x: tensor<8x64xf32>, %dy: tensor<8x32xbf16>) {
  // expected-error @+1 {{'colossus.linear_weight_grad' op x and dy must have the same element type (or bf16 x with an f32 dy)}}
  %0 = colossus.linear_weight_grad %x, %dy : tensor<8x64xf32>, tensor<8x32xbf16>
  return
}

// -----

func.func @linear_weight_grad_rows(%x: tensor<8x64xf32>, %dy: tensor<16x32xf32>) {
  // expected-error @+1 {{'colossus.linear_weight_grad' op x and dy must have the same number of rows (8 vs 16)}}
  %0 = colossus.linear_weight_grad %x, %dy : tensor<8x64xf32>, tensor<16x32xf32>
  return
}

// -----

// Result types are inferred while parsing: an operand of the wrong rank is
// reported there, not read out of bounds.
func.func @linear_weight_grad_x_rank(%x: tensor<64xf32>, %dy: tensor<8x32xf32>) {
  // expected-error @+1 {{'colossus.linear_weight_grad' op x must be a 2-D tensor, got 'tensor<64xf32>'}}
  %0 = colossus.linear_weight_grad %x, %dy : tensor<64xf32>, tensor<8x32xf32>
  return
}

// -----

func.func @linear_weight_grad_dy_rank(%x: tensor<8x64xf32>, %dy: tensor<2x8x32xf32>) {
  // expected-error @+1 {{'colossus.linear_weight_grad' op dy must be a 2-D tensor, got 'tensor<2x8x32xf32>'}}
  %0 = colossus.linear_weight_grad %x, %dy : tensor<8x64xf32>, tensor<2x8x32xf32>
  return
}

// -----

// The generic form checks the ODS constraints before the inference.
func.func @linear_weight_grad_x_rank_generic(%x: tensor<64xf32>, %dy: tensor<8x32xf32>) {
  // expected-error @+1 {{'colossus.linear_weight_grad' op operand #0 must be 2D tensor of floating-point values, but got 'tensor<64xf32>'}}
  %0 = "colossus.linear_weight_grad"(%x, %dy) <{transpose_w = true}> : (tensor<64xf32>, tensor<8x32xf32>) -> tensor<32x64xf32>
  return
}

// -----

// With transpose_w = false the gradient is [K, N], in the generic form too.
func.func @linear_weight_grad_result_type(%x: tensor<8x64xf32>, %dy: tensor<8x32xf32>) {
  // expected-error @+2 {{'colossus.linear_weight_grad' op inferred type(s) 'tensor<64x32xf32>' are incompatible with return type(s) of operation 'tensor<32x64xf32>'}}
  // expected-error @+1 {{'colossus.linear_weight_grad' op failed to infer returned types}}
  %0 = "colossus.linear_weight_grad"(%x, %dy) <{transpose_w = false}> : (tensor<8x64xf32>, tensor<8x32xf32>) -> tensor<32x64xf32>
  return
}

// -----

// The custom form reads transpose_w from its attr-dict while parsing: the
// result is [K, N], not [N, K].
func.func @linear_weight_grad_custom_no_transpose(%x: tensor<8x64xf32>, %dy: tensor<8x32xf32>) -> tensor<32x64xf32> {
  // expected-note @+1 {{prior use here}}
  %0 = colossus.linear_weight_grad %x, %dy {transpose_w = false} : tensor<8x64xf32>, tensor<8x32xf32>
  // expected-error @+1 {{use of value '%0' expects different type than prior uses: 'tensor<32x64xf32>' vs 'tensor<64x32xf32>'}}
  return %0 : tensor<32x64xf32>
}

// -----

//===----------------------------------------------------------------------===//
// column_sum
//===----------------------------------------------------------------------===//

func.func @column_sum_rank(%x: tensor<64xf32>) {
  // expected-error @+1 {{'colossus.column_sum' op x must be a 2-D tensor, got 'tensor<64xf32>'}}
  %0 = colossus.column_sum %x : tensor<64xf32>
  return
}

// -----

func.func @column_sum_element_type(%x: tensor<8x64xi32>) {
  // expected-error @+1 {{'colossus.column_sum' op operand #0 must be 2D tensor of floating-point values, but got 'tensor<8x64xi32>'}}
  %0 = colossus.column_sum %x : tensor<8x64xi32>
  return
}

// -----

// The sum is over the rows: one element per column.
func.func @column_sum_result_type(%x: tensor<8x64xf32>) {
  // expected-error @+2 {{'colossus.column_sum' op inferred type(s) 'tensor<64xf32>' are incompatible with return type(s) of operation 'tensor<8xf32>'}}
  // expected-error @+1 {{'colossus.column_sum' op failed to infer returned types}}
  %0 = "colossus.column_sum"(%x) : (tensor<8x64xf32>) -> tensor<8xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// rms_norm_grad
//===----------------------------------------------------------------------===//

func.func @rms_norm_grad_negative_eps(%x: tensor<8x64xf32>, %w: tensor<64xf32>, %dy: tensor<8x64xf32>) {
  // expected-error @+1 {{'colossus.rms_norm_grad' op eps must be non-negative}}
  %0:2 = colossus.rms_norm_grad %x, %w, %dy eps = -1.0e-05 : tensor<8x64xf32>, tensor<64xf32>
  return
}

// -----

func.func @rms_norm_grad_eps_nan(%x: tensor<8x64xf32>, %w: tensor<64xf32>, %dy: tensor<8x64xf32>) {
  // expected-error @+1 {{'colossus.rms_norm_grad' op eps must be non-negative}}
  %0:2 = colossus.rms_norm_grad %x, %w, %dy eps = 0x7FF8000000000000 : tensor<8x64xf32>, tensor<64xf32>
  return
}

// -----

func.func @rms_norm_grad_weight_size(%x: tensor<8x64xf32>, %w: tensor<32xf32>, %dy: tensor<8x64xf32>) {
  // expected-error @+1 {{'colossus.rms_norm_grad' op weight has 32 elements but the input rows have 64}}
  %0:2 = colossus.rms_norm_grad %x, %w, %dy eps = 1.0e-05 : tensor<8x64xf32>, tensor<32xf32>
  return
}

// -----

func.func @rms_norm_grad_weight_type(%x: tensor<8x64xf32>, %w: tensor<64xbf16>, %dy: tensor<8x64xf32>) {
  // expected-error @+1 {{'colossus.rms_norm_grad' op weight must have the element type of the input}}
  %0:2 = colossus.rms_norm_grad %x, %w, %dy eps = 1.0e-05 : tensor<8x64xf32>, tensor<64xbf16>
  return
}

// -----

func.func @rms_norm_grad_weight_rank(%x: tensor<8x64xf32>, %w: tensor<1x64xf32>, %dy: tensor<8x64xf32>) {
  // expected-error @+1 {{'colossus.rms_norm_grad' op operand #1 must be 1D tensor of floating-point values, but got 'tensor<1x64xf32>'}}
  %0:2 = colossus.rms_norm_grad %x, %w, %dy eps = 1.0e-05 : tensor<8x64xf32>, tensor<1x64xf32>
  return
}

// -----

// The custom form has one type for x and dy; the generic form can say two,
// and the AllTypesMatch constraint rejects them before the verifier.
func.func @rms_norm_grad_dy_type(%x: tensor<8x64xf32>, %w: tensor<64xf32>, %dy: tensor<8x64xbf16>) {
  // expected-error @+1 {{'colossus.rms_norm_grad' op failed to verify that all of {x, dy} have same type}}
  %0:2 = "colossus.rms_norm_grad"(%x, %w, %dy) <{eps = 1.0e-05 : f64}> : (tensor<8x64xf32>, tensor<64xf32>, tensor<8x64xbf16>) -> (tensor<8x64xf32>, tensor<64xf32>)
  return
}

// -----

// A dynamic dimension is still a different type.
func.func @rms_norm_grad_dy_dynamic(%x: tensor<8x64xf32>, %w: tensor<64xf32>, %dy: tensor<?x64xf32>) {
  // expected-error @+1 {{'colossus.rms_norm_grad' op failed to verify that all of {x, dy} have same type}}
  %0:2 = "colossus.rms_norm_grad"(%x, %w, %dy) <{eps = 1.0e-05 : f64}> : (tensor<8x64xf32>, tensor<64xf32>, tensor<?x64xf32>) -> (tensor<8x64xf32>, tensor<64xf32>)
  return
}

// -----

func.func @rms_norm_grad_result_type(%x: tensor<8x64xf32>, %w: tensor<64xf32>, %dy: tensor<8x64xf32>) {
  // expected-error @+2 {{'colossus.rms_norm_grad' op inferred type(s) 'tensor<8x64xf32>', 'tensor<64xf32>' are incompatible with return type(s) of operation 'tensor<8x64xf32>', 'tensor<32xf32>'}}
  // expected-error @+1 {{'colossus.rms_norm_grad' op failed to infer returned types}}
  %0:2 = "colossus.rms_norm_grad"(%x, %w, %dy) <{eps = 1.0e-05 : f64}> : (tensor<8x64xf32>, tensor<64xf32>, tensor<8x64xf32>) -> (tensor<8x64xf32>, tensor<32xf32>)
  return
}

// -----

//===----------------------------------------------------------------------===//
// layer_norm_grad
//===----------------------------------------------------------------------===//

func.func @layer_norm_grad_negative_eps(%x: tensor<8x64xf32>, %w: tensor<64xf32>, %dy: tensor<8x64xf32>) {
  // expected-error @+1 {{'colossus.layer_norm_grad' op eps must be non-negative}}
  %0:3 = colossus.layer_norm_grad %x, %w, %dy eps = -1.0 : tensor<8x64xf32>, tensor<64xf32>
  return
}

// -----

func.func @layer_norm_grad_weight_size(%x: tensor<8x64xf32>, %w: tensor<63xf32>, %dy: tensor<8x64xf32>) {
  // expected-error @+1 {{'colossus.layer_norm_grad' op weight has 63 elements but the input rows have 64}}
  %0:3 = colossus.layer_norm_grad %x, %w, %dy eps = 1.0e-05 : tensor<8x64xf32>, tensor<63xf32>
  return
}

// -----

func.func @layer_norm_grad_weight_type(%x: tensor<8x64xbf16>, %w: tensor<64xf32>, %dy: tensor<8x64xbf16>) {
  // expected-error @+1 {{'colossus.layer_norm_grad' op weight must have the element type of the input}}
  %0:3 = colossus.layer_norm_grad %x, %w, %dy eps = 1.0e-05 : tensor<8x64xbf16>, tensor<64xf32>
  return
}

// -----

func.func @layer_norm_grad_x_rank(%x: tensor<64xf32>, %w: tensor<64xf32>, %dy: tensor<64xf32>) {
  // expected-error @+1 {{'colossus.layer_norm_grad' op operand #0 must be 2D tensor of floating-point values, but got 'tensor<64xf32>'}}
  %0:3 = colossus.layer_norm_grad %x, %w, %dy eps = 1.0e-05 : tensor<64xf32>, tensor<64xf32>
  return
}

// -----

func.func @layer_norm_grad_dy_shape(%x: tensor<8x64xf32>, %w: tensor<64xf32>, %dy: tensor<16x64xf32>) {
  // expected-error @+1 {{'colossus.layer_norm_grad' op failed to verify that all of {x, dy} have same type}}
  %0:3 = "colossus.layer_norm_grad"(%x, %w, %dy) <{eps = 1.0e-05 : f64}> : (tensor<8x64xf32>, tensor<64xf32>, tensor<16x64xf32>) -> (tensor<8x64xf32>, tensor<64xf32>, tensor<64xf32>)
  return
}

// -----

//===----------------------------------------------------------------------===//
// silu_grad, gelu_grad, swiglu_grad, softmax_grad
//===----------------------------------------------------------------------===//

func.func @silu_grad_mismatch(%x: tensor<8x176xf32>, %dy: tensor<8x176xbf16>) {
  // expected-error @+1 {{'colossus.silu_grad' op failed to verify that all of {lhs, rhs} have same type}}
  %0 = "colossus.silu_grad"(%x, %dy) : (tensor<8x176xf32>, tensor<8x176xbf16>) -> tensor<8x176xf32>
  return
}

// -----

func.func @silu_grad_rank(%x: tensor<176xf32>, %dy: tensor<176xf32>) {
  // expected-error @+1 {{'colossus.silu_grad' op operand #0 must be 2D tensor of floating-point values, but got 'tensor<176xf32>'}}
  %0 = colossus.silu_grad %x, %dy : tensor<176xf32>
  return
}

// -----

func.func @gelu_grad_mismatch(%x: tensor<8x256xf32>, %dy: tensor<8x128xf32>) {
  // expected-error @+1 {{'colossus.gelu_grad' op failed to verify that all of {x, dy} have same type}}
  %0 = "colossus.gelu_grad"(%x, %dy) <{approximate = #colossus<gelu_approx erf>}> : (tensor<8x256xf32>, tensor<8x128xf32>) -> tensor<8x256xf32>
  return
}

// -----

func.func @gelu_grad_element_type(%x: tensor<8x256xi32>, %dy: tensor<8x256xi32>) {
  // expected-error @+1 {{'colossus.gelu_grad' op operand #0 must be 2D tensor of floating-point values, but got 'tensor<8x256xi32>'}}
  %0 = colossus.gelu_grad %x, %dy : tensor<8x256xi32>
  return
}

// -----

func.func @gelu_grad_bad_approximation(%x: tensor<8x64xf32>, %dy: tensor<8x64xf32>) {
  // expected-error @+2 {{expected ::colossus::GeluApprox to be one of: erf, tanh}}
  // expected-error @+1 {{failed to parse Colossus_GeluApproxAttr parameter 'value'}}
  %0 = colossus.gelu_grad %x, %dy {approximate = #colossus<gelu_approx sigmoid>} : tensor<8x64xf32>
  return
}

// -----

func.func @swiglu_grad_up_mismatch(%g: tensor<8x176xf32>, %u: tensor<8x64xf32>, %dy: tensor<8x176xf32>) {
  // expected-error @+1 {{'colossus.swiglu_grad' op failed to verify that all of {gate, up, dy} have same type}}
  %0:2 = "colossus.swiglu_grad"(%g, %u, %dy) : (tensor<8x176xf32>, tensor<8x64xf32>, tensor<8x176xf32>) -> (tensor<8x176xf32>, tensor<8x176xf32>)
  return
}

// -----

func.func @swiglu_grad_dy_mismatch(%g: tensor<8x176xf32>, %u: tensor<8x176xf32>, %dy: tensor<8x176xf16>) {
  // expected-error @+1 {{'colossus.swiglu_grad' op failed to verify that all of {gate, up, dy} have same type}}
  %0:2 = "colossus.swiglu_grad"(%g, %u, %dy) : (tensor<8x176xf32>, tensor<8x176xf32>, tensor<8x176xf16>) -> (tensor<8x176xf32>, tensor<8x176xf32>)
  return
}

// -----

func.func @swiglu_grad_rank(%g: tensor<2x8x176xf32>, %u: tensor<2x8x176xf32>, %dy: tensor<2x8x176xf32>) {
  // expected-error @+1 {{'colossus.swiglu_grad' op operand #0 must be 2D tensor of floating-point values, but got 'tensor<2x8x176xf32>'}}
  %0:2 = colossus.swiglu_grad %g, %u, %dy : tensor<2x8x176xf32>
  return
}

// -----

func.func @softmax_grad_mismatch(%y: tensor<8x40xf32>, %dy: tensor<8x48xf32>) {
  // expected-error @+1 {{'colossus.softmax_grad' op failed to verify that all of {y, dy} have same type}}
  %0 = "colossus.softmax_grad"(%y, %dy) : (tensor<8x40xf32>, tensor<8x48xf32>) -> tensor<8x40xf32>
  return
}

// -----

func.func @softmax_grad_result_type(%y: tensor<8x40xf32>, %dy: tensor<8x40xf32>) {
  // expected-error @+2 {{'colossus.softmax_grad' op inferred type(s) 'tensor<8x40xf32>' are incompatible with return type(s) of operation 'tensor<8x40xf16>'}}
  // expected-error @+1 {{'colossus.softmax_grad' op failed to infer returned types}}
  %0 = "colossus.softmax_grad"(%y, %dy) : (tensor<8x40xf32>, tensor<8x40xf32>) -> tensor<8x40xf16>
  return
}

// -----

//===----------------------------------------------------------------------===//
// embedding_grad
//===----------------------------------------------------------------------===//

func.func @embedding_grad_rows(%ids: tensor<16xi32>, %dy: tensor<8x64xf32>) {
  // expected-error @+1 {{'colossus.embedding_grad' op ids and dy must have the same number of rows}}
  %0 = colossus.embedding_grad %ids, %dy {vocab_size = 256 : i64} : tensor<16xi32>, tensor<8x64xf32>
  return
}

// -----

func.func @embedding_grad_addend_type(%ids: tensor<8xi32>, %dy: tensor<8x64xf32>, %dw: tensor<128x64xf32>) {
  // expected-error @+1 {{'colossus.embedding_grad' op addend must have the result's type 'tensor<256x64xf32>', got 'tensor<128x64xf32>'}}
  %0 = colossus.embedding_grad %ids, %dy plus %dw {vocab_size = 256 : i64} : tensor<8xi32>, tensor<8x64xf32>, tensor<128x64xf32>
  return
}

// -----

// vocab_size is in the attr-dict of the custom form: its absence is reported
// by the verifier, not while the result type is inferred.
func.func @embedding_grad_no_vocab_size(%ids: tensor<8xi32>, %dy: tensor<8x64xf32>) {
  // expected-error @+1 {{'colossus.embedding_grad' op requires attribute 'vocab_size'}}
  %0 = colossus.embedding_grad %ids, %dy : tensor<8xi32>, tensor<8x64xf32>
  return
}

// -----

func.func @embedding_grad_no_vocab_size_generic(%ids: tensor<8xi32>, %dy: tensor<8x64xf32>) {
  // expected-error @+1 {{'colossus.embedding_grad' op requires attribute 'vocab_size'}}
  %0 = "colossus.embedding_grad"(%ids, %dy) : (tensor<8xi32>, tensor<8x64xf32>) -> tensor<256x64xf32>
  return
}

// -----

func.func @embedding_grad_zero_vocab_size(%ids: tensor<8xi32>, %dy: tensor<8x64xf32>) {
  // expected-error @+1 {{attribute 'vocab_size' failed to satisfy constraint: 64-bit signless integer attribute whose value is positive}}
  %0 = colossus.embedding_grad %ids, %dy {vocab_size = 0 : i64} : tensor<8xi32>, tensor<8x64xf32>
  return
}

// -----

func.func @embedding_grad_negative_vocab_size_generic(%ids: tensor<8xi32>, %dy: tensor<8x64xf32>) {
  // expected-error @+1 {{'colossus.embedding_grad' op attribute 'vocab_size' failed to satisfy constraint: 64-bit signless integer attribute whose value is positive}}
  %0 = "colossus.embedding_grad"(%ids, %dy) <{vocab_size = -5 : i64}> : (tensor<8xi32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  return
}

// -----

func.func @embedding_grad_dy_rank(%ids: tensor<8xi32>, %dy: tensor<64xf32>) {
  // expected-error @+1 {{'colossus.embedding_grad' op dy must be a 2-D tensor, got 'tensor<64xf32>'}}
  %0 = colossus.embedding_grad %ids, %dy {vocab_size = 256 : i64} : tensor<8xi32>, tensor<64xf32>
  return
}

// -----

func.func @embedding_grad_ids_type(%ids: tensor<8xi64>, %dy: tensor<8x64xf32>) {
  // expected-error @+1 {{'colossus.embedding_grad' op operand #0 must be 1D tensor of 32-bit signless integer values, but got 'tensor<8xi64>'}}
  %0 = colossus.embedding_grad %ids, %dy {vocab_size = 256 : i64} : tensor<8xi64>, tensor<8x64xf32>
  return
}

// -----

func.func @embedding_grad_result_type(%ids: tensor<8xi32>, %dy: tensor<8x64xf32>) {
  // expected-error @+2 {{'colossus.embedding_grad' op inferred type(s) 'tensor<256x64xf32>' are incompatible with return type(s) of operation 'tensor<8x64xf32>'}}
  // expected-error @+1 {{'colossus.embedding_grad' op failed to infer returned types}}
  %0 = "colossus.embedding_grad"(%ids, %dy) <{vocab_size = 256 : i64}> : (tensor<8xi32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// cache_read
//===----------------------------------------------------------------------===//

func.func @cache_read_cache_rank(%cache: tensor<40x32xf32>, %pos: tensor<80xi32>) {
  // expected-error @+1 {{'colossus.cache_read' op cache must be a 3-D tensor, got 'tensor<40x32xf32>'}}
  %0 = colossus.cache_read %cache[%pos] : tensor<40x32xf32>, tensor<80xi32>
  return
}

// -----

func.func @cache_read_positions_rank(%cache: tensor<2x40x32xf32>, %pos: tensor<2x40xi32>) {
  // expected-error @+1 {{'colossus.cache_read' op positions must be a 1-D tensor, got 'tensor<2x40xi32>'}}
  %0 = colossus.cache_read %cache[%pos] : tensor<2x40x32xf32>, tensor<2x40xi32>
  return
}

// -----

func.func @cache_read_positions_type(%cache: tensor<2x40x32xf32>, %pos: tensor<80xi64>) {
  // expected-error @+1 {{'colossus.cache_read' op operand #1 must be 1D tensor of 32-bit signless integer values, but got 'tensor<80xi64>'}}
  %0 = colossus.cache_read %cache[%pos] : tensor<2x40x32xf32>, tensor<80xi64>
  return
}

// -----

func.func @cache_read_cache_type(%cache: tensor<2x40x32xi8>, %pos: tensor<80xi32>) {
  // expected-error @+1 {{'colossus.cache_read' op operand #0 must be 3D tensor of floating-point values, but got 'tensor<2x40x32xi8>'}}
  %0 = colossus.cache_read %cache[%pos] : tensor<2x40x32xi8>, tensor<80xi32>
  return
}

// -----

// One row per position, not per cache row.
func.func @cache_read_result_type(%cache: tensor<2x40x32xf32>, %pos: tensor<80xi32>) {
  // expected-error @+2 {{'colossus.cache_read' op inferred type(s) 'tensor<80x32xf32>' are incompatible with return type(s) of operation 'tensor<40x32xf32>'}}
  // expected-error @+1 {{'colossus.cache_read' op failed to infer returned types}}
  %0 = "colossus.cache_read"(%cache, %pos) : (tensor<2x40x32xf32>, tensor<80xi32>) -> tensor<40x32xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// pad_columns
//===----------------------------------------------------------------------===//

func.func @pad_columns_out_of_range(%x: tensor<8x64xf32>) {
  // expected-error @+1 {{'colossus.pad_columns' op offset 160 + 64 columns exceeds total 192}}
  %0 = colossus.pad_columns %x[160, 192] : tensor<8x64xf32>
  return
}

// -----

func.func @pad_columns_too_narrow(%x: tensor<8x64xf32>) {
  // expected-error @+1 {{'colossus.pad_columns' op offset 0 + 64 columns exceeds total 32}}
  %0 = colossus.pad_columns %x[0, 32] : tensor<8x64xf32>
  return
}

// -----

func.func @pad_columns_offset_past_total(%x: tensor<8x64xf32>) {
  // expected-error @+1 {{'colossus.pad_columns' op offset 256 + 64 columns exceeds total 192}}
  %0 = colossus.pad_columns %x[256, 192] : tensor<8x64xf32>
  return
}

// -----

// offset + columns overflows int64: still out of range.
func.func @pad_columns_overflow(%x: tensor<8x64xf32>) {
  // expected-error @+1 {{'colossus.pad_columns' op offset 9223372036854775807 + 64 columns exceeds total 9223372036854775807}}
  %0 = colossus.pad_columns %x[9223372036854775807, 9223372036854775807] : tensor<8x64xf32>
  return
}

// -----

func.func @pad_columns_negative_offset(%x: tensor<8x64xf32>) {
  // expected-error @+1 {{attribute 'offset' failed to satisfy constraint: 64-bit signless integer attribute whose value is non-negative}}
  %0 = colossus.pad_columns %x[-64, 192] : tensor<8x64xf32>
  return
}

// -----

func.func @pad_columns_zero_total(%x: tensor<?x?xf32>) {
  // expected-error @+1 {{attribute 'total' failed to satisfy constraint: 64-bit signless integer attribute whose value is positive}}
  %0 = colossus.pad_columns %x[0, 0] : tensor<?x?xf32>
  return
}

// -----

// A negative total does not make an invalid tensor type while the result type
// is inferred; the constraint reports it.
func.func @pad_columns_negative_total(%x: tensor<8x64xf32>) {
  // expected-error @+1 {{attribute 'total' failed to satisfy constraint: 64-bit signless integer attribute whose value is positive}}
  %0 = colossus.pad_columns %x[0, -5] : tensor<8x64xf32>
  return
}

// -----

func.func @pad_columns_rank(%x: tensor<64xf32>) {
  // expected-error @+1 {{'colossus.pad_columns' op x must be a 2-D tensor, got 'tensor<64xf32>'}}
  %0 = colossus.pad_columns %x[0, 192] : tensor<64xf32>
  return
}

// -----

func.func @pad_columns_result_type(%x: tensor<8x64xf32>) {
  // expected-error @+2 {{'colossus.pad_columns' op inferred type(s) 'tensor<8x192xf32>' are incompatible with return type(s) of operation 'tensor<8x64xf32>'}}
  // expected-error @+1 {{'colossus.pad_columns' op failed to infer returned types}}
  %0 = "colossus.pad_columns"(%x) <{offset = 0 : i64, total = 192 : i64}> : (tensor<8x64xf32>) -> tensor<8x64xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// attention_grad
//===----------------------------------------------------------------------===//

func.func @attention_grad_heads_not_divisible(%q: tensor<80x96xf32>, %k: tensor<2x40x64xf32>, %v: tensor<2x40x64xf32>, %pos: tensor<80xi32>, %dout: tensor<80x96xf32>, %out: tensor<80x96xf32>, %lse: tensor<80x6xf32>) {
  // expected-error @+1 {{'colossus.attention_grad' op num_heads (6) must be a multiple of num_kv_heads (4)}}
  %0:3 = colossus.attention_grad %q, %k, %v, %pos, %dout, %out, %lse {num_heads = 6 : i64, num_kv_heads = 4 : i64, head_dim = 16 : i64, scale = 0.25 : f64} : tensor<80x96xf32>, tensor<2x40x64xf32>, tensor<80xi32>, tensor<80x6xf32>
  return
}

// -----

func.func @attention_grad_q_columns(%q: tensor<80x60xf32>, %k: tensor<2x40x32xf32>, %v: tensor<2x40x32xf32>, %pos: tensor<80xi32>, %dout: tensor<80x60xf32>, %out: tensor<80x60xf32>, %lse: tensor<80x4xf32>) {
  // expected-error @+1 {{'colossus.attention_grad' op q has 60 columns, expected num_heads * head_dim = 64}}
  %0:3 = colossus.attention_grad %q, %k, %v, %pos, %dout, %out, %lse {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f64} : tensor<80x60xf32>, tensor<2x40x32xf32>, tensor<80xi32>, tensor<80x4xf32>
  return
}

// -----

// The caches hold num_heads (not num_kv_heads) heads: a GQA mistake.
func.func @attention_grad_k_columns(%q: tensor<80x64xf32>, %k: tensor<2x40x64xf32>, %v: tensor<2x40x64xf32>, %pos: tensor<80xi32>, %dout: tensor<80x64xf32>, %out: tensor<80x64xf32>, %lse: tensor<80x4xf32>) {
  // expected-error @+1 {{'colossus.attention_grad' op k has 64 columns, expected num_kv_heads * head_dim = 32}}
  %0:3 = colossus.attention_grad %q, %k, %v, %pos, %dout, %out, %lse {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f64} : tensor<80x64xf32>, tensor<2x40x64xf32>, tensor<80xi32>, tensor<80x4xf32>
  return
}

// -----

func.func @attention_grad_q_k_element_type(%q: tensor<80x64xf32>, %k: tensor<2x40x32xbf16>, %v: tensor<2x40x32xbf16>, %pos: tensor<80xi32>, %dout: tensor<80x64xf32>, %out: tensor<80x64xf32>, %lse: tensor<80x4xf32>) {
  // expected-error @+1 {{'colossus.attention_grad' op q and k must have the same element type}}
  %0:3 = colossus.attention_grad %q, %k, %v, %pos, %dout, %out, %lse {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f64} : tensor<80x64xf32>, tensor<2x40x32xbf16>, tensor<80xi32>, tensor<80x4xf32>
  return
}

// -----

func.func @attention_grad_positions(%q: tensor<80x64xf32>, %k: tensor<2x40x32xf32>, %v: tensor<2x40x32xf32>, %pos: tensor<40xi32>, %dout: tensor<80x64xf32>, %out: tensor<80x64xf32>, %lse: tensor<80x4xf32>) {
  // expected-error @+1 {{'colossus.attention_grad' op positions must have one entry per row of q}}
  %0:3 = colossus.attention_grad %q, %k, %v, %pos, %dout, %out, %lse {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f64} : tensor<80x64xf32>, tensor<2x40x32xf32>, tensor<40xi32>, tensor<80x4xf32>
  return
}

// -----

func.func @attention_grad_sliding_window(%q: tensor<80x64xf32>, %k: tensor<2x40x32xf32>, %v: tensor<2x40x32xf32>, %pos: tensor<80xi32>, %dout: tensor<80x64xf32>, %out: tensor<80x64xf32>, %lse: tensor<80x4xf32>) {
  // expected-error @+1 {{'colossus.attention_grad' op sliding_window must be >= 0}}
  %0:3 = colossus.attention_grad %q, %k, %v, %pos, %dout, %out, %lse {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f64, sliding_window = -1 : i64} : tensor<80x64xf32>, tensor<2x40x32xf32>, tensor<80xi32>, tensor<80x4xf32>
  return
}

// -----

func.func @attention_grad_scale(%q: tensor<80x64xf32>, %k: tensor<2x40x32xf32>, %v: tensor<2x40x32xf32>, %pos: tensor<80xi32>, %dout: tensor<80x64xf32>, %out: tensor<80x64xf32>, %lse: tensor<80x4xf32>) {
  // expected-error @+1 {{'colossus.attention_grad' op scale must be positive}}
  %0:3 = colossus.attention_grad %q, %k, %v, %pos, %dout, %out, %lse {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = -0.25 : f64} : tensor<80x64xf32>, tensor<2x40x32xf32>, tensor<80xi32>, tensor<80x4xf32>
  return
}

// -----

// NaN is not positive.
func.func @attention_grad_scale_nan(%q: tensor<80x64xf32>, %k: tensor<2x40x32xf32>, %v: tensor<2x40x32xf32>, %pos: tensor<80xi32>, %dout: tensor<80x64xf32>, %out: tensor<80x64xf32>, %lse: tensor<80x4xf32>) {
  // expected-error @+1 {{'colossus.attention_grad' op scale must be positive}}
  %0:3 = colossus.attention_grad %q, %k, %v, %pos, %dout, %out, %lse {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0x7FF8000000000000 : f64} : tensor<80x64xf32>, tensor<2x40x32xf32>, tensor<80xi32>, tensor<80x4xf32>
  return
}

// -----

// A dynamic dimension is accepted where it cannot be checked; the static
// ones still are.
func.func @attention_grad_dynamic(%q: tensor<?x64xf32>, %k: tensor<?x?x64xf32>, %v: tensor<?x?x64xf32>, %pos: tensor<?xi32>, %dout: tensor<?x64xf32>, %out: tensor<?x64xf32>, %lse: tensor<?x4xf32>) {
  // expected-error @+1 {{'colossus.attention_grad' op k has 64 columns, expected num_kv_heads * head_dim = 32}}
  %0:3 = colossus.attention_grad %q, %k, %v, %pos, %dout, %out, %lse {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f64} : tensor<?x64xf32>, tensor<?x?x64xf32>, tensor<?xi32>, tensor<?x4xf32>
  return
}

// -----

func.func @attention_grad_zero_head_dim(%q: tensor<80x64xf32>, %k: tensor<2x40x32xf32>, %v: tensor<2x40x32xf32>, %pos: tensor<80xi32>, %dout: tensor<80x64xf32>, %out: tensor<80x64xf32>, %lse: tensor<80x4xf32>) {
  // expected-error @+1 {{attribute 'head_dim' failed to satisfy constraint: 64-bit signless integer attribute whose value is positive}}
  %0:3 = colossus.attention_grad %q, %k, %v, %pos, %dout, %out, %lse {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 0 : i64, scale = 0.25 : f64} : tensor<80x64xf32>, tensor<2x40x32xf32>, tensor<80xi32>, tensor<80x4xf32>
  return
}

// -----

func.func @attention_grad_no_scale(%q: tensor<80x64xf32>, %k: tensor<2x40x32xf32>, %v: tensor<2x40x32xf32>, %pos: tensor<80xi32>, %dout: tensor<80x64xf32>, %out: tensor<80x64xf32>, %lse: tensor<80x4xf32>) {
  // expected-error @+1 {{'colossus.attention_grad' op requires attribute 'scale'}}
  %0:3 = colossus.attention_grad %q, %k, %v, %pos, %dout, %out, %lse {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : tensor<80x64xf32>, tensor<2x40x32xf32>, tensor<80xi32>, tensor<80x4xf32>
  return
}

// -----

// The custom form has one type for k and v, and one for q, dout and out; the
// generic form can say two, and the AllTypesMatch constraints reject them
// before the verifier.
func.func @attention_grad_k_v_mismatch(%q: tensor<80x64xf32>, %k: tensor<2x40x32xf32>, %v: tensor<2x48x32xf32>, %pos: tensor<80xi32>, %dout: tensor<80x64xf32>, %out: tensor<80x64xf32>, %lse: tensor<80x4xf32>) {
  // expected-error @+1 {{'colossus.attention_grad' op failed to verify that all of {k, v} have same type}}
  %0:3 = "colossus.attention_grad"(%q, %k, %v, %pos, %dout, %out, %lse) <{num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f64}> : (tensor<80x64xf32>, tensor<2x40x32xf32>, tensor<2x48x32xf32>, tensor<80xi32>, tensor<80x64xf32>, tensor<80x64xf32>, tensor<80x4xf32>) -> (tensor<80x64xf32>, tensor<2x40x32xf32>, tensor<2x40x32xf32>)
  return
}

// -----

func.func @attention_grad_q_dout_mismatch(%q: tensor<80x64xf32>, %k: tensor<2x40x32xf32>, %v: tensor<2x40x32xf32>, %pos: tensor<80xi32>, %dout: tensor<80x64xbf16>, %out: tensor<80x64xf32>, %lse: tensor<80x4xf32>) {
  // expected-error @+1 {{'colossus.attention_grad' op failed to verify that all of {q, dout, out} have same type}}
  %0:3 = "colossus.attention_grad"(%q, %k, %v, %pos, %dout, %out, %lse) <{num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f64}> : (tensor<80x64xf32>, tensor<2x40x32xf32>, tensor<2x40x32xf32>, tensor<80xi32>, tensor<80x64xbf16>, tensor<80x64xf32>, tensor<80x4xf32>) -> (tensor<80x64xf32>, tensor<2x40x32xf32>, tensor<2x40x32xf32>)
  return
}

// -----

func.func @attention_grad_k_rank(%q: tensor<80x64xf32>, %k: tensor<40x32xf32>, %v: tensor<40x32xf32>, %pos: tensor<80xi32>, %dout: tensor<80x64xf32>, %out: tensor<80x64xf32>, %lse: tensor<80x4xf32>) {
  // expected-error @+1 {{'colossus.attention_grad' op operand #1 must be 3D tensor of floating-point values, but got 'tensor<40x32xf32>'}}
  %0:3 = colossus.attention_grad %q, %k, %v, %pos, %dout, %out, %lse {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f64} : tensor<80x64xf32>, tensor<40x32xf32>, tensor<80xi32>, tensor<80x4xf32>
  return
}

// -----

func.func @attention_grad_result_type(%q: tensor<80x64xf32>, %k: tensor<2x40x32xf32>, %v: tensor<2x40x32xf32>, %pos: tensor<80xi32>, %dout: tensor<80x64xf32>, %out: tensor<80x64xf32>, %lse: tensor<80x4xf32>) {
  // expected-error @+2 {{'colossus.attention_grad' op inferred type(s) 'tensor<80x64xf32>', 'tensor<2x40x32xf32>', 'tensor<2x40x32xf32>' are incompatible with return type(s) of operation 'tensor<80x64xf32>', 'tensor<2x40x32xf32>', 'tensor<2x80x32xf32>'}}
  // expected-error @+1 {{'colossus.attention_grad' op failed to infer returned types}}
  %0:3 = "colossus.attention_grad"(%q, %k, %v, %pos, %dout, %out, %lse) <{num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f64}> : (tensor<80x64xf32>, tensor<2x40x32xf32>, tensor<2x40x32xf32>, tensor<80xi32>, tensor<80x64xf32>, tensor<80x64xf32>, tensor<80x4xf32>) -> (tensor<80x64xf32>, tensor<2x40x32xf32>, tensor<2x80x32xf32>)
  return
}

// -----

//===----------------------------------------------------------------------===//
// adamw
//===----------------------------------------------------------------------===//

func.func @adamw_not_f32(%p: tensor<32x64xbf16>, %h: tensor<4xf32>) {
  // expected-error @+1 {{'colossus.adamw' op parameters and optimizer state must be f32}}
  %0:3 = colossus.adamw %p, %p, %p, %p, %h {beta1 = 0.9 : f64, beta2 = 0.999 : f64, eps = 1.0e-08 : f64, weight_decay = 0.01 : f64} : tensor<32x64xbf16>, tensor<4xf32>
  return
}

// -----

func.func @adamw_hyper_size(%p: tensor<32x64xf32>, %h: tensor<3xf32>) {
  // expected-error @+1 {{'colossus.adamw' op hyper must hold 4 values: lr, 1 - beta1^t, 1 - beta2^t, grad_scale}}
  %0:3 = colossus.adamw %p, %p, %p, %p, %h {beta1 = 0.9 : f64, beta2 = 0.999 : f64, eps = 1.0e-08 : f64, weight_decay = 0.01 : f64} : tensor<32x64xf32>, tensor<3xf32>
  return
}

// -----

func.func @adamw_hyper_type(%p: tensor<32x64xf32>, %h: tensor<4xf16>) {
  // expected-error @+1 {{'colossus.adamw' op operand #4 must be 1D tensor of 32-bit float values, but got 'tensor<4xf16>'}}
  %0:3 = colossus.adamw %p, %p, %p, %p, %h {beta1 = 0.9 : f64, beta2 = 0.999 : f64, eps = 1.0e-08 : f64, weight_decay = 0.01 : f64} : tensor<32x64xf32>, tensor<4xf16>
  return
}

// -----

func.func @adamw_hyper_rank(%p: tensor<32x64xf32>, %h: tensor<1x4xf32>) {
  // expected-error @+1 {{'colossus.adamw' op operand #4 must be 1D tensor of 32-bit float values, but got 'tensor<1x4xf32>'}}
  %0:3 = colossus.adamw %p, %p, %p, %p, %h {beta1 = 0.9 : f64, beta2 = 0.999 : f64, eps = 1.0e-08 : f64, weight_decay = 0.01 : f64} : tensor<32x64xf32>, tensor<1x4xf32>
  return
}

// -----

func.func @adamw_beta1_one(%p: tensor<32x64xf32>, %h: tensor<4xf32>) {
  // expected-error @+1 {{'colossus.adamw' op beta1 and beta2 must be in [0, 1)}}
  %0:3 = colossus.adamw %p, %p, %p, %p, %h {beta1 = 1.0 : f64, beta2 = 0.999 : f64, eps = 1.0e-08 : f64, weight_decay = 0.01 : f64} : tensor<32x64xf32>, tensor<4xf32>
  return
}

// -----

func.func @adamw_beta2_negative(%p: tensor<32x64xf32>, %h: tensor<4xf32>) {
  // expected-error @+1 {{'colossus.adamw' op beta1 and beta2 must be in [0, 1)}}
  %0:3 = colossus.adamw %p, %p, %p, %p, %h {beta1 = 0.9 : f64, beta2 = -0.5 : f64, eps = 1.0e-08 : f64, weight_decay = 0.01 : f64} : tensor<32x64xf32>, tensor<4xf32>
  return
}

// -----

func.func @adamw_beta2_nan(%p: tensor<32x64xf32>, %h: tensor<4xf32>) {
  // expected-error @+1 {{'colossus.adamw' op beta1 and beta2 must be in [0, 1)}}
  %0:3 = colossus.adamw %p, %p, %p, %p, %h {beta1 = 0.9 : f64, beta2 = 0x7FF8000000000000 : f64, eps = 1.0e-08 : f64, weight_decay = 0.01 : f64} : tensor<32x64xf32>, tensor<4xf32>
  return
}

// -----

func.func @adamw_eps_zero(%p: tensor<32x64xf32>, %h: tensor<4xf32>) {
  // expected-error @+1 {{'colossus.adamw' op eps must be positive}}
  %0:3 = colossus.adamw %p, %p, %p, %p, %h {beta1 = 0.9 : f64, beta2 = 0.999 : f64, eps = 0.0 : f64, weight_decay = 0.01 : f64} : tensor<32x64xf32>, tensor<4xf32>
  return
}

// -----

func.func @adamw_weight_decay_negative(%p: tensor<32x64xf32>, %h: tensor<4xf32>) {
  // expected-error @+1 {{'colossus.adamw' op weight_decay must be >= 0}}
  %0:3 = colossus.adamw %p, %p, %p, %p, %h {beta1 = 0.9 : f64, beta2 = 0.999 : f64, eps = 1.0e-08 : f64, weight_decay = -0.01 : f64} : tensor<32x64xf32>, tensor<4xf32>
  return
}

// -----

func.func @adamw_weight_decay_nan(%p: tensor<32x64xf32>, %h: tensor<4xf32>) {
  // expected-error @+1 {{'colossus.adamw' op weight_decay must be >= 0}}
  %0:3 = colossus.adamw %p, %p, %p, %p, %h {beta1 = 0.9 : f64, beta2 = 0.999 : f64, eps = 1.0e-08 : f64, weight_decay = 0x7FF8000000000000 : f64} : tensor<32x64xf32>, tensor<4xf32>
  return
}

// -----

func.func @adamw_missing_attribute(%p: tensor<32x64xf32>, %h: tensor<4xf32>) {
  // expected-error @+1 {{'colossus.adamw' op requires attribute 'weight_decay'}}
  %0:3 = colossus.adamw %p, %p, %p, %p, %h {beta1 = 0.9 : f64, beta2 = 0.999 : f64, eps = 1.0e-08 : f64} : tensor<32x64xf32>, tensor<4xf32>
  return
}

// -----

// The custom form has one type for the parameter, its gradient and its
// state; the generic form can say several, and AllTypesMatch rejects them.
func.func @adamw_grad_mismatch(%p: tensor<32x64xf32>, %g: tensor<64x32xf32>, %h: tensor<4xf32>) {
  // expected-error @+1 {{'colossus.adamw' op failed to verify that all of {param, grad, exp_avg, exp_avg_sq} have same type}}
  %0:3 = "colossus.adamw"(%p, %g, %p, %p, %h) <{beta1 = 0.9 : f64, beta2 = 0.999 : f64, eps = 1.0e-08 : f64, weight_decay = 0.01 : f64}> : (tensor<32x64xf32>, tensor<64x32xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<4xf32>) -> (tensor<32x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>)
  return
}

// -----

func.func @adamw_state_mismatch(%p: tensor<32x64xf32>, %m: tensor<32x64xbf16>, %h: tensor<4xf32>) {
  // expected-error @+1 {{'colossus.adamw' op failed to verify that all of {param, grad, exp_avg, exp_avg_sq} have same type}}
  %0:3 = "colossus.adamw"(%p, %p, %p, %m, %h) <{beta1 = 0.9 : f64, beta2 = 0.999 : f64, eps = 1.0e-08 : f64, weight_decay = 0.01 : f64}> : (tensor<32x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<32x64xbf16>, tensor<4xf32>) -> (tensor<32x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>)
  return
}

// -----

func.func @adamw_param_unranked(%p: tensor<*xf32>, %h: tensor<4xf32>) {
  // expected-error @+1 {{'colossus.adamw' op operand #0 must be ranked tensor of any type values, but got 'tensor<*xf32>'}}
  %0:3 = "colossus.adamw"(%p, %p, %p, %p, %h) <{beta1 = 0.9 : f64, beta2 = 0.999 : f64, eps = 1.0e-08 : f64, weight_decay = 0.01 : f64}> : (tensor<*xf32>, tensor<*xf32>, tensor<*xf32>, tensor<*xf32>, tensor<4xf32>) -> (tensor<*xf32>, tensor<*xf32>, tensor<*xf32>)
  return
}

// -----

func.func @adamw_result_type(%p: tensor<32x64xf32>, %h: tensor<4xf32>) {
  // expected-error @+2 {{'colossus.adamw' op inferred type(s) 'tensor<32x64xf32>', 'tensor<32x64xf32>', 'tensor<32x64xf32>' are incompatible with return type(s) of operation 'tensor<32x64xf32>', 'tensor<32x64xf32>', 'tensor<64x32xf32>'}}
  // expected-error @+1 {{'colossus.adamw' op failed to infer returned types}}
  %0:3 = "colossus.adamw"(%p, %p, %p, %p, %h) <{beta1 = 0.9 : f64, beta2 = 0.999 : f64, eps = 1.0e-08 : f64, weight_decay = 0.01 : f64}> : (tensor<32x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<4xf32>) -> (tensor<32x64xf32>, tensor<32x64xf32>, tensor<64x32xf32>)
  return
}

// -----

//===----------------------------------------------------------------------===//
// rope: inverse
//===----------------------------------------------------------------------===//

func.func @rope_inverse_not_bool(%x: tensor<8x64xf32>, %pos: tensor<8xi32>) {
  // expected-error @+1 {{attribute 'inverse' failed to satisfy constraint: bool attribute}}
  %0 = colossus.rope %x, %pos {head_dim = 16 : i64, layout = #colossus<rope_layout rotate_half>, theta = 10000.0 : f64, inverse = 1 : i64} : tensor<8x64xf32>, tensor<8xi32>
  return
}

// -----

// inverse changes the angle, not the checks.
func.func @rope_inverse_head_dim_columns(%x: tensor<8x60xf32>, %pos: tensor<8xi32>) {
  // expected-error @+1 {{'colossus.rope' op columns (60) must be a multiple of head_dim (16)}}
  %0 = colossus.rope %x, %pos {head_dim = 16 : i64, layout = #colossus<rope_layout rotate_half>, theta = 10000.0 : f64, inverse = true} : tensor<8x60xf32>, tensor<8xi32>
  return
}

// -----

func.func @attention_grad_lse_shape(%q: tensor<80x64xf32>, %k: tensor<2x40x32xf32>, %v: tensor<2x40x32xf32>, %pos: tensor<80xi32>, %dout: tensor<80x64xf32>, %out: tensor<80x64xf32>, %lse: tensor<80x2xf32>) {
  // expected-error @+1 {{'colossus.attention_grad' op lse must be [rows of q, num_heads] (80x4)}}
  %0:3 = colossus.attention_grad %q, %k, %v, %pos, %dout, %out, %lse {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f64} : tensor<80x64xf32>, tensor<2x40x32xf32>, tensor<80xi32>, tensor<80x2xf32>
  return
}

// -----

func.func @global_norm_hyper_size(%h: tensor<4xf32>, %a: tensor<8xf32>) {
  // expected-error @+1 {{'colossus.global_norm' op hyper must hold 5 values: lr, 1 - beta1^t, 1 - beta2^t, max_norm, grad_scale}}
  %0 = colossus.global_norm %h, %a : tensor<4xf32>, tensor<8xf32>
  return
}

// -----

func.func @attention_grad_lse_f32(%q: tensor<80x64xf32>, %k: tensor<2x40x32xf32>, %v: tensor<2x40x32xf32>, %pos: tensor<80xi32>, %dout: tensor<80x64xf32>, %out: tensor<80x64xf32>, %lse: tensor<80x4xbf16>) {
  // expected-error @+1 {{'colossus.attention_grad' op operand #6 must be 2D tensor of 32-bit float values, but got 'tensor<80x4xbf16>'}}
  %0:3 = colossus.attention_grad %q, %k, %v, %pos, %dout, %out, %lse {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f64} : tensor<80x64xf32>, tensor<2x40x32xf32>, tensor<80xi32>, tensor<80x4xbf16>
  return
}

// -----

func.func @global_norm_no_tensors(%h: tensor<5xf32>) {
  // expected-error @+1 {{'colossus.global_norm' op needs at least one tensor}}
  %0 = "colossus.global_norm"(%h) : (tensor<5xf32>) -> tensor<1xf32>
  return
}

// -----

// The generic form can state an lse result the attribute does not ask for.
func.func @attention_lse_without_save_lse(%q: tensor<80x64xf32>, %k: tensor<2x40x32xf32>, %v: tensor<2x40x32xf32>, %pos: tensor<80xi32>) {
  // expected-error @+1 {{'colossus.attention' op has an lse result if and only if save_lse is set}}
  %0:2 = "colossus.attention"(%q, %k, %v, %pos) <{causal = true, head_dim = 16 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, scale = 2.500000e-01 : f64, sliding_window = 0 : i64}> : (tensor<80x64xf32>, tensor<2x40x32xf32>, tensor<2x40x32xf32>, tensor<80xi32>) -> (tensor<80x64xf32>, tensor<80x4xf32>)
  return
}

// -----

func.func @attention_lse_shape(%q: tensor<80x64xf32>, %k: tensor<2x40x32xf32>, %v: tensor<2x40x32xf32>, %pos: tensor<80xi32>) {
  // expected-error @+1 {{'colossus.attention' op lse must be [rows of q, num_heads] (80x4)}}
  %0:2 = "colossus.attention"(%q, %k, %v, %pos) <{causal = true, head_dim = 16 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, save_lse, scale = 2.500000e-01 : f64, sliding_window = 0 : i64}> : (tensor<80x64xf32>, tensor<2x40x32xf32>, tensor<2x40x32xf32>, tensor<80xi32>) -> (tensor<80x64xf32>, tensor<80x8xf32>)
  return
}

// -----

func.func @cross_entropy_rows_targets(%logits: tensor<8x256xf32>, %targets: tensor<16xi32>, %dloss: tensor<f32>) {
  // expected-error @+1 {{'colossus.cross_entropy_rows' op logits and targets must have the same number of rows (8 vs 16)}}
  %0:2 = colossus.cross_entropy_rows %logits, %targets, %dloss : tensor<8x256xf32>, tensor<16xi32>, tensor<f32>
  return
}

// -----

func.func @cross_entropy_rows_f32(%logits: tensor<8x256xbf16>, %targets: tensor<8xi32>, %dloss: tensor<f32>) {
  // expected-error @+1 {{'colossus.cross_entropy_rows' op operand #0 must be 2D tensor of 32-bit float values, but got 'tensor<8x256xbf16>'}}
  %0:2 = colossus.cross_entropy_rows %logits, %targets, %dloss : tensor<8x256xbf16>, tensor<8xi32>, tensor<f32>
  return
}

// -----

func.func @row_sum_rank(%x: tensor<8x2xf32>) {
  // expected-error @+1 {{'colossus.row_sum' op operand #0 must be 1D tensor of 32-bit float values, but got 'tensor<8x2xf32>'}}
  %0 = colossus.row_sum %x : tensor<8x2xf32>
  return
}

// -----

func.func @clip_hyper_size(%h: tensor<4xf32>, %n: tensor<1xf32>) {
  // expected-error @+1 {{'colossus.clip_hyper' op hyper_in must hold 5 values: lr, 1 - beta1^t, 1 - beta2^t, max_norm, grad_scale}}
  %0 = colossus.clip_hyper %h, %n : tensor<4xf32>, tensor<1xf32>
  return
}
