//===- TrainStep.h - The optimizer step of training -------------*- C++ -*-===//
#ifndef COLOSSUS_COMPILER_TRAINSTEP_H
#define COLOSSUS_COMPILER_TRAINSTEP_H

#include "mlir/IR/BuiltinOps.h"

namespace colossus {

struct OptimizerConfig {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weightDecay = 0.1;
};

/// Adds `@update(hyper, (param, grad, exp_avg, exp_avg_sq) per parameter of
/// @grads_fn) -> (grad_norm, new params, new exp_avg, new exp_avg_sq)`: the
/// global gradient norm, the clipping factor, and one AdamW update per
/// parameter (weight decay for parameters of rank >= 2 only).
mlir::LogicalResult buildUpdateStep(mlir::ModuleOp module,
                                    llvm::StringRef gradsFn,
                                    const OptimizerConfig &opt);

} // namespace colossus

#endif
