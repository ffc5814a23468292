//===- TokenData.cpp - Token files and deterministic batches --------------===//

#include "colossus/runtime/TokenData.h"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <climits>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace colossus {

std::optional<TokenDType> parseTokenDType(const std::string &text) {
  if (text == "uint16" || text == "u16")
    return TokenDType::U16;
  if (text == "uint32" || text == "u32")
    return TokenDType::U32;
  return std::nullopt;
}

const char *tokenDTypeName(TokenDType dtype) {
  return dtype == TokenDType::U16 ? "uint16" : "uint32";
}

std::optional<DataOrder> parseDataOrder(const std::string &text) {
  if (text == "sequential")
    return DataOrder::Sequential;
  if (text == "random")
    return DataOrder::Random;
  return std::nullopt;
}

const char *dataOrderName(DataOrder order) {
  return order == DataOrder::Sequential ? "sequential" : "random";
}

namespace {
uint64_t splitmix64Of(uint64_t x) {
  uint64_t z = x + 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}
} // namespace

uint64_t batchHash(uint64_t seed, uint64_t step, uint64_t sample) {
  return splitmix64Of(splitmix64Of(splitmix64Of(seed) ^ step) ^ sample);
}

Expected<uint64_t> tokenWindowStart(uint64_t numTokens, int64_t step,
                                    int64_t sample, int64_t batch, int64_t seq,
                                    DataOrder order, uint64_t seed) {
  if (batch < 1)
    return makeError("batch size ", batch, " must be at least 1");
  if (seq < 1)
    return makeError("sequence length ", seq, " must be at least 1");
  if (step < 0)
    return makeError("step ", step, " must be non-negative");
  if (sample < 0 || sample >= batch)
    return makeError("sample ", sample, " is outside the batch [0, ", batch,
                     ")");
  const uint64_t S = static_cast<uint64_t>(seq);
  if (numTokens < S + 1)
    return makeError(numTokens, " tokens are fewer than one window of ", seq,
                     " + 1 tokens");
  if (order == DataOrder::Random)
    return batchHash(seed, static_cast<uint64_t>(step),
                     static_cast<uint64_t>(sample)) %
           (numTokens - S);
  // Sequential: window w = step * batch + sample, modulo W whole windows.
  unsigned __int128 w = static_cast<unsigned __int128>(step) *
                            static_cast<unsigned __int128>(batch) +
                        static_cast<unsigned __int128>(sample);
  uint64_t W = (numTokens - 1) / S;
  return static_cast<uint64_t>(w % W) * S;
}

TokenData::~TokenData() {
  if (data_ && mapSize_)
    ::munmap(const_cast<uint8_t *>(data_), mapSize_);
}

Expected<std::unique_ptr<TokenData>>
TokenData::open(const std::string &path, const TokenDataOptions &options) {
  std::unique_ptr<TokenData> td(new TokenData());
  td->path_ = path;
  td->vocabSize_ = options.vocabSize;
  const std::string where = strCat("token data ", path, ": ");

  // The dtype: the option, else the sidecar; when both are given they must
  // agree.
  const std::string sidecar = path + ".json";
  std::optional<TokenDType> sidecarDType;
  std::ifstream in(sidecar, std::ios::binary);
  if (in) {
    std::ostringstream os;
    os << in.rdbuf();
    nlohmann::json j = nlohmann::json::parse(os.str(), nullptr, false);
    if (j.is_discarded() || !j.is_object())
      return makeError(where, "sidecar ", sidecar, " is not a JSON object");
    auto it = j.find("dtype");
    if (it == j.end() || !it->is_string())
      return makeError(where, "sidecar ", sidecar,
                       " has no string \"dtype\" (\"uint16\" or \"uint32\")");
    sidecarDType = parseTokenDType(it->get<std::string>());
    if (!sidecarDType)
      return makeError(where, "sidecar ", sidecar, ": dtype \"",
                       it->get<std::string>(),
                       "\" is not one of uint16, u16, uint32, u32");
  }
  if (options.dtype) {
    if (sidecarDType && *sidecarDType != *options.dtype)
      return makeError(where, "the dtype given, ",
                       tokenDTypeName(*options.dtype), ", disagrees with ",
                       tokenDTypeName(*sidecarDType), " in the sidecar ",
                       sidecar);
    td->dtype_ = *options.dtype;
    td->dtypeSource_ = "option";
  } else if (sidecarDType) {
    td->dtype_ = *sidecarDType;
    td->dtypeSource_ = sidecar;
  } else {
    return makeError(where,
                     "the token dtype is not known: pass "
                     "--data-dtype uint16|uint32, or write a sidecar ",
                     sidecar,
                     " holding {\"dtype\": \"uint16\"} (or "
                     "\"uint32\")");
  }
  const uint64_t width = td->dtype_ == TokenDType::U16 ? 2 : 4;

  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return makeError(where, "cannot open: ", std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return makeError(where, "not a regular file");
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size % width != 0) {
    ::close(fd);
    return makeError(where, "size ", size, " bytes is not a multiple of ",
                     width, " (dtype ", tokenDTypeName(td->dtype_), " from ",
                     td->dtypeSource_, ")");
  }
  td->numTokens_ = size / width;
  if (options.seq > 0 &&
      td->numTokens_ < static_cast<uint64_t>(options.seq) + 1) {
    ::close(fd);
    return makeError(where, "holds ", td->numTokens_,
                     " tokens; a window of sequence length ", options.seq,
                     " needs at least ", options.seq + 1);
  }
  if (size > 0) {
    void *map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int err = errno;
    if (map == MAP_FAILED) {
      ::close(fd);
      return makeError(where, "cannot mmap: ", std::strerror(err));
    }
    td->data_ = static_cast<const uint8_t *>(map);
    td->mapSize_ = size;
  }
  ::close(fd);
  return td;
}

uint32_t TokenData::token(uint64_t index) const {
  if (dtype_ == TokenDType::U16) {
    const uint8_t *p = data_ + 2 * index;
    return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8);
  }
  const uint8_t *p = data_ + 4 * index;
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}

Expected<uint64_t> TokenData::windowStart(int64_t step, int64_t sample,
                                          int64_t batch, int64_t seq,
                                          DataOrder order,
                                          uint64_t seed) const {
  auto start =
      tokenWindowStart(numTokens_, step, sample, batch, seq, order, seed);
  if (!start)
    return makeError("token data ", path_, ": ", start.message());
  return start;
}

Status TokenData::badId(uint64_t index, uint32_t id, int64_t vocabSize) const {
  const uint64_t width = dtype_ == TokenDType::U16 ? 2 : 4;
  if (vocabSize > 0)
    return makeError("token data ", path_, ": token ", index, " (byte offset ",
                     index * width, ") has id ", id,
                     ", not below the vocabulary size ", vocabSize);
  return makeError("token data ", path_, ": token ", index, " (byte offset ",
                   index * width, ") has id ", id,
                   ", larger than the largest int32");
}

Status TokenData::fillBatch(int64_t step, int64_t batch, int64_t seq,
                            DataOrder order, uint64_t seed, int32_t *inputs,
                            int32_t *targets) const {
  return fillSamples(step, batch, 0, batch, seq, order, seed, inputs, targets);
}

Status TokenData::fillSamples(int64_t step, int64_t globalBatch,
                              int64_t firstSample, int64_t count, int64_t seq,
                              DataOrder order, uint64_t seed, int32_t *inputs,
                              int32_t *targets) const {
  if (globalBatch < 1 || seq < 1)
    return makeError("token data ", path_, ": batch size ", globalBatch,
                     " and sequence length ", seq, " must be at least 1");
  if (firstSample < 0 || count < 0 || firstSample > globalBatch - count)
    return makeError("token data ", path_, ": samples [", firstSample, ", ",
                     firstSample, " + ", count, ") are outside the batch [0, ",
                     globalBatch, ")");
  const uint64_t limit = vocabSize_ > 0 ? static_cast<uint64_t>(vocabSize_)
                                        : uint64_t(INT32_MAX) + 1;
  for (int64_t r = 0; r < count; ++r) {
    auto start =
        windowStart(step, firstSample + r, globalBatch, seq, order, seed);
    if (!start)
      return start.error();
    int32_t *in = inputs + r * seq;
    int32_t *tg = targets + r * seq;
    for (int64_t j = 0; j <= seq; ++j) {
      uint64_t index = *start + static_cast<uint64_t>(j);
      uint32_t id = token(index);
      if (id >= limit)
        return badId(index, id, vocabSize_);
      if (j < seq)
        in[j] = static_cast<int32_t>(id);
      if (j > 0)
        tg[j - 1] = static_cast<int32_t>(id);
    }
  }
  return Status::success();
}

Status TokenData::checkAllIds(int64_t vocabSize) const {
  const uint64_t limit = vocabSize > 0 ? static_cast<uint64_t>(vocabSize)
                                       : uint64_t(INT32_MAX) + 1;
  for (uint64_t i = 0; i < numTokens_; ++i) {
    uint32_t id = token(i);
    if (id >= limit)
      return badId(i, id, vocabSize);
  }
  return Status::success();
}

} // namespace colossus
