//===- HopperAttention.cpp - TMA + wgmma attention for sm_90a -------------===//
//
// One CTA of two warpgroups (256 threads) computes the output of 128 query
// rows (64 per warpgroup) of one head of one sequence:
//
//   thread 0:  init the mbarriers (Q; full K, full V and empty per stage),
//              fence the tensor maps, TMA-load the Q tile (resident) and
//              the K/V tiles of key blocks 0 .. stages-1
//   all:       wait Q; for each key block i (unmasked blocks, then the
//              blocks that need the causal / length mask):
//                thread 0: refill the slot of block i-1 with block
//                          i-1+stages once both warpgroups released it
//                wait K[i]; S = Q K^T (wgmma, A and B from shared memory)
//                mask; online softmax in registers (running max m and
//                partial sum l per row, rescale of O); P = bf16(exp2(...))
//                wait V[i]; O += P V (wgmma, A = P from registers, B = V
//                transposed from shared memory); release the slot
//   epilogue:  O / l rounded once, lse = scale * m + log(l) (when yielded);
//              rows past nt are not written.
//
// TMA, mbarriers and shared-memory views are nvgpu/memref ops; the Q K^T
// wgmma is nvvm.wgmma.mma_async; the P V wgmma takes its A operand from
// registers, which nvvm.wgmma.mma_async does not offer, so it is inline PTX
// (the same instruction, `wgmma.mma_async ... {d}, {a}, b-desc, ...`).
//
//===----------------------------------------------------------------------===//
#include "colossus/Compiler/HopperAttention.h"
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

#include <cmath>
#include <cstdio>

using namespace mlir;
using namespace colossus;

std::optional<HopperAttentionProblem>
colossus::matchHopperAttention(FusionOp fusion, std::string &whyNot) {
  Block &body = fusion.getBody().front();
  AttentionOp attn;
  for (Operation &op : body.without_terminator()) {
    if (isa<PositionsOp>(op))
      continue;
    if (auto a = dyn_cast<AttentionOp>(op); a && !attn) {
      attn = a;
      continue;
    }
    whyNot = ("'" + op.getName().getStringRef() +
              "' in the group besides the attention")
                 .str();
    return std::nullopt;
  }
  if (!attn) {
    whyNot = "no attention in the group";
    return std::nullopt;
  }
  HopperAttentionProblem p;
  auto arg = [&](Value v) {
    auto ba = dyn_cast<BlockArgument>(v);
    return ba && ba.getOwner() == &body ? static_cast<int>(ba.getArgNumber())
                                        : -1;
  };
  int q = arg(attn.getQ()), k = arg(attn.getK()), v = arg(attn.getV());
  if (q < 0 || k < 0 || v < 0) {
    whyNot = "q, k or v is computed inside the group";
    return std::nullopt;
  }
  if (q == k || q == v || k == v) {
    whyNot = "q, k and v are not three different inputs";
    return std::nullopt;
  }
  p.qArg = q;
  p.kArg = k;
  p.vArg = v;
  if (!attn.getPositions().getDefiningOp<PositionsOp>()) {
    whyNot = "the positions are not the step's (colossus.positions)";
    return std::nullopt;
  }
  auto qt = cast<RankedTensorType>(attn.getQ().getType());
  auto kt = cast<RankedTensorType>(attn.getK().getType());
  auto vt = cast<RankedTensorType>(attn.getV().getType());
  if (!qt.getElementType().isBF16() || !kt.getElementType().isBF16() ||
      !vt.getElementType().isBF16()) {
    whyNot = "q, k and v are not bf16";
    return std::nullopt;
  }
  if (!qt.hasStaticShape() || !kt.hasStaticShape() || kt != vt) {
    whyNot = "q, k and v do not have static shapes (k and v alike)";
    return std::nullopt;
  }
  p.heads = attn.getNumHeads();
  p.kvHeads = attn.getNumKvHeads();
  p.headDim = attn.getHeadDim();
  p.scale = attn.getScale().convertToDouble();
  p.causal = attn.getCausal();
  p.tokens = qt.getDimSize(0);
  p.batch = kt.getDimSize(0);
  p.seq = kt.getDimSize(1);
  if (p.headDim != 64 && p.headDim != 128) {
    whyNot = "head_dim " + std::to_string(p.headDim) + " is not 64 or 128";
    return std::nullopt;
  }
  if (attn.getSlidingWindow() != 0) {
    whyNot = "sliding windows are not supported yet";
    return std::nullopt;
  }
  if (p.heads % p.kvHeads != 0 || qt.getDimSize(1) != p.heads * p.headDim ||
      kt.getDimSize(2) != p.kvHeads * p.headDim) {
    whyNot = "q, k, v do not have the [T, heads * head_dim], [B, S, "
             "kv_heads * head_dim] layout";
    return std::nullopt;
  }
  auto yield = cast<YieldOp>(body.getTerminator());
  p.outIndex = -1;
  for (auto [i, y] : llvm::enumerate(yield.getValues())) {
    if (y == attn.getResult())
      p.outIndex = static_cast<int>(i);
    else if (attn.getLse() && y == attn.getLse())
      p.lseIndex = static_cast<int>(i);
    else {
      whyNot = "the group yields a value that is not the attention's";
      return std::nullopt;
    }
  }
  if (p.outIndex < 0) {
    whyNot = "the group does not yield the attention's output";
    return std::nullopt;
  }
  p.outElem =
      cast<RankedTensorType>(attn.getResult().getType()).getElementType();
  if (!p.outElem.isBF16() && !p.outElem.isF32()) {
    whyNot = "the output is not bf16 or f32";
    return std::nullopt;
  }
  HopperAttentionTile &t = p.tile;
  t.headDim = p.headDim;
  t.bn = 128;
  if (p.seq < t.bn || p.tokens < HopperAttentionTile::kBm) {
    whyNot = "the cache has fewer than " + std::to_string(t.bn) +
             " positions or q fewer than " +
             std::to_string(HopperAttentionTile::kBm) + " rows";
    return std::nullopt;
  }
  // As many stages as fit, at most 4; the refill of block i-1's slot while
  // block i is computed needs 3.
  t.stages =
      std::min<int64_t>(4, (HopperAttentionTile::kMaxDynamicSmem -
                            HopperAttentionTile::kAlignSlack - t.qBytes()) /
                               t.stageBytes());
  if (t.stages < 3) {
    whyNot = "3 K/V stages do not fit in shared memory";
    return std::nullopt;
  }
  if (p.batch > 65535 || p.heads > 65535) {
    whyNot = "more than 65535 sequences or heads";
    return std::nullopt;
  }
  return p;
}

namespace {

constexpr int64_t kWg = HopperAttentionTile::kWarpgroups;
constexpr int64_t kBm = HopperAttentionTile::kBm;

/// Builds the body of the kernel; one instance per kernel.
class AttentionBuilder {
public:
  AttentionBuilder(OpBuilder &b, Location loc, const HopperAttentionProblem &p)
      : b(b), loc(loc), p(p), t(p.tile), ctx(b.getContext()) {
    smemSpace = gpu::AddressSpaceAttr::get(
        ctx, gpu::GPUDialect::getWorkgroupAddressSpace());
    bf16 = b.getBF16Type();
    f32 = b.getF32Type();
    i32 = b.getI32Type();
    i64 = b.getI64Type();
    qBox = MemRefType::get({kBm, 64}, bf16, MemRefLayoutAttrInterface(),
                           smemSpace);
    kvBox = MemRefType::get({1, t.bn, 64}, bf16, MemRefLayoutAttrInterface(),
                            smemSpace);
    tmapQ = swizzled128TensorMap(ctx, qBox);
    tmapKV = swizzled128TensorMap(ctx, kvBox);
    barriers = nvgpu::MBarrierGroupType::get(ctx, smemSpace, 1 + 3 * t.stages);
    sType =
        LLVM::LLVMStructType::getLiteral(ctx, SmallVector<Type>(t.bn / 2, f32));
    oType = LLVM::LLVMStructType::getLiteral(
        ctx, SmallVector<Type>(p.headDim / 2, f32));
    chunks = p.headDim / 64;
  }

  void build(gpu::GPUFuncOp fn, unsigned numInputs, unsigned numResults);

private:
  Value idx(int64_t v) { return arith::ConstantIndexOp::create(b, loc, v); }
  Value cI64(int64_t v) {
    return arith::ConstantOp::create(b, loc, b.getI64IntegerAttr(v));
  }
  Value cI32(int64_t v) {
    return arith::ConstantOp::create(b, loc, b.getI32IntegerAttr(v));
  }
  Value cF32(double v) {
    return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(v));
  }
  Value add(Value x, Value y) { return arith::AddIOp::create(b, loc, x, y); }
  Value sub(Value x, Value y) { return arith::SubIOp::create(b, loc, x, y); }
  Value mul(Value x, Value y) { return arith::MulIOp::create(b, loc, x, y); }
  Value divu(Value x, int64_t y) {
    return arith::DivUIOp::create(b, loc, x, idx(y));
  }
  Value remu(Value x, int64_t y) {
    return arith::RemUIOp::create(b, loc, x, idx(y));
  }
  Value minu(Value x, Value y) { return arith::MinUIOp::create(b, loc, x, y); }
  Value ult(Value x, Value y) {
    return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, x, y);
  }
  Value ule(Value x, Value y) {
    return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ule, x, y);
  }
  Value toI64(Value index) {
    return arith::IndexCastUIOp::create(b, loc, i64, index);
  }
  Value fmax(Value x, Value y) {
    return arith::MaxNumFOp::create(b, loc, x, y);
  }
  Value fadd(Value x, Value y) { return arith::AddFOp::create(b, loc, x, y); }
  Value fmul(Value x, Value y) { return arith::MulFOp::create(b, loc, x, y); }
  Value fsub(Value x, Value y) { return arith::SubFOp::create(b, loc, x, y); }
  /// exp2 by the SFU (ex2.approx.ftz.f32), as FlashAttention does.
  Value exp2(Value x) {
    return LLVM::InlineAsmOp::create(
               b, loc, f32, ValueRange{x}, "ex2.approx.ftz.f32 $0, $1;", "=f,f",
               /*has_side_effects=*/false, /*is_align_stack=*/false,
               LLVM::tailcallkind::TailCallKind::None, LLVM::AsmDialectAttr(),
               ArrayAttr())
        .getResult(0);
  }
  Value shflXor(Value v, int64_t mask) {
    return gpu::ShuffleOp::create(b, loc, v, cI32(mask), cI32(32),
                                  gpu::ShuffleMode::XOR)
        .getShuffleResult();
  }
  Value extract(Value s, int64_t i) {
    return LLVM::ExtractValueOp::create(b, loc, s, i);
  }
  Value insert(Value s, Value v, int64_t i) {
    return LLVM::InsertValueOp::create(b, loc, s, v, i);
  }

  /// Byte offsets in the 1024-aligned dynamic shared memory ring.
  int64_t qOffset(int64_t chunk) const { return chunk * kBm * 128; }
  int64_t kOffset(int64_t chunk) const {
    return t.qBytes() + chunk * t.bn * 128;
  }
  int64_t vOffset(int64_t chunk) const {
    return t.qBytes() + t.kvTileBytes() + chunk * t.bn * 128;
  }
  Value view(MemRefType ty, Value byteOffset) {
    return memref::ViewOp::create(b, loc, ty, smem, add(ringBase, byteOffset),
                                  ValueRange{});
  }
  Value barK(Value slot) { return add(idx(1), slot); }
  Value barV(Value slot) { return add(idx(1 + t.stages), slot); }
  Value barEmpty(Value slot) { return add(idx(1 + 2 * t.stages), slot); }

  /// Thread 0: the K and V tiles of key block `blk` into stage `slot`, each
  /// on its own mbarrier.
  void issueKV(Value blk, Value slot) {
    Value j0 = mul(blk, idx(t.bn));
    Value stage = mul(slot, idx(t.stageBytes()));
    nvgpu::MBarrierArriveExpectTxOp::create(b, loc, bars, idx(t.kvTileBytes()),
                                            barK(slot), Value());
    for (int64_t c = 0; c < chunks; ++c)
      nvgpu::TmaAsyncLoadOp::create(
          b, loc, view(kvBox, add(stage, idx(kOffset(c)))), bars, tmK,
          ValueRange{add(kvCol, idx(64 * c)), j0, seqIdx}, barK(slot), Value(),
          Value());
    nvgpu::MBarrierArriveExpectTxOp::create(b, loc, bars, idx(t.kvTileBytes()),
                                            barV(slot), Value());
    for (int64_t c = 0; c < chunks; ++c)
      nvgpu::TmaAsyncLoadOp::create(
          b, loc, view(kvBox, add(stage, idx(vOffset(c)))), bars, tmV,
          ValueRange{add(kvCol, idx(64 * c)), j0, seqIdx}, barV(slot), Value(),
          Value());
  }

  Value parityOf(Value use) {
    return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ne, remu(use, 2),
                                 idx(0));
  }
  void waitBar(Value id, Value use) {
    nvgpu::MBarrierTryWaitParityOp::create(b, loc, bars, parityOf(use),
                                           idx(10000000), id);
  }

  /// O += P V with P (64 x bn, bf16 pairs in 32-bit registers, the A
  /// fragment layout) from registers and V (bn x d, d contiguous: B
  /// "MN-major", transposed) from shared memory at `vAddr`.
  Value pvWgmma(Value o, ArrayRef<Value> pRegs, Value vAddr);

  /// One key block: `masked` applies the causal / length mask.
  SmallVector<Value> keyBlock(Value i, ValueRange state, bool masked);

  void epilogue(ValueRange state, ValueRange args, unsigned numInputs);

  OpBuilder &b;
  Location loc;
  const HopperAttentionProblem &p;
  const HopperAttentionTile &t;
  MLIRContext *ctx;
  Attribute smemSpace;
  Type bf16, f32, i32, i64;
  MemRefType qBox, kvBox;
  nvgpu::TensorMapDescriptorType tmapQ, tmapKV;
  nvgpu::MBarrierGroupType barriers;
  LLVM::LLVMStructType sType, oType;
  int64_t chunks = 1;
  Value smem, ringBase, ringAddr, bars, tmQ, tmK, tmV;
  Value tid, isLeader, lane, wg, laneMod4, nt, pos0, seqIdx, t0, kvCol, nKV;
  /// Rows r0 and r0 + 8 of this thread (positions in the sequence).
  Value rowT[2];
};

Value AttentionBuilder::pvWgmma(Value o, ArrayRef<Value> pRegs, Value vAddr) {
  const int64_t n = p.headDim / 2; // accumulator registers
  // V tile: 16 keys per k16 step are 16 rows of 128 bytes (2 KiB); the two
  // 64-column halves of d (head_dim 128) are `bn * 128` bytes apart (the
  // leading byte offset of an MN-major operand), the 8-row groups along the
  // keys 1024 bytes (the stride byte offset).
  Value desc = wgmmaDescriptor128B(b, loc, vAddr, /*lbo=*/t.bn * 128,
                                   /*sbo=*/1024);
  std::string ptx = "{\n.reg .pred p;\nsetp.ne.b32 p, $" +
                    std::to_string(2 * n + 5) +
                    ", 0;\nwgmma.mma_async.sync.aligned.m64n" +
                    std::to_string(p.headDim) + "k16.f32.bf16.bf16 {";
  std::string constraints;
  for (int64_t i = 0; i < n; ++i) {
    ptx += (i ? ", $" : "$") + std::to_string(i);
    constraints += (i ? ",=f" : "=f");
  }
  ptx += "}, {";
  for (int64_t i = 0; i < 4; ++i)
    ptx += (i ? ", $" : "$") + std::to_string(2 * n + i);
  // scale-d = p (accumulate), scale-a = scale-b = 1, trans-b = 1 (V is
  // MN-major).
  ptx += "}, $" + std::to_string(2 * n + 4) + ", p, 1, 1, 1;\n}";
  SmallVector<Value> operands;
  for (int64_t i = 0; i < n; ++i) {
    constraints += "," + std::to_string(i);
    operands.push_back(extract(o, i));
  }
  for (Value r : pRegs)
    operands.push_back(r);
  operands.push_back(desc);
  operands.push_back(cI32(1));
  constraints += ",r,r,r,r,l,r";
  return LLVM::InlineAsmOp::create(b, loc, oType, operands, ptx, constraints,
                                   /*has_side_effects=*/true,
                                   /*is_align_stack=*/false,
                                   LLVM::tailcallkind::TailCallKind::None,
                                   LLVM::AsmDialectAttr(), ArrayAttr())
      .getResult(0);
}

SmallVector<Value> AttentionBuilder::keyBlock(Value i, ValueRange state,
                                              bool masked) {
  Value m[2] = {state[0], state[1]}, l[2] = {state[2], state[3]};
  Value o = state[4];
  Value slot = remu(i, t.stages);
  Value use = divu(i, t.stages);

  // Refill: the slot of block i-1 gets block i-1+stages once every warp
  // released it (its P V wgmmas are complete).
  {
    Value prev = sub(i, idx(1));
    Value next = add(prev, idx(t.stages));
    Value want = arith::AndIOp::create(
        b, loc, isLeader,
        arith::AndIOp::create(b, loc, ule(idx(1), i), ult(next, nKV)));
    auto refill = scf::IfOp::create(b, loc, want, false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(&refill.getThenRegion().front());
    Value prevSlot = remu(prev, t.stages);
    waitBar(barEmpty(prevSlot), divu(prev, t.stages));
    issueKV(next, prevSlot);
  }

  // Slot `slot` of the ring (its K and V tiles at kOffset / vOffset from
  // here, as issueKV placed them).
  Value stageAddr = arith::AddIOp::create(
      b, loc, ringAddr, toI64(mul(slot, idx(t.stageBytes()))));
  // S = Q K^T: A = this warpgroup's 64 rows of Q, B = the K tile (both
  // K-major, d contiguous, 128-byte rows in 64-column chunks).
  waitBar(barK(slot), use);
  NVVM::WgmmaFenceAlignedOp::create(b, loc);
  Value s = LLVM::UndefOp::create(b, loc, sType);
  auto shapeS = NVVM::MMAShapeAttr::get(ctx, 64, t.bn, 16);
  Value qWg =
      arith::AddIOp::create(b, loc, ringAddr, toI64(mul(wg, idx(64 * 128))));
  for (int64_t kk = 0; kk < p.headDim / 16; ++kk) {
    int64_t c = kk / 4, within = (kk % 4) * 32;
    Value da = wgmmaDescriptor128B(
        b, loc, arith::AddIOp::create(b, loc, qWg, cI64(qOffset(c) + within)),
        16, 1024);
    Value db = wgmmaDescriptor128B(
        b, loc,
        arith::AddIOp::create(b, loc, stageAddr, cI64(kOffset(c) + within)), 16,
        1024);
    s = NVVM::WgmmaMmaAsyncOp::create(
        b, loc, sType, s, da, db, shapeS, NVVM::WGMMATypes::bf16,
        NVVM::WGMMATypes::bf16, NVVM::WGMMATypes::f32,
        kk == 0 ? NVVM::WGMMAScaleOut::zero : NVVM::WGMMAScaleOut::one,
        NVVM::WGMMAScaleIn::one, NVVM::WGMMAScaleIn::one, NVVM::MMALayout::row,
        NVVM::MMALayout::col, NVVM::MMAIntOverflowAttr());
  }
  NVVM::WgmmaGroupSyncAlignedOp::create(b, loc);
  NVVM::WgmmaWaitGroupSyncOp::create(b, loc, 0);

  // The accumulator of m64nN: this thread holds rows r0, r0 + 8 (half h)
  // at columns 8j + 2 (lane % 4) + e as element 4j + 2h + e.
  const int64_t js = t.bn / 8;
  SmallVector<Value> sv(t.bn / 2);
  for (int64_t e = 0; e < t.bn / 2; ++e)
    sv[e] = extract(s, e);
  if (masked) {
    // Key j is visible to row t when j <= pos0 + t (causal), or
    // j < pos0 + nt.
    Value j0 = mul(i, idx(t.bn));
    Value colBase = add(j0, mul(laneMod4, idx(2)));
    Value ninf = cF32(-std::numeric_limits<double>::infinity());
    Value limit[2];
    for (int h = 0; h < 2; ++h)
      limit[h] = p.causal ? add(add(pos0, rowT[h]), idx(1)) : add(pos0, nt);
    for (int64_t j = 0; j < js; ++j)
      for (int64_t e = 0; e < 2; ++e) {
        Value key = add(colBase, idx(8 * j + e));
        for (int h = 0; h < 2; ++h) {
          int64_t k = 4 * j + 2 * h + e;
          sv[k] =
              arith::SelectOp::create(b, loc, ult(key, limit[h]), sv[k], ninf);
        }
      }
  }
  const double c = p.scale * M_LOG2E;
  Value cScale = cF32(c);
  Value mNew[2], corr[2], negMc[2];
  for (int h = 0; h < 2; ++h) {
    Value mx = m[h];
    for (int64_t j = 0; j < js; ++j)
      for (int64_t e = 0; e < 2; ++e)
        mx = fmax(mx, sv[4 * j + 2 * h + e]);
    mx = fmax(mx, shflXor(mx, 1));
    mx = fmax(mx, shflXor(mx, 2));
    mNew[h] = mx;
    // m_old = -inf at the first block: exp2(-inf) = 0. Block 0 has key 0,
    // visible to every row, so m_new is finite.
    corr[h] = exp2(fmul(fsub(m[h], mx), cScale));
    negMc[h] = fmul(mx, cF32(-c));
  }
  SmallVector<Value> pv(t.bn / 2);
  Value lNew[2] = {fmul(l[0], corr[0]), fmul(l[1], corr[1])};
  for (int64_t j = 0; j < js; ++j)
    for (int h = 0; h < 2; ++h)
      for (int64_t e = 0; e < 2; ++e) {
        int64_t k = 4 * j + 2 * h + e;
        pv[k] = exp2(math::FmaOp::create(b, loc, sv[k], cScale, negMc[h]));
        lNew[h] = fadd(lNew[h], pv[k]);
      }
  // Rescale O.
  for (int64_t e = 0; e < p.headDim / 2; ++e) {
    int h = (e / 2) % 2;
    o = insert(o, fmul(extract(o, e), corr[h]), e);
  }
  // P as the A fragment of the k16 steps: step kc takes accumulator
  // elements 8kc .. 8kc+7 in pairs (rows r0 / r0 + 8, keys 16kc + 2q and
  // 16kc + 8 + 2q), each pair rounded to bf16x2.
  auto v2f32 = VectorType::get({2}, f32);
  auto v2bf16 = VectorType::get({2}, bf16);
  SmallVector<Value> pRegs;
  for (int64_t e = 0; e < t.bn / 2; e += 2) {
    Value pair = vector::FromElementsOp::create(b, loc, v2f32,
                                                ValueRange{pv[e], pv[e + 1]});
    Value h2 = arith::TruncFOp::create(b, loc, v2bf16, pair);
    pRegs.push_back(LLVM::BitcastOp::create(b, loc, i32, h2));
  }

  // O += P V.
  waitBar(barV(slot), use);
  NVVM::WgmmaFenceAlignedOp::create(b, loc);
  Value vBase = arith::AddIOp::create(b, loc, stageAddr, cI64(vOffset(0)));
  for (int64_t kc = 0; kc < t.bn / 16; ++kc)
    o = pvWgmma(o, ArrayRef<Value>(pRegs).slice(4 * kc, 4),
                arith::AddIOp::create(b, loc, vBase, cI64(kc * 16 * 128)));
  NVVM::WgmmaGroupSyncAlignedOp::create(b, loc);
  NVVM::WgmmaWaitGroupSyncOp::create(b, loc, 0);
  // Release the slot: lane 0 of each warp (count 4 * warpgroups).
  {
    Value lane0 =
        arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, lane, idx(0));
    auto rel = scf::IfOp::create(b, loc, lane0, false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(&rel.getThenRegion().front());
    nvgpu::MBarrierArriveOp::create(b, loc, nvgpu::MBarrierTokenType::get(ctx),
                                    bars, barEmpty(slot));
  }
  return {mNew[0], mNew[1], lNew[0], lNew[1], o};
}

void AttentionBuilder::build(gpu::GPUFuncOp fn, unsigned numInputs,
                             unsigned numResults) {
  Block *entry = &fn.getBody().front();
  ValueRange args = entry->getArguments();
  b.setInsertionPointToStart(entry);
  auto asIndex = [&](Value v) {
    return arith::IndexCastOp::create(b, loc, b.getIndexType(), v).getResult();
  };
  unsigned extents = numInputs + numResults;
  Value nb = asIndex(args[extents]);
  nt = asIndex(args[extents + 1]);
  pos0 = asIndex(args[extents + 2]);

  tid = gpu::ThreadIdOp::create(b, loc, gpu::Dimension::x);
  // The query blocks with the most keys (causal: the last) start first.
  Value qb = sub(sub(gpu::GridDimOp::create(b, loc, gpu::Dimension::x), idx(1)),
                 gpu::BlockIdOp::create(b, loc, gpu::Dimension::x));
  Value head = gpu::BlockIdOp::create(b, loc, gpu::Dimension::y);
  seqIdx = gpu::BlockIdOp::create(b, loc, gpu::Dimension::z);
  t0 = mul(qb, idx(kBm));
  // CTAs past the active sequences or tokens do nothing.
  Value active = arith::AndIOp::create(b, loc, ult(seqIdx, nb), ult(t0, nt));
  auto ifActive = scf::IfOp::create(b, loc, active, /*withElse=*/false);
  b.setInsertionPointToStart(&ifActive.getThenRegion().front());

  Value ptrQ = args[p.qArg], ptrK = args[p.kArg], ptrV = args[p.vArg];
  tmQ = UnrealizedConversionCastOp::create(b, loc, tmapQ, ptrQ).getResult(0);
  tmK = UnrealizedConversionCastOp::create(b, loc, tmapKV, ptrK).getResult(0);
  tmV = UnrealizedConversionCastOp::create(b, loc, tmapKV, ptrV).getResult(0);

  auto dynTy = MemRefType::get({ShapedType::kDynamic}, b.getI8Type(),
                               MemRefLayoutAttrInterface(), smemSpace);
  smem = gpu::DynamicSharedMemoryOp::create(b, loc, dynTy);
  Value base = memref::ExtractAlignedPointerAsIndexOp::create(b, loc, smem);
  ringBase = remu(sub(idx(1024), remu(base, 1024)), 1024);
  ringAddr = toI64(add(base, ringBase));

  const int64_t group = p.heads / p.kvHeads;
  kvCol = mul(divu(head, group), idx(p.headDim));
  Value qCol = mul(head, idx(p.headDim));
  Value rowBase = add(mul(seqIdx, nt), t0); // first q row of the CTA
  // Key blocks: causal, up to the last active row's position; else all
  // pos0 + nt keys. Blocks whose every key is visible to every row of the
  // CTA need no mask.
  Value lastT = sub(minu(add(t0, idx(kBm)), nt), idx(1));
  Value keyEnd = p.causal ? add(add(pos0, lastT), idx(1)) : add(pos0, nt);
  nKV = divu(add(keyEnd, idx(t.bn - 1)), t.bn);
  Value fullEnd = p.causal ? add(add(pos0, t0), idx(1)) : add(pos0, nt);
  Value nFull = minu(divu(fullEnd, t.bn), nKV);

  bars = nvgpu::MBarrierCreateOp::create(b, loc, barriers);
  isLeader =
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, tid, idx(0));
  {
    auto init = scf::IfOp::create(b, loc, isLeader, false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(&init.getThenRegion().front());
    nvgpu::MBarrierInitOp::create(b, loc, bars, idx(1), idx(0), Value());
    for (int64_t s = 0; s < t.stages; ++s) {
      nvgpu::MBarrierInitOp::create(b, loc, bars, idx(1), barK(idx(s)),
                                    Value());
      nvgpu::MBarrierInitOp::create(b, loc, bars, idx(1), barV(idx(s)),
                                    Value());
      nvgpu::MBarrierInitOp::create(b, loc, bars, idx(4 * kWg),
                                    barEmpty(idx(s)), Value());
    }
    NVVM::FenceMbarrierInitOp::create(b, loc);
    for (Value ptr : {ptrQ, ptrK, ptrV})
      fenceTensorMap(b, loc, ptr);
    nvgpu::TmaPrefetchOp::create(b, loc, tmQ, Value());
    nvgpu::TmaPrefetchOp::create(b, loc, tmK, Value());
    nvgpu::TmaPrefetchOp::create(b, loc, tmV, Value());
    // The Q tile, resident for the whole kernel.
    nvgpu::MBarrierArriveExpectTxOp::create(b, loc, bars, idx(t.qBytes()),
                                            idx(0), Value());
    for (int64_t c = 0; c < chunks; ++c)
      nvgpu::TmaAsyncLoadOp::create(b, loc, view(qBox, idx(qOffset(c))), bars,
                                    tmQ,
                                    ValueRange{add(qCol, idx(64 * c)), rowBase},
                                    idx(0), Value(), Value());
    // Key blocks 0 .. stages-1 (fewer when there are fewer).
    for (int64_t s = 0; s < t.stages; ++s) {
      auto pro = scf::IfOp::create(b, loc, ult(idx(s), nKV), false);
      OpBuilder::InsertionGuard g2(b);
      b.setInsertionPointToStart(&pro.getThenRegion().front());
      issueKV(idx(s), idx(s));
    }
  }
  gpu::BarrierOp::create(b, loc);

  wg = divu(tid, 128);
  Value inWg = remu(tid, 128);
  Value warp = divu(inWg, 32);
  lane = remu(tid, 32);
  laneMod4 = remu(lane, 4);
  Value r0 = add(add(mul(wg, idx(64)), mul(warp, idx(16))), divu(lane, 4));
  rowT[0] = add(t0, r0);
  rowT[1] = add(t0, add(r0, idx(8)));

  waitBar(idx(0), idx(0));
  Value ninf = cF32(-std::numeric_limits<double>::infinity());
  SmallVector<Value> state = {ninf, ninf, cF32(0), cF32(0),
                              LLVM::ZeroOp::create(b, loc, oType)};
  for (bool masked : {false, true}) {
    Value lo = masked ? nFull : idx(0), hi = masked ? nKV : nFull;
    auto loop = scf::ForOp::create(b, loc, lo, hi, idx(1), state);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(loop.getBody());
    SmallVector<Value> next =
        keyBlock(loop.getInductionVar(), loop.getRegionIterArgs(), masked);
    scf::YieldOp::create(b, loc, next);
    state.assign(loop.getResults().begin(), loop.getResults().end());
  }
  epilogue(state, args, numInputs);
  b.setInsertionPointToEnd(entry);
  gpu::ReturnOp::create(b, loc);
}

void AttentionBuilder::epilogue(ValueRange state, ValueRange args,
                                unsigned numInputs) {
  Value o = state[4];
  Value out = args[numInputs + p.outIndex];
  Value lseMem = p.lseIndex >= 0 ? args[numInputs + p.lseIndex] : Value();
  Value head = gpu::BlockIdOp::create(b, loc, gpu::Dimension::y);
  Value colBase = add(mul(head, idx(p.headDim)), mul(laneMod4, idx(2)));
  auto v2f32 = VectorType::get({2}, f32);
  auto outPair = VectorType::get({2}, p.outElem);
  auto align = llvm::MaybeAlign(p.outElem.getIntOrFloatBitWidth() / 4);
  for (int h = 0; h < 2; ++h) {
    // The four lanes of a row hold partial sums of l.
    Value l = state[2 + h];
    l = fadd(l, shflXor(l, 1));
    l = fadd(l, shflXor(l, 2));
    Value inv = arith::DivFOp::create(b, loc, cF32(1.0), l);
    Value row = add(mul(seqIdx, nt), rowT[h]);
    auto guard = scf::IfOp::create(b, loc, ult(rowT[h], nt), false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(&guard.getThenRegion().front());
    for (int64_t j = 0; j < p.headDim / 8; ++j) {
      int64_t e = 4 * j + 2 * h;
      Value v = vector::FromElementsOp::create(
          b, loc, v2f32,
          ValueRange{fmul(extract(o, e), inv), fmul(extract(o, e + 1), inv)});
      if (!p.outElem.isF32())
        v = arith::TruncFOp::create(b, loc, outPair, v);
      vector::StoreOp::create(b, loc, v, out,
                              ValueRange{row, add(colBase, idx(8 * j))},
                              /*nontemporal=*/false, align);
    }
    if (lseMem) {
      Value q0 = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq,
                                       laneMod4, idx(0));
      auto st = scf::IfOp::create(b, loc, q0, false);
      OpBuilder::InsertionGuard g2(b);
      b.setInsertionPointToStart(&st.getThenRegion().front());
      Value lse =
          fadd(fmul(state[h], cF32(p.scale)), math::LogOp::create(b, loc, l));
      memref::StoreOp::create(b, loc, lse, lseMem, ValueRange{row, head});
    }
  }
}

} // namespace

FailureOr<Operation *>
colossus::buildHopperAttention(FusionOp fusion, const HopperAttentionProblem &p,
                               StringRef name, OpBuilder &builder) {
  Location loc = fusion.getLoc();
  auto module = dyn_cast_or_null<gpu::GPUModuleOp>(
      builder.getInsertionBlock()->getParentOp());
  if (!module)
    return fusion.emitOpError("internal error: the Hopper attention must be "
                              "built in a gpu.module");
  MLIRContext *ctx = builder.getContext();
  prepareHopperModule(module, builder, loc);
  ctx->getOrLoadDialect<math::MathDialect>();

  Block &body = fusion.getBody().front();
  auto ptrTy = LLVM::LLVMPointerType::get(ctx);
  SmallVector<Type> argTypes;
  for (BlockArgument a : body.getArguments()) {
    unsigned n = a.getArgNumber();
    if (n == p.qArg || n == p.kArg || n == p.vArg) {
      argTypes.push_back(ptrTy);
      continue;
    }
    auto rt = cast<RankedTensorType>(a.getType());
    argTypes.push_back(MemRefType::get(rt.getShape(), rt.getElementType()));
  }
  for (Type t : fusion.getResultTypes()) {
    auto rt = cast<RankedTensorType>(t);
    argTypes.push_back(MemRefType::get(rt.getShape(), rt.getElementType()));
  }
  Type i64 = builder.getI64Type();
  argTypes.append({i64, i64, i64});
  auto fn = gpu::GPUFuncOp::create(builder, loc, name,
                                   builder.getFunctionType(argTypes, {}));
  fn->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), builder.getUnitAttr());
  fn.setKnownBlockSizeAttr(builder.getDenseI32ArrayAttr(
      {static_cast<int32_t>(HopperAttentionTile::kThreads), 1, 1}));

  AttentionBuilder ab(builder, loc, p);
  {
    OpBuilder::InsertionGuard g(builder);
    ab.build(fn, body.getNumArguments(), fusion.getNumResults());
  }

  const HopperAttentionTile &t = p.tile;
  unsigned numInputs = body.getNumArguments();
  char scaleText[32];
  std::snprintf(scaleText, sizeof(scaleText), "%.17g", p.scale);
  std::string abi = llvm::formatv(
      "b={0} s={1} t={2} h={3} kvh={4} d={5} causal={6} bm={7} bn={8} "
      "stages={9} grid={10},{3},{0} block={11},1,1 dynamic_smem={12} "
      "q_arg={13} k_arg={14} v_arg={15} out_arg={16} lse_arg={17} out={18} "
      "scale={19}",
      p.batch, p.seq, p.tokens, p.heads, p.kvHeads, p.headDim, p.causal ? 1 : 0,
      HopperAttentionTile::kBm, t.bn, t.stages,
      (p.seq + HopperAttentionTile::kBm - 1) / HopperAttentionTile::kBm,
      HopperAttentionTile::kThreads, t.dynamicSmemBytes(), p.qArg, p.kArg,
      p.vArg, numInputs + p.outIndex,
      p.lseIndex >= 0 ? static_cast<int>(numInputs) + p.lseIndex : -1,
      p.outElem.isF32() ? "f32" : "bf16", scaleText);
  fn->setAttr(kHopperAttentionAbiAttr, builder.getStringAttr(abi));
  return fn.getOperation();
}
