//===- HopperGemm.h - TMA + wgmma GEMM kernels for sm_90a -------*- C++ -*-===//
//
// Builds the Hopper tensor-core kernel of a `gemm` fusion group whose
// linears multiply bf16 operands (or of a weight gradient): C = sum_i A_i
// B_i (or the dual C0 = A B, C1 = A B2), operands K- or M/N-contiguous, f32
// accumulation, then the group's elementwise epilogue, outputs bf16 or f32.
// Design, tile heuristic and the launch ABI: docs/hopper-gemm.md.
//
//===----------------------------------------------------------------------===//
#ifndef COLOSSUS_COMPILER_HOPPERGEMM_H
#define COLOSSUS_COMPILER_HOPPERGEMM_H

#include "colossus/Compiler/HopperGemmTile.h"
#include "colossus/Dialect/Colossus/IR/ColossusOps.h"

#include "mlir/IR/Builders.h"

#include <string>
#include <vector>

namespace colossus {

/// Attribute on a generated Hopper GEMM kernel (a gpu.func): the launch ABI
/// as one line of `key=value` pairs (docs/hopper-gemm.md). The sm_90a backend
/// copies it into GpuKernelBinary::abi; its presence means the kernel needs
/// TMA tensor maps and a fixed launch shape, which applyLaunchAbi
/// (ArtifactWriter.h) records in the artifact for the runtime.
inline constexpr const char *kHopperGemmAbiAttr = "colossus.hopper_gemm";

/// How a GEMM operand lies in global memory (row-major buffers):
/// `K` - K-contiguous (A as [M, K], B as [N, K]: the x and the weight of a
/// `transpose_w` linear); `MN` - M- or N-contiguous (A as [K, M], B as
/// [K, N]: the weight of a `transpose_w = false` linear, both operands of a
/// weight gradient). The wgmma transpose flags (imm-trans-a/b) are 1 for
/// `MN`.
enum class GemmMajor { K, MN };

/// One product A_i * B_i of accumulator 0, over its own K_i: the terms'
/// K ranges are concatenated (sum_i A_i B_i = [A_0 A_1 ..] [B_0; B_1; ..]).
struct HopperGemmTerm {
  unsigned aArg = 0, bArg = 0; ///< block-argument numbers
  int64_t k = 0;
};

/// A fusion group the Hopper GEMM can compile.
struct HopperGemmProblem {
  int64_t m = 0, n = 0, k = 0; ///< k: the sum of the terms'
  GemmMajor aMajor = GemmMajor::K, bMajor = GemmMajor::K;
  std::vector<HopperGemmTerm> terms; ///< accumulator 0
  /// The dual GEMM: accumulator 1 = A_0 * B2 (one term, same layouts).
  int b2Arg = -1;
  /// Weight gradient: K is the token dimension; rows >= nb * nt of both
  /// operands are zeroed in shared memory before the wgmmas, and every
  /// output row is written.
  bool tokenK = false;
  /// The group values the accumulators stand for (a linear, a sum of
  /// linears, a linear_weight_grad); a linear's bias is added in the
  /// epilogue.
  mlir::Value accValue[2];
  /// The epilogue value of each kernel output (in yield order) and its
  /// element type. For a yielded `colossus.cache_write` the value is its
  /// `x`: row r of it goes to the cache at [r / nt, pos0 + r % nt].
  std::vector<mlir::Value> outputs;
  std::vector<mlir::Type> outElems;
  /// Per output: the cache's [B, S] (batch, capacity) when the output is a
  /// KV cache written by a `colossus.cache_write`, else {0, 0} (an [M, N]
  /// output at [row, col]).
  std::vector<std::pair<int64_t, int64_t>> cacheDims;
  /// For the launch ABI's legacy keys: the bias of a single linear and a
  /// group input added to it (-1 when absent).
  int biasArg = -1, residualArg = -1;
  mlir::Type biasElem, residualElem;
  HopperGemmTile tile;
};

/// Returns the problem when `fusion` is a group this kernel handles
/// (docs/hopper-gemm.md "When it is used"): bf16 `colossus.linear`s with
/// static shapes forming one accumulator (one linear, or a sum of linears
/// with the same layout) or two (two linears sharing x: the dual GEMM), or
/// one `colossus.linear_weight_grad`, followed by elementwise ops the
/// epilogue computes, whose results may be stored into a KV cache by
/// `colossus.cache_write` at `colossus.positions`; and a tile from
/// selectHopperGemmTile. Otherwise returns nullopt and says why in
/// `whyNot`.
std::optional<HopperGemmProblem> matchHopperGemm(FusionOp fusion,
                                                 std::string &whyNot);

/// Emits the kernel `name` for `problem` (from `fusion`) as a gpu.func at
/// `builder`'s insertion point, which must be in a gpu.module; pins the
/// module's target (sm_90a, PTX ISA 8.3 for the tensor-map fence) and adds
/// the dynamic shared memory symbol. The kernel's parameters follow the
/// fusion's block arguments, then its results, then nb, nt, pos0 (i64), as
/// every kernel's; the A and B operands are passed as pointers to CUtensorMap
/// objects in device memory instead of data pointers. The kernel's
/// `colossus.hopper_gemm` attribute is its launch ABI line.
mlir::FailureOr<mlir::Operation *>
buildHopperGemm(FusionOp fusion, const HopperGemmProblem &problem,
                llvm::StringRef name, mlir::OpBuilder &builder);

} // namespace colossus

#endif
