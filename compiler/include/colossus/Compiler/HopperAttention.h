//===- HopperAttention.h - TMA + wgmma attention for sm_90a -----*- C++ -*-===//
//
// Builds the FlashAttention-style Hopper kernel of an `attention` fusion
// group (forward, bf16, head_dim 64 or 128, causal or not, GQA): the Q tile
// resident in shared memory, K/V tiles streamed by TMA, wgmma for Q K^T and
// P V, online softmax in registers. Design and launch ABI:
// docs/hopper-attention.md.
//
//===----------------------------------------------------------------------===//
#ifndef COLOSSUS_COMPILER_HOPPERATTENTION_H
#define COLOSSUS_COMPILER_HOPPERATTENTION_H

#include "colossus/Dialect/Colossus/IR/ColossusOps.h"

#include "mlir/IR/Builders.h"

#include <optional>
#include <string>

namespace colossus {

/// Attribute on a generated Hopper attention kernel (a gpu.func): the launch
/// ABI as one line of `key=value` pairs (docs/hopper-attention.md), read by
/// the sm_90a backend and applyLaunchAbi like kHopperGemmAbiAttr.
inline constexpr const char *kHopperAttentionAbiAttr =
    "colossus.hopper_attention";

/// The tile of the kernel.
struct HopperAttentionTile {
  static constexpr int64_t kWarpgroups = 2; ///< consumer warpgroups per CTA
  static constexpr int64_t kThreads = 128 * kWarpgroups;
  static constexpr int64_t kBm = 64 * kWarpgroups; ///< query rows per CTA
  static constexpr int64_t kAlignSlack = 1024;     ///< 1024-byte atom
  /// 227 KiB, the opt-in maximum of dynamic shared memory per block.
  static constexpr int64_t kMaxDynamicSmem = 232448;
  int64_t bn = 128;   ///< keys per K/V tile
  int64_t stages = 0; ///< K/V ring depth
  int64_t headDim = 0;

  int64_t qBytes() const { return kBm * headDim * 2; }
  int64_t kvTileBytes() const { return bn * headDim * 2; }
  int64_t stageBytes() const { return 2 * kvTileBytes(); }
  int64_t dynamicSmemBytes() const {
    return kAlignSlack + qBytes() + stages * stageBytes();
  }
};

/// An attention group the Hopper kernel can compile.
struct HopperAttentionProblem {
  int64_t batch = 0, seq = 0, tokens = 0; ///< B, S (the caches), T (q rows)
  int64_t heads = 0, kvHeads = 0, headDim = 0;
  double scale = 1.0;
  bool causal = true;
  unsigned qArg = 0, kArg = 0, vArg = 0; ///< block-argument numbers
  int outIndex = 0;                      ///< result number of the output
  int lseIndex = -1;  ///< result number of the lse, -1 when not yielded
  mlir::Type outElem; ///< bf16 or f32
  HopperAttentionTile tile;
};

/// Returns the problem when `fusion` is an attention group this kernel
/// handles: one `colossus.attention` on bf16 q, k, v that are group inputs,
/// positions from an in-group `colossus.positions`, static shapes,
/// head_dim 64 or 128, no sliding window, a cache of at least one K/V tile
/// and at least one Q tile of rows. Otherwise returns nullopt and says why
/// in `whyNot`.
std::optional<HopperAttentionProblem> matchHopperAttention(FusionOp fusion,
                                                           std::string &whyNot);

/// Emits the kernel `name` for `problem` (from `fusion`) as a gpu.func at
/// `builder`'s insertion point, which must be in a gpu.module (pinned to
/// sm_90a with PTX ISA 8.3). Parameters: the fusion's block arguments (q, k
/// and v as pointers to CUtensorMap objects in device memory), its results,
/// then nb, nt, pos0 (i64).
mlir::FailureOr<mlir::Operation *>
buildHopperAttention(FusionOp fusion, const HopperAttentionProblem &problem,
                     llvm::StringRef name, mlir::OpBuilder &builder);

} // namespace colossus

#endif
