//===- HopperGemm.h - TMA + wgmma GEMM kernels for sm_90a -------*- C++ -*-===//
//
// Builds the Hopper tensor-core kernel of a `gemm` fusion group whose linear
// multiplies bf16 operands: C[M, N] = A[M, K] * B[N, K]^T (+ bias)
// (+ residual), f32 accumulation, C bf16 or f32. Design, tile heuristic and
// the launch ABI: docs/hopper-gemm.md.
//
//===----------------------------------------------------------------------===//
#ifndef COLOSSUS_COMPILER_HOPPERGEMM_H
#define COLOSSUS_COMPILER_HOPPERGEMM_H

#include "colossus/Compiler/HopperGemmTile.h"
#include "colossus/Dialect/Colossus/IR/ColossusOps.h"

#include "mlir/IR/Builders.h"

#include <string>

namespace colossus {

/// Attribute on a generated Hopper GEMM kernel (a gpu.func): the launch ABI
/// as one line of `key=value` pairs (docs/hopper-gemm.md). The sm_90a backend
/// copies it into GpuKernelBinary::abi; its presence means the kernel needs
/// TMA tensor maps and a fixed launch shape, which applyLaunchAbi
/// (ArtifactWriter.h) records in the artifact for the runtime.
inline constexpr const char *kHopperGemmAbiAttr = "colossus.hopper_gemm";

/// A fusion group the Hopper GEMM can compile.
struct HopperGemmProblem {
  int64_t m = 0, n = 0, k = 0;
  unsigned xArg = 0, weightArg = 0; ///< block-argument numbers of A and B
  int biasArg = -1, residualArg = -1;
  mlir::Type outElem;  ///< bf16 or f32
  mlir::Type biasElem; ///< bf16 or f32 when biasArg >= 0
  mlir::Type residualElem;
  HopperGemmTile tile;
};

/// Returns the problem when `fusion` is a gemm group this kernel handles: one
/// `colossus.linear` (transpose_w, bf16 x and weight, static shapes, optional
/// bias), optionally followed by a residual `colossus.add`, yielding the last
/// of them; and a tile from selectHopperGemmTile. Otherwise returns nullopt
/// and says why in `whyNot`.
std::optional<HopperGemmProblem> matchHopperGemm(FusionOp fusion,
                                                 std::string &whyNot);

/// Emits the kernel `name` for `problem` (from `fusion`) as a gpu.func at
/// `builder`'s insertion point, which must be in a gpu.module; pins the
/// module's target (sm_90a, PTX ISA 8.3 for the tensor-map fence) and adds
/// the dynamic shared memory symbol. The kernel's parameters follow the
/// fusion's block arguments, then its results, then nb, nt, pos0 (i64), as
/// every kernel's; the A and B operands are passed as pointers to CUtensorMap
/// objects in device memory instead of data pointers.
mlir::FailureOr<mlir::Operation *>
buildHopperGemm(FusionOp fusion, const HopperGemmProblem &problem,
                llvm::StringRef name, mlir::OpBuilder &builder);

} // namespace colossus

#endif
