//===- ColossusDialect.h - Colossus dialect ---------------------*- C++ -*-===//
#ifndef COLOSSUS_DIALECT_COLOSSUS_IR_COLOSSUSDIALECT_H
#define COLOSSUS_DIALECT_COLOSSUS_IR_COLOSSUSDIALECT_H

#include "mlir/IR/Dialect.h"

#include "colossus/Dialect/Colossus/IR/ColossusDialect.h.inc"

#endif
