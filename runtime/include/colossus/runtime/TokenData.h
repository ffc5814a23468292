//===- TokenData.h - Token files and deterministic batches ----------------===//
//
// Training data is a flat file of token ids (the nanoGPT / Megatron
// convention): little-endian uint16 or uint32, no header. The dtype comes
// from an explicit option (the planned `--data-dtype` flag), else from a
// sidecar `<file>.json` holding {"dtype": "uint16"} ("u16", "uint32" and
// "u32" are accepted too; other keys are ignored), else opening fails with a
// message saying how to give it. An option that disagrees with the sidecar
// is an error. The file is memory-mapped.
//
// A batch of step s (s = 0, 1, ...) has B samples of S + 1 consecutive
// tokens each ("windows"); sample i's inputs are the first S tokens of its
// window and its targets the last S. With N tokens in the file:
//
//   sequential: w = s * B + i; W = (N - 1) / S whole windows;
//               start = (w mod W) * S.
//               Windows are consecutive, overlapping by one token (the last
//               target of window w is the first input of window w + 1); after
//               W windows (one epoch) the order starts again from the
//               beginning of the file. Before the wrap this is exactly
//               start = w * S, the formula any other tool can reproduce.
//   random:     start = batchHash(seed, s, i) mod (N - S), with
//               batchHash(seed, s, i) = sm(sm(sm(seed) ^ s) ^ i),
//               sm(x) = the splitmix64 output for state x:
//                 z = x + 0x9E3779B97F4A7C15;
//                 z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
//                 z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
//                 sm(x) = z ^ (z >> 31)          (all mod 2^64).
//               Stateless: batch s depends only on (seed, s, i, N, S), so a
//               resumed run needs only the step number.
//
// The sample index i is the index in the global batch of the optimizer step
// (across micro-batches and data-parallel ranks), so batches do not depend on
// how the global batch is split: with M micro-batches of b samples, micro-
// batch j reads samples [j*b, j*b + b) (fillSamples), which in sequential
// order is data step s*M + j with batch b.
//
//===----------------------------------------------------------------------===//

#ifndef COLOSSUS_RUNTIME_TOKENDATA_H
#define COLOSSUS_RUNTIME_TOKENDATA_H

#include "colossus/runtime/Status.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace colossus {

enum class TokenDType { U16, U32 };
enum class DataOrder { Sequential, Random };

/// "uint16" / "u16" -> U16, "uint32" / "u32" -> U32.
std::optional<TokenDType> parseTokenDType(const std::string &text);
/// "uint16" or "uint32".
const char *tokenDTypeName(TokenDType dtype);
/// "sequential" -> Sequential, "random" -> Random.
std::optional<DataOrder> parseDataOrder(const std::string &text);
const char *dataOrderName(DataOrder order);

/// The counter-based hash of the random order (see the top of this file).
uint64_t batchHash(uint64_t seed, uint64_t step, uint64_t sample);

/// The first token of sample `sample` of step `step` in a file of
/// `numTokens` tokens (formulas at the top of this file). Errors: batch < 1,
/// seq < 1, step < 0, sample outside [0, batch), numTokens < seq + 1.
Expected<uint64_t> tokenWindowStart(uint64_t numTokens, int64_t step,
                                    int64_t sample, int64_t batch, int64_t seq,
                                    DataOrder order, uint64_t seed);

struct TokenDataOptions {
  /// The dtype; when absent, read from the sidecar `<path>.json`. When both
  /// are given they must agree.
  std::optional<TokenDType> dtype;
  /// When > 0: the file must hold at least seq + 1 tokens.
  int64_t seq = 0;
  /// When > 0: every id fillBatch reads must be < vocabSize.
  int64_t vocabSize = 0;
};

/// A memory-mapped token file.
class TokenData {
public:
  /// Opens and maps the file; checks the dtype, that the size is a multiple
  /// of the dtype's size and, when options.seq > 0, that it holds at least
  /// seq + 1 tokens.
  static Expected<std::unique_ptr<TokenData>>
  open(const std::string &path, const TokenDataOptions &options = {});
  ~TokenData();
  TokenData(const TokenData &) = delete;
  TokenData &operator=(const TokenData &) = delete;

  const std::string &path() const { return path_; }
  TokenDType dtype() const { return dtype_; }
  /// Where the dtype came from: "option" or the sidecar's path.
  const std::string &dtypeSource() const { return dtypeSource_; }
  uint64_t numTokens() const { return numTokens_; }
  /// The id at token index `index` (< numTokens()).
  uint32_t token(uint64_t index) const;

  /// tokenWindowStart(numTokens(), ...).
  Expected<uint64_t> windowStart(int64_t step, int64_t sample, int64_t batch,
                                 int64_t seq, DataOrder order,
                                 uint64_t seed) const;

  /// Fills the batch of `step`: inputs[i * seq + j] = token(start_i + j),
  /// targets[i * seq + j] = token(start_i + 1 + j), for i < batch, j < seq
  /// (row-major [batch, seq], the layout of an artifact's token buffer).
  /// An id >= options.vocabSize (when given) or > INT32_MAX is an error
  /// naming the file, the token's index and byte offset, and the id.
  Status fillBatch(int64_t step, int64_t batch, int64_t seq, DataOrder order,
                   uint64_t seed, int32_t *inputs, int32_t *targets) const;

  /// Fills samples [firstSample, firstSample + count) of the global batch of
  /// `globalBatch` samples of `step`, into rows 0 .. count-1 of `inputs` and
  /// `targets` ([count, seq]): a micro-batch (gradient accumulation) or a
  /// data-parallel rank's share. Same checks as fillBatch.
  Status fillSamples(int64_t step, int64_t globalBatch, int64_t firstSample,
                     int64_t count, int64_t seq, DataOrder order, uint64_t seed,
                     int32_t *inputs, int32_t *targets) const;

  /// Checks every id of the file against vocabSize (a full scan; the first
  /// bad id is reported like fillBatch's).
  Status checkAllIds(int64_t vocabSize) const;

private:
  TokenData() = default;
  Status badId(uint64_t index, uint32_t id, int64_t vocabSize) const;

  std::string path_;
  TokenDType dtype_ = TokenDType::U16;
  std::string dtypeSource_;
  const uint8_t *data_ = nullptr;
  size_t mapSize_ = 0;
  uint64_t numTokens_ = 0;
  int64_t vocabSize_ = 0;
};

} // namespace colossus

#endif // COLOSSUS_RUNTIME_TOKENDATA_H
