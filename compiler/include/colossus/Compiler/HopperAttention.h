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

/// Attribute of a generated Hopper attention backward (dK/dV) kernel: its
/// launch ABI line (docs/hopper-attention.md "Backward").
inline constexpr const char *kHopperAttentionBwdAbiAttr =
    "colossus.hopper_attention_bwd";

/// The tile of the dK/dV kernel: 128 keys per CTA (64 per warpgroup),
/// resident K and V; Q and dO streamed in tiles of 64 query rows.
struct HopperAttentionBwdTile {
  static constexpr int64_t kWarpgroups = 2;
  static constexpr int64_t kThreads = 128 * kWarpgroups;
  static constexpr int64_t kBn = 64 * kWarpgroups; ///< keys per CTA
  static constexpr int64_t kBq = 64;               ///< query rows per tile
  static constexpr int64_t kStages = 3;            ///< Q/dO ring depth
  static constexpr int64_t kAlignSlack = 1024;
  int64_t headDim = 0;
  /// The out and lse rows of the next query tile are prefetched by
  /// cp.async into shared memory (two buffers) while the current tile is
  /// computed; false: the first version's global loads inside the D
  /// computation (internal option --hopper-attention-bwd=v1).
  bool prefetchOut = true;
  /// The v3 schedule (internal option --hopper-attention-bwd=v3): each
  /// warpgroup computes the D and lse of all the tile's rows itself (2
  /// threads a row, its own out / lse prefetch buffer and stats slots) and
  /// synchronizes with a named barrier of its 128 threads only; unmasked
  /// tiles skip the mask; dV += P^T dO is issued before dS^T is computed;
  /// CTAs in longest-processing-time-first order.
  bool decoupled = false;

  /// v3: one warpgroup's out buffer (128 threads x head_dim / 2 bf16), the
  /// tile's lse (f32), then two stats slots (D and lse * log2 e, f32).
  int64_t wgOutBytes() const { return 128 * headDim; }
  int64_t wgAreaBytes() const {
    return wgOutBytes() + kBq * 4 + 2 * statsBytes();
  }

  int64_t kvTileBytes() const { return kBn * headDim * 2; }
  int64_t qTileBytes() const { return kBq * headDim * 2; }
  int64_t stageBytes() const { return 2 * qTileBytes(); }
  /// Per stage: D and lse (log2 e scaled) of the tile's rows, f32.
  int64_t statsBytes() const { return 2 * kBq * 4; }
  /// One prefetch buffer: each thread's quarter row of out (head_dim / 2
  /// bytes), then the tile's kBq lse values (f32).
  int64_t prefetchBytes() const { return kThreads * headDim / 2 + kBq * 4; }
  int64_t dynamicSmemBytes() const {
    if (decoupled)
      return kAlignSlack + 2 * kvTileBytes() + kStages * stageBytes() +
             kWarpgroups * wgAreaBytes();
    return kAlignSlack + 2 * kvTileBytes() +
           kStages * (stageBytes() + statsBytes()) +
           (prefetchOut ? 2 * prefetchBytes() : 0);
  }
};

/// The tile of the dQ kernel: 128 query rows per CTA (64 per warpgroup),
/// resident Q and dO; K and V streamed in tiles of 64 keys.
struct HopperAttentionDqTile {
  static constexpr int64_t kWarpgroups = 2;
  static constexpr int64_t kThreads = 128 * kWarpgroups;
  static constexpr int64_t kBm = 64 * kWarpgroups; ///< query rows per CTA
  static constexpr int64_t kBn = 64;               ///< keys per K/V tile
  static constexpr int64_t kStages = 3;            ///< K/V ring depth
  static constexpr int64_t kAlignSlack = 1024;
  int64_t headDim = 0;

  int64_t qTileBytes() const { return kBm * headDim * 2; }
  int64_t kvTileBytes() const { return kBn * headDim * 2; }
  int64_t stageBytes() const { return 2 * kvTileBytes(); }
  int64_t dynamicSmemBytes() const {
    return kAlignSlack + 2 * qTileBytes() + kStages * stageBytes();
  }
};

/// An attention_grad group the Hopper backward computes: its dk/dv group
/// (the dK/dV kernel) or its dq group (the dQ kernel).
struct HopperAttentionBwdProblem {
  int64_t batch = 0, seq = 0, tokens = 0;
  int64_t heads = 0, kvHeads = 0, headDim = 0;
  double scale = 1.0;
  bool causal = true;
  /// Block-argument numbers of q, k, v, dout, out, lse.
  unsigned qArg = 0, kArg = 0, vArg = 0, doArg = 0, outArg = 0, lseArg = 0;
  bool dq = false;             ///< the group yields dq (else dk, dv)
  /// The schedule (docs/hopper-attention.md "Backward"): 1 and 2 the
  /// dK/dV kernel's first and prefetching versions, 3 the decoupled one
  /// (and the dQ kernel's longest-first CTA order); internal option
  /// --hopper-attention-bwd=v1|v2|v3, default 2.
  int variant = 2;
  HopperAttentionBwdTile tile; ///< of the dK/dV kernel
};

/// Returns the problem when `fusion` is an attention_grad group yielding
/// dq or dk, dv that the Hopper backward handles (bf16 q, k, v, dout, out and
/// f32 lse that are group inputs, static shapes, head_dim 64 or 128, no sliding
/// window, S >= 128 and T >= 64, 128 for dq); otherwise nullopt and why in
/// `whyNot`.
std::optional<HopperAttentionBwdProblem>
matchHopperAttentionBwd(FusionOp fusion, std::string &whyNot);

/// Emits the dK/dV or the dQ kernel `name` as a gpu.func at `builder`'s
/// insertion point (in a gpu.module). Parameters as the SIMT kernel's, with q,
/// k, v and dout as pointers to CUtensorMap objects in device memory.
mlir::FailureOr<mlir::Operation *>
buildHopperAttentionBwd(FusionOp fusion,
                        const HopperAttentionBwdProblem &problem,
                        llvm::StringRef name, mlir::OpBuilder &builder);

} // namespace colossus

#endif
