//===- ColossusDialect.cpp - Colossus dialect -----------------------------===//
#include "colossus/Dialect/Colossus/IR/ColossusDialect.h"
#include "colossus/Dialect/Colossus/IR/ColossusOps.h"

#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace colossus;

#include "colossus/Dialect/Colossus/IR/ColossusDialect.cpp.inc"
#include "colossus/Dialect/Colossus/IR/ColossusEnums.cpp.inc"
#define GET_ATTRDEF_CLASSES
#include "colossus/Dialect/Colossus/IR/ColossusAttrs.cpp.inc"

void ColossusDialect::initialize() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "colossus/Dialect/Colossus/IR/ColossusAttrs.cpp.inc"
      >();
  addOperations<
#define GET_OP_LIST
#include "colossus/Dialect/Colossus/IR/ColossusOps.cpp.inc"
      >();
}
