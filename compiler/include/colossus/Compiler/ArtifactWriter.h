//===- ArtifactWriter.h - FlatBuffers artifact emission ---------*- C++ -*-===//
#ifndef COLOSSUS_COMPILER_ARTIFACTWRITER_H
#define COLOSSUS_COMPILER_ARTIFACTWRITER_H

#include "colossus/Compiler/Backends.h"
#include "colossus/Compiler/MemoryPlan.h"
#include "colossus/Compiler/ModelConfig.h"
#include "colossus/Compiler/TrainStep.h"

#include <optional>

#include <string>
#include <vector>

namespace colossus {

/// What the artifact records of one kernel.
struct KernelRecord {
  std::string name;
  std::string kind;
  std::vector<std::string> fusedOps;
  int64_t cols = 1;
  int64_t fixedRows = 0; // 0: the active rows (nb * nt)
  unsigned numArgs = 0;
  unsigned blockDim = 0;
  double flops = 0; // whole compiled shape
  double bytes = 0;
  GpuKernelBinary gpu; // sm_90a only
};

struct ArtifactInputs {
  bool gpu = false;
  const ModelConfig *config = nullptr;
  int64_t batch = 0, seq = 0;
  std::vector<KernelRecord> kernels;
  std::vector<uint8_t> cpuObject;
  const StepPlan *plan = nullptr;
  std::optional<OptimizerConfig> optimizer; // with an update step
};

/// Serializes the artifact (schema runtime/schema/colossus.fbs) and stamps
/// its checksum. Deterministic: the same inputs give the same bytes.
std::vector<uint8_t> writeArtifact(const ArtifactInputs &in);

} // namespace colossus

#endif
