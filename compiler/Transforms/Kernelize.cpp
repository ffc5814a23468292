//===- Kernelize.cpp - One loop-nest kernel per colossus.fusion -----------===//
#include "colossus/Compiler/KernelEmitter.h"
#include "colossus/Compiler/Passes.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"

namespace colossus {
#define GEN_PASS_DEF_COLOSSUSKERNELIZE
#include "colossus/Compiler/Passes.h.inc"
} // namespace colossus

using namespace mlir;
using namespace colossus;

namespace {

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

    for (auto fn : module.getOps<func::FuncOp>()) {
      unsigned idx = 0;
      WalkResult r = fn.walk([&](FusionOp fusion) {
        std::string name =
            (fn.getSymName() + "_" + Twine(idx++) + "_" + fusion.getKind())
                .str();
        OpBuilder kb(module.getContext());
        kb.setInsertionPointToEnd(kernels.getBody());
        if (kt == KernelTarget::Gpu) {
          auto gm = kb.create<gpu::GPUModuleOp>(fusion.getLoc(), name);
          kb.setInsertionPointToStart(gm.getBody());
        }
        if (failed(emitKernel(fusion, name, kt, blockDim, kb)))
          return WalkResult::interrupt();
        fusion.setKernelAttr(FlatSymbolRefAttr::get(&getContext(), name));
        return WalkResult::advance();
      });
      if (r.wasInterrupted())
        return signalPassFailure();
    }
  }
};

} // namespace
