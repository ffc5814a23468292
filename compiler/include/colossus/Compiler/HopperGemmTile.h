//===- HopperGemmTile.h - Tile shape of the sm_90a GEMM ---------*- C++ -*-===//
//
// The tile heuristic of the Hopper TMA + wgmma GEMM (docs/hopper-gemm.md).
// Plain C++ without MLIR so that it is unit-tested on its own.
//
//===----------------------------------------------------------------------===//
#ifndef COLOSSUS_COMPILER_HOPPERGEMMTILE_H
#define COLOSSUS_COMPILER_HOPPERGEMMTILE_H

#include <cstdint>
#include <optional>
#include <string>

namespace colossus {

/// The CTA tile of C[M, N] = A[M, K] * B[N, K]^T and the depth of the
/// shared-memory pipeline.
struct HopperGemmTile {
  int64_t bm = 0;     ///< rows of C per CTA (64 or 128: one or two m64 wgmma)
  int64_t bn = 0;     ///< columns of C per CTA (the wgmma n)
  int64_t bk = 0;     ///< k per pipeline stage (64 bf16 = one 128-byte row)
  int64_t stages = 0; ///< tiles in the shared-memory ring
  /// B tiles per stage, one accumulator each: 1, or 2 for the dual GEMM
  /// (gate and up projections sharing A).
  int64_t bOperands = 1;

  /// Bytes of one stage: an A tile [bm, bk] and `bOperands` B tiles
  /// [bn, bk], bf16.
  int64_t stageBytes() const { return (bm + bOperands * bn) * bk * 2; }
  /// Dynamic shared memory the kernel needs: the ring plus 1024 bytes of
  /// slack to align it to 1024 bytes (128-byte swizzle atoms).
  int64_t dynamicSmemBytes() const {
    return stages * stageBytes() + kSmemAlignSlack;
  }
  /// f32 accumulator registers per thread (one warpgroup holds bOperands
  /// accumulators of bm x bn).
  int64_t accumulatorRegisters() const {
    return bOperands * bm * bn / kThreads;
  }

  static constexpr int64_t kThreads = 128; ///< one warpgroup per CTA
  static constexpr int64_t kSmemAlignSlack = 1024;
};

/// Limits the heuristic designs against (H100/H200 SXM).
struct HopperGemmLimits {
  int64_t numSMs = 132;
  /// Opt-in dynamic shared memory per block (227 KB), less the static
  /// shared memory of the mbarriers (8 bytes per stage, rounded up).
  int64_t maxDynamicSmem = 227 * 1024 - 128;
  int64_t maxStages = 8;
  int64_t minStages = 3;
  /// The accumulator must leave room for addresses and the epilogue.
  int64_t maxAccumulatorRegisters = 128;
};

/// Chooses the tile for an M x N x K bf16 GEMM, or returns nullopt (and the
/// reason in `whyNot`) when no tile divides the problem: M must be a multiple
/// of 64, N of 64, K of 64. The rule (docs/hopper-gemm.md):
///  1. bk = 64 (one 128-byte swizzled row of bf16);
///  2. candidates (bm, bn), largest first: (128, 128), (64, 256), (128, 64),
///     (64, 128), (64, 64), keeping those that divide M and N and whose
///     accumulator fits the register budget;
///  3. the first candidate that yields at least `numSMs` CTAs (one full
///     wave), else the candidate with the most CTAs (small problems: more,
///     smaller tiles keep more SMs busy);
///  4. stages = as many as fit the shared-memory budget, capped at maxStages
///     and at the number of k tiles (but never below minStages, which must
///     fit: otherwise the candidate is dropped).
/// With `bOperands` = 2 (the dual GEMM) a stage holds two B tiles and the
/// register budget covers two accumulators.
std::optional<HopperGemmTile>
selectHopperGemmTile(int64_t m, int64_t n, int64_t k,
                     const HopperGemmLimits &limits = HopperGemmLimits(),
                     std::string *whyNot = nullptr, int64_t bOperands = 1);

} // namespace colossus

#endif
