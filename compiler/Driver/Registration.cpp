//===- Registration.cpp - Dialects and translations the compiler uses -----===//
#include "colossus/Compiler/Backends.h"
#include "colossus/Dialect/Colossus/IR/ColossusDialect.h"

#include "mlir/Dialect/GPU/Pipelines/Passes.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/InitAllPasses.h"
#include "mlir/Target/LLVMIR/Dialect/All.h"

void colossus::registerCompilerDialects(mlir::DialectRegistry &registry) {
  static bool passesRegistered = [] {
    mlir::registerAllPasses();
    mlir::gpu::registerGPUToNVVMPipeline();
    return true;
  }();
  (void)passesRegistered;
  mlir::registerAllDialects(registry);
  mlir::registerAllExtensions(registry);
  mlir::registerAllToLLVMIRTranslations(registry);
  registry.insert<colossus::ColossusDialect>();
}
