// RUN: %colossus-opt %s --colossus-kernelize | FileCheck %s --check-prefix=CPU
// RUN: %colossus-opt %s --colossus-kernelize=target=sm_90a | FileCheck %s --check-prefix=GPU
// RUN: %not %colossus-opt %s --colossus-kernelize=target=sm_80 2>&1 | FileCheck %s --check-prefix=BAD

// BAD: unknown target 'sm_80' (expected cpu or sm_90a)

// The fusion records its kernel; the kernels live in the nested @kernels
// module, take the buffers of the inputs then the results, then nb, nt, pos0.
// CPU-LABEL: func.func @step
// CPU: colossus.fusion "gemm"{{.*}}kernel = @step_0_gemm
// CPU: colossus.fusion "norm"{{.*}}kernel = @step_1_norm
// CPU: module @kernels
// CPU: func.func @step_0_gemm(%[[X:.*]]: memref<8x16xf32>, %[[W:.*]]: memref<32x16xf32>, %[[R:.*]]: memref<8x32xf32>, %[[OUT:.*]]: memref<8x32xf32>, %[[NB:.*]]: i64, %[[NT:.*]]: i64, %{{.*}}: i64)
// CPU-SAME: colossus.cols = 32
// CPU-SAME: colossus.fused_ops = ["colossus.linear", "colossus.add"]
// CPU-SAME: colossus.kind = "gemm"
// CPU-SAME: colossus.num_args = 4
// cpu: the GEMM core is a linalg contraction over the active rows
// (nb * nt) written into the result buffer (the cpu backend tiles and
// vectorizes it); the epilogue loop then adds the residual in place.
// CPU: %[[ROWS:.*]] = arith.muli
// CPU: %[[XS:.*]] = memref.subview %[[X]][0, 0] [%[[ROWS]], 16] [1, 1]
// CPU: %[[OS:.*]] = memref.subview %[[OUT]][0, 0] [%[[ROWS]], 32] [1, 1]
// CPU: linalg.fill ins(%{{.*}} : f32) outs(%[[OS]]
// CPU: linalg.generic {{.*}}iterator_types = ["parallel", "parallel", "reduction"]{{.*}} ins(%[[XS]], %[[W]] : {{.*}} outs(%[[OS]]
// CPU: scf.for %[[ROW:.*]] = %{{.*}} to %[[ROWS]]
// CPU: scf.for %[[COL:.*]] = %{{.*}} to %{{.*}}
// CPU: %[[ACC:.*]] = memref.load %[[OUT]][%[[ROW]], %[[COL]]]
// CPU: %[[RES:.*]] = memref.load %[[R]][%[[ROW]], %[[COL]]]
// CPU: %[[SUM:.*]] = arith.addf %[[ACC]], %[[RES]]
// CPU: memref.store %[[SUM]], %[[OUT]][%[[ROW]], %[[COL]]]
// The norm is a row kernel: one parallel column, a reduction, a column loop.
// CPU: func.func @step_1_norm
// CPU-SAME: colossus.cols = 1
// CPU: math.sqrt
// CPU: memref.store

// GPU: module @kernels attributes {gpu.container_module}
// GPU: gpu.module @step_0_gemm
// GPU: gpu.func @step_0_gemm({{.*}}) kernel
// GPU-SAME: colossus.block_dim = 128
// GPU: gpu.block_id x
// GPU: gpu.block_dim x
// GPU: gpu.thread_id x
// GPU: %[[IN:.*]] = arith.cmpi ult
// GPU: scf.if %[[IN]]
// GPU: arith.divui
// GPU: arith.remui
// GPU: vector.load
// GPU: vector.fma
// GPU: vector.reduction <add>
// GPU: gpu.return
// GPU: gpu.module @step_1_norm

func.func @step(%x: tensor<8x16xf32>, %w: tensor<32x16xf32>, %r: tensor<8x32xf32>, %g: tensor<32xf32>) -> tensor<8x32xf32> {
  %0 = colossus.fusion "gemm"(%x, %w, %r) : (tensor<8x16xf32>, tensor<32x16xf32>, tensor<8x32xf32>) -> tensor<8x32xf32> {
  ^bb0(%a: tensor<8x16xf32>, %b: tensor<32x16xf32>, %c: tensor<8x32xf32>):
    %1 = colossus.linear %a, %b : tensor<8x16xf32>, tensor<32x16xf32>
    %2 = colossus.add %1, %c : tensor<8x32xf32>
    colossus.yield %2 : tensor<8x32xf32>
  }
  %3 = colossus.fusion "norm"(%0, %g) : (tensor<8x32xf32>, tensor<32xf32>) -> tensor<8x32xf32> {
  ^bb0(%a: tensor<8x32xf32>, %b: tensor<32xf32>):
    %4 = colossus.rms_norm %a, %b eps = 1.0e-05 : tensor<8x32xf32>, tensor<32xf32>
    colossus.yield %4 : tensor<8x32xf32>
  }
  return %3 : tensor<8x32xf32>
}
