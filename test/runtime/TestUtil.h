//===- TestUtil.h - Helpers of the runtime tests --------------------------===//
//
// Hand-built artifacts (FlatBufferBuilder with ForceDefaults(true), checksum
// stamped), safetensors writers, temporary directories and the reference
// semantics of the tiny model of tiny_kernels.c.
//
//===----------------------------------------------------------------------===//

#ifndef COLOSSUS_TEST_RUNTIME_TESTUTIL_H
#define COLOSSUS_TEST_RUNTIME_TESTUTIL_H

#include "colossus/schema/colossus_generated.h"

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace colossus::test {

/// A schema TensorMap (defaults: the Hopper GEMM's bf16, 128B swizzle,
/// 256B L2 promotion).
struct TensorMapSpec {
  uint32_t arg = 0;
  schema::TensorMapDataType dataType = schema::TensorMapDataType::bfloat16;
  uint32_t rank = 2;
  std::vector<uint64_t> globalDim, globalStrides;
  std::vector<uint32_t> boxDim, elementStrides = {1, 1};
  schema::TensorMapInterleave interleave = schema::TensorMapInterleave::none;
  schema::TensorMapSwizzle swizzle = schema::TensorMapSwizzle::b128;
  schema::TensorMapL2Promotion l2Promotion = schema::TensorMapL2Promotion::b256;
  schema::TensorMapOobFill oobFill = schema::TensorMapOobFill::none;
};

struct KernelSpec {
  std::string name;
  uint32_t numArgs = 0;
  schema::RowExtent rows = schema::RowExtent::tokens;
  int64_t fixedRows = 0;
  int64_t cols = 8;
  uint32_t blockDim = 128;
  uint32_t sharedMemBytes = 0;
  std::string ptx;
  std::vector<uint8_t> cubin;
  std::vector<uint32_t> grid, block;     ///< written when grid is non-empty
  std::vector<TensorMapSpec> tensorMaps; ///< written when non-empty
};

struct BufferSpec {
  std::string name;
  schema::BufferKind kind = schema::BufferKind::arena;
  schema::DType dtype = schema::DType::f32;
  std::vector<int64_t> shape;
  uint64_t offset = 0;
  uint64_t size = 0;
};

struct ParamSpec {
  std::string hfName;
  std::vector<int64_t> shape;
  uint32_t buffer = 0;
  schema::ParamInit init = schema::ParamInit::normal;
  float initStd = 0.02f;
};

struct LaunchSpec {
  uint32_t kernel = 0;
  std::vector<uint32_t> args;
};

struct StepSpec {
  std::string name = "forward";
  std::vector<LaunchSpec> launches;
  uint32_t tokens = 0;
  uint32_t logits = 1;
  schema::StepKind kind = schema::StepKind::forward;
  uint32_t targets = 0;                                ///< grads steps
  uint32_t loss = 0;                                   ///< grads steps
  std::vector<std::pair<std::string, uint32_t>> grads; ///< name, buffer
  uint32_t hyper = 0;                                  ///< update steps
  uint32_t gradNorm = 0;                               ///< update steps
};

struct OptimizerSpec {
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weightDecay = 0.1f;
};

struct ArtifactSpec {
  uint32_t schemaVersion = 1;
  schema::Target target = schema::Target::cpu;
  int64_t batch = 1;
  int64_t seq = 16;
  int64_t vocab = 8;
  std::vector<KernelSpec> kernels;
  std::vector<uint8_t> cpuObject;
  std::vector<BufferSpec> buffers;
  uint64_t arenaBytes = 0;
  std::vector<ParamSpec> params;
  std::vector<StepSpec> steps;
  bool stampChecksum = true;
  std::optional<OptimizerSpec> optimizer; ///< Artifact.optimizer
};

/// Serialises the spec (file identifier CLSS, ForceDefaults) and stamps the
/// checksum.
std::vector<uint8_t> buildArtifact(const ArtifactSpec &spec);

/// The bytes of the compiled tiny_kernels.c shared object.
const std::vector<uint8_t> &tinyKernelsObject();

/// The tiny model: V = 8, S = 16, B = 1; buffers
///   0 tokens (input i32), 1 logits (output f32), 2 emb param [8, 8]
///   "model.embed.weight", 3 bias param [8] "model.bias" (init ones),
///   4 kv state [1, 16, 1], 5 hid arena [16, 8];
/// kernels tiny_store_kv, tiny_embed, tiny_logits; step "forward".
ArtifactSpec tinySpec();

/// Reference of the tiny model (see tiny_kernels.c): logits of the rows of
/// one step over `tokens` at `pos0`, with `context` the tokens at positions
/// 0 .. pos0 - 1 already in the cache.
std::vector<float> tinyReference(const std::vector<float> &emb,
                                 const std::vector<float> &bias,
                                 const std::vector<int32_t> &context,
                                 const std::vector<int32_t> &tokens,
                                 int64_t pos0);

/// The tiny grads step (tiny_xent / tiny_xent_grad of tiny_kernels.c):
/// V = 8, B = 2, S = 4; buffers
///   0 tokens (input i32 [8]), 1 targets (input i32 [8]),
///   2 emb param [8, 8] "model.embed.weight", 3 bias param [8] "model.bias",
///   4 probs arena [8, 8], 5 loss output f32 [], 6 grad of emb output
///   [8, 8], 7 grad of bias output [8], 8 probe output i32 [3] (nb, nt, pos0
///   of the last launch);
/// step "grads" of kind grads, whose grads list the bias first.
ArtifactSpec tinyGradsSpec();

/// tinyGradsSpec plus an update step (tiny_adamw of tiny_kernels.c, AdamW
/// with the project's defaults) and Artifact.optimizer; extra buffers
///   9 "model.embed.weight.exp_avg", 10 "model.embed.weight.exp_avg_sq",
///   11 "model.bias.exp_avg", 12 "model.bias.exp_avg_sq" (opt_state f32),
///   13 hyper (input f32 [4]), 14 grad_norm (output f32 [1]);
/// steps "grads" then "update" (kind update).
ArtifactSpec tinyTrainSpec();

/// Reference of the tiny grads step, in double: the mean cross entropy of
/// logits[r] = emb[tokens[r]] + bias against targets[r] (-100 ignored) and
/// its gradients with respect to emb ([8, 8]) and bias ([8]).
struct TinyGrads {
  double loss = 0.0;
  std::vector<double> emb, bias;
};
TinyGrads tinyGradsReference(const std::vector<float> &emb,
                             const std::vector<float> &bias,
                             const std::vector<int32_t> &tokens,
                             const std::vector<int32_t> &targets);

/// A safetensors tensor to write.
struct TensorData {
  std::string name;
  std::string dtype; // F32, F16, BF16, I64 ...
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};
TensorData f32Tensor(const std::string &name, std::vector<int64_t> shape,
                     const std::vector<float> &values);
TensorData f16Tensor(const std::string &name, std::vector<int64_t> shape,
                     const std::vector<float> &values);
TensorData bf16Tensor(const std::string &name, std::vector<int64_t> shape,
                      const std::vector<float> &values);
std::vector<uint8_t> safetensorsBytes(const std::vector<TensorData> &tensors);

/// Deterministic test values.
std::vector<float> testValues(size_t n, uint32_t seed);

/// A fresh directory under $TMPDIR (or /tmp), removed with its contents.
class TempDir {
public:
  TempDir();
  ~TempDir();
  const std::string &path() const { return path_; }
  std::string file(const std::string &name) const { return path_ + "/" + name; }

private:
  std::string path_;
};

void writeFile(const std::string &path, const std::vector<uint8_t> &bytes);
void writeText(const std::string &path, const std::string &text);
std::vector<uint8_t> readFile(const std::string &path);

/// Runs a shell command; returns its exit status, stdout and stderr.
struct CommandResult {
  int exitCode = -1;
  std::string out;
  std::string err;
};
CommandResult runCommand(const std::string &command);

} // namespace colossus::test

#endif // COLOSSUS_TEST_RUNTIME_TESTUTIL_H
