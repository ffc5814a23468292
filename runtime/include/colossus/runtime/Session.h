//===- Session.h - Running a compiled model -------------------------------===//
//
// A Session is one loaded model: a verified artifact, a device with the
// artifact's kernels loaded, every buffer allocated once (one arena, one
// allocation per param / state / input / output buffer), and the parameters
// filled from a checkpoint or by --init=random. Steps then only copy tokens
// in, launch the step's kernels in order and copy logits out.
//
//   auto s = Session::create("m.colossus", {std::nullopt,
//                                           WeightsSpec::file("ckpt/")});
//   if (!s) { error: s.message(); }
//   auto logits = (*s)->forward({1, 2, 3});   // [3 * vocab] floats
//   auto out = (*s)->generate({1, 2, 3}, 16, SamplingParams{});
//
// A session is not thread-safe; use one per thread.
//
//===----------------------------------------------------------------------===//

#ifndef COLOSSUS_RUNTIME_SESSION_H
#define COLOSSUS_RUNTIME_SESSION_H

#include "colossus/runtime/Artifact.h"
#include "colossus/runtime/Device.h"
#include "colossus/runtime/Sampling.h"
#include "colossus/runtime/Status.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace colossus {

/// Where the parameters come from.
struct WeightsSpec {
  enum class Kind { File, Random };
  Kind kind = Kind::File;
  std::string path;  ///< Kind::File: a .safetensors, an index.json or a dir.
  uint64_t seed = 0; ///< Kind::Random: see initParam in Weights.h.

  static WeightsSpec file(std::string path) {
    return {Kind::File, std::move(path), 0};
  }
  static WeightsSpec random(uint64_t seed) { return {Kind::Random, "", seed}; }
};

struct SessionOptions {
  /// Device to run on; default: the artifact target's (cpu -> cpu,
  /// sm_90a -> cuda).
  std::optional<DeviceKind> device;
  WeightsSpec weights;
};

struct GenerateResult {
  std::vector<int32_t> tokens; ///< the new tokens only
  int64_t promptTokens = 0;
  double seconds = 0.0; ///< wall time of prefill + decode
};

class Session {
public:
  /// Loads and verifies the artifact, creates the device, loads the
  /// kernels, allocates the buffers and fills the parameters.
  static Expected<std::unique_ptr<Session>>
  create(const std::string &artifactPath, const SessionOptions &options);
  /// Same, from an artifact already loaded.
  static Expected<std::unique_ptr<Session>>
  create(std::unique_ptr<Artifact> artifact, const SessionOptions &options);
  ~Session();
  Session(const Session &) = delete;
  Session &operator=(const Session &) = delete;

  /// Logits of every prompt position: L * vocab floats, row-major [L, vocab]
  /// (one step: nb = 1, nt = L, pos0 = 0). 1 <= L <= seq and every id in
  /// [0, vocab).
  Expected<std::vector<float>> forward(const std::vector<int32_t> &tokens);

  /// Prefill (nb = 1, nt = L, pos0 = 0), then maxNew - 1 decode steps
  /// (nt = 1, pos0 = L + i). Needs L + maxNew <= seq.
  Expected<GenerateResult> generate(const std::vector<int32_t> &prompt,
                                    int64_t maxNew,
                                    const SamplingParams &sampling);

  // ---- Lower level: one step at a time ----
  /// Zeroes the state buffers (KV caches); forward and generate do it first.
  Status resetState();
  /// Writes ids into rows 0..count-1 of the step's tokens buffer.
  Status writeTokens(const int32_t *ids, size_t count);
  /// Runs the step's launches on the active region (validated).
  Status runStep(int64_t nb, int64_t nt, int64_t pos0);
  /// Copies rows 0..rows-1 of the logits buffer ([rows, vocab] floats).
  Status readLogits(float *out, size_t rows);

  const Artifact &artifact() const { return *artifact_; }
  Device &device() { return *device_; }
  DeviceKind deviceKind() const { return device_->kind(); }
  int64_t vocabSize() const { return artifact_->vocabSize(); }
  int64_t seqCapacity() const { return artifact_->seq(); }
  /// Device address of Artifact.buffers[index] (arena buffers: inside the
  /// arena).
  void *bufferAddress(uint32_t index) const { return bufferPtrs_.at(index); }

private:
  Session() = default;
  Status init(const SessionOptions &options);
  Status allocateBuffers();
  Status fillParams(const WeightsSpec &weights);
  Status checkTokens(const std::vector<int32_t> &tokens,
                     const char *what) const;

  struct PreparedLaunch {
    uint32_t kernel;
    std::vector<void *> args;
  };

  std::unique_ptr<Artifact> artifact_;
  std::unique_ptr<Device> device_;
  const schema::Step *step_ = nullptr;
  void *arena_ = nullptr;
  std::vector<void *> ownAllocations_;
  std::vector<void *> bufferPtrs_;
  std::vector<uint32_t> stateBuffers_;
  std::vector<PreparedLaunch> launches_;
};

} // namespace colossus

#endif // COLOSSUS_RUNTIME_SESSION_H
