//===- Weights.h - safetensors weights and parameter initialisation -------===//
//
// Weights live outside the artifact, in safetensors files:
//   - a single `.safetensors` file,
//   - a Hugging Face sharded checkpoint: `model.safetensors.index.json` whose
//     "weight_map" maps tensor names to shard files (relative to the index's
//     directory),
//   - a directory holding `model.safetensors` (preferred) or
//     `model.safetensors.index.json`.
// Files are memory-mapped; shards are opened on first use. Every Param of
// the artifact must name an existing tensor whose shape equals Param.shape
// exactly and whose dtype is F32, F16 or BF16; it is converted to f32
// (exactly: every f16 and bf16 value is representable in f32).
//
//===----------------------------------------------------------------------===//

#ifndef COLOSSUS_RUNTIME_WEIGHTS_H
#define COLOSSUS_RUNTIME_WEIGHTS_H

#include "colossus/runtime/Status.h"
#include "colossus/schema/colossus_generated.h"

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace colossus {

//===----------------------------------------------------------------------===//
// Half-precision conversions
//===----------------------------------------------------------------------===//

/// IEEE binary16 -> f32, exact (subnormals, infinities and NaN payloads).
float halfToFloat(uint16_t h);
/// bfloat16 -> f32, exact (the upper 16 bits of an f32).
float bfloat16ToFloat(uint16_t b);
/// f32 -> IEEE binary16, round to nearest even; NaN stays NaN.
uint16_t floatToHalf(float f);
/// f32 -> bfloat16, round to nearest even; NaN stays NaN.
uint16_t floatToBfloat16(float f);

//===----------------------------------------------------------------------===//
// safetensors
//===----------------------------------------------------------------------===//

/// One tensor of a safetensors file (a view into the mapping).
struct SafetensorsTensor {
  std::string name;
  std::string dtype; // as written in the header: "F32", "BF16", "I64", ...
  std::vector<int64_t> shape;
  const uint8_t *data = nullptr; // not necessarily aligned
  uint64_t bytes = 0;
};

/// A memory-mapped safetensors file: 8-byte little-endian header length N,
/// N bytes of JSON header, then the data. The header is validated on open:
/// N fits in the file; every entry has a string dtype, a shape of
/// non-negative integers and data_offsets [begin, end] inside the data
/// section; for dtypes of known width, end - begin == numel * width.
class SafetensorsFile {
public:
  static Expected<std::unique_ptr<SafetensorsFile>>
  open(const std::string &path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile &) = delete;
  SafetensorsFile &operator=(const SafetensorsFile &) = delete;

  /// The tensor with this name, or nullptr.
  const SafetensorsTensor *find(const std::string &name) const;
  /// Tensor names, sorted.
  std::vector<std::string> names() const;
  /// The string entries of the header's "__metadata__" object (entries whose
  /// value is not a string are left out); empty when there is none.
  const std::map<std::string, std::string> &metadata() const {
    return metadata_;
  }
  const std::string &path() const { return path_; }

private:
  SafetensorsFile(std::string path) : path_(std::move(path)) {}
  std::string path_;
  void *map_ = nullptr;
  size_t mapSize_ = 0;
  std::unordered_map<std::string, SafetensorsTensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

/// A checkpoint: one safetensors file or a sharded index (see top of file).
class WeightSource {
public:
  /// `path`: a .safetensors file, a *.index.json, or a directory.
  static Expected<std::unique_ptr<WeightSource>> open(const std::string &path);

  /// The tensor, opening its shard if needed.
  /// Error: "weights PATH: missing tensor 'name'".
  Expected<const SafetensorsTensor *> tensor(const std::string &name);
  /// The path as given to open(), used in messages.
  const std::string &path() const { return path_; }

private:
  std::string path_;
  std::unique_ptr<SafetensorsFile> single_;
  std::map<std::string, std::string> weightMap_; // name -> shard path
  std::map<std::string, std::unique_ptr<SafetensorsFile>> shards_;
};

/// Converts an F32 / F16 / BF16 tensor into `count` f32 values at `out`.
/// Other dtypes fail with a message naming the tensor and its dtype;
/// `weightsName` prefixes the message.
Status convertToF32(const SafetensorsTensor &tensor, float *out, size_t count,
                    const std::string &weightsName);

/// Looks up `param.hf_name` in `source`, checks it (exists, shape equals
/// Param.shape, float dtype) and writes it as f32 into `out` (`count`
/// elements, the product of Param.shape).
Status loadParam(WeightSource &source, const schema::Param &param, float *out,
                 size_t count);

/// Fills a parameter for `--init=random --seed=N`, deterministically:
///   ones -> 1.0f; zeros -> 0.0f;
///   normal -> N(0, init_std^2) samples: a xoshiro256** generator whose four
///   state words are successive splitmix64 outputs starting from
///   splitmix64(seed) ^ (paramIndex * 0x9E3779B97F4A7C15); each pair of
///   53-bit uniforms u1 in (0, 1], u2 in [0, 1) gives two samples by
///   Box-Muller (r = sqrt(-2 ln u1), r cos(2 pi u2), r sin(2 pi u2)).
/// The values depend only on (seed, paramIndex, init, init_std, count).
void initParam(const schema::Param &param, uint64_t seed, uint32_t paramIndex,
               float *out, size_t count);

} // namespace colossus

#endif // COLOSSUS_RUNTIME_WEIGHTS_H
