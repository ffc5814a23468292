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

#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FormatVariadic.h"

#include <cmath>
#include <cstdio>
#include <functional>

using namespace mlir;
using namespace colossus;

namespace {
/// The attention backward schedules (docs/hopper-attention.md "Backward").
enum BwdVariant { BwdV1 = 1, BwdV2 = 2, BwdV3 = 3 };
} // namespace

/// Internal: which dK/dV (and dQ) schedule the backward gets.
static llvm::cl::opt<BwdVariant> clBwdVariant(
    "hopper-attention-bwd", llvm::cl::Hidden, llvm::cl::init(BwdV2),
    llvm::cl::desc("internal: the Hopper attention backward schedule"),
    llvm::cl::values(
        clEnumValN(BwdV1, "v1",
                   "the first dK/dV kernel (out and lse read from global "
                   "memory inside the D computation)"),
        clEnumValN(BwdV2, "v2",
                   "the dK/dV kernel with the cp.async prefetch of out and "
                   "lse (the default)"),
        clEnumValN(BwdV3, "v3",
                   "decoupled warpgroups (named barriers), unmasked fast "
                   "path, dV wgmma overlapped with dS, longest-first CTA "
                   "order (dK/dV and dQ)")));

/// Internal: the older spelling of --hopper-attention-bwd=v1.
static llvm::cl::opt<bool>
    clBwdV1("hopper-attention-bwd-v1", llvm::cl::Hidden, llvm::cl::init(false),
            llvm::cl::desc("internal: the same as --hopper-attention-bwd=v1"));

/// The one `OpT` (`what`) of a group besides positions ops; null with
/// `whyNot` set when there is none or anything else.
template <typename OpT>
static OpT soleOpOf(Block &body, StringRef what, std::string &whyNot) {
  OpT found;
  for (Operation &op : body.without_terminator()) {
    if (isa<PositionsOp>(op))
      continue;
    if (auto a = dyn_cast<OpT>(op); a && !found) {
      found = a;
      continue;
    }
    whyNot = ("'" + op.getName().getStringRef() +
              "' in the group besides the " + what)
                 .str();
    return OpT();
  }
  if (!found)
    whyNot = ("no " + what + " in the group").str();
  return found;
}

std::optional<HopperAttentionProblem>
colossus::matchHopperAttention(FusionOp fusion, std::string &whyNot) {
  Block &body = fusion.getBody().front();
  auto attn = soleOpOf<AttentionOp>(body, "attention", whyNot);
  if (!attn)
    return std::nullopt;
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

/// What the forward and backward attention builders share: constants and
/// arithmetic at one builder, the dynamic shared memory ring and its
/// mbarriers, and the wgmma forms (A and B from shared memory; A from
/// registers with B transposed).
class KernelBase {
protected:
  KernelBase(OpBuilder &b, Location loc) : b(b), loc(loc), ctx(b.getContext()) {
    smemSpace = gpu::AddressSpaceAttr::get(
        ctx, gpu::GPUDialect::getWorkgroupAddressSpace());
    bf16 = b.getBF16Type();
    f32 = b.getF32Type();
    i32 = b.getI32Type();
    i64 = b.getI64Type();
  }

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

  Value asIndex(Value v) {
    return arith::IndexCastOp::create(b, loc, b.getIndexType(), v).getResult();
  }

  /// Lane 0 of each warp arrives on the slot's empty barrier `barId` (count
  /// 4 * warpgroups): the warp is done with the slot.
  void releaseSlot(Value lane, Value barId) {
    Value lane0 =
        arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, lane, idx(0));
    auto rel = scf::IfOp::create(b, loc, lane0, false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(&rel.getThenRegion().front());
    nvgpu::MBarrierArriveOp::create(b, loc, nvgpu::MBarrierTokenType::get(ctx),
                                    bars, barId);
  }

  Value view(MemRefType ty, Value byteOffset) {
    return memref::ViewOp::create(b, loc, ty, smem, add(ringBase, byteOffset),
                                  ValueRange{});
  }
  Value parityOf(Value use) {
    return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ne, remu(use, 2),
                                 idx(0));
  }
  void waitBar(Value id, Value use) {
    nvgpu::MBarrierTryWaitParityOp::create(b, loc, bars, parityOf(use),
                                           idx(10000000), id);
  }

  /// The 1024-aligned ring in dynamic shared memory: `smem`, the byte offset
  /// `ringBase` of its aligned start, its shared address `ringAddr` (i64).
  void setUpRing() {
    auto dynTy = MemRefType::get({ShapedType::kDynamic}, b.getI8Type(),
                                 MemRefLayoutAttrInterface(), smemSpace);
    smem = gpu::DynamicSharedMemoryOp::create(b, loc, dynTy);
    Value base = memref::ExtractAlignedPointerAsIndexOp::create(b, loc, smem);
    ringBase = remu(sub(idx(1024), remu(base, 1024)), 1024);
    ringAddr = toI64(add(base, ringBase));
  }
  Value addrAdd(Value addr, int64_t bytes) {
    return arith::AddIOp::create(b, loc, addr, cI64(bytes));
  }

  /// acc (m64nN, f32) = / += A B over `kSteps` k16 steps, A (64 rows) and
  /// B (N rows) both K-major in 128-byte swizzled shared memory in chunks of
  /// 64 columns (`aChunk`, `bChunk` bytes apart). Not committed.
  Value ssWgmma(Value acc, LLVM::LLVMStructType accTy, int64_t n, Value aAddr,
                int64_t aChunk, Value bAddr, int64_t bChunk, int64_t kSteps,
                bool accumulate) {
    auto shape = NVVM::MMAShapeAttr::get(ctx, 64, n, 16);
    for (int64_t kk = 0; kk < kSteps; ++kk) {
      int64_t c = kk / 4, within = (kk % 4) * 32;
      Value da = wgmmaDescriptor128B(
          b, loc, addrAdd(aAddr, c * aChunk + within), 16, 1024);
      Value db = wgmmaDescriptor128B(
          b, loc, addrAdd(bAddr, c * bChunk + within), 16, 1024);
      acc = NVVM::WgmmaMmaAsyncOp::create(
          b, loc, accTy, acc, da, db, shape, NVVM::WGMMATypes::bf16,
          NVVM::WGMMATypes::bf16, NVVM::WGMMATypes::f32,
          kk == 0 && !accumulate ? NVVM::WGMMAScaleOut::zero
                                 : NVVM::WGMMAScaleOut::one,
          NVVM::WGMMAScaleIn::one, NVVM::WGMMAScaleIn::one,
          NVVM::MMALayout::row, NVVM::MMALayout::col,
          NVVM::MMAIntOverflowAttr());
    }
    return acc;
  }

  /// acc (m64nN, f32, N = headDim) += A B for one k16 step with A (64 x 16,
  /// bf16 pairs in 4 32-bit registers, the wgmma A fragment) from registers
  /// and B (16 x N, N contiguous: "MN-major", transposed) from 128-byte
  /// swizzled shared memory at `bAddr`, its 64-column halves `lbo` bytes
  /// apart. Inline PTX: nvvm.wgmma.mma_async only takes descriptors.
  Value rsWgmma(Value acc, LLVM::LLVMStructType accTy, int64_t n,
                ArrayRef<Value> aRegs, Value bAddr, int64_t lbo);
  /// acc += A B over aRegs.size() / 4 k16 steps: rsWgmma with the A
  /// fragment registers 4kc .. 4kc+3 and B at `bAddr + bOff + kc * 16 *
  /// 128` (16 swizzled 128-byte rows a step).
  Value rsWgmmaSteps(Value acc, LLVM::LLVMStructType accTy, int64_t n,
                     ArrayRef<Value> aRegs, Value bAddr, int64_t bOff,
                     int64_t lbo) {
    for (int64_t kc = 0; kc < static_cast<int64_t>(aRegs.size()) / 4; ++kc)
      acc = rsWgmma(acc, accTy, n, aRegs.slice(4 * kc, 4),
                    addrAdd(bAddr, bOff + kc * 16 * 128), lbo);
    return acc;
  }

  /// Accumulator elements in pairs, rounded to bf16x2: the wgmma A fragment
  /// (k16 step kc = registers 4kc .. 4kc+3) of the accumulator's rows.
  SmallVector<Value> packBf16(ArrayRef<Value> v) {
    auto v2f32 = VectorType::get({2}, f32);
    auto v2bf16 = VectorType::get({2}, bf16);
    SmallVector<Value> regs;
    for (size_t e = 0; e + 1 < v.size(); e += 2) {
      Value pair = vector::FromElementsOp::create(b, loc, v2f32,
                                                  ValueRange{v[e], v[e + 1]});
      Value h2 = arith::TruncFOp::create(b, loc, v2bf16, pair);
      regs.push_back(LLVM::BitcastOp::create(b, loc, i32, h2));
    }
    return regs;
  }

  /// Row statistics of the backward for row `row` of a query tile (global
  /// row `grow`, head `hh`; 4 threads a row, `part` = this thread's quarter
  /// of head_dim): D = dout . out (dout from the 128-byte swizzled shared
  /// tile at ring offset `tileOff`, 64-column chunks `chunkBytes` apart,
  /// viewed as `box`; out from global memory) summed over the row's 4
  /// lanes, and lse * log2 e; both 0 when `valid` is false. With
  /// `loadOut` / `loadLse` (the dK/dV kernel's prefetch buffers), the
  /// thread's k-th 8 columns of out and the row's lse come from them
  /// instead of global memory.
  std::pair<Value, Value>
  rowStats(Value valid, Value row, Value part, Value grow, Value hh,
           int64_t headDim, MemRefType box, Value tileOff, int64_t chunkBytes,
           Value outMem, Value lseMem,
           llvm::function_ref<Value(int64_t)> loadOut = nullptr,
           llvm::function_ref<Value()> loadLse = nullptr) {
    Value colHead = mul(hh, idx(headDim));
    const int64_t perPart = headDim / 4; // 16 or 32 columns
    auto ifValid = scf::IfOp::create(b, loc, TypeRange{f32, f32}, valid, true);
    {
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(&ifValid.getThenRegion().front());
      auto v8bf16 = VectorType::get({8}, bf16);
      auto v8f32 = VectorType::get({8}, f32);
      Value sum = cF32(0.0);
      for (int64_t k = 0; k < perPart / 8; ++k) {
        Value col = add(mul(part, idx(perPart)), idx(8 * k));
        // 128-byte swizzle: the 16-byte unit u of row r is stored at unit
        // u ^ (r % 8) of its 128-byte row.
        Value chunk = divu(col, 64);
        Value unit =
            arith::XOrIOp::create(b, loc, divu(remu(col, 64), 8), remu(row, 8));
        Value tile = view(box, add(tileOff, mul(chunk, idx(chunkBytes))));
        // 16-byte aligned: one 128-bit load each.
        Value dO = vector::LoadOp::create(b, loc, v8bf16, tile,
                                          ValueRange{row, mul(unit, idx(8))},
                                          false, llvm::MaybeAlign(16));
        Value o =
            loadOut
                ? loadOut(k)
                : vector::LoadOp::create(b, loc, v8bf16, outMem,
                                         ValueRange{grow, add(colHead, col)},
                                         false, llvm::MaybeAlign(16))
                      .getResult();
        Value prod = arith::MulFOp::create(
            b, loc, arith::ExtFOp::create(b, loc, v8f32, dO),
            arith::ExtFOp::create(b, loc, v8f32, o));
        sum = fadd(sum, vector::ReductionOp::create(
                            b, loc, vector::CombiningKind::ADD, prod));
      }
      Value lse =
          loadLse ? loadLse()
                  : memref::LoadOp::create(b, loc, lseMem, ValueRange{grow, hh})
                        .getResult();
      scf::YieldOp::create(b, loc, ValueRange{sum, fmul(lse, cF32(M_LOG2E))});
      b.setInsertionPointToStart(&ifValid.getElseRegion().front());
      scf::YieldOp::create(b, loc, ValueRange{cF32(0.0), cF32(0.0)});
    }
    Value d = ifValid.getResult(0);
    d = fadd(d, shflXor(d, 1));
    d = fadd(d, shflXor(d, 2));
    return {d, ifValid.getResult(1)};
  }

  OpBuilder &b;
  Location loc;
  MLIRContext *ctx;
  Attribute smemSpace;
  Type bf16, f32, i32, i64;
  Value smem, ringBase, ringAddr, bars;
};

Value KernelBase::rsWgmma(Value acc, LLVM::LLVMStructType accTy, int64_t n,
                          ArrayRef<Value> aRegs, Value bAddr, int64_t lbo) {
  const int64_t regs = n / 2; // accumulator registers
  Value desc = wgmmaDescriptor128B(b, loc, bAddr, lbo, /*sbo=*/1024);
  std::string ptx = "{\n.reg .pred p;\nsetp.ne.b32 p, $" +
                    std::to_string(2 * regs + 5) +
                    ", 0;\nwgmma.mma_async.sync.aligned.m64n" +
                    std::to_string(n) + "k16.f32.bf16.bf16 {";
  std::string constraints;
  for (int64_t i = 0; i < regs; ++i) {
    ptx += (i ? ", $" : "$") + std::to_string(i);
    constraints += (i ? ",=f" : "=f");
  }
  ptx += "}, {";
  for (int64_t i = 0; i < 4; ++i)
    ptx += (i ? ", $" : "$") + std::to_string(2 * regs + i);
  // scale-d = p (accumulate), scale-a = scale-b = 1, trans-b = 1 (B is
  // MN-major).
  ptx += "}, $" + std::to_string(2 * regs + 4) + ", p, 1, 1, 1;\n}";
  SmallVector<Value> operands;
  for (int64_t i = 0; i < regs; ++i) {
    constraints += "," + std::to_string(i);
    operands.push_back(extract(acc, i));
  }
  for (Value r : aRegs)
    operands.push_back(r);
  operands.push_back(desc);
  operands.push_back(cI32(1));
  constraints += ",r,r,r,r,l,r";
  return LLVM::InlineAsmOp::create(b, loc, accTy, operands, ptx, constraints,
                                   /*has_side_effects=*/true,
                                   /*is_align_stack=*/false,
                                   LLVM::tailcallkind::TailCallKind::None,
                                   LLVM::AsmDialectAttr(), ArrayAttr())
      .getResult(0);
}

/// Builds the body of the kernel; one instance per kernel.
class AttentionBuilder : KernelBase {
public:
  AttentionBuilder(OpBuilder &b, Location loc, const HopperAttentionProblem &p)
      : KernelBase(b, loc), p(p), t(p.tile) {
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
  /// Byte offsets in the 1024-aligned dynamic shared memory ring.
  int64_t qOffset(int64_t chunk) const { return chunk * kBm * 128; }
  int64_t kOffset(int64_t chunk) const {
    return t.qBytes() + chunk * t.bn * 128;
  }
  int64_t vOffset(int64_t chunk) const {
    return t.qBytes() + t.kvTileBytes() + chunk * t.bn * 128;
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

  /// O += P V with P (64 x bn, bf16 pairs in 32-bit registers, the A
  /// fragment layout) from registers and V (bn x d, d contiguous: B
  /// "MN-major", transposed) from shared memory at `vAddr`.
  Value pvWgmma(Value o, ArrayRef<Value> pRegs, Value vAddr);

  /// One key block: `masked` applies the causal / length mask.
  SmallVector<Value> keyBlock(Value i, ValueRange state, bool masked);

  void epilogue(ValueRange state, ValueRange args, unsigned numInputs);

  const HopperAttentionProblem &p;
  const HopperAttentionTile &t;
  MemRefType qBox, kvBox;
  nvgpu::TensorMapDescriptorType tmapQ, tmapKV;
  nvgpu::MBarrierGroupType barriers;
  LLVM::LLVMStructType sType, oType;
  int64_t chunks = 1;
  Value tmQ, tmK, tmV;
  Value tid, isLeader, lane, wg, laneMod4, nt, pos0, seqIdx, t0, kvCol, nKV;
  /// Rows r0 and r0 + 8 of this thread (positions in the sequence).
  Value rowT[2];
};

Value AttentionBuilder::pvWgmma(Value o, ArrayRef<Value> pRegs, Value vAddr) {
  // V tile: 16 keys per k16 step are 16 rows of 128 bytes (2 KiB); the two
  // 64-column halves of d (head_dim 128) are `bn * 128` bytes apart (the
  // leading byte offset of an MN-major operand), the 8-row groups along the
  // keys 1024 bytes (the stride byte offset).
  return rsWgmma(o, oType, p.headDim, pRegs, vAddr, /*lbo=*/t.bn * 128);
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
  Value qWg =
      arith::AddIOp::create(b, loc, ringAddr, toI64(mul(wg, idx(64 * 128))));
  Value s = ssWgmma(LLVM::UndefOp::create(b, loc, sType), sType, t.bn, qWg,
                    kBm * 128, addrAdd(stageAddr, kOffset(0)), t.bn * 128,
                    p.headDim / 16, /*accumulate=*/false);
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
  SmallVector<Value> pRegs = packBf16(pv);

  // O += P V.
  waitBar(barV(slot), use);
  NVVM::WgmmaFenceAlignedOp::create(b, loc);
  Value vBase = arith::AddIOp::create(b, loc, stageAddr, cI64(vOffset(0)));
  for (int64_t kc = 0; kc < t.bn / 16; ++kc)
    o = pvWgmma(o, ArrayRef<Value>(pRegs).slice(4 * kc, 4),
                arith::AddIOp::create(b, loc, vBase, cI64(kc * 16 * 128)));
  NVVM::WgmmaGroupSyncAlignedOp::create(b, loc);
  NVVM::WgmmaWaitGroupSyncOp::create(b, loc, 0);
  releaseSlot(lane, barEmpty(slot));
  return {mNew[0], mNew[1], lNew[0], lNew[1], o};
}

void AttentionBuilder::build(gpu::GPUFuncOp fn, unsigned numInputs,
                             unsigned numResults) {
  Block *entry = &fn.getBody().front();
  ValueRange args = entry->getArguments();
  b.setInsertionPointToStart(entry);
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

  setUpRing();

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

constexpr int64_t kBwdBn = HopperAttentionBwdTile::kBn;
constexpr int64_t kBwdBq = HopperAttentionBwdTile::kBq;
constexpr int64_t kBwdStages = HopperAttentionBwdTile::kStages;

/// What the dK/dV and the dQ kernels share: Q / dO tiles of `qRows` rows
/// and K / V tiles of `kvRows` keys (bf16, 128-byte swizzled, chunks of 64
/// columns), their four tensor maps, the launch extents and the thread's
/// place in its warpgroup.
class BwdKernelBase : protected KernelBase {
protected:
  BwdKernelBase(OpBuilder &b, Location loc, const HopperAttentionBwdProblem &p,
                int64_t qRows, int64_t kvRows, int64_t numBarriers,
                int64_t sCols)
      : KernelBase(b, loc), p(p) {
    qBox = MemRefType::get({qRows, 64}, bf16, MemRefLayoutAttrInterface(),
                           smemSpace);
    kvBox = MemRefType::get({1, kvRows, 64}, bf16, MemRefLayoutAttrInterface(),
                            smemSpace);
    tmapQ = swizzled128TensorMap(ctx, qBox);
    tmapKV = swizzled128TensorMap(ctx, kvBox);
    barriers = nvgpu::MBarrierGroupType::get(ctx, smemSpace, numBarriers);
    sType = LLVM::LLVMStructType::getLiteral(ctx,
                                             SmallVector<Type>(sCols / 2, f32));
    accType = LLVM::LLVMStructType::getLiteral(
        ctx, SmallVector<Type>(p.headDim / 2, f32));
    chunks = p.headDim / 64;
  }

  /// The three i64 extents at `args[extents]`: sets nt and pos0, returns the
  /// number of sequences.
  Value readExtents(ValueRange args, unsigned extents) {
    Value nb = asIndex(args[extents]);
    nt = asIndex(args[extents + 1]);
    pos0 = asIndex(args[extents + 2]);
    return nb;
  }

  /// The tensor maps of Q, dO, K and V (generic pointers in `args`), then
  /// the shared-memory ring.
  void setUpMapsAndRing(ValueRange args) {
    tmQ = UnrealizedConversionCastOp::create(b, loc, tmapQ, args[p.qArg])
              .getResult(0);
    tmDO = UnrealizedConversionCastOp::create(b, loc, tmapQ, args[p.doArg])
               .getResult(0);
    tmK = UnrealizedConversionCastOp::create(b, loc, tmapKV, args[p.kArg])
              .getResult(0);
    tmV = UnrealizedConversionCastOp::create(b, loc, tmapKV, args[p.vArg])
              .getResult(0);
    setUpRing();
  }

  /// Thread 0, after initialising the barriers: fences them, acquires the
  /// four tensor maps and prefetches them.
  void fenceAndPrefetch(ValueRange args) {
    NVVM::FenceMbarrierInitOp::create(b, loc);
    for (Value ptr : {args[p.qArg], args[p.kArg], args[p.vArg], args[p.doArg]})
      fenceTensorMap(b, loc, ptr);
    for (Value tm : {tmQ, tmK, tmV, tmDO})
      nvgpu::TmaPrefetchOp::create(b, loc, tm, Value());
  }

  /// Sets wg, lane and laneMod4 from tid; returns the thread's first
  /// accumulator row r0 in the CTA's tile (the second is r0 + 8).
  Value threadRow() {
    wg = divu(tid, 128);
    Value warp = divu(remu(tid, 128), 32);
    lane = remu(tid, 32);
    laneMod4 = remu(lane, 4);
    return add(add(mul(wg, idx(64)), mul(warp, idx(16))), divu(lane, 4));
  }

  /// Thread 0: refills the ring slot of iteration it-1 (of `stages`) with
  /// iteration it-1+stages, if that is below `count`, once every warp
  /// released it (`emptyBar(slot)` completes); `issue(next, slot)` issues
  /// the loads.
  void refillSlotOf(Value it, int64_t stages, Value count,
                    llvm::function_ref<Value(Value)> emptyBar,
                    llvm::function_ref<void(Value, Value)> issue) {
    Value prev = sub(it, idx(1));
    Value next = add(prev, idx(stages));
    Value want = arith::AndIOp::create(
        b, loc, isLeader,
        arith::AndIOp::create(b, loc, ule(idx(1), it), ult(next, count)));
    auto refill = scf::IfOp::create(b, loc, want, false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(&refill.getThenRegion().front());
    Value prevSlot = remu(prev, stages);
    waitBar(emptyBar(prevSlot), divu(prev, stages));
    issue(next, prevSlot);
  }

  const HopperAttentionBwdProblem &p;
  MemRefType qBox, kvBox;
  nvgpu::TensorMapDescriptorType tmapQ, tmapKV;
  nvgpu::MBarrierGroupType barriers;
  LLVM::LLVMStructType sType, accType;
  int64_t chunks = 1;
  Value tmQ, tmK, tmV, tmDO;
  Value tid, isLeader, lane, wg, laneMod4, nt, pos0, seqIdx;
};

/// Builds the body of the dK/dV kernel: one CTA per (key block of 128,
/// kv head, sequence), K and V resident, Q and dO tiles of 64 query rows of
/// every query head of the GQA group streamed through a ring of stages;
/// with tile.prefetchOut (the default) the out and lse rows of the D
/// computation come one iteration ahead by cp.async into two buffers.
class AttentionBwdBuilder : BwdKernelBase {
public:
  AttentionBwdBuilder(OpBuilder &b, Location loc,
                      const HopperAttentionBwdProblem &p)
      : BwdKernelBase(b, loc, p, kBwdBq, kBwdBn, 1 + 2 * kBwdStages, kBwdBq),
        t(p.tile) {
    statsTy =
        MemRefType::get({kBwdBq}, f32, MemRefLayoutAttrInterface(), smemSpace);
  }

  void build(gpu::GPUFuncOp fn, unsigned numInputs);

private:
  // Ring layout (bytes from the 1024-aligned start): K, V (resident, each
  // head_dim/64 chunks of [128 keys][64]); per stage a Q and a dO tile
  // (chunks of [64 rows][64]); per stage the D and lse of the tile's rows.
  int64_t kOff(int64_t c) const { return c * kBwdBn * 128; }
  int64_t vOff(int64_t c) const { return t.kvTileBytes() + c * kBwdBn * 128; }
  int64_t qOff(int64_t c) const { return c * kBwdBq * 128; }
  int64_t doOff(int64_t c) const { return t.qTileBytes() + c * kBwdBq * 128; }
  Value stageOff(Value slot) {
    return add(idx(2 * t.kvTileBytes()), mul(slot, idx(t.stageBytes())));
  }
  Value statsOff(Value slot) {
    return add(idx(2 * t.kvTileBytes() + kBwdStages * t.stageBytes()),
               mul(slot, idx(t.statsBytes())));
  }
  /// Prefetch buffer `buf` (0 or 1): the out rows, 16-byte unit k of
  /// thread tid at byte k * kThreads * 16 + tid * 16 (conflict-free 128-bit
  /// loads), then the tile's lse values at byte kThreads * head_dim / 2.
  Value prefetchOff(Value buf) {
    return add(idx(2 * t.kvTileBytes() +
                   kBwdStages * (t.stageBytes() + t.statsBytes())),
               mul(buf, idx(t.prefetchBytes())));
  }
  int64_t prefetchLseOff() const {
    return HopperAttentionBwdTile::kThreads * p.headDim / 2;
  }
  /// Inline PTX without results; clobbers memory, so LLVM keeps the shared
  /// loads after a cp.async wait.
  void asmVoid(StringRef text, ValueRange operands, StringRef constraints) {
    LLVM::InlineAsmOp::create(b, loc, TypeRange(), operands, text, constraints,
                              /*has_side_effects=*/true,
                              /*is_align_stack=*/false,
                              LLVM::tailcallkind::TailCallKind::None,
                              LLVM::AsmDialectAttr(), ArrayAttr());
  }
  Value addI64(Value x, Value y) { return arith::AddIOp::create(b, loc, x, y); }
  /// %tid.x read where it is used (inline PTX with side effects): keeps
  /// LLVM from hoisting the thread's prefetch and stats addresses out of
  /// the loop, where they would stay live across the wgmma accumulators.
  Value tidHere() {
    Value v = LLVM::InlineAsmOp::create(
                  b, loc, i32, ValueRange(), "mov.u32 $0, %tid.x;", "=r",
                  /*has_side_effects=*/true, /*is_align_stack=*/false,
                  LLVM::tailcallkind::TailCallKind::None,
                  LLVM::AsmDialectAttr(), ArrayAttr())
                  .getResult(0);
    return arith::IndexCastUIOp::create(b, loc, b.getIndexType(), v);
  }
  Value barFull(Value slot) { return add(idx(1), slot); }
  Value barEmpty(Value slot) { return add(idx(1 + kBwdStages), slot); }
  Value divuV(Value x, Value y) { return arith::DivUIOp::create(b, loc, x, y); }
  Value remuV(Value x, Value y) { return arith::RemUIOp::create(b, loc, x, y); }

  /// Iteration `it` visits query head `hh` (of the kv head's group) and the
  /// query tile starting at token `tq0`.
  /// (The quotient and remainder by nQb in 32 bits: it < group * nQb.)
  void coords(Value it, Value &hh, Value &tq0) {
    Value q = it, r = it;
    if (p.heads / p.kvHeads == 1) {
      q = idx(0);
    } else {
      Value it32 = arith::IndexCastUIOp::create(b, loc, i32, it);
      Value n32 = arith::IndexCastUIOp::create(b, loc, i32, nQb);
      Value q32 = arith::DivUIOp::create(b, loc, it32, n32);
      q = arith::IndexCastUIOp::create(b, loc, b.getIndexType(), q32);
      r = sub(it, mul(q, nQb));
    }
    hh = add(mul(kvHead, idx(p.heads / p.kvHeads)), q);
    tq0 = mul(add(qbFirst, r), idx(kBwdBq));
  }

  /// Thread 0: the Q and dO tiles of iteration `it` into stage `slot`.
  void issueQdO(Value it, Value slot) {
    Value hh, tq0;
    coords(it, hh, tq0);
    Value row = add(mul(seqIdx, nt), tq0);
    Value col = mul(hh, idx(p.headDim));
    Value st = stageOff(slot);
    nvgpu::MBarrierArriveExpectTxOp::create(b, loc, bars, idx(t.stageBytes()),
                                            barFull(slot), Value());
    for (int64_t c = 0; c < chunks; ++c) {
      SmallVector<Value> at = {add(col, idx(64 * c)), row};
      nvgpu::TmaAsyncLoadOp::create(b, loc, view(qBox, add(st, idx(qOff(c)))),
                                    bars, tmQ, at, barFull(slot), Value(),
                                    Value());
      nvgpu::TmaAsyncLoadOp::create(b, loc, view(qBox, add(st, idx(doOff(c)))),
                                    bars, tmDO, at, barFull(slot), Value(),
                                    Value());
    }
  }

  /// All threads: D = rowsum(dO * O) (dO from the swizzled shared tile, O
  /// from the prefetch buffer of iteration `it` or global memory) and
  /// lse * log2 e of the tile's 64 rows into the stage's stats (0 for rows
  /// past nt). 4 threads per row.
  void stats(Value it, Value slot, Value hh, Value tq0, Value outMem,
             Value lseMem);

  /// All threads: cp.async of the out row quarter (head_dim / 4 columns)
  /// that this thread's D computation of iteration `it` reads, and (one
  /// thread a row) the row's lse, into prefetch buffer it % 2; one commit
  /// group. Rows past nt are not read.
  void prefetchOut(Value it, Value outMem, Value lseMem);
  /// The thread of part 0 of a row: cp.async of the row's lse (sequence
  /// row `grow`, head `hh`) to shared address `dst` (no commit).
  void prefetchLse(Value part, Value grow, Value hh, Value lseMem,
                   llvm::function_ref<Value()> dst);

  /// One iteration: S^T, dP^T, P^T, dS^T and the dV, dK updates.
  SmallVector<Value> step(Value it, ValueRange acc, Value outMem, Value lseMem);

  /// Issues S^T = K Q^T and dP^T = V dO^T of the stage `slot` (m64n64, A =
  /// this warpgroup's 64 keys of K (V), B = the Q (dO) tile, all K-major)
  /// as one committed wgmma group; returns {S^T, dP^T} (not yet waited).
  std::pair<Value, Value> issueScores(Value slot);

  /// Thread 0: refills the stage of iteration it-1 with iteration
  /// it-1+stages once every warp released it.
  void refillPrevious(Value it);

  // ---- v3 (tile.decoupled) -------------------------------------------------
  /// This warpgroup's area (byte offset in the ring): out buffer, lse, two
  /// stats slots (HopperAttentionBwdTile::wgAreaBytes).
  Value wgAreaOff(Value wgv) {
    return add(idx(2 * t.kvTileBytes() + kBwdStages * t.stageBytes()),
               mul(wgv, idx(t.wgAreaBytes())));
  }
  /// Stats slot it % 2 of the area at `area`: D at +0, lse log2 e at +kBq*4.
  Value wgStatsOff(Value area, Value it) {
    return add(add(area, idx(t.wgOutBytes() + kBwdBq * 4)),
               mul(remu(it, 2), idx(t.statsBytes())));
  }
  /// The 16-byte unit (of 8 columns) that the thread of `part` (0, 1: the
  /// two threads of a row) reads k-th: part p reads the units
  /// p * head_dim / 16 .. of its row, rotated by 4 * p, so that the two
  /// threads of a row hit different banks of the swizzled dO tile.
  Value v3Unit(Value part, int64_t k) {
    const int64_t units = p.headDim / 16;
    return add(mul(part, idx(units)),
               remu(add(idx(k), mul(part, idx(4))), units));
  }
  /// cp.async of the out row half and the lse that this thread's D
  /// computation of iteration `it` reads, into its warpgroup's buffer; one
  /// commit group. Rows past nt are not read.
  void prefetchV3(Value it, Value outMem, Value lseMem);
  /// D = rowsum(dO * O) and lse * log2 e of the tile's 64 rows by this
  /// warpgroup's 128 threads (2 a row) into its stats slot it % 2.
  void statsV3(Value it, Value slot, Value tq0);
  /// bar.sync 1 + warpgroup, 128: the warpgroup's threads only.
  void warpgroupBarrier();
  SmallVector<Value> stepV3(Value it, ValueRange acc, Value outMem,
                            Value lseMem);

  void epilogue(ValueRange acc, Value dkMem, Value dvMem);

  const HopperAttentionBwdTile &t;
  MemRefType statsTy;
  Value kvHead, j0;
  Value qbFirst, nQb, nIter;
  /// Key positions of this thread's accumulator rows r0 and r0 + 8.
  Value keyPos[2];
};

void AttentionBwdBuilder::prefetchLse(Value part, Value grow, Value hh,
                                      Value lseMem,
                                      llvm::function_ref<Value()> dst) {
  Value first =
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, part, idx(0));
  auto lse = scf::IfOp::create(b, loc, first, false);
  OpBuilder::InsertionGuard g(b);
  b.setInsertionPointToStart(&lse.getThenRegion().front());
  Value lsePtr =
      toI64(memref::ExtractAlignedPointerAsIndexOp::create(b, loc, lseMem));
  Value lseSrc =
      addI64(lsePtr, toI64(mul(add(mul(grow, idx(p.heads)), hh), idx(4))));
  asmVoid("{\n.reg .u64 g;\ncvta.to.global.u64 g, $1;\n"
          "cp.async.ca.shared.global [$0], [g], 4;\n}",
          ValueRange{dst(), lseSrc}, "l,l,~{memory}");
}

void AttentionBwdBuilder::prefetchOut(Value it, Value outMem, Value lseMem) {
  Value hh, tq0;
  coords(it, hh, tq0);
  Value tidL = t.prefetchOut ? tidHere() : tid;
  Value row = divu(tidL, 4), part = remu(tidL, 4);
  Value tq = add(tq0, row);
  {
    auto valid = scf::IfOp::create(b, loc, ult(tq, nt), false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(&valid.getThenRegion().front());
    const int64_t perPart = p.headDim / 4;
    Value grow = add(mul(seqIdx, nt), tq);
    Value buf = add(ringAddr, toI64(prefetchOff(remu(it, 2))));
    Value outPtr =
        toI64(memref::ExtractAlignedPointerAsIndexOp::create(b, loc, outMem));
    Value elem = add(mul(grow, idx(p.heads * p.headDim)),
                     add(mul(hh, idx(p.headDim)), mul(part, idx(perPart))));
    Value src = addI64(outPtr, toI64(mul(elem, idx(2))));
    Value dst = addI64(buf, toI64(mul(tidL, idx(16))));
    const char *cp16 = "{\n.reg .u64 g;\ncvta.to.global.u64 g, $1;\n"
                       "cp.async.cg.shared.global [$0], [g], 16;\n}";
    for (int64_t k = 0; k < perPart / 8; ++k)
      asmVoid(cp16,
              ValueRange{
                  addI64(dst, cI64(k * HopperAttentionBwdTile::kThreads * 16)),
                  addI64(src, cI64(16 * k))},
              "l,l,~{memory}");
    prefetchLse(part, grow, hh, lseMem, [&] {
      return addI64(buf, toI64(add(idx(prefetchLseOff()), mul(row, idx(4)))));
    });
  }
  asmVoid("cp.async.commit_group;", ValueRange(), "~{memory}");
}

void AttentionBwdBuilder::stats(Value it, Value slot, Value hh, Value tq0,
                                Value outMem, Value lseMem) {
  Value tidL = t.prefetchOut ? tidHere() : tid;
  Value row = divu(tidL, 4), part = remu(tidL, 4);
  Value tq = add(tq0, row);
  Value valid = ult(tq, nt);
  Value grow = add(mul(seqIdx, nt), tq);
  std::function<Value(int64_t)> loadOut;
  std::function<Value()> loadLse;
  if (t.prefetchOut) {
    Value buf = prefetchOff(remu(it, 2));
    const int64_t units = HopperAttentionBwdTile::kThreads * p.headDim / 4;
    loadOut = [this, buf, units, tidL](int64_t k) -> Value {
      Value v = view(MemRefType::get({units}, bf16, MemRefLayoutAttrInterface(),
                                     smemSpace),
                     buf);
      Value at =
          add(idx(k * HopperAttentionBwdTile::kThreads * 8), mul(tidL, idx(8)));
      return vector::LoadOp::create(b, loc, VectorType::get({8}, bf16), v,
                                    ValueRange{at}, false,
                                    llvm::MaybeAlign(16));
    };
    loadLse = [this, buf, row]() -> Value {
      Value v = view(statsTy, add(buf, idx(prefetchLseOff())));
      return memref::LoadOp::create(b, loc, v, ValueRange{row});
    };
  }
  auto [d, lse2] =
      rowStats(valid, row, part, grow, hh, p.headDim, qBox,
               add(stageOff(slot), idx(doOff(0))), kBwdBq * 128, outMem, lseMem,
               loadOut ? llvm::function_ref<Value(int64_t)>(loadOut)
                       : llvm::function_ref<Value(int64_t)>(),
               loadLse ? llvm::function_ref<Value()>(loadLse)
                       : llvm::function_ref<Value()>());
  Value first =
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, part, idx(0));
  auto st = scf::IfOp::create(b, loc, first, false);
  OpBuilder::InsertionGuard g(b);
  b.setInsertionPointToStart(&st.getThenRegion().front());
  Value base = statsOff(slot);
  memref::StoreOp::create(b, loc, d, view(statsTy, base), ValueRange{row});
  memref::StoreOp::create(
      b, loc, lse2, view(statsTy, add(base, idx(kBwdBq * 4))), ValueRange{row});
}

void AttentionBwdBuilder::refillPrevious(Value it) {
  refillSlotOf(
      it, kBwdStages, nIter, [&](Value slot) { return barEmpty(slot); },
      [&](Value next, Value slot) { issueQdO(next, slot); });
}

std::pair<Value, Value> AttentionBwdBuilder::issueScores(Value slot) {
  Value stageAddr = add(ringAddr, toI64(stageOff(slot)));
  Value wgRows = toI64(mul(wg, idx(64 * 128)));
  Value kWg = add(addrAdd(ringAddr, kOff(0)), wgRows);
  Value vWg = add(addrAdd(ringAddr, vOff(0)), wgRows);
  NVVM::WgmmaFenceAlignedOp::create(b, loc);
  Value sT = ssWgmma(LLVM::UndefOp::create(b, loc, sType), sType, kBwdBq, kWg,
                     kBwdBn * 128, addrAdd(stageAddr, qOff(0)), kBwdBq * 128,
                     p.headDim / 16, /*accumulate=*/false);
  Value dpT = ssWgmma(LLVM::UndefOp::create(b, loc, sType), sType, kBwdBq, vWg,
                      kBwdBn * 128, addrAdd(stageAddr, doOff(0)), kBwdBq * 128,
                      p.headDim / 16, /*accumulate=*/false);
  NVVM::WgmmaGroupSyncAlignedOp::create(b, loc);
  return {sT, dpT};
}

SmallVector<Value> AttentionBwdBuilder::step(Value it, ValueRange acc,
                                             Value outMem, Value lseMem) {
  Value dk = acc[0], dv = acc[1];
  Value slot = remu(it, kBwdStages);
  Value use = divu(it, kBwdStages);
  refillPrevious(it);
  if (t.prefetchOut) {
    // This iteration's out / lse rows (issued one iteration ago) have
    // landed; the next iteration's go into the other buffer, which this
    // thread last read before the previous iteration's bar.sync.
    asmVoid("cp.async.wait_group 0;", ValueRange(), "~{memory}");
    Value next = add(it, idx(1));
    auto pf = scf::IfOp::create(b, loc, ult(next, nIter), false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(&pf.getThenRegion().front());
    prefetchOut(next, outMem, lseMem);
  }
  Value hh, tq0;
  coords(it, hh, tq0);
  waitBar(barFull(slot), use);
  stats(it, slot, hh, tq0, outMem, lseMem);
  // The stats of this stage are complete (and every thread is done with
  // the stage's previous use: one barrier per iteration, 3 stages).
  gpu::BarrierOp::create(b, loc);

  auto [sT, dpT] = issueScores(slot);
  Value stageAddr = add(ringAddr, toI64(stageOff(slot)));
  NVVM::WgmmaWaitGroupSyncOp::create(b, loc, 0);

  // P^T = exp2(S^T scale log2 e - lse log2 e), 0 where the query does not
  // see the key (causal) or is past nt; dS^T = P^T (dP^T - D). Element
  // 4j + 2h + e: key row r0 + 8h, query column 8j + 2 (lane % 4) + e.
  Value st = statsOff(slot);
  Value dView = view(statsTy, st);
  Value lView = view(statsTy, add(st, idx(kBwdBq * 4)));
  Value cScale = cF32(p.scale * M_LOG2E);
  Value zero = cF32(0.0);
  SmallVector<Value> pv(kBwdBq / 2), ds(kBwdBq / 2);
  for (int64_t j = 0; j < kBwdBq / 8; ++j)
    for (int64_t e = 0; e < 2; ++e) {
      Value col = add(mul(laneMod4, idx(2)), idx(8 * j + e));
      Value tq = add(tq0, col);
      Value dRow = memref::LoadOp::create(b, loc, dView, ValueRange{col});
      Value lRow = memref::LoadOp::create(b, loc, lView, ValueRange{col});
      Value negL = arith::NegFOp::create(b, loc, lRow);
      Value inRange = ult(tq, nt);
      for (int h = 0; h < 2; ++h) {
        int64_t k = 4 * j + 2 * h + e;
        Value ok = inRange;
        if (p.causal)
          ok = arith::AndIOp::create(b, loc, ok, ule(keyPos[h], add(pos0, tq)));
        Value pe =
            exp2(math::FmaOp::create(b, loc, extract(sT, k), cScale, negL));
        pe = arith::SelectOp::create(b, loc, ok, pe, zero);
        pv[k] = pe;
        ds[k] = fmul(pe, fsub(extract(dpT, k), dRow));
      }
    }
  SmallVector<Value> pRegs = packBf16(pv), dsRegs = packBf16(ds);

  // dV += P^T dO and dK += dS^T Q: A from registers (4 k16 steps over the
  // 64 queries), B = the dO (Q) tile transposed (head_dim contiguous).
  NVVM::WgmmaFenceAlignedOp::create(b, loc);
  dv = rsWgmmaSteps(dv, accType, p.headDim, pRegs, stageAddr, doOff(0),
                    /*lbo=*/kBwdBq * 128);
  dk = rsWgmmaSteps(dk, accType, p.headDim, dsRegs, stageAddr, qOff(0),
                    /*lbo=*/kBwdBq * 128);
  NVVM::WgmmaGroupSyncAlignedOp::create(b, loc);
  NVVM::WgmmaWaitGroupSyncOp::create(b, loc, 0);
  releaseSlot(lane, barEmpty(slot));
  return {dk, dv};
}

void AttentionBwdBuilder::prefetchV3(Value it, Value outMem, Value lseMem) {
  Value hh, tq0;
  coords(it, hh, tq0);
  Value tidL = tidHere();
  Value wgL = divu(tidL, 128), w = remu(tidL, 128);
  Value row = divu(w, 2), part = remu(w, 2);
  Value tq = add(tq0, row);
  {
    auto valid = scf::IfOp::create(b, loc, ult(tq, nt), false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(&valid.getThenRegion().front());
    Value grow = add(mul(seqIdx, nt), tq);
    Value area = add(ringAddr, toI64(wgAreaOff(wgL)));
    Value outPtr =
        toI64(memref::ExtractAlignedPointerAsIndexOp::create(b, loc, outMem));
    Value rowElem =
        add(mul(grow, idx(p.heads * p.headDim)), mul(hh, idx(p.headDim)));
    Value dst = addI64(area, toI64(mul(w, idx(16))));
    const char *cp16 = "{\n.reg .u64 g;\ncvta.to.global.u64 g, $1;\n"
                       "cp.async.cg.shared.global [$0], [g], 16;\n}";
    for (int64_t k = 0; k < p.headDim / 16; ++k) {
      Value elem = add(rowElem, mul(v3Unit(part, k), idx(8)));
      asmVoid(cp16,
              ValueRange{addI64(dst, cI64(k * 128 * 16)),
                         addI64(outPtr, toI64(mul(elem, idx(2))))},
              "l,l,~{memory}");
    }
    prefetchLse(part, grow, hh, lseMem, [&] {
      return addI64(area, toI64(add(idx(t.wgOutBytes()), mul(row, idx(4)))));
    });
  }
  asmVoid("cp.async.commit_group;", ValueRange(), "~{memory}");
}

void AttentionBwdBuilder::statsV3(Value it, Value slot, Value tq0) {
  Value tidL = tidHere();
  Value wgL = divu(tidL, 128), w = remu(tidL, 128);
  Value row = divu(w, 2), part = remu(w, 2);
  Value valid = ult(add(tq0, row), nt);
  Value area = wgAreaOff(wgL);
  auto ifValid = scf::IfOp::create(b, loc, TypeRange{f32, f32}, valid, true);
  {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(&ifValid.getThenRegion().front());
    auto v8bf16 = VectorType::get({8}, bf16);
    auto v8f32 = VectorType::get({8}, f32);
    const int64_t units = 128 * p.headDim / 16;
    Value outBuf = view(MemRefType::get({units * 8}, bf16,
                                        MemRefLayoutAttrInterface(), smemSpace),
                        area);
    Value sum = cF32(0.0);
    for (int64_t k = 0; k < p.headDim / 16; ++k) {
      Value u = v3Unit(part, k);
      // 128-byte swizzle: the 16-byte unit u of row r of a 64-column chunk
      // is stored at unit u ^ (r % 8).
      Value tile = view(qBox, add(add(stageOff(slot), idx(doOff(0))),
                                  mul(divu(u, 8), idx(kBwdBq * 128))));
      Value at = arith::XOrIOp::create(b, loc, remu(u, 8), remu(row, 8));
      Value dO = vector::LoadOp::create(b, loc, v8bf16, tile,
                                        ValueRange{row, mul(at, idx(8))}, false,
                                        llvm::MaybeAlign(16));
      Value o = vector::LoadOp::create(
          b, loc, v8bf16, outBuf,
          ValueRange{add(idx(k * 128 * 8), mul(w, idx(8)))}, false,
          llvm::MaybeAlign(16));
      Value prod = arith::MulFOp::create(
          b, loc, arith::ExtFOp::create(b, loc, v8f32, dO),
          arith::ExtFOp::create(b, loc, v8f32, o));
      sum = fadd(sum, vector::ReductionOp::create(
                          b, loc, vector::CombiningKind::ADD, prod));
    }
    // (Only the row's part-0 thread copied the lse; the other one's value
    // is not used.)
    Value lse = memref::LoadOp::create(
        b, loc, view(statsTy, add(area, idx(t.wgOutBytes()))), ValueRange{row});
    scf::YieldOp::create(b, loc, ValueRange{sum, fmul(lse, cF32(M_LOG2E))});
    b.setInsertionPointToStart(&ifValid.getElseRegion().front());
    scf::YieldOp::create(b, loc, ValueRange{cF32(0.0), cF32(0.0)});
  }
  Value d = ifValid.getResult(0);
  d = fadd(d, shflXor(d, 1));
  Value first =
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, part, idx(0));
  auto st = scf::IfOp::create(b, loc, first, false);
  OpBuilder::InsertionGuard g(b);
  b.setInsertionPointToStart(&st.getThenRegion().front());
  Value base = wgStatsOff(area, it);
  memref::StoreOp::create(b, loc, d, view(statsTy, base), ValueRange{row});
  memref::StoreOp::create(b, loc, ifValid.getResult(1),
                          view(statsTy, add(base, idx(kBwdBq * 4))),
                          ValueRange{row});
}

void AttentionBwdBuilder::warpgroupBarrier() {
  // Immediate barrier ids (a warpgroup-uniform branch): with an id in a
  // register ptxas reserves all 16 named barriers.
  Value first = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq,
                                      divu(tidHere(), 128), idx(0));
  auto ifFirst = scf::IfOp::create(b, loc, first, true);
  OpBuilder::InsertionGuard g(b);
  b.setInsertionPointToStart(&ifFirst.getThenRegion().front());
  asmVoid("bar.sync 1, 128;", ValueRange(), "~{memory}");
  b.setInsertionPointToStart(&ifFirst.getElseRegion().front());
  asmVoid("bar.sync 2, 128;", ValueRange(), "~{memory}");
}

SmallVector<Value> AttentionBwdBuilder::stepV3(Value it, ValueRange acc,
                                               Value outMem, Value lseMem) {
  Value dk = acc[0], dv = acc[1];
  Value slot = remu(it, kBwdStages);
  Value use = divu(it, kBwdStages);
  refillPrevious(it);
  // This thread's out / lse copies of iteration it (issued one iteration
  // ago) have landed.
  asmVoid("cp.async.wait_group 0;", ValueRange(), "~{memory}");
  Value hh, tq0;
  coords(it, hh, tq0);
  waitBar(barFull(slot), use);
  auto [sT, dpT] = issueScores(slot);
  Value stageAddr = add(ringAddr, toI64(stageOff(slot)));
  // D of this tile while the S^T / dP^T wgmmas run.
  statsV3(it, slot, tq0);
  // Within the warpgroup: its stats slot it % 2 is complete. Each
  // warpgroup waits for its own 128 threads only, so the two drift apart
  // (bounded by the ring: thread 0 refills a stage once both released it)
  // and one's wgmmas overlap the other's exp / mask phase.
  //
  // Why slot reuse is safe: slot it % 2 was last read (P^T, dS^T) in
  // iteration it-2 by threads that have since arrived at this warpgroup's
  // barrier of iteration it-1, which every writer of iteration it passed.
  // The out / lse buffer (one per warpgroup) is read only by the thread
  // that copied into it, before the barrier (the D it computed from it
  // went through a shuffle or a store, so the loads completed); the next
  // copy is issued after the barrier. The Q / dO stages are refilled after
  // the empty mbarrier (lane 0 of each warp of both warpgroups, after
  // their last wgmma on the stage completed), as in v2.
  warpgroupBarrier();
  {
    Value next = add(it, idx(1));
    auto pf = scf::IfOp::create(b, loc, ult(next, nIter), false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(&pf.getThenRegion().front());
    prefetchV3(next, outMem, lseMem);
  }
  NVVM::WgmmaWaitGroupSyncOp::create(b, loc, 0);

  // P^T = exp2(S^T scale log2 e - lse log2 e). Element 4j + 2h + e: key row
  // r0 + 8h, query column 8j + 2 (lane % 4) + e. Unmasked fast path (a
  // warpgroup-uniform branch): every query of the tile is before nt and,
  // causal, sees the warpgroup's last key.
  Value st = wgStatsOff(wgAreaOff(divu(tidHere(), 128)), it);
  Value dView = view(statsTy, st);
  Value lView = view(statsTy, add(st, idx(kBwdBq * 4)));
  Value cScale = cF32(p.scale * M_LOG2E);
  Value zero = cF32(0.0);
  auto v2f32 = VectorType::get({2}, f32);
  Value full = ule(add(tq0, idx(kBwdBq)), nt);
  if (p.causal) {
    Value lastKey = add(add(j0, mul(wg, idx(64))), idx(63));
    full = arith::AndIOp::create(b, loc, full, ule(lastKey, add(pos0, tq0)));
  }
  SmallVector<Type> pTypes(kBwdBq / 2, f32);
  auto ifFull = scf::IfOp::create(b, loc, pTypes, full, true);
  for (bool masked : {false, true}) {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(masked ? &ifFull.getElseRegion().front()
                                      : &ifFull.getThenRegion().front());
    SmallVector<Value> pv(kBwdBq / 2);
    for (int64_t j = 0; j < kBwdBq / 8; ++j) {
      Value col = add(mul(laneMod4, idx(2)), idx(8 * j));
      Value l2 = vector::LoadOp::create(b, loc, v2f32, lView, ValueRange{col},
                                        false, llvm::MaybeAlign(8));
      for (int64_t e = 0; e < 2; ++e) {
        Value negL = arith::NegFOp::create(
            b, loc, vector::ExtractOp::create(b, loc, l2, e));
        Value tq = add(tq0, add(col, idx(e)));
        for (int h = 0; h < 2; ++h) {
          int64_t k = 4 * j + 2 * h + e;
          Value pe =
              exp2(math::FmaOp::create(b, loc, extract(sT, k), cScale, negL));
          if (masked) {
            Value ok = ult(tq, nt);
            if (p.causal)
              ok = arith::AndIOp::create(b, loc, ok,
                                         ule(keyPos[h], add(pos0, tq)));
            pe = arith::SelectOp::create(b, loc, ok, pe, zero);
          }
          pv[k] = pe;
        }
      }
    }
    scf::YieldOp::create(b, loc, pv);
  }
  SmallVector<Value> pv(ifFull.getResults().begin(), ifFull.getResults().end());
  SmallVector<Value> pRegs = packBf16(pv);

  // dV += P^T dO, issued before dS^T is computed (the tensor cores work
  // while the threads compute dS^T); the P^T registers are the A operand
  // of those wgmmas and are not written before the wait below.
  NVVM::WgmmaFenceAlignedOp::create(b, loc);
  dv = rsWgmmaSteps(dv, accType, p.headDim, pRegs, stageAddr, doOff(0),
                    /*lbo=*/kBwdBq * 128);
  NVVM::WgmmaGroupSyncAlignedOp::create(b, loc);

  // dS^T = P^T (dP^T - D) (0 where P^T is masked), then dK += dS^T Q.
  SmallVector<Value> ds(kBwdBq / 2);
  for (int64_t j = 0; j < kBwdBq / 8; ++j) {
    Value col = add(mul(laneMod4, idx(2)), idx(8 * j));
    Value d2 = vector::LoadOp::create(b, loc, v2f32, dView, ValueRange{col},
                                      false, llvm::MaybeAlign(8));
    for (int64_t e = 0; e < 2; ++e) {
      Value dRow = vector::ExtractOp::create(b, loc, d2, e);
      for (int h = 0; h < 2; ++h) {
        int64_t k = 4 * j + 2 * h + e;
        ds[k] = fmul(pv[k], fsub(extract(dpT, k), dRow));
      }
    }
  }
  SmallVector<Value> dsRegs = packBf16(ds);
  NVVM::WgmmaFenceAlignedOp::create(b, loc);
  dk = rsWgmmaSteps(dk, accType, p.headDim, dsRegs, stageAddr, qOff(0),
                    /*lbo=*/kBwdBq * 128);
  NVVM::WgmmaGroupSyncAlignedOp::create(b, loc);
  NVVM::WgmmaWaitGroupSyncOp::create(b, loc, 0);
  releaseSlot(lane, barEmpty(slot));
  return {dk, dv};
}

void AttentionBwdBuilder::epilogue(ValueRange acc, Value dkMem, Value dvMem) {
  // v3: lane % 4 read anew (%tid.x), not kept live across the loop (where
  // ptxas had to spill it at 255 registers).
  Value quad = t.decoupled ? remu(tidHere(), 4) : laneMod4;
  Value colBase = add(mul(kvHead, idx(p.headDim)), mul(quad, idx(2)));
  Value scale = cF32(p.scale);
  for (int h = 0; h < 2; ++h) {
    // Keys of the step's tokens only (pos0 <= j < pos0 + nt), as the SIMT
    // kernel: plain stores, so --grad-accum can turn them into additions.
    Value key = keyPos[h];
    Value ok = arith::AndIOp::create(
        b, loc, ule(pos0, key),
        arith::AndIOp::create(b, loc, ult(key, add(pos0, nt)),
                              ult(key, idx(p.seq))));
    auto guard = scf::IfOp::create(b, loc, ok, false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(&guard.getThenRegion().front());
    for (int64_t j = 0; j < p.headDim / 8; ++j)
      for (int64_t e = 0; e < 2; ++e) {
        int64_t k = 4 * j + 2 * h + e;
        Value col = add(colBase, idx(8 * j + e));
        memref::StoreOp::create(b, loc, fmul(extract(acc[0], k), scale), dkMem,
                                ValueRange{seqIdx, key, col});
        memref::StoreOp::create(b, loc, extract(acc[1], k), dvMem,
                                ValueRange{seqIdx, key, col});
      }
  }
}

void AttentionBwdBuilder::build(gpu::GPUFuncOp fn, unsigned numInputs) {
  Block *entry = &fn.getBody().front();
  ValueRange args = entry->getArguments();
  b.setInsertionPointToStart(entry);
  Value nb = readExtents(args, numInputs + 2);

  tid = gpu::ThreadIdOp::create(b, loc, gpu::Dimension::x);
  Value kb;
  if (t.decoupled) {
    // Longest processing time first: the CTAs are dispatched in the order
    // of the linear block index (x fastest), so the key block is decoded
    // as its slowest-varying part: every (kv head, sequence)'s key block 0
    // (causal: the most query tiles) first, the last key blocks (the
    // fewest) last. The launch grid stays (key blocks, kv heads, B).
    Value gx = gpu::GridDimOp::create(b, loc, gpu::Dimension::x);
    Value gy = gpu::GridDimOp::create(b, loc, gpu::Dimension::y);
    Value gz = gpu::GridDimOp::create(b, loc, gpu::Dimension::z);
    Value lin = add(
        gpu::BlockIdOp::create(b, loc, gpu::Dimension::x),
        mul(gx,
            add(gpu::BlockIdOp::create(b, loc, gpu::Dimension::y),
                mul(gy, gpu::BlockIdOp::create(b, loc, gpu::Dimension::z)))));
    Value per = mul(gy, gz);
    kb = divuV(lin, per);
    Value rest = remuV(lin, per);
    kvHead = remuV(rest, gy);
    seqIdx = divuV(rest, gy);
  } else {
    kb = gpu::BlockIdOp::create(b, loc, gpu::Dimension::x);
    kvHead = gpu::BlockIdOp::create(b, loc, gpu::Dimension::y);
    seqIdx = gpu::BlockIdOp::create(b, loc, gpu::Dimension::z);
  }
  j0 = mul(kb, idx(kBwdBn));
  // CTAs whose keys hold none of the step's tokens do nothing.
  Value active = arith::AndIOp::create(
      b, loc, ult(seqIdx, nb),
      arith::AndIOp::create(b, loc, ult(j0, add(pos0, nt)),
                            ult(pos0, add(j0, idx(kBwdBn)))));
  auto ifActive = scf::IfOp::create(b, loc, active, /*withElse=*/false);
  b.setInsertionPointToStart(&ifActive.getThenRegion().front());

  setUpMapsAndRing(args);

  // Query tiles: causal, from the first token that sees key j0 (token
  // j0 - pos0) on; else all. Every query head of the group in turn.
  Value tFirst = idx(0);
  if (p.causal)
    tFirst =
        arith::SelectOp::create(b, loc, ult(pos0, j0), sub(j0, pos0), idx(0));
  qbFirst = divu(tFirst, kBwdBq);
  nQb = sub(divu(add(nt, idx(kBwdBq - 1)), kBwdBq), qbFirst);
  nIter = mul(nQb, idx(p.heads / p.kvHeads));
  Value kvCol = mul(kvHead, idx(p.headDim));

  bars = nvgpu::MBarrierCreateOp::create(b, loc, barriers);
  isLeader =
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, tid, idx(0));
  {
    auto init = scf::IfOp::create(b, loc, isLeader, false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(&init.getThenRegion().front());
    nvgpu::MBarrierInitOp::create(b, loc, bars, idx(1), idx(0), Value());
    for (int64_t s = 0; s < kBwdStages; ++s) {
      nvgpu::MBarrierInitOp::create(b, loc, bars, idx(1), barFull(idx(s)),
                                    Value());
      nvgpu::MBarrierInitOp::create(b, loc, bars, idx(4 * kWg),
                                    barEmpty(idx(s)), Value());
    }
    fenceAndPrefetch(args);
    // K and V of the key block, resident.
    nvgpu::MBarrierArriveExpectTxOp::create(
        b, loc, bars, idx(2 * t.kvTileBytes()), idx(0), Value());
    for (int64_t c = 0; c < chunks; ++c) {
      SmallVector<Value> at = {add(kvCol, idx(64 * c)), j0, seqIdx};
      nvgpu::TmaAsyncLoadOp::create(b, loc, view(kvBox, idx(kOff(c))), bars,
                                    tmK, at, idx(0), Value(), Value());
      nvgpu::TmaAsyncLoadOp::create(b, loc, view(kvBox, idx(vOff(c))), bars,
                                    tmV, at, idx(0), Value(), Value());
    }
    for (int64_t s = 0; s < kBwdStages; ++s) {
      auto pro = scf::IfOp::create(b, loc, ult(idx(s), nIter), false);
      OpBuilder::InsertionGuard g2(b);
      b.setInsertionPointToStart(&pro.getThenRegion().front());
      issueQdO(idx(s), idx(s));
    }
  }
  gpu::BarrierOp::create(b, loc);

  Value r0 = threadRow();
  keyPos[0] = add(j0, r0);
  keyPos[1] = add(j0, add(r0, idx(8)));

  Value outMem = args[p.outArg], lseMem = args[p.lseArg];
  // The out / lse rows of iteration 0 (nIter >= 1: the CTA has a key of
  // the step's tokens, so some query tile sees it).
  if (t.decoupled)
    prefetchV3(idx(0), outMem, lseMem);
  else if (t.prefetchOut)
    prefetchOut(idx(0), outMem, lseMem);
  waitBar(idx(0), idx(0));
  SmallVector<Value> acc = {LLVM::ZeroOp::create(b, loc, accType),
                            LLVM::ZeroOp::create(b, loc, accType)};
  {
    auto loop = scf::ForOp::create(b, loc, idx(0), nIter, idx(1), acc);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(loop.getBody());
    scf::YieldOp::create(b, loc,
                         t.decoupled
                             ? stepV3(loop.getInductionVar(),
                                      loop.getRegionIterArgs(), outMem, lseMem)
                             : step(loop.getInductionVar(),
                                    loop.getRegionIterArgs(), outMem, lseMem));
    acc.assign(loop.getResults().begin(), loop.getResults().end());
  }
  epilogue(acc, args[numInputs], args[numInputs + 1]);
  b.setInsertionPointToEnd(entry);
  gpu::ReturnOp::create(b, loc);
}

constexpr int64_t kDqBm = HopperAttentionDqTile::kBm;
constexpr int64_t kDqBn = HopperAttentionDqTile::kBn;
constexpr int64_t kDqStages = HopperAttentionDqTile::kStages;

/// Builds the body of the dQ kernel: one CTA per (query block of 128, head,
/// sequence), Q and dO resident, K and V tiles of 64 keys streamed; per
/// key tile S = Q K^T, dP = dO V^T (shared-memory wgmma), dS = P (dP - D)
/// and dQ += dS K (A from registers).
class AttentionDqBuilder : BwdKernelBase {
public:
  AttentionDqBuilder(OpBuilder &b, Location loc,
                     const HopperAttentionBwdProblem &p)
      : BwdKernelBase(b, loc, p, kDqBm, kDqBn, 1 + 3 * kDqStages, kDqBn) {
    t.headDim = p.headDim;
  }

  void build(gpu::GPUFuncOp fn, unsigned numInputs);

private:
  // Ring layout: Q, dO (resident, chunks of [128 rows][64]), then per stage
  // a K and a V tile (chunks of [64 keys][64]).
  int64_t qOff(int64_t c) const { return c * kDqBm * 128; }
  int64_t doOff(int64_t c) const { return t.qTileBytes() + c * kDqBm * 128; }
  int64_t kOff(int64_t c) const { return c * kDqBn * 128; }
  int64_t vOff(int64_t c) const { return t.kvTileBytes() + c * kDqBn * 128; }
  Value stageOff(Value slot) {
    return add(idx(2 * t.qTileBytes()), mul(slot, idx(t.stageBytes())));
  }
  Value barK(Value slot) { return add(idx(1), slot); }
  Value barV(Value slot) { return add(idx(1 + kDqStages), slot); }
  Value barEmpty(Value slot) { return add(idx(1 + 2 * kDqStages), slot); }

  void issueKV(Value blk, Value slot) {
    Value j0 = mul(blk, idx(kDqBn));
    Value st = stageOff(slot);
    nvgpu::MBarrierArriveExpectTxOp::create(b, loc, bars, idx(t.kvTileBytes()),
                                            barK(slot), Value());
    for (int64_t c = 0; c < chunks; ++c)
      nvgpu::TmaAsyncLoadOp::create(
          b, loc, view(kvBox, add(st, idx(kOff(c)))), bars, tmK,
          ValueRange{add(kvCol, idx(64 * c)), j0, seqIdx}, barK(slot), Value(),
          Value());
    nvgpu::MBarrierArriveExpectTxOp::create(b, loc, bars, idx(t.kvTileBytes()),
                                            barV(slot), Value());
    for (int64_t c = 0; c < chunks; ++c)
      nvgpu::TmaAsyncLoadOp::create(
          b, loc, view(kvBox, add(st, idx(vOff(c)))), bars, tmV,
          ValueRange{add(kvCol, idx(64 * c)), j0, seqIdx}, barV(slot), Value(),
          Value());
  }

  Value keyBlock(Value i, Value acc);

  HopperAttentionDqTile t;
  Value kvCol, nKV;
  Value qT0; ///< the CTA's first query row (token in the sequence)
  Value rowT[2], dRow[2], lRow[2];
};

Value AttentionDqBuilder::keyBlock(Value i, Value acc) {
  Value slot = remu(i, kDqStages);
  Value use = divu(i, kDqStages);
  refillSlotOf(
      i, kDqStages, nKV, [&](Value slot) { return barEmpty(slot); },
      [&](Value next, Value slot) { issueKV(next, slot); });
  Value stageAddr = add(ringAddr, toI64(stageOff(slot)));
  Value wgRows = toI64(mul(wg, idx(64 * 128)));
  // S = Q K^T, dP = dO V^T: m64n64, A = this warpgroup's 64 rows of Q / dO,
  // B = the K / V tile, all K-major.
  waitBar(barK(slot), use);
  NVVM::WgmmaFenceAlignedOp::create(b, loc);
  Value s = ssWgmma(LLVM::UndefOp::create(b, loc, sType), sType, kDqBn,
                    add(addrAdd(ringAddr, qOff(0)), wgRows), kDqBm * 128,
                    addrAdd(stageAddr, kOff(0)), kDqBn * 128, p.headDim / 16,
                    /*accumulate=*/false);
  waitBar(barV(slot), use);
  Value dp = ssWgmma(LLVM::UndefOp::create(b, loc, sType), sType, kDqBn,
                     add(addrAdd(ringAddr, doOff(0)), wgRows), kDqBm * 128,
                     addrAdd(stageAddr, vOff(0)), kDqBn * 128, p.headDim / 16,
                     /*accumulate=*/false);
  NVVM::WgmmaGroupSyncAlignedOp::create(b, loc);
  NVVM::WgmmaWaitGroupSyncOp::create(b, loc, 0);

  // dS = P (dP - D), P = exp2(S scale log2 e - lse log2 e), 0 for keys the
  // row does not see. Element 4j + 2h + e: row r0 + 8h, key 8j + 2q + e.
  Value j0 = mul(i, idx(kDqBn));
  Value colBase = add(j0, mul(laneMod4, idx(2)));
  Value cScale = cF32(p.scale * M_LOG2E);
  Value zero = cF32(0.0);
  Value negL[2] = {arith::NegFOp::create(b, loc, lRow[0]),
                   arith::NegFOp::create(b, loc, lRow[1])};
  Value limit[2];
  for (int h = 0; h < 2; ++h)
    limit[h] = p.causal ? add(add(pos0, rowT[h]), idx(1)) : add(pos0, nt);
  auto computeDs = [&](bool masked) {
    SmallVector<Value> ds(kDqBn / 2);
    for (int64_t j = 0; j < kDqBn / 8; ++j)
      for (int64_t e = 0; e < 2; ++e) {
        Value key = masked ? add(colBase, idx(8 * j + e)) : Value();
        for (int h = 0; h < 2; ++h) {
          int64_t k = 4 * j + 2 * h + e;
          Value pe =
              exp2(math::FmaOp::create(b, loc, extract(s, k), cScale, negL[h]));
          if (masked)
            pe = arith::SelectOp::create(b, loc, ult(key, limit[h]), pe, zero);
          ds[k] = fmul(pe, fsub(extract(dp, k), dRow[h]));
        }
      }
    return ds;
  };
  SmallVector<Value> ds;
  if (p.variant != BwdV3) {
    ds = computeDs(/*masked=*/true);
  } else {
    // v3: unmasked fast path (a warpgroup-uniform branch) for key tiles
    // every row of the warpgroup sees whole: causal, the tile's last key
    // is at most the warpgroup's first row's position; otherwise it is
    // before pos0 + nt. (Rows past nt need no mask: their dq is not
    // stored, and dS K mixes no rows.)
    Value keyEnd = add(j0, idx(kDqBn));
    Value full =
        p.causal
            ? ule(keyEnd, add(add(pos0, add(qT0, mul(wg, idx(64)))), idx(1)))
            : ule(keyEnd, add(pos0, nt));
    auto ifFull = scf::IfOp::create(b, loc, SmallVector<Type>(kDqBn / 2, f32),
                                    full, true);
    for (bool masked : {false, true}) {
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(masked ? &ifFull.getElseRegion().front()
                                        : &ifFull.getThenRegion().front());
      scf::YieldOp::create(b, loc, computeDs(masked));
    }
    ds.assign(ifFull.getResults().begin(), ifFull.getResults().end());
  }
  SmallVector<Value> dsRegs = packBf16(ds);
  // dQ += dS K: A from registers (4 k16 steps over the 64 keys), B = the K
  // tile transposed (head_dim contiguous).
  NVVM::WgmmaFenceAlignedOp::create(b, loc);
  acc = rsWgmmaSteps(acc, accType, p.headDim, dsRegs, stageAddr, kOff(0),
                     /*lbo=*/kDqBn * 128);
  NVVM::WgmmaGroupSyncAlignedOp::create(b, loc);
  NVVM::WgmmaWaitGroupSyncOp::create(b, loc, 0);
  releaseSlot(lane, barEmpty(slot));
  return acc;
}

void AttentionDqBuilder::build(gpu::GPUFuncOp fn, unsigned numInputs) {
  Block *entry = &fn.getBody().front();
  ValueRange args = entry->getArguments();
  b.setInsertionPointToStart(entry);
  Value nb = readExtents(args, numInputs + 1);

  tid = gpu::ThreadIdOp::create(b, loc, gpu::Dimension::x);
  // The query blocks with the most keys (causal: the last) start first.
  Value qb, head;
  if (p.variant == BwdV3) {
    // Longest processing time first across heads and sequences too: the
    // query block is the slowest-varying part of the linear block index
    // (dispatch order), from the last (the most key blocks) down.
    Value gx = gpu::GridDimOp::create(b, loc, gpu::Dimension::x);
    Value gy = gpu::GridDimOp::create(b, loc, gpu::Dimension::y);
    Value gz = gpu::GridDimOp::create(b, loc, gpu::Dimension::z);
    Value lin = add(
        gpu::BlockIdOp::create(b, loc, gpu::Dimension::x),
        mul(gx,
            add(gpu::BlockIdOp::create(b, loc, gpu::Dimension::y),
                mul(gy, gpu::BlockIdOp::create(b, loc, gpu::Dimension::z)))));
    Value per = mul(gy, gz);
    qb = sub(sub(gx, idx(1)), arith::DivUIOp::create(b, loc, lin, per));
    Value rest = arith::RemUIOp::create(b, loc, lin, per);
    head = arith::RemUIOp::create(b, loc, rest, gy);
    seqIdx = arith::DivUIOp::create(b, loc, rest, gy);
  } else {
    qb = sub(sub(gpu::GridDimOp::create(b, loc, gpu::Dimension::x), idx(1)),
             gpu::BlockIdOp::create(b, loc, gpu::Dimension::x));
    head = gpu::BlockIdOp::create(b, loc, gpu::Dimension::y);
    seqIdx = gpu::BlockIdOp::create(b, loc, gpu::Dimension::z);
  }
  Value t0 = mul(qb, idx(kDqBm));
  qT0 = t0;
  Value active = arith::AndIOp::create(b, loc, ult(seqIdx, nb), ult(t0, nt));
  auto ifActive = scf::IfOp::create(b, loc, active, /*withElse=*/false);
  b.setInsertionPointToStart(&ifActive.getThenRegion().front());

  setUpMapsAndRing(args);

  const int64_t group = p.heads / p.kvHeads;
  kvCol = mul(divu(head, group), idx(p.headDim));
  Value qCol = mul(head, idx(p.headDim));
  Value rowBase = add(mul(seqIdx, nt), t0);
  Value lastT = sub(minu(add(t0, idx(kDqBm)), nt), idx(1));
  Value keyEnd = p.causal ? add(add(pos0, lastT), idx(1)) : add(pos0, nt);
  nKV = divu(add(keyEnd, idx(kDqBn - 1)), kDqBn);

  bars = nvgpu::MBarrierCreateOp::create(b, loc, barriers);
  isLeader =
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, tid, idx(0));
  {
    auto init = scf::IfOp::create(b, loc, isLeader, false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(&init.getThenRegion().front());
    nvgpu::MBarrierInitOp::create(b, loc, bars, idx(1), idx(0), Value());
    for (int64_t s = 0; s < kDqStages; ++s) {
      nvgpu::MBarrierInitOp::create(b, loc, bars, idx(1), barK(idx(s)),
                                    Value());
      nvgpu::MBarrierInitOp::create(b, loc, bars, idx(1), barV(idx(s)),
                                    Value());
      nvgpu::MBarrierInitOp::create(b, loc, bars, idx(4 * kWg),
                                    barEmpty(idx(s)), Value());
    }
    fenceAndPrefetch(args);
    // Q and dO, resident.
    nvgpu::MBarrierArriveExpectTxOp::create(
        b, loc, bars, idx(2 * t.qTileBytes()), idx(0), Value());
    for (int64_t c = 0; c < chunks; ++c) {
      SmallVector<Value> at = {add(qCol, idx(64 * c)), rowBase};
      nvgpu::TmaAsyncLoadOp::create(b, loc, view(qBox, idx(qOff(c))), bars, tmQ,
                                    at, idx(0), Value(), Value());
      nvgpu::TmaAsyncLoadOp::create(b, loc, view(qBox, idx(doOff(c))), bars,
                                    tmDO, at, idx(0), Value(), Value());
    }
    for (int64_t s = 0; s < kDqStages; ++s) {
      auto pro = scf::IfOp::create(b, loc, ult(idx(s), nKV), false);
      OpBuilder::InsertionGuard g2(b);
      b.setInsertionPointToStart(&pro.getThenRegion().front());
      issueKV(idx(s), idx(s));
    }
  }
  gpu::BarrierOp::create(b, loc);

  Value r0 = threadRow();
  waitBar(idx(0), idx(0));
  Value outMem = args[p.outArg], lseMem = args[p.lseArg];
  for (int h = 0; h < 2; ++h) {
    Value rowInTile = add(r0, idx(8 * h));
    rowT[h] = add(t0, rowInTile);
    std::tie(dRow[h], lRow[h]) = rowStats(
        ult(rowT[h], nt), rowInTile, laneMod4, add(mul(seqIdx, nt), rowT[h]),
        head, p.headDim, qBox, idx(doOff(0)), kDqBm * 128, outMem, lseMem);
  }
  Value acc = LLVM::ZeroOp::create(b, loc, accType);
  {
    auto loop = scf::ForOp::create(b, loc, idx(0), nKV, idx(1), acc);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(loop.getBody());
    scf::YieldOp::create(
        b, loc, keyBlock(loop.getInductionVar(), loop.getRegionIterArgs()[0]));
    acc = loop.getResult(0);
  }
  // dq = scale dQ, f32, plain stores; rows past nt are not written.
  Value dqMem = args[numInputs];
  Value colBase = add(qCol, mul(laneMod4, idx(2)));
  Value scale = cF32(p.scale);
  for (int h = 0; h < 2; ++h) {
    auto guard = scf::IfOp::create(b, loc, ult(rowT[h], nt), false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(&guard.getThenRegion().front());
    Value row = add(mul(seqIdx, nt), rowT[h]);
    for (int64_t j = 0; j < p.headDim / 8; ++j)
      for (int64_t e = 0; e < 2; ++e)
        memref::StoreOp::create(
            b, loc, fmul(extract(acc, 4 * j + 2 * h + e), scale), dqMem,
            ValueRange{row, add(colBase, idx(8 * j + e))});
  }
  b.setInsertionPointToEnd(entry);
  gpu::ReturnOp::create(b, loc);
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
  auto fn = createHopperKernel(
      builder, loc, name, body, fusion.getResultTypes(),
      [&](unsigned n) { return n == p.qArg || n == p.kArg || n == p.vArg; },
      static_cast<int32_t>(HopperAttentionTile::kThreads));

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

std::optional<HopperAttentionBwdProblem>
colossus::matchHopperAttentionBwd(FusionOp fusion, std::string &whyNot) {
  Block &body = fusion.getBody().front();
  auto ag = soleOpOf<AttentionGradOp>(body, "attention_grad", whyNot);
  if (!ag)
    return std::nullopt;
  auto yield = cast<YieldOp>(body.getTerminator());
  HopperAttentionBwdProblem p;
  p.dq = yield.getNumOperands() == 1 && yield.getValues()[0] == ag.getDq();
  if (!p.dq &&
      (yield.getNumOperands() != 2 || yield.getValues()[0] != ag.getDk() ||
       yield.getValues()[1] != ag.getDv())) {
    whyNot = "the group yields neither dq nor dk, dv";
    return std::nullopt;
  }
  auto arg = [&](Value v) {
    auto ba = dyn_cast<BlockArgument>(v);
    return ba && ba.getOwner() == &body ? static_cast<int>(ba.getArgNumber())
                                        : -1;
  };
  int q = arg(ag.getQ()), k = arg(ag.getK()), v = arg(ag.getV()),
      dO = arg(ag.getDout()), out = arg(ag.getOut()), lse = arg(ag.getLse());
  if (q < 0 || k < 0 || v < 0 || dO < 0 || out < 0 || lse < 0) {
    whyNot = "q, k, v, dout, out or lse is computed inside the group";
    return std::nullopt;
  }
  if (llvm::SmallDenseSet<int>({q, k, v, dO}).size() != 4) {
    whyNot = "q, k, v and dout are not four different inputs";
    return std::nullopt;
  }
  p.qArg = q;
  p.kArg = k;
  p.vArg = v;
  p.doArg = dO;
  p.outArg = out;
  p.lseArg = lse;
  if (!ag.getPositions().getDefiningOp<PositionsOp>()) {
    whyNot = "the positions are not the step's (colossus.positions)";
    return std::nullopt;
  }
  auto ty = [](Value x) { return cast<RankedTensorType>(x.getType()); };
  for (Value x : {ag.getQ(), ag.getK(), ag.getV(), ag.getDout(), ag.getOut()})
    if (!ty(x).getElementType().isBF16()) {
      whyNot = "q, k, v, dout and out are not bf16";
      return std::nullopt;
    }
  if (!ty(ag.getLse()).getElementType().isF32() ||
      !ty(ag.getDq()).getElementType().isF32() ||
      !ty(ag.getDk()).getElementType().isF32() ||
      !ty(ag.getDv()).getElementType().isF32()) {
    whyNot = "lse, dk and dv are not f32";
    return std::nullopt;
  }
  for (Value x : {ag.getQ(), ag.getK(), ag.getV(), ag.getDout(), ag.getOut(),
                  ag.getLse()})
    if (!ty(x).hasStaticShape()) {
      whyNot = "the operands do not have static shapes";
      return std::nullopt;
    }
  p.heads = ag.getNumHeads();
  p.kvHeads = ag.getNumKvHeads();
  p.headDim = ag.getHeadDim();
  p.scale = ag.getScale().convertToDouble();
  p.causal = ag.getCausal();
  auto qt = ty(ag.getQ()), kt = ty(ag.getK());
  p.tokens = qt.getDimSize(0);
  p.batch = kt.getDimSize(0);
  p.seq = kt.getDimSize(1);
  if (p.headDim != 64 && p.headDim != 128) {
    whyNot = "head_dim " + std::to_string(p.headDim) + " is not 64 or 128";
    return std::nullopt;
  }
  if (ag.getSlidingWindow() != 0) {
    whyNot = "sliding windows are not supported yet";
    return std::nullopt;
  }
  if (p.heads % p.kvHeads != 0 || qt.getDimSize(1) != p.heads * p.headDim ||
      kt.getDimSize(2) != p.kvHeads * p.headDim || ty(ag.getV()) != kt ||
      ty(ag.getDout()) != qt || ty(ag.getOut()) != qt ||
      ty(ag.getLse()).getShape() != ArrayRef<int64_t>{p.tokens, p.heads} ||
      ty(ag.getDk()).getShape() != kt.getShape() ||
      ty(ag.getDv()).getShape() != kt.getShape()) {
    whyNot = "the operands do not have the [T, heads * head_dim], [B, S, "
             "kv_heads * head_dim], [T, heads] layout";
    return std::nullopt;
  }
  if (p.seq < HopperAttentionBwdTile::kBn ||
      p.tokens < HopperAttentionBwdTile::kBq) {
    whyNot = "the cache has fewer than " +
             std::to_string(HopperAttentionBwdTile::kBn) +
             " positions or q fewer than " +
             std::to_string(HopperAttentionBwdTile::kBq) + " rows";
    return std::nullopt;
  }
  if (p.batch > 65535 || p.kvHeads > 65535) {
    whyNot = "more than 65535 sequences or kv heads";
    return std::nullopt;
  }
  if (p.dq && p.tokens < HopperAttentionDqTile::kBm) {
    whyNot = "q has fewer than " + std::to_string(HopperAttentionDqTile::kBm) +
             " rows";
    return std::nullopt;
  }
  p.variant = clBwdV1 ? BwdV1 : static_cast<int>(clBwdVariant);
  p.tile.headDim = p.headDim;
  p.tile.prefetchOut = p.variant != BwdV1;
  p.tile.decoupled = p.variant == BwdV3;
  HopperAttentionDqTile dqTile;
  dqTile.headDim = p.headDim;
  if (p.tile.dynamicSmemBytes() > HopperAttentionTile::kMaxDynamicSmem ||
      dqTile.dynamicSmemBytes() > HopperAttentionTile::kMaxDynamicSmem) {
    whyNot = "the tiles do not fit in shared memory";
    return std::nullopt;
  }
  return p;
}

FailureOr<Operation *>
colossus::buildHopperAttentionBwd(FusionOp fusion,
                                  const HopperAttentionBwdProblem &p,
                                  StringRef name, OpBuilder &builder) {
  Location loc = fusion.getLoc();
  auto module = dyn_cast_or_null<gpu::GPUModuleOp>(
      builder.getInsertionBlock()->getParentOp());
  if (!module)
    return fusion.emitOpError("internal error: the Hopper attention backward "
                              "must be built in a gpu.module");
  MLIRContext *ctx = builder.getContext();
  prepareHopperModule(module, builder, loc);
  ctx->getOrLoadDialect<math::MathDialect>();

  Block &body = fusion.getBody().front();
  auto fn = createHopperKernel(
      builder, loc, name, body, fusion.getResultTypes(),
      [&](unsigned n) {
        return n == p.qArg || n == p.kArg || n == p.vArg || n == p.doArg;
      },
      static_cast<int32_t>(HopperAttentionBwdTile::kThreads));

  unsigned numInputs = body.getNumArguments();
  {
    OpBuilder::InsertionGuard g(builder);
    if (p.dq)
      AttentionDqBuilder(builder, loc, p).build(fn, numInputs);
    else
      AttentionBwdBuilder(builder, loc, p).build(fn, numInputs);
  }
  char scaleText[32];
  std::snprintf(scaleText, sizeof(scaleText), "%.17g", p.scale);
  if (p.dq) {
    HopperAttentionDqTile dt;
    dt.headDim = p.headDim;
    std::string abi = llvm::formatv(
        "part=dq b={0} s={1} t={2} h={3} kvh={4} d={5} causal={6} bn={7} "
        "bq={8} stages={9} grid={10},{3},{0} block={11},1,1 "
        "dynamic_smem={12} q_arg={13} k_arg={14} v_arg={15} dout_arg={16} "
        "out_arg={17} lse_arg={18} dq_arg={19} scale={20}",
        p.batch, p.seq, p.tokens, p.heads, p.kvHeads, p.headDim,
        p.causal ? 1 : 0, HopperAttentionDqTile::kBn,
        HopperAttentionDqTile::kBm, HopperAttentionDqTile::kStages,
        (p.seq + HopperAttentionDqTile::kBm - 1) / HopperAttentionDqTile::kBm,
        HopperAttentionDqTile::kThreads, dt.dynamicSmemBytes(), p.qArg, p.kArg,
        p.vArg, p.doArg, p.outArg, p.lseArg, numInputs, scaleText);
    if (p.variant == BwdV3)
      abi += " sched=v3";
    fn->setAttr(kHopperAttentionBwdAbiAttr, builder.getStringAttr(abi));
    return fn.getOperation();
  }

  std::string abi = llvm::formatv(
      "part=dkdv b={0} s={1} t={2} h={3} kvh={4} d={5} causal={6} bn={7} "
      "bq={8} "
      "stages={9} grid={10},{4},{0} block={11},1,1 dynamic_smem={12} "
      "q_arg={13} k_arg={14} v_arg={15} dout_arg={16} out_arg={17} "
      "lse_arg={18} dk_arg={19} dv_arg={20} scale={21}",
      p.batch, p.seq, p.tokens, p.heads, p.kvHeads, p.headDim, p.causal ? 1 : 0,
      HopperAttentionBwdTile::kBn, HopperAttentionBwdTile::kBq,
      HopperAttentionBwdTile::kStages,
      (p.seq + HopperAttentionBwdTile::kBn - 1) / HopperAttentionBwdTile::kBn,
      HopperAttentionBwdTile::kThreads, p.tile.dynamicSmemBytes(), p.qArg,
      p.kArg, p.vArg, p.doArg, p.outArg, p.lseArg, numInputs, numInputs + 1,
      scaleText);
  if (p.variant == BwdV3)
    abi += " sched=v3";
  fn->setAttr(kHopperAttentionBwdAbiAttr, builder.getStringAttr(abi));
  return fn.getOperation();
}
