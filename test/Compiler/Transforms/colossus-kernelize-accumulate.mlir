// RUN: %colossus-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(colossus-fuse),colossus-kernelize)' --verify-diagnostics | FileCheck %s

// Gradient accumulation: a kernel result the step returns as a gradient
// (result attribute colossus.param) is added into its buffer (out += x), so
// that micro-batches sum without the runtime zeroing the gradients between
// them (docs/autodiff.md).
// CHECK-LABEL: func.func @loss_grad_0_reduce
// CHECK-SAME: %[[OUT:[a-z0-9]+]]: memref<32x16xf32>
// CHECK: %[[OLD:.*]] = memref.load %[[OUT]]
// CHECK: %[[NEW:.*]] = arith.addf %[[OLD]], %{{.*}} : f32
// CHECK: memref.store %[[NEW]], %[[OUT]]
func.func @loss_grad(%x: tensor<8x16xf32>, %dy: tensor<8x32xf32>) -> (tensor<32x16xf32> {colossus.param = "w"}) {
  %g = colossus.linear_weight_grad %x, %dy : tensor<8x16xf32>, tensor<8x32xf32>
  return %g : tensor<32x16xf32>
}

// -----

// The same kernel returning a plain result stores it.
// CHECK-LABEL: func.func @plain_0_reduce
// CHECK-SAME: %[[OUT:[a-z0-9]+]]: memref<32x16xf32>
// CHECK-NOT: memref.load %[[OUT]]
// CHECK: memref.store %{{.*}}, %[[OUT]]
func.func @plain(%x: tensor<8x16xf32>, %dy: tensor<8x32xf32>) -> tensor<32x16xf32> {
  %g = colossus.linear_weight_grad %x, %dy : tensor<8x16xf32>, tensor<8x32xf32>
  return %g : tensor<32x16xf32>
}

// -----

// A gradient that another op also reads cannot be accumulated into.
func.func @shared(%x: tensor<8x16xf32>, %dy: tensor<8x32xf32>) -> (tensor<32x16xf32> {colossus.param = "w"}, tensor<32x16xf32>) {
  %g = colossus.linear_weight_grad %x, %dy : tensor<8x16xf32>, tensor<8x32xf32>
  %h = colossus.add %g, %g : tensor<32x16xf32>
  // expected-error @+1 {{gradient result 0 is also used by another op: its kernel cannot accumulate into it}}
  return %g, %h : tensor<32x16xf32>, tensor<32x16xf32>
}
