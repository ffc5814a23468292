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

/// The CTA tile of C[M, N] = A[M, K] * B[N, K]^T, the depth of the
/// shared-memory pipeline, the warpgroups of a CTA and the persistent grid.
///
/// A CTA is one producer warpgroup (one elected thread issues the TMA loads)
/// and `consumers` consumer warpgroups (wgmma); consumer c computes rows
/// [c * consumerRows(), (c + 1) * consumerRows()) of each tile.
struct HopperGemmTile {
  int64_t bm = 0;        ///< rows of C per tile (64, 128 or 256)
  int64_t bn = 0;        ///< columns of C per tile (the wgmma n)
  int64_t bk = 0;        ///< k per pipeline stage (64 bf16 = one 128-byte row)
  int64_t stages = 0;    ///< tiles in the shared-memory ring
  int64_t consumers = 1; ///< consumer warpgroups: 1 (bm = 64) or 2
  int64_t grid = 0;      ///< persistent CTAs: min(numSMs, tiles)
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
  /// Rows of a tile one consumer warpgroup computes (a multiple of 64).
  int64_t consumerRows() const { return bm / consumers; }
  /// f32 accumulator registers per consumer thread over all its accumulators
  /// (bOperands accumulators of consumerRows x bn over one warpgroup).
  int64_t accumulatorRegisters() const {
    return bOperands * consumerRows() * bn / kWarpgroupThreads;
  }
  /// Threads per CTA: the producer warpgroup and the consumers.
  int64_t threads() const { return kWarpgroupThreads * (1 + consumers); }
  /// Per-thread registers the consumers ask for (setmaxnreg.inc). With 384
  /// threads the kernel starts at 168 (65536 / 384, rounded down to 8); the
  /// producer's release (128 x (168 - 40)) pays for 2 x 128 x (232 - 168).
  int64_t consumerRegisters() const { return consumers == 2 ? 232 : 240; }

  static constexpr int64_t kWarpgroupThreads = 128;
  static constexpr int64_t kSmemAlignSlack = 1024;
  /// The persistent grid: one CTA per SM of an H100 SXM / H200 (132 SMs).
  /// Part of the launch ABI (grid = min(kNumSMs, tiles)); on a GPU with fewer
  /// SMs the surplus CTAs simply run after the others.
  static constexpr int64_t kNumSMs = 132;
  /// Tile rows per group of the L2-friendly tile order.
  static constexpr int64_t kGroupRows = 8;
  /// Per-thread registers the producer warpgroup keeps (setmaxnreg.dec).
  static constexpr int64_t kProducerRegisters = 40;
};

/// Limits the heuristic designs against (H100/H200 SXM).
struct HopperGemmLimits {
  int64_t numSMs = HopperGemmTile::kNumSMs;
  /// Opt-in dynamic shared memory per block (227 KB), less the static
  /// shared memory of the mbarriers (a full and an empty one per stage,
  /// 16 bytes per stage, at most 8 stages).
  int64_t maxDynamicSmem = 227 * 1024 - 128;
  int64_t maxStages = 8;
  int64_t minStages = 3;
  /// Accumulator registers per consumer thread, all accumulators together:
  /// must leave room for addresses and the epilogue under setmaxnreg's 232.
  int64_t maxAccumulatorRegisters = 128;
};

/// Chooses the tile for an M x N x K bf16 GEMM, or returns nullopt (and the
/// reason in `whyNot`) when no tile divides the problem: M must be a multiple
/// of 64, N of 64, K of 64. The rule (docs/hopper-gemm.md):
///  1. bk = 64 (one 128-byte swizzled row of bf16);
///  2. candidates (bm, bn), in order: (128, 256), (256, 128), (128, 128),
///     (64, 256), (128, 64), (64, 128), (64, 64); two consumer warpgroups
///     when bm >= 128, else one; keeping those that divide M and N, whose
///     accumulator per consumer thread fits the register budget and whose
///     ring fits minStages;
///  3. the score of a candidate is its wave efficiency, tiles / (ceil(tiles /
///     numSMs) * numSMs), times its arithmetic intensity bm * bn / (bm + bn)
///     (multiply-adds per operand element loaded); the highest score wins,
///     the earlier candidate on a tie;
///  4. stages = as many as fit the shared-memory budget, capped at maxStages
///     and at the number of k tiles (but never below minStages);
///  5. grid = min(numSMs, tiles): the persistent CTAs.
/// With `bOperands` = 2 (the dual GEMM) a stage holds two B tiles, the
/// register budget covers both accumulators of a consumer thread (at most
/// maxAccumulatorRegisters f32 in total) and the intensity counts both
/// products: bOperands * bm * bn / (bm + bOperands * bn).
std::optional<HopperGemmTile>
selectHopperGemmTile(int64_t m, int64_t n, int64_t k,
                     const HopperGemmLimits &limits = HopperGemmLimits(),
                     std::string *whyNot = nullptr, int64_t bOperands = 1);

} // namespace colossus

#endif
