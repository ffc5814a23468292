//===- colossus-opt.cpp - mlir-opt with the Colossus dialect and passes ---===//
#include "colossus/Compiler/Backends.h"
#include "colossus/Compiler/Passes.h"

#include "mlir/Tools/mlir-opt/MlirOptMain.h"

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  colossus::registerCompilerDialects(registry);
  colossus::registerColossusPasses();
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "Colossus optimizer driver\n", registry));
}
