// RUN: %colossus-opt %s --colossus-autodiff="recompute=none" | FileCheck %s
// RUN: %colossus-opt %s --colossus-autodiff="recompute=layer" | FileCheck %s --check-prefix=LAYER
// RUN: not %colossus-opt %s --colossus-autodiff="recompute=some" 2>&1 | FileCheck %s --check-prefix=BAD

// recompute=none: the layer calls are inlined into @loss_grad before the
// reverse sweep, so the backward reads the forward's activations: one
// forward linear per layer (none in a vjp), no vjp function, no call.
// CHECK-NOT: func.func private @layer_vjp
// CHECK-LABEL: func.func @loss_grad
// CHECK-SAME: %[[X:[^:]*]]: tensor<8x16xf32>, %{{[^:]*}}: tensor<8xi32>, %[[W1:[^:]*]]: tensor<16x16xf32> {colossus.param = "w1"}, %[[W2:[^:]*]]: tensor<16x16xf32> {colossus.param = "w2"}
// CHECK-NOT: call
// CHECK: %[[Y1:.*]] = colossus.linear %[[X]], %[[W1]]
// CHECK: %[[Z1:.*]] = colossus.add %[[X]], %[[Y1]]
// CHECK: %[[Y2:.*]] = colossus.linear %[[Z1]], %[[W2]]
// CHECK: colossus.cross_entropy_grad
// CHECK: %[[G2:.*]] = colossus.linear_weight_grad %[[Z1]],
// CHECK: %[[G1:.*]] = colossus.linear_weight_grad %[[X]],
// CHECK-NOT: call
// CHECK: return %{{.*}}, %[[G1]], %[[G2]]
// LAYER: func.func private @layer_vjp
// LAYER-LABEL: func.func @loss_grad
// LAYER: call @layer_vjp
// BAD: colossus-autodiff: recompute=some: expected 'layer' or 'none'
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
