//===- KernelEmitter.cpp - Loop-nest kernels from fusion groups -----------===//
//
// A fusion group becomes one kernel over memrefs. Every value of the group
// is computed *at an index* by a scalar emitter: an elementwise op at (r, c)
// from its operands at (r, c); a linear at (r, c) by a reduction over k; a
// rope at (r, c) from x at (r, c) and at the paired column; a norm at (r, c)
// from row statistics computed once per row before the column loop; inputs
// by memref loads. Three kernel shapes cover the groups the fusion pass
// forms:
//   pointwise: parallel over (row, column) of the group's iteration space;
//   row:       parallel over rows, row statistics then a column loop (norms,
//              softmax);
//   attention: parallel over (row, head), two passes over the keys (running
//              max and sum, then the normalized weighted sum of values).
// On the cpu target the kernel loops over the whole parallel space itself; on
// sm_90a each thread takes one parallel index (1-D grid, bounds-checked).
//
//===----------------------------------------------------------------------===//
#include "colossus/Compiler/KernelEmitter.h"
#include "colossus/Compiler/HopperAttention.h"
#include "colossus/Compiler/HopperGemm.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

#include <array>
#include <cmath>

using namespace mlir;
using namespace colossus;

namespace {

enum class Shape {
  Pointwise,
  Row,
  Attention,
  Reduce,
  Scalar,
  AttnGradQ,
  AttnGradKV,
  Adamw,
  LossRows
};

class Emitter {
public:
  Emitter(OpBuilder &b, Location loc, FusionOp fusion, ValueRange memrefs,
          Value nb, Value nt, Value pos0, bool gpu)
      : b(b), loc(loc), fusion(fusion), nb(nb), nt(nt), pos0(pos0), gpu(gpu) {
    Block &body = fusion.getBody().front();
    for (auto [arg, mem] : llvm::zip(
             body.getArguments(), memrefs.take_front(body.getNumArguments())))
      inputMem[arg] = mem;
    outputMem.assign(memrefs.begin() + body.getNumArguments(), memrefs.end());
  }

  Value cIdx(int64_t v) { return b.create<arith::ConstantIndexOp>(loc, v); }
  Value cF32(double v) {
    return b.create<arith::ConstantOp>(loc, b.getF32FloatAttr(v));
  }

  /// Starts a new (row, column) point: forgets values memoized at the last.
  void beginPoint(Value r, Value c) {
    pointR = r;
    pointC = c;
    memo.clear();
  }

  FailureOr<Value> emit(Value v, ArrayRef<Value> idx);
  LogicalResult emitRowStats(Value r);
  LogicalResult emitGradRowStats(Value r);
  LogicalResult emitStores(Value r, Value c);
  LogicalResult emitAttention(AttentionOp op, Value r, Value h);

private:
  bool atPoint(ArrayRef<Value> idx) const {
    return idx.size() == 2 && idx[0] == pointR && idx[1] == pointC;
  }
  /// Loads compute in f32: narrower floats (bf16, f16) are widened.
  Value load(Value mem, ValueRange idx) {
    return widen(b.create<memref::LoadOp>(loc, mem, idx));
  }
  Value widen(Value v) {
    Type t = v.getType(), e = getElementTypeOrSelf(t);
    if (!isa<FloatType>(e) || e.isF32())
      return v;
    Type f32 = b.getF32Type();
    if (auto vt = dyn_cast<VectorType>(t))
      f32 = vt.clone(f32);
    return b.create<arith::ExtFOp>(loc, f32, v);
  }
  /// The logits column of target `t` (an i32), clamped into [0, cols); 0
  /// for an ignored target (`valid` false), whose column is never used.
  Value targetColumn(Value t, Value valid, int64_t cols) {
    Value i = b.create<arith::IndexCastOp>(
        loc, b.getIndexType(),
        b.create<arith::SelectOp>(
            loc, valid, t,
            b.create<arith::ConstantOp>(loc, b.getI32IntegerAttr(0))));
    return b.create<arith::MinUIOp>(loc, i, cIdx(cols - 1));
  }
  /// One step of the online softmax statistics: with the running maximum m
  /// and normalizer l (`ml`), and a new score x, returns {max(m, x),
  /// l * exp(m - max) + exp(x - max)}.
  SmallVector<Value, 2> onlineSoftmaxStep(ValueRange ml, Value x) {
    Value m = ml[0], l = ml[1];
    Value mNew = b.create<arith::MaximumFOp>(loc, m, x);
    Value lNew = b.create<arith::AddFOp>(
        loc,
        b.create<arith::MulFOp>(
            loc, l,
            b.create<math::ExpOp>(loc, b.create<arith::SubFOp>(loc, m, mNew))),
        b.create<math::ExpOp>(loc, b.create<arith::SubFOp>(loc, x, mNew)));
    return {mNew, lNew};
  }
  /// Stores round an f32 value to the buffer's element type.
  void store(Value v, Value mem, ValueRange idx) {
    Type e = cast<MemRefType>(mem.getType()).getElementType();
    if (e != v.getType() && isa<FloatType>(e))
      v = narrow(v, e);
    b.create<memref::StoreOp>(loc, v, mem, idx);
  }
  /// f32 -> `to`, rounding to nearest even. On the cpu a bf16 result is
  /// rounded with integer ops: x86-64 has no bf16 conversion, and LLVM would
  /// otherwise call __truncsfbf2, which the system's libgcc may lack.
  Value narrow(Value v, Type to) {
    if (!to.isBF16() || gpu)
      return b.create<arith::TruncFOp>(loc, to, v);
    Type i32 = b.getI32Type();
    auto c = [&](int64_t x) {
      return b.create<arith::ConstantOp>(loc, b.getI32IntegerAttr(x));
    };
    // NaNs are made quiet and not rounded (rounding could carry into the
    // sign); everything else gets + 0x7fff + lsb, then the high half. The
    // choice is made on the addend, not the result: LLVM would turn a select
    // right before the bitcast into a bf16 select, which x86 lowers through
    // __truncsfbf2.
    Value bits = b.create<arith::BitcastOp>(loc, i32, v);
    Value isNan = b.create<arith::CmpIOp>(
        loc, arith::CmpIPredicate::ugt,
        b.create<arith::AndIOp>(loc, bits, c(0x7fffffff)), c(0x7f800000));
    Value lsb = b.create<arith::AndIOp>(
        loc, b.create<arith::ShRUIOp>(loc, bits, c(16)), c(1));
    Value addend = b.create<arith::SelectOp>(
        loc, isNan, c(0), b.create<arith::AddIOp>(loc, lsb, c(0x7fff)));
    Value quiet = b.create<arith::OrIOp>(
        loc, bits,
        b.create<arith::ShLIOp>(loc, b.create<arith::ExtUIOp>(loc, i32, isNan),
                                c(22)));
    Value half = b.create<arith::ShRUIOp>(
        loc, b.create<arith::AddIOp>(loc, quiet, addend), c(16));
    return b.create<arith::BitcastOp>(
        loc, to, b.create<arith::TruncIOp>(loc, b.getI16Type(), half));
  }
  FailureOr<Value> emitOp(Operation *op, ArrayRef<Value> idx,
                          unsigned result = 0);
  FailureOr<Value> emitGradOp(Operation *op, ArrayRef<Value> idx,
                              unsigned result, bool &handled);
  /// sum over c < cols of fn(c), as an scf.for reduction.
  FailureOr<Value>
  sumCols(int64_t cols, Value init,
          function_ref<FailureOr<Value>(Value acc, Value c)> fn);
  /// sum over the active rows r < nb*nt of term(r).
  FailureOr<Value> sumRows(function_ref<FailureOr<Value>(Value r)> term);
  FailureOr<Value> rmsRstd(Value x, Value r, double eps);
  /// The row maximum and sum of exp(x - max) of logits row r.
  FailureOr<std::pair<Value, Value>> softmaxStats(Value logits, Value r);
  /// The number of active rows whose target is not `ignore` (f32).
  FailureOr<Value> validTargetCount(Value targets, int64_t ignore);

public:
  LogicalResult emitAdamw(AdamwOp op, Value p, Value q);
  LogicalResult emitAttentionGrad(AttentionGradOp op, Value r, Value h,
                                  bool kv);
  LogicalResult emitReduction(Value p, Value q);
  LogicalResult emitScalar();
  LogicalResult emitCrossEntropyRows(CrossEntropyRowsOp op, Value r);

private:
  FailureOr<Value> emitLinear(LinearOp op, ArrayRef<Value> idx);
  Value dot(Value aMem, ArrayRef<Value> aIdx, Value bMem, ArrayRef<Value> bIdx,
            int64_t n);
  /// The memref behind `v` when it is a group input, else null.
  Value memOf(Value v) {
    auto arg = dyn_cast<BlockArgument>(v);
    return arg ? inputMem.lookup(arg) : Value();
  }
  FailureOr<Value> emitRope(RopeOp op, ArrayRef<Value> idx);
  Value positionOfRow(Value r) {
    // Rows are compacted: row r is token (r mod nt) of sequence (r / nt).
    Value t = b.create<arith::RemUIOp>(loc, r, nt);
    return b.create<arith::AddIOp>(loc, pos0, t);
  }
  FailureOr<Value> emitIndex(Value v, Value r) {
    FailureOr<Value> x = emit(v, {r});
    if (failed(x))
      return failure();
    return b.create<arith::IndexCastOp>(loc, b.getIndexType(), *x).getResult();
  }

  OpBuilder &b;
  Location loc;
  FusionOp fusion;
  Value nb, nt, pos0;
  bool gpu;
  llvm::DenseMap<Value, Value> inputMem;
  SmallVector<Value> outputMem;
  Value pointR, pointC;
  llvm::DenseMap<Value, Value> memo;
  // Per-row statistics of norm/softmax ops, valid inside one row.
  llvm::DenseMap<Operation *, SmallVector<Value, 2>> rowStats;
  // A linear whose result a linalg contraction already wrote to memory.
  Operation *precomputed = nullptr;
  Value precomputedMem;

public:
  LogicalResult emitLinalgGemm(Value rows);
};

FailureOr<Value> Emitter::emit(Value v, ArrayRef<Value> idx) {
  bool point = atPoint(idx);
  if (point)
    if (Value m = memo.lookup(v))
      return m;
  Value result;
  if (auto arg = dyn_cast<BlockArgument>(v)) {
    Value mem = inputMem.lookup(arg);
    if (!mem)
      return fusion.emitOpError("unexpected value from outside the group");
    result = load(mem, idx);
  } else {
    FailureOr<Value> r =
        emitOp(v.getDefiningOp(), idx, cast<OpResult>(v).getResultNumber());
    if (failed(r))
      return failure();
    result = *r;
  }
  if (point)
    memo[v] = result;
  return result;
}

/// sum_{d < n} a[aIdx[:-1], aIdx[-1] + d] * b[bIdx[:-1], bIdx[-1] + d] over
/// two contiguous rows: 8-lane vector loads and FMAs (the partial sums are
/// reduced at the end), then a scalar tail.
Value Emitter::dot(Value aMem, ArrayRef<Value> aIdx, Value bMem,
                   ArrayRef<Value> bIdx, int64_t n) {
  constexpr int64_t kLanes = 8;
  Type f32 = b.getF32Type();
  auto vecTy = VectorType::get({kLanes}, f32);
  int64_t nVec = n / kLanes * kLanes;
  auto offset = [&](ArrayRef<Value> base, Value d) {
    SmallVector<Value> idx(base.begin(), base.end());
    idx.back() = b.create<arith::AddIOp>(loc, idx.back(), d);
    return idx;
  };
  Value sum = cF32(0.0);
  if (nVec > 0) {
    Value zeros = b.create<arith::ConstantOp>(
        loc, vecTy, DenseElementsAttr::get(vecTy, b.getF32FloatAttr(0.0)));
    auto loop = b.create<scf::ForOp>(loc, cIdx(0), cIdx(nVec), cIdx(kLanes),
                                     ValueRange{zeros});
    {
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(loop.getBody());
      Value d = loop.getInductionVar();
      auto vload = [&](Value mem, ArrayRef<Value> idx) {
        auto memTy =
            vecTy.clone(cast<MemRefType>(mem.getType()).getElementType());
        return widen(b.create<vector::LoadOp>(loc, memTy, mem, idx));
      };
      Value va = vload(aMem, offset(aIdx, d));
      Value vb = vload(bMem, offset(bIdx, d));
      Value acc =
          b.create<vector::FMAOp>(loc, va, vb, loop.getRegionIterArgs()[0]);
      b.create<scf::YieldOp>(loc, acc);
    }
    sum = b.create<vector::ReductionOp>(loc, vector::CombiningKind::ADD,
                                        loop.getResult(0));
  }
  if (nVec < n) {
    auto tail = b.create<scf::ForOp>(loc, cIdx(nVec), cIdx(n), cIdx(1),
                                     ValueRange{sum});
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(tail.getBody());
    Value d = tail.getInductionVar();
    Value x = load(aMem, offset(aIdx, d));
    Value y = load(bMem, offset(bIdx, d));
    b.create<scf::YieldOp>(loc, ValueRange{b.create<arith::AddFOp>(
                                    loc, tail.getRegionIterArgs()[0],
                                    b.create<arith::MulFOp>(loc, x, y))});
    b.setInsertionPointAfter(tail);
    sum = tail.getResult(0);
  }
  return sum;
}

FailureOr<Value> Emitter::emitLinear(LinearOp op, ArrayRef<Value> idx) {
  auto xt = cast<RankedTensorType>(op.getX().getType());
  int64_t k = xt.getDimSize(1);
  Value r = idx[0], c = idx[1];
  Value xMem = memOf(op.getX()), wMem = memOf(op.getWeight());
  Value acc;
  if (xMem && wMem && op.getTransposeW()) {
    // Both operands are rows in memory: a vectorized dot product.
    acc = dot(xMem, {r, cIdx(0)}, wMem, {c, cIdx(0)}, k);
  } else {
    auto loop = b.create<scf::ForOp>(loc, cIdx(0), cIdx(k), cIdx(1),
                                     ValueRange{cF32(0.0)});
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(loop.getBody());
    Value kk = loop.getInductionVar();
    FailureOr<Value> x = emit(op.getX(), {r, kk});
    SmallVector<Value> widx = op.getTransposeW() ? SmallVector<Value>{c, kk}
                                                 : SmallVector<Value>{kk, c};
    FailureOr<Value> w = emit(op.getWeight(), widx);
    if (failed(x) || failed(w))
      return failure();
    Value prod = b.create<arith::MulFOp>(loc, *x, *w);
    b.create<scf::YieldOp>(loc, ValueRange{b.create<arith::AddFOp>(
                                    loc, loop.getRegionIterArgs()[0], prod)});
    acc = loop.getResult(0);
  }
  if (op.getBias()) {
    FailureOr<Value> bias = emit(op.getBias(), {c});
    if (failed(bias))
      return failure();
    acc = b.create<arith::AddFOp>(loc, acc, *bias);
  }
  return acc;
}

FailureOr<Value> Emitter::emitRope(RopeOp op, ArrayRef<Value> idx) {
  Value r = idx[0], c = idx[1];
  int64_t hd = op.getHeadDim(), half = hd / 2;
  Type i64 = b.getI64Type(), f32 = b.getF32Type();
  Value d = b.create<arith::RemUIOp>(loc, c, cIdx(hd));
  Value i, partner, first;
  if (op.getLayout() == RopeLayout::rotate_half) {
    first =
        b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::ult, d, cIdx(half));
    i = b.create<arith::RemUIOp>(loc, d, cIdx(half));
    partner = b.create<arith::SelectOp>(
        loc, first, b.create<arith::AddIOp>(loc, c, cIdx(half)),
        b.create<arith::SubIOp>(loc, c, cIdx(half)));
  } else {
    Value parity = b.create<arith::RemUIOp>(loc, d, cIdx(2));
    first =
        b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::eq, parity, cIdx(0));
    i = b.create<arith::DivUIOp>(loc, d, cIdx(2));
    partner = b.create<arith::SelectOp>(
        loc, first, b.create<arith::AddIOp>(loc, c, cIdx(1)),
        b.create<arith::SubIOp>(loc, c, cIdx(1)));
  }
  // inv_freq = 1 / theta^((2i) / head_dim), in f32 as the HF reference does.
  Value twoI = b.create<arith::MulIOp>(loc, i, cIdx(2));
  Value twoIf = b.create<arith::UIToFPOp>(
      loc, f32, b.create<arith::IndexCastOp>(loc, i64, twoI));
  Value expo =
      b.create<arith::DivFOp>(loc, twoIf, cF32(static_cast<double>(hd)));
  Value base =
      b.create<math::PowFOp>(loc, cF32(op.getTheta().convertToDouble()), expo);
  Value inv = b.create<arith::DivFOp>(loc, cF32(1.0), base);
  double factor = op.getFactor().convertToDouble();
  if (op.getScaling() == RopeScaling::linear) {
    inv = b.create<arith::DivFOp>(loc, inv, cF32(factor));
  } else if (op.getScaling() == RopeScaling::llama3) {
    double lowFF = op.getLowFreqFactor().convertToDouble();
    double highFF = op.getHighFreqFactor().convertToDouble();
    double orig = static_cast<double>(op.getOriginalMaxPosition());
    Value wavelen = b.create<arith::DivFOp>(loc, cF32(2.0 * M_PI), inv);
    Value lowWl = cF32(orig / lowFF), highWl = cF32(orig / highFF);
    Value isLow =
        b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OGT, wavelen, lowWl);
    Value scaled = b.create<arith::DivFOp>(loc, inv, cF32(factor));
    Value invL = b.create<arith::SelectOp>(loc, isLow, scaled, inv);
    Value smooth = b.create<arith::DivFOp>(
        loc,
        b.create<arith::SubFOp>(
            loc, b.create<arith::DivFOp>(loc, cF32(orig), wavelen),
            cF32(lowFF)),
        cF32(highFF - lowFF));
    Value oneMinus = b.create<arith::SubFOp>(loc, cF32(1.0), smooth);
    Value smoothed = b.create<arith::AddFOp>(
        loc,
        b.create<arith::DivFOp>(
            loc, b.create<arith::MulFOp>(loc, oneMinus, invL), cF32(factor)),
        b.create<arith::MulFOp>(loc, smooth, invL));
    Value isHigh = b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OLT,
                                           wavelen, highWl);
    Value notHigh = b.create<arith::XOrIOp>(
        loc, isHigh, b.create<arith::ConstantOp>(loc, b.getBoolAttr(true)));
    Value notLow = b.create<arith::XOrIOp>(
        loc, isLow, b.create<arith::ConstantOp>(loc, b.getBoolAttr(true)));
    Value medium = b.create<arith::AndIOp>(loc, notHigh, notLow);
    inv = b.create<arith::SelectOp>(loc, medium, smoothed, invL);
  }
  FailureOr<Value> pos = emit(op.getPositions(), {r});
  if (failed(pos))
    return failure();
  Value posF = b.create<arith::SIToFPOp>(loc, f32, *pos);
  Value angle = b.create<arith::MulFOp>(loc, posF, inv);
  Value cosA = b.create<math::CosOp>(loc, angle);
  Value sinA = b.create<math::SinOp>(loc, angle);
  if (op.getInverse()) // rotation by -angle: the transpose of the forward
    sinA = b.create<arith::NegFOp>(loc, sinA);
  FailureOr<Value> x = emit(op.getX(), {r, c});
  FailureOr<Value> xp = emit(op.getX(), {r, partner});
  if (failed(x) || failed(xp))
    return failure();
  Value rotated = b.create<arith::MulFOp>(loc, *xp, sinA);
  Value signed_ = b.create<arith::SelectOp>(
      loc, first, b.create<arith::NegFOp>(loc, rotated), rotated);
  return b
      .create<arith::AddFOp>(loc, b.create<arith::MulFOp>(loc, *x, cosA),
                             signed_)
      .getResult();
}

FailureOr<Value> Emitter::emitOp(Operation *op, ArrayRef<Value> idx,
                                 unsigned result) {
  auto unary = [&](Value x) { return emit(x, idx); };
  bool handled = false;
  FailureOr<Value> grad = emitGradOp(op, idx, result, handled);
  if (handled)
    return grad;
  if (auto c = dyn_cast<arith::ConstantOp>(op)) {
    if (auto splat = dyn_cast<SplatElementsAttr>(c.getValue()))
      return b.create<arith::ConstantOp>(loc, splat.getSplatValue<TypedAttr>())
          .getResult();
    return op->emitOpError("only splat constants can be computed in kernels");
  }
  if (isa<PositionsOp>(op)) {
    Value p = positionOfRow(idx[0]);
    return b.create<arith::IndexCastOp>(loc, b.getI32Type(), p).getResult();
  }
  if (auto s = dyn_cast<SliceOp>(op)) {
    Value c = b.create<arith::AddIOp>(loc, idx[1], cIdx(s.getOffset()));
    return emit(s.getX(), {idx[0], c});
  }
  if (auto e = dyn_cast<EmbeddingOp>(op)) {
    FailureOr<Value> id = emitIndex(e.getIds(), idx[0]);
    if (failed(id))
      return failure();
    int64_t vocab =
        cast<RankedTensorType>(e.getTable().getType()).getDimSize(0);
    Value clamped = b.create<arith::MinSIOp>(
        loc, b.create<arith::MaxSIOp>(loc, *id, cIdx(0)), cIdx(vocab - 1));
    return emit(e.getTable(), {clamped, idx[1]});
  }
  if (auto l = dyn_cast<LinearOp>(op)) {
    if (op == precomputed) {
      Value v = load(precomputedMem, idx);
      if (!l.getBias())
        return v;
      FailureOr<Value> bias = emit(l.getBias(), {idx[1]});
      if (failed(bias))
        return failure();
      return b.create<arith::AddFOp>(loc, v, *bias).getResult();
    }
    return emitLinear(l, idx);
  }
  if (auto r = dyn_cast<RopeOp>(op))
    return emitRope(r, idx);
  if (isa<AddOp, MulOp, SwigluOp>(op)) {
    FailureOr<Value> lhs = unary(op->getOperand(0));
    FailureOr<Value> rhs = unary(op->getOperand(1));
    if (failed(lhs) || failed(rhs))
      return failure();
    if (isa<AddOp>(op))
      return b.create<arith::AddFOp>(loc, *lhs, *rhs).getResult();
    if (isa<MulOp>(op))
      return b.create<arith::MulFOp>(loc, *lhs, *rhs).getResult();
    // swiglu: silu(gate) * up, silu(g) = g / (1 + exp(-g))
    Value e = b.create<math::ExpOp>(loc, b.create<arith::NegFOp>(loc, *lhs));
    Value silu = b.create<arith::DivFOp>(
        loc, *lhs, b.create<arith::AddFOp>(loc, cF32(1.0), e));
    return b.create<arith::MulFOp>(loc, silu, *rhs).getResult();
  }
  if (auto cv = dyn_cast<ConvertOp>(op)) {
    // Values are f32 inside a kernel; a narrowing conversion still rounds, so
    // that a converted value used again in the group is the stored one.
    FailureOr<Value> x = unary(cv.getX());
    if (failed(x))
      return failure();
    Type to = cv.getElementType();
    if (to.isF32() || to.getIntOrFloatBitWidth() >= 32)
      return *x;
    return widen(narrow(*x, to));
  }
  if (auto s = dyn_cast<SiluOp>(op)) {
    FailureOr<Value> x = unary(s.getX());
    if (failed(x))
      return failure();
    Value e = b.create<math::ExpOp>(loc, b.create<arith::NegFOp>(loc, *x));
    return b
        .create<arith::DivFOp>(loc, *x,
                               b.create<arith::AddFOp>(loc, cF32(1.0), e))
        .getResult();
  }
  if (auto g = dyn_cast<GeluOp>(op)) {
    FailureOr<Value> x = unary(g.getX());
    if (failed(x))
      return failure();
    Value halfX = b.create<arith::MulFOp>(loc, cF32(0.5), *x);
    Value inner;
    if (g.getApproximate() == GeluApprox::tanh) {
      // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
      Value x3 = b.create<arith::MulFOp>(loc, *x,
                                         b.create<arith::MulFOp>(loc, *x, *x));
      Value t = b.create<arith::AddFOp>(
          loc, *x, b.create<arith::MulFOp>(loc, cF32(0.044715), x3));
      inner = b.create<math::TanhOp>(
          loc, b.create<arith::MulFOp>(loc, cF32(std::sqrt(2.0 / M_PI)), t));
    } else {
      inner = b.create<math::ErfOp>(
          loc, b.create<arith::MulFOp>(loc, *x, cF32(M_SQRT1_2)));
    }
    return b
        .create<arith::MulFOp>(loc, halfX,
                               b.create<arith::AddFOp>(loc, cF32(1.0), inner))
        .getResult();
  }
  if (isa<RmsNormOp, LayerNormOp, SoftmaxOp>(op)) {
    auto it = rowStats.find(op);
    if (it == rowStats.end())
      return op->emitOpError("row statistics are not available here "
                             "(a norm can only be fused as a row kernel)");
    FailureOr<Value> x = emit(op->getOperand(0), idx);
    if (failed(x))
      return failure();
    if (auto n = dyn_cast<RmsNormOp>(op)) {
      FailureOr<Value> w = emit(n.getWeight(), {idx[1]});
      if (failed(w))
        return failure();
      Value xn = b.create<arith::MulFOp>(loc, *x, it->second[0]);
      return b.create<arith::MulFOp>(loc, *w, xn).getResult();
    }
    if (auto n = dyn_cast<LayerNormOp>(op)) {
      FailureOr<Value> w = emit(n.getWeight(), {idx[1]});
      FailureOr<Value> bias = emit(n.getBias(), {idx[1]});
      if (failed(w) || failed(bias))
        return failure();
      Value xc = b.create<arith::SubFOp>(loc, *x, it->second[0]);
      Value xn = b.create<arith::MulFOp>(loc, xc, it->second[1]);
      return b
          .create<arith::AddFOp>(loc, b.create<arith::MulFOp>(loc, xn, *w),
                                 *bias)
          .getResult();
    }
    // softmax
    Value e = b.create<math::ExpOp>(
        loc, b.create<arith::SubFOp>(loc, *x, it->second[0]));
    return b.create<arith::DivFOp>(loc, e, it->second[1]).getResult();
  }
  return op->emitOpError("cannot be computed inside a ")
         << fusion.getKind() << " kernel";
}

LogicalResult Emitter::emitRowStats(Value r) {
  rowStats.clear();
  for (Operation &op : fusion.getBody().front()) {
    if (!isa<RmsNormOp, LayerNormOp, SoftmaxOp>(op))
      continue;
    Value x = op.getOperand(0);
    int64_t cols = cast<RankedTensorType>(x.getType()).getDimSize(1);
    auto reduce = [&](Value init,
                      function_ref<FailureOr<Value>(Value acc, Value xv)> step)
        -> FailureOr<Value> {
      auto loop = b.create<scf::ForOp>(loc, cIdx(0), cIdx(cols), cIdx(1),
                                       ValueRange{init});
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(loop.getBody());
      FailureOr<Value> xv = emit(x, {r, loop.getInductionVar()});
      if (failed(xv))
        return failure();
      FailureOr<Value> next = step(loop.getRegionIterArgs()[0], *xv);
      if (failed(next))
        return failure();
      b.create<scf::YieldOp>(loc, *next);
      return loop.getResult(0);
    };
    Value n = cF32(static_cast<double>(cols));
    if (auto rms = dyn_cast<RmsNormOp>(op)) {
      FailureOr<Value> ss = reduce(cF32(0.0), [&](Value acc, Value xv) {
        return FailureOr<Value>(b.create<arith::AddFOp>(
            loc, acc, b.create<arith::MulFOp>(loc, xv, xv)));
      });
      if (failed(ss))
        return failure();
      Value mean = b.create<arith::DivFOp>(loc, *ss, n);
      Value var = b.create<arith::AddFOp>(loc, mean,
                                          cF32(rms.getEps().convertToDouble()));
      Value rstd = b.create<arith::DivFOp>(loc, cF32(1.0),
                                           b.create<math::SqrtOp>(loc, var));
      rowStats[&op] = {rstd};
    } else if (auto ln = dyn_cast<LayerNormOp>(op)) {
      FailureOr<Value> sum = reduce(cF32(0.0), [&](Value acc, Value xv) {
        return FailureOr<Value>(b.create<arith::AddFOp>(loc, acc, xv));
      });
      if (failed(sum))
        return failure();
      Value mean = b.create<arith::DivFOp>(loc, *sum, n);
      FailureOr<Value> sq = reduce(cF32(0.0), [&](Value acc, Value xv) {
        Value dx = b.create<arith::SubFOp>(loc, xv, mean);
        return FailureOr<Value>(b.create<arith::AddFOp>(
            loc, acc, b.create<arith::MulFOp>(loc, dx, dx)));
      });
      if (failed(sq))
        return failure();
      Value var =
          b.create<arith::AddFOp>(loc, b.create<arith::DivFOp>(loc, *sq, n),
                                  cF32(ln.getEps().convertToDouble()));
      Value rstd = b.create<arith::DivFOp>(loc, cF32(1.0),
                                           b.create<math::SqrtOp>(loc, var));
      rowStats[&op] = {mean, rstd};
    } else {
      FailureOr<Value> mx =
          reduce(cF32(-std::numeric_limits<double>::infinity()), [&](Value acc,
                                                                     Value xv) {
            return FailureOr<Value>(b.create<arith::MaximumFOp>(loc, acc, xv));
          });
      if (failed(mx))
        return failure();
      FailureOr<Value> sum = reduce(cF32(0.0), [&](Value acc, Value xv) {
        Value e =
            b.create<math::ExpOp>(loc, b.create<arith::SubFOp>(loc, xv, *mx));
        return FailureOr<Value>(b.create<arith::AddFOp>(loc, acc, e));
      });
      if (failed(sum))
        return failure();
      rowStats[&op] = {*mx, *sum};
    }
  }
  return emitGradRowStats(r);
}

LogicalResult Emitter::emitStores(Value r, Value c) {
  beginPoint(r, c);
  auto yield = cast<YieldOp>(fusion.getBody().front().getTerminator());
  for (auto [v, mem] : llvm::zip(yield.getValues(), outputMem)) {
    if (auto cw = v.getDefiningOp<CacheWriteOp>()) {
      FailureOr<Value> x = emit(cw.getX(), {r, c});
      FailureOr<Value> p = emitIndex(cw.getPositions(), r);
      if (failed(x) || failed(p))
        return failure();
      Value seqIdx = b.create<arith::DivUIOp>(loc, r, nt);
      store(*x, mem, ValueRange{seqIdx, *p, c});
      continue;
    }
    FailureOr<Value> x = emit(v, {r, c});
    if (failed(x))
      return failure();
    store(*x, mem, ValueRange{r, c});
  }
  return success();
}

LogicalResult Emitter::emitAttention(AttentionOp op, Value r, Value h) {
  int64_t hd = op.getHeadDim();
  int64_t group = op.getNumHeads() / op.getNumKvHeads();
  // The output and, with save_lse, the log-sum-exp (when yielded).
  Value out, lseOut;
  auto yield = cast<YieldOp>(fusion.getBody().front().getTerminator());
  for (auto [i, y] : llvm::enumerate(yield.getValues())) {
    if (y == op.getResult())
      out = outputMem[i];
    else if (op.getLse() && y == op.getLse())
      lseOut = outputMem[i];
  }
  if (!out)
    return fusion.emitOpError("an attention kernel yields its output");
  Value seqIdx = b.create<arith::DivUIOp>(loc, r, nt);
  FailureOr<Value> p32 = emit(op.getPositions(), {r});
  if (failed(p32))
    return failure();
  Value p = b.create<arith::IndexCastOp>(loc, b.getIndexType(), *p32);
  Value kvh = b.create<arith::DivUIOp>(loc, h, cIdx(group));
  Value qBase = b.create<arith::MulIOp>(loc, h, cIdx(hd));
  Value kBase = b.create<arith::MulIOp>(loc, kvh, cIdx(hd));
  Value jEnd = op.getCausal()
                   ? b.create<arith::AddIOp>(loc, p, cIdx(1)).getResult()
                   : b.create<arith::AddIOp>(loc, pos0, nt).getResult();
  Value jStart = cIdx(0);
  if (int64_t w = op.getSlidingWindow()) {
    // j > p - w  <=>  j >= p + 1 - w (clamped at 0)
    Value lo = b.create<arith::AddIOp>(loc, p, cIdx(1));
    Value ok =
        b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::uge, lo, cIdx(w));
    jStart = b.create<arith::SelectOp>(
        loc, ok, b.create<arith::SubIOp>(loc, lo, cIdx(w)), cIdx(0));
  }
  float scale = static_cast<float>(op.getScale().convertToDouble());

  // score(j) = scale * sum_d q[r, h*hd + d] * k[b, j, kvh*hd + d]
  Value qMem = memOf(op.getQ()), kMem = memOf(op.getK());
  auto score = [&](Value j) -> FailureOr<Value> {
    if (qMem && kMem) {
      Value s = dot(qMem, {r, qBase}, kMem, {seqIdx, j, kBase}, hd);
      return b.create<arith::MulFOp>(loc, s, cF32(scale)).getResult();
    }
    auto loop = b.create<scf::ForOp>(loc, cIdx(0), cIdx(hd), cIdx(1),
                                     ValueRange{cF32(0.0)});
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(loop.getBody());
    Value d = loop.getInductionVar();
    FailureOr<Value> q =
        emit(op.getQ(), {r, b.create<arith::AddIOp>(loc, qBase, d)});
    FailureOr<Value> k =
        emit(op.getK(), {seqIdx, j, b.create<arith::AddIOp>(loc, kBase, d)});
    if (failed(q) || failed(k))
      return failure();
    b.create<scf::YieldOp>(loc, ValueRange{b.create<arith::AddFOp>(
                                    loc, loop.getRegionIterArgs()[0],
                                    b.create<arith::MulFOp>(loc, *q, *k))});
    b.setInsertionPointAfter(loop);
    return b.create<arith::MulFOp>(loc, loop.getResult(0), cF32(scale))
        .getResult();
  };

  // Pass 1: running max m and normalizer l.
  auto pass1 = b.create<scf::ForOp>(
      loc, jStart, jEnd, cIdx(1),
      ValueRange{cF32(-std::numeric_limits<double>::infinity()), cF32(0.0)});
  {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(pass1.getBody());
    FailureOr<Value> s = score(pass1.getInductionVar());
    if (failed(s))
      return failure();
    b.create<scf::YieldOp>(loc, onlineSoftmaxStep(pass1.getRegionIterArgs(), *s));
  }
  Value m = pass1.getResult(0), l = pass1.getResult(1);
  Value invL = b.create<arith::DivFOp>(loc, cF32(1.0), l);
  if (lseOut)
    store(b.create<arith::AddFOp>(loc, m, b.create<math::LogOp>(loc, l)),
          lseOut, ValueRange{r, h});

  // Pass 2: out = sum_j softmax_j * v_j, accumulated in the output row, or
  // in an f32 scratch row when the output is narrower (bf16), so that the
  // sum is rounded once.
  bool direct = cast<MemRefType>(out.getType()).getElementType().isF32();
  Value acc = direct ? out
                     : b.create<memref::AllocaOp>(
                            loc, MemRefType::get({hd}, b.getF32Type()))
                           .getResult();
  auto accAt = [&](Value d) -> SmallVector<Value> {
    if (!direct)
      return {d};
    return {r, b.create<arith::AddIOp>(loc, qBase, d)};
  };
  auto zero = b.create<scf::ForOp>(loc, cIdx(0), cIdx(hd), cIdx(1));
  {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(zero.getBody());
    store(cF32(0.0), acc, accAt(zero.getInductionVar()));
  }
  auto pass2 = b.create<scf::ForOp>(loc, jStart, jEnd, cIdx(1));
  {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(pass2.getBody());
    Value j = pass2.getInductionVar();
    FailureOr<Value> s = score(j);
    if (failed(s))
      return failure();
    Value pj = b.create<arith::MulFOp>(
        loc, b.create<math::ExpOp>(loc, b.create<arith::SubFOp>(loc, *s, m)),
        invL);
    auto dl = b.create<scf::ForOp>(loc, cIdx(0), cIdx(hd), cIdx(1));
    b.setInsertionPointToStart(dl.getBody());
    Value d = dl.getInductionVar();
    FailureOr<Value> v =
        emit(op.getV(), {seqIdx, j, b.create<arith::AddIOp>(loc, kBase, d)});
    if (failed(v))
      return failure();
    SmallVector<Value> at = accAt(d);
    Value cur = load(acc, at);
    store(
        b.create<arith::AddFOp>(loc, cur, b.create<arith::MulFOp>(loc, pj, *v)),
        acc, at);
  }
  if (!direct) {
    auto copy = b.create<scf::ForOp>(loc, cIdx(0), cIdx(hd), cIdx(1));
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(copy.getBody());
    Value d = copy.getInductionVar();
    store(load(acc, {d}), out, {r, b.create<arith::AddIOp>(loc, qBase, d)});
  }
  return success();
}

/// cpu: a gemm group whose results are all [rows, N] matrices computes its
/// linear as a linalg contraction into the first result's buffer (tiled and
/// vectorized by the cpu backend); the epilogue loop then reads it back and
/// overwrites it in place. Returns failure (emitting nothing) for groups
/// that do not fit: several linears, operands computed in the group, cache
/// writes, or results of other shapes.
LogicalResult Emitter::emitLinalgGemm(Value rows) {
  Block &body = fusion.getBody().front();
  LinearOp lin;
  for (Operation &op : body) {
    if (auto l = dyn_cast<LinearOp>(op)) {
      if (lin)
        return failure();
      lin = l;
    }
    if (isa<CacheWriteOp>(op))
      return failure();
  }
  if (!lin || outputMem.empty())
    return failure();
  Value xMem = memOf(lin.getX()), wMem = memOf(lin.getWeight());
  if (!xMem || !wMem)
    return failure();
  auto linTy = cast<RankedTensorType>(lin.getType());
  for (Value out : outputMem)
    if (cast<MemRefType>(out.getType()).getShape() != linTy.getShape())
      return failure();

  int64_t k = cast<RankedTensorType>(lin.getX().getType()).getDimSize(1);
  int64_t n = linTy.getDimSize(1);
  Value out = outputMem[0];
  // The contraction accumulates in the output buffer: only an f32 one keeps
  // the sum exact enough (bf16 outputs take the scalar path, which rounds
  // once at the store).
  // bf16 operands take the scalar path too: the vectorized contraction would
  // widen them in vector lowering, after the cpu pipeline expands bf16
  // conversions into integer ops.
  auto isF32 = [](Value mem) {
    return cast<MemRefType>(mem.getType()).getElementType().isF32();
  };
  if (!isF32(out) || !isF32(xMem) || !isF32(wMem))
    return failure();
  auto sub = [&](Value mem, int64_t cols) {
    SmallVector<OpFoldResult> offsets = {b.getIndexAttr(0), b.getIndexAttr(0)};
    SmallVector<OpFoldResult> sizes = {rows, b.getIndexAttr(cols)};
    SmallVector<OpFoldResult> strides = {b.getIndexAttr(1), b.getIndexAttr(1)};
    return b.create<memref::SubViewOp>(loc, mem, offsets, sizes, strides)
        .getResult();
  };
  Value xs = sub(xMem, k), os = sub(out, n);
  b.create<linalg::FillOp>(loc, ValueRange{cF32(0.0)}, ValueRange{os});
  MLIRContext *ctx = b.getContext();
  AffineExpr i, j, kk;
  bindDims(ctx, i, j, kk);
  auto mapX = AffineMap::get(3, 0, {i, kk}, ctx);
  auto mapW = lin.getTransposeW() ? AffineMap::get(3, 0, {j, kk}, ctx)
                                  : AffineMap::get(3, 0, {kk, j}, ctx);
  auto mapO = AffineMap::get(3, 0, {i, j}, ctx);
  b.create<linalg::GenericOp>(
      loc, ValueRange{xs, wMem}, ValueRange{os},
      ArrayRef<AffineMap>{mapX, mapW, mapO},
      ArrayRef<utils::IteratorType>{utils::IteratorType::parallel,
                                    utils::IteratorType::parallel,
                                    utils::IteratorType::reduction},
      [](OpBuilder &nb, Location l, ValueRange args) {
        Value m = nb.create<arith::MulFOp>(l, args[0], args[1]);
        nb.create<linalg::YieldOp>(
            l, ValueRange{nb.create<arith::AddFOp>(l, args[2], m)});
      });
  // The linear's value (before its bias) now sits in `out`.
  precomputed = lin;
  precomputedMem = out;
  return success();
}

//===----------------------------------------------------------------------===//
// Training kernels: vector-Jacobian products, reductions over rows, loss
//===----------------------------------------------------------------------===//

FailureOr<Value>
Emitter::sumCols(int64_t cols, Value init,
                 function_ref<FailureOr<Value>(Value acc, Value c)> fn) {
  llvm::DenseMap<Value, Value> saved = memo;
  auto loop =
      b.create<scf::ForOp>(loc, cIdx(0), cIdx(cols), cIdx(1), ValueRange{init});
  OpBuilder::InsertionGuard g(b);
  b.setInsertionPointToStart(loop.getBody());
  FailureOr<Value> next =
      fn(loop.getRegionIterArgs()[0], loop.getInductionVar());
  memo = saved;
  if (failed(next))
    return failure();
  b.create<scf::YieldOp>(loc, *next);
  return loop.getResult(0);
}

FailureOr<Value>
Emitter::sumRows(function_ref<FailureOr<Value>(Value r)> term) {
  llvm::DenseMap<Value, Value> saved = memo;
  Value rows = b.create<arith::MulIOp>(loc, nb, nt);
  auto loop =
      b.create<scf::ForOp>(loc, cIdx(0), rows, cIdx(1), ValueRange{cF32(0.0)});
  OpBuilder::InsertionGuard g(b);
  b.setInsertionPointToStart(loop.getBody());
  FailureOr<Value> t = term(loop.getInductionVar());
  memo = saved;
  if (failed(t))
    return failure();
  b.create<scf::YieldOp>(loc, ValueRange{b.create<arith::AddFOp>(
                                  loc, loop.getRegionIterArgs()[0], *t)});
  return loop.getResult(0);
}

/// 1 / sqrt(mean_c(x[r, c]^2) + eps)
FailureOr<Value> Emitter::rmsRstd(Value x, Value r, double eps) {
  int64_t cols = cast<RankedTensorType>(x.getType()).getDimSize(1);
  FailureOr<Value> ss = sumCols(cols, cF32(0.0), [&](Value acc, Value c) {
    FailureOr<Value> xv = emit(x, {r, c});
    if (failed(xv))
      return xv;
    return FailureOr<Value>(b.create<arith::AddFOp>(
        loc, acc, b.create<arith::MulFOp>(loc, *xv, *xv)));
  });
  if (failed(ss))
    return failure();
  Value var = b.create<arith::AddFOp>(
      loc, b.create<arith::DivFOp>(loc, *ss, cF32(double(cols))), cF32(eps));
  return b
      .create<arith::DivFOp>(loc, cF32(1.0), b.create<math::SqrtOp>(loc, var))
      .getResult();
}

FailureOr<std::pair<Value, Value>> Emitter::softmaxStats(Value logits,
                                                         Value r) {
  int64_t cols = cast<RankedTensorType>(logits.getType()).getDimSize(1);
  FailureOr<Value> mx =
      sumCols(cols, cF32(-std::numeric_limits<double>::infinity()),
              [&](Value acc, Value c) {
                FailureOr<Value> x = emit(logits, {r, c});
                if (failed(x))
                  return x;
                return FailureOr<Value>(
                    b.create<arith::MaximumFOp>(loc, acc, *x).getResult());
              });
  if (failed(mx))
    return failure();
  FailureOr<Value> se = sumCols(cols, cF32(0.0), [&](Value acc, Value c) {
    FailureOr<Value> x = emit(logits, {r, c});
    if (failed(x))
      return x;
    return FailureOr<Value>(b.create<arith::AddFOp>(
        loc, acc,
        b.create<math::ExpOp>(loc, b.create<arith::SubFOp>(loc, *x, *mx))));
  });
  if (failed(se))
    return failure();
  return std::make_pair(*mx, *se);
}

FailureOr<Value> Emitter::validTargetCount(Value targets, int64_t ignore) {
  return sumRows([&](Value rr) -> FailureOr<Value> {
    FailureOr<Value> t = emit(targets, {rr});
    if (failed(t))
      return failure();
    Value valid = b.create<arith::CmpIOp>(
        loc, arith::CmpIPredicate::ne, *t,
        b.create<arith::ConstantOp>(loc, b.getI32IntegerAttr(ignore)));
    return b.create<arith::SelectOp>(loc, valid, cF32(1.0), cF32(0.0))
        .getResult();
  });
}

/// One logits row r of cross_entropy_rows: a pass over the targets for the
/// number of valid ones, one pass over the row for its log-sum-exp (online
/// max and normalizer), the row's loss term, then dlogits column by column.
/// Every element of the row is read before it is written, so dlogits may
/// share the logits buffer.
LogicalResult Emitter::emitCrossEntropyRows(CrossEntropyRowsOp op, Value r) {
  Value termsOut, dlOut;
  auto yield = cast<YieldOp>(fusion.getBody().front().getTerminator());
  for (auto [i, y] : llvm::enumerate(yield.getValues())) {
    if (y == op.getTerms())
      termsOut = outputMem[i];
    else if (y == op.getDlogits())
      dlOut = outputMem[i];
  }
  int64_t cols = cast<RankedTensorType>(op.getLogits().getType()).getDimSize(1);
  int64_t ignore = static_cast<int64_t>(op.getIgnoreIndex());
  FailureOr<Value> count = validTargetCount(op.getTargets(), ignore);
  FailureOr<Value> t = emit(op.getTargets(), {r});
  FailureOr<Value> dloss = emit(op.getDloss(), {});
  if (failed(count) || failed(t) || failed(dloss))
    return failure();
  Value valid = b.create<arith::CmpIOp>(
      loc, arith::CmpIPredicate::ne, *t,
      b.create<arith::ConstantOp>(loc, b.getI32IntegerAttr(ignore)));
  auto stats = b.create<scf::ForOp>(
      loc, cIdx(0), cIdx(cols), cIdx(1),
      ValueRange{cF32(-std::numeric_limits<double>::infinity()), cF32(0.0)});
  {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(stats.getBody());
    llvm::DenseMap<Value, Value> saved = memo;
    FailureOr<Value> x = emit(op.getLogits(), {r, stats.getInductionVar()});
    memo = saved;
    if (failed(x))
      return failure();
    b.create<scf::YieldOp>(loc, onlineSoftmaxStep(stats.getRegionIterArgs(), *x));
  }
  Value lse = b.create<arith::AddFOp>(
      loc, stats.getResult(0), b.create<math::LogOp>(loc, stats.getResult(1)));
  Value hasAny = b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OGT, *count,
                                         cF32(0.0));
  if (termsOut) {
    Value tIdx = targetColumn(*t, valid, cols);
    llvm::DenseMap<Value, Value> saved = memo;
    FailureOr<Value> xt = emit(op.getLogits(), {r, tIdx});
    memo = saved;
    if (failed(xt))
      return failure();
    Value term = b.create<arith::DivFOp>(
        loc, b.create<arith::SubFOp>(loc, lse, *xt), *count);
    store(b.create<arith::SelectOp>(loc, valid, term, cF32(0.0)), termsOut,
          ValueRange{r});
  }
  if (!dlOut)
    return success();
  Value scale = b.create<arith::SelectOp>(
      loc, hasAny, b.create<arith::DivFOp>(loc, *dloss, *count), cF32(0.0));
  auto cl = b.create<scf::ForOp>(loc, cIdx(0), cIdx(cols), cIdx(1));
  OpBuilder::InsertionGuard g(b);
  b.setInsertionPointToStart(cl.getBody());
  Value c = cl.getInductionVar();
  llvm::DenseMap<Value, Value> saved = memo;
  FailureOr<Value> x = emit(op.getLogits(), {r, c});
  memo = saved;
  if (failed(x))
    return failure();
  Value p = b.create<math::ExpOp>(loc, b.create<arith::SubFOp>(loc, *x, lse));
  Value isT = b.create<arith::CmpIOp>(
      loc, arith::CmpIPredicate::eq,
      b.create<arith::IndexCastOp>(loc, b.getI32Type(), c), *t);
  Value onehot = b.create<arith::SelectOp>(loc, isT, cF32(1.0), cF32(0.0));
  Value d = b.create<arith::MulFOp>(
      loc, b.create<arith::SubFOp>(loc, p, onehot), scale);
  store(b.create<arith::SelectOp>(loc, valid, d, cF32(0.0)), dlOut,
        ValueRange{r, c});
  return success();
}

LogicalResult Emitter::emitGradRowStats(Value r) {
  for (Operation &op : fusion.getBody().front()) {
    auto add = [&](Value a, Value x) {
      return b.create<arith::AddFOp>(loc, a, x).getResult();
    };
    auto mul = [&](Value a, Value x) {
      return b.create<arith::MulFOp>(loc, a, x).getResult();
    };
    if (auto g = dyn_cast<RmsNormGradOp>(op)) {
      int64_t cols = cast<RankedTensorType>(g.getX().getType()).getDimSize(1);
      FailureOr<Value> rstd =
          rmsRstd(g.getX(), r, g.getEps().convertToDouble());
      if (failed(rstd))
        return failure();
      // A = sum_c dy * w * x
      FailureOr<Value> a = sumCols(cols, cF32(0.0), [&](Value acc, Value c) {
        FailureOr<Value> x = emit(g.getX(), {r, c});
        FailureOr<Value> w = emit(g.getWeight(), {c});
        FailureOr<Value> dy = emit(g.getDy(), {r, c});
        if (failed(x) || failed(w) || failed(dy))
          return FailureOr<Value>(failure());
        return FailureOr<Value>(add(acc, mul(mul(*dy, *w), *x)));
      });
      if (failed(a))
        return failure();
      rowStats[&op] = {*rstd, *a};
    } else if (auto g = dyn_cast<LayerNormGradOp>(op)) {
      int64_t cols = cast<RankedTensorType>(g.getX().getType()).getDimSize(1);
      Value n = cF32(double(cols));
      FailureOr<Value> sum = sumCols(cols, cF32(0.0), [&](Value acc, Value c) {
        FailureOr<Value> x = emit(g.getX(), {r, c});
        if (failed(x))
          return x;
        return FailureOr<Value>(add(acc, *x));
      });
      if (failed(sum))
        return failure();
      Value mean = b.create<arith::DivFOp>(loc, *sum, n);
      FailureOr<Value> sq = sumCols(cols, cF32(0.0), [&](Value acc, Value c) {
        FailureOr<Value> x = emit(g.getX(), {r, c});
        if (failed(x))
          return x;
        Value d = b.create<arith::SubFOp>(loc, *x, mean);
        return FailureOr<Value>(add(acc, mul(d, d)));
      });
      if (failed(sq))
        return failure();
      Value var = add(b.create<arith::DivFOp>(loc, *sq, n),
                      cF32(g.getEps().convertToDouble()));
      Value rstd = b.create<arith::DivFOp>(loc, cF32(1.0),
                                           b.create<math::SqrtOp>(loc, var));
      // Ag = sum_c g, Bg = sum_c g * xhat, with g = dy * w.
      Value ag, bg;
      for (int which = 0; which < 2; ++which) {
        FailureOr<Value> v = sumCols(cols, cF32(0.0), [&](Value acc, Value c) {
          FailureOr<Value> x = emit(g.getX(), {r, c});
          FailureOr<Value> w = emit(g.getWeight(), {c});
          FailureOr<Value> dy = emit(g.getDy(), {r, c});
          if (failed(x) || failed(w) || failed(dy))
            return FailureOr<Value>(failure());
          Value gv = mul(*dy, *w);
          if (which == 1)
            gv = mul(gv, mul(b.create<arith::SubFOp>(loc, *x, mean), rstd));
          return FailureOr<Value>(add(acc, gv));
        });
        if (failed(v))
          return failure();
        (which == 0 ? ag : bg) = *v;
      }
      rowStats[&op] = {mean, rstd, ag, bg};
    } else if (auto g = dyn_cast<SoftmaxGradOp>(op)) {
      int64_t cols = cast<RankedTensorType>(g.getY().getType()).getDimSize(1);
      FailureOr<Value> sv = sumCols(cols, cF32(0.0), [&](Value acc, Value c) {
        FailureOr<Value> y = emit(g.getY(), {r, c});
        FailureOr<Value> dy = emit(g.getDy(), {r, c});
        if (failed(y) || failed(dy))
          return FailureOr<Value>(failure());
        return FailureOr<Value>(add(acc, mul(*y, *dy)));
      });
      if (failed(sv))
        return failure();
      rowStats[&op] = {*sv};
    } else if (auto g = dyn_cast<CrossEntropyGradOp>(op)) {
      FailureOr<std::pair<Value, Value>> stats = softmaxStats(g.getLogits(), r);
      if (failed(stats))
        return failure();
      auto [mx, se] = *stats;
      FailureOr<Value> count = validTargetCount(
          g.getTargets(), static_cast<int64_t>(g.getIgnoreIndex()));
      if (failed(count))
        return failure();
      FailureOr<Value> dlossOr = emit(g.getDloss(), {});
      if (failed(dlossOr))
        return failure();
      Value dloss = *dlossOr;
      Value hasAny = b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OGT,
                                             *count, cF32(0.0));
      Value scale = b.create<arith::SelectOp>(
          loc, hasAny, b.create<arith::DivFOp>(loc, dloss, *count), cF32(0.0));
      rowStats[&op] = {mx, se, scale};
    }
  }
  return success();
}

FailureOr<Value> Emitter::emitGradOp(Operation *op, ArrayRef<Value> idx,
                                     unsigned result, bool &handled) {
  handled = true;
  auto mul = [&](Value a, Value x) {
    return b.create<arith::MulFOp>(loc, a, x).getResult();
  };
  auto add = [&](Value a, Value x) {
    return b.create<arith::AddFOp>(loc, a, x).getResult();
  };
  auto sigmoid = [&](Value x) {
    Value e = b.create<math::ExpOp>(loc, b.create<arith::NegFOp>(loc, x));
    return b.create<arith::DivFOp>(loc, cF32(1.0), add(cF32(1.0), e))
        .getResult();
  };
  // silu'(x) = s (1 + x (1 - s)), s = sigmoid(x)
  auto siluPrime = [&](Value x, Value s) {
    return mul(
        s, add(cF32(1.0), mul(x, b.create<arith::SubFOp>(loc, cF32(1.0), s))));
  };
  if (auto o = dyn_cast<SiluGradOp>(op)) {
    FailureOr<Value> x = emit(o.getLhs(), idx), dy = emit(o.getRhs(), idx);
    if (failed(x) || failed(dy))
      return failure();
    return mul(*dy, siluPrime(*x, sigmoid(*x)));
  }
  if (auto o = dyn_cast<SwigluGradOp>(op)) {
    FailureOr<Value> g = emit(o.getGate(), idx), u = emit(o.getUp(), idx),
                     dy = emit(o.getDy(), idx);
    if (failed(g) || failed(u) || failed(dy))
      return failure();
    Value s = sigmoid(*g);
    if (result == 0)
      return mul(mul(*dy, *u), siluPrime(*g, s));
    return mul(*dy, mul(*g, s));
  }
  if (auto o = dyn_cast<GeluGradOp>(op)) {
    FailureOr<Value> xr = emit(o.getX(), idx), dy = emit(o.getDy(), idx);
    if (failed(xr) || failed(dy))
      return failure();
    Value x = *xr, d;
    if (o.getApproximate() == GeluApprox::tanh) {
      // u = k (x + 0.044715 x^3), t = tanh(u):
      // d = 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 * 0.044715 x^2)
      double k = std::sqrt(2.0 / M_PI);
      Value x2 = mul(x, x);
      Value u = mul(cF32(k), add(x, mul(cF32(0.044715), mul(x2, x))));
      Value t = b.create<math::TanhOp>(loc, u);
      Value sech2 = b.create<arith::SubFOp>(loc, cF32(1.0), mul(t, t));
      Value du = mul(cF32(k), add(cF32(1.0), mul(cF32(3 * 0.044715), x2)));
      d = add(mul(cF32(0.5), add(cF32(1.0), t)),
              mul(mul(cF32(0.5), x), mul(sech2, du)));
    } else {
      // 0.5 (1 + erf(x / sqrt 2)) + x exp(-x^2 / 2) / sqrt(2 pi)
      Value cdf = mul(
          cF32(0.5),
          add(cF32(1.0), b.create<math::ErfOp>(loc, mul(x, cF32(M_SQRT1_2)))));
      Value pdf = mul(cF32(1.0 / std::sqrt(2.0 * M_PI)),
                      b.create<math::ExpOp>(loc, mul(cF32(-0.5), mul(x, x))));
      d = add(cdf, mul(x, pdf));
    }
    return mul(*dy, d);
  }
  if (auto o = dyn_cast<PadColumnsOp>(op)) {
    int64_t off = static_cast<int64_t>(o.getOffset());
    int64_t n = cast<RankedTensorType>(o.getX().getType()).getDimSize(1);
    Value c = idx[1];
    Value ge =
        b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::uge, c, cIdx(off));
    Value lt = b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::ult, c,
                                       cIdx(off + n));
    Value in = b.create<arith::AndIOp>(loc, ge, lt);
    auto ifOp = b.create<scf::IfOp>(loc, TypeRange{b.getF32Type()}, in,
                                    /*withElseRegion=*/true);
    llvm::DenseMap<Value, Value> saved = memo;
    {
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(&ifOp.getThenRegion().front());
      FailureOr<Value> x =
          emit(o.getX(), {idx[0], b.create<arith::SubIOp>(loc, c, cIdx(off))});
      memo = saved;
      if (failed(x))
        return failure();
      b.create<scf::YieldOp>(loc, *x);
      b.setInsertionPointToStart(&ifOp.getElseRegion().front());
      b.create<scf::YieldOp>(loc, cF32(0.0));
    }
    return ifOp.getResult(0);
  }
  if (auto o = dyn_cast<CacheReadOp>(op)) {
    FailureOr<Value> p = emitIndex(o.getPositions(), idx[0]);
    if (failed(p))
      return failure();
    Value seqIdx = b.create<arith::DivUIOp>(loc, idx[0], nt);
    return emit(o.getCache(), {seqIdx, *p, idx[1]});
  }
  // Row ops: statistics were computed per row by emitGradRowStats.
  if (isa<RmsNormGradOp, LayerNormGradOp, SoftmaxGradOp, CrossEntropyGradOp>(
          op) &&
      result == 0) {
    auto it = rowStats.find(op);
    if (it == rowStats.end())
      return op->emitOpError("row statistics are not available here");
    auto &st = it->second;
    Value r = idx[0], c = idx[1];
    if (auto g = dyn_cast<RmsNormGradOp>(op)) {
      int64_t cols = cast<RankedTensorType>(g.getX().getType()).getDimSize(1);
      FailureOr<Value> x = emit(g.getX(), idx), w = emit(g.getWeight(), {c}),
                       dy = emit(g.getDy(), idx);
      if (failed(x) || failed(w) || failed(dy))
        return failure();
      // dx = rstd (dy w - x rstd^2 A / D)
      Value rstd = st[0];
      Value corr = mul(mul(*x, mul(rstd, rstd)),
                       b.create<arith::DivFOp>(loc, st[1], cF32(double(cols))));
      return mul(rstd, b.create<arith::SubFOp>(loc, mul(*dy, *w), corr));
    }
    if (auto g = dyn_cast<LayerNormGradOp>(op)) {
      int64_t cols = cast<RankedTensorType>(g.getX().getType()).getDimSize(1);
      Value n = cF32(double(cols));
      FailureOr<Value> x = emit(g.getX(), idx), w = emit(g.getWeight(), {c}),
                       dy = emit(g.getDy(), idx);
      if (failed(x) || failed(w) || failed(dy))
        return failure();
      Value xhat = mul(b.create<arith::SubFOp>(loc, *x, st[0]), st[1]);
      Value gv = mul(*dy, *w);
      Value inner = b.create<arith::SubFOp>(
          loc,
          b.create<arith::SubFOp>(loc, gv,
                                  b.create<arith::DivFOp>(loc, st[2], n)),
          mul(xhat, b.create<arith::DivFOp>(loc, st[3], n)));
      return mul(st[1], inner);
    }
    if (auto g = dyn_cast<SoftmaxGradOp>(op)) {
      FailureOr<Value> y = emit(g.getY(), idx), dy = emit(g.getDy(), idx);
      if (failed(y) || failed(dy))
        return failure();
      return mul(*y, b.create<arith::SubFOp>(loc, *dy, st[0]));
    }
    auto g = cast<CrossEntropyGradOp>(op);
    FailureOr<Value> x = emit(g.getLogits(), idx);
    FailureOr<Value> t = emit(g.getTargets(), {r});
    if (failed(x) || failed(t))
      return failure();
    int64_t ignore = static_cast<int64_t>(g.getIgnoreIndex());
    Value valid = b.create<arith::CmpIOp>(
        loc, arith::CmpIPredicate::ne, *t,
        b.create<arith::ConstantOp>(loc, b.getI32IntegerAttr(ignore)));
    Value p = b.create<arith::DivFOp>(
        loc,
        b.create<math::ExpOp>(loc, b.create<arith::SubFOp>(loc, *x, st[0])),
        st[1]);
    Value isT = b.create<arith::CmpIOp>(
        loc, arith::CmpIPredicate::eq,
        b.create<arith::IndexCastOp>(loc, b.getI32Type(), c), *t);
    Value onehot = b.create<arith::SelectOp>(loc, isT, cF32(1.0), cF32(0.0));
    Value d = mul(b.create<arith::SubFOp>(loc, p, onehot), st[2]);
    return b.create<arith::SelectOp>(loc, valid, d, cF32(0.0)).getResult();
  }
  handled = false;
  return failure();
}

/// Reduction over the active rows for one output element (p, q) of a
/// weight-shaped result (q unused for a vector result).
LogicalResult Emitter::emitReduction(Value p, Value q) {
  auto yield = cast<YieldOp>(fusion.getBody().front().getTerminator());
  auto mul = [&](Value a, Value x) {
    return b.create<arith::MulFOp>(loc, a, x).getResult();
  };
  for (auto [v, mem] : llvm::zip(yield.getValues(), outputMem)) {
    Operation *op = v.getDefiningOp();
    unsigned res = cast<OpResult>(v).getResultNumber();
    FailureOr<Value> acc = sumRows([&](Value r) -> FailureOr<Value> {
      if (auto o = dyn_cast<LinearWeightGradOp>(op)) {
        // tw: dW[n, k] = sum dy[r, n] x[r, k]; else dW[k, n] = x[r, k] dy[r, n]
        FailureOr<Value> x = emit(o.getX(), {r, o.getTransposeW() ? q : p});
        FailureOr<Value> dy = emit(o.getDy(), {r, o.getTransposeW() ? p : q});
        if (failed(x) || failed(dy))
          return failure();
        return mul(*x, *dy);
      }
      if (auto o = dyn_cast<ColumnSumOp>(op))
        return emit(o.getX(), {r, p});
      if (auto o = dyn_cast<EmbeddingGradOp>(op)) {
        FailureOr<Value> id = emitIndex(o.getIds(), r);
        FailureOr<Value> dy = emit(o.getDy(), {r, q});
        if (failed(id) || failed(dy))
          return failure();
        Value hit =
            b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::eq, *id, p);
        return b.create<arith::SelectOp>(loc, hit, *dy, cF32(0.0)).getResult();
      }
      if (auto o = dyn_cast<RmsNormGradOp>(op)) {
        FailureOr<Value> rstd =
            rmsRstd(o.getX(), r, o.getEps().convertToDouble());
        FailureOr<Value> x = emit(o.getX(), {r, p});
        FailureOr<Value> dy = emit(o.getDy(), {r, p});
        if (failed(rstd) || failed(x) || failed(dy))
          return failure();
        return mul(*dy, mul(*x, *rstd));
      }
      if (auto o = dyn_cast<LayerNormGradOp>(op)) {
        FailureOr<Value> dy = emit(o.getDy(), {r, p});
        if (failed(dy))
          return failure();
        if (res == 2)
          return *dy;
        int64_t cols = cast<RankedTensorType>(o.getX().getType()).getDimSize(1);
        Value n = cF32(double(cols));
        FailureOr<Value> sum = sumCols(cols, cF32(0.0), [&](Value a, Value c) {
          FailureOr<Value> x = emit(o.getX(), {r, c});
          if (failed(x))
            return x;
          return FailureOr<Value>(b.create<arith::AddFOp>(loc, a, *x));
        });
        if (failed(sum))
          return failure();
        Value mean = b.create<arith::DivFOp>(loc, *sum, n);
        FailureOr<Value> sq = sumCols(cols, cF32(0.0), [&](Value a, Value c) {
          FailureOr<Value> x = emit(o.getX(), {r, c});
          if (failed(x))
            return x;
          Value d = b.create<arith::SubFOp>(loc, *x, mean);
          return FailureOr<Value>(b.create<arith::AddFOp>(loc, a, mul(d, d)));
        });
        FailureOr<Value> x = emit(o.getX(), {r, p});
        if (failed(sq) || failed(x))
          return failure();
        Value var =
            b.create<arith::AddFOp>(loc, b.create<arith::DivFOp>(loc, *sq, n),
                                    cF32(o.getEps().convertToDouble()));
        Value rstd = b.create<arith::DivFOp>(loc, cF32(1.0),
                                             b.create<math::SqrtOp>(loc, var));
        return mul(*dy, mul(b.create<arith::SubFOp>(loc, *x, mean), rstd));
      }
      return op->emitOpError("is not a reduction over rows");
    });
    if (failed(acc))
      return failure();
    if (cast<MemRefType>(mem.getType()).getRank() == 1)
      store(*acc, mem, ValueRange{p});
    else
      store(*acc, mem, ValueRange{p, q});
  }
  return success();
}

/// The mean token cross entropy over the active rows (one thread).
LogicalResult Emitter::emitScalar() {
  auto yield = cast<YieldOp>(fusion.getBody().front().getTerminator());
  if (yield.getNumOperands() != 1)
    return fusion.emitOpError("a scalar kernel has one result");
  if (auto gn = yield.getValues()[0].getDefiningOp<GlobalNormOp>()) {
    // sqrt of the sum of squares of every element of every tensor,
    // accumulated in f64 (one thread, a fixed order: deterministic; an f32
    // sum over millions of elements would lose about 1e-4 relative).
    Type f64 = b.getF64Type();
    Value acc = b.create<arith::ConstantOp>(loc, b.getF64FloatAttr(0.0));
    for (Value t : gn.getTensors()) {
      Value mem = memOf(t);
      if (!mem)
        return gn.emitOpError("operands must be kernel inputs");
      ArrayRef<int64_t> shape = cast<MemRefType>(mem.getType()).getShape();
      SmallVector<Value> ivs;
      SmallVector<scf::ForOp> loops;
      Value cur = acc;
      for (int64_t d : shape) {
        auto l = b.create<scf::ForOp>(loc, cIdx(0), cIdx(d), cIdx(1),
                                      ValueRange{cur});
        loops.push_back(l);
        ivs.push_back(l.getInductionVar());
        b.setInsertionPointToStart(l.getBody());
        cur = l.getRegionIterArgs()[0];
      }
      Value x = b.create<arith::ExtFOp>(loc, f64, load(mem, ivs));
      Value next =
          b.create<arith::AddFOp>(loc, cur, b.create<arith::MulFOp>(loc, x, x));
      for (auto it = loops.rbegin(); it != loops.rend(); ++it) {
        b.create<scf::YieldOp>(loc, next);
        b.setInsertionPointAfter(*it);
        next = it->getResult(0);
      }
      acc = next;
    }
    // The norm of the scaled gradient: grad_scale (hyper[4]) * sqrt(sum).
    Value hyper = memOf(gn.getHyper());
    if (!hyper)
      return gn.emitOpError("operands must be kernel inputs");
    Value scaled = b.create<arith::MulFOp>(
        loc, b.create<math::SqrtOp>(loc, acc),
        b.create<arith::ExtFOp>(loc, f64, load(hyper, {cIdx(4)})));
    store(b.create<arith::TruncFOp>(loc, b.getF32Type(), scaled), outputMem[0],
          ValueRange{cIdx(0)});
    return success();
  }
  if (auto ch = yield.getValues()[0].getDefiningOp<ClipHyperOp>()) {
    Value in = memOf(ch.getHyperIn()), normMem = memOf(ch.getNorm());
    if (!in || !normMem)
      return ch.emitOpError("operands must be kernel inputs");
    for (int i = 0; i < 3; ++i)
      store(load(in, {cIdx(i)}), outputMem[0], ValueRange{cIdx(i)});
    Value maxNorm = load(in, {cIdx(3)}), norm = load(normMem, {cIdx(0)});
    Value clip = b.create<arith::AndIOp>(
        loc,
        b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OGT, maxNorm,
                                cF32(0.0)),
        b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OGT, norm, maxNorm));
    Value factor = b.create<arith::DivFOp>(
        loc, maxNorm, b.create<arith::AddFOp>(loc, norm, cF32(1e-6)));
    // The factor applied to the stored gradients: grad_scale * clip.
    store(b.create<arith::MulFOp>(
              loc, load(in, {cIdx(4)}),
              b.create<arith::SelectOp>(loc, clip, factor, cF32(1.0))),
          outputMem[0], ValueRange{cIdx(3)});
    return success();
  }
  if (auto rs = yield.getValues()[0].getDefiningOp<RowSumOp>()) {
    FailureOr<Value> sum =
        sumRows([&](Value r) { return emit(rs.getX(), {r}); });
    if (failed(sum))
      return failure();
    store(*sum, outputMem[0], ValueRange{});
    return success();
  }
  auto ce = yield.getValues()[0].getDefiningOp<CrossEntropyOp>();
  if (!ce)
    return fusion.emitOpError("a scalar kernel computes cross_entropy");
  int64_t cols = cast<RankedTensorType>(ce.getLogits().getType()).getDimSize(1);
  int64_t ignore = static_cast<int64_t>(ce.getIgnoreIndex());
  Value rows = b.create<arith::MulIOp>(loc, nb, nt);
  auto loop = b.create<scf::ForOp>(loc, cIdx(0), rows, cIdx(1),
                                   ValueRange{cF32(0.0), cF32(0.0)});
  {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(loop.getBody());
    Value r = loop.getInductionVar();
    FailureOr<Value> t = emit(ce.getTargets(), {r});
    if (failed(t))
      return failure();
    Value valid = b.create<arith::CmpIOp>(
        loc, arith::CmpIPredicate::ne, *t,
        b.create<arith::ConstantOp>(loc, b.getI32IntegerAttr(ignore)));
    FailureOr<std::pair<Value, Value>> stats = softmaxStats(ce.getLogits(), r);
    if (failed(stats))
      return failure();
    auto [mx, se] = *stats;
    Value lse =
        b.create<arith::AddFOp>(loc, mx, b.create<math::LogOp>(loc, se));
    Value tIdx = targetColumn(*t, valid, cols);
    FailureOr<Value> xt = emit(ce.getLogits(), {r, tIdx});
    if (failed(xt))
      return failure();
    Value term = b.create<arith::SelectOp>(
        loc, valid, b.create<arith::SubFOp>(loc, lse, *xt), cF32(0.0));
    Value one = b.create<arith::SelectOp>(loc, valid, cF32(1.0), cF32(0.0));
    b.create<scf::YieldOp>(
        loc,
        ValueRange{
            b.create<arith::AddFOp>(loc, loop.getRegionIterArgs()[0], term),
            b.create<arith::AddFOp>(loc, loop.getRegionIterArgs()[1], one)});
  }
  Value sum = loop.getResult(0), count = loop.getResult(1);
  Value hasAny =
      b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OGT, count, cF32(0.0));
  Value loss = b.create<arith::SelectOp>(
      loc, hasAny, b.create<arith::DivFOp>(loc, sum, count), cF32(0.0));
  store(loss, outputMem[0], ValueRange{});
  return success();
}

/// attention_grad in the FlashAttention-2 form: the forward saved the
/// log-sum-exp lse_i of every (query row, head), so with
/// p_ij = exp(scale q_i.k_j - lse_i), dP_ij = dout_i.v_j and
/// D_i = dout_i.out_i (out: the forward output):
///   dq_i = scale sum_j p_ij (dP_ij - D_i) k_j           (kv = false: (r, h))
///   dv_j = sum_{h in group} sum_i p_ij dout_i            (kv = true: key row
///   dk_j = scale sum_{h in group} sum_i p_ij (dP_ij - D_i) q_i   r, kv head h)
/// Each thread does O(context * head_dim) work; the dk/dv loop visits only
/// the queries that attend the key (causal: later ones; window: the next w).
LogicalResult Emitter::emitAttentionGrad(AttentionGradOp op, Value r, Value h,
                                         bool kv) {
  int64_t hd = op.getHeadDim();
  int64_t group = op.getNumHeads() / op.getNumKvHeads();
  float scale = static_cast<float>(op.getScale().convertToDouble());
  // Operands are group inputs (vector dot products) or views over them
  // (GPT-2's q is a column slice of the fused qkv projection).
  Value qMem = memOf(op.getQ()), kMem = memOf(op.getK()),
        vMem = memOf(op.getV()), doMem = memOf(op.getDout()),
        outMem = memOf(op.getOut());
  bool failedEmit = false;
  // A value at an index inside the current loop nest (never memoized).
  auto at = [&](Value v, ArrayRef<Value> i) -> Value {
    llvm::DenseMap<Value, Value> saved = memo;
    FailureOr<Value> x = emit(v, i);
    memo = saved;
    if (failed(x)) {
      failedEmit = true;
      return cF32(0.0);
    }
    return *x;
  };
  auto dotOf = [&](Value a, Value aMem, ArrayRef<Value> aIdx, Value bv,
                   Value bMem, ArrayRef<Value> bIdx) -> Value {
    if (aMem && bMem)
      return dot(aMem, aIdx, bMem, bIdx, hd);
    auto loop = b.create<scf::ForOp>(loc, cIdx(0), cIdx(hd), cIdx(1),
                                     ValueRange{cF32(0.0)});
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(loop.getBody());
    Value d = loop.getInductionVar();
    SmallVector<Value> ai(aIdx.begin(), aIdx.end()),
        bi(bIdx.begin(), bIdx.end());
    ai.back() = b.create<arith::AddIOp>(loc, ai.back(), d);
    bi.back() = b.create<arith::AddIOp>(loc, bi.back(), d);
    Value x = at(a, ai), y = at(bv, bi);
    b.create<scf::YieldOp>(loc, ValueRange{b.create<arith::AddFOp>(
                                    loc, loop.getRegionIterArgs()[0],
                                    b.create<arith::MulFOp>(loc, x, y))});
    b.setInsertionPointAfter(loop);
    return loop.getResult(0);
  };
  auto idx = [&](Value v) {
    return b.create<arith::IndexCastOp>(loc, b.getIndexType(), v).getResult();
  };
  auto mulI = [&](Value a, int64_t c) {
    return b.create<arith::MulIOp>(loc, a, cIdx(c)).getResult();
  };
  auto exp = [&](Value x) { return b.create<math::ExpOp>(loc, x).getResult(); };
  auto sub = [&](Value a, Value c) {
    return b.create<arith::SubFOp>(loc, a, c).getResult();
  };
  auto mul = [&](Value a, Value c) {
    return b.create<arith::MulFOp>(loc, a, c).getResult();
  };
  auto addF = [&](Value a, Value c) {
    return b.create<arith::AddFOp>(loc, a, c).getResult();
  };
  auto score = [&](Value i, Value qBase, Value seq, Value j, Value kBase) {
    Value s =
        dotOf(op.getQ(), qMem, {i, qBase}, op.getK(), kMem, {seq, j, kBase});
    return mul(s, cF32(scale));
  };
  auto dP = [&](Value i, Value qBase, Value seq, Value j, Value kBase) {
    return dotOf(op.getDout(), doMem, {i, qBase}, op.getV(), vMem,
                 {seq, j, kBase});
  };
  // D_i = dout_i . out_i over the head's columns.
  auto delta = [&](Value i, Value qBase) {
    return dotOf(op.getDout(), doMem, {i, qBase}, op.getOut(), outMem,
                 {i, qBase});
  };
  auto zeroRow = [&](Value mem, ArrayRef<Value> base) {
    auto zl = b.create<scf::ForOp>(loc, cIdx(0), cIdx(hd), cIdx(1));
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(zl.getBody());
    SmallVector<Value> to(base.begin(), base.end());
    to.back() = b.create<arith::AddIOp>(loc, to.back(), zl.getInductionVar());
    store(cF32(0.0), mem, to);
  };
  // mem[base..., last + d] += coef * src[srcBase..., srcLast + d]
  auto axpy = [&](Value mem, ArrayRef<Value> base, Value coef, Value src,
                  ArrayRef<Value> srcBase) {
    auto dl = b.create<scf::ForOp>(loc, cIdx(0), cIdx(hd), cIdx(1));
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(dl.getBody());
    Value d = dl.getInductionVar();
    SmallVector<Value> to(base.begin(), base.end()),
        from(srcBase.begin(), srcBase.end());
    to.back() = b.create<arith::AddIOp>(loc, to.back(), d);
    from.back() = b.create<arith::AddIOp>(loc, from.back(), d);
    Value cur = load(mem, to);
    store(addF(cur, mul(coef, at(src, from))), mem, to);
  };

  Value seq = b.create<arith::DivUIOp>(loc, r, nt);
  if (!kv) {
    // Query row r, head h: keys [lo, hi) as in the forward kernel.
    Value dq = outputMem[0];
    Value p = idx(at(op.getPositions(), {r}));
    Value hi = op.getCausal()
                   ? b.create<arith::AddIOp>(loc, p, cIdx(1)).getResult()
                   : b.create<arith::AddIOp>(loc, pos0, nt).getResult();
    Value lo = cIdx(0);
    if (int64_t w = static_cast<int64_t>(op.getSlidingWindow())) {
      Value top = b.create<arith::AddIOp>(loc, p, cIdx(1));
      Value ok =
          b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::uge, top, cIdx(w));
      lo = b.create<arith::SelectOp>(
          loc, ok, b.create<arith::SubIOp>(loc, top, cIdx(w)), cIdx(0));
    }
    Value qBase = mulI(h, hd);
    Value kBase = mulI(b.create<arith::DivUIOp>(loc, h, cIdx(group)), hd);
    Value lse = at(op.getLse(), {r, h});
    Value dsum = delta(r, qBase);
    zeroRow(dq, {r, qBase});
    auto jl = b.create<scf::ForOp>(loc, lo, hi, cIdx(1));
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(jl.getBody());
    Value j = jl.getInductionVar();
    Value pj = exp(sub(score(r, qBase, seq, j, kBase), lse));
    Value ds = mul(pj, sub(dP(r, qBase, seq, j, kBase), dsum));
    axpy(dq, {r, qBase}, mul(ds, cF32(scale)), op.getK(), {seq, j, kBase});
    return failure(failedEmit);
  }

  // Key row r: token t_r of sequence seq, at position j = pos0 + t_r; kv
  // head h. The queries t of the sequence that attend it: t >= t_r when
  // causal, t < t_r + w with a sliding window w.
  Value dk = outputMem[0], dv = outputMem[1];
  Value j = idx(at(op.getPositions(), {r}));
  Value tr = b.create<arith::RemUIOp>(loc, r, nt);
  Value tLo = op.getCausal() ? tr : cIdx(0);
  Value tHi = nt;
  if (int64_t w = static_cast<int64_t>(op.getSlidingWindow()))
    tHi = b.create<arith::MinUIOp>(loc, nt,
                                   b.create<arith::AddIOp>(loc, tr, cIdx(w)));
  Value kBase = mulI(h, hd);
  zeroRow(dk, {seq, j, kBase});
  zeroRow(dv, {seq, j, kBase});
  Value rowBase = b.create<arith::MulIOp>(loc, seq, nt);
  auto gl = b.create<scf::ForOp>(loc, cIdx(0), cIdx(group), cIdx(1));
  OpBuilder::InsertionGuard g(b);
  b.setInsertionPointToStart(gl.getBody());
  Value hh = b.create<arith::AddIOp>(loc, mulI(h, group), gl.getInductionVar());
  Value qBase = mulI(hh, hd);
  auto il = b.create<scf::ForOp>(loc, tLo, tHi, cIdx(1));
  b.setInsertionPointToStart(il.getBody());
  Value i = b.create<arith::AddIOp>(loc, rowBase, il.getInductionVar());
  Value pij =
      exp(sub(score(i, qBase, seq, j, kBase), at(op.getLse(), {i, hh})));
  Value ds = mul(pij, sub(dP(i, qBase, seq, j, kBase), delta(i, qBase)));
  axpy(dv, {seq, j, kBase}, pij, op.getDout(), {i, qBase});
  axpy(dk, {seq, j, kBase}, mul(ds, cF32(scale)), op.getQ(), {i, qBase});
  return failure(failedEmit);
}

/// One AdamW update of element (p, q) of a parameter (PyTorch semantics):
/// hyper = [lr, 1 - beta1^t, 1 - beta2^t, grad_scale].
LogicalResult Emitter::emitAdamw(AdamwOp op, Value p, Value q) {
  auto rank = cast<RankedTensorType>(op.getParam().getType()).getRank();
  SmallVector<Value> at = rank == 2   ? SmallVector<Value>{p, q}
                          : rank == 1 ? SmallVector<Value>{p}
                                      : SmallVector<Value>{};
  Value hyper = memOf(op.getHyper());
  Value pm = memOf(op.getParam()), gm = memOf(op.getGrad()),
        mm = memOf(op.getExpAvg()), vm = memOf(op.getExpAvgSq());
  if (!hyper || !pm || !gm || !mm || !vm)
    return op.emitOpError("operands must be kernel inputs");
  auto mul = [&](Value a, Value c) {
    return b.create<arith::MulFOp>(loc, a, c).getResult();
  };
  auto add = [&](Value a, Value c) {
    return b.create<arith::AddFOp>(loc, a, c).getResult();
  };
  auto div = [&](Value a, Value c) {
    return b.create<arith::DivFOp>(loc, a, c).getResult();
  };
  Value lr = load(hyper, {cIdx(0)}), bc1 = load(hyper, {cIdx(1)}),
        bc2 = load(hyper, {cIdx(2)}), scale = load(hyper, {cIdx(3)});
  double b1 = op.getBeta1().convertToDouble(),
         b2 = op.getBeta2().convertToDouble();
  Value g = mul(load(gm, at), scale);
  Value m = add(mul(cF32(b1), load(mm, at)), mul(cF32(1.0 - b1), g));
  Value v = add(mul(cF32(b2), load(vm, at)), mul(cF32(1.0 - b2), mul(g, g)));
  Value param = load(pm, at);
  if (double wd = op.getWeightDecay().convertToDouble())
    param =
        mul(param, b.create<arith::SubFOp>(loc, cF32(1.0), mul(lr, cF32(wd))));
  Value upd = div(div(m, bc1), add(b.create<math::SqrtOp>(loc, div(v, bc2)),
                                   cF32(op.getEps().convertToDouble())));
  param = b.create<arith::SubFOp>(loc, param, mul(lr, upd));
  // The yields: the new parameter, moments, and (mixed precision) the new
  // f32 master weights rounded to the bf16 parameter the steps read.
  auto yield = cast<YieldOp>(fusion.getBody().front().getTerminator());
  for (auto [i, y] : llvm::enumerate(yield.getValues())) {
    Value value;
    if (y.getDefiningOp() == op.getOperation())
      value = std::array<Value, 3>{param, m,
                                   v}[cast<OpResult>(y).getResultNumber()];
    else if (auto cv = y.getDefiningOp<ConvertOp>();
             cv && cv.getX() == op.getNewParam())
      value = param;
    else
      return fusion.emitOpError(
          "an adamw kernel yields the update's results and conversions of the "
          "new parameter");
    store(value, outputMem[i], at);
  }
  return success();
}

MemRefType memrefFor(Type t) {
  auto rt = cast<RankedTensorType>(t);
  return MemRefType::get(rt.getShape(), rt.getElementType());
}

double numElements(Type t) {
  auto rt = cast<RankedTensorType>(t);
  double n = 1;
  for (int64_t d : rt.getShape())
    n *= static_cast<double>(d);
  return n;
}

/// FLOPs of the group for the whole compiled shape (every row active; a
/// causal attention row sees on average half the context). Counted: linear
/// and its weight gradient, attention (forward), norms and pointwise ops;
/// not yet counted (0): attention_grad, the norm gradients, the loss and its
/// gradient, the optimizer.
double estimateFlops(FusionOp fusion) {
  double flops = 0;
  for (Operation &op : fusion.getBody().front()) {
    if (auto l = dyn_cast<LinearOp>(op)) {
      auto x = cast<RankedTensorType>(l.getX().getType());
      double n = numElements(l.getType()) / x.getDimSize(0);
      flops += 2.0 * x.getDimSize(0) * x.getDimSize(1) * n;
    } else if (auto g = dyn_cast<LinearWeightGradOp>(op)) {
      // A [T, K] x [T, N] product summed over the T rows.
      auto x = cast<RankedTensorType>(g.getX().getType());
      auto dy = cast<RankedTensorType>(g.getDy().getType());
      flops += 2.0 * x.getDimSize(0) * x.getDimSize(1) * dy.getDimSize(1);
    } else if (auto a = dyn_cast<AttentionOp>(op)) {
      auto k = cast<RankedTensorType>(a.getK().getType());
      double ctx =
          a.getCausal() ? (k.getDimSize(1) + 1) / 2.0 : k.getDimSize(1);
      if (a.getSlidingWindow() > 0)
        ctx = std::min<double>(ctx, a.getSlidingWindow());
      double rows = cast<RankedTensorType>(a.getQ().getType()).getDimSize(0);
      flops += 4.0 * rows * a.getNumHeads() * a.getHeadDim() * ctx;
    } else if (isa<RmsNormOp, LayerNormOp, SoftmaxOp, RopeOp, GeluOp, SiluOp,
                   SwigluOp>(op)) {
      flops += 5.0 * numElements(op.getResult(0).getType());
    } else if (isa<AddOp, MulOp>(op)) {
      flops += numElements(op.getResult(0).getType());
    }
  }
  return flops;
}

/// Bytes the kernel must move at least: every input and output once.
double estimateBytes(FusionOp fusion) {
  double bytes = 0;
  auto size = [](Type t) {
    auto st = cast<ShapedType>(t);
    return st.getElementTypeBitWidth() / 8.0 * numElements(t);
  };
  for (Value in : fusion.getInputs())
    bytes += size(in.getType());
  for (Value out : fusion.getResults())
    bytes += size(out.getType());
  return bytes;
}

} // namespace

LogicalResult colossus::emitKernel(FusionOp fusion, StringRef name,
                                   KernelTarget target, unsigned blockDim,
                                   OpBuilder &builder, bool hopperGemm,
                                   bool hopperAttention) {
  Location loc = fusion.getLoc();
  Block &body = fusion.getBody().front();
  // sm_90a with hopperGemm: a bf16 GEMM group becomes the TMA + wgmma kernel
  // (docs/hopper-gemm.md); every other group takes the SIMT path below.
  std::string hopperWhyNot;
  // Weight gradients (linear_weight_grad) are `reduce` groups.
  bool gemmGroup = fusion.getKind() == "gemm" ||
                   (fusion.getKind() == "reduce" &&
                    llvm::any_of(body.without_terminator(), [](Operation &op) {
                      return isa<LinearWeightGradOp>(op);
                    }));
  if (target == KernelTarget::Gpu && hopperGemm && gemmGroup) {
    if (std::optional<HopperGemmProblem> p =
            matchHopperGemm(fusion, hopperWhyNot)) {
      FailureOr<Operation *> kernelOp =
          buildHopperGemm(fusion, *p, name, builder);
      if (failed(kernelOp))
        return failure();
      SmallVector<Attribute> fused;
      for (Operation &op : body.without_terminator())
        fused.push_back(builder.getStringAttr(op.getName().getStringRef()));
      Operation *k = *kernelOp;
      k->setAttr(kattrs::kKind, fusion.getKindAttr());
      k->setAttr(kattrs::kFusedOps, builder.getArrayAttr(fused));
      k->setAttr(kattrs::kCols, builder.getI64IntegerAttr(p->n));
      k->setAttr(kattrs::kNumArgs,
                 builder.getI64IntegerAttr(body.getNumArguments() +
                                           fusion.getNumResults()));
      k->setAttr(kattrs::kFlops,
                 builder.getF64FloatAttr(estimateFlops(fusion)));
      k->setAttr(kattrs::kBytes,
                 builder.getF64FloatAttr(estimateBytes(fusion)));
      k->setAttr(kattrs::kBlockDim,
                 builder.getI64IntegerAttr(p->tile.threads()));
      return success();
    }
    fusion.emitWarning("the sm_90a bf16 GEMM does not apply (")
        << hopperWhyNot << "): a SIMT kernel is generated";
  }
  // sm_90a with hopperAttention: a bf16 attention group becomes the
  // FlashAttention-style TMA + wgmma kernel (docs/hopper-attention.md).
  if (target == KernelTarget::Gpu && hopperAttention &&
      fusion.getKind() == "attention") {
    std::string whyNot;
    if (std::optional<HopperAttentionProblem> p =
            matchHopperAttention(fusion, whyNot)) {
      FailureOr<Operation *> kernelOp =
          buildHopperAttention(fusion, *p, name, builder);
      if (failed(kernelOp))
        return failure();
      SmallVector<Attribute> fused;
      for (Operation &op : body.without_terminator())
        fused.push_back(builder.getStringAttr(op.getName().getStringRef()));
      Operation *k = *kernelOp;
      k->setAttr(kattrs::kKind, fusion.getKindAttr());
      k->setAttr(kattrs::kFusedOps, builder.getArrayAttr(fused));
      k->setAttr(kattrs::kCols, builder.getI64IntegerAttr(p->heads));
      k->setAttr(kattrs::kNumArgs,
                 builder.getI64IntegerAttr(body.getNumArguments() +
                                           fusion.getNumResults()));
      k->setAttr(kattrs::kFlops,
                 builder.getF64FloatAttr(estimateFlops(fusion)));
      k->setAttr(kattrs::kBytes,
                 builder.getF64FloatAttr(estimateBytes(fusion)));
      k->setAttr(kattrs::kBlockDim,
                 builder.getI64IntegerAttr(HopperAttentionTile::kThreads));
      return success();
    }
    fusion.emitWarning("the sm_90a bf16 attention does not apply (")
        << whyNot << "): a SIMT kernel is generated";
  }
  // Buffers are f32, bf16 (loaded into f32, rounded when stored) or i32.
  for (Type t : llvm::concat<const Type>(body.getArgumentTypes(),
                                         fusion.getResultTypes())) {
    Type elem = cast<RankedTensorType>(t).getElementType();
    if (elem.isF32() || elem.isInteger(32) || elem.isBF16())
      continue;
    return fusion.emitOpError("element type ")
           << elem << " is not supported by code generation yet (f32, bf16)";
  }

  // Shape of the kernel.
  Shape shape = Shape::Pointwise;
  AttentionOp attention;
  auto yield = cast<YieldOp>(body.getTerminator());
  for (Operation &op : body) {
    if (auto a = dyn_cast<AttentionOp>(op))
      attention = a;
    if (isa<RmsNormOp, LayerNormOp, SoftmaxOp, SoftmaxGradOp,
            CrossEntropyGradOp>(op))
      shape = Shape::Row;
    // A norm gradient's dx with the elementwise ops that consume it (the
    // residual adjoint's sum): row statistics, then the columns.
    if (isa<RmsNormGradOp, LayerNormGradOp>(op) &&
        !op.getResult(0).use_empty())
      shape = Shape::Row;
    if (isa<CrossEntropyOp, GlobalNormOp, ClipHyperOp, RowSumOp>(op))
      shape = Shape::Scalar;
    if (isa<CrossEntropyRowsOp>(op))
      shape = Shape::LossRows;
    if (isa<AdamwOp>(op))
      shape = Shape::Adamw;
  }
  for (Value v : yield.getValues()) {
    Operation *def = v.getDefiningOp();
    if (!def)
      continue;
    unsigned res = cast<OpResult>(v).getResultNumber();
    if (isa<AttentionGradOp>(def)) {
      shape = res == 0 ? Shape::AttnGradQ : Shape::AttnGradKV;
      continue;
    }
    if (isa<LinearWeightGradOp, ColumnSumOp, EmbeddingGradOp>(def) ||
        (isa<RmsNormGradOp, LayerNormGradOp>(def) && res > 0))
      shape = Shape::Reduce;
    else if (isa<RmsNormGradOp, LayerNormGradOp>(def))
      shape = Shape::Row;
  }
  if (attention) {
    size_t computeOps = llvm::count_if(body, [](Operation &op) {
      return !isa<PositionsOp, SliceOp, YieldOp>(op);
    });
    if (computeOps != 1 || fusion.getNumResults() > 2)
      return fusion.emitOpError("attention must form a kernel of its own");
    shape = Shape::Attention;
  }
  int64_t cols = 0;
  // Reduce and scalar kernels run over a fixed number of rows: the first
  // dimension of their results.
  int64_t fixedRows = 0;
  if (auto fr = fusion->getAttrOfType<IntegerAttr>("colossus.fixed_rows")) {
    if (shape != Shape::Pointwise)
      return fusion.emitOpError("fixed rows only for elementwise kernels");
    fixedRows = fr.getInt();
  }
  if (shape == Shape::Scalar) {
    fixedRows = 1;
    cols = 1;
  } else if (shape == Shape::Reduce || shape == Shape::Adamw) {
    for (Value v : yield.getValues()) {
      auto t = cast<RankedTensorType>(v.getType());
      int64_t p = t.getRank() == 0 ? 1 : t.getDimSize(0);
      int64_t q = t.getRank() == 2 ? t.getDimSize(1) : 1;
      if ((fixedRows && fixedRows != p) || (cols && cols != q))
        return fusion.emitOpError("reduction results of different shapes");
      fixedRows = p;
      cols = q;
    }
  }
  for (Value v : yield.getValues()) {
    if ((fixedRows && shape != Shape::Pointwise) || shape == Shape::AttnGradQ ||
        shape == Shape::AttnGradKV || shape == Shape::Attention ||
        shape == Shape::LossRows)
      break;
    int64_t c;
    if (auto cw = v.getDefiningOp<CacheWriteOp>())
      c = cast<RankedTensorType>(cw.getX().getType()).getDimSize(1);
    else if (cast<RankedTensorType>(v.getType()).getRank() == 2)
      c = cast<RankedTensorType>(v.getType()).getDimSize(1);
    else
      return fusion.emitOpError("results must be [rows, columns] matrices");
    if (cols && c != cols)
      return fusion.emitOpError("results iterate over different column "
                                "counts (")
             << cols << " vs " << c << ")";
    cols = c;
  }
  AttentionGradOp attnGrad;
  for (Operation &op : body)
    if (auto a = dyn_cast<AttentionGradOp>(op))
      attnGrad = a;
  if (shape == Shape::AttnGradKV) {
    auto y = yield.getValues();
    if (y.size() != 2 || y[0] != attnGrad.getDk() || y[1] != attnGrad.getDv())
      return fusion.emitOpError("an attention_grad kv kernel yields dk, dv");
  }
  if (shape == Shape::AttnGradQ && yield.getNumOperands() != 1)
    return fusion.emitOpError("an attention_grad q kernel yields dq");
  CrossEntropyRowsOp lossRows;
  for (Operation &op : body)
    if (auto l = dyn_cast<CrossEntropyRowsOp>(op))
      lossRows = l;
  if (shape == Shape::LossRows &&
      llvm::count_if(body, [](Operation &op) {
        return !isa<PositionsOp, SliceOp, YieldOp, arith::ConstantOp>(op);
      }) != 1)
    return fusion.emitOpError(
        "cross_entropy_rows must form a kernel of its own");
  int64_t parallelCols = shape == Shape::Row || shape == Shape::LossRows ? 1
                         : shape == Shape::Attention ? attention.getNumHeads()
                         : shape == Shape::AttnGradQ
                             ? static_cast<int64_t>(attnGrad.getNumHeads())
                         : shape == Shape::AttnGradKV
                             ? static_cast<int64_t>(attnGrad.getNumKvHeads())
                             : cols;

  SmallVector<Type> argTypes;
  for (Type t : body.getArgumentTypes())
    argTypes.push_back(memrefFor(t));
  for (Type t : fusion.getResultTypes())
    argTypes.push_back(memrefFor(t));
  Type i64 = builder.getI64Type();
  argTypes.append({i64, i64, i64});
  FunctionType fnType = builder.getFunctionType(argTypes, {});

  Operation *kernelOp;
  Block *entry;
  if (target == KernelTarget::Cpu) {
    auto fn = builder.create<func::FuncOp>(loc, name, fnType);
    entry = fn.addEntryBlock();
    kernelOp = fn;
  } else {
    auto fn = builder.create<gpu::GPUFuncOp>(loc, name, fnType);
    fn->setAttr(gpu::GPUDialect::getKernelFuncAttrName(),
                builder.getUnitAttr());
    entry = &fn.getBody().front();
    kernelOp = fn;
  }

  OpBuilder b = OpBuilder::atBlockEnd(entry);
  unsigned nIn = body.getNumArguments() + fusion.getNumResults();
  ValueRange memrefs = entry->getArguments().take_front(nIn);
  auto toIndex = [&](Value v) {
    return b.create<arith::IndexCastOp>(loc, b.getIndexType(), v).getResult();
  };
  Value nb = toIndex(entry->getArgument(nIn));
  Value nt = toIndex(entry->getArgument(nIn + 1));
  Value pos0 = toIndex(entry->getArgument(nIn + 2));
  Emitter em(b, loc, fusion, memrefs, nb, nt, pos0,
             target == KernelTarget::Gpu);
  Value rows = fixedRows ? em.cIdx(fixedRows)
                         : b.create<arith::MulIOp>(loc, nb, nt).getResult();

  // The body for one parallel index (r, c).
  auto emitBody = [&](Value r, Value c) -> LogicalResult {
    switch (shape) {
    case Shape::Pointwise:
      return em.emitStores(r, c);
    case Shape::Attention:
      em.beginPoint(r, c);
      return em.emitAttention(attention, r, c);
    case Shape::Reduce:
      em.beginPoint(r, c);
      return em.emitReduction(r, c);
    case Shape::Adamw: {
      em.beginPoint(r, c);
      AdamwOp adamw;
      for (Operation &op : body)
        if (auto a = dyn_cast<AdamwOp>(op))
          adamw = a;
      return em.emitAdamw(adamw, r, c);
    }
    case Shape::AttnGradQ:
    case Shape::AttnGradKV:
      em.beginPoint(r, c);
      return em.emitAttentionGrad(attnGrad, r, c, shape == Shape::AttnGradKV);
    case Shape::Scalar:
      em.beginPoint(r, c);
      return em.emitScalar();
    case Shape::LossRows:
      em.beginPoint(r, Value());
      return em.emitCrossEntropyRows(lossRows, r);
    case Shape::Row: {
      em.beginPoint(r, Value());
      if (failed(em.emitRowStats(r)))
        return failure();
      auto cl =
          b.create<scf::ForOp>(loc, em.cIdx(0), em.cIdx(cols), em.cIdx(1));
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(cl.getBody());
      return em.emitStores(r, cl.getInductionVar());
    }
    }
    return failure();
  };

  if (target == KernelTarget::Cpu) {
    if (shape == Shape::Pointwise && fusion.getKind() == "gemm")
      (void)em.emitLinalgGemm(rows);
    auto rl = b.create<scf::ForOp>(loc, em.cIdx(0), rows, em.cIdx(1));
    b.setInsertionPointToStart(rl.getBody());
    Value r = rl.getInductionVar();
    auto cl = b.create<scf::ForOp>(loc, em.cIdx(0), em.cIdx(parallelCols),
                                   em.cIdx(1));
    b.setInsertionPointToStart(cl.getBody());
    if (failed(emitBody(r, cl.getInductionVar())))
      return failure();
    b.setInsertionPointToEnd(entry);
    b.create<func::ReturnOp>(loc);
  } else {
    Value bid = b.create<gpu::BlockIdOp>(loc, gpu::Dimension::x);
    Value bdim = b.create<gpu::BlockDimOp>(loc, gpu::Dimension::x);
    Value tid = b.create<gpu::ThreadIdOp>(loc, gpu::Dimension::x);
    Value flat = b.create<arith::AddIOp>(
        loc, b.create<arith::MulIOp>(loc, bid, bdim), tid);
    Value total = b.create<arith::MulIOp>(loc, rows, em.cIdx(parallelCols));
    Value inRange =
        b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::ult, flat, total);
    auto guard = b.create<scf::IfOp>(loc, inRange, /*withElseRegion=*/false);
    b.setInsertionPointToStart(&guard.getThenRegion().front());
    Value r = b.create<arith::DivUIOp>(loc, flat, em.cIdx(parallelCols));
    Value c = b.create<arith::RemUIOp>(loc, flat, em.cIdx(parallelCols));
    if (failed(emitBody(r, c)))
      return failure();
    b.setInsertionPointToEnd(entry);
    b.create<gpu::ReturnOp>(loc);
  }

  SmallVector<Attribute> fused;
  for (Operation &op : body)
    if (!isa<YieldOp>(op))
      fused.push_back(builder.getStringAttr(op.getName().getStringRef()));
  kernelOp->setAttr(kattrs::kKind, fusion.getKindAttr());
  kernelOp->setAttr(kattrs::kFusedOps, builder.getArrayAttr(fused));
  kernelOp->setAttr(kattrs::kCols, builder.getI64IntegerAttr(parallelCols));
  if (fixedRows)
    kernelOp->setAttr(kattrs::kFixedRows, builder.getI64IntegerAttr(fixedRows));
  kernelOp->setAttr(kattrs::kNumArgs, builder.getI64IntegerAttr(nIn));
  kernelOp->setAttr(kattrs::kFlops,
                    builder.getF64FloatAttr(estimateFlops(fusion)));
  kernelOp->setAttr(kattrs::kBytes,
                    builder.getF64FloatAttr(estimateBytes(fusion)));
  if (target == KernelTarget::Gpu)
    kernelOp->setAttr(kattrs::kBlockDim, builder.getI64IntegerAttr(blockDim));
  return success();
}
