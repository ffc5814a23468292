// RUN: %colossus-opt %s --pass-pipeline='builtin.module(func.func(colossus-fuse),colossus-kernelize{target=sm_90a hopper-gemm=1})' | FileCheck %s

// The accumulate rewrite on a Hopper GEMM kernel (docs/hopper-gemm.md
// "Weight gradients"): a weight gradient returned as a gradient is added
// into its buffer; the epilogue's column-pair vector.store becomes load,
// add, store, and the launch ABI says so (accumulate=0).
// CHECK-LABEL: gpu.func @wgrad_0_reduce
// CHECK-SAME: %[[OUT:[a-z0-9]+]]: memref<128x64xf32>
// CHECK-SAME: colossus.hopper_gemm = "m=128 n=64 k=256 {{.*}} a_layout=mn b_layout=mn {{.*}} mask_k=1 outs=1 epilogue=acc0 accumulate=0"
// CHECK: nvvm.wgmma.mma_async
// CHECK: %[[OLD:.*]] = vector.load %[[OUT]][{{.*}}] {{.*}}: memref<128x64xf32>, vector<2xf32>
// CHECK: %[[NEW:.*]] = arith.addf %[[OLD]], %{{.*}} : vector<2xf32>
// CHECK: vector.store %[[NEW]], %[[OUT]]
func.func @wgrad(%x: tensor<256x64xbf16>, %dy: tensor<256x128xbf16>) -> (tensor<128x64xf32> {colossus.param = "w"}) {
  %g = colossus.linear_weight_grad %x, %dy : tensor<256x64xbf16>, tensor<256x128xbf16>
  return %g : tensor<128x64xf32>
}

// A plain result is stored: no load of the output, no accumulate key.
// CHECK-LABEL: gpu.func @plain_0_reduce
// CHECK-SAME: %[[OUT2:[a-z0-9]+]]: memref<128x64xf32>
// CHECK-SAME: mask_k=1 outs=1 epilogue=acc0"
// CHECK-NOT: vector.load %[[OUT2]]
// CHECK: vector.store %{{.*}}, %[[OUT2]]
func.func @plain(%x: tensor<256x64xbf16>, %dy: tensor<256x128xbf16>) -> tensor<128x64xf32> {
  %g = colossus.linear_weight_grad %x, %dy : tensor<256x64xbf16>, tensor<256x128xbf16>
  return %g : tensor<128x64xf32>
}
