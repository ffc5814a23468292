//===- Artifact.h - Loading and validating a .colossus artifact -----------===//
//
// An artifact is one FlatBuffers buffer (runtime/schema/colossus.fbs). Before
// anything in it is trusted, `Artifact::loadFile` runs the checks of
// docs/artifact-format.md, in this order:
//
//   1. size >= 8 and identifier "CLSS" at offset 4,
//   2. flatbuffers::Verifier,
//   3. schema_version == kSchemaVersion,
//   4. the whole-file FNV-1a checksum (ArtifactChecksum.h),
//   5. the target fits the device (when a device is given),
//   6. internal consistency: every index in range, argument counts, arena
//      bounds, buffer kinds and sizes of the params / tokens / logits; at
//      most one step of each kind; for a grads step its targets, loss and
//      one gradient buffer per Param (named by hf_name, the param's size).
//
// Every error message starts with the artifact's path.
//
//===----------------------------------------------------------------------===//

#ifndef COLOSSUS_RUNTIME_ARTIFACT_H
#define COLOSSUS_RUNTIME_ARTIFACT_H

#include "colossus/runtime/Status.h"
#include "colossus/schema/colossus_generated.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace colossus {

/// The artifact schema version this runtime reads.
inline constexpr uint32_t kSchemaVersion = 1;

/// The devices the runtime can execute on.
enum class DeviceKind { Cpu, Cuda };

/// "cpu" or "cuda".
const char *deviceKindName(DeviceKind kind);
/// Parses "cpu" or "cuda".
std::optional<DeviceKind> parseDeviceKind(std::string_view name);
/// The device an artifact target runs on: cpu -> cpu, sm_90a -> cuda.
DeviceKind deviceForTarget(schema::Target target);
/// "cpu" or "sm_90a" (or "unknown(N)").
std::string targetName(schema::Target target);

/// A verified artifact. Owns the file's bytes; `root()` points into them.
class Artifact {
public:
  /// Reads `path` and runs checks 1-6 (check 5 only when `device` is set).
  static Expected<std::unique_ptr<Artifact>>
  loadFile(const std::string &path,
           std::optional<DeviceKind> device = std::nullopt);
  /// Same checks on bytes already in memory; `name` is used in messages.
  static Expected<std::unique_ptr<Artifact>>
  loadBuffer(std::vector<uint8_t> bytes, const std::string &name,
             std::optional<DeviceKind> device = std::nullopt);

  /// Check 5 on its own: the artifact's target runs on `device`.
  Status checkDevice(DeviceKind device) const;

  const schema::Artifact &root() const { return *root_; }
  /// The path (or name) the artifact was loaded from.
  const std::string &name() const { return name_; }
  const std::vector<uint8_t> &bytes() const { return bytes_; }

  schema::Target target() const { return root_->target(); }
  int64_t batch() const { return root_->batch(); }
  int64_t seq() const { return root_->seq(); }
  /// ModelInfo.vocab_size (validated >= 1): the row length of the logits.
  int64_t vocabSize() const { return root_->model()->vocab_size(); }

  /// The step with this name, or nullptr.
  const schema::Step *findStep(std::string_view stepName) const;
  /// The step of this kind (at most one, validated), or nullptr.
  const schema::Step *findStep(schema::StepKind kind) const;
  /// Number of buffers / kernels / params (0 when the vector is absent).
  uint32_t numBuffers() const;
  uint32_t numKernels() const;
  uint32_t numParams() const;

  /// Number of elements of a Param.shape (validated: dims >= 0, no overflow).
  static uint64_t numElements(const flatbuffers::Vector<int64_t> *shape);
  /// "[2, 3]" for messages.
  static std::string shapeString(const flatbuffers::Vector<int64_t> *shape);

private:
  Artifact(std::vector<uint8_t> bytes, std::string name)
      : bytes_(std::move(bytes)), name_(std::move(name)) {}
  Status verify(std::optional<DeviceKind> device);
  Status checkConsistency() const;

  std::vector<uint8_t> bytes_;
  std::string name_;
  const schema::Artifact *root_ = nullptr;
};

} // namespace colossus

#endif // COLOSSUS_RUNTIME_ARTIFACT_H
