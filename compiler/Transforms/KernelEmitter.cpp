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
// sm_90a vector mode (docs/kernels.md): memory-bound groups take a parallel
// index per chunk of 8 bf16 / 4 f32 columns (16-byte loads and stores), row
// groups share a row among the lanes of a warp (shuffle reductions, the
// row's chunks kept in registers across passes when they fit; a row too
// long for a warp takes a block, combined through shared memory), the norms'
// weight gradients run by blocks with the row statistics in shared memory.
//
//===----------------------------------------------------------------------===//
#include "colossus/Compiler/KernelEmitter.h"
#include "colossus/Compiler/HopperAttention.h"
#include "colossus/Compiler/HopperGemm.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <vector>

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
  /// Loads compute in f32: narrower floats (bf16, f16) are widened. In
  /// vector mode an element of a column chunk comes out of one 16-byte
  /// vector load of the chunk (vectorLane).
  Value load(Value mem, ValueRange idx) {
    if (Value v = vectorLane(mem, idx))
      return widen(v);
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
  /// Stores round an f32 value to the buffer's element type. In vector mode
  /// the elements of a column chunk are gathered and written by one vector
  /// store once the chunk's last element arrives (vectorStore).
  void store(Value v, Value mem, ValueRange idx) {
    Type e = cast<MemRefType>(mem.getType()).getElementType();
    if (e != v.getType() && isa<FloatType>(e))
      v = narrow(v, e);
    if (vectorStore(v, mem, idx))
      return;
    if (storeGuard) {
      auto guard = b.create<scf::IfOp>(loc, storeGuard, false);
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(&guard.getThenRegion().front());
      b.create<memref::StoreOp>(loc, v, mem, idx);
      return;
    }
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
  /// sum (or max) over c < cols of fn(c), as an scf.for reduction; in
  /// row-vector mode over this lane's chunks, then across the row's lanes.
  /// `init` is the combination's identity (0 or -inf).
  enum class Combine { Add, Max };
  FailureOr<Value>
  sumCols(int64_t cols, Value init,
          function_ref<FailureOr<Value>(Value acc, Value c)> fn,
          Combine kind = Combine::Add);
  /// sum over the active rows r < nb*nt of term(r); in row-vector mode the
  /// lanes of a row share the rows and combine their sums.
  FailureOr<Value> sumRows(function_ref<FailureOr<Value>(Value r)> term);

public:
  /// Row-vector mode: the row length it was set up for, and the chunk bases
  /// of an unrolled row (created once, so that every pass over the row
  /// reuses the same vector loads).
  int64_t rowCols = 0;
  SmallVector<Value> chunkBases;
  void setupRowVector(int64_t cols, int64_t lanes, Value laneId,
                      int64_t maxUnrolled) {
    rowCols = cols;
    rowLanes = lanes;
    lane = laneId;
    rowChunks = cols / vecW / lanes;
    rowUnrolled = rowChunks * vecW <= maxUnrolled;
    chunkBases.clear();
    if (rowUnrolled) {
      Value laneBase = b.create<arith::MulIOp>(loc, laneId, cIdx(vecW));
      for (int64_t j = 0; j < rowChunks; ++j)
        chunkBases.push_back(
            j == 0
                ? laneBase
                : b.create<arith::AddIOp>(loc, laneBase, cIdx(j * lanes * vecW))
                      .getResult());
    }
  }
  /// Stores every result of the group over this lane's chunks of row r.
  LogicalResult emitRowVectorStores(Value r);
  /// Stores every result at the vecW columns of the chunk at `base`.
  LogicalResult emitChunkStores(Value r, Value base);

private:
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
  /// With `scratch`, only the row tiles [tileBegin, tileEnd) are added and
  /// the sums go to scratch[(split * outputs + i) * cols + column] instead
  /// of the outputs (the split form, see emitKernel).
  LogicalResult emitNormParamGrad(Operation *normGrad, Value chunk, Value tid,
                                  int64_t warps, int64_t lanes, Value smem,
                                  Value tileBegin = {}, Value tileEnd = {},
                                  Value scratch = {}, Value split = {});
  LogicalResult emitScalar();
  LogicalResult emitRowSumWarp(RowSumOp op, Value lane);
  LogicalResult emitEmbeddingGradWarp(EmbeddingGradOp op, Value flat,
                                      int64_t rowChunks, int64_t vocab);
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
  FailureOr<Value> finishRope(RopeOp op, Value r, Value c, Value partner,
                              Value first, Value cosA, Value sinA);
  std::map<std::vector<void *>, std::pair<Value, Value>> ropeAngles;

public:
  /// rotate_half RoPE on sm_90a: this thread owns the chunk at `b1` (first
  /// half of a head) and its partner at `b2` = b1 + head_dim / 2: each is
  /// loaded once and serves both outputs.
  void pairChunks(Value b1, Value b2) {
    colOf[{b1.getAsOpaquePointer(), std::numeric_limits<int64_t>::min()}] = b2;
    colOf[{b2.getAsOpaquePointer(), std::numeric_limits<int64_t>::min()}] = b1;
    pairFirst[b1] = b1;
    pairFirst[b2] = b1;
  }

private:
  llvm::DenseMap<Value, Value> pairFirst;
  Value positionOfRow(Value r) {
    // Rows are compacted: row r is token (r mod nt) of sequence (r / nt).
    Value t = b.create<arith::RemUIOp>(loc, r, nt);
    return b.create<arith::AddIOp>(loc, pos0, t);
  }
  FailureOr<Value> emitIndex(Value v, Value r) {
    // Vector mode: one index per row for every element of a chunk, so that
    // the chunk's accesses share their leading indices.
    auto key = std::make_pair(v, r);
    if (vecW)
      if (Value m = rowIndexMemo.lookup(key); m && visibleHere(m))
        return m;
    FailureOr<Value> x = emit(v, {r});
    if (failed(x))
      return failure();
    Value i = b.create<arith::IndexCastOp>(loc, b.getIndexType(), *x);
    if (vecW)
      rowIndexMemo[key] = i;
    return i;
  }
  /// The sequence of (compacted) row r.
  Value seqOfRow(Value r) {
    auto key = std::make_pair(Value(), r);
    if (vecW)
      if (Value m = rowIndexMemo.lookup(key); m && visibleHere(m))
        return m;
    Value s = b.create<arith::DivUIOp>(loc, r, nt);
    if (vecW)
      rowIndexMemo[key] = s;
    return s;
  }
  llvm::DenseMap<std::pair<Value, Value>, Value> rowIndexMemo;
  Value hyperVec;

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

  //===--------------------------------------------------------------------===//
  // sm_90a vector mode (docs/kernels.md). Columns are visited in chunks of
  // vecW consecutive elements starting at a multiple of vecW; the column
  // index of element k of the chunk at `base` is chunkCol(base, k). A load
  // at such a column of a buffer whose rows are whole chunks is an element
  // of one vector load of the chunk (16 bytes: 8 bf16 or 4 f32; 32 bytes
  // for 8 f32, two 16-byte accesses), made once and reused while it
  // dominates the insertion point: within a row kept in registers the
  // statistics pass and the normalize pass share it. Stores of a chunk's
  // elements are gathered into one vector store.
  //===--------------------------------------------------------------------===//
public:
  unsigned vecW = 0;
  /// Row-vector mode (row kernels on sm_90a): `rowLanes` consecutive
  /// threads share a row; `lane` is this thread's rank among them; each
  /// lane visits `rowChunks` chunks, chunk j at column (j * rowLanes +
  /// lane) * vecW; unrolled (the row's chunks stay in registers) or in an
  /// scf.for (rows too long for registers: read again per pass).
  int64_t rowLanes = 0, rowChunks = 0;
  /// A wide row's cross-warp reduction buffer (workgroup memory, warps x
  /// kRowSmemVals f32), only when rowLanes > 32.
  Value rowSmem;
  static constexpr int64_t kRowSmemVals = 4;
  bool rowUnrolled = false;
  Value lane;
  /// Stores happen only where this is true (row-vector mode: lanes of the
  /// last rows past the end compute on a clamped row but store nothing).
  Value storeGuard;

  Value chunkCol(Value base, int64_t k) {
    if (k == 0) {
      colChunk[base] = {base, 0};
      return base;
    }
    auto key = std::make_pair(base.getAsOpaquePointer(), k);
    if (Value c = colOf.lookup(key); c && visibleHere(c))
      return c;
    Value c = b.create<arith::AddIOp>(loc, base, cIdx(k));
    colOf[key] = c;
    colChunk[c] = {base, k};
    return c;
  }
  /// The chunk base of column `c` shifted by `off` columns, when that keeps
  /// chunks aligned; null otherwise.
  Value shiftedChunkCol(Value c, int64_t off) {
    auto it = colChunk.find(c);
    if (it == colChunk.end() || off % vecW != 0)
      return {};
    auto [base, k] = it->second;
    auto key = std::make_pair(base.getAsOpaquePointer(), -1 - off);
    Value nb = colOf.lookup(key);
    if (!nb || !visibleHere(nb)) {
      nb = b.create<arith::AddIOp>(loc, base, cIdx(off));
      colOf[key] = nb;
    }
    return chunkCol(nb, k);
  }
  /// Calls fn(base) for each chunk of this lane's part of a row of `cols`
  /// columns (row-vector mode), unrolled or in an scf.for; `acc` values are
  /// threaded through.
  FailureOr<SmallVector<Value>> forEachLaneChunk(
      ValueRange init,
      function_ref<FailureOr<SmallVector<Value>>(Value base, ValueRange acc)>
          fn);
  /// Combines `vals` over the rowLanes lanes of a row (butterfly shuffles):
  /// every lane gets the result.
  SmallVector<Value>
  laneAllReduce(ValueRange vals,
                function_ref<SmallVector<Value>(ValueRange, ValueRange)> comb);

private:
  struct ChunkRef {
    Value base;
    int64_t k;
  };
  llvm::DenseMap<Value, ChunkRef> colChunk;
  llvm::DenseMap<std::pair<void *, int64_t>, Value> colOf;
  std::map<std::vector<void *>, Value> vecLoads;
  struct PendingStore {
    Value mem;
    SmallVector<Value> prefix;
    Value base;
    SmallVector<Value> lanes;
    unsigned filled = 0;
  };
  std::map<std::vector<void *>, PendingStore> pendingStores;

  /// Whether `v` may be used at the insertion point: defined in the
  /// insertion block or in a block enclosing it.
  bool visibleHere(Value v) const {
    Block *def = v.getParentBlock();
    for (Block *blk = b.getInsertionBlock(); blk;) {
      if (blk == def)
        return true;
      Operation *parent = blk->getParentOp();
      if (!parent)
        return false;
      blk = parent->getBlock();
    }
    return false;
  }
  /// Buffers whose rows are whole chunks can be accessed by chunk.
  bool chunkable(Value mem) const {
    auto mt = cast<MemRefType>(mem.getType());
    if (!mt.hasStaticShape() || mt.getRank() == 0 ||
        mt.getShape().back() % vecW != 0)
      return false;
    Type e = mt.getElementType();
    return e.isF32() || e.isBF16() || e.isInteger(32);
  }
  std::vector<void *> chunkKey(Value mem, ValueRange prefix, Value base) {
    std::vector<void *> key{mem.getAsOpaquePointer()};
    for (Value v : prefix)
      key.push_back(v.getAsOpaquePointer());
    key.push_back(base.getAsOpaquePointer());
    return key;
  }
  llvm::MaybeAlign chunkAlign(Value mem) const {
    Type e = cast<MemRefType>(mem.getType()).getElementType();
    return llvm::Align(
        std::min<uint64_t>(16, vecW * e.getIntOrFloatBitWidth() / 8));
  }
  Value vectorLane(Value mem, ValueRange idx) {
    if (!vecW || idx.empty())
      return {};
    auto it = colChunk.find(idx.back());
    if (it == colChunk.end() || !chunkable(mem))
      return {};
    auto [base, k] = it->second;
    SmallVector<Value> at(idx.drop_back());
    std::vector<void *> key = chunkKey(mem, at, base);
    Value vec = vecLoads.count(key) ? vecLoads[key] : Value();
    if (!vec || !visibleHere(vec)) {
      at.push_back(base);
      auto vt =
          VectorType::get({static_cast<int64_t>(vecW)},
                          cast<MemRefType>(mem.getType()).getElementType());
      vec = b.create<vector::LoadOp>(loc, vt, mem, at, /*nontemporal=*/false,
                                     chunkAlign(mem));
      vecLoads[key] = vec;
    }
    return b.create<vector::ExtractOp>(loc, vec, ArrayRef<int64_t>{k});
  }
  bool vectorStore(Value v, Value mem, ValueRange idx) {
    if (!vecW || idx.empty())
      return false;
    auto it = colChunk.find(idx.back());
    if (it == colChunk.end() || !chunkable(mem))
      return false;
    auto [base, k] = it->second;
    SmallVector<Value> at(idx.drop_back());
    std::vector<void *> key = chunkKey(mem, at, base);
    PendingStore &ps = pendingStores[key];
    if (ps.lanes.empty()) {
      ps.mem = mem;
      ps.prefix = at;
      ps.base = base;
      ps.lanes.assign(vecW, Value());
    }
    if (!ps.lanes[k])
      ++ps.filled;
    ps.lanes[k] = v;
    if (ps.filled < vecW)
      return true;
    auto vt = VectorType::get({static_cast<int64_t>(vecW)}, v.getType());
    Value vec = b.create<vector::FromElementsOp>(loc, vt, ps.lanes);
    SmallVector<Value> to = ps.prefix;
    to.push_back(ps.base);
    auto emitStore = [&]() {
      b.create<vector::StoreOp>(loc, vec, mem, to, /*nontemporal=*/false,
                                chunkAlign(mem));
    };
    if (storeGuard) {
      auto guard = b.create<scf::IfOp>(loc, storeGuard, false);
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(&guard.getThenRegion().front());
      emitStore();
    } else {
      emitStore();
    }
    pendingStores.erase(key);
    return true;
  }

public:
  /// All gathered chunk stores were written.
  LogicalResult checkStoresFlushed() {
    if (pendingStores.empty())
      return success();
    return fusion.emitOpError(
        "internal error: a vector chunk was stored only in part");
  }

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
  // Vector mode: the partner column is in the same chunk (interleaved) or
  // in the chunk half a head away (rotate_half), element for element.
  auto chunk = vecW ? colChunk.find(c) : colChunk.end();
  bool chunked = chunk != colChunk.end() && hd % vecW == 0;
  if (chunked && op.getLayout() == RopeLayout::rotate_half &&
      half % vecW == 0) {
    auto [base, k] = chunk->second;
    Value dBase = b.create<arith::RemUIOp>(loc, base, cIdx(hd));
    Value firstBase = b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::ult,
                                              dBase, cIdx(half));
    first = firstBase;
    i = b.create<arith::RemUIOp>(loc, d, cIdx(half));
    // One partner chunk base per chunk (the same Value for every element).
    auto key = std::make_pair(base.getAsOpaquePointer(),
                              std::numeric_limits<int64_t>::min());
    Value pBase = colOf.lookup(key);
    if (!pBase || !visibleHere(pBase)) {
      pBase = b.create<arith::SelectOp>(
          loc, firstBase, b.create<arith::AddIOp>(loc, base, cIdx(half)),
          b.create<arith::SubIOp>(loc, base, cIdx(half)));
      colOf[key] = pBase;
    }
    partner = chunkCol(pBase, k);
  } else if (chunked && op.getLayout() != RopeLayout::rotate_half) {
    auto [base, k] = chunk->second;
    first = b.create<arith::ConstantOp>(loc, b.getBoolAttr(k % 2 == 0));
    i = b.create<arith::DivUIOp>(loc, d, cIdx(2));
    partner = chunkCol(base, k ^ 1);
  } else if (op.getLayout() == RopeLayout::rotate_half) {
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
  // Paired chunks (a thread owning a chunk and its partner): both halves'
  // element k share their angle; compute it once.
  std::vector<void *> angleKey;
  if (chunked && op.getLayout() == RopeLayout::rotate_half)
    if (auto it = pairFirst.find(chunk->second.base); it != pairFirst.end()) {
      angleKey = {op.getOperation(), it->second.getAsOpaquePointer(),
                  reinterpret_cast<void *>(chunk->second.k)};
      auto m = ropeAngles.find(angleKey);
      if (m != ropeAngles.end() && visibleHere(m->second.first))
        return finishRope(op, r, c, partner, first, m->second.first,
                          m->second.second);
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
  if (!angleKey.empty())
    ropeAngles[angleKey] = {cosA, sinA};
  return finishRope(op, r, c, partner, first, cosA, sinA);
}

/// x cos + (-/+) x_partner sin at (r, c).
FailureOr<Value> Emitter::finishRope(RopeOp op, Value r, Value c, Value partner,
                                     Value first, Value cosA, Value sinA) {
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
    if (Value c = vecW ? shiftedChunkCol(idx[1], s.getOffset()) : Value())
      return emit(s.getX(), {idx[0], c});
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
                      function_ref<FailureOr<Value>(Value acc, Value xv)> step,
                      Combine kind = Combine::Add) -> FailureOr<Value> {
      return sumCols(
          cols, init,
          [&](Value acc, Value c) -> FailureOr<Value> {
            FailureOr<Value> xv = emit(x, {r, c});
            if (failed(xv))
              return failure();
            return step(acc, *xv);
          },
          kind);
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
      FailureOr<Value> mx = reduce(
          cF32(-std::numeric_limits<double>::infinity()),
          [&](Value acc, Value xv) {
            return FailureOr<Value>(b.create<arith::MaximumFOp>(loc, acc, xv));
          },
          Combine::Max);
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
      Value seqIdx = seqOfRow(r);
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

FailureOr<SmallVector<Value>> Emitter::forEachLaneChunk(
    ValueRange init,
    function_ref<FailureOr<SmallVector<Value>>(Value base, ValueRange acc)>
        fn) {
  if (rowUnrolled) {
    SmallVector<Value> acc(init);
    for (Value base : chunkBases) {
      FailureOr<SmallVector<Value>> next = fn(base, acc);
      if (failed(next))
        return failure();
      acc = *next;
    }
    return acc;
  }
  auto loop =
      b.create<scf::ForOp>(loc, cIdx(0), cIdx(rowChunks), cIdx(1), init);
  OpBuilder::InsertionGuard g(b);
  b.setInsertionPointToStart(loop.getBody());
  Value j = loop.getInductionVar();
  Value base = b.create<arith::MulIOp>(
      loc,
      b.create<arith::AddIOp>(
          loc, b.create<arith::MulIOp>(loc, j, cIdx(rowLanes)), lane),
      cIdx(vecW));
  FailureOr<SmallVector<Value>> next = fn(base, loop.getRegionIterArgs());
  if (failed(next))
    return failure();
  if (!init.empty())
    b.create<scf::YieldOp>(loc, *next);
  return SmallVector<Value>(loop.getResults());
}

SmallVector<Value> Emitter::laneAllReduce(
    ValueRange vals,
    function_ref<SmallVector<Value>(ValueRange, ValueRange)> comb) {
  SmallVector<Value> cur(vals);
  // Lanes of a row are rowLanes consecutive threads of one warp, starting
  // at a multiple of rowLanes: xor offsets below rowLanes stay in the row.
  // A wide row (rowLanes > 32: the whole block) combines within each warp
  // first.
  for (int64_t off = std::min<int64_t>(rowLanes, 32) / 2; off >= 1; off /= 2) {
    SmallVector<Value> other;
    for (Value v : cur)
      other.push_back(b.create<gpu::ShuffleOp>(loc, v, off, /*width=*/32,
                                               gpu::ShuffleMode::XOR)
                          .getShuffleResult());
    cur = comb(cur, other);
  }
  if (rowLanes <= 32)
    return cur;
  // Then across the block's warps through shared memory (rowSmem, warps x
  // kRowSmemVals): lane 0 of each warp leaves its values, every thread
  // combines the warps' values in warp order (the same result in every
  // lane); the second barrier lets the next reduction reuse the buffer.
  // Callers stay in uniform control flow (every thread of the block).
  int64_t warps = rowLanes / 32;
  Value warp = b.create<arith::DivUIOp>(loc, lane, cIdx(32));
  Value isLane0 = b.create<arith::CmpIOp>(
      loc, arith::CmpIPredicate::eq,
      b.create<arith::RemUIOp>(loc, lane, cIdx(32)), cIdx(0));
  SmallVector<Value> out;
  for (size_t g0 = 0; g0 < cur.size(); g0 += kRowSmemVals) {
    size_t n = std::min<size_t>(kRowSmemVals, cur.size() - g0);
    {
      auto first = b.create<scf::IfOp>(loc, isLane0, false);
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(&first.getThenRegion().front());
      for (size_t i = 0; i < n; ++i)
        b.create<memref::StoreOp>(loc, cur[g0 + i], rowSmem,
                                  ValueRange{warp, cIdx(i)});
    }
    b.create<gpu::BarrierOp>(loc);
    SmallVector<Value> acc;
    for (int64_t w = 0; w < warps; ++w) {
      SmallVector<Value> vw;
      for (size_t i = 0; i < n; ++i)
        vw.push_back(b.create<memref::LoadOp>(loc, rowSmem,
                                              ValueRange{cIdx(w), cIdx(i)}));
      acc = w == 0 ? vw : comb(acc, vw);
    }
    b.create<gpu::BarrierOp>(loc);
    out.append(acc);
  }
  return out;
}

LogicalResult Emitter::emitChunkStores(Value r, Value base) {
  for (int64_t k = 0; k < vecW; ++k)
    if (failed(emitStores(r, chunkCol(base, k))))
      return failure();
  return checkStoresFlushed();
}

LogicalResult Emitter::emitRowVectorStores(Value r) {
  FailureOr<SmallVector<Value>> done =
      forEachLaneChunk({}, [&](Value base, ValueRange) {
        if (failed(emitChunkStores(r, base)))
          return FailureOr<SmallVector<Value>>(failure());
        return FailureOr<SmallVector<Value>>(SmallVector<Value>{});
      });
  return failure(failed(done));
}

FailureOr<Value>
Emitter::sumCols(int64_t cols, Value init,
                 function_ref<FailureOr<Value>(Value acc, Value c)> fn,
                 Combine kind) {
  auto combine = [&](Value x, Value y) -> Value {
    if (kind == Combine::Add)
      return b.create<arith::AddFOp>(loc, x, y);
    return b.create<arith::MaximumFOp>(loc, x, y);
  };
  if (rowLanes && cols == rowCols) {
    llvm::DenseMap<Value, Value> saved = memo;
    FailureOr<SmallVector<Value>> part =
        forEachLaneChunk({init}, [&](Value base, ValueRange acc) {
          Value a = acc[0];
          for (int64_t k = 0; k < vecW; ++k) {
            FailureOr<Value> next = fn(a, chunkCol(base, k));
            if (failed(next))
              return FailureOr<SmallVector<Value>>(failure());
            a = *next;
          }
          return FailureOr<SmallVector<Value>>(SmallVector<Value>{a});
        });
    memo = saved;
    if (failed(part))
      return failure();
    return laneAllReduce(*part, [&](ValueRange x, ValueRange y) {
      return SmallVector<Value>{combine(x[0], y[0])};
    })[0];
  }
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
  bool lanes = rowLanes > 1;
  auto loop =
      b.create<scf::ForOp>(loc, lanes ? lane : cIdx(0), rows,
                           cIdx(lanes ? rowLanes : 1), ValueRange{cF32(0.0)});
  {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(loop.getBody());
    FailureOr<Value> t = term(loop.getInductionVar());
    memo = saved;
    if (failed(t))
      return failure();
    b.create<scf::YieldOp>(loc, ValueRange{b.create<arith::AddFOp>(
                                    loc, loop.getRegionIterArgs()[0], *t)});
  }
  if (!lanes)
    return loop.getResult(0);
  return laneAllReduce(loop.getResults(), [&](ValueRange x, ValueRange y) {
    return SmallVector<Value>{b.create<arith::AddFOp>(loc, x[0], y[0])};
  })[0];
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
  FailureOr<Value> mx = sumCols(
      cols, cF32(-std::numeric_limits<double>::infinity()),
      [&](Value acc, Value c) {
        FailureOr<Value> x = emit(logits, {r, c});
        if (failed(x))
          return x;
        return FailureOr<Value>(
            b.create<arith::MaximumFOp>(loc, acc, *x).getResult());
      },
      Combine::Max);
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
  Value ignoreC = b.create<arith::ConstantOp>(loc, b.getI32IntegerAttr(ignore));
  Value mem = memOf(targets);
  auto mt = mem ? cast<MemRefType>(mem.getType()) : MemRefType();
  if (rowLanes > 1 && mt && mt.hasStaticShape() && mt.getRank() == 1 &&
      mt.getDimSize(0) % 4 == 0 && mt.getElementType().isInteger(32)) {
    // sm_90a row lanes: lane l counts the 4-target chunks l, l + L, ... by
    // 16-byte loads (targets past nb*nt count 0), then the lanes add up.
    Value rows = b.create<arith::MulIOp>(loc, nb, nt);
    auto loop =
        b.create<scf::ForOp>(loc, b.create<arith::MulIOp>(loc, lane, cIdx(4)),
                             rows, cIdx(4 * rowLanes), ValueRange{cF32(0.0)});
    {
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(loop.getBody());
      Value i = loop.getInductionVar();
      Value v = b.create<vector::LoadOp>(
          loc, VectorType::get({4}, b.getI32Type()), mem, ValueRange{i},
          /*nontemporal=*/false, llvm::Align(16));
      Value acc = loop.getRegionIterArgs()[0];
      for (int64_t k = 0; k < 4; ++k) {
        Value live = b.create<arith::AndIOp>(
            loc,
            b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::ult,
                                    b.create<arith::AddIOp>(loc, i, cIdx(k)),
                                    rows),
            b.create<arith::CmpIOp>(
                loc, arith::CmpIPredicate::ne,
                b.create<vector::ExtractOp>(loc, v, ArrayRef<int64_t>{k}),
                ignoreC));
        acc = b.create<arith::AddFOp>(
            loc, acc,
            b.create<arith::SelectOp>(loc, live, cF32(1.0), cF32(0.0)));
      }
      b.create<scf::YieldOp>(loc, acc);
    }
    return laneAllReduce(loop.getResults(), [&](ValueRange x, ValueRange y) {
      return SmallVector<Value>{b.create<arith::AddFOp>(loc, x[0], y[0])};
    })[0];
  }
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
/// Every element of the row is read before it is written, so f32 dlogits
/// may share the logits buffer. A bf16 step's group also holds dlogits'
/// conversion to bf16: the kernel stores the rounded values instead (into a
/// buffer of its own).
LogicalResult Emitter::emitCrossEntropyRows(CrossEntropyRowsOp op, Value r) {
  Value termsOut, dlOut;
  auto yield = cast<YieldOp>(fusion.getBody().front().getTerminator());
  for (auto [i, y] : llvm::enumerate(yield.getValues())) {
    auto cv = y.getDefiningOp<ConvertOp>();
    if (y == op.getTerms())
      termsOut = outputMem[i];
    else if (y == op.getDlogits() || (cv && cv.getX() == op.getDlogits())) {
      if (dlOut)
        return op.emitOpError("dlogits stored in two types by one kernel");
      dlOut = outputMem[i]; // stores round to a bf16 buffer's type
    }
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
  bool lanes = rowLanes && cols == rowCols;
  Value mRow, lRow;
  if (lanes) {
    // This lane's chunks, then the lanes' (max, normalizer) pairs combined.
    llvm::DenseMap<Value, Value> saved = memo;
    FailureOr<SmallVector<Value>> part = forEachLaneChunk(
        ValueRange{cF32(-std::numeric_limits<double>::infinity()), cF32(0.0)},
        [&](Value base, ValueRange acc) -> FailureOr<SmallVector<Value>> {
          SmallVector<Value> ml(acc);
          for (int64_t k = 0; k < vecW; ++k) {
            FailureOr<Value> x = emit(op.getLogits(), {r, chunkCol(base, k)});
            if (failed(x))
              return failure();
            ml = onlineSoftmaxStep(ml, *x);
          }
          return ml;
        });
    memo = saved;
    if (failed(part))
      return failure();
    SmallVector<Value> ml = laneAllReduce(*part, [&](ValueRange x,
                                                     ValueRange y) {
      Value m = b.create<arith::MaximumFOp>(loc, x[0], y[0]);
      auto scaled = [&](Value mi, Value li) {
        return b.create<arith::MulFOp>(
            loc, li,
            b.create<math::ExpOp>(loc, b.create<arith::SubFOp>(loc, mi, m)));
      };
      return SmallVector<Value>{
          m,
          b.create<arith::AddFOp>(loc, scaled(x[0], x[1]), scaled(y[0], y[1]))};
    });
    mRow = ml[0];
    lRow = ml[1];
  } else {
    auto stats = b.create<scf::ForOp>(
        loc, cIdx(0), cIdx(cols), cIdx(1),
        ValueRange{cF32(-std::numeric_limits<double>::infinity()), cF32(0.0)});
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(stats.getBody());
    llvm::DenseMap<Value, Value> saved = memo;
    FailureOr<Value> x = emit(op.getLogits(), {r, stats.getInductionVar()});
    memo = saved;
    if (failed(x))
      return failure();
    b.create<scf::YieldOp>(loc,
                           onlineSoftmaxStep(stats.getRegionIterArgs(), *x));
    b.setInsertionPointAfter(stats);
    mRow = stats.getResult(0);
    lRow = stats.getResult(1);
  }
  Value lse =
      b.create<arith::AddFOp>(loc, mRow, b.create<math::LogOp>(loc, lRow));
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
    Value v = b.create<arith::SelectOp>(loc, valid, term, cF32(0.0));
    if (lanes) {
      // One lane of the row stores the row's term.
      Value first =
          b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::eq, lane, cIdx(0));
      if (storeGuard)
        first = b.create<arith::AndIOp>(loc, first, storeGuard);
      auto guard = b.create<scf::IfOp>(loc, first, false);
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(&guard.getThenRegion().front());
      store(v, termsOut, ValueRange{r});
    } else {
      store(v, termsOut, ValueRange{r});
    }
  }
  if (!dlOut)
    return success();
  Value scale = b.create<arith::SelectOp>(
      loc, hasAny, b.create<arith::DivFOp>(loc, *dloss, *count), cF32(0.0));
  auto dlogit = [&](Value c) -> LogicalResult {
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
  };
  if (lanes) {
    FailureOr<SmallVector<Value>> done =
        forEachLaneChunk({}, [&](Value base, ValueRange) {
          for (int64_t k = 0; k < vecW; ++k)
            if (failed(dlogit(chunkCol(base, k))))
              return FailureOr<SmallVector<Value>>(failure());
          if (failed(checkStoresFlushed()))
            return FailureOr<SmallVector<Value>>(failure());
          return FailureOr<SmallVector<Value>>(SmallVector<Value>{});
        });
    return failure(failed(done));
  }
  auto cl = b.create<scf::ForOp>(loc, cIdx(0), cIdx(cols), cIdx(1));
  OpBuilder::InsertionGuard g(b);
  b.setInsertionPointToStart(cl.getBody());
  return dlogit(cl.getInductionVar());
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
    Value seqIdx = seqOfRow(idx[0]);
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
    // A tied embedding's other gradient, added to the finished sum.
    if (auto o = dyn_cast<EmbeddingGradOp>(op); o && o.getAddend()) {
      FailureOr<Value> a = emit(o.getAddend(), {p, q});
      if (failed(a))
        return failure();
      acc = b.create<arith::AddFOp>(loc, *a, *acc).getResult();
    }
    if (cast<MemRefType>(mem.getType()).getRank() == 1)
      store(*acc, mem, ValueRange{p});
    else
      store(*acc, mem, ValueRange{p, q});
  }
  return success();
}

/// sm_90a: the weight (and, for layer_norm, bias) gradients of a norm,
/// dw[c] = sum_r dy[r, c] xhat[r, c] and db[c] = sum_r dy[r, c], by a block
/// whose threads each own one chunk of vecW columns (`chunk`, clamped into
/// the row; the stores are guarded). The rows go by tiles of one row per
/// warp: each warp computes its row's statistics (mean, rstd) with its
/// `lanes` lanes and shuffles, lane 0 leaves them in shared memory (`smem`,
/// [warps, 2]), and after a barrier every thread adds the tile's rows of
/// its chunk. A row's statistics are thus computed once per block instead
/// of once per column, and every access is a 16-byte vector.
LogicalResult Emitter::emitNormParamGrad(Operation *normGrad, Value chunk,
                                         Value tid, int64_t warps,
                                         int64_t lanes, Value smem,
                                         Value tileBegin, Value tileEnd,
                                         Value scratch, Value split) {
  auto rms = dyn_cast<RmsNormGradOp>(normGrad);
  auto ln = dyn_cast<LayerNormGradOp>(normGrad);
  Value x = rms ? rms.getX() : ln.getX();
  Value dy = rms ? rms.getDy() : ln.getDy();
  double eps = (rms ? rms.getEps() : ln.getEps()).convertToDouble();
  int64_t cols = cast<RankedTensorType>(x.getType()).getDimSize(1);
  Value n = cF32(double(cols));
  Value rows = b.create<arith::MulIOp>(loc, nb, nt);
  Value lastRow = b.create<arith::SubIOp>(loc, rows, cIdx(1));
  Value warp = b.create<arith::DivUIOp>(loc, tid, cIdx(32));
  Value laneInRow = b.create<arith::RemUIOp>(
      loc, b.create<arith::RemUIOp>(loc, tid, cIdx(32)), cIdx(lanes));
  Value isLane0 = b.create<arith::CmpIOp>(
      loc, arith::CmpIPredicate::eq,
      b.create<arith::RemUIOp>(loc, tid, cIdx(32)), cIdx(0));
  Value base = b.create<arith::MulIOp>(loc, chunk, cIdx(vecW));
  // The yields: dw (result 1) and db (result 2, layer_norm), in order.
  auto yield = cast<YieldOp>(fusion.getBody().front().getTerminator());
  SmallVector<unsigned> which;
  for (Value v : yield.getValues())
    which.push_back(cast<OpResult>(v).getResultNumber());
  SmallVector<Value> init(which.size() * vecW, cF32(0.0));
  Value firstRow = cIdx(0), endRow = rows;
  if (scratch) {
    firstRow = b.create<arith::MulIOp>(loc, tileBegin, cIdx(warps));
    endRow = b.create<arith::MulIOp>(loc, tileEnd, cIdx(warps));
  }
  auto tiles = b.create<scf::ForOp>(loc, firstRow, endRow, cIdx(warps), init);
  {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(tiles.getBody());
    Value r0 = tiles.getInductionVar();
    // This warp's row of the tile (clamped: every lane takes part in the
    // shuffles and barriers; a row past the end is not added below).
    Value r = b.create<arith::MinUIOp>(
        loc, b.create<arith::AddIOp>(loc, r0, warp), lastRow);
    setupRowVector(cols, lanes, laneInRow, /*maxUnrolled=*/64);
    auto sumOf = [&](function_ref<Value(Value xv)> term) {
      return sumCols(cols, cF32(0.0), [&](Value acc, Value c) {
        FailureOr<Value> xv = emit(x, {r, c});
        if (failed(xv))
          return xv;
        return FailureOr<Value>(
            b.create<arith::AddFOp>(loc, acc, term(*xv)).getResult());
      });
    };
    Value mean = cF32(0.0), var;
    if (ln) {
      FailureOr<Value> sum = sumOf([](Value xv) { return xv; });
      if (failed(sum))
        return failure();
      mean = b.create<arith::DivFOp>(loc, *sum, n);
    }
    FailureOr<Value> sq = sumOf([&](Value xv) {
      Value d = ln ? b.create<arith::SubFOp>(loc, xv, mean).getResult() : xv;
      return b.create<arith::MulFOp>(loc, d, d).getResult();
    });
    if (failed(sq))
      return failure();
    var = b.create<arith::AddFOp>(loc, b.create<arith::DivFOp>(loc, *sq, n),
                                  cF32(eps));
    Value rstd = b.create<arith::DivFOp>(loc, cF32(1.0),
                                         b.create<math::SqrtOp>(loc, var));
    {
      auto first = b.create<scf::IfOp>(loc, isLane0, false);
      OpBuilder::InsertionGuard g2(b);
      b.setInsertionPointToStart(&first.getThenRegion().front());
      b.create<memref::StoreOp>(loc, mean, smem, ValueRange{warp, cIdx(0)});
      b.create<memref::StoreOp>(loc, rstd, smem, ValueRange{warp, cIdx(1)});
    }
    b.create<gpu::BarrierOp>(loc);
    // The tile's rows of this thread's chunk.
    SmallVector<Value> acc(tiles.getRegionIterArgs());
    rowLanes = 0; // plain loads by chunk below
    for (int64_t w = 0; w < warps; ++w) {
      Value rw = b.create<arith::AddIOp>(loc, r0, cIdx(w));
      Value live =
          b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::ult, rw, rows);
      Value rc = b.create<arith::MinUIOp>(loc, rw, lastRow);
      Value mw =
          b.create<memref::LoadOp>(loc, smem, ValueRange{cIdx(w), cIdx(0)});
      Value sw =
          b.create<memref::LoadOp>(loc, smem, ValueRange{cIdx(w), cIdx(1)});
      for (int64_t k = 0; k < vecW; ++k) {
        Value c = chunkCol(base, k);
        FailureOr<Value> xv = emit(x, {rc, c});
        FailureOr<Value> dyv = emit(dy, {rc, c});
        if (failed(xv) || failed(dyv))
          return failure();
        Value xhat = b.create<arith::MulFOp>(
            loc, ln ? b.create<arith::SubFOp>(loc, *xv, mw).getResult() : *xv,
            sw);
        for (auto [i, res] : llvm::enumerate(which)) {
          Value term =
              res == 1 ? b.create<arith::MulFOp>(loc, *dyv, xhat).getResult()
                       : *dyv;
          term = b.create<arith::SelectOp>(loc, live, term, cF32(0.0));
          Value &a = acc[i * vecW + k];
          a = b.create<arith::AddFOp>(loc, a, term);
        }
      }
    }
    b.create<gpu::BarrierOp>(loc);
    b.create<scf::YieldOp>(loc, acc);
  }
  if (scratch) {
    // This split's sums of the thread's chunk, one f32 partial per column.
    auto guard = b.create<scf::IfOp>(loc, storeGuard, false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(&guard.getThenRegion().front());
    Value perSplit = cIdx(int64_t(which.size()) * cols);
    for (unsigned i = 0; i < which.size(); ++i) {
      Value at = b.create<arith::AddIOp>(
          loc,
          b.create<arith::AddIOp>(loc,
                                  b.create<arith::MulIOp>(loc, split, perSplit),
                                  cIdx(int64_t(i) * cols)),
          base);
      for (int64_t k = 0; k < vecW; k += 4) {
        Value v = b.create<vector::FromElementsOp>(
            loc, VectorType::get({4}, b.getF32Type()),
            ValueRange{tiles.getResult(i * vecW + k),
                       tiles.getResult(i * vecW + k + 1),
                       tiles.getResult(i * vecW + k + 2),
                       tiles.getResult(i * vecW + k + 3)});
        b.create<vector::StoreOp>(
            loc, v, scratch,
            ValueRange{b.create<arith::AddIOp>(loc, at, cIdx(k))},
            /*nontemporal=*/false, llvm::Align(16));
      }
    }
    return success();
  }
  for (auto [i, mem] : llvm::enumerate(outputMem))
    for (int64_t k = 0; k < vecW; ++k)
      store(tiles.getResult(i * vecW + k), mem, ValueRange{chunkCol(base, k)});
  return checkStoresFlushed();
}

/// sm_90a: row_sum (the loss: the sum of the rows' terms) by one warp: lane
/// l adds the 4-row chunks l, l + 32, ... of the active rows (16-byte loads;
/// the buffer holds whole chunks, the rows past nb*nt count 0), then the
/// lanes' sums are combined by shuffles and lane 0 stores.
LogicalResult Emitter::emitRowSumWarp(RowSumOp op, Value lane) {
  Value mem = memOf(op.getX());
  if (!mem)
    return op.emitOpError("operand must be a kernel input");
  Type f32 = b.getF32Type();
  auto vt = VectorType::get({4}, f32);
  Value rows = b.create<arith::MulIOp>(loc, nb, nt);
  auto loop =
      b.create<scf::ForOp>(loc, b.create<arith::MulIOp>(loc, lane, cIdx(4)),
                           rows, cIdx(4 * 32), ValueRange{cF32(0.0)});
  {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(loop.getBody());
    Value i = loop.getInductionVar();
    Value v = b.create<vector::LoadOp>(loc, vt, mem, ValueRange{i},
                                       /*nontemporal=*/false, llvm::Align(16));
    Value acc = loop.getRegionIterArgs()[0];
    for (int64_t k = 0; k < 4; ++k) {
      Value live = b.create<arith::CmpIOp>(
          loc, arith::CmpIPredicate::ult,
          b.create<arith::AddIOp>(loc, i, cIdx(k)), rows);
      Value x = b.create<vector::ExtractOp>(loc, v, ArrayRef<int64_t>{k});
      acc = b.create<arith::AddFOp>(
          loc, acc, b.create<arith::SelectOp>(loc, live, x, cF32(0.0)));
    }
    b.create<scf::YieldOp>(loc, acc);
  }
  Value sum = loop.getResult(0);
  for (int64_t off = 16; off >= 1; off /= 2)
    sum = b.create<arith::AddFOp>(
        loc, sum,
        b.create<gpu::ShuffleOp>(loc, sum, off, 32, gpu::ShuffleMode::XOR)
            .getShuffleResult());
  Value first =
      b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::eq, lane, cIdx(0));
  auto guard = b.create<scf::IfOp>(loc, first, false);
  OpBuilder::InsertionGuard g(b);
  b.setInsertionPointToStart(&guard.getThenRegion().front());
  store(sum, outputMem[0], ValueRange{});
  return success();
}

/// sm_90a: embedding_grad, dtable[v, c] = sum over the active rows r with
/// ids[r] == v of dy[r, c], by a thread per chunk of vecW columns of a
/// vocabulary row (`flat`: v * rowChunks + chunk; threads past the last row
/// work on it and store nothing). The rows go by tiles of 32: each lane
/// loads one id, a warp ballot per vocabulary row of the warp (rowChunks a
/// multiple of 32: one; else 32 / rowChunks) gives the tile's matching
/// rows, and each thread adds dy's chunk of those rows in increasing row
/// order (the cpu's order, so the same sums). ids are read 32 at a time per
/// warp instead of once per row per output element.
LogicalResult Emitter::emitEmbeddingGradWarp(EmbeddingGradOp op, Value flat,
                                             int64_t rowChunks, int64_t vocab) {
  Value ids = memOf(op.getIds());
  if (!ids)
    return op.emitOpError("ids must be a kernel input");
  Type i32 = b.getI32Type();
  auto cI32 = [&](int64_t x) {
    return b.create<arith::ConstantOp>(loc, b.getI32IntegerAttr(x)).getResult();
  };
  Value lastV = cIdx(vocab - 1);
  Value v = b.create<arith::MinUIOp>(
      loc, b.create<arith::DivUIOp>(loc, flat, cIdx(rowChunks)), lastV);
  Value base = b.create<arith::MulIOp>(
      loc, b.create<arith::RemUIOp>(loc, flat, cIdx(rowChunks)), cIdx(vecW));
  Value laneId = b.create<arith::RemUIOp>(loc, flat, cIdx(32));
  Value warpRow0 = b.create<arith::DivUIOp>(
      loc, b.create<arith::SubIOp>(loc, flat, laneId), cIdx(rowChunks));
  int64_t segs = rowChunks >= 32 ? 1 : 32 / rowChunks;
  Value rows = b.create<arith::MulIOp>(loc, nb, nt);
  Value lastRow = b.create<arith::SubIOp>(loc, rows, cIdx(1));
  SmallVector<Value> init(vecW, cF32(0.0));
  auto tiles = b.create<scf::ForOp>(loc, cIdx(0), rows, cIdx(32), init);
  {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(tiles.getBody());
    Value r0 = tiles.getInductionVar();
    Value r = b.create<arith::AddIOp>(loc, r0, laneId);
    Value live =
        b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::ult, r, rows);
    Value id = b.create<memref::LoadOp>(
        loc, ids, ValueRange{b.create<arith::MinUIOp>(loc, r, lastRow)});
    id = b.create<arith::SelectOp>(loc, live, id, cI32(-1));
    // The tile's rows whose id is this thread's vocabulary row.
    Value mask;
    for (int64_t sgm = 0; sgm < segs; ++sgm) {
      Value vs = b.create<arith::IndexCastOp>(
          loc, i32,
          b.create<arith::MinUIOp>(
              loc, b.create<arith::AddIOp>(loc, warpRow0, cIdx(sgm)), lastV));
      Value hit =
          b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::eq, id, vs);
      Value ballot = b.create<NVVM::VoteSyncOp>(
          loc, i32, cI32(-1), hit,
          NVVM::VoteSyncKindAttr::get(b.getContext(),
                                      NVVM::VoteSyncKind::ballot));
      if (sgm == 0) {
        mask = ballot;
        continue;
      }
      Value mine = b.create<arith::CmpIOp>(
          loc, arith::CmpIPredicate::eq,
          b.create<arith::DivUIOp>(loc, laneId, cIdx(rowChunks)), cIdx(sgm));
      mask = b.create<arith::SelectOp>(loc, mine, ballot, mask);
    }
    // Its set bits, lowest first.
    Value count = b.create<arith::IndexCastOp>(
        loc, b.getIndexType(), b.create<math::CtPopOp>(loc, mask));
    SmallVector<Value> inner(tiles.getRegionIterArgs());
    inner.push_back(mask);
    auto bits = b.create<scf::ForOp>(loc, cIdx(0), count, cIdx(1), inner);
    {
      OpBuilder::InsertionGuard g2(b);
      b.setInsertionPointToStart(bits.getBody());
      Value m = bits.getRegionIterArgs().back();
      Value row = b.create<arith::AddIOp>(
          loc, r0,
          b.create<arith::IndexCastOp>(
              loc, b.getIndexType(),
              b.create<math::CountTrailingZerosOp>(loc, m)));
      SmallVector<Value> acc;
      for (int64_t k = 0; k < vecW; ++k) {
        FailureOr<Value> d = emit(op.getDy(), {row, chunkCol(base, k)});
        if (failed(d))
          return failure();
        acc.push_back(
            b.create<arith::AddFOp>(loc, bits.getRegionIterArgs()[k], *d));
      }
      acc.push_back(b.create<arith::AndIOp>(
          loc, m, b.create<arith::SubIOp>(loc, m, cI32(1))));
      b.create<scf::YieldOp>(loc, acc);
    }
    b.create<scf::YieldOp>(loc, bits.getResults().drop_back());
  }
  for (int64_t k = 0; k < vecW; ++k) {
    Value sum = tiles.getResult(k);
    // A tied embedding's other gradient, added to the finished sum.
    if (Value addend = op.getAddend()) {
      FailureOr<Value> a = emit(addend, {v, chunkCol(base, k)});
      if (failed(a))
        return failure();
      sum = b.create<arith::AddFOp>(loc, *a, sum);
    }
    store(sum, outputMem[0], ValueRange{v, chunkCol(base, k)});
  }
  return checkStoresFlushed();
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
  Value lr, bc1, bc2, scale;
  auto hyperTy = cast<MemRefType>(hyper.getType());
  if (vecW && hyperTy.hasStaticShape() && hyperTy.getRank() == 1 &&
      hyperTy.getDimSize(0) >= 4 && hyperTy.getElementType().isF32()) {
    // sm_90a: the four values by one 16-byte load (buffers are 16-byte
    // aligned), once per thread.
    if (!hyperVec || !visibleHere(hyperVec))
      hyperVec = b.create<vector::LoadOp>(
          loc, VectorType::get({4}, b.getF32Type()), hyper, ValueRange{cIdx(0)},
          /*nontemporal=*/false, llvm::Align(16));
    auto hyperAt = [&](int64_t i) {
      return b.create<vector::ExtractOp>(loc, hyperVec, ArrayRef<int64_t>{i})
          .getResult();
    };
    lr = hyperAt(0), bc1 = hyperAt(1), bc2 = hyperAt(2), scale = hyperAt(3);
  } else {
    lr = load(hyper, {cIdx(0)}), bc1 = load(hyper, {cIdx(1)}),
    bc2 = load(hyper, {cIdx(2)}), scale = load(hyper, {cIdx(3)});
  }
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

/// (query, key) pairs an attention (or its gradient) computes, over all
/// query heads: a causal row sees on average half the context, a sliding
/// window at most the window.
template <typename AttnOp> static double attentionPairs(AttnOp a) {
  auto k = cast<RankedTensorType>(a.getK().getType());
  double ctx = a.getCausal() ? (k.getDimSize(1) + 1) / 2.0 : k.getDimSize(1);
  if (a.getSlidingWindow() > 0)
    ctx = std::min<double>(ctx, a.getSlidingWindow());
  double rows = cast<RankedTensorType>(a.getQ().getType()).getDimSize(0);
  return rows * a.getNumHeads() * ctx;
}

/// FLOPs of the group for the whole compiled shape (every row active; a
/// causal attention row sees on average half the context). Counted: linear
/// and its weight gradient, attention and its gradient, norms and pointwise
/// ops; not yet counted (0): the norm gradients, the loss and its gradient,
/// the optimizer (all memory-bound).
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
      flops += 4.0 * attentionPairs(a) * a.getHeadDim();
    } else if (auto g = dyn_cast<AttentionGradOp>(op)) {
      // Per visible (query, key) pair and head: the recomputed scores
      // q.k and dP = dout.v, then one head_dim product for each gradient
      // the group uses (dq = dS k, dk = dS^T q, dv = P^T dout): 2 * head_dim
      // FLOPs each. The fuser splits dq from dk / dv
      // (docs/hopper-attention.md).
      int products = 2;
      for (Value r : g->getResults())
        products += r.use_empty() ? 0 : 1;
      flops += 2.0 * products * attentionPairs(g) * g.getHeadDim();
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

//===----------------------------------------------------------------------===//
// sm_90a global_norm (docs/kernels.md "Reductions"): two kernels over
// a scratch buffer of one f64 partial sum per block. The first (the fusion's
// kernel) runs `blocks` blocks; each thread adds the squares of its fixed
// share of every gradient (16-byte loads, tensors in order, f64 sums), the
// block combines its threads' sums in a fixed order (shuffle tree, then the
// warps in order) and stores its partial. The second (`<name>_final`, one
// block) adds the partials in the same fixed way and stores
// grad_scale * sqrt(sum). No atomics: the same inputs give the same bits.
//===----------------------------------------------------------------------===//

constexpr int64_t kNormMaxBlocks = 1024;
/// Blocks a split norm weight gradient aims at (4 per SM of an H100/H200).
constexpr int64_t kNormSplitBlocks = 4 * 132;

/// `v` (f64) from lane (lane ^ off) of the warp: two 32-bit shuffles.
Value shuffleXorF64(OpBuilder &b, Location loc, Value v, int32_t off) {
  Type i64 = b.getI64Type(), i32 = b.getI32Type();
  Value c32 = b.create<arith::ConstantOp>(loc, b.getI64IntegerAttr(32));
  Value bits = b.create<arith::BitcastOp>(loc, i64, v);
  Value lo = b.create<arith::TruncIOp>(loc, i32, bits);
  Value hi = b.create<arith::TruncIOp>(
      loc, i32, b.create<arith::ShRUIOp>(loc, bits, c32));
  auto shfl = [&](Value x) {
    return b.create<gpu::ShuffleOp>(loc, x, off, 32, gpu::ShuffleMode::XOR)
        .getShuffleResult();
  };
  Value lo2 = b.create<arith::ExtUIOp>(loc, i64, shfl(lo));
  Value hi2 = b.create<arith::ExtUIOp>(loc, i64, shfl(hi));
  Value r =
      b.create<arith::OrIOp>(loc, lo2, b.create<arith::ShLIOp>(loc, hi2, c32));
  return b.create<arith::BitcastOp>(loc, b.getF64Type(), r);
}

/// The sum of `v` (f64) over the block's `blockDim` threads, in a fixed
/// order: a butterfly in each warp, lane 0 of each warp to `smem` ([warps]
/// f64), a barrier, then every thread adds the warps' sums in warp order.
Value blockSumF64(OpBuilder &b, Location loc, Value v, Value tid,
                  int64_t blockDim, Value smem) {
  for (int32_t off = 16; off >= 1; off /= 2)
    v = b.create<arith::AddFOp>(loc, v, shuffleXorF64(b, loc, v, off));
  auto cIdx = [&](int64_t x) {
    return b.create<arith::ConstantIndexOp>(loc, x).getResult();
  };
  Value warp = b.create<arith::DivUIOp>(loc, tid, cIdx(32));
  Value lane0 = b.create<arith::CmpIOp>(
      loc, arith::CmpIPredicate::eq,
      b.create<arith::RemUIOp>(loc, tid, cIdx(32)), cIdx(0));
  {
    auto first = b.create<scf::IfOp>(loc, lane0, false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(&first.getThenRegion().front());
    b.create<memref::StoreOp>(loc, v, smem, ValueRange{warp});
  }
  b.create<gpu::BarrierOp>(loc);
  Value sum = b.create<memref::LoadOp>(loc, smem, ValueRange{cIdx(0)});
  for (int64_t w = 1; w < blockDim / 32; ++w)
    sum = b.create<arith::AddFOp>(
        loc, sum, b.create<memref::LoadOp>(loc, smem, ValueRange{cIdx(w)}));
  return sum;
}

/// Emits both global_norm kernels (see above) and records on `fusion` the
/// scratch buffer and the second launch for the memory plan.
/// Records on kernel `k` what the artifact and the report read from it
/// (docs/artifact-format.md): the fusion's kind and ops, `cols` threads per
/// row over `fixedRows` rows (0: the active tokens), `numArgs` buffers, the
/// FLOP and byte estimates and, when not 0, the block size.
void setKernelAttrs(Operation *k, FusionOp fusion, int64_t cols,
                    int64_t fixedRows, int64_t numArgs, double flops,
                    double bytes, int64_t blockDim) {
  Builder ob(k->getContext());
  SmallVector<Attribute> fused;
  for (Operation &op : fusion.getBody().front().without_terminator())
    fused.push_back(ob.getStringAttr(op.getName().getStringRef()));
  k->setAttr(kattrs::kKind, fusion.getKindAttr());
  k->setAttr(kattrs::kFusedOps, ob.getArrayAttr(fused));
  k->setAttr(kattrs::kCols, ob.getI64IntegerAttr(cols));
  if (fixedRows)
    k->setAttr(kattrs::kFixedRows, ob.getI64IntegerAttr(fixedRows));
  k->setAttr(kattrs::kNumArgs, ob.getI64IntegerAttr(numArgs));
  k->setAttr(kattrs::kFlops, ob.getF64FloatAttr(flops));
  k->setAttr(kattrs::kBytes, ob.getF64FloatAttr(bytes));
  if (blockDim)
    k->setAttr(kattrs::kBlockDim, ob.getI64IntegerAttr(blockDim));
}

/// A SIMT gpu.func `kname` of type `fnType` for `fusion`, with the launch
/// attributes the artifact records (a 1-D grid of ceil(fixedRows * cols /
/// blockDim) blocks of blockDim threads; numArgs buffers).
gpu::GPUFuncOp createSimtKernel(OpBuilder &ob, FusionOp fusion, StringRef kname,
                                FunctionType fnType, int64_t cols,
                                int64_t fixedRows, int64_t numArgs,
                                double flops, double bytes, int64_t blockDim) {
  auto fn = ob.create<gpu::GPUFuncOp>(fusion.getLoc(), kname, fnType);
  fn->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), ob.getUnitAttr());
  setKernelAttrs(fn, fusion, cols, fixedRows, numArgs, flops, bytes, blockDim);
  return fn;
}

/// The second kernel of a fusion run as two (partial sums in a scratch
/// buffer of `scratchBytes`, then their total): a gpu.module of its own
/// named `finalName` right after the one `builder` inserts into, and the
/// fusion attributes the memory plan reads (colossus.scratch_bytes,
/// colossus.then_kernel). Returns a builder at the start of the new
/// module's body.
FailureOr<OpBuilder> beginThenKernel(FusionOp fusion, OpBuilder &builder,
                                     StringRef finalName,
                                     int64_t scratchBytes) {
  Operation *gm = builder.getInsertionBlock()->getParentOp();
  if (!isa<gpu::GPUModuleOp>(gm))
    return fusion.emitOpError("internal error: sm_90a kernels live in a "
                              "gpu.module");
  OpBuilder mb(fusion.getContext());
  mb.setInsertionPointAfter(gm);
  auto gm2 = mb.create<gpu::GPUModuleOp>(fusion.getLoc(), finalName);
  fusion->setAttr(kattrs::kScratchBytes,
                  builder.getI64IntegerAttr(scratchBytes));
  fusion->setAttr(kattrs::kThenKernel, builder.getStringAttr(finalName));
  return OpBuilder::atBlockBegin(gm2.getBody());
}

LogicalResult emitGlobalNormGpu(FusionOp fusion, GlobalNormOp gn,
                                StringRef name, int64_t blockDim,
                                OpBuilder &builder) {
  Location loc = fusion.getLoc();
  Block &body = fusion.getBody().front();
  MLIRContext *ctx = fusion.getContext();
  // The gradients: f32 kernel inputs of static shape.
  SmallVector<unsigned> tensorArgs;
  int64_t totalChunks = 0;
  for (Value t : gn.getTensors()) {
    auto arg = dyn_cast<BlockArgument>(t);
    auto tt = cast<RankedTensorType>(t.getType());
    if (!arg || !tt.hasStaticShape() || !tt.getElementType().isF32() ||
        tt.getRank() == 0)
      return fusion.emitOpError(
          "global_norm on sm_90a needs f32 kernel inputs of static shape");
    tensorArgs.push_back(arg.getArgNumber());
    totalChunks += (tt.getNumElements() + 3) / 4;
  }
  auto hyperArg = dyn_cast<BlockArgument>(gn.getHyper());
  if (!hyperArg)
    return gn.emitOpError("operands must be kernel inputs");
  // Enough blocks for every thread to have a chunk, at most kNormMaxBlocks
  // (a few waves of 132 SMs; the partials stay small).
  int64_t blocks = std::clamp<int64_t>((totalChunks + blockDim - 1) / blockDim,
                                       1, kNormMaxBlocks);
  int64_t threads = blocks * blockDim;

  Type f32 = builder.getF32Type(), f64 = builder.getF64Type();
  SmallVector<Type> argTypes;
  for (Type t : body.getArgumentTypes())
    argTypes.push_back(memrefFor(t));
  for (Type t : fusion.getResultTypes())
    argTypes.push_back(memrefFor(t));
  unsigned nIn = argTypes.size();
  argTypes.push_back(MemRefType::get({blocks}, f64)); // the partials
  Type i64 = builder.getI64Type();
  argTypes.append({i64, i64, i64});
  FunctionType fnType = builder.getFunctionType(argTypes, {});
  auto smemTy = MemRefType::get(
      {blockDim / 32}, f64, MemRefLayoutAttrInterface{},
      gpu::AddressSpaceAttr::get(ctx, gpu::AddressSpace::Workgroup));
  auto makeKernel = [&](OpBuilder &ob, StringRef kname, int64_t fixedRows,
                        double flops, double bytes) {
    return createSimtKernel(ob, fusion, kname, fnType, blockDim, fixedRows,
                            nIn + 1, flops, bytes, blockDim);
  };

  // Kernel 1: the blocks' partial sums.
  {
    gpu::GPUFuncOp fn = makeKernel(builder, name, blocks, 2.0 * 4 * totalChunks,
                                   estimateBytes(fusion) + 8 * blocks);
    Value smem = fn.addWorkgroupAttribution(smemTy, loc);
    Block *entry = &fn.getBody().front();
    OpBuilder b = OpBuilder::atBlockEnd(entry);
    auto cIdx = [&](int64_t x) {
      return b.create<arith::ConstantIndexOp>(loc, x).getResult();
    };
    Value tid = b.create<gpu::ThreadIdOp>(loc, gpu::Dimension::x);
    Value bid = b.create<gpu::BlockIdOp>(loc, gpu::Dimension::x);
    Value gid = b.create<arith::AddIOp>(
        loc, b.create<arith::MulIOp>(loc, bid, cIdx(blockDim)), tid);
    auto vt = VectorType::get({4}, f32);
    auto addSquares = [&](Value acc, Value v) {
      for (int64_t k = 0; k < 4; ++k) {
        Value e = b.create<vector::ExtractOp>(loc, v, ArrayRef<int64_t>{k});
        Value x = b.create<arith::ExtFOp>(loc, f64, e);
        acc = b.create<arith::AddFOp>(loc, acc,
                                      b.create<arith::MulFOp>(loc, x, x));
      }
      return acc;
    };
    Value acc = b.create<arith::ConstantOp>(loc, b.getF64FloatAttr(0.0));
    for (unsigned a : tensorArgs) {
      Value mem = entry->getArgument(a);
      auto mt = cast<MemRefType>(mem.getType());
      int64_t n = mt.getNumElements();
      if (mt.getRank() > 1) {
        SmallVector<ReassociationIndices> re(1);
        for (int64_t d = 0; d < mt.getRank(); ++d)
          re[0].push_back(d);
        mem = b.create<memref::CollapseShapeOp>(loc, mem, re);
      }
      int64_t chunks = n / 4;
      // Groups of 4 chunks a stride apart (4 loads in flight), then the
      // chunks left over, then the elements past the last whole chunk.
      int64_t groups = chunks / (4 * threads);
      if (groups > 0) {
        auto loop = b.create<scf::ForOp>(loc, cIdx(0), cIdx(groups), cIdx(1),
                                         ValueRange{acc});
        OpBuilder::InsertionGuard g(b);
        b.setInsertionPointToStart(loop.getBody());
        Value base = b.create<arith::AddIOp>(
            loc,
            b.create<arith::MulIOp>(loc, loop.getInductionVar(),
                                    cIdx(4 * threads)),
            gid);
        SmallVector<Value> vs;
        for (int64_t j = 0; j < 4; ++j) {
          Value chunk = b.create<arith::AddIOp>(loc, base, cIdx(j * threads));
          Value at = b.create<arith::MulIOp>(loc, chunk, cIdx(4));
          vs.push_back(b.create<vector::LoadOp>(loc, vt, mem, ValueRange{at},
                                                /*nontemporal=*/false,
                                                llvm::Align(16)));
        }
        Value s = loop.getRegionIterArgs()[0];
        for (Value v : vs)
          s = addSquares(s, v);
        b.create<scf::YieldOp>(loc, s);
        acc = loop.getResult(0);
      }
      if (groups * 4 * threads < chunks) {
        auto loop = b.create<scf::ForOp>(
            loc, b.create<arith::AddIOp>(loc, gid, cIdx(groups * 4 * threads)),
            cIdx(chunks), cIdx(threads), ValueRange{acc});
        OpBuilder::InsertionGuard g(b);
        b.setInsertionPointToStart(loop.getBody());
        Value at =
            b.create<arith::MulIOp>(loc, loop.getInductionVar(), cIdx(4));
        Value v =
            b.create<vector::LoadOp>(loc, vt, mem, ValueRange{at},
                                     /*nontemporal=*/false, llvm::Align(16));
        b.create<scf::YieldOp>(loc, addSquares(loop.getRegionIterArgs()[0], v));
        acc = loop.getResult(0);
      }
      if (chunks * 4 < n) {
        auto loop = b.create<scf::ForOp>(
            loc, b.create<arith::AddIOp>(loc, gid, cIdx(chunks * 4)), cIdx(n),
            cIdx(threads), ValueRange{acc});
        OpBuilder::InsertionGuard g(b);
        b.setInsertionPointToStart(loop.getBody());
        Value e = b.create<memref::LoadOp>(loc, mem,
                                           ValueRange{loop.getInductionVar()});
        Value x = b.create<arith::ExtFOp>(loc, f64, e);
        b.create<scf::YieldOp>(loc, ValueRange{b.create<arith::AddFOp>(
                                        loc, loop.getRegionIterArgs()[0],
                                        b.create<arith::MulFOp>(loc, x, x))});
        acc = loop.getResult(0);
      }
    }
    Value sum = blockSumF64(b, loc, acc, tid, blockDim, smem);
    Value first =
        b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::eq, tid, cIdx(0));
    auto guard = b.create<scf::IfOp>(loc, first, false);
    b.setInsertionPointToStart(&guard.getThenRegion().front());
    b.create<memref::StoreOp>(loc, sum, entry->getArgument(nIn),
                              ValueRange{bid});
    b.setInsertionPointToEnd(entry);
    b.create<gpu::ReturnOp>(loc);
  }

  // Kernel 2, in a gpu.module of its own next to the first: one block adds
  // the partials and stores the norm.
  std::string finalName = (name + "_final").str();
  {
    FailureOr<OpBuilder> kb =
        beginThenKernel(fusion, builder, finalName, 8 * blocks);
    if (failed(kb))
      return failure();
    gpu::GPUFuncOp fn =
        makeKernel(*kb, finalName, 1, blocks, 8.0 * blocks + 24);
    Value smem = fn.addWorkgroupAttribution(smemTy, loc);
    Block *entry = &fn.getBody().front();
    OpBuilder b = OpBuilder::atBlockEnd(entry);
    auto cIdx = [&](int64_t x) {
      return b.create<arith::ConstantIndexOp>(loc, x).getResult();
    };
    Value tid = b.create<gpu::ThreadIdOp>(loc, gpu::Dimension::x);
    Value part = entry->getArgument(nIn);
    auto loop = b.create<scf::ForOp>(
        loc, tid, cIdx(blocks), cIdx(blockDim),
        ValueRange{b.create<arith::ConstantOp>(loc, b.getF64FloatAttr(0.0))
                       .getResult()});
    {
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(loop.getBody());
      Value p = b.create<memref::LoadOp>(loc, part,
                                         ValueRange{loop.getInductionVar()});
      b.create<scf::YieldOp>(loc, ValueRange{b.create<arith::AddFOp>(
                                      loc, loop.getRegionIterArgs()[0], p)});
    }
    Value sum = blockSumF64(b, loc, loop.getResult(0), tid, blockDim, smem);
    Value first =
        b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::eq, tid, cIdx(0));
    auto guard = b.create<scf::IfOp>(loc, first, false);
    b.setInsertionPointToStart(&guard.getThenRegion().front());
    // The norm of the scaled gradient: grad_scale (hyper[4]) * sqrt(sum).
    Value scale = b.create<memref::LoadOp>(
        loc, entry->getArgument(hyperArg.getArgNumber()), ValueRange{cIdx(4)});
    Value scaled =
        b.create<arith::MulFOp>(loc, b.create<math::SqrtOp>(loc, sum),
                                b.create<arith::ExtFOp>(loc, f64, scale));
    b.create<memref::StoreOp>(loc, b.create<arith::TruncFOp>(loc, f32, scaled),
                              entry->getArgument(body.getNumArguments()),
                              ValueRange{cIdx(0)});
    b.setInsertionPointToEnd(entry);
    b.create<gpu::ReturnOp>(loc);
  }
  return success();
}

/// The second kernel of a split norm weight gradient (emitKernel,
/// normSplits): thread c adds, for every output i, the `splits` partial sums
/// scratch[(s * outputs + i) * cols + chunk c] in the order s = 0, 1, ...
/// and stores them (16-byte vectors) in output i. In a gpu.module of its own
/// next to the first kernel's, named <name>_final, with the same arguments.
LogicalResult emitNormSplitFinal(FusionOp fusion, StringRef name,
                                 FunctionType fnType, unsigned nIn,
                                 int64_t outputs, int64_t cols, int64_t vecW,
                                 int64_t splits, int64_t blockDim,
                                 OpBuilder &builder) {
  Location loc = fusion.getLoc();
  std::string finalName = (name + "_final").str();
  FailureOr<OpBuilder> kb =
      beginThenKernel(fusion, builder, finalName, 4 * splits * outputs * cols);
  if (failed(kb))
    return failure();
  int64_t chunks = cols / vecW;
  gpu::GPUFuncOp fn = createSimtKernel(
      *kb, fusion, finalName, fnType, /*cols=*/1, /*fixedRows=*/chunks, nIn + 1,
      double(splits * outputs * cols), 4.0 * (splits + 2) * outputs * cols,
      blockDim);

  Block *entry = &fn.getBody().front();
  OpBuilder b = OpBuilder::atBlockEnd(entry);
  auto cIdx = [&](int64_t x) {
    return b.create<arith::ConstantIndexOp>(loc, x).getResult();
  };
  Value bid = b.create<gpu::BlockIdOp>(loc, gpu::Dimension::x);
  Value tid = b.create<gpu::ThreadIdOp>(loc, gpu::Dimension::x);
  Value c = b.create<arith::AddIOp>(
      loc, b.create<arith::MulIOp>(loc, bid, cIdx(blockDim)), tid);
  auto guard = b.create<scf::IfOp>(
      loc,
      b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::ult, c, cIdx(chunks)),
      false);
  b.setInsertionPointToStart(&guard.getThenRegion().front());
  Value scratch = entry->getArgument(nIn);
  Value col = b.create<arith::MulIOp>(loc, c, cIdx(vecW));
  auto vt = VectorType::get({4}, b.getF32Type());
  Value zero = b.create<arith::ConstantOp>(
      loc, DenseElementsAttr::get(vt, b.getF32FloatAttr(0)));
  unsigned firstOutput = nIn - outputs;
  for (int64_t i = 0; i < outputs; ++i) {
    SmallVector<Value> init(vecW / 4, zero);
    auto loop = b.create<scf::ForOp>(loc, cIdx(0), cIdx(splits), cIdx(1), init);
    {
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(loop.getBody());
      Value at = b.create<arith::AddIOp>(
          loc,
          b.create<arith::MulIOp>(
              loc,
              b.create<arith::AddIOp>(
                  loc,
                  b.create<arith::MulIOp>(loc, loop.getInductionVar(),
                                          cIdx(outputs)),
                  cIdx(i)),
              cIdx(cols)),
          col);
      SmallVector<Value> acc;
      for (int64_t k = 0; k < vecW / 4; ++k) {
        Value v = b.create<vector::LoadOp>(
            loc, vt, scratch,
            ValueRange{b.create<arith::AddIOp>(loc, at, cIdx(4 * k))},
            /*nontemporal=*/false, llvm::Align(16));
        acc.push_back(
            b.create<arith::AddFOp>(loc, loop.getRegionIterArgs()[k], v));
      }
      b.create<scf::YieldOp>(loc, acc);
    }
    Value out = entry->getArgument(firstOutput + i);
    for (int64_t k = 0; k < vecW / 4; ++k)
      b.create<vector::StoreOp>(
          loc, loop.getResult(k), out,
          ValueRange{b.create<arith::AddIOp>(loc, col, cIdx(4 * k))},
          /*nontemporal=*/false, llvm::Align(16));
  }
  b.setInsertionPointToEnd(entry);
  b.create<gpu::ReturnOp>(loc);
  return success();
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
  // A Hopper kernel built for the group: its launch attributes (the grid
  // and block are in its ABI; no row extent).
  // The group's FLOPs and bytes are counted before a builder runs (the
  // backward attention builder erases the group's unused results).
  double groupFlops = estimateFlops(fusion);
  double groupBytes = estimateBytes(fusion);
  auto recordHopper = [&](FailureOr<Operation *> kernelOp, int64_t cols,
                          int64_t threads) -> LogicalResult {
    if (failed(kernelOp))
      return failure();
    setKernelAttrs(*kernelOp, fusion, cols, /*fixedRows=*/0,
                   body.getNumArguments() + fusion.getNumResults(), groupFlops,
                   groupBytes, threads);
    return success();
  };
  if (target == KernelTarget::Gpu && hopperGemm && gemmGroup) {
    if (std::optional<HopperGemmProblem> p =
            matchHopperGemm(fusion, hopperWhyNot)) {
      return recordHopper(buildHopperGemm(fusion, *p, name, builder), p->n,
                          p->tile.threads());
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
      return recordHopper(buildHopperAttention(fusion, *p, name, builder),
                          p->heads, HopperAttentionTile::kThreads);
    }
    fusion.emitWarning("the sm_90a bf16 attention does not apply (")
        << whyNot << "): a SIMT kernel is generated";
  }
  // An attention_grad group (its dq or its dk/dv half): the TMA + wgmma
  // backward kernels (docs/hopper-attention.md "Backward").
  if (target == KernelTarget::Gpu && hopperAttention &&
      fusion.getKind() == "attention_grad") {
    std::string whyNot;
    if (std::optional<HopperAttentionBwdProblem> p =
            matchHopperAttentionBwd(fusion, whyNot)) {
      return recordHopper(buildHopperAttentionBwd(fusion, *p, name, builder),
                          p->dq ? p->heads : p->kvHeads,
                          HopperAttentionBwdTile::kThreads);
    }
    fusion.emitWarning("the sm_90a bf16 attention backward does not apply (")
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

  // sm_90a global_norm: a multi-block kernel and a final one (see
  // emitGlobalNormGpu).
  if (target == KernelTarget::Gpu &&
      body.getTerminator()->getNumOperands() == 1)
    if (auto gn =
            body.getTerminator()->getOperand(0).getDefiningOp<GlobalNormOp>())
      return emitGlobalNormGpu(fusion, gn, name, blockDim, builder);

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
  // (With the bf16 rounding of its dlogits, which only sets the type the
  // kernel stores.)
  if (shape == Shape::LossRows &&
      llvm::count_if(body, [&](Operation &op) {
        auto cv = dyn_cast<ConvertOp>(op);
        return !isa<PositionsOp, SliceOp, YieldOp, arith::ConstantOp>(op) &&
               !(cv && cv.getX() == lossRows.getDlogits());
      }) != 1)
    return fusion.emitOpError(
        "cross_entropy_rows must form a kernel of its own");
  // sm_90a vector mode (docs/kernels.md): chunks of 8 (any bf16 buffer) or
  // 4 (f32/i32 only) consecutive columns per access.
  // - pointwise groups without a linear (elementwise, rope, embedding, ...)
  //   and AdamW: one thread per chunk;
  // - row groups (norms, their gradients, softmax, cross_entropy_rows):
  //   `rowLanes` threads of a warp per row, each over its chunks; the row's
  //   statistics are combined by warp shuffles. A row of at most
  //   kMaxRowRegs elements per thread is unrolled: its chunks are loaded once
  //   and kept in registers for every pass over the row. Longer norm and
  //   softmax rows take a block of rowLanes > 32 threads (see below).
  enum class VecKind {
    None,
    Pointwise,
    Adamw1,
    Row,
    NormParamGrad,
    RowSum,
    EmbeddingGrad
  };
  EmbeddingGradOp embeddingGrad;
  VecKind vec = VecKind::None;
  Operation *normParamGrad = nullptr;
  int64_t ropePairHd = 0;
  unsigned vecW = 0;
  int64_t rowLanes = 0, rowCols = 0;
  constexpr int64_t kMaxRowRegs = 64, kWideRowRegs = 32;
  if (target == KernelTarget::Gpu) {
    bool anyBf16 = false;
    for (Type t : llvm::concat<const Type>(body.getArgumentTypes(),
                                           fusion.getResultTypes()))
      anyBf16 |= cast<RankedTensorType>(t).getElementType().isBF16();
    unsigned w = anyBf16 ? 8 : 4;
    bool scalarOnly = llvm::any_of(body, [](Operation &op) {
      return isa<LinearOp, AttentionOp, AttentionGradOp, PadColumnsOp>(op);
    });
    if (shape == Shape::Pointwise && !scalarOnly && cols > 0 && cols % w == 0) {
      vec = VecKind::Pointwise;
      // rotate_half RoPE: a thread takes a chunk and its partner chunk.
      int64_t hd = 0;
      bool pairs = true;
      for (Operation &op : body)
        if (auto rope = dyn_cast<RopeOp>(op)) {
          int64_t h = rope.getHeadDim();
          pairs &= rope.getLayout() == RopeLayout::rotate_half &&
                   (!hd || hd == h) && (h / 2) % w == 0 && cols % h == 0;
          hd = h;
        }
      if (hd && pairs)
        ropePairHd = hd;
    } else if (shape == Shape::Adamw) {
      if (cols > 1 && cols % w == 0)
        vec = VecKind::Pointwise;
      else if (cols == 1 && fixedRows > 1 && fixedRows % w == 0)
        vec = VecKind::Adamw1;
    } else if ((shape == Shape::Row || shape == Shape::LossRows) &&
               !scalarOnly) {
      rowCols = shape == Shape::Row
                    ? cols
                    : cast<RankedTensorType>(lossRows.getLogits().getType())
                          .getDimSize(1);
      if (rowCols > 0 && rowCols % w == 0) {
        vec = VecKind::Row;
        int64_t chunks = rowCols / w;
        rowLanes = 32;
        while (chunks % rowLanes != 0)
          rowLanes /= 2;
        // A norm/softmax row too long for a warp's registers: a block of
        // its own per row (at least blockDim threads, doubled up to 1024
        // until a lane holds at most kWideRowRegs elements), so the row
        // stays in registers (one pass over global memory); the statistics
        // are combined through shared memory. The kernel's block is then
        // rowLanes threads.
        if (shape == Shape::Row && rowCols / rowLanes > kMaxRowRegs &&
            blockDim >= 32 && blockDim % 32 == 0 && blockDim <= 1024 &&
            chunks % blockDim == 0) {
          int64_t wide = blockDim;
          while (rowCols / wide > kWideRowRegs && wide * 2 <= 1024 &&
                 chunks % (wide * 2) == 0)
            wide *= 2;
          if (wide > 32 && rowCols / wide <= kMaxRowRegs)
            rowLanes = wide;
        }
      }
    }
    // row_sum over a buffer of whole 4-row chunks: one warp.
    if (shape == Shape::Scalar)
      if (auto rs = yield.getValues()[0].getDefiningOp<RowSumOp>()) {
        auto arg = dyn_cast<BlockArgument>(rs.getX());
        auto t = cast<RankedTensorType>(rs.getX().getType());
        if (arg && t.hasStaticShape() && t.getRank() == 1 &&
            t.getDimSize(0) % 4 == 0 && t.getElementType().isF32())
          vec = VecKind::RowSum;
      }
    // The weight/bias gradients of one norm (a reduction over rows):
    // a block per blockDim chunks of columns, see emitNormParamGrad.
    if (shape == Shape::Reduce && blockDim % 32 == 0) {
      Operation *ng = nullptr;
      bool only = true;
      for (Value v : yield.getValues()) {
        Operation *def = v.getDefiningOp();
        only &= def && isa<RmsNormGradOp, LayerNormGradOp>(def) &&
                cast<OpResult>(v).getResultNumber() > 0 && (!ng || ng == def);
        ng = def;
      }
      int64_t c =
          ng ? cast<RankedTensorType>(ng->getOperand(0).getType()).getDimSize(1)
             : 0;
      if (only && ng && c > 0 && c % w == 0) {
        vec = VecKind::NormParamGrad;
        normParamGrad = ng;
        rowCols = c;
        int64_t chunks = c / w;
        rowLanes = 32;
        while (chunks % rowLanes != 0)
          rowLanes /= 2;
      }
    }
    // embedding_grad alone, ids a kernel input, rows of whole chunks whose
    // count divides or is a multiple of a warp: a thread per chunk of a
    // vocabulary row, the matching token rows found by warp ballots
    // (emitEmbeddingGradWarp).
    if (shape == Shape::Reduce && yield.getNumOperands() == 1 &&
        blockDim % 32 == 0)
      if (auto eg = yield.getValues()[0].getDefiningOp<EmbeddingGradOp>()) {
        int64_t chunks = cols % w == 0 ? cols / w : 0;
        if (isa<BlockArgument>(eg.getIds()) && chunks > 0 &&
            (chunks % 32 == 0 || 32 % chunks == 0)) {
          vec = VecKind::EmbeddingGrad;
          embeddingGrad = eg;
        }
      }
    if (vec != VecKind::None)
      vecW = w;
  }
  // A norm's weight gradient over many rows: with only cols / vecW threads
  // (2048 columns: 2 blocks) it cannot fill the GPU, so the row tiles are
  // split over `normSplits` groups of blocks that store f32 partial sums in
  // a scratch buffer, and a second kernel adds the splits in order
  // (deterministic) into the outputs. Enough splits for about
  // kNormSplitBlocks blocks, each split at least 8 row tiles of the
  // capacity; f32 outputs only.
  int64_t normSplits = 1, normColBlocks = 0;
  if (vec == VecKind::NormParamGrad) {
    int64_t chunks = rowCols / vecW;
    normColBlocks = (chunks + blockDim - 1) / blockDim;
    int64_t capacity =
        cast<RankedTensorType>(normParamGrad->getOperand(0).getType())
            .getDimSize(0);
    bool f32Outs = llvm::all_of(fusion.getResultTypes(), [](Type t) {
      return cast<RankedTensorType>(t).getElementType().isF32();
    });
    if (f32Outs && !ShapedType::isDynamic(capacity)) {
      int64_t byRows = capacity / (blockDim / 32 * 8);
      int64_t want = (kNormSplitBlocks + normColBlocks - 1) / normColBlocks;
      normSplits = std::clamp<int64_t>(std::min(want, byRows), 1, 256);
    }
  }
  int64_t parallelCols = shape == Shape::Row || shape == Shape::LossRows ? 1
                         : shape == Shape::Attention ? attention.getNumHeads()
                         : shape == Shape::AttnGradQ
                             ? static_cast<int64_t>(attnGrad.getNumHeads())
                         : shape == Shape::AttnGradKV
                             ? static_cast<int64_t>(attnGrad.getNumKvHeads())
                             : cols;
  if (vec == VecKind::Pointwise)
    parallelCols = cols / vecW / (ropePairHd ? 2 : 1);
  else if (vec == VecKind::Row)
    parallelCols = rowLanes;
  else if (vec == VecKind::RowSum)
    parallelCols = 32;
  else if (vec == VecKind::EmbeddingGrad)
    parallelCols = cols / vecW;
  // Threads run over launchRows x parallelCols; Adamw1 takes a chunk of the
  // vector parameter per thread.
  int64_t launchRows = vec == VecKind::Adamw1 || vec == VecKind::NormParamGrad
                           ? fixedRows / vecW
                           : fixedRows;

  SmallVector<Type> argTypes;
  for (Type t : body.getArgumentTypes())
    argTypes.push_back(memrefFor(t));
  for (Type t : fusion.getResultTypes())
    argTypes.push_back(memrefFor(t));
  const int64_t numOutputs = fusion.getNumResults();
  if (normSplits > 1) // the partial sums, after the results
    argTypes.push_back(MemRefType::get({normSplits * numOutputs * rowCols},
                                       builder.getF32Type()));
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
  const unsigned region = nIn + (normSplits > 1 ? 1 : 0);
  Value nb = toIndex(entry->getArgument(region));
  Value nt = toIndex(entry->getArgument(region + 1));
  Value pos0 = toIndex(entry->getArgument(region + 2));
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
  } else if (vec == VecKind::RowSum) {
    // One warp (32 threads of the first block; the others return).
    Value tid = b.create<gpu::ThreadIdOp>(loc, gpu::Dimension::x);
    Value bid = b.create<gpu::BlockIdOp>(loc, gpu::Dimension::x);
    Value inWarp = b.create<arith::AndIOp>(
        loc,
        b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::eq, bid, em.cIdx(0)),
        b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::ult, tid,
                                em.cIdx(32)));
    auto guard = b.create<scf::IfOp>(loc, inWarp, /*withElseRegion=*/false);
    b.setInsertionPointToStart(&guard.getThenRegion().front());
    auto rs = yield.getValues()[0].getDefiningOp<RowSumOp>();
    if (failed(em.emitRowSumWarp(rs, tid)))
      return failure();
    b.setInsertionPointToEnd(entry);
    b.create<gpu::ReturnOp>(loc);
  } else if (vec == VecKind::NormParamGrad) {
    // Whole blocks take part in the barriers: no early exit; a thread past
    // the last chunk works on the last one and stores nothing.
    auto fn = cast<gpu::GPUFuncOp>(kernelOp);
    int64_t warps = blockDim / 32;
    auto smemTy =
        MemRefType::get({warps, 2}, b.getF32Type(), MemRefLayoutAttrInterface{},
                        gpu::AddressSpaceAttr::get(
                            b.getContext(), gpu::AddressSpace::Workgroup));
    Value smem = fn.addWorkgroupAttribution(smemTy, loc);
    Value bid = b.create<gpu::BlockIdOp>(loc, gpu::Dimension::x);
    Value tid = b.create<gpu::ThreadIdOp>(loc, gpu::Dimension::x);
    const int64_t chunks = launchRows;
    Value split, colBlock = bid, tileBegin, tileEnd;
    if (normSplits > 1) {
      // Block (split, column block): split s adds the row tiles
      // [s * tiles / S, (s + 1) * tiles / S) of the active rows.
      split = b.create<arith::DivUIOp>(loc, bid, em.cIdx(normColBlocks));
      colBlock = b.create<arith::RemUIOp>(loc, bid, em.cIdx(normColBlocks));
      Value tiles = b.create<arith::DivUIOp>(
          loc, b.create<arith::AddIOp>(loc, rows, em.cIdx(warps - 1)),
          em.cIdx(warps));
      auto bound = [&](Value sp) {
        return b
            .create<arith::DivUIOp>(loc,
                                    b.create<arith::MulIOp>(loc, sp, tiles),
                                    em.cIdx(normSplits))
            .getResult();
      };
      tileBegin = bound(split);
      tileEnd = bound(b.create<arith::AddIOp>(loc, split, em.cIdx(1)));
    }
    Value flat = b.create<arith::AddIOp>(
        loc, b.create<arith::MulIOp>(loc, colBlock, em.cIdx(blockDim)), tid);
    Value inRange = b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::ult,
                                            flat, em.cIdx(chunks));
    Value chunk = b.create<arith::MinUIOp>(loc, flat, em.cIdx(chunks - 1));
    em.vecW = vecW;
    em.storeGuard = inRange;
    if (failed(em.emitNormParamGrad(
            normParamGrad, chunk, tid, warps, rowLanes, smem, tileBegin,
            tileEnd, normSplits > 1 ? entry->getArgument(nIn) : Value(),
            split)))
      return failure();
    b.setInsertionPointToEnd(entry);
    b.create<gpu::ReturnOp>(loc);
    if (normSplits > 1) {
      // Launched as normSplits x (normColBlocks x blockDim) threads.
      launchRows = normSplits;
      parallelCols = normColBlocks * blockDim;
      if (failed(emitNormSplitFinal(fusion, name, fnType, nIn, numOutputs,
                                    rowCols, vecW, normSplits, blockDim,
                                    builder)))
        return failure();
    }
  } else if (vec == VecKind::Row) {
    // No early exit: every lane of a row takes part in its shuffles. Lanes
    // past the last row compute on the last row and store nothing.
    Value bid = b.create<gpu::BlockIdOp>(loc, gpu::Dimension::x);
    Value bdim = b.create<gpu::BlockDimOp>(loc, gpu::Dimension::x);
    Value tid = b.create<gpu::ThreadIdOp>(loc, gpu::Dimension::x);
    Value flat = b.create<arith::AddIOp>(
        loc, b.create<arith::MulIOp>(loc, bid, bdim), tid);
    Value total = b.create<arith::MulIOp>(loc, rows, em.cIdx(rowLanes));
    Value inRange =
        b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::ult, flat, total);
    Value r = b.create<arith::MinUIOp>(
        loc, b.create<arith::DivUIOp>(loc, flat, em.cIdx(rowLanes)),
        b.create<arith::SubIOp>(loc, rows, em.cIdx(1)));
    Value laneId = b.create<arith::RemUIOp>(loc, flat, em.cIdx(rowLanes));
    if (rowLanes > 32) {
      // A block per row (rowLanes == blockDim): rows * rowLanes threads
      // fill whole blocks, so every thread of a block reaches its barriers.
      auto smemTy =
          MemRefType::get({rowLanes / 32, Emitter::kRowSmemVals},
                          b.getF32Type(), MemRefLayoutAttrInterface{},
                          gpu::AddressSpaceAttr::get(
                              b.getContext(), gpu::AddressSpace::Workgroup));
      em.rowSmem =
          cast<gpu::GPUFuncOp>(kernelOp).addWorkgroupAttribution(smemTy, loc);
    }
    em.vecW = vecW;
    em.setupRowVector(rowCols, rowLanes, laneId, kMaxRowRegs);
    em.storeGuard = inRange;
    em.beginPoint(r, Value());
    if (shape == Shape::LossRows) {
      if (failed(em.emitCrossEntropyRows(lossRows, r)))
        return failure();
    } else if (failed(em.emitRowStats(r)) ||
               failed(em.emitRowVectorStores(r))) {
      return failure();
    }
    b.setInsertionPointToEnd(entry);
    b.create<gpu::ReturnOp>(loc);
  } else if (vec == VecKind::EmbeddingGrad) {
    // No early exit: every lane of a warp takes part in its ballots. A
    // thread past the last vocabulary row works on it and stores nothing.
    Value bid = b.create<gpu::BlockIdOp>(loc, gpu::Dimension::x);
    Value bdim = b.create<gpu::BlockDimOp>(loc, gpu::Dimension::x);
    Value tid = b.create<gpu::ThreadIdOp>(loc, gpu::Dimension::x);
    Value flat = b.create<arith::AddIOp>(
        loc, b.create<arith::MulIOp>(loc, bid, bdim), tid);
    em.storeGuard =
        b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::ult, flat,
                                em.cIdx(fixedRows * parallelCols));
    em.vecW = vecW;
    if (failed(em.emitEmbeddingGradWarp(embeddingGrad, flat, parallelCols,
                                        fixedRows)))
      return failure();
    b.setInsertionPointToEnd(entry);
    b.create<gpu::ReturnOp>(loc);
  } else if (vec != VecKind::None) {
    // One thread per chunk of vecW columns (Adamw1: of the vector).
    Value bid = b.create<gpu::BlockIdOp>(loc, gpu::Dimension::x);
    Value bdim = b.create<gpu::BlockDimOp>(loc, gpu::Dimension::x);
    Value tid = b.create<gpu::ThreadIdOp>(loc, gpu::Dimension::x);
    Value flat = b.create<arith::AddIOp>(
        loc, b.create<arith::MulIOp>(loc, bid, bdim), tid);
    Value total =
        vec == VecKind::Adamw1
            ? em.cIdx(launchRows)
            : b.create<arith::MulIOp>(loc, rows, em.cIdx(parallelCols))
                  .getResult();
    Value inRange =
        b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::ult, flat, total);
    auto guard = b.create<scf::IfOp>(loc, inRange, /*withElseRegion=*/false);
    b.setInsertionPointToStart(&guard.getThenRegion().front());
    em.vecW = vecW;
    AdamwOp adamw;
    for (Operation &op : body)
      if (auto a = dyn_cast<AdamwOp>(op))
        adamw = a;
    if (vec == VecKind::Adamw1) {
      Value base = b.create<arith::MulIOp>(loc, flat, em.cIdx(vecW));
      for (int64_t k = 0; k < vecW; ++k) {
        Value p = em.chunkCol(base, k);
        em.beginPoint(p, em.cIdx(0));
        if (failed(em.emitAdamw(adamw, p, em.cIdx(0))))
          return failure();
      }
    } else {
      Value r = b.create<arith::DivUIOp>(loc, flat, em.cIdx(parallelCols));
      Value t = b.create<arith::RemUIOp>(loc, flat, em.cIdx(parallelCols));
      Value base = b.create<arith::MulIOp>(loc, t, em.cIdx(vecW));
      if (ropePairHd) {
        // Chunk j of the first half of head h, and its partner.
        int64_t perHead = ropePairHd / 2 / vecW;
        Value h = b.create<arith::DivUIOp>(loc, t, em.cIdx(perHead));
        Value j = b.create<arith::RemUIOp>(loc, t, em.cIdx(perHead));
        Value b1 = b.create<arith::AddIOp>(
            loc, b.create<arith::MulIOp>(loc, h, em.cIdx(ropePairHd)),
            b.create<arith::MulIOp>(loc, j, em.cIdx(vecW)));
        Value b2 = b.create<arith::AddIOp>(loc, b1, em.cIdx(ropePairHd / 2));
        em.pairChunks(b1, b2);
        if (failed(em.emitChunkStores(r, b1)) ||
            failed(em.emitChunkStores(r, b2)))
          return failure();
      } else if (adamw) {
        for (int64_t k = 0; k < vecW; ++k) {
          Value q = em.chunkCol(base, k);
          em.beginPoint(r, q);
          if (failed(em.emitAdamw(adamw, r, q)))
            return failure();
        }
      } else if (failed(em.emitChunkStores(r, base))) {
        return failure();
      }
    }
    if (failed(em.checkStoresFlushed()))
      return failure();
    b.setInsertionPointToEnd(entry);
    b.create<gpu::ReturnOp>(loc);
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

  setKernelAttrs(kernelOp, fusion, parallelCols, fixedRows ? launchRows : 0,
                 nIn + (normSplits > 1 ? 1 : 0), estimateFlops(fusion),
                 estimateBytes(fusion),
                 target != KernelTarget::Gpu            ? 0
                 : vec == VecKind::Row && rowLanes > 32 ? rowLanes
                                                        : blockDim);
  return success();
}
