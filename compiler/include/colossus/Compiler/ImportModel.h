//===- ImportModel.h - Model description to colossus IR --------*- C++ -*-===//
#ifndef COLOSSUS_COMPILER_IMPORTMODEL_H
#define COLOSSUS_COMPILER_IMPORTMODEL_H

#include "colossus/Compiler/ModelConfig.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

namespace colossus {

/// Attribute names used on the step function's arguments and the module.
namespace attrs {
inline constexpr const char *kParam = "colossus.param";   // HF tensor name
inline constexpr const char *kInit = "colossus.init";     // normal|ones|zeros
inline constexpr const char *kState = "colossus.state";   // KV cache name
inline constexpr const char *kInput = "colossus.input";   // "tokens"
inline constexpr const char *kOutput = "colossus.output"; // "logits"
inline constexpr const char *kBatch = "colossus.batch";
inline constexpr const char *kSeq = "colossus.seq";
inline constexpr const char *kModel = "colossus.model";
} // namespace attrs

/// The element type of parameters, activations and KV caches. Logits, the
/// loss and the statistics kernels keep internally are f32 either way.
enum class Precision { F32, BF16 };

/// Builds the forward step of `config` for a batch capacity `batch` and a
/// sequence capacity `seq`: one private func per distinct layer kind, called
/// once per layer from the public step function `@forward`. With `train`,
/// the public function is `@loss(tokens, targets, params..., caches...)`
/// returning the mean token cross entropy, ready for colossus-autodiff.
/// With Precision::BF16 the parameters, activations and caches are bf16 and
/// the output projection's result is converted to f32 logits.
mlir::OwningOpRef<mlir::ModuleOp>
importModel(mlir::MLIRContext *ctx, const ModelConfig &config,
            llvm::StringRef file, int64_t batch, int64_t seq,
            bool train = false, Precision precision = Precision::F32);

} // namespace colossus

#endif
