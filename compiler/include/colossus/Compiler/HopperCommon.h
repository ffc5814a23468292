//===- HopperCommon.h - Shared pieces of the sm_90a TMA + wgmma kernels ---===//
//
// What the Hopper GEMM (HopperGemm.cpp) and the Hopper attention
// (HopperAttention.cpp) builders share: the kernel module's target and
// dynamic shared memory symbol, the tensor-map fence, the 128-byte swizzled
// tensor-map type and the wgmma shared-memory descriptor.
//
//===----------------------------------------------------------------------===//
#ifndef COLOSSUS_COMPILER_HOPPERCOMMON_H
#define COLOSSUS_COMPILER_HOPPERCOMMON_H

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "mlir/IR/Builders.h"
#include "llvm/ADT/STLFunctionalExtras.h"

namespace colossus {

/// Loads the dialects the Hopper kernels use, pins `module`'s target to
/// sm_90a with PTX ISA 8.3 (for the tensor-map fence; the lowering keeps the
/// first target's object) and declares the external dynamic shared memory
/// symbol that gpu.dynamic_shared_memory reuses (docs/hopper-gemm.md).
void prepareHopperModule(mlir::gpu::GPUModuleOp module,
                         mlir::OpBuilder &builder, mlir::Location loc);

/// Creates the kernel `name` (at `builder`'s insertion point) of a fusion
/// whose region entry block is `body` and whose results are `resultTypes`
/// (ranked tensors): the arguments for which `isTensorMap` holds become
/// generic pointers (to a CUtensorMap), the other inputs and the results
/// memrefs of their shapes, then three i64 extents follow. Marked a kernel
/// with a known block size of `threads` x 1 x 1.
mlir::gpu::GPUFuncOp createHopperKernel(
    mlir::OpBuilder &builder, mlir::Location loc, llvm::StringRef name,
    mlir::Block &body, mlir::TypeRange resultTypes,
    llvm::function_ref<bool(unsigned)> isTensorMap, int32_t threads);

/// `fence.proxy.tensormap::generic.acquire.gpu [ptr], 128`: orders the
/// host's write of the CUtensorMap at `ptr` (generic pointer) before the
/// tensor-map proxy reads it.
void fenceTensorMap(mlir::OpBuilder &b, mlir::Location loc, mlir::Value ptr);

/// The nvgpu tensor-map type of a TMA box `tile` (a shared-memory memref)
/// with 128-byte swizzle, 256-byte L2 promotion, zero fill out of bounds.
mlir::nvgpu::TensorMapDescriptorType
swizzled128TensorMap(mlir::MLIRContext *ctx, mlir::MemRefType tile);

/// The wgmma shared-memory descriptor (i64) of a 128-byte-swizzled operand
/// at shared address `addr` (bytes, i64; its 1024-byte atom aligned so the
/// base offset is 0): start address >> 4 in bits [0, 14), leading byte
/// offset `lbo` >> 4 in [16, 30), stride byte offset `sbo` >> 4 in [32, 46),
/// swizzle mode 1 (128B) in [62, 64).
mlir::Value wgmmaDescriptor128B(mlir::OpBuilder &b, mlir::Location loc,
                                mlir::Value addr, int64_t lbo, int64_t sbo);

} // namespace colossus

#endif
