//===- HopperGemm.cpp - TMA + wgmma GEMM kernels for sm_90a ---------------===//
//
// A persistent, warp-specialized kernel computing, in bm x bn tiles over K
// in steps of bk = 64, C = sum_i A_i * B_i (one accumulator; the products'
// k tiles follow one another) or, for the dual GEMM, C0 = A * B and
// C1 = A * B2 (docs/hopper-gemm.md):
//
//   thread 0:   init a "full" (count 1) and an "empty" (count = consumer
//               warpgroups) mbarrier per stage; bar.sync
//   producer:   warpgroup 0, setmaxnreg.dec 40; one elect.sync thread of its
//               first warp fences and prefetches the tensor maps, then for
//               each of the CTA's tiles and each k tile: wait empty[slot],
//               expect_tx + TMA loads of the stage's A and B tile(s) into
//               the slot (issueLoads)
//   consumers:  warpgroups 1 (and 2), setmaxnreg.inc 232 (240 with one);
//               for each of the CTA's tiles and each k tile: wait
//               full[slot] (weight gradients: zero the stale token rows of
//               the stage, then a named barrier of the consumers only),
//               wgmma.mma_async over the consumer's rows (per k16 step,
//               accumulator and m64 block), commit, wait_group 1, arrive on
//               empty[previous slot]; then wait_group 0, release the last
//               slot, and the epilogue from the accumulator registers: the
//               group's elementwise ops in f32 per column pair, each output
//               rounded and stored once (rows >= nb*nt are not written,
//               except for weight gradients)
//   k tiles:    all K / 64, or for a weight gradient (K = tokens) those with
//               active token rows, ceil(nb*nt / 64): one Value (kEnd) bounds
//               the producer's and the consumers' loops alike, so their ring
//               positions stay in step across tiles
//   tiles:      CTA i takes tiles i, i + gridDim.x, ... in groups of 8 tile
//               rows (tileOrigin); the ring position (slot, phase) carries
//               over from one tile to the next
//
// Operands are K-contiguous or M/N-contiguous (OperandLayout: the TMA boxes,
// the descriptors' strides and the wgmma transpose flags). TMA
// (nvgpu.tma.async.load), the mbarriers (nvgpu.mbarrier.*) and the
// shared-memory views are nvgpu/memref ops; the wgmma instructions are
// nvvm.wgmma.* with descriptors computed here, because nvgpu.warpgroup.mma's
// descriptor iteration assumes a [K, N] (N-contiguous) B tile only.
//
//===----------------------------------------------------------------------===//
#include "colossus/Compiler/HopperGemm.h"
#include "colossus/Compiler/HopperCommon.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

#include "llvm/Support/FormatVariadic.h"

using namespace mlir;
using namespace colossus;

namespace {

const char *typeName(Type t) {
  return !t ? "none" : t.isF32() ? "f32" : "bf16";
}

} // namespace

namespace {

/// Elementwise ops the epilogue computes (with the SIMT kernel's formulas).
bool isEpilogueOp(Operation *op) {
  return isa<AddOp, MulOp, GeluOp, SiluOp, SwigluOp, ConvertOp, SwigluGradOp,
             GeluGradOp, SiluGradOp>(op);
}

RankedTensorType staticMatrix(Value v) {
  auto t = dyn_cast<RankedTensorType>(v.getType());
  return t && t.hasStaticShape() && t.getRank() == 2 ? t : RankedTensorType();
}

} // namespace

std::optional<HopperGemmProblem>
colossus::matchHopperGemm(FusionOp fusion, std::string &whyNot) {
  Block &body = fusion.getBody().front();
  auto yield = cast<YieldOp>(body.getTerminator());
  auto fail = [&](const Twine &why) -> std::optional<HopperGemmProblem> {
    whyNot = why.str();
    return std::nullopt;
  };
  auto arg = [&](Value v) -> int {
    auto ba = dyn_cast<BlockArgument>(v);
    return ba && ba.getOwner() == &body ? static_cast<int>(ba.getArgNumber())
                                        : -1;
  };
  auto isBf16Matrix = [](Value v) {
    RankedTensorType t = staticMatrix(v);
    return t && t.getElementType().isBF16();
  };
  SmallVector<LinearOp> linears;
  SmallVector<LinearWeightGradOp> wgrads;
  for (Operation &op : body.without_terminator()) {
    if (auto l = dyn_cast<LinearOp>(op))
      linears.push_back(l);
    else if (auto g = dyn_cast<LinearWeightGradOp>(op))
      wgrads.push_back(g);
  }
  HopperGemmProblem p;
  // Values the wgmma mainloop computes (linears and the adds summing them):
  // the epilogue never reads them except through an accumulator.
  llvm::DenseSet<Operation *> mainloopOps;
  if (!wgrads.empty()) {
    // dW = dy^T x (transpose_w, [N, K]) or x^T dy ([K, N]): both operands
    // are [T, *] activations, i.e. M- and N-contiguous; K = T (tokens).
    LinearWeightGradOp g = wgrads.front();
    if (wgrads.size() != 1 || !linears.empty())
      return fail("a linear_weight_grad is fused with other GEMMs");
    int x = arg(g.getX()), dy = arg(g.getDy());
    if (x < 0 || dy < 0)
      return fail("the linear_weight_grad's operands are computed inside the "
                  "group");
    if (!isBf16Matrix(g.getX()) || !isBf16Matrix(g.getDy()))
      return fail("the operands are not bf16 matrices with static shapes");
    int a = g.getTransposeW() ? dy : x, b = g.getTransposeW() ? x : dy;
    RankedTensorType at = staticMatrix(body.getArgument(a));
    RankedTensorType bt = staticMatrix(body.getArgument(b));
    p.m = at.getDimSize(1);
    p.n = bt.getDimSize(1);
    p.k = at.getDimSize(0);
    p.aMajor = p.bMajor = GemmMajor::MN;
    p.tokenK = true;
    p.terms.push_back(
        {static_cast<unsigned>(a), static_cast<unsigned>(b), p.k});
    p.accValue[0] = g.getResult();
    mainloopOps.insert(g);
  } else {
    if (linears.empty())
      return fail("no linear in the group");
    bool transposeW = linears.front().getTransposeW();
    for (LinearOp l : linears) {
      if (arg(l.getX()) < 0 || arg(l.getWeight()) < 0)
        return fail("the linear's operands are computed inside the group");
      if (!isBf16Matrix(l.getX()) || !isBf16Matrix(l.getWeight()))
        return fail("the operands are not bf16 matrices with static shapes");
      if (l.getTransposeW() != transposeW)
        return fail("the linears mix weight layouts");
      if (l.getBias() && arg(l.getBias()) < 0)
        return fail("the bias is computed inside the group");
    }
    // Sums of linears (each used only by the sum) share one accumulator.
    llvm::DenseMap<Value, SmallVector<LinearOp>> sumTerms;
    for (LinearOp l : linears)
      if (!l.getBias())
        sumTerms[l.getResult()] = {l};
    for (Operation &op : body.without_terminator()) {
      auto add = dyn_cast<AddOp>(op);
      if (!add || add.getLhs() == add.getRhs() ||
          !sumTerms.count(add.getLhs()) || !sumTerms.count(add.getRhs()) ||
          !add.getLhs().hasOneUse() || !add.getRhs().hasOneUse())
        continue;
      SmallVector<LinearOp> terms = sumTerms[add.getLhs()];
      terms.append(sumTerms[add.getRhs()]);
      sumTerms[add.getResult()] = terms;
      mainloopOps.insert(add);
    }
    // Accumulators: linears and sums not consumed by a sum.
    SmallVector<Value> roots;
    auto consumedBySum = [&](Value v) {
      return v.hasOneUse() && mainloopOps.count(*v.user_begin());
    };
    for (LinearOp l : linears) {
      mainloopOps.insert(l);
      if (!consumedBySum(l.getResult()))
        roots.push_back(l.getResult());
    }
    for (Operation *op : llvm::to_vector(mainloopOps))
      if (isa<AddOp>(op) && !consumedBySum(op->getResult(0)))
        roots.push_back(op->getResult(0));
    if (roots.size() > 2)
      return fail("more than two accumulators (linears that are neither "
                  "summed nor share x)");
    auto single = [&](Value v) { return v.getDefiningOp<LinearOp>(); };
    if (roots.size() == 2) {
      // Program order: the first linear is accumulator 0.
      if (!single(roots[0]) || !single(roots[1]) ||
          single(roots[0]).getX() != single(roots[1]).getX())
        return fail("two linears that neither share x nor are summed");
      if (single(roots[1])->isBeforeInBlock(single(roots[0])))
        std::swap(roots[0], roots[1]);
      p.b2Arg = arg(single(roots[1]).getWeight());
      p.accValue[1] = roots[1];
    }
    p.accValue[0] = roots[0];
    SmallVector<LinearOp> terms = single(roots[0])
                                      ? SmallVector<LinearOp>{single(roots[0])}
                                      : sumTerms[roots[0]];
    RankedTensorType rt = staticMatrix(roots[0]);
    p.m = rt.getDimSize(0);
    p.n = rt.getDimSize(1);
    if (p.accValue[1] &&
        staticMatrix(p.accValue[1]).getShape() != rt.getShape())
      return fail("the two linears on x have different shapes");
    for (LinearOp l : terms) {
      RankedTensorType xt = staticMatrix(l.getX());
      if (staticMatrix(l.getResult()).getShape() != rt.getShape())
        return fail("the summed linears have different shapes");
      p.terms.push_back({static_cast<unsigned>(arg(l.getX())),
                         static_cast<unsigned>(arg(l.getWeight())),
                         xt.getDimSize(1)});
      p.k += xt.getDimSize(1);
    }
    p.aMajor = GemmMajor::K;
    p.bMajor = transposeW ? GemmMajor::K : GemmMajor::MN;
    if (LinearOp l = single(roots[0]); l && l.getBias()) {
      p.biasArg = arg(l.getBias());
      p.biasElem =
          cast<RankedTensorType>(l.getBias().getType()).getElementType();
    }
  }
  // The epilogue: elementwise ops on the accumulators and group inputs of
  // shape [M, N] (loaded at [row, col]) or [N] (at [col]).
  auto isAcc = [&](Value v) {
    return v == p.accValue[0] || (p.accValue[1] && v == p.accValue[1]);
  };
  auto elemOk = [](Type t) { return t.isBF16() || t.isF32(); };
  // Operands reach the kernel as tensor maps: the epilogue cannot read them.
  llvm::SmallDenseSet<int> operandArgs = {p.b2Arg};
  for (const HopperGemmTerm &t : p.terms) {
    operandArgs.insert(static_cast<int>(t.aArg));
    operandArgs.insert(static_cast<int>(t.bArg));
  }
  for (Operation &op : body.without_terminator()) {
    if (mainloopOps.count(&op))
      continue;
    // KV cache writes of the epilogue's rows (the K/V projections): the
    // yielded cache gets row r at [r / nt, positions[r]]; positions are
    // re-materialized (pos0 + r % nt), the cache's old contents not read.
    if (auto pos = dyn_cast<PositionsOp>(op)) {
      if (llvm::any_of(pos->getUsers(),
                       [](Operation *u) { return !isa<CacheWriteOp>(u); }))
        return fail("the positions are used by other ops than cache_write");
      continue;
    }
    if (auto cw = dyn_cast<CacheWriteOp>(op)) {
      auto ct = dyn_cast<RankedTensorType>(cw.getCache().getType());
      RankedTensorType xt = staticMatrix(cw.getX());
      if (!cw.getPositions().getDefiningOp<PositionsOp>())
        return fail("the cache_write's positions are not colossus.positions "
                    "of the group");
      if (arg(cw.getCache()) < 0 || !ct || !ct.hasStaticShape())
        return fail("the cache_write's cache is not a static group input");
      if (!xt || xt.getDimSize(0) != p.m || xt.getDimSize(1) != p.n ||
          !elemOk(xt.getElementType()))
        return fail("the cache_write's rows are not a bf16 or f32 [M, N] "
                    "matrix");
      if (!cw->hasOneUse() || !isa<YieldOp>(*cw->user_begin()))
        return fail("the cache_write's result is used inside the group");
      if (operandArgs.count(arg(cw.getCache())))
        return fail("a GEMM operand is also a cache");
      continue;
    }
    if (!isEpilogueOp(&op))
      return fail("'" + op.getName().getStringRef() +
                  "' in the group (the epilogue computes only elementwise "
                  "add, mul, gelu, silu, swiglu, convert and their "
                  "gradients)");
    for (Value v : op.getOperands()) {
      auto t = dyn_cast<RankedTensorType>(v.getType());
      if (arg(v) >= 0) {
        if (operandArgs.count(arg(v)))
          return fail("a GEMM operand is also an epilogue input");
        bool matrix = t && t.getRank() == 2 && t.getDimSize(0) == p.m &&
                      t.getDimSize(1) == p.n;
        bool vector = t && t.getRank() == 1 && t.getDimSize(0) == p.n;
        if ((!matrix && !vector) || !elemOk(t.getElementType()))
          return fail("an epilogue input is not a bf16 or f32 [M, N] matrix "
                      "or [N] vector");
        continue;
      }
      if (mainloopOps.count(v.getDefiningOp()) && !isAcc(v))
        return fail("a summed linear is also used on its own");
    }
    for (Value r : op.getResults()) {
      RankedTensorType t = staticMatrix(r);
      if (!t || t.getDimSize(0) != p.m || t.getDimSize(1) != p.n ||
          !elemOk(t.getElementType()))
        return fail("an epilogue value is not a bf16 or f32 [M, N] matrix");
    }
  }
  for (Value v : yield.getOperands()) {
    std::pair<int64_t, int64_t> cache{0, 0};
    if (auto cw = v.getDefiningOp<CacheWriteOp>()) {
      auto ct = cast<RankedTensorType>(cw.getCache().getType());
      cache = {ct.getDimSize(0), ct.getDimSize(1)};
      v = cw.getX();
    }
    p.cacheDims.push_back(cache);
    RankedTensorType t = staticMatrix(v);
    if (arg(v) >= 0 || (mainloopOps.count(v.getDefiningOp()) && !isAcc(v)))
      return fail("the group yields a value the epilogue does not compute");
    if (!t || t.getDimSize(0) != p.m || t.getDimSize(1) != p.n ||
        !elemOk(t.getElementType()))
      return fail("bias, residual and results must be bf16 or f32");
    p.outputs.push_back(v);
    p.outElems.push_back(t.getElementType());
  }
  if (p.biasArg >= 0 && !elemOk(p.biasElem))
    return fail("bias, residual and results must be bf16 or f32");
  // The legacy ABI keys: a group input added to the accumulator.
  for (Operation &op : body.without_terminator())
    if (auto add = dyn_cast<AddOp>(op); add && !mainloopOps.count(add))
      for (auto [mine, other] : {std::pair{add.getLhs(), add.getRhs()},
                                 std::pair{add.getRhs(), add.getLhs()}})
        if (mine == p.accValue[0] && arg(other) >= 0 && staticMatrix(other) &&
            p.residualArg < 0) {
          p.residualArg = arg(other);
          p.residualElem =
              cast<RankedTensorType>(other.getType()).getElementType();
        }
  for (const HopperGemmTerm &t : p.terms)
    if (t.k % 64)
      return fail("K = " + Twine(t.k) + " is not a multiple of 64");
  std::string tileWhy;
  std::optional<HopperGemmTile> tile = selectHopperGemmTile(
      p.m, p.n, p.k, HopperGemmLimits(), &tileWhy, p.b2Arg >= 0 ? 2 : 1);
  if (!tile)
    return fail("no tile fits [" + Twine(p.m) + ", " + Twine(p.n) + ", " +
                Twine(p.k) + "]: " + tileWhy);
  p.tile = *tile;
  return p;
}

namespace {

/// Where each operand of a stage lies in shared memory and how wgmma reads
/// it (docs/hopper-gemm.md "Operand layouts"). A K-major operand tile of R
/// rows is one TMA box {64 (K), R}: R rows of 128 bytes. An MN-major tile is
/// R / 64 boxes {64 (M or N), 64 (K)}, each 64 K-rows of 128 bytes (8 KiB),
/// the boxes one after the other. Both use the 128-byte swizzle.
struct OperandLayout {
  GemmMajor major = GemmMajor::K;
  int64_t rows = 0;   ///< bm (A) or bn (B)
  int64_t offset = 0; ///< bytes from the start of the stage

  bool mn() const { return major == GemmMajor::MN; }
  /// The shared-memory tile one TMA load fills.
  SmallVector<int64_t, 2> box() const {
    return mn() ? SmallVector<int64_t, 2>{64, 64}
                : SmallVector<int64_t, 2>{rows, 64};
  }
  int64_t boxes() const { return mn() ? rows / 64 : 1; }
  /// Bytes between the 16-row k steps of a wgmma (k16): 16 elements along a
  /// 128-byte row (K-major) or 16 rows of 128 bytes (MN-major).
  int64_t k16Bytes() const { return mn() ? 16 * 128 : 32; }
  /// Leading byte offset of the descriptor: unused by swizzled K-major
  /// layouts (1); MN-major: from one 64-element (128-byte) atom along M/N
  /// to the next, i.e. the next box.
  int64_t leadingBytes() const { return mn() ? 64 * 128 : 16; }
};

/// Builds the body of the kernel; one instance per kernel.
class GemmBuilder {
public:
  GemmBuilder(OpBuilder &b, Location loc, const HopperGemmProblem &p)
      : b(b), loc(loc), p(p), t(p.tile), ctx(b.getContext()) {
    smemSpace = gpu::AddressSpaceAttr::get(
        ctx, gpu::GPUDialect::getWorkgroupAddressSpace());
    bf16 = b.getBF16Type();
    f32 = b.getF32Type();
    i64 = b.getI64Type();
    la.major = p.aMajor;
    la.rows = t.bm;
    la.offset = 0;
    lb.major = p.bMajor;
    lb.rows = t.bn;
    lb.offset = t.bm * t.bk * 2;
    lb2 = lb;
    lb2.offset = (t.bm + t.bn) * t.bk * 2;
    // stages "full" barriers (TMA landed), then stages "empty" ones (the
    // consumers are done reading the slot).
    barriers = nvgpu::MBarrierGroupType::get(ctx, smemSpace, 2 * t.stages);
    accType = LLVM::LLVMStructType::getLiteral(
        ctx, SmallVector<Type>(t.bn / 2, f32));
  }

  MemRefType boxType(const OperandLayout &l) {
    return MemRefType::get(l.box(), bf16, MemRefLayoutAttrInterface(),
                           smemSpace);
  }
  nvgpu::TensorMapDescriptorType tensorMapType(const OperandLayout &l) {
    return swizzled128TensorMap(ctx, boxType(l));
  }

  Value idx(int64_t v) { return arith::ConstantIndexOp::create(b, loc, v); }
  Value cI64(int64_t v) {
    return arith::ConstantOp::create(b, loc, b.getI64IntegerAttr(v));
  }
  Value cF32(double v) {
    return arith::ConstantOp::create(b, loc,
                                     b.getF32FloatAttr(static_cast<float>(v)));
  }
  Value add(Value x, Value y) { return arith::AddIOp::create(b, loc, x, y); }
  Value mul(Value x, Value y) { return arith::MulIOp::create(b, loc, x, y); }
  Value cmp(arith::CmpIPredicate pred, Value x, Value y) {
    return arith::CmpIOp::create(b, loc, pred, x, y);
  }

  /// Emits the whole kernel body into `fn`'s entry block.
  void build(gpu::GPUFuncOp fn, unsigned numInputs);

  /// The epilogue expression of value `v` as the launch ABI writes it.
  std::string expression(Value v);

private:
  int64_t numAccs() const { return p.b2Arg >= 0 ? 2 : 1; }
  /// The named barrier of the consumer warpgroups (weight gradients' token
  /// masking); 0 is the CTA-wide one.
  static constexpr int64_t kConsumerBarrier = 1;
  /// Column pairs whose [M, N] epilogue inputs are loaded ahead together.
  static constexpr int64_t kEpiloguePreload = 4;
  /// Thread 0: TMA loads of operand tile(s) `l` of rows [row0, row0 +
  /// l.rows) and k [k0, k0 + 64) into stage `slot`.
  void loadOperand(Value tm, const OperandLayout &l, Value row0, Value k0,
                   Value slot) {
    Value stage = add(ringBase, mul(slot, idx(t.stageBytes())));
    for (int64_t j = 0; j < l.boxes(); ++j) {
      Value dst = memref::ViewOp::create(
          b, loc, boxType(l), smem, add(stage, idx(l.offset + j * 64 * 128)),
          ValueRange{});
      SmallVector<Value, 2> coords =
          l.mn() ? SmallVector<Value, 2>{add(row0, idx(64 * j)), k0}
                 : SmallVector<Value, 2>{k0, row0};
      nvgpu::TmaAsyncLoadOp::create(b, loc, dst, bars, tm, coords, slot,
                                    Value(), Value());
    }
  }
  /// The producer thread: expect the bytes of k tile `kt` on the full
  /// mbarrier `slot`, then start the TMA loads of the A and B tile(s) of
  /// the tile at (m0, n0) into that slot. The k tiles of the terms follow
  /// one another (term i covers its own K / 64 tiles).
  void issueLoads(Value kt, Value slot) {
    nvgpu::MBarrierArriveExpectTxOp::create(b, loc, bars, idx(t.stageBytes()),
                                            slot, Value());
    loadTerm(0, kt, slot, 0);
  }
  void loadTerm(size_t i, Value kt, Value slot, int64_t firstTile) {
    auto loads = [&](Value local) {
      Value k0 = mul(local, idx(t.bk));
      loadOperand(tmA[i], la, m0, k0, slot);
      loadOperand(tmB[i], lb, n0, k0, slot);
      if (tmB2)
        loadOperand(tmB2, lb2, n0, k0, slot);
    };
    Value local = arith::SubIOp::create(b, loc, kt, idx(firstTile));
    if (i + 1 == p.terms.size()) {
      loads(local);
      return;
    }
    int64_t end = firstTile + p.terms[i].k / t.bk;
    Value here =
        arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, kt, idx(end));
    auto ifOp = scf::IfOp::create(b, loc, here, /*withElse=*/true);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(&ifOp.getThenRegion().front());
    loads(local);
    b.setInsertionPointToStart(&ifOp.getElseRegion().front());
    loadTerm(i + 1, kt, slot, end);
  }
  /// The wgmma shared-memory descriptor of a 128-byte-swizzled operand at
  /// shared address `addr` (bytes, i64): leading byte offset K-major: unused
  /// (16); MN-major: 8 KiB from one 64-wide M/N atom to the next; stride
  /// byte offset 1024 (8 rows of 128 bytes: the next 8 M/N rows of a K-major
  /// tile, the next 8 K rows of an MN-major one); base offset 0 (every tile
  /// is 1024-aligned); swizzle mode 128B.
  Value descriptor(Value addr, const OperandLayout &l) {
    return wgmmaDescriptor128B(b, loc, addr, l.leadingBytes(), /*sbo=*/1024);
  }
  /// A consumer's wgmmas of one k tile at stage address `slotAddr`, its A
  /// rows at `aOffset` bytes into the A tile: for each k16 step, each
  /// accumulator and each m64 block of the consumer's rows one m64n{bn}k16.
  void issueWgmmas(Value slotAddr, Value aOffset, SmallVectorImpl<Value> &accs);
  /// Weight gradients, run by all consumer threads (`ctid` = index among
  /// them): zeroes the K rows >= nb * nt of the k tile `kt` in the stage at
  /// `slotStart` (whole 128-byte lines of the MN-major boxes), so that stale
  /// token rows add nothing; then a named barrier of the consumers only.
  void maskTokenRows(Value kt, Value slotStart, Value rows, Value ctid);
  Value toI64(Value index) {
    return arith::IndexCastUIOp::create(b, loc, i64, index);
  }
  void epilogue(ArrayRef<Value> accs, ValueRange args, unsigned numInputs,
                Value rows, Value tid);
  /// The f32 value of element `e` (0 or 1) of the column pair at (row, col)
  /// of epilogue value `v`.
  Value evaluate(Value v, int e);

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
  RingPos consumeTile(RingPos pos, Value consumer, Value wtid, Value rows,
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
  OperandLayout la, lb, lb2;
  nvgpu::MBarrierGroupType barriers;
  LLVM::LLVMStructType accType;
  /// `bars` holds the full barriers [0, stages) and the empty barriers
  /// [stages, 2 * stages). m0 and n0 are the origin of the rows the current
  /// warpgroup works on: the whole tile for the producer (issueLoads), the
  /// consumer's rows of it for a consumer (epilogue). kEnd is the number of
  /// k tiles of every tile (dynamic for weight gradients), the bound of both
  /// the producer's and the consumers' k loops.
  SmallVector<Value> tmA, tmB;
  Value tmB2;
  Value smem, ringBase, ringAddr, bars, m0, n0, kEnd;
  /// nt and pos0 (index): a cache output's row r lies at
  /// [r / nt, pos0 + r % nt] of the cache.
  Value ntIdx, pos0Idx;
  // Epilogue state at one column pair.
  ArrayRef<Value> epAccs;
  ValueRange epArgs;
  Value epRow, epCol;
  int64_t epMb = 0, epHalf = 0, epJ = 0;
  llvm::DenseMap<std::pair<Value, int>, Value> epMemo;
  llvm::DenseMap<Value, Value> epPairs;
  /// The [M, N] group inputs the epilogue reads, and their pairs loaded
  /// ahead for the column pairs j of the current row (epPreloaded[{v, j}]).
  SmallVector<Value> epInputs;
  llvm::DenseMap<std::pair<Value, int64_t>, Value> epPreloaded;
  void collectEpilogueInputs(Value v, llvm::DenseSet<Value> &seen);
  Value loadInputPair(Value v);
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
  auto loop = scf::ForOp::create(b, loc, idx(0), kEnd, idx(1),
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
                                              Value wtid, Value rows,
                                              SmallVectorImpl<Value> &accs) {
  const int64_t nAccs = numAccs() * (t.consumerRows() / 64);
  SmallVector<Value> init;
  for (int64_t i = 0; i < nAccs; ++i)
    init.push_back(LLVM::ZeroOp::create(b, loc, accType));
  init.append({pos.slot, pos.phase});
  Value isLeader = cmp(arith::CmpIPredicate::eq, wtid, idx(0));
  // This consumer's rows of the A tile: consumerRows rows of 128 bytes
  // (K-major) or consumerRows / 64 boxes of 8 KiB (MN-major): the same
  // offset.
  Value aOffset = toI64(mul(consumer, idx(t.consumerRows() * t.bk * 2)));
  auto loop = scf::ForOp::create(b, loc, idx(0), kEnd, idx(1), init);
  {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(loop.getBody());
    Value kt = loop.getInductionVar();
    auto iters = loop.getRegionIterArgs();
    RingPos cur{iters[nAccs], iters[nAccs + 1]};
    nvgpu::MBarrierTryWaitParityOp::create(b, loc, bars, cur.phase,
                                           idx(10000000), cur.slot);
    Value slotOffset = mul(cur.slot, idx(t.stageBytes()));
    if (p.tokenK)
      maskTokenRows(
          kt, add(ringBase, slotOffset), rows,
          add(mul(consumer, idx(HopperGemmTile::kWarpgroupThreads)), wtid));
    Value slotAddr = arith::AddIOp::create(b, loc, ringAddr, toI64(slotOffset));
    NVVM::WgmmaFenceAlignedOp::create(b, loc);
    SmallVector<Value> tileAccs(iters.take_front(nAccs));
    issueWgmmas(slotAddr, aOffset, tileAccs);
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
  RingPos end{loop.getResult(nAccs), loop.getResult(nAccs + 1)};
  // The last k tile's slot (none when a weight gradient has no active
  // token rows: then no k tile ran and no slot was taken).
  auto ifRelease = scf::IfOp::create(
      b, loc,
      arith::AndIOp::create(b, loc, isLeader,
                            cmp(arith::CmpIPredicate::ugt, kEnd, idx(0))),
      false);
  {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(&ifRelease.getThenRegion().front());
    nvgpu::MBarrierArriveOp::create(b, loc, bars,
                                    add(previousSlot(end.slot), idx(t.stages)));
  }
  accs.assign(loop.getResults().begin(), loop.getResults().begin() + nAccs);
  return end;
}

std::pair<Value, Value> GemmBuilder::tileOrigin(Value tile,
                                                Value activeTileRows) {
  const int64_t group = HopperGemmTile::kGroupRows;
  const int64_t perGroup = group * (p.n / t.bn);
  // A static tile-row count with a shorter last group (a weight gradient
  // whose M / bm is no multiple of kGroupRows, e.g. the lm head's 1002 tile
  // rows): the group's row count is one of two constants, so both orders
  // are computed with constant divisors and the last group's selected. A
  // division by the dynamic row count (a div.u16 subroutine call in SASS)
  // made the accumulated lm-head dW spill the tile index around the call.
  if (std::optional<int64_t> rowsConst = getConstantIntValue(activeTileRows);
      rowsConst && *rowsConst % group != 0) {
    const int64_t fullRows = *rowsConst / group * group;
    const int64_t lastRows = *rowsConst % group;
    Value g = arith::DivUIOp::create(b, loc, tile, idx(perGroup));
    Value inGroup = arith::RemUIOp::create(b, loc, tile, idx(perGroup));
    Value row = add(mul(g, idx(group)),
                    arith::RemUIOp::create(b, loc, inGroup, idx(group)));
    Value col = arith::DivUIOp::create(b, loc, inGroup, idx(group));
    Value inLast =
        arith::SubIOp::create(b, loc, tile, idx(fullRows / group * perGroup));
    Value lastRow = add(idx(fullRows),
                        arith::RemUIOp::create(b, loc, inLast, idx(lastRows)));
    Value lastCol = arith::DivUIOp::create(b, loc, inLast, idx(lastRows));
    Value isLast =
        cmp(arith::CmpIPredicate::uge, tile, idx(fullRows / group * perGroup));
    Value tileRow = arith::SelectOp::create(b, loc, isLast, lastRow, row);
    Value tileCol = arith::SelectOp::create(b, loc, isLast, lastCol, col);
    return {mul(tileRow, idx(t.bm)), mul(tileCol, idx(t.bn))};
  }
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
  unsigned nArgs = numInputs + p.outputs.size();
  Value rows = mul(asIndex(args[nArgs]), asIndex(args[nArgs + 1]));
  ntIdx = asIndex(args[nArgs + 1]);
  pos0Idx = asIndex(args[nArgs + 2]);
  // The tiles of the active rows (nb * nt): tile rows [0, activeTileRows).
  // A weight gradient's rows are features: all of them are computed.
  Value activeTileRows =
      p.tokenK ? idx(p.m / t.bm)
               : arith::MinUIOp::create(
                     b, loc,
                     arith::DivUIOp::create(b, loc, add(rows, idx(t.bm - 1)),
                                            idx(t.bm)),
                     idx(p.m / t.bm))
                     .getResult();
  Value numTiles = mul(activeTileRows, idx(p.n / t.bn));
  Value firstTile = gpu::BlockIdOp::create(b, loc, gpu::Dimension::x);
  Value tileStep = gpu::GridDimOp::create(b, loc, gpu::Dimension::x);

  // The tensor maps arrive as generic pointers (CUtensorMap in device
  // memory); nvgpu's tensor-map type lowers to exactly that pointer.
  SmallVector<Value> mapPtrs;
  auto castMap = [&](unsigned a, const OperandLayout &l) {
    Value ptr = args[a];
    if (!llvm::is_contained(mapPtrs, ptr))
      mapPtrs.push_back(ptr);
    return UnrealizedConversionCastOp::create(b, loc, tensorMapType(l), ptr)
        .getResult(0);
  };
  for (const HopperGemmTerm &term : p.terms) {
    tmA.push_back(castMap(term.aArg, la));
    tmB.push_back(castMap(term.bArg, lb));
  }
  if (p.b2Arg >= 0)
    tmB2 = castMap(p.b2Arg, lb2);

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
  // The k tiles of every tile: all of them, or for a weight gradient those
  // with active token rows (ceil(nb * nt / 64)). One Value for the producer
  // and the consumers: both walk the same k tiles per tile, so their ring
  // positions agree at every tile boundary.
  const int64_t kTiles = p.k / t.bk;
  kEnd = idx(kTiles);
  if (p.tokenK)
    kEnd = arith::MinUIOp::create(
        b, loc, kEnd,
        arith::DivUIOp::create(b, loc, add(rows, idx(t.bk - 1)), idx(t.bk)));
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
    for (Value ptr : mapPtrs)
      fenceTensorMap(b, loc, ptr);
    SmallVector<Value> maps(tmA);
    maps.append(tmB);
    if (tmB2)
      maps.push_back(tmB2);
    for (Value tm : maps)
      nvgpu::TmaPrefetchOp::create(b, loc, tm, Value());
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
                  RingPos end = consumeTile(pos, consumer, wtid, rows, accs);
                  m0 = add(tileM0, rowOffset);
                  n0 = tileN0;
                  epilogue(accs, args, numInputs, rows, wtid);
                  return end;
                });
  }
  b.setInsertionPointToEnd(entry);
  gpu::ReturnOp::create(b, loc);
}

void GemmBuilder::issueWgmmas(Value slotAddr, Value aOffset,
                              SmallVectorImpl<Value> &accs) {
  const int64_t mBlocks = t.consumerRows() / 64;
  Value descA =
      descriptor(arith::AddIOp::create(b, loc, slotAddr, aOffset), la);
  SmallVector<Value, 2> descB = {
      descriptor(arith::AddIOp::create(b, loc, slotAddr, cI64(lb.offset)), lb)};
  if (numAccs() == 2)
    descB.push_back(descriptor(
        arith::AddIOp::create(b, loc, slotAddr, cI64(lb2.offset)), lb2));
  auto shape = NVVM::MMAShapeAttr::get(ctx, 64, t.bn, 16);
  // imm-trans-a/b: 0 for K-major operands (row A, col B), 1 for MN-major.
  NVVM::MMALayout layoutA =
      la.mn() ? NVVM::MMALayout::col : NVVM::MMALayout::row;
  NVVM::MMALayout layoutB =
      lb.mn() ? NVVM::MMALayout::row : NVVM::MMALayout::col;
  for (int64_t kk = 0; kk < t.bk / 16; ++kk) {
    for (int64_t a = 0; a < numAccs(); ++a) {
      Value db = arith::AddIOp::create(b, loc, descB[a],
                                       cI64(kk * lb.k16Bytes() >> 4));
      for (int64_t mb = 0; mb < mBlocks; ++mb) {
        // +64 rows of 128 bytes (K-major) or the next 64-wide box
        // (MN-major): 8 KiB per m64 block either way.
        Value da = arith::AddIOp::create(
            b, loc, descA, cI64((mb * 64 * 128 + kk * la.k16Bytes()) >> 4));
        Value &acc = accs[a * mBlocks + mb];
        acc = NVVM::WgmmaMmaAsyncOp::create(
            b, loc, accType, acc, da, db, shape, NVVM::WGMMATypes::bf16,
            NVVM::WGMMATypes::bf16, NVVM::WGMMATypes::f32,
            NVVM::WGMMAScaleOut::one, NVVM::WGMMAScaleIn::one,
            NVVM::WGMMAScaleIn::one, layoutA, layoutB,
            NVVM::MMAIntOverflowAttr());
      }
    }
  }
}

void GemmBuilder::maskTokenRows(Value kt, Value slotStart, Value rows,
                                Value ctid) {
  // Only the last active k tile can be partial: rows - 64 kt < 64.
  Value tileEnd = mul(add(kt, idx(1)), idx(t.bk));
  Value partial =
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ugt, tileEnd, rows);
  auto ifPartial = scf::IfOp::create(b, loc, partial, false);
  OpBuilder::InsertionGuard g(b);
  b.setInsertionPointToStart(&ifPartial.getThenRegion().front());
  Value valid = arith::SubIOp::create(b, loc, rows, mul(kt, idx(t.bk)));
  // Every 128-byte line of the stage is one K row (of one 64-wide box):
  // line l holds K row l % 64. 16 bytes per thread and step.
  const int64_t lines = t.stageBytes() / 128;
  auto zeros = arith::ConstantOp::create(
      b, loc,
      DenseElementsAttr::get(VectorType::get({16}, b.getI8Type()),
                             b.getI8IntegerAttr(0)));
  const int64_t threads = t.consumers * HopperGemmTile::kWarpgroupThreads;
  auto loop = scf::ForOp::create(b, loc, ctid, idx(lines * 8), idx(threads));
  {
    OpBuilder::InsertionGuard g2(b);
    b.setInsertionPointToStart(loop.getBody());
    Value i = loop.getInductionVar();
    Value line = arith::DivUIOp::create(b, loc, i, idx(8));
    Value kRow = arith::RemUIOp::create(b, loc, line, idx(64));
    Value stale =
        arith::CmpIOp::create(b, loc, arith::CmpIPredicate::uge, kRow, valid);
    auto ifStale = scf::IfOp::create(b, loc, stale, false);
    b.setInsertionPointToStart(&ifStale.getThenRegion().front());
    vector::StoreOp::create(b, loc, zeros, smem,
                            ValueRange{add(slotStart, mul(i, idx(16)))},
                            /*nontemporal=*/false, llvm::MaybeAlign(16));
  }
  // The zeros (generic proxy) before the wgmmas' reads (async proxy), in
  // every consumer warp; then every consumer thread waits for all the
  // zeros. The producer warpgroup does not take part: bar.sync 1 with the
  // consumers' thread count (barrier 0 is the CTA-wide one of the set-up).
  // The producer cannot refill this slot meanwhile: its empty barrier needs
  // every consumer's release after its wgmmas on the slot.
  LLVM::InlineAsmOp::create(b, loc, TypeRange(), ValueRange(),
                            "fence.proxy.async.shared::cta;", "",
                            /*has_side_effects=*/true, /*is_align_stack=*/false,
                            LLVM::tailcallkind::TailCallKind::None,
                            LLVM::AsmDialectAttr(), ArrayAttr());
  auto i32c = [&](int64_t v) {
    return arith::ConstantOp::create(b, loc, b.getI32IntegerAttr(v))
        .getResult();
  };
  NVVM::BarrierOp::create(b, loc, TypeRange{}, i32c(kConsumerBarrier),
                          i32c(threads), NVVM::BarrierReductionAttr(), Value());
}

/// The accumulator of an m64nN wgmma: thread t of the warpgroup (warp w =
/// t / 32, lane l) holds, for j < N / 8, rows r0 = 16w + l/4 and r0 + 8 at
/// columns c = 8j + 2(l % 4) and c + 1, as struct elements 4j + {0, 1}
/// (row r0) and 4j + {2, 3} (row r0 + 8). The epilogue evaluates the
/// group's elementwise ops (the SIMT kernel's f32 formulas) on each column
/// pair and stores every output once, rounded to its type.
void GemmBuilder::epilogue(ArrayRef<Value> accs, ValueRange args,
                           unsigned numInputs, Value rows, Value tid) {
  Value warp = arith::DivUIOp::create(b, loc, tid, idx(32));
  Value lane = arith::RemUIOp::create(b, loc, tid, idx(32));
  Value rowInBlock = add(mul(warp, idx(16)),
                         arith::DivUIOp::create(b, loc, lane, idx(4)));
  Value colBase = add(n0, mul(arith::RemUIOp::create(b, loc, lane, idx(4)),
                              idx(2)));
  epAccs = accs;
  epArgs = args;
  epInputs.clear();
  llvm::DenseSet<Value> seen;
  for (Value v : p.outputs)
    collectEpilogueInputs(v, seen);
  // The consumer's rows: m0 is its first row, consumerRows / 64 m64 blocks.
  const int64_t mBlocks = t.consumerRows() / 64;
  for (int64_t mb = 0; mb < mBlocks; ++mb) {
    for (int64_t half = 0; half < 2; ++half) {
      Value row = add(add(m0, rowInBlock), idx(mb * 64 + half * 8));
      OpBuilder::InsertionGuard g(b);
      if (!p.tokenK) {
        Value inRange =
            arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, row, rows);
        auto guard = scf::IfOp::create(b, loc, inRange, false);
        b.setInsertionPointToStart(&guard.getThenRegion().front());
      }
      // A cache output's row: sequence r / nt, position pos0 + r % nt (the
      // SIMT kernel's cache_write addressing, colossus.positions).
      Value seq, pos;
      if (llvm::any_of(p.cacheDims, [](auto d) { return d.first != 0; })) {
        seq = arith::DivUIOp::create(b, loc, row, ntIdx);
        pos = add(pos0Idx, arith::RemUIOp::create(b, loc, row, ntIdx));
      }
      epPreloaded.clear();
      for (int64_t j = 0; j < t.bn / 8; ++j) {
        epRow = row;
        epMb = mb;
        epHalf = half;
        // The [M, N] inputs of the next kEpiloguePreload column pairs are
        // loaded before any of them is computed and stored: the stores
        // could alias the loads as far as ptxas knows, so a load issued
        // after a store waits its whole latency (the memory plan never
        // gives a kernel's input and output the same memory).
        if (j % kEpiloguePreload == 0) {
          for (int64_t jj = j; jj < std::min(j + kEpiloguePreload, t.bn / 8);
               ++jj) {
            epCol = add(colBase, idx(8 * jj));
            for (Value in : epInputs)
              epPreloaded[{in, jj}] = loadInputPair(in);
          }
        }
        epCol = add(colBase, idx(8 * j));
        epJ = j;
        epMemo.clear();
        epPairs.clear();
        for (auto [i, v] : llvm::enumerate(p.outputs)) {
          Type elem = p.outElems[i];
          auto pairTy = VectorType::get({2}, f32);
          Value pair = vector::FromElementsOp::create(
              b, loc, pairTy, ValueRange{evaluate(v, 0), evaluate(v, 1)});
          if (!elem.isF32())
            pair = arith::TruncFOp::create(b, loc, VectorType::get({2}, elem),
                                           pair);
          // A pair starts at an even column of a row of N (a multiple of
          // 64) elements: aligned to two elements when the buffer is.
          SmallVector<Value, 3> at = {epRow, epCol};
          if (p.cacheDims[i].first != 0)
            at = {seq, pos, epCol};
          vector::StoreOp::create(
              b, loc, pair, args[numInputs + i], at,
              /*nontemporal=*/false,
              llvm::MaybeAlign(elem.getIntOrFloatBitWidth() / 4));
        }
      }
    }
  }
}

/// The group inputs that evaluate() reads as [M, N] pairs for `v`.
void GemmBuilder::collectEpilogueInputs(Value v, llvm::DenseSet<Value> &seen) {
  if (!seen.insert(v).second)
    return;
  if (isa<BlockArgument>(v)) {
    if (cast<RankedTensorType>(v.getType()).getRank() == 2)
      epInputs.push_back(v);
    return;
  }
  if (v == p.accValue[0] || v == p.accValue[1])
    return; // an accumulator (its bias is an [N] row, loaded when used)
  for (Value operand : v.getDefiningOp()->getOperands())
    collectEpilogueInputs(operand, seen);
}

/// The pair of group input `v` at [epRow, epCol] ([epCol] for an [N] row),
/// as stored.
Value GemmBuilder::loadInputPair(Value v) {
  auto ty = cast<RankedTensorType>(v.getType());
  Type elem = ty.getElementType();
  SmallVector<Value, 2> at = ty.getRank() == 2
                                 ? SmallVector<Value, 2>{epRow, epCol}
                                 : SmallVector<Value, 2>{epCol};
  return vector::LoadOp::create(
      b, loc, VectorType::get({2}, elem),
      epArgs[cast<BlockArgument>(v).getArgNumber()], at,
      /*nontemporal=*/false,
      llvm::MaybeAlign(elem.getIntOrFloatBitWidth() / 4));
}

Value GemmBuilder::evaluate(Value v, int e) {
  if (Value known = epMemo.lookup({v, e}))
    return known;
  auto mulF = [&](Value x, Value y) {
    return arith::MulFOp::create(b, loc, x, y).getResult();
  };
  auto addF = [&](Value x, Value y) {
    return arith::AddFOp::create(b, loc, x, y).getResult();
  };
  auto subF = [&](Value x, Value y) {
    return arith::SubFOp::create(b, loc, x, y).getResult();
  };
  auto sigmoid = [&](Value x) {
    Value ex = math::ExpOp::create(b, loc, arith::NegFOp::create(b, loc, x));
    return arith::DivFOp::create(b, loc, cF32(1.0), addF(cF32(1.0), ex))
        .getResult();
  };
  auto siluPrime = [&](Value x, Value s) {
    return mulF(s, addF(cF32(1.0), mulF(x, subF(cF32(1.0), s))));
  };
  Value r;
  if (auto ba = dyn_cast<BlockArgument>(v)) {
    // A group input: the pair at [row, col] or [col], loaded once (an
    // [M, N] input's ahead of the column pairs, see epilogue()).
    Value pair = epPairs.lookup(v);
    if (!pair) {
      pair = epPreloaded.lookup({v, epJ});
      if (!pair)
        pair = loadInputPair(v);
      Type elem = cast<RankedTensorType>(v.getType()).getElementType();
      if (!elem.isF32())
        pair = arith::ExtFOp::create(b, loc, VectorType::get({2}, f32), pair);
      epPairs[v] = pair;
    }
    r = vector::ExtractOp::create(b, loc, pair, ArrayRef<int64_t>{e});
  } else if (v == p.accValue[0] || v == p.accValue[1]) {
    int a = v == p.accValue[0] ? 0 : 1;
    Value acc = epAccs[a * (t.consumerRows() / 64) + epMb];
    r = LLVM::ExtractValueOp::create(b, loc, acc, 4 * epJ + 2 * epHalf + e);
    if (auto l = v.getDefiningOp<LinearOp>(); l && l.getBias())
      r = addF(r, evaluate(l.getBias(), e));
  } else {
    Operation *op = v.getDefiningOp();
    auto in = [&](unsigned i) { return evaluate(op->getOperand(i), e); };
    if (isa<AddOp>(op)) {
      r = addF(in(0), in(1));
    } else if (isa<MulOp>(op)) {
      r = mulF(in(0), in(1));
    } else if (isa<SiluOp>(op)) {
      Value x = in(0);
      Value ex = math::ExpOp::create(b, loc, arith::NegFOp::create(b, loc, x));
      r = arith::DivFOp::create(b, loc, x, addF(cF32(1.0), ex));
    } else if (isa<SwigluOp>(op)) {
      Value g = in(0);
      Value ex = math::ExpOp::create(b, loc, arith::NegFOp::create(b, loc, g));
      r = mulF(arith::DivFOp::create(b, loc, g, addF(cF32(1.0), ex)), in(1));
    } else if (auto gl = dyn_cast<GeluOp>(op)) {
      Value x = in(0), inner;
      Value halfX = mulF(cF32(0.5), x);
      if (gl.getApproximate() == GeluApprox::tanh) {
        Value x3 = mulF(x, mulF(x, x));
        Value u = addF(x, mulF(cF32(0.044715), x3));
        inner =
            math::TanhOp::create(b, loc, mulF(cF32(std::sqrt(2.0 / M_PI)), u));
      } else {
        inner = math::ErfOp::create(b, loc, mulF(x, cF32(M_SQRT1_2)));
      }
      r = mulF(halfX, addF(cF32(1.0), inner));
    } else if (auto cv = dyn_cast<ConvertOp>(op)) {
      // As the SIMT kernel: a narrowing conversion rounds.
      r = in(0);
      Type to = cv.getElementType();
      if (!to.isF32())
        r = arith::ExtFOp::create(
            b, loc, f32, arith::TruncFOp::create(b, loc, to, r).getResult());
    } else if (isa<SiluGradOp>(op)) {
      Value x = in(0);
      r = mulF(in(1), siluPrime(x, sigmoid(x)));
    } else if (auto sg = dyn_cast<SwigluGradOp>(op)) {
      Value g = in(0), u = in(1), dy = in(2);
      Value s = sigmoid(g);
      r = cast<OpResult>(v).getResultNumber() == 0
              ? mulF(mulF(dy, u), siluPrime(g, s))
              : mulF(dy, mulF(g, s));
    } else if (auto gg = dyn_cast<GeluGradOp>(op)) {
      Value x = in(0), dy = in(1), d;
      if (gg.getApproximate() == GeluApprox::tanh) {
        double k = std::sqrt(2.0 / M_PI);
        Value x2 = mulF(x, x);
        Value u = mulF(cF32(k), addF(x, mulF(cF32(0.044715), mulF(x2, x))));
        Value th = math::TanhOp::create(b, loc, u);
        Value sech2 = subF(cF32(1.0), mulF(th, th));
        Value du = mulF(cF32(k), addF(cF32(1.0), mulF(cF32(3 * 0.044715), x2)));
        d = addF(mulF(cF32(0.5), addF(cF32(1.0), th)),
                 mulF(mulF(cF32(0.5), x), mulF(sech2, du)));
      } else {
        Value cdf =
            mulF(cF32(0.5),
                 addF(cF32(1.0),
                      math::ErfOp::create(b, loc, mulF(x, cF32(M_SQRT1_2)))));
        Value pdf =
            mulF(cF32(1.0 / std::sqrt(2.0 * M_PI)),
                 math::ExpOp::create(b, loc, mulF(cF32(-0.5), mulF(x, x))));
        d = addF(cdf, mulF(x, pdf));
      }
      r = mulF(dy, d);
    }
  }
  epMemo[{v, e}] = r;
  return r;
}

std::string GemmBuilder::expression(Value v) {
  if (auto ba = dyn_cast<BlockArgument>(v)) {
    auto ty = cast<RankedTensorType>(v.getType());
    return (ty.getRank() == 2 ? "row" : "col") +
           std::to_string(ba.getArgNumber()) + ":" +
           typeName(ty.getElementType());
  }
  if (v == p.accValue[0] || v == p.accValue[1]) {
    std::string acc = v == p.accValue[0] ? "acc0" : "acc1";
    if (auto l = v.getDefiningOp<LinearOp>(); l && l.getBias())
      return "add(" + acc + "," + expression(l.getBias()) + ")";
    return acc;
  }
  Operation *op = v.getDefiningOp();
  std::string name;
  if (isa<AddOp>(op))
    name = "add";
  else if (isa<MulOp>(op))
    name = "mul";
  else if (isa<SiluOp>(op))
    name = "silu";
  else if (isa<SwigluOp>(op))
    name = "swiglu";
  else if (auto g = dyn_cast<GeluOp>(op))
    name = g.getApproximate() == GeluApprox::tanh ? "gelu_tanh" : "gelu_erf";
  else if (auto cv = dyn_cast<ConvertOp>(op))
    name = cv.getElementType().isF32() ? "f32" : "bf16";
  else if (isa<SiluGradOp>(op))
    name = "silu_grad";
  else if (isa<SwigluGradOp>(op))
    name = cast<OpResult>(v).getResultNumber() == 0 ? "swiglu_dgate"
                                                    : "swiglu_dup";
  else if (auto gg = dyn_cast<GeluGradOp>(op))
    name = gg.getApproximate() == GeluApprox::tanh ? "gelu_grad_tanh"
                                                   : "gelu_grad_erf";
  std::string s = name + "(";
  for (auto [i, operand] : llvm::enumerate(op->getOperands()))
    s += (i ? "," : "") + expression(operand);
  return s + ")";
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
  ctx->getOrLoadDialect<math::MathDialect>();

  Block &body = fusion.getBody().front();
  llvm::SmallDenseSet<unsigned> mapArgs;
  for (const HopperGemmTerm &t : p.terms) {
    mapArgs.insert(t.aArg);
    mapArgs.insert(t.bArg);
  }
  if (p.b2Arg >= 0)
    mapArgs.insert(p.b2Arg);
  auto fn = createHopperKernel(
      builder, loc, name, body, fusion.getResultTypes(),
      [&](unsigned n) { return mapArgs.count(n) != 0; },
      static_cast<int32_t>(p.tile.threads()));
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
  auto list = [](auto range, auto fn) {
    std::string s;
    for (const auto &x : range)
      s += (s.empty() ? "" : ",") + fn(x);
    return s;
  };
  auto major = [](GemmMajor m) { return m == GemmMajor::K ? "k" : "mn"; };
  std::string outs =
      list(p.outElems, [](Type e) { return std::string(typeName(e)); });
  std::string epilogue;
  for (Value v : p.outputs)
    epilogue += (epilogue.empty() ? "" : ";") + gb.expression(v);
  std::string abi = llvm::formatv(
      "m={0} n={1} k={2} bm={3} bn={4} bk={5} stages={6} grid={7},{8},1 "
      "block={9},1,1 dynamic_smem={10} a_arg={11} b_arg={12} bias_arg={13} "
      "residual_arg={14} out_arg={15} out={16} bias={17} residual={18} "
      "a_layout={19} b_layout={20} kparts={21} b2_arg={22} mask_k={23} "
      "outs={24} epilogue={25}",
      p.m, p.n, p.k, t.bm, t.bn, t.bk, t.stages, t.grid, 1, t.threads(),
      t.dynamicSmemBytes(),
      list(p.terms,
           [](const HopperGemmTerm &x) { return std::to_string(x.aArg); }),
      list(p.terms,
           [](const HopperGemmTerm &x) { return std::to_string(x.bArg); }),
      p.biasArg, p.residualArg, body.getNumArguments(), outs,
      typeName(p.biasElem), typeName(p.residualElem), major(p.aMajor),
      major(p.bMajor),
      list(p.terms,
           [](const HopperGemmTerm &x) { return std::to_string(x.k); }),
      p.b2Arg, p.tokenK ? 1 : 0, p.outputs.size(), epilogue);
  // KV cache outputs: `cache=<output>:<B>x<S>` (comma-separated), only when
  // there is one (the other kernels' ABI lines are unchanged).
  std::string cache;
  for (auto [i, d] : llvm::enumerate(p.cacheDims))
    if (d.first != 0)
      cache += llvm::formatv("{0}{1}:{2}x{3}", cache.empty() ? "" : ",", i,
                             d.first, d.second)
                   .str();
  if (!cache.empty())
    abi += " cache=" + cache;
  fn->setAttr(kHopperGemmAbiAttr, builder.getStringAttr(abi));
  return fn.getOperation();
}
