//===- WeightsTest.cpp - safetensors, conversions, random init ------------===//

#include "TestUtil.h"

#include "colossus/runtime/Weights.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

using namespace colossus;
using namespace colossus::test;
using ::testing::HasSubstr;

namespace {

uint32_t bitsOf(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

/// A flatbuffers Param for loadParam.
struct ParamHolder {
  flatbuffers::FlatBufferBuilder fbb;
  const schema::Param *param = nullptr;
  ParamHolder(const std::string &name, std::vector<int64_t> shape,
              schema::ParamInit init = schema::ParamInit::normal,
              float std = 0.02f) {
    fbb.ForceDefaults(true);
    auto off = schema::CreateParam(fbb, fbb.CreateString(name),
                                   fbb.CreateVector(shape), 0, init, std);
    fbb.Finish(off);
    param = flatbuffers::GetRoot<schema::Param>(fbb.GetBufferPointer());
  }
};

} // namespace

TEST(HalfConversion, AllF16ValuesRoundTripExactly) {
  for (uint32_t h = 0; h < 65536; ++h) {
    float f = halfToFloat(static_cast<uint16_t>(h));
    bool nan = ((h >> 10) & 0x1f) == 0x1f && (h & 0x3ff);
    if (nan) {
      EXPECT_TRUE(std::isnan(f)) << h;
      continue;
    }
    EXPECT_EQ(floatToHalf(f), h) << "f16 0x" << std::hex << h;
#ifdef __FLT16_MAX__
    // Independent oracle: the compiler's own _Float16 conversion.
    _Float16 ref;
    uint16_t hv = static_cast<uint16_t>(h);
    std::memcpy(&ref, &hv, 2);
    EXPECT_EQ(bitsOf(static_cast<float>(ref)), bitsOf(f)) << std::hex << h;
#endif
  }
}

TEST(HalfConversion, KnownF16Values) {
  EXPECT_EQ(halfToFloat(0x3c00), 1.0f);
  EXPECT_EQ(halfToFloat(0xc000), -2.0f);
  EXPECT_EQ(halfToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(halfToFloat(0x0001), std::ldexp(1.0f, -24)); // smallest subnormal
  EXPECT_EQ(halfToFloat(0x0400), std::ldexp(1.0f, -14)); // smallest normal
  EXPECT_EQ(halfToFloat(0x3555), 0.333251953125f);
  EXPECT_TRUE(std::isinf(halfToFloat(0x7c00)));
  EXPECT_EQ(bitsOf(halfToFloat(0x8000)), 0x80000000u);
  // Rounding f32 -> f16: to nearest even, overflow to inf, underflow to 0.
  EXPECT_EQ(floatToHalf(65520.0f), 0x7c00);
  EXPECT_EQ(floatToHalf(65519.0f), 0x7bff);
  EXPECT_EQ(floatToHalf(std::ldexp(1.0f, -25)), 0x0000);
  EXPECT_EQ(floatToHalf(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(floatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3c00); // tie -> even
  EXPECT_EQ(floatToHalf(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
}

TEST(HalfConversion, AllBf16ValuesRoundTripExactly) {
  for (uint32_t b = 0; b < 65536; ++b) {
    float f = bfloat16ToFloat(static_cast<uint16_t>(b));
    EXPECT_EQ(bitsOf(f), b << 16);
    if (!std::isnan(f)) {
      EXPECT_EQ(floatToBfloat16(f), b) << std::hex << b;
    }
  }
  EXPECT_EQ(bfloat16ToFloat(0x3f80), 1.0f);
  EXPECT_EQ(floatToBfloat16(1.0f + std::ldexp(1.0f, -8)), 0x3f80); // tie
  EXPECT_EQ(floatToBfloat16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
}

TEST(Safetensors, ReadsF32F16Bf16) {
  TempDir dir;
  std::vector<float> v = testValues(12, 1);
  writeFile(
      dir.file("w.safetensors"),
      safetensorsBytes({f32Tensor("a", {3, 4}, v), f16Tensor("b", {12}, v),
                        bf16Tensor("c", {2, 6}, v)}));
  auto src = WeightSource::open(dir.file("w.safetensors"));
  ASSERT_TRUE(src) << src.message();
  for (const auto &[name, shape] :
       std::vector<std::pair<std::string, std::vector<int64_t>>>{
           {"a", {3, 4}}, {"b", {12}}, {"c", {2, 6}}}) {
    ParamHolder p(name, shape);
    std::vector<float> out(12);
    Status s = loadParam(**src, *p.param, out.data(), out.size());
    ASSERT_TRUE(s) << s.message();
    EXPECT_EQ(out, v) << name;
  }
}

TEST(Safetensors, MissingTensor) {
  TempDir dir;
  std::string path = dir.file("w.safetensors");
  writeFile(path, safetensorsBytes({f32Tensor("a", {2}, {1, 2})}));
  auto src = WeightSource::open(path);
  ASSERT_TRUE(src);
  ParamHolder p("model.norm.weight", {2});
  std::vector<float> out(2);
  Status s = loadParam(**src, *p.param, out.data(), 2);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.message(),
            "weights " + path + ": missing tensor 'model.norm.weight'");
}

TEST(Safetensors, WrongShape) {
  TempDir dir;
  std::string path = dir.file("w.safetensors");
  writeFile(path, safetensorsBytes({f32Tensor("w", {2, 3}, testValues(6, 2))}));
  auto src = WeightSource::open(path);
  ASSERT_TRUE(src);
  ParamHolder p("w", {3, 2});
  std::vector<float> out(6);
  Status s = loadParam(**src, *p.param, out.data(), 6);
  ASSERT_FALSE(s);
  EXPECT_THAT(s.message(), HasSubstr("tensor 'w' has shape [2, 3], the "
                                     "artifact expects [3, 2]"));
}

TEST(Safetensors, WrongDtype) {
  TempDir dir;
  std::string path = dir.file("w.safetensors");
  TensorData ids{"position_ids", "I64", {4}, std::vector<uint8_t>(32, 0)};
  writeFile(path, safetensorsBytes({ids}));
  auto src = WeightSource::open(path);
  ASSERT_TRUE(src) << src.message(); // unused I64 tensors are fine
  ParamHolder p("position_ids", {4});
  std::vector<float> out(4);
  Status s = loadParam(**src, *p.param, out.data(), 4);
  ASSERT_FALSE(s);
  EXPECT_THAT(s.message(), HasSubstr("tensor 'position_ids' has dtype I64"));
}

TEST(Safetensors, BadHeaders) {
  TempDir dir;
  auto openError = [&](const std::vector<uint8_t> &bytes) {
    writeFile(dir.file("bad.safetensors"), bytes);
    auto src = WeightSource::open(dir.file("bad.safetensors"));
    return src ? std::string("<opened>") : src.message();
  };
  std::vector<uint8_t> good =
      safetensorsBytes({f32Tensor("a", {2}, {1.0f, 2.0f})});
  // Header length beyond the file.
  std::vector<uint8_t> b = good;
  b[0] = 0xff;
  b[1] = 0xff;
  EXPECT_THAT(openError(b), HasSubstr("bad header length 65535"));
  b = good;
  b[7] = 0x80; // 2^63 + ...
  EXPECT_THAT(openError(b), HasSubstr("bad header length"));
  // Too short.
  EXPECT_THAT(openError({1, 2, 3}), HasSubstr("too short"));
  // Not JSON.
  b = good;
  b[8] = '[';
  b[9] = '!';
  EXPECT_THAT(openError(b), HasSubstr("header is not a JSON object"));
  // Offsets out of range / inconsistent with dtype * shape.
  TensorData t = f32Tensor("a", {3}, {1, 2, 3});
  t.bytes.resize(8); // header says [0, 8) for 3 floats
  EXPECT_THAT(openError(safetensorsBytes({t})),
              HasSubstr("tensor 'a': data_offsets span 8 bytes but dtype F32 "
                        "shape [3] needs 12"));
  b = safetensorsBytes({f32Tensor("a", {2}, {1, 2})});
  b.resize(b.size() - 4); // data section shorter than the offsets
  EXPECT_THAT(openError(b), HasSubstr("out of range"));
  // Missing path.
  auto missing = WeightSource::open(dir.file("none.safetensors"));
  ASSERT_FALSE(missing);
  EXPECT_THAT(missing.message(), HasSubstr("cannot open"));
}

TEST(Safetensors, ShardedIndexAndDirectories) {
  TempDir dir;
  std::vector<float> a = testValues(4, 3), b = testValues(6, 4);
  writeFile(dir.file("model-00001-of-00002.safetensors"),
            safetensorsBytes({f32Tensor("a", {4}, a)}));
  writeFile(dir.file("model-00002-of-00002.safetensors"),
            safetensorsBytes({bf16Tensor("b", {2, 3}, b)}));
  writeText(dir.file("model.safetensors.index.json"),
            R"({"metadata": {"total_size": 40}, "weight_map": {
                 "a": "model-00001-of-00002.safetensors",
                 "b": "model-00002-of-00002.safetensors",
                 "gone": "model-00003-of-00002.safetensors"}})");
  for (const std::string &path :
       {dir.file("model.safetensors.index.json"), dir.path()}) {
    auto src = WeightSource::open(path);
    ASSERT_TRUE(src) << src.message();
    std::vector<float> out(4);
    ParamHolder pa("a", {4});
    ASSERT_TRUE(loadParam(**src, *pa.param, out.data(), 4));
    EXPECT_EQ(out, a);
    out.resize(6);
    ParamHolder pb("b", {2, 3});
    ASSERT_TRUE(loadParam(**src, *pb.param, out.data(), 6));
    EXPECT_EQ(out, b);
    ParamHolder pc("c", {1});
    Status s = loadParam(**src, *pc.param, out.data(), 1);
    EXPECT_EQ(s.message(), "weights " + path + ": missing tensor 'c'");
    ParamHolder pg("gone", {1});
    s = loadParam(**src, *pg.param, out.data(), 1);
    EXPECT_THAT(s.message(), HasSubstr("model-00003-of-00002.safetensors"));
  }
  // A directory with a single model.safetensors takes precedence.
  TempDir single;
  writeFile(single.file("model.safetensors"),
            safetensorsBytes({f32Tensor("a", {4}, a)}));
  auto src = WeightSource::open(single.path());
  ASSERT_TRUE(src) << src.message();
  // An empty directory.
  TempDir empty;
  auto none = WeightSource::open(empty.path());
  ASSERT_FALSE(none);
  EXPECT_THAT(none.message(), HasSubstr("neither model.safetensors nor"));
  // A bad index.
  writeText(empty.file("model.safetensors.index.json"), R"({"weights": 1})");
  none = WeightSource::open(empty.path());
  ASSERT_FALSE(none);
  EXPECT_THAT(none.message(), HasSubstr("no \"weight_map\""));
}

TEST(RandomInit, DeterministicAndDistributed) {
  ParamHolder normal("w", {4096}, schema::ParamInit::normal, 0.5f);
  std::vector<float> x(4096), y(4096), z(4096);
  initParam(*normal.param, 7, 3, x.data(), x.size());
  initParam(*normal.param, 7, 3, y.data(), y.size());
  EXPECT_EQ(x, y);
  initParam(*normal.param, 8, 3, z.data(), z.size());
  EXPECT_NE(x, z);
  initParam(*normal.param, 7, 4, z.data(), z.size());
  EXPECT_NE(x, z);
  double mean = 0, var = 0;
  for (float v : x)
    mean += v;
  mean /= x.size();
  for (float v : x)
    var += (v - mean) * (v - mean);
  var /= x.size();
  EXPECT_NEAR(mean, 0.0, 0.05);
  EXPECT_NEAR(std::sqrt(var), 0.5, 0.05);
  // Odd counts fill every element.
  std::vector<float> odd(3, NAN);
  initParam(*normal.param, 1, 0, odd.data(), odd.size());
  for (float v : odd)
    EXPECT_FALSE(std::isnan(v));
  ParamHolder ones("g", {5}, schema::ParamInit::ones);
  std::vector<float> o(5, 0);
  initParam(*ones.param, 1, 0, o.data(), 5);
  EXPECT_EQ(o, std::vector<float>(5, 1.0f));
  ParamHolder zeros("b", {5}, schema::ParamInit::zeros);
  initParam(*zeros.param, 1, 0, o.data(), 5);
  EXPECT_EQ(o, std::vector<float>(5, 0.0f));
}
