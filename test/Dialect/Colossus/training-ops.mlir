// RUN: %colossus-opt %s | %colossus-opt | FileCheck %s
// RUN: %colossus-opt %s --mlir-print-op-generic | %colossus-opt | FileCheck %s
// RUN: %colossus-opt %s --mlir-print-op-generic | FileCheck %s --check-prefix=GENERIC

// Round trip of the training ops of the colossus dialect (loss,
// vector-Jacobian products, optimizer) and of rope's `inverse`, in the custom
// form and through the generic form. Result types are inferred by the parser,
// so the checks below also pin the inferred types (printed by the consumers).

//===----------------------------------------------------------------------===//
// cross_entropy, cross_entropy_grad
//===----------------------------------------------------------------------===//

// The loss is a tensor<f32> scalar. ignore_index defaults to -100 and is not
// printed.
// CHECK-LABEL: func.func @cross_entropy
// CHECK-SAME: (%[[L:.+]]: tensor<8x256xf32>, %[[T:.+]]: tensor<8xi32>)
// CHECK: %[[A:.+]] = colossus.cross_entropy %[[L]], %[[T]] : tensor<8x256xf32>, tensor<8xi32>
// CHECK-NEXT: %[[B:.+]] = colossus.cross_entropy %[[L]], %[[T]] : tensor<8x256xf32>, tensor<8xi32>
// CHECK-NEXT: %[[C:.+]] = colossus.cross_entropy %[[L]], %[[T]] {ignore_index = 0 : i64} : tensor<8x256xf32>, tensor<8xi32>
// CHECK-NEXT: return %[[A]], %[[B]], %[[C]] : tensor<f32>, tensor<f32>, tensor<f32>
// GENERIC-LABEL: sym_name = "cross_entropy"
// GENERIC: "colossus.cross_entropy"(%{{.*}}, %{{.*}}) <{ignore_index = -100 : i64}> : (tensor<8x256xf32>, tensor<8xi32>) -> tensor<f32>
// GENERIC-NEXT: "colossus.cross_entropy"(%{{.*}}, %{{.*}}) <{ignore_index = -100 : i64}> : (tensor<8x256xf32>, tensor<8xi32>) -> tensor<f32>
// GENERIC-NEXT: "colossus.cross_entropy"(%{{.*}}, %{{.*}}) <{ignore_index = 0 : i64}> : (tensor<8x256xf32>, tensor<8xi32>) -> tensor<f32>
func.func @cross_entropy(%logits: tensor<8x256xf32>, %targets: tensor<8xi32>) -> (tensor<f32>, tensor<f32>, tensor<f32>) {
  %0 = colossus.cross_entropy %logits, %targets : tensor<8x256xf32>, tensor<8xi32>
  %1 = colossus.cross_entropy %logits, %targets {ignore_index = -100 : i64} : tensor<8x256xf32>, tensor<8xi32>
  %2 = colossus.cross_entropy %logits, %targets {ignore_index = 0 : i64} : tensor<8x256xf32>, tensor<8xi32>
  return %0, %1, %2 : tensor<f32>, tensor<f32>, tensor<f32>
}

// A dynamic row count is accepted.
// CHECK-LABEL: func.func @cross_entropy_dynamic
// CHECK: %[[A:.+]] = colossus.cross_entropy %{{.+}}, %{{.+}} : tensor<?x256xf32>, tensor<8xi32>
// CHECK-NEXT: return %[[A]] : tensor<f32>
func.func @cross_entropy_dynamic(%logits: tensor<?x256xf32>, %targets: tensor<8xi32>) -> tensor<f32> {
  %0 = colossus.cross_entropy %logits, %targets : tensor<?x256xf32>, tensor<8xi32>
  return %0 : tensor<f32>
}

// CHECK-LABEL: func.func @cross_entropy_grad
// CHECK-SAME: (%[[L:.+]]: tensor<8x256xf32>, %[[T:.+]]: tensor<8xi32>, %[[D:.+]]: tensor<f32>)
// CHECK: %[[A:.+]] = colossus.cross_entropy_grad %[[L]], %[[T]], %[[D]] : tensor<8x256xf32>, tensor<8xi32>, tensor<f32>
// CHECK-NEXT: %[[B:.+]] = colossus.cross_entropy_grad %[[L]], %[[T]], %[[D]] {ignore_index = -1 : i64} : tensor<8x256xf32>, tensor<8xi32>, tensor<f32>
// CHECK-NEXT: return %[[A]], %[[B]] : tensor<8x256xf32>, tensor<8x256xf32>
// GENERIC-LABEL: sym_name = "cross_entropy_grad"
// GENERIC: "colossus.cross_entropy_grad"(%{{.*}}, %{{.*}}, %{{.*}}) <{ignore_index = -100 : i64}> : (tensor<8x256xf32>, tensor<8xi32>, tensor<f32>) -> tensor<8x256xf32>
// GENERIC-NEXT: "colossus.cross_entropy_grad"(%{{.*}}, %{{.*}}, %{{.*}}) <{ignore_index = -1 : i64}> : (tensor<8x256xf32>, tensor<8xi32>, tensor<f32>) -> tensor<8x256xf32>
func.func @cross_entropy_grad(%logits: tensor<8x256xf32>, %targets: tensor<8xi32>, %dloss: tensor<f32>) -> (tensor<8x256xf32>, tensor<8x256xf32>) {
  %0 = colossus.cross_entropy_grad %logits, %targets, %dloss : tensor<8x256xf32>, tensor<8xi32>, tensor<f32>
  %1 = colossus.cross_entropy_grad %logits, %targets, %dloss {ignore_index = -1 : i64} : tensor<8x256xf32>, tensor<8xi32>, tensor<f32>
  return %0, %1 : tensor<8x256xf32>, tensor<8x256xf32>
}

// The loss feeds its own gradient.
// CHECK-LABEL: func.func @cross_entropy_chain
// CHECK: %[[LOSS:.+]] = colossus.cross_entropy %[[L:[^,]+]], %[[T:[^ ]+]] : tensor<8x256xf32>, tensor<8xi32>
// CHECK-NEXT: %[[G:.+]] = colossus.cross_entropy_grad %[[L]], %[[T]], %[[LOSS]] : tensor<8x256xf32>, tensor<8xi32>, tensor<f32>
// CHECK-NEXT: return %[[G]] : tensor<8x256xf32>
func.func @cross_entropy_chain(%logits: tensor<8x256xf32>, %targets: tensor<8xi32>) -> tensor<8x256xf32> {
  %0 = colossus.cross_entropy %logits, %targets : tensor<8x256xf32>, tensor<8xi32>
  %1 = colossus.cross_entropy_grad %logits, %targets, %0 : tensor<8x256xf32>, tensor<8xi32>, tensor<f32>
  return %1 : tensor<8x256xf32>
}

//===----------------------------------------------------------------------===//
// linear_weight_grad, column_sum
//===----------------------------------------------------------------------===//

// transpose_w defaults to true (the result is dy^T @ x: [N, K]) and is not
// printed; with transpose_w = false the result is x^T @ dy: [K, N]. Both
// layouts are inferred from the custom form, whose attr-dict is not yet in the
// properties while it is parsed.
// CHECK-LABEL: func.func @linear_weight_grad
// CHECK-SAME: (%[[X:.+]]: tensor<8x64xf32>, %[[DY:.+]]: tensor<8x192xf32>)
// CHECK: %[[A:.+]] = colossus.linear_weight_grad %[[X]], %[[DY]] : tensor<8x64xf32>, tensor<8x192xf32>
// CHECK-NEXT: %[[B:.+]] = colossus.linear_weight_grad %[[X]], %[[DY]] : tensor<8x64xf32>, tensor<8x192xf32>
// CHECK-NEXT: %[[C:.+]] = colossus.linear_weight_grad %[[X]], %[[DY]] {transpose_w = false} : tensor<8x64xf32>, tensor<8x192xf32>
// CHECK-NEXT: return %[[A]], %[[B]], %[[C]] : tensor<192x64xf32>, tensor<192x64xf32>, tensor<64x192xf32>
// GENERIC-LABEL: sym_name = "linear_weight_grad"
// GENERIC: "colossus.linear_weight_grad"(%{{.*}}, %{{.*}}) <{transpose_w = true}> : (tensor<8x64xf32>, tensor<8x192xf32>) -> tensor<192x64xf32>
// GENERIC-NEXT: "colossus.linear_weight_grad"(%{{.*}}, %{{.*}}) <{transpose_w = true}> : (tensor<8x64xf32>, tensor<8x192xf32>) -> tensor<192x64xf32>
// GENERIC-NEXT: "colossus.linear_weight_grad"(%{{.*}}, %{{.*}}) <{transpose_w = false}> : (tensor<8x64xf32>, tensor<8x192xf32>) -> tensor<64x192xf32>
func.func @linear_weight_grad(%x: tensor<8x64xf32>, %dy: tensor<8x192xf32>) -> (tensor<192x64xf32>, tensor<192x64xf32>, tensor<64x192xf32>) {
  %0 = colossus.linear_weight_grad %x, %dy : tensor<8x64xf32>, tensor<8x192xf32>
  %1 = colossus.linear_weight_grad %x, %dy {transpose_w = true} : tensor<8x64xf32>, tensor<8x192xf32>
  %2 = colossus.linear_weight_grad %x, %dy {transpose_w = false} : tensor<8x64xf32>, tensor<8x192xf32>
  return %0, %1, %2 : tensor<192x64xf32>, tensor<192x64xf32>, tensor<64x192xf32>
}

// A parameter gradient is f32 whatever the precision of x and dy (a sum
// over the rows, for the f32 master weights); a dynamic row count (the
// reduced dimension) does not reach the result.
// CHECK-LABEL: func.func @linear_weight_grad_bf16_dynamic
// CHECK: %[[A:.+]] = colossus.linear_weight_grad %{{.+}}, %{{.+}} : tensor<?x64xbf16>, tensor<?x32xbf16>
// CHECK-NEXT: return %[[A]] : tensor<32x64xf32>
func.func @linear_weight_grad_bf16_dynamic(%x: tensor<?x64xbf16>, %dy: tensor<?x32xbf16>) -> tensor<32x64xf32> {
  %0 = colossus.linear_weight_grad %x, %dy : tensor<?x64xbf16>, tensor<?x32xbf16>
  return %0 : tensor<32x64xf32>
}

// CHECK-LABEL: func.func @column_sum
// CHECK-SAME: (%[[X:.+]]: tensor<8x192xbf16>)
// CHECK: %[[S:.+]] = colossus.column_sum %[[X]] : tensor<8x192xbf16>
// CHECK-NEXT: return %[[S]] : tensor<192xf32>
// GENERIC-LABEL: sym_name = "column_sum"
// GENERIC: "colossus.column_sum"(%{{.*}}) : (tensor<8x192xbf16>) -> tensor<192xf32>
func.func @column_sum(%x: tensor<8x192xbf16>) -> tensor<192xf32> {
  %0 = colossus.column_sum %x : tensor<8x192xbf16>
  return %0 : tensor<192xf32>
}

//===----------------------------------------------------------------------===//
// rms_norm_grad, layer_norm_grad
//===----------------------------------------------------------------------===//

// The custom form names the types of x and weight only: dy has the type of x.
// CHECK-LABEL: func.func @rms_norm_grad
// CHECK-SAME: (%[[X:.+]]: tensor<8x64xf32>, %[[W:.+]]: tensor<64xf32>, %[[DY:.+]]: tensor<8x64xf32>)
// CHECK: %[[DX:.+]], %[[DW:.+]] = colossus.rms_norm_grad %[[X]], %[[W]], %[[DY]] eps = 1.000000e-05 : tensor<8x64xf32>, tensor<64xf32>
// CHECK-NEXT: return %[[DX]], %[[DW]] : tensor<8x64xf32>, tensor<64xf32>
// GENERIC-LABEL: sym_name = "rms_norm_grad"
// GENERIC: "colossus.rms_norm_grad"(%{{.*}}, %{{.*}}, %{{.*}}) <{eps = 1.000000e-05 : f64}> : (tensor<8x64xf32>, tensor<64xf32>, tensor<8x64xf32>) -> (tensor<8x64xf32>, tensor<64xf32>)
func.func @rms_norm_grad(%x: tensor<8x64xf32>, %w: tensor<64xf32>, %dy: tensor<8x64xf32>) -> (tensor<8x64xf32>, tensor<64xf32>) {
  %dx, %dw = colossus.rms_norm_grad %x, %w, %dy eps = 1.0e-05 : tensor<8x64xf32>, tensor<64xf32>
  return %dx, %dw : tensor<8x64xf32>, tensor<64xf32>
}

// CHECK-LABEL: func.func @rms_norm_grad_dynamic
// CHECK: %[[DX:.+]], %[[DW:.+]] = colossus.rms_norm_grad {{.*}} eps = 0.000000e+00 : tensor<?x64xbf16>, tensor<64xbf16>
// CHECK-NEXT: return %[[DX]], %[[DW]] : tensor<?x64xbf16>, tensor<64xf32>
func.func @rms_norm_grad_dynamic(%x: tensor<?x64xbf16>, %w: tensor<64xbf16>, %dy: tensor<?x64xbf16>) -> (tensor<?x64xbf16>, tensor<64xf32>) {
  %0:2 = colossus.rms_norm_grad %x, %w, %dy eps = 0.0 : tensor<?x64xbf16>, tensor<64xbf16>
  return %0#0, %0#1 : tensor<?x64xbf16>, tensor<64xf32>
}

// dweight and dbias both have the type of the weight.
// CHECK-LABEL: func.func @layer_norm_grad
// CHECK-SAME: (%[[X:.+]]: tensor<8x64xf32>, %[[W:.+]]: tensor<64xf32>, %[[DY:.+]]: tensor<8x64xf32>)
// CHECK: %[[DX:.+]], %[[DW:.+]], %[[DB:.+]] = colossus.layer_norm_grad %[[X]], %[[W]], %[[DY]] eps = 1.000000e-05 : tensor<8x64xf32>, tensor<64xf32>
// CHECK-NEXT: return %[[DX]], %[[DW]], %[[DB]] : tensor<8x64xf32>, tensor<64xf32>, tensor<64xf32>
// GENERIC-LABEL: sym_name = "layer_norm_grad"
// GENERIC: "colossus.layer_norm_grad"(%{{.*}}, %{{.*}}, %{{.*}}) <{eps = 1.000000e-05 : f64}> : (tensor<8x64xf32>, tensor<64xf32>, tensor<8x64xf32>) -> (tensor<8x64xf32>, tensor<64xf32>, tensor<64xf32>)
func.func @layer_norm_grad(%x: tensor<8x64xf32>, %w: tensor<64xf32>, %dy: tensor<8x64xf32>) -> (tensor<8x64xf32>, tensor<64xf32>, tensor<64xf32>) {
  %dx, %dw, %db = colossus.layer_norm_grad %x, %w, %dy eps = 1.0e-05 : tensor<8x64xf32>, tensor<64xf32>
  return %dx, %dw, %db : tensor<8x64xf32>, tensor<64xf32>, tensor<64xf32>
}

//===----------------------------------------------------------------------===//
// silu_grad, gelu_grad, swiglu_grad, softmax_grad
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @silu_grad
// CHECK-SAME: (%[[X:.+]]: tensor<8x176xf32>, %[[DY:.+]]: tensor<8x176xf32>)
// CHECK: %[[DX:.+]] = colossus.silu_grad %[[X]], %[[DY]] : tensor<8x176xf32>
// CHECK-NEXT: return %[[DX]] : tensor<8x176xf32>
// GENERIC-LABEL: sym_name = "silu_grad"
// GENERIC: "colossus.silu_grad"(%{{.*}}, %{{.*}}) : (tensor<8x176xf32>, tensor<8x176xf32>) -> tensor<8x176xf32>
func.func @silu_grad(%x: tensor<8x176xf32>, %dy: tensor<8x176xf32>) -> tensor<8x176xf32> {
  %0 = colossus.silu_grad %x, %dy : tensor<8x176xf32>
  return %0 : tensor<8x176xf32>
}

// erf is the default approximation and is not printed.
// CHECK-LABEL: func.func @gelu_grad
// CHECK-SAME: (%[[X:.+]]: tensor<8x256xf16>, %[[DY:.+]]: tensor<8x256xf16>)
// CHECK: %[[A:.+]] = colossus.gelu_grad %[[X]], %[[DY]] : tensor<8x256xf16>
// CHECK-NEXT: %[[B:.+]] = colossus.gelu_grad %[[X]], %[[DY]] : tensor<8x256xf16>
// CHECK-NEXT: %[[C:.+]] = colossus.gelu_grad %[[X]], %[[DY]] {approximate = #colossus<gelu_approx tanh>} : tensor<8x256xf16>
// CHECK-NEXT: return %[[A]], %[[B]], %[[C]] : tensor<8x256xf16>, tensor<8x256xf16>, tensor<8x256xf16>
// GENERIC-LABEL: sym_name = "gelu_grad"
// GENERIC: "colossus.gelu_grad"(%{{.*}}, %{{.*}}) <{approximate = #colossus<gelu_approx erf>}> : (tensor<8x256xf16>, tensor<8x256xf16>) -> tensor<8x256xf16>
// GENERIC-NEXT: "colossus.gelu_grad"(%{{.*}}, %{{.*}}) <{approximate = #colossus<gelu_approx erf>}> : (tensor<8x256xf16>, tensor<8x256xf16>) -> tensor<8x256xf16>
// GENERIC-NEXT: "colossus.gelu_grad"(%{{.*}}, %{{.*}}) <{approximate = #colossus<gelu_approx tanh>}> : (tensor<8x256xf16>, tensor<8x256xf16>) -> tensor<8x256xf16>
func.func @gelu_grad(%x: tensor<8x256xf16>, %dy: tensor<8x256xf16>) -> (tensor<8x256xf16>, tensor<8x256xf16>, tensor<8x256xf16>) {
  %0 = colossus.gelu_grad %x, %dy : tensor<8x256xf16>
  %1 = colossus.gelu_grad %x, %dy {approximate = #colossus<gelu_approx erf>} : tensor<8x256xf16>
  %2 = colossus.gelu_grad %x, %dy {approximate = #colossus<gelu_approx tanh>} : tensor<8x256xf16>
  return %0, %1, %2 : tensor<8x256xf16>, tensor<8x256xf16>, tensor<8x256xf16>
}

// CHECK-LABEL: func.func @swiglu_grad
// CHECK-SAME: (%[[G:.+]]: tensor<8x176xf32>, %[[U:.+]]: tensor<8x176xf32>, %[[DY:.+]]: tensor<8x176xf32>)
// CHECK: %[[DG:.+]], %[[DU:.+]] = colossus.swiglu_grad %[[G]], %[[U]], %[[DY]] : tensor<8x176xf32>
// CHECK-NEXT: return %[[DG]], %[[DU]] : tensor<8x176xf32>, tensor<8x176xf32>
// GENERIC-LABEL: sym_name = "swiglu_grad"
// GENERIC: "colossus.swiglu_grad"(%{{.*}}, %{{.*}}, %{{.*}}) : (tensor<8x176xf32>, tensor<8x176xf32>, tensor<8x176xf32>) -> (tensor<8x176xf32>, tensor<8x176xf32>)
func.func @swiglu_grad(%gate: tensor<8x176xf32>, %up: tensor<8x176xf32>, %dy: tensor<8x176xf32>) -> (tensor<8x176xf32>, tensor<8x176xf32>) {
  %dgate, %dup = colossus.swiglu_grad %gate, %up, %dy : tensor<8x176xf32>
  return %dgate, %dup : tensor<8x176xf32>, tensor<8x176xf32>
}

// CHECK-LABEL: func.func @softmax_grad
// CHECK-SAME: (%[[Y:.+]]: tensor<8x40xf32>, %[[DY:.+]]: tensor<8x40xf32>)
// CHECK: %[[DX:.+]] = colossus.softmax_grad %[[Y]], %[[DY]] : tensor<8x40xf32>
// CHECK-NEXT: return %[[DX]] : tensor<8x40xf32>
// GENERIC-LABEL: sym_name = "softmax_grad"
// GENERIC: "colossus.softmax_grad"(%{{.*}}, %{{.*}}) : (tensor<8x40xf32>, tensor<8x40xf32>) -> tensor<8x40xf32>
func.func @softmax_grad(%y: tensor<8x40xf32>, %dy: tensor<8x40xf32>) -> tensor<8x40xf32> {
  %0 = colossus.softmax_grad %y, %dy : tensor<8x40xf32>
  return %0 : tensor<8x40xf32>
}

//===----------------------------------------------------------------------===//
// embedding_grad, cache_read, pad_columns
//===----------------------------------------------------------------------===//

// The result has vocab_size rows (read from the attr-dict of the custom form)
// and the columns and element type of dy.
// CHECK-LABEL: func.func @embedding_grad
// CHECK-SAME: (%[[IDS:.+]]: tensor<8xi32>, %[[DY:.+]]: tensor<8x64xbf16>)
// CHECK: %[[G:.+]] = colossus.embedding_grad %[[IDS]], %[[DY]] {vocab_size = 256 : i64} : tensor<8xi32>, tensor<8x64xbf16>
// CHECK-NEXT: return %[[G]] : tensor<256x64xf32>
// GENERIC-LABEL: sym_name = "embedding_grad"
// GENERIC: "colossus.embedding_grad"(%{{.*}}, %{{.*}}) <{vocab_size = 256 : i64}> : (tensor<8xi32>, tensor<8x64xbf16>) -> tensor<256x64xf32>
func.func @embedding_grad(%ids: tensor<8xi32>, %dy: tensor<8x64xbf16>) -> tensor<256x64xf32> {
  %0 = colossus.embedding_grad %ids, %dy {vocab_size = 256 : i64} : tensor<8xi32>, tensor<8x64xbf16>
  return %0 : tensor<256x64xf32>
}

// A tied embedding's other gradient added by the scatter (plus).
// CHECK-LABEL: func.func @embedding_grad_plus
// CHECK: %[[G:.+]] = colossus.embedding_grad %{{.+}}, %{{.+}} plus %{{.+}} {vocab_size = 256 : i64} : tensor<8xi32>, tensor<8x64xbf16>, tensor<256x64xf32>
// CHECK-NEXT: return %[[G]] : tensor<256x64xf32>
// GENERIC-LABEL: sym_name = "embedding_grad_plus"
// GENERIC: "colossus.embedding_grad"(%{{.*}}, %{{.*}}, %{{.*}}) <{vocab_size = 256 : i64}> : (tensor<8xi32>, tensor<8x64xbf16>, tensor<256x64xf32>) -> tensor<256x64xf32>
func.func @embedding_grad_plus(%ids: tensor<8xi32>, %dy: tensor<8x64xbf16>, %dw: tensor<256x64xf32>) -> tensor<256x64xf32> {
  %0 = colossus.embedding_grad %ids, %dy plus %dw {vocab_size = 256 : i64} : tensor<8xi32>, tensor<8x64xbf16>, tensor<256x64xf32>
  return %0 : tensor<256x64xf32>
}

// CHECK-LABEL: func.func @embedding_grad_dynamic
// CHECK: %[[G:.+]] = colossus.embedding_grad %{{.+}}, %{{.+}} {vocab_size = 50257 : i64} : tensor<?xi32>, tensor<?x768xf32>
// CHECK-NEXT: return %[[G]] : tensor<50257x768xf32>
func.func @embedding_grad_dynamic(%ids: tensor<?xi32>, %dy: tensor<?x768xf32>) -> tensor<50257x768xf32> {
  %0 = colossus.embedding_grad %ids, %dy {vocab_size = 50257 : i64} : tensor<?xi32>, tensor<?x768xf32>
  return %0 : tensor<50257x768xf32>
}

// One row per position, with the columns and element type of the cache.
// CHECK-LABEL: func.func @cache_read
// CHECK-SAME: (%[[CACHE:.+]]: tensor<2x40x32xf32>, %[[POS:.+]]: tensor<80xi32>)
// CHECK: %[[R:.+]] = colossus.cache_read %[[CACHE]][%[[POS]]] : tensor<2x40x32xf32>, tensor<80xi32>
// CHECK-NEXT: return %[[R]] : tensor<80x32xf32>
// GENERIC-LABEL: sym_name = "cache_read"
// GENERIC: "colossus.cache_read"(%{{.*}}, %{{.*}}) : (tensor<2x40x32xf32>, tensor<80xi32>) -> tensor<80x32xf32>
func.func @cache_read(%cache: tensor<2x40x32xf32>, %pos: tensor<80xi32>) -> tensor<80x32xf32> {
  %0 = colossus.cache_read %cache[%pos] : tensor<2x40x32xf32>, tensor<80xi32>
  return %0 : tensor<80x32xf32>
}

// cache_read undoes cache_write on the rows written.
// CHECK-LABEL: func.func @cache_write_read
// CHECK-SAME: (%[[CACHE:.+]]: tensor<2x40x32xbf16>, %[[X:.+]]: tensor<?x32xbf16>, %[[POS:.+]]: tensor<?xi32>)
// CHECK: %[[C:.+]] = colossus.cache_write %[[CACHE]][%[[POS]]], %[[X]] : tensor<2x40x32xbf16>, tensor<?x32xbf16>, tensor<?xi32>
// CHECK-NEXT: %[[R:.+]] = colossus.cache_read %[[C]][%[[POS]]] : tensor<2x40x32xbf16>, tensor<?xi32>
// CHECK-NEXT: return %[[R]] : tensor<?x32xbf16>
func.func @cache_write_read(%cache: tensor<2x40x32xbf16>, %x: tensor<?x32xbf16>, %pos: tensor<?xi32>) -> tensor<?x32xbf16> {
  %0 = colossus.cache_write %cache[%pos], %x : tensor<2x40x32xbf16>, tensor<?x32xbf16>, tensor<?xi32>
  %1 = colossus.cache_read %0[%pos] : tensor<2x40x32xbf16>, tensor<?xi32>
  return %1 : tensor<?x32xbf16>
}

// The result has `total` columns; the input may fill them all.
// CHECK-LABEL: func.func @pad_columns
// CHECK-SAME: (%[[X:.+]]: tensor<8x64xf32>)
// CHECK: %[[A:.+]] = colossus.pad_columns %[[X]][0, 192] : tensor<8x64xf32>
// CHECK-NEXT: %[[B:.+]] = colossus.pad_columns %[[X]][128, 192] : tensor<8x64xf32>
// CHECK-NEXT: %[[C:.+]] = colossus.pad_columns %[[X]][0, 64] : tensor<8x64xf32>
// CHECK-NEXT: return %[[A]], %[[B]], %[[C]] : tensor<8x192xf32>, tensor<8x192xf32>, tensor<8x64xf32>
// GENERIC-LABEL: sym_name = "pad_columns"
// GENERIC: "colossus.pad_columns"(%{{.*}}) <{offset = 0 : i64, total = 192 : i64}> : (tensor<8x64xf32>) -> tensor<8x192xf32>
// GENERIC-NEXT: "colossus.pad_columns"(%{{.*}}) <{offset = 128 : i64, total = 192 : i64}> : (tensor<8x64xf32>) -> tensor<8x192xf32>
// GENERIC-NEXT: "colossus.pad_columns"(%{{.*}}) <{offset = 0 : i64, total = 64 : i64}> : (tensor<8x64xf32>) -> tensor<8x64xf32>
func.func @pad_columns(%x: tensor<8x64xf32>) -> (tensor<8x192xf32>, tensor<8x192xf32>, tensor<8x64xf32>) {
  %0 = colossus.pad_columns %x[0, 192] : tensor<8x64xf32>
  %1 = colossus.pad_columns %x[128, 192] : tensor<8x64xf32>
  %2 = colossus.pad_columns %x[0, 64] : tensor<8x64xf32>
  return %0, %1, %2 : tensor<8x192xf32>, tensor<8x192xf32>, tensor<8x64xf32>
}

// pad_columns is the vector-Jacobian product of slice: [offset, total] inverts
// [offset, size].
// CHECK-LABEL: func.func @slice_pad_columns
// CHECK: %[[S:.+]] = colossus.slice %{{.+}}[64, 64] : tensor<8x192xf32>
// CHECK-NEXT: %[[P:.+]] = colossus.pad_columns %[[S]][64, 192] : tensor<8x64xf32>
// CHECK-NEXT: return %[[P]] : tensor<8x192xf32>
func.func @slice_pad_columns(%x: tensor<8x192xf32>) -> tensor<8x192xf32> {
  %0 = colossus.slice %x[64, 64] : tensor<8x192xf32>
  %1 = colossus.pad_columns %0[64, 192] : tensor<8x64xf32>
  return %1 : tensor<8x192xf32>
}

// Dynamic columns cannot be checked against total; a dynamic row count is
// carried to the result.
// CHECK-LABEL: func.func @pad_columns_dynamic
// CHECK: %[[P:.+]] = colossus.pad_columns %{{.+}}[32, 64] : tensor<?x?xf16>
// CHECK-NEXT: return %[[P]] : tensor<?x64xf16>
func.func @pad_columns_dynamic(%x: tensor<?x?xf16>) -> tensor<?x64xf16> {
  %0 = colossus.pad_columns %x[32, 64] : tensor<?x?xf16>
  return %0 : tensor<?x64xf16>
}

//===----------------------------------------------------------------------===//
// attention_grad
//===----------------------------------------------------------------------===//

// GQA: 4 query heads share 2 kv heads. The custom form names the types of q,
// k, positions and lse: v has the type of k, dout and out that of q. causal
// defaults to true and sliding_window to 0; neither is printed.
// CHECK-LABEL: func.func @attention_grad
// CHECK-SAME: (%[[Q:.+]]: tensor<80x64xf32>, %[[K:.+]]: tensor<2x40x32xf32>, %[[V:.+]]: tensor<2x40x32xf32>, %[[POS:.+]]: tensor<80xi32>, %[[DO:.+]]: tensor<80x64xf32>, %[[O:.+]]: tensor<80x64xf32>, %[[LSE:.+]]: tensor<80x4xf32>)
// CHECK: %[[DQ:.+]], %[[DK:.+]], %[[DV:.+]] = colossus.attention_grad %[[Q]], %[[K]], %[[V]], %[[POS]], %[[DO]], %[[O]], %[[LSE]] {head_dim = 16 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, scale = 2.500000e-01 : f64} : tensor<80x64xf32>, tensor<2x40x32xf32>, tensor<80xi32>, tensor<80x4xf32>
// CHECK-NEXT: return %[[DQ]], %[[DK]], %[[DV]] : tensor<80x64xf32>, tensor<2x40x32xf32>, tensor<2x40x32xf32>
// GENERIC-LABEL: sym_name = "attention_grad"
// GENERIC: "colossus.attention_grad"(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}) <{causal = true, head_dim = 16 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, scale = 2.500000e-01 : f64, sliding_window = 0 : i64}> : (tensor<80x64xf32>, tensor<2x40x32xf32>, tensor<2x40x32xf32>, tensor<80xi32>, tensor<80x64xf32>, tensor<80x64xf32>, tensor<80x4xf32>) -> (tensor<80x64xf32>, tensor<2x40x32xf32>, tensor<2x40x32xf32>)
func.func @attention_grad(%q: tensor<80x64xf32>, %k: tensor<2x40x32xf32>, %v: tensor<2x40x32xf32>, %pos: tensor<80xi32>, %dout: tensor<80x64xf32>, %out: tensor<80x64xf32>, %lse: tensor<80x4xf32>) -> (tensor<80x64xf32>, tensor<2x40x32xf32>, tensor<2x40x32xf32>) {
  %dq, %dk, %dv = colossus.attention_grad %q, %k, %v, %pos, %dout, %out, %lse {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f64} : tensor<80x64xf32>, tensor<2x40x32xf32>, tensor<80xi32>, tensor<80x4xf32>
  return %dq, %dk, %dv : tensor<80x64xf32>, tensor<2x40x32xf32>, tensor<2x40x32xf32>
}

// MQA (one kv head), not causal, with a sliding window.
// CHECK-LABEL: func.func @attention_grad_mqa_window
// CHECK: colossus.attention_grad
// CHECK-SAME: causal = false
// CHECK-SAME: num_kv_heads = 1 : i64
// CHECK-SAME: sliding_window = 16 : i64
// CHECK-SAME: : tensor<80x64xbf16>, tensor<2x40x16xbf16>, tensor<80xi32>, tensor<80x4xf32>
// GENERIC-LABEL: sym_name = "attention_grad_mqa_window"
// GENERIC: "colossus.attention_grad"({{.*}}) <{causal = false, head_dim = 16 : i64, num_heads = 4 : i64, num_kv_heads = 1 : i64, scale = 1.250000e-01 : f64, sliding_window = 16 : i64}>
func.func @attention_grad_mqa_window(%q: tensor<80x64xbf16>, %k: tensor<2x40x16xbf16>, %v: tensor<2x40x16xbf16>, %pos: tensor<80xi32>, %dout: tensor<80x64xbf16>, %out: tensor<80x64xbf16>, %lse: tensor<80x4xf32>) -> (tensor<80x64xf32>, tensor<2x40x16xf32>, tensor<2x40x16xf32>) {
  %dq, %dk, %dv = colossus.attention_grad %q, %k, %v, %pos, %dout, %out, %lse {num_heads = 4 : i64, num_kv_heads = 1 : i64, head_dim = 16 : i64, scale = 0.125 : f64, causal = false, sliding_window = 16 : i64} : tensor<80x64xbf16>, tensor<2x40x16xbf16>, tensor<80xi32>, tensor<80x4xf32>
  return %dq, %dk, %dv : tensor<80x64xf32>, tensor<2x40x16xf32>, tensor<2x40x16xf32>
}

// Dynamic dimensions are accepted and carried to the results.
// CHECK-LABEL: func.func @attention_grad_dynamic
// CHECK: %[[DQ:.+]], %[[DK:.+]], %[[DV:.+]] = colossus.attention_grad {{.*}} : tensor<?x64xf32>, tensor<?x?x32xf32>, tensor<?xi32>, tensor<?x4xf32>
// CHECK-NEXT: return %[[DQ]], %[[DK]], %[[DV]] : tensor<?x64xf32>, tensor<?x?x32xf32>, tensor<?x?x32xf32>
func.func @attention_grad_dynamic(%q: tensor<?x64xf32>, %k: tensor<?x?x32xf32>, %v: tensor<?x?x32xf32>, %pos: tensor<?xi32>, %dout: tensor<?x64xf32>, %out: tensor<?x64xf32>, %lse: tensor<?x4xf32>) -> (tensor<?x64xf32>, tensor<?x?x32xf32>, tensor<?x?x32xf32>) {
  %0:3 = colossus.attention_grad %q, %k, %v, %pos, %dout, %out, %lse {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f64} : tensor<?x64xf32>, tensor<?x?x32xf32>, tensor<?xi32>, tensor<?x4xf32>
  return %0#0, %0#1, %0#2 : tensor<?x64xf32>, tensor<?x?x32xf32>, tensor<?x?x32xf32>
}

// The forward attention with save_lse: a second result, the log-sum-exp
// per (row, head), f32 even for bf16 activations.
// CHECK-LABEL: func.func @attention_save_lse
// CHECK: %[[O:.+]], %[[L:.+]] = colossus.attention %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}} {head_dim = 16 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, save_lse, scale = 2.500000e-01 : f64} : tensor<80x64xbf16>, tensor<2x40x32xbf16>, tensor<2x40x32xbf16>, tensor<80xi32>
// CHECK-NEXT: return %[[O]], %[[L]] : tensor<80x64xbf16>, tensor<80x4xf32>
// GENERIC-LABEL: sym_name = "attention_save_lse"
// GENERIC: "colossus.attention"({{.*}}) <{causal = true, head_dim = 16 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, save_lse, scale = 2.500000e-01 : f64, sliding_window = 0 : i64}> : ({{.*}}) -> (tensor<80x64xbf16>, tensor<80x4xf32>)
func.func @attention_save_lse(%q: tensor<80x64xbf16>, %k: tensor<2x40x32xbf16>, %v: tensor<2x40x32xbf16>, %pos: tensor<80xi32>) -> (tensor<80x64xbf16>, tensor<80x4xf32>) {
  %o, %lse = colossus.attention %q, %k, %v, %pos {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f64, save_lse} : tensor<80x64xbf16>, tensor<2x40x32xbf16>, tensor<2x40x32xbf16>, tensor<80xi32>
  return %o, %lse : tensor<80x64xbf16>, tensor<80x4xf32>
}

//===----------------------------------------------------------------------===//
// cross_entropy_rows, row_sum (formed by colossus-fuse)
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @cross_entropy_rows
// CHECK: %[[T:.+]], %[[G:.+]] = colossus.cross_entropy_rows %{{.+}}, %{{.+}}, %{{.+}} : tensor<8x256xf32>, tensor<8xi32>, tensor<f32>
// CHECK-NEXT: %[[L:.+]] = colossus.row_sum %[[T]] : tensor<8xf32>
// CHECK-NEXT: %{{.+}}, %{{.+}} = colossus.cross_entropy_rows {{.*}} {ignore_index = 0 : i64} : tensor<8x256xf32>, tensor<8xi32>, tensor<f32>
// CHECK-NEXT: return %[[L]], %[[G]] : tensor<f32>, tensor<8x256xf32>
// GENERIC-LABEL: sym_name = "cross_entropy_rows"
// GENERIC: "colossus.cross_entropy_rows"(%{{.*}}, %{{.*}}, %{{.*}}) <{ignore_index = -100 : i64}> : (tensor<8x256xf32>, tensor<8xi32>, tensor<f32>) -> (tensor<8xf32>, tensor<8x256xf32>)
// GENERIC-NEXT: "colossus.row_sum"(%{{.*}}) : (tensor<8xf32>) -> tensor<f32>
func.func @cross_entropy_rows(%logits: tensor<8x256xf32>, %targets: tensor<8xi32>, %dloss: tensor<f32>) -> (tensor<f32>, tensor<8x256xf32>) {
  %terms, %dlogits = colossus.cross_entropy_rows %logits, %targets, %dloss : tensor<8x256xf32>, tensor<8xi32>, tensor<f32>
  %loss = colossus.row_sum %terms : tensor<8xf32>
  %t2, %d2 = colossus.cross_entropy_rows %logits, %targets, %dloss {ignore_index = 0 : i64} : tensor<8x256xf32>, tensor<8xi32>, tensor<f32>
  return %loss, %dlogits : tensor<f32>, tensor<8x256xf32>
}

//===----------------------------------------------------------------------===//
// adamw
//===----------------------------------------------------------------------===//

// The custom form names the types of param and hyper: grad and the optimizer
// state have the type of param, and so have the three results.
// CHECK-LABEL: func.func @adamw
// CHECK-SAME: (%[[P:.+]]: tensor<32x64xf32>, %[[G:.+]]: tensor<32x64xf32>, %[[M:.+]]: tensor<32x64xf32>, %[[V:.+]]: tensor<32x64xf32>, %[[H:.+]]: tensor<4xf32>)
// CHECK: %[[NP:.+]], %[[NM:.+]], %[[NV:.+]] = colossus.adamw %[[P]], %[[G]], %[[M]], %[[V]], %[[H]] {beta1 = 9.000000e-01 : f64, beta2 = 0.99899999999999999 : f64, eps = 1.000000e-08 : f64, weight_decay = 1.000000e-02 : f64} : tensor<32x64xf32>, tensor<4xf32>
// CHECK-NEXT: return %[[NP]], %[[NM]], %[[NV]] : tensor<32x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>
// GENERIC-LABEL: sym_name = "adamw"
// GENERIC: "colossus.adamw"(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}) <{beta1 = 9.000000e-01 : f64, beta2 = 0.99899999999999999 : f64, eps = 1.000000e-08 : f64, weight_decay = 1.000000e-02 : f64}> : (tensor<32x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<4xf32>) -> (tensor<32x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>)
func.func @adamw(%p: tensor<32x64xf32>, %g: tensor<32x64xf32>, %m: tensor<32x64xf32>, %v: tensor<32x64xf32>, %hyper: tensor<4xf32>) -> (tensor<32x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>) {
  %np, %nm, %nv = colossus.adamw %p, %g, %m, %v, %hyper {beta1 = 0.9 : f64, beta2 = 0.999 : f64, eps = 1.0e-08 : f64, weight_decay = 0.01 : f64} : tensor<32x64xf32>, tensor<4xf32>
  return %np, %nm, %nv : tensor<32x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>
}

// Parameters of any rank: a bias vector, a KV-cache-shaped tensor, a scalar.
// beta1 = 0 and weight_decay = 0 are at the edges of their ranges.
// CHECK-LABEL: func.func @adamw_ranks
// CHECK: %[[A:[^,]+]], %{{[^,]+}}, %{{[^ ]+}} = colossus.adamw {{.*}} {beta1 = 0.000000e+00 : f64, beta2 = 0.99899999999999999 : f64, eps = 1.000000e-08 : f64, weight_decay = 0.000000e+00 : f64} : tensor<64xf32>, tensor<4xf32>
// CHECK-NEXT: %{{[^,]+}}, %[[B:[^,]+]], %{{[^ ]+}} = colossus.adamw {{.*}} : tensor<2x3x4xf32>, tensor<4xf32>
// CHECK-NEXT: %{{[^,]+}}, %{{[^,]+}}, %[[C:[^ ]+]] = colossus.adamw {{.*}} : tensor<f32>, tensor<4xf32>
// CHECK-NEXT: return %[[A]], %[[B]], %[[C]] : tensor<64xf32>, tensor<2x3x4xf32>, tensor<f32>
func.func @adamw_ranks(%b: tensor<64xf32>, %t: tensor<2x3x4xf32>, %s: tensor<f32>, %hyper: tensor<4xf32>) -> (tensor<64xf32>, tensor<2x3x4xf32>, tensor<f32>) {
  %0:3 = colossus.adamw %b, %b, %b, %b, %hyper {beta1 = 0.0 : f64, beta2 = 0.999 : f64, eps = 1.0e-08 : f64, weight_decay = 0.0 : f64} : tensor<64xf32>, tensor<4xf32>
  %1:3 = colossus.adamw %t, %t, %t, %t, %hyper {beta1 = 0.9 : f64, beta2 = 0.95 : f64, eps = 1.0e-06 : f64, weight_decay = 0.1 : f64} : tensor<2x3x4xf32>, tensor<4xf32>
  %2:3 = colossus.adamw %s, %s, %s, %s, %hyper {beta1 = 0.9 : f64, beta2 = 0.999 : f64, eps = 1.0e-08 : f64, weight_decay = 0.01 : f64} : tensor<f32>, tensor<4xf32>
  return %0#0, %1#1, %2#2 : tensor<64xf32>, tensor<2x3x4xf32>, tensor<f32>
}

// The update step's norm and factor: hyper = [lr, 1 - beta1^t, 1 - beta2^t,
// max_norm, grad_scale] in, adamw's 4-value hyper out.
// CHECK-LABEL: func.func @global_norm_clip
// CHECK: %[[N:.+]] = colossus.global_norm %{{.+}}, %{{.+}}, %{{.+}} : tensor<5xf32>, tensor<32x64xf32>, tensor<64xf32>
// CHECK-NEXT: %[[C:.+]] = colossus.clip_hyper %{{.+}}, %[[N]] : tensor<5xf32>, tensor<1xf32>
// CHECK-NEXT: return %[[N]], %[[C]] : tensor<1xf32>, tensor<4xf32>
func.func @global_norm_clip(%h: tensor<5xf32>, %a: tensor<32x64xf32>, %b: tensor<64xf32>) -> (tensor<1xf32>, tensor<4xf32>) {
  %n = colossus.global_norm %h, %a, %b : tensor<5xf32>, tensor<32x64xf32>, tensor<64xf32>
  %c = colossus.clip_hyper %h, %n : tensor<5xf32>, tensor<1xf32>
  return %n, %c : tensor<1xf32>, tensor<4xf32>
}

//===----------------------------------------------------------------------===//
// rope: inverse
//===----------------------------------------------------------------------===//

// inverse defaults to false and is not printed; inverse = true (the
// vector-Jacobian product of the rotation) is kept, with scaling too.
// CHECK-LABEL: func.func @rope_inverse
// CHECK-SAME: (%[[X:.+]]: tensor<8x64xf32>, %[[POS:.+]]: tensor<8xi32>)
// CHECK: %[[A:.+]] = colossus.rope %[[X]], %[[POS]] {head_dim = 16 : i64, layout = #colossus<rope_layout rotate_half>, theta = 1.000000e+04 : f64} : tensor<8x64xf32>, tensor<8xi32>
// CHECK-NEXT: %[[B:.+]] = colossus.rope %[[X]], %[[POS]] {head_dim = 16 : i64, inverse = true, layout = #colossus<rope_layout rotate_half>, theta = 1.000000e+04 : f64} : tensor<8x64xf32>, tensor<8xi32>
// CHECK-NEXT: %[[C:.+]] = colossus.rope %[[B]], %[[POS]] {factor = 8.000000e+00 : f64, head_dim = 16 : i64, inverse = true, layout = #colossus<rope_layout interleaved>, scaling = #colossus<rope_scaling llama3>, theta = 5.000000e+05 : f64} : tensor<8x64xf32>, tensor<8xi32>
// CHECK-NEXT: return %[[A]], %[[C]] : tensor<8x64xf32>, tensor<8x64xf32>
// GENERIC-LABEL: sym_name = "rope_inverse"
// GENERIC: "colossus.rope"({{.*}}) <{{.*}}inverse = false{{.*}}}>
// GENERIC-NEXT: "colossus.rope"({{.*}}) <{{.*}}inverse = true{{.*}}}>
// GENERIC-NEXT: "colossus.rope"({{.*}}) <{{.*}}inverse = true{{.*}}scaling = #colossus<rope_scaling llama3>{{.*}}}>
func.func @rope_inverse(%x: tensor<8x64xf32>, %pos: tensor<8xi32>) -> (tensor<8x64xf32>, tensor<8x64xf32>) {
  %0 = colossus.rope %x, %pos {head_dim = 16 : i64, layout = #colossus<rope_layout rotate_half>, theta = 10000.0 : f64, inverse = false} : tensor<8x64xf32>, tensor<8xi32>
  %1 = colossus.rope %x, %pos {head_dim = 16 : i64, layout = #colossus<rope_layout rotate_half>, theta = 10000.0 : f64, inverse = true} : tensor<8x64xf32>, tensor<8xi32>
  %2 = colossus.rope %1, %pos {head_dim = 16 : i64, layout = #colossus<rope_layout interleaved>, theta = 500000.0 : f64, scaling = #colossus<rope_scaling llama3>, factor = 8.0 : f64, inverse = true} : tensor<8x64xf32>, tensor<8xi32>
  return %0, %2 : tensor<8x64xf32>, tensor<8x64xf32>
}
