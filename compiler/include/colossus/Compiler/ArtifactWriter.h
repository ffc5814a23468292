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

/// A kernel parameter that takes a pointer to a CUtensorMap (schema
/// TensorMap; enum fields hold the CUDA driver's numeric values).
struct TensorMapRecord {
  unsigned arg = 0; ///< pointer argument the map replaces
  uint8_t dataType = 0;
  unsigned rank = 0;
  std::vector<uint64_t> globalDim;     ///< innermost first, elements
  std::vector<uint64_t> globalStrides; ///< rank - 1, bytes
  std::vector<uint32_t> boxDim;
  std::vector<uint32_t> elementStrides;
  uint8_t interleave = 0, swizzle = 0, l2Promotion = 0, oobFill = 0;
};

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
  /// sm_90a kernels with a launch ABI (gpu.abi: the Hopper GEMM): the fixed
  /// 3-D launch shape, the dynamic shared memory and the tensor-map
  /// parameters (applyLaunchAbi); empty for plain SIMT kernels.
  std::vector<uint32_t> grid, block;
  std::optional<unsigned> dynamicSmemBytes;
  std::vector<TensorMapRecord> tensorMaps;
};

/// Fills `k`'s grid, block, dynamicSmemBytes and tensorMaps from its launch
/// ABI (`k.gpu.abi`, docs/hopper-gemm.md "Launch ABI"); nothing when the ABI
/// is empty. Fails when the ABI line lacks a key or has a bad value.
llvm::Error applyLaunchAbi(KernelRecord &k);

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
