//===- MemoryPlan.h - Step program and static memory plan -------*- C++ -*-===//
#ifndef COLOSSUS_COMPILER_MEMORYPLAN_H
#define COLOSSUS_COMPILER_MEMORYPLAN_H

#include "mlir/IR/BuiltinOps.h"
#include "llvm/Support/Error.h"

#include <string>
#include <vector>

namespace colossus {

enum class BufferKind { Param, State, Arena, Input, Output, OptState };

struct PlannedBuffer {
  std::string name;
  BufferKind kind;
  /// Element type, as the artifact's Buffer.dtype names it.
  enum class DType { F32, F16, BF16, I32 } dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t size = 0;   // bytes
  uint64_t offset = 0; // arena buffers
  std::string init;    // params: normal | ones | zeros
  int defLaunch = -1, lastUse = -1;
};

struct PlannedLaunch {
  std::string kernel;
  std::vector<unsigned> args;
};

struct StepPlan {
  bool grads = false; // a grads step (loss + gradients) rather than forward
  std::vector<PlannedBuffer> buffers;
  std::vector<PlannedLaunch> launches;
  uint64_t arenaBytes = 0;
  uint64_t arenaBytesWithoutReuse = 0;
  unsigned tokens = 0, logits = 0, targets = 0, loss = 0;
  std::vector<std::pair<std::string, unsigned>> gradOutputs; // param -> buffer
  // The update step (training): AdamW from the grads step's gradients.
  bool hasUpdate = false;
  std::vector<PlannedLaunch> updateLaunches;
  unsigned hyper = 0, gradNorm = 0;
};

/// Unrolls a step function (calls to layer functions included) into a launch
/// sequence over buffers, then packs the activation buffers into one arena
/// by liveness (first fit, 256-byte aligned). Every colossus.fusion must
/// carry its `kernel` symbol. `@forward` returns logits (then KV caches);
/// `@loss_grad` returns the loss then one gradient per `colossus.param`.
llvm::Expected<StepPlan> planStep(mlir::ModuleOp module,
                                  llvm::StringRef stepName = "forward");

/// Plans `@loss_grad` then `@update` (built by buildUpdateStep) over the same
/// parameter and gradient buffers.
llvm::Expected<StepPlan> planTrainSteps(mlir::ModuleOp module);

} // namespace colossus

#endif
