// RUN: %colossus-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(colossus-fuse))' | FileCheck %s

// A linear with a residual add: one gemm kernel with the add as epilogue.
// CHECK-LABEL: func.func @gemm_residual
// CHECK: %[[F:.*]] = colossus.fusion "gemm"(%{{.*}}, %{{.*}}, %{{.*}}) : (tensor<8x16xf32>, tensor<32x16xf32>, tensor<8x32xf32>) -> tensor<8x32xf32>
// CHECK:   colossus.linear
// CHECK:   colossus.add
// CHECK:   colossus.yield
// CHECK-NOT: colossus.fusion
// CHECK: return %[[F]]
func.func @gemm_residual(%x: tensor<8x16xf32>, %w: tensor<32x16xf32>, %r: tensor<8x32xf32>) -> tensor<8x32xf32> {
  %0 = colossus.linear %x, %w : tensor<8x16xf32>, tensor<32x16xf32>
  %1 = colossus.add %0, %r : tensor<8x32xf32>
  return %1 : tensor<8x32xf32>
}

// -----

// Gate and up projections feeding swiglu: one dual-GEMM kernel.
// CHECK-LABEL: func.func @dual_gemm
// CHECK: colossus.fusion "gemm"
// CHECK-COUNT-2: colossus.linear
// CHECK: colossus.swiglu
// CHECK: colossus.yield
// CHECK-NOT: colossus.fusion
func.func @dual_gemm(%x: tensor<8x16xf32>, %wg: tensor<24x16xf32>, %wu: tensor<24x16xf32>) -> tensor<8x24xf32> {
  %g = colossus.linear %x, %wg : tensor<8x16xf32>, tensor<24x16xf32>
  %u = colossus.linear %x, %wu : tensor<8x16xf32>, tensor<24x16xf32>
  %s = colossus.swiglu %g, %u : tensor<8x24xf32>
  return %s : tensor<8x24xf32>
}

// -----

// A norm reads whole rows: its kernel starts a new group, and the linear
// that reads the norm's output is a kernel of its own.
// CHECK-LABEL: func.func @norm_then_linear
// CHECK: %[[N:.*]] = colossus.fusion "norm"
// CHECK:   colossus.rms_norm
// CHECK: colossus.fusion "gemm"(%[[N]],
// CHECK:   colossus.linear
// CHECK:   colossus.gelu
func.func @norm_then_linear(%x: tensor<8x16xf32>, %g: tensor<16xf32>, %w: tensor<32x16xf32>, %b: tensor<32xf32>) -> tensor<8x32xf32> {
  %0 = colossus.rms_norm %x, %g eps = 1.0e-05 : tensor<8x16xf32>, tensor<16xf32>
  %1 = colossus.linear %0, %w bias %b : tensor<8x16xf32>, tensor<32x16xf32>, tensor<32xf32>
  %2 = colossus.gelu %1 {approximate = #colossus<gelu_approx tanh>} : tensor<8x32xf32>
  return %2 : tensor<8x32xf32>
}

// -----

// A chain of elementwise ops is one kernel; the value used outside the chain
// is a second result.
// CHECK-LABEL: func.func @elementwise_chain
// CHECK: %[[F:.*]]:2 = colossus.fusion "elementwise"
// CHECK:   colossus.add
// CHECK:   colossus.silu
// CHECK:   colossus.mul
// CHECK: return %[[F]]#1, %[[F]]#0
func.func @elementwise_chain(%a: tensor<8x16xf32>, %b: tensor<8x16xf32>) -> (tensor<8x16xf32>, tensor<8x16xf32>) {
  %0 = colossus.add %a, %b : tensor<8x16xf32>
  %1 = colossus.silu %0 : tensor<8x16xf32>
  %2 = colossus.mul %1, %a : tensor<8x16xf32>
  return %2, %0 : tensor<8x16xf32>, tensor<8x16xf32>
}

// -----

// Attention is a kernel of its own; positions are cloned into every group
// that reads them; rope of the keys fuses with the cache writes of keys and
// values.
// CHECK-LABEL: func.func @attention_block
// CHECK-NOT: colossus.positions 8
// CHECK: %[[Q:.*]] = colossus.fusion "rope"(%{{[^,]*}}) :
// CHECK:   colossus.positions 8
// CHECK:   colossus.rope
// CHECK: %[[C:.*]]:2 = colossus.fusion "rope"
// CHECK:   colossus.positions 8
// CHECK:   colossus.rope
// CHECK:   colossus.cache_write
// CHECK:   colossus.cache_write
// CHECK: %[[A:.*]] = colossus.fusion "attention"(%[[Q]], %[[C]]#0, %[[C]]#1)
// CHECK:   colossus.positions 8
// CHECK:   colossus.attention
// CHECK: return %[[A]]
func.func @attention_block(%q: tensor<8x32xf32>, %k: tensor<8x16xf32>, %v: tensor<8x16xf32>, %kc: tensor<1x8x16xf32>, %vc: tensor<1x8x16xf32>) -> tensor<8x32xf32> {
  %pos = colossus.positions 8
  %qr = colossus.rope %q, %pos {head_dim = 8 : i64, theta = 10000.0 : f64, layout = #colossus<rope_layout rotate_half>} : tensor<8x32xf32>, tensor<8xi32>
  %kr = colossus.rope %k, %pos {head_dim = 8 : i64, theta = 10000.0 : f64, layout = #colossus<rope_layout rotate_half>} : tensor<8x16xf32>, tensor<8xi32>
  %kc2 = colossus.cache_write %kc[%pos], %kr : tensor<1x8x16xf32>, tensor<8x16xf32>, tensor<8xi32>
  %vc2 = colossus.cache_write %vc[%pos], %v : tensor<1x8x16xf32>, tensor<8x16xf32>, tensor<8xi32>
  %a = colossus.attention %qr, %kc2, %vc2, %pos {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 8 : i64, scale = 0.35355339 : f64} : tensor<8x32xf32>, tensor<1x8x16xf32>, tensor<1x8x16xf32>, tensor<8xi32>
  return %a : tensor<8x32xf32>
}

// -----

// A value with a user that comes before the would-be epilogue is not fused:
// the add would have to run before the norm that needs the linear's result.
// CHECK-LABEL: func.func @no_fusion_across_users
// CHECK: %[[L:.*]] = colossus.fusion "gemm"
// CHECK-NEXT:   ^bb0
// CHECK-NEXT:   colossus.linear
// CHECK-NEXT:   colossus.yield
// CHECK: colossus.fusion "norm"(%[[L]],
// CHECK: colossus.fusion "elementwise"
func.func @no_fusion_across_users(%x: tensor<8x16xf32>, %w: tensor<16x16xf32>, %g: tensor<16xf32>) -> (tensor<8x16xf32>, tensor<8x16xf32>) {
  %0 = colossus.linear %x, %w : tensor<8x16xf32>, tensor<16x16xf32>
  %1 = colossus.rms_norm %0, %g eps = 1.0e-05 : tensor<8x16xf32>, tensor<16xf32>
  %2 = colossus.add %0, %1 : tensor<8x16xf32>
  return %1, %2 : tensor<8x16xf32>, tensor<8x16xf32>
}

// -----

// Norm (+ residual add): a residual add that no GEMM epilogue took joins the
// norm that reads it; the sum is a second result of the row kernel.
// CHECK-LABEL: func.func @norm_residual
// CHECK: %[[F:.*]]:2 = colossus.fusion "norm"(%{{.*}}, %{{.*}}, %{{.*}})
// CHECK:   colossus.add
// CHECK:   colossus.rms_norm
// CHECK: return %[[F]]#1, %[[F]]#0
func.func @norm_residual(%a: tensor<8x16xf32>, %b: tensor<8x16xf32>, %g: tensor<16xf32>) -> (tensor<8x16xf32>, tensor<8x16xf32>) {
  %0 = colossus.add %a, %b : tensor<8x16xf32>
  %1 = colossus.rms_norm %0, %g eps = 1.0e-05 : tensor<8x16xf32>, tensor<16xf32>
  return %1, %0 : tensor<8x16xf32>, tensor<8x16xf32>
}

// -----

// The loss and its gradient of the same logits: one row kernel for the
// per-row loss terms and dlogits (cross_entropy_rows), then the sum of the
// terms (row_sum); the original ops are gone.
// CHECK-LABEL: func.func @loss_with_grad
// CHECK: %[[G:.*]]:2 = colossus.fusion "loss_grad"(%{{.*}}, %{{.*}}) : (tensor<8x32xf32>, tensor<8xi32>) -> (tensor<8xf32>, tensor<8x32xf32>)
// CHECK:   arith.constant
// CHECK:   colossus.cross_entropy_rows
// CHECK: %[[L:.*]] = colossus.fusion "loss"(%[[G]]#0) : (tensor<8xf32>) -> tensor<f32>
// CHECK:   colossus.row_sum
// CHECK-NOT: colossus.cross_entropy
// CHECK: return %[[L]], %[[G]]#1
func.func @loss_with_grad(%x: tensor<8x32xf32>, %t: tensor<8xi32>) -> (tensor<f32>, tensor<8x32xf32>) {
  %l = colossus.cross_entropy %x, %t : tensor<8x32xf32>, tensor<8xi32>
  %one = arith.constant dense<1.0> : tensor<f32>
  %g = colossus.cross_entropy_grad %x, %t, %one : tensor<8x32xf32>, tensor<8xi32>, tensor<f32>
  return %l, %g : tensor<f32>, tensor<8x32xf32>
}

// -----

// Mixed precision: autodiff rounds dlogits to bf16 for the output
// projection's backward GEMMs. The conversion (moved next to the row kernel,
// before the loss sum) joins the loss_grad kernel, which stores the bf16
// gradient: no f32 dlogits leave it; the GEMMs read the bf16 result.
// CHECK-LABEL: func.func @loss_with_bf16_grad
// CHECK: %[[G:.*]]:2 = colossus.fusion "loss_grad"(%{{.*}}, %{{.*}}) : (tensor<8x32xf32>, tensor<8xi32>) -> (tensor<8xf32>, tensor<8x32xbf16>)
// CHECK:   %[[TERMS:.*]], %[[DL:.*]] = colossus.cross_entropy_rows
// CHECK:   %[[DLB:.*]] = colossus.convert %[[DL]] to bf16 : tensor<8x32xf32>
// CHECK:   colossus.yield %[[TERMS]], %[[DLB]] : tensor<8xf32>, tensor<8x32xbf16>
// CHECK: %[[L:.*]] = colossus.fusion "loss"(%[[G]]#0) : (tensor<8xf32>) -> tensor<f32>
// CHECK: colossus.fusion "gemm"(%[[G]]#1, %{{.*}}) : (tensor<8x32xbf16>, tensor<32x16xbf16>) -> tensor<8x16xbf16>
// CHECK: colossus.fusion "reduce"(%{{.*}}, %[[G]]#1) : (tensor<8x16xbf16>, tensor<8x32xbf16>) -> tensor<32x16xf32>
// CHECK-NOT: colossus.fusion "elementwise"
// CHECK: return %[[L]],
func.func @loss_with_bf16_grad(%x: tensor<8x32xf32>, %t: tensor<8xi32>, %h: tensor<8x16xbf16>, %w: tensor<32x16xbf16>) -> (tensor<f32>, tensor<8x16xbf16>, tensor<32x16xf32>) {
  %l = colossus.cross_entropy %x, %t : tensor<8x32xf32>, tensor<8xi32>
  %one = arith.constant dense<1.0> : tensor<f32>
  %g = colossus.cross_entropy_grad %x, %t, %one : tensor<8x32xf32>, tensor<8xi32>, tensor<f32>
  %gb = colossus.convert %g to bf16 : tensor<8x32xf32>
  %dh = colossus.linear %gb, %w {transpose_w = false} : tensor<8x32xbf16>, tensor<32x16xbf16>
  %dw = colossus.linear_weight_grad %h, %gb : tensor<8x16xbf16>, tensor<8x32xbf16>
  return %l, %dh, %dw : tensor<f32>, tensor<8x16xbf16>, tensor<32x16xf32>
}

// -----

// f32 dlogits read by something else too: the row kernel stores them in f32
// and the conversion is an elementwise kernel of its own.
// CHECK-LABEL: func.func @loss_with_grad_used_twice
// CHECK: %[[G:.*]]:2 = colossus.fusion "loss_grad"(%{{.*}}, %{{.*}}) : (tensor<8x32xf32>, tensor<8xi32>) -> (tensor<8xf32>, tensor<8x32xf32>)
// CHECK-NOT: colossus.convert
// CHECK: colossus.fusion "elementwise"(%[[G]]#1) : (tensor<8x32xf32>) -> tensor<8x32xbf16>
// CHECK:   colossus.convert
func.func @loss_with_grad_used_twice(%x: tensor<8x32xf32>, %t: tensor<8xi32>) -> (tensor<f32>, tensor<8x32xf32>, tensor<8x32xbf16>) {
  %l = colossus.cross_entropy %x, %t : tensor<8x32xf32>, tensor<8xi32>
  %one = arith.constant dense<1.0> : tensor<f32>
  %g = colossus.cross_entropy_grad %x, %t, %one : tensor<8x32xf32>, tensor<8xi32>, tensor<f32>
  %gb = colossus.convert %g to bf16 : tensor<8x32xf32>
  return %l, %g, %gb : tensor<f32>, tensor<8x32xf32>, tensor<8x32xbf16>
}

// -----

// Different ignore indices: not the same loss, left as two kernels.
// CHECK-LABEL: func.func @loss_and_other_grad
// CHECK: colossus.fusion "loss"
// CHECK:   colossus.cross_entropy %
// CHECK: colossus.fusion "loss_grad"
// CHECK:   colossus.cross_entropy_grad
func.func @loss_and_other_grad(%x: tensor<8x32xf32>, %t: tensor<8xi32>, %d: tensor<f32>) -> (tensor<f32>, tensor<8x32xf32>) {
  %l = colossus.cross_entropy %x, %t : tensor<8x32xf32>, tensor<8xi32>
  %g = colossus.cross_entropy_grad %x, %t, %d {ignore_index = 0 : i64} : tensor<8x32xf32>, tensor<8xi32>, tensor<f32>
  return %l, %g : tensor<f32>, tensor<8x32xf32>
}

// -----

// The forward attention with save_lse is one kernel with two results.
// CHECK-LABEL: func.func @attention_lse
// CHECK: %[[A:.*]]:2 = colossus.fusion "attention"(%{{.*}}, %{{.*}}, %{{.*}}) : (tensor<8x32xf32>, tensor<1x8x16xf32>, tensor<1x8x16xf32>) -> (tensor<8x32xf32>, tensor<8x4xf32>)
// CHECK: return %[[A]]#0, %[[A]]#1
func.func @attention_lse(%q: tensor<8x32xf32>, %k: tensor<1x8x16xf32>, %v: tensor<1x8x16xf32>) -> (tensor<8x32xf32>, tensor<8x4xf32>) {
  %pos = colossus.positions 8
  %o, %lse = colossus.attention %q, %k, %v, %pos {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 8 : i64, scale = 0.35355339 : f64, save_lse} : tensor<8x32xf32>, tensor<1x8x16xf32>, tensor<1x8x16xf32>, tensor<8xi32>
  return %o, %lse : tensor<8x32xf32>, tensor<8x4xf32>
}

// -----

// The norm backward with the residual: the dx kernel (a row kernel) also
// sums dx with the residual stream's adjoint; dweight is its own reduction.
// CHECK-LABEL: func.func @norm_grad_residual
// CHECK: colossus.fusion "norm_grad"(%{{.*}}, %{{.*}}, %{{.*}}) : (tensor<8x64xf32>, tensor<64xf32>, tensor<8x64xf32>) -> tensor<64xf32>
// CHECK: colossus.yield %{{.*}} : tensor<64xf32>
// CHECK: %[[DX:.*]] = colossus.fusion "norm_grad"(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}) : (tensor<8x64xf32>, tensor<64xf32>, tensor<8x64xf32>, tensor<8x64xf32>) -> tensor<8x64xf32>
// CHECK: %[[G:.*]], %{{.*}} = colossus.rms_norm_grad
// CHECK-NEXT: %[[S:.*]] = colossus.add %{{.*}}, %[[G]]
// CHECK-NEXT: colossus.yield %[[S]]
// CHECK-NOT: colossus.fusion "elementwise"
// CHECK: return %[[DX]]
func.func @norm_grad_residual(%x: tensor<8x64xf32>, %w: tensor<64xf32>, %dy: tensor<8x64xf32>, %res: tensor<8x64xf32>) -> (tensor<8x64xf32>, tensor<64xf32>) {
  %dx, %dw = colossus.rms_norm_grad %x, %w, %dy eps = 1.0e-05 : tensor<8x64xf32>, tensor<64xf32>
  %0 = colossus.add %res, %dx : tensor<8x64xf32>
  return %0, %dw : tensor<8x64xf32>, tensor<64xf32>
}
