//===- HopperGemm.cpp - TMA + wgmma GEMM kernels for sm_90a ---------------===//
//
// A persistent, warp-specialized kernel computing C = A * B^T in bm x bn
// tiles over K in steps of bk = 64 (docs/hopper-gemm.md):
//
//   thread 0:   init a "full" (count 1) and an "empty" (count = consumer
//               warpgroups) mbarrier per stage; bar.sync
//   producer:   warpgroup 0, setmaxnreg.dec 40; one elect.sync thread of its
//               first warp fences the tensor maps, then for each of the
//               CTA's tiles and each k tile: wait empty[slot], expect_tx +
//               TMA loads of A and B into the slot (issueLoads)
//   consumers:  warpgroups 1 (and 2), setmaxnreg.inc 232 (240 with one);
//               for each of the CTA's tiles and each k tile: wait
//               full[slot], wgmma.mma_async over the consumer's rows (m64
//               blocks, n = bn, k16 steps), commit, wait_group 1, arrive on
//               empty[previous slot]; then wait_group 0, release the last
//               slot, and the epilogue: + bias[col] + residual[row, col] in
//               f32, cast, store (rows >= nb*nt are not written)
//   tiles:      CTA i takes tiles i, i + gridDim.x, ... in groups of 8 tile
//               rows (tileOrigin); the ring position (slot, phase) carries
//               over from one tile to the next
//
// TMA (nvgpu.tma.async.load), the mbarriers (nvgpu.mbarrier.*) and the
// shared-memory views are nvgpu/memref ops; the wgmma instructions are
// nvvm.wgmma.* with descriptors computed here, because nvgpu.warpgroup.mma's
// descriptor iteration assumes a [K, N] (N-contiguous) B tile while our B is
// the [N, K] weight (K-contiguous, "K-major" in wgmma terms).
//
//===----------------------------------------------------------------------===//
#include "colossus/Compiler/HopperGemm.h"
#include "colossus/Compiler/HopperCommon.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

#include "llvm/Support/FormatVariadic.h"

using namespace mlir;
using namespace colossus;

namespace {

bool isBf16OrF32(Type t) { return t.isBF16() || t.isF32(); }

const char *typeName(Type t) {
  return !t ? "none" : t.isF32() ? "f32" : "bf16";
}

} // namespace

std::optional<HopperGemmProblem>
colossus::matchHopperGemm(FusionOp fusion, std::string &whyNot) {
  Block &body = fusion.getBody().front();
  auto yield = cast<YieldOp>(body.getTerminator());
  if (yield.getNumOperands() != 1) {
    whyNot = "the group yields more than one value";
    return std::nullopt;
  }
  LinearOp linear;
  AddOp add;
  for (Operation &op : body.without_terminator()) {
    if (auto l = dyn_cast<LinearOp>(op); l && !linear) {
      linear = l;
      continue;
    }
    if (auto a = dyn_cast<AddOp>(op); a && !add) {
      add = a;
      continue;
    }
    whyNot = ("'" + op.getName().getStringRef() +
              "' in the group (only linear, bias and a residual add are "
              "fused so far)")
                 .str();
    return std::nullopt;
  }
  if (!linear) {
    whyNot = "no linear in the group";
    return std::nullopt;
  }
  if (!linear.getTransposeW()) {
    whyNot = "the weight is [K, N] (transpose_w = false)";
    return std::nullopt;
  }
  HopperGemmProblem p;
  auto arg = [&](Value v) -> int {
    auto ba = dyn_cast<BlockArgument>(v);
    return ba && ba.getOwner() == &body ? static_cast<int>(ba.getArgNumber())
                                        : -1;
  };
  int x = arg(linear.getX()), w = arg(linear.getWeight());
  if (x < 0 || w < 0) {
    whyNot = "the linear's operands are computed inside the group";
    return std::nullopt;
  }
  p.xArg = x;
  p.weightArg = w;
  auto xt = cast<RankedTensorType>(linear.getX().getType());
  auto wt = cast<RankedTensorType>(linear.getWeight().getType());
  if (!xt.getElementType().isBF16() || !wt.getElementType().isBF16()) {
    whyNot = "the operands are not bf16";
    return std::nullopt;
  }
  if (!xt.hasStaticShape() || !wt.hasStaticShape()) {
    whyNot = "the operands do not have static shapes";
    return std::nullopt;
  }
  p.m = xt.getDimSize(0);
  p.k = xt.getDimSize(1);
  p.n = wt.getDimSize(0);
  if (Value bias = linear.getBias()) {
    p.biasArg = arg(bias);
    if (p.biasArg < 0) {
      whyNot = "the bias is computed inside the group";
      return std::nullopt;
    }
    p.biasElem = cast<RankedTensorType>(bias.getType()).getElementType();
  }
  Value result = linear.getResult();
  if (add) {
    Value other;
    if (add.getLhs() == linear.getResult())
      other = add.getRhs();
    else if (add.getRhs() == linear.getResult())
      other = add.getLhs();
    p.residualArg = other ? arg(other) : -1;
    if (p.residualArg < 0) {
      whyNot = "the add is not a residual add of the linear's result and a "
               "group input";
      return std::nullopt;
    }
    p.residualElem = cast<RankedTensorType>(other.getType()).getElementType();
    result = add.getResult();
  }
  if (yield.getOperand(0) != result ||
      (add && !linear.getResult().hasOneUse())) {
    whyNot = "the group's result is not its last op";
    return std::nullopt;
  }
  p.outElem = cast<RankedTensorType>(result.getType()).getElementType();
  if (!isBf16OrF32(p.outElem) || (p.biasArg >= 0 && !isBf16OrF32(p.biasElem)) ||
      (p.residualArg >= 0 && !isBf16OrF32(p.residualElem))) {
    whyNot = "bias, residual and result must be bf16 or f32";
    return std::nullopt;
  }
  std::string tileWhy;
  std::optional<HopperGemmTile> tile =
      selectHopperGemmTile(p.m, p.n, p.k, HopperGemmLimits(), &tileWhy);
  if (!tile) {
    whyNot = "no tile fits [" + std::to_string(p.m) + ", " +
             std::to_string(p.n) + ", " + std::to_string(p.k) +
             "]: " + tileWhy;
    return std::nullopt;
  }
  p.tile = *tile;
  return p;
}

namespace {

/// Builds the body of the kernel; one instance per kernel.
class GemmBuilder {
public:
  GemmBuilder(OpBuilder &b, Location loc, const HopperGemmProblem &p)
      : b(b), loc(loc), p(p), t(p.tile), ctx(b.getContext()) {
    smemSpace =
        gpu::AddressSpaceAttr::get(ctx, gpu::GPUDialect::getWorkgroupAddressSpace());
    bf16 = b.getBF16Type();
    f32 = b.getF32Type();
    i64 = b.getI64Type();
    tileA = MemRefType::get({t.bm, t.bk}, bf16, MemRefLayoutAttrInterface(),
                            smemSpace);
    tileB = MemRefType::get({t.bn, t.bk}, bf16, MemRefLayoutAttrInterface(),
                            smemSpace);
    tmapA = tensorMapType(tileA);
    tmapB = tensorMapType(tileB);
    // stages "full" barriers (TMA landed), then stages "empty" ones (the
    // consumers are done reading the slot).
    barriers = nvgpu::MBarrierGroupType::get(ctx, smemSpace, 2 * t.stages);
    accType = LLVM::LLVMStructType::getLiteral(
        ctx, SmallVector<Type>(t.bn / 2, f32));
  }

  nvgpu::TensorMapDescriptorType tensorMapType(MemRefType tile) {
    return swizzled128TensorMap(ctx, tile);
  }

  Value idx(int64_t v) { return arith::ConstantIndexOp::create(b, loc, v); }
  Value cI64(int64_t v) {
    return arith::ConstantOp::create(b, loc, b.getI64IntegerAttr(v));
  }
  Value add(Value x, Value y) { return arith::AddIOp::create(b, loc, x, y); }
  Value mul(Value x, Value y) { return arith::MulIOp::create(b, loc, x, y); }
  Value cmp(arith::CmpIPredicate pred, Value x, Value y) {
    return arith::CmpIOp::create(b, loc, pred, x, y);
  }

  /// Emits the whole kernel body into `fn`'s entry block.
  void build(gpu::GPUFuncOp fn, unsigned numInputs);

private:
  Value sliceA(Value slot) {
    Value off = add(ringBase, mul(slot, idx(t.stageBytes())));
    return memref::ViewOp::create(b, loc, tileA, smem, off, ValueRange{});
  }
  Value sliceB(Value slot) {
    Value off = add(ringBase, add(mul(slot, idx(t.stageBytes())),
                                  idx(t.bm * t.bk * 2)));
    return memref::ViewOp::create(b, loc, tileB, smem, off, ValueRange{});
  }
  /// The producer thread: expect the bytes of k tile `kt` on the full
  /// mbarrier `slot`, then start the two TMA loads of the tile at (m0, n0)
  /// into that slot.
  void issueLoads(Value kt, Value slot) {
    nvgpu::MBarrierArriveExpectTxOp::create(b, loc, bars, idx(t.stageBytes()),
                                            slot, Value());
    Value k0 = mul(kt, idx(t.bk));
    nvgpu::TmaAsyncLoadOp::create(b, loc, sliceA(slot), bars, tmA,
                                  ValueRange{k0, m0}, slot, Value(), Value());
    nvgpu::TmaAsyncLoadOp::create(b, loc, sliceB(slot), bars, tmB,
                                  ValueRange{k0, n0}, slot, Value(), Value());
  }
  /// The wgmma shared-memory descriptor of a K-major, 128-byte-swizzled
  /// operand at shared address `addr` (bytes, i64): start address >> 4 in
  /// bits [0, 14), leading byte offset 16 (unused by swizzled K-major
  /// layouts) in [16, 30), stride byte offset 1024 (8 rows of 128 bytes)
  /// >> 4 in [32, 46), base offset 0 (every tile is 1024-aligned), swizzle
  /// mode 1 (128B) in [62, 64).
  Value descriptor(Value addr) {
    return wgmmaDescriptor128B(b, loc, addr, /*lbo=*/16, /*sbo=*/1024);
  }
  Value toI64(Value index) {
    return arith::IndexCastUIOp::create(b, loc, i64, index);
  }
  void epilogue(ArrayRef<Value> accs, ValueRange args, Value rows,
                Value tid);

  /// A position in the ring: the slot and the parity of the current pass
  /// through the ring (the mbarrier phase to wait for).
  struct RingPos {
    Value slot;  // index
    Value phase; // i1
  };
  /// The next position: slot + 1, wrapping to 0 and flipping the phase.
  RingPos advance(RingPos pos);
  /// The slot before `slot` (the one the previous k tile used).
  Value previousSlot(Value slot);
  /// The producer's loop over the k tiles of the tile at (m0, n0): wait
  /// until the consumers released the slot, then issueLoads into it.
  RingPos produceTile(RingPos pos);
  /// A consumer warpgroup's loop over the k tiles of its rows of the tile:
  /// wait for the slot's data, wgmma, and release the previous k tile's
  /// slot once its wgmmas completed (thread `wtid` 0 arrives on its empty
  /// barrier). Returns the accumulators and the position after the tile.
  RingPos consumeTile(RingPos pos, Value consumer, Value wtid,
                      SmallVectorImpl<Value> &accs);
  /// The persistent tile loop: tiles firstTile, firstTile + step, ... below
  /// numTiles, each mapped to its origin (tileM0, tileN0) in the grouped
  /// order (tileOrigin); `body` works on one tile from a ring position and
  /// returns the position after it, which the next tile starts from (the
  /// mbarrier phases carry across tiles).
  RingPos forEachTile(Value firstTile, Value numTiles, Value step,
                      Value activeTileRows, RingPos start,
                      llvm::function_ref<RingPos(Value, Value, RingPos)> body);
  /// The origin of linear tile `tile`: groups of kGroupRows tile rows (the
  /// last group may have fewer), each walked column by column, so the CTAs
  /// running at the same time share A rows and B columns in L2.
  std::pair<Value, Value> tileOrigin(Value tile, Value activeTileRows);

  OpBuilder &b;
  Location loc;
  const HopperGemmProblem &p;
  const HopperGemmTile &t;
  MLIRContext *ctx;
  Attribute smemSpace;
  Type bf16, f32, i64;
  MemRefType tileA, tileB;
  nvgpu::TensorMapDescriptorType tmapA, tmapB;
  nvgpu::MBarrierGroupType barriers;
  LLVM::LLVMStructType accType;
  /// `bars` holds the full barriers [0, stages) and the empty barriers
  /// [stages, 2 * stages). m0 and n0 are the origin of the rows the current
  /// warpgroup works on: the whole tile for the producer (issueLoads), the
  /// consumer's rows of it for a consumer (epilogue).
  Value smem, ringBase, ringAddr, bars, tmA, tmB, m0, n0;
};

GemmBuilder::RingPos GemmBuilder::advance(RingPos pos) {
  Value next = add(pos.slot, idx(1));
  Value wrap = cmp(arith::CmpIPredicate::eq, next, idx(t.stages));
  return {arith::SelectOp::create(b, loc, wrap, idx(0), next),
          arith::XOrIOp::create(b, loc, pos.phase, wrap)};
}

Value GemmBuilder::previousSlot(Value slot) {
  Value first = cmp(arith::CmpIPredicate::eq, slot, idx(0));
  return arith::SelectOp::create(b, loc, first, idx(t.stages - 1),
                                 arith::SubIOp::create(b, loc, slot, idx(1)));
}

GemmBuilder::RingPos GemmBuilder::produceTile(RingPos pos) {
  const int64_t kTiles = p.k / t.bk;
  auto loop = scf::ForOp::create(b, loc, idx(0), idx(kTiles), idx(1),
                                 ValueRange{pos.slot, pos.phase});
  OpBuilder::InsertionGuard g(b);
  b.setInsertionPointToStart(loop.getBody());
  RingPos cur{loop.getRegionIterArg(0), loop.getRegionIterArg(1)};
  // The empty barrier of a slot completes its phase when every consumer
  // released it; on the first pass through the ring (phase 0) the wait for
  // parity 1 returns at once (a fresh barrier counts its "previous" phase
  // as completed).
  Value notPhase = arith::XOrIOp::create(
      b, loc, cur.phase,
      arith::ConstantOp::create(b, loc, b.getBoolAttr(true)));
  nvgpu::MBarrierTryWaitParityOp::create(b, loc, bars, notPhase, idx(10000000),
                                         add(cur.slot, idx(t.stages)));
  issueLoads(loop.getInductionVar(), cur.slot);
  RingPos next = advance(cur);
  scf::YieldOp::create(b, loc, ValueRange{next.slot, next.phase});
  b.setInsertionPointAfter(loop);
  return {loop.getResult(0), loop.getResult(1)};
}

GemmBuilder::RingPos GemmBuilder::consumeTile(RingPos pos, Value consumer,
                                              Value wtid,
                                              SmallVectorImpl<Value> &accs) {
  const int64_t kTiles = p.k / t.bk;
  const int64_t mBlocks = t.consumerRows() / 64;
  SmallVector<Value> init;
  for (int64_t i = 0; i < mBlocks; ++i)
    init.push_back(LLVM::ZeroOp::create(b, loc, accType));
  init.append({pos.slot, pos.phase});
  Value isLeader = cmp(arith::CmpIPredicate::eq, wtid, idx(0));
  // This consumer's rows of the A tile: consumerRows rows of 128 bytes.
  Value aOffset = toI64(mul(consumer, idx(t.consumerRows() * t.bk * 2)));
  auto loop = scf::ForOp::create(b, loc, idx(0), idx(kTiles), idx(1), init);
  {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(loop.getBody());
    Value kt = loop.getInductionVar();
    auto iters = loop.getRegionIterArgs();
    RingPos cur{iters[mBlocks], iters[mBlocks + 1]};
    nvgpu::MBarrierTryWaitParityOp::create(b, loc, bars, cur.phase,
                                           idx(10000000), cur.slot);
    Value slotAddr = arith::AddIOp::create(
        b, loc, ringAddr, toI64(mul(cur.slot, idx(t.stageBytes()))));
    Value descA = descriptor(arith::AddIOp::create(b, loc, slotAddr, aOffset));
    Value descB = descriptor(
        arith::AddIOp::create(b, loc, slotAddr, cI64(t.bm * t.bk * 2)));
    NVVM::WgmmaFenceAlignedOp::create(b, loc);
    SmallVector<Value> tileAccs(iters.take_front(mBlocks));
    auto shape = NVVM::MMAShapeAttr::get(ctx, 64, t.bn, 16);
    for (int64_t kk = 0; kk < t.bk / 16; ++kk) {
      // +32 bytes per k16 step inside the swizzled 128-byte rows.
      Value db = arith::AddIOp::create(b, loc, descB, cI64(kk * 32 >> 4));
      for (int64_t mb = 0; mb < mBlocks; ++mb) {
        // +64 rows of 128 bytes per m64 block.
        Value da = arith::AddIOp::create(b, loc, descA,
                                         cI64((mb * 64 * 128 + kk * 32) >> 4));
        tileAccs[mb] = NVVM::WgmmaMmaAsyncOp::create(
            b, loc, accType, tileAccs[mb], da, db, shape,
            NVVM::WGMMATypes::bf16, NVVM::WGMMATypes::bf16,
            NVVM::WGMMATypes::f32, NVVM::WGMMAScaleOut::one,
            NVVM::WGMMAScaleIn::one, NVVM::WGMMAScaleIn::one,
            NVVM::MMALayout::row,
            // col: B is K-major (the [N, K] weight), no transpose.
            NVVM::MMALayout::col, NVVM::MMAIntOverflowAttr());
      }
    }
    NVVM::WgmmaGroupSyncAlignedOp::create(b, loc);
    // At most this k tile's wgmmas are in flight: those of k tile kt-1
    // completed, so its slot goes back to the producer.
    NVVM::WgmmaWaitGroupSyncOp::create(b, loc, 1);
    Value release = arith::AndIOp::create(
        b, loc, isLeader, cmp(arith::CmpIPredicate::ugt, kt, idx(0)));
    auto ifRelease = scf::IfOp::create(b, loc, release, false);
    {
      OpBuilder::InsertionGuard g2(b);
      b.setInsertionPointToStart(&ifRelease.getThenRegion().front());
      nvgpu::MBarrierArriveOp::create(
          b, loc, bars, add(previousSlot(cur.slot), idx(t.stages)));
    }
    RingPos next = advance(cur);
    tileAccs.append({next.slot, next.phase});
    scf::YieldOp::create(b, loc, tileAccs);
  }
  NVVM::WgmmaWaitGroupSyncOp::create(b, loc, 0);
  RingPos end{loop.getResult(mBlocks), loop.getResult(mBlocks + 1)};
  // The last k tile's slot.
  auto ifRelease = scf::IfOp::create(b, loc, isLeader, false);
  {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(&ifRelease.getThenRegion().front());
    nvgpu::MBarrierArriveOp::create(b, loc, bars,
                                    add(previousSlot(end.slot), idx(t.stages)));
  }
  accs.assign(loop.getResults().begin(), loop.getResults().begin() + mBlocks);
  return end;
}

std::pair<Value, Value> GemmBuilder::tileOrigin(Value tile,
                                                Value activeTileRows) {
  const int64_t group = HopperGemmTile::kGroupRows;
  const int64_t perGroup = group * (p.n / t.bn);
  Value g = arith::DivUIOp::create(b, loc, tile, idx(perGroup));
  Value firstRow = mul(g, idx(group));
  Value groupRows = arith::MinUIOp::create(
      b, loc, arith::SubIOp::create(b, loc, activeTileRows, firstRow),
      idx(group));
  Value inGroup = arith::SubIOp::create(b, loc, tile, mul(g, idx(perGroup)));
  Value tileRow =
      add(firstRow, arith::RemUIOp::create(b, loc, inGroup, groupRows));
  Value tileCol = arith::DivUIOp::create(b, loc, inGroup, groupRows);
  return {mul(tileRow, idx(t.bm)), mul(tileCol, idx(t.bn))};
}

GemmBuilder::RingPos GemmBuilder::forEachTile(
    Value firstTile, Value numTiles, Value step, Value activeTileRows,
    RingPos start, llvm::function_ref<RingPos(Value, Value, RingPos)> body) {
  auto loop = scf::ForOp::create(b, loc, firstTile, numTiles, step,
                                 ValueRange{start.slot, start.phase});
  OpBuilder::InsertionGuard g(b);
  b.setInsertionPointToStart(loop.getBody());
  auto [tileM0, tileN0] = tileOrigin(loop.getInductionVar(), activeTileRows);
  RingPos end = body(tileM0, tileN0,
                     {loop.getRegionIterArg(0), loop.getRegionIterArg(1)});
  scf::YieldOp::create(b, loc, ValueRange{end.slot, end.phase});
  return {loop.getResult(0), loop.getResult(1)};
}

void GemmBuilder::build(gpu::GPUFuncOp fn, unsigned numInputs) {
  Block *entry = &fn.getBody().front();
  ValueRange args = entry->getArguments();
  b.setInsertionPointToStart(entry);

  Value tid = gpu::ThreadIdOp::create(b, loc, gpu::Dimension::x);
  Value warpgroup = arith::DivUIOp::create(
      b, loc, tid, idx(HopperGemmTile::kWarpgroupThreads));
  Value wtid = arith::RemUIOp::create(b, loc, tid,
                                      idx(HopperGemmTile::kWarpgroupThreads));
  auto asIndex = [&](Value v) {
    return arith::IndexCastOp::create(b, loc, b.getIndexType(), v).getResult();
  };
  unsigned nArgs = numInputs + 1;
  Value rows = mul(asIndex(args[nArgs]), asIndex(args[nArgs + 1]));
  // The tiles of the active rows (nb * nt): tile rows [0, activeTileRows).
  Value activeTileRows = arith::MinUIOp::create(
      b, loc,
      arith::DivUIOp::create(b, loc, add(rows, idx(t.bm - 1)), idx(t.bm)),
      idx(p.m / t.bm));
  Value numTiles = mul(activeTileRows, idx(p.n / t.bn));
  Value firstTile = gpu::BlockIdOp::create(b, loc, gpu::Dimension::x);
  Value tileStep = gpu::GridDimOp::create(b, loc, gpu::Dimension::x);

  // The tensor maps arrive as generic pointers (CUtensorMap in device
  // memory); nvgpu's tensor-map type lowers to exactly that pointer.
  Value ptrA = args[p.xArg], ptrB = args[p.weightArg];
  tmA = UnrealizedConversionCastOp::create(b, loc, tmapA, ptrA).getResult(0);
  tmB = UnrealizedConversionCastOp::create(b, loc, tmapB, ptrB).getResult(0);

  // The ring of stages in dynamic shared memory, aligned up to 1024 bytes.
  auto dynTy = MemRefType::get({ShapedType::kDynamic}, b.getI8Type(),
                               MemRefLayoutAttrInterface(), smemSpace);
  smem = gpu::DynamicSharedMemoryOp::create(b, loc, dynTy);
  Value base = memref::ExtractAlignedPointerAsIndexOp::create(b, loc, smem);
  Value mis = arith::RemUIOp::create(b, loc, base, idx(1024));
  ringBase = arith::RemUIOp::create(
      b, loc, arith::SubIOp::create(b, loc, idx(1024), mis), idx(1024));
  ringAddr = toI64(add(base, ringBase));

  bars = nvgpu::MBarrierCreateOp::create(b, loc, barriers);
  {
    auto init = scf::IfOp::create(
        b, loc, cmp(arith::CmpIPredicate::eq, tid, idx(0)), false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(&init.getThenRegion().front());
    // Full: the producer's arrive.expect_tx (and the TMA bytes). Empty: one
    // arrival per consumer warpgroup.
    for (int64_t s = 0; s < t.stages; ++s) {
      nvgpu::MBarrierInitOp::create(b, loc, bars, idx(1), idx(s), Value());
      nvgpu::MBarrierInitOp::create(b, loc, bars, idx(t.consumers),
                                    idx(t.stages + s), Value());
    }
    NVVM::FenceMbarrierInitOp::create(b, loc);
  }
  gpu::BarrierOp::create(b, loc);

  RingPos start{idx(0),
                arith::ConstantOp::create(b, loc, b.getBoolAttr(false))};
  auto roles = scf::IfOp::create(
      b, loc, cmp(arith::CmpIPredicate::eq, warpgroup, idx(0)),
      /*withElse=*/true);
  {
    // Producer warpgroup: gives its registers to the consumers; one elected
    // thread of its first warp issues every TMA load.
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(&roles.getThenRegion().front());
    NVVM::SetMaxRegisterOp::create(b, loc, HopperGemmTile::kProducerRegisters,
                                   NVVM::SetMaxRegisterAction::decrease);
    auto firstWarp = scf::IfOp::create(
        b, loc, cmp(arith::CmpIPredicate::ult, wtid, idx(32)), false);
    b.setInsertionPointToStart(&firstWarp.getThenRegion().front());
    Value elected = NVVM::ElectSyncOp::create(b, loc, b.getI1Type(), Value());
    auto ifElected = scf::IfOp::create(b, loc, elected, false);
    b.setInsertionPointToStart(&ifElected.getThenRegion().front());
    // The tensor maps were written by the host (a copy into device memory):
    // order that write before the tensor-map proxy reads them (PTX ISA 8.3),
    // in the thread that issues the loads.
    for (Value ptr : {ptrA, ptrB})
      fenceTensorMap(b, loc, ptr);
    nvgpu::TmaPrefetchOp::create(b, loc, tmA, Value());
    nvgpu::TmaPrefetchOp::create(b, loc, tmB, Value());
    forEachTile(firstTile, numTiles, tileStep, activeTileRows, start,
                [&](Value tileM0, Value tileN0, RingPos pos) {
                  m0 = tileM0;
                  n0 = tileN0;
                  return produceTile(pos);
                });
  }
  {
    // Consumer warpgroups: wgmma over their rows of the tile, then the
    // epilogue from the accumulator registers.
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(&roles.getElseRegion().front());
    NVVM::SetMaxRegisterOp::create(b, loc, t.consumerRegisters(),
                                   NVVM::SetMaxRegisterAction::increase);
    Value consumer = arith::SubIOp::create(b, loc, warpgroup, idx(1));
    Value rowOffset = mul(consumer, idx(t.consumerRows()));
    forEachTile(firstTile, numTiles, tileStep, activeTileRows, start,
                [&](Value tileM0, Value tileN0, RingPos pos) {
                  SmallVector<Value> accs;
                  RingPos end = consumeTile(pos, consumer, wtid, accs);
                  m0 = add(tileM0, rowOffset);
                  n0 = tileN0;
                  epilogue(accs, args, rows, wtid);
                  return end;
                });
  }
  b.setInsertionPointToEnd(entry);
  gpu::ReturnOp::create(b, loc);
}

/// The accumulator of an m64nN wgmma: thread t of the warpgroup (warp w =
/// t / 32, lane l) holds, for j < N / 8, rows r0 = 16w + l/4 and r0 + 8 at
/// columns c = 8j + 2(l % 4) and c + 1, as struct elements 4j + {0, 1}
/// (row r0) and 4j + {2, 3} (row r0 + 8).
void GemmBuilder::epilogue(ArrayRef<Value> accs, ValueRange args, Value rows,
                           Value tid) {
  Value warp = arith::DivUIOp::create(b, loc, tid, idx(32));
  Value lane = arith::RemUIOp::create(b, loc, tid, idx(32));
  Value rowInBlock = add(mul(warp, idx(16)),
                         arith::DivUIOp::create(b, loc, lane, idx(4)));
  Value colBase = add(n0, mul(arith::RemUIOp::create(b, loc, lane, idx(4)),
                              idx(2)));
  Value out = args[args.size() - 4];
  Value bias = p.biasArg >= 0 ? args[p.biasArg] : Value();
  Value residual = p.residualArg >= 0 ? args[p.residualArg] : Value();
  auto pairOf = [&](Type elem) { return VectorType::get({2}, elem); };
  // A pair starts at an even column of a row of N (a multiple of 64)
  // elements: aligned to two elements when the buffer is.
  auto pairAlign = [](Type elem) {
    return llvm::MaybeAlign(elem.getIntOrFloatBitWidth() / 4);
  };
  auto loadPair = [&](Value mem, Type elem, ValueRange at) -> Value {
    Value v = vector::LoadOp::create(b, loc, pairOf(elem), mem, at,
                                     /*nontemporal=*/false, pairAlign(elem));
    if (!elem.isF32())
      v = arith::ExtFOp::create(b, loc, pairOf(f32), v);
    return v;
  };
  for (int64_t mb = 0; mb < static_cast<int64_t>(accs.size()); ++mb) {
    for (int64_t half = 0; half < 2; ++half) {
      Value row = add(add(m0, rowInBlock), idx(mb * 64 + half * 8));
      Value inRange = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult,
                                            row, rows);
      auto guard = scf::IfOp::create(b, loc, inRange, false);
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(&guard.getThenRegion().front());
      for (int64_t j = 0; j < t.bn / 8; ++j) {
        Value col = add(colBase, idx(8 * j));
        int64_t e = 4 * j + 2 * half;
        Value v0 = LLVM::ExtractValueOp::create(b, loc, accs[mb], e);
        Value v1 = LLVM::ExtractValueOp::create(b, loc, accs[mb], e + 1);
        Value v = vector::FromElementsOp::create(b, loc, pairOf(f32),
                                                 ValueRange{v0, v1});
        if (bias)
          v = arith::AddFOp::create(b, loc, v,
                                    loadPair(bias, p.biasElem, {col}));
        if (residual)
          v = arith::AddFOp::create(
              b, loc, v, loadPair(residual, p.residualElem, {row, col}));
        if (!p.outElem.isF32())
          v = arith::TruncFOp::create(b, loc, pairOf(p.outElem), v);
        vector::StoreOp::create(b, loc, v, out, ValueRange{row, col},
                                /*nontemporal=*/false, pairAlign(p.outElem));
      }
    }
  }
}

} // namespace

FailureOr<Operation *> colossus::buildHopperGemm(FusionOp fusion,
                                                 const HopperGemmProblem &p,
                                                 StringRef name,
                                                 OpBuilder &builder) {
  Location loc = fusion.getLoc();
  auto module = dyn_cast_or_null<gpu::GPUModuleOp>(
      builder.getInsertionBlock()->getParentOp());
  if (!module)
    return fusion.emitOpError("internal error: the Hopper GEMM must be built "
                              "in a gpu.module");
  MLIRContext *ctx = builder.getContext();
  prepareHopperModule(module, builder, loc);

  Block &body = fusion.getBody().front();
  auto ptrTy = LLVM::LLVMPointerType::get(ctx);
  SmallVector<Type> argTypes;
  for (BlockArgument a : body.getArguments()) {
    if (a.getArgNumber() == p.xArg || a.getArgNumber() == p.weightArg) {
      argTypes.push_back(ptrTy);
      continue;
    }
    auto rt = cast<RankedTensorType>(a.getType());
    argTypes.push_back(MemRefType::get(rt.getShape(), rt.getElementType()));
  }
  auto rt = cast<RankedTensorType>(fusion.getResult(0).getType());
  argTypes.push_back(MemRefType::get(rt.getShape(), rt.getElementType()));
  Type i64 = builder.getI64Type();
  argTypes.append({i64, i64, i64});
  auto fn = gpu::GPUFuncOp::create(builder, loc, name,
                                   builder.getFunctionType(argTypes, {}));
  fn->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), builder.getUnitAttr());
  fn.setKnownBlockSizeAttr(builder.getDenseI32ArrayAttr(
      {static_cast<int32_t>(p.tile.threads()), 1, 1}));
  // One CTA per SM: with .maxntid it fixes the register count at entry
  // (65536 / threads), which setmaxnreg needs.
  fn->setAttr(NVVM::NVVMDialect::getMinctasmAttrName(),
              builder.getI32IntegerAttr(1));

  GemmBuilder gb(builder, loc, p);
  {
    OpBuilder::InsertionGuard g(builder);
    gb.build(fn, body.getNumArguments());
  }

  const HopperGemmTile &t = p.tile;
  std::string abi = llvm::formatv(
      "m={0} n={1} k={2} bm={3} bn={4} bk={5} stages={6} grid={7},{8},1 "
      "block={9},1,1 dynamic_smem={10} a_arg={11} b_arg={12} bias_arg={13} "
      "residual_arg={14} out_arg={15} out={16} bias={17} residual={18}",
      p.m, p.n, p.k, t.bm, t.bn, t.bk, t.stages, t.grid, 1, t.threads(),
      t.dynamicSmemBytes(), p.xArg, p.weightArg, p.biasArg, p.residualArg,
      body.getNumArguments(), typeName(p.outElem), typeName(p.biasElem),
      typeName(p.residualElem));
  fn->setAttr(kHopperGemmAbiAttr, builder.getStringAttr(abi));
  return fn.getOperation();
}
