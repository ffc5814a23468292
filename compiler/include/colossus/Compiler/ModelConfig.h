//===- ModelConfig.h - Model descriptions -----------------------*- C++ -*-===//
//
// Reads a model description: a Hugging Face config.json as published
// (model_type llama, mistral, gpt2) or the project's own strict format
// (docs/model-format.md), into one normalized ModelConfig.
//
//===----------------------------------------------------------------------===//
#ifndef COLOSSUS_COMPILER_MODELCONFIG_H
#define COLOSSUS_COMPILER_MODELCONFIG_H

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"
#include <cstdint>
#include <string>

namespace colossus {

enum class ModelFamily { Llama, GPT2 };

struct ModelConfig {
  ModelFamily family = ModelFamily::Llama;
  std::string modelType; // as written in the file: llama, mistral, gpt2
  std::string name;
  int64_t vocabSize = 0;
  int64_t hiddenSize = 0;
  int64_t intermediateSize = 0;
  int64_t numLayers = 0;
  int64_t numHeads = 0;
  int64_t numKvHeads = 0;
  int64_t headDim = 0;
  int64_t maxPositions = 0;
  double normEps = 1e-5;
  // RoPE (llama family)
  double ropeTheta = 10000.0;
  std::string ropeScaling = "none"; // none | linear | llama3
  double ropeFactor = 1.0;
  double ropeLowFreqFactor = 1.0;
  double ropeHighFreqFactor = 4.0;
  int64_t ropeOriginalMaxPositions = 8192;
  int64_t slidingWindow = 0; // 0: none
  // gpt2 family
  bool geluTanh = true;
  bool tieWordEmbeddings = false;
  int64_t bosTokenId = -1;
  int64_t eosTokenId = -1;

  /// Parameter count (weights only).
  int64_t numParameters() const;
};

/// Reads and validates a model description file. Errors name the file and
/// the offending key.
llvm::Expected<ModelConfig> readModelConfig(llvm::StringRef path);

} // namespace colossus

#endif
