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
// An artifact compiled with --step=train has a grads step instead of a
// forward step (Step.kind): `grads(tokens, targets)` runs it on a whole
// batch and returns the loss and the gradient of every parameter; with an
// update step as well, `update(lr, t, maxGradNorm)` then applies one AdamW
// step to the parameters and optimizer state in place (the train command).
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
  /// cuda: replay each step as a CUDA graph (captured on the first run with
  /// a given nb, nt, pos0). `colossus-run --no-cuda-graphs` sets it false.
  bool cudaGraphs = true;
  /// cuda: CudaOptions::graphAfterRuns (capture a step on its n-th run with
  /// the same nb, nt, pos0; default the second).
  unsigned cudaGraphAfterRuns = 2;
  /// Time every kernel launch (Device::setProfiling; `colossus-run
  /// --profile`). Serializes each step with the host.
  bool profile = false;
};

struct GenerateResult {
  std::vector<int32_t> tokens; ///< the new tokens only
  int64_t promptTokens = 0;
  double seconds = 0.0; ///< wall time of prefill + decode
};

/// The ignore index of the loss: a target equal to it counts in neither the
/// sum nor the count of the mean cross entropy (docs/training.md).
inline constexpr int32_t kIgnoreIndex = -100;

/// The gradient of one parameter, read back from a grads step.
struct ParamGradient {
  std::string name;           ///< Param.hf_name
  std::vector<int64_t> shape; ///< Param.shape
  std::vector<float> values;  ///< row-major, product(shape) floats
};

struct GradsResult {
  float loss = 0.0f;     ///< the step's loss output (mean cross entropy)
  double gradNorm = 0.0; ///< gradientNorm(grads), computed on the host
  /// One per Param, in the order of Artifact.params.
  std::vector<ParamGradient> grads;
  double seconds = 0.0; ///< wall time: inputs in, launches, outputs out
  /// The step's launches timed on the device (cuda: CUDA events around
  /// them); negative where the device does not time steps (cpu).
  double deviceSeconds = -1.0;
};

/// sqrt of the sum of the squares of every value of every gradient,
/// accumulated in double (the global norm of docs/training.md, before
/// clipping).
double gradientNorm(const std::vector<ParamGradient> &grads);

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

  /// Runs the grads step on one whole batch: `tokens` and `targets` hold
  /// batch * seq ids each, row-major [batch, seq] (TokenData::fillBatch's
  /// layout). Every token id must be in [0, vocab), every target in
  /// [0, vocab) or kIgnoreIndex. Zeroes the state buffers and the loss and
  /// gradient buffers, writes the two inputs, runs the step with
  /// nb = batch, nt = seq, pos0 = 0, and reads the loss and every gradient.
  /// An error when the artifact has no grads step.
  /// With readGradients = false the gradients stay on the device
  /// (GradsResult.grads is empty and gradNorm 0): the train loop's case.
  Expected<GradsResult> grads(const int32_t *tokens, const int32_t *targets,
                              bool readGradients = true);

  /// As grads(), but without zeroing the gradient buffers first: the grads
  /// step's kernels add into them (docs/artifact-format.md), so after
  /// grads() on micro-batch 0 and accumulateGrads() on micro-batches
  /// 1 .. M-1 they hold the sum of the M micro-batch gradients (gradient
  /// accumulation; update() with gradScale = 1/M then uses their mean).
  /// The loss is that of this micro-batch; with readGradients the
  /// gradients read back (and gradNorm) are the running sums.
  Expected<GradsResult> accumulateGrads(const int32_t *tokens,
                                        const int32_t *targets,
                                        bool readGradients = true);

  /// Runs the update step (an artifact compiled with --step=train by a
  /// compiler that emits one): one AdamW update of every parameter from the
  /// gradients the last grads() left in its output buffers. Writes the
  /// step's hyper input [lr, 1 - beta1^t, 1 - beta2^t, maxGradNorm,
  /// gradScale] (bias corrections computed in double from
  /// Artifact.optimizer, then rounded to f32), runs the launches with
  /// nb = nt = 1, pos0 = 0, and returns the global norm of gradScale times
  /// the stored gradients, before clipping (the grad_norm output). The
  /// norm, the clipping and AdamW all see gradScale * gradient: 1/M after M
  /// accumulated micro-batches (the mean gradient), 1 otherwise. t >= 1;
  /// gradScale finite and > 0; maxGradNorm <= 0 disables clipping.
  /// Parameters and optimizer state are updated in place.
  Expected<double> update(double lr, int64_t t, double maxGradNorm,
                          double gradScale = 1.0);

  /// The artifact's update step, or nullptr.
  const schema::Step *updateStep() const { return updateStep_; }

  // ---- Host access to parameters and optimizer state (checkpoints) ----
  // `param` indexes Artifact.params; `out` / `values` hold the param's
  // element count (product of Param.shape) floats.
  Status readParam(uint32_t param, float *out);
  Status writeParam(uint32_t param, const float *values);
  /// exp_avg / exp_avg_sq of a param (opt_state buffers
  /// "<hf_name>.exp_avg" / ".exp_avg_sq"); an error without an update step.
  Status readOptState(uint32_t param, float *expAvg, float *expAvgSq);
  Status writeOptState(uint32_t param, const float *expAvg,
                       const float *expAvgSq);

  /// The artifact's forward / grads step (Step.kind), or nullptr.
  const schema::Step *forwardStep() const { return forwardStep_; }
  const schema::Step *gradsStep() const { return gradsStep_; }

  // ---- Lower level: one forward step at a time ----
  // (errors when the artifact has no forward step)
  /// Zeroes the state buffers (KV caches); forward, generate and grads do it
  /// first.
  Status resetState();
  /// Writes ids into rows 0..count-1 of the forward step's tokens buffer.
  Status writeTokens(const int32_t *ids, size_t count);
  /// Runs the forward step's launches on the active region (validated).
  Status runStep(int64_t nb, int64_t nt, int64_t pos0);
  /// Copies rows 0..rows-1 of the logits buffer ([rows, vocab] floats).
  Status readLogits(float *out, size_t rows);

  const Artifact &artifact() const { return *artifact_; }
  Device &device() { return *device_; }
  /// Device time of the last step run (Device::lastStepSeconds): waits for
  /// it; negative on the cpu device.
  Expected<double> lastStepDeviceSeconds() {
    return device_->lastStepSeconds();
  }
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
  /// --init=random: the parameters generated on worker threads (one each),
  /// stored by this thread in order (docs/runtime.md).
  Status fillParamsRandom(uint64_t seed);
  /// Copies one filled parameter (f32 values `host`, their bf16 rounding
  /// `narrow` for a bf16 buffer) to its master and its buffer; `staged`:
  /// `host` is not the buffer's own memory.
  Status storeParam(const schema::Param &param, const float *host,
                    const uint16_t *narrow, bool staged, size_t count);
  Status checkTokens(const std::vector<int32_t> &tokens,
                     const char *what) const;
  Status requireForward() const;
  Status requireGrads() const;
  Expected<GradsResult> runGrads(const int32_t *tokens, const int32_t *targets,
                                 bool readGradients, bool zeroGradients);
  Status requireUpdate() const;
  Status copyBuffer(uint32_t buffer, void *out);
  Status fillBuffer(uint32_t buffer, const void *in);

  struct PreparedLaunch {
    uint32_t kernel;
    std::vector<void *> args;
  };
  /// The launches of one step, built once, and their StepLaunch views.
  struct PreparedStep {
    uint32_t id = 0; ///< the StepKind, the step's id for Device::runStep
    std::vector<PreparedLaunch> launches;
    std::vector<StepLaunch> views;
  };

  Status runLaunches(const PreparedStep &step, int64_t nb, int64_t nt,
                     int64_t pos0);

  std::unique_ptr<Artifact> artifact_;
  std::unique_ptr<Device> device_;
  const schema::Step *forwardStep_ = nullptr;
  const schema::Step *gradsStep_ = nullptr;
  const schema::Step *updateStep_ = nullptr;
  void *arena_ = nullptr;
  std::vector<void *> ownAllocations_;
  std::vector<void *> bufferPtrs_;
  std::vector<uint32_t> stateBuffers_;
  PreparedStep forwardLaunches_;
  PreparedStep gradsLaunches_;
  /// grads step: the gradient buffer of params[i].
  std::vector<uint32_t> gradBufferOfParam_;
  PreparedStep updateLaunches_;
  /// update step: the exp_avg / exp_avg_sq buffers of params[i].
  std::vector<std::pair<uint32_t, uint32_t>> optStateOfParam_;
};

} // namespace colossus

#endif // COLOSSUS_RUNTIME_SESSION_H
