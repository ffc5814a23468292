//===- KernelEmitter.h - Loop-nest kernels from fusion groups ---*- C++ -*-===//
#ifndef COLOSSUS_COMPILER_KERNELEMITTER_H
#define COLOSSUS_COMPILER_KERNELEMITTER_H

#include "colossus/Dialect/Colossus/IR/ColossusOps.h"
#include "mlir/IR/Builders.h"

namespace colossus {

/// Attribute names the kernelize pass sets on every generated kernel.
namespace kattrs {
inline constexpr const char *kKind = "colossus.kind";
inline constexpr const char *kFusedOps = "colossus.fused_ops";
inline constexpr const char *kCols = "colossus.cols";
inline constexpr const char *kNumArgs = "colossus.num_args";
inline constexpr const char *kFlops = "colossus.flops";
inline constexpr const char *kBytes = "colossus.bytes";
inline constexpr const char *kBlockDim = "colossus.block_dim";
/// Set on kernels whose parallel rows are a fixed count (reductions over
/// the active rows, the loss) rather than the active rows.
inline constexpr const char *kFixedRows = "colossus.fixed_rows";
/// Set by the sm_90a kernel generation on a colossus.fusion (not a kernel)
/// whose kernel needs an arena scratch buffer of this many bytes: the memory
/// plan appends one to the launch's arguments (after the results), live for
/// the fusion's launches only.
inline constexpr const char *kScratchBytes = "colossus.scratch_bytes";
/// Set on a colossus.fusion whose work takes a second kernel (this name),
/// launched right after the fusion's kernel with the same arguments.
inline constexpr const char *kThenKernel = "colossus.then_kernel";
} // namespace kattrs

enum class KernelTarget { Cpu, Gpu };

/// Emits the kernel for `fusion` named `name` at `builder`'s insertion point
/// (a module body for the cpu target, a gpu.module body for sm_90a), and
/// records its launch facts as attributes. Emits a diagnostic on the fusion
/// op and fails for a group it cannot generate.
/// With `hopperGemm` (sm_90a), a bf16 GEMM group that fits becomes the
/// TMA + wgmma kernel of docs/hopper-gemm.md (not launchable by the runtime
/// yet); otherwise every group gets a SIMT kernel.
/// With `hopperAttention` (sm_90a), a bf16 attention group that fits
/// becomes the TMA + wgmma kernel of docs/hopper-attention.md.
mlir::LogicalResult emitKernel(FusionOp fusion, llvm::StringRef name,
                               KernelTarget target, unsigned blockDim,
                               mlir::OpBuilder &builder,
                               bool hopperGemm = false,
                               bool hopperAttention = false);

} // namespace colossus

#endif
