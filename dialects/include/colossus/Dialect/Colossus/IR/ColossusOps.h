//===- ColossusOps.h - Colossus dialect ops ---------------------*- C++ -*-===//
#ifndef COLOSSUS_DIALECT_COLOSSUS_IR_COLOSSUSOPS_H
#define COLOSSUS_DIALECT_COLOSSUS_IR_COLOSSUSOPS_H

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/Interfaces/ControlFlowInterfaces.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "colossus/Dialect/Colossus/IR/ColossusDialect.h"
#include "colossus/Dialect/Colossus/IR/ColossusEnums.h.inc"

#define GET_ATTRDEF_CLASSES
#include "colossus/Dialect/Colossus/IR/ColossusAttrs.h.inc"

#define GET_OP_CLASSES
#include "colossus/Dialect/Colossus/IR/ColossusOps.h.inc"

#endif
