//===- Kernelize.cpp - One loop-nest kernel per colossus.fusion -----------===//
#include "colossus/Compiler/HopperGemm.h"
#include "colossus/Compiler/KernelEmitter.h"
#include "colossus/Compiler/Passes.h"

#include "colossus/Compiler/ImportModel.h"
#include "colossus/Dialect/Colossus/IR/ColossusOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OperationSupport.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/StringMap.h"

#include <functional>

namespace colossus {
#define GEN_PASS_DEF_COLOSSUSKERNELIZE
#include "colossus/Compiler/Passes.h.inc"
} // namespace colossus

using namespace mlir;
using namespace colossus;

namespace {

/// Fusion results whose kernels add into their output buffer.
using AccumulatedResults = llvm::DenseMap<Operation *, SmallVector<unsigned>>;

/// Finds the fusion results that become gradient outputs of a step: the
/// results of a function carrying a `colossus.param` attribute (the grads
/// step built by colossus-autodiff), directly or through the results of
/// calls (a layer's vjp). Their kernels accumulate (docs/artifact-format.md:
/// the runtime zeroes the gradient buffers before a fresh gradient and keeps
/// them across the micro-batches of gradient accumulation). Such a value
/// must have no other user, and every call of a function whose result is
/// accumulated must return that result as a gradient too.
class GradientOutputs {
public:
  explicit GradientOutputs(ModuleOp module) : module(module) {}

  LogicalResult run(AccumulatedResults &out) {
    for (auto fn : module.getOps<func::FuncOp>()) {
      if (fn.isExternal())
        continue;
      auto ret = cast<func::ReturnOp>(fn.getBody().back().getTerminator());
      for (unsigned i = 0; i < fn.getNumResults(); ++i)
        if (isGradientResult(fn, i) &&
            failed(mark(ret.getOperand(i), ret, i, out)))
          return failure();
    }
    return success();
  }

private:
  static bool isGradientResult(func::FuncOp fn, unsigned i) {
    return static_cast<bool>(fn.getResultAttr(i, attrs::kParam));
  }

  /// `v` is operand `index` of `ret`, returned as a gradient.
  LogicalResult mark(Value v, Operation *ret, unsigned index,
                     AccumulatedResults &out) {
    if (!v.hasOneUse())
      return ret->emitOpError("gradient result ")
             << index
             << " is also used by another op: its kernel cannot accumulate "
                "into it";
    auto res = dyn_cast<OpResult>(v);
    if (res && isa<FusionOp>(res.getOwner())) {
      out[res.getOwner()].push_back(res.getResultNumber());
      return success();
    }
    if (auto call = res ? dyn_cast<func::CallOp>(res.getOwner()) : nullptr) {
      auto callee = module.lookupSymbol<func::FuncOp>(call.getCallee());
      if (!callee || callee.isExternal())
        return call.emitOpError("calls an unknown function");
      unsigned k = res.getResultNumber();
      if (!visited.insert({callee, k}).second)
        return success();
      // Every call must return result k as a gradient: the callee's kernel
      // accumulates for all of them.
      WalkResult w = module.walk([&](func::CallOp other) {
        if (other.getCallee() != callee.getSymName())
          return WalkResult::advance();
        Value r = other.getResult(k);
        auto parent = other->getParentOfType<func::FuncOp>();
        bool ok = r.hasOneUse() && isa<func::ReturnOp>(*r.user_begin()) &&
                  isGradientResult(parent, r.use_begin()->getOperandNumber());
        if (!ok) {
          other.emitOpError("result ")
              << k << " of @" << callee.getSymName()
              << " is a gradient of another call but not of this one: its "
                 "kernel cannot both accumulate and overwrite";
          return WalkResult::interrupt();
        }
        return WalkResult::advance();
      });
      if (w.wasInterrupted())
        return failure();
      auto cret = cast<func::ReturnOp>(callee.getBody().back().getTerminator());
      return mark(cret.getOperand(k), cret, k, out);
    }
    return ret->emitOpError("gradient result ")
           << index << " is not computed by a colossus.fusion";
  }

  ModuleOp module;
  llvm::DenseSet<std::pair<Operation *, unsigned>> visited;
};

/// Moves `op` before `target` (same block, `target` first), with the
/// side-effect-free ops between them that compute its operands; false (and
/// nothing moved) when one of those has side effects.
static bool hoistBefore(Operation *op, Operation *target) {
  SmallVector<Operation *> chain;
  llvm::DenseSet<Operation *> inChain;
  std::function<bool(Operation *)> collect = [&](Operation *o) -> bool {
    for (Value v : o->getOperands()) {
      Operation *def = v.getDefiningOp();
      if (!def || def->getBlock() != target->getBlock() ||
          def->isBeforeInBlock(target) || inChain.contains(def))
        continue;
      if (!isMemoryEffectFree(def) || def->getNumRegions() != 0 ||
          !collect(def))
        return false;
      inChain.insert(def);
      chain.push_back(def);
    }
    return true;
  };
  if (!collect(op))
    return false;
  // Operands first, in their block order.
  llvm::sort(chain,
             [](Operation *a, Operation *b) { return a->isBeforeInBlock(b); });
  for (Operation *o : chain)
    o->moveBefore(target);
  op->moveBefore(target);
  return true;
}

/// Column pairs (vector stores) of a Hopper GEMM whose accumulated output is
/// read ahead: the load of pair j moves before the stores of the previous
/// kAccumulateAhead - 1 pairs (ptxas must assume a store may alias a later
/// load, so a load issued after a store waits its whole latency; the pairs
/// are distinct elements, each stored once).
static constexpr int kAccumulateAhead = 4;

/// Turns every `memref.store x, out[i]` into `out[i] = out[i] + x` (and
/// every `vector.store` likewise, element by element: the Hopper GEMM's
/// epilogue stores column pairs) for the output buffers `outputs` of a
/// kernel. Each element must be written by one plain store per kernel run
/// (true of the reduction, row, elementwise and GEMM kernels that produce
/// gradients); any other use of the buffer is refused.
LogicalResult accumulateIntoOutputs(Block &entry, unsigned numInputs,
                                    ArrayRef<unsigned> outputs,
                                    FusionOp fusion) {
  for (unsigned r : outputs) {
    Value mem = entry.getArgument(numInputs + r);
    SmallVector<Operation *> stores;
    for (Operation *user : mem.getUsers()) {
      auto st = dyn_cast<memref::StoreOp>(user);
      auto vst = dyn_cast<vector::StoreOp>(user);
      if ((!st || st.getMemRef() != mem) && (!vst || vst.getBase() != mem))
        return fusion.emitOpError("cannot accumulate into gradient result ")
               << r << ": its kernel uses the output buffer in '"
               << user->getName() << "', not only in plain stores";
      stores.push_back(user);
    }
    if (stores.empty())
      return fusion.emitOpError("cannot accumulate into gradient result ")
             << r << ": its kernel does not store it";
    // A Hopper GEMM's launch ABI says which outputs it adds into.
    if (auto fn = dyn_cast<gpu::GPUFuncOp>(entry.getParentOp()))
      if (auto abi = fn->getAttrOfType<StringAttr>(kHopperGemmAbiAttr))
        fn->setAttr(kHopperGemmAbiAttr,
                    StringAttr::get(fn.getContext(),
                                    abi.getValue() +
                                        (abi.getValue().contains(" accumulate=")
                                             ? ","
                                             : " accumulate=") +
                                        Twine(r)));
    for (Operation *op : stores) {
      OpBuilder b(op);
      if (auto st = dyn_cast<memref::StoreOp>(op)) {
        Value old = b.create<memref::LoadOp>(st.getLoc(), mem, st.getIndices());
        st.getValueMutable().assign(
            b.create<arith::AddFOp>(st.getLoc(), old, st.getValue()));
        continue;
      }
      // A vector store of a chunk (sm_90a): the chunk is read the same way.
      auto vst = cast<vector::StoreOp>(op);
      Value old = b.create<vector::LoadOp>(
          vst.getLoc(), vst.getVectorType(), mem, vst.getIndices(),
          /*nontemporal=*/false,
          vst.getAlignment() ? llvm::MaybeAlign(*vst.getAlignment())
                             : llvm::MaybeAlign());
      vst.getValueToStoreMutable().assign(
          b.create<arith::AddFOp>(vst.getLoc(), old, vst.getValueToStore()));
      if (!entry.getParentOp()->hasAttr(kHopperGemmAbiAttr))
        continue;
      Operation *target = nullptr;
      int passed = 0;
      for (Operation *prev = old.getDefiningOp()->getPrevNode();
           prev && passed < kAccumulateAhead - 1; prev = prev->getPrevNode()) {
        if (isa<vector::StoreOp>(prev)) {
          target = prev;
          ++passed;
        }
      }
      if (target)
        (void)hoistBefore(old.getDefiningOp(), target);
    }
  }
  return success();
}

/// A kernel already generated, for structurally identical groups to share.
struct EmittedKernel {
  FusionOp fusion;           // the group it was generated for
  DictionaryAttr attrs;      // that group's attributes before generation
  SmallVector<unsigned> acc; // its accumulated results
  std::string name;
};

/// Whether `fusion` (attributes `attrs`, accumulated results `acc`) would
/// generate exactly `k`'s kernel: the same kind and attributes, the same
/// input and result types, the same accumulated results and an equivalent
/// body (the same ops, attributes and types, operands matched through the
/// block arguments). Kernel generation reads nothing else of a group.
static bool sameKernel(FusionOp fusion, DictionaryAttr attrs,
                       ArrayRef<unsigned> acc, const EmittedKernel &k) {
  FusionOp other = k.fusion;
  if (attrs != k.attrs || ArrayRef<unsigned>(k.acc) != acc ||
      fusion.getInputs().getTypes() != other.getInputs().getTypes() ||
      fusion.getResultTypes() != other.getResultTypes())
    return false;
  return OperationEquivalence::isRegionEquivalentTo(
      &fusion.getBody(), &other.getBody(),
      OperationEquivalence::IgnoreLocations);
}

struct ColossusKernelizePass final
    : public colossus::impl::ColossusKernelizeBase<ColossusKernelizePass> {
  using ColossusKernelizeBase::ColossusKernelizeBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    KernelTarget kt;
    if (target == "cpu") {
      kt = KernelTarget::Cpu;
    } else if (target == "sm_90a") {
      kt = KernelTarget::Gpu;
    } else {
      module.emitError() << "unknown target '" << target
                         << "' (expected cpu or sm_90a)";
      return signalPassFailure();
    }
    if (blockDim == 0 || blockDim > 1024 || blockDim % 32 != 0) {
      module.emitError() << "block-dim must be a multiple of 32 in [32, 1024]";
      return signalPassFailure();
    }
    OpBuilder b(module.getContext());
    b.setInsertionPointToEnd(module.getBody());
    auto kernels = b.create<ModuleOp>(module.getLoc(), StringRef("kernels"));
    if (kt == KernelTarget::Gpu)
      kernels->setAttr(gpu::GPUDialect::getContainerModuleAttrName(),
                       b.getUnitAttr());

    AccumulatedResults accumulated;
    if (failed(GradientOutputs(module).run(accumulated)))
      return signalPassFailure();

    // Generated kernels by kind, for reuse: structurally identical groups
    // (the layers of a step whose layer calls were inlined, e.g. a train
    // step with --recompute=none, or a layer's forward and its recomputed
    // forward) launch one kernel.
    llvm::StringMap<SmallVector<EmittedKernel>> emitted;
    for (auto fn : module.getOps<func::FuncOp>()) {
      unsigned idx = 0;
      WalkResult r = fn.walk([&](FusionOp fusion) {
        std::string name =
            (fn.getSymName() + "_" + Twine(idx++) + "_" + fusion.getKind())
                .str();
        DictionaryAttr attrsBefore = fusion->getAttrDictionary();
        SmallVector<unsigned> acc;
        if (auto it = accumulated.find(fusion); it != accumulated.end())
          acc = it->second;
        SmallVector<EmittedKernel> &same = emitted[fusion.getKind()];
        for (const EmittedKernel &k : same) {
          if (!sameKernel(fusion, attrsBefore, acc, k))
            continue;
          // What generation records on a group besides its kernel: the
          // scratch buffer and the kernel that runs after it.
          for (StringRef a : {kattrs::kScratchBytes, kattrs::kThenKernel})
            if (Attribute v = FusionOp(k.fusion)->getAttr(a))
              fusion->setAttr(a, v);
          fusion.setKernelAttr(FlatSymbolRefAttr::get(&getContext(), k.name));
          return WalkResult::advance();
        }
        OpBuilder kb(module.getContext());
        kb.setInsertionPointToEnd(kernels.getBody());
        if (kt == KernelTarget::Gpu) {
          auto gm = kb.create<gpu::GPUModuleOp>(fusion.getLoc(), name);
          kb.setInsertionPointToStart(gm.getBody());
        }
        if (failed(emitKernel(fusion, name, kt, blockDim, kb, hopperGemm,
                              hopperAttention)))
          return WalkResult::interrupt();
        if (auto it = accumulated.find(fusion); it != accumulated.end()) {
          // The kernel was created just before the insertion point.
          Operation *kernel = kb.getInsertionBlock()->empty()
                                  ? nullptr
                                  : &*std::prev(kb.getInsertionPoint());
          Block *entry = nullptr;
          if (auto f = dyn_cast_or_null<func::FuncOp>(kernel))
            entry = &f.getBody().front();
          else if (auto g = dyn_cast_or_null<gpu::GPUFuncOp>(kernel))
            entry = &g.getBody().front();
          // A fusion run as two kernels (a split reduction: partial sums,
          // then their total) stores its results in the second.
          if (auto then = fusion->getAttrOfType<StringAttr>(
                  colossus::kattrs::kThenKernel)) {
            auto gm = kernels.lookupSymbol<gpu::GPUModuleOp>(then);
            auto g = gm ? gm.lookupSymbol<gpu::GPUFuncOp>(then) : nullptr;
            entry = g ? &g.getBody().front() : nullptr;
          }
          unsigned numInputs = fusion.getBody().front().getNumArguments();
          if (!entry ||
              failed(accumulateIntoOutputs(*entry, numInputs, it->second,
                                           fusion)))
            return WalkResult::interrupt();
        }
        fusion.setKernelAttr(FlatSymbolRefAttr::get(&getContext(), name));
        same.push_back({fusion, attrsBefore, std::move(acc), name});
        return WalkResult::advance();
      });
      if (r.wasInterrupted())
        return signalPassFailure();
    }
  }
};

} // namespace
