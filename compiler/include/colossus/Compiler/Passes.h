//===- Passes.h - Colossus compiler passes ----------------------*- C++ -*-===//
#ifndef COLOSSUS_COMPILER_PASSES_H
#define COLOSSUS_COMPILER_PASSES_H

#include "colossus/Dialect/Colossus/IR/ColossusOps.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/Pass/Pass.h"

namespace colossus {

#define GEN_PASS_DECL
#include "colossus/Compiler/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "colossus/Compiler/Passes.h.inc"

} // namespace colossus

#endif
