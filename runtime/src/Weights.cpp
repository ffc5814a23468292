//===- Weights.cpp - safetensors weights and parameter initialisation -----===//

#include "colossus/runtime/Weights.h"
#include "colossus/runtime/Artifact.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace colossus {

//===----------------------------------------------------------------------===//
// Half-precision conversions
//===----------------------------------------------------------------------===//

namespace {
uint32_t floatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float bitsFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
} // namespace

float halfToFloat(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    if (mant == 0)
      return bitsFloat(sign); // +-0
    // Subnormal: value = mant * 2^-24; normalise the mantissa.
    uint32_t e = 0;
    while (!(mant & 0x400u)) {
      mant <<= 1;
      ++e;
    }
    mant &= 0x3ffu;
    return bitsFloat(sign | ((113u - e) << 23) | (mant << 13));
  }
  if (exp == 31) // inf / NaN (payload kept)
    return bitsFloat(sign | 0x7f800000u | (mant << 13));
  return bitsFloat(sign | ((exp + 112u) << 23) | (mant << 13));
}

float bfloat16ToFloat(uint16_t b) {
  return bitsFloat(static_cast<uint32_t>(b) << 16);
}

uint16_t floatToHalf(float f) {
  uint32_t x = floatBits(f);
  uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) // NaN: keep the top payload bits, stay quiet
    return sign | 0x7e00u | static_cast<uint16_t>((ax >> 13) & 0x3ffu);
  if (ax >= 0x47800000u) // >= 65536 (and inf) -> inf
    return sign | 0x7c00u;
  if (ax < 0x38800000u) { // below 2^-14: half subnormal or zero
    if (ax < 0x33000000u) // <= 2^-25 (a tie, to even) -> 0
      return sign;
    uint32_t e = ax >> 23;
    uint32_t m = (ax & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - e; // value / 2^-24 = m >> shift
    uint32_t r = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (r & 1u)))
      ++r;
    return sign | static_cast<uint16_t>(r);
  }
  uint32_t r = (ax >> 13) - (112u << 10);
  uint32_t rem = ax & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u)))
    ++r; // may carry into the exponent, up to inf: correct
  return sign | static_cast<uint16_t>(r);
}

uint16_t floatToBfloat16(float f) {
  uint32_t x = floatBits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u)
    return static_cast<uint16_t>((x >> 16) | 0x40u);
  uint32_t bias = 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>((x + bias) >> 16);
}

//===----------------------------------------------------------------------===//
// safetensors
//===----------------------------------------------------------------------===//

namespace {

/// Byte width of a safetensors dtype, 0 if unknown.
uint64_t dtypeWidth(const std::string &dtype) {
  static const std::map<std::string, uint64_t> widths = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
      {"U32", 4},  {"F32", 4}, {"F64", 8}, {"I64", 8},     {"U64", 8}};
  auto it = widths.find(dtype);
  return it == widths.end() ? 0 : it->second;
}

std::string shapeStr(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += strCat(i ? ", " : "", shape[i]);
  return s + "]";
}

/// Reads a small (JSON) file into a string.
Expected<std::string> readTextFile(const std::string &path, size_t limit) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return makeError("cannot open '", path, "': ", std::strerror(errno));
  std::ostringstream os;
  os << in.rdbuf();
  std::string text = os.str();
  if (text.size() > limit)
    return makeError("'", path, "' is larger than ", limit, " bytes");
  return text;
}

bool isDirectory(const std::string &path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}
bool isFile(const std::string &path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}
std::string dirName(const std::string &path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos)
    return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}
bool endsWith(const std::string &s, const std::string &suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

} // namespace

SafetensorsFile::~SafetensorsFile() {
  if (map_)
    ::munmap(map_, mapSize_);
}

Expected<std::unique_ptr<SafetensorsFile>>
SafetensorsFile::open(const std::string &path) {
  const std::string where = strCat("weights ", path, ": ");
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile(path));
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return makeError(where, "cannot open: ", std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return makeError(where, "not a regular file");
  }
  uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    return makeError(where, "file is ", size,
                     " bytes, too short for a safetensors header");
  }
  void *map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int mapErr = errno;
  ::close(fd);
  if (map == MAP_FAILED)
    return makeError(where, "cannot mmap: ", std::strerror(mapErr));
  file->map_ = map;
  file->mapSize_ = size;
  const uint8_t *bytes = static_cast<const uint8_t *>(map);

  uint64_t headerLen = 0;
  for (int i = 7; i >= 0; --i)
    headerLen = (headerLen << 8) | bytes[i];
  if (headerLen > size - 8)
    return makeError(where, "bad header length ", headerLen, " (the file has ",
                     size, " bytes)");
  if (headerLen > (uint64_t(100) << 20))
    return makeError(where, "bad header length ", headerLen,
                     " (over the 100 MiB limit)");
  const uint8_t *dataStart = bytes + 8 + headerLen;
  const uint64_t dataSize = size - 8 - headerLen;

  nlohmann::json header =
      nlohmann::json::parse(bytes + 8, bytes + 8 + headerLen, nullptr,
                            /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object())
    return makeError(where, "header is not a JSON object");

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string &name = it.key();
    if (name == "__metadata__") {
      if (it.value().is_object())
        for (auto m = it.value().begin(); m != it.value().end(); ++m)
          if (m.value().is_string())
            file->metadata_[m.key()] = m.value().get<std::string>();
      continue;
    }
    const std::string te = strCat(where, "tensor '", name, "': ");
    const nlohmann::json &entry = it.value();
    if (!entry.is_object())
      return makeError(te, "header entry is not an object");
    auto dt = entry.find("dtype");
    auto sh = entry.find("shape");
    auto off = entry.find("data_offsets");
    if (dt == entry.end() || !dt->is_string())
      return makeError(te, "missing or non-string 'dtype'");
    if (sh == entry.end() || !sh->is_array())
      return makeError(te, "missing or non-array 'shape'");
    if (off == entry.end() || !off->is_array() || off->size() != 2 ||
        !(*off)[0].is_number_unsigned() || !(*off)[1].is_number_unsigned())
      return makeError(te, "'data_offsets' must be [begin, end] of "
                           "non-negative integers");
    SafetensorsTensor t;
    t.name = name;
    t.dtype = dt->get<std::string>();
    uint64_t numel = 1;
    bool overflow = false;
    for (const auto &d : *sh) {
      if (!d.is_number_unsigned())
        return makeError(te, "shape entries must be non-negative integers");
      uint64_t v = d.get<uint64_t>();
      if (v > uint64_t(INT64_MAX) || __builtin_mul_overflow(numel, v, &numel))
        overflow = true;
      t.shape.push_back(static_cast<int64_t>(v));
    }
    uint64_t begin = (*off)[0].get<uint64_t>();
    uint64_t end = (*off)[1].get<uint64_t>();
    if (begin > end || end > dataSize)
      return makeError(te, "data_offsets [", begin, ", ", end,
                       "] out of range (data section has ", dataSize,
                       " bytes)");
    uint64_t width = dtypeWidth(t.dtype);
    uint64_t need = 0;
    if (width && (overflow || __builtin_mul_overflow(numel, width, &need) ||
                  need != end - begin))
      return makeError(te, "data_offsets span ", end - begin,
                       " bytes but dtype ", t.dtype, " shape ",
                       shapeStr(t.shape), " needs ",
                       overflow ? std::string("more") : strCat(numel * width));
    t.data = dataStart + begin;
    t.bytes = end - begin;
    file->tensors_.emplace(name, std::move(t));
  }
  return file;
}

const SafetensorsTensor *SafetensorsFile::find(const std::string &name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  for (const auto &kv : tensors_)
    out.push_back(kv.first);
  std::sort(out.begin(), out.end());
  return out;
}

Expected<std::unique_ptr<WeightSource>>
WeightSource::open(const std::string &path) {
  std::unique_ptr<WeightSource> source(new WeightSource());
  source->path_ = path;
  const std::string where = strCat("weights ", path, ": ");

  std::string file = path;
  if (isDirectory(path)) {
    if (isFile(path + "/model.safetensors"))
      file = path + "/model.safetensors";
    else if (isFile(path + "/model.safetensors.index.json"))
      file = path + "/model.safetensors.index.json";
    else
      return makeError(where, "directory has neither model.safetensors nor "
                              "model.safetensors.index.json");
  } else if (!isFile(path)) {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0)
      return makeError(where, "cannot open: ", std::strerror(errno));
    return makeError(where, "not a regular file or directory");
  }

  if (!endsWith(file, ".json")) {
    auto st = SafetensorsFile::open(file);
    if (!st)
      return st.error();
    source->single_ = std::move(st).value();
    return source;
  }

  // Sharded checkpoint index.
  auto text = readTextFile(file, size_t(256) << 20);
  if (!text)
    return makeError(where, text.message());
  nlohmann::json index = nlohmann::json::parse(*text, nullptr, false);
  if (index.is_discarded() || !index.is_object())
    return makeError(where, "index '", file, "' is not a JSON object");
  auto wm = index.find("weight_map");
  if (wm == index.end() || !wm->is_object())
    return makeError(where, "index '", file, "' has no \"weight_map\" object");
  const std::string dir = dirName(file);
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it.value().is_string())
      return makeError(where, "weight_map entry '", it.key(),
                       "' is not a file name");
    std::string shard = it.value().get<std::string>();
    if (shard.empty())
      return makeError(where, "weight_map entry '", it.key(),
                       "' has an empty file name");
    source->weightMap_[it.key()] = shard[0] == '/' ? shard : dir + "/" + shard;
  }
  return source;
}

Expected<const SafetensorsTensor *>
WeightSource::tensor(const std::string &name) {
  const SafetensorsTensor *t = nullptr;
  if (single_) {
    t = single_->find(name);
  } else {
    auto it = weightMap_.find(name);
    if (it != weightMap_.end()) {
      auto &shard = shards_[it->second];
      if (!shard) {
        auto opened = SafetensorsFile::open(it->second);
        if (!opened)
          return makeError("weights ", path_, ": shard of tensor '", name,
                           "': ", opened.message());
        shard = std::move(opened).value();
      }
      t = shard->find(name);
      if (!t)
        return makeError("weights ", path_, ": missing tensor '", name,
                         "' (the index maps it to '", it->second,
                         "', which does not hold it)");
    }
  }
  if (!t)
    return makeError("weights ", path_, ": missing tensor '", name, "'");
  return t;
}

Status convertToF32(const SafetensorsTensor &t, float *out, size_t count,
                    const std::string &weightsName) {
  const std::string where =
      strCat("weights ", weightsName, ": tensor '", t.name, "' ");
  uint64_t width = t.dtype == "F32"                          ? 4
                   : (t.dtype == "F16" || t.dtype == "BF16") ? 2
                                                             : 0;
  if (!width)
    return makeError(where, "has dtype ", t.dtype,
                     "; only F32, F16 and BF16 are supported");
  if (t.bytes != count * width)
    return makeError(where, "has ", t.bytes, " bytes, expected ",
                     count * width);
  if (width == 4) {
    std::memcpy(out, t.data, count * 4);
  } else if (t.dtype == "F16") {
    for (size_t i = 0; i < count; ++i) {
      uint16_t h =
          static_cast<uint16_t>(t.data[2 * i] | (t.data[2 * i + 1] << 8));
      out[i] = halfToFloat(h);
    }
  } else {
    for (size_t i = 0; i < count; ++i) {
      uint16_t h =
          static_cast<uint16_t>(t.data[2 * i] | (t.data[2 * i + 1] << 8));
      out[i] = bfloat16ToFloat(h);
    }
  }
  return Status::success();
}

Status loadParam(WeightSource &source, const schema::Param &param, float *out,
                 size_t count) {
  std::string name = param.hf_name() ? param.hf_name()->str() : "";
  auto t = source.tensor(name);
  if (!t)
    return t.error();
  const SafetensorsTensor &tensor = **t;
  std::vector<int64_t> expected;
  if (param.shape())
    expected.assign(param.shape()->begin(), param.shape()->end());
  if (tensor.shape != expected)
    return makeError("weights ", source.path(), ": tensor '", name,
                     "' has shape ", shapeStr(tensor.shape),
                     ", the artifact expects ", shapeStr(expected));
  return convertToF32(tensor, out, count, source.path());
}

//===----------------------------------------------------------------------===//
// Random initialisation
//===----------------------------------------------------------------------===//

namespace {

uint64_t splitmix64(uint64_t &state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

struct Xoshiro256ss {
  uint64_t s[4];
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t next() {
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
  }
  /// Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
};

} // namespace

void initParam(const schema::Param &param, uint64_t seed, uint32_t paramIndex,
               float *out, size_t count) {
  switch (param.init()) {
  case schema::ParamInit::ones:
    std::fill(out, out + count, 1.0f);
    return;
  case schema::ParamInit::zeros:
    std::fill(out, out + count, 0.0f);
    return;
  default:
    break;
  }
  uint64_t sm = seed;
  uint64_t state = splitmix64(sm) ^
                   (static_cast<uint64_t>(paramIndex) * 0x9E3779B97F4A7C15ULL);
  Xoshiro256ss rng;
  for (uint64_t &w : rng.s)
    w = splitmix64(state);
  const double stddev = static_cast<double>(param.init_std());
  const double twoPi = 6.283185307179586476925286766559;
  for (size_t i = 0; i < count; i += 2) {
    double u1 = 1.0 - rng.uniform(); // (0, 1]
    double u2 = rng.uniform();       // [0, 1)
    double r = std::sqrt(-2.0 * std::log(u1));
    out[i] = static_cast<float>(stddev * r * std::cos(twoPi * u2));
    if (i + 1 < count)
      out[i + 1] = static_cast<float>(stddev * r * std::sin(twoPi * u2));
  }
}

} // namespace colossus
