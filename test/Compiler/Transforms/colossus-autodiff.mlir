// RUN: %colossus-opt %s --split-input-file --colossus-autodiff --verify-diagnostics | FileCheck %s

// Linear family (GPT-2 Conv1D layout, with bias) and the loss: dx is a linear
// with the other weight layout, dW a reduction over rows, db a column sum.
// CHECK-LABEL: func.func @loss_grad
// CHECK-SAME: -> (tensor<f32>, tensor<16x32xf32> {colossus.param = "w"}, tensor<32xf32> {colossus.param = "b"})
// CHECK: %[[Y:.*]] = colossus.linear %[[X:.*]], %[[W:.*]] bias %{{.*}} {transpose_w = false}
// CHECK: %[[L:.*]] = colossus.cross_entropy %[[Y]], %[[T:.*]] :
// CHECK: %[[ONE:.*]] = arith.constant dense<1.000000e+00> : tensor<f32>
// CHECK: %[[DY:.*]] = colossus.cross_entropy_grad %[[Y]], %[[T]], %[[ONE]]
// CHECK: colossus.linear %[[DY]], %[[W]] :
// CHECK: %[[DW:.*]] = colossus.linear_weight_grad %[[X]], %[[DY]] {transpose_w = false}
// CHECK: %[[DB:.*]] = colossus.column_sum %[[DY]]
// CHECK: return %[[L]], %[[DW]], %[[DB]]
func.func @loss(%x: tensor<8x16xf32>, %t: tensor<8xi32>,
                %w: tensor<16x32xf32> {colossus.param = "w"},
                %b: tensor<32xf32> {colossus.param = "b"}) -> tensor<f32> {
  %y = colossus.linear %x, %w bias %b {transpose_w = false} : tensor<8x16xf32>, tensor<16x32xf32>, tensor<32xf32>
  %l = colossus.cross_entropy %y, %t : tensor<8x32xf32>, tensor<8xi32>
  return %l : tensor<f32>
}

// -----

// Norm family and elementwise rules; a value used twice sums its adjoints.
// CHECK-LABEL: func.func @loss_grad
// CHECK: %[[H:.*]] = colossus.rms_norm %[[X:[^,]*]], %[[G:[^ ]*]] eps
// CHECK: %[[S:.*]] = colossus.silu %[[H]]
// CHECK: %[[M:.*]] = colossus.mul %[[S]], %[[H]]
// CHECK: colossus.cross_entropy_grad
// CHECK: %[[DS:.*]] = colossus.mul %{{.*}}, %[[H]]
// CHECK: %[[DH1:.*]] = colossus.mul %{{.*}}, %[[S]]
// CHECK: %[[DH2:.*]] = colossus.silu_grad %[[H]], %[[DS]]
// CHECK: %[[DH:.*]] = colossus.add %[[DH1]], %[[DH2]]
// CHECK: %{{.*}}, %[[DG:.*]] = colossus.rms_norm_grad %[[X]], %[[G]], %[[DH]] eps
// CHECK: return %{{.*}}, %[[DG]]
func.func @loss(%x: tensor<8x16xf32>, %t: tensor<8xi32>,
                %g: tensor<16xf32> {colossus.param = "g"}) -> tensor<f32> {
  %h = colossus.rms_norm %x, %g eps = 1.0e-05 : tensor<8x16xf32>, tensor<16xf32>
  %s = colossus.silu %h : tensor<8x16xf32>
  %m = colossus.mul %s, %h : tensor<8x16xf32>
  %l = colossus.cross_entropy %m, %t : tensor<8x16xf32>, tensor<8xi32>
  return %l : tensor<f32>
}

// -----

// LayerNorm, GELU, swiglu, slice.
// CHECK-LABEL: func.func @loss_grad
// CHECK: colossus.swiglu_grad
// CHECK: colossus.pad_columns %{{.*}}[16, 32]
// CHECK: colossus.pad_columns %{{.*}}[0, 32]
// CHECK: colossus.add
// CHECK: colossus.gelu_grad %{{.*}} {approximate = #colossus<gelu_approx tanh>}
// CHECK: %{{.*}}, %[[DW:.*]], %[[DB:.*]] = colossus.layer_norm_grad
// CHECK: return %{{.*}}, %[[DW]], %[[DB]]
func.func @loss(%x: tensor<8x32xf32>, %t: tensor<8xi32>,
                %w: tensor<32xf32> {colossus.param = "w"},
                %b: tensor<32xf32> {colossus.param = "b"}) -> tensor<f32> {
  %h = colossus.layer_norm %x, %w, %b eps = 1.0e-05 : tensor<8x32xf32>, tensor<32xf32>, tensor<32xf32>
  %a = colossus.gelu %h {approximate = #colossus<gelu_approx tanh>} : tensor<8x32xf32>
  %g = colossus.slice %a[0, 16] : tensor<8x32xf32>
  %u = colossus.slice %a[16, 16] : tensor<8x32xf32>
  %s = colossus.swiglu %g, %u : tensor<8x16xf32>
  %l = colossus.cross_entropy %s, %t : tensor<8x16xf32>, tensor<8xi32>
  return %l : tensor<f32>
}

// -----

// Attention family: rope's adjoint is the inverse rotation, attention's is
// attention_grad, and a cache write's is a cache read at the same positions.
// The forward attention (and only it: one op) saves its log-sum-exp, which
// attention_grad reads with the forward output (FlashAttention-2).
// CHECK-LABEL: func.func @loss_grad
// CHECK-NOT: colossus.attention %
// CHECK: %[[O:.*]], %[[LSE:.*]] = colossus.attention %{{.*}} {{{.*}}save_lse{{.*}}} : tensor<8x32xf32>, tensor<1x8x16xf32>, tensor<1x8x16xf32>, tensor<8xi32>
// CHECK-NOT: colossus.attention %
// CHECK: colossus.cross_entropy %[[O]]
// CHECK: %[[DQ:.*]], %[[DK:.*]], %[[DV:.*]] = colossus.attention_grad %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %[[O]], %[[LSE]] {{{.*}}} : tensor<8x32xf32>, tensor<1x8x16xf32>, tensor<8xi32>, tensor<8x4xf32>
// CHECK-DAG: colossus.cache_read %[[DV]][%{{.*}}]
// CHECK-DAG: %[[DKR:.*]] = colossus.cache_read %[[DK]][%{{.*}}]
// CHECK-DAG: colossus.rope %[[DKR]], %{{.*}} {{{.*}}inverse = true
// CHECK-DAG: colossus.rope %[[DQ]], %{{.*}} {{{.*}}inverse = true
func.func @loss(%q: tensor<8x32xf32> {colossus.param = "q"},
                %k: tensor<8x16xf32> {colossus.param = "k"},
                %v: tensor<8x16xf32> {colossus.param = "v"},
                %kc: tensor<1x8x16xf32>, %vc: tensor<1x8x16xf32>,
                %t: tensor<8xi32>) -> tensor<f32> {
  %pos = colossus.positions 8
  %qr = colossus.rope %q, %pos {head_dim = 8 : i64, theta = 10000.0 : f64, layout = #colossus<rope_layout rotate_half>} : tensor<8x32xf32>, tensor<8xi32>
  %kr = colossus.rope %k, %pos {head_dim = 8 : i64, theta = 10000.0 : f64, layout = #colossus<rope_layout rotate_half>} : tensor<8x16xf32>, tensor<8xi32>
  %kc2 = colossus.cache_write %kc[%pos], %kr : tensor<1x8x16xf32>, tensor<8x16xf32>, tensor<8xi32>
  %vc2 = colossus.cache_write %vc[%pos], %v : tensor<1x8x16xf32>, tensor<8x16xf32>, tensor<8xi32>
  %a = colossus.attention %qr, %kc2, %vc2, %pos {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 8 : i64, scale = 0.35355339 : f64} : tensor<8x32xf32>, tensor<1x8x16xf32>, tensor<1x8x16xf32>, tensor<8xi32>
  %l = colossus.cross_entropy %a, %t : tensor<8x32xf32>, tensor<8xi32>
  return %l : tensor<f32>
}

// -----

// Tied embeddings: the table's adjoint sums the embedding's scatter and the
// output projection's weight gradient, in the scatter itself (plus: no
// colossus.add, no kernel of its own for the sum).
// CHECK-LABEL: func.func @loss_grad
// CHECK: %[[DWL:.*]] = colossus.linear_weight_grad
// CHECK-NOT: colossus.add
// CHECK: %[[D:.*]] = colossus.embedding_grad %{{.*}}, %{{.*}} plus %[[DWL]] {vocab_size = 32 : i64} : tensor<8xi32>, tensor<8x16xf32>, tensor<32x16xf32>
// CHECK-NOT: colossus.add
// CHECK: return %{{.*}}, %[[D]]
func.func @loss(%ids: tensor<8xi32>, %t: tensor<8xi32>,
                %e: tensor<32x16xf32> {colossus.param = "wte"}) -> tensor<f32> {
  %x = colossus.embedding %e[%ids] : tensor<32x16xf32>, tensor<8xi32>
  %y = colossus.linear %x, %e : tensor<8x16xf32>, tensor<32x16xf32>
  %l = colossus.cross_entropy %y, %t : tensor<8x32xf32>, tensor<8xi32>
  return %l : tensor<f32>
}

// -----

// Calls: one vjp function per callee, recomputing its forward pass, called
// in reverse order; cache results carry no adjoint across the call.
// CHECK-LABEL: func.func private @layer_vjp
// CHECK-SAME: (%[[X:.*]]: tensor<8x16xf32>, %[[W:.*]]: tensor<16x16xf32>, %[[C:.*]]: tensor<1x8x16xf32>, %[[DY:.*]]: tensor<8x16xf32>) -> (tensor<8x16xf32>, tensor<16x16xf32>)
// CHECK: colossus.linear %[[X]], %[[W]]
// CHECK: colossus.cache_write
// CHECK: colossus.linear_weight_grad
// CHECK: return
// CHECK-LABEL: func.func @loss_grad
// CHECK: %[[C1:.*]]:2 = call @layer(
// CHECK: %[[C2:.*]]:2 = call @layer(%[[C1]]#0, %[[W2:[^,]*]],
// CHECK: %[[B2:.*]]:2 = call @layer_vjp(%[[C1]]#0, %[[W2]], %{{.*}}, %{{.*}})
// CHECK: %[[B1:.*]]:2 = call @layer_vjp(%{{.*}}, %{{.*}}, %{{.*}}, %[[B2]]#0)
// CHECK: return %{{.*}}, %[[B1]]#1, %[[B2]]#1
func.func private @layer(%x: tensor<8x16xf32>, %w: tensor<16x16xf32>, %c: tensor<1x8x16xf32>) -> (tensor<8x16xf32>, tensor<1x8x16xf32>) {
  %pos = colossus.positions 8
  %y = colossus.linear %x, %w : tensor<8x16xf32>, tensor<16x16xf32>
  %c2 = colossus.cache_write %c[%pos], %y : tensor<1x8x16xf32>, tensor<8x16xf32>, tensor<8xi32>
  %z = colossus.add %x, %y : tensor<8x16xf32>
  return %z, %c2 : tensor<8x16xf32>, tensor<1x8x16xf32>
}
func.func @loss(%x: tensor<8x16xf32>, %t: tensor<8xi32>,
                %w1: tensor<16x16xf32> {colossus.param = "w1"},
                %w2: tensor<16x16xf32> {colossus.param = "w2"},
                %c1: tensor<1x8x16xf32>, %c2: tensor<1x8x16xf32>) -> tensor<f32> {
  %a:2 = call @layer(%x, %w1, %c1) : (tensor<8x16xf32>, tensor<16x16xf32>, tensor<1x8x16xf32>) -> (tensor<8x16xf32>, tensor<1x8x16xf32>)
  %b:2 = call @layer(%a#0, %w2, %c2) : (tensor<8x16xf32>, tensor<16x16xf32>, tensor<1x8x16xf32>) -> (tensor<8x16xf32>, tensor<1x8x16xf32>)
  %l = colossus.cross_entropy %b#0, %t : tensor<8x16xf32>, tensor<8xi32>
  return %l : tensor<f32>
}

// -----

// expected-error @+1 {{must return the loss as tensor<f32> first}}
func.func @loss(%x: tensor<8x16xf32> {colossus.param = "x"}) -> tensor<8x16xf32> {
  return %x : tensor<8x16xf32>
}

// -----

// expected-error @+1 {{has no argument with a 'colossus.param' attribute}}
func.func @loss(%x: tensor<8x16xf32>, %t: tensor<8xi32>) -> tensor<f32> {
  %l = colossus.cross_entropy %x, %t : tensor<8x16xf32>, tensor<8xi32>
  return %l : tensor<f32>
}

// -----

func.func @loss(%x: tensor<8x16xf32> {colossus.param = "x"}, %t: tensor<8xi32>) -> tensor<f32> {
  // expected-error @+1 {{has no vector-Jacobian rule yet}}
  %f = colossus.fusion "elementwise"(%x) : (tensor<8x16xf32>) -> tensor<8x16xf32> {
  ^bb0(%a: tensor<8x16xf32>):
    %s = colossus.silu %a : tensor<8x16xf32>
    colossus.yield %s : tensor<8x16xf32>
  }
  %l = colossus.cross_entropy %f, %t : tensor<8x16xf32>, tensor<8xi32>
  return %l : tensor<f32>
}

// -----

// Mixed precision: a bf16 model's f32 logits. The parameter gradient is f32
// (a sum over the rows) although the parameter is bf16; the f32 loss
// gradient is rounded to bf16 (the convert rule: the adjoint gets x's type,
// PyTorch autocast's bf16 dlogits), so both of the projection's backward
// GEMMs read bf16 operands; dx is bf16 like x.
// CHECK-LABEL: func.func @loss_grad
// CHECK-SAME: -> (tensor<f32>, tensor<8x16xf32> {colossus.param = "h"}, tensor<32x16xf32> {colossus.param = "w"})
// CHECK: %[[Y:.*]] = colossus.linear %[[X:.*]], %[[W:.*]] : tensor<8x16xbf16>, tensor<32x16xbf16>
// CHECK: %[[Y32:.*]] = colossus.convert %[[Y]] to f32 : tensor<8x32xbf16>
// CHECK: %[[DY32:.*]] = colossus.cross_entropy_grad %[[Y32]]
// CHECK: %[[DY:.*]] = colossus.convert %[[DY32]] to bf16 : tensor<8x32xf32>
// CHECK: %[[DX:.*]] = colossus.linear %[[DY]], %[[W]] {transpose_w = false} : tensor<8x32xbf16>, tensor<32x16xbf16>
// CHECK: %[[DW:.*]] = colossus.linear_weight_grad %[[X]], %[[DY]] : tensor<8x16xbf16>, tensor<8x32xbf16>
// CHECK: %[[DH:.*]] = colossus.convert %[[DX]] to f32 : tensor<8x16xbf16>
// CHECK: return %{{.*}}, %[[DH]], %[[DW]]
func.func @loss(%h: tensor<8x16xf32> {colossus.param = "h"}, %t: tensor<8xi32>,
                %w: tensor<32x16xbf16> {colossus.param = "w"}) -> tensor<f32> {
  %x = colossus.convert %h to bf16 : tensor<8x16xf32>
  %y = colossus.linear %x, %w : tensor<8x16xbf16>, tensor<32x16xbf16>
  %y32 = colossus.convert %y to f32 : tensor<8x32xbf16>
  %l = colossus.cross_entropy %y32, %t : tensor<8x32xf32>, tensor<8xi32>
  return %l : tensor<f32>
}
